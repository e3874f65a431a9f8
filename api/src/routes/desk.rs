//! The agent desktop's own endpoints: the screen pop for an offered call, the softphone's
//! configuration, and the built browser app itself (`/desk/`).
//!
//! Screen pop is a separate request (`GET /v1/agent/screen-pop?call_id=`) rather than part of
//! the `call_offered` event: the event log is shared by the whole tenant and kept in the state
//! engine, while the pop reads the database (contact book, CDRs) for the one agent who is
//! ringing, at the moment it rings. The caller's number comes from the engine's queue entry
//! (the gateway puts it there), or from the CDR once the call has ended (a reload during
//! wrap-up).

use std::path::PathBuf;

use crate::json::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchboard_db::Access;
use switchboard_db::entities::{call_dispositions, cdrs, queues, sip_credentials, users};
use switchboard_db::sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use switchboard_domain::{PhoneNumber, Role};
use switchboard_state::CallId;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::agent_state::{engine_ids, now_ms};
use super::contacts::{ContactView, contact_by_number};
use super::dispositions::{base_call_id, check_call_id};
use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{AnyTenantUser, ApiQuery};

/// How many earlier calls of the caller the pop lists.
pub const RECENT_CALLS: u64 = 5;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScreenPopParams {
    /// The call (from the `call_offered` event or the agent's state).
    pub call_id: String,
}

/// A queue by id and name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueRef {
    pub id: Uuid,
    pub name: String,
}

/// A choice the caller made in an IVR menu.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IvrChoice {
    pub menu: String,
    pub choice: String,
}

/// An earlier call of the same caller.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecentCall {
    /// The CDR (`GET /v1/calls/{id}`).
    pub id: Uuid,
    pub call_id: String,
    #[serde(serialize_with = "crate::timefmt::rfc3339")]
    pub started_at: chrono::DateTime<Utc>,
    pub agent_id: Option<Uuid>,
    pub talk_ms: i64,
    pub hangup_cause: String,
    /// The disposition the agent filed, if any.
    pub disposition: Option<String>,
}

/// What the desktop shows when a call rings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScreenPop {
    pub call_id: String,
    /// The caller's number as the carrier gave it.
    pub caller: Option<String>,
    /// `waiting`, `reserved` (ringing), `answered`, or `ended`.
    pub status: String,
    pub queue: Option<QueueRef>,
    /// When the call entered the queue (the desktop counts the wait from here).
    #[serde(serialize_with = "crate::timefmt::rfc3339_opt")]
    pub queued_at: Option<chrono::DateTime<Utc>>,
    /// Time in the queue so far (until answered: the final wait, from the CDR, once ended).
    pub wait_ms: Option<u64>,
    /// The caller's choices in IVR menus, in order (none until IVR flows exist).
    pub ivr_choices: Vec<IvrChoice>,
    /// The customer record whose numbers include the caller's.
    pub contact: Option<ContactView>,
    /// The caller's earlier calls, newest first (at most 5).
    pub recent_calls: Vec<RecentCall>,
}

fn millis_to_time(ms: u64) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

