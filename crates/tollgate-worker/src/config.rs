//! Typed worker configuration. The binary layers defaults, a TOML file, `TOLLGATE_*`
//! environment variables and flags into this struct; nothing here reads the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::topics::{TopicKind, Topics};

/// Kafka Streams' vocabulary for what a crash may cost. Spelled the same way everywhere (the
/// configuration file, the environment, flags, the metrics label): one [`FromStr`] and one
/// [`Display`](fmt::Display), which serde goes through too.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProcessingGuarantee {
    /// Outputs are acknowledged first; then the changelog writes and input offsets of the
    /// batch commit in one Kafka transaction. A crash may repeat outputs downstream
    /// (identical, with the same ids), never lose them or double a debit.
    #[default]
    AtLeastOnce,
    /// Outputs, changelog writes and input offsets of a batch commit in one Kafka transaction.
    ExactlyOnce,
}

impl ProcessingGuarantee {
    /// The commit interval when `commit_interval_ms` is not set (how long after the previous
    /// batch a batch that starts from idle waits for company): 10 ms at-least-once, 100 ms
    /// exactly-once.
    ///
    /// The wait trades a record's latency at low and moderate rates for fewer transactions.
    /// At-least-once outputs leave before their batch's transaction, which holds only the
    /// changelog, and they wait for the batch to start, so a long wait is latency and little
    /// else: at 300 records/s the median from a leg's end to its usage fell from 65 ms to
    /// 18 ms with 10 ms instead of 100 (docs/BENCHMARKS.md). Exactly-once outputs are in the
    /// transaction: each transaction also writes a commit marker into every output partition it
    /// touched, which every reader of those topics reads past, so it keeps the longer wait.
    pub const fn default_commit_interval_ms(self) -> u64 {
        match self {
            ProcessingGuarantee::AtLeastOnce => 10,
            ProcessingGuarantee::ExactlyOnce => 100,
        }
    }

    /// The configuration spelling, also the metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
        }
    }
}

impl FromStr for ProcessingGuarantee {
    type Err = String;

    /// `at_least_once` or `exactly_once` (`exactly_once_v2`, Kafka Streams' name for the
    /// same, is accepted too).
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
            "exactly_once" | "exactly_once_v2" => Ok(ProcessingGuarantee::ExactlyOnce),
            other => Err(format!("processing guarantee must be at_least_once or exactly_once, got {other:?}")),
        }
    }
}

impl fmt::Display for ProcessingGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Makes serde read and write a type through its one `FromStr` and `Display` (with
/// `#[serde(try_from = "String", into = "String")]` on the type), so that the configuration
/// file, the environment, flags and labels share a single spelling. `FromStr::Err` must be
/// `String`.
#[macro_export]
macro_rules! serde_as_text {
    ($type:ty) => {
        impl TryFrom<String> for $type {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                value.parse()
            }
        }

        impl From<$type> for String {
            fn from(value: $type) -> String {
                value.to_string()
            }
        }
    };
}

serde_as_text!(ProcessingGuarantee);

