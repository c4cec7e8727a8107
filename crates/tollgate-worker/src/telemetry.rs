//! Telemetry: one function per event, logging and counting together. Metric names follow
//! `tollgate_<name>_<unit>[_total]`; labels are bounded (topic kind, outcome, code, currency,
//! the worker's name within its process) except the per-tenant balance gauge, which is the
//! product's alerting contract: one series per tenant and currency, owned by whichever worker
//! owns the tenant's partition.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use tollgate_core::{Currency, Money, TenantId};

/// How often a partition task re-sets its tenants' balance gauges while idle, so that an
/// exporter can drop the gauges of tenants this worker no longer owns.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Error codes a dead letter can carry (registered at zero so alerts see the first one).
const DEAD_LETTER_CODES: [&str; 14] = [
    "decode",
    "invalid",
    "invalid_number",
    "key_mismatch",
    "wrong_partition",
    "unknown_tenant",
    "unknown_organizer",
    "currency_mismatch",
    "credits_disabled",
    "duplicate_conflict",
    "leg_already_started",
    "leg_already_ended",
    "end_before_start",
    "too_late",
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
    describe_gauge!(
        "tollgate_partition_stalled",
        "1 while a partition's batch keeps failing or its task is fenced or failed, by partition."
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
pub fn batch_committed(partition: i32, guarantee: &'static str, records: usize, took: Duration) {
    tracing::debug!(partition, records, took_ms = took.as_millis() as u64, "batch committed");
    counter!("tollgate_batches_total", "guarantee" => guarantee).increment(1);
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

/// Whether a partition is stalled (its batch keeps failing, or its task is fenced or failed).
pub fn partition_stalled(partition: i32, stalled: bool) {
    gauge!("tollgate_partition_stalled", "partition" => partition.to_string()).set(if stalled { 1.0 } else { 0.0 });
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

/// A record went to the dead-letter topic.
pub fn dead_letter(topic: &str, partition: i32, offset: i64, code: &'static str, message: &str) {
    tracing::debug!(topic, partition, offset, code, message, "record sent to the dead-letter topic");
    counter!("tollgate_dead_letters_total", "code" => code).increment(1);
}

/// A tenant's balance after a batch.
pub fn balance(tenant: &TenantId, currency: Currency, balance: Money) {
    let value: f64 = balance.amount().try_into().unwrap_or(f64::NAN);
    gauge!("tollgate_credit_balance", "tenant" => tenant.to_string(), "currency" => currency.to_string()).set(value);
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
