//! An agent's phone dialling an outside number: the IO around
//! [`crate::outbound_call::OutboundCall`].
//!
//! Before anything is dialled: the phone authenticates (digest, 407), the tenant's dial policy
//! must allow the destination (toll-fraud guard: premium and international blocked unless the
//! operator enabled them), and the tenant's and the seat's concurrent-call caps must have room.
//! The call then goes out on the configured carrier trunk with the tenant's caller id, media
//! anchored in the relay, and leaves an `outbound` CDR.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use switchboard_db::Access;
use switchboard_db::calls::CallRecord;
use switchboard_db::sip::OutboundSettings;
use switchboard_domain::TenantId;
use switchboard_media::g711::Law;
use switchboard_media::sdp::{self, Codec, Direction, Negotiated, Sdp};
use switchboard_relay::{Leg, Prompt, Session};
use switchboard_sip_guard::{CapLimits, DialPolicy};

use crate::inbound::{
    dialled_number, law_of, leg_media_stats, media_stats_json, remote_rtp, sdp_headers,
};
use crate::legs::{Legs, MediaKind, Role};
use crate::location::Binding;
use crate::node::{Gateway, Refusal, header_value, now_ms, refuse, source_of};
use crate::outbound_call::{OutboundCall, OutboundEnd, OutboundInput, OutboundOutput};
use switchboard_state::{ControlReply, ControlRequest};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The settings that decide whether and how a tenant's call goes out.
pub(crate) struct Permission {
    pub policy: DialPolicy,
    pub caller_id: String,
    pub limits: CapLimits,
}

fn forbidden(reason: &'static str) -> Refusal {
    (StatusCode::Forbidden, Some(reason), vec![])
}

/// The tenant's outbound settings (the safe default when the operator set none).
pub(crate) async fn permission(gw: &Gateway, tenant: uuid::Uuid) -> Result<Permission, Refusal> {
    let internal = |_| (StatusCode::ServerInternalError, None, vec![]);
    let txn = gw
        .db
        .tenant_txn(TenantId(tenant), Access::Read)
        .await
        .map_err(internal)?;
    let settings = txn.outbound_settings().await.map_err(internal)?;
    let first_number = txn.first_number().await.map_err(internal)?;
    txn.commit().await.map_err(internal)?;
    let settings = settings.unwrap_or_else(OutboundSettings::safe_default);
    let policy = DialPolicy::from_json(&settings.dial_policy)
        .map_err(|_| forbidden("dial policy unreadable"))?;
    let limits = CapLimits {
        max_per_tenant: u32::try_from(settings.max_concurrent_calls).unwrap_or(0),
        max_per_seat: u32::try_from(settings.max_calls_per_seat).unwrap_or(0),
    };
    let caller_id = settings.caller_id;
    let caller_id = caller_id
        .or(first_number)
        .ok_or(forbidden("the tenant has no caller id"))?;
    Ok(Permission {
        policy,
        caller_id,
        limits,
    })
}

/// A tenant's call to an outside number, cleared to go out: its settings and the trunk.
pub(crate) struct OutsideRoute {
    pub permission: Permission,
    pub trunk: crate::config::OutboundTrunk,
}

/// The one rule for every call to an outside number (dialled on a phone, click-to-call, a
/// transfer to a number): the tenant's dial policy allows it and a trunk is configured.
pub(crate) async fn outside_route(
    gw: &Gateway,
    tenant: uuid::Uuid,
    number: &str,
) -> Result<OutsideRoute, Refusal> {
    let permission = permission(gw, tenant).await?;
    if let Err(blocked) = switchboard_sip_guard::check(&permission.policy, number) {
        tracing::info!(%tenant, %number, ?blocked, "outside call blocked");
        return Err(forbidden("destination not allowed for this tenant"));
    }
    let trunk = gw.cfg.outbound_trunk.clone().ok_or((
        StatusCode::ServiceUnavailable,
        Some("no outbound trunk"),
        vec![],
    ))?;
    Ok(OutsideRoute { permission, trunk })
}

/// A seat's concurrent-call permit within the tenant's caps (503 when full).
fn seat_cap(
    gw: &Gateway,
    tenant: uuid::Uuid,
    seat: uuid::Uuid,
    limits: CapLimits,
) -> Result<switchboard_sip_guard::CapPermit, Refusal> {
    gw.caps
        .try_acquire(&tenant.to_string(), Some(&seat.to_string()), limits)
        .map_err(|_| {
            (
                StatusCode::ServiceUnavailable,
                Some("call limit reached"),
                vec![],
            )
        })
}

/// What a call needs once it was admitted.
struct Admitted {
    /// The calling agent's tenant and user (digest login, or a browser's access token).
    tenant: uuid::Uuid,
    agent: uuid::Uuid,
    number: String,
    caller_id: String,
    trunk: crate::config::OutboundTrunk,
    offer: Negotiated,
    phone_rtp: SocketAddr,
    /// A browser's WebRTC leg and our answer to its offer (`offer`/`phone_rtp` are then the
    /// leg's plain RTP side).
    webrtc: Option<(switchboard_webrtc::Leg, String)>,
    _admission: switchboard_sip_guard::admission::Permit,
    _cap: switchboard_sip_guard::CapPermit,
}

/// The carrier leg's codec for a browser's call: we offer the trunk G.711 µ-law.
const TRUNK_LAW: Law = Law::Ulaw;

