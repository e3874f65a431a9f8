//! A minimal PostgreSQL frontend (protocol 3.0) for the tenant read pool: connect and
//! authenticate, prepare a statement, and run one scoped read as a single pipeline.
//!
//! Why this module exists: a tenant read must set `app.tenant_id` transaction-locally and read
//! in the same transaction. tokio-postgres ends every statement with its own Sync, so that took
//! four statements (`BEGIN`, the setting, the read, `COMMIT`), four ReadyForQuery messages and
//! four flushes from the server per read, plus a hop through tokio-postgres's connection task
//! for each. Here a read is sent as one write,
//!
//! `Bind(scope, [tenant]) Execute Bind(read, params) Execute Sync`
//!
//! and PostgreSQL runs everything before a Sync as one implicit transaction (protocol docs,
//! "Pipelining"): the setting made by `set_config(.., true)` holds for the read and ends at the
//! Sync with that transaction, commit or rollback; an error skips the rest of the pipeline.
//! The server answers with one ReadyForQuery, whose status must be idle, else the connection is
//! closed and replaced.
//!
//! The protocol logic is sans-IO ([`encode_scoped_read`], [`PipelineReply`], [`PrepareReply`],
//! [`SimpleReply`]): messages in, outcome out. [`WireConn`] is the IO edge while a connection
//! starts (authentication, `SET ROLE`, the scope statement: one request at a time); then
//! `pg_pipeline` carries it, many requests at once. No TLS: the read pool connects as
//! tokio-postgres with `NoTls` did before it, so `sslmode=require` is refused.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{self, sasl};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::{DbError, Result};

/// Binary, for every parameter and result column.
const BINARY: i16 = 1;

/// A column of a prepared statement's result.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub ty: Type,
}

/// A statement prepared on one connection.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The server-side name (`""`: the unnamed statement, valid until the next Parse of it).
    pub name: String,
    pub params: Vec<Type>,
    pub columns: std::sync::Arc<[Column]>,
}

/// One result row, still in the wire's binary format.
pub(crate) struct Row(DataRowBody);

impl Row {
    /// Each column's bytes (`None`: SQL NULL), in column order.
    pub fn values(&self) -> Result<Vec<Option<&[u8]>>> {
        let mut values = Vec::new();
        self.values_into(&mut values)?;
        Ok(values)
    }

    /// Like [`Row::values`], into `out` (cleared first), so one buffer serves every row.
    pub fn values_into<'r>(&'r self, out: &mut Vec<Option<&'r [u8]>>) -> Result<()> {
        out.clear();
        let buf = self.0.buffer();
        let mut ranges = self.0.ranges();
        while let Some(r) = ranges.next().map_err(|e| wire_err(&e))? {
            out.push(r.map(|r| &buf[r]));
        }
        Ok(())
    }
}

pub(crate) fn wire_err(e: &dyn std::fmt::Display) -> DbError {
    DbError::Db(sea_orm::DbErr::Custom(format!("postgres read: {e}")))
}

/// The server's error, as one line: `ERROR 42P01: relation "x" does not exist`.
fn server_error(fields: ErrorFields<'_>) -> DbError {
    let (mut severity, mut code, mut message) = (String::new(), String::new(), String::new());
    let mut fields = fields;
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'S' => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    wire_err(&format!("{severity} {code}: {message}"))
}

fn unexpected(what: &str, msg: &Message) -> DbError {
    let name = match msg {
        Message::BindComplete => "BindComplete",
        Message::CommandComplete(_) => "CommandComplete",
        Message::DataRow(_) => "DataRow",
        Message::ParseComplete => "ParseComplete",
        Message::RowDescription(_) => "RowDescription",
        Message::NoData => "NoData",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        _ => "another message",
    };
    wire_err(&format!("unexpected {name} in {what}"))
}

/// Messages the server may send at any time; they change nothing here.
pub(crate) fn is_asynchronous(msg: &Message) -> bool {
    matches!(
        msg,
        Message::NoticeResponse(_) | Message::ParameterStatus(_) | Message::NotificationResponse(_)
    )
}

/// How a reply goes on after one message.
pub(crate) enum Step<T> {
    More,
    /// The server is ready for the next request; the connection is usable.
    Done(Result<T>),
}

