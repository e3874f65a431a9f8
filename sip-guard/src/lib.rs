//! SIP edge security for the Switchboard media gateway, sans-IO.
//!
//! This crate exists to keep the security decisions of the SIP edge (who may
//! register, who is hammering us, how much load we accept, which numbers a
//! tenant may dial) in one small, fully unit-tested place that does no I/O:
//! no sockets, no clocks. The gateway passes header strings, peer addresses
//! and the current time (`now_ms`, milliseconds on any monotonic or wall
//! clock shared consistently by the caller) and acts on the returned values.
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
