//! The legs of one call as its CDR lists them: who each SIP leg reached, when it started,
//! answered and ended, with which final status and why. The call task reports what happens to
//! its legs; this module only keeps the book (no IO), so a call that rang three agents before
//! the fourth answered leaves five leg rows: the caller and four agent attempts.

use chrono::{DateTime, Utc};
use switchboard_db::calls::{LegRecord, MAX_LEGS};

/// A leg's index in its call's book; `None` once the book is full (the leg is not listed).
pub type LegNo = Option<usize>;

/// What a leg is to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The inbound caller (trunk side).
    Caller,
    /// An agent's phone the call was offered to.
    Agent,
    /// An outside party (a transfer to a number, an outbound call's destination).
    External,
    /// An agent's phone placing an outbound call.
    Phone,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Agent => "agent",
            Role::External => "external",
            Role::Phone => "phone",
        }
    }
}

/// How a leg's media travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Plain RTP (carriers, desk phones).
    Rtp,
    /// WebRTC (a browser agent: ICE, DTLS-SRTP).
    Webrtc,
}

impl MediaKind {
    fn as_str(self) -> &'static str {
        match self {
            MediaKind::Rtp => "rtp",
            MediaKind::Webrtc => "webrtc",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    role: Role,
    party: String,
    agent_id: Option<uuid::Uuid>,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended: Option<(DateTime<Utc>, Option<u16>, String)>,
    media_stats: Option<serde_json::Value>,
    /// How its media travelled and the codec on the party's side (`PCMU`, `PCMA`, `opus`).
    codec: Option<(MediaKind, &'static str)>,
}

/// The book of a call's legs.
#[derive(Debug, Clone, Default)]
pub struct Legs {
    entries: Vec<Entry>,
}

/// Why an unanswered leg ended, from its final SIP status.
pub fn unanswered_reason(status: u16) -> &'static str {
    match status {
        486 | 600 | 603 => "rejected",
        408 => "no_answer",
        487 => "cancelled",
        404 | 410 | 480 | 484 => "unreachable",
        488 | 606 => "incompatible",
        _ => "failed",
    }
}

impl Legs {
    /// A leg starts (an INVITE goes out or comes in).
    pub fn start(&mut self, role: Role, party: &str, now: DateTime<Utc>) -> LegNo {
        if self.entries.len() >= MAX_LEGS {
            return None;
        }
        let agent_id = match role {
            Role::Agent | Role::Phone => party.parse().ok(),
            Role::Caller | Role::External => None,
        };
        self.entries.push(Entry {
            role,
            party: party.chars().take(256).collect(),
            agent_id,
            started_at: now,
            answered_at: None,
            ended: None,
            media_stats: None,
            codec: None,
        });
        Some(self.entries.len() - 1)
    }

    fn open(&mut self, leg: LegNo) -> Option<&mut Entry> {
        self.entries.get_mut(leg?).filter(|e| e.ended.is_none())
    }

    /// The leg answered (first answer counts).
    pub fn answered(&mut self, leg: LegNo, now: DateTime<Utc>) {
        if let Some(e) = self.open(leg)
            && e.answered_at.is_none()
        {
            e.answered_at = Some(now);
        }
    }

    /// The leg ended; an unanswered leg with the final status it got. Later reports of the
    /// same leg's end are ignored (the first is the cause).
    pub fn ended(&mut self, leg: LegNo, now: DateTime<Utc>, status: Option<u16>, reason: &str) {
        if let Some(e) = self.open(leg) {
            let status = status.filter(|_| e.answered_at.is_none());
            let reason = match (e.answered_at, status) {
                (None, Some(s)) if reason.is_empty() => unanswered_reason(s),
                _ => reason,
            };
            e.ended = Some((now, status, reason.chars().take(32).collect()));
        }
    }

    /// A leg that started and ended at once (an agent with no reachable phone).
    pub fn failed(&mut self, role: Role, party: &str, now: DateTime<Utc>, status: u16) {
        let leg = self.start(role, party, now);
        self.ended(leg, now, Some(status), "");
    }

    /// The media quality measured on the leg.
    pub fn set_media(&mut self, leg: LegNo, stats: serde_json::Value) {
        if let Some(e) = leg.and_then(|i| self.entries.get_mut(i)) {
            e.media_stats = Some(stats);
        }
    }

