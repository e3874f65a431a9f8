//! The agent desktop end to end: the built `tenant-admin` app in Debian's headless Chromium
//! (playwright-core, `tenant-admin/e2e/desktop.mjs`), the api and gateway in this process and
//! a sipp carrier calling the tenant's number. Two phones: a sipp desk phone registered with
//! digest, and the browser itself (JsSIP over the gateway's SIP over WebSocket, WebRTC media,
//! Chromium's fake microphone playing a tone this test writes).
//!
//! Needs node, `tenant-admin/node_modules` (`npm ci`), a built `tenant-admin/dist`
//! (`npm run build`) and `/usr/bin/chromium`; `scripts/test` installs and builds them. The test
//! fails, never skips, without them. Screenshots land in `$CARGO_TARGET_DIR/artifacts/desktop/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::Command;

use crate::gateway_sip::*;
use crate::helpers::*;

const CALLER: &str = "+14155550199";

/// Reads an SSE response until `stop` fires; returns everything received.
pub(crate) async fn read_sse_until(
    mut resp: reqwest::Response,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> String {
    let mut text = String::new();
    loop {
        tokio::select! {
            _ = &mut stop => return text,
            chunk = resp.chunk() => match chunk {
                Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
                _ => return text,
            },
        }
    }
}

/// Opens `/v1/events/stream` with a bearer token.
pub(crate) async fn open_stream(
    app: &TestApp,
    token: &str,
    after: Option<&str>,
) -> reqwest::Response {
    let mut r = app.req(Method::GET, "/v1/events/stream", Some(token));
    if let Some(a) = after {
        r = r.header("last-event-id", a);
    }
    let resp = r.send().await.expect("stream request");
    assert_eq!(resp.status(), StatusCode::OK, "event stream refused");
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap_or(""),
        "text/event-stream"
    );
    resp
}

/// The browser script's next line of output.
async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .expect("the browser script answers in time")
        .expect("read stdout")
}

fn desk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tenant-admin")
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("artifacts").join("desktop")
}

/// What both browser tests share: the desktop served, streams ending every 4 s (so the desktop
/// reconnects and resumes all through the call, and shows the reconnection while offline), a
/// 300 s wrap-up, two disposition codes, the caller in the contact book with an earlier call,
/// and tenant B listening the whole time (its supervisor and its agent).
struct Desk {
    fx: Fixture,
    queue_id: String,
    b_streams: Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<String>,
    )>,
}

