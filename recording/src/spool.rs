//! The spool file: a two-channel 16-bit WAV written while the call runs.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::{RATE, RecordingError};

/// A recording being written. Call [`Spool::checkpoint`] periodically (every few seconds): it
/// rewrites the header so the file on disk is a valid WAV of everything written so far.
pub struct Spool {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    frames: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish()
    }
}

impl Spool {
    /// Creates the file (it must not exist: a recording is never overwritten).
    pub fn create(path: &Path) -> Result<Self, RecordingError> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(hound::Error::IoError)?;
        Ok(Self {
            path: path.to_owned(),
            writer: hound::WavWriter::new(BufWriter::new(file), spec)?,
            frames: 0,
        })
    }

    /// Appends interleaved stereo samples (left, right, left, ...).
    pub fn write(&mut self, interleaved: &[i16]) -> Result<(), RecordingError> {
        let mut w = self.writer.get_i16_writer(interleaved.len() as u32);
        for &s in interleaved {
            w.write_sample(s);
        }
        w.flush()?;
        self.frames += interleaved.len() as u64 / 2;
        Ok(())
    }

    /// Makes the file on disk a valid WAV of everything written so far.
    pub fn checkpoint(&mut self) -> Result<(), RecordingError> {
        Ok(self.writer.flush()?)
    }

    /// Sample frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Completes the file and returns its path.
    pub fn finish(self) -> Result<PathBuf, RecordingError> {
        self.writer.finalize()?;
        Ok(self.path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Leg, StereoMixer};
    use switchboard_media::tone::{dominant_tone, sine};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("call.wav")
    }

    #[test]
    fn each_channel_holds_its_legs_tone() {
        let path = temp("tones");
        let mut mixer = StereoMixer::new(0);
        let (caller, agent) = (
            sine(1_000.0, RATE, 8_000, 0.3),
            sine(1_500.0, RATE, 8_000, 0.3),
        );
        let mut spool = Spool::create(&path).unwrap();
        let mut out = Vec::new();
        for (i, (c, a)) in caller.chunks(160).zip(agent.chunks(160)).enumerate() {
            let t = i as u64 * 20;
            mixer.push(Leg::Caller, i as u32 * 160, c, t);
            mixer.push(Leg::Agent, 7 + i as u32 * 160, a, t);
            out.clear();
            mixer.drain(t, &mut out);
            spool.write(&out).unwrap();
        }
        out.clear();
        mixer.finish(&mut out);
        spool.write(&out).unwrap();
        let path = spool.finish().unwrap();
        let mut r = hound::WavReader::open(&path).unwrap();
        assert_eq!((r.spec().channels, r.spec().sample_rate), (2, RATE));
        let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(left.len(), 8_000);
        assert_eq!(
            dominant_tone(&left, &[1_000.0, 1_500.0], RATE),
            Some(1_000.0)
        );
        assert_eq!(
            dominant_tone(&right, &[1_000.0, 1_500.0], RATE),
            Some(1_500.0)
        );
    }

    #[test]
    fn a_crash_after_a_checkpoint_leaves_a_valid_file() {
        let path = temp("crash");
        let mut spool = Spool::create(&path).unwrap();
        spool.write(&vec![5i16; 3_200]).unwrap();
        spool.checkpoint().unwrap();
        // The process dies: the writer is never finalized.
        std::mem::forget(spool);
        let r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.len(), 3_200, "everything up to the checkpoint is there");
    }

    #[test]
    fn a_recording_is_never_overwritten() {
        let path = temp("exists");
        let s = Spool::create(&path).unwrap();
        s.finish().unwrap();
        assert!(Spool::create(&path).is_err());
    }
}
