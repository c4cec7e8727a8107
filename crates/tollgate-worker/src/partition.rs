//! The single writer of one input partition: it owns the state of every tenant whose records
//! land on that partition, rates its records in batches and commits each batch.
//!
//! ```text
//!   restore ──► collect ──► rate ──► publish ──► collect ...
//!                              ▲          │ error: abort, roll the batch's tenants back,
//!                              └──────────┘ back off, rate the same records again
//! ```
//!
//! Every batch ends in one Kafka transaction of one of the partition's two transactional
//! producers (`<prefix>-<changelog>-<partition>` and the same with `.1`, taking turns: see
//! [`Producers::txn`]) holding the batch's changelog records and the partition's input
//! offsets (a changelog record too, [`batch::Progress`]), in both processing guarantees;
//! under exactly-once the outputs are in it too, under at-least-once they are produced before
//! it by a plain idempotent producer and acknowledged before it commits. So the state of
//! record moves only by whole batches, and a worker that lost the partition (a paused
//! process, a network partition) is fenced by the next owner's `init_transactions` of both
//! ids: it can write no state after that, and it stops instead of fighting.
//!
//! The offsets are written with the state rather than committed to the group in the
//! transaction (`send_offsets_to_transaction`): that took two more requests in series per
//! transaction (`AddOffsetsToTxn`, `TxnOffsetCommit`), most of a batch's time at low rates.
//! The group's offsets are committed after each transaction without waiting; they may lag
//! after a crash, and the next owner's inbox drops the records the restored progress says are
//! rated.
//!
//! Rewinding is done by keeping the batch's records in memory until it commits: after an
//! abort the task rates exactly the same records again from the same state, which is what
//! seeking the partition back to its committed offsets would deliver, without racing the
//! records already fetched behind them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tollgate_core::{
    Applied, CallType, Catalog, FastState, Input, LedgerMovement, Output, Rater, RatingConfig, TenantState,
    UsageOutcome,
};

use crate::batch::{self, Manifest, Progress};
use crate::cancel::Cancel;
use crate::catch_up::CatchUp;
use crate::codec::{self, Refusal};
use crate::config::{ProcessingGuarantee, TopicKind, Topics, WorkerConfig};
use crate::error::Class;
use crate::inbox::{Backpressure, Inbox};
use crate::outbox::Outbox;
use crate::record::Record;
use crate::reference::{Pinned, ReferencePin, Tables};
use crate::states::States;
use crate::view::PartitionView;
use crate::{Error, changelog, kafka, partitioner, telemetry};

/// How many times a commit or an abort that timed out is resumed before the partition halts
/// (see `PartitionTask::commit_transaction` and `PartitionTask::abort`): with the default
/// `kafka_timeout_ms`, a minute in all. A client can be stuck for good: librdkafka 2.12
/// forgets every broker it knows when a metadata response lists none, which is what a lone
/// broker answers during its controlled shutdown, and then never connects again (its issue
/// 5301; seen in the fault suite). The partition's next owner initialises the transactional
/// ids again, which completes or aborts what this one left.
const RESUMES: u32 = 5;

/// Retries of one batch after which its partition counts as stalled.
const STALLED_AFTER: u32 = 3;
/// Buckets of the live states or of the dormant index (about half of them hold a tenant)
/// whose tenants' balance gauges one slice of the refresh sets (see
/// `PartitionTask::refresh_balances_under_load`).
const REFRESH_SLICE: usize = 4_096;
/// The most slices a cycle takes after one committed batch, however late it is: a cycle that
/// fell behind (its partition waited for a recorded batch's records, say) catches up over a
/// few batches, each held back by tens of milliseconds at most, not one held for a second.
const MOST_SLICES_PER_BATCH: usize = 32;

/// Where a refresh of the balance gauges under load goes on with its next slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    /// At this bucket of the live states.
    Live(usize),
    /// At this bucket of the dormant index (the live states are done).
    Dormant(usize),
}

/// The buckets of one slice of a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slice {
    /// Of the live states.
    Live(std::ops::Range<usize>),
    /// Of the dormant index.
    Dormant(std::ops::Range<usize>),
}

/// The cycle of the balance gauges' refresh: started when a task starts and then every
/// [`telemetry::GAUGE_REFRESH`] once the last one ended, it goes through the live states'
/// buckets, then the dormant index's, [`REFRESH_SLICE`] buckets at a time. The task asks for
/// the slices: after each committed batch as many as keep the cycle on schedule to end within
/// the period ([`GaugeCycle::owed`]), and while it waits for records, one after the other
/// until a record arrives. A cycle under way is never started over: one that started over
/// every period, a slice per batch, never reached the last buckets of a partition whose
/// batches were fewer in a period than its slices (a million tenants are 512 slices), and
/// those tenants' series were dropped by the exporter.
#[derive(Debug)]
struct GaugeCycle {
    /// When the cycle under way, or the last one, started.
    started: Instant,
    /// Where its next slice starts; `None` when no cycle is under way.
    next: Option<Refresh>,
    /// Slices taken in the cycle under way.
    taken: usize,
}

impl GaugeCycle {
    /// No cycle under way; the next is due [`telemetry::GAUGE_REFRESH`] after `now`.
    fn new(now: Instant) -> Self {
        GaugeCycle { started: now, next: None, taken: 0 }
    }

    /// Starts a cycle at the first live bucket.
    fn start(&mut self, now: Instant) {
        self.started = now;
        self.next = Some(Refresh::Live(0));
        self.taken = 0;
    }

    /// Starts a cycle when none is under way and the last one started `period` ago.
    fn start_if_due(&mut self, now: Instant, period: Duration) {
        if self.next.is_none() && now.saturating_duration_since(self.started) >= period {
            self.start(now);
        }
    }

    /// How many slices the cycle under way should take now to end within `period` of its
    /// start, for `live` and `dormant` buckets: what its share of the period elapsed asks for
    /// less what it took, at least one and at most [`MOST_SLICES_PER_BATCH`] (a cycle late
    /// catches up over a few batches). 0 when no cycle is under way.
    fn owed(&self, now: Instant, period: Duration, live: usize, dormant: usize) -> usize {
        if self.next.is_none() {
            return 0;
        }
        let total = live.div_ceil(REFRESH_SLICE) + dormant.div_ceil(REFRESH_SLICE);
        let elapsed = now.saturating_duration_since(self.started).min(period);
        let due = (total as u128 * elapsed.as_nanos()).div_ceil(period.as_nanos().max(1)) as usize;
        due.saturating_sub(self.taken).clamp(1, MOST_SLICES_PER_BATCH)
    }

    /// The next slice of the cycle under way (`None`: none is, or `stop` says to stop
    /// before it), for live states and a dormant index of `live` and `dormant` buckets.
    fn next_slice(&mut self, live: usize, dormant: usize, stop: &dyn Fn() -> bool) -> Option<Slice> {
        let next = self.next?;
        if stop() {
            return None;
        }
        self.taken += 1;
        Some(match next {
            Refresh::Live(from) => {
                let to = from + REFRESH_SLICE;
                self.next = Some(if to < live { Refresh::Live(to) } else { Refresh::Dormant(0) });
                Slice::Live(from..to)
            }
            Refresh::Dormant(from) => {
                let to = from + REFRESH_SLICE;
                self.next = (to < dormant).then_some(Refresh::Dormant(to));
                Slice::Dormant(from..to)
            }
        })
    }
}

/// How often a catching-up task holding records looks again whether an input behind has
/// reached its end without a record (a transaction marker ends it).
const CATCH_UP_LOOK_AGAIN: Duration = Duration::from_millis(10);

/// What the partition task needs from the group consumer.
pub trait Coordinator: Send + Sync {
    /// A transaction carrying `offsets` (in the changelog's progress record) committed:
    /// commit them through the group consumer too, without waiting (the changelog is what
    /// counts; this keeps the group's position, and group tools, in step).
    fn committed(&self, offsets: &TopicPartitionList);
    /// The task stopped working on its partition for good (fenced or failed).
    fn halted(&self, partition: i32, halt: Halt);
    /// Rating a record of `partition` panicked: the task stopped, its state (tainted by the
    /// half-done rating) dropped with it. Start the partition again from its changelog, with
    /// the record among those it refuses (see [`Poison`]).
    fn poisoned(&self, partition: i32, poison: Poison);
    /// Where the task publishes its committed state for the tenant API (none: not served).
    fn view(&self, _partition: i32) -> Option<Arc<PartitionView>> {
        None
    }
    /// The input offsets the group committed for `partition` (the restored progress record
    /// may be ahead: the group's are committed after it, without waiting).
    fn committed_offsets(&self, _partition: i32) -> BTreeMap<String, i64> {
        BTreeMap::new()
    }
    /// Per input of `partition`: its log start and its last stable offset now; empty when
    /// unknown (no catch-up).
    fn input_ends(&self, _partition: i32) -> BTreeMap<String, (i64, i64)> {
        BTreeMap::new()
    }
    /// The group consumer's position in each input of `partition`: the offset after the last
    /// record (or transaction marker) it handed out.
    fn positions(&self, _partition: i32) -> BTreeMap<String, i64> {
        BTreeMap::new()
    }
    /// Turns the polling thread has finished: a record it handed out during a finished turn
    /// is in its task's inbox.
    fn turns(&self) -> u64 {
        0
    }
    /// Stops fetching the inputs `topics` of `partition` until [`Coordinator::release`]: a
    /// recorded batch waits for records of its other inputs, and those inputs' records would
    /// pile up in memory meanwhile. What was fetched and not handed out yet is fetched again.
    /// `task` is the asking task's cancellation: a task given up on while it waited (its
    /// partition may have a new task since) changes nothing.
    fn hold(&self, _partition: i32, _topics: &[String], _task: &Arc<Cancel>) {}
    /// Fetches again what [`Coordinator::hold`] stopped (unless backpressure pauses the
    /// partition, which then resumes it with the rest).
    fn release(&self, _partition: i32, _task: &Arc<Cancel>) {}
}

/// How often a wait that cannot also wait on the task's cancellation looks at it.
const CANCEL_LOOK: Duration = Duration::from_millis(200);

/// A record whose rating panicked. A panic is a bug, not a refusal the rater knows how to
/// make, and it may leave the tenant's state half changed; so the task that met it stops, and
/// the partition is restored from its changelog and started again with the record here. The
/// new task refuses it (`rating_panicked`, dead-lettered with the panic's message) instead of
/// rating it, and rates everything else. Rating is a function of the state and the record, so
/// any owner of the partition panics on the same record at the same point, and makes the same
/// dead letter: one bad record costs a restore, not the partition or the worker.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Poison {
    /// The record's topic.
    pub topic: String,
    /// The record's offset.
    pub offset: i64,
    /// What the panic said.
    pub message: String,
}

/// The dead-letter code of a record whose rating panicked (see [`Poison`]).
pub const RATING_PANICKED: &str = "rating_panicked";

/// Why a partition task stopped working on its partition before being told to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Halt {
    /// Another worker initialised the partition's transactional id: it owns the partition.
    Fenced(String),
    /// A fatal error: the worker must exit and be restarted.
    Failed(String),
    /// Kafka refused the task (a missing ACL, rejected credentials): the worker exits with
    /// the cause's exit code rather than retry.
    Denied(crate::access::AccessError),
}

