//! Users of a tenant and their agent profile (skills with levels, queue memberships by tier).

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::entities::{
    agent_skills, queue_members, queues, refresh_tokens, skills, users,
};
use switchboard_db::sea_orm::{ActiveModelBehavior, ColumnTrait, QueryFilter, Set};
use switchboard_db::{Access, TenantTxn};
use switchboard_domain::{DisplayName, Email, Password, Role};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{Page, PageParams, Resource, audit, get_resource, list_resource};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, Supervisor, TenantAdmin};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub display_name: String,
    #[schema(value_type = String, example = "agent")]
    pub role: String,
    pub disabled: bool,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
}

impl From<users::Model> for UserView {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(value_type = String, example = "ann@example.com")]
    pub email: Email,
    #[schema(value_type = String)]
    pub display_name: DisplayName,
    #[schema(value_type = String, min_length = 10, max_length = 128)]
    pub password: Password,
    /// `agent` (default), `supervisor` or `tenant_admin`.
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(value_type = Option<String>)]
    pub display_name: Option<DisplayName>,
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub password: Option<Password>,
}

fn tenant_role(role: Option<Role>) -> Result<Role, ApiError> {
    match role.unwrap_or(Role::Agent) {
        Role::PlatformOperator => Err(ApiError::Validation(
            "role: must be agent, supervisor or tenant_admin".into(),
        )),
        r => Ok(r),
    }
}

