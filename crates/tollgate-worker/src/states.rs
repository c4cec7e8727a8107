//! The tenant states a partition task owns, most of them dormant.
//!
//! A restored partition may hold a million tenants of which a few thousand are busy. A
//! tenant's state in memory ([`TenantState`]) is several hundred bytes even when it has no
//! leg in progress; its changelog record (`t/<tenant>`, a [`tollgate_proto::v1::TenantStateRecord`])
//! is about a hundred. So a tenant restored without legs in progress, parked ends or
//! remembered ids stays **dormant**: the bytes of its record, in one shared arena, and it is
//! decoded ("woken") the first time a record of it is rated. The tenant API reads the same
//! arena for the tenants no batch touched since the restore, so a dormant tenant is held once.
//!
//! The arena never changes after the restore: a woken tenant's bytes stay where they were
//! (they are still its committed state until its first batch commits), shadowed by its live
//! state.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use tollgate_core::{Currency, FastState, Money, TenantState};

/// Values by tenant, hashed with [`FastState`]: the live states ([`Live`]) and the dormant
/// index. A hash table whose buckets can be read by position, so that a refresh of the
/// balance gauges goes through it a range of buckets at a time ([`ByTenant::in_buckets`]).
#[derive(Debug)]
pub struct ByTenant<V>(HashTable<(String, V)>);

/// Live tenant states by tenant: one lookup per rated record ([`States::for_rating`] finds
/// the state, or the place to add it, at once).
pub type Live = ByTenant<TenantState>;

impl<V> Default for ByTenant<V> {
    fn default() -> Self {
        ByTenant(HashTable::new())
    }
}

/// The hash a [`ByTenant`] table files a tenant under.
fn hash_of(tenant: &str) -> u64 {
    FastState::default().hash_one(tenant)
}

impl<V> ByTenant<V> {
    /// How many tenants it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether it holds `tenant`.
    pub fn contains_key(&self, tenant: &str) -> bool {
        self.get(tenant).is_some()
    }

    /// The value of `tenant`.
    pub fn get(&self, tenant: &str) -> Option<&V> {
        self.0.find(hash_of(tenant), |(t, _)| t == tenant).map(|(_, value)| value)
    }

    /// Makes `value` the value of `tenant`; returns the one it replaced.
    pub fn insert(&mut self, tenant: String, value: V) -> Option<V> {
        match self.0.entry(hash_of(&tenant), |(t, _)| *t == tenant, |(t, _)| hash_of(t)) {
            Entry::Occupied(mut held) => Some(std::mem::replace(&mut held.get_mut().1, value)),
            Entry::Vacant(place) => {
                place.insert((tenant, value));
                None
            }
        }
    }

    /// Forgets `tenant`; returns its value, if it had one.
    pub fn remove(&mut self, tenant: &str) -> Option<V> {
        let held = self.0.find_entry(hash_of(tenant), |(t, _)| t == tenant).ok()?;
        Some(held.remove().0.1)
    }

    /// The value of `tenant`, or the one `new` makes (`None`: the tenant stays without one),
    /// and whether it was held: a single lookup either way.
    pub fn get_or_insert_with(&mut self, tenant: &str, new: impl FnOnce() -> Option<V>) -> Option<(&mut V, bool)> {
        match self.0.entry(hash_of(tenant), |(t, _)| t == tenant, |(t, _)| hash_of(t)) {
            Entry::Occupied(held) => Some((&mut held.into_mut().1, true)),
            Entry::Vacant(place) => Some((&mut place.insert((tenant.to_owned(), new()?)).into_mut().1, false)),
        }
    }

    /// Every tenant and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(tenant, value)| (tenant, value))
    }

    /// Every value.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, value)| value)
    }

    /// Every tenant.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(tenant, _)| tenant)
    }

    /// The table's buckets: [`ByTenant::in_buckets`] of `0..buckets()` is every tenant.
    pub fn buckets(&self) -> usize {
        self.0.num_buckets()
    }

    /// The tenants filed in the buckets `range` (clamped to [`ByTenant::buckets`]), and their
    /// values. Consecutive ranges see each tenant once while the table does not change. A
    /// tenant added since a range before may land in it or not, and a table that grew files
    /// every tenant anew: a refresh that goes through the buckets a range at a time then may
    /// miss a tenant (the refresh after it does not).
    pub fn in_buckets(&self, range: Range<usize>) -> impl Iterator<Item = (&str, &V)> {
        let range = range.start.min(self.buckets())..range.end.min(self.buckets());
        range.filter_map(|bucket| self.0.get_bucket(bucket)).map(|(tenant, value)| (tenant.as_str(), value))
    }
}

