//! `record-bench serve`: the relay of `relay-bench serve` (same UDP line protocol: `ping`,
//! `open ID CALLER AGENT`, `stats`, `quit`, so `relay-bench gen` drives it), optionally
//! recording every call the way the gateway does: relay tap -> mixer -> spool WAV -> upload to
//! S3 when the call ends. At `quit` it closes every call (the hang-up), waits for the uploads
//! and prints one `REC key=value ...` line: its own CPU seconds over its whole life (uploads
//! included), upload lag after hang-up (p50/p99), recordings stored/failed, bytes per
//! recorded minute. `scripts/bench-recording` runs it without and with recording.
//!
//! ```text
//! record-bench serve --control ADDR --ports MIN-MAX [--spool DIR --s3 http://HOST:PORT
//!   --bucket B --access-key K --secret-key S]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_media::g711::Law;
use switchboard_recording::{
    Pending, RecordingsConfig, S3Store, StoreKind, UploadSink, UploadState, Uploader,
};
use switchboard_relay::{Leg, Relay, RelayConfig, Session};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("serve") {
        eprintln!(
            "usage: record-bench serve --control ADDR --ports MIN-MAX [--spool DIR --s3 URL ...]"
        );
        return ExitCode::from(2);
    }
    let mut o = HashMap::new();
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            eprintln!("unexpected {k}");
            return ExitCode::from(2);
        };
        o.insert(k.to_owned(), it.next().cloned().unwrap_or_default());
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("record-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn opt<T: std::str::FromStr>(o: &HashMap<String, String>, key: &str) -> Res<T> {
    o.get(key)
        .ok_or_else(|| format!("--{key} missing"))?
        .parse()
        .map_err(|_| format!("--{key}: bad value"))
}

/// Counts what the uploader reports.
#[derive(Default)]
struct Tally {
    lags_ms: Mutex<Vec<u64>>,
    failed: Mutex<u64>,
    bytes: Mutex<u64>,
    duration_ms: Mutex<u64>,
}

