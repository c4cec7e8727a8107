//! The context of one input: the tenant, its state, where outputs and ledger movements go,
//! and the ledger operations every kind of input shares (debits, thresholds, cutoff, pool).

use crate::instant::YearMonth;
use crate::money::{Currency, Money};
use crate::output::{
    Capability, CreditEvent, CreditEventKind, Decision, LedgerMovement, LegDecision, MovementKind, Output, joined,
};
use crate::reference::{CutoffPolicy, Tenant};
use crate::state::{OpenLeg, TenantState, pools_kept_from};
use crate::{Id, Timestamp};

/// Mutable view of one tenant while one input is applied.
pub(super) struct Ctx<'a> {
    pub(super) tenant: &'a Tenant,
    pub(super) state: &'a mut TenantState,
    pub(super) out: &'a mut Vec<Output>,
    pub(super) at: Timestamp,
    /// [`RatingConfig::retention_seconds`](super::RatingConfig::retention_seconds).
    pub(super) retention_seconds: u32,
    /// Where ledger movements go, when they are asked for.
    pub(super) trail: Option<Trail<'a>>,
}

/// The debit trail of one input: its movements and how they are numbered.
pub(super) struct Trail<'a> {
    pub(super) movements: &'a mut Vec<LedgerMovement>,
    /// The id of the input that causes them.
    pub(super) cause: Id,
    /// Number of the next movement.
    pub(super) next: u32,
}

