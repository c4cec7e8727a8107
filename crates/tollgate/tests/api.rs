//! The operator and billing surface end to end, with `tollgate run` processes: the tenant API
//! (`GET /v1/tenants/{tenant}`, `tollgate balance`) and the usage report (`tollgate report`).
//!
//! - On librdkafka's mock cluster (started in this test process): two workers answer for
//!   every tenant with the same bytes, equal to what the tenant's credit events and rated
//!   usage add up to; while a third worker joins and one leaves, every answer is the one
//!   before or a 503 with `Retry-After`, never anything else.
//! - On a real broker, under exactly-once (transactions and `read_committed` matter): the
//!   report's rows and totals equal the ledger's debits (the debit trail) and the changelog's
//!   usage charges, to the cent, and the API agrees.
//!
//! Every wait is on a signal (an answer, a watermark, a process exit) with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_e2e::fleet::{GroupProgress, WorkerProcess, WorkerSpec, http_get_with_head, wait_until};
use tollgate_e2e::traffic::{Shape, Traffic};
use tollgate_proto::{Message, v1};
use tollgate_worker::client::TopicReader;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{TopicKind, WorkerConfig, topics};

const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(120);

fn d(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A deployment under test: topics, traffic, workers.
struct Deployment {
    config: WorkerConfig,
    spec: WorkerSpec,
    traffic: Traffic,
    publisher: Publisher,
    progress: GroupProgress,
    workers: Vec<WorkerProcess>,
}

impl Deployment {
    fn new(config: WorkerConfig, guarantee: &str, env: &[(&str, &str)], shape: &Shape) -> Deployment {
        let log_dir = std::env::temp_dir().join(format!("tollgate-api-{}-{}", config.group_id, std::process::id()));
        std::fs::create_dir_all(&log_dir).unwrap();
        let spec = WorkerSpec {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
            bootstrap: config.bootstrap_servers.clone(),
            group: config.group_id.clone(),
            guarantee: guarantee.into(),
            librdkafka: vec![
                ("session.timeout.ms".into(), "6000".into()),
                ("heartbeat.interval.ms".into(), "500".into()),
            ],
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            log_dir,
        };
        let t = &config.topics;
        let progress = GroupProgress::new(
            &config.bootstrap_servers,
            &config.group_id,
            &[&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]],
            PARTITIONS,
        );
        let traffic = Traffic::generate(shape);
        let publisher = Publisher::new(&config).unwrap();
        for record in publish::reference(&config.topics, &traffic.reference) {
            publisher.send(&record).unwrap();
        }
        publisher.flush().unwrap();
        Deployment { config, spec, traffic, publisher, progress, workers: Vec::new() }
    }

    fn start_worker(&mut self, name: &str) {
        self.workers.push(WorkerProcess::start(&self.spec, name));
    }

    /// Two workers rate the funding, then the legs, and have committed all of it.
    fn rate_with_two_workers(&mut self) {
        self.start_worker("w1");
        self.start_worker("w2");
        self.publish_funding();
        self.wait_caught_up();
        self.publish_legs();
        self.wait_caught_up();
    }

    fn tenants(&self) -> Vec<String> {
        self.traffic.expected_cents.keys().cloned().collect()
    }

    fn publish_funding(&self) {
        for keyed in Traffic::keyed(&self.config.topics, &self.traffic.funding) {
            self.publisher.send(&keyed).unwrap();
        }
        self.publisher.flush().unwrap();
    }

    fn publish_legs(&self) {
        for keyed in Traffic::keyed(&self.config.topics, &self.traffic.legs) {
            self.publisher.send(&keyed).unwrap();
        }
        let legs = &self.config.topics[TopicKind::CallLegs];
        for (key, value) in &self.traffic.poison {
            self.publisher.send_raw(legs, Some(key), Some(value)).unwrap();
        }
        self.publisher.flush().unwrap();
    }

    /// Waits until every worker is ready and every tenant's answer reflects its partition's
    /// inputs up to their high watermarks: the committed state has everything published.
    fn wait_caught_up(&self) {
        for worker in &self.workers {
            wait_until(&format!("{} to be ready", worker.name), DEADLINE, || worker.ready());
        }
        let high = self.progress.high_watermarks().unwrap();
        let t = &self.config.topics;
        // Asked of every worker: one that does not own a tenant answers only once it has read
        // the owner's announcement, which may come after the owner caught up.
        wait_until("every tenant's answer, on every worker, to reflect every input", DEADLINE, || {
            self.workers.iter().flat_map(|w| self.tenants().into_iter().map(move |t| (w, t))).all(|(worker, tenant)| {
                let partition = tollgate_worker::partitioner::partition_for(tenant.as_bytes(), PARTITIONS);
                let Some((200, body)) = worker.get(&path(&tenant)) else { return false };
                let answer: Value = serde_json::from_str(&body).unwrap();
                [&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]].into_iter().all(|topic| {
                    let end = high[&(topic.clone(), partition)];
                    end == 0 || answer["committed"]["inputOffsets"][topic.as_str()].as_i64() == Some(end)
                })
            })
        });
        // The answers come from committed views; what the checks read back from the topics
        // is readable only once the last transactions' markers are written.
        let written = [TopicKind::RatedUsage, TopicKind::CreditEvents, TopicKind::State, TopicKind::DeadLetter];
        let written: Vec<&str> = written.iter().map(|kind| t[*kind].as_str()).collect();
        tollgate_e2e::broker::wait_until_settled(&self.config, &written, DEADLINE);
    }

    /// Every tenant's answer, asked of `worker`.
    fn answers(&self, worker: &WorkerProcess) -> BTreeMap<String, String> {
        self.tenants()
            .into_iter()
            .map(|tenant| {
                let (status, body) = worker.get(&path(&tenant)).unwrap();
                assert_eq!(status, 200, "{} on {}: {body}", tenant, worker.name);
                (tenant, body)
            })
            .collect()
    }

    /// Per tenant: the money funded, from the credit events (`FUNDED`, by event id).
    fn funded(&self) -> BTreeMap<String, Decimal> {
        sum_by_tenant(&self.config, TopicKind::CreditEvents, |event: v1::CreditEvent| {
            (event.kind == v1::credit_event::Kind::Funded as i32)
                .then(|| (event.credit_event_id, event.tenant_id, d(&event.amount)))
        })
    }

    /// Per tenant: the sum of its rated legs' charges (one record per usage id).
    fn charges(&self) -> BTreeMap<String, Decimal> {
        let mut usages = BTreeMap::new();
        tollgate_worker::client::read_rated_usage(
            &self.config,
            DEADLINE,
            |_, _| {},
            |_, usage| {
                let usage = usage.unwrap();
                usages.insert(usage.usage_id.clone(), usage);
            },
        )
        .unwrap();
        let mut charges: BTreeMap<String, Decimal> = self.tenants().into_iter().map(|t| (t, Decimal::ZERO)).collect();
        for usage in usages.values() {
            *charges.get_mut(&usage.tenant_id).unwrap() += d(&usage.charge);
        }
        charges
    }
}

