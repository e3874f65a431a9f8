//! This node's registrations: where each agent's SIP phone that registered here can be reached.
//!
//! A binding maps (tenant, agent) to the Contact the phone registered and the address the
//! REGISTER really came from (the phone may sit behind NAT: we send to the source address, as
//! RFC 5626 outbound and every SBC do). The shared copy every node reads lives in the state
//! engine's location service (`StateEngine::contact`); this local table is what the node sweeps
//! to notice expired registrations and tell the engine the agent's phone went away.
//!
//! A browser registers over a WebSocket (RFC 7118): its Contact host is a made-up `.invalid`
//! name, so the binding remembers the transport and the connection's peer address, and calls
//! go back over that very connection ([`Binding::destination`]); when the connection closes,
//! its bindings go ([`Location::unbind_flow`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use rsipstack::sip::Transport;
use rsipstack::transport::SipAddr;

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
    /// How the REGISTER came in: UDP for desk phones, WS/WSS for browsers (their `source` is
    /// the WebSocket connection's peer, the only way to reach them).
    pub transport: Transport,
}

impl Binding {
    /// Where requests to the phone go: the source address, over the transport the phone
    /// registered on. For WS/WSS this names the connection in rsipstack's connection table;
    /// the Contact's `.invalid` host is never resolved.
    pub fn destination(&self) -> SipAddr {
        match self.transport {
            Transport::Ws | Transport::Wss => flow_addr(self.source, self.transport),
            _ => SipAddr::from(self.source),
        }
    }

    /// Whether the phone registered over a WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::Ws | Transport::Wss)
    }

    /// The source as the location service stores it: `ip:port` for UDP (the original
    /// format), `ws/ip:port` or `wss/ip:port` for WebSocket bindings (which nodes that predate
    /// them read as unreachable, rather than calling a browser over UDP).
    pub fn stored_source(&self) -> String {
        match self.transport {
            Transport::Ws => format!("ws/{}", self.source),
            Transport::Wss => format!("wss/{}", self.source),
            _ => self.source.to_string(),
        }
    }

    /// Parses [`Binding::stored_source`].
    pub fn parse_stored_source(s: &str) -> Option<(SocketAddr, Transport)> {
        match s.split_once('/') {
            Some(("ws", addr)) => Some((addr.parse().ok()?, Transport::Ws)),
            Some(("wss", addr)) => Some((addr.parse().ok()?, Transport::Wss)),
            Some(_) => None,
            None => Some((s.parse().ok()?, Transport::Udp)),
        }
    }
}

/// The address of a WebSocket connection (its peer, typed WS or WSS) as rsipstack's
/// connection table keys it.
pub fn flow_addr(peer: SocketAddr, transport: Transport) -> SipAddr {
    SipAddr {
        r#type: Some(transport),
        addr: peer.into(),
    }
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

    /// Removes the bindings made over the WebSocket connection from `peer` (it closed) and
    /// returns their (tenant, agent). A binding refreshed since over another connection stays.
    pub fn unbind_flow(&self, peer: SocketAddr) -> Vec<(String, String)> {
        let Ok(mut map) = self.bindings.lock() else {
            return Vec::new();
        };
        let gone: Vec<_> = map
            .iter()
            .filter(|(_, b)| b.is_websocket() && b.source == peer)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            map.remove(k);
        }
        gone
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
            transport: Transport::Udp,
        }
    }

    #[test]
    fn websocket_bindings_go_with_their_connection() {
        let l = Location::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let ws = Binding {
            contact: "sip:x@abc.invalid;transport=ws".into(),
            source: peer,
            transport: Transport::Ws,
            ..b(9_000)
        };
        l.bind("t", "browser", ws.clone());
        l.bind("t", "phone", b(9_000));
        assert_eq!(
            ws.destination(),
            flow_addr(peer, Transport::Ws),
            "to the connection, not the contact"
        );
        assert!(
            l.unbind_flow(SocketAddr::from(([127, 0, 0, 1], 40_001)))
                .is_empty()
        );
        assert_eq!(
            l.unbind_flow(peer),
            vec![("t".to_owned(), "browser".to_owned())]
        );
        assert!(l.holds("t", "phone"), "a UDP binding is not a connection's");
    }

    #[test]
    fn stored_sources_round_trip() {
        for (b, text) in [
            (b(1), "127.0.0.1:5070"),
            (
                Binding {
                    transport: Transport::Wss,
                    ..b(1)
                },
                "wss/127.0.0.1:5070",
            ),
        ] {
            assert_eq!(b.stored_source(), text);
            assert_eq!(
                Binding::parse_stored_source(text),
                Some((b.source, b.transport))
            );
        }
        assert_eq!(Binding::parse_stored_source("tcp/127.0.0.1:1"), None);
        assert_eq!(Binding::parse_stored_source("nonsense"), None);
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
