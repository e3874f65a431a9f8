//! SIP over WebSocket (RFC 7118): the listener browser softphones (JsSIP, SIP.js) connect to.
//!
//! rsipstack 0.7.14 has a WebSocket transport behind its `websocket` feature, but it does not
//! fit an edge: its listener serves only plain WS (no server-side TLS), echoes `sip` when the
//! offered protocols merely contain those letters and accepts clients that offer none, has no
//! connection, size, rate or handshake limits, and hands every message straight to the parser.
//! So the feature stays off and this module owns the sockets (tokio-tungstenite, rustls for
//! WSS) and feeds rsipstack through its in-memory channel connections, one per WebSocket: the
//! stack sees a reliable connection keyed by the peer's address (typed WS or WSS), answers
//! over it, and reuses it for every request of a dialog formed on it (RFC 5626 flow affinity).
//!
//! What reaches the stack passed the same checks as a UDP datagram: the ban list (at accept
//! and on every message), [`crate::inspect::inspect_message`] (framing, a trial parse, RFC
//! 3261 8.2; broken requests get their 4xx back on the connection), plus WebSocket limits:
//! connections in all and per source IP, a handshake deadline (TLS and HTTP upgrade), the
//! message size, messages per second, broken messages per connection, and a ping whose
//! silence closes the connection. A handshake that does not offer the `sip` subprotocol gets
//! HTTP 400 with the reason.
//!
//! When a connection closes, the node drops the registrations made over it and any call whose
//! agent leg rides on it ends ([`Flows`] hands each call a token that is cancelled then).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rsipstack::sip::{SipMessage, Transport};
use rsipstack::transport::channel::ChannelConnection;
use rsipstack::transport::{SipConnection, TransportEvent};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode as HttpStatus};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WsSettings;
use crate::inspect::{Inspection, inspect_message};
use crate::location::flow_addr;
use crate::node::{Gateway, now_ms};
use crate::{GatewayError, framing};

/// The WebSocket subprotocol of SIP (RFC 7118 section 4.1).
pub const SUBPROTOCOL: &str = "sip";
/// A send that the peer does not take within this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages the stack may queue towards one connection.
const OUTGOING_QUEUE: usize = 64;

/// Whether the `Sec-WebSocket-Protocol` values offer `sip` (a comma-separated token list;
/// tokens compare exactly, RFC 6455 section 4.1).
pub fn offers_sip<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// A token bucket: `rate` messages per second, bursts of twice that. Sans-IO (time in ms).
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl RateLimit {
    pub fn new(per_s: u32, now_ms: u64) -> Self {
        let rate = f64::from(per_s.max(1));
        Self {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last_ms: now_ms,
        }
    }

    /// Takes one token; `false` when the bucket is empty.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = now_ms.max(self.last_ms);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Open connections, in all and per source IP.
#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Connection limits; an admitted connection holds a [`ConnPermit`] until it ends.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A place for a connection from `ip`, or `None` when either limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let mut c = self.counts.lock().ok()?;
        let here = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= self.max_total || here >= self.max_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, here + 1);
        Some(ConnPermit {
            limits: self.clone(),
            ip,
        })
    }

    /// Open connections (in all).
    pub fn open(&self) -> u32 {
        self.counts.lock().map_or(0, |c| c.total)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Ok(mut c) = self.limits.counts.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// A browser's binding names a WebSocket connection this node no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the WebSocket connection is gone")]
pub struct FlowGone;

/// The node's live WebSocket connections by peer address, each with the token cancelled when
/// it closes (calls riding on it watch that token).
#[derive(Debug, Default)]
pub struct Flows {
    open: Mutex<HashMap<SocketAddr, CancellationToken>>,
}

impl Flows {
    fn insert(&self, peer: SocketAddr, closed: CancellationToken) {
        if let Ok(mut m) = self.open.lock() {
            m.insert(peer, closed);
        }
    }

    fn remove(&self, peer: SocketAddr) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&peer);
        }
    }

    /// The closing signal of the open connection from `peer`; `None` when there is none.
    pub fn closed_signal(&self, peer: SocketAddr) -> Option<CancellationToken> {
        self.open.lock().ok()?.get(&peer).cloned()
    }

    /// Open connections on this node.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bound WebSocket listener, not yet serving.
