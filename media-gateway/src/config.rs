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
    /// Carrier trunks that identify themselves by digest credentials rather than by source
    /// address: an INVITE whose From host is a trunk's `realm` is challenged (407) for its
    /// username and password, then routed like any inbound call.
    pub inbound_trunks: Vec<InboundTrunk>,
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
    /// SIP over WebSocket (RFC 7118) for browser softphones listens here; off unless set. Plain
    /// WS only on a loopback address (tests, a local TLS-terminating proxy) unless
    /// `ws.allow_plain`; WSS when `ws.cert_file`/`ws.key_file` are set.
    pub ws_addr: Option<SocketAddr>,
    /// The WebSocket listener's TLS files and limits.
    pub ws: WsSettings,
    /// WebRTC media for browser agents (legs whose binding is a WebSocket one).
    pub webrtc: WebrtcSettings,
    /// The carrier trunk agents' outside calls go out on; none: outside calls get 503.
    pub outbound_trunk: Option<OutboundTrunk>,
    /// The most calls (inbound and outbound) the node holds at once; past it new carrier calls
    /// get 503 (or a redirect, see `spread`).
    pub capacity: u32,
    /// A node that has not beaten its heart for this long is dead: the engine reclaims its
    /// calls (their agents go to wrap-up, then ready) and it leaves the node registry. The node
    /// beats every third of it.
    pub node_ttl_ms: u64,
    /// Where cluster peers send calls for phones registered on this node (the internal SIP
    /// trunk). Defaults to the advertised IP and the SIP port.
    pub trunk_addr: Option<SocketAddr>,
    /// How new carrier calls are spread over nodes: `refuse` (503 with Retry-After when
    /// draining or full; the carrier fails over) or `redirect` (302 to the least-loaded live
    /// node when draining, full, or `spread_margin` calls busier than it).
    pub spread: crate::cluster::Spread,
    pub spread_margin: u32,
    /// One small file per call in progress, so calls cut by a crash get their CDR at the next
    /// start. `switchboard up`/`gateway` set it to `<data_dir>/calls`; off when unset.
    pub journal_dir: Option<PathBuf>,
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
            inbound_trunks: Vec::new(),
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
            ws_addr: None,
            ws: WsSettings::default(),
            webrtc: WebrtcSettings::default(),
            metrics_addr: None,
            announcements_dir: None,
            capacity: 1_000,
            node_ttl_ms: 6_000,
            trunk_addr: None,
            spread: crate::cluster::Spread::Refuse,
            spread_margin: 10,
            journal_dir: None,
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

/// The SIP-over-WebSocket listener: TLS and limits on every input path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSettings {
    /// PEM certificate chain and private key: WSS. Both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Serve plain WS on a non-loopback address (behind a proxy that terminates TLS).
    pub allow_plain: bool,
    /// Open WebSocket connections at once, in all and per source IP.
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    /// TCP accepted to WebSocket (TLS and HTTP upgrade) done within this.
    pub handshake_timeout_ms: u64,
    /// A WebSocket ping every this many seconds; a connection silent (no message, no pong) for
    /// `idle_timeout_s` is closed.
    pub ping_interval_s: u64,
    pub idle_timeout_s: u64,
    /// Largest WebSocket message (one SIP message each, RFC 7118 section 5), at most 64 KiB.
    pub max_message_bytes: usize,
    /// SIP messages per second one connection may send (twice that in a burst).
    pub max_messages_per_s: u32,
    /// Broken messages one connection may send before it is closed.
    pub max_malformed: u32,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            allow_plain: false,
            max_connections: 5_000,
            max_connections_per_ip: 50,
            handshake_timeout_ms: 5_000,
            ping_interval_s: 20,
            idle_timeout_s: 60,
            max_message_bytes: 32 * 1024,
            max_messages_per_s: 20,
            max_malformed: 10,
        }
    }
}

impl WsSettings {
    /// Whether the listener speaks TLS (WSS).
    pub fn secure(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// WebRTC legs toward browsers (ICE-lite, DTLS-SRTP, Opus or G.711): one UDP port each from
/// the range, advertised as a host candidate on the gateway's advertised IP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcSettings {
    /// Browser-facing UDP ports, inclusive (apart from the RTP range).
    pub port_min: u16,
    pub port_max: u16,
    /// RFC 7675: a browser that sent no valid consent check (STUN binding request) for this
    /// long is gone; its call ends with cause `agent_media_timeout`.
    pub consent_timeout_ms: u64,
    /// WebRTC legs at once on this node; past it a browser's call gets 503 and a call to a
    /// browser is offered to it as if it were unreachable (480, back to the queue).
    pub max_legs: usize,
    /// Largest SDP a browser may send.
    pub max_sdp_bytes: usize,
}

impl Default for WebrtcSettings {
    fn default() -> Self {
        Self {
            port_min: 30_000,
            port_max: 30_999,
            consent_timeout_ms: 30_000,
            max_legs: 1_000,
            max_sdp_bytes: 16 * 1024,
        }
    }
}

/// A carrier trunk that authenticates its inbound calls with digest credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundTrunk {
    /// A name for logs.
    pub name: String,
    /// The host its From URIs carry (`carrier.example`); also the digest realm.
    pub realm: String,
    pub username: String,
    pub password: String,
    /// Source addresses it may call from; empty: any.
    #[serde(default)]
    pub sources: Vec<IpAddr>,
}

