//! `relay-bench`: the two processes of `scripts/bench-relay`.
//!
//! - `relay-bench serve --control ADDR --ports MIN-MAX`: our relay in a process of its own (so
//!   its CPU time and memory can be read from /proc alone), opening bridged PCMU sessions on
//!   request over a line protocol on a UDP control socket (`ping`, `open ID CALLER AGENT` ->
//!   `ok ID CALLER_PORT AGENT_PORT`, `quit`).
//! - `relay-bench gen --target ours|rtpengine --control ADDR --pid PID --calls N --secs S`:
//!   opens N calls on the relay under test (ours over the line protocol, rtpengine over its ng
//!   protocol: bencoded offer/answer), sends 20 ms G.711 packets both ways on every call for S
//!   seconds, and measures at the receivers: loss, added jitter, and the relay process's CPU
//!   seconds and RSS. Arrivals are the kernel's receive stamps (SO_TIMESTAMPNS), so the
//!   generator's own scheduling is not counted as relay jitter. Prints one
//!   `BENCH key=value ...` line.
//!
//! Why here: the generator drives both relays the same way, so their numbers compare.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::socket;
use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;
use switchboard_relay::{Leg, MediaEvent, Relay, RelayConfig, Session};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

type Res<T> = Result<T, String>;

/// Calls whose streams share one generator socket per side.
const CALLS_PER_SOCKET: usize = 50;
/// Receive buffer of a generator socket: room for a second of its streams if descheduled.
const GEN_RCVBUF: usize = 2 << 20;
/// Histogram of jitter samples: 10 µs buckets up to 200 ms.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;
const FRAME_MS: u64 = 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: relay-bench serve|gen --key value ...");
        return ExitCode::from(2);
    };
    let opts = match parse_opts(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match mode.as_str() {
        "serve" => rt.block_on(serve(&opts)),
        // The generator's receivers share `Rc` sockets: one thread, a local task set.
        "gen" => rt.block_on(tokio::task::LocalSet::new().run_until(generate(&opts))),
        other => Err(format!("unknown mode {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_opts(args: &[String]) -> Res<HashMap<String, String>> {
    let mut opts = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --key, got {k}"))?;
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        opts.insert(key.to_string(), v.clone());
    }
    Ok(opts)
}

fn opt<T: std::str::FromStr>(o: &HashMap<String, String>, key: &str) -> Res<T> {
    o.get(key)
        .ok_or_else(|| format!("--{key} is required"))?
        .parse()
        .map_err(|_| format!("--{key}: invalid value"))
}

// ---------------------------------------------------------------------------------------------
// serve

async fn serve(o: &HashMap<String, String>) -> Res<()> {
    let control: SocketAddr = opt(o, "control")?;
    let ports: String = opt(o, "ports")?;
    let (min, max) = ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .ok_or("--ports MIN-MAX")?;
    let mut cfg = RelayConfig::new(control.ip(), min, max);
    cfg.rtp_timeout = Duration::from_secs(120);
    let relay = Relay::new(cfg).map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind(control)
        .await
        .map_err(|e| format!("control {control}: {e}"))?;
    let mut sessions: Vec<(Session, mpsc::Receiver<MediaEvent>)> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["ping"] => "pong".to_string(),
            ["stats"] => {
                // Totals over all sessions: what the relay itself counted.
                let (mut pin, mut pout, mut send_err, mut dropped) = (0u64, 0u64, 0u64, 0u64);
                for (s, _) in &sessions {
                    if let Ok(st) = s.stats().await {
                        for l in [&st.caller, &st.agent] {
                            pin += l.packets_in;
                            pout += l.packets_out;
                            send_err += l.send_errors;
                            dropped += l.dropped_foreign + l.dropped_invalid;
                        }
                    }
                }
                format!(
                    "stats relay_in={pin} relay_out={pout} relay_send_errors={send_err} \
                     relay_dropped={dropped}"
                )
            }
            ["quit"] => break,
            ["open", id, caller, agent] => match open_bridged(&relay, id, caller, agent).await {
                Ok(s) => {
                    let r = format!(
                        "ok {id} {} {}",
                        s.0.local_addr(Leg::Caller).port(),
                        s.0.local_addr(Leg::Agent).port()
                    );
                    sessions.push(s);
                    r
                }
                Err(e) => format!("err {id} {e}"),
            },
            _ => "err bad command".to_string(),
        };
        let _ = sock.send_to(reply.as_bytes(), from).await;
    }
    for (s, _) in sessions {
        let _ = s.close().await;
    }
    Ok(())
}

