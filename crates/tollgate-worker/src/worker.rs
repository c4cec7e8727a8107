//! The worker: one member of the consumer group. It loads reference data, joins the group,
//! and runs one [`PartitionTask`] per owned input partition.
//!
//! A dedicated thread polls the group consumer and hands each record to the task that owns
//! its partition, never blocking on one: a task that falls behind has its partition paused
//! until it catches up ([`crate::inbox`]). Rebalance callbacks run on that thread: on revoke, the tasks of the revoked
//! partitions finish their batch, commit and exit before the partitions go; on assign, new
//! tasks restore their state from the changelog before they rate a record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::access::{self, AccessError};
use crate::cancel::Cancel;
use crate::config::TopicKind;
use crate::config::WorkerConfig;
use crate::inbox::{self, Backpressure, Mailbox};
use crate::ownership::{self, Announcer, Directory};
use crate::partition::{Coordinator, Halt, PartitionTask, Poison};
use crate::readiness::{Readiness, Stage};
use crate::record::Record;
use crate::reference::{Loader, Tables};
use crate::topics::Role;
use crate::view::{PartitionView, TenantApi, Views};
use crate::{Error, codec, kafka, telemetry};

/// How long a revoked partition may take to commit its last batch before it is abandoned to
/// the next owner.
const REVOKE_GRACE: Duration = Duration::from_secs(15);
/// How long the tasks cancelled after [`REVOKE_GRACE`] may take to return from the Kafka call
/// they are blocked in (at most `kafka_timeout_ms`) before they are left behind: together
/// 19 s, within the 25 s a shutdown has before the process exits anyway (and the 30 s a pod
/// gets).
const CANCELLED_GRACE: Duration = Duration::from_secs(4);
/// How long a shutdown waits for the group consumer to leave the group. With the broker gone
/// librdkafka's close waits for a coordinator that is not there; the group then notices the
/// worker gone at its session timeout, as after a crash. With the grace periods above and the
/// 2 s the announcement's withdrawal may take, a shutdown takes at most about 23 s.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long the polling thread waits for a record while a partition is paused for
/// backpressure: the bound on how long a task that caught up waits to be resumed.
const THROTTLED_POLL: Duration = Duration::from_millis(5);
/// How long a fenced partition may stay assigned to this worker before it exits. Fencing
/// means another member owns the partition, so the group normally revokes it from this one
/// within a session timeout; if that does not happen, a restart is the way back.
const FENCED_EXIT_AFTER: Duration = Duration::from_secs(60);
/// Longest wait between two starts of a partition whose state cannot be restored.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

type GroupConsumer = BaseConsumer<WorkerContext>;

/// A tollgate worker.
#[derive(Debug)]
pub struct Worker {
    config: Arc<WorkerConfig>,
    tables: Arc<Tables>,
    assignment: Arc<Assignment>,
    readiness: Arc<Readiness>,
    /// The committed state of the owned partitions, for the tenant API.
    views: Arc<Views>,
    /// Who owns the other partitions, from the ownership topic.
    directory: Arc<Directory>,
    /// Where this worker's HTTP API is, announced with its partitions (none: not announced).
    address: OnceLock<String>,
}

/// The input partitions a worker owns right now, and which of them have their state restored;
/// observable from outside (tests, readiness).
#[derive(Debug)]
pub struct Assignment {
    /// The worker's name within its process: the `worker` label of its metrics.
    worker: String,
    owned: Mutex<Owned>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Owned {
    partitions: BTreeSet<i32>,
    /// Partitions whose task restored their state; kept only while owned.
    restored: BTreeSet<i32>,
}

impl Assignment {
    /// No partition yet, for the worker named `worker`.
    pub fn new(worker: &str) -> Self {
        Assignment { worker: worker.to_owned(), owned: Mutex::default(), changed: Condvar::new() }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The owned partitions.
    pub fn partitions(&self) -> BTreeSet<i32> {
        self.lock().partitions.clone()
    }

    /// The owned partitions, and those of them whose state is restored.
    pub fn snapshot(&self) -> (BTreeSet<i32>, BTreeSet<i32>) {
        let owned = self.lock();
        (owned.partitions.clone(), owned.restored.clone())
    }

    /// Waits until `ready` holds for the owned partitions or `timeout` passes; returns whether
    /// it holds.
    pub fn wait_until(&self, timeout: Duration, ready: impl Fn(&BTreeSet<i32>) -> bool) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |owned| !ready(&owned.partitions))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ready(&guard.partitions)
    }

    pub(crate) fn set(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut owned = self.lock();
        owned.partitions = partitions.into_iter().collect();
        let Owned { partitions, restored } = &mut *owned;
        restored.retain(|p| partitions.contains(p));
        telemetry::assigned_partitions(&self.worker, owned.partitions.len());
        self.changed.notify_all();
    }

    /// A task for `partition` is starting: its state is not restored (again) yet.
    pub(crate) fn starting(&self, partition: i32) {
        self.lock().restored.remove(&partition);
        self.changed.notify_all();
    }

    /// The task of `partition` restored its state.
    pub(crate) fn restored(&self, partition: i32) {
        self.lock().restored.insert(partition);
        self.changed.notify_all();
    }
}

impl Worker {
    /// A worker with its own reference tables, named `w1` in its metrics.
    pub fn new(config: WorkerConfig) -> Result<Self, Error> {
        Worker::named(config, "w1")
    }

    /// A worker named `name` in its metrics (the `worker` label): workers in one process, as
    /// in `tollgate demo`, need different names.
    pub fn named(config: WorkerConfig, name: &str) -> Result<Self, Error> {
        config.validate_for_worker()?;
        let assignment = Arc::new(Assignment::new(name));
        // Present at zero from the start, so "no partition anywhere" is visible.
        telemetry::assigned_partitions(name, 0);
        let readiness = Arc::new(Readiness::new(Arc::clone(&assignment)));
        let directory = Arc::new(Directory::new(&config.group_id));
        Ok(Worker {
            config: Arc::new(config),
            tables: Arc::new(Tables::default()),
            assignment,
            readiness,
            views: Arc::new(Views::default()),
            directory,
            address: OnceLock::new(),
        })
    }

