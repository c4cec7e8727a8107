//! `kafka-bench`: tollgate's workers side by side with a do-nothing copier, on a real Kafka.
//!
//! For each processing guarantee, on a fresh single-node broker (loopback):
//!
//! 1. a backlog (reference data, funding, legs with interims and duplicates) is loaded;
//! 2. `--workers` copier processes drain it: consume both inputs, decode each value, encode it
//!    again, produce it to an output topic and commit, with tollgate's own client settings
//!    and the same guarantee (an idempotent producer and a synchronous offset commit per
//!    batch, or one transaction per batch carrying the offsets);
//! 3. `--workers` `tollgate run` processes drain the same backlog in their own group;
//! 4. with the workers caught up, fresh legs are published at half tollgate's measured rate,
//!    and the time from publishing a leg's last event to its rated usage becoming readable
//!    (`read_committed`) is recorded in an HDR histogram;
//! 5. with the workers stopped, the same legs are published again at the same rate through
//!    do-nothing copiers that wait for records as a partition task does (one thread each,
//!    tollgate's client settings and guarantee, nothing rated, no state): the latency floor
//!    of any consume, produce and commit pipeline on this broker and machine.
//!
//! Throughput is input records over the time from the group's first commit to its last (group
//! join, reference loading and restore are left out, the same way for both).
//!
//! ```text
//! cargo build --release -p tollgate -p tollgate-e2e
//! target/release/kafka-bench --workers 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_e2e::broker::Broker;
use tollgate_e2e::fleet::{GroupProgress, WorkerProcess, WorkerSpec, wait_until};
use tollgate_e2e::traffic::{Shape, Traffic};
use tollgate_proto::{Message as _, v1};
use tollgate_worker::publish::Publisher;
use tollgate_worker::topics::TopicKind;
use tollgate_worker::{Cancel, ProcessingGuarantee, WorkerConfig, inbox, kafka, topics};

/// The worker's allocator, so that the copier and the restore bench measure what a worker
/// process would.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// mimalloc's delay before it hands freed memory back (milliseconds); see `Mode::Restore`.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// The copier's longest wait to fill a batch unless `--commit-interval-ms` is given.
const COPIER_WAIT_MS: u64 = 100;

/// How long any one phase may take.
const PHASE_DEADLINE: Duration = Duration::from_secs(900);

