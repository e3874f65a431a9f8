//! Agent presence and state, queue statistics and the tenant's event log, over the state engine
//! (Redis in production, in memory on the embedded default).
//!
//! The desktop logs its agent in with a session (the connection presence is tied to), keeps it
//! alive with heartbeats, and moves between ready and not ready. Supervisors read any agent's
//! state, queue statistics and the resumable event log. Ids are the database's: tenant, user
//! and queue UUIDs, so every engine call is checked against the caller's tenant first.

use std::collections::BTreeMap;

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{agent_skills, queue_members, queues, seats, skills, users};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
use switchboard_db::{Access, TenantTxn};
use switchboard_domain::SeatStatus;
use switchboard_state::{
    AgentId, AgentView, Command, ConnId, Event, MemberConfig, QueueConfig, QueueId, ReasonCode,
    StateError, Strategy as EngineStrategy, TenantId as EngineTenant,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{AnyTenantUser, ApiJson, ApiQuery, IdPath, Supervisor, TenantCtx};

/// Wall-clock milliseconds, the engine's notion of now.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Backend(_) => ApiError::internal(e),
            StateError::IllegalTransition { .. } | StateError::NotOffered { .. } => {
                ApiError::Conflict(e.to_string())
            }
            StateError::UnknownAgent(_) => {
                ApiError::Conflict("agent is not logged in (start a session first)".into())
            }
            StateError::UnknownCall(_) | StateError::UnknownQueue(_) => ApiError::NotFound,
            StateError::QueueFull(_)
            | StateError::DuplicateCall(_)
            | StateError::StaleConnection(_) => ApiError::Conflict(e.to_string()),
            StateError::InvalidId { .. } | StateError::Invalid(_) => {
                ApiError::Validation(e.to_string())
            }
        }
    }
}

pub(crate) fn engine_ids(ctx: &TenantCtx, user: Uuid) -> Result<(EngineTenant, AgentId), ApiError> {
    Ok((
        EngineTenant::parse(ctx.tenant_id.to_string())?,
        AgentId::parse(user.to_string())?,
    ))
}

fn caller(ctx: &TenantCtx) -> Result<Uuid, ApiError> {
    ctx.user_id.map(|u| u.0).ok_or(ApiError::Forbidden(
        "an agent session needs a user, not an API key",
    ))
}

fn engine_strategy(s: &str) -> EngineStrategy {
    match s {
        "round_robin" => EngineStrategy::RoundRobin,
        "ring_all" => EngineStrategy::RingAll,
        "random" => EngineStrategy::Random,
        "fewest_calls" => EngineStrategy::FewestCalls,
        "least_talk_time" => EngineStrategy::LeastTalkTime,
        "linear" => EngineStrategy::Linear,
        "highest_skill" => EngineStrategy::HighestSkill,
        _ => EngineStrategy::LongestIdle,
    }
}

/// The engine's configuration of a queue, from its database row and its members.
pub async fn queue_config(tx: &TenantTxn, queue: &queues::Model) -> Result<QueueConfig, ApiError> {
    let members = tx
        .all::<queue_members::Entity>(|q| q.filter(queue_members::Column::QueueId.eq(queue.id)))
        .await?;
    let mut cfg = QueueConfig::new(
        QueueId::parse(queue.id.to_string())?,
        engine_strategy(&queue.strategy),
        Vec::new(),
    );
    let mut members: Vec<_> = members.into_iter().map(|m| (m.tier, m.user_id)).collect();
    members.sort();
    cfg.members = members
        .into_iter()
        .map(|(tier, user)| {
            Ok(MemberConfig {
                agent: AgentId::parse(user.to_string())?,
                // Tier 1 in the API is the engine's tier 0.
                tier: u32::try_from(tier.max(1) - 1).unwrap_or(0),
            })
        })
        .collect::<Result<_, StateError>>()?;
    let ms = |s: i32| u64::try_from(s).unwrap_or(0) * 1000;
    cfg.max_len = u32::try_from(queue.max_length).unwrap_or(1);
    cfg.max_wait_ms = Some(ms(queue.max_wait_s));
    cfg.wrap_up_ms = ms(queue.wrap_up_s);
    cfg.service_level_ms = ms(queue.service_level_s);
    Ok(cfg)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// The connection presence is tied to (a desktop tab or softphone registration); a new one
    /// is made when absent. 1 to 64 of `A-Za-z0-9-_.:@+#`.
    pub connection: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub connection: String,
    /// The agent's state (see `GET /v1/agent/state`).
    #[schema(value_type = Object)]
    pub state: Option<AgentView>,
    /// Send a heartbeat well before this many milliseconds pass.
    pub presence_ttl_ms: u64,
}

