//! Seats: licensed agent positions, provisioned up to the tenant's seat limit. Every change is
//! written to `seat_events` in the same transaction, because billing is computed from that
//! history.

use crate::json::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{seat_events, seats, users};
use switchboard_db::sea_orm::{ActiveModelBehavior, ColumnTrait, QueryFilter, QueryOrder, Set};
use switchboard_db::{Access, DbError, TenantTxn};
use switchboard_domain::{DisplayName, SeatStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{
    IdempotencyKey, Page, PageParams, Resource, audit, get_resource, list_resource, stored,
};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, Supervisor, TenantAdmin, TenantCtx};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SeatView {
    pub id: Uuid,
    pub label: String,
    #[schema(value_type = String, example = "provisioned")]
    pub status: SeatStatus,
    pub user_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub updated_at: chrono::DateTime<Utc>,
}

impl TryFrom<seats::Model> for SeatView {
    type Error = ApiError;
    fn try_from(s: seats::Model) -> Result<Self, ApiError> {
        Ok(Self {
            status: stored(SeatStatus::parse(&s.status))?,
            id: s.id,
            label: s.label,
            user_id: s.user_id,
            created_at: s.created_at,
            updated_at: s.updated_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatEventView {
    pub id: Uuid,
    pub seat_id: Uuid,
    pub from_status: Option<String>,
    pub to_status: String,
    pub user_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub at: chrono::DateTime<Utc>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSeat {
    #[schema(value_type = String, example = "Desk 12")]
    pub label: DisplayName,
    /// Assign the seat to this user at once.
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSeat {
    #[schema(value_type = Option<String>)]
    pub label: Option<DisplayName>,
    /// `provisioned`, `suspended` or `released` (final: a released seat is not billed and
    /// cannot come back).
    #[schema(value_type = Option<String>)]
    pub status: Option<SeatStatus>,
    /// Assign to a user, or `null` to unassign.
    #[serde(default, deserialize_with = "crate::common::explicit_null")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub user_id: Option<Option<Uuid>>,
}

async fn check_assignee(tx: &TenantTxn, user: Uuid) -> Result<(), ApiError> {
    let found = tx
        .first::<users::Entity>(|q| q.filter(users::Column::Id.eq(user)))
        .await?;
    match found {
        Some(u) if !u.disabled => Ok(()),
        _ => Err(ApiError::Validation("user_id: no such active user".into())),
    }
}

async fn record_event(
    tx: &TenantTxn,
    ctx: &TenantCtx,
    seat: &SeatView,
    from: Option<SeatStatus>,
) -> Result<(), ApiError> {
    tx.insert(seat_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(ctx.tenant_id.0),
        seat_id: Set(seat.id),
        from_status: Set(from.map(|s| s.as_str().to_owned())),
        to_status: Set(seat.status.as_str().to_owned()),
        user_id: Set(seat.user_id),
        actor_id: Set(ctx.actor()),
        at: Set(seat.updated_at),
    })
    .await?;
    Ok(())
}

fn user_taken(e: DbError) -> ApiError {
    match e {
        DbError::Conflict(_) => ApiError::Conflict("user_id: user already holds a seat".into()),
        e => e.into(),
    }
}

/// Provisions a seat, if the tenant's seat limit allows. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/seats", tag = "seats", request_body = CreateSeat,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe creation")),
    responses((status = 201, body = SeatView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_seat(
    State(app): State<AppState>,
    admin: TenantAdmin,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateSeat>,
) -> Result<Response, ApiError> {
    let idem = IdempotencyKey::from_headers(&headers, "POST /v1/seats", &req)?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    // Locking the tenant row serialises provisioning within the tenant: no oversubscription.
    let tenant = tx.lock_tenant().await?;
    if let Some(idem) = &idem
        && let Some(replay) = idem.replay(&tx).await?
    {
        return Ok(replay);
    }
    let in_use = tx
        .count::<seats::Entity>(|q| {
            q.filter(seats::Column::Status.ne(SeatStatus::Released.as_str()))
        })
        .await?;
    if in_use >= u64::try_from(tenant.seat_limit).unwrap_or(0) {
        return Err(ApiError::SeatLimit(format!(
            "all {} seats of this tenant are in use",
            tenant.seat_limit
        )));
    }
    if let Some(u) = req.user_id {
        check_assignee(&tx, u).await?;
    }
    let now = Utc::now();
    let row = tx
        .insert(seats::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(admin.tenant_id.0),
            label: Set(req.label.as_str().to_owned()),
            status: Set(SeatStatus::Provisioned.as_str().to_owned()),
            user_id: Set(req.user_id),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await
        .map_err(user_taken)?;
    let seat = SeatView::try_from(row)?;
    record_event(&tx, &admin, &seat, None).await?;
    audit(
        &tx,
        &admin,
        "create",
        "seat",
        Some(seat.id),
        None::<&()>,
        Some(&seat),
    )
    .await?;
    if let Some(idem) = &idem {
        idem.store(&tx, StatusCode::CREATED, &seat).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(seat)).into_response())
}

/// Lists seats.
#[utoipa::path(get, path = "/v1/seats", tag = "seats", params(PageParams),
    responses((status = 200, body = Page<SeatView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_seats(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<SeatView>>, ApiError> {
    list_resource::<seats::Entity>(&app, sup.tenant_id, &page).await
}

/// One seat.
#[utoipa::path(get, path = "/v1/seats/{id}", tag = "seats", params(("id" = Uuid, Path)),
    responses((status = 200, body = SeatView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_seat(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<SeatView>, ApiError> {
    get_resource::<seats::Entity>(&app, sup.tenant_id, id).await
}

/// Changes a seat's label, status (provisioned, suspended, released) or assigned user.
#[utoipa::path(patch, path = "/v1/seats/{id}", tag = "seats", params(("id" = Uuid, Path)),
    request_body = UpdateSeat,
    responses((status = 200, body = SeatView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn update_seat(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateSeat>,
) -> Result<Json<SeatView>, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before = SeatView::try_from(
        tx.one_for_update::<seats::Entity>(|q| q.filter(seats::Column::Id.eq(id)))
            .await?,
    )?;
    if before.status == SeatStatus::Released {
        return Err(ApiError::Conflict(
            "seat is released; provision a new one".into(),
        ));
    }
    let now = Utc::now();
    let mut am = seats::ActiveModel::new();
    am.updated_at = Set(now);
    if let Some(l) = req.label {
        am.label = Set(l.as_str().to_owned());
    }
    // Suspended seats count against the limit like provisioned ones, so no status change
    // here can exceed it.
    let mut status = before.status;
    if let Some(s) = req.status {
        status = s;
        am.status = Set(s.as_str().to_owned());
    }
    let mut user = before.user_id;
    if let Some(u) = req.user_id {
        if let Some(u) = u {
            check_assignee(&tx, u).await?;
        }
        user = u;
    }
    if status == SeatStatus::Released {
        user = None;
    }
    am.user_id = Set(user);
    tx.update(am, |q| q.filter(seats::Column::Id.eq(id)))
        .await
        .map_err(user_taken)?;
    let after = SeatView::try_from(
        tx.one::<seats::Entity>(|q| q.filter(seats::Column::Id.eq(id)))
            .await?,
    )?;
    if after.status != before.status || after.user_id != before.user_id {
        record_event(&tx, &admin, &after, Some(before.status)).await?;
    }
    audit(
        &tx,
        &admin,
        "update",
        "seat",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// A seat's history: every status and assignment change with its time.
#[utoipa::path(get, path = "/v1/seats/{id}/history", tag = "seats", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<SeatEventView>), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_seat_history(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<Vec<SeatEventView>>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    tx.one::<seats::Entity>(|q| q.filter(seats::Column::Id.eq(id)))
        .await?;
    let rows = tx
        .all::<seat_events::Entity>(|q| {
            q.filter(seat_events::Column::SeatId.eq(id))
                .order_by_asc(seat_events::Column::Id)
        })
        .await?;
    tx.commit().await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| SeatEventView {
                id: e.id,
                seat_id: e.seat_id,
                from_status: e.from_status,
                to_status: e.to_status,
                user_id: e.user_id,
                actor_id: e.actor_id,
                at: e.at,
            })
            .collect(),
    ))
}

impl Resource for seats::Entity {
    type View = SeatView;
    fn id_column() -> seats::Column {
        seats::Column::Id
    }
    fn id_of(row: &seats::Model) -> Uuid {
        row.id
    }
    fn view(row: seats::Model) -> Result<SeatView, ApiError> {
        SeatView::try_from(row)
    }
}
