//! The single writer of one input partition: it owns the state of every tenant whose records
//! land on that partition, rates its records in batches and commits each batch.
//!
//! ```text
//!   restore ──► collect ──► rate ──► publish ──► collect ...
//!                              ▲          │ error: roll the batch's tenants back,
//!                              └──────────┘ back off, rate the same records again
//! ```
//!
//! Rewinding is done by keeping the batch's records in memory until it commits: after an
//! abort the task rates exactly the same records again from the same state, which is what
//! seeking the partition back to its committed offsets would deliver, without racing the
//! records already fetched behind them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tollgate_core::{Applied, CallType, Catalog, Input, Output, Rater, RatingConfig, TenantState, UsageOutcome};
use tollgate_proto::{Message as _, v1};

use crate::codec::{self, Refusal};
use crate::config::{ProcessingGuarantee, TopicKind, WorkerConfig};
use crate::error::Class;
use crate::record::Record;
use crate::reference::Tables;
use crate::{Error, changelog, kafka, partitioner, telemetry};

/// What the partition task needs from the group consumer.
pub trait Coordinator: Send + Sync {
    /// Commits input offsets (at-least-once).
    fn commit(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;
    /// The group metadata for `send_offsets_to_transaction` (exactly-once).
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Whether this worker still owns `partition` of the inputs.
    fn owns(&self, partition: i32) -> bool;
}

/// A message to a partition task.
#[derive(Debug)]
pub enum Command {
    /// An input record of this partition.
    Record(Record),
    /// Finish the current batch, commit it, and exit.
    Stop,
}

/// Counts delivery failures of a producer, so a flush can tell whether everything arrived.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failures: AtomicU64,
}

impl DeliveryTracker {
    /// Deliveries that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            tracing::warn!(%error, "delivery failed");
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
    }
}

type TaskProducer = BaseProducer<DeliveryTracker>;

/// One record to produce.
struct Outgoing {
    topic: String,
    key: String,
    /// `None`: a tombstone.
    payload: Option<Vec<u8>>,
    /// Explicit partition (changelog); `None` lets the murmur2 partitioner pick by key.
    partition: Option<i32>,
}

/// Per-batch counts for telemetry.
#[derive(Default)]
struct Stats {
    inputs: BTreeMap<(&'static str, &'static str), u64>,
    legs: BTreeMap<(&'static str, &'static str), u64>,
    unpriced: u64,
    credit_events: BTreeMap<&'static str, u64>,
}

/// A rated batch, ready to publish.
struct Rated {
    outputs: Vec<Outgoing>,
    changelog: Vec<Outgoing>,
    offsets: TopicPartitionList,
    /// Per touched tenant: its state before the batch (without the retention windows; `None`
    /// for a tenant new in this batch) and the batch's window changes, to roll back with.
    undo: HashMap<String, Undo>,
    stats: Stats,
}

/// How to put one tenant back as it was before a batch.
struct Undo {
    before: Option<TenantState>,
    windows: changelog::WindowChanges,
}

/// The owner of one partition.
pub struct PartitionTask {
    partition: i32,
    partition_count: i32,
    config: Arc<WorkerConfig>,
    tables: Arc<Tables>,
    coordinator: Arc<dyn Coordinator>,
    rater: Rater,
    states: HashMap<String, TenantState>,
    producer: TaskProducer,
    /// Set when the worker shuts down or loses the partition: stop retrying.
    abandon: Arc<AtomicBool>,
    /// The group is handing the partition over: rate nothing more.
    migrating: bool,
    /// When every tenant's balance gauge was last set (see `telemetry::GAUGE_REFRESH`).
    balances_refreshed: Instant,
}

impl std::fmt::Debug for PartitionTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionTask")
            .field("partition", &self.partition)
            .field("tenants", &self.states.len())
            .finish()
    }
}

impl PartitionTask {
    /// Restores the partition's state and prepares its producer (fencing any previous owner
    /// under exactly-once).
    pub fn start(
        partition: i32,
        partition_count: i32,
        config: Arc<WorkerConfig>,
        tables: Arc<Tables>,
        coordinator: Arc<dyn Coordinator>,
        abandon: Arc<AtomicBool>,
    ) -> Result<Self, Error> {
        // Under exactly-once, initialising the transactional producer first aborts whatever
        // the previous owner left open, so the restore below reads only committed state.
        let producer = new_producer(&config, partition, &abandon)?;
        let states = changelog_restore(&config, partition, &abandon)?;
        let rater = Rater::new(RatingConfig { retention_seconds: config.retention_seconds });
        let mut task = PartitionTask {
            partition,
            partition_count,
            config,
            tables,
            coordinator,
            rater,
            states,
            producer,
            abandon,
            migrating: false,
            balances_refreshed: Instant::now(),
        };
        task.refresh_balances();
        Ok(task)
    }

