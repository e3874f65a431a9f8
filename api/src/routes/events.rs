//! The live event feed for browsers: Server-Sent Events over the tenant's event log in the
//! state engine (`GET /v1/events/stream`), resumable after a reconnect.
//!
//! Why SSE and not a WebSocket: the feed is one-way (the desktop acts through the REST
//! endpoints), SSE reconnects and resumes by itself (`Last-Event-ID`), and it passes every
//! proxy as a plain long GET. Each SSE `id` is the engine's event id, so a client that
//! reconnects with `Last-Event-ID` (or `?after=`) gets exactly what it missed, as far back as
//! the engine retains the log (`event_maxlen`).
//!
//! Authentication: a browser's `EventSource` cannot send an `Authorization` header, and an
//! access token in a URL ends up in proxy logs and browser history where it is good for every
//! endpoint for ten minutes. So the desktop first asks `POST /v1/events/ticket` (bearer token)
//! for a stream ticket: a JWT signed with the same keys but for another audience
//! (`<aud>#events`), valid [`TICKET_TTL`], accepted only by this endpoint. The stream endpoint
//! also takes an ordinary bearer header (tools, tests). A stream lives at most
//! [`EventStreamSettings::max_lifetime`] and then ends; the client reconnects with a new ticket,
//! so a revoked user's feed stops within that bound.
//!
//! Scope: supervisors and admins see every event of their tenant. An agent sees its own
//! agent's state changes and offers, and the progress of the calls offered to it (queued,
//! answered, ended, recordings) from the offer on; the call it holds when the stream starts
//! counts as offered. Queue configuration and other agents' events are not shown to agents.
//!
//! Limits: streams per user and per tenant on this replica ([`StreamLimiter`], 429 past
//! them), a keep-alive comment every [`EventStreamSettings::keepalive`], and the engine's own
//! bounded read interval (Redis `XREAD BLOCK` of 1 s; the in-memory engine pushes).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::json::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use switchboard_domain::Role;
use switchboard_state::{AgentId, CallId, Event, EventKind, TenantId as EngineTenant};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{AnyTenantUser, ApiQuery, TenantCtx};

/// How long a stream ticket is accepted.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Limits of the event feed.
#[derive(Debug, Clone)]
pub struct EventStreamSettings {
    /// Open streams one user (or API key) may hold on one replica.
    pub max_per_user: usize,
    /// Open streams one tenant may hold on one replica.
    pub max_per_tenant: usize,
    /// A comment line this often keeps proxies from closing an idle stream.
    pub keepalive: Duration,
    /// A stream ends after this long; the client reconnects (with a fresh ticket).
    pub max_lifetime: Duration,
}

impl Default for EventStreamSettings {
    fn default() -> Self {
        Self {
            max_per_user: 4,
            max_per_tenant: 2000,
            keepalive: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(15 * 60),
        }
    }
}

/// Counts open streams per principal and per tenant; a [`StreamSlot`] gives its place back
/// when the stream ends (the client went away or the lifetime ran out).
#[derive(Debug, Default)]
pub struct StreamLimiter {
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One open stream's place in the [`StreamLimiter`].
#[derive(Debug)]
pub struct StreamSlot {
    limiter: Arc<StreamLimiter>,
    keys: [Uuid; 2],
}

impl StreamLimiter {
    /// Takes a place for `principal` in `tenant`, or `None` when either is at its limit.
    pub fn acquire(
        self: &Arc<Self>,
        tenant: Uuid,
        principal: Uuid,
        settings: &EventStreamSettings,
    ) -> Option<StreamSlot> {
        let mut open = self.open.lock().ok()?;
        let t = open.get(&tenant).copied().unwrap_or(0);
        let p = open.get(&principal).copied().unwrap_or(0);
        if t >= settings.max_per_tenant || p >= settings.max_per_user {
            return None;
        }
        *open.entry(tenant).or_default() += 1;
        *open.entry(principal).or_default() += 1;
        Some(StreamSlot {
            limiter: self.clone(),
            keys: [tenant, principal],
        })
    }

    /// Open streams counted under `key` (a tenant or a principal).
    pub fn open(&self, key: Uuid) -> usize {
        self.open
            .lock()
            .map(|o| o.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limiter.open.lock() {
            for k in self.keys {
                if let Some(n) = open.get_mut(&k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        open.remove(&k);
                    }
                }
            }
        }
    }
}

/// A stream ticket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamTicket {
    /// Pass as `?ticket=` to `GET /v1/events/stream`.
    pub ticket: String,
    pub expires_in_s: u64,
}

