//! Why Kafka cannot be used, named: an unreachable broker, a failed TLS handshake, refused
//! credentials, or a missing ACL. Each cause has its own message and process exit code, so an
//! operator (or a supervisor) can tell a wrong password from a stopped broker at a glance.
//!
//! librdkafka reports authentication and TLS failures only as error events: the calls
//! themselves just time out as if the broker were away, and retry forever. [`probe`] therefore
//! listens to those events while it asks for metadata, and names the cause as soon as one
//! arrives (well before the timeout). Authorization failures come back as error codes of the
//! calls that were refused; [`of_kafka`] names them, with the resource the caller knows.
//!
//! | cause | exit code |
//! |---|---|
//! | unreachable broker | 10 |
//! | TLS (certificate, hostname) | 11 |
//! | authentication (SASL) | 12 |
//! | authorization (an ACL is missing) | 13 |

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::Cancel;
use crate::config::WorkerConfig;
use crate::kafka;
use crate::topics::TopicKind;

/// Why Kafka cannot be used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cause {
    /// No broker answered (nothing listens, wrong address, network down).
    Unreachable,
    /// The TLS handshake failed: an untrusted certificate, a host name it does not name, a
    /// protocol mismatch (e.g. TLS against a plaintext listener).
    Tls,
    /// The broker refused the credentials (SASL).
    Authentication,
    /// The principal lacks an ACL for a topic, group, transactional id or the cluster.
    Authorization,
}

impl Cause {
    /// The process exit code for this cause (the same for every command).
    pub const fn exit_code(self) -> u8 {
        match self {
            Cause::Unreachable => 10,
            Cause::Tls => 11,
            Cause::Authentication => 12,
            Cause::Authorization => 13,
        }
    }

    /// A short label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Cause::Unreachable => "unreachable",
            Cause::Tls => "tls",
            Cause::Authentication => "authentication",
            Cause::Authorization => "authorization",
        }
    }

    /// The cause a librdkafka or broker error code stands for, if it is one of these.
    pub fn of_code(code: RDKafkaErrorCode) -> Option<Cause> {
        use RDKafkaErrorCode as C;
        match code {
            C::Authentication | C::SaslAuthenticationFailed | C::UnsupportedSASLMechanism => {
                Some(Cause::Authentication)
            }
            C::SSL => Some(Cause::Tls),
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed => Some(Cause::Authorization),
            _ => None,
        }
    }
}

/// Kafka could not be used, and why.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{message}")]
pub struct AccessError {
    /// The cause.
    pub cause: Cause,
    /// What was refused or failed, with librdkafka's own words.
    pub message: String,
}

impl AccessError {
    /// An authorization failure on `resource` (e.g. `write topic tollgate.state.v1`, `group
    /// tollgate`), naming the SASL user of `config` when there is one.
    pub fn denied(config: &WorkerConfig, resource: &str, code: RDKafkaErrorCode) -> AccessError {
        AccessError::authorization(&format!("{}{resource}", principal(config)), code)
    }

    /// An authorization failure on `resource`, where the configuration is not at hand.
    pub fn authorization(resource: &str, code: RDKafkaErrorCode) -> AccessError {
        AccessError { cause: Cause::Authorization, message: format!("not authorized: {resource} ({code:?})") }
    }
}

/// What the group consumer was refused, by error code: the group, or the input topics it
/// subscribed to (librdkafka does not say which of the two).
pub fn consumer_resource(config: &WorkerConfig, code: RDKafkaErrorCode) -> String {
    match code {
        RDKafkaErrorCode::GroupAuthorizationFailed => format!("consumer group {}", config.group_id),
        _ => {
            format!("read topic {} or {}", config.topics[TopicKind::CallLegs], config.topics[TopicKind::CreditCommands])
        }
    }
}

/// What the reference loader was refused: reading one of the reference topics (a fetch
/// refusal does not say which).
pub fn reference_resource(config: &WorkerConfig) -> String {
    let topics: Vec<&str> = config.topics.with_role(crate::topics::Role::Reference).map(String::as_str).collect();
    match topics.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("read topic {} or {last}", rest.join(", ")),
        _ => format!("read topic {}", topics.join("")),
    }
}

