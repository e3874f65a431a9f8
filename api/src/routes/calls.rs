//! Call detail records as the tenant reads them: the list of its calls (newest last, cursor
//! pages like every list) and one call with its SIP legs. The gateway writes them (see
//! `switchboard_db::calls`); the api only reads, so supervisors and reporting tools see every
//! call the moment it ended.

use crate::json::Json;
use axum::extract::State;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::{cdr_legs, cdrs};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::common::{Page, PageParams, Resource, list_resource};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiQuery, IdPath, Supervisor};

/// One call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallView {
    pub id: Uuid,
    /// The gateway's id of the call (recordings are filed under it).
    pub call_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from_number: String,
    pub to_number: String,
    pub queue_id: Option<Uuid>,
    /// The agent who took (or placed) the call.
    pub agent_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub started_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339_opt")]
    pub queued_at: Option<chrono::DateTime<Utc>>,
    #[serde(serialize_with = "crate::timefmt::rfc3339_opt")]
    pub answered_at: Option<chrono::DateTime<Utc>>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub ended_at: chrono::DateTime<Utc>,
    pub wait_ms: i64,
    pub talk_ms: i64,
    pub hangup_cause: String,
    /// `caller`, `agent`, `remote` or `system`.
    pub hangup_side: String,
    /// Loss, jitter and estimated MOS of each RTP leg.
    #[schema(value_type = Object)]
    pub media_stats: Option<serde_json::Value>,
}

/// One SIP leg of a call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegView {
    /// 0 for the first leg, in the order the legs started.
    pub leg_no: i32,
    /// `caller`, `agent`, `external` or `phone`.
    pub role: String,
    /// A number, or the agent's id.
    pub party: String,
    pub agent_id: Option<Uuid>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub started_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::timefmt::rfc3339_opt")]
    pub answered_at: Option<chrono::DateTime<Utc>>,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub ended_at: chrono::DateTime<Utc>,
    /// The final SIP status of a leg that was never answered (486 busy, 408 no answer ...).
    pub sip_status: Option<i32>,
    /// `rejected`, `no_answer`, `cancelled`, `unreachable`, `hangup`, `transferred`, or the
    /// call's hangup cause for the caller leg.
    pub end_reason: String,
    #[schema(value_type = Object)]
    pub media_stats: Option<serde_json::Value>,
    /// How the party's media travelled: `rtp`, or `webrtc` for a browser agent; none for a
    /// leg that never got media (or a call recorded before this was kept).
    pub media: Option<String>,
    /// The codec on the party's side: `PCMU`, `PCMA`, or `opus` (a WebRTC leg the gateway
    /// transcoded).
    pub codec: Option<String>,
}

/// One call with its legs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallDetail {
    #[serde(flatten)]
    pub call: CallView,
    pub legs: Vec<LegView>,
    /// The disposition and notes the agent filed at wrap-up, if any.
    pub disposition: Option<super::dispositions::DispositionView>,
}

/// Stored JSON text back to JSON (the gateway wrote it; unreadable text is a server fault).
fn json_column(text: Option<String>) -> Result<Option<serde_json::Value>, ApiError> {
    text.map(|t| serde_json::from_str(&t).map_err(ApiError::internal))
        .transpose()
}

impl TryFrom<cdrs::Model> for CallView {
    type Error = ApiError;
    fn try_from(c: cdrs::Model) -> Result<Self, ApiError> {
        Ok(Self {
            media_stats: json_column(c.media_stats)?,
            id: c.id,
            call_id: c.call_id,
            direction: c.direction,
            from_number: c.from_number,
            to_number: c.to_number,
            queue_id: c.queue_id,
            agent_id: c.agent_id,
            started_at: c.started_at,
            queued_at: c.queued_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            wait_ms: c.wait_ms,
            talk_ms: c.talk_ms,
            hangup_cause: c.hangup_cause,
            hangup_side: c.hangup_side,
        })
    }
}

impl TryFrom<cdr_legs::Model> for LegView {
    type Error = ApiError;
    fn try_from(l: cdr_legs::Model) -> Result<Self, ApiError> {
        Ok(Self {
            media_stats: json_column(l.media_stats)?,
            leg_no: l.leg_no,
            role: l.role,
            party: l.party,
            agent_id: l.agent_id,
            started_at: l.started_at,
            answered_at: l.answered_at,
            ended_at: l.ended_at,
            sip_status: l.sip_status,
            end_reason: l.end_reason,
            media: l.media,
            codec: l.codec,
        })
    }
}

/// Lists the tenant's calls, oldest first.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(PageParams),
    responses((status = 200, body = Page<CallView>)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn list_calls(
    State(app): State<AppState>,
    sup: Supervisor,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<CallView>>, ApiError> {
    list_resource::<cdrs::Entity>(&app, sup.tenant_id, &page).await
}

/// One call with its SIP legs.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls", params(("id" = Uuid, Path)),
    responses((status = 200, body = CallDetail), (status = 404, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("supervisor"))))]
pub async fn get_call(
    State(app): State<AppState>,
    sup: Supervisor,
    IdPath(id): IdPath,
) -> Result<Json<CallDetail>, ApiError> {
    let tx = app.db.tenant_txn(sup.tenant_id, Access::Read).await?;
    let call = tx
        .one::<cdrs::Entity>(|q| q.filter(cdrs::Column::Id.eq(id)))
        .await?;
    let legs = tx.call_legs(&call.call_id).await?;
    let disposition = super::dispositions::disposition_of(&tx, &call.call_id).await?;
    tx.commit().await?;
    Ok(Json(CallDetail {
        call: CallView::try_from(call)?,
        legs: legs
            .into_iter()
            .map(LegView::try_from)
            .collect::<Result<_, _>>()?,
        disposition,
    }))
}

impl Resource for cdrs::Entity {
    type View = CallView;
    fn id_column() -> cdrs::Column {
        cdrs::Column::Id
    }
    fn id_of(row: &cdrs::Model) -> Uuid {
        row.id
    }
    fn view(row: cdrs::Model) -> Result<CallView, ApiError> {
        CallView::try_from(row)
    }
}
