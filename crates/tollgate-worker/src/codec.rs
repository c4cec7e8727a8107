//! Record values <-> core values. Inputs and outputs are protobuf (`tollgate.v1`); changelog
//! values are JSON (see [`crate::changelog`]), readable with `tollgate tail`.

use tollgate_core::{Input, LedgerMovement, Output};
use tollgate_proto::{Message, v1};

use crate::config::TopicKind;
use crate::record::Record;

/// Why an input record was refused (goes to the dead-letter topic).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Refusal {
    /// Stable code: `decode`, `invalid`, `key_mismatch`, `wrong_partition`, or a core code.
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

/// Decodes an input value of the given topic kind.
pub fn decode_input(kind: TopicKind, payload: Option<&[u8]>) -> Result<Input, Refusal> {
    let payload = payload.ok_or_else(|| Refusal::new("decode", "empty value (tombstone) on an input topic"))?;
    let converted = match kind {
        TopicKind::CallLegs => {
            v1::CallLegEvent::decode(payload).map_err(tollgate_proto::Error::from).and_then(Input::try_from)
        }
        TopicKind::CreditCommands => {
            v1::CreditCommand::decode(payload).map_err(tollgate_proto::Error::from).and_then(Input::try_from)
        }
        other => return Err(Refusal::new("invalid", format!("{other:?} is not an input topic"))),
    };
    converted.map_err(|e| Refusal::new(e.code(), e.to_string()))
}

/// Appends an output's key (its tenant id), then its encoded value, to `buf`: returns its
/// topic and the key's length.
pub fn encode_output(output: Output, buf: &mut Vec<u8>) -> (TopicKind, usize) {
    let (kind, tenant) = match &output {
        Output::Usage(u) => (TopicKind::RatedUsage, &u.tenant_id),
        Output::Decision(d) => (TopicKind::LegDecisions, &d.tenant_id),
        Output::Credit(c) => (TopicKind::CreditEvents, &c.tenant_id),
    };
    let key = tenant.as_str().len();
    buf.extend_from_slice(tenant.as_str().as_bytes());
    match output {
        Output::Usage(u) => append(&v1::RatedUsage::from(*u), buf),
        Output::Decision(d) => append(&v1::LegDecision::from(d), buf),
        Output::Credit(c) => append(&v1::CreditEvent::from(c), buf),
    }
    (kind, key)
}

/// Appends a ledger movement's (the debit trail's) key, then its encoded value, to `buf`:
/// returns the key's length. Its topic is [`TopicKind::LedgerMovements`].
pub fn encode_movement(movement: LedgerMovement, buf: &mut Vec<u8>) -> usize {
    let key = movement.tenant_id.as_str().len();
    buf.extend_from_slice(movement.tenant_id.as_str().as_bytes());
    append(&v1::LedgerMovement::from(movement), buf);
    key
}

/// Appends `message`'s encoding to `buf`.
pub fn append(message: &impl Message, buf: &mut Vec<u8>) {
    buf.reserve(message.encoded_len());
    // A `Vec` grows as needed: encoding into one cannot run out of room, its only error.
    let _ = message.encode(buf);
}

/// How the values of a topic are shown as JSON (`tollgate tail`): a column of the registry.
pub type ToJson = fn(&[u8]) -> Result<serde_json::Value, String>;

/// A protobuf value as its proto3 JSON mapping.
pub fn json<M: Message + Default + serde::Serialize>(payload: &[u8]) -> Result<serde_json::Value, String> {
    let message = M::decode(payload).map_err(|e| e.to_string())?;
    serde_json::to_value(&message).map_err(|e| e.to_string())
}

/// A value that is JSON already (the changelog's, the ownership announcements).
pub fn state_json(payload: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

/// Decodes any tollgate topic's value to a JSON value (for `tollgate tail`).
pub fn to_json(kind: TopicKind, payload: &[u8]) -> Result<serde_json::Value, String> {
    (kind.def().to_json)(payload)
}