pub struct WsListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    pub addr: SocketAddr,
}

impl std::fmt::Debug for WsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsListener")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Binds the listener (and reads the TLS files: a bad file is a start error).
pub async fn bind(addr: SocketAddr, settings: &WsSettings) -> Result<WsListener, GatewayError> {
    let tls = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok(WsListener {
        listener,
        tls,
        addr,
    })
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |p: &Path, e: &dyn std::fmt::Display| {
        GatewayError::Config(format!("gateway.ws: {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `cancel`.
pub fn serve(gw: Arc<Gateway>, listener: WsListener, cancel: CancellationToken) {
    let settings = gw.cfg.ws.clone();
    let limits = ConnLimits::new(settings.max_connections, settings.max_connections_per_ip);
    let tls = listener.tls;
    let tcp = listener.listener;
    let transport = if tls.is_some() {
        Transport::Wss
    } else {
        Transport::Ws
    };
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = tcp.accept() => a,
                _ = cancel.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accepting a WebSocket connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if gw.guard.check(peer.ip(), now_ms()) != switchboard_sip_guard::Verdict::Allow {
                gw.counters.banned.inc();
                continue;
            }
            let Some(permit) = limits.admit(peer.ip()) else {
                refused(&gw, "ws_limit");
                tracing::debug!(%peer, "WebSocket connection over the limits");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let span = tracing::info_span!("ws", %peer);
            let conn = Connection {
                gw: gw.clone(),
                peer,
                transport,
                settings: settings.clone(),
                cancel: cancel.child_token(),
                _permit: permit,
            };
            tokio::spawn(conn.run(stream, tls.clone()).instrument(span));
        }
    });
}

fn refused(gw: &Gateway, reason: &str) {
    gw.metrics.edge_refused.with_label_values(&[reason]).inc();
}

/// The handshake callback: echo `sip`, refuse a client that does not offer it.
#[allow(clippy::result_large_err)]
fn check_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let values = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok());
    if !offers_sip(values) {
        let mut refusal = ErrorResponse::new(Some(
            "SIP over WebSocket needs the 'sip' subprotocol (RFC 7118)".into(),
        ));
        *refusal.status_mut() = HttpStatus::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

struct Connection {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    transport: Transport,
    settings: WsSettings,
    cancel: CancellationToken,
    _permit: ConnPermit,
}

/// Why a connection ended (for logs and the close frame).
#[derive(Debug, Clone, Copy)]
enum Ending {
    Peer,
    Idle,
    Shutdown,
    Rate,
    Malformed,
    Banned,
    TooLarge,
    Protocol,
    Slow,
}

impl Ending {
    fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Ending::Peer | Ending::Protocol | Ending::Slow => return None,
            Ending::Idle => (CloseCode::Away, "idle"),
            Ending::Shutdown => (CloseCode::Away, "shutting down"),
            Ending::Rate => (CloseCode::Policy, "too many messages"),
            Ending::Malformed => (CloseCode::Policy, "too many broken SIP messages"),
            Ending::Banned => (CloseCode::Policy, "banned"),
            Ending::TooLarge => (CloseCode::Size, "message too large"),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

impl Connection {
    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.settings.max_message_bytes))
            .max_frame_size(Some(self.settings.max_message_bytes))
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(framing::MAX_MESSAGE * 4)
    }

    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let deadline = Duration::from_millis(self.settings.handshake_timeout_ms);
        let config = Some(self.ws_config());
        match tls {
            Some(acceptor) => {
                let handshake = async {
                    let tls = acceptor.accept(stream).await.map_err(WsError::Io)?;
                    tokio_tungstenite::accept_hdr_async_with_config(tls, check_subprotocol, config)
                        .await
                };
                match tokio::time::timeout(deadline, handshake).await {
                    Ok(Ok(ws)) => self.serve(ws).await,
                    Ok(Err(e)) => self.handshake_failed(&e.to_string()),
                    Err(_) => self.handshake_failed("timed out"),
                }
            }
            None => {
                let handshake = tokio_tungstenite::accept_hdr_async_with_config(
                    stream,
                    check_subprotocol,
                    config,
                );
                match tokio::time::timeout(deadline, handshake).await {
                    Ok(Ok(ws)) => self.serve(ws).await,
                    Ok(Err(e)) => self.handshake_failed(&e.to_string()),
                    Err(_) => self.handshake_failed("timed out"),
                }
            }
        }
    }

    fn handshake_failed(&self, why: &str) {
        refused(&self.gw, "ws_handshake");
        tracing::debug!(why, "WebSocket handshake failed");
    }

    /// Bridges one upgraded connection and rsipstack until either side ends it, then lets the
    /// node forget what rode on it.
    async fn serve<S>(self, mut ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = flow_addr(self.peer, self.transport);
        let closed = CancellationToken::new();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::channel(OUTGOING_QUEUE);
        let channel = match ChannelConnection::create_connection_bounded(
            in_rx,
            out_tx,
            addr.clone(),
            Some(closed.clone()),
        )
        .await
        {
            Ok(c) => SipConnection::Channel(c),
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket channel connection");
                return;
            }
        };
        self.gw.ws_flows.insert(self.peer, closed.clone());
        self.gw
            .endpoint
            .transport_layer
            .add_connection(channel.clone());
        self.gw.metrics.ws_connections.inc();
        tracing::info!(transport = %self.transport, "WebSocket connection open");

        let mut rate = RateLimit::new(self.settings.max_messages_per_s, now_ms());
        let mut malformed = 0u32;
        let mut last_heard = Instant::now();
        let idle = Duration::from_secs(self.settings.idle_timeout_s);
        let mut ping = tokio::time::interval(Duration::from_secs(self.settings.ping_interval_s));
        ping.tick().await;
        let ending = loop {
            tokio::select! {
                msg = ws.next() => {
                    last_heard = Instant::now();
                    let bytes = match msg {
                        None | Some(Ok(Message::Close(_))) => break Ending::Peer,
                        Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                        Some(Ok(Message::Binary(b))) => b.to_vec(),
                        Some(Ok(_)) => continue,
                        Some(Err(WsError::Capacity(_))) => {
                            refused(&self.gw, "ws_too_large");
                            break Ending::TooLarge;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "WebSocket read");
                            break Ending::Protocol;
                        }
                    };
                    let now = now_ms();
                    if !rate.allow(now) {
                        refused(&self.gw, "ws_rate");
                        break Ending::Rate;
                    }
                    if self.gw.guard.check(self.peer.ip(), now) != switchboard_sip_guard::Verdict::Allow {
                        self.gw.counters.banned.inc();
                        break Ending::Banned;
                    }
                    match self.incoming(&bytes, &channel, &addr, &in_tx) {
                        Incoming::Passed => {}
                        Incoming::KeepAlive => {
                            if self.send(&mut ws, Message::text("\r\n")).await.is_err() {
                                break Ending::Slow;
                            }
                        }
                        Incoming::Refused(reply) => {
                            malformed += 1;
                            if malformed > self.settings.max_malformed {
                                break Ending::Malformed;
                            }
                            if let Some(reply) = reply
                                && self.send(&mut ws, Message::text(reply)).await.is_err()
                            {
                                break Ending::Slow;
                            }
                        }
                    }
                }
                out = out_rx.recv() => {
                    let Some(TransportEvent::Incoming(msg, _, _)) = out else { continue };
                    if self.send(&mut ws, Message::text(msg.to_string())).await.is_err() {
                        break Ending::Slow;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle {
                        break Ending::Idle;
                    }
                    if self.send(&mut ws, Message::Ping(Default::default())).await.is_err() {
                        break Ending::Slow;
                    }
                }
                _ = self.cancel.cancelled() => break Ending::Shutdown,
            }
        };
        if let Some(frame) = ending.close_frame() {
            // The closing handshake (RFC 6455 7.1.1): after our Close, read until the peer's
            // (or its end) before dropping the socket. Closing at once while the peer still
            // sends (a pong, a message) makes our kernel answer with a reset, and the peer
            // may lose the Close frame and its reason.
            // Off this task, so the connection's slot (per-IP and total caps) frees now.
            tokio::spawn(tokio::time::timeout(Duration::from_secs(1), async move {
                ws.close(Some(frame)).await?;
                while let Some(Ok(_)) = ws.next().await {}
                Ok::<_, WsError>(())
            }));
        }
        tracing::info!(?ending, "WebSocket connection closed");
        // The stack's serve loop for the channel ends with `in_tx` and retires the connection;
        // the token tells calls on it.
        closed.cancel();
        drop(in_tx);
        self.gw.ws_flows.remove(self.peer);
        self.gw.metrics.ws_connections.dec();
        self.gw.ws_flow_closed(self.peer).await;
    }

    async fn send<S>(&self, ws: &mut WebSocketStream<S>, msg: Message) -> Result<(), ()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket write");
                Err(())
            }
            Err(_) => {
                tracing::info!("WebSocket peer does not read: closing");
                Err(())
            }
        }
    }

    /// One received message: checked like a datagram, then handed to the stack.
    fn incoming(
        &self,
        bytes: &[u8],
        channel: &SipConnection,
        addr: &rsipstack::transport::SipAddr,
        in_tx: &mpsc::UnboundedSender<TransportEvent>,
    ) -> Incoming {
        // RFC 5626 keep-alive: a double CRLF is answered with a single one.
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return if bytes == b"\r\n\r\n" {
                Incoming::KeepAlive
            } else {
                Incoming::Passed
            };
        }
        let (status, reason, reply) =
            match inspect_message(bytes, self.peer, self.settings.max_message_bytes) {
                Inspection::Pass(framed) => {
                    let parsed = SipMessage::try_from(framed.as_slice())
                        .map_err(|_| ())
                        .and_then(|m| {
                            SipConnection::update_msg_received(m, self.peer, self.transport)
                                .map_err(|_| ())
                        });
                    match parsed {
                        Ok(msg) => {
                            let event =
                                TransportEvent::Incoming(msg, channel.clone(), addr.clone());
                            let _ = in_tx.send(event);
                            return Incoming::Passed;
                        }
                        Err(_) => (0, "unparsable".into(), None),
                    }
                }
                Inspection::Reply {
                    status,
                    reason,
                    response,
                } => (status, reason, Some(response)),
                Inspection::Drop(why) => (0, why.into(), None),
            };
        self.gw.counters.refused.inc();
        tracing::debug!(status, %reason, "refused SIP message over WebSocket");
        Incoming::Refused(reply.map(|r| String::from_utf8_lossy(&r).into_owned()))
    }
}

