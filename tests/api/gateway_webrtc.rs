//! WebRTC media toward browser agents: a browser-style SIP client over WebSocket (`ws_client`)
//! whose media is str0m in the browser role (full ICE, controlling, DTLS active, a host
//! candidate on 127.0.0.1), sipp as the carrier, the test's UDP sockets as the carrier's RTP
//! and the browser's microphone and speaker (tones checked with Goertzel).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_media::g711::Law;
use switchboard_media::tone::dominant_tone;
use switchboard_webrtc::{Codec, LegEvent, LegHandle};
use tokio::net::UdpSocket;

use crate::gateway_recording::channels;
use crate::gateway_sip::*;
use crate::ws_client::*;

/// A registered, ready browser agent.
async fn ready_browser(fx: &Fixture) -> WsUa {
    let mut ua = WsUa::connect(ws_addr(fx)).await;
    let domain = format!("{}.sip.test", fx.slug);
    let ok = ua
        .register(
            &domain,
            &ua.user.clone(),
            Some(&format!("Bearer {}", fx.tenant.agent)),
        )
        .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    fx.ready(&fx.tenant.agent).await;
    ua
}

/// One sample of the gateway's Prometheus metrics, by its exact name and labels.
fn metric(fx: &Fixture, sample: &str) -> Option<f64> {
    fx.gw.gateway.metrics.render().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

fn started_with(codec: Codec) -> String {
    format!(
        "switchboard_gateway_webrtc_legs_started_total{{codec=\"{}\"}}",
        codec.name()
    )
}

const LEGS_ALIVE: &str = "switchboard_gateway_webrtc_legs";

/// Waits (2 s at most) until no WebRTC leg is alive: a leg's task ends just after its call.
async fn no_leg_alive(fx: &Fixture) {
    for _ in 0..20 {
        if metric(fx, LEGS_ALIVE) == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{LEGS_ALIVE}: {:?}", metric(fx, LEGS_ALIVE));
}

/// Each leg of the call behind `cdr` as the api shows it: (role, media, codec).
pub(crate) async fn leg_media(fx: &Fixture, cdr: &Value) -> Vec<(String, Value, Value)> {
    let id = cdr["id"].as_str().expect("a CDR id");
    let (s, call) = fx
        .app
        .get(&format!("/v1/calls/{id}"), &fx.tenant.supervisor)
        .await;
    assert!(s.is_success(), "{call}");
    call["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .map(|l| {
            let role = l["role"].as_str().unwrap_or_default().to_owned();
            (role, l["media"].clone(), l["codec"].clone())
        })
        .collect()
}

async fn connected(media: &mut LegHandle) {
    let ev = tokio::time::timeout(Duration::from_secs(10), media.next_event())
        .await
        .expect("the browser's media connects in time");
    assert_eq!(ev, Some(LegEvent::Connected));
}

/// The gateway's INVITE to the browser, answered with a str0m browser taking `codecs`; the
/// browser's microphone and speaker are `speaker` (an [`rtp_peer`]).
async fn take_call(
    ua: &mut WsUa,
    codecs: Vec<Codec>,
    speaker: SocketAddr,
) -> (Answered, LegHandle, Codec) {
    let invite = ua.sip(10).await;
    assert!(invite.starts_with("INVITE "), "{invite}");
    let offer = body_of(&invite);
    assert!(
        offer.contains("m=audio ") && offer.contains("UDP/TLS/RTP/SAVPF 0 111 126 110"),
        "the carrier's law first, then Opus, then telephone-event: {offer}"
    );
    for needed in [
        "a=setup:actpass",
        "a=ice-lite",
        "a=rtcp-mux",
        "a=fingerprint:",
    ] {
        assert!(offer.contains(needed), "{needed} in {offer}");
    }
    let (leg, sdp) = browser(codecs)
        .answer(offer.as_bytes(), Law::Ulaw)
        .expect("the browser answers");
    let codec = leg.codec();
    let d = ua.answer_invite(&invite, &sdp).await;
    let mut media = leg.start(speaker).expect("the browser's media");
    connected(&mut media).await;
    (d, media, codec)
}

/// Inbound: the caller's tone reaches the browser and the browser's the caller, over ICE,
/// DTLS and SRTP; the recording has the caller left and the browser right; the CDR exists.
#[tokio::test]
async fn gateway_webrtc_browser_agent_takes_an_inbound_call_with_tones_both_ways_and_recording() {
    inbound_call_with_tones(vec![Codec::Pcmu, Codec::Opus], Codec::Pcmu).await;
}

/// The same with a browser that takes only Opus: the gateway transcodes (libopus) between it
/// and the PCMU caller, both ways, and records the G.711 side of each.
#[tokio::test]
async fn gateway_webrtc_opus_only_browser_takes_an_inbound_call_transcoded_both_ways() {
    inbound_call_with_tones(vec![Codec::Opus], Codec::Opus).await;
}

/// A PCMU caller (sipp) rings the ready browser agent, which answers accepting `codecs` and
/// must end up on `expected`; checks tones both ways, the recording's channels and the CDR.
async fn inbound_call_with_tones(codecs: Vec<Codec>, expected: Codec) {
    let fx = fixture_configured(with_ws).await;
    assert_eq!(metric(&fx, &started_with(expected)), Some(0.0));
    let mut ua = ready_browser(&fx).await;
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let speaker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let speaker_addr = speaker.local_addr().expect("addr");
    let run_for = Duration::from_secs(12);
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, run_for));
    let browser_media = tokio::spawn(rtp_peer(speaker, AGENT_TONE, run_for));
    let caller = run_sipp(
        fx.gw.sip_addr(),
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "5000".into()),
        ],
        30,
    );
    let browser_side = async {
        let (_, media, codec) = take_call(&mut ua, codecs, speaker_addr).await;
        assert_eq!(codec, expected, "the codec the browser took");
        // The caller hangs up: the gateway BYEs the browser.
        let bye = ua.sip(15).await;
        assert!(bye.starts_with("BYE "), "{bye}");
        ua.reply(&bye, 200).await;
        media.stats().await.expect("stats")
    };
    let ((caller_ok, caller_out), stats) = tokio::join!(caller, browser_side);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(stats.connected && stats.consent_checks == 0, "{stats:?}");
    assert!(stats.to_relay > 100 && stats.to_browser > 100, "{stats:?}");
    assert_eq!(
        (stats.to_relay_dropped, stats.to_browser_dropped),
        (0, 0),
        "{stats:?}"
    );

    let caller_heard = caller_media.await.expect("caller media");
    let browser_heard = browser_media.await.expect("browser media");
    // At least 2 s (of the caller's 5 s of talk) of each tone, each way.
    let browser_windows = windows(&browser_heard.samples);
    assert!(
        browser_windows
            .iter()
            .filter(|w| **w == Some(CALLER_TONE))
            .count()
            >= 8,
        "the caller's tone reaches the browser: {browser_windows:?}"
    );
    let caller_windows = windows(&caller_heard.samples);
    assert!(
        caller_windows
            .iter()
            .filter(|w| **w == Some(AGENT_TONE))
            .count()
            >= 8,
        "the browser's tone reaches the caller: {caller_windows:?}"
    );
    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(cdr["hangup_cause"], "normal_clearing", "{cdr}");
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id), "{cdr}");
    assert_eq!(
        leg_media(&fx, cdr).await,
        [
            ("caller".into(), json!("rtp"), json!("PCMU")),
            ("agent".into(), json!("webrtc"), json!(expected.name())),
        ],
        "the CDR's legs: how each party's media travelled"
    );
    assert_eq!(metric(&fx, &started_with(expected)), Some(1.0));
    no_leg_alive(&fx).await;
    let call_id = cdr["call_id"].as_str().expect("call id").to_owned();
    wait_stored(&fx, &call_id, Duration::from_secs(20)).await;
    let (left, right) = channels(&fx, &call_id);
    let mid = |ch: &[i16]| {
        let n = ch.len();
        assert!(n > 24_000, "{n} samples");
        dominant_tone(&ch[n / 2 - 2_000..n / 2 + 2_000], &TONES, 8_000)
    };
    assert_eq!(mid(&left), Some(CALLER_TONE), "left: the caller");
    assert_eq!(mid(&right), Some(AGENT_TONE), "right: the browser");
}

