//! `tollgate demo`: the main job on an embedded default. Starts an in-process Kafka
//! (librdkafka's mock cluster), creates the topics, loads the sample reference data, runs a
//! consumer group of workers and a traffic generator, shows progress, serves `/metrics`, and
//! ends with a summary that reconciles rated usage against the workers' state.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_core::{Currency, Money, TenantState};
use tollgate_proto::{Message as _, v1};
use tollgate_worker::publish::{self, Keyed, Publisher};
use tollgate_worker::{ProcessingGuarantee, Worker, WorkerConfig, changelog, kafka, topics};

use crate::{config, telemetry};
use tollgate_worker::TopicKind;

/// The sample reference data (5 tenants in 5 countries, 17 users, 4 rate cards).
const REFERENCE: &str = include_str!("../../../examples/reference.json");

/// Arguments of `tollgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Legs started per second (0: as fast as the generator can publish).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds of generated traffic.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Generate exactly this many legs instead of generating for `--duration`: the same seed
    /// and number of legs give the same summary on every run.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    legs: Option<u64>,
    /// Workers in the consumer group.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Partitions of the inputs, outputs and changelog.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// `at_least_once` or `exactly_once` (the mock cluster does not store transactional
    /// offsets, so exactly-once here shows the transactional path, not its guarantee).
    #[arg(long, default_value_t = ProcessingGuarantee::AtLeastOnce)]
    processing_guarantee: ProcessingGuarantee,
    /// Where `/metrics`, `/health` and `/ready` are served while the demo runs (empty: not
    /// served).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// No progress bars (for logs and CI).
    #[arg(long)]
    quiet: bool,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let logs = config::demo_logs()?;
    telemetry::init_logs(&logs.log, logs.log_format);
    let guarantee = args.processing_guarantee;
    if args.workers == 0 || args.partitions < 1 {
        bail!("--workers and --partitions must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let _guard = runtime.enter();
    // Installed whether or not it is served: the summary reads its unpriced-legs counter.
    let metrics_handle = telemetry::install_metrics()?;

    let cluster = MockCluster::new(1).context("failed to start the embedded Kafka")?;
    let config = WorkerConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        group_id: "tollgate-demo".into(),
        processing_guarantee: guarantee,
        ..WorkerConfig::default()
    };
    for spec in topics::specs(&config, args.partitions) {
        cluster
            .create_topic(&spec.name, spec.partitions, 1)
            .with_context(|| format!("failed to create {}", spec.name))?;
    }
    let reference: v1::ReferenceData = serde_json::from_str(REFERENCE).context("bad embedded reference data")?;
    let publisher = Publisher::new(&config)?;
    for record in publish::reference(&config.topics, &reference) {
        publisher.send(&record)?;
    }
    publisher.flush()?;

    // One registry for every worker of the process: each is named (`worker` label).
    let workers: Vec<Worker> = (1..=args.workers)
        .map(|i| Worker::named(config.clone(), &format!("w{i}")))
        .collect::<Result<_, _>>()
        .context("invalid worker configuration")?;
    let readiness = workers.iter().map(|w| Arc::clone(w.readiness())).collect();
    let metrics = match telemetry::serve(&args.metrics_listen, metrics_handle.clone(), readiness) {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("tollgate demo: /metrics not served: {error:#}");
            None
        }
    };
    println!(
        "tollgate demo: embedded Kafka at {}, {} partitions, {} workers, {}{}",
        config.bootstrap_servers,
        args.partitions,
        args.workers,
        args.processing_guarantee,
        metrics.map(|a| format!(", metrics on http://{a}/metrics (and /ready)")).unwrap_or_default()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<JoinHandle<anyhow::Result<()>>> = workers
        .into_iter()
        .map(|worker| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || worker.run(&stop).context("worker failed"))
        })
        .collect();

    let observer = Observer::start(&config);
    let mut traffic = Traffic::new(&reference, config.topics.clone(), args.seed);
    // Credit commands and call legs are separate topics: fund first and wait for it.
    let funds = traffic.funds();
    for keyed in &funds {
        publisher.send(keyed)?;
    }
    publisher.flush()?;
    observer.wait(Duration::from_secs(60), |s| s.funded >= funds.len() as u64).context("funding was not processed")?;

    let bars = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let planned = match (args.legs, args.rate) {
        (Some(legs), _) => Some(legs),
        (None, 0) => None,
        (None, rate) => Some(u64::from(rate) * args.duration),
    };
    let style = ProgressStyle::with_template("{prefix:>10} {bar:40} {pos:>7}/{len:7} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let published_bar =
        bars.add(ProgressBar::new(planned.unwrap_or(0)).with_style(style.clone()).with_prefix("published"));
    let rated_bar = bars.add(ProgressBar::new(planned.unwrap_or(0)).with_style(style).with_prefix("rated"));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut legs = 0u64;
    // Either a number of legs or a duration; `--rate` paces both.
    let more = |legs: u64| match args.legs {
        Some(total) => legs < total,
        None => Instant::now() < deadline,
    };
    while more(legs) {
        let due = match args.rate {
            0 => legs + 100,
            rate => (started.elapsed().as_secs_f64() * f64::from(rate)) as u64,
        };
        let due = args.legs.map_or(due, |total| due.min(total));
        while legs < due {
            for keyed in traffic.leg() {
                publisher.send(&keyed)?;
            }
            legs += 1;
        }
        published_bar.set_position(legs);
        let (rated, dead) = observer.peek(|s| (s.usages.len() as u64 + s.voip, s.dead_letters.values().sum::<u64>()));
        rated_bar.set_position(rated);
        rated_bar.set_message(format!("{dead} dead letters"));
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher.flush()?;
    published_bar.set_length(legs);
    published_bar.set_position(legs);
    rated_bar.set_length(legs);
    let expected_usages = traffic.pstn_legs;
    let expected_dead = traffic.malformed;
    let done = observer
        .wait_with(Duration::from_secs(120), &rated_bar, |s| {
            s.usages.len() as u64 >= expected_usages && s.dead_letters.values().sum::<u64>() >= expected_dead
        })
        .with_context(|| {
            observer.peek(|s| {
                format!(
                    "rated {} of {expected_usages} PSTN legs, {} of {expected_dead} dead letters",
                    s.usages.len(),
                    s.dead_letters.values().sum::<u64>()
                )
            })
        });
    let elapsed = started.elapsed();
    published_bar.finish();
    rated_bar.finish();
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    // The workers stopped: every output is written. Read all of them, so that the summary
    // counts everything (decisions and credit events of the last batches too).
    let drained = done.and_then(|()| observer.drain(&config, Duration::from_secs(60)));
    let stats = observer.snapshot();
    observer.stop();
    drained.context("not every leg was rated in time")?;

    let states = read_states(&config)?;
    let events = traffic.events;
    println!();
    println!(
        "{legs} legs ({events} input events) in {:.1} s: {:.0} events/s end to end",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(0.001),
    );
    let unpriced_metric = counter_value(&metrics_handle.render(), "tollgate_unpriced_legs_total");
    let (summary, adds_up) = summary(&args, &stats, &states, &traffic, legs, unpriced_metric);
    print!("{summary}");
    Ok(if adds_up { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The value of an unlabelled counter in a Prometheus text rendering.
fn counter_value(rendered: &str, name: &str) -> Option<u64> {
    rendered.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What the observer saw on the output topics (duplicates under at-least-once are counted
/// once, by their deterministic ids).
#[derive(Debug, Default, Clone)]
struct Stats {
    usages: BTreeMap<String, (String, String, String)>,
    charges: BTreeMap<String, Money>,
    /// Rated charges per tenant.
    tenant_charges: BTreeMap<String, Money>,
    /// Legs no rate matched (usage flag `unpriced`, what `tollgate_unpriced_legs_total`
    /// counts), by outcome: rated free, or blocked.
    unpriced: BTreeMap<&'static str, u64>,
    voip: u64,
    decisions: HashSet<String>,
    disconnects: u64,
    credit_events: BTreeMap<String, u64>,
    credit_ids: HashSet<String>,
    funded: u64,
    dead_letters: BTreeMap<String, u64>,
    dead_ids: HashSet<(String, i32, i64)>,
}

/// High watermarks to read to: (topic, partition, end offset).
type Ends = Vec<(String, i32, i64)>;

struct Observer {
    stats: Arc<Mutex<Stats>>,
    /// The ends (high watermarks) to read the output topics to, once the workers stopped.
    ends: Arc<Mutex<Option<Ends>>>,
    /// Set once the observer read past every end.
    drained: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    fn start(config: &WorkerConfig) -> Observer {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let ends = Arc::new(Mutex::new(None));
        let drained = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stats, stop, config) = (Arc::clone(&stats), Arc::clone(&stop), config.clone());
            let (ends, drained) = (Arc::clone(&ends), Arc::clone(&drained));
            std::thread::spawn(move || observe(&config, &stats, &ends, &drained, &stop))
        };
        Observer { stats, ends, drained, stop, thread: Some(thread) }
    }

    /// A copy of everything seen (for the summary: it copies every usage id).
    fn snapshot(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads the live stats without copying them (progress and waiting).
    fn peek<T>(&self, read: impl FnOnce(&Stats) -> T) -> T {
        match self.stats.lock() {
            Ok(stats) => read(&stats),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&Stats) -> bool) -> anyhow::Result<()> {
        self.wait_with(timeout, &ProgressBar::hidden(), done)
    }

    fn wait_with(&self, timeout: Duration, bar: &ProgressBar, done: impl Fn(&Stats) -> bool) -> anyhow::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            let (rated, finished) = self.peek(|s| (s.usages.len() as u64 + s.voip, done(s)));
            bar.set_position(rated);
            if finished {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("timed out after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the observer read the output topics to their current ends (call it once
    /// nothing writes to them any more).
    fn drain(&self, config: &WorkerConfig, timeout: Duration) -> anyhow::Result<()> {
        let consumer: BaseConsumer = kafka::reader(config, "demo-ends").create()?;
        let mut ends = Vec::new();
        for topic in output_topics(config) {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                ends.push((topic.clone(), p.id(), high));
            }
        }
        *self.ends.lock().map_err(|_| anyhow::anyhow!("the observer panicked"))? = Some(ends);
        let until = Instant::now() + timeout;
        while !self.drained.load(Ordering::Acquire) {
            if Instant::now() > until {
                bail!("the outputs were not read to their ends within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn output_topics(config: &WorkerConfig) -> [&String; 4] {
    let t = &config.topics;
    [&t[TopicKind::RatedUsage], &t[TopicKind::LegDecisions], &t[TopicKind::CreditEvents], &t[TopicKind::DeadLetter]]
}

fn observe(
    config: &WorkerConfig,
    stats: &Mutex<Stats>,
    ends: &Mutex<Option<Ends>>,
    drained: &AtomicBool,
    stop: &AtomicBool,
) {
    let Ok(consumer) = kafka::reader(config, "demo-observer").create::<BaseConsumer>() else { return };
    let mut assignment = TopicPartitionList::new();
    for topic in output_topics(config) {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else { return };
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let _ = assignment.add_partition_offset(topic, p.id(), Offset::Beginning);
        }
    }
    if consumer.assign(&assignment).is_err() {
        return;
    }
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let Ok(mut s) = stats.lock() else { return };
            record(&config.topics, &m, &mut s);
        }
        if drained.load(Ordering::Acquire) {
            continue;
        }
        let Ok(ends) = ends.lock() else { return };
        let (Some(ends), Ok(position)) = (ends.as_ref(), consumer.position()) else { continue };
        // Positions, not the last offsets read: transaction markers take offsets too.
        let read_to_end = ends.iter().all(|(topic, partition, high)| {
            *high == 0
                || position
                    .find_partition(topic, *partition)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|p| p >= *high)
        });
        if read_to_end {
            drained.store(true, Ordering::Release);
        }
    }
}

/// Counts one output record.
fn record(t: &tollgate_worker::Topics, m: &rdkafka::message::BorrowedMessage<'_>, s: &mut Stats) {
    let Some(payload) = m.payload() else { return };
    if m.topic() == t[TopicKind::RatedUsage] {
        let Ok(u) = v1::RatedUsage::decode(payload) else { return };
        if s.usages.contains_key(&u.usage_id) {
            return;
        }
        let kind = match (u.call_type(), u.number_type()) {
            (v1::CallType::ConfIn, v1::NumberType::TollFree) => "dial-in toll-free",
            (v1::CallType::ConfIn, _) => "dial-in toll",
            _ => "dial-out / call-me-at",
        };
        let blocked = u.outcome() == v1::rated_usage::Outcome::Blocked;
        let outcome = match u.outcome() {
            v1::rated_usage::Outcome::Blocked => match u.block_reason() {
                v1::BlockReason::Policy => "blocked: policy",
                v1::BlockReason::NoCredit => "blocked: no credit",
                v1::BlockReason::TollFreeDisabled => "blocked: toll-free off",
                _ => "blocked: no rate",
            },
            _ => match u.capability() {
                v1::Capability::Subscription => "rated: subscription",
                v1::Capability::Pool => "rated: pool",
                v1::Capability::Unpriced => "rated free: no rate",
                _ => "rated: ppm",
            },
        };
        if u.flags.iter().any(|f| f == "unpriced") {
            *s.unpriced.entry(if blocked { "blocked" } else { "rated free" }).or_default() += 1;
        }
        let charge: Money = u.charge.parse().unwrap_or_default();
        *s.charges.entry(u.currency.clone()).or_default() += charge;
        *s.tenant_charges.entry(u.tenant_id.clone()).or_default() += charge;
        s.usages.insert(u.usage_id, (kind.to_owned(), outcome.to_owned(), u.currency));
    } else if m.topic() == t[TopicKind::LegDecisions] {
        let Ok(d) = v1::LegDecision::decode(payload) else { return };
        if s.decisions.insert(d.decision_id.clone()) {
            match d.decision {
                Some(v1::leg_decision::Decision::Allow(a)) if a.capability == 0 => s.voip += 1,
                Some(v1::leg_decision::Decision::Disconnect(_)) => s.disconnects += 1,
                _ => {}
            }
        }
    } else if m.topic() == t[TopicKind::CreditEvents] {
        let Ok(c) = v1::CreditEvent::decode(payload) else { return };
        if s.credit_ids.insert(c.credit_event_id.clone()) {
            let kind = c.kind().as_str_name().trim_start_matches("KIND_").to_ascii_lowercase();
            if c.kind() == v1::credit_event::Kind::Funded {
                s.funded += 1;
            }
            *s.credit_events.entry(kind).or_default() += 1;
        }
    } else if m.topic() == t[TopicKind::DeadLetter] {
        let Ok(d) = v1::DeadLetter::decode(payload) else { return };
        if s.dead_ids.insert((d.source_topic.clone(), d.source_partition, d.source_offset)) {
            *s.dead_letters.entry(d.error_code).or_default() += 1;
        }
    }
}

/// The latest state of every tenant, from the changelog.
fn read_states(config: &WorkerConfig) -> anyhow::Result<BTreeMap<String, TenantState>> {
    let consumer: BaseConsumer = kafka::reader(config, "demo-states").create()?;
    let topic = &config.topics[TopicKind::State];
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > 0 {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            ends.insert(p.id(), high);
        }
    }
    consumer.assign(&assignment)?;
    let mut restorer = changelog::Restorer::default();
    let until = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < until {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
        restorer.apply(m.key().unwrap_or_default(), m.payload());
        if ends.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&m.partition());
        }
    }
    Ok(restorer.finish().context("unreadable changelog")?.states.into_iter().collect())
}

/// The closing summary, and whether it adds up. Everything in it follows from the seed and the
/// legs generated: the same `--seed` and `--legs` give the same text on every run.
fn summary(
    args: &DemoArgs,
    stats: &Stats,
    states: &BTreeMap<String, TenantState>,
    traffic: &Traffic,
    legs: u64,
    unpriced_metric: Option<u64>,
) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "summary: seed {}, {legs} legs ({} input events), {} workers, {} partitions, {}",
        args.seed, traffic.events, args.workers, args.partitions, args.processing_guarantee
    );
    let _ = writeln!(o);
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (kind, outcome, _) in stats.usages.values() {
        *table.entry((kind.clone(), outcome.clone())).or_default() += 1;
    }
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "legs by kind", "outcome", "count");
    for ((kind, outcome), n) in &table {
        let _ = writeln!(o, "{kind:<24} {outcome:<24} {n:>8}");
    }
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "voip / app join", "allowed, not billed", stats.voip);
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "in-progress legs", "disconnect decisions", stats.disconnects);
    let _ = writeln!(o);
    // Unpriced: no rate matched the leg's number (usage flag `unpriced`), whatever became of
    // the leg; the same definition as the worker's tollgate_unpriced_legs_total.
    let free = stats.unpriced.get("rated free").copied().unwrap_or(0);
    let blocked = stats.unpriced.get("blocked").copied().unwrap_or(0);
    let unpriced = free + blocked;
    let metric_agrees = unpriced_metric == Some(unpriced);
    let _ = writeln!(
        o,
        "unpriced legs (no rate matched): {unpriced} ({free} rated free, {blocked} blocked); \
         tollgate_unpriced_legs_total {} {}",
        unpriced_metric.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        if metric_agrees { "ok" } else { "MISMATCH" }
    );
    let _ = writeln!(o);
    // Reconciliation: what the usage records charged equals what the ledgers debited.
    let mut debited: BTreeMap<String, Money> = BTreeMap::new();
    let mut open = 0usize;
    let reference: v1::ReferenceData = serde_json::from_str(REFERENCE).unwrap_or_default();
    let tenant_of: BTreeMap<&str, &v1::Tenant> = reference.tenants.iter().map(|t| (t.tenant_id.as_str(), t)).collect();
    let currency_of = |tenant: &str| tenant_of.get(tenant).map_or("???", |t| t.currency.as_str());
    for (tenant, state) in states {
        let in_flight: Money = state.open_legs.values().map(|l| l.debited).sum();
        open += state.open_legs.len();
        *debited.entry(currency_of(tenant).to_owned()).or_default() += state.totals.usage_charges - in_flight;
    }
    let currencies: BTreeSet<&String> = stats.charges.keys().chain(debited.keys()).collect();
    let mut adds_up = metric_agrees;
    let _ = writeln!(o, "{:<10} {:>16} {:>16}", "currency", "rated charges", "ledger debits");
    for c in currencies {
        let rated = stats.charges.get(c).copied().unwrap_or_default();
        let ledger = debited.get(c).copied().unwrap_or_default();
        let ok = rated == ledger;
        adds_up &= ok;
        let _ = writeln!(o, "{c:<10} {rated:>16} {ledger:>16} {}", if ok { "ok" } else { "MISMATCH" });
    }
    if open > 0 {
        let _ = writeln!(o, "({open} legs still in progress; their debits so far are excluded)");
    }
    let _ = writeln!(o);
    let credit: Vec<String> = stats.credit_events.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(o, "credit events: {}", credit.join(", "));
    let dead: Vec<String> = stats.dead_letters.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(o, "dead letters:  {}", if dead.is_empty() { "none".into() } else { dead.join(", ") });
    let _ = writeln!(o);
    // Per tenant: money in, what its legs were charged, and what is left.
    let _ = writeln!(o, "{:<12} {:<8} {:>14} {:>14} {:>14}", "tenant", "currency", "funded", "charges", "balance");
    let mut notes = Vec::new();
    for (tenant, state) in states {
        let currency = currency_of(tenant);
        // In the currency's minor units, as on the wire (5000.00, not 5000).
        let money =
            |amount: Money| Currency::from_code(currency).map_or_else(|_| amount.to_string(), |c| c.format(amount));
        let charges = stats.tenant_charges.get(tenant).copied().unwrap_or_default();
        let balance = state.balance();
        let negative = balance < Money::ZERO;
        let _ = writeln!(
            o,
            "{tenant:<12} {currency:<8} {:>14} {:>14} {:>14}{}",
            money(state.totals.funded),
            money(charges),
            money(balance),
            if negative { " *" } else { "" }
        );
        if negative {
            notes.push(overdrawn(tenant, tenant_of.get(tenant.as_str()).copied()));
        }
    }
    for note in notes {
        let _ = writeln!(o, "* {note}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        if adds_up {
            "summary adds up: rated charges = ledger debits, unpriced legs = tollgate_unpriced_legs_total"
        } else {
            "SUMMARY DOES NOT ADD UP"
        }
    );
    (out, adds_up)
}

