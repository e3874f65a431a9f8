//! RTCP (RFC 3550 section 6) as the relay needs it: writing one compound report per leg
//! (a sender report when we sent media, a receiver report otherwise, plus the mandatory SDES
//! CNAME) and reading the report blocks the remote sends about our stream. Everything else in
//! an incoming compound packet (BYE, APP, feedback) is skipped. Reading is bounds-checked:
//! RTCP comes from the network and must never panic the relay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_media::MediaError;

pub(crate) const PT_SR: u8 = 200;
pub(crate) const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

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

fn header(out: &mut Vec<u8>, count: u8, pt: u8, body_len: usize) {
    out.push(0x80 | (count & 0x1F));
    out.push(pt);
    // Length in 32-bit words minus one, header included.
    let words = (body_len + 4) / 4 - 1;
    out.extend_from_slice(&(words as u16).to_be_bytes());
}

fn write_block(out: &mut Vec<u8>, b: &ReportBlock) {
    out.extend_from_slice(&b.ssrc.to_be_bytes());
    out.push(b.fraction_lost);
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0xFF_FFFF;
    out.extend_from_slice(&lost.to_be_bytes()[1..]);
    out.extend_from_slice(&b.extended_max_seq.to_be_bytes());
    out.extend_from_slice(&b.jitter.to_be_bytes());
    out.extend_from_slice(&b.lsr.to_be_bytes());
    out.extend_from_slice(&b.dlsr.to_be_bytes());
}

/// Writes a compound packet: SR if `sender` is given, else RR, with at most one report block,
/// then an SDES chunk with `cname` (at most 255 bytes are used).
pub fn write_compound(
    out: &mut Vec<u8>,
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
) {
    let blocks = usize::from(block.is_some());
    match sender {
        Some(s) => {
            header(out, blocks as u8, PT_SR, 24 + 24 * blocks);
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&s.ntp.to_be_bytes());
            out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&s.packet_count.to_be_bytes());
            out.extend_from_slice(&s.octet_count.to_be_bytes());
        }
        None => {
            header(out, blocks as u8, PT_RR, 4 + 24 * blocks);
            out.extend_from_slice(&ssrc.to_be_bytes());
        }
    }
    if let Some(b) = block {
        write_block(out, b);
    }
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    // SSRC, CNAME item (type, length, text), then 1 to 4 null bytes up to a word boundary.
    let item = 4 + 2 + cname.len();
    let padded = (item / 4 + 1) * 4;
    header(out, 1, PT_SDES, padded);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + (padded - item), 0);
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, MediaError> {
    b.get(at..at + 4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .ok_or(MediaError::Malformed("RTCP field past the end"))
}

fn read_block(b: &[u8], at: usize) -> Result<ReportBlock, MediaError> {
    let lost_word = u32_at(b, at + 4)?;
    // Sign-extend the 24-bit cumulative loss.
    let cumulative_lost = ((lost_word << 8) as i32) >> 8;
    Ok(ReportBlock {
        ssrc: u32_at(b, at)?,
        fraction_lost: (lost_word >> 24) as u8,
        cumulative_lost,
        extended_max_seq: u32_at(b, at + 8)?,
        jitter: u32_at(b, at + 12)?,
        lsr: u32_at(b, at + 16)?,
        dlsr: u32_at(b, at + 20)?,
    })
}

/// Reads the SRs and RRs of a compound packet. The first packet must be an SR or RR (RFC 3550
/// 6.1); other packet types are skipped; a length running past the datagram is an error.
pub fn parse_compound(datagram: &[u8]) -> Result<Vec<Report>, MediaError> {
    if datagram.len() < 8 {
        return Err(MediaError::TooShort(datagram.len()));
    }
    if !matches!(datagram[1], PT_SR | PT_RR) {
        return Err(MediaError::Malformed(
            "compound RTCP must start with SR or RR",
        ));
    }
    let mut reports = Vec::new();
    let mut at = 0;
    while at < datagram.len() {
        let h = datagram
            .get(at..at + 4)
            .ok_or(MediaError::Malformed("RTCP header past the end"))?;
        if h[0] >> 6 != 2 {
            return Err(MediaError::BadVersion(h[0] >> 6));
        }
        let count = usize::from(h[0] & 0x1F);
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        let pkt = datagram
            .get(at..at + len)
            .ok_or(MediaError::Malformed("RTCP length past the end"))?;
        let (sender_info, blocks_at) = match h[1] {
            PT_SR => {
                let info = SenderInfo {
                    ntp: (u64::from(u32_at(pkt, 8)?) << 32) | u64::from(u32_at(pkt, 12)?),
                    rtp_timestamp: u32_at(pkt, 16)?,
                    packet_count: u32_at(pkt, 20)?,
                    octet_count: u32_at(pkt, 24)?,
                };
                (Some(info), 28)
            }
            PT_RR => (None, 8),
            _ => {
                at += len;
                continue;
            }
        };
        let blocks = (0..count)
            .map(|i| read_block(pkt, blocks_at + 24 * i))
            .collect::<Result<Vec<_>, _>>()?;
        reports.push(Report {
            sender_ssrc: u32_at(pkt, 4)?,
            sender_info,
            blocks,
        });
        at += len;
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
            write_compound(&mut out, 42, sender, Some(&block), "relay@example");
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
        write_compound(&mut empty, 1, None, None, "");
        assert_eq!(parse_compound(&empty).unwrap()[0].blocks, vec![]);
    }

    #[test]
    fn malformed_rtcp_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        write_compound(&mut out, 42, None, Some(&ReportBlock::default()), "x");
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
}
