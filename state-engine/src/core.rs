//! The ACD as pure logic: agent state machine, queues, matching, timers and statistics, with no
//! IO, no clock and no locks (`now` is always an argument). The in-memory engine wraps it in a
//! mutex; the Redis engine's Lua script (`acd.lua`) implements the same rules on Redis data
//! structures, and the conformance suite holds the two to the same behaviour.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::StateError;
use crate::model::*;

const DAY_MS: u64 = 86_400_000;
const PRIORITY_WEIGHT: u64 = 10_000_000_000_000;

/// Sort key of a waiting call: higher priority first, then earlier enqueue time.
pub(crate) fn call_score(priority: u8, enqueued_at: u64) -> u64 {
    u64::from(255 - priority) * PRIORITY_WEIGHT + enqueued_at
}

/// Park-Miller generator: small enough for Lua's doubles, so both engines draw alike.
fn next_rand(state: &mut u64) -> u64 {
    *state = (*state * 16807) % 2_147_483_647;
    *state
}

#[derive(Clone, Debug, Default)]
struct DayStats {
    day: u64,
    queued: u64,
    answered: u64,
    abandoned: u64,
    within: u64,
    wait_sum: u64,
    handle_sum: u64,
    handle_n: u64,
}

#[derive(Clone, Debug)]
struct Member {
    tier: u32,
    pos: u64,
    dynamic: bool,
}

#[derive(Clone, Debug)]
struct Queue {
    cfg: QueueConfig,
    members: BTreeMap<AgentId, Member>,
    next_pos: u64,
    waiting: BTreeSet<(u64, CallId)>,
    ready: BTreeSet<(i64, AgentId)>,
    ready_score: HashMap<AgentId, i64>,
    staffed: u64,
    rr: HashMap<AgentId, u64>,
    rr_seq: u64,
    stats: DayStats,
}

#[derive(Clone, Debug)]
struct Agent {
    status: AgentStatus,
    reason: Option<String>,
    call: Option<CallId>,
    since: u64,
    idle_since: u64,
    wrap_until: Option<u64>,
    presence_until: u64,
    skills: BTreeMap<String, u32>,
    conn: Option<ConnId>,
    missed: u32,
    calls_handled: u64,
    talk_ms: u64,
}

#[derive(Clone, Debug)]
struct Call {
    queue: QueueId,
    priority: u8,
    skills: BTreeMap<String, u32>,
    pref: Option<AgentId>,
    node: NodeId,
    enqueued_at: u64,
    entered: u64,
    status: CallStatus,
    agents: Vec<AgentId>,
    lease_until: u64,
    answered_at: u64,
    callback: bool,
    caller: Option<String>,
}

impl Call {
    fn score(&self) -> u64 {
        call_score(self.priority, self.enqueued_at)
    }
}

/// One tenant's whole ACD state.
#[derive(Clone, Debug, Default)]
pub struct TenantState {
    queues: BTreeMap<QueueId, Queue>,
    agents: BTreeMap<AgentId, Agent>,
    agent_queues: BTreeMap<AgentId, BTreeSet<QueueId>>,
    calls: BTreeMap<CallId, Call>,
    nodes: BTreeMap<NodeId, u64>,
}

fn staffed(s: AgentStatus) -> bool {
    !matches!(s, AgentStatus::LoggedOut | AgentStatus::NotReady)
}

fn illegal(from: AgentStatus, to: &str) -> StateError {
    StateError::IllegalTransition {
        from: from.as_str().to_string(),
        to: to.to_string(),
    }
}

/// Applies commands to one tenant at a time `now`; collects the events they cause.
pub(crate) struct Tx<'a> {
    t: &'a mut TenantState,
    cfg: &'a EngineConfig,
    rng: &'a mut u64,
    now: u64,
    events: Vec<Event>,
}

impl TenantState {
    /// Apply one command atomically: on error nothing changed.
    pub fn apply(
        &mut self,
        cfg: &EngineConfig,
        rng: &mut u64,
        now: u64,
        cmd: &Command,
    ) -> CommandResult {
        let mut tx = Tx {
            t: self,
            cfg,
            rng,
            now,
            events: Vec::new(),
        };
        tx.command(cmd)?;
        Ok(tx.events)
    }

    /// An agent's view.
    pub fn agent_view(&self, agent: &AgentId) -> Option<AgentView> {
        self.agents.get(agent).map(|a| AgentView {
            agent: agent.clone(),
            status: a.status,
            reason: a.reason.clone(),
            call: a.call.clone(),
            since_ms: a.since,
            wrap_until_ms: a.wrap_until,
            presence_until_ms: a.presence_until,
            conn: a.conn.clone(),
            missed: a.missed,
            calls_handled: a.calls_handled,
            talk_ms: a.talk_ms,
        })
    }

    fn aht(&self, q: &Queue, now: u64) -> u64 {
        if q.stats.day == now / DAY_MS && q.stats.handle_n > 0 {
            q.stats.handle_sum / q.stats.handle_n
        } else {
            q.cfg.default_aht_ms
        }
    }

    fn eta(&self, q: &Queue, position: u64, now: u64) -> u64 {
        let free = q.ready.len() as u64;
        if position <= free {
            return 0;
        }
        (position - free) * self.aht(q, now) / q.staffed.max(1)
    }

    /// A call's view, with position and ETA while it waits.
    pub fn call_view(&self, call: &CallId, now: u64) -> Option<CallView> {
        let c = self.calls.get(call)?;
        let q = self.queues.get(&c.queue)?;
        let (position, eta_ms) = if c.status == CallStatus::Waiting {
            let pos = q.waiting.range(..(c.score(), call.clone())).count() as u64 + 1;
            (Some(pos), Some(self.eta(q, pos, now)))
        } else {
            (None, None)
        };
        Some(CallView {
            call: call.clone(),
            queue: c.queue.clone(),
            status: c.status,
            agents: c.agents.clone(),
            position,
            eta_ms,
            callback: c.callback,
            priority: c.priority,
            enqueued_at_ms: c.enqueued_at,
            entered_at_ms: c.entered,
            node: c.node.clone(),
            caller: c.caller.clone(),
        })
    }

