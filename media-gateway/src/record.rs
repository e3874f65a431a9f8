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

/// Records until the tap closes (the call's media session ended); returns the finished file.
pub async fn record(path: PathBuf, mut tap: mpsc::Receiver<TapFrame>) -> Option<PathBuf> {
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
        return spool.finish().ok();
    }
    tracing::warn!(path = %path.display(), "recording write failed");
    None
}
