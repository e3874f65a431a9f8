//! Login, token refresh (with rotation and reuse detection), logout, and `GET /v1/me`.

use crate::json::Json;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{refresh_tokens, tenants, users};
use switchboard_db::sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    Set,
};
use switchboard_db::{Access, DbError};
use switchboard_domain::{Role, TenantId, TenantStatus, UserId};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{ACCOUNT_FAILURE_BUDGET, SOURCE_FAILURE_BUDGET, new_secret, secret_hash};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, TenantCtx};
use crate::routes::users::UserView;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The tenant's slug (`platform` for platform operators).
    pub tenant: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The refresh token to revoke.
    pub refresh_token: Option<String>,
    /// Revoke every token of this user, on every device.
    #[serde(default)]
    pub everywhere: bool,
}

fn db(e: switchboard_db::sea_orm::DbErr) -> ApiError {
    DbError::from(e).into()
}

const BAD_LOGIN: ApiError = ApiError::Unauthorized("wrong tenant, email or password");

/// Issues an access token and a new refresh token for a user, inserting the latter with `conn`.
async fn issue_tokens(
    app: &AppState,
    conn: &impl ConnectionTrait,
    tenant: Uuid,
    user: Uuid,
    role: Role,
) -> Result<TokenResponse, ApiError> {
    let (access_token, expires_in) =
        app.tokens
            .issue_access(TenantId(tenant), UserId(user), role)?;
    let refresh = new_secret("sbr_");
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(app.tokens.settings().refresh_ttl)
        .map_err(ApiError::internal)?;
    refresh_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant),
        user_id: Set(user),
        token_hash: Set(secret_hash(&refresh)),
        expires_at: Set(now + ttl),
        revoked_at: Set(None),
        created_at: Set(now),
    }
    .insert(conn)
    .await
    .map_err(db)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in,
        refresh_token: refresh,
    })
}

/// Logs in with tenant slug, email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)),
    extensions(("x-min-role" = json!("public"))))]
pub async fn login(
    State(app): State<AppState>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if req.tenant.len() > 40 || req.email.len() > 254 || req.password.len() > 128 {
        return Err(BAD_LOGIN);
    }
    let email = req.email.trim().to_ascii_lowercase();
    let account_key = format!("account\0{}\0{email}", req.tenant);
    let source_key = format!(
        "source\0{}",
        source
            .map(|Extension(ConnectInfo(a))| a.ip().to_string())
            .unwrap_or_default()
    );
    let throttle = &app.login_throttle;
    throttle
        .check(&account_key, ACCOUNT_FAILURE_BUDGET)
        .and_then(|()| throttle.check(&source_key, SOURCE_FAILURE_BUDGET))
        .map_err(ApiError::TooManyRequests)?;
    let result = login_checked(&app, &req.tenant, email, &req.password).await;
    match &result {
        Err(ApiError::Unauthorized(_)) => {
            throttle.failed(&account_key);
            throttle.failed(&source_key);
        }
        Ok(_) => throttle.succeeded(&account_key),
        Err(_) => {}
    }
    result.map(Json)
}

async fn login_checked(
    app: &AppState,
    tenant_slug: &str,
    email: String,
    password: &str,
) -> Result<TokenResponse, ApiError> {
    let sys = app.db.system_txn(Access::Read).await?;
    let tenant = tenants::Entity::find()
        .filter(tenants::Column::Slug.eq(tenant_slug))
        .one(sys.conn())
        .await
        .map_err(db)?;
    let user = match &tenant {
        Some(t) => users::Entity::find()
            .filter(users::Column::TenantId.eq(t.id))
            .filter(users::Column::Email.eq(email))
            .one(sys.conn())
            .await
            .map_err(db)?,
        None => None,
    };
    sys.commit().await?;
    let ok = app
        .tokens
        .verify_password(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await;
    let (Some(tenant), Some(user), true) = (tenant, user, ok) else {
        tracing::info!("login failed");
        return Err(BAD_LOGIN);
    };
    if user.disabled {
        return Err(BAD_LOGIN);
    }
    if tenant.status != TenantStatus::Active.as_str() {
        return Err(ApiError::TenantSuspended);
    }
    let role = Role::parse(&user.role).map_err(ApiError::internal)?;
    let sys = app.db.system_txn(Access::Write).await?;
    let tokens = issue_tokens(app, sys.conn(), tenant.id, user.id, role).await?;
    sys.commit().await?;
    Ok(tokens)
}

/// Exchanges a refresh token for a new access token and a new refresh token. The old refresh
/// token stops working; presenting it again revokes every token of the user (it was stolen).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)),
    extensions(("x-min-role" = json!("public"))))]