impl Halt {
    /// What a fatal error of partition `partition`'s task means: Kafka refusing it access
    /// (named, as [`crate::access`] tells it) or another fatal error.
    pub fn of(config: &WorkerConfig, partition: i32, error: &Error) -> Halt {
        let denied = match error {
            Error::Access(access) => Some(access.clone()),
            Error::Kafka(e) => crate::access::of_kafka(config, e, || {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                crate::access::task_resource(config, partition, code)
            }),
            _ => None,
        };
        let reason = match error {
            // Already says which partition halted: the worker's error says it once.
            Error::Halted { reason, .. } => reason.clone(),
            _ => error.to_string(),
        };
        denied.map_or_else(|| Halt::Failed(reason), Halt::Denied)
    }

    /// What an error that kept partition `partition`'s task from starting means: fenced (the
    /// partition already has a newer owner; the task stops quietly, as a running task that is
    /// fenced does), Kafka refusing access, or a failed start.
    pub fn of_start(config: &WorkerConfig, partition: i32, error: &Error) -> Halt {
        if error.class() == Class::Fenced {
            return Halt::Fenced(error.to_string());
        }
        match Halt::of(config, partition, error) {
            Halt::Failed(reason) => Halt::Failed(format!("could not start: {reason}")),
            other => other,
        }
    }
}

/// A message to a partition task.
#[derive(Debug)]
pub enum Command {
    /// An input record of this partition.
    Record(Record),
    /// Finish the current batch, commit it, and exit.
    Stop,
}

/// Counts delivery failures of a producer and keeps the first failure's code, so a flush
/// can tell whether everything arrived and why not. Failures are logged once per batch by
/// the task, not once per record (an abort purges thousands at a time).
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failures: AtomicU64,
    first_error: Mutex<Option<RDKafkaErrorCode>>,
    /// The first delivery refused by an ACL, with its topic (to name it).
    denied: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl DeliveryTracker {
    /// Deliveries that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Deliveries that failed since the last call (counting from zero again): what a batch's
    /// check counts, including the failures whose reports were served while its records were
    /// being queued (`kafka::send_waiting` serves reports while librdkafka's queue is full).
    fn take_failures(&self) -> u64 {
        self.failures.swap(0, Ordering::AcqRel)
    }

    /// The first delivery an ACL refused, as an access error naming its topic.
    pub fn denied(&self) -> Option<crate::access::AccessError> {
        let denied = self.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        denied
            .as_ref()
            .map(|(code, topic)| crate::access::AccessError::authorization(&format!("write topic {topic}"), *code))
    }

    /// The code of the first failure, left in place for [`DeliveryTracker::take_first_error`].
    pub fn first_error(&self) -> Option<RDKafkaErrorCode> {
        *self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The code of the first failure since the last call.
    fn take_first_error(&self) -> Option<RDKafkaErrorCode> {
        self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            self.failures.fetch_add(1, Ordering::AcqRel);
            let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
            if crate::access::Cause::of_code(code).is_some() {
                let mut denied = self.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                denied.get_or_insert_with(|| (code, rdkafka::Message::topic(message).to_owned()));
            }
            let mut first = self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if first.is_none() {
                *first = Some(error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail));
            }
        }
    }
}

type TaskProducer = BaseProducer<DeliveryTracker>;

/// Per-batch counts for telemetry.
#[derive(Default)]
struct Stats {
    inputs: BTreeMap<(&'static str, &'static str), u64>,
    legs: BTreeMap<(&'static str, &'static str), u64>,
    unpriced: u64,
    credit_events: BTreeMap<&'static str, u64>,
    dead_letters: BTreeMap<&'static str, u64>,
    /// Reference lookups as of the batch's pin that found the version unknown.
    reference_versions_unknown: u64,
}

/// See [`PartitionTask::spare`].
#[derive(Default)]
struct Spare {
    carry: VecDeque<Record>,
    outputs: Outbox,
    changelog: Outbox,
    /// How many tenants the last committed batch touched: the next batch's table of undos
    /// starts with room for as many, instead of growing by doubling and moving its entries
    /// (each holds a tenant's snapshot) at every step. The table itself is not kept: a large
    /// batch's would hold its memory for the small ones after it.
    touched: usize,
}

impl Spare {
    /// Keeps a committed batch's outboxes, emptied, and the number of tenants it touched.
    fn keep(&mut self, rated: Rated) {
        let Rated { mut outputs, mut changelog, undo, .. } = rated;
        outputs.clear();
        changelog.clear();
        (self.outputs, self.changelog, self.touched) = (outputs, changelog, undo.len());
    }
}

/// A rated batch, ready to publish.
struct Rated {
    outputs: Outbox,
    changelog: Outbox,
    /// How far the inputs are rated once the batch commits: the progress record's value.
    progress: Progress,
    /// Per touched tenant: its snapshot before the batch (`None` for a tenant new in this
    /// batch) and the batch's journal of what the snapshot leaves out, to roll back with.
    undo: Undos,
    stats: Stats,
}

/// Per touched tenant, how to put it back; looked up once per record, so with the fast hasher.
type Undos = HashMap<String, Undo, FastState>;

/// How to put one tenant back as it was before a batch.
struct Undo {
    before: Option<TenantState>,
    journal: changelog::Journal,
    /// The tag of the window segment the batch writes for the tenant: its first record of
    /// the tenant, which no other committed batch holds.
    tag: String,
    /// What the batch did to the tenant's window segments.
    segments: changelog::SegmentsUndo,
}

/// Why the task rates nothing more (until it is stopped).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Idle {
    /// The group is handing the partition over.
    Migrating,
    /// Fenced, failed, or given up at shutdown.
    Halted,
}

/// The producers of a partition task.
struct Producers {
    /// Transactional (`<prefix>-<changelog>-<partition>` and the same with `.1`): changelog
    /// records and input offsets in both guarantees, outputs too under exactly-once. The
    /// transactions take turns between the two (see [`Producers::txn`]).
    txns: [TaskProducer; 2],
    /// Which of `txns` writes the next transaction.
    turn: usize,
    /// At-least-once only: outputs, outside the transaction.
    outputs: Option<TaskProducer>,
}

impl Producers {
    /// The transactional producer of the transaction in progress, or of the next one.
    ///
    /// Two transactional ids take turns because a transaction's commit returns before the
    /// coordinator has written its markers, and until it has, the next transaction of the
    /// same id cannot add a partition: the coordinator refuses it with
    /// `CONCURRENT_TRANSACTIONS`, and librdkafka tries again after a fixed 20 ms, which was
    /// most of a transaction's time. The other id's last transaction ended a whole batch ago.
    /// Order is kept: a transaction begins only after the previous one's commit returned,
    /// which makes it final (a restore that meets its markers missing waits for them).
    fn txn(&self) -> &TaskProducer {
        &self.txns[self.turn]
    }

    /// How to react to a failed batch. A record that cannot be sent or delivered because its
    /// producer failed for good says only `Fatal`; the producer's own fatal error says why. A
    /// transactional producer fenced by the partition's next owner makes this task a zombie,
    /// not the worker broken; a failed at-least-once outputs producer is replaced (see
    /// [`PartitionTask::replace_failed_outputs_producer`]) and the batch retried.
    fn class_of(&self, error: &Error) -> Class {
        if !crate::error::is_failed_producer(error) {
            error.class()
        } else if self.fenced().is_some() {
            Class::Fenced
        } else if self.outputs.as_ref().and_then(|p| p.client().fatal_error()).is_some() {
            Class::Retriable
        } else {
            Class::Fatal
        }
    }

    /// Why a transactional producer failed for good, when the partition's next owner fenced it.
    fn fenced(&self) -> Option<String> {
        let fenced = |p: &TaskProducer| p.client().fatal_error().filter(|(code, _)| crate::error::fences(*code));
        self.txns.iter().find_map(fenced).map(|(_, reason)| reason)
    }

    /// `error`, or [`Error::Fenced`] with the producer's own fatal error when it is a bare
    /// `Fatal` from a fenced producer: what a transaction's error says once it leaves
    /// [`PartitionTask::transaction`], so that it is read as fenced wherever it goes (a batch,
    /// or a start whose producers are gone with it).
    fn explained(&self, error: Error) -> Error {
        match self.fenced() {
            Some(reason) if crate::error::is_failed_producer(&error) => Error::Fenced(reason),
            _ => error,
        }
    }
}

/// The owner of one partition.
pub struct PartitionTask {
    partition: i32,
    partition_count: i32,
    config: Arc<WorkerConfig>,
    tables: Arc<Tables>,
    coordinator: Arc<dyn Coordinator>,
    rater: Rater,
    states: States,
    /// By tenant: its window segments in the changelog (see [`changelog::Segments`]).
    segments: HashMap<String, changelog::Segments, FastState>,
    producers: Producers,
    /// Cancelled when the worker shuts down or gives the partition up: stop retrying.
    cancel: Arc<Cancel>,
    /// Set when the task must rate nothing more.
    idle: Option<Idle>,
    /// Records received and not yet in a batch, each input's in offset order.
    carry: VecDeque<Record>,
    /// Buffers kept from batch to batch (empty between batches), so that a batch does not
    /// grow its queues and outboxes from nothing, copying them at each doubling and touching
    /// fresh memory: what [`PartitionTask::collect_exact`] leaves in hand, and the outputs
    /// and changelog records of the last batch.
    spare: Spare,
    /// The inputs still behind where they ended when the partition was assigned.
    catch_up: CatchUp,
    /// The composition of the next batch, already in the changelog (at-least-once).
    next: Option<Manifest>,
    /// Whether the changelog holds a manifest for this partition (to be replaced or cleared).
    manifest_in_changelog: bool,
    /// How far the inputs are rated: the changelog's progress record as last committed.
    progress: Progress,
    /// A stop command was taken from the inbox while a batch was in flight.
    stopping: bool,
    /// When the last batch was collected, however it was: a batch from idle waits for company
    /// until the commit interval after it (see [`Inbox::take_batch`]).
    last_batch: Option<Instant>,
    /// The refresh of the tenants' balance gauges (see `refresh_balances_under_load`).
    gauges: GaugeCycle,
    /// The tenant API's view of the partition: the committed state, published after each
    /// commit for the tenants the batch touched.
    view: Option<Arc<PartitionView>>,
    /// Records whose rating panicked in an earlier task of the partition: refused.
    poisons: Vec<Poison>,
}

impl std::fmt::Debug for PartitionTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionTask")
            .field("partition", &self.partition)
            .field("tenants", &self.states.len())
            .finish()
    }
}

/// What a partition count changed under the state means, for the errors that find it.
const REPARTITIONED: &str = "tollgate cannot move a tenant's state to another partition, and rated with none its \
     balance, lots and applied ids would be missing: partitions must not be added to a deployment's topics (see \
     \"Partitioning\" in docs/DESIGN.md)";

