//! Per-tenant state: what the worker keeps in memory, writes to the changelog and restores.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use crate::FastState;
use crate::event::{CallLegEvent, LegKind};
use crate::instant::YearMonth;
use crate::ledger::Ledger;
use crate::money::{Currency, Money};
use crate::number::{Country, E164};
use crate::output::{CallType, Capability, NumberType, UsageFlags};
use crate::rates::{Prefix, Price};
use crate::{Id, Timestamp};

/// Everything tollgate knows about one tenant's credits and legs.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TenantState {
    /// The balance and its lots.
    pub ledger: Ledger,
    /// Running totals: `balance == funded + adjusted - usage_charges - forfeited`.
    pub totals: Totals,
    /// Last credit-event sequence number used.
    pub credit_sequence: u64,
    /// A depletion event was emitted and the balance has not been positive since.
    pub depleted: bool,
    /// Low-balance thresholds that fired and wait to be re-armed by funding.
    pub low_balance_fired: Vec<Money>,
    /// A recharge was requested and the balance has not been back at the trigger since: the
    /// trigger is disarmed for the rest of this crossing, whatever became of the request.
    pub recharge_pending: bool,
    /// The last answer to the pending request was a failure (a `rechargeFailed` command): no
    /// money is on its way, and none is asked for again before the balance is back at or
    /// above the trigger (funded another way). False when no request is pending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recharge_failed: bool,
    /// The subscription pool usage of the newest month an input drew from.
    pub pool: PoolUsage,
    /// Earlier months' pool usage, oldest first, kept while a leg started in those months can
    /// still draw (the retention window and the longest leg after the month ended): a leg
    /// draws from the pool of the month it started in, never from the newest month's, nor from
    /// a month started afresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_pools: Vec<PoolUsage>,
    /// Legs in progress, by leg id (iterated and serialized in leg-id order, so disconnects
    /// come out in a stable order). Read from the serde form but not written to it: a busy
    /// tenant has thousands, so the worker persists each leg as its own changelog record
    /// (earlier releases wrote them inside the tenant's record, which is still readable).
    #[serde(default, skip_serializing)]
    pub open_legs: OpenLegs,
    /// `ended` events that arrived before their `started`, by leg id. Persisted one record
    /// each, like `open_legs`.
    #[serde(default, skip_serializing)]
    pub parked_ends: ParkedEnds,
    /// Recently closed legs: late events for them are ignored. Not part of the serde form:
    /// it grows with traffic, so the worker persists it entry by entry from
    /// [`Recent::take_changes`].
    #[serde(skip)]
    pub closed_legs: Recent<()>,
    /// Recently applied input ids and their content fingerprints: duplicates are no-ops.
    /// Not part of the serde form, like `closed_legs`.
    #[serde(skip)]
    pub seen: Recent<u64>,
    /// Latest event time applied: drives the retention of `seen`, `closed_legs`, parked ends.
    pub watermark: Timestamp,
    /// The newest cutoff the windows were forgotten before ([`TenantState::forget_before`]: by
    /// the rater as the watermark moved, or by a restore under a shorter window). An input
    /// older than it is refused as too late whatever
    /// `retention_seconds` is now: a window made longer after the fact does not bring back
    /// the ids forgotten under the shorter one. Zero: nothing forgotten yet (or a record
    /// written by a release before this field).
    #[serde(default)]
    pub forgotten_before: Timestamp,
    /// The currency the tenant's money is held in: its reference's currency when an input
    /// was last applied (`None` in a state that no input has been applied to yet, or written
    /// by a release before this field). Amounts carry no currency of their own, so a tenant
    /// whose reference names another currency while it holds money ([`TenantState::holds_money`])
    /// is refused (`currency_changed`) rather than having its balance read in the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

impl OpenLeg {
    /// Notes `minutes` taken from `month`'s pool.
    pub fn drew_from_pool(&mut self, month: YearMonth, minutes: u32) {
        if minutes == 0 {
            return;
        }
        self.pool_minutes += minutes;
        match self.pool_draws.iter_mut().find(|(m, _)| *m == month) {
            Some((_, drawn)) => *drawn += minutes,
            None => {
                self.pool_draws.push((month, minutes));
                self.pool_draws.sort_unstable();
            }
        }
    }
}

impl TenantState {
    /// The currency the state's money is held in: the pinned one, or `reference` (the
    /// tenant's reference currency) while none is.
    pub fn currency_held(&self, reference: Currency) -> Currency {
        self.currency.unwrap_or(reference)
    }

    /// Whether anything of the state is an amount of money: a balance, a debt or a lot, a
    /// running total, or a leg in progress (priced, and perhaps debited, in the currency it
    /// started in). A state that holds none can take another currency.
    pub fn holds_money(&self) -> bool {
        let Totals { funded, adjusted, usage_charges, forfeited, orphan_ends_dropped: _ } = &self.totals;
        self.ledger.balance() != Money::ZERO
            || self.ledger.debt() != Money::ZERO
            || self.ledger.lots().next().is_some()
            || [funded, adjusted, usage_charges, forfeited].iter().any(|m| **m != Money::ZERO)
            || !self.open_legs.is_empty()
    }

    /// The credit balance.
    pub fn balance(&self) -> Money {
        self.ledger.balance()
    }

    /// The time from which an id applied (or a leg closed) at event time `at` is kept in a
    /// retention window: its own time, or the tenant's newest event time when it came late.
    ///
    /// Kept from its own time alone, a late id went in among the newer ones: a `started`
    /// sent together with its `ended` went behind every leg that ended meanwhile, moving all
    /// of them (a busy tenant's window holds tens of thousands). From the newest time it goes
    /// at the back. An id is so kept at least as long as its own time is inside the window, as
    /// deduplication needs, and longer by how late it came, at most one window.
    pub fn kept_from(&self, at: Timestamp) -> Timestamp {
        at.max(self.watermark)
    }

    /// Remembers that input `id`, of content `fingerprint`, was applied at event time `at`
    /// (see [`TenantState::kept_from`]). The id comes with its key, which the rater computed
    /// to look it up in `seen` first.
    pub fn remember_applied(&mut self, id: KeyedId, fingerprint: u64, at: Timestamp) {
        let kept_from = self.kept_from(at);
        self.seen.insert_keyed(id, fingerprint, kept_from);
    }

