//! One gateway node at run time: the SIP endpoint (rsipstack transactions and dialogs over our
//! framed UDP socket and TCP), the request dispatcher, the registrar, and the per-tenant feed
//! of state-engine events that drives queued calls. Each inbound call runs as its own task
//! ([`crate::inbound`]) around the sans-IO [`crate::call::Call`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipConnection, TcpListenerConnection, TransportLayer};
use switchboard_db::Database;
use switchboard_db::sip::SipLogin;
use switchboard_relay::{Relay, RelayConfig};
use switchboard_sip_guard::{
    Admission, AdmissionConfig, AuthOutcome, CallCaps, DigestAuthenticator, DigestConfig,
    DigestResponse, Guard, GuardConfig, SipCredential, Verdict, parse_authorization,
};
use switchboard_state::{AgentId, Command, EventKind, NodeId, StateEngine, TenantId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::GatewayConfig;
use crate::location::{Binding, Location};
use crate::udp::{EdgeCounters, FramedUdpSocket, SourceFilter};
use crate::{GatewayError, inbound};

/// Unix time in milliseconds (the state engine's and the nonces' clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A final response that refuses a request: status, a reason for a Warning header, extra
/// headers (challenges, Retry-After).
pub type Refusal = (StatusCode, Option<&'static str>, Vec<Header>);

/// What the engine tells one call.
#[derive(Debug, Clone)]
pub enum CallNotice {
    Offered {
        agent: String,
    },
    Released {
        agent: String,
    },
    LeftQueue,
    /// The call's place in line and estimated wait.
    Queued {
        position: u64,
        eta_ms: u64,
    },
    /// The api asks for a blind transfer; the answer goes to the request's reply topic.
    Transfer {
        target: String,
        request: switchboard_state::ControlRequest,
    },
    /// The api asks to pause (or resume) the call's recording.
    Recording {
        pause: bool,
        request: switchboard_state::ControlRequest,
    },
}

/// Everything the node's tasks share.
pub struct Gateway {
    pub cfg: GatewayConfig,
    pub db: Database,
    pub engine: Arc<dyn StateEngine>,
    pub relay: Arc<Relay>,
    pub dialogs: Arc<DialogLayer>,
    pub endpoint: EndpointInnerRef,
    pub location: Location,
    /// Failed-auth throttling and bans; the UDP edge checks the same instance.
    pub guard: Arc<Guard>,
    pub auth: DigestAuthenticator,
    pub admission: Admission,
    pub caps: CallCaps,
    pub counters: Arc<EdgeCounters>,
    pub metrics: crate::metrics::GatewayMetrics,
    pub hold_music: Arc<[i16]>,
    /// Prompts from object storage (per-tenant music on hold), cached.
    pub prompts: crate::prompts::PromptCache,
    /// Queue position / wait announcements, when `gateway.announcements_dir` is set.
    pub announcements: Option<crate::prompts::Announcements>,
    /// Calls of this node waiting for engine decisions, per tenant.
    calls: Mutex<HashMap<TenantId, HashMap<String, mpsc::Sender<CallNotice>>>>,
    /// The address SIP peers reach us at.
    pub sip_addr: SocketAddr,
    /// Drain state and the cluster's live nodes.
    pub cluster: crate::cluster::Cluster,
    /// Calls in progress, for CDRs of calls a crash cut.
    pub journal: Option<crate::cluster::Journal>,
    /// Cancelled when a drain asked to exit once idle and the last call ended.
    pub idle_exit: CancellationToken,
    /// Where SIP over TLS listens, when enabled.
    pub tls_addr: Option<SocketAddr>,
    /// Where SIP over WebSocket listens, when enabled.
    pub ws_addr: Option<SocketAddr>,
    /// Open WebSocket connections (browser agents), each with its closing signal.
    pub ws_flows: crate::ws::Flows,
    /// The api's access-token check, for browsers that register with `Authorization: Bearer`.
    pub agent_tokens: Option<crate::token::AgentTokenVerifier>,
    /// Call recording (spool, store, uploads), when `gateway.recordings.enabled`.
    pub recorder: Option<crate::record::Recorder>,
    /// WebRTC media for browser agents, when SIP over WebSocket is on.
    pub webrtc: Option<Arc<switchboard_webrtc::Endpoint>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("sip_addr", &self.sip_addr)
            .finish()
    }
}

struct BanFilter(Arc<Guard>);

impl SourceFilter for BanFilter {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.0.check(ip, now_ms()) == Verdict::Allow
    }
}

/// A running node; dropping the handle does not stop it, [`RunningGateway::shutdown`] does.
#[derive(Debug)]
pub struct RunningGateway {
    pub gateway: Arc<Gateway>,
    cancel: CancellationToken,
}

impl RunningGateway {
    pub fn sip_addr(&self) -> SocketAddr {
        self.gateway.sip_addr
    }

    /// Where SIP over WebSocket listens, when `gateway.ws_addr` is set.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.gateway.ws_addr
    }

    /// Stops the node and takes it out of the node registry.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Ok(node) = NodeId::parse(self.gateway.cfg.node_id.clone())
            && let Err(e) = self.gateway.engine.remove_node(&node).await
        {
            tracing::warn!(error = %e, "leaving the node registry");
        }
    }

    /// Resolves once a drain that asked to exit when idle saw the last call end.
    pub async fn idle_exit(&self) {
        self.gateway.idle_exit.cancelled().await;
    }
}

/// Binds the SIP and RTP sockets and starts serving. Returns once listening.
pub async fn start(
    cfg: GatewayConfig,
    db: Database,
    engine: Arc<dyn StateEngine>,
) -> Result<RunningGateway, GatewayError> {
    start_with_tokens(cfg, db, engine, None).await
}