    /// Announces `address` (`host:port` of the process's HTTP server) with this worker's
    /// partitions on the ownership topic, so that other workers forward tenant questions here.
    /// Call before [`Worker::run`]; without it the worker answers for its own partitions only.
    pub fn advertise(&self, address: &str) {
        let _ = self.address.set(address.to_owned());
    }

    /// The worker's side of the tenant API (`GET /v1/tenants/{tenant}`).
    pub fn tenant_api(&self) -> Arc<TenantApi> {
        Arc::new(TenantApi {
            views: Arc::clone(&self.views),
            tables: Arc::clone(&self.tables),
            directory: Arc::clone(&self.directory),
        })
    }

    /// The partitions this worker owns.
    pub fn assignment(&self) -> &Arc<Assignment> {
        &self.assignment
    }

    /// Whether this worker is ready to rate (for readiness probes).
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The live reference tables.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// Runs until `cancel` is cancelled: then finishes and commits the current batches,
    /// flushes, and leaves the group. Broker unavailability is retried with backoff; only configuration and
    /// topology errors end the run early.
    pub fn run(&self, cancel: &Cancel) -> Result<(), Error> {
        let outcome = self.run_until_stopped(cancel);
        self.readiness.reached(Stage::Stopped);
        match outcome {
            // Asked to stop before it was in the group (checking topics, loading reference
            // data): a clean stop too.
            Err(Error::ShutDown(what)) => {
                tracing::info!("stopped while {what}");
                Ok(())
            }
            other => other,
        }
    }

    /// Joins the group only once the reference data knows a tenant. Without one, every input
    /// would be dead-lettered as `unknown_tenant`, never rated (a deployment whose reference
    /// data was never published, a tenants topic renamed): the inputs wait in Kafka instead,
    /// the worker says why and is not ready until a tenant arrives.
    ///
    /// Meanwhile what the group's loop looks at for the reference reader is looked at here:
    /// a read Kafka refuses stops the worker (an empty topic it may not read is caught up at
    /// once, refused only later), and so does a reader that knows no broker any more.
    fn wait_for_a_tenant(&self, loader: &Loader, cancel: &Cancel) -> Result<(), Error> {
        if self.tables.knows_a_tenant() {
            return Ok(());
        }
        self.readiness.reached(Stage::WaitingForTenants);
        tracing::error!(
            topic = %self.config.topics[TopicKind::Tenants],
            "no tenant in the reference data: the inputs are not read until one is published (tollgate admin publish-reference); read now, every one would be dead-lettered as unknown_tenant"
        );
        // Woken by every reference record applied; the rest is looked at in between.
        while !self.tables.wait_until(Duration::from_millis(200), Tables::knows_a_tenant) {
            if cancel.is_cancelled() {
                return Err(Error::ShutDown("waiting for a tenant"));
            }
            if let Some(access) = loader.failure() {
                return Err(Error::Access(access));
            }
            if let Err(error) = loader.brokers().check() {
                tracing::error!(
                    "the reference reader has known no broker at all for a minute (librdkafka forgot them): exiting, so that a new process connects again"
                );
                return Err(Error::Kafka(error));
            }
        }
        tracing::info!("a tenant was published: joining the consumer group");
        Ok(())
    }

