//! Call-leg events read straight from their wire bytes into core values.
//!
//! A worker decodes every call-leg record it consumes. Through prost, each of an event's six
//! ids is built twice: a `String` in the `v1::CallLegEvent`, then the core's shared [`Id`] in
//! the conversion. [`call_leg_event`] reads the bytes once and builds each id once, from the
//! bytes.
//!
//! The direct reading takes the common case only: each id, phone number and embedded message
//! (the timestamp, the body) at most once (any other scalar may repeat: the last one wins, as
//! in prost), no groups, every known field with its own wire type, every value one
//! the conversion accepts. Anything else (an id or a message field repeated, which prost
//! would check twice or merge; a wire type that does not match; bytes cut short; a missing
//! field, an unknown enum value, a bad number) sends the record through prost and
//! `Input::try_from`, so a refused record keeps the code and message it always had, and an
//! odd but valid one the meaning prost gives it. The tests hold the two paths to the same
//! answer on mutated encodings and on the fuzz corpus.
//!
//! ```
//! use tollgate_proto::{Message, direct, v1};
//!
//! let event = v1::CallLegEvent {
//!     event_id: "e1".into(),
//!     tenant_id: "contoso".into(),
//!     leg_id: "l1".into(),
//!     occurred_at: Some(tollgate_proto::Timestamp { seconds: 1_793_491_200, nanos: 0 }),
//!     body: Some(v1::call_leg_event::Body::Interim(v1::LegInterim { elapsed_seconds: 60 })),
//!     ..Default::default()
//! };
//! let bytes = event.encode_to_vec();
//! let input = direct::call_leg_event(&bytes, 1024)?;
//! assert_eq!(input, tollgate_core::Input::try_from(event)?);
//! assert_eq!(direct::call_leg_event(&bytes, 10).unwrap_err().code(), "too_large");
//! # Ok::<(), tollgate_proto::Error>(())
//! ```

use prost::encoding::{WireType, decode_varint};
use tollgate_core as core;
use tollgate_core::{E164, Id, TenantId};

use crate::convert::{disconnect_cause, is_blank, leg_kind};
use crate::limits::MAX_ID_BYTES;
use crate::{Error, v1};

/// A call-leg event's wire bytes as a core input: read directly when they are the common case
/// (see the module), through prost and `Input::try_from` otherwise. A value over `max_bytes`
/// is refused (`too_large`) without being read.
pub fn call_leg_event(payload: &[u8], max_bytes: usize) -> Result<core::Input, Error> {
    if payload.len() <= max_bytes
        && let Some(input) = read(payload)
    {
        return Ok(input);
    }
    crate::limits::decode::<v1::CallLegEvent>(payload, max_bytes).and_then(core::Input::try_from)
}

/// One field's value, as its wire type carries it.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64 value: no field of these messages has that type.
    Fixed,
}

/// The next field of a message's bytes; `None` at a group or at bytes that are not
/// well-formed (prost refuses those, or its meaning is left to it). Inlined into its callers:
/// called a dozen times per event, the call alone was 4 % of the wire edge's instructions.
#[inline(always)]
fn field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Value<'a>)> {
    // A key as prost's `decode_key` reads it: at most 32 bits, a known wire type, a tag from 1.
    let key = u32::try_from(varint_of(buf)?).ok()?;
    let (tag, wire_type) = (key >> 3, WireType::try_from(u64::from(key & 0x07)).ok()?);
    if tag == 0 {
        return None;
    }
    let value = match wire_type {
        WireType::Varint => Value::Varint(varint_of(buf)?),
        WireType::LengthDelimited => {
            let len = usize::try_from(varint_of(buf)?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(value)
        }
        WireType::ThirtyTwoBit | WireType::SixtyFourBit => {
            let len = if wire_type == WireType::ThirtyTwoBit { 4 } else { 8 };
            *buf = buf.get(len..)?;
            Value::Fixed
        }
        WireType::StartGroup | WireType::EndGroup => return None,
    };
    Some((tag, value))
}

