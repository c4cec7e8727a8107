//! Outputs encoded straight from the core's types into a caller's buffer.
//!
//! `v1::RatedUsage::from(usage).encode(buf)` copies every id into a `String` and formats every
//! amount into another before prost writes them out: a dozen allocations per record, on the
//! hottest path of the worker. The functions here write the same bytes (proto3: fields in
//! number order, default values left out) from the borrowed core values, with amounts and
//! numbers formatted on the stack. The tests (`tests/encode.rs`) hold them to prost's
//! encoding of the converted message, byte for byte, on generated outputs and edge values.

use prost::encoding::{WireType, encode_varint, encoded_len_varint};
use tollgate_core as core;

use crate::convert::wire_timestamp;
use crate::v1;

/// Appends `output`'s protobuf encoding (`v1::RatedUsage`, `v1::LegDecision` or
/// `v1::CreditEvent`: the message of its topic) to `buf`.
pub fn output(output: &core::Output, buf: &mut Vec<u8>) {
    match output {
        core::Output::Usage(u) => rated_usage(u, buf),
        core::Output::Decision(d) => leg_decision(d, buf),
        core::Output::Credit(c) => credit_event(c, buf),
    }
}

/// Appends a `v1::RatedUsage`.
pub fn rated_usage(u: &core::RatedUsage, buf: &mut Vec<u8>) {
    let (outcome, reason) = crate::convert::outcome(u.outcome);
    let money = |amount| u.currency.format_text(amount);
    joined(1, &u.usage_id_parts(), buf);
    string(2, &u.call_id, buf);
    string(3, &u.conference_id, buf);
    string(4, u.tenant_id.as_str(), buf);
    string(5, &u.organizer_id, buf);
    bytes(6, u.organizer_usage_location.code_bytes(), buf);
    int(7, crate::convert::call_type(u.call_type) as i32, buf);
    int(8, crate::convert::number_type(u.number_type) as i32, buf);
    boolean(9, u.international, buf);
    bytes(10, u.destination_country.code_bytes(), buf);
    bytes(11, u.destination_number.text().as_bytes(), buf);
    timestamp(12, u.started_at, buf);
    timestamp(13, u.ended_at, buf);
    uint(14, u.duration_seconds, buf);
    uint(15, u.billable_seconds, buf);
    uint(16, u.pool_seconds, buf);
    bytes(17, money(u.connection_fee).as_bytes(), buf);
    bytes(18, money(u.charge).as_bytes(), buf);
    bytes(19, u.currency.code_bytes(), buf);
    int(20, crate::convert::capability(u.capability) as i32, buf);
    string(21, &u.rate_card_id, buf);
    string(22, &u.rate_card_version, buf);
    if let Some(prefix) = u.rate_prefix {
        bytes(23, prefix.text().as_bytes(), buf);
    }
    bytes(24, money(u.price_per_minute).as_bytes(), buf);
    int(25, outcome as i32, buf);
    int(26, reason as i32, buf);
    bytes(27, money(u.balance_after).as_bytes(), buf);
    for flag in u.flags.names() {
        // Repeated: every element is written, even an empty one.
        key(28, WireType::LengthDelimited, buf);
        varint(flag.len() as u64, buf);
        buf.extend_from_slice(flag.as_bytes());
    }
}

/// Appends a `v1::LegDecision`.
pub fn leg_decision(d: &core::LegDecision, buf: &mut Vec<u8>) {
    joined(1, &d.decision_id_parts(), buf);
    string(2, d.tenant_id.as_str(), buf);
    string(3, &d.leg_id, buf);
    string(4, &d.call_id, buf);
    string(5, &d.conference_id, buf);
    timestamp(6, d.decided_at, buf);
    // The oneof's message is written even when all its fields are defaults.
    match d.decision {
        core::Decision::Allow { max_affordable_seconds, capability } => {
            let capability = crate::convert::allowed_capability(capability) as i32;
            let len = uint_len(1, max_affordable_seconds) + int_len(2, capability);
            message_header(10, len, buf);
            uint(1, max_affordable_seconds, buf);
            int(2, capability, buf);
        }
        core::Decision::Block(reason) => {
            let reason = crate::convert::block_reason(reason) as i32;
            message_header(11, int_len(1, reason), buf);
            int(1, reason, buf);
        }
        core::Decision::Disconnect { balance, currency } => {
            let balance = currency.format_text(balance);
            message_header(12, bytes_len(1, balance.as_bytes()), buf);
            bytes(1, balance.as_bytes(), buf);
        }
    }
}

/// Appends a `v1::CreditEvent` (a rare record: through the converted message).
pub fn credit_event(c: &core::CreditEvent, buf: &mut Vec<u8>) {
    append(&v1::CreditEvent::from(c.clone()), buf);
}

