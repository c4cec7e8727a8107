//! The rating function: (reference data, tenant state, input) -> (new state, outputs).

use std::sync::Arc;

use crate::event::{
    CallLegEvent, CreditBody, CreditCommand, Input, LegBody, LegDuration, LegEnded, LegKind, LegStarted, LotFunding,
};
use crate::hash::fingerprint;
use crate::money::{Currency, Money};
use crate::output::{
    BlockReason, CallType, Capability, CreditEvent, CreditEventKind, Decision, LedgerMovement, LegDecision,
    MovementKind, NumberType, Output, RatedUsage, UsageFlags, UsageOutcome,
};
use crate::policy::DialoutPolicy;
use crate::reference::{Catalog, CutoffPolicy, LicenceModel, PoolSplit, Tenant, UnpricedHandling, User};
use crate::state::{OpenLeg, TenantState};
use crate::{Error, Timestamp};

/// The longest a leg can last (meetings end after 24 h): longer legs are rated up to it and
/// flagged.
pub const MAX_LEG_SECONDS: u32 = 86_400;

/// Tunables of the rater (tollgate decisions that are not per tenant).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RatingConfig {
    /// How long (event time) applied ids and closed legs are remembered for deduplication,
    /// how long an `ended` waits for its `started`, and how late an input may be: one older
    /// than the tenant's newest applied event minus this is refused (`too_late`). Default 48 h.
    pub retention_seconds: u32,
}

impl Default for RatingConfig {
    fn default() -> Self {
        RatingConfig { retention_seconds: 48 * 3600 }
    }
}

/// What applying an input did (for metrics; the outputs say the rest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Applied {
    /// Applied; outputs (possibly none) were emitted.
    Processed,
    /// The same input was applied before: no effect.
    Duplicate,
    /// An `ended` arrived before its `started` and waits for it.
    Parked,
    /// An `interim` for a leg not started (the `ended` will carry the total).
    IgnoredBeforeStart,
    /// An event for a leg already closed (ended, blocked, or VoIP).
    IgnoredAfterClose,
}

impl Applied {
    /// A short label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Applied::Processed => "processed",
            Applied::Duplicate => "duplicate",
            Applied::Parked => "parked",
            Applied::IgnoredBeforeStart => "ignored_before_start",
            Applied::IgnoredAfterClose => "ignored_after_close",
        }
    }
}

/// Rates inputs. Holds no state of its own: all of it is in [`TenantState`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rater {
    config: RatingConfig,
}

impl Rater {
    /// A rater with the given tunables.
    pub const fn new(config: RatingConfig) -> Self {
        Rater { config }
    }

    /// Applies one input of a tenant to that tenant's state, appending outputs to `out`.
    ///
    /// Deterministic: the same state and input give the same new state and outputs. On `Err`
    /// neither `state` nor `out` was changed, with one exception: a `started` refused because
    /// its priced number is impossible ([`Error::ImpossibleNumber`]) closes the leg, so that
    /// its later events are ignored rather than parked for a start that will never come.
    pub fn apply<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Result<Applied, Error> {
        self.apply_with(catalog, state, input, out, None)
    }

