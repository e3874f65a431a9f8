//! Database access for Switchboard: the sea-orm entities and the tenant-scoped repository.
//!
//! Why this crate exists: a handler must not be able to forget the tenant. The only way to reach
//! tenant-owned tables is a [`TenantTxn`], made by [`Database::tenant_txn`] for one tenant; every
//! query it runs has `tenant_id = <that tenant>` ANDed in, and every row it inserts gets that
//! tenant. On PostgreSQL the same transaction also switches to the application role and sets
//! `app.tenant_id`, so row-level security (see the migrations crate) is a second wall.
//!
//! Platform-level work (tenants registry, login lookup, refresh-token lookup) goes through a
//! [`SystemTxn`]; it is deliberately the only way around the tenant filter, so `grep system_txn`
//! lists every place that crosses tenants.
//!
//! SQLite (the embedded default) has one writer at a time; write transactions take a
//! process-wide lock first so concurrent writers queue instead of failing with `SQLITE_BUSY`.

pub mod calls;
pub mod entities;
#[cfg(test)]
mod pg_login_tests;
mod pg_pipeline;
mod pg_read;
mod pg_wire;
mod query_template;
#[doc(hidden)]
pub use pg_read::{FieldReader, PgField, PgModel};
pub mod sip;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::IntoCondition;
use sea_orm::sea_query::PostgresQueryBuilder;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, DeleteMany, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Select, SqlErr, Statement,
    TransactionTrait, UpdateMany, Value,
};
use switchboard_domain::TenantId;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

pub use migrations::{APP_ROLE, Migrator, TENANT_TABLES};
pub use sea_orm;

/// Errors from the database layer. `NotFound` and `Conflict` are the caller's business (404,
/// 409); everything else is an internal error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[source] DbErr),
}

impl From<DbErr> for DbError {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(msg)) => DbError::Conflict(msg),
            Some(SqlErr::ForeignKeyConstraintViolation(msg)) => DbError::Conflict(msg),
            _ => DbError::Db(e),
        }
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A tenant-owned table: names the column that holds the tenant. (Its active model becomes its
/// model, as every derived entity's does: the PostgreSQL read path builds models that way.)
pub trait TenantOwned: EntityTrait<Model: pg_read::PgModel> {
    fn tenant_column() -> Self::Column;
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    /// PostgreSQL: connections of the tenant-read pool, each carrying many reads at once.
    pub read_connections: usize,
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            read_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// The database: a connection pool plus what is needed to open scoped transactions.
#[derive(Clone)]
pub struct Database {
    conn: DatabaseConnection,
    /// SQLite only: serialises write transactions (one writer at a time).
    write_lock: Option<Arc<Mutex<()>>>,
    /// PostgreSQL only: the connections of tenant-scoped reads (see `pg_read`).
    reads: Option<pg_read::ReadPool>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish()
    }
}

/// Whether a transaction will write. Reads never wait for the SQLite writer lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Database {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Self> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(pool.max_connections)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            // sqlx would ping every connection on every checkout: a round trip per query. A
            // dead connection fails its query instead and is dropped from the pool.
            .test_before_acquire(false)
            .sqlx_logging(false);
        let conn = sea_orm::Database::connect(opts).await?;
        let (write_lock, reads) = match conn.get_database_backend() {
            DbBackend::Sqlite => {
                conn.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                    .await?;
                (Some(Arc::new(Mutex::new(()))), None)
            }
            DbBackend::Postgres => (
                None,
                Some(pg_read::ReadPool::new(
                    url,
                    pool.read_connections,
                    pool.acquire_timeout,
                )?),
            ),
            _ => (None, None),
        };
        Ok(Self {
            conn,
            write_lock,
            reads,
        })
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Runs every pending migration.
    pub async fn migrate(&self) -> Result<()> {
        use migrations::MigratorTrait;
        Migrator::up(&self.conn, None).await?;
        Ok(())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.conn.ping().await?;
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        self.conn.close().await?;
        Ok(())
    }

    async fn begin(
        &self,
        access: Access,
    ) -> Result<(DatabaseTransaction, Option<OwnedMutexGuard<()>>)> {
        let guard = match (&self.write_lock, access) {
            (Some(lock), Access::Write) => Some(lock.clone().lock_owned().await),
            _ => None,
        };
        let txn = self.conn.begin().await?;
        Ok((txn, guard))
    }

    /// Opens a transaction that can only see and change `tenant`'s rows.
    ///
    /// A read on PostgreSQL opens no explicit transaction: each query is one prepared
    /// statement on a connection of the read pool (the application role), sent in one
    /// pipeline after `set_config('app.tenant_id', tenant, true)`, and the server runs the two
    /// as one implicit transaction (see `pg_wire`). Each query sees the data committed when it
    /// starts (READ COMMITTED), as a statement in a transaction would.
    pub async fn tenant_txn(&self, tenant: TenantId, access: Access) -> Result<TenantTxn> {
        if access == Access::Read
            && let Some(reads) = &self.reads
        {
            return Ok(TenantTxn {
                conn: TenantConn::PgRead(reads.clone()),
                tenant: tenant.0,
                _write_guard: None,
            });
        }
        let (txn, guard) = self.begin(access).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            set_pg_scope(&txn, &tenant.0.to_string(), false).await?;
        }
        Ok(TenantTxn {
            conn: TenantConn::Txn(txn),
            tenant: tenant.0,
            _write_guard: guard,
        })
    }

    /// Opens a platform-level transaction that crosses tenants. Use only for the tenants
    /// registry, login and token lookups, and platform-operator routes.
    pub async fn system_txn(&self, access: Access) -> Result<SystemTxn> {
        let (txn, guard) = self.begin(access).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            set_pg_scope(&txn, "", true).await?;
        }
        Ok(SystemTxn {
            txn,
            _write_guard: guard,
        })
    }

    /// PostgreSQL: how many statements the tenant-read connections have prepared so far (a
    /// handful per connection while statements are reused). 0 on SQLite.
    pub fn read_statements_prepared(&self) -> u64 {
        self.reads.as_ref().map_or(0, pg_read::ReadPool::prepared)
    }

    /// PostgreSQL, for tests: what a statement on a tenant-read connection sees outside a
    /// scoped read — the session's `app.tenant_id` (empty: unset), the number of visible
    /// `skills` rows, the role. `None` on SQLite.
    #[doc(hidden)]
    pub async fn read_connection_probe(&self) -> Result<Option<(String, i64, String)>> {
        match &self.reads {
            Some(reads) => Ok(Some(reads.unscoped_probe().await?)),
            None => Ok(None),
        }
    }

    /// The raw pool, for tests and the migration command only.
    pub fn raw_connection(&self) -> &DatabaseConnection {
        &self.conn
    }
}