/// Answers a browser's WebRTC offer (an INVITE over WebSocket): the leg, its relay-side
/// media as a plain RTP peer, and our answer; 488 with the reason for an offer we refuse,
/// 503 when no leg can be had.
fn webrtc_answer(
    gw: &Gateway,
    body: &[u8],
) -> Result<(switchboard_webrtc::Leg, String, Negotiated), Refusal> {
    let endpoint = gw.webrtc.as_ref().ok_or((
        StatusCode::ServiceUnavailable,
        Some("WebRTC media is off"),
        vec![],
    ))?;
    let (leg, answer) = endpoint.answer(body, TRUNK_LAW).map_err(|e| match e {
        switchboard_webrtc::WebrtcError::Refused(r) => {
            (StatusCode::NotAcceptableHere, Some(r.reason()), vec![])
        }
        other => {
            tracing::warn!(error = %other, "WebRTC leg");
            (
                StatusCode::ServiceUnavailable,
                Some("no WebRTC media port"),
                vec![],
            )
        }
    })?;
    let relay_side = leg.relay_side_addr();
    let codec = match leg.relay_law() {
        Law::Ulaw => Codec::Pcmu,
        Law::Alaw => Codec::Pcma,
    };
    let offer = Negotiated {
        codec,
        dtmf_pt: Some(switchboard_webrtc::RELAY_DTMF_PT),
        remote_addr: relay_side.ip().to_string(),
        remote_port: relay_side.port(),
        offered: Direction::SendRecv,
    };
    Ok((leg, answer, offer))
}

/// Answers a browser's WebRTC re-offer: 200 with our answer, or 488 with the reason.
pub(crate) async fn answer_reoffer(
    handle: rsipstack::dialog::dialog::TransactionHandle,
    answer: Result<String, switchboard_webrtc::WebrtcError>,
) {
    match answer {
        Ok(sdp) => {
            let _ = handle
                .respond(StatusCode::OK, Some(sdp_headers()), Some(sdp.into_bytes()))
                .await;
        }
        Err(e) => {
            let warning = Header::Warning(format!("399 switchboard \"{e}\"").into());
            let _ = handle
                .respond(StatusCode::NotAcceptableHere, Some(vec![warning]), None)
                .await;
        }
    }
}

/// Runs one outbound call to its end.
pub async fn run(gw: Arc<Gateway>, mut tx: Transaction) {
    let admitted = match admit(&gw, &tx).await {
        Ok(a) => a,
        Err(refusal) => return refuse(&mut tx, refusal).await,
    };
    let call_id = uuid::Uuid::now_v7().to_string();
    // A root span attached with `instrument`, never held entered across awaits (see inbound).
    let span =
        tracing::info_span!(parent: None, "outbound", call = %call_id, to = %admitted.number);
    place(gw, tx, admitted, call_id).instrument(span).await;
}

/// Answers the side that called us (a phone, or a peer node over the internal trunk): opens
/// the relay session with that side's media on the agent leg and creates the server dialog
/// of `tx` (its INVITE transaction driven in the background). Refuses `tx` itself on failure.
async fn serve_leg(
    gw: &Gateway,
    mut tx: Transaction,
    offer: &Negotiated,
    rtp: SocketAddr,
    call_id: &str,
) -> Option<(Session, InviteDialog, DialogStateReceiver)> {
    let Ok((media, _events)) = gw.relay.open(call_id) else {
        let refusal = (
            StatusCode::ServiceUnavailable,
            Some("no media ports"),
            vec![],
        );
        refuse(&mut tx, refusal).await;
        return None;
    };
    if let Err(e) = media
        .set_peer(Leg::Agent, rtp, law_of(offer.codec), offer.dtmf_pt)
        .await
    {
        tracing::warn!(error = %e, "RTP peer of the calling side");
    }
    let (state_tx, states) = gw.dialogs.new_dialog_state_channel();
    let contact = format!("sip:gw@{}", gw.sip_addr).parse::<Uri>().ok();
    let dialog = match gw
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(d) => d,
        Err(_) => {
            let refusal = (StatusCode::ServerInternalError, None, vec![]);
            refuse(&mut tx, refusal).await;
            return None;
        }
    };
    let mut driver = dialog.clone();
    tokio::spawn(
        async move {
            if let Err(e) = driver.handle(&mut tx).await {
                tracing::debug!(error = %e, "INVITE transaction");
            }
        }
        .in_current_span(),
    );
    Some((media, dialog, states))
}

