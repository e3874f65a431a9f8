//! Recording a bridged call to the local spool: the relay's tap (each leg's decoded audio)
//! goes through a [`StereoMixer`] into a two-channel WAV (caller left, agent right) under
//! `gateway.recordings_dir/<tenant>/<call>.wav`, checkpointed every few seconds so a crash
//! leaves a valid file. Uploading to object storage is the next stage (issue 5).

use std::path::PathBuf;
use std::time::Duration;

use switchboard_recording::{Leg, Spool, StereoMixer};
use switchboard_relay::TapFrame;
use tokio::sync::mpsc;

use crate::node::now_ms;

/// Frames the tap may queue before the relay drops (and counts) them.
pub const TAP_CAPACITY: usize = 512;
/// How often the spool file's header is rewritten.
const CHECKPOINT: Duration = Duration::from_secs(5);

/// What to record and where its metadata row goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub gateway: std::sync::Arc<crate::node::Gateway>,
    pub tenant: uuid::Uuid,
    pub call_id: String,
    /// The recordings store (the local directory on the embedded default).
    pub store: PathBuf,
}

impl Target {
    fn key(&self) -> String {
        format!("{}/{}.wav", self.tenant, self.call_id)
    }
}

/// Records until the tap closes, then confirms the stored file (size, SHA-256) and writes the
/// recording's metadata row. A failed step is logged and leaves the spool file in place.
pub async fn record_call(target: Target, tap: mpsc::Receiver<TapFrame>) {
    let path = target.store.join(target.key());
    let Some((path, frames)) = record(path, tap).await else {
        return;
    };
    let Ok(bytes) = tokio::fs::read(&path).await else {
        tracing::warn!(path = %path.display(), "recording vanished before its checksum");
        return;
    };
    use sha2::Digest;
    let sha256: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let row = switchboard_db::calls::RecordingRecord {
        call_id: target.call_id.clone(),
        object_key: target.key(),
        duration_ms: (frames * 1_000 / u64::from(switchboard_recording::RATE)) as i64,
        size_bytes: bytes.len() as i64,
        sha256,
        upload_state: "stored".into(),
    };
    let written = async {
        let txn = target
            .gateway
            .db
            .tenant_txn(
                switchboard_domain::TenantId(target.tenant),
                switchboard_db::Access::Write,
            )
            .await?;
        txn.record_recording(&row).await?;
        txn.commit().await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording metadata");
    }
}

/// Records until the tap closes (the call's media session ended); returns the finished file
/// and its sample frames.
pub async fn record(path: PathBuf, mut tap: mpsc::Receiver<TapFrame>) -> Option<(PathBuf, u64)> {
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
    let mut checkpoint = tokio::time::interval(CHECKPOINT);
    let mut failed = false;
    loop {
        tokio::select! {
            frame = tap.recv() => {
                let Some(frame) = frame else { break };
                let leg = match frame.leg {
                    switchboard_relay::Leg::Caller => Leg::Caller,
                    switchboard_relay::Leg::Agent => Leg::Agent,
                };
                mixer.push(leg, frame.timestamp, &frame.samples, now_ms());
            }
            _ = checkpoint.tick() => {
                if let Err(e) = spool.checkpoint() {
                    tracing::warn!(error = %e, "recording checkpoint");
                }
            }
        }
        out.clear();
        if mixer.drain(now_ms(), &mut out) > 0 && !failed {
            failed = spool.write(&out).is_err();
        }
    }
    out.clear();
    mixer.finish(&mut out);
    if !failed && spool.write(&out).is_ok() {
        let frames = spool.frames();
        return spool.finish().ok().map(|p| (p, frames));
    }
    tracing::warn!(path = %path.display(), "recording write failed");
    None
}