/// A short-lived ticket for opening the event stream from a browser (`EventSource` cannot
/// send an `Authorization` header). Valid for 60 s, only for `GET /v1/events/stream`.
#[utoipa::path(post, path = "/v1/events/ticket", tag = "agent",
    responses((status = 200, body = StreamTicket), (status = 401, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn create_stream_ticket(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<Json<StreamTicket>, ApiError> {
    let user_id = user.user_id.ok_or(ApiError::Forbidden(
        "stream tickets are for users; API keys use the Authorization header",
    ))?;
    let ticket = app
        .tokens
        .issue_stream_ticket(user.tenant_id, user_id, user.role, TICKET_TTL)?;
    Ok(Json(StreamTicket {
        ticket,
        expires_in_s: TICKET_TTL.as_secs(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// A ticket from `POST /v1/events/ticket` (instead of an `Authorization` header).
    pub ticket: Option<String>,
    /// Resume after this event id (as `Last-Event-ID` does; the header wins). Absent: from now.
    pub after: Option<String>,
}

/// Who may see which events on one stream.
#[derive(Debug)]
pub enum Scope {
    /// Supervisors and admins: the whole tenant.
    Tenant,
    /// An agent: its own events and the calls offered to it.
    Agent {
        agent: AgentId,
        calls: HashSet<CallId>,
    },
}

impl Scope {
    /// Whether this event goes out on the stream (and remembers the calls offered to it).
    pub fn admits(&mut self, e: &Event) -> bool {
        let Scope::Agent { agent, calls } = self else {
            return true;
        };
        match &e.kind {
            EventKind::AgentState { agent: a, .. } => a == agent,
            EventKind::CallOffered { call, agent: a, .. } => {
                if a == agent {
                    calls.insert(call.clone());
                    true
                } else {
                    false
                }
            }
            EventKind::OfferReleased { agent: a, .. }
            | EventKind::CallAnswered { agent: a, .. } => a == agent,
            EventKind::MemberChanged { agent: a, .. } => a == agent,
            EventKind::CallQueued { call, .. }
            | EventKind::CallOverflowed { call, .. }
            | EventKind::RecordingCompleted { call, .. }
            | EventKind::RecordingFailed { call, .. }
            | EventKind::RecordingPaused { call, .. }
            | EventKind::RecordingResumed { call, .. } => calls.contains(call),
            EventKind::CallEnded { call, .. } => {
                // Remembered calls are forgotten after their last event but the recording's.
                calls.contains(call)
            }
            EventKind::QueueConfigured { .. } => false,
        }
    }
}

/// The event's type, as the SSE `event` field (`agent_state`, `call_offered`, ...).
fn event_name(e: &Event) -> String {
    serde_json::to_value(&e.kind)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "event".into())
}

fn check_event_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(
            "after / Last-Event-ID: not an event id".into(),
        ));
    }
    Ok(())
}

/// Who is asking: the `Authorization` header, else the ticket.
async fn stream_caller(
    app: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
) -> Result<TenantCtx, ApiError> {
    let ctx = match headers.get(axum::http::header::AUTHORIZATION) {
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
            crate::extract::ctx_from_authorization(app, v).await?
        }
        None => {
            let ticket = ticket.ok_or(ApiError::Unauthorized(
                "missing Authorization header or ticket",
            ))?;
            let claims = app.tokens.verify_stream_ticket(ticket)?;
            crate::extract::ctx_from_claims(app, claims).await?
        }
    };
    ctx.record_in_span();
    Ok(ctx)
}

/// The tenant's live events as Server-Sent Events (`text/event-stream`): each SSE `id` is the
/// event's id, `event` its type, `data` the event as JSON. The first message is `hello`
/// with the caller's scope, the id to resume after, and (for an agent) its current state.
/// Reconnect with `Last-Event-ID` (or `?after=`) to get what was missed. Authenticate with an
/// `Authorization` header or `?ticket=` from `POST /v1/events/ticket`.
#[utoipa::path(get, path = "/v1/events/stream", tag = "agent", params(StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "The event stream"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn stream_events(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let ctx = stream_caller(&app, &headers, params.ticket.as_deref()).await?;
    if ctx.role == Role::PlatformOperator {
        return Err(ApiError::Forbidden("requires role Role::Agent"));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.after);
    if let Some(a) = &after {
        check_event_id(a)?;
    }
    let principal = ctx.actor().ok_or(ApiError::Unauthorized("no principal"))?;
    let settings = app.http.events.clone();
    let slot = app
        .streams
        .acquire(ctx.tenant_id.0, principal, &settings)
        .ok_or(ApiError::TooManyRequests(5))?;
    let tenant = EngineTenant::parse(ctx.tenant_id.to_string())?;
    let mut rx = app.engine.subscribe(&tenant, after.clone()).await?;
    let (mut scope, snapshot) = match (ctx.role, ctx.user_id) {
        (Role::Supervisor | Role::TenantAdmin, _) => (Scope::Tenant, None),
        (_, Some(user)) => {
            let agent = AgentId::parse(user.to_string())?;
            let view = app.engine.agent(&tenant, &agent).await?;
            let calls = view
                .as_ref()
                .and_then(|v| v.call.clone())
                .into_iter()
                .collect();
            (Scope::Agent { agent, calls }, view)
        }
        _ => return Err(ApiError::Forbidden("an agent's stream needs a user")),
    };
    let hello = serde_json::json!({
        "scope": if matches!(scope, Scope::Tenant) { "tenant" } else { "agent" },
        "after": after,
        "state": snapshot,
        "max_lifetime_s": settings.max_lifetime.as_secs(),
    });
    tracing::info!(tenant_id = %ctx.tenant_id, %principal, resume = after.is_some(), "event stream opened");
    let deadline = tokio::time::Instant::now() + settings.max_lifetime;
    let stream = async_stream(move |tx| async move {
        let _slot = slot;
        if tx
            .send(SseEvent::default().event("hello").data(hello.to_string()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::select! {
                e = rx.recv() => e,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = tx.send(SseEvent::default().event("bye").data("{\"reason\":\"lifetime\"}")).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            let Some(e) = next else {
                let _ = tx
                    .send(
                        SseEvent::default()
                            .event("bye")
                            .data("{\"reason\":\"engine\"}"),
                    )
                    .await;
                return;
            };
            if !scope.admits(&e) {
                continue;
            }
            let Ok(data) = serde_json::to_string(&e) else {
                continue;
            };
            let out = SseEvent::default()
                .id(e.id.clone())
                .event(event_name(&e))
                .data(data);
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(settings.keepalive)))
}

/// A stream fed by a task through a small channel; the task ends when the client goes away
/// (the receiver is dropped with the response body).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchboard_state::{AgentStatus, QueueId};

    fn ev(kind: EventKind) -> Event {
        Event {
            id: "1".into(),
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn an_agent_sees_its_own_events_and_its_calls_progress_only() {
        let me = AgentId::parse("me").unwrap();
        let other = AgentId::parse("other").unwrap();
        let (mine, theirs) = (CallId::parse("c1").unwrap(), CallId::parse("c2").unwrap());
        let q = QueueId::parse("q").unwrap();
        let mut scope = Scope::Agent {
            agent: me.clone(),
            calls: HashSet::new(),
        };
        let queued = |call: &CallId| {
            ev(EventKind::CallQueued {
                call: call.clone(),
                queue: q.clone(),
                position: 1,
                eta_ms: 0,
            })
        };
        let offered = |call: &CallId, agent: &AgentId| {
            ev(EventKind::CallOffered {
                call: call.clone(),
                agent: agent.clone(),
                queue: q.clone(),
                lease_until_ms: 0,
                callback: false,
            })
        };
        let ended = |call: &CallId| {
            ev(EventKind::CallEnded {
                call: call.clone(),
                queue: q.clone(),
                reason: "completed".into(),
            })
        };
        // Before the offer, a waiting call is none of the agent's business.
        assert!(!scope.admits(&queued(&mine)));
        assert!(scope.admits(&offered(&mine, &me)));
        assert!(!scope.admits(&offered(&theirs, &other)));
        assert!(scope.admits(&ended(&mine)));
        assert!(!scope.admits(&ended(&theirs)));
        let state = |agent: &AgentId| {
            ev(EventKind::AgentState {
                agent: agent.clone(),
                from: AgentStatus::Ready,
                to: AgentStatus::NotReady,
                reason: None,
                call: None,
            })
        };
        assert!(scope.admits(&state(&me)));
        assert!(!scope.admits(&state(&other)));
        assert!(!scope.admits(&ev(EventKind::QueueConfigured { queue: q.clone() })));
        let mut all = Scope::Tenant;
        assert!(all.admits(&queued(&theirs)) && all.admits(&state(&other)));
    }

    #[test]
    fn stream_slots_are_counted_per_principal_and_tenant_and_given_back() {
        let limiter = Arc::new(StreamLimiter::default());
        let settings = EventStreamSettings {
            max_per_user: 2,
            max_per_tenant: 3,
            ..Default::default()
        };
        let (t, u1, u2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a = limiter.acquire(t, u1, &settings).unwrap();
        let _b = limiter.acquire(t, u1, &settings).unwrap();
        assert!(limiter.acquire(t, u1, &settings).is_none(), "per user");
        let _c = limiter.acquire(t, u2, &settings).unwrap();
        assert!(limiter.acquire(t, u2, &settings).is_none(), "per tenant");
        drop(a);
        assert_eq!(limiter.open(t), 2);
        assert!(limiter.acquire(t, u2, &settings).is_some());
    }
}