impl PartitionTask {
    /// Fences any previous owner of the partition (initialising its transactional ids aborts
    /// whatever that owner left open, so the restore that follows reads only committed
    /// state), restores the partition's state, and rewrites tenants still in the changelog's
    /// earlier layout.
    pub fn start(
        partition: i32,
        partition_count: i32,
        config: Arc<WorkerConfig>,
        tables: Arc<Tables>,
        coordinator: Arc<dyn Coordinator>,
        cancel: Arc<Cancel>,
        poisons: Vec<Poison>,
    ) -> Result<Self, Error> {
        // A partition the topics did not have when this worker started: partitions were
        // added, and the tenants' records now go where their state is not.
        if partition >= partition_count {
            return Err(Error::Topology(format!(
                "partition {partition} was assigned, but the inputs had {partition_count} partitions when this \
                 worker started: partitions were added. {REPARTITIONED}"
            )));
        }
        // This task's view of the tenant API, taken now: a task left behind by a revoke that
        // finishes its start after the partition came back here publishes into its own view,
        // which the revoke removed, not into its successor's.
        let view = coordinator.view(partition);
        let txns = transactional_producers(&config, partition, &cancel)?;
        let outputs = match config.processing_guarantee {
            ProcessingGuarantee::AtLeastOnce => Some(outputs_producer(&config)?),
            ProcessingGuarantee::ExactlyOnce => None,
        };
        let restored = changelog_restore(&config, partition, &cancel)?;
        if let Some((tenant, home)) = restored.states.misplaced(partition, partition_count) {
            return Err(Error::Topology(format!(
                "changelog partition {partition} holds the state of tenant {tenant}, which murmur2 puts on partition \
                 {home} of {partition_count}: the topics had another partition count when it was written. \
                 {REPARTITIONED}"
            )));
        }
        let config_at_least_once = config.processing_guarantee == ProcessingGuarantee::AtLeastOnce;
        // The group's committed offsets, asked once: where the tenant API's view starts and
        // where the catch-up counts an input's backlog from.
        let catching_up = config.catch_up_wait_ms > 0;
        let mut committed =
            if view.is_some() || catching_up { coordinator.committed_offsets(partition) } else { BTreeMap::new() };
        // The changelog's progress is the record; the group's offsets may lag it after a crash.
        for (topic, &next) in &restored.progress.next {
            let at = committed.entry(topic.clone()).or_insert(next);
            *at = (*at).max(next);
        }
        if !restored.progress.next.is_empty() {
            // Brings the group's position up to date even if nothing is left to rate.
            coordinator.committed(&offsets_of(&restored.progress, partition));
        }
        let catch_up = match catching_up {
            true => CatchUp::new(&committed, &coordinator.input_ends(partition)),
            false => CatchUp::default(),
        };
        if !catch_up.done() {
            tracing::info!(partition, behind = ?catch_up.behind(), "catching up: rating in record time across the inputs");
        }
        let rater = Rater::new(RatingConfig { retention_seconds: config.retention_seconds });
        let mut task = PartitionTask {
            partition,
            partition_count,
            config,
            tables,
            coordinator,
            rater,
            states: restored.states,
            segments: restored.segments,
            producers: Producers { txns, turn: 0, outputs },
            cancel,
            idle: None,
            carry: VecDeque::new(),
            spare: Spare::default(),
            catch_up,
            stopping: false,
            last_batch: None,
            manifest_in_changelog: restored.manifest.is_some(),
            progress: restored.progress,
            next: restored.manifest.filter(|_| config_at_least_once),
            gauges: GaugeCycle::new(Instant::now()),
            view: None,
            poisons,
        };
        task.migrate_layout(&restored.rewrite, &restored.rewrite_windows, &restored.retire)?;
        // Given up meanwhile: the partition's gauges may be a successor's by now.
        if task.cancel.is_cancelled() {
            return Err(Error::ShutDown("starting"));
        }
        if let Some(view) = &view {
            view.restored(&task.states, committed);
        }
        task.view = view;
        // The gauges of the restored tenants are set a slice at a time, as any refresh is, so
        // that the first batch does not wait for them all (about a second per million).
        task.gauges.start(Instant::now());
        telemetry::partition_stalled(partition, false);
        Ok(task)
    }

    /// Runs until told to stop: collects batches from `inbox` and commits them. Records the
    /// restored state already holds are dropped (the group's offsets may lag the changelog's).
    pub fn run(mut self, mut inbox: Inbox) {
        inbox.skip_rated(self.progress.clone());
        let inbox = &mut inbox;
        // A cancelled task rates nothing more: its partition was given up here, and a batch
        // rated now (one its manifest names, say) would write for a zombie.
        while !self.stopping && !self.cancel.is_cancelled() {
            let recorded = self.next.take();
            let (batch, stop, exact) = match &recorded {
                Some(manifest) => self.collect_exact(inbox, manifest),
                None => {
                    let (batch, stop) = self.collect(inbox);
                    (batch, stop, false)
                }
            };
            self.stopping |= stop;
            if !batch.is_empty() {
                // Every batch counts, a recorded or catching-up one too: a quiet partition
                // commits at most once per interval (see `Inbox::take_batch`).
                self.last_batch = Some(Instant::now());
            }
            // Idle: the records are left uncommitted to the partition's next owner.
            if !batch.is_empty() && self.idle.is_none() && !self.cancel.is_cancelled() {
                let Some((pin, as_recorded)) = self.reference_pin(recorded.as_ref()) else { continue };
                // A recorded batch whose records did not all come, or whose reference data
                // cannot be had, is not the batch its manifest names: it is recorded again, as
                // it is, before any output.
                self.commit_batch(batch, recorded.is_some() && exact && as_recorded, pin, inbox);
            }
        }
        if let Some(outputs) = &self.producers.outputs {
            let _ = kafka::flush(outputs, self.config.kafka_timeout());
        }
        tracing::info!(partition = self.partition, skipped = inbox.skipped(), "partition task stopped");
    }

    /// A batch of whatever arrives (see [`Inbox::take_batch`]); while the partition is idle,
    /// this worker's ownership of its tenants' balances is kept visible.
    fn collect(&mut self, inbox: &mut Inbox) -> (Vec<Record>, bool) {
        if !self.catch_up.done()
            && let Some(taken) = self.collect_catching_up(inbox)
        {
            return taken;
        }
        let mut carry = std::mem::take(&mut self.carry);
        let batch = inbox.take_batch(
            &mut carry,
            self.config.batch_size,
            self.config.commit_interval(),
            self.last_batch,
            |arrived| self.refresh_balances_while_waiting(arrived),
        );
        self.carry = carry;
        (batch.records, batch.stop)
    }

