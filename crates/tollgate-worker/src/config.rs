//! Typed worker configuration. The binary layers defaults, a TOML file, `TOLLGATE_*`
//! environment variables and flags into this struct; nothing here reads the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kafka Streams' vocabulary for what a crash may cost.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The configuration spelling, also the metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
        }
    }
}

/// Topic names.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Input: call-leg events (keyed by tenant).
    pub call_legs: String,
    /// Input: credit commands (keyed by tenant, co-partitioned with `call_legs`).
    pub credit_commands: String,
    /// Output: rated usage.
    pub rated_usage: String,
    /// Output: leg decisions.
    pub leg_decisions: String,
    /// Output: credit events.
    pub credit_events: String,
    /// Output: records that could not be processed.
    pub dead_letter: String,
    /// Compacted changelog of per-tenant state (co-partitioned with the inputs).
    pub state: String,
    /// Compacted reference data: tenants (key: tenant id).
    pub tenants: String,
    /// Compacted reference data: users (key: `tenant_id/user_id`).
    pub users: String,
    /// Compacted reference data: rate cards (key: rate card id).
    pub rate_cards: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            call_legs: "tollgate.call-legs.v1".into(),
            credit_commands: "tollgate.credit-commands.v1".into(),
            rated_usage: "tollgate.rated-usage.v1".into(),
            leg_decisions: "tollgate.leg-decisions.v1".into(),
            credit_events: "tollgate.credit-events.v1".into(),
            dead_letter: "tollgate.dead-letter.v1".into(),
            state: "tollgate.state.v1".into(),
            tenants: "tollgate.tenants.v1".into(),
            users: "tollgate.users.v1".into(),
            rate_cards: "tollgate.rate-cards.v1".into(),
        }
    }
}

impl Topics {
    /// What is on a topic, by name.
    pub fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        let table = [
            (&self.call_legs, TopicKind::CallLegs),
            (&self.credit_commands, TopicKind::CreditCommands),
            (&self.rated_usage, TopicKind::RatedUsage),
            (&self.leg_decisions, TopicKind::LegDecisions),
            (&self.credit_events, TopicKind::CreditEvents),
            (&self.dead_letter, TopicKind::DeadLetter),
            (&self.state, TopicKind::State),
            (&self.tenants, TopicKind::Tenants),
            (&self.users, TopicKind::Users),
            (&self.rate_cards, TopicKind::RateCards),
        ];
        table.into_iter().find(|(name, _)| name.as_str() == topic).map(|(_, kind)| kind)
    }
}

/// The role of a tollgate topic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TopicKind {
    /// `CallLegEvent` values.
    CallLegs,
    /// `CreditCommand` values.
    CreditCommands,
    /// `RatedUsage` values.
    RatedUsage,
    /// `LegDecision` values.
    LegDecisions,
    /// `CreditEvent` values.
    CreditEvents,
    /// `DeadLetter` values.
    DeadLetter,
    /// JSON `TenantState` values.
    State,
    /// `Tenant` values.
    Tenants,
    /// `User` values.
    Users,
    /// `RateCard` values.
    RateCards,
}

/// Everything a worker needs to run (`Debug` and `Serialize` redact the secrets among the
/// librdkafka settings: [`crate::secret`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group: every worker of one deployment uses the same id.
    pub group_id: String,
    /// Prefix of transactional ids (`<prefix>-<group_id>-<partition>`), in both guarantees.
    pub transactional_id_prefix: String,
    /// At-least-once or exactly-once.
    pub processing_guarantee: ProcessingGuarantee,
    /// Most input records per batch (one transaction per batch).
    pub batch_size: usize,
    /// Longest a batch waits to fill before it is committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// How long (event time) applied ids and closed legs are remembered, in seconds.
    pub retention_seconds: u32,
    /// Timeout of blocking Kafka calls (metadata, commits, transactions), in milliseconds.
    pub kafka_timeout_ms: u64,
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
            commit_interval_ms: 100,
            retention_seconds: 48 * 3600,
            kafka_timeout_ms: 10_000,
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
        if self.commit_interval_ms == 0 {
            return bad("commit_interval_ms must be > 0");
        }
        if self.retention_seconds < 3600 {
            return bad("retention_seconds must be at least 3600");
        }
        Ok(())
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// The Kafka call timeout.
    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_timeout_ms)
    }
}