    /// Remembers that `leg` closed at event time `at` (see [`TenantState::kept_from`]).
    pub fn remember_closed(&mut self, leg: impl Into<Id>, at: Timestamp) {
        let kept_from = self.kept_from(at);
        self.closed_legs.insert(leg, (), kept_from);
    }

    /// Starts journaling changes of `seen`, `closed_legs` and `open_legs` (see
    /// [`Recent::take_changes`] and [`OpenLegs::take_changes`]).
    pub fn track_changes(&mut self) {
        self.seen.track_changes();
        self.closed_legs.track_changes();
        self.open_legs.track_changes();
        self.parked_ends.track_changes();
    }

    /// A copy of everything but the two retention windows, the open legs and the parked ends,
    /// which grow with traffic and are rolled back from their journals instead
    /// ([`Recent::revert`], [`OpenLegs::revert`], [`ParkedEnds::revert`]): what a batch copies
    /// of a tenant does not grow with its calls.
    pub fn snapshot(&mut self) -> TenantState {
        let seen = std::mem::take(&mut self.seen);
        let closed_legs = std::mem::take(&mut self.closed_legs);
        let open_legs = std::mem::take(&mut self.open_legs);
        let parked_ends = std::mem::take(&mut self.parked_ends);
        let copy = self.clone();
        self.seen = seen;
        self.closed_legs = closed_legs;
        self.open_legs = open_legs;
        self.parked_ends = parked_ends;
        copy
    }

    /// Forgets the applied ids and closed legs remembered before `cutoff`, and the pools of
    /// the months that ended before it: what the rater forgot by the time the tenant's
    /// watermark reached it ([`crate::rating::horizon`]).
    pub fn forget_before(&mut self, cutoff: Timestamp) {
        self.seen.prune(cutoff);
        self.closed_legs.prune(cutoff);
        self.forget_pools_before(cutoff);
        self.forgotten_before = self.forgotten_before.max(cutoff);
    }

    /// Forgets the earlier months' pools that ended more than a leg's longest duration before
    /// `cutoff`: no input older than the cutoff is rated, and a leg draws from the month it
    /// started in, at most [`MAX_LEG_SECONDS`](crate::rating::MAX_LEG_SECONDS) before its end, so none of those months can
    /// draw again (but from an end stamped long after its leg, which draws nothing).
    fn forget_pools_before(&mut self, cutoff: Timestamp) {
        if self.earlier_pools.is_empty() {
            return;
        }
        let month = pools_kept_from(cutoff);
        self.earlier_pools.retain(|pool| pool.month >= month);
    }

    /// The pool usage of `month`, when one is kept (a month nothing drew from has none).
    pub fn pool_of(&self, month: YearMonth) -> Option<&PoolUsage> {
        if self.pool.month == month {
            Some(&self.pool)
        } else {
            self.earlier_pools.iter().find(|pool| pool.month == month)
        }
    }

    /// The pool usage of `month`, started when there is none. A month after the newest
    /// becomes the newest, and the newest joins the earlier ones (when anything was drawn or
    /// announced in it); an earlier month is kept among them, in order.
    pub fn pool_of_mut(&mut self, month: YearMonth) -> &mut PoolUsage {
        if month > self.pool.month {
            let newest = std::mem::replace(&mut self.pool, PoolUsage { month, ..PoolUsage::default() });
            if newest.used_minutes > 0 || newest.alerted_80 || newest.alerted_100 {
                self.earlier_pools.push(newest);
            }
            return &mut self.pool;
        }
        if month == self.pool.month {
            return &mut self.pool;
        }
        let at = self.earlier_pools.partition_point(|pool| pool.month < month);
        if self.earlier_pools.get(at).is_none_or(|pool| pool.month != month) {
            self.earlier_pools.insert(at, PoolUsage { month, ..PoolUsage::default() });
        }
        &mut self.earlier_pools[at]
    }
}

/// The oldest month whose pool a tenant keeps once it forgot what came before `cutoff`: the
/// month a leg ending at the cutoff may have started in.
pub(crate) fn pools_kept_from(cutoff: Timestamp) -> YearMonth {
    crate::rating::horizon(cutoff, crate::rating::MAX_LEG_SECONDS).year_month()
}

/// Running totals of the ledger, for conservation checks and summaries.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Money funded (lots and paid recharges).
    pub funded: Money,
    /// Signed sum of manual adjustments.
    pub adjusted: Money,
    /// Sum of every leg debit (equals the sum of rated charges once the legs ended).
    pub usage_charges: Money,
    /// Expired lot remainders.
    pub forfeited: Money,
    /// Parked `ended` events dropped unrated: no `started` came within the retention window,
    /// or the one that came was after the end (an end before its start is bad input).
    pub orphan_ends_dropped: u64,
}

/// The tenant's subscription pool for one UTC month.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct PoolUsage {
    /// The month the counters are for.
    pub month: YearMonth,
    /// Pooled minutes used.
    pub used_minutes: u32,
    /// The 80 % event was emitted this month.
    pub alerted_80: bool,
    /// The 100 % event was emitted this month.
    pub alerted_100: bool,
}

/// A leg in progress.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OpenLeg {
    /// Call id.
    pub call_id: Id,
    /// Meeting id.
    pub conference_id: Id,
    /// Organizer billed.
    pub organizer_id: Id,
    /// Organizer's usage location at the start.
    pub organizer_location: Country,
    /// How it joined.
    pub kind: LegKind,
    /// Call type.
    pub call_type: CallType,
    /// Number type.
    pub number_type: NumberType,
    /// The priced number.
    pub priced_number: E164,
    /// Start instant.
    pub started_at: Timestamp,
    /// What pays.
    pub capability: Capability,
    /// The price (none for unpriced legs).
    pub price: Option<Price>,
    /// Rate card id.
    pub rate_card_id: Id,
    /// Rate card version label.
    pub rate_card_version: Id,
    /// Matched prefix.
    pub rate_prefix: Option<Prefix>,
    /// Anomalies so far.
    pub flags: UsageFlags,
    /// Highest connected seconds reported.
    pub elapsed_seconds: u32,
    /// Pooled minutes taken by this leg.
    pub pool_minutes: u32,
    /// Of them, how many each month's pool gave, oldest month first (a leg of at most 24 h
    /// draws from one month or two): what a final duration below an interim gives back, to
    /// the months they came from, the newest first. Empty in a leg written by a release
    /// before it, which then gives nothing back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool_draws: Vec<(YearMonth, u32)>,
    /// Pooled in full (the tenant's pool split is finish-in-pool and the pool had minutes
    /// when the leg started).
    #[serde(default)]
    pub pooled_in_full: bool,
    /// Billable minutes already assigned to the pool or to credits.
    pub minutes_accounted: u32,
    /// Sum of this leg's debits so far.
    pub debited: Money,
    /// A disconnect decision was emitted for it.
    pub disconnect_sent: bool,
    /// For an unpriced leg, what would pay for it if it had a price (`Ppm`: credits; `Pool`:
    /// the pool, then credits): free as it is, it is a credit-funded leg at the cutoff as it
    /// was at its start (blocked at zero). `None` for a priced leg, and in a leg written by a
    /// release before it (then never disconnected, as those releases did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_paid_as: Option<Capability>,
}

