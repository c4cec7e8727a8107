//! A leg in progress and its end: debits brought up to the charge at each interim, the
//! final settlement and the rated usage record.

use crate::event::{CallLegEvent, LegDuration, LegEnded};
use crate::money::Money;
use crate::output::{BlockReason, Capability, Decision, Output, RatedUsage, UsageOutcome};
use crate::state::OpenLeg;
use crate::{Error, Id, Timestamp};

use super::context::Ctx;
use super::{Applied, MAX_LEG_SECONDS};

/// An `interim`: the leg's debits brought up to its elapsed seconds, and a disconnect decision
/// when the debit reached the cutoff. Ignored before the start and after the end.
pub(super) fn interim(mut ctx: Ctx<'_>, event: CallLegEvent, elapsed_seconds: u32) -> Applied {
    // A leg is open or closed, never both (it closes as it leaves the open legs), so the
    // closed legs are only asked about a leg that is not open.
    let Some(mut leg) = ctx.state.open_legs.remove(&event.leg_id) else {
        return if ctx.state.closed_legs.contains(&event.leg_id) {
            Applied::IgnoredAfterClose
        } else {
            Applied::IgnoredBeforeStart
        };
    };
    debug_assert!(!ctx.state.closed_legs.contains(&event.leg_id), "leg {} is open and closed", event.leg_id);
    ctx.at = ctx.at.max(leg.started_at);
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
    Applied::Processed
}

/// An `ended`: the leg settled and its usage written; parked when its start has not come yet.
pub(super) fn ended(mut ctx: Ctx<'_>, event: CallLegEvent, ended: LegEnded) -> Result<Applied, Error> {
    let state = &mut *ctx.state;
    // Open or closed, never both (see `interim`).
    let Some(leg) = state.open_legs.remove(&event.leg_id) else {
        if state.closed_legs.contains(&event.leg_id) {
            return Ok(Applied::IgnoredAfterClose);
        }
        if state.parked_ends.contains_key(&event.leg_id) {
            return Err(Error::LegAlreadyEnded(event.leg_id.into()));
        }
        state.parked_ends.insert(event.leg_id.clone(), event);
        return Ok(Applied::Parked);
    };
    debug_assert!(!state.closed_legs.contains(&event.leg_id), "leg {} is open and closed", event.leg_id);
    let Some(duration) = duration_of(&leg, &ended, event.occurred_at) else {
        // Put it back: on `Err` the state is unchanged.
        state.open_legs.insert(event.leg_id.clone(), leg);
        return Err(Error::EndBeforeStart { leg: event.leg_id.into() });
    };
    let at = ctx.at;
    finish_leg(&mut ctx, at, event.leg_id, leg, duration);
    Ok(Applied::Processed)
}

/// Connected seconds of a leg whose `ended` happened at `at`; `None` when it ends before it
/// starts: an end instant before the start, or an `ended` stamped before it (whatever
/// connected seconds it reports).
pub(super) fn duration_of(leg: &OpenLeg, ended: &LegEnded, at: Timestamp) -> Option<u64> {
    if at < leg.started_at {
        return None;
    }
    let seconds = match ended.duration {
        LegDuration::ConnectedSeconds(s) => u64::from(s),
        LegDuration::EndedAt(end) => leg.started_at.seconds_until_ceil(end)?,
    };
    Some(if ended.cause.never_connected() { 0 } else { seconds })
}

