//! Database schema, as sea-orm-migration migrations that run on SQLite and PostgreSQL.
//!
//! Migrations run before new code serves (`switchboard migrate`, or at start of `switchboard up`),
//! so every change is expand-then-contract: add a column/table first, start using it in a later
//! release, drop the old one after that. Never edit a migration that has shipped; add one.
//!
//! Every tenant-owned table has a `tenant_id` column. On PostgreSQL, [`m0002_row_level_security`]
//! adds the second wall: row-level security that the application's role cannot bypass.

pub use sea_orm_migration::prelude::*;

mod m0001_core;
pub mod m0002_row_level_security;
mod m0003_cdrs;
mod m0004_sip_credentials;
mod m0005_tenant_outbound;
mod m0006_recordings;
mod m0007_recording_retention;
mod m0009_cdr_legs;
mod m0010_tenant_list_indexes;
mod m0011_recording_rules;
mod m0012_desktop;
mod m0013_cdr_leg_media;
mod m0014_policy_once_per_statement;

/// The role the application switches to in every transaction on PostgreSQL. It owns no table and
/// has no BYPASSRLS, so row-level security applies to it.
pub const APP_ROLE: &str = "switchboard_app";

/// Tables that belong to a tenant (have `tenant_id`). The RLS migration and its test walk this
/// list; a new tenant table must be added here.
pub const TENANT_TABLES: &[&str] = &[
    "users",
    "seats",
    "seat_events",
    "phone_numbers",
    "skills",
    "queues",
    "agent_skills",
    "queue_members",
    "audit_log",
    "refresh_tokens",
    "api_keys",
    "idempotency_keys",
    "cdrs",
    "sip_credentials",
    "tenant_outbound",
    "recordings",
    "cdr_legs",
    "tenant_recording_settings",
    "disposition_codes",
    "call_dispositions",
    "contacts",
    "contact_numbers",
];

/// A name in a schema statement.
pub(crate) fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// The start of a tenant-owned table: a UUID primary key and `tenant_id`, deleted with its
/// tenant. Columns follow; [`protect_tenant_table`] adds row-level security afterwards.
pub(crate) fn tenant_table(name: &str) -> TableCreateStatement {
    Table::create()
        .table(a(name))
        .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
        .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
        .foreign_key(
            ForeignKey::create()
                .from(a(name), a("tenant_id"))
                .to(a("tenants"), a("id"))
                .on_delete(ForeignKeyAction::Cascade),
        )
        .col(
            ColumnDef::new(a("created_at"))
                .timestamp_with_time_zone()
                .not_null(),
        )
        .to_owned()
}

/// Row-level security for a tenant table on PostgreSQL (nothing to do on SQLite); the table
/// must also be listed in [`TENANT_TABLES`].
pub(crate) async fn protect_tenant_table(m: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    if m.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres {
        m.get_connection()
            .execute_unprepared(&m0002_row_level_security::tenant_policy_sql(
                table,
                "tenant_id",
            ))
            .await?;
    }
    Ok(())
}

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_core::Migration),
            Box::new(m0002_row_level_security::Migration),
            Box::new(m0003_cdrs::Migration),
            Box::new(m0004_sip_credentials::Migration),
            Box::new(m0005_tenant_outbound::Migration),
            Box::new(m0006_recordings::Migration),
            Box::new(m0007_recording_retention::Migration),
            Box::new(m0009_cdr_legs::Migration),
            Box::new(m0010_tenant_list_indexes::Migration),
            Box::new(m0011_recording_rules::Migration),
            Box::new(m0012_desktop::Migration),
            Box::new(m0013_cdr_leg_media::Migration),
            Box::new(m0014_policy_once_per_statement::Migration),
        ]
    }
}
