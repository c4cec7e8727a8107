//! Property tests of the rating core, each comparing the rater with a naive statement of a rule:
//!
//! - money is conserved: the balance is always funded + adjusted - usage - forfeited, and the
//!   usage debits are exactly the charges of the usage records;
//! - interim debits add up to the final charge, whatever the split;
//! - the flattened prefix table answers like a linear scan;
//! - duplicated events change nothing;
//! - rating is deterministic.
//!
//! The strategies build arbitrary but valid inputs against one small, fixed reference (see
//! [`build_fixture`]): a USD tenant that lets legs finish and auto-recharges, and a JPY tenant
//! that disconnects below an overdraft, with users of both licence models and several dial-out
//! policies, and rate cards mixing 60/60, 1/1 and 60/1 increments with and without connection
//! fees.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use tollgate_core::{
    Applied, AutoRecharge, Capability, Catalog, Country, CreditBody, CreditCommand, Currency, CutoffPolicy,
    DialOutRate, DialoutPolicy, DisconnectCause, E164, Error, Increments, Input, LegBody, LegDuration, LegEnded,
    LegKind, LegStarted, LicenceModel, LotFunding, Money, Output, Prefix, PrefixTable, Price, RateCard,
    RateCardVersion, RatedUsage, Rater, Reference, Tenant, TenantId, TenantState, Timestamp, UnpricedHandling,
    UsageOutcome, User,
};
use tollgate_core::{CallLegEvent, MAX_LEG_SECONDS, RatingConfig};

// ---------------------------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------------------------

/// 2026-11-10T00:00:00Z: mid-month, so a leg started near it never crosses a pool month
/// (legs that do are [`SplitLeg`]s started before [`MONTH_END`]).
const BASE: i64 = 1_794_268_800;
/// 2026-12-01T00:00:00Z, in seconds after [`BASE`]: the end of November's pool.
const MONTH_END: u32 = 21 * 86_400;
const HOUR: u32 = 3_600;
const DAY: u32 = 86_400;

/// One tenant of the fixture and the numbers its legs use.
struct TenantFixture {
    id: TenantId,
    currency: Currency,
    organizers: Vec<&'static str>,
    /// Dial-out destinations, some of them without a rate.
    dial_out: Vec<E164>,
    toll_bridges: Vec<E164>,
    toll_free_bridges: Vec<E164>,
}

struct Fixture {
    reference: Reference,
    tenants: Vec<TenantFixture>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| build_fixture().expect("the fixture is valid"));

fn ts(offset: u32) -> Timestamp {
    Timestamp::new(BASE + i64::from(offset), 0).expect("in range")
}

fn money(text: &str) -> Result<Money, Error> {
    text.parse()
}

/// An amount in minor units of `currency` (cents, yen).
fn minor(amount: i64, currency: Currency) -> Money {
    Money::new(Decimal::new(amount, currency.minor_units()))
}

fn price(per_minute: &str, fee: &str, first: u32, subsequent: u32) -> Result<Price, Error> {
    Price::new(money(per_minute)?, money(fee)?, Increments::new(first, subsequent)?)
}

fn dial_out(per_minute: &str, fee: &str, first: u32, subsequent: u32, premium: bool) -> Result<DialOutRate, Error> {
    Ok(DialOutRate { price: price(per_minute, fee, first, subsequent)?, premium })
}

fn table<T>(rows: Vec<(&str, T)>) -> Result<PrefixTable<T>, Error> {
    PrefixTable::new(rows.into_iter().map(|(p, v)| Ok((Prefix::parse(p)?, v))).collect::<Result<_, Error>>()?)
}

fn numbers(texts: &[&str]) -> Result<Vec<E164>, Error> {
    texts.iter().map(|n| E164::parse(n)).collect()
}

fn user(
    tenant: &TenantId,
    id: &str,
    location: &str,
    licence: LicenceModel,
    policy: Option<DialoutPolicy>,
    toll_free: bool,
) -> Result<User, Error> {
    let mut user = User::new(tenant.clone(), id, Country::from_code(location)?);
    user.licence = licence;
    user.dialout_policy = policy;
    user.allow_toll_free_dial_in = toll_free;
    Ok(user)
}

