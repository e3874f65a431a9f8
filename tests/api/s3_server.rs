//! A real S3-compatible server for the recording tests: `s3s-fs` (installed by `scripts/test`)
//! on a free loopback port with its own root directory. Tests fail when it is missing.

use std::path::PathBuf;
use std::time::Duration;

pub const ACCESS_KEY: &str = "AKSWITCHBOARDTEST";
pub const SECRET_KEY: &str = "SKSWITCHBOARDTEST";
pub const BUCKET: &str = "recordings";

pub struct S3Server {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_S3S_FS") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = [
        home.join(".cargo/bin/s3s-fs"),
        "/usr/local/bin/s3s-fs".into(),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("s3s-fs is not installed: run scripts/test")
}

impl S3Server {
    /// Starts a server with an empty bucket.
    pub async fn start() -> Self {
        let root = std::env::temp_dir().join(format!("sb-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).expect("s3 root");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let mut s = Self {
            child: None,
            port,
            root,
        };
        s.resume().await;
        let store = switchboard_recording::S3Store::new(&s.config()).expect("s3 client");
        store.ensure_bucket().await.expect("bucket");
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Recording settings for this server (S3 store, fast retries), spool in `spool`.
    pub fn config(&self) -> switchboard_recording::RecordingsConfig {
        switchboard_recording::RecordingsConfig {
            enabled: Some(true),
            store: switchboard_recording::StoreKind::S3,
            bucket: BUCKET.into(),
            endpoint: Some(self.endpoint()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            prefix: "rec/".into(),
            retry_initial_ms: 200,
            retry_max_ms: 2_000,
            spool_dir: Some(self.root.with_extension("spool")),
            ..Default::default()
        }
    }

    /// The stored object's bytes, read from the server's disk.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(BUCKET).join(key)).ok()
    }

    /// Stops the server (S3 is down).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) {
        let child = tokio::process::Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting s3s-fs");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("s3s-fs did not listen on {}", self.port);
    }
}
