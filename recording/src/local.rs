//! The local-directory store: `switchboard up` keeps recordings on its own disk. The api
//! serves them through short-lived signed URLs of its own (see `GET /v1/recordings/{id}/playback`).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::RecordingError;
use crate::store::{FileDigest, ObjectStore};

/// Objects are files under one root directory, a key's `/` separating directories.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating) the root directory.
    pub async fn new(root: PathBuf) -> Result<Self, RecordingError> {
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self { root })
    }

    /// The file of a key; keys that would leave the root are refused.
    fn path(&self, key: &str) -> Result<PathBuf, RecordingError> {
        let rel = Path::new(key);
        let plain = !key.is_empty()
            && key.len() <= 1024
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(RecordingError::BadKey(key.chars().take(64).collect()));
        }
        Ok(self.root.join(rel))
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, path: &Path, digest: &FileDigest) -> Result<(), RecordingError> {
        let dest = self.path(key)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // The finished spool file is linked into place as it is when both are on one
        // filesystem (no copy, no new file: creating files per call is what limits the
        // gateway's call rate on ext4); else copied beside the destination and that copy
        // linked. The link fails if the key exists (never overwritten), and readers never
        // see a half-copied file.
        let linked = match tokio::fs::hard_link(path, &dest).await {
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                let tmp = dest.with_extension(format!("part-{}", rand::random::<u64>()));
                tokio::fs::copy(path, &tmp).await?;
                let linked = tokio::fs::hard_link(&tmp, &dest).await;
                let _ = tokio::fs::remove_file(&tmp).await;
                linked
            }
            other => other,
        };
        match linked {
            Ok(()) => {}
            // A retry after the object already landed: fine if it is the same bytes.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let stored = FileDigest::of(&dest).await?;
        if &stored != digest {
            return Err(RecordingError::Mismatch {
                key: key.into(),
                detail: format!(
                    "stored {} bytes sha256 {}, spooled {} bytes sha256 {}",
                    stored.size, stored.sha256, digest.size, digest.sha256
                ),
            });
        }
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, RecordingError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, RecordingError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.len() > max_bytes => Err(RecordingError::Config(format!(
                "{key}: {} bytes, more than {max_bytes}",
                m.len()
            ))),
            Ok(_) => Ok(Some(tokio::fs::read(&path).await?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), RecordingError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn presign_get(
        &self,
        _key: &str,
        _ttl: Duration,
    ) -> Result<Option<String>, RecordingError> {
        Ok(None)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn setup(name: &str) -> (PathBuf, LocalStore) {
        let dir = std::env::temp_dir().join(format!("sb-local-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = LocalStore::new(dir.join("store")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn put_confirms_and_never_overwrites() {
        let (dir, store) = setup("put").await;
        let a = dir.join("a.wav");
        std::fs::write(&a, b"first recording").unwrap();
        let da = FileDigest::of(&a).await.unwrap();
        store.put("t/c.wav", &a, &da).await.unwrap();
        assert_eq!(store.size("t/c.wav").await.unwrap(), Some(15));
        // A retry of the same upload is fine.
        store.put("t/c.wav", &a, &da).await.unwrap();
        // Different bytes under the same key are refused and the stored object is kept.
        let b = dir.join("b.wav");
        std::fs::write(&b, b"another one").unwrap();
        let db = FileDigest::of(&b).await.unwrap();
        let err = store.put("t/c.wav", &b, &db).await.unwrap_err();
        assert!(matches!(err, RecordingError::Mismatch { .. }), "{err}");
        assert_eq!(
            std::fs::read(store.local_path("t/c.wav").unwrap()).unwrap(),
            b"first recording"
        );
        store.delete("t/c.wav").await.unwrap();
        assert_eq!(store.size("t/c.wav").await.unwrap(), None);
        store.delete("t/c.wav").await.unwrap();
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_root() {
        let (_dir, store) = setup("keys").await;
        for key in ["../x.wav", "/etc/passwd", "a/../../b", ""] {
            assert!(store.size(key).await.is_err(), "{key}");
        }
    }
}
