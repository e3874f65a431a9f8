//! The vocabulary shared by both engines: validated ids, queue configuration, the commands that
//! change state, the events every change emits, and the read-side views (agents, calls, stats).
//!
//! Everything here is plain data and serde-serializable: events and stats leave the process as
//! JSON (the API's feed, the Redis stream), and commands travel to the Redis Lua script as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// Longest id we accept; ids end up inside Redis keys, so they must be short and tame.
pub const MAX_ID_LEN: usize = 64;

fn check_id(kind: &str, s: &str) -> Result<(), StateError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:@+#".contains(c);
    if s.is_empty() || s.len() > MAX_ID_LEN || !s.chars().all(ok_char) {
        return Err(StateError::InvalidId {
            kind: kind.to_string(),
            value: s.chars().take(80).collect(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// 1 to 64 ASCII characters from `[A-Za-z0-9-_.:@+#]`: never `{`, `}`, `,` or whitespace,
        /// so it can be embedded in a hash-tagged Redis key. Cheap to clone (shared string).
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Parse an id, refusing anything that could not safely live inside a Redis key.
            pub fn parse(s: impl Into<String>) -> Result<Self, StateError> {
                let s: String = s.into();
                check_id($kind, &s)?;
                Ok(Self(s.into()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = StateError;
            fn try_from(s: String) -> Result<Self, StateError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A tenant (one company renting seats).
    TenantId,
    "tenant"
);
id_type!(
    /// An agent (seat user) within a tenant.
    AgentId,
    "agent"
);
id_type!(
    /// A queue within a tenant.
    QueueId,
    "queue"
);
id_type!(
    /// A call (the caller's leg) within a tenant.
    CallId,
    "call"
);
id_type!(
    /// A media-gateway node that holds calls.
    NodeId,
    "node"
);
id_type!(
    /// An agent connection (softphone registration or desktop session).
    ConnId,
    "connection"
);
id_type!(
    /// A tenant-defined not-ready reason code (`break`, `training`, ...).
    ReasonCode,
    "reason"
);

/// The reason code the engine uses when it takes an agent out after too many missed offers.
pub const MISSED_CALLS_REASON: &str = "missed_calls";
/// The reason code an agent has right after login.
pub const LOGIN_REASON: &str = "login";

/// Engine-wide knobs (identical for every tenant of one deployment).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineConfig {
    /// An agent whose connection has not heartbeated for this long is logged out.
    pub presence_ttl_ms: u64,
    /// A gateway node that has not heartbeated for this long is considered gone with its calls.
    pub node_ttl_ms: u64,
    /// Consecutive ring-no-answers before an agent is put in not-ready `missed_calls`.
    pub missed_limit: u32,
    /// Approximate length the per-tenant event log is trimmed to.
    pub event_maxlen: u64,
    /// How many waiting calls / ready agents one match attempt looks at, at most.
    pub scan_limit: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            presence_ttl_ms: 30_000,
            node_ttl_ms: 30_000,
            missed_limit: 3,
            event_maxlen: 10_000,
            scan_limit: 200,
        }
    }
}

/// How a queue picks among the ready agents that may take a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent idle (ready) the longest.
    LongestIdle,
    /// The agent this queue offered a call to least recently (remembered across readiness).
    RoundRobin,
    /// Every eligible ready agent rings; the first to answer wins, the others are released.
    RingAll,
    /// A random eligible agent.
    Random,
    /// The agent who handled the fewest calls.
    FewestCalls,
    /// The agent with the least accumulated talk time.
    LeastTalkTime,
    /// Members in their configured order.
    Linear,
    /// The agent with the highest level in the queue's `rank_skill`.
    HighestSkill,
}

/// Where a call goes when it overflows out of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OverflowTarget {
    /// Move to another queue (keeping priority and original enqueue time).
    Queue {
        /// The queue to move to.
        queue: QueueId,
    },
    /// Leave the queue to a voicemail box.
    Voicemail {
        /// The voicemail box.
        mailbox: String,
    },
    /// The caller hangs up but keeps the place in line; an agent is offered a callback.
    Callback,
    /// Leave the queue to an external number.
    Number {
        /// The number to forward to.
        number: String,
    },
}

/// When a queue overflows, and where to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowRule {
    /// Where overflowing calls go.
    pub target: OverflowTarget,
    /// Overflow a call that waited this long in the queue.
    pub after_ms: Option<u64>,
    /// Overflow at enqueue when no member agent is logged in.
    pub when_no_agents: bool,
    /// Overflow at enqueue when the queue is at `max_len` (else the enqueue fails `QueueFull`).
    pub when_full: bool,
}

