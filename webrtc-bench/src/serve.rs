//! `serve`: the gateway side, alone in its process (its CPU is read from /proc). Per call: a
//! relay session whose caller leg talks plain RTP with the generator and whose agent leg is
//! bridged to a WebRTC leg (gateway role: ICE-lite, DTLS passive) answering the generator's
//! browser. Each call is a task that counts its leg's events and ends at `close`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_media::g711::Law;
use switchboard_relay::{Leg as RelayLeg, MediaEvent, Relay, RelayConfig, Session};
use switchboard_webrtc::{Endpoint, LegEvent, LegHandle, RELAY_DTMF_PT, Role, WebrtcConfig};
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::signal::{self, Message};
use crate::{PortRange, Res};

/// Legs of the current generation of calls.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicUsize,
    closed: AtomicUsize,
}

pub struct ServeOpts<'a> {
    pub socket: &'a Path,
    pub relay_ports: PortRange,
    pub webrtc_ports: PortRange,
    pub max_calls: usize,
}

pub async fn serve(o: ServeOpts<'_>) -> Res<()> {
    let local = [127, 0, 0, 1].into();
    let mut cfg = RelayConfig::new(local, o.relay_ports.min, o.relay_ports.max);
    cfg.rtp_timeout = Duration::from_secs(120);
    let relay = Relay::new(cfg).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::new(
        WebrtcConfig {
            bind_ip: local,
            advertised_ip: local,
            port_min: o.webrtc_ports.min,
            port_max: o.webrtc_ports.max,
            consent_timeout: Duration::from_secs(30),
            max_legs: o.max_calls,
            max_sdp_bytes: signal::MAX_BODY,
        },
        Role::Gateway,
    )
    .map_err(|e| e.to_string())?;
    let listener = UnixListener::bind(o.socket).map_err(|e| format!("{:?}: {e}", o.socket))?;
    let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut counters = Arc::new(Counters::default());
    let (mut stop, mut stopped) = watch::channel(false);
    let mut calls: Vec<JoinHandle<()>> = Vec::new();
    while let Some(m) = signal::read(&mut rd).await? {
        let words = m.words();
        let reply = match words.as_slice() {
            &["open", id, caller] => {
                match open_call(&relay, &endpoint, id, caller, &m.body).await {
                    Ok(call) => {
                        let port = call.caller_port.to_string();
                        let reply = Message::new(&["ok", id, &port], call.answer.as_bytes());
                        calls.push(tokio::spawn(run_call(
                            call,
                            stopped.clone(),
                            counters.clone(),
                        )));
                        reply
                    }
                    Err(e) => {
                        let reason = e.replace(char::is_whitespace, "_");
                        Message::new(&["err", id, &reason], b"")
                    }
                }
            }
            ["status"] => Message::new(
                &[
                    "status",
                    &counters.connected.load(Ordering::Relaxed).to_string(),
                    &counters.closed.load(Ordering::Relaxed).to_string(),
                    &calls.len().to_string(),
                ],
                b"",
            ),
            ["close"] => {
                let _ = stop.send(true);
                for c in calls.drain(..) {
                    let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
                }
                (stop, stopped) = watch::channel(false);
                counters = Arc::new(Counters::default());
                Message::new(&["closed"], b"")
            }
            ["quit"] => break,
            _ => Message::new(&["err", "bad_command"], b""),
        };
        signal::write(&mut wr, &reply).await?;
    }
    let _ = stop.send(true);
    for c in calls {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    Ok(())
}

/// A call set up: the relay session, its events, the WebRTC leg bridged to its agent leg.
struct Call {
    session: Session,
    events: mpsc::Receiver<MediaEvent>,
    leg: LegHandle,
    /// Where the generator's RTP caller sends.
    caller_port: u16,
    answer: String,
}

async fn open_call(
    relay: &Relay,
    endpoint: &Endpoint,
    id: &str,
    caller: &str,
    offer: &[u8],
) -> Res<Call> {
    let caller: SocketAddr = caller.parse().map_err(|_| "caller address")?;
    let (leg, answer) = endpoint
        .answer(offer, Law::Ulaw)
        .map_err(|e| e.to_string())?;
    let (session, events) = relay
        .open(&format!("bench-{id}"))
        .map_err(|e| e.to_string())?;
    let relay_err = |e: switchboard_relay::RelayError| e.to_string();
    session
        .set_peer(RelayLeg::Caller, caller, Law::Ulaw, Some(101))
        .await
        .map_err(relay_err)?;
    session
        .set_peer(
            RelayLeg::Agent,
            leg.relay_side_addr(),
            leg.relay_law(),
            Some(RELAY_DTMF_PT),
        )
        .await
        .map_err(relay_err)?;
    session.bridge().await.map_err(relay_err)?;
    let leg = leg
        .start(session.local_addr(RelayLeg::Agent))
        .map_err(|e| e.to_string())?;
    Ok(Call {
        caller_port: session.local_addr(RelayLeg::Caller).port(),
        session,
        events,
        leg,
        answer,
    })
}

/// Counts the leg's events until `stop`, then ends the leg and the session.
async fn run_call(mut call: Call, mut stop: watch::Receiver<bool>, counters: Arc<Counters>) {
    let mut leg_alive = true;
    let mut events_open = true;
    while !*stop.borrow() {
        tokio::select! {
            ev = call.leg.next_event(), if leg_alive => match ev {
                Some(LegEvent::Connected) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                Some(LegEvent::Closed(reason)) => {
                    eprintln!("webrtc-bench serve: leg closed: {reason:?}");
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    leg_alive = false;
                }
                None => leg_alive = false,
            },
            // Relay events (latching) are not measured; the channel is only drained.
            ev = call.events.recv(), if events_open => events_open = ev.is_some(),
            r = stop.changed() => if r.is_err() { break },
        }
    }
    drop(call.leg);
    let _ = call.session.close().await;
}
