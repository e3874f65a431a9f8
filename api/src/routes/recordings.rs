//! Call recordings: metadata and playback. The gateway writes the rows (and the objects);
//! the api only reads them. Playback hands out a short-lived URL instead of streaming through
//! the api: a presigned GET for S3, or for the local store (`switchboard up`) an api URL
//! signed with an HMAC and an expiry ([`serve_recording_file`], no bearer token needed, so a
//! browser `<audio>` element can use it).

use std::sync::Arc;
use std::time::Duration;

use crate::json::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::recordings;
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
use switchboard_domain::TenantId;
use switchboard_recording::{Gap, ObjectStore, RecordingRule};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Supervisor};

/// What the api needs to play recordings back.
#[derive(Clone)]
pub struct RecordingsAccess {
    pub store: Arc<dyn ObjectStore>,
    /// Lifetime of playback URLs.
    pub ttl: Duration,
    /// Signs local-store playback URLs (random per process: the local store is one process).
    key: [u8; 32],
}

impl std::fmt::Debug for RecordingsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingsAccess")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RecordingsAccess {
    pub fn new(store: Arc<dyn ObjectStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            key: rand::random(),
        }
    }

    fn sign(&self, tenant: Uuid, call_id: &str, exp: i64) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(format!("{tenant}|{call_id}|{exp}").as_bytes());
        switchboard_recording::hex(&mac.finalize().into_bytes())
    }

    fn verify(&self, tenant: Uuid, call_id: &str, exp: i64, sig: &str) -> bool {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(format!("{tenant}|{call_id}|{exp}").as_bytes());
        let raw: Vec<u8> = (0..sig.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(sig.get(i..i + 2)?, 16).ok())
            .collect();
        sig.len() == 64 && raw.len() == 32 && mac.verify_slice(&raw).is_ok()
    }
}

/// A recorded call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingView {
    pub call_id: String,
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// Hex SHA-256 of the WAV (two channels, 8 kHz, 16-bit: caller left, agent right).
    pub sha256: String,
    /// `spooled`, `uploading`, `stored`, `failed` or `deleted` (past retention).
    pub upload_state: String,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub created_at: chrono::DateTime<Utc>,
    /// Where the recording was paused (silence in the file), ms from its start.
    #[schema(value_type = Vec<Object>)]
    pub pauses: Vec<Gap>,
}

impl From<recordings::Model> for RecordingView {
    fn from(r: recordings::Model) -> Self {
        Self {
            call_id: r.call_id,
            duration_ms: r.duration_ms,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            upload_state: r.upload_state,
            created_at: r.created_at,
            pauses: r
                .pauses
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default(),
        }
    }
}

/// A playback URL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybackView {
    /// GET this within its lifetime; no bearer token needed.
    pub url: String,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub expires_at: chrono::DateTime<Utc>,
}