/// The screen pop of a call: caller number, the customer record if the number is known, the
/// queue and time waited, the IVR choices, and the caller's recent calls. An agent sees only
/// calls offered to it or that it handled; supervisors any call of the tenant.
#[utoipa::path(get, path = "/v1/agent/screen-pop", tag = "desktop", params(ScreenPopParams),
    responses((status = 200, body = ScreenPop), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn get_screen_pop(
    State(app): State<AppState>,
    user: AnyTenantUser,
    ApiQuery(params): ApiQuery<ScreenPopParams>,
) -> Result<Json<ScreenPop>, ApiError> {
    check_call_id(&params.call_id)?;
    let me = user.user_id.map(|u| u.0);
    let supervisor = user.role.at_least(Role::Supervisor);
    let (tenant, agent) = engine_ids(&user, me.unwrap_or_default())?;
    let call = CallId::parse(params.call_id.clone())?;
    let now = now_ms();
    let live = app.engine.call(&tenant, &call, now).await?;
    let base = base_call_id(&params.call_id).to_owned();

    let tx = app.db.tenant_txn(user.tenant_id, Access::Read).await?;
    let (caller, status, queue_id, queued_at, wait_ms) = match live {
        Some(v) => {
            let mine = v.agents.contains(&agent)
                || app
                    .engine
                    .agent(&tenant, &agent)
                    .await?
                    .and_then(|a| a.call)
                    .is_some_and(|c| c == call);
            if !supervisor && !mine {
                return Err(ApiError::NotFound);
            }
            let status = serde_json::to_value(v.status)
                .ok()
                .and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_default();
            let wait = (v.status != switchboard_state::CallStatus::Answered)
                .then(|| now.saturating_sub(v.enqueued_at_ms));
            (
                v.caller,
                status,
                Uuid::parse_str(v.queue.as_str()).ok(),
                millis_to_time(v.enqueued_at_ms),
                wait,
            )
        }
        None => {
            let cdr = tx
                .first::<cdrs::Entity>(|q| q.filter(cdrs::Column::CallId.eq(base.clone())))
                .await?
                .filter(|c| supervisor || (me.is_some() && c.agent_id == me))
                .ok_or(ApiError::NotFound)?;
            (
                Some(cdr.from_number),
                "ended".to_owned(),
                cdr.queue_id,
                cdr.queued_at,
                u64::try_from(cdr.wait_ms).ok(),
            )
        }
    };
    let queue = match queue_id {
        Some(id) => tx
            .first::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(id)))
            .await?
            .map(|q| QueueRef {
                id: q.id,
                name: q.name,
            }),
        None => None,
    };
    let normalized = caller
        .as_deref()
        .and_then(|c| PhoneNumber::parse(c).ok())
        .map(|n| n.as_str().to_owned());
    let contact = match &normalized {
        Some(n) => contact_by_number(&tx, n).await?,
        None => None,
    };
    let mut recent_calls = Vec::new();
    if let Some(c) = &caller {
        let mut numbers = vec![c.clone()];
        numbers.extend(normalized.clone().filter(|n| n != c));
        let rows = tx
            .all::<cdrs::Entity>(|q| {
                q.filter(cdrs::Column::FromNumber.is_in(numbers))
                    .filter(cdrs::Column::CallId.ne(base.clone()))
                    .order_by_desc(cdrs::Column::StartedAt)
                    .limit(RECENT_CALLS)
            })
            .await?;
        let dispositions = tx
            .all::<call_dispositions::Entity>(|q| {
                q.filter(
                    call_dispositions::Column::CallId.is_in(rows.iter().map(|r| r.call_id.clone())),
                )
            })
            .await?;
        recent_calls = rows
            .into_iter()
            .map(|r| RecentCall {
                disposition: dispositions
                    .iter()
                    .find(|d| d.call_id == r.call_id)
                    .map(|d| d.code.clone()),
                id: r.id,
                call_id: r.call_id,
                started_at: r.started_at,
                agent_id: r.agent_id,
                talk_ms: r.talk_ms,
                hangup_cause: r.hangup_cause,
            })
            .collect();
    }
    tx.commit().await?;
    Ok(Json(ScreenPop {
        call_id: params.call_id,
        caller,
        status,
        queue,
        queued_at,
        wait_ms,
        ivr_choices: Vec::new(),
        contact,
        recent_calls,
    }))
}

/// Where browsers reach the gateway's SIP over WebSocket listener, and the SIP domain their
/// URIs are made in. Set from `http.softphone_ws_url` / `http.softphone_sip_domain`, or by
/// `switchboard up` from its own gateway's `gateway.ws_addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftphoneSettings {
    ws_url: String,
    sip_domain: String,
}

/// Longest WebSocket URL accepted in the configuration.
const MAX_WS_URL: usize = 512;

