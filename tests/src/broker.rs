//! A real Apache Kafka broker for tests: one KRaft node (broker and controller in one JVM) on
//! loopback ports leased across test processes ([`crate::ports`]), run from the jars
//! `tests/kafka/fetch.sh` caches, with fault injection (SIGKILL, SIGTERM, SIGSTOP) and
//! Kafka's own console consumer to read topics back.
//!
//! ```no_run
//! let mut broker = tollgate_e2e::broker::Broker::start();
//! broker.create_topic("orders", 3, false);
//! // ... produce to broker.bootstrap_servers() ...
//! broker.kill9();
//! broker.restart();
//! let records = broker.console_consume("orders", true, 10, std::time::Duration::from_secs(30));
//! ```
//!
//! # No orphaned brokers
//!
//! The JVM runs under a small bash wrapper ([`WRAPPER`]) whose standard input is a pipe that
//! only the test process holds. When the pipe closes while the JVM runs (the test process
//! exited, panicked or was killed, or a [`Broker`] was dropped after a failed stop) the wrapper
//! SIGKILLs the JVM and removes the broker's directory. So no broker outlives its test process,
//! including the [`shared`] one, which as a static is never dropped.
//!
//! # Waiting
//!
//! "Ready" is a metadata exchange that lists this broker (it is registered and unfenced);
//! "stopped" is the wrapper's exit, which follows the JVM's. Every wait has a deadline and
//! fails with the end of the broker's log.
//!
//! # Environment
//!
//! - `TOLLGATE_KAFKA_LIBS`: the jar cache (default `target/kafka-4.1.1/libs` under the
//!   workspace root), filled by `tests/kafka/fetch.sh` when incomplete.
//! - `TOLLGATE_KEEP_BROKER`: keep each broker's directory (configuration, data, logs) and print
//!   its path.
//! - `JAVA_HOME`: the JVM to run (`java` on the `PATH` otherwise).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tollgate_worker::WorkerConfig;
use tollgate_worker::topics::{self, TopicSpec};

use crate::ports::{self, PortLease};

/// The Kafka release the tests run (the one `tests/kafka/pom.xml` names).
pub const KAFKA_VERSION: &str = "4.1.1";

/// The broker's (and controller's) node id.
const NODE_ID: i32 = 1;

/// Longest wait for a broker to start or restart (log recovery after SIGKILL included).
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Longest wait for a graceful stop before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// Time allowed for a tool JVM to start, on top of the caller's timeout.
const TOOL_ALLOWANCE: Duration = Duration::from_secs(60);

/// Pause between two metadata polls (readiness, topic leaders), which have no push signal:
/// each poll is a request with its own timeout, and the pause keeps a quick "not yet" from
/// spinning the loop until the deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Heap of the broker's JVM.
const BROKER_HEAP: &[&str] = &["-Xms256m", "-Xmx1g"];

/// Heap of a tool's JVM (storage formatting, console consumer).
const TOOL_HEAP: &[&str] = &["-Xmx256m"];

/// Runs `java ...` (the arguments after the directory and the keep flag) in the background
/// and prints its pid. A watchdog blocks on the wrapper's standard input, a pipe whose write
/// end only the test process holds: end of file there while the JVM runs means the test
/// process is gone, so the watchdog marks the directory orphaned and SIGKILLs the JVM. The
/// wrapper exits with the JVM's status, after removing an orphaned directory unless it is kept.
const WRAPPER: &str = r#"
dir=$1; keep=$2; shift 2
exec 3<&0 </dev/null
"$@" >>"$dir/jvm.out" 2>&1 3<&- &
jvm=$!
echo "$jvm"
( read -r _ <&3; : >"$dir/.orphaned"; kill -KILL "$jvm" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
exec 3<&-
wait "$jvm"
status=$?
kill "$watchdog" 2>/dev/null
if [ -e "$dir/.orphaned" ] && [ "$keep" != 1 ]; then rm -rf "$dir"; fi
exit "$status"
"#;

/// One record as Kafka's console consumer printed it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConsoleRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes (a missing key reads as the four bytes `null`).
    pub key: Vec<u8>,
    /// Value bytes (a tombstone reads as the four bytes `null`).
    pub value: Vec<u8>,
}