/// Logs the calling agent in to take calls: requires a provisioned seat; loads the agent's
/// skills and queues into the state engine. The agent starts not ready (`login`).
#[utoipa::path(post, path = "/v1/agent/session", tag = "agent", request_body = StartSession,
    responses((status = 200, body = SessionView), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn start_session(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<StartSession>,
) -> Result<Json<SessionView>, ApiError> {
    let me = caller(&user)?;
    let (tenant, agent) = engine_ids(&user, me)?;
    let conn = ConnId::parse(
        req.connection
            .unwrap_or_else(|| format!("web-{}", Uuid::new_v4().simple())),
    )?;
    let tx = app.db.tenant_txn(user.tenant_id, Access::Read).await?;
    tx.first::<seats::Entity>(|q| {
        q.filter(seats::Column::UserId.eq(me))
            .filter(seats::Column::Status.eq(SeatStatus::Provisioned.as_str()))
    })
    .await?
    .ok_or(ApiError::Forbidden(
        "no provisioned seat is assigned to this user",
    ))?;
    let levels = tx
        .all::<agent_skills::Entity>(|q| q.filter(agent_skills::Column::UserId.eq(me)))
        .await?;
    let skill_names: BTreeMap<Uuid, String> = tx
        .all::<skills::Entity>(|q| {
            q.filter(skills::Column::Id.is_in(levels.iter().map(|l| l.skill_id)))
        })
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let skills: BTreeMap<String, u32> = levels
        .iter()
        .filter_map(|l| {
            skill_names
                .get(&l.skill_id)
                .map(|n| (n.clone(), u32::try_from(l.level).unwrap_or(0)))
        })
        .collect();
    let memberships = tx
        .all::<queue_members::Entity>(|q| q.filter(queue_members::Column::UserId.eq(me)))
        .await?;
    let my_queues = tx
        .all::<queues::Entity>(|q| {
            q.filter(queues::Column::Id.is_in(memberships.iter().map(|m| m.queue_id)))
        })
        .await?;
    let mut cmds = Vec::with_capacity(my_queues.len() + 1);
    for q in &my_queues {
        cmds.push(Command::ConfigureQueue {
            config: queue_config(&tx, q).await?,
        });
    }
    tx.commit().await?;
    cmds.push(Command::Login {
        agent: agent.clone(),
        conn: conn.clone(),
        skills,
    });
    for result in app.engine.exec(&tenant, now_ms(), cmds).await? {
        result?;
    }
    let state = app.engine.agent(&tenant, &agent).await?;
    Ok(Json(SessionView {
        connection: conn.to_string(),
        state,
        presence_ttl_ms: app.engine_presence_ttl_ms,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub connection: String,
}

/// Keeps the calling agent's session alive.
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent", request_body = Heartbeat,
    responses((status = 204), (status = 409, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn heartbeat(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    let (tenant, agent) = engine_ids(&user, caller(&user)?)?;
    let conn = ConnId::parse(req.connection)?;
    app.engine
        .run(&tenant, now_ms(), Command::Heartbeat { agent, conn })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Logs the calling agent out; a call being offered goes back to its place in line.
#[utoipa::path(delete, path = "/v1/agent/session", tag = "agent",
    responses((status = 204), (status = 409, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn end_session(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<StatusCode, ApiError> {
    let (tenant, agent) = engine_ids(&user, caller(&user)?)?;
    app.engine
        .run(&tenant, now_ms(), Command::Logout { agent })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WantedState {
    Ready,
    NotReady,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetState {
    pub state: WantedState,
    /// Reason code for not ready (e.g. `break`, `training`); default `break`.
    pub reason: Option<String>,
    /// Extend the current wrap-up by this many seconds instead (1 to 3600).
    pub extend_wrap_up_s: Option<u64>,
}

/// Moves the calling agent to ready or not ready (with a reason), or extends wrap-up.
/// An illegal transition (e.g. ready while on a call) is refused with 409.
#[utoipa::path(put, path = "/v1/agent/state", tag = "agent", request_body = SetState,
    responses((status = 200, description = "The agent's state"), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn set_state(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<SetState>,
) -> Result<Json<Option<AgentView>>, ApiError> {
    let (tenant, agent) = engine_ids(&user, caller(&user)?)?;
    let cmd = match (req.extend_wrap_up_s, req.state) {
        (Some(s), _) if !(1..=3600).contains(&s) => {
            return Err(ApiError::Validation(
                "extend_wrap_up_s: must be 1 to 3600".into(),
            ));
        }
        (Some(s), _) => Command::ExtendWrapUp {
            agent: agent.clone(),
            extra_ms: s * 1000,
        },
        (None, WantedState::Ready) => Command::SetReady {
            agent: agent.clone(),
        },
        (None, WantedState::NotReady) => Command::SetNotReady {
            agent: agent.clone(),
            reason: ReasonCode::parse(req.reason.unwrap_or_else(|| "break".into()))?,
        },
    };
    app.engine.run(&tenant, now_ms(), cmd).await?;
    Ok(Json(app.engine.agent(&tenant, &agent).await?))
}

/// The calling agent's state.
#[utoipa::path(get, path = "/v1/agent/state", tag = "agent",
    responses((status = 200, description = "The agent's state, null before the first session")),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn get_own_state(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<Json<Option<AgentView>>, ApiError> {
    let (tenant, agent) = engine_ids(&user, caller(&user)?)?;
    Ok(Json(app.engine.agent(&tenant, &agent).await?))
}

/// Any agent's state in the caller's tenant.
#[utoipa::path(get, path = "/v1/agents/{id}/state", tag = "agent", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The agent's state, null before the first session"), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_agent_state(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<Option<AgentView>>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    tx.one::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?;
    tx.commit().await?;
    let (tenant, agent) = engine_ids(&sup, id)?;
    Ok(Json(app.engine.agent(&tenant, &agent).await?))
}

/// Live statistics of a queue: waiting, longest wait, agents by state, and today's service
/// level, ASA and abandon rate.
#[utoipa::path(get, path = "/v1/queues/{id}/stats", tag = "agent", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Queue statistics"), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_queue_stats(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<switchboard_state::QueueStats>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    let queue = tx
        .one::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?;
    let config = queue_config(&tx, &queue).await?;
    tx.commit().await?;
    let tenant = EngineTenant::parse(sup.tenant_id.to_string())?;
    let qid = config.queue.clone();
    match app.engine.queue_stats(&tenant, &qid, now_ms()).await {
        Err(StateError::UnknownQueue(_)) => {
            // Not yet known to the engine (no agent logged in since it started): configure it.
            app.engine
                .run(&tenant, now_ms(), Command::ConfigureQueue { config })
                .await?;
            Ok(Json(app.engine.queue_stats(&tenant, &qid, now_ms()).await?))
        }
        other => Ok(Json(other?)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Return events after this id (resume after a reconnect); from the oldest retained when
    /// absent.
    pub after: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// Pass as `after` to continue.
    pub last_id: Option<String>,
}

/// The tenant's event log (agent state changes, offers, call progress), oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "agent", params(EventParams),
    responses((status = 200, body = EventPage), (status = 400, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_events(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit: must be 1 to 1000".into()));
    }
    if params.after.as_ref().is_some_and(|a| a.len() > 64) {
        return Err(ApiError::BadRequest("after: not an event id".into()));
    }
    let tenant = EngineTenant::parse(sup.tenant_id.to_string())?;
    let events = app
        .engine
        .events_since(&tenant, params.after.as_deref(), limit)
        .await?;
    let last_id = events.last().map(|e| e.id.clone()).or(params.after);
    Ok(Json(EventPage { events, last_id }))
}
