//! One conformance suite, written once, run against both engines in simulated time: every case
//! is a generic async fn over an `Env`, instantiated for the in-memory and the Redis engine by
//! the `conformance!` macro at the bottom.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use switchboard_state::*;

const T0: u64 = 1_000_000;

struct T<'a>(&'a Env);

impl T<'_> {
    async fn run(&self, now: u64, cmd: Command) -> Result<Vec<Event>, StateError> {
        self.0.engine.run(&self.0.tenant, now, cmd).await
    }
    async fn ok(&self, now: u64, cmd: Command) -> Vec<Event> {
        let dbg = format!("{cmd:?}");
        self.run(now, cmd)
            .await
            .unwrap_or_else(|e| panic!("{dbg} failed: {e}"))
    }
    async fn queue(&self, cfg: QueueConfig) {
        self.ok(T0, Command::ConfigureQueue { config: cfg }).await;
    }
    async fn login_skills(&self, now: u64, agent: &str, skills: &[(&str, u32)]) {
        let skills: BTreeMap<String, u32> =
            skills.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        self.ok(
            now,
            Command::Login {
                agent: a(agent),
                conn: ConnId::parse(format!("conn-{agent}")).unwrap(),
                skills,
            },
        )
        .await;
    }
    async fn login(&self, now: u64, agent: &str) {
        self.login_skills(now, agent, &[]).await;
    }
    async fn ready(&self, now: u64, agent: &str) -> Vec<Event> {
        self.ok(now, Command::SetReady { agent: a(agent) }).await
    }
    async fn login_ready(&self, now: u64, agent: &str) {
        self.login(now, agent).await;
        self.ready(now, agent).await;
    }
    async fn enqueue_entry(&self, now: u64, entry: CallEntry) -> Result<Vec<Event>, StateError> {
        self.run(now, Command::Enqueue { entry }).await
    }
    async fn enqueue(&self, now: u64, call: &str, queue: &str) -> Vec<Event> {
        self.enqueue_entry(now, CallEntry::new(c(call), q(queue), node()))
            .await
            .unwrap()
    }
    async fn status(&self, agent: &str) -> AgentStatus {
        self.0
            .engine
            .agent(&self.0.tenant, &a(agent))
            .await
            .unwrap()
            .map_or(AgentStatus::LoggedOut, |v| v.status)
    }
    async fn agent(&self, agent: &str) -> AgentView {
        self.0
            .engine
            .agent(&self.0.tenant, &a(agent))
            .await
            .unwrap()
            .unwrap()
    }
    async fn view(&self, now: u64, call: &str) -> Option<CallView> {
        self.0
            .engine
            .call(&self.0.tenant, &c(call), now)
            .await
            .unwrap()
    }
    /// Agents the call is offered to (empty if not reserved).
    async fn offered(&self, now: u64, call: &str) -> Vec<String> {
        match self.view(now, call).await {
            Some(v) if v.status == CallStatus::Reserved => {
                v.agents.iter().map(|a| a.to_string()).collect()
            }
            _ => Vec::new(),
        }
    }
    async fn answer(&self, now: u64, call: &str, agent: &str) {
        self.ok(
            now,
            Command::Answer {
                call: c(call),
                agent: a(agent),
            },
        )
        .await;
    }
    async fn hangup(&self, now: u64, call: &str) {
        self.ok(now, Command::Hangup { call: c(call) }).await;
    }
    async fn tick(&self, now: u64) -> Vec<Event> {
        self.ok(now, Command::Tick).await
    }
    async fn stats(&self, now: u64, queue: &str) -> QueueStats {
        self.0
            .engine
            .queue_stats(&self.0.tenant, &q(queue), now)
            .await
            .unwrap()
    }
}

fn qcfg(strategy: Strategy, members: &[&str]) -> QueueConfig {
    QueueConfig::new(q("q1"), strategy, members.iter().map(|m| a(m)).collect())
}

/// Log in agents, make them ready one ms apart (first is idle longest).
async fn staff(t: &T<'_>, agents: &[&str]) {
    for (i, ag) in agents.iter().enumerate() {
        t.login_ready(T0 + i as u64, ag).await;
    }
}

mod cases {
    use super::*;

    /// The registrar's location service: bindings expire, are replaced, and are cleared.
    pub async fn contacts(env: Env) {
        let (e, t) = (&env.engine, &env.tenant);
        assert_eq!(e.contact(t, &a("a1"), T0).await.unwrap(), None);
        e.set_contact(
            t,
            &a("a1"),
            "sip:a1@10.0.0.1:5060|10.0.0.1:5060",
            T0 + 60_000,
        )
        .await
        .unwrap();
        assert_eq!(
            e.contact(t, &a("a1"), T0 + 59_999)
                .await
                .unwrap()
                .as_deref(),
            Some("sip:a1@10.0.0.1:5060|10.0.0.1:5060")
        );
        assert_eq!(
            e.contact(t, &a("a1"), T0 + 60_000).await.unwrap(),
            None,
            "expired"
        );
        e.set_contact(t, &a("a1"), "sip:a1@10.0.0.2", T0 + 120_000)
            .await
            .unwrap();
        assert_eq!(
            e.contact(t, &a("a1"), T0 + 61_000)
                .await
                .unwrap()
                .as_deref(),
            Some("sip:a1@10.0.0.2"),
            "a refresh replaces the binding"
        );
        assert_eq!(e.contact(t, &a("a2"), T0).await.unwrap(), None, "per agent");
        e.clear_contact(t, &a("a1")).await.unwrap();
        assert_eq!(e.contact(t, &a("a1"), T0 + 61_000).await.unwrap(), None);
        let huge = "x".repeat(MAX_CONTACT_LEN + 1);
        assert!(e.set_contact(t, &a("a1"), &huge, T0 + 1).await.is_err());
    }

