//! The sample input in `examples/` (written by `examples/gen_sample.py`) parses with the
//! generated types, is in canonical proto3 JSON form, and holds the cases it claims to.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use tollgate_proto::Message;
use tollgate_proto::v1::{CallLegEvent, InputRecord, LegKind, ReferenceData, call_leg_event, input_record};

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn reference() -> ReferenceData {
    serde_json::from_str(&example("reference.json")).expect("reference.json is a ReferenceData")
}

fn records() -> Vec<(String, InputRecord)> {
    example("events.jsonl")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let record =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("events.jsonl line {}: {e}\n{line}", i + 1));
            (line.to_owned(), record)
        })
        .collect()
}

/// The first place where two JSON documents differ, as a JSON-pointer-like path.
fn first_difference(left: &Value, right: &Value, path: &str) -> Option<String> {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let keys: BTreeSet<_> = l.keys().chain(r.keys()).collect();
            keys.into_iter().find_map(|k| match (l.get(k), r.get(k)) {
                (Some(a), Some(b)) => first_difference(a, b, &format!("{path}/{k}")),
                (a, b) => Some(format!("{path}/{k}: {a:?} != {b:?}")),
            })
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => {
            l.iter().zip(r).enumerate().find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}/{i}")))
        }
        _ if left == right => None,
        _ => Some(format!("{path}: {left} != {right}")),
    }
}

fn call_legs(records: &[(String, InputRecord)]) -> impl Iterator<Item = &CallLegEvent> {
    records.iter().filter_map(|(_, r)| match &r.record {
        Some(input_record::Record::CallLeg(event)) => Some(event),
        _ => None,
    })
}

#[test]
fn reference_parses_and_is_canonical() {
    let text = example("reference.json");
    let reference = reference();
    let original: Value = serde_json::from_str(&text).expect("JSON");
    let back = serde_json::to_value(&reference).expect("serialize");
    if let Some(difference) = first_difference(&back, &original, "") {
        panic!("reference.json is not in canonical proto3 JSON form: {difference}");
    }
    let decoded = ReferenceData::decode(reference.encode_to_vec().as_slice()).expect("protobuf decode");
    assert_eq!(decoded, reference);
}

#[test]
fn reference_is_consistent() {
    let reference = reference();
    // The sample as `examples/gen_sample.py` writes it.
    assert_eq!((reference.tenants.len(), reference.users.len()), (5, 17));

    let first = &reference.rate_cards[0].versions[0];
    assert_eq!(first.dial_out.len(), 506, "dial-out rows");

    let cards: BTreeMap<_, _> = reference.rate_cards.iter().map(|c| (c.rate_card_id.as_str(), c)).collect();
    for tenant in &reference.tenants {
        let card = cards[tenant.rate_card_id.as_str()];
        assert_eq!(card.currency, tenant.currency, "tenant {}", tenant.tenant_id);
    }
    let tenants: BTreeSet<_> = reference.tenants.iter().map(|t| t.tenant_id.as_str()).collect();
    for user in &reference.users {
        assert!(tenants.contains(user.tenant_id.as_str()), "user {}", user.user_id);
    }
    for card in &reference.rate_cards {
        let mut effective = Vec::new();
        for version in &card.versions {
            effective.push(version.effective_from.expect("effectiveFrom"));
            let prefixes: BTreeSet<_> = version.dial_out.iter().map(|r| &r.prefix).collect();
            assert_eq!(prefixes.len(), version.dial_out.len(), "duplicate dial-out prefix");
            for row in &version.dial_out {
                assert!(row.prefix.bytes().all(|b| b.is_ascii_digit()), "{}", row.prefix);
                let price = row.price.as_ref().expect("price");
                let per_minute: tollgate_core::Money = price.per_minute.parse().unwrap();
                assert!(!per_minute.is_negative(), "{}", price.per_minute);
            }
            // Deliberately uncovered destinations.
            for uncovered in ["882", "688", "674"] {
                assert!(
                    !version.dial_out.iter().any(|r| uncovered.starts_with(&r.prefix)),
                    "{uncovered} is covered in {} {}",
                    card.rate_card_id,
                    version.version
                );
            }
        }
        assert!(effective.windows(2).all(|w| w[0] < w[1]), "versions out of order");
    }
}

