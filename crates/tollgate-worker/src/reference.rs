//! Reference data tables, read whole from the compacted reference topics by every worker.
//!
//! The loader reads every partition of the tenants, users and rate-cards topics from the
//! beginning. It records the high watermarks at start and reports "caught up" once it has read
//! to them: no leg is rated before that. Afterwards it keeps reading, so updates apply live.
//! A record over `max_record_bytes`, or over a bound of [`tollgate_proto::limits`], is refused
//! (logged and counted) like any other invalid one. If Kafka refuses to let it read a topic
//! (an ACL allows describing the topic but not reading it), the loader stops and the worker
//! exits with the authorization error, rather than retry forever.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tollgate_core::{Catalog, FastState, RateCard, Tenant, User};
use tollgate_proto::{limits, v1};

use crate::access::{self, AccessError};
use crate::cancel::Cancel;
use crate::config::WorkerConfig;
use crate::topics::{Role, TopicKind};
use crate::{Error, kafka, telemetry};

/// Live reference tables, shared by all partition tasks of a worker.
///
/// Each key keeps the versions it had lately, each with the offset of the record that
/// brought it, so that a batch is rated with the reference data as of one position of the
/// reference topics (a [`ReferencePin`], see [`Tables::pinned`]) whenever it is rated: by this
/// worker now, after a failed attempt, or by the partition's next owner after a crash.
#[derive(Debug, Default)]
pub struct Tables {
    // Looked up for every record: the fast hasher, not SipHash.
    tenants: DashMap<String, Versions<Tenant>, FastState>,
    users: DashMap<String, Versions<User>, FastState>,
    rate_cards: DashMap<String, Versions<RateCard>, FastState>,
    /// How far each reference partition was applied, and where live reading began; waiters
    /// are woken on every change.
    positions: Mutex<Positions>,
    changed: Condvar,
}

/// How long a version replaced by a newer one is kept for batches pinned before the change.
pub const VERSIONS_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// At most how many replaced versions a key keeps (a key changed more often than this in
/// [`VERSIONS_KEPT_FOR`] forgets its oldest ones first).
pub const VERSIONS_KEPT: usize = 16;

#[derive(Debug, Default)]
struct Positions {
    /// Per reference topic, per partition: the offset after the last record applied, or
    /// after what the loader read past without a record (a transaction marker, an offset
    /// compacted away; the partition's end at start, once caught up).
    applied: ReferencePin,
    /// Per reference topic, per partition: the high watermark when the loader started.
    /// Records before it were read in the catch-up, after compaction may have dropped
    /// versions that a key had before them.
    live_from: ReferencePin,
    /// Applied reference records, counted.
    changes: u64,
}

/// A position of the reference topics: per topic, per partition (the index), the offset
/// after the last record applied. Reference data "as of" a pin is every record before it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ReferencePin {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_cards: Vec<i64>,
}

impl ReferencePin {
    fn of_kind(&self, kind: Kind) -> &Vec<i64> {
        match kind {
            Kind::Tenants => &self.tenants,
            Kind::Users => &self.users,
            Kind::RateCards => &self.rate_cards,
        }
    }

    fn of_kind_mut(&mut self, kind: Kind) -> &mut Vec<i64> {
        match kind {
            Kind::Tenants => &mut self.tenants,
            Kind::Users => &mut self.users,
            Kind::RateCards => &mut self.rate_cards,
        }
    }

    /// The offset after the last record of `partition` this pin includes (0: none).
    fn next(&self, kind: Kind, partition: i32) -> i64 {
        usize::try_from(partition).ok().and_then(|p| self.of_kind(kind).get(p)).copied().unwrap_or(0)
    }

    fn set(&mut self, kind: Kind, partition: i32, next: i64) {
        let Ok(p) = usize::try_from(partition) else { return };
        let offsets = self.of_kind_mut(kind);
        if offsets.len() <= p {
            offsets.resize(p + 1, 0);
        }
        offsets[p] = offsets[p].max(next);
    }

