//! Record values <-> core values. Inputs and outputs are protobuf (`tollgate.v1`); changelog
//! values are JSON (see [`crate::changelog`]), readable with `tollgate tail`.

use tollgate_core::{Input, LedgerMovement, Output};
use tollgate_proto::encode;
use tollgate_proto::{Message, direct, limits, v1};

use crate::config::TopicKind;
use crate::record::Record;

/// Why an input record was refused (goes to the dead-letter topic).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Refusal {
    /// Stable code: `decode`, `invalid`, a bound's (`too_large`, `too_many`, `too_long`),
    /// `key_mismatch`, `wrong_partition`, or a core code.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// How much of a `too_large` value its dead letter keeps: the start of it, enough to tell what
/// it was. The whole of it could be over the dead-letter topic's own size limit, and a dead
/// letter that cannot be written stops the worker (on every restart: a crash loop).
pub const TOO_LARGE_KEPT_BYTES: usize = 1024;

/// The longest value a dead letter keeps whole; of a longer one (refused for any reason) it
/// keeps the first [`TOO_LARGE_KEPT_BYTES`]. With [`DEAD_LETTER_KEY_BYTES`] and
/// [`DEAD_LETTER_MESSAGE_BYTES`] this keeps every dead letter well under 1,000,000 bytes,
/// librdkafka's default `message.max.bytes` and below Kafka's default topic limit, whatever
/// an input of up to `max_record_bytes` held.
pub const DEAD_LETTER_ORIGINAL_BYTES: usize = 512 * 1024;

/// The longest record key a dead letter is keyed by; a longer one (no tenant id is) is cut.
pub const DEAD_LETTER_KEY_BYTES: usize = 256;

/// The longest message a dead letter carries; a longer one is cut (at a character).
pub const DEAD_LETTER_MESSAGE_BYTES: usize = 4096;

