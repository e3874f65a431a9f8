//! Many requests in flight on one PostgreSQL connection (protocol pipelining).
//!
//! Why this module exists: with one request per connection at a time, every tenant read made
//! its server process go to sleep after answering and wake for the next request: a receive
//! that finds nothing, an `epoll_wait`, a wake-up and a second receive, per read. At the api's
//! rates that round-trip machinery cost PostgreSQL more than the reads themselves (in
//! `scripts/bench api` a 21-row page cost the server about as much as pgbench's one-row
//! `SELECT`). Here requests from concurrent HTTP requests queue on a few connections: the
//! writer sends whatever is queued in one write, the server reads several requests per
//! receive and stays busy while there are any, and the reader hands each reply to its caller.
//!
//! Each request is complete in itself (a scoped read ends with its own Sync, so it is its own
//! implicit transaction; see `pg_wire`), and PostgreSQL answers requests in the order they
//! were sent, so replies are matched to callers by position: a FIFO of reply state machines
//! (the sans-IO [`Reply`]s of `pg_wire`). A caller that goes away (its HTTP request was
//! cancelled) leaves its request to be answered and the answer dropped, so the connection
//! never holds half a request. Any IO or protocol error, or a reply that leaves a transaction
//! open, closes the connection: every request in flight gets the error and the pool replaces
//! the connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Result;
use crate::pg_wire::{
    PipelineReply, PrepareReply, Prepared, Row, Step, WireConn, is_asynchronous, recv_message,
    wire_err,
};

/// Requests waiting to be written, per connection; senders wait beyond it.
const MAX_QUEUED: usize = 1024;
/// Bytes of requests gathered into one write.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// When a connection last made progress: it answered a request, or it took one while idle.
/// A connection with requests in flight and no progress for a while is held up (a slow or
/// blocked statement at the head of its queue); the pool sends new reads elsewhere.
pub(crate) struct Progress {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    at_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    fn mark(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last progress.
    pub fn since(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.at_ms.load(Ordering::Relaxed)))
    }
}

/// What a request expects back.
pub(crate) enum Reply {
    Read(PipelineReply),
    Prepare(PrepareReply),
}

/// A request's outcome.
pub(crate) enum Answer {
    Rows(Vec<Row>),
    Prepared(Prepared),
}

impl Reply {
    fn on_message(&mut self, msg: Message) -> Result<Step<Answer>> {
        Ok(match self {
            Reply::Read(r) => match r.on_message(msg)? {
                Step::More => Step::More,
                Step::Done(rows) => Step::Done(rows.map(Answer::Rows)),
            },
            Reply::Prepare(r) => match r.on_message(msg)? {
                Step::More => Step::More,
                Step::Done(p) => Step::Done(p.map(Answer::Prepared)),
            },
        })
    }
}

struct Pending {
    reply: Reply,
    answer: oneshot::Sender<Result<Answer>>,
}

struct Job {
    request: BytesMut,
    pending: Pending,
}

/// Requests written and not yet answered, oldest first; `closed` once the connection failed.
#[derive(Default)]
struct InFlight {
    pending: VecDeque<Pending>,
    closed: Option<String>,
}