    /// [`Rater::apply`], also appending to `movements` one [`LedgerMovement`] per change of
    /// the tenant's ledger (debits and refunds, funding, forfeits, adjustments): the debit
    /// trail. The outputs and the new state are exactly those of `apply`; on `Err` nothing is
    /// appended.
    pub fn apply_traced<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
        movements: &mut Vec<LedgerMovement>,
    ) -> Result<Applied, Error> {
        self.apply_with(catalog, state, input, out, Some(movements))
    }

    fn apply_with<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
        movements: Option<&mut Vec<LedgerMovement>>,
    ) -> Result<Applied, Error> {
        let tenant_id = input.tenant_id().as_str();
        let tenant = catalog.tenant(tenant_id).ok_or_else(|| Error::UnknownTenant(tenant_id.to_owned()))?;
        let fingerprint = fingerprint(&input);
        if let Some(&seen) = state.seen.get(input.id()) {
            return if seen == fingerprint {
                Ok(Applied::Duplicate)
            } else {
                Err(Error::DuplicateConflict(input.id().to_owned()))
            };
        }
        let at = input.occurred_at();
        // Older than the retention window: its id may have been forgotten, so applying it could
        // apply it twice. Refuse it instead (allowed lateness = the retention window).
        let horizon = self.horizon(state.watermark);
        if at < horizon {
            return Err(Error::TooLate { event_time: at.to_string(), horizon: horizon.to_string() });
        }
        // One allocation, shared by the dedup map and its retention queue.
        let id: Arc<str> = Arc::from(input.id());
        let trail = movements.map(|movements| Trail { movements, cause: Arc::clone(&id), next: 1 });
        let applied = match input {
            Input::Leg(event) => self.leg(catalog, &tenant, state, event, out, trail)?,
            Input::Credit(command) => {
                credit(&tenant, state, command, out, trail)?;
                Applied::Processed
            }
        };
        state.seen.insert(id, fingerprint, at);
        self.advance_watermark(state, at);
        Ok(applied)
    }

    /// The oldest event time still accepted when the newest applied is `watermark`.
    fn horizon(&self, watermark: Timestamp) -> Timestamp {
        Timestamp::new((watermark.unix_seconds() - i64::from(self.config.retention_seconds)).max(0), 0)
            .unwrap_or_default()
    }

    fn advance_watermark(&self, state: &mut TenantState, at: Timestamp) {
        if at <= state.watermark {
            return;
        }
        state.watermark = at;
        let cutoff = self.horizon(at);
        state.seen.prune(cutoff);
        state.closed_legs.prune(cutoff);
        let before = state.parked_ends.len();
        state.parked_ends.retain(|_, e| e.occurred_at >= cutoff);
        state.totals.orphan_ends_dropped += (before - state.parked_ends.len()) as u64;
    }

    fn leg<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        tenant: &Tenant,
        state: &mut TenantState,
        event: CallLegEvent,
        out: &mut Vec<Output>,
        trail: Option<Trail<'_>>,
    ) -> Result<Applied, Error> {
        match event.body {
            LegBody::Started(started) => {
                let open = state.open_legs.contains_key(&event.leg_id);
                let closed = state.closed_legs.contains(&event.leg_id);
                let impossible = match priced_number(&event.leg_id, &started) {
                    Ok(Some(number)) if !open && !number.is_possible() => Some(number),
                    _ => None,
                };
                if let Some(number) = impossible {
                    // Refused, and no later event of the leg can make it ratable: the leg is
                    // closed, so that its interims and its end are ignored instead of waiting
                    // for a start that will never come (an end already waiting is dropped).
                    // The one refusal that changes the state; a redelivery finds it closed.
                    if !closed {
                        state.parked_ends.remove(&event.leg_id);
                        state.closed_legs.insert(event.leg_id.as_str(), (), event.occurred_at);
                    }
                    return Err(Error::ImpossibleNumber { leg: event.leg_id, number: number.to_string() });
                }
                if open || closed {
                    return Err(Error::LegAlreadyStarted(event.leg_id));
                }
                let organizer = catalog.user(tenant.id.as_str(), &event.organizer_id).ok_or_else(|| {
                    Error::UnknownOrganizer { tenant: tenant.id.to_string(), user: event.organizer_id.clone() }
                })?;
                let priced = priced_number(&event.leg_id, &started)?;
                let parked = state.parked_ends.remove(&event.leg_id);
                let mut ctx = Ctx { tenant, state, out, at: event.occurred_at, trail };
                ctx.expire_lots();
                let leg_id = if parked.is_some() { Some(event.leg_id.clone()) } else { None };
                start_leg(catalog, &mut ctx, event, started, priced, &organizer);
                if let (Some(parked), Some(leg_id)) = (parked, leg_id) {
                    if let LegBody::Ended(ended) = parked.body {
                        if let Some(leg) = ctx.state.open_legs.remove(&leg_id) {
                            ctx.at = parked.occurred_at.max(leg.started_at);
                            let (duration, end_before_start) = match duration_of(&leg, &ended) {
                                Some(d) => (d, false),
                                None => (0, true),
                            };
                            finish_leg(&mut ctx, leg_id, leg, duration, end_before_start);
                        }
                    }
                }
                Ok(Applied::Processed)
            }
            LegBody::Interim { elapsed_seconds } => {
                if state.closed_legs.contains(&event.leg_id) {
                    return Ok(Applied::IgnoredAfterClose);
                }
                let Some(mut leg) = state.open_legs.remove(&event.leg_id) else {
                    return Ok(Applied::IgnoredBeforeStart);
                };
                let mut ctx = Ctx { tenant, state, out, at: event.occurred_at.max(leg.started_at), trail };
                ctx.expire_lots();
                if elapsed_seconds > leg.elapsed_seconds {
                    settle(&mut ctx, &event.leg_id, &mut leg, elapsed_seconds);
                    // The other legs were cut off by the debit; this one is out of the map.
                    if ctx.cutoff_reached() && !leg.disconnect_sent && ctx.is_credit_funded(&leg) {
                        leg.disconnect_sent = true;
                        let balance = ctx.state.balance();
                        let currency = ctx.currency();
                        ctx.emit_decision(
                            event.leg_id.clone(),
                            leg.call_id.clone(),
                            leg.conference_id.clone(),
                            Decision::Disconnect { balance, currency },
                        );
                    }
                }
                ctx.state.open_legs.insert(event.leg_id, leg);
                Ok(Applied::Processed)
            }
            LegBody::Ended(ended) => {
                if state.closed_legs.contains(&event.leg_id) {
                    return Ok(Applied::IgnoredAfterClose);
                }
                let Some(leg) = state.open_legs.remove(&event.leg_id) else {
                    if state.parked_ends.contains_key(&event.leg_id) {
                        return Err(Error::LegAlreadyEnded(event.leg_id));
                    }
                    state.parked_ends.insert(event.leg_id.clone(), event);
                    return Ok(Applied::Parked);
                };
                let Some(duration) = duration_of(&leg, &ended) else {
                    // Put it back: on `Err` the state is unchanged.
                    state.open_legs.insert(event.leg_id.clone(), leg);
                    return Err(Error::EndBeforeStart { leg: event.leg_id });
                };
                let mut ctx = Ctx { tenant, state, out, at: event.occurred_at.max(leg.started_at), trail };
                ctx.expire_lots();
                finish_leg(&mut ctx, event.leg_id, leg, duration, false);
                Ok(Applied::Processed)
            }
        }
    }
}