impl Ctx<'_> {
    pub(super) fn currency(&self) -> Currency {
        self.tenant.currency
    }

    pub(super) fn emit_credit(&mut self, kind: CreditEventKind, amount: Money, detail: String) {
        let balance_after = self.state.balance();
        self.emit_credit_at(kind, amount, balance_after, detail);
    }

    /// [`Ctx::emit_credit`] for a change the ledger made together with others, after which
    /// the balance was `balance_after`.
    fn emit_credit_at(&mut self, kind: CreditEventKind, amount: Money, balance_after: Money, detail: String) {
        self.state.credit_sequence += 1;
        let sequence = self.state.credit_sequence;
        self.out.push(Output::Credit(CreditEvent {
            tenant_id: self.tenant.id.clone(),
            sequence,
            occurred_at: self.at,
            kind,
            amount,
            currency: self.tenant.currency,
            balance_after,
            detail,
        }));
    }

    /// Records a movement of the ledger that already happened (so `balance_after` is the
    /// balance now), when the trail is asked for.
    pub(super) fn moved(&mut self, kind: MovementKind, amount: Money, leg_id: &str, lot_id: &str) {
        let balance_after = self.state.balance();
        self.moved_to(kind, amount, balance_after, leg_id, lot_id);
    }

    pub(super) fn moved_to(
        &mut self,
        kind: MovementKind,
        amount: Money,
        balance_after: Money,
        leg_id: &str,
        lot_id: &str,
    ) {
        let Some(trail) = &mut self.trail else {
            return;
        };
        let n = trail.next.to_string();
        trail.next += 1;
        trail.movements.push(LedgerMovement {
            movement_id: joined(&[self.tenant.id.as_str(), "/", &trail.cause, "/", &n]),
            tenant_id: self.tenant.id.clone(),
            occurred_at: self.at,
            kind,
            amount,
            currency: self.tenant.currency,
            balance_after,
            leg_id: leg_id.to_owned(),
            lot_id: lot_id.to_owned(),
        });
    }

    pub(super) fn emit_decision(&mut self, leg_id: Id, call_id: Id, conference_id: Id, decision: Decision) {
        self.out.push(Output::Decision(LegDecision {
            tenant_id: self.tenant.id.clone(),
            leg_id,
            call_id,
            conference_id,
            decided_at: self.at,
            decision,
        }));
    }

    /// Forfeits lots whose 12 months are over, as of the event being applied.
    pub(super) fn expire_lots(&mut self) {
        let expired = self.state.ledger.expire(self.at);
        if expired.is_empty() {
            return;
        }
        // The ledger dropped them all at once; the trail and the events have one movement and
        // one event per lot, each with the balance after it.
        let mut balance = self.state.balance() + expired.iter().map(|l| l.remaining).sum::<Money>();
        for lot in expired {
            balance -= lot.remaining;
            self.moved_to(MovementKind::Forfeit, -lot.remaining, balance, "", &lot.lot_id);
            self.state.totals.forfeited += lot.remaining;
            self.emit_credit_at(CreditEventKind::LotExpired, lot.remaining, balance, lot.lot_id);
        }
        self.after_balance_fell();
    }

    /// Debits (or, negative, refunds) usage of `leg_id` and runs the consequences.
    pub(super) fn debit_usage(&mut self, leg_id: &str, amount: Money) {
        if amount == Money::ZERO {
            return;
        }
        self.state.ledger.debit(amount, self.at);
        self.moved(MovementKind::Debit, -amount, leg_id, "");
        self.state.totals.usage_charges += amount;
        if amount.is_positive() {
            self.after_balance_fell();
        } else {
            self.after_balance_rose();
        }
    }

    /// Thresholds, auto-recharge, depletion and cutoff after the balance went down.
    pub(super) fn after_balance_fell(&mut self) {
        let balance = self.state.balance();
        let tenant = self.tenant;
        // Highest first (`Tenant::validated`): the first one the balance is not below ends it.
        for threshold in tenant.low_balance_thresholds.iter().take_while(|t| balance < **t) {
            if !self.state.low_balance_fired.contains(threshold) {
                self.state.low_balance_fired.push(*threshold);
                self.emit_credit(CreditEventKind::LowBalance, *threshold, String::new());
            }
        }
        if let Some(recharge) = tenant.auto_recharge {
            if tenant.credits_enabled && balance < recharge.trigger && !self.state.recharge_pending {
                self.state.recharge_pending = true;
                self.emit_credit(CreditEventKind::RechargeRequested, recharge.amount, String::new());
            }
        }
        if !balance.is_positive() && !self.state.depleted {
            self.state.depleted = true;
            self.emit_credit(CreditEventKind::Depleted, Money::ZERO, String::new());
        }
        if self.cutoff_reached() {
            self.disconnect_credit_funded_legs(balance);
        }
    }

    /// Whether the tenant cuts off calls and the balance is below -overdraft.
    pub(super) fn cutoff_reached(&self) -> bool {
        self.tenant.cutoff == CutoffPolicy::Disconnect && self.state.balance() < -self.tenant.overdraft_limit
    }

    /// Whether a leg is being paid with credits now (pooled legs once the pool of the month
    /// they started in is empty), or would be if it had a price: an unpriced leg counts as
    /// what would pay for it, as it did when its start was checked for credit
    /// (`leg_start::credit_block`).
    pub(super) fn is_credit_funded(&self, leg: &OpenLeg) -> bool {
        let paid_as = match leg.capability {
            Capability::Unpriced => leg.unpriced_paid_as.unwrap_or(Capability::Unpriced),
            capability => capability,
        };
        match paid_as {
            Capability::Ppm => true,
            Capability::Pool => !leg.pooled_in_full && self.pool_minutes_left_in(leg.started_at.year_month()) == 0,
            Capability::Subscription | Capability::Unpriced => false,
        }
    }

    /// Re-arms thresholds and the recharge trigger, and reports a restored balance.
    pub(super) fn after_balance_rose(&mut self) {
        let balance = self.state.balance();
        self.state.low_balance_fired.retain(|t| balance < *t);
        if let Some(recharge) = self.tenant.auto_recharge {
            if balance >= recharge.trigger {
                self.state.recharge_pending = false;
                self.state.recharge_failed = false;
            }
        }
        if self.state.depleted && balance.is_positive() {
            self.state.depleted = false;
            self.emit_credit(CreditEventKind::Restored, Money::ZERO, String::new());
        }
    }

    pub(super) fn disconnect_credit_funded_legs(&mut self, balance: Money) {
        // The legs credits pay for now (`is_credit_funded`: a pool leg once the pool of the
        // month it started in is empty), in leg-id order; then each marked and told. Every
        // debit past the cutoff asks, so the legs are gone through unsorted and only those due
        // are sorted (a tenant may have thousands open that credits do not pay for).
        let mut due: Vec<Id> = self
            .state
            .open_legs
            .iter_unordered()
            .filter(|(_, leg)| !leg.disconnect_sent && self.is_credit_funded(leg))
            .map(|(id, _)| id.clone())
            .collect();
        due.sort_unstable();
        for leg_id in due {
            let Some(leg) = self.state.open_legs.get_mut(&leg_id) else { continue };
            leg.disconnect_sent = true;
            let (call_id, conference_id) = (leg.call_id.clone(), leg.conference_id.clone());
            let currency = self.currency();
            self.emit_decision(leg_id, call_id, conference_id, Decision::Disconnect { balance, currency });
        }
    }

    /// Pooled minutes left this month (as of the event being applied).
    pub(super) fn pool_minutes_left(&self) -> u32 {
        self.pool_minutes_left_in(self.at.year_month())
    }

    /// Pooled minutes left in `month`.
    pub(super) fn pool_minutes_left_in(&self, month: YearMonth) -> u32 {
        if month < self.pools_kept_from() {
            return 0;
        }
        let used = self.state.pool_of(month).map_or(0, |pool| pool.used_minutes);
        self.tenant.pool_minutes().saturating_sub(used)
    }

    /// The oldest month whose pool is kept once this input is applied ([`pools_kept_from`]):
    /// an older month's pool is forgotten, or will be when the watermark reaches this input, so
    /// it has no minutes left, whichever input came first.
    fn pools_kept_from(&self) -> YearMonth {
        pools_kept_from(super::horizon(self.state.watermark.max(self.at), self.retention_seconds))
    }

    /// Takes up to `minutes` from `month`'s pool; returns how many were taken. None from a
    /// month whose pool is forgotten ([`pools_kept_from`]): only an end stamped long after its
    /// leg's start could ask, and credits pay for those minutes rather than a pool started
    /// afresh. The 80 % and 100 % events are emitted by [`Ctx::pool_alerts`], after the debit
    /// that goes with the minutes, so their balance is the balance after it.
    pub(super) fn take_pool_minutes(&mut self, month: YearMonth, minutes: u32, past_the_end: bool) -> u32 {
        if month < self.pools_kept_from() {
            return 0;
        }
        let total = self.tenant.pool_minutes();
        let pool = self.state.pool_of_mut(month);
        let take = if past_the_end { minutes } else { minutes.min(total.saturating_sub(pool.used_minutes)) };
        pool.used_minutes += take;
        take
    }

    /// Gives up to `minutes` that `leg` drew back to the pools they came from, the newest
    /// month first ([`OpenLeg::pool_draws`]). None go back to a month whose pool is forgotten
    /// (no input of it can draw any more), nor from a leg that recorded no draws.
    pub(super) fn give_back_pool_minutes(&mut self, leg: &mut OpenLeg, mut minutes: u32) {
        while minutes > 0 {
            let Some((month, drawn)) = leg.pool_draws.last_mut() else { return };
            if self.state.pool_of(*month).is_none() {
                return;
            }
            let pool = self.state.pool_of_mut(*month);
            let given = minutes.min(*drawn).min(pool.used_minutes);
            if given == 0 {
                return;
            }
            pool.used_minutes -= given;
            *drawn -= given;
            minutes -= given;
            leg.pool_minutes -= given;
            if *drawn == 0 {
                leg.pool_draws.pop();
            }
        }
    }

    /// Emits `month`'s 80 % and 100 % pool events once each (the month a leg draws from,
    /// which is the month it started in, whenever its events come).
    pub(super) fn pool_alerts(&mut self, month: YearMonth) {
        let total = self.tenant.pool_minutes();
        if total == 0 || self.state.pool_of(month).is_none() {
            return;
        }
        let pool = self.state.pool_of_mut(month);
        let used = u64::from(pool.used_minutes);
        let alert_80 = used * 100 >= u64::from(total) * 80 && !pool.alerted_80;
        let alert_100 = used >= u64::from(total) && !pool.alerted_100;
        pool.alerted_80 |= alert_80;
        pool.alerted_100 |= alert_100;
        if alert_80 {
            self.emit_credit(CreditEventKind::Pool80Percent, Money::ZERO, format!("{used}/{total} minutes"));
        }
        if alert_100 {
            self.emit_credit(CreditEventKind::Pool100Percent, Money::ZERO, format!("{used}/{total} minutes"));
        }
    }
}
