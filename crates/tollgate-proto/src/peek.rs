//! One field of an input's wire bytes, read without decoding the rest.
//!
//! A partition task merges its two inputs (legs and credit commands) by when they happened;
//! it learns that before it decodes them, from the `occurred_at` field alone.
//!
//! ```
//! use tollgate_proto::{peek, v1, Message};
//!
//! let command = v1::CreditCommand {
//!     occurred_at: Some(tollgate_proto::Timestamp { seconds: 1_793_491_200, nanos: 250_000_000 }),
//!     ..Default::default()
//! };
//! assert_eq!(peek::credit_command_occurred_at_millis(&command.encode_to_vec(), 1 << 20), Some(1_793_491_200_250));
//! assert_eq!(peek::credit_command_occurred_at_millis(b"\xff not protobuf", 1 << 20), None);
//! ```

use crate::limits::{self, each_entry};
use crate::v1;

/// `CallLegEvent.occurred_at`'s field number.
const CALL_LEG_OCCURRED_AT: u32 = 7;
/// `CreditCommand.occurred_at`'s field number.
const CREDIT_COMMAND_OCCURRED_AT: u32 = 3;

/// When a call-leg event happened, in milliseconds since the epoch; `None` when the bytes
/// are not well-formed (or over `max_bytes`, when that is what decides) or carry no
/// `occurred_at`.
pub fn call_leg_occurred_at_millis(payload: &[u8], max_bytes: usize) -> Option<i64> {
    occurred_at_millis(payload, CALL_LEG_OCCURRED_AT, || {
        limits::decode::<v1::CallLegEvent>(payload, max_bytes).ok()?.occurred_at
    })
}

/// When a credit command happened, in milliseconds since the epoch; `None` when the bytes
/// are not well-formed (or over `max_bytes`, when that is what decides) or carry no
/// `occurred_at`.
pub fn credit_command_occurred_at_millis(payload: &[u8], max_bytes: usize) -> Option<i64> {
    occurred_at_millis(payload, CREDIT_COMMAND_OCCURRED_AT, || {
        limits::decode::<v1::CreditCommand>(payload, max_bytes).ok()?.occurred_at
    })
}

/// The `google.protobuf.Timestamp` in field `field`, in milliseconds: read from its bytes
/// when it is there once and plain, else what the decoder makes of the whole message
/// (`decoded`), which merges repeated occurrences and skips what it does not know: the time
/// a record is merged by is always the time it is rated at.
fn occurred_at_millis(payload: &[u8], field: u32, decoded: impl FnOnce() -> Option<crate::Timestamp>) -> Option<i64> {
    let (mut found, mut count) = (None, 0u32);
    each_entry(payload, field, |timestamp| {
        count += 1;
        found = millis(timestamp);
    });
    match (count, found) {
        (0, _) => None,
        (1, Some(millis)) => Some(millis),
        _ => decoded().and_then(|t| to_millis(t.seconds, t.nanos)),
    }
}

/// A `google.protobuf.Timestamp`'s wire bytes in milliseconds (read as the worker reads the
/// whole event, [`crate::direct`]).
fn millis(buf: &[u8]) -> Option<i64> {
    let (seconds, nanos) = crate::direct::timestamp_fields(buf)?;
    to_millis(seconds, nanos)
}

/// Seconds and nanoseconds in milliseconds, `None` past `i64`.
fn to_millis(seconds: i64, nanos: i32) -> Option<i64> {
    seconds.checked_mul(1000)?.checked_add(i64::from(nanos) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1;

    const MAX: usize = 1 << 20;

    fn at(seconds: i64, nanos: i32) -> Option<crate::Timestamp> {
        Some(crate::Timestamp { seconds, nanos })
    }

    #[test]
    fn reads_occurred_at_of_either_input_and_nothing_else() {
        let leg = v1::CallLegEvent {
            event_id: "e1".into(),
            tenant_id: "acme".into(),
            occurred_at: at(1_793_491_200, 999_999_999),
            body: Some(v1::call_leg_event::Body::Interim(v1::LegInterim { elapsed_seconds: 60 })),
            ..Default::default()
        };
        assert_eq!(call_leg_occurred_at_millis(&leg.encode_to_vec(), MAX), Some(1_793_491_200_999));
        let command = v1::CreditCommand { command_id: "c1".into(), occurred_at: at(-1, 0), ..Default::default() };
        assert_eq!(credit_command_occurred_at_millis(&command.encode_to_vec(), MAX), Some(-1000));
        // Each reads its own field number: a leg's field 3 is not a timestamp.
        assert_eq!(credit_command_occurred_at_millis(&leg.encode_to_vec(), MAX), None);
        assert_eq!(call_leg_occurred_at_millis(&v1::CallLegEvent::default().encode_to_vec(), MAX), None);
        // A timestamp cut short.
        let bytes = v1::CreditCommand { occurred_at: at(1_793_491_200, 0), ..Default::default() }.encode_to_vec();
        assert_eq!(credit_command_occurred_at_millis(&bytes[..bytes.len() - 1], MAX), None);
    }

    /// An `occurred_at` sent twice, or holding what the direct reading does not take (a
    /// group), is what the decoder makes of it, the time the record is rated at: merged
    /// field by field, the group skipped.
    #[test]
    fn an_odd_occurred_at_is_read_as_the_decoder_reads_it() {
        let leg = v1::CallLegEvent {
            event_id: "e1".into(),
            tenant_id: "acme".into(),
            occurred_at: at(1_793_491_200, 250_000_000),
            body: Some(v1::call_leg_event::Body::Interim(v1::LegInterim { elapsed_seconds: 60 })),
            ..Default::default()
        };
        let decoded = |bytes: &[u8]| {
            let at = v1::CallLegEvent::decode(bytes).unwrap().occurred_at.unwrap();
            at.seconds * 1000 + i64::from(at.nanos) / 1_000_000
        };
        // An empty occurred_at (field 7) after the first: merged into it, nothing changes.
        let mut twice = leg.encode_to_vec();
        twice.extend_from_slice(&[0x3a, 0x00]);
        assert_eq!(decoded(&twice), 1_793_491_200_250);
        assert_eq!(call_leg_occurred_at_millis(&twice, MAX), Some(1_793_491_200_250));
        // A second one with its nanos only: the seconds stay the first's.
        let mut nanos = leg.encode_to_vec();
        nanos.extend_from_slice(&[0x3a, 0x05, 0x10, 0x80, 0xe1, 0xeb, 0x17]); // nanos 50_000_000
        assert_eq!(call_leg_occurred_at_millis(&nanos, MAX), Some(decoded(&nanos)));
        assert_eq!(decoded(&nanos), 1_793_491_200_050);
        // A group (start 15, end 15) inside the timestamp, which the decoder skips.
        let time = crate::Timestamp { seconds: 1_793_491_200, nanos: 0 }.encode_to_vec();
        let mut with_group = v1::CallLegEvent { occurred_at: None, ..leg.clone() }.encode_to_vec();
        with_group.extend_from_slice(&[0x3a, time.len() as u8 + 2]);
        with_group.extend_from_slice(&time);
        with_group.extend_from_slice(&[0x7b, 0x7c]);
        assert_eq!(decoded(&with_group), 1_793_491_200_000);
        assert_eq!(call_leg_occurred_at_millis(&with_group, MAX), Some(1_793_491_200_000));
        // Past the bound it is not decoded.
        assert_eq!(call_leg_occurred_at_millis(&with_group, 4), None);
    }
}
