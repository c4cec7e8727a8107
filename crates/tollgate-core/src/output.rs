//! Outputs: rated usage, leg decisions and credit events.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::number::{Country, E164};
use crate::rates::Prefix;
use crate::reference::TenantId;
use crate::{Id, Timestamp};

/// Anything the rater emits.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Output {
    /// A usage-report row. Held inline, not boxed: an `Output` is then as large as a
    /// `RatedUsage` (224 bytes against 96), but a leg's usage record costs no heap allocation
    /// and no free, which cost more than the larger moves (`docs/BENCHMARKS.md`).
    Usage(RatedUsage),
    /// A decision for the call controller.
    Decision(LegDecision),
    /// A credit event.
    Credit(CreditEvent),
}

/// Usage-report call type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CallType {
    /// Dial-in.
    ConfIn,
    /// Dial-out and call-me-at.
    ConfOut,
}

/// Number type of the priced number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum NumberType {
    /// Toll.
    Toll,
    /// Toll-free.
    TollFree,
}

/// What paid for a leg.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Capability {
    /// Credits, per minute: every billable second of the leg was charged to credits (a
    /// pool-eligible leg is one too when the pool had no minute for it).
    Ppm,
    /// Included in the subscription (toll dial-in).
    Subscription,
    /// The monthly dial-out pool paid for at least one billable minute; any remainder was
    /// charged to credits (`pool_seconds < billable_seconds`).
    Pool,
    /// No rate: free and flagged.
    Unpriced,
}

/// Why a leg was blocked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum BlockReason {
    /// Conferencing dial-out policy.
    Policy,
    /// Toll-free dial-in switched off for the organizer.
    TollFreeDisabled,
    /// No credit (balance at or below zero, credits not enabled, or the first increment not
    /// affordable under the disconnect cutoff).
    NoCredit,
    /// No rate and the tenant rejects unpriced legs.
    NoRate,
}

/// Rated or blocked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum UsageOutcome {
    /// Rated and debited.
    Rated,
    /// Blocked at its start.
    Blocked(BlockReason),
}

/// Anomaly flags on a usage record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct UsageFlags {
    /// Longer than 24 h: rated up to the limit.
    pub over_max_duration: bool,
    /// No rate matched.
    pub unpriced: bool,
    /// The tenant's rate card is in another currency (the leg is treated as unpriced).
    pub currency_mismatch: bool,
    /// An interim update reported more seconds than the final duration.
    pub interim_exceeded_final: bool,
    /// No longer set: an `ended` that waited for its `started` and ends before it is dropped
    /// (DESIGN, "Duplicates, order and lateness"), where releases before it rated the leg as
    /// zero seconds with this flag. Kept so that the open legs this release writes (whose
    /// flags are part of their serde form) still read in a release before it.
    pub end_before_start: bool,
}

impl UsageFlags {
    /// The set flags by their wire names.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.over_max_duration {
            names.push("over_max_duration");
        }
        if self.unpriced {
            names.push("unpriced");
        }
        if self.currency_mismatch {
            names.push("currency_mismatch");
        }
        if self.interim_exceeded_final {
            names.push("interim_exceeded_final");
        }
        if self.end_before_start {
            names.push("end_before_start");
        }
        names
    }
}

/// One usage-report row (RULES.md §6).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RatedUsage {
    /// Leg.
    pub leg_id: Id,
    /// Call id.
    pub call_id: Id,
    /// Meeting id.
    pub conference_id: Id,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Organizer billed.
    pub organizer_id: Id,
    /// Organizer's usage location.
    pub organizer_usage_location: crate::number::Country,
    /// Call type.
    pub call_type: CallType,
    /// Number type.
    pub number_type: NumberType,
    /// Priced number's country differs from the organizer's usage location.
    pub international: bool,
    /// Priced number's country.
    pub destination_country: Country,
    /// Priced number.
    pub destination_number: E164,
    /// Leg start.
    pub started_at: Timestamp,
    /// Leg end (start for blocked legs).
    pub ended_at: Timestamp,
    /// Connected seconds (capped at 24 h).
    pub duration_seconds: u32,
    /// Billable seconds after increments.
    pub billable_seconds: u32,
    /// Of those, covered by the subscription pool.
    pub pool_seconds: u32,
    /// Connection fee included in `charge`.
    pub connection_fee: Money,
    /// The leg's charge (the sum of its debits).
    pub charge: Money,
    /// Currency.
    pub currency: Currency,
    /// What paid.
    pub capability: Capability,
    /// Rate card used (empty when none).
    pub rate_card_id: Id,
    /// Version label used (empty when none).
    pub rate_card_version: Id,
    /// Matched prefix.
    pub rate_prefix: Option<Prefix>,
    /// Price per minute used.
    pub price_per_minute: Money,
    /// Rated or blocked.
    pub outcome: UsageOutcome,
    /// Balance after the leg's last debit.
    pub balance_after: Money,
    /// Anomalies.
    pub flags: UsageFlags,
}

impl RatedUsage {
    /// `<tenant>/<leg>`: the record's deterministic id (a leg has one usage record).
    pub fn usage_id(&self) -> String {
        joined(&self.usage_id_parts())
    }

    /// The pieces [`RatedUsage::usage_id`] joins, for writing it without building it.
    pub fn usage_id_parts(&self) -> [&str; 3] {
        [self.tenant_id.as_str(), "/", &self.leg_id]
    }
}