fn path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}")
}

/// The partitions a worker's `/ready` says it owns and restored.
fn owned(worker: &WorkerProcess) -> Option<BTreeSet<i32>> {
    let (status, body) = worker.get("/ready")?;
    let set = body.split_once("partitions {")?.1.split_once('}')?.0;
    (status == 200).then(|| set.split(", ").filter(|s| !s.is_empty()).map(|p| p.parse().unwrap()).collect())
}

/// Every tenant's answer equals what its credit events and rated usage add up to: the
/// balance is the money funded less the charges of its rated legs and what its legs still in
/// progress were debited so far, and the charges are what the traffic's legs cost.
fn check_against_the_topics(deployment: &Deployment, answers: &BTreeMap<String, String>) {
    let funded = deployment.funded();
    let charges = deployment.charges();
    for (tenant, body) in answers {
        let answer: Value = serde_json::from_str(body).unwrap();
        let in_progress: Decimal =
            answer["openLegs"]["legs"].as_array().unwrap().iter().map(|leg| d(leg["debited"].as_str().unwrap())).sum();
        assert_eq!(
            answer["openLegs"]["count"].as_u64(),
            Some(answer["openLegs"]["legs"].as_array().unwrap().len() as u64)
        );
        let expected = funded[tenant] - charges[tenant] - in_progress;
        assert_eq!(d(answer["balance"].as_str().unwrap()), expected, "{tenant}: {body}");
        assert_eq!(d(answer["totals"]["funded"].as_str().unwrap()), funded[tenant], "{tenant}");
        assert_eq!(d(answer["totals"]["usageCharges"].as_str().unwrap()), charges[tenant] + in_progress, "{tenant}");
        assert_eq!(
            charges[tenant],
            Decimal::new(deployment.traffic.expected_cents[tenant] as i64, 2),
            "{tenant}: the rated usage is not what its legs cost"
        );
        let lots: Decimal =
            answer["lots"].as_array().unwrap().iter().map(|lot| d(lot["remaining"].as_str().unwrap())).sum();
        assert_eq!(lots - d(answer["debt"].as_str().unwrap()), expected, "{tenant}: lots and debt");
        for lot in answer["lots"].as_array().unwrap() {
            // Every lot here was bought in this run: what was bought is known, and never less
            // than what is left.
            let (purchased, remaining) = (d(lot["purchased"].as_str().unwrap()), d(lot["remaining"].as_str().unwrap()));
            assert!(purchased >= remaining && purchased.is_sign_positive(), "{tenant}: lot {lot}");
        }
        assert_eq!(answer["currency"], "USD");
    }
}

