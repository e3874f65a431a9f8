//! WebRTC media for browser agents: one leg per browser call, bridged to a plain RTP peer
//! (the relay's agent leg), so recording, hold music, stats and latching stay the relay's.
//!
//! A leg owns two UDP sockets: the browser-facing one (a port from
//! [`WebrtcConfig::port_min`]..=[`WebrtcConfig::port_max`], advertised as a host candidate on
//! [`WebrtcConfig::advertised_ip`]) where str0m runs ICE-lite, DTLS-SRTP and RTP, and a
//! loopback one that speaks plain RTP (G.711 plus RFC 4733 on [`RELAY_DTMF_PT`]) with the
//! relay. Opus is transcoded to the relay's G.711 law with libopus.
//!
//! # API (stable: `scripts/bench webrtc` and the gateway use it)
//!
//! * [`Endpoint::new`]`(`[`WebrtcConfig`]`, `[`Role`]`)` — validated config, leg limits.
//! * We offer (a call to the browser): [`Endpoint::offer`]`(carrier)` -> ([`OfferedLeg`],
//!   SDP with `a=setup:actpass`); [`OfferedLeg::accept_answer`]`(sdp)` -> [`Leg`].
//! * The browser offers (its own call): [`Endpoint::answer`]`(offer, carrier)` -> ([`Leg`],
//!   answer SDP, `a=setup:passive`), or [`WebrtcError::Refused`] with the reason for a 488.
//! * [`Leg::relay_side_addr`] is the address the relay sends to (its agent leg's peer),
//!   [`Leg::relay_law`] the law it speaks there; [`Leg::start`]`(relay_addr)` runs the leg
//!   and returns a [`LegHandle`].
//! * [`LegHandle::reoffer`]`(sdp)` answers a browser's re-offer (hold/unhold);
//!   [`LegHandle::offer_direction`] / [`LegHandle::accept_answer`] make our own re-offer;
//!   [`LegHandle::next_event`] yields [`LegEvent::Connected`] and [`LegEvent::Closed`] (with a
//!   [`CloseReason`], e.g. consent lost); [`LegHandle::stats`]; dropping the handle ends the
//!   leg.
//! * [`Endpoint::stats`]: legs alive, started by codec, consent losses, DTLS failures and
//!   refusals by reason ([`refusal_label`]), counted inside the crate, for metrics.
//!
//! [`Role::Browser`] is the same leg playing a browser (full ICE, controlling, DTLS active)
//! for tests and benchmarks.
//!
//! The decisions are pure and unit-tested without sockets: [`sdp`] (offer checks, codec
//! choice), [`consent`] (RFC 7675 timer), [`bridge`] (the media conversion).

pub mod bridge;
pub mod consent;
mod counters;
mod leg;
pub mod sdp;

pub use bridge::RELAY_DTMF_PT;
pub use counters::{EndpointStats, refusal_label};
pub use leg::{
    CloseReason, Endpoint, Leg, LegControl, LegEvent, LegHandle, LegStats, OfferedLeg, Role,
    WebrtcConfig,
};
pub use sdp::{Codec, Direction, SdpRefusal};

/// Everything a WebRTC leg can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    /// The SDP is not acceptable (a 488 with this reason).
    #[error("{0}")]
    Refused(#[from] SdpRefusal),
    /// `max_legs` legs are running.
    #[error("too many WebRTC legs")]
    TooManyLegs,
    /// No free UDP port in the range.
    #[error("no free WebRTC port")]
    NoPorts,
    #[error("configuration: {0}")]
    Config(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The leg's task has ended.
    #[error("the leg has ended")]
    Ended,
}

impl From<str0m::RtcError> for WebrtcError {
    fn from(e: str0m::RtcError) -> Self {
        WebrtcError::Rtc(e.to_string())
    }
}
