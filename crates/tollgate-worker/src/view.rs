//! The committed view of a worker's tenants: what `GET /v1/tenants/{tenant}` answers.
//!
//! Each owned partition has a [`PartitionView`]: the tenants' credit positions as of the last
//! committed transaction, and the input offsets that transaction committed. The partition
//! task fills it after its restore (every tenant, once) and after each commit (only the
//! tenants the batch touched, under one write lock with the batch's offsets), so a reader
//! sees a whole batch or none of it, and a batch that was aborted and rolled back is never
//! seen at all. The answer is assembled when asked, from that snapshot and the tenant's
//! reference data (its currency, thresholds, pool allowance).
//!
//! [`Views`] holds a worker's partitions: a partition is *restoring* from its assignment until
//! its task published the restored state, then *committed*, and gone when it is revoked. Which
//! worker owns a partition it does not is [`crate::ownership`]'s business; [`answer`] puts the
//! two together for the HTTP endpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tollgate_core::{Catalog, Id, Lot, Money, OpenLeg, TenantState, Timestamp, Totals};

use crate::ownership::Directory;
use crate::partitioner;
use crate::reference::Tables;
use crate::states::{Dormant, States};

/// How many open legs an answer lists (all are counted): a tenant with thousands of calls in
/// progress must not make every batch copy them all.
pub const OPEN_LEGS_LISTED: usize = 100;

/// The partitions a worker owns, as the tenant API sees them.
#[derive(Debug, Default)]
pub struct Views {
    partitions: Mutex<HashMap<i32, Arc<PartitionView>>>,
    /// The inputs' partition count, once the topology was checked.
    partition_count: OnceLock<i32>,
}

impl Views {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<PartitionView>>> {
        self.partitions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_partition_count(&self, count: i32) {
        let _ = self.partition_count.set(count);
    }

    /// The inputs' partition count, once known.
    pub fn partition_count(&self) -> Option<i32> {
        self.partition_count.get().copied()
    }

    /// `partition` was assigned: restoring until its task publishes the restored state.
    pub(crate) fn assigned(&self, partition: i32) -> Arc<PartitionView> {
        let view = Arc::new(PartitionView { committed: RwLock::new(None) });
        self.lock().insert(partition, Arc::clone(&view));
        view
    }

    /// `partition` is no longer owned here.
    pub(crate) fn revoked(&self, partition: i32) {
        self.lock().remove(&partition);
    }

    /// The view of `partition`, if owned here.
    pub fn partition(&self, partition: i32) -> Option<Arc<PartitionView>> {
        self.lock().get(&partition).cloned()
    }
}

/// One partition's committed tenants.
#[derive(Debug)]
pub struct PartitionView {
    /// `None` while the partition restores.
    committed: RwLock<Option<Committed>>,
}

#[derive(Debug, Default)]
struct Committed {
    /// The tenants a batch touched since the restore, and those restored live.
    tenants: HashMap<String, Arc<TenantSnapshot>>,
    /// The tenants restored dormant: their committed state until a batch touches them (the
    /// partition task's own records, shared, not copied).
    dormant: Arc<Dormant>,
    /// Per input topic, the next offset to rate: what the state reflects.
    offsets: BTreeMap<String, i64>,
}

/// What a lookup in one partition found.
#[derive(Debug)]
pub enum Lookup {
    /// The partition is still restoring.
    Restoring,
    /// The tenant's committed snapshot (`None`: no state yet), with the input offsets.
    Committed(Option<Arc<TenantSnapshot>>, BTreeMap<String, i64>),
}

impl PartitionView {
    /// The restored state: every tenant, and the input offsets committed with it (those the
    /// group knows; a topic never committed is missing).
    pub fn restored(&self, states: &States, offsets: BTreeMap<String, i64>) {
        let tenants =
            states.live().iter().map(|(id, state)| (id.clone(), Arc::new(TenantSnapshot::of(state)))).collect();
        let dormant = Arc::clone(states.dormant());
        *self.committed.write().unwrap_or_else(PoisonError::into_inner) = Some(Committed { tenants, dormant, offsets });
    }