/// The browser's own outside call: it offers (actpass, Opus then PCMU), the gateway answers
/// passive with PCMU, the browser's media connects (ICE, DTLS), the call reaches the trunk and
/// the tones go both ways (the browser speaks first: the trunk's peer answers what it hears).
#[tokio::test]
async fn gateway_webrtc_browser_dials_out_answered_passive_with_pcmu() {
    let (fx, trunk_port) = fixture_with_ws_and_trunk().await;
    let mut ua = ready_browser(&fx).await;
    let trunk_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let trunk_rtp_port = trunk_rtp.local_addr().expect("addr").port();
    let speaker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let speaker_addr = speaker.local_addr().expect("addr");
    let run_for = Duration::from_secs(10);
    let trunk_media = tokio::spawn(rtp_peer(trunk_rtp, CALLER_TONE, run_for));
    let carrier = run_sipp(
        fx.gw.sip_addr(),
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", trunk_rtp_port.to_string())],
        30,
    );
    let domain = format!("{}.sip.test", fx.slug);
    let bearer = format!("Bearer {}", fx.tenant.agent);
    let browser_side = async {
        let (offered, sdp) = browser(vec![Codec::Opus, Codec::Pcmu])
            .offer(Law::Ulaw)
            .expect("the browser's offer");
        assert!(sdp.contains("a=setup:actpass"), "{sdp}");
        let (answer, dialog) = ua.invite("+14155550123", &domain, &bearer, &sdp).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        let body = body_of(&answer);
        assert!(body.contains("a=setup:passive"), "{body}");
        assert!(body.contains("UDP/TLS/RTP/SAVPF 0 "), "PCMU chosen: {body}");
        assert!(!body.contains("opus"), "{body}");
        let leg = offered
            .accept_answer(body.as_bytes())
            .expect("the gateway's answer");
        assert_eq!(leg.codec(), Codec::Pcmu);
        let mut media = leg.start(speaker_addr).expect("the browser's media");
        // A browser's microphone sends from the start, whoever speaks first.
        let heard = tokio::spawn(rtp_peer_speaking(
            speaker,
            AGENT_TONE,
            run_for,
            media.relay_side_addr(),
        ));
        connected(&mut media).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let bye = ua.out_of(&dialog, "BYE");
        ua.send(bye).await;
        let ok = ua.final_response(5).await;
        assert_eq!(status_of(&ok), 200, "{ok}");
        heard.await.expect("browser media")
    };
    let ((carrier_ok, carrier_out), browser_heard) = tokio::join!(carrier, browser_side);
    assert!(
        carrier_ok,
        "the trunk got the call and the BYE: {carrier_out}"
    );
    let trunk_heard = trunk_media.await.expect("trunk media");
    assert_eq!(
        last_tone(&trunk_heard.samples),
        Some(AGENT_TONE),
        "the browser's tone reaches the trunk ({} samples)",
        trunk_heard.samples.len()
    );
    assert_eq!(
        last_tone(&browser_heard.samples),
        Some(CALLER_TONE),
        "the trunk's tone reaches the browser ({} samples)",
        browser_heard.samples.len()
    );
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["direction"], "outbound", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["hangup_side"], "agent", "{}", cdrs[0]);
    assert_eq!(
        leg_media(&fx, &cdrs[0]).await,
        [
            ("phone".into(), json!("webrtc"), json!("PCMU")),
            ("external".into(), json!("rtp"), json!("PCMU")),
        ]
    );
    assert_eq!(metric(&fx, &started_with(Codec::Pcmu)), Some(1.0));
    no_leg_alive(&fx).await;
}

