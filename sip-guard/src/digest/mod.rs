//! SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760).
//!
//! Exists so every gateway node can challenge and verify agents' phones and
//! customers' trunks without sharing per-nonce state: nonces are
//! self-authenticating (HMAC under a cluster secret, see the crate README), and
//! stored credentials are only ever the HA1 hashes, never passwords.
//!
//! Enumeration resistance: an unknown user name is verified against a dummy
//! credential, doing the same hashing and comparison work, and yields exactly
//! the same [`AuthOutcome`] as a wrong password.

mod parse;

pub use parse::{Algorithm, DigestResponse, MAX_HEADER_LEN, parse_authorization};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::GuardError;

type HmacSha256 = Hmac<Sha256>;

const TS_LEN: usize = 8;
const RAND_LEN: usize = 16;
const MAC_LEN: usize = 32;
const NONCE_BYTES: usize = TS_LEN + RAND_LEN + MAC_LEN;

/// Default nonce lifetime: 5 minutes.
pub const DEFAULT_NONCE_TTL_MS: u64 = 5 * 60 * 1000;
/// Default tolerance for nonces stamped "in the future" by a node whose clock
/// runs ahead: 30 seconds.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 30 * 1000;
/// Minimum cluster secret length in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Stored SIP credential: the two HA1 hashes, never the password.
///
/// `ha1_md5 = hex(MD5(username ":" realm ":" password))`,
/// `ha1_sha256 = hex(SHA-256(username ":" realm ":" password))`.
#[derive(Clone, PartialEq, Eq)]
pub struct SipCredential {
    /// SIP user name (the digest `username`).
    pub username: String,
    /// Realm the hashes were computed for.
    pub realm: String,
    /// Lower-case hex MD5 HA1.
    pub ha1_md5: String,
    /// Lower-case hex SHA-256 HA1.
    pub ha1_sha256: String,
}

impl std::fmt::Debug for SipCredential {
    // HA1 is password-equivalent for this realm: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipCredential")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl SipCredential {
    /// Hash a password into a storable credential (at provisioning time).
    pub fn derive(username: &str, realm: &str, password: &str) -> Self {
        let a1 = format!("{username}:{realm}:{password}");
        SipCredential {
            username: username.to_owned(),
            realm: realm.to_owned(),
            ha1_md5: hex_hash(Algorithm::Md5, a1.as_bytes()),
            ha1_sha256: hex_hash(Algorithm::Sha256, a1.as_bytes()),
        }
    }

    fn ha1(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// Why a verification failed. For logs and metrics only: never send it to the
/// peer (the peer gets a fresh challenge either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// `realm` differs from the realm being protected.
    RealmMismatch,
    /// The nonce was not issued by this cluster (bad encoding or HMAC), or is
    /// stamped too far in the future.
    BadNonce,
    /// `uri` is empty.
    MissingUri,
    /// `qop` is not `auth`, or `nc`/`cnonce` are missing or malformed.
    BadQop,
    /// `algorithm` is not MD5 or SHA-256, or `userhash` was requested.
    UnsupportedAlgorithm,
    /// Wrong password **or unknown user**: deliberately indistinguishable.
    BadCredentials,
}

/// Result of [`DigestAuthenticator::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    /// Credentials are valid and the nonce is fresh.
    Ok,
    /// Credentials are valid but the nonce has expired: re-challenge with
    /// [`DigestAuthenticator::stale_challenge`] so the phone retries silently.
    Stale,
    /// Authentication failed: re-challenge with
    /// [`DigestAuthenticator::challenge`] and count a failure.
    Failed(FailReason),
}

/// Configuration for [`DigestAuthenticator`].
#[derive(Clone)]
pub struct DigestConfig {
    /// Cluster-wide HMAC secret shared by all gateway nodes (>= 32 bytes).
    pub secret: Vec<u8>,
    /// Nonce lifetime in milliseconds.
    pub nonce_ttl_ms: u64,
    /// How far in the future a nonce timestamp may be (clock skew between nodes).
    pub max_clock_skew_ms: u64,
}