impl SoftphoneSettings {
    /// Checks both values: `ws_url` is a `ws://` or `wss://` URL with a host and nothing a
    /// browser's WebSocket would refuse or leak (credentials, fragment); `sip_domain` is a DNS
    /// name (the tenant's SIP domain is `<slug>.<sip_domain>`).
    pub fn new(ws_url: &str, sip_domain: &str) -> Result<Self, String> {
        if ws_url.len() > MAX_WS_URL {
            return Err(format!("softphone_ws_url: longer than {MAX_WS_URL} bytes"));
        }
        let url = url::Url::parse(ws_url)
            .map_err(|e| format!("softphone_ws_url: {ws_url:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "softphone_ws_url: {ws_url:?} must start with wss:// (or ws:// for loopback and TLS proxies)"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("softphone_ws_url: {ws_url:?} has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(format!(
                "softphone_ws_url: {ws_url:?} must not carry credentials or a fragment"
            ));
        }
        let labels_ok = !sip_domain.is_empty()
            && sip_domain.len() <= 200
            && sip_domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !labels_ok {
            return Err(format!(
                "softphone_sip_domain: {sip_domain:?} is not a DNS name (letters, digits, '-', dots)"
            ));
        }
        Ok(Self {
            ws_url: url.to_string(),
            sip_domain: sip_domain.to_ascii_lowercase(),
        })
    }

    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    pub fn sip_domain(&self) -> &str {
        &self.sip_domain
    }
}

/// The SIP domain of softphones when none is configured (never resolved: the browser reaches
/// the gateway by the WebSocket URL; the gateway reads only the tenant's label).
pub const DEFAULT_SIP_DOMAIN: &str = "sip.local";

/// Registration lifetime the browser asks for (the gateway grants at most its
/// `gateway.max_expires_s`); JsSIP re-registers before it runs out.
pub const SOFTPHONE_REGISTER_EXPIRES_S: u32 = 300;

/// What a browser phone (JsSIP) needs to register at the gateway and take calls.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebRtcPhone {
    /// The gateway's SIP over WebSocket URL (RFC 7118; `wss://` in production).
    pub ws_url: String,
    /// The agent's SIP URI, `sip:<user>@<tenant slug>.<sip domain>`: the registrar takes the
    /// tenant from the host's first label and the agent from the token. The user part is the
    /// agent's SIP login, else its user id.
    pub sip_uri: String,
    /// The name shown to people the agent calls.
    pub display_name: String,
    /// How to authenticate: `bearer`, i.e. `Authorization: Bearer <api access token>` (RFC
    /// 8898) on REGISTER and INVITE (JsSIP `authorization_jwt`); renew the token before it
    /// expires and re-register with the new one.
    pub auth: String,
    /// The registration lifetime to ask for, in seconds.
    pub register_expires_s: u32,
    /// The tenant's SIP domain, for outside calls: an INVITE to `sip:<E.164>@<dial_domain>`
    /// goes out on the tenant's outbound trunk with its caller id and dial policy.
    pub dial_domain: String,
}

/// How the desktop's phone works for this agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SoftphoneConfig {
    /// `webrtc`: the browser is the phone (the api knows the gateway's SIP over WebSocket URL;
    /// see `webrtc`); `desk_phone`: calls ring the agent's registered SIP phone and the desktop
    /// shows and controls them.
    pub mode: String,
    /// The agent's SIP login, if one is set.
    pub sip_username: Option<String>,
    /// Whether the agent's phone (desk phone, or a browser) is registered right now.
    pub desk_phone_registered: bool,
    /// SIP over WebSocket settings for the browser phone; `null` in `desk_phone` mode.
    pub webrtc: Option<WebRtcPhone>,
}

/// The calling agent's phone setup for the desktop.
#[utoipa::path(get, path = "/v1/agent/softphone", tag = "desktop",
    responses((status = 200, body = SoftphoneConfig)),
    security(("bearer" = [])), extensions(("x-min-role" = json!("agent"))))]
