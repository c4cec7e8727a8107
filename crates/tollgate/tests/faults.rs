//! The fault suite: tollgate workers as real processes against a real Apache Kafka broker,
//! with faults injected while traffic flows, each run ending with the invariant checker
//! (`tollgate_worker::verify`) green and every tenant's charges equal to the exact amount its
//! legs cost, in both processing guarantees.
//!
//! Each scenario has its own broker (some of them kill it). `TOLLGATE_SOAK=1` turns the
//! random-kill soak on (≥ 10 kills, 100,000 legs over 1,000 tenants, 1 % duplicates); the
//! CI-sized scenarios run with a few thousand legs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tollgate_core::Money;
use tollgate_e2e::broker::Broker;
use tollgate_e2e::fleet::{GroupProgress, WorkerProcess, WorkerSpec};
use tollgate_e2e::traffic::{Shape, Traffic};
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::verify::{self, Expectations, Report};
use tollgate_worker::{Cancel, ProcessingGuarantee, WorkerConfig, topics};

const PARTITIONS: i32 = 6;
/// How long any one wait of a scenario may take.
const DEADLINE: Duration = Duration::from_secs(180);
/// How long the test's own publisher may fail to flush before it is replaced (see
/// `Run::publish_legs`).
const PUBLISHER_STUCK: Duration = Duration::from_secs(40);
/// Short session timeout for the scenarios that do not test the default.
const FAST_GROUP: [(&str, &str); 2] = [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")];

/// One scenario's broker, topics, traffic and workers.
struct Run {
    broker: Broker,
    config: WorkerConfig,
    spec: WorkerSpec,
    traffic: Arc<Traffic>,
    progress: GroupProgress,
    workers: Vec<WorkerProcess>,
    started_workers: usize,
    /// Workers that exited on their own and were started again (what a supervisor does).
    restarts: usize,
    logs: TempDir,
}

/// A directory removed at the end (kept with `TOLLGATE_KEEP_BROKER`).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("TOLLGATE_KEEP_BROKER").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("worker logs kept in {}", self.0.display());
        }
    }
}

impl Drop for Run {
    /// A failed scenario keeps what explains it beside the workers' logs: the broker's own
    /// log, and which partitions the broker serves no leader for.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kept = self.logs.0.join("broker-server.log");
        if let Err(e) = std::fs::copy(self.broker.dir().join("server.log"), &kept) {
            eprintln!("cannot keep the broker's log: {e}");
        }
        eprintln!("partitions without a leader:\n{}", self.broker.unserved_partitions());
    }
}

impl Run {
    fn new(guarantee: ProcessingGuarantee, shape: &Shape, librdkafka: &[(&str, &str)]) -> Run {
        Run::on(Broker::start(), guarantee, shape, librdkafka)
    }

