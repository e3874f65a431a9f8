//! Which calls are recorded, and the agent's keypad codes that pause and resume a recording.
//!
//! Why here: the api validates what a tenant admin sets and the gateway applies it when a
//! call is bridged; both need the same parser and the same decision, and the decision is a
//! pure function of the rule, the time zone and the instant (tested without clocks).
//!
//! - [`RecordingRule`]: `always`, `never`, or `schedule` with weekly time windows. A tenant
//!   has one; a queue may override it (`None` there means "as the tenant").
//! - [`RecordingPolicy`]: the rules that apply to one call plus the tenant's time zone;
//!   [`RecordingPolicy::records_at`] is the decision.
//! - [`PauseCodes`]: watches the agent's DTMF digits for the tenant's pause and resume codes
//!   (an agent pauses before a customer reads out a card number).

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// Most windows one schedule may hold.
pub const MAX_WINDOWS: usize = 32;
/// Longest pause or resume code.
pub const MAX_CODE_LEN: usize = 8;
/// Digits further apart than this start a new code.
pub const CODE_DIGIT_GAP_MS: u64 = 3_000;

/// Why a rule or code was refused (the api turns it into a 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError(msg.into()))
}

/// When calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    Always,
    Never,
    /// Only inside one of the rule's windows (the tenant's local time).
    Schedule,
}

/// A day of the week, as `mon` ... `sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn of(weekday: chrono::Weekday) -> Day {
        use chrono::Weekday::*;
        match weekday {
            Mon => Day::Mon,
            Tue => Day::Tue,
            Wed => Day::Wed,
            Thu => Day::Thu,
            Fri => Day::Fri,
            Sat => Day::Sat,
            Sun => Day::Sun,
        }
    }
}

/// A clock time `HH:MM` (00:00 to 24:00), kept as minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(u16);

impl ClockTime {
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let bad = || RuleError(format!("time {s:?}: expected HH:MM, 00:00 to 24:00"));
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(ClockTime(h * 60 + m))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClockTime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A weekly window: from `start` to `end` (exclusive) on each of `days`. An `end` before
/// `start` runs past midnight into the next day (22:00 to 06:00 on `fri` covers Friday night
/// until Saturday 06:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub days: Vec<Day>,
    pub start: ClockTime,
    pub end: ClockTime,
}

impl TimeWindow {
    /// Whether the local time `day` + `minute` (after midnight) falls inside.
    fn covers(&self, day: Day, previous: Day, minute: u16) -> bool {
        let (start, end) = (self.start.0, self.end.0);
        if start < end {
            self.days.contains(&day) && (start..end).contains(&minute)
        } else {
            (self.days.contains(&day) && minute >= start)
                || (self.days.contains(&previous) && minute < end)
        }
    }
}

/// A tenant's or a queue's recording rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRule {
    pub mode: RecordMode,
    /// For `schedule`: 1 to [`MAX_WINDOWS`]; empty otherwise.
    #[serde(default)]
    pub windows: Vec<TimeWindow>,
}

impl Default for RecordingRule {
    /// Record every call (what a contact center without a rule expects).
    fn default() -> Self {
        Self {
            mode: RecordMode::Always,
            windows: Vec::new(),
        }
    }
}

impl RecordingRule {
    /// Checks the rule (and sorts and deduplicates each window's days).
    pub fn validated(mut self) -> Result<Self, RuleError> {
        match (self.mode, self.windows.len()) {
            (RecordMode::Schedule, 0) => return invalid("a schedule needs at least one window"),
            (RecordMode::Schedule, n) if n > MAX_WINDOWS => {
                return invalid(format!("at most {MAX_WINDOWS} windows"));
            }
            (RecordMode::Always | RecordMode::Never, n) if n > 0 => {
                return invalid("windows are only for mode `schedule`");
            }
            _ => {}
        }
        for w in &mut self.windows {
            w.days.sort();
            w.days.dedup();
            if w.days.is_empty() {
                return invalid("each window needs at least one day");
            }
            if w.start == w.end {
                return invalid("a window's start and end differ");
            }
        }
        Ok(self)
    }

    /// Whether a call at this local time is recorded.
    pub fn records_at(&self, local: NaiveDateTime) -> bool {
        match self.mode {
            RecordMode::Always => true,
            RecordMode::Never => false,
            RecordMode::Schedule => {
                let day = Day::of(local.weekday());
                let previous = Day::of(local.weekday().pred());
                let minute = (local.hour() * 60 + local.minute()) as u16;
                self.windows.iter().any(|w| w.covers(day, previous, minute))
            }
        }
    }
}

/// Parses an IANA time zone name (`Europe/Berlin`).
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, RuleError> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| RuleError(format!("time_zone {name:?}: not an IANA time zone")))
}

