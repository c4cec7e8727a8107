//! Reference data tables, read whole from the compacted reference topics by every worker.
//!
//! The loader reads every partition of the tenants, users and rate-cards topics from the
//! beginning. It records the high watermarks at start and reports "caught up" once it has read
//! to them: no leg is rated before that. Afterwards it keeps reading, so updates apply live.
//! A record over `max_record_bytes`, or over a bound of [`tollgate_proto::limits`], is refused
//! (logged and counted) like any other invalid one. If Kafka refuses to let it read a topic
//! (an ACL allows describing the topic but not reading it), the loader stops and the worker
//! exits with the authorization error, rather than retry forever.

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_core::{Catalog, FastState, RateCard, Tenant, User};
use tollgate_proto::{limits, v1};

use crate::access::{self, AccessError};
use crate::cancel::Cancel;
use crate::config::WorkerConfig;
use crate::topics::{Role, TopicKind};
use crate::{Error, kafka, telemetry};

/// Live reference tables, shared by all partition tasks of a worker.
#[derive(Debug, Default)]
pub struct Tables {
    // Looked up for every record: the fast hasher, not SipHash.
    tenants: DashMap<String, Arc<Tenant>, FastState>,
    users: DashMap<String, Arc<User>, FastState>,
    rate_cards: DashMap<String, Arc<RateCard>, FastState>,
    /// Counts applied reference records; waiters are woken on every change.
    changes: Mutex<u64>,
    changed: Condvar,
}

thread_local! {
    static USER_KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Tables {
    /// Adds or replaces a tenant.
    pub fn put_tenant(&self, tenant: Tenant) {
        self.tenants.insert(tenant.id.to_string(), Arc::new(tenant));
    }

    /// Adds or replaces a user.
    pub fn put_user(&self, user: User) {
        self.users.insert(user_key(user.tenant_id.as_str(), &user.id), Arc::new(user));
    }

    /// Adds or replaces a rate card.
    pub fn put_rate_card(&self, card: RateCard) {
        self.rate_cards.insert(card.id.clone(), Arc::new(card));
    }

    /// Sizes: (tenants, users, rate cards).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.tenants.len(), self.users.len(), self.rate_cards.len())
    }

    /// Waits until `ready` holds for the tables (checked after every applied reference record)
    /// or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, ready: impl Fn(&Tables) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut changes = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if ready(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            changes = self.changed.wait_timeout(changes, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Applies one reference record (value `None` deletes the key); a value over `max_bytes`
    /// is refused without being decoded.
    pub fn apply(&self, kind: TopicKind, key: &str, payload: Option<&[u8]>, max_bytes: usize) -> Result<(), String> {
        let result = self.apply_record(kind, key, payload, max_bytes);
        *self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.changed.notify_all();
        result
    }

    fn apply_record(&self, kind: TopicKind, key: &str, payload: Option<&[u8]>, max_bytes: usize) -> Result<(), String> {
        let Some(payload) = payload else {
            match kind {
                TopicKind::Tenants => drop(self.tenants.remove(key)),
                TopicKind::Users => drop(self.users.remove(key)),
                TopicKind::RateCards => drop(self.rate_cards.remove(key)),
                _ => {}
            }
            return Ok(());
        };
        match kind {
            TopicKind::Tenants => {
                let tenant = limits::decode::<v1::Tenant>(payload, max_bytes)
                    .and_then(Tenant::try_from)
                    .map_err(|e| e.to_string())?;
                if tenant.id.as_str() != key {
                    return Err(format!("key {key:?} is not tenant id {:?}", tenant.id.as_str()));
                }
                self.put_tenant(tenant);
            }
            TopicKind::Users => {
                let user = limits::decode::<v1::User>(payload, max_bytes)
                    .and_then(User::try_from)
                    .map_err(|e| e.to_string())?;
                if user_key(user.tenant_id.as_str(), &user.id) != key {
                    return Err(format!("key {key:?} is not {:?}", user_key(user.tenant_id.as_str(), &user.id)));
                }
                self.put_user(user);
            }
            TopicKind::RateCards => {
                let card = limits::decode::<v1::RateCard>(payload, max_bytes)
                    .and_then(RateCard::try_from)
                    .map_err(|e| e.to_string())?;
                if card.id != key {
                    return Err(format!("key {key:?} is not rate card id {:?}", card.id));
                }
                self.put_rate_card(card);
            }
            other => return Err(format!("{other:?} is not a reference topic")),
        }
        Ok(())
    }
}

