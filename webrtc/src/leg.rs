//! The leg: str0m's `Rtc` driven by one tokio task that owns the browser-facing socket and the
//! relay-facing loopback socket. The IO is here; every decision it acts on is in `sdp`,
//! `consent` and `bridge`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::CryptoProvider;
use str0m::format::{Codec as RtcCodec, CodecConfig, FormatParams};
use str0m::media::{Direction as RtcDirection, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use switchboard_media::g711::Law;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::WebrtcError;
use crate::bridge::{ToBrowser, ToRelay, relay_law};
use crate::consent::{Consent, is_binding_success};
use crate::counters::{Counters, EndpointStats};
use crate::sdp::{self, Choice, Codec, Direction};

/// Payload types we use in our own offers.
const PT_OPUS: u8 = 111;
const PT_TELE_8K: u8 = 126;
const PT_TELE_48K: u8 = 110;

/// Where legs bind, what they advertise, and their limits.
#[derive(Debug, Clone)]
pub struct WebrtcConfig {
    /// Address the browser-facing sockets bind to.
    pub bind_ip: IpAddr,
    /// The host candidate's address (what browsers send to).
    pub advertised_ip: IpAddr,
    /// Browser-facing UDP port range, inclusive (one port per leg).
    pub port_min: u16,
    pub port_max: u16,
    /// RFC 7675: a leg with no valid consent check for this long is dead.
    pub consent_timeout: Duration,
    /// Legs running at once, at most.
    pub max_legs: usize,
    /// Largest SDP accepted.
    pub max_sdp_bytes: usize,
}

impl WebrtcConfig {
    /// Checks the values before anything binds.
    pub fn validate(&self) -> Result<(), WebrtcError> {
        let bad = |m: &str| Err(WebrtcError::Config(m.to_owned()));
        if self.port_min == 0 || self.port_min > self.port_max {
            return bad("port_min must be 1..=port_max");
        }
        if self.advertised_ip.is_unspecified() {
            return bad("advertised_ip must be an address browsers can reach");
        }
        if self.consent_timeout < Duration::from_secs(1) {
            return bad("consent_timeout must be at least 1 s");
        }
        if self.max_legs == 0 {
            return bad("max_legs must be at least 1");
        }
        if !(512..=65536).contains(&self.max_sdp_bytes) {
            return bad("max_sdp_bytes must be 512..=65536");
        }
        Ok(())
    }
}

/// Which side of a WebRTC session the endpoint plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The gateway: ICE-lite, answers consent checks (and times out without them), DTLS
    /// passive when answering, codec choice by the carrier leg.
    Gateway,
    /// A browser, for tests and benchmarks: full ICE (controlling), DTLS active, offering or
    /// accepting these codecs in this order.
    Browser { codecs: Vec<Codec> },
}

/// Something that happened to a running leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE and DTLS are up: SRTP flows.
    Connected,
    /// The leg ended by itself; its task is gone.
    Closed(CloseReason),
}

/// Why a leg ended by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// RFC 7675: no valid consent check within the timeout.
    ConsentLost,
    /// The peer closed DTLS.
    PeerClosed,
    /// DTLS failed: the handshake, or the peer's certificate did not match its SDP
    /// fingerprint.
    DtlsFailed(String),
    /// str0m or a socket failed.
    Failed(String),
}

impl CloseReason {
    /// The reason for a str0m error. A DTLS error is a DTLS failure; so is an error about the
    /// remote SDP before the leg connected: str0m checks the certificate against the SDP's
    /// fingerprint at the end of the handshake and reports a mismatch that way.
    fn of(e: &str0m::RtcError, connected: bool) -> Self {
        match e {
            str0m::RtcError::Dtls(_) => CloseReason::DtlsFailed(e.to_string()),
            str0m::RtcError::RemoteSdp(_) if !connected => CloseReason::DtlsFailed(e.to_string()),
            _ => CloseReason::Failed(e.to_string()),
        }
    }
}