/// Inserts a user in the transaction's tenant.
pub async fn insert_user(
    tx: &TenantTxn,
    new: NewUser,
    role: Role,
    password_hash: String,
) -> Result<UserView, ApiError> {
    let now = Utc::now();
    let row = tx
        .insert(users::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tx.tenant_id().0),
            email: Set(new.email.as_str().to_owned()),
            display_name: Set(new.display_name.as_str().to_owned()),
            role: Set(role.as_str().to_owned()),
            password_hash: Set(password_hash),
            disabled: Set(false),
            tokens_valid_after: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await
        .map_err(|e| match e {
            switchboard_db::DbError::Conflict(_) => {
                ApiError::Conflict("email: a user with this email exists".into())
            }
            e => e.into(),
        })?;
    Ok(row.into())
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_user(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let role = tenant_role(req.role)?;
    let hash = app.tokens.hash_password(req.password.as_str()).await?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let user = insert_user(&tx, req, role, hash).await?;
    audit(
        &tx,
        &admin,
        "create",
        "user",
        Some(user.id),
        None::<&()>,
        Some(&user),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Lists users.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<UserView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_users(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<UserView>>, ApiError> {
    list_resource::<users::Entity>(&app, sup.tenant_id, &page).await
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_user(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<UserView>, ApiError> {
    get_resource::<users::Entity>(&app, sup.tenant_id, id).await
}

/// Changes a user. Changing role, password or disabling revokes the user's tokens.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn update_user(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let role = req.role.map(|r| tenant_role(Some(r))).transpose()?;
    let hash = match &req.password {
        Some(p) => Some(app.tokens.hash_password(p.as_str()).await?),
        None => None,
    };
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: UserView = tx
        .one_for_update::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?
        .into();
    let now = Utc::now();
    let mut am = users::ActiveModel::new();
    am.updated_at = Set(now);
    if let Some(n) = req.display_name {
        am.display_name = Set(n.as_str().to_owned());
    }
    let revoke = role.is_some() || hash.is_some() || req.disabled == Some(true);
    if let Some(r) = role {
        am.role = Set(r.as_str().to_owned());
    }
    if let Some(d) = req.disabled {
        am.disabled = Set(d);
    }
    if let Some(h) = hash {
        am.password_hash = Set(h);
    }
    if revoke {
        am.tokens_valid_after = Set(Some(now));
    }
    tx.update(am, |q| q.filter(users::Column::Id.eq(id)))
        .await?;
    if revoke {
        revoke_refresh_tokens(&tx, id).await?;
    }
    let after: UserView = tx
        .one::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?
        .into();
    audit(
        &tx,
        &admin,
        "update",
        "user",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    app.standing.forget_user(id);
    Ok(Json(after))
}

async fn revoke_refresh_tokens(tx: &TenantTxn, user: Uuid) -> Result<(), ApiError> {
    let mut r = refresh_tokens::ActiveModel::new();
    r.revoked_at = Set(Some(Utc::now()));
    tx.update(r, |q| {
        q.filter(refresh_tokens::Column::UserId.eq(user))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
    })
    .await?;
    Ok(())
}

/// Revokes every access and refresh token of a user (lost device, leaver).
#[utoipa::path(post, path = "/v1/users/{id}/revoke-tokens", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn revoke_user_tokens(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let mut am = users::ActiveModel::new();
    am.tokens_valid_after = Set(Some(Utc::now()));
    if tx
        .update(am, |q| q.filter(users::Column::Id.eq(id)))
        .await?
        == 0
    {
        return Err(ApiError::NotFound);
    }
    revoke_refresh_tokens(&tx, id).await?;
    audit(
        &tx,
        &admin,
        "revoke_tokens",
        "user",
        Some(id),
        None::<&()>,
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    app.standing.forget_user(id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillLevel {
    pub skill_id: Uuid,
    /// 1 (basic) to 10 (expert).
    pub level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueTier {
    pub queue_id: Uuid,
    /// 1 is offered calls first; higher tiers after the queue's tier wait.
    pub tier: i32,
}

/// An agent's routing profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    pub skills: Vec<SkillLevel>,
    pub queues: Vec<QueueTier>,
}

const MAX_PROFILE_ITEMS: usize = 200;

async fn load_profile(tx: &TenantTxn, user: Uuid) -> Result<AgentProfile, ApiError> {
    let skills = tx
        .all::<agent_skills::Entity>(|q| q.filter(agent_skills::Column::UserId.eq(user)))
        .await?
        .into_iter()
        .map(|s| SkillLevel {
            skill_id: s.skill_id,
            level: s.level,
        })
        .collect();
    let queues = tx
        .all::<queue_members::Entity>(|q| q.filter(queue_members::Column::UserId.eq(user)))
        .await?
        .into_iter()
        .map(|m| QueueTier {
            queue_id: m.queue_id,
            tier: m.tier,
        })
        .collect();
    Ok(AgentProfile { skills, queues })
}

/// An agent's skills and queue memberships.
#[utoipa::path(get, path = "/v1/users/{id}/profile", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = AgentProfile), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_profile(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<AgentProfile>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    tx.one::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?;
    let p = load_profile(&tx, id).await?;
    tx.commit().await?;
    Ok(Json(p))
}

/// Replaces an agent's skills and queue memberships. Every skill and queue must be this
/// tenant's.
#[utoipa::path(put, path = "/v1/users/{id}/profile", tag = "users", params(("id" = Uuid, Path)),
    request_body = AgentProfile,
    responses((status = 200, body = AgentProfile), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn put_profile(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<AgentProfile>,
) -> Result<Json<AgentProfile>, ApiError> {
    if req.skills.len() > MAX_PROFILE_ITEMS || req.queues.len() > MAX_PROFILE_ITEMS {
        return Err(ApiError::Validation(format!(
            "at most {MAX_PROFILE_ITEMS} skills and {MAX_PROFILE_ITEMS} queues"
        )));
    }
    if let Some(s) = req.skills.iter().find(|s| !(1..=10).contains(&s.level)) {
        return Err(ApiError::Validation(format!(
            "skills: level of {} must be 1 to 10",
            s.skill_id
        )));
    }
    if let Some(q) = req.queues.iter().find(|q| !(1..=9).contains(&q.tier)) {
        return Err(ApiError::Validation(format!(
            "queues: tier of {} must be 1 to 9",
            q.queue_id
        )));
    }
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    tx.one::<users::Entity>(|q| q.filter(users::Column::Id.eq(id)))
        .await?;
    let before = load_profile(&tx, id).await?;
    let skill_ids: Vec<Uuid> = req.skills.iter().map(|s| s.skill_id).collect();
    let queue_ids: Vec<Uuid> = req.queues.iter().map(|q| q.queue_id).collect();
    let known_skills = tx
        .count::<skills::Entity>(|q| q.filter(skills::Column::Id.is_in(skill_ids.clone())))
        .await?;
    let known_queues = tx
        .count::<queues::Entity>(|q| q.filter(queues::Column::Id.is_in(queue_ids.clone())))
        .await?;
    let distinct = |v: &[Uuid]| v.iter().collect::<std::collections::HashSet<_>>().len() as u64;
    if known_skills != distinct(&skill_ids) || skill_ids.len() as u64 != distinct(&skill_ids) {
        return Err(ApiError::Validation(
            "skills: unknown or repeated skill_id".into(),
        ));
    }
    if known_queues != distinct(&queue_ids) || queue_ids.len() as u64 != distinct(&queue_ids) {
        return Err(ApiError::Validation(
            "queues: unknown or repeated queue_id".into(),
        ));
    }
    tx.delete::<agent_skills::Entity>(|q| q.filter(agent_skills::Column::UserId.eq(id)))
        .await?;
    tx.delete::<queue_members::Entity>(|q| q.filter(queue_members::Column::UserId.eq(id)))
        .await?;
    for s in &req.skills {
        tx.insert(agent_skills::ActiveModel {
            tenant_id: Set(admin.tenant_id.0),
            user_id: Set(id),
            skill_id: Set(s.skill_id),
            level: Set(s.level),
        })
        .await?;
    }
    for m in &req.queues {
        tx.insert(queue_members::ActiveModel {
            tenant_id: Set(admin.tenant_id.0),
            queue_id: Set(m.queue_id),
            user_id: Set(id),
            tier: Set(m.tier),
        })
        .await?;
    }
    audit(
        &tx,
        &admin,
        "update",
        "agent_profile",
        Some(id),
        Some(&before),
        Some(&req),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(req))
}

impl Resource for users::Entity {
    type View = UserView;
    fn id_column() -> users::Column {
        users::Column::Id
    }
    fn id_of(row: &users::Model) -> Uuid {
        row.id
    }
    fn view(row: users::Model) -> Result<UserView, ApiError> {
        Ok(row.into())
    }
}

/// An agent's SIP desk-phone login. The password is hashed into the digest HA1 values
/// (RFC 7616, realm = the tenant's slug) and never stored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipCredentialRequest {
    /// 1 to 32 characters of `A-Z a-z 0-9 . _ -`; the phone registers as
    /// `sip:<username>@<tenant-slug>.<sip domain>`.
    pub username: String,
    /// 10 to 128 characters.
    pub password: String,
}

/// Sets or replaces a user's SIP login for a desk phone (digest authentication at the
/// gateway's registrar).
#[utoipa::path(put, path = "/v1/users/{id}/sip-credential", tag = "users", params(("id" = Uuid, Path)),
    request_body = SipCredentialRequest,
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn put_sip_credential(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<SipCredentialRequest>,
) -> Result<StatusCode, ApiError> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
    if req.username.is_empty() || req.username.len() > 32 || !req.username.chars().all(name_ok) {
        return Err(ApiError::Validation(
            "username: 1 to 32 characters of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    if !(10..=128).contains(&req.password.chars().count()) {
        return Err(ApiError::Validation(
            "password: 10 to 128 characters".into(),
        ));
    }
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let realm = tx.tenant().await?.slug;
    let cred = switchboard_sip_guard::SipCredential::derive(&req.username, &realm, &req.password);
    tx.set_sip_credential(id, &req.username, &cred.ha1_md5, &cred.ha1_sha256)
        .await?;
    let after = serde_json::json!({ "username": req.username });
    audit(
        &tx,
        &admin,
        "set_sip_credential",
        "user",
        Some(id),
        None::<&()>,
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
