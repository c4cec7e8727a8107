//! The rating worker through real rdkafka clients against librdkafka's mock cluster.
//!
//! The mock cluster neither stores transactional offsets nor honours read_committed, so these
//! tests check the worker's logic (routing, state, restore, rebalance, dead letters); the
//! delivery guarantees themselves need a real broker.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tollgate_core::Money;
use tollgate_proto::{Message as _, v1};
use tollgate_worker::ProcessingGuarantee;
use tollgate_worker::TopicKind;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

#[test]
fn rates_legs_end_to_end_through_kafka() {
    let env = Env::new(3, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("initech", "f2", "20.00", "EUR")]);
    let mut lines = dial_out("acme", "a1", "ann", US, 125, 0).to_vec(); // 3 min x 0.02 = 0.06
    lines.extend(dial_out("acme", "a2", "dom", GB, 60, 1)); // blocked by policy
    lines.extend(dial_out("initech", "i1", "ines", GB, 61, 2)); // 2 min x 0.05 = 0.10
    env.publish_inputs(&lines);

    let usages = env.usages(3);
    let charges: BTreeMap<&str, (&str, i32)> =
        usages.values().map(|u| (u.usage_id.as_str(), (u.charge.as_str(), u.outcome))).collect();
    let rated = v1::rated_usage::Outcome::Rated as i32;
    let blocked = v1::rated_usage::Outcome::Blocked as i32;
    assert_eq!(
        charges,
        BTreeMap::from([("acme/a1", ("0.06", rated)), ("acme/a2", ("0.00", blocked)), ("initech/i1", ("0.10", rated))])
    );
    assert_eq!(usages["acme/a1"].balance_after, "9.94");
    assert_eq!(usages["initech/i1"].currency, "EUR");

    let decisions = env.read(&env.config.topics[TopicKind::LegDecisions], 3);
    let mut kinds: Vec<String> = decisions
        .iter()
        .map(|(key, v, _, _)| {
            let d = v1::LegDecision::decode(v.as_slice()).unwrap();
            assert_eq!(key, &d.tenant_id, "outputs are keyed by tenant");
            d.decision_id
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec!["acme/a1/allow", "acme/a2/block", "initech/i1/allow"]);

    let credit = env.read(&env.config.topics[TopicKind::CreditEvents], 2);
    let funded: Vec<String> =
        credit.iter().map(|(_, v, _, _)| v1::CreditEvent::decode(v.as_slice()).unwrap().credit_event_id).collect();
    assert!(funded.contains(&"acme/credit/1".to_string()) && funded.contains(&"initech/credit/1".to_string()));

    worker.stop();
    let states = env.states();
    assert_eq!(states["acme"].balance(), m("9.94"));
    assert_eq!(states["initech"].balance(), m("19.90"));
}

#[test]
fn sends_poison_records_to_the_dead_letter_topic_and_keeps_going() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let legs = &env.config.topics[TopicKind::CallLegs];
    let acme_partition = tollgate_worker::partitioner::partition_for(b"acme", 2);
    // Undecodable bytes, a key that is not the tenant, an unknown tenant, a tenant on the
    // wrong partition, then good records behind them.
    env.publisher.send_raw(legs, Some(b"acme"), Some(b"\xff\xff not protobuf")).unwrap();
    let [started, _] = dial_out("acme", "k1", "ann", US, 60, 0);
    let record: v1::InputRecord = serde_json::from_str(&started).unwrap();
    let Some(v1::input_record::Record::CallLeg(event)) = record.record else { unreachable!() };
    let bytes = event.encode_to_vec();
    env.publisher.send_raw(legs, Some(b"globex"), Some(&bytes)).unwrap();
    env.publish_inputs(&dial_out("nobody", "n1", "ann", US, 60, 0));
    let wrong = 1 - acme_partition;
    let mut wrong_record = rdkafka::producer::BaseRecord::<[u8], [u8]>::to(legs).key(b"acme").payload(&bytes);
    wrong_record = wrong_record.partition(wrong);
    let raw: rdkafka::producer::BaseProducer = tollgate_worker::kafka::base(&env.config).create().unwrap();
    raw.send(wrong_record).map_err(|(e, _)| e).unwrap();
    rdkafka::producer::Producer::flush(&raw, Duration::from_secs(10)).unwrap();

    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "g1", "ann", US, 60, 1));
    env.read(&env.config.topics[TopicKind::DeadLetter], 5);
    // The partition kept moving: the good leg behind the poison was rated.
    let usages = env.usages(1);
    assert_eq!(usages["acme/g1"].charge, "0.02");
    worker.stop();
    // Each poison record dead-lettered once (read to the end, after the worker stopped: a
    // second letter for a record would show), each naming its own place in the input.
    let dead = env.read_to_end(&env.config.topics[TopicKind::DeadLetter]);
    let mut letters: Vec<(String, i32, i64)> = dead
        .iter()
        .map(|(_, v, _, _)| {
            let d = v1::DeadLetter::decode(v.as_deref().unwrap()).unwrap();
            assert_eq!(d.source_topic, *legs);
            (d.error_code, d.source_partition, d.source_offset)
        })
        .collect();
    letters.sort();
    let codes: Vec<&str> = letters.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(codes, vec!["decode", "key_mismatch", "unknown_tenant", "unknown_tenant", "wrong_partition"]);
    let (decode, wrong_partition) = (&letters[0], &letters[4]);
    assert_eq!((decode.1, decode.2), (acme_partition, 0), "the undecodable record is acme's partition's first");
    assert_eq!(wrong_partition.1, wrong);
    let places: std::collections::BTreeSet<(i32, i64)> = letters.iter().map(|(_, p, o)| (*p, *o)).collect();
    assert_eq!(places.len(), 5, "two letters name one record: {letters:?}");
}

