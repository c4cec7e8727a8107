//! `google.protobuf.Timestamp` with the canonical proto3 JSON mapping.
//!
//! `pbjson_types::Timestamp` serializes as `2026-11-02T09:00:00+00:00`; the proto3 JSON
//! mapping asks for Z-normalized output with 0, 3, 6 or 9 fractional digits
//! (`2026-11-02T09:00:00Z`). This type is wire-identical (same fields and tags) and is what
//! every generated `tollgate.v1` message uses.

use std::fmt;
use std::str::FromStr;

/// A point in time, independent of any time zone: seconds and nanoseconds since the Unix
/// epoch (`google.protobuf.Timestamp`).
///
/// JSON form: an RFC 3339 string. Output is always UTC with a `Z` suffix and 0, 3, 6 or 9
/// fractional digits; input accepts any offset (`+01:00`, `z`) and 1 to 9 fractional digits.
/// [`Display`](fmt::Display) and [`FromStr`] use the same format.
///
/// The derived ordering is chronological for normalized values (`0 <= nanos < 1e9`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z. Must be within 0001-01-01 ..= 9999-12-31.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second, 0 ..= 999 999 999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// 0001-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;
const SECONDS_PER_DAY: i64 = 86_400;

/// Why a [`Timestamp`] could not be formatted or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The value is outside 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z or its
    /// `nanos` is not in 0 ..= 999 999 999.
    #[error("timestamp out of range: seconds={seconds}, nanos={nanos}")]
    OutOfRange {
        /// The offending seconds.
        seconds: i64,
        /// The offending nanos.
        nanos: i32,
    },
    /// The text is not an RFC 3339 date-time.
    #[error("invalid RFC 3339 timestamp {0:?}")]
    Invalid(String),
}

impl Timestamp {
    /// A timestamp of whole seconds since the Unix epoch.
    #[must_use]
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Self { seconds, nanos: 0 }
    }

    fn check(self) -> Result<(), TimestampError> {
        if (MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds) && (0..1_000_000_000).contains(&self.nanos) {
            Ok(())
        } else {
            Err(TimestampError::OutOfRange { seconds: self.seconds, nanos: self.nanos })
        }
    }

    /// The canonical RFC 3339 text (`2026-11-02T09:00:00Z`, `2026-11-02T09:00:00.250Z`).
    ///
    /// # Errors
    ///
    /// [`TimestampError::OutOfRange`] when the value cannot be written as RFC 3339.
    pub fn to_rfc3339(self) -> Result<String, TimestampError> {
        self.check()?;
        // prost-types writes the canonical form for the years 1 to 9999 that `check` allows
        // (four-digit year, `Z`, 0, 3, 6 or 9 fractional digits): the one RFC 3339 writer.
        Ok(prost_types::Timestamp { seconds: self.seconds, nanos: self.nanos }.to_string())
    }

    /// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`).
    ///
    /// # Errors
    ///
    /// [`TimestampError::Invalid`] for malformed text, [`TimestampError::OutOfRange`] when
    /// the instant is before year 1 or after year 9999 in UTC.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let invalid = || TimestampError::Invalid(text.to_owned());
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = b.get(range).ok_or_else(invalid)?;
            part.iter().try_fold(0_i64, |acc, &c| {
                if c.is_ascii_digit() { Ok(acc * 10 + i64::from(c - b'0')) } else { Err(invalid()) }
            })
        };
        let sep = |i: usize, allowed: &[u8]| -> Result<(), TimestampError> {
            match b.get(i) {
                Some(c) if allowed.contains(c) => Ok(()),
                _ => Err(invalid()),
            }
        };
        let year = digits(0..4)?;
        sep(4, b"-")?;
        let month = digits(5..7)?;
        sep(7, b"-")?;
        let day = digits(8..10)?;
        sep(10, b"Tt ")?;
        let hour = digits(11..13)?;
        sep(13, b":")?;
        let minute = digits(14..16)?;
        sep(16, b":")?;
        let second = digits(17..19)?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(invalid());
        }

        let mut i = 19;
        let mut nanos = 0_i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let len = i - start;
            if len == 0 || len > 9 {
                return Err(invalid());
            }
            nanos = digits(start..i)? * 10_i64.pow(u32::try_from(9 - len).map_err(|_| invalid())?);
        }
        let offset_seconds = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
                sep(i + 3, b":")?;
                let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(invalid());
                }
                let offset = oh * 3600 + om * 60;
                if sign == b'+' { offset } else { -offset }
            }
            _ => return Err(invalid()),
        };

        let seconds =
            days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
        let timestamp = Self { seconds, nanos: i32::try_from(nanos).map_err(|_| invalid())? };
        timestamp.check()?;
        Ok(timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_rfc3339() {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "Timestamp {{ seconds: {}, nanos: {} }}", self.seconds, self.nanos),
        }
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.to_rfc3339().map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl From<pbjson_types::Timestamp> for Timestamp {
    fn from(t: pbjson_types::Timestamp) -> Self {
        Self { seconds: t.seconds, nanos: t.nanos }
    }
}