async fn place(gw: Arc<Gateway>, tx: Transaction, admitted: Admitted, call_id: String) {
    // A browser's own call: its leg lives as long as its WebSocket.
    let phone_closed = match crate::node::transport_of(&tx) {
        rsipstack::sip::Transport::Ws | rsipstack::sip::Transport::Wss => {
            source_of(&tx).and_then(|s| gw.ws_flows.closed_signal(s))
        }
        _ => None,
    };
    // The agent's phone is the relay's agent leg; the outside party its caller (PSTN) leg.
    let Some((media, phone, phone_states)) =
        serve_leg(&gw, tx, &admitted.offer, admitted.phone_rtp, &call_id).await
    else {
        return;
    };
    let phone_codec = match &admitted.webrtc {
        Some((leg, _)) => (MediaKind::Webrtc, leg.codec().name()),
        None => (MediaKind::Rtp, admitted.offer.codec.name()),
    };
    // A browser's WebRTC leg runs from now, bridged to the relay's agent leg.
    let (webrtc, webrtc_answer) = match admitted.webrtc {
        Some((leg, answer)) => match leg.start(media.local_addr(Leg::Agent)) {
            Ok(handle) => (Some(handle), Some(answer)),
            Err(e) => {
                tracing::warn!(error = %e, "WebRTC leg start");
                let _ = phone.reject(Some(StatusCode::ServiceUnavailable), None);
                return;
            }
        },
        None => (None, None),
    };
    let _active = crate::metrics::ActiveCall::start(&gw.metrics, "outbound");
    let mut task = OutboundTask {
        gw: gw.clone(),
        phone_closed,
        remote_closed: None,
        call: OutboundCall::new(now_ms()),
        call_id,
        tenant: admitted.tenant,
        agent: admitted.agent,
        number: admitted.number.clone(),
        caller_id: admitted.caller_id.clone(),
        phone: Some(phone),
        phone_states: Some(phone_states),
        remote: None,
        permits: None,
        kind: CallKind::PhoneDialled,
        offer: admitted.offer.clone(),
        media: Some(media),
        started_at: Utc::now(),
        answered_at: None,
        phone_answered_at: None,
        trunk: Some(admitted.trunk),
        webrtc,
        webrtc_answer,
        media_lost: false,
        phone_codec: Some(phone_codec),
        remote_codec: None,
    };
    task.dial().await;
    task.run().await;
}

/// A call a peer node hands us over the internal trunk for a phone registered here.
struct Relayed {
    tenant: uuid::Uuid,
    agent: uuid::Uuid,
    binding: Binding,
    from_user: String,
    offer: Negotiated,
    peer_rtp: SocketAddr,
}

/// Runs one call relayed from a peer node to a phone registered on this node: no CDR, no
/// recording (the peer holding the call keeps those), media relayed peer <-> phone.
pub async fn run_relay(gw: Arc<Gateway>, mut tx: Transaction) {
    let relayed = match admit_relay(&gw, &tx).await {
        Ok(r) => r,
        Err(refusal) => return refuse(&mut tx, refusal).await,
    };
    let call_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(parent: None, "trunk", call = %call_id,
        tenant = %relayed.tenant, agent = %relayed.agent);
    place_relay(gw, tx, relayed, call_id).instrument(span).await;
}

/// Only a live peer node (source address in the registry) with a valid token may hand calls
/// over; the phone must be registered on this node.
async fn admit_relay(gw: &Gateway, tx: &Transaction) -> Result<Relayed, Refusal> {
    let not_peer = || (StatusCode::Forbidden, Some("not a cluster peer"), vec![]);
    let source = source_of(tx).ok_or_else(not_peer)?;
    if !gw.is_peer(source) {
        tracing::info!(%source, "trunk INVITE from a source that is no live peer");
        return Err(not_peer());
    }
    let token = header_value(&tx.original, crate::trunk::TOKEN_HEADER).unwrap_or_default();
    let tenant = header_value(&tx.original, crate::trunk::TENANT_HEADER).unwrap_or_default();
    let agent = tx
        .original
        .uri
        .auth
        .as_ref()
        .map(|a| a.user.clone())
        .unwrap_or_default();
    let secret = gw.cfg.auth_secret.as_bytes();
    if !crate::trunk::verify(secret, now_ms(), &token, &tenant, &agent) {
        tracing::info!(%source, "trunk INVITE with a bad token");
        return Err(not_peer());
    }
    let bad = |_| (StatusCode::BadRequest, Some("bad tenant or agent"), vec![]);
    let tenant_uuid: uuid::Uuid = tenant.parse().map_err(bad)?;
    let agent_uuid: uuid::Uuid = agent.parse().map_err(bad)?;
    let engine_tenant = switchboard_state::TenantId::parse(tenant)
        .map_err(|_| (StatusCode::BadRequest, Some("bad tenant"), vec![]))?;
    let binding = gw
        .phone_of(&engine_tenant, &agent)
        .await
        .filter(|b| b.node.as_deref() == Some(gw.cfg.node_id.as_str()))
        .ok_or((
            StatusCode::TemporarilyUnavailable,
            Some("phone not registered on this node"),
            vec![],
        ))?;
    let from_user = tx
        .original
        .from_header()
        .and_then(|f| f.uri())
        .ok()
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default();
    let offer = std::str::from_utf8(&tx.original.body)
        .ok()
        .and_then(|t| Sdp::parse(t).ok())
        .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok())
        .ok_or((StatusCode::NotAcceptableHere, None, vec![]))?;
    let peer_rtp = remote_rtp(&offer).ok_or((StatusCode::NotAcceptableHere, None, vec![]))?;
    Ok(Relayed {
        tenant: tenant_uuid,
        agent: agent_uuid,
        binding,
        from_user,
        offer,
        peer_rtp,
    })
}

async fn place_relay(gw: Arc<Gateway>, tx: Transaction, relayed: Relayed, call_id: String) {
    let Some((media, peer, peer_states)) =
        serve_leg(&gw, tx, &relayed.offer, relayed.peer_rtp, &call_id).await
    else {
        return;
    };
    let _active = crate::metrics::ActiveCall::start(&gw.metrics, "trunk");
    let mut task = OutboundTask {
        gw: gw.clone(),
        phone_closed: None,
        remote_closed: None,
        call: OutboundCall::new(now_ms()),
        call_id,
        tenant: relayed.tenant,
        agent: relayed.agent,
        number: relayed.agent.to_string(),
        caller_id: relayed.from_user.chars().take(64).collect(),
        phone: Some(peer),
        phone_states: Some(peer_states),
        remote: None,
        permits: None,
        kind: CallKind::Relayed,
        offer: relayed.offer.clone(),
        media: Some(media),
        started_at: Utc::now(),
        answered_at: None,
        phone_answered_at: None,
        trunk: None,
        webrtc: None,
        webrtc_answer: None,
        media_lost: false,
        phone_codec: None,
        remote_codec: None,
    };
    task.dial_phone(&relayed.binding);
    task.run().await;
}

