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
    /// A partition task stopped for good (fenced and never revoked, or a fatal error): the
    /// worker exits so that a supervisor restarts it.
    #[error("partition {partition} halted: {reason}")]
    Halted {
        /// Input partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// The partition's transactional producer failed because the partition's next owner
    /// fenced it: what a bare `_FATAL` from it means, once the producer's own fatal error has
    /// been read (a transaction's errors are, see `Producers::explained`).
    #[error("fenced by the partition's next owner: {0}")]
    Fenced(String),
    /// A changelog record could not be read back.
    #[error("changelog record for {key:?} is unreadable: {message}")]
    Changelog {
        /// Tenant key.
        key: String,
        /// Why.
        message: String,
    },
    /// The worker was asked to stop while waiting.
    #[error("shut down while {0}")]
    ShutDown(&'static str),
    /// A topic could not be read to its end (`tollgate verify`): no record came for too long.
    #[error("reading stalled: {0}")]
    Stalled(String),
    /// Kafka cannot be used: unreachable, TLS, authentication or authorization (see
    /// [`crate::access`]). Fatal: retrying does not fix a password or an ACL.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
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
    /// The partition's transactional producer was fenced: another worker initialised the same
    /// transactional id, so it owns the partition now and this one is a zombie. Stop working
    /// on the partition; never fight back with a new producer.
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
            | Error::Halted { .. }
            | Error::Stalled(_)
            | Error::Access(_) => Class::Fatal,
            Error::Fenced(_) => Class::Fenced,
            Error::Kafka(e) => classify_kafka(e),
        }
    }
}

/// Classifies a librdkafka error.
///
/// Transaction errors follow librdkafka's flags: a fatal one means the producer is unusable
/// (fenced by the partition's next owner, or another fatal condition); an abortable or
/// retriable one is retried (the caller aborts, rolls back and rates the batch again).
pub fn classify_kafka(error: &KafkaError) -> Class {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = match error {
        // A setting librdkafka does not know or refuses: retrying cannot fix it.
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => return Class::Fatal,
        KafkaError::Transaction(e) => {
            if e.is_fatal() {
                return if fences(e.code()) { Class::Fenced } else { Class::Fatal };
            }
            Some(e.code())
        }
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId | C::FencedInstanceId) => {
            Class::Migrating
        }
        Some(code) if fences(code) => Class::Fenced,
        // Retrying a record the broker refuses for what it is would repeat the batch forever.
        Some(
            C::InvalidConfig
            | C::InvalidArgument
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::MessageSizeTooLarge
            | C::InvalidRecord
            | C::Fatal,
        ) => Class::Fatal,
        _ => Class::Retriable,
    }
}

/// Whether a producer failed with `code` because another one initialised its transactional id.
pub(crate) fn fences(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(code, C::ProducerFenced | C::InvalidProducerEpoch | C::Fenced | C::TransactionCoordinatorFenced)
}

/// Whether the error is a record's delivery report saying only that its producer failed for
/// good (librdkafka's `_FATAL`); the producer's `fatal_error` holds the cause.
pub(crate) fn is_failed_producer(error: &Error) -> bool {
    matches!(error, Error::Kafka(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal))
}

/// The text a panic was raised with (`panic!` with a literal or with a format); `None` for
/// any other payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// The message a panic was raised with ([`panic_text`]), or that it had none: for a halt or a
/// dead letter.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    panic_text(payload).unwrap_or("a panic without a message").to_owned()
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as C;

    use super::*;

    #[test]
    fn a_record_the_broker_refuses_for_its_size_is_fatal_not_retried() {
        let too_large = KafkaError::MessageProduction(C::MessageSizeTooLarge);
        assert_eq!(classify_kafka(&too_large), Class::Fatal);
        assert_eq!(classify_kafka(&KafkaError::MessageProduction(C::MessageTimedOut)), Class::Retriable);
        assert_eq!(classify_kafka(&KafkaError::MessageProduction(C::ProducerFenced)), Class::Fenced);
        assert_eq!(classify_kafka(&KafkaError::ConsumerCommit(C::UnknownMemberId)), Class::Migrating);
    }

    /// `-X no.such.prop=1` must stop the worker at once, naming the property, not be retried
    /// as if the broker were away.
    #[test]
    fn an_unknown_librdkafka_setting_is_fatal_and_named() {
        let config = crate::WorkerConfig {
            librdkafka: [("no.such.prop".to_owned(), "1".to_owned())].into(),
            ..crate::WorkerConfig::default()
        };
        let error = crate::worker::check_topology(&config).unwrap_err();
        assert_eq!(error.class(), Class::Fatal);
        assert!(error.to_string().contains("no.such.prop"), "{error}");
    }
}