/// A fixed member of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberConfig {
    /// The agent.
    pub agent: AgentId,
    /// Tier 0 is offered first; tier n opens after `n * tier_wait_ms` of waiting.
    pub tier: u32,
}

/// A queue's routing configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// The queue.
    pub queue: QueueId,
    /// How the queue picks an agent.
    pub strategy: Strategy,
    /// Fixed members, in linear order.
    pub members: Vec<MemberConfig>,
    /// Wait before a call widens to the next tier (0: all tiers at once).
    pub tier_wait_ms: u64,
    /// Maximum number of calls waiting.
    pub max_len: u32,
    /// A call that waited this long leaves with reason `max_wait` (after any overflow rule).
    pub max_wait_ms: Option<u64>,
    /// Overflow rule, if any.
    pub overflow: Option<OverflowRule>,
    /// After-call work time; the agent returns to ready when it ends (0: straight to ready).
    pub wrap_up_ms: u64,
    /// How long an offer rings (the reservation lease) before it counts as ring-no-answer.
    pub ring_timeout_ms: u64,
    /// How long a call waits for its preferred (sticky) agent before anyone may take it.
    pub sticky_ms: u64,
    /// The X of "service level X": calls leaving the queue within this time count as in SL.
    pub service_level_ms: u64,
    /// The skill ranked by `HighestSkill`.
    pub rank_skill: Option<String>,
    /// Average handle time assumed for ETA until the queue has handled a call today.
    pub default_aht_ms: u64,
}

impl QueueConfig {
    /// A queue with the given strategy and members (all tier 0) and sensible defaults.
    pub fn new(queue: QueueId, strategy: Strategy, members: Vec<AgentId>) -> Self {
        Self {
            queue,
            strategy,
            members: members
                .into_iter()
                .map(|agent| MemberConfig { agent, tier: 0 })
                .collect(),
            tier_wait_ms: 0,
            max_len: 1_000_000,
            max_wait_ms: None,
            overflow: None,
            wrap_up_ms: 0,
            ring_timeout_ms: 15_000,
            sticky_ms: 0,
            service_level_ms: 20_000,
            rank_skill: None,
            default_aht_ms: 180_000,
        }
    }
}

/// A call to put in a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEntry {
    /// The call.
    pub call: CallId,
    /// The queue.
    pub queue: QueueId,
    /// Higher is served first (0..=255).
    pub priority: u8,
    /// Required skills with minimum levels.
    pub skills: BTreeMap<String, u32>,
    /// The agent who served this caller last (sticky routing).
    pub preferred_agent: Option<AgentId>,
    /// The gateway node that holds the call.
    pub node: NodeId,
    /// Original enqueue time; `None` means now. Re-assertion after a Redis restart passes the
    /// original so the call keeps its place.
    pub enqueued_at_ms: Option<u64>,
    /// The caller's number as the carrier gave it (at most [`MAX_CALLER_LEN`] bytes), for the
    /// agent's screen pop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

/// Longest caller number a queue entry carries.
pub const MAX_CALLER_LEN: usize = 64;

impl CallEntry {
    /// A call with priority 0, no skills and no preferred agent.
    pub fn new(call: CallId, queue: QueueId, node: NodeId) -> Self {
        Self {
            call,
            queue,
            priority: 0,
            skills: BTreeMap::new(),
            preferred_agent: None,
            node,
            enqueued_at_ms: None,
            caller: None,
        }
    }

    /// Refuses a caller number over [`MAX_CALLER_LEN`] bytes or with control characters.
    pub fn check(&self) -> Result<(), StateError> {
        if let Some(c) = &self.caller
            && (c.len() > MAX_CALLER_LEN || c.chars().any(char::is_control))
        {
            return Err(StateError::Invalid(format!(
                "caller: at most {MAX_CALLER_LEN} bytes, no control characters"
            )));
        }
        Ok(())
    }
}