/// The end of every reply: a ReadyForQuery that must say idle (no transaction left open).
fn ready<T>(status: u8, outcome: Result<T>) -> Result<Step<T>> {
    if status == b'I' {
        Ok(Step::Done(outcome))
    } else {
        Err(wire_err(&format!(
            "connection not idle after a request (status {:?})",
            char::from(status)
        )))
    }
}

/// Writes one scoped read: the scope statement (its one parameter: the tenant) and the read,
/// both executed, then one Sync.
pub(crate) fn encode_scoped_read(
    scope: &Prepared,
    tenant: &str,
    read: &Prepared,
    params: &[&(dyn ToSql + Sync)],
    buf: &mut BytesMut,
) -> Result<()> {
    let tenant: [&(dyn ToSql + Sync); 1] = [&tenant];
    bind(scope, &tenant, buf)?;
    frontend::execute("", 0, buf).map_err(|e| wire_err(&e))?;
    bind(read, params, buf)?;
    frontend::execute("", 0, buf).map_err(|e| wire_err(&e))?;
    frontend::sync(buf);
    Ok(())
}

/// Writes a read without a scope: what a statement on the connection sees outside a scoped
/// read (for tests of the fail-closed policy).
pub(crate) fn encode_unscoped_read(read: &Prepared, buf: &mut BytesMut) -> Result<()> {
    bind(read, &[], buf)?;
    frontend::execute("", 0, buf).map_err(|e| wire_err(&e))?;
    frontend::sync(buf);
    Ok(())
}

fn bind(statement: &Prepared, params: &[&(dyn ToSql + Sync)], buf: &mut BytesMut) -> Result<()> {
    if params.len() != statement.params.len() {
        return Err(wire_err(&format!(
            "{} parameters for a statement of {}",
            params.len(),
            statement.params.len()
        )));
    }
    let mut types = statement.params.iter();
    frontend::bind(
        "",
        &statement.name,
        Some(BINARY),
        params.iter(),
        |param, out| {
            let null = match types.next() {
                Some(ty) => param.to_sql_checked(ty, out)?,
                None => IsNull::Yes,
            };
            Ok(match null {
                IsNull::Yes => postgres_protocol::IsNull::Yes,
                IsNull::No => postgres_protocol::IsNull::No,
            })
        },
        Some(BINARY),
        buf,
    )
    .map_err(|e| match e {
        frontend::BindError::Conversion(e) => wire_err(&format!("parameter: {e}")),
        frontend::BindError::Serialization(e) => wire_err(&e),
    })
}

/// The answer to a pipeline of `statements` bound and executed statements and one Sync (a
/// scoped read: the scope, then the read): each one's BindComplete, rows and CommandComplete,
/// then ReadyForQuery. Only the last statement's rows are kept (the scope's one row is not).
/// An error anywhere ends the pipeline: the server skips to the Sync and rolls the implicit
/// transaction back.
pub(crate) struct PipelineReply {
    statements: u8,
    /// CommandCompletes so far.
    completed: u8,
    rows: Vec<Row>,
    error: Option<DbError>,
}

impl PipelineReply {
    pub fn new(statements: u8) -> Self {
        Self {
            statements,
            completed: 0,
            rows: Vec::new(),
            error: None,
        }
    }

    pub fn on_message(&mut self, msg: Message) -> Result<Step<Vec<Row>>> {
        let last = self.statements.saturating_sub(1);
        match msg {
            Message::ReadyForQuery(body) => {
                let outcome = match self.error.take() {
                    Some(e) => Err(e),
                    None if self.completed == self.statements => Ok(std::mem::take(&mut self.rows)),
                    None => Err(wire_err(&"reply ended before the read completed")),
                };
                return ready(body.status(), outcome);
            }
            Message::ErrorResponse(body) => self.error = Some(server_error(body.fields())),
            _ if self.error.is_some() => {}
            Message::BindComplete => {}
            Message::DataRow(row) if self.completed == last => self.rows.push(Row(row)),
            Message::DataRow(_) if self.completed < last => {}
            Message::CommandComplete(_) if self.completed < self.statements => self.completed += 1,
            ref m if is_asynchronous(m) => {}
            other => return Err(unexpected("a read", &other)),
        }
        Ok(Step::More)
    }
}

