//! The api's one error type and how it becomes an RFC 9457 `application/problem+json` response.
//!
//! Policy: a handler returns `Result<_, ApiError>`. Caller mistakes get a specific variant with a
//! stable `type` URI (`urn:switchboard:problem:<slug>`) that clients may match on; anything else
//! becomes `Internal`, whose cause is logged with its whole `source()` chain and never sent out.
//! Database not-found maps to 404 here and only here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_db::DbError;
use switchboard_domain::DomainError;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the problem kind, e.g. `urn:switchboard:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("invalid request: {0}")]
    Validation(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("seat limit reached: {0}")]
    SeatLimit(String),
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("tenant suspended")]
    TenantSuspended,
    #[error("too many requests; retry after {0} s")]
    TooManyRequests(u64),
    /// A gateway node refused a call-control request (SIP-like status and its reason), or
    /// none answered (status 503).
    #[error("call control: {1}")]
    CallControl(u16, String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            SeatLimit(_) => (StatusCode::CONFLICT, "seat-limit", "Seat limit reached"),
            IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused with a different request",
            ),
            TenantSuspended => (
                StatusCode::FORBIDDEN,
                "tenant-suspended",
                "Tenant suspended",
            ),
            TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            CallControl(403, _) => (
                StatusCode::FORBIDDEN,
                "destination-not-allowed",
                "Destination not allowed",
            ),
            CallControl(404, _) => (
                StatusCode::NOT_FOUND,
                "transfer-target-not-found",
                "No such transfer target",
            ),
            CallControl(409, _) => (StatusCode::CONFLICT, "call-state", "Not possible now"),
            CallControl(480, _) => (
                StatusCode::CONFLICT,
                "phone-unavailable",
                "The agent's phone is not registered",
            ),
            CallControl(..) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway-unavailable",
                "No media gateway could do it",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The stable problem type URI for this error.
    pub fn type_uri(&self) -> String {
        format!("urn:switchboard:problem:{}", self.parts().1)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound,
            DbError::Conflict(_) => {
                ApiError::Conflict("a resource with these unique values already exists".into())
            }
            DbError::Db(e) => ApiError::internal(e),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Validation(format!("{}: {e}", e.field()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(e) => {
                let mut chain = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    src = s.source();
                }
                tracing::error!(error = %chain, "internal error");
                None
            }
            ApiError::MalformedJson(d)
            | ApiError::Validation(d)
            | ApiError::BadRequest(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Conflict(d)
            | ApiError::CallControl(_, d)
            | ApiError::SeatLimit(d) => Some(d.clone()),
            ApiError::Unauthorized(d) | ApiError::Forbidden(d) => Some((*d).to_owned()),
            _ => None,
        };
        let retry_after = match &self {
            ApiError::TooManyRequests(s) => Some(*s),
            _ => None,
        };
        let mut resp = problem_response(status, slug, title, detail);
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Builds a problem+json response. The request id is filled in by the request-id middleware.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: Option<String>,
) -> Response {
    let body = Problem {
        kind: format!("urn:switchboard:problem:{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
    };
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}
