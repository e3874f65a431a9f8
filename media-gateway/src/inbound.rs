//! One inbound call from a carrier trunk, as a task: the IO around the sans-IO
//! [`crate::call::Call`].
//!
//! The task owns the caller's server dialog, the agent's client dialog (one per offer), the
//! call's RTP session and its engine notices. It turns what happens on them into
//! [`Input`]s, and the machine's [`Output`]s into SIP messages, engine commands and media
//! actions. When the machine ends, the task writes the CDR (idempotent per call id).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use switchboard_db::Access;
use switchboard_db::calls::CallRecord;
use switchboard_media::g711::Law;
use switchboard_media::sdp::{self, Codec, Direction, Negotiated, Sdp};
use switchboard_relay::{Leg, MediaEvent, Prompt, Session, SessionStats};
use switchboard_sip_guard::CapLimits;
use switchboard_state::{AgentId, CallEntry, CallId, Command, NodeId, QueueId, TenantId};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::call::{Call, EndCause, Engine, Input, Media, Output, Sip, State};
use crate::cluster::{JournalEntry, Placement};
use crate::legs::{LegNo, Legs, MediaKind, Role};
use crate::node::{CallNotice, Gateway, header_value, now_ms, source_of};
use switchboard_state::{ControlReply, ControlRequest};

/// Telephone-event payload type we offer when the peer offered none.
const DTMF_PT: u8 = 101;

/// Smallest RFC 4028 session interval we accept (the RFC's recommended Min-SE), in seconds.
pub const MIN_SE_S: u64 = 90;
/// Longest session interval we grant (a larger request is answered with this one).
pub const MAX_SE_S: u64 = 86_400;

/// The caller's RFC 4028 request: `Session-Expires` (or compact `x`) in seconds, and whether it
/// lists `timer` in Supported.
pub fn session_timer_request(req: &rsipstack::sip::Request) -> Option<(u64, bool)> {
    let value = header_value(req, "session-expires").or_else(|| header_value(req, "x"))?;
    let secs = value
        .split(';')
        .next()?
        .trim()
        .parse::<u64>()
        .ok()?
        .min(MAX_SE_S);
    let supported = header_value(req, "supported")
        .or_else(|| header_value(req, "k"))
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("timer")));
    Some((secs, supported))
}

/// The answer to a session refresh (UPDATE or re-INVITE) from a peer that refreshes itself:
/// `Ok` with the headers of the 200 (the requested interval echoed, `refresher=uac`, and
/// `Require: timer` when the peer supports it), or `Err` with the headers of a 422 when the
/// interval is under [`MIN_SE_S`]. No Session-Expires asked, none answered.
pub fn session_refresh_answer(req: &rsipstack::sip::Request) -> Result<Vec<Header>, Vec<Header>> {
    let Some((secs, supported)) = session_timer_request(req) else {
        return Ok(Vec::new());
    };
    if secs < MIN_SE_S {
        return Err(vec![Header::MinSE(MIN_SE_S.to_string().into())]);
    }
    let mut headers = vec![Header::SessionExpires(
        format!("{secs};refresher=uac").into(),
    )];
    if supported {
        headers.push(Header::Require("timer".into()));
    }
    Ok(headers)
}

pub(crate) fn law_of(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Ulaw,
        Codec::Pcma => Law::Alaw,
    }
}

/// `+15550100100` from `sip:+15550100100@host` or `sip:15550100100@host`.
pub fn dialled_number(uri: &Uri) -> Option<String> {
    let user = uri.auth.as_ref()?.user.trim();
    let digits = user.strip_prefix('+').unwrap_or(user);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("+{digits}"))
}

pub(crate) fn remote_rtp(n: &Negotiated) -> Option<SocketAddr> {
    format!("{}:{}", n.remote_addr, n.remote_port).parse().ok()
}

pub(crate) fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

/// Answers the INVITE with a final error before any dialog exists.
async fn refuse(tx: &mut Transaction, status: StatusCode, extra: Vec<Header>) {
    let _ = tx.reply_with(status, extra, None).await;
}

/// Runs one inbound call to its end.
pub async fn run(gw: Arc<Gateway>, mut tx: Transaction) {
    let now = now_ms();
    let Some(source) = source_of(&tx) else {
        return;
    };
    let setup_permit = match gw.admission.try_admit(now) {
        Ok(p) => p,
        Err(retry) => {
            let after = Header::RetryAfter(retry.after_secs.to_string().into());
            return refuse(&mut tx, StatusCode::ServiceUnavailable, vec![after]).await;
        }
    };
    if let Err(refusal) = gw.authenticate_trunk(&tx) {
        if refusal.0 == StatusCode::Forbidden {
            tracing::info!(%source, "INVITE from an unknown source");
        }
        return crate::node::refuse(&mut tx, refusal).await;
    }
    match gw.placement() {
        Placement::Here => {}
        Placement::Redirect(addr) => {
            let user = tx
                .original
                .uri
                .auth
                .as_ref()
                .map(|a| a.user.clone())
                .unwrap_or_default();
            let contact = Header::Contact(format!("<sip:{user}@{addr}>").into());
            let _ = tx
                .reply_with(StatusCode::MovedTemporarily, vec![contact], None)
                .await;
            return;
        }
        Placement::Refuse {
            retry_after_s,
            reason,
        } => {
            let after = Header::RetryAfter(retry_after_s.to_string().into());
            let warning = Header::Warning(format!("399 switchboard \"{reason}\"").into());
            return refuse(
                &mut tx,
                StatusCode::ServiceUnavailable,
                vec![after, warning],
            )
            .await;
        }
    }
    let Some(dialled) = dialled_number(&tx.original.uri) else {
        return refuse(&mut tx, StatusCode::NotFound, vec![]).await;
    };
    let from_number = tx
        .original
        .from_header()
        .and_then(|f| f.uri())
        .ok()
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default();
    let offer = std::str::from_utf8(&tx.original.body)
        .ok()
        .and_then(|t| Sdp::parse(t).ok())
        .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok());
    let Some(offer) = offer else {
        return refuse(&mut tx, StatusCode::NotAcceptableHere, vec![]).await;
    };
    let Some(caller_rtp) = remote_rtp(&offer) else {
        return refuse(&mut tx, StatusCode::NotAcceptableHere, vec![]).await;
    };
    let session_timer = session_timer_request(&tx.original);
    if let Some((secs, _)) = session_timer
        && secs < MIN_SE_S
    {
        let min_se = Header::MinSE(MIN_SE_S.to_string().into());
        return refuse(&mut tx, StatusCode::SessionIntervalTooSmall, vec![min_se]).await;
    }
    let call_id = uuid::Uuid::now_v7().to_string();
    // A root span (no contextual parent), attached to the call's futures with `instrument`:
    // entering it here and holding the guard across awaits left it entered on the worker
    // thread while other calls ran, so every new call's span became the child of the one
    // before. The chain kept every finished call's span alive, and closing it recursed once
    // per call until the stack overflowed (`scripts/bench cps` crashed after ~18k calls).
    let span = tracing::info_span!(parent: None, "call", call = %call_id, dialled = %dialled);

    let (state_tx, caller_states) = gw.dialogs.new_dialog_state_channel();
    let contact = format!("sip:gw@{}", gw.sip_addr).parse::<Uri>().ok();
    let dialog = match gw
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(d) => d,
        Err(e) => {
            span.in_scope(|| tracing::warn!(error = %e, "server dialog"));
            return refuse(&mut tx, StatusCode::ServerInternalError, vec![]).await;
        }
    };
    let mut driver = dialog.clone();
    let invite_driver = tokio::spawn(
        async move {
            if let Err(e) = driver.handle(&mut tx).await {
                tracing::debug!(error = %e, "INVITE transaction");
            }
        }
        .instrument(span.clone()),
    );
    let _active = crate::metrics::ActiveCall::start(&gw.metrics, "inbound");
    let mut call = Call::new(gw.cfg.ring_timeout());
    if let Some((secs, _)) = session_timer {
        call.set_session_interval(secs * 1000);
    }
    let mut legs = Legs::default();
    let caller_leg = legs.start(Role::Caller, &from_number, Utc::now());
    legs.set_codec(caller_leg, MediaKind::Rtp, offer.codec.name());
    let mut task = CallTask {
        legs,
        caller_leg,
        caller_status: None,
        setup_permit: Some(setup_permit),
        gw: gw.clone(),
        engine_call: call_id.clone(),
        recording: None,
        recording_policy: None,
        pause_codes: switchboard_recording::PauseCodes::new(None, None),
        call_id,
        call,
        session_timer,
        caller: dialog,
        caller_states,
        caller_reinvite: None,
        agent: None,
        offer,
        caller_rtp,
        dialled,
        from_number,
        tenant: None,
        queue: None,
        media: None,
        media_events: None,
        notices: None,
        started_at: Utc::now(),
        queued_at: None,
        answered_at: None,
        answered_by: None,
        _cap: None,
        invite_driver: Some(invite_driver),
        caller_bye_sent: false,
    };
    task.run().instrument(span).await;
}

