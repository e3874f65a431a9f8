//! The ramp's decisions, pure: which numbers of legs to try, whether the next step still fits
//! the time budget, a step's loss and verdict, and the numbers of the RESULT line.

use std::time::Duration;

/// A step passes with at most this much packet loss (and every leg set up).
pub const LOSS_LIMIT_PCT: f64 = 0.1;
/// A packet arriving this much behind its stream's pace (measured from the stream's first
/// packet) is past any jitter buffer: counted as lost.
pub const LATE_MS: u64 = 200;
/// A process at or above this CPU share of its core is saturated.
pub const SATURATED_PCT: f64 = 90.0;

/// Step sizes tried in order, up to the maximum.
const LADDER: [usize; 10] = [50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1500];

/// The steps up to `max`: the ladder's, then `max` itself when it is not on the ladder.
pub fn steps(max: usize) -> Vec<usize> {
    let mut s: Vec<usize> = LADDER.iter().copied().filter(|&n| n <= max).collect();
    if max > 0 && s.last() != Some(&max) {
        s.push(max);
    }
    s
}

/// Whether a step of `next` legs still ends within `budget`, `elapsed` into the run. Setting
/// legs up costs about the same per leg at every step, so the last step's setup time scales
/// with the leg count; `fixed` is the rest of a step (media, drain, teardown). The first step
/// always runs.
pub fn next_fits(
    elapsed: Duration,
    budget: Duration,
    fixed: Duration,
    last_setup: Option<(usize, Duration)>,
    next: usize,
) -> bool {
    let Some((legs, setup)) = last_setup else {
        return true;
    };
    let setup = setup.mul_f64(next as f64 / legs.max(1) as f64);
    elapsed + setup + fixed <= budget
}

/// Packets of one direction in a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Sends attempted by the generator (a failed send counts as lost).
    pub sent: u64,
    /// Arrived (late ones included).
    pub received: u64,
    /// Arrived more than [`LATE_MS`] behind their stream's pace.
    pub late: u64,
}

impl Flow {
    /// Never arrived, or arrived late.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received) + self.late.min(self.received)
    }
}

/// What one step measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Calls (one WebRTC leg and one RTP leg each) the step asked for.
    pub legs: usize,
    /// Legs whose DTLS came up on both sides; the others failed.
    pub connected: usize,
    /// RTP caller -> relay -> WebRTC -> browser.
    pub down: Flow,
    /// Browser -> WebRTC -> relay -> RTP caller.
    pub up: Flow,
    /// CPU of the gateway side (`serve`) during the media window, percent of one core.
    pub serve_cpu_pct: f64,
    pub gen_cpu_pct: f64,
    pub setup: Duration,
}

impl Step {
    pub fn failed(&self) -> usize {
        self.legs.saturating_sub(self.connected)
    }

    /// Loss over both directions, percent; 100 when nothing was sent.
    pub fn loss_pct(&self) -> f64 {
        let sent = self.down.sent + self.up.sent;
        if sent == 0 {
            return 100.0;
        }
        (self.down.lost() + self.up.lost()) as f64 * 100.0 / sent as f64
    }

    /// Every leg up and the loss within the limit.
    pub fn passes(&self) -> bool {
        self.failed() == 0 && self.loss_pct() <= LOSS_LIMIT_PCT
    }
}

/// The RESULT line's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The largest step that passed before the first that did not (0: none passed).
    pub legs: usize,
    /// The loss of the first step that did not pass, or of the last step run when all passed.
    pub loss_pct: f64,
    /// Gateway CPU per leg (percent of a core) at the `legs` step (at the first step when none
    /// passed).
    pub cpu_per_leg_pct: f64,
    /// The generator's core was saturated at the step that decided the loss: its own lag may
    /// be part of that loss, and `legs` a lower bound.
    pub gen_saturated: bool,
}