    /// While an input is behind (see [`crate::catch_up`]): the next batch in record time
    /// across the inputs, waiting for an input behind that has no record in hand. `None` once
    /// every input caught up with nothing to rate yet: then batches are taken as they arrive.
    fn collect_catching_up(&mut self, inbox: &mut Inbox) -> Option<(Vec<Record>, bool)> {
        // Everything waiting is taken in (up to a bound: a batch of the input behind may be
        // queued behind a backlog of the other one).
        let bound = self.config.batch_size.saturating_mul(4);
        loop {
            let turns = self.coordinator.turns();
            let mut stop = false;
            while self.carry.len() < bound {
                match inbox.try_recv() {
                    Ok(Command::Record(record)) => self.carry.push_back(record),
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.catch_up.observe(&self.carry, turns);
            if !self.catch_up.done() {
                let positions = self.coordinator.positions(self.partition);
                self.catch_up.positions(&positions, self.coordinator.turns());
            }
            if self.catch_up.done() && !stop {
                tracing::info!(partition = self.partition, "caught up: rating records as they arrive");
                return None;
            }
            let batch = batch::select(&mut self.carry, self.config.batch_size, &self.catch_up.behind());
            if !batch.is_empty() || stop {
                self.catch_up.released();
                return Some((batch, stop));
            }
            let holding = !self.carry.is_empty();
            if holding && self.catch_up.held_too_long(self.config.catch_up_wait()) {
                // From now on in arrival order: the records held are the next batch.
                telemetry::catch_up_given_up(self.partition, &self.catch_up.give_up());
                return None;
            }
            // Held records wait for the input behind (its position is looked at again soon);
            // with none held, for anything.
            let wait = if holding { CATCH_UP_LOOK_AGAIN } else { Duration::from_millis(100) };
            match inbox.recv_timeout(wait) {
                Ok(Command::Record(record)) => self.carry.push_back(record),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    let batch = batch::select(&mut self.carry, self.config.batch_size, &self.catch_up.behind());
                    return Some((batch, true));
                }
                Err(RecvTimeoutError::Timeout) => self.refresh_balances_while_waiting(&|| inbox.arrived()),
            }
        }
    }

    /// Exactly the batch `manifest` names (records after it are carried over), and whether it
    /// is all there (each input's first and last record of it: records come in offset order).
    /// It waits for the batch's records for as long as they can still come: rating part of the
    /// batch would give its outputs, which the previous owner may have produced already, other
    /// bytes. A new owner fetching from group offsets that lag far behind reads through what is
    /// rated already first (dropped by the inbox), which may take longer than any fixed wait:
    /// so the wait ends when each input delivered a record at or past the batch's last offset
    /// (no more of the batch's are to come), or when the records missing are gone: after
    /// `kafka_timeout × 3` in which nothing brought the batch closer (neither one of its
    /// records nor a record rated already), [`batch::missing_can_come`] says none can come
    /// (read from past the batch, deleted, lost with the log's end, or of a topic no longer an
    /// input), and a turn of the polling thread since has brought none of them. Then the batch
    /// is rated with what came, recorded again first (`false`). Records still in the log and
    /// not passed (their leader is away, say) are waited for, the partition reported stalled
    /// meanwhile, for as long as it takes; the inputs the batch no longer awaits are not
    /// fetched meanwhile (see [`Coordinator::hold`]), so that their records do not pile up
    /// behind it. Should records pile up all the same (the pause failed), what it holds is
    /// bounded (five times what pauses fetching), past which it is rated with what came.
    fn collect_exact(&mut self, inbox: &mut Inbox, manifest: &Manifest) -> (Vec<Record>, bool, bool) {
        let mut batch = Vec::with_capacity(manifest.len_bound().min(self.config.batch_size));
        let mut later = std::mem::take(&mut self.spare.carry);
        let mut passed: BTreeSet<String> = BTreeSet::new();
        for record in self.carry.drain(..) {
            if manifest.contains(&record) {
                batch.push(record);
            } else {
                if manifest.past(&record) {
                    passed.insert(record.topic.clone());
                }
                later.push_back(record);
            }
        }
        let mut stop = false;
        let mut skipped = inbox.skipped();
        // The wait starts again on progress towards the batch only: one of its records, or
        // records rated already read through. Records of an input already past the batch
        // (say legs, while a credit command of the batch is gone) do not keep it waiting.
        let patience = self.config.kafka_timeout() * 3;
        let mut deadline = Instant::now() + patience;
        let mut stalled = false;
        // Whether inputs the batch no longer awaits are held (not fetched) while it waits.
        let mut holding = false;
        // The missing records are gone, once the polling thread finished the turn after this.
        let mut gone_at_turn: Option<u64> = None;
        // What the wait may hold of the records behind the batch: five times what pauses the
        // partition's fetching in the inbox.
        let hold_at_most = Backpressure::for_batch_size(self.config.batch_size).pause_at.saturating_mul(5);
        while manifest.awaited(&batch, &passed).next().is_some() {
            match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Command::Record(record)) if manifest.contains(&record) => {
                    batch.push(record);
                    deadline = Instant::now() + patience;
                    gone_at_turn = None;
                }
                Ok(Command::Record(record)) => {
                    if manifest.past(&record) {
                        passed.insert(record.topic.clone());
                    }
                    later.push_back(record);
                    // Held like this for as long as before (the patience) whatever their
                    // number; waited past that, their inputs are paused, and bounded should
                    // they come all the same.
                    if stalled && later.len() > hold_at_most {
                        // Backpressure pauses a partition by what waits in its inbox, and the
                        // records held here are out of it: past this, memory goes first.
                        tracing::warn!(
                            partition = self.partition,
                            held = later.len(),
                            "records behind the recorded batch fill the memory set aside while waiting for its missing ones: rating it without them"
                        );
                        break;
                    }
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    // An incomplete batch is not rated: the next owner finds the manifest.
                    batch.clear();
                    stop = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) if inbox.skipped() > skipped => {
                    // Reading through records rated already: the batch's may still come.
                    skipped = inbox.skipped();
                    deadline = Instant::now() + patience;
                    gone_at_turn = None;
                    tracing::info!(
                        partition = self.partition,
                        skipped,
                        "still reading through records rated already before the recorded batch"
                    );
                    self.refresh_balances_while_waiting(&|| inbox.arrived());
                }
                Err(RecvTimeoutError::Timeout) if gone_at_turn.is_some() => {
                    // Gone, unless a record handed out before the position was read is still
                    // on its way: it is in the inbox once the polling thread finished a turn.
                    if gone_at_turn.is_some_and(|turn| self.coordinator.turns() > turn) {
                        break;
                    }
                    deadline = Instant::now() + CATCH_UP_LOOK_AGAIN;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // The position first: a record it counts as handed out is in the inbox by
                    // the end of the polling thread's turn (see `gone_at_turn`).
                    let positions = self.coordinator.positions(self.partition);
                    let turn = self.coordinator.turns();
                    let topics = &self.config.topics;
                    let inputs = [topics[TopicKind::CallLegs].as_str(), topics[TopicKind::CreditCommands].as_str()];
                    let ends = self.coordinator.input_ends(self.partition);
                    // Where the consumer reads from: its position, else (nothing fetched yet)
                    // the group's committed offset.
                    let mut reading = self.coordinator.committed_offsets(self.partition);
                    reading.extend(positions);
                    if !batch::missing_can_come(manifest, &batch, &passed, &inputs, &ends, &reading) {
                        gone_at_turn = Some(turn);
                        deadline = Instant::now() + CATCH_UP_LOOK_AGAIN;
                        continue;
                    }
                    // Still in the log, and not passed: its leader is away, say. Rated without
                    // them, the batch would give other bytes than the outputs already out.
                    deadline = Instant::now() + patience;
                    tracing::warn!(
                        partition = self.partition,
                        ?manifest,
                        records = batch.len(),
                        "records of the recorded batch are still in their topics but did not come: waiting for them"
                    );
                    telemetry::partition_stalled(self.partition, true);
                    stalled = true;
                    // Their records would pile up behind the batch for as long as it waits.
                    let awaited: BTreeSet<&str> = manifest.awaited(&batch, &passed).map(|(t, _)| t.as_str()).collect();
                    let hold: Vec<String> =
                        inputs.iter().filter(|t| !awaited.contains(*t)).map(|t| (*t).to_owned()).collect();
                    if !hold.is_empty() {
                        self.coordinator.hold(self.partition, &hold, &self.cancel);
                        holding = true;
                    }
                    self.refresh_balances_while_waiting(&|| inbox.arrived());
                }
            }
        }
        if holding {
            self.coordinator.release(self.partition, &self.cancel);
        }
        if stalled {
            telemetry::partition_stalled(self.partition, false);
        }
        let exact = manifest.whole(&batch);
        if !exact && !stop {
            tracing::warn!(
                partition = self.partition,
                ?manifest,
                records = batch.len(),
                "records of the recorded batch are gone (offsets moved, or deleted): rating those that came, recorded again"
            );
        }
        // The carry, drained, keeps its buffer for the next call.
        self.spare.carry = std::mem::replace(&mut self.carry, later);
        // Not through `collect_catching_up`: an input's last record may be in this batch.
        self.catch_up.observe(&batch, 0);
        (batch, stop, exact)
    }

    /// The reference data a batch is rated as of: the position its manifest names (the
    /// previous owner's, after a crash: waited for until this worker's tables reach it, for
    /// up to three Kafka timeouts), else the tables' position now; and whether it is the
    /// recorded one. Every attempt at the batch uses the same, so rating it again gives the
    /// same outputs even when a tenant, a user or a rate card changed in between.
    ///
    /// Tables that do not reach the recorded position in time cannot answer as of it (they
    /// answer with what they hold, and would answer otherwise once they got there): the batch
    /// is then pinned to their position now, and recorded again with it, so that this
    /// worker's retries and a successor rate it alike.
    /// `None`: the task was cancelled while it waited (the batch is left to the next owner).
    fn reference_pin(&self, recorded: Option<&Manifest>) -> Option<(ReferencePin, bool)> {
        let Some(pin) = recorded.and_then(|m| m.reference.clone()) else { return Some((self.tables.position(), true)) };
        let deadline = Instant::now() + self.config.kafka_timeout() * 3;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.tables.wait_until(left.min(CANCEL_LOOK), |tables| tables.position().covers(&pin)) {
                return Some((pin, true));
            }
            if self.cancel.is_cancelled() {
                return None;
            }
            if left <= CANCEL_LOOK {
                let at = self.tables.position();
                tracing::warn!(
                    partition = self.partition,
                    ?pin,
                    ?at,
                    "the reference data did not reach the recorded batch's position: rating with what is at hand, recorded again"
                );
                return Some((at, false));
            }
        }
    }

    /// Moves what already waits in `inbox` to the carry (up to a batch), without blocking.
    fn take_ready(&mut self, inbox: &mut Inbox) {
        while !self.stopping && self.carry.len() < self.config.batch_size {
            match inbox.try_recv() {
                Ok(Command::Record(record)) => self.carry.push_back(record),
                Ok(Command::Stop) => self.stopping = true,
                Err(_) => break,
            }
        }
    }

    /// Rates and publishes one batch, retrying with backoff until it is published, the
    /// partition is handed over, the task is fenced or fails, or the worker stops.
    fn commit_batch(&mut self, batch: Vec<Record>, recorded: bool, pin: ReferencePin, inbox: &mut Inbox) {
        let batch = batch::merge(batch);
        let at_least_once = self.producers.outputs.is_some();
        let mut attempt = 0u32;
        // Under at-least-once the batch's composition must be in the changelog before any of
        // its outputs is visible; a batch named by the previous transaction already is.
        let mut recorded = recorded || !at_least_once;
        loop {
            let started = Instant::now();
            let result = if recorded {
                Ok(())
            } else {
                self.write_manifest(&Manifest::of(&batch).pinned(pin.clone())).map(|()| recorded = true)
            };
            let rated = match self.rate(&batch, &pin) {
                Ok(rated) => rated,
                Err(poison) => return self.poisoned(poison),
            };
            // What already waits leaves the inbox now, so that backpressure counts only the
            // records behind the next batch (under at-least-once the transaction takes in
            // what arrives meanwhile too, before it names the next batch).
            self.take_ready(inbox);
            let error = match result.and_then(|()| self.publish(&rated, inbox)) {
                Ok(next) => {
                    self.manifest_in_changelog = next.is_some();
                    self.next = next;
                    self.progress = rated.progress.clone();
                    self.coordinator.committed(&offsets_of(&rated.progress, self.partition));
                    self.publish_view(&rated);
                    if attempt >= STALLED_AFTER {
                        telemetry::partition_stalled(self.partition, false);
                    }
                    self.report(&rated, batch.len(), started.elapsed());
                    self.spare.keep(rated);
                    // Under load the partition is never idle: the balances of the tenants no
                    // batch touches are kept visible here, a slice at a time.
                    self.refresh_balances_under_load();
                    return;
                }
                Err(error) => error,
            };
            self.roll_back(rated.undo);
            attempt += 1;
            let class = self.producers.class_of(&error);
            if class != Class::Retriable || self.cancel.is_cancelled() {
                self.stop_rating(class, &error);
                return;
            }
            telemetry::batch_retried(self.partition, class.label(), &error, attempt);
            // Set on every retry, not once: the exporter drops a gauge left unset for two
            // minutes, and a partition whose commits keep failing must stay visible as stalled
            // for as long as it is (the alert waits five minutes). Its balances too.
            if attempt >= STALLED_AFTER {
                telemetry::partition_stalled(self.partition, true);
            }
            self.refresh_balances_if_due();
            self.replace_failed_outputs_producer(attempt);
            if self.cancel.wait(backoff(attempt)) {
                self.stop_rating(Class::Retriable, &Error::ShutDown("retrying a batch"));
                return;
            }
        }
    }

    /// The composition of the batch the records in hand make (none: no record can be rated
    /// yet).
    fn next_batch(&self) -> Option<Manifest> {
        let batch_size = self.config.batch_size;
        let next = match self.catch_up.done() {
            true => Manifest::of(self.carry.iter().take(batch_size)),
            false => batch::preview(&self.carry, batch_size, &self.catch_up.behind()),
        };
        (!next.ranges.is_empty()).then_some(next)
    }

    /// Shows the committed batch to the tenant API: the tenants it touched, with its offsets.
    fn publish_view(&self, rated: &Rated) {
        if let Some(view) = &self.view {
            let touched = rated.undo.keys().map(|tenant| (tenant.as_str(), self.states.get(tenant)));
            view.committed(touched, rated.progress.next.iter().map(|(topic, &next)| (topic.clone(), next)));
        }
    }

    /// Rating the batch panicked at `poison`: nothing of it was published, and the state in
    /// memory may be half changed, so the task stops and the worker starts the partition
    /// again from its changelog, refusing the record (see [`Poison`]).
    fn poisoned(&mut self, poison: Poison) {
        let partition = self.partition;
        let Poison { topic, offset, message } = &poison;
        tracing::error!(
            partition,
            topic,
            offset,
            panic = message,
            "rating a record panicked: the partition is restored and started again, refusing the record ({RATING_PANICKED})"
        );
        telemetry::task_failed(partition, &format!("rating {topic} offset {offset} panicked: {message}"));
        self.idle = Some(Idle::Halted);
        self.stopping = true;
        self.coordinator.poisoned(partition, poison);
    }

    /// The batch could not be published and will not be retried here.
    fn stop_rating(&mut self, class: Class, error: &Error) {
        let partition = self.partition;
        match (class, error) {
            // Shut down, or cancelled: the partition was given up here (revoked, or the worker is stopping)
            // while the batch was in a Kafka call, and what that call answered says nothing of
            // this worker's health. Whatever the error, the batch is left to the next owner,
            // and no halt is reported for a partition the worker may no longer own (a halt
            // left behind would make it exit, or stop the task of a partition assigned back).
            _ if self.cancel.is_cancelled() || matches!(error, Error::ShutDown(_)) => {
                tracing::warn!(partition, %error, "batch left uncommitted to the partition's next owner");
                self.idle = Some(Idle::Halted);
            }
            (Class::Migrating, _) => {
                // The group moved on: the next owner resumes from the committed offsets and
                // the changelog. Rating more here would only write for a zombie. Reported as
                // a fenced task is: the partition counts as stalled, and the worker exits if
                // the revoke does not come (a partition left idle with every signal green
                // would rate nothing, for ever).
                tracing::info!(partition, %error, "partition is being handed over: batch left to its next owner");
                self.idle = Some(Idle::Migrating);
                self.coordinator.halted(partition, Halt::Fenced(format!("handed over by the group: {error}")));
            }
            (Class::Fenced, _) => {
                telemetry::fenced(partition, error);
                self.idle = Some(Idle::Halted);
                self.coordinator.halted(partition, Halt::Fenced(error.to_string()));
            }
            (_, Error::Access(access)) => {
                telemetry::task_failed(partition, error);
                self.idle = Some(Idle::Halted);
                self.coordinator.halted(partition, Halt::Denied(access.clone()));
            }
            _ => {
                telemetry::task_failed(partition, error);
                self.idle = Some(Idle::Halted);
                self.coordinator.halted(partition, Halt::of(&self.config, partition, error));
            }
        }
    }

    /// An idempotent producer that hit a fatal error (e.g. a sequence gap after a broker
    /// crash) can send nothing more; the outputs one is not transactional, so a new one fences
    /// nobody. Nor can one stuck for good without an error (see [`RESUMES`]), which no call
    /// reports: after every [`RESUMES`] failures of the same batch in a row the outputs
    /// producer is replaced whatever the cause. The batch is rated again from the rolled-back
    /// state, so what the old one may still deliver is the same records (at-least-once allows
    /// identical copies).
    fn replace_failed_outputs_producer(&mut self, attempt: u32) {
        let Some(outputs) = &self.producers.outputs else { return };
        let Some(reason) = outputs_replaced_because(outputs.client().fatal_error(), attempt) else { return };
        tracing::warn!(partition = self.partition, reason, "replacing the outputs producer");
        match outputs_producer(&self.config) {
            Ok(producer) => self.producers.outputs = Some(producer),
            Err(error) => tracing::error!(partition = self.partition, %error, "cannot create an outputs producer"),
        }
    }

    /// When due, sets every owned tenant's balance gauge, so that the exporter keeps them (it
    /// drops gauges idle for longer than a few refresh periods, which is how a tenant given
    /// away to another worker disappears from this one), and finishes a refresh under way:
    /// while a batch is retried, when no record is rated until it commits (after a committed
    /// batch, `refresh_balances_under_load`; while records are waited for,
    /// `refresh_balances_while_waiting`).
    fn refresh_balances_if_due(&mut self) {
        self.refresh_balances_while_waiting(&|| false);
    }

    /// [`PartitionTask::refresh_balances_if_due`] while the partition waits for records (idle,
    /// catching up, or waiting for a recorded batch's): a slice at a time
    /// ([`REFRESH_SLICE`]), until a record has `arrived`. The rest goes on after the batch it
    /// starts, the slices each committed batch owes, so that a record that arrives at a quiet partition
    /// of a million tenants waits for a slice, not for them all.
    fn refresh_balances_while_waiting(&mut self, arrived: &dyn Fn() -> bool) {
        if self.idle.is_some() {
            return;
        }
        self.gauges.start_if_due(Instant::now(), telemetry::GAUGE_REFRESH);
        while self.refresh_slice_unless(arrived) {}
    }

    /// After a committed batch: when due, the live tenants' balances, then the dormant ones',
    /// the slices ([`REFRESH_SLICE`]) that keep the cycle on schedule to end within
    /// [`telemetry::GAUGE_REFRESH`] ([`GaugeCycle::owed`]: one per batch at ten batches a
    /// second in a partition of a million tenants, two at five). Refreshed all at once, a
    /// partition of a million dormant tenants, or of a few hundred thousand live ones, would
    /// stop rating for a second, or for tens of milliseconds, every period; a slice takes a
    /// few milliseconds.
    fn refresh_balances_under_load(&mut self) {
        if self.idle.is_some() {
            return;
        }
        let now = Instant::now();
        self.gauges.start_if_due(now, telemetry::GAUGE_REFRESH);
        let (live, dormant) = (self.states.live().buckets(), self.states.dormant().buckets());
        for _ in 0..self.gauges.owed(now, telemetry::GAUGE_REFRESH, live, dormant) {
            if !self.refresh_slice_unless(&|| false) {
                break;
            }
        }
    }

    /// The next slice of a refresh under way unless `stop` says so; whether there was one.
    fn refresh_slice_unless(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let (live, dormant) = (self.states.live().buckets(), self.states.dormant().buckets());
        match self.gauges.next_slice(live, dormant, stop) {
            Some(Slice::Live(buckets)) => self.refresh_live_balances(buckets),
            Some(Slice::Dormant(buckets)) => self.refresh_dormant_balances(buckets),
            None => return false,
        }
        true
    }

    /// The balances of the live tenants filed in the live states' `buckets`.
    fn refresh_live_balances(&self, buckets: std::ops::Range<usize>) {
        for (tenant, state) in self.states.live().in_buckets(buckets) {
            telemetry::balance(tenant, self.tables.tenant(tenant).as_deref(), state.currency, state.balance());
        }
    }

    /// The balances of the dormant tenants filed in the index's `buckets`.
    fn refresh_dormant_balances(&self, buckets: std::ops::Range<usize>) {
        for (tenant, held) in self.states.dormant_balances(buckets) {
            if let Some((balance, currency)) = held {
                telemetry::balance(tenant, self.tables.tenant(tenant).as_deref(), currency, balance);
            }
        }
    }

    fn roll_back(&mut self, undo: Undos) {
        for (tenant, Undo { before, journal, segments, .. }) in undo {
            if let Some(written) = self.segments.get_mut(&tenant) {
                written.revert(segments);
            }
            let Some(before) = before else {
                // New in the batch.
                self.states.remove_live(&tenant);
                continue;
            };
            // Rating never removes a tenant's state, so it is there to roll back.
            if let Some(current) = self.states.get_mut(&tenant) {
                journal.roll_back(before, current);
            }
        }
    }

    /// Rates the batch into its outputs and changelog records; [`Poison`] when rating one of
    /// its records panicked (the state is then not to be trusted: the task stops).
    fn rate(&mut self, batch: &[Record], pin: &ReferencePin) -> Result<Rated, Poison> {
        let config = Arc::clone(&self.config);
        let tables = Arc::clone(&self.tables);
        let catalog = tables.pinned(pin);
        let topics = &config.topics;
        let mut rated = Rated {
            outputs: std::mem::take(&mut self.spare.outputs),
            changelog: std::mem::take(&mut self.spare.changelog),
            progress: self.progress.past(batch),
            undo: Undos::with_capacity_and_hasher(self.spare.touched, FastState::default()),
            stats: Stats::default(),
        };
        let mut outs = Vec::new();
        // The debit trail, when enabled: written with the batch's other outputs (in its
        // transaction under exactly-once), ids derived from the input that caused it.
        let mut movements = config.ledger_movements.then(Vec::new);
        for record in batch {
            let kind = topics.kind_of(&record.topic).unwrap_or(TopicKind::CallLegs);
            let topic_label = kind.key();
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.apply(&catalog, record, kind, &mut rated.undo, &mut outs, movements.as_mut())
            }));
            let applied = applied.map_err(|panic| Poison {
                topic: record.topic.clone(),
                offset: record.offset,
                message: crate::error::panic_message(panic.as_ref()),
            })?;
            let outcome = match applied {
                Ok(applied) => applied.label(),
                Err(refusal) => {
                    telemetry::dead_letter(
                        &record.topic,
                        record.partition,
                        record.offset,
                        refusal.code,
                        &refusal.message,
                    );
                    *rated.stats.dead_letters.entry(refusal.code).or_default() += 1;
                    dead_letter(&mut rated.outputs, record, refusal);
                    "dead_letter"
                }
            };
            *rated.stats.inputs.entry((topic_label, outcome)).or_default() += 1;
            for output in outs.drain(..) {
                count(&mut rated.stats, &output);
                rated.outputs.push_encoded(None, |buf| codec::encode_output(&output, buf));
            }
            for movement in movements.iter_mut().flat_map(|m| m.drain(..)) {
                rated
                    .outputs
                    .push_encoded(None, |buf| (TopicKind::LedgerMovements, codec::encode_movement(&movement, buf)));
            }
        }
        // Counted once the batch commits, as every batch counter is: an attempt aborted and
        // retried, or given up to another owner that knew the version, is not what the
        // alert on it says.
        rated.stats.reference_versions_unknown = catalog.unknown();
        for (tenant, undo) in &mut rated.undo {
            if let Some(state) = self.states.get_mut(tenant) {
                undo.journal = changelog::Journal::take(state);
                let segments = match self.segments.get_mut(tenant) {
                    Some(segments) => segments,
                    None => self.segments.entry(tenant.clone()).or_default(),
                };
                let cutoff = tollgate_core::rating::horizon(state.watermark, config.retention_seconds);
                let window = changelog::WindowWrite { segments, tag: &undo.tag, cutoff };
                let (records, written) = changelog::records(tenant, state, undo.before.as_ref(), &undo.journal, window);
                undo.segments = written;
                for (key, payload) in records {
                    rated.changelog.push(TopicKind::State, Some(self.partition), key.as_bytes(), payload.as_deref());
                }
            }
        }
        Ok(rated)
    }

    fn apply(
        &mut self,
        catalog: &Pinned<'_>,
        record: &Record,
        kind: TopicKind,
        undo: &mut Undos,
        outs: &mut Vec<Output>,
        movements: Option<&mut Vec<LedgerMovement>>,
    ) -> Result<Applied, Refusal> {
        if let Some(poison) = self.poisons.iter().find(|p| p.offset == record.offset && p.topic == record.topic) {
            return Err(Refusal::new(
                RATING_PANICKED,
                format!(
                    "rating this record panicked ({}); the partition was restored without it. A bug in tollgate: report it with this record",
                    poison.message
                ),
            ));
        }
        #[cfg(test)]
        tests::panic_if_marked(record);
        let input: Input = codec::decode_input(kind, record.payload.as_deref(), self.config.max_record_bytes)?;
        let tenant = input.tenant_id().as_str();
        let key = record.key.as_deref().unwrap_or_default();
        if key != tenant.as_bytes() {
            return Err(Refusal::new(
                "key_mismatch",
                format!(
                    "record key {:?}{} is not the tenant id {tenant:?}",
                    String::from_utf8_lossy(codec::dead_letter_key(key)),
                    if key.len() > codec::DEAD_LETTER_KEY_BYTES {
                        format!(" (cut, {} bytes)", key.len())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let expected = partitioner::partition_for(key, self.partition_count);
        if expected != self.partition {
            return Err(Refusal::new(
                "wrong_partition",
                format!("tenant {tenant:?} belongs on partition {expected} (murmur2), not {}", self.partition),
            ));
        }
        codec::refuse_future_dated(&input, record, self.config.max_future_seconds)?;
        // The tenant's state, found once for the undo and the rater. The rater refuses unknown
        // tenants itself; the reference is asked here only for a tenant without state yet, so
        // that a refused record does not leave an empty state behind.
        let Some((state, existed)) = self.states.for_rating(tenant, || catalog.tenant(tenant).is_some()) else {
            return Err(Refusal::new("unknown_tenant", format!("unknown tenant {tenant:?}")));
        };
        if !undo.contains_key(tenant) {
            let before = existed.then(|| state.snapshot());
            let tag = changelog::segment_tag(kind, record.offset);
            let undo_entry = Undo { before, journal: changelog::Journal::default(), tag, segments: Default::default() };
            undo.insert(tenant.to_owned(), undo_entry);
        }
        let applied = match movements {
            Some(movements) => self.rater.apply_traced(catalog, state, input, outs, movements),
            None => self.rater.apply(catalog, state, input, outs),
        };
        applied.map_err(|e| Refusal::new(e.code(), e.to_string()))
    }

    /// Writes the tenants whose changelog records are in an earlier layout in full (their
    /// windows from `windows`, the entries the restore read: the state keeps only their
    /// keys), and tombstones the earlier layout's window entries (`retire`), in one
    /// transaction, before the partition rates anything.
    fn migrate_layout(
        &mut self,
        tenants: &[String],
        windows: &HashMap<String, changelog::Journal, FastState>,
        retire: &[String],
    ) -> Result<(), Error> {
        if tenants.is_empty() && retire.is_empty() {
            return Ok(());
        }
        let mut records = Outbox::default();
        let none = changelog::Journal::default();
        for tenant in tenants {
            if let Some(state) = self.states.get(tenant) {
                let segments = self.segments.entry(tenant.clone()).or_default();
                let windows = windows.get(tenant).unwrap_or(&none);
                for (key, payload) in changelog::full_records(tenant, state, windows, segments) {
                    records.push(TopicKind::State, Some(self.partition), key.as_bytes(), payload.as_deref());
                }
            }
        }
        for key in retire {
            records.push(TopicKind::State, Some(self.partition), key.as_bytes(), None);
        }
        let mut attempt = 0;
        loop {
            match self.transaction(&[&records], None).map(drop) {
                Ok(()) => {
                    tracing::info!(partition = self.partition, tenants = tenants.len(), "changelog layout migrated");
                    return Ok(());
                }
                // Cancelled meanwhile (the partition was given up): a shutdown, which ends the
                // start quietly, not the retriable error, which would halt the worker.
                Err(_) if self.cancel.is_cancelled() => return Err(Error::ShutDown("migrating the changelog layout")),
                Err(error) if self.producers.class_of(&error) == Class::Retriable => {
                    attempt += 1;
                    tracing::warn!(partition = self.partition, %error, attempt, "layout migration failed, retrying");
                    if self.cancel.wait(backoff(attempt)) {
                        return Err(Error::ShutDown("migrating the changelog layout"));
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Records the composition of a batch before its outputs are produced (at-least-once).
    fn write_manifest(&mut self, manifest: &Manifest) -> Result<(), Error> {
        let mut record = Outbox::default();
        self.manifest_record(&mut record, Some(manifest));
        self.transaction(&[&record], None)?;
        self.manifest_in_changelog = true;
        Ok(())
    }

    /// Adds the changelog record of `manifest` (`None`: a tombstone, no batch is recorded).
    fn manifest_record(&self, outbox: &mut Outbox, manifest: Option<&Manifest>) {
        let payload = manifest.map(|m| serde_json::to_vec(m).unwrap_or_default());
        let key = batch::manifest_key(self.partition);
        outbox.push(TopicKind::State, Some(self.partition), key.as_bytes(), payload.as_deref());
    }

    /// Publishes a rated batch: one transaction with the changelog records, the input offsets
    /// (the progress record), and under exactly-once the outputs; under at-least-once the
    /// outputs go to the outputs producer first and are acknowledged before the transaction
    /// commits, and the transaction names the next batch (its manifest, returned) last.
    fn publish(&mut self, rated: &Rated, inbox: &mut Inbox) -> Result<Option<Manifest>, Error> {
        let mut progress = Outbox::default();
        let key = batch::progress_key(self.partition);
        let value = serde_json::to_vec(&rated.progress).unwrap_or_default();
        progress.push(TopicKind::State, Some(self.partition), key.as_bytes(), Some(&value));
        match &self.producers.outputs {
            Some(outputs) => {
                // Their acknowledgements come back while the transaction is being written;
                // it commits only once they all did.
                send_all(outputs, &self.config.topics, &rated.outputs)?;
                self.transaction(&[&rated.changelog, &progress], Some(inbox))
            }
            None => {
                if self.manifest_in_changelog {
                    // Left by an at-least-once owner: no batch is recorded any more.
                    self.manifest_record(&mut progress, None);
                }
                self.transaction(&[&rated.outputs, &rated.changelog, &progress], None)
            }
        }
    }

    /// One transaction of the partition's transactional producer: the records of `parts`, in
    /// order. Under at-least-once it commits only after every output was acknowledged, and
    /// with `inbox` it names the next batch last, in the manifest it returns: the records
    /// waiting once everything else was acknowledged, so that a record that arrived while the
    /// transaction was written is rated in the next batch, not the one after it. Any error but
    /// a fatal one (the producer is unusable) or a commit left pending at shutdown aborts it.
    fn transaction(&mut self, parts: &[&Outbox], inbox: Option<&mut Inbox>) -> Result<Option<Manifest>, Error> {
        self.producers.txn().begin_transaction()?;
        let result = (|| -> Result<Option<Manifest>, Error> {
            let timeout = self.config.kafka_timeout();
            for part in parts {
                send_all(self.producers.txn(), &self.config.topics, part)?;
            }
            // Acknowledged first, so the commit's own flush finds nothing in flight (see
            // `kafka::flush`); a delivery that failed fails the commit, as it would have.
            kafka::flush(self.producers.txn(), timeout)?;
            if let Some(outputs) = &self.producers.outputs {
                flush_checked(outputs, timeout)?;
            }
            let mut next = None;
            if let Some(inbox) = inbox {
                self.take_ready(inbox);
                next = self.next_batch().map(|m| m.pinned(self.tables.position()));
                if next.is_some() || self.manifest_in_changelog {
                    let mut manifest = Outbox::default();
                    self.manifest_record(&mut manifest, next.as_ref());
                    send_all(self.producers.txn(), &self.config.topics, &manifest)?;
                    kafka::flush(self.producers.txn(), timeout)?;
                }
            }
            self.commit_transaction()?;
            Ok(next)
        })();
        if let Err(error) = &result {
            let pending_commit = matches!(error, Error::ShutDown(_));
            if !pending_commit && !matches!(self.producers.class_of(error), Class::Fenced | Class::Fatal) {
                if let Err(abort) = self.abort() {
                    tracing::warn!(partition = self.partition, error = %abort, "abort failed");
                    return Err(abort);
                }
            }
        }
        // Committed or aborted: the other producer writes the next transaction (an abort that
        // failed returned above, and its transaction is still this producer's to finish).
        self.producers.turn ^= 1;
        result.map_err(|error| self.producers.explained(error))
    }

    /// Commits the open transaction. A retriable failure (typically a timeout while the
    /// broker is away) leaves the commit in progress inside librdkafka: the same call is made
    /// again to resume it, never an abort, until it completes, fails for good, the task is
    /// cancelled, or it was resumed [`RESUMES`] times (a minute at the default
    /// `kafka_timeout_ms`). In the last two cases the transaction is left to the broker: the
    /// partition's next owner initialises the transactional ids, which completes the commit
    /// if the coordinator had begun it and aborts it otherwise; either way the state of record
    /// is a whole batch. Giving up halts the partition and the worker exits, so that a client
    /// stuck for good (see [`RESUMES`]) is replaced by a new process instead of resumed
    /// forever.
    fn commit_transaction(&self) -> Result<(), Error> {
        let mut attempt = 0u32;
        loop {
            match self.producers.txn().commit_transaction(self.config.kafka_timeout()) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.txn_requires_abort() && !e.is_fatal() => {
                    if self.cancel.is_cancelled() {
                        return Err(Error::ShutDown("committing a transaction"));
                    }
                    if attempt == RESUMES {
                        return Err(self.stuck("committed", &e));
                    }
                    attempt += 1;
                    telemetry::commit_retried(self.partition, attempt, &e);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The halt of a transaction still not `done` (committed, aborted) after [`RESUMES`]
    /// resumes, the last one failing with `error`.
    fn stuck(&self, done: &str, error: &dyn std::fmt::Display) -> Error {
        let reason = format!(
            "a transaction could not be {done} in {} attempts of {} ms: {error}",
            RESUMES + 1,
            self.config.kafka_timeout().as_millis()
        );
        Error::Halted { partition: self.partition, reason }
    }

    /// Aborts the open transaction: purges what is still queued, serves the delivery reports
    /// of the purged records (librdkafka waits for them), then aborts, resuming an abort that
    /// timed out, [`RESUMES`] times at most.
    ///
    /// A fault-suite run (`broker_restarted_at_least_once`) once saw an abort after a broker
    /// restart time out again and again for minutes, while the producer's other partitions
    /// went on: the partition rated nothing and said nothing more. An abort still not done
    /// after that many resumes halts the partition as a fatal error does: the worker exits,
    /// and the partition's next owner initialises its transactional ids, which aborts the
    /// transaction on the broker. Nothing of the batch was committed, so this is a crash
    /// like any other for the state.
    fn abort(&self) -> Result<(), Error> {
        let txn = self.producers.txn();
        let timeout = self.config.kafka_timeout();
        txn.purge(PurgeConfig::default().queue().inflight());
        // Purged records time out at once; a report still missing after `timeout` is left.
        let _ = kafka::flush(txn, timeout);
        let purged = txn.context().take_first_error();
        telemetry::transaction_aborted(self.partition, purged);
        let mut resumes = 0;
        loop {
            match txn.abort_transaction(timeout) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    if self.cancel.is_cancelled() {
                        return Err(Error::ShutDown("aborting a transaction"));
                    }
                    if resumes == RESUMES {
                        return Err(self.stuck("aborted", &e));
                    }
                    resumes += 1;
                    tracing::warn!(partition = self.partition, error = %e, resumes, "abort timed out, resuming");
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn report(&self, rated: &Rated, records: usize, took: Duration) {
        let guarantee = self.config.processing_guarantee.label();
        telemetry::batch_committed(self.partition, guarantee, records, rated.changelog.len(), took);
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
        for (code, n) in &rated.stats.dead_letters {
            telemetry::dead_letters(code, *n);
        }
        if rated.stats.reference_versions_unknown > 0 {
            telemetry::reference_versions_unknown(self.partition, rated.stats.reference_versions_unknown);
        }
        for tenant in rated.undo.keys() {
            if let Some(state) = self.states.get(tenant) {
                telemetry::balance(tenant, self.tables.tenant(tenant).as_deref(), state.currency, state.balance());
            }
        }
    }
}

fn send_all(producer: &TaskProducer, topics: &Topics, records: &Outbox) -> Result<(), Error> {
    for out in records.iter() {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topics[out.kind]).key(out.key);
        if let Some(value) = out.value {
            record = record.payload(value);
        }
        if let Some(p) = out.partition {
            record = record.partition(p);
        }
        kafka::send_waiting(producer, record)?;
    }
    Ok(())
}

/// Flushes and fails with the first delivery error's code if any record was not delivered
/// since the last check: every report served since then counts, also those served before this
/// flush (while the batch's records were queued). A failure of an attempt that was aborted
/// before its check fails the next attempt's check too: one more retry, never a lost record.
fn flush_checked(producer: &TaskProducer, timeout: Duration) -> Result<(), Error> {
    kafka::flush(producer, timeout)?;
    let failed = producer.context().take_failures();
    let first = producer.context().take_first_error();
    if failed > 0 {
        if let Some(denied) = producer.context().denied() {
            return Err(Error::Access(denied));
        }
        let code = first.unwrap_or(RDKafkaErrorCode::Fail);
        tracing::warn!(failed, ?code, "deliveries failed");
        return Err(Error::Kafka(KafkaError::MessageProduction(code)));
    }
    Ok(())
}

fn changelog_restore(config: &WorkerConfig, partition: i32, cancel: &Cancel) -> Result<changelog::Restored, Error> {
    let mut attempt = 0;
    loop {
        match changelog::restore_partition(config, partition, cancel) {
            Ok(restored) => return Ok(restored),
            Err(e) if e.class() == Class::Retriable => {
                attempt += 1;
                tracing::warn!(partition, error = %e, attempt, "restore failed, retrying");
            }
            Err(e) => return Err(e),
        }
        if cancel.wait(backoff(attempt)) {
            return Err(Error::ShutDown("restoring state"));
        }
    }
}

/// The partition's two transactional producers, with their transactions initialised: this
/// fences every earlier producer of the same transactional ids and aborts its open
/// transaction.
fn transactional_producers(config: &WorkerConfig, partition: i32, cancel: &Cancel) -> Result<[TaskProducer; 2], Error> {
    let [id, twin] = kafka::transactional_ids(config, partition);
    let first = transactional_producer(config, partition, &id, cancel)?;
    // Given up while the first was initialised: initialising the twin now could fence the
    // partition's next owner, which may have initialised it already.
    if cancel.is_cancelled() {
        return Err(Error::ShutDown("initialising transactions"));
    }
    Ok([first, transactional_producer(config, partition, &twin, cancel)?])
}

/// A transactional producer of id `id`, with its transactions initialised.
fn transactional_producer(
    config: &WorkerConfig,
    partition: i32,
    id: &str,
    cancel: &Cancel,
) -> Result<TaskProducer, Error> {
    let producer: TaskProducer =
        kafka::transactional_producer(config, id).create_with_context(DeliveryTracker::default())?;
    let mut attempt = 0;
    while let Err(e) = producer.init_transactions(config.kafka_timeout()) {
        attempt += 1;
        if crate::error::classify_kafka(&e) == Class::Fatal {
            return Err(e.into());
        }
        tracing::warn!(partition, error = %e, attempt, "init_transactions failed, retrying");
        if cancel.wait(backoff(attempt)) {
            return Err(Error::ShutDown("initialising transactions"));
        }
    }
    Ok(producer)
}

/// The at-least-once outputs producer: idempotent, not transactional.
fn outputs_producer(config: &WorkerConfig) -> Result<TaskProducer, Error> {
    Ok(kafka::task_producer(config).create_with_context(DeliveryTracker::default())?)
}

/// `progress` as the group's offsets of `partition`.
fn offsets_of(progress: &Progress, partition: i32) -> TopicPartitionList {
    let mut offsets = TopicPartitionList::new();
    for (topic, &next) in &progress.next {
        // Infallible for a valid topic name and a non-negative offset.
        let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(next));
    }
    offsets
}

/// Why the at-least-once outputs producer is replaced after the `attempt`-th failure of a
/// batch in a row: its fatal error, or every [`RESUMES`] failures (a producer stuck for good
/// reports nothing); `None` to keep it.
fn outputs_replaced_because(fatal: Option<(RDKafkaErrorCode, String)>, attempt: u32) -> Option<String> {
    match fatal {
        Some((code, reason)) => Some(format!("{code:?}: {reason}")),
        None if attempt > 0 && attempt % RESUMES == 0 => Some(format!("{attempt} failures of a batch in a row")),
        None => None,
    }
}

/// Exponential backoff from 100 ms up to 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7)).min(10_000))
}

/// Adds the dead letter of a refused record, keyed by the record's key (its first
/// [`codec::DEAD_LETTER_KEY_BYTES`]).
fn dead_letter(outbox: &mut Outbox, record: &Record, refusal: Refusal) {
    let key = codec::dead_letter_key(record.key.as_deref().unwrap_or_default());
    let letter = refusal.dead_letter(record);
    outbox.push_encoded(None, |buf| {
        buf.extend_from_slice(key);
        tollgate_proto::encode::append(&letter, buf);
        (TopicKind::DeadLetter, key.len())
    });
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

#[cfg(test)]
pub(crate) mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    /// Bytes that make rating a record panic, in this crate's unit tests only: no input is
    /// known to panic the rater, and the poison path needs one (see [`Poison`]).
    pub(crate) const PANIC_MARK: &str = "rating-panics-on-this-record";

    /// Panics when the record's value holds [`PANIC_MARK`].
    pub(super) fn panic_if_marked(record: &Record) {
        let mark = PANIC_MARK.as_bytes();
        if record.payload.as_deref().is_some_and(|value| value.windows(mark.len()).any(|w| w == mark)) {
            panic!("a test record marked to panic");
        }
    }

    fn transactional(config: &WorkerConfig, id: &str) -> TaskProducer {
        let producer: TaskProducer =
            kafka::transactional_producer(config, id).create_with_context(DeliveryTracker::default()).unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        producer
    }

    /// A coordinator that takes note of nothing.
    struct Unattended;

    impl Coordinator for Unattended {
        fn committed(&self, _offsets: &TopicPartitionList) {}
        fn halted(&self, _partition: i32, _halt: Halt) {}
        fn poisoned(&self, _partition: i32, _poison: Poison) {}
    }

    fn start_on(config: &WorkerConfig, partition: i32, partition_count: i32) -> Result<PartitionTask, Error> {
        let (config, tables) = (Arc::new(config.clone()), Arc::new(Tables::default()));
        PartitionTask::start(
            partition,
            partition_count,
            config,
            tables,
            Arc::new(Unattended),
            Arc::default(),
            Vec::new(),
        )
    }

    /// Partitions added to the topics: a worker that is assigned one it did not know refuses
    /// it before it fences anyone, and a changelog partition holding the state of a tenant
    /// that murmur2 now puts elsewhere refuses to start, instead of rating that tenant's new
    /// records on another partition without its balance, lots and applied ids.
    #[test]
    fn a_partition_count_changed_under_the_state_stops_the_start() {
        let cluster = MockCluster::new(1).unwrap();
        let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
        let topic = &config.topics[TopicKind::State];
        cluster.create_topic(topic, 2, 1).unwrap();
        // A tenant on partition 0 of one, written there; of two, murmur2 puts it on 1.
        let tenant = crate::testing::key_on("tenant", 1, 2);
        let mut state = TenantState::default();
        state.ledger.credit(
            "lot".into(),
            "10.00".parse().unwrap(),
            tollgate_core::Timestamp::new(1_793_491_200, 0).unwrap(),
        );
        let records = changelog::full_records(&tenant, &state, &Default::default(), &mut Default::default());
        let producer: BaseProducer = kafka::base(&config).create().unwrap();
        for (key, value) in &records {
            let mut record = BaseRecord::<str, [u8]>::to(topic).partition(0).key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();

        // With one partition, as written: the tenant is at home.
        let task = start_on(&config, 0, 1).unwrap();
        assert_eq!(task.states.len(), 1);
        drop(task);
        // Partition 1 of one: not a partition this worker knew.
        let Err(error) = start_on(&config, 1, 1) else { panic!("partition 1 of 1 started") };
        assert!(
            matches!(&error, Error::Topology(m) if m.starts_with("partition 1 was assigned, but the inputs had 1 partitions")),
            "{error}"
        );
        // With two, the state is on the wrong one.
        let Err(error) = start_on(&config, 0, 2) else { panic!("a misplaced state started") };
        let expected =
            format!("changelog partition 0 holds the state of tenant {tenant}, which murmur2 puts on partition 1 of 2");
        assert!(matches!(&error, Error::Topology(m) if m.starts_with(&expected)), "{error}");
        assert!(matches!(Halt::of_start(&config, 0, &error), Halt::Failed(_)));
    }

    /// A cycle of the gauges goes through every live bucket, then every dormant one, a slice
    /// at a time and each bucket once, and then ends.
    #[test]
    fn a_gauge_cycle_visits_each_bucket_once_live_then_dormant() {
        let now = Instant::now();
        let s = REFRESH_SLICE;
        let mut cycle = GaugeCycle::new(now);
        assert_eq!(cycle.next_slice(10_000, 9_000, &|| false), None, "no cycle under way");
        cycle.start(now);
        let slices: Vec<Slice> = std::iter::from_fn(|| cycle.next_slice(10_000, 9_000, &|| false)).collect();
        assert_eq!(
            slices,
            [
                Slice::Live(0..s),
                Slice::Live(s..2 * s),
                Slice::Live(2 * s..3 * s),
                Slice::Dormant(0..s),
                Slice::Dormant(s..2 * s),
                Slice::Dormant(2 * s..3 * s),
            ]
        );
        assert_eq!(cycle.next_slice(10_000, 9_000, &|| false), None, "the cycle ended");
        // A partition without tenants: one empty slice of each.
        cycle.start(now);
        let slices: Vec<Slice> = std::iter::from_fn(|| cycle.next_slice(0, 0, &|| false)).collect();
        assert_eq!(slices, [Slice::Live(0..s), Slice::Dormant(0..s)]);
    }

    /// A cycle starts once its period is over since the last one started, over one still
    /// under way, and not before.
    #[test]
    fn a_gauge_cycle_starts_when_due() {
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        let mut cycle = GaugeCycle::new(t0);
        cycle.start_if_due(t0 + Duration::from_secs(9), period);
        assert_eq!(cycle.next, None, "not due yet");
        cycle.start_if_due(t0 + period, period);
        assert_eq!(cycle.next_slice(3 * REFRESH_SLICE, 0, &|| false), Some(Slice::Live(0..REFRESH_SLICE)));
        cycle.start_if_due(t0 + Duration::from_secs(19), period);
        assert_eq!(cycle.next, Some(Refresh::Live(REFRESH_SLICE)), "not due again: the cycle goes on");
        cycle.start_if_due(t0 + Duration::from_secs(20), period);
        assert_eq!(cycle.next, Some(Refresh::Live(REFRESH_SLICE)), "due again, but under way: not started over");
        while cycle.next_slice(3 * REFRESH_SLICE, 0, &|| false).is_some() {}
        cycle.start_if_due(t0 + Duration::from_secs(21), period);
        assert_eq!(cycle.next, Some(Refresh::Live(0)), "ended and due: started again");
    }

    /// After each committed batch a cycle takes what keeps it on schedule to end within the
    /// period, whatever the rate of batches: a partition of a million dormant tenants (2^21
    /// buckets, 512 slices) committing one batch a second, or ten, visits every bucket
    /// within the period. (A slice a batch, started over every period, left three tenants in
    /// five without a gauge at ten batches a second.)
    #[test]
    fn a_gauge_cycle_ends_within_its_period_at_any_rate_of_batches() {
        let period = Duration::from_secs(30);
        let (live, dormant) = (2 * REFRESH_SLICE, 1 << 21);
        let total = 2 + 512;
        for batches_per_second in [1u64, 10, 100] {
            let t0 = Instant::now();
            let mut cycle = GaugeCycle::new(t0);
            cycle.start(t0);
            let mut visited = 0usize;
            let mut per_batch = Vec::new();
            let mut ended_at = None;
            for batch in 1..=(30 * batches_per_second) {
                let now = t0 + Duration::from_millis(batch * 1000 / batches_per_second);
                let owed = cycle.owed(now, period, live, dormant);
                let mut took = 0;
                while took < owed && cycle.next_slice(live, dormant, &|| false).is_some() {
                    took += 1;
                }
                visited += took;
                per_batch.push(took);
                if cycle.next.is_none() && ended_at.is_none() {
                    ended_at = Some(now - t0);
                }
            }
            assert_eq!(visited, total, "at {batches_per_second} batches/s");
            assert!(ended_at.is_some_and(|t| t <= period), "at {batches_per_second} batches/s: {ended_at:?}");
            // Spread over the period, not taken at its end.
            let most = *per_batch.iter().max().unwrap();
            assert!(most <= total.div_ceil(30 * batches_per_second as usize) + 1, "{most} slices in one batch");
        }
        // Late (waiting took none of it): caught up over a few batches, not all at once.
        let t0 = Instant::now();
        let mut cycle = GaugeCycle::new(t0);
        cycle.start(t0);
        assert_eq!(cycle.owed(t0 + Duration::from_secs(45), period, live, dormant), MOST_SLICES_PER_BATCH);
        assert_eq!(GaugeCycle::new(t0).owed(t0 + period, period, live, dormant), 0, "none under way");
    }

    /// A task waiting for records asks before each slice whether one arrived: once one did,
    /// no slice more is taken (the record waits for the slice in progress at most), and the
    /// cycle goes on from there later.
    #[test]
    fn a_gauge_cycle_takes_no_slice_once_told_to_stop() {
        let now = Instant::now();
        let mut cycle = GaugeCycle::new(now);
        cycle.start(now);
        let asked = std::cell::Cell::new(0);
        let arrived = || {
            asked.set(asked.get() + 1);
            asked.get() > 2
        };
        let slices: Vec<Slice> = std::iter::from_fn(|| cycle.next_slice(100_000, 0, &arrived)).collect();
        assert_eq!(slices, [Slice::Live(0..REFRESH_SLICE), Slice::Live(REFRESH_SLICE..2 * REFRESH_SLICE)]);
        assert_eq!(cycle.next, Some(Refresh::Live(2 * REFRESH_SLICE)));
        assert_eq!(cycle.next_slice(100_000, 0, &|| false), Some(Slice::Live(2 * REFRESH_SLICE..3 * REFRESH_SLICE)));
    }

    /// The outputs producer is replaced on its fatal error at once, and without one every
    /// fifth failure of a batch in a row.
    #[test]
    fn a_stuck_outputs_producer_is_replaced_every_fifth_failure() {
        let replaced: Vec<u32> = (1..=12).filter(|&a| outputs_replaced_because(None, a).is_some()).collect();
        assert_eq!(replaced, [5, 10]);
        let fatal = Some((RDKafkaErrorCode::OutOfOrderSequenceNumber, "sequence gap".to_owned()));
        assert_eq!(outputs_replaced_because(fatal, 1).as_deref(), Some("OutOfOrderSequenceNumber: sequence gap"));
    }

    /// A halt the task raised itself names its partition once in the worker's final error
    /// (it read "partition 3 halted: partition 3 halted: ...").
    #[test]
    fn a_halt_names_its_partition_once() {
        let config = WorkerConfig::default();
        let error = Error::Halted { partition: 3, reason: "a transaction could not be aborted".into() };
        let Halt::Failed(reason) = Halt::of(&config, 3, &error) else { panic!("not a failure") };
        let exit = Error::Halted { partition: 3, reason };
        assert_eq!(exit.to_string(), "partition 3 halted: a transaction could not be aborted");
    }

    /// Once a zombie's producer knows it was fenced, librdkafka refuses its records with a
    /// bare `Fatal`: that is the partition's next owner at work, to be stopped quietly, not a
    /// broken worker to be halted.
    #[test]
    fn a_record_a_fenced_producer_refuses_is_the_task_fenced_not_the_worker_failed() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
        let zombie = Producers {
            txns: [transactional(&config, "tollgate-p-0"), transactional(&config, "tollgate-p-0.1")],
            turn: 0,
            outputs: None,
        };
        // What the broker answers once the partition's next owner initialised the same id (the
        // mock cluster gives every producer an id of its own, so it is told to).
        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::AddPartitionsToTxn,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        );
        zombie.txn().begin_transaction().unwrap();
        zombie.txn().send(BaseRecord::<str, str>::to("t").key("k").payload("v")).map_err(|(e, _)| e).unwrap();
        let commit = zombie.txn().commit_transaction(Duration::from_secs(30)).map_err(Error::Kafka);
        assert_eq!(commit.map_err(|e| e.class()), Err(Class::Fenced));

        let refused = zombie.txn().send(BaseRecord::<str, str>::to("t").key("k").payload("v")).map_err(|(e, _)| e);
        let refused = Error::Kafka(refused.unwrap_err());
        assert_eq!(refused.class(), Class::Fatal, "{refused}");
        assert_eq!(zombie.class_of(&refused), Class::Fenced);
        // Where it leaves the task (a start that failed), it says so itself, and the task
        // stops as fenced, not as failed.
        let explained = zombie.explained(Error::Kafka(refused_again(&zombie)));
        assert!(matches!(&explained, Error::Fenced(reason) if reason.contains("fenced")), "{explained}");
        assert!(matches!(Halt::of_start(&config, 0, &explained), Halt::Fenced(_)));
        // A bare `Fatal` from producers that did not fail says nothing more: it stays fatal.
        let healthy = Producers {
            txns: [transactional(&config, "tollgate-q-0"), transactional(&config, "tollgate-q-0.1")],
            turn: 0,
            outputs: None,
        };
        assert_eq!(healthy.class_of(&refused), Class::Fatal);
        let unexplained = healthy.explained(Error::Kafka(refused_again(&zombie)));
        assert_eq!(unexplained.class(), Class::Fatal);
        assert!(
            matches!(Halt::of_start(&config, 0, &unexplained), Halt::Failed(r) if r.starts_with("could not start: "))
        );
    }

    /// The bare `Fatal` a failed producer answers a record with.
    fn refused_again(producer: &Producers) -> KafkaError {
        producer.txn().send(BaseRecord::<str, str>::to("t").key("k").payload("v")).map_err(|(e, _)| e).unwrap_err()
    }

    /// An at-least-once outputs producer (on a mock cluster, with its config) that sent one
    /// record the broker refuses for good: with the gap-less guarantee that makes the
    /// idempotent producer fail (without it librdkafka bumps the epoch and goes on).
    fn outputs_producer_refused_a_record()
    -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, WorkerConfig, TaskProducer) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
        let outputs: TaskProducer = kafka::task_producer(&config)
            .set("enable.gapless.guarantee", "true")
            .create_with_context(DeliveryTracker::default())
            .unwrap();
        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH],
        );
        outputs.send(BaseRecord::<str, str>::to("t").key("k").payload("v")).map_err(|(e, _)| e).unwrap();
        (cluster, config, outputs)
    }

    /// Whether a batch's check failed for the record the broker refused with an old epoch.
    fn refused_with_old_epoch(error: &Error) -> bool {
        matches!(error, Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch)))
    }

    /// A delivery failure whose report was served before the batch's flush (while its records
    /// were queued, as `kafka::send_waiting` does when librdkafka's queue is full) still fails
    /// the batch: checked from the flush on, it was missed, and the transaction committed
    /// progress past outputs that were never written.
    #[test]
    fn a_delivery_failure_served_while_queueing_still_fails_the_batch() {
        let (_cluster, _, outputs) = outputs_producer_refused_a_record();
        // The report is served before the flush, as a wait on a full queue serves it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while outputs.context().failures.load(Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < deadline, "the refused record is reported");
            outputs.poll(Duration::from_millis(100));
        }
        let refused = flush_checked(&outputs, Duration::from_secs(30)).unwrap_err();
        assert!(refused_with_old_epoch(&refused), "the failure fails the batch: {refused:?}");
        // Counted once: the next check starts from zero.
        assert!(matches!(flush_checked(&outputs, Duration::from_secs(30)), Ok(())));
    }

    /// An at-least-once outputs producer that failed for good fails its batch's check with
    /// the broker's refusal, and the batch's error is retriable, not fatal: its outputs are not
    /// part of a transaction, so the task replaces the producer (a new one fences nobody) and
    /// rates the batch again (`replace_failed_outputs_producer`).
    #[test]
    fn a_failed_outputs_producer_leaves_its_batch_retriable() {
        let (_cluster, config, outputs) = outputs_producer_refused_a_record();
        let refused = flush_checked(&outputs, Duration::from_secs(30)).unwrap_err();
        assert!(refused_with_old_epoch(&refused), "the refused record is reported with its cause: {refused:?}");
        // Failed for good: the gap-less guarantee cannot be kept with a record lost.
        let (code, _) = outputs.client().fatal_error().expect("the producer failed for good");
        assert_eq!(code, RDKafkaErrorCode::GaplessGuarantee);
        let refused = outputs.send(BaseRecord::<str, str>::to("t").key("k").payload("v")).map_err(|(e, _)| e);
        let refused = Error::Kafka(refused.unwrap_err());
        assert_eq!(refused.class(), Class::Fatal, "{refused}");

        let producers = Producers {
            txns: [transactional(&config, "tollgate-r-0"), transactional(&config, "tollgate-r-0.1")],
            turn: 0,
            outputs: Some(outputs),
        };
        assert_eq!(producers.class_of(&refused), Class::Retriable);
    }
}