/// A state change request. Both engines apply a batch of these atomically per command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Create or replace a queue's configuration (dynamic members survive).
    ConfigureQueue {
        /// The configuration.
        config: QueueConfig,
    },
    /// Log an agent in (to not-ready `login`), or refresh a logged-in agent's connection/skills.
    Login {
        /// The agent.
        agent: AgentId,
        /// The live connection presence is tied to.
        conn: ConnId,
        /// The agent's skills and levels.
        skills: BTreeMap<String, u32>,
    },
    /// Keep an agent's presence alive.
    Heartbeat {
        /// The agent.
        agent: AgentId,
        /// Its connection.
        conn: ConnId,
    },
    /// Log an agent out (a pending offer goes back to the queue).
    Logout {
        /// The agent.
        agent: AgentId,
    },
    /// Agent becomes ready (from not-ready or wrap-up).
    SetReady {
        /// The agent.
        agent: AgentId,
    },
    /// Agent becomes not ready with a reason code.
    SetNotReady {
        /// The agent.
        agent: AgentId,
        /// Tenant-defined reason.
        reason: ReasonCode,
    },
    /// Extend the agent's current wrap-up.
    ExtendWrapUp {
        /// The agent.
        agent: AgentId,
        /// Extra time.
        extra_ms: u64,
    },
    /// Add a dynamic member to a queue.
    JoinQueue {
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
        /// Its tier.
        tier: u32,
    },
    /// Remove a member from a queue.
    LeaveQueue {
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
    },
    /// Put a call in line.
    Enqueue {
        /// The call.
        entry: CallEntry,
    },
    /// The agent answered the offer.
    Answer {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The agent declined the offer (counts as a ring-no-answer).
    Reject {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The call ended: the caller abandoned (waiting/ringing) or the conversation finished.
    Hangup {
        /// The call.
        call: CallId,
    },
    /// A gateway node is alive (holds its calls).
    NodeHeartbeat {
        /// The node.
        node: NodeId,
    },
    /// Run timers: presence, leases, wrap-up, node loss, overflow, tier widening.
    Tick,
    /// A call's recording is stored and confirmed (the gateway's uploader): announces
    /// `recording.completed` on the tenant's stream. Touches no state.
    RecordingCompleted {
        /// The call.
        call: CallId,
        /// Where it is (at most 1024 characters).
        object_key: String,
        /// Size of the WAV.
        size_bytes: u64,
        /// Hex SHA-256 of the WAV (64 characters).
        sha256: String,
        /// Length of the recording.
        duration_ms: u64,
    },
    /// A call's recording could not be stored in time: announces `recording.failed`.
    RecordingFailed {
        /// The call.
        call: CallId,
        /// Why (at most 500 characters).
        reason: String,
    },
    /// A call's recording was paused (`paused`) or resumed: announces `recording.paused` /
    /// `recording.resumed`. Touches no state.
    RecordingPaused {
        /// The call.
        call: CallId,
        /// Paused (true) or resumed (false).
        paused: bool,
        /// Who asked: `dtmf` (the agent's keypad code) or `api`.
        by: String,
        /// Where in the recording, ms from its start.
        offset_ms: u64,
    },
}

/// Coarse agent state, as shown on wallboards and in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Not logged in.
    LoggedOut,
    /// Waiting for a call.
    Ready,
    /// Logged in, not taking calls (see reason).
    NotReady,
    /// A call is being offered (ringing).
    Reserved,
    /// Talking.
    OnCall,
    /// After-call work.
    WrapUp,
}

impl AgentStatus {
    /// The wire name (also used in the Lua script).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::LoggedOut => "logged_out",
            AgentStatus::Ready => "ready",
            AgentStatus::NotReady => "not_ready",
            AgentStatus::Reserved => "reserved",
            AgentStatus::OnCall => "on_call",
            AgentStatus::WrapUp => "wrap_up",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// In line.
    Waiting,
    /// Offered to one agent (or several, ring-all).
    Reserved,
    /// Talking to an agent.
    Answered,
}