/// Checks a pause or resume code: 1 to [`MAX_CODE_LEN`] of `0-9 * #`.
pub fn validate_code(code: &str) -> Result<(), RuleError> {
    if code.is_empty()
        || code.len() > MAX_CODE_LEN
        || !code
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
    {
        return invalid(format!(
            "code {code:?}: 1 to {MAX_CODE_LEN} of the keys 0-9, * and #"
        ));
    }
    Ok(())
}

/// Checks a pair of codes: each valid, and neither ends with the other (typing one would
/// also type the other).
pub fn validate_codes(pause: Option<&str>, resume: Option<&str>) -> Result<(), RuleError> {
    for c in [pause, resume].into_iter().flatten() {
        validate_code(c)?;
    }
    if let (Some(p), Some(r)) = (pause, resume)
        && (p.ends_with(r) || r.ends_with(p))
    {
        return invalid(
            "the pause and resume codes must differ, and neither may end with the other",
        );
    }
    Ok(())
}

/// Everything that decides whether one call is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingPolicy {
    pub tenant: RecordingRule,
    /// The call's queue's own rule, when it has one.
    pub queue: Option<RecordingRule>,
    pub time_zone: chrono_tz::Tz,
    pub pause_code: Option<String>,
    pub resume_code: Option<String>,
}

impl Default for RecordingPolicy {
    fn default() -> Self {
        Self {
            tenant: RecordingRule::default(),
            queue: None,
            time_zone: chrono_tz::UTC,
            pause_code: None,
            resume_code: None,
        }
    }
}

impl RecordingPolicy {
    /// The rule in force: the queue's, else the tenant's.
    pub fn rule(&self) -> &RecordingRule {
        self.queue.as_ref().unwrap_or(&self.tenant)
    }

    /// Whether a call bridged at `at` is recorded.
    pub fn records_at(&self, at: DateTime<Utc>) -> bool {
        self.rule()
            .records_at(at.with_timezone(&self.time_zone).naive_local())
    }

    /// The keypad watcher for this call's agent.
    pub fn pause_codes(&self) -> PauseCodes {
        PauseCodes::new(self.pause_code.clone(), self.resume_code.clone())
    }
}

/// What a typed code asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAction {
    Pause,
    Resume,
}

/// Watches one leg's DTMF digits for the pause and resume codes (sans-IO: digits and times
/// come in as arguments).
#[derive(Debug, Clone)]
pub struct PauseCodes {
    pause: Option<String>,
    resume: Option<String>,
    typed: String,
    last_ms: u64,
}

impl PauseCodes {
    pub fn new(pause: Option<String>, resume: Option<String>) -> Self {
        Self {
            pause,
            resume,
            typed: String::new(),
            last_ms: 0,
        }
    }

    /// Whether there is any code to watch for.
    pub fn is_active(&self) -> bool {
        self.pause.is_some() || self.resume.is_some()
    }

