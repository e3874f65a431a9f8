//! The binary itself: `switchboard up --demo` on the embedded default (no service installed),
//! configuration from flags and environment, and clear errors for bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sb-cli-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn switchboard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    // Keep the developer's or CI's own settings out of these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn up_demo_runs_on_the_embedded_default_and_restarts_cleanly() {
    let dir = temp_dir("up");
    for run in 0..2 {
        let port = free_port();
        let sip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sip_port = sip.local_addr().unwrap().port();
        drop(sip);
        let child = switchboard()
            .args(["up", "--demo", "--data-dir"])
            .arg(&dir)
            .env("SWITCHBOARD_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "SWITCHBOARD_GATEWAY__SIP_ADDR",
                format!("127.0.0.1:{sip_port}"),
            )
            .env("SWITCHBOARD_GATEWAY__WS_ADDR", "127.0.0.1:0")
            // The second run serves everything, gateway included, on one worker thread.
            .env(
                "SWITCHBOARD_WORKER_THREADS",
                if run == 0 { "0" } else { "1" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _guard = Killed(child);
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base).await;
        let client = reqwest::Client::new();
        let login: serde_json::Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"tenant": "demo", "email": "admin@demo.example.com", "password": "switchboard-demo"}))
            .send().await.unwrap().json().await.unwrap();
        let token = login["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("run {run}: {login}"));
        let numbers: serde_json::Value = client
            .get(format!("{base}/v1/numbers"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            numbers["items"].as_array().unwrap().len(),
            1,
            "run {run}: {numbers}"
        );
        let users: serde_json::Value = client
            .get(format!("{base}/v1/users"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            users["items"].as_array().unwrap().len(),
            3,
            "admin + two agents, seeded once: {users}"
        );
        // Its gateway speaks SIP over WebSocket, so the desktop is the agents' phone there.
        let agent: serde_json::Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"tenant": "demo", "email": "agent1@demo.example.com", "password": "switchboard-demo"}))
            .send().await.unwrap().json().await.unwrap();
        let phone: serde_json::Value = client
            .get(format!("{base}/v1/agent/softphone"))
            .bearer_auth(agent["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(phone["mode"], "webrtc", "run {run}: {phone}");
        let ws_url = phone["webrtc"]["ws_url"].as_str().unwrap();
        assert!(
            ws_url.starts_with("ws://127.0.0.1:") && !ws_url.starts_with("ws://127.0.0.1:0/"),
            "the bound port: {phone}"
        );
        assert_eq!(phone["webrtc"]["sip_uri"], "sip:agent1@demo.sip.local");
        // The media gateway runs in the same process: it answers a SIP OPTIONS ping.
        let ping = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = ping.local_addr().unwrap();
        let options = format!(
            "OPTIONS sip:127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-up{run}\r\n\
             From: <sip:ping@{me}>;tag=up\r\nTo: <sip:127.0.0.1>\r\nCall-ID: up-{run}@test\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        ping.send_to(options.as_bytes(), ("127.0.0.1", sip_port))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(5), ping.recv_from(&mut buf))
                .await
                .expect("the gateway answers OPTIONS")
                .unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("SIP/2.0 200"), "run {run}: {reply}");
        // Its metrics join the api's /metrics.
        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("switchboard_gateway_sip_requests_total{method=\"OPTIONS\"} 1"),
            "{metrics}"
        );
    }
    assert!(dir.join("switchboard.sqlite").exists());
    assert!(dir.join("recordings").is_dir());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = temp_dir("bad");
    let out = switchboard()
        .args(["up", "--http-addr", "not-an-address", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_addr"), "{err}");

    let out = switchboard()
        .args(["migrate", "--data-dir"])
        .arg(&dir)
        .env("SWITCHBOARD_DATABASE__MAX_CONNECTIONS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.max_connections"));

    let out = switchboard()
        .args(["migrate", "--data-dir"])
        .arg(&dir)
        .env("SWITCHBOARD_WORKER_THREADS", "5000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker_threads"));

    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "http_adr = \"127.0.0.1:1\"\n").unwrap();
    let out = switchboard()
        .args(["migrate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http_adr"),
        "unknown keys are named"
    );

    // The browser phone's URL must be a WebSocket URL.
    let out = switchboard()
        .args(["migrate", "--data-dir"])
        .arg(&dir)
        .env("SWITCHBOARD_HTTP__SOFTPHONE_WS_URL", "http://gw.example/")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.softphone_ws_url"), "{err}");

    // A postgres api replica refuses to invent a signing key.
    let out = switchboard()
        .args(["api", "--data-dir"])
        .arg(&dir)
        .env(
            "SWITCHBOARD_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.keys"),
        "names the missing key"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_option() {
    let out = switchboard().args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--http-addr",
        "--data-dir",
        "--demo",
        "--config",
        "SWITCHBOARD_HTTP_ADDR",
        "SWITCHBOARD_DATA_DIR",
        "database.url",
        "auth.keys",
        "http.max_body_bytes",
        "http.softphone_ws_url",
        "auth.access_ttl_s",
    ] {
        assert!(help.contains(key), "up --help lacks {key}:\n{help}");
    }
}