impl From<Timestamp> for pbjson_types::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self { seconds: t.seconds, nanos: t.nanos }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(ts(0, 0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(ts(1_793_610_000, 0).to_string(), "2026-11-02T09:00:00Z");
        assert_eq!(ts(1_793_610_000, 250_000_000).to_string(), "2026-11-02T09:00:00.250Z");
        assert_eq!(ts(1_793_610_000, 250_000).to_string(), "2026-11-02T09:00:00.000250Z");
        assert_eq!(ts(1_793_610_000, 1).to_string(), "2026-11-02T09:00:00.000000001Z");
        assert_eq!(ts(951_782_400, 0).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(ts(-1, 0).to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(ts(MIN_SECONDS, 0).to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(ts(MAX_SECONDS, 999_999_999).to_string(), "9999-12-31T23:59:59.999999999Z");
        assert!(ts(MAX_SECONDS + 1, 0).to_rfc3339().is_err());
        assert!(ts(MIN_SECONDS - 1, 0).to_rfc3339().is_err());
        assert!(ts(0, -1).to_rfc3339().is_err());
        assert!(ts(0, 1_000_000_000).to_rfc3339().is_err());
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let p = |s: &str| Timestamp::parse_rfc3339(s);
        assert_eq!(p("2026-11-02T09:00:00Z"), Ok(ts(1_793_610_000, 0)));
        assert_eq!(p("2026-11-02t09:00:00z"), Ok(ts(1_793_610_000, 0)));
        assert_eq!(p("2026-11-02T10:00:00+01:00"), Ok(ts(1_793_610_000, 0)));
        assert_eq!(p("2026-11-02T04:30:00-04:30"), Ok(ts(1_793_610_000, 0)));
        assert_eq!(p("2026-11-02T09:00:00+00:00"), Ok(ts(1_793_610_000, 0)));
        assert_eq!(p("2026-11-02T09:00:00.25Z"), Ok(ts(1_793_610_000, 250_000_000)));
        assert_eq!(p("2026-11-02T09:00:00.123456789Z"), Ok(ts(1_793_610_000, 123_456_789)));
        for bad in [
            "",
            "2026-11-02",
            "2026-11-02T09:00:00",
            "2026-11-02T09:00:00.Z",
            "2026-11-02T09:00:00.1234567890Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T09:60:00Z",
            "2026-11-02T09:00:60Z",
            "2026-11-02T09:00:00+0100",
            "2026-11-02T09:00:00Zjunk",
            "+2026-11-02T09:00:00Z",
            "1793610000",
            "0001-01-01T00:00:00+00:01",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        let start = days_from_civil(1900, 1, 1);
        let end = days_from_civil(2300, 1, 1);
        assert_eq!(ts(start * SECONDS_PER_DAY, 0).to_string(), "1900-01-01T00:00:00Z");
        for day in start..end {
            let t = ts(day * SECONDS_PER_DAY + 45_296, 7_000_000);
            let text = t.to_string();
            assert_eq!(Timestamp::parse_rfc3339(&text), Ok(t), "{text}");
        }
    }

    /// The core's `Timestamp` prints the same text in messages (it cannot use prost-types).
    #[test]
    fn the_core_prints_instants_as_the_wire_does() {
        for (seconds, nanos) in [(0, 0), (1_793_610_000, 250_000_000), (1_793_610_000, 250_000), (1_793_610_000, 1)] {
            let core = tollgate_core::Timestamp::new(seconds, nanos as u32).unwrap();
            assert_eq!(core.to_string(), ts(seconds, nanos).to_string());
        }
    }
}
