//! Reference data tables, read whole from the compacted reference topics by every worker.
//!
//! The loader reads every partition of the tenants, users and rate-cards topics from the
//! beginning. It records the high watermarks at start and reports "caught up" once it has read
//! to them: no leg is rated before that. Afterwards it keeps reading, so updates apply live.

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::kafka::{Reader, ReaderContext};
use dashmap::DashMap;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_core::{Catalog, RateCard, Tenant, User};
use tollgate_proto::{Message as _, v1};

use crate::cancel::Cancel;
use crate::config::WorkerConfig;
use crate::topics::{Role, TopicKind, Topics};
use crate::{Error, kafka, telemetry};

/// Live reference tables, shared by all partition tasks of a worker.
#[derive(Debug, Default)]
pub struct Tables {
    tenants: DashMap<String, Arc<Tenant>>,
    users: DashMap<String, Arc<User>>,
    rate_cards: DashMap<String, Arc<RateCard>>,
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

    /// Applies one reference record (value `None` deletes the key).
    pub fn apply(&self, kind: TopicKind, key: &str, payload: Option<&[u8]>) -> Result<(), String> {
        let result = self.apply_record(kind, key, payload);
        *self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.changed.notify_all();
        result
    }

    fn apply_record(&self, kind: TopicKind, key: &str, payload: Option<&[u8]>) -> Result<(), String> {
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
                let tenant = Tenant::try_from(v1::Tenant::decode(payload).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                if tenant.id.as_str() != key {
                    return Err(format!("key {key:?} is not tenant id {:?}", tenant.id.as_str()));
                }
                self.put_tenant(tenant);
            }
            TopicKind::Users => {
                let user =
                    User::try_from(v1::User::decode(payload).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                if user_key(user.tenant_id.as_str(), &user.id) != key {
                    return Err(format!("key {key:?} is not {:?}", user_key(user.tenant_id.as_str(), &user.id)));
                }
                self.put_user(user);
            }
            TopicKind::RateCards => {
                let card = RateCard::try_from(v1::RateCard::decode(payload).map_err(|e| e.to_string())?)
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
    stop: Arc<Cancel>,
    thread: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts reading the reference topics into `tables`.
    pub fn start(config: &WorkerConfig, tables: Arc<Tables>) -> Result<Self, Error> {
        let consumer: Reader = kafka::reader(config, "reference").create_with_context(ReaderContext)?;
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
            let topics = config.topics.clone();
            std::thread::Builder::new()
                .name("tollgate-reference".into())
                .spawn(move || read_loop(&consumer, &topics, &tables, targets, &caught_up, &stop))
                .map_err(|e| Error::Config(format!("cannot start the reference reader: {e}")))?
        };
        Ok(Loader { caught_up, stop, thread: Some(thread) })
    }

    /// Whether the tables have caught up with the reference topics' state at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.get()
    }

    /// Waits until caught up, or until `cancel` is cancelled.
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
        Ok(())
    }
}

/// A latch set once the reference tables caught up.
#[derive(Debug, Default)]
struct CaughtUp {
    done: Mutex<bool>,
    signal: Condvar,
}

impl CaughtUp {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.signal.notify_all();
    }

    fn get(&self) -> bool {
        *self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `timeout`; returns whether the latch is set.
    fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (done, _) = self
            .signal
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *done
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
    consumer: &Reader,
    topics: &Topics,
    tables: &Tables,
    mut targets: Vec<(String, i32, i64)>,
    caught_up: &CaughtUp,
    stop: &Cancel,
) {
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "reference topics: consumer error, retrying"),
            Some(Ok(message)) => {
                let topic = message.topic();
                let Some(kind) = topics.kind_of(topic) else { continue };
                let label = kind.key();
                let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
                match tables.apply(kind, &key, message.payload()) {
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