/// Counters of a leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub connected: bool,
    /// Valid consent checks answered (gateway role).
    pub consent_checks: u64,
    pub to_relay: u64,
    pub to_relay_dropped: u64,
    pub to_browser: u64,
    pub to_browser_dropped: u64,
}

/// Counts running legs; one per leg, released when the leg (or its task) is dropped.
#[derive(Debug)]
struct LegPermit(Arc<AtomicUsize>);

impl Drop for LegPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Makes legs.
pub struct Endpoint {
    cfg: WebrtcConfig,
    role: Role,
    crypto: Arc<CryptoProvider>,
    live: Arc<AtomicUsize>,
    cursor: Mutex<u16>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("cfg", &self.cfg)
            .field("role", &self.role)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// A leg whose offer went out and whose answer we wait for.
#[derive(Debug)]
pub struct OfferedLeg {
    parts: Parts,
    pending: SdpPendingOffer,
}

/// A negotiated leg, not yet running.
#[derive(Debug)]
pub struct Leg {
    parts: Parts,
    choice: Choice,
}

struct Parts {
    rtc: Rtc,
    browser: std::net::UdpSocket,
    /// The host candidate's address (the destination of what the browser sends).
    candidate: SocketAddr,
    relay: std::net::UdpSocket,
    relay_side: SocketAddr,
    carrier: Law,
    gateway: bool,
    consent_timeout: Duration,
    max_sdp_bytes: usize,
    mid: Option<Mid>,
    permit: LegPermit,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("candidate", &self.candidate)
            .field("relay_side", &self.relay_side)
            .finish_non_exhaustive()
    }
}

fn codec_of_law(law: Law) -> Codec {
    match law {
        Law::Ulaw => Codec::Pcmu,
        Law::Alaw => Codec::Pcma,
    }
}

/// Adds `codec` at payload type `pt` to str0m's codec list.
fn add_codec(c: &mut CodecConfig, codec: Codec, pt: u8) {
    match codec {
        Codec::Pcmu | Codec::Pcma => {
            let (rc, _) = match codec {
                Codec::Pcmu => (RtcCodec::PCMU, 0),
                _ => (RtcCodec::PCMA, 8),
            };
            c.add_config(
                pt.into(),
                None,
                rc,
                Frequency::EIGHT_KHZ,
                None,
                FormatParams::default(),
            );
        }
        Codec::Opus => c.add_config(
            pt.into(),
            None,
            RtcCodec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                ..Default::default()
            },
        ),
    }
}

fn add_tele(c: &mut CodecConfig, pt: u8, rate: Frequency) {
    c.add_config(
        pt.into(),
        None,
        RtcCodec::Tele,
        rate,
        None,
        FormatParams::parse_line("0-16"),
    );
}

fn static_pt(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::Opus => PT_OPUS,
    }
}

fn rtc_direction(d: Direction) -> RtcDirection {
    match d {
        Direction::SendRecv => RtcDirection::SendRecv,
        Direction::SendOnly => RtcDirection::SendOnly,
        Direction::RecvOnly => RtcDirection::RecvOnly,
        Direction::Inactive => RtcDirection::Inactive,
    }
}

impl Endpoint {
    pub fn new(cfg: WebrtcConfig, role: Role) -> Result<Arc<Self>, WebrtcError> {
        cfg.validate()?;
        Ok(Arc::new(Self {
            cursor: Mutex::new(cfg.port_min),
            cfg,
            role,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            live: Arc::new(AtomicUsize::new(0)),
            counters: Arc::default(),
        }))
    }

    /// What this endpoint's legs did so far (for metrics).
    pub fn stats(&self) -> EndpointStats {
        self.counters.snapshot(self.legs() as u64)
    }

    pub fn config(&self) -> &WebrtcConfig {
        &self.cfg
    }

