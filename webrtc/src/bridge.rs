//! The media conversion between a leg's browser side (what str0m decrypts and encrypts) and its
//! relay side (plain RTP: G.711 plus RFC 4733 events on [`RELAY_DTMF_PT`] at 8 kHz). G.711 on
//! both sides passes through with its payload type renamed; Opus is transcoded with libopus
//! (decoded to 8 kHz, encoded from 8 kHz; 48 kHz RTP clock on the Opus side). No IO, no clock:
//! packets in, packets out, unit-tested here.

use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::g711::Law;
use switchboard_media::rtp::RtpPacket;

use crate::WebrtcError;
use crate::sdp::{Choice, Codec};

/// The telephone-event payload type on the relay side.
pub const RELAY_DTMF_PT: u8 = 101;

/// Samples per Opus frame we decode at most (120 ms at 8 kHz).
const MAX_FRAME_8K: usize = 960;

/// A timestamp mapping between two RTP clocks, carried by deltas so wrap-around on either side
/// is harmless.
#[derive(Debug, Clone, Copy)]
struct Clock {
    prev_in: Option<u32>,
    out: u32,
    mul: i64,
    div: i64,
}

impl Clock {
    fn new(start: u32, mul: i64, div: i64) -> Self {
        Self {
            prev_in: None,
            out: start,
            mul,
            div,
        }
    }

    fn map(&mut self, ts: u32) -> u32 {
        if let Some(prev) = self.prev_in {
            let delta = i64::from(ts.wrapping_sub(prev) as i32);
            self.out = self
                .out
                .wrapping_add((delta * self.mul / self.div) as i32 as u32);
        }
        self.prev_in = Some(ts);
        self.out
    }
}

fn law_of(codec: Codec) -> Option<Law> {
    match codec {
        Codec::Pcmu => Some(Law::Ulaw),
        Codec::Pcma => Some(Law::Alaw),
        Codec::Opus => None,
    }
}

/// The payload type of a law on the relay side.
pub fn law_pt(law: Law) -> u8 {
    match law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    }
}

/// The G.711 law a leg speaks toward the relay: the browser's own when it chose G.711, else
/// `carrier`'s (Opus is transcoded to it).
pub fn relay_law(choice: &Choice, carrier: Law) -> Law {
    law_of(choice.codec).unwrap_or(carrier)
}

/// The telephone-event payload type at the codec's clock rate, if negotiated.
fn tele_pt(choice: &Choice) -> Option<u8> {
    match choice.codec.clock_rate() {
        48000 => choice.tele_48k,
        _ => choice.tele_8k,
    }
}

/// Scales an RFC 4733 payload's duration between clock rates.
fn rescale_event(payload: &[u8], mul: u32, div: u32) -> Option<[u8; 4]> {
    let mut ev = TelephoneEvent::parse(payload).ok()?;
    let scaled = u32::from(ev.duration) * mul / div;
    ev.duration = u16::try_from(scaled).unwrap_or(u16::MAX);
    Some(ev.to_bytes())
}

/// Browser -> relay.
pub struct ToRelay {
    choice: Choice,
    law: Law,
    ssrc: u32,
    seq: u16,
    clock: Clock,
    decoder: Option<opus::Decoder>,
    pcm: Vec<i16>,
    payload: Vec<u8>,
    /// Packets converted, and dropped (unknown payload type, undecodable).
    pub packets: u64,
    pub dropped: u64,
}

impl std::fmt::Debug for ToRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToRelay")
            .field("choice", &self.choice)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl ToRelay {
    pub fn new(choice: Choice, carrier: Law) -> Result<Self, WebrtcError> {
        let decoder = match choice.codec {
            Codec::Opus => Some(
                opus::Decoder::new(8000, opus::Channels::Mono)
                    .map_err(|e| WebrtcError::Codec(e.to_string()))?,
            ),
            _ => None,
        };
        let div = i64::from(choice.codec.clock_rate() / 8000);
        Ok(Self {
            choice,
            law: relay_law(&choice, carrier),
            ssrc: rand::random(),
            seq: rand::random(),
            clock: Clock::new(rand::random(), 1, div),
            decoder,
            pcm: vec![0; MAX_FRAME_8K],
            payload: Vec::with_capacity(MAX_FRAME_8K),
            packets: 0,
            dropped: 0,
        })
    }

    /// Converts one browser packet into a relay datagram in `out` (cleared first); false when
    /// the packet is dropped.
    pub fn convert(
        &mut self,
        pt: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let relay_pt = if pt == self.choice.pt {
            match self.decoder.as_mut() {
                None => {
                    self.payload.clear();
                    self.payload.extend_from_slice(payload);
                }
                Some(decoder) => match decoder.decode(payload, &mut self.pcm, false) {
                    Ok(n) => {
                        self.payload.clear();
                        self.law.encode(&self.pcm[..n], &mut self.payload);
                    }
                    Err(_) => {
                        self.dropped += 1;
                        return false;
                    }
                },
            }
            law_pt(self.law)
        } else if Some(pt) == tele_pt(&self.choice) {
            let rate = self.choice.codec.clock_rate();
            let Some(ev) = rescale_event(payload, 8000, rate) else {
                self.dropped += 1;
                return false;
            };
            self.payload.clear();
            self.payload.extend_from_slice(&ev);
            RELAY_DTMF_PT
        } else {
            self.dropped += 1;
            return false;
        };
        let packet = RtpPacket {
            marker,
            payload_type: relay_pt,
            sequence: self.seq,
            timestamp: self.clock.map(timestamp),
            ssrc: self.ssrc,
            csrcs: Vec::new(),
            payload: &self.payload,
        };
        packet.write(out);
        self.seq = self.seq.wrapping_add(1);
        self.packets += 1;
        true
    }
}