/// Writes Parse and Describe of `sql` as `name`, then Sync.
pub(crate) fn encode_prepare(name: &str, sql: &str, buf: &mut BytesMut) -> Result<()> {
    frontend::parse(name, sql, std::iter::empty(), buf).map_err(|e| wire_err(&e))?;
    frontend::describe(b'S', name, buf).map_err(|e| wire_err(&e))?;
    frontend::sync(buf);
    Ok(())
}

/// The answer to [`encode_prepare`]: ParseComplete, the parameter types, the result columns
/// (or NoData), ReadyForQuery.
pub(crate) struct PrepareReply {
    name: String,
    params: Option<Vec<Type>>,
    columns: Option<Vec<Column>>,
    error: Option<DbError>,
}

impl PrepareReply {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            params: None,
            columns: None,
            error: None,
        }
    }

    pub fn on_message(&mut self, msg: Message) -> Result<Step<Prepared>> {
        match msg {
            Message::ReadyForQuery(body) => {
                let outcome = match (self.error.take(), self.params.take(), self.columns.take()) {
                    (Some(e), _, _) => Err(e),
                    (None, Some(params), Some(columns)) => Ok(Prepared {
                        name: std::mem::take(&mut self.name),
                        params,
                        columns: columns.into(),
                    }),
                    _ => Err(wire_err(&"prepare reply ended early")),
                };
                return ready(body.status(), outcome);
            }
            Message::ErrorResponse(body) => self.error = Some(server_error(body.fields())),
            _ if self.error.is_some() => {}
            Message::ParseComplete => {}
            Message::ParameterDescription(body) => {
                let params = body
                    .parameters()
                    .map(|oid| {
                        Type::from_oid(oid).ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("parameter type {oid}"),
                            )
                        })
                    })
                    .collect()
                    .map_err(|e| wire_err(&format!("unsupported {e}")))?;
                self.params = Some(params);
            }
            Message::RowDescription(body) => {
                let columns = body
                    .fields()
                    .map(|f| {
                        let ty = Type::from_oid(f.type_oid()).ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("type {} of column {}", f.type_oid(), f.name()),
                            )
                        })?;
                        Ok(Column {
                            name: f.name().to_owned(),
                            ty,
                        })
                    })
                    .collect()
                    .map_err(|e| wire_err(&format!("unsupported {e}")))?;
                self.columns = Some(columns);
            }
            Message::NoData => self.columns = Some(Vec::new()),
            ref m if is_asynchronous(m) => {}
            other => return Err(unexpected("a prepare", &other)),
        }
        Ok(Step::More)
    }
}

/// The answer to a simple query that returns no rows we need (`SET ROLE ...`).
#[derive(Default)]
pub(crate) struct SimpleReply {
    error: Option<DbError>,
}

impl SimpleReply {
    pub fn on_message(&mut self, msg: Message) -> Result<Step<()>> {
        match msg {
            Message::ReadyForQuery(body) => {
                let outcome = self.error.take().map_or(Ok(()), Err);
                return ready(body.status(), outcome);
            }
            Message::ErrorResponse(body) => self.error = Some(server_error(body.fields())),
            Message::CommandComplete(_)
            | Message::EmptyQueryResponse
            | Message::RowDescription(_)
            | Message::DataRow(_) => {}
            ref m if is_asynchronous(m) => {}
            other => return Err(unexpected("a simple query", &other)),
        }
        Ok(Step::More)
    }
}

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for S {}