    /// Legs alive (made and not yet dropped).
    pub fn legs(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn permit(&self) -> Result<LegPermit, WebrtcError> {
        let taken = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cfg.max_legs).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(LegPermit(self.live.clone())),
            Err(_) => Err(WebrtcError::TooManyLegs),
        }
    }

    /// Binds a browser-facing port from the range, starting after the last one handed out.
    fn bind_port(&self) -> Result<std::net::UdpSocket, WebrtcError> {
        let (min, max) = (self.cfg.port_min, self.cfg.port_max);
        let span = u32::from(max - min) + 1;
        let mut cursor = self.cursor.lock().map_err(|_| WebrtcError::NoPorts)?;
        for _ in 0..span {
            let port = *cursor;
            *cursor = if port >= max { min } else { port + 1 };
            if let Ok(s) = std::net::UdpSocket::bind((self.cfg.bind_ip, port)) {
                return Ok(s);
            }
        }
        Err(WebrtcError::NoPorts)
    }

    fn parts(
        &self,
        carrier: Law,
        codecs: impl FnOnce(&mut CodecConfig),
    ) -> Result<Parts, WebrtcError> {
        let permit = self.permit()?;
        let browser = self.bind_port()?;
        let candidate = SocketAddr::new(self.cfg.advertised_ip, browser.local_addr()?.port());
        // The relay binds the advertised IP too: both ends on one local address.
        let relay = std::net::UdpSocket::bind((self.cfg.advertised_ip, 0))?;
        let relay_side = relay.local_addr()?;
        let gateway = self.role == Role::Gateway;
        let mut config = RtcConfig::new()
            .clear_codecs()
            .set_rtp_mode(true)
            .set_ice_lite(gateway)
            .set_crypto_provider(self.crypto.clone());
        codecs(config.codec_config());
        let mut rtc = config.build(Instant::now());
        let host =
            Candidate::host(candidate, "udp").map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(host);
        // Drain after the mutation (str0m's contract); nothing can be on the wire yet.
        while let Ok(out) = rtc.poll_output() {
            if matches!(out, Output::Timeout(_)) {
                break;
            }
        }
        Ok(Parts {
            rtc,
            browser,
            candidate,
            relay,
            relay_side,
            carrier,
            gateway,
            consent_timeout: self.cfg.consent_timeout,
            max_sdp_bytes: self.cfg.max_sdp_bytes,
            mid: None,
            permit,
            counters: self.counters.clone(),
        })
    }

    /// The codecs we offer, in order: the carrier's G.711 first (no transcoding with a
    /// browser that takes it), then Opus, then telephone-event at both clock rates. A browser
    /// role offers its own list.
    fn offer_codecs(&self, carrier: Law) -> Vec<Codec> {
        match &self.role {
            Role::Gateway => vec![codec_of_law(carrier), Codec::Opus],
            Role::Browser { codecs } => codecs.clone(),
        }
    }

    /// We offer (a call to the browser): `a=setup:actpass`, ICE-lite.
    pub fn offer(&self, carrier: Law) -> Result<(OfferedLeg, String), WebrtcError> {
        let codecs = self.offer_codecs(carrier);
        let mut parts = self.counters.refusal(self.parts(carrier, |c| {
            for codec in &codecs {
                add_codec(c, *codec, static_pt(*codec));
            }
            add_tele(c, PT_TELE_8K, Frequency::EIGHT_KHZ);
            add_tele(c, PT_TELE_48K, Frequency::FORTY_EIGHT_KHZ);
        }))?;
        let mut change = parts.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, RtcDirection::SendRecv, None, None, None);
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| WebrtcError::Rtc("no offer".into()))?;
        parts.mid = Some(mid);
        Ok((OfferedLeg { parts, pending }, offer.to_sdp_string()))
    }

    /// The browser offers (its own call): the offer is checked, the codec chosen (the
    /// carrier's G.711 if offered, else Opus), and answered `a=setup:passive`. A refusal is
    /// counted by its reason.
    pub fn answer(&self, offer: &[u8], carrier: Law) -> Result<(Leg, String), WebrtcError> {
        self.counters.refusal(self.answer_offer(offer, carrier))
    }

    fn answer_offer(&self, offer: &[u8], carrier: Law) -> Result<(Leg, String), WebrtcError> {
        match &self.role {
            Role::Gateway => {
                let checked =
                    sdp::check_offer(offer, self.cfg.max_sdp_bytes, codec_of_law(carrier))?;
                let choice = checked.choice;
                let mut parts = self.parts(carrier, |c| {
                    add_codec(c, choice.codec, choice.pt);
                    if let Some(pt) = choice.tele_8k {
                        add_tele(c, pt, Frequency::EIGHT_KHZ);
                    }
                    if let Some(pt) = choice.tele_48k {
                        add_tele(c, pt, Frequency::FORTY_EIGHT_KHZ);
                    }
                })?;
                let parsed = SdpOffer::from_sdp_string(&checked.sdp)
                    .map_err(|e| WebrtcError::Rtc(e.to_string()))?;
                let answer = parts.rtc.sdp_api().accept_offer(parsed)?;
                let answer = checked.complete_answer(&answer.to_sdp_string());
                Ok((Leg { parts, choice }, answer))
            }
            Role::Browser { codecs } => {
                let text = std::str::from_utf8(offer).map_err(|_| sdp::SdpRefusal::NotText)?;
                // Like Chromium, answer an actpass offer as the DTLS client.
                let text = text.replace("a=setup:actpass", "a=setup:passive");
                let mut parts = self.parts(carrier, |c| {
                    for codec in codecs {
                        add_codec(c, *codec, static_pt(*codec));
                    }
                    add_tele(c, PT_TELE_8K, Frequency::EIGHT_KHZ);
                    add_tele(c, PT_TELE_48K, Frequency::FORTY_EIGHT_KHZ);
                })?;
                let parsed = SdpOffer::from_sdp_string(&text)
                    .map_err(|e| WebrtcError::Rtc(e.to_string()))?;
                let answer = parts.rtc.sdp_api().accept_offer(parsed)?.to_sdp_string();
                let choice = sdp::check_answer(answer.as_bytes(), self.cfg.max_sdp_bytes)?;
                Ok((Leg { parts, choice }, answer))
            }
        }
    }
}

