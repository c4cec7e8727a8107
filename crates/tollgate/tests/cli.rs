//! The operator commands against a Kafka: librdkafka's mock cluster, started in this test
//! process and reached by the `tollgate` binary over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tollgate_worker::{WorkerConfig, topics};

fn tollgate(bootstrap: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("--bootstrap-servers")
        .arg(bootstrap)
        .env("TOLLGATE_KAFKA_TIMEOUT_MS", "5000")
        .output()
        .expect("failed to run tollgate")
}

/// A mock cluster with every tollgate topic, of `partitions` partitions each.
fn cluster_with_topics(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for spec in topics::specs(&WorkerConfig::default(), partitions) {
        cluster.create_topic(&spec.name, spec.partitions, 1).unwrap();
    }
    cluster
}

#[test]
fn produce_then_tail_round_trips_records_keyed_by_tenant() {
    let cluster = cluster_with_topics(3);
    let bootstrap = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    // Lines a producer must refuse one by one, going on with the next: not JSON, not UTF-8
    // (a legacy controller's Latin-1), longer than a record may be (read without holding it).
    let mut lines: Vec<u8> = concat!(
        r#"{"creditCommand":{"commandId":"c1","tenantId":"contoso","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"l1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#,
        "\n",
        "this is not json\n",
    )
    .into();
    lines.extend_from_slice(b"{\"callLeg\":{\"conferenceId\":\"caf\xe9\"}}\n");
    lines.extend(std::iter::repeat_n(b'x', 2 << 20));
    lines.push(b'\n');
    lines.extend_from_slice(
        concat!(
            r#"{"callLeg":{"eventId":"e1","tenantId":"fabrikam","legId":"leg-1","organizerId":"frank","occurredAt":"2026-11-02T09:00:00Z","interim":{"elapsedSeconds":60}}}"#,
            "\n"
        )
        .as_bytes(),
    );
    std::fs::write(&input, lines).unwrap();
    let out = tollgate(&bootstrap, &["produce", "--input", input.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in.jsonl:2: "), "{stderr}");
    assert!(stderr.contains("in.jsonl:3: not UTF-8 text"), "{stderr}");
    assert!(
        stderr.contains("in.jsonl:4: a line of 2097152 bytes, more than the 1048576 a record may have"),
        "{stderr}"
    );
    assert!(stderr.contains("2 records sent, 3 lines refused"), "{stderr}");

    let out = tollgate(&bootstrap, &["tail", "tollgate.call-legs.v1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["key"], "fabrikam");
    assert_eq!(lines[0]["value"]["interim"]["elapsedSeconds"], 60);
    let partition = lines[0]["partition"].as_i64().unwrap() as i32;
    assert_eq!(partition, tollgate_worker::partitioner::partition_for(b"fabrikam", 3), "murmur2 partitioning");

    let out = tollgate(&bootstrap, &["tail", "tollgate.credit-commands.v1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#""key":"contoso""#) && text.contains(r#""amount":"10.00""#), "{text}");

    let out = tollgate(&bootstrap, &["tail", "no.such.topic"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no.such.topic is not a tollgate topic"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `produce` before the topics were created names the missing one and sends nothing (no
/// summary of records sent); a broker that creates topics on first use would have made it
/// with one partition.
#[test]
fn produce_refuses_an_input_topic_that_does_not_exist() {
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/events.jsonl");
    let out = tollgate(&bootstrap, &["produce", "--input", events]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("topic tollgate.call-legs.v1 does not exist (create it with `tollgate admin create-topics`)"),
        "{stderr}"
    );
    assert!(!stderr.contains("tollgate produce: "), "a summary of records sent: {stderr}");
}

/// SIGTERM while `produce` reads a pipe (a bridge from a call controller being restarted):
/// what it sent is flushed before it exits, though the broker answers a second late, and it
/// says after which line it stopped, with the signal's exit code.
#[test]
fn produce_flushes_what_it_sent_when_terminated() {
    let cluster = cluster_with_topics(1);
    let mut produce = PipedProduce::start(&cluster);
    // Line 1's refusal says it is past connecting; from then on the broker answers late.
    produce.write("not json\n");
    produce.until("-:1: ");
    cluster.broker_round_trip_time(1, Duration::from_secs(1)).unwrap();
    produce.write(&format!("{FUND}\nnot json either\n"));
    // Line 3's refusal says line 2's record was sent (and is in flight, a second from its
    // acknowledgement).
    produce.until("-:3: ");
    let (status, said) = produce.terminate();
    assert_eq!(status.code(), Some(143), "{said}");
    assert!(
        said.contains("1 records sent, 2 lines refused, every record acknowledged; stopped by SIGTERM after line 3"),
        "{said}"
    );

    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let out = tollgate(&cluster.bootstrap_servers(), &["tail", "tollgate.credit-commands.v1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(r#""commandId":"c1""#), "{text}");
}

/// SIGTERM while lines wait in the pipe: every line already read from it is still sent (a
/// pipe gives nothing back), none is read after the signal, and the summary names the last.
#[test]
fn produce_sends_every_line_it_read_when_terminated() {
    let cluster = cluster_with_topics(1);
    let mut produce = PipedProduce::start(&cluster);
    produce.write("not json\n");
    produce.until("-:1: ");
    // Many lines at once, and the signal right behind them: however far the reading got,
    // the records sent are those of the lines read.
    let lines: String = (1..=2_000).map(|n| format!("{}\n", FUND.replace("c1", &format!("c{n}")))).collect();
    produce.write(&lines);
    let (status, said) = produce.terminate();
    assert_eq!(status.code(), Some(143), "{said}");
    let summary =
        said.lines().find(|l| l.contains("stopped by SIGTERM after line")).unwrap_or_else(|| panic!("{said}"));
    let sent: usize =
        summary.split("tollgate produce: ").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    let last: usize = summary.split("after line ").nth(1).and_then(|s| s.split(':').next()).unwrap().parse().unwrap();
    assert_eq!(last, sent + 1, "{summary}");

    let out = tollgate(&cluster.bootstrap_servers(), &["tail", "tollgate.credit-commands.v1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]["commandId"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: Vec<String> = (1..=sent).map(|n| format!("c{n}")).collect();
    assert_eq!(ids, expected, "the lines read, each sent once, in order");
}

/// A record Kafka refuses is said while `produce` still reads its pipe, though nothing more
/// comes (a long-running bridge may never reach its end); the end then counts it.
#[test]
fn produce_says_a_record_kafka_refused_while_its_pipe_is_quiet() {
    let cluster = cluster_with_topics(1);
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let mut produce = PipedProduce::start(&cluster);
    produce.write(&format!("{FUND}\n"));
    produce.until("Kafka did not take a record (MessageSizeTooLarge); going on, the run will end in failure");
    let (status, said) = produce.close();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("1 records sent, 0 lines refused: 1 of them not acknowledged by Kafka, the first with MessageSizeTooLarge (the input was read to line 1)"), "{said}");
}

/// A funding of contoso, as one JSON line.
const FUND: &str = r#"{"creditCommand":{"commandId":"c1","tenantId":"contoso","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"l1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#;

/// `tollgate produce --input -` on a cluster, written to through a pipe, its standard error
/// read as it comes; killed if it still runs after a minute ([`Watchdog`]).
struct PipedProduce {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: BufReader<ChildStderr>,
    /// Its standard error so far.
    said: String,
    _watchdog: Watchdog,
}

impl PipedProduce {
    fn start(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> PipedProduce {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["produce", "--input", "-", "--bootstrap-servers", &cluster.bootstrap_servers()])
            .env("TOLLGATE_KAFKA_TIMEOUT_MS", "5000")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to run tollgate");
        let _watchdog = Watchdog::new(child.id(), Duration::from_secs(60));
        let stdin = child.stdin.take();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        PipedProduce { child, stdin, stderr, said: String::new(), _watchdog }
    }

    /// Writes `text` into the pipe.
    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Reads its standard error until it has said `text`.
    fn until(&mut self, text: &str) {
        while !self.said.contains(text) {
            assert_ne!(
                self.stderr.read_line(&mut self.said).unwrap(),
                0,
                "produce ended before saying {text:?}: {}",
                self.said
            );
        }
    }

    /// SIGTERM, the pipe left open: how it exited and all it said.
    fn terminate(self) -> (ExitStatus, String) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.end()
    }

    /// The pipe closed: how it exited and all it said.
    fn close(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        self.end()
    }

    fn end(mut self) -> (ExitStatus, String) {
        self.stderr.read_to_string(&mut self.said).unwrap();
        let status = self.child.wait().unwrap();
        (status, self.said)
    }
}

/// Kills a process still running after a time limit, so that a `produce` that hangs fails its
/// test (its pipes close) instead of hanging the suite. Dropped, it lets the process be.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(pid: u32, limit: Duration) -> Watchdog {
        let (done, finished) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("process {pid} still runs after {limit:?}: killed");
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        });
        Watchdog(Some(done))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

/// `admin create-topics` without `--replication` asks for the broker's own
/// `default.replication.factor`, on a real broker (the mock cluster has no admin API): a lone
/// broker that wants two replicas refuses the topics (a fixed factor of 1, the old default,
/// would have made them), and `--replication 1` makes them there.
#[test]
fn create_topics_takes_the_broker_default_replication_unless_told() {
    let broker = tollgate_e2e::broker::Broker::start_with(&[("default.replication.factor", "2")]);
    let bootstrap = broker.bootstrap_servers();
    let out = tollgate(&bootstrap, &["admin", "create-topics", "--partitions", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot create topic tollgate.") && stderr.contains("InvalidReplicationFactor"),
        "{stderr}"
    );
    let out = tollgate(&bootstrap, &["admin", "create-topics", "--partitions", "1", "--replication", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with(": created")).count(), 12);
}

#[test]
fn says_clearly_when_kafka_cannot_be_reached() {
    // Nothing listens on port 1 of the loopback interface.
    let out = tollgate("127.0.0.1:1", &["tail", "tollgate.rated-usage.v1"]);
    assert_eq!(out.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach Kafka at 127.0.0.1:1: no broker answered within 5 s"), "{stderr}");
}

/// A mistake in what the command line names (a file, an amount, a count, a directory) is
/// said as itself, before Kafka is asked: not as "cannot reach Kafka" after a wait for it.
#[test]
fn says_a_local_mistake_before_asking_kafka() {
    let cases: [(&[&str], &str); 6] = [
        (&["produce", "--input", "/nonexistent/legs.jsonl"], "failed to open /nonexistent/legs.jsonl"),
        (&["admin", "publish-reference", "--file", "/nonexistent/reference.json"], "failed to read"),
        (
            &["admin", "fund", "--tenant", "acme", "--amount", "abc", "--currency", "USD"],
            "invalid credit command: fund.amount: invalid amount \"abc\"\n",
        ),
        (
            &["admin", "fund", "--tenant", "acme", "--amount", "5", "--currency", "USD", "--purchased-at", "yesterday"],
            "--purchased-at",
        ),
        (&["admin", "create-topics", "--partitions", "0"], "partitions and replication must be at least 1"),
        (&["report", "-o", "/nonexistent/dir/november.csv"], "there is no directory /nonexistent/dir"),
    ];
    // Nothing listens on port 1 of the loopback interface.
    for (args, said) in cases {
        let out = tollgate("127.0.0.1:1", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(said) && !stderr.contains("cannot reach Kafka"), "{args:?}: {stderr}");
    }
}

/// A report that fails (here: no rated-usage topic) leaves the file it was to write as it
/// was: an earlier report at the same path is not replaced by an empty one.
#[test]
fn a_failed_report_leaves_the_file_it_was_to_write_as_it_was() {
    let cluster = MockCluster::new(1).unwrap();
    let path = std::env::temp_dir().join(format!("tollgate-cli-report-{}.csv", std::process::id()));
    std::fs::write(&path, "last month's report\n").unwrap();
    let out = tollgate(&cluster.bootstrap_servers(), &["report", "--quiet", "-o", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "last month's report\n");
    std::fs::remove_file(&path).unwrap();
}

/// A value the command line cannot take is a usage mistake, exit code 2, as one the parser
/// finds: nothing is started, read or written.
#[test]
fn a_value_the_command_line_cannot_take_exits_2() {
    let out = tollgate("127.0.0.1:1", &["report", "--from", "2026-12-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--to must be after --from") && !stderr.contains("cannot reach Kafka"), "{stderr}");
    for flag in ["--workers", "--partitions"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate")).args(["demo", flag, "0"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(&format!("invalid value '0' for '{flag}")), "{flag}: {stderr}");
    }
}

/// A worker whose broker does not answer waits for it, but says so in words once the Kafka
/// timeout has passed (not only as a retry's transport error later), and a SIGTERM while it
/// waits is a clean stop.
#[test]
fn a_worker_says_in_words_that_kafka_cannot_be_reached_and_stops_cleanly_meanwhile() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "--bootstrap-servers", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:0"])
        .env("TOLLGATE_KAFKA_TIMEOUT_MS", "1000")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let said = "cannot reach Kafka at 127.0.0.1:1: no broker answered within 1 s";
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !log.contains(said) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => {
                let _ = child.kill();
                panic!("never said {said:?}:\n{log}")
            }
        }
    }
    assert!(log.contains("retrying until it answers"), "{log}");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{log}");
    reader.join().unwrap();
}

/// A librdkafka setting that does not exist is a configuration error: every command that
/// talks to Kafka exits non-zero at once naming it, instead of retrying as if the broker were
/// away (nothing listens on port 1, so a retry would show as "cannot reach Kafka").
#[test]
fn every_kafka_command_refuses_an_unknown_librdkafka_setting_at_once() {
    let commands: [&[&str]; 7] = [
        &["run", "--metrics-listen", "127.0.0.1:0"],
        &["tail", "tollgate.rated-usage.v1"],
        &["produce", "--input", "examples/events.jsonl"],
        &["admin", "create-topics"],
        &["admin", "publish-reference", "--file", "examples/reference.json"],
        &["admin", "fund", "--tenant", "contoso", "--amount", "10.00", "--currency", "USD"],
        &["verify"],
    ];
    for args in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(args)
            .args(["--bootstrap-servers", "127.0.0.1:1", "-X", "no.such.prop=1"])
            .env("TOLLGATE_KAFKA_TIMEOUT_MS", "30000")
            .output()
            .expect("failed to run tollgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded:\n{stderr}");
        assert!(
            stderr.contains(r#"No such configuration property: "no.such.prop""#),
            "{args:?} did not name the setting:\n{stderr}"
        );
    }
}

#[test]
fn verify_exits_0_when_consistent_1_on_a_violation_2_on_bad_usage_10_when_kafka_is_unreachable() {
    let cluster = cluster_with_topics(2);
    let bootstrap = cluster.bootstrap_servers();
    // Nothing in the topics: nothing to violate.
    let out = tollgate(&bootstrap, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("OK: no leg lost or charged twice, every balance exact"), "{stdout}");

    // A fund command no worker ever processed.
    let dir = std::env::temp_dir().join(format!("tollgate-cli-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("fund.jsonl");
    std::fs::write(
        &input,
        r#"{"creditCommand":{"commandId":"c1","tenantId":"contoso","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"l1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#,
    )
    .unwrap();
    let out = tollgate(&bootstrap, &["produce", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Not rated yet: counted and left out of the check, a violation only with --all-rated.
    let out = tollgate(&bootstrap, &["verify", "--json", "--expect-no-dead-letters"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&report["ok"], &report["tenants"][0]["unrated"]), (&serde_json::json!(true), &serde_json::json!(1)));
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("1 record of tollgate.credit-commands.v1["), "{warnings}");
    assert!(warnings.contains("from offset 0 on are not rated yet"), "{warnings}");
    let out = tollgate(&bootstrap, &["verify", "--json", "--all-rated"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let violations = report["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{report}");
    assert!(
        violations[0].as_str().unwrap().starts_with("contoso: inputs not rated yet (1): tollgate.credit-commands.v1:"),
        "{report}"
    );

    let out = tollgate(&bootstrap, &["verify", "--expect-no-dead-letters", "--expect-dead-letter", "e1"]);
    assert_eq!(out.status.code(), Some(2));

    // Kafka unreachable: the exit code every command gives for it.
    let out = tollgate("127.0.0.1:1", &["verify"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Kafka at 127.0.0.1:1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--help` shows no configured value: a password set in the environment stays out of it.
#[test]
fn help_never_shows_a_configured_secret() {
    for args in [&["--help"][..], &["run", "--help"], &["admin", "fund", "--help"], &["verify", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env("TOLLGATE_LIBRDKAFKA_SASL_PASSWORD", "hunter2-in-the-environment")
            .output()
            .expect("failed to run tollgate");
        assert!(out.status.success(), "{args:?}");
        let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(shown.contains("Usage: tollgate"), "{shown}");
        assert!(!shown.contains("hunter2"), "{args:?} shows the password:\n{shown}");
    }
}

/// `admin fund` checks a funding against its tenant in the reference data and sends nothing a
/// worker would dead-letter; with `--lot-id` and `--purchased-at`, a retry is the same
/// command, byte for byte.
#[test]
fn admin_fund_sends_nothing_a_worker_would_refuse() {
    let cluster = cluster_with_topics(2);
    let bootstrap = cluster.bootstrap_servers();
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/reference.json");
    let out = tollgate(&bootstrap, &["admin", "publish-reference", "--file", reference]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An hour ago, the same for every command of the test: a retry is the same command.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at = tollgate_proto::Timestamp { seconds: now - 3600, nanos: 0 }.to_rfc3339().unwrap();
    let fund_at = |tenant: &str, amount: &str, currency: &str, at: &str| {
        let args = ["admin", "fund", "--tenant", tenant, "--amount", amount, "--currency", currency];
        let more = ["--lot-id", "pay-1", "--purchased-at", at];
        tollgate(&bootstrap, &[&args[..], &more[..]].concat())
    };
    let fund = |tenant: &str, amount: &str, currency: &str| fund_at(tenant, amount, currency, &at);
    let refused = [
        (
            fund("nosuch", "10.00", "USD"),
            "tenant nosuch is not in the reference data (tollgate.tenants.v1): a worker would refuse the funding (unknown_tenant)",
        ),
        (
            fund("woodgrove", "10.00", "USD"),
            "tenant woodgrove does not use credits: a worker would refuse the funding (credits_disabled)",
        ),
        (
            fund("contoso", "10.00", "EUR"),
            "tenant contoso is billed in USD, not EUR: a worker would refuse the funding (currency_mismatch)",
        ),
        (
            fund("contoso", "1.005", "USD"),
            "the amount 1.005 must be > 0 in whole USD minor units: a worker would refuse the funding (invalid)",
        ),
        (
            fund_at("contoso", "10.00", "USD", "2026-01-02T08:00:00Z"),
            "the funding's time 2026-01-02T08:00:00Z is its event time, and more than 47 h back",
        ),
    ];
    for (out, message) in refused {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "does not say {message:?}:\n{stderr}");
    }
    for _ in 0..2 {
        let out = fund("contoso", "10.00", "USD");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "funding sent for contoso: lot pay-1 of 10.00 USD dated {at}, acknowledged by Kafka (a worker applies a \
                 command id once: running this again with --lot-id pay-1 --purchased-at {at} changes nothing; with \
                 another amount it is refused as duplicate_conflict)\n"
            )
        );
    }
    // A tenant without credits cannot be funded: an adjustment settles its balance.
    let adjust = |amount: &str| {
        let args = ["admin", "adjust", "--tenant", "woodgrove", "--amount", amount, "--currency", "USD"];
        let more = ["--reason", "debt written off", "--adjustment-id", "adj-1", "--at", &at];
        tollgate(&bootstrap, &[&args[..], &more[..]].concat())
    };
    let out = adjust("0.00");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let message =
        "the amount 0 must be non-zero in whole USD minor units: a worker would refuse the adjustment (invalid)";
    assert!(stderr.contains(message), "{stderr}");
    let out = adjust("0.42");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "adjustment sent for woodgrove: 0.42 USD, adjustment adj-1 dated {at}, acknowledged by Kafka (a worker \
             applies a command id once: running this again with --adjustment-id adj-1 --at {at} changes nothing; with \
             another amount it is refused as duplicate_conflict)\n"
        )
    );

    // Refused by the broker once sent (what a lost acknowledgement looks like to the sender):
    // the message says how to try again without funding twice.
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let out = fund("contoso", "10.00", "USD");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let message = format!(
        "the credit command was not acknowledged by Kafka, and may have been written all the same: to try again, run \
         the same command with --lot-id pay-1 --purchased-at {at} (a copy of a command changes nothing)"
    );
    assert!(stderr.contains(&message), "{stderr}");

    // (key, value) of each record, in the order `tail` printed them.
    let tail = |args: &[&str]| -> Vec<(String, serde_json::Value)> {
        let out = tollgate(&bootstrap, &[&["tail", "tollgate.credit-commands.v1"][..], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = String::from_utf8(out.stdout).unwrap();
        let record = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
        lines
            .lines()
            .map(|line| (record(line)["key"].as_str().unwrap().to_owned(), record(line)["value"].clone()))
            .collect()
    };
    let sent = tail(&[]);
    assert_eq!(sent.len(), 3, "{sent:?}");
    let funds: Vec<&serde_json::Value> = sent.iter().filter(|(key, _)| key == "contoso").map(|(_, v)| v).collect();
    assert_eq!(funds.len(), 2);
    assert_eq!(funds[0], funds[1]);
    let adjustment = &sent.iter().find(|(key, _)| key == "woodgrove").unwrap().1;
    assert_eq!(adjustment["adjustment"]["amount"], "0.42", "{sent:?}");
    // `tail -n` gives the last records, oldest first, as tail(1) does.
    let last = tail(&["-n", "2"]);
    assert_eq!(last, [("contoso".to_owned(), funds[1].clone()), ("woodgrove".to_owned(), adjustment.clone())]);
}

/// `tollgate balance` against an address where nothing answers says so, with the exit code
/// of an unreachable Kafka, not the one of an unknown tenant.
#[test]
fn balance_says_when_no_worker_answers() {
    // Nothing listens on port 1 of the loopback interface.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["balance", "contoso", "--api", "http://127.0.0.1:1"])
        .output()
        .expect("failed to run tollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("cannot reach the tenant API at 127.0.0.1:1"), "{stderr}");

    // A listener that takes the connection (the kernel does, from its backlog) and never
    // answers, as a paused worker's: no answer after the timeout, not a wait for ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", silent.local_addr().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["balance", "contoso", "--api", &api])
        .output()
        .expect("failed to run tollgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("no answer within 10 s"), "{stderr}");
}

/// A rate card too large for a record (it holds every version) is refused before anything is
/// published: sent after the tenants, it would leave them naming a card that never arrives,
/// their calls unpriced. What is published comes rate cards first, tenants last.
#[test]
fn publish_reference_refuses_a_record_too_large_and_sends_nothing() {
    let cluster = cluster_with_topics(2);
    let bootstrap = cluster.bootstrap_servers();
    let rows: Vec<serde_json::Value> = (0..60_000)
        .map(|n| serde_json::json!({"prefix": format!("1{n:05}"), "price": {"perMinute": "0.0123"}}))
        .collect();
    let reference = serde_json::json!({
        "tenants": [{"tenantId": "big", "currency": "USD", "creditsEnabled": true, "rateCardId": "card-big"}],
        "rateCards": [{"rateCardId": "card-big", "currency": "USD", "versions": [
            {"version": "v1", "effectiveFrom": "2026-01-01T00:00:00Z", "dialOut": rows}
        ]}]
    });
    let file = std::env::temp_dir().join(format!("tollgate-big-card-{}.json", std::process::id()));
    std::fs::write(&file, reference.to_string()).unwrap();
    let out = tollgate(&bootstrap, &["admin", "publish-reference", "--file", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rate card card-big: "), "{stderr}");
    assert!(stderr.contains("more than the 1000000 a record may have"), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    let tail = tollgate(&bootstrap, &["tail", "tollgate.tenants.v1"]);
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "", "a tenant was published");
}