impl ConsoleRecord {
    /// The key as UTF-8 (lossy).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// A listener the broker opens next to its PLAINTEXT and CONTROLLER ones (e.g. SASL_SSL):
/// its name is also its security protocol, configured through the overrides
/// (`listener.name.<name>.*`).
#[derive(Clone, Debug)]
pub struct Listener {
    /// Listener name and security protocol, e.g. `SASL_SSL`.
    pub protocol: String,
    /// Its loopback port.
    pub port: u16,
}

/// A single-node Kafka cluster in a temporary directory, stopped and removed on drop.
pub struct Broker {
    dir: PathBuf,
    libs: PathBuf,
    port: u16,
    controller_port: u16,
    /// The two ports' leases, held for the broker's life (restarts included).
    _ports: [PortLease; 2],
    /// The cluster id its storage was formatted with.
    cluster_id: String,
    listener: Option<Listener>,
    keep: bool,
    jvm: Option<Jvm>,
    startup_time: Duration,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .field("dir", &self.dir)
            .field("running", &self.jvm.is_some())
            .finish_non_exhaustive()
    }
}

/// The broker shared by the tests of one test binary, started on first use. It is never
/// dropped: it dies with the test process (see the module documentation). Tests that stop,
/// kill or pause a broker start their own.
pub fn shared() -> &'static Broker {
    static SHARED: OnceLock<Broker> = OnceLock::new();
    SHARED.get_or_init(Broker::start)
}

impl Broker {
    /// Fetches the jars if needed, formats a fresh data directory and starts the broker on
    /// leased loopback ports; returns once it answers metadata requests. Panics, with the end of
    /// the broker's log, if it does not start.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// [`Broker::start`] with broker properties overridden (`server.properties` keys).
    pub fn start_with(overrides: &[(&str, &str)]) -> Broker {
        Broker::start_in(temp_dir(), None, overrides, &[])
    }

    /// [`Broker::start_with`] in `dir` (a new empty directory), with one more listener and
    /// arguments for `kafka-storage format` (e.g. `--add-scram` credentials, which exist only
    /// from the cluster's first start on).
    pub fn start_in(
        dir: PathBuf,
        listener: Option<Listener>,
        overrides: &[(&str, &str)],
        format_args: &[String],
    ) -> Broker {
        let libs = ensure_jars();
        let keep = std::env::var_os("TOLLGATE_KEEP_BROKER").is_some();
        if keep {
            eprintln!("kafka broker directory (kept): {}", dir.display());
        }
        let ports = [ports::lease(), ports::lease()];
        let (port, controller_port) = (ports[0].port(), ports[1].port());
        let mut broker = Broker {
            dir,
            libs,
            port,
            controller_port,
            _ports: ports,
            cluster_id: cluster_id(),
            listener,
            keep,
            jvm: None,
            startup_time: Duration::ZERO,
        };
        broker.write_properties(overrides);
        broker.format_storage(format_args);
        broker.launch();
        broker
    }

    /// `127.0.0.1:<port>` of the PLAINTEXT listener.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's directory: `server.properties`, `data/`, `server.log` (the broker's log),
    /// `jvm.out` (the JVM's own output) and the console consumers' logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the last start or restart took, from launching the JVM to ready.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Whether the JVM runs (paused counts as running).
    pub fn is_running(&self) -> bool {
        self.jvm.as_ref().is_some_and(|jvm| jvm.exit.status().is_none())
    }