impl<V> IntoIterator for ByTenant<V> {
    type Item = (String, V);
    type IntoIter = hashbrown::hash_table::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Where a dormant record is in the arena: offset and length.
type Span = (u32, u32);

/// Tenants restored from their record and not woken since: the records' bytes, by tenant.
///
/// The index does not change after the restore, so a refresh of the balance gauges goes
/// through it a range of buckets at a time ([`States::dormant_balances`]) and sees each
/// tenant once.
#[derive(Debug, Default)]
pub struct Dormant {
    index: ByTenant<Span>,
    arena: Vec<u8>,
}

impl Dormant {
    /// The record of `tenant`, if it is dormant.
    pub fn record(&self, tenant: &str) -> Option<&[u8]> {
        self.index.get(tenant).map(|span| self.span(*span))
    }

    fn span(&self, (at, len): Span) -> &[u8] {
        &self.arena[at as usize..(at + len) as usize]
    }

    /// The state of `tenant`, if it is dormant (not tracking changes).
    pub fn state(&self, tenant: &str) -> Option<TenantState> {
        self.record(tenant).map(decode)
    }

    /// How many tenants are dormant.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every dormant tenant and its record.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.index.iter().map(|(tenant, span)| (tenant.as_str(), self.span(*span)))
    }

    /// The index's buckets: [`Dormant::in_buckets`] of `0..buckets()` is every dormant tenant.
    pub fn buckets(&self) -> usize {
        self.index.buckets()
    }

    /// The dormant tenants filed in the index's buckets `range` ([`ByTenant::in_buckets`]),
    /// and their records.
    pub fn in_buckets(&self, range: Range<usize>) -> impl Iterator<Item = (&str, &[u8])> {
        self.index.in_buckets(range).map(|(tenant, span)| (tenant, self.span(*span)))
    }
}

/// What a dormant record decodes to. Every dormant record decoded once already when it was
/// restored (the restorer checks each before it keeps it), so it decodes again.
fn restored<T>(decoded: Result<T, tollgate_proto::Error>) -> T {
    decoded.unwrap_or_else(|error| unreachable!("a dormant record that decoded when restored no longer does: {error}"))
}

/// A dormant record's state.
fn decode(record: &[u8]) -> TenantState {
    restored(tollgate_proto::state::decode_tenant(record))
}

/// A dormant tenant's state, tracking changes from now on (as every live state does).
fn wake(record: &[u8]) -> TenantState {
    let mut state = decode(record);
    state.track_changes();
    state
}

/// A dormant record's balance and the currency it is held in (`None` before the record kept
/// one), read without the rest of it.
fn balance(record: &[u8]) -> (Money, Option<Currency>) {
    restored(tollgate_proto::state::decode_balance(record))
}

/// A [`Dormant`] set being restored: later records of a tenant replace earlier ones.
#[derive(Debug, Default)]
pub struct DormantBuilder {
    dormant: Dormant,
    /// Bytes of the arena no tenant points to any more.
    garbage: usize,
}

impl DormantBuilder {
    /// Makes `record` (one that decodes: the caller checked) the tenant's latest record;
    /// `false` when the arena is full (4 GiB), and the caller keeps the tenant live instead.
    pub fn insert(&mut self, tenant: &str, record: &[u8]) -> bool {
        let arena = &mut self.dormant.arena;
        let (Ok(at), Ok(len)) = (u32::try_from(arena.len()), u32::try_from(record.len())) else { return false };
        if at.checked_add(len).is_none() {
            return false;
        }
        arena.extend_from_slice(record);
        if let Some((_, earlier)) = self.dormant.index.insert(tenant.to_owned(), (at, len)) {
            self.garbage += earlier as usize;
        }
        true
    }

    /// Forgets the tenant's record, if it had one.
    pub fn remove(&mut self, tenant: &str) {
        if let Some((_, len)) = self.dormant.index.remove(tenant) {
            self.garbage += len as usize;
        }
    }

    /// The tenant's state, dormant no more; not tracking changes yet (the restorer puts its
    /// entries back first: they are not changes).
    pub fn take(&mut self, tenant: &str) -> Option<TenantState> {
        let state = self.dormant.state(tenant)?;
        self.remove(tenant);
        Some(state)
    }

