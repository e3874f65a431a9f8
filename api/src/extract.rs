//! Request extractors: who is calling ([`TenantCtx`] and the role guards built on it), and
//! JSON/query/path extractors whose rejections are problem+json instead of axum's plain text.
//!
//! A handler names the weakest role it accepts in its signature (`admin: TenantAdmin`); the
//! guard exists only after the check passed, so a handler cannot forget it.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use switchboard_db::entities::{api_keys, tenants, users};
use switchboard_db::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use switchboard_db::{Access, Database};
use switchboard_domain::{Role, TenantId, TenantStatus, UserId};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Standing, secret_hash};
use crate::error::ApiError;

/// The authenticated caller, built once per request from the bearer token or API key.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant_id: TenantId,
    /// `None` for an API key.
    pub user_id: Option<UserId>,
    pub api_key_id: Option<Uuid>,
    pub role: Role,
    /// The request id (`x-request-id`), for the audit log.
    pub request_id: Option<String>,
}

impl TenantCtx {
    /// The acting principal's id, for the audit log.
    pub fn actor(&self) -> Option<Uuid> {
        self.user_id.map(|u| u.0).or(self.api_key_id)
    }
}

async fn load_standing(db: &Database, tenant: TenantId, user: Uuid) -> Result<Standing, ApiError> {
    let tx = db.tenant_txn(tenant, Access::Read).await?;
    let t = tx.first_tenant().await?;
    let u = tx
        .first::<users::Entity>(|q| q.filter(users::Column::Id.eq(user)))
        .await?;
    tx.commit().await?;
    Ok(Standing {
        tenant_active: t
            .as_ref()
            .is_some_and(|t| t.status == TenantStatus::Active.as_str()),
        tenant_valid_after: t.and_then(|t| t.tokens_valid_after),
        user_exists: u.is_some(),
        user_disabled: u.as_ref().is_some_and(|u| u.disabled),
        user_valid_after: u.and_then(|u| u.tokens_valid_after),
    })
}

/// The user an access token names, after every check a request's token passes: signature,
/// algorithm and registered claims ([`crate::auth::TokenService::verify_access`]), then the
/// revocation state (tenant active, user not disabled, issued after `tokens_valid_after`).
/// The one rule for access tokens: the extractors use it, and so does the media gateway for
/// a browser's SIP REGISTER with `Authorization: Bearer` (wired in the binary).
pub async fn user_of_access_token(
    app: &crate::App,
    token: &str,
) -> Result<(TenantId, UserId, Role), ApiError> {
    let claims = app.tokens.verify_access(token)?;
    user_of_claims(app, claims).await
}

/// The user behind verified claims (an access token's or a stream ticket's), after the
/// revocation check (the user's and tenant's standing).
pub(crate) async fn user_of_claims(
    app: &crate::App,
    claims: crate::auth::Claims,
) -> Result<(TenantId, UserId, Role), ApiError> {
    let user = Uuid::parse_str(&claims.sub)
        .map_err(|_| ApiError::Unauthorized("invalid token subject"))?;
    let tenant = TenantId(claims.tid);
    let standing = match app.standing.get(user) {
        Some(s) => s,
        None => {
            let s = load_standing(&app.db, tenant, user).await?;
            app.standing.put(user, tenant.0, s.clone());
            s
        }
    };
    standing.admits(claims.iat_ms)?;
    Ok((tenant, UserId(user), claims.role))
}

async fn api_key_ctx(app: &AppState, key: &str) -> Result<TenantCtx, ApiError> {
    if key.len() > 128 {
        return Err(ApiError::Unauthorized("invalid API key"));
    }
    let hash = secret_hash(key);
    let sys = app.db.system_txn(Access::Read).await?;
    let row = api_keys::Entity::find()
        .filter(api_keys::Column::KeyHash.eq(hash))
        .one(sys.conn())
        .await
        .map_err(|e| ApiError::from(switchboard_db::DbError::from(e)))?;
    let Some(row) = row.filter(|k| k.revoked_at.is_none()) else {
        return Err(ApiError::Unauthorized("invalid API key"));
    };
    let tenant = tenants::Entity::find_by_id(row.tenant_id)
        .one(sys.conn())
        .await
        .map_err(|e| ApiError::from(switchboard_db::DbError::from(e)))?;
    sys.commit().await?;
    if tenant.is_none_or(|t| t.status != TenantStatus::Active.as_str()) {
        return Err(ApiError::TenantSuspended);
    }
    let role = Role::parse(&row.role).map_err(ApiError::internal)?;
    Ok(TenantCtx {
        tenant_id: TenantId(row.tenant_id),
        user_id: None,
        api_key_id: Some(row.id),
        role,
        request_id: None,
    })
}

