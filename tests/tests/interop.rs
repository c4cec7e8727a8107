//! A tollgate worker on a real Kafka broker, fed by a producer tollgate did not write (Python,
//! confluent-kafka, `tests/interop/produce.py`) and read back by Kafka's own console consumer:
//! the sample of `examples/` must come out as its golden output, under both guarantees.
//!
//! The golden output is the offline rater's, which applies the lines in file order. A worker
//! reads call legs and credit commands from two topics, with no order between them, so the
//! events are published in runs of one topic each, and each run only once the worker has
//! committed the previous one (the group's committed offsets reach the topic's end). Within a
//! topic, a tenant's records keep their order (one key, one partition).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tollgate_e2e::broker::{self, Broker, workspace_root};
use tollgate_e2e::interop::python_produce;
use tollgate_proto::{Message as _, v1};
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{ProcessingGuarantee, Worker, WorkerConfig, topics};

const PARTITIONS: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(120);

/// Logs to the test output with `RUST_LOG=tollgate_worker=debug`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A worker configuration of its own on the shared broker: the default topic names behind
/// `<tag>.`, and its own group and transactional ids, so that tests run side by side.
fn config(broker: &Broker, guarantee: ProcessingGuarantee, tag: &str) -> WorkerConfig {
    let mut config = WorkerConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        group_id: format!("interop-{tag}"),
        transactional_id_prefix: format!("interop-{tag}"),
        processing_guarantee: guarantee,
        commit_interval_ms: Some(50),
        ..WorkerConfig::default()
    };
    for name in config.topics.names_mut() {
        *name = format!("{tag}.{name}");
    }
    config
}

fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

