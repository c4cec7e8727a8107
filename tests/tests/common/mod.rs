//! Shared harness: an in-process Kafka (librdkafka's mock cluster), tollgate's topics, and
//! helpers to publish inputs, run workers and read outputs back.
//!
//! Waiting is always on a signal: a reader returns once the expected records arrived (or
//! fails after a generous deadline); nothing sleeps a fixed time.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_core::TenantState;
use tollgate_proto::{Message as _, v1};
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{Cancel, ProcessingGuarantee, Tables, Worker, WorkerConfig, kafka, topics};

/// The reference data, phone numbers and records the worker's unit tests use too.
pub use tollgate_worker::testing::*;

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Logs to the test output with `RUST_LOG=tollgate_worker=debug`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

static GROUP: AtomicU32 = AtomicU32::new(0);

/// A mock cluster with tollgate's topics.
pub struct Env {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub config: WorkerConfig,
    pub publisher: Publisher,
}

impl Env {
    pub fn new(partitions: i32, guarantee: ProcessingGuarantee) -> Env {
        let cluster = MockCluster::new(1).expect("mock cluster");
        init_logs();
        let mut config = WorkerConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            group_id: format!("tollgate-test-{}-{}", std::process::id(), GROUP.fetch_add(1, Ordering::Relaxed)),
            processing_guarantee: guarantee,
            commit_interval_ms: Some(20),
            batch_size: 50,
            kafka_timeout_ms: 10_000,
            ..WorkerConfig::default()
        };
        // Fast group joins and rebalances on the mock cluster.
        config.librdkafka.insert("topic.metadata.refresh.interval.ms".into(), "500".into());
        config.librdkafka.insert("session.timeout.ms".into(), "6000".into());
        config.librdkafka.insert("heartbeat.interval.ms".into(), "500".into());
        for spec in topics::specs(&config, partitions) {
            cluster.create_topic(&spec.name, spec.partitions, 1).expect("create topic");
        }
        let publisher = Publisher::new(&config).expect("publisher");
        Env { cluster, config, publisher }
    }

    pub fn publish_reference(&self, json: &str) {
        let data: v1::ReferenceData = serde_json::from_str(json).expect("reference JSON");
        for record in publish::reference(&self.config.topics, &data) {
            self.publisher.send(&record).expect("send reference");
        }
        self.publisher.flush().expect("flush reference");
    }

    /// Publishes input records given as proto3 JSON lines.
    pub fn publish_inputs(&self, lines: &[String]) {
        for line in lines {
            let record: v1::InputRecord = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let keyed = publish::input(&self.config.topics, &record).expect("input record");
            self.publisher.send(&keyed).expect("send input");
        }
        self.publisher.flush().expect("flush inputs");
    }

    /// Publishes fund commands and waits until the worker reported them: credit commands and
    /// call legs are different topics, so only this orders funding before the legs.
    pub fn fund(&self, funds: &[String]) {
        let before = self.count(&self.config.topics[TopicKind::CreditEvents]);
        self.publish_inputs(funds);
        self.read_until(&self.config.topics[TopicKind::CreditEvents], |r| {
            r.iter().filter(|(_, v, _, _)| v1::CreditEvent::decode(v.as_slice()).unwrap().kind == 1).count()
                >= before + funds.len()
        });
    }

    /// How many `funded` credit events there are now.
    fn count(&self, topic: &str) -> usize {
        let consumer: BaseConsumer = kafka::reader(&self.config, "test-count").create().unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let total: i64 = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
                high - low
            })
            .sum();
        if total == 0 {
            return 0;
        }
        self.read(topic, total as usize)
            .iter()
            .filter(|(_, v, _, _)| v1::CreditEvent::decode(v.as_slice()).unwrap().kind == 1)
            .count()
    }

    pub fn start_worker(&self) -> RunningWorker {
        RunningWorker::start(self.config.clone())
    }

    /// Reads `topic` from the beginning until `expected` records were read.
    pub fn read(&self, topic: &str, expected: usize) -> Vec<(String, Vec<u8>, i32, i64)> {
        self.read_until(topic, |records| records.len() >= expected)
    }

    /// Reads `topic` from the beginning until `done` holds for what was read (tombstones as
    /// empty values).
    pub fn read_until(
        &self,
        topic: &str,
        done: impl Fn(&[(String, Vec<u8>, i32, i64)]) -> bool,
    ) -> Vec<(String, Vec<u8>, i32, i64)> {
        let mut records = Vec::new();
        self.consume(topic, |key, value, partition, offset| {
            records.push((key, value.unwrap_or_default(), partition, offset));
            done(&records)
        });
        records
    }

    /// Reads `count` records of `topic` from the beginning, tombstones as `None`.
    pub fn read_records(&self, topic: &str, count: usize) -> Vec<(String, Option<Vec<u8>>, i32, i64)> {
        let mut records = Vec::new();
        if count > 0 {
            self.consume(topic, |key, value, partition, offset| {
                records.push((key, value, partition, offset));
                records.len() >= count
            });
        }
        records
    }

    /// Feeds every record of `topic`, from the beginning, to `take` until it returns true.
    fn consume(&self, topic: &str, mut take: impl FnMut(String, Option<Vec<u8>>, i32, i64) -> bool) {
        let consumer: BaseConsumer = kafka::reader(&self.config, "test-reader").create().expect("reader");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let started = Instant::now();
        let mut read = 0usize;
        loop {
            assert!(started.elapsed() < DEADLINE, "timed out reading {topic} after {read} records");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                read += 1;
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                if take(key, m.payload().map(<[u8]>::to_vec), m.partition(), m.offset()) {
                    return;
                }
            }
        }
    }

    /// Rated usage read until `legs` distinct usage ids were seen; duplicates (allowed under
    /// at-least-once) must be identical. Returns one record per usage id.
    pub fn usages(&self, legs: usize) -> BTreeMap<String, v1::RatedUsage> {
        let records = self.read_until(&self.config.topics[TopicKind::RatedUsage], |r| {
            r.iter()
                .map(|(_, v, _, _)| v1::RatedUsage::decode(v.as_slice()).unwrap().usage_id)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= legs
        });
        let mut by_id: BTreeMap<String, v1::RatedUsage> = BTreeMap::new();
        for (_, value, _, _) in records {
            let usage = v1::RatedUsage::decode(value.as_slice()).unwrap();
            if let Some(previous) = by_id.get(&usage.usage_id) {
                assert_eq!(previous, &usage, "a replayed usage record differs from the original");
            }
            by_id.insert(usage.usage_id.clone(), usage);
        }
        by_id
    }

    /// Every record of `topic` up to its current end, tombstones as `None`.
    pub fn read_to_end(&self, topic: &str) -> Vec<(String, Option<Vec<u8>>, i32, i64)> {
        let consumer: BaseConsumer = kafka::reader(&self.config, "test-read-to-end").create().unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut total = 0usize;
        for p in metadata.topics()[0].partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            total += (high - low) as usize;
        }
        self.read_records(topic, total)
    }

    /// The latest value of every key of `topic` (reads it to its end; a tombstone is `None`).
    pub fn latest(&self, topic: &str) -> BTreeMap<String, Option<Vec<u8>>> {
        self.read_to_end(topic).into_iter().map(|(key, value, _, _)| (key, value)).collect()
    }

    /// Moves the group's committed offsets of `places` back to the start, as if its commits
    /// had been lost. Committed by a member of the group (the mock cluster refuses a commit
    /// from outside it), which leaves once done; no worker may be running.
    pub fn rewind_group(&self, places: &[(String, i32)]) {
        let group: BaseConsumer = kafka::base(&self.config)
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        let topics: std::collections::BTreeSet<&str> = places.iter().map(|(topic, _)| topic.as_str()).collect();
        group.subscribe(&topics.into_iter().collect::<Vec<_>>()).unwrap();
        while group.assignment().unwrap().count() < places.len() {
            if let Some(Err(error)) = group.poll(Duration::from_millis(100)) {
                panic!("joining the group: {error}");
            }
        }
        let mut start = TopicPartitionList::new();
        for (topic, partition) in places {
            start.add_partition_offset(topic, *partition, Offset::Offset(0)).unwrap();
        }
        group.commit(&start, rdkafka::consumer::CommitMode::Sync).unwrap();
        let committed = group.committed_offsets(start, Duration::from_secs(10)).unwrap();
        assert!(committed.elements().iter().all(|e| e.offset() == Offset::Offset(0)), "{committed:?}");
        group.unsubscribe();
    }

    /// The reference topics' position now, as a manifest records it (`reference`): per topic,
    /// per partition, the offset after the last record.
    pub fn reference_position(&self) -> serde_json::Value {
        let end = |kind: TopicKind| -> Vec<i64> {
            let mut next = Vec::new();
            for (_, _, partition, offset) in self.read_to_end(&self.config.topics[kind]) {
                let p = partition as usize;
                next.resize(next.len().max(p + 1), 0);
                next[p] = next[p].max(offset + 1);
            }
            next
        };
        serde_json::json!({
            "tenants": end(TopicKind::Tenants),
            "users": end(TopicKind::Users),
            "rate_cards": end(TopicKind::RateCards),
        })
    }

    /// The latest changelog state per tenant (reads the state topic to its end).
    pub fn states(&self) -> BTreeMap<String, TenantState> {
        let mut restorer = tollgate_worker::changelog::Restorer::new(self.config.retention_seconds);
        for (key, value, _, _) in self.read_to_end(&self.config.topics[TopicKind::State]) {
            restorer.apply(key.as_bytes(), value.as_deref());
        }
        restorer.finish().unwrap().states.into_map().into_iter().collect()
    }
}