    fn run_until_stopped(&self, cancel: &Cancel) -> Result<(), Error> {
        let config = &self.config;
        self.readiness.reached(Stage::CheckingTopics);
        // Wrong credentials or an untrusted certificate never heal: stop now, naming them,
        // rather than retry forever as if the broker were away (which it may also be: then
        // the retries below wait for it).
        match access::probe(config, config.kafka_timeout(), cancel) {
            Err(Error::Access(access)) if access.cause != access::Cause::Unreachable => {
                telemetry::access_denied(access.cause, &access);
                return Err(Error::Access(access));
            }
            Err(stopped @ Error::ShutDown(_)) => return Err(stopped),
            // Said now, in words, rather than as the first retry's transport error later.
            Err(Error::Access(unreachable)) => tracing::warn!("{unreachable}; retrying until it answers"),
            _ => {}
        }
        let partition_count = retry("checking topics", cancel, || check_topology(config))?;
        tracing::info!(partitions = partition_count, group = %config.group_id, "topics are co-partitioned");
        let follower_cancel = Arc::new(Cancel::default());
        let follower = ownership::follow(config, Arc::clone(&self.directory), Arc::clone(&follower_cancel));
        let announcer = self.address.get().and_then(|address| {
            Announcer::new(config, self.assignment.worker(), address)
                .map_err(|error| tracing::warn!(%error, "cannot announce this worker's partitions"))
                .ok()
        });
        self.readiness.reached(Stage::LoadingReference);
        let loader =
            retry("starting the reference reader", cancel, || Loader::start(config, Arc::clone(&self.tables)))?;
        loader.wait_caught_up(cancel)?;
        // Only now: until the reference data is read, a real tenant is not known yet, and the
        // tenant API answers "starting" (503) instead of "unknown tenant" (404).
        self.views.set_partition_count(partition_count);
        self.wait_for_a_tenant(&loader, cancel)?;
        self.readiness.reached(Stage::JoiningGroup);

        let shared = Arc::new(Shared {
            config: Arc::clone(config),
            tables: Arc::clone(&self.tables),
            partition_count,
            assignment: Arc::clone(&self.assignment),
            readiness: Arc::clone(&self.readiness),
            tasks: Mutex::new(HashMap::new()),
            halts: Mutex::new(HashMap::new()),
            restarts: Mutex::new(HashMap::new()),
            poisons: Mutex::new(HashMap::new()),
            consumer: OnceLock::new(),
            backpressure: Backpressure::for_batch_size(config.batch_size),
            views: Arc::clone(&self.views),
            announcer,
            turns: AtomicU64::new(0),
        });
        let consumer: Arc<GroupConsumer> =
            Arc::new(kafka::group_consumer(config).create_with_context(WorkerContext {
                shared: Arc::clone(&shared),
                brokers: kafka::BrokerWatch::default(),
            })?);
        let _ = shared.consumer.set(Arc::downgrade(&consumer));
        consumer.subscribe(&[&config.topics[TopicKind::CallLegs], &config.topics[TopicKind::CreditCommands]])?;
        tracing::info!("joined the consumer group");

        let mut gauges_refreshed = Instant::now();
        let mut outcome = Ok(());
        while !cancel.is_cancelled() {
            let wait = if shared.throttled() { THROTTLED_POLL } else { Duration::from_millis(100) };
            match consumer.poll(wait) {
                Some(Ok(message)) => shared.route(&consumer, Record::from_message(&message)),
                Some(Err(error)) => {
                    let code = error.rdkafka_error_code().unwrap_or(rdkafka::types::RDKafkaErrorCode::Fail);
                    if let Some(access) = access::of_kafka(config, &error, || access::consumer_resource(config, code)) {
                        telemetry::access_denied(access.cause, &access);
                        outcome = Err(Error::Access(access));
                        break;
                    }
                    tracing::warn!(%error, "consumer error, retrying");
                }
                None => {}
            }
            if let Err(error) = shared.check_halts() {
                outcome = Err(error);
                break;
            }
            if let Some(access) = loader.failure() {
                outcome = Err(Error::Access(access));
                break;
            }
            shared.restart_due(&consumer);
            shared.resume_caught_up(&consumer);
            if gauges_refreshed.elapsed() >= telemetry::GAUGE_REFRESH {
                // Gauges idle for too long are dropped by the exporter.
                gauges_refreshed = Instant::now();
                // The assigned-partitions gauge, and an announcement lost to a long outage
                // sent again.
                shared.publish_assignment();
                shared.refresh_stalled();
                // A client stuck for good (see `kafka::BrokerWatch`) would leave this worker
                // a member of nothing (the group consumer), or rating with reference data
                // that no longer follows its topics (the reference reader), for ever: a new
                // process has new clients. Looked at here, not every turn: the watches
                // change once per statistics report (10 s).
                let watched = [("group consumer", &consumer.context().brokers), ("reference reader", loader.brokers())];
                if let Some((client, error)) =
                    watched.into_iter().find_map(|(client, watch)| watch.check().err().map(|error| (client, error)))
                {
                    tracing::error!(
                        client,
                        "a client has known no broker at all for a minute (librdkafka forgot them): exiting, so that a new process connects again"
                    );
                    outcome = Err(Error::Kafka(error));
                    break;
                }
            }
            // The record polled in this turn, if any, is in its task's inbox.
            shared.turns.fetch_add(1, Ordering::Release);
        }
        self.readiness.reached(Stage::ShuttingDown);
        tracing::info!("shutting down: committing in-flight batches");
        let partitions: Vec<i32> = shared.lock_tasks().keys().copied().collect();
        shared.stop_tasks(&partitions);
        // Dropping the consumer leaves the group; no task is left for the revoke callback. In
        // a thread of its own: with the broker gone it would wait for it (see `CLOSE_GRACE`).
        let (closed, close) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        match close.recv_timeout(CLOSE_GRACE) {
            Ok(()) => tracing::info!("left the consumer group"),
            Err(_) => tracing::warn!("could not leave the consumer group in time: the group will see this worker gone"),
        }
        drop(loader);
        if let Some(announcer) = &shared.announcer {
            // Short: a missing topic must not hold the shutdown up (the next owner's
            // announcement supersedes this worker's anyway).
            announcer.withdraw(Duration::from_secs(2));
        }
        follower_cancel.cancel();
        if let Some(follower) = follower {
            let _ = follower.join();
        }
        outcome
    }
}

/// Retries `op` with backoff until it succeeds, fails fatally, or `cancel` is cancelled (which
/// ends a backoff at once).
fn retry<T>(what: &'static str, cancel: &Cancel, mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 0u32;
    loop {
        match op() {
            Ok(value) => return Ok(value),
            Err(e) if e.class() == crate::error::Class::Fatal => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(%e, attempt, "{what} failed, retrying");
                if cancel.wait(Duration::from_millis(200u64 << attempt.min(6))) {
                    return Err(Error::ShutDown(what));
                }
            }
        }
    }
}

/// Checks that the inputs and the changelog have the same partition count (returned), that
/// the outputs exist, and that the changelog and the reference topics are compacted
/// ([`crate::topics::check_kept`]).
pub fn check_topology(config: &WorkerConfig) -> Result<i32, Error> {
    let consumer: BaseConsumer = kafka::base(config).create()?;
    let topics = &config.topics;
    let mut counts = Vec::new();
    // The inputs and the changelog, whose partition counts must be one.
    let co_partitioned: Vec<TopicKind> =
        TopicKind::with_role(Role::Input).chain(TopicKind::with_role(Role::Changelog)).collect();
    // The outputs must exist too: a missing one (the dead letters, say, when topics are made
    // by other tooling) would fail the first batch that writes to it, after days perhaps,
    // and every owner of that partition after it. They are partitioned by key on their own,
    // so their partition counts are not compared. The debit trail is written only when
    // enabled.
    let outputs = TopicKind::with_role(Role::Output)
        .filter(|kind| *kind != TopicKind::LedgerMovements || config.ledger_movements);
    let required = co_partitioned.iter().copied().chain(outputs);
    for kind in required {
        let topic = &topics[kind];
        let metadata = consumer.fetch_metadata(Some(topic), config.kafka_timeout())?;
        if let Some(code) =
            metadata.topics().first().and_then(|t| t.error()).map(rdkafka::types::RDKafkaErrorCode::from)
            && access::Cause::of_code(code).is_some()
        {
            return Err(AccessError::denied(config, &format!("describe topic {topic}"), code).into());
        }
        let count =
            metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len() as i32);
        if count == 0 {
            return Err(Error::Topology(format!(
                "topic {topic} does not exist (create it with `tollgate admin create-topics`)"
            )));
        }
        if co_partitioned.contains(&kind) {
            counts.push((topic.as_str(), count));
        }
    }
    if counts.iter().any(|(_, c)| *c != counts[0].1) {
        let listed: Vec<String> = counts.iter().map(|(t, c)| format!("{t}={c}")).collect();
        return Err(Error::Topology(format!(
            "inputs and changelog must have the same partition count (co-partitioning): {}",
            listed.join(", ")
        )));
    }
    // librdkafka's mock cluster (the embedded demo, the tests) answers no DescribeConfigs: its
    // topics are made by tollgate, and asking would only wait for the timeout.
    let cluster = consumer.client().fetch_cluster_id(config.kafka_timeout()).unwrap_or_default();
    if !cluster.starts_with("mockCluster") {
        kafka::block_on(crate::topics::check_kept(config))?;
    }
    Ok(counts[0].1)
}

