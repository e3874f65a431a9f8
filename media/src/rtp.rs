//! RTP (RFC 3550) packets, strict source latching, and the sequence/timestamp rewriting that
//! keeps a leg continuous when its source changes (prompt -> bridged agent).
//!
//! Latching is strict on purpose: after the first packet of a leg, packets from another
//! address or another SSRC are dropped, so nobody can inject audio into a call or make one
//! call's media bleed into another by spraying the port range.

use crate::MediaError;

/// Largest RTP packet we accept (a jumbo 1500-byte datagram holds less).
pub const MAX_PACKET: usize = 1500;

/// A parsed RTP packet; `payload` borrows from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: Vec<u32>,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram; header extensions are skipped, padding removed.
    pub fn parse(buf: &'a [u8]) -> Result<Self, MediaError> {
        if buf.len() < 12 {
            return Err(MediaError::TooShort(buf.len()));
        }
        if buf.len() > MAX_PACKET {
            return Err(MediaError::TooLong(buf.len()));
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(MediaError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = usize::from(buf[0] & 0x0F);
        let marker = buf[1] & 0x80 != 0;
        let payload_type = buf[1] & 0x7F;
        let sequence = u16::from_be_bytes([buf[2], buf[3]]);
        let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let mut at = 12;
        let mut csrcs = Vec::with_capacity(csrc_count);
        for _ in 0..csrc_count {
            let b = buf
                .get(at..at + 4)
                .ok_or(MediaError::Malformed("CSRC list past the end"))?;
            csrcs.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            at += 4;
        }
        if extension {
            let h = buf
                .get(at..at + 4)
                .ok_or(MediaError::Malformed("extension header past the end"))?;
            let words = usize::from(u16::from_be_bytes([h[2], h[3]]));
            at += 4 + words * 4;
            if at > buf.len() {
                return Err(MediaError::Malformed("extension past the end"));
            }
        }
        let mut end = buf.len();
        if padding {
            let pad = usize::from(buf[end - 1]);
            if pad == 0 || at + pad > end {
                return Err(MediaError::Malformed("bad padding length"));
            }
            end -= pad;
        }
        Ok(Self {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrcs,
            payload: &buf[at..end],
        })
    }

    /// Writes the packet (no extension, no padding) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let cc = self.csrcs.len().min(15);
        out.push(0x80 | cc as u8);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in &self.csrcs[..cc] {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(self.payload);
    }
}

/// What the latch decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchVerdict {
    /// The first packet: the leg is now latched to this source.
    Latched,
    /// From the latched source.
    Accept,
    /// From another address or SSRC: drop it.
    Drop,
}

/// Strict symmetric-RTP latching: the first packet's address and SSRC win.
#[derive(Debug, Clone, Default)]
pub struct Latch<A> {
    source: Option<(A, u32)>,
    dropped: u64,
}

impl<A: PartialEq + Clone> Latch<A> {
    pub fn new() -> Self {
        Self {
            source: None,
            dropped: 0,
        }
    }

    pub fn check(&mut self, from: &A, ssrc: u32) -> LatchVerdict {
        match &self.source {
            None => {
                self.source = Some((from.clone(), ssrc));
                LatchVerdict::Latched
            }
            Some((addr, s)) if addr == from && *s == ssrc => LatchVerdict::Accept,
            Some(_) => {
                self.dropped += 1;
                LatchVerdict::Drop
            }
        }
    }

