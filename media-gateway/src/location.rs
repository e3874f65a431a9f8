//! This node's registrations: where each agent's SIP phone that registered here can be reached.
//!
//! A binding maps (tenant, agent) to the Contact the phone registered and the address the
//! REGISTER really came from (the phone may sit behind NAT: we send to the source address, as
//! RFC 5626 outbound and every SBC do). The shared copy every node reads lives in the state
//! engine's location service (`StateEngine::contact`); this local table is what the node sweeps
//! to notice expired registrations and tell the engine the agent's phone went away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Where one agent's phone is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI the phone registered (the Request-URI of calls to it).
    pub contact: String,
    /// Where the REGISTER came from: calls are sent here.
    pub source: SocketAddr,
    /// Unix milliseconds when the binding lapses.
    pub expires_at_ms: u64,
    /// The node the phone registered on (only it reaches a phone behind NAT).
    pub node: Option<String>,
}

/// Bindings of this node, keyed by (tenant, agent).
#[derive(Debug, Default)]
pub struct Location {
    bindings: Mutex<HashMap<(String, String), Binding>>,
}

/// Most bindings one node holds (a bound on memory a registration flood can use).
pub const MAX_BINDINGS: usize = 100_000;

impl Location {
    /// Adds or refreshes a binding. `false` when the table is full.
    pub fn bind(&self, tenant: &str, agent: &str, binding: Binding) -> bool {
        let Ok(mut map) = self.bindings.lock() else {
            return false;
        };
        let key = (tenant.to_owned(), agent.to_owned());
        if map.len() >= MAX_BINDINGS && !map.contains_key(&key) {
            return false;
        }
        map.insert(key, binding);
        true
    }

    /// Whether this node holds the agent's registration (it took the phone's REGISTER).
    pub fn holds(&self, tenant: &str, agent: &str) -> bool {
        self.bindings
            .lock()
            .is_ok_and(|map| map.contains_key(&(tenant.to_owned(), agent.to_owned())))
    }

    pub fn unbind(&self, tenant: &str, agent: &str) -> Option<Binding> {
        self.bindings
            .lock()
            .ok()?
            .remove(&(tenant.to_owned(), agent.to_owned()))
    }

    /// Removes lapsed bindings and returns their (tenant, agent).
    pub fn sweep(&self, now_ms: u64) -> Vec<(String, String)> {
        let Ok(mut map) = self.bindings.lock() else {
            return Vec::new();
        };
        let gone: Vec<_> = map
            .iter()
            .filter(|(_, b)| b.expires_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            map.remove(k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(exp: u64) -> Binding {
        Binding {
            node: None,
            contact: "sip:a@127.0.0.1:5070".into(),
            source: SocketAddr::from(([127, 0, 0, 1], 5070)),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn bindings_expire_and_are_swept() {
        let l = Location::default();
        assert!(l.bind("t", "a", b(1_000)));
        assert!(l.bind("u", "a", b(3_000)), "tenants do not share bindings");
        assert!(l.sweep(999).is_empty());
        assert_eq!(l.sweep(1_000), vec![("t".to_owned(), "a".to_owned())]);
        assert!(l.sweep(2_000).is_empty());
        assert_eq!(l.sweep(3_000), vec![("u".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn refresh_replaces_and_unbind_removes() {
        let l = Location::default();
        l.bind("t", "a", b(1_000));
        l.bind("t", "a", b(5_000));
        assert!(l.sweep(2_000).is_empty(), "the refresh moved the expiry");
        assert_eq!(l.unbind("t", "a").map(|b| b.expires_at_ms), Some(5_000));
        assert!(l.unbind("t", "a").is_none());
        assert!(l.sweep(10_000).is_empty());
    }
}
