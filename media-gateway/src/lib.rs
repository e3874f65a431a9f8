//! The media gateway: SIP edge, registrar, B2BUA and RTP media for inbound calls.
//!
//! - [`framing`], [`inspect`] and [`udp`]: bytes to SIP messages at the transport edge (limits,
//!   the RFC 3261 18.3 Content-Length rule, a trial parse and RFC 3261 8.2 checks that answer
//!   broken requests with 400, bans) before rsipstack's parser.
//! - [`call`]: the sans-IO call-control state machine of one inbound call.
//! - [`node`]: the running node (rsipstack endpoint, dispatcher, registrar, engine feed).
//! - [`inbound`]: one call's task, the IO around [`call::Call`].
//! - [`outbound_call`] and [`outbound`]: an agent's outside call (sans-IO machine and its task:
//!   digest, toll-fraud guard, caps, carrier trunk).
//! - [`trunk`]: the internal SIP trunk between nodes (peer authentication).
//! - [`cluster`]: node registry heartbeat, placement of new calls, drain, crash journal.
//! - [`ws`] and [`token`]: SIP over WebSocket for browser agents (RFC 7118) and their
//!   registration with the api's access token.
//! - [`location`], [`prompts`], [`config`]: registrations, hold music, settings.
//!
//! See `media-gateway/README.md`.

pub mod call;
pub mod cluster;
pub mod config;
pub mod framing;
pub mod inbound;
pub mod inspect;
pub mod legs;
pub mod location;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod outbound_call;
pub mod prompts;
pub mod record;
pub mod token;
pub mod trunk;
pub mod udp;
pub mod ws;

pub use config::GatewayConfig;
pub use node::{RunningGateway, start, start_with_tokens};

/// Why the gateway could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("sip stack: {0}")]
    Sip(String),
    #[error("media: {0}")]
    Media(#[from] switchboard_relay::RelayError),
    #[error("state engine: {0}")]
    State(#[from] switchboard_state::StateError),
    #[error("database: {0}")]
    Db(#[from] switchboard_db::DbError),
    #[error("a lock was poisoned")]
    Poisoned,
}

impl GatewayError {
    pub(crate) fn sip(e: rsipstack::Error) -> Self {
        GatewayError::Sip(e.to_string())
    }
}
