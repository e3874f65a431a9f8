//! RTCP (RFC 3550 section 6) as the relay needs it: writing one compound report per leg
//! (a sender report when we sent media, a receiver report otherwise, plus the mandatory SDES
//! CNAME) and reading the report blocks the remote sends about our stream. Everything else in
//! an incoming compound packet (BYE, APP, feedback, XR) is skipped.
//!
//! The wire format is `rtcp-types` (bounds-checked parsing and writing); this module is the
//! thin adapter that gives the session loop plain values, so the rest of the crate does not
//! depend on that crate's types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtcp_types::prelude::*;
use rtcp_types::{
    Compound, Packet, ReceiverReport, ReportBlockBuilder, Sdes, SdesChunk, SdesItem, SenderReport,
};

use crate::RelayError;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Longest SDES item text.
pub const MAX_CNAME: usize = 255;

/// One reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    pub extended_max_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from `ssrc` (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// The sender-info part of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// One SR or RR read from a compound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub sender_ssrc: u32,
    pub sender_info: Option<SenderInfo>,
    pub blocks: Vec<ReportBlock>,
}

/// The 64-bit NTP timestamp of a wall-clock time.
pub fn ntp_time(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the unit of LSR and round-trip arithmetic).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

fn block_builder(b: &ReportBlock) -> ReportBlockBuilder {
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0xFF_FFFF;
    rtcp_types::ReportBlock::builder(b.ssrc)
        .fraction_lost(b.fraction_lost)
        .cumulative_lost(lost)
        .extended_sequence_number(b.extended_max_seq)
        .interarrival_jitter(b.jitter)
        .last_sender_report_timestamp(b.lsr)
        .delay_since_last_sender_report_timestamp(b.dlsr)
}

fn block_from(b: &rtcp_types::ReportBlock<'_>) -> ReportBlock {
    // Sign-extend the 24-bit cumulative loss.
    let cumulative_lost = ((b.cumulative_lost() << 8) as i32) >> 8;
    ReportBlock {
        ssrc: b.ssrc(),
        fraction_lost: b.fraction_lost(),
        cumulative_lost,
        extended_max_seq: b.extended_sequence_number(),
        jitter: b.interarrival_jitter(),
        lsr: b.last_sender_report_timestamp(),
        dlsr: b.delay_since_last_sender_report_timestamp(),
    }
}

/// Appends a compound packet to `out`: SR if `sender` is given, else RR, with at most one
/// report block, then an SDES chunk with `cname` (at most [`MAX_CNAME`] bytes).
pub fn write_compound(
    out: &mut Vec<u8>,
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
) -> Result<(), RelayError> {
    let sdes = Sdes::builder()
        .add_chunk(SdesChunk::builder(ssrc).add_item(SdesItem::builder(SdesItem::CNAME, cname)));
    let compound = match sender {
        Some(s) => {
            let mut sr = SenderReport::builder(ssrc)
                .ntp_timestamp(s.ntp)
                .rtp_timestamp(s.rtp_timestamp)
                .packet_count(s.packet_count)
                .octet_count(s.octet_count);
            if let Some(b) = block {
                sr = sr.add_report_block(block_builder(b));
            }
            Compound::builder().add_packet(sr).add_packet(sdes)
        }
        None => {
            let mut rr = ReceiverReport::builder(ssrc);
            if let Some(b) = block {
                rr = rr.add_report_block(block_builder(b));
            }
            Compound::builder().add_packet(rr).add_packet(sdes)
        }
    };
    let size = compound.calculate_size()?;
    let start = out.len();
    out.resize(start + size, 0);
    compound.write_into(&mut out[start..])?;
    Ok(())
}

/// Reads the SRs and RRs of a compound packet. The first packet must be an SR or RR (RFC 3550
/// 6.1); other packet types are skipped; anything malformed is an error.
pub fn parse_compound(datagram: &[u8]) -> Result<Vec<Report>, RelayError> {
    let compound = Compound::parse(datagram)?;
    let mut reports = Vec::new();
    for (i, packet) in compound.enumerate() {
        match packet? {
            Packet::Sr(sr) => reports.push(Report {
                sender_ssrc: sr.ssrc(),
                sender_info: Some(SenderInfo {
                    ntp: sr.ntp_timestamp(),
                    rtp_timestamp: sr.rtp_timestamp(),
                    packet_count: sr.packet_count(),
                    octet_count: sr.octet_count(),
                }),
                blocks: sr.report_blocks().map(|b| block_from(&b)).collect(),
            }),
            Packet::Rr(rr) => reports.push(Report {
                sender_ssrc: rr.ssrc(),
                sender_info: None,
                blocks: rr.report_blocks().map(|b| block_from(&b)).collect(),
            }),
            _ if i == 0 => return Err(RelayError::RtcpNotAReport),
            _ => {}
        }
    }
    Ok(reports)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sr_and_rr_round_trip() {
        let block = ReportBlock {
            ssrc: 77,
            fraction_lost: 64,
            cumulative_lost: -3,
            extended_max_seq: 70_000,
            jitter: 12,
            lsr: 0xABCD_0123,
            dlsr: 65536,
        };
        let info = SenderInfo {
            ntp: ntp_time(SystemTime::now()),
            rtp_timestamp: 160,
            packet_count: 5,
            octet_count: 800,
        };
        for sender in [Some(info), None] {
            let mut out = Vec::new();
            write_compound(&mut out, 42, sender, Some(&block), "relay@example").unwrap();
            assert_eq!(out.len() % 4, 0);
            let reports = parse_compound(&out).unwrap();
            assert_eq!(
                reports,
                vec![Report {
                    sender_ssrc: 42,
                    sender_info: sender,
                    blocks: vec![block]
                }]
            );
        }
        let mut empty = Vec::new();
        write_compound(&mut empty, 1, None, None, "").unwrap();
        assert_eq!(parse_compound(&empty).unwrap()[0].blocks, vec![]);
    }

    #[test]
    fn malformed_rtcp_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        write_compound(&mut out, 42, None, Some(&ReportBlock::default()), "x").unwrap();
        assert!(
            write_compound(&mut Vec::new(), 1, None, None, &"x".repeat(MAX_CNAME + 1)).is_err()
        );
        for cut in 0..out.len() {
            let _ = parse_compound(&out[..cut]);
        }
        // A report count larger than the packet.
        let mut lying = out.clone();
        lying[0] = 0x80 | 5;
        assert!(parse_compound(&lying).is_err());
        // SDES first is not a valid compound packet.
        assert!(parse_compound(&out[32..]).is_err());
        let mut rng = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut junk = out.clone();
            for b in junk.iter_mut() {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if rng >> 28 == 0 {
                    *b = (rng >> 16) as u8;
                }
            }
            let _ = parse_compound(&junk);
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_network_input_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)
        ) {
            let _ = parse_compound(&bytes);
        }
    }
}
