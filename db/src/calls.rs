//! What the media gateway reads and writes in the database: the route of a dialled number, and
//! the call detail record written once per call.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, TryInsertResult};
use uuid::Uuid;

use crate::entities::{cdr_legs, cdrs, phone_numbers, tenants};
use crate::{Access, Database, DbError, Result, TenantTxn};

/// Where a dialled number goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRoute {
    pub tenant_id: Uuid,
    /// A suspended tenant's calls are refused (403).
    pub tenant_active: bool,
    /// `None`: the number exists but routes nowhere yet.
    pub queue_id: Option<Uuid>,
}

impl Database {
    /// The route of an E.164 number, or `None` if no tenant owns it (404). Crosses tenants by
    /// nature: the number is what tells us the tenant.
    pub async fn route_for_number(&self, number: &str) -> Result<Option<NumberRoute>> {
        let sys = self.system_txn(Access::Read).await?;
        let Some(n) = phone_numbers::Entity::find()
            .filter(phone_numbers::Column::Number.eq(number))
            .one(sys.conn())
            .await?
        else {
            sys.commit().await?;
            return Ok(None);
        };
        let tenant = tenants::Entity::find_by_id(n.tenant_id)
            .one(sys.conn())
            .await?;
        sys.commit().await?;
        Ok(Some(NumberRoute {
            tenant_id: n.tenant_id,
            tenant_active: tenant.is_some_and(|t| t.status == "active"),
            queue_id: n.queue_id,
        }))
    }
}

/// A finished call as the gateway saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The gateway's call id (unique per tenant), at most 128 characters.
    pub call_id: String,
    pub direction: String,
    pub from_number: String,
    pub to_number: String,
    pub queue_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    pub hangup_cause: String,
    /// `caller`, `agent` or `system`.
    pub hangup_side: String,
    /// Loss, jitter, MOS per leg, as JSON.
    pub media_stats: Option<serde_json::Value>,
    /// The call's SIP legs in the order they started (at most [`MAX_LEGS`]).
    pub legs: Vec<LegRecord>,
}

/// Most legs one CDR keeps: a call offered round a large queue stops adding rows here (the
/// CDR's media stats still count every unanswered attempt).
pub const MAX_LEGS: usize = 64;

/// One SIP leg of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct LegRecord {
    /// `caller`, `agent`, `external` (a transfer's or outbound call's outside party) or
    /// `phone` (the agent's own phone placing an outbound call).
    pub role: String,
    /// Who: a number, or an agent's SIP username (at most 256 characters).
    pub party: String,
    pub agent_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
    /// The final SIP status of an unanswered leg (486, 408, 603 ...); none once answered.
    pub sip_status: Option<u16>,
    /// Why the leg ended: `answered_hangup`, `rejected`, `no_answer`, `cancelled`,
    /// `unreachable`, `transferred`, `call_ended` (at most 32 characters).
    pub end_reason: String,
    pub media_stats: Option<serde_json::Value>,
    /// How the party's media travelled: `rtp` or `webrtc` (at most 16 characters).
    pub media: Option<String>,
    /// The codec on the party's side: `PCMU`, `PCMA` or `opus` (at most 16 characters).
    pub codec: Option<String>,
}

fn millis(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> i64 {
    match (from, to) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0),
        _ => 0,
    }
}

