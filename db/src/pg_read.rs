//! Tenant-scoped reads on PostgreSQL: the hot path of every list and get.
//!
//! Why this module exists: reads through sqlx's simple-query path came back as text, and
//! decoding it (timestamps above all) was the largest part of the api's instructions per
//! request in `scripts/bench api`; the server, for its part, formatted every value as text and
//! parsed each `EXECUTE` message. Here a read is one prepared statement with binary results:
//!
//! * A connection of this pool becomes the application role once, when it connects
//!   (`SET ROLE`, session-wide), and is used for nothing but tenant reads; the role owns no
//!   table and has no BYPASSRLS, so row-level security applies to every statement it runs.
//! * Each read is its own transaction: `SELECT set_config('app.tenant_id', $1, true)` and the
//!   read, sent as one extended-protocol pipeline ending in one Sync (see `pg_wire`), which
//!   PostgreSQL runs as one implicit transaction. The tenant is transaction-local as on every
//!   other path, so a statement outside such a pipeline sees nothing (the policy fails closed)
//!   and no setting outlives its read; the server must report the session idle after each
//!   read. A connection whose read was cancelled half way or failed on the wire is not
//!   reused. Every read also carries the repository's own `tenant_id = <tenant>` filter.
//! * Statements are prepared once per connection (keyed by their SQL text, bounded) and their
//!   results decoded from the binary format into sea-orm values, so the entities'
//!   `FromQueryResult` builds the models as before.
//!
//! Writes and platform-level reads stay on sea-orm/sqlx transactions.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sea_orm::{ActiveModelTrait, EntityTrait, TryIntoModel, Value};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use crate::pg_wire::{Column, Prepared, Row, WireConn};
use crate::{APP_ROLE, DbError, Result};

/// Bound on statements prepared per connection (the query shapes of this code base are a few
/// dozen); past it a statement is prepared as the unnamed one for each use.
const MAX_STATEMENTS_PER_CONNECTION: usize = 256;

/// A connection of the read pool.
pub(crate) struct ReadConn {
    wire: WireConn,
    /// `SELECT set_config('app.tenant_id', $1, true)`.
    scope: Prepared,
    /// A read started and did not finish (its future was dropped): the session's state is
    /// unknown, so the pool drops the connection.
    in_flight: bool,
    statements: HashMap<String, Prepared>,
}

impl ReadConn {
    /// The prepared statement for `sql`, preparing it on first use.
    async fn statement(&mut self, sql: &str, prepared: &AtomicU64) -> Result<Prepared> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let keep = self.statements.len() < MAX_STATEMENTS_PER_CONNECTION;
        let name = if keep {
            format!("r{}", self.statements.len())
        } else {
            String::new()
        };
        let s = self.wire.prepare(&name, sql).await?;
        prepared.fetch_add(1, Ordering::Relaxed);
        if keep {
            self.statements.insert(sql.to_owned(), s.clone());
        }
        Ok(s)
    }
}

pub(crate) struct Manager {
    config: tokio_postgres::Config,
    connect_timeout: Duration,
}

impl managed::Manager for Manager {
    type Type = ReadConn;
    type Error = DbError;

    async fn create(&self) -> Result<ReadConn> {
        let mut wire = WireConn::connect(&self.config, self.connect_timeout).await?;
        // Session-wide: this connection is the application role from now on.
        wire.simple(&format!("SET ROLE {APP_ROLE}")).await?;
        let scope = wire
            .prepare("scope", "SELECT set_config('app.tenant_id', $1, true)")
            .await?;
        Ok(ReadConn {
            wire,
            scope,
            in_flight: false,
            statements: HashMap::new(),
        })
    }

    async fn recycle(&self, conn: &mut ReadConn, _: &Metrics) -> RecycleResult<DbError> {
        if conn.wire.is_broken() {
            return Err(RecycleError::message("the connection failed"));
        }
        if conn.in_flight {
            return Err(RecycleError::message("a read was cancelled half way"));
        }
        Ok(())
    }
}

/// The pool of read connections.
#[derive(Clone)]
pub(crate) struct ReadPool {
    pool: managed::Pool<Manager>,
    /// Statements prepared so far, over all connections (see [`ReadPool::prepared`]).
    prepared: Arc<AtomicU64>,
}

/// The rows of one read and their columns.
pub(crate) struct Rows {
    pub columns: Arc<[Column]>,
    pub rows: Vec<Row>,
}

