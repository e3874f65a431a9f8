//! Wrap-up: the tenant's disposition codes (what became of a call: `sale`, `callback`, ...)
//! and the agent's `POST /v1/agent/wrap-up`, which files a disposition and notes for the call
//! it just handled and ends its wrap-up.
//!
//! A call has at most one disposition (unique per tenant and call id). The agent who handled
//! the call may send it again, to correct it: the last one stands, so a retried request
//! changes nothing. Another agent's call is not found. The disposition is kept in its own table
//! rather than on the CDR, because the agent may finish wrap-up before the gateway has written
//! the CDR; `GET /v1/calls/{id}` joins the two.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::{call_dispositions, cdrs, disposition_codes};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter, QueryOrder, Set};
use switchboard_domain::DisplayName;
use switchboard_state::{AgentStatus, AgentView, Command, ReasonCode};
use utoipa::ToSchema;
use uuid::Uuid;

use super::agent_state::{engine_ids, now_ms};
use crate::AppState;
use crate::common::{Page, PageParams, Resource, audit, get_resource, list_page};
use crate::error::{ApiError, Problem};
use crate::extract::{AnyTenantUser, ApiJson, ApiQuery, IdPath, TenantAdmin};

/// Longest wrap-up notes, in characters.
pub const MAX_NOTES_CHARS: usize = 4000;
/// Most disposition codes a tenant may define.
pub const MAX_CODES: u64 = 500;

/// A tenant's disposition code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DispositionCodeView {
    pub id: Uuid,
    /// 1 to 64 of `a-z0-9_-`, unique in the tenant.
    pub code: String,
    pub label: String,
    /// Inactive codes are not offered at wrap-up (calls keep theirs).
    pub active: bool,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
}

impl From<disposition_codes::Model> for DispositionCodeView {
    fn from(m: disposition_codes::Model) -> Self {
        Self {
            id: m.id,
            code: m.code,
            label: m.label,
            active: m.active,
            created_at: m.created_at,
        }
    }
}

impl Resource for disposition_codes::Entity {
    type View = DispositionCodeView;
    fn id_column() -> disposition_codes::Column {
        disposition_codes::Column::Id
    }
    fn id_of(row: &disposition_codes::Model) -> Uuid {
        row.id
    }
    fn view(row: disposition_codes::Model) -> Result<DispositionCodeView, ApiError> {
        Ok(row.into())
    }
}