impl std::fmt::Debug for InboundTrunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundTrunk")
            .field("name", &self.name)
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sources", &self.sources)
            .finish()
    }
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

    /// How often the node beats its heart (a third of the TTL: two beats may be lost).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms / 3)
    }

    pub fn advertised_ip(&self) -> IpAddr {
        self.advertised_ip.unwrap_or(self.sip_addr.ip())
    }

    /// The WebRTC endpoint's settings (bind on the SIP listen IP, advertise ours).
    pub fn webrtc_config(&self) -> switchboard_webrtc::WebrtcConfig {
        switchboard_webrtc::WebrtcConfig {
            bind_ip: self.sip_addr.ip(),
            advertised_ip: self.advertised_ip(),
            port_min: self.webrtc.port_min,
            port_max: self.webrtc.port_max,
            consent_timeout: Duration::from_millis(self.webrtc.consent_timeout_ms),
            max_legs: self.webrtc.max_legs,
            max_sdp_bytes: self.webrtc.max_sdp_bytes,
        }
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
        if let Some(addr) = self.ws_addr {
            let ws = &self.ws;
            if ws.cert_file.is_some() != ws.key_file.is_some() {
                return Err("gateway.ws.cert_file and gateway.ws.key_file: both or neither".into());
            }
            if !ws.secure() && !addr.ip().is_loopback() && !ws.allow_plain {
                return Err(format!(
                    "gateway.ws_addr {addr}: plain WebSocket off loopback; set gateway.ws.cert_file \
                     and key_file (WSS), or gateway.ws.allow_plain behind a TLS proxy"
                ));
            }
            if ws.max_connections == 0 || ws.max_connections_per_ip == 0 {
                return Err("gateway.ws.max_connections(_per_ip): at least 1".into());
            }
            if !(1_024..=crate::framing::MAX_MESSAGE).contains(&ws.max_message_bytes) {
                return Err("gateway.ws.max_message_bytes: 1024 to 65536".into());
            }
            if ws.ping_interval_s == 0 || ws.idle_timeout_s <= ws.ping_interval_s {
                return Err(
                    "gateway.ws.ping_interval_s: at least 1 and below idle_timeout_s".into(),
                );
            }
            if !(100..=60_000).contains(&ws.handshake_timeout_ms) || ws.max_messages_per_s == 0 {
                return Err(
                    "gateway.ws.handshake_timeout_ms: 100 to 60000; max_messages_per_s: at least 1"
                        .into(),
                );
            }
        }
        let w = &self.webrtc;
        if w.port_min < 1024 || w.port_min > w.port_max {
            return Err("gateway.webrtc.port_min..port_max: a range above 1023".into());
        }
        if w.port_max >= self.rtp_port_min && w.port_min <= self.rtp_port_max {
            return Err("gateway.webrtc.port_min..port_max: must not overlap the RTP range".into());
        }
        if !(1_000..=300_000).contains(&w.consent_timeout_ms) {
            return Err("gateway.webrtc.consent_timeout_ms: 1000 to 300000".into());
        }
        if w.max_legs == 0 {
            return Err("gateway.webrtc.max_legs: at least 1".into());
        }
        if !(1_024..=65_536).contains(&w.max_sdp_bytes) {
            return Err("gateway.webrtc.max_sdp_bytes: 1024 to 65536".into());
        }
        if self.ws_addr.is_some() {
            // Browsers are served: their media endpoint must be usable.
            self.webrtc_config()
                .validate()
                .map_err(|e| format!("gateway.webrtc: {e}"))?;
        }
        if !(1_500..=120_000).contains(&self.node_ttl_ms) {
            return Err("gateway.node_ttl_ms: 1500 to 120000".into());
        }
        if self.capacity == 0 {
            return Err("gateway.capacity: at least 1".into());
        }
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return Err("gateway.node_id: 1 to 64 characters".into());
        }
        for (i, t) in self.inbound_trunks.iter().enumerate() {
            if t.realm.is_empty() || t.username.is_empty() || t.password.len() < 8 {
                return Err(format!(
                    "gateway.inbound_trunks[{i}]: realm and username set, password at least 8 characters"
                ));
            }
            if self.inbound_trunks[..i]
                .iter()
                .any(|o| o.realm.eq_ignore_ascii_case(&t.realm))
            {
                return Err(format!(
                    "gateway.inbound_trunks[{i}].realm: {} is used twice",
                    t.realm
                ));
            }
        }
        self.recordings.validate()
    }
}