/// The fewest changes in a batch after which a journal starts again with room for as many
/// (see [`Recent::take_changes`]).
const JOURNAL_ROOM_FROM: usize = 64;

/// The room an emptied journal starts with after a batch of `last` changes: as many when that
/// many is a busy tenant's batch, none otherwise.
fn journal_room(last: usize) -> usize {
    if last >= JOURNAL_ROOM_FROM { last } else { 0 }
}

/// Legs in progress by leg id.
///
/// A hash map, not a `BTreeMap`: a leg goes in when it starts and out when it ends, and a
/// B-tree allocates, fills and frees a node (eleven `OpenLeg`s wide) whenever a tenant's open
/// legs go from none to one and back, on every leg of a quiet tenant. What used the order still gets
/// it: iteration, `Debug` and the serialized form (the same JSON object as the `BTreeMap`
/// wrote) are sorted by leg id, which costs a sort of the open legs at those rare times
/// (disconnects, snapshots).
///
/// While tracking ([`OpenLegs::track_changes`]), the first change of each leg keeps what the
/// leg was before it, so a batch is rolled back, and its changed legs found, without a copy
/// of every open leg.
#[derive(Clone, Default)]
pub struct OpenLegs {
    legs: HashMap<Id, OpenLeg, FastState>,
    /// Boxed: every restored tenant tracks, and most have no leg open (8 bytes, not 40).
    journal: Option<Box<LegChanges>>,
}

/// The legs changed since the journal was last taken, each with what it was before its first
/// change (`None`: it was not open).
pub type LegChanges = HashMap<Id, Option<OpenLeg>, FastState>;

/// Equal when the same legs are open; the journal is bookkeeping.
impl PartialEq for OpenLegs {
    fn eq(&self, other: &Self) -> bool {
        self.legs == other.legs
    }
}

impl Eq for OpenLegs {}

impl OpenLegs {
    /// From now on, remember what each changed leg was (see [`OpenLegs::take_changes`]).
    pub fn track_changes(&mut self) {
        self.journal.get_or_insert_with(Box::default);
    }

    /// The changes since the last call (empty when not tracking); the journal starts again
    /// with room as [`Recent::take_changes`]'s does.
    pub fn take_changes(&mut self) -> LegChanges {
        self.journal
            .as_mut()
            .map(|journal| {
                let room = LegChanges::with_capacity_and_hasher(journal_room(journal.len()), FastState::default());
                std::mem::replace(&mut **journal, room)
            })
            .unwrap_or_default()
    }

    /// Undoes `changes` (taken with [`OpenLegs::take_changes`]): each leg back to what it was.
    pub fn revert(&mut self, changes: LegChanges) {
        for (leg_id, before) in changes {
            match before {
                Some(leg) => self.legs.insert(leg_id, leg),
                None => self.legs.remove(&leg_id),
            };
        }
    }

    /// Journals `leg_id`'s present value before its first change.
    fn note(&mut self, leg_id: &Id) {
        if let Some(journal) = &mut self.journal {
            if !journal.contains_key(leg_id) {
                journal.insert(leg_id.clone(), self.legs.get(leg_id).cloned());
            }
        }
    }

    /// How many legs are open.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// True when no leg is open.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// The open leg `leg_id`.
    pub fn get(&self, leg_id: &str) -> Option<&OpenLeg> {
        self.legs.get(leg_id)
    }

    /// Whether `leg_id` is open.
    pub fn contains_key(&self, leg_id: &str) -> bool {
        self.legs.contains_key(leg_id)
    }

    /// Opens (or replaces) a leg; returns the one it replaced.
    pub fn insert(&mut self, leg_id: Id, leg: OpenLeg) -> Option<OpenLeg> {
        self.note(&leg_id);
        self.legs.insert(leg_id, leg)
    }

    /// Closes a leg; returns it if it was open.
    pub fn remove(&mut self, leg_id: &str) -> Option<OpenLeg> {
        let (leg_id, leg) = self.legs.remove_entry(leg_id)?;
        if let Some(journal) = &mut self.journal {
            journal.entry(leg_id).or_insert_with(|| Some(leg.clone()));
        }
        Some(leg)
    }

    /// The open legs in leg-id order.
    pub fn iter(&self) -> std::vec::IntoIter<(&Id, &OpenLeg)> {
        let mut all: Vec<(&Id, &OpenLeg)> = self.legs.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// The open leg `leg_id`, to change (journaled first).
    pub fn get_mut(&mut self, leg_id: &str) -> Option<&mut OpenLeg> {
        let (leg_id, _) = self.legs.get_key_value(leg_id)?;
        let leg_id = leg_id.clone();
        self.note(&leg_id);
        self.legs.get_mut(&leg_id)
    }

    /// The open legs in no particular order: for a look through all of them where the order
    /// does not matter, without the sort of [`OpenLegs::iter`].
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&Id, &OpenLeg)> {
        self.legs.iter()
    }

    /// The leg ids in order.
    pub fn keys(&self) -> std::vec::IntoIter<&Id> {
        self.iter().map(|(k, _)| k).collect::<Vec<_>>().into_iter()
    }

    /// The legs in leg-id order.
    pub fn values(&self) -> std::vec::IntoIter<&OpenLeg> {
        self.iter().map(|(_, v)| v).collect::<Vec<_>>().into_iter()
    }

