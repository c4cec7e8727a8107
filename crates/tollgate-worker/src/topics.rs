//! The topic registry: every tollgate topic, one row each, read by the configuration (the
//! keys of `[worker.topics]` and `TOLLGATE_TOPIC_<KEY>`), topic creation
//! (`tollgate admin create-topics`, the demo), routing (which topic a record came from, which
//! one an output goes to), `tollgate tail` (how a value is shown as JSON) and telemetry (the
//! `topic` label is the row's key).
//!
//! Inputs, outputs and the changelog share one partition count (co-partitioning: the worker
//! that owns partition *p* of the inputs writes partition *p* of the changelog). Reference
//! topics are compacted and small; every worker reads them whole.
//!
//! Adding a topic is adding a [`TopicKind`] variant and its row in [`REGISTRY`]; the compiler
//! then points at the few matches that must say what the topic carries.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tollgate_proto::v1;

use crate::codec::{self, ToJson};
use crate::config::WorkerConfig;
use crate::{Error, kafka};

/// The role of a tollgate topic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
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
    /// `LedgerMovement` values (the debit trail; written only when enabled).
    LedgerMovements,
    /// `DeadLetter` values.
    DeadLetter,
    /// The state changelog: `TenantStateRecord` values for tenants, JSON for the other kinds.
    State,
    /// `Tenant` values.
    Tenants,
    /// `User` values.
    Users,
    /// `RateCard` values.
    RateCards,
    /// JSON announcements of which worker owns which partitions, and where its HTTP API is.
    Ownership,
}

/// What a topic is for in the pipeline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Read by the consumer group, keyed by tenant.
    Input,
    /// Written by the workers, keyed by tenant.
    Output,
    /// The compacted per-partition state.
    Changelog,
    /// Compacted reference data, read whole by every worker.
    Reference,
    /// Compacted and small, written and read whole by the workers themselves: who owns which
    /// partition (the tenant API forwards to the owner).
    Directory,
}

/// How many partitions a topic has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Partitioning {
    /// As many as the inputs (co-partitioned by tenant).
    CoPartitioned,
    /// One: the topic is small and read whole.
    Single,
}

/// `cleanup.policy` of a topic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cleanup {
    /// Kafka's default retention.
    Delete,
    /// Compacted: the latest value per key is kept.
    Compact,
}

/// One row of the registry.
#[derive(Clone, Copy, Debug)]
pub struct TopicDef {
    /// Which topic.
    pub kind: TopicKind,
    /// Its key under `[worker.topics]` (also `TOLLGATE_TOPIC_<KEY>` and the metrics label).
    pub key: &'static str,
    /// Its default name.
    pub default_name: &'static str,
    /// Its role.
    pub role: Role,
    /// Its partition count.
    pub partitioning: Partitioning,
    /// Its cleanup policy.
    pub cleanup: Cleanup,
    /// Its largest record, when above the broker's default (`max.message.bytes`).
    pub max_message_bytes: Option<u32>,
    /// Its values as JSON (`tollgate tail`).
    pub to_json: ToJson,
}

const fn row(kind: TopicKind, key: &'static str, default_name: &'static str, role: Role, to_json: ToJson) -> TopicDef {
    let (partitioning, cleanup) = match role {
        Role::Input | Role::Output => (Partitioning::CoPartitioned, Cleanup::Delete),
        Role::Changelog => (Partitioning::CoPartitioned, Cleanup::Compact),
        Role::Reference | Role::Directory => (Partitioning::Single, Cleanup::Compact),
    };
    TopicDef { kind, key, default_name, role, partitioning, cleanup, max_message_bytes: None, to_json }
}

/// Every tollgate topic, in [`TopicKind`] order.
pub const REGISTRY: [TopicDef; 12] = [
    row(TopicKind::CallLegs, "call_legs", "tollgate.call-legs.v1", Role::Input, codec::json::<v1::CallLegEvent>),
    row(
        TopicKind::CreditCommands,
        "credit_commands",
        "tollgate.credit-commands.v1",
        Role::Input,
        codec::json::<v1::CreditCommand>,
    ),
    row(TopicKind::RatedUsage, "rated_usage", "tollgate.rated-usage.v1", Role::Output, codec::json::<v1::RatedUsage>),
    row(
        TopicKind::LegDecisions,
        "leg_decisions",
        "tollgate.leg-decisions.v1",
        Role::Output,
        codec::json::<v1::LegDecision>,
    ),
    row(
        TopicKind::CreditEvents,
        "credit_events",
        "tollgate.credit-events.v1",
        Role::Output,
        codec::json::<v1::CreditEvent>,
    ),
    row(
        TopicKind::LedgerMovements,
        "ledger_movements",
        "tollgate.ledger-movements.v1",
        Role::Output,
        codec::json::<v1::LedgerMovement>,
    ),
    row(TopicKind::DeadLetter, "dead_letter", "tollgate.dead-letter.v1", Role::Output, codec::json::<v1::DeadLetter>),
    TopicDef {
        // Changelog records are small (a tenant's record, one open leg, one window segment of
        // at most 1,024 entries, under 300 KB at the longest ids) and stay below this; the
        // headroom is for tenants with many lots.
        max_message_bytes: Some(STATE_MAX_MESSAGE_BYTES),
        ..row(TopicKind::State, "state", "tollgate.state.v1", Role::Changelog, codec::state_json)
    },
    row(TopicKind::Tenants, "tenants", "tollgate.tenants.v1", Role::Reference, codec::json::<v1::Tenant>),
    row(TopicKind::Users, "users", "tollgate.users.v1", Role::Reference, codec::json::<v1::User>),
    row(TopicKind::RateCards, "rate_cards", "tollgate.rate-cards.v1", Role::Reference, codec::json::<v1::RateCard>),
    row(TopicKind::Ownership, "ownership", "tollgate.ownership.v1", Role::Directory, codec::json_value),
];