/// A leg's started event, decoded from the JSON the helpers write.
fn started_event(tenant: &str, leg: &str, minute: u32) -> v1::CallLegEvent {
    let [started, _] = dial_out(tenant, leg, "ann", US, 60, minute);
    let record: v1::InputRecord = serde_json::from_str(&started).unwrap();
    let Some(v1::input_record::Record::CallLeg(event)) = record.record else { unreachable!() };
    event
}

/// Hostile records cost bounded memory and end in the dead letters with their exact reason:
/// a value over `max_record_bytes` (never decoded, its first 1024 bytes kept), an id over its
/// bound, and nesting past
/// prost's recursion limit. A field sent thousands of times within the size bound is harmless:
/// decoded as its last occurrence and rated. The partition moves on behind them.
#[test]
fn hostile_records_go_to_the_dead_letters_with_their_reason() {
    let mut env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.config.max_record_bytes = 4096;
    env.publish_reference(REFERENCE);
    let legs = env.config.topics[TopicKind::CallLegs].clone();

    // Offset 0: a valid event padded with an unknown field to 5000 bytes.
    let mut oversize = started_event("acme", "h1", 0).encode_to_vec();
    let padding = 5000 - oversize.len() - 4;
    // Field 99, length-delimited: its tag and its length are two varint bytes each.
    oversize.extend([0x9a, 0x06, 0x80 | (padding & 0x7f) as u8, (padding >> 7) as u8]);
    oversize.resize(5000, b'x');
    // Offset 1: an event id of 300 bytes.
    let long_id = v1::CallLegEvent { event_id: "e".repeat(300), ..started_event("acme", "h1", 0) };
    // Offset 2: 200 groups nested in an unknown field (15), each a start-group tag.
    let mut nested = vec![(15 << 3) | 3; 200];
    nested.extend(std::iter::repeat_n((15 << 3) | 4, 200));
    for payload in [oversize.clone(), long_id.encode_to_vec(), nested] {
        env.publisher.send_raw(&legs, Some(b"acme"), Some(&payload)).unwrap();
    }

    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    // Offset 3: the event id sent 1000 times before the event itself (3000 bytes of them):
    // the last occurrence counts, and the leg is rated.
    let mut repeated = Vec::new();
    for _ in 0..1000 {
        repeated.extend([0x0a, 1, b'x']); // field 1 (eventId), length 1, "x"
    }
    repeated.extend(started_event("acme", "h2", 1).encode_to_vec());
    assert!(repeated.len() < 4096);
    env.publisher.send_raw(&legs, Some(b"acme"), Some(&repeated)).unwrap();
    let [_, ended] = dial_out("acme", "h2", "ann", US, 60, 1);
    env.publish_inputs(&[ended]);
    env.publish_inputs(&dial_out("acme", "g1", "ann", US, 60, 2));

    let dead = env.read(&env.config.topics[TopicKind::DeadLetter], 3);
    let mut reasons: Vec<(i64, String, String, usize)> = dead
        .iter()
        .map(|(key, v, _, _)| {
            let d = v1::DeadLetter::decode(v.as_slice()).unwrap();
            assert_eq!((key.as_str(), d.source_topic.as_str()), ("acme", legs.as_str()));
            (d.source_offset, d.error_code, d.message, d.original.len())
        })
        .collect();
    reasons.sort();
    let reasons: Vec<(i64, &str, &str, usize)> =
        reasons.iter().map(|(o, c, m, n)| (*o, c.as_str(), m.as_str(), *n)).collect();
    assert_eq!(
        reasons,
        vec![
            (0, "too_large", "a value of 5000 bytes, more than the 4096 allowed", 1024),
            (1, "too_long", "eventId is 300 bytes long, more than the 256 allowed", long_id.encoded_len()),
            (2, "decode", "undecodable protobuf: failed to decode Protobuf message: recursion limit reached", 400),
        ]
    );
    let usages = env.usages(2);
    assert_eq!((usages["acme/h2"].charge.as_str(), usages["acme/g1"].charge.as_str()), ("0.02", "0.02"));
    worker.stop();
}

