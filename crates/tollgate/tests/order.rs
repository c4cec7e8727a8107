//! A worker catching up on a backlog rates a tenant's funding and its legs in the order they
//! happened, however the two inputs are fetched.
//!
//! On librdkafka's mock cluster (started in this test process) with two brokers: the credit
//! commands' partition is led by a broker that answers 1.5 s late, so its backlog reaches
//! the worker seconds after the legs'. Rated in arrival order, the legs would meet an empty
//! balance and be blocked for no credit; caught up in record time, they are charged against
//! the funding that preceded them, as the offline rater charges them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::DefaultProducerContext;
use tollgate_e2e::fleet::{GroupProgress, WorkerProcess, WorkerSpec, wait_until};
use tollgate_proto::{Message as _, v1};
use tollgate_worker::client::TopicReader;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{TopicKind, WorkerConfig, topics};

const REFERENCE: &str = include_str!("../../../examples/reference.json");
const EVENTS: &str = include_str!("../../../examples/events.jsonl");
const DEADLINE: Duration = Duration::from_secs(60);
/// How late the credit commands' broker answers each request.
const SLOW: Duration = Duration::from_millis(1500);

/// Northwind's funding and its first two legs, the funding two days before the legs.
const NORTHWIND: [&str; 5] =
    ["northwind-cmd-0001", "northwind-ev-0001", "northwind-ev-0002", "northwind-ev-0003", "northwind-ev-0004"];

/// A mock cluster whose credit commands are led by slow broker 2; everything else, the group
/// and the partition's transactions by broker 1. Holds the inputs of `EVENTS` named by `ids`,
/// after a leg record of value `first` (keyed contoso, produced now) when there is one.
fn cluster(
    group: &str,
    ids: &[&str],
    first: Option<&[u8]>,
) -> (MockCluster<'static, DefaultProducerContext>, WorkerConfig) {
    let cluster = MockCluster::new(2).unwrap();
    let config = WorkerConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        group_id: group.to_owned(),
        ..WorkerConfig::default()
    };
    let credits = &config.topics[TopicKind::CreditCommands];
    for spec in topics::specs(&config, 1) {
        cluster.create_topic(&spec.name, spec.partitions, 1).unwrap();
        let leader = if &spec.name == credits { 2 } else { 1 };
        cluster.partition_leader(&spec.name, 0, Some(leader)).unwrap();
    }
    cluster.coordinator(MockCoordinator::Group(group.to_owned()), 1).unwrap();
    for id in tollgate_worker::kafka::transactional_ids(&config, 0) {
        cluster.coordinator(MockCoordinator::Transaction(id), 1).unwrap();
    }

    let publisher = Publisher::new(&config).unwrap();
    let reference: v1::ReferenceData = serde_json::from_str(REFERENCE).unwrap();
    for record in publish::reference(&config.topics, &reference) {
        publisher.send(&record).unwrap();
    }
    if let Some(value) = first {
        // Produced now, weeks after the events: its Kafka timestamp is today's.
        publisher.send_raw(&config.topics[TopicKind::CallLegs], Some(b"contoso"), Some(value)).unwrap();
    }
    let lines = EVENTS.lines().filter(|line| ids.iter().any(|id| line.contains(&format!("\"{id}\""))));
    let mut published = 0;
    for line in lines {
        let input: v1::InputRecord = serde_json::from_str(line).unwrap();
        publisher.send(&publish::input(&config.topics, &input).unwrap()).unwrap();
        published += 1;
    }
    assert_eq!(published, ids.len());
    publisher.flush().unwrap();
    cluster.broker_round_trip_time(2, SLOW).unwrap();
    (cluster, config)
}

/// One worker's run over the backlog.
struct Run {
    /// The rated usage: usage id → (charge, balance after).
    rated: BTreeMap<String, (String, String)>,
    /// `tollgate_catch_up_given_up_total`.
    given_up: f64,
    /// The worker's log.
    log: String,
    /// The dead letters: (error code, source topic, source offset).
    dead: Vec<(String, String, i64)>,
}

