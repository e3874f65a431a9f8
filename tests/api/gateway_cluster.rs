//! Gateway nodes as a cluster: drain (current calls finish, new calls go to another node) and a
//! node killed with SIGKILL mid-call (its agent is usable again within 10 s without anyone
//! acting; on restart the call's CDR is written and its recording is on disk). sipp and the
//! helpers of `gateway_sip` play carriers and phones.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_gateway::cluster::Spread;
use switchboard_state::{AgentId, AgentStatus, StateEngine, TenantId};
use tokio::net::UdpSocket;

use crate::gateway_sip::*;
use crate::helpers::*;

/// A caller who waits in line `hold_ms`, then gives up (needs no agent).
fn queued_caller(rtp: u16, hold_ms: u64, calls: u32) -> Vec<(&'static str, String)> {
    vec![
        ("service", NUMBER.into()),
        ("rtp", rtp.to_string()),
        ("hold_ms", hold_ms.to_string()),
        ("calls", calls.to_string()),
    ]
}

/// A raw INVITE to `to`, unique per `tag`; the final response.
async fn invite_once(to: SocketAddr, tag: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");
    let request = invite_request(local, NUMBER)
        .replace("z9hG4bK-inv-", &format!("z9hG4bK-{tag}-"))
        .replace("Call-ID: invite-", &format!("Call-ID: {tag}-"));
    let replies = exchange(&socket, to, &request).await;
    replies
        .into_iter()
        .find(|r| status_of(r) >= 200)
        .unwrap_or_else(|| panic!("no final response to the INVITE at {to}"))
}

