//! The media gateway. So far: the sans-IO call-control state machine ([`call`]) that the SIP and
//! RTP edges (next) will drive. See `media-gateway/README.md` for what exists and what is next.

pub mod call;
