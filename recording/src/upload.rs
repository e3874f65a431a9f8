//! The uploader: finished spool files go to the object store, with retries, and are deleted
//! only after the store confirmed them.
//!
//! The spool directory is the queue, so nothing depends on memory surviving: a finished
//! recording is `<spool>/<tenant>/<call>.wav` plus a sidecar `<call>.json` ([`Pending`]) written
//! atomically once the WAV is complete. [`Uploader::resume`] (at start, before calls are taken)
//! queues every sidecar and turns a WAV without one (the process died mid-call) into a finished
//! recording of everything up to its last checkpoint.
//!
//! Each upload retries with capped exponential backoff (with jitter) while the store is down.
//! Success: the store confirmed size and checksum, then the [`UploadSink`] recorded it (row
//! `stored`, `recording.completed`), then the spool files go. Still failing after `give_up`
//! (or a permanent error such as a conflicting object): the sink reports it (row `failed`,
//! `recording.failed`) and the files stay for the next start to retry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::RecordingError;
use crate::store::{FileDigest, ObjectStore, RecordingsConfig};

/// A finished recording waiting for its upload (the sidecar's contents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub tenant: String,
    pub call_id: String,
    /// The object key it goes to.
    pub key: String,
    pub duration_ms: u64,
    pub size: u64,
    /// Hex SHA-256 of the WAV.
    pub sha256: String,
    /// Wall-clock ms when the recording finished (upload lag is measured from here).
    pub finished_at_ms: u64,
    /// Where the recording was paused (silence in the file).
    #[serde(default)]
    pub pauses: Vec<crate::Gap>,
}

/// The upload's state, as the recordings row shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Spooled,
    Uploading,
    Stored,
    Failed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Spooled => "spooled",
            UploadState::Uploading => "uploading",
            UploadState::Stored => "stored",
            UploadState::Failed => "failed",
        }
    }
}

/// Where the uploader reports progress: the gateway writes the row and the tenant's events.
/// An error makes the uploader try again later (the spool file is kept meanwhile).
#[async_trait::async_trait]
pub trait UploadSink: Send + Sync {
    /// The upload's state changed; `reason` says why it failed.
    async fn update(
        &self,
        pending: &Pending,
        state: UploadState,
        reason: Option<&str>,
    ) -> Result<(), String>;
}

/// The retry schedule.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry `attempt` (0-based): `initial * 2^attempt` capped at `max`, then
    /// a random point in its upper half so many uploads failing together spread out.
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        base.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Paths of a call's spool files.
pub fn spool_paths(spool: &Path, tenant: &str, call_id: &str) -> (PathBuf, PathBuf) {
    let dir = spool.join(tenant);
    (
        dir.join(format!("{call_id}.wav")),
        dir.join(format!("{call_id}.json")),
    )
}

/// Writes the sidecar of a finished spool file (atomically: temp file then rename).
pub async fn write_sidecar(path: &Path, pending: &Pending) -> Result<(), RecordingError> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(pending).map_err(|e| RecordingError::Config(e.to_string()))?;
    tokio::fs::write(&tmp, body).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// The running uploader; cheap to clone.
#[derive(Clone)]
pub struct Uploader {
    tx: mpsc::UnboundedSender<PathBuf>,
    spool: PathBuf,
    prefix: String,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("spool", &self.spool)
            .finish()
    }
}

struct Worker {
    store: Arc<dyn ObjectStore>,
    sink: Arc<dyn UploadSink>,
    backoff: Backoff,
    give_up: Duration,
}