fn build_fixture() -> Result<Fixture, Error> {
    let usd = Currency::from_code("USD")?;
    let jpy = Currency::from_code("JPY")?;
    let mut reference = Reference::default();

    // USD card: a second version raises US dial-out 20 days in.
    let usd_version = |label: &str, from: Timestamp, us_per_minute: &str| -> Result<RateCardVersion, Error> {
        Ok(RateCardVersion {
            version: label.into(),
            effective_from: from,
            dial_in_toll: table(vec![("1", price("0.01", "0", 60, 60)?), ("44", price("0.012", "0", 1, 1)?)])?,
            dial_in_toll_free: table(vec![("1", price("0.03", "0", 60, 1)?), ("44", price("0.05", "0.02", 60, 60)?)])?,
            dial_out: table(vec![
                ("1", dial_out(us_per_minute, "0", 60, 60, false)?),
                ("1416", dial_out("0.03", "0.05", 1, 1, false)?),
                ("1787", dial_out("0.04", "0", 60, 1, false)?),
                ("44", dial_out("0.035", "0", 60, 1, false)?),
                ("447", dial_out("0.15", "0.10", 1, 1, true)?),
                ("81", dial_out("0.09", "0", 60, 60, false)?),
                ("234", dial_out("0.25", "0.10", 60, 1, false)?),
            ])?,
        })
    };
    reference.put_rate_card(RateCard::new(
        "usd".into(),
        usd,
        vec![usd_version("v1", ts(0), "0.024")?, usd_version("v2", ts(20 * DAY), "0.026")?],
    )?);
    reference.put_rate_card(RateCard::new(
        "jpy".into(),
        jpy,
        vec![RateCardVersion {
            version: "v1".into(),
            effective_from: ts(0),
            dial_in_toll: table(vec![("81", price("2", "0", 60, 60)?)])?,
            dial_in_toll_free: table(vec![("81", price("8", "5", 60, 1)?)])?,
            dial_out: table(vec![
                ("81", dial_out("3.5", "0", 1, 1, false)?),
                ("8190", dial_out("12", "10", 60, 1, false)?),
                ("1", dial_out("5", "0", 60, 60, false)?),
                ("44", dial_out("7", "0", 60, 1, false)?),
                ("447", dial_out("20", "0", 1, 1, true)?),
            ])?,
        }],
    )?);

    let contoso = TenantId::new("contoso")?;
    reference.put_tenant(
        Tenant {
            auto_recharge: Some(AutoRecharge { trigger: money("5")?, amount: money("25")? }),
            low_balance_thresholds: vec![money("10")?, money("5")?, money("1")?],
            subscription_licences: 1,
            ..Tenant::new(contoso.clone(), usd, "usd")
        }
        .validated()?,
    );
    use DialoutPolicy as P;
    use LicenceModel::{PayPerMinute as Ppm, Subscription as Sub};
    reference.put_user(user(&contoso, "alice", "US", Ppm, None, true)?);
    reference.put_user(user(&contoso, "bob", "GB", Sub, Some(P::CpcDomesticPstnInternational), true)?);
    reference.put_user(user(&contoso, "carol", "US", Sub, Some(P::CpcZoneAPstnDomestic), false)?);
    reference.put_user(user(&contoso, "dave", "CA", Ppm, Some(P::CpcAndPstnDisabled), true)?);

    let fabrikam = TenantId::new("fabrikam")?;
    reference.put_tenant(
        Tenant {
            auto_recharge: Some(AutoRecharge { trigger: money("500")?, amount: money("3000")? }),
            low_balance_thresholds: vec![money("300")?, money("1000")?],
            overdraft_limit: money("100")?,
            cutoff: CutoffPolicy::Disconnect,
            global_dialout_policy: Some(P::CpcZoneAPstnInternational),
            subscription_licences: 2,
            unpriced: UnpricedHandling::Reject,
            ..Tenant::new(fabrikam.clone(), jpy, "jpy")
        }
        .validated()?,
    );
    reference.put_user(user(&fabrikam, "taro", "JP", Ppm, None, true)?);
    reference.put_user(user(&fabrikam, "hanako", "JP", Sub, Some(P::CpcAndPstnDomestic), true)?);
    reference.put_user(user(&fabrikam, "kenji", "US", Ppm, Some(P::CpcAndPstnInternational), false)?);

    // US, CA, PR, GB, GB mobile, JP, JP mobile, NG, DE, FR.
    let destinations = numbers(&[
        "+12128675309",
        "+14163402000",
        "+17877221000",
        "+442071838750",
        "+447400123456",
        "+81312345678",
        "+819012345678",
        "+2348031234567",
        "+4930901820",
        "+33142685300",
    ])?;
    let tenants = vec![
        TenantFixture {
            id: contoso,
            currency: usd,
            organizers: vec!["alice", "bob", "carol", "dave"],
            dial_out: destinations.clone(),
            toll_bridges: numbers(&["+12025550123", "+442034567890"])?,
            toll_free_bridges: numbers(&["+18005550123", "+448001234567"])?,
        },
        TenantFixture {
            id: fabrikam,
            currency: jpy,
            organizers: vec!["taro", "hanako", "kenji"],
            dial_out: destinations,
            toll_bridges: numbers(&["+81345678901", "+12025550123"])?,
            toll_free_bridges: numbers(&["+81120123456"])?,
        },
    ];
    Ok(Fixture { reference, tenants })
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A credit command, amounts in minor units of the tenant's currency.
#[derive(Clone, Debug)]
enum CreditOp {
    Fund { amount: i64, bought_days_ago: u32 },
    RechargeSucceeded { amount: i64 },
    RechargeFailed,
    Adjust { amount: i64 },
}

#[derive(Clone, Debug)]
struct CreditPlan {
    /// Seconds after [`BASE`].
    at: u32,
    op: CreditOp,
}

/// How the `ended` event states the duration.
#[derive(Clone, Copy, Debug)]
enum EndStyle {
    ConnectedSeconds,
    /// `EndedAt(start + connected + nanos)`: a started second counts as one.
    EndedAt {
        nanos: u32,
    },
}

/// One leg: started, interims, ended.
#[derive(Clone, Debug)]
struct LegPlan {
    /// Start, seconds after [`BASE`].
    at: u32,
    /// Index into the tenant's organizers (modulo).
    organizer: usize,
    kind: LegKind,
    /// Index into the tenant's numbers for `kind` (modulo).
    number: usize,
    /// Elapsed seconds of the interim updates, increasing.
    interims: Vec<u32>,
    connected: u32,
    end: EndStyle,
    cause: DisconnectCause,
}

/// A tenant's input history: an optional opening purchase, credit commands, legs, and a few
/// swaps of neighbouring events (out-of-order delivery).
#[derive(Clone, Debug)]
struct Scenario {
    tenant: usize,
    opening: Option<i64>,
    credits: Vec<CreditPlan>,
    legs: Vec<LegPlan>,
    swaps: Vec<usize>,
}

fn credit_op() -> impl Strategy<Value = CreditOp> {
    prop_oneof![
        4 => (1..=5_000i64, prop_oneof![3 => Just(0u32), 1 => 0..=400u32])
            .prop_map(|(amount, bought_days_ago)| CreditOp::Fund { amount, bought_days_ago }),
        2 => (1..=5_000i64).prop_map(|amount| CreditOp::RechargeSucceeded { amount }),
        1 => Just(CreditOp::RechargeFailed),
        2 => prop_oneof![-2_000..=-1i64, 1..=2_000i64].prop_map(|amount| CreditOp::Adjust { amount }),
    ]
}

fn leg_kind() -> impl Strategy<Value = LegKind> {
    prop_oneof![
        4 => Just(LegKind::DialOut),
        1 => Just(LegKind::CallMeAt),
        2 => Just(LegKind::DialInToll),
        2 => Just(LegKind::DialInTollFree),
        1 => Just(LegKind::Voip),
    ]
}

/// Connected seconds: mostly minutes to two hours, some zero, some around the 24 h limit.
fn connected() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 8 => 1..=2 * HOUR, 1 => MAX_LEG_SECONDS - 400..=MAX_LEG_SECONDS + 3_600]
}