/// The number that prices a leg: the bridge number for dial-in, the destination for dial-out.
/// `None` for VoIP.
fn priced_number(leg_id: &str, started: &LegStarted) -> Result<Option<crate::E164>, Error> {
    let missing = |what: &str| Error::Invalid(format!("leg {leg_id:?}: {what}"));
    match started.kind {
        LegKind::Voip => Ok(None),
        LegKind::DialInToll | LegKind::DialInTollFree => {
            started.bridge_number.map(Some).ok_or_else(|| missing("dial-in leg without a bridge number"))
        }
        LegKind::DialOut | LegKind::CallMeAt => {
            started.remote_number.map(Some).ok_or_else(|| missing("dial-out leg without a remote number"))
        }
    }
}

/// Connected seconds of an ended leg; `None` when it ends before it starts.
fn duration_of(leg: &OpenLeg, ended: &LegEnded) -> Option<u64> {
    let seconds = match ended.duration {
        LegDuration::ConnectedSeconds(s) => u64::from(s),
        LegDuration::EndedAt(end) => leg.started_at.seconds_until_ceil(end)?,
    };
    Some(if ended.cause.never_connected() { 0 } else { seconds })
}

/// Mutable view of one tenant while one input is applied.
struct Ctx<'a> {
    tenant: &'a Tenant,
    state: &'a mut TenantState,
    out: &'a mut Vec<Output>,
    at: Timestamp,
    /// Where ledger movements go, when they are asked for.
    trail: Option<Trail<'a>>,
}

/// The debit trail of one input: its movements and how they are numbered.
struct Trail<'a> {
    movements: &'a mut Vec<LedgerMovement>,
    /// The id of the input that causes them.
    cause: Arc<str>,
    /// Number of the next movement.
    next: u32,
}

