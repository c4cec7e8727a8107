//! librdkafka client configuration: pass-through settings first, then the settings tollgate's
//! correctness depends on, re-asserted so no pass-through can weaken them.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::WorkerConfig;
use crate::topics::TopicKind;

/// Settings for every client: bootstrap servers, then the pass-through map.
pub fn base(config: &WorkerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.librdkafka {
        client.set(key, value);
    }
    client
}

/// The group consumer of the input topics.
pub fn group_consumer(config: &WorkerConfig) -> ClientConfig {
    let mut client = base(config);
    client
        .set("group.id", &config.group_id)
        // Offsets are committed by the partition tasks, after their outputs are safe.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never read outputs of aborted transactions (inputs may be written transactionally).
        .set("isolation.level", "read_committed")
        // Range assignment gives a worker partition p of every input topic: co-partitioning.
        .set("partition.assignment.strategy", "range")
        .set("auto.offset.reset", "earliest");
    resume_soon(&mut client);
    watched(&mut client);
    client
}

/// Unless configured otherwise: the client reports its statistics every 10 s, which is what
/// its [`BrokerWatch`] reads.
pub fn watched(client: &mut ClientConfig) {
    unless_set(client, "statistics.interval.ms", "10000");
}

/// How long a client may know no broker at all before it counts as stuck for good (see
/// [`BrokerWatch`]).
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Whether a client still knows a broker, from its statistics.
///
/// librdkafka 2.12 forgets every broker it knows when a metadata response lists none, which is
/// what a lone broker answers during its controlled shutdown, and then never connects again
/// (its issue 5301): such a client reports no error, and its statistics list no broker
/// learned from metadata or given in `bootstrap.servers`, only internal ones. A broker that
/// is merely down (a restart, an outage) stays listed, so an outage is not mistaken for it.
#[derive(Debug, Default)]
pub struct BrokerWatch {
    /// Since when the client has known no broker (none: it knows one).
    since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Statistics read so far (what tests wait for).
    #[cfg(test)]
    reports: std::sync::atomic::AtomicU64,
}

impl BrokerWatch {
    /// Reads one statistics report: the `source` of every broker the client lists.
    pub fn observe<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        let knows = sources.into_iter().any(|source| matches!(source, "learned" | "configured"));
        let mut since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (knows, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(std::time::Instant::now()),
            (false, Some(_)) => {}
        }
        #[cfg(test)]
        self.reports.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads one statistics report of librdkafka's.
    pub fn read(&self, statistics: &rdkafka::Statistics) {
        self.observe(statistics.brokers.values().map(|broker| broker.source.as_str()));
    }

    /// How long the client has known no broker, if it knows none now.
    pub fn knows_none_for(&self) -> Option<Duration> {
        self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map(|since| since.elapsed())
    }

    /// An error when the client has known no broker for [`STUCK_AFTER`] or longer: it is
    /// stuck for good, and only a new client connects again.
    pub fn check(&self) -> Result<(), KafkaError> {
        match self.knows_none_for() {
            Some(none) if none >= STUCK_AFTER => Err(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)),
            _ => Ok(()),
        }
    }

    /// Statistics reports read so far.
    #[cfg(test)]
    pub(crate) fn reports(&self) -> u64 {
        self.reports.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// As if the client had known no broker for `past` already.
    #[cfg(test)]
    pub(crate) fn known_none_since(&self, past: Duration) {
        let mut since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *since = std::time::Instant::now().checked_sub(past);
    }
}

/// Unless configured otherwise: a fetch request waits at most 100 ms at the broker for data
/// (librdkafka's default is 500 ms). A consumer has one fetch request in flight per broker,
/// so a partition resumed after backpressure (see `inbox`) is fetched again only when that
/// request returns; with the other partitions drained, it returned after the full wait. A
/// task that worked its inbox down in 90 ms then waited 400 ms for more: a partition with
/// a backlog of its own (a large tenant) drained at a fifth of its rate (`docs/BENCHMARKS.md`,
/// "Window segments, and a partition resumed without waiting"). An idle consumer sends ten
/// requests a second per broker instead of two.
fn resume_soon(client: &mut ClientConfig) {
    unless_set(client, "fetch.wait.max.ms", "100");
}

/// Sets `key` to `value` unless the pass-through set it: a performance default, not one
/// correctness depends on.
fn unless_set(client: &mut ClientConfig, key: &str, value: &str) {
    if client.get(key).is_none() {
        client.set(key, value);
    }
}

