//! Per-tenant recording settings: how many days recordings are kept (none: forever). The
//! gateway's retention sweeper deletes older objects from the store and marks their rows
//! `deleted`; an index on (tenant, created_at) keeps that scan cheap.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_recording_retention"
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
                .table(a("tenant_recording_settings"))
                .col(
                    ColumnDef::new(a("tenant_id"))
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(a("tenant_recording_settings"), a("tenant_id"))
                        .to(a("tenants"), a("id"))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .col(integer_null(a("retention_days")))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("recordings_tenant_created")
                .table(a("recordings"))
                .col(a("tenant_id"))
                .col(a("created_at"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&crate::m0002_row_level_security::tenant_policy_sql(
                    "tenant_recording_settings",
                    "tenant_id",
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("recordings_tenant_created")
                .table(a("recordings"))
                .to_owned(),
        )
        .await?;
        m.drop_table(
            Table::drop()
                .table(a("tenant_recording_settings"))
                .to_owned(),
        )
        .await
    }
}