async fn open_bridged(
    relay: &Relay,
    id: &str,
    caller: &str,
    agent: &str,
) -> Res<(Session, mpsc::Receiver<MediaEvent>)> {
    let caller: SocketAddr = caller.parse().map_err(|_| "caller address")?;
    let agent: SocketAddr = agent.parse().map_err(|_| "agent address")?;
    let (s, ev) = relay.open(id).map_err(|e| e.to_string())?;
    s.set_peer(Leg::Caller, caller, Law::Ulaw, Some(101))
        .await
        .map_err(|e| e.to_string())?;
    s.set_peer(Leg::Agent, agent, Law::Ulaw, Some(101))
        .await
        .map_err(|e| e.to_string())?;
    s.bridge().await.map_err(|e| e.to_string())?;
    Ok((s, ev))
}

// ---------------------------------------------------------------------------------------------
// Control of the relays under test

/// Sends `msg` and waits for the reply that satisfies `accept`, retrying a few times.
async fn request(sock: &UdpSocket, to: SocketAddr, msg: &[u8], prefix: &[u8]) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send_to(msg, to).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2000);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        {
            if buf[..n].starts_with(prefix) {
                return Ok(buf[..n].to_vec());
            }
        }
    }
    Err(format!("no reply from {to}"))
}

/// Our relay: `open` answers with the two leg ports.
async fn open_ours(
    ctl: &UdpSocket,
    to: SocketAddr,
    id: usize,
    caller: SocketAddr,
    agent: SocketAddr,
) -> Res<(u16, u16)> {
    let msg = format!("open {id} {caller} {agent}");
    let prefix = format!("ok {id} ");
    let reply = request(ctl, to, msg.as_bytes(), prefix.as_bytes())
        .await
        .map_err(|e| format!("open {id}: {e}"))?;
    let text = String::from_utf8_lossy(&reply).to_string();
    let w: Vec<&str> = text.split_whitespace().collect();
    match w.as_slice() {
        ["ok", _, c, a] => Ok((
            c.parse().map_err(|_| "bad port")?,
            a.parse().map_err(|_| "bad port")?,
        )),
        _ => Err(format!("open {id}: {text}")),
    }
}

/// Minimal bencode, for rtpengine's ng protocol.
#[derive(Debug, Clone, PartialEq)]
enum Bencode {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<Bencode>),
    Dict(Vec<(Vec<u8>, Bencode)>),
}

