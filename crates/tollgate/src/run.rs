//! `tollgate run`: one worker of the rating consumer group.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tollgate_worker::{Cancel, Worker};

use crate::config::{Config, KafkaFlags, RunFlags};
use crate::telemetry;

/// Arguments of `tollgate run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    #[command(flatten)]
    run: RunFlags,
}

/// How long a graceful shutdown may take before the process exits anyway: inside the 30 s
/// Kubernetes gives a pod by default. Nothing is lost by exiting early: a batch's state and
/// offsets count only once its transaction committed, and the next owner takes it from there.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Runs a worker until SIGTERM or SIGINT, then shuts down gracefully: stop fetching, finish
/// and commit the batches in flight, flush, leave the group; exits non-zero if the worker
/// stopped on its own (a fatal error, a partition halted).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &args.run)?;
    let secrets = tollgate_worker::secret::values(&config.worker.librdkafka);
    telemetry::init_logs_redacting(&config.telemetry.log, config.telemetry.log_format, secrets);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let _guard = runtime.enter();
    // Listening before anything slow: a SIGTERM while the worker starts (a rollout, a
    // rebalance storm) is a clean stop, not a death by signal.
    let stop = Arc::new(Cancel::default());
    runtime.spawn(Signals::listen()?.stop_on_first(Arc::clone(&stop)));
    // The recorder first: the worker exports its partition count (zero) as it is made.
    let metrics = telemetry::install_metrics()?;
    let worker = Worker::new(config.worker).map_err(crate::config::invalid_worker)?;
    let readiness = vec![Arc::clone(worker.readiness())];
    let telemetry = &config.telemetry;
    let tenants = vec![worker.tenant_api()];
    if let Some(served) =
        telemetry::serve(&telemetry.metrics_listen, &telemetry.advertised_address, metrics, readiness, tenants)?
    {
        tracing::info!(addr = %served.addr, advertised = %served.advertised, "serving /metrics, /health, /ready and /v1/tenants");
        worker.advertise(&served.advertised);
    }
    worker.run(&stop).context("worker failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The signal that asked a command to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }

    /// 128 and the signal's number, as a shell reports a command the signal ended.
    pub(crate) const fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }
}

/// SIGINT and SIGTERM, listened for from the moment this is made (inside a tokio runtime).
/// The demo listens with it too.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// A worker that could not hear SIGTERM could not be stopped gracefully: it does not start.
    pub(crate) fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM, and which.
    pub(crate) async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
        }
    }

    /// Cancels `stop` on the first signal; a second one, or a shutdown that outlives the
    /// grace period, ends the process.
    async fn stop_on_first(mut self, stop: Arc<Cancel>) {
        self.next().await;
        tracing::info!("shutdown requested");
        stop.cancel();
        tokio::select! {
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::error!(grace_s = SHUTDOWN_GRACE.as_secs(), "graceful shutdown took too long: exiting");
            }
            _ = self.next() => tracing::warn!("second signal: exiting now"),
        }
        std::process::exit(2);
    }
}