    /// Live statistics of a queue.
    pub fn queue_stats(&self, queue: &QueueId, now: u64) -> Result<QueueStats, StateError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| StateError::UnknownQueue(queue.to_string()))?;
        let mut agents = AgentCounts::default();
        for id in q.members.keys() {
            let st = self
                .agents
                .get(id)
                .map_or(AgentStatus::LoggedOut, |a| a.status);
            let slot = match st {
                AgentStatus::LoggedOut => &mut agents.logged_out,
                AgentStatus::Ready => &mut agents.ready,
                AgentStatus::NotReady => &mut agents.not_ready,
                AgentStatus::Reserved => &mut agents.reserved,
                AgentStatus::OnCall => &mut agents.on_call,
                AgentStatus::WrapUp => &mut agents.wrap_up,
            };
            *slot += 1;
        }
        let longest = q
            .waiting
            .iter()
            .filter_map(|(_, id)| self.calls.get(id))
            .map(|c| now.saturating_sub(c.entered))
            .max()
            .unwrap_or(0);
        let s = if q.stats.day == now / DAY_MS {
            q.stats.clone()
        } else {
            DayStats::default()
        };
        Ok(QueueStats {
            queue: queue.clone(),
            waiting: q.waiting.len() as u64,
            longest_wait_ms: longest,
            agents,
            queued: s.queued,
            answered: s.answered,
            abandoned: s.abandoned,
            left_within_sl: s.within,
            service_level: (s.queued > 0).then(|| s.within as f64 / s.queued as f64),
            asa_ms: (s.answered > 0).then(|| s.wait_sum / s.answered),
            abandon_rate: (s.queued > 0).then(|| s.abandoned as f64 / s.queued as f64),
            aht_ms: self.aht(q, now),
        })
    }

    /// Check the cross-references between agents and calls and repair what is inconsistent.
    /// The in-memory engine keeps them consistent by construction, so this normally finds nothing.
    pub fn reconcile(&mut self) -> Vec<Fix> {
        let mut fixes = Vec::new();
        let agent_ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in agent_ids {
            let Some(a) = self.agents.get(&id) else {
                continue;
            };
            let call = a.call.as_ref().and_then(|c| self.calls.get(c));
            let (bad, kind) = match a.status {
                AgentStatus::Reserved => (
                    !call.is_some_and(|c| {
                        c.status == CallStatus::Reserved && c.agents.contains(&id)
                    }),
                    "stuck_reserved_agent",
                ),
                AgentStatus::OnCall => (
                    !call.is_some_and(|c| {
                        c.status == CallStatus::Answered && c.agents.contains(&id)
                    }),
                    "stuck_on_call_agent",
                ),
                _ => (false, ""),
            };
            if bad && let Some(a) = self.agents.get_mut(&id) {
                a.status = AgentStatus::NotReady;
                a.reason = Some("reconciled".into());
                a.call = None;
                fixes.push(Fix {
                    kind: kind.into(),
                    subject: id.to_string(),
                });
            }
        }
        let call_ids: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in call_ids {
            let Some(c) = self.calls.get(&id) else {
                continue;
            };
            let holds = |a: &AgentId, st: AgentStatus| {
                self.agents
                    .get(a)
                    .is_some_and(|x| x.status == st && x.call.as_ref() == Some(&id))
            };
            match c.status {
                CallStatus::Answered if !c.agents.iter().any(|a| holds(a, AgentStatus::OnCall)) => {
                    let queue = c.queue.clone();
                    self.calls.remove(&id);
                    if let Some(q) = self.queues.get_mut(&queue) {
                        q.waiting.retain(|(_, c)| c != &id);
                    }
                    fixes.push(Fix {
                        kind: "answered_ghost".into(),
                        subject: id.to_string(),
                    });
                }
                CallStatus::Reserved
                    if !c.agents.iter().all(|a| holds(a, AgentStatus::Reserved)) =>
                {
                    let keep: Vec<AgentId> = c
                        .agents
                        .iter()
                        .filter(|a| holds(a, AgentStatus::Reserved))
                        .cloned()
                        .collect();
                    let score = c.score();
                    let queue = c.queue.clone();
                    if let Some(c) = self.calls.get_mut(&id) {
                        if keep.is_empty() {
                            c.status = CallStatus::Waiting;
                            if let Some(q) = self.queues.get_mut(&queue) {
                                q.waiting.insert((score, id.clone()));
                            }
                        }
                        c.agents = keep;
                    }
                    fixes.push(Fix {
                        kind: "orphan_reservation".into(),
                        subject: id.to_string(),
                    });
                }
                CallStatus::Waiting => {
                    let key = (c.score(), id.clone());
                    if let Some(q) = self.queues.get_mut(&c.queue)
                        && !q.waiting.contains(&key)
                    {
                        q.waiting.insert(key);
                        fixes.push(Fix {
                            kind: "lost_waiting_entry".into(),
                            subject: id.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
        fixes
    }

    #[cfg(test)]
    pub(crate) fn corrupt_drop_call(&mut self, call: &CallId) {
        self.calls.remove(call);
    }
}

impl Tx<'_> {
    fn emit(&mut self, kind: EventKind) {
        self.events.push(Event {
            id: String::new(),
            at_ms: self.now,
            kind,
        });
    }

    fn agent(&self, id: &AgentId) -> Result<&Agent, StateError> {
        self.t
            .agents
            .get(id)
            .ok_or_else(|| StateError::UnknownAgent(id.to_string()))
    }

    fn queue_mut(&mut self, id: &QueueId) -> Result<&mut Queue, StateError> {
        self.t
            .queues
            .get_mut(id)
            .ok_or_else(|| StateError::UnknownQueue(id.to_string()))
    }

    fn stats(&mut self, queue: &QueueId) -> Option<&mut DayStats> {
        let day = self.now / DAY_MS;
        let q = self.t.queues.get_mut(queue)?;
        if q.stats.day != day {
            q.stats = DayStats {
                day,
                ..DayStats::default()
            };
        }
        Some(&mut q.stats)
    }

    fn ready_score(q: &Queue, m: &Member, id: &AgentId, a: &Agent) -> i64 {
        match q.cfg.strategy {
            Strategy::LongestIdle => a.idle_since as i64,
            Strategy::RoundRobin => q.rr.get(id).copied().unwrap_or(0) as i64,
            Strategy::RingAll => 0,
            Strategy::Random => 0,
            Strategy::FewestCalls => a.calls_handled as i64,
            Strategy::LeastTalkTime => a.talk_ms as i64,
            Strategy::Linear => m.pos as i64,
            Strategy::HighestSkill => {
                let lvl = q
                    .cfg
                    .rank_skill
                    .as_ref()
                    .and_then(|s| a.skills.get(s))
                    .copied()
                    .unwrap_or(0);
                -i64::from(lvl)
            }
        }
    }

    fn add_ready(&mut self, qid: &QueueId, id: &AgentId) {
        let Some(a) = self.t.agents.get(id) else {
            return;
        };
        if a.status != AgentStatus::Ready {
            return;
        }
        let Some(q) = self.t.queues.get_mut(qid) else {
            return;
        };
        let Some(m) = q.members.get(id) else { return };
        let score = Self::ready_score(q, m, id, a);
        if let Some(old) = q.ready_score.insert(id.clone(), score) {
            q.ready.remove(&(old, id.clone()));
        }
        q.ready.insert((score, id.clone()));
    }

    fn remove_ready(q: &mut Queue, id: &AgentId) {
        if let Some(old) = q.ready_score.remove(id) {
            q.ready.remove(&(old, id.clone()));
        }
    }

    /// Change an agent's status, keeping ready sets and staffed counts in step, and emit it.
    fn set_status(
        &mut self,
        id: &AgentId,
        to: AgentStatus,
        reason: Option<String>,
        call: Option<CallId>,
    ) {
        let now = self.now;
        // borrowed out and put back below: no allocation on this hot path
        let queues = self
            .t
            .agent_queues
            .get_mut(id)
            .map(std::mem::take)
            .unwrap_or_default();
        let Some(a) = self.t.agents.get_mut(id) else {
            if let Some(s) = self.t.agent_queues.get_mut(id) {
                *s = queues;
            }
            return;
        };
        let from = a.status;
        a.status = to;
        a.reason = reason.clone();
        a.call = call.clone();
        a.since = now;
        if to != AgentStatus::WrapUp {
            a.wrap_until = None;
        }
        let delta = i64::from(staffed(to)) - i64::from(staffed(from));
        for qid in &queues {
            if let Some(q) = self.t.queues.get_mut(qid) {
                if from == AgentStatus::Ready {
                    Self::remove_ready(q, id);
                }
                q.staffed = q.staffed.saturating_add_signed(delta);
            }
            if to == AgentStatus::Ready {
                self.add_ready(qid, id);
            }
        }
        if let Some(s) = self.t.agent_queues.get_mut(id) {
            *s = queues;
        }
        self.emit(EventKind::AgentState {
            agent: id.clone(),
            from,
            to,
            reason,
            call,
        });
    }

    fn allowed_tier(q: &QueueConfig, c: &Call, now: u64) -> u64 {
        now.saturating_sub(c.entered)
            .checked_div(q.tier_wait_ms)
            .unwrap_or(u64::MAX)
    }

    fn eligible(&self, q: &Queue, c: &Call, id: &AgentId, a: &Agent) -> bool {
        let Some(m) = q.members.get(id) else {
            return false;
        };
        if u64::from(m.tier) > Self::allowed_tier(&q.cfg, c, self.now) {
            return false;
        }
        if let Some(p) = &c.pref
            && p != id
            && self.now < c.entered + q.cfg.sticky_ms
            && self
                .t
                .agents
                .get(p)
                .is_some_and(|x| x.status != AgentStatus::LoggedOut)
        {
            return false;
        }
        c.skills
            .iter()
            .all(|(s, min)| a.skills.get(s).is_some_and(|l| l >= min))
    }

    /// Offer a waiting call to the best eligible ready agent(s) of its queue.
    fn match_call(&mut self, call: &CallId) {
        let Some(c) = self.t.calls.get(call) else {
            return;
        };
        if c.status != CallStatus::Waiting {
            return;
        }
        let Some(q) = self.t.queues.get(&c.queue) else {
            return;
        };
        let ring_all = q.cfg.strategy == Strategy::RingAll;
        // random picks uniformly among all eligible ready agents at match time
        let collect_all = ring_all || q.cfg.strategy == Strategy::Random;
        let mut chosen = Vec::new();
        for (_, id) in q.ready.iter().take(self.cfg.scan_limit as usize) {
            if let Some(a) = self.t.agents.get(id)
                && self.eligible(q, c, id, a)
            {
                chosen.push(id.clone());
                if !collect_all {
                    break;
                }
            }
        }
        if !ring_all && chosen.len() > 1 {
            let i = (next_rand(self.rng) % chosen.len() as u64) as usize;
            chosen = vec![chosen.swap_remove(i)];
        }
        if !chosen.is_empty() {
            self.reserve(call, chosen);
        }
    }

    fn reserve(&mut self, call: &CallId, agents: Vec<AgentId>) {
        let now = self.now;
        let Some(c) = self.t.calls.get_mut(call) else {
            return;
        };
        let score = c.score();
        let qid = c.queue.clone();
        let callback = c.callback;
        c.status = CallStatus::Reserved;
        c.agents = agents.clone();
        let Some(q) = self.t.queues.get_mut(&qid) else {
            return;
        };
        let lease_until = now + q.cfg.ring_timeout_ms;
        c.lease_until = lease_until;
        q.waiting.remove(&(score, call.clone()));
        if q.cfg.strategy == Strategy::RoundRobin {
            for a in &agents {
                q.rr_seq += 1;
                q.rr.insert(a.clone(), q.rr_seq);
            }
        }
        for a in &agents {
            self.set_status(a, AgentStatus::Reserved, None, Some(call.clone()));
            self.emit(EventKind::CallOffered {
                call: call.clone(),
                agent: a.clone(),
                queue: qid.clone(),
                lease_until_ms: lease_until,
                callback,
            });
        }
    }

    /// Find the best waiting call this (ready) agent may take, and match it.
    fn match_agent(&mut self, id: &AgentId) {
        let Some(a) = self.t.agents.get(id) else {
            return;
        };
        if a.status != AgentStatus::Ready {
            return;
        }
        let mut best: Option<(u64, CallId)> = None;
        for qid in self.t.agent_queues.get(id).into_iter().flatten() {
            let Some(q) = self.t.queues.get(qid) else {
                continue;
            };
            for (score, cid) in q.waiting.iter().take(self.cfg.scan_limit as usize) {
                if best
                    .as_ref()
                    .is_some_and(|b| b.0 < *score || (b.0 == *score && b.1 <= *cid))
                {
                    break;
                }
                if let Some(c) = self.t.calls.get(cid)
                    && self.eligible(q, c, id, a)
                {
                    best = Some((*score, cid.clone()));
                    break;
                }
            }
        }
        if let Some((_, cid)) = best {
            self.match_call(&cid);
        }
    }

    fn match_all(&mut self) {
        let qids: Vec<QueueId> = self.t.queues.keys().cloned().collect();
        for qid in qids {
            let Some(q) = self.t.queues.get(&qid) else {
                continue;
            };
            if q.ready.is_empty() {
                continue;
            }
            let calls: Vec<CallId> = q
                .waiting
                .iter()
                .take(self.cfg.scan_limit as usize)
                .map(|(_, c)| c.clone())
                .collect();
            for c in calls {
                self.match_call(&c);
            }
        }
    }

    fn position(&self, c: &Call, call: &CallId) -> u64 {
        let Some(q) = self.t.queues.get(&c.queue) else {
            return 0;
        };
        let key = (c.score(), call.clone());
        let behind = q.waiting.range(key..).count() as u64;
        q.waiting.len() as u64 - behind + 1
    }

    /// Put a (new, returning or moved) call into its queue's line and announce its position.
    fn insert_waiting(&mut self, call: &CallId) {
        let Some(c) = self.t.calls.get_mut(call) else {
            return;
        };
        c.status = CallStatus::Waiting;
        c.agents.clear();
        let key = (c.score(), call.clone());
        let qid = c.queue.clone();
        let Some(q) = self.t.queues.get_mut(&qid) else {
            return;
        };
        q.waiting.insert(key);
        let Some(c) = self.t.calls.get(call) else {
            return;
        };
        let position = self.position(c, call);
        let eta_ms = match self.t.queues.get(&qid) {
            Some(q) => self.t.eta(q, position, self.now),
            None => 0,
        };
        self.emit(EventKind::CallQueued {
            call: call.clone(),
            queue: qid,
            position,
            eta_ms,
        });
    }

    /// The call leaves its queue's line; count it for the service level.
    fn left_queue(&mut self, c_queue: &QueueId, entered: u64) {
        let now = self.now;
        let Some(sl) = self.t.queues.get(c_queue).map(|q| q.cfg.service_level_ms) else {
            return;
        };
        if let Some(s) = self.stats(c_queue)
            && now.saturating_sub(entered) <= sl
        {
            s.within += 1;
        }
    }

    /// Withdraw an offer from one agent; if nobody else rings, the call returns to its place.
    /// Returns whether the call went back in line.
    fn release_offer(&mut self, call: &CallId, agent: &AgentId, reason: &str) -> bool {
        let Some(c) = self.t.calls.get_mut(call) else {
            return false;
        };
        c.agents.retain(|a| a != agent);
        let empty = c.agents.is_empty();
        self.emit(EventKind::OfferReleased {
            call: call.clone(),
            agent: agent.clone(),
            reason: reason.into(),
        });
        if empty {
            self.insert_waiting(call);
        }
        empty
    }

    /// A ring-no-answer (or decline) by `agent`: count it and set the agent ready or not ready.
    fn missed(&mut self, agent: &AgentId) {
        let limit = self.cfg.missed_limit;
        let now = self.now;
        let Some(a) = self.t.agents.get_mut(agent) else {
            return;
        };
        a.missed += 1;
        if a.missed >= limit {
            self.set_status(
                agent,
                AgentStatus::NotReady,
                Some(MISSED_CALLS_REASON.into()),
                None,
            );
        } else {
            a.idle_since = now;
            self.set_status(agent, AgentStatus::Ready, None, None);
        }
    }

    fn command(&mut self, cmd: &Command) -> Result<(), StateError> {
        let now = self.now;
        match cmd {
            Command::ConfigureQueue { config } => self.configure_queue(config),
            Command::Login {
                agent,
                conn,
                skills,
            } => {
                let ttl = self.cfg.presence_ttl_ms;
                let a = self.t.agents.entry(agent.clone()).or_insert_with(|| Agent {
                    status: AgentStatus::LoggedOut,
                    reason: None,
                    call: None,
                    since: now,
                    idle_since: now,
                    wrap_until: None,
                    presence_until: 0,
                    skills: BTreeMap::new(),
                    conn: None,
                    missed: 0,
                    calls_handled: 0,
                    talk_ms: 0,
                });
                a.presence_until = now + ttl;
                a.skills = skills.clone();
                // the newest session takes over; the old one's heartbeats are refused
                a.conn = Some(conn.clone());
                if a.status == AgentStatus::LoggedOut {
                    a.missed = 0;
                    self.set_status(
                        agent,
                        AgentStatus::NotReady,
                        Some(LOGIN_REASON.into()),
                        None,
                    );
                }
                Ok(())
            }
            Command::Heartbeat { agent, conn } => {
                let ttl = self.cfg.presence_ttl_ms;
                let a = self.agent(agent)?;
                if a.status == AgentStatus::LoggedOut {
                    return Err(illegal(a.status, "heartbeat"));
                }
                if a.conn.as_ref() != Some(conn) {
                    return Err(StateError::StaleConnection(agent.to_string()));
                }
                if let Some(a) = self.t.agents.get_mut(agent) {
                    a.presence_until = now + ttl;
                }
                Ok(())
            }
            Command::Logout { agent } => {
                let a = self.agent(agent)?;
                let (st, call) = (a.status, a.call.clone());
                match st {
                    AgentStatus::Ready | AgentStatus::NotReady | AgentStatus::WrapUp => {
                        self.set_status(agent, AgentStatus::LoggedOut, None, None);
                    }
                    AgentStatus::Reserved => {
                        self.set_status(agent, AgentStatus::LoggedOut, None, None);
                        if let Some(call) = call
                            && self.release_offer(&call, agent, "logout")
                        {
                            self.match_call(&call);
                        }
                    }
                    _ => return Err(illegal(st, "logged_out")),
                }
                Ok(())
            }
            Command::SetReady { agent } => {
                let st = self.agent(agent)?.status;
                if !matches!(st, AgentStatus::NotReady | AgentStatus::WrapUp) {
                    return Err(illegal(st, "ready"));
                }
                if let Some(a) = self.t.agents.get_mut(agent) {
                    a.idle_since = now;
                    if st == AgentStatus::NotReady {
                        a.missed = 0;
                    }
                }
                self.set_status(agent, AgentStatus::Ready, None, None);
                self.match_agent(agent);
                Ok(())
            }
            Command::SetNotReady { agent, reason } => {
                let st = self.agent(agent)?.status;
                if !matches!(
                    st,
                    AgentStatus::Ready | AgentStatus::NotReady | AgentStatus::WrapUp
                ) {
                    return Err(illegal(st, "not_ready"));
                }
                self.set_status(agent, AgentStatus::NotReady, Some(reason.to_string()), None);
                Ok(())
            }
            Command::ExtendWrapUp { agent, extra_ms } => {
                let a = self.agent(agent)?;
                if a.status != AgentStatus::WrapUp {
                    return Err(illegal(a.status, "wrap_up"));
                }
                let call = a.call.clone();
                if let Some(a) = self.t.agents.get_mut(agent) {
                    a.wrap_until = Some(a.wrap_until.unwrap_or(now) + extra_ms);
                }
                self.emit(EventKind::AgentState {
                    agent: agent.clone(),
                    from: AgentStatus::WrapUp,
                    to: AgentStatus::WrapUp,
                    reason: None,
                    call,
                });
                Ok(())
            }
            Command::JoinQueue { agent, queue, tier } => {
                let q = self.queue_mut(queue)?;
                q.next_pos += 1;
                let pos = 1_000_000 + q.next_pos;
                match q.members.get_mut(agent) {
                    Some(m) => m.tier = *tier,
                    None => {
                        q.members.insert(
                            agent.clone(),
                            Member {
                                tier: *tier,
                                pos,
                                dynamic: true,
                            },
                        );
                        if self.t.agents.get(agent).is_some_and(|a| staffed(a.status))
                            && let Some(q) = self.t.queues.get_mut(queue)
                        {
                            q.staffed += 1;
                        }
                    }
                }
                self.t
                    .agent_queues
                    .entry(agent.clone())
                    .or_default()
                    .insert(queue.clone());
                self.add_ready(queue, agent);
                self.emit(EventKind::MemberChanged {
                    queue: queue.clone(),
                    agent: agent.clone(),
                    tier: Some(*tier),
                });
                self.match_agent(agent);
                Ok(())
            }
            Command::LeaveQueue { agent, queue } => {
                let q = self.queue_mut(queue)?;
                if q.members.remove(agent).is_none() {
                    return Err(StateError::Invalid(format!(
                        "agent {agent} is not a member of {queue}"
                    )));
                }
                Self::remove_ready(q, agent);
                if self.t.agents.get(agent).is_some_and(|a| staffed(a.status))
                    && let Some(q) = self.t.queues.get_mut(queue)
                {
                    q.staffed = q.staffed.saturating_sub(1);
                }
                if let Some(s) = self.t.agent_queues.get_mut(agent) {
                    s.remove(queue);
                }
                self.emit(EventKind::MemberChanged {
                    queue: queue.clone(),
                    agent: agent.clone(),
                    tier: None,
                });
                Ok(())
            }
            Command::Enqueue { entry } => self.enqueue(entry),
            Command::Answer { call, agent } => {
                let c = self
                    .t
                    .calls
                    .get(call)
                    .ok_or_else(|| StateError::UnknownCall(call.to_string()))?;
                if c.status != CallStatus::Reserved || !c.agents.contains(agent) {
                    return Err(StateError::NotOffered {
                        call: call.to_string(),
                        agent: agent.to_string(),
                    });
                }
                let others: Vec<AgentId> =
                    c.agents.iter().filter(|a| *a != agent).cloned().collect();
                let (qid, entered) = (c.queue.clone(), c.entered);
                for o in &others {
                    self.release_offer(call, o, "ring_all_lost");
                    self.set_status(o, AgentStatus::Ready, None, None);
                }
                if let Some(c) = self.t.calls.get_mut(call) {
                    c.status = CallStatus::Answered;
                    c.agents = vec![agent.clone()];
                    c.answered_at = now;
                }
                if let Some(a) = self.t.agents.get_mut(agent) {
                    a.missed = 0;
                }
                self.set_status(agent, AgentStatus::OnCall, None, Some(call.clone()));
                let wait = now.saturating_sub(entered);
                if let Some(s) = self.stats(&qid) {
                    s.answered += 1;
                    s.wait_sum += wait;
                }
                self.left_queue(&qid, entered);
                self.emit(EventKind::CallAnswered {
                    call: call.clone(),
                    agent: agent.clone(),
                    queue: qid,
                    wait_ms: wait,
                });
                for o in &others {
                    self.match_agent(o);
                }
                Ok(())
            }
            Command::Reject { call, agent } => {
                let c = self
                    .t
                    .calls
                    .get(call)
                    .ok_or_else(|| StateError::UnknownCall(call.to_string()))?;
                if c.status != CallStatus::Reserved || !c.agents.contains(agent) {
                    return Err(StateError::NotOffered {
                        call: call.to_string(),
                        agent: agent.to_string(),
                    });
                }
                self.no_answer(call, std::slice::from_ref(agent), "rejected");
                Ok(())
            }
            Command::Hangup { call } => {
                if !self.t.calls.contains_key(call) {
                    return Err(StateError::UnknownCall(call.to_string()));
                }
                self.end_call(call, None);
                Ok(())
            }
            Command::NodeHeartbeat { node } => {
                let until = now + self.cfg.node_ttl_ms;
                self.t.nodes.insert(node.clone(), until);
                Ok(())
            }
            Command::Tick => {
                self.tick();
                Ok(())
            }
            Command::RecordingCompleted {
                call,
                object_key,
                size_bytes,
                sha256,
                duration_ms,
            } => {
                if object_key.is_empty() || object_key.len() > 1024 || sha256.len() != 64 {
                    return Err(StateError::Invalid(
                        "recording: object_key 1 to 1024, sha256 64 characters".into(),
                    ));
                }
                self.emit(EventKind::RecordingCompleted {
                    call: call.clone(),
                    object_key: object_key.clone(),
                    size_bytes: *size_bytes,
                    sha256: sha256.clone(),
                    duration_ms: *duration_ms,
                });
                Ok(())
            }
            Command::RecordingFailed { call, reason } => {
                if reason.len() > 500 {
                    return Err(StateError::Invalid(
                        "recording: reason over 500 bytes".into(),
                    ));
                }
                self.emit(EventKind::RecordingFailed {
                    call: call.clone(),
                    reason: reason.clone(),
                });
                Ok(())
            }
            Command::RecordingPaused {
                call,
                paused,
                by,
                offset_ms,
            } => {
                if by != "dtmf" && by != "api" {
                    return Err(StateError::Invalid(
                        "recording: by is `dtmf` or `api`".into(),
                    ));
                }
                let (call, by, offset_ms) = (call.clone(), by.clone(), *offset_ms);
                self.emit(if *paused {
                    EventKind::RecordingPaused {
                        call,
                        by,
                        offset_ms,
                    }
                } else {
                    EventKind::RecordingResumed {
                        call,
                        by,
                        offset_ms,
                    }
                });
                Ok(())
            }
        }
    }

    /// Ring-no-answer for `agents` on `call`: each is counted as missed; the call goes back to
    /// its place when nobody rings any more, and is offered again.
    fn no_answer(&mut self, call: &CallId, agents: &[AgentId], reason: &str) {
        let mut back = false;
        for a in agents {
            back |= self.release_offer(call, a, reason);
            self.missed(a);
        }
        if back {
            self.match_call(call);
        }
        for a in agents {
            self.match_agent(a);
        }
    }

    /// The call is over. `reason` none: a hangup (abandoned or completed).
    fn end_call(&mut self, call: &CallId, reason: Option<&str>) {
        let now = self.now;
        let Some(c) = self.t.calls.remove(call) else {
            return;
        };
        let qid = c.queue.clone();
        let mut freed = Vec::new();
        let why = match c.status {
            CallStatus::Waiting | CallStatus::Reserved => {
                if let Some(q) = self.t.queues.get_mut(&qid) {
                    q.waiting.remove(&(c.score(), call.clone()));
                }
                for a in &c.agents {
                    self.emit(EventKind::OfferReleased {
                        call: call.clone(),
                        agent: a.clone(),
                        reason: "call_ended".into(),
                    });
                    self.set_status(a, AgentStatus::Ready, None, None);
                    freed.push(a.clone());
                }
                if let Some(s) = self.stats(&qid) {
                    s.abandoned += 1;
                }
                self.left_queue(&qid, c.entered);
                "abandoned"
            }
            CallStatus::Answered => {
                let (wrap, sl_ok) = match self.t.queues.get(&qid) {
                    Some(q) => (q.cfg.wrap_up_ms, true),
                    None => (0, false),
                };
                let talk = now.saturating_sub(c.answered_at);
                if sl_ok && let Some(s) = self.stats(&qid) {
                    s.handle_sum += talk + wrap;
                    s.handle_n += 1;
                }
                for a in &c.agents {
                    if let Some(x) = self.t.agents.get_mut(a) {
                        if x.status != AgentStatus::OnCall || x.call.as_ref() != Some(call) {
                            continue;
                        }
                        x.talk_ms += talk;
                        x.calls_handled += 1;
                        x.idle_since = now;
                        if wrap > 0 {
                            x.wrap_until = Some(now + wrap);
                            self.set_status(a, AgentStatus::WrapUp, None, Some(call.clone()));
                            if let Some(x) = self.t.agents.get_mut(a) {
                                x.wrap_until = Some(now + wrap);
                            }
                        } else {
                            self.set_status(a, AgentStatus::Ready, None, None);
                            freed.push(a.clone());
                        }
                    }
                }
                "completed"
            }
        };
        self.emit(EventKind::CallEnded {
            call: call.clone(),
            queue: qid,
            reason: reason.unwrap_or(why).into(),
        });
        for a in &freed {
            self.match_agent(a);
        }
    }

    fn configure_queue(&mut self, cfg: &QueueConfig) -> Result<(), StateError> {
        if let Some(OverflowRule {
            target: OverflowTarget::Queue { queue },
            ..
        }) = &cfg.overflow
            && queue == &cfg.queue
        {
            return Err(StateError::Invalid("queue overflows into itself".into()));
        }
        if cfg.ring_timeout_ms == 0 {
            return Err(StateError::Invalid("ring_timeout_ms must be > 0".into()));
        }
        let qid = cfg.queue.clone();
        let q = self.t.queues.entry(qid.clone()).or_insert_with(|| Queue {
            cfg: cfg.clone(),
            members: BTreeMap::new(),
            next_pos: 0,
            waiting: BTreeSet::new(),
            ready: BTreeSet::new(),
            ready_score: HashMap::new(),
            staffed: 0,
            rr: HashMap::new(),
            rr_seq: 0,
            stats: DayStats::default(),
        });
        q.cfg = cfg.clone();
        let old: Vec<AgentId> = q
            .members
            .iter()
            .filter(|(_, m)| !m.dynamic)
            .map(|(a, _)| a.clone())
            .collect();
        for a in &old {
            q.members.remove(a);
        }
        for (i, m) in cfg.members.iter().enumerate() {
            q.members.insert(
                m.agent.clone(),
                Member {
                    tier: m.tier,
                    pos: i as u64,
                    dynamic: false,
                },
            );
        }
        let members: Vec<AgentId> = q.members.keys().cloned().collect();
        q.ready.clear();
        q.ready_score.clear();
        for a in &old {
            if !q.members.contains_key(a)
                && let Some(s) = self.t.agent_queues.get_mut(a)
            {
                s.remove(&qid);
            }
        }
        let mut staffed_n = 0;
        for a in &members {
            self.t
                .agent_queues
                .entry(a.clone())
                .or_default()
                .insert(qid.clone());
            if self.t.agents.get(a).is_some_and(|x| staffed(x.status)) {
                staffed_n += 1;
            }
            self.add_ready(&qid, a);
        }
        if let Some(q) = self.t.queues.get_mut(&qid) {
            q.staffed = staffed_n;
        }
        self.emit(EventKind::QueueConfigured { queue: qid.clone() });
        self.match_all();
        Ok(())
    }

    fn new_call(&mut self, e: &CallEntry, queue: &QueueId, callback: bool) {
        let now = self.now;
        self.t.calls.insert(
            e.call.clone(),
            Call {
                queue: queue.clone(),
                priority: e.priority,
                skills: e.skills.clone(),
                pref: e.preferred_agent.clone(),
                node: e.node.clone(),
                enqueued_at: e.enqueued_at_ms.unwrap_or(now),
                entered: now,
                status: CallStatus::Waiting,
                agents: Vec::new(),
                lease_until: 0,
                answered_at: 0,
                callback,
                caller: e.caller.clone(),
            },
        );
        if let Some(s) = self.stats(queue) {
            s.queued += 1;
        }
        self.insert_waiting(&e.call);
    }

    fn enqueue(&mut self, e: &CallEntry) -> Result<(), StateError> {
        let now = self.now;
        e.check()?;
        if self.t.calls.contains_key(&e.call) {
            return Err(StateError::DuplicateCall(e.call.to_string()));
        }
        let q = self
            .t
            .queues
            .get(&e.queue)
            .ok_or_else(|| StateError::UnknownQueue(e.queue.to_string()))?;
        let needs_anyone = q.cfg.overflow.as_ref().is_some_and(|o| o.when_no_agents);
        let anyone = !needs_anyone
            || q.members.keys().any(|a| {
                self.t
                    .agents
                    .get(a)
                    .is_some_and(|x| x.status != AgentStatus::LoggedOut)
            });
        let full = q.waiting.len() as u64 >= u64::from(q.cfg.max_len);
        let overflow = q.cfg.overflow.clone();
        let reason = match &overflow {
            Some(o) if !anyone && o.when_no_agents => Some("no_agents"),
            Some(o) if full && o.when_full => Some("full"),
            _ if full => return Err(StateError::QueueFull(e.queue.to_string())),
            _ => None,
        };
        let until = now + self.cfg.node_ttl_ms;
        let n = self.t.nodes.entry(e.node.clone()).or_insert(until);
        *n = (*n).max(until);
        match (reason, overflow) {
            (Some(reason), Some(o)) => {
                self.emit(EventKind::CallOverflowed {
                    call: e.call.clone(),
                    from_queue: e.queue.clone(),
                    target: o.target.clone(),
                    reason: reason.into(),
                });
                match &o.target {
                    OverflowTarget::Queue { queue } if self.t.queues.contains_key(queue) => {
                        self.new_call(e, queue, false);
                        self.match_call(&e.call);
                    }
                    OverflowTarget::Callback => {
                        self.new_call(e, &e.queue, true);
                        self.match_call(&e.call);
                    }
                    _ => {}
                }
            }
            _ => {
                self.new_call(e, &e.queue, false);
                self.match_call(&e.call);
            }
        }
        Ok(())
    }

    fn tick(&mut self) {
        let now = self.now;
        // 1. presence: a vanished agent is logged out; its offer goes back in line.
        let gone: Vec<AgentId> = self
            .t
            .agents
            .iter()
            .filter(|(_, a)| a.status != AgentStatus::LoggedOut && a.presence_until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            // re-read: handling an earlier agent may have offered this one a call
            let Some((st, call)) = self.t.agents.get(&id).map(|a| (a.status, a.call.clone()))
            else {
                continue;
            };
            if st == AgentStatus::LoggedOut {
                continue;
            }
            self.set_status(&id, AgentStatus::LoggedOut, None, None);
            match (st, call) {
                (AgentStatus::Reserved, Some(call))
                    if self.release_offer(&call, &id, "agent_lost") =>
                {
                    self.match_call(&call);
                }
                (AgentStatus::OnCall, Some(call)) => self.end_call(&call, Some("agent_lost")),
                _ => {}
            }
        }
        // 2. gateway nodes that stopped heartbeating take their calls with them.
        let dead: Vec<NodeId> = self
            .t
            .nodes
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in dead {
            self.t.nodes.remove(&n);
            let calls: Vec<CallId> = self
                .t
                .calls
                .iter()
                .filter(|(_, c)| c.node == n)
                .map(|(id, _)| id.clone())
                .collect();
            for c in calls {
                self.end_call(&c, Some("node_lost"));
            }
        }
        // 3. expired reservation leases: ring-no-answer, the call returns to its place.
        let expired: Vec<CallId> = self
            .t
            .calls
            .iter()
            .filter(|(_, c)| c.status == CallStatus::Reserved && c.lease_until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for call in expired {
            // re-read: an earlier expiry may have re-offered this call with a fresh lease
            let agents = match self.t.calls.get(&call) {
                Some(c) if c.status == CallStatus::Reserved && c.lease_until <= now => {
                    c.agents.clone()
                }
                _ => continue,
            };
            self.no_answer(&call, &agents, "no_answer");
        }
        // 4. wrap-up timeouts.
        let done: Vec<AgentId> = self
            .t
            .agents
            .iter()
            .filter(|(_, a)| {
                a.status == AgentStatus::WrapUp && a.wrap_until.is_some_and(|w| w <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for a in done {
            match self.t.agents.get_mut(&a) {
                Some(x) if x.status == AgentStatus::WrapUp => x.idle_since = now,
                _ => continue,
            }
            self.set_status(&a, AgentStatus::Ready, None, None);
            self.match_agent(&a);
        }
        // 5. overflow and max wait.
        let qids: Vec<QueueId> = self.t.queues.keys().cloned().collect();
        for qid in qids {
            let Some(q) = self.t.queues.get(&qid) else {
                continue;
            };
            let (after, max_wait) = (
                q.cfg
                    .overflow
                    .as_ref()
                    .and_then(|o| o.after_ms.map(|a| (a, o.target.clone()))),
                q.cfg.max_wait_ms,
            );
            let due: Vec<(CallId, u64)> = q
                .waiting
                .iter()
                .filter_map(|(_, id)| self.t.calls.get(id).map(|c| (id, c)))
                .filter(|(_, c)| !c.callback)
                .map(|(id, c)| (id.clone(), now.saturating_sub(c.entered)))
                .filter(|(_, w)| {
                    after.as_ref().is_some_and(|(a, _)| w >= a) || max_wait.is_some_and(|m| *w >= m)
                })
                .collect();
            for (call, waited) in due {
                if self
                    .t
                    .calls
                    .get(&call)
                    .is_none_or(|c| c.status != CallStatus::Waiting)
                {
                    continue;
                }
                match &after {
                    Some((a, target)) if waited >= *a => self.overflow(&call, target, "wait"),
                    _ => {
                        if let Some(c) = self.t.calls.remove(&call) {
                            if let Some(q) = self.t.queues.get_mut(&qid) {
                                q.waiting.remove(&(c.score(), call.clone()));
                            }
                            self.left_queue(&qid, c.entered);
                            self.emit(EventKind::CallEnded {
                                call,
                                queue: qid.clone(),
                                reason: "max_wait".into(),
                            });
                        }
                    }
                }
            }
        }
        // 6. tiers widen and sticky windows close with time: try every queue again.
        self.match_all();
    }

    fn overflow(&mut self, call: &CallId, target: &OverflowTarget, reason: &str) {
        let now = self.now;
        let Some(c) = self.t.calls.get(call) else {
            return;
        };
        let (from, entered, key) = (c.queue.clone(), c.entered, (c.score(), call.clone()));
        self.emit(EventKind::CallOverflowed {
            call: call.clone(),
            from_queue: from.clone(),
            target: target.clone(),
            reason: reason.into(),
        });
        match target {
            OverflowTarget::Callback => {
                if let Some(c) = self.t.calls.get_mut(call) {
                    c.callback = true;
                }
            }
            OverflowTarget::Queue { queue } if self.t.queues.contains_key(queue) => {
                if let Some(q) = self.t.queues.get_mut(&from) {
                    q.waiting.remove(&key);
                }
                self.left_queue(&from, entered);
                if let Some(c) = self.t.calls.get_mut(call) {
                    c.queue = queue.clone();
                    c.entered = now;
                }
                if let Some(s) = self.stats(queue) {
                    s.queued += 1;
                }
                self.insert_waiting(call);
                self.match_call(call);
            }
            _ => {
                if let Some(q) = self.t.queues.get_mut(&from) {
                    q.waiting.remove(&key);
                }
                self.left_queue(&from, entered);
                self.t.calls.remove(call);
            }
        }
    }
}

/// All tenants' state plus the shared random generator: the whole in-memory engine, without
/// the event plumbing.
#[derive(Debug)]
pub struct Core {
    cfg: EngineConfig,
    rng: u64,
    tenants: HashMap<TenantId, TenantState>,
}

impl Core {
    /// An empty engine.
    pub fn new(cfg: EngineConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: seed % 2_147_483_646 + 1,
            tenants: HashMap::new(),
        }
    }

    /// Apply one command to a tenant.
    pub fn apply(&mut self, tenant: &TenantId, now: u64, cmd: &Command) -> CommandResult {
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.clone(), TenantState::default());
        }
        let Some(t) = self.tenants.get_mut(tenant) else {
            return Err(StateError::Backend("tenant vanished".into()));
        };
        t.apply(&self.cfg, &mut self.rng, now, cmd)
    }

    /// A tenant's state, if it exists.
    pub fn tenant(&self, tenant: &TenantId) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    /// A tenant's state, mutable.
    pub fn tenant_mut(&mut self, tenant: &TenantId) -> &mut TenantState {
        self.tenants.entry(tenant.clone()).or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn id<T>(f: fn(String) -> Result<T, StateError>, s: &str) -> T {
        f(s.to_string()).unwrap()
    }

    /// The in-memory engine cannot get inconsistent through its API, so corrupt it by hand and
    /// check that reconciliation repairs what the Redis engine's reconciliation repairs.
    #[test]
    fn reconcile_repairs_a_lost_call() {
        let t = id(TenantId::parse, "t");
        let mut core = Core::new(EngineConfig::default(), 1);
        let q = id(QueueId::parse, "q");
        let agents = vec![id(AgentId::parse, "a1"), id(AgentId::parse, "a2")];
        let cfg = QueueConfig::new(q.clone(), Strategy::LongestIdle, agents.clone());
        core.apply(&t, 1, &Command::ConfigureQueue { config: cfg })
            .unwrap();
        for a in &agents {
            let login = Command::Login {
                agent: a.clone(),
                conn: id(ConnId::parse, "k"),
                skills: BTreeMap::new(),
            };
            core.apply(&t, 1, &login).unwrap();
            core.apply(&t, 1, &Command::SetReady { agent: a.clone() })
                .unwrap();
        }
        let node = id(NodeId::parse, "n");
        for c in ["c1", "c2"] {
            let entry = CallEntry::new(id(CallId::parse, c), q.clone(), node.clone());
            core.apply(&t, 2, &Command::Enqueue { entry }).unwrap();
        }
        let c2 = id(CallId::parse, "c2");
        let holder = core.tenant(&t).unwrap().call_view(&c2, 2).unwrap().agents[0].clone();
        core.apply(
            &t,
            3,
            &Command::Answer {
                call: c2.clone(),
                agent: holder,
            },
        )
        .unwrap();
        assert!(core.tenant_mut(&t).reconcile().is_empty());
        core.tenant_mut(&t)
            .corrupt_drop_call(&id(CallId::parse, "c1"));
        core.tenant_mut(&t).corrupt_drop_call(&c2);
        let fixes = core.tenant_mut(&t).reconcile();
        let mut kinds: Vec<&str> = fixes.iter().map(|f| f.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, vec!["stuck_on_call_agent", "stuck_reserved_agent"]);
        assert!(core.tenant_mut(&t).reconcile().is_empty());
    }
}
