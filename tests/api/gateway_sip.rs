//! The media gateway with real SIP peers: sipp (Debian's sip-tester) plays the carrier and the
//! agents' desk phones; the test's own UDP sockets are the RTP endpoints their SDP names, so
//! it can send tones and check (Goertzel) what each side received.
//!
//! sipp must be installed (the README test command installs it); these tests fail without it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard_gateway::{GatewayConfig, RunningGateway};
use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;
use switchboard_media::tone::{dominant_tone, sine};
use tokio::net::UdpSocket;
use tokio::process::Command;

use crate::helpers::*;

pub(crate) const NUMBER: &str = "+14155550100";
pub(crate) const AGENT_PASSWORD: &str = "desk-phone-secret";
pub(crate) const CALLER_TONE: f64 = 1000.0;
pub(crate) const AGENT_TONE: f64 = 1500.0;
pub(crate) const TONES: [f64; 4] = [523.25, 659.25, CALLER_TONE, AGENT_TONE];

pub(crate) fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// A free UDP port on loopback (for a sipp instance or an RTP socket).
/// The tests' outbound trunk on a loopback port (sipp `trunk_*.xml` scenarios expect these
/// credentials and domain).
pub(crate) fn test_trunk(port: u16) -> switchboard_gateway::config::OutboundTrunk {
    switchboard_gateway::config::OutboundTrunk {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        domain: "carrier.test".into(),
        username: Some("trunkuser".into()),
        password: Some("trunkpass".into()),
    }
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A tenant with a queue, a number routed to it, and an agent with a seat, a queue
/// membership and a SIP login; plus a gateway node on loopback.
pub(crate) struct Fixture {
    /// Call ids already handed out by `tone_call`.
    pub(crate) known_calls: std::sync::Mutex<Vec<String>>,
    pub(crate) app: TestApp,
    pub(crate) tenant: TestTenant,
    pub(crate) slug: String,
    pub(crate) gw: RunningGateway,
}

pub(crate) async fn fixture(ring_timeout_ms: u64) -> Fixture {
    fixture_on(spawn_app().await, ring_timeout_ms).await
}

/// [`fixture`] over a given app (e.g. on the Redis engine).
pub(crate) async fn fixture_on(app: TestApp, ring_timeout_ms: u64) -> Fixture {
    fixture_configured_on(app, |cfg| cfg.ring_timeout_ms = ring_timeout_ms).await
}

/// A tenant with a queue, a number routed to it and agent1 equipped, and a gateway with the
/// test settings `adjust`ed.
pub(crate) async fn fixture_configured(adjust: impl FnOnce(&mut GatewayConfig)) -> Fixture {
    fixture_configured_on(spawn_app().await, adjust).await
}

pub(crate) async fn fixture_configured_on(
    app: TestApp,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> Fixture {
    // RUST_LOG=switchboard_gateway=debug shows the gateway's side when a scenario fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let slug = "acme".to_owned();
    let tenant = app.tenant(&slug, 5).await;
    let (s, queue) = app
        .post(
            "/v1/queues",
            &tenant.admin,
            json!({"name": "Support", "wrap_up_s": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{queue}");
    let (s, n) = app
        .post(
            "/v1/numbers",
            &tenant.admin,
            json!({"number": NUMBER, "kind": "did", "label": "main", "queue_id": queue["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let fx_gw = start_gateway_configured(&app, adjust).await;
    if let Some(rec) = &fx_gw.gateway.recorder {
        app.state
            .set_recordings(switchboard_api::routes::recordings::RecordingsAccess::new(
                rec.store.clone(),
                Duration::from_secs(60),
            ));
    }
    let fx = Fixture {
        known_calls: std::sync::Mutex::new(Vec::new()),
        app,
        tenant,
        slug,
        gw: fx_gw,
    };
    fx.equip_agent(fx.tenant.agent_id, "agent1", &queue["id"])
        .await;
    fx
}

async fn start_gateway_with(
    app: &TestApp,
    ring_timeout_ms: u64,
    outbound_trunk: Option<switchboard_gateway::config::OutboundTrunk>,
) -> RunningGateway {
    start_gateway_configured(app, |cfg| {
        cfg.ring_timeout_ms = ring_timeout_ms;
        cfg.outbound_trunk = outbound_trunk;
    })
    .await
}

/// Recording on, to a local store; spool and store in a fresh temp directory.
fn local_recordings() -> switchboard_recording::RecordingsConfig {
    let base =
        std::env::temp_dir().join(format!("sb-recordings-{}", uuid::Uuid::new_v4().simple()));
    switchboard_recording::RecordingsConfig {
        enabled: Some(true),
        spool_dir: Some(base.join("spool")),
        local_dir: Some(base.join("store")),
        ..Default::default()
    }
}

pub(crate) async fn start_gateway_configured(
    app: &TestApp,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> RunningGateway {
    // Parallel test processes: spread port ranges so they rarely meet (the pools skip ports
    // in use anyway): 100 RTP ports (a test may take 200), then 100 WebRTC ports (the two
    // ranges must not overlap). All below the kernel's ephemeral range (32768 and up), where
    // `free_udp_port` finds the ports sipp binds later: a media pool must not take them.
    let base = 16_000 + (rand::random::<u16>() % 54) * 300;
    let mut cfg = GatewayConfig {
        sip_addr: "127.0.0.1:0".parse().expect("addr"),
        rtp_port_min: base,
        rtp_port_max: base + 99,
        node_id: "gw-test".into(),
        max_auth_failures: 3,
        // sipp answers only the first challenge and knows only MD5.
        digest_md5_first: true,
        recordings: local_recordings(),
        ..GatewayConfig::default()
    };
    cfg.webrtc.port_min = base + 200;
    cfg.webrtc.port_max = base + 299;
    adjust(&mut cfg);
    switchboard_gateway::start_with_tokens(
        cfg,
        app.db.clone(),
        app.engine.clone(),
        Some(agent_tokens(app.state.clone())),
    )
    .await
    .expect("gateway starts")
}

impl Fixture {
    fn sip(&self) -> SocketAddr {
        self.gw.sip_addr()
    }

    pub(crate) async fn equip_agent(&self, user: uuid::Uuid, username: &str, queue: &Value) {
        let admin = &self.tenant.admin;
        let (s, v) = self
            .app
            .send_json(
                Method::PUT,
                &format!("/v1/users/{user}/profile"),
                Some(admin),
                Some(json!({"skills": [], "queues": [{"queue_id": queue, "tier": 1}]})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = self
            .app
            .post(
                "/v1/seats",
                admin,
                json!({"label": username, "user_id": user}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .app
            .send_json(
                Method::PUT,
                &format!("/v1/users/{user}/sip-credential"),
                Some(admin),
                Some(json!({"username": username, "password": AGENT_PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    }

    /// The agent (by token) logs in to the desktop (not ready).
    pub(crate) async fn log_in(&self, token: &str) {
        let (s, v) = self.app.post("/v1/agent/session", token, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// The agent (by token) logs in to the desktop and goes ready.
    pub(crate) async fn ready(&self, token: &str) {
        self.log_in(token).await;
        let (s, v) = self
            .app
            .send_json(
                Method::PUT,
                "/v1/agent/state",
                Some(token),
                Some(json!({"state": "ready"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// Runs a sipp scenario against the gateway and returns whether it passed, with its output.
    pub(crate) async fn sipp(
        &self,
        scenario_file: &str,
        local_port: u16,
        vars: Vec<(&'static str, String)>,
    ) -> (bool, String) {
        self.sipp_within(scenario_file, local_port, vars, 25).await
    }

    /// Like [`Self::sipp`], failing the scenario after `timeout_s` seconds.
    async fn sipp_within(
        &self,
        scenario_file: &str,
        local_port: u16,
        vars: Vec<(&'static str, String)>,
        timeout_s: u64,
    ) -> (bool, String) {
        run_sipp(self.sip(), scenario_file, local_port, vars, timeout_s).await
    }

    /// Registers `username`'s phone (sipp on `port`) at the gateway at `target`.
    pub(crate) async fn register_at(
        &self,
        target: SocketAddr,
        username: &str,
        port: u16,
        password: &str,
    ) -> (bool, String) {
        run_sipp(
            target,
            "agent_register.xml",
            port,
            vec![
                ("user", username.into()),
                ("domain", format!("{}.sip.test", self.slug)),
                ("pass", password.into()),
                ("expires", "300".into()),
            ],
            25,
        )
        .await
    }

    pub(crate) async fn register(
        &self,
        username: &str,
        port: u16,
        password: &str,
    ) -> (bool, String) {
        self.register_within(username, port, password, 25).await
    }

    async fn register_within(
        &self,
        username: &str,
        port: u16,
        password: &str,
        timeout_s: u64,
    ) -> (bool, String) {
        self.sipp_within(
            "agent_register.xml",
            port,
            vec![
                ("user", username.into()),
                ("domain", format!("{}.sip.test", self.slug)),
                ("pass", password.into()),
                ("expires", "300".into()),
            ],
            timeout_s,
        )
        .await
    }

    pub(crate) async fn cdrs(&self) -> Vec<Value> {
        use switchboard_db::entities::cdrs;
        let txn = self
            .app
            .db
            .tenant_txn(
                switchboard_domain::TenantId(self.tenant.id),
                switchboard_db::Access::Read,
            )
            .await
            .expect("txn");
        let rows = txn.all::<cdrs::Entity>(|q| q).await.expect("cdrs");
        txn.commit().await.expect("commit");
        rows.into_iter()
            .map(|r| serde_json::to_value(r).expect("json"))
            .collect()
    }

    /// Waits for `n` CDRs (they are written when the call's task ends).
    /// A folder in the gateway's local object store (`parts` below its root), created.
    pub(crate) fn store_dir(&self, parts: &[&str]) -> PathBuf {
        let mut dir = self
            .gw
            .gateway
            .cfg
            .recordings
            .local_dir
            .clone()
            .expect("the test gateway records to a local store");
        dir.extend(parts);
        std::fs::create_dir_all(&dir).expect("store dir");
        dir
    }

    pub(crate) async fn wait_cdrs(&self, n: usize) -> Vec<Value> {
        self.wait_cdrs_within(n, 100).await
    }

    /// Waits up to `tenths` tenths of a second for `n` CDRs.
    pub(crate) async fn wait_cdrs_within(&self, n: usize, tenths: u32) -> Vec<Value> {
        for _ in 0..tenths {
            let rows = self.cdrs().await;
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {n} CDRs after {tenths}00 ms: {:?}", self.cdrs().await);
    }
}

/// Runs a sipp scenario against the SIP endpoint at `target`; whether it passed, with its
/// output. `("calls", n)` among the variables runs `n` calls at once (default one).
pub(crate) async fn run_sipp(
    target: SocketAddr,
    scenario_file: &str,
    local_port: u16,
    vars: Vec<(&'static str, String)>,
    timeout_s: u64,
) -> (bool, String) {
    let calls = vars
        .iter()
        .find(|(k, _)| *k == "calls")
        .map_or("1".to_owned(), |(_, v)| v.clone());
    let mut cmd = Command::new("sipp");
    cmd.arg(target.to_string())
        .args(["-sf", &scenario(scenario_file)])
        .args(["-p", &local_port.to_string()])
        .args(["-m", &calls, "-r", &calls, "-l", &calls])
        .args(["-timeout", &format!("{timeout_s}s"), "-timeout_error"])
        .args([
            "-trace_err",
            "-error_file",
            "/dev/stderr",
            "-trace_msg",
            "-message_file",
            "/dev/stderr",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let ip = vars
        .iter()
        .find(|(k, _)| *k == "local_ip")
        .map_or("127.0.0.1".to_owned(), |(_, v)| v.clone());
    cmd.args(["-i", &ip]);
    for (k, v) in &vars {
        match *k {
            "local_ip" | "calls" => &mut cmd,
            "service" => cmd.args(["-s", v]),
            "pass" => cmd.args(["-ap", v]),
            "media_port" => cmd.args(["-mp", v]),
            "user" => cmd.args(["-au", v, "-set", k, v]),
            _ => cmd.args(["-set", k, v]),
        };
    }
    let out = tokio::time::timeout(Duration::from_secs(timeout_s + 15), cmd.output())
        .await
        .expect("sipp finishes in time")
        .expect("sipp runs (is sip-tester installed?)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What one RTP endpoint heard.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    pub(crate) samples: Vec<i16>,
    pub(crate) dtmf: Vec<char>,
}

/// An RTP endpoint: answers the first packet it receives by sending `tone` (PCMU, 20 ms
/// packets) back to its source (symmetric RTP, as phones do), records what it hears, and
/// stops after `run_for`.
pub(crate) async fn rtp_peer(socket: UdpSocket, tone: f64, run_for: Duration) -> Heard {
    rtp_peer_keys(socket, tone, run_for, Vec::new()).await
}

/// [`rtp_peer`] that also types `keys` on its keypad: each `(after, key)`, counted from the
/// first packet it hears, is sent as RFC 4733 events (payload 101, 100 ms, three end packets)
/// in place of its audio.
pub(crate) async fn rtp_peer_keys(
    socket: UdpSocket,
    tone: f64,
    run_for: Duration,
    keys: Vec<(Duration, char)>,
) -> Heard {
    rtp_peer_until(socket, tone, tokio::time::sleep(run_for), keys).await
}

/// [`rtp_peer_keys`] that runs until `stop` completes.
pub(crate) async fn rtp_peer_until(
    socket: UdpSocket,
    tone: f64,
    stop: impl std::future::Future<Output = ()>,
    keys: Vec<(Duration, char)>,
) -> Heard {
    rtp_peer_from(socket, tone, stop, keys, None).await
}

/// [`rtp_peer`] that speaks first, to `to` (a microphone: it does not wait to hear anything).
pub(crate) async fn rtp_peer_speaking(
    socket: UdpSocket,
    tone: f64,
    run_for: Duration,
    to: SocketAddr,
) -> Heard {
    rtp_peer_from(
        socket,
        tone,
        tokio::time::sleep(run_for),
        Vec::new(),
        Some(to),
    )
    .await
}

async fn rtp_peer_from(
    socket: UdpSocket,
    tone: f64,
    stop: impl std::future::Future<Output = ()>,
    mut keys: Vec<(Duration, char)>,
    mut peer: Option<SocketAddr>,
) -> Heard {
    let mut heard = Heard::default();
    let mut first_heard: Option<tokio::time::Instant> = None;
    // The key being typed: its event, its timestamp, and packets sent so far.
    let mut keying: Option<(u8, u32, u16)> = None;
    let pcm = sine(tone, 8_000, 8_000, 0.3);
    let mut buf = vec![0u8; 2048];
    let mut seq = 0u16;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_event_ts = None;
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return heard,
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                peer.get_or_insert(from);
                first_heard.get_or_insert_with(tokio::time::Instant::now);
                match p.payload_type {
                    0 => Law::Ulaw.decode(p.payload, &mut heard.samples),
                    8 => Law::Alaw.decode(p.payload, &mut heard.samples),
                    101 => {
                        if last_event_ts != Some(p.timestamp)
                            && let Ok(ev) = switchboard_media::dtmf::TelephoneEvent::parse(p.payload)
                            && let Some(d) = ev.digit()
                        {
                            heard.dtmf.push(d);
                            last_event_ts = Some(p.timestamp);
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let Some(to) = peer else { continue };
                let since = first_heard.map(|t| t.elapsed()).unwrap_or_default();
                if keying.is_none() && keys.first().is_some_and(|(after, _)| since >= *after) {
                    let (_, key) = keys.remove(0);
                    let event = switchboard_media::dtmf::digit_to_event(key).expect("a DTMF key");
                    keying = Some((event, u32::from(seq) * 160, 0));
                }
                if let Some((event, timestamp, sent)) = keying.as_mut() {
                    *sent += 1;
                    let payload = switchboard_media::dtmf::TelephoneEvent {
                        event: *event,
                        end: *sent > 5,
                        volume: 10,
                        duration: (*sent).min(5) * 160,
                    }
                    .to_bytes();
                    let packet = RtpPacket {
                        marker: *sent == 1,
                        payload_type: 101,
                        sequence: seq,
                        timestamp: *timestamp,
                        ssrc: 0x5eed_0000 + tone as u32,
                        csrcs: Vec::new(),
                        payload: &payload,
                    };
                    let mut out = Vec::with_capacity(16);
                    packet.write(&mut out);
                    let _ = socket.send_to(&out, to).await;
                    seq = seq.wrapping_add(1);
                    if *sent >= 8 {
                        keying = None;
                    }
                    continue;
                }
                let at = (usize::from(seq) * 160) % (pcm.len() - 160);
                let mut payload = Vec::with_capacity(160);
                Law::Ulaw.encode(&pcm[at..at + 160], &mut payload);
                let packet = RtpPacket {
                    marker: seq == 0,
                    payload_type: 0,
                    sequence: seq,
                    timestamp: u32::from(seq) * 160,
                    ssrc: 0x5eed_0000 + tone as u32,
                    csrcs: Vec::new(),
                    payload: &payload,
                };
                let mut out = Vec::with_capacity(172);
                packet.write(&mut out);
                let _ = socket.send_to(&out, to).await;
                seq = seq.wrapping_add(1);
            }
        }
    }
}

/// Per 250 ms window of `ch`: `Some(tone)` when one of the test tones dominates a window with
/// sound in it, `None` for silence (or noise).
pub(crate) fn windows(ch: &[i16]) -> Vec<Option<f64>> {
    ch.chunks_exact(2_000)
        .map(|w| {
            let loud = w.iter().any(|&x| x.unsigned_abs() > 1_000);
            if loud {
                dominant_tone(w, &TONES, 8_000)
            } else {
                None
            }
        })
        .collect()
}

pub(crate) fn last_tone(samples: &[i16]) -> Option<f64> {
    let tail = &samples[samples.len().saturating_sub(4_000)..];
    dominant_tone(tail, &TONES, 8_000)
}

#[tokio::test]
async fn inbound_call_is_queued_answered_by_a_registered_agent_with_audio_both_ways() {
    let fx = fixture(10_000).await;
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "REGISTER with digest: {out}");
    fx.ready(&fx.tenant.agent).await;

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(7)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(7)));

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
            ("talk_ms", "3000".into()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(agent_ok, "agent scenario: {agent_out}");

    let caller_heard = caller_media.await.expect("caller media");
    let agent_heard = agent_media.await.expect("agent media");
    assert!(
        caller_heard.samples.len() > 8_000,
        "caller heard {} samples",
        caller_heard.samples.len()
    );
    assert!(
        agent_heard.samples.len() > 8_000,
        "agent heard {} samples",
        agent_heard.samples.len()
    );
    assert_eq!(
        last_tone(&agent_heard.samples),
        Some(CALLER_TONE),
        "the caller's tone reaches the agent"
    );
    assert_eq!(
        last_tone(&caller_heard.samples),
        Some(AGENT_TONE),
        "the agent's tone reaches the caller"
    );
    // Queued for about 200 ms (the agent's phone rings, then answers): the caller's first
    // packets are the hold music's first note.
    let early = &caller_heard.samples[..800];
    assert_eq!(
        dominant_tone(early, &TONES, 8_000),
        Some(523.25),
        "the caller heard hold music first"
    );
    assert_eq!(
        agent_heard.dtmf,
        vec!['5'],
        "SIP INFO digit reaches the agent as RFC 4733"
    );

    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(cdr["hangup_cause"], "normal_clearing", "{cdr}");
    assert_eq!(cdr["hangup_side"], "caller");
    assert_eq!(cdr["to_number"], NUMBER);
    assert_eq!(cdr["from_number"], "+14155550199");
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id));
    assert!(cdr["talk_ms"].as_i64() > Some(2_000), "{cdr}");
    let stats: Value =
        serde_json::from_str(cdr["media_stats"].as_str().unwrap_or("{}")).expect("stats json");
    assert!(
        stats["caller"]["packets_in"].as_u64() > Some(100),
        "{stats}"
    );
    assert!(stats["agent"]["packets_in"].as_u64() > Some(100), "{stats}");

    // The call was recorded, then uploaded to the local store: caller left, agent right,
    // each channel with its side's tone.
    let rec_cfg = &fx.gw.gateway.cfg.recordings;
    let dir = rec_cfg.local_dir.clone().expect("local store");
    let file = dir.join(fx.tenant.id.to_string()).join(format!(
        "{}.wav",
        cdr["call_id"].as_str().unwrap_or_default()
    ));
    let mut samples = Vec::new();
    for _ in 0..50 {
        if let Ok(mut r) = hound::WavReader::open(&file) {
            assert_eq!(r.spec().channels, 2);
            samples = r.samples::<i16>().map_while(Result::ok).collect();
            if samples.len() > 2 * 8_000 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert!(
        left.len() > 8_000,
        "recording of {} frames at {}",
        left.len(),
        file.display()
    );
    // Per half second (a recording is many short frames, so judge it in windows): most
    // windows with sound carry that side's tone.
    let mostly = |ch: &[i16], tone: f64| {
        let windows: Vec<Option<f64>> = ch
            .chunks_exact(4_000)
            .filter(|w| w.iter().any(|&x| x.unsigned_abs() > 1_000))
            .map(|w| dominant_tone(w, &TONES, 8_000))
            .collect();
        let hits = windows.iter().filter(|w| **w == Some(tone)).count();
        assert!(
            windows.len() >= 4 && hits * 10 >= windows.len() * 8,
            "{tone} Hz in {hits} of {} windows: {windows:?}",
            windows.len()
        );
    };
    mostly(&left, CALLER_TONE);
    mostly(&right, AGENT_TONE);

    // Its metadata row: the stored file's size and SHA-256, written once.
    use switchboard_db::entities::recordings;
    let mut row = None;
    for _ in 0..50 {
        let txn = fx
            .app
            .db
            .tenant_txn(
                switchboard_domain::TenantId(fx.tenant.id),
                switchboard_db::Access::Read,
            )
            .await
            .expect("txn");
        let rows = txn.all::<recordings::Entity>(|q| q).await.expect("rows");
        txn.commit().await.expect("commit");
        if let Some(r) = rows.into_iter().next()
            && r.upload_state == "stored"
        {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = row.expect("a stored recordings row");
    let bytes = std::fs::read(&file).expect("file");
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        (row.sha256.as_str(), row.size_bytes),
        (sha.as_str(), bytes.len() as i64)
    );
    assert_eq!(row.call_id, cdr["call_id"].as_str().unwrap_or_default());
    assert_eq!(row.upload_state, "stored");
    assert!(row.duration_ms > 2_000, "{row:?}");
    // Local playback: a signed, expiring api URL that needs no token; a forged one fails.
    let (s, p) = fx
        .app
        .get(
            &format!("/v1/recordings/{}/playback", row.call_id),
            &fx.tenant.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let url = format!("{}{}", fx.app.base, p["url"].as_str().expect("url"));
    let got = reqwest::get(&url).await.expect("GET playback");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.expect("body").as_ref(), bytes.as_slice());
    let forged = url.replace("&sig=", "&sig=0");
    assert_eq!(
        reqwest::get(&forged).await.expect("GET").status(),
        StatusCode::FORBIDDEN
    );
    let (s, _) = fx
        .app
        .get(
            &format!("/v1/recordings/{}/playback", row.call_id),
            &fx.tenant.agent,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "agents do not play recordings");
    // The spool copy went once the store confirmed it.
    let spool = rec_cfg.spool_dir.clone().expect("spool");
    assert!(
        !spool
            .join(fx.tenant.id.to_string())
            .join(format!("{}.wav", row.call_id))
            .exists()
    );
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
}

#[tokio::test]
async fn caller_abandons_while_queued() {
    let fx = fixture(10_000).await;
    // A logged-in agent who is not ready: the queue holds calls for them.
    fx.log_in(&fx.tenant.agent).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = rtp.local_addr().expect("addr").port();
    let (ok, out) = fx
        .sipp(
            "caller_cancel.xml",
            free_udp_port(),
            vec![
                ("service", NUMBER.into()),
                ("rtp", port.to_string()),
                ("hold_ms", "1000".into()),
            ],
        )
        .await;
    assert!(ok, "{out}");
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["hangup_cause"], "abandoned", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["answered_at"], Value::Null);
}

#[tokio::test]
async fn a_rejected_offer_returns_the_call_to_the_queue_and_the_next_agent_answers() {
    let fx = fixture(10_000).await;
    let (s, second) = fx
        .app
        .post(
            "/v1/users",
            &fx.tenant.admin,
            json!({"email": "agent2@acme.example.com", "display_name": "Agent 2",
                   "password": PASSWORD, "role": "agent"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    let second_id = uuid(&second["id"]);
    let (_, queues) = fx.app.get("/v1/queues", &fx.tenant.admin).await;
    let queue = queues["items"][0]["id"].clone();
    fx.equip_agent(second_id, "agent2", &queue).await;
    let second_token = token_of(&fx.app.login("acme", "agent2@acme.example.com").await);

    let (p1, p2) = (free_udp_port(), free_udp_port());
    assert!(fx.register("agent1", p1, AGENT_PASSWORD).await.0);
    assert!(fx.register("agent2", p2, AGENT_PASSWORD).await.0);
    // agent1 is ready first (longest idle), so it is offered the call first.
    fx.ready(&fx.tenant.agent).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    fx.ready(&second_token).await;

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(6)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(6)));

    let first = fx.sipp("agent_reject.xml", p1, vec![]);
    let second = fx.sipp(
        "agent_answer.xml",
        p2,
        vec![("rtp", agent_rtp_port.to_string())],
    );
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "2000".into()),
        ],
    );
    let ((first_ok, first_out), (second_ok, second_out), (caller_ok, caller_out)) =
        tokio::join!(first, second, caller);
    assert!(first_ok, "agent1 rejects: {first_out}");
    assert!(second_ok, "agent2 answers: {second_out}");
    assert!(caller_ok, "caller: {caller_out}");
    let agent_heard = agent_media.await.expect("agent media");
    let _ = caller_media.await;
    assert_eq!(last_tone(&agent_heard.samples), Some(CALLER_TONE));
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["agent_id"], json!(second_id), "{}", cdrs[0]);
    // The call's legs, as the api shows them: the caller, agent1's 486, agent2's answer.
    let (s, call) = fx
        .app
        .get(
            &format!("/v1/calls/{}", cdrs[0]["id"].as_str().unwrap_or_default()),
            &fx.tenant.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{call}");
    let legs: Vec<_> = call["legs"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| {
                    (
                        l["role"].as_str().unwrap_or_default().to_owned(),
                        l["agent_id"].clone(),
                        l["sip_status"].as_i64(),
                        l["end_reason"].as_str().unwrap_or_default().to_owned(),
                        l["answered_at"].is_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        legs,
        vec![
            (
                "caller".into(),
                Value::Null,
                None,
                "normal_clearing".into(),
                true
            ),
            (
                "agent".into(),
                json!(fx.tenant.agent_id),
                Some(486),
                "rejected".into(),
                false
            ),
            (
                "agent".into(),
                json!(second_id),
                None,
                "hangup".into(),
                true
            ),
        ],
        "{call}"
    );
    assert!(
        call["legs"][2]["media_stats"]["packets_in"].as_u64() > Some(0),
        "{call}"
    );
}

#[tokio::test]
async fn an_unanswered_offer_rings_out_and_the_call_stays_queued() {
    let fx = fixture(1_500).await;
    let port = free_udp_port();
    assert!(fx.register("agent1", port, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let agent = fx.sipp("agent_no_answer.xml", port, vec![]);
    let caller = fx.sipp(
        "caller_cancel.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", rtp_port.to_string()),
            ("hold_ms", "4000".into()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(
        agent_ok,
        "the gateway CANCELs the ringing phone after the ring timeout: {agent_out}"
    );
    assert!(
        caller_ok,
        "the caller was still queued and could hang up: {caller_out}"
    );
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["hangup_cause"], "abandoned", "{}", cdrs[0]);
}

#[tokio::test]
async fn wrong_digest_credentials_get_401_then_the_source_is_banned() {
    let fx = fixture(10_000).await;
    let port = free_udp_port();
    // max_auth_failures = 3 in this fixture: three wrong passwords are answered 401...
    for attempt in 0..3 {
        let (ok, out) = fx.register("agent1", port, "wrong-password-1").await;
        assert!(
            !ok,
            "attempt {attempt} with a wrong password must fail: {out}"
        );
        assert!(
            out.contains("401") || out.contains("Unauthorized") || out.contains("unexpected"),
            "{out}"
        );
    }
    // ...then even the right password gets no answer from this source: it is banned.
    let (ok, out) = fx.register_within("agent1", port, AGENT_PASSWORD, 3).await;
    assert!(!ok, "a banned source is not served: {out}");
    assert!(
        fx.gw
            .gateway
            .guard
            .banned(switchboard_gateway::node::now_ms())
            .iter()
            .any(|(ip, _)| ip.is_loopback())
    );
}

#[tokio::test]
async fn hold_and_resume_by_reinvite_reach_the_agent() {
    let fx = fixture(10_000).await;
    let agent_port = free_udp_port();
    assert!(fx.register("agent1", agent_port, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;
    let agent = fx.sipp(
        "agent_answer_hold.xml",
        agent_port,
        vec![("rtp", free_udp_port().to_string())],
    );
    let caller = fx.sipp(
        "caller_hold.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", free_udp_port().to_string()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(
        caller_ok,
        "caller holds (answered recvonly) and resumes: {caller_out}"
    );
    assert!(
        agent_ok,
        "the agent's phone got sendonly, then sendrecv: {agent_out}"
    );
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["hangup_cause"], "normal_clearing", "{}", cdrs[0]);
}

/// Sends one SIP request over UDP and returns the responses until a final one (or 2 s).
pub(crate) async fn exchange(socket: &UdpSocket, to: SocketAddr, request: &str) -> Vec<String> {
    socket.send_to(request.as_bytes(), to).await.expect("send");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.push(text);
        if status >= 200 {
            break;
        }
    }
    out
}

pub(crate) fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn register_request(local: SocketAddr, cseq: u32, authorization: Option<&str>) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:acme.sip.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-sha-{cseq}\r\n\
         From: <sip:agent1@acme.sip.test>;tag=sha256test\r\n\
         To: <sip:agent1@acme.sip.test>\r\n\
         Call-ID: sha256-register@test\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:agent1@{local}>\r\n\
         Expires: 120\r\n\
         {auth}Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn a_phone_registers_with_sha256_digest() {
    use switchboard_sip_guard::{Algorithm, SipCredential, compute_response};
    let fx = fixture(10_000).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");
    let replies = exchange(&socket, fx.sip(), &register_request(local, 1, None)).await;
    let challenge = replies.last().expect("a 401");
    assert_eq!(status_of(challenge), 401, "{challenge}");
    let sha = challenge
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("SHA-256"))
        .expect("a SHA-256 challenge");
    let nonce = sha
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce");
    let cred = SipCredential::derive("agent1", "acme", AGENT_PASSWORD);
    let uri = "sip:acme.sip.test";
    let response = compute_response(
        Algorithm::Sha256,
        &cred.ha1_sha256,
        nonce,
        "00000001",
        "c0ffee",
        "auth",
        "REGISTER",
        uri,
    );
    let authorization = format!(
        "Digest username=\"agent1\", realm=\"acme\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c0ffee\""
    );
    let replies = exchange(
        &socket,
        fx.sip(),
        &register_request(local, 2, Some(&authorization)),
    )
    .await;
    let ok = replies.last().expect("a final response");
    assert_eq!(status_of(ok), 200, "{ok}");
    assert!(ok.contains("expires=120"), "{ok}");
}

pub(crate) fn invite_request(local: SocketAddr, number: &str) -> String {
    let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-inv-{number}\r\n\
         From: <sip:+14155550111@{local}>;tag=c1\r\n\
         To: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: invite-{number}@test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:c@{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

#[tokio::test]
async fn unknown_numbers_suspended_tenants_and_options() {
    let fx = fixture(10_000).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");

    let replies = exchange(&socket, fx.sip(), &invite_request(local, "+19995550000")).await;
    assert_eq!(
        replies.last().map(|r| status_of(r)),
        Some(404),
        "{replies:?}"
    );

    let options = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-opt\r\n\
         From: <sip:ping@{local}>;tag=o1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: options@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let replies = exchange(&socket, fx.sip(), &options).await;
    assert_eq!(
        replies.last().map(|r| status_of(r)),
        Some(200),
        "{replies:?}"
    );

    // A UDP request whose Content-Length exceeds its body: 400 at the transport edge.
    let short = invite_request(local, NUMBER).replace("Content-Length: ", "Content-Length: 9");
    let replies = exchange(&socket, fx.sip(), &short).await;
    assert_eq!(
        replies.last().map(|r| status_of(r)),
        Some(400),
        "{replies:?}"
    );

    // The operator suspends the tenant: its numbers answer 403.
    let op = fx.app.operator_token().await;
    let (s, v) = fx
        .app
        .send_json(
            Method::PATCH,
            &format!("/v1/tenants/{}", fx.tenant.id),
            Some(&op),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let replies = exchange(&socket, fx.sip(), &invite_request(local, NUMBER)).await;
    assert_eq!(
        replies.last().map(|r| status_of(r)),
        Some(403),
        "{replies:?}"
    );
}

/// The agent's phone sits on 127.0.0.2 (the carrier on 127.0.0.1 is the trunk source).
const PHONE_IP: &str = "127.0.0.2";

#[tokio::test]
async fn an_agent_dials_out_through_the_trunk_within_the_dial_policy() {
    let fx = fixture(10_000).await;
    let trunk_port = free_udp_port();
    let trunk = test_trunk(trunk_port);
    // A second node with the outbound trunk, on the same database and engine.
    let gw = start_gateway_with(&fx.app, 10_000, Some(trunk)).await;
    let fx = Fixture { gw, ..fx };
    let phone_port = free_udp_port();
    let dial = |number: &'static str, scenario: &'static str| {
        fx.sipp(
            scenario,
            phone_port,
            vec![
                ("local_ip", PHONE_IP.into()),
                ("service", number.into()),
                ("user", "agent1".into()),
                ("pass", AGENT_PASSWORD.into()),
                ("domain", "acme.sip.test".into()),
                ("rtp", "40010".into()),
            ],
        )
    };

    // Premium and (by default) international numbers never reach the trunk.
    for blocked in ["+19005550123", "+442071234567"] {
        let (ok, out) = dial(blocked, "agent_dial_blocked.xml").await;
        assert!(ok, "{blocked} refused with 403: {out}");
    }

    let carrier = fx.sipp(
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", free_udp_port().to_string())],
    );
    let phone = dial("+14155550123", "agent_dial.xml");
    let ((carrier_ok, carrier_out), (phone_ok, phone_out)) = tokio::join!(carrier, phone);
    assert!(
        carrier_ok,
        "the carrier got the call with credentials and caller id: {carrier_out}"
    );
    assert!(phone_ok, "the phone's call was answered: {phone_out}");
    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(
        (
            &cdr["direction"],
            &cdr["from_number"],
            &cdr["to_number"],
            &cdr["hangup_side"]
        ),
        (
            &json!("outbound"),
            &json!(NUMBER),
            &json!("+14155550123"),
            &json!("agent")
        ),
        "{cdr}"
    );
    assert_eq!(cdr["agent_id"], json!(fx.tenant.agent_id));

    // The operator enables international calls for the tenant: the call goes out.
    let op = fx.app.operator_token().await;
    let (s, v) = fx
        .app
        .send_json(
            Method::PUT,
            &format!("/v1/tenants/{}/outbound", fx.tenant.id),
            Some(&op),
            Some(
                json!({"dial_policy": {"home_country": "1", "allow_international": true},
                        "caller_id": NUMBER, "max_concurrent_calls": 5, "max_calls_per_seat": 1}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let carrier = fx.sipp(
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", free_udp_port().to_string())],
    );
    let phone = dial("+442071234567", "agent_dial.xml");
    let ((carrier_ok, carrier_out), (phone_ok, phone_out)) = tokio::join!(carrier, phone);
    assert!(carrier_ok, "{carrier_out}");
    assert!(phone_ok, "{phone_out}");
}

#[tokio::test]
async fn session_timers_are_granted_refreshed_by_update_and_too_small_is_422() {
    let fx = fixture(10_000).await;
    let agent_port = free_udp_port();
    assert!(fx.register("agent1", agent_port, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;
    let agent = fx.sipp(
        "agent_answer.xml",
        agent_port,
        vec![("rtp", free_udp_port().to_string())],
    );
    let caller = fx.sipp(
        "caller_session_timer.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", free_udp_port().to_string()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(
        caller_ok,
        "200 with Session-Expires and Require: timer, UPDATE refresh: {caller_out}"
    );
    assert!(agent_ok, "{agent_out}");

    // An interval under Min-SE (90 s) is refused with 422 and our Min-SE (RFC 4028 6).
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");
    let invite = invite_request(local, NUMBER).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSession-Expires: 30\r\nSupported: timer\r\n",
    );
    let replies = exchange(&socket, fx.sip(), &invite).await;
    let last = replies.last().expect("a final response");
    assert_eq!(status_of(last), 422, "{last}");
    assert!(last.contains("Min-SE: 90"), "{last}");
}

#[tokio::test]
async fn an_agent_blind_transfers_the_caller_to_another_agent_by_refer() {
    let fx = fixture(10_000).await;
    let (s, second) = fx
        .app
        .post(
            "/v1/users",
            &fx.tenant.admin,
            json!({"email": "agent2@acme.example.com", "display_name": "Agent 2",
                   "password": PASSWORD, "role": "agent"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    let second_id = uuid(&second["id"]);
    let (_, queues) = fx.app.get("/v1/queues", &fx.tenant.admin).await;
    let queue = queues["items"][0]["id"].clone();
    fx.equip_agent(second_id, "agent2", &queue).await;
    let second_token = token_of(&fx.app.login("acme", "agent2@acme.example.com").await);
    let (p1, p2) = (free_udp_port(), free_udp_port());
    assert!(fx.register("agent1", p1, AGENT_PASSWORD).await.0);
    assert!(fx.register("agent2", p2, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;
    // agent2 logs in but is not ready until agent1 has the call.
    fx.log_in(&second_token).await;

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(7)));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(7)));

    let first = fx.sipp(
        "agent_transfer.xml",
        p1,
        vec![
            ("rtp", free_udp_port().to_string()),
            ("target", "agent2".into()),
        ],
    );
    let second = async {
        // Ready once the call is with agent1, so only the transfer can bring it here.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (s, v) = fx
            .app
            .send_json(
                Method::PUT,
                "/v1/agent/state",
                Some(&second_token),
                Some(json!({"state": "ready"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        fx.sipp(
            "agent_answer.xml",
            p2,
            vec![("rtp", agent_rtp_port.to_string())],
        )
        .await
    };
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "3000".into()),
        ],
    );
    let ((first_ok, first_out), (second_ok, second_out), (caller_ok, caller_out)) =
        tokio::join!(first, second, caller);
    assert!(first_ok, "agent1 transfers: {first_out}");
    assert!(second_ok, "agent2 gets the transferred call: {second_out}");
    assert!(
        caller_ok,
        "the caller stays in the call throughout: {caller_out}"
    );
    let agent_heard = agent_media.await.expect("agent media");
    let caller_heard = caller_media.await.expect("caller media");
    assert_eq!(last_tone(&agent_heard.samples), Some(CALLER_TONE));
    assert_eq!(last_tone(&caller_heard.samples), Some(AGENT_TONE));
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs.len(), 1, "one CDR for the whole call: {cdrs:?}");
    assert_eq!(cdrs[0]["agent_id"], json!(second_id), "{}", cdrs[0]);
}

#[tokio::test]
async fn sip_over_tls_is_served_when_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = spawn_app().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("sb-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).expect("write key");
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let cfg = GatewayConfig {
        sip_addr: "127.0.0.1:0".parse().expect("addr"),
        tls: Some(switchboard_gateway::config::TlsListener {
            addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
            cert_file,
            key_file,
        }),
        rtp_port_min: 31_000,
        rtp_port_max: 31_099,
        ..GatewayConfig::default()
    };
    let _gw = switchboard_gateway::start(cfg, app.db.clone(), app.engine.clone())
        .await
        .expect("gateway with TLS starts");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    // The listener binds in the background: retry the connection for up to 2 s.
    let mut tcp = None;
    for _ in 0..40 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await {
            tcp = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tcp = tcp.expect("the TLS listener accepts connections");
    let local = tcp.local_addr().expect("local");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let options = format!(
        "OPTIONS sips:127.0.0.1:{tls_port} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls\r\n\
         From: <sips:ping@{local}>;tag=t1\r\nTo: <sips:127.0.0.1>\r\nCall-ID: tls@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(options.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_blind_transfers_the_caller_to_an_outside_number() {
    let fx = fixture(10_000).await;
    let trunk_port = free_udp_port();
    let trunk = test_trunk(trunk_port);
    let gw = start_gateway_with(&fx.app, 10_000, Some(trunk)).await;
    let fx = Fixture { gw, ..fx };
    let agent_port = free_udp_port();
    assert!(fx.register("agent1", agent_port, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let remote_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let remote_rtp_port = remote_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(7)));
    let remote_media = tokio::spawn(rtp_peer(remote_rtp, AGENT_TONE, Duration::from_secs(7)));

    let agent = fx.sipp(
        "agent_transfer.xml",
        agent_port,
        vec![
            ("rtp", free_udp_port().to_string()),
            ("target", "+14155550123".into()),
        ],
    );
    let carrier = fx.sipp(
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", remote_rtp_port.to_string())],
    );
    let caller = fx.sipp(
        "caller.xml",
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("rtp", caller_rtp_port.to_string()),
            ("talk_ms", "3000".into()),
        ],
    );
    let ((agent_ok, agent_out), (carrier_ok, carrier_out), (caller_ok, caller_out)) =
        tokio::join!(agent, carrier, caller);
    assert!(agent_ok, "the agent transfers by REFER: {agent_out}");
    assert!(
        carrier_ok,
        "the outside number answers, then gets the caller's BYE: {carrier_out}"
    );
    assert!(caller_ok, "{caller_out}");
    let remote_heard = remote_media.await.expect("remote media");
    let caller_heard = caller_media.await.expect("caller media");
    assert_eq!(last_tone(&remote_heard.samples), Some(CALLER_TONE));
    assert_eq!(last_tone(&caller_heard.samples), Some(AGENT_TONE));
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(
        (&cdrs[0]["hangup_side"], &cdrs[0]["agent_id"]),
        (&json!("caller"), &json!(fx.tenant.agent_id)),
        "{}",
        cdrs[0]
    );
}

#[tokio::test]
async fn overload_is_answered_503_with_retry_after() {
    let app = spawn_app().await;
    let gw = start_gateway_configured(&app, |cfg| cfg.max_cps = 1).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = socket.local_addr().expect("addr");
    // One call per second with a burst of two: the third INVITE in a row is refused.
    let mut finals = Vec::new();
    for n in 0..3 {
        let invite = invite_request(local, &format!("+1999555000{n}"));
        let replies = exchange(&socket, gw.sip_addr(), &invite).await;
        finals.push(replies.last().cloned().unwrap_or_default());
    }
    assert_eq!(status_of(&finals[0]), 404, "{finals:?}");
    assert_eq!(status_of(&finals[1]), 404, "{finals:?}");
    assert_eq!(status_of(&finals[2]), 503, "{finals:?}");
    assert!(finals[2].contains("Retry-After:"), "{}", finals[2]);
}

/// Writes `name` as 0.4 s of a tone, 16-bit mono 8 kHz.
/// Queue announcement prompts, each a tone of its own: position 300 Hz, digit d (400 + 100 d)
/// Hz, wait 1500 Hz, minutes 1600 Hz.
fn announcement_wavs(dir: &std::path::Path) {
    tone_wav(dir, "position.wav", 300.0);
    for d in 0..10 {
        tone_wav(dir, &format!("digit-{d}.wav"), 400.0 + 100.0 * f64::from(d));
    }
    tone_wav(dir, "wait.wav", 1_500.0);
    tone_wav(dir, "minutes.wav", 1_600.0);
}

/// A queued caller (nobody ready) who hangs up after 3 s: asserts it heard "you are caller
/// number" then "1" from [`announcement_wavs`].
async fn assert_announced_first_in_line(fx: &Fixture) {
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = rtp.local_addr().expect("addr").port();
    let heard = tokio::spawn(rtp_peer(rtp, CALLER_TONE, Duration::from_secs(4)));
    let (ok, out) = fx
        .sipp(
            "caller_cancel.xml",
            free_udp_port(),
            vec![
                ("service", NUMBER.into()),
                ("rtp", port.to_string()),
                ("hold_ms", "3000".into()),
            ],
        )
        .await;
    assert!(ok, "{out}");
    let heard = heard.await.expect("media");
    let all: Vec<f64> = [300.0, 523.25, 659.25, 1_500.0, 1_600.0]
        .into_iter()
        .chain((0..10).map(|d| 400.0 + 100.0 * f64::from(d)))
        .collect();
    let windows: Vec<Option<f64>> = heard
        .samples
        .chunks(800)
        .map(|w| dominant_tone(w, &all, 8_000))
        .collect();
    let position = windows
        .iter()
        .position(|w| *w == Some(300.0))
        .unwrap_or_else(|| panic!("the caller heard 'you are caller number': {windows:?}"));
    assert!(
        windows[position..].contains(&Some(500.0)),
        "then the digit 1: {windows:?}"
    );
}

fn tone_wav(dir: &std::path::Path, name: &str, freq: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join(name), spec).expect("wav");
    for s in sine(freq, 8_000, 3_200, 0.3) {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("finalize");
}

#[tokio::test]
async fn queued_callers_hear_their_place_in_line() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("sb-ann-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    // Each prompt a tone of its own: position 300 Hz, digit d (400 + 100 d) Hz, wait 1500 Hz,
    // minutes 1600 Hz.
    announcement_wavs(&dir);
    let ann = dir.clone();
    let gw = start_gateway_configured(&app, move |cfg| cfg.announcements_dir = Some(ann)).await;
    let tenant = app.tenant("acme", 5).await;
    let (_, queue) = app
        .post("/v1/queues", &tenant.admin, json!({"name": "Support"}))
        .await;
    app.post(
        "/v1/numbers",
        &tenant.admin,
        json!({"number": NUMBER, "kind": "did", "label": "main", "queue_id": queue["id"]}),
    )
    .await;
    let fx = Fixture {
        known_calls: std::sync::Mutex::new(Vec::new()),
        app,
        tenant,
        slug: "acme".into(),
        gw,
    };
    fx.equip_agent(fx.tenant.agent_id, "agent1", &queue["id"])
        .await;
    fx.log_in(&fx.tenant.agent).await; // logged in, not ready: the caller waits
    assert_announced_first_in_line(&fx).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_trunk_identified_by_credentials_is_challenged_then_routed() {
    const REALM: &str = "carrier.example";
    const TRUNK_PASSWORD: &str = "trunk-secret-1";
    let fx = fixture_configured(|cfg| {
        // No carrier is trusted by address: this one must prove itself.
        cfg.trunk_sources = vec![];
        cfg.inbound_trunks = vec![switchboard_gateway::config::InboundTrunk {
            name: "carrier".into(),
            realm: REALM.into(),
            username: "sb-in".into(),
            password: TRUNK_PASSWORD.into(),
            sources: vec!["127.0.0.1".parse().expect("ip")],
        }];
    })
    .await;
    fx.log_in(&fx.tenant.agent).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let call = |password: &'static str, timeout_s: u64| {
        fx.sipp_within(
            "caller_trunk_auth.xml",
            free_udp_port(),
            vec![
                ("service", NUMBER.into()),
                ("rtp", rtp_port.to_string()),
                ("hold_ms", "500".into()),
                ("domain", REALM.into()),
                ("user", "sb-in".into()),
                ("pass", password.into()),
            ],
            timeout_s,
        )
    };
    // The right credentials: 407, then the call is queued (183) until the caller gives up.
    let (ok, out) = call(TRUNK_PASSWORD, 25).await;
    assert!(ok, "{out}");
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["hangup_cause"], "abandoned", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["from_number"], "+14155550198", "{}", cdrs[0]);
    // A wrong password is challenged again and never reaches the queue.
    let (ok, out) = call("wrong-password", 3).await;
    assert!(!ok, "{out}");
    assert!(out.contains("407"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fx.cdrs().await.len(), 1);

    // Without the trunk's realm, a loopback INVITE is no carrier's: it is taken as a phone
    // dialling out, which must authenticate as an agent (407 with the tenant's realm).
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let invite = invite_request(socket.local_addr().expect("addr"), NUMBER);
    let replies = exchange(&socket, fx.sip(), &invite).await;
    let last = replies.last().cloned().unwrap_or_default();
    assert_eq!(status_of(&last), 407, "{replies:?}");
    assert!(!last.contains(REALM), "{last}");
}

/// A packet capture (libpcap format, Ethernet/IPv4/UDP) of `seconds` of RTP carrying `tone`
/// as PCMU, 20 ms per packet, as a carrier's media would be captured on the wire.
fn rtp_capture(tone: f64, seconds: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let pcm = sine(tone, 8_000, 8_000 * seconds, 0.3);
    for (n, chunk) in pcm.chunks_exact(160).enumerate() {
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&((n * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_u32.to_be_bytes());
        Law::Ulaw.encode(chunk, &mut rtp);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6_000u16.to_be_bytes());
        frame.extend_from_slice(&6_000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let usec = (n as u32) * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

#[tokio::test]
async fn a_carrier_playing_a_packet_capture_is_heard_by_the_agent() {
    let fx = fixture(10_000).await;
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "REGISTER with digest: {out}");
    fx.ready(&fx.tenant.agent).await;

    // The capture and a scenario naming it (sipp takes no variable in play_pcap_audio).
    let dir = std::env::temp_dir().join(format!("sb-pcap-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pcap = dir.join("caller-tone.pcap");
    std::fs::write(&pcap, rtp_capture(CALLER_TONE, 3)).expect("pcap");
    let template = std::fs::read_to_string(scenario("caller_pcap.xml.in")).expect("template");
    let scenario_path = dir.join("caller_pcap.xml");
    std::fs::write(
        &scenario_path,
        template.replace("PCAP_FILE", &pcap.display().to_string()),
    )
    .expect("scenario");

    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, Duration::from_secs(7)));
    let agent = fx.sipp(
        "agent_answer.xml",
        agent_port,
        vec![("rtp", agent_rtp_port.to_string())],
    );
    let caller = fx.sipp(
        scenario_path.to_str().expect("utf-8 path"),
        free_udp_port(),
        vec![
            ("service", NUMBER.into()),
            ("media_port", free_udp_port().to_string()),
        ],
    );
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(agent_ok, "agent scenario: {agent_out}");
    let agent_heard = agent_media.await.expect("agent media");
    assert!(
        agent_heard.samples.len() > 8_000,
        "agent heard {} samples",
        agent_heard.samples.len()
    );
    assert_eq!(
        dominant_tone(&agent_heard.samples[4_000..], &TONES, 8_000),
        Some(CALLER_TONE),
        "the captured tone reaches the agent"
    );
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["hangup_side"], "caller", "{}", cdrs[0]);
}

/// A fixture whose gateway dials out on a sipp carrier at the returned port.
async fn fixture_with_trunk() -> (Fixture, u16) {
    let trunk_port = free_udp_port();
    let fx = fixture_configured(|cfg| {
        cfg.outbound_trunk = Some(test_trunk(trunk_port));
    })
    .await;
    (fx, trunk_port)
}

#[tokio::test]
async fn click_to_call_rings_the_agents_phone_then_dials_the_number() {
    let (fx, trunk_port) = fixture_with_trunk().await;
    let phone_port = free_udp_port();

    // Before the phone registers there is nothing to ring: 409 at once.
    let (s, v) = fx
        .app
        .post(
            "/v1/agent/dial",
            &fx.tenant.agent,
            json!({"number": "+14155550123"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["type"], "urn:switchboard:problem:phone-unavailable",
        "{v}"
    );

    assert!(fx.register("agent1", phone_port, AGENT_PASSWORD).await.0);
    // The dial policy is the same as for the phone's own calls: premium is refused.
    let (s, v) = fx
        .app
        .post(
            "/v1/agent/dial",
            &fx.tenant.agent,
            json!({"number": "+19005550123"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        v["type"], "urn:switchboard:problem:destination-not-allowed",
        "{v}"
    );
    let (s, v) = fx
        .app
        .post(
            "/v1/agent/dial",
            &fx.tenant.agent,
            json!({"number": "12345"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let phone_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let remote_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let phone_rtp_port = phone_rtp.local_addr().expect("addr").port();
    let remote_rtp_port = remote_rtp.local_addr().expect("addr").port();
    let phone_media = tokio::spawn(rtp_peer(phone_rtp, AGENT_TONE, Duration::from_secs(6)));
    let remote_media = tokio::spawn(rtp_peer(remote_rtp, CALLER_TONE, Duration::from_secs(6)));
    let phone = fx.sipp(
        "agent_answer_hangup.xml",
        phone_port,
        vec![
            ("rtp", phone_rtp_port.to_string()),
            ("talk_ms", "3000".into()),
        ],
    );
    let carrier = fx.sipp(
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", remote_rtp_port.to_string())],
    );
    let click = async {
        // The sipp peers are listening by then.
        tokio::time::sleep(Duration::from_millis(500)).await;
        fx.app
            .post(
                "/v1/agent/dial",
                &fx.tenant.agent,
                json!({"number": "+14155550123"}),
            )
            .await
    };
    let ((phone_ok, phone_out), (carrier_ok, carrier_out), (s, accepted)) =
        tokio::join!(phone, carrier, click);
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert!(
        phone_ok,
        "the phone rang, answered and hung up: {phone_out}"
    );
    assert!(
        carrier_ok,
        "the number was dialled with the trunk's credentials and the tenant's caller id: {carrier_out}"
    );
    let phone_heard = phone_media.await.expect("phone media");
    let remote_heard = remote_media.await.expect("remote media");
    assert_eq!(last_tone(&phone_heard.samples), Some(CALLER_TONE));
    assert_eq!(last_tone(&remote_heard.samples), Some(AGENT_TONE));

    let cdrs = fx.wait_cdrs(1).await;
    let cdr = &cdrs[0];
    assert_eq!(cdr["call_id"], accepted["call_id"], "{cdr}");
    assert_eq!(
        (&cdr["direction"], &cdr["to_number"], &cdr["hangup_side"]),
        (
            &json!("click_to_call"),
            &json!("+14155550123"),
            &json!("agent")
        ),
        "{cdr}"
    );
    let (_, call) = fx
        .app
        .get(
            &format!("/v1/calls/{}", cdr["id"].as_str().unwrap_or_default()),
            &fx.tenant.supervisor,
        )
        .await;
    let roles: Vec<_> = call["legs"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| l["role"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(roles, ["phone", "external"], "{call}");
    assert!(call["legs"][1]["answered_at"].is_string(), "{call}");
}

#[tokio::test]
async fn the_api_blind_transfers_a_connected_call_to_a_number() {
    let (fx, trunk_port) = fixture_with_trunk().await;
    let agent_port = free_udp_port();
    assert!(fx.register("agent1", agent_port, AGENT_PASSWORD).await.0);
    fx.ready(&fx.tenant.agent).await;

    // Not on a call: nothing to transfer.
    let (s, v) = fx
        .app
        .post(
            "/v1/agent/transfer",
            &fx.tenant.agent,
            json!({"target": "+14155550123"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let remote_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let remote_rtp_port = remote_rtp.local_addr().expect("addr").port();
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, Duration::from_secs(8)));
    let remote_media = tokio::spawn(rtp_peer(remote_rtp, AGENT_TONE, Duration::from_secs(8)));
    let agent = fx.sipp(
        "agent_answer.xml",
        agent_port,
        vec![("rtp", free_udp_port().to_string())],
    );
    let carrier = fx.sipp(
        "trunk_answer.xml",
        trunk_port,
        vec![("rtp", remote_rtp_port.to_string())],
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
    let transfer = async {
        // The agent answers within a second; then a supervisor's tool moves the call. A
        // blocked number is refused first and the call stays with the agent.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let blocked = fx
            .app
            .post(
                &format!("/v1/agents/{}/transfer", fx.tenant.agent_id),
                &fx.tenant.supervisor,
                json!({"target": "+19005550123"}),
            )
            .await;
        let accepted = fx
            .app
            .post(
                "/v1/agent/transfer",
                &fx.tenant.agent,
                json!({"target": "+14155550123"}),
            )
            .await;
        (blocked, accepted)
    };
    let (
        (agent_ok, agent_out),
        (carrier_ok, carrier_out),
        (caller_ok, caller_out),
        ((blocked_status, blocked), (status, accepted)),
    ) = tokio::join!(agent, carrier, caller, transfer);
    assert_eq!(blocked_status, StatusCode::FORBIDDEN, "{blocked}");
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert!(
        agent_ok,
        "the agent's leg is hung up by the transfer: {agent_out}"
    );
    assert!(
        carrier_ok,
        "the number answers, then gets the caller's BYE: {carrier_out}"
    );
    assert!(caller_ok, "{caller_out}");
    let remote_heard = remote_media.await.expect("remote media");
    let caller_heard = caller_media.await.expect("caller media");
    assert_eq!(last_tone(&remote_heard.samples), Some(CALLER_TONE));
    assert_eq!(last_tone(&caller_heard.samples), Some(AGENT_TONE));
    let cdrs = fx.wait_cdrs(1).await;
    assert_eq!(cdrs[0]["call_id"], accepted["call_id"], "{}", cdrs[0]);
    let (_, call) = fx
        .app
        .get(
            &format!("/v1/calls/{}", cdrs[0]["id"].as_str().unwrap_or_default()),
            &fx.tenant.supervisor,
        )
        .await;
    let legs: Vec<_> = call["legs"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| {
                    (
                        l["role"].as_str().unwrap_or_default().to_owned(),
                        l["end_reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        legs,
        [
            ("caller".to_owned(), "normal_clearing".to_owned()),
            ("agent".to_owned(), "hangup".to_owned()),
            ("external".to_owned(), "hangup".to_owned()),
        ],
        "{call}"
    );
}

/// One bridged call: the caller sends `CALLER_TONE`, the agent `AGENT_TONE`, for `talk_ms`.
/// Returns the call id (the CDR's), once its CDR is written.
async fn tone_call(fx: &Fixture, agent_port: u16, talk_ms: u64, cdrs_before: usize) -> String {
    fx.ready(&fx.tenant.agent).await;
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let agent_rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let caller_rtp_port = caller_rtp.local_addr().expect("addr").port();
    let agent_rtp_port = agent_rtp.local_addr().expect("addr").port();
    let secs = Duration::from_millis(talk_ms + 4_000);
    let caller_media = tokio::spawn(rtp_peer(caller_rtp, CALLER_TONE, secs));
    let agent_media = tokio::spawn(rtp_peer(agent_rtp, AGENT_TONE, secs));
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
    let ((agent_ok, agent_out), (caller_ok, caller_out)) = tokio::join!(agent, caller);
    assert!(caller_ok, "caller scenario: {caller_out}");
    assert!(agent_ok, "agent scenario: {agent_out}");
    caller_media.abort();
    agent_media.abort();
    let cdrs = fx.wait_cdrs(cdrs_before + 1).await;
    let mut ids: Vec<String> = cdrs
        .iter()
        .map(|c| c["call_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let known = fx.known_calls.lock().expect("lock").clone();
    let id = ids
        .into_iter()
        .find(|i| !known.contains(i))
        .expect("a new CDR");
    fx.known_calls.lock().expect("lock").push(id.clone());
    id
}

/// Polls the recording's metadata until it is `stored` (or panics after `within`).
pub(crate) async fn wait_stored(fx: &Fixture, call_id: &str, within: Duration) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (s, v) = fx
            .app
            .get(&format!("/v1/recordings/{call_id}"), &fx.tenant.supervisor)
            .await;
        if s == StatusCode::OK && v["upload_state"] == "stored" {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "recording {call_id} not stored after {within:?}: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks a stored recording's bytes: a two-channel WAV whose left channel carries the
/// caller's tone and right the agent's, with the row's SHA-256 and size.
fn check_recording_bytes(bytes: &[u8], row: &Value) {
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(row["sha256"], json!(sha), "{row}");
    assert_eq!(row["size_bytes"], json!(bytes.len()), "{row}");
    let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 8_000));
    let samples: Vec<i16> = r.samples::<i16>().map_while(Result::ok).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert!(left.len() > 8_000, "{} frames", left.len());
    let mostly = |ch: &[i16], tone: f64| {
        let windows: Vec<Option<f64>> = ch
            .chunks_exact(4_000)
            .filter(|w| w.iter().any(|&x| x.unsigned_abs() > 1_000))
            .map(|w| dominant_tone(w, &TONES, 8_000))
            .collect();
        let hits = windows.iter().filter(|w| **w == Some(tone)).count();
        assert!(
            windows.len() >= 4 && hits * 10 >= windows.len() * 8,
            "{tone} Hz in {hits} of {} windows: {windows:?}",
            windows.len()
        );
    };
    mostly(&left, CALLER_TONE);
    mostly(&right, AGENT_TONE);
}

/// The tenant's events about `call_id` whose type starts with `prefix`, oldest first.
pub(crate) async fn call_events(fx: &Fixture, call_id: &str, prefix: &str) -> Vec<Value> {
    let (s, v) = fx
        .app
        .get("/v1/events?limit=1000", &fx.tenant.supervisor)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["call"] == json!(call_id))
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .collect()
}

/// The tenant's recording events, by type, for `call_id`.
pub(crate) async fn recording_events(fx: &Fixture, call_id: &str) -> Vec<String> {
    call_events(fx, call_id, "recording.")
        .await
        .into_iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_recorded_call_is_uploaded_to_s3_verified_and_announced() {
    let s3 = crate::s3_server::S3Server::start().await;
    let rec = s3.config();
    let spool = rec.spool_dir.clone().expect("spool");
    let fx = fixture_configured(|cfg| cfg.recordings = rec).await;
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "{out}");
    let call_id = tone_call(&fx, agent_port, 3_000, 0).await;
    let row = wait_stored(&fx, &call_id, Duration::from_secs(20)).await;

    // The object is in the bucket under the tenant's key, and is the call's recording.
    let key = format!("rec/{}/{call_id}.wav", fx.tenant.id);
    let bytes = s3.object(&key).expect("object in the bucket");
    check_recording_bytes(&bytes, &row);
    // Playback: a presigned URL for exactly those bytes.
    let (s, p) = fx
        .app
        .get(
            &format!("/v1/recordings/{call_id}/playback"),
            &fx.tenant.supervisor,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let url = p["url"].as_str().expect("url");
    assert!(
        url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=60"),
        "{url}"
    );
    let got = reqwest::get(url).await.expect("GET presigned");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.expect("body").as_ref(), bytes.as_slice());
    // Announced, once, and the spool copy is gone.
    assert_eq!(
        recording_events(&fx, &call_id).await,
        vec!["recording.completed"]
    );
    let spooled = spool
        .join(fx.tenant.id.to_string())
        .join(format!("{call_id}.wav"));
    assert!(!spooled.exists(), "{}", spooled.display());
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn recordings_made_while_s3_is_down_arrive_when_it_returns() {
    let mut s3 = crate::s3_server::S3Server::start().await;
    let rec = s3.config();
    let spool = rec.spool_dir.clone().expect("spool");
    let fx = fixture_configured(|cfg| cfg.recordings = rec).await;
    let agent_port = free_udp_port();
    let (ok, out) = fx.register("agent1", agent_port, AGENT_PASSWORD).await;
    assert!(ok, "{out}");

    s3.stop().await;
    let down = std::time::Instant::now();
    let first = tone_call(&fx, agent_port, 2_500, 0).await;
    // The agent wraps up (1 s) before the second call.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = tone_call(&fx, agent_port, 2_500, 1).await;
    let calls = [first, second];
    // While S3 is down: nothing stored, nothing announced, the spool holds every recording.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for call_id in &calls {
        let (s, v) = fx
            .app
            .get(&format!("/v1/recordings/{call_id}"), &fx.tenant.supervisor)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            v["upload_state"] == "uploading" || v["upload_state"] == "spooled",
            "{v}"
        );
        assert!(recording_events(&fx, call_id).await.is_empty());
        let spooled = spool
            .join(fx.tenant.id.to_string())
            .join(format!("{call_id}.wav"));
        assert!(spooled.exists(), "{}", spooled.display());
    }
    // S3 stays down for 30 s, then returns: every upload resumes and completes.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    s3.resume().await;
    for call_id in &calls {
        let row = wait_stored(&fx, call_id, Duration::from_secs(20)).await;
        let key = format!("rec/{}/{call_id}.wav", fx.tenant.id);
        check_recording_bytes(&s3.object(&key).expect("object"), &row);
        assert_eq!(
            recording_events(&fx, call_id).await,
            vec!["recording.completed"]
        );
    }
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn a_tenants_own_music_on_hold_comes_from_the_object_store() {
    let fx = fixture(10_000).await;
    // The tenant's hold music, put where the gateway's store keeps objects: 700 Hz.
    let tenant = fx.tenant.id.to_string();
    let dir = fx.store_dir(&["prompts", &tenant]);
    tone_wav(&dir, "hold.wav", 700.0);
    // Queued: a logged-in agent who is not ready.
    fx.log_in(&fx.tenant.agent).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = rtp.local_addr().expect("addr").port();
    let heard = tokio::spawn(rtp_peer(rtp, CALLER_TONE, Duration::from_secs(3)));
    let (ok, out) = fx
        .sipp(
            "caller_cancel.xml",
            free_udp_port(),
            vec![
                ("service", NUMBER.into()),
                ("rtp", port.to_string()),
                ("hold_ms", "1500".into()),
            ],
        )
        .await;
    assert!(ok, "{out}");
    let heard = heard.await.expect("media");
    assert!(
        heard.samples.len() > 2_000,
        "{} samples",
        heard.samples.len()
    );
    assert_eq!(
        dominant_tone(&heard.samples[..1_600], &[523.25, 659.25, 700.0], 8_000),
        Some(700.0),
        "the tenant's music, not the default chime"
    );
}

#[tokio::test]
async fn a_tenants_queue_announcements_come_from_the_object_store() {
    // No announcements directory configured: only the tenant's prompts in the store.
    let fx = fixture(10_000).await;
    let tenant = fx.tenant.id.to_string();
    let dir = fx.store_dir(&["prompts", &tenant, "announce"]);
    announcement_wavs(&dir);
    fx.log_in(&fx.tenant.agent).await; // logged in, not ready: the caller waits
    assert_announced_first_in_line(&fx).await;
}
