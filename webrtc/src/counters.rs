//! What an endpoint's legs did, counted where it happens (leg start, close, refusal) so no
//! caller can forget to; the gateway reads a [`EndpointStats`] snapshot into Prometheus.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sdp::{Codec, SdpRefusal};
use crate::{CloseReason, WebrtcError};

/// The codecs in the order of [`Counters::started`].
const CODECS: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::Opus];

/// One endpoint's counters, shared with its legs' tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    started: [AtomicU64; 3],
    consent_lost: AtomicU64,
    dtls_failed: AtomicU64,
    /// Refusals by [`refusal_label`]; rare, so a map under a lock.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// A snapshot of an endpoint's counters (all since it was made, except `live_legs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Legs made and not yet dropped (offered, negotiated or running).
    pub live_legs: u64,
    /// Legs started (running), by the codec toward the browser.
    pub started: Vec<(Codec, u64)>,
    /// Legs ended because the browser's consent checks stopped (RFC 7675).
    pub consent_lost: u64,
    /// Legs ended by a DTLS failure (handshake, fingerprint mismatch).
    pub dtls_failed: u64,
    /// Offers (first or re-offers) and legs refused, by [`refusal_label`].
    pub refused: BTreeMap<&'static str, u64>,
}

/// A short, stable label for why an offer or a leg was refused (a metric label).
pub fn refusal_label(e: &WebrtcError) -> &'static str {
    match e {
        WebrtcError::Refused(r) => match r {
            SdpRefusal::TooLarge => "too_large",
            SdpRefusal::NotText => "not_text",
            SdpRefusal::NoAudio => "no_audio",
            SdpRefusal::SeveralAudio => "several_audio",
            SdpRefusal::NotWebrtc => "not_webrtc",
            SdpRefusal::NoRtcpMux => "no_rtcp_mux",
            SdpRefusal::NoFingerprint => "no_fingerprint",
            SdpRefusal::NoIceCredentials => "no_ice_credentials",
            SdpRefusal::NoCommonCodec => "no_common_codec",
            SdpRefusal::BadSetup => "bad_setup",
        },
        WebrtcError::TooManyLegs => "too_many_legs",
        WebrtcError::NoPorts => "no_ports",
        WebrtcError::Rtc(_) => "rtc",
        WebrtcError::Codec(_) => "codec",
        WebrtcError::Io(_) => "io",
        WebrtcError::Config(_) => "config",
        WebrtcError::Ended => "ended",
    }
}

impl Counters {
    pub(crate) fn started(&self, codec: Codec) {
        if let Some(i) = CODECS.iter().position(|c| *c == codec) {
            self.started[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn closed(&self, reason: &CloseReason) {
        match reason {
            CloseReason::ConsentLost => {
                self.consent_lost.fetch_add(1, Ordering::Relaxed);
            }
            CloseReason::DtlsFailed(_) => {
                self.dtls_failed.fetch_add(1, Ordering::Relaxed);
            }
            CloseReason::PeerClosed | CloseReason::Failed(_) => {}
        }
    }

    /// Counts `result`'s refusal, if it is one; passes it on.
    pub(crate) fn refusal<T>(&self, result: Result<T, WebrtcError>) -> Result<T, WebrtcError> {
        if let Err(e) = &result {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            *refused.entry(refusal_label(e)).or_default() += 1;
        }
        result
    }

    pub(crate) fn snapshot(&self, live_legs: u64) -> EndpointStats {
        EndpointStats {
            live_legs,
            started: CODECS
                .iter()
                .zip(&self.started)
                .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
                .collect(),
            consent_lost: self.consent_lost.load(Ordering::Relaxed),
            dtls_failed: self.dtls_failed.load(Ordering::Relaxed),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_starts_closes_and_refusals_by_label() {
        let c = Counters::default();
        c.started(Codec::Opus);
        c.started(Codec::Opus);
        c.started(Codec::Pcmu);
        c.closed(&CloseReason::ConsentLost);
        c.closed(&CloseReason::DtlsFailed("no match".into()));
        c.closed(&CloseReason::PeerClosed);
        let refused: Result<(), _> = Err(WebrtcError::Refused(SdpRefusal::NoRtcpMux));
        assert!(c.refusal(refused).is_err());
        assert!(c.refusal(Err::<(), _>(WebrtcError::TooManyLegs)).is_err());
        assert!(c.refusal(Ok(())).is_ok());
        let s = c.snapshot(2);
        assert_eq!(s.live_legs, 2);
        assert_eq!(
            s.started,
            vec![(Codec::Pcmu, 1), (Codec::Pcma, 0), (Codec::Opus, 2)]
        );
        assert_eq!((s.consent_lost, s.dtls_failed), (1, 1));
        assert_eq!(
            s.refused.into_iter().collect::<Vec<_>>(),
            vec![("no_rtcp_mux", 1), ("too_many_legs", 1)]
        );
    }
}
