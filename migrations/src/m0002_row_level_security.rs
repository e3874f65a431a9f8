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

use crate::{APP_ROLE, TENANT_TABLES};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_row_level_security"
    }
}

const POLICY: &str = "switchboard_tenant_isolation";

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
        let tenant_policy = |table: &str, column: &str| {
            format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
                 CREATE POLICY {POLICY} ON {table}
                   USING ({column} = app_tenant() OR app_system())
                   WITH CHECK ({column} = app_tenant() OR app_system());"
            )
        };
        db.execute_unprepared(&tenant_policy("tenants", "id"))
            .await?;
        for table in TENANT_TABLES {
            db.execute_unprepared(&tenant_policy(table, "tenant_id"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        for table in std::iter::once(&"tenants").chain(TENANT_TABLES) {
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