/// Appends a `v1::LedgerMovement`.
pub fn ledger_movement(m: &core::LedgerMovement, buf: &mut Vec<u8>) {
    string(1, &m.movement_id, buf);
    string(2, m.tenant_id.as_str(), buf);
    timestamp(3, m.occurred_at, buf);
    int(4, crate::convert::movement_kind(m.kind) as i32, buf);
    bytes(5, m.currency.format_text(m.amount).as_bytes(), buf);
    bytes(6, m.currency.code_bytes(), buf);
    bytes(7, m.currency.format_text(m.balance_after).as_bytes(), buf);
    string(8, &m.leg_id, buf);
    string(9, &m.lot_id, buf);
}

/// Appends `message`'s encoding to `buf`.
pub fn append(message: &impl prost::Message, buf: &mut Vec<u8>) {
    buf.reserve(message.encoded_len());
    // A `Vec` grows as needed: encoding into one cannot run out of room, its only error.
    let _ = message.encode(buf);
}

/// A string field (left out when empty).
pub(crate) fn string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    bytes(tag, value.as_bytes(), buf);
}

/// A string field from text that is UTF-8 by construction (an amount, a number, a code: ASCII
/// the core wrote), copied without checking it again.
fn bytes(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        key(tag, WireType::LengthDelimited, buf);
        varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    }
}

/// A field's key: one byte for the fields numbered below 16, as prost writes it.
fn key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), buf);
}

/// A varint: a value below 128 (a key, and most lengths and enums here) is its one byte;
/// prost's loop writes the others.
fn varint(value: u64, buf: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(byte) if byte < 0x80 => buf.push(byte),
        _ => encode_varint(value, buf),
    }
}

/// A string field made of `parts`, written one after the other.
fn joined(tag: u32, parts: &[&str], buf: &mut Vec<u8>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > 0 {
        key(tag, WireType::LengthDelimited, buf);
        varint(len as u64, buf);
        for part in parts {
            buf.extend_from_slice(part.as_bytes());
        }
    }
}

pub(crate) fn string_len(tag: u32, value: &str) -> usize {
    bytes_len(tag, value.as_bytes())
}

fn bytes_len(tag: u32, value: &[u8]) -> usize {
    if value.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(value.len() as u64) + value.len() }
}

/// A `uint32` field (left out when zero).
fn uint(tag: u32, value: u32, buf: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::Varint, buf);
        varint(u64::from(value), buf);
    }
}

fn uint_len(tag: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(u64::from(value)) }
}

/// An `int32` or enum field (left out when zero; a negative value takes ten bytes, as prost
/// writes it).
fn int(tag: u32, value: i32, buf: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::Varint, buf);
        varint(i64::from(value) as u64, buf);
    }
}

fn int_len(tag: u32, value: i32) -> usize {
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(i64::from(value) as u64) }
}

/// A `bool` field (left out when false).
fn boolean(tag: u32, value: bool, buf: &mut Vec<u8>) {
    if value {
        key(tag, WireType::Varint, buf);
        buf.push(1);
    }
}

/// A `google.protobuf.Timestamp` field (always present: the converted message has `Some`).
pub(crate) fn timestamp(tag: u32, at: core::Timestamp, buf: &mut Vec<u8>) {
    let (seconds, nanos) = timestamp_fields(at);
    message_header(tag, timestamp_body_len(seconds, nanos), buf);
    if seconds != 0 {
        key(1, WireType::Varint, buf);
        varint(seconds, buf);
    }
    if nanos != 0 {
        key(2, WireType::Varint, buf);
        varint(nanos, buf);
    }
}

/// The length of a [`timestamp`] field, its key included.
pub(crate) fn timestamp_len(tag: u32, at: core::Timestamp) -> usize {
    let (seconds, nanos) = timestamp_fields(at);
    let body = timestamp_body_len(seconds, nanos);
    key_len(tag) + encoded_len_varint(body as u64) + body
}

/// A timestamp's two fields as their varints carry them.
fn timestamp_fields(at: core::Timestamp) -> (u64, u64) {
    let wire = wire_timestamp(at);
    (wire.seconds as u64, i64::from(wire.nanos) as u64)
}

fn timestamp_body_len(seconds: u64, nanos: u64) -> usize {
    (if seconds == 0 { 0 } else { key_len(1) + encoded_len_varint(seconds) })
        + if nanos == 0 { 0 } else { key_len(2) + encoded_len_varint(nanos) }
}

/// The key and length of an embedded message of `len` bytes.
pub(crate) fn message_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    key(tag, WireType::LengthDelimited, buf);
    varint(len as u64, buf);
}

pub(crate) fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}
