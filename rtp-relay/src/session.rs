//! One call's media: the [`Session`] handle the gateway holds, and the task that owns the
//! call's four sockets. The handle only sends commands; all media state lives in the task, so
//! there is no lock on the packet path and a session dies with its task (ports go back to the
//! pool when the task's sockets are dropped).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use switchboard_media::dtmf::{TelephoneEvent, digit_to_event};
use switchboard_media::g711::{Law, linear_to_alaw, linear_to_ulaw};
use switchboard_media::rtp::{Latch, LatchVerdict, MAX_PACKET, Rewriter, RtpPacket};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::pool::{BoundPair, PortLease};
use crate::rtcp::{self, ReportBlock, SenderInfo};
use crate::stats::{CLOCK_HZ, LegStats, RecvStats, SessionStats, estimate_mos};
use crate::tap::{Pushed, TapHeader, TapWriter};
use crate::{Leg, RelayConfig, RelayError};

/// Samples (and timestamp units) in one 20 ms G.711 frame.
const FRAME: usize = 160;
const FRAME_TS: u32 = FRAME as u32;
const PTIME: Duration = Duration::from_millis(20);
/// Datagrams read from one socket before the task looks at its other sockets and timers.
const DRAIN_BATCH: usize = 64;
/// Pending commands per session.
const COMMAND_CAPACITY: usize = 16;
/// RFC 4733 end packets sent for each event.
const DTMF_END_PACKETS: u8 = 3;
/// Volume of the events we send, in -dBm0.
const DTMF_VOLUME: u8 = 10;

/// Something the application may want to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// An RFC 4733 digit arrived on `leg` (reported once per event).
    Dtmf { leg: Leg, digit: char },
    /// A prompt played once has been sent completely.
    PromptEnded { leg: Leg },
    /// The leg latched on its first packet's source: where its media really comes from.
    Latched { leg: Leg, addr: SocketAddr },
    /// The leg has a peer, is not on hold, and sent nothing for `rtp_timeout`. Raised once
    /// until media comes again.
    RtpTimeout { leg: Leg },
}

/// 8 kHz mono 16-bit PCM to play to a leg.
#[derive(Debug, Clone)]
pub struct Prompt {
    samples: Arc<[i16]>,
    looped: bool,
}

impl Prompt {
    /// Played again and again (music on hold) until the leg is given something else.
    pub fn looped(samples: Arc<[i16]>) -> Self {
        Self {
            samples,
            looped: true,
        }
    }

    /// Played once (an announcement), then [`MediaEvent::PromptEnded`] and the leg goes back to
    /// what it heard before (the other leg, or silence).
    pub fn once(samples: Arc<[i16]>) -> Self {
        Self {
            samples,
            looped: false,
        }
    }
    /// The samples of a WAV recording, which must be 8 kHz mono 16-bit PCM (what prompts are
    /// recorded as; convert others offline) and at most [`MAX_PROMPT_SECS`] long.
    pub fn wav_samples(reader: impl std::io::Read) -> Result<Arc<[i16]>, RelayError> {
        let wav = hound::WavReader::new(reader)?;
        let spec = wav.spec();
        if spec.sample_rate != 8000
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(RelayError::PromptFormat("not 8 kHz mono 16-bit PCM"));
        }
        if u64::from(wav.duration()) > MAX_PROMPT_SECS * 8000 {
            return Err(RelayError::PromptFormat("too long"));
        }
        let samples = wav.into_samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
        Ok(samples.into())
    }
}

/// Longest prompt [`Prompt::wav_samples`] reads (10 minutes, 9.6 MB of samples).
pub const MAX_PROMPT_SECS: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    codec: Law,
    te_pt: Option<u8>,
}

fn codec_pt(codec: Law) -> u8 {
    match codec {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    }
}

enum Op {
    SetPeer { leg: Leg, peer: Peer },
    Play { leg: Leg, prompt: Prompt },
    Silence { leg: Leg },
    Bridge,
    Hold { leg: Leg, on: bool },
    Dtmf { leg: Leg, event: u8, duration: u16 },
    Tap(Option<TapWriter>),
    Stats,
    Close,
}

enum Reply {
    Done,
    Stats(Box<SessionStats>),
}

struct Command {
    op: Op,
    reply: oneshot::Sender<Result<Reply, RelayError>>,
}