#[derive(Parser, Debug, Clone)]
#[command(about = "tollgate's workers against a do-nothing copier on a real Kafka")]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Legs in the backlog (about 2.2 input records each). Large enough that each side drains
    /// for 10 s or more: the copier drained a 150,000-leg backlog in 1.5 s, where when its
    /// processes joined the group moved its rate by 2 to 3×.
    #[arg(long, default_value_t = 1_000_000)]
    legs: usize,
    /// Tenants (the first three get 30 % of the legs).
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Processes of each kind.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// `at_least_once`, `exactly_once` or `both`.
    #[arg(long, default_value = "both")]
    guarantee: String,
    /// The `tollgate` binary.
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    /// Seconds of latency measurement (0: none).
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Records/s of the latency run (default: half tollgate's measured rate).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// A librdkafka setting for the workers, repeatable: `-X retry.backoff.ms=10`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = setting)]
    librdkafka: Vec<(String, String)>,
    /// The workers' `commit_interval_ms` (default: theirs, the guarantee's), and the copier's
    /// longest wait to fill a batch (default: 100 ms, as in every comparison so far; while
    /// draining a backlog neither side waits for it).
    #[arg(long)]
    commit_interval_ms: Option<u64>,
    /// Keep the workers' logs (their directory is printed); `FAULTS_WORKER_LOG=debug` logs
    /// every batch.
    #[arg(long)]
    keep_logs: bool,
    /// Runs of each guarantee, each on a fresh broker; with more than one, the median ratio
    /// and the range are printed after the runs (a shared machine moves one run's ratio by a
    /// quarter).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// A `-X key=value` librdkafka setting.
fn setting(text: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not key=value"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// The copier process (started by the bench itself), and the restore bench.
#[derive(Subcommand, Debug, Clone)]
enum Mode {
    /// Restore one changelog partition holding `--tenants` tenants: time and resident memory.
    Restore {
        /// Tenants in the partition.
        #[arg(long, default_value_t = 1_000_000)]
        tenants: usize,
        /// Per mille of tenants that are busy: 2 legs in progress and 100 remembered ids.
        #[arg(long, default_value_t = 10)]
        busy_per_mille: usize,
    },
    /// Throughput of 1, 2 and 4 workers on 6, 12 and 24 partitions (one table), with the
    /// copier on the same backlog as the yardstick; `--legs`, `--tenants` and `--guarantee`
    /// (one guarantee) apply.
    Scaling {
        /// Worker process counts.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
        /// Partition counts.
        #[arg(long, value_delimiter = ',', default_value = "6,12,24")]
        partitions: Vec<i32>,
    },
    #[command(hide = true)]
    Copy {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        guarantee: ProcessingGuarantee,
        #[arg(long)]
        commit_interval_ms: u64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::Copy { bootstrap, group, guarantee, commit_interval_ms }) => {
            return copy(&bootstrap, &group, guarantee, Duration::from_millis(commit_interval_ms));
        }
        Some(Mode::Restore { tenants, busy_per_mille }) => {
            // mimalloc keeps freed pages resident for a while before it purges them, so the
            // resident size right after a restore moved by a fifth from run to run with what
            // the restore's decoding had just freed (203 to 309 bytes per idle tenant). The
            // restore runs in a process of its own that purges at once: its figure is what
            // the restored states hold.
            if std::env::var_os(PURGE_DELAY).is_none() {
                let status = Command::new(std::env::current_exe()?)
                    .args(std::env::args_os().skip(1))
                    .env(PURGE_DELAY, "0")
                    .status()?;
                return if status.success() { Ok(()) } else { Err(format!("restore bench: {status}").into()) };
            }
            return restore(tenants, busy_per_mille);
        }
        Some(Mode::Scaling { ref workers, ref partitions }) => return scaling(&args, workers, partitions),
        None => {}
    }
    let guarantees = match args.guarantee.as_str() {
        "both" => vec![ProcessingGuarantee::AtLeastOnce, ProcessingGuarantee::ExactlyOnce],
        other => vec![other.parse()?],
    };
    let mut rows = Vec::new();
    for guarantee in guarantees {
        for _ in 0..args.repeat.max(1) {
            rows.push(bench(&args, guarantee)?);
        }
    }
    println!();
    println!(
        "| guarantee | input records | copier records/s | tollgate records/s | ratio | CPU µs per record, copier / tollgate | latency p50 / p99 / p99.9 (ms) at records/s, to readable | to the output's timestamp | do-nothing copiers at the same rate, to readable |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    if args.repeat > 1 {
        println!();
        println!(
            "| guarantee | runs | ratio, median | ratio, lowest to highest | CPU µs per record, copier / tollgate, medians |"
        );
        println!("|---|---|---|---|---|");
        for guarantee in [ProcessingGuarantee::AtLeastOnce, ProcessingGuarantee::ExactlyOnce] {
            let runs: Vec<&Row> = rows.iter().filter(|r| r.guarantee == guarantee).collect();
            if runs.is_empty() {
                continue;
            }
            let ratios = sorted(runs.iter().map(|r| r.tollgate / r.copier));
            println!(
                "| {} | {} | {:.2}× | {:.2}× to {:.2}× | {:.1} / {:.1} |",
                guarantee.label(),
                runs.len(),
                median(&ratios),
                ratios[0],
                ratios[ratios.len() - 1],
                median(&sorted(runs.iter().map(|r| r.cpu.0))),
                median(&sorted(runs.iter().map(|r| r.cpu.1))),
            );
        }
    }
    Ok(())
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The middle value of sorted, non-empty `values` (the mean of the two middle ones for an
/// even count).
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

/// The scaling table: every (workers, partitions) pair on a fresh broker, one guarantee.
fn scaling(args: &Args, workers: &[usize], partitions: &[i32]) -> Result<()> {
    let guarantee: ProcessingGuarantee =
        if args.guarantee == "both" { ProcessingGuarantee::AtLeastOnce } else { args.guarantee.parse()? };
    let mut table = Vec::new();
    for &p in partitions {
        for &w in workers {
            let run = Args { workers: w, partitions: p, latency_seconds: 0, mode: None, ..args.clone() };
            let row = bench(&run, guarantee)?;
            table.push((w, p, row));
        }
    }
    println!();
    println!("{} legs, {}:", args.legs, guarantee.label());
    println!();
    println!(
        "| partitions | workers | copier records/s | tollgate records/s | ratio | CPU µs per record, copier / tollgate |"
    );
    println!("|---|---|---|---|---|---|");
    for (w, p, row) in table {
        println!(
            "| {p} | {w} | {:.0} | {:.0} | {:.2}× | {:.1} / {:.1} |",
            row.copier,
            row.tollgate,
            row.tollgate / row.copier,
            row.cpu.0,
            row.cpu.1
        );
    }
    Ok(())
}

struct Row {
    guarantee: ProcessingGuarantee,
    records: usize,
    copier: f64,
    tollgate: f64,
    /// CPU time of the copier's and of tollgate's processes per input record, in
    /// microseconds: what each costs, whatever else the machine runs meanwhile.
    cpu: (f64, f64),
    latency: Option<Latency>,
    /// The same legs through do-nothing copiers that wait as tollgate's tasks wait.
    floor: Option<Latency>,
}

/// The latency run's figures, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Latency {
    /// From publishing a leg's last event to its rated usage being readable (p50, p99, p99.9).
    readable: (f64, f64, f64),
    /// From that event's record timestamp to the rated usage's record timestamp (the time
    /// the worker produced it; under exactly-once it becomes readable at the commit after).
    stamped: (f64, f64, f64),
    /// The records/s achieved.
    rate: f64,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |(p50, p99, p999): (f64, f64, f64)| format!("{p50:.1} / {p99:.1} / {p999:.1}");
        let latency = self.latency.map_or_else(
            || "not measured | not measured".to_owned(),
            |Latency { readable, stamped, rate }| format!("{} at {rate:.0} | {}", ms(readable), ms(stamped)),
        );
        let floor = self.floor.map_or_else(|| "not measured".to_owned(), |Latency { readable, .. }| ms(readable));
        write!(
            f,
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {:.1} / {:.1} | {latency} | {floor} |",
            self.guarantee.label(),
            self.records,
            self.copier,
            self.tollgate,
            self.tollgate / self.copier,
            self.cpu.0,
            self.cpu.1,
        )
    }
}

fn bench(args: &Args, guarantee: ProcessingGuarantee) -> Result<Row> {
    let label = guarantee.label();
    eprintln!("== {label}: starting a broker");
    let broker = Broker::start();
    let config = WorkerConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        group_id: format!("bench-{label}"),
        processing_guarantee: guarantee,
        ..WorkerConfig::default()
    };
    tollgate_e2e::broker::create_topics(&config, &topics::specs(&config, args.partitions))?;
    broker.create_topic(COPY_TOPIC, args.partitions, false);
    broker.create_topic(FLOOR_TOPIC, args.partitions, false);
    let live_legs = if args.latency_seconds > 0 { args.legs } else { 0 };
    let traffic = Traffic::generate(&Shape {
        tenants: args.tenants,
        legs: args.legs + live_legs,
        concurrency: 200,
        ..Shape::default()
    });
    // The backlog: the first legs' events; the rest are published live for the latency run.
    let split = traffic.legs.len() * args.legs / (args.legs + live_legs);
    let (backlog, live) = traffic.legs.split_at(split);
    let started = Instant::now();
    let publisher = Publisher::new(&config)?;
    for record in tollgate_worker::publish::reference(&config.topics, &traffic.reference) {
        publisher.send(&record)?;
    }
    for record in
        Traffic::keyed(&config.topics, &traffic.funding).iter().chain(&Traffic::keyed(&config.topics, backlog))
    {
        publisher.send(record)?;
    }
    publisher.flush()?;
    let records = traffic.funding.len() + backlog.len();
    eprintln!("== {label}: {records} input records loaded in {:.1} s", started.elapsed().as_secs_f64());
    let inputs = [config.topics[TopicKind::CallLegs].as_str(), config.topics[TopicKind::CreditCommands].as_str()];
    let logs = std::env::temp_dir().join(format!("kafka-bench-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    // (a) The copier.
    let group = format!("copier-{label}");
    let me = std::env::current_exe()?;
    let mut copiers: Vec<Child> = (0..args.workers)
        .map(|i| {
            let log = std::fs::File::create(logs.join(format!("copier-{i}.log")))?;
            Command::new(&me)
                .args(["copy", "--bootstrap", &config.bootstrap_servers, "--group", &group, "--guarantee", label])
                .args(["--commit-interval-ms", &args.commit_interval_ms.unwrap_or(COPIER_WAIT_MS).to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let copier = drain(&config.bootstrap_servers, &group, &inputs, args.partitions, records, "copier");
    let copier_cpu: f64 = copiers.iter().map(|c| cpu_seconds(c.id())).sum();
    for child in &mut copiers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let copier = copier?;

    // (b) tollgate.
    let spec = WorkerSpec {
        binary: args.tollgate.clone(),
        bootstrap: config.bootstrap_servers.clone(),
        group: config.group_id.clone(),
        guarantee: label.to_owned(),
        librdkafka: args.librdkafka.clone(),
        env: args.commit_interval_ms.map(|ms| ("COMMIT_INTERVAL_MS".into(), ms.to_string())).into_iter().collect(),
        log_dir: logs.clone(),
    };
    let mut workers: Vec<WorkerProcess> =
        (0..args.workers).map(|i| WorkerProcess::start(&spec, &format!("w{i}"))).collect();
    let tollgate = drain(&config.bootstrap_servers, &config.group_id, &inputs, args.partitions, records, "tollgate")?;
    let tollgate_cpu: f64 = workers.iter().map(|w| cpu_seconds(w.pid())).sum();
    let per_record = |seconds: f64| seconds * 1e6 / records as f64;
    let cpu = (per_record(copier_cpu), per_record(tollgate_cpu));
    eprintln!("== CPU per record: copier {:.1} µs, tollgate {:.1} µs", cpu.0, cpu.1);
    // Summed over the workers; `None` when none exposes it (a counter never incremented, or
    // a binary from before the metric).
    let total = |name: &str| {
        let values: Vec<f64> = workers.iter().filter_map(|w| w.metric(name)).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>())
    };
    let written = total("tollgate_changelog_records_total")
        .map_or_else(|| "n/a".to_owned(), |n| format!("{:.2}", n / records as f64));
    let batches = total("tollgate_batches_total").unwrap_or(0.0);
    let seconds = total("tollgate_batch_duration_seconds_sum").unwrap_or(0.0);
    let pauses = total("tollgate_backpressure_pauses_total").unwrap_or(0.0);
    let given_up = total("tollgate_catch_up_given_up_total").unwrap_or(0.0);
    if batches > 0.0 {
        eprintln!(
            "== batches: {batches} committed, {:.0} input records and {:.1} ms each on average; {pauses} backpressure pauses, {given_up} catch-up waits given up",
            records as f64 / batches,
            seconds * 1e3 / batches
        );
    }
    let state = [config.topics[TopicKind::State].as_str()];
    let ends = GroupProgress::new(&config.bootstrap_servers, &config.group_id, &state, args.partitions)
        .high_watermarks()
        .ok_or("the changelog's end offsets: Kafka did not answer")?;
    eprintln!(
        "== per input record: {written} changelog records written, {:.2} changelog offsets (records and transaction markers)",
        ends.values().sum::<i64>() as f64 / records as f64
    );

    // Latency at half tollgate's rate.
    let latency = if live.is_empty() {
        None
    } else {
        let rate = args.latency_rate.unwrap_or(tollgate / 2.0);
        // A worker that started slower may join the group after the backlog is drained: its
        // rebalance (a hand-over and a restore) would fall into the latency run. The run
        // starts when every worker is ready and owns partitions.
        wait_until("every worker ready with partitions", PHASE_DEADLINE, || {
            workers.iter().all(|w| w.ready() && w.metric("tollgate_assigned_partitions").is_some_and(|n| n >= 1.0))
        });
        Some(measure_latency(&config, live, rate, Duration::from_secs(args.latency_seconds), Target::RatedUsage)?)
    };
    for worker in &mut workers {
        worker.terminate(Duration::from_secs(30));
    }
    // The floor: the same legs again, at the same rate, through do-nothing copiers that wait
    // as tollgate's tasks wait (the workers are gone, as the throughput copiers were before
    // them).
    let floor = match &latency {
        Some(measured) => {
            let floor_config = WorkerConfig {
                group_id: format!("floor-{label}"),
                commit_interval_ms: args.commit_interval_ms,
                ..config.clone()
            };
            let copiers = Floor::start(&floor_config, args.workers, args.partitions)?;
            let run = measure_latency(
                &floor_config,
                live,
                measured.rate,
                Duration::from_secs(args.latency_seconds),
                Target::Floor,
            );
            copiers.stop()?;
            Some(run?)
        }
        None => None,
    };
    if args.keep_logs {
        eprintln!("== the workers' logs: {}", logs.display());
    } else {
        let _ = std::fs::remove_dir_all(&logs);
    }
    Ok(Row { guarantee, records, copier, tollgate, cpu, latency, floor })
}

/// User plus system CPU time a process used since it started, in seconds (from
/// `/proc/<pid>/stat`; 0 where that cannot be read). Both kinds of process are measured from
/// their start, so tollgate's also holds its reference loading and (empty) restore.
fn cpu_seconds(pid: u32) -> f64 {
    /// Clock ticks per second of `/proc`'s times (`getconf CLK_TCK`, 100 on Linux).
    const TICKS: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The fields after the command name (which may hold spaces) are `) state ppid ...`;
    // utime and stime are the 14th and 15th of the whole line.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS
}

/// Where the copier writes.
const COPY_TOPIC: &str = "bench.copy.v1";

/// Where the latency floor's copiers write.
const FLOOR_TOPIC: &str = "bench.floor.v1";

/// Waits until `group` committed every input; returns records per second from its first
/// commit to its last.
fn drain(bootstrap: &str, group: &str, inputs: &[&str], partitions: i32, records: usize, who: &str) -> Result<f64> {
    let progress = GroupProgress::new(bootstrap, group, inputs, partitions);
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let committed = progress.committed().unwrap_or(0);
        if committed > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if committed > 0 && progress.caught_up() {
            let first = first.unwrap_or(started);
            let took = first.elapsed().as_secs_f64().max(0.001);
            let rate = records as f64 / took;
            eprintln!(
                "== {who}: {records} records in {took:.1} s from its first commit ({:.1} s from start): {rate:.0} records/s",
                started.elapsed().as_secs_f64()
            );
            return Ok(rate);
        }
        if started.elapsed() > PHASE_DEADLINE {
            return Err(format!("{who} did not drain the backlog within {PHASE_DEADLINE:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a latency run waits for: a leg's rated usage (its id `tenant/leg`), or the copy of its
/// last event (by event id) that the floor's copiers write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    RatedUsage,
    Floor,
}

impl Target {
    fn topic(self, config: &WorkerConfig) -> String {
        match self {
            Target::RatedUsage => config.topics[TopicKind::RatedUsage].clone(),
            Target::Floor => FLOOR_TOPIC.to_owned(),
        }
    }

    /// The id of what a leg's last event becomes.
    fn id_of(self, event: &v1::CallLegEvent) -> String {
        match self {
            Target::RatedUsage => format!("{}/{}", event.tenant_id, event.leg_id),
            Target::Floor => event.event_id.clone(),
        }
    }

    /// The id an output record carries (`None`: not one this run measures).
    fn id_in(self, value: &[u8]) -> Option<String> {
        match self {
            Target::RatedUsage => v1::RatedUsage::decode(value).ok().map(|usage| usage.usage_id),
            Target::Floor => v1::CallLegEvent::decode(value).ok().map(|event| event.event_id),
        }
    }
}

/// Publishes `live` at `rate` records a second for at most `duration`, and measures the time
/// from a leg's last event being sent to what it becomes (`target`) being readable, and
/// between the two records' timestamps (see [`Latency`]).
fn measure_latency(
    config: &WorkerConfig,
    live: &[v1::InputRecord],
    rate: f64,
    duration: Duration,
    target: Target,
) -> Result<Latency> {
    // A leg's output id → when its last event was sent, and that record's timestamp.
    let sent: Arc<Mutex<BTreeMap<String, (Instant, i64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (config, sent, done) = (config.clone(), Arc::clone(&sent), Arc::clone(&done));
        let consumer: BaseConsumer = kafka::reader(&config, "bench-latency").create()?;
        let topic = &target.topic(&config);
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        // At the offsets of now, not `Offset::End`: that is looked up at the first fetch, after
        // the first legs were published, and delayed their usages by the lookup.
        for partition in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
            let (_, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
            tpl.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        std::thread::spawn(move || -> (Histogram<u64>, Histogram<u64>) {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
            let mut stamped = histogram.clone();
            let mut seen = std::collections::BTreeSet::new();
            let quiet_deadline = Duration::from_secs(30);
            let mut last = Instant::now();
            while !done.load(Ordering::Acquire) || last.elapsed() < quiet_deadline {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(20)) else {
                    if done.load(Ordering::Acquire) && sent.lock().map(|s| s.len() == seen.len()).unwrap_or(true) {
                        break;
                    }
                    continue;
                };
                let now = Instant::now();
                last = now;
                let Some(id) = target.id_in(message.payload().unwrap_or_default()) else { continue };
                let at = sent.lock().ok().and_then(|s| s.get(&id).copied());
                if let Some((at, input_ms)) = at {
                    if seen.insert(id) {
                        let micros = now.duration_since(at).as_micros() as u64;
                        let _ = histogram.record(micros.max(1));
                        let output_ms = message.timestamp().to_millis().unwrap_or(input_ms);
                        let _ = stamped.record((output_ms.saturating_sub(input_ms).max(0) as u64 * 1000).max(1));
                    }
                }
            }
            (histogram, stamped)
        })
    };
    // Legs whose last event is in `live`, by the id of what that event becomes.
    let mut last_event: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, record) in live.iter().enumerate() {
        if let Some(v1::input_record::Record::CallLeg(event)) = &record.record {
            last_event.insert(format!("{}/{}", event.tenant_id, event.leg_id), (i, target.id_of(event)));
        }
    }
    let ends: BTreeMap<usize, String> = last_event.into_values().collect();
    let publisher = Publisher::new(config)?;
    let keyed = Traffic::keyed(&config.topics, live);
    // Noted before sending: the usage must not be read before its leg counts as sent. The
    // record's timestamp is the wall clock librdkafka reads at `send`, read here just before.
    let note_sent = |i: usize| {
        if let (Some(id), Ok(mut sent)) = (ends.get(&i), sent.lock()) {
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            sent.insert(id.clone(), (Instant::now(), wall.map_or(0, |d| d.as_millis() as i64)));
        }
    };
    // The publisher connects and gets its producer id with its first record: that one is sent
    // and acknowledged before the clock starts, so the run measures the pipeline, not the
    // bench's own client starting.
    let Some((first, keyed)) = keyed.split_first() else { return Err("no live legs".into()) };
    note_sent(0);
    publisher.send(first)?;
    publisher.flush()?;
    let started = Instant::now();
    let mut published = 0usize;
    for (i, record) in keyed.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        if started.elapsed() >= duration {
            break;
        }
        note_sent(i);
        publisher.send(record)?;
        published += 1;
        let due = started + Duration::from_secs_f64(published as f64 / rate);
        if let Some(ahead) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(ahead);
        }
    }
    publisher.flush()?;
    let achieved = published as f64 / started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let (histogram, stamped) = reader.join().map_err(|_| "latency reader panicked")?;
    let quantiles = |h: &Histogram<u64>| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (ms(0.5), ms(0.99), ms(0.999))
    };
    let (readable, stamped) = (quantiles(&histogram), quantiles(&stamped));
    eprintln!(
        "== latency ({}): {} legs at {achieved:.0} records/s: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms to readable; \
         p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms between the records' timestamps",
        match target {
            Target::RatedUsage => "tollgate",
            Target::Floor => "floor: do-nothing copiers",
        },
        histogram.len(),
        readable.0,
        readable.1,
        readable.2,
        histogram.max() as f64 / 1000.0,
        stamped.0,
        stamped.1,
        stamped.2,
    );
    Ok(Latency { readable, stamped, rate: achieved })
}

/// The do-nothing copier: tollgate's consumer and producer settings, decode and encode again,
/// produce, commit per batch (up to 5,000 records or `--commit-interval-ms`, tollgate's
/// defaults).
fn copy(bootstrap: &str, group: &str, guarantee: ProcessingGuarantee, commit_interval: Duration) -> Result<()> {
    let config = WorkerConfig {
        bootstrap_servers: bootstrap.to_owned(),
        group_id: group.to_owned(),
        processing_guarantee: guarantee,
        ..WorkerConfig::default()
    };
    let timeout = config.kafka_timeout();
    let consumer: BaseConsumer = kafka::group_consumer(&config).create()?;
    consumer.subscribe(&[&config.topics[TopicKind::CallLegs], &config.topics[TopicKind::CreditCommands]])?;
    let exactly_once = guarantee == ProcessingGuarantee::ExactlyOnce;
    // The workers' producer settings: a task's, and under exactly-once its transactional one.
    let producer_config = if exactly_once {
        kafka::transactional_producer(&config, &format!("copier-{group}-{}", std::process::id()))
    } else {
        kafka::task_producer(&config)
    };
    let producer: rdkafka::producer::BaseProducer = producer_config.create()?;
    if exactly_once {
        producer.init_transactions(timeout)?;
    }
    let legs = config.topics[TopicKind::CallLegs].clone();
    loop {
        let mut batch = Vec::new();
        let deadline = Instant::now() + commit_interval;
        while batch.len() < 5_000 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match consumer.poll(wait) {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => eprintln!("consumer error: {error}"),
                None if Instant::now() >= deadline => break,
                None => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        copy_batch(&consumer, &producer, &batch, (&legs, COPY_TOPIC), exactly_once, CommitMode::Sync, timeout)?;
    }
}

/// Copies `batch` to `to` (each value decoded and encoded again, as a call-leg event when it
/// comes from `legs`, else as a credit command) and commits its offsets: under exactly-once in
/// the same transaction, else once every copy was acknowledged, in `mode`. Flushed as the
/// workers flush (`kafka::flush`), so neither side pays rust-rdkafka's 100 ms flush polls.
fn copy_batch(
    consumer: &BaseConsumer,
    producer: &rdkafka::producer::BaseProducer,
    batch: &[rdkafka::message::OwnedMessage],
    (legs, to): (&str, &str),
    exactly_once: bool,
    mode: CommitMode,
    timeout: Duration,
) -> Result<()> {
    if exactly_once {
        producer.begin_transaction()?;
    }
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in batch {
        let payload = message.payload().unwrap_or_default();
        let encoded = if message.topic() == legs {
            v1::CallLegEvent::decode(payload).map(|e| e.encode_to_vec())
        } else {
            v1::CreditCommand::decode(payload).map(|c| c.encode_to_vec())
        };
        if let Ok(value) = encoded {
            let mut record = BaseRecord::<[u8], [u8]>::to(to).payload(&value);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            kafka::send_waiting(producer, record)?;
        }
        next.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
    }
    if exactly_once {
        let metadata = consumer.group_metadata().ok_or("no group metadata")?;
        producer.send_offsets_to_transaction(&offsets, &metadata, timeout)?;
        kafka::flush(producer, timeout)?;
        producer.commit_transaction(timeout)?;
    } else {
        kafka::flush(producer, timeout)?;
        consumer.commit(&offsets, mode)?;
    }
    Ok(())
}

/// The latency floor: do-nothing copiers (one thread each, tollgate's client settings and
/// guarantee) that wait for records as a partition task does: a batch is what waits, and only
/// a batch whose first record had to be waited for waits the workers' commit interval for
/// company. Each copier reads its share of the inputs' partitions from their ends of now,
/// decodes and encodes each record, produces it, waits for the acknowledgements and commits
/// (at-least-once: the offsets, without waiting; exactly-once: one transaction per batch).
/// What it measures is what any consume, produce and commit pipeline pays on this broker and
/// machine at the run's rate, with nothing rated and no state written.
struct Floor {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<std::result::Result<(), String>>>,
}

impl Floor {
    /// Starts `copiers` copiers, each assigned its partitions before this returns.
    fn start(config: &WorkerConfig, copiers: usize, partitions: i32) -> Result<Floor> {
        let stop = Arc::new(AtomicBool::new(false));
        let inputs = [config.topics[TopicKind::CallLegs].clone(), config.topics[TopicKind::CreditCommands].clone()];
        let mut threads = Vec::new();
        for index in 0..copiers {
            let consumer: BaseConsumer = kafka::group_consumer(config).create()?;
            let mut tpl = TopicPartitionList::new();
            for topic in &inputs {
                for partition in (0..partitions).filter(|p| *p as usize % copiers == index) {
                    let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
                    tpl.add_partition_offset(topic, partition, Offset::Offset(high))?;
                }
            }
            consumer.assign(&tpl)?;
            let exactly_once = config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
            let producer: rdkafka::producer::BaseProducer = if exactly_once {
                kafka::transactional_producer(config, &format!("{}-{index}", config.group_id)).create()?
            } else {
                kafka::task_producer(config).create()?
            };
            if exactly_once {
                producer.init_transactions(config.kafka_timeout())?;
            }
            let (config, stop) = (config.clone(), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                floor_copy(&config, &consumer, &producer, &stop).map_err(|e| e.to_string())
            }));
        }
        Ok(Floor { stop, threads })
    }

    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads {
            thread.join().map_err(|_| "a floor copier panicked")??;
        }
        Ok(())
    }
}

/// One floor copier's loop (see [`Floor`]).
fn floor_copy(
    config: &WorkerConfig,
    consumer: &BaseConsumer,
    producer: &rdkafka::producer::BaseProducer,
    stop: &AtomicBool,
) -> Result<()> {
    let timeout = config.kafka_timeout();
    let exactly_once = config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    let legs = config.topics[TopicKind::CallLegs].clone();
    let mut batch = Vec::new();
    let mut previous: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        batch.clear();
        while batch.len() < config.batch_size {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => eprintln!("floor consumer error: {error}"),
                None => break,
            }
        }
        if batch.is_empty() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => eprintln!("floor consumer error: {error}"),
                None => {}
            }
            if batch.is_empty() {
                continue;
            }
            // Waited for: company is waited for until the commit interval after the previous
            // batch left (`Inbox::take_batch`).
            let deadline = inbox::company_until(previous, config.commit_interval(), Instant::now());
            while batch.len() < config.batch_size {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match consumer.poll(left) {
                    Some(Ok(message)) => batch.push(message.detach()),
                    Some(Err(error)) => eprintln!("floor consumer error: {error}"),
                    None => {}
                }
            }
        }
        previous = Some(Instant::now());
        copy_batch(consumer, producer, &batch, (&legs, FLOOR_TOPIC), exactly_once, CommitMode::Async, timeout)?;
    }
    Ok(())
}