impl OfferedLeg {
    /// The browser's answer: which codec it sends, and str0m's DTLS/ICE parameters.
    pub fn accept_answer(mut self, answer: &[u8]) -> Result<Leg, WebrtcError> {
        let choice = sdp::check_answer(answer, self.parts.max_sdp_bytes)?;
        let text = std::str::from_utf8(answer).map_err(|_| sdp::SdpRefusal::NotText)?;
        let parsed =
            SdpAnswer::from_sdp_string(text).map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        self.parts
            .rtc
            .sdp_api()
            .accept_answer(self.pending, parsed)?;
        Ok(Leg {
            parts: self.parts,
            choice,
        })
    }

    /// The address the relay will send to, known before the answer.
    pub fn relay_side_addr(&self) -> SocketAddr {
        self.parts.relay_side
    }
}

impl Leg {
    /// The browser side's codec.
    pub fn codec(&self) -> Codec {
        self.choice.codec
    }

    /// The codec and telephone-event payload types in use toward the browser.
    pub fn choice(&self) -> Choice {
        self.choice
    }

    /// The relay-facing loopback address (set it as the relay agent leg's peer).
    pub fn relay_side_addr(&self) -> SocketAddr {
        self.parts.relay_side
    }

    /// The G.711 law spoken on the relay side (telephone-event on [`crate::RELAY_DTMF_PT`]).
    pub fn relay_law(&self) -> Law {
        relay_law(&self.choice, self.parts.carrier)
    }

    /// The browser-facing address (our host candidate).
    pub fn candidate_addr(&self) -> SocketAddr {
        self.parts.candidate
    }

