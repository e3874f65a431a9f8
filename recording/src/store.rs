//! Where finished recordings live: an [`ObjectStore`] with two implementations, a local
//! directory ([`crate::LocalStore`], the embedded default) and S3 ([`crate::S3Store`]).
//!
//! Every store keeps the same promises, which the uploader relies on:
//! - `put` never overwrites: creating a key that exists is refused by the store itself
//!   (a hard link on disk, `If-None-Match: *` on S3). A retry of an upload that already
//!   landed finds the same bytes there and counts as done; different bytes are a conflict.
//! - `put` returns only after the stored object's size and checksum were read back from the
//!   store and matched the file's, so the spool file may then be deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RecordingError;

/// What the uploader knows about a file before it goes to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
}

impl FileDigest {
    /// Reads the file once and hashes it (on a blocking thread, in large reads: one hand-off
    /// per file rather than one per read).
    pub async fn of(path: &Path) -> Result<Self, RecordingError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            use std::io::Read;
            let mut f = std::fs::File::open(&path)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok(Self {
                size,
                sha256: hex(&hasher.finalize()),
            })
        })
        .await
        .map_err(|e| RecordingError::Io(std::io::Error::other(e)))?
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A place recordings are kept.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `path` under `key` unless the key exists (see the module docs), then confirms
    /// the stored object's size and checksum against `digest`.
    async fn put(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<(), RecordingError>;
    /// The stored object's size, or `None` when there is none.
    async fn size(&self, key: &str) -> Result<Option<u64>, RecordingError>;
    /// The whole object, when it exists and is at most `max_bytes` long (a larger one is an
    /// error, never read). For small objects the gateway reads back, such as prompts.
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, RecordingError>;
    /// Removes an object (retention); removing a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), RecordingError>;
    /// A short-lived URL anyone holding it may GET the object from, when the store can make
    /// one (S3 presigning); `None` for stores the api serves itself.
    async fn presign_get(&self, key: &str, ttl: Duration)
    -> Result<Option<String>, RecordingError>;
    /// The object's file, for stores on this machine's disk.
    fn local_path(&self, key: &str) -> Option<PathBuf>;
}

/// Which store recordings go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A directory on this machine (`switchboard up`).
    #[default]
    Local,
    /// An S3 bucket (or an S3-compatible server).
    S3,
}

/// Settings of the recordings pipeline (`gateway.recordings.*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// Record bridged calls. Unset: on in `switchboard up`, off in `switchboard gateway`.
    pub enabled: Option<bool>,
    /// Where recordings are written while the call runs and wait for their upload; the queue
    /// of pending uploads, which survives restarts. `switchboard up`: `<data_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// `local` or `s3`.
    pub store: StoreKind,
    /// The local store's directory. `switchboard up`: `<data_dir>/recordings`.
    pub local_dir: Option<PathBuf>,
    /// Prepended to every object key (`<prefix><tenant>/<call>.wav`).
    pub prefix: String,
    /// The S3 bucket (private: objects are reached by presigned URLs only).
    pub bucket: String,
    /// An S3-compatible endpoint URL (path-style addressing); unset: AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; unset: none (an endpoint without auth).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A file holding the secret access key (secret mounts).
    pub secret_access_key_file: Option<PathBuf>,
    /// Files at least this large go up in parts of `part_size_bytes` (at least 5 MiB).
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Retry backoff: first wait, doubling up to the cap.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// An upload still failing after this long is reported `recording.failed` (its spool
    /// file is kept and retried on the next start).
    pub give_up_s: u64,
    /// Uploads running at once.
    pub upload_concurrency: usize,
    /// Lifetime of playback URLs.
    pub playback_ttl_s: u64,
    /// How often the retention sweeper runs.
    pub retention_sweep_s: u64,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            spool_dir: None,
            store: StoreKind::Local,
            local_dir: None,
            prefix: String::new(),
            bucket: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            part_size_bytes: 8 * 1024 * 1024,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            give_up_s: 6 * 3600,
            upload_concurrency: 8,
            playback_ttl_s: 300,
            retention_sweep_s: 3_600,
        }
    }
}

/// The smallest part S3 accepts (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

impl RecordingsConfig {
    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.is_enabled() {
            return Ok(());
        }
        if self.spool_dir.is_none() {
            return Err("gateway.recordings.spool_dir: required when recording is on".into());
        }
        match self.store {
            StoreKind::Local if self.local_dir.is_none() => {
                return Err("gateway.recordings.local_dir: required for the local store".into());
            }
            StoreKind::S3 if self.bucket.is_empty() || self.bucket.len() > 63 => {
                return Err("gateway.recordings.bucket: 1 to 63 characters for s3".into());
            }
            _ => {}
        }
        if self.part_size_bytes < MIN_PART || self.part_size_bytes > 5 * 1024 * 1024 * 1024 {
            return Err("gateway.recordings.part_size_bytes: 5 MiB to 5 GiB".into());
        }
        if self.multipart_threshold_bytes < self.part_size_bytes {
            return Err(
                "gateway.recordings.multipart_threshold_bytes: at least part_size_bytes".into(),
            );
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            return Err(
                "gateway.recordings.retry_initial_ms..retry_max_ms: a range above 0".into(),
            );
        }
        if self.give_up_s == 0 {
            return Err("gateway.recordings.give_up_s: above 0".into());
        }
        if !(1..=256).contains(&self.upload_concurrency) {
            return Err("gateway.recordings.upload_concurrency: 1 to 256".into());
        }
        if !(1..=7 * 24 * 3600).contains(&self.playback_ttl_s) {
            return Err("gateway.recordings.playback_ttl_s: 1 s to 7 days".into());
        }
        if !(1..=7 * 24 * 3600).contains(&self.retention_sweep_s) {
            return Err("gateway.recordings.retention_sweep_s: 1 s to 7 days".into());
        }
        if self.prefix.len() > 256 || self.prefix.starts_with('/') {
            return Err("gateway.recordings.prefix: at most 256 characters, no leading /".into());
        }
        Ok(())
    }

    /// Whether bridged calls are recorded.
    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }

    /// The object key of a call's recording.
    pub fn key(&self, tenant: &str, call_id: &str) -> String {
        format!("{}{tenant}/{call_id}.wav", self.prefix)
    }

    /// Builds the configured store.
    pub async fn open_store(&self) -> Result<std::sync::Arc<dyn ObjectStore>, RecordingError> {
        Ok(match self.store {
            StoreKind::Local => {
                let dir = self.local_dir.clone().ok_or_else(|| {
                    RecordingError::Config("gateway.recordings.local_dir unset".into())
                })?;
                std::sync::Arc::new(crate::LocalStore::new(dir).await?)
            }
            StoreKind::S3 => std::sync::Arc::new(crate::S3Store::new(self)?),
        })
    }
}
