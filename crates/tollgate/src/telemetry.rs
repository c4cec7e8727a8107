//! Process-wide telemetry: the tracing subscriber and the Prometheus exporter. Only the binary
//! installs them; libraries only emit.

use std::net::SocketAddr;

use anyhow::Context;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;

/// Seconds: from a fast in-memory batch to a slow transaction commit.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Partition tasks refresh their tenants' balance gauges every
/// `tollgate_worker::telemetry::GAUGE_REFRESH`; a gauge idle for longer was given away.
const GAUGE_IDLE: Duration = Duration::from_secs(120);

/// Installs the log subscriber (to stderr) with an env-filter directive such as `info`.
pub fn init_logs(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: container logs and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Serves `/metrics` on `listen` (no-op when empty). Needs to be called inside a Tokio runtime.
pub fn serve_metrics(listen: &str) -> anyhow::Result<Option<SocketAddr>> {
    if listen.trim().is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().with_context(|| format!("invalid metrics address {listen:?}"))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Real histograms (with _bucket series), so histogram_quantile() works across workers.
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
        .context("invalid histogram buckets")?
        // A worker that gave a tenant's partition away stops refreshing its balance gauge;
        // dropping idle gauges keeps a stale balance from shadowing the new owner's.
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install()
        .with_context(|| format!("failed to serve metrics on {addr}"))?;
    tollgate_worker::telemetry::describe();
    Ok(Some(addr))
}
