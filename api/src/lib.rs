//! The tenant-aware HTTP API: REST under `/v1` (OpenAPI at `/v1/openapi.json`, docs page at
//! `/v1/docs`), `/healthz`, `/readyz`, `/metrics`.
//!
//! The api is stateless: everything it knows is in the database (and later the state engine),
//! so any replica serves any request. [`AppState`] holds the shared services; [`router`] builds
//! the routes and the middleware stack (request ids, tracing spans with tenant and request id,
//! metrics, body limit, timeout, concurrency limit); [`serve`] runs it until shutdown.

pub mod auth;
pub mod common;
pub mod error;
pub mod extract;
pub mod json;
pub mod metrics;
pub mod routes;
pub mod timefmt;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use switchboard_db::Database;
use switchboard_state::StateEngine;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{LoginThrottle, StandingCache, TokenService};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The slug of the tenant that holds platform operators.
pub const PLATFORM_TENANT_SLUG: &str = "platform";

/// Limits and knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// The built browser app (`tenant-admin/dist`), served at `/desk/`; `None`: not served.
    pub desk_dir: Option<std::path::PathBuf>,
    /// Limits of the live event feed.
    pub events: routes::events::EventStreamSettings,
    /// The gateway's SIP over WebSocket for browser phones; `None`: agents use desk phones
    /// (unless [`AppState::set_softphone`] supplies it later, as `switchboard up` does).
    pub softphone: Option<routes::desk::SoftphoneSettings>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            desk_dir: None,
            events: Default::default(),
            softphone: None,
        }
    }
}

/// Everything a handler may need. Built once at start.
pub struct App {
    pub db: Database,
    /// Agent/queue state and ACD (Redis in production, in memory embedded).
    pub engine: Arc<dyn StateEngine>,
    /// How long an agent session lives without a heartbeat (the engine's presence TTL).
    pub engine_presence_ttl_ms: u64,
    pub tokens: TokenService,
    pub standing: StandingCache,
    pub login_throttle: LoginThrottle,
    pub metrics: Metrics,
    pub http: HttpSettings,
    /// Recording playback, when a recordings store is configured.
    pub recordings: std::sync::OnceLock<routes::recordings::RecordingsAccess>,
    /// Open event streams on this replica, per user and tenant.
    pub streams: Arc<routes::events::StreamLimiter>,
    /// The browser phone's gateway (SIP over WebSocket), when the desktop is the phone.
    pub softphone: std::sync::OnceLock<routes::desk::SoftphoneSettings>,
}