    /// A batch committed: the tenants it touched (`None`: the tenant has no state) and the
    /// next offsets of the input topics it read. The snapshots are made before the lock is
    /// taken; readers wait only for the map inserts.
    pub fn committed<'a>(
        &self,
        touched: impl IntoIterator<Item = (&'a str, Option<&'a TenantState>)>,
        offsets: impl IntoIterator<Item = (String, i64)>,
    ) {
        let snapshots: Vec<(&str, Option<Arc<TenantSnapshot>>)> =
            touched.into_iter().map(|(id, state)| (id, state.map(|s| Arc::new(TenantSnapshot::of(s))))).collect();
        let mut guard = self.committed.write().unwrap_or_else(PoisonError::into_inner);
        let committed = guard.get_or_insert_with(Committed::default);
        for (id, snapshot) in snapshots {
            match snapshot {
                Some(snapshot) => committed.tenants.insert(id.to_owned(), snapshot),
                None => committed.tenants.remove(id),
            };
        }
        committed.offsets.extend(offsets);
    }

    /// The tenant's committed snapshot, or that the partition is restoring.
    pub fn lookup(&self, tenant: &str) -> Lookup {
        match &*self.committed.read().unwrap_or_else(PoisonError::into_inner) {
            None => Lookup::Restoring,
            Some(c) => {
                let snapshot = c
                    .tenants
                    .get(tenant)
                    .cloned()
                    .or_else(|| c.dormant.state(tenant).map(|state| Arc::new(TenantSnapshot::of(&state))));
                Lookup::Committed(snapshot, c.offsets.clone())
            }
        }
    }
}

/// The part of a tenant's state the API shows, copied at a commit: small (the lots, the
/// thresholds and up to [`OPEN_LEGS_LISTED`] open legs), never the retention windows.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TenantSnapshot {
    balance: Money,
    lots: Vec<Lot>,
    totals: Totals,
    depleted: bool,
    low_balance_fired: Vec<Money>,
    recharge_pending: bool,
    recharge_failed: bool,
    credit_sequence: u64,
    pool_month: Option<(i32, u8)>,
    pool_used_minutes: u32,
    open_legs: usize,
    listed: Vec<(Id, OpenLeg)>,
    parked_ends: usize,
    watermark: Timestamp,
    /// The currency the money is held in (`None`: not pinned yet; the reference's then).
    currency: Option<tollgate_core::Currency>,
}

impl TenantSnapshot {
    /// The snapshot of `state`.
    pub fn of(state: &TenantState) -> Self {
        let listed =
            state.open_legs.first(OPEN_LEGS_LISTED).into_iter().map(|(id, leg)| (id.clone(), leg.clone())).collect();
        let pool = &state.pool;
        TenantSnapshot {
            currency: state.currency,
            balance: state.balance(),
            lots: state.ledger.lots().cloned().collect(),
            totals: state.totals.clone(),
            depleted: state.depleted,
            low_balance_fired: state.low_balance_fired.clone(),
            recharge_pending: state.recharge_pending,
            recharge_failed: state.recharge_failed,
            credit_sequence: state.credit_sequence,
            pool_month: (pool.month.month != 0).then_some((pool.month.year, pool.month.month)),
            pool_used_minutes: pool.used_minutes,
            open_legs: state.open_legs.len(),
            listed,
            parked_ends: state.parked_ends.len(),
            watermark: state.watermark,
        }
    }
}