/// The key of a user record: `tenant_id/user_id`.
pub fn user_key(tenant: &str, user: &str) -> String {
    format!("{tenant}/{user}")
}

impl Catalog for Tables {
    type TenantRef<'a> = Arc<Tenant>;
    type UserRef<'a> = Arc<User>;
    type RateCardRef<'a> = Arc<RateCard>;

    fn tenant(&self, tenant: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(tenant).map(|t| Arc::clone(&t))
    }

    fn user(&self, tenant: &str, user: &str) -> Option<Arc<User>> {
        // Reuse one buffer per thread: this is on the rating hot path.
        USER_KEY.with(|key| {
            let mut key = key.borrow_mut();
            key.clear();
            key.push_str(tenant);
            key.push('/');
            key.push_str(user);
            self.users.get(key.as_str()).map(|u| Arc::clone(&u))
        })
    }

    fn rate_card(&self, rate_card: &str) -> Option<Arc<RateCard>> {
        self.rate_cards.get(rate_card).map(|c| Arc::clone(&c))
    }
}

/// The background reader of the reference topics.
#[derive(Debug)]
pub struct Loader {
    caught_up: Arc<CaughtUp>,
    /// Whether the reader still knows a broker.
    brokers: Arc<kafka::BrokerWatch>,
    stop: Arc<Cancel>,
    thread: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts reading the reference topics into `tables`.
    pub fn start(config: &WorkerConfig, tables: Arc<Tables>) -> Result<Self, Error> {
        let consumer = kafka::watched_reader(config, "reference")?;
        let brokers = Arc::clone(&consumer.context().0);
        let topics = config.topics.with_role(Role::Reference);
        let timeout = config.kafka_timeout();
        let mut assignment = TopicPartitionList::new();
        let mut targets: Vec<(String, i32, i64)> = Vec::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            let Some(t) = metadata.topics().first() else { continue };
            if let Some(err) = t.error() {
                let code = RDKafkaErrorCode::from(err);
                if crate::access::Cause::of_code(code).is_some() {
                    return Err(
                        crate::access::AccessError::denied(config, &format!("describe topic {topic}"), code).into()
                    );
                }
                return Err(Error::Topology(format!("reference topic {topic}: {err:?}")));
            }
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                if high > 0 {
                    targets.push((topic.to_string(), p.id(), high));
                }
            }
        }
        consumer.assign(&assignment)?;
        let caught_up = Arc::new(CaughtUp::default());
        if targets.is_empty() {
            caught_up.set();
        }
        let stop = Arc::new(Cancel::default());
        let thread = {
            let caught_up = Arc::clone(&caught_up);
            let stop = Arc::clone(&stop);
            let config = config.clone();
            std::thread::Builder::new()
                .name("tollgate-reference".into())
                .spawn(move || read_loop(&consumer, &config, &tables, targets, &caught_up, &stop))
                .map_err(|e| Error::Config(format!("cannot start the reference reader: {e}")))?
        };
        Ok(Loader { caught_up, brokers, stop, thread: Some(thread) })
    }

    /// Whether the reader still knows a broker (see [`kafka::BrokerWatch`]).
    pub fn brokers(&self) -> &kafka::BrokerWatch {
        &self.brokers
    }

    /// Whether the tables have caught up with the reference topics' state at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.get()
    }

    /// Why the loader stopped: Kafka refused to let it read a reference topic. The worker
    /// exits with it (a refusal is named, never retried forever).
    pub fn failure(&self) -> Option<AccessError> {
        self.caught_up.failure()
    }

    /// Waits until caught up, or until `cancel` is cancelled, or the loader failed.
    pub fn wait_caught_up(&self, cancel: &Cancel) -> Result<(), Error> {
        let started = Instant::now();
        let mut next_log = Duration::from_secs(10);
        // Two latches cannot be waited on at once: wake up now and then to look at `cancel`.
        while !self.caught_up.wait(Duration::from_millis(200)) {
            if cancel.is_cancelled() {
                return Err(Error::ShutDown("loading reference data"));
            }
            if started.elapsed() > next_log {
                tracing::warn!(waited_s = next_log.as_secs(), "still loading reference data");
                next_log *= 2;
            }
        }
        self.failure().map_or(Ok(()), |access| Err(Error::Access(access)))
    }
}