impl Ctx<'_> {
    fn currency(&self) -> Currency {
        self.tenant.currency
    }

    fn emit_credit(&mut self, kind: CreditEventKind, amount: Money, detail: String) {
        self.state.credit_sequence += 1;
        let sequence = self.state.credit_sequence;
        self.out.push(Output::Credit(CreditEvent {
            credit_event_id: format!("{}/credit/{sequence}", self.tenant.id),
            tenant_id: self.tenant.id.clone(),
            sequence,
            occurred_at: self.at,
            kind,
            amount,
            currency: self.tenant.currency,
            balance_after: self.state.balance(),
            detail,
        }));
    }

    /// Records a movement of the ledger that already happened (so `balance_after` is the
    /// balance now), when the trail is asked for.
    fn moved(&mut self, kind: MovementKind, amount: Money, leg_id: &str, lot_id: &str) {
        let balance_after = self.state.balance();
        self.moved_to(kind, amount, balance_after, leg_id, lot_id);
    }

    fn moved_to(&mut self, kind: MovementKind, amount: Money, balance_after: Money, leg_id: &str, lot_id: &str) {
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

    fn emit_decision(&mut self, leg_id: String, call_id: String, conference_id: String, decision: Decision) {
        self.out.push(Output::Decision(LegDecision {
            decision_id: joined(&[self.tenant.id.as_str(), "/", &leg_id, "/", decision.kind()]),
            tenant_id: self.tenant.id.clone(),
            leg_id,
            call_id,
            conference_id,
            decided_at: self.at,
            decision,
        }));
    }

    /// Forfeits lots whose 12 months are over, as of the event being applied.
    fn expire_lots(&mut self) {
        let expired = self.state.ledger.expire(self.at);
        if expired.is_empty() {
            return;
        }
        // The ledger dropped them all at once; the trail has one movement per lot, each with
        // the balance after it.
        let mut balance = self.state.balance() + expired.iter().map(|l| l.remaining).sum::<Money>();
        for lot in expired {
            balance -= lot.remaining;
            self.moved_to(MovementKind::Forfeit, -lot.remaining, balance, "", &lot.lot_id);
            self.state.totals.forfeited += lot.remaining;
            self.emit_credit(CreditEventKind::LotExpired, lot.remaining, lot.lot_id);
        }
        self.after_balance_fell();
    }

    /// Debits (or, negative, refunds) usage of `leg_id` and runs the consequences.
    fn debit_usage(&mut self, leg_id: &str, amount: Money) {
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
    fn after_balance_fell(&mut self) {
        let balance = self.state.balance();
        let tenant = self.tenant;
        for threshold in &tenant.low_balance_thresholds {
            if balance < *threshold && !self.state.low_balance_fired.contains(threshold) {
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
    fn cutoff_reached(&self) -> bool {
        self.tenant.cutoff == CutoffPolicy::Disconnect && self.state.balance() < -self.tenant.overdraft_limit
    }

    /// Whether a leg is being paid with credits now (pooled legs once the pool is empty).
    fn is_credit_funded(&self, leg: &OpenLeg) -> bool {
        leg.capability == Capability::Ppm
            || leg.capability == Capability::Pool && !leg.pooled_in_full && self.pool_minutes_left() == 0
    }

    /// Re-arms thresholds and the recharge trigger, and reports a restored balance.
    fn after_balance_rose(&mut self) {
        let balance = self.state.balance();
        self.state.low_balance_fired.retain(|t| balance < *t);
        if let Some(recharge) = self.tenant.auto_recharge {
            if balance >= recharge.trigger {
                self.state.recharge_pending = false;
            }
        }
        if self.state.depleted && balance.is_positive() {
            self.state.depleted = false;
            self.emit_credit(CreditEventKind::Restored, Money::ZERO, String::new());
        }
    }

    fn disconnect_credit_funded_legs(&mut self, balance: Money) {
        let pool_empty = self.pool_minutes_left() == 0;
        let targets: Vec<(String, String, String)> = self
            .state
            .open_legs
            .iter_mut()
            .filter(|(_, leg)| {
                !leg.disconnect_sent
                    && (leg.capability == Capability::Ppm
                        || leg.capability == Capability::Pool && !leg.pooled_in_full && pool_empty)
            })
            .map(|(id, leg)| {
                leg.disconnect_sent = true;
                (id.clone(), leg.call_id.clone(), leg.conference_id.clone())
            })
            .collect();
        for (leg_id, call_id, conference_id) in targets {
            let currency = self.currency();
            self.emit_decision(leg_id, call_id, conference_id, Decision::Disconnect { balance, currency });
        }
    }

    /// Pooled minutes left this month (as of the event being applied).
    fn pool_minutes_left(&self) -> u32 {
        let month = self.at.year_month();
        let used = if self.state.pool.month == month { self.state.pool.used_minutes } else { 0 };
        self.tenant.pool_minutes().saturating_sub(used)
    }

    /// Takes up to `minutes` from this month's pool; returns how many were taken. The 80 % and
    /// 100 % events are emitted by [`Ctx::pool_alerts`], after the debit that goes with the
    /// minutes, so their balance is the balance after it.
    fn take_pool_minutes(&mut self, minutes: u32, past_the_end: bool) -> u32 {
        let month = self.at.year_month();
        if self.state.pool.month != month {
            self.state.pool = crate::state::PoolUsage { month, ..Default::default() };
        }
        let total = self.tenant.pool_minutes();
        let take = if past_the_end { minutes } else { minutes.min(total.saturating_sub(self.state.pool.used_minutes)) };
        self.state.pool.used_minutes += take;
        take
    }

    /// Emits the pool's 80 % and 100 % events once each per month.
    fn pool_alerts(&mut self) {
        let total = self.tenant.pool_minutes();
        let used = u64::from(self.state.pool.used_minutes);
        if total == 0 || self.state.pool.month != self.at.year_month() {
            return;
        }
        if used * 100 >= u64::from(total) * 80 && !self.state.pool.alerted_80 {
            self.state.pool.alerted_80 = true;
            self.emit_credit(CreditEventKind::Pool80Percent, Money::ZERO, format!("{used}/{total} minutes"));
        }
        if used >= u64::from(total) && !self.state.pool.alerted_100 {
            self.state.pool.alerted_100 = true;
            self.emit_credit(CreditEventKind::Pool100Percent, Money::ZERO, format!("{used}/{total} minutes"));
        }
    }
}

/// How a started leg is funded, decided before credit is checked.
struct Funding {
    capability: Capability,
    price: Option<crate::Price>,
    rate_card_id: String,
    rate_card_version: String,
    rate_prefix: Option<crate::Prefix>,
    flags: UsageFlags,
}

fn start_leg<C: Catalog + ?Sized>(
    catalog: &C,
    ctx: &mut Ctx<'_>,
    event: CallLegEvent,
    started: LegStarted,
    priced: Option<crate::E164>,
    organizer: &User,
) {
    let tenant = ctx.tenant;
    // The event is consumed: its ids move into the leg and the decision instead of being copied.
    let CallLegEvent { leg_id, call_id, conference_id, organizer_id, .. } = event;
    let Some(number) = priced else {
        // VoIP: never billed, never blocked.
        ctx.emit_decision(
            leg_id.clone(),
            call_id,
            conference_id,
            Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: None },
        );
        ctx.state.closed_legs.insert(leg_id, (), ctx.at);
        return;
    };
    let (call_type, number_type) = match started.kind {
        LegKind::DialInToll => (CallType::ConfIn, NumberType::Toll),
        LegKind::DialInTollFree => (CallType::ConfIn, NumberType::TollFree),
        _ => (CallType::ConfOut, NumberType::Toll),
    };
    let mut funding = resolve_funding(catalog, tenant, organizer, started.kind, &number, ctx.at);
    // The capability says what pays: with the month's pool used up, credits pay for all of a
    // pool-eligible leg, so it is a pay-per-minute leg from its allow decision on.
    if funding.capability == Capability::Pool && ctx.pool_minutes_left() == 0 {
        funding.capability = Capability::Ppm;
    }
    let mut leg = OpenLeg {
        call_id,
        conference_id,
        organizer_id,
        organizer_location: organizer.usage_location,
        kind: started.kind,
        call_type,
        number_type,
        priced_number: number,
        started_at: ctx.at,
        capability: funding.capability,
        price: funding.price,
        rate_card_id: funding.rate_card_id,
        rate_card_version: funding.rate_card_version,
        rate_prefix: funding.rate_prefix,
        flags: funding.flags,
        elapsed_seconds: 0,
        pool_minutes: 0,
        pooled_in_full: false,
        minutes_accounted: 0,
        debited: Money::ZERO,
        disconnect_sent: false,
    };

    let policy = DialoutPolicy::effective(organizer.dialout_policy, tenant.global_dialout_policy);
    let block = if call_type == CallType::ConfOut
        && !policy.conferencing().allows(organizer.usage_location, number.country())
    {
        Some(BlockReason::Policy)
    } else if started.kind == LegKind::DialInTollFree && !organizer.allow_toll_free_dial_in {
        Some(BlockReason::TollFreeDisabled)
    } else if leg.capability == Capability::Unpriced && tenant.unpriced == UnpricedHandling::Reject {
        Some(BlockReason::NoRate)
    } else {
        credit_block(ctx, &leg)
    };
    if let Some(reason) = block {
        let (call_id, conference_id) = (leg.call_id.clone(), leg.conference_id.clone());
        ctx.emit_decision(leg_id.clone(), call_id, conference_id, Decision::Block(reason));
        ctx.state.closed_legs.insert(leg_id.as_str(), (), ctx.at);
        leg.flags.unpriced = leg.capability == Capability::Unpriced;
        emit_usage(ctx, &leg_id, leg, 0, ctx.at, UsageOutcome::Blocked(reason), 0, 0, Money::ZERO);
        return;
    }
    if leg.capability == Capability::Pool && tenant.pool_split == PoolSplit::FinishInPool {
        leg.pooled_in_full = ctx.pool_minutes_left() > 0;
    }
    let max_affordable_seconds = max_affordable(ctx, &leg);
    let (call_id, conference_id) = (leg.call_id.clone(), leg.conference_id.clone());
    ctx.emit_decision(
        leg_id.clone(),
        call_id,
        conference_id,
        Decision::Allow { max_affordable_seconds, capability: Some(leg.capability) },
    );
    ctx.state.open_legs.insert(leg_id, leg);
}

fn resolve_funding<C: Catalog + ?Sized>(
    catalog: &C,
    tenant: &Tenant,
    organizer: &User,
    kind: LegKind,
    number: &crate::E164,
    at: Timestamp,
) -> Funding {
    let mut funding = Funding {
        capability: Capability::Unpriced,
        price: None,
        rate_card_id: tenant.rate_card_id.clone(),
        rate_card_version: String::new(),
        rate_prefix: None,
        flags: UsageFlags::default(),
    };
    let mut premium = false;
    if let Some(card) = catalog.rate_card(&tenant.rate_card_id) {
        if card.currency != tenant.currency {
            funding.flags.currency_mismatch = true;
        } else if let Some(version) = card.version_at(at) {
            funding.rate_card_version = version.version.clone();
            let hit = match kind {
                LegKind::DialInToll => version.dial_in_toll.lookup(number).map(|(p, price)| (*p, *price, false)),
                LegKind::DialInTollFree => {
                    version.dial_in_toll_free.lookup(number).map(|(p, price)| (*p, *price, false))
                }
                _ => version.dial_out.lookup(number).map(|(p, row)| (*p, row.price, row.premium)),
            };
            if let Some((prefix, price, is_premium)) = hit {
                funding.rate_prefix = Some(prefix);
                funding.price = Some(price);
                premium = is_premium;
            }
        }
    }
    let subscription = organizer.licence == LicenceModel::Subscription;
    funding.capability = if kind == LegKind::DialInToll && subscription {
        Capability::Subscription
    } else if funding.price.is_none() {
        funding.flags.unpriced = true;
        Capability::Unpriced
    } else if matches!(kind, LegKind::DialOut | LegKind::CallMeAt)
        && subscription
        && number.country().is_zone_a()
        && !premium
    {
        Capability::Pool
    } else {
        Capability::Ppm
    };
    funding
}

/// Why a credit-funded leg may not start, if it may not.
fn credit_block(ctx: &Ctx<'_>, leg: &OpenLeg) -> Option<BlockReason> {
    let needs_credit = match leg.capability {
        Capability::Ppm => true,
        Capability::Pool => ctx.pool_minutes_left() == 0,
        Capability::Subscription | Capability::Unpriced => false,
    };
    if !needs_credit {
        return None;
    }
    let tenant = ctx.tenant;
    let balance = ctx.state.balance();
    if !tenant.credits_enabled || !balance.is_positive() {
        return Some(BlockReason::NoCredit);
    }
    if tenant.cutoff == CutoffPolicy::Disconnect {
        let price = leg.price?;
        let first = price.charge(&tenant.currency, price.increments.first.get());
        if first > balance + tenant.overdraft_limit {
            return Some(BlockReason::NoCredit);
        }
    }
    None
}

/// The maximum affordable duration reported in the allow decision.
fn max_affordable(ctx: &Ctx<'_>, leg: &OpenLeg) -> u32 {
    let tenant = ctx.tenant;
    let credit_part = || match leg.price {
        Some(price) if tenant.credits_enabled => price.max_affordable_seconds(
            &tenant.currency,
            ctx.state.balance() + tenant.overdraft_limit,
            MAX_LEG_SECONDS,
        ),
        _ => 0,
    };
    match leg.capability {
        Capability::Subscription | Capability::Unpriced => MAX_LEG_SECONDS,
        Capability::Ppm => credit_part(),
        Capability::Pool if leg.pooled_in_full => MAX_LEG_SECONDS,
        Capability::Pool => {
            ctx.pool_minutes_left().saturating_mul(60).saturating_add(credit_part()).min(MAX_LEG_SECONDS)
        }
    }
}

/// Brings a leg's debits up to the charge for `elapsed` connected seconds: each call debits
/// `charge(elapsed) - already debited`, so the debits add up to the final charge exactly.
fn settle(ctx: &mut Ctx<'_>, leg_id: &str, leg: &mut OpenLeg, elapsed: u32) -> (u32, u32) {
    let seconds = if elapsed > MAX_LEG_SECONDS {
        leg.flags.over_max_duration = true;
        MAX_LEG_SECONDS
    } else {
        elapsed
    };
    if seconds < leg.elapsed_seconds {
        leg.flags.interim_exceeded_final = true;
    }
    leg.elapsed_seconds = seconds;
    let increments = leg.price.map(|p| p.increments).unwrap_or_default();
    let billable = increments.billable_seconds(seconds);
    let pool_seconds = if leg.capability == Capability::Pool {
        let minutes_needed = billable.div_ceil(60);
        if minutes_needed > leg.minutes_accounted {
            leg.pool_minutes += ctx.take_pool_minutes(minutes_needed - leg.minutes_accounted, leg.pooled_in_full);
            leg.minutes_accounted = minutes_needed;
        }
        billable.min(leg.pool_minutes.saturating_mul(60))
    } else {
        0
    };
    let charge = match (leg.capability, leg.price) {
        (Capability::Ppm | Capability::Pool, Some(price)) => price.charge(&ctx.currency(), billable - pool_seconds),
        _ => Money::ZERO,
    };
    let delta = charge - leg.debited;
    leg.debited = charge;
    ctx.debit_usage(leg_id, delta);
    if leg.capability == Capability::Pool {
        ctx.pool_alerts();
    }
    (billable, pool_seconds)
}

fn finish_leg(ctx: &mut Ctx<'_>, leg_id: String, mut leg: OpenLeg, duration: u64, end_before_start: bool) {
    let elapsed = u32::try_from(duration).unwrap_or(u32::MAX);
    let (billable, pool_seconds) = settle(ctx, &leg_id, &mut leg, elapsed);
    let duration_seconds = leg.elapsed_seconds;
    let ended_at = leg.started_at.plus_seconds(duration_seconds);
    leg.flags.end_before_start |= end_before_start;
    // A leg that started with pool minutes left but found them taken by other legs before it
    // drew one was paid by credits alone: its usage record says so.
    if leg.capability == Capability::Pool && pool_seconds == 0 && billable > 0 {
        leg.capability = Capability::Ppm;
    }
    let charge = leg.debited;
    emit_usage(ctx, &leg_id, leg, duration_seconds, ended_at, UsageOutcome::Rated, billable, pool_seconds, charge);
    ctx.state.closed_legs.insert(leg_id, (), ctx.at);
}

#[allow(clippy::too_many_arguments)]
fn emit_usage(
    ctx: &mut Ctx<'_>,
    leg_id: &str,
    leg: OpenLeg,
    duration_seconds: u32,
    ended_at: Timestamp,
    outcome: UsageOutcome,
    billable_seconds: u32,
    pool_seconds: u32,
    charge: Money,
) {
    let tenant = ctx.tenant;
    let connection_fee = match leg.price {
        Some(p) if charge.is_positive() => p.connection_fee,
        _ => Money::ZERO,
    };
    ctx.out.push(Output::Usage(Box::new(RatedUsage {
        usage_id: joined(&[tenant.id.as_str(), "/", leg_id]),
        call_id: leg.call_id,
        conference_id: leg.conference_id,
        tenant_id: tenant.id.clone(),
        organizer_id: leg.organizer_id,
        organizer_usage_location: leg.organizer_location,
        call_type: leg.call_type,
        number_type: leg.number_type,
        international: leg.priced_number.country() != leg.organizer_location,
        destination_country: leg.priced_number.country(),
        destination_number: leg.priced_number,
        started_at: leg.started_at,
        ended_at,
        duration_seconds,
        billable_seconds,
        pool_seconds,
        connection_fee,
        charge,
        currency: tenant.currency,
        capability: leg.capability,
        rate_card_id: leg.rate_card_id,
        rate_card_version: leg.rate_card_version,
        rate_prefix: leg.rate_prefix,
        price_per_minute: leg.price.map(|p| p.per_minute).unwrap_or_default(),
        outcome,
        balance_after: ctx.state.balance(),
        flags: leg.flags,
    })));
}

fn credit(
    tenant: &Tenant,
    state: &mut TenantState,
    command: CreditCommand,
    out: &mut Vec<Output>,
    trail: Option<Trail<'_>>,
) -> Result<(), Error> {
    let check_currency = |currency: crate::Currency| {
        if currency == tenant.currency {
            Ok(())
        } else {
            Err(Error::CurrencyMismatch { expected: tenant.currency.to_string(), got: currency.to_string() })
        }
    };
    match &command.body {
        CreditBody::Fund(lot) | CreditBody::RechargeSucceeded(lot) => {
            // Refused rather than kept: the money would sit in a balance that blocks every
            // credit-funded leg (tollgate decision). Adjustments still apply.
            if !tenant.credits_enabled {
                return Err(Error::CreditsDisabled {
                    tenant: tenant.id.to_string(),
                    command: command.command_id.clone(),
                });
            }
            check_currency(lot.currency)?;
            if !lot.amount.is_positive() || !tenant.currency.is_whole_minor_units(lot.amount) {
                return Err(Error::Invalid(format!(
                    "command {:?}: funded amount {} must be > 0 in whole {} minor units",
                    command.command_id, lot.amount, tenant.currency
                )));
            }
        }
        CreditBody::Adjust { amount, currency, .. } => {
            check_currency(*currency)?;
            if *amount == Money::ZERO || !tenant.currency.is_whole_minor_units(*amount) {
                return Err(Error::Invalid(format!(
                    "command {:?}: adjustment {amount} must be non-zero in whole {} minor units",
                    command.command_id, tenant.currency
                )));
            }
        }
        CreditBody::RechargeFailed { .. } => {}
    }
    let mut ctx = Ctx { tenant, state, out, at: command.occurred_at, trail };
    ctx.expire_lots();
    match command.body {
        CreditBody::Fund(lot) => fund(&mut ctx, lot, CreditEventKind::Funded),
        CreditBody::RechargeSucceeded(lot) => fund(&mut ctx, lot, CreditEventKind::RechargeSucceeded),
        CreditBody::RechargeFailed { reason } => {
            // Re-armed: the next debit below the trigger asks again.
            ctx.state.recharge_pending = false;
            let amount = tenant.auto_recharge.map(|r| r.amount).unwrap_or_default();
            ctx.emit_credit(CreditEventKind::RechargeFailed, amount, reason);
        }
        CreditBody::Adjust { amount, reason, .. } => {
            ctx.state.totals.adjusted += amount;
            if amount.is_positive() {
                ctx.state.ledger.credit(command.command_id, amount, ctx.at);
                ctx.moved(MovementKind::Adjustment, amount, "", "");
                ctx.emit_credit(CreditEventKind::Adjusted, amount, reason);
                ctx.after_balance_rose();
            } else {
                ctx.state.ledger.debit(-amount, ctx.at);
                ctx.moved(MovementKind::Adjustment, amount, "", "");
                ctx.emit_credit(CreditEventKind::Adjusted, amount, reason);
                ctx.after_balance_fell();
            }
        }
    }
    Ok(())
}

fn fund(ctx: &mut Ctx<'_>, lot: LotFunding, kind: CreditEventKind) {
    ctx.state.totals.funded += lot.amount;
    ctx.state.ledger.credit(lot.lot_id.clone(), lot.amount, lot.purchased_at);
    ctx.moved(MovementKind::Funding, lot.amount, "", &lot.lot_id);
    ctx.emit_credit(kind, lot.amount, lot.lot_id);
    ctx.after_balance_rose();
    // A lot bought more than 12 months before the command is already expired.
    ctx.expire_lots();
}

/// Concatenates `parts` with one allocation (the ids of outputs are built on every event).
fn joined(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        s.push_str(part);
    }
    s
}
