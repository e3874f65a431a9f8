//! Async RTP relay for the media gateway: one [`Session`] per call, each with two legs
//! ([`Leg::Caller`] and [`Leg::Agent`]) bound to their own RTP/RTCP port pair from a pool.
//!
//! Why a crate of its own: the SIP side (`media-gateway`) decides *what* a call's media does
//! (play hold music, bridge to the agent, hang up); this crate does it on sockets, with the
//! sans-IO pieces of `switchboard-media` (RTP parsing, strict latching, SSRC/seq/ts rewriting,
//! G.711, RFC 4733). It can be tested and benchmarked against real UDP without any SIP.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_relay::RelayError> {
//! use std::{net::SocketAddr, sync::Arc, time::Duration};
//! use switchboard_media::g711::Law;
//! use switchboard_relay::{Leg, Prompt, Relay, RelayConfig};
//!
//! let relay = Relay::new(RelayConfig::new("127.0.0.1".parse().unwrap(), 20000, 29999))?;
//! // Exhaustion is `RelayError::PortsExhausted`: answer the INVITE with 503.
//! let (session, mut events) = relay.open("call-42")?;
//! let caller_port = session.local_addr(Leg::Caller).port(); // goes into our SDP answer
//! let from_sdp: SocketAddr = "192.0.2.10:4000".parse().unwrap();
//! session.set_peer(Leg::Caller, from_sdp, Law::Alaw, Some(101)).await?;
//! let music: Arc<[i16]> = vec![0i16; 8000].into();
//! session.play(Leg::Caller, Prompt::looped(music)).await?;
//! // ... the agent answers:
//! # let agent_sdp = from_sdp;
//! session.set_peer(Leg::Agent, agent_sdp, Law::Ulaw, Some(96)).await?;
//! session.bridge().await?; // PCMA <-> PCMU, DTMF payload type 101 <-> 96
//! while let Some(ev) = events.recv().await {
//!     println!("{ev:?}"); // Dtmf, PromptEnded, Latched, RtpTimeout
//! #   break;
//! }
//! let cdr_stats = session.close().await?; // ports go back to the pool
//! # let _ = cdr_stats;
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Latching** (symmetric RTP): `set_peer` gives the address from the SDP, but a leg latches
//!   on the address and SSRC of its first packet and sends back there. After that, packets
//!   from another address or SSRC are dropped and counted ([`LegStats::dropped_foreign`]):
//!   no injection into a call, no bleed between calls. A `set_peer` with another address
//!   (re-INVITE) unlatches the leg.
//! - **What a leg hears** is one of: nothing, a [`Prompt`] (8 kHz PCM, e.g. from a WAV file
//!   with [`Prompt::wav_samples`]; 20 ms packets paced by a timer, looped or once with
//!   [`MediaEvent::PromptEnded`]), or the other leg
//!   ([`Session::bridge`]: transcoding PCMU <-> PCMA when the codecs differ, RFC 4733 events
//!   passed through with the payload type re-mapped). Whatever the source, each leg's
//!   outgoing stream keeps one SSRC and continuous sequence numbers and timestamps
//!   (`switchboard_media::rtp::Rewriter`); the marker bit flags each change of source.
//! - **Hold** ([`Session::hold`]): nothing is sent to a held leg and its audio is not relayed;
//!   its RTP timeout is suspended.
//! - **DTMF**: [`Session::send_dtmf`] sends RFC 4733 events (20 ms updates, 3 end packets);
//!   bridged audio toward that leg pauses meanwhile. Incoming events are reported once per
//!   event timestamp as [`MediaEvent::Dtmf`]. After an event we sent, one frame of silence
//!   follows at the event's end timestamp, so that the audio resuming after it continues from
//!   there (the `Rewriter` continues from the last packet sent).
//! - **RTCP** on RTP port + 1: an SR (or RR when we sent nothing) with a report block and a
//!   CNAME about every [`RelayConfig::rtcp_interval`] (randomised 0.5x-1.5x); incoming SR/RR
//!   blocks about our stream fill the `remote_*` and `rtt_ms` fields of [`LegStats`].
//! - **Stats** ([`Session::stats`], and [`Session::close`] for the final ones): packets and
//!   bytes both ways, loss from sequence gaps, RFC 3550 jitter, an estimated MOS.
//! - **Tap** ([`Session::tap`]): decoded PCM of each leg's incoming audio with its RTP
//!   timestamp, on a bounded channel; when it is full frames are dropped and counted, the
//!   relay never waits.
//!
//! # Performance
//!
//! One task per session, a hand-written poll over its four sockets, its command channel and at
//! most two timers (20 ms pacing only while a prompt or DTMF plays; housekeeping for timeouts
//! and RTCP, at most every second). A readable socket is drained (at most 64 datagrams, then
//! the task yields) with non-blocking receives into one reused buffer; forwarding
//! writes into a reused buffer and sends without waiting (a full socket buffer drops the
//! packet and counts it). The bridge path neither allocates nor logs per packet. Every
//! channel is bounded. Datagrams over 1500 bytes are refused.
//!
//! `scripts/bench-relay` measures it against rtpengine (`relay-bench`, in this crate, is its
//! generator and the relay's server process).

