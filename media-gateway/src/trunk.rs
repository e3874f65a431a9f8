//! The internal SIP trunk between cluster nodes. A phone behind NAT is reachable only from the
//! node it registered on (its binding names that node), so when the engine offers a call held
//! on node A to an agent whose phone registered on node B, A sends the agent INVITE to B's
//! trunk address and B calls the phone from its own address, relaying media A <-> B <-> phone.
//! A keeps the call: its state machine, the CDR and the recording (recorded once, on A).
//!
//! Only cluster peers may use the trunk: the request must come from the trunk address' IP of a
//! live node in the registry and carry `X-Switchboard-Trunk: <unix ms>.<hex HMAC-SHA256>` over
//! the time, tenant and agent, keyed with the shared `gateway.auth_secret`, no older than
//! [`MAX_SKEW_MS`]. Without a configured secret the trunk is off (calls go to the phone
//! directly, as a single node does).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the trunk token.
pub const TOKEN_HEADER: &str = "X-Switchboard-Trunk";
/// The header naming the call's tenant.
pub const TENANT_HEADER: &str = "X-Switchboard-Tenant";
/// How far a token's time may be from ours.
pub const MAX_SKEW_MS: u64 = 30_000;

fn mac(secret: &[u8], at_ms: u64, tenant: &str, agent: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(format!("{at_ms}|{tenant}|{agent}").as_bytes());
    Some(mac)
}

/// The token for a trunk INVITE at `now_ms` (none without a secret).
pub fn sign(secret: &[u8], now_ms: u64, tenant: &str, agent: &str) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    let tag = mac(secret, now_ms, tenant, agent)?.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{now_ms}.{hex}"))
}

/// Whether `token` is a valid, fresh token for (tenant, agent).
pub fn verify(secret: &[u8], now_ms: u64, token: &str, tenant: &str, agent: &str) -> bool {
    if secret.is_empty() || token.len() > 128 {
        return false;
    }
    let Some((at, hex)) = token.split_once('.') else {
        return false;
    };
    let Ok(at) = at.parse::<u64>() else {
        return false;
    };
    if at.abs_diff(now_ms) > MAX_SKEW_MS || hex.len() != 64 {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match (bytes, mac(secret, at, tenant, agent)) {
        (Some(bytes), Some(mac)) => mac.verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_verify_only_for_their_call_secret_and_time() {
        let t = sign(SECRET, 1_000_000, "t1", "a1").unwrap();
        assert!(verify(SECRET, 1_000_000, &t, "t1", "a1"));
        assert!(verify(SECRET, 1_020_000, &t, "t1", "a1"), "within the skew");
        assert!(!verify(SECRET, 1_040_000, &t, "t1", "a1"), "too old");
        assert!(!verify(SECRET, 1_000_000, &t, "t2", "a1"), "other tenant");
        assert!(!verify(SECRET, 1_000_000, &t, "t1", "a2"), "other agent");
        assert!(!verify(
            b"another-secret-another-secret-00",
            1_000_000,
            &t,
            "t1",
            "a1"
        ));
        assert!(!verify(SECRET, 1_000_000, "1000000.zz", "t1", "a1"));
        assert!(!verify(SECRET, 1_000_000, "", "t1", "a1"));
        assert!(
            !verify(b"", 1_000_000, &t, "t1", "a1"),
            "no secret, no trunk"
        );
        assert_eq!(sign(b"", 1, "t", "a"), None);
    }
}