/// `partition` of each of `topics`.
fn partition_of<'a>(topics: impl IntoIterator<Item = &'a String>, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        tpl.add_partition(topic, partition);
    }
    tpl
}

/// A partition whose task could not start, waiting to be started again.
struct Restart {
    /// Failed starts in a row.
    attempt: u32,
    /// When to start it again.
    at: Instant,
    /// Whether the polling thread has paused its inputs yet.
    paused: bool,
}

/// Whether a stalled partition is started again now: its backoff has passed and it has no
/// task. A task started before and still starting (restoring a large changelog, or waiting for
/// its transaction coordinator, past the backoff) is left to finish or fail: rewinding its
/// partition then would deliver the records in its inbox a second time.
fn restart_due_now(restart: &Restart, now: Instant, has_task: bool) -> bool {
    restart.paused && now >= restart.at && !has_task
}

struct TaskHandle {
    inbox: Mailbox,
    /// Whether the polling thread paused the partition because the task fell behind.
    throttled: bool,
    /// Inputs the task asked not to fetch while its recorded batch waits (see
    /// [`Coordinator::hold`]): backpressure's resume leaves them paused.
    held: Vec<String>,
    thread: JoinHandle<()>,
    /// Disconnected when the task's thread ends.
    finished: Receiver<()>,
    cancel: Arc<Cancel>,
}

/// State shared by the polling thread, the rebalance callbacks and the partition tasks.
struct Shared {
    config: Arc<WorkerConfig>,
    tables: Arc<Tables>,
    partition_count: i32,
    assignment: Arc<Assignment>,
    readiness: Arc<Readiness>,
    tasks: Mutex<HashMap<i32, TaskHandle>>,
    /// Tasks that stopped working on their partition for good, and since when.
    halts: Mutex<HashMap<i32, (Instant, Halt)>>,
    /// Partitions whose task could not restore their state: paused, started again later.
    restarts: Mutex<HashMap<i32, Restart>>,
    /// By partition: records whose rating panicked, refused by the partition's next tasks.
    poisons: Mutex<HashMap<i32, Vec<Poison>>>,
    consumer: OnceLock<Weak<GroupConsumer>>,
    backpressure: Backpressure,
    views: Arc<Views>,
    /// Announces the owned partitions on the ownership topic (none: no HTTP address).
    announcer: Option<Announcer>,
    /// Turns of the polling loop finished (see [`Coordinator::turns`]).
    turns: AtomicU64,
}

impl Shared {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<i32, TaskHandle>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the stalled gauge of every partition halted or waiting to restart here again: it
    /// was set when the partition stopped, and the exporter drops a gauge left unset for two
    /// minutes, so a partition stalled for good would vanish before its alert fired.
    fn refresh_stalled(&self) {
        let halts = self.lock_halts();
        let restarts = self.lock_restarts();
        for partition in halts.keys().chain(restarts.keys()) {
            telemetry::partition_stalled(*partition, true);
        }
    }

