//! The relay against real loopback UDP endpoints: what a phone or trunk would see.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;
use switchboard_media::tone::{dominant_tone, sine};
use switchboard_relay::rtcp::{self, ReportBlock};
use switchboard_relay::{Leg, MediaEvent, Prompt, Relay, RelayConfig, RelayError, Session};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(3);
const TONES: [f64; 3] = [440.0, 1000.0, 1500.0];

/// A relay on its own port range (tests run in parallel).
fn relay(port_min: u16, port_max: u16) -> Arc<Relay> {
    let mut cfg = RelayConfig::new("127.0.0.1".parse().unwrap(), port_min, port_max);
    cfg.rtcp_interval = Duration::from_millis(100);
    Relay::new(cfg).unwrap()
}

/// A phone: an RTP socket with its RTCP socket on the port above.
struct Ep {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl Ep {
    async fn new() -> Ep {
        for _ in 0..100 {
            let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = rtp.local_addr().unwrap().port();
            if port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
                return Ep {
                    rtp,
                    rtcp,
                    ssrc: rand_u32(port),
                    seq: 100,
                    ts: 8000,
                };
            }
        }
        panic!("no RTP/RTCP port pair for a test endpoint");
    }

    fn addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    async fn send(&mut self, to: SocketAddr, pt: u8, payload: &[u8]) {
        let b = packet(pt, self.seq, self.ts, self.ssrc, false, payload);
        self.rtp.send_to(&b, to).await.unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }

    /// `frames` 20 ms frames of a tone, encoded with `law`.
    async fn send_tone(&mut self, to: SocketAddr, law: Law, freq: f64, frames: usize) {
        let pcm = sine(freq, 8000, 160 * frames, 0.4);
        for frame in pcm.chunks(160) {
            let mut enc = Vec::new();
            law.encode(frame, &mut enc);
            self.send(to, pt_of(law), &enc).await;
        }
    }

    async fn recv(&self, n: usize) -> Vec<Vec<u8>> {
        recv_n(&self.rtp, n, WAIT).await
    }
}

fn rand_u32(seed: u16) -> u32 {
    u32::from(seed).wrapping_mul(2_654_435_761) ^ 0x5EED
}

fn pt_of(law: Law) -> u8 {
    match law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    }
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    RtpPacket {
        marker,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
        csrcs: vec![],
        payload,
    }
    .write(&mut out);
    out
}

/// Up to `n` datagrams, or fewer if `within` passes first.
async fn recv_n(sock: &UdpSocket, n: usize, within: Duration) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => got.push(buf[..len].to_vec()),
            _ => break,
        }
    }
    got
}

fn decode(packets: &[Vec<u8>], law: Law) -> Vec<i16> {
    let mut pcm = Vec::new();
    for p in packets {
        let p = RtpPacket::parse(p).unwrap();
        assert_eq!(p.payload_type, pt_of(law));
        law.decode(p.payload, &mut pcm);
    }
    pcm
}

async fn bridged(
    relay: &Relay,
    caller_law: Law,
    agent_law: Law,
) -> (Session, mpsc::Receiver<MediaEvent>, Ep, Ep) {
    let (s, ev) = relay.open("test-call").unwrap();
    let (c, a) = (Ep::new().await, Ep::new().await);
    s.set_peer(Leg::Caller, c.addr(), caller_law, Some(101))
        .await
        .unwrap();
    s.set_peer(Leg::Agent, a.addr(), agent_law, Some(96))
        .await
        .unwrap();
    s.bridge().await.unwrap();
    (s, ev, c, a)
}

