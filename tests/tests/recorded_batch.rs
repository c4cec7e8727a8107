//! A recorded batch (at-least-once: named in the changelog before its outputs went out) whose
//! records of one input cannot be fetched waits for them for as long as it takes, and stops
//! fetching the other input meanwhile, so that nothing piles up behind it and no memory bound
//! makes it rate without them. In a binary of its own: it reads the worker's metrics through a
//! process-wide recorder.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tollgate_core::Money;
use tollgate_worker::partitioner::partition_for;
use tollgate_worker::{ProcessingGuarantee, TopicKind, kafka};

/// Legs published while the batch waits: 160 records, more than the wait holds before it
/// rates without the missing ones (five times the four batches of 5 that pause fetching).
const WHILE_WAITING: u32 = 80;

/// Whether the worker paused fetching `topic` of `partition` while a recorded batch waited.
fn held(snapshotter: &Snapshotter, topic: &str, partition: i32) -> bool {
    let partition = partition.to_string();
    snapshotter.snapshot().into_vec().into_iter().any(|(key, _, _, value)| {
        let key = key.key();
        let label = |name: &str| key.labels().find(|l| l.key() == name).map(|l| l.value().to_owned());
        key.name() == "tollgate_inputs_held_total"
            && label("partition").as_deref() == Some(partition.as_str())
            && label("topic").as_deref() == Some(topic)
            && matches!(value, DebugValue::Counter(n) if n > 0)
    })
}

