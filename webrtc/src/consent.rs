//! RFC 7675 consent freshness, seen from an ICE-lite endpoint: the browser sends a STUN
//! binding request every few seconds for as long as it wants our media; we answer the valid
//! ones. When none arrived for the timeout (30 s by default) the leg is dead. Pure: time comes
//! in as an argument.
//!
//! "Valid" is str0m's call: it answers a binding request only after checking its
//! MESSAGE-INTEGRITY against our ICE password, so each binding success response str0m sends
//! is one valid consent check (an ICE-lite agent sends no requests of its own).

use std::time::{Duration, Instant};

/// The consent timer of one leg.
#[derive(Debug, Clone, Copy)]
pub struct Consent {
    timeout: Duration,
    last: Instant,
}

impl Consent {
    /// Starts the timer: the browser has `timeout` from `now` for its first check.
    pub fn new(now: Instant, timeout: Duration) -> Self {
        Self { timeout, last: now }
    }

    /// A valid consent check was answered at `now`.
    pub fn refreshed(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// When consent runs out unless refreshed.
    pub fn deadline(&self) -> Instant {
        self.last + self.timeout
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// Whether an outgoing datagram is a STUN binding success response (RFC 5389: type 0x0101,
/// magic cookie 0x2112A442).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[..2] == [0x01, 0x01]
        && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn consent_runs_out_without_checks_and_each_check_extends_it() {
        let t0 = Instant::now();
        let mut c = Consent::new(t0, Duration::from_secs(30));
        assert!(!c.expired(t0 + Duration::from_secs(29)));
        assert!(c.expired(t0 + Duration::from_secs(30)));
        c.refreshed(t0 + Duration::from_secs(20));
        assert!(!c.expired(t0 + Duration::from_secs(49)));
        assert!(c.expired(t0 + Duration::from_secs(50)));
        // A late-delivered older instant does not move it back.
        c.refreshed(t0 + Duration::from_secs(5));
        assert_eq!(c.deadline(), t0 + Duration::from_secs(50));
    }

    #[test]
    fn binding_success_is_recognised() {
        let mut ok = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        ok.extend_from_slice(&[7; 12]);
        assert!(is_binding_success(&ok));
        let mut request = ok.clone();
        request[1] = 0x01;
        request[0] = 0x00;
        assert!(!is_binding_success(&request));
        assert!(!is_binding_success(&ok[..19]));
        let mut rtp = ok.clone();
        rtp[0] = 0x80;
        assert!(!is_binding_success(&rtp));
    }
}