fn cause() -> impl Strategy<Value = DisconnectCause> {
    prop_oneof![
        8 => Just(DisconnectCause::Normal),
        1 => Just(DisconnectCause::Unspecified),
        1 => Just(DisconnectCause::MeetingEnded),
        1 => Just(DisconnectCause::CreditCutoff),
        1 => Just(DisconnectCause::NoAnswer),
        1 => Just(DisconnectCause::Busy),
        1 => Just(DisconnectCause::Failed),
    ]
}

fn end_style() -> impl Strategy<Value = EndStyle> {
    prop_oneof![
        3 => Just(EndStyle::ConnectedSeconds),
        1 => prop_oneof![Just(0u32), 1..1_000_000_000u32].prop_map(|nanos| EndStyle::EndedAt { nanos }),
    ]
}

/// A leg starting within `span` seconds of [`BASE`]. Interims may exceed the final duration
/// (the controller over-reported): the rater refunds the difference.
fn leg_plan(span: u32) -> impl Strategy<Value = LegPlan> {
    let overshoot = prop_oneof![4 => Just(0u32), 1 => 1..=300u32];
    (0..span, 0..8usize, leg_kind(), 0..16usize, connected(), overshoot, end_style(), cause()).prop_flat_map(
        |(at, organizer, kind, number, connected, overshoot, end, cause)| {
            btree_set(1..=connected.saturating_add(overshoot).max(1), 0..4).prop_map(move |interims| LegPlan {
                at,
                organizer,
                kind,
                number,
                interims: interims.into_iter().collect(),
                connected,
                end,
                cause,
            })
        },
    )
}

/// A scenario whose events all fall within `span` seconds of [`BASE`] (plus the length of
/// the last legs).
fn scenario(span: u32) -> impl Strategy<Value = Scenario> {
    (
        0..2usize,
        prop::option::weighted(0.9, 1..=5_000i64),
        vec((0..span, credit_op()).prop_map(|(at, op)| CreditPlan { at, op }), 0..6),
        vec(leg_plan(span), 1..10),
        vec(any::<usize>(), 0..8),
    )
        .prop_map(|(tenant, opening, credits, legs, swaps)| Scenario { tenant, opening, credits, legs, swaps })
}