impl Bencode {
    fn str(s: &str) -> Bencode {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::List(l) => {
                out.push(b'l');
                l.iter().for_each(|x| x.encode(out));
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                let mut d = d.clone();
                d.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (k, v) in &d {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    fn decode(b: &[u8], at: &mut usize, depth: u8) -> Option<Bencode> {
        if depth > 16 {
            return None;
        }
        match *b.get(*at)? {
            b'i' => {
                let end = *at + b[*at..].iter().position(|&c| c == b'e')?;
                let v = std::str::from_utf8(&b[*at + 1..end]).ok()?.parse().ok()?;
                *at = end + 1;
                Some(Bencode::Int(v))
            }
            b'l' => {
                *at += 1;
                let mut l = Vec::new();
                while *b.get(*at)? != b'e' {
                    l.push(Bencode::decode(b, at, depth + 1)?);
                }
                *at += 1;
                Some(Bencode::List(l))
            }
            b'd' => {
                *at += 1;
                let mut d = Vec::new();
                while *b.get(*at)? != b'e' {
                    let Bencode::Bytes(k) = Bencode::decode(b, at, depth + 1)? else {
                        return None;
                    };
                    let v = Bencode::decode(b, at, depth + 1)?;
                    d.push((k, v));
                }
                *at += 1;
                Some(Bencode::Dict(d))
            }
            b'0'..=b'9' => {
                let colon = *at + b[*at..].iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&b[*at..colon]).ok()?.parse().ok()?;
                let s = b.get(colon + 1..colon + 1 + len)?.to_vec();
                *at = colon + 1 + len;
                Some(Bencode::Bytes(s))
            }
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Bencode::Bytes(b) => Some(String::from_utf8_lossy(b).to_string()),
            _ => None,
        }
    }
}

fn sdp_for(id: usize, addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=- {id} 1 IN IP4 {ip}\r\ns=bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn sdp_audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// One ng command; returns the port in the SDP of the answer.
async fn ng(
    ctl: &UdpSocket,
    to: SocketAddr,
    cookie: &str,
    fields: Vec<(&str, Bencode)>,
) -> Res<u16> {
    let dict = Bencode::Dict(
        fields
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    );
    let mut msg = format!("{cookie} ").into_bytes();
    dict.encode(&mut msg);
    let prefix = format!("{cookie} ");
    let reply = request(ctl, to, &msg, prefix.as_bytes()).await?;
    let mut at = prefix.len();
    let d = Bencode::decode(&reply, &mut at, 0).ok_or("undecodable ng reply")?;
    let result = d.get("result").and_then(Bencode::text).unwrap_or_default();
    if result != "ok" {
        let reason = d.get("error-reason").and_then(Bencode::text);
        return Err(format!("ng result {result:?}: {reason:?}"));
    }
    let sdp = d
        .get("sdp")
        .and_then(Bencode::text)
        .ok_or("no SDP in reply")?;
    sdp_audio_port(&sdp).ok_or_else(|| format!("no m=audio port in {sdp:?}"))
}

/// rtpengine: offer (the caller's SDP) then answer (the agent's); returns the ports the
/// caller and the agent must send to.
async fn open_rtpengine(
    ctl: &UdpSocket,
    to: SocketAddr,
    id: usize,
    caller: SocketAddr,
    agent: SocketAddr,
) -> Res<(u16, u16)> {
    let call_id = format!("bench-{id}");
    let flags = || {
        vec![
            ("call-id", Bencode::str(&call_id)),
            ("from-tag", Bencode::str("caller")),
            (
                "replace",
                Bencode::List(vec![
                    Bencode::str("origin"),
                    Bencode::str("session-connection"),
                ]),
            ),
        ]
    };
    let mut offer = flags();
    offer.push(("command", Bencode::str("offer")));
    offer.push(("sdp", Bencode::Bytes(sdp_for(id, caller).into_bytes())));
    // The offer's answer SDP goes to the agent: it sends there.
    let agent_dst = ng(ctl, to, &format!("o{id}"), offer)
        .await
        .map_err(|e| format!("offer {id}: {e}"))?;
    let mut answer = flags();
    answer.push(("command", Bencode::str("answer")));
    answer.push(("to-tag", Bencode::str("agent")));
    answer.push(("sdp", Bencode::Bytes(sdp_for(id, agent).into_bytes())));
    let caller_dst = ng(ctl, to, &format!("a{id}"), answer)
        .await
        .map_err(|e| format!("answer {id}: {e}"))?;
    Ok((caller_dst, agent_dst))
}

// ---------------------------------------------------------------------------------------------
// gen

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn cpu_seconds(pid: u32, clk_tck: f64) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("no utime")?;
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("no stime")?;
    Ok((utime + stime) / clk_tck)
}

fn rss_kb(pid: u32) -> Res<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }

    fn add(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let target = ((self.count as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        (BUCKETS as u64 * BUCKET_US) as f64 / 1000.0
    }
}

/// What one receiving socket saw.
struct Received {
    packets: u64,
    /// |interarrival - intersend|, arrivals stamped by the kernel (SO_TIMESTAMPNS): the jitter
    /// the relay added. Loopback delivers a datagram inside the sender's `sendto`, so the
    /// kernel's stamp is when the relay sent it, whenever the generator gets to read it.
    added: Histogram,
    /// The same with the time the generator read the datagram: includes the generator's own
    /// scheduling (what this bench reported before kernel stamps), shown for comparison.
    added_user: Histogram,
    /// |interarrival - 20 ms| (kernel stamps).
    raw: Histogram,
    /// Kernel arrival - send time: how long the datagram spent in the relay (it lands in the
    /// relay's socket inside the generator's `sendto`, right after the send time is taken).
    delay: Histogram,
    /// Largest forwarding delay (µs) per window of the run, by arrival time (see `WINDOW_MS`).
    worst: Vec<u32>,
    /// Datagrams without a kernel stamp (the user time was used instead).
    unstamped: u64,
}

/// Width of the windows of `Received::worst` (the `--delay-log` timeline).
const WINDOW_MS: u64 = 10;

/// One datagram: its length, the sender's port, the kernel's receive time (CLOCK_REALTIME ns).
fn recv_stamped(fd: RawFd, buf: &mut [u8], cmsg: &mut [u8]) -> std::io::Result<RecvStamped> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<socket::SockaddrStorage>(
        fd,
        &mut iov,
        Some(cmsg),
        socket::MsgFlags::MSG_DONTWAIT,
    )?;
    let mut stamp = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let socket::ControlMessageOwned::ScmTimestampns(ts) = c {
                stamp = Some(ts.tv_sec() * 1_000_000_000 + ts.tv_nsec());
            }
        }
    }
    let port = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| v4.port())
            .or_else(|| a.as_sockaddr_in6().map(|v6| v6.port()))
    });
    Ok(RecvStamped {
        len: msg.bytes,
        port,
        stamp,
    })
}

struct RecvStamped {
    len: usize,
    port: Option<u16>,
    stamp: Option<i64>,
}

/// Receives on `sock` until `until`; `streams` maps the relay port a stream comes from to a
/// slot. Packets carry their send time (ns since `base`) in the first 8 payload bytes.
/// `realtime_at_base`: CLOCK_REALTIME (ns) at `base`, to put the kernel's stamps on `base`'s
/// clock.
async fn receive(
    sock: Rc<UdpSocket>,
    streams: HashMap<u16, usize>,
    base: Instant,
    realtime_at_base: i64,
    until: tokio::time::Instant,
    windows: usize,
) -> Received {
    // Per stream: (kernel arrival, user arrival, send time) of its last packet, ns since base.
    let mut last: Vec<Option<(i64, i64, i64)>> = vec![None; streams.len()];
    let mut r = Received {
        packets: 0,
        added: Histogram::new(),
        added_user: Histogram::new(),
        raw: Histogram::new(),
        delay: Histogram::new(),
        worst: vec![0; windows],
        unstamped: 0,
    };
    let fd = sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let us = |ns: i64| ns.unsigned_abs() / 1000;
    while let Ok(Ok(())) = tokio::time::timeout_at(until, sock.readable()).await {
        // Bounded drain; readiness stays set if more is queued.
        for _ in 0..256 {
            let Ok(d) = sock.try_io(tokio::io::Interest::READABLE, || {
                recv_stamped(fd, &mut buf, &mut cmsg)
            }) else {
                break;
            };
            let user = base.elapsed().as_nanos() as i64;
            let kernel = match d.stamp {
                Some(rt) => rt - realtime_at_base,
                None => {
                    r.unstamped += 1;
                    user
                }
            };
            let Some(&slot) = d.port.and_then(|p| streams.get(&p)) else {
                continue;
            };
            let Ok(p) = RtpPacket::parse(&buf[..d.len]) else {
                continue;
            };
            let Some(sent) = p
                .payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes)
            else {
                continue;
            };
            r.packets += 1;
            let delay = kernel - sent;
            r.delay.add(us(delay));
            let w = (kernel.max(0) as u64 / 1_000_000 / WINDOW_MS) as usize;
            if let Some(worst) = r.worst.get_mut(w) {
                *worst = (*worst).max(us(delay).min(u64::from(u32::MAX)) as u32);
            }
            if let Some((prev_kernel, prev_user, prev_sent)) = last[slot] {
                let inter_send = sent - prev_sent;
                // Only consecutive packets (a loss would double the interval).
                if inter_send > 0 && inter_send < 30_000_000 {
                    r.added.add(us(kernel - prev_kernel - inter_send));
                    r.added_user.add(us(user - prev_user - inter_send));
                    r.raw
                        .add(us(kernel - prev_kernel - FRAME_MS as i64 * 1_000_000));
                }
            }
            last[slot] = Some((kernel, user, sent));
        }
    }
    r
}