/// The next varint: its one byte when below 128 (the keys of these messages and most
/// lengths), prost's decoder otherwise.
#[inline(always)]
fn varint_of(buf: &mut &[u8]) -> Option<u64> {
    match buf.split_first() {
        Some((&byte, rest)) if byte < 0x80 => {
            *buf = rest;
            Some(u64::from(byte))
        }
        _ => decode_varint(buf).ok(),
    }
}

fn varint(value: Value<'_>) -> Option<u64> {
    match value {
        Value::Varint(v) => Some(v),
        _ => None,
    }
}

/// An embedded message's bytes, when it is the first occurrence of its field.
fn message<'a>(value: Value<'a>, seen: &mut bool) -> Option<&'a [u8]> {
    match value {
        Value::Bytes(bytes) if !std::mem::replace(seen, true) => Some(bytes),
        _ => None,
    }
}

/// A `google.protobuf.Timestamp`'s wire bytes as its two fields, seconds and nanos (also
/// what [`crate::peek`] reads an input's time with).
pub(crate) fn timestamp_fields(mut buf: &[u8]) -> Option<(i64, i32)> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    while !buf.is_empty() {
        match field(&mut buf)? {
            // int64 and int32 are varints holding the two's complement value.
            (1, value) => seconds = varint(value)? as i64,
            (2, value) => nanos = varint(value)? as i32,
            (_, _) => {}
        }
    }
    Some((seconds, nanos))
}

/// A `google.protobuf.Timestamp` as a core instant.
fn timestamp(buf: &[u8]) -> Option<core::Timestamp> {
    let (seconds, nanos) = timestamp_fields(buf)?;
    core::Timestamp::new(seconds, u32::try_from(nanos).ok()?).ok()
}

/// A non-blank id (the conversion's `required`).
fn required(text: &str) -> Option<&str> {
    (!is_blank(text)).then_some(text)
}

/// A phone number field's bytes, within the bound on ids (not checked as UTF-8: see
/// [`number`]).
fn number_bytes(value: Value<'_>) -> Option<&[u8]> {
    match value {
        Value::Bytes(bytes) if bytes.len() <= MAX_ID_BYTES => Some(bytes),
        _ => None,
    }
}

/// A phone number field: none when blank. Read from its bytes by `E164::parse_ascii`, which
/// refuses anything but ASCII: a number that is not plain ASCII (or whose whitespace is not)
/// is left to prost, which checks the text and gives it its meaning.
fn number(bytes: &[u8]) -> Option<Option<E164>> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() { Some(None) } else { E164::parse_ascii(trimmed).map(Some) }
}

fn started(mut buf: &[u8]) -> Option<core::LegBody> {
    let (mut kind, mut bridge, mut remote): (i32, Option<&[u8]>, Option<&[u8]>) = (0, None, None);
    while !buf.is_empty() {
        match field(&mut buf)? {
            (1, value) => kind = varint(value)? as i32,
            // A number at most once, as an id: prost checks every occurrence as UTF-8, and an
            // earlier one that is not would refuse the record there, whatever the last one.
            (2, value) if bridge.is_none() => bridge = Some(number_bytes(value)?),
            (3, value) if remote.is_none() => remote = Some(number_bytes(value)?),
            (2 | 3, _) => return None,
            (_, _) => {}
        }
    }
    Some(core::LegBody::Started(core::LegStarted {
        kind: leg_kind(kind)?,
        bridge_number: number(bridge.unwrap_or_default())?,
        remote_number: number(remote.unwrap_or_default())?,
    }))
}

fn interim(mut buf: &[u8]) -> Option<core::LegBody> {
    let mut elapsed_seconds = 0u32;
    while !buf.is_empty() {
        if let (1, value) = field(&mut buf)? {
            elapsed_seconds = varint(value)? as u32;
        }
    }
    Some(core::LegBody::Interim { elapsed_seconds })
}

fn ended(mut buf: &[u8]) -> Option<core::LegBody> {
    let (mut duration, mut cause) = (None, 0i32);
    let mut duration_seen = false;
    while !buf.is_empty() {
        match field(&mut buf)? {
            (1, value) => {
                let seconds = varint(value)? as u32;
                if std::mem::replace(&mut duration_seen, true) {
                    return None;
                }
                duration = Some(core::LegDuration::ConnectedSeconds(seconds));
            }
            (2, value) => {
                let at = message(value, &mut duration_seen)?;
                duration = Some(core::LegDuration::EndedAt(timestamp(at)?));
            }
            (3, value) => cause = varint(value)? as i32,
            (_, _) => {}
        }
    }
    Some(core::LegBody::Ended(core::LegEnded { duration: duration?, cause: disconnect_cause(cause)? }))
}