/// The inputs of a scenario, in event-time order apart from the swaps. A swap only exchanges
/// neighbours at most an hour apart, so an `ended` overtaking its `started` is always caught up
/// well within the retention window (an orphaned end would leave its leg open forever).
fn inputs(s: &Scenario) -> Vec<Input> {
    let fx = &*FIXTURE;
    let t = &fx.tenants[s.tenant];
    let mut events: Vec<(Timestamp, Input)> = Vec::new();
    let credit = |id: String, at: Timestamp, body: CreditBody| {
        (at, Input::Credit(CreditCommand { command_id: id.into(), tenant_id: t.id.clone(), occurred_at: at, body }))
    };
    let lot = |id: String, amount: i64, purchased_at: Timestamp| LotFunding {
        lot_id: id,
        amount: minor(amount, t.currency),
        currency: t.currency,
        purchased_at,
    };
    if let Some(amount) = s.opening {
        events.push(credit("opening".into(), ts(0), CreditBody::Fund(lot("lot-opening".into(), amount, ts(0)))));
    }
    for (i, c) in s.credits.iter().enumerate() {
        let at = ts(c.at);
        let body = match c.op {
            CreditOp::Fund { amount, bought_days_ago } => {
                let bought = Timestamp::new(at.unix_seconds() - i64::from(bought_days_ago * DAY), 0).expect("in range");
                CreditBody::Fund(lot(format!("lot-{i}"), amount, bought))
            }
            CreditOp::RechargeSucceeded { amount } => CreditBody::RechargeSucceeded(lot(format!("rc-{i}"), amount, at)),
            CreditOp::RechargeFailed => CreditBody::RechargeFailed { reason: "card declined".into() },
            CreditOp::Adjust { amount } => CreditBody::Adjust {
                amount: minor(amount, t.currency),
                currency: t.currency,
                reason: "correction".into(),
            },
        };
        events.push(credit(format!("cmd-{i}"), at, body));
    }
    for (i, leg) in s.legs.iter().enumerate() {
        let start = ts(leg.at);
        let event = |suffix: String, at: Timestamp, body: LegBody| {
            (
                at,
                Input::Leg(CallLegEvent {
                    event_id: format!("leg-{i}/{suffix}").into(),
                    tenant_id: t.id.clone(),
                    conference_id: format!("conf-{}", i % 3).into(),
                    call_id: format!("call-{i}").into(),
                    leg_id: format!("leg-{i}").into(),
                    organizer_id: t.organizers[leg.organizer % t.organizers.len()].into(),
                    occurred_at: at,
                    body,
                }),
            )
        };
        let pick = |numbers: &[E164]| numbers[leg.number % numbers.len()];
        let started = match leg.kind {
            LegKind::Voip => LegStarted { kind: leg.kind, bridge_number: None, remote_number: None },
            LegKind::DialInToll => {
                LegStarted { kind: leg.kind, bridge_number: Some(pick(&t.toll_bridges)), remote_number: None }
            }
            LegKind::DialInTollFree => {
                LegStarted { kind: leg.kind, bridge_number: Some(pick(&t.toll_free_bridges)), remote_number: None }
            }
            LegKind::DialOut | LegKind::CallMeAt => {
                LegStarted { kind: leg.kind, bridge_number: None, remote_number: Some(pick(&t.dial_out)) }
            }
        };
        events.push(event("started".into(), start, LegBody::Started(started)));
        for (k, &elapsed) in leg.interims.iter().enumerate() {
            let at = start.plus_seconds(elapsed.min(leg.connected));
            events.push(event(format!("interim-{k}"), at, LegBody::Interim { elapsed_seconds: elapsed }));
        }
        let end = start.plus_seconds(leg.connected);
        let duration = match leg.end {
            EndStyle::ConnectedSeconds => LegDuration::ConnectedSeconds(leg.connected),
            EndStyle::EndedAt { nanos } => {
                LegDuration::EndedAt(Timestamp::new(end.unix_seconds(), nanos).expect("in range"))
            }
        };
        events.push(event("ended".into(), end, LegBody::Ended(LegEnded { duration, cause: leg.cause })));
    }
    // Stable: a leg's started, interims and ended keep their order at equal instants.
    events.sort_by_key(|(at, _)| *at);
    for &swap in &s.swaps {
        if events.len() >= 2 {
            let i = swap % (events.len() - 1);
            if events[i + 1].0.unix_seconds() - events[i].0.unix_seconds() <= i64::from(HOUR) {
                events.swap(i, i + 1);
            }
        }
    }
    events.into_iter().map(|(_, input)| input).collect()
}

