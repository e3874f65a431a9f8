//! The in-memory engine for `switchboard up` and tests: the pure [`crate::core::Core`] behind a
//! mutex, plus per-tenant event plumbing (a bounded ring buffer for `events_since` and a tokio
//! broadcast channel for `subscribe`) carrying the same event types as the Redis stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

use crate::StateEngine;
use crate::core::Core;
use crate::error::StateError;
use crate::model::*;

struct Log {
    next: u64,
    ring: VecDeque<Event>,
    tx: broadcast::Sender<Event>,
}

struct Inner {
    core: Core,
    logs: HashMap<TenantId, Log>,
    maxlen: usize,
    /// The location service: (binding, expires at) per agent.
    contacts: HashMap<(TenantId, AgentId), (String, u64)>,
    /// The cluster's node registry.
    nodes: std::collections::BTreeMap<NodeId, NodeInfo>,
}

/// The in-memory engine. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryEngine {
    inner: Arc<Mutex<Inner>>,
    bus: crate::MemoryBus,
}

impl MemoryEngine {
    /// A new, empty engine.
    pub fn new(cfg: EngineConfig) -> Self {
        let seed = rand::random::<u32>() as u64;
        let maxlen = cfg.event_maxlen.max(1) as usize;
        Self {
            inner: Arc::new(Mutex::new(Inner {
                core: Core::new(cfg, seed),
                logs: HashMap::new(),
                maxlen,
                contacts: HashMap::new(),
                nodes: Default::default(),
            })),
            bus: crate::MemoryBus::default(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StateError> {
        self.inner
            .lock()
            .map_err(|_| StateError::Backend("memory engine lock poisoned".into()))
    }

    /// Run `f` on the pure core (tests and the simulation use this to reach it directly).
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> Result<R, StateError> {
        Ok(f(&mut self.lock()?.core))
    }
}

fn parse_seq(id: &str) -> u64 {
    id.split('-')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Inner {
    fn log(&mut self, tenant: &TenantId) -> &mut Log {
        self.logs.entry(tenant.clone()).or_insert_with(|| Log {
            next: 1,
            ring: VecDeque::new(),
            tx: broadcast::channel(4096).0,
        })
    }

    fn publish(&mut self, tenant: &TenantId, events: &mut [Event]) {
        let maxlen = self.maxlen;
        let log = self.log(tenant);
        for e in events.iter_mut() {
            e.id = format!("0-{}", log.next);
            log.next += 1;
            if log.ring.len() >= maxlen {
                log.ring.pop_front();
            }
            log.ring.push_back(e.clone());
            if log.tx.receiver_count() > 0 {
                let _ = log.tx.send(e.clone());
            }
        }
    }
}

#[async_trait]
impl StateEngine for MemoryEngine {
    async fn exec(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        cmds: Vec<Command>,
    ) -> Result<Vec<CommandResult>, StateError> {
        let mut g = self.lock()?;
        let mut out = Vec::with_capacity(cmds.len());
        for cmd in &cmds {
            let mut r = g.core.apply(tenant, now_ms, cmd);
            if let Ok(events) = &mut r {
                g.publish(tenant, events);
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn agent(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
    ) -> Result<Option<AgentView>, StateError> {
        Ok(self
            .lock()?
            .core
            .tenant(tenant)
            .and_then(|t| t.agent_view(agent)))
    }

    async fn call(
        &self,
        tenant: &TenantId,
        call: &CallId,
        now_ms: u64,
    ) -> Result<Option<CallView>, StateError> {
        Ok(self
            .lock()?
            .core
            .tenant(tenant)
            .and_then(|t| t.call_view(call, now_ms)))
    }

    async fn queue_stats(
        &self,
        tenant: &TenantId,
        queue: &QueueId,
        now_ms: u64,
    ) -> Result<QueueStats, StateError> {
        match self.lock()?.core.tenant(tenant) {
            Some(t) => t.queue_stats(queue, now_ms),
            None => Err(StateError::UnknownQueue(queue.to_string())),
        }
    }

    async fn reconcile(&self, tenant: &TenantId, _now_ms: u64) -> Result<Vec<Fix>, StateError> {
        Ok(self.lock()?.core.tenant_mut(tenant).reconcile())
    }

    async fn events_since(
        &self,
        tenant: &TenantId,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, StateError> {
        let after = after_id.map(parse_seq).unwrap_or(0);
        let mut g = self.lock()?;
        let log = g.log(tenant);
        Ok(log
            .ring
            .iter()
            .filter(|e| parse_seq(&e.id) > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn subscribe(
        &self,
        tenant: &TenantId,
        after_id: Option<String>,
    ) -> Result<mpsc::Receiver<Event>, StateError> {
        let (backlog, mut rx) = {
            let mut g = self.lock()?;
            let log = g.log(tenant);
            let rx = log.tx.subscribe();
            let backlog: Vec<Event> = match &after_id {
                Some(a) => {
                    let after = parse_seq(a);
                    log.ring
                        .iter()
                        .filter(|e| parse_seq(&e.id) > after)
                        .cloned()
                        .collect()
                }
                None => Vec::new(),
            };
            (backlog, rx)
        };
        let (tx, out) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut last = 0;
            for e in backlog {
                last = parse_seq(&e.id);
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        if parse_seq(&e.id) <= last {
                            continue;
                        }
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "memory event subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(out)
    }

    fn control_bus(&self) -> Arc<dyn crate::ControlBus> {
        Arc::new(self.bus.clone())
    }

    async fn epoch(&self, _tenant: &TenantId) -> Result<String, StateError> {
        Ok("memory".into())
    }

    async fn set_contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        binding: &str,
        expires_at_ms: u64,
    ) -> Result<(), StateError> {
        crate::check_contact(binding)?;
        self.lock()?.contacts.insert(
            (tenant.clone(), agent.clone()),
            (binding.to_owned(), expires_at_ms),
        );
        Ok(())
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        now_ms: u64,
    ) -> Result<Option<String>, StateError> {
        let mut inner = self.lock()?;
        let key = (tenant.clone(), agent.clone());
        match inner.contacts.get(&key) {
            Some((b, exp)) if *exp > now_ms => Ok(Some(b.clone())),
            Some(_) => {
                inner.contacts.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn clear_contact(&self, tenant: &TenantId, agent: &AgentId) -> Result<(), StateError> {
        self.lock()?
            .contacts
            .remove(&(tenant.clone(), agent.clone()));
        Ok(())
    }

    async fn put_node(&self, info: &NodeInfo) -> Result<(), StateError> {
        info.check()?;
        let mut inner = self.lock()?;
        if !inner.nodes.contains_key(&info.node) && inner.nodes.len() >= MAX_NODES {
            return Err(StateError::Invalid("node registry full".into()));
        }
        inner.nodes.insert(info.node.clone(), info.clone());
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>, StateError> {
        let mut inner = self.lock()?;
        inner
            .nodes
            .retain(|_, n| n.expires_at_ms.saturating_add(crate::NODE_FORGET_MS) > now_ms);
        Ok(inner
            .nodes
            .values()
            .filter(|n| n.expires_at_ms > now_ms)
            .cloned()
            .collect())
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), StateError> {
        self.lock()?.nodes.remove(node);
        Ok(())
    }
}