    /// Whether everything `other` includes is included here.
    pub fn covers(&self, other: &ReferencePin) -> bool {
        [Kind::Tenants, Kind::Users, Kind::RateCards].into_iter().all(|kind| {
            other.of_kind(kind).iter().enumerate().all(|(p, &next)| {
                let p = i32::try_from(p).unwrap_or(i32::MAX);
                next == 0 || self.next(kind, p) >= next
            })
        })
    }
}

/// The reference topics, as the versions' index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tenants,
    Users,
    RateCards,
}

impl Kind {
    fn of(kind: TopicKind) -> Option<Kind> {
        match kind {
            TopicKind::Tenants => Some(Kind::Tenants),
            TopicKind::Users => Some(Kind::Users),
            TopicKind::RateCards => Some(Kind::RateCards),
            _ => None,
        }
    }
}

/// Where a version came from: the partition and offset of its record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct At {
    partition: i32,
    offset: i64,
}

/// A key's current value (`None`: deleted) and the versions before it, oldest first.
#[derive(Debug)]
struct Versions<T> {
    at: At,
    value: Option<Arc<T>>,
    /// Boxed: most keys never change, and every worker holds every tenant and user.
    history: Option<Box<History<T>>>,
}

/// The versions a key had before its current one.
#[derive(Debug)]
struct History<T> {
    older: Vec<Replaced<T>>,
    /// Versions older than `older`'s first were dropped ([`VERSIONS_KEPT_FOR`],
    /// [`VERSIONS_KEPT`]): before it, what the key held is not known here.
    pruned: bool,
    /// When the key was deleted (its current version is a tombstone): the whole entry goes
    /// [`VERSIONS_KEPT_FOR`] later.
    deleted: Option<Instant>,
}

#[derive(Debug)]
struct Replaced<T> {
    at: At,
    value: Option<Arc<T>>,
    /// When the next version replaced it.
    until: Instant,
}

/// What a key held as of a pin.
enum AsOf<'a, T> {
    Known(Option<&'a Arc<T>>),
    /// The pin is before every version known here, and the key may have had one then.
    Unknown(Option<&'a Arc<T>>),
}

impl<T> Versions<T> {
    fn new(at: At, value: Option<Arc<T>>) -> Self {
        Versions { at, value, history: None }
    }

    /// A key first seen deleted: the tombstone is a version too (a pin before it may find the
    /// key's earlier value gone with compaction, which is then not taken for "no such key").
    fn deleted(at: At, now: Instant) -> Self {
        let history = History { older: Vec::new(), pruned: false, deleted: Some(now) };
        Versions { at, value: None, history: Some(Box::new(history)) }
    }

    fn replace(&mut self, at: At, value: Option<Arc<T>>, now: Instant) {
        let before = Replaced { at: self.at, value: self.value.take(), until: now };
        let history =
            self.history.get_or_insert_with(|| Box::new(History { older: Vec::new(), pruned: false, deleted: None }));
        history.older.push(before);
        history.deleted = value.is_none().then_some(now);
        self.at = at;
        self.value = value;
        self.prune(now);
    }

    /// Whether the entry can go: deleted longer ago than [`VERSIONS_KEPT_FOR`].
    fn gone(&self, now: Instant) -> bool {
        self.value.is_none()
            && self.history.as_ref().and_then(|h| h.deleted).is_none_or(|at| now.duration_since(at) > VERSIONS_KEPT_FOR)
    }

    /// Drops the versions replaced longer ago than [`VERSIONS_KEPT_FOR`], and the oldest past
    /// [`VERSIONS_KEPT`].
    fn prune(&mut self, now: Instant) {
        let Some(history) = &mut self.history else { return };
        let stale = history.older.iter().take_while(|v| now.duration_since(v.until) > VERSIONS_KEPT_FOR).count();
        let drop = stale.max(history.older.len().saturating_sub(VERSIONS_KEPT));
        if drop > 0 {
            history.older.drain(..drop);
            history.pruned = true;
        }
    }

    /// The version as of `pin`: the latest whose record is before it.
    fn as_of(&self, pin: &ReferencePin, kind: Kind, live_from: &ReferencePin) -> AsOf<'_, T> {
        let before = |at: At| at.offset < pin.next(kind, at.partition);
        if before(self.at) {
            return AsOf::Known(self.value.as_ref());
        }
        let (older, pruned) = self.history.as_deref().map_or((&[][..], false), |h| (&h.older[..], h.pruned));
        if let Some(v) = older.iter().rev().find(|v| before(v.at)) {
            return AsOf::Known(v.value.as_ref());
        }
        // No version known here is before the pin. The key had none then if nothing was
        // dropped here and the pin is after the catch-up's end (a version before the pin
        // would have been read, not compacted away before this worker read it).
        let earliest = older.first().map_or((self.at, self.value.as_ref()), |v| (v.at, v.value.as_ref()));
        if !pruned && pin.next(kind, earliest.0.partition) >= live_from.next(kind, earliest.0.partition) {
            AsOf::Known(None)
        } else {
            AsOf::Unknown(earliest.1)
        }
    }
}