/// An input near the size limit that is refused for its content, or one with a key of
/// hundreds of kilobytes, still makes a dead letter the producer can write: the value is kept
/// whole only up to 512 KiB (then its first 1024 bytes, the message says so), the key and
/// the message are cut. Written whole, either dead letter was over librdkafka's 1,000,000
/// bytes: the worker stopped, and every next owner of the partition stopped on it too.
#[test]
fn dead_letters_of_inputs_near_the_size_limit_are_bounded() {
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let legs = env.config.topics[TopicKind::CallLegs].clone();
    // A producer that allows what a Java client's default (1 MiB requests) does.
    let mut hostile = env.config.clone();
    hostile.librdkafka.insert("message.max.bytes".into(), "4000000".into());
    let hostile = tollgate_worker::publish::Publisher::new(&hostile).unwrap();
    // Offset 0: 1,040,000 undecodable bytes, under `max_record_bytes` (1 MiB).
    hostile.send_raw(&legs, Some(b"acme"), Some(&vec![0xff; 1_040_000])).unwrap();
    // Offset 1: a valid event under a key of 400,000 bytes that are not UTF-8.
    let long_key = vec![0xff; 400_000];
    hostile.send_raw(&legs, Some(&long_key), Some(&started_event("acme", "h1", 0).encode_to_vec())).unwrap();
    hostile.flush().unwrap();

    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "g1", "ann", US, 60, 2));
    let dead: Vec<(String, v1::DeadLetter)> = env
        .read(&env.config.topics[TopicKind::DeadLetter], 2)
        .into_iter()
        .map(|(key, v, _, _)| (key, v1::DeadLetter::decode(v.as_slice()).unwrap()))
        .collect();
    let (key, undecodable) = &dead[0];
    assert_eq!((key.as_str(), undecodable.source_offset, undecodable.error_code.as_str()), ("acme", 0, "decode"));
    assert_eq!(undecodable.original, vec![0xff; 1024]);
    assert!(
        undecodable.message.ends_with(" (a value of 1040000 bytes: its first 1024 kept)"),
        "{}",
        undecodable.message
    );
    let (key, mismatch) = &dead[1];
    assert_eq!((key.as_str(), mismatch.source_offset), ("\u{fffd}".repeat(256).as_str(), 1));
    assert_eq!(mismatch.error_code, "key_mismatch");
    let expected_key = format!("{:?}", "\u{fffd}".repeat(256));
    assert_eq!(
        mismatch.message,
        format!("record key {expected_key} (cut, 400000 bytes) is not the tenant id \"acme\"")
    );
    assert_eq!(mismatch.original, started_event("acme", "h1", 0).encode_to_vec());
    assert_eq!(env.usages(1)["acme/g1"].charge, "0.02");
    worker.stop();
}

/// A tenant's record holds its unspent lots: 4,000 of them with 250-byte ids make it over
/// 1,000,000 bytes, librdkafka's default `message.max.bytes`, which refused it before it was
/// sent (every batch of the partition failed on it). It is written and restored whole.
#[test]
fn a_tenant_with_thousands_of_lots_is_written_and_restored() {
    let mut env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.config.batch_size = 10_000;
    env.publish_reference(REFERENCE);
    let funds: Vec<String> = (0..4_000).map(|i| fund("acme", &format!("{i:0>250}"), "0.01", "USD")).collect();
    env.publish_inputs(&funds);
    let worker = env.start_worker();
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 60, 0)); // 0.02, from two lots
    assert_eq!(env.usages(1)["acme/a1"].balance_after, "39.98");
    worker.stop();
    let record = env.latest(&env.config.topics[TopicKind::State])["t/acme"].clone().unwrap();
    assert!(record.len() > 1_000_000, "the tenant record is {} bytes", record.len());
    let acme = &env.states()["acme"];
    assert_eq!((acme.balance(), acme.ledger.lots().count()), (m("39.98"), 3_998));
}

#[test]
fn restores_state_from_the_changelog_after_a_restart() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("globex", "f2", "5.00", "USD")]);
    let mut first = dial_out("acme", "a1", "ann", US, 600, 0).to_vec(); // 0.20
    first.extend(dial_out("globex", "g1", "gus", GB, 60, 1)); // 0.04
    env.publish_inputs(&first);
    env.usages(2);
    worker.stop();

    // A new worker instance: it must restore balances and dedup state, not start from zero.
    let mut second = dial_out("acme", "a2", "ann", US, 60, 2).to_vec(); // 0.02
    // A re-delivered event from before the restart: a duplicate, no effect.
    second.push(dial_out("acme", "a1", "ann", US, 600, 0)[1].clone());
    env.publish_inputs(&second);
    let worker = env.start_worker();
    let usages = env.usages(3);
    assert_eq!(usages["acme/a2"].balance_after, "9.78");
    worker.stop();
    let states = env.states();
    assert_eq!((states["acme"].balance(), states["globex"].balance()), (m("9.78"), m("4.96")));
    assert_eq!(states["acme"].totals.usage_charges, m("0.22"));
}