    /// The set, its arena holding the latest records: compacted when more than a quarter of
    /// it is earlier records (copying is not free: the old arena, freed, may stay resident
    /// for a while in the allocator's keeping).
    pub fn finish(self) -> Dormant {
        if self.garbage * 4 <= self.dormant.arena.len() {
            return self.dormant;
        }
        let Dormant { mut index, arena } = self.dormant;
        let mut compact = Vec::with_capacity(arena.len() - self.garbage);
        for (at, len) in index.values_mut() {
            let moved = compact.len() as u32;
            compact.extend_from_slice(&arena[*at as usize..(*at + *len) as usize]);
            *at = moved;
        }
        Dormant { index, arena: compact }
    }
}

/// A partition's tenant states: the live ones, and the dormant ones not woken yet.
#[derive(Debug, Default)]
pub struct States {
    live: Live,
    dormant: Arc<Dormant>,
}

impl States {
    /// Live states and dormant records.
    pub fn new(live: Live, dormant: Dormant) -> Self {
        States { live, dormant: Arc::new(dormant) }
    }

    /// The dormant records, shared with the tenant API.
    pub fn dormant(&self) -> &Arc<Dormant> {
        &self.dormant
    }

    /// The live states.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// How many tenants have a state.
    pub fn len(&self) -> usize {
        self.live.len() + self.dormant.iter().filter(|(tenant, _)| !self.live.contains_key(tenant)).count()
    }

    /// A tenant whose state is here though murmur2 puts it on another of `partition_count`
    /// partitions than `partition`, with that partition: the state of a partition restored
    /// after partitions were added to the topics.
    pub fn misplaced(&self, partition: i32, partition_count: i32) -> Option<(&str, i32)> {
        let home = |tenant: &str| crate::partitioner::partition_for(tenant.as_bytes(), partition_count);
        let live = self.live.keys().map(String::as_str);
        live.chain(self.dormant.iter().map(|(tenant, _)| tenant))
            .map(|tenant| (tenant, home(tenant)))
            .find(|&(_, home)| home != partition)
    }

    /// True when none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `tenant` has a state, live or dormant (the tests' question: rating finds a
    /// state with [`States::for_rating`]).
    #[cfg(test)]
    pub fn contains(&self, tenant: &str) -> bool {
        self.live.contains_key(tenant) || self.dormant.record(tenant).is_some()
    }

    /// The live state of `tenant` (a tenant a batch touched is live).
    pub fn get(&self, tenant: &str) -> Option<&TenantState> {
        self.live.get(tenant)
    }

    /// The state of `tenant`, woken if it was dormant.
    pub fn get_mut(&mut self, tenant: &str) -> Option<&mut TenantState> {
        // A tenant without state is not made one.
        self.for_rating(tenant, || false).map(|(state, _)| state)
    }

    /// The state a record of `tenant` is rated on, and whether the tenant had one: its live
    /// state, woken if dormant, or, for a tenant without state that `known()` says exists, a
    /// new one (tracking changes). `None` for a tenant without state that is not known (it
    /// is left without one). A live tenant, the usual case, costs one lookup of the live map
    /// and no call of `known`.
    pub fn for_rating(&mut self, tenant: &str, known: impl FnOnce() -> bool) -> Option<(&mut TenantState, bool)> {
        let dormant = &self.dormant;
        let mut woken = false;
        let (state, existed) = self.live.get_or_insert_with(tenant, || {
            if let Some(record) = dormant.record(tenant) {
                woken = true;
                return Some(wake(record));
            }
            known().then(|| {
                let mut state = TenantState::default();
                state.track_changes();
                state
            })
        })?;
        Some((state, existed || woken))
    }

    /// Forgets a live state (a tenant new in a batch that was rolled back).
    pub fn remove_live(&mut self, tenant: &str) {
        self.live.remove(tenant);
    }

    /// The balances, and the currencies they are held in (read from their records), of the
    /// dormant tenants filed in the index's `buckets` ([`Dormant::in_buckets`]; the index
    /// does not change, so a refresh goes through `0..`[`Dormant::buckets`] a range at a
    /// time). A tenant live since has `None` (its state is in [`States::live`]).
    pub fn dormant_balances(
        &self,
        buckets: Range<usize>,
    ) -> impl Iterator<Item = (&str, Option<(Money, Option<Currency>)>)> {
        self.dormant
            .in_buckets(buckets)
            .map(|(tenant, record)| (tenant, (!self.live.contains_key(tenant)).then(|| balance(record))))
    }