    /// The first `n` legs in leg-id order, without sorting the others: a snapshot taken on
    /// every batch lists a few legs of a tenant that may have thousands open.
    pub fn first(&self, n: usize) -> Vec<(&Id, &OpenLeg)> {
        let mut all: Vec<(&Id, &OpenLeg)> = self.legs.iter().collect();
        if n < all.len() {
            all.select_nth_unstable_by(n, |a, b| a.0.cmp(b.0));
            all.truncate(n);
        }
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }
}

impl<'a> IntoIterator for &'a OpenLegs {
    type Item = (&'a Id, &'a OpenLeg);
    type IntoIter = std::vec::IntoIter<(&'a Id, &'a OpenLeg)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for OpenLegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for OpenLegs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for OpenLegs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let legs = BTreeMap::<Id, OpenLeg>::deserialize(deserializer)?;
        Ok(OpenLegs { legs: legs.into_iter().collect(), journal: None })
    }
}

/// `ended` events waiting for their `started`, by leg id (iterated and serialized in leg-id
/// order), and in the order they leave the retention window: dropping the ones past it costs
/// only what is dropped, however many wait (a call controller that lost its starts could
/// park thousands, and every input that moves the tenant's time on drops what fell out).
///
/// While tracking ([`ParkedEnds::track_changes`]), the first change of each leg's end keeps
/// what it was before, as [`OpenLegs`] does: a batch is rolled back, and its changed ends
/// found, without a copy of every parked end.
#[derive(Clone, Default)]
pub struct ParkedEnds {
    /// Hashed: every `started` looks its leg up here, and a tree of thousands of ids would
    /// compare a dozen of them, each a cache miss.
    by_leg: HashMap<Id, CallLegEvent, FastState>,
    by_time: BTreeSet<(Timestamp, Id)>,
    /// Boxed, as [`OpenLegs`]'s: most tenants park nothing.
    journal: Option<Box<ParkedChanges>>,
}

/// The parked ends changed since the journal was last taken, in leg-id order, each with what
/// it was before its first change (`None`: nothing was parked for the leg).
pub type ParkedChanges = BTreeMap<Id, Option<CallLegEvent>>;

/// Equal when the same ends wait; the time index follows from them, the journal is
/// bookkeeping.
impl PartialEq for ParkedEnds {
    fn eq(&self, other: &Self) -> bool {
        self.by_leg == other.by_leg
    }
}

impl Eq for ParkedEnds {}

impl ParkedEnds {
    /// How many ends wait.
    pub fn len(&self) -> usize {
        self.by_leg.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.by_leg.is_empty()
    }

    /// The end waiting for `leg_id`'s start.
    pub fn get(&self, leg_id: &str) -> Option<&CallLegEvent> {
        self.by_leg.get(leg_id)
    }

    /// Whether an end waits for `leg_id`'s start.
    pub fn contains_key(&self, leg_id: &str) -> bool {
        self.by_leg.contains_key(leg_id)
    }

    /// From now on, remember what each changed end was (see [`ParkedEnds::take_changes`]).
    pub fn track_changes(&mut self) {
        self.journal.get_or_insert_with(Box::default);
    }

    /// The changes since the last call (empty when not tracking).
    pub fn take_changes(&mut self) -> ParkedChanges {
        self.journal.as_mut().map(|journal| std::mem::take(&mut **journal)).unwrap_or_default()
    }

    /// Undoes `changes` (taken with [`ParkedEnds::take_changes`]): each leg's end back to what
    /// it was. Not journaled.
    pub fn revert(&mut self, changes: ParkedChanges) {
        let journal = self.journal.take();
        for (leg_id, before) in changes {
            match before {
                Some(ended) => self.insert(leg_id, ended),
                None => self.remove(&leg_id),
            };
        }
        self.journal = journal;
    }

    /// Journals `leg_id`'s present end before its first change.
    fn note(&mut self, leg_id: &Id) {
        if let Some(journal) = &mut self.journal {
            if !journal.contains_key(leg_id) {
                journal.insert(leg_id.clone(), self.by_leg.get(leg_id).cloned());
            }
        }
    }

    /// Parks `ended` for `leg_id`; returns the end it replaced.
    pub fn insert(&mut self, leg_id: Id, ended: CallLegEvent) -> Option<CallLegEvent> {
        self.note(&leg_id);
        let at = ended.occurred_at;
        let replaced = self.by_leg.insert(leg_id.clone(), ended);
        if let Some(old) = &replaced {
            self.by_time.remove(&(old.occurred_at, leg_id.clone()));
        }
        self.by_time.insert((at, leg_id));
        replaced
    }

    /// Takes the end waiting for `leg_id`'s start. Every `started` asks, and most tenants park
    /// nothing: an empty map is not asked (a lookup skips hashing then, a removal does not).
    pub fn remove(&mut self, leg_id: &str) -> Option<CallLegEvent> {
        if self.by_leg.is_empty() {
            return None;
        }
        let (leg_id, ended) = self.by_leg.remove_entry(leg_id)?;
        if let Some(journal) = &mut self.journal {
            journal.entry(leg_id.clone()).or_insert_with(|| Some(ended.clone()));
        }
        self.by_time.remove(&(ended.occurred_at, leg_id));
        Some(ended)
    }

    /// Drops the ends that happened before `cutoff`; returns how many.
    pub fn expire_before(&mut self, cutoff: Timestamp) -> usize {
        let mut dropped = 0;
        while let Some((_, leg_id)) = self.by_time.first().filter(|(at, _)| *at < cutoff).cloned() {
            self.remove(&leg_id);
            dropped += 1;
        }
        dropped
    }

