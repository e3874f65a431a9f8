//! Pieces every resource module uses: cursor pagination, the audit log writer and
//! Idempotency-Key handling for POSTs that create billable things.

use crate::json::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_db::TenantOwned;
use switchboard_db::entities::{audit_log, idempotency_keys};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter, Select, Set};
use switchboard_db::{Access, TenantTxn};
use switchboard_domain::TenantId;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::TenantCtx;

pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 200;

/// Cursor pagination: pass `next_cursor` of one page as `cursor` to get the next.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(s: &str) -> Result<Uuid, ApiError> {
    let bad = || ApiError::BadRequest("cursor: not a cursor from this list".into());
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    Uuid::from_slice(&bytes).map_err(|_| bad())
}

/// A tenant-owned table served by the generic list and get handlers: its id column and how a
/// row becomes its wire view.
pub trait Resource: TenantOwned {
    type View: Serialize;
    fn id_column() -> Self::Column;
    fn id_of(row: &Self::Model) -> Uuid;
    fn view(row: Self::Model) -> Result<Self::View, ApiError>;
}

/// `GET /v1/<resources>`: one page of the caller's tenant's rows.
pub async fn list_resource<R: Resource>(
    app: &AppState,
    tenant: TenantId,
    params: &PageParams,
) -> Result<Json<Page<R::View>>, ApiError> {
    let (limit, after) = page_bounds(params)?;
    let tx = app.db.tenant_txn(tenant, Access::Read).await?;
    let rows = tx.page::<R>(R::id_column(), after, limit + 1).await?;
    tx.commit().await?;
    Ok(Json(page_of::<R>(rows, limit)?))
}

/// `GET /v1/<resources>/{id}`: one row of the caller's tenant, 404 for any other.
pub async fn get_resource<R: Resource>(
    app: &AppState,
    tenant: TenantId,
    id: Uuid,
) -> Result<Json<R::View>, ApiError> {
    let tx = app.db.tenant_txn(tenant, Access::Read).await?;
    let row = tx.by_id::<R>(R::id_column(), id).await?;
    tx.commit().await?;
    Ok(Json(R::view(row)?))
}

/// Lists `R` in id order (ids are UUIDv7, so that is creation order), one page at a time.
pub async fn list_page<R: Resource>(
    tx: &TenantTxn,
    params: &PageParams,
    refine: impl FnOnce(Select<R>) -> Select<R>,
) -> Result<Page<R::View>, ApiError> {
    let id_column = R::id_column();
    let (limit, after) = page_bounds(params)?;
    let rows = tx
        .all::<R>(|q| switchboard_db::paged(refine(q), id_column, after, limit + 1))
        .await?;
    page_of::<R>(rows, limit)
}

/// A page request's size (checked) and the id it starts after.
fn page_bounds(params: &PageParams) -> Result<(u64, Option<Uuid>), ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be 1 to {MAX_PAGE}"
        )));
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok((limit, after))
}

/// The page of up to `limit` of `rows` (fetched with one more, to know whether more follow).
fn page_of<R: Resource>(mut rows: Vec<R::Model>, limit: u64) -> Result<Page<R::View>, ApiError> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(R::id_of(r)))
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(R::view).collect::<Result<_, _>>()?,
        next_cursor,
    })
}

/// Writes an audit entry (who, what, when, before/after) in the same transaction as the change.
pub async fn audit<B: Serialize, A: Serialize>(
    tx: &TenantTxn,
    ctx: &TenantCtx,
    action: &str,
    entity: &str,
    entity_id: Option<Uuid>,
    before: Option<&B>,
    after: Option<&A>,
) -> Result<(), ApiError> {
    tx.insert(audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(ctx.tenant_id.0),
        actor_id: Set(ctx.actor()),
        action: Set(action.to_owned()),
        entity: Set(entity.to_owned()),
        entity_id: Set(entity_id),
        before: Set(before.and_then(|b| serde_json::to_string(b).ok())),
        after: Set(after.and_then(|a| serde_json::to_string(a).ok())),
        request_id: Set(ctx.request_id.clone()),
        at: Set(chrono::Utc::now()),
    })
    .await?;
    Ok(())
}

/// A validated `Idempotency-Key` header and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    request_hash: String,
}

impl IdempotencyKey {
    /// Reads the header; `None` if absent. 1 to 255 visible ASCII characters.
    pub fn from_headers(
        headers: &HeaderMap,
        route: &str,
        body: &impl Serialize,
    ) -> Result<Option<Self>, ApiError> {
        let Some(v) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = v
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::BadRequest("Idempotency-Key: 1 to 255 visible ASCII characters".into())
            })?;
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(body).map_err(ApiError::internal)?);
        let request_hash = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Some(Self {
            key: format!("{route} {key}"),
            request_hash,
        }))
    }

    /// The response stored for this key, if a request with it already succeeded. A different
    /// request under the same key is refused.
    pub async fn replay(&self, tx: &TenantTxn) -> Result<Option<Response>, ApiError> {
        let row = tx
            .first::<idempotency_keys::Entity>(|q| {
                q.filter(idempotency_keys::Column::Key.eq(self.key.clone()))
            })
            .await?;
        match row {
            None => Ok(None),
            Some(r) if r.request_hash != self.request_hash => Err(ApiError::IdempotencyMismatch),
            Some(r) => {
                let status = StatusCode::from_u16(r.status as u16).map_err(ApiError::internal)?;
                let body: serde_json::Value =
                    serde_json::from_str(&r.body).map_err(ApiError::internal)?;
                let mut resp = (status, axum::Json(body)).into_response();
                resp.headers_mut().insert(
                    "idempotent-replayed",
                    axum::http::HeaderValue::from_static("true"),
                );
                Ok(Some(resp))
            }
        }
    }

    /// Stores the response in the same transaction as the change it describes.
    pub async fn store(
        &self,
        tx: &TenantTxn,
        status: StatusCode,
        body: &impl Serialize,
    ) -> Result<(), ApiError> {
        tx.insert(idempotency_keys::ActiveModel {
            tenant_id: Set(tx.tenant_id().0),
            key: Set(self.key.clone()),
            request_hash: Set(self.request_hash.clone()),
            status: Set(i32::from(status.as_u16())),
            body: Set(serde_json::to_string(body).map_err(ApiError::internal)?),
            created_at: Set(chrono::Utc::now()),
        })
        .await?;
        Ok(())
    }
}

/// Reads and validates a JSON-string-enum column into its domain type; a bad stored value is an
/// internal error, not the caller's.
pub fn stored<T>(r: Result<T, switchboard_domain::DomainError>) -> Result<T, ApiError> {
    r.map_err(ApiError::internal)
}

/// For PATCH bodies: `Some(None)` for an explicit `null`, `None` when the field is absent.
pub fn explicit_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}