/// The answer of `GET /v1/tenants/{tenant}` (see `docs/openapi.yaml`). Amounts are decimal
/// strings in the tenant's currency, written like every amount on the wire.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditPosition {
    /// The tenant.
    pub tenant_id: String,
    /// ISO 4217 code of its balance.
    pub currency: String,
    /// The balance (negative in overdraft).
    pub balance: String,
    /// What the balance owes below zero (new money pays it first).
    pub debt: String,
    /// The balance reached zero and has not been positive since.
    pub depleted: bool,
    /// Open lots in consumption order.
    pub lots: Vec<LotPosition>,
    /// Running totals: `balance == funded + adjusted - usageCharges - forfeited`.
    pub totals: TotalsPosition,
    /// The subscription pool of the month of its last use.
    pub pool: PoolPosition,
    /// Low-balance thresholds, and whether each is armed (will fire on the next crossing).
    pub low_balance_thresholds: Vec<Threshold>,
    /// Auto-recharge, when configured.
    pub auto_recharge: Option<Recharge>,
    /// Legs in progress.
    pub open_legs: OpenLegsPosition,
    /// `ended` events waiting for their `started`.
    pub parked_ends: usize,
    /// Last credit-event sequence number used.
    pub credit_sequence: u64,
    /// Latest event time applied to the tenant; `None` (JSON `null`) before any input of
    /// it was applied.
    pub event_time: Option<String>,
    /// Where the state comes from: its partition and the input offsets it reflects.
    pub committed: CommittedAt,
}

/// One lot.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LotPosition {
    /// Purchase id.
    pub lot_id: String,
    /// When it was purchased.
    pub purchased_at: String,
    /// What was bought (a refund lot: the refund); absent for a lot persisted before
    /// tollgate recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchased: Option<String>,
    /// What is left of it.
    pub remaining: String,
    /// When its remainder is forfeited.
    pub expires_at: String,
}

/// Running totals.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalsPosition {
    /// Money funded.
    pub funded: String,
    /// Signed sum of adjustments.
    pub adjusted: String,
    /// Every leg debit.
    pub usage_charges: String,
    /// Expired remainders.
    pub forfeited: String,
}

/// The subscription dial-out pool.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolPosition {
    /// `YYYY-MM` of the counters (UTC); `null` before the first pooled minute.
    pub month: Option<String>,
    /// Minutes per month (60 per subscription licence).
    pub allowance_minutes: u32,
    /// Pooled minutes used in `month`.
    pub used_minutes: u32,
    /// Minutes left in `month`.
    pub left_minutes: u32,
}

/// A low-balance threshold.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// The amount.
    pub amount: String,
    /// Fires when the balance falls strictly below it (false: fired, waits for funding).
    pub armed: bool,
}

/// Auto-recharge.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recharge {
    /// Below this, a recharge is requested.
    pub trigger: String,
    /// How much is requested.
    pub amount: String,
    /// `armed`, `requested` (a request is out) or `failed` (the request was answered with a
    /// failure; none is asked for again until the balance is back at or above the trigger,
    /// which re-arms it).
    pub state: String,
}

/// Legs in progress.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenLegsPosition {
    /// How many.
    pub count: usize,
    /// The first ones by leg id (at most 100).
    pub legs: Vec<OpenLegPosition>,
}

/// One leg in progress.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenLegPosition {
    /// Leg id.
    pub leg_id: String,
    /// Meeting.
    pub conference_id: String,
    /// Organizer billed.
    pub organizer_id: String,
    /// `conf_in` or `conf_out`.
    pub call_type: String,
    /// `ppm`, `subscription`, `pool` or `unpriced`.
    pub capability: String,
    /// Start instant.
    pub started_at: String,
    /// Highest connected seconds reported so far.
    pub elapsed_seconds: u32,
    /// Debited so far.
    pub debited: String,
}

/// The state's provenance.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommittedAt {
    /// The input partition owning the tenant.
    pub partition: i32,
    /// Per input topic, the next offset to rate: every record before it is in the state.
    pub input_offsets: BTreeMap<String, i64>,
}

