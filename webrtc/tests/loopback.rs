#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two legs over loopback: the gateway role and the browser role (full ICE, DTLS active),
//! each bridged to a plain RTP socket that plays the relay. Real ICE, DTLS and SRTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;
use switchboard_media::tone;
use switchboard_webrtc::{
    CloseReason, Codec, Endpoint, LegEvent, LegHandle, Role, WebrtcConfig, WebrtcError,
};
use tokio::net::UdpSocket;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Port ranges from 7000: below the api tests' (8000 and up) and the kernel's ephemeral ports
/// (32768 and up, where tests find free ports for sipp).
fn config(port_min: u16, consent_s: u64) -> WebrtcConfig {
    WebrtcConfig {
        bind_ip: LOCAL,
        advertised_ip: LOCAL,
        port_min,
        port_max: port_min + 49,
        consent_timeout: Duration::from_secs(consent_s),
        max_legs: 4,
        max_sdp_bytes: 16384,
    }
}

/// Sends `secs` of a tone as 20 ms G.711 packets to `to`.
async fn send_tone(socket: &UdpSocket, to: SocketAddr, freq: f64, law: Law, secs: f64) {
    let pt = match law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    };
    let packets = (secs * 50.0) as usize;
    let samples = tone::sine(freq, 8000, 160 * packets, 0.4);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in samples.chunks(160).enumerate() {
        tick.tick().await;
        let mut payload = Vec::new();
        law.encode(frame, &mut payload);
        let mut out = Vec::new();
        RtpPacket {
            marker: i == 0,
            payload_type: pt,
            sequence: i as u16,
            timestamp: (i * 160) as u32,
            ssrc: 0x5eed,
            csrcs: Vec::new(),
            payload: &payload,
        }
        .write(&mut out);
        socket.send_to(&out, to).await.unwrap();
    }
}

/// Collects what arrives on `socket` for `secs`, decoded; returns (samples, payload types).
async fn receive(socket: &UdpSocket, secs: f64) -> (Vec<i16>, Vec<u8>) {
    let mut samples = Vec::new();
    let mut pts = Vec::new();
    let mut buf = [0u8; 2048];
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
        let Ok(p) = RtpPacket::parse(&buf[..n]) else {
            continue;
        };
        pts.push(p.payload_type);
        match p.payload_type {
            0 => Law::Ulaw.decode(p.payload, &mut samples),
            8 => Law::Alaw.decode(p.payload, &mut samples),
            _ => {}
        }
    }
    (samples, pts)
}

async fn connected(leg: &mut LegHandle) {
    let ev = tokio::time::timeout(Duration::from_secs(10), leg.next_event())
        .await
        .expect("connected in time");
    assert_eq!(ev, Some(LegEvent::Connected));
}

struct Pair {
    gateway: LegHandle,
    browser: LegHandle,
    /// Plays the relay (behind the gateway leg) and the browser's microphone/speaker.
    relay: UdpSocket,
    phone: UdpSocket,
}

async fn sockets() -> (UdpSocket, UdpSocket) {
    (
        UdpSocket::bind((LOCAL, 0)).await.unwrap(),
        UdpSocket::bind((LOCAL, 0)).await.unwrap(),
    )
}

/// The gateway offers, the browser answers.
async fn gateway_offers(base: u16, browser_codecs: Vec<Codec>, consent_s: u64) -> Pair {
    let gw = Endpoint::new(config(base, consent_s), Role::Gateway).unwrap();
    let br = Endpoint::new(
        config(base + 50, consent_s),
        Role::Browser {
            codecs: browser_codecs,
        },
    )
    .unwrap();
    let (relay, phone) = sockets().await;
    let (offered, offer) = gw.offer(Law::Ulaw).unwrap();
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    assert!(offer.contains("a=ice-lite"), "{offer}");
    assert!(offer.contains("a=rtcp-mux"), "{offer}");
    let (bleg, answer) = br.answer(offer.as_bytes(), Law::Ulaw).unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
    let gleg = offered.accept_answer(answer.as_bytes()).unwrap();
    let mut gateway = gleg.start(relay.local_addr().unwrap()).unwrap();
    let mut browser = bleg.start(phone.local_addr().unwrap()).unwrap();
    connected(&mut gateway).await;
    connected(&mut browser).await;
    Pair {
        gateway,
        browser,
        relay,
        phone,
    }
}