/// Why a tenant's balance is below zero: its cutoff policy let calls go on after the credit
/// ran out. The overdraft is a debt that the next funding pays first.
fn overdrawn(tenant: &str, reference: Option<&v1::Tenant>) -> String {
    match reference.map(|t| (t.cutoff_policy(), t.overdraft_limit.as_str())) {
        Some((v1::CutoffPolicy::Disconnect, limit)) => format!(
            "{tenant}: cutoff policy `disconnect` with an overdraft limit of {limit}: calls in progress \
             go on below zero until a debit takes the balance past -{limit}, then they are \
             disconnected. The next funding pays the debt first."
        ),
        _ => format!(
            "{tenant}: cutoff policy `finish`: a call allowed at its start completes and is charged \
             in full even when the credit (or the subscription's pool) runs out during it, so the \
             balance can go below zero. New credit-funded calls are blocked until the balance is \
             above zero again; the next funding pays the debt first."
        ),
    }
}

/// A tenant of the sample: id, currency, and its users with their usage locations.
type SampleTenant = (String, String, Vec<(String, String)>);

/// A deterministic traffic generator over the sample reference data.
struct Traffic {
    rng: u64,
    tenants: Vec<SampleTenant>,
    /// Tenants with credits enabled: the others refuse funding (`credits_disabled`).
    credit_tenants: Vec<String>,
    next_leg: u64,
    pstn_legs: u64,
    malformed: u64,
    events: u64,
    topics: tollgate_worker::Topics,
}

