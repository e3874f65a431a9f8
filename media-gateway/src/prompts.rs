//! Audio the gateway plays: music on hold for queued callers, as 8 kHz mono PCM.
//!
//! A configured WAV file (16-bit PCM, any rate, mono or stereo) is read once, mixed down to
//! mono and resampled to 8 kHz by linear interpolation (enough for telephone-band G.711).
//! Without one, a generated pattern plays: a soft two-note chime and silence, so a caller
//! can hear the line is alive.

use std::path::Path;
use std::sync::Arc;

use crate::GatewayError;

/// Longest prompt we load: 10 minutes at 8 kHz.
const MAX_SAMPLES: usize = 8_000 * 600;

/// The hold music: from `path` when given, generated otherwise.
pub fn hold_music(path: Option<&Path>) -> Result<Arc<[i16]>, GatewayError> {
    match path {
        Some(p) => load_wav(p),
        None => Ok(generated_chime()),
    }
}

fn generated_chime() -> Arc<[i16]> {
    let mut pcm = switchboard_media::tone::sine(523.25, 8_000, 4_000, 0.15);
    pcm.extend(switchboard_media::tone::sine(659.25, 8_000, 4_000, 0.15));
    pcm.extend(std::iter::repeat_n(0i16, 16_000));
    pcm.into()
}

/// Ringback as a caller hears it while the far end rings (North American: 440 + 480 Hz, two
/// seconds on, four off), for a click-to-call agent whose phone is already answered.
pub fn ringback() -> Arc<[i16]> {
    static RINGBACK: std::sync::OnceLock<Arc<[i16]>> = std::sync::OnceLock::new();
    RINGBACK
        .get_or_init(|| {
            let low = switchboard_media::tone::sine(440.0, 8_000, 16_000, 0.1);
            let high = switchboard_media::tone::sine(480.0, 8_000, 16_000, 0.1);
            let mut pcm: Vec<i16> = low
                .iter()
                .zip(&high)
                .map(|(a, b)| a.saturating_add(*b))
                .collect();
            pcm.extend(std::iter::repeat_n(0i16, 32_000));
            pcm.into()
        })
        .clone()
}