#[tokio::test]
async fn a_drained_node_finishes_its_calls_while_new_calls_land_on_the_other_node() {
    let fx = fixture_on(spawn_app().await, 10_000).await;
    // Only A and B in the cluster.
    fx.gw.shutdown().await;
    let node = |id: &'static str, spread: Spread| {
        move |cfg: &mut switchboard_gateway::GatewayConfig| {
            cfg.node_id = id.into();
            cfg.spread = spread;
            // Redirect only when draining: the 20 calls all stay on A.
            cfg.spread_margin = 1_000;
            cfg.rtp_port_max = cfg.rtp_port_min + 199;
        }
    };
    let a = start_gateway_configured(&fx.app, node("gw-a", Spread::Redirect)).await;
    let b = start_gateway_configured(&fx.app, node("gw-b", Spread::Refuse)).await;
    // A logged-in agent who is not ready: the queue holds calls for them.
    fx.log_in(&fx.tenant.agent).await;

    // 20 callers queue on node A and stay 6 s.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let twenty = run_sipp(
        a.sip_addr(),
        "caller_cancel.xml",
        free_udp_port(),
        queued_caller(rtp_port, 6_000, 20),
        30,
    );
    let drain = async {
        let started = Instant::now();
        while a.gateway.active_calls() < 20 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "20 calls on node A, have {}",
                a.gateway.active_calls()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.gateway.drain(true).await;
        // A new call to A is sent to B (302); the carrier follows and B takes it.
        let moved = invite_once(a.sip_addr(), "moved").await;
        assert_eq!(status_of(&moved), 302, "{moved}");
        assert!(
            moved.contains(&format!("@{}", b.sip_addr())),
            "redirected to node B at {}: {moved}",
            b.sip_addr()
        );
        let (ok, out) = run_sipp(
            b.sip_addr(),
            "caller_cancel.xml",
            free_udp_port(),
            queued_caller(rtp_port, 500, 1),
            15,
        )
        .await;
        assert!(ok, "node B takes the call: {out}");
        assert_eq!(
            a.gateway.active_calls(),
            20,
            "A's calls go on while it drains"
        );
        // With B draining too there is nowhere to send it: 503, retry later.
        b.gateway.drain(false).await;
        a.gateway.drain(true).await; // refresh A's view of the cluster
        let refused = invite_once(a.sip_addr(), "refused").await;
        assert_eq!(status_of(&refused), 503, "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("retry-after:"),
            "{refused}"
        );
    };
    let ((ok, out), ()) = tokio::join!(twenty, drain);
    assert!(
        ok,
        "the 20 calls on the draining node finish normally: {out}"
    );
    tokio::time::timeout(Duration::from_secs(10), a.idle_exit())
        .await
        .expect("node A reports it may exit once its last call ended");
    assert_eq!(a.gateway.active_calls(), 0);
    let cdrs = fx.wait_cdrs(21).await;
    assert_eq!(cdrs.len(), 21, "20 calls on A, one on B, none else");
    assert!(
        cdrs.iter().all(|c| c["hangup_cause"] == "abandoned"),
        "{cdrs:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// The binary as a separate process: `switchboard gateway` with a config file.
struct Node {
    child: tokio::process::Child,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

async fn start_node(config: &std::path::Path, admin: SocketAddr) -> Node {
    // SWITCHBOARD_TEST_BIN overrides the binary: worktrees sharing one CARGO_TARGET_DIR
    // overwrite each other's `target/debug/switchboard`.
    let bin = std::env::var("SWITCHBOARD_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").to_owned());
    let child = tokio::process::Command::new(bin)
        .args(["gateway", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,rsipstack=warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard gateway starts");
    let client = reqwest::Client::new();
    for _ in 0..150 {
        if let Ok(r) = client
            .get(format!("http://{admin}/admin/status"))
            .bearer_auth(NODE_SECRET)
            .send()
            .await
            && r.status() == StatusCode::OK
        {
            return Node { child };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway node did not come up");
}

const NODE_SECRET: &str = "cluster-secret-cluster-secret-0123456789";

#[tokio::test]
async fn a_node_killed_mid_call_frees_its_agent_and_writes_cdr_and_recording_after_restart() {
    let fx = fixture_on(spawn_app_on_redis().await, 10_000).await;
    let data = TempDir(std::env::temp_dir().join(format!("sb-node-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&data.0).expect("data dir");
    let sip_port = free_udp_port();
    let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().expect("addr");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("addr");
    // Below the fixtures' ranges (16000-32199) and the kernel's ephemeral ports (32768 and up).
    let rtp_base = 10_000 + (rand::random::<u16>() % 60) * 100;
    let config = data.0.join("node.toml");
    let secret = std::str::from_utf8(TEST_SECRET).expect("ascii");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[database]
url = "{db}"
[auth]
keys = [{{ kid = "k2", secret = "{secret}" }}]
[state]
redis_url = "{redis}"
key_prefix = "{prefix}"
[gateway]
sip_addr = "{sip}"
node_id = "gw-crash"
rtp_port_min = {rtp_base}
rtp_port_max = {rtp_max}
digest_md5_first = true
auth_secret = "{NODE_SECRET}"
metrics_addr = "{admin}"
node_ttl_ms = 3000
[gateway.recordings]
enabled = true
"#,
            data = data.0.display(),
            db = fx.app.db_url,
            redis = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            prefix = fx.app.redis_prefix.clone().expect("redis prefix"),
            rtp_max = rtp_base + 99,
        ),
    )
    .expect("config");
    let mut node = start_node(&config, admin).await;

    let agent_port = free_udp_port();
    let (ok, out) = fx
        .register_at(sip, "agent1", agent_port, AGENT_PASSWORD)
        .await;
    assert!(ok, "REGISTER at the node: {out}");
    fx.ready(&fx.tenant.agent).await;
    let tenant = TenantId::parse(fx.tenant.id.to_string()).expect("tenant");
    let agent = AgentId::parse(fx.tenant.agent_id.to_string()).expect("agent");
    let status = |engine: std::sync::Arc<dyn StateEngine>| {
        let (tenant, agent) = (tenant.clone(), agent.clone());
        async move {
            engine
                .agent(&tenant, &agent)
                .await
                .expect("engine")
                .map(|v| v.status)
        }
    };

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let _caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(30)));
    let _agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(30)));
    let agent_phone = run_sipp(
        sip,
        "agent_answer.xml",
        agent_port,
        vec![("rtp", agent_rtp_port.to_string())],
        40,
    );
    let caller = run_sipp(
        sip,
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "60000".into()),
        ],
        40,
    );
    let body = async {
        let started = Instant::now();
        while status(fx.app.engine.clone()).await != Some(AgentStatus::OnCall) {
            assert!(started.elapsed() < Duration::from_secs(20), "agent on call");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let admin_status: Value = reqwest::Client::new()
            .get(format!("http://{admin}/admin/status"))
            .bearer_auth(NODE_SECRET)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        assert_eq!(admin_status["calls"], json!(1), "{admin_status}");
        // Past the recording's first checkpoint (every 5 s), then SIGKILL.
        tokio::time::sleep(Duration::from_secs(6)).await;
        node.child.start_kill().expect("SIGKILL");
        node.child.wait().await.expect("reaped");
    };
    tokio::select! {
        r = async { tokio::join!(agent_phone, caller) } => panic!("a phone ended before the crash: {r:?}"),
        () = body => {}
    }
    let killed = Instant::now();

    // Nobody acts: the engine's timers (an api replica's ticker) reclaim the dead node's call.
    let engine = fx.app.engine.clone();
    let ticker = {
        let (engine, tenant) = (engine.clone(), tenant.clone());
        tokio::spawn(async move {
            loop {
                let now = switchboard_gateway::node::now_ms();
                let _ = engine.tick(&tenant, now).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    loop {
        let s = status(engine.clone()).await;
        if s == Some(AgentStatus::Ready) {
            let elapsed_ms = killed.elapsed().as_millis() as u64;
            tracing::info!(elapsed_ms, "agent usable again after the crash");
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the agent is usable within 10 s of the crash: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ticker.abort();

    // The node comes back: the cut call gets its CDR, the recording is on disk.
    let mut node = start_node(&config, admin).await;
    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(cdr["hangup_cause"], "node_crash", "{cdr}");
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id), "{cdr}");
    assert!(!cdr["answered_at"].is_null(), "{cdr}");
    let file = data
        .0
        .join("recordings")
        .join(fx.tenant.id.to_string())
        .join(format!(
            "{}.wav",
            cdr["call_id"].as_str().unwrap_or_default()
        ));
    // The spool is resumed at start and uploads in the background to the local store.
    let started = Instant::now();
    while !file.exists() && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reader = hound::WavReader::open(&file)
        .unwrap_or_else(|e| panic!("a valid WAV at {}: {e}", file.display()));
    assert_eq!(reader.spec().channels, 2);
    assert!(
        reader.duration() >= 8_000,
        "at least a second recorded before the crash: {} frames",
        reader.duration()
    );
    assert!(
        std::fs::read_dir(data.0.join("calls"))
            .expect("journal dir")
            .next()
            .is_none(),
        "the journal is empty once the CDR is written"
    );
    // A rolling upgrade: drain over the admin endpoint (the shared secret required), and the
    // idle node exits on its own.
    let client = reqwest::Client::new();
    let drain = format!("http://{admin}/admin/drain?exit=true");
    let r = client.post(&drain).send().await.expect("drain");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(&drain)
        .bearer_auth(NODE_SECRET)
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["draining"], json!(true), "{v}");
    let exited = tokio::time::timeout(Duration::from_secs(10), node.child.wait())
        .await
        .expect("an idle drained node exits")
        .expect("exit status");
    assert!(exited.success(), "{exited:?}");
}

#[tokio::test]
async fn a_caller_on_node_a_reaches_an_agent_registered_on_node_b_over_the_internal_trunk() {
    let fx = fixture_on(spawn_app_on_redis().await, 10_000).await;
    let node = |id: &'static str| {
        move |cfg: &mut switchboard_gateway::GatewayConfig| {
            cfg.node_id = id.into();
            cfg.auth_secret = NODE_SECRET.into();
        }
    };
    let a = start_gateway_configured(&fx.app, node("gw-a")).await;
    let b = start_gateway_configured(&fx.app, node("gw-b")).await;
    a.gateway.heartbeat().await;

    let agent_port = free_udp_port();
    let (ok, out) = fx
        .register_at(b.sip_addr(), "agent1", agent_port, AGENT_PASSWORD)
        .await;
    assert!(ok, "REGISTER at node B: {out}");
    fx.ready(&fx.tenant.agent).await;

    // Only peers with the shared secret may use the trunk.
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let forged = invite_request(socket.local_addr().expect("addr"), NUMBER).replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nX-Switchboard-Trunk: 1.00\r\nX-Switchboard-Tenant: {}\r\n",
            fx.tenant.id
        ),
    );
    let replies = exchange(&socket, b.sip_addr(), &forged).await;
    let last = replies.last().expect("a reply");
    assert_eq!(status_of(last), 403, "{last}");

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(7)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(7)));
    // The phone's sipp listens for B's INVITE (the target address is unused by this scenario).
    let agent = run_sipp(
        b.sip_addr(),
        "agent_answer.xml",
        agent_port,
        vec![("rtp", agent_rtp_port.to_string())],
        25,
    );
    let caller = run_sipp(
        a.sip_addr(),
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "3000".into()),
        ],
        25,
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(agent_ok, "agent scenario: {agent_out}");
    let caller_heard = caller_media.await.expect("caller media");
    let agent_heard = agent_media.await.expect("agent media");
    assert_eq!(
        last_tone(&agent_heard.samples),
        Some(CALLER_TONE),
        "the caller's tone crosses A and B to the agent"
    );
    assert_eq!(
        last_tone(&caller_heard.samples),
        Some(AGENT_TONE),
        "the agent's tone crosses B and A to the caller"
    );

    // Node A holds the call: one CDR, one recording, both on A.
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0]["hangup_cause"], "normal_clearing", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["agent_id"], json!(fx.tenant.agent_id));
    let wavs = |gw: &switchboard_gateway::RunningGateway| {
        let dir = gw.gateway.cfg.recordings.local_dir.clone().expect("dir");
        let mut n = 0;
        for tenant in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            n += std::fs::read_dir(tenant.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|f| f.path().extension().is_some_and(|e| e == "wav"))
                .count();
        }
        n
    };
    let started = Instant::now();
    while wavs(&a) == 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((wavs(&a), wavs(&b)), (1, 0), "recorded once, on node A");
    a.shutdown().await;
    b.shutdown().await;
}