/// Brings a leg's debits up to the charge for `elapsed` connected seconds: each call debits
/// `charge(elapsed) - already debited`, so the debits add up to the final charge exactly.
pub(super) fn settle(ctx: &mut Ctx<'_>, leg_id: &str, leg: &mut OpenLeg, elapsed: u32) -> (u32, u32) {
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
    // A leg's pool minutes come from the month it started in, as its price and its capability
    // do: whether an interim drew some of them before midnight at the end of a month, or the
    // end drew them all after it, they come from the same pool and cost the same.
    let month = (leg.capability == Capability::Pool).then(|| leg.started_at.year_month());
    let pool_seconds = if let Some(month) = month {
        let minutes_needed = billable.div_ceil(60);
        if minutes_needed > leg.minutes_accounted {
            let taken = ctx.take_pool_minutes(month, minutes_needed - leg.minutes_accounted, leg.pooled_in_full);
            leg.drew_from_pool(month, taken);
            leg.minutes_accounted = minutes_needed;
        } else if minutes_needed < leg.minutes_accounted {
            // A final duration below an interim: the credits are refunded below, and the pool
            // gets back the minutes the leg no longer needs, to the months they came from.
            ctx.give_back_pool_minutes(leg, leg.pool_minutes.saturating_sub(minutes_needed));
            leg.minutes_accounted = minutes_needed;
        }
        billable.min(leg.pool_minutes.saturating_mul(60))
    } else {
        0
    };
    let charge = match (leg.capability, leg.price) {
        (Capability::Ppm | Capability::Pool, Some(price)) => price.charge(&ctx.currency(), billable - pool_seconds),
        // Credits pay nothing for these (and a leg without a price is unpriced).
        (Capability::Ppm | Capability::Pool, None) | (Capability::Subscription | Capability::Unpriced, _) => {
            Money::ZERO
        }
    };
    let delta = charge - leg.debited;
    leg.debited = charge;
    ctx.debit_usage(leg_id, delta);
    if let Some(month) = month {
        ctx.pool_alerts(month);
    }
    (billable, pool_seconds)
}

/// Ends a leg as its `ended` at `at` says: at that time (not before the leg's start), with
/// the lots that expired by then forfeited first, whether the end came in order or waited
/// for the start.
pub(super) fn finish_leg(ctx: &mut Ctx<'_>, at: Timestamp, leg_id: Id, mut leg: OpenLeg, duration: u64) {
    ctx.at = at.max(leg.started_at);
    ctx.expire_lots();
    let elapsed = u32::try_from(duration).unwrap_or(u32::MAX);
    let (billable, pool_seconds) = settle(ctx, &leg_id, &mut leg, elapsed);
    let duration_seconds = leg.elapsed_seconds;
    let ended_at = leg.started_at.plus_seconds(duration_seconds);
    // A leg that started with pool minutes left but found them taken by other legs before it
    // drew one was paid by credits alone: its usage record says so.
    if leg.capability == Capability::Pool && pool_seconds == 0 && billable > 0 {
        leg.capability = Capability::Ppm;
    }
    let charge = leg.debited;
    let usage = Usage {
        duration_seconds,
        ended_at,
        outcome: UsageOutcome::Rated,
        billable_seconds: billable,
        pool_seconds,
        charge,
    };
    emit_usage(ctx, &leg_id, leg, usage);
    ctx.state.remember_closed(leg_id, ctx.at);
}

/// How a leg ended up, for its rated usage record.
pub(super) struct Usage {
    /// Connected seconds (capped at [`MAX_LEG_SECONDS`]).
    pub(super) duration_seconds: u32,
    /// Start plus the connected seconds (the start, for a blocked leg).
    pub(super) ended_at: Timestamp,
    /// Rated, or blocked and why.
    pub(super) outcome: UsageOutcome,
    /// Seconds billed after the increments.
    pub(super) billable_seconds: u32,
    /// Of those, the seconds the pool paid.
    pub(super) pool_seconds: u32,
    /// What the leg's debits add up to.
    pub(super) charge: Money,
}

impl Usage {
    /// A leg blocked at its start: nothing connected, nothing charged.
    pub(super) const fn blocked(at: Timestamp, reason: BlockReason) -> Usage {
        Usage {
            duration_seconds: 0,
            ended_at: at,
            outcome: UsageOutcome::Blocked(reason),
            billable_seconds: 0,
            pool_seconds: 0,
            charge: Money::ZERO,
        }
    }
}

/// Writes the leg's rated usage record.
pub(super) fn emit_usage(ctx: &mut Ctx<'_>, leg_id: &Id, leg: OpenLeg, usage: Usage) {
    let Usage { duration_seconds, ended_at, outcome, billable_seconds, pool_seconds, charge } = usage;
    let tenant = ctx.tenant;
    let connection_fee = match leg.price {
        Some(p) if charge.is_positive() => p.connection_fee,
        _ => Money::ZERO,
    };
    ctx.out.push(Output::Usage(RatedUsage {
        leg_id: leg_id.clone(),
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
    }));
}
