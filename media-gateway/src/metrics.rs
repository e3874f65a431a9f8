//! What ops see of a gateway node in Prometheus: SIP requests by method, refusals at the edge,
//! calls by direction and outcome, calls in progress, registrations and failed authentications,
//! and the WebRTC legs toward browsers (alive, started by codec, consent losses, DTLS failures,
//! offers refused by reason: the `switchboard_webrtc` endpoint counts them, a collector reads
//! its snapshot at each scrape).
//!
//! The collectors live in their own [`Registry`] so `switchboard up` can add them to the api's
//! `/metrics` and `switchboard gateway` can serve them on `gateway.metrics_addr`.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The gateway's collectors.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// New server transactions by method.
    pub sip_requests: IntCounterVec,
    /// Datagrams (and WebSocket connections and messages) refused before the parser, by reason
    /// (`banned`, `malformed`; `ws_limit`, `ws_handshake`, `ws_rate`, `ws_too_large`).
    pub edge_refused: IntCounterVec,
    /// Finished calls by direction and CDR cause.
    pub calls: IntCounterVec,
    /// Calls in progress by direction.
    pub active_calls: IntGaugeVec,
    /// Successful REGISTERs (refreshes included).
    pub registrations: IntCounter,
    /// Digest verifications that failed (wrong password, unknown or locked user).
    pub auth_failures: IntCounter,
    /// Open SIP-over-WebSocket connections.
    pub ws_connections: IntGauge,
    /// The WebRTC endpoint's counters (with `gateway.ws_addr`).
    webrtc: Option<WebrtcCollector>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let sip_requests = counter_vec(
            "switchboard_gateway_sip_requests_total",
            "SIP requests received (new server transactions) by method",
            &["method"],
        );
        let edge_refused = counter_vec(
            "switchboard_gateway_edge_refused_total",
            "SIP datagrams refused before parsing, by reason",
            &["reason"],
        );
        let calls = counter_vec(
            "switchboard_gateway_calls_total",
            "Finished calls by direction and cause",
            &["direction", "cause"],
        );
        let active_calls = IntGaugeVec::new(
            Opts::new(
                "switchboard_gateway_active_calls",
                "Calls in progress by direction",
            ),
            &["direction"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let registrations = IntCounter::new(
            "switchboard_gateway_registrations_total",
            "Successful REGISTERs",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let auth_failures = IntCounter::new(
            "switchboard_gateway_auth_failures_total",
            "Failed digest authentications",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let ws_connections = IntGauge::new(
            "switchboard_gateway_ws_connections",
            "Open SIP-over-WebSocket connections",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        // Registration only fails for duplicate names, which these are not.
        let _ = registry.register(Box::new(sip_requests.clone()));
        let _ = registry.register(Box::new(edge_refused.clone()));
        let _ = registry.register(Box::new(calls.clone()));
        let _ = registry.register(Box::new(active_calls.clone()));
        let _ = registry.register(Box::new(registrations.clone()));
        let _ = registry.register(Box::new(auth_failures.clone()));
        let _ = registry.register(Box::new(ws_connections.clone()));
        Self {
            registry,
            sip_requests,
            edge_refused,
            calls,
            active_calls,
            registrations,
            auth_failures,
            ws_connections,
            webrtc: None,
        }
    }

    /// Adds the WebRTC endpoint's counters (none: no WebRTC metrics).
    pub fn with_webrtc(mut self, endpoint: Option<Arc<switchboard_webrtc::Endpoint>>) -> Self {
        if let Some(endpoint) = endpoint {
            let collector = WebrtcCollector::new(endpoint);
            let _ = self.registry.register(Box::new(collector.clone()));
            self.webrtc = Some(collector);
        }
        self
    }

    /// Adds these collectors to another registry (the api's, in `switchboard up`).
    pub fn register_into(&self, other: &Registry) -> Result<(), prometheus::Error> {
        other.register(Box::new(self.sip_requests.clone()))?;
        other.register(Box::new(self.edge_refused.clone()))?;
        other.register(Box::new(self.calls.clone()))?;
        other.register(Box::new(self.active_calls.clone()))?;
        other.register(Box::new(self.registrations.clone()))?;
        other.register(Box::new(self.ws_connections.clone()))?;
        if let Some(webrtc) = &self.webrtc {
            other.register(Box::new(webrtc.clone()))?;
        }
        other.register(Box::new(self.auth_failures.clone()))
    }

    /// The text exposition of this node's metrics.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Counts a call in progress for its lifetime.
#[derive(Debug)]
pub struct ActiveCall {
    gauge: prometheus::IntGauge,
}

impl ActiveCall {
    pub fn start(metrics: &GatewayMetrics, direction: &str) -> Self {
        let gauge = metrics.active_calls.with_label_values(&[direction]);
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Reads a WebRTC endpoint's [`switchboard_webrtc::EndpointStats`] at each scrape.
#[derive(Debug, Clone)]
struct WebrtcCollector {
    endpoint: Arc<switchboard_webrtc::Endpoint>,
    descs: Vec<Desc>,
}

/// The WebRTC metrics, fresh (zero), with their values unset.
struct WebrtcMetrics {
    legs: IntGauge,
    started: IntCounterVec,
    consent_lost: IntCounter,
    dtls_failures: IntCounter,
    refused: IntCounterVec,
}

impl WebrtcMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help)
                .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
        };
        Self {
            legs: IntGauge::new(
                "switchboard_gateway_webrtc_legs",
                "WebRTC legs alive (offered, negotiated or running)",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            started: counter_vec(
                "switchboard_gateway_webrtc_legs_started_total",
                "WebRTC legs started, by the codec toward the browser (opus: transcoded)",
                &["codec"],
            ),
            consent_lost: counter(
                "switchboard_gateway_webrtc_consent_lost_total",
                "WebRTC legs ended because the browser's consent checks stopped (RFC 7675)",
            ),
            dtls_failures: counter(
                "switchboard_gateway_webrtc_dtls_failures_total",
                "WebRTC legs ended by a DTLS failure (handshake or fingerprint mismatch)",
            ),
            refused: counter_vec(
                "switchboard_gateway_webrtc_offers_refused_total",
                "Browser offers and re-offers refused (488), or legs not made (no port, too \
                 many legs), by reason",
                &["reason"],
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 5] {
        [
            &self.legs,
            &self.started,
            &self.consent_lost,
            &self.dtls_failures,
            &self.refused,
        ]
    }
}

impl WebrtcCollector {
    fn new(endpoint: Arc<switchboard_webrtc::Endpoint>) -> Self {
        let descs = WebrtcMetrics::new()
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Self { endpoint, descs }
    }
}

impl Collector for WebrtcCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.endpoint.stats();
        let m = WebrtcMetrics::new();
        m.legs
            .set(i64::try_from(stats.live_legs).unwrap_or(i64::MAX));
        for (codec, n) in &stats.started {
            m.started.with_label_values(&[codec.name()]).inc_by(*n);
        }
        m.consent_lost.inc_by(stats.consent_lost);
        m.dtls_failures.inc_by(stats.dtls_failed);
        for (reason, n) in &stats.refused {
            m.refused.with_label_values(&[*reason]).inc_by(*n);
        }
        m.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}