/// A first attempt rated a funding and then a leg on it, and its outputs went out, but its
/// state was never committed. The next owner finds the batch recorded, and the funding's
/// partition has no leader: rated without the funding, the leg would give a usage record
/// under the same id with another balance. It waits instead, with the legs paused; legs
/// published meanwhile are rated after it, once the funding came. The tenant's partition has
/// a neighbour whose legs go on being rated: one published after the waiting tenant's legs
/// and rated shows that those legs were there to be fetched, had they not been paused.
#[test]
fn a_recorded_batch_waits_for_an_input_without_a_leader_and_holds_the_other() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let mut env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    let acme = partition_for(b"acme", 2);
    assert_ne!(acme, partition_for(b"globex", 2), "the tenants share a partition");
    env.config.batch_size = 5;
    // The wait reports the partition stalled, and pauses, after three Kafka timeouts.
    env.config.kafka_timeout_ms = 2_000;
    env.publish_reference(REFERENCE);
    let topics = env.config.topics.clone();
    let (legs, credits, state) =
        (&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands], &topics[TopicKind::State]);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("globex", "g", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    assert_eq!(env.usages(1)["acme/a1"].balance_after, "9.80");
    worker.stop();
    // Each changelog key's latest value and its partition (keys are not partitioned by their
    // own hash: a partition's task writes its partition).
    let latest = || -> BTreeMap<String, (i32, Option<Vec<u8>>)> {
        env.read_to_end(state).into_iter().map(|(key, value, partition, _)| (key, (partition, value))).collect()
    };
    let before = latest();
    // acme's next offsets in its partition of each input.
    let next = |topic: &str| env.read_to_end(topic).iter().filter(|r| r.2 == acme).count() as i64;
    let (a2_from, f2_at) = (next(legs), next(credits));
    // The reference position the first attempt rates a2 with.
    let pin = env.reference_position();

    // The first attempt: f2 funds 5.00, then a2 costs 0.02; its usage is out...
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f2", "5.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a2", "ann", US, 60, 1));
    let first = env.usages(2)["acme/a2"].clone();
    assert_eq!(first.balance_after, "14.78");
    worker.stop();
    // ... and its state never committed: the changelog goes back to where a1 left it, with the
    // manifest of one batch of f2 and a2, as the crashed owner left it.
    let producer: BaseProducer = kafka::base(&env.config).create().unwrap();
    let put = |key: &str, partition: i32, value: Option<&[u8]>| {
        let mut record = BaseRecord::<str, [u8]>::to(state).key(key).partition(partition);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record).map_err(|(error, _)| error).unwrap();
    };
    for (key, (partition, value)) in latest() {
        match before.get(&key) {
            Some((_, old)) if *old == value => {}
            Some((_, old)) => put(&key, partition, old.as_deref()),
            None => put(&key, partition, None),
        }
    }
    let manifest = serde_json::json!({
        "ranges": { legs.as_str(): [a2_from, a2_from + 1], credits.as_str(): [f2_at, f2_at] },
        "reference": pin,
    });
    put(&format!("m/{acme}"), acme, Some(manifest.to_string().as_bytes()));
    producer.flush(Duration::from_secs(10)).unwrap();
    env.rewind_group(&[(legs.clone(), 0), (legs.clone(), 1), (credits.clone(), 0), (credits.clone(), 1)]);

    // acme's partition of the credit commands loses its leader: f2 cannot be fetched.
    env.cluster.partition_leader(credits, acme, None).unwrap();
    let worker = env.start_worker();
    let deadline = Instant::now() + DEADLINE;
    while !held(&snapshotter, legs, acme) {
        assert!(Instant::now() < deadline, "the recorded batch never paused the legs it no longer needs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lines = Vec::new();
    for i in 0..WHILE_WAITING {
        lines.extend(dial_out("acme", &format!("w{i}"), "ann", US, 60, 2 + i % 50)); // 0.02 each
    }
    env.publish_inputs(&lines);
    // A leg of the neighbouring partition, published after them, is rated: they were there
    // to be fetched (in the same fetches as it, or earlier) and would have reached the
    // waiting batch, had acme's legs not been paused.
    env.publish_inputs(&dial_out("globex", "g1", "gus", US, 60, 3));
    assert_eq!(env.usages(3)["globex/g1"].balance_after, "9.98");

    // The leader is back: the batch is rated as the first attempt was (`usages` checks every
    // copy of a usage record against the others), then the legs that waited.
    env.cluster.partition_leader(credits, acme, Some(1)).unwrap();
    let usages = env.usages(3 + WHILE_WAITING as usize);
    assert_eq!(usages["acme/a2"], first);
    worker.stop();
    assert_eq!(env.states()["acme"].balance(), "13.18".parse::<Money>().unwrap());
}

/// A recorded batch whose reference position this worker's tables do not reach in time (three
/// Kafka timeouts) is rated with the tables' position at hand, and recorded again with it
/// before its outputs, so that a retry (after the tables moved on) or a successor rates it
/// alike, instead of answering "as of" a position the tables have not read.
#[test]
fn a_recorded_batch_whose_reference_position_is_not_reached_is_recorded_again_with_its_own() {
    let mut env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    let acme = partition_for(b"acme", 2);
    env.config.kafka_timeout_ms = 1_000;
    env.publish_reference(REFERENCE);
    let topics = env.config.topics.clone();
    let (legs, state) = (&topics[TopicKind::CallLegs], &topics[TopicKind::State]);
    let worker = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD")]);
    env.publish_inputs(&dial_out("acme", "a1", "ann", US, 600, 0)); // 0.20
    assert_eq!(env.usages(1)["acme/a1"].balance_after, "9.80");
    worker.stop();

    // a2 is published while no worker runs, and named by a manifest pinned to reference
    // offsets no table will reach (its predecessor read further, say, and the records are
    // gone).
    let a2_from = env.read_to_end(legs).iter().filter(|r| r.2 == acme).count() as i64;
    env.publish_inputs(&dial_out("acme", "a2", "ann", US, 60, 1)); // 0.02
    let actual = env.reference_position();
    let mut ahead = actual.clone();
    for offsets in ahead.as_object_mut().unwrap().values_mut() {
        for offset in offsets.as_array_mut().unwrap() {
            *offset = serde_json::json!(offset.as_i64().unwrap() + 1_000);
        }
    }
    let manifest = serde_json::json!({ "ranges": { legs.as_str(): [a2_from, a2_from + 1] }, "reference": ahead });
    let producer: BaseProducer = kafka::base(&env.config).create().unwrap();
    let key = format!("m/{acme}");
    let value = manifest.to_string();
    let record = BaseRecord::<str, [u8]>::to(state).key(&key).partition(acme).payload(value.as_bytes());
    producer.send(record).map_err(|(error, _)| error).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let worker = env.start_worker();
    assert_eq!(env.usages(2)["acme/a2"].balance_after, "9.78");
    worker.stop();
    // The batch was recorded again before its output, pinned where the tables were.
    let manifests: Vec<serde_json::Value> = env
        .read_to_end(state)
        .into_iter()
        .filter(|(k, value, partition, _)| *k == key && *partition == acme && value.is_some())
        .map(|(_, value, _, _)| serde_json::from_slice(&value.unwrap()).unwrap())
        .collect();
    let last = manifests.last().unwrap();
    assert_eq!(last["reference"], actual, "{manifests:#?}");
    assert_eq!(last["ranges"][legs.as_str()], serde_json::json!([a2_from, a2_from + 1]), "{manifests:#?}");
}