    /// Every tenant's state, the dormant ones decoded.
    pub fn into_map(self) -> HashMap<String, TenantState> {
        let mut all: HashMap<String, TenantState> = self.live.into_iter().collect();
        for (tenant, record) in self.dormant.iter() {
            if !all.contains_key(tenant) {
                all.insert(tenant.to_owned(), wake(record));
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::Timestamp;
    use tollgate_proto::state::tenant_record;

    use super::*;

    fn funded(amount: &str) -> TenantState {
        let mut state = TenantState::default();
        state.ledger.credit("lot".into(), amount.parse().unwrap(), Timestamp::new(1_793_577_600, 0).unwrap());
        state
    }

    /// A dormant tenant's balance comes with the currency its money is held in, which a
    /// reference update while it slept does not change (its gauge is labelled with it); a
    /// record from before the currency was kept has none, and a woken tenant none at all.
    #[test]
    fn dormant_balances_come_with_the_currency_they_are_held_in() {
        let mut euros = funded("7.25");
        euros.currency = Some(Currency::from_code("EUR").unwrap());
        let mut builder = DormantBuilder::default();
        assert!(builder.insert("acme", &tenant_record(&euros)));
        assert!(builder.insert("globex", &tenant_record(&funded("2.00"))));
        assert!(builder.insert("initech", &tenant_record(&funded("3.00"))));
        let mut states = States::new(Live::default(), builder.finish());
        states.for_rating("initech", || panic!("dormant")).unwrap();
        let mut held: Vec<String> = states
            .dormant_balances(0..usize::MAX)
            .map(|(t, held)| match held {
                Some((balance, Some(currency))) => format!("{t} {balance} {currency}"),
                Some((balance, None)) => format!("{t} {balance}"),
                None => format!("{t} awake"),
            })
            .collect();
        held.sort();
        assert_eq!(held, ["acme 7.25 EUR", "globex 2", "initech awake"]);
    }

    /// A refresh that goes through the dormant tenants a range of buckets at a time (ranges
    /// after each committed batch) sees each of them once, with its own balance, and a tenant
    /// woken meanwhile without one.
    #[test]
    fn dormant_balances_a_range_at_a_time_see_each_tenant_once() {
        let mut builder = DormantBuilder::default();
        for i in 0..7 {
            assert!(builder.insert(&format!("t{i}"), &tenant_record(&funded(&format!("{}.00", i + 1)))));
        }
        let mut states = States::new(Live::default(), builder.finish());
        let buckets = states.dormant().buckets();
        let ranges: Vec<_> = (0..buckets).step_by(3).map(|from| from..from + 3).collect();
        // A tenant filed after the first range, woken once that range is done.
        let last = ranges.iter().rev().find_map(|r| states.dormant().in_buckets(r.clone()).next()).unwrap();
        let woken = last.0.to_owned();
        assert!(states.dormant().in_buckets(ranges[0].clone()).all(|(t, _)| t != woken));
        let mut seen: Vec<(String, Option<String>)> = Vec::new();
        for (n, range) in ranges.into_iter().enumerate() {
            let slice =
                states.dormant_balances(range).map(|(t, held)| (t.to_owned(), held.map(|(b, _)| b.to_string())));
            seen.extend(slice.collect::<Vec<_>>());
            if n == 0 {
                states.for_rating(&woken, || panic!("dormant")).unwrap();
            }
        }
        assert_eq!(states.dormant_balances(buckets..usize::MAX).count(), 0, "nothing past the end");
        seen.sort();
        let expected: Vec<(String, Option<String>)> = (0..7)
            .map(|i| {
                let tenant = format!("t{i}");
                let balance = (tenant != woken).then(|| (i + 1).to_string());
                (tenant, balance)
            })
            .collect();
        assert_eq!(seen, expected);
    }

    /// The live states a range of buckets at a time: each tenant once, with its latest state,
    /// a tenant removed not at all.
    #[test]
    fn live_states_a_range_at_a_time_see_each_tenant_once() {
        let mut live = Live::default();
        for i in 0..100 {
            live.insert(format!("t{i}"), funded(&format!("{}.00", i + 1)));
        }
        live.insert("t7".into(), funded("70.00"));
        live.remove("t9");
        assert_eq!(live.len(), 99);
        let mut seen: Vec<(String, String)> = Vec::new();
        for from in (0..live.buckets()).step_by(5) {
            seen.extend(live.in_buckets(from..from + 5).map(|(t, state)| (t.to_owned(), state.balance().to_string())));
        }
        assert_eq!(live.in_buckets(live.buckets()..usize::MAX).count(), 0, "nothing past the end");
        seen.sort();
        let mut expected: Vec<(String, String)> = (0..100)
            .filter(|i| *i != 9)
            .map(|i| (format!("t{i}"), if i == 7 { "70".to_owned() } else { (i + 1).to_string() }))
            .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    /// A little garbage (a tenant's earlier record) stays in the arena rather than the whole
    /// arena being copied; the index points at the latest record.
    #[test]
    fn leaves_a_little_garbage_in_place() {
        let mut builder = DormantBuilder::default();
        for i in 0..8 {
            assert!(builder.insert(&format!("t{i}"), &tenant_record(&funded("1.00"))));
        }
        assert!(builder.insert("t0", &tenant_record(&funded("2.00"))));
        let dormant = builder.finish();
        assert_eq!(
            dormant.arena.len(),
            tenant_record(&funded("1.00")).len() * 8 + tenant_record(&funded("2.00")).len()
        );
        assert_eq!(dormant.state("t0").map(|s| s.balance().to_string()), Some("2".into()));
        assert_eq!(dormant.len(), 8);
    }

    /// The latest record of a tenant counts; the arena keeps only the latest ones; a tenant
    /// woken is live from then on and its record stays for the readers of the committed state.
    #[test]
    fn keeps_the_latest_record_and_wakes_a_tenant_on_first_use() {
        let mut builder = DormantBuilder::default();
        assert!(builder.insert("acme", &tenant_record(&funded("1.00"))));
        assert!(builder.insert("globex", &tenant_record(&funded("2.00"))));
        assert!(builder.insert("acme", &tenant_record(&funded("3.00"))));
        assert!(builder.insert("initech", &tenant_record(&funded("4.00"))));
        assert_eq!(builder.take("initech").map(|s| s.balance().to_string()), Some("4".into()));
        assert!(builder.take("initech").is_none());
        let dormant = builder.finish();
        assert_eq!(dormant.arena.len(), tenant_record(&funded("3.00")).len() + tenant_record(&funded("2.00")).len());
        assert_eq!(dormant.len(), 2);

        let mut states = States::new(Live::default(), dormant);
        let mut balances: Vec<(String, String)> = states
            .dormant_balances(0..usize::MAX)
            .filter_map(|(t, held)| Some((t.to_owned(), held?.0.to_string())))
            .collect();
        balances.sort();
        assert_eq!(balances, [("acme".into(), "3".into()), ("globex".into(), "2".into())]);
        assert!(states.get("acme").is_none() && states.contains("acme"));
        states
            .get_mut("acme")
            .unwrap()
            .ledger
            .debit("0.50".parse().unwrap(), Timestamp::new(1_793_577_601, 0).unwrap());
        assert_eq!(states.get("acme").map(|s| s.balance().to_string()), Some("2.5".into()));
        assert_eq!(states.dormant().state("acme").map(|s| s.balance().to_string()), Some("3".into()));
        assert_eq!(states.len(), 2);
        assert!(states.for_rating("nobody", || false).is_none(), "an unknown tenant gets no state");
        assert_eq!(states.len(), 2);
        let (acme, existed) = states.for_rating("acme", || panic!("not asked: acme has a state")).unwrap();
        assert_eq!((acme.balance().to_string(), existed), ("2.5".into(), true));
        let (globex, existed) = states.for_rating("globex", || panic!("not asked: globex is dormant")).unwrap();
        assert_eq!((globex.balance().to_string(), existed), ("2".into(), true));
        assert!(states.get("globex").is_some(), "woken");
        let (new, existed) = states.for_rating("new", || true).unwrap();
        assert_eq!((new.balance(), existed), (Money::ZERO, false));
        assert_eq!(states.len(), 3);
        let all = states.into_map();
        assert_eq!(all["acme"].balance().to_string(), "2.5");
        assert_eq!(all["globex"], {
            let mut s = funded("2.00");
            s.track_changes();
            s
        });
    }
}
