//! Layered, typed configuration: built-in defaults, then a TOML file (`--config`), then
//! `SWITCHBOARD_`-prefixed environment variables (nested keys with `__`, e.g.
//! `SWITCHBOARD_DATABASE__URL`), then command-line flags. Validated once at start; every
//! problem is reported with the key that caused it. Secrets may come from files (`secret_file`,
//! `url_file`) as Kubernetes mounts them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use switchboard_api::HttpSettings;
use switchboard_api::auth::{AuthSettings, JwtKey};

/// Help text listing every configuration key, shown by `--help`.
pub const CONFIG_HELP: &str = "\
Configuration keys (TOML file via --config, or env SWITCHBOARD_<KEY>, nested with __):
  http_addr                      listen address            [127.0.0.1:8080]  SWITCHBOARD_HTTP_ADDR
  data_dir                       SQLite file, recordings   [./data]          SWITCHBOARD_DATA_DIR
  log_format                     text | json               [text]            SWITCHBOARD_LOG_FORMAT
  worker_threads                 async worker threads; 0: one per CPU core  [0]
                                 (1 where the process shares a small machine with its database)
  database.url                   sqlite://... or postgres://...  [sqlite in data_dir]
                                                                             SWITCHBOARD_DATABASE__URL
  database.url_file              file holding database.url (secret mounts)
  database.max_connections       pool size                 [16]
  database.read_connections      PostgreSQL tenant-read connections, many reads in flight on each  [2]
  database.acquire_timeout_ms    wait for a pooled connection  [5000]
  auth.issuer / auth.audience    JWT iss / aud             [switchboard / switchboard-api]
  auth.access_ttl_s              access token lifetime     [600]
  auth.refresh_ttl_s             refresh token lifetime    [2592000]
  auth.keys                      [{kid, secret | secret_file}], first signs, all verify
                                 (unset: a key is generated in data_dir for single-node use)
  auth.revocation_cache_ms       how long a replica may trust a cached revocation state [1000]
  auth.argon2_memory_kib         password hash memory      [19456]
  auth.argon2_iterations         password hash passes      [2]
  http.max_body_bytes            request body limit        [65536]
  http.request_timeout_ms        per-request timeout       [30000]
  http.max_concurrent_requests   in-flight request limit   [1024]
  http.desk_dir                  the built agent desktop (tenant-admin/dist), served at /desk/
                                 [./tenant-admin/dist, else the source tree's]  SWITCHBOARD_HTTP__DESK_DIR
  http.max_event_streams_per_user / _per_tenant  open /v1/events/stream per replica  [4 / 2000]
  http.softphone_ws_url          the gateways' SIP over WebSocket URL as browsers reach it
                                 (wss://...): set, the desktop is the agents' phone (WebRTC)
                                 [`up`: its own gateway.ws_addr; else unset: desk phones]
                                                                             SWITCHBOARD_HTTP__SOFTPHONE_WS_URL
  http.softphone_sip_domain      browser phones' SIP URIs are sip:user@<tenant slug>.<this>  [sip.local]
  state.redis_url                Redis for agent/queue state (unset: in memory, one process)
                                                                             SWITCHBOARD_STATE__REDIS_URL
  state.key_prefix               Redis key namespace       [sb]
  state.presence_ttl_ms          agent session lifetime without heartbeat  [30000]
  state.tick_ms                  engine timer interval     [1000]
  gateway.sip_addr               SIP UDP+TCP listen address [127.0.0.1:5060] SWITCHBOARD_GATEWAY__SIP_ADDR
  gateway.advertised_ip          address in SDP/Contact    [the listen IP]
  gateway.rtp_port_min / _max    RTP port range            [20000 / 29999]
  gateway.node_id                this node in the state engine  [gw-1]
  gateway.ring_timeout_ms        agent ring time before the call requeues  [15000]
  gateway.trunk_sources          carrier source IPs allowed to send calls  [[\"127.0.0.1\"]]
  gateway.inbound_trunks         carriers identified by digest: [{name, realm, username, password, sources}]  [none]
  gateway.auth_secret            digest nonce secret shared by all nodes (>= 32 chars)
                                 (unset: generated per process, one node only)
  gateway.digest_md5_first       challenge MD5 before SHA-256 (MD5-only phones)  [false]
  gateway.min_expires_s / max_expires_s  registration lifetimes  [60 / 3600]
  gateway.max_cps / max_calls_in_setup   overload limits (503)   [200 / 2000]
  gateway.max_calls_per_tenant   concurrent calls per tenant on a node  [500]
  gateway.max_auth_failures / ban_s      failed auths before a ban, its length  [5 / 600]
  gateway.recordings.enabled     record bridged calls (two-channel WAV)  [on in `up`, off in `gateway`]
  gateway.recordings.spool_dir   recordings in progress and pending uploads  [<data_dir>/spool]
  gateway.recordings.store       local | s3                [local]
  gateway.recordings.local_dir   the local store           [<data_dir>/recordings]
  gateway.recordings.prefix      object key prefix (<prefix><tenant>/<call>.wav)  []
  gateway.recordings.bucket / endpoint / region  S3 bucket, S3-compatible endpoint URL
                                 (path-style; unset: AWS), region  [- / AWS / us-east-1]
  gateway.recordings.access_key_id / secret_access_key / secret_access_key_file  S3 keys
  gateway.recordings.multipart_threshold_bytes / part_size_bytes  [16 MiB / 8 MiB]
  gateway.recordings.retry_initial_ms / retry_max_ms  upload retry backoff  [500 / 30000]
  gateway.recordings.give_up_s   report recording.failed after this long (spool kept)  [21600]
  gateway.recordings.upload_concurrency  uploads at once  [8]
  gateway.recordings.playback_ttl_s  lifetime of playback URLs  [300]
  gateway.announcements_dir      WAV prompts for queue position/wait announcements  [off]
  gateway.metrics_addr           /metrics and /admin/{status,drain} of `switchboard gateway`  [off]
  gateway.capacity               most calls a node holds; past it new calls get 503  [1000]
  gateway.node_ttl_ms            a silent node is dead after this; its calls are reclaimed  [6000]
  gateway.trunk_addr             where peers hand this node calls for its phones  [SIP address]
  gateway.spread / spread_margin refuse (503 when draining/full) | redirect (302)  [refuse / 10]
  gateway.journal_dir            calls in progress, for CDRs after a crash  [<data_dir>/calls]
  gateway.tls.addr / cert_file / key_file  SIP over TLS listener (PEM files)  [off]
  gateway.ws_addr                SIP over WebSocket (RFC 7118) for browser agents  [off]
  gateway.ws.cert_file / key_file  WSS (PEM files); plain WS only on loopback unless ws.allow_plain
  gateway.ws.max_connections / max_connections_per_ip  WebSocket connections  [5000 / 50]
  gateway.ws.handshake_timeout_ms / ping_interval_s / idle_timeout_s  [5000 / 20 / 60]
  gateway.ws.max_message_bytes / max_messages_per_s / max_malformed  [32768 / 20 / 10]
  gateway.outbound_trunk.address / domain / username / password  carrier for outside calls  [none]
  gateway.hold_music             16-bit WAV played to queued callers  [a generated chime]
";

/// Top-level configuration keys (what `SWITCHBOARD_*` variables may name).
const CONFIG_KEYS: &[&str] = &[
    "http_addr",
    "data_dir",
    "log_format",
    "worker_threads",
    "database",
    "auth",
    "http",
    "state",
    "gateway",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http_addr: String,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Threads of the async runtime; 0: one per CPU core.
    pub worker_threads: usize,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub gateway: switchboard_gateway::GatewayConfig,
}

/// The agent/queue state engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Redis URL; unset: the in-memory engine (one process only).
    pub redis_url: Option<String>,
    /// Namespace of every Redis key (several deployments may share one Redis).
    pub key_prefix: String,
    /// An agent session without a heartbeat for this long is logged out.
    pub presence_ttl_ms: u64,
    /// How often this process runs the engine's timers.
    pub tick_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    pub read_connections: usize,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
    pub keys: Vec<KeyConfig>,
    pub revocation_cache_ms: u64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desk_dir: Option<PathBuf>,
    pub max_event_streams_per_user: usize,
    pub max_event_streams_per_tenant: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softphone_ws_url: Option<String>,
    pub softphone_sip_domain: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            worker_threads: 0,
            database: DatabaseConfig {
                url: None,
                url_file: None,
                max_connections: 16,
                read_connections: 2,
                acquire_timeout_ms: 5000,
            },
            auth: AuthConfig {
                issuer: "switchboard".into(),
                audience: "switchboard-api".into(),
                access_ttl_s: 600,
                refresh_ttl_s: 30 * 24 * 3600,
                keys: Vec::new(),
                revocation_cache_ms: 1000,
                argon2_memory_kib: 19 * 1024,
                argon2_iterations: 2,
            },
            http: HttpConfig {
                max_body_bytes: 64 * 1024,
                request_timeout_ms: 30_000,
                max_concurrent_requests: 1024,
                desk_dir: None,
                max_event_streams_per_user: 4,
                max_event_streams_per_tenant: 2000,
                softphone_ws_url: None,
                softphone_sip_domain: switchboard_api::routes::desk::DEFAULT_SIP_DOMAIN.into(),
            },
            state: StateConfig {
                redis_url: None,
                key_prefix: "sb".into(),
                presence_ttl_ms: 30_000,
                tick_ms: 1000,
            },
            gateway: switchboard_gateway::GatewayConfig::default(),
        }
    }
}

/// Flags that override the file and environment.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        let mut cfg: Config = fig
            .merge(
                // Only configuration keys: other SWITCHBOARD_* variables (SWITCHBOARD_CONFIG,
                // SWITCHBOARD_OPERATOR_PASSWORD, test settings) belong to other readers.
                Env::prefixed("SWITCHBOARD_")
                    .filter(|k| {
                        let k = k.as_str().to_ascii_lowercase();
                        CONFIG_KEYS.iter().any(|top| {
                            k == *top
                                || k.starts_with(&format!("{top}__"))
                                || k.starts_with(&format!("{top}."))
                        })
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        let rec = &mut cfg.gateway.recordings;
        rec.spool_dir
            .get_or_insert_with(|| cfg.data_dir.join("spool"));
        rec.local_dir
            .get_or_insert_with(|| cfg.data_dir.join("recordings"));
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.http_addr
            .parse::<SocketAddr>()
            .with_context(|| format!("http_addr: {:?} is not host:port", self.http_addr))?;
        if self.worker_threads > 1024 {
            bail!("worker_threads: must be 0 (one per CPU core) to 1024");
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            bail!("database.max_connections: must be 1 to 1000");
        }
        if !(1..=256).contains(&self.database.read_connections) {
            bail!("database.read_connections: must be 1 to 256");
        }
        if self.auth.access_ttl_s == 0 || self.auth.access_ttl_s > 3600 {
            bail!("auth.access_ttl_s: must be 1 to 3600 (access tokens stay short-lived)");
        }
        if self.auth.refresh_ttl_s < self.auth.access_ttl_s {
            bail!("auth.refresh_ttl_s: must be at least auth.access_ttl_s");
        }
        if self.auth.argon2_memory_kib < 8 {
            bail!("auth.argon2_memory_kib: must be at least 8");
        }
        if !(1..=10 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            bail!("http.max_body_bytes: must be 1 to 10485760");
        }
        if !(1..=64).contains(&self.http.max_event_streams_per_user) {
            bail!("http.max_event_streams_per_user: must be 1 to 64");
        }
        if !(1..=100_000).contains(&self.http.max_event_streams_per_tenant) {
            bail!("http.max_event_streams_per_tenant: must be 1 to 100000");
        }
        self.softphone().map_err(|e| anyhow::anyhow!("http.{e}"))?;
        if !(1000..=3_600_000).contains(&self.state.presence_ttl_ms) {
            bail!("state.presence_ttl_ms: must be 1000 to 3600000");
        }
        if !(50..=60_000).contains(&self.state.tick_ms) {
            bail!("state.tick_ms: must be 50 to 60000");
        }
        self.gateway.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http_addr.parse()?)
    }

    /// The database URL: explicit, from a file, or SQLite in the data directory.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.database.url {
            return Ok(u.clone());
        }
        if let Some(f) = &self.database.url_file {
            return Ok(std::fs::read_to_string(f)
                .with_context(|| format!("database.url_file: reading {}", f.display()))?
                .trim()
                .to_owned());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("data_dir: creating {}", self.data_dir.display()))?;
        Ok(format!(
            "sqlite://{}?mode=rwc",
            self.data_dir.join("switchboard.sqlite").display()
        ))
    }

    pub fn pool(&self) -> switchboard_db::PoolConfig {
        switchboard_db::PoolConfig {
            max_connections: self.database.max_connections,
            read_connections: self.database.read_connections,
            acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
        }
    }

    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_body_bytes: self.http.max_body_bytes,
            request_timeout: Duration::from_millis(self.http.request_timeout_ms),
            max_concurrent_requests: self.http.max_concurrent_requests,
            desk_dir: Some(self.desk_dir()),
            events: switchboard_api::routes::events::EventStreamSettings {
                max_per_user: self.http.max_event_streams_per_user,
                max_per_tenant: self.http.max_event_streams_per_tenant,
                ..Default::default()
            },
            // Validated at load.
            softphone: self.softphone().ok().flatten(),
        }
    }

    /// The browser phone's settings from `http.softphone_ws_url` (`None` when unset).
    pub fn softphone(
        &self,
    ) -> Result<Option<switchboard_api::routes::desk::SoftphoneSettings>, String> {
        self.http
            .softphone_ws_url
            .as_deref()
            .map(|url| {
                switchboard_api::routes::desk::SoftphoneSettings::new(
                    url,
                    &self.http.softphone_sip_domain,
                )
            })
            .transpose()
    }

    /// `switchboard up`'s browser phone when none is configured: its own gateway's WebSocket
    /// listener (`ws_addr`, the port it bound), reached at the advertised IP when it listens
    /// on every interface.
    pub fn local_softphone(
        &self,
        ws_addr: SocketAddr,
    ) -> Result<switchboard_api::routes::desk::SoftphoneSettings, String> {
        let scheme = if self.gateway.ws.secure() {
            "wss"
        } else {
            "ws"
        };
        let ip = if ws_addr.ip().is_unspecified() {
            self.gateway
                .advertised_ip
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
        } else {
            ws_addr.ip()
        };
        let url = format!("{scheme}://{}/", SocketAddr::new(ip, ws_addr.port()));
        switchboard_api::routes::desk::SoftphoneSettings::new(&url, &self.http.softphone_sip_domain)
    }

    /// Where the built agent desktop is: `http.desk_dir`, else `tenant-admin/dist` under the
    /// working directory (a clone's root, as `cargo run` has it), else in the source tree this
    /// binary was built from.
    pub fn desk_dir(&self) -> PathBuf {
        if let Some(d) = &self.http.desk_dir {
            return d.clone();
        }
        let here = PathBuf::from("tenant-admin/dist");
        if here.join("index.html").is_file() {
            return here;
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tenant-admin/dist")
    }

    /// Auth settings; with no key configured and `allow_generated`, uses (creating if needed) a
    /// random key in the data directory, which suits one node only.
    pub fn auth_settings(&self, allow_generated: bool) -> anyhow::Result<AuthSettings> {
        let mut keys = Vec::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            let secret = match (&k.secret, &k.secret_file) {
                (Some(s), None) => s.clone().into_bytes(),
                (None, Some(f)) => std::fs::read(f)
                    .with_context(|| format!("auth.keys[{i}].secret_file: {}", f.display()))?,
                _ => bail!("auth.keys[{i}]: set exactly one of secret, secret_file"),
            };
            keys.push(JwtKey {
                kid: k.kid.clone(),
                secret,
            });
        }
        if keys.is_empty() {
            if !allow_generated {
                bail!(
                    "auth.keys: no signing key configured; replicas must share one \
                     (SWITCHBOARD_AUTH__KEYS='[{{kid=\"k1\",secret_file=\"/run/secrets/jwt\"}}]')"
                );
            }
            keys.push(self.generated_key()?);
        }
        Ok(AuthSettings {
            issuer: self.auth.issuer.clone(),
            audience: self.auth.audience.clone(),
            access_ttl: Duration::from_secs(self.auth.access_ttl_s),
            refresh_ttl: Duration::from_secs(self.auth.refresh_ttl_s),
            keys,
            revocation_cache_ttl: Duration::from_millis(self.auth.revocation_cache_ms),
            argon2_memory_kib: self.auth.argon2_memory_kib,
            argon2_iterations: self.auth.argon2_iterations,
        })
    }

    fn generated_key(&self) -> anyhow::Result<JwtKey> {
        use base64::Engine;
        let path = self.data_dir.join("jwt-signing.key");
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("data_dir: creating {}", self.data_dir.display()))?;
        if !path.exists() {
            let secret = base64::engine::general_purpose::STANDARD
                .encode(switchboard_api::auth::random_bytes::<48>());
            write_private(&path, secret.as_bytes())?;
        }
        let secret = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(JwtKey {
            kid: "local".into(),
            secret,
        })
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

impl Config {
    /// The state engine this configuration names.
    pub async fn state_engine(
        &self,
    ) -> anyhow::Result<std::sync::Arc<dyn switchboard_state::StateEngine>> {
        let cfg = switchboard_state::EngineConfig {
            presence_ttl_ms: self.state.presence_ttl_ms,
            node_ttl_ms: self.gateway.node_ttl_ms,
            ..Default::default()
        };
        Ok(match &self.state.redis_url {
            Some(url) => std::sync::Arc::new(
                switchboard_state::RedisEngine::connect_with(url, &self.state.key_prefix, cfg)
                    .await
                    .with_context(|| "state.redis_url: connecting to Redis".to_string())?,
            ),
            None => std::sync::Arc::new(switchboard_state::MemoryEngine::new(cfg)),
        })
    }
}
