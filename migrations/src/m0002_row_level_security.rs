//! PostgreSQL row-level security: the second wall behind the tenant-scoped repository.
//!
//! The application switches to [`crate::APP_ROLE`] at the start of every transaction
//! (`set_config('role', ..., true)`), and names its tenant with a transaction-local
//! `set_config('app.tenant_id', ..., true)`. That role owns no table and has no BYPASSRLS; every
//! tenant table has RLS enabled and FORCEd with a policy that compares `tenant_id` to the
//! setting. A transaction that did not set it sees nothing and can write nothing (fail closed).
//!
//! The few platform-level operations (creating tenants, resolving a login's tenant, looking up a
//! refresh token by its hash) set `app.system = 'on'` instead; only the `SystemDb` handle in the
//! db crate can do that, and only the auth module and platform-operator routes get one.
//!
//! On SQLite this migration does nothing: the repository's tenant filter is the only wall there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::APP_ROLE;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_row_level_security"
    }
}

pub(crate) const POLICY: &str = "switchboard_tenant_isolation";

/// The tenant tables m0001 created. Later migrations call [`tenant_policy_sql`] for theirs.
const TABLES_OF_M0001: &[&str] = &[
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
];

/// The tenant policy's condition on `column`: the row's tenant is the transaction's, or the
/// transaction is a system one. Each function is a sub-select, evaluated once per statement
/// (m0014 says why; m0002 shipped `column = app_tenant() OR app_system()`, the same rows).
pub(crate) fn policy_expression(column: &str) -> String {
    format!("{column} = (SELECT app_tenant()) OR (SELECT app_system())")
}

/// Enables and forces RLS on `table` with the tenant policy on `column`, and grants the app role
/// its DML rights there (tables created after m0002 are not covered by its GRANT).
pub fn tenant_policy_sql(table: &str, column: &str) -> String {
    let expr = policy_expression(column);
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
         CREATE POLICY {POLICY} ON {table} USING ({expr}) WITH CHECK ({expr});
         GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE};"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        // Roles are cluster-wide: create it once, leave it alone if another database made it.
        db.execute_unprepared(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                 CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
               END IF;
             -- Roles are cluster-wide: databases migrated side by side on a fresh cluster
             -- race to create it, and the loser finds it made.
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;
             GRANT {APP_ROLE} TO CURRENT_USER;"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "GRANT USAGE ON SCHEMA public TO {APP_ROLE};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
             REVOKE ALL ON seaql_migrations FROM {APP_ROLE};
             CREATE OR REPLACE FUNCTION app_tenant() RETURNS uuid LANGUAGE sql STABLE AS
               $f$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $f$;
             CREATE OR REPLACE FUNCTION app_system() RETURNS boolean LANGUAGE sql STABLE AS
               $f$ SELECT coalesce(current_setting('app.system', true), '') = 'on' $f$;"
        ))
        .await?;
        db.execute_unprepared(&tenant_policy_sql("tenants", "id"))
            .await?;
        for table in TABLES_OF_M0001 {
            db.execute_unprepared(&tenant_policy_sql(table, "tenant_id"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        for table in std::iter::once(&"tenants").chain(TABLES_OF_M0001) {
            db.execute_unprepared(&format!(
                "DROP POLICY IF EXISTS {POLICY} ON {table};
                 ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
                 ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
            ))
            .await?;
        }
        Ok(())
    }
}
