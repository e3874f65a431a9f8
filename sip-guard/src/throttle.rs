//! Failed-authentication throttling and the ban list.
//!
//! Exists because SIP edges are scanned and brute-forced around the clock
//! (SIPVicious-style `REGISTER` floods). Two counters are kept:
//!
//! * per **source IP**: after `max_failures_per_source` failures inside
//!   `window_ms` the source is banned for `ban_ms` (the gateway then drops its
//!   packets or answers 403 without running digest at all);
//! * per **user name**, across all sources: after `max_failures_per_user`
//!   failures inside `window_ms` further attempts on that name are refused for
//!   `ban_ms`. The counter is keyed by the name *as sent*, whether or not the
//!   account exists, and the gateway must answer a locked name exactly like a
//!   wrong password (a fresh 401 challenge), so the lock reveals nothing.
//!
//! Memory is bounded: each table holds at most `max_tracked` entries; expired
//! entries are purged first, then the least recently seen unbanned entries,
//! then (only if the table is full of live bans) the bans expiring soonest.
//! All methods take `&self` (an internal `Mutex`) so one `Guard` can be shared
//! by every task of the gateway.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use crate::GuardError;

/// User names longer than this are truncated before being used as a key, to
/// bound memory per entry.
const MAX_USER_KEY_LEN: usize = 128;

/// Limits for [`Guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures from one source IP within the window before it is banned.
    pub max_failures_per_source: u32,
    /// Failures for one user name (any source) within the window before the
    /// name is locked.
    pub max_failures_per_user: u32,
    /// Counting window in milliseconds (fixed window starting at the first failure).
    pub window_ms: u64,
    /// Ban / lock duration in milliseconds.
    pub ban_ms: u64,
    /// Maximum entries in each of the source and user tables.
    pub max_tracked: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_failures_per_source: 10,
            max_failures_per_user: 20,
            window_ms: 60_000,
            ban_ms: 15 * 60_000,
            max_tracked: 100_000,
        }
    }
}

/// Whether a source (or user name) may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refused until `until_ms` (same clock as `now_ms`).
    Banned {
        /// When the ban ends.
        until_ms: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
    banned_until: u64,
    last_seen: u64,
}

impl Entry {
    fn new(now: u64) -> Self {
        Entry {
            window_start: now,
            failures: 0,
            banned_until: 0,
            last_seen: now,
        }
    }

    fn is_banned(&self, now: u64) -> bool {
        self.banned_until > now
    }

    /// Nothing worth remembering: no live ban and the window has passed.
    fn is_expired(&self, now: u64, window_ms: u64) -> bool {
        !self.is_banned(now)
            && (self.failures == 0 || now.saturating_sub(self.window_start) >= window_ms)
    }

    /// Count one failure; returns true if this failure triggered a ban.
    fn fail(&mut self, now: u64, max: u32, window_ms: u64, ban_ms: u64) -> bool {
        self.last_seen = self.last_seen.max(now);
        if self.is_banned(now) {
            return false;
        }
        if self.failures == 0 || now.saturating_sub(self.window_start) >= window_ms {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= max {
            self.banned_until = now.saturating_add(ban_ms);
            self.failures = 0;
            return true;
        }
        false
    }
}

struct Table<K> {
    map: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Table {
            map: HashMap::new(),
        }
    }

    fn verdict(&self, key: &K, now: u64) -> Verdict {
        match self.map.get(key) {
            Some(e) if e.is_banned(now) => Verdict::Banned {
                until_ms: e.banned_until,
            },
            _ => Verdict::Allow,
        }
    }

    fn entry(&mut self, key: K, now: u64, cfg: &GuardConfig) -> &mut Entry {
        if !self.map.contains_key(&key) && self.map.len() >= cfg.max_tracked {
            self.make_room(now, cfg);
        }
        self.map.entry(key).or_insert_with(|| Entry::new(now))
    }

