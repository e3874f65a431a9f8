//! The crate's one error type. A refused command (bad input, illegal transition) is an ordinary
//! value the caller shows to a user; `Backend` means Redis failed and the caller may retry.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in the state engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum StateError {
    /// An id failed validation.
    #[error("invalid {kind} id {value:?}")]
    InvalidId {
        /// Which id.
        kind: String,
        /// The offending value (truncated).
        value: String,
    },
    /// The agent cannot go from `from` to `to`.
    #[error("illegal agent transition from {from} to {to}")]
    IllegalTransition {
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
    },
    /// No such agent (never logged in).
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// No such call.
    #[error("unknown call {0}")]
    UnknownCall(String),
    /// No such queue.
    #[error("unknown queue {0}")]
    UnknownQueue(String),
    /// The call id is already in the engine.
    #[error("duplicate call {0}")]
    DuplicateCall(String),
    /// The call is not offered to that agent.
    #[error("call {call} is not offered to agent {agent}")]
    NotOffered {
        /// The call.
        call: String,
        /// The agent.
        agent: String,
    },
    /// A heartbeat from a connection that is not the agent's current one (a newer login took
    /// over, or the session is stale).
    #[error("stale connection for agent {0}")]
    StaleConnection(String),
    /// The queue is at its maximum length and has no overflow for that case.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// A command argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Redis (or the engine's plumbing) failed.
    #[error("backend error: {0}")]
    Backend(String),
}

impl From<redis::RedisError> for StateError {
    fn from(e: redis::RedisError) -> Self {
        StateError::Backend(e.to_string())
    }
}

impl From<serde_json::Error> for StateError {
    fn from(e: serde_json::Error) -> Self {
        StateError::Backend(format!("json: {e}"))
    }
}