impl std::fmt::Debug for DigestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestConfig")
            .field("nonce_ttl_ms", &self.nonce_ttl_ms)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .finish_non_exhaustive()
    }
}

impl DigestConfig {
    /// Defaults (5 min TTL, 30 s skew) with the given secret.
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        DigestConfig {
            secret: secret.into(),
            nonce_ttl_ms: DEFAULT_NONCE_TTL_MS,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

/// Issues challenges and verifies digest responses. Immutable and `Sync`:
/// share one per process behind an `Arc`.
pub struct DigestAuthenticator {
    cfg: DigestConfig,
    /// HMAC keyed with the cluster secret, cloned per nonce.
    keyed: HmacSha256,
    dummy: SipCredential,
}

impl std::fmt::Debug for DigestAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAuthenticator")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl DigestAuthenticator {
    /// Build an authenticator; fails if the secret is shorter than 32 bytes or
    /// the TTL is zero.
    pub fn new(cfg: DigestConfig) -> Result<Self, GuardError> {
        if cfg.secret.len() < MIN_SECRET_LEN {
            return Err(GuardError::Config(
                "digest secret must be at least 32 bytes",
            ));
        }
        if cfg.nonce_ttl_ms == 0 {
            return Err(GuardError::Config("nonce TTL must be positive"));
        }
        let keyed = HmacSha256::new_from_slice(&cfg.secret)
            .map_err(|_| GuardError::Config("digest secret rejected by HMAC"))?;
        // Random HA1s: no password matches them, so verification against the
        // dummy always fails, after doing the same work as a real check.
        let r: [u8; 32] = rand::random();
        let dummy = SipCredential {
            username: String::new(),
            realm: String::new(),
            ha1_md5: hex(&r[..16]),
            ha1_sha256: hex(&r),
        };
        Ok(DigestAuthenticator { cfg, keyed, dummy })
    }

    /// `WWW-Authenticate` (or `Proxy-Authenticate`) values for a 401/407:
    /// SHA-256 first, then MD5 (RFC 8760: most preferred challenge first), same nonce.
    pub fn challenge(&self, realm: &str, now_ms: u64) -> Vec<String> {
        self.challenge_with_random(realm, now_ms, rand::random(), false)
    }

    /// Like [`Self::challenge`] with `stale=true`, after [`AuthOutcome::Stale`].
    pub fn stale_challenge(&self, realm: &str, now_ms: u64) -> Vec<String> {
        self.challenge_with_random(realm, now_ms, rand::random(), true)
    }

    /// Deterministic form of [`Self::challenge`] (random bytes supplied), for tests.
    pub fn challenge_with_random(
        &self,
        realm: &str,
        now_ms: u64,
        random: [u8; 16],
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.make_nonce(realm, now_ms, random);
        let realm_q = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        [Algorithm::Sha256, Algorithm::Md5]
            .into_iter()
            .map(|alg| {
                format!(
                    "Digest realm={realm_q}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    alg.as_str()
                )
            })
            .collect()
    }

    /// Create a nonce: `base64url(ts_be64 || random16 || HMAC-SHA256(secret, ts || random || realm))`.
    pub fn make_nonce(&self, realm: &str, now_ms: u64, random: [u8; 16]) -> String {
        let ts = now_ms.to_be_bytes();
        let tag = self.nonce_mac(&ts, &random, realm);
        let mut raw = Vec::with_capacity(NONCE_BYTES);
        raw.extend_from_slice(&ts);
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn nonce_mac(&self, ts: &[u8], random: &[u8], realm: &str) -> [u8; MAC_LEN] {
        self.mac_for(ts, random, realm)
            .finalize()
            .into_bytes()
            .into()
    }

    fn mac_for(&self, ts: &[u8], random: &[u8], realm: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(ts);
        mac.update(random);
        mac.update(realm.as_bytes());
        mac
    }

    /// Check a nonce's authenticity for `realm`. Returns its timestamp, or `None`
    /// if it was not issued by this cluster for this realm.
    fn check_nonce(&self, nonce: &str, realm: &str) -> Option<u64> {
        if nonce.len() > 128 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        if raw.len() != NONCE_BYTES {
            return None;
        }
        let (ts, rest) = raw.split_at(TS_LEN);
        let (random, tag) = rest.split_at(RAND_LEN);
        // verify_slice compares in constant time.
        self.mac_for(ts, random, realm).verify_slice(tag).ok()?;
        let ts: [u8; TS_LEN] = ts.try_into().ok()?;
        Some(u64::from_be_bytes(ts))
    }

    /// Verify a parsed `Authorization` header for a request with SIP `method`
    /// against the protected `realm`.
    ///
    /// `credential` is the stored credential for `(parsed.username, realm)`, or
    /// `None` if no such user exists; the outcome is then identical to a wrong
    /// password ([`FailReason::BadCredentials`]) and the same work is done.
    /// [`AuthOutcome::Stale`] is only returned when the response is otherwise
    /// correct.
    pub fn verify(
        &self,
        parsed: &DigestResponse,
        method: &str,
        realm: &str,
        credential: Option<&SipCredential>,
        now_ms: u64,
    ) -> AuthOutcome {
        use AuthOutcome::Failed;
        if parsed.realm != realm {
            return Failed(FailReason::RealmMismatch);
        }
        let Some(issued) = self.check_nonce(&parsed.nonce, realm) else {
            return Failed(FailReason::BadNonce);
        };
        if issued > now_ms.saturating_add(self.cfg.max_clock_skew_ms) {
            return Failed(FailReason::BadNonce);
        }
        if parsed.uri.is_empty() {
            return Failed(FailReason::MissingUri);
        }
        let (Some(qop), Some(nc), Some(cnonce)) = (&parsed.qop, &parsed.nc, &parsed.cnonce) else {
            return Failed(FailReason::BadQop);
        };
        if !qop.eq_ignore_ascii_case("auth")
            || nc.len() != 8
            || !nc.bytes().all(|b| b.is_ascii_hexdigit())
            || cnonce.is_empty()
        {
            return Failed(FailReason::BadQop);
        }
        let Some(alg) = parsed.algorithm else {
            return Failed(FailReason::UnsupportedAlgorithm);
        };
        if parsed.userhash {
            return Failed(FailReason::UnsupportedAlgorithm);
        }

        // From here on the work is the same whether or not the user exists.
        let known = credential.filter(|c| c.username == parsed.username && c.realm == realm);
        let cred = known.unwrap_or(&self.dummy);
        let expected = compute_response(
            alg,
            cred.ha1(alg),
            &parsed.nonce,
            nc,
            cnonce,
            qop,
            method,
            &parsed.uri,
        );
        let given = parsed.response.to_ascii_lowercase();
        let matches: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        if !(matches && known.is_some()) {
            return Failed(FailReason::BadCredentials);
        }
        if now_ms.saturating_sub(issued) > self.cfg.nonce_ttl_ms {
            return AuthOutcome::Stale;
        }
        AuthOutcome::Ok
    }
}

/// Compute the RFC 7616 section 3.4.1 `response` for `qop=auth`:
/// `H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" H(method ":" uri))`, lower-case hex.
#[allow(clippy::too_many_arguments)]
pub fn compute_response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = hex_hash(alg, format!("{method}:{uri}").as_bytes());
    hex_hash(
        alg,
        format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}").as_bytes(),
    )
}

fn hex_hash(alg: Algorithm, data: &[u8]) -> String {
    match alg {
        Algorithm::Md5 => hex(&Md5::digest(data)),
        Algorithm::Sha256 => hex(&Sha256::digest(data)),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Render a quoted-string, escaping `"` and `\`; control characters are dropped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
