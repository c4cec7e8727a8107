//! `tollgate demo`: the main job on an embedded default. Starts an in-process Kafka
//! (librdkafka's mock cluster), creates the topics, loads the sample reference data, runs a
//! consumer group of workers and a traffic generator, shows progress, serves `/metrics`, and
//! ends with a summary that reconciles rated usage against the workers' state.
//!
//! `traffic` generates the inputs, `observe` reads the outputs, `summary` writes the closing
//! figures; this module wires them to the workers and the progress bars.

mod observe;
mod summary;
mod traffic;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate_proto::v1;
use tollgate_worker::client::{self, EmbeddedKafka};
use tollgate_worker::publish::{self, Publisher};
use tollgate_worker::{Cancel, ProcessingGuarantee, Worker, WorkerConfig, topics};

use crate::out::Stdout;
use crate::{config, telemetry};
use observe::Observer;
use traffic::Traffic;

/// The sample reference data (5 tenants in 5 countries, 17 users, 4 rate cards).
const REFERENCE: &str = include_str!("../../../../examples/reference.json");

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
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Partitions of the inputs, outputs and changelog.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// `at_least_once` or `exactly_once` (the mock cluster does not store transactional
    /// offsets, so exactly-once here shows the transactional path, not its guarantee).
    #[arg(long, default_value_t = ProcessingGuarantee::AtLeastOnce)]
    processing_guarantee: ProcessingGuarantee,
    /// Where `/metrics`, `/health`, `/ready` and the tenant API (`/v1/tenants/{tenant}`)
    /// are served while the demo runs (empty: not served).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// No progress bars (for logs and CI).
    #[arg(long)]
    quiet: bool,
}

/// The first SIGINT or SIGTERM ends the traffic (the flag returned is set): the legs sent
/// are rated and summed up as after a run to its end. A second one ends the process.
fn interrupt_stops_the_traffic(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut signals = crate::run::Signals::listen()?;
    let flag = Arc::clone(&interrupted);
    runtime.spawn(async move {
        signals.next().await;
        flag.store(true, Ordering::Relaxed);
        eprintln!(
            "tollgate demo: interrupted: no more legs; the ones sent are rated, then summed up (again to exit now)"
        );
        signals.next().await;
        std::process::exit(130);
    });
    Ok(interrupted)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let logs = config::demo_logs()?;
    telemetry::init_logs(&logs.log, logs.log_format);
    let guarantee = args.processing_guarantee;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let _guard = runtime.enter();
    let interrupted = interrupt_stops_the_traffic(&runtime)?;
    // Installed whether or not it is served: the summary reads its unpriced-legs counter.
    let metrics_handle = telemetry::install_metrics()?;

    let cluster = EmbeddedKafka::start().context("failed to start the embedded Kafka")?;
    let config = WorkerConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        group_id: "tollgate-demo".into(),
        processing_guarantee: guarantee,
        ..WorkerConfig::default()
    };
    cluster.create_topics(&topics::specs(&config, args.partitions))?;
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
    let tenants = workers.iter().map(Worker::tenant_api).collect();
    let served = match telemetry::serve(&args.metrics_listen, "", metrics_handle.clone(), readiness, tenants) {
        Ok(served) => served,
        Err(error) => {
            eprintln!("tollgate demo: /metrics not served: {error:#}");
            None
        }
    };
    if let Some(served) = &served {
        for worker in &workers {
            worker.advertise(&served.advertised);
        }
    }
    writeln!(
        Stdout,
        "tollgate demo: embedded Kafka at {}, {} partitions, {} workers, {}{}",
        config.bootstrap_servers,
        args.partitions,
        args.workers,
        args.processing_guarantee,
        served.as_ref().map(|s| format!(", metrics on http://{}/metrics (and /ready)", s.addr)).unwrap_or_default()
    )?;
    if let Some(served) = &served {
        let tenant = reference.tenants.first().map_or("contoso", |t| t.tenant_id.as_str());
        writeln!(
            Stdout,
            "tenant API: http://{0}/v1/tenants/{{tenant}} (docs/openapi.yaml), e.g. curl -s http://{0}/v1/tenants/{tenant} or tollgate balance {tenant} --api http://{0}",
            served.addr
        )?;
    }

    let stop = Arc::new(Cancel::default());
    let workers: Vec<JoinHandle<anyhow::Result<()>>> = workers
        .into_iter()
        .map(|worker| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || worker.run(&stop).context("worker failed"))
        })
        .collect();

    let mut observer = Observer::start(&config)?;
    let mut traffic = Traffic::new(&reference, config.topics.clone(), args.seed);
    // Credit commands and call legs are separate topics: fund first and wait for it.
    let funds = traffic.funds();
    for keyed in &funds {
        publisher.send(keyed)?;
    }
    publisher.flush()?;
    // The workers join the group and restore first (a few seconds): said, not silent.
    let starting = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    starting.set_message("starting: the workers join the consumer group, then rate the funding");
    starting.enable_steady_tick(Duration::from_millis(100));
    observer
        .wait_until(Duration::from_secs(60), &starting, |s| s.funded >= funds.len() as u64)
        .context("funding was not processed")?;
    starting.finish_and_clear();

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
    let more = |legs: u64| {
        !interrupted.load(Ordering::Relaxed)
            && match args.legs {
                Some(total) => legs < total,
                None => Instant::now() < deadline,
            }
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
        // Observing the outputs is the pause that paces the generator.
        observer.observe_for(Duration::from_millis(20));
        let s = observer.stats();
        rated_bar.set_position(s.usages.len() as u64 + s.voip);
        rated_bar.set_message(format!("{} dead letters", s.dead_letters.values().sum::<u64>()));
    }
    publisher.flush()?;
    published_bar.set_length(legs);
    published_bar.set_position(legs);
    rated_bar.set_length(legs);
    let expected_usages = traffic.pstn_legs;
    let expected_dead = traffic.malformed;
    let done = observer
        .wait_until(Duration::from_secs(120), &rated_bar, |s| {
            s.usages.len() as u64 >= expected_usages && s.dead_letters.values().sum::<u64>() >= expected_dead
        })
        .with_context(|| {
            let s = observer.stats();
            format!(
                "rated {} of {expected_usages} PSTN legs, {} of {expected_dead} dead letters",
                s.usages.len(),
                s.dead_letters.values().sum::<u64>()
            )
        });
    let elapsed = started.elapsed();
    published_bar.finish();
    rated_bar.finish();
    stop.cancel();
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    // The workers stopped: every output is written. Read all of them, so that the summary
    // counts everything (decisions and credit events of the last batches too).
    let drained = done.and_then(|()| observer.drain(Duration::from_secs(60)));
    drained.context("not every leg was rated in time")?;
    let stats = observer.stats();

    let states: BTreeMap<String, _> = client::read_states(&config, Duration::from_secs(60))
        .context("cannot read the changelog")?
        .into_iter()
        .collect();
    let events = traffic.events;
    writeln!(Stdout)?;
    writeln!(
        Stdout,
        "{legs} legs ({events} input events) in {:.1} s: {:.0} events/s end to end",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(0.001),
    )?;
    let unpriced_metric = summary::counter_value(&metrics_handle.render(), "tollgate_unpriced_legs_total");
    let (summary, adds_up) = summary::summary(&args, stats, &states, &traffic, legs, unpriced_metric);
    write!(Stdout, "{summary}")?;
    Ok(if adds_up { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