/// The currency a tenant's money is held in is part of its restored state: after a restart, a
/// reference update that changes the currency of a tenant holding money does not convert its
/// balance one for one; its inputs are dead-lettered `currency_changed` until the currency is
/// set back. (A restore that lost the pin would take the new currency and rate the leg.)
#[test]
fn the_currency_a_balance_is_held_in_survives_a_restart() {
    use tollgate_core::Catalog;
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    assert_eq!(env.usages(1)["acme/a1"].balance_after, "9.80");
    worker.stop();

    let acme_in = |currency: &str, card: &str| {
        format!(
            r#"{{"tenants": [{{"tenantId": "acme", "currency": "{currency}", "creditsEnabled": true, "rateCardId": "{card}"}}]}}"#
        )
    };
    env.publish_reference(&acme_in("EUR", "eur"));
    let worker = env.start_worker();
    let is_in = |code: &'static str| {
        move |t: &tollgate_worker::Tables| t.tenant("acme").is_some_and(|t| t.currency.code() == code)
    };
    assert!(worker.tables.wait_until(DEADLINE, is_in("EUR")), "the update did not reach the worker's tables");
    env.publish_inputs(&dial_out("acme", "a2", "ann", DE, 60, 1));
    let dead = env.read(&env.config.topics[TopicKind::DeadLetter], 2);
    let codes: Vec<String> =
        dead.iter().map(|(_, v, _, _)| v1::DeadLetter::decode(v.as_slice()).unwrap().error_code).collect();
    assert_eq!(codes, ["currency_changed", "currency_changed"]);

    env.publish_reference(&acme_in("USD", "usd"));
    assert!(worker.tables.wait_until(DEADLINE, is_in("USD")), "the update did not reach the worker's tables");
    env.publish_inputs(&dial_out("acme", "a3", "ann", US, 60, 2)); // 0.02
    let usages = env.usages(2);
    assert_eq!(usages["acme/a3"].balance_after, "9.78");
    assert!(!usages.contains_key("acme/a2"));
    worker.stop();
    let acme = &env.states()["acme"];
    assert_eq!((acme.balance(), acme.currency.map(|c| c.to_string())), (m("9.78"), Some("USD".into())));
}

/// An at-least-once owner that crashed after a batch's outputs went out, before its state was
/// committed, leaves the batch's manifest behind, naming the reference data it was rated
/// with. The next owner rates that batch as of it, even when a rate card changed in between:
/// the usage it repeats is the same record (`Env::usages` asserts that repeats are equal),
/// and the batches after it pay the new rate.
#[test]
fn a_batch_rated_again_after_a_rate_change_repeats_its_first_outputs() {
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let topics = &env.config.topics;
    let (legs, state) = (&topics[TopicKind::CallLegs], &topics[TopicKind::State]);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    assert_eq!(env.usages(1)["acme/a1"].balance_after, "9.80");
    worker.stop();
    let before_a2 = env.latest(state);
    let a2_from = env.read_to_end(legs).len() as i64;
    // The reference position the first attempt rates a2 with.
    let pin = env.reference_position();

    // The first attempt at a2: its usage is out (0.02 at the card's v1)...
    let worker = env.start_worker();
    env.publish_inputs(&dial_out("acme", "a2", "ann", US, 60, 1));
    let first = env.usages(2)["acme/a2"].clone();
    assert_eq!((first.charge.as_str(), first.rate_card_version.as_str()), ("0.02", "v1"));
    worker.stop();
    // ... and its state never committed: the changelog goes back to where a1 left it, with
    // the manifest of a2's batch, as the crashed owner left it.
    for (key, value) in env.latest(state) {
        match before_a2.get(&key) {
            Some(old) if *old == value => {}
            Some(old) => env.publisher.send_raw(state, Some(key.as_bytes()), old.as_deref()).unwrap(),
            None => env.publisher.send_raw(state, Some(key.as_bytes()), None).unwrap(),
        }
    }
    let manifest = serde_json::json!({ "ranges": { legs.as_str(): [a2_from, a2_from + 1] }, "reference": pin });
    env.publisher.send_raw(state, Some(b"m/0"), Some(manifest.to_string().as_bytes())).unwrap();
    env.publisher.flush().unwrap();
    env.rewind_group(&[(legs.clone(), 0), (topics[TopicKind::CreditCommands].clone(), 0)]);
    assert_eq!(env.states()["acme"].balance(), m("9.80"));

    // Meanwhile the card changed: US calls now cost 0.05 a minute (v2).
    env.publish_reference(
        r#"{"rateCards": [{"rateCardId": "usd", "currency": "USD", "versions": [{"version": "v2", "effectiveFrom": "2026-01-01T00:00:00Z",
          "dialOut": [{"prefix": "1", "price": {"perMinute": "0.05"}}, {"prefix": "44", "price": {"perMinute": "0.04"}}]}]}]}"#,
    );
    let worker = env.start_worker();
    env.publish_inputs(&dial_out("acme", "a3", "ann", US, 60, 2));
    let usages = env.usages(3);
    assert_eq!(usages["acme/a2"], first);
    let a3 = &usages["acme/a3"];
    assert_eq!((a3.charge.as_str(), a3.rate_card_version.as_str(), a3.balance_after.as_str()), ("0.05", "v2", "9.73"));
    worker.stop();
    assert_eq!(env.states()["acme"].balance(), m("9.73"));
}