/// A consumer that reads assigned partitions from the start without a group (changelog
/// restore, reference data, `tail`).
pub fn reader(config: &WorkerConfig, purpose: &str) -> ClientConfig {
    let mut client = base(config);
    client
        .set("group.id", format!("{}-{purpose}", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    fetch_again_soon(&mut client);
    client
}

/// Unless configured otherwise: once the consumer's local queue is over its thresholds
/// (`queued.min.messages`), librdkafka waits `fetch.queue.backoff.ms` (1 s by default)
/// before it fetches that partition again, even when the queue drained long before. A reader
/// that applies what it reads (a restore) drained 100,000 records in a quarter of a second and
/// then waited the rest of the second, every time: the restore of a large changelog spent
/// most of its time idle.
fn fetch_again_soon(client: &mut ClientConfig) {
    unless_set(client, "fetch.queue.backoff.ms", "10");
}

/// A [`reader`]'s consumer.
pub type Reader = BaseConsumer<ReaderContext>;

/// A reader's client context: reaching the end of a partition is what a reader waits for,
/// not an error to log (librdkafka may report it as a client-level error too); every other
/// client error is logged as usual.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!(%error, reason, "end of partition");
        } else {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// A long-lived reader's client context: a [`ReaderContext`] whose statistics feed a
/// [`BrokerWatch`] (the client's settings need [`watched`]).
#[derive(Debug, Default)]
pub struct WatchedReader(pub std::sync::Arc<BrokerWatch>);

impl ClientContext for WatchedReader {
    fn error(&self, error: KafkaError, reason: &str) {
        ReaderContext.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.0.read(&statistics);
    }
}

impl ConsumerContext for WatchedReader {}

/// A long-lived reader: [`reader`], watched (its [`BrokerWatch`] is its context's).
pub type WatchedConsumer = BaseConsumer<WatchedReader>;

/// A [`reader`] for `purpose`, whose statistics feed its own [`BrokerWatch`].
pub fn watched_reader(config: &WorkerConfig, purpose: &str) -> rdkafka::error::KafkaResult<WatchedConsumer> {
    let mut client = reader(config, purpose);
    watched(&mut client);
    client.create_with_context(WatchedReader::default())
}

/// An idempotent producer (at-least-once outputs).
pub fn producer(config: &WorkerConfig) -> ClientConfig {
    let mut client = base(config);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Java-compatible key hashing for keyed outputs.
        .set("partitioner", "murmur2_random");
    client
}

/// A partition task's producer. Unless configured otherwise:
/// - every batch it queues is flushed at once, so nothing waits `linger.ms` (5 ms by default)
///   for company first;
/// - only failed deliveries are reported (`delivery.report.only.error`): a task needs to
///   know that every record was acknowledged ([`flush`] waits for that) and which failed,
///   and a report for each of the three or so records an input produces, served and
///   ignored, was about a tenth of a worker's profile samples.
pub fn task_producer(config: &WorkerConfig) -> ClientConfig {
    let mut client = producer(config);
    if client.get("linger.ms").is_none() && client.get("queue.buffering.max.ms").is_none() {
        client.set("linger.ms", "0");
    }
    unless_set(&mut client, "delivery.report.only.error", "true");
    client
}

/// A transactional producer of id `id` for a partition task (the changelog, with the input
/// offsets, in both guarantees; outputs too under exactly-once).
///
/// Unless configured otherwise, its requests are retried after 10 ms (doubling up to
/// `retry.backoff.max.ms`) instead of 100: the coordinator refuses a transactional request
/// with `CONCURRENT_TRANSACTIONS` while it still writes an earlier transaction's markers, a
/// matter of milliseconds, and at the default one retry was a tenth of a second on the
/// latency of every leg of the batch. (An `AddPartitionsToTxn` so refused is retried after a
/// fixed 20 ms whatever the setting; the task's two ids taking turns is what avoids that.)
///
/// It also allows records as large as the state topic does
/// ([`crate::topics::STATE_MAX_MESSAGE_BYTES`]): a tenant's record grows with its lots, and
/// one over librdkafka's default of 1,000,000 bytes would otherwise be refused before it is
/// sent, failing every batch of its partition.
pub fn transactional_producer(config: &WorkerConfig, id: &str) -> ClientConfig {
    let mut client = task_producer(config);
    client.set("transactional.id", id);
    unless_set(&mut client, "retry.backoff.ms", "10");
    unless_set(&mut client, "message.max.bytes", &crate::topics::STATE_MAX_MESSAGE_BYTES.to_string());
    client
}

/// `<prefix>-<changelog topic>-<partition>`: one transactional id per changelog partition, so
/// whoever takes a partition over fences whoever wrote it before (a zombie cannot commit).
///
/// The id names what it protects, the changelog partition, and not the consumer group: two
/// groups over one changelog (a group id changed in a rolling update, a second deployment
/// given the same topic names) would otherwise be two writers of the same state that never
/// fence each other, and a restore could mix their records. With the changelog in the id
/// they fence each other like two members of one group.
pub fn transactional_id(config: &WorkerConfig, partition: i32) -> String {
    format!("{}-{}-{partition}", config.transactional_id_prefix, config.topics[TopicKind::State])
}

/// The transactional ids of partition `partition`'s task: [`transactional_id`], and the same
/// with `.1` after it. The task's transactions take turns between the two (see
/// `crate::partition`); both are initialised, and so both fenced, by each new owner.
pub fn transactional_ids(config: &WorkerConfig, partition: i32) -> [String; 2] {
    let id = transactional_id(config, partition);
    let twin = format!("{id}.1");
    [id, twin]
}

/// Drives `future` to its end on this thread. For the admin API's futures, which librdkafka's
/// own threads resolve (and so wake this one): the worker has no async runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// Queues a record, serving delivery reports and waiting while librdkafka's queue is full.
pub fn send_waiting<C, K, P>(producer: &BaseProducer<C>, record: BaseRecord<'_, K, P>) -> Result<(), KafkaError>
where
    C: ProducerContext<DeliveryOpaque = ()>,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let mut pending = Some(record);
    while let Some(record) = pending.take() {
        match producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                // See `flush`: `poll` with a timeout would spin.
                producer.poll(Duration::ZERO);
                std::thread::sleep(FLUSH_PAUSE);
                pending = Some(record);
            }
            Err((error, _)) => return Err(error),
        }
    }
    Ok(())
}