#[async_trait::async_trait]
impl UploadSink for Tally {
    async fn update(&self, p: &Pending, s: UploadState, _r: Option<&str>) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        match s {
            UploadState::Stored => {
                if let Ok(mut l) = self.lags_ms.lock() {
                    l.push(now.saturating_sub(p.finished_at_ms));
                }
                if let Ok(mut b) = self.bytes.lock() {
                    *b += p.size;
                }
                if let Ok(mut d) = self.duration_ms.lock() {
                    *d += p.duration_ms;
                }
            }
            UploadState::Failed => {
                if let Ok(mut f) = self.failed.lock() {
                    *f += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime + stime in clock ticks (100 per second on Linux).
    (get(11) + get(12)) / 100.0
}

struct Recording {
    uploader: Uploader,
    tally: Arc<Tally>,
    done: mpsc::UnboundedSender<()>,
}

async fn serve(o: &HashMap<String, String>) -> Res<()> {
    let control: SocketAddr = opt(o, "control")?;
    let ports: String = opt(o, "ports")?;
    let (min, max) = ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .ok_or("--ports MIN-MAX")?;
    let mut cfg = RelayConfig::new(control.ip(), min, max);
    cfg.rtp_timeout = Duration::from_secs(120);
    let relay = Relay::new(cfg).map_err(|e| e.to_string())?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let recording = match o.get("s3") {
        Some(endpoint) => {
            let rc = RecordingsConfig {
                enabled: Some(true),
                spool_dir: Some(opt::<String>(o, "spool")?.into()),
                store: StoreKind::S3,
                bucket: opt(o, "bucket")?,
                endpoint: Some(endpoint.clone()),
                access_key_id: Some(opt(o, "access-key")?),
                secret_access_key: Some(opt(o, "secret-key")?),
                retry_initial_ms: 200,
                retry_max_ms: 2_000,
                ..RecordingsConfig::default()
            };
            rc.validate()?;
            let store = S3Store::new(&rc).map_err(|e| e.to_string())?;
            store.ensure_bucket().await.map_err(|e| e.to_string())?;
            let tally = Arc::new(Tally::default());
            let spool = rc.spool_dir.clone().ok_or("--spool")?;
            let uploader = Uploader::start(&rc, spool, Arc::new(store), tally.clone());
            Some(Recording {
                uploader,
                tally,
                done: done_tx,
            })
        }
        None => None,
    };
    let sock = UdpSocket::bind(control)
        .await
        .map_err(|e| format!("control {control}: {e}"))?;
    let mut sessions: Vec<Session> = Vec::new();
    let mut events = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["ping"] => "pong".to_string(),
            ["stats"] => "stats ".to_string(),
            ["quit"] => break,
            ["open", id, caller, agent] => {
                match open(&relay, id, caller, agent, recording.as_ref()).await {
                    Ok((s, ev)) => {
                        let r = format!(
                            "ok {id} {} {}",
                            s.local_addr(Leg::Caller).port(),
                            s.local_addr(Leg::Agent).port()
                        );
                        sessions.push(s);
                        events.push(ev);
                        r
                    }
                    Err(e) => format!("err {id} {e}"),
                }
            }
            _ => "err bad command".to_string(),
        };
        let _ = sock.send_to(reply.as_bytes(), from).await;
    }
    // Hang up every call; each recording then finishes and goes to the uploader.
    let calls = sessions.len();
    for s in sessions {
        let _ = s.close().await;
    }
    let started = Instant::now();
    let mut lost = 0u64;
    if let Some(rec) = &recording {
        let mut finished = 0;
        while finished < calls {
            match tokio::time::timeout(Duration::from_secs(120), done_rx.recv()).await {
                Ok(Some(())) => finished += 1,
                _ => break,
            }
        }
        // Wait for every upload (stored or failed), at most 5 minutes.
        loop {
            let stored = rec.tally.lags_ms.lock().map(|l| l.len()).unwrap_or(0) as u64;
            let failed = rec.tally.failed.lock().map(|f| *f).unwrap_or(0);
            if stored + failed >= calls as u64 || started.elapsed() > Duration::from_secs(300) {
                lost = (calls as u64).saturating_sub(stored);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let cpu = own_cpu_seconds();
    let (p50, p99, stored, bytes, minutes) = match &recording {
        Some(rec) => {
            let mut l = rec
                .tally
                .lags_ms
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            l.sort_unstable();
            let pct = |q: f64| {
                l.get(((l.len() as f64 * q).ceil() as usize).saturating_sub(1))
                    .map(|v| *v as f64 / 1000.0)
                    .unwrap_or(f64::NAN)
            };
            let bytes = rec.tally.bytes.lock().map(|b| *b).unwrap_or(0);
            let mins = rec.tally.duration_ms.lock().map(|d| *d).unwrap_or(0) as f64 / 60_000.0;
            (pct(0.5), pct(0.99), l.len(), bytes, mins)
        }
        None => (0.0, 0.0, 0, 0, 0.0),
    };
    let bytes_per_min = if minutes > 0.0 {
        bytes as f64 / minutes
    } else {
        0.0
    };
    println!(
        "REC calls={calls} recording={} cpu_s={cpu:.2} upload_lag_p50_s={p50:.3} \
         upload_lag_p99_s={p99:.3} stored={stored} lost={lost} bytes={bytes} \
         recorded_min={minutes:.2} bytes_per_min={bytes_per_min:.0}",
        recording.is_some()
    );
    Ok(())
}

async fn open(
    relay: &Relay,
    id: &str,
    caller: &str,
    agent: &str,
    rec: Option<&Recording>,
) -> Res<(Session, mpsc::Receiver<switchboard_relay::MediaEvent>)> {
    let caller: SocketAddr = caller.parse().map_err(|_| "caller address")?;
    let agent: SocketAddr = agent.parse().map_err(|_| "agent address")?;
    let (s, ev) = relay.open(id).map_err(|e| e.to_string())?;
    s.set_peer(Leg::Caller, caller, Law::Ulaw, Some(101))
        .await
        .map_err(|e| e.to_string())?;
    s.set_peer(Leg::Agent, agent, Law::Ulaw, Some(101))
        .await
        .map_err(|e| e.to_string())?;
    s.bridge().await.map_err(|e| e.to_string())?;
    if let Some(rec) = rec {
        let (tx, rx) = switchboard_relay::tap(switchboard_gateway::record::TAP_CAPACITY);
        s.tap(Some(tx)).await.map_err(|e| e.to_string())?;
        let call_id = uuid::Uuid::new_v4().to_string();
        let tenant = "bench";
        let (path, _) = switchboard_recording::spool_paths(rec.uploader.spool(), tenant, &call_id);
        let uploader = rec.uploader.clone();
        let tally = rec.tally.clone();
        let done = rec.done.clone();
        tokio::spawn(async move {
            // No pauses in the bench; the sender stays alive for the call.
            let (_control, control_rx) = mpsc::channel(1);
            if let Some(done) = switchboard_gateway::record::record(path, rx, control_rx).await {
                let _ = uploader
                    .finished(tally.as_ref(), tenant, &call_id, done.frames, done.pauses)
                    .await;
            }
            let _ = done.send(());
        });
    }
    Ok((s, ev))
}