/// The changelog's progress record, not the group's committed offsets, says what is rated: a
/// group whose offsets lag the changelog (its commit after a transaction is not waited for,
/// and a crash can lose it) hands the next owner records already rated, and they are dropped,
/// not rated again. Dead letters show it: a record refused twice would be dead-lettered twice.
#[test]
fn records_the_changelog_says_are_rated_are_not_rated_again_when_the_group_lags() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let topics = &env.config.topics;
    let (legs, credits, dead) =
        (&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands], &topics[TopicKind::DeadLetter]);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    env.publish_inputs(&dial_out("nobody", "n1", "ann", US, 60, 0)); // two dead letters
    env.usages(1);
    env.read(dead, 2);
    worker.stop();

    // Each partition's progress record names the end of each input it rated.
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in [legs, credits] {
        for (_, _, partition, offset) in env.read_to_end(topic) {
            ends.insert((topic.clone(), partition), offset + 1);
        }
    }
    let latest = env.latest(&topics[TopicKind::State]);
    for ((topic, partition), end) in &ends {
        let progress: BTreeMap<String, i64> =
            serde_json::from_slice(latest[&format!("i/{partition}")].as_deref().unwrap()).unwrap();
        assert_eq!(progress.get(topic), Some(end), "{topic}[{partition}]");
    }

    // The group's offsets go back to the start, as if its commits had been lost.
    env.rewind_group(&ends.keys().cloned().collect::<Vec<_>>());

    let worker = env.start_worker();
    env.publish_inputs(&dial_out("acme", "a2", "ann", US, 60, 1)); // 0.02
    env.publish_inputs(&dial_out("nobody", "n2", "ann", US, 60, 1));
    let nobody = tollgate_worker::partitioner::partition_for(b"nobody", 2);
    let n2_ended = ends[&(legs.clone(), nobody)] + 1;
    env.read_until(dead, |r| {
        r.iter().any(|(_, v, _, _)| v1::DeadLetter::decode(v.as_slice()).unwrap().source_offset == n2_ended)
    });
    assert_eq!(env.usages(2)["acme/a2"].balance_after, "9.78");
    worker.stop();
    // n1's dead letters once, n2's: nothing rated twice.
    let offsets: Vec<i64> = env
        .read_to_end(dead)
        .iter()
        .map(|(_, v, _, _)| v1::DeadLetter::decode(v.as_deref().unwrap()).unwrap().source_offset)
        .collect();
    assert_eq!(offsets.len(), 4, "dead letters' source offsets: {offsets:?}");
    assert_eq!(env.states()["acme"].balance(), m("9.78"));
}

/// A changelog written by a release before window segments (one record per applied id and
/// per closed leg) is restored with its deduplication intact, and the new owner rewrites the
/// tenant once: its windows as one segment, the old entries' keys tombstoned.
#[test]
fn a_changelog_of_the_layout_before_segments_keeps_its_duplicates_out_and_is_rewritten() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let acme = tollgate_worker::partitioner::partition_for(b"acme", 2);
    let worker = env.start_worker();
    let funding = fund("acme", "f1", "10.00", "USD");
    env.fund(std::slice::from_ref(&funding));
    let first = dial_out("acme", "a1", "ann", US, 600, 0); // 0.20
    env.publish_inputs(&first);
    env.usages(1);
    worker.stop();

    // Turn acme's segments into the earlier layout's entries, as that release left them.
    let state = &env.config.topics[TopicKind::State];
    let live = env.latest(state);
    let raw: rdkafka::producer::BaseProducer = tollgate_worker::kafka::base(&env.config).create().unwrap();
    let write = |key: &str, value: Option<&[u8]>| {
        let record = rdkafka::producer::BaseRecord::<str, [u8]>::to(state).key(key).partition(acme);
        let record = match value {
            Some(value) => record.payload(value),
            None => record,
        };
        raw.send(record).map_err(|(e, _)| e).unwrap();
    };
    let mut old_keys = Vec::new();
    for (key, value) in live.iter().filter(|(k, v)| k.starts_with("w/4/acme/") && v.is_some()) {
        let (applied, closed) = tollgate_proto::state::decode_segment(value.as_deref().unwrap()).unwrap();
        let entries = applied.into_iter().map(|(id, at, fp)| (format!("s/4/acme/{id}"), at, Some(fp)));
        for (old_key, at, fingerprint) in
            entries.chain(closed.into_iter().map(|(id, at)| (format!("c/4/acme/{id}"), at, None)))
        {
            let mut entry = Vec::new();
            tollgate_proto::state::encode_window(at, fingerprint, &mut entry);
            write(&old_key, Some(&entry));
            old_keys.push(old_key);
        }
        write(key, None);
    }
    rdkafka::producer::Producer::flush(&raw, Duration::from_secs(10)).unwrap();
    old_keys.sort();
    assert_eq!(old_keys, ["c/4/acme/a1", "s/4/acme/a1-e", "s/4/acme/a1-s", "s/4/acme/f1"]);

    // The funding and both of a1's events again (duplicates: no effect), and a new leg.
    let mut second = vec![funding];
    second.extend(first);
    second.extend(dial_out("acme", "a2", "ann", US, 60, 1)); // 0.02
    env.publish_inputs(&second);
    let worker = env.start_worker();
    let usages = env.usages(2);
    assert_eq!(usages["acme/a2"].balance_after, "9.78");
    worker.stop();
    let states = env.states();
    assert_eq!((states["acme"].balance(), states["acme"].totals.usage_charges), (m("9.78"), m("0.22")));
    let after = env.latest(state);
    for key in &old_keys {
        assert_eq!(after.get(key), Some(&None), "{key} not tombstoned");
    }
    let (applied, closed) = tollgate_proto::state::decode_segment(after["w/4/acme/r"].as_deref().unwrap()).unwrap();
    let mut ids: Vec<String> = applied.into_iter().map(|e| e.0).chain(closed.into_iter().map(|e| e.0)).collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a1-e", "a1-s", "f1"]);
}