/// The gateway's handle on one call's media. Dropping it ends the session too (without
/// returning the final stats); [`Session::close`] is the orderly way.
#[derive(Debug)]
pub struct Session {
    label: Arc<str>,
    local: [SocketAddr; 2],
    commands: mpsc::Sender<Command>,
    task: JoinHandle<SessionStats>,
}

impl Session {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where the leg's remote must send RTP (RTCP goes to the port above): for our SDP.
    pub fn local_addr(&self, leg: Leg) -> SocketAddr {
        self.local[leg.index()]
    }

    async fn call(&self, op: Op) -> Result<Reply, RelayError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command { op, reply })
            .await
            .map_err(|_| RelayError::Closed)?;
        answer.await.map_err(|_| RelayError::Closed)?
    }

    /// The leg's remote from its SDP: the address to send to until the leg latches, its codec,
    /// and its telephone-event payload type (dynamic, 96-127) if it offered one. Packets that
    /// arrive before this are dropped.
    pub async fn set_peer(
        &self,
        leg: Leg,
        remote: SocketAddr,
        codec: Law,
        telephone_event_pt: Option<u8>,
    ) -> Result<(), RelayError> {
        if let Some(pt) = telephone_event_pt.filter(|pt| !(96..=127).contains(pt)) {
            return Err(RelayError::InvalidPayloadType(pt));
        }
        let peer = Peer {
            addr: remote,
            codec,
            te_pt: telephone_event_pt,
        };
        self.call(Op::SetPeer { leg, peer }).await.map(|_| ())
    }

    /// Plays `prompt` to `leg` instead of what it heard.
    pub async fn play(&self, leg: Leg, prompt: Prompt) -> Result<(), RelayError> {
        self.call(Op::Play { leg, prompt }).await.map(|_| ())
    }

    /// Sends nothing more to `leg` (stops a prompt or the bridge toward it).
    pub async fn silence(&self, leg: Leg) -> Result<(), RelayError> {
        self.call(Op::Silence { leg }).await.map(|_| ())
    }

    /// Relays caller <-> agent both ways (ends prompts on both legs).
    pub async fn bridge(&self) -> Result<(), RelayError> {
        self.call(Op::Bridge).await.map(|_| ())
    }

    /// Puts `leg` on hold (`true`) or takes it off (`false`).
    pub async fn hold(&self, leg: Leg, on: bool) -> Result<(), RelayError> {
        self.call(Op::Hold { leg, on }).await.map(|_| ())
    }

    /// Sends `digit` (0-9, *, #, A-D) as RFC 4733 events toward `leg`, lasting `duration`
    /// (20 ms to 8 s). The leg needs a telephone-event payload type.
    pub async fn send_dtmf(
        &self,
        leg: Leg,
        digit: char,
        duration: Duration,
    ) -> Result<(), RelayError> {
        let event = digit_to_event(digit).ok_or(RelayError::InvalidDigit(digit))?;
        if duration < PTIME || duration > Duration::from_secs(8) {
            return Err(RelayError::InvalidDuration);
        }
        let duration = (duration.as_millis() * 8) as u16;
        self.call(Op::Dtmf {
            leg,
            event,
            duration,
        })
        .await
        .map(|_| ())
    }

    /// Copies the incoming audio of both legs (as received) into `tap` (None stops it, and
    /// closes the tap it replaces). The relay never waits on it: when it is full, frames are
    /// dropped and counted.
    pub async fn tap(&self, tap: Option<TapWriter>) -> Result<(), RelayError> {
        self.call(Op::Tap(tap)).await.map(|_| ())
    }

    /// Stats so far.
    pub async fn stats(&self) -> Result<SessionStats, RelayError> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(*s),
            Reply::Done => Err(RelayError::Closed),
        }
    }

    /// Ends the session: the ports are back in the pool when this returns, with the final
    /// stats.
    pub async fn close(self) -> Result<SessionStats, RelayError> {
        // The task may already be gone; its join result tells.
        let _ = self.call(Op::Close).await;
        self.task.await.map_err(|_| RelayError::Closed)
    }
}

/// The sockets of one leg; declared before the lease so they close before the ports go back.
struct LegIo {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    _lease: PortLease,
}

/// What a leg hears.
enum Hears {
    Nothing,
    Prompt(PromptPlay),
    Other,
}

struct PromptPlay {
    prompt: Prompt,
    pos: usize,
    /// Whether the leg heard the other leg before (it goes back to it after a one-shot prompt).
    then_other: bool,
}

struct DtmfOut {
    event: u8,
    /// Total duration, in timestamp units.
    total: u16,
    sent_duration: u16,
    ts: u32,
    packets: u32,
    ends_sent: u8,
}