/// Summarises steps in the order they ran; `None` without any.
pub fn summarize(steps: &[Step]) -> Option<Summary> {
    let first_fail = steps.iter().position(|s| !s.passes());
    let passed = &steps[..first_fail.unwrap_or(steps.len())];
    let loss_at = first_fail.map_or(steps.last(), |i| steps.get(i))?;
    let cpu_at = passed.last().or(steps.first())?;
    Some(Summary {
        legs: passed.last().map_or(0, |s| s.legs),
        loss_pct: loss_at.loss_pct(),
        cpu_per_leg_pct: cpu_at.serve_cpu_pct / cpu_at.legs.max(1) as f64,
        gen_saturated: loss_at.gen_cpu_pct >= SATURATED_PCT,
    })
}

/// How far behind its stream's pace a packet arrived: its arrival minus the arrival its RTP
/// timestamp (8 kHz) implies from the stream's first packet `(arrival_ns, ts)`. The first
/// packets of a step are sent before any backlog, so this is the delay added since.
pub fn behind_ns(first: (u64, u32), arrival_ns: u64, ts: u32) -> i64 {
    let elapsed = arrival_ns as i64 - first.0 as i64;
    let paced = i64::from(ts.wrapping_sub(first.1) as i32) * 125_000;
    elapsed - paced
}

/// Counts of a delay in 1 ms buckets (the last one holds everything beyond).
#[derive(Debug, Clone)]
pub struct DelayHistogram {
    buckets: Vec<u64>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; 2001],
        }
    }
}

impl DelayHistogram {
    pub fn add(&mut self, ns: i64) {
        let ms = (ns.max(0) / 1_000_000) as usize;
        let last = self.buckets.len() - 1;
        self.buckets[ms.min(last)] += 1;
    }

    pub fn merge(&mut self, other: &DelayHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// The smallest whole millisecond at or under which a share `q` of the samples lies.
    pub fn percentile_ms(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return ms as u64;
            }
        }
        0
    }
}

/// RFC 3550 interarrival jitter of one stream (section 6.4.1), at an 8 kHz RTP clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jitter {
    last: Option<(u64, u32)>,
    /// In RTP timestamp units.
    value: f64,
}

impl Jitter {
    /// A packet with RTP timestamp `ts` arrived at `arrival_ns`.
    pub fn arrived(&mut self, arrival_ns: u64, ts: u32) {
        if let Some((prev_ns, prev_ts)) = self.last {
            let transit_ns = arrival_ns as f64 - prev_ns as f64;
            let d = transit_ns * 8000.0 / 1e9 - f64::from(ts.wrapping_sub(prev_ts) as i32);
            self.value += (d.abs() - self.value) / 16.0;
        }
        self.last = Some((arrival_ns, ts));
    }