    /// The leg's media negotiated: how it travels and the codec on the party's side.
    pub fn set_codec(&mut self, leg: LegNo, media: MediaKind, codec: &'static str) {
        if let Some(e) = leg.and_then(|i| self.entries.get_mut(i)) {
            e.codec = Some((media, codec));
        }
    }

    /// The last leg of `role` that answered (where the relay's far-side stats belong).
    pub fn last_answered(&self, roles: &[Role]) -> LegNo {
        self.entries
            .iter()
            .rposition(|e| roles.contains(&e.role) && e.answered_at.is_some())
    }

    /// The finished list: legs still open end now with `reason`.
    pub fn finish(self, now: DateTime<Utc>, reason: &str) -> Vec<LegRecord> {
        self.entries
            .into_iter()
            .map(|e| {
                let (ended_at, sip_status, end_reason) =
                    e.ended
                        .unwrap_or((now, None, reason.chars().take(32).collect()));
                LegRecord {
                    role: e.role.as_str().into(),
                    party: e.party,
                    agent_id: e.agent_id,
                    started_at: e.started_at,
                    answered_at: e.answered_at,
                    ended_at,
                    sip_status,
                    end_reason,
                    media_stats: e.media_stats,
                    media: e.codec.map(|(m, _)| m.as_str().to_owned()),
                    codec: e.codec.map(|(_, c)| c.to_owned()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn a_call_that_rang_two_agents_keeps_both_attempts() {
        let agent1 = uuid::Uuid::now_v7().to_string();
        let agent2 = uuid::Uuid::now_v7().to_string();
        let mut legs = Legs::default();
        let caller = legs.start(Role::Caller, "+15550001", at(0));
        let a1 = legs.start(Role::Agent, &agent1, at(5));
        legs.ended(a1, at(7), Some(486), "");
        // A late report of the same end changes nothing.
        legs.ended(a1, at(9), Some(408), "");
        let a2 = legs.start(Role::Agent, &agent2, at(8));
        legs.answered(a2, at(10));
        legs.answered(caller, at(10));
        legs.ended(a2, at(70), Some(200), "hangup");
        legs.set_media(
            legs.last_answered(&[Role::Agent]),
            serde_json::json!({"mos": 4.3}),
        );
        legs.set_codec(caller, MediaKind::Rtp, "PCMA");
        legs.set_codec(a2, MediaKind::Webrtc, "opus");
        let rows = legs.finish(at(71), "caller_hangup");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].role, "caller");
        assert_eq!(rows[0].end_reason, "caller_hangup");
        assert_eq!(rows[0].answered_at, Some(at(10)));
        assert_eq!(rows[1].sip_status, Some(486));
        assert_eq!(rows[1].end_reason, "rejected");
        assert_eq!(rows[1].ended_at, at(7));
        assert_eq!(rows[1].agent_id.map(|a| a.to_string()), Some(agent1));
        // An answered leg keeps no failure status.
        assert_eq!(rows[2].sip_status, None);
        assert_eq!(rows[2].end_reason, "hangup");
        assert_eq!(rows[2].media_stats, Some(serde_json::json!({"mos": 4.3})));
        let media = |r: &LegRecord| (r.media.clone(), r.codec.clone());
        assert_eq!(media(&rows[0]), (Some("rtp".into()), Some("PCMA".into())));
        assert_eq!(media(&rows[1]), (None, None), "never answered: no media");
        assert_eq!(
            media(&rows[2]),
            (Some("webrtc".into()), Some("opus".into()))
        );
    }

    #[test]
    fn the_book_is_bounded_and_unknown_legs_are_ignored() {
        let mut legs = Legs::default();
        for _ in 0..MAX_LEGS {
            assert!(legs.start(Role::Agent, "x", at(0)).is_some());
        }
        assert_eq!(legs.start(Role::Agent, "x", at(1)), None);
        legs.ended(None, at(2), Some(486), "");
        legs.answered(Some(MAX_LEGS + 5), at(2));
        legs.failed(Role::Agent, "y", at(3), 480);
        assert_eq!(legs.finish(at(4), "call_ended").len(), MAX_LEGS);
    }

    #[test]
    fn statuses_name_their_reasons() {
        assert_eq!(unanswered_reason(603), "rejected");
        assert_eq!(unanswered_reason(408), "no_answer");
        assert_eq!(unanswered_reason(487), "cancelled");
        assert_eq!(unanswered_reason(480), "unreachable");
        assert_eq!(unanswered_reason(500), "failed");
    }
}