/// One leg fed with interim updates at any increasing elapsed values, then ended at or after
/// the last of them, after an opening purchase. It starts mid-month, or in the last two hours
/// of the month, so that interims before and after midnight draw on a pool month's end.
#[derive(Clone, Debug)]
struct SplitLeg {
    tenant: usize,
    /// Start, seconds after [`BASE`].
    at: u32,
    opening: i64,
    organizer: usize,
    kind: LegKind,
    number: usize,
    interims: Vec<u32>,
    connected: u32,
    cause: DisconnectCause,
}

fn split_leg() -> impl Strategy<Value = SplitLeg> {
    (
        0..2usize,
        1..=20_000i64,
        (0..8usize, leg_kind(), 0..16usize),
        btree_set(prop_oneof![4 => 1..=2 * HOUR, 1 => 1..=MAX_LEG_SECONDS + 3_600], 0..8),
        prop_oneof![Just(0u32), 1..=2 * HOUR],
        prop_oneof![
            Just(DisconnectCause::Normal),
            Just(DisconnectCause::MeetingEnded),
            Just(DisconnectCause::CreditCutoff)
        ],
        prop_oneof![Just(HOUR), (MONTH_END - 2 * HOUR)..MONTH_END],
    )
        .prop_map(|(tenant, opening, (organizer, kind, number), interims, extra, cause, at)| {
            let interims: Vec<u32> = interims.into_iter().collect();
            let connected = interims.last().copied().unwrap_or(0) + extra;
            SplitLeg { tenant, at, opening, organizer, kind, number, interims, connected, cause }
        })
}

impl SplitLeg {
    fn scenario(&self, with_interims: bool) -> Scenario {
        Scenario {
            tenant: self.tenant,
            opening: Some(self.opening),
            credits: Vec::new(),
            legs: vec![LegPlan {
                at: self.at,
                organizer: self.organizer,
                kind: self.kind,
                number: self.number,
                interims: if with_interims { self.interims.clone() } else { Vec::new() },
                connected: self.connected,
                end: EndStyle::ConnectedSeconds,
                cause: self.cause,
            }],
            swaps: Vec::new(),
        }
    }
}

/// 1 to 199 distinct digit-string prefixes, and numbers of which about half extend one of them.
fn prefixes_and_numbers() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    btree_set("[0-9]{1,8}", 1..200).prop_flat_map(|prefixes: BTreeSet<String>| {
        let prefixes: Vec<String> = prefixes.into_iter().collect();
        let choices = prefixes.clone();
        let extended = (0..prefixes.len(), "[0-9]{0,10}").prop_map(move |(i, suffix)| {
            let mut digits = format!("{}{suffix}", choices[i]);
            digits.truncate(15);
            if digits.starts_with('0') {
                digits.replace_range(..1, "1");
            }
            digits
        });
        let numbers = vec(prop_oneof!["[1-9][0-9]{0,14}".boxed(), extended.boxed()], 1..32);
        (Just(prefixes), numbers)
    })
}

// ---------------------------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------------------------

/// Applies `inputs` to a fresh state; every input must be accepted.
fn run(inputs: &[Input]) -> Result<(TenantState, Vec<Output>), TestCaseError> {
    let rater = Rater::default();
    let mut state = TenantState::default();
    let mut out = Vec::new();
    for input in inputs {
        let applied = rater.apply(&FIXTURE.reference, &mut state, input.clone(), &mut out);
        prop_assert!(applied.is_ok(), "{} was refused: {:?}", input.id(), applied);
    }
    Ok((state, out))
}

fn usages(out: &[Output]) -> impl Iterator<Item = &RatedUsage> {
    out.iter().filter_map(|o| match o {
        Output::Usage(u) => Some(u),
        _ => None,
    })
}

fn balance_after(output: &Output) -> Option<Money> {
    match output {
        Output::Usage(u) => Some(u.balance_after),
        Output::Credit(c) => Some(c.balance_after),
        Output::Decision(_) => None,
    }
}

/// The totals identity and the ledger's shape: lots all positive, in expiry order, holding
/// the whole balance; no lot at all when the balance is not positive (a debt).
fn check_ledger(state: &TenantState) -> Result<(), TestCaseError> {
    let t = &state.totals;
    prop_assert_eq!(state.balance(), t.funded + t.adjusted - t.usage_charges - t.forfeited, "totals: {:?}", t);
    let lots: Vec<_> = state.ledger.lots().collect();
    prop_assert!(lots.iter().all(|l| l.remaining.is_positive()), "empty lot kept: {:?}", lots);
    prop_assert!(lots.windows(2).all(|w| w[0].expires_at <= w[1].expires_at), "lots out of order: {:?}", lots);
    if lots.is_empty() {
        prop_assert!(!state.balance().is_positive(), "positive balance {} without lots", state.balance());
    } else {
        let held: Money = lots.iter().map(|l| l.remaining).sum();
        prop_assert_eq!(state.balance(), held, "lots: {:?}", lots);
    }
    Ok(())
}

