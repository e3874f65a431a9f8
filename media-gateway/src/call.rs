//! One inbound call through the B2BUA, as a sans-IO state machine.
//!
//! The caller's leg (from a carrier trunk) and the agent's leg are separate dialogs; this
//! machine decides what each leg is sent and what the state engine is told, from what happened
//! (SIP from either leg, engine decisions, timers). It owns no socket, clock or task: the call's
//! task feeds [`Call::handle`] with `(now, Input)` and drains [`Call::poll_output`] until `None`,
//! then sleeps until [`Call::next_timeout`]. Every path is unit-tested in simulated time.
//!
//! Flow: INVITE -> route lookup -> 183 with early media (music on hold) and enqueue -> the engine
//! offers an agent -> INVITE to the agent (ring timeout) -> agent 200 -> engine `answer`,
//! 200 to the caller, media bridged -> BYE from either side ends both legs. An agent that
//! rejects or does not answer makes the call go back to its place in line (the engine keeps the
//! place); a CANCEL from the caller abandons.

use std::collections::VecDeque;
use std::time::Duration;

/// Milliseconds of the caller's clock; the machine only compares them.
pub type Millis = u64;

/// How long an agent leg may ring before it counts as ring-no-answer (the engine's lease is the
/// authority; this is the gateway's own bound so a silent phone cannot hold a call).
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(15);

/// A queued caller hears their place in line at most this often.
pub const ANNOUNCE_EVERY_MS: Millis = 30_000;

/// Why the call ended, and on which side: goes to the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// Dialled number not routed: 404.
    NoRoute,
    /// Tenant suspended: 403.
    TenantSuspended,
    /// Over a concurrency cap or overloaded: 503.
    Overloaded,
    /// The caller hung up (CANCEL) before an agent answered.
    CallerAbandoned,
    /// The engine took the call out of the queue (max wait, overflow to voicemail/number).
    LeftQueue,
    /// Normal clearing by the caller after the conversation.
    CallerHangup,
    /// Normal clearing by the agent after the conversation.
    AgentHangup,
    /// The caller stopped refreshing its RFC 4028 session timer (a vanished peer).
    SessionExpired,
    /// A blind transfer to an outside number failed (the caller is hung up).
    TransferFailed,
    /// The outside party of a transferred call hung up.
    RemoteHangup,
    /// The agent's connection (a browser's WebSocket) closed during the conversation.
    AgentConnectionLost,
    /// The agent's WebRTC media died (RFC 7675: no consent check within the timeout).
    AgentMediaTimeout,
}

/// What the call is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// INVITE received, waiting for the route lookup.
    Routing,
    /// In the queue, caller hears music on hold (183 sent).
    Queued,
    /// An agent's phone is ringing.
    Offering {
        agent: String,
        since: Millis,
    },
    /// Caller and agent talk.
    Bridged {
        agent: String,
        held: bool,
    },
    /// Blind-transferred to an outside number: dialling it, or talking to it.
    External {
        number: String,
        answered: bool,
    },
    Ended(EndCause),
}

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The route lookup for the dialled number finished.
    Routed(Result<String, EndCause>),
    /// The engine accepted the call in line.
    Enqueued,
    /// The engine offered the call to an agent reachable at `contact`.
    Offered { agent: String, contact: String },
    /// The engine released the offer (lease expired, agent logged out).
    OfferReleased { agent: String },
    /// The engine ended the call in the queue (max wait, overflow out of this gateway).
    LeftQueue,
    /// The agent's phone rings (180/183).
    AgentRinging,
    /// The agent answered (200 OK) with this SDP.
    AgentAnswered { sdp: String },
    /// The agent's phone refused (4xx/5xx/6xx).
    AgentFailed { status: u16 },
    /// The caller sent CANCEL (before the final response).
    CallerCancel,
    /// The caller sent BYE.
    CallerBye,
    /// The agent sent BYE.
    AgentBye,
    /// The agent's connection (a browser's WebSocket) closed: nothing more can be sent on
    /// the agent leg, no BYE and no CANCEL.
    AgentLost,
    /// The agent's WebRTC media died (consent lost): the agent leg gets a BYE, the caller too.
    AgentMediaLost,
    /// A re-INVITE from the caller; `hold` when its SDP is sendonly/inactive.
    CallerReinvite { hold: bool },
    /// The caller refreshed its session (re-INVITE or UPDATE, RFC 4028).
    CallerRefresh,
    /// The engine told the call its place in line and estimated wait.
    QueuePosition { position: u64, eta_ms: u64 },
    /// A one-shot announcement to the caller finished playing.
    AnnouncementEnded,
    /// The agent blind-transferred the caller to an outside number (already allowed by the
    /// tenant's dial policy).
    AgentTransferToNumber { number: String },
    /// The outside party of a transfer answered.
    RemoteAnswered,
    /// The outside party of a transfer could not be reached.
    RemoteFailed { status: u16 },
    /// The outside party hung up.
    RemoteBye,
    /// The agent blind-transferred the caller (REFER or API) to a queue, preferring an agent.
    AgentTransfer {
        queue: String,
        preferred_agent: Option<String>,
    },
}

