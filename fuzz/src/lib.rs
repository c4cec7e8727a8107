//! What the fuzz targets run, on any bytes: the decoding the worker does for each topic it
//! reads, and the parsing the offline rater does of its JSON. Shared by the libFuzzer targets
//! (`fuzz_targets/`, nightly) and by a stable test that replays the corpus
//! (`crates/tollgate-proto/tests/fuzz_corpus.rs` includes this file), so CI checks every
//! corpus entry on every run.
//!
//! Besides "never panics", each input must keep these properties:
//! - a value the worker accepts decodes to a message that encodes and decodes to itself;
//! - a refusal has a stable code (`[a-z_]+`) and a message of bounded length (no input is
//!   echoed whole into a dead letter's message);
//! - a call-leg event read directly from its bytes (the worker's path) is what prost and the
//!   conversion make of it: the same input, or the same refusal;
//! - a JSON record the rater accepts writes as JSON that reads back to the same record.

use tollgate_core::{Input, RateCard, Reference, Tenant, User};
use tollgate_proto::limits::{self, DEFAULT_MAX_RECORD_BYTES};
use tollgate_proto::{Error, Message, direct, v1};

/// The longest refusal message any input may produce: error messages quote ids and values,
/// which the bounds keep short.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The topic a protobuf input is read from: the first byte modulo the number of topics.
pub const PROTOBUF_TOPICS: [&str; 5] = ["call_legs", "credit_commands", "tenants", "users", "rate_cards"];

/// Decodes `data[1..]` as the worker decodes a value of the topic `data[0]` picks.
pub fn protobuf(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    match selector as usize % PROTOBUF_TOPICS.len() {
        0 => {
            value::<v1::CallLegEvent, Input>(payload);
            read_directly_as_through_prost(payload);
        }
        1 => value::<v1::CreditCommand, Input>(payload),
        2 => value::<v1::Tenant, Tenant>(payload),
        3 => value::<v1::User, User>(payload),
        _ => value::<v1::RateCard, RateCard>(payload),
    }
}

/// The worker's path for one value: size, decode, bounds and conversion (the bounds run
/// inside the conversion), as `codec::decode_input` and `reference::Tables::apply` do.
fn value<M, T>(payload: &[u8])
where
    M: Message + Default + PartialEq + Clone + limits::Bounded,
    T: TryFrom<M, Error = Error>,
{
    let message = match limits::decode::<M>(payload, DEFAULT_MAX_RECORD_BYTES) {
        Ok(message) => message,
        Err(error) => return refused(&error),
    };
    let again = M::decode(message.encode_to_vec().as_slice()).expect("a decoded message re-encodes");
    assert!(again == message, "a decoded message encodes and decodes to itself");
    if let Err(error) = T::try_from(message) {
        refused(&error);
    }
}

/// A call-leg event read directly (`direct::call_leg_event`, the worker's path) comes out as
/// prost and `Input::try_from` make it: the same input, or the same refusal.
fn read_directly_as_through_prost(payload: &[u8]) {
    let prost = limits::decode::<v1::CallLegEvent>(payload, DEFAULT_MAX_RECORD_BYTES).and_then(Input::try_from);
    match (direct::call_leg_event(payload, DEFAULT_MAX_RECORD_BYTES), prost) {
        (Ok(read), Ok(decoded)) => assert!(read == decoded, "{read:?} read directly, {decoded:?} through prost"),
        (Err(read), Err(decoded)) => assert!(
            (read.code(), read.to_string()) == (decoded.code(), decoded.to_string()),
            "refused as {read} directly, as {decoded} through prost"
        ),
        (read, decoded) => panic!("{read:?} read directly, {decoded:?} through prost"),
    }
}

fn refused(error: &Error) {
    let code = error.code();
    assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "code {code:?}");
    let message = error.to_string();
    assert!(message.len() <= MAX_MESSAGE_BYTES, "a refusal message of {} bytes", message.len());
}

/// Parses `data[1..]` as the offline rater does: an events line (`data[0]` even) or a
/// reference document (odd). The rater refuses text that is not UTF-8 before parsing.
pub fn json(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    if selector % 2 == 0 { events_line(text) } else { reference_document(text) }
}

/// `tollgate rate`'s reading of one events line.
fn events_line(line: &str) {
    let record = match serde_json::from_str::<v1::InputRecord>(line) {
        Ok(record) => record,
        Err(_) => return,
    };
    let written = serde_json::to_string(&record).expect("a parsed record writes as JSON");
    let again: v1::InputRecord = serde_json::from_str(&written).expect("written JSON reads back");
    assert!(again == record, "a parsed record writes and reads back to itself: {written}");
    if let Err(error) = Input::try_from(record) {
        refused(&error);
    }
}

/// `tollgate rate --reference`'s reading of a reference document, and the line of a refused
/// object (`tollgate_proto::locate`, which scans the text itself).
fn reference_document(text: &str) {
    let data = match serde_json::from_str::<v1::ReferenceData>(text) {
        Ok(data) => data,
        Err(_) => return,
    };
    let written = serde_json::to_string(&data).expect("parsed reference data writes as JSON");
    let again: v1::ReferenceData = serde_json::from_str(&written).expect("written JSON reads back");
    assert!(again == data, "parsed reference data writes and reads back to itself: {written}");
    if let Err(error) = Reference::try_from(data) {
        refused(&error);
        if let Some(line) = error.path().and_then(|path| tollgate_proto::locate::line_of(text, path)) {
            assert!(line >= 1 && line <= text.lines().count().max(1), "line {line} of the document");
        }
    }
}
