//! The gateway's settings, as `switchboard gateway` and `switchboard up` read them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of one gateway node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// SIP over UDP and TCP listen on this address.
    pub sip_addr: SocketAddr,
    /// The address peers reach us at (SDP, Contact). Defaults to the listen IP.
    pub advertised_ip: Option<IpAddr>,
    /// RTP port range (RTP even, RTCP odd).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// This node's name in the state engine (calls it holds are reclaimed if it stops beating).
    pub node_id: String,
    /// How long an agent's phone may ring before the call goes back to the queue.
    pub ring_timeout_ms: u64,
    /// Carriers' source addresses: INVITEs from them are inbound calls from the PSTN.
    pub trunk_sources: Vec<IpAddr>,
    /// Secret for digest nonces, shared by every node so any node can verify a nonce
    /// (at least 32 bytes). Generated per process when empty, which suits one node only.
    pub auth_secret: String,
    /// Offer the MD5 challenge before the SHA-256 one. RFC 8760 wants the preferred (SHA-256)
    /// first, but some MD5-only phones (and sipp) answer only the first challenge they see.
    pub digest_md5_first: bool,
    /// Registration lifetimes the registrar grants, in seconds.
    pub min_expires_s: u32,
    pub max_expires_s: u32,
    /// Overload protection: new calls per second (burst twice that) and calls set up at once.
    pub max_cps: u32,
    pub max_calls_in_setup: u32,
    /// Concurrent calls per tenant on this node (toll-fraud and runaway guard).
    pub max_calls_per_tenant: u32,
    /// Failed authentications per source before a ban, and the ban's length.
    pub max_auth_failures: u32,
    pub ban_s: u64,
    /// Recording of bridged calls (two-channel WAV, caller left, agent right): spool, object
    /// store, uploads. Off unless `enabled`; `switchboard up` turns it on with a local store.
    pub recordings: switchboard_recording::RecordingsConfig,
    /// A directory of 16-bit WAV prompts for queue announcements: `position.wav` ("you are
    /// caller number"), `digit-0.wav` .. `digit-9.wav`, `wait.wav` ("your estimated wait is"),
    /// `minutes.wav`. Off when unset.
    pub announcements_dir: Option<PathBuf>,
    /// `switchboard gateway` serves Prometheus `/metrics` here (in `switchboard up` they join
    /// the api's `/metrics`).
    pub metrics_addr: Option<SocketAddr>,
    /// SIP over TLS (RFC 3261 26, `sips:`), off unless set.
    pub tls: Option<TlsListener>,
    /// The carrier trunk agents' outside calls go out on; none: outside calls get 503.
    pub outbound_trunk: Option<OutboundTrunk>,
    /// A WAV file (any rate, mono or stereo, 16-bit) played to queued callers; a generated
    /// tone pattern when absent.
    pub hold_music: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            sip_addr: SocketAddr::from(([127, 0, 0, 1], 5060)),
            advertised_ip: None,
            rtp_port_min: 20_000,
            rtp_port_max: 29_999,
            node_id: "gw-1".into(),
            ring_timeout_ms: 15_000,
            trunk_sources: vec![IpAddr::from([127, 0, 0, 1])],
            auth_secret: String::new(),
            digest_md5_first: false,
            min_expires_s: 60,
            max_expires_s: 3600,
            max_cps: 200,
            max_calls_in_setup: 2_000,
            max_calls_per_tenant: 500,
            max_auth_failures: 5,
            ban_s: 600,
            hold_music: None,
            outbound_trunk: None,
            tls: None,
            metrics_addr: None,
            announcements_dir: None,
            recordings: switchboard_recording::RecordingsConfig::default(),
        }
    }
}

/// The TLS listener: address and PEM files (certificate chain, private key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub addr: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A carrier trunk for outbound calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundTrunk {
    /// Where INVITEs go.
    pub address: SocketAddr,
    /// The host part of the Request-URI (`sip:+15550100@<domain>`).
    pub domain: String,
    /// Digest credentials, when the carrier challenges.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl GatewayConfig {
    pub fn ring_timeout(&self) -> Duration {
        Duration::from_millis(self.ring_timeout_ms)
    }

    pub fn advertised_ip(&self) -> IpAddr {
        self.advertised_ip.unwrap_or(self.sip_addr.ip())
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.rtp_port_min > self.rtp_port_max || self.rtp_port_min < 1024 {
            return Err("gateway.rtp_port_min..rtp_port_max: a range above 1023".into());
        }
        if !self.auth_secret.is_empty() && self.auth_secret.len() < 32 {
            return Err("gateway.auth_secret: at least 32 characters".into());
        }
        if self.min_expires_s == 0 || self.min_expires_s > self.max_expires_s {
            return Err("gateway.min_expires_s..max_expires_s: a non-empty range".into());
        }
        if self.tls.as_ref().is_some_and(|t| t.addr.port() == 0) {
            return Err(
                "gateway.tls.addr: a fixed port (the TLS listener binds it in the background)"
                    .into(),
            );
        }
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return Err("gateway.node_id: 1 to 64 characters".into());
        }
        self.recordings.validate()
    }
}
