//! Tenant-admin tools: API keys for server-to-server integration, and the audit log.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::{api_keys, audit_log};
use switchboard_db::sea_orm::{ActiveModelBehavior, ColumnTrait, QueryFilter, Set};
use switchboard_domain::{DisplayName, Role};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{new_secret, secret_hash};
use crate::common::{Page, PageParams, Resource, audit, list_resource};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, TenantAdmin};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The role the key acts with.
    pub role: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339_opt")]
    pub revoked_at: Option<chrono::DateTime<Utc>>,
}

impl From<api_keys::Model> for ApiKeyView {
    fn from(k: api_keys::Model) -> Self {
        Self {
            id: k.id,
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(value_type = String, example = "CRM integration")]
    pub name: DisplayName,
    /// `agent`, `supervisor` or `tenant_admin` (default `supervisor`).
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret, shown once. Send it as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Creates an API key; the secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "admin", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_api_key(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let role = req.role.unwrap_or(Role::Supervisor);
    if role == Role::PlatformOperator {
        return Err(ApiError::Validation(
            "role: must be agent, supervisor or tenant_admin".into(),
        ));
    }
    let secret = new_secret("sbk_");
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let key: ApiKeyView = tx
        .insert(api_keys::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(admin.tenant_id.0),
            name: Set(req.name.as_str().to_owned()),
            role: Set(role.as_str().to_owned()),
            key_hash: Set(secret_hash(&secret)),
            prefix: Set(secret.chars().take(10).collect()),
            created_by: Set(admin.actor()),
            created_at: Set(Utc::now()),
            revoked_at: Set(None),
        })
        .await?
        .into();
    audit(
        &tx,
        &admin,
        "create",
        "api_key",
        Some(key.id),
        None::<&()>,
        Some(&key),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, secret })))
}

/// Lists API keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<ApiKeyView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn list_api_keys(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
    list_resource::<api_keys::Entity>(&app, admin.tenant_id, &page).await
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn revoke_api_key(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let mut am = api_keys::ActiveModel::new();
    am.revoked_at = Set(Some(Utc::now()));
    let n = tx
        .update(am, |q| {
            q.filter(api_keys::Column::Id.eq(id))
                .filter(api_keys::Column::RevokedAt.is_null())
        })
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    audit(
        &tx,
        &admin,
        "revoke",
        "api_key",
        Some(id),
        None::<&()>,
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<Uuid>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub at: chrono::DateTime<Utc>,
}

impl From<audit_log::Model> for AuditView {
    fn from(a: audit_log::Model) -> Self {
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        Self {
            id: a.id,
            actor_id: a.actor_id,
            action: a.action,
            entity: a.entity,
            entity_id: a.entity_id,
            before: parse(a.before),
            after: parse(a.after),
            request_id: a.request_id,
            at: a.at,
        }
    }
}

/// The tenant's audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<AuditView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn list_audit(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    list_resource::<audit_log::Entity>(&app, admin.tenant_id, &page).await
}

impl Resource for api_keys::Entity {
    type View = ApiKeyView;
    fn id_column() -> api_keys::Column {
        api_keys::Column::Id
    }
    fn id_of(row: &api_keys::Model) -> Uuid {
        row.id
    }
    fn view(row: api_keys::Model) -> Result<ApiKeyView, ApiError> {
        Ok(row.into())
    }
}

impl Resource for audit_log::Entity {
    type View = AuditView;
    fn id_column() -> audit_log::Column {
        audit_log::Column::Id
    }
    fn id_of(row: &audit_log::Model) -> Uuid {
        row.id
    }
    fn view(row: audit_log::Model) -> Result<AuditView, ApiError> {
        Ok(row.into())
    }
}