    /// SIGKILLs the JVM and waits until it is gone: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let Some(jvm) = self.jvm.take() else { panic!("kill9: the broker is not running") };
        if let Err(e) = jvm.kill(STOP_DEADLINE) {
            panic!("{e}");
        }
    }

    /// SIGTERM: a graceful shutdown; waits for the JVM to exit and panics if it does not
    /// within a minute (it is SIGKILLed then).
    pub fn sigterm(&mut self) {
        let Some(jvm) = self.jvm.take() else { panic!("sigterm: the broker is not running") };
        if let Err(e) = jvm.stop(STOP_DEADLINE) {
            panic!("{e}\n{}", self.log_tail());
        }
    }

    /// Starts the broker again on the same ports and data directory (stopping it gracefully
    /// first if it runs) and waits until it is ready.
    pub fn restart(&mut self) {
        if self.jvm.is_some() {
            self.sigterm();
        }
        self.launch();
    }

    /// SIGSTOPs the JVM: connections stay open, nothing answers.
    pub fn pause(&mut self) {
        let Some(jvm) = self.jvm.as_mut() else { panic!("pause: the broker is not running") };
        jvm.signal("STOP");
        jvm.paused = true;
    }

    /// SIGCONTs a paused JVM.
    pub fn resume(&mut self) {
        let Some(jvm) = self.jvm.as_mut() else { panic!("resume: the broker is not running") };
        jvm.signal("CONT");
        jvm.paused = false;
    }

    /// Creates a topic (replication factor 1, `cleanup.policy=compact` when `compacted`) and
    /// waits until every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: i32, compacted: bool) {
        let configs = if compacted { vec![("cleanup.policy", "compact".to_owned())] } else { Vec::new() };
        let spec = TopicSpec { name: name.to_owned(), partitions, configs };
        let config = WorkerConfig { bootstrap_servers: self.bootstrap_servers(), ..WorkerConfig::default() };
        create_topics(&config, &[spec]).unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
        self.wait_for_topic(name, partitions);
    }

    /// Waits until the broker's metadata shows `topic` with `partitions` partitions, each with
    /// a leader (topics created by other clients, e.g. `tollgate_worker::topics::create`).
    pub fn wait_for_topic(&self, topic: &str, partitions: i32) {
        let consumer: BaseConsumer = self.client_config().create().unwrap_or_else(|e| panic!("client: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
                let ready = metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
                });
                if ready {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "topic {topic} has no leaders after 60 s");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Reads `topic` from the beginning with Kafka's own console consumer
    /// (`org.apache.kafka.tools.consumer.ConsoleConsumer`), `read_committed` or
    /// `read_uncommitted`, until it has read `max_messages` records or saw none for `timeout`.
    ///
    /// Keys and values are printed through Kafka's `BytesDeserializer`, which escapes every
    /// byte that is not printable ASCII (and the backslash) as `\xNN`; they are unescaped here,
    /// so the bytes come back exactly (only a null key or value is indistinguishable from the
    /// four bytes `null`).
    pub fn console_consume(
        &self,
        topic: &str,
        read_committed: bool,
        max_messages: usize,
        timeout: Duration,
    ) -> Vec<ConsoleRecord> {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let log = self.dir.join(format!("console-consumer-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
        let bytes = "org.apache.kafka.common.serialization.BytesDeserializer";
        let (mut command, archive) = self.java("console-consumer", &log, TOOL_HEAP);
        command.arg("org.apache.kafka.tools.consumer.ConsoleConsumer").args([
            "--bootstrap-server",
            &self.bootstrap_servers(),
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            &max_messages.to_string(),
            "--timeout-ms",
            &timeout.as_millis().to_string(),
            "--isolation-level",
            if read_committed { "read_committed" } else { "read_uncommitted" },
            "--key-deserializer",
            bytes,
            "--value-deserializer",
            bytes,
            "--property",
            "print.partition=true",
            "--property",
            "print.offset=true",
            "--property",
            "print.key=true",
        ]);
        let output = run_bounded(command, timeout + TOOL_ALLOWANCE, "the console consumer");
        archive.finish(output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        // It exits 0 after --max-messages, and also after --timeout-ms without a record (it
        // reports the timeout on stderr); anything else is a failure.
        if !output.status.success() {
            panic!("the console consumer failed ({}): {stderr}\nits log: {}", output.status, log.display());
        }
        output
            .stdout
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                parse_console_line(line).unwrap_or_else(|| {
                    panic!("unexpected console consumer output: {:?}", String::from_utf8_lossy(line))
                })
            })
            .collect()
    }

    /// Runs a Kafka tool's main class (e.g. `org.apache.kafka.tools.AclCommand`) with the
    /// cached jars, to its end or for at most `timeout`; its log goes to `<kind>.log` in the
    /// broker's directory.
    pub fn run_tool(&self, kind: &str, class: &str, args: &[String], timeout: Duration) -> Output {
        let (mut command, archive) = self.java(kind, &self.dir.join(format!("{kind}.log")), TOOL_HEAP);
        command.arg(class).args(args);
        let output = run_bounded(command, timeout + TOOL_ALLOWANCE, kind);
        archive.finish(output.status.success());
        output
    }

    /// Settings for an rdkafka client of this broker, reconnecting quickly after restarts.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        config
    }

    /// Every partition the broker's metadata shows without a leader or with an error, as
    /// `topic/partition: leader L, error E` lines; or why the metadata could not be read. For
    /// the message of a scenario that failed: a partition left without a leader after a
    /// restart stalls its producers and its transactions.
    pub fn unserved_partitions(&self) -> String {
        let consumer: BaseConsumer = match self.client_config().create() {
            Ok(consumer) => consumer,
            Err(e) => return format!("no client: {e}"),
        };
        let metadata = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(metadata) => metadata,
            Err(e) => return format!("no metadata: {e}"),
        };
        let mut lines = Vec::new();
        for topic in metadata.topics() {
            if let Some(error) = topic.error() {
                lines.push(format!("{}: error {error:?}", topic.name()));
            }
            for partition in topic.partitions() {
                if partition.leader() < 0 || partition.error().is_some() {
                    lines.push(format!(
                        "{}/{}: leader {}, error {:?}",
                        topic.name(),
                        partition.id(),
                        partition.leader(),
                        partition.error()
                    ));
                }
            }
        }
        if lines.is_empty() { "every partition has a leader".to_owned() } else { lines.join("\n") }
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut tail = String::new();
        for name in ["jvm.out", "server.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            tail.push_str(&format!(
                "--- last lines of {}:\n{}\n",
                self.dir.join(name).display(),
                lines[from..].join("\n")
            ));
        }
        tail
    }

    fn write_properties(&self, overrides: &[(&str, &str)]) {
        let data = self.dir.join("data");
        let (port, controller) = (self.port, self.controller_port);
        let (extra, extra_protocol) = match &self.listener {
            Some(l) => (format!(",{}://127.0.0.1:{}", l.protocol, l.port), format!(",{0}:{0}", l.protocol)),
            None => (String::new(), String::new()),
        };
        let properties = format!(
            "# A single-node KRaft cluster for tests: broker and controller in one JVM.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}{extra}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{extra}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{extra_protocol}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
# One replica of everything, and few partitions for the internal topics: faster to create.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
num.partitions=1
auto.create.topics.enable=false
# Groups form at once and accept the short sessions tests use.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# After a SIGKILL the restarted node waits for its previous incarnation's session to expire
# before it registers again: keep that short, but not so short that a loaded machine delays
# a heartbeat past it (the node then fences itself, and producers were seen to time out for
# minutes after such a fence and unfence).
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=500
# A small machine: few threads, a small cleaner buffer.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
",
            data = data.display()
        );
        // Later keys win.
        let properties = overrides.iter().fold(properties, |all, (key, value)| all + &format!("{key}={value}\n"));
        fs::write(self.dir.join("server.properties"), properties).unwrap_or_else(|e| panic!("server.properties: {e}"));
    }

    /// `kafka-storage.sh format`: writes the cluster id and the bootstrap metadata into `data/`.
    fn format_storage(&self, extra: &[String]) {
        let (mut command, archive) = self.java("storage", &self.dir.join("storage.log"), TOOL_HEAP);
        command.args(["kafka.tools.StorageTool", "format", "--cluster-id", &self.cluster_id, "--config"]);
        command.arg(self.dir.join("server.properties")).args(extra);
        let output = run_bounded(command, TOOL_ALLOWANCE, "kafka-storage format");
        archive.finish(output.status.success());
        if !output.status.success() {
            panic!(
                "kafka-storage format failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts the JVM and waits until it is ready.
    fn launch(&mut self) {
        let started = Instant::now();
        let mut command = Command::new("bash");
        command.arg("-c").arg(WRAPPER).arg("tollgate-kafka").arg(&self.dir).arg(if self.keep { "1" } else { "0" });
        let (mut java, archive) = self.java("broker", &self.dir.join("server.log"), BROKER_HEAP);
        java.arg("kafka.Kafka").arg(self.dir.join("server.properties"));
        command.arg(java.get_program()).args(java.get_args());
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(self.append("jvm.out")));
        let jvm = Jvm::spawn(command, archive);
        self.jvm = Some(jvm);
        self.wait_ready(started + START_DEADLINE);
        self.startup_time = started.elapsed();
        eprintln!(
            "kafka {KAFKA_VERSION} broker on {} ready in {:.1} s",
            self.bootstrap_servers(),
            self.startup_time.as_secs_f64()
        );
    }

    /// Polls metadata until it lists this broker, the JVM exits, or the deadline passes. The
    /// answer must come from this broker's cluster: another test's broker on the same port
    /// (which [`crate::ports`] exists to prevent) is not this one being ready.
    fn wait_ready(&self, deadline: Instant) {
        let consumer: BaseConsumer = self.client_config().create().unwrap_or_else(|e| panic!("client: {e}"));
        loop {
            if let Some(status) = self.jvm.as_ref().and_then(|jvm| jvm.exit.status()) {
                panic!("the kafka broker exited while starting ({status})\n{}", self.log_tail());
            }
            // Blocks for up to a second: the broker's answer is the signal waited for.
            let listed = consumer.fetch_metadata(None, Duration::from_secs(1));
            if listed.is_ok_and(|metadata| metadata.brokers().iter().any(|b| b.id() == NODE_ID)) {
                let cluster = consumer.client().fetch_cluster_id(Duration::from_secs(1));
                if cluster.as_deref() == Some(self.cluster_id.as_str()) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("the kafka broker was not ready after {START_DEADLINE:?}\n{}", self.log_tail());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `java` with the cached jars on the classpath, logging to `log`, sharing classes with
    /// earlier JVMs of the same `kind` (see [`ClassArchive`]). Quick to start rather than fast
    /// to run: the client compiler only and the serial collector, which also suit two cores.
    /// The JVM's own warnings go to stderr, so that a tool's stdout is only its output.
    fn java(&self, kind: &str, log: &Path, heap: &[&str]) -> (Command, ClassArchive) {
        let java = std::env::var_os("JAVA_HOME")
            .map_or_else(|| PathBuf::from("java"), |home| Path::new(&home).join("bin/java"));
        let archive = ClassArchive::new(&self.libs, kind);
        let mut command = Command::new(java);
        command
            .args(heap)
            .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xlog:disable", "-Xlog:all=warning:stderr"])
            .arg(archive.option())
            .arg("-Djava.awt.headless=true")
            .arg(format!("-Dlog4j2.configurationFile={}", workspace_root().join("tests/kafka/log4j2.xml").display()))
            .arg(format!("-Dtollgate.kafka.log={}", log.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()));
        (command, archive)
    }

    fn append(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.join(name).display()))
    }
}

impl Drop for Broker {
    /// Graceful stop (SIGKILL after a minute), then the directory is removed unless kept.
    fn drop(&mut self) {
        if let Some(Err(e)) = self.jvm.take().map(|jvm| jvm.stop(STOP_DEADLINE)) {
            eprintln!("{e}");
        }
        if self.keep {
            eprintln!("kafka broker directory kept: {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// A running broker JVM.
struct Jvm {
    pid: u32,
    /// The wrapper's standard input: dropping it while the JVM runs kills the JVM.
    _lifeline: ChildStdin,
    exit: Arc<Exit>,
    paused: bool,
    archive: ClassArchive,
}

impl Jvm {
    /// Spawns the wrapper, reads the JVM's pid and watches for the wrapper's exit.
    fn spawn(mut command: Command, archive: ClassArchive) -> Jvm {
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run bash to start the broker: {e}"));
        let lifeline = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let pid = match read.as_ref().ok().and_then(|_| line.trim().parse::<u32>().ok()) {
            Some(pid) => pid,
            None => panic!("the broker's wrapper did not report a pid ({read:?}, {line:?}): {:?}", child.wait()),
        };
        let exit = Arc::new(Exit::default());
        let watched = Arc::clone(&exit);
        std::thread::spawn(move || {
            let status = child.wait().map_or_else(|e| format!("cannot wait: {e}"), |s| s.to_string());
            watched.set(status);
        });
        Jvm { pid, _lifeline: lifeline, exit, paused: false, archive }
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) to the JVM.
    fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// SIGKILL, and waits until the JVM is gone.
    fn kill(self, deadline: Duration) -> Result<(), String> {
        self.signal("KILL");
        let gone = self.exit.wait(deadline).is_some();
        self.archive.finish(false);
        if gone {
            Ok(())
        } else {
            Err(format!("the kafka broker (pid {}) survived SIGKILL for {deadline:?}", self.pid))
        }
    }

    /// SIGTERM, then waits up to `deadline`; SIGKILL if the JVM is still there.
    fn stop(self, deadline: Duration) -> Result<(), String> {
        if self.exit.status().is_some() {
            self.archive.finish(false);
            return Ok(());
        }
        if self.paused {
            self.signal("CONT");
        }
        self.signal("TERM");
        if self.exit.wait(deadline).is_some() {
            self.archive.finish(true);
            return Ok(());
        }
        let pid = self.pid;
        self.kill(deadline)?;
        Err(format!("the kafka broker (pid {pid}) ignored SIGTERM for {deadline:?} and was killed"))
    }
}

/// Class data sharing (AppCDS): the first JVM of a kind (broker, console consumer, storage
/// tool) that exits cleanly dumps the classes it loaded into `<libs>/.cds/<kind>.jsa`, and
/// later ones map that archive instead of loading and verifying the classes again, which
/// roughly halves their start. The archive goes with the jar cache (a new fetch removes it);
/// the JVM ignores, with a warning, an archive that does not match it.
struct ClassArchive {
    archive: PathBuf,
    /// Where this JVM dumps its classes at exit, when there is no archive yet.
    dump: Option<PathBuf>,
}

impl ClassArchive {
    fn new(libs: &Path, kind: &str) -> ClassArchive {
        static DUMPS: AtomicU32 = AtomicU32::new(0);
        let dir = libs.join(".cds");
        let archive = dir.join(format!("{kind}.jsa"));
        if archive.exists() || fs::create_dir_all(&dir).is_err() {
            return ClassArchive { archive, dump: None };
        }
        let n = DUMPS.fetch_add(1, Ordering::Relaxed);
        let dump = dir.join(format!("{kind}-{}-{n}.jsa.partial", std::process::id()));
        ClassArchive { archive, dump: Some(dump) }
    }

    /// The JVM option: map the archive, or dump one at exit.
    fn option(&self) -> String {
        match &self.dump {
            Some(dump) => format!("-XX:ArchiveClassesAtExit={}", dump.display()),
            None => format!("-XX:SharedArchiveFile={}", self.archive.display()),
        }
    }

    /// After the JVM exited: a dump of a clean exit becomes the archive (an atomic rename, so
    /// concurrent first runs are harmless); any other is removed.
    fn finish(self, clean: bool) {
        let Some(dump) = self.dump else { return };
        if clean && dump.exists() {
            let _ = fs::rename(&dump, &self.archive);
        } else {
            let _ = fs::remove_file(&dump);
        }
    }
}

/// The wrapper's exit status, once it exited.
#[derive(Default)]
struct Exit {
    status: Mutex<Option<String>>,
    changed: Condvar,
}

impl Exit {
    fn set(&self, status: String) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
        self.changed.notify_all();
    }

    fn status(&self) -> Option<String> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits up to `timeout` for the exit.
    fn wait(&self, timeout: Duration) -> Option<String> {
        let guard = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) =
            self.changed.wait_timeout_while(guard, timeout, |s| s.is_none()).unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }
}

/// `kill -s SIGNAL PID` (bash's builtin: bash is needed anyway, procps may be missing). A
/// process that already exited is no error: callers wait for the exit anyway.
fn send_signal(pid: u32, signal: &str) {
    let _exit_status_ignored = Command::new("bash")
        .args(["-c", r#"kill -s "$1" "$2" 2>/dev/null"#, "kill", signal, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run bash to signal {pid}: {e}"));
}

/// Runs a command to its end, killing it after `timeout`; panics if it cannot run.
pub fn run_bounded(mut command: Command, timeout: Duration, what: &str) -> Output {
    let child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} ({:?}): {e}", command.get_program()));
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            send_signal(pid, "KILL");
            let _ = finished.recv_timeout(TOOL_ALLOWANCE);
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

/// `Partition:P<TAB>Offset:O<TAB>KEY<TAB>VALUE`, key and value escaped by `Bytes.toString`.
fn parse_console_line(line: &[u8]) -> Option<ConsoleRecord> {
    let mut fields = line.split(|b| *b == b'\t');
    let partition = std::str::from_utf8(fields.next()?.strip_prefix(b"Partition:")?).ok()?.parse().ok()?;
    let offset = std::str::from_utf8(fields.next()?.strip_prefix(b"Offset:")?).ok()?.parse().ok()?;
    let key = unescape(fields.next()?)?;
    let value = unescape(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(ConsoleRecord { partition, offset, key, value })
}

/// Reverses `org.apache.kafka.common.utils.Bytes.toString`: printable ASCII other than `\`
/// stands for itself, `\xNN` for any byte.
fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            let hex = text.get(i + 1..i + 4)?.strip_prefix(b"x")?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 4;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The workspace root (this package is `tests/` in it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// The directory named by the environment variable `var`, or `relative` under the workspace
/// root.
pub fn dir_from_env(var: &str, relative: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| workspace_root().join(relative), PathBuf::from)
}

/// Runs `bash <script>` (a path under the workspace root) with `var` set to `dir`; panics
/// unless it exits 0 and `complete` holds afterwards.
pub fn run_setup_script(script: &str, var: &str, dir: &Path, complete: impl Fn() -> bool) {
    let script = workspace_root().join(script);
    let status = Command::new("bash")
        .arg(&script)
        .env(var, dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success() && complete(), "{} failed ({status})", script.display());
}

/// The jar cache: `TOLLGATE_KAFKA_LIBS`, or `target/kafka-4.1.1/libs` under the workspace root.
pub fn libs_dir() -> PathBuf {
    dir_from_env("TOLLGATE_KAFKA_LIBS", &format!("target/kafka-{KAFKA_VERSION}/libs"))
}

/// Returns the jar cache, running `tests/kafka/fetch.sh` first (once per process) unless it
/// is complete: it holds a copy of the `pom.xml` it was made from.
pub fn ensure_jars() -> PathBuf {
    static FETCHED: OnceLock<PathBuf> = OnceLock::new();
    FETCHED
        .get_or_init(|| {
            let libs = libs_dir();
            let pom = workspace_root().join("tests/kafka/pom.xml");
            let complete = |libs: &Path| match (fs::read(libs.join(".pom.xml")), fs::read(&pom)) {
                (Ok(stamp), Ok(pom)) => stamp == pom,
                _ => false,
            };
            if !complete(&libs) {
                run_setup_script("tests/kafka/fetch.sh", "TOLLGATE_KAFKA_LIBS", &libs, || complete(&libs));
            }
            libs
        })
        .clone()
}

/// A new empty directory under the system's temporary directory.
pub fn temp_dir() -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    loop {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("tollgate-kafka-{}-{}-{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

/// A random cluster id as `kafka-storage.sh random-uuid` prints it: 16 random bytes in
/// unpadded URL-safe base64 (the first bit cleared, so it never starts with `-`).
fn cluster_id() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("/dev/urandom: {e}"));
    bytes[0] &= 0x7f;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::with_capacity(22);
    let mut bits = 0u32;
    let mut pending = 0u32;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        pending += 8;
        while pending >= 6 {
            pending -= 6;
            id.push(char::from(ALPHABET[((bits >> pending) & 0x3f) as usize]));
        }
    }
    if pending > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - pending)) & 0x3f) as usize]));
    }
    id
}

