//! Async RTP relay: port pool, strict latching, bridging, prompts, RTCP stats
