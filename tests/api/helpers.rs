//! Test harness: every test gets its own freshly migrated database (a new SQLite file, or a new
//! PostgreSQL database) and the api bound to port 0 on loopback.
//!
//! `SWITCHBOARD_TEST_DB` picks the backend: `sqlite` (default) or `postgres`; the README's test
//! command runs the suite once with each. `SWITCHBOARD_TEST_PG_URL` names the server
//! (default `postgres://root@127.0.0.1:5432/test`). A test that cannot reach its database fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use switchboard_api::auth::{AuthSettings, JwtKey, TokenService};
use switchboard_api::{AppState, HttpSettings};
use switchboard_db::sea_orm::{ConnectionTrait, Database as SeaDatabase};
use switchboard_db::{Database, PoolConfig};
use uuid::Uuid;

pub const TEST_SECRET: &[u8] = b"test-secret-test-secret-test-secret-0123";
pub const OLD_SECRET: &[u8] = b"old-secret-old-secret-old-secret-01234567";
pub const PASSWORD: &str = "correct horse battery";
pub const OPERATOR_EMAIL: &str = "op@platform.example.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("SWITCHBOARD_TEST_DB").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("SWITCHBOARD_TEST_DB={other}: expected sqlite or postgres"),
    }
}

pub fn pg_base_url() -> String {
    std::env::var("SWITCHBOARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates an empty PostgreSQL database for one test and returns its URL.
pub async fn fresh_pg_database() -> String {
    let base = pg_base_url();
    let admin = SeaDatabase::connect(base.as_str())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required: {e}"));
    let name = format!("sb_test_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{prefix}/{name}")
}

pub fn auth_settings() -> AuthSettings {
    AuthSettings {
        issuer: "switchboard".into(),
        audience: "switchboard-api".into(),
        access_ttl: Duration::from_secs(600),
        refresh_ttl: Duration::from_secs(3600),
        keys: vec![
            JwtKey {
                kid: "k2".into(),
                secret: TEST_SECRET.to_vec(),
            },
            JwtKey {
                kid: "k1".into(),
                secret: OLD_SECRET.to_vec(),
            },
        ],
        // Revocations take effect at once in tests: this process made them.
        revocation_cache_ttl: Duration::from_millis(1000),
        argon2_memory_kib: 64,
        argon2_iterations: 1,
    }
}

pub struct TestApp {
    pub base: String,
    pub db: Database,
    pub engine: std::sync::Arc<dyn switchboard_state::StateEngine>,
    pub client: Client,
    /// The database URL (a child process of the binary can open it too).
    pub db_url: String,
    /// The Redis key prefix, when the engine is Redis.
    pub redis_prefix: Option<String>,
    /// The app's state (tests switch on optional parts, e.g. recording playback).
    pub state: AppState,
    _sqlite_dir: Option<TempDir>,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(HttpSettings::default()).await
}

pub async fn spawn_app_with(http: HttpSettings) -> TestApp {
    spawn_app_full(http, memory_engine(), None).await
}

/// The app on the Redis state engine (`SWITCHBOARD_TEST_REDIS_URL`, a random key prefix).
pub async fn spawn_app_on_redis() -> TestApp {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("sbtest:{}:", Uuid::new_v4().simple());
    let engine = switchboard_state::RedisEngine::connect(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required: {e}"));
    spawn_app_full(
        HttpSettings::default(),
        std::sync::Arc::new(engine),
        Some(prefix),
    )
    .await
}

async fn spawn_app_full(
    http: HttpSettings,
    engine: std::sync::Arc<dyn switchboard_state::StateEngine>,
    redis_prefix: Option<String>,
) -> TestApp {
    let backend = backend();
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!(
                "sb-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display());
            (url, Some(TempDir(dir)))
        }
        Backend::Postgres => (fresh_pg_database().await, None),
    };
    let db_url = url.clone();
    let db = Database::connect(&url, &PoolConfig::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    db.migrate().await.expect("migrate");
    let tokens = TokenService::new(auth_settings()).expect("token service");
    let state = AppState::new(db, tokens, http, engine.clone(), 30_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve_state = state.clone();
    tokio::spawn(async move {
        switchboard_api::serve(listener, serve_state, std::future::pending())
            .await
            .expect("serve");
    });
    switchboard_api::routes::tenants::ensure_operator(
        &state,
        switchboard_domain::Email::parse(OPERATOR_EMAIL).expect("email"),
        switchboard_domain::Password::parse(PASSWORD).expect("password"),
    )
    .await
    .expect("operator");
    TestApp {
        base: format!("http://{addr}"),
        db: state.db.clone(),
        engine,
        client: Client::new(),
        db_url,
        redis_prefix,
        state: state.clone(),
        _sqlite_dir: dir,
    }
}

/// A tenant made through the API, with a token per role.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: Uuid,
    pub admin: String,
    pub supervisor: String,
    pub agent: String,
    pub admin_id: Uuid,
    pub agent_id: Uuid,
}

impl TestApp {
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        split(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send_json(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send_json(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send_json(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn login(&self, tenant: &str, email: &str) -> Value {
        let (status, body) = self
            .send_json(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"tenant": tenant, "email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {tenant}/{email}: {body}");
        body
    }

    /// Writes a finished call (CDR with a caller and an agent leg) for `tenant`, as the gateway
    /// would; returns the CDR's id.
    pub async fn call_record(&self, tenant: uuid::Uuid, call_id: &str, from: &str) -> uuid::Uuid {
        self.call_record_by(tenant, call_id, from, None).await
    }

    /// [`Self::call_record`] for a call `agent` took.
    pub async fn call_record_by(
        &self,
        tenant: uuid::Uuid,
        call_id: &str,
        from: &str,
        agent: Option<uuid::Uuid>,
    ) -> uuid::Uuid {
        use switchboard_db::calls::{CallRecord, LegRecord};
        let start = chrono::Utc::now() - chrono::Duration::seconds(60);
        let end = start + chrono::Duration::seconds(60);
        let leg = |role: &str, party: &str| LegRecord {
            role: role.into(),
            party: party.into(),
            agent_id: None,
            started_at: start,
            answered_at: Some(start),
            ended_at: end,
            sip_status: None,
            end_reason: "hangup".into(),
            media_stats: Some(json!({"mos": 4.2})),
            media: Some("rtp".into()),
            codec: Some("PCMU".into()),
        };
        let record = CallRecord {
            call_id: call_id.into(),
            direction: "inbound".into(),
            from_number: from.into(),
            to_number: "+14155550100".into(),
            queue_id: None,
            agent_id: agent,
            started_at: start,
            queued_at: Some(start),
            answered_at: Some(start),
            ended_at: end,
            hangup_cause: "normal_clearing".into(),
            hangup_side: "caller".into(),
            media_stats: Some(json!({"caller": {"mos": 4.2}})),
            legs: vec![leg("caller", from), leg("agent", "agent-x")],
        };
        let tx = self
            .db
            .tenant_txn(
                switchboard_domain::TenantId(tenant),
                switchboard_db::Access::Write,
            )
            .await
            .unwrap();
        assert!(tx.record_call(&record).await.unwrap());
        tx.commit().await.unwrap();
        let tx = self
            .db
            .tenant_txn(
                switchboard_domain::TenantId(tenant),
                switchboard_db::Access::Read,
            )
            .await
            .unwrap();
        let row = tx
            .first::<switchboard_db::entities::cdrs::Entity>(|q| {
                use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
                q.filter(switchboard_db::entities::cdrs::Column::CallId.eq(call_id))
            })
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        row.id
    }

    pub async fn operator_token(&self) -> String {
        token_of(&self.login("platform", OPERATOR_EMAIL).await)
    }

    /// Creates a tenant with an admin, a supervisor and an agent, each logged in.
    pub async fn tenant(&self, slug: &str, seat_limit: i32) -> TestTenant {
        let op = self.operator_token().await;
        let admin_email = format!("admin@{slug}.example.com");
        let (status, created) = self
            .post(
                "/v1/tenants",
                &op,
                json!({"slug": slug, "name": slug, "seat_limit": seat_limit,
                       "admin": {"email": admin_email, "display_name": "Admin", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let admin = token_of(&self.login(slug, &admin_email).await);
        let mut ids = Vec::new();
        for role in ["supervisor", "agent"] {
            let (status, u) = self
                .post(
                    "/v1/users",
                    &admin,
                    json!({"email": format!("{role}@{slug}.example.com"), "display_name": role,
                           "password": PASSWORD, "role": role}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{u}");
            ids.push(uuid(&u["id"]));
        }
        TestTenant {
            id: uuid(&created["tenant"]["id"]),
            supervisor: token_of(
                &self
                    .login(slug, &format!("supervisor@{slug}.example.com"))
                    .await,
            ),
            agent: token_of(&self.login(slug, &format!("agent@{slug}.example.com")).await),
            admin,
            admin_id: uuid(&created["admin"]["id"]),
            agent_id: ids[1],
        }
    }
}

pub async fn split(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn token_of(login: &Value) -> String {
    login["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))).expect("uuid")
}

/// Asserts a problem+json error with the given status and type slug.
pub fn assert_problem(status: StatusCode, body: &Value, want: StatusCode, slug: &str) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(
        body["type"],
        format!("urn:switchboard:problem:{slug}"),
        "body: {body}"
    );
}

pub fn memory_engine() -> std::sync::Arc<dyn switchboard_state::StateEngine> {
    std::sync::Arc::new(switchboard_state::MemoryEngine::new(Default::default()))
}

/// The gateway's check of browser agents' access tokens, wired to the api's rule exactly as
/// the binary wires it (`src/main.rs`, `agent_tokens`).
pub fn agent_tokens(state: AppState) -> switchboard_gateway::token::AgentTokenVerifier {
    use switchboard_api::error::ApiError;
    use switchboard_gateway::token::{TokenIdentity, TokenRefusal};
    std::sync::Arc::new(move |token: String| {
        let state = state.clone();
        Box::pin(async move {
            match switchboard_api::extract::user_of_access_token(&state, &token).await {
                Ok((tenant, user, _)) => Ok(TokenIdentity {
                    tenant: tenant.0,
                    user: user.0,
                }),
                Err(ApiError::Unauthorized(reason)) => Err(TokenRefusal::Invalid(reason)),
                Err(ApiError::TenantSuspended) => Err(TokenRefusal::Forbidden("tenant suspended")),
                Err(ApiError::Forbidden(reason)) => Err(TokenRefusal::Forbidden(reason)),
                Err(_) => Err(TokenRefusal::Unavailable),
            }
        })
    })
}
