//! A leg's start: what prices it, what funds it (capability, rate), whether it may start
//! (policy, toll-free, unpriced, credit) and for how long.

use crate::event::{CallLegEvent, LegBody, LegKind, LegStarted};
use crate::money::Money;
use crate::output::{BlockReason, CallType, Capability, Decision, NumberType, UsageFlags};
use crate::policy::DialoutPolicy;
use crate::rates::{Increments, Price};
use crate::reference::{Catalog, CutoffPolicy, LicenceModel, PoolSplit, Tenant, UnpricedHandling, User};
use crate::state::OpenLeg;
use crate::{Error, Id, Timestamp};

use super::context::Ctx;
use super::leg_end::{Usage, duration_of, emit_usage, finish_leg};
use super::{Applied, MAX_LEG_SECONDS};

/// A `started`: refused when its number is impossible (which closes the leg) or it is already
/// open or closed; otherwise priced, funded, allowed or blocked. An end that arrived before it
/// (parked) finishes it at once.
pub(super) fn started<C: Catalog + ?Sized>(
    catalog: &C,
    mut ctx: Ctx<'_>,
    event: CallLegEvent,
    started: LegStarted,
) -> Result<Applied, Error> {
    let (tenant, state) = (ctx.tenant, &mut *ctx.state);
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
            state.remember_closed(event.leg_id.clone(), event.occurred_at);
        }
        return Err(Error::ImpossibleNumber { leg: event.leg_id.into(), number: number.to_string() });
    }
    if open || closed {
        return Err(Error::LegAlreadyStarted(event.leg_id.into()));
    }
    // A VoIP join is never billed nor blocked, so nothing of its organizer is asked: it is
    // allowed whether or not the reference data knows the organizer.
    let organizer = match started.kind {
        LegKind::Voip => None,
        _ => Some(catalog.user(tenant.id.as_str(), &event.organizer_id).ok_or_else(|| Error::UnknownOrganizer {
            tenant: tenant.id.to_string(),
            user: event.organizer_id.to_string(),
        })?),
    };
    let priced = priced_number(&event.leg_id, &started)?;
    let parked = state.parked_ends.remove(&event.leg_id);
    ctx.expire_lots();
    let leg_id = if parked.is_some() { Some(event.leg_id.clone()) } else { None };
    start_leg(catalog, &mut ctx, event, started, priced, organizer.as_deref());
    if let (Some(parked), Some(leg_id)) = (parked, leg_id) {
        if let LegBody::Ended(ended) = parked.body {
            if let Some(leg) = ctx.state.open_legs.remove(&leg_id) {
                match duration_of(&leg, &ended, parked.occurred_at) {
                    // The end, rated as if it had come now, at its own time.
                    Some(duration) => finish_leg(&mut ctx, parked.occurred_at, leg_id, leg, duration),
                    // An end before its start is bad input, refused in order: the leg stays
                    // open for a valid end, and the bad one is dropped (counted with the
                    // parked ends dropped unrated).
                    None => {
                        ctx.state.open_legs.insert(leg_id, leg);
                        ctx.state.totals.orphan_ends_dropped += 1;
                    }
                }
            }
        }
    }
    Ok(Applied::Processed)
}