    fn on(broker: Broker, guarantee: ProcessingGuarantee, shape: &Shape, librdkafka: &[(&str, &str)]) -> Run {
        let group = format!("tollgate-faults-{}", std::process::id());
        let config = WorkerConfig {
            bootstrap_servers: broker.bootstrap_servers(),
            group_id: group.clone(),
            processing_guarantee: guarantee,
            ..WorkerConfig::default()
        };
        tollgate_e2e::broker::create_topics(&config, &topics::specs(&config, PARTITIONS)).expect("create topics");
        let logs =
            std::env::temp_dir().join(format!("tollgate-faults-{}-{}", std::process::id(), broker_port(&broker)));
        std::fs::create_dir_all(&logs).expect("log dir");
        let spec = WorkerSpec {
            // FAULTS_TOLLGATE_BINARY runs the scenarios against another build (an older
            // release, or one with a safeguard removed) to see the checker catch it.
            binary: std::env::var_os("FAULTS_TOLLGATE_BINARY")
                .map_or_else(|| env!("CARGO_BIN_EXE_tollgate").into(), Into::into),
            bootstrap: broker.bootstrap_servers(),
            group: group.clone(),
            guarantee: guarantee.label().to_owned(),
            librdkafka: librdkafka.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            env: Vec::new(),
            log_dir: logs.clone(),
        };
        let t = &config.topics;
        let progress = GroupProgress::new(
            &config.bootstrap_servers,
            &group,
            &[&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]],
            PARTITIONS,
        );
        let traffic = Arc::new(Traffic::generate(shape));
        let publisher = Publisher::new(&config).expect("publisher");
        for record in publish::reference(&config.topics, &traffic.reference) {
            publisher.send(&record).expect("send reference");
        }
        publisher.flush().expect("flush reference");
        Run {
            broker,
            config,
            spec,
            traffic,
            progress,
            workers: Vec::new(),
            started_workers: 0,
            restarts: 0,
            logs: TempDir(logs),
        }
    }

    /// Starts a worker named after how many were started before it (`w1`, `w2`, ...).
    fn next_worker(&mut self) -> WorkerProcess {
        self.started_workers += 1;
        WorkerProcess::start(&self.spec, &format!("w{}", self.started_workers))
    }

    fn start_worker(&mut self) {
        let worker = self.next_worker();
        self.workers.push(worker);
    }

    /// Starts `workers` workers and funds every tenant.
    fn start_funded(&mut self, workers: usize) {
        for _ in 0..workers {
            self.start_worker();
        }
        self.fund();
    }

    /// Starts again any worker that exited on its own, as a supervisor would.
    fn supervise(&mut self) {
        for i in 0..self.workers.len() {
            if let Some(status) = self.workers[i].exited() {
                if status.code().is_some() {
                    eprintln!(
                        "{} exited ({status}); restarting it. Log tail:\n{}",
                        self.workers[i].name,
                        self.workers[i].log_tail()
                    );
                }
                self.restarts += 1;
                self.workers[i] = self.next_worker();
            }
        }
    }

    /// Waits (supervising) until `ready`.
    fn wait(&mut self, what: &str, mut ready: impl FnMut(&Run) -> bool) {
        let started = Instant::now();
        loop {
            self.supervise();
            if ready(self) {
                return;
            }
            if started.elapsed() > DEADLINE {
                for w in &self.workers {
                    eprintln!("--- {} ---\n{}", w.name, w.log_tail());
                }
                panic!("timed out after {DEADLINE:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Publishes the funding and waits until the group committed it, so every leg finds its
    /// tenant funded.
    fn fund(&mut self) {
        let publisher = Publisher::new(&self.config).expect("publisher");
        for record in Traffic::keyed(&self.config.topics, &self.traffic.funding) {
            publisher.send(&record).expect("send funding");
        }
        publisher.flush().expect("flush funding");
        self.wait("funding applied", |run| run.progress.caught_up());
    }

    /// Publishes the legs (and poison) from a thread at about `per_second` records a second;
    /// `sent` counts what was queued.
    fn publish_legs(&self, per_second: usize) -> Publishing {
        let traffic = Arc::clone(&self.traffic);
        let config = self.config.clone();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let thread = std::thread::spawn(move || {
            let publisher = Publisher::new(&config).expect("publisher");
            let started = Instant::now();
            let keyed = Traffic::keyed(&config.topics, &traffic.legs);
            for (n, record) in keyed.iter().enumerate() {
                publisher.send(record).expect("send leg");
                if n == keyed.len() / 3 {
                    for (key, value) in &traffic.poison {
                        publisher
                            .send_raw(&config.topics[TopicKind::CallLegs], Some(key), Some(value))
                            .expect("send poison");
                    }
                }
                counter.store(n + 1, Ordering::Release);
                let due = started + Duration::from_secs_f64((n + 1) as f64 / per_second as f64);
                if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(ahead);
                }
            }
            // The broker may be down for a while (the broker scenarios): keep flushing. A
            // client that forgot every broker stays stuck for good (librdkafka 2.12 does when
            // a metadata response lists none, as a lone broker answers while it shuts down:
            // see `RESUMES` in the worker's partition.rs); a call controller would reconnect
            // and send again, and so does this one. The copies it sends again are duplicate
            // deliveries, which the workers recognise and the checker expects.
            let deadline = Instant::now() + DEADLINE;
            let mut publisher = publisher;
            let mut stuck_since = Instant::now();
            while let Err(error) = publisher.flush_within(config.kafka_timeout()) {
                assert!(Instant::now() < deadline, "flush legs: {error}");
                if stuck_since.elapsed() >= PUBLISHER_STUCK {
                    eprintln!(
                        "the publisher's flush failed for {PUBLISHER_STUCK:?} ({error}): sending again with a new client"
                    );
                    publisher = Publisher::new(&config).expect("publisher");
                    for record in &keyed {
                        publisher.send(record).expect("send leg again");
                    }
                    stuck_since = Instant::now();
                }
            }
        });
        Publishing { sent, total: self.traffic.legs.len(), thread: Some(thread) }
    }

    /// Starts `workers` workers, funds every tenant, publishes the legs at `per_second` and
    /// returns once a third of them are out: the moment the scenarios inject their fault.
    fn traffic_underway(&mut self, workers: usize, per_second: usize) -> Publishing {
        self.start_funded(workers);
        let publishing = self.publish_legs(per_second);
        let third = publishing.total / 3;
        self.wait("a third of the legs published", |_| publishing.sent() >= third);
        publishing
    }

    /// Committed input offsets, summed.
    fn committed(&self) -> i64 {
        self.progress.committed().unwrap_or(0)
    }

    fn wait_caught_up(&mut self, publishing: &mut Publishing) {
        publishing.join();
        self.wait("every input committed", |run| run.progress.caught_up());
    }

    /// The end of a scenario: every leg published and committed, every worker stopped with
    /// SIGTERM, the checker green.
    fn finish(&mut self, publishing: &mut Publishing) -> Report {
        self.wait_caught_up(publishing);
        self.stop_all();
        self.verify()
    }

    /// SIGTERM to every worker: each must exit cleanly within the 30 s a pod gets.
    fn stop_all(&mut self) {
        for mut worker in std::mem::take(&mut self.workers) {
            let status = worker.terminate(Duration::from_secs(30));
            assert!(status.success(), "{} exited with {status} on SIGTERM:\n{}", worker.name, worker.log_tail());
        }
    }

    /// Runs the checker while the workers are at work (right after a kill, the traffic possibly
    /// still underway): what they have settled must check out, whatever they are in the middle
    /// of (outputs of a batch the killed worker did not commit, inputs not rated yet).
    fn verify_underway(&self) {
        let expectations = Expectations {
            exactly_once: self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
            ..Expectations::default()
        };
        let report = verify::run(&self.config, &expectations, &Cancel::default()).expect("verify");
        assert!(report.is_ok(), "invariants violated while the traffic was underway:\n{report}");
        let unrated: u64 = report.tenants.iter().map(|t| t.unrated).sum();
        eprintln!("checked underway: {unrated} inputs not rated yet, left out");
    }

    /// Runs the checker and asserts it is green with the exact expected figures.
    fn verify(&self) -> Report {
        let expectations = Expectations {
            exactly_once: self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
            dead_letters: None,
            all_rated: true,
        };
        let report = verify::run(&self.config, &expectations, &Cancel::default()).expect("verify");
        assert!(report.is_ok(), "invariants violated:\n{report}");
        for (tenant, cents) in &self.traffic.expected_cents {
            let row = report.tenant(tenant).unwrap_or_else(|| panic!("no row for {tenant}:\n{report}"));
            let expected = Money::new(rust_decimal::Decimal::new(*cents as i64, 2));
            assert_eq!(row.charges + row.open_debited, expected, "{tenant}: charges\n{report}");
            assert_eq!(row.legs - row.open_legs, self.traffic.expected_legs[tenant], "{tenant}: ended legs");
            assert_eq!(row.missing, 0, "{tenant}");
        }
        let mut codes: Vec<&str> = report.dead_letters.iter().map(|d| d.code.as_str()).collect();
        codes.sort_unstable();
        assert_eq!(codes, vec!["decode", "unknown_tenant"], "dead letters:\n{report}");
        if self.config.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            assert!(report.tenants.iter().all(|t| t.duplicates == 0), "exactly-once produced duplicates:\n{report}");
        }
        let sum = |f: fn(&verify::TenantRow) -> Money| report.tenants.iter().map(f).fold(Money::ZERO, |a, b| a + b);
        eprintln!(
            "scenario done ({}): {} tenants, {} legs, {} missing, {} duplicates downstream, charges {} = ledger {} (money in {} - balances {}), {} worker restarts",
            self.config.processing_guarantee.label(),
            report.tenants.len(),
            report.tenants.iter().map(|t| t.legs).sum::<u64>(),
            report.tenants.iter().map(|t| t.missing).sum::<u64>(),
            report.tenants.iter().map(|t| t.duplicates).sum::<u64>(),
            sum(|t| t.charges + t.open_debited),
            sum(|t| t.money_in - t.balance),
            sum(|t| t.money_in),
            sum(|t| t.balance),
            self.restarts
        );
        report
    }
}

fn broker_port(broker: &Broker) -> String {
    broker.bootstrap_servers().rsplit(':').next().unwrap_or("0").to_owned()
}

/// The legs being published in the background.
struct Publishing {
    sent: Arc<AtomicUsize>,
    total: usize,
    thread: Option<JoinHandle<()>>,
}

impl Publishing {
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Acquire)
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("publisher thread");
        }
    }
}