impl TenantTxn {
    /// Writes the call's CDR. Idempotent: a retried write for the same call id (a gateway
    /// resuming its spool after a crash) makes no second row. Returns whether a row was added.
    pub async fn record_call(&self, r: &CallRecord) -> Result<bool> {
        if r.call_id.is_empty() || r.call_id.len() > 128 {
            return Err(DbError::Conflict("call_id: 1 to 128 characters".into()));
        }
        let wait_end = r.answered_at.or(Some(r.ended_at));
        let row = cdrs::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(self.tenant_id().0),
            call_id: Set(r.call_id.clone()),
            direction: Set(r.direction.clone()),
            from_number: Set(r.from_number.clone()),
            to_number: Set(r.to_number.clone()),
            queue_id: Set(r.queue_id),
            agent_id: Set(r.agent_id),
            started_at: Set(r.started_at),
            queued_at: Set(r.queued_at),
            answered_at: Set(r.answered_at),
            ended_at: Set(r.ended_at),
            wait_ms: Set(millis(r.queued_at, wait_end)),
            talk_ms: Set(millis(r.answered_at, Some(r.ended_at))),
            hangup_cause: Set(r.hangup_cause.clone()),
            hangup_side: Set(r.hangup_side.clone()),
            media_stats: Set(r.media_stats.as_ref().map(|v| v.to_string())),
            created_at: Set(Utc::now()),
        };
        let inserted = cdrs::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([cdrs::Column::TenantId, cdrs::Column::CallId])
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec_without_returning(self.txn()?)
            .await?;
        let inserted = matches!(inserted, TryInsertResult::Inserted(n) if n > 0);
        if inserted && !r.legs.is_empty() {
            self.record_legs(&r.call_id, &r.legs).await?;
        }
        Ok(inserted)
    }

    /// Writes a call's legs (with the CDR, in its transaction); a retried write adds none.
    async fn record_legs(&self, call_id: &str, legs: &[LegRecord]) -> Result<()> {
        let now = Utc::now();
        let mut rows = Vec::with_capacity(legs.len().min(MAX_LEGS));
        for (no, leg) in legs.iter().take(MAX_LEGS).enumerate() {
            let long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > 16);
            if leg.party.len() > 256
                || leg.role.len() > 16
                || leg.end_reason.len() > 32
                || long(&leg.media)
                || long(&leg.codec)
            {
                return Err(DbError::Conflict(
                    "leg: party 256, role, media and codec 16, end_reason 32 characters at most"
                        .into(),
                ));
            }
            rows.push(cdr_legs::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(self.tenant_id().0),
                created_at: Set(now),
                call_id: Set(call_id.to_owned()),
                leg_no: Set(no as i32),
                role: Set(leg.role.clone()),
                party: Set(leg.party.clone()),
                agent_id: Set(leg.agent_id),
                started_at: Set(leg.started_at),
                answered_at: Set(leg.answered_at),
                ended_at: Set(leg.ended_at),
                sip_status: Set(leg.sip_status.map(i32::from)),
                end_reason: Set(leg.end_reason.clone()),
                media_stats: Set(leg.media_stats.as_ref().map(|v| v.to_string())),
                media: Set(leg.media.clone()),
                codec: Set(leg.codec.clone()),
            });
        }
        cdr_legs::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    cdr_legs::Column::TenantId,
                    cdr_legs::Column::CallId,
                    cdr_legs::Column::LegNo,
                ])
                .do_nothing()
                .to_owned(),
            )
            .do_nothing()
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(())
    }

    /// A call's legs in order.
    pub async fn call_legs(&self, call_id: &str) -> Result<Vec<cdr_legs::Model>> {
        use sea_orm::QueryOrder;
        self.all::<cdr_legs::Entity>(|q| {
            q.filter(cdr_legs::Column::CallId.eq(call_id))
                .order_by_asc(cdr_legs::Column::LegNo)
        })
        .await
    }
}

/// A finished recording as the gateway stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    pub call_id: String,
    /// Where the file is, relative to the recordings store (`<tenant>/<call>.wav`).
    pub object_key: String,
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// `spooled` (finished, waiting on the gateway's disk), `uploading`, `stored` (in its
    /// store, size and checksum confirmed), `failed` (gave up; the spool file is kept),
    /// `deleted` (past the tenant's retention).
    pub upload_state: String,
    /// JSON list of `{start_ms, end_ms}` where the recording was paused; none: never paused.
    pub pauses: Option<String>,
}