impl Uploader {
    /// Starts the upload task (it runs until the process ends).
    pub fn start(
        cfg: &RecordingsConfig,
        spool: PathBuf,
        store: Arc<dyn ObjectStore>,
        sink: Arc<dyn UploadSink>,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let worker = Arc::new(Worker {
            store,
            sink,
            backoff: Backoff {
                initial: Duration::from_millis(cfg.retry_initial_ms),
                max: Duration::from_millis(cfg.retry_max_ms),
            },
            give_up: Duration::from_secs(cfg.give_up_s),
        });
        let slots = Arc::new(Semaphore::new(cfg.upload_concurrency));
        tokio::spawn(async move {
            while let Some(sidecar) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = worker.clone();
                tokio::spawn(async move {
                    worker.run(sidecar).await;
                    drop(slot);
                });
            }
        });
        Self {
            tx,
            spool,
            prefix: cfg.prefix.clone(),
        }
    }

    /// The spool directory.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// The object key of a call's recording.
    pub fn key(&self, tenant: &str, call_id: &str) -> String {
        format!("{}{tenant}/{call_id}.wav", self.prefix)
    }

    /// Queues a finished recording whose sidecar is written.
    pub fn submit(&self, sidecar: PathBuf) {
        if self.tx.send(sidecar).is_err() {
            tracing::error!("recording uploader stopped; the spool keeps the file");
        }
    }

    /// Finishes a spooled WAV: hashes it, writes its sidecar, reports it `spooled`, queues it.
    pub async fn finished(
        &self,
        sink: &dyn UploadSink,
        tenant: &str,
        call_id: &str,
        frames: u64,
        pauses: Vec<crate::Gap>,
    ) -> Result<(), RecordingError> {
        let (wav, sidecar) = spool_paths(&self.spool, tenant, call_id);
        let digest = FileDigest::of(&wav).await?;
        let pending = Pending {
            tenant: tenant.into(),
            call_id: call_id.into(),
            key: self.key(tenant, call_id),
            duration_ms: frames * 1_000 / u64::from(crate::RATE),
            size: digest.size,
            sha256: digest.sha256,
            finished_at_ms: wall_ms(),
            pauses,
        };
        write_sidecar(&sidecar, &pending).await?;
        // The row is best effort here: the uploader writes it again with each state.
        if let Err(e) = sink.update(&pending, UploadState::Spooled, None).await {
            tracing::warn!(error = %e, "recording row (spooled); the upload will write it");
        }
        self.submit(sidecar);
        Ok(())
    }

    /// Queues everything the spool holds. Call once at start, before any call is recorded:
    /// a WAV without a sidecar is taken for a crashed recording and finished as it is.
    /// Returns how many recordings were queued.
    pub async fn resume(&self, sink: &dyn UploadSink) -> Result<usize, RecordingError> {
        let mut queued = 0;
        let Ok(mut tenants) = tokio::fs::read_dir(&self.spool).await else {
            return Ok(0);
        };
        while let Some(t) = tenants.next_entry().await? {
            if !t.file_type().await?.is_dir() {
                continue;
            }
            let tenant = t.file_name().to_string_lossy().into_owned();
            let mut files = tokio::fs::read_dir(t.path()).await?;
            while let Some(f) = files.next_entry().await? {
                let path = f.path();
                if path.extension().is_none_or(|e| e != "wav") {
                    continue;
                }
                let Some(call_id) = path.file_stem().map(|s| s.to_string_lossy().into_owned())
                else {
                    continue;
                };
                let (_, sidecar) = spool_paths(&self.spool, &tenant, &call_id);
                if !tokio::fs::try_exists(&sidecar).await? {
                    match recover(&path).await {
                        Ok(frames) => {
                            tracing::warn!(
                                tenant,
                                call_id,
                                frames,
                                "recovered a crashed recording"
                            );
                            self.finished(sink, &tenant, &call_id, frames, Vec::new())
                                .await?;
                            queued += 1;
                        }
                        Err(e) => {
                            tracing::error!(tenant, call_id, error = %e, "unreadable spool file kept")
                        }
                    }
                    continue;
                }
                self.submit(sidecar);
                queued += 1;
            }
        }
        Ok(queued)
    }
}

/// Rewrites a crashed recording as a complete WAV of what its last checkpoint covers.
async fn recover(path: &Path) -> Result<u64, RecordingError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut reader = hound::WavReader::open(&path)?;
        let spec = reader.spec();
        let tmp = path.with_extension("wav.recovered");
        let _ = std::fs::remove_file(&tmp);
        let mut w = hound::WavWriter::create(&tmp, spec)?;
        let mut n = 0u64;
        for s in reader.samples::<i16>() {
            w.write_sample(s?)?;
            n += 1;
        }
        w.finalize()?;
        std::fs::rename(&tmp, &path)?;
        Ok(n / u64::from(spec.channels.max(1)))
    })
    .await
    .map_err(|e| RecordingError::Io(std::io::Error::other(e)))?
}