/// What a partition task was refused, by error code: its transactional id, or (a delivery
/// refusal names its topic itself) the topics it reads and writes.
pub fn task_resource(config: &WorkerConfig, partition: i32, code: RDKafkaErrorCode) -> String {
    match code {
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
            let [id, twin] = crate::kafka::transactional_ids(config, partition);
            format!("transactional id {id} or {twin}")
        }
        RDKafkaErrorCode::GroupAuthorizationFailed => format!("consumer group {}", config.group_id),
        _ => format!("topic {} (changelog) or an output topic", config.topics[TopicKind::State]),
    }
}

/// `User:<name> on ` when SASL names a user, for messages.
fn principal(config: &WorkerConfig) -> String {
    config.librdkafka.get("sasl.username").map_or_else(String::new, |user| format!("User:{user} on "))
}

/// The access failure a Kafka error stands for, naming `resource` (what the failed call
/// touched: `topic X`, `group G`, ...).
pub fn of_kafka(config: &WorkerConfig, error: &KafkaError, resource: impl FnOnce() -> String) -> Option<AccessError> {
    let code = error.rdkafka_error_code()?;
    match Cause::of_code(code)? {
        Cause::Authorization => Some(AccessError::denied(config, &resource(), code)),
        cause => Some(AccessError { cause, message: describe(config, cause, &error.to_string()) }),
    }
}

/// The access failure somewhere in an error's chain of sources: an [`AccessError`] itself,
/// a worker error holding one, or a bare librdkafka error with an access code.
pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Cause> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(access) = error.downcast_ref::<AccessError>() {
            return Some(access.cause);
        }
        if let Some(crate::Error::Access(access)) = error.downcast_ref::<crate::Error>() {
            return Some(access.cause);
        }
        if let Some(cause) =
            error.downcast_ref::<KafkaError>().and_then(KafkaError::rdkafka_error_code).and_then(Cause::of_code)
        {
            return Some(cause);
        }
        next = error.source();
    }
    None
}

/// The message of an authentication, TLS or reachability failure.
fn describe(config: &WorkerConfig, cause: Cause, detail: &str) -> String {
    let servers = &config.bootstrap_servers;
    match cause {
        Cause::Authentication => {
            let mechanism = config.librdkafka.get("sasl.mechanism").map_or("GSSAPI", String::as_str);
            let user = config.librdkafka.get("sasl.username").map_or("", String::as_str);
            format!("authentication failed at {servers} (SASL {mechanism}, user {user:?}): {detail}")
        }
        Cause::Tls => format!(
            "TLS handshake with {servers} failed (is the broker's certificate signed by a CA in ssl.ca.location, \
             and does it name the host connected to?): {detail}"
        ),
        Cause::Unreachable => format!("cannot reach Kafka at {servers}: {detail}"),
        Cause::Authorization => format!("not authorized at {servers}: {detail}"),
    }
}

/// Checks that a broker answers, the TLS handshake succeeds and the credentials are accepted:
/// a metadata request, repeated until `timeout`. An authentication or TLS failure is reported
/// as soon as librdkafka reports it (within a second or two); an unreachable broker after
/// `timeout`, with librdkafka's last reason (e.g. `Connection refused`). Gives up within half
/// a second of `cancel` (a shutdown asked for while the broker is away).
pub fn probe(config: &WorkerConfig, timeout: Duration, cancel: &Cancel) -> Result<(), crate::Error> {
    let producer: BaseProducer<Listener> = kafka::base(config).create_with_context(Listener::default())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = producer.client().fetch_metadata(None, left.min(Duration::from_millis(500)));
        // Serves the error events (authentication, TLS, transport) to the listener.
        producer.poll(Duration::ZERO);
        let seen = producer.context().take();
        if attempt.is_ok() {
            return Ok(());
        }
        if cancel.is_cancelled() {
            return Err(crate::Error::ShutDown("checking access"));
        }
        // The most specific cause wins: a TLS or SASL failure also shows as a transport one.
        let named = seen.iter().find_map(|(code, reason)| {
            Cause::of_code(*code).filter(|c| *c != Cause::Authorization).map(|cause| (cause, reason))
        });
        if let Some((cause, reason)) = named {
            return Err(crate::Error::Access(AccessError { cause, message: describe(config, cause, reason) }));
        }
        if Instant::now() >= deadline {
            let last = seen.last().map_or_else(|| "no answer".to_owned(), |(_, reason)| reason.clone());
            let detail = format!("no broker answered within {} s ({last})", timeout.as_secs());
            return Err(crate::Error::Access(AccessError {
                cause: Cause::Unreachable,
                message: describe(config, Cause::Unreachable, &detail),
            }));
        }
    }
}