pub async fn refresh(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    const BAD: ApiError = ApiError::Unauthorized("invalid refresh token");
    if req.refresh_token.len() > 128 || !req.refresh_token.starts_with("sbr_") {
        return Err(BAD);
    }
    let sys = app.db.system_txn(Access::Write).await?;
    let Some(row) = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(secret_hash(&req.refresh_token)))
        .one(sys.conn())
        .await
        .map_err(db)?
    else {
        return Err(BAD);
    };
    let now = Utc::now();
    if row.revoked_at.is_some() {
        // Reuse of a rotated token: someone else has it. Revoke the whole family.
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, now.into())
            .filter(refresh_tokens::Column::UserId.eq(row.user_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(sys.conn())
            .await
            .map_err(db)?;
        users::Entity::update_many()
            .col_expr(users::Column::TokensValidAfter, now.into())
            .filter(users::Column::Id.eq(row.user_id))
            .exec(sys.conn())
            .await
            .map_err(db)?;
        sys.commit().await?;
        app.standing.forget_user(row.user_id);
        tracing::warn!(user_id = %row.user_id, "refresh token reuse detected; all tokens revoked");
        return Err(BAD);
    }
    if row.expires_at < now {
        return Err(BAD);
    }
    let user = users::Entity::find_by_id(row.user_id)
        .one(sys.conn())
        .await
        .map_err(db)?
        .ok_or(BAD)?;
    let tenant = tenants::Entity::find_by_id(row.tenant_id)
        .one(sys.conn())
        .await
        .map_err(db)?
        .ok_or(BAD)?;
    if user.disabled {
        return Err(BAD);
    }
    if tenant.status != TenantStatus::Active.as_str() {
        return Err(ApiError::TenantSuspended);
    }
    let revoked = |after: Option<chrono::DateTime<Utc>>| after.is_some_and(|t| row.created_at < t);
    if revoked(user.tokens_valid_after) || revoked(tenant.tokens_valid_after) {
        return Err(BAD);
    }
    let mut old: refresh_tokens::ActiveModel = row.clone().into();
    old.revoked_at = Set(Some(now));
    old.update(sys.conn()).await.map_err(db)?;
    let role = Role::parse(&user.role).map_err(ApiError::internal)?;
    let tokens = issue_tokens(&app, sys.conn(), tenant.id, user.id, role).await?;
    sys.commit().await?;
    Ok(Json(tokens))
}

/// Revokes a refresh token, or with `everywhere` every token of the caller.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = LogoutRequest,
    responses((status = 204), (status = 401, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn logout(
    State(app): State<AppState>,
    ctx: TenantCtx,
    ApiJson(req): ApiJson<LogoutRequest>,
) -> Result<axum::http::StatusCode, ApiError> {
    let Some(user) = ctx.user_id else {
        return Err(ApiError::Forbidden("API keys cannot log out"));
    };
    let now = Utc::now();
    let tx = app.db.tenant_txn(ctx.tenant_id, Access::Write).await?;
    let mut q_active = refresh_tokens::ActiveModel::new();
    q_active.revoked_at = Set(Some(now));
    if req.everywhere {
        tx.update(q_active, |q| {
            q.filter(refresh_tokens::Column::UserId.eq(user.0))
                .filter(refresh_tokens::Column::RevokedAt.is_null())
        })
        .await?;
        let mut u = users::ActiveModel::new();
        u.tokens_valid_after = Set(Some(now));
        tx.update(u, |q| q.filter(users::Column::Id.eq(user.0)))
            .await?;
    } else if let Some(token) = req.refresh_token.filter(|t| t.len() <= 128) {
        tx.update(q_active, |q| {
            q.filter(refresh_tokens::Column::UserId.eq(user.0))
                .filter(refresh_tokens::Column::TokenHash.eq(secret_hash(&token)))
        })
        .await?;
    } else {
        return Err(ApiError::Validation(
            "refresh_token: required unless everywhere is true".into(),
        ));
    }
    tx.commit().await?;
    app.standing.forget_user(user.0);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The calling user.
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = UserView), (status = 401, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn get_me(
    State(app): State<AppState>,
    ctx: TenantCtx,
) -> Result<Json<UserView>, ApiError> {
    let Some(user) = ctx.user_id else {
        return Err(ApiError::NotFound);
    };
    let tx = app.db.tenant_txn(ctx.tenant_id, Access::Read).await?;
    let row = tx
        .one::<users::Entity>(|q| q.filter(users::Column::Id.eq(user.0)))
        .await?;
    tx.commit().await?;
    Ok(Json(UserView::from(row)))
}
