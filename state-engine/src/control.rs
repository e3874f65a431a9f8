//! The control bus: requests from api replicas to gateway nodes, and their replies.
//!
//! Some actions happen where the media is: dialling out from an agent's phone at the api's
//! request (click-to-call) needs the node holding that phone's registration; transferring a
//! call by api needs the node holding the call. The api does not know which node that is, so
//! it publishes the request to every node and waits for the one that owns it to answer on a
//! reply topic only that request uses; nodes that do not own it stay silent. Delivery is
//! at most once (Redis pub/sub, or in-process channels on the embedded default): a request
//! nobody answers in time is reported to the caller as such, never retried blindly (a retried
//! dial would ring the phone twice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::StateError;

/// The topic every gateway node listens on.
pub const GATEWAY_TOPIC: &str = "gateway";
/// Longest message the bus carries.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Messages a subscriber may have queued before newer ones are dropped (and logged).
const SUBSCRIBER_QUEUE: usize = 256;

/// Publish/subscribe between processes (or within one).
#[async_trait]
pub trait ControlBus: Send + Sync {
    /// Sends `payload` to the current subscribers of `topic` (none: it is dropped).
    async fn publish(&self, topic: &str, payload: &str) -> Result<(), StateError>;
    /// Messages published on `topic` from now on, until the receiver is dropped.
    async fn subscribe(&self, topic: &str) -> Result<mpsc::Receiver<String>, StateError>;
}

/// What the api asks of a gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Ring the agent's phone; when it answers, dial `number` on the tenant's trunk.
    Dial {
        tenant: String,
        agent: String,
        number: String,
    },
    /// Blind-transfer the call to `target` (an E.164 number, a queue id or an agent's SIP
    /// username), as a REFER from the agent's phone would.
    Transfer {
        tenant: String,
        call: String,
        target: String,
    },
    /// Pause (or resume) the call's recording, as the agent's keypad code would.
    Recording {
        tenant: String,
        call: String,
        pause: bool,
    },
}

/// A request on the bus, with where its answer goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    pub reply_to: String,
    #[serde(flatten)]
    pub action: ControlAction,
}

/// A node's answer: a SIP-like status (202 accepted, 403 not allowed, 404 no such target,
/// 409 not in a state to do it, 503 no capacity) with a reason, and the call it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub status: u16,
    pub reason: String,
    pub call_id: Option<String>,
}

/// Publishes `action` to the gateway nodes and waits up to `wait` for the owner's reply
/// (`None`: no node answered).
pub async fn request(
    bus: &dyn ControlBus,
    action: ControlAction,
    wait: Duration,
) -> Result<Option<ControlReply>, StateError> {
    let reply_to = format!(
        "reply:{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let mut replies = bus.subscribe(&reply_to).await?;
    let request = ControlRequest {
        reply_to: reply_to.clone(),
        action,
    };
    bus.publish(GATEWAY_TOPIC, &serde_json::to_string(&request)?)
        .await?;
    let reply = tokio::time::timeout(wait, async {
        while let Some(text) = replies.recv().await {
            match serde_json::from_str::<ControlReply>(&text) {
                Ok(reply) => return Some(reply),
                Err(e) => tracing::warn!(error = %e, "unreadable control reply"),
            }
        }
        None
    })
    .await;
    Ok(reply.ok().flatten())
}

/// Answers a request on its reply topic.
pub async fn reply(
    bus: &dyn ControlBus,
    request: &ControlRequest,
    reply: &ControlReply,
) -> Result<(), StateError> {
    bus.publish(&request.reply_to, &serde_json::to_string(reply)?)
        .await
}

fn check_message(topic: &str, payload: &str) -> Result<(), StateError> {
    if payload.len() > MAX_MESSAGE_LEN || topic.is_empty() || topic.len() > 128 {
        return Err(StateError::Invalid(format!(
            "control message on {topic:?}: topic 1 to 128 bytes, payload at most {MAX_MESSAGE_LEN}"
        )));
    }
    Ok(())
}

/// The bus within one process (the embedded default).
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<String>>>>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBus")
    }
}