/// One packet for the browser: str0m writes the header (SSRC, sequence) and encrypts it.
#[derive(Debug, PartialEq, Eq)]
pub struct ToBrowserPacket<'a> {
    pub pt: u8,
    pub marker: bool,
    pub timestamp: u32,
    pub payload: &'a [u8],
}

/// Relay -> browser.
pub struct ToBrowser {
    choice: Choice,
    law: Law,
    clock: Clock,
    encoder: Option<opus::Encoder>,
    pcm: Vec<i16>,
    payload: Vec<u8>,
    pub packets: u64,
    pub dropped: u64,
}

impl std::fmt::Debug for ToBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToBrowser")
            .field("choice", &self.choice)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl ToBrowser {
    pub fn new(choice: Choice, carrier: Law) -> Result<Self, WebrtcError> {
        let encoder = match choice.codec {
            Codec::Opus => {
                let mut e = opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip)
                    .map_err(|e| WebrtcError::Codec(e.to_string()))?;
                e.set_bitrate(opus::Bitrate::Bits(24_000))
                    .map_err(|e| WebrtcError::Codec(e.to_string()))?;
                Some(e)
            }
            _ => None,
        };
        let mul = i64::from(choice.codec.clock_rate() / 8000);
        Ok(Self {
            choice,
            law: relay_law(&choice, carrier),
            clock: Clock::new(rand::random(), mul, 1),
            encoder,
            pcm: Vec::with_capacity(MAX_FRAME_8K),
            payload: Vec::with_capacity(1500),
            packets: 0,
            dropped: 0,
        })
    }

    /// Converts one relay datagram; `None` when it is dropped (not RTP, unknown payload type,
    /// a frame size Opus cannot take).
    pub fn convert(&mut self, datagram: &[u8]) -> Option<ToBrowserPacket<'_>> {
        let Ok(p) = RtpPacket::parse(datagram) else {
            self.dropped += 1;
            return None;
        };
        let pt = if p.payload_type == law_pt(self.law) {
            match self.encoder.as_mut() {
                None => {
                    self.payload.clear();
                    self.payload.extend_from_slice(p.payload);
                }
                Some(encoder) => {
                    self.pcm.clear();
                    self.law.decode(p.payload, &mut self.pcm);
                    self.payload.resize(1500, 0);
                    match encoder.encode(&self.pcm, &mut self.payload) {
                        Ok(n) => self.payload.truncate(n),
                        Err(_) => {
                            self.dropped += 1;
                            return None;
                        }
                    }
                }
            }
            self.choice.pt
        } else if p.payload_type == RELAY_DTMF_PT
            && let Some(tele) = tele_pt(&self.choice)
            && let Some(ev) = rescale_event(p.payload, self.choice.codec.clock_rate(), 8000)
        {
            self.payload.clear();
            self.payload.extend_from_slice(&ev);
            tele
        } else {
            self.dropped += 1;
            return None;
        };
        self.packets += 1;
        Some(ToBrowserPacket {
            pt,
            marker: p.marker,
            timestamp: self.clock.map(p.timestamp),
            payload: &self.payload,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use switchboard_media::tone;

    fn pcmu() -> Choice {
        Choice {
            codec: Codec::Pcmu,
            pt: 0,
            tele_8k: Some(126),
            tele_48k: Some(110),
        }
    }

    fn opus_choice() -> Choice {
        Choice {
            codec: Codec::Opus,
            pt: 111,
            tele_8k: Some(126),
            tele_48k: Some(110),
        }
    }

    fn relay_packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        RtpPacket {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc: 42,
            csrcs: Vec::new(),
            payload,
        }
        .write(&mut out);
        out
    }

    #[test]
    fn g711_passes_through_with_timestamps_continuous() {
        let mut to_relay = ToRelay::new(pcmu(), Law::Ulaw).unwrap();
        let mut out = Vec::new();
        assert!(to_relay.convert(0, true, 1000, &[0x55; 160], &mut out));
        let first = RtpPacket::parse(&out).unwrap();
        assert_eq!((first.payload_type, first.payload.len()), (0, 160));
        let (seq0, ts0) = (first.sequence, first.timestamp);
        assert!(to_relay.convert(0, false, 1160, &[0x55; 160], &mut out));
        let second = RtpPacket::parse(&out).unwrap();
        assert_eq!(second.sequence, seq0.wrapping_add(1));
        assert_eq!(second.timestamp, ts0.wrapping_add(160));
        // Unknown payload types (CN, red) are dropped.
        assert!(!to_relay.convert(13, false, 1320, &[1], &mut out));
        assert_eq!(to_relay.dropped, 1);

        let mut to_browser = ToBrowser::new(pcmu(), Law::Ulaw).unwrap();
        let p = to_browser
            .convert(&relay_packet(0, 1, u32::MAX - 80, &[0x11; 160]))
            .unwrap();
        let t0 = p.timestamp;
        assert_eq!((p.pt, p.payload.len()), (0, 160));
        let p = to_browser
            .convert(&relay_packet(0, 2, 80, &[0x11; 160]))
            .unwrap();
        assert_eq!(p.timestamp, t0.wrapping_add(161), "across the relay's wrap");
        assert!(to_browser.convert(&[1, 2, 3]).is_none());
    }

    #[test]
    fn dtmf_maps_payload_types_and_clock_rates() {
        let ev = TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 800,
        };
        let mut to_relay = ToRelay::new(opus_choice(), Law::Ulaw).unwrap();
        let mut out = Vec::new();
        let mut browser_ev = ev;
        browser_ev.duration = 4800;
        assert!(to_relay.convert(110, true, 96000, &browser_ev.to_bytes(), &mut out));
        let p = RtpPacket::parse(&out).unwrap();
        assert_eq!(p.payload_type, RELAY_DTMF_PT);
        assert_eq!(TelephoneEvent::parse(p.payload).unwrap(), ev);
        // The 8 kHz event PT is not the Opus stream's: dropped.
        assert!(!to_relay.convert(126, true, 96000, &ev.to_bytes(), &mut out));

        let mut to_browser = ToBrowser::new(opus_choice(), Law::Ulaw).unwrap();
        let p = to_browser
            .convert(&relay_packet(RELAY_DTMF_PT, 1, 160, &ev.to_bytes()))
            .unwrap();
        assert_eq!(p.pt, 110);
        assert_eq!(TelephoneEvent::parse(p.payload).unwrap().duration, 4800);
        let mut g711 = ToBrowser::new(pcmu(), Law::Ulaw).unwrap();
        let p = g711
            .convert(&relay_packet(RELAY_DTMF_PT, 1, 160, &ev.to_bytes()))
            .unwrap();
        assert_eq!((p.pt, p.payload), (126, &ev.to_bytes()[..]));
    }

    /// A tone goes relay -> Opus -> relay and is still that tone.
    #[test]
    fn opus_transcoding_keeps_a_tone() {
        let mut to_browser = ToBrowser::new(opus_choice(), Law::Ulaw).unwrap();
        let mut to_relay = ToRelay::new(opus_choice(), Law::Ulaw).unwrap();
        let signal = tone::sine(1000.0, 8000, 160 * 50, 0.4);
        let mut decoded = Vec::new();
        let mut out = Vec::new();
        let mut last_ts = None;
        for i in 0..50u32 {
            let pcm = &signal[i as usize * 160..(i as usize + 1) * 160];
            let mut ulaw = Vec::new();
            Law::Ulaw.encode(pcm, &mut ulaw);
            let p = to_browser
                .convert(&relay_packet(0, i as u16, i * 160, &ulaw))
                .unwrap();
            assert_eq!(p.pt, 111);
            assert!(
                p.payload.len() < 160,
                "Opus frame of {} bytes",
                p.payload.len()
            );
            let (ts, payload) = (p.timestamp, p.payload.to_vec());
            if let Some(prev) = last_ts {
                assert_eq!(ts.wrapping_sub(prev), 960, "48 kHz clock");
            }
            last_ts = Some(ts);
            assert!(to_relay.convert(111, false, ts, &payload, &mut out));
            let r = RtpPacket::parse(&out).unwrap();
            assert_eq!((r.payload_type, r.payload.len()), (0, 160));
            Law::Ulaw.decode(r.payload, &mut decoded);
        }
        // Skip the codec's start-up, then the tone dominates.
        let tail = &decoded[decoded.len() - 4000..];
        let ratio = tone::tone_ratio(tail, 1000.0, 8000);
        assert!(ratio > 0.5, "1 kHz ratio {ratio}");
        assert!(tone::tone_ratio(tail, 1700.0, 8000) < 0.1);
    }
}