/// The keys of `[worker.topics]`, in registry order.
const KEYS: [&str; REGISTRY.len()] = {
    let mut keys = [""; REGISTRY.len()];
    let mut i = 0;
    while i < REGISTRY.len() {
        keys[i] = REGISTRY[i].key;
        i += 1;
    }
    keys
};

impl TopicKind {
    /// Its row of the registry.
    pub const fn def(self) -> &'static TopicDef {
        &REGISTRY[self as usize]
    }

    /// Its key under `[worker.topics]`, also the `topic` label of metrics.
    pub const fn key(self) -> &'static str {
        self.def().key
    }

    /// The topic whose key is `key`.
    pub fn from_key(key: &str) -> Option<TopicKind> {
        REGISTRY.iter().find(|d| d.key == key).map(|d| d.kind)
    }

    /// Every topic of a role, in registry order.
    pub fn with_role(role: Role) -> impl Iterator<Item = TopicKind> {
        REGISTRY.iter().filter(move |d| d.role == role).map(|d| d.kind)
    }
}

/// The topic names of a deployment: the registry's defaults unless configured.
#[derive(Clone, PartialEq, Eq)]
pub struct Topics {
    names: [String; REGISTRY.len()],
}

impl Default for Topics {
    fn default() -> Self {
        Topics { names: REGISTRY.map(|d| d.default_name.to_owned()) }
    }
}

impl Index<TopicKind> for Topics {
    type Output = String;
    fn index(&self, kind: TopicKind) -> &String {
        &self.names[kind as usize]
    }
}

impl IndexMut<TopicKind> for Topics {
    fn index_mut(&mut self, kind: TopicKind) -> &mut String {
        &mut self.names[kind as usize]
    }
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(REGISTRY.iter().map(|d| (d.key, &self[d.kind]))).finish()
    }
}

impl Topics {
    /// What is on a topic, by name.
    pub fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        REGISTRY.iter().map(|d| d.kind).find(|&kind| self[kind] == topic)
    }

    /// Every name, to rename them all (a test's own prefix).
    pub fn names_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.names.iter_mut()
    }

    /// The names of the topics of a role, in registry order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &String> {
        TopicKind::with_role(role).map(|kind| &self[kind])
    }
}

impl Serialize for Topics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(REGISTRY.len()))?;
        for def in &REGISTRY {
            map.serialize_entry(def.key, &self[def.kind])?;
        }
        map.end()
    }
}

/// A table of registry keys; a key the registry does not have is refused, like an unknown
/// field of a struct.
impl<'de> Deserialize<'de> for Topics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Topics;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of topic names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Topics, A::Error> {
                let mut topics = Topics::default();
                while let Some(key) = map.next_key::<String>()? {
                    let kind = TopicKind::from_key(&key).ok_or_else(|| serde::de::Error::unknown_field(&key, &KEYS))?;
                    topics[kind] = map.next_value()?;
                }
                Ok(topics)
            }
        }
        deserializer.deserialize_map(Names)
    }
}

/// The state topic's `max.message.bytes`: room for a tenant's record with many lots. The
/// partition tasks' transactional producers allow records this large too (librdkafka's own
/// default, 1,000,000 bytes, would refuse them first, and stall the partition).
pub const STATE_MAX_MESSAGE_BYTES: u32 = 16_777_216;

/// One topic to create.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic configs (`cleanup.policy`, ...).
    pub configs: Vec<(&'static str, String)>,
}

