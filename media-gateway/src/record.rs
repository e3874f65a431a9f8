//! Recording bridged calls: the relay's tap (each leg's audio as received, taken in batches
//! and decoded here) goes through a [`StereoMixer`] into a two-channel WAV (caller left, agent right) in the spool
//! (`gateway.recordings.spool_dir/<tenant>/<call>.wav`), checkpointed every few seconds so a
//! crash leaves a valid file. When the call ends the recording's uploader (in the recording
//! crate) takes it to the object store; [`RowSink`] mirrors each upload state into the
//! `recordings` row and announces `recording.completed` / `recording.failed` on the tenant's
//! event stream, so a recording never goes missing silently.
//!
//! Whether a call is recorded is the tenant's (or its queue's) rule, [`load_policy`]; the
//! agent's keypad codes and the api pause and resume it through [`RecordControl`]s, which the
//! mixer turns into silence and the row's `pauses`.
//!
//! At start ([`Recorder::start`], before the node takes calls) the spool is scanned: finished
//! recordings are queued again and crashed ones are finished from their last checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchboard_db::Database;
use switchboard_recording::{
    Gap, Leg, ObjectStore, Pending, RecordingPolicy, RecordingRule, RecordingsConfig, Spool,
    StereoMixer, UploadSink, UploadState, Uploader, spool_paths,
};
use switchboard_relay::{TapBatch, TapReader};
use switchboard_state::{CallId, Command, StateEngine, TenantId};
use tokio::sync::mpsc;

use crate::GatewayError;
use crate::node::now_ms;

/// Frames the tap may hold between two batches before the relay drops (and counts) them.
pub const TAP_CAPACITY: usize = 512;
/// How often the spool file's header is rewritten.
const CHECKPOINT: Duration = Duration::from_secs(5);
/// How often queued tap frames are mixed (below the mixer's delay, so none arrive late).
const BATCH: Duration = Duration::from_millis(60);

/// The node's recording pipeline: the store and its uploader.
#[derive(Clone)]
pub struct Recorder {
    pub store: Arc<dyn ObjectStore>,
    pub uploader: Uploader,
    pub sink: Arc<RowSink>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store)
            .field("uploader", &self.uploader)
            .finish()
    }
}

impl Recorder {
    /// Opens the store, starts the uploader and resumes the spool. `None` when recording is
    /// off.
    pub async fn start(
        cfg: &RecordingsConfig,
        db: Database,
        engine: Arc<dyn StateEngine>,
    ) -> Result<Option<Self>, GatewayError> {
        if !cfg.is_enabled() {
            return Ok(None);
        }
        let spool = cfg
            .spool_dir
            .clone()
            .ok_or_else(|| GatewayError::Config("gateway.recordings.spool_dir unset".into()))?;
        tokio::fs::create_dir_all(&spool).await?;
        let store = cfg
            .open_store()
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let sink = Arc::new(RowSink { db, engine });
        let uploader = Uploader::start(cfg, spool, store.clone(), sink.clone());
        let resumed = uploader
            .resume(sink.as_ref())
            .await
            .map_err(|e| GatewayError::Config(format!("resuming the recordings spool: {e}")))?;
        if resumed > 0 {
            tracing::info!(resumed, "recordings spool resumed");
        }
        let (db, sweep_store) = (sink.db.clone(), store.clone());
        let every = Duration::from_secs(cfg.retention_sweep_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match sweep_retention(&db, sweep_store.as_ref(), chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "recordings past retention deleted"),
                    Err(e) => tracing::warn!(error = %e, "recording retention sweep"),
                }
            }
        });
        Ok(Some(Self {
            store,
            uploader,
            sink,
        }))
    }
}

