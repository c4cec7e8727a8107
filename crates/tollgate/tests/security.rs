//! tollgate against a broker that requires SASL_SSL (SCRAM-SHA-512 over TLS) and ACLs, with
//! each component under a principal of its own and only the ACLs of `deploy/kafka-acls.sh`
//! (harness: `tests/src/security.rs`). One broker is shared by the tests of this binary.
//!
//! - the whole pipeline (admin, produce, `tollgate run` in both guarantees, tail) with least
//!   privilege, the worker's logs free of every password even with librdkafka's debug output;
//! - the producer's principal cannot write the changelog or the rated usage;
//! - every command names the cause, with its exit code, when the password
//!   is wrong, the certificate untrusted, the host name not the certificate's, the broker
//!   unreachable, or an ACL missing (the reference topics' included).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tollgate_e2e::fleet::{GroupProgress, free_port, wait_until};
use tollgate_e2e::security::{self, ADMIN, BILLING, PRODUCER, User, WORKER};
use tollgate_worker::publish::Publisher;
use tollgate_worker::{Error, WorkerConfig};

const PARTITIONS: i32 = 2;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `tollgate ARGS` as `user`, its settings in `TOLLGATE_*` variables (the password too).
fn command(bootstrap: &str, user: &User, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.current_dir(repo()).args(args).args(["--bootstrap-servers", bootstrap]);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
        command.env_remove(key);
    }
    command.env("TOLLGATE_KAFKA_TIMEOUT_MS", "10000");
    for (key, value) in user.env() {
        command.env(format!("TOLLGATE_{key}"), value);
    }
    command
}

fn run(bootstrap: &str, user: &User, args: &[&str]) -> Output {
    command(bootstrap, user, args).output().expect("failed to run tollgate")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-security-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A `tollgate run` worker of `user`, logging at debug level, librdkafka's debug output
/// included, to `log`.
fn start_worker(bootstrap: &str, user: &User, guarantee: &str, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    command(bootstrap, user, &["run", "--processing-guarantee", guarantee])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port().port())])
        .args(["-X", "debug=security,broker,conf"])
        .env("TOLLGATE_LOG", "info,librdkafka=debug")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

fn terminate(mut worker: Child, log: &Path) {
    let status = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "worker exited with {status}:\n{}", tail_of(log));
}