/// A worker running on its own thread until stopped.
pub struct RunningWorker {
    stop: Arc<Cancel>,
    thread: Option<JoinHandle<Result<(), tollgate_worker::Error>>>,
    pub tables: Arc<Tables>,
    pub assignment: Arc<tollgate_worker::Assignment>,
    pub readiness: Arc<tollgate_worker::Readiness>,
}

impl RunningWorker {
    pub fn start(config: WorkerConfig) -> RunningWorker {
        let worker = Worker::new(config).expect("worker");
        let tables = Arc::clone(worker.tables());
        let assignment = Arc::clone(worker.assignment());
        let readiness = Arc::clone(worker.readiness());
        let stop = Arc::new(Cancel::default());
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || worker.run(&flag));
        RunningWorker { stop, thread: Some(thread), tables, assignment, readiness }
    }

    /// Graceful stop: commit, flush, leave the group.
    pub fn stop(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("worker thread panicked").expect("worker failed");
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fund command as JSON.
pub fn fund(tenant: &str, id: &str, amount: &str, currency: &str) -> String {
    format!(
        r#"{{"creditCommand":{{"commandId":"{id}","tenantId":"{tenant}","occurredAt":"2026-11-02T08:00:00Z","fund":{{"lotId":"{id}","amount":"{amount}","currency":"{currency}","purchasedAt":"2026-11-02T08:00:00Z"}}}}}}"#
    )
}

/// A dial-out leg (started + ended) as two JSON lines. `minute` offsets the start.
pub fn dial_out(tenant: &str, leg: &str, organizer: &str, number: &str, seconds: u32, minute: u32) -> [String; 2] {
    let start = format!("2026-11-02T09:{:02}:00Z", minute % 60);
    [
        format!(
            r#"{{"callLeg":{{"eventId":"{leg}-s","tenantId":"{tenant}","conferenceId":"m-{leg}","callId":"c-{leg}","legId":"{leg}","organizerId":"{organizer}","occurredAt":"{start}","started":{{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"{number}"}}}}}}"#
        ),
        format!(
            r#"{{"callLeg":{{"eventId":"{leg}-e","tenantId":"{tenant}","conferenceId":"m-{leg}","callId":"c-{leg}","legId":"{leg}","organizerId":"{organizer}","occurredAt":"{start}","ended":{{"connectedSeconds":{seconds},"cause":"DISCONNECT_CAUSE_NORMAL"}}}}}}"#
        ),
    ]
}