/// Two workers answer for every tenant with the same bytes, equal to the sum of the tenant's
/// credit events and rated usage; an unknown tenant is 404 on both. While a third worker
/// joins and then the first leaves, every answer any worker gives is the one before or a 503
/// with `Retry-After`, and afterwards every worker gives it again.
#[test]
fn every_worker_answers_for_every_tenant_the_same_committed_position_across_rebalances() {
    let cluster = MockCluster::<'static, DefaultProducerContext>::new(1).unwrap();
    let config = WorkerConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        group_id: format!("tollgate-api-mock-{}", std::process::id()),
        ..WorkerConfig::default()
    };
    for spec in topics::specs(&config, PARTITIONS) {
        cluster.create_topic(&spec.name, spec.partitions, 1).unwrap();
    }
    let shape = Shape {
        tenants: 10,
        hot: 2,
        legs: 300,
        duplicate_per_mille: 20,
        open_legs: 3,
        concurrency: 10,
        ..Shape::default()
    };
    let mut deployment = Deployment::new(config, "at_least_once", &[("COMMIT_INTERVAL_MS", "20")], &shape);
    deployment.rate_with_two_workers();

    let before = deployment.answers(&deployment.workers[0]);
    assert_eq!(deployment.answers(&deployment.workers[1]), before, "the two workers answer differently");
    check_against_the_topics(&deployment, &before);
    let hot: Value = serde_json::from_str(&before["t0000"]).unwrap();
    assert_eq!(hot["openLegs"]["count"], 3, "the first hot tenant has the traffic's legs in progress");
    for worker in &deployment.workers {
        let (status, head, body) = http_get_with_head(worker.port(), "/v1/tenants/nobody").unwrap();
        assert_eq!((status, body.as_str()), (404, "{\"error\":\"unknown tenant \\\"nobody\\\"\"}\n"), "{head}");
    }

    // tollgate balance: the same answer, for scripts and for people.
    let api = format!("http://127.0.0.1:{}", deployment.workers[1].port());
    let json = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["balance", "t0001", "--json", "--api", &api])
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    assert_eq!(String::from_utf8(json.stdout).unwrap(), before["t0001"]);
    let human =
        Command::new(env!("CARGO_BIN_EXE_tollgate")).args(["balance", "t0001", "--api", &api]).output().unwrap();
    let answer: Value = serde_json::from_str(&before["t0001"]).unwrap();
    let first = String::from_utf8(human.stdout).unwrap();
    assert_eq!(
        first.lines().next(),
        Some(format!("t0001: balance {} USD", answer["balance"].as_str().unwrap()).as_str())
    );
    let unknown =
        Command::new(env!("CARGO_BIN_EXE_tollgate")).args(["balance", "nobody", "--api", &api]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&unknown.stderr), "tollgate balance: unknown tenant \"nobody\"\n");

    // A third worker joins, then the first leaves; meanwhile, ask every worker for every tenant.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, unavailable) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ports: Vec<u16> = deployment.workers.iter().map(WorkerProcess::port).collect();
    let asking = {
        let (stop, answered, unavailable, before) =
            (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&unavailable), before.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for port in &ports {
                    for (tenant, expected) in &before {
                        // A worker on its way out stops answering: that is not an answer.
                        let Some((status, head, body)) = http_get_with_head(*port, &path(tenant)) else { continue };
                        match status {
                            200 => {
                                assert_eq!(&body, expected, "{tenant} on port {port} during a rebalance");
                                answered.fetch_add(1, Ordering::AcqRel);
                            }
                            503 => {
                                assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
                                unavailable.fetch_add(1, Ordering::AcqRel);
                            }
                            other => panic!("{tenant} on port {port}: {other} {body}"),
                        }
                    }
                }
            }
        })
    };
    deployment.start_worker("w3");
    wait_until("the third worker to own partitions", DEADLINE, || {
        deployment.workers.iter().all(|w| owned(w).is_some_and(|p| !p.is_empty()))
    });
    let status = deployment.workers[0].terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", deployment.workers[0].log_tail());
    wait_until("the two remaining workers to own every partition", DEADLINE, || {
        let (Some(a), Some(b)) = (owned(&deployment.workers[1]), owned(&deployment.workers[2])) else { return false };
        a.len() + b.len() == PARTITIONS as usize
    });
    // Every answer after the hand-over is the same committed position (from a new owner's
    // restored state now), whichever worker is asked. A worker that does not own a tenant
    // answers once it has read the new owner's announcement, which may come later than the
    // owner's own answer: wait for both remaining workers.
    wait_until("every tenant to be answered again by every remaining worker", DEADLINE, || {
        deployment.workers[1..].iter().all(|worker| {
            deployment.tenants().iter().all(|t| worker.get(&path(t)).is_some_and(|(status, _)| status == 200))
        })
    });
    stop.store(true, Ordering::Release);
    asking.join().expect("an answer during the rebalance was neither the one before nor a 503");
    for worker in &deployment.workers[1..] {
        assert_eq!(deployment.answers(worker), before, "{} after the rebalance", worker.name);
    }
    assert!(answered.load(Ordering::Acquire) > 0, "nothing was answered during the rebalance");
    eprintln!(
        "during the rebalance: {} answers, {} times 503",
        answered.load(Ordering::Acquire),
        unavailable.load(Ordering::Acquire)
    );
}

