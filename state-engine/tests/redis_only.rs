//! Tests that only make sense against real Redis: repair of corrupted keys, many replicas
//! hammering one tenant, and re-assertion after `redis-server` restarts empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use switchboard_state::holder::wall_clock_ms;
use switchboard_state::*;

const T0: u64 = 1_000_000;

#[tokio::test]
async fn unreachable_redis_is_an_error() {
    let r = RedisEngine::connect("redis://127.0.0.1:1", "x:").await;
    assert!(matches!(r, Err(StateError::Backend(_))));
}

#[tokio::test]
async fn reconcile_repairs_stuck_agents_and_ghosts() {
    let env = redis_env().await;
    let r = env.redis.clone().unwrap();
    let t = &env.tenant;
    let e = &env.engine;
    let cfg = QueueConfig::new(q("q1"), Strategy::LongestIdle, vec![a("a1"), a("a2")]);
    e.run(t, T0, Command::ConfigureQueue { config: cfg })
        .await
        .unwrap();
    for ag in ["a1", "a2"] {
        e.run(
            t,
            T0,
            Command::Login {
                agent: a(ag),
                conn: ConnId::parse("k").unwrap(),
                skills: BTreeMap::new(),
            },
        )
        .await
        .unwrap();
        e.set_ready(t, T0, &a(ag)).await.unwrap();
    }
    e.enqueue(t, T0 + 1, CallEntry::new(c("c1"), q("q1"), node()))
        .await
        .unwrap();
    e.enqueue(t, T0 + 1, CallEntry::new(c("c2"), q("q1"), node()))
        .await
        .unwrap();
    let v2 = e.call(t, &c("c2"), T0 + 1).await.unwrap().unwrap();
    let holder2 = v2.agents[0].clone();
    e.run(
        t,
        T0 + 2,
        Command::Answer {
            call: c("c2"),
            agent: holder2.clone(),
        },
    )
    .await
    .unwrap();
    assert!(e.reconcile(t, T0 + 3).await.unwrap().is_empty());

    // Simulate a crash mid-way: c1's record vanished while its agent is still "reserved", and
    // c2's agent record lost its call (an "answered" ghost).
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let base = r.tenant_base(t);
    let _: () = redis::cmd("DEL")
        .arg(format!("{base}c:c1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{base}a:{holder2}"))
        .arg("st")
        .arg("not_ready")
        .arg("call")
        .arg("")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fixes = e.reconcile(t, T0 + 4).await.unwrap();
    let kinds: HashSet<&str> = fixes.iter().map(|f| f.kind.as_str()).collect();
    assert!(kinds.contains("stuck_reserved_agent"), "{fixes:?}");
    assert!(kinds.contains("dangling_call_index"), "{fixes:?}");
    assert!(kinds.contains("answered_ghost"), "{fixes:?}");
    assert!(e.call(t, &c("c2"), T0 + 4).await.unwrap().is_none());
    assert!(e.reconcile(t, T0 + 5).await.unwrap().is_empty());
    // the repaired agents can work again
    for ag in ["a1", "a2"] {
        let v = e.agent(t, &a(ag)).await.unwrap().unwrap();
        assert!(matches!(v.status, AgentStatus::NotReady), "{v:?}");
        e.set_ready(t, T0 + 6, &a(ag)).await.unwrap();
    }
    env.cleanup().await;
}