/// Valid E.164 number stems by country, completed with random digits.
const NUMBERS: &[(&str, &str, usize)] = &[
    ("US", "+1212867", 4),
    ("US", "+1415392", 4),
    ("CA", "+1416340", 4),
    ("PR", "+1787722", 4),
    ("GB", "+44207183", 4),
    ("GB", "+44161496", 4),
    ("DE", "+49309018", 4),
    ("FR", "+331426853", 2),
    ("JP", "+813123456", 2),
    ("AU", "+612937440", 2),
    ("IN", "+9122234567", 2),
    ("BR", "+5511333344", 2),
    ("IT", "+3902123456", 2),
    ("ES", "+349112345", 2),
    ("NG", "+23480312345", 2),
    ("AR", "+5411432112", 2),
    ("ZZ", "+8823", 8),
];

const TOLL_BRIDGES: &[(&str, &str)] = &[
    ("US", "+12062078000"),
    ("GB", "+442038700000"),
    ("DE", "+4930901820"),
    ("JP", "+81312345678"),
    ("AU", "+61293744000"),
    ("FR", "+33142685300"),
    ("CA", "+14163402000"),
];

const TOLL_FREE_BRIDGES: &[(&str, &str)] = &[
    ("US", "+18665550100"),
    ("GB", "+448000121234"),
    ("DE", "+498001234567"),
    ("JP", "+81120123456"),
    ("AU", "+611800123456"),
];

