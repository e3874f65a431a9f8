//! Call legs: one row per SIP leg of a call (the caller, every agent the call was offered to,
//! a transfer's outside party, an outbound call's phone and trunk), beside the call's CDR. A
//! leg row says who the party was, when it rang, answered and ended, with which SIP status and
//! its media quality, so a call that rang three agents shows three attempts, not a counter.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{a, protect_tenant_table, tenant_table};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_cdr_legs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            tenant_table("cdr_legs")
                .col(string_len(a("call_id"), 128))
                .col(integer(a("leg_no")))
                .col(string_len(a("role"), 16))
                .col(string_len(a("party"), 256))
                .col(ColumnDef::new(a("agent_id")).uuid().null())
                .col(timestamp_with_time_zone(a("started_at")))
                .col(timestamp_with_time_zone_null(a("answered_at")))
                .col(timestamp_with_time_zone(a("ended_at")))
                .col(integer_null(a("sip_status")))
                .col(string_len(a("end_reason"), 32))
                .col(text_null(a("media_stats")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("cdr_legs_tenant_call_leg")
                .table(a("cdr_legs"))
                .col(a("tenant_id"))
                .col(a("call_id"))
                .col(a("leg_no"))
                .unique()
                .to_owned(),
        )
        .await?;
        protect_tenant_table(m, "cdr_legs").await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("cdr_legs")).to_owned())
            .await
    }
}
