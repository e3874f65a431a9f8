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
//!   read. A connection that failed on the wire is replaced. Every read also carries the
//!   repository's own `tenant_id = <tenant>` filter.
//! * A few connections carry all reads, many at once each (`pg_pipeline`): reads of
//!   concurrent requests queue on a connection and reach the server together, so it stays
//!   busy instead of sleeping and waking per read. A read whose caller goes away is still
//!   answered, so no connection is left holding half a read.
//! * Statements are prepared once per connection (keyed by their SQL text, bounded) and their
//!   results decoded from the binary format straight into the models (`PgModel`).
//!
//! Writes and platform-level reads stay on sea-orm/sqlx transactions.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use sea_orm::Value;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use crate::pg_pipeline::{PipelinedConn, Progress};
use crate::pg_wire::{
    Column, Prepared, Row, WireConn, encode_prepare, encode_scoped_read, encode_unscoped_read,
};
use crate::{APP_ROLE, DbError, Result};

/// A connection with reads in flight that answered none for this long is held up.
const HELD_UP_AFTER: Duration = Duration::from_millis(50);
/// Reads in flight on one connection before the next connection takes new ones.
const SPILL_AT: usize = 64;

/// Bound on statements prepared per connection (the query shapes of this code base are a few
/// dozen); past it a statement is prepared as the unnamed one for each use.
const MAX_STATEMENTS_PER_CONNECTION: usize = 256;

/// A connection of the read pool: many reads at once (see `pg_pipeline`).
pub(crate) struct ReadConn {
    conn: PipelinedConn,
    /// `SELECT set_config('app.tenant_id', $1, true)`.
    scope: Prepared,
    statements: Mutex<HashMap<String, Arc<Prepared>>>,
    /// Statement names handed out so far (`r0`, `r1`, ...).
    named: AtomicUsize,
    /// Held from preparing the unnamed statement to its last use, so that no other request
    /// replaces it in between.
    unnamed: tokio::sync::Mutex<()>,
}

/// A statement to run, and the hold on the unnamed statement when it is that one.
struct Statement<'c> {
    prepared: Arc<Prepared>,
    _unnamed: Option<tokio::sync::MutexGuard<'c, ()>>,
}

impl ReadConn {
    async fn connect(
        config: &tokio_postgres::Config,
        timeout: Duration,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let mut wire = WireConn::connect(config, timeout).await?;
        // Session-wide: this connection is the application role from now on.
        wire.simple(&format!("SET ROLE {APP_ROLE}")).await?;
        let scope = wire
            .prepare("scope", "SELECT set_config('app.tenant_id', $1, true)")
            .await?;
        Ok(Self {
            conn: PipelinedConn::start(wire, progress),
            scope,
            statements: Mutex::default(),
            named: AtomicUsize::new(0),
            unnamed: tokio::sync::Mutex::new(()),
        })
    }

    fn statements(&self) -> MutexGuard<'_, HashMap<String, Arc<Prepared>>> {
        // A panic while holding this lock leaves at worst a statement unrecorded.
        self.statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The prepared statement for `sql`, preparing it on first use. Two first uses at once
    /// prepare it twice under two names; the second is kept.
    async fn statement(&self, sql: &str, prepared: &AtomicU64) -> Result<Statement<'_>> {
        if let Some(s) = self.statements().get(sql) {
            return Ok(Statement {
                prepared: s.clone(),
                _unnamed: None,
            });
        }
        let n = self.named.fetch_add(1, Ordering::Relaxed);
        let (name, unnamed) = if n < MAX_STATEMENTS_PER_CONNECTION {
            (format!("r{n}"), None)
        } else {
            (String::new(), Some(self.unnamed.lock().await))
        };
        let mut request = BytesMut::new();
        encode_prepare(&name, sql, &mut request)?;
        let statement = Arc::new(self.conn.prepared(request, &name).await?);
        prepared.fetch_add(1, Ordering::Relaxed);
        if unnamed.is_none() {
            self.statements().insert(sql.to_owned(), statement.clone());
        }
        Ok(Statement {
            prepared: statement,
            _unnamed: unnamed,
        })
    }
}

/// The pool of read connections: a fixed number of slots, each a connection made when first
/// needed and replaced when it fails. A read goes to the first connection that is neither
/// held up (reads in flight and no answer for [`HELD_UP_AFTER`]) nor full ([`SPILL_AT`] reads
/// in flight), else to the least loaded one. Reads gather on as few connections as carry
/// them, where they batch (the server reads many per receive and does not sleep between
/// them), and a connection held up by a slow read gets no more until it answers again.
#[derive(Clone)]
pub(crate) struct ReadPool {
    inner: Arc<PoolInner>,
    /// Query texts of the plain page and get-by-id, by entity (see `query_template`).
    pub templates: crate::query_template::Templates,
}