    fn lock_halts(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (Instant, Halt)>> {
        self.halts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_restarts(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Restart>> {
        self.restarts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task could not restore its partition's state (an unreadable changelog record): the
    /// partition stays assigned here but stalled (visible in `tollgate_partition_stalled`),
    /// and it is started again with backoff, so a repaired changelog (or a transient cause)
    /// lets it resume without a restart. Its records are not rated meanwhile: they stay
    /// uncommitted and are fetched again from the committed offsets.
    fn start_failed(&self, partition: i32, error: &Error) {
        let mut restarts = self.lock_restarts();
        let attempt = restarts.get(&partition).map_or(1, |r| r.attempt + 1);
        let wait = Duration::from_secs(1u64 << attempt.min(6)).min(RESTART_BACKOFF_MAX);
        tracing::error!(
            partition,
            %error,
            attempt,
            retry_in_s = wait.as_secs(),
            "partition state cannot be restored: the partition is stalled until it can"
        );
        telemetry::task_failed(partition, error);
        restarts.insert(partition, Restart { attempt, at: Instant::now() + wait, paused: false });
    }

    /// The records of `partition` whose rating panicked.
    fn poisons_of(&self, partition: i32) -> Vec<Poison> {
        self.poisons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    /// On the polling thread: pauses partitions whose task could not start, and starts them
    /// again once their backoff has passed, from the committed offsets.
    fn restart_due(self: &Arc<Self>, consumer: &GroupConsumer) {
        let mut due = Vec::new();
        for (&partition, restart) in self.lock_restarts().iter_mut() {
            if !restart.paused {
                restart.paused = true;
                // The task is gone; records already fetched for the partition are dropped.
                if let Some(handle) = self.lock_tasks().remove(&partition) {
                    let _ = handle.thread.join();
                }
                if let Err(error) = consumer.pause(&self.inputs(partition)) {
                    tracing::warn!(partition, %error, "cannot pause the partition");
                }
            } else if restart_due_now(restart, Instant::now(), self.lock_tasks().contains_key(&partition)) {
                due.push(partition);
            }
        }
        for partition in due {
            match self.rewind(consumer, partition) {
                Ok(()) => {
                    tracing::info!(partition, "starting the stalled partition again");
                    self.start_tasks(&[partition]);
                    if let Some(restart) = self.lock_restarts().get_mut(&partition) {
                        restart.at = Instant::now() + RESTART_BACKOFF_MAX;
                    }
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "cannot rewind the stalled partition, retrying");
                    if let Some(restart) = self.lock_restarts().get_mut(&partition) {
                        restart.at = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        }
    }

    /// Moves the partition's inputs back to their committed offsets and resumes fetching.
    /// Only for a partition without a task: a task's inbox would be handed the records it
    /// holds again.
    fn rewind(&self, consumer: &GroupConsumer, partition: i32) -> Result<(), Error> {
        let committed = consumer.committed_offsets(self.inputs(partition), self.config.kafka_timeout())?;
        let mut positions = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                rdkafka::Offset::Offset(o) => rdkafka::Offset::Offset(o),
                // Nothing committed yet: from the start, as `auto.offset.reset=earliest`.
                _ => rdkafka::Offset::Beginning,
            };
            positions.add_partition_offset(element.topic(), partition, offset)?;
        }
        consumer.seek_partitions(positions, self.config.kafka_timeout())?;
        consumer.resume(&self.inputs(partition))?;
        Ok(())
    }

    /// The two input topics' `partition`.
    fn inputs(&self, partition: i32) -> TopicPartitionList {
        self.inputs_but(partition, &[])
    }

    /// The input topics' `partition`, but those of `topics`.
    fn inputs_but(&self, partition: i32, topics: &[String]) -> TopicPartitionList {
        let inputs = [&self.config.topics[TopicKind::CallLegs], &self.config.topics[TopicKind::CreditCommands]];
        partition_of(inputs.into_iter().filter(|topic| !topics.contains(topic)), partition)
    }

    /// A failed task, or a fenced one the group did not take away in time, ends the worker.
    fn check_halts(&self) -> Result<(), Error> {
        for (&partition, (since, halt)) in self.lock_halts().iter() {
            match halt {
                Halt::Failed(reason) => return Err(Error::Halted { partition, reason: reason.clone() }),
                Halt::Fenced(reason) if since.elapsed() >= FENCED_EXIT_AFTER => {
                    return Err(Error::Halted {
                        partition,
                        reason: format!("fenced {} s ago and still assigned here: {reason}", since.elapsed().as_secs()),
                    });
                }
                Halt::Fenced(_) => {}
                Halt::Denied(access) => {
                    telemetry::access_denied(access.cause, access);
                    return Err(Error::Access(access.clone()));
                }
            }
        }
        Ok(())
    }

    /// Hands a record to its partition's task, and pauses the partition when the task has
    /// fallen behind.
    fn route(&self, consumer: &GroupConsumer, mut record: Record) {
        let partition = record.partition;
        record.timestamp = self.merge_time(&record);
        if let Some(task) = self.lock_tasks().get_mut(&partition) {
            // Never blocks: the channel is unbounded, the pause bounds it.
            if task.inbox.send(record) >= self.backpressure.pause_at && !task.throttled {
                match consumer.pause(&self.inputs(partition)) {
                    Ok(()) => {
                        telemetry::backpressure_paused(partition);
                        task.throttled = true;
                    }
                    Err(error) => tracing::warn!(partition, %error, "cannot pause a partition that fell behind"),
                }
            }
            return;
        }
        // A stalled partition's records are fetched again once it restarts.
        if !self.lock_restarts().contains_key(&partition) {
            tracing::warn!(partition, "record for a partition without a task");
        }
    }

    /// The time its task merges the two inputs by: when an input record happened (its
    /// value's `occurred_at`, in milliseconds), read without decoding the rest.
    ///
    /// A record whose `occurred_at` cannot be read (no value, bytes that are not the message,
    /// no `occurred_at`) is refused when it is rated, and changes no balance. It merges at the
    /// earliest time, which takes it right after the record before it in its own topic. Its
    /// Kafka timestamp (the time it was produced, for a backlog days after the events) would
    /// hold back every later record of its topic behind the other topic's records up to that
    /// time: a tenant's later credit commands rated before its earlier legs. A record dated
    /// too far after its Kafka timestamp ([`codec::future_dated`]) is refused too, and merges
    /// at the earliest time for the same reason: at its own date it would hold back its topic
    /// until then.
    fn merge_time(&self, record: &Record) -> i64 {
        let topics = &self.config.topics;
        let payload = record.payload.as_deref().unwrap_or_default();
        let occurred_at = if record.topic == topics[TopicKind::CallLegs] {
            tollgate_proto::peek::call_leg_occurred_at_millis(payload, self.config.max_record_bytes)
        } else if record.topic == topics[TopicKind::CreditCommands] {
            tollgate_proto::peek::credit_command_occurred_at_millis(payload, self.config.max_record_bytes)
        } else {
            return record.timestamp;
        };
        let max_future_seconds = self.config.max_future_seconds;
        occurred_at.filter(|&at| !codec::future_dated(at, record.produced_at, max_future_seconds)).unwrap_or(i64::MIN)
    }

    /// Whether a partition is paused for backpressure.
    fn throttled(&self) -> bool {
        self.lock_tasks().values().any(|t| t.throttled)
    }

    /// Resumes the partitions paused for backpressure whose task has caught up.
    fn resume_caught_up(&self, consumer: &GroupConsumer) {
        for (&partition, task) in self.lock_tasks().iter_mut() {
            if task.throttled && task.inbox.waiting() <= self.backpressure.resume_at {
                match consumer.resume(&self.inputs_but(partition, &task.held)) {
                    Ok(()) => {
                        tracing::debug!(partition, "task caught up: partition resumed");
                        task.throttled = false;
                    }
                    Err(error) => tracing::warn!(partition, %error, "cannot resume a partition"),
                }
            }
        }
    }

    fn start_tasks(self: &Arc<Self>, partitions: &[i32]) {
        for &partition in partitions {
            if self.lock_tasks().contains_key(&partition) {
                continue;
            }
            self.assignment.starting(partition);
            self.views.assigned(partition);
            let (inbox, rx) = inbox::channel_pair();
            let cancel = Arc::new(Cancel::default());
            let shared = Arc::clone(self);
            let task_cancel = Arc::clone(&cancel);
            let (finished_tx, finished) = channel::<()>();
            let guard = Arc::clone(self);
            let thread = std::thread::Builder::new().name(format!("tollgate-p{partition}")).spawn(move || {
                // Dropped when the thread ends, whatever way: wakes up `stop_tasks`.
                let _finished = finished_tx;
                // A panic would end this thread alone and leave its partition owned here and
                // rated by no one, with nothing said. It halts the partition instead, as a
                // fatal error does: the worker exits, and its supervisor restarts it.
                let task = std::panic::AssertUnwindSafe(move || {
                    let coordinator: Arc<dyn Coordinator> = Arc::clone(&shared) as Arc<dyn Coordinator>;
                    let given_up = Arc::clone(&task_cancel);
                    let started = PartitionTask::start(
                        partition,
                        shared.partition_count,
                        Arc::clone(&shared.config),
                        Arc::clone(&shared.tables),
                        coordinator,
                        task_cancel,
                        shared.poisons_of(partition),
                    );
                    // Given up while it started (a revoke left it behind): whatever it ended
                    // with is no longer this partition's news. A newer task may own the
                    // partition here by now, and its restart entry, readiness and halts are
                    // its own.
                    if given_up.is_cancelled() {
                        return;
                    }
                    match started {
                        Ok(task) => {
                            shared.lock_restarts().remove(&partition);
                            shared.assignment.restored(partition);
                            task.run(rx);
                        }
                        Err(Error::ShutDown(_)) => {}
                        Err(error @ Error::Changelog { .. }) => shared.start_failed(partition, &error),
                        Err(error) => {
                            // Initialising the transactional id or reading the changelog may be
                            // refused by an ACL: the halt names it. A task fenced while it starts
                            // (the partition moved on again) stops as a fenced task does.
                            let halt = Halt::of_start(&shared.config, partition, &error);
                            if let Halt::Fenced(_) = halt {
                                telemetry::fenced(partition, &error);
                            } else {
                                tracing::error!(partition, %error, "partition task could not start");
                                telemetry::task_failed(partition, &error);
                            }
                            shared.halted(partition, halt);
                        }
                    }
                });
                if let Err(panic) = std::panic::catch_unwind(task) {
                    let reason = format!("its task panicked: {}", crate::error::panic_message(panic.as_ref()));
                    telemetry::task_failed(partition, &reason);
                    guard.halted(partition, Halt::Failed(reason));
                }
            });
            match thread {
                Ok(thread) => {
                    self.lock_tasks().insert(
                        partition,
                        TaskHandle { inbox, throttled: false, held: Vec::new(), thread, finished, cancel },
                    );
                }
                Err(error) => tracing::error!(partition, %error, "cannot spawn partition task"),
            }
        }
        self.publish_assignment();
    }

    /// Partitions with a task, and stalled ones waiting for their next start (still owned
    /// here, not restored: readiness reports them).
    fn publish_assignment(&self) {
        let mut owned: Vec<i32> = self.lock_tasks().keys().copied().collect();
        owned.extend(self.lock_restarts().keys().copied());
        if let Some(announcer) = &self.announcer {
            let _ = announcer.announce(&owned.iter().copied().collect());
        }
        self.assignment.set(owned);
    }

    /// Tells the tasks to commit their batch and exit; a task that has not finished within
    /// the grace period is cancelled (its batch is left uncommitted to the next owner), and
    /// one still blocked in a Kafka call after that is left behind rather than waited for.
    fn stop_tasks(&self, partitions: &[i32]) {
        let handles: Vec<(i32, TaskHandle)> =
            partitions.iter().filter_map(|p| self.lock_tasks().remove(p).map(|h| (*p, h))).collect();
        for (_, handle) in &handles {
            handle.inbox.stop();
        }
        let deadline = Instant::now() + REVOKE_GRACE;
        let mut late = Vec::new();
        for (partition, handle) in handles {
            let wait = deadline.saturating_duration_since(Instant::now());
            match handle.finished.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => late.push((partition, handle)),
                _ => drop(handle.thread.join()),
            }
        }
        // Every late task is cancelled at once (one after the other, each would wait for the
        // ones before it), then all are given the same time to return.
        for (partition, handle) in &late {
            tracing::warn!(partition, "partition task did not commit in time: abandoning its batch");
            handle.cancel.cancel();
        }
        let deadline = Instant::now() + CANCELLED_GRACE.min(self.config.kafka_timeout() + Duration::from_secs(1));
        for (partition, handle) in late {
            let wait = deadline.saturating_duration_since(Instant::now());
            if let Err(RecvTimeoutError::Timeout) = handle.finished.recv_timeout(wait) {
                tracing::error!(partition, "partition task is stuck in a Kafka call: leaving it behind");
                continue;
            }
            let _ = handle.thread.join();
        }
        for partition in partitions {
            self.views.revoked(*partition);
        }
        let mut halts = self.lock_halts();
        let mut restarts = self.lock_restarts();
        for partition in partitions {
            if halts.remove(partition).is_some() | restarts.remove(partition).is_some() {
                telemetry::partition_stalled(*partition, false);
            }
        }
        drop((halts, restarts));
        self.publish_assignment();
    }

    fn input_partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| {
                e.topic() == self.config.topics[TopicKind::CallLegs]
                    || e.topic() == self.config.topics[TopicKind::CreditCommands]
            })
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }
}

impl Coordinator for Shared {
    fn committed(&self, offsets: &TopicPartitionList) {
        if let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) {
            if let Err(error) = consumer.commit(offsets, CommitMode::Async) {
                tracing::debug!(%error, "asynchronous offset commit not sent");
            }
        }
    }

    fn halted(&self, partition: i32, halt: Halt) {
        self.lock_halts().insert(partition, (Instant::now(), halt));
    }

    /// The task stopped (see [`Poison`]): the partition is started again at once, the way a
    /// partition whose start failed is (paused, rewound to its committed offsets, restored).
    fn poisoned(&self, partition: i32, poison: Poison) {
        self.poisons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(partition)
            .or_default()
            .push(poison);
        self.lock_restarts().insert(partition, Restart { attempt: 0, at: Instant::now(), paused: false });
    }

    fn view(&self, partition: i32) -> Option<Arc<PartitionView>> {
        self.views.partition(partition)
    }

    fn committed_offsets(&self, partition: i32) -> BTreeMap<String, i64> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return BTreeMap::new() };
        match consumer.committed_offsets(self.inputs(partition), self.config.kafka_timeout()) {
            Ok(committed) => committed
                .elements()
                .iter()
                .filter_map(|e| Some((e.topic().to_owned(), e.offset().to_raw().filter(|o| *o >= 0)?)))
                .collect(),
            Err(error) => {
                tracing::warn!(
                    partition,
                    %error,
                    "committed offsets unknown (the tenant API shows none until a commit, a catch-up counts from the log start, a recorded batch waits on)"
                );
                BTreeMap::new()
            }
        }
    }

    fn input_ends(&self, partition: i32) -> BTreeMap<String, (i64, i64)> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return BTreeMap::new() };
        let mut ends = BTreeMap::new();
        for element in self.inputs(partition).elements() {
            let topic = element.topic();
            // The group consumer reads read_committed: its high watermark is the last stable
            // offset.
            match consumer.fetch_watermarks(topic, partition, self.config.kafka_timeout()) {
                Ok(watermarks) => {
                    ends.insert(topic.to_owned(), watermarks);
                }
                Err(error) => {
                    tracing::warn!(partition, topic, %error, "input end unknown: rating in arrival order");
                    return BTreeMap::new();
                }
            }
        }
        ends
    }

    fn positions(&self, partition: i32) -> BTreeMap<String, i64> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return BTreeMap::new() };
        match consumer.position() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .filter(|e| e.partition() == partition)
                .filter_map(|e| Some((e.topic().to_owned(), e.offset().to_raw().filter(|o| *o >= 0)?)))
                .collect(),
            Err(error) => {
                tracing::debug!(partition, %error, "positions unknown");
                BTreeMap::new()
            }
        }
    }

    fn turns(&self) -> u64 {
        self.turns.load(Ordering::Acquire)
    }

    fn hold(&self, partition: i32, topics: &[String], asking: &Arc<Cancel>) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let mut tasks = self.lock_tasks();
        let Some(task) = tasks.get_mut(&partition).filter(|t| Arc::ptr_eq(&t.cancel, asking)) else { return };
        let held: Vec<String> = topics.iter().filter(|t| !task.held.contains(t)).cloned().collect();
        if held.is_empty() {
            return;
        }
        match consumer.pause(&partition_of(&held, partition)) {
            Ok(()) => {
                telemetry::inputs_held(partition, &held);
                task.held.extend(held);
            }
            Err(error) => {
                tracing::warn!(partition, %error, "cannot pause the inputs a recorded batch no longer awaits")
            }
        }
    }

    fn release(&self, partition: i32, asking: &Arc<Cancel>) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let mut tasks = self.lock_tasks();
        let Some(task) = tasks.get_mut(&partition).filter(|t| Arc::ptr_eq(&t.cancel, asking)) else { return };
        let held = std::mem::take(&mut task.held);
        // A partition paused for backpressure is resumed whole once its task catches up.
        if held.is_empty() || task.throttled {
            return;
        }
        if let Err(error) = consumer.resume(&partition_of(&held, partition)) {
            tracing::warn!(partition, %error, "cannot resume the inputs a recorded batch held");
        }
    }
}