/// [`start`], with the api's access-token check for browser agents' REGISTERs over
/// WebSocket (without it, a Bearer REGISTER is refused and browsers use digest).
pub async fn start_with_tokens(
    cfg: GatewayConfig,
    db: Database,
    engine: Arc<dyn StateEngine>,
    agent_tokens: Option<crate::token::AgentTokenVerifier>,
) -> Result<RunningGateway, GatewayError> {
    cfg.validate().map_err(GatewayError::Config)?;
    let node =
        NodeId::parse(cfg.node_id.clone()).map_err(|e| GatewayError::Config(e.to_string()))?;
    // Before taking calls: what a crash cut gets its CDR and frees its agent.
    let journal = match &cfg.journal_dir {
        Some(dir) => {
            let journal = crate::cluster::Journal::open(dir)?;
            recover_journal(&db, engine.as_ref(), &journal).await;
            Some(journal)
        }
        None => None,
    };
    let secret = if cfg.auth_secret.is_empty() {
        let bytes: [u8; 32] = rand::random();
        bytes.to_vec()
    } else {
        cfg.auth_secret.as_bytes().to_vec()
    };
    let auth = DigestAuthenticator::new(DigestConfig::with_secret(secret))
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    let guard = Arc::new(
        Guard::new(GuardConfig {
            max_failures_per_source: cfg.max_auth_failures,
            ban_ms: cfg.ban_s * 1000,
            ..GuardConfig::default()
        })
        .map_err(|e| GatewayError::Config(e.to_string()))?,
    );
    let admission = Admission::new(
        AdmissionConfig {
            calls_per_sec: cfg.max_cps,
            burst: cfg.max_cps.saturating_mul(2),
            max_in_flight: cfg.max_calls_in_setup,
            busy_retry_secs: 5,
        },
        now_ms(),
    )
    .map_err(|e| GatewayError::Config(e.to_string()))?;
    let relay = Relay::new(RelayConfig::new(
        cfg.advertised_ip(),
        cfg.rtp_port_min,
        cfg.rtp_port_max,
    ))?;
    let webrtc = match cfg.ws_addr {
        Some(_) => Some(
            switchboard_webrtc::Endpoint::new(
                cfg.webrtc_config(),
                switchboard_webrtc::Role::Gateway,
            )
            .map_err(|e| GatewayError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let hold_music = crate::prompts::hold_music(cfg.hold_music.as_deref())?;
    let announcements = match &cfg.announcements_dir {
        Some(dir) => Some(crate::prompts::Announcements::load(dir)?),
        None => None,
    };
    // The spool is resumed (pending uploads queued, crashed recordings finished) before the
    // SIP socket exists, so no call is taken first.
    let recorder =
        crate::record::Recorder::start(&cfg.recordings, db.clone(), engine.clone()).await?;
    // Prompts come from the recordings store when there is one, cached beside the spool.
    let prompts = crate::prompts::PromptCache::new(
        recorder.as_ref().map(|r| r.store.clone()),
        cfg.recordings
            .spool_dir
            .as_ref()
            .and_then(|d| d.parent())
            .map(|d| d.join("prompt-cache")),
        hold_music.clone(),
    );

    let cancel = CancellationToken::new();
    let transport = TransportLayer::new(cancel.child_token());
    let metrics = crate::metrics::GatewayMetrics::new().with_webrtc(webrtc.clone());
    let counters = Arc::new(EdgeCounters::new(&metrics));
    let socket = tokio::net::UdpSocket::bind(cfg.sip_addr).await?;
    let sip_addr = socket.local_addr()?;
    let framed = FramedUdpSocket::new(socket, Arc::new(BanFilter(guard.clone())), counters.clone());
    let udp = UdpConnection::from_socket(Arc::new(framed), None, Some(cancel.child_token()))
        .await
        .map_err(GatewayError::sip)?;
    transport.add_transport(SipConnection::Udp(udp));
    let tcp = TcpListenerConnection::new(sip_addr, None)
        .await
        .map_err(GatewayError::sip)?;
    transport.add_transport(tcp.into());
    let tls_addr = match &cfg.tls {
        Some(tls) => Some(start_tls(&transport, tls).await?),
        None => None,
    };
    let ws_listener = match cfg.ws_addr {
        Some(addr) => Some(crate::ws::bind(addr, &cfg.ws).await?),
        None => None,
    };

    let endpoint = EndpointBuilder::new()
        .with_transport_layer(transport)
        .with_cancel_token(cancel.clone())
        .with_user_agent("switchboard")
        .with_allows(vec![
            Method::Invite,
            Method::Ack,
            Method::Cancel,
            Method::Bye,
            Method::Options,
            Method::Register,
            Method::Info,
            Method::Update,
        ])
        .build();
    let mut incoming = endpoint
        .incoming_transactions()
        .map_err(GatewayError::sip)?;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let gateway = Arc::new(Gateway {
        cfg,
        db,
        engine,
        relay,
        dialogs,
        endpoint: endpoint.inner.clone(),
        location: Location::default(),
        guard,
        auth,
        admission,
        caps: CallCaps::new(),
        counters,
        metrics,
        hold_music,
        prompts,
        announcements,
        calls: Mutex::new(HashMap::new()),
        sip_addr,
        tls_addr,
        ws_addr: ws_listener.as_ref().map(|l| l.addr),
        ws_flows: crate::ws::Flows::default(),
        agent_tokens,
        recorder,
        webrtc,
        cluster: crate::cluster::Cluster::default(),
        journal,
        idle_exit: CancellationToken::new(),
    });
    gateway.beat(&node).await;
    let gw = gateway.clone();
    let beat_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(gw.cfg.heartbeat());
        loop {
            tokio::select! {
                _ = every.tick() => gw.beat(&node).await,
                _ = beat_cancel.cancelled() => break,
            }
        }
    });

    let serve_cancel = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = endpoint.serve() => {}
            _ = serve_cancel.cancelled() => {}
        }
    });
    let gw = gateway.clone();
    let dispatch_cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            let tx = tokio::select! {
                tx = incoming.recv() => tx,
                _ = dispatch_cancel.cancelled() => None,
            };
            let Some(tx) = tx else { break };
            dispatch(&gw, tx);
        }
    });
    let gw = gateway.clone();
    let sweep_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => gw.sweep_registrations().await,
                _ = sweep_cancel.cancelled() => break,
            }
        }
    });
    // The api's requests (click-to-call, transfer by api) for what this node holds.
    let requests = gateway
        .engine
        .control_bus()
        .subscribe(switchboard_state::control::GATEWAY_TOPIC)
        .await?;
    tokio::spawn(control_loop(gateway.clone(), requests, cancel.clone()));
    if let Some(listener) = ws_listener {
        tracing::info!(addr = %listener.addr, secure = gateway.cfg.ws.secure(), "SIP over WebSocket listening");
        crate::ws::serve(gateway.clone(), listener, cancel.child_token());
    }
    tracing::info!(%sip_addr, "gateway listening (SIP UDP+TCP)");
    Ok(RunningGateway { gateway, cancel })
}

