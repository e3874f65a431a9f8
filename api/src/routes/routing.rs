//! Routing configuration: skills and queues. The ACD state engine reads these; the api owns
//! their definitions.

use crate::json::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::{queues, skills};
use switchboard_db::sea_orm::{ActiveModelBehavior, ColumnTrait, QueryFilter, Set};
use switchboard_domain::DisplayName;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{Page, PageParams, Resource, audit, get_resource, list_resource};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, Supervisor, TenantAdmin};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkillView {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
}

impl From<skills::Model> for SkillView {
    fn from(s: skills::Model) -> Self {
        Self {
            id: s.id,
            name: s.name,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSkill {
    #[schema(value_type = String, example = "spanish")]
    pub name: DisplayName,
}

fn name_taken(e: switchboard_db::DbError) -> ApiError {
    match e {
        switchboard_db::DbError::Conflict(_) => ApiError::Conflict("name: already in use".into()),
        e => e.into(),
    }
}

/// Creates a skill.
#[utoipa::path(post, path = "/v1/skills", tag = "routing", request_body = CreateSkill,
    responses((status = 201, body = SkillView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_skill(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiJson(req): ApiJson<CreateSkill>,
) -> Result<(StatusCode, Json<SkillView>), ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let view: SkillView = tx
        .insert(skills::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(admin.tenant_id.0),
            name: Set(req.name.as_str().to_owned()),
            created_at: Set(Utc::now()),
        })
        .await
        .map_err(name_taken)?
        .into();
    audit(
        &tx,
        &admin,
        "create",
        "skill",
        Some(view.id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists skills.
#[utoipa::path(get, path = "/v1/skills", tag = "routing", params(PageParams),
    responses((status = 200, body = Page<SkillView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_skills(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<SkillView>>, ApiError> {
    list_resource::<skills::Entity>(&app, sup.tenant_id, &page).await
}

/// One skill.
#[utoipa::path(get, path = "/v1/skills/{id}", tag = "routing", params(("id" = Uuid, Path)),
    responses((status = 200, body = SkillView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_skill(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<SkillView>, ApiError> {
    get_resource::<skills::Entity>(&app, sup.tenant_id, id).await
}

/// Deletes a skill (and removes it from every agent).
#[utoipa::path(delete, path = "/v1/skills/{id}", tag = "routing", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn delete_skill(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: SkillView = tx
        .one::<skills::Entity>(|q| q.filter(skills::Column::Id.eq(id)))
        .await?
        .into();
    tx.delete::<switchboard_db::entities::agent_skills::Entity>(|q| {
        q.filter(switchboard_db::entities::agent_skills::Column::SkillId.eq(id))
    })
    .await?;
    tx.delete::<skills::Entity>(|q| q.filter(skills::Column::Id.eq(id)))
        .await?;
    audit(
        &tx,
        &admin,
        "delete",
        "skill",
        Some(id),
        Some(&before),
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How a queue picks among ready agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    LongestIdle,
    RoundRobin,
    RingAll,
    Random,
    FewestCalls,
    LeastTalkTime,
    Linear,
    HighestSkill,
}

impl Strategy {
    fn as_str(self) -> &'static str {
        match self {
            Strategy::LongestIdle => "longest_idle",
            Strategy::RoundRobin => "round_robin",
            Strategy::RingAll => "ring_all",
            Strategy::Random => "random",
            Strategy::FewestCalls => "fewest_calls",
            Strategy::LeastTalkTime => "least_talk_time",
            Strategy::Linear => "linear",
            Strategy::HighestSkill => "highest_skill",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub id: Uuid,
    pub name: String,
    pub strategy: String,
    pub max_wait_s: i32,
    pub max_length: i32,
    pub wrap_up_s: i32,
    pub service_level_s: i32,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<queues::Model> for QueueView {
    fn from(q: queues::Model) -> Self {
        Self {
            id: q.id,
            name: q.name,
            strategy: q.strategy,
            max_wait_s: q.max_wait_s,
            max_length: q.max_length,
            wrap_up_s: q.wrap_up_s,
            service_level_s: q.service_level_s,
            created_at: q.created_at,
            updated_at: q.updated_at,
        }
    }
}

/// Queue settings; on create, absent fields take the defaults shown.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    #[schema(value_type = Option<String>)]
    pub name: Option<DisplayName>,
    /// Default `longest_idle`.
    pub strategy: Option<Strategy>,
    /// Longest a caller waits before overflow, 1 to 86400 s (default 600).
    pub max_wait_s: Option<i32>,
    /// Most callers waiting, 1 to 10000 (default 100).
    pub max_length: Option<i32>,
    /// After-call work, 0 to 3600 s (default 30).
    pub wrap_up_s: Option<i32>,
    /// Service level threshold, 1 to 3600 s (default 20).
    pub service_level_s: Option<i32>,
}

fn in_range(field: &str, v: Option<i32>, lo: i32, hi: i32) -> Result<(), ApiError> {
    match v {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::Validation(format!(
            "{field}: must be {lo} to {hi}"
        ))),
        _ => Ok(()),
    }
}

impl QueueSettings {
    fn validate(&self) -> Result<(), ApiError> {
        in_range("max_wait_s", self.max_wait_s, 1, 86_400)?;
        in_range("max_length", self.max_length, 1, 10_000)?;
        in_range("wrap_up_s", self.wrap_up_s, 0, 3_600)?;
        in_range("service_level_s", self.service_level_s, 1, 3_600)
    }

    fn apply(self, am: &mut queues::ActiveModel) {
        if let Some(n) = self.name {
            am.name = Set(n.as_str().to_owned());
        }
        if let Some(s) = self.strategy {
            am.strategy = Set(s.as_str().to_owned());
        }
        if let Some(v) = self.max_wait_s {
            am.max_wait_s = Set(v);
        }
        if let Some(v) = self.max_length {
            am.max_length = Set(v);
        }
        if let Some(v) = self.wrap_up_s {
            am.wrap_up_s = Set(v);
        }
        if let Some(v) = self.service_level_s {
            am.service_level_s = Set(v);
        }
    }
}

/// Creates a queue.
#[utoipa::path(post, path = "/v1/queues", tag = "routing", request_body = QueueSettings,
    responses((status = 201, body = QueueView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn create_queue(
    State(app): State<AppState>,
    admin: TenantAdmin,
    ApiJson(req): ApiJson<QueueSettings>,
) -> Result<(StatusCode, Json<QueueView>), ApiError> {
    req.validate()?;
    let Some(name) = req.name.clone() else {
        return Err(ApiError::Validation("name: required".into()));
    };
    let now = Utc::now();
    let mut am = queues::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(admin.tenant_id.0),
        name: Set(name.as_str().to_owned()),
        strategy: Set(Strategy::LongestIdle.as_str().to_owned()),
        max_wait_s: Set(600),
        max_length: Set(100),
        wrap_up_s: Set(30),
        service_level_s: Set(20),
        created_at: Set(now),
        updated_at: Set(now),
        recording_rule: Set(None),
    };
    req.apply(&mut am);
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let view: QueueView = tx.insert(am).await.map_err(name_taken)?.into();
    audit(
        &tx,
        &admin,
        "create",
        "queue",
        Some(view.id),
        None::<&()>,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists queues.
#[utoipa::path(get, path = "/v1/queues", tag = "routing", params(PageParams),
    responses((status = 200, body = Page<QueueView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_queues(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<QueueView>>, ApiError> {
    list_resource::<queues::Entity>(&app, sup.tenant_id, &page).await
}

/// One queue.
#[utoipa::path(get, path = "/v1/queues/{id}", tag = "routing", params(("id" = Uuid, Path)),
    responses((status = 200, body = QueueView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_queue(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<QueueView>, ApiError> {
    get_resource::<queues::Entity>(&app, sup.tenant_id, id).await
}

/// Changes a queue's settings.
#[utoipa::path(patch, path = "/v1/queues/{id}", tag = "routing", params(("id" = Uuid, Path)),
    request_body = QueueSettings,
    responses((status = 200, body = QueueView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn update_queue(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
    ApiJson(req): ApiJson<QueueSettings>,
) -> Result<Json<QueueView>, ApiError> {
    req.validate()?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: QueueView = tx
        .one_for_update::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?
        .into();
    let mut am = queues::ActiveModel::new();
    req.apply(&mut am);
    am.updated_at = Set(Utc::now());
    tx.update(am, |q| q.filter(queues::Column::Id.eq(id)))
        .await
        .map_err(name_taken)?;
    let after: QueueView = tx
        .one::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?
        .into();
    audit(
        &tx,
        &admin,
        "update",
        "queue",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Deletes a queue; numbers routed to it lose their route, agents their membership.
#[utoipa::path(delete, path = "/v1/queues/{id}", tag = "routing", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn delete_queue(
    State(app): State<AppState>,
    admin: TenantAdmin,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    use switchboard_db::entities::{phone_numbers, queue_members};
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let before: QueueView = tx
        .one::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?
        .into();
    let mut unroute = phone_numbers::ActiveModel::new();
    unroute.queue_id = Set(None);
    tx.update(unroute, |q| q.filter(phone_numbers::Column::QueueId.eq(id)))
        .await?;
    tx.delete::<queue_members::Entity>(|q| q.filter(queue_members::Column::QueueId.eq(id)))
        .await?;
    tx.delete::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?;
    audit(
        &tx,
        &admin,
        "delete",
        "queue",
        Some(id),
        Some(&before),
        None::<&()>,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Resource for skills::Entity {
    type View = SkillView;
    fn id_column() -> skills::Column {
        skills::Column::Id
    }
    fn id_of(row: &skills::Model) -> Uuid {
        row.id
    }
    fn view(row: skills::Model) -> Result<SkillView, ApiError> {
        Ok(row.into())
    }
}

impl Resource for queues::Entity {
    type View = QueueView;
    fn id_column() -> queues::Column {
        queues::Column::Id
    }
    fn id_of(row: &queues::Model) -> Uuid {
        row.id
    }
    fn view(row: queues::Model) -> Result<QueueView, ApiError> {
        Ok(row.into())
    }
}
