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
//! assert_eq!(peek::credit_command_occurred_at_millis(&command.encode_to_vec()), Some(1_793_491_200_250));
//! assert_eq!(peek::credit_command_occurred_at_millis(b"\xff not protobuf"), None);
//! ```

use crate::limits::each_entry;

/// `CallLegEvent.occurred_at`'s field number.
const CALL_LEG_OCCURRED_AT: u32 = 7;
/// `CreditCommand.occurred_at`'s field number.
const CREDIT_COMMAND_OCCURRED_AT: u32 = 3;

/// When a call-leg event happened, in milliseconds since the epoch; `None` when the bytes
/// are not well-formed or carry no `occurred_at`.
pub fn call_leg_occurred_at_millis(payload: &[u8]) -> Option<i64> {
    occurred_at_millis(payload, CALL_LEG_OCCURRED_AT)
}

/// When a credit command happened, in milliseconds since the epoch; `None` when the bytes
/// are not well-formed or carry no `occurred_at`.
pub fn credit_command_occurred_at_millis(payload: &[u8]) -> Option<i64> {
    occurred_at_millis(payload, CREDIT_COMMAND_OCCURRED_AT)
}

/// The `google.protobuf.Timestamp` in field `field`, in milliseconds (the last occurrence,
/// as a decoder would merge them).
fn occurred_at_millis(payload: &[u8], field: u32) -> Option<i64> {
    let mut found = None;
    each_entry(payload, field, |timestamp| found = millis(timestamp));
    found
}

/// A `google.protobuf.Timestamp`'s wire bytes in milliseconds (read as the worker reads the
/// whole event, [`crate::direct`]).
fn millis(buf: &[u8]) -> Option<i64> {
    let (seconds, nanos) = crate::direct::timestamp_fields(buf)?;
    seconds.checked_mul(1000)?.checked_add(i64::from(nanos) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1;

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
        assert_eq!(call_leg_occurred_at_millis(&leg.encode_to_vec()), Some(1_793_491_200_999));
        let command = v1::CreditCommand { command_id: "c1".into(), occurred_at: at(-1, 0), ..Default::default() };
        assert_eq!(credit_command_occurred_at_millis(&command.encode_to_vec()), Some(-1000));
        // Each reads its own field number: a leg's field 3 is not a timestamp.
        assert_eq!(credit_command_occurred_at_millis(&leg.encode_to_vec()), None);
        assert_eq!(call_leg_occurred_at_millis(&v1::CallLegEvent::default().encode_to_vec()), None);
        // A timestamp cut short.
        let bytes = v1::CreditCommand { occurred_at: at(1_793_491_200, 0), ..Default::default() }.encode_to_vec();
        assert_eq!(credit_command_occurred_at_millis(&bytes[..bytes.len() - 1]), None);
    }
}