/// One change, as it goes out on the tenant's event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Resumable position in the tenant's log (opaque; pass it to `events_since`).
    #[serde(default)]
    pub id: String,
    /// Engine time of the change.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// An agent changed state.
    AgentState {
        /// The agent.
        agent: AgentId,
        /// Previous state.
        from: AgentStatus,
        /// New state.
        to: AgentStatus,
        /// Not-ready reason, if `to` is not-ready.
        reason: Option<String>,
        /// The call involved, if any.
        call: Option<CallId>,
    },
    /// A call entered a queue (or returned to its place).
    CallQueued {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
        /// 1-based position.
        position: u64,
        /// Estimated wait.
        eta_ms: u64,
    },
    /// A call is offered to an agent (reservation with a lease).
    CallOffered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
        /// The lease ends here unless answered.
        lease_until_ms: u64,
        /// The offer is a callback (the caller hung up and keeps the place).
        callback: bool,
    },
    /// An offer was withdrawn from an agent.
    OfferReleased {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// `no_answer`, `rejected`, `ring_all_lost`, `agent_lost`, `logout`, `call_ended`.
        reason: String,
    },
    /// An agent answered.
    CallAnswered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
        /// Time spent in the queue.
        wait_ms: u64,
    },
    /// A call left the engine: `abandoned`, `completed`, `max_wait`, `node_lost`, `agent_lost`.
    CallEnded {
        /// The call.
        call: CallId,
        /// The queue it was in.
        queue: QueueId,
        /// Why.
        reason: String,
    },
    /// A call overflowed out of a queue.
    CallOverflowed {
        /// The call.
        call: CallId,
        /// The queue it left.
        from_queue: QueueId,
        /// Where to.
        target: OverflowTarget,
        /// `wait`, `no_agents`, `full`.
        reason: String,
    },
    /// A queue was configured.
    QueueConfigured {
        /// The queue.
        queue: QueueId,
    },
    /// Queue membership changed (`tier` none: removed).
    MemberChanged {
        /// The queue.
        queue: QueueId,
        /// The agent.
        agent: AgentId,
        /// Tier, or none when removed.
        tier: Option<u32>,
    },
    /// A call's recording is stored, its size and checksum confirmed.
    #[serde(rename = "recording.completed")]
    RecordingCompleted {
        /// The call.
        call: CallId,
        /// Where it is.
        object_key: String,
        /// Size of the WAV.
        size_bytes: u64,
        /// Hex SHA-256 of the WAV.
        sha256: String,
        /// Length of the recording.
        duration_ms: u64,
    },
    /// A call's recording could not be stored (the gateway keeps its spool file).
    #[serde(rename = "recording.failed")]
    RecordingFailed {
        /// The call.
        call: CallId,
        /// Why.
        reason: String,
    },
    /// A call's recording was paused: what follows is silence until `recording.resumed`.
    #[serde(rename = "recording.paused")]
    RecordingPaused {
        /// The call.
        call: CallId,
        /// `dtmf` or `api`.
        by: String,
        /// Where in the recording, ms from its start.
        offset_ms: u64,
    },
    /// A call's paused recording records again.
    #[serde(rename = "recording.resumed")]
    RecordingResumed {
        /// The call.
        call: CallId,
        /// `dtmf` or `api`.
        by: String,
        /// Where in the recording, ms from its start.
        offset_ms: u64,
    },
}

/// An agent as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent.
    pub agent: AgentId,
    /// Current state.
    pub status: AgentStatus,
    /// Not-ready reason.
    pub reason: Option<String>,
    /// The call offered / talking / wrapping up.
    pub call: Option<CallId>,
    /// When the current state began.
    pub since_ms: u64,
    /// When wrap-up ends.
    pub wrap_until_ms: Option<u64>,
    /// Presence expiry.
    pub presence_until_ms: u64,
    /// The connection presence is tied to (the latest login's).
    pub conn: Option<ConnId>,
    /// Consecutive ring-no-answers.
    pub missed: u32,
    /// Calls handled.
    pub calls_handled: u64,
    /// Accumulated talk time.
    pub talk_ms: u64,
}