/// Where a blind transfer goes.
enum TransferTo {
    /// An outside number, on the tenant's trunk.
    Number(String),
    /// A queue of the tenant, optionally to one agent first.
    Queue {
        queue: String,
        preferred_agent: Option<String>,
    },
}

/// The agent leg of the current offer.
struct AgentLeg {
    agent: String,
    /// Its row in the call's legs.
    leg: LegNo,
    dialog: InviteDialog,
    states: DialogStateReceiver,
    confirmed: bool,
    /// Cancelled when the agent's WebSocket connection closes (browser agents only).
    flow_closed: Option<tokio_util::sync::CancellationToken>,
    /// A browser's WebRTC media: offered with the INVITE, running once answered (dropped
    /// with the leg).
    webrtc: Option<AgentWebrtc>,
}

/// The WebRTC side of a browser's agent leg.
enum AgentWebrtc {
    Offered(Box<switchboard_webrtc::OfferedLeg>),
    Running(switchboard_webrtc::LegHandle),
}

/// The next event of a running WebRTC leg; never without one.
pub(crate) async fn webrtc_event(
    leg: Option<&mut switchboard_webrtc::LegHandle>,
) -> Option<switchboard_webrtc::LegEvent> {
    match leg {
        Some(l) => l.next_event().await,
        None => std::future::pending().await,
    }
}

/// A running recording: where its pause/resume controls go.
struct RecordingHandle {
    control: mpsc::Sender<crate::record::RecordControl>,
    started_ms: u64,
    paused: bool,
}

struct CallTask {
    /// Every SIP leg of the call, for the CDR.
    legs: Legs,
    caller_leg: LegNo,
    /// The final status the caller got, if the call was refused.
    caller_status: Option<u16>,
    /// Counts against `gateway.max_calls_in_setup` until the call is answered (or ends).
    setup_permit: Option<switchboard_sip_guard::admission::Permit>,
    gw: Arc<Gateway>,
    call_id: String,
    /// The id the engine knows the call by (changes with each blind transfer).
    engine_call: String,
    /// The call's recording, while it runs.
    recording: Option<RecordingHandle>,
    /// Whether the call is recorded and its pause codes (read with the route, when the node
    /// records at all).
    recording_policy: Option<switchboard_recording::RecordingPolicy>,
    /// The agent's keypad, watched for the pause and resume codes.
    pause_codes: switchboard_recording::PauseCodes,
    call: Call,
    /// The caller's RFC 4028 request (interval in seconds, `Supported: timer`).
    session_timer: Option<(u64, bool)>,
    caller: InviteDialog,
    caller_states: DialogStateReceiver,
    /// The caller's re-INVITE waiting for our answer.
    caller_reinvite: Option<(TransactionHandle, Direction)>,
    agent: Option<AgentLeg>,
    offer: Negotiated,
    caller_rtp: SocketAddr,
    dialled: String,
    from_number: String,
    tenant: Option<TenantId>,
    queue: Option<uuid::Uuid>,
    media: Option<Session>,
    media_events: Option<mpsc::Receiver<MediaEvent>>,
    notices: Option<mpsc::Receiver<CallNotice>>,
    started_at: DateTime<Utc>,
    queued_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    answered_by: Option<String>,
    _cap: Option<switchboard_sip_guard::CapPermit>,
    /// The task answering the caller's INVITE transaction (ends with its ACK or timeout).
    invite_driver: Option<tokio::task::JoinHandle<()>>,
    /// We sent the caller a BYE (that task forgets the caller's dialog when it is done).
    caller_bye_sent: bool,
}

/// Takes a finished dialog out of the stack's registry: rsipstack keeps every dialog it
/// registered until the application removes it. Without this each call left its two dialogs,
/// their channels and messages behind (`scripts/bench cps`: RSS grew 65 KiB per call, 24 KiB
/// with it, most of that freed when the transactions expire). Call it once nothing more is
/// sent on the dialog: removal cancels the dialog's pending requests.
pub(crate) fn forget(dialogs: &DialogLayer, dialog: &InviteDialog) {
    dialogs.remove_dialog(&dialog.id());
}

/// Hangs up a dialog, then forgets it.
pub(crate) fn bye_and_forget(dialogs: Arc<DialogLayer>, dialog: InviteDialog) {
    tokio::spawn(async move {
        if let Err(e) = dialog.bye().await {
            tracing::debug!(error = %e, "BYE");
        }
        forget(&dialogs, &dialog);
    });
}

