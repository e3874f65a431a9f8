//! The production engine: state in Redis, every change one Lua script call (`acd.lua`, loaded
//! with `redis::Script`, i.e. EVALSHA with an EVAL fallback) over keys hash-tagged per tenant
//! (`<prefix>{t:<tenant>}:...`), so a tenant lives in one Redis Cluster slot and no replica can
//! interleave a read-modify-write with another. Events go to a per-tenant stream (XADD with
//! `MAXLEN ~`). Time is the caller's `now_ms`, never Redis TTLs.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::StateEngine;
use crate::error::StateError;
use crate::model::*;

const ACD_LUA: &str = include_str!("acd.lua");

/// Adds or replaces a node entry unless the registry is full (one round trip, atomic).
const PUT_NODE_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// The Redis engine. Cheap to clone (the connection manager multiplexes and pipelines
/// concurrent requests over one connection and reconnects on its own).
#[derive(Clone)]
pub struct RedisEngine {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    cfg: EngineConfig,
    script: Script,
    put_node: Script,
}

#[derive(Deserialize)]
struct RawStats {
    waiting: u64,
    longest_wait_ms: u64,
    agents: AgentCounts,
    queued: u64,
    answered: u64,
    abandoned: u64,
    left_within_sl: u64,
    wait_sum: u64,
    aht_ms: u64,
}

fn backend(msg: impl Into<String>) -> StateError {
    StateError::Backend(msg.into())
}

/// One stream entry holds the events of one command as a JSON array; event `i` of entry
/// `X` has id `X/i`.
fn parse_entry(entry_id: &str, json: &str) -> Result<Vec<Event>, StateError> {
    let mut events: Vec<Event> = serde_json::from_str(json)?;
    for (i, e) in events.iter_mut().enumerate() {
        e.id = format!("{entry_id}/{i}");
    }
    Ok(events)
}

/// Split an event id into its stream entry id and index (`X` alone means "all of X").
fn split_event_id(id: &str) -> (&str, Option<usize>) {
    match id.split_once('/') {
        Some((entry, i)) => (entry, i.parse().ok()),
        None => (id, None),
    }
}

type StreamEntries = Vec<(String, Vec<String>)>;

/// Events of `entries`, skipping those at or before `after` (an event id).
fn entries_to_events(
    entries: StreamEntries,
    after: Option<&str>,
) -> Result<Vec<Event>, StateError> {
    let (after_entry, after_idx) = after.map_or(("", None), split_event_id);
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let Some(json) = fields
            .chunks(2)
            .find(|kv| kv[0] == "e")
            .and_then(|kv| kv.get(1))
        else {
            continue;
        };
        for (i, e) in parse_entry(&id, json)?.into_iter().enumerate() {
            if id == after_entry && after_idx.is_none_or(|a| i <= a) {
                continue;
            }
            out.push(e);
        }
    }
    Ok(out)
}