/// SIP the machine wants sent. The SIP layer builds the messages (dialog state, headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sip {
    /// A response to the caller's INVITE.
    CallerResponse { status: u16, reason: &'static str },
    /// 200 OK to the caller's INVITE with our SDP bridged to the agent.
    CallerAnswer,
    /// 200 OK to a re-INVITE, answering its direction.
    CallerReinviteOk { hold: bool },
    /// BYE to the caller.
    CallerBye,
    /// INVITE to the agent's contact.
    AgentInvite { contact: String },
    /// CANCEL the ringing agent leg.
    AgentCancel,
    /// BYE to the agent.
    AgentBye,
    /// Re-INVITE to the agent (hold or resume).
    AgentReinvite { hold: bool },
    /// INVITE an outside number through the carrier trunk (blind transfer).
    RemoteInvite { number: String },
    /// CANCEL the outside number's ringing leg.
    RemoteCancel,
    /// BYE to the outside party.
    RemoteBye,
}

/// State-engine commands the machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Enqueue {
        queue: String,
    },
    Answer {
        agent: String,
    },
    /// The agent refused or did not answer: the call goes back to its place.
    Reject {
        agent: String,
    },
    /// The call is over (abandoned or finished).
    Hangup,
    /// Put the caller back in line (blind transfer): a new engine call in `queue`.
    Transfer {
        queue: String,
        preferred_agent: Option<String>,
    },
}

/// Media actions for the RTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Play music on hold to the caller.
    PlayHold,
    /// Tell the caller their place in line and estimated wait (once), then hold music again.
    Announce { position: u64, eta_ms: u64 },
    /// Bridge caller and agent RTP (rewriting SSRC/seq/ts for continuity).
    Bridge,
    /// Stop relaying and free the ports.
    Release,
}

/// Everything the machine asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Sip(Sip),
    Engine(Engine),
    Media(Media),
    /// The call reached `Ended`; write the CDR.
    Ended(EndCause),
}

/// One call.
#[derive(Debug)]
pub struct Call {
    state: State,
    ring_timeout: Duration,
    out: VecDeque<Output>,
    /// Agents that rang and failed, for the CDR.
    attempts: u32,
    /// RFC 4028 session interval the caller asked for (it refreshes), and its last refresh.
    session: Option<(Millis, Millis)>,
    /// The caller's INVITE got its 200 (a transferred call is answered already).
    caller_answered: bool,
    /// Blind transfers so far.
    transfers: u32,
    /// When the caller last heard their place in line.
    last_announced: Option<Millis>,
}