/// What woke the task.
enum Wake {
    Caller(Option<DialogState>),
    Agent(Option<DialogState>),
    /// The agent leg's WebSocket connection closed.
    AgentFlowClosed,
    /// The agent leg's WebRTC media (`None`: its task is gone).
    AgentWebrtc(Option<switchboard_webrtc::LegEvent>),
    Notice(Option<CallNotice>),
    Media(Option<MediaEvent>),
    Timer,
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `token` (a WebSocket connection's closing signal) is cancelled; never without
/// one.
pub(crate) async fn flow_closed(token: Option<&tokio_util::sync::CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn recv_unbounded(rx: Option<&mut DialogStateReceiver>) -> Option<DialogState> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl CallTask {
    fn now(&self) -> u64 {
        now_ms()
    }

    /// RFC 4028 headers for a 2xx to the caller: the caller refreshes.
    fn session_headers(&self) -> Vec<Header> {
        let Some((secs, supported)) = self.session_timer else {
            return Vec::new();
        };
        let mut h = vec![Header::SessionExpires(
            format!("{secs};refresher=uac").into(),
        )];
        if supported {
            h.push(Header::Require("timer".into()));
        }
        h
    }

    /// The caller's number for the queue entry (the agent's screen pop): the From user as the
    /// carrier sent it, cut to the engine's limit, without control characters.
    fn caller_for_engine(&self) -> Option<String> {
        let c: String = self
            .from_number
            .chars()
            .filter(|c| !c.is_control())
            .scan(0usize, |len, c| {
                *len += c.len_utf8();
                (*len <= switchboard_state::MAX_CALLER_LEN).then_some(c)
            })
            .collect();
        (!c.is_empty()).then_some(c)
    }

    /// Writes the call's journal entry: what its CDR needs should this node crash (a small
    /// file, written at routing, queueing and answer).
    fn journal(&self) {
        let (Some(journal), Some(tenant)) = (&self.gw.journal, self.tenant_uuid()) else {
            return;
        };
        let entry = JournalEntry {
            tenant,
            call_id: self.call_id.clone(),
            engine_call: self.engine_call.clone(),
            from_number: self.from_number.chars().take(64).collect(),
            to_number: self.dialled.clone(),
            queue_id: self.queue,
            agent_id: self.answered_by.as_deref().and_then(|a| a.parse().ok()),
            started_at: self.started_at,
            queued_at: self.queued_at,
            answered_at: self.answered_at,
        };
        if let Err(e) = journal.write(&entry) {
            tracing::warn!(error = %e, "call journal");
        }
    }

    async fn run(&mut self) {
        let route = self.route().await;
        if route.is_ok() {
            self.journal();
        }
        let now = self.now();
        self.call.handle(now, Input::Routed(route));
        loop {
            while let Some(out) = self.call.poll_output() {
                self.execute(out).await;
            }
            match self.call.state() {
                State::Ended(_) => break,
                State::Bridged { .. } => self.setup_permit = None,
                _ => {}
            }
            let deadline = self.call.next_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let agent_closed = self.agent.as_ref().and_then(|a| a.flow_closed.clone());
            let (agent_states, agent_media) = match self.agent.as_mut() {
                Some(a) => (
                    Some(&mut a.states),
                    match a.webrtc.as_mut() {
                        Some(AgentWebrtc::Running(h)) => Some(h),
                        _ => None,
                    },
                ),
                None => (None, None),
            };
            let wake = tokio::select! {
                s = self.caller_states.recv() => Wake::Caller(s),
                s = recv_unbounded(agent_states) => Wake::Agent(s),
                _ = flow_closed(agent_closed.as_ref()) => Wake::AgentFlowClosed,
                e = webrtc_event(agent_media) => Wake::AgentWebrtc(e),
                n = recv_opt(&mut self.notices) => Wake::Notice(n),
                m = recv_opt(&mut self.media_events) => Wake::Media(m),
                _ = sleep => Wake::Timer,
            };
            self.on_wake(wake).await;
        }
    }

    /// Number -> tenant -> queue, with the tenant's concurrency cap and the RTP session.
    async fn route(&mut self) -> Result<String, EndCause> {
        let route = match self.gw.db.route_for_number(&self.dialled).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(EndCause::NoRoute),
            Err(e) => {
                tracing::warn!(error = %e, "route lookup");
                return Err(EndCause::Overloaded);
            }
        };
        self.tenant = TenantId::parse(route.tenant_id.to_string()).ok();
        if !route.tenant_active {
            return Err(EndCause::TenantSuspended);
        }
        let queue = route.queue_id.ok_or(EndCause::NoRoute)?;
        self.queue = Some(queue);
        if self.gw.recorder.is_some() {
            self.recording_policy =
                Some(crate::record::load_policy(&self.gw.db, route.tenant_id, Some(queue)).await);
        }
        let limits = CapLimits {
            max_per_tenant: self.gw.cfg.max_calls_per_tenant,
            max_per_seat: u32::MAX,
        };
        let tenant_key = route.tenant_id.to_string();
        self._cap = Some(
            self.gw
                .caps
                .try_acquire(&tenant_key, None, limits)
                .map_err(|_| EndCause::Overloaded)?,
        );
        let (session, events) = self.gw.relay.open(&self.call_id).map_err(|e| {
            tracing::warn!(error = %e, "RTP session");
            EndCause::Overloaded
        })?;
        let dtmf = self.offer.dtmf_pt;
        if let Err(e) = session
            .set_peer(Leg::Caller, self.caller_rtp, law_of(self.offer.codec), dtmf)
            .await
        {
            tracing::warn!(error = %e, "caller RTP peer");
        }
        self.media = Some(session);
        self.media_events = Some(events);
        let tenant = self.tenant.clone().ok_or(EndCause::NoRoute)?;
        self.notices = Some(
            self.gw
                .watch_call(&tenant, &self.call_id)
                .await
                .map_err(|_| EndCause::Overloaded)?,
        );
        Ok(queue.to_string())
    }

    /// Our SDP toward `leg`, answering or offering `direction`.
    fn our_sdp(&self, leg: Leg, direction: Direction, version: u64) -> Option<Vec<u8>> {
        let media = self.media.as_ref()?;
        let port = media.local_addr(leg).port();
        let dtmf = match leg {
            Leg::Caller => self.offer.dtmf_pt,
            Leg::Agent => Some(DTMF_PT),
        };
        let ip = self.gw.cfg.advertised_ip().to_string();
        let session_id = self.started_at.timestamp_millis().unsigned_abs();
        let text = sdp::render(
            session_id,
            version,
            &ip,
            port,
            self.offer.codec,
            dtmf,
            direction,
        );
        Some(text.into_bytes())
    }

    async fn execute(&mut self, out: Output) {
        match out {
            Output::Sip(sip) => self.sip(sip).await,
            Output::Engine(cmd) => self.engine(cmd).await,
            Output::Media(m) => self.media_action(m).await,
            Output::Ended(cause) => self.finish(cause).await,
        }
    }

    async fn sip(&mut self, sip: Sip) {
        match sip {
            // rsipstack sends 100 Trying itself.
            Sip::CallerResponse { status: 100, .. } => {}
            Sip::CallerResponse { status: 183, .. } => {
                let body = self.our_sdp(Leg::Caller, Direction::SendRecv, 1);
                if let Err(e) = self.caller.ringing(Some(sdp_headers()), body) {
                    tracing::debug!(error = %e, "183");
                }
            }
            Sip::CallerResponse { status: 487, .. } => {
                // The stack answered the CANCEL and the INVITE (487) already.
            }
            Sip::CallerResponse { status, reason } => {
                self.caller_status = Some(status);
                let code = StatusCode::from(status);
                let _ = self.caller.reject(Some(code), Some(reason.to_owned()));
            }
            Sip::CallerAnswer => {
                self.legs.answered(self.caller_leg, Utc::now());
                let body = self.our_sdp(Leg::Caller, Direction::SendRecv, 2);
                let mut headers = sdp_headers();
                headers.extend(self.session_headers());
                if let Err(e) = self.caller.accept(Some(headers), body) {
                    tracing::warn!(error = %e, "200 to caller");
                }
            }
            Sip::CallerReinviteOk { .. } => {
                if let Some((handle, offered)) = self.caller_reinvite.take() {
                    let body = self.our_sdp(Leg::Caller, offered.answer(), 3);
                    let mut headers = sdp_headers();
                    headers.extend(self.session_headers());
                    let _ = handle.respond(StatusCode::OK, Some(headers), body).await;
                }
            }
            Sip::CallerBye => {
                self.caller_bye_sent = true;
                bye_and_forget(self.gw.dialogs.clone(), self.caller.clone());
            }
            Sip::AgentInvite { contact } => self.invite_agent(contact).await,
            Sip::AgentCancel => {
                if let Some(leg) = self.take_agent_leg(Some(487), "") {
                    tokio::spawn(async move { leg.dialog.cancel().await });
                }
            }
            Sip::AgentBye => {
                if let Some(leg) = self.take_agent_leg(None, "hangup") {
                    bye_and_forget(self.gw.dialogs.clone(), leg.dialog);
                }
            }
            Sip::RemoteInvite { number } => self.invite_remote(number).await,
            Sip::RemoteCancel => {
                if let Some(leg) = self.take_agent_leg(Some(487), "") {
                    tokio::spawn(async move { leg.dialog.cancel().await });
                }
            }
            Sip::RemoteBye => {
                if let Some(leg) = self.take_agent_leg(None, "hangup") {
                    bye_and_forget(self.gw.dialogs.clone(), leg.dialog);
                }
            }
            Sip::AgentReinvite { hold } => {
                let direction = if hold {
                    Direction::SendOnly
                } else {
                    Direction::SendRecv
                };
                let Some(leg) = &self.agent else {
                    return;
                };
                let dialog = leg.dialog.clone();
                if let Some(AgentWebrtc::Running(h)) = &leg.webrtc {
                    let offer = match h.offer_direction(direction).await {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::warn!(error = %e, "WebRTC re-offer");
                            return;
                        }
                    };
                    // The answer is applied when it comes; the call does not wait for it.
                    let control = h.control().clone();
                    tokio::spawn(
                        async move {
                            let answer = dialog
                                .reinvite(Some(sdp_headers()), Some(offer.into_bytes()))
                                .await;
                            match answer {
                                Ok(Some(resp)) if resp.status_code == StatusCode::OK => {
                                    if let Err(e) = control.accept_answer(&resp.body).await {
                                        tracing::warn!(error = %e, "WebRTC re-answer");
                                    }
                                }
                                other => {
                                    tracing::info!(?other, "agent re-INVITE not answered 200")
                                }
                            }
                        }
                        .in_current_span(),
                    );
                    return;
                }
                let body = self.our_sdp(Leg::Agent, direction, 3);
                tokio::spawn(async move { dialog.reinvite(Some(sdp_headers()), body).await });
            }
        }
    }

    /// Blind transfer to an outside number: the outside party takes the agent leg's place (same
    /// relay leg), dialled on the carrier trunk with the tenant's caller id.
    async fn invite_remote(&mut self, number: String) {
        let route = match self.tenant_uuid() {
            Some(t) => crate::outbound::outside_route(&self.gw, t, &number)
                .await
                .map_err(|(status, ..)| status.code()),
            None => Err(503),
        };
        let (trunk, caller_id) = match route {
            Ok(r) => (r.trunk, r.permission.caller_id),
            Err(status) => {
                self.call.handle(self.now(), Input::RemoteFailed { status });
                return;
            }
        };
        let offer = self.our_sdp(Leg::Agent, Direction::SendRecv, 4);
        match crate::outbound::trunk_invite(&self.gw, &trunk, &number, &caller_id, offer) {
            Ok((dialog, states)) => {
                let leg = self.legs.start(Role::External, &number, Utc::now());
                self.agent = Some(AgentLeg {
                    leg,
                    agent: number,
                    dialog,
                    states,
                    confirmed: false,
                    flow_closed: None,
                    webrtc: None,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "transfer INVITE to the trunk");
                self.legs.failed(Role::External, &number, Utc::now(), 503);
                self.call
                    .handle(self.now(), Input::RemoteFailed { status: 503 });
            }
        }
    }

    fn tenant_uuid(&self) -> Option<uuid::Uuid> {
        self.tenant.as_ref()?.as_str().parse().ok()
    }

    /// Sends the INVITE to the offered agent's registered phone; no phone means the agent
    /// cannot take it (480, back to the queue).
    async fn invite_agent(&mut self, agent: String) {
        let binding = match &self.tenant {
            Some(t) => self.gw.phone_of(t, &agent).await,
            None => None,
        };
        let Some(binding) = binding else {
            tracing::info!(%agent, "offered agent has no registered phone");
            self.legs.failed(Role::Agent, &agent, Utc::now(), 480);
            self.call
                .handle(self.now(), Input::AgentFailed { status: 480 });
            return;
        };
        // A phone registered on a live peer node is reached through that node (the internal
        // trunk); our own phones, or those of a node that is gone, directly.
        let tenant = self
            .tenant
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let via_peer = self.gw.peer_for(&binding).and_then(|trunk| {
            let secret = self.gw.cfg.auth_secret.as_bytes();
            let token = crate::trunk::sign(secret, now_ms(), &tenant, &agent)?;
            Some((trunk, token))
        });
        let mut flow_closed = None;
        let mut webrtc = None;
        let (target, destination, headers) = match via_peer {
            Some((trunk, token)) => {
                tracing::info!(%agent, %trunk, "agent's phone is on a peer node: internal trunk");
                let headers = vec![
                    Header::Other(crate::trunk::TOKEN_HEADER.into(), token),
                    Header::Other(crate::trunk::TENANT_HEADER.into(), tenant.clone()),
                ];
                (
                    format!("sip:{agent}@{trunk}"),
                    SipAddr::from(trunk),
                    Some(headers),
                )
            }
            None if binding.is_websocket() => {
                // A browser: only over its WebSocket connection, if it is still open here.
                let Some(closed) = self.gw.ws_flows.closed_signal(binding.source) else {
                    tracing::info!(%agent, "offered agent's WebSocket is gone");
                    self.legs.failed(Role::Agent, &agent, Utc::now(), 480);
                    self.call
                        .handle(self.now(), Input::AgentFailed { status: 480 });
                    return;
                };
                flow_closed = Some(closed);
                // Its media is WebRTC: our offer (carrier's law first, then Opus).
                let offered = self
                    .gw
                    .webrtc
                    .as_ref()
                    .map(|w| w.offer(law_of(self.offer.codec)));
                match offered {
                    Some(Ok((leg, sdp))) => webrtc = Some((leg, sdp)),
                    other => {
                        if let Some(Err(e)) = other {
                            tracing::warn!(%agent, error = %e, "WebRTC offer");
                        }
                        self.legs.failed(Role::Agent, &agent, Utc::now(), 480);
                        self.call
                            .handle(self.now(), Input::AgentFailed { status: 480 });
                        return;
                    }
                }
                (binding.contact.clone(), binding.destination(), None)
            }
            None => (binding.contact.clone(), binding.destination(), None),
        };
        let (Ok(callee), Ok(caller), Ok(contact)) = (
            target.parse::<Uri>(),
            format!("sip:{}@{}", self.from_number, self.gw.sip_addr).parse::<Uri>(),
            format!("sip:gw@{}", self.gw.sip_addr).parse::<Uri>(),
        ) else {
            self.call
                .handle(self.now(), Input::AgentFailed { status: 400 });
            return;
        };
        let opt = InviteOption {
            caller,
            callee,
            contact,
            destination: Some(destination),
            content_type: Some("application/sdp".into()),
            offer: match &webrtc {
                Some((_, sdp)) => Some(sdp.clone().into_bytes()),
                None => self.our_sdp(Leg::Agent, Direction::SendRecv, 1),
            },
            headers,
            ..Default::default()
        };
        let (state_tx, states) = self.gw.dialogs.new_dialog_state_channel();
        match self.gw.dialogs.do_invite_async(opt, state_tx) {
            Ok((dialog, _join)) => {
                let leg = self.legs.start(Role::Agent, &agent, Utc::now());
                self.agent = Some(AgentLeg {
                    leg,
                    agent,
                    dialog,
                    states,
                    confirmed: false,
                    flow_closed,
                    webrtc: webrtc.map(|(leg, _)| AgentWebrtc::Offered(Box::new(leg))),
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "INVITE to agent");
                self.legs.failed(Role::Agent, &agent, Utc::now(), 500);
                self.call
                    .handle(self.now(), Input::AgentFailed { status: 500 });
            }
        }
    }

    async fn engine(&mut self, cmd: Engine) {
        let Some(tenant) = self.tenant.clone() else {
            return;
        };
        let Ok(call) = CallId::parse(self.engine_call.clone()) else {
            return;
        };
        let command = match cmd {
            Engine::Transfer {
                queue,
                preferred_agent,
            } => {
                let (Ok(queue), Ok(node)) = (
                    QueueId::parse(queue),
                    NodeId::parse(self.gw.cfg.node_id.clone()),
                ) else {
                    return;
                };
                // The previous engine call ended (Hangup came first): each transfer is a new
                // engine call, `<call id>.t<n>`; the CDR keeps the one call id.
                let next = format!("{}.t{}", self.call_id, self.call.transfers());
                let Ok(call) = CallId::parse(next.clone()) else {
                    return;
                };
                self.gw.unwatch_call(&tenant, &self.engine_call);
                self.engine_call = next;
                match self.gw.watch_call(&tenant, call.as_str()).await {
                    Ok(rx) => self.notices = Some(rx),
                    Err(e) => tracing::warn!(error = %e, "engine feed after transfer"),
                }
                let mut entry = CallEntry::new(call, queue, node);
                entry.preferred_agent = preferred_agent.and_then(|a| AgentId::parse(a).ok());
                entry.caller = self.caller_for_engine();
                Command::Enqueue { entry }
            }
            Engine::Enqueue { queue } => {
                let (Ok(queue), Ok(node)) = (
                    QueueId::parse(queue),
                    NodeId::parse(self.gw.cfg.node_id.clone()),
                ) else {
                    return;
                };
                self.queued_at = Some(Utc::now());
                let mut entry = CallEntry::new(call, queue, node);
                entry.caller = self.caller_for_engine();
                Command::Enqueue { entry }
            }
            Engine::Answer { agent } => {
                let Ok(agent) = AgentId::parse(agent) else {
                    return;
                };
                Command::Answer { call, agent }
            }
            Engine::Reject { agent } => {
                let Ok(agent) = AgentId::parse(agent) else {
                    return;
                };
                Command::Reject { call, agent }
            }
            Engine::Hangup => Command::Hangup { call },
        };
        let enqueue = matches!(command, Command::Enqueue { .. });
        match self.gw.engine.run(&tenant, self.now(), command).await {
            Ok(_) => {
                if enqueue {
                    self.journal();
                    self.call.handle(self.now(), Input::Enqueued);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "engine refused");
                if enqueue {
                    self.call.handle(self.now(), Input::LeftQueue);
                }
            }
        }
    }

    async fn media_action(&mut self, m: Media) {
        if m == Media::Bridge {
            self.start_recording().await;
        }
        let Some(session) = &self.media else {
            return;
        };
        let result = match m {
            Media::PlayHold => {
                let music = match &self.tenant {
                    Some(t) => self.gw.prompts.hold_music(t.as_str()).await,
                    None => self.gw.hold_music.clone(),
                };
                session.play(Leg::Caller, Prompt::looped(music)).await
            }
            Media::Announce { position, eta_ms } => {
                let from_store = match &self.tenant {
                    Some(t) => self.gw.prompts.announcements(t.as_str()).await,
                    None => None,
                };
                match from_store.as_ref().or(self.gw.announcements.as_ref()) {
                    Some(a) => {
                        session
                            .play(Leg::Caller, Prompt::once(a.build(position, eta_ms)))
                            .await
                    }
                    None => Ok(()),
                }
            }
            Media::Bridge => session.bridge().await,
            Media::Release => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "media");
        }
    }

    async fn on_wake(&mut self, wake: Wake) {
        let now = self.now();
        match wake {
            Wake::Timer => self.call.handle_timeout(now),
            Wake::Caller(None) => self.call.handle(now, Input::CallerBye),
            Wake::Caller(Some(state)) => self.on_caller(state).await,
            Wake::Agent(None) => {
                if let Some(leg) = self.agent.take() {
                    if leg.confirmed {
                        forget(&self.gw.dialogs, &leg.dialog);
                    }
                    let input = if leg.confirmed {
                        Input::AgentBye
                    } else {
                        Input::AgentFailed { status: 500 }
                    };
                    self.call.handle(now, input);
                }
            }
            Wake::Agent(Some(state)) => self.on_agent(state).await,
            Wake::AgentFlowClosed => {
                if let Some(leg) = self.take_agent_leg(Some(480), "connection_lost") {
                    tracing::info!(agent = %leg.agent, "agent's WebSocket closed");
                    // Nothing can be sent on it: drop the dialog (this cancels its pending
                    // transactions) instead of a BYE or CANCEL.
                    forget(&self.gw.dialogs, &leg.dialog);
                    self.call.handle(now, Input::AgentLost);
                }
            }
            Wake::AgentWebrtc(Some(switchboard_webrtc::LegEvent::Connected)) => {
                tracing::info!("agent's WebRTC media connected");
            }
            Wake::AgentWebrtc(event) => {
                // Closed (consent lost, DTLS closed, failure) or its task gone: the browser's
                // media is dead, the leg with it.
                tracing::info!(?event, "agent's WebRTC media ended");
                if let Some(leg) = self.agent.as_mut() {
                    leg.webrtc = None;
                }
                if matches!(self.call.state(), State::Bridged { .. }) {
                    self.call.handle(now, Input::AgentMediaLost);
                }
            }
            Wake::Notice(None) => self.notices = None,
            Wake::Notice(Some(n)) => {
                let input = match n {
                    CallNotice::Offered { agent } => Input::Offered {
                        contact: agent.clone(),
                        agent,
                    },
                    CallNotice::Released { agent } => Input::OfferReleased { agent },
                    CallNotice::LeftQueue => Input::LeftQueue,
                    CallNotice::Queued { .. }
                        if self.gw.announcements.is_none() && !self.gw.prompts.has_store() =>
                    {
                        return;
                    }
                    CallNotice::Queued { position, eta_ms } => {
                        Input::QueuePosition { position, eta_ms }
                    }
                    CallNotice::Transfer { target, request } => {
                        return self.on_api_transfer(&target, request).await;
                    }
                    CallNotice::Recording { pause, request } => {
                        return self.on_api_recording(pause, request).await;
                    }
                };
                self.call.handle(now, input);
            }
            Wake::Media(None) => self.media_events = None,
            Wake::Media(Some(MediaEvent::RtpTimeout { leg })) => {
                tracing::info!(?leg, "RTP timeout");
                let input = match leg {
                    Leg::Caller => Input::CallerBye,
                    Leg::Agent => Input::AgentBye,
                };
                if matches!(self.call.state(), State::Bridged { .. }) {
                    self.call.handle(now, input);
                }
            }
            Wake::Media(Some(MediaEvent::PromptEnded { leg: Leg::Caller })) => {
                self.call.handle(now, Input::AnnouncementEnded);
            }
            Wake::Media(Some(MediaEvent::Dtmf {
                leg: Leg::Agent,
                digit,
            })) => self.on_agent_digit(digit).await,
            Wake::Media(Some(_)) => {}
        }
    }

    async fn on_caller(&mut self, state: DialogState) {
        let now = self.now();
        match state {
            DialogState::Terminated(_, TerminatedReason::UacCancel) => {
                self.call.handle(now, Input::CallerCancel);
            }
            DialogState::Terminated(_, _) => {
                if matches!(
                    self.call.state(),
                    State::Bridged { .. } | State::External { .. }
                ) {
                    self.call.handle(now, Input::CallerBye);
                } else {
                    self.call.handle(now, Input::CallerCancel);
                }
            }
            DialogState::Updated(_, req, handle)
                if req.method == rsipstack::sip::Method::Update && req.body.is_empty() =>
            {
                // A session refresh (JsSIP refreshes by UPDATE): no offer, no answer.
                self.call.handle(now, Input::CallerRefresh);
                let _ = handle
                    .respond(StatusCode::OK, Some(self.session_headers()), None)
                    .await;
            }
            DialogState::Updated(_, req, handle) => {
                self.call.handle(now, Input::CallerRefresh);
                let offered = std::str::from_utf8(&req.body)
                    .ok()
                    .and_then(|t| Sdp::parse(t).ok())
                    .and_then(|s| s.audio().map(|a| a.direction));
                match offered {
                    Some(direction) if matches!(self.call.state(), State::Bridged { .. }) => {
                        self.caller_reinvite = Some((handle, direction));
                        self.call.handle(
                            now,
                            Input::CallerReinvite {
                                hold: direction.is_hold(),
                            },
                        );
                    }
                    // A session refresh without SDP, or before the bridge: answer with what
                    // we have.
                    _ => {
                        let body = self.our_sdp(Leg::Caller, Direction::SendRecv, 3);
                        let mut headers = sdp_headers();
                        headers.extend(self.session_headers());
                        let _ = handle.respond(StatusCode::OK, Some(headers), body).await;
                    }
                }
            }
            DialogState::Info(_, req, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                self.relay_info_dtmf(&req, Leg::Agent).await;
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            _ => {}
        }
    }

    async fn on_agent(&mut self, state: DialogState) {
        let now = self.now();
        if matches!(self.call.state(), State::External { .. }) {
            return self.on_remote(state).await;
        }
        match state {
            DialogState::Early(..) | DialogState::Trying(..) => {
                self.call.handle(now, Input::AgentRinging);
            }
            DialogState::Confirmed(_, resp) => {
                let Some(leg) = self.agent.as_mut() else {
                    return;
                };
                if leg.confirmed {
                    return;
                }
                leg.confirmed = true;
                let agent = leg.agent.clone();
                if let Some(AgentWebrtc::Offered(_)) = leg.webrtc {
                    return self.on_webrtc_answer(agent, &resp.body).await;
                }
                let answer = std::str::from_utf8(&resp.body)
                    .ok()
                    .and_then(|t| Sdp::parse(t).ok())
                    .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok());
                let peer = answer.as_ref().and_then(|a| Some((remote_rtp(a)?, a)));
                match (peer, &self.media) {
                    (Some((addr, a)), Some(session)) => {
                        if let Err(e) = session
                            .set_peer(Leg::Agent, addr, law_of(a.codec), a.dtmf_pt)
                            .await
                        {
                            tracing::warn!(error = %e, "agent RTP peer");
                        }
                        self.answered_by = Some(agent);
                        self.answered_at = Some(Utc::now());
                        let leg = self.agent.as_ref().and_then(|l| l.leg);
                        self.legs.answered(leg, Utc::now());
                        self.legs.set_codec(leg, MediaKind::Rtp, a.codec.name());
                        self.journal();
                        let sdp = String::from_utf8_lossy(&resp.body).into_owned();
                        self.call.handle(now, Input::AgentAnswered { sdp });
                    }
                    _ => {
                        // An answer we cannot use: hang the agent leg up, next agent.
                        if let Some(leg) = self.take_agent_leg(Some(488), "") {
                            bye_and_forget(self.gw.dialogs.clone(), leg.dialog);
                        }
                        self.call.handle(now, Input::AgentFailed { status: 488 });
                    }
                }
            }
            DialogState::Terminated(_, reason) => {
                let status = failure_status(&reason);
                let Some(leg) = self.take_agent_leg(Some(status), "hangup") else {
                    return;
                };
                // The agent hung up (its BYE is answered); an unconfirmed leg was never
                // registered past its INVITE.
                if leg.confirmed {
                    forget(&self.gw.dialogs, &leg.dialog);
                }
                let input = if leg.confirmed {
                    Input::AgentBye
                } else {
                    Input::AgentFailed { status }
                };
                self.call.handle(now, input);
            }
            DialogState::Info(_, req, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                if let Some(digit) = self.relay_info_dtmf(&req, Leg::Caller).await {
                    self.on_agent_digit(digit).await;
                }
            }
            DialogState::Refer(_, req, handle) => self.on_refer(&req, handle).await,
            DialogState::Updated(_, req, handle)
                if req.method == rsipstack::sip::Method::Update && req.body.is_empty() =>
            {
                // A session refresh without an offer (JsSIP refreshes by UPDATE every half
                // interval): 200 without a body, the interval echoed with the agent as the
                // refresher (RFC 4028), or 422 when it is under our Min-SE.
                match session_refresh_answer(&req) {
                    Ok(headers) => {
                        let _ = handle.respond(StatusCode::OK, Some(headers), None).await;
                    }
                    Err(headers) => {
                        let _ = handle
                            .respond(StatusCode::SessionIntervalTooSmall, Some(headers), None)
                            .await;
                    }
                }
            }
            DialogState::Updated(_, req, handle)
                if !req.body.is_empty()
                    && matches!(
                        self.agent.as_ref().and_then(|a| a.webrtc.as_ref()),
                        Some(AgentWebrtc::Running(_))
                    ) =>
            {
                // The browser's re-offer (hold, unhold): str0m answers it.
                let answer = match self.agent.as_ref().and_then(|a| a.webrtc.as_ref()) {
                    Some(AgentWebrtc::Running(h)) => h.reoffer(&req.body).await,
                    _ => return,
                };
                crate::outbound::answer_reoffer(handle, answer).await;
            }
            DialogState::Updated(_, _, handle) | DialogState::Options(_, _, handle) => {
                let body = self.our_sdp(Leg::Agent, Direction::SendRecv, 3);
                let _ = handle
                    .respond(StatusCode::OK, Some(sdp_headers()), body)
                    .await;
            }
            _ => {}
        }
    }

    /// A SIP INFO dtmf-relay digit from one leg, sent on toward `toward` as RFC 4733;
    /// returns the digit.
    async fn relay_info_dtmf(&self, req: &rsipstack::sip::Request, toward: Leg) -> Option<char> {
        let (digit, ms) = std::str::from_utf8(&req.body)
            .ok()
            .and_then(switchboard_media::dtmf::parse_dtmf_relay)?;
        if let Some(session) = &self.media {
            let d = Duration::from_millis(u64::from(ms.clamp(40, 2_000)));
            let _ = session.send_dtmf(toward, digit, d).await;
        }
        Some(digit)
    }

    /// Starts recording at the first bridge, when recording is on and the tenant's (or the
    /// queue's) rule says this call is recorded.
    async fn start_recording(&mut self) {
        let (Some(recorder), Some(tenant), Some(session), None) = (
            self.gw.recorder.as_ref(),
            self.tenant.as_ref(),
            self.media.as_ref(),
            self.recording.as_ref(),
        ) else {
            return;
        };
        let policy = self.recording_policy.clone().unwrap_or_default();
        if !policy.records_at(Utc::now()) {
            tracing::info!(mode = ?policy.rule().mode, "not recorded (recording rule)");
            return;
        }
        let Ok(tenant) = tenant.as_str().parse::<uuid::Uuid>() else {
            return;
        };
        let (tx, rx) = switchboard_relay::tap(crate::record::TAP_CAPACITY);
        if let Err(e) = session.tap(Some(tx)).await {
            tracing::warn!(error = %e, "recording tap");
            return;
        }
        let (control, control_rx) = mpsc::channel(crate::record::CONTROL_CAPACITY);
        self.recording = Some(RecordingHandle {
            control,
            started_ms: now_ms(),
            paused: false,
        });
        self.pause_codes = policy.pause_codes();
        let target = crate::record::Target {
            recorder: recorder.clone(),
            tenant,
            call_id: self.call_id.clone(),
        };
        tokio::spawn(crate::record::record_call(target, rx, control_rx).in_current_span());
    }

    /// A digit the agent typed (RFC 4733 or SIP INFO): the recording's pause/resume codes.
    async fn on_agent_digit(&mut self, digit: char) {
        if self.recording.is_none() || !self.pause_codes.is_active() {
            return;
        }
        match self.pause_codes.digit(digit, now_ms()) {
            Some(switchboard_recording::CodeAction::Pause) => {
                let _ = self.set_recording_paused(true, "dtmf").await;
            }
            Some(switchboard_recording::CodeAction::Resume) => {
                let _ = self.set_recording_paused(false, "dtmf").await;
            }
            None => {}
        }
    }

    /// Pauses or resumes the recording from now on and announces it on the tenant's stream.
    /// `Err(409)` when the call is not being recorded; asking for the state it is already in
    /// changes nothing.
    async fn set_recording_paused(&mut self, pause: bool, by: &str) -> Result<(), u16> {
        let Some(rec) = self.recording.as_mut() else {
            return Err(409);
        };
        if rec.paused == pause {
            return Ok(());
        }
        let at_ms = now_ms();
        if rec
            .control
            .try_send(crate::record::RecordControl { pause, at_ms })
            .is_err()
        {
            return Err(500);
        }
        rec.paused = pause;
        let offset_ms = at_ms.saturating_sub(rec.started_ms);
        tracing::info!(pause, by, offset_ms, "recording paused/resumed");
        if let (Some(tenant), Ok(call)) = (
            self.tenant.as_ref(),
            switchboard_state::CallId::parse(self.call_id.clone()),
        ) {
            let cmd = switchboard_state::Command::RecordingPaused {
                call,
                paused: pause,
                by: by.into(),
                offset_ms,
            };
            if let Err(e) = self.gw.engine.run(tenant, at_ms, cmd).await {
                tracing::warn!(error = %e, "recording pause event");
            }
        }
        Ok(())
    }

    /// Answers an api request on the control bus, about this call.
    async fn answer_control(&self, request: &ControlRequest, status: u16, reason: &str) {
        let reply = ControlReply {
            status,
            reason: reason.into(),
            call_id: Some(self.call_id.clone()),
        };
        let bus = self.gw.engine.control_bus();
        if let Err(e) = switchboard_state::control::reply(bus.as_ref(), request, &reply).await {
            tracing::warn!(error = %e, "control reply");
        }
    }

    /// A pause/resume the api asked for; the answer goes back on the control bus.
    async fn on_api_recording(&mut self, pause: bool, request: ControlRequest) {
        let (status, reason) = match self.set_recording_paused(pause, "api").await {
            Ok(()) if pause => (202, "recording paused"),
            Ok(()) => (202, "recording resumed"),
            Err(409) => (409, "the call is not being recorded"),
            Err(_) => (500, "the recording did not take the request"),
        };
        self.answer_control(&request, status, reason).await;
    }

    /// The outside party of a blind transfer to a number.
    async fn on_remote(&mut self, state: DialogState) {
        let now = self.now();
        match state {
            DialogState::Confirmed(_, resp) => {
                let Some(leg) = self.agent.as_mut() else {
                    return;
                };
                if leg.confirmed {
                    return;
                }
                leg.confirmed = true;
                let leg = leg.leg;
                self.legs.answered(leg, Utc::now());
                let answer = std::str::from_utf8(&resp.body)
                    .ok()
                    .and_then(|t| Sdp::parse(t).ok())
                    .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok());
                if let (Some(a), Some(session)) = (answer, &self.media)
                    && let Some(addr) = remote_rtp(&a)
                {
                    self.legs.set_codec(leg, MediaKind::Rtp, a.codec.name());
                    let _ = session
                        .set_peer(Leg::Agent, addr, law_of(a.codec), a.dtmf_pt)
                        .await;
                }
                self.call.handle(now, Input::RemoteAnswered);
            }
            DialogState::Terminated(_, reason) => {
                let status = failure_status(&reason);
                let Some(leg) = self.take_agent_leg(Some(status), "hangup") else {
                    return;
                };
                let input = if leg.confirmed {
                    Input::RemoteBye
                } else {
                    Input::RemoteFailed { status }
                };
                self.call.handle(now, input);
            }
            _ => {}
        }
    }

    /// A blind transfer by the agent's phone (RFC 3515 REFER). `Refer-To` names an outside
    /// number (E.164, subject to the tenant's dial policy), a queue of the tenant (its id) or an
    /// agent (their SIP username: back in the current queue with that agent preferred).
    /// Anything else is refused and the call stays bridged.
    async fn on_refer(&mut self, req: &rsipstack::sip::Request, handle: TransactionHandle) {
        let target = header_value(req, "refer-to")
            .or_else(|| header_value(req, "r"))
            .and_then(|v| {
                let uri = v.trim().trim_start_matches('<');
                let user = uri.split_once(':')?.1.split('@').next()?;
                Some(user.to_owned())
            });
        let plan = match &target {
            Some(t) => self.plan_transfer(t).await,
            None => Err(404),
        };
        match plan {
            Ok(to) => {
                let _ = handle.reply(StatusCode::Accepted).await;
                self.end_referring_leg();
                self.start_transfer(to);
            }
            Err(status) => {
                tracing::info!(?target, status, "REFER refused");
                let _ = handle.reply(StatusCode::from(status)).await;
            }
        }
    }

    /// A blind transfer the api asked for (on behalf of the agent or a supervisor): like a
    /// REFER, but the answer goes back on the control bus and the agent's leg simply ends.
    async fn on_api_transfer(&mut self, target: &str, request: ControlRequest) {
        let answer = if !matches!(self.call.state(), State::Bridged { .. }) {
            Err(409)
        } else {
            self.plan_transfer(target).await
        };
        let (status, reason) = match &answer {
            Ok(_) => (202, "transferring"),
            Err(403) => (403, "the tenant's dial policy does not allow this number"),
            Err(404) => (404, "no such queue or agent"),
            Err(409) => (409, "the call is not connected to an agent"),
            Err(_) => (500, "transfer failed"),
        };
        self.answer_control(&request, status, reason).await;
        if let Ok(to) = answer {
            self.start_transfer(to);
        }
    }

    /// Where a transfer goes, or the SIP status refusing it: 403 for a number the tenant's
    /// dial policy blocks (or without a trunk), 404 for an unknown queue or agent.
    async fn plan_transfer(&self, target: &str) -> Result<TransferTo, u16> {
        if let Some(number) = e164(target) {
            let permitted = match self.tenant_uuid() {
                Some(t) => crate::outbound::outside_route(&self.gw, t, &number)
                    .await
                    .is_ok(),
                None => false,
            };
            return if permitted {
                Ok(TransferTo::Number(number))
            } else {
                Err(403)
            };
        }
        let resolved = match (&self.tenant, self.queue) {
            (Some(tenant), Some(current)) => self.transfer_target(tenant, target, current).await,
            _ => None,
        };
        let (queue, preferred_agent) = resolved.ok_or(404u16)?;
        Ok(TransferTo::Queue {
            queue,
            preferred_agent,
        })
    }

    /// Hands the call to the machine's transfer path (the agent leg ends there).
    fn start_transfer(&mut self, to: TransferTo) {
        match to {
            TransferTo::Number(number) => self
                .call
                .handle(self.now(), Input::AgentTransferToNumber { number }),
            TransferTo::Queue {
                queue,
                preferred_agent,
            } => {
                self.queue = queue.parse().ok().or(self.queue);
                self.call.handle(
                    self.now(),
                    Input::AgentTransfer {
                        queue,
                        preferred_agent,
                    },
                );
            }
        }
    }

    /// The transferor hears the outcome (NOTIFY with a sipfrag, RFC 3515), then our BYE; the
    /// machine's AgentBye then finds no leg left to end.
    fn end_referring_leg(&mut self) {
        if let Some(leg) = self.take_agent_leg(None, "transferred") {
            let dialogs = self.gw.dialogs.clone();
            tokio::spawn(async move {
                let _ = leg
                    .dialog
                    .notify_refer(StatusCode::OK, "terminated;reason=noresource")
                    .await;
                let _ = leg.dialog.bye().await;
                forget(&dialogs, &leg.dialog);
            });
        }
    }

    /// Resolves a REFER target in the tenant: a queue id, or an agent's SIP username.
    async fn transfer_target(
        &self,
        tenant: &TenantId,
        target: &str,
        current_queue: uuid::Uuid,
    ) -> Option<(String, Option<String>)> {
        let tenant_uuid: uuid::Uuid = tenant.as_str().parse().ok()?;
        let txn = self
            .gw
            .db
            .tenant_txn(switchboard_domain::TenantId(tenant_uuid), Access::Read)
            .await
            .ok()?;
        let found = if let Ok(queue) = target.parse::<uuid::Uuid>() {
            use switchboard_db::entities::queues;
            use switchboard_db::sea_orm::{ColumnTrait, QueryFilter};
            txn.first::<queues::Entity>(|q| q.filter(queues::Column::Id.eq(queue)))
                .await
                .ok()
                .flatten()
                .map(|q| (q.id.to_string(), None))
        } else {
            txn.user_of_sip_username(target)
                .await
                .ok()
                .flatten()
                .map(|user| (current_queue.to_string(), Some(user.to_string())))
        };
        let _ = txn.commit().await;
        found
    }

    /// Takes the agent-side leg off the call and books its end: `status` is the final status
    /// of an unanswered leg (its reason then follows from it).
    /// A browser answered our WebRTC offer: its leg starts, bridged to the relay's agent leg.
    async fn on_webrtc_answer(&mut self, agent: String, body: &[u8]) {
        let now = self.now();
        let offered = match self.agent.as_mut().and_then(|a| a.webrtc.take()) {
            Some(AgentWebrtc::Offered(o)) => o,
            _ => return,
        };
        let started = match (&self.media, offered.accept_answer(body)) {
            (Some(session), Ok(leg)) => {
                let law = leg.relay_law();
                match leg.start(session.local_addr(Leg::Agent)) {
                    Ok(handle) => {
                        if let Err(e) = session
                            .set_peer(
                                Leg::Agent,
                                handle.relay_side_addr(),
                                law,
                                Some(switchboard_webrtc::RELAY_DTMF_PT),
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "agent RTP peer");
                        }
                        Some(handle)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "WebRTC leg start");
                        None
                    }
                }
            }
            (_, Err(e)) => {
                tracing::info!(%agent, error = %e, "browser's WebRTC answer refused");
                None
            }
            (None, Ok(_)) => None,
        };
        let Some(handle) = started else {
            if let Some(leg) = self.take_agent_leg(Some(488), "") {
                bye_and_forget(self.gw.dialogs.clone(), leg.dialog);
            }
            self.call.handle(now, Input::AgentFailed { status: 488 });
            return;
        };
        let codec = handle.codec();
        if let Some(a) = self.agent.as_mut() {
            a.webrtc = Some(AgentWebrtc::Running(handle));
        }
        self.answered_by = Some(agent);
        self.answered_at = Some(Utc::now());
        let leg = self.agent.as_ref().and_then(|l| l.leg);
        self.legs.answered(leg, Utc::now());
        self.legs.set_codec(leg, MediaKind::Webrtc, codec.name());
        self.journal();
        let sdp = String::from_utf8_lossy(body).into_owned();
        self.call.handle(now, Input::AgentAnswered { sdp });
    }

    fn take_agent_leg(&mut self, status: Option<u16>, answered_reason: &str) -> Option<AgentLeg> {
        let leg = self.agent.take()?;
        let (status, reason) = if leg.confirmed {
            (None, answered_reason)
        } else {
            (status, "")
        };
        self.legs.ended(leg.leg, Utc::now(), status, reason);
        Some(leg)
    }

    /// The call is over: free the media, forget the engine feed, write the CDR.
    async fn finish(&mut self, cause: EndCause) {
        if !self.caller_bye_sent {
            // The caller hung up, cancelled or was refused: forget its dialog once the INVITE
            // transaction is over (the final response may still be retransmitted until the ACK).
            let (dialogs, caller) = (self.gw.dialogs.clone(), self.caller.clone());
            let driver = self.invite_driver.take();
            tokio::spawn(async move {
                if let Some(driver) = driver {
                    let _ = driver.await;
                }
                forget(&dialogs, &caller);
            });
        }
        let stats = match self.media.take() {
            Some(s) => s.close().await.ok(),
            None => None,
        };
        let (cause_name, side) = cause_and_side(cause);
        self.gw
            .metrics
            .calls
            .with_label_values(&["inbound", cause_name])
            .inc();
        if let Some(s) = &stats {
            let (caller, far) = leg_media_stats(s);
            self.legs.set_media(self.caller_leg, caller);
            let far_leg = self.legs.last_answered(&[Role::Agent, Role::External]);
            self.legs.set_media(far_leg, far);
        }
        self.legs
            .ended(self.caller_leg, Utc::now(), self.caller_status, cause_name);
        let legs = std::mem::take(&mut self.legs).finish(Utc::now(), "call_ended");
        if let Some(tenant) = &self.tenant {
            self.gw.unwatch_call(tenant, &self.engine_call);
        }
        let Some(tenant) = self.tenant.clone() else {
            return;
        };
        let Ok(tenant_uuid) = tenant.as_str().parse::<uuid::Uuid>() else {
            return;
        };
        let record = CallRecord {
            call_id: self.call_id.clone(),
            direction: "inbound".into(),
            from_number: self.from_number.chars().take(64).collect(),
            to_number: self.dialled.clone(),
            queue_id: self.queue,
            agent_id: self
                .answered_by
                .as_deref()
                .and_then(|a| a.parse::<uuid::Uuid>().ok()),
            started_at: self.started_at,
            queued_at: self.queued_at,
            answered_at: self.answered_at,
            ended_at: Utc::now(),
            hangup_cause: cause_name.into(),
            hangup_side: side.into(),
            media_stats: Some({
                // Per leg: media quality of both RTP legs, and the agent legs this call rang.
                let mut v = stats
                    .as_ref()
                    .map(media_stats_json)
                    .unwrap_or_else(|| serde_json::json!({}));
                v["agent_legs_unanswered"] = self.call.failed_attempts().into();
                v["transfers"] = self.call.transfers().into();
                v
            }),
            legs,
        };
        if write_cdr(&self.gw, tenant_uuid, &record).await
            && let Some(journal) = &self.gw.journal
        {
            journal.remove(&self.call_id);
        }
    }
}