    /// One digit typed at `now_ms`; returns the action when it completes a code.
    pub fn digit(&mut self, digit: char, now_ms: u64) -> Option<CodeAction> {
        if now_ms.saturating_sub(self.last_ms) > CODE_DIGIT_GAP_MS {
            self.typed.clear();
        }
        self.last_ms = now_ms;
        if self.typed.len() >= MAX_CODE_LEN {
            self.typed.remove(0);
        }
        self.typed.push(digit);
        let matched =
            |code: &Option<String>| code.as_deref().is_some_and(|c| self.typed.ends_with(c));
        let action = if matched(&self.pause) {
            Some(CodeAction::Pause)
        } else if matched(&self.resume) {
            Some(CodeAction::Resume)
        } else {
            None
        };
        if action.is_some() {
            self.typed.clear();
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule(json: &str) -> Result<RecordingRule, String> {
        serde_json::from_str::<RecordingRule>(json)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| e.0)
    }

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, 0))
            .unwrap_or_default()
    }

    #[test]
    fn always_and_never_take_no_windows() {
        assert!(rule(r#"{"mode":"always"}"#).is_ok_and(|r| r.records_at(local(2026, 1, 1, 3, 0))));
        assert!(rule(r#"{"mode":"never"}"#).is_ok_and(|r| !r.records_at(local(2026, 1, 1, 3, 0))));
        let with = r#"{"mode":"never","windows":[{"days":["mon"],"start":"09:00","end":"17:00"}]}"#;
        assert!(rule(with).is_err());
        assert!(rule(r#"{"mode":"schedule","windows":[]}"#).is_err());
        assert!(rule(r#"{"mode":"sometimes"}"#).is_err());
        assert!(rule(r#"{"mode":"always","extra":1}"#).is_err());
    }

    #[test]
    fn bad_windows_are_refused() {
        for w in [
            r#"{"days":[],"start":"09:00","end":"17:00"}"#,
            r#"{"days":["mon"],"start":"09:00","end":"09:00"}"#,
            r#"{"days":["mon"],"start":"9:00","end":"17:00"}"#,
            r#"{"days":["mon"],"start":"09:60","end":"17:00"}"#,
            r#"{"days":["mon"],"start":"09:00","end":"24:01"}"#,
            r#"{"days":["funday"],"start":"09:00","end":"17:00"}"#,
        ] {
            let json = format!(r#"{{"mode":"schedule","windows":[{w}]}}"#);
            assert!(rule(&json).is_err(), "{w} accepted");
        }
        let many = vec![r#"{"days":["mon"],"start":"09:00","end":"10:00"}"#; MAX_WINDOWS + 1];
        let json = format!(r#"{{"mode":"schedule","windows":[{}]}}"#, many.join(","));
        assert!(rule(&json).is_err());
    }

    #[test]
    fn a_schedule_records_inside_its_windows_only() {
        // 2026-11-30 is a Monday.
        let r = rule(
            r#"{"mode":"schedule","windows":[{"days":["mon","tue","mon"],"start":"09:00","end":"17:30"}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            r.windows[0].days,
            vec![Day::Mon, Day::Tue],
            "sorted, deduplicated"
        );
        assert!(r.records_at(local(2026, 11, 30, 9, 0)));
        assert!(r.records_at(local(2026, 11, 30, 17, 29)));
        assert!(
            !r.records_at(local(2026, 11, 30, 17, 30)),
            "end is exclusive"
        );
        assert!(!r.records_at(local(2026, 11, 30, 8, 59)));
        assert!(!r.records_at(local(2026, 12, 2, 10, 0)), "Wednesday");
    }

    #[test]
    fn a_window_past_midnight_covers_the_next_morning() {
        let r = rule(
            r#"{"mode":"schedule","windows":[{"days":["fri"],"start":"22:00","end":"06:00"}]}"#,
        )
        .unwrap_or_default();
        // 2026-12-04 is a Friday.
        assert!(r.records_at(local(2026, 12, 4, 23, 0)));
        assert!(r.records_at(local(2026, 12, 5, 5, 59)), "Saturday morning");
        assert!(!r.records_at(local(2026, 12, 5, 6, 0)));
        assert!(
            !r.records_at(local(2026, 12, 4, 5, 0)),
            "Friday morning belongs to Thursday"
        );
        let all_day = rule(
            r#"{"mode":"schedule","windows":[{"days":["sun"],"start":"00:00","end":"24:00"}]}"#,
        )
        .unwrap_or_default();
        assert!(all_day.records_at(local(2026, 12, 6, 23, 59)));
        assert!(!all_day.records_at(local(2026, 12, 7, 0, 0)));
    }

    #[test]
    fn the_queue_rule_overrides_the_tenants_in_the_tenants_time_zone() {
        let office = rule(
            r#"{"mode":"schedule","windows":[{"days":["mon"],"start":"09:00","end":"17:00"}]}"#,
        )
        .unwrap_or_default();
        let mut p = RecordingPolicy {
            tenant: office,
            time_zone: parse_time_zone("America/New_York").unwrap_or(chrono_tz::UTC),
            ..RecordingPolicy::default()
        };
        // Monday 2026-11-30 15:00 UTC is 10:00 in New York (EST): inside; 23:00 UTC is 18:00.
        let at = |h| {
            Utc.with_ymd_and_hms(2026, 11, 30, h, 0, 0)
                .single()
                .unwrap_or_default()
        };
        assert!(p.records_at(at(15)));
        assert!(!p.records_at(at(23)));
        assert!(!p.records_at(at(10)), "05:00 in New York");
        p.queue = Some(RecordingRule {
            mode: RecordMode::Never,
            windows: vec![],
        });
        assert!(!p.records_at(at(15)), "the queue says never");
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn codes_are_validated() {
        assert!(validate_codes(Some("*1"), Some("*2")).is_ok());
        assert!(validate_codes(Some("*1"), None).is_ok());
        assert!(validate_codes(Some("*1"), Some("*1")).is_err());
        assert!(
            validate_codes(Some("1"), Some("*1")).is_err(),
            "a suffix of the other"
        );
        assert!(validate_codes(Some(""), None).is_err());
        assert!(validate_codes(Some("*123456789"), None).is_err());
        assert!(validate_codes(Some("*a"), None).is_err());
    }

    #[test]
    fn typed_codes_pause_and_resume() {
        let mut c = PauseCodes::new(Some("*1".into()), Some("*2".into()));
        assert_eq!(c.digit('5', 0), None);
        assert_eq!(c.digit('*', 100), None);
        assert_eq!(c.digit('1', 300), Some(CodeAction::Pause));
        assert_eq!(
            c.digit('1', 400),
            None,
            "the buffer starts again after a code"
        );
        assert_eq!(c.digit('*', 1_000), None);
        assert_eq!(
            c.digit('2', 5_000),
            None,
            "digits 4 s apart are not one code"
        );
        assert_eq!(c.digit('*', 5_100), None);
        assert_eq!(c.digit('2', 5_200), Some(CodeAction::Resume));
        let none = PauseCodes::new(None, None);
        assert!(!none.is_active());
    }
}