/// Where an id's bytes are in the record: from, to.
type Span = (usize, usize);

/// The ids' text, from their places in `payload`. Controllers write the ids one after the
/// other at the start of the record, and for ids shorter than 128 bytes the keys and lengths
/// between them are ASCII too: so the bytes from the first id to the last are checked as
/// UTF-8 once, and each id is cut out of that text (a cut that is not at a character's
/// boundary is refused by `str::get`). When those bytes are not UTF-8 as a whole (a field in
/// between, a long id, an invalid id), each id is checked on its own, as before.
fn texts(payload: &[u8], spans: [Span; 6]) -> Option<[&str; 6]> {
    let from = spans.iter().filter(|s| s.0 < s.1).map(|s| s.0).min().unwrap_or(0);
    let to = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let whole = payload.get(from..to).and_then(|b| std::str::from_utf8(b).ok());
    let mut texts = [""; 6];
    for (text, &(start, end)) in texts.iter_mut().zip(&spans) {
        if start < end {
            *text = match whole.and_then(|w| w.get(start - from..end - from)) {
                Some(cut) => cut,
                None => std::str::from_utf8(payload.get(start..end)?).ok()?,
            };
        }
    }
    Some(texts)
}

/// The direct reading; `None` when the record is not the common case.
fn read(payload: &[u8]) -> Option<core::Input> {
    let mut buf = payload;
    let mut spans: [Span; 6] = [(0, 0); 6];
    let mut spans_seen = 0u8;
    let (mut occurred_at, mut occurred_at_seen) = (None, false);
    let (mut body, mut body_seen) = (None, false);
    while !buf.is_empty() {
        match field(&mut buf)? {
            // event_id, tenant_id, conference_id, call_id, leg_id, organizer_id.
            // Each once: an id sent twice (whose first text prost would check too) is left
            // to prost.
            (tag @ 1..=6, Value::Bytes(bytes)) if bytes.len() <= MAX_ID_BYTES && spans_seen & 1 << tag == 0 => {
                spans_seen |= 1 << tag;
                let end = payload.len() - buf.len();
                spans[tag as usize - 1] = (end - bytes.len(), end);
            }
            (1..=6, _) => return None,
            (7, value) => occurred_at = Some(timestamp(message(value, &mut occurred_at_seen)?)?),
            (10, value) => body = Some(started(message(value, &mut body_seen)?)?),
            (11, value) => body = Some(interim(message(value, &mut body_seen)?)?),
            (12, value) => body = Some(ended(message(value, &mut body_seen)?)?),
            (_, _) => {}
        }
    }
    let [event_id, tenant_id, conference_id, call_id, leg_id, organizer_id] = texts(payload, spans)?;
    Some(core::Input::Leg(core::CallLegEvent {
        event_id: Id::from(required(event_id)?),
        tenant_id: TenantId::new(required(tenant_id)?).ok()?,
        conference_id: Id::from(conference_id),
        call_id: Id::from(call_id),
        leg_id: Id::from(required(leg_id)?),
        organizer_id: Id::from(organizer_id),
        occurred_at: occurred_at?,
        body: body?,
    }))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::Timestamp;
    use crate::v1::{call_leg_event::Body, leg_ended::Duration};

    fn event(body: Body) -> v1::CallLegEvent {
        v1::CallLegEvent {
            event_id: "ev-1".into(),
            tenant_id: "contoso".into(),
            conference_id: "conf-1".into(),
            call_id: "call-1".into(),
            leg_id: "leg-1".into(),
            organizer_id: "alice".into(),
            occurred_at: Some(Timestamp { seconds: 1_794_268_800, nanos: 500 }),
            body: Some(body),
        }
    }

    /// What call controllers send is read directly, to what prost and the conversion make of
    /// it; the odd cases are left to them.
    #[test]
    fn the_events_controllers_send_are_read_directly() {
        let at = Timestamp { seconds: 1_794_272_400, nanos: 0 };
        let bodies = [
            Body::Started(v1::LegStarted {
                kind: v1::LegKind::DialOut as i32,
                bridge_number: String::new(),
                remote_number: "+14165550123".into(),
            }),
            Body::Started(v1::LegStarted {
                kind: v1::LegKind::DialInToll as i32,
                bridge_number: "+44 20 7946 0958".into(),
                remote_number: String::new(),
            }),
            Body::Interim(v1::LegInterim { elapsed_seconds: 60 }),
            Body::Ended(v1::LegEnded {
                duration: Some(Duration::ConnectedSeconds(61)),
                cause: v1::DisconnectCause::Normal as i32,
            }),
            Body::Ended(v1::LegEnded { duration: Some(Duration::EndedAt(at)), cause: 0 }),
        ];
        for body in bodies {
            let event = event(body);
            let bytes = event.encode_to_vec();
            assert_eq!(read(&bytes), Some(core::Input::try_from(event).unwrap()), "{bytes:?}");
        }
        let interim = event(Body::Interim(v1::LegInterim { elapsed_seconds: 1 }));
        let bytes = interim.encode_to_vec();
        // A second body (started: field 10), a group, a wire type that does not match
        // (event_id as a varint), a missing body, an unknown kind: each left to prost.
        for more in [&[0x52, 0x02, 0x08, 0x04][..], &[0xbb, 0x01, 0xbc, 0x01], &[0x08, 0x01]] {
            assert_eq!(read(&[bytes.as_slice(), more].concat()), None, "{more:?}");
        }
        assert_eq!(read(&v1::CallLegEvent { body: None, ..interim.clone() }.encode_to_vec()), None);
        let unknown_kind = Body::Started(v1::LegStarted { kind: 9, ..Default::default() });
        assert_eq!(read(&event(unknown_kind).encode_to_vec()), None);
        // A field this release does not know is skipped, as prost skips it.
        let known = core::Input::try_from(interim).unwrap();
        assert_eq!(read(&[bytes.as_slice(), &[0xa0, 0x01, 0x7f]].concat()), Some(known));
    }

    /// A tenant id with a `/` is refused on both paths, as the conversion refuses it.
    #[test]
    fn a_tenant_id_with_a_slash_is_refused() {
        let mut slashed = event(Body::Interim(v1::LegInterim { elapsed_seconds: 1 }));
        slashed.tenant_id = "a/b".into();
        let bytes = slashed.encode_to_vec();
        assert_eq!(read(&bytes), None);
        assert_eq!(call_leg_event(&bytes, 1024).unwrap_err().code(), "invalid");
    }

    /// A number is read from its bytes, ASCII only: one around which, or in which, the text
    /// is anything else is left to prost and the conversion, whose answer stands.
    #[test]
    fn numbers_that_are_not_plain_ascii_are_left_to_prost() {
        let dial_out = |remote: &str| {
            event(Body::Started(v1::LegStarted {
                kind: v1::LegKind::DialOut as i32,
                bridge_number: String::new(),
                remote_number: remote.into(),
            }))
        };
        // Read directly: plain, spaced, padded with ASCII whitespace, blank.
        for remote in ["+14165550123", "+1 416 555 0123", " +14165550123\t", " \n"] {
            let event = dial_out(remote);
            assert_eq!(read(&event.encode_to_vec()), Some(core::Input::try_from(event).unwrap()), "{remote:?}");
        }
        // Left to prost: Unicode whitespace around it (valid, or blank), a vertical tab (which
        // `str::trim` takes and ASCII trimming does not), a letter that is not ASCII.
        for remote in ["\u{a0}+14165550123", "\u{2003}", "\u{b}+14165550123", "+1416555012\u{663}"] {
            let event = dial_out(remote);
            let bytes = event.encode_to_vec();
            assert_eq!(read(&bytes), None, "{remote:?}");
            let expected = core::Input::try_from(event).map_err(|e| e.to_string());
            assert_eq!(call_leg_event(&bytes, 1024).map_err(|e| e.to_string()), expected, "{remote:?}");
        }
    }
}
