//! Phone numbers (E.164 DIDs and service numbers) a tenant owns, each optionally routed to a
//! queue. A number belongs to at most one tenant platform-wide.

use crate::json::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{phone_numbers, queues};
use switchboard_db::sea_orm::{ActiveModelBehavior, ColumnTrait, QueryFilter, Set};
use switchboard_db::{Access, DbError, TenantTxn};
use switchboard_domain::{DisplayName, NumberKind, PhoneNumber};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{
    IdempotencyKey, Page, PageParams, Resource, audit, get_resource, list_resource, stored,
};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, Supervisor, TenantAdmin};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NumberView {
    pub id: Uuid,
    /// E.164, e.g. `+14155550100`.
    pub number: String,
    #[schema(value_type = String, example = "did")]
    pub kind: NumberKind,
    pub label: String,
    pub queue_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
}

impl TryFrom<phone_numbers::Model> for NumberView {
    type Error = ApiError;
    fn try_from(n: phone_numbers::Model) -> Result<Self, ApiError> {
        Ok(Self {
            kind: stored(NumberKind::parse(&n.kind))?,
            id: n.id,
            number: n.number,
            label: n.label,
            queue_id: n.queue_id,
            created_at: n.created_at,
        })
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNumber {
    #[schema(value_type = String, example = "+14155550100")]
    pub number: PhoneNumber,
    #[schema(value_type = String, example = "did")]
    pub kind: NumberKind,
    #[schema(value_type = String)]
    pub label: DisplayName,
    pub queue_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNumber {
    #[schema(value_type = Option<String>)]
    pub label: Option<DisplayName>,
    /// Route to this queue, or `null` for no route.
    #[serde(default, deserialize_with = "crate::common::explicit_null")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub queue_id: Option<Option<Uuid>>,
}

async fn check_queue(tx: &TenantTxn, queue: Uuid) -> Result<(), ApiError> {
    tx.first::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(queue)))
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::Validation("queue_id: no such queue".into()))
}

/// Adds a number to the tenant. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/numbers", tag = "numbers", request_body = CreateNumber,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe creation")),
    responses((status = 201, body = NumberView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_number(
    State(app): State<AppState>,
    admin: TenantAdmin,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateNumber>,
) -> Result<Response, ApiError> {
    let idem = IdempotencyKey::from_headers(&headers, "POST /v1/numbers", &req)?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    if let Some(idem) = &idem
        && let Some(replay) = idem.replay(&tx).await?
    {
        return Ok(replay);
    }
    if let Some(q) = req.queue_id {
        check_queue(&tx, q).await?;
    }
    let row = tx
        .insert(phone_numbers::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(admin.tenant_id.0),
            number: Set(req.number.as_str().to_owned()),
            kind: Set(req.kind.as_str().to_owned()),
            label: Set(req.label.as_str().to_owned()),
            queue_id: Set(req.queue_id),
            created_at: Set(Utc::now()),
        })
        .await
        .map_err(|e| match e {
            DbError::Conflict(_) => ApiError::Conflict("number: already assigned".into()),
            e => e.into(),
        })?;
    let view = NumberView::try_from(row)?;
    audit(
        &tx,
        &admin,
        "create",
        "number",
        Some(view.id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    if let Some(idem) = &idem {
        idem.store(&tx, StatusCode::CREATED, &view).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Lists the tenant's numbers.
#[utoipa::path(get, path = "/v1/numbers", tag = "numbers", params(PageParams),
    responses((status = 200, body = Page<NumberView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_numbers(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<NumberView>>, ApiError> {
    list_resource::<phone_numbers::Entity>(&app, sup.tenant_id, &page).await
}

/// One number.
#[utoipa::path(get, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = Uuid, Path)),
    responses((status = 200, body = NumberView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_number(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<NumberView>, ApiError> {
    get_resource::<phone_numbers::Entity>(&app, sup.tenant_id, id).await
}

/// Changes a number's label or route.
#[utoipa::path(patch, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = Uuid, Path)),
    request_body = UpdateNumber,
    responses((status = 200, body = NumberView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn update_number(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateNumber>,
) -> Result<Json<NumberView>, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let by_id = |q: switchboard_db::sea_orm::Select<phone_numbers::Entity>| {
        q.filter(phone_numbers::Column::Id.eq(id))
    };
    let before = NumberView::try_from(tx.one_for_update::<phone_numbers::Entity>(by_id).await?)?;
    let mut am = phone_numbers::ActiveModel::new();
    if let Some(l) = req.label {
        am.label = Set(l.as_str().to_owned());
    }
    if let Some(q) = req.queue_id {
        if let Some(q) = q {
            check_queue(&tx, q).await?;
        }
        am.queue_id = Set(q);
    }
    tx.update(am, |q| q.filter(phone_numbers::Column::Id.eq(id)))
        .await?;
    let after = NumberView::try_from(tx.one::<phone_numbers::Entity>(by_id).await?)?;
    audit(
        &tx,
        &admin,
        "update",
        "number",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Removes a number from the tenant.
#[utoipa::path(delete, path = "/v1/numbers/{id}", tag = "numbers", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn delete_number(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before = NumberView::try_from(
        tx.one::<phone_numbers::Entity>(|q| q.filter(phone_numbers::Column::Id.eq(id)))
            .await?,
    )?;
    tx.delete::<phone_numbers::Entity>(|q| q.filter(phone_numbers::Column::Id.eq(id)))
        .await?;
    audit(
        &tx,
        &admin,
        "delete",
        "number",
        Some(id),
        Some(&before),
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Resource for phone_numbers::Entity {
    type View = NumberView;
    fn id_column() -> phone_numbers::Column {
        phone_numbers::Column::Id
    }
    fn id_of(row: &phone_numbers::Model) -> Uuid {
        row.id
    }
    fn view(row: phone_numbers::Model) -> Result<NumberView, ApiError> {
        NumberView::try_from(row)
    }
}
