//! ACD benchmark (run by `scripts/bench acd`): matches per second and time-to-route for both
//! engines at 1, 100 and 10,000 waiting calls with 1,000 agents in one tenant, and for 1,000
//! tenants at once; the bare 5-command Lua script under redis-benchmark as a yardstick; and
//! the ETA error measured in a simulation.
//!
//! A "match" is an agent becoming ready and being reserved a waiting call. Each round first
//! prepares, untimed, a batch of agents (answer + hang up their previous call, which leaves
//! them in wrap-up, and enqueue as many new calls so the line stays at its size), then times
//! the batch of `SetReady` commands that produce the matches. Time-to-route of a match is the
//! latency of the engine call that carried its `SetReady`. The full call cycle rate (enqueue,
//! match, answer, hang up, all timed) is printed too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use switchboard_state::core::Core;
use switchboard_state::*;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Row {
    engine: &'static str,
    scenario: String,
    matches_per_s: f64,
    cycles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    matches: u64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn id<T>(f: fn(String) -> Result<T, StateError>, s: String) -> T {
    f(s).expect("valid id")
}

/// One tenant's bench fixture: agents, the call each one holds, a call counter.
struct Fixture {
    tenant: TenantId,
    queue: QueueId,
    agents: Vec<AgentId>,
    held: HashMap<AgentId, CallId>,
    next_call: u64,
}

impl Fixture {
    async fn setup(
        engine: &dyn StateEngine,
        tenant: &str,
        n_agents: usize,
        waiting: usize,
    ) -> Res<Self> {
        let tenant = id(TenantId::parse, tenant.to_string());
        let queue = id(QueueId::parse, "q1".to_string());
        let agents: Vec<AgentId> = (0..n_agents)
            .map(|i| id(AgentId::parse, format!("a{i}")))
            .collect();
        let mut cfg = QueueConfig::new(queue.clone(), Strategy::LongestIdle, agents.clone());
        cfg.wrap_up_ms = 3_600_000;
        cfg.ring_timeout_ms = 3_600_000;
        let mut f = Self {
            tenant,
            queue,
            agents,
            held: HashMap::new(),
            next_call: 0,
        };
        let mut cmds = vec![Command::ConfigureQueue { config: cfg }];
        for a in &f.agents {
            cmds.push(Command::Login {
                agent: a.clone(),
                conn: id(ConnId::parse, format!("ws-{a}")),
                skills: BTreeMap::new(),
            });
        }
        for _ in 0..waiting {
            cmds.push(f.new_call());
        }
        for chunk in cmds.chunks(500) {
            for r in engine.exec(&f.tenant, 1, chunk.to_vec()).await? {
                r?;
            }
        }
        Ok(f)
    }

    fn new_call(&mut self) -> Command {
        self.next_call += 1;
        Command::Enqueue {
            entry: CallEntry::new(
                id(CallId::parse, format!("c{}", self.next_call)),
                self.queue.clone(),
                id(NodeId::parse, "gw1".to_string()),
            ),
        }
    }

    /// Untimed: free the agents of their previous call (into wrap-up) and top the line up.
    fn prep(&mut self, agents: &[AgentId]) -> Vec<Command> {
        let mut cmds = Vec::new();
        for a in agents {
            if let Some(call) = self.held.remove(a) {
                cmds.push(Command::Answer {
                    call: call.clone(),
                    agent: a.clone(),
                });
                cmds.push(Command::Hangup { call });
            }
            cmds.push(self.new_call());
        }
        cmds
    }

    fn record(&mut self, results: Vec<CommandResult>) -> u64 {
        let mut n = 0;
        for r in results {
            for e in r.unwrap_or_default() {
                if let EventKind::CallOffered { call, agent, .. } = e.kind {
                    self.held.insert(agent, call);
                    n += 1;
                }
            }
        }
        n
    }
}

async fn exec_all(
    engine: &dyn StateEngine,
    tenant: &TenantId,
    now: u64,
    cmds: Vec<Command>,
) -> Res<(Vec<CommandResult>, f64)> {
    let t = Instant::now();
    let r = engine.exec(tenant, now, cmds).await?;
    Ok((r, t.elapsed().as_secs_f64() * 1e3))
}

/// One tenant, `n_agents` agents, about `waiting` calls in line; `parallel` batches of `batch`
/// agents in flight at once.
async fn single_tenant(
    engine: Arc<dyn StateEngine>,
    label: &'static str,
    waiting: usize,
    batch: usize,
    parallel: usize,
    dur: Duration,
) -> Res<Row> {
    let tenant = format!("bench-w{waiting}");
    let mut f = Fixture::setup(engine.as_ref(), &tenant, 1000, waiting).await?;
    let mut lat = Vec::new();
    let (mut matched, mut timed, mut total) = (0u64, 0.0f64, 0.0f64);
    let mut now = 10u64;
    let mut cursor = 0usize;
    while timed < dur.as_secs_f64() {
        now += 1;
        let groups: Vec<Vec<AgentId>> = (0..parallel)
            .map(|_| {
                let g: Vec<AgentId> = (0..batch)
                    .map(|i| f.agents[(cursor + i) % f.agents.len()].clone())
                    .collect();
                cursor += batch;
                g
            })
            .collect();
        let preps: Vec<Vec<Command>> = groups.iter().map(|g| f.prep(g)).collect();
        let t_all = Instant::now();
        let tenant_id = f.tenant.clone();
        let e = engine.clone();
        let res = futures::future::join_all(
            preps
                .into_iter()
                .map(|cmds| exec_all(e.as_ref(), &tenant_id, now, cmds)),
        )
        .await;
        for r in res {
            for x in r?.0 {
                x?;
            }
        }
        let t = Instant::now();
        let res = futures::future::join_all(groups.iter().map(|g| {
            let cmds = g
                .iter()
                .map(|a| Command::SetReady { agent: a.clone() })
                .collect();
            exec_all(e.as_ref(), &tenant_id, now, cmds)
        }))
        .await;
        timed += t.elapsed().as_secs_f64();
        total += t_all.elapsed().as_secs_f64();
        for r in res {
            let (results, ms) = r?;
            let n = f.record(results);
            matched += n;
            lat.extend(std::iter::repeat_n(ms, n as usize));
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(Row {
        engine: label,
        scenario: format!("1 tenant, 1000 agents, {waiting} waiting"),
        matches_per_s: matched as f64 / timed,
        cycles_per_s: matched as f64 / total,
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        matches: matched,
    })
}

/// `tenants` tenants with 10 agents and 10 waiting calls each; one batch per tenant.
async fn many_tenants(
    engine: Arc<dyn StateEngine>,
    label: &'static str,
    tenants: usize,
    parallel: usize,
    dur: Duration,
) -> Res<(Row, Vec<TenantId>)> {
    let mut fx = Vec::with_capacity(tenants);
    for i in 0..tenants {
        fx.push(Fixture::setup(engine.as_ref(), &format!("bench-mt{i}"), 10, 10).await?);
    }
    let ids: Vec<TenantId> = fx.iter().map(|f| f.tenant.clone()).collect();
    let mut lat = Vec::new();
    let (mut matched, mut timed, mut total) = (0u64, 0.0f64, 0.0f64);
    let mut now = 10u64;
    let mut cursor = 0usize;
    let group = 64usize;
    while timed < dur.as_secs_f64() {
        now += 1;
        let idx: Vec<usize> = (0..group).map(|i| (cursor + i) % tenants).collect();
        cursor += group;
        let t_all = Instant::now();
        let mut preps = Vec::new();
        for &i in &idx {
            let agents = fx[i].agents.clone();
            preps.push((fx[i].tenant.clone(), fx[i].prep(&agents)));
        }
        let e = engine.clone();
        let res: Vec<_> = stream::iter(preps)
            .map(|(t, cmds)| {
                let e = e.clone();
                async move { exec_all(e.as_ref(), &t, now, cmds).await }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        for r in res {
            for x in r?.0 {
                x?;
            }
        }
        let t = Instant::now();
        let jobs: Vec<(usize, TenantId, Vec<Command>)> = idx
            .iter()
            .map(|&i| {
                let cmds = fx[i]
                    .agents
                    .iter()
                    .map(|a| Command::SetReady { agent: a.clone() })
                    .collect();
                (i, fx[i].tenant.clone(), cmds)
            })
            .collect();
        let res: Vec<_> = stream::iter(jobs)
            .map(|(i, t, cmds)| {
                let e = e.clone();
                async move { (i, exec_all(e.as_ref(), &t, now, cmds).await) }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        timed += t.elapsed().as_secs_f64();
        total += t_all.elapsed().as_secs_f64();
        for (i, r) in res {
            let (results, ms) = r?;
            let n = fx[i].record(results);
            matched += n;
            lat.extend(std::iter::repeat_n(ms, n as usize));
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((
        Row {
            engine: label,
            scenario: format!("{tenants} tenants x 10 agents, 10 waiting each"),
            matches_per_s: matched as f64 / timed,
            cycles_per_s: matched as f64 / total,
            p50_ms: pct(&lat, 0.5),
            p99_ms: pct(&lat, 0.99),
            matches: matched,
        },
        ids,
    ))
}

/// The bare 5-command Lua "match" script driven by redis-benchmark with `clients` connections.
fn bare_lua(url: &str, prefix: &str, clients: u32, requests: u32) -> Res<f64> {
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    let script = "redis.call('ZADD',KEYS[1],1,'c1') redis.call('ZPOPMIN',KEYS[1]) \
                  redis.call('HSET',KEYS[2],'st','reserved','call','c1') \
                  redis.call('HSET',KEYS[3],'st','reserved','agent','a1') \
                  redis.call('XADD',KEYS[4],'MAXLEN','~',1000,'*','e','offered') return 1";
    let keys: Vec<String> = ["w", "a", "c", "e"]
        .iter()
        .map(|k| format!("{prefix}{{t:bare}}:{k}"))
        .collect();
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-q"])
        .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
        .args(["EVAL", script, "4"])
        .args(&keys)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("cannot parse redis-benchmark output: {text:?}"))?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    redis::cmd("DEL").arg(&keys).query::<()>(&mut conn)?;
    Ok(rps)
}

/// Simulated queue (M/M/n at 90 % load, 10 agents, mean handle time 180 s): ETA announced at
/// enqueue vs the wait that followed. Returns (mean absolute error s, mean bias s, mean wait s,
/// calls measured).
fn eta_simulation() -> (f64, f64, f64, usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut exp = |mean: f64| -> u64 { (-(1.0 - rng.random::<f64>()).ln() * mean) as u64 };
    let cfg = EngineConfig {
        presence_ttl_ms: u64::MAX / 4,
        node_ttl_ms: u64::MAX / 4,
        ..EngineConfig::default()
    };
    let mut core = Core::new(cfg, 1);
    let t = id(TenantId::parse, "sim".to_string());
    let q = id(QueueId::parse, "q".to_string());
    let n = 10;
    let aht = 180_000.0;
    let agents: Vec<AgentId> = (0..n)
        .map(|i| id(AgentId::parse, format!("a{i}")))
        .collect();
    let mut qc = QueueConfig::new(q.clone(), Strategy::LongestIdle, agents.clone());
    qc.default_aht_ms = aht as u64;
    qc.ring_timeout_ms = u64::MAX / 8;
    let _ = core.apply(&t, 0, &Command::ConfigureQueue { config: qc });
    for a in &agents {
        let _ = core.apply(
            &t,
            0,
            &Command::Login {
                agent: a.clone(),
                conn: id(ConnId::parse, "k".to_string()),
                skills: BTreeMap::new(),
            },
        );
        let _ = core.apply(&t, 0, &Command::SetReady { agent: a.clone() });
    }
    // (time, kind, call): kind 0 = arrival, 1 = hangup
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, u8, u64)>> = BinaryHeap::new();
    let arrival_mean = aht / (0.9 * n as f64);
    heap.push(std::cmp::Reverse((exp(arrival_mean), 0, 1)));
    let mut eta: HashMap<u64, u64> = HashMap::new();
    let (mut abs, mut bias, mut waits, mut count) = (0.0, 0.0, 0.0, 0usize);
    let total_calls = 30_000u64;
    let warmup = 2_000u64;
    while let Some(std::cmp::Reverse((now, kind, call))) = heap.pop() {
        let cid = id(CallId::parse, format!("c{call}"));
        let events = if kind == 0 {
            if call < total_calls {
                heap.push(std::cmp::Reverse((now + exp(arrival_mean), 0, call + 1)));
            }
            core.apply(
                &t,
                now,
                &Command::Enqueue {
                    entry: CallEntry::new(cid, q.clone(), id(NodeId::parse, "n".to_string())),
                },
            )
        } else {
            core.apply(&t, now, &Command::Hangup { call: cid })
        };
        let mut pending = events.unwrap_or_default();
        while !pending.is_empty() {
            let mut next = Vec::new();
            for e in pending {
                match e.kind {
                    EventKind::CallQueued { call, eta_ms, .. } => {
                        let k: u64 = call.as_str()[1..].parse().unwrap_or(0);
                        eta.entry(k).or_insert(eta_ms);
                    }
                    EventKind::CallOffered { call, agent, .. } => {
                        next.extend(
                            core.apply(&t, now, &Command::Answer { call, agent })
                                .unwrap_or_default(),
                        );
                    }
                    EventKind::CallAnswered { call, wait_ms, .. } => {
                        let k: u64 = call.as_str()[1..].parse().unwrap_or(0);
                        heap.push(std::cmp::Reverse((now + exp(aht), 1, k)));
                        if k > warmup
                            && let Some(e) = eta.get(&k)
                        {
                            let err = (*e as f64 - wait_ms as f64) / 1000.0;
                            abs += err.abs();
                            bias += err;
                            waits += wait_ms as f64 / 1000.0;
                            count += 1;
                        }
                    }
                    _ => {}
                }
            }
            pending = next;
        }
    }
    let c = count.max(1) as f64;
    (abs / c, bias / c, waits / c, count)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn run() -> Res<()> {
    let url = std::env::var("SWITCHBOARD_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("SWITCHBOARD_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let secs: f64 = std::env::var("ACD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dur = Duration::from_secs_f64(secs);
    let prefix = format!("sbbench:{:08x}:", rand::random::<u32>());
    let cfg = EngineConfig {
        presence_ttl_ms: u64::MAX / 4,
        node_ttl_ms: u64::MAX / 4,
        event_maxlen: 10_000,
        ..EngineConfig::default()
    };
    eprintln!("bench: redis {url}, key prefix {prefix}, {secs} s timed per scenario");
    let load_before = loadavg();

    let bare = bare_lua(&url, &prefix, 50, 60_000)?;
    let bare_c1 = bare_lua(&url, &prefix, 1, 20_000)?;
    eprintln!("bare 5-command Lua via redis-benchmark: {bare:.0}/s (-c 50), {bare_c1:.0}/s (-c 1)");

    let env_usize = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let redis_batch = env_usize("ACD_BENCH_REDIS_BATCH", 8);
    let redis_parallel = env_usize("ACD_BENCH_REDIS_PARALLEL", 2);
    let mem_batch = env_usize("ACD_BENCH_MEMORY_BATCH", 64);

    // ACD_BENCH_ONLY=redis skips the memory engine (for tuning runs; the RESULT line then
    // reports memory_matches_per_s=0)
    let only_redis = std::env::var("ACD_BENCH_ONLY").is_ok_and(|v| v == "redis");
    let mut rows = Vec::new();
    if !only_redis {
        let mem: Arc<dyn StateEngine> = Arc::new(MemoryEngine::new(cfg.clone()));
        for w in [1, 100, 10_000] {
            rows.push(single_tenant(mem.clone(), "memory", w, mem_batch, 1, dur).await?);
        }
        rows.push(many_tenants(mem.clone(), "memory", 1000, 1, dur).await?.0);
    }

    let redis = RedisEngine::connect_with(&url, &prefix, cfg.clone()).await?;
    let red: Arc<dyn StateEngine> = Arc::new(redis.clone());
    let mut redis_rows = Vec::new();
    for w in [1, 100, 10_000] {
        let row = single_tenant(red.clone(), "redis", w, redis_batch, redis_parallel, dur).await?;
        redis
            .purge_tenant(&id(TenantId::parse, format!("bench-w{w}")))
            .await?;
        redis_rows.push(row);
    }
    let (row, ids) = many_tenants(red.clone(), "redis", 1000, redis_parallel, dur).await?;
    for t in &ids {
        redis.purge_tenant(t).await?;
    }
    redis_rows.push(row);

    let (mae, bias, mean_wait, n) = eta_simulation();

    println!();
    println!(
        "{:<8} {:<44} {:>12} {:>12} {:>9} {:>9} {:>9}",
        "engine", "scenario", "matches/s", "cycles/s", "p50 ms", "p99 ms", "matches"
    );
    for r in rows.iter().chain(redis_rows.iter()) {
        println!(
            "{:<8} {:<44} {:>12.0} {:>12.0} {:>9.3} {:>9.3} {:>9}",
            r.engine, r.scenario, r.matches_per_s, r.cycles_per_s, r.p50_ms, r.p99_ms, r.matches
        );
    }
    let worst = |rs: &[Row], f: fn(&Row) -> f64, max: bool| {
        rs.iter()
            .map(f)
            .fold(if max { 0.0 } else { f64::MAX }, |a, b| {
                if max { a.max(b) } else { a.min(b) }
            })
    };
    let redis_mps = worst(&redis_rows, |r| r.matches_per_s, false);
    let redis_p99 = worst(&redis_rows, |r| r.p99_ms, true);
    let mem_mps = if rows.is_empty() {
        0.0
    } else {
        worst(&rows, |r| r.matches_per_s, false)
    };
    println!();
    println!(
        "host load average (1 min) before/after: {load_before} / {} on {} cores; other \
         processes competing for the CPU inflate p99 and cut throughput",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "bare 5-command Lua script via redis-benchmark: {bare:.0}/s with 50 clients (-c 50), \
         {bare_c1:.0}/s with one client (-c 1, one round trip per script)"
    );
    println!(
        "redis engine, slowest scenario: {redis_mps:.0} matches/s = {:.2}x the bare script at -c 50, \
         {:.2}x at -c 1",
        redis_mps / bare,
        redis_mps / bare_c1
    );
    println!(
        "ETA simulation (M/M/10, 90% load, AHT 180 s, {n} calls): MAE {mae:.1} s, bias {bias:+.1} s, mean wait {mean_wait:.1} s"
    );
    println!(
        "RESULT acd redis_matches_per_s={:.0} redis_p99_ms={:.3} memory_matches_per_s={:.0} ratio_bare_lua={:.2} ratio_bare_lua_c1={:.2} eta_mae_s={:.1} eta_mean_wait_s={:.1}",
        redis_mps,
        redis_p99,
        mem_mps,
        redis_mps / bare,
        redis_mps / bare_c1,
        mae,
        mean_wait
    );
    Ok(())
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