fn gen_socket(ip: IpAddr) -> Res<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(SocketAddr::new(ip, 0)),
        socket2::Type::DGRAM,
        None,
    )
    .map_err(|e| e.to_string())?;
    s.set_recv_buffer_size(GEN_RCVBUF)
        .map_err(|e| e.to_string())?;
    s.set_send_buffer_size(GEN_RCVBUF)
        .map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    socket::setsockopt(&s, socket::sockopt::ReceiveTimestampns, &true)
        .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    s.bind(&SocketAddr::new(ip, 0).into())
        .map_err(|e| e.to_string())?;
    UdpSocket::from_std(s.into()).map_err(|e| e.to_string())
}

/// Datagrams the kernel dropped (receive buffer full) on the sockets bound to `ports`, from
/// /proc/net/udp: tells whether a loss happened at the relay's sockets or at the generator's.
fn socket_drops(ports: &std::collections::HashSet<u16>) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f.get(1)?.rsplit_once(':')?.1;
            let port = u16::from_str_radix(port, 16).ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}

struct Stream {
    sock: usize,
    to: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

async fn generate(o: &HashMap<String, String>) -> Res<()> {
    let target: String = opt(o, "target")?;
    let control: SocketAddr = opt(o, "control")?;
    let pid: u32 = opt(o, "pid")?;
    let calls: usize = opt(o, "calls")?;
    let secs: u64 = opt(o, "secs")?;
    let clk_tck: f64 = o
        .get("clk-tck")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0);
    if calls == 0 || calls > 5000 || secs == 0 || secs > 120 {
        return Err("--calls 1..5000, --secs 1..120".into());
    }
    let ip: IpAddr = control.ip();
    let ctl = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
    // Wait until the relay under test answers on its control socket.
    match target.as_str() {
        "ours" => request(&ctl, control, b"ping", b"pong").await?,
        _ => request(&ctl, control, b"ping0 d7:command4:pinge", b"ping0 ").await?,
    };
    let rss_before = rss_kb(pid)?;

