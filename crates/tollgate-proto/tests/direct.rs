//! `direct::call_leg_event` against prost and `Input::try_from`: the same input or the same
//! refusal for every event, well-formed or not, and the direct reading taken for the events
//! call controllers send.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use proptest::prelude::*;
use tollgate_core::Input;
use tollgate_proto::limits::{self, DEFAULT_MAX_RECORD_BYTES};
use tollgate_proto::v1::{self, call_leg_event, leg_ended};
use tollgate_proto::{Error, Message, Timestamp, direct};

fn through_prost(bytes: &[u8], max: usize) -> Result<Input, Error> {
    limits::decode::<v1::CallLegEvent>(bytes, max).and_then(Input::try_from)
}

/// An answer, comparable: the input, or the refusal's code and message.
type Answer = Result<Input, (String, String)>;

/// The two paths' answers: read directly, through prost.
fn answers(bytes: &[u8], max: usize) -> (Answer, Answer) {
    let plain = |r: Result<Input, Error>| r.map_err(|e| (e.code().to_owned(), e.to_string()));
    (plain(direct::call_leg_event(bytes, max)), plain(through_prost(bytes, max)))
}

/// Ids as call controllers send them, and the ones the conversion refuses: empty, blank,
/// over the bound.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9-]{1,12}",
        1 => Just(String::new()),
        1 => Just(" \t".to_owned()),
        1 => Just("é".repeat(129)),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("+14165550123".to_owned()),
        Just("+44 20 7946 0958".to_owned()),
        Just("+4930123456".to_owned()),
        Just("+81312345678".to_owned()),
        Just("+999".to_owned()),
        Just("0044207946".to_owned()),
        "\\+[1-9][0-9]{6,14}",
    ]
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop_oneof![
        8 => (1_700_000_000i64..1_900_000_000, 0i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
        1 => Just(None),
        1 => (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
    ]
}

fn body() -> impl Strategy<Value = Option<call_leg_event::Body>> {
    let started = (-1i32..7, number(), number()).prop_map(|(kind, bridge_number, remote_number)| {
        Some(call_leg_event::Body::Started(v1::LegStarted { kind, bridge_number, remote_number }))
    });
    let interim = any::<u32>()
        .prop_map(|elapsed_seconds| Some(call_leg_event::Body::Interim(v1::LegInterim { elapsed_seconds })));
    let duration = prop_oneof![
        any::<u32>().prop_map(|s| Some(leg_ended::Duration::ConnectedSeconds(s))),
        timestamp().prop_map(|t| t.map(leg_ended::Duration::EndedAt)),
        Just(None),
    ];
    let ended = (duration, -1i32..8)
        .prop_map(|(duration, cause)| Some(call_leg_event::Body::Ended(v1::LegEnded { duration, cause })));
    prop_oneof![4 => started, 1 => interim, 4 => ended, 1 => Just(None)]
}

fn event() -> impl Strategy<Value = v1::CallLegEvent> {
    ([id(), id(), id(), id(), id(), id()], timestamp(), body()).prop_map(|(ids, occurred_at, body)| {
        let [event_id, tenant_id, conference_id, call_id, leg_id, organizer_id] = ids;
        v1::CallLegEvent { event_id, tenant_id, conference_id, call_id, leg_id, organizer_id, occurred_at, body }
    })
}

/// What a producer may do to the bytes besides a plain encoding: a field sent again (merged or
/// replaced by prost), a field this release does not know, bytes cut short or altered.
#[derive(Debug, Clone)]
enum Change {
    None,
    Append(Vec<u8>),
    Truncate(usize),
    Flip(usize, u8),
}

fn change() -> impl Strategy<Value = Change> {
    let field = prop_oneof![
        // A second body, started, interim or ended (field 10, 11, 12).
        Just(vec![0x52, 0x02, 0x08, 0x03]),
        Just(vec![0x5a, 0x02, 0x08, 0x3c]),
        Just(vec![0x62, 0x02, 0x18, 0x01]),
        // occurred_at again (field 7), only its nanos.
        Just(vec![0x3a, 0x02, 0x10, 0x05]),
        // event_id again (field 1): "x".
        Just(vec![0x0a, 0x01, b'x']),
        // Unknown fields: a varint (20), a fixed64 (21), a length-delimited (22), a group (23).
        Just(vec![0xa0, 0x01, 0x7f]),
        Just(vec![0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]),
        Just(vec![0xb2, 0x01, 0x01, 0x00]),
        Just(vec![0xbb, 0x01, 0xbc, 0x01]),
        // A known field with the wrong wire type: event_id as a varint.
        Just(vec![0x08, 0x01]),
        prop::collection::vec(any::<u8>(), 1..12),
    ];
    prop_oneof![
        4 => Just(Change::None),
        3 => field.prop_map(Change::Append),
        1 => any::<usize>().prop_map(Change::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Change::Flip(at, b)),
    ]
}

fn changed(mut bytes: Vec<u8>, change: &Change) -> Vec<u8> {
    match change {
        Change::None => {}
        Change::Append(more) => bytes.extend_from_slice(more),
        Change::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
        Change::Flip(at, b) if !bytes.is_empty() => {
            let at = at % bytes.len();
            bytes[at] ^= b;
        }
        Change::Flip(..) => {}
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn an_event_read_directly_is_what_prost_and_the_conversion_make_of_it(e in event(), c in change()) {
        let bytes = changed(e.encode_to_vec(), &c);
        let (read, decoded) = answers(&bytes, DEFAULT_MAX_RECORD_BYTES);
        prop_assert_eq!(read, decoded);
    }
}

fn leg_started(remote_number: &str) -> v1::CallLegEvent {
    v1::CallLegEvent {
        event_id: "ev-1".into(),
        tenant_id: "contoso".into(),
        conference_id: "conf-1".into(),
        call_id: "call-1".into(),
        leg_id: "leg-1".into(),
        organizer_id: "alice".into(),
        occurred_at: Some(Timestamp { seconds: 1_794_268_800, nanos: 0 }),
        body: Some(call_leg_event::Body::Started(v1::LegStarted {
            kind: v1::LegKind::DialOut as i32,
            bridge_number: String::new(),
            remote_number: remote_number.into(),
        })),
    }
}

/// A second `started` is merged into the first by prost: its kind replaced, the first's
/// number kept. The direct reading leaves that to prost, and the answer is prost's.
#[test]
fn a_body_sent_twice_is_merged_as_prost_merges_it() {
    let mut bytes = leg_started("+14165550123").encode_to_vec();
    // started again (field 10) with kind = call me at (4) only.
    bytes.extend_from_slice(&[0x52, 0x02, 0x08, 0x04]);
    let Input::Leg(event) = direct::call_leg_event(&bytes, DEFAULT_MAX_RECORD_BYTES).unwrap() else {
        panic!("a call-leg event")
    };
    let tollgate_core::LegBody::Started(started) = event.body else { panic!("started") };
    assert_eq!(started.kind, tollgate_core::LegKind::CallMeAt);
    assert_eq!(started.remote_number.map(|n| n.to_string()), Some("+14165550123".to_owned()));
}

/// A phone number sent twice, the first time not UTF-8: prost checks every occurrence and
/// refuses the record, and so does the direct reading (it leaves a repeated number to prost).
/// Sent twice and valid, the last one counts on both paths.
#[test]
fn a_number_sent_twice_is_read_as_prost_reads_it() {
    let started = |numbers: &[&[u8]]| {
        let mut body = vec![0x08, v1::LegKind::DialOut as u8];
        for number in numbers {
            body.extend_from_slice(&[0x1a, number.len() as u8]);
            body.extend_from_slice(number);
        }
        let mut bytes = v1::CallLegEvent { body: None, ..leg_started("") }.encode_to_vec();
        bytes.extend_from_slice(&[0x52, body.len() as u8]);
        bytes.extend_from_slice(&body);
        bytes
    };
    let (read, decoded) = answers(&started(&[&[0xff], b"+14165550123"]), DEFAULT_MAX_RECORD_BYTES);
    assert_eq!(read.as_ref().map_err(|(code, _)| code.as_str()), Err("decode"), "{read:?}");
    assert_eq!(read, decoded);
    let (read, decoded) = answers(&started(&[b"+442071838750", b"+14165550123"]), DEFAULT_MAX_RECORD_BYTES);
    let Ok(Input::Leg(event)) = &read else { panic!("rated: {read:?}") };
    let tollgate_core::LegBody::Started(started) = &event.body else { panic!("started") };
    assert_eq!(started.remote_number.map(|n| n.to_string()), Some("+14165550123".to_owned()));
    assert_eq!(read, decoded);
}

/// The refusals keep their codes and messages: too large, a bound, a missing field.
#[test]
fn a_refused_event_is_refused_as_before() {
    let bytes = leg_started("+14165550123").encode_to_vec();
    let error = direct::call_leg_event(&bytes, 10).unwrap_err();
    assert_eq!(error.code(), "too_large");
    assert_eq!(error.to_string(), format!("a value of {} bytes, more than the 10 allowed", bytes.len()));

    let long = v1::CallLegEvent { leg_id: "l".repeat(300), ..leg_started("") };
    let error = direct::call_leg_event(&long.encode_to_vec(), DEFAULT_MAX_RECORD_BYTES).unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        ("too_long", "legId is 300 bytes long, more than the 256 allowed")
    );

    let no_time = v1::CallLegEvent { occurred_at: None, ..leg_started("") };
    let error = direct::call_leg_event(&no_time.encode_to_vec(), DEFAULT_MAX_RECORD_BYTES).unwrap_err();
    assert_eq!((error.code(), error.to_string().as_str()), ("invalid", "missing field occurredAt"));
}

/// The ids are checked as UTF-8 together and cut out of one text. An id that is not UTF-8 is
/// still refused as prost refuses it, alone or sent again after a valid one, and ids with
/// characters of several bytes, or with a field between them, are read as they are.
#[test]
fn ids_are_checked_as_utf8_as_prost_checks_them() {
    let event =
        v1::CallLegEvent { conference_id: "réunion-ü".into(), organizer_id: "añа".into(), ..leg_started("") };
    let bytes = event.encode_to_vec();
    let Input::Leg(read) = direct::call_leg_event(&bytes, DEFAULT_MAX_RECORD_BYTES).unwrap() else {
        panic!("a call-leg event")
    };
    assert_eq!((&*read.conference_id, &*read.organizer_id), ("réunion-ü", "añа"));
    assert_eq!(read.event_id.as_ref(), "ev-1");

    // call_id's second byte made 0xff: not UTF-8.
    let call = bytes.windows(6).position(|w| w == b"call-1").unwrap();
    let mut invalid = bytes.clone();
    invalid[call + 1] = 0xff;
    let (read, decoded) = answers(&invalid, DEFAULT_MAX_RECORD_BYTES);
    assert!(read.is_err(), "refused: {read:?}");
    assert_eq!(read, decoded);

    // A valid leg_id (field 5) sent again after the invalid one: prost checks both.
    let mut again = invalid.clone();
    again[call - 2] = 0x2a; // call_id's key (field 4) made leg_id's (field 5)
    again.extend_from_slice(&[0x2a, 0x05, b'l', b'e', b'g', b'-', b'2']);
    let (read, decoded) = answers(&again, DEFAULT_MAX_RECORD_BYTES);
    assert!(read.is_err(), "refused: {read:?}");
    assert_eq!(read, decoded);

    // The ids after the time: the bytes between them are not UTF-8, each id is checked alone.
    let mut moved = v1::CallLegEvent { organizer_id: String::new(), ..event }.encode_to_vec();
    moved.extend_from_slice(&[0x32, 0x03, b'b', b'o', b'b']);
    let Input::Leg(read) = direct::call_leg_event(&moved, DEFAULT_MAX_RECORD_BYTES).unwrap() else {
        panic!("a call-leg event")
    };
    assert_eq!((&*read.organizer_id, &*read.conference_id), ("bob", "réunion-ü"));
    let (read, decoded) = answers(&moved, DEFAULT_MAX_RECORD_BYTES);
    assert_eq!(read, decoded);
}