fn shape() -> Shape {
    Shape::default()
}

/// kill -9 one of two workers in the middle of the traffic; a supervisor restarts it.
fn kill_one_worker(guarantee: ProcessingGuarantee) {
    let mut run = Run::new(guarantee, &shape(), &FAST_GROUP);
    let mut publishing = run.traffic_underway(2, 2_000);
    let before = run.committed();
    run.wait("a batch committed after that", |run| run.committed() > before);
    run.workers[0].kill9();
    run.verify_underway();
    run.finish(&mut publishing);
}

#[test]
fn kill_one_worker_at_least_once() {
    kill_one_worker(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn kill_one_worker_exactly_once() {
    kill_one_worker(ProcessingGuarantee::ExactlyOnce);
}

/// kill -9 every worker on a backlog, with producer settings that split each batch over many
/// requests (so a kill lands between a batch's records); restart them: the state comes back
/// from the changelog whole.
fn kill_all_workers(guarantee: ProcessingGuarantee) {
    let split = [FAST_GROUP[0], FAST_GROUP[1], ("batch.size", "16384"), ("linger.ms", "0")];
    // A backlog of ~70,000 records in full-size batches: each batch's changelog records take
    // many requests to write, so the kill lands mid-write (the release before transactional
    // state tore tenants here: double charges, usages that differ between copies).
    let mut run = Run::new(guarantee, &Shape { legs: 30_000, ..shape() }, &split);
    run.start_funded(2);
    // A backlog first, then the workers die while draining it.
    let mut publishing = run.publish_legs(1_000_000);
    publishing.join();
    let before = run.committed();
    run.wait("the backlog being drained", |run| run.committed() > before);
    run.workers[0].kill9();
    run.workers[1].kill9();
    assert!(!run.progress.caught_up(), "the backlog was drained before the kill");
    run.workers.clear();
    run.start_worker();
    run.start_worker();
    run.finish(&mut publishing);
}

#[test]
fn kill_all_workers_at_least_once() {
    kill_all_workers(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn kill_all_workers_exactly_once() {
    kill_all_workers(ProcessingGuarantee::ExactlyOnce);
}

/// SIGSTOP a worker past its session timeout: the other takes every partition (and fences
/// it); SIGCONT it while traffic still flows, or once the survivor has rated everything (then
/// a stale batch the zombie held, if it could still be written, would be the last word on its
/// tenants). The zombie must write no state. Batches wait up to a second to fill, so the
/// paused worker almost surely holds one.
fn zombie(guarantee: ProcessingGuarantee, wake_after_traffic: bool) {
    let mut run = Run::new(guarantee, &Shape { legs: 10_000, ..shape() }, &FAST_GROUP);
    run.spec.env.push(("COMMIT_INTERVAL_MS".into(), "1000".into()));
    let mut publishing = run.traffic_underway(2, 400);
    // The zombie-to-be owns partitions and has rated some of them: it has batches to hold.
    run.wait("the first worker rating its partitions", |run| {
        run.workers[0].metric("tollgate_assigned_partitions").is_some_and(|p| p > 0.0)
            && run.workers[0].metric("tollgate_input_records_total").is_some_and(|n| n > 0.0)
    });
    run.workers[0].pause();
    run.wait("the other worker owning every partition", |run| {
        run.workers[1].metric("tollgate_assigned_partitions") == Some(f64::from(PARTITIONS))
    });
    let before = run.committed();
    run.wait("the survivor committing", |run| run.committed() > before);
    if wake_after_traffic {
        run.wait_caught_up(&mut publishing);
        run.workers[0].resume();
        run.wait("the zombie back in the group", |run| {
            run.workers[0].metric("tollgate_assigned_partitions").is_some_and(|p| p > 0.0)
        });
        run.wait("every input committed", |run| run.progress.caught_up());
    } else {
        run.workers[0].resume();
        assert!(publishing.sent() < publishing.total, "the traffic ended before the zombie woke up");
        run.wait_caught_up(&mut publishing);
    }
    let fenced = run.workers[0].metric("tollgate_producer_fenced_total").unwrap_or(0.0);
    eprintln!("the zombie was fenced {fenced} times");
    // A fenced task stops; it never re-creates its producer to fence the owner back.
    assert!(fenced <= f64::from(PARTITIONS), "the zombie fought over its partitions: fenced {fenced} times");
    if wake_after_traffic {
        // Woken long after the survivor took its partitions over, each task it still ran
        // wrote with a producer the survivor had fenced.
        assert!(fenced >= 1.0, "the zombie was never fenced:\n{}", run.workers[0].log_tail());
    }
    let owner = run.workers[1].log();
    assert!(
        !owner.contains("old epoch") && !owner.contains("fenced"),
        "the zombie fenced the partitions' real owner back:\n{}",
        run.workers[1].log_tail()
    );
    run.stop_all();
    run.verify();
}

#[test]
fn zombie_at_least_once() {
    zombie(ProcessingGuarantee::AtLeastOnce, false);
}

#[test]
fn zombie_exactly_once() {
    zombie(ProcessingGuarantee::ExactlyOnce, false);
}

#[test]
fn zombie_woken_after_traffic_at_least_once() {
    zombie(ProcessingGuarantee::AtLeastOnce, true);
}

#[test]
fn zombie_woken_after_traffic_exactly_once() {
    zombie(ProcessingGuarantee::ExactlyOnce, true);
}

/// The broker killed (kill -9, short session timeout) or stopped (SIGTERM, the default 45 s
/// session timeout) under traffic, then started again on the same data: the workers ride it
/// out (retrying, resuming commits) without losing or repeating a debit.
fn broker_bounced(guarantee: ProcessingGuarantee, kill: bool) {
    let group: &[(&str, &str)] = if kill { &FAST_GROUP } else { &[] };
    let mut run = Run::new(guarantee, &shape(), group);
    let mut publishing = run.traffic_underway(2, 2_000);
    if kill {
        run.broker.kill9();
    } else {
        run.broker.sigterm();
    }
    run.broker.restart();
    run.finish(&mut publishing);
}

#[test]
fn broker_killed_at_least_once() {
    broker_bounced(ProcessingGuarantee::AtLeastOnce, true);
}

#[test]
fn broker_killed_exactly_once() {
    broker_bounced(ProcessingGuarantee::ExactlyOnce, true);
}

/// SIGTERM reaches a worker while the broker is gone (its commit hangs, its consumer cannot
/// leave the group): it still shuts down cleanly (exit code 0) within the 30 s a pod gets, and
/// nothing is lost.
fn terminated_while_broker_is_down(guarantee: ProcessingGuarantee) {
    let mut run = Run::new(guarantee, &shape(), &FAST_GROUP);
    let mut publishing = run.traffic_underway(1, 2_000);
    run.broker.kill9();
    let mut worker = run.workers.remove(0);
    let started = Instant::now();
    let status = worker.terminate(Duration::from_secs(30));
    eprintln!("{} exited in {:?} with {status} while the broker was down", worker.name, started.elapsed());
    // The bounded shutdown, not the process's last resort (exit code 2 at 25 s): its tasks
    // cancelled after their grace period, the rest of the shutdown bounded too.
    let log = worker.log();
    assert!(status.success(), "{status}:\n{}", worker.log_tail());
    assert!(log.contains("partition task did not commit in time"), "{}", worker.log_tail());
    assert!(!log.contains("graceful shutdown took too long"), "{}", worker.log_tail());
    run.broker.restart();
    run.start_worker();
    run.finish(&mut publishing);
}

#[test]
fn terminated_while_broker_is_down_at_least_once() {
    terminated_while_broker_is_down(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn terminated_while_broker_is_down_exactly_once() {
    terminated_while_broker_is_down(ProcessingGuarantee::ExactlyOnce);
}

/// The broker paused (SIGSTOP) under traffic for longer than a transaction commit may take,
/// then resumed: a commit that timed out is resumed, never aborted into a conflict with
/// itself; an abort serves its delivery reports; a failed batch is logged once, not once per
/// record. Every partition makes progress again and SIGTERM is honoured afterwards.
fn broker_paused(guarantee: ProcessingGuarantee) {
    // The broker's own session with its controller (in the same paused JVM) outlives the
    // pause, so what is tested is the clients' side of a silent broker. (A lone KRaft node
    // that fences itself and is unfenced at once was seen to leave every producer, the test's
    // own included, timing out for minutes.)
    let broker = Broker::start_with(&[("broker.session.timeout.ms", "30000")]);
    let mut run = Run::on(broker, guarantee, &shape(), &[]);
    let mut publishing = run.traffic_underway(2, 2_000);
    run.broker.pause();
    // The scenario: the broker silent for 20 s, longer than `kafka_timeout_ms` (10 s) and
    // shorter than the 45 s session timeout. (Not a wait for something to happen: whether a
    // worker had a batch in flight when it went silent depends on the traffic's timing, so
    // the retries it caused are reported, not required.)
    std::thread::sleep(Duration::from_secs(20));
    let retries: f64 = run
        .workers
        .iter()
        .map(|w| {
            w.metric("tollgate_transaction_commit_retries_total").unwrap_or(0.0)
                + w.metric("tollgate_batch_retries_total").unwrap_or(0.0)
        })
        .sum();
    eprintln!("batches failed or commits resumed while the broker was paused: {retries}");
    run.broker.resume();
    run.wait_caught_up(&mut publishing);
    for worker in &run.workers {
        let log = worker.log();
        for wedge in ["Conflicting commit_transaction", "event queue must be polled"] {
            assert!(!log.contains(wedge), "{}: {wedge}\n{}", worker.name, worker.log_tail());
        }
        let warnings = log.lines().filter(|line| line.contains("WARN")).count();
        eprintln!("{}: {warnings} warnings", worker.name);
        assert!(warnings < 200, "{} flooded its log: {warnings} warnings\n{}", worker.name, worker.log_tail());
    }
    run.stop_all();
    run.verify();
}

#[test]
fn broker_paused_at_least_once() {
    broker_paused(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn broker_paused_exactly_once() {
    broker_paused(ProcessingGuarantee::ExactlyOnce);
}

#[test]
fn broker_restarted_at_least_once() {
    broker_bounced(ProcessingGuarantee::AtLeastOnce, false);
}

#[test]
fn broker_restarted_exactly_once() {
    broker_bounced(ProcessingGuarantee::ExactlyOnce, false);
}

/// Workers join and leave (gracefully and not) under load, six times.
fn rebalance_storm(guarantee: ProcessingGuarantee) {
    let mut run = Run::new(guarantee, &Shape { legs: 10_000, ..shape() }, &FAST_GROUP);
    run.start_funded(1);
    let mut publishing = run.publish_legs(1_000);
    for round in 0..6 {
        run.start_worker();
        let before = run.committed();
        run.wait("progress after a join", |run| run.committed() > before || run.progress.caught_up());
        let mut leaving = run.workers.remove(0);
        if round % 2 == 0 {
            let status = leaving.terminate(Duration::from_secs(30));
            assert!(status.success(), "{} exited with {status}:\n{}", leaving.name, leaving.log_tail());
        } else {
            leaving.kill9();
        }
    }
    run.start_worker();
    run.finish(&mut publishing);
}

#[test]
fn rebalance_storm_at_least_once() {
    rebalance_storm(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn rebalance_storm_exactly_once() {
    rebalance_storm(ProcessingGuarantee::ExactlyOnce);
}

/// One tenant with thousands of legs in progress (the state that once outgrew the broker's
/// record size limit): kill -9, restore, and the legs are all still open.
fn thousands_of_open_legs(guarantee: ProcessingGuarantee) {
    let shape = Shape { open_legs: 3_000, ..shape() };
    let mut run = Run::new(guarantee, &shape, &FAST_GROUP);
    run.start_funded(1);
    let mut publishing = run.publish_legs(1_000_000);
    run.wait_caught_up(&mut publishing);
    run.workers[0].kill9();
    run.workers.clear();
    run.start_worker();
    // Ready: in the group, every partition it owns restored.
    run.wait("the restarted worker owning and restoring every partition", |run| {
        run.workers[0].metric("tollgate_assigned_partitions") == Some(f64::from(PARTITIONS)) && run.workers[0].ready()
    });
    // The restored state in memory, as the tenant API shows it: every leg still open.
    let answer = run.workers[0].get("/v1/tenants/t0000");
    let Some((200, body)) = answer else { panic!("the tenant API answered {answer:?}") };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(answer["openLegs"]["count"], 3_000, "{body}");
    run.stop_all();
    let report = run.verify();
    assert_eq!(report.tenant("t0000").map(|t| t.open_legs), Some(3_000));
}

#[test]
fn thousands_of_open_legs_at_least_once() {
    thousands_of_open_legs(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn thousands_of_open_legs_exactly_once() {
    thousands_of_open_legs(ProcessingGuarantee::ExactlyOnce);
}

/// The long soak, with `TOLLGATE_SOAK=1`: ≥ 10 random kills of workers over 100,000 legs of
/// 1,000 tenants (a few hot), 1 % duplicate deliveries, three workers. Without the variable
/// it runs a short version (two kills, 3,000 legs), so the code path stays tested.
fn soak(guarantee: ProcessingGuarantee) {
    let long = std::env::var_os("TOLLGATE_SOAK").is_some();
    let shape = if long {
        Shape { tenants: 1_000, hot: 5, hot_share: 20, legs: 100_000, duplicate_per_mille: 10, ..Shape::default() }
    } else {
        shape()
    };
    let kills = if long { 12 } else { 2 };
    let mut run = Run::new(guarantee, &shape, &FAST_GROUP);
    run.start_funded(3);
    let rate = if long { 3_000 } else { 1_000 };
    let mut publishing = run.publish_legs(rate);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for kill in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = run.committed();
        run.wait("progress before a kill", |run| run.committed() > before);
        let victim = (seed % run.workers.len() as u64) as usize;
        eprintln!("soak: kill {} of {}", kill + 1, run.workers[victim].name);
        run.workers[victim].kill9();
        run.verify_underway();
        run.workers[victim] = run.next_worker();
    }
    run.finish(&mut publishing);
}

#[test]
fn soak_at_least_once() {
    soak(ProcessingGuarantee::AtLeastOnce);
}

#[test]
fn soak_exactly_once() {
    soak(ProcessingGuarantee::ExactlyOnce);
}