/// The browser goes silent (no STUN consent checks, no media): the call ends within the
/// configured consent timeout, the caller gets its BYE and the CDR says why.
#[tokio::test]
async fn gateway_webrtc_consent_lost_ends_the_call() {
    let fx = fixture_configured(|cfg| {
        with_ws(cfg);
        cfg.webrtc.consent_timeout_ms = 3_000;
    })
    .await;
    let mut ua = ready_browser(&fx).await;
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let speaker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let speaker_addr = speaker.local_addr().expect("addr");
    let _caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(12)));
    let caller = run_sipp(
        fx.gw.sip_addr(),
        "caller_until_bye.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
        ],
        25,
    );
    let browser_side = async {
        let (_, media, _) = take_call(&mut ua, vec![Codec::Pcmu], speaker_addr).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The browser freezes: its leg stops without a word.
        drop(media);
        let silent_at = std::time::Instant::now();
        let bye = ua.sip(10).await;
        assert!(bye.starts_with("BYE "), "{bye}");
        ua.reply(&bye, 200).await;
        silent_at.elapsed()
    };
    let ((caller_ok, caller_out), after) = tokio::join!(caller, browser_side);
    assert!(caller_ok, "the caller got the BYE: {caller_out}");
    assert!(
        after < Duration::from_millis(4_500),
        "ended {after:?} after the browser went silent (timeout 3 s)"
    );
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(
        cdrs[0]["hangup_cause"], "agent_media_timeout",
        "{}",
        cdrs[0]
    );
    assert_eq!(cdrs[0]["hangup_side"], "agent", "{}", cdrs[0]);
    assert_eq!(fx.gw.gateway.webrtc.as_ref().map(|w| w.legs()), Some(0));
    assert_eq!(
        metric(&fx, "switchboard_gateway_webrtc_consent_lost_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&fx, "switchboard_gateway_webrtc_dtls_failures_total"),
        Some(0.0)
    );
}

