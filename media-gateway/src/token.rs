//! Browser agents register with their api access token instead of a SIP password.
//!
//! A browser cannot set headers on a WebSocket handshake, but a browser SIP library can add
//! headers to its REGISTER (JsSIP `extraHeaders`, SIP.js `extraHeaders`), so the token rides
//! in the REGISTER as `Authorization: Bearer <token>` (the scheme RFC 8898 gives SIP). The
//! gateway does not read tokens itself: it is handed an [`AgentTokenVerifier`] that applies the
//! api's own rule (signature, algorithm, registered claims, then revocation: the binary and
//! the tests wire `switchboard_api::extract::user_of_access_token`), so there is one rule and
//! no token is ever read unverified. Tokens are accepted only over WebSocket connections.

use std::sync::Arc;

use futures::future::BoxFuture;
use uuid::Uuid;

/// Who a verified token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIdentity {
    pub tenant: Uuid,
    pub user: Uuid,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Malformed, forged, expired or revoked: 401 with a Bearer challenge.
    Invalid(&'static str),
    /// Valid, but its tenant is suspended or its user disabled: 403.
    Forbidden(&'static str),
    /// The check could not run (database down): 503.
    Unavailable,
}

/// Checks an access token with the api's rules.
pub type AgentTokenVerifier =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<TokenIdentity, TokenRefusal>> + Send + Sync>;

/// Longest token accepted (the api refuses longer ones too).
pub const MAX_TOKEN: usize = 4096;

/// The token of an `Authorization: Bearer <token>` value; `None` for other schemes (digest).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_told_from_digest() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("  bearer   tok  "), Some("tok"));
        assert_eq!(bearer("Digest username=\"a\", realm=\"b\""), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer(""), None);
    }
}