impl Call {
    /// A call whose caller INVITE just arrived: we answer 100 Trying at once and wait for the
    /// route lookup.
    pub fn new(ring_timeout: Duration) -> Self {
        let mut c = Self {
            state: State::Routing,
            ring_timeout,
            out: VecDeque::new(),
            attempts: 0,
            session: None,
            caller_answered: false,
            transfers: 0,
            last_announced: None,
        };
        c.sip(Sip::CallerResponse {
            status: 100,
            reason: "Trying",
        });
        c
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Agents offered the call who did not take it.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// Blind transfers the call went through.
    pub fn transfers(&self) -> u32 {
        self.transfers
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The caller's INVITE asked for RFC 4028 session timers with this interval; the caller
    /// refreshes. Counting starts when the call is answered.
    pub fn set_session_interval(&mut self, interval_ms: Millis) {
        self.session = Some((interval_ms, 0));
    }

    /// When the caller's session lapses unless refreshed: RFC 4028 10 has the side that does
    /// not refresh send its BYE at the interval minus min(32 s, interval / 3).
    fn session_deadline(&self) -> Option<Millis> {
        match (&self.state, self.session) {
            (
                State::Bridged { .. } | State::External { answered: true, .. },
                Some((interval, last)),
            ) => Some(last + interval - (interval / 3).min(32_000)),
            _ => None,
        }
    }

    /// When [`Call::handle_timeout`] must run next, if at all.
    pub fn next_timeout(&self) -> Option<Millis> {
        match &self.state {
            State::Offering { since, .. } => Some(since + self.ring_timeout.as_millis() as u64),
            _ => self.session_deadline(),
        }
    }

    fn sip(&mut self, s: Sip) {
        self.out.push_back(Output::Sip(s));
    }

    fn engine(&mut self, e: Engine) {
        self.out.push_back(Output::Engine(e));
    }

    fn media(&mut self, m: Media) {
        self.out.push_back(Output::Media(m));
    }

    fn end(&mut self, cause: EndCause) {
        self.media(Media::Release);
        self.state = State::Ended(cause);
        self.out.push_back(Output::Ended(cause));
    }

    fn refreshed(&mut self, now: Millis) {
        if let Some((interval, _)) = self.session {
            self.session = Some((interval, now));
        }
    }

    /// An agent leg failed (refused, timed out, released): back to the queue.
    fn agent_lost(&mut self, agent: String, cancel_leg: bool, tell_engine: bool) {
        self.attempts += 1;
        if cancel_leg {
            self.sip(Sip::AgentCancel);
        }
        if tell_engine {
            self.engine(Engine::Reject { agent });
        }
        self.state = State::Queued;
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if let State::Offering { agent, since } = &self.state
            && now >= since + self.ring_timeout.as_millis() as u64
        {
            let agent = agent.clone();
            self.agent_lost(agent, true, true);
        }
        if self.session_deadline().is_some_and(|d| now >= d) {
            self.sip(Sip::CallerBye);
            if matches!(self.state, State::External { .. }) {
                self.sip(Sip::RemoteBye);
            } else {
                self.sip(Sip::AgentBye);
                self.engine(Engine::Hangup);
            }
            self.end(EndCause::SessionExpired);
        }
    }

    /// Feeds one input. Inputs that make no sense in the current state (a late 200 after a
    /// CANCEL, a second BYE) are ignored: the network repeats and reorders.
    pub fn handle(&mut self, now: Millis, input: Input) {
        match (self.state.clone(), input) {
            (State::Routing, Input::Routed(Ok(queue))) => {
                self.sip(Sip::CallerResponse {
                    status: 183,
                    reason: "Session Progress",
                });
                self.media(Media::PlayHold);
                self.engine(Engine::Enqueue { queue });
                self.state = State::Queued;
            }
            (State::Routing, Input::Routed(Err(cause))) => {
                let (status, reason) = match cause {
                    EndCause::NoRoute => (404, "Not Found"),
                    EndCause::TenantSuspended => (403, "Forbidden"),
                    _ => (503, "Service Unavailable"),
                };
                self.sip(Sip::CallerResponse { status, reason });
                self.end(cause);
            }
            (State::Queued, Input::Enqueued) => {}
            (State::Queued, Input::QueuePosition { position, eta_ms })
                if self
                    .last_announced
                    .is_none_or(|t| now >= t + ANNOUNCE_EVERY_MS) =>
            {
                self.last_announced = Some(now);
                self.media(Media::Announce { position, eta_ms });
            }
            (State::Queued, Input::AnnouncementEnded) => self.media(Media::PlayHold),
            (State::Queued, Input::Offered { agent, contact }) => {
                self.sip(Sip::AgentInvite { contact });
                self.state = State::Offering { agent, since: now };
            }
            (State::Offering { .. }, Input::AgentRinging) => {}
            (State::Offering { agent, .. }, Input::AgentAnswered { .. }) => {
                self.engine(Engine::Answer {
                    agent: agent.clone(),
                });
                if !self.caller_answered {
                    self.caller_answered = true;
                    self.sip(Sip::CallerAnswer);
                }
                self.media(Media::Bridge);
                self.state = State::Bridged { agent, held: false };
                if let Some((interval, _)) = self.session {
                    self.session = Some((interval, now));
                }
            }
            (State::Offering { agent, .. }, Input::AgentFailed { .. } | Input::AgentLost) => {
                // The leg is already finished by its final response: no CANCEL.
                self.agent_lost(agent, false, true);
            }
            (State::Offering { agent: offered, .. }, Input::OfferReleased { agent })
                if offered == agent =>
            {
                // The engine already put the call back; just stop the ringing.
                self.agent_lost(agent, true, false);
            }
            (State::Routing | State::Queued, Input::CallerCancel) => {
                self.sip(Sip::CallerResponse {
                    status: 487,
                    reason: "Request Terminated",
                });
                self.engine(Engine::Hangup);
                self.end(EndCause::CallerAbandoned);
            }
            (State::Offering { .. }, Input::CallerCancel) => {
                self.sip(Sip::AgentCancel);
                self.sip(Sip::CallerResponse {
                    status: 487,
                    reason: "Request Terminated",
                });
                self.engine(Engine::Hangup);
                self.end(EndCause::CallerAbandoned);
            }
            (State::Queued | State::Offering { .. }, Input::LeftQueue) => {
                if matches!(self.state, State::Offering { .. }) {
                    self.sip(Sip::AgentCancel);
                }
                self.sip(Sip::CallerResponse {
                    status: 480,
                    reason: "Temporarily Unavailable",
                });
                self.end(EndCause::LeftQueue);
            }
            (State::Bridged { .. }, Input::CallerBye) => {
                self.sip(Sip::AgentBye);
                self.engine(Engine::Hangup);
                self.end(EndCause::CallerHangup);
            }
            (State::Bridged { .. }, Input::AgentBye) => {
                self.sip(Sip::CallerBye);
                self.engine(Engine::Hangup);
                self.end(EndCause::AgentHangup);
            }
            (State::Bridged { .. }, Input::AgentLost) => {
                self.sip(Sip::CallerBye);
                self.engine(Engine::Hangup);
                self.end(EndCause::AgentConnectionLost);
            }
            (State::Bridged { .. }, Input::AgentMediaLost) => {
                self.sip(Sip::AgentBye);
                self.sip(Sip::CallerBye);
                self.engine(Engine::Hangup);
                self.end(EndCause::AgentMediaTimeout);
            }
            (State::Bridged { agent, .. }, Input::CallerReinvite { hold }) => {
                self.sip(Sip::AgentReinvite { hold });
                self.sip(Sip::CallerReinviteOk { hold });
                self.state = State::Bridged { agent, held: hold };
                self.refreshed(now);
            }
            (State::Bridged { .. } | State::External { .. }, Input::CallerRefresh) => {
                self.refreshed(now)
            }
            (State::Bridged { .. }, Input::AgentTransferToNumber { number }) => {
                self.transfers += 1;
                self.sip(Sip::AgentBye);
                self.engine(Engine::Hangup);
                self.media(Media::PlayHold);
                self.sip(Sip::RemoteInvite {
                    number: number.clone(),
                });
                self.state = State::External {
                    number,
                    answered: false,
                };
            }
            (
                State::External {
                    number,
                    answered: false,
                },
                Input::RemoteAnswered,
            ) => {
                self.media(Media::Bridge);
                self.state = State::External {
                    number,
                    answered: true,
                };
                self.refreshed(now);
            }
            (
                State::External {
                    answered: false, ..
                },
                Input::RemoteFailed { .. },
            ) => {
                self.sip(Sip::CallerBye);
                self.end(EndCause::TransferFailed);
            }
            (State::External { answered, .. }, Input::CallerBye | Input::CallerCancel) => {
                self.sip(if answered {
                    Sip::RemoteBye
                } else {
                    Sip::RemoteCancel
                });
                self.end(EndCause::CallerHangup);
            }
            (State::External { answered: true, .. }, Input::RemoteBye) => {
                self.sip(Sip::CallerBye);
                self.end(EndCause::RemoteHangup);
            }
            (State::External { .. }, Input::CallerReinvite { hold }) => {
                self.sip(Sip::CallerReinviteOk { hold });
                self.refreshed(now);
            }
            (
                State::Bridged { .. },
                Input::AgentTransfer {
                    queue,
                    preferred_agent,
                },
            ) => {
                self.transfers += 1;
                self.sip(Sip::AgentBye);
                self.engine(Engine::Hangup);
                self.media(Media::PlayHold);
                self.engine(Engine::Transfer {
                    queue,
                    preferred_agent,
                });
                self.state = State::Queued;
            }
            // Everything else is stale or repeated: ignore.
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_timer_refreshes_keep_the_call_and_silence_ends_it() {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        c.set_session_interval(90_000);
        c.handle(0, Input::Routed(Ok("q1".into())));
        c.handle(1, Input::Enqueued);
        c.handle(
            2,
            Input::Offered {
                agent: "a".into(),
                contact: "a".into(),
            },
        );
        c.handle(1_000, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        // 90 s interval: the BYE is due at 90 - min(32, 30) = 60 s after the last refresh.
        assert_eq!(c.next_timeout(), Some(61_000));
        c.handle(50_000, Input::CallerRefresh);
        assert_eq!(c.next_timeout(), Some(110_000));
        c.handle_timeout(109_999);
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(110_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerBye),
                Output::Sip(Sip::AgentBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::SessionExpired),
            ]
        );
        assert_eq!(c.next_timeout(), None);
    }

    #[test]
    fn blind_transfer_requeues_the_answered_caller_without_a_second_200() {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        c.handle(0, Input::Routed(Ok("q1".into())));
        c.handle(
            2,
            Input::Offered {
                agent: "a".into(),
                contact: "a".into(),
            },
        );
        c.handle(3, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        c.handle(
            10,
            Input::AgentTransfer {
                queue: "q2".into(),
                preferred_agent: Some("b".into()),
            },
        );
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::PlayHold),
                Output::Engine(Engine::Transfer {
                    queue: "q2".into(),
                    preferred_agent: Some("b".into())
                }),
            ]
        );
        assert_eq!(c.state(), &State::Queued);
        c.handle(
            11,
            Input::Offered {
                agent: "b".into(),
                contact: "b".into(),
            },
        );
        c.handle(12, Input::AgentAnswered { sdp: String::new() });
        let out = drain(&mut c);
        assert!(
            !out.contains(&Output::Sip(Sip::CallerAnswer)),
            "answered once: {out:?}"
        );
        assert!(out.contains(&Output::Media(Media::Bridge)));
        assert_eq!(c.transfers(), 1);
    }

    #[test]
    fn blind_transfer_to_a_number_bridges_the_outside_party() {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        c.handle(0, Input::Routed(Ok("q1".into())));
        c.handle(
            2,
            Input::Offered {
                agent: "a".into(),
                contact: "a".into(),
            },
        );
        c.handle(3, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        let number = "+14155550123".to_owned();
        c.handle(
            10,
            Input::AgentTransferToNumber {
                number: number.clone(),
            },
        );
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::PlayHold),
                Output::Sip(Sip::RemoteInvite {
                    number: number.clone()
                }),
            ]
        );
        c.handle(11, Input::AgentAnswered { sdp: String::new() });
        assert!(drain(&mut c).is_empty(), "no agent any more");
        c.handle(12, Input::RemoteAnswered);
        assert_eq!(drain(&mut c), vec![Output::Media(Media::Bridge)]);
        c.handle(20, Input::RemoteBye);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerBye),
                Output::Media(Media::Release),
                Output::Ended(EndCause::RemoteHangup)
            ]
        );
    }

    #[test]
    fn a_failed_transfer_to_a_number_hangs_up_and_a_caller_bye_cancels_it() {
        let bridged = || {
            let mut c = Call::new(DEFAULT_RING_TIMEOUT);
            c.handle(0, Input::Routed(Ok("q1".into())));
            c.handle(
                2,
                Input::Offered {
                    agent: "a".into(),
                    contact: "a".into(),
                },
            );
            c.handle(3, Input::AgentAnswered { sdp: String::new() });
            c.handle(
                10,
                Input::AgentTransferToNumber {
                    number: "+14155550123".into(),
                },
            );
            drain(&mut c);
            c
        };
        let mut c = bridged();
        c.handle(11, Input::RemoteFailed { status: 486 });
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerBye),
                Output::Media(Media::Release),
                Output::Ended(EndCause::TransferFailed)
            ]
        );
        let mut c = bridged();
        c.handle(11, Input::CallerBye);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::RemoteCancel),
                Output::Media(Media::Release),
                Output::Ended(EndCause::CallerHangup)
            ]
        );
    }

    #[test]
    fn queued_callers_hear_their_place_at_most_every_30_s() {
        let mut c = queued();
        c.handle(
            5,
            Input::QueuePosition {
                position: 2,
                eta_ms: 90_000,
            },
        );
        assert_eq!(
            drain(&mut c),
            vec![Output::Media(Media::Announce {
                position: 2,
                eta_ms: 90_000
            })]
        );
        c.handle(6, Input::AnnouncementEnded);
        assert_eq!(drain(&mut c), vec![Output::Media(Media::PlayHold)]);
        c.handle(
            10_000,
            Input::QueuePosition {
                position: 1,
                eta_ms: 40_000,
            },
        );
        assert!(drain(&mut c).is_empty(), "too soon again");
        c.handle(
            30_005,
            Input::QueuePosition {
                position: 1,
                eta_ms: 40_000,
            },
        );
        assert_eq!(
            drain(&mut c),
            vec![Output::Media(Media::Announce {
                position: 1,
                eta_ms: 40_000
            })]
        );
        offer(&mut c, 30_006, "a");
        drain(&mut c);
        c.handle(30_007, Input::AnnouncementEnded);
        assert!(
            drain(&mut c).is_empty(),
            "no hold music once ringing an agent"
        );
    }

    #[test]
    fn no_session_timer_without_the_callers_request() {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        c.handle(0, Input::Routed(Ok("q1".into())));
        c.handle(
            2,
            Input::Offered {
                agent: "a".into(),
                contact: "a".into(),
            },
        );
        c.handle(1_000, Input::AgentAnswered { sdp: String::new() });
        assert_eq!(c.next_timeout(), None);
    }

    fn drain(c: &mut Call) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn queued() -> Call {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        c.handle(0, Input::Routed(Ok("q1".into())));
        c.handle(1, Input::Enqueued);
        drain(&mut c);
        c
    }

    fn offer(c: &mut Call, now: Millis, agent: &str) {
        c.handle(
            now,
            Input::Offered {
                agent: agent.into(),
                contact: format!("sip:{agent}@10.0.0.2"),
            },
        );
    }

    #[test]
    fn happy_path_caller_hangs_up() {
        let mut c = Call::new(DEFAULT_RING_TIMEOUT);
        assert_eq!(
            drain(&mut c),
            vec![Output::Sip(Sip::CallerResponse {
                status: 100,
                reason: "Trying"
            })]
        );
        c.handle(0, Input::Routed(Ok("q1".into())));
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerResponse {
                    status: 183,
                    reason: "Session Progress"
                }),
                Output::Media(Media::PlayHold),
                Output::Engine(Engine::Enqueue { queue: "q1".into() }),
            ]
        );
        offer(&mut c, 1_000, "a1");
        assert_eq!(
            drain(&mut c),
            vec![Output::Sip(Sip::AgentInvite {
                contact: "sip:a1@10.0.0.2".into()
            })]
        );
        assert_eq!(c.next_timeout(), Some(16_000));
        c.handle(2_000, Input::AgentRinging);
        c.handle(3_000, Input::AgentAnswered { sdp: "v=0".into() });
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Engine(Engine::Answer { agent: "a1".into() }),
                Output::Sip(Sip::CallerAnswer),
                Output::Media(Media::Bridge),
            ]
        );
        assert_eq!(c.next_timeout(), None);
        c.handle(60_000, Input::CallerBye);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::CallerHangup),
            ]
        );
        // A repeated BYE changes nothing.
        c.handle(60_001, Input::CallerBye);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn agent_hangs_up() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        c.handle(1, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        c.handle(2, Input::AgentBye);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::AgentHangup),
            ]
        );
    }

    #[test]
    fn agent_connection_lost_ends_a_bridged_call_and_requeues_a_ringing_one() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        drain(&mut c);
        c.handle(1, Input::AgentLost);
        assert_eq!(
            drain(&mut c),
            vec![Output::Engine(Engine::Reject { agent: "a1".into() })],
            "no CANCEL on a closed connection; the engine offers the call again"
        );
        assert_eq!(c.state(), &State::Queued);
        offer(&mut c, 2, "a2");
        c.handle(3, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        c.handle(4, Input::AgentLost);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::AgentConnectionLost),
            ]
        );
    }

    #[test]
    fn agent_media_lost_hangs_up_both_legs() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        c.handle(1, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        c.handle(2, Input::AgentMediaLost);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentBye),
                Output::Sip(Sip::CallerBye),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::AgentMediaTimeout),
            ]
        );
    }

    #[test]
    fn unrouted_suspended_and_overloaded_calls_are_refused() {
        for (cause, status) in [
            (EndCause::NoRoute, 404),
            (EndCause::TenantSuspended, 403),
            (EndCause::Overloaded, 503),
        ] {
            let mut c = Call::new(DEFAULT_RING_TIMEOUT);
            drain(&mut c);
            c.handle(0, Input::Routed(Err(cause)));
            let out = drain(&mut c);
            assert!(
                matches!(out[0], Output::Sip(Sip::CallerResponse { status: s, .. }) if s == status),
                "{out:?}"
            );
            assert_eq!(out.last(), Some(&Output::Ended(cause)));
            assert!(
                !out.iter().any(|o| matches!(o, Output::Engine(_))),
                "nothing enqueued"
            );
        }
    }

    #[test]
    fn caller_abandons_while_queued_or_ringing() {
        let mut c = queued();
        c.handle(5, Input::CallerCancel);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::CallerResponse {
                    status: 487,
                    reason: "Request Terminated"
                }),
                Output::Engine(Engine::Hangup),
                Output::Media(Media::Release),
                Output::Ended(EndCause::CallerAbandoned),
            ]
        );
        let mut c = queued();
        offer(&mut c, 0, "a1");
        drain(&mut c);
        c.handle(5, Input::CallerCancel);
        let out = drain(&mut c);
        assert_eq!(
            out[0],
            Output::Sip(Sip::AgentCancel),
            "stop the agent's phone"
        );
        assert_eq!(out.last(), Some(&Output::Ended(EndCause::CallerAbandoned)));
        // The agent's late 200 after the cancel is ignored.
        c.handle(6, Input::AgentAnswered { sdp: String::new() });
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn agent_rejects_then_a_second_agent_answers() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        drain(&mut c);
        c.handle(1, Input::AgentFailed { status: 486 });
        assert_eq!(
            drain(&mut c),
            vec![Output::Engine(Engine::Reject { agent: "a1".into() })]
        );
        assert_eq!(c.state(), &State::Queued);
        offer(&mut c, 2, "a2");
        c.handle(3, Input::AgentAnswered { sdp: String::new() });
        let out = drain(&mut c);
        assert!(out.contains(&Output::Engine(Engine::Answer { agent: "a2".into() })));
        assert_eq!(c.failed_attempts(), 1);
    }

    #[test]
    fn ring_no_answer_times_out_and_returns_the_call() {
        let mut c = queued();
        offer(&mut c, 1_000, "a1");
        drain(&mut c);
        c.handle_timeout(15_999);
        assert!(drain(&mut c).is_empty(), "not yet");
        c.handle_timeout(16_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentCancel),
                Output::Engine(Engine::Reject { agent: "a1".into() }),
            ]
        );
        assert_eq!(c.state(), &State::Queued);
        assert_eq!(c.next_timeout(), None);
    }

    #[test]
    fn engine_released_offer_stops_ringing_without_rejecting_twice() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        drain(&mut c);
        // A release for another agent is stale.
        c.handle(1, Input::OfferReleased { agent: "a9".into() });
        assert!(drain(&mut c).is_empty());
        c.handle(2, Input::OfferReleased { agent: "a1".into() });
        assert_eq!(drain(&mut c), vec![Output::Sip(Sip::AgentCancel)]);
        assert_eq!(c.state(), &State::Queued);
    }

    #[test]
    fn hold_and_resume_pass_through() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        c.handle(1, Input::AgentAnswered { sdp: String::new() });
        drain(&mut c);
        c.handle(2, Input::CallerReinvite { hold: true });
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Sip(Sip::AgentReinvite { hold: true }),
                Output::Sip(Sip::CallerReinviteOk { hold: true }),
            ]
        );
        assert_eq!(
            c.state(),
            &State::Bridged {
                agent: "a1".into(),
                held: true
            }
        );
        c.handle(3, Input::CallerReinvite { hold: false });
        drain(&mut c);
        assert_eq!(
            c.state(),
            &State::Bridged {
                agent: "a1".into(),
                held: false
            }
        );
    }

    #[test]
    fn leaving_the_queue_ends_the_call() {
        let mut c = queued();
        offer(&mut c, 0, "a1");
        drain(&mut c);
        c.handle(1, Input::LeftQueue);
        let out = drain(&mut c);
        assert_eq!(out[0], Output::Sip(Sip::AgentCancel));
        assert!(out.contains(&Output::Sip(Sip::CallerResponse {
            status: 480,
            reason: "Temporarily Unavailable"
        })));
        assert_eq!(out.last(), Some(&Output::Ended(EndCause::LeftQueue)));
    }

    #[test]
    fn inputs_out_of_order_never_leave_a_call_half_done() {
        // Every input in every reachable state: the machine either ignores it or moves on;
        // once Ended it emits nothing more.
        let inputs = || {
            vec![
                Input::Enqueued,
                Input::Offered {
                    agent: "a1".into(),
                    contact: "sip:a1@x".into(),
                },
                Input::OfferReleased { agent: "a1".into() },
                Input::LeftQueue,
                Input::AgentRinging,
                Input::AgentAnswered { sdp: String::new() },
                Input::AgentFailed { status: 486 },
                Input::CallerCancel,
                Input::CallerBye,
                Input::AgentBye,
                Input::CallerReinvite { hold: true },
            ]
        };
        for first in inputs() {
            for second in inputs() {
                let mut c = queued();
                c.handle(1, first.clone());
                c.handle(2, second.clone());
                c.handle_timeout(100_000);
                let out = drain(&mut c);
                let ends = out.iter().filter(|o| matches!(o, Output::Ended(_))).count();
                assert!(ends <= 1, "{first:?} then {second:?}: {out:?}");
                if matches!(c.state(), State::Ended(_)) {
                    for late in inputs() {
                        c.handle(3, late);
                    }
                    assert!(drain(&mut c).is_empty());
                    assert_eq!(ends, 1);
                }
            }
        }
    }
}