/// Tones both ways: the relay's reaches the browser's speaker, the browser's the relay.
async fn tones_cross(p: &Pair, relay_law: Law) {
    let to_gateway = p.gateway.relay_side_addr();
    let to_browser = p.browser.relay_side_addr();
    let ((heard_by_relay, relay_pts), (heard_by_phone, _), (), ()) = tokio::join!(
        receive(&p.relay, 2.0),
        receive(&p.phone, 2.0),
        send_tone(&p.relay, to_gateway, 1000.0, relay_law, 1.6),
        send_tone(&p.phone, to_browser, 1700.0, Law::Ulaw, 1.6),
    );
    assert!(
        heard_by_phone.len() > 4000,
        "{} samples",
        heard_by_phone.len()
    );
    assert!(
        heard_by_relay.len() > 4000,
        "{} samples",
        heard_by_relay.len()
    );
    let tail = |s: &[i16]| s[s.len() - 4000..].to_vec();
    let phone_ratio = tone::tone_ratio(&tail(&heard_by_phone), 1000.0, 8000);
    let relay_ratio = tone::tone_ratio(&tail(&heard_by_relay), 1700.0, 8000);
    assert!(phone_ratio > 0.5, "browser heard 1 kHz at {phone_ratio}");
    assert!(relay_ratio > 0.5, "relay heard 1.7 kHz at {relay_ratio}");
    let law_pt = match relay_law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    };
    assert!(relay_pts.iter().all(|&pt| pt == law_pt), "{relay_pts:?}");
}

#[tokio::test]
async fn gateway_offer_pcmu_media_both_ways_then_consent_lost() {
    let p = gateway_offers(7_000, vec![Codec::Pcmu, Codec::Opus], 2).await;
    assert_eq!(p.gateway.codec(), Codec::Pcmu);
    tones_cross(&p, Law::Ulaw).await;
    let stats = p.gateway.stats().await.unwrap();
    assert!(stats.consent_checks > 0, "{stats:?}");
    assert!(stats.to_relay > 50 && stats.to_browser > 50, "{stats:?}");
    // The browser goes silent: no STUN, no media. Consent runs out (2 s here).
    let Pair {
        mut gateway,
        browser,
        ..
    } = p;
    drop(browser);
    let started = std::time::Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(6), gateway.next_event())
        .await
        .expect("closed in time");
    assert_eq!(ev, Some(LegEvent::Closed(CloseReason::ConsentLost)));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn browser_offer_opus_only_is_transcoded() {
    let gw = Endpoint::new(config(7_200, 30), Role::Gateway).unwrap();
    let br = Endpoint::new(
        config(7_250, 30),
        Role::Browser {
            codecs: vec![Codec::Opus],
        },
    )
    .unwrap();
    let (relay, phone) = sockets().await;
    let (offered, offer) = br.offer(Law::Ulaw).unwrap();
    let (gleg, answer) = gw.answer(offer.as_bytes(), Law::Alaw).unwrap();
    assert_eq!(gleg.codec(), Codec::Opus);
    assert_eq!(gleg.relay_law(), Law::Alaw);
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let bleg = offered.accept_answer(answer.as_bytes()).unwrap();
    let mut gateway = gleg.start(relay.local_addr().unwrap()).unwrap();
    let mut browser = bleg.start(phone.local_addr().unwrap()).unwrap();
    connected(&mut gateway).await;
    connected(&mut browser).await;
    let p = Pair {
        gateway,
        browser,
        relay,
        phone,
    };
    tones_cross(&p, Law::Alaw).await;
}