/// The golden output's records of one kind, as JSON values.
fn golden(kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(example("expected-output.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap().get(kind).cloned())
        .collect()
}

/// `examples/events.jsonl` cut into runs of consecutive lines for the same topic, each written
/// to its own file in `dir`; returns the files with the topic they are for.
fn runs(config: &WorkerConfig, dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string(example("events.jsonl")).unwrap();
    let mut runs: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let topic = if value.get("callLeg").is_some() {
            &config.topics[TopicKind::CallLegs]
        } else {
            assert!(value.get("creditCommand").is_some(), "not an InputRecord: {line}");
            &config.topics[TopicKind::CreditCommands]
        };
        match runs.last_mut() {
            Some((last, lines)) if last == topic => lines.push_str(&format!("{line}\n")),
            _ => runs.push((topic.clone(), format!("{line}\n"))),
        }
    }
    runs.into_iter()
        .enumerate()
        .map(|(i, (topic, lines))| {
            let path = dir.join(format!("run-{i:02}.jsonl"));
            std::fs::write(&path, lines).unwrap();
            (path, topic)
        })
        .collect()
}

/// A consumer of `broker` in `group` that reads committed records only and commits nothing.
fn read_committed(broker: &Broker, group: &str) -> ClientConfig {
    let mut config = broker.client_config();
    config.set("group.id", group).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
    config
}

/// Waits until the worker's group has committed every record of `topic`: a committed offset
/// at the end of each partition. Polled every 50 ms (the broker has no push for commits).
fn wait_consumed(broker: &Broker, config: &WorkerConfig, topic: &str) {
    let consumer: BaseConsumer = read_committed(broker, &config.group_id).create().unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions.add_partition(topic, p);
    }
    let started = Instant::now();
    loop {
        let committed = consumer.committed_offsets(partitions.clone(), Duration::from_secs(10)).unwrap();
        let behind: Vec<(i32, i64, i64)> = (0..PARTITIONS)
            .filter_map(|p| {
                let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
                let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => offset,
                    _ => 0,
                };
                (at < high).then_some((p, at, high))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the worker did not consume {topic}: (partition, committed, end) {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts the committed records of `topic` (reads every partition to its end).
fn count_committed(broker: &Broker, topic: &str) -> usize {
    let consumer: BaseConsumer =
        read_committed(broker, "interop-count").set("enable.partition.eof", "true").create().unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let (mut count, mut at_end) = (0, std::collections::BTreeSet::new());
    let started = Instant::now();
    while at_end.len() < PARTITIONS as usize {
        assert!(started.elapsed() < DEADLINE, "could not read {topic} to its end");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => count += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    count
}

/// Publishes the examples through Python, rates them with an in-process worker, and checks
/// what Kafka's console consumer reads back against the golden output.
fn rates_the_python_producers_events(guarantee: ProcessingGuarantee, tag: &str) {
    init_logs();
    let broker = broker::shared();
    let config = config(broker, guarantee, tag);
    let specs = topics::specs(&config, PARTITIONS);
    broker::create_topics(&config, &specs).expect("create topics");
    for spec in &specs {
        broker.wait_for_topic(&spec.name, spec.partitions);
    }

    let reference: v1::ReferenceData =
        serde_json::from_str(&std::fs::read_to_string(example("reference.json")).unwrap()).unwrap();
    let publisher = Publisher::new(&config).unwrap();
    for record in publish::reference(&config.topics, &reference) {
        publisher.send(&record).unwrap();
    }
    publisher.flush().unwrap();

    let worker = Worker::new(config.clone()).expect("worker");
    let stop = Arc::new(tollgate_worker::Cancel::default());
    let flag = Arc::clone(&stop);
    let running = std::thread::spawn(move || worker.run(&flag));

    let dir = broker.dir().join(format!("interop-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (legs, credits) = (&config.topics[TopicKind::CallLegs], &config.topics[TopicKind::CreditCommands]);
    for (file, topic) in runs(&config, &dir) {
        python_produce(&broker.bootstrap_servers(), legs, credits, &file);
        wait_consumed(broker, &config, &topic);
    }
    stop.cancel();
    running.join().expect("worker thread panicked").expect("worker failed");

    // Exactly the golden rated usage: no record lost, none repeated, none left uncommitted.
    let expected: BTreeMap<String, v1::RatedUsage> = golden("ratedUsage")
        .into_iter()
        .map(|json| {
            let usage: v1::RatedUsage = serde_json::from_value(json).unwrap();
            (usage.usage_id.clone(), usage)
        })
        .collect();
    assert_eq!(count_committed(broker, &config.topics[TopicKind::RatedUsage]), expected.len());
    let records =
        broker.console_consume(&config.topics[TopicKind::RatedUsage], true, expected.len(), Duration::from_secs(30));
    assert_eq!(records.len(), expected.len());
    let mut rated = BTreeMap::new();
    for record in &records {
        let usage = v1::RatedUsage::decode(record.value.as_slice()).expect("a RatedUsage value");
        assert_eq!(record.key_str(), usage.tenant_id, "rated usage is keyed by tenant");
        assert!(rated.insert(usage.usage_id.clone(), usage).is_none(), "a usage id came twice");
    }
    assert_eq!(rated.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "usage ids");
    for (id, usage) in &rated {
        assert_eq!(usage, &expected[id], "rated usage {id}");
    }

    // The two refused lines are dead letters with the golden error codes.
    let mut codes: Vec<String> =
        golden("deadLetter").iter().map(|d| d["errorCode"].as_str().unwrap().to_owned()).collect();
    codes.sort();
    let dead =
        broker.console_consume(&config.topics[TopicKind::DeadLetter], true, codes.len(), Duration::from_secs(30));
    let mut read: Vec<String> =
        dead.iter().map(|r| v1::DeadLetter::decode(r.value.as_slice()).unwrap().error_code).collect();
    read.sort();
    assert_eq!(read, codes);
}

#[test]
fn at_least_once_rates_a_python_producers_events_like_the_offline_rater() {
    rates_the_python_producers_events(ProcessingGuarantee::AtLeastOnce, "at-least-once");
}

#[test]
fn exactly_once_rates_a_python_producers_events_like_the_offline_rater() {
    rates_the_python_producers_events(ProcessingGuarantee::ExactlyOnce, "exactly-once");
}
