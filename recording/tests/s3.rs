//! The S3 store against a real S3-compatible server: an `s3s-fs` process started per test on a
//! free loopback port with its own root directory (`scripts/test` installs the binary; the
//! tests fail without it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchboard_recording::{
    FileDigest, ObjectStore, RecordingError, RecordingsConfig, S3Store, StoreKind,
};

struct S3Server {
    child: tokio::process::Child,
    endpoint: String,
    dir: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_S3S_FS") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for p in [
        home.join(".cargo/bin/s3s-fs"),
        PathBuf::from("/usr/local/bin/s3s-fs"),
    ] {
        if p.exists() {
            return p;
        }
    }
    panic!("s3s-fs is not installed: run scripts/test (cargo install s3s-fs --features binary)");
}

async fn s3_server(name: &str) -> S3Server {
    let dir = std::env::temp_dir().join(format!("sb-s3-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(s3s_fs_bin())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "AKTEST", "--secret-key", "SKTEST"])
        .arg(dir.join("root"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting s3s-fs");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

fn cfg(server: &S3Server) -> RecordingsConfig {
    RecordingsConfig {
        enabled: Some(true),
        store: StoreKind::S3,
        bucket: "recordings".into(),
        endpoint: Some(server.endpoint.clone()),
        access_key_id: Some("AKTEST".into()),
        secret_access_key: Some("SKTEST".into()),
        multipart_threshold_bytes: 5 * 1024 * 1024,
        part_size_bytes: 5 * 1024 * 1024,
        ..RecordingsConfig::default()
    }
}

fn file(dir: &Path, name: &str, len: usize, seed: u8) -> PathBuf {
    let p = dir.join(name);
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn single_part_upload_is_confirmed_and_never_overwritten() {
    let server = s3_server("single").await;
    let store = S3Store::new(&cfg(&server)).unwrap();
    store.ensure_bucket().await.unwrap();
    let a = file(&server.dir, "a.wav", 300_000, 1);
    let da = FileDigest::of(&a).await.unwrap();
    store.put("t1/c1.wav", &a, &da).await.unwrap();
    assert_eq!(store.size("t1/c1.wav").await.unwrap(), Some(300_000));
    // The bytes on the server are the file's.
    let on_disk = server.dir.join("root/recordings/t1/c1.wav");
    assert_eq!(FileDigest::of(&on_disk).await.unwrap(), da);
    // Read back whole (prompts use this), bounded, and absent keys are None.
    let got = store
        .get("t1/c1.wav", 1 << 20)
        .await
        .unwrap()
        .expect("object");
    assert_eq!(got, std::fs::read(&a).unwrap());
    assert!(
        store.get("t1/c1.wav", 1_000).await.is_err(),
        "over the bound"
    );
    assert_eq!(store.get("t1/missing.wav", 1 << 20).await.unwrap(), None);

    // A retry after the object landed succeeds without writing again.
    store.put("t1/c1.wav", &a, &da).await.unwrap();
    // Different bytes under the same key: refused by If-None-Match, the object is kept.
    let b = file(&server.dir, "b.wav", 300_000, 2);
    let db = FileDigest::of(&b).await.unwrap();
    let err = store.put("t1/c1.wav", &b, &db).await.unwrap_err();
    assert!(matches!(err, RecordingError::Mismatch { .. }), "{err}");
    assert_eq!(FileDigest::of(&on_disk).await.unwrap(), da);

    // A wrong checksum is refused by the server (the body is checked against it).
    let wrong = FileDigest {
        size: da.size,
        sha256: "00".repeat(32),
    };
    // (s3s-fs leaves the refused body on disk, unlike S3; a retry would then be refused as
    // a conflict, which is still never a silent success.)
    let err = store.put("t1/c2.wav", &a, &wrong).await.unwrap_err();
    assert!(
        matches!(
            err,
            RecordingError::S3 {
                status: Some(400),
                ..
            }
        ),
        "{err}"
    );
    assert!(store.put("t1/c2.wav", &a, &wrong).await.is_err());

    store.delete("t1/c1.wav").await.unwrap();
    assert_eq!(store.size("t1/c1.wav").await.unwrap(), None);
}

#[tokio::test]
async fn large_files_go_in_parts_and_are_confirmed() {
    let server = s3_server("multi").await;
    let store = S3Store::new(&cfg(&server)).unwrap();
    store.ensure_bucket().await.unwrap();
    let big = file(&server.dir, "big.wav", 12 * 1024 * 1024 + 17, 3);
    let d = FileDigest::of(&big).await.unwrap();
    store.put("t1/big.wav", &big, &d).await.unwrap();
    let on_disk = server.dir.join("root/recordings/t1/big.wav");
    assert_eq!(FileDigest::of(&on_disk).await.unwrap(), d);
    // Retried after it landed: confirmed by the multipart ETag, not uploaded over.
    store.put("t1/big.wav", &big, &d).await.unwrap();
    let other = file(&server.dir, "other.wav", 12 * 1024 * 1024 + 17, 4);
    let od = FileDigest::of(&other).await.unwrap();
    assert!(matches!(
        store.put("t1/big.wav", &other, &od).await,
        Err(RecordingError::Mismatch { .. })
    ));
    assert_eq!(FileDigest::of(&on_disk).await.unwrap(), d);
}

#[tokio::test]
async fn presigned_urls_fetch_the_object_and_expire() {
    let server = s3_server("presign").await;
    let store: Arc<dyn ObjectStore> = Arc::new({
        let s = S3Store::new(&cfg(&server)).unwrap();
        s.ensure_bucket().await.unwrap();
        s
    });
    let a = file(&server.dir, "a.wav", 1_000, 5);
    let d = FileDigest::of(&a).await.unwrap();
    store.put("t1/c1.wav", &a, &d).await.unwrap();
    let url = store
        .presign_get("t1/c1.wav", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        std::fs::read(&a).unwrap()
    );
    // Tampering with the key invalidates the signature.
    let forged = url.replace("t1/c1.wav", "t1/c2.wav");
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403);
    // Expired.
    let short = store
        .presign_get("t1/c1.wav", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(reqwest::get(&short).await.unwrap().status(), 403);
}