/// The group consumer's context: hands rebalances to the partition tasks, and watches that
/// the consumer still knows a broker.
struct WorkerContext {
    shared: Arc<Shared>,
    brokers: kafka::BrokerWatch,
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.brokers.read(&statistics);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.shared.input_partitions(tpl);
            tracing::info!(?partitions, "partitions revoked: committing and handing over");
            self.shared.stop_tasks(&partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.shared.input_partitions(tpl);
                // A partition paused here while stalled starts afresh when assigned again.
                if let Err(error) = consumer.resume(tpl) {
                    tracing::warn!(%error, "cannot resume the assigned partitions");
                }
                tracing::info!(?partitions, "partitions assigned: restoring state");
                self.shared.start_tasks(&partitions);
                // The first assignment (possibly empty) makes this worker a member.
                self.shared.readiness.joined();
            }
            Rebalance::Error(error) => tracing::error!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tollgate_proto::{Message as _, v1};

    use super::{Assignment, Worker};
    use crate::cancel::Cancel;
    use crate::client::{EmbeddedKafka, TopicReader};
    use crate::partition::RATING_PANICKED;
    use crate::partition::tests::PANIC_MARK;
    use crate::publish::{self, Publisher};
    use crate::topics::{self, TopicKind};
    use crate::{ProcessingGuarantee, WorkerConfig, testing};