    /// Runs the leg: media to and from `relay_peer` (the relay agent leg's address; an
    /// unspecified IP means loopback). Needs a tokio runtime.
    pub fn start(self, relay_peer: SocketAddr) -> Result<LegHandle, WebrtcError> {
        let relay_peer = if relay_peer.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), relay_peer.port())
        } else {
            relay_peer
        };
        let Parts {
            rtc,
            browser,
            candidate,
            relay,
            relay_side,
            carrier,
            gateway,
            consent_timeout,
            max_sdp_bytes,
            mid,
            permit,
            counters,
        } = self.parts;
        browser.set_nonblocking(true)?;
        relay.set_nonblocking(true)?;
        let browser = UdpSocket::from_std(browser)?;
        let relay = UdpSocket::from_std(relay)?;
        let (control_tx, control_rx) = mpsc::channel(8);
        let (event_tx, event_rx) = mpsc::channel(8);
        let now = Instant::now();
        let to_relay = ToRelay::new(self.choice, carrier)?;
        let to_browser = ToBrowser::new(self.choice, carrier)?;
        counters.started(self.choice.codec);
        let runner = Runner {
            rtc,
            browser,
            candidate,
            relay,
            relay_peer,
            carrier,
            max_sdp_bytes,
            mid,
            choice: self.choice,
            to_relay,
            to_browser,
            consent: gateway.then(|| Consent::new(now, consent_timeout)),
            seq: rand::random::<u16>().into(),
            pending: None,
            events: event_tx,
            stats: LegStats::default(),
            counters,
            _permit: permit,
        };
        tokio::spawn(runner.run(control_rx));
        Ok(LegHandle {
            control: LegControl {
                tx: control_tx.downgrade(),
            },
            _alive: control_tx,
            events: event_rx,
            relay_side,
            candidate,
            choice: self.choice,
        })
    }
}

enum Control {
    Reoffer(Vec<u8>, oneshot::Sender<Result<String, WebrtcError>>),
    OfferDirection(Direction, oneshot::Sender<Result<String, WebrtcError>>),
    AcceptAnswer(Vec<u8>, oneshot::Sender<Result<(), WebrtcError>>),
    Stats(oneshot::Sender<LegStats>),
}

/// A running leg. Dropping it stops the leg silently (no DTLS alert: the SIP BYE says it).
#[derive(Debug)]
pub struct LegHandle {
    control: LegControl,
    /// The only strong sender: the leg's task ends when the handle is dropped.
    _alive: mpsc::Sender<Control>,
    events: mpsc::Receiver<LegEvent>,
    relay_side: SocketAddr,
    candidate: SocketAddr,
    choice: Choice,
}

/// The control side of a running leg, cloneable (e.g. into a task waiting for a re-INVITE's
/// answer). It does not keep the leg alive.
#[derive(Debug, Clone)]
pub struct LegControl {
    tx: mpsc::WeakSender<Control>,
}

impl LegControl {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, WebrtcError> {
        let (tx, rx) = oneshot::channel();
        let control = self.tx.upgrade().ok_or(WebrtcError::Ended)?;
        control
            .send(make(tx))
            .await
            .map_err(|_| WebrtcError::Ended)?;
        drop(control);
        rx.await.map_err(|_| WebrtcError::Ended)
    }

    /// Answers the browser's re-offer (hold, unhold); the same checks as a first offer.
    pub async fn reoffer(&self, offer: &[u8]) -> Result<String, WebrtcError> {
        self.ask(|tx| Control::Reoffer(offer.to_vec(), tx)).await?
    }

    /// Our re-offer with the audio direction changed (we hold the browser: `SendOnly`).
    pub async fn offer_direction(&self, direction: Direction) -> Result<String, WebrtcError> {
        self.ask(|tx| Control::OfferDirection(direction, tx))
            .await?
    }