/// A call as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// The call.
    pub call: CallId,
    /// Current queue.
    pub queue: QueueId,
    /// Where it stands.
    pub status: CallStatus,
    /// Agents it is offered to, or the agent talking.
    pub agents: Vec<AgentId>,
    /// 1-based position while waiting.
    pub position: Option<u64>,
    /// Estimated wait while waiting.
    pub eta_ms: Option<u64>,
    /// A callback entry (caller hung up, keeps the place).
    pub callback: bool,
    /// Priority.
    pub priority: u8,
    /// Original enqueue time.
    pub enqueued_at_ms: u64,
    /// Entered the current queue.
    pub entered_at_ms: u64,
    /// Holding gateway node.
    pub node: NodeId,
    /// The caller's number, when the gateway gave it.
    #[serde(default)]
    pub caller: Option<String>,
}

/// Member agents of a queue by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    /// Logged out (or never seen).
    pub logged_out: u64,
    /// Ready.
    pub ready: u64,
    /// Not ready.
    pub not_ready: u64,
    /// Reserved.
    pub reserved: u64,
    /// On call.
    pub on_call: u64,
    /// Wrap-up.
    pub wrap_up: u64,
}

/// Live queue statistics for wallboards. "Today" is the UTC day of `now`.
///
/// Definitions follow Amazon Connect: service level X = calls that left the queue within X
/// (answered, abandoned or overflowed) / calls queued; ASA = mean queue time of answered calls;
/// abandon rate = abandoned / queued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueId,
    /// Calls waiting (including callbacks).
    pub waiting: u64,
    /// Longest current wait.
    pub longest_wait_ms: u64,
    /// Member agents by state.
    pub agents: AgentCounts,
    /// Calls queued today.
    pub queued: u64,
    /// Calls answered today.
    pub answered: u64,
    /// Calls abandoned today.
    pub abandoned: u64,
    /// Calls that left the queue within the service level threshold today.
    pub left_within_sl: u64,
    /// Service level (None before the first call of the day).
    pub service_level: Option<f64>,
    /// Average speed of answer.
    pub asa_ms: Option<u64>,
    /// Abandon rate.
    pub abandon_rate: Option<f64>,
    /// Average handle time used for ETA.
    pub aht_ms: u64,
}

/// Something the reconciliation pass repaired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    /// `stuck_reserved_agent`, `stuck_on_call_agent`, `answered_ghost`, `orphan_reservation`,
    /// `lost_waiting_entry`.
    pub kind: String,
    /// The agent or call repaired.
    pub subject: String,
}

/// The result of one command of a batch: its events, or why it was refused.
pub type CommandResult = Result<Vec<Event>, StateError>;

/// One gateway node as the cluster sees it: where it takes SIP, where peers hand it calls, how
/// busy it is and whether it takes new calls. Each node writes its own entry with every
/// heartbeat; an entry past `expires_at_ms` is a dead node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: NodeId,
    /// The node's SIP address (`ip:port`), where carriers and phones reach it.
    pub sip_addr: String,
    /// Where peers send calls for phones registered on this node (the internal trunk).
    pub trunk_addr: String,
    /// The most calls the node takes at once.
    pub capacity: u32,
    /// Calls it holds now.
    pub calls: u32,
    /// Draining: current calls finish, new ones go elsewhere.
    pub draining: bool,
    /// The entry is valid until then (the caller's clock).
    pub expires_at_ms: u64,
}

/// Most nodes the registry holds (a bound on what a heartbeat may add).
pub const MAX_NODES: usize = 1024;

/// Longest address a node entry may carry.
pub const MAX_NODE_ADDR_LEN: usize = 256;

impl NodeInfo {
    /// Refuses an entry with oversized addresses.
    pub fn check(&self) -> Result<(), crate::StateError> {
        for (kind, v) in [
            ("sip_addr", &self.sip_addr),
            ("trunk_addr", &self.trunk_addr),
        ] {
            if v.is_empty() || v.len() > MAX_NODE_ADDR_LEN {
                return Err(crate::StateError::InvalidId {
                    kind: kind.into(),
                    value: v.chars().take(80).collect(),
                });
            }
        }
        Ok(())
    }
}