async fn row(
    app: &AppState,
    tenant: TenantId,
    call_id: Uuid,
) -> Result<recordings::Model, ApiError> {
    let tx = app.db.tenant_txn(tenant, Access::Read).await?;
    let row = tx
        .one::<recordings::Entity>(|q| q.filter(recordings::Column::CallId.eq(call_id.to_string())))
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// One call's recording (the call id is the CDR's).
#[utoipa::path(get, path = "/v1/recordings/{id}", tag = "recordings", params(("id" = Uuid, Path, description = "The call id")),
    responses((status = 200, body = RecordingView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_recording(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<RecordingView>, ApiError> {
    Ok(Json(row(&app, sup.tenant_id, id).await?.into()))
}

/// A short-lived URL to play or download a stored recording: presigned S3 GET, or a signed
/// api URL for the local store. 409 while the recording is not (or no longer) stored.
#[utoipa::path(get, path = "/v1/recordings/{id}/playback", tag = "recordings", params(("id" = Uuid, Path, description = "The call id")),
    responses((status = 200, body = PlaybackView), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_playback(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<PlaybackView>, ApiError> {
    let rec = row(&app, sup.tenant_id, id).await?;
    if rec.upload_state != "stored" {
        return Err(ApiError::Conflict(format!(
            "recording is {}, not stored",
            rec.upload_state
        )));
    }
    let Some(access) = app.recordings.get() else {
        return Err(ApiError::Conflict("no recordings store configured".into()));
    };
    let expires_at = Utc::now() + access.ttl;
    let url = match access
        .store
        .presign_get(&rec.object_key, access.ttl)
        .await
        .map_err(ApiError::internal)?
    {
        Some(url) => url,
        None => {
            let exp = expires_at.timestamp();
            let tenant = sup.tenant_id.0;
            let sig = access.sign(tenant, &rec.call_id, exp);
            format!(
                "/v1/recordings/{}/file?tenant={tenant}&exp={exp}&sig={sig}",
                rec.call_id
            )
        }
    };
    Ok(Json(PlaybackView { url, expires_at }))
}

#[derive(Debug, Deserialize)]
pub struct FileParams {
    tenant: Uuid,
    exp: i64,
    sig: String,
}

/// The local store's playback URL: a signed, expiring link to one recording's WAV.
pub async fn serve_recording_file(
    State(app): State<AppState>,
    Path(call_id): Path<Uuid>,
    Query(p): Query<FileParams>,
) -> Result<Response, ApiError> {
    let Some(access) = app.recordings.get() else {
        return Err(ApiError::NotFound);
    };
    let call = call_id.to_string();
    if p.sig.len() > 128 || !access.verify(p.tenant, &call, p.exp, &p.sig) {
        return Err(ApiError::Forbidden("bad signature"));
    }
    if Utc::now().timestamp() > p.exp {
        return Err(ApiError::Forbidden("link expired"));
    }
    let rec = row(&app, TenantId(p.tenant), call_id).await?;
    if rec.upload_state != "stored" {
        return Err(ApiError::NotFound);
    }
    let path = access
        .store
        .local_path(&rec.object_key)
        .ok_or(ApiError::NotFound)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::NotFound)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (header::CONTENT_LENGTH, rec.size_bytes.to_string()),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// A tenant's recording settings: how long recordings are kept, which calls are recorded, and
/// the keypad codes an agent types to pause and resume a recording. A PUT replaces all of
/// them (an absent field takes its default).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettingsView {
    /// Recordings older than this many days are deleted from storage (their rows stay,
    /// marked `deleted`); null keeps them forever. 1 to 3660.
    pub retention_days: Option<i32>,
    /// Which calls are recorded: `{"mode": "always"}` (the default), `{"mode": "never"}`, or
    /// `{"mode": "schedule", "windows": [{"days": ["mon", "fri"], "start": "09:00", "end":
    /// "17:00"}]}` (1 to 32 windows, times in `time_zone`, `end` exclusive, an `end` before
    /// `start` runs past midnight). A queue's own rule overrides it
    /// (`PUT /v1/queues/{id}/recording-rule`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub rule: RecordingRule,
    /// IANA time zone of the rule's windows (default `UTC`).
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Keys the agent types on the phone to pause the recording (say before a card number
    /// is read out), 1 to 8 of `0-9 * #`; null: no code. Pausing by api always works.
    #[serde(default)]
    pub pause_code: Option<String>,
    /// Keys that resume it.
    #[serde(default)]
    pub resume_code: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

fn rule_error(e: switchboard_recording::rules::RuleError) -> ApiError {
    ApiError::Validation(e.0)
}

impl RecordingSettingsView {
    fn validated(mut self) -> Result<Self, ApiError> {
        let max = switchboard_db::calls::MAX_RETENTION_DAYS;
        if self.retention_days.is_some_and(|d| !(1..=max).contains(&d)) {
            return Err(ApiError::Validation(format!(
                "retention_days: 1 to {max}, or null"
            )));
        }
        self.rule = self.rule.validated().map_err(rule_error)?;
        self.time_zone = switchboard_recording::rules::parse_time_zone(&self.time_zone)
            .map_err(rule_error)?
            .name()
            .to_owned();
        switchboard_recording::rules::validate_codes(
            self.pause_code.as_deref(),
            self.resume_code.as_deref(),
        )
        .map_err(rule_error)?;
        Ok(self)
    }

    fn of_row(
        row: Option<switchboard_db::entities::tenant_recording_settings::Model>,
    ) -> Result<Self, ApiError> {
        let Some(row) = row else {
            return Ok(Self {
                retention_days: None,
                rule: RecordingRule::default(),
                time_zone: utc(),
                pause_code: None,
                resume_code: None,
            });
        };
        Ok(Self {
            retention_days: row.retention_days,
            rule: parse_rule(row.recording_rule.as_deref())?.unwrap_or_default(),
            time_zone: row.time_zone.unwrap_or_else(utc),
            pause_code: row.pause_code,
            resume_code: row.resume_code,
        })
    }
}

/// A stored rule (written only through the validating type; unreadable is a server fault).
fn parse_rule(json: Option<&str>) -> Result<Option<RecordingRule>, ApiError> {
    json.map(|j| {
        serde_json::from_str::<RecordingRule>(j)
            .map_err(|e| ApiError::Internal(format!("stored recording rule: {e}").into()))
    })
    .transpose()
}

fn rule_json(rule: &RecordingRule) -> Result<String, ApiError> {
    serde_json::to_string(rule).map_err(|e| ApiError::Internal(Box::new(e)))
}

async fn put_settings(
    app: &AppState,
    ctx: &crate::extract::TenantCtx,
    req: RecordingSettingsView,
) -> Result<Json<RecordingSettingsView>, ApiError> {
    let req = req.validated()?;
    let tx = app.db.tenant_txn(ctx.tenant_id, Access::Write).await?;
    tx.tenant().await?;
    let before = RecordingSettingsView::of_row(tx.recording_settings().await?)?;
    tx.set_recording_retention(req.retention_days).await?;
    tx.set_recording_rules(&switchboard_db::calls::RecordingRulesRow {
        recording_rule: Some(rule_json(&req.rule)?),
        time_zone: Some(req.time_zone.clone()),
        pause_code: req.pause_code.clone(),
        resume_code: req.resume_code.clone(),
    })
    .await?;
    crate::common::audit(
        &tx,
        ctx,
        "recording_settings.update",
        "tenant",
        Some(ctx.tenant_id.0),
        Some(&before),
        Some(&req),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(req))
}

/// The caller's tenant's recording settings.
#[utoipa::path(get, path = "/v1/recording-settings", tag = "recordings",
    responses((status = 200, body = RecordingSettingsView)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn get_recording_settings(
    State(app): State<AppState>,
    admin: crate::extract::TenantAdmin,
) -> Result<Json<RecordingSettingsView>, ApiError> {
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Read).await?;
    let row = tx.recording_settings().await?;
    tx.commit().await?;
    Ok(Json(RecordingSettingsView::of_row(row)?))
}

/// Sets the caller's tenant's recording settings (retention, rule, pause codes).
#[utoipa::path(put, path = "/v1/recording-settings", tag = "recordings",
    request_body = RecordingSettingsView,
    responses((status = 200, body = RecordingSettingsView), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn put_recording_settings(
    State(app): State<AppState>,
    admin: crate::extract::TenantAdmin,
    crate::extract::ApiJson(req): crate::extract::ApiJson<RecordingSettingsView>,
) -> Result<Json<RecordingSettingsView>, ApiError> {
    put_settings(&app, &admin, req).await
}

/// Sets a tenant's recording settings (platform operator).
#[utoipa::path(put, path = "/v1/tenants/{id}/recording-settings", tag = "tenants", params(("id" = Uuid, Path)),
    request_body = RecordingSettingsView,
    responses((status = 200, body = RecordingSettingsView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("platform_operator"))))]
pub async fn put_tenant_recording_settings(
    State(app): State<AppState>,
    op: crate::extract::PlatformOperator,
    IdPath(id): IdPath,
    crate::extract::ApiJson(req): crate::extract::ApiJson<RecordingSettingsView>,
) -> Result<Json<RecordingSettingsView>, ApiError> {
    let ctx = crate::extract::TenantCtx {
        tenant_id: TenantId(id),
        ..op.0.clone()
    };
    put_settings(&app, &ctx, req).await
}

/// A queue's own recording rule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueRecordingRuleView {
    /// The rule for this queue's calls (as in the tenant's recording settings); null: the
    /// tenant's rule applies.
    #[schema(value_type = Option<Object>)]
    pub rule: Option<RecordingRule>,
}

async fn queue_exists(
    tx: &switchboard_db::TenantTxn,
    id: Uuid,
) -> Result<switchboard_db::entities::queues::Model, ApiError> {
    use switchboard_db::entities::queues;
    Ok(tx
        .one::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
        .await?)
}

/// A queue's own recording rule.
#[utoipa::path(get, path = "/v1/queues/{id}/recording-rule", tag = "recordings", params(("id" = Uuid, Path)),
    responses((status = 200, body = QueueRecordingRuleView), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_queue_recording_rule(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<QueueRecordingRuleView>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    let queue = queue_exists(&tx, id).await?;
    tx.commit().await?;
    Ok(Json(QueueRecordingRuleView {
        rule: parse_rule(queue.recording_rule.as_deref())?,
    }))
}

/// Sets (or, with null, clears) a queue's own recording rule.
#[utoipa::path(put, path = "/v1/queues/{id}/recording-rule", tag = "recordings", params(("id" = Uuid, Path)),
    request_body = QueueRecordingRuleView,
    responses((status = 200, body = QueueRecordingRuleView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("tenant_admin"))))]
pub async fn put_queue_recording_rule(
    State(app): State<AppState>,
    admin: crate::extract::TenantAdmin,
    IdPath(id): IdPath,
    crate::extract::ApiJson(req): crate::extract::ApiJson<QueueRecordingRuleView>,
) -> Result<Json<QueueRecordingRuleView>, ApiError> {
    let rule = req
        .rule
        .map(|r| r.validated().map_err(rule_error))
        .transpose()?;
    let tx = app.db.tenant_txn(admin.tenant_id, Access::Write).await?;
    let queue = queue_exists(&tx, id).await?;
    let before = QueueRecordingRuleView {
        rule: parse_rule(queue.recording_rule.as_deref())?,
    };
    tx.set_queue_recording_rule(id, rule.as_ref().map(rule_json).transpose()?)
        .await?;
    let after = QueueRecordingRuleView { rule };
    crate::common::audit(
        &tx,
        &admin,
        "recording_rule.update",
        "queue",
        Some(id),
        Some(&before),
        Some(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}
