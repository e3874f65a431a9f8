//! The read pool's own logins (`pg_wire.rs`) against a real server that demands them.
//!
//! Why this module exists: the shared test server trusts every local connection, so it never
//! asks for a password, and the read pool's cleartext, MD5 and SCRAM-SHA-256 exchanges would
//! go untested there. Each test here starts a private PostgreSQL (initdb in a temporary
//! directory, its own port and socket directory) whose `pg_hba.conf` demands one method per
//! role, and logs in through the read pool as each role. The server's binaries must be
//! installed (`scripts/test` installs PostgreSQL): a test fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::entities::skills;
use crate::pg_wire::WireConn;
use sea_orm::Set;

/// A private PostgreSQL server, stopped and removed on drop.
struct PrivateServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// `(role, hba method, how its password is stored)`.
const ROLES: [(&str, &str, &str); 3] = [
    ("sb_scram", "scram-sha-256", "scram-sha-256"),
    ("sb_md5", "md5", "md5"),
    ("sb_cleartext", "password", "scram-sha-256"),
];
const PASSWORD: &str = "s3cret 'pw'";

/// The newest installed server's binary directory.
fn server_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("PostgreSQL server binaries under {root:?} are required: {e}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no PostgreSQL server (initdb) under {root:?}"))
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivateServer {
    /// Runs a server program; as root (CI), as the `postgres` user, which owns the directory
    /// (the server refuses to run as root).
    fn run(&self, program: &str, args: &[&str]) {
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let path = self.bin.join(program);
        let output = if as_root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap_or_else(|e| panic!("running {path:?}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("sb-pg-login-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = Self {
            bin: server_bin(),
            dir,
            port: free_tcp_port(),
        };
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&server.dir)
            .status();
        let data = server.dir.join("data");
        let data = data.to_str().unwrap();
        server.run(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut hba = String::from("local all postgres trust\n");
        for (role, method, _) in ROLES {
            hba.push_str(&format!("host all {role} 127.0.0.1/32 {method}\n"));
        }
        std::fs::write(Path::new(data).join("pg_hba.conf"), hba).unwrap();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            server.port,
            server.dir.to_str().unwrap()
        );
        server.run(
            "pg_ctl",
            &["-D", data, "-o", &options, "-w", "-t", "30", "-l"]
                .into_iter()
                .chain([server.dir.join("log").to_str().unwrap(), "start"])
                .collect::<Vec<_>>(),
        );
        for (role, _, stored) in ROLES {
            let password = PASSWORD.replace('\'', "''");
            server.psql(&[
                &format!("SET password_encryption = '{stored}'"),
                &format!("CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{password}'"),
                &format!("CREATE DATABASE {role} OWNER {role}"),
            ]);
        }
        server
    }

    /// Runs `statements` in order in one session as the superuser over the socket (trusted).
    fn psql(&self, statements: &[&str]) {
        let port = self.port.to_string();
        let socket = self.dir.to_str().unwrap();
        let mut args = vec![
            "-h",
            socket,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ];
        for statement in statements {
            args.extend(["-c", statement]);
        }
        self.run("psql", &args);
    }

    fn url(&self, role: &str, password: &str) -> String {
        let password: String = password
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!(
            "postgres://{role}:{password}@127.0.0.1:{}/{role}",
            self.port
        )
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if let Some(data) = data.to_str() {
            let _ = std::panic::catch_unwind(|| {
                self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
            });
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Each login method, through the read pool as the api uses it: connect, migrate, write a
/// tenant's row on the sea-orm side, then read it back (and count it) on the read pool, whose
/// connections authenticate with the role's method; a wrong password is refused with the
/// server's reason.
#[tokio::test]
async fn the_read_pool_logs_in_with_scram_md5_and_cleartext_passwords() {
    let server = PrivateServer::start();
    for (role, method, _) in ROLES {
        let url = server.url(role, PASSWORD);
        let db = Database::connect(
            &url,
            &PoolConfig {
                max_connections: 2,
                read_connections: 2,
                acquire_timeout: Duration::from_secs(10),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{role} ({method}): connect: {e}"));
        db.migrate().await.unwrap();
        let now = chrono::Utc::now();
        let tenant = crate::tests::make_tenant(&db, "login").await;
        let tx = db.tenant_txn(tenant, Access::Write).await.unwrap();
        tx.insert(skills::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            tenant_id: Set(tenant.0),
            name: Set(format!("via {method}")),
            created_at: Set(now),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let read = db.tenant_txn(tenant, Access::Read).await.unwrap();
        let rows = read
            .all::<skills::Entity>(|q| q)
            .await
            .unwrap_or_else(|e| panic!("{role} ({method}): tenant read: {e}"));
        assert_eq!(
            rows.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            [format!("via {method}")],
            "{role} ({method})"
        );
        assert_eq!(read.count::<skills::Entity>(|q| q).await.unwrap(), 1);
        read.commit().await.unwrap();
        assert!(
            db.read_statements_prepared() >= 1,
            "{role} ({method}): the read went through the read pool"
        );

        let config: tokio_postgres::Config = server.url(role, "not the password").parse().unwrap();
        let refused = WireConn::connect(&config, Duration::from_secs(10))
            .await
            .err()
            .unwrap_or_else(|| panic!("{role} ({method}): a wrong password was accepted"))
            .to_string();
        assert!(
            refused.contains("28P01") && refused.contains("password authentication failed"),
            "{role} ({method}): {refused}"
        );
        let config: tokio_postgres::Config =
            format!("postgres://{role}@127.0.0.1:{}/{role}", server.port)
                .parse()
                .unwrap();
        let refused = WireConn::connect(&config, Duration::from_secs(10))
            .await
            .err()
            .unwrap_or_else(|| panic!("{role} ({method}): no password was accepted"))
            .to_string();
        assert!(
            refused.contains("asks for a password"),
            "{role} ({method}): {refused}"
        );
    }
}
