//! Call detail records: one row per call, written by the gateway when the call ends, at most
//! once per (tenant, call id) so a retried write never makes a second row.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_cdrs"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("cdrs"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("cdrs"), a("tenant_id"))
                        .to(a("tenants"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(string_len(a("call_id"), 128))
                .col(string(a("direction")))
                .col(string(a("from_number")))
                .col(string(a("to_number")))
                .col(ColumnDef::new(a("queue_id")).uuid().null())
                .col(ColumnDef::new(a("agent_id")).uuid().null())
                .col(timestamp_with_time_zone(a("started_at")))
                .col(timestamp_with_time_zone_null(a("queued_at")))
                .col(timestamp_with_time_zone_null(a("answered_at")))
                .col(timestamp_with_time_zone(a("ended_at")))
                .col(big_integer(a("wait_ms")))
                .col(big_integer(a("talk_ms")))
                .col(string(a("hangup_cause")))
                .col(string(a("hangup_side")))
                .col(text_null(a("media_stats")))
                .col(timestamp_with_time_zone(a("created_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("cdrs_tenant_call")
                .table(a("cdrs"))
                .col(a("tenant_id"))
                .col(a("call_id"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("cdrs_tenant_started")
                .table(a("cdrs"))
                .col(a("tenant_id"))
                .col(a("started_at"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&crate::m0002_row_level_security::tenant_policy_sql(
                    "cdrs",
                    "tenant_id",
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("cdrs")).to_owned())
            .await
    }
}