#[tokio::test]
async fn browser_offer_with_pcmu_gets_pcmu_and_limits_hold() {
    let mut cfg = config(7_400, 30);
    cfg.max_legs = 1;
    let gw = Endpoint::new(cfg, Role::Gateway).unwrap();
    let br = Endpoint::new(
        config(7_450, 30),
        Role::Browser {
            codecs: vec![Codec::Opus, Codec::Pcmu],
        },
    )
    .unwrap();
    let (offered, offer) = br.offer(Law::Ulaw).unwrap();
    let (gleg, answer) = gw.answer(offer.as_bytes(), Law::Ulaw).unwrap();
    assert_eq!(gleg.codec(), Codec::Pcmu);
    assert!(
        answer.contains("m=audio") && !answer.contains("opus"),
        "{answer}"
    );
    // One leg at most: the next is refused until this one is gone.
    let (_, offer2) = br.offer(Law::Ulaw).unwrap();
    assert!(matches!(
        gw.answer(offer2.as_bytes(), Law::Ulaw),
        Err(WebrtcError::TooManyLegs)
    ));
    assert_eq!(gw.legs(), 1);
    drop(offered);
    drop(gleg);
    assert_eq!(gw.legs(), 0);
    // A bad offer is refused with its reason, and leaves nothing behind.
    let no_mux = offer2.replace("a=rtcp-mux\r\n", "");
    let err = gw.answer(no_mux.as_bytes(), Law::Ulaw).unwrap_err();
    assert_eq!(err.to_string(), "rtcp-mux required");
    assert_eq!(gw.legs(), 0);
}

/// A browser whose certificate does not match the fingerprint in its answer: the gateway's
/// leg fails DTLS, ends with that reason, and the endpoint counts it; started legs and
/// refusals are counted too.
#[tokio::test]
async fn a_fingerprint_mismatch_is_a_dtls_failure_and_counted() {
    let gw = Endpoint::new(config(7_600, 30), Role::Gateway).unwrap();
    let br = Endpoint::new(
        config(7_650, 30),
        Role::Browser {
            codecs: vec![Codec::Pcmu],
        },
    )
    .unwrap();
    let (relay, phone) = sockets().await;
    let (offered, offer) = gw.offer(Law::Ulaw).unwrap();
    let (bleg, answer) = br.answer(offer.as_bytes(), Law::Ulaw).unwrap();
    // Another browser's fingerprint in this browser's answer.
    let (_other, other_offer) = br.offer(Law::Ulaw).unwrap();
    let fingerprint = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .expect("a fingerprint")
            .to_owned()
    };
    let forged = answer.replace(&fingerprint(&answer), &fingerprint(&other_offer));
    assert_ne!(forged, answer);
    let gleg = offered.accept_answer(forged.as_bytes()).unwrap();
    let mut gateway = gleg.start(relay.local_addr().unwrap()).unwrap();
    let _browser = bleg.start(phone.local_addr().unwrap()).unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), gateway.next_event())
        .await
        .expect("closed in time");
    assert!(
        matches!(ev, Some(LegEvent::Closed(CloseReason::DtlsFailed(_)))),
        "{ev:?}"
    );
    let no_mux = other_offer.replace("a=rtcp-mux\r\n", "");
    assert!(gw.answer(no_mux.as_bytes(), Law::Ulaw).is_err());
    let stats = gw.stats();
    assert_eq!(stats.dtls_failed, 1, "{stats:?}");
    assert_eq!(stats.consent_lost, 0, "{stats:?}");
    assert_eq!(
        stats.started,
        vec![(Codec::Pcmu, 1), (Codec::Pcma, 0), (Codec::Opus, 0)]
    );
    assert_eq!(stats.refused.get("no_rtcp_mux"), Some(&1), "{stats:?}");
}