/// Checks a disposition code's spelling.
fn parse_code(code: &str) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(ApiError::Validation(
            "code: 1 to 64 of a-z, 0-9, _ and -".into(),
        ));
    }
    Ok(code.to_owned())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDispositionCode {
    #[schema(example = "sale")]
    pub code: String,
    #[schema(value_type = String, example = "Sale closed")]
    pub label: DisplayName,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDispositionCode {
    #[schema(value_type = Option<String>)]
    pub label: Option<DisplayName>,
    pub active: Option<bool>,
}

fn code_taken(e: switchboard_db::DbError) -> ApiError {
    match e {
        switchboard_db::DbError::Conflict(_) => ApiError::Conflict("code: already in use".into()),
        e => e.into(),
    }
}

/// Creates a disposition code.
#[utoipa::path(post, path = "/v1/disposition-codes", tag = "desktop",
    request_body = CreateDispositionCode,
    responses((status = 201, body = DispositionCodeView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_disposition_code(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiJson(req): ApiJson<CreateDispositionCode>,
) -> Result<(StatusCode, Json<DispositionCodeView>), ApiError> {
    let code = parse_code(&req.code)?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    if tx.count::<disposition_codes::Entity>(|q| q).await? >= MAX_CODES {
        return Err(ApiError::Conflict(format!(
            "a tenant has at most {MAX_CODES} disposition codes"
        )));
    }
    let view: DispositionCodeView = tx
        .insert(disposition_codes::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(admin.tenant_id.0),
            created_at: Set(Utc::now()),
            code: Set(code),
            label: Set(req.label.as_str().to_owned()),
            active: Set(true),
        })
        .await
        .map_err(code_taken)?
        .into();
    audit(
        &tx,
        &admin,
        "create",
        "disposition_code",
        Some(view.id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists the tenant's disposition codes (agents read them for the wrap-up form).
#[utoipa::path(get, path = "/v1/disposition-codes", tag = "desktop", params(PageParams),
    responses((status = 200, body = Page<DispositionCodeView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn list_disposition_codes(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<DispositionCodeView>>, ApiError> {
    let tx = app.db.tenant_txn(user.tenant_id, Access::Read).await?;
    let page = list_page::<disposition_codes::Entity>(&tx, &page, |q| q).await?;
    tx.commit().await?;
    Ok(Json(page))
}

/// One disposition code.
#[utoipa::path(get, path = "/v1/disposition-codes/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    responses((status = 200, body = DispositionCodeView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn get_disposition_code(
    State(app): State<AppState>,
    user: AnyTenantUser,
    IdPath(id): IdPath,
) -> Result<Json<DispositionCodeView>, ApiError> {
    get_resource::<disposition_codes::Entity>(&app, user.tenant_id, id).await
}

/// Changes a code's label or takes it out of (or back into) use.
#[utoipa::path(patch, path = "/v1/disposition-codes/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    request_body = UpdateDispositionCode,
    responses((status = 200, body = DispositionCodeView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn update_disposition_code(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateDispositionCode>,
) -> Result<Json<DispositionCodeView>, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: DispositionCodeView = tx
        .one::<disposition_codes::Entity>(|q| q.filter(disposition_codes::Column::Id.eq(id)))
        .await?
        .into();
    let mut values = disposition_codes::ActiveModel::default();
    if let Some(l) = &req.label {
        values.label = Set(l.as_str().to_owned());
    }
    if let Some(a) = req.active {
        values.active = Set(a);
    }
    if req.label.is_some() || req.active.is_some() {
        tx.update(values, |q| q.filter(disposition_codes::Column::Id.eq(id)))
            .await?;
    }
    let after: DispositionCodeView = tx
        .one::<disposition_codes::Entity>(|q| q.filter(disposition_codes::Column::Id.eq(id)))
        .await?
        .into();
    audit(
        &tx,
        &admin,
        "update",
        "disposition_code",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Deletes a disposition code (calls keep the code they were given).
#[utoipa::path(delete, path = "/v1/disposition-codes/{id}", tag = "desktop", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn delete_disposition_code(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: DispositionCodeView = tx
        .one::<disposition_codes::Entity>(|q| q.filter(disposition_codes::Column::Id.eq(id)))
        .await?
        .into();
    tx.delete::<disposition_codes::Entity>(|q| q.filter(disposition_codes::Column::Id.eq(id)))
        .await?;
    audit(
        &tx,
        &admin,
        "delete",
        "disposition_code",
        Some(id),
        Some(&before),
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the agent does once wrap-up is filed.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AfterWrapUp {
    /// Take the next call.
    #[default]
    Ready,
    /// Stay out of the queues (reason `after_call_work` unless given).
    NotReady,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrapUpRequest {
    /// The call (as in the agent's state and events; the CDR's `call_id`).
    pub call_id: String,
    /// One of the tenant's active disposition codes.
    pub disposition: String,
    /// At most 4000 characters.
    #[serde(default)]
    pub notes: String,
    /// Ready (default) or not ready afterwards, when the agent is still in this call's wrap-up.
    #[serde(default)]
    pub then: AfterWrapUp,
    /// Not-ready reason with `then: not_ready`.
    pub reason: Option<String>,
}

/// A call's disposition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DispositionView {
    pub call_id: String,
    pub disposition: String,
    pub notes: String,
    pub agent_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<call_dispositions::Model> for DispositionView {
    fn from(m: call_dispositions::Model) -> Self {
        Self {
            call_id: m.call_id,
            disposition: m.code,
            notes: m.notes,
            agent_id: m.agent_id,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WrapUpDone {
    #[serde(flatten)]
    pub disposition: DispositionView,
    /// The agent's state afterwards.
    #[schema(value_type = Object)]
    pub state: Option<AgentView>,
}

/// The CDR's call id for an engine call id: a transferred call's engine ids are
/// `<call id>.t<n>`, its CDR keeps the first.
pub fn base_call_id(call: &str) -> &str {
    match call.rsplit_once(".t") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => call,
    }
}

/// Refuses a call id that no call could have (length, characters).
pub fn check_call_id(call: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&call.len())
        && call
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+#".contains(&b));
    if !ok {
        return Err(ApiError::Validation("call_id: not a call id".into()));
    }
    Ok(())
}

/// Files the disposition and notes of a call the calling agent handled, and ends its wrap-up
/// (to ready, or not ready with `then`). Idempotent per call: sending it again replaces the
/// disposition and notes. A call the agent did not handle is 404.
#[utoipa::path(post, path = "/v1/agent/wrap-up", tag = "desktop", request_body = WrapUpRequest,
    responses((status = 200, body = WrapUpDone), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn wrap_up(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiJson(req): ApiJson<WrapUpRequest>,
) -> Result<Json<WrapUpDone>, ApiError> {
    let me = user
        .user_id
        .ok_or(ApiError::Forbidden("wrap-up needs a user, not an API key"))?
        .0;
    check_call_id(&req.call_id)?;
    let code = parse_code(&req.disposition)
        .map_err(|_| ApiError::Validation("disposition: not a disposition code".into()))?;
    if req.notes.chars().count() > MAX_NOTES_CHARS {
        return Err(ApiError::Validation(format!(
            "notes: at most {MAX_NOTES_CHARS} characters"
        )));
    }
    let reason = req
        .reason
        .clone()
        .map(ReasonCode::parse)
        .transpose()?
        .unwrap_or(ReasonCode::parse("after_call_work")?);
    let (tenant, agent) = engine_ids(&user, me)?;
    let view = app.engine.agent(&tenant, &agent).await?;
    let base = base_call_id(&req.call_id).to_owned();
    let current = view.as_ref().and_then(|v| {
        v.call
            .as_ref()
            .filter(|c| base_call_id(c.as_str()) == base)
            .map(|_| v.status)
    });

    let tx = app.db.tenant_txn(user.tenant_id, Access::Write).await?;
    let existing = tx
        .first::<call_dispositions::Entity>(|q| {
            q.filter(call_dispositions::Column::CallId.eq(base.clone()))
        })
        .await?;
    // Whose call is it: the agent's current one (the engine says so), one it already filed,
    // or a CDR it answered.
    let filed_by_me = existing.as_ref().is_some_and(|r| r.agent_id == Some(me));
    if current.is_none() && !filed_by_me {
        tx.first::<cdrs::Entity>(|q| {
            q.filter(cdrs::Column::CallId.eq(base.clone()))
                .filter(cdrs::Column::AgentId.eq(me))
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    }
    tx.first::<disposition_codes::Entity>(|q| {
        q.filter(disposition_codes::Column::Code.eq(code.clone()))
            .filter(disposition_codes::Column::Active.eq(true))
    })
    .await?
    .ok_or_else(|| ApiError::Validation("disposition: no such active code".into()))?;
    let now = Utc::now();
    match existing {
        Some(row) if row.agent_id != Some(me) => return Err(ApiError::NotFound),
        Some(row) => {
            tx.update(
                call_dispositions::ActiveModel {
                    code: Set(code.clone()),
                    notes: Set(req.notes.clone()),
                    updated_at: Set(now),
                    ..Default::default()
                },
                |q| q.filter(call_dispositions::Column::Id.eq(row.id)),
            )
            .await?;
        }
        None => {
            tx.insert(call_dispositions::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(user.tenant_id.0),
                created_at: Set(now),
                call_id: Set(base.clone()),
                agent_id: Set(Some(me)),
                code: Set(code.clone()),
                notes: Set(req.notes.clone()),
                updated_at: Set(now),
            })
            .await
            .map_err(|e| match e {
                // Two requests at once for the same call: the other one won.
                switchboard_db::DbError::Conflict(_) => {
                    ApiError::Conflict("call_id: disposition being filed by another request".into())
                }
                e => e.into(),
            })?;
        }
    }
    let row = tx
        .one::<call_dispositions::Entity>(|q| {
            q.filter(call_dispositions::Column::CallId.eq(base.clone()))
        })
        .await?;
    tx.commit().await?;

    // End wrap-up (only this call's: a later call's state is left alone).
    if current == Some(AgentStatus::WrapUp) {
        let cmd = match req.then {
            AfterWrapUp::Ready => Command::SetReady {
                agent: agent.clone(),
            },
            AfterWrapUp::NotReady => Command::SetNotReady {
                agent: agent.clone(),
                reason,
            },
        };
        app.engine.run(&tenant, now_ms(), cmd).await?;
    }
    tracing::info!(call = %base, disposition = %code, "wrap-up filed");
    Ok(Json(WrapUpDone {
        disposition: row.into(),
        state: app.engine.agent(&tenant, &agent).await?,
    }))
}

/// The disposition of a call, if one was filed (for `GET /v1/calls/{id}`).
pub async fn disposition_of(
    tx: &switchboard_db::TenantTxn,
    call_id: &str,
) -> Result<Option<DispositionView>, ApiError> {
    Ok(tx
        .first::<call_dispositions::Entity>(|q| {
            q.filter(call_dispositions::Column::CallId.eq(call_id))
                .order_by_desc(call_dispositions::Column::UpdatedAt)
        })
        .await?
        .map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transferred_calls_engine_id_maps_to_its_cdr() {
        assert_eq!(base_call_id("0190-ab.t1"), "0190-ab");
        assert_eq!(base_call_id("0190-ab.t12"), "0190-ab");
        assert_eq!(base_call_id("0190-ab"), "0190-ab");
        assert_eq!(base_call_id("x.tail"), "x.tail");
        assert_eq!(base_call_id("x.t"), "x.t");
        assert!(check_call_id("0190-ab.t1").is_ok());
        assert!(check_call_id("").is_err());
        assert!(check_call_id("has space").is_err());
        assert!(check_call_id(&"x".repeat(129)).is_err());
        assert!(parse_code("no-sale_2").is_ok());
        assert!(parse_code("Sale").is_err());
    }
}