impl CreditPosition {
    /// The position of `tenant` from its committed snapshot (`None`: no state yet, as a new
    /// tenant's) and its reference data.
    pub fn of(
        tenant: &tollgate_core::Tenant,
        snapshot: Option<&TenantSnapshot>,
        partition: i32,
        offsets: BTreeMap<String, i64>,
    ) -> Self {
        let empty = TenantSnapshot::default();
        let s = snapshot.unwrap_or(&empty);
        // The currency the money is held in: while the reference names another one, its
        // inputs are refused (`currency_changed`) and the balance is still in this one.
        let currency = s.currency.unwrap_or(tenant.currency);
        let money = |m: Money| tollgate_proto::convert::wire_money(m, currency);
        let lotted: Money = s.lots.iter().map(|l| l.remaining).fold(Money::ZERO, |a, b| a + b);
        let allowance = tenant.pool_minutes();
        CreditPosition {
            tenant_id: tenant.id.as_str().to_owned(),
            currency: currency.code().to_owned(),
            balance: money(s.balance),
            debt: money(lotted - s.balance),
            depleted: s.depleted,
            lots: s
                .lots
                .iter()
                .map(|l| LotPosition {
                    lot_id: l.lot_id.clone(),
                    purchased_at: l.purchased_at.to_string(),
                    purchased: l.purchased.map(money),
                    remaining: money(l.remaining),
                    expires_at: l.expires_at.to_string(),
                })
                .collect(),
            totals: TotalsPosition {
                funded: money(s.totals.funded),
                adjusted: money(s.totals.adjusted),
                usage_charges: money(s.totals.usage_charges),
                forfeited: money(s.totals.forfeited),
            },
            pool: PoolPosition {
                month: s.pool_month.map(|(y, m)| format!("{y:04}-{m:02}")),
                allowance_minutes: allowance,
                used_minutes: s.pool_used_minutes,
                left_minutes: allowance.saturating_sub(s.pool_used_minutes),
            },
            low_balance_thresholds: tenant
                .low_balance_thresholds
                .iter()
                .map(|t| Threshold { amount: money(*t), armed: !s.low_balance_fired.contains(t) })
                .collect(),
            auto_recharge: tenant.auto_recharge.as_ref().map(|r| Recharge {
                trigger: money(r.trigger),
                amount: money(r.amount),
                state: match (s.recharge_pending, s.recharge_failed) {
                    (false, _) => "armed",
                    (true, false) => "requested",
                    (true, true) => "failed",
                }
                .to_owned(),
            }),
            open_legs: OpenLegsPosition {
                count: s.open_legs,
                legs: s
                    .listed
                    .iter()
                    .map(|(id, leg)| OpenLegPosition {
                        leg_id: id.to_string(),
                        conference_id: leg.conference_id.to_string(),
                        organizer_id: leg.organizer_id.to_string(),
                        call_type: match leg.call_type {
                            tollgate_core::CallType::ConfIn => "conf_in",
                            tollgate_core::CallType::ConfOut => "conf_out",
                        }
                        .to_owned(),
                        capability: match leg.capability {
                            tollgate_core::Capability::Ppm => "ppm",
                            tollgate_core::Capability::Subscription => "subscription",
                            tollgate_core::Capability::Pool => "pool",
                            tollgate_core::Capability::Unpriced => "unpriced",
                        }
                        .to_owned(),
                        started_at: leg.started_at.to_string(),
                        elapsed_seconds: leg.elapsed_seconds,
                        debited: money(leg.debited),
                    })
                    .collect(),
            },
            parked_ends: s.parked_ends,
            credit_sequence: s.credit_sequence,
            event_time: (s.watermark != Timestamp::default()).then(|| s.watermark.to_string()),
            committed: CommittedAt { partition, input_offsets: offsets },
        }
    }
}

/// A worker's side of the tenant API: its partitions' views, its reference tables and the
/// ownership directory it follows.
#[derive(Debug)]
pub struct TenantApi {
    pub(crate) views: Arc<Views>,
    pub(crate) tables: Arc<Tables>,
    pub(crate) directory: Arc<Directory>,
}

/// What the tenant API answers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Answer {
    /// The committed position (200).
    Found(Box<CreditPosition>),
    /// No such tenant (404).
    Unknown,
    /// The owning partition is restoring here, or its owner is not known yet (503, retry).
    Unavailable(&'static str),
    /// Another worker owns the tenant: ask it at `address` (host:port).
    Elsewhere {
        /// Its HTTP address.
        address: String,
    },
}

