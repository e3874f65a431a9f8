//! Admission control for overload: a token-bucket call-rate limiter plus a cap
//! on calls in flight (being set up or up, as the gateway defines it).
//!
//! Exists so the gateway sheds load early and politely (RFC 3261 `503 Service
//! Unavailable` with `Retry-After`, RFC 7339-style overload behaviour) instead
//! of falling over under an INVITE flood. Sans-IO: time is `now_ms`.
//! Thread-safe: `try_admit` takes `&self`, and a [`Permit`] releases its
//! in-flight slot when dropped, from any thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::GuardError;

const MILLI: u64 = 1000;

/// Limits for [`Admission`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Sustained new calls per second (token refill rate), >= 1.
    pub calls_per_sec: u32,
    /// Bucket size: calls that may arrive back to back, >= 1.
    pub burst: u32,
    /// Maximum permits alive at once, >= 1.
    pub max_in_flight: u32,
    /// `Retry-After` seconds suggested when the in-flight cap is hit.
    pub busy_retry_secs: u32,
}

/// Why not now: answer `503` with `Retry-After: after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retry {
    /// Suggested `Retry-After` in whole seconds (>= 1).
    pub after_secs: u32,
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "overloaded, retry after {} s", self.after_secs)
    }
}

/// An admitted call; holds one in-flight slot until dropped.
#[derive(Debug)]
#[must_use = "dropping the permit immediately releases the in-flight slot"]
pub struct Permit {
    in_flight: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Bucket {
    /// Tokens in thousandths.
    milli_tokens: u64,
    last_ms: u64,
}

/// Token bucket + in-flight cap. Share behind an `Arc`.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    bucket: Mutex<Bucket>,
    in_flight: Arc<AtomicU32>,
}

impl Admission {
    /// Create a limiter whose bucket starts full at `now_ms`.
    pub fn new(cfg: AdmissionConfig, now_ms: u64) -> Result<Self, GuardError> {
        if cfg.calls_per_sec == 0 || cfg.burst == 0 || cfg.max_in_flight == 0 {
            return Err(GuardError::Config(
                "calls_per_sec, burst and max_in_flight must be positive",
            ));
        }
        Ok(Admission {
            bucket: Mutex::new(Bucket {
                milli_tokens: u64::from(cfg.burst) * MILLI,
                last_ms: now_ms,
            }),
            in_flight: Arc::new(AtomicU32::new(0)),
            cfg,
        })
    }

    /// Admit one new call, or say when to retry.
    ///
    /// The in-flight cap is checked first, so a refusal for being busy does
    /// not consume a token.
    pub fn try_admit(&self, now_ms: u64) -> Result<Permit, Retry> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        // Refill: calls_per_sec tokens per 1000 ms = calls_per_sec milli-tokens per ms.
        let elapsed = now_ms.saturating_sub(b.last_ms);
        if now_ms > b.last_ms {
            b.last_ms = now_ms;
        }
        let cap = u64::from(self.cfg.burst) * MILLI;
        b.milli_tokens = b
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(self.cfg.calls_per_sec)))
            .min(cap);

        // Only try_admit increments, and it does so under the bucket lock, so
        // load-then-add cannot overshoot; drops only ever decrease the count.
        if self.in_flight.load(Ordering::Acquire) >= self.cfg.max_in_flight {
            return Err(Retry {
                after_secs: self.cfg.busy_retry_secs.max(1),
            });
        }
        if b.milli_tokens < MILLI {
            let missing = MILLI - b.milli_tokens;
            let rate_per_sec_milli = u64::from(self.cfg.calls_per_sec) * MILLI;
            let secs = missing.div_ceil(rate_per_sec_milli).max(1);
            return Err(Retry {
                after_secs: u32::try_from(secs).unwrap_or(u32::MAX),
            });
        }
        b.milli_tokens -= MILLI;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// Calls currently holding a permit.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg() -> AdmissionConfig {
        AdmissionConfig {
            calls_per_sec: 2,
            burst: 4,
            max_in_flight: 100,
            busy_retry_secs: 5,
        }
    }

    #[test]
    fn burst_then_rate() {
        let a = Admission::new(cfg(), 0).unwrap();
        let permits: Vec<_> = (0..4).map(|_| a.try_admit(0).unwrap()).collect();
        assert_eq!(a.try_admit(0).unwrap_err(), Retry { after_secs: 1 });
        // 2 calls/s: one token every 500 ms.
        assert!(a.try_admit(499).is_err());
        let _p = a.try_admit(500).unwrap();
        assert!(a.try_admit(500).is_err());
        let _q = a.try_admit(1000).unwrap();
        // Long idle refills only up to the burst size.
        let more: Vec<_> = (0..4).map(|_| a.try_admit(60_000).unwrap()).collect();
        assert!(a.try_admit(60_000).is_err());
        assert_eq!(a.in_flight(), 10);
        drop(permits);
        drop(more);
        assert_eq!(a.in_flight(), 2);
    }

    #[test]
    fn retry_after_reflects_rate() {
        let a = Admission::new(
            AdmissionConfig {
                calls_per_sec: 1,
                burst: 1,
                ..cfg()
            },
            0,
        )
        .unwrap();
        let _p = a.try_admit(0).unwrap();
        assert_eq!(a.try_admit(0).unwrap_err(), Retry { after_secs: 1 });
        assert_eq!(a.try_admit(999).unwrap_err().after_secs, 1);
        assert!(a.try_admit(1000).is_ok());
    }

    #[test]
    fn in_flight_cap_and_release_on_drop() {
        let a = Admission::new(
            AdmissionConfig {
                max_in_flight: 2,
                burst: 10,
                ..cfg()
            },
            0,
        )
        .unwrap();
        let p1 = a.try_admit(0).unwrap();
        let _p2 = a.try_admit(0).unwrap();
        assert_eq!(a.try_admit(0).unwrap_err(), Retry { after_secs: 5 });
        drop(p1);
        assert!(
            a.try_admit(0).is_ok(),
            "busy refusals did not consume tokens"
        );
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let a = Admission::new(cfg(), 10_000).unwrap();
        let _v: Vec<_> = (0..4).map(|_| a.try_admit(10_000).unwrap()).collect();
        assert!(a.try_admit(5_000).is_err());
        assert!(a.try_admit(10_000).is_err());
        assert!(a.try_admit(10_500).is_ok());
    }

    #[test]
    fn threads_never_exceed_cap() {
        let a = Arc::new(
            Admission::new(
                AdmissionConfig {
                    calls_per_sec: 1_000_000,
                    burst: 1_000_000,
                    max_in_flight: 8,
                    busy_retry_secs: 1,
                },
                0,
            )
            .unwrap(),
        );
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..2000 {
                        if let Ok(p) = a.try_admit(0) {
                            held.push(p);
                        }
                        assert!(a.in_flight() <= 8);
                        if i % 3 == 0 {
                            held.pop();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn rejects_zero_config() {
        assert!(
            Admission::new(
                AdmissionConfig {
                    calls_per_sec: 0,
                    ..cfg()
                },
                0
            )
            .is_err()
        );
        assert!(Admission::new(AdmissionConfig { burst: 0, ..cfg() }, 0).is_err());
        assert!(
            Admission::new(
                AdmissionConfig {
                    max_in_flight: 0,
                    ..cfg()
                },
                0
            )
            .is_err()
        );
    }
}