thread_local! {
    static USER_KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Tables {
    /// Adds or replaces a tenant, as a record at `offset` of the tenants topic's partition 0.
    pub fn put_tenant(&self, tenant: Tenant, offset: i64) {
        self.put(tenant.id.to_string(), At { partition: 0, offset }, Some(tenant));
    }

    fn put<T: Keyed + PartialEq>(&self, key: String, at: At, value: Option<T>) {
        let map = T::map(self);
        match map.get_mut(key.as_str()) {
            // The same value again (a publisher's full sync, say): no version to keep.
            Some(versions) if versions.value.as_deref() == value.as_ref() => {}
            Some(mut versions) => versions.replace(at, value.map(Arc::new), Instant::now()),
            None if value.is_some() => drop(map.insert(key, Versions::new(at, value.map(Arc::new)))),
            None => drop(map.insert(key, Versions::deleted(at, Instant::now()))),
        }
        self.advance(T::KIND, at.partition, at.offset + 1);
    }

    /// The tables reflect `kind`'s `partition` up to `next` (a record applied or refused, or
    /// offsets read past without one); wakes the waiters.
    fn advance(&self, kind: Kind, partition: i32, next: i64) {
        let mut positions = self.lock();
        positions.applied.set(kind, partition, next);
        positions.changes += 1;
        drop(positions);
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where live reading of `topic`'s `partition` began: its high watermark when the loader
    /// started.
    pub fn live_from(&self, kind: TopicKind, partition: i32, high: i64) {
        if let Some(kind) = Kind::of(kind) {
            self.lock().live_from.set(kind, partition, high);
        }
    }

    /// The loader read every partition to where it ended at start: the tables reflect the
    /// topics up to there, though the last offsets read held no record (a transaction
    /// marker, a record compacted away). From there on every record is read as it comes.
    pub fn caught_up(&self) {
        let mut positions = self.lock();
        let Positions { applied, live_from, .. } = &mut *positions;
        for kind in [Kind::Tenants, Kind::Users, Kind::RateCards] {
            for (p, &high) in live_from.of_kind(kind).iter().enumerate() {
                applied.set(kind, i32::try_from(p).unwrap_or(i32::MAX), high);
            }
        }
        drop(positions);
        self.changed.notify_all();
    }

    /// The loader's consumer is at `next` in `kind`'s `partition`: every record before it was
    /// applied (what it passed without a record to apply was a transaction marker or an
    /// offset compacted away), so the tables reflect the partition up to there.
    pub fn reached(&self, kind: TopicKind, partition: i32, next: i64) {
        if let Some(kind) = Kind::of(kind) {
            self.advance(kind, partition, next);
        }
    }

    /// The position the tables reflect now: a batch pinned to it is rated with what they
    /// hold now, whatever is applied later.
    pub fn position(&self) -> ReferencePin {
        self.lock().applied.clone()
    }

    /// The tables as of `pin`, for rating a batch.
    pub fn pinned<'a>(&'a self, pin: &'a ReferencePin) -> Pinned<'a> {
        Pinned { tables: self, pin, live_from: self.lock().live_from.clone(), unknown: Cell::new(0) }
    }

    /// Drops the versions replaced longer ago than [`VERSIONS_KEPT_FOR`], and the keys deleted
    /// that long ago.
    pub fn prune(&self) {
        let now = Instant::now();
        fn sweep<T>(map: &DashMap<String, Versions<T>, FastState>, now: Instant) {
            map.retain(|_, versions| {
                versions.prune(now);
                !versions.gone(now)
            });
        }
        sweep(&self.tenants, now);
        sweep(&self.users, now);
        sweep(&self.rate_cards, now);
    }

    /// Whether some tenant is known (a deleted one is not).
    pub fn knows_a_tenant(&self) -> bool {
        self.tenants.iter().any(|v| v.value.is_some())
    }

    /// Sizes: (tenants, users, rate cards), deleted keys not counted.
    pub fn sizes(&self) -> (usize, usize, usize) {
        fn live<T>(map: &DashMap<String, Versions<T>, FastState>) -> usize {
            map.iter().filter(|v| v.value.is_some()).count()
        }
        (live(&self.tenants), live(&self.users), live(&self.rate_cards))
    }

    /// Waits until `ready` holds for the tables (checked after every applied reference record)
    /// or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, ready: impl Fn(&Tables) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Counted before asking: a change made while `ready` runs ends the wait at once.
            let seen = self.lock().changes;
            if ready(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            drop(
                self.changed
                    .wait_timeout_while(self.lock(), left, |p| p.changes == seen)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    }

    /// Applies the reference record at `partition`/`offset` (value `None` deletes the key); a
    /// value over `max_bytes` is refused without being decoded. A refused record still counts
    /// as applied: the position moves past it.
    pub fn apply(
        &self,
        kind: TopicKind,
        (partition, offset): (i32, i64),
        key: &str,
        payload: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<(), String> {
        let at = At { partition, offset };
        let result = self.apply_record(kind, at, key, payload, max_bytes);
        if result.is_err()
            && let Some(kind) = Kind::of(kind)
        {
            self.advance(kind, partition, offset + 1);
        }
        result
    }

    fn apply_record(
        &self,
        kind: TopicKind,
        at: At,
        key: &str,
        payload: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<(), String> {
        let Some(payload) = payload else {
            match kind {
                TopicKind::Tenants => self.put::<Tenant>(key.to_owned(), at, None),
                TopicKind::Users => self.put::<User>(key.to_owned(), at, None),
                TopicKind::RateCards => self.put::<RateCard>(key.to_owned(), at, None),
                other => return Err(format!("{other:?} is not a reference topic")),
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
                self.put(key.to_owned(), at, Some(tenant));
            }
            TopicKind::Users => {
                let user = limits::decode::<v1::User>(payload, max_bytes)
                    .and_then(User::try_from)
                    .map_err(|e| e.to_string())?;
                if user_key(user.tenant_id.as_str(), &user.id) != key {
                    return Err(format!("key {key:?} is not {:?}", user_key(user.tenant_id.as_str(), &user.id)));
                }
                self.put(key.to_owned(), at, Some(user));
            }
            TopicKind::RateCards => {
                let card = limits::decode::<v1::RateCard>(payload, max_bytes)
                    .and_then(RateCard::try_from)
                    .map_err(|e| e.to_string())?;
                if card.id != key {
                    return Err(format!("key {key:?} is not rate card id {:?}", card.id));
                }
                self.put(key.to_owned(), at, Some(card));
            }
            other => return Err(format!("{other:?} is not a reference topic")),
        }
        Ok(())
    }

    fn user_ref<R>(&self, tenant: &str, user: &str, f: impl FnOnce(Option<&Versions<User>>) -> R) -> R {
        // Reuse one buffer per thread: this is on the rating hot path.
        USER_KEY.with(|key| {
            let mut key = key.borrow_mut();
            key.clear();
            key.push_str(tenant);
            key.push('/');
            key.push_str(user);
            f(self.users.get(key.as_str()).as_deref())
        })
    }
}

/// A value type of the tables: its topic, and which map holds it.
trait Keyed: Sized {
    const KIND: Kind;
    fn map(tables: &Tables) -> &DashMap<String, Versions<Self>, FastState>;
}

impl Keyed for Tenant {
    const KIND: Kind = Kind::Tenants;
    fn map(tables: &Tables) -> &DashMap<String, Versions<Self>, FastState> {
        &tables.tenants
    }
}

impl Keyed for User {
    const KIND: Kind = Kind::Users;
    fn map(tables: &Tables) -> &DashMap<String, Versions<Self>, FastState> {
        &tables.users
    }
}

impl Keyed for RateCard {
    const KIND: Kind = Kind::RateCards;
    fn map(tables: &Tables) -> &DashMap<String, Versions<Self>, FastState> {
        &tables.rate_cards
    }
}

/// The tables as of a [`ReferencePin`]: what a batch is rated with.
#[derive(Debug)]
pub struct Pinned<'a> {
    tables: &'a Tables,
    pin: &'a ReferencePin,
    live_from: ReferencePin,
    /// Lookups whose version as of the pin was no longer known (the earliest known was
    /// used).
    unknown: Cell<u64>,
}

impl Pinned<'_> {
    /// How many lookups found the pin before every version they know (see [`Tables::prune`]).
    pub fn unknown(&self) -> u64 {
        self.unknown.get()
    }

    fn pick<T: Keyed>(&self, versions: Option<&Versions<T>>) -> Option<Arc<T>> {
        match versions?.as_of(self.pin, T::KIND, &self.live_from) {
            AsOf::Known(value) => value.cloned(),
            AsOf::Unknown(value) => {
                self.unknown.set(self.unknown.get() + 1);
                value.cloned()
            }
        }
    }
}

impl Catalog for Pinned<'_> {
    type TenantRef<'a>
        = Arc<Tenant>
    where
        Self: 'a;
    type UserRef<'a>
        = Arc<User>
    where
        Self: 'a;
    type RateCardRef<'a>
        = Arc<RateCard>
    where
        Self: 'a;

    fn tenant(&self, tenant: &str) -> Option<Arc<Tenant>> {
        self.pick(self.tables.tenants.get(tenant).as_deref())
    }

    fn user(&self, tenant: &str, user: &str) -> Option<Arc<User>> {
        self.tables.user_ref(tenant, user, |versions| self.pick(versions))
    }

    fn rate_card(&self, rate_card: &str) -> Option<Arc<RateCard>> {
        self.pick(self.tables.rate_cards.get(rate_card).as_deref())
    }
}

/// The key of a user record: `tenant_id/user_id`.
pub fn user_key(tenant: &str, user: &str) -> String {
    format!("{tenant}/{user}")
}

/// The tables as they are now (for the tenant API and the gauges; a batch is rated through
/// [`Tables::pinned`]).
impl Catalog for Tables {
    type TenantRef<'a> = Arc<Tenant>;
    type UserRef<'a> = Arc<User>;
    type RateCardRef<'a> = Arc<RateCard>;

    fn tenant(&self, tenant: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(tenant).and_then(|t| t.value.clone())
    }

    fn user(&self, tenant: &str, user: &str) -> Option<Arc<User>> {
        self.user_ref(tenant, user, |versions| versions.and_then(|u| u.value.clone()))
    }

    fn rate_card(&self, rate_card: &str) -> Option<Arc<RateCard>> {
        self.rate_cards.get(rate_card).and_then(|c| c.value.clone())
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
                if let Some(kind) = config.topics.kind_of(topic) {
                    tables.live_from(kind, p.id(), high);
                }
                if high > 0 {
                    targets.push((topic.to_string(), p.id(), high));
                }
            }
        }
        consumer.assign(&assignment)?;
        let caught_up = Arc::new(CaughtUp::default());
        if targets.is_empty() {
            tables.caught_up();
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

/// How often the loader drops the reference versions no batch can be pinned to any more.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn read_loop(
    consumer: &kafka::WatchedConsumer,
    config: &WorkerConfig,
    tables: &Tables,
    mut targets: Vec<(String, i32, i64)>,
    caught_up: &CaughtUp,
    stop: &Cancel,
) {
    let topics = &config.topics;
    let mut pruned = Instant::now();
    while !stop.is_cancelled() {
        if pruned.elapsed() >= PRUNE_EVERY {
            tables.prune();
            pruned = Instant::now();
        }
        match consumer.poll(Duration::from_millis(100)) {
            // Idle: records apply on this thread as they are polled, so the consumer's position
            // (the offset after the last one it handed out) is applied, markers included.
            None if caught_up.get() => {
                if let Ok(position) = consumer.position() {
                    for e in position.elements() {
                        if let (Some(kind), Some(next)) =
                            (topics.kind_of(e.topic()), e.offset().to_raw().filter(|n| *n >= 0))
                        {
                            tables.reached(kind, e.partition(), next);
                        }
                    }
                }
            }
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
                let at = (message.partition(), message.offset());
                match tables.apply(kind, at, &key, message.payload(), config.max_record_bytes) {
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
            tables.caught_up();
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

    fn usd_tenant(id: &str, currency: &str) -> Tenant {
        Tenant::try_from(v1::Tenant { currency: currency.into(), ..tenant(id) }).unwrap()
    }

    fn currency_of(tenant: Option<Arc<Tenant>>) -> Option<String> {
        tenant.map(|t| t.currency.to_string())
    }

    /// A batch pinned before a change is rated with the version before it, however late it
    /// is rated; a key that came after the pin is not there for it, one deleted after the
    /// pin still is.
    #[test]
    fn the_tables_as_of_a_pin_hold_the_versions_before_it() {
        let tables = Tables::default();
        tables.put_tenant(usd_tenant("acme", "USD"), 0);
        let before = tables.position();
        assert_eq!(before, ReferencePin { tenants: vec![1], ..ReferencePin::default() });
        tables.put_tenant(usd_tenant("acme", "EUR"), 1);
        tables.put_tenant(usd_tenant("globex", "GBP"), 2);
        let bytes = tenant("acme").encode_to_vec();
        assert!(tables.apply(TopicKind::Tenants, (0, 3), "initech", Some(&bytes), 1_000).is_err());
        tables.apply(TopicKind::Tenants, (0, 4), "acme", None, 1_000).unwrap();
        let now = tables.position();
        assert_eq!(now.tenants, vec![5], "a refused record moves the position too");

        let pinned = tables.pinned(&before);
        assert_eq!(currency_of(pinned.tenant("acme")), Some("USD".into()));
        assert_eq!(currency_of(pinned.tenant("globex")), None);
        let middle = ReferencePin { tenants: vec![3], ..ReferencePin::default() };
        assert_eq!(currency_of(tables.pinned(&middle).tenant("acme")), Some("EUR".into()));
        assert_eq!(currency_of(tables.pinned(&middle).tenant("globex")), Some("GBP".into()));
        assert_eq!(currency_of(tables.pinned(&now).tenant("acme")), None);
        assert_eq!(currency_of(tables.tenant("acme")), None, "the live tables hold the latest");
        assert_eq!(pinned.unknown(), 0);
        assert!(now.covers(&before) && !before.covers(&now));
        assert_eq!(tables.sizes(), (1, 0, 0));
    }

    /// A pin before every version known here is answered with the earliest known, and
    /// counted, when the key may have had a version then: read in the catch-up (an earlier
    /// one may have been compacted away), or after versions were dropped.
    #[test]
    fn a_pin_before_what_is_known_gets_the_earliest_version_and_is_counted() {
        let tables = Tables::default();
        tables.live_from(TopicKind::Tenants, 0, 10);
        tables.put_tenant(usd_tenant("acme", "USD"), 4);
        tables.put_tenant(usd_tenant("globex", "GBP"), 12);
        let early = ReferencePin { tenants: vec![2], ..ReferencePin::default() };
        let pinned = tables.pinned(&early);
        assert_eq!(currency_of(pinned.tenant("acme")), Some("USD".into()));
        assert_eq!(pinned.unknown(), 1);
        // A key first seen deleted, in the catch-up: its value before may be compacted away.
        tables.apply(TopicKind::Tenants, (0, 6), "initech", None, 1_000).unwrap();
        let pinned = tables.pinned(&early);
        assert_eq!(currency_of(pinned.tenant("initech")), None);
        assert_eq!(pinned.unknown(), 1);
        let live = ReferencePin { tenants: vec![11], ..ReferencePin::default() };
        let pinned = tables.pinned(&live);
        assert_eq!(currency_of(pinned.tenant("globex")), None, "first seen live, after the pin");
        assert_eq!(pinned.unknown(), 0);

        for offset in 13..13 + i64::try_from(VERSIONS_KEPT).unwrap() + 1 {
            tables.put_tenant(usd_tenant("globex", if offset % 2 == 1 { "EUR" } else { "GBP" }), offset);
        }
        let dropped = ReferencePin { tenants: vec![13], ..ReferencePin::default() };
        let pinned = tables.pinned(&dropped);
        assert_eq!(
            currency_of(pinned.tenant("globex")),
            Some("EUR".into()),
            "offset 12's version was dropped: the earliest known, 13's"
        );
        assert_eq!(pinned.unknown(), 1);
        let kept = ReferencePin { tenants: vec![21], ..ReferencePin::default() };
        let pinned = tables.pinned(&kept);
        assert_eq!(currency_of(pinned.tenant("globex")), Some("GBP".into()), "offset 20's version");
        assert_eq!(pinned.unknown(), 0);
    }

    /// Caught up, the tables reflect every partition up to where it ended at start, though
    /// its last offsets held no record (a transaction marker here): a key that comes after is
    /// known not to have been there for a batch pinned before it. The same value published
    /// again keeps no version of its own.
    #[test]
    fn caught_up_tables_know_what_came_after_and_keep_no_copy_of_a_value_sent_again() {
        let tables = Tables::default();
        tables.live_from(TopicKind::Tenants, 0, 10);
        tables.put_tenant(usd_tenant("acme", "USD"), 8);
        assert_eq!(tables.position().tenants, vec![9]);
        tables.caught_up();
        let before = tables.position();
        assert_eq!(before.tenants, vec![10]);
        tables.put_tenant(usd_tenant("globex", "GBP"), 10);
        tables.put_tenant(usd_tenant("acme", "USD"), 11);
        let pinned = tables.pinned(&before);
        assert_eq!(currency_of(pinned.tenant("globex")), None);
        assert_eq!(currency_of(pinned.tenant("acme")), Some("USD".into()));
        assert_eq!(pinned.unknown(), 0);
        assert!(tables.tenants.get("acme").unwrap().history.is_none(), "no version kept for the same value");
        // Read past a marker at 12 while idle: the position moves past it, never back.
        tables.reached(TopicKind::Tenants, 0, 13);
        tables.reached(TopicKind::Tenants, 0, 12);
        assert_eq!(tables.position().tenants, vec![13]);
    }

    #[test]
    fn a_reference_record_over_max_record_bytes_is_refused_undecoded() {
        let tables = Tables::default();
        let bytes = tenant("acme").encode_to_vec();
        assert_eq!(
            tables.apply(TopicKind::Tenants, (0, 0), "acme", Some(&bytes), bytes.len() - 1),
            Err(format!("a value of {} bytes, more than the {} allowed", bytes.len(), bytes.len() - 1))
        );
        assert_eq!(tables.sizes(), (0, 0, 0));
        assert_eq!(tables.apply(TopicKind::Tenants, (0, 1), "acme", Some(&bytes), bytes.len()), Ok(()));
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
            tables.apply(TopicKind::Tenants, (0, 0), "acme", Some(&flooded.encode_to_vec()), max),
            Err("lowBalanceThresholds has 101 entries, more than the 100 allowed".into())
        );
        let card = v1::RateCard {
            rate_card_id: "usd".into(),
            currency: "USD".into(),
            versions: vec![v1::RateCardVersion::default(); 1001],
        };
        assert_eq!(
            tables.apply(TopicKind::RateCards, (0, 0), "usd", Some(&card.encode_to_vec()), max),
            Err("versions has 1001 entries, more than the 1000 allowed".into())
        );
        let long = "u".repeat(1000);
        let user = v1::User { tenant_id: "acme".into(), user_id: long.clone(), ..v1::User::default() };
        assert_eq!(
            tables.apply(TopicKind::Users, (0, 0), &format!("acme/{long}"), Some(&user.encode_to_vec()), max),
            Err("user (an id of 1000 bytes) of tenant \"acme\": userId is 1000 bytes long, more than the 256 allowed"
                .into())
        );
        assert_eq!(tables.sizes(), (0, 0, 0));
    }
}