/// Switches the transaction to the application role and names its scope, transaction-locally.
async fn set_pg_scope(txn: &DatabaseTransaction, tenant: &str, system: bool) -> Result<()> {
    txn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true), \
         set_config('app.system', $3, true)",
        [
            Value::from(APP_ROLE),
            Value::from(tenant),
            Value::from(if system { "on" } else { "off" }),
        ],
    ))
    .await?;
    Ok(())
}

/// `q` in `id` order, after `after` if given, at most `limit` rows: one page of a list.
pub fn paged<E: EntityTrait>(
    q: Select<E>,
    id: E::Column,
    after: Option<Uuid>,
    limit: u64,
) -> Select<E> {
    let q = q.order_by_asc(id).limit(limit);
    match after {
        Some(after) => q.filter(id.gt(after)),
        None => q,
    }
}

/// A transaction scoped to one tenant. Every query ANDs in the tenant; every insert sets it.
pub struct TenantTxn {
    conn: TenantConn,
    tenant: Uuid,
    _write_guard: Option<OwnedMutexGuard<()>>,
}

enum TenantConn {
    Txn(DatabaseTransaction),
    /// PostgreSQL reads: one scoped prepared statement per query (see `tenant_txn`).
    PgRead(pg_read::ReadPool),
}

impl TenantTxn {
    pub fn tenant_id(&self) -> TenantId {
        TenantId(self.tenant)
    }

    fn select<E: TenantOwned>(&self) -> Select<E> {
        E::find().filter(E::tenant_column().eq(self.tenant))
    }

    /// The transaction, for writes; a read-only scope has none.
    pub(crate) fn txn(&self) -> Result<&DatabaseTransaction> {
        match &self.conn {
            TenantConn::Txn(t) => Ok(t),
            TenantConn::PgRead(_) => Err(DbError::Db(DbErr::Custom(
                "write attempted in a read-only tenant scope".into(),
            ))),
        }
    }