/// Waits until every record `producer` queued is acknowledged and its delivery report (if it
/// gets one) served, or `timeout` passes.
///
/// `BaseProducer::flush` serves delivery reports with `poll(100 ms)`, and that poll returns
/// only when its 100 ms are over, not at the first report: every flush of a record in flight
/// took at least 100 ms, and so did every `commit_transaction` (it flushes first). A shorter
/// `poll` does not help: it turns the time left into whole milliseconds for librdkafka, so
/// below one millisecond it asks without waiting, again and again, until its deadline, and
/// `poll(1 ms)` is a busy loop (it was a sixth of a worker's CPU under load). So reports are
/// served without waiting (`poll(0)`, one event each), at once again while that serves
/// something, and otherwise after [`FLUSH_PAUSE`]. A producer with nothing in flight after
/// this has nothing for `flush` or `commit_transaction` to wait for.
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut in_flight = producer.in_flight_count();
    loop {
        if in_flight == 0 {
            return Ok(());
        }
        producer.poll(Duration::ZERO);
        let before = std::mem::replace(&mut in_flight, producer.in_flight_count());
        if in_flight < before {
            continue;
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(FLUSH_PAUSE);
    }
}

/// How long [`flush`] and [`send_waiting`] wait before asking librdkafka again: short beside
/// a broker's acknowledgement (a millisecond or more), long beside serving one report.
const FLUSH_PAUSE: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rdkafka::consumer::Consumer;
    use rdkafka::message::DeliveryResult;
    use rdkafka::mocking::MockCluster;

    use super::*;

    /// A client that knows no broker any more counts as stuck from then on, and no longer
    /// once it knows one again.
    /// The ids name the changelog: a group id does not change them, another changelog does (a
    /// second deployment, with topics of its own, is not fenced by this one). That writers of
    /// two groups fence each other on a real broker: `tests/tests/fencing.rs`.
    #[test]
    fn transactional_ids_follow_the_changelog_not_the_group() {
        let ids = |state: &str, group: &str| {
            let mut config = WorkerConfig { group_id: group.to_owned(), ..WorkerConfig::default() };
            config.topics[TopicKind::State] = state.to_owned();
            transactional_ids(&config, 3)
        };
        assert_eq!(ids("a.state", "g1"), ids("a.state", "g2"));
        assert_eq!(ids("a.state", "g1"), ["tollgate-a.state-3".to_owned(), "tollgate-a.state-3.1".to_owned()]);
        assert_ne!(ids("a.state", "g1"), ids("b.state", "g1"));
    }

    #[test]
    fn a_client_that_lists_no_broker_is_watched_from_then_on() {
        let watch = BrokerWatch::default();
        watch.observe(["learned", "internal", "logical"]);
        assert_eq!(watch.knows_none_for(), None);
        watch.observe(["internal", "logical"]);
        assert!(watch.knows_none_for().is_some(), "knows none");
        let since = |watch: &BrokerWatch| *watch.since.lock().unwrap();
        let first = since(&watch);
        // Still none: counted from the first time, not again from now.
        watch.observe(["internal"]);
        assert_eq!(since(&watch), first);
        assert!(watch.check().is_ok(), "not for a minute yet");
        watch.known_none_since(STUCK_AFTER);
        let error = watch.check().expect_err("stuck for a minute");
        assert_eq!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown));
        watch.observe(["configured", "internal"]);
        assert_eq!(watch.knows_none_for(), None);
        assert!(watch.check().is_ok());
        assert_eq!(watch.reports(), 4);
    }

    /// librdkafka's own statistics, read as the group consumer reads them: a client whose
    /// broker is merely unreachable still lists it (an outage is not a stuck client), and one
    /// connected lists it too.
    #[test]
    fn real_statistics_list_an_unreachable_broker_and_a_connected_one() {
        let cluster = MockCluster::new(1).unwrap();
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        for bootstrap in [cluster.bootstrap_servers(), unused.to_string()] {
            let config = WorkerConfig { bootstrap_servers: bootstrap.clone(), ..WorkerConfig::default() };
            let mut client = group_consumer(&config);
            client.set("statistics.interval.ms", "100");
            let consumer: BaseConsumer<WatchedReader> = client.create_with_context(WatchedReader::default()).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while consumer.context().0.reports() < 3 {
                assert!(std::time::Instant::now() < deadline, "{bootstrap}: no statistics read");
                let _ = consumer.poll(Duration::from_millis(50));
            }
            assert_eq!(consumer.context().0.knows_none_for(), None, "{bootstrap}");
        }
    }

    /// Counts the delivery reports served.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl ClientContext for Counted {}

    impl ProducerContext for Counted {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
            assert!(result.is_ok(), "delivered");
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Counts the delivery reports served, successes and failures apart.
    #[derive(Default)]
    struct Reports {
        delivered: AtomicUsize,
        failed: AtomicUsize,
    }

    impl ClientContext for Reports {}

    impl ProducerContext for Reports {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
            let count = if result.is_ok() { &self.delivered } else { &self.failed };
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_group_consumer_waits_100_ms_at_the_broker_unless_told_otherwise() {
        let group = |settings: &[(&str, &str)]| {
            let librdkafka = settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let client = group_consumer(&WorkerConfig { librdkafka, ..WorkerConfig::default() });
            client.get("fetch.wait.max.ms").map(str::to_owned)
        };
        assert_eq!(group(&[]).as_deref(), Some("100"));
        assert_eq!(group(&[("fetch.wait.max.ms", "500")]).as_deref(), Some("500"));
    }

    #[test]
    fn a_task_producer_reports_failed_deliveries_only() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
        let producer: BaseProducer<Reports> = task_producer(&config).create_with_context(Reports::default()).unwrap();
        for i in 0..200 {
            send_waiting(&producer, BaseRecord::to("t").key(&format!("k{i}")).payload("v")).unwrap();
        }
        flush(&producer, Duration::from_secs(30)).unwrap();
        let counts = |p: &BaseProducer<Reports>| {
            (
                p.in_flight_count(),
                p.context().delivered.load(Ordering::SeqCst),
                p.context().failed.load(Ordering::SeqCst),
            )
        };
        // All acknowledged, and no report served for them.
        assert_eq!(counts(&producer), (0, 0, 0));
        // A produce request the broker refuses for good: its record's failure is reported.
        cluster.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        send_waiting(&producer, BaseRecord::to("t").key("k").payload("v")).unwrap();
        flush(&producer, Duration::from_secs(30)).unwrap();
        assert_eq!(counts(&producer), (0, 0, 1));
    }

    #[test]
    fn flush_returns_with_every_record_acknowledged_and_its_report_served() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 3, 1).unwrap();
        let producer: BaseProducer<Counted> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create_with_context(Counted::default())
            .unwrap();
        for i in 0..500 {
            send_waiting(&producer, BaseRecord::to("t").key(&format!("k{i}")).payload("v")).unwrap();
        }
        flush(&producer, Duration::from_secs(30)).unwrap();
        assert_eq!((producer.in_flight_count(), producer.context().0.load(Ordering::SeqCst)), (0, 500));
        // Nothing in flight: returns at once, without error.
        flush(&producer, Duration::ZERO).unwrap();
    }
}
