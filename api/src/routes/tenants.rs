//! Platform-operator routes: the tenants registry. These are the only handlers that cross
//! tenants, so they use `system_txn` for the registry and a tenant transaction for the tenant's
//! own rows (its first admin, its audit log).

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{tenants, users};
use switchboard_db::sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use switchboard_db::{Access, DbError};
use switchboard_domain::{DisplayName, Email, Password, Role, Slug, TenantId, TenantStatus};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{Page, PageParams, audit};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, PlatformOperator, TenantCtx};
use crate::routes::users::{NewUser, UserView, insert_user};

/// The most seats one tenant may be given.
pub const MAX_SEAT_LIMIT: i32 = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    #[schema(value_type = String, example = "active")]
    pub status: TenantStatus,
    pub plan: String,
    pub seat_limit: i32,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
}

impl TryFrom<tenants::Model> for TenantView {
    type Error = ApiError;
    fn try_from(t: tenants::Model) -> Result<Self, ApiError> {
        Ok(Self {
            status: TenantStatus::parse(&t.status).map_err(ApiError::internal)?,
            id: t.id,
            slug: t.slug,
            name: t.name,
            plan: t.plan,
            seat_limit: t.seat_limit,
            created_at: t.created_at,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(value_type = String, example = "acme")]
    pub slug: Slug,
    #[schema(value_type = String)]
    pub name: DisplayName,
    #[serde(default = "default_plan")]
    pub plan: String,
    pub seat_limit: i32,
    /// The tenant's first tenant admin.
    pub admin: NewUser,
}

fn default_plan() -> String {
    "standard".into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub admin: UserView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(value_type = Option<String>)]
    pub name: Option<DisplayName>,
    #[schema(value_type = Option<String>)]
    pub status: Option<TenantStatus>,
    pub plan: Option<String>,
    pub seat_limit: Option<i32>,
}

fn check_limit(n: i32) -> Result<(), ApiError> {
    if (0..=MAX_SEAT_LIMIT).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::Validation(format!(
            "seat_limit: must be 0 to {MAX_SEAT_LIMIT}"
        )))
    }
}

fn check_plan(p: &str) -> Result<(), ApiError> {
    if (1..=40).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(ApiError::Validation("plan: 1 to 40 of a-z, 0-9, -".into()))
    }
}

fn db(e: switchboard_db::sea_orm::DbErr) -> ApiError {
    DbError::from(e).into()
}