    /// Free at least one slot (about 1/8 of the table when full of live
    /// entries, so the O(n) pass is amortised over many inserts).
    fn make_room(&mut self, now: u64, cfg: &GuardConfig) {
        self.map.retain(|_, e| !e.is_expired(now, cfg.window_ms));
        let target = cfg.max_tracked.saturating_sub(cfg.max_tracked / 8 + 1);
        if self.map.len() <= target {
            return;
        }
        let excess = self.map.len() - target;
        // Unbanned entries first (oldest first), then bans that end soonest.
        let mut order: Vec<(bool, u64, K)> = self
            .map
            .iter()
            .map(|(k, e)| {
                let banned = e.is_banned(now);
                let age_key = if banned { e.banned_until } else { e.last_seen };
                (banned, age_key, k.clone())
            })
            .collect();
        if excess < order.len() {
            order.select_nth_unstable_by(excess, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        }
        for (_, _, k) in order.into_iter().take(excess) {
            self.map.remove(&k);
        }
    }
}

struct Inner {
    sources: Table<IpAddr>,
    users: Table<String>,
}

/// Failed-auth throttle and ban list. See the module docs.
pub struct Guard {
    cfg: GuardConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn user_key(username: &str) -> String {
    let mut end = username.len().min(MAX_USER_KEY_LEN);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    username.get(..end).unwrap_or("").to_owned()
}

impl Guard {
    /// Create a guard; fails if any limit is zero.
    pub fn new(cfg: GuardConfig) -> Result<Self, GuardError> {
        if cfg.max_failures_per_source == 0 || cfg.max_failures_per_user == 0 {
            return Err(GuardError::Config("failure thresholds must be positive"));
        }
        if cfg.window_ms == 0 || cfg.ban_ms == 0 {
            return Err(GuardError::Config(
                "window and ban durations must be positive",
            ));
        }
        if cfg.max_tracked == 0 {
            return Err(GuardError::Config("max_tracked must be positive"));
        }
        Ok(Guard {
            cfg,
            inner: Mutex::new(Inner {
                sources: Table::new(),
                users: Table::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The tables stay consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is this source banned? Call before doing any digest work for a request.
    pub fn check(&self, source: IpAddr, now_ms: u64) -> Verdict {
        self.lock().sources.verdict(&source, now_ms)
    }

    /// Is this user name locked (too many failures across sources)? If so the
    /// gateway must answer as for a wrong password, even if the password is right.
    pub fn check_user(&self, username: &str, now_ms: u64) -> Verdict {
        self.lock().users.verdict(&user_key(username), now_ms)
    }

    /// Combined check: the source ban wins, then the user lock.
    pub fn check_attempt(&self, source: IpAddr, username: &str, now_ms: u64) -> Verdict {
        let inner = self.lock();
        match inner.sources.verdict(&source, now_ms) {
            Verdict::Allow => inner.users.verdict(&user_key(username), now_ms),
            banned => banned,
        }
    }

    /// Record a failed authentication from `source` for `username` (the name
    /// as sent, existing or not). Returns the source's verdict afterwards.
    pub fn record_failure(&self, source: IpAddr, username: &str, now_ms: u64) -> Verdict {
        let cfg = &self.cfg;
        let mut inner = self.lock();
        inner.users.entry(user_key(username), now_ms, cfg).fail(
            now_ms,
            cfg.max_failures_per_user,
            cfg.window_ms,
            cfg.ban_ms,
        );
        inner.sources.entry(source, now_ms, cfg).fail(
            now_ms,
            cfg.max_failures_per_source,
            cfg.window_ms,
            cfg.ban_ms,
        );
        inner.sources.verdict(&source, now_ms)
    }

    /// A successful authentication from `source`: clears its failure count
    /// (not an active ban, and not the user name's counter).
    pub fn record_success(&self, source: IpAddr, now_ms: u64) {
        let mut inner = self.lock();
        let remove = match inner.sources.map.get_mut(&source) {
            Some(e) if e.is_banned(now_ms) => {
                e.failures = 0;
                false
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            inner.sources.map.remove(&source);
        }
    }

    /// Lift a ban (admin action).
    pub fn unban(&self, source: IpAddr) -> bool {
        self.lock().sources.map.remove(&source).is_some()
    }

    /// Currently banned sources with their ban end, soonest first (admin view).
    pub fn banned(&self, now_ms: u64) -> Vec<(IpAddr, u64)> {
        let inner = self.lock();
        let mut v: Vec<(IpAddr, u64)> = inner
            .sources
            .map
            .iter()
            .filter(|(_, e)| e.is_banned(now_ms))
            .map(|(ip, e)| (*ip, e.banned_until))
            .collect();
        v.sort_by_key(|&(ip, until)| (until, ip));
        v
    }

    /// Currently locked user names with their lock end (admin view).
    pub fn locked_users(&self, now_ms: u64) -> Vec<(String, u64)> {
        let inner = self.lock();
        let mut v: Vec<(String, u64)> = inner
            .users
            .map
            .iter()
            .filter(|(_, e)| e.is_banned(now_ms))
            .map(|(u, e)| (u.clone(), e.banned_until))
            .collect();
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    }

    /// Number of (source, user) entries tracked, for metrics.
    pub fn tracked(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sources.map.len(), inner.users.map.len())
    }

    /// Drop expired entries (optional housekeeping, e.g. once a minute).
    pub fn purge(&self, now_ms: u64) {
        let w = self.cfg.window_ms;
        let mut inner = self.lock();
        inner.sources.map.retain(|_, e| !e.is_expired(now_ms, w));
        inner.users.map.retain(|_, e| !e.is_expired(now_ms, w));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn cfg() -> GuardConfig {
        GuardConfig {
            max_failures_per_source: 3,
            max_failures_per_user: 5,
            window_ms: 10_000,
            ban_ms: 60_000,
            max_tracked: 1000,
        }
    }

    #[test]
    fn bans_after_n_failures_in_window_and_expires() {
        let g = Guard::new(cfg()).unwrap();
        assert_eq!(g.record_failure(ip(1), "a", 0), Verdict::Allow);
        assert_eq!(g.record_failure(ip(1), "b", 1000), Verdict::Allow);
        assert_eq!(g.check(ip(1), 1500), Verdict::Allow);
        assert_eq!(
            g.record_failure(ip(1), "c", 2000),
            Verdict::Banned { until_ms: 62_000 }
        );
        assert_eq!(g.check(ip(1), 61_999), Verdict::Banned { until_ms: 62_000 });
        assert_eq!(
            g.check(ip(2), 3000),
            Verdict::Allow,
            "other sources unaffected"
        );
        assert_eq!(g.banned(3000), vec![(ip(1), 62_000)]);
        assert_eq!(g.check(ip(1), 62_000), Verdict::Allow, "ban expired");
        assert!(g.banned(62_000).is_empty());
        // Counter was reset with the ban: needs 3 fresh failures again.
        assert_eq!(g.record_failure(ip(1), "d", 63_000), Verdict::Allow);
    }

    #[test]
    fn failures_outside_window_do_not_accumulate() {
        let g = Guard::new(cfg()).unwrap();
        g.record_failure(ip(1), "a", 0);
        g.record_failure(ip(1), "a", 5000);
        // Window started at 0 and ended at 10_000: this starts a new window.
        assert_eq!(g.record_failure(ip(1), "a", 10_000), Verdict::Allow);
        assert_eq!(g.record_failure(ip(1), "a", 11_000), Verdict::Allow);
        assert!(matches!(
            g.record_failure(ip(1), "a", 12_000),
            Verdict::Banned { .. }
        ));
    }

    #[test]
    fn success_clears_source_counter_but_not_ban() {
        let g = Guard::new(cfg()).unwrap();
        g.record_failure(ip(1), "a", 0);
        g.record_failure(ip(1), "a", 1);
        g.record_success(ip(1), 2);
        assert_eq!(g.record_failure(ip(1), "a", 3), Verdict::Allow);
        assert_eq!(g.record_failure(ip(1), "a", 4), Verdict::Allow);
        assert!(matches!(
            g.record_failure(ip(1), "a", 5),
            Verdict::Banned { .. }
        ));
        g.record_success(ip(1), 6);
        assert!(matches!(g.check(ip(1), 7), Verdict::Banned { .. }));
        assert!(g.unban(ip(1)));
        assert_eq!(g.check(ip(1), 8), Verdict::Allow);
    }

    #[test]
    fn user_locked_after_distributed_guessing() {
        let g = Guard::new(cfg()).unwrap();
        // Five different sources, one failure each: no source is banned...
        for n in 0..5 {
            assert_eq!(
                g.record_failure(ip(n), "1001", 100 + u64::from(n)),
                Verdict::Allow
            );
        }
        // ...but the name is locked, from every source, existing or not.
        assert_eq!(
            g.check_user("1001", 200),
            Verdict::Banned { until_ms: 60_104 }
        );
        assert_eq!(
            g.check_attempt(ip(99), "1001", 200),
            Verdict::Banned { until_ms: 60_104 }
        );
        assert_eq!(g.check_attempt(ip(99), "1002", 200), Verdict::Allow);
        assert_eq!(g.locked_users(200), vec![("1001".to_owned(), 60_104)]);
        assert_eq!(g.check_user("1001", 60_104), Verdict::Allow);
        // An unknown name is tracked identically (no existence oracle).
        for n in 0..5 {
            g.record_failure(ip(n + 10), "nobody", 70_000);
        }
        assert!(matches!(
            g.check_user("nobody", 70_001),
            Verdict::Banned { .. }
        ));
    }

    #[test]
    fn source_ban_takes_precedence_in_check_attempt() {
        let g = Guard::new(cfg()).unwrap();
        for t in 0..3 {
            g.record_failure(ip(1), "x", t);
        }
        assert_eq!(
            g.check_attempt(ip(1), "y", 5),
            Verdict::Banned { until_ms: 60_002 }
        );
    }

    #[test]
    fn long_usernames_truncated_for_keys() {
        let g = Guard::new(cfg()).unwrap();
        let long = "é".repeat(500);
        for n in 0..5 {
            g.record_failure(ip(n), &long, 0);
        }
        assert!(matches!(g.check_user(&long, 1), Verdict::Banned { .. }));
        assert!(g.locked_users(1)[0].0.len() <= MAX_USER_KEY_LEN);
    }

    #[test]
    fn memory_bounded_and_bans_preferred_over_idle_entries() {
        let g = Guard::new(GuardConfig {
            max_tracked: 64,
            ..cfg()
        })
        .unwrap();
        // Ban ip(0) first.
        for t in 0..3 {
            g.record_failure(ip(0), "u", t);
        }
        // Then a spray of single failures from many addresses within the window.
        for n in 1..5000u32 {
            g.record_failure(ip(n), &format!("u{n}"), 10 + u64::from(n % 100));
            let (s, u) = g.tracked();
            assert!(s <= 64 && u <= 64, "tracked {s}/{u}");
        }
        assert!(
            matches!(g.check(ip(0), 200), Verdict::Banned { .. }),
            "ban survived eviction"
        );
    }

    #[test]
    fn eviction_of_bans_when_full_of_bans() {
        let g = Guard::new(GuardConfig {
            max_failures_per_source: 1,
            max_tracked: 8,
            ..cfg()
        })
        .unwrap();
        for n in 0..100u32 {
            g.record_failure(ip(n), "u", u64::from(n));
        }
        let b = g.banned(100);
        assert!(b.len() <= 8);
        assert!(b.iter().any(|(i, _)| *i == ip(99)), "newest ban kept");
    }

    #[test]
    fn purge_drops_expired() {
        let g = Guard::new(cfg()).unwrap();
        g.record_failure(ip(1), "a", 0);
        for t in 0..3 {
            g.record_failure(ip(2), "b", t);
        }
        g.purge(20_000);
        assert_eq!(g.tracked().0, 1, "only the banned source remains");
        g.purge(100_000);
        assert_eq!(g.tracked(), (0, 0));
    }

    #[test]
    fn rejects_zero_limits() {
        for c in [
            GuardConfig {
                max_failures_per_source: 0,
                ..cfg()
            },
            GuardConfig {
                max_failures_per_user: 0,
                ..cfg()
            },
            GuardConfig {
                window_ms: 0,
                ..cfg()
            },
            GuardConfig { ban_ms: 0, ..cfg() },
            GuardConfig {
                max_tracked: 0,
                ..cfg()
            },
        ] {
            assert!(Guard::new(c).is_err());
        }
        assert!(Guard::new(GuardConfig::default()).is_ok());
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let g = Guard::new(cfg()).unwrap();
        g.record_failure(ip(1), "a", 50_000);
        g.record_failure(ip(1), "a", 10);
        assert!(matches!(
            g.record_failure(ip(1), "a", 0),
            Verdict::Banned { .. }
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the sequence of events, tables stay within bounds and
            /// a ban verdict always lies in (now, now + ban_ms].
            #[test]
            fn bounded_and_consistent(
                events in proptest::collection::vec((0u32..50, 0u8..6, 0u64..500, any::<bool>()), 0..400),
                max_tracked in 1usize..20,
            ) {
                let g = Guard::new(GuardConfig { max_tracked, ..cfg() }).unwrap();
                let mut now = 0u64;
                for (src, user, dt, ok) in events {
                    now += dt;
                    if ok {
                        g.record_success(ip(src), now);
                    } else {
                        g.record_failure(ip(src), &format!("u{user}"), now);
                    }
                    let (s, u) = g.tracked();
                    prop_assert!(s <= max_tracked && u <= max_tracked);
                    if let Verdict::Banned { until_ms } = g.check_attempt(ip(src), &format!("u{user}"), now) {
                        prop_assert!(until_ms > now && until_ms <= now + 60_000);
                    }
                }
            }
        }
    }
}