/// Billable seconds as RULES.md §4 states them.
fn naive_billable(increments: Increments, seconds: u32) -> u32 {
    let (first, sub) = (increments.first.get(), increments.subsequent.get());
    match seconds {
        0 => 0,
        s if s <= first => first,
        s => first + (s - first).div_ceil(sub) * sub,
    }
}

/// fee + per_minute x seconds / 60, rounded once, half away from zero; nothing for no seconds.
fn naive_charge(price: &Price, currency: Currency, seconds: u32) -> Money {
    if seconds == 0 {
        return Money::ZERO;
    }
    let exact = price.connection_fee.amount() + price.per_minute.amount() * Decimal::from(seconds) / Decimal::from(60);
    Money::new(exact.round_dp_with_strategy(currency.minor_units(), RoundingStrategy::MidpointAwayFromZero))
}

/// What a lone leg on a fresh state should cost, from the usage record's own classification.
fn expected_charge(tenant: &TenantFixture, usage: &RatedUsage, kind: LegKind) -> Result<Money, TestCaseError> {
    if usage.outcome != UsageOutcome::Rated
        || matches!(usage.capability, Capability::Subscription | Capability::Unpriced)
    {
        return Ok(Money::ZERO);
    }
    let card = FIXTURE.reference.rate_card(&usage.rate_card_id).ok_or_else(|| TestCaseError::fail("no card"))?;
    let version = card.version_at(usage.started_at).ok_or_else(|| TestCaseError::fail("no version"))?;
    let number = &usage.destination_number;
    let price = match kind {
        LegKind::DialInToll => version.dial_in_toll.lookup_linear(number).map(|e| e.1),
        LegKind::DialInTollFree => version.dial_in_toll_free.lookup_linear(number).map(|e| e.1),
        _ => version.dial_out.lookup_linear(number).map(|e| e.1.price),
    }
    .ok_or_else(|| TestCaseError::fail("rated leg without a price"))?;
    let billable = naive_billable(price.increments, usage.duration_seconds);
    prop_assert_eq!(usage.billable_seconds, billable);
    let pooled = if usage.capability == Capability::Pool {
        let pool_minutes = FIXTURE.reference.tenant(tenant.id.as_str()).map_or(0, |t| t.pool_minutes());
        billable.min(billable.div_ceil(60).min(pool_minutes) * 60)
    } else {
        0
    };
    prop_assert_eq!(usage.pool_seconds, pooled);
    Ok(naive_charge(&price, tenant.currency, billable - pooled))
}

/// `inputs` with some of them delivered again: `repeats` holds (which input, how many inputs
/// later). Also says which entries are the repeats.
fn with_repeats(inputs: &[Input], repeats: &[(usize, usize)]) -> Vec<(bool, Input)> {
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); inputs.len()];
    for &(which, delay) in repeats {
        let i = which % inputs.len();
        after[(i + delay).min(inputs.len() - 1)].push(i);
    }
    let mut seq = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        seq.push((false, input.clone()));
        seq.extend(after[i].iter().map(|&j| (true, inputs[j].clone())));
    }
    seq
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

