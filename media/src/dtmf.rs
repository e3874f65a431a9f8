//! RFC 4733 telephone events (DTMF digits carried in RTP), and the digit <-> event mapping that
//! SIP INFO `application/dtmf-relay` also uses.

use crate::MediaError;

/// One telephone-event payload (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0-9, 10 = `*`, 11 = `#`, 12-15 = A-D.
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0 to 63).
    pub volume: u8,
    /// In timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Result<Self, MediaError> {
        let b: &[u8; 4] = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(MediaError::TooShort(payload.len()))?;
        Ok(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The DTMF key this event stands for, if it is one.
    pub fn digit(self) -> Option<char> {
        event_to_digit(self.event)
    }
}

pub fn digit_to_event(c: char) -> Option<u8> {
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        l @ 'A'..='D' => Some(l as u8 - b'A' + 12),
        _ => None,
    }
}

pub fn event_to_digit(e: u8) -> Option<char> {
    match e {
        0..=9 => Some(char::from(b'0' + e)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + e - 12)),
        _ => None,
    }
}

/// Parses a SIP INFO `application/dtmf-relay` body (`Signal=5\r\nDuration=160\r\n`) into a
/// digit and a duration in milliseconds (default 100 ms). Bodies over 256 bytes are refused.
pub fn parse_dtmf_relay(body: &str) -> Option<(char, u32)> {
    if body.len() > 256 {
        return None;
    }
    let mut signal = None;
    let mut duration = 100;
    for line in body.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => {
                signal = v
                    .trim()
                    .chars()
                    .next()
                    .filter(|c| digit_to_event(*c).is_some())
            }
            "duration" => {
                duration = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|d| (10..=10_000).contains(d))?
            }
            _ => {}
        }
    }
    signal.map(|s| (s.to_ascii_uppercase(), duration))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_digits() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()).unwrap(), e);
        assert_eq!(e.digit(), Some('#'));
        for c in "0123456789*#ABCD".chars() {
            assert_eq!(event_to_digit(digit_to_event(c).unwrap()), Some(c));
        }
        assert_eq!(digit_to_event('x'), None);
        assert!(TelephoneEvent::parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn sip_info_dtmf_relay() {
        assert_eq!(
            parse_dtmf_relay("Signal=5\r\nDuration=160\r\n"),
            Some(('5', 160))
        );
        assert_eq!(
            parse_dtmf_relay("Signal= #\nDuration= 250"),
            Some(('#', 250))
        );
        assert_eq!(parse_dtmf_relay("Signal=a"), Some(('A', 100)));
        assert_eq!(parse_dtmf_relay("Signal=z"), None);
        assert_eq!(parse_dtmf_relay("Signal=1\nDuration=999999"), None);
        assert_eq!(parse_dtmf_relay(&"x".repeat(300)), None);
    }
}
