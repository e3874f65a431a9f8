//! Identity: access tokens (JWT), refresh tokens, API keys, password hashing, and the
//! revocation check every authenticated request passes.
//!
//! Access tokens are HS256 JWTs signed with the first configured key and verified with any key
//! whose `kid` the header names (key rotation: add the new key first, remove the old one after
//! the access-token lifetime). Validation pins the algorithm and requires `exp`, `nbf`, `iss`,
//! `aud` and `sub`. Unverified decoding is banned by clippy (`clippy.toml`).
//!
//! A token that verified is remembered (bounded, by its exact text) until it expires, so a client
//! that sends the same token with every request pays for the HMAC and JSON decoding once; what
//! is remembered is only what the full check accepted, and expiry is checked on every use.
//!
//! Revocation: a tenant and each user carry `tokens_valid_after`; a token issued before it is
//! refused. Those values (with tenant status and user `disabled`) are read through
//! [`StandingCache`], which this process invalidates on its own writes and otherwise refreshes
//! after a short TTL (the bound on how long another replica's revocation takes to reach us).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_domain::{Role, TenantId, UserId};
use uuid::Uuid;

use crate::error::ApiError;

/// One HMAC key for signing/verifying access tokens.
#[derive(Clone)]
pub struct JwtKey {
    pub kid: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// The first key signs; all verify.
    pub keys: Vec<JwtKey>,
    pub revocation_cache_ttl: Duration,
    /// argon2id memory cost in KiB and iterations.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The tenant id.
    pub tid: Uuid,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Issue time in milliseconds, compared with `tokens_valid_after`.
    pub iat_ms: i64,
}

/// Signs and verifies access tokens.
pub struct TokenService {
    settings: AuthSettings,
    encoding: EncodingKey,
    signing_kid: String,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    /// Stream tickets: the same keys and issuer, the audience `<audience>#events`.
    ticket_validation: Validation,
    argon2: Argon2<'static>,
    /// A valid hash of a random password: verified against when the user does not exist, so
    /// unknown and known users take the same time (no enumeration by timing).
    dummy_hash: String,
    /// Access tokens that passed [`TokenService::verify_access`], by their exact text.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

/// Bound on remembered verified tokens; past it expired ones are dropped, then all.
const MAX_VERIFIED_TOKENS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth.keys: at least one signing key is required")]
    NoKeys,
    #[error("auth.keys[{0}]: secret must be at least 32 bytes")]
    ShortSecret(String),
    #[error("auth.keys: duplicate kid {0}")]
    DuplicateKid(String),
    #[error("argon2 parameters: {0}")]
    Argon2(String),
}

