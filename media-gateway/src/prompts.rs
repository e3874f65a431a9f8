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
    fn not_a_wav_is_a_config_error() {
        let r = load_wav(Path::new("/definitely/not/here.wav"));
        assert!(matches!(r, Err(GatewayError::Config(_))));
    }
}