/// The caller behind an `Authorization` header value (`Bearer <JWT or API key>`).
pub(crate) async fn ctx_from_authorization(
    app: &AppState,
    value: &str,
) -> Result<TenantCtx, ApiError> {
    let token = value
        .strip_prefix("Bearer ")
        .ok_or(ApiError::Unauthorized("expected a Bearer token"))?
        .trim();
    if token.starts_with("sbk_") {
        api_key_ctx(app, token).await
    } else {
        ctx_from_claims(app, app.tokens.verify_access(token)?).await
    }
}

/// The caller behind verified token claims, after the revocation check (the user's and
/// tenant's standing).
pub(crate) async fn ctx_from_claims(
    app: &AppState,
    claims: crate::auth::Claims,
) -> Result<TenantCtx, ApiError> {
    let (tenant_id, user, role) = user_of_claims(app, claims).await?;
    Ok(TenantCtx {
        tenant_id,
        user_id: Some(user),
        api_key_id: None,
        role,
        request_id: None,
    })
}

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing Authorization header"))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
        let ctx = ctx_from_authorization(app, value).await?;
        let ctx = TenantCtx {
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect()),
            ..ctx
        };
        ctx.record_in_span();
        Ok(ctx)
    }
}

impl TenantCtx {
    /// Names the tenant and user in the request's tracing span.
    pub(crate) fn record_in_span(&self) {
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(self.tenant_id));
        if let Some(u) = self.user_id {
            span.record("user_id", tracing::field::display(u));
        }
    }
}

macro_rules! role_guard {
    ($(#[$meta:meta])* $name:ident, $min:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub TenantCtx);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
                let ctx = TenantCtx::from_request_parts(parts, app).await?;
                let min: Role = $min;
                let allowed = if min == Role::PlatformOperator {
                    ctx.role == Role::PlatformOperator
                } else {
                    ctx.role != Role::PlatformOperator && ctx.role.at_least(min)
                };
                if !allowed {
                    return Err(ApiError::Forbidden(concat!("requires role ", stringify!($min))));
                }
                Ok($name(ctx))
            }
        }

        impl std::ops::Deref for $name {
            type Target = TenantCtx;
            fn deref(&self) -> &TenantCtx {
                &self.0
            }
        }
    };
}

role_guard!(
    /// Any user of a tenant (agent, supervisor or tenant admin).
    AnyTenantUser,
    Role::Agent
);
role_guard!(
    /// A supervisor or tenant admin.
    Supervisor,
    Role::Supervisor
);
role_guard!(
    /// A tenant admin.
    TenantAdmin,
    Role::TenantAdmin
);
role_guard!(
    /// A platform operator (outside all tenants).
    PlatformOperator,
    Role::PlatformOperator
);

/// JSON body with problem+json rejections: 415 without `application/json`, 400 for syntax
/// errors, 413 past the body limit, 422 for unknown fields, missing fields and invalid values.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::MalformedJson(body_text(&e))),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Validation(body_text(&e))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            )),
            Err(JsonRejection::BytesRejection(e)) => {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Err(ApiError::PayloadTooLarge)
                } else {
                    Err(ApiError::MalformedJson(e.body_text()))
                }
            }
            Err(e) => Err(ApiError::MalformedJson(e.body_text())),
        }
    }
}

fn body_text(e: &dyn std::error::Error) -> String {
    // axum's message wraps serde's; the innermost source is the useful part.
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner.to_string()
}

/// Query string with a problem+json rejection (400).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::BadRequest(body_text(&e)))
    }
}

/// A path id. A malformed one is reported as not found: no resource has that id.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| IdPath(id))
            .map_err(|_: PathRejection| ApiError::NotFound)
    }
}