/// Adds the TLS listener. The PEM files are read once at start; a bad file is a start error.
async fn start_tls(
    transport: &TransportLayer,
    tls: &crate::config::TlsListener,
) -> Result<SocketAddr, GatewayError> {
    use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| GatewayError::Config(format!("{}: {e}", p.display())))
    };
    let config = TlsConfig {
        cert: Some(read(&tls.cert_file)?),
        key: Some(read(&tls.key_file)?),
        ..Default::default()
    };
    // rustls needs a process-wide crypto provider; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TlsListenerConnection::new(tls.addr, None, config)
        .await
        .map_err(GatewayError::sip)?;
    let addr = listener
        .get_addr()
        .get_socketaddr()
        .map_err(GatewayError::sip)?;
    transport.add_transport(listener.into());
    Ok(addr)
}

/// Serves the api's control requests: each node acts only on what it holds (the agent's
/// phone registration for a dial, the call for a transfer) and stays silent otherwise, so
/// exactly one node answers.
async fn control_loop(
    gw: Arc<Gateway>,
    mut requests: mpsc::Receiver<String>,
    cancel: CancellationToken,
) {
    use switchboard_state::{ControlAction, ControlRequest};
    loop {
        let text = tokio::select! {
            t = requests.recv() => t,
            _ = cancel.cancelled() => None,
        };
        let Some(text) = text else { break };
        let request = match serde_json::from_str::<ControlRequest>(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable control request");
                continue;
            }
        };
        match request.action.clone() {
            ControlAction::Dial {
                tenant,
                agent,
                number,
            } => {
                let (Ok(tenant_uuid), Ok(agent_uuid)) =
                    (tenant.parse::<uuid::Uuid>(), agent.parse::<uuid::Uuid>())
                else {
                    continue;
                };
                if gw.location.holds(&tenant, &agent) {
                    tokio::spawn(crate::outbound::click_to_call(
                        gw.clone(),
                        request,
                        tenant_uuid,
                        agent_uuid,
                        number,
                    ));
                }
            }
            ControlAction::Transfer {
                tenant,
                call,
                target,
            } => {
                let Ok(tenant) = TenantId::parse(tenant) else {
                    continue;
                };
                gw.deliver_to_call(&tenant, &call, CallNotice::Transfer { target, request });
            }
            ControlAction::Recording {
                tenant,
                call,
                pause,
            } => {
                let Ok(tenant) = TenantId::parse(tenant) else {
                    continue;
                };
                gw.deliver_to_call(&tenant, &call, CallNotice::Recording { pause, request });
            }
        }
    }
}

/// The legs a crash journal entry still tells: the caller, and the agent if one answered.
fn crash_legs(
    entry: &crate::cluster::JournalEntry,
    ended_at: chrono::DateTime<chrono::Utc>,
) -> Vec<switchboard_db::calls::LegRecord> {
    let leg = |role: &str, party: String, agent_id| switchboard_db::calls::LegRecord {
        role: role.into(),
        party,
        agent_id,
        started_at: entry.started_at,
        answered_at: entry.answered_at,
        ended_at,
        sip_status: None,
        end_reason: "node_crash".into(),
        media_stats: None,
        media: None,
        codec: None,
    };
    let mut legs = vec![leg("caller", entry.from_number.clone(), None)];
    if let Some(agent) = entry.agent_id {
        legs.push(leg("agent", agent.to_string(), Some(agent)));
    }
    legs
}

/// How an inbound trunk was recognised.
#[derive(Debug, Clone, Copy)]
pub enum TrunkIdentity<'a> {
    /// Its source address is one of `gateway.trunk_sources`.
    Source,
    /// It names a trunk of `gateway.inbound_trunks`, which must prove its credentials.
    Credentials(&'a crate::config::InboundTrunk),
}

