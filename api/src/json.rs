//! The JSON response body of every handler.
//!
//! Why this module exists: axum's `Json` serialises through `BytesMut::writer()` starting at
//! 128 bytes, so each of serde_json's many small writes (every quote, key and value of a list
//! page) goes through `BufMut`'s bounds-checked copy and the buffer regrows several times; in
//! `scripts/bench api` that made serialising a 20-row page about a quarter of the api's
//! instructions per request (callgrind), most of it escaping strings byte by byte. Here the
//! body is serialised by sonic-rs (the same serde `Serialize` impls, SIMD string escaping)
//! into a `Vec` sized from the previous body, then handed over without a copy. The response is
//! what axum's `Json` sends: `content-type: application/json`, or a 500 problem if the value
//! cannot be serialised.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// A JSON response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The size of the last body, as the first guess for the next (bounded: one large export
/// does not make every later response reserve as much).
static LAST_BODY_BYTES: AtomicUsize = AtomicUsize::new(1024);
const MAX_INITIAL_CAPACITY: usize = 64 * 1024;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let capacity = LAST_BODY_BYTES.load(Ordering::Relaxed);
        let mut body = Vec::with_capacity(capacity);
        match sonic_rs::to_writer(&mut body, &self.0) {
            Ok(()) => {
                LAST_BODY_BYTES.store(body.len().min(MAX_INITIAL_CAPACITY), Ordering::Relaxed);
                let mut resp = body.into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(e) => ApiError::Internal(Box::new(e)).into_response(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[derive(Serialize)]
    struct Sample {
        text: String,
        maybe: Option<u32>,
        list: Vec<f64>,
        nested: serde_json::Value,
    }

    /// The body is byte for byte what serde_json writes, escapes included, and the content
    /// type is JSON's.
    #[tokio::test]
    async fn bodies_are_what_serde_json_writes() {
        let nasty: String = (0u8..0x80).map(char::from).collect::<String>()
            + "\"\\/ é ü 中文 😀 \u{2028}\u{2029}\u{7f}";
        let sample = Sample {
            text: nasty.clone(),
            maybe: None,
            list: vec![0.1, -2.5e-7, 1e21, 3.0],
            nested: serde_json::json!({"k": nasty, "n": [1, null, true]}),
        };
        let resp = Json(&sample).into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            serde_json::to_string(&sample).unwrap()
        );
    }
}