async fn desk(adjust: impl FnOnce(&mut switchboard_gateway::GatewayConfig)) -> Desk {
    let dist = desk_dir().join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "{} is not built: run `npm ci && npm run build` in tenant-admin/ (scripts/test does)",
        dist.display()
    );
    let app = spawn_app_with(switchboard_api::HttpSettings {
        desk_dir: Some(dist),
        events: switchboard_api::routes::events::EventStreamSettings {
            max_lifetime: Duration::from_secs(4),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let fx = fixture_configured_on(app, |cfg| {
        cfg.ring_timeout_ms = 15_000;
        adjust(cfg);
    })
    .await;
    let a = &fx.tenant;
    let (_, queues) = fx.app.get("/v1/queues", &a.admin).await;
    let queue_id = queues["items"][0]["id"].as_str().expect("queue").to_owned();
    let (s, v) = fx
        .app
        .send_json(
            Method::PATCH,
            &format!("/v1/queues/{queue_id}"),
            Some(&a.admin),
            Some(json!({"wrap_up_s": 300})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (code, label) in [("sale", "Sale"), ("no-sale", "No sale")] {
        let (s, v) = fx
            .app
            .post(
                "/v1/disposition-codes",
                &a.admin,
                json!({"code": code, "label": label}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = fx
        .app
        .post(
            "/v1/contacts",
            &a.supervisor,
            json!({"name": "Ada Lovelace", "company": "Analytical Engines Ltd",
                   "notes": "VIP", "numbers": [CALLER]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // An earlier call of the same caller, for the pop's recent calls.
    fx.app.call_record(a.id, "earlier-call", CALLER).await;

    let b = fx.app.tenant("bravo", 5).await;
    let mut b_streams = Vec::new();
    for token in [&b.supervisor, &b.agent] {
        let resp = open_stream(&fx.app, token, None).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        b_streams.push((stop, tokio::spawn(read_sse_until(resp, rx))));
    }
    Desk {
        fx,
        queue_id,
        b_streams,
    }
}

/// Starts the browser script `e2e/<script>` with the desktop's settings and `extra`
/// environment.
fn browser_script(fx: &Fixture, script: &str, extra: &[(&str, String)]) -> tokio::process::Child {
    let mut cmd = Command::new("node");
    cmd.arg(desk_dir().join("e2e").join(script))
        .current_dir(desk_dir())
        .env("DESK_URL", format!("{}/desk/", fx.app.base))
        .env("DESK_TENANT", &fx.slug)
        .env("DESK_EMAIL", format!("agent@{}.example.com", fx.slug))
        .env("DESK_PASSWORD", PASSWORD)
        .env("DESK_CALLER", CALLER)
        .env("DESK_CONTACT", "Ada Lovelace")
        .env("DESK_QUEUE", "Support")
        .env("DESK_SHOTS", artifacts_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("node runs (is nodejs installed?)")
}

/// After the browser's `DONE <call id>`: the script exits cleanly, its screenshots exist, the
/// call's CDR carries the agent's disposition and notes, and tenant B heard nothing of it.
/// Returns the CDR.
async fn check_after_wrap_up(
    desk: Desk,
    node: &mut tokio::process::Child,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    shots: &[&str],
) -> (Fixture, serde_json::Value) {
    let Desk {
        fx,
        queue_id,
        b_streams,
    } = desk;
    let a = &fx.tenant;
    let done = next_line(lines).await.unwrap_or_default();
    let call_id = done
        .strip_prefix("DONE ")
        .unwrap_or_else(|| panic!("the browser did not finish wrap-up: {done:?}"))
        .to_owned();
    let status = tokio::time::timeout(Duration::from_secs(60), node.wait())
        .await
        .expect("node exits")
        .expect("node status");
    assert!(status.success(), "the browser script failed: {status}");
    for name in shots {
        let f = artifacts_dir().join(format!("{name}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", f.display());
    }

    let cdrs = fx.wait_cdrs(2).await;
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"] == call_id.as_str())
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {cdrs:?}"))
        .clone();
    assert_eq!(cdr["from_number"], CALLER);
    let (s, detail) = fx
        .app
        .get(
            &format!("/v1/calls/{}", cdr["id"].as_str().expect("id")),
            &a.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{detail}");
    assert_eq!(detail["disposition"]["disposition"], "sale", "{detail}");
    assert!(
        detail["disposition"]["notes"]
            .as_str()
            .unwrap_or("")
            .contains("two headsets"),
        "{detail}"
    );
    assert_eq!(detail["disposition"]["agent_id"], json!(a.agent_id));

    let mut b_texts = Vec::new();
    for (stop, task) in b_streams {
        let _ = stop.send(());
        b_texts.push(task.await.expect("stream reader"));
    }
    for text in &b_texts {
        assert!(text.contains("event: hello"), "B's stream opened: {text}");
        for secret in [
            call_id.as_str(),
            &a.agent_id.to_string(),
            &queue_id,
            CALLER,
            "call_offered",
            "call_queued",
        ] {
            assert!(!text.contains(secret), "tenant B saw {secret}: {text}");
        }
    }
    (fx, cdr)
}

#[tokio::test]
async fn the_agent_desktop_takes_a_call_with_screen_pop_and_wrap_up_in_chromium() {
    let desk = desk(|_| {}).await;
    let fx = &desk.fx;
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "desk phone REGISTER: {out}");

    println!("desktop screenshots: {}", artifacts_dir().display());
    let mut node = browser_script(fx, "desktop.mjs", &[("DESK_PHONE", "desk".into())]);
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let ready = next_line(&mut lines).await;
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "the browser did not get ready"
    );

    // The carrier calls; the desk phone rings 3 s, answers, the caller talks 4 s and hangs up.
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(12)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(12)));
    let phone = fx.sipp(
        "agent_answer_after.xml",
        agent_port,
        vec![
            ("rtp", agent_rtp_port.to_string()),
            ("ring_ms", "3000".into()),
        ],
    );
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "4000".into()),
        ],
    );
    let ((phone_ok, phone_out), (caller_ok, caller_out)) = tokio::join!(phone, caller);
    assert!(caller_ok, "caller: {caller_out}");
    assert!(phone_ok, "desk phone: {phone_out}");
    let agent_heard = agent_media.await.expect("agent media");
    let caller_heard = caller_media.await.expect("caller media");
    assert_eq!(last_tone(&agent_heard.samples), Some(CALLER_TONE));
    assert_eq!(last_tone(&caller_heard.samples), Some(AGENT_TONE));

    check_after_wrap_up(
        desk,
        &mut node,
        &mut lines,
        &["idle", "ringing", "in-call", "wrap-up"],
    )
    .await;
}

/// A mono 16-bit 48 kHz WAV of `tone` (5 s; Chromium's fake microphone loops it).
fn write_tone_wav(path: &std::path::Path, tone: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create the tone WAV");
    for i in 0..48_000 * 5 {
        let t = f64::from(i) / 48_000.0;
        let v = (2.0 * std::f64::consts::PI * tone * t).sin() * 0.4 * f64::from(i16::MAX);
        w.write_sample(v as i16).expect("write");
    }
    w.finalize().expect("finish the tone WAV");
}

/// The stored recording of `call_id` on the fixture's local store, as (left, right).
fn recording_channels(fx: &Fixture, call_id: &str) -> (Vec<i16>, Vec<i16>) {
    let file = fx
        .store_dir(&[&fx.tenant.id.to_string()])
        .join(format!("{call_id}.wav"));
    let mut r = hound::WavReader::open(&file)
        .unwrap_or_else(|e| panic!("the recording {}: {e}", file.display()));
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 8_000));
    let samples: Vec<i16> = r.samples::<i16>().map_while(Result::ok).collect();
    (
        samples.iter().step_by(2).copied().collect(),
        samples.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// [`desk`] with the browser as the agent's phone (the gateway's SIP over WebSocket, WebRTC
/// media) and the gateway's settings `adjust`ed; the environment a browser script needs for
/// it (its fake microphone plays `AGENT_TONE`).
async fn webrtc_desk(
    adjust: impl FnOnce(&mut switchboard_gateway::GatewayConfig),
) -> (Desk, Vec<(&'static str, String)>) {
    let desk = desk(|cfg| {
        cfg.ws_addr = Some("127.0.0.1:0".parse().expect("addr"));
        adjust(cfg);
    })
    .await;
    let fx = &desk.fx;
    let ws = fx.gw.ws_addr().expect("the WebSocket listener is on");
    fx.app.state.set_softphone(
        switchboard_api::routes::desk::SoftphoneSettings::new(&format!("ws://{ws}/"), "sip.test")
            .expect("softphone settings"),
    );
    let tone_wav = artifacts_dir().join("browser-microphone.wav");
    std::fs::create_dir_all(artifacts_dir()).expect("artifacts dir");
    write_tone_wav(&tone_wav, AGENT_TONE);
    println!("desktop screenshots: {}", artifacts_dir().display());
    let env = vec![
        ("DESK_PHONE", "webrtc".into()),
        ("DESK_TONE_WAV", tone_wav.display().to_string()),
    ];
    (desk, env)
}

#[tokio::test]
async fn the_browser_softphone_answers_talks_both_ways_mutes_holds_and_sends_dtmf_in_chromium() {
    let (desk, env) = webrtc_desk(|_| {}).await;
    let fx = &desk.fx;
    let mut node = browser_script(fx, "desktop.mjs", &env);
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let ready = next_line(&mut lines).await;
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "the browser did not get ready"
    );
    // The browser registered over WebSocket: the location service has a `ws/` binding.
    let (s, v) = fx.app.get("/v1/agent/softphone", &fx.tenant.agent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["mode"], "webrtc", "{v}");
    assert_eq!(v["desk_phone_registered"], true, "{v}");

    // The carrier calls and talks (its tone) until it hangs up 16 s after the answer; the
    // browser answers when the page's Answer is clicked and talks with its fake microphone.
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let (stop_media, media_stop) = tokio::sync::oneshot::channel::<()>();
    let caller_media = tokio::spawn(rtp_peer_until(
        caller_rtp,
        CALLER_TONE,
        async {
            let _ = tokio::time::timeout(Duration::from_secs(60), media_stop).await;
        },
        Vec::new(),
    ));
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "14500".into()),
        ],
    );
    let answered = async {
        let line = next_line(&mut lines).await;
        assert_eq!(
            line.as_deref(),
            Some("ANSWERED"),
            "the browser phone did not answer"
        );
    };
    let ((caller_ok, caller_out), ()) = tokio::join!(caller, answered);
    assert!(caller_ok, "caller: {caller_out}");
    let _ = stop_media.send(());
    let caller_heard = caller_media.await.expect("caller media");
    // The caller heard the browser's microphone, and the keys the agent typed (SIP INFO from
    // the browser, RFC 4733 toward the caller).
    let heard: Vec<Option<f64>> = windows(&caller_heard.samples);
    assert!(
        heard.iter().filter(|w| **w == Some(AGENT_TONE)).count() >= 8,
        "the caller heard the browser's tone in too few windows: {heard:?}"
    );
    assert_eq!(
        caller_heard.dtmf,
        vec!['1', '2'],
        "the caller got the keypad's digits"
    );

    let (fx, cdr) = check_after_wrap_up(
        desk,
        &mut node,
        &mut lines,
        &[
            "idle",
            "phone-reconnecting",
            "ringing",
            "in-call",
            "muted",
            "wrap-up",
            "microphone-denied",
        ],
    )
    .await;
    // The recording: the caller's tone left, the browser's right, and the mute a silent
    // stretch (>= 2 s) of the right channel between stretches of its tone.
    let call_id = cdr["call_id"].as_str().expect("call id");
    wait_stored(&fx, call_id, Duration::from_secs(30)).await;
    let (left, right) = recording_channels(&fx, call_id);
    let left_w = windows(&left);
    let right_w = windows(&right);
    assert!(
        left_w.iter().filter(|w| **w == Some(CALLER_TONE)).count() * 10 >= left_w.len() * 6,
        "caller tone on the left: {left_w:?}"
    );
    assert!(
        right_w.iter().filter(|w| **w == Some(AGENT_TONE)).count() >= 12,
        "browser tone on the right: {right_w:?}"
    );
    let first = right_w.iter().position(|w| *w == Some(AGENT_TONE));
    let last = right_w.iter().rposition(|w| *w == Some(AGENT_TONE));
    let (Some(first), Some(last)) = (first, last) else {
        panic!("no browser tone on the right: {right_w:?}");
    };
    let longest_gap = right_w[first..=last]
        .split(|w| w.is_some())
        .map(<[Option<f64>]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_gap >= 8,
        "the mute left no 2 s silence in the browser's channel: {right_w:?}"
    );
}

/// The desktop's Transfer button: the browser agent answers a caller and transfers it to
/// another queue, where a second agent's desk phone answers and talks with the caller; the
/// agent's page is then told its session expired once an admin revokes its tokens.
#[tokio::test]
async fn the_desktop_transfers_a_call_to_another_queue_and_says_the_session_expired_in_chromium() {
    const SECOND_TONE: f64 = TONES[1];
    let (desk, mut env) = webrtc_desk(|_| {}).await;
    let fx = &desk.fx;
    let a = &fx.tenant;
    // Sales: its own queue, served by agent2 alone (not in Support: only the transfer brings
    // the call there), ready on a sipp desk phone.
    let (s, sales) = fx
        .app
        .post(
            "/v1/queues",
            &a.admin,
            json!({"name": "Sales", "wrap_up_s": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sales}");
    let (s, second) = fx
        .app
        .post(
            "/v1/users",
            &a.admin,
            json!({"email": "agent2@acme.example.com", "display_name": "Agent 2",
                   "password": PASSWORD, "role": "agent"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    let second_id = uuid(&second["id"]);
    fx.equip_agent(second_id, "agent2", &sales["id"]).await;
    let second_port = free_udp_port();
    let (ok, out) = fx.register("agent2", second_port, AGENT_PASSWORD).await;
    assert!(ok, "agent2's desk phone REGISTER: {out}");
    let second_token = token_of(&fx.app.login("acme", "agent2@acme.example.com").await);
    fx.ready(&second_token).await;

    let sales_id = sales["id"].as_str().expect("queue id").to_owned();
    env.push(("DESK_TRANSFER_TO", sales_id));
    let mut node = browser_script(fx, "transfer.mjs", &env);
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let ready = next_line(&mut lines).await;
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "the browser did not get ready"
    );

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let second_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let second_rtp_port = second_rtp.local_addr().expect("addr").port();
    // Both talk until the call is over, however long the transfer took.
    let until = |rx: tokio::sync::oneshot::Receiver<()>| async {
        let _ = tokio::time::timeout(Duration::from_secs(60), rx).await;
    };
    let (stop_caller, caller_stop) = tokio::sync::oneshot::channel();
    let (stop_second, second_stop) = tokio::sync::oneshot::channel();
    let caller_media = tokio::spawn(rtp_peer_until(
        caller_rtp,
        CALLER_TONE,
        until(caller_stop),
        Vec::new(),
    ));
    let second_media = tokio::spawn(rtp_peer_until(
        second_rtp,
        SECOND_TONE,
        until(second_stop),
        Vec::new(),
    ));
    // agent2 talks 4 s with the caller, then hangs up; the caller stays until the gateway's BYE.
    let second_phone = fx.sipp(
        "agent_answer_hangup.xml",
        second_port,
        vec![
            ("rtp", second_rtp_port.to_string()),
            ("talk_ms", "4000".into()),
        ],
    );
    let caller = fx.sipp(
        "caller_until_bye.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
        ],
    );
    let browser = async {
        for want in ["ANSWERED", "TRANSFERRED"] {
            let line = next_line(&mut lines).await;
            assert_eq!(line.as_deref(), Some(want), "the browser's transfer");
        }
    };
    let ((caller_ok, caller_out), (second_ok, second_out), ()) =
        tokio::join!(caller, second_phone, browser);
    let _ = (stop_caller.send(()), stop_second.send(()));
    assert!(
        caller_ok,
        "the caller stays in the call throughout: {caller_out}"
    );
    assert!(
        second_ok,
        "agent2's phone gets the transferred call: {second_out}"
    );
    let caller_heard = caller_media.await.expect("caller media");
    let second_heard = second_media.await.expect("agent2 media");
    let second_w = windows(&second_heard.samples);
    assert!(
        second_w.iter().filter(|w| **w == Some(CALLER_TONE)).count() >= 8,
        "agent2 heard the caller in too few windows: {second_w:?}"
    );
    let caller_w = windows(&caller_heard.samples);
    assert!(
        caller_w.iter().filter(|w| **w == Some(SECOND_TONE)).count() >= 8,
        "the caller heard agent2 in too few windows: {caller_w:?}"
    );
    assert_eq!(
        caller_w.iter().rev().find_map(|w| *w),
        Some(SECOND_TONE),
        "the caller ends up talking with agent2: {caller_w:?}"
    );

    // An admin revokes the agent's tokens: the page says the session expired.
    let (s, v) = fx
        .app
        .post(
            &format!("/v1/users/{}/revoke-tokens", a.agent_id),
            &a.admin,
            json!({}),
        )
        .await;
    assert!(s.is_success(), "revoke: {s} {v}");
    let expired = next_line(&mut lines).await;
    assert_eq!(
        expired.as_deref(),
        Some("EXPIRED"),
        "no session-expired message"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("node exits")
        .expect("node status");
    assert!(status.success(), "the browser script failed: {status}");
    for name in ["transferred", "session-expired"] {
        let f = artifacts_dir().join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) > 1000,
            "screenshot {} missing or empty",
            f.display()
        );
    }

    // One CDR for the whole call: agent2 has it; the legs show agent1's browser (WebRTC) and
    // agent2's desk phone (RTP).
    let cdrs = fx.wait_cdrs(2).await;
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"] != "earlier-call")
        .unwrap_or_else(|| panic!("no CDR of the call: {cdrs:?}"));
    assert_eq!(cdr["agent_id"], json!(second_id), "{cdr}");
    let (s, call) = fx
        .app
        .get(
            &format!("/v1/calls/{}", cdr["id"].as_str().expect("id")),
            &a.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{call}");
    let legs: Vec<_> = call["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .map(|l| (l["role"].clone(), l["agent_id"].clone(), l["media"].clone()))
        .collect();
    assert_eq!(
        legs,
        [
            (json!("caller"), Value::Null, json!("rtp")),
            (json!("agent"), json!(a.agent_id), json!("webrtc")),
            (json!("agent"), json!(second_id), json!("rtp")),
        ],
        "{call}"
    );
    for (stop, task) in desk.b_streams {
        let _ = stop.send(());
        let _ = task.await;
    }
}

/// The first INVITE sipp received (its `-trace_msg` in `out`), as its lines.
fn received_invite(out: &str) -> Vec<&str> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("INVITE "));
    let mut invite: Vec<&str> = lines.next().into_iter().collect();
    invite.extend(lines.take_while(|l| !l.trim().is_empty()));
    invite
}

/// The desktop's click-to-call: the agent types an outside number in the page, the browser's
/// own JsSIP INVITE goes through the gateway to the tenant's trunk (sipp) with the tenant's
/// caller id, audio flows both ways (the trunk hears the fake microphone, the page hears the
/// trunk), the agent hangs up in the page and the trunk gets the BYE.
#[tokio::test]
async fn the_desktop_dials_an_outside_number_through_the_trunk_and_hangs_up_in_chromium() {
    const DIALLED: &str = "+14155550123";
    let trunk_port = free_udp_port();
    let (desk, mut env) =
        webrtc_desk(|cfg| cfg.outbound_trunk = Some(test_trunk(trunk_port))).await;
    let fx = &desk.fx;
    let trunk_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let trunk_rtp_port = trunk_rtp.local_addr().expect("addr").port();
    let (stop_media, media_stop) = tokio::sync::oneshot::channel::<()>();
    let trunk_media = tokio::spawn(rtp_peer_until(
        trunk_rtp,
        CALLER_TONE,
        async {
            let _ = tokio::time::timeout(Duration::from_secs(90), media_stop).await;
        },
        Vec::new(),
    ));
    // The trunk listens before the browser starts: it challenges, checks the credentials and
    // the caller id, answers, and waits for the BYE.
    let carrier = run_sipp(
        fx.gw.sip_addr(),
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", trunk_rtp_port.to_string())],
        90,
    );
    env.push(("DESK_DIAL", DIALLED.to_owned()));
    let mut node = browser_script(fx, "dial.mjs", &env);
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let browser = async {
        let ready = next_line(&mut lines).await;
        assert_eq!(
            ready.as_deref(),
            Some("READY"),
            "the browser phone registered"
        );
        let connected = next_line(&mut lines).await.unwrap_or_default();
        assert!(
            connected.starts_with("CONNECTED "),
            "the outside call connected and the page heard the trunk: {connected:?}"
        );
        let hung_up = next_line(&mut lines).await;
        assert_eq!(hung_up.as_deref(), Some("HUNG_UP"), "the agent hung up");
    };
    let ((carrier_ok, carrier_out), ()) = tokio::join!(carrier, browser);
    let _ = stop_media.send(());
    assert!(
        carrier_ok,
        "the trunk got the call (credentials, caller id) and the BYE: {carrier_out}"
    );
    let invite = received_invite(&carrier_out);
    assert!(
        invite
            .first()
            .is_some_and(|l| l.starts_with(&format!("INVITE sip:{DIALLED}@carrier.test"))),
        "the Request-URI carries the dialled number: {invite:?}"
    );
    assert!(
        invite.iter().any(|l| {
            let l = l.to_ascii_lowercase();
            (l.starts_with("from:") || l.starts_with("f:"))
                && l.contains(&format!("<sip:{NUMBER}@"))
        }),
        "the From is the tenant's caller id {NUMBER}: {invite:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("node exits")
        .expect("node status");
    assert!(status.success(), "the browser script failed: {status}");
    let shot = artifacts_dir().join("outside-call.png");
    assert!(
        std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 1000,
        "screenshot {} missing or empty",
        shot.display()
    );

    // The trunk's side heard the browser's microphone.
    let trunk_heard = trunk_media.await.expect("trunk media");
    let heard = windows(&trunk_heard.samples);
    assert!(
        heard.iter().filter(|w| **w == Some(AGENT_TONE)).count() >= 8,
        "the trunk heard the browser's tone in too few windows: {heard:?}"
    );

    // One outbound CDR: the agent's, from the tenant's caller id to the number, hung up by
    // the agent; the browser's leg WebRTC, the trunk's RTP.
    let cdrs = fx.wait_cdrs(2).await;
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"] != "earlier-call")
        .unwrap_or_else(|| panic!("no CDR of the call: {cdrs:?}"));
    assert_eq!(
        (
            &cdr["direction"],
            &cdr["from_number"],
            &cdr["to_number"],
            &cdr["hangup_side"],
            &cdr["agent_id"],
        ),
        (
            &json!("outbound"),
            &json!(NUMBER),
            &json!(DIALLED),
            &json!("agent"),
            &json!(fx.tenant.agent_id),
        ),
        "{cdr}"
    );
    let legs: Vec<_> = crate::gateway_webrtc::leg_media(fx, cdr)
        .await
        .into_iter()
        .map(|(role, media, _)| (role, media))
        .collect();
    assert_eq!(
        legs,
        [
            ("phone".to_owned(), json!("webrtc")),
            ("external".to_owned(), json!("rtp")),
        ],
        "the CDR's legs"
    );
    for (stop, task) in desk.b_streams {
        let _ = stop.send(());
        let _ = task.await;
    }
}
