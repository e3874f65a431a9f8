//! Seat and queue state engine with ACD routing.
//!
//! One trait, [`StateEngine`], with two implementations that pass the same conformance suite:
//! [`RedisEngine`] (production: every multi-key change is one Lua script on tenant-hash-tagged
//! keys) and [`MemoryEngine`] (the single-process embedded mode and unit tests: the pure
//! [`core`] logic behind a mutex). Time is always passed in (`now_ms`), so both engines run in
//! simulated time in tests. See the crate's README for the model, key layout and invariants.

#![forbid(unsafe_code)]

pub mod control;
pub mod core;
pub mod error;
pub mod holder;
pub mod memory;
pub mod model;
pub mod redis_engine;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use control::{ControlAction, ControlBus, ControlReply, ControlRequest, MemoryBus, RedisBus};
pub use error::StateError;
pub use holder::Holder;
pub use memory::MemoryEngine;
pub use model::*;
pub use redis_engine::RedisEngine;

/// Longest contact binding the location service stores.
pub const MAX_CONTACT_LEN: usize = 1024;

/// A node entry expired this long ago is deleted from the registry (until then it is only
/// left out of the live list).
pub const NODE_FORGET_MS: u64 = 3_600_000;

/// Refuses a binding over [`MAX_CONTACT_LEN`].
pub(crate) fn check_contact(binding: &str) -> Result<(), StateError> {
    if binding.len() > MAX_CONTACT_LEN {
        return Err(StateError::InvalidId {
            kind: "contact".into(),
            value: binding.chars().take(80).collect(),
        });
    }
    Ok(())
}

/// The state engine as the api and the media gateway see it. Usable as `Arc<dyn StateEngine>`.
///
/// Every change goes through [`StateEngine::exec`]: a batch of commands for one tenant, each
/// applied atomically and in order, each answered with its events or its refusal. The
/// convenience methods below wrap single commands.
#[async_trait]
pub trait StateEngine: Send + Sync {
    /// Apply `cmds` to `tenant` at time `now_ms`. The outer error is a backend failure (nothing
    /// or only a prefix may have been applied); inner errors are refusals of single commands.
    async fn exec(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        cmds: Vec<Command>,
    ) -> Result<Vec<CommandResult>, StateError>;

    /// An agent's current state, if it ever logged in.
    async fn agent(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
    ) -> Result<Option<AgentView>, StateError>;

    /// A call's state, with position and estimated wait while it waits.
    async fn call(
        &self,
        tenant: &TenantId,
        call: &CallId,
        now_ms: u64,
    ) -> Result<Option<CallView>, StateError>;

    /// Live statistics of a queue for wallboards.
    async fn queue_stats(
        &self,
        tenant: &TenantId,
        queue: &QueueId,
        now_ms: u64,
    ) -> Result<QueueStats, StateError>;

    /// Find and repair inconsistencies (stuck reserved agents, answered ghosts, ...).
    async fn reconcile(&self, tenant: &TenantId, now_ms: u64) -> Result<Vec<Fix>, StateError>;

    /// Events after `after_id` (from the start of the retained log when `None`), oldest first.
    async fn events_since(
        &self,
        tenant: &TenantId,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, StateError>;

    /// A live feed of the tenant's events, starting after `after_id` (or now when `None`).
    async fn subscribe(
        &self,
        tenant: &TenantId,
        after_id: Option<String>,
    ) -> Result<mpsc::Receiver<Event>, StateError>;

    /// The registrar's location service: records where an agent's SIP phone is reachable (an
    /// opaque binding the gateway writes, at most [`MAX_CONTACT_LEN`] bytes) until
    /// `expires_at_ms`. Any gateway node can look it up.
    async fn set_contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        binding: &str,
        expires_at_ms: u64,
    ) -> Result<(), StateError>;

    /// The agent's live contact binding at `now_ms`, if any.
    async fn contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        now_ms: u64,
    ) -> Result<Option<String>, StateError>;

    /// Removes the agent's contact binding (the phone unregistered).
    async fn clear_contact(&self, tenant: &TenantId, agent: &AgentId) -> Result<(), StateError>;

    /// The control bus between api replicas and gateway nodes that share this engine (see
    /// [`control`]).
    fn control_bus(&self) -> std::sync::Arc<dyn ControlBus>;

    /// The cluster's node registry (global, not per tenant): each gateway node writes its own
    /// entry with every heartbeat. Refused when the registry already holds
    /// [`MAX_NODES`] other entries, or the entry's addresses are oversized.
    async fn put_node(&self, info: &NodeInfo) -> Result<(), StateError>;

    /// The live nodes at `now_ms` (entries not past their expiry), ordered by id. Entries
    /// long expired are dropped on the way.
    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>, StateError>;

    /// Removes a node's entry (it stopped cleanly).
    async fn remove_node(&self, node: &NodeId) -> Result<(), StateError>;

    /// A token that changes when the backing store lost its data (Redis restarted empty).
    /// Holders compare it to re-assert what they hold.
    async fn epoch(&self, tenant: &TenantId) -> Result<String, StateError>;

    /// Apply one command; its refusal becomes the error.
    async fn run(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        cmd: Command,
    ) -> Result<Vec<Event>, StateError> {
        let mut out = self.exec(tenant, now_ms, vec![cmd]).await?;
        out.pop()
            .unwrap_or_else(|| Err(StateError::Backend("empty result".into())))
    }

    /// Run the timers (presence, leases, wrap-up, nodes, overflow, tiers) of a tenant.
    async fn tick(&self, tenant: &TenantId, now_ms: u64) -> Result<Vec<Event>, StateError> {
        self.run(tenant, now_ms, Command::Tick).await
    }

    /// Put a call in line.
    async fn enqueue(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        entry: CallEntry,
    ) -> Result<Vec<Event>, StateError> {
        self.run(tenant, now_ms, Command::Enqueue { entry }).await
    }

    /// Agent becomes ready.
    async fn set_ready(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        agent: &AgentId,
    ) -> Result<Vec<Event>, StateError> {
        let agent = agent.clone();
        self.run(tenant, now_ms, Command::SetReady { agent }).await
    }
}
