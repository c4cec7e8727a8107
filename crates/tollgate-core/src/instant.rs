//! Event time. The core never reads a clock: every instant comes in as data.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime};

use crate::Error;

/// A UTC instant with nanosecond precision (the shape of `google.protobuf.Timestamp`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// A UTC calendar month, the period of the subscription dial-out pool.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
pub struct YearMonth {
    /// Calendar year.
    pub year: i32,
    /// 1 to 12.
    pub month: u8,
}

/// Earliest and latest instants accepted (years 1970 to 9999): keeps calendar maths total.
const MIN_SECS: i64 = 0;
const MAX_SECS: i64 = 253_402_300_799;

impl Timestamp {
    /// Builds an instant from Unix seconds and nanoseconds, refusing out-of-range values.
    pub fn new(secs: i64, nanos: u32) -> Result<Self, Error> {
        if !(MIN_SECS..=MAX_SECS).contains(&secs) || nanos >= 1_000_000_000 {
            return Err(Error::InvalidTimestamp { secs, nanos });
        }
        Ok(Timestamp { secs, nanos })
    }

    /// Whole Unix seconds.
    pub const fn unix_seconds(self) -> i64 {
        self.secs
    }

    /// Sub-second nanoseconds.
    pub const fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Milliseconds since the epoch, the sub-millisecond part dropped: how Kafka timestamps
    /// count.
    pub const fn unix_millis(self) -> i64 {
        self.secs * 1000 + (self.nanos / 1_000_000) as i64
    }

    /// The instant `millis` milliseconds after the epoch (a Kafka timestamp), refusing
    /// out-of-range values.
    pub fn from_unix_millis(millis: i64) -> Result<Self, Error> {
        Timestamp::new(millis.div_euclid(1000), (millis.rem_euclid(1000) * 1_000_000) as u32)
    }

    /// This instant plus `seconds` (saturating at the accepted range).
    pub fn plus_seconds(self, seconds: u32) -> Timestamp {
        Timestamp { secs: (self.secs + i64::from(seconds)).min(MAX_SECS), nanos: self.nanos }
    }

    /// Whole seconds from `self` to `later`, a started second counting as one; `None` when
    /// `later` is before `self`.
    pub fn seconds_until_ceil(self, later: Timestamp) -> Option<u64> {
        if later < self {
            return None;
        }
        let mut secs = (later.secs - self.secs) as u64;
        // 10.9 -> 12.1 is 1.2 s (billed 2, the whole-second difference); 10.1 -> 12.9 is 2.8 s
        // (billed 3, one more).
        if later.nanos > self.nanos {
            secs += 1;
        }
        Some(secs)
    }

    /// The UTC calendar month containing this instant.
    pub fn year_month(self) -> YearMonth {
        let dt = self.to_offset_date_time();
        YearMonth { year: dt.year(), month: u8::from(dt.month()) }
    }

    /// The same wall-clock instant `months` calendar months later; the 29th-31st fall back to
    /// the last day of a shorter month (29 Feb 2028 + 12 months = 28 Feb 2029).
    pub fn plus_months(self, months: u32) -> Timestamp {
        let dt = self.to_offset_date_time();
        let total = i64::from(dt.year()) * 12 + i64::from(u8::from(dt.month()) - 1) + i64::from(months);
        let year = (total.div_euclid(12)) as i32;
        let month = Month::try_from((total.rem_euclid(12) + 1) as u8).unwrap_or(Month::December);
        let day = dt.day().min(month.length(year));
        let Ok(date) = Date::from_calendar_date(year, month, day) else {
            return Timestamp { secs: MAX_SECS, nanos: 0 };
        };
        let shifted = PrimitiveDateTime::new(date, dt.time()).assume_utc();
        Timestamp { secs: shifted.unix_timestamp().min(MAX_SECS), nanos: self.nanos }
    }

    fn to_offset_date_time(self) -> OffsetDateTime {
        // In range by construction.
        OffsetDateTime::from_unix_timestamp(self.secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, e.g. `2026-11-02T09:00:00Z`, as the wire writes it (a test in
    /// `tollgate-proto` compares the two).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = self.to_offset_date_time();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        // The wire's canonical form (prost-types' rule): 0, 3, 6 or 9 fractional digits.
        match self.nanos {
            0 => {}
            n if n % 1_000_000 == 0 => write!(f, ".{:03}", n / 1_000_000)?,
            n if n % 1_000 == 0 => write!(f, ".{:06}", n / 1_000)?,
            n => write!(f, ".{n:09}")?,
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }

    #[test]
    fn adds_calendar_months_clamping_the_day() {
        // 2028-02-29T10:00:00Z
        let leap = ts(1_835_431_200);
        assert_eq!(leap.to_string(), "2028-02-29T10:00:00Z");
        assert_eq!(leap.plus_months(12).to_string(), "2029-02-28T10:00:00Z");
        // 2026-01-31 + 1 month = 2026-02-28
        let jan31 = ts(1_769_860_800);
        assert_eq!(jan31.to_string(), "2026-01-31T12:00:00Z");
        assert_eq!(jan31.plus_months(1).to_string(), "2026-02-28T12:00:00Z");
        assert_eq!(jan31.plus_months(12).to_string(), "2027-01-31T12:00:00Z");
    }

    #[test]
    fn ceils_partial_seconds() {
        let a = Timestamp::new(100, 900_000_000).unwrap();
        let b = Timestamp::new(102, 100_000_000).unwrap();
        assert_eq!(a.seconds_until_ceil(b), Some(2));
        assert_eq!(a.seconds_until_ceil(a), Some(0));
        assert_eq!(ts(100).seconds_until_ceil(Timestamp::new(100, 1).unwrap()), Some(1));
        assert_eq!(b.seconds_until_ceil(a), None);
    }

    /// Kafka timestamps are milliseconds: the sub-millisecond part is dropped; what is out of
    /// range (before the epoch, after year 9999) is refused.
    #[test]
    fn counts_milliseconds_as_kafka_does() {
        let t = Timestamp::new(1_793_491_200, 999_999_999).unwrap();
        assert_eq!(t.unix_millis(), 1_793_491_200_999);
        assert_eq!(
            Timestamp::from_unix_millis(1_793_491_200_999).unwrap(),
            Timestamp::new(1_793_491_200, 999_000_000).unwrap()
        );
        assert_eq!(Timestamp::from_unix_millis(0).unwrap().unix_millis(), 0);
        assert!(Timestamp::from_unix_millis(-1).is_err());
        assert!(Timestamp::from_unix_millis(i64::MAX).is_err());
    }

    #[test]
    fn knows_the_utc_month() {
        // 2026-11-30T23:59:59Z and one second later
        let end = ts(1_796_083_199);
        assert_eq!(end.year_month(), YearMonth { year: 2026, month: 11 });
        assert_eq!(end.plus_seconds(1).year_month(), YearMonth { year: 2026, month: 12 });
    }
}