fn tail_of(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The passwords of every principal, none of which may appear in any output.
fn assert_no_password(what: &str, output: &str) {
    let secured = security::shared();
    for name in security::USERS {
        let password = secured.user(name).password;
        assert!(!output.contains(&password), "{what} shows the password of {name}");
    }
}

/// `tollgate admin create-topics` as `admin`, which must succeed; its output.
fn create_topics(bootstrap: &str, admin: &User) -> Output {
    let out = run(bootstrap, admin, &["admin", "create-topics", "--partitions", &PARTITIONS.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    out
}

#[test]
fn the_pipeline_runs_over_sasl_ssl_with_least_privilege_and_never_logs_a_password() {
    let secured = security::shared();
    let bootstrap = secured.bootstrap_servers();
    let (admin, producer, worker, billing) =
        (secured.user(ADMIN), secured.user(PRODUCER), secured.user(WORKER), secured.user(BILLING));

    let out = create_topics(&bootstrap, &admin);
    // The other tests of this binary may have created them first.
    let created = String::from_utf8_lossy(&out.stdout);
    assert_eq!(created.lines().count(), 12, "{created}");
    assert!(created.lines().all(|l| l.ends_with(": created") || l.ends_with(": already exists")), "{created}");
    assert_no_password("admin create-topics", &text(&out));
    let out = run(&bootstrap, &admin, &["admin", "publish-reference", "--file", "examples/reference.json"]);
    assert!(out.status.success(), "{}", text(&out));

    // The sample in two halves: the first rated at-least-once, the second exactly-once by a
    // worker that restores the first one's state.
    let events = std::fs::read_to_string(repo().join("examples/events.jsonl")).unwrap();
    let lines: Vec<&str> = events.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let inputs = ["tollgate.call-legs.v1", "tollgate.credit-commands.v1"];
    let progress = GroupProgress::new(&secured.broker().bootstrap_servers(), "tollgate", &inputs, PARTITIONS);
    for (half, guarantee) in [(first, "at_least_once"), (second, "exactly_once")] {
        let file = temp(&format!("{guarantee}.jsonl"));
        std::fs::write(&file, half.join("\n")).unwrap();
        let out = run(&bootstrap, &producer, &["produce", "--input", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        assert_no_password("produce", &text(&out));
        let log = temp(&format!("worker-{guarantee}.log"));
        let child = start_worker(&bootstrap, &worker, guarantee, &log);
        wait_until(&format!("the {guarantee} worker to catch up"), Duration::from_secs(120), || progress.caught_up());
        terminate(child, &log);
        let log_text = std::fs::read_to_string(&log).unwrap();
        // The debug output is there (so the check below means something) ...
        assert!(log_text.contains("librdkafka"), "no librdkafka debug output:\n{}", tail_of(&log));
        assert!(log_text.contains("sasl_ssl://"), "no debug output of the SASL_SSL connections:\n{}", tail_of(&log));
        // ... and no password in it.
        assert_no_password(&format!("the {guarantee} worker's log"), &log_text);
        // Its ACLs let it follow and write the ownership topic (the tenant API's directory).
        for refused in ["cannot follow the ownership topic", "cannot announce", "announcements not all written"] {
            assert!(!log_text.contains(refused), "{refused}:\n{}", tail_of(&log));
        }
    }

    // Billing reads the rated usage, in a group of its own: one usage per leg the golden
    // output rates, none twice, none missing, each with the golden charge and balance. Each
    // half is rated in the order its events happened, however the two inputs were fetched
    // (the worker catches up on its backlog in record time), and the file is in time order,
    // so the halves rate exactly as the offline rater rates the whole file.
    let out = run(&bootstrap, &billing, &["tail", "tollgate.rated-usage.v1", "--group-id", "billing"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut rated: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        rated.entry(record["value"]["usageId"].as_str().unwrap().to_owned()).or_default().push(money(&record["value"]));
    }
    let golden = std::fs::read_to_string(repo().join("examples/expected-output.jsonl")).unwrap();
    let mut expected: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in golden.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(usage) = record.get("ratedUsage") {
            expected.entry(usage["usageId"].as_str().unwrap().to_owned()).or_default().push(money(usage));
        }
    }
    assert_eq!(expected.len(), 147);
    assert_eq!(rated, expected);
    let expected: BTreeMap<String, usize> = expected.into_iter().map(|(id, usages)| (id, usages.len())).collect();

    // The usage report, read with billing's least privilege: one row per leg, then totals.
    let out = run(&bootstrap, &billing, &["report", "--group-id", "billing", "--format", "jsonl", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut reported: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["record"] == "usage" {
            *reported.entry(row["usage_id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(reported, expected);
}

/// A usage's charge and the balance after it.
fn money(usage: &serde_json::Value) -> (String, String) {
    let field = |name: &str| usage[name].as_str().unwrap_or_else(|| panic!("no {name} in {usage}")).to_owned();
    (field("charge"), field("balanceAfter"))
}

/// An in-process publisher of `user`'s.
fn publisher(bootstrap: &str, user: &User) -> Publisher {
    let config = WorkerConfig {
        bootstrap_servers: bootstrap.to_owned(),
        librdkafka: user.librdkafka().into_iter().collect(),
        kafka_timeout_ms: 10_000,
        ..WorkerConfig::default()
    };
    Publisher::new(&config).unwrap()
}

#[test]
fn the_producer_principal_cannot_write_the_changelog_or_the_rated_usage() {
    let secured = security::shared();
    let bootstrap = secured.bootstrap_servers();
    create_topics(&bootstrap, &secured.user(ADMIN));
    let producer = secured.user(PRODUCER);
    for topic in ["tollgate.state.v1", "tollgate.rated-usage.v1"] {
        let publisher = publisher(&bootstrap, &producer);
        publisher.send_raw(topic, Some(b"contoso"), Some(b"{\"balance\":\"1000000.00\"}")).unwrap();
        let error = publisher.flush().unwrap_err();
        let Error::Access(access) = &error else { panic!("{topic}: not an access error: {error}") };
        assert_eq!(access.cause, tollgate_worker::access::Cause::Authorization);
        assert_eq!(access.to_string(), format!("not authorized: write topic {topic} (TopicAuthorizationFailed)"));
    }
    // Its own topic, for contrast.
    let publisher = publisher(&bootstrap, &producer);
    publisher.send_raw("tollgate.call-legs.v1", Some(b"contoso"), Some(b"")).unwrap();
    publisher.flush().unwrap();
}

/// Every command that talks to Kafka.
const COMMANDS: [&[&str]; 7] = [
    &["run", "--metrics-listen", "127.0.0.1:0", "--group-id", "tollgate-refused"],
    &["tail", "tollgate.rated-usage.v1", "--group-id", "billing"],
    &["produce", "--input", "examples/events.jsonl"],
    &["admin", "create-topics"],
    &["admin", "publish-reference", "--file", "examples/reference.json"],
    &["admin", "fund", "--tenant", "contoso", "--amount", "10.00", "--currency", "USD"],
    &["verify"],
];

/// Runs every command at once (each waits on the broker, not on the CPU), returning each
/// one's output.
fn run_all(
    commands: &[&'static [&'static str]],
    bootstrap: &str,
    user: &User,
    timeout_ms: &str,
) -> Vec<(&'static [&'static str], Output)> {
    let children: Vec<_> = commands
        .iter()
        .map(|args| {
            let child = command(bootstrap, user, args)
                .env("TOLLGATE_KAFKA_TIMEOUT_MS", timeout_ms)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*args, child)
        })
        .collect();
    children.into_iter().map(|(args, child)| (args, child.wait_with_output().unwrap())).collect()
}

/// Each command exited with `code` and said `message`: the exit code and the message name
/// the cause (a timeout would say "cannot reach", exit code 10), so how long it took is not
/// asserted (speed is for benchmarks).
fn assert_all(results: &[(&[&str], Output)], code: i32, message: &str) {
    for (args, output) in results {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}:\n{stderr}");
        assert!(stderr.contains(message), "{args:?} does not say {message:?}:\n{stderr}");
        assert_no_password(&format!("{args:?}"), &stderr);
    }
}

#[test]
fn every_command_names_a_wrong_password_an_untrusted_certificate_a_wrong_host_and_an_unreachable_broker() {
    let secured = security::shared();
    let bootstrap = secured.bootstrap_servers();
    let worker = secured.user(WORKER);

    let wrong_password = worker.with_password("not-the-password");
    let results = run_all(&COMMANDS, &bootstrap, &wrong_password, "10000");
    assert_all(&results, 12, "authentication failed at ");
    assert_all(&results, 12, "SASL authentication error: Authentication failed");

    let untrusting = worker.trusting(secured.untrusted_ca());
    assert_all(&run_all(&COMMANDS, &bootstrap, &untrusting, "10000"), 11, "certificate verify failed");

    let by_name = secured.bootstrap_by_wrong_name();
    assert_all(&run_all(&COMMANDS, &by_name, &worker, "10000"), 11, "TLS handshake with localhost:");

    // Nothing listens on port 1: only the timeout tells it from a slow broker. `run` is the
    // exception: a worker waits for its broker, retrying (and saying so in its log).
    let results = run_all(&COMMANDS[1..], "127.0.0.1:1", &worker, "3000");
    assert_all(&results, 10, "cannot reach Kafka at 127.0.0.1:1: no broker answered within 3 s");
}

#[test]
fn every_command_names_what_an_acl_does_not_allow() {
    let secured = security::shared();
    let bootstrap = secured.bootstrap_servers();
    let admin = secured.user(ADMIN);
    create_topics(&bootstrap, &admin);
    // A worker reads nothing before a tenant is known: published, so that the first case
    // gets as far as the group.
    let out = run(&bootstrap, &admin, &["admin", "publish-reference", "--file", "examples/reference.json"]);
    assert!(out.status.success(), "{}", text(&out));
    let (billing, producer, worker) = (secured.user(BILLING), secured.user(PRODUCER), secured.user(WORKER));
    let cases: [(&User, &[&str], &str); 6] = [
        // The worker in a group it has no ACL for: it stops instead of retrying.
        (
            &worker,
            &["run", "--metrics-listen", "127.0.0.1:0", "--group-id", "refused"],
            "not authorized: User:tollgate-worker on consumer group refused",
        ),
        (
            &billing,
            &["run", "--metrics-listen", "127.0.0.1:0"],
            "not authorized: User:billing-reader on describe topic tollgate.call-legs.v1",
        ),
        (
            &billing,
            &["tail", "tollgate.state.v1", "--group-id", "billing"],
            "not authorized: User:billing-reader on read topic tollgate.state.v1",
        ),
        (&billing, &["produce", "--input", "examples/events.jsonl"], "not authorized: write topic tollgate."),
        (&producer, &["admin", "create-topics"], "not authorized: User:tollgate-producer on create topic tollgate."),
        (&producer, &["verify"], "not authorized: User:tollgate-producer on describe topic tollgate."),
    ];
    for (user, args, message) in cases {
        let out = run(&bootstrap, user, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(13), "{args:?}:\n{stderr}");
        assert!(stderr.contains(message), "{args:?} does not say {message:?}:\n{stderr}");
    }
    // The worker may describe a topic it writes (rated usage) but not read it: named as a
    // reference topic, it stops the reference loader, which used to retry forever.
    let started = Instant::now();
    let log = temp("reference-refused.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command(&bootstrap, &worker, &["run", "--metrics-listen", "127.0.0.1:0"])
        .env("TOLLGATE_TOPIC_TENANTS", "tollgate.rated-usage.v1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the worker retried a refused reference topic for 30 s:\n{}", tail_of(&log));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(13), "{stderr}");
    let message = "not authorized: User:tollgate-worker on read topic tollgate.rated-usage.v1, tollgate.users.v1 or \
                   tollgate.rate-cards.v1 (TopicAuthorizationFailed)";
    assert!(stderr.contains(message), "the loader does not say {message:?}:\n{stderr}");
}
