//! Process-wide telemetry: the tracing subscriber and the Prometheus recorder. Only the binary
//! installs them; libraries only emit. The metrics port itself is served by [`crate::http`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tollgate_worker::Readiness;
use tollgate_worker::view::TenantApi;

use crate::config::LogFormat;
use crate::{http, redact};

/// Seconds: from a fast in-memory batch to a slow transaction commit.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Partition tasks refresh their tenants' balance gauges every
/// `tollgate_worker::telemetry::GAUGE_REFRESH`; a gauge idle for longer was given away, and
/// the exporter stops exporting it after this long.
pub const GAUGE_IDLE: Duration = Duration::from_secs(120);

/// How often histograms are drained into their buckets and new descriptions published (what
/// the exporter's own listener would do in the background).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the log subscriber (to stderr) with an env-filter directive such as `info`, as
/// plain text or one JSON object per line.
pub fn init_logs(filter: &str, format: LogFormat) {
    init_logs_redacting(filter, format, Vec::new());
}

/// [`init_logs`], with `secrets` (e.g. `tollgate_worker::secret::values`) replaced by
/// `[redacted]` in every log line (librdkafka's, forwarded through the `log` crate, included)
/// and in panic messages.
pub fn init_logs_redacting(filter: &str, format: LogFormat, secrets: Vec<String>) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    redact::panic_hook(secrets.clone());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(redact::Stderr::new(secrets));
    let _ = match format {
        // Colour only for a person at a terminal: container logs and files get plain text.
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        // Fields at the top level, next to timestamp, level, target and message.
        LogFormat::Json => builder.with_ansi(false).json().flatten_event(true).try_init(),
    };
}

/// Installs the process's metrics recorder, with real histograms and idle gauges dropped, and
/// describes tollgate's metrics. Needs to be called inside a Tokio runtime (for the upkeep).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        // Real histograms (with _bucket series), so histogram_quantile() works across workers.
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
        .context("invalid histogram buckets")?
        // A worker that gave a tenant's partition away stops refreshing its balance gauge;
        // dropping idle gauges keeps a stale balance from shadowing the new owner's.
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tollgate_worker::telemetry::describe();
    Ok(handle)
}

/// Where the metrics port listens, and the address announced to the other workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The address bound.
    pub addr: SocketAddr,
    /// `advertised_address`, or the address bound when that is empty.
    pub advertised: String,
}

/// Serves `/metrics`, `/health`, `/ready` (for `workers`) and the tenant API (for `tenants`)
/// on `listen`; no-op when empty. Needs to be called inside a Tokio runtime.
pub fn serve(
    listen: &str,
    advertised: &str,
    metrics: PrometheusHandle,
    workers: Vec<Arc<Readiness>>,
    tenants: Vec<Arc<TenantApi>>,
) -> anyhow::Result<Option<Served>> {
    if listen.trim().is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().with_context(|| format!("invalid metrics address {listen:?}"))?;
    let advertised = Some(advertised.trim().to_owned()).filter(|a| !a.is_empty());
    let endpoints = http::Endpoints { metrics, workers, tenants, advertised };
    let (addr, advertised) =
        http::serve(addr, endpoints).with_context(|| format!("failed to serve metrics on {addr}"))?;
    Ok(Some(Served { addr, advertised }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A live owner refreshes its balance gauges well within the idle timeout, and a stale one
    /// goes within the 2 minutes that deploy/README.md and alerts.yml promise.
    #[test]
    fn balance_gauges_of_a_live_owner_are_never_dropped_and_stale_ones_go_within_two_minutes() {
        assert!(super::GAUGE_IDLE >= 3 * tollgate_worker::telemetry::GAUGE_REFRESH);
        assert_eq!(super::GAUGE_IDLE, Duration::from_secs(120));
    }
}
