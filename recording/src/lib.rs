//! Call recording: both legs of a call as one two-channel WAV (caller left, agent right),
//! time-aligned with silence where a leg sent nothing, written to a local spool file while the
//! call runs, then uploaded to object storage when it ends.
//!
//! Why a crate of its own: the gateway feeds it decoded audio (the relay's tap) and the api
//! reads stored objects (playback); neither needs the other, and the alignment logic is pure
//! and tested without sockets or clocks.
//!
//! - [`StereoMixer`]: places each leg's 20 ms frames by their RTP timestamps, anchored to the
//!   arrival time of the leg's first frame (re-anchored when a leg's timestamps jump, as when
//!   its source changes), and hands out interleaved stereo samples a little behind real time.
//! - [`Spool`]: the WAV file. Its header is rewritten on every [`Spool::checkpoint`], so a
//!   process that dies mid-call leaves a valid file holding everything up to the last one.
//! - [`ObjectStore`]: where finished recordings go ([`LocalStore`], [`S3Store`]): never
//!   overwrites, confirms size and checksum before an upload counts.
//! - [`RecordingPolicy`] (module [`rules`]): whether a call is recorded (always, never, by
//!   weekly time windows; per tenant, overridden per queue) and the agent's DTMF codes that
//!   pause and resume it; the pauses go into the metadata as [`Gap`]s.
//! - [`Uploader`]: the spool directory as a durable queue, retries with backoff, reports each
//!   state to an [`UploadSink`] (the gateway's database row and tenant events).

mod local;
mod mixer;
pub mod rules;
mod s3;
mod spool;
mod store;
mod upload;

pub use local::LocalStore;
pub use mixer::{Gap, Leg, MAX_GAPS, StereoMixer};
pub use rules::{CodeAction, PauseCodes, RecordMode, RecordingPolicy, RecordingRule};
pub use s3::S3Store;
pub use spool::Spool;
pub use store::{FileDigest, ObjectStore, RecordingsConfig, StoreKind, hex};
pub use upload::{Backoff, Pending, UploadSink, UploadState, Uploader, spool_paths, write_sidecar};

/// Sample rate of recordings (G.711 narrowband).
pub const RATE: u32 = 8_000;

/// Why a recording could not be written, stored or confirmed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("object key refused: {0:?}")]
    BadKey(String),
    #[error("s3: {detail}")]
    S3 { status: Option<u16>, detail: String },
    /// The store holds something else under the key: never overwritten, never retried.
    #[error("stored object {key} does not match the spool file: {detail}")]
    Mismatch { key: String, detail: String },
    #[error("recording report: {0}")]
    Sink(String),
}

impl RecordingError {
    /// Retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RecordingError::Mismatch { .. } | RecordingError::BadKey(_) | RecordingError::Config(_)
        )
    }
}