#[async_trait]
impl ControlBus for MemoryBus {
    async fn publish(&self, topic: &str, payload: &str) -> Result<(), StateError> {
        check_message(topic, payload)?;
        let mut topics = self
            .topics
            .lock()
            .map_err(|_| StateError::Backend("control bus lock poisoned".into()))?;
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.retain(|s| !s.is_closed());
            for s in subscribers.iter() {
                if s.try_send(payload.to_owned()).is_err() {
                    tracing::warn!(topic, "control subscriber is full: message dropped");
                }
            }
            if subscribers.is_empty() {
                topics.remove(topic);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<mpsc::Receiver<String>, StateError> {
        check_message(topic, "")?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut topics = self
            .topics
            .lock()
            .map_err(|_| StateError::Backend("control bus lock poisoned".into()))?;
        let subscribers = topics.entry(topic.to_owned()).or_default();
        subscribers.retain(|s| !s.is_closed());
        subscribers.push(tx);
        Ok(rx)
    }
}

/// The bus over Redis pub/sub, channels named `<prefix>ctl:<topic>`.
#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisBus {
    pub(crate) fn new(
        client: redis::Client,
        conn: redis::aio::ConnectionManager,
        prefix: &str,
    ) -> Self {
        Self {
            client,
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}ctl:{topic}", self.prefix)
    }
}

#[async_trait]
impl ControlBus for RedisBus {
    async fn publish(&self, topic: &str, payload: &str) -> Result<(), StateError> {
        check_message(topic, payload)?;
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.channel(topic))
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<mpsc::Receiver<String>, StateError> {
        check_message(topic, "")?;
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel(topic)).await?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { return };
                        match message.get_payload::<String>() {
                            Ok(text) if text.len() <= MAX_MESSAGE_LEN => {
                                if tx.try_send(text).is_err() && tx.is_closed() {
                                    return;
                                }
                            }
                            _ => tracing::warn!("unreadable control message dropped"),
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial() -> ControlAction {
        ControlAction::Dial {
            tenant: "t".into(),
            agent: "a".into(),
            number: "+14155550100".into(),
        }
    }

    /// A node that owns everything: answers each request with 202.
    async fn answering_node(bus: Arc<dyn ControlBus>) {
        let mut requests = bus
            .subscribe(GATEWAY_TOPIC)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Some(text) = requests.recv().await {
                let Ok(req) = serde_json::from_str::<ControlRequest>(&text) else {
                    continue;
                };
                let answer = ControlReply {
                    status: 202,
                    reason: format!("{:?}", req.action),
                    call_id: Some("c1".into()),
                };
                let _ = reply(bus.as_ref(), &req, &answer).await;
            }
        });
    }

    async fn round_trip(bus: Arc<dyn ControlBus>) {
        // Nobody listens yet: no answer, in bounded time.
        let none = request(bus.as_ref(), dial(), Duration::from_millis(100)).await;
        assert_eq!(none.ok().flatten(), None);
        answering_node(bus.clone()).await;
        let answer = request(bus.as_ref(), dial(), Duration::from_secs(2)).await;
        let answer = answer.ok().flatten().unwrap_or_else(|| panic!("no reply"));
        assert_eq!(answer.status, 202);
        assert_eq!(answer.call_id.as_deref(), Some("c1"));
        assert!(answer.reason.contains("+14155550100"));
        // A message over the limit is refused, not sent.
        let big = "x".repeat(MAX_MESSAGE_LEN + 1);
        assert!(bus.publish(GATEWAY_TOPIC, &big).await.is_err());
    }

    #[tokio::test]
    async fn memory_bus_carries_requests_and_replies() {
        round_trip(Arc::new(MemoryBus::default())).await;
    }

    #[tokio::test]
    async fn redis_bus_carries_requests_and_replies() {
        let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let engine = crate::RedisEngine::connect_with(
            &url,
            &format!("sbtest:{:x}:", rand::random::<u64>()),
            crate::EngineConfig::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required: {e}"));
        round_trip(Arc::new(engine.bus())).await;
    }

    #[test]
    fn requests_read_back_as_written() {
        let req = ControlRequest {
            reply_to: "reply:1".into(),
            action: ControlAction::Transfer {
                tenant: "t".into(),
                call: "c".into(),
                target: "+442071234567".into(),
            },
        };
        let text = serde_json::to_string(&req).unwrap_or_default();
        assert!(text.contains(r#""action":"transfer""#), "{text}");
        assert_eq!(
            serde_json::from_str::<ControlRequest>(&text).ok(),
            Some(req)
        );
    }
}