impl Worker {
    /// Uploads one recording until stored or given up.
    async fn run(&self, sidecar: PathBuf) {
        let pending: Pending = match tokio::fs::read(&sidecar)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(sidecar = %sidecar.display(), error = %e, "unreadable sidecar kept");
                return;
            }
        };
        let span = tracing::info_span!("upload", tenant = %pending.tenant, call = %pending.call_id);
        use tracing::Instrument as _;
        self.upload(sidecar, pending).instrument(span).await;
    }

    async fn upload(&self, sidecar: PathBuf, pending: Pending) {
        let wav = sidecar.with_extension("wav");
        let digest = FileDigest {
            size: pending.size,
            sha256: pending.sha256.clone(),
        };
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let _ = self
                .sink
                .update(&pending, UploadState::Uploading, None)
                .await;
            let result = match self.store.put(&pending.key, &wav, &digest).await {
                Ok(()) => self
                    .sink
                    .update(&pending, UploadState::Stored, None)
                    .await
                    .map_err(RecordingError::Sink),
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(()) => {
                    // Confirmed and recorded: now the spool copy may go.
                    let _ = tokio::fs::remove_file(&wav).await;
                    let _ = tokio::fs::remove_file(&sidecar).await;
                    tracing::info!(
                        tenant = %pending.tenant, call = %pending.call_id, key = %pending.key,
                        lag_ms = wall_ms().saturating_sub(pending.finished_at_ms),
                        "recording stored"
                    );
                    return;
                }
                Err(e) => e,
            };
            if e.is_permanent() || started.elapsed() >= self.give_up {
                tracing::error!(
                    tenant = %pending.tenant, call = %pending.call_id, error = %e,
                    "recording upload failed; the spool file is kept"
                );
                self.report_failed(&pending, &e.to_string()).await;
                return;
            }
            let wait = self.backoff.delay(attempt, rand::random::<f64>());
            tracing::warn!(
                tenant = %pending.tenant, call = %pending.call_id, error = %e,
                retry_in_ms = wait.as_millis() as u64, "recording upload failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// Reports a failure, retrying the report itself for a while (the database may be the
    /// thing that is down).
    async fn report_failed(&self, pending: &Pending, reason: &str) {
        let reason: String = reason.chars().take(500).collect();
        for attempt in 0..10 {
            match self
                .sink
                .update(pending, UploadState::Failed, Some(&reason))
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "recording failure report");
                    tokio::time::sleep(self.backoff.delay(attempt, 1.0)).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
    }

    /// Records what the uploader reports; fails the first `fail` reports of `stored`.
    #[derive(Default)]
    struct Log {
        states: Mutex<Vec<(String, &'static str)>>,
        fail_stored: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl UploadSink for Log {
        async fn update(
            &self,
            p: &Pending,
            state: UploadState,
            _reason: Option<&str>,
        ) -> Result<(), String> {
            if state == UploadState::Stored {
                let mut f = self.fail_stored.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return Err("database down".into());
                }
            }
            self.states
                .lock()
                .unwrap()
                .push((p.call_id.clone(), state.as_str()));
            Ok(())
        }
    }

    fn cfg() -> RecordingsConfig {
        RecordingsConfig {
            retry_initial_ms: 10,
            retry_max_ms: 40,
            ..RecordingsConfig::default()
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-up-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_wav(path: &Path, frames: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut s = crate::Spool::create(path).unwrap();
        s.write(&vec![100i16; frames * 2]).unwrap();
        s.finish().unwrap();
    }

    async fn wait_for(log: &Log, call: &str, state: &str) {
        for _ in 0..500 {
            if log
                .states
                .lock()
                .unwrap()
                .iter()
                .any(|(c, s)| c == call && *s == state)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{call} never reached {state}");
    }

    #[tokio::test]
    async fn a_finished_recording_is_stored_then_its_spool_file_goes() {
        let dir = temp("stored");
        let store = Arc::new(LocalStore::new(dir.join("store")).await.unwrap());
        let log = Arc::new(Log::default());
        *log.fail_stored.lock().unwrap() = 2; // the row write fails twice: retried
        let up = Uploader::start(&cfg(), dir.join("spool"), store.clone(), log.clone());
        let (wav, sidecar) = spool_paths(up.spool(), "t1", "c1");
        write_wav(&wav, 8_000);
        let want = FileDigest::of(&wav).await.unwrap();
        up.finished(log.as_ref(), "t1", "c1", 8_000, Vec::new())
            .await
            .unwrap();
        wait_for(&log, "c1", "stored").await;
        let stored = FileDigest::of(&store.local_path("t1/c1.wav").unwrap())
            .await
            .unwrap();
        assert_eq!(stored, want);
        for _ in 0..100 {
            if !wav.exists() && !sidecar.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!wav.exists() && !sidecar.exists(), "spool files removed");
        let states: Vec<_> = log.states.lock().unwrap().iter().map(|s| s.1).collect();
        assert_eq!(states.first(), Some(&"spooled"));
        assert_eq!(states.last(), Some(&"stored"));
    }

    #[tokio::test]
    async fn resume_finishes_crashed_recordings_and_queues_sidecars() {
        let dir = temp("resume");
        let spool = dir.join("spool");
        // A crashed recording: checkpointed, never finalized.
        let (crashed, _) = spool_paths(&spool, "t1", "crashed");
        std::fs::create_dir_all(crashed.parent().unwrap()).unwrap();
        let mut s = crate::Spool::create(&crashed).unwrap();
        s.write(&vec![7i16; 3_200]).unwrap();
        s.checkpoint().unwrap();
        std::mem::forget(s);
        // A finished one whose upload never ran (the process stopped first).
        let (done, done_car) = spool_paths(&spool, "t2", "done");
        write_wav(&done, 800);
        let digest = FileDigest::of(&done).await.unwrap();
        let pending = Pending {
            tenant: "t2".into(),
            call_id: "done".into(),
            key: "t2/done.wav".into(),
            duration_ms: 100,
            size: digest.size,
            sha256: digest.sha256,
            finished_at_ms: 0,
            pauses: vec![crate::Gap {
                start_ms: 10,
                end_ms: 40,
            }],
        };
        write_sidecar(&done_car, &pending).await.unwrap();

        let store = Arc::new(LocalStore::new(dir.join("store")).await.unwrap());
        let log = Arc::new(Log::default());
        let up = Uploader::start(&cfg(), spool, store.clone(), log.clone());
        assert_eq!(up.resume(log.as_ref()).await.unwrap(), 2);
        wait_for(&log, "crashed", "stored").await;
        wait_for(&log, "done", "stored").await;
        let r = hound::WavReader::open(store.local_path("t1/crashed.wav").unwrap()).unwrap();
        assert_eq!(r.len(), 3_200, "everything up to the checkpoint");
    }

    #[tokio::test]
    async fn a_conflicting_object_fails_and_keeps_the_spool_file() {
        let dir = temp("conflict");
        let store = Arc::new(LocalStore::new(dir.join("store")).await.unwrap());
        let other = dir.join("other.wav");
        write_wav(&other, 10);
        store
            .put("t1/c1.wav", &other, &FileDigest::of(&other).await.unwrap())
            .await
            .unwrap();
        let log = Arc::new(Log::default());
        let up = Uploader::start(&cfg(), dir.join("spool"), store.clone(), log.clone());
        let (wav, _) = spool_paths(up.spool(), "t1", "c1");
        write_wav(&wav, 8_000);
        up.finished(log.as_ref(), "t1", "c1", 8_000, Vec::new())
            .await
            .unwrap();
        wait_for(&log, "c1", "failed").await;
        assert!(wav.exists(), "kept for an operator");
        assert_eq!(
            FileDigest::of(&store.local_path("t1/c1.wav").unwrap())
                .await
                .unwrap(),
            FileDigest::of(&other).await.unwrap(),
            "the stored object was not overwritten"
        );
    }
}
