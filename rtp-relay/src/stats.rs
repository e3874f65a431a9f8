//! Per-leg media quality: what the CDR keeps about a call's audio (packets, loss, jitter, an
//! estimated MOS) and what our RTCP receiver reports say. Kept apart from the socket loop so
//! the arithmetic (RFC 3550 A.3 loss, A.8 jitter, the E-model) is tested on its own.

use std::net::SocketAddr;

/// RTP clock of G.711 and telephone-event: 8 kHz.
pub(crate) const CLOCK_HZ: f64 = 8000.0;

/// Reception state of the one latched source of a leg (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecvStats {
    started: bool,
    base_seq: u16,
    max_seq: u16,
    /// Sequence number wrap-arounds, times 65536.
    cycles: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units.
    jitter: f64,
    last_transit: Option<i64>,
}

impl RecvStats {
    /// Records one packet: `arrival` is the arrival time in timestamp units; only audio
    /// packets feed the jitter (an RFC 4733 event keeps one timestamp for many packets).
    pub(crate) fn record(&mut self, seq: u16, ts: u32, arrival: i64, audio: bool) {
        if !self.started {
            self.started = true;
            self.base_seq = seq;
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq) as i16;
            if delta > 0 {
                if seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
        if audio {
            // Transit in a wrapping 32-bit space, then as a signed difference.
            let transit = arrival.wrapping_sub(i64::from(ts)) as i32 as i64;
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs() as f64;
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.last_transit = Some(transit);
        }
    }

    /// Highest sequence number received, extended with the wrap count.
    pub(crate) fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    pub(crate) fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        self.extended_max() + 1 - u64::from(self.base_seq)
    }

    /// Cumulative packets lost; duplicates can make the RFC's count negative, we clamp at 0.
    pub(crate) fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub(crate) fn jitter_ts(&self) -> f64 {
        self.jitter
    }

    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / CLOCK_HZ
    }

    /// Fraction lost since the previous call (the RTCP report block's 8-bit field).
    pub(crate) fn fraction_lost_since_last(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost == 0 {
            0
        } else {
            ((lost << 8) / expected_interval).min(255) as u8
        }
    }

    pub(crate) fn started(&self) -> bool {
        self.started
    }
}

/// Estimated MOS (1.0 to 4.5) from a simplified ITU-T G.107 E-model for G.711: the delay
/// impairment grows with the effective latency (one-way delay plus twice the jitter plus 10 ms
/// of codec delay), the equipment impairment with the loss (2.5 R points per percent).
pub fn estimate_mos(loss_pct: f64, jitter_ms: f64, one_way_delay_ms: f64) -> f64 {
    let effective = one_way_delay_ms.max(0.0) + 2.0 * jitter_ms.max(0.0) + 10.0;
    let mut r = if effective < 160.0 {
        93.2 - effective / 40.0
    } else {
        93.2 - (effective - 120.0) / 10.0
    };
    r -= 2.5 * loss_pct.clamp(0.0, 100.0);
    let r = r.clamp(0.0, 100.0);
    (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// What one leg's audio looked like; `in` is what the remote endpoint sent us, `out` what we
/// sent it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegStats {
    /// The source address the leg latched on, if any packet came.
    pub latched: Option<SocketAddr>,
    pub packets_in: u64,
    /// RTP payload bytes received (headers excluded, as in RTCP octet counts).
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Lost on the way in, from sequence gaps (RFC 3550 A.3).
    pub packets_lost: u64,
    /// `packets_lost` over the packets expected, in percent.
    pub loss_pct: f64,
    /// Interarrival jitter of the incoming stream (RFC 3550 A.8), in milliseconds.
    pub jitter_ms: f64,
    /// Estimated MOS of the incoming audio, see [`estimate_mos`].
    pub mos: f64,
    /// Packets from another address or SSRC after latching (injection attempts, stale calls).
    pub dropped_foreign: u64,
    /// Packets refused as malformed, of an unnegotiated payload type, or before `set_peer`.
    pub dropped_invalid: u64,
    /// Packets we could not send (socket buffer full, no route): dropped, never waited on.
    pub send_errors: u64,
    /// Tap frames dropped because the tap channel was full.
    pub tap_dropped: u64,
    pub rtcp_in: u64,
    pub rtcp_out: u64,
    /// Loss fraction (0 to 1) the remote reported about our stream in its last RTCP report.
    pub remote_fraction_lost: Option<f64>,
    /// Jitter the remote reported about our stream, in milliseconds.
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the remote's LSR/DLSR (RFC 3550 6.4.1), in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// Both legs of a session, for the CDR.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionStats {
    pub label: String,
    pub caller: LegStats,
    pub agent: LegStats,
    /// Events the application did not read in time (its channel was full).
    pub events_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_from_gaps_and_across_the_wrap() {
        let mut s = RecvStats::default();
        for seq in [65533u16, 65534, 1, 2, 4] {
            s.record(seq, 0, 0, false);
        }
        // Expected 65533..=65535, 0..=4: 8 packets, 5 received.
        assert_eq!(s.expected(), 8);
        assert_eq!(s.lost(), 3);
        assert_eq!(s.fraction_lost_since_last(), (3 * 256 / 8) as u8);
        // A late duplicate neither moves the maximum nor counts as loss.
        s.record(2, 0, 0, false);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.fraction_lost_since_last(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = RecvStats::default();
        // Perfectly paced: no jitter.
        for i in 0..50u16 {
            s.record(i, u32::from(i) * 160, i64::from(i) * 160, true);
        }
        assert!(s.jitter_ts() < 1e-9);
        // Every packet 8 timestamp units (1 ms) late or early, alternately: J -> 16 units.
        for i in 50..2000u16 {
            let skew = if i % 2 == 0 { 8 } else { -8 };
            s.record(i, u32::from(i) * 160, i64::from(i) * 160 + skew, true);
        }
        assert!((s.jitter_ts() - 16.0).abs() < 0.5, "{}", s.jitter_ts());
        assert!((s.jitter_ms() - 2.0).abs() < 0.1);
    }

    #[test]
    fn mos_falls_with_loss_and_jitter() {
        let clean = estimate_mos(0.0, 0.0, 0.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let lossy = estimate_mos(5.0, 0.0, 0.0);
        let jittery = estimate_mos(0.0, 80.0, 0.0);
        assert!(lossy < clean - 0.3, "{lossy}");
        assert!(jittery < clean, "{jittery}");
        assert!(estimate_mos(50.0, 200.0, 300.0) >= 1.0);
        assert!(estimate_mos(50.0, 200.0, 300.0) < 1.5);
    }

    proptest::proptest! {
        #[test]
        fn any_sequence_pattern_keeps_the_counts_sane(
            seqs in proptest::collection::vec(proptest::prelude::any::<u16>(), 1..300)
        ) {
            let mut s = RecvStats::default();
            for (i, seq) in seqs.iter().enumerate() {
                s.record(*seq, i as u32 * 160, i as i64 * 160, true);
            }
            proptest::prop_assert!(s.lost() <= s.expected());
            proptest::prop_assert!(s.jitter_ts().is_finite());
            let _ = s.fraction_lost_since_last();
        }
    }
}
