//! Record values <-> core values. Inputs and outputs are protobuf (`tollgate.v1`); changelog
//! values are JSON (see [`crate::changelog`]), readable with `tollgate tail`.

use tollgate_core::{Input, LedgerMovement, Output};
use tollgate_proto::{Message, limits, v1};

use crate::config::{TopicKind, Topics};
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

impl Refusal {
    /// The dead letter of `record`, refused for this reason: the original bytes, where they
    /// came from, the code and the message.
    pub fn dead_letter(self, record: &Record) -> v1::DeadLetter {
        v1::DeadLetter {
            original: record.payload.clone().unwrap_or_default(),
            source_topic: record.topic.clone(),
            source_partition: record.partition,
            source_offset: record.offset,
            error_code: self.code.to_owned(),
            message: self.message,
            dead_at: None,
        }
    }

    /// A refusal with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

/// Decodes an input value of the given topic kind; a value over `max_bytes` is refused
/// (`too_large`) without being decoded, and the decoded message is checked against the bounds
/// of [`tollgate_proto::limits`] before it is converted.
pub fn decode_input(kind: TopicKind, payload: Option<&[u8]>, max_bytes: usize) -> Result<Input, Refusal> {
    let payload = payload.ok_or_else(|| Refusal::new("decode", "empty value (tombstone) on an input topic"))?;
    let converted = match kind {
        TopicKind::CallLegs => limits::decode::<v1::CallLegEvent>(payload, max_bytes).and_then(Input::try_from),
        TopicKind::CreditCommands => limits::decode::<v1::CreditCommand>(payload, max_bytes).and_then(Input::try_from),
        other => return Err(Refusal::new("invalid", format!("{other:?} is not an input topic"))),
    };
    converted.map_err(|e| Refusal::new(e.code(), e.to_string()))
}

/// Encodes an output: (topic, key, value).
pub fn encode_output(topics: &Topics, output: Output) -> (&str, String, Vec<u8>) {
    let (kind, key, value) = match output {
        Output::Usage(u) => (TopicKind::RatedUsage, u.tenant_id.to_string(), v1::RatedUsage::from(*u).encode_to_vec()),
        Output::Decision(d) => {
            (TopicKind::LegDecisions, d.tenant_id.to_string(), v1::LegDecision::from(d).encode_to_vec())
        }
        Output::Credit(c) => {
            (TopicKind::CreditEvents, c.tenant_id.to_string(), v1::CreditEvent::from(c).encode_to_vec())
        }
    };
    (&topics[kind], key, value)
}

/// Encodes a ledger movement (the debit trail): (topic, key, value).
pub fn encode_movement(topics: &Topics, movement: LedgerMovement) -> (&str, String, Vec<u8>) {
    let key = movement.tenant_id.to_string();
    (&topics[TopicKind::LedgerMovements], key, v1::LedgerMovement::from(movement).encode_to_vec())
}

/// How the values of a topic are shown as JSON (`tollgate tail`): a column of the registry.
pub type ToJson = fn(&[u8]) -> Result<serde_json::Value, String>;

/// A protobuf value as its proto3 JSON mapping.
pub fn json<M: Message + Default + serde::Serialize>(payload: &[u8]) -> Result<serde_json::Value, String> {
    let message = M::decode(payload).map_err(|e| e.to_string())?;
    serde_json::to_value(&message).map_err(|e| e.to_string())
}

/// A changelog value (JSON already).
pub fn state_json(payload: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

/// Decodes any tollgate topic's value to a JSON value (for `tollgate tail`).
pub fn to_json(kind: TopicKind, payload: &[u8]) -> Result<serde_json::Value, String> {
    (kind.def().to_json)(payload)
}
