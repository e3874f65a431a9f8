//! Recording rules and pauses on real calls: sipp as the carrier and the agent's phone, the
//! agent's RTP typing keypad codes, the api pausing and resuming, and the stored WAV checked
//! sample by sample against the row's `pauses`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use switchboard_media::tone::dominant_tone;
use tokio::net::UdpSocket;

use crate::gateway_sip::*;
use crate::helpers::*;

/// The tenant's recording pause events for `call_id`, as (type, by).
async fn pause_events(fx: &Fixture, call_id: &str) -> Vec<(String, String)> {
    call_events(fx, call_id, "recording.")
        .await
        .into_iter()
        .filter(|e| e["type"] == "recording.paused" || e["type"] == "recording.resumed")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the tenant's stream has a `recording.paused` event; returns its call id.
async fn first_pause(fx: &Fixture, within: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let (_, v) = fx
            .app
            .get("/v1/events?limit=1000", &fx.tenant.supervisor)
            .await;
        let call = v["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["type"] == "recording.paused")
                .and_then(|e| e["call"].as_str().map(str::to_owned))
        });
        if let Some(call) = call {
            return call;
        }
        assert!(start.elapsed() < within, "no recording.paused event: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One call: the caller sends its tone for `talk_ms`, the agent's phone answers and its RTP
/// sends the agent's tone and types `keys`; `during` runs alongside.
async fn call_with<F: std::future::Future<Output = ()>>(
    fx: &Fixture,
    agent_port: u16,
    talk_ms: u64,
    keys: Vec<(Duration, char)>,
    during: F,
) {
    fx.ready(&fx.tenant.agent).await;
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let secs = Duration::from_millis(talk_ms + 4_000);
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, secs));
    let agent_media = tokio::spawn(rtp_peer_keys(agent_rtp, AGENT_TONE, secs, keys));
    let agent = fx.sipp(
        "agent_answer.xml",
        agent_port,
        vec![("rtp", agent_rtp_port.to_string())],
    );
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", talk_ms.to_string()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out), ()) = tokio::join!(agent, caller, during);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(agent_ok, "agent scenario: {agent_out}");
    caller_media.abort();
    agent_media.abort();
}

