//! Aligning two legs into stereo frames (sans-IO: times come in as arguments).

use crate::RATE;

/// Which channel a leg's audio goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Left channel.
    Caller,
    /// Right channel.
    Agent,
}

impl Leg {
    fn channel(self) -> usize {
        match self {
            Leg::Caller => 0,
            Leg::Agent => 1,
        }
    }
}

/// Samples per millisecond.
const PER_MS: u64 = RATE as u64 / 1_000;
/// A leg whose timestamps disagree with its arrival time by more than this is re-anchored.
const REANCHOR_SAMPLES: i64 = RATE as i64;
/// Audio older than this behind real time is handed out (late frames after it are dropped).
pub const DELAY_MS: u64 = 200;
/// Most audio held back (a leg cannot make the buffer grow beyond this).
const MAX_AHEAD_SAMPLES: u64 = 10 * RATE as u64;

/// Where a leg's RTP timestamps sit on the recording's timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    position: u64,
    timestamp: u32,
}

/// Two legs in, interleaved stereo out.
#[derive(Debug)]
pub struct StereoMixer {
    start_ms: u64,
    /// Sample frames already handed out.
    emitted: u64,
    /// Samples of each channel from `emitted` on (both always the same length). One buffer
    /// per channel: a frame is one copy into place, and handing out is one interleaving pass.
    pending: [Vec<i16>; 2],
    anchors: [Option<Anchor>; 2],
    /// Paused stretches `[from, to)` in sample frames; the last may be open (`to` = MAX).
    gaps: Vec<(u64, u64)>,
    /// Frames dropped because they arrived after their place was handed out.
    pub late_samples: u64,
}

/// A paused stretch of a recording, in milliseconds from its start: silence in the file, and
/// in the recording's metadata so a listener knows the gap was deliberate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Most pauses one recording keeps; once reached, the recording stays paused (a resume is
/// refused rather than a pause lost).
pub const MAX_GAPS: usize = 256;

impl StereoMixer {
    /// A recording that starts at `start_ms` (the caller's clock, milliseconds).
    pub fn new(start_ms: u64) -> Self {
        Self {
            start_ms,
            emitted: 0,
            pending: [Vec::new(), Vec::new()],
            anchors: [None, None],
            gaps: Vec::new(),
            late_samples: 0,
        }
    }

    /// Whether the recording is paused.
    pub fn is_paused(&self) -> bool {
        self.gaps.last().is_some_and(|&(_, to)| to == u64::MAX)
    }

    /// Pauses at `now_ms`: audio that arrives for the time after it is not recorded (it
    /// becomes silence). Returns false when already paused.
    pub fn pause(&mut self, now_ms: u64) -> bool {
        if self.is_paused() {
            return false;
        }
        let from = self.arrival_position(now_ms);
        self.gaps.push((from, u64::MAX));
        // Anything already placed after the pause point (a leg running ahead) goes too.
        let start = from.saturating_sub(self.emitted) as usize;
        for ch in &mut self.pending {
            if let Some(after) = ch.get_mut(start..) {
                after.fill(0);
            }
        }
        true
    }

    /// Resumes at `now_ms`. Returns false when not paused, or when the recording already
    /// holds [`MAX_GAPS`] pauses (it then stays paused).
    pub fn resume(&mut self, now_ms: u64) -> bool {
        if !self.is_paused() || self.gaps.len() > MAX_GAPS {
            return false;
        }
        let to = self.arrival_position(now_ms);
        if let Some(last) = self.gaps.last_mut() {
            last.1 = to.max(last.0);
        }
        true
    }

    /// The pauses so far, in milliseconds from the start (an open one ends at `end_frames`).
    pub fn gaps(&self, end_frames: u64) -> Vec<Gap> {
        self.gaps
            .iter()
            .map(|&(from, to)| Gap {
                start_ms: from / PER_MS,
                end_ms: to.min(end_frames.max(from)) / PER_MS,
            })
            .collect()
    }

    /// Frames handed out so far.
    pub fn frames(&self) -> u64 {
        self.emitted
    }

