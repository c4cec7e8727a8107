//! What operators and orchestrators see of the `tollgate` binary: the probes on the metrics
//! port, logs a collector can parse, and a demo whose figures can be checked. Workers run as
//! processes against librdkafka's mock cluster, started in this test process.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tollgate_e2e::fleet::{WorkerProcess, WorkerSpec, http_get_with_head, wait_until};
use tollgate_proto::v1;
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{WorkerConfig, topics};

const REFERENCE: &str = include_str!("../../../examples/reference.json");
const DEADLINE: Duration = Duration::from_secs(60);

/// A mock cluster with tollgate's topics (2 partitions) and the sample reference data.
fn cluster() -> (MockCluster<'static, DefaultProducerContext>, WorkerConfig) {
    let cluster = MockCluster::new(1).unwrap();
    let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
    for spec in topics::specs(&config, 2) {
        cluster.create_topic(&spec.name, spec.partitions, 1).unwrap();
    }
    let reference: v1::ReferenceData = serde_json::from_str(REFERENCE).unwrap();
    let publisher = Publisher::new(&config).unwrap();
    for record in publish::reference(&config.topics, &reference) {
        publisher.send(&record).unwrap();
    }
    publisher.flush().unwrap();
    (cluster, config)
}

fn spec(config: &WorkerConfig, name: &str, env: &[(&str, &str)]) -> WorkerSpec {
    let log_dir = std::env::temp_dir().join(format!("tollgate-ops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    WorkerSpec {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_tollgate")),
        bootstrap: config.bootstrap_servers.clone(),
        group: format!("tollgate-ops-{name}"),
        guarantee: "at_least_once".into(),
        // Fast group joins on the mock cluster.
        librdkafka: vec![("session.timeout.ms".into(), "6000".into()), ("heartbeat.interval.ms".into(), "500".into())],
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        log_dir,
    }
}

/// `/ready` answers 503 while the worker's partitions are assigned but not restored, and 200
/// once they are; `/health` answers 200 all along.
#[test]
fn ready_only_once_every_assigned_partition_is_restored() {
    let (cluster, config) = cluster();
    // A partition's task fences the previous owner (InitProducerId) before it restores: while
    // that fails, the worker owns partitions it cannot rate yet.
    cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 100_000],
    );
    let mut worker = WorkerProcess::start(&spec(&config, "ready", &[("KAFKA_TIMEOUT_MS", "2000")]), "w1");
    wait_until("/health to answer", DEADLINE, || worker.get("/health").is_some());
    assert_eq!(worker.get("/health"), Some((200, "ok\n".into())));
    let restoring = (503, "w1 not ready: restoring partitions {0, 1} of {0, 1}\n".to_owned());
    wait_until("the partitions to be assigned", DEADLINE, || worker.get("/ready").as_ref() == Some(&restoring));
    // Still restoring after more failed attempts: the answer follows the restore, not the
    // clock.
    let attempts = |worker: &WorkerProcess| worker.log().matches("init_transactions failed, retrying").count();
    let seen = attempts(&worker);
    wait_until("the worker to try again", DEADLINE, || attempts(&worker) > seen + 1);
    assert_eq!(worker.get("/ready"), Some(restoring));
    assert_eq!(worker.get("/health"), Some((200, "ok\n".into())));
    // The tenant API has no committed state to show yet: 503, and when to ask again.
    let (status, head, body) = http_get_with_head(worker.port(), "/v1/tenants/contoso").unwrap();
    assert_eq!((status, body.as_str()), (503, "{\"error\":\"the tenant's partition is restoring\"}\n"));
    assert!(head.to_ascii_lowercase().contains("\r\nretry-after: 1"), "{head}");

    cluster.clear_request_errors(RDKafkaApiKey::InitProducerId);
    let ready = (200, "w1 ready: in the consumer group, partitions {0, 1} restored\n".to_owned());
    wait_until("the partitions to be restored", DEADLINE, || worker.get("/ready").as_ref() == Some(&ready));
    let (status, body) = worker.get("/v1/tenants/contoso").unwrap();
    assert_eq!(status, 200, "{body}");
    let metrics = worker.get("/metrics").unwrap().1;
    assert!(metrics.contains(&format!("tollgate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    assert!(metrics.contains("tollgate_assigned_partitions{worker=\"w1\"} 2"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("process_resident_memory_bytes ")), "{metrics}");
    assert!(worker.terminate(DEADLINE).success(), "{}", worker.log_tail());
}

/// With `log_format = "json"` every line the worker writes to stderr is one JSON object.
#[test]
fn json_logs_are_one_object_per_line() {
    let (_cluster, config) = cluster();
    let mut worker = WorkerProcess::start(&spec(&config, "json", &[("LOG_FORMAT", "json")]), "w1");
    wait_until("the worker to be ready", DEADLINE, || worker.ready());
    assert!(worker.terminate(DEADLINE).success(), "{}", worker.log_tail());
    let log = worker.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()), "{log}");
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in ["joined the consumer group", "partition state restored", "left the consumer group"] {
        assert!(messages.contains(&expected), "no {expected:?} in {messages:?}");
    }
    let restored = lines.iter().find(|l| l["message"] == "partition state restored").unwrap();
    assert!(restored["partition"].is_i64(), "fields are JSON values: {restored}");
}

/// The same seed and number of legs give the same summary, figure for figure.
#[test]
fn the_demo_summary_is_the_same_for_the_same_seed_and_legs() {
    let summary = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["demo", "--legs", "400", "--rate", "0", "--seed", "11", "--quiet", "--metrics-listen", ""])
            .env_remove("TOLLGATE_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // A clean run logs no error (a reader reaching the end of a partition is not one).
        assert!(!stderr.contains("ERROR"), "{stderr}");
        // Everything before is the embedded Kafka's address and the run's speed.
        let start = stdout.find("summary: ").unwrap_or_else(|| panic!("no summary in {stdout}"));
        stdout[start..].to_owned()
    };
    let first = summary();
    assert!(first.starts_with("summary: seed 11, 400 legs ("), "{first}");
    assert!(first.contains("tenant       currency         funded        charges        balance"), "{first}");
    // The demo's unpriced legs (two with this seed) are what the workers' counter counted.
    let unpriced = first.lines().find(|l| l.starts_with("unpriced legs (no rate matched): ")).unwrap();
    assert_eq!(
        unpriced,
        "unpriced legs (no rate matched): 2 (0 rated free, 2 blocked); tollgate_unpriced_legs_total 2 ok"
    );
    assert!(
        first.ends_with(
            "summary adds up: rated charges = ledger debits, unpriced legs = tollgate_unpriced_legs_total\n"
        ),
        "{first}"
    );
    assert_eq!(first, summary());
}