/// What became of one received message.
enum Incoming {
    Passed,
    KeepAlive,
    /// Refused, with the error response to send back (if it can be answered).
    Refused(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_offered_sip_token_counts() {
        assert!(offers_sip(["sip"]));
        assert!(offers_sip(["chat, sip"]));
        assert!(offers_sip(["chat", " sip "]));
        assert!(!offers_sip(["sips"]), "tokens compare exactly");
        assert!(!offers_sip(["xsip, sip2"]));
        assert!(!offers_sip(Vec::<&str>::new()));
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let mut r = RateLimit::new(5, 0);
        assert_eq!((0..20).filter(|_| r.allow(0)).count(), 10, "burst of 2x");
        assert!(!r.allow(100), "half a token after 100 ms");
        assert!(r.allow(200));
        assert_eq!(
            (0..20).filter(|_| r.allow(10_200)).count(),
            10,
            "refilled, capped"
        );
    }

    #[test]
    fn connection_limits_count_in_all_and_per_ip() {
        let limits = ConnLimits::new(3, 2);
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let a1 = limits.admit(a);
        let a2 = limits.admit(a);
        assert!(a1.is_some() && a2.is_some());
        assert!(limits.admit(a).is_none(), "per IP");
        let b1 = limits.admit(b);
        assert!(b1.is_some());
        assert!(limits.admit(b).is_none(), "in all");
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(b).is_some(), "a freed place is reused");
    }
}