    async fn fetch<E: EntityTrait<Model: pg_read::PgModel>>(
        &self,
        q: Select<E>,
    ) -> Result<Vec<E::Model>> {
        match &self.conn {
            TenantConn::Txn(t) => Ok(q.all(t).await?),
            TenantConn::PgRead(pool) => {
                let (sql, values) = q.as_query().build(PostgresQueryBuilder);
                let result = pool.scoped_rows(self.tenant, &sql, &values.0).await?;
                pg_read::models_of(&result)
            }
        }
    }

    /// Runs the select `build` makes for `args`; on PostgreSQL through the template of `shape`
    /// (its text rendered once per entity, see `query_template`).
    async fn templated<E: TenantOwned + 'static>(
        &self,
        shape: &'static str,
        args: query_template::Args,
        build: impl Fn(query_template::Args) -> Select<E>,
    ) -> Result<Vec<E::Model>> {
        match &self.conn {
            TenantConn::Txn(t) => Ok(build(args).all(t).await?),
            TenantConn::PgRead(pool) => {
                let template = pool.templates.get(shape, args, build)?;
                let values = template.values(args)?;
                let result = pool
                    .scoped_rows(self.tenant, &template.sql, &values)
                    .await?;
                pg_read::models_of(&result)
            }
        }
    }

    /// Up to `limit` rows of `E` in this tenant in `id` order, after `after` if given: one
    /// page of a plain list.
    pub async fn page<E: TenantOwned + 'static>(
        &self,
        id: E::Column,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<E::Model>> {
        let args = query_template::Args {
            tenant: self.tenant,
            id: after,
            limit,
        };
        let shape = if after.is_some() {
            "page after"
        } else {
            "first page"
        };
        self.templated(shape, args, |a| {
            paged(
                E::find().filter(E::tenant_column().eq(a.tenant)),
                id,
                a.id,
                a.limit,
            )
        })
        .await
    }

    /// The row of `E` in this tenant whose `id_column` is `id`, or `NotFound`.
    pub async fn by_id<E: TenantOwned + 'static>(
        &self,
        id_column: E::Column,
        id: Uuid,
    ) -> Result<E::Model> {
        let args = query_template::Args {
            tenant: self.tenant,
            id: Some(id),
            limit: 1,
        };
        self.templated("by id", args, |a| {
            E::find()
                .filter(E::tenant_column().eq(a.tenant))
                .filter(id_column.eq(a.id))
                .limit(a.limit)
        })
        .await?
        .into_iter()
        .next()
        .ok_or(DbError::NotFound)
    }

    /// All rows of `E` in this tenant that `refine` selects (filters, order, limit).
    pub async fn all<E: TenantOwned>(
        &self,
        refine: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<Vec<E::Model>> {
        self.fetch(refine(self.select::<E>())).await
    }

    /// The first row `refine` selects, or `None`.
    pub async fn first<E: TenantOwned>(
        &self,
        refine: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<Option<E::Model>> {
        Ok(self
            .fetch(refine(self.select::<E>()).limit(1))
            .await?
            .into_iter()
            .next())
    }

    /// Like [`Self::first`], with `NotFound` for none.
    pub async fn one<E: TenantOwned>(
        &self,
        refine: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<E::Model> {
        self.first::<E>(refine).await?.ok_or(DbError::NotFound)
    }

    /// Like [`Self::one`], and locks the row until the transaction ends (PostgreSQL; SQLite
    /// write transactions are serialised anyway).
    pub async fn one_for_update<E: TenantOwned>(
        &self,
        refine: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<E::Model> {
        refine(self.select::<E>())
            .lock_exclusive()
            .one(self.txn()?)
            .await?
            .ok_or(DbError::NotFound)
    }

    pub async fn count<E: TenantOwned>(
        &self,
        refine: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<u64>
    where
        E::Model: Sync,
    {
        let q = refine(self.select::<E>());
        match &self.conn {
            TenantConn::Txn(t) => Ok(q.count(t).await?),
            TenantConn::PgRead(pool) => {
                let (sql, values) = q.as_query().build(PostgresQueryBuilder);
                let sql = format!("SELECT COUNT(*) FROM ({sql}) AS counted");
                let result = pool.scoped_rows(self.tenant, &sql, &values.0).await?;
                Ok(u64::try_from(pg_read::first_i64(&result)?).unwrap_or(0))
            }
        }
    }

    /// Inserts a row, setting its tenant to this transaction's tenant whatever the model said.
    pub async fn insert<A>(&self, mut row: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
        A::Entity: TenantOwned,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        row.set(
            <A::Entity as TenantOwned>::tenant_column(),
            self.tenant.into(),
        );
        Ok(row.insert(self.txn()?).await?)
    }

    /// Updates the rows `refine` selects (within this tenant) to the values set in `values`.
    /// Returns how many rows changed.
    pub async fn update<A>(
        &self,
        values: A,
        refine: impl FnOnce(UpdateMany<A::Entity>) -> UpdateMany<A::Entity>,
    ) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantOwned,
    {
        let tenant_filter = <A::Entity as TenantOwned>::tenant_column()
            .eq(self.tenant)
            .into_condition();
        let q = <A::Entity as EntityTrait>::update_many()
            .set(values)
            .filter(tenant_filter);
        Ok(refine(q).exec(self.txn()?).await?.rows_affected)
    }

    /// Deletes the rows `refine` selects within this tenant.
    pub async fn delete<E: TenantOwned>(
        &self,
        refine: impl FnOnce(DeleteMany<E>) -> DeleteMany<E>,
    ) -> Result<u64> {
        let q = E::delete_many().filter(E::tenant_column().eq(self.tenant));
        Ok(refine(q).exec(self.txn()?).await?.rows_affected)
    }

    /// This tenant's own registry row, locked until the transaction ends. Serialises
    /// operations that check a per-tenant limit (seat provisioning).
    pub async fn lock_tenant(&self) -> Result<entities::tenants::Model> {
        use entities::tenants;
        tenants::Entity::find()
            .filter(tenants::Column::Id.eq(self.tenant))
            .lock_exclusive()
            .one(self.txn()?)
            .await?
            .ok_or(DbError::NotFound)
    }

    /// This tenant's registry row.
    pub async fn tenant(&self) -> Result<entities::tenants::Model> {
        self.first_tenant().await?.ok_or(DbError::NotFound)
    }

    /// This tenant's registry row, `None` if the tenant was deleted.
    pub async fn first_tenant(&self) -> Result<Option<entities::tenants::Model>> {
        use entities::tenants;
        Ok(self
            .fetch(tenants::Entity::find().filter(tenants::Column::Id.eq(self.tenant)))
            .await?
            .into_iter()
            .next())
    }

    pub async fn commit(self) -> Result<()> {
        if let TenantConn::Txn(t) = self.conn {
            t.commit().await?;
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        if let TenantConn::Txn(t) = self.conn {
            t.rollback().await?;
        }
        Ok(())
    }
}

/// A platform-level transaction. It sees every tenant: keep its uses few and obvious.
pub struct SystemTxn {
    txn: DatabaseTransaction,
    _write_guard: Option<OwnedMutexGuard<()>>,
}

impl SystemTxn {
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use entities::{skills, tenants};
    use sea_orm::Set;

    async fn sqlite() -> Database {
        let db = Database::connect(
            "sqlite::memory:",
            &PoolConfig {
                max_connections: 1,
                read_connections: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        db.migrate().await.unwrap();
        db
    }

    pub(crate) async fn make_tenant(db: &Database, slug: &str) -> TenantId {
        let id = TenantId::new();
        let now = chrono::Utc::now();
        let sys = db.system_txn(Access::Write).await.unwrap();
        tenants::ActiveModel {
            id: Set(id.0),
            slug: Set(slug.into()),
            name: Set(slug.into()),
            status: Set("active".into()),
            plan: Set("standard".into()),
            seat_limit: Set(5),
            tokens_valid_after: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(sys.conn())
        .await
        .unwrap();
        sys.commit().await.unwrap();
        id
    }

    #[tokio::test]
    async fn tenant_txn_sees_only_its_tenant() {
        let db = sqlite().await;
        let a = make_tenant(&db, "aaa").await;
        let b = make_tenant(&db, "bbb").await;
        for (t, name) in [(a, "sales"), (b, "support")] {
            let tx = db.tenant_txn(t, Access::Write).await.unwrap();
            // The model names tenant b for both; insert() must override it.
            tx.insert(skills::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(b.0),
                name: Set(name.into()),
                created_at: Set(chrono::Utc::now()),
            })
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        let tx = db.tenant_txn(a, Access::Read).await.unwrap();
        let rows = tx.all::<skills::Entity>(|q| q).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "sales");
        assert_eq!(rows[0].tenant_id, a.0);
        let n = tx.delete::<skills::Entity>(|q| q).await.unwrap();
        assert_eq!(n, 1, "delete must touch only tenant a's row");
        tx.commit().await.unwrap();
        let tx = db.tenant_txn(b, Access::Read).await.unwrap();
        assert_eq!(tx.count::<skills::Entity>(|q| q).await.unwrap(), 1);
    }
}