/// Click-to-call (the api's `Dial` on the control bus, answered on its reply topic): ring the
/// agent's own phone; when it answers, dial `number` on the trunk with the tenant's caller id,
/// under the same dial policy and call caps as a call the phone dials itself. Only the node
/// that took the phone's registration acts (it can reach the phone through its NAT).
pub async fn click_to_call(
    gw: Arc<Gateway>,
    request: ControlRequest,
    tenant: uuid::Uuid,
    agent: uuid::Uuid,
    number: String,
) {
    let call_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(parent: None, "click_to_call", call = %call_id, tenant = %tenant, to = %number);
    async move {
        let answer = match ring_phone(&gw, tenant, agent, &number, &call_id).await {
            Ok(task) => Ok(task),
            Err((status, reason)) => Err(ControlReply {
                status,
                reason: reason.into(),
                call_id: None,
            }),
        };
        let reply = match &answer {
            Ok(_) => ControlReply {
                status: 202,
                reason: "ringing the agent's phone".into(),
                call_id: Some(call_id.clone()),
            },
            Err(r) => r.clone(),
        };
        let bus = gw.engine.control_bus();
        if let Err(e) = switchboard_state::control::reply(bus.as_ref(), &request, &reply).await {
            tracing::warn!(error = %e, "control reply");
        }
        if let Ok(mut task) = answer {
            let _active = crate::metrics::ActiveCall::start(&gw.metrics, "outbound");
            task.run().await;
        }
    }
    .instrument(span)
    .await;
}

/// Checks what may refuse a click-to-call and sends the INVITE to the agent's phone.
async fn ring_phone(
    gw: &Arc<Gateway>,
    tenant: uuid::Uuid,
    agent: uuid::Uuid,
    number: &str,
    call_id: &str,
) -> Result<OutboundTask, (u16, &'static str)> {
    let admission = gw
        .admission
        .try_admit(now_ms())
        .map_err(|_| (503, "overloaded"))?;
    let refused = |(status, reason, _): Refusal| (status.code(), reason.unwrap_or("refused"));
    let OutsideRoute { permission, trunk } =
        outside_route(gw, tenant, number).await.map_err(refused)?;
    let cap = seat_cap(gw, tenant, agent, permission.limits).map_err(refused)?;
    let tenant_id =
        switchboard_state::TenantId::parse(tenant.to_string()).map_err(|_| (400, "bad tenant"))?;
    let binding = gw
        .phone_of(&tenant_id, &agent.to_string())
        .await
        .ok_or((480, "the agent's phone is not registered"))?;
    let (media, _events) = gw
        .relay
        .open(call_id)
        .map_err(|_| (503, "no media ports"))?;
    let offer = Negotiated {
        codec: Codec::Pcmu,
        dtmf_pt: Some(101),
        remote_addr: String::new(),
        remote_port: 0,
        offered: Direction::SendRecv,
    };
    let phone_closed = gw
        .closed_signal_of(&binding)
        .map_err(|_| (480, "the agent's WebSocket is gone"))?;
    let mut task = OutboundTask {
        gw: gw.clone(),
        phone_closed,
        remote_closed: None,
        call: OutboundCall::click_to_call(now_ms(), gw.cfg.ring_timeout_ms),
        call_id: call_id.to_owned(),
        tenant,
        agent,
        number: number.to_owned(),
        caller_id: permission.caller_id,
        phone: None,
        phone_states: None,
        remote: None,
        permits: None,
        kind: CallKind::ClickToCall,
        offer,
        media: Some(media),
        started_at: Utc::now(),
        answered_at: None,
        phone_answered_at: None,
        trunk: Some(trunk),
        webrtc: None,
        webrtc_answer: None,
        media_lost: false,
        phone_codec: None,
        remote_codec: None,
    };
    let uri = |s: String| s.parse::<Uri>().map_err(|_| (400, "bad phone contact"));
    let opt = InviteOption {
        // The phone shows the number it is about to be connected to.
        caller: uri(format!("sip:{number}@{}", gw.sip_addr))?,
        callee: uri(binding.contact.clone())?,
        contact: uri(format!("sip:gw@{}", gw.sip_addr))?,
        destination: Some(binding.destination()),
        content_type: Some("application/sdp".into()),
        offer: task.our_sdp(Leg::Agent, 1),
        ..Default::default()
    };
    let (state_tx, states) = gw.dialogs.new_dialog_state_channel();
    let (dialog, _join) = gw
        .dialogs
        .do_invite_async(opt, state_tx)
        .map_err(|_| (503, "could not reach the phone"))?;
    task.phone = Some(dialog);
    task.phone_states = Some(states);
    task.permits = Some((admission, cap));
    Ok(task)
}