/// Next event that is not `Latched`.
async fn next_event(ev: &mut mpsc::Receiver<MediaEvent>, within: Duration) -> Option<MediaEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Some(MediaEvent::Latched { .. })) => continue,
            Ok(e) => return e,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn bridge_relays_a_tone_both_ways() {
    let relay = relay(21000, 21099);
    let (s, mut ev, mut c, mut a) = bridged(&relay, Law::Ulaw, Law::Ulaw).await;
    let (caller_port, agent_port) = (s.local_addr(Leg::Caller), s.local_addr(Leg::Agent));
    c.send_tone(caller_port, Law::Ulaw, 1000.0, 25).await;
    a.send_tone(agent_port, Law::Ulaw, 1500.0, 25).await;
    let at_agent = a.recv(25).await;
    let at_caller = c.recv(25).await;
    assert_eq!((at_agent.len(), at_caller.len()), (25, 25));
    assert_eq!(
        dominant_tone(&decode(&at_agent, Law::Ulaw), &TONES, 8000),
        Some(1000.0)
    );
    assert_eq!(
        dominant_tone(&decode(&at_caller, Law::Ulaw), &TONES, 8000),
        Some(1500.0)
    );
    let mut latched = Vec::new();
    while let Ok(e) = ev.try_recv() {
        latched.push(e);
    }
    assert!(latched.contains(&MediaEvent::Latched {
        leg: Leg::Caller,
        addr: c.addr()
    }));
    assert!(latched.contains(&MediaEvent::Latched {
        leg: Leg::Agent,
        addr: a.addr()
    }));
    let stats = s.close().await.unwrap();
    assert_eq!(stats.caller.packets_in, 25);
    assert_eq!(stats.agent.packets_out, 25);
    assert_eq!(stats.agent.bytes_out, 25 * 160);
    assert_eq!(stats.caller.packets_lost, 0);
    assert!(stats.caller.mos > 4.0, "{}", stats.caller.mos);
}

#[tokio::test]
async fn pcmu_and_pcma_legs_are_transcoded() {
    let relay = relay(21100, 21199);
    let (s, _ev, mut c, mut a) = bridged(&relay, Law::Ulaw, Law::Alaw).await;
    c.send_tone(s.local_addr(Leg::Caller), Law::Ulaw, 1000.0, 25)
        .await;
    a.send_tone(s.local_addr(Leg::Agent), Law::Alaw, 440.0, 25)
        .await;
    let at_agent = a.recv(25).await;
    let at_caller = c.recv(25).await;
    // `decode` checks the payload type: PCMA (8) toward the agent, PCMU (0) toward the caller.
    assert_eq!(
        dominant_tone(&decode(&at_agent, Law::Alaw), &TONES, 8000),
        Some(1000.0)
    );
    assert_eq!(
        dominant_tone(&decode(&at_caller, Law::Ulaw), &TONES, 8000),
        Some(440.0)
    );
}

#[tokio::test]
async fn other_sources_are_dropped_after_latching() {
    let relay = relay(21200, 21299);
    let (s, _ev, mut c, a) = bridged(&relay, Law::Ulaw, Law::Ulaw).await;
    let port = s.local_addr(Leg::Caller);
    c.send_tone(port, Law::Ulaw, 1000.0, 10).await;
    assert_eq!(a.recv(10).await.len(), 10);
    // Another host (address) and the same host with another SSRC try to inject audio.
    let mut intruder = Ep::new().await;
    intruder.send_tone(port, Law::Ulaw, 1500.0, 10).await;
    let real_ssrc = c.ssrc;
    c.ssrc ^= 0xFFFF;
    c.send_tone(port, Law::Ulaw, 1500.0, 10).await;
    c.ssrc = real_ssrc;
    c.send_tone(port, Law::Ulaw, 1000.0, 10).await;
    // All 30 went to the same relay socket, in order: once the 10 legit ones are through,
    // anything injected would have been relayed already.
    let mut got = a.recv(10).await;
    got.extend(recv_n(&a.rtp, 20, Duration::from_millis(100)).await);
    assert_eq!(got.len(), 10, "only the latched source gets through");
    assert_eq!(
        dominant_tone(&decode(&got, Law::Ulaw), &TONES, 8000),
        Some(1000.0)
    );
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.caller.dropped_foreign, 20);
    assert_eq!(stats.caller.latched, Some(c.addr()));
    assert_eq!(stats.caller.packets_in, 20);
}