struct PoolInner {
    config: tokio_postgres::Config,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    slots: Vec<Slot>,
    /// Statements prepared so far, over all connections (see [`ReadPool::prepared`]).
    prepared: AtomicU64,
}

/// A place for one connection, made when first needed and replaced when it fails.
#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<ReadConn>>>,
    /// Reads in flight.
    load: AtomicUsize,
    /// The connection's progress (shared by the connections the slot has in turn).
    progress: Arc<Progress>,
}

impl Slot {
    fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    fn held_up(&self) -> bool {
        self.load() > 0 && self.progress.since() >= HELD_UP_AFTER
    }
}

/// A read counted in its slot's load until dropped.
struct InFlight<'p>(&'p AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The rows of one read and their columns.
pub(crate) struct Rows {
    pub columns: Arc<[Column]>,
    pub rows: Vec<Row>,
}

impl ReadPool {
    /// A pool for `url` (a `postgres://` URL) of `size` connections, each made when first
    /// needed.
    pub(crate) fn new(url: &str, size: usize, acquire_timeout: Duration) -> Result<Self> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| custom(format!("read pool: {e}")))?;
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(acquire_timeout);
        Ok(Self {
            inner: Arc::new(PoolInner {
                config,
                connect_timeout,
                acquire_timeout,
                slots: (0..size.max(1)).map(|_| Slot::default()).collect(),
                prepared: AtomicU64::new(0),
            }),
            templates: Default::default(),
        })
    }

    /// How many statements the pool's connections have prepared: a handful per connection
    /// when statements are reused, one per read if they were not.
    pub(crate) fn prepared(&self) -> u64 {
        self.inner.prepared.load(Ordering::Relaxed)
    }

    /// The slot a read goes to (see [`ReadPool`]).
    fn pick(&self) -> &Slot {
        let slots = &self.inner.slots;
        let open = slots.iter().find(|s| s.load() < SPILL_AT && !s.held_up());
        // `slots` is never empty (`new` makes at least one).
        open.or_else(|| slots.iter().min_by_key(|s| s.load()))
            .unwrap_or(&slots[0])
    }

    /// The chosen slot's connection, made (again) if it has none or its last one failed, and
    /// the read's place in that slot's load (given back when dropped).
    async fn conn(&self) -> Result<(Arc<ReadConn>, InFlight<'_>)> {
        let pool = &*self.inner;
        let slot = self.pick();
        slot.load.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(&slot.load);
        let waited = tokio::time::timeout(pool.acquire_timeout, async {
            let mut held = slot.conn.lock().await;
            if let Some(conn) = held.as_ref().filter(|c| !c.conn.is_closed()) {
                return Ok(conn.clone());
            }
            *held = None;
            let conn = Arc::new(
                ReadConn::connect(&pool.config, pool.connect_timeout, slot.progress.clone())
                    .await?,
            );
            *held = Some(conn.clone());
            Ok::<_, DbError>(conn)
        })
        .await;
        let conn = waited
            .map_err(|_| custom("read pool: timed out waiting for a connection".into()))??;
        Ok((conn, in_flight))
    }

    /// Runs `sql` with `values` scoped to `tenant`; returns its rows.
    pub(crate) async fn scoped_rows(
        &self,
        tenant: Uuid,
        sql: &str,
        values: &[Value],
    ) -> Result<Rows> {
        let (conn, _in_flight) = self.conn().await?;
        let statement = conn.statement(sql, &self.inner.prepared).await?;
        let params: Vec<Param<'_>> = values.iter().map(Param).collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let mut tenant_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let tenant_text = tenant.hyphenated().encode_lower(&mut tenant_text);
        let mut request = BytesMut::with_capacity(256);
        encode_scoped_read(
            &conn.scope,
            tenant_text,
            &statement.prepared,
            &params,
            &mut request,
        )?;
        let rows = conn.conn.rows(request, 2).await?;
        Ok(Rows {
            columns: statement.prepared.columns.clone(),
            rows,
        })
    }
}