/// Reads a 16-bit PCM WAV file as 8 kHz mono.
pub fn load_wav(path: &Path) -> Result<Arc<[i16]>, GatewayError> {
    let bad = |e: String| GatewayError::Config(format!("{}: {e}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(bad("only 16-bit integer PCM is supported".into()));
    }
    let channels = usize::from(spec.channels.max(1));
    let max_in = MAX_SAMPLES * channels * (spec.sample_rate as usize / 8_000 + 1);
    let mut frames = Vec::new();
    let mut frame_sum = 0i32;
    for (i, sample) in reader.samples::<i16>().take(max_in).enumerate() {
        frame_sum += i32::from(sample.map_err(|e| bad(e.to_string()))?);
        if (i + 1) % channels == 0 {
            frames.push((frame_sum / channels as i32) as i16);
            frame_sum = 0;
        }
    }
    Ok(resample_to_8k(&frames, spec.sample_rate).into())
}

/// The prompts that make up a queue announcement: "you are caller number" N "your estimated
/// wait is" M "minutes", each number spoken digit by digit.
#[derive(Debug, Clone)]
pub struct Announcements {
    position: Arc<[i16]>,
    digits: Vec<Arc<[i16]>>,
    wait: Arc<[i16]>,
    minutes: Arc<[i16]>,
}

impl Announcements {
    /// Loads `position.wav`, `digit-0.wav` .. `digit-9.wav`, `wait.wav` and `minutes.wav`.
    pub fn load(dir: &Path) -> Result<Self, GatewayError> {
        let digits = (0..10)
            .map(|d| load_wav(&dir.join(format!("digit-{d}.wav"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            position: load_wav(&dir.join("position.wav"))?,
            digits,
            wait: load_wav(&dir.join("wait.wav"))?,
            minutes: load_wav(&dir.join("minutes.wav"))?,
        })
    }

    fn say(&self, n: u64, out: &mut Vec<i16>) {
        for d in n.to_string().bytes() {
            if let Some(p) = self.digits.get(usize::from(d - b'0')) {
                out.extend_from_slice(p);
            }
        }
    }

    /// The announcement for a place in line and an estimated wait (whole minutes, rounded up,
    /// at least one); the wait part is left out when the engine has no estimate.
    pub fn build(&self, position: u64, eta_ms: u64) -> Arc<[i16]> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.position);
        self.say(position, &mut out);
        if eta_ms > 0 {
            out.extend_from_slice(&self.wait);
            self.say(eta_ms.div_ceil(60_000).max(1), &mut out);
            out.extend_from_slice(&self.minutes);
        }
        out.into()
    }
}

/// Linear-interpolation resampling of mono PCM from `rate` to 8 kHz.
pub fn resample_to_8k(input: &[i16], rate: u32) -> Vec<i16> {
    if rate == 8_000 || input.is_empty() || rate == 0 {
        return input.to_vec();
    }
    let step = f64::from(rate) / 8_000.0;
    let out_len = ((input.len() as f64) / step).floor() as usize;
    (0..out_len.min(MAX_SAMPLES))
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos as usize;
            let frac = pos - idx as f64;
            let a = f64::from(input[idx.min(input.len() - 1)]);
            let b = f64::from(input[(idx + 1).min(input.len() - 1)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_media::tone::dominant_tone;

    #[test]
    fn resampling_keeps_the_tone() {
        let at_16k = switchboard_media::tone::sine(1_000.0, 16_000, 16_000, 0.5);
        let at_8k = resample_to_8k(&at_16k, 16_000);
        assert_eq!(at_8k.len(), 8_000);
        assert_eq!(
            dominant_tone(&at_8k, &[440.0, 1_000.0, 2_000.0], 8_000),
            Some(1_000.0)
        );
    }

    #[test]
    fn wav_files_load_as_8k_mono() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("sb-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("stereo44k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec)?;
        for s in switchboard_media::tone::sine(440.0, 44_100, 44_100, 0.5) {
            w.write_sample(s)?;
            w.write_sample(s)?;
        }
        w.finalize()?;
        let pcm = load_wav(&path)?;
        assert!((7_990..=8_000).contains(&pcm.len()), "{}", pcm.len());
        assert_eq!(dominant_tone(&pcm, &[440.0, 1_000.0], 8_000), Some(440.0));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn announcements_say_position_and_wait_digit_by_digit() {
        let tone =
            |f: f64| -> Arc<[i16]> { switchboard_media::tone::sine(f, 8_000, 800, 0.3).into() };
        let a = Announcements {
            position: tone(300.0),
            digits: (0..10)
                .map(|d| tone(400.0 + 100.0 * f64::from(d)))
                .collect(),
            wait: tone(1_500.0),
            minutes: tone(1_600.0),
        };
        let pcm = a.build(12, 61_000);
        let freqs: Vec<f64> = [300.0, 500.0, 600.0, 1_500.0, 600.0, 1_600.0].to_vec();
        assert_eq!(pcm.len(), 800 * freqs.len());
        for (i, want) in freqs.iter().enumerate() {
            let all: Vec<f64> = (0..10)
                .map(|d| 400.0 + 100.0 * f64::from(d))
                .chain([300.0, 1_500.0, 1_600.0])
                .collect();
            let got = dominant_tone(&pcm[i * 800..(i + 1) * 800], &all, 8_000);
            assert_eq!(got, Some(*want), "part {i}");
        }
        assert_eq!(a.build(3, 0).len(), 800 * 2, "no estimate: no wait part");
    }

    #[test]
    fn not_a_wav_is_a_config_error() {
        let r = load_wav(Path::new("/definitely/not/here.wav"));
        assert!(matches!(r, Err(GatewayError::Config(_))));
    }
}
