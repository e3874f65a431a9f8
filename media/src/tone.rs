//! Tone generation and detection (Goertzel), used to check that audio really crossed a call:
//! a test sends a known tone on one leg and looks for it in what the other leg received.

/// `n` samples of a sine at `freq` Hz, `rate` samples/s, amplitude `amp` (of i16 full scale).
pub fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amp * f64::from(i16::MAX) * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

/// Relative power of `freq` in `samples` (Goertzel), normalised by the block's total energy:
/// near 1.0 for a pure tone at `freq`, near 0 when it is absent.
pub fn tone_ratio(samples: &[i16], freq: f64, rate: u32) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let k = (n * freq / f64::from(rate)).round();
    let w = 2.0 * std::f64::consts::PI * k / n;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy == 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // For a pure sine, power ≈ energy * n / 2.
    (2.0 * power / (n * energy)).min(1.0)
}

/// The strongest of `candidates` in `samples`, if it stands out (ratio above 0.5).
pub fn dominant_tone(samples: &[i16], candidates: &[f64], rate: u32) -> Option<f64> {
    candidates
        .iter()
        .map(|&f| (f, tone_ratio(samples, f, rate)))
        .filter(|(_, r)| *r > 0.5)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::Law;

    #[test]
    fn detects_the_tone_it_generated_even_through_g711() {
        let tone = sine(1000.0, 8000, 1600, 0.5);
        assert!(tone_ratio(&tone, 1000.0, 8000) > 0.9);
        assert!(tone_ratio(&tone, 1500.0, 8000) < 0.05);
        for law in [Law::Ulaw, Law::Alaw] {
            let mut enc = Vec::new();
            law.encode(&tone, &mut enc);
            let mut dec = Vec::new();
            law.decode(&enc, &mut dec);
            assert_eq!(
                dominant_tone(&dec, &[440.0, 1000.0, 1500.0], 8000),
                Some(1000.0)
            );
        }
        assert_eq!(dominant_tone(&[0; 800], &[1000.0], 8000), None);
        assert_eq!(dominant_tone(&[], &[1000.0], 8000), None);
    }
}