/// Keeps the error events librdkafka reports (code and reason) until taken.
#[derive(Debug, Default)]
struct Listener {
    seen: Mutex<Vec<(RDKafkaErrorCode, String)>>,
}

impl Listener {
    fn take(&self) -> Vec<(RDKafkaErrorCode, String)> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl ClientContext for Listener {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        tracing::debug!(%error, reason, "kafka error event");
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((code, reason.to_owned()));
    }
}

impl ProducerContext for Listener {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_exit_code() {
        let causes = [Cause::Unreachable, Cause::Tls, Cause::Authentication, Cause::Authorization];
        let mut codes: Vec<u8> = causes.iter().map(|c| c.exit_code()).collect();
        codes.dedup();
        assert_eq!(codes, [10, 11, 12, 13]);
    }

    #[test]
    fn names_the_cause_of_librdkafka_and_broker_codes() {
        use RDKafkaErrorCode as C;
        assert_eq!(Cause::of_code(C::Authentication), Some(Cause::Authentication));
        assert_eq!(Cause::of_code(C::SaslAuthenticationFailed), Some(Cause::Authentication));
        assert_eq!(Cause::of_code(C::SSL), Some(Cause::Tls));
        assert_eq!(Cause::of_code(C::GroupAuthorizationFailed), Some(Cause::Authorization));
        assert_eq!(Cause::of_code(C::TransactionalIdAuthorizationFailed), Some(Cause::Authorization));
        assert_eq!(Cause::of_code(C::BrokerTransportFailure), None);
        assert_eq!(Cause::of_code(C::MessageTimedOut), None);
    }

    #[test]
    fn an_authorization_failure_names_the_principal_and_the_resource() {
        let config = WorkerConfig {
            librdkafka: [("sasl.username".to_owned(), "producer".to_owned())].into(),
            ..WorkerConfig::default()
        };
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        let access = of_kafka(&config, &error, || "topic tollgate.state.v1".to_owned()).unwrap();
        assert_eq!(access.cause, Cause::Authorization);
        assert_eq!(
            access.to_string(),
            "not authorized: User:producer on topic tollgate.state.v1 (TopicAuthorizationFailed)"
        );
        assert_eq!(
            reference_resource(&config),
            "read topic tollgate.tenants.v1, tollgate.users.v1 or tollgate.rate-cards.v1"
        );
        let wrapped = crate::Error::Access(access);
        assert_eq!(find(&wrapped), Some(Cause::Authorization));
        assert_eq!(find(&crate::Error::Kafka(error)), Some(Cause::Authorization));
        assert_eq!(find(&crate::Error::Config("x".into())), None);
    }

    /// A shutdown asked for while no broker answers ends the probe at its next attempt, not
    /// at its timeout (here 5 minutes, which a failure would wait out).
    #[test]
    fn a_cancelled_probe_stops_before_its_timeout() {
        let config = WorkerConfig { bootstrap_servers: "127.0.0.1:1".into(), ..WorkerConfig::default() };
        let cancel = Cancel::default();
        cancel.cancel();
        let error = probe(&config, Duration::from_secs(300), &cancel).unwrap_err();
        assert!(matches!(error, crate::Error::ShutDown("checking access")), "{error}");
    }

    /// Nothing listens on port 1 of the loopback interface: reported as unreachable, naming
    /// the timeout it waited.
    #[test]
    fn a_closed_port_is_unreachable_after_the_timeout() {
        let config = WorkerConfig { bootstrap_servers: "127.0.0.1:1".into(), ..WorkerConfig::default() };
        let error = probe(&config, Duration::from_secs(2), &Cancel::default()).unwrap_err();
        let crate::Error::Access(access) = error else { panic!("{error}") };
        assert_eq!(access.cause, Cause::Unreachable);
        assert!(
            access.message.starts_with("cannot reach Kafka at 127.0.0.1:1: no broker answered within 2 s"),
            "{access}"
        );
    }
}
