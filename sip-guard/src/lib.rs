//! SIP edge security for the Switchboard media gateway, sans-IO.
//!
//! This crate exists to keep the security decisions of the SIP edge (who may
//! register, who is hammering us, how much load we accept, which numbers a
//! tenant may dial) in one small, fully unit-tested place that does no I/O:
//! no sockets, no clocks. The gateway passes header strings, peer addresses
//! and the current time as `now_ms` and acts on the returned values.
//!
//! **Clocks.** For [`digest`], `now_ms` must be Unix time in milliseconds,
//! because nonces minted on one gateway node are verified on another.
//! [`throttle`] and [`admission`] only need a clock that is consistent within
//! the process (a monotonic clock is best); going backwards is tolerated.
//!
//! # Typical `REGISTER` / `INVITE` flow in the gateway
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use switchboard_sip_guard::*;
//!
//! # fn main() -> Result<(), GuardError> {
//! let auth = DigestAuthenticator::new(DigestConfig::with_secret([42u8; 32]))?;
//! let guard = Guard::new(GuardConfig::default())?;
//! let (src, realm, now) = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "acme.example", 1_800_000_000_000);
//!
//! // 1. Banned sources are dropped before any crypto work.
//! assert_eq!(guard.check(src, now), Verdict::Allow);
//! // 2. No Authorization header: 401 with one WWW-Authenticate per value.
//! let www_authenticate: Vec<String> = auth.challenge(realm, now);
//! assert_eq!(www_authenticate.len(), 2);
//! // 3. The phone retries; parse and verify.
//! let header = "Digest username=\"1001\", realm=\"acme.example\", nonce=\"bogus\", \
//!               uri=\"sip:acme.example\", response=\"00\", qop=auth, nc=00000001, cnonce=\"x\"";
//! let parsed = parse_authorization(header)?;
//! let stored: Option<&SipCredential> = None; // lookup by (username, realm)
//! let locked = guard.check_user(&parsed.username, now) != Verdict::Allow;
//! match auth.verify(&parsed, "REGISTER", realm, stored, now) {
//!     AuthOutcome::Ok if !locked => guard.record_success(src, now),
//!     AuthOutcome::Stale if !locked => { let _ = auth.stale_challenge(realm, now); }
//!     _ => {
//!         // Same 401 for wrong password, unknown user and locked user.
//!         guard.record_failure(src, &parsed.username, now);
//!         let _ = auth.challenge(realm, now);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! * [`digest`]: digest authentication with stateless, cluster-verifiable nonces.
//! * [`throttle`]: failed-auth throttling and the ban list.
//! * [`admission`]: call rate limiting and in-flight cap for overload (503).
//! * [`dial`]: toll-fraud guard (number classification, per-tenant policy).
//! * [`caps`]: concurrent call caps per tenant and per seat.

pub mod admission;
pub mod caps;
pub mod dial;
pub mod digest;
mod error;
pub mod throttle;

pub use admission::{Admission, AdmissionConfig, Permit, Retry};
pub use caps::{CallCaps, CapExceeded, CapLimits, CapPermit, CapScope};
pub use dial::{BlockReason, Blocked, DialPolicy, NumberClass, check, classify};
pub use digest::{
    Algorithm, AuthOutcome, DigestAuthenticator, DigestConfig, DigestResponse, FailReason,
    SipCredential, compute_response, parse_authorization,
};
pub use error::GuardError;
pub use throttle::{Guard, GuardConfig, Verdict};
