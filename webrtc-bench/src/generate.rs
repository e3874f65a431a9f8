//! `gen`: the browsers and the far RTP ends, in one thread of their own. Per step of the ramp it
//! sets up N calls (a browser leg, `Role::Browser`: full ICE, DTLS active, SRTP; and a plain
//! RTP caller), waits for DTLS on both sides, sends 20 ms G.711 packets both ways on every call
//! for the step's seconds, counts what arrives, reads both processes' CPU from /proc, ends the
//! calls and goes on while the loss stays within the limit and the time budget allows.
//!
//! Each call's two streams: down = RTP caller -> relay -> WebRTC gateway leg -> SRTP ->
//! browser leg -> its "speaker" socket; up = the browser's "microphone" socket -> browser leg
//! -> SRTP -> gateway leg -> relay -> RTP caller. The speaker/microphone and the RTP callers
//! are shared sockets (one per CALLS_PER_SOCKET calls and side) that tell streams apart by
//! source address. Output: one `STEP key=value ...` line per step and a `SUMMARY` line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;
use switchboard_media::tone;
use switchboard_webrtc::{Codec, Endpoint, LegEvent, LegHandle, Role, WebrtcConfig};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UdpSocket, UnixStream};
use tokio::time::timeout_at;

use crate::ramp::{self, DelayHistogram, Flow, Jitter, LATE_MS, Step};
use crate::signal::{self, Message};
use crate::{PortRange, Res, procfs};

/// Calls whose streams share one generator socket per side.
const CALLS_PER_SOCKET: usize = 50;
/// Receive buffer of a shared socket: about a second of its streams.
const GEN_RCVBUF: usize = 2 << 20;
const FRAME_MS: u64 = 20;
/// Longest wait for all legs' DTLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long receivers keep listening after the last packet was sent.
const DRAIN: Duration = Duration::from_millis(500);

pub struct GenOpts<'a> {
    pub socket: &'a Path,
    pub serve_pid: u32,
    pub clk_tck: f64,
    pub max: usize,
    pub secs: u64,
    pub budget: Duration,
    pub codec: Codec,
    pub browser_ports: PortRange,
}