/// Per tenant: the ledger's debits, from the debit trail (`KIND_DEBIT` movements, by id;
/// a movement's amount is signed, a debit takes money away).
fn ledger_debits(config: &WorkerConfig) -> BTreeMap<String, Decimal> {
    sum_by_tenant(config, TopicKind::LedgerMovements, |movement: v1::LedgerMovement| {
        (movement.kind == v1::ledger_movement::Kind::Debit as i32)
            .then(|| (movement.movement_id, movement.tenant_id, -d(&movement.amount)))
    })
}

/// Per tenant, the sum of the amounts that `pick` takes from a topic's records: each as
/// (record id, tenant, amount), or `None` to skip it; a record id counted once.
fn sum_by_tenant<M: Message + Default>(
    config: &WorkerConfig,
    kind: TopicKind,
    pick: impl Fn(M) -> Option<(String, String, Decimal)>,
) -> BTreeMap<String, Decimal> {
    let reader = TopicReader::from_beginning(config, "test-sum", &[&config.topics[kind]]).unwrap();
    let mut picked = BTreeMap::new();
    reader
        .read_to_end(DEADLINE, |record| {
            let message = M::decode(record.payload.unwrap_or_default().as_slice()).unwrap();
            if let Some((id, tenant, amount)) = pick(message) {
                picked.insert(id, (tenant, amount));
            }
        })
        .unwrap();
    let mut sums = BTreeMap::new();
    for (tenant, amount) in picked.into_values() {
        *sums.entry(tenant).or_insert(Decimal::ZERO) += amount;
    }
    sums
}