/// Shared handle to [`App`], extracted by every handler.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    pub fn new(
        db: Database,
        tokens: TokenService,
        http: HttpSettings,
        engine: Arc<dyn StateEngine>,
        engine_presence_ttl_ms: u64,
    ) -> Self {
        let ttl = tokens.settings().revocation_cache_ttl;
        let softphone = std::sync::OnceLock::new();
        if let Some(s) = &http.softphone {
            let _ = softphone.set(s.clone());
        }
        AppState(Arc::new(App {
            db,
            engine,
            engine_presence_ttl_ms,
            tokens,
            standing: StandingCache::new(ttl),
            login_throttle: LoginThrottle::new(Duration::from_secs(300)),
            metrics: Metrics::new(),
            http,
            recordings: std::sync::OnceLock::new(),
            streams: Default::default(),
            softphone,
        }))
    }

    /// Enables recording playback (`/v1/recordings/{id}/playback`) from this store.
    pub fn set_recordings(&self, access: routes::recordings::RecordingsAccess) {
        let _ = self.recordings.set(access);
    }

    /// Makes the desktop the agents' phone, through this SIP over WebSocket gateway (when the
    /// configuration named none; the first value set stays).
    pub fn set_softphone(&self, settings: routes::desk::SoftphoneSettings) {
        let _ = self.softphone.set(settings);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard API", version = "1", description = "Multi-tenant contact center. \
        Errors are RFC 9457 problem+json with a stable `type`. Lists use cursor pagination. \
        Each operation's `x-min-role` names the weakest role allowed."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "tenants"), (name = "users"), (name = "seats"),
         (name = "numbers"), (name = "routing"), (name = "agent"), (name = "admin"),
         (name = "calls"), (name = "recordings"), (name = "desktop"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The `/v1` routes and their OpenAPI document.
pub fn v1_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::*;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::get_me))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::get_outbound, tenants::put_outbound))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(users::get_user, users::update_user))
        .routes(routes!(users::revoke_user_tokens))
        .routes(routes!(users::put_sip_credential))
        .routes(routes!(users::get_profile, users::put_profile))
        .routes(routes!(seats::create_seat, seats::list_seats))
        .routes(routes!(seats::get_seat, seats::update_seat))
        .routes(routes!(seats::get_seat_history))
        .routes(routes!(numbers::create_number, numbers::list_numbers))
        .routes(routes!(
            numbers::get_number,
            numbers::update_number,
            numbers::delete_number
        ))
        .routes(routes!(routing::create_skill, routing::list_skills))
        .routes(routes!(routing::get_skill, routing::delete_skill))
        .routes(routes!(routing::create_queue, routing::list_queues))
        .routes(routes!(
            routing::get_queue,
            routing::update_queue,
            routing::delete_queue
        ))
        .routes(routes!(admin::create_api_key, admin::list_api_keys))
        .routes(routes!(admin::revoke_api_key))
        .routes(routes!(admin::list_audit))
        .routes(routes!(
            agent_state::start_session,
            agent_state::end_session
        ))
        .routes(routes!(agent_state::heartbeat))
        .routes(routes!(agent_state::set_state, agent_state::get_own_state))
        .routes(routes!(agent_state::get_agent_state))
        .routes(routes!(agent_state::get_queue_stats))
        .routes(routes!(agent_state::list_events))
        .routes(routes!(events::create_stream_ticket))
        .routes(routes!(events::stream_events))
        .routes(routes!(
            dispositions::create_disposition_code,
            dispositions::list_disposition_codes
        ))
        .routes(routes!(
            dispositions::get_disposition_code,
            dispositions::update_disposition_code,
            dispositions::delete_disposition_code
        ))
        .routes(routes!(dispositions::wrap_up))
        .routes(routes!(contacts::create_contact, contacts::list_contacts))
        .routes(routes!(
            contacts::get_contact,
            contacts::update_contact,
            contacts::delete_contact
        ))
        .routes(routes!(desk::get_screen_pop))
        .routes(routes!(desk::get_softphone))
        .routes(routes!(call_control::dial))
        .routes(routes!(call_control::transfer_own_call))
        .routes(routes!(call_control::transfer_agent_call))
        .routes(routes!(calls::list_calls))
        .routes(routes!(calls::get_call))
        .routes(routes!(recordings::get_recording))
        .routes(routes!(recordings::get_playback))
        .routes(routes!(
            recordings::get_recording_settings,
            recordings::put_recording_settings
        ))
        .routes(routes!(recordings::put_tenant_recording_settings))
        .routes(routes!(
            recordings::get_queue_recording_rule,
            recordings::put_queue_recording_rule
        ))
        .routes(routes!(call_control::pause_own_recording))
        .routes(routes!(call_control::resume_own_recording))
        .routes(routes!(call_control::pause_agent_recording))
        .routes(routes!(call_control::resume_agent_recording))
        .split_for_parts()
}

/// The OpenAPI document, as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    v1_routes().1
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html><head><title>Switchboard API</title><meta charset="utf-8"></head>
<body><script id="api-reference" data-url="/v1/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
<noscript>The OpenAPI document is at <a href="/v1/openapi.json">/v1/openapi.json</a>.</noscript>
</body></html>"#;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.db.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (v1, openapi) = v1_routes();
    let openapi = Arc::new(openapi);
    let request_id = HeaderName::from_static("x-request-id");
    let http = state.http.clone();
    Router::new()
        .merge(v1)
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/v1/docs", get(|| async { Html(DOCS_PAGE) }))
        .route(
            "/v1/recordings/{id}/file",
            get(routes::recordings::serve_recording_file),
        )
        .merge(routes::desk::static_routes(http.desk_dir.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            http.request_timeout,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            http.max_concurrent_requests,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %id,
                    tenant_id = tracing::field::Empty,
                    user_id = tracing::field::Empty,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Runs the state engine's timers (presence expiry, reservation leases, wrap-up, overflow,
/// tier widening) for every active tenant, every `every`. Every replica may run it: each tick
/// is atomic in the engine, so a second replica's tick finds nothing left to do.
pub async fn run_engine_ticker(state: AppState, every: Duration) {
    use switchboard_db::entities::tenants;
    use switchboard_db::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let ids = async {
            let sys = state.db.system_txn(switchboard_db::Access::Read).await?;
            let rows = tenants::Entity::find()
                .filter(tenants::Column::Status.eq("active"))
                .all(sys.conn())
                .await
                .map_err(switchboard_db::DbError::from)?;
            sys.commit().await?;
            Ok::<_, switchboard_db::DbError>(rows.into_iter().map(|t| t.id))
        }
        .await;
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "engine ticker: listing tenants");
                continue;
            }
        };
        for id in ids {
            let Ok(tenant) = switchboard_state::TenantId::parse(id.to_string()) else {
                continue;
            };
            if let Err(e) = state
                .engine
                .tick(&tenant, routes::agent_state::now_ms())
                .await
            {
                tracing::warn!(tenant_id = %id, error = %e, "engine tick failed");
            }
        }
    }
}