mod pool;
pub mod rtcp;
mod session;
mod stats;
mod tap;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use session::{MAX_PROMPT_SECS, MediaEvent, Prompt, Session};
pub use stats::{LegStats, SessionStats, estimate_mos};
pub use tap::{TapBatch, TapFrame, TapReader, TapWriter, tap};

/// Everything that can go wrong, for the caller to map (e.g. exhaustion to SIP 503).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid relay configuration: {0}")]
    Config(String),
    #[error("no free RTP port pair")]
    PortsExhausted,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the session is closed")]
    Closed,
    #[error("not a DTMF digit: {0:?}")]
    InvalidDigit(char),
    #[error("no telephone-event payload type negotiated on the {0:?} leg")]
    NoTelephoneEvent(Leg),
    #[error("no peer set on the {0:?} leg")]
    NoPeer(Leg),
    #[error("invalid payload type {0} (must be 0-127, not 0 or 8)")]
    InvalidPayloadType(u8),
    #[error("DTMF duration must be 20 ms to 8 s")]
    InvalidDuration,
    #[error("cannot read WAV: {0}")]
    Wav(#[from] hound::Error),
    #[error("unsupported prompt: {0}")]
    PromptFormat(&'static str),
    #[error("malformed RTCP: {0}")]
    Rtcp(#[from] rtcp_types::RtcpParseError),
    #[error("compound RTCP must start with an SR or RR")]
    RtcpNotAReport,
    #[error("cannot write RTCP: {0}")]
    RtcpWrite(#[from] rtcp_types::RtcpWriteError),
}

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Toward the PSTN trunk or the calling phone.
    Caller,
    /// Toward the agent's phone.
    Agent,
}

impl Leg {
    /// The other side.
    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Agent,
            Leg::Agent => Leg::Caller,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Leg::Caller => 0,
            Leg::Agent => 1,
        }
    }
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address the sessions' sockets bind to (and that goes into the gateway's SDP).
    pub bind_ip: IpAddr,
    /// Port range, both ends included; RTP takes the even ports, RTCP the next odd one.
    pub port_min: u16,
    pub port_max: u16,
    /// A leg with a peer that sends nothing for this long raises [`MediaEvent::RtpTimeout`].
    pub rtp_timeout: Duration,
    /// Mean time between two RTCP reports of a leg (RFC 3550 suggests 5 s).
    pub rtcp_interval: Duration,
    /// Capacity of each session's event channel; events beyond it are dropped and counted.
    pub event_capacity: usize,
    /// CNAME in our RTCP SDES.
    pub cname: String,
}

impl RelayConfig {
    /// Defaults: 30 s RTP timeout, 5 s RTCP interval, 64 queued events.
    pub fn new(bind_ip: IpAddr, port_min: u16, port_max: u16) -> Self {
        Self {
            bind_ip,
            port_min,
            port_max,
            rtp_timeout: Duration::from_secs(30),
            rtcp_interval: Duration::from_secs(5),
            event_capacity: 64,
            cname: format!("switchboard-relay@{bind_ip}"),
        }
    }
}

/// The relay: a port pool and the settings shared by its sessions.
#[derive(Debug)]
pub struct Relay {
    cfg: RelayConfig,
    pool: pool::SharedPool,
}

impl Relay {
    pub fn new(cfg: RelayConfig) -> Result<Arc<Relay>, RelayError> {
        if cfg.port_min > cfg.port_max {
            return Err(RelayError::Config(format!(
                "port_min {} > port_max {}",
                cfg.port_min, cfg.port_max
            )));
        }
        if cfg.rtp_timeout.is_zero() || cfg.rtcp_interval.is_zero() || cfg.event_capacity == 0 {
            return Err(RelayError::Config(
                "rtp_timeout, rtcp_interval and event_capacity must be positive".into(),
            ));
        }
        if cfg.cname.len() > rtcp::MAX_CNAME {
            return Err(RelayError::Config(format!(
                "cname longer than {} bytes",
                rtcp::MAX_CNAME
            )));
        }
        let pool = pool::PortPool::new(cfg.port_min, cfg.port_max)?;
        Ok(Arc::new(Relay {
            cfg,
            pool: Arc::new(Mutex::new(pool)),
        }))
    }

    /// Opens a session: binds a port pair per leg and starts its task. Must be called from
    /// within a Tokio runtime. `label` names the call in logs and stats.
    pub fn open(
        &self,
        label: &str,
    ) -> Result<(Session, tokio::sync::mpsc::Receiver<MediaEvent>), RelayError> {
        let caller = pool::bind_pair(&self.pool, self.cfg.bind_ip)?;
        let agent = pool::bind_pair(&self.pool, self.cfg.bind_ip)?;
        session::start(&self.cfg, label, [caller, agent])
    }

    /// Port pairs free now (each session takes two).
    pub fn free_port_pairs(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).free()
    }

    /// Port pairs in the configured range.
    pub fn port_pairs(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity()
    }

    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }
}
