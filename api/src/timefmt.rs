//! JSON encoding of timestamps, byte for byte what chrono's `Serialize` writes (RFC 3339, `Z`,
//! fraction of 0, 3, 6 or 9 digits as the value needs), without its formatting machinery.
//!
//! Why: a list page carries two timestamps per row, and chrono serialises each through
//! `collect_str` and `fmt::Write` one character at a time; in `scripts/bench api` that was
//! about a sixth of the api's instructions per request (callgrind). Here the text is built in a
//! stack buffer and handed to the serializer as one string. Values chrono would print
//! differently (years outside 0..=9999, leap seconds) go to chrono itself.
//!
//! Use on a field: `#[serde(serialize_with = "crate::timefmt::rfc3339")]` (or
//! `rfc3339_opt` for `Option`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// Longest output: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Writes `t` into `buf` as chrono would; `None` when chrono's own path must be used.
fn format(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    // One conversion to the naive UTC value; the accessors on `DateTime` redo it per field.
    let naive = t.naive_utc();
    let (date, time) = (naive.date(), naive.time());
    let year = date.year();
    let nano = time.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    put(buf, 0, year as u32, 4);
    buf[4] = b'-';
    put(buf, 5, date.month(), 2);
    buf[7] = b'-';
    put(buf, 8, date.day(), 2);
    buf[10] = b'T';
    put(buf, 11, time.hour(), 2);
    buf[13] = b':';
    put(buf, 14, time.minute(), 2);
    buf[16] = b':';
    put(buf, 17, time.second(), 2);
    let (value, width) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (nano / 1_000_000, 3)
    } else if nano.is_multiple_of(1_000) {
        (nano / 1_000, 6)
    } else {
        (nano, 9)
    };
    let mut n = 19;
    if width > 0 {
        buf[19] = b'.';
        put(buf, 20, value, width);
        n = 20 + width;
    }
    buf[n] = b'Z';
    Some(n + 1)
}

/// Writes `value` as `width` decimal digits, zero-padded, at `at`.
fn put(buf: &mut [u8; MAX_LEN], at: usize, value: u32, width: usize) {
    let mut v = value;
    for slot in buf[at..at + width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Serializes a UTC timestamp exactly as chrono does, faster.
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(len) => match std::str::from_utf8(&buf[..len]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => t.serialize(s),
        },
        None => t.serialize(s),
    }
}

/// [`rfc3339`] for an optional timestamp (`null` for `None`).
pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[derive(Serialize)]
    struct Fast {
        #[serde(serialize_with = "rfc3339")]
        t: DateTime<Utc>,
        #[serde(serialize_with = "rfc3339_opt")]
        o: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chrono {
        t: DateTime<Utc>,
        o: Option<DateTime<Utc>>,
    }

    fn same(t: DateTime<Utc>) {
        for o in [None, Some(t)] {
            let fast = serde_json::to_string(&Fast { t, o }).unwrap();
            let chrono = serde_json::to_string(&Chrono { t, o }).unwrap();
            assert_eq!(fast, chrono, "{t:?}");
        }
    }

    #[test]
    fn matches_chrono_for_every_fraction_width_and_edge() {
        let base = Utc.with_ymd_and_hms(2026, 11, 29, 20, 1, 2).unwrap();
        for nanos in [
            0,
            1,
            7,
            999,
            1_000,
            120_000,
            123_456_000,
            5_000_000,
            100_000_000,
            999_999_999,
            123_456_789,
            10,
            1_000_001,
        ] {
            same(base + chrono::Duration::nanoseconds(nanos));
        }
        // Years at and past the four-digit range, and the epoch.
        for (y, m, d) in [
            (0, 1, 1),
            (9999, 12, 31),
            (1970, 1, 1),
            (10000, 1, 1),
            (-1, 6, 15),
        ] {
            let t = NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 5)
                .unwrap()
                .and_utc();
            same(t);
        }
        // A leap second (chrono keeps it as a nanosecond past 10^9).
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        same(leap);
        // A spread of ordinary values.
        let mut t = base;
        for i in 0..2000i64 {
            t += chrono::Duration::microseconds(i * 7_919_113 + 1);
            same(t);
        }
    }
}
