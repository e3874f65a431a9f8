//! Differential test: random command sequences (skills, tiers, two queues with overflow,
//! wrap-up, leases, presence, joins and leaves, timer ticks) applied to the in-memory engine and
//! to the Redis engine side by side; after every command both must agree on acceptance, on the
//! events it caused (as a multiset), and on every agent's and call's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_state::*;

const AGENTS: usize = 5;

fn queues(strategy: Strategy) -> Vec<QueueConfig> {
    let mut q1 = QueueConfig::new(q("q1"), strategy, vec![a("a0"), a("a1"), a("a2")]);
    q1.members[2].tier = 1;
    q1.tier_wait_ms = 10_000;
    q1.wrap_up_ms = 5_000;
    q1.ring_timeout_ms = 8_000;
    q1.overflow = Some(OverflowRule {
        target: OverflowTarget::Queue { queue: q("q2") },
        after_ms: Some(30_000),
        when_no_agents: false,
        when_full: false,
    });
    q1.max_len = 6;
    q1.rank_skill = Some("fr".into());
    q1.sticky_ms = 15_000;
    let mut q2 = QueueConfig::new(q("q2"), Strategy::FewestCalls, vec![a("a3"), a("a4")]);
    q2.ring_timeout_ms = 6_000;
    q2.max_wait_ms = Some(120_000);
    q2.rank_skill = Some("fr".into());
    q2.overflow = Some(OverflowRule {
        target: OverflowTarget::Callback,
        after_ms: Some(60_000),
        when_no_agents: false,
        when_full: false,
    });
    vec![q1, q2]
}

/// `held[i]`: the call agent i is offered / talking on, so answers, rejects and hangups usually
/// hit something real.
fn random_cmd(
    rng: &mut StdRng,
    next_call: &mut usize,
    now: &mut u64,
    held: &[Option<CallId>],
) -> Command {
    let i = rng.random_range(0..AGENTS);
    let ag = a(&format!("a{i}"));
    let call = match &held[i] {
        Some(call) if rng.random_bool(0.8) => call.clone(),
        _ => c(&format!("c{:03}", rng.random_range(0..(*next_call).max(1)))),
    };
    match rng.random_range(0..25) {
        0 | 1 => {
            let mut skills = BTreeMap::new();
            if rng.random_bool(0.5) {
                skills.insert("fr".to_string(), rng.random_range(1..4));
            }
            Command::Login {
                agent: ag,
                conn: ConnId::parse("k").unwrap(),
                skills,
            }
        }
        2..=5 => Command::SetReady { agent: ag },
        6 => Command::SetNotReady {
            agent: ag,
            reason: ReasonCode::parse("break").unwrap(),
        },
        7 => Command::Logout { agent: ag },
        8..=10 => Command::Heartbeat {
            agent: ag,
            conn: ConnId::parse("k").unwrap(),
        },
        11 | 12 => {
            let mut e = CallEntry::new(
                c(&format!("c{:03}", *next_call)),
                q(if rng.random_bool(0.7) { "q1" } else { "q2" }),
                node(),
            );
            *next_call += 1;
            e.priority = rng.random_range(0..3);
            if rng.random_bool(0.3) {
                e.skills.insert("fr".to_string(), rng.random_range(1..4));
            }
            if rng.random_bool(0.3) {
                e.preferred_agent = Some(a(&format!("a{}", rng.random_range(0..AGENTS))));
            }
            Command::Enqueue { entry: e }
        }
        13..=15 => Command::Answer { call, agent: ag },
        16 => Command::Reject { call, agent: ag },
        17 | 18 => Command::Hangup { call },
        19 => Command::ExtendWrapUp {
            agent: ag,
            extra_ms: 2_000,
        },
        20 => Command::JoinQueue {
            agent: ag,
            queue: q("q2"),
            tier: rng.random_range(0..2),
        },
        21 => Command::LeaveQueue {
            agent: ag,
            queue: q("q2"),
        },
        _ => {
            *now += rng.random_range(0..8_000);
            Command::Tick
        }
    }
}

fn event_multiset(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.kind).unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn memory_and_redis_agree() {
    let seed = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    // every deterministic strategy (random cannot be compared draw for draw)
    for (i, strategy) in [
        Strategy::LongestIdle,
        Strategy::RoundRobin,
        Strategy::RingAll,
        Strategy::FewestCalls,
        Strategy::LeastTalkTime,
        Strategy::Linear,
        Strategy::HighestSkill,
    ]
    .into_iter()
    .enumerate()
    {
        run_one(strategy, seed + i as u64).await;
    }
}

async fn run_one(strategy: Strategy, seed: u64) {
    let mem = memory_env().await;
    let red = redis_env().await;
    let t = red.tenant.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = 1_000_000u64;
    for cfg in queues(strategy) {
        for e in [&mem, &red] {
            e.engine
                .run(
                    &t,
                    now,
                    Command::ConfigureQueue {
                        config: cfg.clone(),
                    },
                )
                .await
                .unwrap();
        }
    }
    let mut next_call = 0usize;
    for step in 0..800 {
        now += rng.random_range(0..500);
        let mut held = Vec::with_capacity(AGENTS);
        for i in 0..AGENTS {
            let v = mem.engine.agent(&t, &a(&format!("a{i}"))).await.unwrap();
            held.push(v.and_then(|v| v.call));
        }
        let cmd = random_cmd(&mut rng, &mut next_call, &mut now, &held);
        let m = mem.engine.run(&t, now, cmd.clone()).await;
        let r = red.engine.run(&t, now, cmd.clone()).await;
        match (&m, &r) {
            (Ok(me), Ok(re)) => assert_eq!(
                event_multiset(me),
                event_multiset(re),
                "{strategy:?} step {step}: {cmd:?} events differ"
            ),
            (Err(me), Err(re)) => assert_eq!(me, re, "{strategy:?} step {step}: {cmd:?}"),
            _ => panic!("{strategy:?} step {step}: {cmd:?}: memory {m:?} vs redis {r:?}"),
        }
        for i in 0..AGENTS {
            let ag = a(&format!("a{i}"));
            let mv = mem.engine.agent(&t, &ag).await.unwrap();
            let rv = red.engine.agent(&t, &ag).await.unwrap();
            assert_eq!(mv, rv, "{strategy:?} step {step}: {cmd:?}: agent {ag}");
        }
        // every call every 10 steps, the newest 20 every step
        let from = if step % 10 == 0 {
            0
        } else {
            next_call.saturating_sub(20)
        };
        for i in from..next_call {
            let call = c(&format!("c{i:03}"));
            let mv = mem.engine.call(&t, &call, now).await.unwrap();
            let rv = red.engine.call(&t, &call, now).await.unwrap();
            assert_eq!(mv, rv, "{strategy:?} step {step}: {cmd:?}: call {call}");
        }
    }
    for queue in ["q1", "q2"] {
        let ms = mem.engine.queue_stats(&t, &q(queue), now).await.unwrap();
        let rs = red.engine.queue_stats(&t, &q(queue), now).await.unwrap();
        assert_eq!(ms, rs, "stats {queue}");
    }
    assert!(red.engine.reconcile(&t, now).await.unwrap().is_empty());
    assert!(mem.engine.reconcile(&t, now).await.unwrap().is_empty());
    red.cleanup().await;
}