impl TokenService {
    pub fn new(settings: AuthSettings) -> Result<Self, AuthConfigError> {
        let first = settings.keys.first().ok_or(AuthConfigError::NoKeys)?;
        let mut decoding = HashMap::new();
        for k in &settings.keys {
            if k.secret.len() < 32 {
                return Err(AuthConfigError::ShortSecret(k.kid.clone()));
            }
            if decoding
                .insert(k.kid.clone(), DecodingKey::from_secret(&k.secret))
                .is_some()
            {
                return Err(AuthConfigError::DuplicateKid(k.kid.clone()));
            }
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 5;
        let mut ticket_validation = validation.clone();
        ticket_validation.set_audience(&[ticket_audience(&settings.audience)]);
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            1,
            None,
        )
        .map_err(|e| AuthConfigError::Argon2(e.to_string()))?;
        let argon2 = Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(&random_bytes::<16>())
            .map_err(|e| AuthConfigError::Argon2(e.to_string()))?;
        let dummy_hash = argon2
            .hash_password(&random_bytes::<16>(), &salt)
            .map_err(|e| AuthConfigError::Argon2(e.to_string()))?
            .to_string();
        Ok(Self {
            encoding: EncodingKey::from_secret(&first.secret),
            signing_kid: first.kid.clone(),
            decoding,
            validation,
            ticket_validation,
            argon2,
            dummy_hash,
            settings,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Issues an access token for a user.
    pub fn issue_access(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Role,
    ) -> Result<(String, i64), ApiError> {
        let now = Utc::now();
        let ttl = self.settings.access_ttl.as_secs() as i64;
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user.to_string(),
            tid: tenant.0,
            role,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + ttl,
            iat_ms: now.timestamp_millis(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ApiError::internal)?;
        Ok((token, ttl))
    }

    /// Issues a stream ticket: like an access token but for the audience `<audience>#events`
    /// (so no other endpoint accepts it) and only `ttl` long. See `routes::events`.
    pub fn issue_stream_ticket(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Role,
        ttl: std::time::Duration,
    ) -> Result<String, ApiError> {
        let now = Utc::now();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(60);
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            aud: ticket_audience(&self.settings.audience),
            sub: user.to_string(),
            tid: tenant.0,
            role,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + ttl,
            iat_ms: now.timestamp_millis(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Verifies a stream ticket (signature, algorithm, issuer, the ticket audience, lifetime).
    pub fn verify_stream_ticket(&self, ticket: &str) -> Result<Claims, ApiError> {
        if ticket.len() > 4096 {
            return Err(ApiError::Unauthorized("ticket too long"));
        }
        self.verify_with(ticket, &self.ticket_validation)
    }

    /// Whether claims that verified are still inside their lifetime: the same rule (and
    /// leeway) as the full check's `exp` validation; `nbf` passed when they verified.
    fn unexpired(&self, claims: &Claims, now: u64) -> bool {
        u64::try_from(claims.exp).is_ok_and(|exp| exp.saturating_add(self.validation.leeway) >= now)
    }

    /// Verifies signature, algorithm and registered claims. Revocation is checked separately.
    pub fn verify_access(&self, token: &str) -> Result<Claims, ApiError> {
        if token.len() > 4096 {
            return Err(ApiError::Unauthorized("token too long"));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(verified) = self.verified.lock()
            && let Some(claims) = verified.get(token)
            && self.unexpired(claims, now)
        {
            return Ok(claims.clone());
        }
        let claims = self.verify_access_fully(token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_VERIFIED_TOKENS {
                verified.retain(|_, c| self.unexpired(c, now));
                if verified.len() >= MAX_VERIFIED_TOKENS {
                    verified.clear();
                }
            }
            verified.insert(token.into(), claims.clone());
        }
        Ok(claims)
    }

    fn verify_access_fully(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_with(token, &self.validation)
    }

    fn verify_with(&self, token: &str, validation: &Validation) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("malformed token"))?;
        if header.alg != Algorithm::HS256 {
            return Err(ApiError::Unauthorized("unexpected token algorithm"));
        }
        let kid = header
            .kid
            .ok_or(ApiError::Unauthorized("token has no key id"))?;
        let key = self
            .decoding
            .get(&kid)
            .ok_or(ApiError::Unauthorized("unknown token key id"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            ApiError::Unauthorized(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidSignature => "bad token signature",
                ErrorKind::InvalidAudience => "wrong token audience",
                ErrorKind::InvalidIssuer => "wrong token issuer",
                ErrorKind::MissingRequiredClaim(_) => "token misses a required claim",
                _ => "invalid token",
            })
        })?;
        Ok(data.claims)
    }

    /// Hashes a password with argon2id, off the async threads.
    pub async fn hash_password(&self, password: &str) -> Result<String, ApiError> {
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(ApiError::internal)?;
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(ApiError::internal)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Checks a password against a stored hash; with `None` it checks against a dummy hash so
    /// the time taken does not reveal whether the user exists.
    pub async fn verify_password(&self, password: &str, stored: Option<&str>) -> bool {
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| argon2.verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && known
    }
}

/// The audience of stream tickets.
fn ticket_audience(audience: &str) -> String {
    format!("{audience}#events")
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A fresh opaque secret with a recognisable prefix (`sbr_` refresh token, `sbk_` API key).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// SHA-256 hex of a high-entropy secret: what is stored instead of the secret.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What decides whether a still-unexpired token may be used.
#[derive(Debug, Clone)]
pub struct Standing {
    pub tenant_active: bool,
    pub tenant_valid_after: Option<DateTime<Utc>>,
    pub user_exists: bool,
    pub user_disabled: bool,
    pub user_valid_after: Option<DateTime<Utc>>,
}

impl Standing {
    /// Refuses a token issued (at `iat_ms`) before a revocation, or for a disabled user or a
    /// suspended tenant.
    pub fn admits(&self, iat_ms: i64) -> Result<(), ApiError> {
        if !self.tenant_active {
            return Err(ApiError::TenantSuspended);
        }
        if !self.user_exists || self.user_disabled {
            return Err(ApiError::Unauthorized("user disabled"));
        }
        let revoked =
            |after: Option<DateTime<Utc>>| after.is_some_and(|t| iat_ms < t.timestamp_millis());
        if revoked(self.tenant_valid_after) || revoked(self.user_valid_after) {
            return Err(ApiError::Unauthorized("token revoked"));
        }
        Ok(())
    }
}

/// Per-process cache of [`Standing`] by user id, with a short TTL.
pub struct StandingCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (Instant, Uuid, Standing)>>,
}

impl StandingCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, user: Uuid) -> Option<Standing> {
        let entries = self.entries.lock().ok()?;
        let (at, _, s) = entries.get(&user)?;
        (at.elapsed() < self.ttl).then(|| s.clone())
    }

    pub fn put(&self, user: Uuid, tenant: Uuid, standing: Standing) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 100_000 {
                let ttl = self.ttl;
                entries.retain(|_, (at, _, _)| at.elapsed() < ttl);
            }
            entries.insert(user, (Instant::now(), tenant, standing));
        }
    }