/// The leg's outgoing stream: one SSRC whatever the source (our prompt/DTMF generator, or the
/// other leg's media).
struct OutStream {
    ssrc: u32,
    rewriter: Rewriter,
    /// Our generator's own stream, fed to the rewriter like any other source.
    gen_ssrc: u32,
    gen_seq: u16,
    gen_ts: u32,
    last_ts: u32,
}

impl OutStream {
    fn new() -> Self {
        let ssrc = rand::random::<u32>();
        let mut gen_ssrc = rand::random::<u32>();
        if gen_ssrc == ssrc {
            gen_ssrc = !ssrc;
        }
        Self {
            ssrc,
            rewriter: Rewriter::new(ssrc, rand::random::<u16>()),
            gen_ssrc,
            gen_seq: rand::random::<u16>(),
            gen_ts: rand::random::<u32>(),
            last_ts: 0,
        }
    }
}

struct LegState {
    leg: Leg,
    peer: Option<Peer>,
    latch: Latch<SocketAddr>,
    source_ssrc: Option<u32>,
    recv: RecvStats,
    last_dtmf_ts: Option<u32>,
    last_rx: Instant,
    timed_out: bool,
    held: bool,
    hears: Hears,
    dtmf: Option<DtmfOut>,
    out: OutStream,
    /// Middle 32 bits of the NTP time of the remote's last SR, and when it came.
    last_sr: Option<(u32, Instant)>,
    next_rtcp: Instant,
    /// Counters; the derived fields are filled in by `snapshot`.
    stats: LegStats,
}

impl LegState {
    fn new(leg: Leg, now: Instant) -> Self {
        Self {
            leg,
            peer: None,
            latch: Latch::new(),
            source_ssrc: None,
            recv: RecvStats::default(),
            last_dtmf_ts: None,
            last_rx: now,
            timed_out: false,
            held: false,
            hears: Hears::Nothing,
            dtmf: None,
            out: OutStream::new(),
            last_sr: None,
            next_rtcp: now,
            stats: LegStats::default(),
        }
    }

    /// Where this leg's media goes: the latched source, else the SDP address.
    fn dest(&self) -> Option<SocketAddr> {
        let peer = self.peer.as_ref()?;
        Some(self.latch.peer().copied().unwrap_or(peer.addr))
    }

    fn snapshot(&self) -> LegStats {
        let mut s = self.stats.clone();
        s.latched = self.latch.peer().copied();
        s.packets_lost = self.recv.lost();
        let expected = self.recv.expected();
        s.loss_pct = if expected == 0 {
            0.0
        } else {
            s.packets_lost as f64 * 100.0 / expected as f64
        };
        s.jitter_ms = self.recv.jitter_ms();
        s.mos = estimate_mos(s.loss_pct, s.jitter_ms, s.rtt_ms.unwrap_or(0.0) / 2.0);
        s
    }
}

/// Scratch buffers of the packet path, allocated once per session.
struct Buffers {
    /// One byte more than we accept, so an oversized datagram is seen (and refused) rather
    /// than silently truncated.
    recv: Box<[u8; MAX_PACKET + 1]>,
    payload: Vec<u8>,
    out: Vec<u8>,
}

struct State {
    label: Arc<str>,
    cname: String,
    rtp_timeout: Duration,
    rtcp_interval: Duration,
    start: Instant,
    legs: [LegState; 2],
    events: mpsc::Sender<MediaEvent>,
    events_dropped: u64,
    tap: Option<TapWriter>,
}

pub(crate) fn start(
    cfg: &RelayConfig,
    label: &str,
    pairs: [BoundPair; 2],
) -> Result<(Session, mpsc::Receiver<MediaEvent>), RelayError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RelayError::Config(
            "Relay::open must be called within a Tokio runtime".into(),
        ));
    }
    let [caller, agent] = pairs;
    let mut local = [cfg_addr(cfg, caller.port()), cfg_addr(cfg, agent.port())];
    let mut legs = Vec::with_capacity(2);
    for (i, pair) in [caller, agent].into_iter().enumerate() {
        let rtp = UdpSocket::from_std(pair.rtp)?;
        if let Ok(addr) = rtp.local_addr() {
            local[i] = addr;
        }
        let rtcp = UdpSocket::from_std(pair.rtcp)?;
        legs.push(LegIo {
            rtp,
            rtcp,
            _lease: pair.lease,
        });
    }
    let io: [LegIo; 2] = legs
        .try_into()
        .map_err(|_| RelayError::Config("two legs expected".into()))?;
    let (events, events_rx) = mpsc::channel(cfg.event_capacity);
    let (commands, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
    let now = Instant::now();
    let label: Arc<str> = Arc::from(label);
    let state = State {
        label: Arc::clone(&label),
        cname: cfg.cname.clone(),
        rtp_timeout: cfg.rtp_timeout,
        rtcp_interval: cfg.rtcp_interval,
        start: now,
        legs: [
            LegState::new(Leg::Caller, now),
            LegState::new(Leg::Agent, now),
        ],
        events,
        events_dropped: 0,
        tap: None,
    };
    let task = tokio::spawn(run(io, state, commands_rx));
    Ok((
        Session {
            label,
            local,
            commands,
            task,
        },
        events_rx,
    ))
}

