//! The crate's single error type.
//!
//! Exists so callers have one thing to match on for configuration mistakes and
//! malformed peer input. Policy *outcomes* (a failed login, a blocked number, an
//! exhausted rate limit) are not errors: they are returned as dedicated values
//! ([`crate::AuthOutcome`], [`crate::Blocked`], [`crate::Retry`],
//! [`crate::CapExceeded`]) so the gateway cannot confuse "the peer sent junk"
//! with "the peer is not allowed".

/// Everything that can go wrong in this crate.
///
/// Messages never echo attacker-controlled bytes, so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The header value exceeds the parser's size limit.
    #[error("header value too large: {len} bytes (limit {limit})")]
    HeaderTooLarge {
        /// Actual length in bytes.
        len: usize,
        /// Configured limit in bytes.
        limit: usize,
    },
    /// The credentials use a scheme other than `Digest`.
    #[error("unsupported authorization scheme (expected Digest)")]
    UnsupportedScheme,
    /// The header is syntactically invalid.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    /// A parameter required by RFC 3261 / RFC 7616 is absent.
    #[error("missing digest parameter: {0}")]
    MissingParam(&'static str),
    /// Invalid configuration supplied by the operator.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A per-tenant dial policy could not be loaded.
    #[error("invalid dial policy: {0}")]
    Policy(String),
}