    pub fn forget_user(&self, user: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&user);
        }
    }

    pub fn forget_tenant(&self, tenant: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (_, t, _)| *t != tenant);
        }
    }
}

/// Failed-login throttle: after `max_failures` failures within `window` for one key (an
/// account, or a source address with a larger budget), further attempts are refused with 429
/// until the window passes. Per process: each replica counts its own share, which still bounds
/// guessing to replicas × budget per window.
pub struct LoginThrottle {
    window: Duration,
    entries: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Failures allowed per account per window.
pub const ACCOUNT_FAILURE_BUDGET: u32 = 10;
/// Failures allowed per source address per window.
pub const SOURCE_FAILURE_BUDGET: u32 = 50;

impl LoginThrottle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses when `key` has used up `budget` failures in the current window; returns the
    /// seconds until it may try again.
    pub fn check(&self, key: &str, budget: u32) -> Result<(), u64> {
        let Ok(entries) = self.entries.lock() else {
            return Ok(());
        };
        match entries.get(key) {
            Some((start, n)) if *n >= budget && start.elapsed() < self.window => {
                Err((self.window - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 100_000 {
                let window = self.window;
                entries.retain(|_, (start, _)| start.elapsed() < window);
            }
            let e = entries.entry(key.to_owned()).or_insert((Instant::now(), 0));
            if e.0.elapsed() >= self.window {
                *e = (Instant::now(), 0);
            }
            e.1 += 1;
        }
    }

    pub fn succeeded(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn throttle_refuses_after_budget_and_resets_on_success() {
        let t = LoginThrottle::new(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.check("a", 3).is_ok());
            t.failed("a");
        }
        assert!(t.check("a", 3).is_err());
        assert!(t.check("b", 3).is_ok(), "other keys unaffected");
        t.succeeded("a");
        assert!(t.check("a", 3).is_ok());
    }

    fn service() -> TokenService {
        TokenService::new(AuthSettings {
            issuer: "iss".into(),
            audience: "aud".into(),
            access_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(3600),
            keys: vec![JwtKey {
                kid: "k".into(),
                secret: b"unit-test-secret-unit-test-secret-000".to_vec(),
            }],
            revocation_cache_ttl: Duration::from_secs(1),
            argon2_memory_kib: 64,
            argon2_iterations: 1,
        })
        .unwrap()
    }

    #[test]
    fn remembered_tokens_serve_only_until_expiry_and_forgeries_are_checked() {
        let tokens = service();
        let (token, _) = tokens
            .issue_access(
                TenantId(Uuid::now_v7()),
                UserId(Uuid::now_v7()),
                Role::Agent,
            )
            .unwrap();
        let claims = tokens.verify_access(&token).unwrap();
        assert_eq!(tokens.verify_access(&token).unwrap().sub, claims.sub);
        // A token differing in one signature character was never verified: refused.
        let mut forged = token.clone();
        let last = if forged.ends_with('A') { "B" } else { "A" };
        forged.replace_range(forged.len() - 1.., last);
        assert!(tokens.verify_access(&forged).is_err());
        // Remembered claims past exp + leeway are not served: the token is checked again (it
        // is in fact valid), and its real claims replace them.
        let past = jsonwebtoken::get_current_timestamp() as i64 - 6;
        tokens
            .verified
            .lock()
            .unwrap()
            .get_mut(token.as_str())
            .unwrap()
            .exp = past;
        assert_eq!(tokens.verify_access(&token).unwrap().exp, claims.exp);
        assert_eq!(
            tokens.verified.lock().unwrap()[token.as_str()].exp,
            claims.exp
        );
        // Within the leeway they still are.
        let recent = jsonwebtoken::get_current_timestamp() as i64 - 2;
        tokens
            .verified
            .lock()
            .unwrap()
            .get_mut(token.as_str())
            .unwrap()
            .exp = recent;
        assert_eq!(tokens.verify_access(&token).unwrap().exp, recent);
    }

    #[test]
    fn throttle_window_expires() {
        let t = LoginThrottle::new(Duration::from_millis(1));
        t.failed("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.check("a", 1).is_ok());
    }
}