/// How far the loader got.
#[derive(Debug, Default)]
enum Progress {
    /// Reading towards the high watermarks noted at start.
    #[default]
    Loading,
    /// The tables caught up; updates keep applying.
    CaughtUp,
    /// Kafka refused to let the loader read; it stopped.
    Failed(AccessError),
}

/// A latch set once the reference tables caught up, or the loader failed.
#[derive(Debug, Default)]
struct CaughtUp {
    progress: Mutex<Progress>,
    signal: Condvar,
}

impl CaughtUp {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self) {
        *self.lock() = Progress::CaughtUp;
        self.signal.notify_all();
    }

    fn fail(&self, access: AccessError) {
        *self.lock() = Progress::Failed(access);
        self.signal.notify_all();
    }

    fn get(&self) -> bool {
        matches!(*self.lock(), Progress::CaughtUp)
    }

    fn failure(&self) -> Option<AccessError> {
        match &*self.lock() {
            Progress::Failed(access) => Some(access.clone()),
            Progress::Loading | Progress::CaughtUp => None,
        }
    }

    /// Waits up to `timeout`; returns whether the latch is set (caught up or failed).
    fn wait(&self, timeout: Duration) -> bool {
        let progress = self.lock();
        let (progress, _) = self
            .signal
            .wait_timeout_while(progress, timeout, |p| matches!(p, Progress::Loading))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !matches!(*progress, Progress::Loading)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_loop(
    consumer: &kafka::WatchedConsumer,
    config: &WorkerConfig,
    tables: &Tables,
    mut targets: Vec<(String, i32, i64)>,
    caught_up: &CaughtUp,
    stop: &Cancel,
) {
    let topics = &config.topics;
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(Err(e)) => {
                // An ACL that lets the worker describe a topic but not read it never heals. The
                // loader's group (`<group>-reference`) is only there because librdkafka wants
                // one: it never commits, so a refusal of that group costs it nothing.
                let group = e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed);
                if !group && let Some(access) = access::of_kafka(config, &e, || access::reference_resource(config)) {
                    telemetry::access_denied(access.cause, &access);
                    caught_up.fail(access);
                    return;
                }
                tracing::warn!(error = %e, "reference topics: consumer error, retrying");
            }
            Some(Ok(message)) => {
                let topic = message.topic();
                let Some(kind) = topics.kind_of(topic) else { continue };
                let label = kind.key();
                let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
                match tables.apply(kind, &key, message.payload(), config.max_record_bytes) {
                    Ok(()) => telemetry::reference_record(label, "applied"),
                    Err(error) => {
                        tracing::error!(topic, offset = message.offset(), key = %key, %error, "refused reference record");
                        telemetry::reference_record(label, "refused");
                    }
                }
                let (partition, offset) = (message.partition(), message.offset());
                targets.retain(|(t, p, high)| !(t == topic && *p == partition && offset + 1 >= *high));
            }
        }
        if !targets.is_empty() {
            // Transaction markers and compaction leave gaps: trust the position too.
            if let Ok(position) = consumer.position() {
                targets.retain(|(t, p, high)| {
                    position.find_partition(t, *p).and_then(|e| e.offset().to_raw()).is_none_or(|pos| pos < *high)
                });
            }
        }
        if targets.is_empty() && !caught_up.get() {
            let (tenants, users, cards) = tables.sizes();
            tracing::info!(tenants, users, rate_cards = cards, "reference data caught up");
            caught_up.set();
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_proto::{Message as _, limits};

    use super::*;

    fn tenant(id: &str) -> v1::Tenant {
        v1::Tenant { tenant_id: id.into(), currency: "USD".into(), ..v1::Tenant::default() }
    }

    /// The reference reader's statistics reach its watch, and a reader connected to its
    /// broker is not taken for one that forgot every broker.
    #[test]
    fn the_reference_reader_is_watched_through_its_statistics() {
        let kafka = crate::client::EmbeddedKafka::start().unwrap();
        let mut config = WorkerConfig { bootstrap_servers: kafka.bootstrap_servers(), ..WorkerConfig::default() };
        config.librdkafka.insert("statistics.interval.ms".into(), "100".into());
        kafka.create_topics(&crate::topics::specs(&config, 1)).unwrap();
        let loader = Loader::start(&config, Arc::new(Tables::default())).unwrap();
        loader.wait_caught_up(&Cancel::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while loader.brokers().reports() < 3 {
            assert!(Instant::now() < deadline, "no statistics read");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(loader.brokers().knows_none_for(), None);
    }

    #[test]
    fn a_reference_record_over_max_record_bytes_is_refused_undecoded() {
        let tables = Tables::default();
        let bytes = tenant("acme").encode_to_vec();
        assert_eq!(
            tables.apply(TopicKind::Tenants, "acme", Some(&bytes), bytes.len() - 1),
            Err(format!("a value of {} bytes, more than the {} allowed", bytes.len(), bytes.len() - 1))
        );
        assert_eq!(tables.sizes(), (0, 0, 0));
        assert_eq!(tables.apply(TopicKind::Tenants, "acme", Some(&bytes), bytes.len()), Ok(()));
        assert_eq!(tables.sizes(), (1, 0, 0));
    }

    /// Counts are checked on the wire, before decoding (so the object cannot be named yet);
    /// lengths after, naming the object.
    #[test]
    fn a_reference_record_over_a_bound_is_refused() {
        let tables = Tables::default();
        let max = limits::DEFAULT_MAX_RECORD_BYTES;
        let mut flooded = tenant("acme");
        flooded.low_balance_thresholds = vec!["1.00".into(); 101];
        assert_eq!(
            tables.apply(TopicKind::Tenants, "acme", Some(&flooded.encode_to_vec()), max),
            Err("lowBalanceThresholds has 101 entries, more than the 100 allowed".into())
        );
        let card = v1::RateCard {
            rate_card_id: "usd".into(),
            currency: "USD".into(),
            versions: vec![v1::RateCardVersion::default(); 1001],
        };
        assert_eq!(
            tables.apply(TopicKind::RateCards, "usd", Some(&card.encode_to_vec()), max),
            Err("versions has 1001 entries, more than the 1000 allowed".into())
        );
        let long = "u".repeat(1000);
        let user = v1::User { tenant_id: "acme".into(), user_id: long.clone(), ..v1::User::default() };
        assert_eq!(
            tables.apply(TopicKind::Users, &format!("acme/{long}"), Some(&user.encode_to_vec()), max),
            Err("user (an id of 1000 bytes) of tenant \"acme\": userId is 1000 bytes long, more than the 256 allowed"
                .into())
        );
        assert_eq!(tables.sizes(), (0, 0, 0));
    }
}