#[test]
fn every_event_line_parses_and_is_canonical() {
    let records = records();
    assert_eq!(records.len(), 543, "lines");
    for (line, record) in &records {
        let back = serde_json::to_string(record).expect("serialize");
        assert!(&back == line, "not canonical:\n  file: {line}\n  back: {back}");
        let decoded = InputRecord::decode(record.encode_to_vec().as_slice()).expect("protobuf decode");
        assert_eq!(&decoded, record);
    }
}

#[test]
fn every_number_is_valid_e164() {
    let records = records();
    let mut numbers = BTreeSet::new();
    for event in call_legs(&records) {
        if let Some(call_leg_event::Body::Started(started)) = &event.body {
            numbers.extend([&started.bridge_number, &started.remote_number]);
        }
    }
    numbers.remove(&String::new());
    assert_eq!(numbers.len(), 87);
    for number in numbers {
        let parsed = phonenumber::parse(None, number).unwrap_or_else(|e| panic!("{number}: {e}"));
        assert!(parsed.is_valid(), "{number} is not a valid number");
        assert_eq!(number, &parsed.format().mode(phonenumber::Mode::E164).to_string());
    }
}

#[test]
fn events_cover_the_special_cases() {
    let reference = reference();
    let records = records();
    let tenants: BTreeSet<_> = reference.tenants.iter().map(|t| t.tenant_id.as_str()).collect();

    let kinds: BTreeSet<_> = call_legs(&records)
        .filter_map(|e| match &e.body {
            Some(call_leg_event::Body::Started(s)) => Some(s.kind()),
            _ => None,
        })
        .collect();
    for kind in [LegKind::DialInToll, LegKind::DialInTollFree, LegKind::DialOut, LegKind::CallMeAt, LegKind::Voip] {
        assert!(kinds.contains(&kind), "no {kind:?} leg");
    }

    // Same event id twice: once with identical text, once with different content.
    let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (line, record) in &records {
        if let Some(input_record::Record::CallLeg(event)) = &record.record {
            by_id.entry(event.event_id.as_str()).or_default().push(line);
        }
    }
    let repeated: Vec<_> = by_id.values().filter(|lines| lines.len() > 1).collect();
    assert!(repeated.iter().any(|lines| lines[0] == lines[1]), "no exact duplicate");
    assert!(repeated.iter().any(|lines| lines[0] != lines[1]), "no conflicting duplicate");

    assert!(call_legs(&records).any(|e| !tenants.contains(e.tenant_id.as_str())), "no event for an unknown tenant");

    let started: BTreeSet<_> = call_legs(&records)
        .filter(|e| matches!(e.body, Some(call_leg_event::Body::Started(_))))
        .map(|e| (&e.tenant_id, &e.leg_id))
        .collect();
    assert!(
        call_legs(&records)
            .any(|e| matches!(e.body, Some(call_leg_event::Body::Ended(_)))
                && !started.contains(&(&e.tenant_id, &e.leg_id))),
        "no ended-without-started leg"
    );

    // Per-tenant chronological order.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (_, record) in &records {
        let (tenant, at) = match &record.record {
            Some(input_record::Record::CallLeg(e)) => (&e.tenant_id, e.occurred_at),
            Some(input_record::Record::CreditCommand(c)) => (&c.tenant_id, c.occurred_at),
            None => panic!("empty record"),
        };
        let at = at.expect("occurredAt").seconds;
        let previous = last.insert(tenant.clone(), at).unwrap_or(i64::MIN);
        assert!(previous <= at, "{tenant}: records out of order");
    }
}
