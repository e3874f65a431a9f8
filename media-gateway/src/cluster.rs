//! The node as one member of a gateway cluster: its entry in the state engine's node registry
//! (heartbeat, capacity, current calls, draining), where a new carrier call is placed
//! ([`place`], pure), drain mode, and the crash journal that turns calls cut by a crash into
//! CDRs when the node starts again.
//!
//! Spreading policy (`gateway.spread`): carriers spread calls over the nodes' addresses
//! themselves (DNS SRV or a list of trunk addresses) and fail over on 503. A node refuses a new
//! call with 503 and `Retry-After` when it is draining or full, so the carrier retries on the
//! next address. With `spread = "redirect"` a node that is draining, full, or holds
//! `spread_margin` calls more than the least-loaded live node answers 302 with that node's
//! address instead (for carriers and SBCs that follow redirects).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_state::NodeInfo;

/// How a node spreads new carrier calls (`gateway.spread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Take the call unless draining or full (then 503 with Retry-After).
    #[default]
    Refuse,
    /// Redirect (302) to the least-loaded live node when draining, full or much busier.
    Redirect,
}

/// Where a new carrier call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node takes it.
    Here,
    /// 302 to this node's SIP address.
    Redirect(String),
    /// 503 with Retry-After (seconds).
    Refuse {
        retry_after_s: u32,
        reason: &'static str,
    },
}

/// This node's view of itself when a call arrives.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub calls: u32,
    pub capacity: u32,
    pub draining: bool,
}

/// Decides where a new carrier call goes, from this node's load and the live nodes (which may
/// include this node's own entry, named `me`).
pub fn place(me: &str, load: Load, live: &[NodeInfo], spread: Spread, margin: u32) -> Placement {
    let full = load.calls >= load.capacity;
    let refuse = |reason: &'static str| Placement::Refuse {
        retry_after_s: if reason == "draining" { 30 } else { 5 },
        reason,
    };
    let must_leave = load.draining || full;
    if spread == Spread::Refuse {
        return match (load.draining, full) {
            (true, _) => refuse("draining"),
            (_, true) => refuse("node full"),
            _ => Placement::Here,
        };
    }
    let best = live
        .iter()
        .filter(|n| n.node.as_str() != me && !n.draining && n.calls < n.capacity)
        .min_by_key(|n| (n.calls, n.node.clone()));
    match best {
        Some(n) if must_leave || load.calls >= n.calls.saturating_add(margin.max(1)) => {
            Placement::Redirect(n.sip_addr.clone())
        }
        _ if load.draining => refuse("draining"),
        _ if full => refuse("node full"),
        _ => Placement::Here,
    }
}

/// Drain state of the node, shared by the dispatcher, the heartbeat and the admin endpoint.
#[derive(Debug, Default)]
pub struct Cluster {
    draining: AtomicBool,
    exit_when_idle: AtomicBool,
    /// The live nodes as of the last heartbeat (placement reads this, not the engine).
    live: Mutex<Vec<NodeInfo>>,
}

impl Cluster {
    pub fn drain(&self, exit_when_idle: bool) {
        self.draining.store(true, Ordering::SeqCst);
        if exit_when_idle {
            self.exit_when_idle.store(true, Ordering::SeqCst);
        }
    }