fn cfg_addr(cfg: &RelayConfig, port: u16) -> SocketAddr {
    SocketAddr::new(cfg.bind_ip, port)
}

fn pace_timer() -> Interval {
    let mut t = tokio::time::interval(PTIME);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Polls `readable` and drains the socket with `drain` until it would block (then the task is
/// registered for its next datagram) or a batch was read (then `true`: poll again soon).
fn poll_socket(sock: &UdpSocket, cx: &mut Context<'_>, mut drain: impl FnMut() -> bool) -> bool {
    loop {
        match sock.poll_recv_ready(cx) {
            Poll::Ready(Ok(())) => {
                if !drain() {
                    return true;
                }
            }
            // Pending: registered. An error: only when the runtime shuts down.
            _ => return false,
        }
    }
}

/// The session task: one hand-written poll over the command channel, the four sockets and the
/// two timers. Cheaper per packet than `select!` (no futures created and dropped per
/// wake-up), which matters at thousands of sessions per core.
async fn run(io: [LegIo; 2], mut st: State, mut commands: mpsc::Receiver<Command>) -> SessionStats {
    let mut bufs = Buffers {
        recv: Box::new([0u8; MAX_PACKET + 1]),
        payload: Vec::with_capacity(MAX_PACKET),
        out: Vec::with_capacity(MAX_PACKET + 64),
    };
    let housekeeping_period = (st.rtp_timeout / 4)
        .min(st.rtcp_interval / 2)
        .clamp(PTIME, Duration::from_secs(1));
    let mut pace: Option<Interval> = None;
    // The first round at a random point of the period: sessions opened together (a burst of
    // calls, a bench) would otherwise all wake in the same millisecond every period and delay
    // the packets queued behind them.
    let first_round = housekeeping_period.mul_f64(rand::random::<f64>());
    let housekeeping: Sleep = tokio::time::sleep(first_round);
    tokio::pin!(housekeeping);
    std::future::poll_fn(|cx| {
        // Commands first: a close does not wait behind media.
        loop {
            match commands.poll_recv(cx) {
                Poll::Ready(Some(Command {
                    op: Op::Close,
                    reply,
                })) => {
                    let _ = reply.send(Ok(Reply::Done));
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Command { op, reply })) => {
                    let _ = reply.send(st.command(op));
                    if pace.is_none() && st.needs_pace() {
                        pace = Some(pace_timer());
                    }
                }
                // The handle is gone: the session ends with it.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        let mut more = false;
        for leg in [Leg::Caller, Leg::Agent] {
            let leg_io = &io[leg.index()];
            more |= poll_socket(&leg_io.rtp, cx, || st.drain_rtp(&io, leg, &mut bufs));
            more |= poll_socket(&leg_io.rtcp, cx, || st.drain_rtcp(&io, leg, &mut bufs));
        }
        if let Some(t) = pace.as_mut() {
            // Ready ticks are handled until one is pending (which registers the next).
            let mut ticks = 0;
            while st.needs_pace() && t.poll_tick(cx).is_ready() {
                st.on_pace(&io, &mut bufs);
                ticks += 1;
                if ticks == 4 {
                    more = true;
                    break;
                }
            }
        }
        if !st.needs_pace() {
            pace = None;
        }
        if housekeeping.as_mut().poll(cx).is_ready() {
            st.housekeeping(&io, &mut bufs);
            housekeeping
                .as_mut()
                .reset(tokio::time::Instant::now() + housekeeping_period);
            // Registers the new deadline.
            let _ = housekeeping.as_mut().poll(cx);
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;
    st.session_stats()
}

impl State {
    fn emit(&mut self, ev: MediaEvent) {
        if self.events.try_send(ev).is_err() {
            self.events_dropped += 1;
        }
    }

    fn session_stats(&self) -> SessionStats {
        SessionStats {
            label: self.label.to_string(),
            caller: self.legs[0].snapshot(),
            agent: self.legs[1].snapshot(),
            events_dropped: self.events_dropped,
        }
    }

    fn needs_pace(&self) -> bool {
        self.legs
            .iter()
            .any(|l| l.dtmf.is_some() || matches!(l.hears, Hears::Prompt(_)))
    }

    fn command(&mut self, op: Op) -> Result<Reply, RelayError> {
        match op {
            Op::SetPeer { leg, peer } => {
                let l = &mut self.legs[leg.index()];
                if l.peer.is_some_and(|old| old.addr != peer.addr) {
                    // A new remote (re-INVITE): latch again on its first packet.
                    l.latch = Latch::new();
                    l.source_ssrc = None;
                    l.recv = RecvStats::default();
                    l.last_dtmf_ts = None;
                }
                if l.peer.is_none() {
                    l.last_rx = Instant::now();
                }
                l.peer = Some(peer);
            }
            Op::Play { leg, prompt } => {
                let l = &mut self.legs[leg.index()];
                let then_other = match &l.hears {
                    Hears::Other => true,
                    Hears::Prompt(p) => p.then_other,
                    Hears::Nothing => false,
                };
                l.hears = Hears::Prompt(PromptPlay {
                    prompt,
                    pos: 0,
                    then_other,
                });
            }
            Op::Silence { leg } => self.legs[leg.index()].hears = Hears::Nothing,
            Op::Bridge => {
                for l in &mut self.legs {
                    l.hears = Hears::Other;
                }
            }
            Op::Hold { leg, on } => {
                let l = &mut self.legs[leg.index()];
                l.held = on;
                if !on {
                    l.last_rx = Instant::now();
                    l.timed_out = false;
                }
            }
            Op::Dtmf {
                leg,
                event,
                duration,
            } => {
                let l = &mut self.legs[leg.index()];
                let peer = l.peer.ok_or(RelayError::NoPeer(leg))?;
                peer.te_pt.ok_or(RelayError::NoTelephoneEvent(leg))?;
                if let Some(prev) = l.dtmf.take() {
                    // A digit cut short by the next one: the clock moves past its duration.
                    let frames = u32::from(prev.total).div_ceil(FRAME_TS);
                    l.out.gen_ts = prev.ts.wrapping_add(frames * FRAME_TS);
                }
                l.dtmf = Some(DtmfOut {
                    event,
                    total: duration,
                    sent_duration: 0,
                    ts: l.out.gen_ts,
                    packets: 0,
                    ends_sent: 0,
                });
            }
            Op::Tap(tap) => self.tap = tap,
            Op::Stats => return Ok(Reply::Stats(Box::new(self.session_stats()))),
            Op::Close => {}
        }
        Ok(Reply::Done)
    }

    /// Reads up to a batch of datagrams; true when the socket is empty.
    fn drain_rtp(&mut self, io: &[LegIo; 2], leg: Leg, bufs: &mut Buffers) -> bool {
        for _ in 0..DRAIN_BATCH {
            match io[leg.index()].rtp.try_recv_from(&mut bufs.recv[..]) {
                Ok((n, src)) => self.on_rtp(io, leg, src, n, bufs),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                // A pending socket error is reported once; go on reading.
                Err(_) => {}
            }
        }
        false
    }

    fn on_rtp(
        &mut self,
        io: &[LegIo; 2],
        from: Leg,
        src: SocketAddr,
        n: usize,
        bufs: &mut Buffers,
    ) {
        let Buffers { recv, payload, out } = bufs;
        let now = Instant::now();
        let arrival = (now.duration_since(self.start).as_micros() as u64 * 8 / 1000) as i64;
        let a = &mut self.legs[from.index()];
        let Some(peer) = a.peer else {
            a.stats.dropped_invalid += 1;
            return;
        };
        let Ok(p) = RtpPacket::parse(&recv[..n]) else {
            a.stats.dropped_invalid += 1;
            return;
        };
        let audio = p.payload_type == codec_pt(peer.codec);
        let event = !audio && peer.te_pt == Some(p.payload_type);
        if !audio && !event {
            a.stats.dropped_invalid += 1;
            return;
        }
        match a.latch.check(&src, p.ssrc) {
            LatchVerdict::Drop => {
                a.stats.dropped_foreign += 1;
                return;
            }
            LatchVerdict::Latched => {
                a.source_ssrc = Some(p.ssrc);
                self.emit(MediaEvent::Latched {
                    leg: from,
                    addr: src,
                });
            }
            LatchVerdict::Accept => {}
        }
        let a = &mut self.legs[from.index()];
        a.stats.packets_in += 1;
        a.stats.bytes_in += p.payload.len() as u64;
        a.recv.record(p.sequence, p.timestamp, arrival, audio);
        a.last_rx = now;
        a.timed_out = false;
        let held = a.held;
        if event {
            if let Ok(te) = TelephoneEvent::parse(p.payload)
                && a.last_dtmf_ts != Some(p.timestamp)
            {
                a.last_dtmf_ts = Some(p.timestamp);
                if let Some(digit) = te.digit() {
                    self.emit(MediaEvent::Dtmf { leg: from, digit });
                }
            }
        } else if let Some(tap) = &self.tap {
            let at_ms = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let header = TapHeader {
                leg: from,
                law: peer.codec,
                timestamp: p.timestamp,
                at_ms,
            };
            match tap.push(header, p.payload) {
                Pushed::Queued => {}
                Pushed::Full => self.legs[from.index()].stats.tap_dropped += 1,
                Pushed::Closed => self.tap = None,
            }
        }

        // Relay to the other leg if it hears this one.
        let to = from.other();
        let b = &mut self.legs[to.index()];
        if held || b.held || b.dtmf.is_some() || !matches!(b.hears, Hears::Other) {
            return;
        }
        let (Some(b_peer), Some(dest)) = (b.peer, b.dest()) else {
            return;
        };
        let (payload_type, body): (u8, &[u8]) = if audio {
            if b_peer.codec == peer.codec {
                (codec_pt(b_peer.codec), p.payload)
            } else {
                payload.clear();
                payload.extend(
                    p.payload
                        .iter()
                        .map(|&x| peer.codec.transcode(b_peer.codec, x)),
                );
                (codec_pt(b_peer.codec), &payload[..])
            }
        } else {
            match b_peer.te_pt {
                Some(pt) => (pt, p.payload),
                None => return,
            }
        };
        let mut fwd = RtpPacket {
            marker: p.marker,
            payload_type,
            sequence: p.sequence,
            timestamp: p.timestamp,
            ssrc: p.ssrc,
            csrcs: Vec::new(),
            payload: body,
        };
        b.out.rewriter.rewrite(&mut fwd, FRAME_TS);
        b.out.last_ts = fwd.timestamp;
        out.clear();
        fwd.write(out);
        send(&io[to.index()].rtp, out, body.len(), dest, &mut b.stats);
    }

    /// Reads up to a batch of datagrams; true when the socket is empty.
    fn drain_rtcp(&mut self, io: &[LegIo; 2], leg: Leg, bufs: &mut Buffers) -> bool {
        for _ in 0..DRAIN_BATCH {
            match io[leg.index()].rtcp.try_recv_from(&mut bufs.recv[..]) {
                Ok((n, src)) => self.on_rtcp(leg, src, &bufs.recv[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => {}
            }
        }
        false
    }

    fn on_rtcp(&mut self, leg: Leg, src: SocketAddr, datagram: &[u8]) {
        let l = &mut self.legs[leg.index()];
        // Only the leg's remote host may report on it.
        if l.dest().is_none_or(|d| d.ip() != src.ip()) {
            l.stats.dropped_foreign += 1;
            return;
        }
        let Ok(reports) = rtcp::parse_compound(datagram) else {
            l.stats.dropped_invalid += 1;
            return;
        };
        l.stats.rtcp_in += 1;
        let now = Instant::now();
        let arrival = rtcp::ntp_middle(rtcp::ntp_time(SystemTime::now()));
        for r in reports {
            if let Some(info) = r.sender_info {
                l.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
            }
            for b in r.blocks.iter().filter(|b| b.ssrc == l.out.ssrc) {
                l.stats.remote_fraction_lost = Some(f64::from(b.fraction_lost) / 256.0);
                l.stats.remote_jitter_ms = Some(f64::from(b.jitter) * 1000.0 / CLOCK_HZ);
                if b.lsr != 0 {
                    let rtt = arrival.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                    // Ignore nonsense (clock steps, forged values): keep below ~10 s.
                    if rtt < 10 << 16 {
                        l.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
                    }
                }
            }
        }
    }

    fn on_pace(&mut self, io: &[LegIo; 2], bufs: &mut Buffers) {
        for i in 0..2 {
            if self.legs[i].dtmf.is_some() {
                self.dtmf_frame(io, i, bufs);
            } else if matches!(self.legs[i].hears, Hears::Prompt(_)) {
                self.prompt_frame(io, i, bufs);
            }
        }
    }

    fn prompt_frame(&mut self, io: &[LegIo; 2], i: usize, bufs: &mut Buffers) {
        let l = &mut self.legs[i];
        let Hears::Prompt(play) = &mut l.hears else {
            return;
        };
        let samples = &play.prompt.samples;
        let codec = l.peer.map_or(Law::Ulaw, |p| p.codec);
        bufs.payload.clear();
        for k in 0..FRAME {
            let s = if samples.is_empty() {
                0
            } else if play.prompt.looped {
                samples[(play.pos + k) % samples.len()]
            } else {
                samples.get(play.pos + k).copied().unwrap_or(0)
            };
            bufs.payload.push(match codec {
                Law::Ulaw => linear_to_ulaw(s),
                Law::Alaw => linear_to_alaw(s),
            });
        }
        play.pos += FRAME;
        if play.prompt.looped && !samples.is_empty() {
            play.pos %= samples.len();
        }
        let ended = !play.prompt.looped && play.pos >= samples.len();
        let then_other = play.then_other;
        if !l.held
            && let Some(dest) = l.dest()
        {
            let seq = l.out.gen_seq;
            let ts = l.out.gen_ts;
            let mut pkt = RtpPacket {
                marker: false,
                payload_type: codec_pt(codec),
                sequence: seq,
                timestamp: ts,
                ssrc: l.out.gen_ssrc,
                csrcs: Vec::new(),
                payload: &bufs.payload,
            };
            l.out.rewriter.rewrite(&mut pkt, FRAME_TS);
            l.out.last_ts = pkt.timestamp;
            bufs.out.clear();
            pkt.write(&mut bufs.out);
            send(&io[i].rtp, &bufs.out, FRAME, dest, &mut l.stats);
        }
        l.out.gen_seq = l.out.gen_seq.wrapping_add(1);
        l.out.gen_ts = l.out.gen_ts.wrapping_add(FRAME_TS);
        if ended {
            l.hears = if then_other {
                Hears::Other
            } else {
                Hears::Nothing
            };
            let leg = l.leg;
            self.emit(MediaEvent::PromptEnded { leg });
        }
    }

    fn dtmf_frame(&mut self, io: &[LegIo; 2], i: usize, bufs: &mut Buffers) {
        let l = &mut self.legs[i];
        let (Some(d), Some(peer)) = (l.dtmf.as_mut(), l.peer) else {
            return;
        };
        let Some(pt) = peer.te_pt else {
            l.dtmf = None;
            return;
        };
        d.sent_duration = d.sent_duration.saturating_add(FRAME_TS as u16).min(d.total);
        let end = d.sent_duration >= d.total;
        if end {
            d.ends_sent += 1;
        }
        let te = TelephoneEvent {
            event: d.event,
            end,
            volume: DTMF_VOLUME,
            duration: d.sent_duration,
        };
        let bytes = te.to_bytes();
        let mut pkt = RtpPacket {
            marker: d.packets == 0,
            payload_type: pt,
            sequence: l.out.gen_seq,
            timestamp: d.ts,
            ssrc: l.out.gen_ssrc,
            csrcs: Vec::new(),
            payload: &bytes,
        };
        d.packets += 1;
        let finished = d.ends_sent >= DTMF_END_PACKETS;
        let frames = u32::from(d.total).div_ceil(FRAME_TS);
        let next_ts = d.ts.wrapping_add(frames * FRAME_TS);
        l.out.gen_seq = l.out.gen_seq.wrapping_add(1);
        if let Some(dest) = l.dest().filter(|_| !l.held) {
            l.out.rewriter.rewrite(&mut pkt, FRAME_TS);
            l.out.last_ts = pkt.timestamp;
            bufs.out.clear();
            pkt.write(&mut bufs.out);
            send(&io[i].rtp, &bufs.out, bytes.len(), dest, &mut l.stats);
        }
        if finished {
            l.dtmf = None;
            // The generator's clock resumes after the event, on a frame boundary.
            l.out.gen_ts = next_ts;
            if !matches!(l.hears, Hears::Prompt(_)) {
                // One frame of silence right after the event, so that bridged audio resuming
                // after it continues from the event's end, not from its start timestamp.
                self.silence_frame(io, i, bufs);
            }
        }
    }

    fn silence_frame(&mut self, io: &[LegIo; 2], i: usize, bufs: &mut Buffers) {
        let l = &mut self.legs[i];
        let (Some(peer), Some(dest)) = (l.peer, l.dest()) else {
            return;
        };
        let silence = match peer.codec {
            Law::Ulaw => linear_to_ulaw(0),
            Law::Alaw => linear_to_alaw(0),
        };
        bufs.payload.clear();
        bufs.payload.resize(FRAME, silence);
        let mut pkt = RtpPacket {
            marker: false,
            payload_type: codec_pt(peer.codec),
            sequence: l.out.gen_seq,
            timestamp: l.out.gen_ts,
            ssrc: l.out.gen_ssrc,
            csrcs: Vec::new(),
            payload: &bufs.payload,
        };
        l.out.gen_seq = l.out.gen_seq.wrapping_add(1);
        l.out.gen_ts = l.out.gen_ts.wrapping_add(FRAME_TS);
        if l.held {
            return;
        }
        l.out.rewriter.rewrite(&mut pkt, FRAME_TS);
        l.out.last_ts = pkt.timestamp;
        bufs.out.clear();
        pkt.write(&mut bufs.out);
        send(&io[i].rtp, &bufs.out, FRAME, dest, &mut l.stats);
    }

    fn housekeeping(&mut self, io: &[LegIo; 2], bufs: &mut Buffers) {
        let now = Instant::now();
        for (i, leg_io) in io.iter().enumerate() {
            let l = &mut self.legs[i];
            if l.peer.is_some()
                && !l.held
                && !l.timed_out
                && now.duration_since(l.last_rx) >= self.rtp_timeout
            {
                l.timed_out = true;
                let leg = l.leg;
                self.emit(MediaEvent::RtpTimeout { leg });
            }
            let l = &mut self.legs[i];
            if now >= l.next_rtcp {
                let factor = 0.5 + rand::random::<f64>();
                l.next_rtcp = now + self.rtcp_interval.mul_f64(factor);
                if let Some(dest) = l.dest() {
                    send_report(l, &leg_io.rtcp, dest, &self.cname, now, &mut bufs.out);
                }
            }
        }
    }
}

/// Sends one datagram without waiting; a full socket buffer or an unreachable peer loses it.
fn send(sock: &UdpSocket, datagram: &[u8], payload: usize, dest: SocketAddr, s: &mut LegStats) {
    match sock.try_send_to(datagram, dest) {
        Ok(_) => {
            s.packets_out += 1;
            s.bytes_out += payload as u64;
        }
        Err(_) => s.send_errors += 1,
    }
}

/// Our compound RTCP report about a leg, to its remote's RTP port + 1.
fn send_report(
    l: &mut LegState,
    sock: &UdpSocket,
    dest: SocketAddr,
    cname: &str,
    now: Instant,
    out: &mut Vec<u8>,
) {
    let sender = (l.stats.packets_out > 0).then(|| SenderInfo {
        ntp: rtcp::ntp_time(SystemTime::now()),
        rtp_timestamp: l.out.last_ts,
        packet_count: l.stats.packets_out as u32,
        octet_count: l.stats.bytes_out as u32,
    });
    let block = match (l.source_ssrc, l.recv.started()) {
        (Some(ssrc), true) => {
            let (lsr, dlsr) = l.last_sr.map_or((0, 0), |(lsr, at)| {
                let delay = now.duration_since(at);
                (lsr, (delay.as_micros() as u64 * 65536 / 1_000_000) as u32)
            });
            Some(ReportBlock {
                ssrc,
                fraction_lost: l.recv.fraction_lost_since_last(),
                cumulative_lost: l.recv.lost().min(0x7F_FFFF) as i32,
                extended_max_seq: l.recv.extended_max() as u32,
                jitter: l.recv.jitter_ts() as u32,
                lsr,
                dlsr,
            })
        }
        _ => None,
    };
    out.clear();
    if rtcp::write_compound(out, l.out.ssrc, sender, block.as_ref(), cname).is_err() {
        l.stats.send_errors += 1;
        return;
    }
    let rtcp_dest = SocketAddr::new(dest.ip(), dest.port().wrapping_add(1));
    match sock.try_send_to(out, rtcp_dest) {
        Ok(_) => l.stats.rtcp_out += 1,
        Err(_) => l.stats.send_errors += 1,
    }
}