    pub fn ms(&self) -> f64 {
        self.value / 8.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step(legs: usize, connected: usize, sent: u64, received: u64, cpu: f64) -> Step {
        Step {
            legs,
            connected,
            down: Flow {
                sent,
                received,
                late: 0,
            },
            up: Flow {
                sent,
                received,
                late: 0,
            },
            serve_cpu_pct: cpu,
            ..Default::default()
        }
    }

    #[test]
    fn steps_follow_the_ladder_up_to_the_max() {
        assert_eq!(steps(300), vec![50, 100, 200, 300]);
        assert_eq!(steps(700), vec![50, 100, 200, 300, 400, 600, 700]);
        assert_eq!(steps(20), vec![20]);
        assert!(steps(0).is_empty());
    }

    #[test]
    fn budget_scales_the_last_setup_time() {
        let s = Duration::from_secs;
        assert!(
            next_fits(s(500), s(180), s(10), None, 50),
            "first step runs"
        );
        // 100 legs took 5 s to set up: 200 take 10 s, plus 10 s of media.
        assert!(next_fits(s(160), s(180), s(10), Some((100, s(5))), 200));
        assert!(!next_fits(s(161), s(180), s(10), Some((100, s(5))), 200));
    }

    #[test]
    fn loss_counts_both_directions_and_failed_legs_fail_the_step() {
        let ok = step(100, 100, 10_000, 9_990, 20.0);
        assert!((ok.loss_pct() - 0.1).abs() < 1e-9);
        assert!(ok.passes(), "0.1 % is within the limit");
        let lossy = Step {
            up: Flow {
                sent: 10_000,
                received: 9_990,
                late: 20,
            },
            ..ok.clone()
        };
        assert!((lossy.loss_pct() - 0.2).abs() < 1e-9);
        assert!(!lossy.passes());
        let one_failed = step(100, 99, 10_000, 10_000, 20.0);
        assert_eq!(one_failed.failed(), 1);
        assert!(!one_failed.passes());
        assert_eq!(step(10, 0, 0, 0, 0.0).loss_pct(), 100.0);
        // Late packets are lost, counted once.
        let late = Flow {
            sent: 10,
            received: 9,
            late: 2,
        };
        assert_eq!(late.lost(), 3);
        // More received than sent (a duplicate) is no negative loss.
        assert_eq!(step(1, 1, 10, 11, 0.0).loss_pct(), 0.0);
    }

    #[test]
    fn summary_takes_the_last_pass_before_the_first_failure() {
        let runs = [
            step(50, 50, 1000, 1000, 10.0),
            step(100, 100, 1000, 1000, 30.0),
            step(200, 200, 1000, 990, 95.0),
        ];
        let s = summarize(&runs).unwrap();
        assert_eq!(s.legs, 100);
        assert!((s.loss_pct - 1.0).abs() < 1e-9);
        assert!((s.cpu_per_leg_pct - 0.3).abs() < 1e-9);
        // All passed: the last step's loss.
        assert!(!s.gen_saturated);
        let s = summarize(&runs[..2]).unwrap();
        assert_eq!((s.legs, s.loss_pct), (100, 0.0));
        let mut busy_gen = runs.clone();
        busy_gen[2].gen_cpu_pct = 95.0;
        assert!(summarize(&busy_gen).unwrap().gen_saturated);
        // None passed: 0 legs, the first step's loss and CPU per leg.
        let s = summarize(&runs[2..]).unwrap();
        assert_eq!(s.legs, 0);
        assert!((s.cpu_per_leg_pct - 0.475).abs() < 1e-9);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn lateness_is_measured_against_the_first_packets_pace() {
        let first = (1_000_000_000, u32::MAX - 159);
        // 10 packets (1600 ticks, 200 ms) later, on time; across the timestamp wrap.
        assert_eq!(behind_ns(first, 1_200_000_000, 1440), 0);
        assert_eq!(behind_ns(first, 1_250_000_000, 1440), 50_000_000);
        let mut h = DelayHistogram::default();
        for ms in 0..100 {
            h.add(ms * 1_000_000);
        }
        h.add(-5);
        h.add(10_000_000_000);
        assert_eq!(h.percentile_ms(0.5), 49);
        assert_eq!(h.percentile_ms(1.0), 2000);
        let mut m = DelayHistogram::default();
        m.merge(&h);
        assert_eq!(m.percentile_ms(0.01), 0);
        assert_eq!(DelayHistogram::default().percentile_ms(0.99), 0);
    }

    #[test]
    fn jitter_is_zero_on_time_and_grows_with_late_packets() {
        let mut j = Jitter::default();
        for i in 0..100u64 {
            j.arrived(i * 20_000_000, (i * 160) as u32);
        }
        assert!(j.ms() < 1e-9);
        // Every other packet 4 ms late: |D| alternates 4 ms, 4 ms -> converges to 4 ms.
        let mut j = Jitter::default();
        for i in 0..1000u64 {
            let late = if i % 2 == 1 { 4_000_000 } else { 0 };
            j.arrived(i * 20_000_000 + late, (i * 160) as u32);
        }
        assert!((j.ms() - 4.0).abs() < 0.01, "{}", j.ms());
        // Timestamps wrapping around do not disturb it.
        let mut j = Jitter::default();
        j.arrived(0, u32::MAX - 79);
        j.arrived(20_000_000, 80);
        assert!(j.ms() < 1e-9);
    }
}