/// 8 tasks, each with its own connection (standing in for api replicas / gateways), hammer one
/// tenant for up to 10 s; then the event log must show no lost or duplicated call, no agent
/// holding two calls, and every call answered at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_keep_invariants() {
    let prefix = format!("sbtest:{}:", uuid::Uuid::new_v4().simple());
    let mut cfg = test_config();
    cfg.event_maxlen = 10_000_000;
    cfg.presence_ttl_ms = 3_600_000;
    let tenant = TenantId::parse(format!("t-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let setup = RedisEngine::connect_with(&redis_url(), &prefix, cfg.clone())
        .await
        .unwrap();
    let agents: Vec<AgentId> = (0..16).map(|i| a(&format!("a{i}"))).collect();
    let mut qc = QueueConfig::new(q("q1"), Strategy::LongestIdle, agents.clone());
    qc.ring_timeout_ms = 2_000;
    let now = wall_clock_ms();
    setup
        .run(&tenant, now, Command::ConfigureQueue { config: qc })
        .await
        .unwrap();
    for ag in &agents {
        setup
            .run(
                &tenant,
                now,
                Command::Login {
                    agent: ag.clone(),
                    conn: ConnId::parse("k").unwrap(),
                    skills: BTreeMap::new(),
                },
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let eng = RedisEngine::connect_with(&redis_url(), &prefix, cfg.clone())
            .await
            .unwrap();
        let tenant = tenant.clone();
        let agents = agents.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let mut enqueued = Vec::new();
            for i in 0..12_000u32 {
                if Instant::now() > deadline {
                    break;
                }
                let now = wall_clock_ms();
                let ag = agents[rng.random_range(0..agents.len())].clone();
                match rng.random_range(0..10) {
                    0..=2 => {
                        let call = c(&format!("w{w}-{i}"));
                        let r = eng
                            .enqueue(&tenant, now, CallEntry::new(call.clone(), q("q1"), node()))
                            .await;
                        if r.is_ok() {
                            enqueued.push(call);
                        }
                    }
                    3 | 4 => {
                        let _ = eng.set_ready(&tenant, now, &ag).await;
                    }
                    5 => {
                        let reason = ReasonCode::parse("break").unwrap();
                        let _ = eng
                            .run(&tenant, now, Command::SetNotReady { agent: ag, reason })
                            .await;
                    }
                    6 | 7 => {
                        if let Ok(Some(v)) = eng.agent(&tenant, &ag).await
                            && let Some(call) = v.call
                        {
                            let cmd = match v.status {
                                AgentStatus::Reserved => Command::Answer { call, agent: ag },
                                AgentStatus::OnCall => Command::Hangup { call },
                                _ => continue,
                            };
                            let _ = eng.run(&tenant, now, cmd).await;
                        }
                    }
                    8 => {
                        if let Some(call) = enqueued.get(rng.random_range(0..enqueued.len().max(1)))
                        {
                            let _ = eng
                                .run(&tenant, now, Command::Hangup { call: call.clone() })
                                .await;
                        }
                    }
                    _ => {
                        let _ = eng.tick(&tenant, now).await;
                    }
                }
            }
            enqueued
        }));
    }
    let mut enqueued = Vec::new();
    for t in tasks {
        enqueued.extend(t.await.unwrap());
    }
    assert!(enqueued.len() > 200, "too little load: {}", enqueued.len());

    // read the whole log
    let mut log = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = setup
            .events_since(&tenant, after.as_deref(), 10_000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id.clone());
        log.extend(page);
    }
    let mut ended: HashMap<CallId, u32> = HashMap::new();
    let mut answered: HashMap<CallId, u32> = HashMap::new();
    let mut agent_state: HashMap<AgentId, (AgentStatus, Option<CallId>)> = HashMap::new();
    let mut matches = 0;
    // offers outstanding per call: a (longest-idle) call rings at most one agent at a time
    let mut ringing: HashMap<CallId, i32> = HashMap::new();
    for e in &log {
        match &e.kind {
            EventKind::CallEnded { call, .. } => {
                *ended.entry(call.clone()).or_default() += 1;
                ringing.remove(call);
            }
            EventKind::CallAnswered { call, .. } => {
                *answered.entry(call.clone()).or_default() += 1;
                let r = ringing.remove(call).unwrap_or(0);
                assert_eq!(r, 1, "{call} answered while ringing {r} agents");
            }
            EventKind::CallOffered { call, .. } => {
                matches += 1;
                let r = ringing.entry(call.clone()).or_default();
                *r += 1;
                assert_eq!(*r, 1, "{call} offered to two agents at once at {}", e.id);
            }
            EventKind::OfferReleased { call, .. } => {
                let r = ringing.entry(call.clone()).or_default();
                *r -= 1;
                assert!(*r >= 0, "{call} released more offers than made");
            }
            EventKind::AgentState {
                agent,
                from,
                to,
                call,
                ..
            } => {
                let prev = agent_state
                    .get(agent)
                    .map_or(AgentStatus::LoggedOut, |s| s.0);
                assert_eq!(prev, *from, "broken state chain for {agent} at {}", e.id);
                if *to == AgentStatus::Reserved {
                    assert_eq!(*from, AgentStatus::Ready, "{agent} reserved while {from}");
                }
                agent_state.insert(agent.clone(), (*to, call.clone()));
            }
            _ => {}
        }
    }
    assert!(matches > 50, "too few matches: {matches}");
    for (call, n) in &answered {
        assert_eq!(*n, 1, "call {call} answered {n} times");
    }
    let enq_set: HashSet<&CallId> = enqueued.iter().collect();
    assert_eq!(enq_set.len(), enqueued.len(), "duplicate enqueue accepted");
    let now = wall_clock_ms();
    for call in &enqueued {
        let n = ended.get(call).copied().unwrap_or(0);
        let alive = setup.call(&tenant, call, now).await.unwrap();
        assert!(n <= 1, "call {call} ended {n} times");
        assert!(
            (n == 1) ^ alive.is_some(),
            "call {call} lost or duplicated: ended {n}, alive {alive:?}"
        );
    }
    // no agent holds two calls: every busy agent's call points back at it, and no two agents
    // share one
    let mut held: HashMap<CallId, AgentId> = HashMap::new();
    for ag in &agents {
        let v = setup.agent(&tenant, ag).await.unwrap().unwrap();
        if matches!(v.status, AgentStatus::Reserved | AgentStatus::OnCall) {
            let call = v.call.clone().unwrap();
            assert!(
                held.insert(call.clone(), ag.clone()).is_none(),
                "{call} held twice"
            );
            let cv = setup.call(&tenant, &call, now).await.unwrap().unwrap();
            assert_eq!(cv.agents, vec![ag.clone()]);
        }
        let last = agent_state
            .get(ag)
            .map(|s| s.0)
            .unwrap_or(AgentStatus::LoggedOut);
        assert_eq!(last, v.status, "event log disagrees with state for {ag}");
    }
    assert!(setup.reconcile(&tenant, now).await.unwrap().is_empty());
    println!(
        "concurrency: {} calls enqueued, {} offers, {} answered, {} events",
        enqueued.len(),
        matches,
        answered.len(),
        log.len()
    );
    setup.purge_tenant(&tenant).await.unwrap();
}

struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(port: u16) -> RedisServer {
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server binary");
    RedisServer(child)
}

async fn wait_up(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server on {port} did not come up");
}

/// Starts its own redis-server, kills it, restarts it empty, and checks that the holder puts
/// back the waiting calls and the present agents within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasserts_after_redis_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = start_redis(port);
    wait_up(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let engine = RedisEngine::connect(&url, "sbrestart:").await.unwrap();
    let dyn_engine: Arc<dyn StateEngine> = Arc::new(engine.clone());
    let tenant = TenantId::parse("acme").unwrap();
    let holder = Arc::new(Holder::new(dyn_engine.clone()));
    holder.hold_queue(
        &tenant,
        QueueConfig::new(q("q1"), Strategy::LongestIdle, vec![a("a1"), a("a2")]),
    );
    for ag in ["a1", "a2"] {
        holder.hold_agent(
            &tenant,
            a(ag),
            ConnId::parse(format!("ws-{ag}")).unwrap(),
            BTreeMap::new(),
        );
    }
    let start = wall_clock_ms();
    for (i, call) in ["c1", "c2", "c3"].iter().enumerate() {
        let mut e = CallEntry::new(c(call), q("q1"), node());
        e.enqueued_at_ms = Some(start + i as u64);
        holder.hold_call(&tenant, e);
    }
    assert_eq!(
        holder.check(wall_clock_ms()).await.unwrap(),
        vec![tenant.clone()]
    );
    let s = dyn_engine
        .queue_stats(&tenant, &q("q1"), wall_clock_ms())
        .await
        .unwrap();
    assert_eq!((s.waiting, s.agents.not_ready), (3, 2));
    assert!(
        holder.check(wall_clock_ms()).await.unwrap().is_empty(),
        "no change, no replay"
    );
    let _watcher = holder
        .clone()
        .spawn_watcher(Duration::from_millis(500), wall_clock_ms);

    // kill and restart empty
    let _ = server.0.kill();
    let _ = server.0.wait();
    server = start_redis(port);
    wait_up(port).await;
    let restarted = Instant::now();
    loop {
        if let Ok(s) = dyn_engine
            .queue_stats(&tenant, &q("q1"), wall_clock_ms())
            .await
            && s.waiting == 3
            && s.agents.not_ready == 2
        {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "not re-asserted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = restarted.elapsed();
    println!("re-asserted {took:?} after restart");
    // original places are kept
    let v = dyn_engine
        .call(&tenant, &c("c1"), wall_clock_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v.position, v.enqueued_at_ms), (Some(1), start));
    drop(server);
}