    /// Takes calls again (a drain called off).
    pub fn undrain(&self) {
        self.draining.store(false, Ordering::SeqCst);
        self.exit_when_idle.store(false, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn exit_when_idle(&self) -> bool {
        self.exit_when_idle.load(Ordering::SeqCst)
    }

    pub fn set_live(&self, nodes: Vec<NodeInfo>) {
        if let Ok(mut l) = self.live.lock() {
            *l = nodes;
        }
    }

    pub fn live(&self) -> Vec<NodeInfo> {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What the journal keeps of a call in progress: enough for its CDR after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub tenant: uuid::Uuid,
    pub call_id: String,
    /// The id the engine knows the call by.
    pub engine_call: String,
    pub from_number: String,
    pub to_number: String,
    pub queue_id: Option<uuid::Uuid>,
    pub agent_id: Option<uuid::Uuid>,
    pub started_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
}

/// Largest journal file read back (anything bigger is not ours).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024;

/// One small file per call in progress, `<dir>/<call id>.json`, written at call start and
/// rewritten in place at answer (one write: a killed process leaves the old or the new entry),
/// removed once the call's CDR is written. Files left at start are calls a crash cut.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, call_id: &str) -> Option<PathBuf> {
        // Call ids are our own UUIDs; anything else never names a file.
        let safe = !call_id.is_empty()
            && call_id.len() <= 64
            && call_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        safe.then(|| self.dir.join(format!("{call_id}.json")))
    }

    pub fn write(&self, entry: &JournalEntry) -> std::io::Result<()> {
        let Some(path) = self.path(&entry.call_id) else {
            return Err(std::io::Error::other("bad call id"));
        };
        let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        // In place, one write: a process killed at any point leaves the old entry or the new
        // one (a single small write is never half done by a process's death; the journal
        // covers crashes of the process, not of the machine: it is not synced). A temporary
        // file and a rename per write made two inode creations per call, and at hundreds of
        // calls a second ext4's search for free inodes became the gateway's largest cost
        // (`scripts/bench cps`, perf: `recently_deleted` under `ext4_create`).
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut record = json;
        // Pad over a longer previous entry instead of truncating (truncate-then-write could be
        // cut between the two): JSON ignores trailing whitespace.
        let old_len = f.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        if old_len > record.len() {
            record.resize(old_len, b' ');
        }
        f.write_all(&record)
    }

    pub fn remove(&self, call_id: &str) {
        if let Some(path) = self.path(call_id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The entries a previous run left, with the time each was last written (the last moment
    /// the call was known to be up). Unreadable files are reported and skipped.
    pub fn leftovers(&self) -> Vec<(JournalEntry, DateTime<Utc>)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in dir.flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let read = f
                .metadata()
                .ok()
                .filter(|m| m.len() <= MAX_JOURNAL_BYTES)
                .and_then(|m| {
                    let entry: JournalEntry =
                        serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                    let at = m.modified().ok().map(DateTime::<Utc>::from)?;
                    Some((entry, at))
                });
            match read {
                Some(e) => out.push(e),
                None => {
                    tracing::warn!(file = %path.display(), "unreadable call journal entry, removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use switchboard_state::NodeId;

    fn node(id: &str, calls: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            node: NodeId::parse(id.to_owned()).unwrap(),
            sip_addr: format!("{id}:5060"),
            trunk_addr: format!("{id}:5060"),
            capacity: 10,
            calls,
            draining,
            expires_at_ms: 1,
        }
    }

    const IDLE: Load = Load {
        calls: 0,
        capacity: 10,
        draining: false,
    };

    #[test]
    fn refuse_policy_takes_calls_until_draining_or_full() {
        let live = [node("a", 0, false), node("b", 0, false)];
        assert_eq!(place("a", IDLE, &live, Spread::Refuse, 3), Placement::Here);
        let draining = Load {
            draining: true,
            ..IDLE
        };
        assert!(matches!(
            place("a", draining, &live, Spread::Refuse, 3),
            Placement::Refuse {
                reason: "draining",
                ..
            }
        ));
        let full = Load { calls: 10, ..IDLE };
        assert!(matches!(
            place("a", full, &live, Spread::Refuse, 3),
            Placement::Refuse {
                reason: "node full",
                ..
            }
        ));
    }

    #[test]
    fn redirect_policy_sends_calls_to_the_least_loaded_live_node() {
        let live = [
            node("a", 5, false),
            node("b", 4, false),
            node("c", 2, false),
            node("d", 0, true),
        ];
        let me = Load { calls: 5, ..IDLE };
        assert_eq!(
            place("a", me, &live, Spread::Redirect, 3),
            Placement::Redirect("c:5060".into()),
            "3 more than the least loaded (a draining node does not count)"
        );
        let me = Load { calls: 4, ..IDLE };
        assert_eq!(place("a", me, &live, Spread::Redirect, 3), Placement::Here);
        let draining = Load {
            draining: true,
            ..IDLE
        };
        assert_eq!(
            place("a", draining, &live, Spread::Redirect, 3),
            Placement::Redirect("c:5060".into()),
            "a draining node sends even an idle call away"
        );
        let alone = [node("a", 0, true)];
        assert!(matches!(
            place("a", draining, &alone, Spread::Redirect, 3),
            Placement::Refuse { .. }
        ));
        let all_full = [node("a", 10, false), node("b", 10, false)];
        assert!(matches!(
            place(
                "a",
                Load { calls: 10, ..IDLE },
                &all_full,
                Spread::Redirect,
                3
            ),
            Placement::Refuse {
                reason: "node full",
                ..
            }
        ));
    }

    #[test]
    fn the_journal_keeps_entries_until_removed_and_refuses_foreign_names() {
        let dir = std::env::temp_dir().join(format!("sb-journal-{}", uuid::Uuid::new_v4()));
        let j = Journal::open(&dir).unwrap();
        let entry = JournalEntry {
            tenant: uuid::Uuid::new_v4(),
            call_id: uuid::Uuid::now_v7().to_string(),
            engine_call: "x".into(),
            from_number: "+1".into(),
            to_number: "+2".into(),
            queue_id: None,
            agent_id: None,
            started_at: Utc::now(),
            queued_at: None,
            answered_at: None,
        };
        assert!(j.write(&entry).is_ok());
        let mut bad = entry.clone();
        bad.call_id = "../escape".into();
        assert!(j.write(&bad).is_err());
        std::fs::write(dir.join("junk.json"), b"{not json").unwrap();
        let left = j.leftovers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, entry);
        j.remove(&entry.call_id);
        assert!(j.leftovers().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