/// Runs `tollgate report` with `args`; its output (stdout, or the `-o` file).
fn report(config: &WorkerConfig, args: &[&str]) -> String {
    let output = run_report(config, args);
    assert!(output.status.success(), "tollgate report {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `tollgate report` with `args`, whatever its exit code.
fn run_report(config: &WorkerConfig, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    // The command refuses TOLLGATE_* variables it does not know (the test's own included).
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
        command.env_remove(key);
    }
    command
        .args(["report", "--quiet", "--bootstrap-servers", &config.bootstrap_servers, "--group-id", &config.group_id])
        .args(args)
        .output()
        .unwrap()
}

/// On a real broker under exactly-once, with two workers: the usage report read
/// `read_committed` has one row per leg (the duplicate deliveries dropped), and per tenant a
/// total equal to the sum of its rows, to the ledger's debits (the debit trail), to the
/// changelog's usage charges and to what the legs cost. The API agrees on both workers.
#[test]
fn the_usage_report_reconciles_with_the_ledgers_debits_to_the_cent() {
    let broker = tollgate_e2e::broker::Broker::start();
    let config = WorkerConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        group_id: format!("tollgate-api-broker-{}", std::process::id()),
        ..WorkerConfig::default()
    };
    tollgate_e2e::broker::create_topics(&config, &topics::specs(&config, PARTITIONS)).unwrap();
    let shape = Shape { tenants: 12, hot: 2, legs: 400, duplicate_per_mille: 30, concurrency: 10, ..Shape::default() };
    let env = [("LEDGER_MOVEMENTS", "true"), ("COMMIT_INTERVAL_MS", "20")];
    let mut deployment = Deployment::new(config.clone(), "exactly_once", &env, &shape);
    deployment.rate_with_two_workers();
    let answers = deployment.answers(&deployment.workers[0]);
    assert_eq!(deployment.answers(&deployment.workers[1]), answers, "the two workers answer differently");
    check_against_the_topics(&deployment, &answers);

    let csv_path = std::env::temp_dir().join(format!("tollgate-report-{}.csv", std::process::id()));
    report(&config, &["-o", csv_path.to_str().unwrap()]);
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (record, tenant, charge, usage_id, legs) =
        (column("record"), column("tenant_id"), column("charge"), column("usage_id"), column("legs"));
    let mut rows: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    let mut totals: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for line in reader.records() {
        let line = line.unwrap();
        let amount = d(&line[charge]);
        match &line[record] {
            "usage" => {
                assert!(ids.insert(line[usage_id].to_owned()), "usage {} twice in the report", &line[usage_id]);
                let row = rows.entry(line[tenant].to_owned()).or_default();
                *row = (row.0 + amount, row.1 + 1);
            }
            "total" => {
                let count: u64 = line[legs].parse().unwrap();
                assert!(totals.insert(line[tenant].to_owned(), (amount, count)).is_none(), "two totals");
            }
            other => panic!("unexpected record kind {other}"),
        }
    }
    let _ = std::fs::remove_file(&csv_path);
    let debits = ledger_debits(&config);
    let states = tollgate_worker::client::read_states(&config, DEADLINE).unwrap();
    for tenant in deployment.tenants() {
        let expected = Decimal::new(deployment.traffic.expected_cents[&tenant] as i64, 2);
        let legs = deployment.traffic.expected_legs[&tenant];
        assert_eq!(rows[&tenant], (expected, legs), "{tenant}: the report's rows");
        assert_eq!(totals[&tenant], (expected, legs), "{tenant}: the report's total");
        assert_eq!(debits.get(&tenant).copied().unwrap_or_default(), expected, "{tenant}: the ledger's debits");
        assert_eq!(states[&tenant].totals.usage_charges.to_string().parse::<Decimal>().unwrap(), expected, "{tenant}");
    }

    // Two tenants, as JSON lines, over a time range that holds every leg; and one that holds
    // none.
    let range = ["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-03T00:00:00Z"];
    let chosen = ["--tenant", "t0000", "--tenant", "t0005", "--format", "jsonl"];
    let lines = report(&config, &[&range[..], &chosen[..]].concat());
    let mut per_tenant: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    for line in lines.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        if row["record"] == "usage" {
            let entry = per_tenant.entry(row["tenant_id"].as_str().unwrap().to_owned()).or_default();
            *entry = (entry.0 + d(row["charge"].as_str().unwrap()), entry.1 + 1);
        } else {
            let tenant = row["tenant_id"].as_str().unwrap();
            assert_eq!(row["charge"].as_str().map(d), Some(totals[tenant].0), "{line}");
        }
    }
    let expected: BTreeMap<String, (Decimal, u64)> =
        ["t0000", "t0005"].into_iter().map(|t| (t.to_owned(), totals[t])).collect();
    assert_eq!(per_tenant, expected);
    let none = report(&config, &["--to", "2026-11-01T00:00:00Z", "--format", "jsonl"]);
    assert_eq!(none, "");
    // Empty for a tenant quiet in the range, and for a misspelt one: stderr tells them apart.
    let quiet = ["--to", "2026-11-01T00:00:00Z", "--tenant", "t0000", "--tenant", "t000O"];
    let output = run_report(&config, &quiet);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("tollgate report: t0000: no legs in the range\n"), "{stderr}");
    assert!(
        stderr.contains("tollgate report: t000O: no rated usage at all in the topic (is the tenant id right?)\n"),
        "{stderr}"
    );

    // Two different records under one usage id (an at-least-once batch rated again after its
    // rate card was republished: the later one is the attempt that committed) and a record
    // whose charge is not an amount: the last of the two is kept and counted, the bad one
    // left out of the rows and the total, and the report exits 2, naming both.
    let record = |usage_id: &str, charge: &str| {
        v1::RatedUsage {
            usage_id: usage_id.into(),
            tenant_id: "t0000".into(),
            currency: "USD".into(),
            charge: charge.into(),
            started_at: Some(tollgate_proto::Timestamp { seconds: 1_793_581_200, nanos: 0 }), // 2026-11-02T01:00:00Z
            ..Default::default()
        }
        .encode_to_vec()
    };
    let publisher = Publisher::new(&config).unwrap();
    let usage_topic = &config.topics[TopicKind::RatedUsage];
    for (id, charge) in [("t0000/again", "1.00"), ("t0000/again", "2.00"), ("t0000/typo", "1,50")] {
        publisher.send_raw(usage_topic, Some(b"t0000"), Some(&record(id, charge))).unwrap();
    }
    publisher.flush().unwrap();
    let output = run_report(&config, &[&range[..], &["--tenant", "t0000", "--format", "jsonl"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("usage id t0000/again has two different records; the last is kept"), "{stderr}");
    assert!(stderr.contains("usage t0000/typo skipped: charge \"1,50\" is not an amount"), "{stderr}");
    let rows: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let again: Vec<&Value> = rows.iter().filter(|r| r["usage_id"] == "t0000/again").collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["charge"], "2.00");
    assert!(rows.iter().all(|r| r["usage_id"] != "t0000/typo"));
    let total = rows.iter().find(|r| r["record"] == "total").unwrap();
    assert_eq!(
        (d(total["charge"].as_str().unwrap()), total["legs"].as_u64().unwrap()),
        (totals["t0000"].0 + d("2.00"), totals["t0000"].1 + 1)
    );
}