impl TenantTxn {
    /// Writes a recording's metadata row; idempotent per (tenant, call id) like the CDR.
    pub async fn record_recording(&self, r: &RecordingRecord) -> Result<bool> {
        use crate::entities::recordings;
        if r.call_id.is_empty() || r.call_id.len() > 128 || r.sha256.len() != 64 {
            return Err(DbError::Conflict("call_id 1 to 128, sha256 64 hex".into()));
        }
        let row = recordings::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(self.tenant_id().0),
            call_id: Set(r.call_id.clone()),
            object_key: Set(r.object_key.clone()),
            duration_ms: Set(r.duration_ms),
            size_bytes: Set(r.size_bytes),
            sha256: Set(r.sha256.clone()),
            upload_state: Set(r.upload_state.clone()),
            created_at: Set(Utc::now()),
            pauses: Set(r.pauses.clone()),
        };
        let inserted = recordings::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([recordings::Column::TenantId, recordings::Column::CallId])
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
    }
}

/// Upload states a recording row may hold.
pub const RECORDING_STATES: &[&str] = &["spooled", "uploading", "stored", "failed", "deleted"];

impl TenantTxn {
    /// Writes a recording's row with its current upload state: inserted if missing (a gateway
    /// resuming its spool may not have written it), else only the state changes. A row marked
    /// `deleted` stays deleted.
    pub async fn set_recording_state(&self, r: &RecordingRecord) -> Result<()> {
        use crate::entities::recordings;
        use sea_orm::ActiveValue::Set as S;
        if !RECORDING_STATES.contains(&r.upload_state.as_str()) {
            return Err(DbError::Conflict(format!(
                "upload_state {:?}",
                r.upload_state
            )));
        }
        if !self.record_recording(r).await? {
            self.update(
                recordings::ActiveModel {
                    upload_state: S(r.upload_state.clone()),
                    pauses: match &r.pauses {
                        Some(p) => S(Some(p.clone())),
                        None => sea_orm::ActiveValue::NotSet,
                    },
                    ..Default::default()
                },
                |q| {
                    q.filter(recordings::Column::CallId.eq(r.call_id.clone()))
                        .filter(recordings::Column::UploadState.ne("deleted"))
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// A tenant's recording rule, time zone and pause/resume codes as stored (see
/// `switchboard_recording::rules` for what they mean and how they are validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingRulesRow {
    pub recording_rule: Option<String>,
    pub time_zone: Option<String>,
    pub pause_code: Option<String>,
    pub resume_code: Option<String>,
}

/// Longest retention a tenant may set (10 years).
pub const MAX_RETENTION_DAYS: i32 = 3_660;

impl Database {
    /// Tenants that keep recordings for a limited time, with their retention in days. Crosses
    /// tenants by nature: the gateway's retention sweeper walks them.
    pub async fn tenants_with_recording_retention(&self) -> Result<Vec<(Uuid, i32)>> {
        use crate::entities::tenant_recording_settings as trs;
        let sys = self.system_txn(Access::Read).await?;
        let rows = trs::Entity::find()
            .filter(trs::Column::RetentionDays.is_not_null())
            .all(sys.conn())
            .await?;
        sys.commit().await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.tenant_id, r.retention_days?)))
            .collect())
    }
}

impl TenantTxn {
    /// Days this tenant's recordings are kept; `None`: forever.
    pub async fn recording_retention(&self) -> Result<Option<i32>> {
        use crate::entities::tenant_recording_settings as trs;
        Ok(self
            .first::<trs::Entity>(|q| q)
            .await?
            .and_then(|r| r.retention_days))
    }

    /// This tenant's recording settings row (none: the defaults).
    pub async fn recording_settings(
        &self,
    ) -> Result<Option<crate::entities::tenant_recording_settings::Model>> {
        self.first::<crate::entities::tenant_recording_settings::Entity>(|q| q)
            .await
    }

