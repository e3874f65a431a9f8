//! A tenant's outbound calling settings: the toll-fraud dial policy (which destinations its
//! agents may call), the caller id its calls present, and its concurrency caps. One row per
//! tenant; a tenant without one gets the safe default (domestic, non-premium only).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_tenant_outbound"
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
                .table(a("tenant_outbound"))
                .col(
                    ColumnDef::new(a("tenant_id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(a("tenant_outbound"), a("tenant_id"))
                        .to(a("tenants"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(text(a("dial_policy")))
                .col(string_len_null(a("caller_id"), 16))
                .col(integer(a("max_concurrent_calls")))
                .col(integer(a("max_calls_per_seat")))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&crate::m0002_row_level_security::tenant_policy_sql(
                    "tenant_outbound",
                    "tenant_id",
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("tenant_outbound")).to_owned())
            .await
    }
}
