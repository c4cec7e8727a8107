//! Writes the seeds, `fuzz/seeds/<target>/`: the sample in `examples/` (every kind of input,
//! and the reference data trimmed to a few rows per rate table) as protobuf and as JSON, plus
//! the hostile cases the bounds are for, each under a name that says what it is. Run from the
//! repository root: `cargo run --manifest-path fuzz/Cargo.toml --bin seeds`. The fuzzers start
//! from them and keep what they find in `fuzz/corpus/<target>/` (minimised, named by hash);
//! the seeds themselves are never minimised away.

use std::path::Path;

use tollgate_proto::{Message, v1};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("fuzz/seeds");
    let mut protobuf: Vec<(String, Vec<u8>)> = Vec::new();
    let mut json: Vec<(String, Vec<u8>)> = Vec::new();
    let with = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();

    // One line of each shape from the sample's events: the first of each body kind.
    let events = std::fs::read_to_string("examples/events.jsonl")?;
    let mut shapes = std::collections::BTreeSet::new();
    for line in events.lines() {
        let record: v1::InputRecord = serde_json::from_str(line)?;
        let shape = match &record.record {
            Some(v1::input_record::Record::CallLeg(e)) => {
                format!("leg-{:?}", e.body.as_ref().map(std::mem::discriminant))
            }
            Some(v1::input_record::Record::CreditCommand(c)) => {
                format!("credit-{:?}", c.body.as_ref().map(std::mem::discriminant))
            }
            None => "none".into(),
        };
        if !shapes.insert(shape) {
            continue;
        }
        let n = shapes.len();
        json.push((format!("seed-events-{n:02}"), with(0, line.as_bytes())));
        match record.record {
            Some(v1::input_record::Record::CallLeg(e)) => {
                protobuf.push((format!("seed-call-leg-{n:02}"), with(0, &e.encode_to_vec())))
            }
            Some(v1::input_record::Record::CreditCommand(c)) => {
                protobuf.push((format!("seed-credit-command-{n:02}"), with(1, &c.encode_to_vec())))
            }
            None => {}
        }
    }

    // The reference data, three rows per rate table.
    let mut reference: v1::ReferenceData = serde_json::from_str(&std::fs::read_to_string("examples/reference.json")?)?;
    for card in &mut reference.rate_cards {
        for version in &mut card.versions {
            version.dial_in.truncate(3);
            version.dial_out.truncate(3);
        }
    }
    for (i, t) in reference.tenants.iter().enumerate() {
        protobuf.push((format!("seed-tenant-{i}"), with(2, &t.encode_to_vec())));
    }
    for (i, u) in reference.users.iter().enumerate().take(5) {
        protobuf.push((format!("seed-user-{i}"), with(3, &u.encode_to_vec())));
    }
    for (i, c) in reference.rate_cards.iter().enumerate() {
        protobuf.push((format!("seed-rate-card-{i}"), with(4, &c.encode_to_vec())));
    }
    json.push(("seed-reference".into(), with(1, serde_json::to_string_pretty(&reference)?.as_bytes())));

    // Hostile: nesting past prost's recursion limit (unknown groups), an id over its bound,
    // thresholds and versions over their counts.
    let mut nested = vec![(15 << 3) | 3; 120];
    nested.extend(std::iter::repeat_n((15 << 3) | 4, 120));
    protobuf.push(("hostile-nested-groups".into(), with(0, &nested)));
    let long_id = v1::CallLegEvent { event_id: "e".repeat(300), ..Default::default() };
    protobuf.push(("hostile-long-event-id".into(), with(0, &long_id.encode_to_vec())));
    let thresholds = v1::Tenant { low_balance_thresholds: vec!["1".into(); 101], ..Default::default() };
    protobuf.push(("hostile-thresholds".into(), with(2, &thresholds.encode_to_vec())));
    let versions = v1::RateCard { versions: vec![v1::RateCardVersion::default(); 1001], ..Default::default() };
    protobuf.push(("hostile-versions".into(), with(4, &versions.encode_to_vec())));
    let deep_json = format!("{}{}", "[".repeat(200), "]".repeat(200));
    json.push(("hostile-deep-array".into(), with(0, deep_json.as_bytes())));

    for (dir, entries) in [("protobuf", protobuf), ("json", json)] {
        std::fs::create_dir_all(root.join(dir))?;
        for (name, bytes) in entries {
            std::fs::write(root.join(dir).join(name), bytes)?;
        }
    }
    Ok(())
}