    /// Replaces this tenant's recording rule, time zone and pause codes (already validated
    /// by the caller; the rule is its JSON). The retention is left as it is.
    pub async fn set_recording_rules(&self, rules: &RecordingRulesRow) -> Result<()> {
        use crate::entities::tenant_recording_settings as trs;
        let too_long = |v: &Option<String>, max: usize| v.as_ref().is_some_and(|v| v.len() > max);
        if too_long(&rules.recording_rule, 16 * 1024)
            || too_long(&rules.time_zone, 64)
            || too_long(&rules.pause_code, 16)
            || too_long(&rules.resume_code, 16)
        {
            return Err(DbError::Conflict("recording rules too long".into()));
        }
        let row = trs::ActiveModel {
            tenant_id: Set(self.tenant_id().0),
            retention_days: Set(None),
            updated_at: Set(Utc::now()),
            recording_rule: Set(rules.recording_rule.clone()),
            time_zone: Set(rules.time_zone.clone()),
            pause_code: Set(rules.pause_code.clone()),
            resume_code: Set(rules.resume_code.clone()),
        };
        trs::Entity::insert(row)
            .on_conflict(
                OnConflict::column(trs::Column::TenantId)
                    .update_columns([
                        trs::Column::RecordingRule,
                        trs::Column::TimeZone,
                        trs::Column::PauseCode,
                        trs::Column::ResumeCode,
                        trs::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(())
    }

    /// What decides whether a call on `queue` is recorded: the tenant's settings row and the
    /// queue's own rule (JSON), either absent.
    pub async fn recording_policy_rows(
        &self,
        queue: Option<Uuid>,
    ) -> Result<(
        Option<crate::entities::tenant_recording_settings::Model>,
        Option<String>,
    )> {
        use crate::entities::queues;
        let tenant = self.recording_settings().await?;
        let queue_rule = match queue {
            Some(q) => self
                .first::<queues::Entity>(|s| s.filter(queues::Column::Id.eq(q)))
                .await?
                .and_then(|q| q.recording_rule),
            None => None,
        };
        Ok((tenant, queue_rule))
    }

    /// Sets (none: clears, so the tenant's rule applies) a queue's own recording rule JSON.
    /// `NotFound` when the tenant has no such queue.
    pub async fn set_queue_recording_rule(&self, queue: Uuid, rule: Option<String>) -> Result<()> {
        use crate::entities::queues;
        if rule.as_ref().is_some_and(|r| r.len() > 16 * 1024) {
            return Err(DbError::Conflict("recording rule too long".into()));
        }
        let n = self
            .update(
                queues::ActiveModel {
                    recording_rule: Set(rule),
                    updated_at: Set(Utc::now()),
                    ..Default::default()
                },
                |q| q.filter(queues::Column::Id.eq(queue)),
            )
            .await?;
        if n == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// Sets (or clears) this tenant's recording retention.
    pub async fn set_recording_retention(&self, days: Option<i32>) -> Result<()> {
        use crate::entities::tenant_recording_settings as trs;
        if days.is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d)) {
            return Err(DbError::Conflict(format!(
                "retention_days: 1 to {MAX_RETENTION_DAYS}"
            )));
        }
        let row = trs::ActiveModel {
            tenant_id: Set(self.tenant_id().0),
            retention_days: Set(days),
            updated_at: Set(Utc::now()),
            recording_rule: Set(None),
            time_zone: Set(None),
            pause_code: Set(None),
            resume_code: Set(None),
        };
        trs::Entity::insert(row)
            .on_conflict(
                OnConflict::column(trs::Column::TenantId)
                    .update_columns([trs::Column::RetentionDays, trs::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(self.txn()?)
            .await?;
        Ok(())
    }

    /// Stored recordings made before `cutoff`, oldest first, at most `limit`.
    pub async fn expired_recordings(
        &self,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<crate::entities::recordings::Model>> {
        use crate::entities::recordings;
        use sea_orm::{QueryOrder, QuerySelect};
        self.all::<recordings::Entity>(|q| {
            q.filter(recordings::Column::CreatedAt.lt(cutoff))
                .filter(recordings::Column::UploadState.eq("stored"))
                .order_by_asc(recordings::Column::CreatedAt)
                .limit(limit)
        })
        .await
    }

    /// Marks a recording's row `deleted` (its object is gone).
    pub async fn mark_recording_deleted(&self, call_id: &str) -> Result<u64> {
        use crate::entities::recordings;
        self.update(
            recordings::ActiveModel {
                upload_state: sea_orm::ActiveValue::Set("deleted".into()),
                ..Default::default()
            },
            |q| q.filter(recordings::Column::CallId.eq(call_id)),
        )
        .await
    }
}
