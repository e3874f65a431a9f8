//! Call recordings' metadata: one row per recorded call, with where the file is stored, its
//! size and SHA-256 (so a download can be verified) and its upload state.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_recordings"
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
                .table(a("recordings"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .from(a("recordings"), a("tenant_id"))
                        .to(a("tenants"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(string_len(a("call_id"), 128))
                .col(text(a("object_key")))
                .col(big_integer(a("duration_ms")))
                .col(big_integer(a("size_bytes")))
                .col(string_len(a("sha256"), 64))
                .col(string_len(a("upload_state"), 16))
                .col(timestamp_with_time_zone(a("created_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("recordings_tenant_call")
                .table(a("recordings"))
                .col(a("tenant_id"))
                .col(a("call_id"))
                .unique()
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&crate::m0002_row_level_security::tenant_policy_sql(
                    "recordings",
                    "tenant_id",
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("recordings")).to_owned())
            .await
    }
}
