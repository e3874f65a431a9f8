//! Tenant-scoped reads on PostgreSQL over tokio-postgres: the hot path of every list and get.
//!
//! Why this module exists: reads through sqlx's simple-query path came back as text, and
//! decoding it (timestamps above all) was the largest part of the api's instructions per
//! request in `scripts/bench api`; the server, for its part, formatted every value as text and
//! parsed each `EXECUTE` message. Here a read is one prepared statement with binary results:
//!
//! * A connection of this pool becomes the application role once, when it connects
//!   (`SET ROLE`, session-wide), and is used for nothing but tenant reads; the role owns no
//!   table and has no BYPASSRLS, so row-level security applies to every statement it runs.
//! * Each read is its own transaction, `BEGIN; SELECT set_config('app.tenant_id', $1, true);
//!   <read>; COMMIT`, pipelined in one round trip: the tenant is transaction-local as on every
//!   other path, so a statement outside such a transaction sees nothing (the policy fails
//!   closed) and no setting outlives its read. A connection whose read was cancelled half way
//!   (it may still be inside the transaction) is not reused. Every read also carries the
//!   repository's own `tenant_id = <tenant>` filter.
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
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Row, Statement};
use uuid::Uuid;

use crate::{APP_ROLE, DbError, Result};

/// Bound on statements prepared per connection (the query shapes of this code base are a few
/// dozen); past it a statement is prepared as an unnamed one for each use.
const MAX_STATEMENTS_PER_CONNECTION: usize = 256;

/// A connection of the read pool.
pub(crate) struct ReadConn {
    client: Client,
    /// `SELECT set_config('app.tenant_id', $1, true)`.
    scope: Statement,
    /// A read started and did not finish (its future was dropped): the session may still be
    /// inside its transaction, so the pool drops the connection.
    in_flight: bool,
    statements: HashMap<String, Statement>,
}

pub(crate) struct Manager {
    config: tokio_postgres::Config,
}

impl managed::Manager for Manager {
    type Type = ReadConn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<ReadConn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "read connection ended");
            }
        });
        // Session-wide: this connection is the application role from now on.
        client
            .batch_execute(&format!("SET ROLE {APP_ROLE}"))
            .await?;
        let scope = client
            .prepare("SELECT set_config('app.tenant_id', $1, true)")
            .await?;
        Ok(ReadConn {
            client,
            scope,
            in_flight: false,
            statements: HashMap::new(),
        })
    }

    async fn recycle(
        &self,
        conn: &mut ReadConn,
        _: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
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

impl ReadPool {
    /// A pool for `url` (a `postgres://` URL) of at most `size` connections; connections are
    /// made when first needed.
    pub(crate) fn new(url: &str, size: usize, acquire_timeout: Duration) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(pg_err)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(acquire_timeout);
        }
        let pool = managed::Pool::builder(Manager { config })
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
    ) -> Result<Vec<Row>> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| custom(format!("read pool: {e}")))?;
        let conn = &mut *conn;
        let statement = match conn.statements.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = conn.client.prepare(sql).await.map_err(pg_err)?;
                self.prepared.fetch_add(1, Ordering::Relaxed);
                if conn.statements.len() < MAX_STATEMENTS_PER_CONNECTION {
                    conn.statements.insert(sql.to_owned(), s.clone());
                }
                s
            }
        };
        let params: Vec<Param<'_>> = values.iter().map(Param).collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let tenant_text = tenant.to_string();
        let scope_params: [&(dyn ToSql + Sync); 1] = [&tenant_text];
        // Pipelined: one round trip, run in order. A failed read makes the COMMIT a rollback.
        conn.in_flight = true;
        let (begin, set, rows, commit) = futures::join!(
            conn.client.batch_execute("BEGIN"),
            conn.client.execute(&conn.scope, &scope_params),
            conn.client.query(&statement, &params),
            conn.client.batch_execute("COMMIT"),
        );
        conn.in_flight = false;
        begin.map_err(pg_err)?;
        set.map_err(pg_err)?;
        let rows = rows.map_err(pg_err)?;
        commit.map_err(pg_err)?;
        Ok(rows)
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

/// The entity columns of a result set's columns, by name (once per result set).
pub(crate) fn columns_of<E: EntityTrait>(row: &Row) -> Result<Vec<E::Column>> {
    row.columns()
        .iter()
        .map(|c| {
            E::Column::from_str(c.name())
                .map_err(|_| custom(format!("column {}: not in the entity", c.name())))
        })
        .collect()
}

/// One row as a model: each value decoded from the binary format by its type and set on an
/// active model, which then becomes the model (no per-row maps or column-name lookups).
pub(crate) fn model_of<E>(row: &Row, columns: &[E::Column]) -> Result<E::Model>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let mut model = <E::ActiveModel as ActiveModelTrait>::default();
    for (i, column) in columns.iter().enumerate() {
        model.try_set(*column, value_at(row, i)?)?;
    }
    Ok(model.try_into_model()?)
}

/// The `i`th value of `row` as a sea-orm value of its column's type.
fn value_at(row: &Row, i: usize) -> Result<Value> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
        row.try_get(i).map_err(pg_err)
    }
    let boxed = |v: Option<_>| v.map(Box::new);
    Ok(match *row.columns()[i].type_() {
        Type::BOOL => Value::Bool(get(row, i)?),
        Type::INT2 => Value::SmallInt(get(row, i)?),
        Type::INT4 => Value::Int(get(row, i)?),
        Type::INT8 => Value::BigInt(get(row, i)?),
        Type::FLOAT4 => Value::Float(get(row, i)?),
        Type::FLOAT8 => Value::Double(get(row, i)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            Value::String(get::<Option<String>>(row, i)?.map(Box::new))
        }
        Type::UUID => Value::Uuid(boxed(get::<Option<Uuid>>(row, i)?)),
        Type::TIMESTAMPTZ => Value::ChronoDateTimeUtc(
            get::<Option<chrono::DateTime<chrono::Utc>>>(row, i)?.map(Box::new),
        ),
        Type::TIMESTAMP => {
            Value::ChronoDateTime(get::<Option<chrono::NaiveDateTime>>(row, i)?.map(Box::new))
        }
        Type::DATE => Value::ChronoDate(get::<Option<chrono::NaiveDate>>(row, i)?.map(Box::new)),
        Type::JSON | Type::JSONB => {
            Value::Json(get::<Option<serde_json::Value>>(row, i)?.map(Box::new))
        }
        Type::BYTEA => Value::Bytes(get::<Option<Vec<u8>>>(row, i)?.map(Box::new)),
        ref other => {
            return Err(custom(format!(
                "column {}: unsupported type {other}",
                row.columns()[i].name()
            )));
        }
    })
}

fn custom(msg: String) -> DbError {
    DbError::Db(sea_orm::DbErr::Custom(msg))
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> DbError {
    match e.source() {
        Some(source) => custom(format!("postgres read: {e}: {source}")),
        None => custom(format!("postgres read: {e}")),
    }
}