/// Everything that may refuse the call before anything is dialled.
async fn admit(gw: &Gateway, tx: &Transaction) -> Result<Admitted, Refusal> {
    let admission = gw.admission.try_admit(now_ms()).map_err(|retry| {
        let after = Header::RetryAfter(retry.after_secs.to_string().into());
        (StatusCode::ServiceUnavailable, None, vec![after])
    })?;
    let from = tx.original.from_header().and_then(|f| f.uri());
    // A browser may prove itself with its api access token (RFC 8898 Bearer, over WebSocket
    // only) in Authorization or Proxy-Authorization; phones answer the digest challenge.
    let bearer = ["authorization", "proxy-authorization"]
        .into_iter()
        .filter_map(|h| header_value(&tx.original, h))
        .find_map(|v| crate::token::bearer(&v).map(str::to_owned));
    let (tenant, agent) = match bearer {
        Some(token) => {
            let id = gw
                .authenticate_bearer(tx, &token, from, crate::node::transport_of(tx))
                .await?;
            (id.tenant, id.user)
        }
        None => {
            let login = gw.authenticate(tx, from, true).await?;
            (login.tenant_id, login.user_id)
        }
    };
    let number = dialled_number(&tx.original.uri).ok_or(forbidden("not an E.164 number"))?;
    let route = outside_route(gw, tenant, &number).await?;
    let cap = seat_cap(gw, tenant, agent, route.permission.limits)?;
    let over_websocket = matches!(
        crate::node::transport_of(tx),
        rsipstack::sip::Transport::Ws | rsipstack::sip::Transport::Wss
    );
    // A browser's media is WebRTC; a phone's plain RTP.
    let (offer, webrtc) = if over_websocket {
        let (leg, answer, offer) = webrtc_answer(gw, &tx.original.body)?;
        (offer, Some((leg, answer)))
    } else {
        let offer = std::str::from_utf8(&tx.original.body)
            .ok()
            .and_then(|t| Sdp::parse(t).ok())
            .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok())
            .ok_or((StatusCode::NotAcceptableHere, None, vec![]))?;
        (offer, None)
    };
    let phone_rtp = remote_rtp(&offer).ok_or((StatusCode::NotAcceptableHere, None, vec![]))?;
    Ok(Admitted {
        webrtc,
        tenant,
        agent,
        number,
        caller_id: route.permission.caller_id,
        trunk: route.trunk,
        offer,
        phone_rtp,
        _admission: admission,
        _cap: cap,
    })
}

/// Places an INVITE to `number` on the carrier trunk, presenting `caller_id`, with our SDP.
pub(crate) fn trunk_invite(
    gw: &Gateway,
    trunk: &crate::config::OutboundTrunk,
    number: &str,
    caller_id: &str,
    offer: Option<Vec<u8>>,
) -> Result<(InviteDialog, DialogStateReceiver), crate::GatewayError> {
    let uri = |s: String| {
        s.parse::<Uri>()
            .map_err(|e| crate::GatewayError::Sip(e.to_string()))
    };
    let callee = uri(format!("sip:{number}@{}", trunk.domain))?;
    let caller = uri(format!("sip:{caller_id}@{}", gw.sip_addr))?;
    let contact = uri(format!("sip:gw@{}", gw.sip_addr))?;
    let credential = trunk.username.as_ref().map(|u| Credential {
        username: u.clone(),
        password: trunk.password.clone().unwrap_or_default(),
        realm: None,
        ..Default::default()
    });
    let opt = InviteOption {
        caller,
        callee,
        contact,
        destination: Some(SipAddr::from(trunk.address)),
        content_type: Some("application/sdp".into()),
        offer,
        credential,
        ..Default::default()
    };
    let (state_tx, states) = gw.dialogs.new_dialog_state_channel();
    let (dialog, _join) = gw
        .dialogs
        .do_invite_async(opt, state_tx)
        .map_err(crate::GatewayError::sip)?;
    Ok((dialog, states))
}

struct OutboundTask {
    gw: Arc<Gateway>,
    call: OutboundCall,
    call_id: String,
    tenant: uuid::Uuid,
    agent: uuid::Uuid,
    number: String,
    caller_id: String,
    /// The agent's phone leg (none only while a click-to-call is being set up).
    phone: Option<InviteDialog>,
    phone_states: Option<DialogStateReceiver>,
    remote: Option<(InviteDialog, DialogStateReceiver)>,
    offer: Negotiated,
    media: Option<Session>,
    started_at: DateTime<Utc>,
    /// The remote side answered.
    answered_at: Option<DateTime<Utc>>,
    /// Click-to-call: the agent's phone answered our INVITE.
    phone_answered_at: Option<DateTime<Utc>>,
    /// The carrier trunk the remote side is dialled on (none for a call relayed for a peer).
    trunk: Option<crate::config::OutboundTrunk>,
    kind: CallKind,
    /// Closing signals of the WebSocket connections the agent's leg (`phone`) or, for a call
    /// relayed for a peer, the browser dialled as `remote` ride on.
    phone_closed: Option<CancellationToken>,
    remote_closed: Option<CancellationToken>,
    /// A browser's WebRTC leg (its own call) and our SDP answer to it.
    webrtc: Option<switchboard_webrtc::LegHandle>,
    webrtc_answer: Option<String>,
    /// The browser's WebRTC media died (consent lost): the cause in the CDR.
    media_lost: bool,
    /// How the agent's phone's media travels and its codec, once known (for its leg row).
    phone_codec: Option<(MediaKind, &'static str)>,
    /// The outside party's codec, once it answered with SDP.
    remote_codec: Option<&'static str>,
    /// Click-to-call holds its admission and call-cap permits for the call's life.
    permits: Option<(
        switchboard_sip_guard::admission::Permit,
        switchboard_sip_guard::CapPermit,
    )>,
}

/// How an outbound call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// The agent's phone dialled the number.
    PhoneDialled,
    /// The api asked; we rang the phone first.
    ClickToCall,
    /// A call relayed for a peer node: the "phone" side is the peer, the "remote" side the
    /// agent's phone registered here; the peer writes the CDR.
    Relayed,
}