    /// Where replies go (symmetric RTP: back to where the media comes from).
    pub fn peer(&self) -> Option<&A> {
        self.source.as_ref().map(|(a, _)| a)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Keeps one outgoing stream (fixed SSRC, continuous sequence and timestamp) while the packets
/// fed to it come from sources that change: a prompt player, then the bridged agent.
#[derive(Debug, Clone)]
pub struct Rewriter {
    ssrc: u32,
    next_seq: u16,
    /// Added to the input timestamp of the current source.
    ts_offset: u32,
    /// Added to the input sequence of the current source.
    seq_offset: u16,
    current: Option<u32>,
    last_out_ts: u32,
}

impl Rewriter {
    pub fn new(ssrc: u32, first_seq: u16) -> Self {
        Self {
            ssrc,
            next_seq: first_seq,
            ts_offset: 0,
            seq_offset: 0,
            current: None,
            last_out_ts: 0,
        }
    }

    /// Rewrites SSRC, sequence and timestamp of `p` for the outgoing stream. On a source
    /// change the new source continues where the old left off (one frame of `frame_ts` later)
    /// and the marker bit is set.
    pub fn rewrite(&mut self, p: &mut RtpPacket<'_>, frame_ts: u32) {
        if self.current != Some(p.ssrc) {
            let start_ts = if self.current.is_some() {
                self.last_out_ts.wrapping_add(frame_ts)
            } else {
                p.timestamp
            };
            self.ts_offset = start_ts.wrapping_sub(p.timestamp);
            self.seq_offset = self.next_seq.wrapping_sub(p.sequence);
            self.current = Some(p.ssrc);
            p.marker = true;
        }
        p.ssrc = self.ssrc;
        p.sequence = p.sequence.wrapping_add(self.seq_offset);
        p.timestamp = p.timestamp.wrapping_add(self.ts_offset);
        self.next_seq = p.sequence.wrapping_add(1);
        self.last_out_ts = p.timestamp;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RtpPacket {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc,
            csrcs: vec![],
            payload: &[0xFF; 160],
        }
        .write(&mut out);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = packet(65535, 4_000_000_000, 0xDEADBEEF);
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(
            (p.sequence, p.timestamp, p.ssrc, p.payload.len()),
            (65535, 4_000_000_000, 0xDEADBEEF, 160)
        );
        let mut again = Vec::new();
        p.write(&mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn padding_extension_and_csrcs() {
        let mut b = vec![0x80 | 0x20 | 0x10 | 1, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one-word extension
        b.extend_from_slice(&[7, 7, 7]); // payload
        b.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.csrcs, vec![9]);
        assert_eq!(p.payload, &[7, 7, 7]);
        assert_eq!(p.payload_type, 8);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(matches!(
            RtpPacket::parse(&[0x80; 11]),
            Err(MediaError::TooShort(11))
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x40; 12]),
            Err(MediaError::BadVersion(1))
        ));
        assert!(RtpPacket::parse(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut pad = packet(1, 1, 1);
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 255;
        assert!(RtpPacket::parse(&pad).is_err());
        assert!(RtpPacket::parse(&vec![0x80; MAX_PACKET + 1]).is_err());
    }

    #[test]
    fn latch_drops_other_sources() {
        let mut l = Latch::new();
        assert_eq!(l.check(&"10.0.0.1:4000", 1), LatchVerdict::Latched);
        assert_eq!(l.check(&"10.0.0.1:4000", 1), LatchVerdict::Accept);
        assert_eq!(
            l.check(&"10.0.0.9:4000", 1),
            LatchVerdict::Drop,
            "other address"
        );
        assert_eq!(
            l.check(&"10.0.0.1:4000", 2),
            LatchVerdict::Drop,
            "other SSRC"
        );
        assert_eq!(l.dropped(), 2);
        assert_eq!(l.peer(), Some(&"10.0.0.1:4000"));
    }

    #[test]
    fn rewriter_keeps_one_continuous_stream_across_sources() {
        let mut r = Rewriter::new(42, 1000);
        let mut out = Vec::new();
        // Prompt: 3 frames from SSRC 7; then the agent: 3 frames from SSRC 9 with unrelated numbers.
        for (seq, ts, ssrc) in [
            (50, 8000, 7),
            (51, 8160, 7),
            (52, 8320, 7),
            (9000, 123, 9),
            (9001, 283, 9),
            (9002, 443, 9),
        ] {
            let b = packet(seq, ts, ssrc);
            let mut p = RtpPacket::parse(&b).unwrap();
            r.rewrite(&mut p, 160);
            out.push((p.ssrc, p.sequence, p.timestamp, p.marker));
        }
        let seqs: Vec<u16> = out.iter().map(|o| o.1).collect();
        assert_eq!(seqs, vec![1000, 1001, 1002, 1003, 1004, 1005]);
        let ts: Vec<u32> = out.iter().map(|o| o.2).collect();
        assert_eq!(ts, vec![8000, 8160, 8320, 8480, 8640, 8800]);
        assert!(out.iter().all(|o| o.0 == 42));
        assert_eq!(
            out.iter().filter(|o| o.3).count(),
            2,
            "marker on each source start"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = RtpPacket::parse(&bytes);
        }
    }
}