    /// The tenants' states (for tests and summaries).
    pub fn states(&self) -> &HashMap<String, TenantState> {
        &self.states
    }

    /// Runs until told to stop: collects batches from `inbox` and commits them.
    pub fn run(mut self, inbox: &Receiver<Command>) {
        loop {
            let (batch, stop) = self.collect(inbox);
            if !batch.is_empty() {
                self.commit_batch(&batch);
            }
            if stop {
                break;
            }
        }
        let _ = self.producer.flush(self.config.kafka_timeout());
        tracing::info!(partition = self.partition, "partition task stopped");
    }

    fn collect(&mut self, inbox: &Receiver<Command>) -> (Vec<Record>, bool) {
        let mut batch = Vec::new();
        loop {
            // Busy or idle, keep this worker's ownership of its tenants' balances visible.
            if self.balances_refreshed.elapsed() >= telemetry::GAUGE_REFRESH {
                self.refresh_balances();
            }
            match inbox.recv_timeout(telemetry::GAUGE_REFRESH) {
                Ok(Command::Record(record)) => {
                    batch.push(record);
                    break;
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return (batch, true),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        let deadline = Instant::now() + self.config.commit_interval();
        while batch.len() < self.config.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(Command::Record(record)) => batch.push(record),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return (batch, true),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        (batch, false)
    }

    /// Rates and publishes one batch, retrying with backoff until it is published, the
    /// partition is handed over, or the worker stops.
    fn commit_batch(&mut self, batch: &[Record]) {
        if self.migrating {
            // The group moved on: the partition's next owner resumes from the committed
            // offsets and the changelog. Rating more here would only write for a zombie.
            return;
        }
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let rated = self.rate(batch);
            let result = match self.config.processing_guarantee {
                ProcessingGuarantee::AtLeastOnce => self.publish_at_least_once(&rated),
                ProcessingGuarantee::ExactlyOnce => self.publish_exactly_once(&rated),
            };
            match result {
                Ok(offsets) => {
                    self.report(&rated, batch.len(), started.elapsed());
                    if let Err(error) = offsets {
                        // At-least-once: outputs and changelog are safe, only the offsets are
                        // not. Keep the state; the next commit covers these offsets, and a
                        // new owner that re-reads them finds them applied (deduplicated).
                        let class = error.class();
                        telemetry::commit_deferred(self.partition, class.label(), &error);
                        if class == Class::Migrating {
                            self.migrating = true;
                        }
                    }
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    self.roll_back(rated.undo);
                    let class = error.class();
                    telemetry::batch_retried(self.partition, class.label(), &error, attempt);
                    if class == Class::Migrating {
                        self.migrating = true;
                        return;
                    }
                    if self.abandon.load(Ordering::Acquire) || !self.coordinator.owns(self.partition) {
                        tracing::warn!(
                            partition = self.partition,
                            "partition no longer owned: batch left to the next owner"
                        );
                        return;
                    }
                    if class == Class::Fenced {
                        match new_producer(&self.config, self.partition, &self.abandon) {
                            Ok(producer) => self.producer = producer,
                            Err(e) => {
                                tracing::error!(partition = self.partition, error = %e, "cannot replace fenced producer")
                            }
                        }
                    }
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
    }

    /// Sets every owned tenant's balance gauge, so that the exporter keeps them (it drops
    /// gauges idle for longer than a few refresh periods, which is how a tenant given away
    /// to another worker disappears from this one).
    fn refresh_balances(&mut self) {
        self.balances_refreshed = Instant::now();
        for (tenant, state) in &self.states {
            if let Some(t) = self.tables.tenant(tenant) {
                telemetry::balance(&t.id, t.currency, state.balance());
            }
        }
    }

    fn roll_back(&mut self, undo: HashMap<String, Undo>) {
        for (tenant, Undo { before, windows }) in undo {
            match (before, self.states.get_mut(&tenant)) {
                (Some(mut before), Some(current)) => {
                    // The windows are not in the snapshot: take the current ones back to
                    // where they were.
                    windows.revert(current);
                    before.seen = std::mem::take(&mut current.seen);
                    before.closed_legs = std::mem::take(&mut current.closed_legs);
                    *current = before;
                }
                (Some(before), None) => {
                    self.states.insert(tenant, before);
                }
                (None, _) => {
                    self.states.remove(&tenant);
                }
            }
        }
    }

    fn rate(&mut self, batch: &[Record]) -> Rated {
        let config = Arc::clone(&self.config);
        let topics = &config.topics;
        let mut rated = Rated {
            outputs: Vec::with_capacity(batch.len() * 2),
            changelog: Vec::new(),
            offsets: TopicPartitionList::new(),
            undo: HashMap::new(),
            stats: Stats::default(),
        };
        let mut next: BTreeMap<&str, i64> = BTreeMap::new();
        let mut outs = Vec::new();
        for record in batch {
            next.insert(&record.topic, record.offset + 1);
            let kind = topics.kind_of(&record.topic).unwrap_or(TopicKind::CallLegs);
            let topic_label = if kind == TopicKind::CreditCommands { "credit_commands" } else { "call_legs" };
            let outcome = match self.apply(record, kind, &mut rated.undo, &mut outs) {
                Ok(applied) => applied.label(),
                Err(refusal) => {
                    telemetry::dead_letter(
                        &record.topic,
                        record.partition,
                        record.offset,
                        refusal.code,
                        &refusal.message,
                    );
                    rated.outputs.push(dead_letter(topics.dead_letter.clone(), record, refusal));
                    "dead_letter"
                }
            };
            *rated.stats.inputs.entry((topic_label, outcome)).or_default() += 1;
            for output in outs.drain(..) {
                count(&mut rated.stats, &output);
                let (topic, key, payload) = codec::encode_output(topics, output);
                rated.outputs.push(Outgoing { topic: topic.to_owned(), key, payload: Some(payload), partition: None });
            }
        }
        for (topic, offset) in next {
            // Infallible for a valid topic name and a non-negative offset.
            let _ = rated.offsets.add_partition_offset(topic, self.partition, Offset::Offset(offset));
        }
        for (tenant, undo) in &mut rated.undo {
            if let Some(state) = self.states.get_mut(tenant) {
                undo.windows = changelog::WindowChanges::take(state);
                for (key, payload) in changelog::records(tenant, state, &undo.windows) {
                    rated.changelog.push(Outgoing {
                        topic: topics.state.clone(),
                        key,
                        payload,
                        partition: Some(self.partition),
                    });
                }
            }
        }
        rated
    }

    fn apply(
        &mut self,
        record: &Record,
        kind: TopicKind,
        undo: &mut HashMap<String, Undo>,
        outs: &mut Vec<Output>,
    ) -> Result<Applied, Refusal> {
        let input: Input = codec::decode_input(kind, record.payload.as_deref())?;
        let tenant = input.tenant_id().as_str();
        let key = record.key.as_deref().unwrap_or_default();
        if key != tenant.as_bytes() {
            return Err(Refusal::new(
                "key_mismatch",
                format!("record key {:?} is not the tenant id {tenant:?}", String::from_utf8_lossy(key)),
            ));
        }
        let expected = partitioner::partition_for(key, self.partition_count);
        if expected != self.partition {
            return Err(Refusal::new(
                "wrong_partition",
                format!("tenant {tenant:?} belongs on partition {expected} (murmur2), not {}", self.partition),
            ));
        }
        // The rater refuses unknown tenants itself; checked here only for a tenant without
        // state yet, so that a refused record does not leave an empty state behind.
        if !self.states.contains_key(tenant) && self.tables.tenant(tenant).is_none() {
            return Err(Refusal::new("unknown_tenant", format!("unknown tenant {tenant:?}")));
        }
        if !undo.contains_key(tenant) {
            let before = self.states.get_mut(tenant).map(TenantState::clone_without_windows);
            undo.insert(tenant.to_owned(), Undo { before, windows: changelog::WindowChanges::default() });
        }
        let state = self.states.entry(tenant.to_owned()).or_insert_with(|| {
            let mut state = TenantState::default();
            state.track_changes();
            state
        });
        self.rater.apply(&*self.tables, state, input, outs).map_err(|e| Refusal::new(e.code(), e.to_string()))
    }

    /// Outputs first: once they are acknowledged, the changelog may say the inputs were
    /// applied; then the offsets. A crash in between repeats identical outputs, never loses
    /// them, and never applies an input twice to state. The outer `Err` means nothing may be
    /// assumed published; the inner one that only the offset commit failed.
    fn publish_at_least_once(&self, rated: &Rated) -> Result<Result<(), Error>, Error> {
        self.send_all(&rated.outputs)?;
        self.flush_checked()?;
        self.send_all(&rated.changelog)?;
        self.flush_checked()?;
        Ok(self.coordinator.commit(&rated.offsets).map_err(Error::from))
    }

    fn publish_exactly_once(&self, rated: &Rated) -> Result<Result<(), Error>, Error> {
        self.transaction(rated).map(Ok)
    }

    fn transaction(&self, rated: &Rated) -> Result<(), Error> {
        let timeout = self.config.kafka_timeout();
        self.producer.begin_transaction()?;
        let result = (|| -> Result<(), Error> {
            self.send_all(&rated.outputs)?;
            self.send_all(&rated.changelog)?;
            let metadata = self.coordinator.group_metadata().ok_or(Error::NoGroupMetadata)?;
            self.producer.send_offsets_to_transaction(&rated.offsets, &metadata, timeout)?;
            self.producer.commit_transaction(timeout)?;
            Ok(())
        })();
        if let Err(error) = result {
            if let Err(abort) = self.producer.abort_transaction(timeout) {
                tracing::warn!(partition = self.partition, error = %abort, "abort failed");
            }
            return Err(error);
        }
        Ok(())
    }

    fn send_all(&self, records: &[Outgoing]) -> Result<(), Error> {
        for out in records {
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&out.topic).key(&out.key);
            if let Some(payload) = &out.payload {
                record = record.payload(payload);
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            kafka::send_waiting(&self.producer, record)?;
        }
        Ok(())
    }

    fn flush_checked(&self) -> Result<(), Error> {
        let before = self.producer.context().failures.load(Ordering::Acquire);
        self.producer.flush(self.config.kafka_timeout())?;
        let after = self.producer.context().failures.load(Ordering::Acquire);
        if after != before {
            return Err(Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)));
        }
        Ok(())
    }

    fn report(&self, rated: &Rated, records: usize, took: Duration) {
        let guarantee = match self.config.processing_guarantee {
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
        };
        telemetry::batch_committed(self.partition, guarantee, records, took);
        for ((topic, outcome), n) in &rated.stats.inputs {
            telemetry::inputs(topic, outcome, *n);
        }
        for ((call_type, outcome), n) in &rated.stats.legs {
            telemetry::legs(call_type, outcome, *n);
        }
        telemetry::unpriced(rated.stats.unpriced);
        for (kind, n) in &rated.stats.credit_events {
            telemetry::credit_events(kind, *n);
        }
        for tenant in rated.undo.keys() {
            if let (Some(state), Some(t)) = (self.states.get(tenant), self.tables.tenant(tenant)) {
                telemetry::balance(&t.id, t.currency, state.balance());
            }
        }
    }
}

fn changelog_restore(
    config: &WorkerConfig,
    partition: i32,
    abandon: &AtomicBool,
) -> Result<HashMap<String, TenantState>, Error> {
    let mut attempt = 0;
    loop {
        match crate::changelog::restore(config, partition, &|| abandon.load(Ordering::Acquire)) {
            Ok(states) => return Ok(states),
            Err(e) if e.class() == Class::Retriable => {
                attempt += 1;
                tracing::warn!(partition, error = %e, attempt, "restore failed, retrying");
                std::thread::sleep(backoff(attempt));
            }
            Err(e) => return Err(e),
        }
        if abandon.load(Ordering::Acquire) {
            return Err(Error::ShutDown("restoring state"));
        }
    }
}

fn new_producer(config: &WorkerConfig, partition: i32, abandon: &AtomicBool) -> Result<TaskProducer, Error> {
    let producer: TaskProducer = kafka::producer(config, partition).create_with_context(DeliveryTracker::default())?;
    if config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        let mut attempt = 0;
        while let Err(e) = producer.init_transactions(config.kafka_timeout()) {
            attempt += 1;
            if abandon.load(Ordering::Acquire) {
                return Err(Error::ShutDown("initialising transactions"));
            }
            if crate::error::classify_kafka(&e) == Class::Fatal {
                return Err(e.into());
            }
            tracing::warn!(partition, error = %e, attempt, "init_transactions failed, retrying");
            std::thread::sleep(backoff(attempt));
        }
    }
    Ok(producer)
}

/// Exponential backoff from 100 ms up to 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7)).min(10_000))
}

fn dead_letter(topic: String, record: &Record, refusal: Refusal) -> Outgoing {
    let key = record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
    let dead = v1::DeadLetter {
        original: record.payload.clone().unwrap_or_default(),
        source_topic: record.topic.clone(),
        source_partition: record.partition,
        source_offset: record.offset,
        error_code: refusal.code.to_owned(),
        message: refusal.message,
        dead_at: None,
    };
    Outgoing { topic, key, payload: Some(dead.encode_to_vec()), partition: None }
}

fn count(stats: &mut Stats, output: &Output) {
    match output {
        Output::Usage(u) => {
            let call_type = match u.call_type {
                CallType::ConfIn => "conf_in",
                CallType::ConfOut => "conf_out",
            };
            let outcome = match u.outcome {
                UsageOutcome::Rated => "rated",
                UsageOutcome::Blocked(_) => "blocked",
            };
            *stats.legs.entry((call_type, outcome)).or_default() += 1;
            if u.flags.unpriced {
                stats.unpriced += 1;
            }
        }
        Output::Decision(_) => {}
        Output::Credit(c) => *stats.credit_events.entry(c.kind.label()).or_default() += 1,
    }
}
