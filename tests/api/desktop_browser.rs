//! The agent desktop end to end: the built `tenant-admin` app in Debian's headless Chromium
//! (playwright-core, `tenant-admin/e2e/desktop.mjs`), the api and gateway in this process, a
//! sipp desk phone registered with digest and a sipp carrier calling the tenant's number.
//!
//! Needs node, `tenant-admin/node_modules` (`npm ci`), a built `tenant-admin/dist`
//! (`npm run build`) and `/usr/bin/chromium`; `scripts/test` installs and builds them. The test
//! fails, never skips, without them. Screenshots land in `$CARGO_TARGET_DIR/artifacts/desktop/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
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

#[tokio::test]
async fn the_agent_desktop_takes_a_call_with_screen_pop_and_wrap_up_in_chromium() {
    let dist = desk_dir().join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "{} is not built: run `npm ci && npm run build` in tenant-admin/ (scripts/test does)",
        dist.display()
    );
    // Streams end every 4 s, so the desktop reconnects and resumes all through the call (and
    // shows the reconnection while the browser is offline).
    let app = spawn_app_with(switchboard_api::HttpSettings {
        desk_dir: Some(dist),
        events: switchboard_api::routes::events::EventStreamSettings {
            max_lifetime: Duration::from_secs(4),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let fx = fixture_on(app, 15_000).await;
    let a = &fx.tenant;
    // A wrap-up long enough for the agent to fill in the form.
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

    // Tenant B listens the whole time: its supervisor (whole-tenant scope) and its agent.
    let b = fx.app.tenant("bravo", 5).await;
    let mut b_streams = Vec::new();
    for token in [&b.supervisor, &b.agent] {
        let resp = open_stream(&fx.app, token, None).await;
        let (stop, rx) = tokio::sync::oneshot::channel();
        b_streams.push((stop, tokio::spawn(read_sse_until(resp, rx))));
    }

    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "desk phone REGISTER: {out}");

    let shots = artifacts_dir();
    println!("desktop screenshots: {}", shots.display());
    let mut node = Command::new("node")
        .arg(desk_dir().join("e2e/desktop.mjs"))
        .current_dir(desk_dir())
        .env("DESK_URL", format!("{}/desk/", fx.app.base))
        .env("DESK_TENANT", &fx.slug)
        .env("DESK_EMAIL", format!("agent@{}.example.com", fx.slug))
        .env("DESK_PASSWORD", PASSWORD)
        .env("DESK_CALLER", CALLER)
        .env("DESK_CONTACT", "Ada Lovelace")
        .env("DESK_QUEUE", "Support")
        .env("DESK_SHOTS", &shots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (is nodejs installed?)");
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

    let done = next_line(&mut lines).await.unwrap_or_default();
    let call_id = done
        .strip_prefix("DONE ")
        .unwrap_or_else(|| panic!("the browser did not finish wrap-up: {done:?}"))
        .to_owned();
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("node exits")
        .expect("node status");
    assert!(status.success(), "the browser script failed: {status}");
    for name in ["idle", "ringing", "in-call", "wrap-up"] {
        let f = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", f.display());
    }

    // The CDR of the call has the disposition and notes the agent gave.
    let cdrs = fx.wait_cdrs(2).await;
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"] == call_id.as_str())
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {cdrs:?}"));
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

    // Tenant B heard nothing of it.
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
}