impl Traffic {
    fn new(reference: &v1::ReferenceData, topics: tollgate_worker::Topics, seed: u64) -> Traffic {
        let tenants = reference
            .tenants
            .iter()
            .map(|t| {
                let users = reference
                    .users
                    .iter()
                    .filter(|u| u.tenant_id == t.tenant_id)
                    .map(|u| (u.user_id.clone(), u.usage_location.clone()))
                    .collect();
                (t.tenant_id.clone(), t.currency.clone(), users)
            })
            .collect();
        Traffic {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            tenants,
            credit_tenants: reference
                .tenants
                .iter()
                .filter(|t| t.credits_enabled)
                .map(|t| t.tenant_id.clone())
                .collect(),
            next_leg: 0,
            pstn_legs: 0,
            malformed: 0,
            events: 0,
            topics,
        }
    }

    /// xorshift64*: deterministic, good enough for traffic.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One lot per tenant: generous, except fabrikam (runs out, cut off) and woodgrove
    /// (credits not enabled).
    fn funds(&mut self) -> Vec<Keyed> {
        let amounts = [
            ("contoso", "5000.00"),
            ("fabrikam", "40.00"),
            ("northwind", "4000.00"),
            ("tailspin", "600000"),
            ("woodgrove", "100.00"),
        ];
        let mut out = Vec::new();
        for (tenant, currency, _) in self.tenants.iter().filter(|(t, _, _)| self.credit_tenants.contains(t)) {
            let amount = amounts.iter().find(|(t, _)| t == tenant).map_or("1000.00", |(_, a)| a);
            let json = format!(
                r#"{{"creditCommand":{{"commandId":"demo-fund-{tenant}","tenantId":"{tenant}","occurredAt":"2026-11-02T07:00:00Z","fund":{{"lotId":"demo-{tenant}","amount":"{amount}","currency":"{currency}","purchasedAt":"2026-11-02T07:00:00Z"}}}}}}"#
            );
            if let Ok(record) = serde_json::from_str::<v1::InputRecord>(&json) {
                out.extend(publish::input(&self.topics, &record));
            }
        }
        self.events += out.len() as u64;
        out
    }