impl RedisEngine {
    /// Connect with the default [`EngineConfig`]. `key_prefix` namespaces every key (tests and
    /// the bench use a random one).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StateError> {
        Self::connect_with(url, key_prefix, EngineConfig::default()).await
    }

    /// Connect with an explicit configuration.
    /// The control bus on this engine's Redis, under its key prefix.
    pub fn bus(&self) -> crate::RedisBus {
        crate::RedisBus::new(self.client.clone(), self.conn.clone(), &self.prefix)
    }

    pub async fn connect_with(
        url: &str,
        key_prefix: &str,
        cfg: EngineConfig,
    ) -> Result<Self, StateError> {
        if key_prefix.contains(['{', '}']) || key_prefix.chars().any(char::is_whitespace) {
            return Err(StateError::Invalid(format!(
                "bad key prefix {key_prefix:?}"
            )));
        }
        let client = redis::Client::open(url)?;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), mcfg).await?;
        Ok(Self {
            client,
            conn,
            prefix: key_prefix.to_string(),
            cfg,
            script: Script::new(ACD_LUA),
            put_node: Script::new(PUT_NODE_LUA),
        })
    }

    /// The key base of a tenant: `<prefix>{t:<tenant>}:`.
    pub fn tenant_base(&self, tenant: &TenantId) -> String {
        format!("{}{{t:{}}}:", self.prefix, tenant)
    }

    fn key(&self, tenant: &TenantId, name: &str) -> String {
        format!("{}{}", self.tenant_base(tenant), name)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        tenant: &TenantId,
        now: u64,
        op: &str,
        args: Vec<String>,
    ) -> Result<T, StateError> {
        let base = self.tenant_base(tenant);
        let mut inv = self.script.prepare_invoke();
        for k in [
            "agents", "calls", "queues", "leases", "wrap", "pres", "nodes", "events", "sentinel",
        ] {
            inv.key(format!("{base}{k}"));
        }
        let seed = u64::from(rand::random::<u32>()) % 2_147_483_646 + 1;
        inv.arg(&base)
            .arg(now)
            .arg(seed)
            .arg(self.cfg.presence_ttl_ms)
            .arg(self.cfg.node_ttl_ms)
            .arg(self.cfg.missed_limit)
            .arg(self.cfg.event_maxlen)
            .arg(self.cfg.scan_limit)
            .arg(op);
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// The cluster's node registry: one hash, node id -> JSON entry.
    fn nodes_key(&self) -> String {
        format!("{}{{cluster}}:nodes", self.prefix)
    }

    /// Delete the cluster keys under this engine's prefix (tests).
    pub async fn purge_cluster(&self) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.nodes_key()).await?;
        Ok(())
    }

    /// Delete every key under this engine's prefix for `tenant` (tests and the bench).
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, StateError> {
        let pattern = format!("{}*", redis_glob_escape(&self.tenant_base(tenant)));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                n += keys.len() as u64;
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }
}

fn redis_glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "*?[]\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn num(s: &str) -> u64 {
    s.parse::<f64>().map(|f| f as u64).unwrap_or(0)
}

