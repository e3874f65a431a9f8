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
    "tenant_recording_settings",
];

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
        ]
    }
}