/// Creates a tenant and its first tenant admin.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn create_tenant(
    State(app): State<AppState>,
    op: PlatformOperator,
    ApiJson(req): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    check_limit(req.seat_limit)?;
    check_plan(&req.plan)?;
    let created = create_tenant_with_admin(
        &app,
        Some(&op),
        req.slug,
        req.name,
        &req.plan,
        req.seat_limit,
        req.admin,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a tenant row and its first admin (also used by bootstrap and the demo seed).
pub async fn create_tenant_with_admin(
    app: &AppState,
    op: Option<&TenantCtx>,
    slug: Slug,
    name: DisplayName,
    plan: &str,
    seat_limit: i32,
    admin: NewUser,
) -> Result<CreatedTenant, ApiError> {
    let password_hash = app.tokens.hash_password(admin.password.as_str()).await?;
    let id = Uuid::now_v7();
    let now = Utc::now();
    let sys = app.db.system_txn(Access::Write).await?;
    let row = tenants::ActiveModel {
        id: Set(id),
        slug: Set(slug.as_str().to_owned()),
        name: Set(name.as_str().to_owned()),
        status: Set(TenantStatus::Active.as_str().to_owned()),
        plan: Set(plan.to_owned()),
        seat_limit: Set(seat_limit),
        tokens_valid_after: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(sys.conn())
    .await
    .map_err(|e| match DbError::from(e) {
        DbError::Conflict(_) => ApiError::Conflict("slug: already taken".into()),
        e => e.into(),
    })?;
    sys.commit().await?;
    let tenant = TenantView::try_from(row)?;
    let tx = app.db.tenant_txn(TenantId(id), Access::Write).await?;
    let admin = insert_user(&tx, admin, Role::TenantAdmin, password_hash).await?;
    if let Some(op) = op {
        let ctx = TenantCtx {
            tenant_id: TenantId(id),
            ..op.clone()
        };
        audit(
            &tx,
            &ctx,
            "create",
            "tenant",
            Some(id),
            None::<&()>,
            Some(&tenant),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(CreatedTenant { tenant, admin })
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageParams),
    responses((status = 200, body = Page<TenantView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn list_tenants(
    State(app): State<AppState>,
    _op: PlatformOperator,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<TenantView>>, ApiError> {
    let limit = page.limit.unwrap_or(crate::common::DEFAULT_PAGE);
    if !(1..=crate::common::MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest("limit: must be 1 to 200".into()));
    }
    let after = page
        .cursor
        .as_deref()
        .map(crate::common::decode_cursor)
        .transpose()?;
    let sys = app.db.system_txn(Access::Read).await?;
    let mut q = tenants::Entity::find()
        .order_by_asc(tenants::Column::Id)
        .limit(limit + 1);
    if let Some(a) = after {
        q = q.filter(tenants::Column::Id.gt(a));
    }
    let mut rows = q.all(sys.conn()).await.map_err(db)?;
    sys.commit().await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| crate::common::encode_cursor(r.id)))
        .flatten();
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(TenantView::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = Uuid, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn get_tenant(
    State(app): State<AppState>,
    _op: PlatformOperator,
    IdPath(id): IdPath,
) -> Result<Json<TenantView>, ApiError> {
    let sys = app.db.system_txn(Access::Read).await?;
    let row = tenants::Entity::find_by_id(id)
        .one(sys.conn())
        .await
        .map_err(db)?
        .ok_or(ApiError::NotFound)?;
    sys.commit().await?;
    Ok(Json(row.try_into()?))
}

/// Changes a tenant: name, plan, seat limit, or status (suspending revokes all its tokens).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = Uuid, Path)),
    request_body = UpdateTenant,
    responses((status = 200, body = TenantView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn update_tenant(
    State(app): State<AppState>,
    op: PlatformOperator,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateTenant>,
) -> Result<Json<TenantView>, ApiError> {
    if let Some(n) = req.seat_limit {
        check_limit(n)?;
    }
    if let Some(p) = &req.plan {
        check_plan(p)?;
    }
    let sys = app.db.system_txn(Access::Write).await?;
    let row = tenants::Entity::find_by_id(id)
        .lock_exclusive()
        .one(sys.conn())
        .await
        .map_err(db)?
        .ok_or(ApiError::NotFound)?;
    let before = TenantView::try_from(row.clone())?;
    let now = Utc::now();
    let mut am: tenants::ActiveModel = row.into();
    if let Some(n) = req.name {
        am.name = Set(n.as_str().to_owned());
    }
    if let Some(p) = req.plan {
        am.plan = Set(p);
    }
    if let Some(n) = req.seat_limit {
        am.seat_limit = Set(n);
    }
    if let Some(s) = req.status {
        am.status = Set(s.as_str().to_owned());
        if s == TenantStatus::Suspended {
            am.tokens_valid_after = Set(Some(now));
        }
    }
    am.updated_at = Set(now);
    let row = am.update(sys.conn()).await.map_err(db)?;
    sys.commit().await?;
    let after = TenantView::try_from(row)?;
    app.standing.forget_tenant(id);
    let tx = app.db.tenant_txn(TenantId(id), Access::Write).await?;
    let ctx = TenantCtx {
        tenant_id: TenantId(id),
        ..op.0.clone()
    };
    audit(
        &tx,
        &ctx,
        "update",
        "tenant",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Makes sure the platform tenant and one operator exist (`switchboard admin create-operator`,
/// `switchboard up --demo`). Returns the operator's user id; idempotent by email.
pub async fn ensure_operator(
    app: &AppState,
    email: Email,
    password: Password,
) -> Result<Uuid, ApiError> {
    let sys = app.db.system_txn(Access::Read).await?;
    let platform = tenants::Entity::find()
        .filter(tenants::Column::Slug.eq(crate::PLATFORM_TENANT_SLUG))
        .one(sys.conn())
        .await
        .map_err(db)?;
    sys.commit().await?;
    let new_user = NewUser {
        email: email.clone(),
        display_name: DisplayName::parse("Platform operator")?,
        password,
        role: None,
    };
    let Some(platform) = platform else {
        let created = create_tenant_with_admin(
            app,
            None,
            Slug::parse(crate::PLATFORM_TENANT_SLUG)?,
            DisplayName::parse("Switchboard platform")?,
            "platform",
            0,
            new_user,
        )
        .await?;
        // Its first user is an operator, not a tenant admin.
        let tx = app
            .db
            .tenant_txn(TenantId(created.tenant.id), Access::Write)
            .await?;
        let mut u = users::ActiveModel::new();
        u.role = Set(Role::PlatformOperator.as_str().to_owned());
        tx.update(u, |q| q.filter(users::Column::Id.eq(created.admin.id)))
            .await?;
        tx.commit().await?;
        return Ok(created.admin.id);
    };
    let tx = app
        .db
        .tenant_txn(TenantId(platform.id), Access::Write)
        .await?;
    let existing = tx
        .first::<users::Entity>(|q| q.filter(users::Column::Email.eq(email.as_str())))
        .await?;
    if let Some(u) = existing {
        tx.commit().await?;
        return Ok(u.id);
    }
    let hash = app.tokens.hash_password(new_user.password.as_str()).await?;
    let user = insert_user(&tx, new_user, Role::PlatformOperator, hash).await?;
    tx.commit().await?;
    Ok(user.id)
}

/// A tenant's outbound calling settings: the toll-fraud guard's dial policy, the caller id its
/// calls present, and its concurrency caps. Set by the platform operator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettingsView {
    /// `{"home_country": "1", "allowed_prefixes": ["+1415"], "allow_international": false,
    /// "allow_premium": false}`; premium and international are blocked unless enabled, a
    /// non-empty prefix list narrows further.
    #[schema(value_type = Object)]
    pub dial_policy: switchboard_sip_guard::DialPolicy,
    /// E.164 number presented on outbound calls; the tenant's first number when unset.
    pub caller_id: Option<String>,
    /// Concurrent outbound calls of the whole tenant on a gateway node (1 to 10,000).
    pub max_concurrent_calls: i32,
    /// Concurrent outbound calls of one seat (1 to 10).
    pub max_calls_per_seat: i32,
}

/// Reads a tenant's outbound settings (the default when none were set).
#[utoipa::path(get, path = "/v1/tenants/{id}/outbound", tag = "tenants", params(("id" = Uuid, Path)),
    responses((status = 200, body = OutboundSettingsView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn get_outbound(
    State(app): State<AppState>,
    _op: PlatformOperator,
    IdPath(id): IdPath,
) -> Result<Json<OutboundSettingsView>, ApiError> {
    let tx = app.db.tenant_txn(TenantId(id), Access::Read).await?;
    tx.tenant().await?;
    let s = tx
        .outbound_settings()
        .await?
        .unwrap_or_else(switchboard_db::sip::OutboundSettings::safe_default);
    tx.commit().await?;
    let dial_policy = switchboard_sip_guard::DialPolicy::from_json(&s.dial_policy)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(Json(OutboundSettingsView {
        dial_policy,
        caller_id: s.caller_id,
        max_concurrent_calls: s.max_concurrent_calls,
        max_calls_per_seat: s.max_calls_per_seat,
    }))
}

/// Replaces a tenant's outbound settings.
#[utoipa::path(put, path = "/v1/tenants/{id}/outbound", tag = "tenants", params(("id" = Uuid, Path)),
    request_body = OutboundSettingsView,
    responses((status = 200, body = OutboundSettingsView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn put_outbound(
    State(app): State<AppState>,
    op: PlatformOperator,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<OutboundSettingsView>,
) -> Result<Json<OutboundSettingsView>, ApiError> {
    req.dial_policy
        .validate()
        .map_err(|e| ApiError::Validation(format!("dial_policy: {e}")))?;
    let caller_id = match &req.caller_id {
        Some(n) => Some(
            switchboard_domain::PhoneNumber::parse(n)
                .map_err(|e| ApiError::Validation(format!("caller_id: {e}")))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    if !(1..=10_000).contains(&req.max_concurrent_calls)
        || !(1..=10).contains(&req.max_calls_per_seat)
    {
        return Err(ApiError::Validation(
            "max_concurrent_calls: 1 to 10000; max_calls_per_seat: 1 to 10".into(),
        ));
    }
    let dial_policy =
        serde_json::to_string(&req.dial_policy).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let tx = app.db.tenant_txn(TenantId(id), Access::Write).await?;
    tx.tenant().await?;
    let settings = switchboard_db::sip::OutboundSettings {
        dial_policy,
        caller_id: caller_id.clone(),
        max_concurrent_calls: req.max_concurrent_calls,
        max_calls_per_seat: req.max_calls_per_seat,
    };
    tx.set_outbound_settings(&settings).await?;
    let view = OutboundSettingsView { caller_id, ..req };
    let ctx = TenantCtx {
        tenant_id: TenantId(id),
        ..op.0.clone()
    };
    audit(
        &tx,
        &ctx,
        "set_outbound",
        "tenant",
        Some(id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(view))
}
