//! Telemetry: one function per event, logging and counting together. Metric names follow
//! `tollgate_<name>_<unit>[_total]`; labels are bounded (topic kind, outcome, code, currency,
//! the worker's name within its process) except the per-tenant balance gauge, which is the
//! product's alerting contract: one series per tenant and currency, owned by whichever worker
//! owns the tenant's partition.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use tollgate_core::{Currency, Money, Tenant};

/// How often a partition task re-sets its tenants' balance gauges while idle, so that an
/// exporter can drop the gauges of tenants this worker no longer owns: the binary's exporter
/// drops a gauge left unset for 120 s (`GAUGE_IDLE`), so a previous owner's balance lingers
/// for at most that long after a hand-over.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Error codes a dead letter can carry (registered at zero so alerts see the first one).
const DEAD_LETTER_CODES: [&str; 20] = [
    "decode",
    "too_large",
    "too_long",
    "too_many",
    "invalid",
    "invalid_number",
    "key_mismatch",
    "wrong_partition",
    "unknown_tenant",
    "unknown_organizer",
    "currency_mismatch",
    "currency_changed",
    "credits_disabled",
    "duplicate_conflict",
    "leg_already_started",
    "leg_already_ended",
    "end_before_start",
    "too_late",
    "future_dated",
    crate::partition::RATING_PANICKED,
];

/// Registers descriptions, so `/metrics` explains itself, and the counters alerts rely on at
/// zero (a counter that appears at its first increment hides that increment from `rate()`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("tollgate_input_records_total", "Input records processed, by topic and outcome.");
    describe_counter!("tollgate_legs_total", "Rated or blocked legs, by call type and outcome.");
    describe_counter!(
        "tollgate_unpriced_legs_total",
        "Legs no rate matched (usage flag unpriced), whatever their outcome: rated free, or blocked."
    );
    describe_counter!("tollgate_credit_events_total", "Credit events emitted, by kind.");
    describe_counter!("tollgate_dead_letters_total", "Records sent to the dead-letter topic, by error code.");
    describe_counter!("tollgate_batches_total", "Committed batches, by processing guarantee.");
    describe_counter!(
        "tollgate_changelog_records_total",
        "Records committed batches wrote to the state changelog (tenant records, open legs, parked ends, window segments, tombstones)."
    );
    describe_counter!("tollgate_batch_retries_total", "Batches rolled back and retried, by reason.");
    describe_counter!("tollgate_transaction_aborts_total", "Transactions aborted (the batch is rated again).");
    describe_counter!(
        "tollgate_transaction_commit_retries_total",
        "Transaction commits resumed after a retriable failure (e.g. a timeout while the broker is away)."
    );
    describe_counter!(
        "tollgate_producer_fenced_total",
        "Partition tasks fenced by another worker that took their transactional id (this worker was a zombie)."
    );
    describe_counter!("tollgate_partition_failures_total", "Partition tasks stopped by a fatal error.");
    describe_counter!(
        "tollgate_kafka_access_failures_total",
        "Times a worker stopped because Kafka refused it, by cause: authentication, authorization, tls."
    );
    describe_gauge!(
        "tollgate_partition_stalled",
        "1 while a partition's batch keeps failing, its task is fenced or failed, or its recorded batch waits for records that do not come, by partition."
    );
    describe_counter!(
        "tollgate_inputs_held_total",
        "Times a partition's recorded batch, waiting for records of one input, paused fetching the other input it no longer needs, by partition and topic."
    );
    describe_counter!(
        "tollgate_backpressure_pauses_total",
        "Times a partition's fetching was paused because its task fell four batches behind, by partition."
    );
    describe_counter!(
        "tollgate_catch_up_given_up_total",
        "Times a catching-up partition stopped waiting for an input that was behind and rated in arrival order, by partition."
    );
    describe_counter!(
        "tollgate_reference_versions_unknown_total",
        "Reference lookups of a batch whose version as of the batch's recorded position was no longer known here (the earliest known was used), by partition."
    );
    describe_gauge!("tollgate_credit_balance", "Prepaid credit balance per tenant (alerting contract).");
    describe_gauge!(
        "tollgate_assigned_partitions",
        "Input partitions a worker owns, by worker (its name within the process: w1, w2, ...)."
    );
    describe_gauge!("tollgate_build_info", "Always 1; the version of the running tollgate as a label.");
    describe_histogram!("tollgate_batch_duration_seconds", Unit::Seconds, "Time to rate and commit one batch.");
    describe_histogram!("tollgate_restore_duration_seconds", Unit::Seconds, "Time to restore one partition's state.");
    describe_counter!(
        "tollgate_reference_records_total",
        "Reference records applied or refused, by topic and outcome."
    );
    for code in DEAD_LETTER_CODES {
        counter!("tollgate_dead_letters_total", "code" => code).absolute(0);
    }
    counter!("tollgate_unpriced_legs_total").absolute(0);
    counter!("tollgate_batch_retries_total", "reason" => "retriable").absolute(0);
    counter!("tollgate_transaction_aborts_total").absolute(0);
    counter!("tollgate_transaction_commit_retries_total").absolute(0);
    counter!("tollgate_producer_fenced_total").absolute(0);
    counter!("tollgate_partition_failures_total").absolute(0);
    metrics_process::Collector::default().describe();
    scraped();
}