impl ReadPool {
    /// A pool for `url` (a `postgres://` URL) of at most `size` connections; connections are
    /// made when first needed.
    pub(crate) fn new(url: &str, size: usize, acquire_timeout: Duration) -> Result<Self> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| custom(format!("read pool: {e}")))?;
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(acquire_timeout);
        let pool = managed::Pool::builder(Manager {
            config,
            connect_timeout,
        })
        .max_size(size.max(1))
        .wait_timeout(Some(acquire_timeout))
        .create_timeout(Some(acquire_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| custom(format!("read pool: {e}")))?;
        Ok(Self {
            pool,
            prepared: Arc::default(),
        })
    }

    /// How many statements the pool's connections have prepared: a handful per connection
    /// when statements are reused, one per read if they were not.
    pub(crate) fn prepared(&self) -> u64 {
        self.prepared.load(Ordering::Relaxed)
    }

    /// Runs `sql` with `values` scoped to `tenant`; returns its rows.
    pub(crate) async fn scoped_rows(
        &self,
        tenant: Uuid,
        sql: &str,
        values: &[Value],
    ) -> Result<Rows> {
        let mut conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => e,
            e => custom(format!("read pool: {e}")),
        })?;
        let conn = &mut *conn;
        conn.in_flight = true;
        let read = async {
            let statement = conn.statement(sql, &self.prepared).await?;
            let params: Vec<Param<'_>> = values.iter().map(Param).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let mut tenant_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let tenant_text = tenant.hyphenated().encode_lower(&mut tenant_text);
            let rows = conn
                .wire
                .scoped_read(&conn.scope, tenant_text, &statement, &params)
                .await?;
            Ok(Rows {
                columns: statement.columns,
                rows,
            })
        };
        let rows = read.await;
        conn.in_flight = false;
        rows
    }
}

impl ReadPool {
    /// What a statement run on a read connection outside a scoped read sees: the session's
    /// `app.tenant_id` (empty when unset), how many `skills` rows are visible, and the role
    /// it runs as. For the tests of the fail-closed policy.
    pub(crate) async fn unscoped_probe(&self) -> Result<(String, i64, String)> {
        let mut conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => e,
            e => custom(format!("read pool: {e}")),
        })?;
        let conn = &mut *conn;
        conn.in_flight = true;
        let probe = async {
            let statement = conn
                .wire
                .prepare(
                    "",
                    "SELECT coalesce(current_setting('app.tenant_id', true), ''), \
                     (SELECT count(*) FROM skills), current_user::text",
                )
                .await?;
            let rows = conn.wire.unscoped_read(&statement).await?;
            let row = rows.first().ok_or(DbError::NotFound)?;
            let values = row.values()?;
            let [setting, visible, user] = values.as_slice() else {
                return Err(custom("probe: not three values".into()));
            };
            Ok((
                decode::<String>(&Type::TEXT, *setting)?,
                decode::<i64>(&Type::INT8, *visible)?,
                decode::<String>(&Type::TEXT, *user)?,
            ))
        };
        let probed = probe.await;
        conn.in_flight = false;
        probed
    }
}

/// A sea-query value as a statement parameter of the type the server inferred for it.
#[derive(Debug)]
struct Param<'a>(&'a Value);