/// An unreadable changelog record stalls only its partition, visibly, and the partition
/// resumes once the changelog is repaired: the worker neither exits (which would move the
/// record to the next worker, and the next) nor drops the partition's records.
#[test]
fn a_corrupted_changelog_record_stalls_its_partition_until_repaired() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let acme = tollgate_worker::partitioner::partition_for(b"acme", 2);
    assert_ne!(acme, tollgate_worker::partitioner::partition_for(b"globex", 2), "the tenants share a partition");
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("globex", "f2", "5.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    env.usages(1);
    worker.stop();

    // The last good record of acme's state, then garbage written over it.
    let state = &env.config.topics[TopicKind::State];
    let records = env.read_to_end(state);
    let good = records.iter().rev().find(|(k, _, _, _)| k == "t/acme").and_then(|r| r.1.clone()).unwrap();
    let raw: rdkafka::producer::BaseProducer = tollgate_worker::kafka::base(&env.config).create().unwrap();
    let write = |value: &[u8]| {
        let record = rdkafka::producer::BaseRecord::<str, [u8]>::to(state).key("t/acme").payload(value).partition(acme);
        raw.send(record).map_err(|(e, _)| e).unwrap();
        rdkafka::producer::Producer::flush(&raw, Duration::from_secs(10)).unwrap();
    };
    write(b"{\"not\": a tenant");

    let mut lines = dial_out("acme", "a2", "ann", US, 60, 1).to_vec(); // 0.02
    lines.extend(dial_out("globex", "g1", "gus", US, 60, 2)); // 0.02
    env.publish_inputs(&lines);
    let worker = env.start_worker();
    // The other partition rates on; acme's partition rates nothing while its state is unreadable.
    let usages = env.usages(2);
    assert_eq!(usages["globex/g1"].balance_after, "4.98");
    assert!(!usages.contains_key("acme/a2"), "rated on a state that could not be restored");
    // Still owned here, and reported as not restored (readiness says so).
    let (owned, restored) = worker.assignment.snapshot();
    assert!(owned.contains(&acme) && !restored.contains(&acme), "owned {owned:?}, restored {restored:?}");

    // The operator puts the good record back: the partition restarts from its committed
    // offsets and rates the leg on the restored balance.
    write(&good);
    let usages = env.usages(3);
    assert_eq!(usages["acme/a2"].balance_after, "9.78");
    worker.stop();
    assert_eq!(env.states()["acme"].balance(), m("9.78"));
}