    fn arrival_position(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.start_ms) * PER_MS
    }

    /// Adds one decoded frame of `leg` with its RTP timestamp, received at `now_ms`.
    pub fn push(&mut self, leg: Leg, timestamp: u32, samples: &[i16], now_ms: u64) {
        let arrival = self.arrival_position(now_ms);
        let ch = leg.channel();
        let position = match self.anchors[ch] {
            Some(a) => {
                let delta = i64::from(timestamp.wrapping_sub(a.timestamp) as i32);
                let at = a.position as i64 + delta;
                if (at - arrival as i64).abs() > REANCHOR_SAMPLES || at < 0 {
                    None
                } else {
                    Some(at as u64)
                }
            }
            None => None,
        };
        let position = position.unwrap_or_else(|| {
            self.anchors[ch] = Some(Anchor {
                position: arrival,
                timestamp,
            });
            arrival
        });
        // The part of the frame that may still be written: not before what was handed out,
        // not beyond the buffer's bound.
        let end = position + samples.len() as u64;
        let first = position.max(self.emitted);
        let last = end.min(self.emitted + MAX_AHEAD_SAMPLES);
        self.late_samples += first.min(end) - position;
        if first >= last {
            return;
        }
        let need = (last - self.emitted) as usize;
        if self.pending[ch].len() < need {
            for c in &mut self.pending {
                c.resize(need, 0);
            }
        }
        let slots = &mut self.pending[ch][(first - self.emitted) as usize..need];
        let frame = &samples[(first - position) as usize..(last - position) as usize];
        let touches_gap = self
            .gaps
            .iter()
            .any(|&(from, to)| from < last && first < to);
        if touches_gap {
            // Paused: silence in its place (the timeline still runs to the call's end).
            let gaps = &self.gaps;
            for ((slot, &s), at) in slots.iter_mut().zip(frame).zip(first..) {
                let paused = gaps.iter().any(|&(from, to)| (from..to).contains(&at));
                *slot = if paused { 0 } else { s };
            }
        } else {
            slots.copy_from_slice(frame);
        }
    }

    /// Hands out (interleaved, appended to `out`) everything up to [`DELAY_MS`] before
    /// `now_ms`, silence included; returns the number of sample frames.
    pub fn drain(&mut self, now_ms: u64, out: &mut Vec<i16>) -> usize {
        let until = self
            .arrival_position(now_ms)
            .saturating_sub(DELAY_MS * PER_MS);
        self.emit_until(until, out)
    }

    /// Hands out everything buffered (the call ended).
    pub fn finish(&mut self, out: &mut Vec<i16>) -> usize {
        let until = self.emitted + self.pending[0].len() as u64;
        self.emit_until(until, out)
    }

    fn emit_until(&mut self, until: u64, out: &mut Vec<i16>) -> usize {
        let n = until.saturating_sub(self.emitted) as usize;
        let [left, right] = &mut self.pending;
        let buffered = n.min(left.len());
        let start = out.len();
        // Beyond what any leg sent: silence.
        out.resize(start + n * 2, 0);
        for ((pair, &l), &r) in out[start..]
            .chunks_exact_mut(2)
            .zip(&left[..buffered])
            .zip(&right[..buffered])
        {
            pair[0] = l;
            pair[1] = r;
        }
        left.drain(..buffered);
        right.drain(..buffered);
        self.emitted += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Vec<i16> {
        vec![v; 160]
    }

    fn channel(out: &[i16], ch: usize) -> Vec<i16> {
        out.iter().skip(ch).step_by(2).copied().collect()
    }

    #[test]
    fn legs_are_aligned_by_timestamp_with_silence_filled() {
        let mut m = StereoMixer::new(1_000);
        // Caller from t=0, agent starts 100 ms later; both 20 ms frames.
        for i in 0..10u32 {
            m.push(
                Leg::Caller,
                5_000 + i * 160,
                &frame(100),
                1_000 + u64::from(i) * 20,
            );
        }
        for i in 0..5u32 {
            m.push(
                Leg::Agent,
                90_000 + i * 160,
                &frame(-7),
                1_100 + u64::from(i) * 20,
            );
        }
        let mut out = Vec::new();
        m.finish(&mut out);
        let (left, right) = (channel(&out, 0), channel(&out, 1));
        assert_eq!(left.len(), 1_600);
        assert!(left.iter().all(|&s| s == 100));
        assert!(
            right[..800].iter().all(|&s| s == 0),
            "silence before the agent spoke"
        );
        assert!(right[800..].iter().all(|&s| s == -7));
    }

    #[test]
    fn jittered_arrival_keeps_timestamp_order_and_a_gap_stays_silent() {
        let mut m = StereoMixer::new(0);
        m.push(Leg::Caller, 0, &frame(1), 0);
        // Frame 2 arrives before frame 1 (reordering); frame 3 is lost.
        m.push(Leg::Caller, 320, &frame(3), 25);
        m.push(Leg::Caller, 160, &frame(2), 30);
        m.push(Leg::Caller, 640, &frame(5), 80);
        let mut out = Vec::new();
        m.finish(&mut out);
        let left = channel(&out, 0);
        let parts: Vec<i16> = left.chunks(160).map(|c| c[0]).collect();
        assert_eq!(parts, vec![1, 2, 3, 0, 5]);
    }

    #[test]
    fn drain_lags_real_time_and_late_frames_are_dropped() {
        let mut m = StereoMixer::new(0);
        m.push(Leg::Agent, 0, &frame(9), 0);
        let mut out = Vec::new();
        assert_eq!(m.drain(150, &mut out), 0, "nothing older than 200 ms yet");
        assert_eq!(
            m.drain(1_000, &mut out),
            6_400,
            "800 ms handed out, silence included"
        );
        m.push(Leg::Agent, 160, &frame(9), 1_000);
        assert_eq!(m.late_samples, 160, "its place was already written");
    }

    #[test]
    fn a_timestamp_jump_reanchors_the_leg_at_its_arrival() {
        let mut m = StereoMixer::new(0);
        m.push(Leg::Caller, 0, &frame(1), 0);
        // New source: timestamps jump by hours, arrival says 40 ms.
        m.push(Leg::Caller, 123_456_789, &frame(2), 40);
        m.push(Leg::Caller, 123_456_789 + 160, &frame(3), 60);
        let mut out = Vec::new();
        m.finish(&mut out);
        let parts: Vec<i16> = channel(&out, 0).chunks(160).map(|c| c[0]).collect();
        assert_eq!(parts, vec![1, 0, 2, 3]);
    }

    #[test]
    fn paused_audio_is_silence_and_the_gap_is_reported() {
        let mut m = StereoMixer::new(0);
        // 1 s of both legs, paused from 300 ms to 700 ms.
        for i in 0..50u32 {
            let at = u64::from(i) * 20;
            if at == 300 {
                assert!(m.pause(at));
                assert!(!m.pause(at), "already paused");
            }
            if at == 700 {
                assert!(m.resume(at));
                assert!(!m.resume(at), "not paused");
            }
            m.push(Leg::Caller, i * 160, &frame(5), at);
            m.push(Leg::Agent, i * 160, &frame(-5), at);
        }
        let mut out = Vec::new();
        m.finish(&mut out);
        for ch in 0..2 {
            let c = channel(&out, ch);
            assert_eq!(c.len(), 8_000);
            assert!(c[..2_400].iter().all(|&s| s != 0), "before the pause");
            assert!(
                c[2_400..5_600].iter().all(|&s| s == 0),
                "the pause is silent"
            );
            assert!(c[5_600..].iter().all(|&s| s != 0), "after the resume");
        }
        assert_eq!(
            m.gaps(m.frames()),
            vec![Gap {
                start_ms: 300,
                end_ms: 700
            }]
        );
    }

    #[test]
    fn a_pause_silences_audio_already_placed_after_it_and_an_open_one_ends_with_the_file() {
        let mut m = StereoMixer::new(0);
        m.push(Leg::Caller, 0, &frame(1), 0);
        // A frame placed at 100 ms before the pause at 100 ms is processed.
        m.push(Leg::Caller, 800, &frame(2), 100);
        assert!(m.pause(100));
        m.push(Leg::Caller, 1_600, &frame(3), 200);
        let mut out = Vec::new();
        m.finish(&mut out);
        let parts: Vec<i16> = channel(&out, 0).chunks(160).map(|c| c[0]).collect();
        assert_eq!(parts, vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            m.gaps(m.frames()),
            vec![Gap {
                start_ms: 100,
                end_ms: 220
            }]
        );
    }

    #[test]
    fn a_leg_cannot_grow_the_buffer_without_bound() {
        let mut m = StereoMixer::new(0);
        m.push(Leg::Caller, 0, &frame(1), 0);
        // 9 s ahead of the anchor but arriving at 9 s: accepted.
        m.push(Leg::Caller, 72_000, &frame(1), 9_000);
        assert!(m.pending[0].len() as u64 <= MAX_AHEAD_SAMPLES);
    }
}