/// One connection while it starts: a socket and its buffers. A request is written whole, then
/// its reply read message by message; any error fails the start.
pub(crate) struct WireConn {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl WireConn {
    /// Connects to the first host of `config` that answers, then authenticates.
    pub async fn connect(config: &tokio_postgres::Config, timeout: Duration) -> Result<Self> {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(wire_err(&"sslmode=require: the read pool has no TLS"));
        }
        let mut last_error = wire_err(&"the database URL names no host");
        for (i, host) in config.get_hosts().iter().enumerate() {
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            let attempt = tokio::time::timeout(timeout, async {
                let stream: Box<dyn Stream> = match host {
                    Host::Tcp(name) => {
                        let s = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                        s.set_nodelay(true)?;
                        Box::new(s)
                    }
                    #[cfg(unix)]
                    Host::Unix(dir) => Box::new(
                        tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                            .await?,
                    ),
                };
                io::Result::Ok(stream)
            })
            .await;
            match attempt {
                Ok(Ok(stream)) => {
                    let mut conn = Self {
                        stream,
                        read_buf: BytesMut::with_capacity(16 * 1024),
                        write_buf: BytesMut::with_capacity(1024),
                    };
                    tokio::time::timeout(timeout, conn.startup(config))
                        .await
                        .map_err(|_| wire_err(&"startup timed out"))??;
                    return Ok(conn);
                }
                Ok(Err(e)) => last_error = wire_err(&format!("connecting to {host:?}: {e}")),
                Err(_) => last_error = wire_err(&format!("connecting to {host:?}: timed out")),
            }
        }
        Err(last_error)
    }

