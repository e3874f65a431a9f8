//! Call control by api: click-to-call from the agent's desktop, and blind transfer of a
//! connected call or pause/resume of its recording (by its agent, or by a supervisor for any
//! agent of the tenant).
//!
//! The media lives on a gateway node, so these handlers only check who may ask and what the
//! engine says the agent is doing, then put the request on the state engine's control bus
//! (`switchboard_state::control`): the node holding the agent's phone (dial) or the call
//! (transfer) carries it out and answers. A request no node answers within
//! [`CONTROL_WAIT`] is reported as 503 and not retried (a second dial would ring twice).

use std::time::Duration;

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::users;
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
use switchboard_domain::PhoneNumber;
use switchboard_state::{AgentStatus, ControlAction, ControlReply};
use utoipa::ToSchema;
use uuid::Uuid;

use super::agent_state::engine_ids;
use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{AnyTenantUser, ApiJson, IdPath, Supervisor, TenantCtx};

/// How long the api waits for the gateway node's answer.
pub const CONTROL_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialRequest {
    /// The outside number, E.164.
    #[schema(value_type = String, example = "+14155550100")]
    pub number: PhoneNumber,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// An E.164 number (the tenant's dial policy applies), a queue id, or an agent's SIP
    /// username. 1 to 128 characters.
    pub target: String,
}

/// The gateway accepted the request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallControlAccepted {
    /// The call (the new call's id for a dial; the transferred call's otherwise). Its CDR has
    /// the same `call_id`.
    pub call_id: Option<String>,
    pub detail: String,
}

async fn ask_gateway(
    app: &AppState,
    action: ControlAction,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let bus = app.engine.control_bus();
    let reply = switchboard_state::control::request(bus.as_ref(), action, CONTROL_WAIT).await?;
    match reply {
        Some(ControlReply {
            status: 202,
            reason,
            call_id,
        }) => Ok((
            StatusCode::ACCEPTED,
            Json(CallControlAccepted {
                call_id,
                detail: reason,
            }),
        )),
        Some(ControlReply { status, reason, .. }) => Err(ApiError::CallControl(status, reason)),
        None => Err(ApiError::CallControl(
            503,
            "no media gateway answered; nothing was done".into(),
        )),
    }
}

/// Transfers the call `user` of the caller's tenant is connected to.
async fn transfer_call_of(
    app: &AppState,
    ctx: &TenantCtx,
    user: Uuid,
    target: String,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    if target.is_empty() || target.len() > 128 || target.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "target: 1 to 128 printable characters".into(),
        ));
    }
    let call = current_call_of(app, ctx, user).await?;
    ask_gateway(
        app,
        ControlAction::Transfer {
            tenant: ctx.tenant_id.to_string(),
            call,
            target,
        },
    )
    .await
}

/// The call `user` of the caller's tenant is connected to (409 when none).
async fn current_call_of(app: &AppState, ctx: &TenantCtx, user: Uuid) -> Result<String, ApiError> {
    let (tenant, agent) = engine_ids(ctx, user)?;
    let view = app.engine.agent(&tenant, &agent).await?;
    match view {
        Some(v) if v.status == AgentStatus::OnCall => v.call,
        _ => None,
    }
    .map(|c| c.as_str().to_owned())
    .ok_or_else(|| ApiError::CallControl(409, "the agent is not on a call".into()))
}

/// Pauses or resumes the recording of the call `user` is connected to.
async fn pause_recording_of(
    app: &AppState,
    ctx: &TenantCtx,
    user: Uuid,
    pause: bool,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let call = current_call_of(app, ctx, user).await?;
    ask_gateway(
        app,
        ControlAction::Recording {
            tenant: ctx.tenant_id.to_string(),
            call,
            pause,
        },
    )
    .await
}

