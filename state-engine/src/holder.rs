//! Re-assertion after a Redis restart. Redis is not the source of truth for what a process
//! physically holds: a gateway holds its calls, an agent's connection holds its presence. Each
//! process keeps a [`Holder`] registry of those, and a watcher compares the tenant's epoch
//! (a sentinel key that vanishes when Redis restarts empty) with the one it saw last; when it
//! changed, the holder replays queue configuration, logins, readiness and waiting calls (with
//! their original enqueue time, so they keep their place).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::StateEngine;
use crate::error::StateError;
use crate::model::*;

#[derive(Clone, Debug)]
struct HeldAgent {
    conn: ConnId,
    skills: BTreeMap<String, u32>,
    ready: bool,
    queues: Vec<(QueueId, u32)>,
}

#[derive(Default)]
struct Held {
    queues: BTreeMap<QueueId, QueueConfig>,
    agents: BTreeMap<AgentId, HeldAgent>,
    calls: BTreeMap<CallId, CallEntry>,
    nodes: Vec<NodeId>,
}

/// What this process holds, per tenant, and the epochs it last saw.
pub struct Holder {
    engine: Arc<dyn StateEngine>,
    held: Mutex<HashMap<TenantId, Held>>,
    epochs: Mutex<HashMap<TenantId, String>>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Holder")
    }
}

impl Holder {
    /// An empty registry over `engine`.
    pub fn new(engine: Arc<dyn StateEngine>) -> Self {
        Self {
            engine,
            held: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, tenant: &TenantId, f: impl FnOnce(&mut Held) -> R) -> R {
        let mut g = self.held.lock().unwrap_or_else(|e| e.into_inner());
        f(g.entry(tenant.clone()).or_default())
    }

    /// Remember a queue configuration (normally loaded from PostgreSQL).
    pub fn hold_queue(&self, tenant: &TenantId, cfg: QueueConfig) {
        self.with(tenant, |h| h.queues.insert(cfg.queue.clone(), cfg));
    }

    /// Remember a connected agent.
    pub fn hold_agent(
        &self,
        tenant: &TenantId,
        agent: AgentId,
        conn: ConnId,
        skills: BTreeMap<String, u32>,
    ) {
        self.with(tenant, |h| {
            h.agents.insert(
                agent,
                HeldAgent {
                    conn,
                    skills,
                    ready: false,
                    queues: Vec::new(),
                },
            )
        });
    }

    /// Remember whether a connected agent wants to be ready.
    pub fn set_agent_ready(&self, tenant: &TenantId, agent: &AgentId, ready: bool) {
        self.with(tenant, |h| {
            if let Some(a) = h.agents.get_mut(agent) {
                a.ready = ready;
            }
        });
    }

    /// Remember a dynamic queue membership of a connected agent.
    pub fn hold_membership(&self, tenant: &TenantId, agent: &AgentId, queue: QueueId, tier: u32) {
        self.with(tenant, |h| {
            if let Some(a) = h.agents.get_mut(agent) {
                a.queues.retain(|(q, _)| q != &queue);
                a.queues.push((queue, tier));
            }
        });
    }

    /// Forget an agent (disconnected).
    pub fn release_agent(&self, tenant: &TenantId, agent: &AgentId) {
        self.with(tenant, |h| h.agents.remove(agent));
    }

    /// Remember a waiting call this gateway holds. `enqueued_at_ms` must be set (the original
    /// enqueue time) so re-assertion puts it back in its place.
    pub fn hold_call(&self, tenant: &TenantId, entry: CallEntry) {
        self.with(tenant, |h| {
            if !h.nodes.contains(&entry.node) {
                h.nodes.push(entry.node.clone());
            }
            h.calls.insert(entry.call.clone(), entry)
        });
    }

    /// Forget a call (answered elsewhere, ended).
    pub fn release_call(&self, tenant: &TenantId, call: &CallId) {
        self.with(tenant, |h| h.calls.remove(call));
    }

    /// Replay everything held for `tenant`. Commands that find their state already present
    /// (duplicate call, already ready) are refused harmlessly.
    pub async fn reassert(&self, tenant: &TenantId, now_ms: u64) -> Result<usize, StateError> {
        let cmds = self.with(tenant, |h| {
            let mut cmds = Vec::new();
            for n in &h.nodes {
                cmds.push(Command::NodeHeartbeat { node: n.clone() });
            }
            for cfg in h.queues.values() {
                cmds.push(Command::ConfigureQueue {
                    config: cfg.clone(),
                });
            }
            for (id, a) in &h.agents {
                cmds.push(Command::Login {
                    agent: id.clone(),
                    conn: a.conn.clone(),
                    skills: a.skills.clone(),
                });
                for (q, tier) in &a.queues {
                    cmds.push(Command::JoinQueue {
                        agent: id.clone(),
                        queue: q.clone(),
                        tier: *tier,
                    });
                }
            }
            for e in h.calls.values() {
                cmds.push(Command::Enqueue { entry: e.clone() });
            }
            for (id, a) in &h.agents {
                if a.ready {
                    cmds.push(Command::SetReady { agent: id.clone() });
                }
            }
            cmds
        });
        let n = cmds.len();
        for chunk in cmds.chunks(256) {
            self.engine.exec(tenant, now_ms, chunk.to_vec()).await?;
        }
        Ok(n)
    }

    /// Compare every held tenant's epoch with the last one seen; re-assert where it changed (or
    /// was never seen). Returns the tenants re-asserted.
    pub async fn check(&self, now_ms: u64) -> Result<Vec<TenantId>, StateError> {
        let tenants: Vec<TenantId> = {
            let g = self.held.lock().unwrap_or_else(|e| e.into_inner());
            g.keys().cloned().collect()
        };
        let mut done = Vec::new();
        for t in tenants {
            let epoch = self.engine.epoch(&t).await?;
            let seen = {
                let g = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
                g.get(&t).cloned()
            };
            if seen.as_deref() != Some(epoch.as_str()) {
                self.reassert(&t, now_ms).await?;
                tracing::info!(tenant = %t, "state re-asserted");
                self.epochs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(t.clone(), epoch);
                done.push(t);
            }
        }
        Ok(done)
    }

    /// Run [`Holder::check`] every `period` forever (errors are logged and retried), with
    /// `clock` giving `now_ms`.
    pub fn spawn_watcher(
        self: Arc<Self>,
        period: Duration,
        clock: fn() -> u64,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                if let Err(e) = self.check(clock()).await {
                    tracing::warn!(error = %e, "epoch check failed");
                }
            }
        })
    }
}

/// Wall-clock milliseconds since the Unix epoch (a `clock` for production use).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