/// Everything a worker needs to run (`Debug` and `Serialize` redact the secrets among the
/// librdkafka settings: [`crate::secret`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group: every worker of one deployment uses the same id.
    pub group_id: String,
    /// Prefix of transactional ids (`<prefix>-<changelog topic>-<partition>`), in both guarantees.
    pub transactional_id_prefix: String,
    /// At-least-once or exactly-once.
    pub processing_guarantee: ProcessingGuarantee,
    /// Most input records per batch (one transaction per batch).
    pub batch_size: usize,
    /// The commit interval, in milliseconds: a batch that starts from idle waits to fill
    /// until this long after the previous batch left (so a quiet partition commits at most
    /// once per interval, and its first record waits only for what is left of it); under
    /// load a batch is what arrived while the previous one committed, and leaves at once.
    /// Unset, the guarantee's own: see [`ProcessingGuarantee::default_commit_interval_ms`].
    pub commit_interval_ms: Option<u64>,
    /// While a partition catches up on what its inputs held when it was assigned, its batches
    /// follow record time across the two inputs: a batch stops where an input still behind
    /// has no record in hand, and waits for it up to this long, in milliseconds, before it
    /// rates in arrival order (counted in `tollgate_catch_up_given_up_total`). `0` rates in
    /// arrival order from the start.
    pub catch_up_wait_ms: u64,
    /// How long (event time) applied ids and closed legs are remembered, in seconds.
    pub retention_seconds: u32,
    /// How far, in seconds, an input's `occurred_at` may be after its record's Kafka
    /// timestamp. A later one is refused (`future_dated`): rated, it would move its tenant's
    /// newest event time ahead, and every true input after it would be refused as too late.
    /// Less than `retention_seconds`.
    pub max_future_seconds: u32,
    /// Timeout of blocking Kafka calls (metadata, commits, transactions), in milliseconds.
    pub kafka_timeout_ms: u64,
    /// Write the debit trail: one `LedgerMovement` per change of a tenant's balance, to the
    /// `ledger_movements` topic (off by default: it is for auditors, and costs a record per
    /// debit).
    pub ledger_movements: bool,
    /// Largest value of an input or reference record that is decoded, in bytes. A larger
    /// input is dead-lettered (`too_large`) and a larger reference record refused without
    /// being decoded: what one record can cost in memory is bounded by this (see
    /// [`tollgate_proto::limits`]).
    pub max_record_bytes: usize,
    /// Topic names.
    pub topics: Topics,
    /// librdkafka settings passed through to every client (SASL/SSL, tuning). Settings that
    /// correctness depends on are re-asserted after these (see [`crate::kafka`]).
    #[serde(serialize_with = "crate::secret::serialize_redacted")]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "tollgate".into(),
            transactional_id_prefix: "tollgate".into(),
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            batch_size: 5000,
            commit_interval_ms: None,
            catch_up_wait_ms: 5000,
            retention_seconds: 48 * 3600,
            max_future_seconds: 3600,
            kafka_timeout_ms: 10_000,
            ledger_movements: false,
            max_record_bytes: tollgate_proto::limits::DEFAULT_MAX_RECORD_BYTES,
            topics: Topics::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

