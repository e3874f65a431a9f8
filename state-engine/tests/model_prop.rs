//! Property test: the in-memory engine's pure core against a deliberately naive reference
//! model of one longest-idle queue (no skills, tiers, wrap-up or timers), over random command
//! sequences. After every command both must agree on acceptance, every agent's state and every
//! call's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::{
    Just, ProptestConfig, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as _;
use switchboard_state::core::Core;
use switchboard_state::*;

const AGENTS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Login(usize),
    Ready(usize),
    NotReady(usize),
    Logout(usize),
    Enqueue,
    Answer(usize, usize),
    Reject(usize, usize),
    Hangup(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = (Op, u64)> {
    let ag = 0..AGENTS;
    let call = 0..12usize;
    (
        prop_oneof![
            ag.clone().prop_map(Op::Login),
            ag.clone().prop_map(Op::Ready),
            ag.clone().prop_map(Op::NotReady),
            ag.clone().prop_map(Op::Logout),
            Just(Op::Enqueue),
            (call.clone(), ag.clone()).prop_map(|(c, a)| Op::Answer(c, a)),
            (call.clone(), ag.clone()).prop_map(|(c, a)| Op::Reject(c, a)),
            call.prop_map(Op::Hangup),
            // the same, aimed at what an agent holds, so offers get answered and calls end
            ag.clone().prop_map(|a| Op::Answer(usize::MAX, a)),
            ag.clone().prop_map(|a| Op::Answer(usize::MAX, a)),
            ag.clone().prop_map(|a| Op::Reject(usize::MAX, a)),
            ag.clone().prop_map(|a| Op::Hangup(usize::MAX - a)),
            ag.clone().prop_map(|a| Op::Hangup(usize::MAX - a)),
        ],
        0..3u64,
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Out,
    NotReady,
    Ready,
    Reserved(usize),
    OnCall(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cs {
    Waiting,
    Reserved(usize),
    Answered(usize),
    Gone,
}

struct Model {
    agents: Vec<(St, u64, u32)>, // state, idle since, missed
    calls: Vec<Cs>,
    waiting: VecDeque<usize>, // call indexes in enqueue order
}

impl Model {
    /// Turn "the call agent i holds" placeholders into concrete call indexes.
    fn resolve(&self, op: &Op) -> Op {
        let held = |i: usize| match self.agents[i].0 {
            St::Reserved(c) | St::OnCall(c) => c,
            _ => 999,
        };
        match *op {
            Op::Answer(usize::MAX, i) => Op::Answer(held(i), i),
            Op::Reject(usize::MAX, i) => Op::Reject(held(i), i),
            Op::Hangup(c) if c > usize::MAX - AGENTS => Op::Hangup(held(usize::MAX - c)),
            ref o => o.clone(),
        }
    }

    fn best_ready(&self) -> Option<usize> {
        (0..AGENTS)
            .filter(|i| self.agents[*i].0 == St::Ready)
            .min_by_key(|i| (self.agents[*i].1, *i))
    }
    fn offer(&mut self, call: usize, agent: usize) {
        self.waiting.retain(|c| *c != call);
        self.calls[call] = Cs::Reserved(agent);
        self.agents[agent].0 = St::Reserved(call);
    }
    fn match_call(&mut self, call: usize) {
        if let Some(a) = self.best_ready() {
            self.offer(call, a);
        }
    }
    fn match_agent(&mut self, agent: usize) {
        if self.agents[agent].0 == St::Ready
            && let Some(&c) = self.waiting.front()
        {
            self.match_call(c);
        }
    }
    fn put_back(&mut self, call: usize) {
        self.calls[call] = Cs::Waiting;
        self.waiting.push_back(call);
        let mut v: Vec<usize> = self.waiting.drain(..).collect();
        v.sort();
        self.waiting = v.into();
    }
    /// Returns whether the command is accepted.
    fn apply(&mut self, op: &Op, now: u64) -> bool {
        match *op {
            Op::Login(i) => {
                if self.agents[i].0 == St::Out {
                    self.agents[i] = (St::NotReady, self.agents[i].1, 0);
                }
                true
            }
            Op::Ready(i) => {
                if self.agents[i].0 != St::NotReady {
                    return false;
                }
                self.agents[i] = (St::Ready, now, 0);
                self.match_agent(i);
                true
            }
            Op::NotReady(i) => {
                if !matches!(self.agents[i].0, St::Ready | St::NotReady) {
                    return false;
                }
                self.agents[i].0 = St::NotReady;
                true
            }
            Op::Logout(i) => match self.agents[i].0 {
                St::Ready | St::NotReady => {
                    self.agents[i].0 = St::Out;
                    true
                }
                St::Reserved(c) => {
                    self.agents[i].0 = St::Out;
                    self.put_back(c);
                    self.match_call(c);
                    true
                }
                _ => false,
            },
            Op::Enqueue => {
                let c = self.calls.len();
                self.calls.push(Cs::Waiting);
                self.waiting.push_back(c);
                self.match_call(c);
                true
            }
            Op::Answer(c, i) | Op::Reject(c, i) => {
                if self.calls.get(c) != Some(&Cs::Reserved(i)) {
                    return false;
                }
                if matches!(op, Op::Answer(..)) {
                    self.calls[c] = Cs::Answered(i);
                    self.agents[i].0 = St::OnCall(c);
                    self.agents[i].2 = 0;
                } else {
                    self.put_back(c);
                    self.agents[i].2 += 1;
                    if self.agents[i].2 >= 3 {
                        self.agents[i].0 = St::NotReady;
                    } else {
                        self.agents[i].0 = St::Ready;
                        self.agents[i].1 = now;
                    }
                    self.match_call(c);
                    self.match_agent(i);
                }
                true
            }
            Op::Hangup(c) => match self.calls.get(c).copied() {
                None | Some(Cs::Gone) => false,
                Some(Cs::Waiting) => {
                    self.waiting.retain(|x| *x != c);
                    self.calls[c] = Cs::Gone;
                    true
                }
                Some(Cs::Reserved(i)) => {
                    self.calls[c] = Cs::Gone;
                    self.agents[i].0 = St::Ready;
                    self.match_agent(i);
                    true
                }
                Some(Cs::Answered(i)) => {
                    self.calls[c] = Cs::Gone;
                    self.agents[i].0 = St::Ready;
                    self.agents[i].1 = now;
                    self.match_agent(i);
                    true
                }
            },
        }
    }
}

fn aid(i: usize) -> AgentId {
    AgentId::parse(format!("a{i}")).unwrap()
}
fn cid(i: usize) -> CallId {
    CallId::parse(format!("c{i:04}")).unwrap()
}

fn to_cmd(op: &Op, next_call: usize) -> Command {
    match *op {
        Op::Login(i) => Command::Login {
            agent: aid(i),
            conn: ConnId::parse("k").unwrap(),
            skills: BTreeMap::new(),
        },
        Op::Ready(i) => Command::SetReady { agent: aid(i) },
        Op::NotReady(i) => Command::SetNotReady {
            agent: aid(i),
            reason: ReasonCode::parse("break").unwrap(),
        },
        Op::Logout(i) => Command::Logout { agent: aid(i) },
        Op::Enqueue => Command::Enqueue {
            entry: CallEntry::new(
                cid(next_call),
                QueueId::parse("q").unwrap(),
                NodeId::parse("n").unwrap(),
            ),
        },
        Op::Answer(c, i) => Command::Answer {
            call: cid(c),
            agent: aid(i),
        },
        Op::Reject(c, i) => Command::Reject {
            call: cid(c),
            agent: aid(i),
        },
        Op::Hangup(c) => Command::Hangup { call: cid(c) },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn core_matches_reference_model(ops in prop::collection::vec(op(), 1..80)) {
        let tenant = TenantId::parse("t").unwrap();
        let cfg = EngineConfig { presence_ttl_ms: u64::MAX / 4, node_ttl_ms: u64::MAX / 4, ..EngineConfig::default() };
        let mut core = Core::new(cfg, 7);
        let mut qc = QueueConfig::new(QueueId::parse("q").unwrap(), switchboard_state::Strategy::LongestIdle, (0..AGENTS).map(aid).collect());
        qc.ring_timeout_ms = 1_000_000;
        core.apply(&tenant, 1, &Command::ConfigureQueue { config: qc }).unwrap();
        let mut model = Model { agents: vec![(St::Out, 0, 0); AGENTS], calls: Vec::new(), waiting: VecDeque::new() };
        let mut now = 10;
        for (op, dt) in &ops {
            now += dt;
            let op = &model.resolve(op);
            let cmd = to_cmd(op, model.calls.len());
            let got = core.apply(&tenant, now, &cmd);
            let want = model.apply(op, now);
            prop_assert_eq!(got.is_ok(), want, "{:?} -> {:?}", op, got);
            let t = core.tenant(&tenant).unwrap();
            for i in 0..AGENTS {
                let v = t.agent_view(&aid(i));
                let status = v.as_ref().map_or(AgentStatus::LoggedOut, |v| v.status);
                let call = v.and_then(|v| v.call);
                let expect = match model.agents[i].0 {
                    St::Out => (AgentStatus::LoggedOut, None),
                    St::NotReady => (AgentStatus::NotReady, None),
                    St::Ready => (AgentStatus::Ready, None),
                    St::Reserved(c) => (AgentStatus::Reserved, Some(cid(c))),
                    St::OnCall(c) => (AgentStatus::OnCall, Some(cid(c))),
                };
                prop_assert_eq!((status, call), expect, "agent {} after {:?}", i, op);
            }
            for (c, cs) in model.calls.iter().enumerate() {
                let v = t.call_view(&cid(c), now);
                let got = v.map(|v| (v.status, v.agents, v.position));
                let want = match cs {
                    Cs::Gone => None,
                    Cs::Waiting => {
                        let pos = model.waiting.iter().position(|x| *x == c).map(|p| p as u64 + 1);
                        Some((CallStatus::Waiting, vec![], pos))
                    }
                    Cs::Reserved(i) => Some((CallStatus::Reserved, vec![aid(*i)], None)),
                    Cs::Answered(i) => Some((CallStatus::Answered, vec![aid(*i)], None)),
                };
                prop_assert_eq!(got, want, "call {} after {:?}", c, op);
            }
        }
        let mut core_t = core.tenant_mut(&tenant).clone();
        prop_assert!(core_t.reconcile().is_empty());
    }
}
