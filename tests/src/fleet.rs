//! Worker processes for the fault suite: `tollgate run` started as a child process (so it can
//! be killed with SIGKILL, paused with SIGSTOP, stopped with SIGTERM), its `/metrics` read
//! over HTTP, and the consumer group's progress read from Kafka.
//!
//! Every wait is on a signal (a metric, committed offsets, a process exit) with a deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::ports::PortLease;

/// A free loopback port, leased to this process until the lease drops (see [`crate::ports`]).
pub fn free_port() -> PortLease {
    crate::ports::lease()
}

/// How to start workers.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// The `tollgate` binary (`env!("CARGO_BIN_EXE_tollgate")` in the binary's own tests, so
    /// cargo builds it fresh).
    pub binary: PathBuf,
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Consumer group.
    pub group: String,
    /// `at_least_once` or `exactly_once`.
    pub guarantee: String,
    /// `-X key=value` settings.
    pub librdkafka: Vec<(String, String)>,
    /// `TOLLGATE_*` settings (`("BATCH_SIZE", "200")`).
    pub env: Vec<(String, String)>,
    /// Directory for the logs.
    pub log_dir: PathBuf,
}

/// One `tollgate run` process.
#[derive(Debug)]
pub struct WorkerProcess {
    /// Name in logs (`w1`, ...).
    pub name: String,
    child: Child,
    metrics_port: u16,
    /// The metrics port's lease, held while the process may run.
    _metrics_lease: PortLease,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker.
    pub fn start(spec: &WorkerSpec, name: &str) -> WorkerProcess {
        let metrics_lease = free_port();
        let metrics_port = metrics_lease.port();
        let log = spec.log_dir.join(format!("{name}-{metrics_port}.log"));
        let file = std::fs::File::create(&log).expect("worker log file");
        let mut command = Command::new(&spec.binary);
        command
            .arg("run")
            .args(["--bootstrap-servers", &spec.bootstrap])
            .args(["--group-id", &spec.group])
            .args(["--processing-guarantee", &spec.guarantee])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            // FAULTS_WORKER_LOG=debug shows every batch in the worker logs.
            .args(["--log", &std::env::var("FAULTS_WORKER_LOG").unwrap_or_else(|_| "info".into())])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        // The worker refuses TOLLGATE_* variables it does not know (the test's own included).
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOLLGATE_")) {
            command.env_remove(key);
        }
        for (key, value) in &spec.env {
            command.env(format!("TOLLGATE_{key}"), value);
        }
        for (key, value) in &spec.librdkafka {
            command.args(["-X", &format!("{key}={value}")]);
        }
        let child = command.spawn().expect("start tollgate run");
        WorkerProcess { name: name.to_owned(), child, metrics_port, _metrics_lease: metrics_lease, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process is frozen (no heartbeats, no commits).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, then waits up to `within` for the exit; panics if it does not exit in time.
    /// A worker just started is sent the signal once it answers on its metrics port: before
    /// that its signal handler may not be installed yet, and the signal's default action
    /// (death, no exit code) is not what is tested.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        while self.exited().is_none() && self.get("/health").is_none() {
            assert!(
                started.elapsed() < within,
                "{} never answered on its metrics port:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("-TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("{} did not exit within {within:?} of SIGTERM; log:\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The status code and body of a GET of `path` on the metrics port (`/ready`, ...), or
    /// `None` while nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// Whether `/ready` answers 200: in the group, every owned partition restored.
    pub fn ready(&self) -> bool {
        self.get("/ready").is_some_and(|(status, _)| status == 200)
    }

    /// The metrics port (`/metrics`, `/ready`, the tenant API).
    pub fn port(&self) -> u16 {
        self.metrics_port
    }

    /// The value of an unlabelled metric, or the sum over a labelled one's series.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        let mut found = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let metric = series.split('{').next().unwrap_or(series);
            if metric == name {
                *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        found
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // A paused process cannot die of SIGKILL until it runs again.
            let _ = Command::new("kill").args(["-CONT", &self.pid().to_string()]).stderr(Stdio::null()).status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET over HTTP/1.0 (the server closes the connection after the response): status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with_head(port, path).map(|(status, _, body)| (status, body))
}

/// GET over HTTP/1.0: status, the response's head (status line and headers) and body.
pub fn http_get_with_head(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// Waits until `ready` holds, checking every 100 ms; panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The consumer group's committed offsets against the topics' high watermarks.
pub struct GroupProgress {
    /// Replaced after a query that failed: a librdkafka client can forget every broker after a
    /// lone broker's restart and never connect again (see `RESUMES` in the worker's
    /// `partition.rs`), and this one must see the workers through the broker scenarios.
    client: std::sync::Mutex<BaseConsumer>,
    config: ClientConfig,
    topics: Vec<String>,
    partitions: i32,
}

impl std::fmt::Debug for GroupProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupProgress").field("topics", &self.topics).finish_non_exhaustive()
    }
}

impl GroupProgress {
    /// Watches `group` on `topics` (each with `partitions` partitions).
    pub fn new(bootstrap: &str, group: &str, topics: &[&str], partitions: i32) -> GroupProgress {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // read_committed (librdkafka's default) asks for stable offsets, which the broker
            // withholds while any transaction of the group carries offsets: under steady
            // exactly-once traffic, nearly always. The last committed offsets are what counts.
            .set("isolation.level", "read_uncommitted");
        let client = std::sync::Mutex::new(config.create().expect("progress client"));
        GroupProgress { client, config, topics: topics.iter().map(|t| (*t).to_owned()).collect(), partitions }
    }

    /// `query` on the client; on failure the client is replaced for the next query.
    fn ask<T>(&self, query: impl FnOnce(&BaseConsumer) -> Option<T>) -> Option<T> {
        let mut client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let answer = query(&client);
        if answer.is_none() {
            *client = self.config.create().expect("progress client");
        }
        answer
    }

    /// Committed offsets summed over every partition (0 where none), or `None` if Kafka did not
    /// answer.
    pub fn committed(&self) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        for topic in &self.topics {
            for p in 0..self.partitions {
                tpl.add_partition(topic, p);
            }
        }
        let committed = self.ask(|client| client.committed_offsets(tpl, Duration::from_secs(5)).ok())?;
        Some(committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum())
    }

    /// High watermarks, per topic and partition.
    pub fn high_watermarks(&self) -> Option<BTreeMap<(String, i32), i64>> {
        self.ask(|client| {
            let mut out = BTreeMap::new();
            for topic in &self.topics {
                for p in 0..self.partitions {
                    let (_, high) = client.fetch_watermarks(topic, p, Duration::from_secs(5)).ok()?;
                    out.insert((topic.clone(), p), high);
                }
            }
            Some(out)
        })
    }

    /// Whether the group committed everything up to the high watermarks (a transaction's
    /// marker is the last offset, so a fully processed partition commits its high watermark).
    pub fn caught_up(&self) -> bool {
        let (Some(high), Some(committed)) = (self.high_watermarks(), self.committed()) else {
            return false;
        };
        committed >= high.values().sum::<i64>()
    }
}