impl Run {
    fn outcome(self) -> (BTreeMap<String, (String, String)>, f64) {
        (self.rated, self.given_up)
    }
}

/// Rates northwind's backlog with one worker (`TOLLGATE_CATCH_UP_WAIT_MS=wait_ms`).
fn rate(group: &str, wait_ms: &str) -> Run {
    rate_backlog(cluster(group, &NORTHWIND, None), group, wait_ms)
}

/// Rates the backlog of `cluster` with one worker (`TOLLGATE_CATCH_UP_WAIT_MS=wait_ms`).
fn rate_backlog(
    (_cluster, config): (MockCluster<'static, DefaultProducerContext>, WorkerConfig),
    group: &str,
    wait_ms: &str,
) -> Run {
    let log_dir = std::env::temp_dir().join(format!("tollgate-order-{group}-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let spec = WorkerSpec {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
        bootstrap: config.bootstrap_servers.clone(),
        group: group.to_owned(),
        guarantee: "at_least_once".into(),
        librdkafka: vec![("session.timeout.ms".into(), "6000".into()), ("heartbeat.interval.ms".into(), "500".into())],
        env: vec![("CATCH_UP_WAIT_MS".into(), wait_ms.into())],
        log_dir,
    };
    let t = &config.topics;
    let progress = GroupProgress::new(
        &config.bootstrap_servers,
        group,
        &[&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]],
        1,
    );
    let mut worker = WorkerProcess::start(&spec, "w1");
    wait_until("the worker to rate the backlog", DEADLINE, || progress.caught_up());
    let given_up = worker.metric("tollgate_catch_up_given_up_total").unwrap_or(0.0);
    assert!(worker.terminate(DEADLINE).success(), "{}", worker.log_tail());
    let log = worker.log();
    let mut rated = BTreeMap::new();
    tollgate_worker::client::read_rated_usage(
        &config,
        DEADLINE,
        |_, _| {},
        |_, usage| {
            let usage = usage.unwrap();
            rated.insert(usage.usage_id, (usage.charge, usage.balance_after));
        },
    )
    .unwrap();
    let mut dead = Vec::new();
    let reader = TopicReader::from_beginning(&config, "order-test", &[&t[TopicKind::DeadLetter]]).unwrap();
    reader
        .read_to_end(DEADLINE, |record| {
            let letter = v1::DeadLetter::decode(record.payload.unwrap_or_default().as_slice()).unwrap();
            dead.push((letter.error_code, letter.source_topic, letter.source_offset));
        })
        .unwrap();
    Run { rated, given_up, log, dead }
}

fn usage(id: &str, charge: &str, balance_after: &str) -> (String, (String, String)) {
    let tenant = id.split('-').next().unwrap_or_default();
    (format!("{tenant}/{id}"), (charge.to_owned(), balance_after.to_owned()))
}

#[test]
fn a_backlog_is_rated_in_the_order_it_happened_not_the_order_it_arrived() {
    // The offline rater's figures (examples/expected-output.jsonl): leg 1 blocked by policy
    // and charged nothing, leg 2 charged 0.28 of the 45.00 funded.
    let expected =
        BTreeMap::from([usage("northwind-leg-0001", "0.00", "45.00"), usage("northwind-leg-0002", "0.28", "44.72")]);
    assert_eq!(rate("order-caught-up", "20000").outcome(), (expected, 0.0));

    // The same backlog rated in arrival order: leg 2 meets an empty balance, is blocked for
    // no credit and charged nothing. This is what the catch-up prevents, and it shows that the
    // slow broker does make the funding arrive after the legs.
    let arrival_order =
        BTreeMap::from([usage("northwind-leg-0001", "0.00", "0.00"), usage("northwind-leg-0002", "0.00", "0.00")]);
    assert_eq!(rate("order-arrival", "0").outcome(), (arrival_order.clone(), 0.0));

    // Waiting less than the funding takes to arrive: the worker gives up, says so, and rates
    // in arrival order. The task's start asks the slow broker where the funding ends (one
    // round trip), and the funding itself takes two: now and then the task starts late enough
    // to find the funding in hand, and the case it checks did not happen. Its log says which
    // (`did not deliver in time` only when records were held for the funding); such a run is
    // repeated, up to five runs in all.
    let mut runs = 0;
    let given_up = loop {
        runs += 1;
        let run = rate(&format!("order-given-up-{runs}"), "1");
        if run.log.contains("did not deliver in time") || runs == 5 {
            break run;
        }
        assert!(run.log.contains("caught up: rating records as they arrive"), "{}", run.log);
    };
    assert_eq!(given_up.outcome(), (arrival_order, 1.0));
}

/// Contoso's backlog of the tests below: its funding of 11-01 (120.00), its first three legs
/// of 11-03 and 11-04, and a recharge of 11-18 (200.00).
const CONTOSO: [&str; 8] = [
    "contoso-cmd-0001",
    "contoso-ev-0001",
    "contoso-ev-0002",
    "contoso-ev-0003",
    "contoso-ev-0004",
    "contoso-ev-0005",
    "contoso-ev-0006",
    "contoso-cmd-0002",
];

/// Contoso's three legs as `tollgate rate --reference examples/reference.json --events <the
/// eight lines of CONTOSO>` rates them.
fn contoso_rated() -> BTreeMap<String, (String, String)> {
    BTreeMap::from([
        usage("contoso-leg-0001", "0.50", "119.50"),
        usage("contoso-leg-0002", "0.00", "120.00"),
        usage("contoso-leg-0003", "0.00", "119.50"),
    ])
}

/// A leg record whose time cannot be read (no value: refused when rated), produced today
/// before contoso's backlog, does not move the other records of its topic. Merged by its
/// Kafka timestamp, the legs came after the recharge, which then also put them more than
/// 48 h behind the tenant's newest event: refused as too late, none charged.
#[test]
fn an_unreadable_record_does_not_hold_back_the_records_after_it() {
    let group = "order-unreadable";
    let run = rate_backlog(cluster(group, &CONTOSO, Some(b"")), group, "20000");
    let legs = &WorkerConfig::default().topics[TopicKind::CallLegs];
    assert_eq!(run.dead, [("invalid".to_owned(), legs.clone(), 0)]);
    assert_eq!(run.outcome(), (contoso_rated(), 0.0));
}

/// A leg record dated a month after it was produced (a controller's clock a month ahead) is
/// refused (`future_dated`) and holds back nothing. Rated, it would have moved contoso's
/// newest event time a month ahead, and every true leg after it would have been refused as
/// too late, uncharged; merged at its own date, it would have held back the legs after it
/// behind the 11-18 recharge, as the unreadable record above did.
#[test]
fn a_record_dated_after_it_was_produced_is_refused_and_holds_back_nothing() {
    let line = EVENTS.lines().find(|line| line.contains("\"contoso-ev-0001\"")).unwrap();
    let input: v1::InputRecord = serde_json::from_str(line).unwrap();
    let Some(v1::input_record::Record::CallLeg(mut event)) = input.record else { panic!("{line} is a leg") };
    let month_ahead =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 30 * 86_400;
    event.occurred_at = Some(tollgate_proto::Timestamp { seconds: month_ahead as i64, nanos: 0 });
    event.event_id = "contoso-ev-ahead".into();
    event.leg_id = "contoso-leg-ahead".into();
    let group = "order-future-dated";
    let run = rate_backlog(cluster(group, &CONTOSO, Some(&event.encode_to_vec())), group, "20000");
    let legs = &WorkerConfig::default().topics[TopicKind::CallLegs];
    assert_eq!(run.dead, [("future_dated".to_owned(), legs.clone(), 0)]);
    assert_eq!(run.outcome(), (contoso_rated(), 0.0));
}