    /// The browser's answer to [`LegControl::offer_direction`].
    pub async fn accept_answer(&self, answer: &[u8]) -> Result<(), WebrtcError> {
        self.ask(|tx| Control::AcceptAnswer(answer.to_vec(), tx))
            .await?
    }

    pub async fn stats(&self) -> Result<LegStats, WebrtcError> {
        self.ask(Control::Stats).await
    }
}

impl LegHandle {
    pub fn relay_side_addr(&self) -> SocketAddr {
        self.relay_side
    }

    pub fn candidate_addr(&self) -> SocketAddr {
        self.candidate
    }

    pub fn codec(&self) -> Codec {
        self.choice.codec
    }

    /// The leg's control (re-offers, stats), cloneable.
    pub fn control(&self) -> &LegControl {
        &self.control
    }

    pub async fn reoffer(&self, offer: &[u8]) -> Result<String, WebrtcError> {
        self.control.reoffer(offer).await
    }

    pub async fn offer_direction(&self, direction: Direction) -> Result<String, WebrtcError> {
        self.control.offer_direction(direction).await
    }

    pub async fn accept_answer(&self, answer: &[u8]) -> Result<(), WebrtcError> {
        self.control.accept_answer(answer).await
    }

    pub async fn stats(&self) -> Result<LegStats, WebrtcError> {
        self.control.stats().await
    }

    /// The next event; `None` once the leg's task is gone.
    pub async fn next_event(&mut self) -> Option<LegEvent> {
        self.events.recv().await
    }
}

struct Runner {
    rtc: Rtc,
    browser: UdpSocket,
    candidate: SocketAddr,
    relay: UdpSocket,
    relay_peer: SocketAddr,
    carrier: Law,
    max_sdp_bytes: usize,
    mid: Option<Mid>,
    choice: Choice,
    to_relay: ToRelay,
    to_browser: ToBrowser,
    consent: Option<Consent>,
    /// Our next RTP sequence number toward the browser (extended; str0m keeps the ROC).
    seq: u64,
    pending: Option<SdpPendingOffer>,
    events: mpsc::Sender<LegEvent>,
    stats: LegStats,
    counters: Arc<Counters>,
    _permit: LegPermit,
}