/// The user behind an agent-facing request (API keys have no call of their own).
fn own_user(user: &AnyTenantUser) -> Result<Uuid, ApiError> {
    user.user_id.map(|u| u.0).ok_or(ApiError::Forbidden(
        "an API key has no call; use /v1/agents/{id}/...",
    ))
}

/// Checks that `id` is a user of the supervisor's tenant (404 otherwise).
async fn tenant_user(app: &AppState, sup: &Supervisor, id: Uuid) -> Result<(), ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    tx.one::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Pauses the recording of the caller's current call (say before a customer reads out a
/// card number): what follows is silence in the file, and the gap is listed in the
/// recording's `pauses`. Pausing a paused recording changes nothing.
#[utoipa::path(post, path = "/v1/agent/recording/pause", tag = "agent",
    responses((status = 202, body = CallControlAccepted), (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn pause_own_recording(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let me = own_user(&user)?;
    pause_recording_of(&app, &user, me, true).await
}

/// Resumes the recording of the caller's current call.
#[utoipa::path(post, path = "/v1/agent/recording/resume", tag = "agent",
    responses((status = 202, body = CallControlAccepted), (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn resume_own_recording(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let me = own_user(&user)?;
    pause_recording_of(&app, &user, me, false).await
}

/// Pauses the recording of the call an agent of the tenant is connected to (supervisors).
#[utoipa::path(post, path = "/v1/agents/{id}/recording/pause", tag = "agent", params(("id" = Uuid, Path)),
    responses((status = 202, body = CallControlAccepted), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn pause_agent_recording(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    tenant_user(&app, &sup, id).await?;
    pause_recording_of(&app, &sup, id, true).await
}

/// Resumes the recording of the call an agent of the tenant is connected to (supervisors).
#[utoipa::path(post, path = "/v1/agents/{id}/recording/resume", tag = "agent", params(("id" = Uuid, Path)),
    responses((status = 202, body = CallControlAccepted), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn resume_agent_recording(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    tenant_user(&app, &sup, id).await?;
    pause_recording_of(&app, &sup, id, false).await
}

/// Click-to-call: rings the caller's own phone and, when it is picked up, dials the number
/// through the tenant's carrier trunk with the tenant's caller id (dial policy and call caps
/// apply as for a call dialled on the phone).
#[utoipa::path(post, path = "/v1/agent/dial", tag = "agent", request_body = DialRequest,
    responses((status = 202, body = CallControlAccepted), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn dial(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<DialRequest>,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let me = user.user_id.map(|u| u.0).ok_or(ApiError::Forbidden(
        "click-to-call rings a user's phone, not an API key's",
    ))?;
    // No registered phone: no node would answer; say so at once.
    let (tenant, agent) = engine_ids(&user, me)?;
    let now = super::agent_state::now_ms();
    if app.engine.contact(&tenant, &agent, now).await?.is_none() {
        return Err(ApiError::CallControl(
            480,
            "register your SIP phone first".into(),
        ));
    }
    ask_gateway(
        &app,
        ControlAction::Dial {
            tenant: user.tenant_id.to_string(),
            agent: me.to_string(),
            number: req.number.as_str().to_owned(),
        },
    )
    .await
}

/// Blind-transfers the caller's current call to a number, a queue or another agent.
#[utoipa::path(post, path = "/v1/agent/transfer", tag = "agent", request_body = TransferRequest,
    responses((status = 202, body = CallControlAccepted), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn transfer_own_call(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    let me = own_user(&user)?;
    transfer_call_of(&app, &user, me, req.target).await
}

/// Blind-transfers the call an agent of the tenant is connected to (supervisors).
#[utoipa::path(post, path = "/v1/agents/{id}/transfer", tag = "agent", params(("id" = Uuid, Path)),
    request_body = TransferRequest,
    responses((status = 202, body = CallControlAccepted), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn transfer_agent_call(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<(StatusCode, Json<CallControlAccepted>), ApiError> {
    tenant_user(&app, &sup, id).await?;
    transfer_call_of(&app, &sup, id, req.target).await
}