fn lock(in_flight: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    // A panic while holding this lock leaves nothing half-changed that matters here.
    in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Fails every request in flight with `why` and refuses new ones.
fn close(in_flight: &Mutex<InFlight>, why: String) {
    let pending = {
        let mut f = lock(in_flight);
        f.closed.get_or_insert(why.clone());
        std::mem::take(&mut f.pending)
    };
    for p in pending {
        let _ = p.answer.send(Err(wire_err(&why)));
    }
}

/// One connection carrying many requests at once; its writer and reader are tasks of their own.
pub(crate) struct PipelinedConn {
    jobs: mpsc::Sender<Job>,
    in_flight: Arc<Mutex<InFlight>>,
    tasks: [JoinHandle<()>; 2],
}

impl PipelinedConn {
    /// Takes over a connection that has finished its start-up (and any setup requests), and
    /// records its progress in `progress`.
    pub fn start(wire: WireConn, progress: Arc<Progress>) -> Self {
        progress.mark();
        let (stream, read_buf) = wire.into_parts();
        let (input, output) = tokio::io::split(stream);
        let in_flight = Arc::new(Mutex::new(InFlight::default()));
        let (jobs, queued) = mpsc::channel(MAX_QUEUED);
        let writer = tokio::spawn(write_loop(
            queued,
            output,
            in_flight.clone(),
            progress.clone(),
        ));
        let reader = tokio::spawn(read_loop(input, read_buf, in_flight.clone(), progress));
        Self {
            jobs,
            in_flight,
            tasks: [writer, reader],
        }
    }

    /// Whether the connection failed (it answers nothing more).
    pub fn is_closed(&self) -> bool {
        self.jobs.is_closed() || lock(&self.in_flight).closed.is_some()
    }

    /// Sends `request` (whole protocol messages ending in a Sync) and waits for its reply.
    async fn request(&self, request: BytesMut, reply: Reply) -> Result<Answer> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            request,
            pending: Pending { reply, answer },
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| wire_err(&"the connection is closed"))?;
        answered
            .await
            .map_err(|_| wire_err(&"the connection closed before answering"))?
    }

    /// The rows of a read request.
    pub async fn rows(&self, request: BytesMut, statements: u8) -> Result<Vec<Row>> {
        match self
            .request(request, Reply::Read(PipelineReply::new(statements)))
            .await?
        {
            Answer::Rows(rows) => Ok(rows),
            Answer::Prepared(_) => Err(wire_err(&"a prepare answered a read")),
        }
    }

    /// The statement a prepare request made.
    pub async fn prepared(&self, request: BytesMut, name: &str) -> Result<Prepared> {
        match self
            .request(request, Reply::Prepare(PrepareReply::new(name)))
            .await?
        {
            Answer::Prepared(p) => Ok(p),
            Answer::Rows(_) => Err(wire_err(&"a read answered a prepare")),
        }
    }
}

impl Drop for PipelinedConn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Writes queued requests, as many as are waiting in one write, each registered in flight
/// before its bytes leave so the reader finds it when the reply comes.
async fn write_loop(
    mut queued: mpsc::Receiver<Job>,
    mut output: impl AsyncWrite + Unpin,
    in_flight: Arc<Mutex<InFlight>>,
    progress: Arc<Progress>,
) {
    let mut batch = BytesMut::with_capacity(8 * 1024);
    while let Some(first) = queued.recv().await {
        {
            let mut f = lock(&in_flight);
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match &f.closed {
                    Some(why) => {
                        let _ = job.pending.answer.send(Err(wire_err(why)));
                    }
                    None => {
                        if f.pending.is_empty() {
                            progress.mark();
                        }
                        batch.extend_from_slice(&job.request);
                        f.pending.push_back(job.pending);
                    }
                }
                if batch.len() < MAX_BATCH_BYTES {
                    next = queued.try_recv().ok();
                }
            }
            if f.closed.is_some() {
                return;
            }
        }
        if let Err(e) = output.write_all(&batch).await {
            close(&in_flight, format!("postgres read: writing: {e}"));
            return;
        }
        batch.clear();
    }
}

/// Reads replies and hands each to the oldest request in flight.
async fn read_loop(
    mut input: impl AsyncRead + Unpin,
    mut buf: BytesMut,
    in_flight: Arc<Mutex<InFlight>>,
    progress: Arc<Progress>,
) {
    let why = loop {
        let msg = match recv_message(&mut input, &mut buf).await {
            Ok(msg) => msg,
            Err(e) => break e.to_string(),
        };
        let mut f = lock(&in_flight);
        let Some(front) = f.pending.front_mut() else {
            if is_asynchronous(&msg) {
                continue;
            }
            break "postgres read: a reply to no request".to_owned();
        };
        match front.reply.on_message(msg) {
            Ok(Step::More) => {}
            Ok(Step::Done(answer)) => {
                progress.mark();
                if let Some(done) = f.pending.pop_front() {
                    let _ = done.answer.send(answer);
                }
            }
            Err(e) => {
                let why = e.to_string();
                if let Some(failed) = f.pending.pop_front() {
                    let _ = failed.answer.send(Err(e));
                }
                break why;
            }
        }
    };
    close(&in_flight, why);
}