/// `/metrics` is about to be rendered: sets the gauges read from the process itself, the
/// standard `process_*` ones (CPU seconds, resident memory, open file descriptors, start time,
/// threads) and `tollgate_build_info`. Set at every scrape, they are never idle.
pub fn scraped() {
    metrics_process::Collector::default().collect();
    gauge!("tollgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// A batch was committed.
pub fn batch_committed(partition: i32, guarantee: &'static str, records: usize, changelog: usize, took: Duration) {
    tracing::debug!(partition, records, changelog, took_ms = took.as_millis() as u64, "batch committed");
    counter!("tollgate_batches_total", "guarantee" => guarantee).increment(1);
    counter!("tollgate_changelog_records_total").increment(changelog as u64);
    histogram!("tollgate_batch_duration_seconds").record(took.as_secs_f64());
}

/// A batch was rolled back and will be retried.
pub fn batch_retried(partition: i32, reason: &'static str, error: &dyn std::fmt::Display, attempt: u32) {
    tracing::warn!(partition, reason, attempt, %error, "batch rolled back, retrying");
    counter!("tollgate_batch_retries_total", "reason" => reason).increment(1);
}

/// A transaction was aborted; `purged` is the first delivery error its records got (the
/// purge itself reports every queued record as failed: one line per abort, not per record).
pub fn transaction_aborted(partition: i32, purged: Option<rdkafka::types::RDKafkaErrorCode>) {
    tracing::info!(partition, ?purged, "transaction aborted");
    counter!("tollgate_transaction_aborts_total").increment(1);
}

/// A transaction commit failed with a retriable error and is resumed.
pub fn commit_retried(partition: i32, attempt: u32, error: &dyn std::fmt::Display) {
    tracing::warn!(partition, attempt, %error, "transaction commit did not complete, resuming it");
    counter!("tollgate_transaction_commit_retries_total").increment(1);
}

/// The partition's producer was fenced: another worker owns the partition now.
pub fn fenced(partition: i32, error: &dyn std::fmt::Display) {
    tracing::warn!(partition, %error, "fenced by the partition's new owner: rating nothing more here");
    counter!("tollgate_producer_fenced_total").increment(1);
    partition_stalled(partition, true);
}

/// A partition task stopped on a fatal error.
pub fn task_failed(partition: i32, error: &dyn std::fmt::Display) {
    tracing::error!(partition, %error, "partition task failed");
    counter!("tollgate_partition_failures_total").increment(1);
    partition_stalled(partition, true);
}

/// The worker stops because Kafka refused it (credentials, an ACL, a certificate): retrying
/// would not help, and the exit code names the cause.
pub fn access_denied(cause: crate::access::Cause, error: &dyn std::fmt::Display) {
    tracing::error!(cause = cause.label(), %error, "kafka refused the worker: stopping");
    counter!("tollgate_kafka_access_failures_total", "cause" => cause.label()).increment(1);
}

/// Whether a partition is stalled (its batch keeps failing, or its task is fenced or failed).
pub fn partition_stalled(partition: i32, stalled: bool) {
    gauge!("tollgate_partition_stalled", "partition" => partition.to_string()).set(if stalled { 1.0 } else { 0.0 });
}

/// A recorded batch of `partition` waits for records of an input: fetching `topics`, which
/// it no longer needs, is paused until it has them.
pub fn inputs_held(partition: i32, topics: &[String]) {
    for topic in topics {
        tracing::info!(partition, topic, "recorded batch waits: input it no longer needs paused meanwhile");
        counter!("tollgate_inputs_held_total", "partition" => partition.to_string(), "topic" => topic.clone())
            .increment(1);
    }
}

/// A partition's task fell behind: its fetching is paused until the task catches up.
pub fn backpressure_paused(partition: i32) {
    tracing::debug!(partition, "task fell behind: partition paused");
    counter!("tollgate_backpressure_pauses_total", "partition" => partition.to_string()).increment(1);
}

/// A catching-up partition waited `catch_up_wait_ms` for inputs still behind: it rates in
/// arrival order from now on.
pub fn catch_up_given_up(partition: i32, behind: &[String]) {
    tracing::warn!(
        partition,
        ?behind,
        "inputs still behind did not deliver in time: rating in arrival order, not record time"
    );
    counter!("tollgate_catch_up_given_up_total", "partition" => partition.to_string()).increment(1);
}

/// A committed batch's reference lookups found `count` times that the version as of its pin was no
/// longer known (dropped after a day, or compacted away before this worker read it).
pub fn reference_versions_unknown(partition: i32, count: u64) {
    tracing::warn!(
        partition,
        lookups = count,
        "reference data as of the batch's recorded position is no longer known: rated with the earliest version known"
    );
    counter!("tollgate_reference_versions_unknown_total", "partition" => partition.to_string()).increment(count);
}

/// Input records of a batch, by topic kind and outcome.
pub fn inputs(topic: &'static str, outcome: &'static str, count: u64) {
    if count > 0 {
        counter!("tollgate_input_records_total", "topic" => topic, "outcome" => outcome).increment(count);
    }
}

/// Legs of a batch, by call type and outcome.
pub fn legs(call_type: &'static str, outcome: &'static str, count: u64) {
    if count > 0 {
        counter!("tollgate_legs_total", "call_type" => call_type, "outcome" => outcome).increment(count);
    }
}

/// Unpriced legs of a batch: usage records flagged `unpriced` (no rate matched the leg's number
/// or the tenant's card is in another currency), rated free or blocked alike. `tollgate demo`
/// counts the same records.
pub fn unpriced(count: u64) {
    if count > 0 {
        counter!("tollgate_unpriced_legs_total").increment(count);
    }
}

/// Credit events of a batch by kind.
pub fn credit_events(kind: &'static str, count: u64) {
    if count > 0 {
        counter!("tollgate_credit_events_total", "kind" => kind).increment(count);
    }
}

/// A record is sent to the dead-letter topic (logged at each attempt at its batch; counted
/// by [`dead_letters`] once the batch is committed).
pub fn dead_letter(topic: &str, partition: i32, offset: i64, code: &'static str, message: &str) {
    tracing::debug!(topic, partition, offset, code, message, "record sent to the dead-letter topic");
}

/// Dead letters of a committed batch by code: a batch rated again after an abort counts its
/// dead letters once, not once per attempt.
pub fn dead_letters(code: &'static str, count: u64) {
    if count > 0 {
        counter!("tollgate_dead_letters_total", "code" => code).increment(count);
    }
}

/// A tenant's balance, after a batch or in the refresh: `reference` is its reference record
/// (`None` when the reference data no longer has it), `held` the currency its state holds
/// money in. Not for a tenant without credits whose balance is zero, which it always is (no
/// funding is taken): at zero the balance rules would call it depleted for good, one critical
/// alert per such tenant. Its debt (a pool leg past the pool) is news, and is exported. So is
/// the money of a tenant the reference data lost (deleted by mistake, or a record this release
/// refuses) while its state still holds a balance or a debt: its series would otherwise go,
/// and its depleted alert resolve, with the money still there.
pub fn balance(tenant: &str, reference: Option<&Tenant>, held: Option<Currency>, balance: Money) {
    let Some(currency) = exported_balance(reference, held, balance) else {
        return;
    };
    let value: f64 = balance.amount().try_into().unwrap_or(f64::NAN);
    gauge!("tollgate_credit_balance", "tenant" => tenant.to_owned(), "currency" => currency.to_string()).set(value);
}

/// The currency `tenant`'s balance is exported in ([`balance`]), or `None` when it is not.
fn exported_balance(reference: Option<&Tenant>, held: Option<Currency>, balance: Money) -> Option<Currency> {
    match reference {
        Some(t) if t.credits_enabled || balance != Money::ZERO => Some(held.unwrap_or(t.currency)),
        Some(_) => None,
        None if balance != Money::ZERO => held,
        None => None,
    }
}

/// A partition's state was restored.
pub fn restored(partition: i32, tenants: usize, records: u64, took: Duration) {
    tracing::info!(partition, tenants, records, took_ms = took.as_millis() as u64, "partition state restored");
    histogram!("tollgate_restore_duration_seconds").record(took.as_secs_f64());
}

/// The set of partitions owned by the worker named `worker` changed (or is refreshed).
pub fn assigned_partitions(worker: &str, count: usize) {
    gauge!("tollgate_assigned_partitions", "worker" => worker.to_owned()).set(count as f64);
}

/// A reference record was applied or refused.
pub fn reference_record(topic: &'static str, outcome: &'static str) {
    counter!("tollgate_reference_records_total", "topic" => topic, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// A tenant without credits, always at zero, exports no balance (the depleted alert would
    /// fire for it for good); in debt it does. A tenant with credits exports every balance.
    #[test]
    fn a_tenant_without_credits_exports_its_balance_only_in_debt() {
        use tollgate_core::{Catalog as _, Reference};
        use tollgate_proto::v1;
        let with_credits = r#""tenantId": "globex", "currency": "USD", "creditsEnabled": true"#;
        let data = crate::testing::REFERENCE.replace(with_credits, r#""tenantId": "globex", "currency": "USD""#);
        assert_ne!(data, crate::testing::REFERENCE);
        let reference = Reference::try_from(serde_json::from_str::<v1::ReferenceData>(&data).unwrap()).unwrap();
        let (acme, globex) = (reference.tenant("acme").unwrap(), reference.tenant("globex").unwrap());
        assert!(acme.credits_enabled && !globex.credits_enabled);
        let m = |s: &str| s.parse::<super::Money>().unwrap();
        let exported = |t, b| super::exported_balance(Some(t), None, m(b)).is_some();
        assert_eq!(
            ["0", "-1.25", "3.00"].map(|b| (exported(acme, b), exported(globex, b))),
            [(true, false), (true, true), (true, true)]
        );
    }

    /// A tenant the reference data lost while its state holds money or a debt keeps its
    /// series, in the currency the money is held in; at zero, or never having held money, it
    /// has none. A known tenant's series is in the held currency too.
    #[test]
    fn a_tenant_gone_from_the_reference_data_exports_the_money_it_still_holds() {
        let m = |s: &str| s.parse::<super::Money>().unwrap();
        let (usd, eur) = (super::Currency::from_code("USD").unwrap(), super::Currency::from_code("EUR").unwrap());
        assert_eq!(super::exported_balance(None, Some(usd), m("-40.00")), Some(usd));
        assert_eq!(super::exported_balance(None, Some(usd), m("12.50")), Some(usd));
        assert_eq!(super::exported_balance(None, Some(usd), m("0")), None);
        assert_eq!(super::exported_balance(None, None, m("0")), None);
        let acme = tollgate_core::Tenant::new(tollgate_core::TenantId::new("acme").unwrap(), usd, "usd");
        assert_eq!(super::exported_balance(Some(&acme), Some(eur), m("1.00")), Some(eur));
        assert_eq!(super::exported_balance(Some(&acme), None, m("1.00")), Some(usd));
    }
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    /// Collects the names that are described, and what kind of metric each is.
    #[derive(Debug, Default)]
    struct Described(Mutex<BTreeSet<(String, &'static str)>>);

    impl Described {
        fn add(&self, key: &KeyName, kind: &'static str) {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((key.as_str().to_owned(), kind));
        }
    }

    impl Recorder for Described {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(&key, "counter");
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(&key, "gauge");
        }
        fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(&key, "histogram");
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Every `tollgate_*` and `process_*` name in `text`.
    fn metric_names(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let bytes = text.as_bytes();
        for prefix in ["tollgate_", "process_"] {
            for (at, _) in text.match_indices(prefix) {
                let boundary = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
                if !boundary {
                    continue;
                }
                let len =
                    text[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len() - at);
                names.insert(text[at..at + len].to_owned());
            }
        }
        names
    }

    /// The dashboard and the alert rules name only metrics the code describes (a histogram by
    /// its `_bucket`, `_sum` or `_count` series): no panel or rule waits for a series that
    /// never comes.
    #[test]
    fn the_dashboard_and_the_alerts_name_only_metrics_the_workers_export() {
        let described = Described::default();
        metrics::with_local_recorder(&described, super::describe);
        let described = described.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let exported: BTreeSet<String> = described
            .iter()
            .flat_map(|(name, kind)| match *kind {
                "histogram" => vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")],
                _ => vec![name.clone()],
            })
            .collect();
        for standard in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            assert!(exported.contains(standard), "{standard} is not described: {exported:?}");
        }

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/dashboard.json")).expect("dashboard JSON");
        let mut queries = String::new();
        collect_queries(&dashboard, &mut queries);
        let sources = [
            ("deploy/grafana/dashboard.json", queries),
            ("deploy/prometheus/alerts.yml", include_str!("../../../deploy/prometheus/alerts.yml").to_owned()),
            (
                "deploy/prometheus/alerts_test.yml",
                include_str!("../../../deploy/prometheus/alerts_test.yml").to_owned(),
            ),
        ];
        for (file, text) in sources {
            let named = metric_names(&text);
            assert!(!named.is_empty(), "no metric found in {file}");
            let unknown: Vec<&String> = named.difference(&exported).collect();
            assert!(unknown.is_empty(), "{file} names metrics no worker exports: {unknown:?}");
        }
    }

    /// The PromQL of a dashboard: every `expr`, and every variable's `definition` and `query`.
    fn collect_queries(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    match (key.as_str(), field) {
                        ("expr" | "definition" | "query", serde_json::Value::String(text)) => {
                            out.push_str(text);
                            out.push('\n');
                        }
                        _ => collect_queries(field, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| collect_queries(item, out)),
            _ => {}
        }
    }

    #[test]
    fn finds_metric_names_in_promql() {
        let names = metric_names(r#"sum(rate(tollgate_legs_total{job="tollgate"}[5m])) / process_open_fds"#);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["process_open_fds", "tollgate_legs_total"]);
        assert!(metric_names("my_tollgate_x tollgate").is_empty());
    }
}