#[test]
fn fixture_numbers_resolve_to_the_expected_countries() {
    let countries: Vec<String> = FIXTURE.tenants[0].dial_out.iter().map(|n| n.country().to_string()).collect();
    assert_eq!(countries, ["US", "CA", "PR", "GB", "GB", "JP", "JP", "NG", "DE", "FR"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) After every input the balance is funded + adjusted - usage - forfeited and sits
    /// in the lots (or is a debt), and under the disconnect cutoff every in-progress
    /// pay-per-minute leg has been told to hang up once the balance is below -overdraft; once
    /// every leg has ended, the usage debits are exactly the usage records' charges. Spans 400
    /// days, so lots expire and pool months turn over.
    #[test]
    fn money_is_conserved(s in scenario(400 * DAY)) {
        let tenant = FIXTURE
            .reference
            .tenant(FIXTURE.tenants[s.tenant].id.as_str())
            .ok_or_else(|| TestCaseError::fail("no tenant"))?;
        let rater = Rater::default();
        let mut state = TenantState::default();
        let mut out = Vec::new();
        for input in inputs(&s) {
            let id = input.id().to_owned();
            let applied = rater.apply(&FIXTURE.reference, &mut state, input, &mut out);
            prop_assert!(applied.is_ok(), "{} was refused: {:?}", id, applied);
            check_ledger(&state)?;
            if tenant.cutoff == CutoffPolicy::Disconnect && state.balance() < -tenant.overdraft_limit {
                for (leg_id, leg) in &state.open_legs {
                    let cut_off = leg.capability != Capability::Ppm || leg.disconnect_sent;
                    prop_assert!(cut_off, "{} not cut off after {}", leg_id, id);
                }
            }
        }
        prop_assert!(state.open_legs.is_empty(), "legs left open: {:?}", state.open_legs.keys());
        prop_assert!(state.parked_ends.is_empty(), "ends left parked: {:?}", state.parked_ends.keys());
        let charged: Money = usages(&out).map(|u| u.charge).sum();
        prop_assert_eq!(state.totals.usage_charges, charged);
        prop_assert_eq!(usages(&out).count(), s.legs.iter().filter(|l| l.kind != LegKind::Voip).count());
    }

    /// (a, continued) The debit trail accounts for every change of the balance: after each
    /// input, the movements so far add up to the balance, each one's `balance_after` is the
    /// running sum, and the outputs and state are those of the untraced rater.
    #[test]
    fn ledger_movements_add_up_to_the_balance(s in scenario(400 * DAY)) {
        let rater = Rater::default();
        let (mut traced, mut plain) = (TenantState::default(), TenantState::default());
        let (mut traced_out, mut plain_out, mut movements) = (Vec::new(), Vec::new(), Vec::new());
        let mut running = Money::ZERO;
        for input in inputs(&s) {
            let id = input.id().to_owned();
            let seen = movements.len();
            let applied = rater.apply_traced(&FIXTURE.reference, &mut traced, input.clone(), &mut traced_out, &mut movements);
            prop_assert!(applied.is_ok(), "{} was refused: {:?}", id, applied);
            prop_assert!(rater.apply(&FIXTURE.reference, &mut plain, input, &mut plain_out).is_ok());
            for movement in &movements[seen..] {
                running += movement.amount;
                prop_assert!(movement.amount != Money::ZERO, "empty movement {:?}", movement);
                prop_assert_eq!(movement.balance_after, running, "{:?}", movement);
            }
            prop_assert_eq!(running, traced.balance(), "after {}", id);
        }
        prop_assert_eq!(&traced_out, &plain_out);
        prop_assert_eq!(&traced, &plain);
    }

    /// (a, continued) The last balance an input reports (on a credit event or a usage record)
    /// is the balance the state ends up with: a consumer tracking `balance_after` is never
    /// left with a stale figure. Interim updates are the exception by design: their debits
    /// report nothing (the leg's usage record will), so an event they emit before the debit
    /// (a lot expiring at that instant) shows the balance of that moment.
    #[test]
    fn last_reported_balance_is_the_state_balance(s in scenario(400 * DAY)) {
        let rater = Rater::default();
        let mut state = TenantState::default();
        let mut out = Vec::new();
        for input in inputs(&s) {
            let id = input.id().to_owned();
            let emitted = out.len();
            if matches!(&input, Input::Leg(e) if matches!(e.body, LegBody::Interim { .. })) {
                prop_assert!(rater.apply(&FIXTURE.reference, &mut state, input, &mut out).is_ok());
                continue;
            }
            let applied = rater.apply(&FIXTURE.reference, &mut state, input, &mut out);
            prop_assert!(applied.is_ok(), "{} was refused: {:?}", id, applied);
            if let Some(reported) = out[emitted..].iter().rev().find_map(balance_after) {
                prop_assert_eq!(reported, state.balance(), "after {}: {:?}", id, &out[emitted..]);
            }
        }
    }

    /// (b) Interim debits add up to the leg's charge, and the usage record is the one the leg
    /// gets without interims, whose charge is the plain formula of RULES.md §4.
    #[test]
    fn interim_debits_sum_to_the_final_charge(leg in split_leg()) {
        let tenant = &FIXTURE.tenants[leg.tenant];
        let rater = Rater::default();
        let mut state = TenantState::default();
        let mut out = Vec::new();
        let mut debited = Money::ZERO;
        for input in inputs(&leg.scenario(true)) {
            // The opening purchase is not a debit.
            let is_leg = matches!(input, Input::Leg(_));
            let before = state.balance();
            let applied = rater.apply(&FIXTURE.reference, &mut state, input, &mut out);
            prop_assert!(applied.is_ok(), "{:?}", applied);
            if is_leg {
                debited += before - state.balance();
            }
        }
        let split: Vec<&RatedUsage> = usages(&out).collect();
        let (_, whole_out) = run(&inputs(&leg.scenario(false)))?;
        let whole: Vec<&RatedUsage> = usages(&whole_out).collect();
        prop_assert_eq!(&split, &whole);
        if leg.kind == LegKind::Voip {
            // Never billed: no usage record, no debit.
            prop_assert!(split.is_empty());
            prop_assert_eq!(debited, Money::ZERO);
        } else {
            prop_assert_eq!(split.len(), 1);
            prop_assert_eq!(debited, split[0].charge);
            prop_assert_eq!(state.totals.usage_charges, split[0].charge);
            prop_assert_eq!(whole[0].charge, expected_charge(tenant, whole[0], leg.kind)?);
        }
    }

    /// (c) The flattened prefix table answers like the linear scan and like a plain
    /// longest-`starts_with` over the digit strings.
    #[test]
    fn prefix_lookup_matches_the_linear_scan((prefixes, numbers) in prefixes_and_numbers()) {
        let fail = |e: Error| TestCaseError::fail(e.to_string());
        let rows = prefixes.iter().enumerate().map(|(i, p)| Ok((Prefix::parse(p)?, i))).collect::<Result<Vec<_>, _>>();
        let table = PrefixTable::new(rows.map_err(fail)?).map_err(fail)?;
        for digits in &numbers {
            let number = E164::from_parts(digits, Country::NON_GEOGRAPHIC).map_err(fail)?;
            let fast = table.lookup(&number);
            prop_assert_eq!(fast, table.lookup_linear(&number), "number {}", digits);
            let longest = prefixes.iter().filter(|p| digits.starts_with(p.as_str())).max_by_key(|p| p.len());
            prop_assert_eq!(fast.map(|(p, i)| (p.to_string(), &prefixes[*i])), longest.map(|p| (p.clone(), p)));
        }
    }

    /// (d) Delivering some inputs again, right away or after others, changes neither the
    /// outputs nor the final state. The scenario spans 20 h (legs may run 25 h more), inside
    /// the 48 h deduplication window.
    #[test]
    fn repeated_inputs_change_nothing(
        s in scenario(20 * HOUR),
        repeats in vec((any::<usize>(), prop_oneof![Just(0usize), 0..12usize]), 1..12),
    ) {
        let once = inputs(&s);
        let (expected_state, expected_out) = run(&once)?;
        let rater = Rater::default();
        let mut state = TenantState::default();
        let mut out = Vec::new();
        for (repeat, input) in with_repeats(&once, &repeats) {
            let id = input.id().to_owned();
            let emitted = out.len();
            let applied = rater.apply(&FIXTURE.reference, &mut state, input, &mut out);
            if repeat {
                prop_assert_eq!(applied, Ok(Applied::Duplicate), "repeat of {}", id);
                prop_assert_eq!(out.len(), emitted, "repeat of {} emitted", id);
            } else {
                prop_assert!(applied.is_ok(), "{} was refused: {:?}", id, applied);
            }
        }
        prop_assert_eq!(out, expected_out);
        prop_assert_eq!(state, expected_state);
    }

    /// No input is applied twice, however late it comes again: with a one-hour window and
    /// replays up to days later, over inputs that arrive out of order, every replay is a
    /// `Duplicate` or refused (`too_late`), and the outputs and the final state are those of
    /// the inputs delivered once (whatever those inputs' own fate under the short window).
    /// What a window remembers, and from when, decides only which of the two a replay gets.
    #[test]
    fn a_replay_is_never_applied_twice_however_late(
        s in scenario(3 * DAY),
        repeats in vec((any::<usize>(), prop_oneof![0..12usize, 12..200usize]), 1..16),
    ) {
        let rater = Rater::new(RatingConfig { retention_seconds: HOUR });
        let once = inputs(&s);
        let (mut expected_state, mut expected_out) = (TenantState::default(), Vec::new());
        for input in &once {
            let _ = rater.apply(&FIXTURE.reference, &mut expected_state, input.clone(), &mut expected_out);
        }
        let (mut state, mut out) = (TenantState::default(), Vec::new());
        for (repeat, input) in with_repeats(&once, &repeats) {
            let id = input.id().to_owned();
            let emitted = out.len();
            let applied = rater.apply(&FIXTURE.reference, &mut state, input, &mut out);
            if repeat {
                let refused_late = matches!(&applied, Err(e) if e.code() == "too_late");
                prop_assert!(applied == Ok(Applied::Duplicate) || refused_late, "repeat of {}: {:?}", id, applied);
                prop_assert_eq!(out.len(), emitted, "repeat of {} emitted", id);
            }
        }
        prop_assert_eq!(out, expected_out);
        prop_assert_eq!(state, expected_state);
    }

    /// (e) The same inputs on fresh states give the same outputs and state.
    #[test]
    fn rating_is_deterministic(s in scenario(400 * DAY)) {
        let inputs = inputs(&s);
        let (first_state, first_out) = run(&inputs)?;
        let (second_state, second_out) = run(&inputs)?;
        prop_assert_eq!(format!("{first_out:?}"), format!("{second_out:?}"));
        prop_assert_eq!(first_state, second_state);
    }
}