impl ReadPool {
    /// What a statement run on a read connection outside a scoped read sees: the session's
    /// `app.tenant_id` (empty when unset), how many `skills` rows are visible, and the role
    /// it runs as. For the tests of the fail-closed policy.
    pub(crate) async fn unscoped_probe(&self) -> Result<(String, i64, String)> {
        let (conn, _in_flight) = self.conn().await?;
        let _unnamed = conn.unnamed.lock().await;
        let mut request = BytesMut::new();
        encode_prepare(
            "",
            "SELECT coalesce(current_setting('app.tenant_id', true), ''), \
             (SELECT count(*) FROM skills), current_user::text",
            &mut request,
        )?;
        let statement = conn.conn.prepared(request, "").await?;
        let mut request = BytesMut::new();
        encode_unscoped_read(&statement, &mut request)?;
        let rows = conn.conn.rows(request, 1).await?;
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

/// A model read straight from a tenant read's binary row, field by field in declaration
/// order (`tenant_owned!` in `entities.rs` writes the impl from the field list).
///
/// Why not through sea-orm's active model: that path turned each value into a boxed
/// `sea_orm::Value`, into the field, back into a `Value` and into the field again; for a
/// 20-row page it was the largest part of the api's instructions per request.
pub trait PgModel: Sized {
    fn from_pg_row(row: &mut FieldReader<'_>) -> Result<Self>;
}

/// One row of a result, read field by field: each field must be the next column, by name
/// (checked on a result's first row; every row of a result has the same columns).
pub struct FieldReader<'a> {
    columns: &'a [Column],
    values: &'a [Option<&'a [u8]>],
    at: usize,
    check_names: bool,
}

impl FieldReader<'_> {
    /// The next column's value as the field `name`'s type.
    pub fn next<T: PgField>(&mut self, name: &str) -> Result<T> {
        let (Some(column), Some(raw)) = (self.columns.get(self.at), self.values.get(self.at))
        else {
            return Err(custom(format!("column {name}: missing from the result")));
        };
        if self.check_names && column.name != name {
            return Err(custom(format!(
                "column {}: the model expects {name} there",
                column.name
            )));
        }
        self.at += 1;
        T::from_pg(&column.ty, *raw)
            .map_err(|e| custom(format!("column {name} ({}): {e}", column.ty)))
    }
}

/// Every row of `result` as `M`.
pub(crate) fn models_of<M: PgModel>(result: &Rows) -> Result<Vec<M>> {
    let mut values = Vec::with_capacity(result.columns.len());
    result
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.values_into(&mut values)?;
            let mut reader = FieldReader {
                columns: &result.columns,
                values: &values,
                at: 0,
                check_names: i == 0,
            };
            let model = M::from_pg_row(&mut reader)?;
            if reader.at != result.columns.len() {
                return Err(custom(format!(
                    "a result of {} columns for a model of {}",
                    result.columns.len(),
                    reader.at
                )));
            }
            Ok(model)
        })
        .collect()
}

/// A field type of the entities, decoded from PostgreSQL's binary format of the column types
/// it is stored as (any other column type is an error, never a guess).
pub trait PgField: Sized {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String>;
}

fn non_null(raw: Option<&[u8]>) -> std::result::Result<&[u8], String> {
    raw.ok_or_else(|| "NULL in a NOT NULL field".to_owned())
}

fn fixed<const N: usize>(
    ty: &Type,
    want: &[Type],
    raw: Option<&[u8]>,
) -> std::result::Result<[u8; N], String> {
    if !want.contains(ty) {
        return Err("unexpected column type".to_owned());
    }
    non_null(raw)?
        .try_into()
        .map_err(|_| format!("{} bytes where {N} belong", raw.map_or(0, <[u8]>::len)))
}

impl<T: PgField> PgField for Option<T> {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        raw.map(|_| T::from_pg(ty, raw)).transpose()
    }
}

impl PgField for bool {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        Ok(fixed::<1>(ty, &[Type::BOOL], raw)? != [0])
    }
}

impl PgField for i32 {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        Ok(i32::from_be_bytes(fixed(ty, &[Type::INT4], raw)?))
    }
}

impl PgField for i64 {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        Ok(i64::from_be_bytes(fixed(ty, &[Type::INT8], raw)?))
    }
}

impl PgField for Uuid {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        Ok(Uuid::from_bytes(fixed(ty, &[Type::UUID], raw)?))
    }
}