/// Routes one new server transaction to its handler.
fn dispatch(gw: &Arc<Gateway>, mut tx: Transaction) {
    let in_dialog = tx
        .original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some();
    let gw = gw.clone();
    gw.metrics
        .sip_requests
        .with_label_values(&[tx.original.method.to_string().as_str()])
        .inc();
    match tx.original.method {
        Method::Register => {
            tokio::spawn(async move { gw.register(tx).await });
        }
        Method::Invite if !in_dialog => {
            let from_peer = header_value(&tx.original, crate::trunk::TOKEN_HEADER).is_some();
            let websocket = matches!(
                transport_of(&tx),
                rsipstack::sip::Transport::Ws | rsipstack::sip::Transport::Wss
            );
            if websocket {
                // A browser agent's own call: never a carrier's or a peer node's, whatever
                // its source address.
                tokio::spawn(async move { crate::outbound::run(gw, tx).await });
            } else if from_peer {
                tokio::spawn(async move { crate::outbound::run_relay(gw, tx).await });
            } else if gw.inbound_trunk_of(&tx).is_some() {
                tokio::spawn(async move { inbound::run(gw, tx).await });
            } else {
                tokio::spawn(async move { crate::outbound::run(gw, tx).await });
            }
        }
        Method::Options if !in_dialog => {
            tokio::spawn(async move {
                let _ = tx
                    .reply_with(
                        StatusCode::OK,
                        vec![Header::Allow(
                            "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE".into(),
                        )],
                        None,
                    )
                    .await;
            });
        }
        Method::Ack => {}
        _ => {
            tokio::spawn(async move {
                match gw.dialogs.match_dialog(&tx) {
                    Some(mut dialog) => {
                        if let Err(e) = dialog.handle(&mut tx).await {
                            tracing::debug!(error = %e, "in-dialog request");
                        }
                    }
                    None if in_dialog => {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                    None => {
                        let _ = tx.reply(StatusCode::MethodNotAllowed).await;
                    }
                }
            });
        }
    }
}

/// Answers a request with its refusal (the reason goes into a Warning header).
pub async fn refuse(tx: &mut Transaction, (status, reason, mut headers): Refusal) {
    if let Some(reason) = reason {
        headers.push(Header::Warning(
            format!("399 switchboard \"{reason}\"").into(),
        ));
    }
    let _ = tx.reply_with(status, headers, None).await;
}

/// The source address of a request (where replies and calls go).
pub fn source_of(tx: &Transaction) -> Option<SocketAddr> {
    tx.connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
}

/// The transport a request came in on: WS/WSS for our WebSocket listener's connections (the
/// only channel connections), UDP (or TCP/TLS) otherwise.
pub fn transport_of(tx: &Transaction) -> rsipstack::sip::Transport {
    match &tx.connection {
        Some(SipConnection::Channel(c)) => {
            c.get_addr().r#type.unwrap_or(rsipstack::sip::Transport::Ws)
        }
        Some(c) => c.transport(),
        None => rsipstack::sip::Transport::Udp,
    }
}

/// The tenant slug a SIP domain names: its first label (`acme.sip.example` -> `acme`).
pub fn tenant_slug_of(host: &str) -> &str {
    host.split('.').next().unwrap_or_default()
}

/// The value of the first header called `name` (case-insensitive).
pub fn header_value(req: &rsipstack::sip::Request, name: &str) -> Option<String> {
    req.headers.iter().find_map(|h| {
        let line = h.to_string();
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// `expires` of the first Contact (a parameter) or of the Expires header.
fn requested_expiry(req: &rsipstack::sip::Request) -> Option<u32> {
    let contact = header_value(req, "contact")?;
    let contact = contact.as_str();
    let from_param = contact.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("expires")
            .then(|| v.trim().parse().ok())
            .flatten()
    });
    from_param.or_else(|| header_value(req, "expires")?.parse().ok())
}

/// The URI inside a Contact value (`"Name" <sip:a@b>;expires=60` -> `sip:a@b`).
fn contact_uri(contact: &str) -> Option<String> {
    let c = contact.trim();
    if c == "*" {
        return None;
    }
    if let (Some(s), Some(e)) = (c.find('<'), c.find('>')) {
        return (s < e).then(|| c[s + 1..e].to_owned());
    }
    Some(c.split(';').next().unwrap_or_default().to_owned())
}

/// Ends what a previous run left in the journal: the engine forgets the call (its agent goes
/// to wrap-up, then ready) and the CDR is written with cause `node_crash`, ended at the last
/// time the entry was written. Idempotent: the CDR write is keyed by call id, and the entry
/// goes only once its CDR is written.
async fn recover_journal(
    db: &Database,
    engine: &dyn StateEngine,
    journal: &crate::cluster::Journal,
) {
    for (entry, last_seen) in journal.leftovers() {
        let span = tracing::info_span!("recover", call = %entry.call_id, tenant = %entry.tenant);
        recover_call(db, engine, journal, entry, last_seen)
            .instrument(span)
            .await;
    }
}

async fn recover_call(
    db: &Database,
    engine: &dyn StateEngine,
    journal: &crate::cluster::Journal,
    entry: crate::cluster::JournalEntry,
    last_seen: chrono::DateTime<chrono::Utc>,
) {
    if let (Ok(tenant), Ok(call)) = (
        TenantId::parse(entry.tenant.to_string()),
        switchboard_state::CallId::parse(entry.engine_call.clone()),
    ) {
        match engine
            .run(&tenant, now_ms(), Command::Hangup { call })
            .await
        {
            Ok(_) | Err(switchboard_state::StateError::UnknownCall(_)) => {}
            Err(e) => tracing::warn!(error = %e, "ending a crashed call in the engine"),
        }
    }
    let record = switchboard_db::calls::CallRecord {
        call_id: entry.call_id.clone(),
        direction: "inbound".into(),
        from_number: entry.from_number.clone(),
        to_number: entry.to_number.clone(),
        queue_id: entry.queue_id,
        agent_id: entry.agent_id,
        started_at: entry.started_at,
        queued_at: entry.queued_at,
        answered_at: entry.answered_at,
        ended_at: last_seen.max(entry.started_at),
        hangup_cause: "node_crash".into(),
        hangup_side: "system".into(),
        media_stats: None,
        legs: crash_legs(&entry, last_seen.max(entry.started_at)),
    };
    let written = async {
        let txn = db
            .tenant_txn(
                switchboard_domain::TenantId(entry.tenant),
                switchboard_db::Access::Write,
            )
            .await?;
        txn.record_call(&record).await?;
        txn.commit().await
    }
    .await;
    match written {
        Ok(()) => {
            tracing::info!("CDR of a call cut by a crash written");
            journal.remove(&entry.call_id);
        }
        Err(e) => tracing::warn!(error = %e, "CDR of a crashed call (kept for the next start)"),
    }
}

impl Gateway {
    /// Calls this node holds now (inbound and outbound).
    pub fn active_calls(&self) -> u32 {
        let gauge = |d: &str| self.metrics.active_calls.with_label_values(&[d]).get();
        let all = gauge("inbound") + gauge("outbound") + gauge("trunk");
        u32::try_from(all.max(0)).unwrap_or(u32::MAX)
    }

    /// This node's registry entry as of now.
    pub fn node_info(&self, node: &NodeId) -> switchboard_state::NodeInfo {
        let trunk = self
            .cfg
            .trunk_addr
            .unwrap_or_else(|| SocketAddr::new(self.cfg.advertised_ip(), self.sip_addr.port()));
        switchboard_state::NodeInfo {
            node: node.clone(),
            sip_addr: SocketAddr::new(self.cfg.advertised_ip(), self.sip_addr.port()).to_string(),
            trunk_addr: trunk.to_string(),
            capacity: self.cfg.capacity,
            calls: self.active_calls(),
            draining: self.cluster.draining(),
            expires_at_ms: now_ms() + self.cfg.node_ttl_ms,
        }
    }

    /// One heartbeat: our registry entry, the live nodes, and the exit of a finished drain.
    async fn beat(&self, node: &NodeId) {
        let info = self.node_info(node);
        if let Err(e) = self.engine.put_node(&info).await {
            tracing::warn!(error = %e, "node registry heartbeat");
        }
        match self.engine.nodes(now_ms()).await {
            Ok(live) => self.cluster.set_live(live),
            Err(e) => tracing::warn!(error = %e, "reading the node registry"),
        }
        if info.draining && self.cluster.exit_when_idle() && info.calls == 0 {
            tracing::info!("drained: no calls left");
            self.idle_exit.cancel();
        }
    }

    /// Beats now (refreshing this node's entry and its view of the cluster) instead of at the
    /// next interval.
    pub async fn heartbeat(&self) {
        if let Ok(node) = NodeId::parse(self.cfg.node_id.clone()) {
            self.beat(&node).await;
        }
    }

    /// Starts draining: new carrier calls go elsewhere, current calls finish. With
    /// `exit_when_idle`, [`RunningGateway::idle_exit`] resolves once the last call ended.
    pub async fn drain(&self, exit_when_idle: bool) {
        tracing::info!(exit_when_idle, "draining");
        self.cluster.drain(exit_when_idle);
        self.heartbeat().await;
    }

    /// The live peer node (not this one) holding an agent's phone, where the internal trunk
    /// reaches it; `None` when the phone is ours, its node is gone, or the trunk is off.
    pub fn peer_for(&self, binding: &Binding) -> Option<SocketAddr> {
        let node = binding.node.as_deref()?;
        if node == self.cfg.node_id || self.cfg.auth_secret.is_empty() {
            return None;
        }
        self.cluster
            .live()
            .into_iter()
            .find(|n| n.node.as_str() == node)?
            .trunk_addr
            .parse()
            .ok()
    }

    /// Whether `source` is the trunk address' IP of a live peer node.
    pub fn is_peer(&self, source: SocketAddr) -> bool {
        self.cluster.live().iter().any(|n| {
            n.node.as_str() != self.cfg.node_id
                && n.trunk_addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip() == source.ip())
        })
    }

    /// Where a new carrier call goes (see [`crate::cluster::place`]).
    pub fn placement(&self) -> crate::cluster::Placement {
        let load = crate::cluster::Load {
            calls: self.active_calls(),
            capacity: self.cfg.capacity,
            draining: self.cluster.draining(),
        };
        crate::cluster::place(
            &self.cfg.node_id,
            load,
            &self.cluster.live(),
            self.cfg.spread,
            self.cfg.spread_margin,
        )
    }

    /// Registers the engine feed for `call` of `tenant` (starting the tenant's feed if this is
    /// its first call on the node). Must run before the call is enqueued.
    pub async fn watch_call(
        self: &Arc<Self>,
        tenant: &TenantId,
        call: &str,
    ) -> Result<mpsc::Receiver<CallNotice>, GatewayError> {
        let (tx, rx) = mpsc::channel(16);
        let first = {
            let mut calls = self.calls.lock().map_err(|_| GatewayError::Poisoned)?;
            let per_tenant = calls.entry(tenant.clone()).or_default();
            per_tenant.insert(call.to_owned(), tx);
            per_tenant.len() == 1
        };
        if first {
            let feed = self.engine.subscribe(tenant, None).await?;
            let gw = self.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move { gw.tenant_feed(tenant, feed).await });
        }
        Ok(rx)
    }

    /// Hands an api request (transfer, recording pause) to the call's task, if this node
    /// holds the call.
    fn deliver_to_call(&self, tenant: &TenantId, call: &str, notice: CallNotice) -> bool {
        let sender = self
            .calls
            .lock()
            .ok()
            .and_then(|calls| calls.get(tenant)?.get(call).cloned());
        sender.is_some_and(|s| s.try_send(notice).is_ok())
    }

    pub fn unwatch_call(&self, tenant: &TenantId, call: &str) {
        if let Ok(mut calls) = self.calls.lock()
            && let Some(per_tenant) = calls.get_mut(tenant)
        {
            per_tenant.remove(call);
        }
    }

    /// Forwards the tenant's engine events to this node's calls and beats the node's heart
    /// for the tenant while it holds calls there. Ends when the node holds none.
    async fn tenant_feed(
        self: Arc<Self>,
        tenant: TenantId,
        mut feed: mpsc::Receiver<switchboard_state::Event>,
    ) {
        let Ok(node) = NodeId::parse(self.cfg.node_id.clone()) else {
            return;
        };
        let mut beat = tokio::time::interval(self.cfg.heartbeat());
        loop {
            let event = tokio::select! {
                e = feed.recv() => e,
                _ = beat.tick() => {
                    let cmd = Command::NodeHeartbeat { node: node.clone() };
                    if let Err(e) = self.engine.run(&tenant, now_ms(), cmd).await {
                        tracing::warn!(error = %e, "node heartbeat");
                    }
                    let empty = self.calls.lock().map_or(true, |mut calls| {
                        let empty = calls.get(&tenant).is_none_or(|c| c.is_empty());
                        if empty {
                            calls.remove(&tenant);
                        }
                        empty
                    });
                    if empty {
                        return;
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                tracing::warn!(tenant = %tenant, "engine feed closed");
                return;
            };
            let (call, notice) = match event.kind {
                EventKind::CallOffered { call, agent, .. } => (
                    call,
                    CallNotice::Offered {
                        agent: agent.to_string(),
                    },
                ),
                EventKind::OfferReleased { call, agent, .. } => (
                    call,
                    CallNotice::Released {
                        agent: agent.to_string(),
                    },
                ),
                EventKind::CallEnded { call, .. } | EventKind::CallOverflowed { call, .. } => {
                    (call, CallNotice::LeftQueue)
                }
                EventKind::CallQueued {
                    call,
                    position,
                    eta_ms,
                    ..
                } => (call, CallNotice::Queued { position, eta_ms }),
                _ => continue,
            };
            let target = self
                .calls
                .lock()
                .ok()
                .and_then(|c| c.get(&tenant)?.get(call.as_str()).cloned());
            if let Some(target) = target {
                let _ = target.try_send(notice);
            }
        }
    }

    /// Answers a REGISTER: digest challenge, verification, binding.
    async fn register(self: Arc<Self>, mut tx: Transaction) {
        if let Err(refusal) = self.register_inner(&mut tx).await {
            refuse(&mut tx, refusal).await;
        }
    }

    /// Digest authentication of a request from an agent's phone (REGISTER: 401 and
    /// Authorization; INVITE: 407 and Proxy-Authorization). `user_uri` names who claims to be
    /// asking (To of a REGISTER, From of an INVITE): its user is the SIP username and its host's
    /// first label the tenant (the realm). The same challenge answers unknown users, wrong
    /// passwords and locked users, so the answer reveals nothing.
    pub async fn authenticate(
        &self,
        tx: &Transaction,
        user_uri: Result<rsipstack::sip::Uri, rsipstack::sip::Error>,
        proxy: bool,
    ) -> Result<SipLogin, Refusal> {
        let bad = |reason| (StatusCode::BadRequest, Some(reason), vec![]);
        let uri = user_uri.map_err(|_| bad("bad From/To"))?;
        let username = uri
            .auth
            .as_ref()
            .map(|a| a.user.clone())
            .ok_or_else(|| bad("no user in From/To"))?;
        let host = uri.host_with_port.host.to_string();
        let realm = tenant_slug_of(&host).to_owned();
        let digest = self.digest_response(tx, &realm, &username, proxy)?;
        let login = self
            .db
            .sip_login(&realm, &digest.username)
            .await
            .map_err(|_| (StatusCode::ServerInternalError, None, vec![]))?;
        let credential = login.as_ref().map(|l| SipCredential {
            username: digest.username.clone(),
            realm: realm.clone(),
            ha1_md5: l.ha1_md5.clone(),
            ha1_sha256: l.ha1_sha256.clone(),
        });
        self.verify_digest(tx, &realm, &username, &digest, credential.as_ref(), proxy)?;
        let login = login.ok_or_else(|| self.digest_challenge(&realm, proxy, false))?;
        if !login.tenant_active {
            return Err((StatusCode::Forbidden, Some("tenant suspended"), vec![]));
        }
        Ok(login)
    }

    /// The inbound trunk an INVITE comes from: its source is a configured carrier address, or
    /// its From host names a trunk that authenticates by digest (and the source is one the
    /// trunk allows, when it lists any).
    pub fn inbound_trunk_of(&self, tx: &Transaction) -> Option<TrunkIdentity<'_>> {
        let source = source_of(tx)?;
        if self.cfg.trunk_sources.contains(&source.ip()) {
            return Some(TrunkIdentity::Source);
        }
        let from = tx.original.from_header().ok()?.uri().ok()?;
        let host = from.host_with_port.host.to_string();
        self.cfg
            .inbound_trunks
            .iter()
            .find(|t| {
                t.realm.eq_ignore_ascii_case(&host)
                    && (t.sources.is_empty() || t.sources.contains(&source.ip()))
            })
            .map(TrunkIdentity::Credentials)
    }

    /// Lets a carrier's INVITE in: by source address, or by the trunk's digest credentials
    /// (407 until it proves them, throttled and banned like phones).
    pub fn authenticate_trunk(&self, tx: &Transaction) -> Result<(), Refusal> {
        let trunk = match self.inbound_trunk_of(tx) {
            Some(TrunkIdentity::Source) => return Ok(()),
            Some(TrunkIdentity::Credentials(t)) => t,
            None => return Err((StatusCode::Forbidden, Some("unknown trunk"), vec![])),
        };
        let digest = self.digest_response(tx, &trunk.realm, &trunk.username, true)?;
        let credential = (digest.username == trunk.username)
            .then(|| SipCredential::derive(&trunk.username, &trunk.realm, &trunk.password));
        self.verify_digest(
            tx,
            &trunk.realm,
            &trunk.username,
            &digest,
            credential.as_ref(),
            true,
        )
    }

    /// A 401/407 carrying a fresh challenge (or a stale one: the nonce was good but expired).
    fn digest_challenge(&self, realm: &str, proxy: bool, stale: bool) -> Refusal {
        let now = now_ms();
        let mut values = if stale {
            self.auth.stale_challenge(realm, now)
        } else {
            self.auth.challenge(realm, now)
        };
        if self.cfg.digest_md5_first {
            values.reverse();
        }
        let (status, header): (StatusCode, fn(String) -> Header) = if proxy {
            (StatusCode::ProxyAuthenticationRequired, |v| {
                Header::ProxyAuthenticate(v.into())
            })
        } else {
            (StatusCode::Unauthorized, |v| {
                Header::WwwAuthenticate(v.into())
            })
        };
        (
            status,
            None,
            values.into_iter().map(header).collect::<Vec<_>>(),
        )
    }

    /// The request's digest response, or the challenge to send when it has none (or an
    /// unreadable one, which counts as a failure of `username` from its source).
    fn digest_response(
        &self,
        tx: &Transaction,
        realm: &str,
        username: &str,
        proxy: bool,
    ) -> Result<DigestResponse, Refusal> {
        let source = source_of(tx).ok_or((StatusCode::BadRequest, Some("no source"), vec![]))?;
        let name = if proxy {
            "proxy-authorization"
        } else {
            "authorization"
        };
        let Some(authorization) = header_value(&tx.original, name) else {
            return Err(self.digest_challenge(realm, proxy, false));
        };
        parse_authorization(&authorization).map_err(|_| {
            self.guard.record_failure(source.ip(), username, now_ms());
            self.digest_challenge(realm, proxy, false)
        })
    }

    /// Checks a digest response against the credential found for its username (`None`: no
    /// such user, answered exactly like a wrong password). `claimed` is the user the request
    /// names (From/To); the response must be for that user. Failures count towards the
    /// source's ban and the user's lock.
    fn verify_digest(
        &self,
        tx: &Transaction,
        realm: &str,
        claimed: &str,
        digest: &DigestResponse,
        credential: Option<&SipCredential>,
        proxy: bool,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        let source = source_of(tx).ok_or((StatusCode::BadRequest, Some("no source"), vec![]))?;
        let locked = self.guard.check_user(&digest.username, now) != Verdict::Allow;
        let outcome = self.auth.verify(
            digest,
            tx.original.method.to_string().as_str(),
            realm,
            credential,
            now,
        );
        match (outcome, locked) {
            (AuthOutcome::Ok, false) if digest.username == claimed => {
                self.guard.record_success(source.ip(), now);
                Ok(())
            }
            (AuthOutcome::Stale, false) => Err(self.digest_challenge(realm, proxy, true)),
            (outcome, locked) => {
                tracing::info!(%source, user = %digest.username, ?outcome, locked, "digest authentication failed");
                self.guard
                    .record_failure(source.ip(), &digest.username, now);
                Err(self.digest_challenge(realm, proxy, false))
            }
        }
    }

    async fn register_inner(&self, tx: &mut Transaction) -> Result<(), Refusal> {
        let now = now_ms();
        let source = source_of(tx).ok_or((StatusCode::BadRequest, Some("no source"), vec![]))?;
        let transport = transport_of(tx);
        let to = tx.original.to_header().and_then(|t| t.uri());
        let authorization = header_value(&tx.original, "authorization");
        let (tenant, agent) = match authorization.as_deref().and_then(crate::token::bearer) {
            Some(token) => {
                let id = self.authenticate_bearer(tx, token, to, transport).await?;
                (id.tenant.to_string(), id.user.to_string())
            }
            None => {
                let login = self.authenticate(tx, to, false).await?;
                (login.tenant_id.to_string(), login.user_id.to_string())
            }
        };
        let expiry = requested_expiry(&tx.original).unwrap_or(self.cfg.max_expires_s);
        let contact = header_value(&tx.original, "contact").and_then(|c| contact_uri(&c));
        let granted = if expiry == 0 || contact.is_none() {
            if expiry == 0 {
                self.location.unbind(&tenant, &agent);
                self.store_binding(&tenant, &agent, None).await?;
                self.phone_gone(&tenant, &agent).await;
            }
            0
        } else if expiry < self.cfg.min_expires_s {
            return Err((
                StatusCode::IntervalTooBrief,
                None,
                vec![Header::MinExpires(
                    self.cfg.min_expires_s.to_string().into(),
                )],
            ));
        } else {
            // A draining node keeps registering phones, briefly, so they come back soon and
            // land on a node that stays once this one is gone.
            let cap = if self.cluster.draining() {
                self.cfg.min_expires_s
            } else {
                self.cfg.max_expires_s
            };
            let granted = expiry.min(cap);
            let contact = contact.unwrap_or_default();
            let binding = Binding {
                contact,
                source,
                node: Some(self.cfg.node_id.clone()),
                expires_at_ms: now + u64::from(granted) * 1000,
                transport,
            };
            self.store_binding(&tenant, &agent, Some(&binding)).await?;
            if !self.location.bind(&tenant, &agent, binding) {
                return Err((
                    StatusCode::ServiceUnavailable,
                    Some("registrar full"),
                    vec![],
                ));
            }
            granted
        };
        let mut headers = vec![Header::Expires(granted.to_string().into())];
        if granted > 0
            && let Some(c) = header_value(&tx.original, "contact").and_then(|c| contact_uri(&c))
        {
            headers.push(Header::Contact(format!("<{c}>;expires={granted}").into()));
        }
        tracing::info!(tenant = %tenant, agent = %agent, %source, %transport, granted, "registered");
        self.metrics.registrations.inc();
        let _ = tx.reply_with(StatusCode::OK, headers, None).await;
        Ok(())
    }

    /// Writes (or clears) the agent's binding in the state engine's location service, where
    /// every node finds it.
    async fn store_binding(
        &self,
        tenant: &str,
        agent: &str,
        binding: Option<&Binding>,
    ) -> Result<(), Refusal> {
        let unavailable = |_| {
            (
                StatusCode::ServiceUnavailable,
                Some("location service"),
                vec![],
            )
        };
        let tenant = TenantId::parse(tenant.to_owned()).map_err(unavailable)?;
        let agent = AgentId::parse(agent.to_owned()).map_err(unavailable)?;
        match binding {
            Some(b) => {
                let value = format!(
                    "{}|{}|{}",
                    b.contact,
                    b.stored_source(),
                    b.node.as_deref().unwrap_or_default()
                );
                self.engine
                    .set_contact(&tenant, &agent, &value, b.expires_at_ms)
                    .await
            }
            None => self.engine.clear_contact(&tenant, &agent).await,
        }
        .map_err(unavailable)
    }

    /// The live binding of an agent's phone, from the location service (any node's REGISTER).
    pub async fn phone_of(&self, tenant: &TenantId, agent: &str) -> Option<Binding> {
        let agent = AgentId::parse(agent.to_owned()).ok()?;
        let now = now_ms();
        let value = self.engine.contact(tenant, &agent, now).await.ok()??;
        // `contact|source|node`; bindings written before nodes were recorded lack the node.
        let (rest, last) = value.rsplit_once('|')?;
        let (contact, (source, transport), node) = match Binding::parse_stored_source(last) {
            Some(source) => (rest, source, None),
            None => {
                let (contact, source) = rest.rsplit_once('|')?;
                let node = Some(last.to_owned()).filter(|n| !n.is_empty());
                (contact, Binding::parse_stored_source(source)?, node)
            }
        };
        Some(Binding {
            contact: contact.to_owned(),
            source,
            expires_at_ms: now,
            node,
            transport,
        })
    }

    /// For a browser's binding, the closing signal of its WebSocket connection on this node
    /// (`Err` when that connection is gone); `Ok(None)` for other phones.
    pub fn closed_signal_of(
        &self,
        b: &Binding,
    ) -> Result<Option<CancellationToken>, crate::ws::FlowGone> {
        if !b.is_websocket() {
            return Ok(None);
        }
        self.ws_flows
            .closed_signal(b.source)
            .map(Some)
            .ok_or(crate::ws::FlowGone)
    }

    /// An agent's phone went away: an agent waiting for calls is made not ready, so the
    /// engine stops offering calls nobody can take.
    async fn phone_gone(&self, tenant: &str, agent: &str) {
        let Ok(tenant) = TenantId::parse(tenant.to_owned()) else {
            return;
        };
        let Ok(agent) = AgentId::parse(agent.to_owned()) else {
            return;
        };
        let ready = matches!(
            self.engine.agent(&tenant, &agent).await,
            Ok(Some(v)) if v.status == switchboard_state::AgentStatus::Ready
        );
        if ready {
            let Ok(reason) = switchboard_state::ReasonCode::parse("sip_unregistered") else {
                return;
            };
            let cmd = Command::SetNotReady { agent, reason };
            if let Err(e) = self.engine.run(&tenant, now_ms(), cmd).await {
                tracing::warn!(error = %e, "not-ready after unregister");
            }
        }
    }

    /// A browser proves itself with its api access token (`Authorization: Bearer`, RFC 8898),
    /// over WebSocket only. The token names the agent; the host of `to` (To of a REGISTER,
    /// From of an INVITE) must name the token's tenant. Refusals count towards the source's
    /// ban like failed digests.
    pub(crate) async fn authenticate_bearer(
        &self,
        tx: &Transaction,
        token: &str,
        to: Result<rsipstack::sip::Uri, rsipstack::sip::Error>,
        transport: rsipstack::sip::Transport,
    ) -> Result<crate::token::TokenIdentity, Refusal> {
        use crate::token::TokenRefusal;
        let now = now_ms();
        let source = source_of(tx).ok_or((StatusCode::BadRequest, Some("no source"), vec![]))?;
        if !matches!(
            transport,
            rsipstack::sip::Transport::Ws | rsipstack::sip::Transport::Wss
        ) {
            return Err((
                StatusCode::Forbidden,
                Some("bearer tokens only over WebSocket"),
                vec![],
            ));
        }
        let uri = to.map_err(|_| (StatusCode::BadRequest, Some("bad To"), vec![]))?;
        let realm = tenant_slug_of(&uri.host_with_port.host.to_string()).to_owned();
        // Per source, so failures ban the source without locking anyone else's logins.
        let key = format!("bearer@{}", source.ip());
        let fail = |status: StatusCode, reason: &'static str| {
            self.guard.record_failure(source.ip(), &key, now);
            self.metrics.auth_failures.inc();
            tracing::info!(%source, reason, "bearer authentication failed");
            let challenge = Header::WwwAuthenticate(
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\"").into(),
            );
            let headers = if status == StatusCode::Unauthorized {
                vec![challenge]
            } else {
                vec![]
            };
            (status, Some(reason), headers)
        };
        let Some(verify) = &self.agent_tokens else {
            return Err(fail(StatusCode::Unauthorized, "token login is off"));
        };
        if token.len() > crate::token::MAX_TOKEN {
            return Err(fail(StatusCode::Unauthorized, "token too long"));
        }
        let id = match verify(token.to_owned()).await {
            Ok(id) => id,
            Err(TokenRefusal::Invalid(reason)) => {
                return Err(fail(StatusCode::Unauthorized, reason));
            }
            Err(TokenRefusal::Forbidden(reason)) => {
                return Err(fail(StatusCode::Forbidden, reason));
            }
            Err(TokenRefusal::Unavailable) => {
                return Err((StatusCode::ServiceUnavailable, Some("token check"), vec![]));
            }
        };
        let tenant = self.db.tenant_by_slug(&realm).await.map_err(|_| {
            (
                StatusCode::ServiceUnavailable,
                Some("tenant lookup"),
                vec![],
            )
        })?;
        if tenant.map(|t| t.id) != Some(id.tenant) {
            return Err(fail(StatusCode::Forbidden, "token is for another tenant"));
        }
        self.guard.record_success(source.ip(), now);
        Ok(id)
    }

    /// A WebSocket connection closed: the registrations made over it go (an agent waiting for
    /// calls is made not ready, as when a phone unregisters), and the location service
    /// forgets the binding unless a newer registration (another connection, another node)
    /// replaced it. Calls riding on it end by its closing signal.
    pub async fn ws_flow_closed(&self, peer: SocketAddr) {
        for (tenant, agent) in self.location.unbind_flow(peer) {
            let Ok(tenant_id) = TenantId::parse(tenant.clone()) else {
                continue;
            };
            let ours = self.phone_of(&tenant_id, &agent).await.is_some_and(|b| {
                b.is_websocket()
                    && b.source == peer
                    && b.node.as_deref() == Some(self.cfg.node_id.as_str())
            });
            if ours && let Err(e) = self.store_binding(&tenant, &agent, None).await {
                tracing::warn!(error = ?e.1, "clearing a closed connection's binding");
            }
            tracing::info!(tenant = %tenant, agent = %agent, %peer, "registration gone with its WebSocket");
            self.phone_gone(&tenant, &agent).await;
        }
    }

    async fn sweep_registrations(&self) {
        for (tenant, agent) in self.location.sweep(now_ms()) {
            self.phone_gone(&tenant, &agent).await;
        }
    }
}
