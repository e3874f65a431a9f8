//! Shared test helpers: engines with a private namespace, id shorthands.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use switchboard_state::*;

pub fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct Env {
    pub engine: Arc<dyn StateEngine>,
    pub redis: Option<RedisEngine>,
    pub tenant: TenantId,
}

impl Env {
    pub async fn cleanup(&self) {
        if let Some(r) = &self.redis {
            r.purge_tenant(&self.tenant).await.unwrap();
            r.purge_cluster().await.unwrap();
        }
    }
}

pub fn test_config() -> EngineConfig {
    EngineConfig {
        presence_ttl_ms: 60_000,
        node_ttl_ms: 600_000,
        missed_limit: 3,
        event_maxlen: 10_000,
        scan_limit: 200,
    }
}

fn random_tenant() -> TenantId {
    TenantId::parse(format!("t-{}", uuid::Uuid::new_v4().simple())).unwrap()
}

pub async fn memory_env() -> Env {
    Env {
        engine: Arc::new(MemoryEngine::new(test_config())),
        redis: None,
        tenant: random_tenant(),
    }
}

/// Fails (does not skip) when Redis is unreachable.
pub async fn redis_env() -> Env {
    let prefix = format!("sbtest:{}:", uuid::Uuid::new_v4().simple());
    let r = RedisEngine::connect_with(&redis_url(), &prefix, test_config())
        .await
        .unwrap_or_else(|e| panic!("redis unreachable at {}: {e}", redis_url()));
    Env {
        engine: Arc::new(r.clone()),
        redis: Some(r),
        tenant: random_tenant(),
    }
}

pub fn a(s: &str) -> AgentId {
    AgentId::parse(s).unwrap()
}
pub fn q(s: &str) -> QueueId {
    QueueId::parse(s).unwrap()
}
pub fn c(s: &str) -> CallId {
    CallId::parse(s).unwrap()
}
pub fn node() -> NodeId {
    NodeId::parse("gw1").unwrap()
}