fn int_param(
    v: Option<i64>,
    ty: &Type,
    out: &mut tokio_postgres::types::private::BytesMut,
) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
    let Some(v) = v else {
        return Ok(IsNull::Yes);
    };
    match *ty {
        Type::INT2 => i16::try_from(v)?.to_sql_checked(ty, out),
        Type::INT4 => i32::try_from(v)?.to_sql_checked(ty, out),
        // A parameter whose type the server could not infer (sea-query writes an empty `IN`
        // as `$1 = $2`) is text; the server converts it where it is used.
        Type::TEXT => v.to_string().to_sql_checked(ty, out),
        _ => v.to_sql_checked(ty, out),
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::TinyInt(v) => int_param(v.map(i64::from), ty, out),
            Value::SmallInt(v) => int_param(v.map(i64::from), ty, out),
            Value::Int(v) => int_param(v.map(i64::from), ty, out),
            Value::BigInt(v) => int_param(*v, ty, out),
            Value::TinyUnsigned(v) => int_param(v.map(i64::from), ty, out),
            Value::SmallUnsigned(v) => int_param(v.map(i64::from), ty, out),
            Value::Unsigned(v) => int_param(v.map(i64::from), ty, out),
            Value::BigUnsigned(v) => int_param(v.map(i64::try_from).transpose()?, ty, out),
            Value::Float(v) => v.to_sql_checked(ty, out),
            Value::Double(v) => v.to_sql_checked(ty, out),
            Value::String(v) => v.as_deref().to_sql_checked(ty, out),
            Value::Char(v) => v.map(|c| c.to_string()).to_sql_checked(ty, out),
            Value::Bytes(v) => v.as_deref().to_sql_checked(ty, out),
            Value::Json(v) => v.as_deref().to_sql_checked(ty, out),
            Value::Uuid(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoDateTimeUtc(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoDateTimeWithTimeZone(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoDateTimeLocal(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoDateTime(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoDate(v) => v.as_deref().to_sql_checked(ty, out),
            Value::ChronoTime(v) => v.as_deref().to_sql_checked(ty, out),
            #[allow(unreachable_patterns)]
            other => Err(format!("unsupported parameter {other:?}").into()),
        }
    }

    /// The concrete check is in `to_sql` (each arm checks its own type).
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The entity columns of a result's columns, by name (once per result).
pub(crate) fn columns_of<E: EntityTrait>(columns: &[Column]) -> Result<Vec<(E::Column, Type)>> {
    columns
        .iter()
        .map(|c| {
            E::Column::from_str(&c.name)
                .map(|col| (col, c.ty.clone()))
                .map_err(|_| custom(format!("column {}: not in the entity", c.name)))
        })
        .collect()
}

/// One row as a model: each value decoded from the binary format by its type and set on an
/// active model, which then becomes the model (no per-row maps or column-name lookups).
pub(crate) fn model_of<E>(row: &Row, columns: &[(E::Column, Type)]) -> Result<E::Model>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let values = row.values()?;
    if values.len() != columns.len() {
        return Err(custom(format!(
            "a row of {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    let mut model = <E::ActiveModel as ActiveModelTrait>::default();
    for ((column, ty), raw) in columns.iter().zip(values) {
        model.try_set(*column, value_of(ty, raw)?)?;
    }
    Ok(model.try_into_model()?)
}

/// The first column of the first row as an `i64` (a count).
pub(crate) fn first_i64(rows: &Rows) -> Result<i64> {
    let row = rows.rows.first().ok_or(DbError::NotFound)?;
    let ty = &rows.columns.first().ok_or(DbError::NotFound)?.ty;
    let raw = row.values()?.first().copied().flatten();
    decode(ty, raw)
}

fn decode<'a, T: FromSql<'a>>(ty: &Type, raw: Option<&'a [u8]>) -> Result<T> {
    T::from_sql_nullable(ty, raw).map_err(|e| custom(format!("postgres read: {ty}: {e}")))
}

/// A value in the binary format as a sea-orm value of its column's type.
fn value_of(ty: &Type, raw: Option<&[u8]>) -> Result<Value> {
    fn boxed<T>(v: Option<T>) -> Option<Box<T>> {
        v.map(Box::new)
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(decode(ty, raw)?),
        Type::INT2 => Value::SmallInt(decode(ty, raw)?),
        Type::INT4 => Value::Int(decode(ty, raw)?),
        Type::INT8 => Value::BigInt(decode(ty, raw)?),
        Type::FLOAT4 => Value::Float(decode(ty, raw)?),
        Type::FLOAT8 => Value::Double(decode(ty, raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            Value::String(boxed(decode::<Option<String>>(ty, raw)?))
        }
        Type::UUID => Value::Uuid(boxed(decode::<Option<Uuid>>(ty, raw)?)),
        Type::TIMESTAMPTZ => Value::ChronoDateTimeUtc(boxed(decode::<
            Option<chrono::DateTime<chrono::Utc>>,
        >(ty, raw)?)),
        Type::TIMESTAMP => {
            Value::ChronoDateTime(boxed(decode::<Option<chrono::NaiveDateTime>>(ty, raw)?))
        }
        Type::DATE => Value::ChronoDate(boxed(decode::<Option<chrono::NaiveDate>>(ty, raw)?)),
        Type::JSON | Type::JSONB => {
            Value::Json(boxed(decode::<Option<serde_json::Value>>(ty, raw)?))
        }
        Type::BYTEA => Value::Bytes(boxed(decode::<Option<Vec<u8>>>(ty, raw)?)),
        ref other => return Err(custom(format!("unsupported column type {other}"))),
    })
}

fn custom(msg: String) -> DbError {
    DbError::Db(sea_orm::DbErr::Custom(msg))
}