    async fn startup(&mut self, config: &tokio_postgres::Config) -> Result<()> {
        let user = match config.get_user() {
            Some(u) => u.to_owned(),
            None => std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .map_err(|_| wire_err(&"the database URL names no user"))?,
        };
        let mut params = vec![("client_encoding", "UTF8"), ("user", user.as_str())];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            params.push(("application_name", name));
        }
        frontend::startup_message(params, &mut self.write_buf).map_err(|e| wire_err(&e))?;
        self.flush().await?;
        let password = || {
            config
                .get_password()
                .ok_or_else(|| wire_err(&"the server asks for a password the URL does not have"))
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.recv().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.write_buf)
                        .map_err(|e| wire_err(&e))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = authentication::md5_hash(user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| wire_err(&e))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut offers_scram = false;
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms.next().map_err(|e| wire_err(&e))? {
                        offers_scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !offers_scram {
                        return Err(wire_err(&"the server offers no SASL mechanism we speak"));
                    }
                    let s =
                        sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| wire_err(&e))?;
                    self.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| wire_err(&"SASL continue before SASL start"))?;
                    s.update(body.data()).map_err(|e| wire_err(&e))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)
                        .map_err(|e| wire_err(&e))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| wire_err(&"SASL final before SASL start"))?;
                    s.finish(body.data()).map_err(|e| wire_err(&e))?;
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                ref m if is_asynchronous(m) => {}
                _ => return Err(wire_err(&"unsupported authentication request")),
            }
        }
    }

    /// Runs a simple query whose result is not needed (`SET ROLE ...`).
    pub async fn simple(&mut self, sql: &str) -> Result<()> {
        let encoded = frontend::query(sql, &mut self.write_buf).map_err(|e| wire_err(&e));
        self.encoded(encoded)?;
        let mut reply = SimpleReply::default();
        self.exchange(|msg| reply.on_message(msg)).await
    }

    /// Prepares `sql` as statement `name` (`""`: the unnamed statement).
    pub async fn prepare(&mut self, name: &str, sql: &str) -> Result<Prepared> {
        let encoded = encode_prepare(name, sql, &mut self.write_buf);
        self.encoded(encoded)?;
        let mut reply = PrepareReply::new(name);
        self.exchange(|msg| reply.on_message(msg)).await
    }

    /// The socket and whatever the server sent beyond the last reply read (for
    /// [`crate::pg_pipeline::PipelinedConn`], which carries the connection from here).
    pub fn into_parts(self) -> (Box<dyn Stream>, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// A request that failed to encode (a parameter of the wrong type) is not sent: nothing of
    /// it stays in the write buffer.
    fn encoded(&mut self, encoded: Result<()>) -> Result<()> {
        if encoded.is_err() {
            self.write_buf.clear();
        }
        encoded
    }

    /// Sends the request in the write buffer and feeds the reply to `on_message` until it is
    /// done (the connection's setup requests; an error fails the setup and the connection).
    async fn exchange<T>(
        &mut self,
        mut on_message: impl FnMut(Message) -> Result<Step<T>>,
    ) -> Result<T> {
        self.flush().await?;
        loop {
            let msg = self.recv().await?;
            if let Step::Done(outcome) = on_message(msg)? {
                return outcome;
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let written = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        written.map_err(|e| wire_err(&e))
    }

    async fn recv(&mut self) -> Result<Message> {
        recv_message(&mut self.stream, &mut self.read_buf).await
    }
}

/// The next whole message from `stream`, buffered in `buf` (which keeps what follows it).
pub(crate) async fn recv_message(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<Message> {
    loop {
        check_message_length(buf)?;
        if let Some(msg) = Message::parse(buf).map_err(|e| wire_err(&e))? {
            return Ok(msg);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = stream.read_buf(buf).await.map_err(|e| wire_err(&e))?;
        if n == 0 {
            return Err(wire_err(&"the server closed the connection"));
        }
    }
}

/// Largest backend message the read pool buffers: a tenant read's rows are bounded by its
/// query's LIMIT, so a longer message means a broken or hostile server, not a result.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Refuses a message whose header (tag, then a length that counts itself) announces more than
/// [`MAX_MESSAGE_BYTES`], before its body is buffered.
fn check_message_length(buf: &[u8]) -> Result<()> {
    let Some(len) = buf.get(1..5) else {
        return Ok(());
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(wire_err(&format!(
            "a server message of {len} bytes (limit {MAX_MESSAGE_BYTES})"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// A backend message as the server would send it.
    fn message(tag: u8, body: &[u8]) -> Message {
        let mut buf = BytesMut::new();
        buf.put_u8(tag);
        buf.put_i32(i32::try_from(body.len()).unwrap() + 4);
        buf.put_slice(body);
        Message::parse(&mut buf).unwrap().unwrap()
    }

    fn data_row(values: &[Option<&[u8]>]) -> Message {
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(values.len()).unwrap().to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        message(b'D', &body)
    }

    /// The scope's successful part of a pipeline reply: BindComplete, its row, CommandComplete.
    fn scope_done() -> [Message; 3] {
        [
            message(b'2', &[]),
            data_row(&[Some(b"tenant")]),
            complete("SELECT 1"),
        ]
    }

    fn complete(tag: &str) -> Message {
        message(b'C', format!("{tag}\0").as_bytes())
    }

    fn error(code: &str, text: &str) -> Message {
        message(b'E', format!("SERROR\0C{code}\0M{text}\0\0").as_bytes())
    }

    fn ready(status: u8) -> Message {
        message(b'Z', &[status])
    }

    fn feed(reply: &mut PipelineReply, msgs: Vec<Message>) -> Result<Vec<Row>> {
        let n = msgs.len();
        for (i, m) in msgs.into_iter().enumerate() {
            match reply.on_message(m)? {
                Step::More => assert!(i + 1 < n, "reply not done after its last message"),
                Step::Done(outcome) => {
                    assert_eq!(i + 1, n, "reply done before its last message");
                    return outcome;
                }
            }
        }
        unreachable!("no messages")
    }

    #[test]
    fn an_oversized_message_is_refused_before_its_body_arrives() {
        assert!(
            check_message_length(b"D\x00").is_ok(),
            "header not complete yet"
        );
        assert!(check_message_length(b"D\x00\x00\x10\x00rest").is_ok());
        let huge = [b'D', 0x7f, 0xff, 0xff, 0xff];
        let e = check_message_length(&huge).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn a_scoped_read_keeps_the_reads_rows_not_the_scopes() {
        let rows = feed(
            &mut PipelineReply::new(2),
            scope_done()
                .into_iter()
                .chain([
                    message(b'2', &[]),
                    data_row(&[Some(b"a"), None]),
                    data_row(&[Some(b"b"), Some(b"")]),
                    complete("SELECT 2"),
                    ready(b'I'),
                ])
                .collect(),
        )
        .unwrap();
        let values: Vec<_> = rows.iter().map(|r| r.values().unwrap()).collect();
        assert_eq!(
            values,
            vec![
                vec![Some(&b"a"[..]), None],
                vec![Some(&b"b"[..]), Some(&b""[..])]
            ]
        );
    }

    #[test]
    fn an_error_anywhere_fails_the_read_and_the_connection_stays_usable() {
        // The scope failed: the server skips the read and answers ReadyForQuery after Sync.
        let outcome = feed(
            &mut PipelineReply::new(2),
            vec![error("22023", "bad tenant"), ready(b'I')],
        );
        let Err(e) = outcome else {
            panic!("a failed scope must fail the read")
        };
        assert!(e.to_string().contains("22023"), "{e}");
        // The read failed after the scope completed.
        let outcome = feed(
            &mut PipelineReply::new(2),
            scope_done()
                .into_iter()
                .chain([
                    message(b'2', &[]),
                    data_row(&[Some(b"a")]),
                    error("57014", "canceling statement"),
                    ready(b'I'),
                ])
                .collect(),
        );
        assert!(outcome.is_err());
    }

    #[test]
    fn a_reply_that_leaves_a_transaction_open_is_a_broken_connection() {
        for status in [b'T', b'E'] {
            let mut reply = PipelineReply::new(2);
            for m in [
                message(b'2', &[]),
                complete("SELECT 1"),
                message(b'2', &[]),
                complete("SELECT 0"),
            ] {
                assert!(matches!(reply.on_message(m), Ok(Step::More)));
            }
            assert!(
                reply.on_message(ready(status)).is_err(),
                "status {status} accepted"
            );
        }
    }

    #[test]
    fn a_reply_missing_the_read_is_an_error_not_an_empty_result() {
        let outcome = feed(
            &mut PipelineReply::new(2),
            vec![message(b'2', &[]), complete("SELECT 1"), ready(b'I')],
        );
        assert!(outcome.is_err());
        let mut reply = PipelineReply::new(2);
        assert!(
            reply.on_message(message(b'1', &[])).is_err(),
            "ParseComplete"
        );
    }

    #[test]
    fn a_scoped_read_is_one_pipeline_with_one_sync() {
        let scope = Prepared {
            name: "scope".into(),
            params: vec![Type::TEXT],
            columns: Vec::new().into(),
        };
        let read = Prepared {
            name: "r1".into(),
            params: vec![Type::UUID, Type::INT8],
            columns: Vec::new().into(),
        };
        let id = uuid::Uuid::nil();
        let mut buf = BytesMut::new();
        encode_scoped_read(&scope, "t1", &read, &[&id, &21i64], &mut buf).unwrap();
        // Walk the frames: B E B E S, and nothing else.
        let mut tags = Vec::new();
        let mut rest = &buf[..];
        while !rest.is_empty() {
            tags.push(rest[0]);
            let len = usize::try_from(i32::from_be_bytes(rest[1..5].try_into().unwrap())).unwrap();
            rest = &rest[1 + len..];
        }
        assert_eq!(tags, b"BEBES");
        // A parameter count that does not fit the statement is refused before anything is sent.
        let mut buf = BytesMut::new();
        assert!(encode_scoped_read(&scope, "t1", &read, &[&id], &mut buf).is_err());
    }

    #[test]
    fn prepare_reply_gives_parameter_and_column_types() {
        let mut reply = PrepareReply::new("r1");
        let mut params = Vec::new();
        params.extend_from_slice(&1u16.to_be_bytes());
        params.extend_from_slice(&Type::UUID.oid().to_be_bytes());
        let mut columns = Vec::new();
        columns.extend_from_slice(&1u16.to_be_bytes());
        columns.extend_from_slice(b"id\0");
        columns.extend_from_slice(&0u32.to_be_bytes()); // table
        columns.extend_from_slice(&0i16.to_be_bytes()); // column
        columns.extend_from_slice(&Type::INT8.oid().to_be_bytes());
        columns.extend_from_slice(&8i16.to_be_bytes());
        columns.extend_from_slice(&(-1i32).to_be_bytes());
        columns.extend_from_slice(&0i16.to_be_bytes());
        for m in [
            message(b'1', &[]),
            message(b't', &params),
            message(b'T', &columns),
        ] {
            assert!(matches!(reply.on_message(m), Ok(Step::More)));
        }
        let Ok(Step::Done(Ok(p))) = reply.on_message(ready(b'I')) else {
            panic!("prepare failed")
        };
        assert_eq!(p.name, "r1");
        assert_eq!(p.params, vec![Type::UUID]);
        assert_eq!(p.columns.len(), 1);
        assert_eq!(
            (p.columns[0].name.as_str(), &p.columns[0].ty),
            ("id", &Type::INT8)
        );
    }
}