/// Deletes recordings older than their tenant's retention from the store and marks their
/// rows `deleted`. Idempotent (several nodes may sweep at once). Returns how many went.
pub async fn sweep_retention(
    db: &Database,
    store: &dyn ObjectStore,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, GatewayError> {
    let mut deleted = 0;
    for (tenant, days) in db.tenants_with_recording_retention().await? {
        let cutoff = now - chrono::Duration::days(i64::from(days));
        loop {
            let tid = switchboard_domain::TenantId(tenant);
            let txn = db.tenant_txn(tid, switchboard_db::Access::Read).await?;
            let batch = txn.expired_recordings(cutoff, 200).await?;
            txn.commit().await?;
            if batch.is_empty() {
                break;
            }
            for rec in batch {
                if let Err(e) = store.delete(&rec.object_key).await {
                    tracing::warn!(tenant = %tenant, call = %rec.call_id, error = %e, "retention delete");
                    return Ok(deleted);
                }
                let txn = db.tenant_txn(tid, switchboard_db::Access::Write).await?;
                txn.mark_recording_deleted(&rec.call_id).await?;
                txn.commit().await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Mirrors upload states into the `recordings` row and the tenant's event stream.
pub struct RowSink {
    pub(crate) db: Database,
    engine: Arc<dyn StateEngine>,
}

#[async_trait::async_trait]
impl UploadSink for RowSink {
    async fn update(
        &self,
        p: &Pending,
        state: UploadState,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let tenant: uuid::Uuid = p.tenant.parse().map_err(|_| "tenant id".to_string())?;
        let row = switchboard_db::calls::RecordingRecord {
            call_id: p.call_id.clone(),
            object_key: p.key.clone(),
            duration_ms: i64::try_from(p.duration_ms).unwrap_or(i64::MAX),
            size_bytes: i64::try_from(p.size).unwrap_or(i64::MAX),
            sha256: p.sha256.clone(),
            upload_state: state.as_str().into(),
            pauses: (!p.pauses.is_empty())
                .then(|| serde_json::to_string(&p.pauses).ok())
                .flatten(),
        };
        async {
            let txn = self
                .db
                .tenant_txn(
                    switchboard_domain::TenantId(tenant),
                    switchboard_db::Access::Write,
                )
                .await?;
            txn.set_recording_state(&row).await?;
            txn.commit().await
        }
        .await
        .map_err(|e| e.to_string())?;
        let cmd = match state {
            UploadState::Stored => Command::RecordingCompleted {
                call: CallId::parse(p.call_id.clone()).map_err(|e| e.to_string())?,
                object_key: p.key.clone(),
                size_bytes: p.size,
                sha256: p.sha256.clone(),
                duration_ms: p.duration_ms,
            },
            UploadState::Failed => Command::RecordingFailed {
                call: CallId::parse(p.call_id.clone()).map_err(|e| e.to_string())?,
                reason: reason
                    .unwrap_or("upload failed")
                    .chars()
                    .take(500)
                    .collect(),
            },
            UploadState::Spooled | UploadState::Uploading => return Ok(()),
        };
        let tenant = TenantId::parse(p.tenant.clone()).map_err(|e| e.to_string())?;
        self.engine
            .run(&tenant, now_ms(), cmd)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Whether a call on `queue` is recorded, and its pause codes: the tenant's settings and the
/// queue's own rule. A row that cannot be read or parsed (written only through the api's
/// validation, so a fault) falls back to the default (record) with a warning.
pub async fn load_policy(
    db: &Database,
    tenant: uuid::Uuid,
    queue: Option<uuid::Uuid>,
) -> RecordingPolicy {
    let rows = async {
        let txn = db
            .tenant_txn(
                switchboard_domain::TenantId(tenant),
                switchboard_db::Access::Read,
            )
            .await?;
        let rows = txn.recording_policy_rows(queue).await?;
        txn.commit().await?;
        Ok::<_, switchboard_db::DbError>(rows)
    }
    .await;
    let (settings, queue_rule) = match rows {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "recording rules unreadable; recording by default");
            return RecordingPolicy::default();
        }
    };
    let parse = |json: Option<&str>| {
        json.and_then(|j| match serde_json::from_str::<RecordingRule>(j) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "stored recording rule unreadable; ignored");
                None
            }
        })
    };
    let mut policy = RecordingPolicy {
        queue: parse(queue_rule.as_deref()),
        ..RecordingPolicy::default()
    };
    if let Some(s) = settings {
        policy.tenant = parse(s.recording_rule.as_deref()).unwrap_or_default();
        if let Some(tz) = s.time_zone.as_deref() {
            match switchboard_recording::rules::parse_time_zone(tz) {
                Ok(tz) => policy.time_zone = tz,
                Err(e) => tracing::warn!(error = %e, "stored time zone; UTC used"),
            }
        }
        policy.pause_code = s.pause_code;
        policy.resume_code = s.resume_code;
    }
    policy
}

/// Pause (or resume) a running recording from `at_ms` (wall clock) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordControl {
    pub pause: bool,
    pub at_ms: u64,
}

/// How many controls may wait for the recording task (a few keypad codes at most).
pub const CONTROL_CAPACITY: usize = 16;

/// What to record.
#[derive(Debug, Clone)]
pub struct Target {
    pub recorder: Recorder,
    pub tenant: uuid::Uuid,
    pub call_id: String,
}

/// Records until the tap closes, then hands the finished file to the uploader. A failed
/// step is logged and leaves the spool file in place (the next start picks it up).
pub async fn record_call(target: Target, tap: TapReader, control: mpsc::Receiver<RecordControl>) {
    let tenant = target.tenant.to_string();
    let (path, _) = spool_paths(target.recorder.uploader.spool(), &tenant, &target.call_id);
    let Some(Recorded { frames, pauses, .. }) = record(path, tap, control).await else {
        return;
    };
    if let Err(e) = target
        .recorder
        .uploader
        .finished(
            target.recorder.sink.as_ref(),
            &tenant,
            &target.call_id,
            frames,
            pauses,
        )
        .await
    {
        tracing::warn!(error = %e, "recording not queued for upload; kept in the spool");
    }
}

/// A finished recording in the spool.
#[derive(Debug)]
pub struct Recorded {
    pub path: PathBuf,
    /// Sample frames (8 kHz) in the file.
    pub frames: u64,
    /// Where it was paused.
    pub pauses: Vec<Gap>,
}

/// Records until the tap closes (the call's media session ended), pausing and resuming as
/// `control` says; returns the finished file.
pub async fn record(
    path: PathBuf,
    mut tap: TapReader,
    mut control: mpsc::Receiver<RecordControl>,
) -> Option<Recorded> {
    if let Some(dir) = path.parent()
        && let Err(e) = tokio::fs::create_dir_all(dir).await
    {
        tracing::warn!(error = %e, "recording directory");
        return None;
    }
    let mut spool = match Spool::create(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "recording spool");
            return None;
        }
    };
    let mut mixer = StereoMixer::new(now_ms());
    let mut out = Vec::new();
    let mut frames = TapBatch::default();
    let mut samples = Vec::new();
    // Frames are taken in batches (each carries its arrival time), well within the mixer's
    // delay: one wake-up per batch instead of one per 20 ms frame and leg.
    let mut batch = tokio::time::interval(BATCH);
    batch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut failed = false;
    let mut open = true;
    while open {
        batch.tick().await;
        // Controls first: a pause applies from its own time on, so audio of the pause that is
        // already queued (or mixed ahead) is dropped too.
        while let Ok(c) = control.try_recv() {
            let done = if c.pause {
                mixer.pause(c.at_ms)
            } else {
                mixer.resume(c.at_ms)
            };
            if !done && !c.pause && mixer.is_paused() {
                tracing::warn!("recording stays paused (pause limit reached)");
            }
        }
        open = tap.take(&mut frames);
        for (frame, payload) in frames.iter() {
            let leg = match frame.leg {
                switchboard_relay::Leg::Caller => Leg::Caller,
                switchboard_relay::Leg::Agent => Leg::Agent,
            };
            samples.clear();
            frame.law.decode(payload, &mut samples);
            mixer.push(leg, frame.timestamp, &samples, frame.at_ms);
        }
        out.clear();
        if mixer.drain(now_ms(), &mut out) > 0 && !failed {
            failed = spool.write(&out).is_err();
        }
        if !failed && last_checkpoint.elapsed() >= CHECKPOINT {
            last_checkpoint = tokio::time::Instant::now();
            if let Err(e) = spool.checkpoint() {
                tracing::warn!(error = %e, "recording checkpoint");
            }
        }
    }
    out.clear();
    mixer.finish(&mut out);
    if !failed && spool.write(&out).is_ok() {
        let frames = spool.frames();
        let pauses = mixer.gaps(frames);
        return spool.finish().ok().map(|path| Recorded {
            path,
            frames,
            pauses,
        });
    }
    tracing::warn!(path = %path.display(), "recording write failed");
    None
}
