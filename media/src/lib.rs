//! Media primitives for the media gateway, with no IO: RTP packets and source latching, G.711
//! codecs, RFC 4733 telephone events, a minimal SDP offer/answer for audio, and tone
//! generation/detection (Goertzel) for audio checks.
//!
//! Why a crate of its own: these are pure functions over bytes and samples that the gateway's
//! call tasks, its tests and its benchmarks all use; keeping them apart from sockets and SIP
//! keeps them fast to test exhaustively (property tests: network input never panics).

pub mod dtmf;
pub mod g711;
pub mod rtp;
pub mod sdp;
pub mod tone;

/// Why a packet or description was refused. Network input produces these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("packet too short: {0} bytes")]
    TooShort(usize),
    #[error("packet too long: {0} bytes")]
    TooLong(usize),
    #[error("unsupported RTP version {0}")]
    BadVersion(u8),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("malformed SDP line {line}: {reason}")]
    Sdp { line: usize, reason: &'static str },
    #[error("SDP too large: {0}")]
    SdpTooLarge(&'static str),
    #[error("no common audio codec")]
    NoCommonCodec,
}
