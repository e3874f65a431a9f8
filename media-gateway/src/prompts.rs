//! Audio the gateway plays: music on hold for queued callers, as 8 kHz mono PCM.
//!
//! A configured WAV file (16-bit PCM, any rate, mono or stereo) is read once, mixed down to
//! mono and resampled to 8 kHz by linear interpolation (enough for telephone-band G.711).
//! Without one, a generated pattern plays: a soft two-note chime and silence, so a caller
//! can hear the line is alive.

use std::collections::HashMap;
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
    let file = std::fs::File::open(path)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))?;
    wav_to_8k(std::io::BufReader::new(file), &path.display().to_string())
}

/// Decodes a 16-bit PCM WAV (any rate, mono or stereo) as 8 kHz mono; `name` for errors.
pub fn wav_to_8k(input: impl std::io::Read, name: &str) -> Result<Arc<[i16]>, GatewayError> {
    let bad = |e: String| GatewayError::Config(format!("{name}: {e}"));
    let mut reader = hound::WavReader::new(input).map_err(|e| bad(e.to_string()))?;
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

/// The announcement prompts' names (`<name>.wav`), in the order [`Announcements::of`] takes
/// them.
pub const ANNOUNCEMENT_PROMPTS: [&str; 13] = [
    "position", "digit-0", "digit-1", "digit-2", "digit-3", "digit-4", "digit-5", "digit-6",
    "digit-7", "digit-8", "digit-9", "wait", "minutes",
];

impl Announcements {
    /// Loads `position.wav`, `digit-0.wav` .. `digit-9.wav`, `wait.wav` and `minutes.wav`.
    pub fn load(dir: &Path) -> Result<Self, GatewayError> {
        let prompts = ANNOUNCEMENT_PROMPTS
            .iter()
            .map(|name| load_wav(&dir.join(format!("{name}.wav"))))
            .collect::<Result<Vec<_>, _>>()?;
        Self::of(prompts).ok_or_else(|| GatewayError::Config("announcement prompts".into()))
    }

    /// The set from its prompts in [`ANNOUNCEMENT_PROMPTS`] order (none unless all are there).
    fn of(mut prompts: Vec<Arc<[i16]>>) -> Option<Self> {
        if prompts.len() != ANNOUNCEMENT_PROMPTS.len() {
            return None;
        }
        let minutes = prompts.pop()?;
        let wait = prompts.pop()?;
        let digits = prompts.split_off(1);
        Some(Self {
            position: prompts.pop()?,
            digits,
            wait,
            minutes,
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

/// Largest prompt object read from the store (10 minutes of 48 kHz 16-bit stereo is ~110 MB;
/// hold music is far shorter).
pub const MAX_PROMPT_BYTES: u64 = 16 * 1024 * 1024;
/// How long a fetched (or missing) prompt is trusted before the store is asked again.
pub const PROMPT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Prompts kept in object storage (the recordings store), fetched on first use and cached in
/// memory and on local disk: `prompts/<tenant>/hold.wav` is a tenant's own music on hold,
/// `prompts/hold.wav` the platform's. A fetched prompt is re-checked after [`PROMPT_TTL`];
/// while the store is unreachable the last copy (in memory, or on disk after a restart)
/// keeps playing, and without any copy the configured or generated hold music plays, so a
/// store outage never leaves a caller in silence.
pub struct PromptCache {
    store: Option<Arc<dyn switchboard_recording::ObjectStore>>,
    /// The on-disk copies (survive restarts and store outages).
    dir: Option<std::path::PathBuf>,
    fallback: Arc<[i16]>,
    entries: std::sync::Mutex<HashMap<String, CachedPrompt>>,
}

#[derive(Clone)]
struct CachedPrompt {
    checked: std::time::Instant,
    /// `None`: the store has no such object.
    audio: Option<Arc<[i16]>>,
}

impl std::fmt::Debug for PromptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptCache")
            .field("store", &self.store.is_some())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Most distinct prompt keys cached (tenants times prompts); past it, entries are dropped.
const MAX_CACHED_PROMPTS: usize = 10_000;

impl PromptCache {
    pub fn new(
        store: Option<Arc<dyn switchboard_recording::ObjectStore>>,
        dir: Option<std::path::PathBuf>,
        fallback: Arc<[i16]>,
    ) -> Self {
        Self {
            store,
            dir,
            fallback,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The music on hold for `tenant`: its own, else the platform's from the store, else
    /// the configured one.
    pub async fn hold_music(&self, tenant: &str) -> Arc<[i16]> {
        let own = format!("prompts/{tenant}/hold.wav");
        if let Some(audio) = self.prompt(&own).await {
            return audio;
        }
        self.prompt("prompts/hold.wav")
            .await
            .unwrap_or_else(|| self.fallback.clone())
    }

    /// Whether prompts come from an object store at all.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// The tenant's queue announcements from the store: a complete set under
    /// `prompts/<tenant>/announce/`, else under `prompts/announce/`; none when neither has
    /// every prompt (the configured directory, if any, is used then).
    pub async fn announcements(&self, tenant: &str) -> Option<Announcements> {
        self.store.as_ref()?;
        for prefix in [
            format!("prompts/{tenant}/announce"),
            "prompts/announce".to_owned(),
        ] {
            let mut set = Vec::with_capacity(ANNOUNCEMENT_PROMPTS.len());
            for name in ANNOUNCEMENT_PROMPTS {
                match self.prompt(&format!("{prefix}/{name}.wav")).await {
                    Some(audio) => set.push(audio),
                    None => break,
                }
            }
            if let Some(a) = Announcements::of(set) {
                return Some(a);
            }
        }
        None
    }

    /// One prompt by key: from memory while fresh, else from the store, else the last copy.
    pub async fn prompt(&self, key: &str) -> Option<Arc<[i16]>> {
        let cached = self.entries.lock().ok()?.get(key).cloned();
        if let Some(c) = &cached
            && c.checked.elapsed() < PROMPT_TTL
        {
            return c.audio.clone();
        }
        let store = self.store.as_ref()?;
        let fetched = match store.get(key, MAX_PROMPT_BYTES).await {
            Ok(Some(bytes)) => match wav_to_8k(std::io::Cursor::new(&bytes), key) {
                Ok(audio) => {
                    self.keep_on_disk(key, &bytes).await;
                    Some(Some(audio))
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "prompt in the store is not a usable WAV");
                    Some(None)
                }
            },
            Ok(None) => Some(None),
            Err(e) => {
                tracing::warn!(error = %e, key, "prompt store unreachable: last copy plays");
                None
            }
        };
        let audio = match fetched {
            Some(audio) => audio,
            // The store failed: the copy in memory, else the one on disk; asked again later.
            None => match cached.and_then(|c| c.audio) {
                Some(audio) => Some(audio),
                None => self.read_disk_copy(key).await,
            },
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED_PROMPTS {
                entries.clear();
            }
            entries.insert(
                key.to_owned(),
                CachedPrompt {
                    checked: std::time::Instant::now(),
                    audio: audio.clone(),
                },
            );
        }
        audio
    }

    fn disk_path(&self, key: &str) -> Option<std::path::PathBuf> {
        // Keys are ours (`prompts/<uuid>/hold.wav`); flatten them to one safe file name.
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(self.dir.as_ref()?.join(format!("{name}.prompt")))
    }

    async fn keep_on_disk(&self, key: &str, bytes: &[u8]) {
        let Some(path) = self.disk_path(key) else {
            return;
        };
        let tmp = path.with_extension("part");
        let written = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&tmp, bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, key, "prompt cache on disk");
        }
    }

    async fn read_disk_copy(&self, key: &str) -> Option<Arc<[i16]>> {
        let bytes = tokio::fs::read(self.disk_path(key)?).await.ok()?;
        wav_to_8k(std::io::Cursor::new(bytes), key).ok()
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use switchboard_recording::{FileDigest, LocalStore, ObjectStore, RecordingError};

    /// A local store that can be made unreachable, as S3 is during an outage.
    #[derive(Debug)]
    struct Flaky {
        inner: LocalStore,
        down: AtomicBool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        async fn put(&self, k: &str, p: &Path, d: &FileDigest) -> Result<(), RecordingError> {
            self.inner.put(k, p, d).await
        }
        async fn size(&self, key: &str) -> Result<Option<u64>, RecordingError> {
            self.inner.size(key).await
        }
        async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, RecordingError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(RecordingError::S3 {
                    status: Some(503),
                    detail: "down".into(),
                });
            }
            self.inner.get(key, max).await
        }
        async fn delete(&self, key: &str) -> Result<(), RecordingError> {
            self.inner.delete(key).await
        }
        async fn presign_get(
            &self,
            key: &str,
            ttl: std::time::Duration,
        ) -> Result<Option<String>, RecordingError> {
            self.inner.presign_get(key, ttl).await
        }
        fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
            self.inner.local_path(key)
        }
    }

    fn wav(freq: f64, rate: u32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        if let Ok(mut w) = hound::WavWriter::new(&mut out, spec) {
            for s in switchboard_media::tone::sine(freq, rate, rate as usize / 2, 0.3) {
                let _ = w.write_sample(s);
            }
            let _ = w.finalize();
        }
        out.into_inner()
    }

    fn tone_of(audio: &[i16]) -> Option<f64> {
        switchboard_media::tone::dominant_tone(audio, &[500.0, 700.0, 900.0], 8_000)
    }

    #[tokio::test]
    async fn tenant_music_then_platform_music_then_the_fallback_and_outages_keep_the_last_copy() {
        let base = std::env::temp_dir().join(format!("sb-prompts-{}", uuid::Uuid::new_v4()));
        let root = base.join("store");
        let store = Arc::new(Flaky {
            inner: LocalStore::new(root.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            down: AtomicBool::new(false),
        });
        let fallback: Arc<[i16]> = switchboard_media::tone::sine(500.0, 8_000, 4_000, 0.3).into();
        let cache = PromptCache::new(
            Some(store.clone() as Arc<dyn ObjectStore>),
            Some(base.join("cache")),
            fallback,
        );
        let put = |key: &str, bytes: Vec<u8>| {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap_or(&root)).unwrap_or_default();
            std::fs::write(path, bytes).unwrap_or_default();
        };
        // Nothing in the store: the configured music.
        assert_eq!(tone_of(&cache.hold_music("t1").await), Some(500.0));
        // The platform's music (a 16 kHz file, resampled), then a tenant's own.
        put("prompts/hold.wav", wav(900.0, 16_000));
        put("prompts/t1/hold.wav", wav(700.0, 8_000));
        let fresh = PromptCache::new(
            Some(store.clone() as Arc<dyn ObjectStore>),
            Some(base.join("cache")),
            switchboard_media::tone::sine(500.0, 8_000, 4_000, 0.3).into(),
        );
        assert_eq!(tone_of(&fresh.hold_music("t1").await), Some(700.0));
        assert_eq!(tone_of(&fresh.hold_music("t2").await), Some(900.0));
        // The store goes down and the process restarts: the copies on disk play on.
        store.down.store(true, Ordering::SeqCst);
        let restarted = PromptCache::new(
            Some(store.clone() as Arc<dyn ObjectStore>),
            Some(base.join("cache")),
            switchboard_media::tone::sine(500.0, 8_000, 4_000, 0.3).into(),
        );
        assert_eq!(tone_of(&restarted.hold_music("t1").await), Some(700.0));
        // A file that is no WAV is refused, not played.
        store.down.store(false, Ordering::SeqCst);
        put("prompts/t3/hold.wav", b"not a wav".to_vec());
        assert_eq!(tone_of(&restarted.hold_music("t3").await), Some(900.0));
        let _ = std::fs::remove_dir_all(&base);
    }
}