    /// The cluster's node registry: entries are written, replaced, expire, and are removed.
    pub async fn node_registry(env: Env) {
        let e = &env.engine;
        let info = |id: &str, calls: u32, draining: bool, until: u64| NodeInfo {
            node: NodeId::parse(id.to_owned()).unwrap(),
            sip_addr: format!("10.0.0.{}:5060", calls + 1),
            trunk_addr: format!("10.0.0.{}:5060", calls + 1),
            capacity: 100,
            calls,
            draining,
            expires_at_ms: until,
        };
        assert!(e.nodes(T0).await.unwrap().is_empty());
        e.put_node(&info("gw-b", 3, false, T0 + 6_000))
            .await
            .unwrap();
        e.put_node(&info("gw-a", 1, false, T0 + 6_000))
            .await
            .unwrap();
        assert_eq!(
            e.nodes(T0).await.unwrap(),
            vec![
                info("gw-a", 1, false, T0 + 6_000),
                info("gw-b", 3, false, T0 + 6_000)
            ],
            "ordered by id"
        );
        // a heartbeat replaces the entry
        e.put_node(&info("gw-a", 2, true, T0 + 8_000))
            .await
            .unwrap();
        // gw-b stops beating: gone from the live list once its entry expires
        let live = e.nodes(T0 + 6_000).await.unwrap();
        assert_eq!(live, vec![info("gw-a", 2, true, T0 + 8_000)]);
        // and it comes back with its next heartbeat
        e.put_node(&info("gw-b", 0, false, T0 + 12_000))
            .await
            .unwrap();
        assert_eq!(e.nodes(T0 + 7_000).await.unwrap().len(), 2);
        e.remove_node(&NodeId::parse("gw-b".to_owned()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            e.nodes(T0 + 7_000).await.unwrap(),
            vec![info("gw-a", 2, true, T0 + 8_000)]
        );
        // limits: oversized addresses are refused
        let mut bad = info("gw-c", 0, false, T0 + 6_000);
        bad.sip_addr = "x".repeat(MAX_NODE_ADDR_LEN + 1);
        assert!(e.put_node(&bad).await.is_err());
        bad.sip_addr = String::new();
        assert!(e.put_node(&bad).await.is_err());
        env.cleanup().await;
    }

    pub async fn illegal_transitions(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LongestIdle, &["a1"])).await;
        let r = t.run(T0, Command::SetReady { agent: a("a1") }).await;
        assert!(matches!(r, Err(StateError::UnknownAgent(_))), "{r:?}");
        t.login(T0, "a1").await;
        assert_eq!(t.status("a1").await, AgentStatus::NotReady);
        assert_eq!(t.agent("a1").await.reason.as_deref(), Some("login"));
        t.ready(T0 + 1, "a1").await;
        let r = t.run(T0 + 2, Command::SetReady { agent: a("a1") }).await;
        assert_eq!(
            r,
            Err(StateError::IllegalTransition {
                from: "ready".into(),
                to: "ready".into()
            })
        );
        let r = t
            .run(
                T0 + 2,
                Command::ExtendWrapUp {
                    agent: a("a1"),
                    extra_ms: 5,
                },
            )
            .await;
        assert!(matches!(r, Err(StateError::IllegalTransition { .. })));
        t.enqueue(T0 + 3, "c1", "q1").await;
        assert_eq!(t.status("a1").await, AgentStatus::Reserved);
        let r = t
            .run(
                T0 + 3,
                Command::SetNotReady {
                    agent: a("a1"),
                    reason: ReasonCode::parse("break").unwrap(),
                },
            )
            .await;
        assert!(matches!(r, Err(StateError::IllegalTransition { .. })));
        let r = t
            .run(
                T0 + 3,
                Command::Answer {
                    call: c("c1"),
                    agent: a("a2"),
                },
            )
            .await;
        assert!(matches!(r, Err(StateError::NotOffered { .. })), "{r:?}");
        let r = t.run(T0 + 3, Command::Hangup { call: c("nope") }).await;
        assert!(matches!(r, Err(StateError::UnknownCall(_))));
        t.answer(T0 + 4, "c1", "a1").await;
        let r = t.run(T0 + 5, Command::Logout { agent: a("a1") }).await;
        assert!(matches!(r, Err(StateError::IllegalTransition { .. })));
        let r = t
            .enqueue_entry(T0, CallEntry::new(c("c1"), q("q1"), node()))
            .await;
        assert!(matches!(r, Err(StateError::DuplicateCall(_))));
        let r = t
            .enqueue_entry(T0, CallEntry::new(c("c9"), q("nope"), node()))
            .await;
        assert!(matches!(r, Err(StateError::UnknownQueue(_))));
        assert!(AgentId::parse("a{b}").is_err());
        assert!(AgentId::parse("a b").is_err());
        assert!(AgentId::parse("").is_err());
        assert!(AgentId::parse("x".repeat(65)).is_err());
        // a batch: the refused command does not stop the others
        let out = env
            .engine
            .exec(
                &env.tenant,
                T0 + 6,
                vec![
                    Command::Hangup { call: c("c1") },
                    Command::SetReady { agent: a("zz") },
                    Command::SetNotReady {
                        agent: a("a1"),
                        reason: ReasonCode::parse("break").unwrap(),
                    },
                ],
            )
            .await
            .unwrap();
        assert!(
            out[0].is_ok() && out[1].is_err() && out[2].is_ok(),
            "{out:?}"
        );
        assert_eq!(t.agent("a1").await.reason.as_deref(), Some("break"));
        // every transition is an event
        let ev = env
            .engine
            .events_since(&env.tenant, None, 1000)
            .await
            .unwrap();
        assert!(ev.iter().any(|e| matches!(
            &e.kind,
            EventKind::AgentState {
                from: AgentStatus::Reserved,
                to: AgentStatus::OnCall,
                ..
            }
        )));
        env.cleanup().await;
    }

    pub async fn longest_idle(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LongestIdle, &["a1", "a2", "a3"]))
            .await;
        staff(&t, &["a2", "a3", "a1"]).await;
        t.enqueue(T0 + 10, "c1", "q1").await;
        assert_eq!(t.offered(T0 + 10, "c1").await, vec!["a2"]);
        t.enqueue(T0 + 10, "c2", "q1").await;
        assert_eq!(t.offered(T0 + 10, "c2").await, vec!["a3"]);
        env.cleanup().await;
    }

    pub async fn round_robin(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::RoundRobin, &["a1", "a2", "a3"]))
            .await;
        staff(&t, &["a3", "a1", "a2"]).await;
        let mut got = Vec::new();
        for i in 0..6 {
            let now = T0 + 100 + i * 10;
            let call = format!("c{i}");
            t.enqueue(now, &call, "q1").await;
            let who = t.offered(now, &call).await;
            assert_eq!(who.len(), 1);
            t.answer(now, &call, &who[0]).await;
            t.hangup(now + 1, &call).await;
            got.push(who[0].clone());
        }
        // never-offered agents first (ties by id), then strictly in order of last offer
        assert_eq!(got, vec!["a1", "a2", "a3", "a1", "a2", "a3"]);
        env.cleanup().await;
    }

    pub async fn ring_all(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::RingAll, &["a1", "a2", "a3"])).await;
        staff(&t, &["a1", "a2", "a3"]).await;
        t.enqueue(T0 + 10, "c1", "q1").await;
        let mut who = t.offered(T0 + 10, "c1").await;
        who.sort();
        assert_eq!(who, vec!["a1", "a2", "a3"]);
        t.answer(T0 + 12, "c1", "a2").await;
        assert_eq!(t.status("a2").await, AgentStatus::OnCall);
        assert_eq!(t.status("a1").await, AgentStatus::Ready);
        assert_eq!(t.status("a3").await, AgentStatus::Ready);
        let r = t
            .run(
                T0 + 13,
                Command::Answer {
                    call: c("c1"),
                    agent: a("a1"),
                },
            )
            .await;
        assert!(matches!(r, Err(StateError::NotOffered { .. })));
        env.cleanup().await;
    }

    pub async fn random(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::Random, &["a1", "a2", "a3"])).await;
        staff(&t, &["a1", "a2", "a3"]).await;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..30 {
            let now = T0 + 100 + i * 10;
            let call = format!("c{i}");
            t.enqueue(now, &call, "q1").await;
            let who = t.offered(now, &call).await;
            assert_eq!(who.len(), 1);
            t.answer(now, &call, &who[0]).await;
            t.hangup(now + 1, &call).await;
            seen.insert(who[0].clone());
        }
        assert!(seen.len() >= 2, "random picked only {seen:?}");
        env.cleanup().await;
    }

    async fn serve_one(t: &T<'_>, now: u64, call: &str, agent: &str, talk: u64) {
        // only `agent` is ready
        t.enqueue(now, call, "q1").await;
        assert_eq!(t.offered(now, call).await, vec![agent.to_string()]);
        t.answer(now, call, agent).await;
        t.hangup(now + talk, call).await;
    }

    pub async fn fewest_calls(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::FewestCalls, &["a1", "a2"])).await;
        t.login_ready(T0, "a1").await;
        serve_one(&t, T0 + 1, "x1", "a1", 1).await;
        serve_one(&t, T0 + 10, "x2", "a1", 1).await;
        t.login_ready(T0 + 20, "a2").await;
        serve_one(&t, T0 + 30, "x3", "a2", 1).await;
        // a1 handled 2, a2 handled 1: a2 first although a1 is idle longer
        t.enqueue(T0 + 100, "c1", "q1").await;
        assert_eq!(t.offered(T0 + 100, "c1").await, vec!["a2"]);
        env.cleanup().await;
    }

    pub async fn least_talk_time(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LeastTalkTime, &["a1", "a2"])).await;
        t.login_ready(T0, "a1").await;
        serve_one(&t, T0 + 1, "x1", "a1", 5_000).await;
        t.login_ready(T0 + 10_000, "a2").await;
        serve_one(&t, T0 + 10_001, "x2", "a2", 100).await;
        serve_one(&t, T0 + 20_000, "x3", "a2", 100).await;
        // a2 took 2 calls but talked 200 ms, a1 talked 5 s
        t.enqueue(T0 + 30_000, "c1", "q1").await;
        assert_eq!(t.offered(T0 + 30_000, "c1").await, vec!["a2"]);
        env.cleanup().await;
    }

    pub async fn linear(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::Linear, &["a3", "a1", "a2"])).await;
        staff(&t, &["a1", "a2", "a3"]).await;
        t.enqueue(T0 + 10, "c1", "q1").await;
        t.enqueue(T0 + 11, "c2", "q1").await;
        t.enqueue(T0 + 12, "c3", "q1").await;
        assert_eq!(t.offered(T0 + 12, "c1").await, vec!["a3"]);
        assert_eq!(t.offered(T0 + 12, "c2").await, vec!["a1"]);
        assert_eq!(t.offered(T0 + 12, "c3").await, vec!["a2"]);
        env.cleanup().await;
    }

    pub async fn highest_skill(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::HighestSkill, &["a1", "a2", "a3"]);
        cfg.rank_skill = Some("sales".into());
        t.queue(cfg).await;
        t.login_skills(T0, "a1", &[("sales", 3)]).await;
        t.login_skills(T0, "a2", &[("sales", 7)]).await;
        t.login_skills(T0, "a3", &[("support", 9)]).await;
        for ag in ["a1", "a2", "a3"] {
            t.ready(T0 + 1, ag).await;
        }
        t.enqueue(T0 + 10, "c1", "q1").await;
        assert_eq!(t.offered(T0 + 10, "c1").await, vec!["a2"]);
        t.enqueue(T0 + 10, "c2", "q1").await;
        assert_eq!(t.offered(T0 + 10, "c2").await, vec!["a1"]);
        env.cleanup().await;
    }

    pub async fn required_skills(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LongestIdle, &["a1", "a2"])).await;
        t.login_skills(T0, "a1", &[("fr", 3)]).await;
        t.login_skills(T0, "a2", &[("fr", 5), ("billing", 1)]).await;
        t.ready(T0 + 1, "a1").await;
        t.ready(T0 + 2, "a2").await;
        let mut e = CallEntry::new(c("c1"), q("q1"), node());
        e.skills.insert("fr".into(), 4);
        t.enqueue_entry(T0 + 10, e).await.unwrap();
        assert_eq!(t.offered(T0 + 10, "c1").await, vec!["a2"]);
        let mut e = CallEntry::new(c("c2"), q("q1"), node());
        e.skills.insert("de".into(), 1);
        t.enqueue_entry(T0 + 10, e).await.unwrap();
        assert_eq!(
            t.view(T0 + 10, "c2").await.unwrap().status,
            CallStatus::Waiting
        );
        env.cleanup().await;
    }

    pub async fn tiers(env: Env) {
        let t = T(&env);
        let mut cfg = QueueConfig::new(q("q1"), Strategy::LongestIdle, vec![]);
        cfg.members = vec![
            MemberConfig {
                agent: a("a1"),
                tier: 0,
            },
            MemberConfig {
                agent: a("a2"),
                tier: 1,
            },
        ];
        cfg.tier_wait_ms = 10_000;
        t.queue(cfg).await;
        t.login(T0, "a1").await; // tier 0, not ready
        t.login_ready(T0, "a2").await; // tier 1, ready
        // dynamic member at tier 2
        t.login_ready(T0, "a3").await;
        t.ok(
            T0,
            Command::JoinQueue {
                agent: a("a3"),
                queue: q("q1"),
                tier: 2,
            },
        )
        .await;
        t.enqueue(T0 + 100, "c1", "q1").await;
        assert!(t.offered(T0 + 100, "c1").await.is_empty());
        t.tick(T0 + 5_000).await;
        assert!(t.offered(T0 + 5_000, "c1").await.is_empty());
        t.tick(T0 + 10_100).await;
        assert_eq!(t.offered(T0 + 10_100, "c1").await, vec!["a2"]);
        t.answer(T0 + 10_100, "c1", "a2").await;
        // tier 2 opens after 20 s for the next call
        t.enqueue(T0 + 10_200, "c2", "q1").await;
        t.tick(T0 + 20_000).await;
        assert!(t.offered(T0 + 20_000, "c2").await.is_empty());
        t.tick(T0 + 30_200).await;
        assert_eq!(t.offered(T0 + 30_200, "c2").await, vec!["a3"]);
        // leaving the queue removes the dynamic member
        t.ok(
            T0 + 30_300,
            Command::LeaveQueue {
                agent: a("a3"),
                queue: q("q1"),
            },
        )
        .await;
        let s = t.stats(T0 + 30_300, "q1").await;
        assert_eq!(s.agents.on_call, 1); // a2
        assert_eq!(s.agents.reserved, 0); // a3 no longer a member
        env.cleanup().await;
    }

    fn with_overflow(
        mut cfg: QueueConfig,
        target: OverflowTarget,
        after: Option<u64>,
    ) -> QueueConfig {
        cfg.overflow = Some(OverflowRule {
            target,
            after_ms: after,
            when_no_agents: false,
            when_full: false,
        });
        cfg
    }

    pub async fn overflow_to_queue_after_wait(env: Env) {
        let t = T(&env);
        t.queue(with_overflow(
            qcfg(Strategy::LongestIdle, &["a1"]),
            OverflowTarget::Queue { queue: q("q2") },
            Some(30_000),
        ))
        .await;
        t.queue(QueueConfig::new(
            q("q2"),
            Strategy::LongestIdle,
            vec![a("b1")],
        ))
        .await;
        t.login(T0, "a1").await;
        t.login_ready(T0, "b1").await;
        t.enqueue(T0 + 1, "c1", "q1").await;
        t.tick(T0 + 20_000).await;
        assert_eq!(t.view(T0 + 20_000, "c1").await.unwrap().queue, q("q1"));
        let ev = t.tick(T0 + 30_001).await;
        assert!(ev.iter().any(
            |e| matches!(&e.kind, EventKind::CallOverflowed { reason, .. } if reason == "wait")
        ));
        let v = t.view(T0 + 30_001, "c1").await.unwrap();
        assert_eq!(v.queue, q("q2"));
        assert_eq!(v.agents, vec![a("b1")]);
        env.cleanup().await;
    }

    pub async fn overflow_no_agents_to_voicemail(env: Env) {
        let t = T(&env);
        let mut cfg = with_overflow(
            qcfg(Strategy::LongestIdle, &["a1"]),
            OverflowTarget::Voicemail {
                mailbox: "mb1".into(),
            },
            None,
        );
        if let Some(o) = cfg.overflow.as_mut() {
            o.when_no_agents = true;
        }
        t.queue(cfg).await;
        let ev = t.enqueue(T0, "c1", "q1").await;
        assert!(ev.iter().any(|e| matches!(&e.kind,
            EventKind::CallOverflowed { reason, target: OverflowTarget::Voicemail { .. }, .. } if reason == "no_agents")));
        assert!(t.view(T0, "c1").await.is_none());
        // once someone is logged in the call queues normally
        t.login(T0, "a1").await;
        t.enqueue(T0, "c2", "q1").await;
        assert_eq!(t.view(T0, "c2").await.unwrap().status, CallStatus::Waiting);
        env.cleanup().await;
    }

    pub async fn overflow_full_to_number(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1"]);
        cfg.max_len = 1;
        t.queue(cfg.clone()).await;
        t.login(T0, "a1").await;
        t.enqueue(T0, "c1", "q1").await;
        let r = t
            .enqueue_entry(T0, CallEntry::new(c("c2"), q("q1"), node()))
            .await;
        assert!(matches!(r, Err(StateError::QueueFull(_))), "{r:?}");
        let mut cfg = with_overflow(
            cfg,
            OverflowTarget::Number {
                number: "+15550100".into(),
            },
            None,
        );
        if let Some(o) = cfg.overflow.as_mut() {
            o.when_full = true;
        }
        t.queue(cfg).await;
        let ev = t.enqueue(T0, "c3", "q1").await;
        assert!(ev.iter().any(|e| matches!(&e.kind,
            EventKind::CallOverflowed { reason, target: OverflowTarget::Number { .. }, .. } if reason == "full")));
        assert!(t.view(T0, "c3").await.is_none());
        assert_eq!(t.stats(T0, "q1").await.waiting, 1);
        env.cleanup().await;
    }

    pub async fn overflow_callback_keeps_place(env: Env) {
        let t = T(&env);
        t.queue(with_overflow(
            qcfg(Strategy::LongestIdle, &["a1"]),
            OverflowTarget::Callback,
            Some(60_000),
        ))
        .await;
        t.login(T0, "a1").await;
        t.enqueue(T0, "c1", "q1").await;
        t.enqueue(T0 + 1, "c2", "q1").await;
        t.tick(T0 + 60_000).await;
        let v = t.view(T0 + 60_000, "c1").await.unwrap();
        assert!(v.callback);
        assert_eq!(v.position, Some(1));
        t.tick(T0 + 120_000).await; // callbacks do not overflow again
        assert!(t.view(T0 + 120_000, "c1").await.unwrap().callback);
        t.login(T0 + 120_001, "a1").await; // presence expired meanwhile
        let ev = t.ready(T0 + 120_001, "a1").await;
        assert!(ev.iter().any(|e| matches!(&e.kind,
            EventKind::CallOffered { call, callback: true, .. } if call.as_str() == "c1")));
        env.cleanup().await;
    }

    pub async fn max_wait(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1"]);
        cfg.max_wait_ms = Some(5_000);
        t.queue(cfg).await;
        t.enqueue(T0, "c1", "q1").await;
        let ev = t.tick(T0 + 5_000).await;
        assert!(ev.iter().any(
            |e| matches!(&e.kind, EventKind::CallEnded { reason, .. } if reason == "max_wait")
        ));
        assert!(t.view(T0 + 5_000, "c1").await.is_none());
        env.cleanup().await;
    }

    pub async fn sticky_agent(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["p", "o"]);
        cfg.sticky_ms = 20_000;
        t.queue(cfg).await;
        t.login(T0, "p").await;
        t.login_ready(T0, "o").await;
        let mut e = CallEntry::new(c("c1"), q("q1"), node());
        e.preferred_agent = Some(a("p"));
        t.enqueue_entry(T0 + 10, e.clone()).await.unwrap();
        assert!(t.offered(T0 + 10, "c1").await.is_empty());
        t.ready(T0 + 5_000, "p").await;
        assert_eq!(t.offered(T0 + 5_000, "c1").await, vec!["p"]);
        t.answer(T0 + 5_001, "c1", "p").await;
        // preferred agent not ready within the window: anyone after it
        e.call = c("c2");
        t.enqueue_entry(T0 + 6_000, e).await.unwrap();
        assert!(t.offered(T0 + 6_000, "c2").await.is_empty());
        t.tick(T0 + 25_000).await;
        assert!(t.offered(T0 + 25_000, "c2").await.is_empty());
        t.tick(T0 + 26_000).await;
        assert_eq!(t.offered(T0 + 26_000, "c2").await, vec!["o"]);
        env.cleanup().await;
    }

    pub async fn ring_no_answer_returns_to_position(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1"]);
        cfg.ring_timeout_ms = 10_000;
        t.queue(cfg).await;
        t.login(T0, "a1").await;
        t.enqueue(T0, "c1", "q1").await;
        t.enqueue(T0 + 1, "c2", "q1").await;
        t.enqueue(T0 + 2, "c3", "q1").await;
        t.ready(T0 + 10, "a1").await;
        assert_eq!(t.offered(T0 + 10, "c1").await, vec!["a1"]);
        assert_eq!(t.view(T0 + 10, "c2").await.unwrap().position, Some(1));
        // ring-no-answer: c1 returns to position 1 (and, a1 being the only agent, rings again)
        let ev = t.tick(T0 + 10_010).await;
        assert!(ev.iter().any(|e| matches!(&e.kind,
            EventKind::CallQueued { call, position: 1, .. } if call.as_str() == "c1")));
        assert!(ev.iter().any(|e| matches!(&e.kind,
            EventKind::OfferReleased { reason, .. } if reason == "no_answer")));
        assert_eq!(t.agent("a1").await.missed, 1);
        assert_eq!(t.offered(T0 + 10_010, "c1").await, vec!["a1"]);
        // explicit reject counts too; third miss -> not ready "missed_calls"
        t.ok(
            T0 + 10_020,
            Command::Reject {
                call: c("c1"),
                agent: a("a1"),
            },
        )
        .await;
        assert_eq!(t.agent("a1").await.missed, 2);
        t.tick(T0 + 20_030).await;
        let v = t.agent("a1").await;
        assert_eq!(v.status, AgentStatus::NotReady);
        assert_eq!(v.reason.as_deref(), Some(MISSED_CALLS_REASON));
        let v = t.view(T0 + 20_030, "c1").await.unwrap();
        assert_eq!((v.status, v.position), (CallStatus::Waiting, Some(1)));
        assert_eq!(t.view(T0 + 20_030, "c3").await.unwrap().position, Some(3));
        // answering resets the counter
        t.ready(T0 + 30_000, "a1").await;
        t.answer(T0 + 30_001, "c1", "a1").await;
        assert_eq!(t.agent("a1").await.missed, 0);
        env.cleanup().await;
    }

    pub async fn wrap_up_timeout(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1"]);
        cfg.wrap_up_ms = 10_000;
        t.queue(cfg).await;
        t.login_ready(T0, "a1").await;
        t.enqueue(T0, "c1", "q1").await;
        t.answer(T0 + 1, "c1", "a1").await;
        t.hangup(T0 + 1_001, "c1").await;
        let v = t.agent("a1").await;
        assert_eq!(v.status, AgentStatus::WrapUp);
        assert_eq!(v.wrap_until_ms, Some(T0 + 11_001));
        assert_eq!((v.calls_handled, v.talk_ms), (1, 1_000));
        t.enqueue(T0 + 2_000, "c2", "q1").await;
        t.tick(T0 + 5_000).await;
        assert_eq!(t.status("a1").await, AgentStatus::WrapUp);
        t.ok(
            T0 + 6_000,
            Command::ExtendWrapUp {
                agent: a("a1"),
                extra_ms: 5_000,
            },
        )
        .await;
        t.tick(T0 + 12_000).await;
        assert_eq!(t.status("a1").await, AgentStatus::WrapUp);
        t.tick(T0 + 16_001).await;
        // back to ready, and immediately offered the waiting call
        assert_eq!(t.offered(T0 + 16_001, "c2").await, vec!["a1"]);
        // agent may also end wrap-up early
        t.answer(T0 + 16_002, "c2", "a1").await;
        t.hangup(T0 + 16_003, "c2").await;
        t.ready(T0 + 16_004, "a1").await;
        assert_eq!(t.status("a1").await, AgentStatus::Ready);
        env.cleanup().await;
    }

    pub async fn presence_expiry(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LongestIdle, &["a1", "a2"])).await;
        t.login_ready(T0, "a1").await; // presence until T0 + 60 s
        t.login(T0, "a2").await;
        t.enqueue(T0 + 1, "c0", "q1").await;
        t.enqueue(T0 + 2, "c1", "q1").await;
        assert_eq!(t.offered(T0 + 2, "c0").await, vec!["a1"]);
        // a2 keeps heartbeating, a1 vanished
        t.ok(
            T0 + 50_000,
            Command::Heartbeat {
                agent: a("a2"),
                conn: ConnId::parse("conn-a2").unwrap(),
            },
        )
        .await;
        t.tick(T0 + 59_999).await;
        assert_eq!(t.status("a1").await, AgentStatus::Reserved);
        let ev = t.tick(T0 + 60_000).await;
        assert!(ev.iter().any(
            |e| matches!(&e.kind, EventKind::OfferReleased { reason, .. } if reason == "agent_lost")
        ));
        assert_eq!(t.status("a1").await, AgentStatus::LoggedOut);
        assert_eq!(t.status("a2").await, AgentStatus::NotReady);
        let v = t.view(T0 + 60_000, "c0").await.unwrap();
        assert_eq!((v.status, v.position), (CallStatus::Waiting, Some(1)));
        let r = t
            .run(
                T0 + 60_001,
                Command::Heartbeat {
                    agent: a("a1"),
                    conn: ConnId::parse("conn-a1").unwrap(),
                },
            )
            .await;
        assert!(matches!(r, Err(StateError::IllegalTransition { .. })));
        // presence is tied to the connection: a newer login takes over, the old one is refused
        let hb = |conn: &str| Command::Heartbeat {
            agent: a("a2"),
            conn: ConnId::parse(conn).unwrap(),
        };
        let r = t.run(T0 + 60_002, hb("other-tab")).await;
        assert_eq!(r, Err(StateError::StaleConnection("a2".into())));
        let login = Command::Login {
            agent: a("a2"),
            conn: ConnId::parse("new-tab").unwrap(),
            skills: BTreeMap::new(),
        };
        t.ok(T0 + 60_003, login).await;
        assert_eq!(t.status("a2").await, AgentStatus::NotReady); // re-login keeps the state
        assert_eq!(
            t.agent("a2").await.conn,
            Some(ConnId::parse("new-tab").unwrap())
        );
        assert!(t.run(T0 + 60_004, hb("conn-a2")).await.is_err());
        t.ok(T0 + 60_005, hb("new-tab")).await;
        env.cleanup().await;
    }

    pub async fn lease_reclaim_and_node_loss(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1", "a2"]);
        cfg.ring_timeout_ms = 5_000;
        t.queue(cfg).await;
        staff(&t, &["a1", "a2"]).await;
        let mut e = CallEntry::new(c("c1"), q("q1"), NodeId::parse("gw-dead").unwrap());
        t.enqueue_entry(T0 + 10, e.clone()).await.unwrap();
        e.call = c("c2");
        e.node = NodeId::parse("gw-live").unwrap();
        t.enqueue_entry(T0 + 10, e).await.unwrap();
        t.answer(T0 + 20, "c2", "a2").await;
        assert_eq!(t.offered(T0 + 20, "c1").await, vec!["a1"]);
        // the holder of c1's reservation never answers: lease expires, offer is reclaimed
        // (a1 is the only free agent, so c1 rings a1 again with a fresh lease)
        t.tick(T0 + 5_010).await;
        let ev = env
            .engine
            .events_since(&env.tenant, None, 10_000)
            .await
            .unwrap();
        assert!(ev.iter().any(
            |e| matches!(&e.kind, EventKind::OfferReleased { reason, .. } if reason == "no_answer")
        ));
        // gateway gw-dead stops heartbeating (node ttl 600 s); gw-live keeps going
        t.ok(
            T0 + 500_000,
            Command::NodeHeartbeat {
                node: NodeId::parse("gw-live").unwrap(),
            },
        )
        .await;
        for ag in ["a1", "a2"] {
            t.ok(
                T0 + 500_000,
                Command::Heartbeat {
                    agent: a(ag),
                    conn: ConnId::parse(format!("conn-{ag}")).unwrap(),
                },
            )
            .await;
        }
        // keep the lease from expiring in between: a1 answers c1 first
        let who = t.offered(T0 + 500_000, "c1").await;
        if who.is_empty() {
            t.tick(T0 + 500_001).await;
        }
        let who = t.offered(T0 + 500_001, "c1").await;
        t.answer(T0 + 500_002, "c1", &who[0]).await;
        for ag in ["a1", "a2"] {
            t.ok(
                T0 + 550_000,
                Command::Heartbeat {
                    agent: a(ag),
                    conn: ConnId::parse(format!("conn-{ag}")).unwrap(),
                },
            )
            .await;
        }
        let ev = t.tick(T0 + 600_010).await;
        assert!(ev.iter().any(
            |e| matches!(&e.kind, EventKind::CallEnded { call, reason, .. }
            if call.as_str() == "c1" && reason == "node_lost")
        ));
        assert!(t.view(T0 + 600_010, "c1").await.is_none());
        assert_eq!(
            t.view(T0 + 600_010, "c2").await.unwrap().status,
            CallStatus::Answered
        );
        assert_eq!(t.status(&who[0]).await, AgentStatus::Ready);
        assert!(
            env.engine
                .reconcile(&env.tenant, T0 + 600_010)
                .await
                .unwrap()
                .is_empty()
        );
        env.cleanup().await;
    }

    pub async fn reconciliation_clean(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::RingAll, &["a1", "a2", "a3"])).await;
        staff(&t, &["a1", "a2", "a3"]).await;
        t.enqueue(T0 + 10, "c1", "q1").await;
        t.enqueue(T0 + 10, "c2", "q1").await;
        t.answer(T0 + 11, "c1", "a1").await;
        let fixes = env.engine.reconcile(&env.tenant, T0 + 12).await.unwrap();
        assert!(fixes.is_empty(), "{fixes:?}");
        env.cleanup().await;
    }

    pub async fn stats_service_level(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1", "a2"]);
        cfg.service_level_ms = 20_000;
        t.queue(cfg).await;
        t.login(T0, "a1").await;
        t.login(T0, "a2").await;
        for (i, call) in ["c1", "c2", "c3", "c4"].iter().enumerate() {
            t.enqueue(T0 + i as u64, call, "q1").await;
        }
        t.ready(T0 + 5_000, "a1").await; // takes c1 after 5 s
        t.answer(T0 + 5_000, "c1", "a1").await;
        t.hangup(T0 + 10_000, "c2").await; // abandons after 10 s
        t.ready(T0 + 30_001, "a2").await; // takes c3 after 30 s
        t.answer(T0 + 30_001, "c3", "a2").await;
        let s = t.stats(T0 + 40_003, "q1").await;
        assert_eq!((s.waiting, s.queued, s.answered, s.abandoned), (1, 4, 2, 1));
        assert_eq!(s.longest_wait_ms, 40_000);
        assert_eq!(s.left_within_sl, 2);
        assert_eq!(s.service_level, Some(0.5));
        assert_eq!(s.asa_ms, Some((5_000 + 29_999) / 2));
        assert_eq!(s.abandon_rate, Some(0.25));
        assert_eq!(s.agents.on_call, 2);
        // a new UTC day starts from zero
        let s = t.stats(T0 + 86_400_000, "q1").await;
        assert_eq!(s.queued, 0);
        env.cleanup().await;
    }

    pub async fn position_priority_and_eta(env: Env) {
        let t = T(&env);
        let mut cfg = qcfg(Strategy::LongestIdle, &["a1", "a2"]);
        cfg.default_aht_ms = 60_000;
        t.queue(cfg).await;
        t.login(T0, "a1").await;
        t.login(T0, "a2").await;
        t.ready(T0, "a1").await;
        t.ready(T0, "a2").await;
        t.enqueue(T0, "busy1", "q1").await;
        t.enqueue(T0, "busy2", "q1").await;
        t.enqueue(T0 + 1, "c1", "q1").await;
        t.enqueue(T0 + 2, "c2", "q1").await;
        let mut e = CallEntry::new(c("vip"), q("q1"), node());
        e.priority = 9;
        let ev = t.enqueue_entry(T0 + 3, e).await.unwrap();
        assert!(
            ev.iter()
                .any(|e| matches!(&e.kind, EventKind::CallQueued { position: 1, .. }))
        );
        let v = t.view(T0 + 3, "vip").await.unwrap();
        assert_eq!(v.position, Some(1));
        assert_eq!(v.eta_ms, Some(30_000)); // 1 * 60 s / 2 staffed agents
        assert_eq!(t.view(T0 + 3, "c2").await.unwrap().position, Some(3));
        assert_eq!(t.view(T0 + 3, "c2").await.unwrap().eta_ms, Some(90_000));
        env.cleanup().await;
    }

    pub async fn events_resume_and_subscribe(env: Env) {
        let t = T(&env);
        t.queue(qcfg(Strategy::LongestIdle, &["a1"])).await;
        let mut sub = env.engine.subscribe(&env.tenant, None).await.unwrap();
        t.login_ready(T0, "a1").await;
        let all = env
            .engine
            .events_since(&env.tenant, None, 100)
            .await
            .unwrap();
        assert!(all.len() >= 3);
        let rest = env
            .engine
            .events_since(&env.tenant, Some(&all[0].id), 100)
            .await
            .unwrap();
        assert_eq!(rest, all[1..].to_vec());
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                first.kind,
                EventKind::AgentState {
                    to: AgentStatus::NotReady,
                    ..
                }
            ),
            "{first:?}"
        );
        let resumed = env
            .engine
            .subscribe(&env.tenant, Some(all[1].id.clone()))
            .await;
        let mut resumed = resumed.unwrap();
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), resumed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e, all[2]);
        // events are JSON for the API
        let json = serde_json::to_string(&all[0]).unwrap();
        assert!(json.contains("\"type\":\"queue_configured\""), "{json}");
        env.cleanup().await;
    }

    pub async fn caller_number_kept_for_the_screen_pop(env: Env) {
        let t = T(&env);
        t.queue(QueueConfig::new(q("sales"), Strategy::LongestIdle, vec![]))
            .await;
        let mut entry = CallEntry::new(c("call-1"), q("sales"), node());
        entry.caller = Some("+14155550199".into());
        t.enqueue_entry(T0, entry).await.unwrap();
        let view = t.view(T0 + 10, "call-1").await.unwrap();
        assert_eq!(view.caller.as_deref(), Some("+14155550199"));
        // Without a caller, none comes back.
        t.enqueue(T0, "call-2", "sales").await;
        assert_eq!(t.view(T0 + 10, "call-2").await.unwrap().caller, None);
        // Oversized or control characters: refused, nothing queued.
        for bad in ["1".repeat(65), "+1\r\nX".to_string()] {
            let mut entry = CallEntry::new(c("call-3"), q("sales"), node());
            entry.caller = Some(bad);
            let e = t.enqueue_entry(T0, entry).await.unwrap_err();
            assert!(matches!(e, StateError::Invalid(_)), "{e:?}");
        }
        assert!(t.view(T0, "call-3").await.is_none());
        env.cleanup().await;
    }

    pub async fn recording_events(env: Env) {
        let t = T(&env);
        let sha = "ab".repeat(32);
        let done = t
            .ok(
                T0,
                Command::RecordingCompleted {
                    call: c("rec-1"),
                    object_key: "t/rec-1.wav".into(),
                    size_bytes: 1_920_044,
                    sha256: sha.clone(),
                    duration_ms: 60_000,
                },
            )
            .await;
        let failed = t
            .ok(
                T0 + 1,
                Command::RecordingFailed {
                    call: c("rec-2"),
                    reason: "s3: connection refused".into(),
                },
            )
            .await;
        let too_long = t
            .run(
                T0 + 2,
                Command::RecordingFailed {
                    call: c("rec-3"),
                    reason: "x".repeat(501),
                },
            )
            .await;
        assert!(
            matches!(too_long, Err(StateError::Invalid(_))),
            "{too_long:?}"
        );
        t.ok(
            T0 + 3,
            Command::RecordingPaused {
                call: c("rec-1"),
                paused: true,
                by: "dtmf".into(),
                offset_ms: 4_000,
            },
        )
        .await;
        t.ok(
            T0 + 4,
            Command::RecordingPaused {
                call: c("rec-1"),
                paused: false,
                by: "api".into(),
                offset_ms: 9_500,
            },
        )
        .await;
        let bad_by = t
            .run(
                T0 + 5,
                Command::RecordingPaused {
                    call: c("rec-1"),
                    paused: true,
                    by: "someone".into(),
                    offset_ms: 1,
                },
            )
            .await;
        assert!(matches!(bad_by, Err(StateError::Invalid(_))), "{bad_by:?}");
        let log = env
            .engine
            .events_since(&env.tenant, None, 100)
            .await
            .unwrap();
        let kinds: Vec<_> = log.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::RecordingCompleted {
                    call: c("rec-1"),
                    object_key: "t/rec-1.wav".into(),
                    size_bytes: 1_920_044,
                    sha256: sha,
                    duration_ms: 60_000,
                },
                EventKind::RecordingFailed {
                    call: c("rec-2"),
                    reason: "s3: connection refused".into(),
                },
                EventKind::RecordingPaused {
                    call: c("rec-1"),
                    by: "dtmf".into(),
                    offset_ms: 4_000,
                },
                EventKind::RecordingResumed {
                    call: c("rec-1"),
                    by: "api".into(),
                    offset_ms: 9_500,
                },
            ]
        );
        let json = serde_json::to_string(&log[2]).unwrap();
        assert!(json.contains("\"type\":\"recording.paused\""), "{json}");
        assert_eq!((done.len(), failed.len()), (1, 1));
        let json = serde_json::to_string(&log[0]).unwrap();
        assert!(json.contains("\"type\":\"recording.completed\""), "{json}");
        env.cleanup().await;
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::cases::$name(super::memory_env().await).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::cases::$name(super::redis_env().await).await })*
        }
    };
}

conformance!(
    contacts,
    node_registry,
    illegal_transitions,
    longest_idle,
    round_robin,
    ring_all,
    random,
    fewest_calls,
    least_talk_time,
    linear,
    highest_skill,
    required_skills,
    tiers,
    overflow_to_queue_after_wait,
    overflow_no_agents_to_voicemail,
    overflow_full_to_number,
    overflow_callback_keeps_place,
    max_wait,
    sticky_agent,
    ring_no_answer_returns_to_position,
    wrap_up_timeout,
    presence_expiry,
    lease_reclaim_and_node_loss,
    reconciliation_clean,
    stats_service_level,
    position_priority_and_eta,
    events_resume_and_subscribe,
    recording_events,
    caller_number_kept_for_the_screen_pop,
);
