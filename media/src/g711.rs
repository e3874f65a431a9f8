//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8), per ITU-T G.711: the
//! two codecs every carrier speaks, so trunk-to-agent calls relay without transcoding.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    ends.iter().position(|&end| value <= end).unwrap_or(8) as i32
}

/// 16-bit linear PCM to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 2;
    let mask = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    pcm = pcm.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(pcm, &ULAW_SEG_END);
    let code = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((pcm >> (seg + 1)) & 0x0F)
    };
    (code ^ mask) as u8
}

/// µ-law to 16-bit linear PCM.
pub const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = (!byte) as i32;
    let t = (((u & 0x0F) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

/// 16-bit linear PCM to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &ALAW_SEG_END);
    let code = if seg >= 8 {
        0x7F
    } else if seg < 2 {
        (seg << 4) | ((pcm >> 1) & 0x0F)
    } else {
        (seg << 4) | ((pcm >> seg) & 0x0F)
    };
    (code ^ mask) as u8
}

/// A-law to 16-bit linear PCM.
pub const fn alaw_to_linear(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Every byte's linear value, built at compile time from the functions above.
const fn decode_table(law: Law) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match law {
            Law::Ulaw => ulaw_to_linear(i as u8),
            Law::Alaw => alaw_to_linear(i as u8),
        };
        i += 1;
    }
    t
}

static ULAW_TO_LINEAR: [i16; 256] = decode_table(Law::Ulaw);
static ALAW_TO_LINEAR: [i16; 256] = decode_table(Law::Alaw);

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

impl Law {
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| match self {
            Law::Ulaw => linear_to_ulaw(s),
            Law::Alaw => linear_to_alaw(s),
        }));
    }

    pub fn decode(self, bytes: &[u8], out: &mut Vec<i16>) {
        // A table per law, chosen once per call: the recording tap decodes every packet.
        let table = match self {
            Law::Ulaw => &ULAW_TO_LINEAR,
            Law::Alaw => &ALAW_TO_LINEAR,
        };
        out.extend(bytes.iter().map(|&b| table[usize::from(b)]));
    }

    /// Converts one law's bytes to the other's (trunk on PCMA, phone on PCMU).
    pub fn transcode(self, to: Law, byte: u8) -> u8 {
        if self == to {
            return byte;
        }
        let linear = match self {
            Law::Ulaw => ulaw_to_linear(byte),
            Law::Alaw => alaw_to_linear(byte),
        };
        match to {
            Law::Ulaw => linear_to_ulaw(linear),
            Law::Alaw => linear_to_alaw(linear),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_tables_match_the_functions() {
        for b in 0..=255u8 {
            let (mut u, mut a) = (Vec::new(), Vec::new());
            Law::Ulaw.decode(&[b], &mut u);
            Law::Alaw.decode(&[b], &mut a);
            assert_eq!((u[0], a[0]), (ulaw_to_linear(b), alaw_to_linear(b)));
        }
    }

    #[test]
    fn known_codewords() {
        // Silence.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        // Full scale.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_codeword_round_trips() {
        for b in 0..=255u8 {
            let u = ulaw_to_linear(b);
            // 0x7F and 0xFF are both zero in µ-law.
            let back = linear_to_ulaw(u);
            assert_eq!(ulaw_to_linear(back), u, "ulaw {b:#x}");
            let a = alaw_to_linear(b);
            assert_eq!(linear_to_alaw(a), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            for law in [Law::Ulaw, Law::Alaw] {
                let mut enc = Vec::new();
                law.encode(&[s], &mut enc);
                let mut dec = Vec::new();
                law.decode(&enc, &mut dec);
                let err = (i32::from(dec[0]) - i32::from(s)).abs();
                // Logarithmic companding: the step, and so the error, grows with the
                // magnitude; it stays within about 1/16 of it (plus the smallest step).
                let bound = i32::from(s).abs() / 16 + 16;
                assert!(err <= bound, "{law:?} {s}: {err} > {bound}");
            }
        }
    }

    #[test]
    fn transcoding_preserves_the_signal() {
        for b in 0..=255u8 {
            let a = Law::Ulaw.transcode(Law::Alaw, b);
            let diff = (i32::from(ulaw_to_linear(b)) - i32::from(alaw_to_linear(a))).abs();
            let bound = (i32::from(ulaw_to_linear(b)).abs() / 8).max(64);
            assert!(diff <= bound, "{b:#x}: {diff}");
        }
    }
}