    /// A record whose rating panics costs its partition a restore, not the worker: it is
    /// dead-lettered `rating_panicked` with the panic's message, and the records before and
    /// after it are rated exactly once, from the state the changelog holds.
    #[test]
    fn a_record_whose_rating_panics_is_dead_lettered_and_its_partition_goes_on() {
        rated_around_a_panic(ProcessingGuarantee::AtLeastOnce);
        rated_around_a_panic(ProcessingGuarantee::ExactlyOnce);
    }

    fn rated_around_a_panic(guarantee: ProcessingGuarantee) {
        let cluster = EmbeddedKafka::start().unwrap();
        let config = WorkerConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            group_id: "poison".into(),
            processing_guarantee: guarantee,
            ..WorkerConfig::default()
        };
        cluster.create_topics(&topics::specs(&config, 1)).unwrap();
        let publisher = Publisher::new(&config).unwrap();
        let reference: v1::ReferenceData = serde_json::from_str(testing::REFERENCE).unwrap();
        for record in publish::reference(&config.topics, &reference) {
            publisher.send(&record).unwrap();
        }
        // ann (acme, pay per minute) dials New York three times; the second leg is marked.
        let leg = |n: u32, id: &str, at: &str, event: &str| {
            format!(
                r#"{{"callLeg":{{"eventId":"ev-{n}","tenantId":"acme","conferenceId":"conf","callId":"call-{id}","legId":"{id}","organizerId":"ann","occurredAt":"2026-11-02T00:{at}Z",{event}}}}}"#
            )
        };
        let started = format!(r#""started":{{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"{}"}}"#, testing::US);
        let ended = r#""ended":{"cause":"DISCONNECT_CAUSE_NORMAL","connectedSeconds":60}"#;
        let lines = [
            r#"{"creditCommand":{"commandId":"fund-1","tenantId":"acme","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"lot-1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#.to_owned(),
            leg(1, "leg-1", "00:00", &started),
            leg(2, "leg-1", "01:00", ended),
            leg(3, PANIC_MARK, "02:00", &started),
            leg(4, "leg-3", "03:00", &started),
            leg(5, "leg-3", "04:00", ended),
        ];
        for line in &lines {
            let record: v1::InputRecord = serde_json::from_str(line).unwrap();
            publisher.send(&publish::input(&config.topics, &record).unwrap()).unwrap();
        }
        publisher.flush().unwrap();

        let worker = Worker::new(config.clone()).unwrap();
        let stop = Arc::new(Cancel::default());
        let running = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || worker.run(&stop))
        };
        let t = &config.topics;
        let mut reader =
            TopicReader::from_beginning(&config, "test", &[&t[TopicKind::RatedUsage], &t[TopicKind::DeadLetter]])
                .unwrap();
        let (mut usages, mut dead) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut take = |record: crate::record::Record| {
            let value = record.payload.unwrap_or_default();
            if record.topic == t[TopicKind::RatedUsage] {
                let usage = v1::RatedUsage::decode(value.as_slice()).unwrap();
                usages.push((usage.usage_id, usage.charge, usage.balance_after));
            } else {
                let letter = v1::DeadLetter::decode(value.as_slice()).unwrap();
                dead.push((letter.source_topic, letter.source_offset, letter.error_code, letter.message));
            }
        };
        let mut rated = 0;
        while rated < 3 {
            assert!(Instant::now() < deadline, "not rated within 60 s ({rated} outputs)");
            if running.is_finished() {
                panic!("the worker stopped: {:?}", running.join());
            }
            let Some(record) = reader.poll(Duration::from_millis(100)) else { continue };
            take(record.unwrap());
            rated += 1;
        }
        stop.cancel();
        // The worker did not stop: the panic halted nothing.
        running.join().unwrap().unwrap();
        // Whatever else it wrote, to the end: a record rated twice would show here.
        reader.mark_ends().unwrap();
        reader.read_to_end(Duration::from_secs(30), take).unwrap();

        assert_eq!(
            usages,
            [
                ("acme/leg-1".to_owned(), "0.02".to_owned(), "9.98".to_owned()),
                ("acme/leg-3".to_owned(), "0.02".to_owned(), "9.96".to_owned()),
            ]
        );
        let (topic, offset, code, message) = &dead[0];
        let guarantee = guarantee.label();
        assert_eq!((topic.as_str(), *offset, code.as_str()), (t[TopicKind::CallLegs].as_str(), 2, RATING_PANICKED));
        assert!(message.contains("a test record marked to panic"), "{guarantee}: {message}");
        assert_eq!(dead.len(), 1, "{guarantee}: {dead:?}");
    }

    /// A stalled partition whose task was started again is not rewound while that task is
    /// still starting, however long it takes: only one without a task is.
    #[test]
    fn a_restart_waits_for_its_backoff_and_never_rewinds_a_starting_task() {
        let now = Instant::now();
        let restart = |at: Instant, paused: bool| super::Restart { attempt: 1, at, paused };
        let due = super::restart_due_now;
        assert!(due(&restart(now, true), now, false));
        assert!(!due(&restart(now + Duration::from_secs(1), true), now, false), "backoff not passed");
        assert!(!due(&restart(now, false), now, false), "not paused yet");
        assert!(!due(&restart(now, true), now, true), "its task is still starting");
    }

    /// What a partition task's panic is halted with: its message, whichever way it was raised.
    #[test]
    fn a_panic_is_told_by_its_message() {
        let caught = |body: fn()| {
            let panic = std::panic::catch_unwind(body).unwrap_err();
            crate::error::panic_message(panic.as_ref())
        };
        assert_eq!(caught(|| panic!("Addition overflowed")), "Addition overflowed");
        assert_eq!(caught(|| panic!("balance {} overflowed", 7)), "balance 7 overflowed");
        assert_eq!(caught(|| std::panic::panic_any(7)), "a panic without a message");
    }

    /// Two workers in one process (the demo) share one metrics registry: each exports its own
    /// series, so their sum is every partition, not the last worker's share.
    #[test]
    fn workers_in_one_process_export_their_partitions_apart() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            Assignment::new("w1").set([0, 1, 2]);
            Assignment::new("w2").set([3, 4, 5]);
        });
        let mut series: Vec<(String, f64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "tollgate_assigned_partitions")
            .map(|(key, _, _, value)| {
                let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                let DebugValue::Gauge(value) = value else { panic!("not a gauge: {value:?}") };
                (labels.join(","), value.into_inner())
            })
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(series, vec![("worker=w1".to_owned(), 3.0), ("worker=w2".to_owned(), 3.0)]);
    }
}