    /// The waiting ends in leg-id order.
    pub fn iter(&self) -> std::vec::IntoIter<(&Id, &CallLegEvent)> {
        let mut all: Vec<(&Id, &CallLegEvent)> = self.by_leg.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// The legs whose end waits, in order.
    pub fn keys(&self) -> std::vec::IntoIter<&Id> {
        self.iter().map(|(k, _)| k).collect::<Vec<_>>().into_iter()
    }
}

impl<'a> IntoIterator for &'a ParkedEnds {
    type Item = (&'a Id, &'a CallLegEvent);
    type IntoIter = std::vec::IntoIter<(&'a Id, &'a CallLegEvent)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(Id, CallLegEvent)> for ParkedEnds {
    fn from_iter<I: IntoIterator<Item = (Id, CallLegEvent)>>(ends: I) -> Self {
        let mut parked = ParkedEnds::default();
        for (leg_id, ended) in ends {
            parked.insert(leg_id, ended);
        }
        parked
    }
}

impl std::fmt::Debug for ParkedEnds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ParkedEnds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ParkedEnds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<Id, CallLegEvent>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// The key a [`Recent`] set keeps for an id: two 64-bit hashes of it by two different
/// algorithms, xxh3 and foldhash ([`FastState`]), side by side (one 128-bit xxh3 hash cost
/// more time: docs/BENCHMARKS.md).
///
/// The set keeps no id: it would hold each one's allocation for the whole window (48 h by
/// default), a reference count to drop and a block to free, cold by then, for every id it
/// forgets, and a string to hash again and compare. The changelog's window segments keep
/// the ids themselves (written from [`Change::Added`], which carries the id), and a restore
/// keys them again. Two different ids with one key would make the later one look seen: an
/// input refused as `duplicate_conflict` (its fingerprint differs, so it is dead-lettered,
/// never applied twice), or a leg refused as started already. With ten million ids in one
/// tenant's window, the chance that any two share a key is about one in 10^25.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IdKey(u128);

impl IdKey {
    /// The key of `id`.
    #[inline]
    pub fn of(id: &str) -> IdKey {
        let xxh3 = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        let foldhash = FastState::default().hash_one(id);
        IdKey(u128::from(xxh3) << 64 | u128::from(foldhash))
    }
}

/// A key hashes as its foldhash half: it is a hash of the id already, and hashing it again
/// (what a derived `Hash` under [`FastState`] did) cost every lookup of a window two more
/// multiplies. [`KeyState`] passes it through.
impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 as u64);
    }
}

/// The hasher of the maps keyed by [`IdKey`]: the key's foldhash half is the hash.
#[derive(Clone, Copy, Default, Debug)]
pub struct KeyState;

impl BuildHasher for KeyState {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`KeyState`].
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    /// Not what an [`IdKey`] writes; any other bytes are mixed in, so a map of them stays
    /// correct (if slower).
    fn write(&mut self, bytes: &[u8]) {
        self.0 = FastState::default().hash_one((self.0, bytes));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// An id with its [`IdKey`], computed once for the lookup before an insert and the insert.
#[derive(Clone, Debug)]
pub struct KeyedId {
    id: Id,
    key: IdKey,
}

impl KeyedId {
    /// `id` and its key.
    #[inline]
    pub fn new(id: Id) -> KeyedId {
        let key = IdKey::of(&id);
        KeyedId { id, key }
    }

    /// The id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// Its key.
    pub fn key(&self) -> IdKey {
        self.key
    }
}

/// Ids seen recently, by event time, with a value each; entries older than the retention
/// window (by the tenant's watermark) are dropped. Each id is kept as its [`IdKey`].
#[derive(Clone, Debug)]
pub struct Recent<V> {
    entries: HashMap<IdKey, V, KeyState>,
    order: VecDeque<(Timestamp, IdKey)>,
    /// Changes since the last [`Recent::take_changes`], when tracking.
    journal: Option<Vec<Change<V>>>,
}

/// One change of a [`Recent`] set.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change<V> {
    /// `id` was remembered as of `at`.
    Added {
        /// The id (what the changelog writes).
        id: Id,
        /// Its value.
        value: V,
        /// When.
        at: Timestamp,
    },
    /// The id of `key` was forgotten.
    Removed {
        /// Its key.
        key: IdKey,
        /// The value it had.
        value: V,
        /// When it had been remembered.
        at: Timestamp,
    },
}

/// Equal when they keep the same ids, values and times; the journal is bookkeeping.
impl<V: PartialEq> PartialEq for Recent<V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.order == other.order
    }
}

impl<V: Eq> Eq for Recent<V> {}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent { entries: HashMap::default(), order: VecDeque::new(), journal: None }
    }
}