/// Offers a WebRTC leg cannot take are refused 488 with the reason, and leave no leg behind.
#[tokio::test]
async fn gateway_webrtc_bad_offers_get_488_with_a_reason() {
    let trunk = switchboard_gateway::config::OutboundTrunk {
        address: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
        domain: "carrier.test".into(),
        username: None,
        password: None,
    };
    let fx = fixture_configured(move |cfg| {
        with_ws(cfg);
        cfg.outbound_trunk = Some(trunk);
    })
    .await;
    let mut ua = ready_browser(&fx).await;
    let domain = format!("{}.sip.test", fx.slug);
    let bearer = format!("Bearer {}", fx.tenant.agent);
    let (_offered, good) = browser(vec![Codec::Pcmu]).offer(Law::Ulaw).expect("offer");
    let fingerprint = good
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .expect("a fingerprint")
        .to_owned();
    let pwd = good
        .lines()
        .find(|l| l.starts_with("a=ice-pwd:"))
        .expect("an ICE password")
        .to_owned();
    for (bad, reason, label) in [
        (
            good.replace("a=rtcp-mux\r\n", ""),
            "rtcp-mux required",
            "no_rtcp_mux",
        ),
        (
            good.replace(&format!("{fingerprint}\r\n"), ""),
            "no DTLS fingerprint",
            "no_fingerprint",
        ),
        (
            good.replace(&format!("{pwd}\r\n"), ""),
            "no ICE credentials",
            "no_ice_credentials",
        ),
    ] {
        let (resp, _) = ua.invite("+14155550123", &domain, &bearer, &bad).await;
        assert_eq!(status_of(&resp), 488, "{resp}");
        assert!(
            header(&resp, "Warning").is_some_and(|w| w.contains(reason)),
            "{reason}: {resp}"
        );
        // The stack's ACK for the 488 is its own business; the next INVITE is a new dialog.
        let refused =
            format!("switchboard_gateway_webrtc_offers_refused_total{{reason=\"{label}\"}}");
        assert_eq!(metric(&fx, &refused), Some(1.0), "{refused}");
    }
    assert_eq!(fx.gw.gateway.webrtc.as_ref().map(|w| w.legs()), Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fx.cdrs().await.is_empty(), "no call was placed");
}