    fn number(&mut self, country: Option<&str>) -> String {
        let candidates: Vec<&(&str, &str, usize)> = match country {
            Some(c) => NUMBERS.iter().filter(|(cc, _, _)| *cc == c).collect(),
            None => NUMBERS.iter().collect(),
        };
        let candidates = if candidates.is_empty() { NUMBERS.iter().collect() } else { candidates };
        let (_, stem, digits) = candidates[self.below(candidates.len() as u64) as usize];
        let mut number = (*stem).to_owned();
        for _ in 0..*digits {
            number.push(char::from(b'0' + self.below(10) as u8));
        }
        number
    }

    /// The records of one more leg (started, interims, ended), now and then with a malformed
    /// record among them.
    fn leg(&mut self) -> Vec<Keyed> {
        let i = self.next_leg;
        self.next_leg += 1;
        let pick = self.below(self.tenants.len() as u64) as usize;
        let (tenant, _, users) = self.tenants[pick].clone();
        let (organizer, location) = users[self.below(users.len() as u64) as usize].clone();
        // 2026-11-02T08:00:00Z plus a few seconds per leg.
        let start = 1_793_606_400 + (i as i64) * 3;
        let roll = self.below(100);
        let (kind, number, bridge) = match roll {
            0..35 => {
                let b = TOLL_BRIDGES.iter().find(|(c, _)| *c == location).unwrap_or(&TOLL_BRIDGES[0]).1;
                ("LEG_KIND_DIAL_IN_TOLL", self.number(None), b.to_owned())
            }
            35..45 => {
                let b = TOLL_FREE_BRIDGES.iter().find(|(c, _)| *c == location).unwrap_or(&TOLL_FREE_BRIDGES[0]).1;
                ("LEG_KIND_DIAL_IN_TOLL_FREE", self.number(None), b.to_owned())
            }
            45..80 => {
                let destination = match self.below(10) {
                    0..6 => self.number(Some(&location)),
                    _ => self.number(None),
                };
                (if roll < 70 { "LEG_KIND_DIAL_OUT" } else { "LEG_KIND_CALL_ME_AT" }, destination, String::new())
            }
            _ => ("LEG_KIND_VOIP", String::new(), String::new()),
        };
        let seconds: u64 = match self.below(20) {
            0 => 0,
            1..4 => 1 + self.below(59),
            4..19 => 60 + self.below(1740),
            _ => 1800 + self.below(5400),
        };
        let cause = if seconds == 0 { "DISCONNECT_CAUSE_NO_ANSWER" } else { "DISCONNECT_CAUSE_NORMAL" };
        let leg = format!("leg-{i}");
        let at = |offset: u64| tollgate_proto::Timestamp { seconds: start + offset as i64, nanos: 0 }.to_string();
        let head = |event: &str, offset: u64| {
            format!(
                r#""eventId":"{leg}-{event}","tenantId":"{tenant}","conferenceId":"conf-{}","callId":"call-{leg}","legId":"{leg}","organizerId":"{organizer}","occurredAt":"{}""#,
                i / 4,
                at(offset)
            )
        };
        let mut lines = vec![format!(
            r#"{{"callLeg":{{{},"started":{{"kind":"{kind}","bridgeNumber":"{bridge}","remoteNumber":"{number}"}}}}}}"#,
            head("s", 0)
        )];
        let mut offset = 900;
        while offset < seconds {
            lines.push(format!(
                r#"{{"callLeg":{{{},"interim":{{"elapsedSeconds":{offset}}}}}}}"#,
                head(&format!("i{offset}"), offset)
            ));
            offset += 900;
        }
        let malformed = self.below(200) == 0;
        let mut raw: Vec<Keyed> = Vec::new();
        if malformed {
            self.malformed += 1;
            match self.below(4) {
                0 => raw.push(Keyed { topic: self.topics[TopicKind::CallLegs].clone(), key: tenant.clone(), value: b"\x08\xff\xff garbage".to_vec() }),
                1 => lines.push(format!(
                    r#"{{"callLeg":{{"eventId":"{leg}-x","tenantId":"initrode","legId":"{leg}","organizerId":"nobody","occurredAt":"{}","interim":{{"elapsedSeconds":1}}}}}}"#,
                    at(1)
                )),
                2 => lines.push(format!(
                    r#"{{"callLeg":{{{},"started":{{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"+12"}}}}}}"#,
                    head("bad", 1).replace(&format!(r#""legId":"{leg}""#), &format!(r#""legId":"{leg}-bad""#))
                )),
                _ => lines.push(format!(
                    r#"{{"creditCommand":{{"commandId":"{leg}-chf","tenantId":"{tenant}","occurredAt":"{}","fund":{{"lotId":"{leg}-chf","amount":"10.00","currency":"CHF","purchasedAt":"{}"}}}}}}"#,
                    at(1),
                    at(1)
                )),
            }
        }
        lines.push(format!(
            r#"{{"callLeg":{{{},"ended":{{"connectedSeconds":{seconds},"cause":"{cause}"}}}}}}"#,
            head("e", seconds)
        ));
        if kind != "LEG_KIND_VOIP" {
            self.pstn_legs += 1;
        }
        let mut out = raw;
        for line in lines {
            if let Ok(record) = serde_json::from_str::<v1::InputRecord>(&line) {
                out.extend(publish::input(&self.topics, &record));
            }
        }
        self.events += out.len() as u64;
        out
    }
}