impl WorkerConfig {
    /// Checks values that would otherwise fail later and less clearly.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |msg: &str| Err(crate::Error::Config(msg.to_owned()));
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers is empty");
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id is empty");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be > 0");
        }
        if self.commit_interval_ms == Some(0) {
            return bad("commit_interval_ms must be > 0");
        }
        if self.retention_seconds < 3600 {
            return bad("retention_seconds must be at least 3600");
        }
        // An input accepted at the limit moves its tenant's newest event time that far ahead:
        // what is left of the window is the lateness still accepted after it.
        if self.max_future_seconds >= self.retention_seconds {
            return bad("max_future_seconds must be less than retention_seconds");
        }
        if self.max_record_bytes == 0 {
            return bad("max_record_bytes must be > 0");
        }
        // librdkafka checks each pass-through setting as it is set: an unknown name or a bad
        // value is refused here, naming the setting, never with the value of one that may
        // hold a secret (a misspelt `sasl.password` holds a password all the same, and
        // librdkafka's own error quotes it).
        for (key, value) in &self.librdkafka {
            if let Err(error) = rdkafka::ClientConfig::new().set(key, value).create_native_config() {
                let description = match error {
                    rdkafka::error::KafkaError::ClientConfig(_, description, ..) => description,
                    other => other.to_string(),
                };
                let unknown = description.starts_with("No such configuration property");
                let description = if (unknown || crate::secret::is_sensitive(key)) && !value.is_empty() {
                    description.replace(value.as_str(), crate::secret::REDACTED)
                } else {
                    description
                };
                return bad(&format!("librdkafka setting {key}: {description}"));
            }
        }
        Ok(())
    }

    /// [`WorkerConfig::validate`], and what only a worker needs (not `produce`, `report` or
    /// the other commands, which take the same configuration).
    pub fn validate_for_worker(&self) -> Result<(), crate::Error> {
        self.validate()?;
        let bad = |msg: &str| Err(crate::Error::Config(msg.to_owned()));
        // What librdkafka checks only together, when a partition task creates its
        // transactional producers: refused here, at start, not by every partition's start
        // once the worker holds partitions (the fleet would exit at each rebalance).
        let txn = crate::kafka::transactional_producer(self, "validate");
        let ms = |key: &str| txn.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let transaction_timeout = ms("transaction.timeout.ms").unwrap_or(60_000);
        for key in ["message.timeout.ms", "delivery.timeout.ms"] {
            if ms(key).is_some_and(|t| t > transaction_timeout) {
                return bad(&format!(
                    "librdkafka setting {key} must be at most transaction.timeout.ms ({transaction_timeout}): the \
                     partition tasks' producers are transactional"
                ));
            }
        }
        if ms("socket.timeout.ms").is_some_and(|t| t > transaction_timeout + 100) {
            return bad(&format!(
                "librdkafka setting socket.timeout.ms must be at most transaction.timeout.ms ({transaction_timeout}) \
                 + 100: the partition tasks' producers are transactional"
            ));
        }
        // 0 would time every Kafka call out at once (the worker would say it cannot reach
        // Kafka, for ever). Past 30 s, a partition waiting for a recorded batch's records
        // (three timeouts between reports) would leave its stall and balance gauges unset
        // for longer than the exporter keeps them (120 s), and a stuck commit would outlast
        // librdkafka's transaction timeout (60 s) several times over before it halts.
        if !(1_000..=30_000).contains(&self.kafka_timeout_ms) {
            return bad("kafka_timeout_ms must be 1000 to 30000");
        }
        Ok(())
    }

    /// The commit interval: `commit_interval_ms`, or the guarantee's default.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(
            self.commit_interval_ms.unwrap_or_else(|| self.processing_guarantee.default_commit_interval_ms()),
        )
    }

    /// How long a catching-up partition waits for an input that is behind.
    pub fn catch_up_wait(&self) -> Duration {
        Duration::from_millis(self.catch_up_wait_ms)
    }

    /// The Kafka call timeout.
    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarantee_reads_back_what_it_writes_and_names_what_it_refuses() {
        for guarantee in [ProcessingGuarantee::AtLeastOnce, ProcessingGuarantee::ExactlyOnce] {
            assert_eq!(guarantee.to_string().parse::<ProcessingGuarantee>(), Ok(guarantee));
            assert_eq!(serde_json::to_string(&guarantee).unwrap(), format!("\"{guarantee}\""));
        }
        assert_eq!("exactly_once_v2".parse(), Ok(ProcessingGuarantee::ExactlyOnce));
        assert_eq!(
            serde_json::from_str::<ProcessingGuarantee>("\"exactly_once_v2\"").unwrap(),
            ProcessingGuarantee::ExactlyOnce
        );
        assert_eq!(
            "maybe".parse::<ProcessingGuarantee>(),
            Err("processing guarantee must be at_least_once or exactly_once, got \"maybe\"".to_owned())
        );
    }

    /// Settings each valid alone that the partition tasks' transactional producers refuse
    /// together, and a Kafka timeout out of bounds, are refused at a worker's start; the other
    /// commands take them.
    #[test]
    fn settings_a_transactional_producer_refuses_are_refused_at_start() {
        let with = |settings: &[(&str, &str)], timeout_ms: u64| {
            let librdkafka = settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let config = WorkerConfig { librdkafka, kafka_timeout_ms: timeout_ms, ..WorkerConfig::default() };
            config.validate_for_worker().err().map(|e| e.to_string())
        };
        assert_eq!(with(&[], 10_000), None);
        assert_eq!(with(&[("message.timeout.ms", "60000"), ("socket.timeout.ms", "60100")], 10_000), None);
        let refused = with(&[("message.timeout.ms", "120000")], 10_000).unwrap();
        assert!(refused.contains("message.timeout.ms must be at most transaction.timeout.ms (60000)"), "{refused}");
        let refused = with(&[("delivery.timeout.ms", "90000")], 10_000).unwrap();
        assert!(refused.contains("delivery.timeout.ms must be at most"), "{refused}");
        let refused = with(&[("socket.timeout.ms", "90000")], 10_000).unwrap();
        assert!(refused.contains("socket.timeout.ms must be at most"), "{refused}");
        assert_eq!(with(&[("message.timeout.ms", "120000"), ("transaction.timeout.ms", "120000")], 10_000), None);
        for timeout_ms in [0, 999, 30_001] {
            assert_eq!(
                with(&[], timeout_ms).as_deref(),
                Some("invalid configuration: kafka_timeout_ms must be 1000 to 30000"),
                "{timeout_ms}"
            );
        }
        let other_commands = WorkerConfig {
            librdkafka: [("message.timeout.ms".to_owned(), "120000".to_owned())].into(),
            kafka_timeout_ms: 60_000,
            ..WorkerConfig::default()
        };
        assert!(other_commands.validate().is_ok());
        assert!(other_commands.validate_for_worker().is_err());
        assert_eq!(with(&[], 1_000), None);
        assert_eq!(with(&[], 30_000), None);
    }
}
