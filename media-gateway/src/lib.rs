//! The media gateway. So far: SIP framing at the transport edge ([`framing`]: limits and the
//! RFC 3261 18.3 Content-Length rule, TCP stream framing) and the sans-IO call-control state
//! machine ([`call`]) that the SIP and RTP edges (next) will drive. See `media-gateway/README.md`.

pub mod call;
pub mod framing;