/// On a real broker: records deleted from the rated-usage topic (its retention) are legs a
/// report cannot have. A report whose range reaches back before the first record left of a
/// partition says so and exits 2; one from after it is complete and exits 0.
#[test]
fn a_report_reaching_back_past_deleted_records_says_so_and_exits_2() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let broker = tollgate_e2e::broker::Broker::start();
    let config = WorkerConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        group_id: format!("tollgate-api-trimmed-{}", std::process::id()),
        ..WorkerConfig::default()
    };
    let usage_topic = config.topics[TopicKind::RatedUsage].clone();
    let specs: Vec<_> = topics::specs(&config, 1).into_iter().filter(|s| s.name == usage_topic).collect();
    tollgate_e2e::broker::create_topics(&config, &specs).unwrap();
    // One leg a day, 1, 2 and 3 November, each a minute long.
    let publisher = Publisher::new(&config).unwrap();
    for day in 0..3i64 {
        let start = 1_793_491_200 + day * 86_400; // 2026-11-01T00:00:00Z + days
        let usage = v1::RatedUsage {
            usage_id: format!("t0000/leg-{day}"),
            tenant_id: "t0000".into(),
            currency: "USD".into(),
            charge: "0.10".into(),
            started_at: Some(tollgate_proto::Timestamp { seconds: start, nanos: 0 }),
            ended_at: Some(tollgate_proto::Timestamp { seconds: start + 60, nanos: 0 }),
            ..Default::default()
        };
        publisher.send_raw(&usage_topic, Some(b"t0000"), Some(&usage.encode_to_vec())).unwrap();
    }
    publisher.flush().unwrap();
    // The first day's record is deleted, as retention would.
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create().unwrap();
    let mut before = rdkafka::TopicPartitionList::new();
    before.add_partition_offset(&usage_topic, 0, rdkafka::Offset::Offset(1)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deleted = runtime.block_on(admin.delete_records(&before, &AdminOptions::new())).unwrap();
    assert_eq!(deleted.elements()[0].offset(), rdkafka::Offset::Offset(1));

    let output = run_report(&config, &["--format", "jsonl"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let message = format!(
        "partition 0 of {usage_topic} starts at offset 1: the records before it were deleted (retention), so legs \
         rated before 2026-11-02T00:01:00Z may be missing"
    );
    assert!(stderr.contains(&message), "{stderr}");
    let rows = String::from_utf8(output.stdout).unwrap();
    assert_eq!(rows.lines().filter(|l| l.contains(r#""record":"usage""#)).count(), 2, "{rows}");
    // From after the first record left: nothing of the range was deleted.
    let output = run_report(&config, &["--from", "2026-11-02T00:01:01Z", "--format", "jsonl"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("were deleted"), "{stderr}");
}