#[tokio::test]
async fn prompt_then_bridge_keeps_ssrc_seq_and_timestamps_continuous() {
    let relay = relay(21300, 21399);
    let (s, _ev) = relay.open("moh").unwrap();
    let (c, mut a) = (Ep::new().await, Ep::new().await);
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.set_peer(Leg::Agent, a.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    let music: Arc<[i16]> = sine(440.0, 8000, 800, 0.3).into();
    s.play(Leg::Caller, Prompt::looped(music)).await.unwrap();
    let mut got = c.recv(8).await;
    assert_eq!(
        got.len(),
        8,
        "8 frames of music (it loops past its 5 frames)"
    );
    assert_eq!(
        dominant_tone(&decode(&got, Law::Ulaw), &TONES, 8000),
        Some(440.0)
    );
    s.bridge().await.unwrap();
    let agent_frame = [0x55u8; 160];
    for _ in 0..10 {
        a.send(s.local_addr(Leg::Agent), 0, &agent_frame).await;
    }
    // Music frames still in flight come first; then the agent's 10.
    let deadline = Instant::now() + WAIT;
    while got.iter().filter(|p| p[12..] == agent_frame).count() < 10 && Instant::now() < deadline {
        got.extend(c.recv(1).await);
    }
    let parsed: Vec<RtpPacket<'_>> = got.iter().map(|p| RtpPacket::parse(p).unwrap()).collect();
    assert_eq!(
        parsed.iter().filter(|p| p.payload == agent_frame).count(),
        10
    );
    for w in parsed.windows(2) {
        assert_eq!(w[1].ssrc, w[0].ssrc, "one SSRC");
        assert_eq!(
            w[1].sequence,
            w[0].sequence.wrapping_add(1),
            "no sequence gap"
        );
        assert_eq!(
            w[1].timestamp,
            w[0].timestamp.wrapping_add(160),
            "timestamps +20 ms"
        );
    }
    let first_agent = parsed
        .iter()
        .position(|p| p.payload == agent_frame)
        .unwrap();
    assert!(first_agent >= 8);
    assert!(parsed[first_agent].marker, "marker on the change of source");
    assert!(parsed[first_agent + 1..].iter().all(|p| !p.marker));
}

#[tokio::test]
async fn a_prompt_played_once_is_paced_and_ends_with_an_event() {
    let relay = relay(21400, 21499);
    let (s, mut ev) = relay.open("announcement").unwrap();
    let c = Ep::new().await;
    s.set_peer(Leg::Caller, c.addr(), Law::Alaw, None)
        .await
        .unwrap();
    // 5.5 frames: the last one is padded with silence.
    let pcm: Arc<[i16]> = sine(1000.0, 8000, 880, 0.3).into();
    let started = Instant::now();
    s.play(Leg::Caller, Prompt::once(pcm)).await.unwrap();
    let got = c.recv(6).await;
    assert_eq!(got.len(), 6);
    assert!(
        started.elapsed() >= Duration::from_millis(95),
        "paced at 20 ms: {:?}",
        started.elapsed()
    );
    assert_eq!(
        next_event(&mut ev, WAIT).await,
        Some(MediaEvent::PromptEnded { leg: Leg::Caller })
    );
    assert!(
        recv_n(&c.rtp, 1, Duration::from_millis(100))
            .await
            .is_empty(),
        "nothing after the end"
    );
    assert_eq!(s.stats().await.unwrap().caller.packets_out, 6);
}

fn event_packets(got: &[Vec<u8>], pt: u8) -> Vec<(u32, bool, TelephoneEvent)> {
    got.iter()
        .map(|b| RtpPacket::parse(b).unwrap())
        .filter(|p| p.payload_type == pt)
        .map(|p| {
            (
                p.timestamp,
                p.marker,
                TelephoneEvent::parse(p.payload).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn dtmf_is_sent_detected_once_and_passed_through_with_the_payload_type_remapped() {
    let relay = relay(21500, 21599);
    let (s, mut ev, c, mut a) = bridged(&relay, Law::Ulaw, Law::Alaw).await;

    // Toward the caller: 100 ms of '5' = 4 updates, then 3 end packets, all one timestamp.
    s.send_dtmf(Leg::Caller, '5', Duration::from_millis(100))
        .await
        .unwrap();
    // Then one frame of silence at the event's end, and the agent's audio continues after it.
    let got = c.recv(8).await;
    let sent = event_packets(&got, 101);
    assert_eq!(sent.len(), 7, "{sent:?}");
    a.send(s.local_addr(Leg::Agent), 8, &[0xD5; 160]).await;
    let audio: Vec<Vec<u8>> = got[7..].iter().cloned().chain(c.recv(1).await).collect();
    let all: Vec<RtpPacket<'_>> = got[..7]
        .iter()
        .chain(&audio)
        .map(|b| RtpPacket::parse(b).unwrap())
        .collect();
    assert_eq!(all.len(), 9);
    for w in all.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
        assert_eq!(w[1].ssrc, w[0].ssrc);
    }
    assert_eq!(all[7].payload_type, 0);
    assert_eq!(
        all[7].timestamp,
        all[0].timestamp.wrapping_add(800),
        "silence at the end"
    );
    assert_eq!(
        all[8].timestamp,
        all[0].timestamp.wrapping_add(960),
        "audio after it"
    );
    assert!(
        sent.iter()
            .all(|(ts, _, e)| *ts == sent[0].0 && e.event == 5)
    );
    assert!(sent[0].1, "marker on the first packet");
    assert_eq!(sent.iter().filter(|(_, _, e)| e.end).count(), 3);
    assert_eq!(sent[6].2.duration, 800);
    assert!(matches!(
        s.send_dtmf(Leg::Caller, 'x', Duration::from_millis(100))
            .await,
        Err(RelayError::InvalidDigit('x'))
    ));

    // From the agent: '#' then '1', each with its 3 end packets.
    let to = s.local_addr(Leg::Agent);
    for (digit, event) in [('#', 11u8), ('1', 1)] {
        let ts = a.ts;
        for (duration, end) in [
            (160, false),
            (320, false),
            (480, true),
            (480, true),
            (480, true),
        ] {
            let te = TelephoneEvent {
                event,
                end,
                volume: 10,
                duration,
            };
            let b = packet(96, a.seq, ts, a.ssrc, duration == 160, &te.to_bytes());
            a.rtp.send_to(&b, to).await.unwrap();
            a.seq += 1;
        }
        a.ts += 480;
        assert_eq!(
            next_event(&mut ev, WAIT).await,
            Some(MediaEvent::Dtmf {
                leg: Leg::Agent,
                digit
            })
        );
    }
    assert_eq!(
        next_event(&mut ev, Duration::from_millis(100)).await,
        None,
        "one event per digit"
    );
    let passed = event_packets(&c.recv(10).await, 101);
    assert_eq!(passed.len(), 10);
    assert_eq!(passed[0].2.event, 11);
    assert_eq!(passed[9].2.event, 1);
}

#[tokio::test]
async fn rtcp_reports_loss_from_sequence_gaps_and_reads_the_remote_reports() {
    let relay = relay(21600, 21699);
    let (s, _ev) = relay.open("rtcp").unwrap();
    let mut c = Ep::new().await;
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    let port = s.local_addr(Leg::Caller);
    for i in 0..30u16 {
        if (10..13).contains(&i) {
            c.seq += 1; // lost on the way
            c.ts += 160;
            continue;
        }
        c.send(port, 0, &[0xFF; 160]).await;
    }
    // The relay's report about our stream shows the 3 lost packets.
    let deadline = Instant::now() + WAIT;
    let mut relay_ssrc = None;
    while Instant::now() < deadline && relay_ssrc.is_none() {
        for r in recv_n(&c.rtcp, 1, Duration::from_millis(300)).await {
            let reports = rtcp::parse_compound(&r).unwrap();
            if reports[0]
                .blocks
                .iter()
                .any(|b| b.ssrc == c.ssrc && b.cumulative_lost == 3)
            {
                relay_ssrc = Some(reports[0].sender_ssrc);
            }
        }
    }
    let relay_ssrc = relay_ssrc.expect("a report block with 3 lost");
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.caller.packets_in, 27);
    assert_eq!(stats.caller.packets_lost, 3);
    assert!((stats.caller.loss_pct - 10.0).abs() < 1e-9);
    assert!(stats.caller.rtcp_out >= 1);
    assert!(
        stats.caller.mos < 4.2,
        "10 % loss hurts: {}",
        stats.caller.mos
    );

    // Our receiver report about the relay's stream: a quarter lost.
    let mut rr = Vec::new();
    let block = ReportBlock {
        ssrc: relay_ssrc,
        fraction_lost: 64,
        jitter: 80,
        ..ReportBlock::default()
    };
    rtcp::write_compound(&mut rr, c.ssrc, None, Some(&block), "phone").unwrap();
    let rtcp_port = SocketAddr::new(port.ip(), port.port() + 1);
    c.rtcp.send_to(&rr, rtcp_port).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = s.stats().await.unwrap();
        if stats.caller.rtcp_in == 1 {
            assert_eq!(stats.caller.remote_fraction_lost, Some(0.25));
            assert_eq!(stats.caller.remote_jitter_ms, Some(10.0));
            break;
        }
        assert!(Instant::now() < deadline, "RR not read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn port_pool_exhaustion_and_reuse() {
    // Two pairs: one session.
    let relay = relay(21700, 21703);
    assert_eq!(relay.port_pairs(), 2);
    let (s, _ev) = relay.open("first").unwrap();
    assert_eq!(relay.free_port_pairs(), 0);
    assert!(matches!(
        relay.open("second"),
        Err(RelayError::PortsExhausted)
    ));
    let ports = (s.local_addr(Leg::Caller), s.local_addr(Leg::Agent));
    assert_ne!(ports.0, ports.1);
    assert_eq!(ports.0.port() % 2, 0);
    s.close().await.unwrap();
    assert_eq!(relay.free_port_pairs(), 2);
    let (again, _ev) = relay.open("again").unwrap();
    assert_eq!(relay.free_port_pairs(), 0);
    drop(again);
    // Dropping the handle ends the session too; its ports come back once its task is gone.
    let deadline = Instant::now() + WAIT;
    while relay.free_port_pairs() != 2 {
        assert!(Instant::now() < deadline, "ports not returned on drop");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // A failed open (only one pair left) gives back the pair it took.
    let relay = relay_with_pairs(21710, 3);
    let (_s, _ev) = relay.open("takes two").unwrap();
    assert!(matches!(relay.open("x"), Err(RelayError::PortsExhausted)));
    assert_eq!(relay.free_port_pairs(), 1);
}

fn relay_with_pairs(port_min: u16, pairs: u16) -> Arc<Relay> {
    relay(port_min, port_min + 2 * pairs - 1)
}

#[tokio::test]
async fn silence_raises_an_rtp_timeout_and_hold_suspends_it() {
    let mut cfg = RelayConfig::new("127.0.0.1".parse().unwrap(), 21800, 21899);
    cfg.rtp_timeout = Duration::from_millis(150);
    let relay = Relay::new(cfg).unwrap();
    let (s, mut ev) = relay.open("timeout").unwrap();
    let mut c = Ep::new().await;
    let a = Ep::new().await;
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.set_peer(Leg::Agent, a.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.hold(Leg::Agent, true).await.unwrap();
    c.send(s.local_addr(Leg::Caller), 0, &[0xFF; 160]).await;
    let sent = Instant::now();
    assert_eq!(
        next_event(&mut ev, WAIT).await,
        Some(MediaEvent::RtpTimeout { leg: Leg::Caller })
    );
    assert!(sent.elapsed() >= Duration::from_millis(140));
    // Once only, and none for the held agent leg.
    assert_eq!(next_event(&mut ev, Duration::from_millis(400)).await, None);
    timeout(WAIT, s.close()).await.unwrap().unwrap();
}

#[tokio::test]
async fn hold_stops_the_audio_and_the_tap_gets_the_frames_without_blocking() {
    let relay = relay(21900, 21999);
    let (s, _ev, mut c, a) = bridged(&relay, Law::Alaw, Law::Ulaw).await;
    let (tap_tx, mut tap_rx) = switchboard_relay::tap(4);
    s.tap(Some(tap_tx)).await.unwrap();
    let port = s.local_addr(Leg::Caller);
    c.send_tone(port, Law::Alaw, 1000.0, 10).await;
    assert_eq!(a.recv(10).await.len(), 10);
    s.hold(Leg::Agent, true).await.unwrap();
    c.send_tone(port, Law::Alaw, 1000.0, 5).await;
    assert!(
        recv_n(&a.rtp, 1, Duration::from_millis(150))
            .await
            .is_empty()
    );
    s.hold(Leg::Agent, false).await.unwrap();
    c.send_tone(port, Law::Alaw, 1000.0, 5).await;
    assert_eq!(a.recv(5).await.len(), 5);

    // Nobody read the tap: 4 frames queued, the other 16 dropped and counted.
    let mut batch = switchboard_relay::TapBatch::default();
    assert!(tap_rx.take(&mut batch), "open while the session runs");
    let frames: Vec<_> = batch.iter().collect();
    assert_eq!(frames.len(), 4);
    assert!(
        frames
            .iter()
            .all(|(f, p)| f.leg == Leg::Caller && f.law == Law::Alaw && p.len() == 160)
    );
    assert_eq!(frames[1].0.timestamp, frames[0].0.timestamp + 160);
    let mut pcm = Vec::new();
    for (f, p) in &frames {
        f.law.decode(p, &mut pcm);
    }
    assert_eq!(dominant_tone(&pcm, &TONES, 8000), Some(1000.0));
    let stats = s.close().await.unwrap();
    assert!(!tap_rx.take(&mut batch), "closed with the session");
    assert_eq!(stats.caller.tap_dropped, 16);
    assert_eq!(stats.caller.packets_in, 20);
    assert_eq!(stats.agent.packets_out, 15);
}

#[tokio::test]
async fn malformed_oversized_unnegotiated_and_early_packets_are_refused() {
    let relay = relay(22000, 22099);
    let (s, _ev) = relay.open("junk").unwrap();
    let (mut c, mut a) = (Ep::new().await, Ep::new().await);
    let (caller_port, agent_port) = (s.local_addr(Leg::Caller), s.local_addr(Leg::Agent));
    // Before the agent's SDP is known: dropped, and the leg does not latch on it.
    a.send(agent_port, 0, &[0xFF; 160]).await;
    let deadline = Instant::now() + WAIT;
    while s.stats().await.unwrap().agent.dropped_invalid == 0 {
        assert!(Instant::now() < deadline, "early packet not seen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.set_peer(Leg::Agent, a.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.bridge().await.unwrap();
    c.send(caller_port, 0, &[0xFF; 1600]).await; // over 1500 bytes
    c.send(caller_port, 18, &[0; 10]).await; // G.729: not negotiated
    c.rtp.send_to(&[0x80, 0, 0], caller_port).await.unwrap(); // truncated header
    c.send_tone(caller_port, Law::Ulaw, 1000.0, 1).await;
    assert_eq!(a.recv(1).await.len(), 1, "the valid packet is relayed");
    assert!(
        recv_n(&a.rtp, 1, Duration::from_millis(100))
            .await
            .is_empty()
    );
    let stats = s.stats().await.unwrap();
    assert_eq!(stats.agent.dropped_invalid, 1);
    assert_eq!(stats.agent.latched, None);
    assert_eq!(stats.caller.dropped_invalid, 3);
    assert_eq!(stats.caller.packets_in, 1);
}

#[tokio::test]
async fn rtcp_from_another_host_is_ignored() {
    let relay = relay(22100, 22199);
    let (s, _ev) = relay.open("rtcp-foreign").unwrap();
    let c = Ep::new().await;
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    let rtcp_port = SocketAddr::new(
        s.local_addr(Leg::Caller).ip(),
        s.local_addr(Leg::Caller).port() + 1,
    );
    let mut rr = Vec::new();
    let block = ReportBlock {
        fraction_lost: 255,
        ..ReportBlock::default()
    };
    rtcp::write_compound(&mut rr, 1, None, Some(&block), "intruder").unwrap();
    // 127.0.0.2 is another loopback address: another host as far as the relay knows.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    other.send_to(&rr, rtcp_port).await.unwrap();
    c.rtcp.send_to(&rr, rtcp_port).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = s.stats().await.unwrap();
        if stats.caller.rtcp_in + stats.caller.dropped_foreign == 2 {
            assert_eq!((stats.caller.rtcp_in, stats.caller.dropped_foreign), (1, 1));
            break;
        }
        assert!(Instant::now() < deadline, "RTCP not read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

#[tokio::test]
async fn a_wav_prompt_is_read_and_played() {
    let tone = sine(1000.0, 8000, 800, 0.3);
    let samples = Prompt::wav_samples(&wav(8000, 1, &tone)[..]).unwrap();
    assert_eq!(&samples[..], &tone[..]);
    assert!(matches!(
        Prompt::wav_samples(&wav(16000, 1, &tone)[..]),
        Err(RelayError::PromptFormat(_))
    ));
    assert!(matches!(
        Prompt::wav_samples(&wav(8000, 2, &tone)[..]),
        Err(RelayError::PromptFormat(_))
    ));
    assert!(matches!(
        Prompt::wav_samples(&b"RIFF...."[..]),
        Err(RelayError::Wav(_))
    ));

    let relay = relay(22200, 22299);
    let (s, mut ev) = relay.open("wav").unwrap();
    let c = Ep::new().await;
    s.set_peer(Leg::Caller, c.addr(), Law::Ulaw, None)
        .await
        .unwrap();
    s.play(Leg::Caller, Prompt::once(samples)).await.unwrap();
    let got = c.recv(5).await;
    assert_eq!(
        dominant_tone(&decode(&got, Law::Ulaw), &TONES, 8000),
        Some(1000.0)
    );
    assert_eq!(
        next_event(&mut ev, WAIT).await,
        Some(MediaEvent::PromptEnded { leg: Leg::Caller })
    );
}
