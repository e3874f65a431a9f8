//! One outbound call (an agent's phone dialling an outside number through the carrier trunk),
//! as a sans-IO state machine.
//!
//! Two legs: the agent's phone and the remote party (the client dialog we place on the
//! trunk). The phone either dialled us (we answer its INVITE when the remote side answers) or,
//! for click-to-call, we rang it first and dial the number once it answered (its leg is then
//! already up: remote progress and answer are not signalled to it, a refusal hangs it up). Like [`crate::call::Call`], it owns no IO: the call's task
//! feeds [`OutboundCall::handle`] and carries out what [`OutboundCall::poll_output`] returns.

use std::collections::VecDeque;

use crate::call::Millis;

/// How long the remote side may ring before we give up (480 to the agent).
pub const NO_ANSWER_MS: Millis = 60_000;

/// Why an outbound call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundEnd {
    /// The remote side refused (status from the trunk), or did not answer in time (480).
    Refused(u16),
    /// The agent hung up before the remote side answered.
    Cancelled,
    /// The agent hung up after the answer.
    AgentHangup,
    /// Click-to-call: the agent's phone did not answer (its final status, 408 when it rang
    /// out).
    PhoneUnanswered(u16),
    /// The remote side hung up after the answer.
    RemoteHangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// Click-to-call: our INVITE rings the agent's phone.
    RingingPhone,
    /// INVITE sent to the trunk.
    Dialing,
    /// The remote side rings (early media bridged).
    Early,
    Answered,
    Ended(OutboundEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundInput {
    /// 180/183 from the trunk; `early_media` when it carried SDP.
    RemoteProgress {
        early_media: bool,
    },
    /// 200 from the trunk (its SDP applied by the task).
    RemoteAnswered,
    /// A final failure from the trunk (or no response at all: 408).
    RemoteFailed {
        status: u16,
    },
    /// The agent's phone sent CANCEL (or, click-to-call, hung up before the answer).
    AgentCancel,
    /// Click-to-call: the agent's phone answered our INVITE at `now`.
    PhoneAnswered {
        now: Millis,
    },
    /// Click-to-call: the agent's phone refused or never answered our INVITE.
    PhoneFailed {
        status: u16,
    },
    AgentBye,
    RemoteBye,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundOutput {
    /// 183 with our SDP to the agent's phone.
    AgentProgress,
    /// 200 with our SDP to the agent's phone.
    AgentAnswer,
    /// A final failure to the agent's phone.
    AgentReject {
        status: u16,
    },
    AgentBye,
    /// Click-to-call: CANCEL our INVITE to the agent's phone.
    PhoneCancel,
    /// Click-to-call: the phone answered; play it ringback and place the INVITE on the trunk.
    DialRemote,
    RemoteCancel,
    RemoteBye,
    /// Relay media between the legs (from the first progress on: early media).
    Bridge,
    /// The call is over: free media, write the CDR.
    Ended(OutboundEnd),
}

/// The status the agent's phone sees for a trunk failure: busy and not-found pass through,
/// other client errors become 480, server errors 503 (the carrier's problem is not the phone's).
pub fn status_for_agent(trunk_status: u16) -> u16 {
    match trunk_status {
        404 | 484 | 486 | 487 | 600 | 603 | 604 => trunk_status,
        500..=599 => 503,
        _ => 480,
    }
}

#[derive(Debug)]
pub struct OutboundCall {
    state: OutboundState,
    /// When the current ringing (phone or remote) started.
    started: Millis,
    /// Click-to-call: how long the phone may ring, and whether the phone leg was ours.
    phone_ring_ms: Millis,
    click_to_call: bool,
    bridged: bool,
    out: VecDeque<OutboundOutput>,
}

impl OutboundCall {
    pub fn new(now: Millis) -> Self {
        Self {
            state: OutboundState::Dialing,
            started: now,
            phone_ring_ms: 0,
            click_to_call: false,
            bridged: false,
            out: VecDeque::new(),
        }
    }

    /// Click-to-call: the task has just sent the INVITE to the agent's phone, which may ring
    /// for `phone_ring_ms`.
    pub fn click_to_call(now: Millis, phone_ring_ms: Millis) -> Self {
        Self {
            state: OutboundState::RingingPhone,
            phone_ring_ms,
            click_to_call: true,
            ..Self::new(now)
        }
    }

    pub fn state(&self) -> OutboundState {
        self.state
    }

    pub fn poll_output(&mut self) -> Option<OutboundOutput> {
        self.out.pop_front()
    }

    /// When the remote side has rung too long.
    pub fn next_timeout(&self) -> Option<Millis> {
        match self.state {
            OutboundState::RingingPhone => Some(self.started + self.phone_ring_ms),
            OutboundState::Dialing | OutboundState::Early => Some(self.started + NO_ANSWER_MS),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if self.next_timeout().is_none_or(|t| now < t) {
            return;
        }
        if self.state == OutboundState::RingingPhone {
            self.out.push_back(OutboundOutput::PhoneCancel);
            self.end(OutboundEnd::PhoneUnanswered(408));
        } else {
            self.out.push_back(OutboundOutput::RemoteCancel);
            self.fail(480);
        }
    }

    fn bridge(&mut self) {
        if !self.bridged {
            self.bridged = true;
            self.out.push_back(OutboundOutput::Bridge);
        }
    }

    fn end(&mut self, why: OutboundEnd) {
        self.state = OutboundState::Ended(why);
        self.out.push_back(OutboundOutput::Ended(why));
    }

    fn fail(&mut self, status: u16) {
        // A click-to-call phone leg is up already: it is hung up instead of refused.
        self.out.push_back(if self.click_to_call {
            OutboundOutput::AgentBye
        } else {
            OutboundOutput::AgentReject {
                status: status_for_agent(status),
            }
        });
        self.end(OutboundEnd::Refused(status));
    }

    /// Tells the phone about the remote side, unless it is a click-to-call phone (up already).
    fn tell_phone(&mut self, out: OutboundOutput) {
        if !self.click_to_call {
            self.out.push_back(out);
        }
    }

    /// Feeds one input; inputs that do not fit the state (retransmissions, races) are ignored.
    pub fn handle(&mut self, input: OutboundInput) {
        use OutboundInput as I;
        use OutboundState as S;
        match (self.state, input) {
            (S::RingingPhone, I::PhoneAnswered { now }) => {
                self.started = now;
                self.state = S::Dialing;
                self.out.push_back(OutboundOutput::DialRemote);
            }
            (S::RingingPhone, I::PhoneFailed { status }) => {
                self.end(OutboundEnd::PhoneUnanswered(status));
            }
            (S::Dialing, I::RemoteProgress { early_media }) => {
                // A click-to-call phone hears our ringback until the far end sends media.
                if early_media || !self.click_to_call {
                    self.bridge();
                }
                self.tell_phone(OutboundOutput::AgentProgress);
                self.state = S::Early;
            }
            (S::Dialing | S::Early, I::RemoteAnswered) => {
                self.bridge();
                self.tell_phone(OutboundOutput::AgentAnswer);
                self.state = S::Answered;
            }
            (S::Dialing | S::Early, I::RemoteFailed { status }) => self.fail(status),
            (S::Dialing | S::Early, I::AgentCancel | I::AgentBye) => {
                self.out.push_back(OutboundOutput::RemoteCancel);
                self.end(OutboundEnd::Cancelled);
            }
            (S::Answered, I::AgentBye) => {
                self.out.push_back(OutboundOutput::RemoteBye);
                self.end(OutboundEnd::AgentHangup);
            }
            (S::Answered, I::RemoteBye) => {
                self.out.push_back(OutboundOutput::AgentBye);
                self.end(OutboundEnd::RemoteHangup);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutboundInput as I;
    use OutboundOutput as O;

    fn drain(c: &mut OutboundCall) -> Vec<O> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    #[test]
    fn ring_answer_and_hang_up() {
        let mut c = OutboundCall::new(0);
        c.handle(I::RemoteProgress { early_media: true });
        assert_eq!(drain(&mut c), vec![O::Bridge, O::AgentProgress]);
        c.handle(I::RemoteProgress { early_media: true });
        assert!(drain(&mut c).is_empty(), "a second 180 changes nothing");
        c.handle(I::RemoteAnswered);
        assert_eq!(drain(&mut c), vec![O::AgentAnswer]);
        c.handle(I::RemoteBye);
        assert_eq!(
            drain(&mut c),
            vec![O::AgentBye, O::Ended(OutboundEnd::RemoteHangup)]
        );
        c.handle(I::AgentBye);
        assert!(drain(&mut c).is_empty(), "ended exactly once");
    }

    #[test]
    fn direct_answer_bridges_first() {
        let mut c = OutboundCall::new(0);
        c.handle(I::RemoteAnswered);
        assert_eq!(drain(&mut c), vec![O::Bridge, O::AgentAnswer]);
        c.handle(I::AgentBye);
        assert_eq!(
            drain(&mut c),
            vec![O::RemoteBye, O::Ended(OutboundEnd::AgentHangup)]
        );
    }

    #[test]
    fn failures_map_to_what_the_phone_should_see() {
        for (trunk, phone) in [(486, 486), (404, 404), (403, 480), (502, 503), (408, 480)] {
            let mut c = OutboundCall::new(0);
            c.handle(I::RemoteFailed { status: trunk });
            assert_eq!(
                drain(&mut c),
                vec![
                    O::AgentReject { status: phone },
                    O::Ended(OutboundEnd::Refused(trunk))
                ]
            );
        }
    }

    #[test]
    fn agent_cancel_and_no_answer() {
        let mut c = OutboundCall::new(0);
        c.handle(I::RemoteProgress { early_media: true });
        drain(&mut c);
        c.handle(I::AgentCancel);
        assert_eq!(
            drain(&mut c),
            vec![O::RemoteCancel, O::Ended(OutboundEnd::Cancelled)]
        );

        let mut c = OutboundCall::new(1_000);
        assert_eq!(c.next_timeout(), Some(1_000 + NO_ANSWER_MS));
        c.handle_timeout(1_000 + NO_ANSWER_MS - 1);
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(1_000 + NO_ANSWER_MS);
        assert_eq!(
            drain(&mut c),
            vec![
                O::RemoteCancel,
                O::AgentReject { status: 480 },
                O::Ended(OutboundEnd::Refused(480))
            ]
        );
        assert_eq!(c.next_timeout(), None);
    }

    #[test]
    fn click_to_call_rings_the_phone_then_dials() {
        let mut c = OutboundCall::click_to_call(0, 15_000);
        assert_eq!(c.next_timeout(), Some(15_000));
        c.handle(I::RemoteAnswered);
        assert!(
            drain(&mut c).is_empty(),
            "nothing is dialled before the phone answers"
        );
        c.handle(I::PhoneAnswered { now: 4_000 });
        assert_eq!(drain(&mut c), vec![O::DialRemote]);
        assert_eq!(c.next_timeout(), Some(4_000 + NO_ANSWER_MS));
        c.handle(I::RemoteProgress { early_media: true });
        assert_eq!(
            drain(&mut c),
            vec![O::Bridge],
            "ringback reaches the phone as media only"
        );
        c.handle(I::RemoteAnswered);
        assert!(drain(&mut c).is_empty());
        c.handle(I::AgentBye);
        assert_eq!(
            drain(&mut c),
            vec![O::RemoteBye, O::Ended(OutboundEnd::AgentHangup)]
        );
    }

    #[test]
    fn click_to_call_failures() {
        // The phone rings out: our INVITE is cancelled.
        let mut c = OutboundCall::click_to_call(0, 15_000);
        c.handle_timeout(15_000);
        assert_eq!(
            drain(&mut c),
            vec![O::PhoneCancel, O::Ended(OutboundEnd::PhoneUnanswered(408))]
        );
        // The phone declines.
        let mut c = OutboundCall::click_to_call(0, 15_000);
        c.handle(I::PhoneFailed { status: 603 });
        assert_eq!(
            drain(&mut c),
            vec![O::Ended(OutboundEnd::PhoneUnanswered(603))]
        );
        // The number is busy: the answered phone is hung up, not refused.
        let mut c = OutboundCall::click_to_call(0, 15_000);
        c.handle(I::PhoneAnswered { now: 1 });
        drain(&mut c);
        c.handle(I::RemoteFailed { status: 486 });
        assert_eq!(
            drain(&mut c),
            vec![O::AgentBye, O::Ended(OutboundEnd::Refused(486))]
        );
        // The agent hangs up while the number rings.
        let mut c = OutboundCall::click_to_call(0, 15_000);
        c.handle(I::PhoneAnswered { now: 1 });
        c.handle(I::RemoteProgress { early_media: true });
        drain(&mut c);
        c.handle(I::AgentBye);
        assert_eq!(
            drain(&mut c),
            vec![O::RemoteCancel, O::Ended(OutboundEnd::Cancelled)]
        );
    }
}