/// The topics of a deployment with `partitions` input partitions: every row of the registry.
pub fn specs(config: &WorkerConfig, partitions: i32) -> Vec<TopicSpec> {
    REGISTRY
        .iter()
        .map(|def| {
            let mut configs = Vec::new();
            if def.cleanup == Cleanup::Compact {
                configs.push(("cleanup.policy", "compact".to_owned()));
                configs.push(("min.compaction.lag.ms", "60000".to_owned()));
            }
            if let Some(bytes) = def.max_message_bytes {
                configs.push(("max.message.bytes", bytes.to_string()));
            }
            let partitions = match def.partitioning {
                Partitioning::CoPartitioned => partitions,
                Partitioning::Single => 1,
            };
            TopicSpec { name: config.topics[def.kind].clone(), partitions, configs }
        })
        .collect()
}

/// Refuses a topic the worker keeps for good that the broker would not keep: the changelog
/// and the reference topics must be compacted and only compacted. A topic made by other
/// tooling gets the broker's default, `cleanup.policy=delete`, and under it (or under
/// `compact,delete`) retention deletes every record older than `retention.ms`: a tenant idle
/// that long would be restored without its balance, its lots and the ids it has applied, and
/// the reference data would lose its tenants, users and rate cards. Warns about a changelog
/// whose `max.message.bytes` is below what a tenant's record may need (a larger record would
/// stall its partition), and about topics whose settings cannot be read (a broker without
/// `DescribeConfigs`, as librdkafka's mock cluster is, or a principal not allowed it), which
/// then go unchecked.
pub async fn check_kept(config: &WorkerConfig) -> Result<(), Error> {
    let kept = REGISTRY.iter().filter(|d| matches!(d.role, Role::Changelog | Role::Reference));
    let names: Vec<(TopicKind, &str)> = kept.map(|d| (d.kind, config.topics[d.kind].as_str())).collect();
    let admin: AdminClient<DefaultClientContext> = kafka::base(config).create()?;
    let options = AdminOptions::new().request_timeout(Some(config.kafka_timeout()));
    let specifiers: Vec<ResourceSpecifier<'_>> = names.iter().map(|(_, name)| ResourceSpecifier::Topic(name)).collect();
    let described = match admin.describe_configs(&specifiers, &options).await {
        Ok(described) => described,
        // A broker slow to answer is asked again (the caller retries).
        Err(error @ KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)) => {
            return Err(error.into());
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the changelog's and reference topics' settings: their cleanup policy must be `compact`, and is not checked");
            return Ok(());
        }
    };
    for ((kind, name), result) in names.iter().zip(described) {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) => {
                tracing::warn!(topic = name, error = %code, "cannot read the topic's settings (allow DescribeConfigs on it to have them checked): its cleanup policy must be `compact`, and is not checked");
                continue;
            }
        };
        let setting = |key: &str| resource.get(key).and_then(|e| e.value.clone());
        // A principal that may not describe the topic's settings is answered none.
        let Some(cleanup) = setting("cleanup.policy") else {
            tracing::warn!(
                topic = name,
                "the topic's settings were not given (allow DescribeConfigs on it to have them checked): its cleanup policy must be `compact`, and is not checked"
            );
            continue;
        };
        // Deleting by age or size is what loses records; a topic that keeps everything
        // (`retention.ms` and `retention.bytes` both -1) loses none, compacted or not.
        let keeps_all = setting("retention.ms").as_deref() == Some("-1")
            && setting("retention.bytes").is_none_or(|bytes| bytes == "-1");
        if cleanup != "compact" && !keeps_all {
            return Err(Error::Topology(format!(
                "topic {name} has cleanup.policy={cleanup}: it must be `compact` alone (or keep everything: retention.ms=-1 and retention.bytes=-1), or retention deletes what the worker keeps there (set it with kafka-configs --alter --entity-type topics --entity-name {name} --add-config cleanup.policy=compact)"
            )));
        }
        if !cleanup.contains("compact") {
            tracing::warn!(
                topic = name,
                cleanup,
                "the topic keeps every record but is not compacted: restores read all of them"
            );
        }
        if *kind == TopicKind::State {
            let limit = setting("max.message.bytes").and_then(|v| v.parse::<u64>().ok());
            if limit.is_some_and(|bytes| bytes < u64::from(STATE_MAX_MESSAGE_BYTES)) {
                tracing::warn!(
                    topic = name,
                    max_message_bytes = limit,
                    wanted = STATE_MAX_MESSAGE_BYTES,
                    "the changelog refuses records a tenant with many lots may need: its partition would stall on one"
                );
            }
        }
    }
    Ok(())
}

