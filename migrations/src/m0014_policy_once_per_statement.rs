//! Row-level security's policy, evaluated once per statement instead of once per row.
//!
//! m0002's policy, `tenant_id = app_tenant() OR app_system()`, is inlined by the planner into
//! `tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid OR ...`: two setting
//! lookups and a UUID parse for every row a statement reads or writes. A list page of 21 rows
//! paid that 21 times (in `scripts/bench api`, PostgreSQL's `uuid_in` and the `strtoull` under it
//! were about 2.5 % of the whole machine's samples in `perf`). Written as sub-selects,
//! `tenant_id = (SELECT app_tenant()) OR (SELECT app_system())`, both become InitPlans that
//! PostgreSQL evaluates once per statement; which rows pass is unchanged, and a transaction that
//! set nothing still sees nothing (NULL compares to no tenant).
//!
//! [`crate::m0002_row_level_security::tenant_policy_sql`] writes this form for tables made after
//! this migration (and for every table on a fresh database); here the policies already made are
//! rewritten. The RLS catalog test checks every tenant table's policy has the once-per-statement
//! form. On SQLite this does nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m0002_row_level_security::{POLICY, policy_expression};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0014_policy_once_per_statement"
    }
}

/// Rewrites every table's tenant policy with `expression` (a function of the tenant column).
async fn rewrite_policies(
    m: &SchemaManager<'_>,
    expression: fn(&str) -> String,
) -> Result<(), DbErr> {
    if m.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = m.get_connection();
    let tables = db
        .query_all(sea_orm_migration::sea_orm::Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT tablename::text FROM pg_policies \
                 WHERE schemaname = current_schema() AND policyname = '{POLICY}'"
            ),
        ))
        .await?;
    for row in tables {
        let table: String = row.try_get_by_index(0)?;
        // The tenants table is its own tenant: its policy is on `id`.
        let column = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let expr = expression(column);
        db.execute_unprepared(&format!(
            "ALTER POLICY {POLICY} ON \"{table}\" USING ({expr}) WITH CHECK ({expr})"
        ))
        .await?;
    }
    Ok(())
}

/// m0002's form, for `down`.
fn per_row_expression(column: &str) -> String {
    format!("{column} = app_tenant() OR app_system()")
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rewrite_policies(m, policy_expression).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rewrite_policies(m, per_row_expression).await
    }
}