#[test]
fn hands_partitions_over_on_rebalance_without_double_debits() {
    let env = Env::new(4, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let tenants = [("acme", "ann"), ("globex", "gus")];
    let a = env.start_worker();
    env.fund(&[fund("acme", "f1", "100.00", "USD"), fund("globex", "f2", "100.00", "USD")]);
    let mut legs = 0;
    let mut batch = |from: u32, to: u32| {
        let mut lines = Vec::new();
        for i in from..to {
            for (tenant, user) in tenants {
                lines.extend(dial_out(tenant, &format!("{tenant}-{i}"), user, US, 61, i));
                legs += 1;
            }
        }
        lines
    };
    let first = batch(0, 40);
    let second = batch(40, 80);
    env.publish_inputs(&first);
    env.usages(40);
    // A second worker joins mid-stream: partitions move, state goes with them.
    let b = env.start_worker();
    assert!(b.assignment.wait_until(DEADLINE, |p| !p.is_empty()), "the second worker got no partition");
    assert!(a.assignment.wait_until(DEADLINE, |p| p.len() < 4), "the first worker kept every partition");
    let (of_a, of_b) = (a.assignment.partitions(), b.assignment.partitions());
    assert!(of_a.is_disjoint(&of_b), "{of_a:?} and {of_b:?} overlap");
    // acme hashes to partition 0 and globex to 3, so with range assignment over two members one
    // of them always moves: the hand-over is really exercised.
    let homes: std::collections::BTreeSet<i32> =
        ["acme", "globex"].iter().map(|t| tollgate_worker::partitioner::partition_for(t.as_bytes(), 4)).collect();
    assert!(homes.iter().any(|p| of_b.contains(p)), "no tenant moved: {homes:?} all stayed on {of_a:?}");
    env.publish_inputs(&second);
    let usages = env.usages(legs);
    assert_eq!(usages.len(), 160);
    assert!(usages.values().all(|u| u.charge == "0.04"), "every 61 s leg costs 2 minutes");
    a.stop();
    b.stop();
    let states = env.states();
    // 80 legs x 0.04 per tenant, debited once each.
    assert_eq!(states["acme"].balance(), m("96.80"));
    assert_eq!(states["globex"].balance(), m("96.80"));
}

/// A member that owns no partition (more workers than partitions) is ready too: otherwise a
/// rolling update with a spare replica would never finish.
#[test]
fn a_worker_without_partitions_is_ready_once_in_the_group() {
    use tollgate_worker::readiness::Stage;
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let a = env.start_worker();
    let b = env.start_worker();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (sa, sb) = (a.readiness.status(), b.readiness.status());
        if sa.is_ready() && sb.is_ready() && sa.assigned.len() + sb.assigned.len() == 1 {
            let idle = if sa.assigned.is_empty() { sa } else { sb };
            assert_eq!(idle.to_string(), "w1 ready: in the consumer group, partitions {} restored");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not both ready: {sa} / {sb}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let readiness = std::sync::Arc::clone(&a.readiness);
    a.stop();
    assert_eq!(readiness.stage(), Stage::Stopped);
    assert_eq!(readiness.status().to_string(), "w1 not ready: stopped");
    b.stop();
}

/// A worker whose reference data holds no tenant (never published, say) does not read the
/// inputs, which it would all dead-letter as `unknown_tenant`: it says why it is not ready,
/// and rates them once a tenant is published.
#[test]
fn waits_for_a_tenant_before_it_reads_the_inputs() {
    use tollgate_worker::readiness::Stage;
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_inputs(&dial_out("acme", "a1", "dom", GB, 60, 0));
    let worker = env.start_worker();
    let deadline = std::time::Instant::now() + DEADLINE;
    while worker.readiness.stage() != Stage::WaitingForTenants {
        assert!(std::time::Instant::now() < deadline, "not waiting for a tenant: {}", worker.readiness.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        worker.readiness.status().to_string(),
        "w1 not ready: no tenant in the reference data (tollgate admin publish-reference)"
    );
    env.publish_reference(REFERENCE);
    assert_eq!(env.usages(1)["acme/a1"].tenant_id, "acme");
    assert!(env.read_to_end(&env.config.topics[TopicKind::DeadLetter]).is_empty(), "dead letters");
    worker.stop();
}

#[test]
fn applies_reference_data_updates_live() {
    let env = Env::new(1, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "dom", GB, 60, 0)); // domestic-only: blocked
    assert_eq!(env.usages(1)["acme/a1"].outcome, v1::rated_usage::Outcome::Blocked as i32);

    // The administrator lifts the restriction and raises the UK price.
    let update = r#"{"users": [{"tenantId": "acme", "userId": "dom", "usageLocation": "US"}],
      "rateCards": [{"rateCardId": "usd", "currency": "USD", "versions": [{"version": "v2", "effectiveFrom": "2026-01-01T00:00:00Z",
        "dialOut": [{"prefix": "44", "price": {"perMinute": "0.09"}}]}]}]}"#;
    env.publish_reference(update);
    use tollgate_core::Catalog;
    let applied = worker.tables.wait_until(DEADLINE, |t| {
        t.user("acme", "dom").is_some_and(|u| u.dialout_policy.is_none())
            && t.rate_card("usd").is_some_and(|c| c.versions()[0].version == "v2")
    });
    assert!(applied, "the update did not reach the worker's tables");
    env.publish_inputs(&dial_out("acme", "a2", "dom", GB, 60, 1));
    let usages = env.usages(2);
    assert_eq!((usages["acme/a2"].charge.as_str(), usages["acme/a2"].rate_card_version.as_str()), ("0.09", "v2"));
    worker.stop();
}

/// Exactly-once's path through the worker (transactional producers, outputs inside the
/// transaction) rates and keeps state as at-least-once does. The mock cluster does not honour
/// `read_committed`, so what the transactions guarantee is checked on the real broker
/// (`crates/tollgate/tests/faults.rs`, the usage report in `crates/tollgate/tests/api.rs`), not
/// here.
#[test]
fn exactly_once_mode_rates_through_its_transactional_producers() {
    let env = Env::new(2, ProcessingGuarantee::ExactlyOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 125, 0));
    let usages = env.usages(1);
    assert_eq!(usages["acme/a1"].charge, "0.06");
    worker.stop();
    assert_eq!(env.states()["acme"].balance(), m("9.94"));
}

#[test]
fn refuses_to_start_when_inputs_are_not_co_partitioned() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    let mut config = env.config.clone();
    config.topics[TopicKind::CreditCommands] = "tollgate.credit-commands.three".into();
    env.cluster.create_topic(&config.topics[TopicKind::CreditCommands], 3, 1).unwrap();
    let worker = tollgate_worker::Worker::new(config).unwrap();
    let stop = tollgate_worker::Cancel::default();
    let error = worker.run(&stop).unwrap_err();
    assert_eq!(
        error.to_string(),
        "topic layout: inputs and changelog must have the same partition count (co-partitioning): \
         tollgate.call-legs.v1=2, tollgate.credit-commands.three=3, tollgate.state.v1=2"
    );
}

/// An output topic that does not exist (topics made by other tooling, one forgotten) is named
/// at start, as a missing input is, not found by the first batch that writes to it.
#[test]
fn refuses_to_start_when_an_output_topic_is_missing() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    let mut config = env.config.clone();
    config.topics[TopicKind::DeadLetter] = "tollgate.dead-letter.forgotten".into();
    let worker = tollgate_worker::Worker::new(config).unwrap();
    let error = worker.run(&tollgate_worker::Cancel::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "topic layout: topic tollgate.dead-letter.forgotten does not exist (create it with `tollgate admin \
         create-topics`)"
    );
}

#[test]
fn the_publisher_partitions_like_the_java_client() {
    let env = Env::new(6, ProcessingGuarantee::AtLeastOnce);
    let tenants: Vec<String> = (0..40).map(|i| format!("tenant-{i}")).collect();
    let lines: Vec<String> = tenants.iter().map(|t| fund(t, &format!("{t}-f"), "1.00", "USD")).collect();
    env.publish_inputs(&lines);
    let records = env.read(&env.config.topics[TopicKind::CreditCommands], tenants.len());
    for (key, _, partition, _) in records {
        assert_eq!(partition, tollgate_worker::partitioner::partition_for(key.as_bytes(), 6), "{key}");
    }
}