/// Writes a CDR, retrying a few times (the write is idempotent per call id); whether it was
/// written.
pub(crate) async fn write_cdr(gw: &Gateway, tenant: uuid::Uuid, record: &CallRecord) -> bool {
    for attempt in 0..3u64 {
        let written = async {
            let txn = gw
                .db
                .tenant_txn(switchboard_domain::TenantId(tenant), Access::Write)
                .await?;
            txn.record_call(record).await?;
            txn.commit().await
        }
        .await;
        match written {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "CDR write");
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    false
}

/// The SIP status an unanswered INVITE leg ended with, from how its dialog terminated.
pub(crate) fn failure_status(reason: &TerminatedReason) -> u16 {
    match reason {
        TerminatedReason::UasBusy => 486,
        TerminatedReason::UasDecline => 603,
        TerminatedReason::Timeout => 408,
        TerminatedReason::UasOther(code) | TerminatedReason::ProxyError(code) => code.code(),
        _ => 500,
    }
}

/// `+15550100` for `+15550100` or `15550100` (7 to 15 digits): a REFER target that is a number.
fn e164(user: &str) -> Option<String> {
    let digits = user.strip_prefix('+').unwrap_or(user);
    ((7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("+{digits}"))
}

fn cause_and_side(cause: EndCause) -> (&'static str, &'static str) {
    match cause {
        EndCause::NoRoute => ("no_route", "system"),
        EndCause::TenantSuspended => ("tenant_suspended", "system"),
        EndCause::Overloaded => ("overloaded", "system"),
        EndCause::CallerAbandoned => ("abandoned", "caller"),
        EndCause::LeftQueue => ("left_queue", "system"),
        EndCause::CallerHangup => ("normal_clearing", "caller"),
        EndCause::AgentHangup => ("normal_clearing", "agent"),
        EndCause::SessionExpired => ("session_expired", "system"),
        EndCause::TransferFailed => ("transfer_failed", "remote"),
        EndCause::RemoteHangup => ("normal_clearing", "remote"),
        EndCause::AgentConnectionLost => ("agent_connection_lost", "agent"),
        EndCause::AgentMediaTimeout => ("agent_media_timeout", "agent"),
    }
}

pub(crate) fn media_stats_json(s: &SessionStats) -> serde_json::Value {
    let (caller, agent) = leg_media_stats(s);
    serde_json::json!({ "caller": caller, "agent": agent })
}

/// Each relay leg's media quality (the caller side, the agent side) as JSON.
pub(crate) fn leg_media_stats(s: &SessionStats) -> (serde_json::Value, serde_json::Value) {
    let leg = |l: &switchboard_relay::LegStats| {
        serde_json::json!({
            "packets_in": l.packets_in,
            "packets_out": l.packets_out,
            "packets_lost": l.packets_lost,
            "loss_pct": l.loss_pct,
            "jitter_ms": l.jitter_ms,
            "mos": l.mos,
            "dropped_foreign": l.dropped_foreign,
        })
    };
    (leg(&s.caller), leg(&s.agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_is_read_and_bounded() {
        let req = |se: &str| {
            let text = format!(
                "INVITE sip:+15550100@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
                 From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                 Session-Expires: {se}\r\nSupported: timer\r\nContent-Length: 0\r\n\r\n"
            );
            match rsipstack::sip::SipMessage::try_from(text.as_bytes()) {
                Ok(rsipstack::sip::SipMessage::Request(r)) => Some(r),
                _ => None,
            }
        };
        let r = req("1800;refresher=uac").map(|r| session_timer_request(&r));
        assert_eq!(r, Some(Some((1_800, true))));
        let huge = req("18446744073709551615").map(|r| session_timer_request(&r));
        assert_eq!(
            huge,
            Some(Some((MAX_SE_S, true))),
            "no overflow in ms arithmetic"
        );
    }

    #[test]
    fn dialled_numbers_become_e164() {
        let uri = |s: &str| s.parse::<Uri>().ok();
        let n = |s: &str| uri(s).and_then(|u| dialled_number(&u));
        assert_eq!(n("sip:+15550100100@gw"), Some("+15550100100".into()));
        assert_eq!(n("sip:15550100100@gw"), Some("+15550100100".into()));
        assert_eq!(n("sip:agent1@gw"), None);
        assert_eq!(n("sip:+1234567890123456@gw"), None);
        assert_eq!(n("sip:gw"), None);
    }
}