/// Writes a changelog partition of `tenants` tenants (each with a funded lot; `busy_per_mille`
/// of them also with legs in progress and a full window of remembered ids), then restores it
/// the way a worker does and reports the time and the resident memory it took.
fn restore(tenants: usize, busy_per_mille: usize) -> Result<()> {
    use tollgate_core::{Money, OpenLeg, TenantState, Timestamp};
    let broker = Broker::start();
    let config = WorkerConfig { bootstrap_servers: broker.bootstrap_servers(), ..WorkerConfig::default() };
    broker.create_topic(&config.topics[TopicKind::State], 1, true);
    let at = Timestamp::new(1_793_577_600, 0)?;
    let amount: Money = "100.00".parse()?;
    let template = open_leg_template()?;
    let publisher = Publisher::new(&config)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0usize, 0usize);
    for i in 0..tenants {
        let tenant = format!("tenant-{i:07}");
        let mut state = TenantState::default();
        state.ledger.credit(format!("{tenant}-lot"), amount, at);
        state.totals.funded = amount;
        state.credit_sequence = 1;
        state.watermark = at;
        // The windows a tenant written in full writes (its state keeps their keys only).
        let mut windows = tollgate_worker::changelog::Journal::default();
        if i % 1000 < busy_per_mille {
            for n in 0..100 {
                let id = format!("{tenant}/leg-{n}-e").into();
                windows.seen.push(tollgate_core::state::Change::Added { id, value: n, at });
            }
            for n in 0..2 {
                let _ = state.open_legs.insert(
                    format!("open-{n}").into(),
                    OpenLeg { call_id: format!("call-{n}").into(), ..template.clone() },
                );
            }
        }
        for (key, value) in tollgate_worker::changelog::full_records(&tenant, &state, &windows, &mut Default::default())
        {
            bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            records += 1;
            publisher.send_raw(&config.topics[TopicKind::State], Some(key.as_bytes()), value.as_deref())?;
        }
    }
    publisher.flush()?;
    eprintln!(
        "== wrote {records} changelog records ({:.0} MB) for {tenants} tenants in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let before = resident_bytes();
    let started = Instant::now();
    let restored = tollgate_worker::changelog::restore_partition(&config, 0, &Cancel::default())?;
    // What a partition task's start checks next: every tenant is on its own partition.
    let checked = Instant::now();
    if let Some((tenant, home)) = restored.states.misplaced(0, std::hint::black_box(1)) {
        return Err(format!("tenant {tenant} restored on partition 0 is at home on {home}").into());
    }
    let check = checked.elapsed();
    let took = started.elapsed();
    let after = resident_bytes();
    let per_tenant = after.saturating_sub(before) as f64 / tenants as f64;
    println!(
        "restore: {} tenants ({records} records, {:.0} MB) in {:.2} s (the placement check {:.0} ms of it); resident memory {:.0} MB -> {:.0} MB: {per_tenant:.0} bytes per tenant (freed memory handed back at once)",
        restored.states.len(),
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        check.as_secs_f64() * 1e3,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    Ok(())
}

/// A dial-out leg in progress, the template of the busy tenants' open legs.
fn open_leg_template() -> Result<tollgate_core::OpenLeg> {
    Ok(tollgate_core::testing::open_leg("", tollgate_core::Timestamp::new(1_793_577_600, 0)?))
}

/// The process's resident set size, from `/proc/self/statm`.
fn resident_bytes() -> usize {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .unwrap_or(0);
    pages * 4096
}