#[async_trait]
impl StateEngine for RedisEngine {
    async fn exec(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        cmds: Vec<Command>,
    ) -> Result<Vec<CommandResult>, StateError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let args = cmds
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let (entry, json, raw): (String, String, Vec<Vec<String>>) =
            self.invoke(tenant, now_ms, "exec", args).await?;
        let mut events = if entry.is_empty() {
            Vec::new()
        } else {
            parse_entry(&entry, &json)?
        }
        .into_iter();
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            match r.first().map(String::as_str) {
                Some("ok") => {
                    let count: usize = r.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
                    out.push(Ok(events.by_ref().take(count).collect()));
                }
                Some("err") => {
                    let e: StateError = serde_json::from_str(r.get(1).map_or("", String::as_str))
                        .unwrap_or_else(|e| backend(format!("bad error from script: {e}")));
                    out.push(Err(e));
                }
                _ => return Err(backend("malformed script reply")),
            }
        }
        Ok(out)
    }

    async fn agent(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
    ) -> Result<Option<AgentView>, StateError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn
            .hgetall(self.key(tenant, &format!("a:{agent}")))
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| h.get(k).map(String::as_str).unwrap_or("");
        let status: AgentStatus =
            serde_json::from_value(serde_json::Value::String(get("st").into()))?;
        let opt = |k: &str| Some(get(k).to_string()).filter(|s| !s.is_empty());
        Ok(Some(AgentView {
            agent: agent.clone(),
            status,
            reason: opt("reason"),
            call: opt("call").map(CallId::parse).transpose()?,
            since_ms: num(get("since")),
            wrap_until_ms: opt("wrap").map(|s| num(&s)),
            presence_until_ms: num(get("pres")),
            conn: opt("conn").map(ConnId::parse).transpose()?,
            missed: num(get("missed")) as u32,
            calls_handled: num(get("handled")),
            talk_ms: num(get("talk")),
        }))
    }

    async fn call(
        &self,
        tenant: &TenantId,
        call: &CallId,
        now_ms: u64,
    ) -> Result<Option<CallView>, StateError> {
        let v: Option<Vec<String>> = self
            .invoke(tenant, now_ms, "call", vec![call.to_string()])
            .await?;
        let Some(v) = v else { return Ok(None) };
        // 10 fields from a script before the caller was kept, 11 since.
        if !(10..=11).contains(&v.len()) {
            return Err(backend("malformed call view"));
        }
        let status: CallStatus = serde_json::from_value(serde_json::Value::String(v[1].clone()))?;
        let pos: i64 = v[3].parse().unwrap_or(-1);
        let eta: i64 = v[4].parse().unwrap_or(-1);
        Ok(Some(CallView {
            call: call.clone(),
            queue: QueueId::parse(v[0].clone())?,
            status,
            agents: v[2]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(AgentId::parse)
                .collect::<Result<_, _>>()?,
            position: (pos >= 0).then_some(pos as u64),
            eta_ms: (eta >= 0).then_some(eta as u64),
            callback: v[5] == "1",
            priority: num(&v[6]) as u8,
            enqueued_at_ms: num(&v[7]),
            entered_at_ms: num(&v[8]),
            node: NodeId::parse(v[9].clone())?,
            caller: v.get(10).filter(|c| !c.is_empty()).cloned(),
        }))
    }

    async fn queue_stats(
        &self,
        tenant: &TenantId,
        queue: &QueueId,
        now_ms: u64,
    ) -> Result<QueueStats, StateError> {
        let json: String = self
            .invoke(tenant, now_ms, "stats", vec![queue.to_string()])
            .await?;
        if json.contains("\"error\"") {
            return Err(StateError::UnknownQueue(queue.to_string()));
        }
        let s: RawStats = serde_json::from_str(&json)?;
        Ok(QueueStats {
            queue: queue.clone(),
            waiting: s.waiting,
            longest_wait_ms: s.longest_wait_ms,
            agents: s.agents,
            queued: s.queued,
            answered: s.answered,
            abandoned: s.abandoned,
            left_within_sl: s.left_within_sl,
            service_level: (s.queued > 0).then(|| s.left_within_sl as f64 / s.queued as f64),
            asa_ms: (s.answered > 0).then(|| s.wait_sum / s.answered),
            abandon_rate: (s.queued > 0).then(|| s.abandoned as f64 / s.queued as f64),
            aht_ms: s.aht_ms,
        })
    }

    async fn reconcile(&self, tenant: &TenantId, now_ms: u64) -> Result<Vec<Fix>, StateError> {
        let (fixes, _events): (Vec<String>, Vec<String>) =
            self.invoke(tenant, now_ms, "reconcile", Vec::new()).await?;
        Ok(fixes
            .chunks(2)
            .filter_map(|kv| match kv {
                [kind, subject] => Some(Fix {
                    kind: kind.clone(),
                    subject: subject.clone(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn events_since(
        &self,
        tenant: &TenantId,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, StateError> {
        let start = match after_id.map(split_event_id) {
            Some((entry, Some(_))) => entry.to_string(),
            Some((entry, None)) => format!("({entry}"),
            None => "-".to_string(),
        };
        let mut conn = self.conn.clone();
        let entries: StreamEntries = redis::cmd("XRANGE")
            .arg(self.key(tenant, "events"))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await?;
        let mut events = entries_to_events(entries, after_id)?;
        events.truncate(limit);
        Ok(events)
    }

    async fn subscribe(
        &self,
        tenant: &TenantId,
        after_id: Option<String>,
    ) -> Result<mpsc::Receiver<Event>, StateError> {
        let key = self.key(tenant, "events");
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        // backlog after `after_id` first (it may end inside a stream entry)
        let mut backlog = Vec::new();
        if let Some(after) = &after_id {
            let mut cursor = after.clone();
            loop {
                let page = self.events_since(tenant, Some(&cursor), 1000).await?;
                let Some(last) = page.last() else { break };
                cursor = last.id.clone();
                backlog.extend(page);
            }
        }
        let mut last = match (backlog.last(), &after_id) {
            (Some(e), _) => split_event_id(&e.id).0.to_string(),
            (None, Some(id)) => split_event_id(id).0.to_string(),
            (None, None) => {
                let newest: StreamEntries = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                newest
                    .into_iter()
                    .next()
                    .map_or_else(|| "0-0".to_string(), |(id, _)| id)
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            for e in backlog {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            loop {
                let reply: redis::RedisResult<Option<Vec<(String, StreamEntries)>>> =
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(500)
                        .arg("BLOCK")
                        .arg(1000)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(&last)
                        .query_async(&mut conn)
                        .await;
                match reply {
                    Ok(Some(streams)) => {
                        for (_, entries) in streams {
                            if let Some((id, _)) = entries.last() {
                                last = id.clone();
                            }
                            match entries_to_events(entries, None) {
                                Ok(events) => {
                                    for e in events {
                                        if tx.send(e).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "bad event in stream"),
                            }
                        }
                    }
                    Ok(None) => {
                        if tx.is_closed() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event subscription read failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn set_contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        binding: &str,
        expires_at_ms: u64,
    ) -> Result<(), StateError> {
        crate::check_contact(binding)?;
        let key = self.key(tenant, &format!("contact:{agent}"));
        // The expiry travels in the value (engines run in the caller's time); PX is only the
        // store's own cleanup, a day past the expiry at most.
        let value = format!("{expires_at_ms}|{binding}");
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(86_400_000u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        now_ms: u64,
    ) -> Result<Option<String>, StateError> {
        let key = self.key(tenant, &format!("contact:{agent}"));
        let mut conn = self.conn.clone();
        let v: Option<String> = conn.get(&key).await?;
        Ok(v.and_then(|v| {
            let (exp, binding) = v.split_once('|')?;
            (exp.parse::<u64>().ok()? > now_ms).then(|| binding.to_owned())
        }))
    }

    async fn clear_contact(&self, tenant: &TenantId, agent: &AgentId) -> Result<(), StateError> {
        let key = self.key(tenant, &format!("contact:{agent}"));
        let mut conn = self.conn.clone();
        let _: () = conn.del(&key).await?;
        Ok(())
    }

    fn control_bus(&self) -> std::sync::Arc<dyn crate::ControlBus> {
        std::sync::Arc::new(self.bus())
    }

    async fn epoch(&self, tenant: &TenantId) -> Result<String, StateError> {
        let key = self.key(tenant, "sentinel");
        let mut conn = self.conn.clone();
        let fresh = format!("{:016x}", rand::random::<u64>());
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let v: Option<String> = conn.get(&key).await?;
        v.ok_or_else(|| backend("sentinel vanished"))
    }

    async fn put_node(&self, info: &NodeInfo) -> Result<(), StateError> {
        info.check()?;
        let json = serde_json::to_string(info)?;
        let mut conn = self.conn.clone();
        let added: i64 = self
            .put_node
            .key(self.nodes_key())
            .arg(info.node.as_str())
            .arg(json)
            .arg(MAX_NODES)
            .invoke_async(&mut conn)
            .await?;
        if added == 0 {
            return Err(StateError::Invalid("node registry full".into()));
        }
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>, StateError> {
        let key = self.nodes_key();
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(&key).await?;
        let mut live = Vec::new();
        let mut forget = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<NodeInfo>(&json) {
                Ok(n) if n.expires_at_ms > now_ms => live.push(n),
                Ok(n) if n.expires_at_ms.saturating_add(crate::NODE_FORGET_MS) > now_ms => {}
                _ => forget.push(id),
            }
        }
        if !forget.is_empty() {
            let _: () = conn.hdel(&key, forget).await?;
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(live)
    }

    async fn remove_node(&self, node: &NodeId) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hdel(self.nodes_key(), node.as_str()).await?;
        Ok(())
    }
}