/// Where an entry of time `at` goes in a queue sorted by time: after every entry of its time
/// or older (`order.partition_point(|(t, _)| *t <= at)`). The rater never inserts late (it
/// remembers from the tenant's newest time) and a restore inserts in time order, so this
/// serves direct callers of [`Recent::insert`]; an entry late by little is found near the
/// back: the search first steps back from the newest entry by 1, 2, 4, ... entries and halves
/// the last step.
fn after_newest_up_to<K>(order: &VecDeque<(Timestamp, K)>, at: Timestamp) -> usize {
    // The place is in low..=high: every entry before `low` is of `at` or older, every entry
    // from `high` on newer.
    let (mut low, mut high) = (0, order.len());
    let mut step = 1;
    while step <= order.len() {
        let probe = order.len() - step;
        if order[probe].0 <= at {
            low = probe + 1;
            break;
        }
        high = probe;
        step *= 2;
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if order[middle].0 <= at {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

impl<V: Clone> Recent<V> {
    /// Rebuilds a set from persisted entries (any order).
    pub fn from_entries<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, V, Timestamp)>) -> Self {
        let mut all: Vec<(IdKey, V, Timestamp)> =
            entries.into_iter().map(|(id, value, at)| (IdKey::of(id.as_ref()), value, at)).collect();
        all.sort_by_key(|e| e.2);
        let mut recent = Recent::default();
        for (key, value, at) in all {
            recent.insert_key(key, value, at);
        }
        recent
    }

    /// From now on, remember every change for [`Recent::take_changes`].
    pub fn track_changes(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The changes since the last call (empty when not tracking). After a batch of at least
    /// [`JOURNAL_ROOM_FROM`] changes the journal starts again with room for as many: a busy
    /// tenant's batches are alike, so it is not grown from nothing (and copied at each
    /// doubling) every batch. After a smaller one it starts empty, so that a tenant touched
    /// now and then does not keep an empty journal's room while it is idle.
    pub fn take_changes(&mut self) -> Vec<Change<V>> {
        self.journal
            .as_mut()
            .map(|journal| std::mem::replace(journal, Vec::with_capacity(journal_room(journal.len()))))
            .unwrap_or_default()
    }

    /// Undoes `changes` (taken from this set with [`Recent::take_changes`], newest last), so a
    /// batch can be rolled back without copying the whole set beforehand. Inserts are of new
    /// ids (the rater checks before it remembers), so undoing one forgets the id.
    pub fn revert(&mut self, changes: &[Change<V>]) {
        for change in changes.iter().rev() {
            match change {
                Change::Added { id, .. } => {
                    let key = IdKey::of(id);
                    self.entries.remove(&key);
                    if let Some(at) = self.order.iter().rposition(|(_, o)| *o == key) {
                        self.order.remove(at);
                    }
                }
                Change::Removed { key, value, at } => {
                    self.entries.insert(*key, value.clone());
                    self.order.push_front((*at, *key));
                }
            }
        }
    }

    /// Remembers `id` as of `at` (an [`Id`], a `String` or a `&str`); the id itself goes to
    /// the journal only.
    pub fn insert(&mut self, id: impl Into<Id>, value: V, at: Timestamp) {
        self.insert_keyed(KeyedId::new(id.into()), value, at);
    }

    /// [`Recent::insert`] of an id whose key is known.
    pub fn insert_keyed(&mut self, id: KeyedId, value: V, at: Timestamp) {
        let KeyedId { id, key } = id;
        if let Some(journal) = &mut self.journal {
            journal.push(Change::Added { id, value: value.clone(), at });
        }
        self.insert_key(key, value, at);
    }

    /// Keeps `key`, unless it is kept already.
    fn insert_key(&mut self, key: IdKey, value: V, at: Timestamp) {
        if self.entries.insert(key, value).is_none() {
            // Kept in time order (after the entries of the same time), so that what
            // `prune` forgets depends on the times alone, not on the order of arrival: a set
            // rebuilt from its entries (a restore) forgets exactly what the original did.
            // The rater remembers from the tenant's newest time (`TenantState::kept_from`),
            // so its inserts are pushes at the back.
            match self.order.back() {
                Some((last, _)) if *last > at => {
                    let position = after_newest_up_to(&self.order, at);
                    self.order.insert(position, (at, key));
                }
                _ => self.order.push_back((at, key)),
            }
        }
    }
}

impl<V> Recent<V> {
    /// The value kept for `id`.
    pub fn get(&self, id: &str) -> Option<&V> {
        self.get_key(IdKey::of(id))
    }

    /// The value kept for the id of `key`.
    pub fn get_key(&self, key: IdKey) -> Option<&V> {
        self.entries.get(&key)
    }

    /// Whether `id` is kept.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(&IdKey::of(id))
    }

    /// Forgets every entry remembered before `cutoff` (and no other).
    pub fn prune(&mut self, cutoff: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                let value = self.entries.remove(&key);
                if let (Some(journal), Some(value)) = (&mut self.journal, value) {
                    journal.push(Change::Removed { key, value, at });
                }
            }
        }
    }

    /// Every kept entry's key, value and time, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (IdKey, &V, Timestamp)> {
        self.order.iter().filter_map(|(at, key)| self.entries.get(key).map(|v| (*key, v, *at)))
    }

    /// The time `id` is kept from, if it is kept. A scan of the window (for tests and
    /// tools, not the rating path).
    pub fn kept_at(&self, id: &str) -> Option<Timestamp> {
        let key = IdKey::of(id);
        // The queue holds exactly the kept keys.
        self.order.iter().find(|(_, k)| *k == key).map(|(at, _)| *at)
    }

    /// How many ids are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }

    fn open_leg(call_id: &str) -> OpenLeg {
        crate::testing::open_leg(call_id, ts(10))
    }

    fn end_of(leg: &str, at: i64) -> CallLegEvent {
        use crate::event::{DisconnectCause, LegBody, LegDuration, LegEnded};
        let ended = LegEnded { duration: LegDuration::ConnectedSeconds(60), cause: DisconnectCause::Normal };
        CallLegEvent {
            event_id: format!("{leg}-e").into(),
            tenant_id: crate::TenantId::new("acme").unwrap(),
            conference_id: "m".into(),
            call_id: format!("c-{leg}").into(),
            leg_id: leg.into(),
            organizer_id: "ann".into(),
            occurred_at: ts(at),
            body: LegBody::Ended(ended),
        }
    }

    /// Parked ends leave the window exactly as a `BTreeMap` filtered by time at every step
    /// would (what the rater did before they had a time index), whatever is parked, replaced
    /// and taken in between; their order, `Debug` and serde form are the map's.
    #[test]
    fn parked_ends_expire_like_a_map_filtered_by_time() {
        use proptest::prelude::*;
        let op = (0u8..4, 0u8..12, 0i64..50);
        proptest::proptest!(|(ops in proptest::collection::vec(op, 0..200))| {
            let mut parked = ParkedEnds::default();
            let mut model: BTreeMap<Id, CallLegEvent> = BTreeMap::new();
            for (kind, leg, at) in ops {
                let leg_id: Id = format!("leg-{leg}").into();
                match kind {
                    0 | 1 => {
                        let ended = end_of(&leg_id, at);
                        prop_assert_eq!(parked.insert(leg_id.clone(), ended.clone()), model.insert(leg_id, ended));
                    }
                    2 => prop_assert_eq!(parked.remove(&leg_id), model.remove(&leg_id)),
                    _ => {
                        let before = model.len();
                        model.retain(|_, e| e.occurred_at >= ts(at));
                        prop_assert_eq!(parked.expire_before(ts(at)), before - model.len());
                    }
                }
                prop_assert!(parked.iter().eq(model.iter()));
                prop_assert_eq!(parked.by_time.len(), model.len());
            }
            prop_assert_eq!(format!("{parked:?}"), format!("{model:?}"));
            prop_assert_eq!(serde_json::to_value(&parked).unwrap(), serde_json::to_value(&model).unwrap());
            let back: ParkedEnds = serde_json::from_value(serde_json::to_value(&model).unwrap()).unwrap();
            prop_assert!(back == parked && back.by_time == parked.by_time);
        });
    }

    /// A batch's changes to the parked ends, taken from the journal and reverted, leave them
    /// as they were before the batch, time index included.
    #[test]
    fn parked_ends_roll_back_from_their_journal() {
        use proptest::prelude::*;
        let op = (0u8..4, 0u8..12, 0i64..50);
        let ops = || proptest::collection::vec(op.clone(), 0..60);
        proptest::proptest!(|(earlier in ops(), batch in ops())| {
            let apply = |parked: &mut ParkedEnds, ops: &[(u8, u8, i64)]| {
                for &(kind, leg, at) in ops {
                    let leg_id: Id = format!("leg-{leg}").into();
                    match kind {
                        0 | 1 => drop(parked.insert(leg_id.clone(), end_of(&leg_id, at))),
                        2 => drop(parked.remove(&leg_id)),
                        _ => drop(parked.expire_before(ts(at))),
                    }
                }
            };
            let mut parked = ParkedEnds::default();
            apply(&mut parked, &earlier);
            let before = parked.clone();
            parked.track_changes();
            apply(&mut parked, &batch);
            let changes = parked.take_changes();
            prop_assert!(changes.iter().all(|(leg, was)| was.as_ref() == before.get(leg)));
            parked.revert(changes);
            prop_assert!(parked == before && parked.by_time == before.by_time, "{parked:?} != {before:?}");
            prop_assert!(parked.take_changes().is_empty(), "reverting is not journaled");
        });
    }

    /// Open legs used to be a `BTreeMap`: the changelog JSON, `Debug` and iteration keep its
    /// leg-id order whatever the insertion order.
    #[test]
    fn open_legs_serialize_and_iterate_like_the_btreemap_they_replaced() {
        let ids = ["leg-b", "leg-c", "leg-a", "leg-10", "leg-2"];
        let mut legs = OpenLegs::default();
        let mut tree = BTreeMap::new();
        for id in ids {
            legs.insert(id.into(), open_leg(id));
            tree.insert(id.to_owned(), open_leg(id));
        }
        assert_eq!(serde_json::to_string(&legs).unwrap(), serde_json::to_string(&tree).unwrap());
        assert_eq!(format!("{legs:?}"), format!("{tree:?}"));
        assert!(legs.keys().eq(tree.keys()));
        for n in [0, 2, 5, 9] {
            assert!(legs.first(n).into_iter().map(|(k, _)| k).eq(tree.keys().take(n)), "first {n}");
        }
        let mut unordered: Vec<&Id> = legs.iter_unordered().map(|(k, _)| k).collect();
        unordered.sort_unstable();
        assert!(unordered.into_iter().map(|k| k.to_string()).eq(tree.keys().cloned()));
        let back: OpenLegs = serde_json::from_str(&serde_json::to_string(&tree).unwrap()).unwrap();
        assert_eq!(back, legs);
        assert_eq!(legs.remove("leg-a").map(|l| l.call_id), Some("leg-a".into()));
        assert!((legs.len(), legs.contains_key("leg-a"), legs.get("leg-b").is_some()) == (4, false, true));
    }

    /// A batch's changes to the open legs are rolled back from the journal (no copy of the
    /// legs), and the journal names exactly the legs touched, each with what it was.
    #[test]
    fn open_legs_roll_back_from_their_journal() {
        let mut legs = OpenLegs::default();
        for id in ["a", "b", "c"] {
            legs.insert(id.into(), open_leg(id));
        }
        assert!(legs.take_changes().is_empty(), "nothing is journaled before tracking");
        legs.track_changes();
        let before = legs.clone();
        let mut b = legs.remove("b").unwrap();
        b.elapsed_seconds = 60;
        legs.insert("b".into(), b);
        legs.remove("c");
        legs.insert("d".into(), open_leg("d"));
        assert_eq!(legs.remove("nope"), None);
        let changes = legs.take_changes();
        let mut touched: Vec<(&str, Option<u32>)> =
            changes.iter().map(|(id, was)| (id.as_str(), was.as_ref().map(|l| l.elapsed_seconds))).collect();
        touched.sort_unstable();
        assert_eq!(touched, vec![("b", Some(0)), ("c", Some(0)), ("d", None)]);
        legs.revert(changes);
        assert_eq!(legs, before);
        // A leg changed in place (a disconnect) is journaled; a leg that is not open is not.
        legs.get_mut("a").unwrap().disconnect_sent = true;
        assert!(legs.get_mut("nope").is_none());
        let changes = legs.take_changes();
        assert_eq!(changes.keys().map(|id| id.as_str()).collect::<Vec<_>>(), ["a"]);
        legs.revert(changes);
        assert_eq!(legs, before);
    }

    /// A window's map hashes a key as the key's foldhash half, which is foldhash of the id:
    /// the key is not hashed a second time.
    #[test]
    fn a_key_hashes_as_its_foldhash_half() {
        for id in ["", "e-1", "an-id-longer-than-sixteen-bytes"] {
            assert_eq!(KeyState.hash_one(IdKey::of(id)), FastState::default().hash_one(id), "{id:?}");
        }
        let mut set = Recent::default();
        set.insert_keyed(KeyedId::new("e-1".into()), 7u64, ts(10));
        assert_eq!(set.get("e-1"), Some(&7));
        assert_eq!(set.get_key(KeyedId::new("e-1".into()).key()), Some(&7));
        assert_eq!(set.get("e-2"), None);
    }

    #[test]
    fn journals_changes_only_when_tracking_and_rebuilds_from_entries() {
        let mut seen = Recent::default();
        seen.insert("before", 1u64, ts(1));
        assert!(seen.take_changes().is_empty());
        seen.track_changes();
        seen.insert("e1", 7u64, ts(10));
        seen.insert("e2", 8u64, ts(20));
        seen.prune(ts(15));
        let changes = seen.take_changes();
        let id = |s: &str| Id::from(s);
        assert_eq!(
            changes,
            vec![
                Change::Added { id: id("e1"), value: 7, at: ts(10) },
                Change::Added { id: id("e2"), value: 8, at: ts(20) },
                Change::Removed { key: IdKey::of("before"), value: 1, at: ts(1) },
                Change::Removed { key: IdKey::of("e1"), value: 7, at: ts(10) },
            ]
        );
        assert!(seen.take_changes().is_empty());
        // Undoing a round of changes restores the set exactly.
        let before = seen.clone();
        seen.insert("e3", 9u64, ts(30));
        seen.prune(ts(25));
        let round = seen.take_changes();
        assert_ne!(seen, before);
        seen.revert(&round);
        assert_eq!(seen, before);
        assert_eq!(Recent::from_entries([("e2", 8, ts(20))]), seen);
        assert_eq!((seen.get("e2"), seen.get("e1"), seen.kept_at("e2")), (Some(&8), None, Some(ts(20))));
    }

    /// A journal keeps room for the next batch after a busy one only, so that a tenant touched
    /// now and then keeps none while it is idle.
    #[test]
    fn a_journal_keeps_room_after_a_busy_batch_only() {
        let mut seen = Recent::default();
        seen.track_changes();
        for n in 0..JOURNAL_ROOM_FROM {
            seen.insert(format!("e{n}"), 1u64, ts(10));
        }
        assert_eq!(seen.take_changes().len(), JOURNAL_ROOM_FROM);
        assert!(seen.journal.as_ref().is_some_and(|j| j.is_empty() && j.capacity() >= JOURNAL_ROOM_FROM));
        seen.insert("one", 1, ts(11));
        assert_eq!(seen.take_changes().len(), 1);
        assert_eq!(seen.journal.as_ref().map(Vec::capacity), Some(0));

        let mut legs = OpenLegs::default();
        legs.track_changes();
        for n in 0..JOURNAL_ROOM_FROM {
            legs.insert(format!("leg-{n}").into(), open_leg("call"));
        }
        assert_eq!(legs.take_changes().len(), JOURNAL_ROOM_FROM);
        assert!(legs.journal.as_ref().is_some_and(|j| j.is_empty() && j.capacity() >= JOURNAL_ROOM_FROM));
        legs.insert("one".into(), open_leg("call"));
        assert_eq!(legs.take_changes().len(), 1);
        assert_eq!(legs.journal.as_ref().map(|j| j.capacity()), Some(0));
    }

    /// What is forgotten depends on the times alone: an entry that arrived after a newer
    /// one is forgotten at its own time, and a set rebuilt from its entries forgets the same.
    #[test]
    fn forgets_exactly_the_ids_older_than_the_cutoff_whatever_their_arrival_order() {
        let mut closed = Recent::default();
        let arrivals = [5, 9, 7, 12, 7].map(ts);
        for (i, at) in arrivals.into_iter().enumerate() {
            closed.insert(format!("leg-{i}"), (), at);
        }
        let keys = |ids: &[&str]| ids.iter().map(|id| IdKey::of(id)).collect::<Vec<_>>();
        let order: Vec<(IdKey, Timestamp)> = closed.entries().map(|(key, (), at)| (key, at)).collect();
        let expected = [("leg-0", 5), ("leg-2", 7), ("leg-4", 7), ("leg-1", 9), ("leg-3", 12)];
        assert_eq!(order, expected.map(|(id, at)| (IdKey::of(id), ts(at))));
        let mut rebuilt =
            Recent::from_entries(arrivals.iter().enumerate().map(|(i, at)| (format!("leg-{i}"), (), *at)));
        assert_eq!(rebuilt, closed);
        closed.prune(ts(8));
        rebuilt.prune(ts(8));
        let kept = |set: &Recent<()>| set.entries().map(|(key, (), _)| key).collect::<Vec<_>>();
        assert_eq!(kept(&closed), keys(&["leg-1", "leg-3"]));
        assert_eq!(kept(&rebuilt), kept(&closed));
        closed.prune(ts(10));
        assert_eq!((closed.len(), closed.contains("leg-3"), closed.contains("leg-1")), (1, true, false));
    }

    /// What a [`Recent`] set is meant to be: a list sorted by time, of one time in the order
    /// written.
    #[derive(Clone, Default)]
    struct Model(Vec<(Timestamp, String, u64)>);

    impl Model {
        fn insert(&mut self, id: &str, value: u64, at: Timestamp) {
            if self.0.iter().all(|(_, kept, _)| kept != id) {
                let place = self.0.partition_point(|(t, _, _)| *t <= at);
                self.0.insert(place, (at, id.to_owned(), value));
            }
        }

        fn prune(&mut self, cutoff: Timestamp) {
            self.0.retain(|(at, _, _)| *at >= cutoff);
        }
    }

    fn listed(set: &Recent<u64>) -> Vec<(Timestamp, IdKey, u64)> {
        set.entries().map(|(key, v, at)| (at, key, *v)).collect()
    }

    fn keyed(model: &Model) -> Vec<(Timestamp, IdKey, u64)> {
        model.0.iter().map(|(at, id, v)| (*at, IdKey::of(id), *v)).collect()
    }

    proptest::proptest! {
        /// Inserts in any order of time, prunes and rolled-back rounds keep the set what the
        /// sorted list keeps, in its order; a set rebuilt from the list's entries is the same
        /// set.
        #[test]
        fn a_set_keeps_what_a_sorted_list_keeps(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((0u8..60, 0i64..100), 0..40), 0i64..60, proptest::bool::ANY),
                1..8,
            ),
        ) {
            let (mut set, mut model) = (Recent::default(), Model::default());
            set.track_changes();
            for (inserts, prune_to, roll_back) in rounds {
                let (set_before, model_before) = (set.clone(), model.clone());
                for (n, (id, at)) in inserts.into_iter().enumerate() {
                    let id = format!("e{id}");
                    if set.contains(&id) {
                        continue;
                    }
                    set.insert(id.as_str(), n as u64, ts(at));
                    model.insert(&id, n as u64, ts(at));
                }
                set.prune(ts(prune_to));
                model.prune(ts(prune_to));
                let changes = set.take_changes();
                proptest::prop_assert_eq!(listed(&set), keyed(&model));
                proptest::prop_assert_eq!(set.len(), model.0.len());
                if roll_back {
                    set.revert(&changes);
                    model = model_before;
                    proptest::prop_assert_eq!(&set, &set_before);
                    proptest::prop_assert_eq!(listed(&set), keyed(&model));
                }
                for (at, id, v) in &model.0 {
                    proptest::prop_assert_eq!((set.get(id), set.kept_at(id)), (Some(v), Some(*at)));
                }
                let rebuilt = Recent::from_entries(model.0.iter().map(|(at, id, v)| (id.as_str(), *v, *at)));
                proptest::prop_assert_eq!(&rebuilt, &set);
            }
        }

        /// The galloping search finds the place a binary search over the whole queue finds.
        #[test]
        fn a_late_entry_goes_where_the_binary_search_puts_it(
            mut times in proptest::collection::vec(1i64..50, 0..300),
            at in 0i64..52,
        ) {
            times.sort_unstable();
            let order: VecDeque<(Timestamp, ())> = times.iter().map(|t| (ts(*t), ())).collect();
            let expected = order.partition_point(|(t, _)| *t <= ts(at));
            proptest::prop_assert_eq!(after_newest_up_to(&order, ts(at)), expected);
        }
    }
}