#[test]
fn failed_offset_commits_cost_neither_outputs_nor_double_debits() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    // From now on the group consumer's offset commits fail for a while (the ones made after
    // each transaction; the mock cluster keeps no transactional offsets, so they are what a
    // new worker resumes from): outputs and changelog still go out.
    env.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 30],
    );
    let mut lines = Vec::new();
    for i in 0..10 {
        lines.extend(dial_out("acme", &format!("a{i}"), "ann", US, 60, i));
    }
    env.publish_inputs(&lines);
    assert!(env.usages(10).values().all(|u| u.charge == "0.02"));
    worker.stop();
    env.cluster.clear_request_errors(RDKafkaApiKey::OffsetCommit);

    // A new worker re-reads whatever was not committed and finds it applied.
    env.publish_inputs(&dial_out("acme", "b", "ann", US, 60, 20));
    let worker = env.start_worker();
    let usages = env.usages(11);
    assert_eq!(usages["acme/b"].balance_after, "9.78");
    worker.stop();
    assert_eq!(env.states()["acme"].balance(), m("9.78"));
}

/// The debit trail of a worker, per tenant: (movement id, kind, amount, balance after), one
/// entry per id; repeats (allowed under at-least-once) must be byte-identical.
fn trail(env: &Env) -> BTreeMap<String, Vec<(String, i32, String, String)>> {
    let mut by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, value, _, _) in env.read_to_end(&env.config.topics[TopicKind::LedgerMovements]) {
        let value = value.expect("no tombstones on an output topic");
        let movement = v1::LedgerMovement::decode(value.as_slice()).unwrap();
        assert_eq!(key, movement.tenant_id, "movements are keyed by tenant");
        if let Some(previous) = by_id.insert(movement.movement_id.clone(), value.clone()) {
            assert_eq!(previous, value, "a repeated movement differs from the original");
        }
    }
    let mut tenants: BTreeMap<String, Vec<(String, i32, String, String)>> = BTreeMap::new();
    for value in by_id.values() {
        let m = v1::LedgerMovement::decode(value.as_slice()).unwrap();
        tenants.entry(m.tenant_id).or_default().push((m.movement_id, m.kind, m.amount, m.balance_after));
    }
    tenants
}

/// With `ledger_movements` on, every change of a balance is on the trail topic, and per tenant
/// the debits add up to funding − final balance to the cent (and all movements to the balance).
fn writes_the_debit_trail(guarantee: ProcessingGuarantee) {
    let mut env = Env::new(3, guarantee);
    env.config.ledger_movements = true;
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("initech", "f2", "20.00", "EUR")]);
    let mut lines = dial_out("acme", "a1", "ann", US, 125, 0).to_vec(); // 3 min x 0.02 = 0.06
    lines.extend(dial_out("acme", "a2", "dom", GB, 60, 1)); // blocked by policy: no debit
    lines.extend(dial_out("acme", "a3", "ann", US, 30, 2)); // 1 min x 0.02 = 0.02
    lines.extend(dial_out("initech", "i1", "ines", GB, 61, 3)); // 2 min x 0.05 = 0.10
    env.publish_inputs(&lines);
    env.usages(4);
    worker.stop();

    let trail = trail(&env);
    let (debit, funding) = (v1::ledger_movement::Kind::Debit as i32, v1::ledger_movement::Kind::Funding as i32);
    let row =
        |id: &str, kind: i32, amount: &str, after: &str| (id.to_owned(), kind, amount.to_owned(), after.to_owned());
    assert_eq!(
        trail,
        BTreeMap::from([
            (
                "acme".to_owned(),
                vec![
                    row("acme/a1-e/1", debit, "-0.06", "9.94"),
                    row("acme/a3-e/1", debit, "-0.02", "9.92"),
                    row("acme/f1/1", funding, "10.00", "10.00"),
                ]
            ),
            (
                "initech".to_owned(),
                vec![row("initech/f2/1", funding, "20.00", "20.00"), row("initech/i1-e/1", debit, "-0.10", "19.90")]
            ),
        ])
    );
    let states = env.states();
    for (tenant, movements) in &trail {
        let sum = |kind: i32| -> Money { movements.iter().filter(|r| r.1 == kind).map(|r| m(&r.2)).sum() };
        let state = &states[tenant];
        assert_eq!(sum(funding), state.totals.funded, "{tenant}");
        assert_eq!(-sum(debit), state.totals.funded - state.balance(), "{tenant}: debits = funding - balance");
        assert_eq!(sum(funding) + sum(debit), state.balance(), "{tenant}: movements = balance");
    }
    assert_eq!((states["acme"].balance(), states["initech"].balance()), (m("9.92"), m("19.90")));
}

#[test]
fn writes_the_debit_trail_at_least_once() {
    writes_the_debit_trail(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn writes_the_debit_trail_in_the_batch_transaction_exactly_once() {
    writes_the_debit_trail(ProcessingGuarantee::ExactlyOnce);
}

#[test]
fn writes_no_debit_trail_by_default() {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    assert!(!env.config.ledger_movements);
    env.publish_reference(REFERENCE);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 125, 0));
    assert_eq!(env.usages(1)["acme/a1"].charge, "0.06");
    worker.stop(); // graceful: every output of every batch is flushed
    assert_eq!(env.read_to_end(&env.config.topics[TopicKind::LedgerMovements]).len(), 0);
}
