//! Call recording, the first part of the pipeline: both legs of a call as one two-channel WAV
//! (caller left, agent right), time-aligned with silence where a leg sent nothing, written to a
//! local spool file while the call runs.
//!
//! Why a crate of its own: the gateway feeds it decoded audio (the relay's tap) and the upload
//! side (object storage, retries, checksums) reads the finished files; neither needs the other,
//! and the alignment logic is pure and tested without sockets or clocks.
//!
//! - [`StereoMixer`]: places each leg's 20 ms frames by their RTP timestamps, anchored to the
//!   arrival time of the leg's first frame (re-anchored when a leg's timestamps jump, as when
//!   its source changes), and hands out interleaved stereo samples a little behind real time.
//! - [`Spool`]: the WAV file. Its header is rewritten on every [`Spool::checkpoint`], so a
//!   process that dies mid-call leaves a valid file holding everything up to the last one.

mod mixer;
mod spool;

pub use mixer::{Leg, StereoMixer};
pub use spool::Spool;

/// Sample rate of recordings (G.711 narrowband).
pub const RATE: u32 = 8_000;

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
}