/// The stored WAV of a call on the local store, as (left, right).
pub(crate) fn channels(fx: &Fixture, call_id: &str) -> (Vec<i16>, Vec<i16>) {
    let file = fx
        .store_dir(&[&fx.tenant.id.to_string()])
        .join(format!("{call_id}.wav"));
    let mut r = hound::WavReader::open(&file).expect("the recording");
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 8_000));
    let samples: Vec<i16> = r.samples::<i16>().map_while(Result::ok).collect();
    (
        samples.iter().step_by(2).copied().collect(),
        samples.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// `ch` from `from_ms` to `to_ms`.
fn span(ch: &[i16], from_ms: u64, to_ms: u64) -> &[i16] {
    let at = |ms: u64| ((ms * 8) as usize).min(ch.len());
    &ch[at(from_ms)..at(to_ms)]
}

#[tokio::test]
async fn a_keypad_code_and_the_api_pause_and_resume_a_recording_leaving_marked_silent_gaps() {
    let fx = fixture(10_000).await;
    let (s, v) = fx
        .app
        .put(
            "/v1/recording-settings",
            &fx.tenant.admin,
            json!({"retention_days": null, "pause_code": "*1", "resume_code": "*2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "REGISTER: {out}");
    // No call yet: nothing to pause.
    let (s, v) = fx
        .app
        .post("/v1/agent/recording/pause", &fx.tenant.agent, json!(null))
        .await;
    assert_problem(s, &v, StatusCode::CONFLICT, "call-state");

    // The agent types *1 about 1.5 s into the call; once that pause shows on the tenant's
    // stream a supervisor resumes it 1.5 s later, and 1.5 s after that the agent pauses by api
    // until the caller hangs up.
    let keys = vec![
        (Duration::from_millis(1_500), '*'),
        (Duration::from_millis(1_700), '1'),
    ];
    let agent_id = fx.tenant.agent_id;
    let api_steps = async {
        first_pause(&fx, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (s, v) = fx
            .app
            .post(
                &format!("/v1/agents/{agent_id}/recording/resume"),
                &fx.tenant.supervisor,
                json!(null),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["detail"], "recording resumed");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (s, v) = fx
            .app
            .post("/v1/agent/recording/pause", &fx.tenant.agent, json!(null))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        // Again: already paused, nothing changes (and no second event).
        let (s, v) = fx
            .app
            .post("/v1/agent/recording/pause", &fx.tenant.agent, json!(null))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    };
    call_with(&fx, agent_port, 7_500, keys, api_steps).await;

    let cdrs = fx.wait_cdrs(1).await;
    let call_id = cdrs[0]["call_id"].as_str().expect("call id").to_owned();
    let row = wait_stored(&fx, &call_id, Duration::from_secs(20)).await;
    let pauses: Vec<(u64, u64)> = row["pauses"]
        .as_array()
        .expect("pauses")
        .iter()
        .map(|g| {
            (
                g["start_ms"].as_u64().unwrap_or(0),
                g["end_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(pauses.len(), 2, "{row}");
    let duration = row["duration_ms"].as_u64().expect("duration");
    let (first, second) = (pauses[0], pauses[1]);
    assert!(
        (1_000..4_000).contains(&first.0),
        "the keypad pause about 1.5 s in: {pauses:?}"
    );
    assert!(
        (1_200..2_600).contains(&(first.1 - first.0)),
        "resumed about 1.5 s later: {pauses:?}"
    );
    assert!(
        (1_200..2_600).contains(&(second.0 - first.1)),
        "paused again about 1.5 s later: {pauses:?}"
    );
    assert!(
        duration.abs_diff(second.1) <= 100,
        "the last pause runs to the end ({duration} ms): {pauses:?}"
    );

    // The file: silence exactly where the row says, each side's tone elsewhere.
    let (left, right) = channels(&fx, &call_id);
    for (name, ch, tone) in [
        ("caller", &left, CALLER_TONE),
        ("agent", &right, AGENT_TONE),
    ] {
        for &(from, to) in &pauses {
            assert!(
                span(ch, from, to).iter().all(|&s| s == 0),
                "{name} channel silent from {from} to {to} ms"
            );
        }
        // Recorded stretches (clear of the edges, and of the keypad tones on the agent's side):
        // most 100 ms windows carry the side's tone (a loaded machine may drop a late packet).
        for (from, to) in [
            (first.0 - 700, first.0 - 200),
            (first.1 + 200, second.0 - 200),
        ] {
            let windows: Vec<Option<f64>> = span(ch, from, to)
                .chunks_exact(800)
                .map(|w| dominant_tone(w, &TONES, 8_000))
                .collect();
            let hits = windows.iter().filter(|w| **w == Some(tone)).count();
            assert!(
                !windows.is_empty() && hits * 10 >= windows.len() * 7,
                "{name}'s tone from {from} to {to} ms in {hits} of {windows:?} (pauses {pauses:?})"
            );
        }
    }

    assert_eq!(
        pause_events(&fx, &call_id).await,
        vec![
            ("recording.paused".into(), "dtmf".into()),
            ("recording.resumed".into(), "api".into()),
            ("recording.paused".into(), "api".into()),
        ]
    );
}

#[tokio::test]
async fn a_queue_that_never_records_overrides_the_tenant_and_refuses_a_pause() {
    let fx = fixture(10_000).await;
    let (_, queues) = fx.app.get("/v1/queues", &fx.tenant.admin).await;
    let queue = queues["items"][0]["id"]
        .as_str()
        .expect("the fixture's queue")
        .to_owned();
    let (s, v) = fx
        .app
        .put(
            &format!("/v1/queues/{queue}/recording-rule"),
            &fx.tenant.admin,
            json!({"rule": {"mode": "never"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "REGISTER: {out}");

    let refused = async {
        // Once the agent is on the call, a pause is refused: nothing is being recorded.
        let start = std::time::Instant::now();
        loop {
            let (_, me) = fx.app.get("/v1/agent/state", &fx.tenant.agent).await;
            if me["status"] == "on_call" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{me}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, v) = fx
            .app
            .post("/v1/agent/recording/pause", &fx.tenant.agent, json!(null))
            .await;
        assert_problem(s, &v, StatusCode::CONFLICT, "call-state");
        assert_eq!(v["detail"], "the call is not being recorded", "{v}");
    };
    call_with(&fx, agent_port, 3_000, Vec::new(), refused).await;

    let cdrs = fx.wait_cdrs(1).await;
    let call_id = cdrs[0]["call_id"].as_str().expect("call id").to_owned();
    assert!(cdrs[0]["talk_ms"].as_i64() > Some(2_000), "{}", cdrs[0]);
    // Give a recording (were there one) time to arrive, then check there is none anywhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, v) = fx
        .app
        .get(&format!("/v1/recordings/{call_id}"), &fx.tenant.supervisor)
        .await;
    assert_problem(s, &v, StatusCode::NOT_FOUND, "not-found");
    let rec = &fx.gw.gateway.cfg.recordings;
    for dir in [rec.spool_dir.clone(), rec.local_dir.clone()]
        .into_iter()
        .flatten()
    {
        let file = dir
            .join(fx.tenant.id.to_string())
            .join(format!("{call_id}.wav"));
        assert!(!file.exists(), "{} exists", file.display());
    }
}