/// The request/reply channel to `serve`.
struct Signal {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Signal {
    async fn connect(path: &Path) -> Res<Self> {
        // `serve` may still be starting.
        let mut last = String::new();
        for _ in 0..100 {
            match UnixStream::connect(path).await {
                Ok(s) => {
                    let (rd, wr) = s.into_split();
                    return Ok(Self {
                        rd: BufReader::new(rd),
                        wr,
                    });
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("cannot reach serve at {path:?}: {last}"))
    }

    async fn request(&mut self, m: &Message) -> Res<Message> {
        signal::write(&mut self.wr, m).await?;
        signal::read(&mut self.rd)
            .await?
            .ok_or_else(|| "serve hung up".to_string())
    }

    /// serve's (connected, closed) leg counts.
    async fn status(&mut self) -> Res<(usize, usize)> {
        let r = self.request(&Message::new(&["status"], b"")).await?;
        match r.words().as_slice() {
            ["status", connected, closed, _] => Ok((
                connected.parse().map_err(|_| "bad status")?,
                closed.parse().map_err(|_| "bad status")?,
            )),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// A call set up from the generator's side.
struct Call {
    /// Index of its shared sockets.
    k: usize,
    leg: LegHandle,
    /// The relay's caller leg (the RTP caller sends there; up arrives from there).
    relay_caller: SocketAddr,
    /// The browser leg's plain-RTP side (the microphone sends there; down arrives from there).
    browser_side: SocketAddr,
}

/// One outgoing stream.
struct Tx {
    sock: Rc<UdpSocket>,
    to: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

/// What a receiver counted for one stream.
#[derive(Debug, Clone, Copy, Default)]
struct Rx {
    received: u64,
    /// Arrived more than `LATE_MS` behind the stream's pace.
    late: u64,
    /// The stream's first packet: (arrival ns, RTP timestamp).
    first: Option<(u64, u32)>,
    jitter: Jitter,
}

fn gen_socket() -> Res<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(|e| e.to_string())?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(GEN_RCVBUF);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(s.into()).map_err(|e| e.to_string())
}

pub async fn generate(o: GenOpts<'_>) -> Res<()> {
    let mut sig = Signal::connect(o.socket).await?;
    let local = [127, 0, 0, 1].into();
    let endpoint = Endpoint::new(
        WebrtcConfig {
            bind_ip: local,
            advertised_ip: local,
            port_min: o.browser_ports.min,
            port_max: o.browser_ports.max,
            consent_timeout: Duration::from_secs(30),
            max_legs: o.max,
            max_sdp_bytes: signal::MAX_BODY,
        },
        Role::Browser {
            codecs: vec![o.codec],
        },
    )
    .map_err(|e| e.to_string())?;
    // A second of a 1 kHz tone as 50 PCMU frames, sent in a loop (real audio for Opus).
    let mut frames = Vec::new();
    for chunk in tone::sine(1000.0, 8000, 8000, 0.3).chunks(160) {
        let mut f = Vec::with_capacity(160);
        Law::Ulaw.encode(chunk, &mut f);
        frames.push(f);
    }
    let started = Instant::now();
    // Media, drain and teardown: the part of a step that does not grow with its size.
    let fixed = Duration::from_secs(o.secs) + DRAIN + Duration::from_secs(2);
    let mut steps: Vec<Step> = Vec::new();
    for n in ramp::steps(o.max) {
        let last_setup = steps.last().map(|s| (s.legs, s.setup));
        if !ramp::next_fits(started.elapsed(), o.budget, fixed, last_setup, n) {
            eprintln!("webrtc-bench gen: {n} legs would not fit the time budget; stopping");
            break;
        }
        let step = run_step(&o, &mut sig, &endpoint, &frames, n).await?;
        let passes = step.passes();
        steps.push(step);
        if !passes {
            break;
        }
    }
    let _ = signal::write(&mut sig.wr, &Message::new(&["quit"], b"")).await;
    let s = ramp::summarize(&steps).ok_or("no step ran")?;
    println!(
        "SUMMARY legs={} loss_pct={:.3} cpu_per_leg_pct={:.3} gen_saturated={} steps={} codec={} \
         elapsed_s={:.0}",
        s.legs,
        s.loss_pct,
        s.cpu_per_leg_pct,
        s.gen_saturated,
        steps.len(),
        o.codec.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn open_call(
    endpoint: &Endpoint,
    sig: &mut Signal,
    id: usize,
    k: usize,
    caller: SocketAddr,
    phone: SocketAddr,
) -> Res<Call> {
    let (offered, offer) = endpoint.offer(Law::Ulaw).map_err(|e| e.to_string())?;
    let id = id.to_string();
    let reply = sig
        .request(&Message::new(
            &["open", &id, caller.to_string().as_str()],
            offer.as_bytes(),
        ))
        .await?;
    let port: u16 = match reply.words().as_slice() {
        ["ok", rid, port] if *rid == id => port.parse().map_err(|_| "bad port")?,
        ["err", _, reason] => return Err(format!("serve refused: {reason}")),
        other => return Err(format!("unexpected reply {other:?}")),
    };
    let leg = offered
        .accept_answer(&reply.body)
        .map_err(|e| e.to_string())?;
    let browser_side = leg.relay_side_addr();
    let leg = leg.start(phone).map_err(|e| e.to_string())?;
    Ok(Call {
        k,
        leg,
        relay_caller: SocketAddr::new(caller.ip(), port),
        browser_side,
    })
}

async fn run_step(
    o: &GenOpts<'_>,
    sig: &mut Signal,
    endpoint: &Endpoint,
    frames: &[Vec<u8>],
    n: usize,
) -> Res<Step> {
    let nsocks = n.div_ceil(CALLS_PER_SOCKET);
    let mut callers = Vec::with_capacity(nsocks);
    let mut phones = Vec::with_capacity(nsocks);
    for _ in 0..nsocks {
        callers.push(Rc::new(gen_socket()?));
        phones.push(Rc::new(gen_socket()?));
    }
    let addr = |s: &UdpSocket| s.local_addr().map_err(|e| e.to_string());

    // Setup: offers one after the other; the legs already made handshake meanwhile.
    let setup_start = Instant::now();
    let mut calls = Vec::with_capacity(n);
    let mut first_error = None;
    for i in 0..n {
        let k = i / CALLS_PER_SOCKET;
        match open_call(endpoint, sig, i, k, addr(&callers[k])?, addr(&phones[k])?).await {
            Ok(c) => calls.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut up = Vec::with_capacity(calls.len());
    for mut c in calls {
        match timeout_at(deadline, c.leg.next_event()).await {
            Ok(Some(LegEvent::Connected)) => up.push(c),
            other => {
                first_error.get_or_insert(format!("browser leg: {other:?}"));
            }
        }
    }
    let calls = up;
    let mut serve_connected = sig.status().await?.0;
    while serve_connected < calls.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        serve_connected = sig.status().await?.0;
    }
    let connected = calls.len().min(serve_connected);
    let setup = setup_start.elapsed();
    if let Some(e) = &first_error {
        eprintln!("webrtc-bench gen: {n} legs: first failure: {e}");
    }

    // Streams 2j (down) and 2j+1 (up) of call j, and who receives them from where.
    let mut txs = Vec::with_capacity(2 * calls.len());
    let mut phone_maps = vec![HashMap::new(); nsocks];
    let mut caller_maps = vec![HashMap::new(); nsocks];
    for (j, c) in calls.iter().enumerate() {
        txs.push(Tx {
            sock: Rc::clone(&callers[c.k]),
            to: c.relay_caller,
            ssrc: (j as u32) << 1,
            seq: 0,
            ts: 0,
        });
        txs.push(Tx {
            sock: Rc::clone(&phones[c.k]),
            to: c.browser_side,
            ssrc: (j as u32) << 1 | 1,
            seq: 0,
            ts: 0,
        });
        phone_maps[c.k].insert(c.browser_side, 2 * j);
        caller_maps[c.k].insert(c.relay_caller, 2 * j + 1);
    }
    let base = Instant::now();
    let send_for = Duration::from_secs(o.secs);
    let until = tokio::time::Instant::from_std(base) + send_for + DRAIN;
    let mut receivers = Vec::new();
    for (socks, maps) in [(&phones, phone_maps), (&callers, caller_maps)] {
        for (k, map) in maps.into_iter().enumerate() {
            let sock = Rc::clone(&socks[k]);
            receivers.push(tokio::task::spawn_local(receive(sock, map, base, until)));
        }
    }
    let me = std::process::id();
    let (serve_cpu0, gen_cpu0) = (
        procfs::cpu_seconds(o.serve_pid, o.clk_tck)?,
        procfs::cpu_seconds(me, o.clk_tck)?,
    );
    let (serve_drops0, gen_drops0) = (procfs::udp_drops(o.serve_pid), procfs::udp_drops(me));

    // Calls spread over the 20 ms of a frame: call j sends in millisecond slot j % 20.
    let (mut down_sent, mut up_sent, mut send_failed) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pkt = Vec::with_capacity(200);
    let end_ms = o.secs * 1000;
    let mut next_ms = 0u64;
    while next_ms < end_ms {
        tick.tick().await;
        let now_ms = (base.elapsed().as_millis() as u64).min(end_ms - 1);
        while next_ms <= now_ms {
            let slot = (next_ms % FRAME_MS) as usize;
            for j in (slot..calls.len()).step_by(FRAME_MS as usize) {
                for (dir, tx) in txs[2 * j..2 * j + 2].iter_mut().enumerate() {
                    pkt.clear();
                    RtpPacket {
                        marker: tx.seq == 0,
                        payload_type: 0,
                        sequence: tx.seq,
                        timestamp: tx.ts,
                        ssrc: tx.ssrc,
                        csrcs: Vec::new(),
                        payload: &frames[usize::from(tx.seq) % frames.len()],
                    }
                    .write(&mut pkt);
                    tx.seq = tx.seq.wrapping_add(1);
                    tx.ts = tx.ts.wrapping_add(160);
                    if dir == 0 {
                        down_sent += 1;
                    } else {
                        up_sent += 1;
                    }
                    if tx.sock.try_send_to(&pkt, tx.to).is_err() {
                        send_failed += 1;
                    }
                }
            }
            next_ms += 1;
        }
    }
    let media_s = base.elapsed().as_secs_f64();
    let serve_cpu = procfs::cpu_seconds(o.serve_pid, o.clk_tck)? - serve_cpu0;
    let gen_cpu = procfs::cpu_seconds(me, o.clk_tck)? - gen_cpu0;
    let serve_drops = procfs::udp_drops(o.serve_pid).saturating_sub(serve_drops0);
    let gen_drops = procfs::udp_drops(me).saturating_sub(gen_drops0);

    let mut rx = vec![Rx::default(); txs.len()];
    let mut behind = DelayHistogram::default();
    for r in receivers {
        let (counts, h) = r.await.map_err(|e| e.to_string())?;
        behind.merge(&h);
        for (stream, counted) in counts {
            rx[stream] = counted;
        }
    }
    let (mut down_recv, mut up_recv, mut down_late, mut up_late) = (0u64, 0u64, 0u64, 0u64);
    for (i, r) in rx.iter().enumerate() {
        if i % 2 == 0 {
            down_recv += r.received;
            down_late += r.late;
        } else {
            up_recv += r.received;
            up_late += r.late;
        }
    }
    let jitters: Vec<f64> = rx
        .iter()
        .filter(|r| r.received > 1)
        .map(|r| r.jitter.ms())
        .collect();
    let jitter_mean = jitters.iter().sum::<f64>() / jitters.len().max(1) as f64;
    let jitter_max = jitters.iter().copied().fold(0.0, f64::max);
    let serve_closed = sig.status().await?.1;

    // Teardown: serve ends its calls, then the browser legs and sockets go.
    let r = sig.request(&Message::new(&["close"], b"")).await?;
    if r.words().first() != Some(&"closed") {
        return Err(format!("close: unexpected reply {:?}", r.words()));
    }
    drop(calls);
    drop(txs);

    let step = Step {
        legs: n,
        connected,
        down: Flow {
            sent: down_sent,
            received: down_recv,
            late: down_late,
        },
        up: Flow {
            sent: up_sent,
            received: up_recv,
            late: up_late,
        },
        serve_cpu_pct: serve_cpu * 100.0 / media_s,
        gen_cpu_pct: gen_cpu * 100.0 / media_s,
        setup,
    };
    println!(
        "STEP legs={n} connected={connected} failed={} setup_s={:.1} down_sent={down_sent} \
         down_recv={down_recv} up_sent={up_sent} up_recv={up_recv} late={} loss_pct={:.3} \
         serve_cpu_pct={:.1} gen_cpu_pct={:.1} behind_p99_ms={} jitter_ms={jitter_mean:.2} \
         jitter_max_ms={jitter_max:.2} serve_drops={serve_drops} gen_drops={gen_drops} \
         send_failed={send_failed} serve_closed={serve_closed} pass={}",
        step.failed(),
        setup.as_secs_f64(),
        down_late + up_late,
        step.loss_pct(),
        step.serve_cpu_pct,
        step.gen_cpu_pct,
        behind.percentile_ms(0.99),
        step.passes(),
    );
    Ok(step)
}

/// Counts the datagrams arriving on `sock` from the sources in `map` (source -> stream) until
/// `until`; returns (stream, counts) and how far behind their pace packets arrived.
async fn receive(
    sock: Rc<UdpSocket>,
    map: HashMap<SocketAddr, usize>,
    base: Instant,
    until: tokio::time::Instant,
) -> (Vec<(usize, Rx)>, DelayHistogram) {
    let mut behind = DelayHistogram::default();
    let mut rx: HashMap<SocketAddr, Rx> = HashMap::with_capacity(map.len());
    let mut buf = [0u8; 2048];
    // Wait for readability, then read without waiting (no timer per datagram), at most 64
    // datagrams before letting the other tasks (the browser legs) run.
    while let Ok(Ok(())) = timeout_at(until, sock.readable()).await {
        for _ in 0..64 {
            let Ok((n, from)) = sock.try_recv_from(&mut buf) else {
                break;
            };
            if !map.contains_key(&from) {
                continue;
            }
            let Ok(p) = RtpPacket::parse(&buf[..n]) else {
                continue;
            };
            let r = rx.entry(from).or_default();
            let arrival = base.elapsed().as_nanos() as u64;
            r.received += 1;
            let first = *r.first.get_or_insert((arrival, p.timestamp));
            let b = ramp::behind_ns(first, arrival, p.timestamp);
            behind.add(b);
            if b > (LATE_MS * 1_000_000) as i64 {
                r.late += 1;
            }
            r.jitter.arrived(arrival, p.timestamp);
        }
        tokio::task::yield_now().await;
    }
    let counts = map
        .into_iter()
        .map(|(from, stream)| (stream, rx.get(&from).copied().unwrap_or_default()))
        .collect();
    (counts, behind)
}