impl Refusal {
    /// The dead letter of `record`, refused for this reason: the original bytes (of a
    /// `too_large` value, or one over [`DEAD_LETTER_ORIGINAL_BYTES`], its first
    /// [`TOO_LARGE_KEPT_BYTES`]), where they came from, the code and the message (at most
    /// [`DEAD_LETTER_MESSAGE_BYTES`]).
    pub fn dead_letter(self, record: &Record) -> v1::DeadLetter {
        let payload = record.payload.as_deref().unwrap_or_default();
        let kept = &payload[..kept_len(self.code, payload.len())];
        let cut = kept.len() < payload.len() && self.code != TOO_LARGE;
        let suffix = if cut {
            format!(" (a value of {} bytes: its first {} kept)", payload.len(), kept.len())
        } else {
            String::new()
        };
        let mut message = self.message;
        if message.len() + suffix.len() > DEAD_LETTER_MESSAGE_BYTES {
            // Room for the suffix and the ellipsis (three bytes).
            let mut end = DEAD_LETTER_MESSAGE_BYTES - suffix.len() - 3;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        message.push_str(&suffix);
        v1::DeadLetter {
            original: kept.to_vec(),
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            error_code: self.code.to_owned(),
            message,
            dead_at: None,
        }
    }

    /// A refusal with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

/// The code of a value refused for its size.
pub const TOO_LARGE: &str = "too_large";

/// How many of a refused value's `len` bytes its dead letter keeps.
fn kept_len(code: &str, len: usize) -> usize {
    if code == TOO_LARGE || len > DEAD_LETTER_ORIGINAL_BYTES { len.min(TOO_LARGE_KEPT_BYTES) } else { len }
}

/// Whether a dead letter's original bytes are what [`Refusal::dead_letter`] keeps of `payload`.
pub fn keeps(letter: &v1::DeadLetter, payload: &[u8]) -> bool {
    letter.original.len() == kept_len(&letter.error_code, payload.len()) && payload.starts_with(&letter.original)
}

/// The key a dead letter of a record keyed `key` is written under: the key's bytes, at most
/// [`DEAD_LETTER_KEY_BYTES`] of them.
pub fn dead_letter_key(key: &[u8]) -> &[u8] {
    &key[..key.len().min(DEAD_LETTER_KEY_BYTES)]
}

/// Decodes an input value of the given topic kind; a value over `max_bytes` is refused
/// (`too_large`) without being decoded, and the decoded message is checked against the bounds
/// of [`tollgate_proto::limits`] before it is converted. A call-leg event is read straight
/// from its bytes ([`tollgate_proto::direct`]), with the same answers.
pub fn decode_input(kind: TopicKind, payload: Option<&[u8]>, max_bytes: usize) -> Result<Input, Refusal> {
    let payload = payload.ok_or_else(|| Refusal::new("decode", "empty value (tombstone) on an input topic"))?;
    let converted = match kind {
        // Read straight into core values; prost and the conversion when it is not the common case.
        TopicKind::CallLegs => direct::call_leg_event(payload, max_bytes),
        TopicKind::CreditCommands => limits::decode::<v1::CreditCommand>(payload, max_bytes).and_then(Input::try_from),
        other => return Err(Refusal::new("invalid", format!("{other:?} is not an input topic"))),
    };
    converted.map_err(|e| Refusal::new(e.code(), e.to_string()))
}

/// The code of an input dated too far after its record's Kafka timestamp.
pub const FUTURE_DATED: &str = "future_dated";

/// Whether an input that happened at `occurred_at` (milliseconds since the epoch) is dated
/// more than `max_future_seconds` after its record's Kafka timestamp `produced_at`. A record
/// whose timestamp is 0 or less (none, or the epoch set by its producer) cannot be checked,
/// and counts as dated after it: let through unchecked, one dated in 9999 would shut its
/// tenant out until then.
///
/// The Kafka timestamp is the producer's clock (`CreateTime`, which brokers since Kafka 4.0
/// refuse when it is more than an hour ahead of their own: `message.timestamp.after.max.ms`)
/// or the broker's (`LogAppendTime`). An input that happened after its record was written is
/// a wrong clock or a wrong unit, and rated it would move its tenant's newest event time
/// ahead: every true input after it would be refused as too late, uncharged. Both the merge
/// time and the refusal are read from the record alone, so a record written again is judged
/// again the same way.
pub fn future_dated(occurred_at: i64, produced_at: i64, max_future_seconds: u32) -> bool {
    produced_at <= 0 || occurred_at > produced_at.saturating_add(i64::from(max_future_seconds) * 1000)
}

/// Refuses `input` when it is [`future_dated`] against `record`'s Kafka timestamp.
pub fn refuse_future_dated(input: &Input, record: &Record, max_future_seconds: u32) -> Result<(), Refusal> {
    let occurred_at = input.occurred_at();
    if !future_dated(occurred_at.unix_millis(), record.produced_at, max_future_seconds) {
        return Ok(());
    }
    if record.produced_at <= 0 {
        let message = format!(
            "the record's Kafka timestamp is {} ms: occurred_at {occurred_at} cannot be checked against it",
            record.produced_at
        );
        return Err(Refusal::new(FUTURE_DATED, message));
    }
    let produced_at = tollgate_core::Timestamp::from_unix_millis(record.produced_at)
        .map_or_else(|_| format!("{} ms", record.produced_at), |t| t.to_string());
    Err(Refusal::new(
        FUTURE_DATED,
        format!(
            "occurred_at {occurred_at} is more than {max_future_seconds} s after the record's Kafka timestamp {produced_at}"
        ),
    ))
}

/// Appends an output's key (its tenant id), then its encoded value, to `buf`: returns its
/// topic and the key's length. The value is written straight from the output
/// ([`tollgate_proto::encode`]), with no message in between.
pub fn encode_output(output: &Output, buf: &mut Vec<u8>) -> (TopicKind, usize) {
    let (kind, tenant) = match output {
        Output::Usage(u) => (TopicKind::RatedUsage, &u.tenant_id),
        Output::Decision(d) => (TopicKind::LegDecisions, &d.tenant_id),
        Output::Credit(c) => (TopicKind::CreditEvents, &c.tenant_id),
    };
    let key = tenant.as_str().len();
    buf.extend_from_slice(tenant.as_str().as_bytes());
    encode::output(output, buf);
    (kind, key)
}

/// Appends a ledger movement's (the debit trail's) key, then its encoded value, to `buf`:
/// returns the key's length. Its topic is [`TopicKind::LedgerMovements`].
pub fn encode_movement(movement: &LedgerMovement, buf: &mut Vec<u8>) -> usize {
    let key = movement.tenant_id.as_str().len();
    buf.extend_from_slice(movement.tenant_id.as_str().as_bytes());
    encode::ledger_movement(movement, buf);
    key
}

/// How the values of a topic are shown as JSON (`tollgate tail`), from the record's key and
/// value: a column of the registry.
pub type ToJson = fn(&[u8], &[u8]) -> Result<serde_json::Value, String>;

/// A protobuf value as its proto3 JSON mapping.
pub fn json<M: Message + Default + serde::Serialize>(_key: &[u8], payload: &[u8]) -> Result<serde_json::Value, String> {
    let message = M::decode(payload).map_err(|e| e.to_string())?;
    serde_json::to_value(&message).map_err(|e| e.to_string())
}

/// A value that is JSON already (the ownership announcements).
pub fn json_value(_key: &[u8], payload: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

/// A changelog value: a tenant's record, a window segment's or an earlier window entry's
/// (protobuf, by the key's kind) in its proto3 JSON mapping, or a value that is JSON already
/// (open legs, parked ends, the manifest, the input offsets, and the records of earlier
/// releases).
pub fn state_json(key: &[u8], payload: &[u8]) -> Result<serde_json::Value, String> {
    if payload.first() == Some(&b'{') {
        return json_value(key, payload);
    }
    match key.get(..2) {
        Some(b"t/") => json::<v1::TenantStateRecord>(key, payload),
        Some(b"w/") => json::<v1::WindowSegmentRecord>(key, payload),
        Some(b"s/" | b"c/") => json::<v1::WindowEntryRecord>(key, payload),
        _ => Err("not a changelog value".into()),
    }
}

/// Decodes any tollgate topic's value to a JSON value, given its key (for `tollgate tail`).
pub fn to_json(kind: TopicKind, key: &[u8], payload: &[u8]) -> Result<serde_json::Value, String> {
    (kind.def().to_json)(key, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tollgate tail` shows the changelog's protobuf records by their key's kind, in their
    /// proto3 JSON mapping, and its JSON records as they are.
    #[test]
    fn shows_changelog_records_by_their_key() {
        let at = tollgate_core::Timestamp::new(1_793_577_600, 0).unwrap();
        let state = tollgate_core::TenantState { credit_sequence: 3, watermark: at, ..Default::default() };
        let tenant = state_json(b"t/acme", &tollgate_proto::state::tenant_record(&state)).unwrap();
        assert_eq!(tenant, serde_json::json!({ "creditSequence": "3", "watermark": "2026-11-02T00:00:00Z" }));
        let mut window = Vec::new();
        tollgate_proto::state::encode_window(at, Some(5), &mut window);
        let entry = state_json(b"s/4/acme/e-1", &window).unwrap();
        assert_eq!(entry, serde_json::json!({ "at": "2026-11-02T00:00:00Z", "fingerprint": "5" }));
        let mut segment = Vec::new();
        tollgate_proto::state::encode_segment(&[("e-1", at, 5)], &[("leg-1", at)], &mut segment);
        let segment = state_json(b"w/4/acme/l17", &segment).unwrap();
        let expected = serde_json::json!({
            "applied": [{ "id": "e-1", "at": "2026-11-02T00:00:00Z", "fingerprint": "5" }],
            "closed": [{ "id": "leg-1", "at": "2026-11-02T00:00:00Z" }],
        });
        assert_eq!(segment, expected);
        assert_eq!(state_json(b"o/4/acme/leg-1", b"{\"open\":1}").unwrap(), serde_json::json!({ "open": 1 }));
        assert!(state_json(b"x/acme", &window).is_err());
    }

    /// Up to `max_future_seconds` after the record's Kafka timestamp is accepted, a
    /// millisecond more is refused, and so is a record whose timestamp is 0 or less.
    #[test]
    fn an_input_dated_too_far_after_its_record_is_refused() {
        let produced_at = 1_793_491_200_000; // 2026-11-01T00:00:00Z
        assert!(!future_dated(produced_at + 3_600_000, produced_at, 3600));
        assert!(future_dated(produced_at + 3_600_001, produced_at, 3600));
        assert!(!future_dated(produced_at - 86_400_000, produced_at, 0));
        assert!(future_dated(produced_at + 1, produced_at, 0));
        assert!(future_dated(i64::MAX, 0, 3600) && future_dated(produced_at, 0, 3600));
        assert!(future_dated(produced_at, -1, 3600));

        let line = r#"{"callLeg":{"eventId":"e1","tenantId":"acme","callId":"c1","legId":"l1","organizerId":"o1",
            "occurredAt":"2026-11-01T01:00:00.001Z","interim":{"elapsedSeconds":60}}}"#;
        let record: v1::InputRecord = serde_json::from_str(line).unwrap();
        let Some(v1::input_record::Record::CallLeg(event)) = record.record else { panic!("a leg") };
        let input = Input::try_from(event).unwrap();
        let mut record = Record {
            topic: "tollgate.call-legs.v1".into(),
            partition: 0,
            offset: 7,
            timestamp: 0,
            produced_at,
            key: Some(b"acme".to_vec()),
            payload: None,
        };
        let refusal = refuse_future_dated(&input, &record, 3600).unwrap_err();
        let message = "occurred_at 2026-11-01T01:00:00.001Z is more than 3600 s after the record's Kafka timestamp 2026-11-01T00:00:00Z";
        assert_eq!(refusal, Refusal::new(FUTURE_DATED, message));
        assert_eq!(refuse_future_dated(&input, &record, 3601), Ok(()));
        record.produced_at = 0;
        let message =
            "the record's Kafka timestamp is 0 ms: occurred_at 2026-11-01T01:00:00.001Z cannot be checked against it";
        assert_eq!(refuse_future_dated(&input, &record, 3601), Err(Refusal::new(FUTURE_DATED, message)));
    }

    #[test]
    fn a_too_large_value_is_refused_undecoded_and_its_dead_letter_keeps_its_first_kilobyte() {
        let payload = vec![7u8; 5000];
        let record = Record {
            topic: "tollgate.call-legs.v1".into(),
            partition: 0,
            offset: 7,
            timestamp: 0,
            produced_at: 0,
            key: Some(b"acme".to_vec()),
            payload: Some(payload.clone()),
        };
        let refusal = decode_input(TopicKind::CallLegs, Some(&payload), 4096).unwrap_err();
        assert_eq!(refusal, Refusal::new("too_large", "a value of 5000 bytes, more than the 4096 allowed"));
        let letter = refusal.dead_letter(&record);
        assert_eq!((letter.original.as_slice(), letter.source_offset), (&payload[..1024], 7));
        assert!(keeps(&letter, &payload));
        assert!(!keeps(&letter, &[8; 5000]) && !keeps(&letter, &payload[..1000]));

        // Any other refusal keeps the whole value.
        let letter = Refusal::new("decode", "undecodable").dead_letter(&record);
        assert_eq!(letter.original, payload);
        assert!(keeps(&letter, &payload) && !keeps(&letter, &payload[..1024]));
    }
}