impl OutboundTask {
    fn our_sdp(&self, leg: Leg, version: u64) -> Option<Vec<u8>> {
        if leg == Leg::Agent
            && let Some(answer) = &self.webrtc_answer
        {
            return Some(answer.clone().into_bytes());
        }
        let media = self.media.as_ref()?;
        let ip = self.gw.cfg.advertised_ip().to_string();
        let session_id = self.started_at.timestamp_millis().unsigned_abs();
        let dtmf = match leg {
            Leg::Agent => self.offer.dtmf_pt,
            Leg::Caller => Some(101),
        };
        Some(
            sdp::render(
                session_id,
                version,
                &ip,
                media.local_addr(leg).port(),
                self.offer.codec,
                dtmf,
                Direction::SendRecv,
            )
            .into_bytes(),
        )
    }

    /// INVITEs the agent's phone registered here, from our own address (NAT-correct).
    fn dial_phone(&mut self, binding: &Binding) {
        match self.gw.closed_signal_of(binding) {
            Ok(closed) => self.remote_closed = closed,
            Err(crate::ws::FlowGone) => {
                self.call
                    .handle(OutboundInput::RemoteFailed { status: 480 });
                return;
            }
        }
        let offer = self.our_sdp(Leg::Caller, 1);
        let (Ok(callee), Ok(caller), Ok(contact)) = (
            binding.contact.parse::<Uri>(),
            format!("sip:{}@{}", self.caller_id, self.gw.sip_addr).parse::<Uri>(),
            format!("sip:gw@{}", self.gw.sip_addr).parse::<Uri>(),
        ) else {
            self.call
                .handle(OutboundInput::RemoteFailed { status: 400 });
            return;
        };
        let opt = InviteOption {
            caller,
            callee,
            contact,
            destination: Some(binding.destination()),
            content_type: Some("application/sdp".into()),
            offer,
            ..Default::default()
        };
        let (state_tx, states) = self.gw.dialogs.new_dialog_state_channel();
        match self.gw.dialogs.do_invite_async(opt, state_tx) {
            Ok((dialog, _join)) => self.remote = Some((dialog, states)),
            Err(e) => {
                tracing::warn!(error = %e, "INVITE to the phone");
                self.call
                    .handle(OutboundInput::RemoteFailed { status: 500 });
            }
        }
    }

    async fn dial(&mut self) {
        let offer = self.our_sdp(Leg::Caller, 1);
        let Some(trunk) = self.trunk.clone() else {
            self.call
                .handle(OutboundInput::RemoteFailed { status: 503 });
            return;
        };
        match trunk_invite(&self.gw, &trunk, &self.number, &self.caller_id, offer) {
            Ok(remote) => self.remote = Some(remote),
            Err(e) => {
                tracing::warn!(error = %e, "INVITE to the trunk");
                self.call
                    .handle(OutboundInput::RemoteFailed { status: 503 });
            }
        }
    }

    async fn run(&mut self) {
        loop {
            while let Some(out) = self.call.poll_output() {
                self.execute(out).await;
            }
            if matches!(
                self.call.state(),
                crate::outbound_call::OutboundState::Ended(_)
            ) {
                return;
            }
            let wait = self
                .call
                .next_timeout()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let remote = async {
                match self.remote.as_mut() {
                    Some((_, states)) => states.recv().await,
                    None => std::future::pending().await,
                }
            };
            let phone = async {
                match self.phone_states.as_mut() {
                    Some(states) => states.recv().await,
                    None => std::future::pending().await,
                }
            };
            let (phone_closed, remote_closed) =
                (self.phone_closed.clone(), self.remote_closed.clone());
            let webrtc = crate::inbound::webrtc_event(self.webrtc.as_mut());
            tokio::select! {
                e = webrtc => self.on_webrtc(e).await,
                s = phone => self.on_phone(s).await,
                s = remote => self.on_remote(s).await,
                _ = sleep => self.call.handle_timeout(now_ms()),
                // A browser's WebSocket closed: its leg ended as if it had hung up (nothing
                // can be sent to it any more; its dialog is dropped, not BYE'd).
                _ = crate::inbound::flow_closed(phone_closed.as_ref()) => {
                    tracing::info!("the agent's WebSocket closed");
                    self.phone_closed = None;
                    if let Some(dialog) = self.phone.take() {
                        crate::inbound::forget(&self.gw.dialogs, &dialog);
                    }
                    self.on_phone(None).await;
                }
                _ = crate::inbound::flow_closed(remote_closed.as_ref()) => {
                    tracing::info!("the dialled browser's WebSocket closed");
                    self.remote_closed = None;
                    if let Some((dialog, _)) = &self.remote {
                        crate::inbound::forget(&self.gw.dialogs, dialog);
                    }
                    self.on_remote(None).await;
                }
            }
        }
    }