/// How a process's workers answer for `tenant`: the one owning its partition from its
/// committed view; otherwise the owner announced on the ownership topic (unless `forwarded`:
/// a request already forwarded once is not sent on, so two workers never bounce it). `me` is
/// this process's own HTTP address, never an owner to forward to.
pub fn answer(apis: &[Arc<TenantApi>], tenant: &str, forwarded: bool, me: Option<&str>) -> Answer {
    let Some(count) = apis.iter().find_map(|a| a.views.partition_count()) else {
        return Answer::Unavailable("the worker is starting");
    };
    let partition = partitioner::partition_for(tenant.as_bytes(), count);
    // Unknown is unknown wherever its partition is, restoring here included (404, not a 503
    // that a client would retry until the restore ended).
    let Some(reference) = apis.iter().find_map(|a| a.tables.tenant(tenant)) else { return Answer::Unknown };
    for api in apis {
        let Some(view) = api.views.partition(partition) else { continue };
        return match view.lookup(tenant) {
            Lookup::Restoring => Answer::Unavailable("the tenant's partition is restoring"),
            Lookup::Committed(snapshot, offsets) => {
                Answer::Found(Box::new(CreditPosition::of(&reference, snapshot.as_deref(), partition, offsets)))
            }
        };
    }
    if forwarded {
        return Answer::Unavailable("the tenant's partition is changing hands");
    }
    match apis.iter().find_map(|a| a.directory.owner(partition)) {
        Some(owner) if Some(owner.as_str()) != me => Answer::Elsewhere { address: owner },
        _ => Answer::Unavailable("the tenant's partition has no known owner yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(balance: &str) -> TenantState {
        let mut s = TenantState::default();
        s.ledger.credit("lot-1".into(), balance.parse().unwrap(), Timestamp::new(1_790_000_000, 0).unwrap());
        s.totals.funded = balance.parse().unwrap();
        s
    }

    /// The auto-recharge is armed, requested, or failed (a request answered with a failure,
    /// not asked again until the balance is back at the trigger).
    #[test]
    fn the_recharge_shows_armed_requested_or_failed() {
        let usd = tollgate_core::Currency::from_code("USD").unwrap();
        let mut tenant = tollgate_core::Tenant::new(tollgate_core::TenantId::new("acme").unwrap(), usd, "usd");
        let m = |s: &str| s.parse::<Money>().unwrap();
        tenant.auto_recharge = Some(tollgate_core::AutoRecharge { trigger: m("5"), amount: m("25") });
        let shown = |pending: bool, failed: bool| {
            let mut s = state("4.00");
            (s.recharge_pending, s.recharge_failed) = (pending, failed);
            let position = CreditPosition::of(&tenant, Some(&TenantSnapshot::of(&s)), 0, BTreeMap::new());
            position.auto_recharge.unwrap().state
        };
        assert_eq!([shown(false, false), shown(true, false), shown(true, true)], ["armed", "requested", "failed"]);
        let mut s = state("4.00");
        s.watermark = Timestamp::new(1_793_610_000, 0).unwrap();
        let position = CreditPosition::of(&tenant, Some(&TenantSnapshot::of(&s)), 0, BTreeMap::new());
        assert_eq!(position.event_time.as_deref(), Some("2026-11-02T09:00:00Z"));
    }

    /// A reader sees the restored state, then each committed batch whole: the tenants it
    /// touched and its offsets together.
    #[test]
    fn a_view_moves_by_whole_commits() {
        let views = Views::default();
        let view = views.assigned(1);
        assert!(matches!(view.lookup("acme"), Lookup::Restoring));
        // Restored dormant: answered from its record until a batch touches it.
        let mut dormant = crate::states::DormantBuilder::default();
        assert!(dormant.insert("acme", &tollgate_proto::state::tenant_record(&state("10.00"))));
        let restored = States::new(crate::states::Live::default(), dormant.finish());
        view.restored(&restored, BTreeMap::from([("legs".to_owned(), 5)]));
        let Lookup::Committed(Some(acme), offsets) = view.lookup("acme") else { panic!("not committed") };
        assert_eq!((acme.balance, offsets["legs"]), ("10.00".parse().unwrap(), 5));
        let (globex, acme_after) = (state("3.00"), state("9.50"));
        view.committed(
            [("globex", Some(&globex)), ("acme", Some(&acme_after))],
            [("legs".to_owned(), 9), ("credits".to_owned(), 2)],
        );
        let Lookup::Committed(Some(acme), offsets) = view.lookup("acme") else { panic!("not committed") };
        assert_eq!(acme.balance, "9.50".parse().unwrap());
        assert_eq!(offsets, BTreeMap::from([("credits".to_owned(), 2), ("legs".to_owned(), 9)]));
        view.committed([("globex", None)], []);
        assert!(matches!(view.lookup("globex"), Lookup::Committed(None, _)));
        views.revoked(1);
        assert!(views.partition(1).is_none());
    }

    /// The owner answers (a known tenant without state: a zero balance), another worker
    /// forwards once to the owner the directory names, never to itself and never a request
    /// that was forwarded already; an unknown tenant is unknown everywhere, its partition
    /// restoring included.
    #[test]
    fn the_owner_answers_and_the_others_forward_once() {
        let tables = Arc::new(Tables::default());
        let usd = tollgate_core::Currency::from_code("USD").unwrap();
        let acme = tollgate_core::TenantId::new("acme").unwrap();
        tables.put_tenant(tollgate_core::Tenant::new(acme, usd, "usd"), 0);
        let api = |directory: &Arc<Directory>| {
            Arc::new(TenantApi {
                views: Arc::new(Views::default()),
                tables: Arc::clone(&tables),
                directory: Arc::clone(directory),
            })
        };
        let directory = Arc::new(Directory::new("g"));
        let (owner, other) = (api(&directory), api(&directory));
        assert_eq!(answer(&[Arc::clone(&other)], "acme", false, None), Answer::Unavailable("the worker is starting"));
        for a in [&owner, &other] {
            a.views.set_partition_count(4);
        }
        let partition = partitioner::partition_for(b"acme", 4);
        let announcement = serde_json::json!({"worker": "w1", "address": "10.0.0.1:9464", "partitions": [partition]});
        directory.apply(b"g/10.0.0.1:9464/w1", Some(announcement.to_string().as_bytes()), 0);
        owner.views.assigned(partition);
        assert_eq!(
            answer(&[Arc::clone(&owner)], "acme", false, None),
            Answer::Unavailable("the tenant's partition is restoring")
        );
        // Unknown on that restoring partition too: 404, not a 503 to retry until it restored.
        let typo = crate::testing::key_on("acme", partition, 4);
        assert_eq!(answer(&[Arc::clone(&owner)], &typo, false, None), Answer::Unknown);
        owner.views.partition(partition).unwrap().restored(&States::default(), BTreeMap::new());
        let Answer::Found(position) = answer(&[Arc::clone(&owner)], "acme", true, None) else { panic!("not found") };
        assert_eq!((position.balance.as_str(), position.committed.partition), ("0.00", partition));
        // No input of it applied yet: no event time (not 1970).
        assert_eq!(position.event_time, None);
        assert_eq!(answer(&[Arc::clone(&owner)], "nobody", false, None), Answer::Unknown);
        assert_eq!(
            answer(&[Arc::clone(&other)], "acme", false, Some("10.0.0.2:9464")),
            Answer::Elsewhere { address: "10.0.0.1:9464".into() }
        );
        assert_eq!(
            answer(&[Arc::clone(&other)], "acme", true, Some("10.0.0.2:9464")),
            Answer::Unavailable("the tenant's partition is changing hands")
        );
        assert_eq!(
            answer(&[other], "acme", false, Some("10.0.0.1:9464")),
            Answer::Unavailable("the tenant's partition has no known owner yet")
        );
    }
}
