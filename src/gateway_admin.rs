//! The gateway node's admin and metrics listener (`gateway.metrics_addr`): Prometheus
//! `/metrics`, and the drain control a rolling upgrade uses — `POST /admin/drain` (new carrier
//! calls refused with 503 or redirected, current calls finish; `?exit=true` also stops the
//! process once the last call ended), `DELETE /admin/drain`, `GET /admin/status`. When
//! `gateway.auth_secret` is set, admin requests carry it as a bearer token.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use switchboard_gateway::node::Gateway;

#[derive(Deserialize)]
struct DrainParams {
    #[serde(default)]
    exit: bool,
}

#[derive(Serialize)]
struct Status {
    node: String,
    draining: bool,
    calls: u32,
    capacity: u32,
    live_nodes: Vec<switchboard_state::NodeInfo>,
}

fn problem(status: StatusCode, kind: &str, title: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:switchboard:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Constant-time comparison of the bearer token with the shared secret.
fn authorized(gw: &Gateway, headers: &HeaderMap) -> bool {
    let secret = gw.cfg.auth_secret.as_bytes();
    if secret.is_empty() {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    given.len() == secret.len() && given.iter().zip(secret).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

fn status(gw: &Gateway) -> Status {
    Status {
        node: gw.cfg.node_id.clone(),
        draining: gw.cluster.draining(),
        calls: gw.active_calls(),
        capacity: gw.cfg.capacity,
        live_nodes: gw.cluster.live(),
    }
}

async fn get_status(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !authorized(&gw, &headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token required",
        );
    }
    axum::Json(status(&gw)).into_response()
}

async fn start_drain(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    params: Result<Query<DrainParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !authorized(&gw, &headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token required",
        );
    }
    let Ok(Query(params)) = params else {
        return problem(StatusCode::BAD_REQUEST, "validation", "exit: true or false");
    };
    gw.drain(params.exit).await;
    (StatusCode::ACCEPTED, axum::Json(status(&gw))).into_response()
}

async fn stop_drain(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if !authorized(&gw, &headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token required",
        );
    }
    gw.cluster.undrain();
    axum::Json(status(&gw)).into_response()
}

/// The router of the node's admin listener.
pub fn router(gw: Arc<Gateway>) -> axum::Router {
    let metrics = gw.metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/admin/status", get(get_status))
        .route("/admin/drain", post(start_drain).delete(stop_drain))
        .with_state(gw)
}