impl PgField for String {
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        if ![Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
            return Err("unexpected column type".to_owned());
        }
        std::str::from_utf8(non_null(raw)?)
            .map(str::to_owned)
            .map_err(|e| e.to_string())
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl PgField for chrono::DateTime<chrono::Utc> {
    /// `timestamptz` is microseconds since 2000-01-01 UTC; `infinity` and values chrono cannot
    /// hold are errors.
    fn from_pg(ty: &Type, raw: Option<&[u8]>) -> std::result::Result<Self, String> {
        let micros = i64::from_be_bytes(fixed(ty, &[Type::TIMESTAMPTZ], raw)?);
        micros
            .checked_add(PG_EPOCH_UNIX_MICROS)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .ok_or_else(|| format!("timestamp {micros} out of range"))
    }
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

fn custom(msg: String) -> DbError {
    DbError::Db(sea_orm::DbErr::Custom(msg))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::entities::skills;
    use chrono::{DateTime, Utc};

    /// Our `timestamptz` decoding gives what postgres-types' chrono decoding gives, across
    /// the years an entity can hold, to the microsecond.
    #[test]
    fn timestamps_decode_as_postgres_types_does() {
        let mut micros: i64 = -3_155_760_000_000_000; // about 1900
        while micros < 3_155_760_000_000_000 {
            let raw = micros.to_be_bytes();
            let ours = DateTime::<Utc>::from_pg(&Type::TIMESTAMPTZ, Some(&raw)).unwrap();
            let theirs = DateTime::<Utc>::from_sql(&Type::TIMESTAMPTZ, &raw).unwrap();
            assert_eq!(ours, theirs, "{micros}");
            micros += 7_777_777_777_777 + (micros & 0xff_ffff);
        }
        let infinity = i64::MAX.to_be_bytes();
        assert!(DateTime::<Utc>::from_pg(&Type::TIMESTAMPTZ, Some(&infinity)).is_err());
    }

    #[test]
    fn fields_refuse_nulls_wrong_types_and_wrong_lengths() {
        let id = Uuid::now_v7();
        assert_eq!(Uuid::from_pg(&Type::UUID, Some(id.as_bytes())).unwrap(), id);
        assert_eq!(
            Option::<Uuid>::from_pg(&Type::UUID, None).unwrap(),
            None,
            "NULL in an optional field"
        );
        assert!(
            Uuid::from_pg(&Type::UUID, None).is_err(),
            "NULL in a required field"
        );
        assert!(Uuid::from_pg(&Type::TEXT, Some(id.as_bytes())).is_err());
        assert!(i32::from_pg(&Type::INT4, Some(&[0, 0, 1])).is_err());
        assert_eq!(i32::from_pg(&Type::INT4, Some(&[0, 0, 1, 2])).unwrap(), 258);
        assert!(i64::from_pg(&Type::INT4, Some(&[0, 0, 1, 2])).is_err());
        assert!(bool::from_pg(&Type::BOOL, Some(&[1])).unwrap());
        assert_eq!(
            String::from_pg(&Type::VARCHAR, Some(b"caf\xc3\xa9")).unwrap(),
            "café"
        );
        assert!(String::from_pg(&Type::TEXT, Some(b"\xff")).is_err());
        assert!(String::from_pg(&Type::BYTEA, Some(b"x")).is_err());
    }

    fn column(name: &str, ty: Type) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }

    /// A model reads its fields by position, and each position must carry the field's name.
    #[test]
    fn a_model_reads_its_columns_in_order_by_name() {
        let (tenant, id) = (Uuid::now_v7(), Uuid::now_v7());
        let at = 789_004_800_123_456i64.to_be_bytes(); // 25 years (9132 days) after 2000
        let columns = [
            column("tenant_id", Type::UUID),
            column("id", Type::UUID),
            column("name", Type::TEXT),
            column("created_at", Type::TIMESTAMPTZ),
        ];
        let values = [
            Some(&tenant.as_bytes()[..]),
            Some(&id.as_bytes()[..]),
            Some(&b"sales"[..]),
            Some(&at[..]),
        ];
        let mut reader = FieldReader {
            columns: &columns,
            values: &values,
            at: 0,
            check_names: true,
        };
        let skill = skills::Model::from_pg_row(&mut reader).unwrap();
        assert_eq!(
            (skill.tenant_id, skill.id, skill.name.as_str()),
            (tenant, id, "sales")
        );
        assert_eq!(
            skill.created_at.to_rfc3339(),
            "2025-01-01T00:00:00.123456+00:00"
        );

        let mut swapped = columns.clone();
        swapped.swap(0, 1);
        let mut reader = FieldReader {
            columns: &swapped,
            values: &values,
            at: 0,
            check_names: true,
        };
        let err = skills::Model::from_pg_row(&mut reader)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column id: the model expects tenant_id"),
            "{err}"
        );
        let mut reader = FieldReader {
            columns: &columns[..3],
            values: &values[..3],
            at: 0,
            check_names: true,
        };
        let err = skills::Model::from_pg_row(&mut reader)
            .unwrap_err()
            .to_string();
        assert!(err.contains("created_at: missing"), "{err}");
    }
}
