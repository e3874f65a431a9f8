//! The spool file: a two-channel 16-bit WAV written while the call runs.
//!
//! Written by hand rather than through hound's writer (hound reads it back, and recovers
//! crashed files): the audio goes out as whole buffers, converted in bulk, and reaches the
//! file in writes of [`WRITE_BYTES`] (about two seconds), so a recorded call costs a few
//! syscalls per second instead of a per-sample loop and a write every batch.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{RATE, RecordingError};

const CHANNELS: u16 = 2;
const BYTES_PER_SAMPLE: u16 = 2;
/// The canonical PCM header: RIFF, `fmt ` (16 bytes), then `data`'s length.
const HEADER_BYTES: usize = 44;
/// Audio is held until this much is buffered (or a checkpoint).
const WRITE_BYTES: usize = 64 * 1024;
/// The data chunk's length is 32 bits (about 37 hours of audio).
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - HEADER_BYTES as u64;

/// A recording being written. Call [`Spool::checkpoint`] periodically (every few seconds): it
/// writes out what is buffered and rewrites the header, so the file on disk is a valid WAV of
/// everything written so far.
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Audio not yet in the file (little-endian samples).
    buffered: Vec<u8>,
    /// Audio bytes written or buffered.
    data_bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("frames", &self.frames())
            .finish()
    }
}

/// The header of a WAV whose data chunk holds `data_bytes`.
fn header(data_bytes: u32) -> [u8; HEADER_BYTES] {
    let block_align = CHANNELS * BYTES_PER_SAMPLE;
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data_bytes + HEADER_BYTES as u32 - 8).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    // PCM
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(RATE * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&(BYTES_PER_SAMPLE * 8).to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl Spool {
    /// Creates the file (it must not exist: a recording is never overwritten).
    pub fn create(path: &Path) -> Result<Self, RecordingError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(&header(0))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            buffered: Vec::with_capacity(WRITE_BYTES + 4 * 1024),
            data_bytes: 0,
            finished: false,
        })
    }

    /// Appends interleaved stereo samples (left, right, left, ...).
    pub fn write(&mut self, interleaved: &[i16]) -> Result<(), RecordingError> {
        let bytes = interleaved.len() * usize::from(BYTES_PER_SAMPLE);
        if self.data_bytes + bytes as u64 > MAX_DATA_BYTES {
            return Err(RecordingError::Io(std::io::Error::other(
                "recording longer than a WAV can hold",
            )));
        }
        let start = self.buffered.len();
        self.buffered.resize(start + bytes, 0);
        for (b, s) in self.buffered[start..].chunks_exact_mut(2).zip(interleaved) {
            b.copy_from_slice(&s.to_le_bytes());
        }
        self.data_bytes += bytes as u64;
        if self.buffered.len() >= WRITE_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), RecordingError> {
        self.file.write_all(&self.buffered)?;
        self.buffered.clear();
        Ok(())
    }

    /// Makes the file on disk a valid WAV of everything written so far.
    pub fn checkpoint(&mut self) -> Result<(), RecordingError> {
        self.write_out()?;
        // The audio first, then the header that covers it.
        let len = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        self.file.write_all_at(&header(len), 0)?;
        Ok(())
    }

    /// Sample frames written.
    pub fn frames(&self) -> u64 {
        self.data_bytes / u64::from(CHANNELS * BYTES_PER_SAMPLE)
    }

    /// Completes the file and returns its path.
    pub fn finish(mut self) -> Result<PathBuf, RecordingError> {
        self.finished = true;
        self.checkpoint()?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for Spool {
    /// A spool dropped unfinished (a failed write, a cancelled task) still leaves a valid
    /// file of what it got, for the next start to recover.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.checkpoint();
        }
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
    fn the_file_is_byte_for_byte_what_hound_writes() {
        let path = temp("hound");
        let samples: Vec<i16> = (0..20_000)
            .map(|i| (i * 37 % 65_536 - 32_768) as i16)
            .collect();
        let mut spool = Spool::create(&path).unwrap();
        for chunk in samples.chunks(960) {
            spool.write(chunk).unwrap();
        }
        assert_eq!(spool.frames(), 10_000);
        let path = spool.finish().unwrap();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut expected = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut expected, spec).unwrap();
        for &s in &samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected.into_inner());
    }

    #[test]
    fn a_recording_is_never_overwritten() {
        let path = temp("exists");
        let s = Spool::create(&path).unwrap();
        s.finish().unwrap();
        assert!(Spool::create(&path).is_err());
    }
}