/// The number that prices a leg: the bridge number for dial-in, the destination for dial-out.
/// `None` for VoIP.
pub(super) fn priced_number(leg_id: &str, started: &LegStarted) -> Result<Option<crate::E164>, Error> {
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

/// How a started leg is funded, decided before credit is checked.
pub(super) struct Funding {
    capability: Capability,
    /// What pays for the leg by its kind, its organizer and its destination, priced or not:
    /// the capability it has, or for an unpriced leg the one it would have with a price (it is
    /// free, but blocked at zero like every leg credits would pay for).
    paid_as: Capability,
    price: Option<crate::Price>,
    rate_card_id: Id,
    rate_card_version: Id,
    rate_prefix: Option<crate::Prefix>,
    flags: UsageFlags,
}

pub(super) fn start_leg<C: Catalog + ?Sized>(
    catalog: &C,
    ctx: &mut Ctx<'_>,
    event: CallLegEvent,
    started: LegStarted,
    priced: Option<crate::E164>,
    organizer: Option<&User>,
) {
    let tenant = ctx.tenant;
    // The event is consumed: its ids move into the leg and the decision instead of being copied.
    let CallLegEvent { leg_id, call_id, conference_id, organizer_id, .. } = event;
    // Only VoIP has no priced number, and only VoIP is started without its organizer.
    let (Some(number), Some(organizer)) = (priced, organizer) else {
        // VoIP: never billed, never blocked.
        ctx.emit_decision(
            leg_id.clone(),
            call_id,
            conference_id,
            Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: None },
        );
        ctx.state.remember_closed(leg_id, ctx.at);
        return;
    };
    let (call_type, number_type) = match started.kind {
        LegKind::DialInToll => (CallType::ConfIn, NumberType::Toll),
        LegKind::DialInTollFree => (CallType::ConfIn, NumberType::TollFree),
        LegKind::DialOut | LegKind::CallMeAt => (CallType::ConfOut, NumberType::Toll),
        // VoIP has no priced number and was allowed above; were it ever priced, it would be
        // an outgoing leg without a toll-free bridge.
        LegKind::Voip => (CallType::ConfOut, NumberType::Toll),
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
        pool_draws: Vec::new(),
        pooled_in_full: false,
        minutes_accounted: 0,
        debited: Money::ZERO,
        disconnect_sent: false,
        unpriced_paid_as: (funding.capability == Capability::Unpriced).then_some(funding.paid_as),
    };

    let policy = DialoutPolicy::effective(organizer.dialout_policy, tenant.global_dialout_policy);
    let block = if call_type == CallType::ConfOut
        && !policy.conferencing().allows(organizer.usage_location, number.country())
    {
        Some(BlockReason::Policy)
    } else if number_type == NumberType::TollFree && !organizer.allow_toll_free_dial_in {
        Some(BlockReason::TollFreeDisabled)
    } else if leg.capability == Capability::Unpriced && tenant.unpriced == UnpricedHandling::Reject {
        Some(BlockReason::NoRate)
    } else {
        credit_block(ctx, &leg, funding.paid_as)
    };
    if let Some(reason) = block {
        let (call_id, conference_id) = (leg.call_id.clone(), leg.conference_id.clone());
        ctx.emit_decision(leg_id.clone(), call_id, conference_id, Decision::Block(reason));
        ctx.state.remember_closed(leg_id.clone(), ctx.at);
        leg.flags.unpriced = leg.capability == Capability::Unpriced;
        let at = ctx.at;
        emit_usage(ctx, &leg_id, leg, Usage::blocked(at, reason));
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

pub(super) fn resolve_funding<C: Catalog + ?Sized>(
    catalog: &C,
    tenant: &Tenant,
    organizer: &User,
    kind: LegKind,
    number: &crate::E164,
    at: Timestamp,
) -> Funding {
    let mut funding = Funding {
        capability: Capability::Unpriced,
        paid_as: Capability::Unpriced,
        price: None,
        rate_card_id: tenant.rate_card_id.clone(),
        rate_card_version: Id::default(),
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
                LegKind::DialOut | LegKind::CallMeAt => {
                    version.dial_out.lookup(number).map(|(p, row)| (*p, row.price, row.premium))
                }
                // No rate table prices VoIP (it never reaches here: it has no priced number).
                LegKind::Voip => None,
            };
            if let Some((prefix, price, is_premium)) = hit {
                funding.rate_prefix = Some(prefix);
                funding.price = Some(price);
                premium = is_premium;
            }
        }
    }
    let subscription = organizer.licence == LicenceModel::Subscription;
    // Which legs a subscription covers: its toll dial-in in full; its dial-out to Zone A from
    // the monthly pool.
    let (subscription_covers, pool_eligible) = match kind {
        LegKind::DialInToll => (true, false),
        LegKind::DialOut | LegKind::CallMeAt => (false, true),
        LegKind::DialInTollFree | LegKind::Voip => (false, false),
    };
    funding.paid_as = if subscription_covers && subscription {
        Capability::Subscription
    } else if pool_eligible && subscription && number.country().is_zone_a() && !premium {
        Capability::Pool
    } else {
        Capability::Ppm
    };
    funding.capability = if funding.paid_as != Capability::Subscription && funding.price.is_none() {
        funding.flags.unpriced = true;
        Capability::Unpriced
    } else {
        funding.paid_as
    };
    funding
}

/// Why a credit-funded leg may not start, if it may not. `paid_as` is what pays for the leg,
/// or would if it had a price ([`Funding::paid_as`]): free as it is, a pay-per-minute
/// organizer's unpriced leg is still a leg that only a positive balance lets start.
pub(super) fn credit_block(ctx: &Ctx<'_>, leg: &OpenLeg, paid_as: Capability) -> Option<BlockReason> {
    let needs_credit = match paid_as {
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
pub(super) fn max_affordable(ctx: &Ctx<'_>, leg: &OpenLeg) -> u32 {
    let tenant = ctx.tenant;
    // The longest duration of `price`'s lattice whose charge credits can pay.
    let credit_part = |price: Price| match tenant.credits_enabled {
        true => price.max_affordable_seconds(
            &tenant.currency,
            ctx.state.balance() + tenant.overdraft_limit,
            MAX_LEG_SECONDS,
        ),
        false => 0,
    };
    match leg.capability {
        Capability::Subscription | Capability::Unpriced => MAX_LEG_SECONDS,
        Capability::Ppm => leg.price.map_or(0, credit_part),
        Capability::Pool if leg.pooled_in_full => MAX_LEG_SECONDS,
        Capability::Pool => {
            // The pool pays the first billable seconds; credits pay the rest, charged on those
            // seconds themselves (`settle`: billable minus pooled), not on increments of their
            // own. So the longest lattice point whose seconds past the pool cost what credits
            // can pay, found second by second.
            let pooled = ctx.pool_minutes_left().saturating_mul(60);
            let Some(price) = leg.price else { return pooled.min(MAX_LEG_SECONDS) };
            let within = pooled.saturating_add(credit_part(Price { increments: Increments::PER_SECOND, ..price }));
            if within >= MAX_LEG_SECONDS { MAX_LEG_SECONDS } else { price.increments.longest_within(within) }
        }
    }
}