    /// The browser's WebRTC media: connected, or dead (consent lost): then the browser is
    /// hung up (BYE) and the call ends as the agent's.
    async fn on_webrtc(&mut self, event: Option<switchboard_webrtc::LegEvent>) {
        if event == Some(switchboard_webrtc::LegEvent::Connected) {
            tracing::info!("browser's WebRTC media connected");
            return;
        }
        tracing::info!(?event, "browser's WebRTC media ended");
        self.webrtc = None;
        self.media_lost = true;
        if let Some(phone) = self.phone.clone() {
            tokio::spawn(async move { phone.bye().await });
        }
        self.on_phone(None).await;
    }

    async fn on_phone(&mut self, state: Option<DialogState>) {
        let ringing_phone = self.call.state() == crate::outbound_call::OutboundState::RingingPhone;
        match state {
            // Click-to-call: the agent picked up; its SDP answers our offer.
            Some(DialogState::Confirmed(_, resp)) if ringing_phone => {
                let answer = std::str::from_utf8(&resp.body)
                    .ok()
                    .and_then(|t| Sdp::parse(t).ok())
                    .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok());
                let Some((addr, answer)) = answer.and_then(|a| Some((remote_rtp(&a)?, a))) else {
                    self.call.handle(OutboundInput::PhoneFailed { status: 488 });
                    return;
                };
                if let Some(media) = &self.media
                    && let Err(e) = media
                        .set_peer(Leg::Agent, addr, law_of(answer.codec), answer.dtmf_pt)
                        .await
                {
                    tracing::warn!(error = %e, "phone RTP peer");
                }
                self.phone_codec = Some((MediaKind::Rtp, answer.codec.name()));
                self.offer = answer;
                self.phone_answered_at = Some(Utc::now());
                self.call
                    .handle(OutboundInput::PhoneAnswered { now: now_ms() });
            }
            Some(DialogState::Terminated(_, reason)) if ringing_phone => {
                self.phone_states = None;
                let status = crate::inbound::failure_status(&reason);
                self.call.handle(OutboundInput::PhoneFailed { status });
            }
            None | Some(DialogState::Terminated(..)) => {
                self.phone_states = None;
                self.call.handle(if self.answered_at.is_some() {
                    OutboundInput::AgentBye
                } else {
                    OutboundInput::AgentCancel
                })
            }
            // A browser's re-offer (hold, unhold): its WebRTC leg answers.
            Some(DialogState::Updated(_, req, handle))
                if !req.body.is_empty() && self.webrtc.is_some() =>
            {
                if let Some(h) = &self.webrtc {
                    answer_reoffer(handle, h.reoffer(&req.body).await).await;
                }
            }
            // A session refresh or re-INVITE (hold is not passed on): answered with our media,
            // so the dialog lives on.
            Some(DialogState::Updated(_, _, handle)) => {
                let body = self.our_sdp(Leg::Agent, 3);
                let _ = handle
                    .respond(StatusCode::OK, Some(sdp_headers()), body)
                    .await;
            }
            Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            _ => {}
        }
    }

    async fn on_remote(&mut self, state: Option<DialogState>) {
        match state {
            Some(DialogState::Early(_, resp)) => {
                self.apply_remote_sdp(&resp.body).await;
                let early_media = !resp.body.is_empty();
                self.call
                    .handle(OutboundInput::RemoteProgress { early_media });
            }
            Some(DialogState::Confirmed(_, resp)) if self.answered_at.is_none() => {
                self.apply_remote_sdp(&resp.body).await;
                self.answered_at = Some(Utc::now());
                self.call.handle(OutboundInput::RemoteAnswered);
            }
            Some(DialogState::Terminated(_, reason)) => {
                let input = if self.answered_at.is_some() {
                    OutboundInput::RemoteBye
                } else {
                    OutboundInput::RemoteFailed {
                        status: crate::inbound::failure_status(&reason),
                    }
                };
                self.remote = None;
                self.call.handle(input);
            }
            None => {
                self.remote = None;
                self.call.handle(if self.answered_at.is_some() {
                    OutboundInput::RemoteBye
                } else {
                    OutboundInput::RemoteFailed { status: 500 }
                });
            }
            _ => {}
        }
    }

    async fn apply_remote_sdp(&mut self, body: &[u8]) {
        let remote = std::str::from_utf8(body)
            .ok()
            .and_then(|t| Sdp::parse(t).ok())
            .and_then(|s| sdp::negotiate(&s, &[Codec::Pcmu, Codec::Pcma]).ok());
        let Some(remote) = remote else {
            return;
        };
        let (Some(addr), Some(media)) = (remote_rtp(&remote), &self.media) else {
            return;
        };
        self.remote_codec = Some(remote.codec.name());
        let law: Law = law_of(remote.codec);
        if let Err(e) = media.set_peer(Leg::Caller, addr, law, remote.dtmf_pt).await {
            tracing::warn!(error = %e, "remote RTP peer");
        }
    }

    async fn execute(&mut self, out: OutboundOutput) {
        match out {
            OutboundOutput::AgentProgress => {
                let body = self.our_sdp(Leg::Agent, 1);
                if let Some(phone) = &self.phone {
                    let _ = phone.ringing(Some(sdp_headers()), body);
                }
            }
            OutboundOutput::AgentAnswer => {
                let body = self.our_sdp(Leg::Agent, 2);
                if let Some(phone) = &self.phone
                    && let Err(e) = phone.accept(Some(sdp_headers()), body)
                {
                    tracing::warn!(error = %e, "200 to the phone");
                }
            }
            OutboundOutput::AgentReject { status } => {
                if let Some(phone) = &self.phone {
                    let _ = phone.reject(Some(StatusCode::from(status)), None);
                }
            }
            OutboundOutput::AgentBye => {
                if let Some(phone) = self.phone.clone() {
                    tokio::spawn(async move { phone.bye().await });
                }
            }
            OutboundOutput::PhoneCancel => {
                if let Some(phone) = self.phone.clone() {
                    tokio::spawn(async move { phone.cancel().await });
                }
            }
            OutboundOutput::DialRemote => {
                if let Some(media) = &self.media
                    && let Err(e) = media
                        .play(Leg::Agent, Prompt::looped(crate::prompts::ringback()))
                        .await
                {
                    tracing::warn!(error = %e, "ringback");
                }
                self.dial().await
            }
            OutboundOutput::RemoteCancel => {
                if let Some((dialog, _)) = self.remote.take() {
                    tokio::spawn(async move { dialog.cancel().await });
                }
            }
            OutboundOutput::RemoteBye => {
                if let Some((dialog, _)) = self.remote.take() {
                    crate::inbound::bye_and_forget(self.gw.dialogs.clone(), dialog);
                }
            }
            OutboundOutput::Bridge => {
                if let Some(media) = &self.media
                    && let Err(e) = media.bridge().await
                {
                    tracing::warn!(error = %e, "bridge");
                }
            }
            OutboundOutput::Ended(end) => self.finish(end).await,
        }
    }

    async fn finish(&mut self, end: OutboundEnd) {
        // Nothing more is sent on either dialog: take them out of the stack's registry (the
        // BYEs were spawned before; removal after they went out).
        let dialogs = self.gw.dialogs.clone();
        let phone = self.phone.clone();
        let remote = self.remote.take().map(|(d, _)| d);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Some(phone) = phone {
                crate::inbound::forget(&dialogs, &phone);
            }
            if let Some(r) = remote {
                crate::inbound::forget(&dialogs, &r);
            }
        });
        let stats = match self.media.take() {
            Some(m) => m.close().await.ok(),
            None => None,
        };
        let (cause, side) = match end {
            OutboundEnd::AgentHangup | OutboundEnd::Cancelled if self.media_lost => {
                ("agent_media_timeout", "agent")
            }
            OutboundEnd::Refused(_) => ("refused", "remote"),
            OutboundEnd::Cancelled => ("cancelled", "agent"),
            OutboundEnd::PhoneUnanswered(_) => ("phone_unanswered", "agent"),
            OutboundEnd::AgentHangup => ("normal_clearing", "agent"),
            OutboundEnd::RemoteHangup => ("normal_clearing", "remote"),
        };
        let direction = if self.kind == CallKind::Relayed {
            "trunk"
        } else {
            "outbound"
        };
        self.gw
            .metrics
            .calls
            .with_label_values(&[direction, cause])
            .inc();
        if self.kind == CallKind::Relayed {
            return;
        }
        // Two legs: the agent's phone (relay agent leg) and the outside party (caller leg),
        // both started when the phone's INVITE was admitted and dialled on at once.
        let mut legs = Legs::default();
        let now = Utc::now();
        let phone = legs.start(Role::Phone, &self.agent.to_string(), self.started_at);
        // Click-to-call dials out only once the phone answered.
        let dialled_at = match self.kind {
            CallKind::PhoneDialled | CallKind::Relayed => Some(self.started_at),
            CallKind::ClickToCall => self.phone_answered_at,
        };
        let remote = match dialled_at {
            Some(at) => legs.start(Role::External, &self.number, at),
            None => None,
        };
        if let Some(at) = self.phone_answered_at.or(self.answered_at) {
            legs.answered(phone, at);
        }
        if let Some(at) = self.answered_at {
            legs.answered(remote, at);
        }
        if let OutboundEnd::PhoneUnanswered(status) = end {
            legs.ended(phone, now, Some(status), "");
        }
        // The relay's caller leg is the outside party; its agent leg the phone.
        if let Some((outside_stats, phone_stats)) = stats.as_ref().map(leg_media_stats) {
            legs.set_media(phone, phone_stats);
            legs.set_media(remote, outside_stats);
        }
        if let Some((media, codec)) = self.phone_codec {
            legs.set_codec(phone, media, codec);
        }
        if let Some(codec) = self.remote_codec {
            legs.set_codec(remote, MediaKind::Rtp, codec);
        }
        let refused = match end {
            OutboundEnd::Refused(status) => Some(status),
            _ => None,
        };
        legs.ended(
            remote,
            now,
            refused,
            if refused.is_some() { "" } else { cause },
        );
        legs.ended(phone, now, None, cause);
        let record = CallRecord {
            legs: legs.finish(now, cause),
            call_id: self.call_id.clone(),
            direction: match self.kind {
                CallKind::PhoneDialled | CallKind::Relayed => "outbound",
                CallKind::ClickToCall => "click_to_call",
            }
            .into(),
            from_number: self.caller_id.clone(),
            to_number: self.number.clone(),
            queue_id: None,
            agent_id: Some(self.agent),
            started_at: self.started_at,
            queued_at: None,
            answered_at: self.answered_at,
            ended_at: Utc::now(),
            hangup_cause: cause.into(),
            hangup_side: side.into(),
            media_stats: stats.as_ref().map(media_stats_json),
        };
        let _ = crate::inbound::write_cdr(&self.gw, self.tenant, &record).await;
    }
}
