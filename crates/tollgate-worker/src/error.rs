//! The worker's error type, classified the way the worker reacts to it.

use rdkafka::error::KafkaError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration: fatal at start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The topics do not fit together (e.g. input partition counts differ): fatal at start.
    #[error("topic layout: {0}")]
    Topology(String),
    /// A Kafka client call failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A changelog record could not be read back.
    #[error("changelog record for {key:?} is unreadable: {message}")]
    Changelog {
        /// Tenant key.
        key: String,
        /// Why.
        message: String,
    },
    /// The consumer has no group metadata yet (not in the group): retried.
    #[error("the consumer has no group metadata (not a group member right now)")]
    NoGroupMetadata,
    /// The worker was asked to stop while waiting.
    #[error("shut down while {0}")]
    ShutDown(&'static str),
    /// A topic could not be read to its end (`tollgate verify`): no record came for too long.
    #[error("reading stalled: {0}")]
    Stalled(String),
}

/// How the worker reacts to an error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Try again after a backoff (broker unavailable, timeouts, aborted transactions).
    Retriable,
    /// The group is rebalancing or has moved on without this member: the partition is being
    /// handed over, so stop working on it and let its next owner (maybe this worker again)
    /// resume from the committed offsets and the changelog.
    Migrating,
    /// The producer was fenced: this worker no longer owns the partition's transactional id
    /// (or its epoch expired); replace the producer if the partition is still assigned.
    Fenced,
    /// Stop the worker.
    Fatal,
}

impl Class {
    /// A short label for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Class::Retriable => "retriable",
            Class::Migrating => "migrating",
            Class::Fenced => "fenced",
            Class::Fatal => "fatal",
        }
    }
}

impl Error {
    /// Classifies the error.
    pub fn class(&self) -> Class {
        match self {
            Error::Config(_)
            | Error::Topology(_)
            | Error::Changelog { .. }
            | Error::ShutDown(_)
            | Error::Stalled(_) => Class::Fatal,
            Error::Kafka(e) => classify_kafka(e),
            Error::NoGroupMetadata => Class::Migrating,
        }
    }
}

/// Classifies a librdkafka error.
pub fn classify_kafka(error: &KafkaError) -> Class {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = match error {
        KafkaError::Transaction(e) => {
            if e.is_fatal() {
                return Class::Fenced;
            }
            Some(e.code())
        }
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId | C::FencedInstanceId) => {
            Class::Migrating
        }
        Some(C::ProducerFenced | C::InvalidProducerEpoch | C::Fatal) => Class::Fenced,
        Some(
            C::InvalidConfig | C::UnknownTopicOrPartition | C::TopicAuthorizationFailed | C::GroupAuthorizationFailed,
        ) => Class::Fatal,
        _ => Class::Retriable,
    }
}