impl Runner {
    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let mut from_browser = vec![0u8; 2048];
        let mut from_relay = vec![0u8; 2048];
        let mut out = Vec::with_capacity(2048);
        loop {
            let next = match self.drain(&mut out).await {
                Ok(t) => t,
                Err(reason) => return self.close(reason),
            };
            let wake = match self.consent {
                Some(c) => next.min(c.deadline()),
                None => next,
            };
            tokio::select! {
                r = self.browser.recv_from(&mut from_browser) => {
                    let Ok((n, source)) = r else { continue };
                    let Ok(contents) = (&from_browser[..n]).try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.candidate,
                        contents,
                    });
                    if self.rtc.accepts(&input)
                        && let Err(e) = self.rtc.handle_input(input) {
                        let reason = CloseReason::of(&e, self.stats.connected);
                        return self.close(reason);
                    }
                }
                r = self.relay.recv_from(&mut from_relay) => {
                    let Ok((n, source)) = r else { continue };
                    if source != self.relay_peer {
                        continue;
                    }
                    self.write_to_browser(&from_relay[..n]);
                }
                c = control.recv() => match c {
                    // The handle is gone: stop, silently.
                    None => return,
                    Some(c) => self.control(c),
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if self.consent.is_some_and(|c| c.expired(now)) {
                        return self.close(CloseReason::ConsentLost);
                    }
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        let reason = CloseReason::of(&e, self.stats.connected);
                        return self.close(reason);
                    }
                }
            }
        }
    }

    fn close(self, reason: CloseReason) {
        tracing::info!(?reason, "WebRTC leg closed");
        self.counters.closed(&reason);
        let _ = self.events.try_send(LegEvent::Closed(reason));
    }

    /// Polls str0m until it only has a timeout left: sends what it transmits, acts on its
    /// events. Returns when to wake it next.
    async fn drain(&mut self, out: &mut Vec<u8>) -> Result<Instant, CloseReason> {
        loop {
            let output = self
                .rtc
                .poll_output()
                .map_err(|e| CloseReason::of(&e, self.stats.connected))?;
            match output {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    if let Some(c) = self.consent.as_mut()
                        && is_binding_success(&t.contents)
                    {
                        c.refreshed(Instant::now());
                        self.stats.consent_checks += 1;
                    }
                    let _ = self.browser.send_to(&t.contents, t.destination).await;
                }
                Output::Event(e) => match e {
                    Event::Connected => {
                        self.stats.connected = true;
                        let _ = self.events.try_send(LegEvent::Connected);
                    }
                    Event::MediaAdded(m) => self.mid = Some(m.mid),
                    Event::RtpPacket(p) => {
                        let sent = self.to_relay.convert(
                            *p.header.payload_type,
                            p.header.marker,
                            p.header.timestamp,
                            &p.payload,
                            out,
                        );
                        if sent {
                            let _ = self.relay.send_to(out, self.relay_peer).await;
                        }
                    }
                    Event::Closed => return Err(CloseReason::PeerClosed),
                    _ => {}
                },
            }
        }
    }

    fn write_to_browser(&mut self, datagram: &[u8]) {
        let Some(mid) = self.mid else { return };
        let Some(p) = self.to_browser.convert(datagram) else {
            return;
        };
        let write = RtpWrite::new(
            p.pt.into(),
            self.seq.into(),
            p.timestamp,
            Instant::now(),
            p.payload.to_vec(),
        )
        .marker(p.marker);
        let mut api = self.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.write_rtp(write);
            self.seq += 1;
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Reoffer(sdp, reply) => {
                let answer = self.reoffer(&sdp);
                let _ = reply.send(self.counters.refusal(answer));
            }
            Control::OfferDirection(d, reply) => {
                let _ = reply.send(self.offer_direction(d));
            }
            Control::AcceptAnswer(sdp, reply) => {
                let _ = reply.send(self.accept_answer(&sdp));
            }
            Control::Stats(reply) => {
                let _ = reply.send(LegStats {
                    to_relay: self.to_relay.packets,
                    to_relay_dropped: self.to_relay.dropped,
                    to_browser: self.to_browser.packets,
                    to_browser_dropped: self.to_browser.dropped,
                    ..self.stats
                });
            }
        }
    }

    fn reoffer(&mut self, offer: &[u8]) -> Result<String, WebrtcError> {
        // The codec in use stays if it is offered again.
        let checked = sdp::check_offer(offer, self.max_sdp_bytes, self.choice.codec)?;
        if checked.choice != self.choice {
            self.choice = checked.choice;
            self.to_relay = ToRelay::new(self.choice, self.carrier)?;
            self.to_browser = ToBrowser::new(self.choice, self.carrier)?;
        }
        let parsed =
            SdpOffer::from_sdp_string(&checked.sdp).map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        let answer = self.rtc.sdp_api().accept_offer(parsed)?;
        Ok(checked.complete_answer(&answer.to_sdp_string()))
    }

    fn offer_direction(&mut self, d: Direction) -> Result<String, WebrtcError> {
        let mid = self.mid.ok_or(WebrtcError::Ended)?;
        let mut change = self.rtc.sdp_api();
        change.set_direction(mid, rtc_direction(d));
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| WebrtcError::Rtc("nothing to re-offer".into()))?;
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    fn accept_answer(&mut self, answer: &[u8]) -> Result<(), WebrtcError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| WebrtcError::Rtc("no offer pending".into()))?;
        sdp::check_answer(answer, self.max_sdp_bytes)?;
        let text = std::str::from_utf8(answer).map_err(|_| sdp::SdpRefusal::NotText)?;
        let parsed =
            SdpAnswer::from_sdp_string(text).map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(pending, parsed)?;
        Ok(())
    }
}