    // Generator sockets: one per CALLS_PER_SOCKET calls and side.
    let nsocks = calls.div_ceil(CALLS_PER_SOCKET);
    let mut caller_socks = Vec::with_capacity(nsocks);
    let mut agent_socks = Vec::with_capacity(nsocks);
    for _ in 0..nsocks {
        caller_socks.push(Rc::new(gen_socket(ip)?));
        agent_socks.push(Rc::new(gen_socket(ip)?));
    }
    // Stream 2i: caller -> relay -> agent; 2i+1: agent -> relay -> caller.
    let mut streams = Vec::with_capacity(2 * calls);
    let mut caller_maps = vec![HashMap::new(); nsocks];
    let mut agent_maps = vec![HashMap::new(); nsocks];
    let opened = Instant::now();
    for i in 0..calls {
        let k = i / CALLS_PER_SOCKET;
        let caller = caller_socks[k].local_addr().map_err(|e| e.to_string())?;
        let agent = agent_socks[k].local_addr().map_err(|e| e.to_string())?;
        let (caller_dst, agent_dst) = match target.as_str() {
            "ours" => open_ours(&ctl, control, i, caller, agent).await?,
            "rtpengine" => open_rtpengine(&ctl, control, i, caller, agent).await?,
            t => return Err(format!("unknown target {t}")),
        };
        // What the agent receives comes from the port the agent sends to, and so on.
        let n = agent_maps[k].len();
        agent_maps[k].insert(agent_dst, n);
        let n = caller_maps[k].len();
        caller_maps[k].insert(caller_dst, n);
        for (side, port) in [(0usize, caller_dst), (1, agent_dst)] {
            streams.push(Stream {
                sock: k * 2 + side,
                to: SocketAddr::new(ip, port),
                ssrc: (i as u32) << 1 | side as u32,
                seq: 0,
                ts: 0,
            });
        }
    }
    eprintln!(
        "{target}: {calls} calls opened in {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    let base = Instant::now();
    let realtime_at_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos() as i64
        - base.elapsed().as_nanos() as i64;
    let windows = (secs * 1000 / WINDOW_MS) as usize + 200;
    let send_for = Duration::from_secs(secs);
    let until = tokio::time::Instant::now() + send_for + Duration::from_millis(1000);
    let mut receivers = Vec::new();
    for (k, map) in agent_maps.into_iter().enumerate() {
        receivers.push(tokio::task::spawn_local(receive(
            Rc::clone(&agent_socks[k]),
            map,
            base,
            realtime_at_base,
            until,
            windows,
        )));
    }
    for (k, map) in caller_maps.into_iter().enumerate() {
        receivers.push(tokio::task::spawn_local(receive(
            Rc::clone(&caller_socks[k]),
            map,
            base,
            realtime_at_base,
            until,
            windows,
        )));
    }

    let cpu_start = cpu_seconds(pid, clk_tck)?;
    let gen_cpu_start = cpu_seconds(std::process::id(), clk_tck)?;
    let sched_start = (sched_counters(pid), sched_counters(std::process::id()));
    let socks: Vec<Rc<UdpSocket>> = (0..nsocks)
        .flat_map(|k| [Rc::clone(&caller_socks[k]), Rc::clone(&agent_socks[k])])
        .collect();
    // Calls spread over the 20 ms of a frame: call i sends in millisecond slot i % 20.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pkt = Vec::with_capacity(200);
    let mut payload = [0xFFu8; 160];
    let (mut sent, mut send_failed) = (0u64, 0u64);
    let mut next_ms = 0u64;
    let end_ms = secs * 1000;
    while next_ms < end_ms {
        tick.tick().await;
        let now_ms = (base.elapsed().as_millis() as u64).min(end_ms - 1);
        while next_ms <= now_ms {
            let slot = (next_ms % FRAME_MS) as usize;
            for call in (slot..calls).step_by(FRAME_MS as usize) {
                for st in &mut streams[2 * call..2 * call + 2] {
                    let now_ns = base.elapsed().as_nanos() as u64;
                    payload[..8].copy_from_slice(&now_ns.to_be_bytes());
                    pkt.clear();
                    RtpPacket {
                        marker: st.seq == 0,
                        payload_type: 0,
                        sequence: st.seq,
                        timestamp: st.ts,
                        ssrc: st.ssrc,
                        csrcs: Vec::new(),
                        payload: &payload,
                    }
                    .write(&mut pkt);
                    st.seq = st.seq.wrapping_add(1);
                    st.ts = st.ts.wrapping_add(160);
                    match socks[st.sock].try_send_to(&pkt, st.to) {
                        Ok(_) => sent += 1,
                        Err(_) => send_failed += 1,
                    }
                }
            }
            next_ms += 1;
        }
    }
    let cpu_end = cpu_seconds(pid, clk_tck)?;
    let gen_cpu = cpu_seconds(std::process::id(), clk_tck)? - gen_cpu_start;
    let relay_sched = sched_counters(pid).since(&sched_start.0);
    let gen_sched = sched_counters(std::process::id()).since(&sched_start.1);
    let relay_ports: std::collections::HashSet<u16> =
        streams.iter().map(|s| s.to).map(|a| a.port()).collect();
    let gen_ports: std::collections::HashSet<u16> = socks
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    let rss_after = rss_kb(pid)?;
    let (relay_drops, gen_drops) = (socket_drops(&relay_ports), socket_drops(&gen_ports));
    let mut received = 0u64;
    let mut unstamped = 0u64;
    let mut added = Histogram::new();
    let mut added_user = Histogram::new();
    let mut raw = Histogram::new();
    let mut delay = Histogram::new();
    let mut worst = vec![0u32; windows];
    for r in receivers {
        let r = timeout(Duration::from_secs(10), r)
            .await
            .map_err(|_| "receiver did not stop")?
            .map_err(|e| e.to_string())?;
        received += r.packets;
        unstamped += r.unstamped;
        added.merge(&r.added);
        added_user.merge(&r.added_user);
        raw.merge(&r.raw);
        delay.merge(&r.delay);
        for (a, b) in worst.iter_mut().zip(&r.worst) {
            *a = (*a).max(*b);
        }
    }
    let cpu = cpu_end - cpu_start;
    let loss_pct = if sent == 0 {
        100.0
    } else {
        (sent.saturating_sub(received)) as f64 * 100.0 / sent as f64
    };
    // Forwarded by the relay: what arrived, plus what the kernel dropped on the generator's
    // own full sockets (the relay did its work for those too).
    let forwarded = received + gen_drops;
    let per_mpkt = if forwarded == 0 {
        f64::INFINITY
    } else {
        cpu / (forwarded as f64 / 1e6)
    };
    let counters = relay_counters(&target, &ctl, control).await;
    if let Some(path) = o.get("delay-log") {
        // One line per window: start (ms into the run) and the largest forwarding delay (µs).
        let mut text = String::from("ms worst_delay_us\n");
        for (i, w) in worst
            .iter()
            .enumerate()
            .take((secs * 1000 / WINDOW_MS) as usize)
        {
            text.push_str(&format!("{} {w}\n", i as u64 * WINDOW_MS));
        }
        std::fs::write(path, text).map_err(|e| format!("--delay-log {path}: {e}"))?;
    }
    println!(
        "BENCH target={target} calls={calls} secs={secs} sent={sent} send_failed={send_failed} \
         received={received} forwarded={forwarded} loss_pct={loss_pct:.4} jitter_p50_ms={:.3} jitter_p90_ms={:.3} jitter_p99_ms={:.3} \
         raw_jitter_p99_ms={:.3} user_jitter_p99_ms={:.3} delay_p50_ms={:.3} delay_p99_ms={:.3} \
         delay_p999_ms={:.3} unstamped={unstamped} relay_runq_wait_ms={:.1} relay_nvcsw={} \
         gen_runq_wait_ms={:.1} cpu_s={cpu:.2} cpu_s_per_mpkt={per_mpkt:.3} rss_before_mb={:.1} rss_after_mb={:.1} \
         mb_per_call={:.4} relay_socket_drops={relay_drops} gen_socket_drops={gen_drops} \
         gen_cpu_s={gen_cpu:.2}{counters}",
        added.percentile_ms(0.5),
        added.percentile_ms(0.9),
        added.percentile_ms(0.99),
        raw.percentile_ms(0.99),
        added_user.percentile_ms(0.99),
        delay.percentile_ms(0.5),
        delay.percentile_ms(0.99),
        delay.percentile_ms(0.999),
        relay_sched.run_delay_ns as f64 / 1e6,
        relay_sched.involuntary,
        gen_sched.run_delay_ns as f64 / 1e6,
        rss_before / 1024.0,
        rss_after / 1024.0,
        (rss_after - rss_before).max(0.0) / 1024.0 / calls as f64,
    );
    if target == "ours" {
        let _ = ctl.send_to(b"quit", control).await;
    }
    Ok(())
}

/// Scheduler counters of a process, summed over its threads (rtpengine has several).
struct Sched {
    /// Time spent runnable but waiting for the CPU (/proc/PID/schedstat, second field).
    run_delay_ns: u64,
    /// Times the thread was preempted (/proc/PID/status `nonvoluntary_ctxt_switches`).
    involuntary: u64,
}

impl Sched {
    fn since(&self, start: &Sched) -> Sched {
        Sched {
            run_delay_ns: self.run_delay_ns.saturating_sub(start.run_delay_ns),
            involuntary: self.involuntary.saturating_sub(start.involuntary),
        }
    }
}

/// Zeros when the kernel does not expose them (no schedstats): a diagnostic, not a result.
fn sched_counters(pid: u32) -> Sched {
    let mut total = Sched {
        run_delay_ns: 0,
        involuntary: 0,
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        total.run_delay_ns += std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        total.involuntary += std::fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
    }
    total
}

/// Our relay's own counters, as ` key=value` pairs (empty for rtpengine).
async fn relay_counters(target: &str, ctl: &UdpSocket, control: SocketAddr) -> String {
    if target != "ours" {
        return String::new();
    }
    match request(ctl, control, b"stats", b"stats ").await {
        Ok(r) => format!(" {}", String::from_utf8_lossy(&r[6..]).trim()),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip_and_sdp_port() {
        let d = Bencode::Dict(vec![
            (b"sdp".to_vec(), Bencode::str("m=audio 30000 RTP/AVP 0\r\n")),
            (b"result".to_vec(), Bencode::str("ok")),
            (b"n".to_vec(), Bencode::Int(-3)),
            (b"l".to_vec(), Bencode::List(vec![Bencode::str("x")])),
        ]);
        let mut out = Vec::new();
        d.encode(&mut out);
        assert!(out.starts_with(b"d1:ll1:xe1:ni-3e6:result2:ok3:sdp"));
        let back = Bencode::decode(&out, &mut 0, 0).unwrap();
        assert_eq!(
            back.get("result").and_then(Bencode::text).as_deref(),
            Some("ok")
        );
        let sdp = back.get("sdp").and_then(Bencode::text).unwrap();
        assert_eq!(sdp_audio_port(&sdp), Some(30000));
        assert_eq!(Bencode::decode(b"d3:abc", &mut 0, 0), None);
    }

    fn realtime_ns() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    }

    /// The jitter is measured on the kernel's receive stamps: a generator socket must get them,
    /// taken when the datagram was sent (loopback delivers inside `send_to`), not when it was
    /// read. The kernel turns stamping on a moment after the first socket asks for it (a
    /// deferred work item), until then it stamps at read time: hence a few tries.
    #[tokio::test]
    async fn generator_sockets_get_kernel_stamps_taken_at_send_time() {
        let rx = gen_socket("127.0.0.1".parse().unwrap()).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut seen = Vec::new();
        for _ in 0..50 {
            let before = realtime_ns();
            tx.send_to(b"stamp me", rx.local_addr().unwrap()).unwrap();
            let after = realtime_ns();
            rx.readable().await.unwrap();
            let mut buf = [0u8; 64];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let d = rx
                .try_io(tokio::io::Interest::READABLE, || {
                    recv_stamped(rx.as_raw_fd(), &mut buf, &mut cmsg)
                })
                .unwrap();
            assert_eq!(&buf[..d.len], b"stamp me");
            assert_eq!(d.port, Some(tx.local_addr().unwrap().port()));
            let Some(stamp) = d.stamp else {
                panic!("no SO_TIMESTAMPNS stamp");
            };
            if before <= stamp && stamp <= after {
                return;
            }
            seen.push((before, stamp, after));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no stamp between the clock reads around send_to: {seen:?}");
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::new();
        for us in 0..1000 {
            h.add(us);
        }
        assert!((h.percentile_ms(0.99) - 0.99).abs() < 0.011);
    }
}