/// Waits until no transaction is pending on any partition of `topics`: each partition's
/// last stable offset (the end a `read_committed` reader is told of) has reached its high
/// watermark. A transaction's commit returns to its producer before the coordinator's
/// markers reach the partitions it wrote, so a reader that notes the ends right after a
/// commit stops short of that transaction's records.
pub fn wait_until_settled(config: &WorkerConfig, topics: &[&str], deadline: Duration) {
    let committed: BaseConsumer = tollgate_worker::kafka::reader(config, "settled").create().expect("a client");
    let mut uncommitted = tollgate_worker::kafka::reader(config, "settled");
    uncommitted.set("isolation.level", "read_uncommitted");
    let uncommitted: BaseConsumer = uncommitted.create().expect("a client");
    let timeout = Duration::from_secs(10);
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = committed.fetch_metadata(Some(topic), timeout).expect("the topic's metadata");
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            partitions.push((topic.to_string(), partition.id()));
        }
    }
    assert!(!partitions.is_empty(), "no partitions in {topics:?}");
    crate::fleet::wait_until("every transaction's markers to reach its partitions", deadline, || {
        partitions.iter().all(|(topic, partition)| {
            let stable = committed.fetch_watermarks(topic, *partition, timeout).map(|(_, high)| high);
            let high = uncommitted.fetch_watermarks(topic, *partition, timeout).map(|(_, high)| high);
            matches!((stable, high), (Ok(stable), Ok(high)) if stable == high)
        })
    });
}

/// Creates topics (replication factor 1) through the admin API, on a runtime of its own.
pub fn create_topics(config: &WorkerConfig, specs: &[TopicSpec]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    runtime.block_on(topics::create(config, specs, 1)).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_what_bytes_to_string_prints() {
        assert_eq!(unescape(br"ab\x00\x5C\x0A~\xFF").unwrap(), b"ab\x00\\\n~\xff");
        assert_eq!(unescape(br"\x4"), None);
        assert_eq!(unescape(br"\y00"), None);
    }

    #[test]
    fn parses_a_console_line() {
        let record = parse_console_line(b"Partition:2\tOffset:17\tacme\t\\x0A\\x03x").unwrap();
        assert_eq!(
            record,
            ConsoleRecord { partition: 2, offset: 17, key: b"acme".to_vec(), value: b"\n\x03x".to_vec() }
        );
        assert_eq!(parse_console_line(b"Processed a total of 3 messages"), None);
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(!id.starts_with('-'));
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