/// The replication factor that asks the broker for its own `default.replication.factor`
/// (KIP-464, Kafka 2.4 and later).
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// The settings of a topic created with `replication` replicas ([`BROKER_DEFAULT_REPLICATION`]:
/// the broker's default): `spec`'s, and with three replicas or more `min.insync.replicas=2`,
/// so that a write acknowledged (`acks=all`, which every producer of tollgate asks for) is
/// on two brokers, not on the leader alone (Kafka's own default is 1). With the broker's
/// default replication, its default `min.insync.replicas` too.
pub fn creation_configs(spec: &TopicSpec, replication: i32) -> Vec<(&'static str, String)> {
    let mut configs = spec.configs.clone();
    if replication >= 3 {
        configs.push(("min.insync.replicas", "2".to_owned()));
    }
    configs
}

/// Creates the topics through the admin API; existing topics are left alone. Returns, per
/// topic, whether it was created (`true`) or already existed (`false`). The future is
/// resolved by librdkafka's own threads: any executor can drive it (the binary's tokio
/// runtime does). `replication` may be [`BROKER_DEFAULT_REPLICATION`].
pub async fn create(
    config: &WorkerConfig,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<(String, bool)>, Error> {
    let admin: AdminClient<DefaultClientContext> = kafka::base(config).create()?;
    let configs: Vec<Vec<(&'static str, String)>> = specs.iter().map(|s| creation_configs(s, replication)).collect();
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&configs)
        .map(|(s, configs)| {
            let mut topic = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            for (k, v) in configs {
                topic = topic.set(k, v);
            }
            topic
        })
        .collect();
    let timeout = Duration::from_millis(config.kafka_timeout_ms);
    // The request's own timeout too (twice the broker's, which it includes), or a broker that
    // never answers (one without the admin API, as the mock cluster is) is waited for a
    // minute, librdkafka's default.
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout * 2));
    let results = admin.create_topics(&topics, &options).await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => created.push((name, false)),
            Err((name, code)) => {
                if crate::access::Cause::of_code(code).is_some() {
                    return Err(
                        crate::access::AccessError::denied(config, &format!("create topic {name}"), code).into()
                    );
                }
                return Err(Error::Topology(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_in_kind_order_with_unique_keys_and_names() {
        for (i, def) in REGISTRY.iter().enumerate() {
            assert_eq!(def.kind as usize, i, "{:?}", def.kind);
            assert_eq!(TopicKind::from_key(def.key), Some(def.kind));
        }
        let topics = Topics::default();
        for def in &REGISTRY {
            assert_eq!(topics.kind_of(def.default_name), Some(def.kind));
        }
    }

    /// Three replicas or more: a write is acknowledged once on two of them, not on the leader
    /// alone; with fewer, or the broker's default, the broker's `min.insync.replicas`.
    #[test]
    fn three_replicas_or_more_want_two_in_sync() {
        let spec = &specs(&WorkerConfig::default(), 6)[0];
        let min_insync = |replication| {
            creation_configs(spec, replication).into_iter().find(|(k, _)| *k == "min.insync.replicas").map(|(_, v)| v)
        };
        assert_eq!(min_insync(3).as_deref(), Some("2"));
        assert_eq!(min_insync(5).as_deref(), Some("2"));
        assert_eq!(min_insync(2), None);
        assert_eq!(min_insync(1), None);
        assert_eq!(min_insync(BROKER_DEFAULT_REPLICATION), None);
    }

    #[test]
    fn specs_give_the_layout_of_a_deployment() {
        let specs = specs(&WorkerConfig::default(), 6);
        let layout: Vec<(&str, i32, usize)> =
            specs.iter().map(|s| (s.name.as_str(), s.partitions, s.configs.len())).collect();
        assert_eq!(
            layout,
            [
                ("tollgate.call-legs.v1", 6, 0),
                ("tollgate.credit-commands.v1", 6, 0),
                ("tollgate.rated-usage.v1", 6, 0),
                ("tollgate.leg-decisions.v1", 6, 0),
                ("tollgate.credit-events.v1", 6, 0),
                ("tollgate.ledger-movements.v1", 6, 0),
                ("tollgate.dead-letter.v1", 6, 0),
                ("tollgate.state.v1", 6, 3),
                ("tollgate.tenants.v1", 1, 2),
                ("tollgate.users.v1", 1, 2),
                ("tollgate.rate-cards.v1", 1, 2),
                ("tollgate.ownership.v1", 1, 2),
            ]
        );
        assert_eq!(specs[7].configs[2], ("max.message.bytes", "16777216".to_owned()));
    }

    #[test]
    fn a_table_of_names_overrides_the_defaults_and_refuses_unknown_keys() {
        let topics: Topics = serde_json::from_str(r#"{"call_legs":"legs"}"#).unwrap();
        assert_eq!(topics[TopicKind::CallLegs], "legs");
        assert_eq!(topics[TopicKind::State], "tollgate.state.v1");
        let err = serde_json::from_str::<Topics>(r#"{"call_leg":"legs"}"#).unwrap_err().to_string();
        assert!(err.starts_with("unknown field `call_leg`, expected one of `call_legs`"), "{err}");
    }
}