/// A decision for a call controller.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LegDecision {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Leg.
    pub leg_id: Id,
    /// Call.
    pub call_id: Id,
    /// Meeting.
    pub conference_id: Id,
    /// Event time of the event that caused it.
    pub decided_at: Timestamp,
    /// The decision.
    pub decision: Decision,
}

impl LegDecision {
    /// `<tenant>/<leg>/<kind>`: the decision's deterministic id (a leg gets at most one of
    /// each kind).
    pub fn decision_id(&self) -> String {
        joined(&self.decision_id_parts())
    }

    /// The pieces [`LegDecision::decision_id`] joins, for writing it without building it.
    pub fn decision_id_parts(&self) -> [&str; 5] {
        [self.tenant_id.as_str(), "/", &self.leg_id, "/", self.decision.kind()]
    }
}

/// Allow, block or disconnect.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Decision {
    /// The leg may proceed.
    Allow {
        /// Longest billable duration affordable at the start (capped at 24 h).
        max_affordable_seconds: u32,
        /// What pays (`None` for VoIP).
        capability: Option<Capability>,
    },
    /// The leg must not proceed.
    Block(BlockReason),
    /// The leg must be hung up now (cutoff policy `disconnect`).
    Disconnect {
        /// The balance that triggered it.
        balance: Money,
        /// The tenant's currency (the balance is written in its minor units).
        currency: Currency,
    },
}

impl Decision {
    /// `allow`, `block` or `disconnect`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Block(_) => "block",
            Decision::Disconnect { .. } => "disconnect",
        }
    }
}

/// What kind of credit event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CreditEventKind {
    /// A lot was funded.
    Funded,
    /// The balance fell below a low-balance threshold (`amount` = the threshold).
    LowBalance,
    /// Auto-recharge requested (`amount` = the recharge amount).
    RechargeRequested,
    /// A requested recharge was paid.
    RechargeSucceeded,
    /// A requested recharge failed.
    RechargeFailed,
    /// The balance reached zero or below.
    Depleted,
    /// The balance is above zero again.
    Restored,
    /// A lot expired; `amount` was forfeited.
    LotExpired,
    /// 80 % of the monthly pool used.
    Pool80Percent,
    /// The monthly pool is used up.
    Pool100Percent,
    /// A manual adjustment.
    Adjusted,
}

impl CreditEventKind {
    /// A short snake_case label (metrics, summaries).
    pub const fn label(self) -> &'static str {
        match self {
            CreditEventKind::Funded => "funded",
            CreditEventKind::LowBalance => "low_balance",
            CreditEventKind::RechargeRequested => "recharge_requested",
            CreditEventKind::RechargeSucceeded => "recharge_succeeded",
            CreditEventKind::RechargeFailed => "recharge_failed",
            CreditEventKind::Depleted => "depleted",
            CreditEventKind::Restored => "restored",
            CreditEventKind::LotExpired => "lot_expired",
            CreditEventKind::Pool80Percent => "pool_80_percent",
            CreditEventKind::Pool100Percent => "pool_100_percent",
            CreditEventKind::Adjusted => "adjusted",
        }
    }
}

/// What moved a tenant's credit ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum MovementKind {
    /// A leg's debit (at an interim or its end); a positive amount is a refund, when a leg's
    /// final duration is below an interim already debited.
    Debit,
    /// A funded lot (a purchase or a paid recharge).
    Funding,
    /// The remainder of an expired lot, forfeited.
    Forfeit,
    /// An administrator's adjustment.
    Adjustment,
}

/// One movement of a tenant's credit ledger: the debit trail. The amounts of a tenant's
/// movements add up to the change of its balance, and each carries the balance after it.
///
/// Not an [`Output`]: the rater writes movements only when asked
/// ([`Rater::apply_traced`](crate::Rater::apply_traced)).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LedgerMovement {
    /// `<tenant>/<input id>/<n>`: the n-th movement (from 1) the input caused; deterministic.
    pub movement_id: String,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Event time of the input that caused it.
    pub occurred_at: Timestamp,
    /// Kind.
    pub kind: MovementKind,
    /// The signed change of the balance: negative for a debit or a forfeit.
    pub amount: Money,
    /// Currency.
    pub currency: Currency,
    /// Balance after.
    pub balance_after: Money,
    /// The leg debited (debits), else empty.
    pub leg_id: String,
    /// The lot funded or forfeited (funding, forfeits), else empty.
    pub lot_id: String,
}

/// A credit event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CreditEvent {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Per-tenant, gap-free, from 1.
    pub sequence: u64,
    /// Event time.
    pub occurred_at: Timestamp,
    /// Kind.
    pub kind: CreditEventKind,
    /// Amount concerned (zero where none).
    pub amount: Money,
    /// Currency.
    pub currency: Currency,
    /// Balance after.
    pub balance_after: Money,
    /// Detail.
    pub detail: String,
}

impl CreditEvent {
    /// `<tenant>/credit/<sequence>`: the event's deterministic id.
    pub fn credit_event_id(&self) -> String {
        format!("{}/credit/{}", self.tenant_id, self.sequence)
    }
}

/// The concatenation of `parts`, in one allocation of the exact size.
pub(crate) fn joined(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        s.push_str(part);
    }
    s
}
