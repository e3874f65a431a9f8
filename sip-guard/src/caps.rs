//! Concurrent call caps per tenant and per seat.
//!
//! Exists to bound the blast radius of a compromised account or a runaway
//! dialler: even with valid credentials a tenant cannot hold more than its
//! contracted number of simultaneous calls, nor a single seat (agent phone or
//! trunk) more than its own limit. Permits are RAII: dropping a [`CapPermit`]
//! (call ended, task cancelled, panic unwinding) releases both counts, so the
//! counters cannot leak. Thread-safe (`std::sync::Mutex`), usable from many
//! tokio tasks; the critical section is a couple of hash-map operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Limits applied by [`CallCaps::try_acquire`]. Zero means "no calls".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapLimits {
    /// Maximum concurrent calls for the whole tenant.
    pub max_per_tenant: u32,
    /// Maximum concurrent calls for one seat of the tenant.
    pub max_per_seat: u32,
}

/// Which cap was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapScope {
    /// The tenant-wide cap.
    Tenant,
    /// The per-seat cap.
    Seat,
}

/// Refusal from [`CallCaps::try_acquire`] (answer e.g. `486 Busy Here` or
/// `403`, as the product decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapExceeded {
    /// Which cap was hit.
    pub scope: CapScope,
    /// The limit that applied.
    pub limit: u32,
}

impl std::fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = match self.scope {
            CapScope::Tenant => "tenant",
            CapScope::Seat => "seat",
        };
        write!(f, "{scope} concurrent call limit {} reached", self.limit)
    }
}

#[derive(Debug, Default)]
struct Counts {
    tenants: HashMap<String, u32>,
    seats: HashMap<(String, String), u32>,
}

/// Concurrent call counters. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct CallCaps {
    inner: Arc<Mutex<Counts>>,
}

/// One counted call; releases its tenant (and seat) slot on drop.
#[derive(Debug)]
#[must_use = "dropping the permit immediately ends the counted call"]
pub struct CapPermit {
    inner: Arc<Mutex<Counts>>,
    tenant: String,
    seat: Option<String>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        decrement(&mut c.tenants, &self.tenant);
        if let Some(seat) = self.seat.take() {
            let key = (std::mem::take(&mut self.tenant), seat);
            decrement(&mut c.seats, &key);
        }
    }
}

impl CallCaps {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one more call for `tenant` and, if given, its `seat` (calls not
    /// yet tied to a seat, such as inbound queue calls, pass `None`).
    /// Both limits are checked before anything is counted.
    pub fn try_acquire(
        &self,
        tenant: &str,
        seat: Option<&str>,
        limits: CapLimits,
    ) -> Result<CapPermit, CapExceeded> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let t_now = c.tenants.get(tenant).copied().unwrap_or(0);
        if t_now >= limits.max_per_tenant {
            return Err(CapExceeded {
                scope: CapScope::Tenant,
                limit: limits.max_per_tenant,
            });
        }
        let seat_key = seat.map(|s| (tenant.to_owned(), s.to_owned()));
        if let Some(k) = &seat_key {
            let s_now = c.seats.get(k).copied().unwrap_or(0);
            if s_now >= limits.max_per_seat {
                return Err(CapExceeded {
                    scope: CapScope::Seat,
                    limit: limits.max_per_seat,
                });
            }
        }
        *c.tenants.entry(tenant.to_owned()).or_insert(0) += 1;
        if let Some(k) = seat_key {
            *c.seats.entry(k).or_insert(0) += 1;
        }
        Ok(CapPermit {
            inner: Arc::clone(&self.inner),
            tenant: tenant.to_owned(),
            seat: seat.map(str::to_owned),
        })
    }

    /// Current concurrent calls of a tenant.
    pub fn tenant_count(&self, tenant: &str) -> u32 {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.tenants.get(tenant).copied().unwrap_or(0)
    }

    /// Current concurrent calls of one seat.
    pub fn seat_count(&self, tenant: &str, seat: &str) -> u32 {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.seats
            .get(&(tenant.to_owned(), seat.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const L: CapLimits = CapLimits {
        max_per_tenant: 3,
        max_per_seat: 2,
    };

    #[test]
    fn seat_and_tenant_limits() {
        let caps = CallCaps::new();
        let a1 = caps.try_acquire("t1", Some("alice"), L).unwrap();
        let _a2 = caps.try_acquire("t1", Some("alice"), L).unwrap();
        assert_eq!(
            caps.try_acquire("t1", Some("alice"), L).unwrap_err(),
            CapExceeded {
                scope: CapScope::Seat,
                limit: 2
            }
        );
        let _b1 = caps.try_acquire("t1", Some("bob"), L).unwrap();
        assert_eq!(
            caps.try_acquire("t1", None, L).unwrap_err(),
            CapExceeded {
                scope: CapScope::Tenant,
                limit: 3
            }
        );
        // Other tenants, and same seat name in another tenant, are independent.
        let _c = caps.try_acquire("t2", Some("alice"), L).unwrap();
        assert_eq!(caps.tenant_count("t1"), 3);
        assert_eq!(caps.seat_count("t1", "alice"), 2);
        drop(a1);
        assert_eq!(caps.seat_count("t1", "alice"), 1);
        let _a3 = caps.try_acquire("t1", Some("alice"), L).unwrap();
    }

    #[test]
    fn refused_acquire_counts_nothing_and_drop_cleans_up() {
        let caps = CallCaps::new();
        let zero = CapLimits {
            max_per_tenant: 5,
            max_per_seat: 0,
        };
        assert!(caps.try_acquire("t", Some("s"), zero).is_err());
        assert_eq!(caps.tenant_count("t"), 0);
        let p = caps.try_acquire("t", Some("s"), L).unwrap();
        let q = caps.try_acquire("t", None, L).unwrap();
        drop((p, q));
        let c = caps.inner.lock().unwrap();
        assert!(c.tenants.is_empty() && c.seats.is_empty());
    }

    #[test]
    fn concurrent_threads_respect_tenant_cap() {
        let caps = CallCaps::new();
        let limits = CapLimits {
            max_per_tenant: 5,
            max_per_seat: 100,
        };
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let caps = caps.clone();
                std::thread::spawn(move || {
                    let seat = format!("s{i}");
                    let mut held = Vec::new();
                    for n in 0..2000 {
                        if let Ok(p) = caps.try_acquire("t", Some(&seat), limits) {
                            held.push(p);
                        }
                        assert!(caps.tenant_count("t") <= 5);
                        if n % 2 == 0 {
                            held.pop();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(caps.tenant_count("t"), 0);
    }
}