pub async fn get_softphone(
    State(app): State<AppState>,
    user: AnyTenantUser,
) -> Result<Json<SoftphoneConfig>, ApiError> {
    let me = user
        .user_id
        .ok_or(ApiError::Forbidden(
            "a phone belongs to a user, not an API key",
        ))?
        .0;
    let tx = app.db.tenant_txn(user.tenant_id, Access::Read).await?;
    let cred = tx
        .first::<sip_credentials::Entity>(|q| q.filter(sip_credentials::Column::UserId.eq(me)))
        .await?;
    let webrtc = match app.softphone.get() {
        Some(settings) => {
            let tenant = tx.tenant().await?;
            let profile = tx
                .first::<users::Entity>(|q| q.filter(users::Column::Id.eq(me)))
                .await?
                .ok_or(ApiError::NotFound)?;
            let domain = format!("{}.{}", tenant.slug, settings.sip_domain());
            let user_part = cred
                .as_ref()
                .map_or_else(|| me.simple().to_string(), |c| c.username.clone());
            Some(WebRtcPhone {
                ws_url: settings.ws_url().to_owned(),
                sip_uri: format!("sip:{user_part}@{domain}"),
                display_name: profile.display_name,
                auth: "bearer".into(),
                register_expires_s: SOFTPHONE_REGISTER_EXPIRES_S,
                dial_domain: domain,
            })
        }
        None => None,
    };
    tx.commit().await?;
    let (tenant, agent) = engine_ids(&user, me)?;
    let registered = app
        .engine
        .contact(&tenant, &agent, now_ms())
        .await?
        .is_some();
    Ok(Json(SoftphoneConfig {
        mode: if webrtc.is_some() {
            "webrtc"
        } else {
            "desk_phone"
        }
        .into(),
        sip_username: cred.map(|c| c.username),
        desk_phone_registered: registered,
        webrtc,
    }))
}

const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>Switchboard desktop</title>\
<p>The agent desktop is not built. Run <code>npm ci &amp;&amp; npm run build</code> in \
<code>tenant-admin/</code> (or point <code>http.desk_dir</code> at a built copy) and reload.";

/// `/desk/`: the built browser app from `dir`, or a page saying how to build it.
pub fn static_routes(dir: Option<PathBuf>) -> Router<crate::AppState> {
    match dir.filter(|d| d.join("index.html").is_file()) {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "serving the agent desktop at /desk/");
            Router::new().nest_service("/desk", tower_http::services::ServeDir::new(dir))
        }
        None => {
            let page = || async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::response::Html(NOT_BUILT),
                )
                    .into_response()
            };
            Router::new()
                .route("/desk", get(page))
                .route("/desk/", get(page))
                .route("/desk/{*rest}", get(page))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn softphone_settings_take_websocket_urls_and_dns_names_only() {
        let s = SoftphoneSettings::new("wss://gw.example.com:8443", "SIP.Example.com").unwrap();
        assert_eq!(s.ws_url(), "wss://gw.example.com:8443/");
        assert_eq!(s.sip_domain(), "sip.example.com");
        let s = SoftphoneSettings::new("ws://127.0.0.1:5066/sip", "sip.local").unwrap();
        assert_eq!(s.ws_url(), "ws://127.0.0.1:5066/sip");
        for (url, domain, want) in [
            (
                "https://gw.example.com/",
                "sip.local",
                "must start with wss://",
            ),
            ("gw.example.com:8443", "sip.local", "softphone_ws_url"),
            ("wss://", "sip.local", "softphone_ws_url"),
            ("wss://user:pw@gw.example.com/", "sip.local", "credentials"),
            ("wss://gw.example.com/#x", "sip.local", "fragment"),
            ("wss://gw.example.com/", "", "softphone_sip_domain"),
            (
                "wss://gw.example.com/",
                "sip..local",
                "softphone_sip_domain",
            ),
            (
                "wss://gw.example.com/",
                "-sip.local",
                "softphone_sip_domain",
            ),
            ("wss://gw.example.com/", "sip local", "softphone_sip_domain"),
            (
                "wss://gw.example.com/",
                "sip.local;x=1",
                "softphone_sip_domain",
            ),
        ] {
            let err = SoftphoneSettings::new(url, domain).unwrap_err();
            assert!(err.contains(want), "{url} {domain}: {err}");
        }
        let long = format!("wss://gw.example.com/{}", "a".repeat(600));
        assert!(SoftphoneSettings::new(&long, "sip.local").is_err());
    }
}
