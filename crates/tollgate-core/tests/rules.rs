//! One table-driven test per rule of docs/RULES.md, with exact expected amounts.
//!
//! The fixture is a small world: one USD rate card with two versions, one JPY card, one EUR
//! card (for currency mismatches), a USD tenant `contoso` with users on every policy and
//! licence, and a JPY tenant `tokyo`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::HashMap;

use tollgate_core::*;

// 2026-11-02T09:00:00Z
const T0: i64 = 1_793_610_000;
// 2026-12-01T00:00:00Z: rate card version v2 starts.
const DEC_1: i64 = 1_796_083_200;

fn ts(secs: i64) -> Timestamp {
    Timestamp::new(secs, 0).unwrap()
}
fn m(s: &str) -> Money {
    s.parse().unwrap()
}
fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}
fn num(s: &str) -> E164 {
    E164::parse(s).unwrap()
}
fn price(per_minute: &str, fee: &str, first: u32, sub: u32) -> Price {
    Price::new(m(per_minute), m(fee), Increments::new(first, sub).unwrap()).unwrap()
}
fn table<T>(rows: Vec<(&str, T)>) -> PrefixTable<T> {
    PrefixTable::new(rows.into_iter().map(|(p, v)| (Prefix::parse(p).unwrap(), v)).collect()).unwrap()
}
fn out_rate(per_minute: &str) -> DialOutRate {
    DialOutRate { price: price(per_minute, "0", 60, 60), premium: false }
}

const US: &str = "+12128675309";
const CA: &str = "+14163402000";
const PR: &str = "+17877221000";
const GB: &str = "+442071838750";
const GB_MOBILE: &str = "+447911123456";
const GB_PREMIUM: &str = "+449098790000";
const DE: &str = "+4930901820";
const FR: &str = "+33142685300";
const AU: &str = "+61293744000";
const NG: &str = "+2348031234567";
const JP: &str = "+81312345678";
const AR: &str = "+541143211234";
const US_BRIDGE: &str = "+12065550100";
const US_TOLL_FREE_BRIDGE: &str = "+18005550100";
const GB_BRIDGE: &str = "+442038700000";

fn usd_card() -> RateCard {
    let usd = Currency::from_code("USD").unwrap();
    let v1 = RateCardVersion {
        version: "v1".into(),
        effective_from: ts(1_767_225_600),
        dial_in_toll: table(vec![("1", price("0.0100", "0", 60, 60)), ("44", price("0.0150", "0", 60, 60))]),
        dial_in_toll_free: table(vec![("1", price("0.0400", "0", 60, 60)), ("44", price("0.0600", "0", 60, 60))]),
        dial_out: table(vec![
            ("1", out_rate("0.0200")),
            ("1416", out_rate("0.0300")),
            ("1787", out_rate("0.0500")),
            ("44", out_rate("0.0400")),
            ("447", out_rate("0.1200")),
            ("449", DialOutRate { price: price("1.5000", "0", 60, 60), premium: true }),
            ("49", out_rate("0.0350")),
            ("234", out_rate("0.2500")),
            ("33", DialOutRate { price: price("0.0312", "0.10", 60, 60), premium: false }),
            ("61", DialOutRate { price: price("0.0700", "0", 1, 1), premium: false }),
            ("81", DialOutRate { price: price("0.0900", "0", 60, 1), premium: false }),
            ("7", out_rate("0.0600")),
            ("7800", out_rate("0.0100")),
        ]),
    };
    let mut v2 = v1.clone();
    v2.version = "v2".into();
    v2.effective_from = ts(DEC_1);
    v2.dial_out = table(vec![("1", out_rate("0.0250")), ("44", out_rate("0.0450"))]);
    RateCard::new("usd".into(), usd, vec![v2, v1]).unwrap()
}

fn jpy_card() -> RateCard {
    let v = RateCardVersion {
        version: "jp-1".into(),
        effective_from: ts(1_767_225_600),
        dial_in_toll: table(vec![]),
        dial_in_toll_free: table(vec![]),
        dial_out: table(vec![("81", out_rate("3.5")), ("1", out_rate("5"))]),
    };
    RateCard::new("jpy".into(), Currency::from_code("JPY").unwrap(), vec![v]).unwrap()
}

fn eur_card() -> RateCard {
    let v = RateCardVersion {
        version: "eu-1".into(),
        effective_from: ts(1_767_225_600),
        dial_in_toll: table(vec![]),
        dial_in_toll_free: table(vec![]),
        dial_out: table(vec![("1", out_rate("0.02"))]),
    };
    RateCard::new("eur".into(), Currency::from_code("EUR").unwrap(), vec![v]).unwrap()
}

#[derive(Clone)]
struct World {
    reference: Reference,
    rater: Rater,
    states: HashMap<String, TenantState>,
    next_id: u32,
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn user(tenant: &str, id: &str, location: &str, policy: Option<DialoutPolicy>, licence: LicenceModel) -> User {
    let mut u = User::new(tid(tenant), id, Country::from_code(location).unwrap());
    u.dialout_policy = policy;
    u.licence = licence;
    u
}

impl World {
    fn new() -> Self {
        let mut reference = Reference::default();
        reference.put_rate_card(usd_card());
        reference.put_rate_card(jpy_card());
        reference.put_rate_card(eur_card());
        let usd = Currency::from_code("USD").unwrap();
        reference.put_tenant(Tenant::new(tid("contoso"), usd, "usd"));
        reference.put_tenant(Tenant::new(tid("tokyo"), Currency::from_code("JPY").unwrap(), "jpy"));
        reference.put_tenant(Tenant::new(tid("mismatch"), usd, "eur"));
        use DialoutPolicy as P;
        use LicenceModel::{PayPerMinute as Ppm, Subscription as Sub};
        for u in [
            user("contoso", "ppm-us", "US", None, Ppm),
            user("contoso", "sub-us", "US", None, Sub),
            user("contoso", "dom-us", "US", Some(P::CpcDomesticPstnInternational), Ppm),
            user("contoso", "zonea-us", "US", Some(P::CpcZoneAPstnDomestic), Ppm),
            user("contoso", "off-us", "US", Some(P::CpcAndPstnDisabled), Ppm),
            user("contoso", "ppm-gb", "GB", None, Ppm),
            user("tokyo", "taro", "JP", None, Ppm),
            user("mismatch", "eve", "US", None, Ppm),
        ] {
            reference.put_user(u);
        }
        let mut notf = user("contoso", "notf-us", "US", None, Ppm);
        notf.allow_toll_free_dial_in = false;
        reference.put_user(notf);
        World { reference, rater: Rater::default(), states: HashMap::new(), next_id: 0 }
    }

    fn tenant(&mut self, id: &str, change: impl FnOnce(&mut Tenant)) {
        let mut t = (*self.reference.tenant(id).unwrap()).clone();
        change(&mut t);
        self.reference.put_tenant(t.validated().unwrap());
    }

    fn state(&self, tenant: &str) -> &TenantState {
        &self.states[tenant]
    }

    fn balance(&self, tenant: &str) -> Money {
        self.states.get(tenant).map(TenantState::balance).unwrap_or_default()
    }

    fn try_apply(&mut self, input: Input) -> Result<(Applied, Vec<Output>), Error> {
        let state = self.states.entry(input.tenant_id().to_string()).or_default();
        let mut out = Vec::new();
        let applied = self.rater.apply(&self.reference, state, input, &mut out)?;
        Ok((applied, out))
    }

    fn apply(&mut self, input: Input) -> Vec<Output> {
        self.try_apply(input).unwrap().1
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("e{}", self.next_id)
    }

    fn credit(&mut self, tenant: &str, at: i64, body: CreditBody) -> Vec<Output> {
        let command_id = self.id();
        self.apply(Input::Credit(CreditCommand {
            command_id: command_id.into(),
            tenant_id: tid(tenant),
            occurred_at: ts(at),
            body,
        }))
    }

    fn fund_at(&mut self, tenant: &str, amount: &str, at: i64) -> Vec<Output> {
        let currency = self.reference.tenant(tenant).unwrap().currency;
        let lot_id = format!("lot-{}", self.next_id + 1);
        self.credit(
            tenant,
            at,
            CreditBody::Fund(LotFunding { lot_id, amount: m(amount), currency, purchased_at: ts(at) }),
        )
    }

    fn fund(&mut self, tenant: &str, amount: &str) -> Vec<Output> {
        self.fund_at(tenant, amount, T0 - 3600)
    }

    fn leg_event(&mut self, tenant: &str, leg: &str, organizer: &str, at: i64, body: LegBody) -> Input {
        Input::Leg(CallLegEvent {
            event_id: self.id().into(),
            tenant_id: tid(tenant),
            conference_id: "meeting-1".into(),
            call_id: format!("call-{leg}").into(),
            leg_id: leg.into(),
            organizer_id: organizer.into(),
            occurred_at: ts(at),
            body,
        })
    }

    fn start(&mut self, tenant: &str, leg: &str, organizer: &str, kind: LegKind, number: &str, at: i64) -> Vec<Output> {
        let n = num(number);
        let started = match kind {
            LegKind::DialInToll | LegKind::DialInTollFree => {
                LegStarted { kind, bridge_number: Some(n), remote_number: Some(num(US)) }
            }
            LegKind::Voip => LegStarted { kind, bridge_number: None, remote_number: None },
            _ => LegStarted { kind, bridge_number: None, remote_number: Some(n) },
        };
        let input = self.leg_event(tenant, leg, organizer, at, LegBody::Started(started));
        self.apply(input)
    }

    fn interim(&mut self, tenant: &str, leg: &str, elapsed: u32, at: i64) -> Vec<Output> {
        let input = self.leg_event(tenant, leg, "", at, LegBody::Interim { elapsed_seconds: elapsed });
        self.apply(input)
    }

    fn end(&mut self, tenant: &str, leg: &str, seconds: u32, at: i64) -> Vec<Output> {
        let ended = LegEnded { duration: LegDuration::ConnectedSeconds(seconds), cause: DisconnectCause::Normal };
        let input = self.leg_event(tenant, leg, "", at, LegBody::Ended(ended));
        self.apply(input)
    }

    /// Starts and ends a leg; returns (decision, usage record if any).
    fn call(
        &mut self,
        tenant: &str,
        organizer: &str,
        kind: LegKind,
        number: &str,
        seconds: u32,
    ) -> (Decision, Option<RatedUsage>) {
        let leg = format!("leg-{}", self.next_id + 1);
        let mut out = self.start(tenant, &leg, organizer, kind, number, T0);
        let decision = decisions(&out)[0];
        if matches!(decision, Decision::Allow { .. }) && kind != LegKind::Voip {
            out.extend(self.end(tenant, &leg, seconds, T0 + i64::from(seconds)));
        }
        (decision, usages(&out).into_iter().next())
    }
}

fn decisions(out: &[Output]) -> Vec<Decision> {
    out.iter().filter_map(|o| if let Output::Decision(d) = o { Some(d.decision) } else { None }).collect()
}

fn usages(out: &[Output]) -> Vec<RatedUsage> {
    out.iter().filter_map(|o| if let Output::Usage(u) = o { Some(u.clone()) } else { None }).collect()
}

fn credit_events(out: &[Output]) -> Vec<(CreditEventKind, Money, Money)> {
    out.iter()
        .filter_map(|o| if let Output::Credit(c) = o { Some((c.kind, c.amount, c.balance_after)) } else { None })
        .collect()
}

fn allowed(d: Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

// ---------------------------------------------------------------------------------------
// RULES.md §1: every PSTN leg is billed to, and policy-checked against, the organizer.

#[test]
fn bills_and_checks_every_leg_against_the_organizer() {
    let mut w = World::new();
    w.fund("contoso", "100");
    // A GB participant's dial-out to GB in a meeting organized by a DomesticOnly US user is
    // international for the organizer: blocked.
    let (d, usage) = w.call("contoso", "dom-us", LegKind::DialOut, GB, 60);
    assert_eq!(d, Decision::Block(BlockReason::Policy));
    let usage = usage.unwrap();
    assert_eq!((usage.organizer_id.as_str(), usage.organizer_usage_location.code()), ("dom-us", "US"));
    assert_eq!(usage.outcome, UsageOutcome::Blocked(BlockReason::Policy));
    assert_eq!(usage.charge, Money::ZERO);
    // The same leg in a meeting organized by the GB user is domestic and billed to them.
    let (d, usage) = w.call("contoso", "ppm-gb", LegKind::DialOut, GB, 60);
    assert!(allowed(d));
    let usage = usage.unwrap();
    assert_eq!((usage.organizer_id.as_str(), usage.international, usage.charge), ("ppm-gb", false, m("0.04")));
}

// ---------------------------------------------------------------------------------------
// RULES.md §2: which legs cost money.

#[test]
fn charges_legs_by_kind_and_licence() {
    use Capability::*;
    use LegKind::*;
    // (organizer, kind, number, seconds, capability, charge)
    let table: &[(&str, LegKind, &str, u32, Capability, &str)] = &[
        ("ppm-us", DialInToll, US_BRIDGE, 600, Ppm, "0.10"),
        ("sub-us", DialInToll, US_BRIDGE, 600, Subscription, "0"),
        ("ppm-us", DialInTollFree, US_TOLL_FREE_BRIDGE, 600, Ppm, "0.40"),
        ("sub-us", DialInTollFree, US_TOLL_FREE_BRIDGE, 600, Ppm, "0.40"),
        ("ppm-us", DialOut, GB, 600, Ppm, "0.40"),
        ("ppm-us", CallMeAt, GB, 600, Ppm, "0.40"),
        // Subscription, Zone A, non-premium: the pool (the tenant has 1 licence = 60 min).
        ("sub-us", DialOut, GB, 600, Pool, "0"),
        ("sub-us", CallMeAt, DE, 600, Pool, "0"),
        // Subscription to a non-Zone A country: credits.
        ("sub-us", DialOut, NG, 600, Ppm, "2.50"),
        // Subscription to a Zone A premium number: credits.
        ("sub-us", DialOut, GB_PREMIUM, 60, Ppm, "1.50"),
    ];
    for &(organizer, kind, number, seconds, capability, charge) in table {
        let mut w = World::new();
        w.tenant("contoso", |t| t.subscription_licences = 1);
        w.fund("contoso", "100");
        let (d, usage) = w.call("contoso", organizer, kind, number, seconds);
        let Decision::Allow { capability: allowed_as, .. } = d else { panic!("{organizer} {kind:?} {number}: {d:?}") };
        assert_eq!(allowed_as, Some(capability), "{organizer} {kind:?} {number}");
        let usage = usage.unwrap();
        assert_eq!((usage.capability, usage.charge), (capability, m(charge)), "{organizer} {kind:?} {number}");
        assert_eq!(w.balance("contoso"), m("100") - m(charge));
    }
}

#[test]
fn voip_joins_are_never_billed_nor_blocked() {
    let mut w = World::new();
    // No credit at all, credits disabled, and a fully disabled organizer.
    w.tenant("contoso", |t| t.credits_enabled = false);
    let out = w.start("contoso", "v1", "off-us", LegKind::Voip, US, T0);
    assert_eq!(decisions(&out), vec![Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: None }]);
    assert!(usages(&out).is_empty());
    let out = w.end("contoso", "v1", 3600, T0 + 3600);
    assert!(out.is_empty());
    assert_eq!(w.balance("contoso"), Money::ZERO);
    // Nothing of the organizer is asked: one the reference data does not know joins too.
    let out = w.start("contoso", "v2", "not-in-reference", LegKind::Voip, US, T0);
    assert_eq!(decisions(&out), vec![Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: None }]);
    assert!(w.end("contoso", "v2", 60, T0 + 60).is_empty());
    // A priced leg of that organizer is still refused.
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let input = w.leg_event("contoso", "d", "not-in-reference", T0, LegBody::Started(started));
    assert!(matches!(w.try_apply(input), Err(Error::UnknownOrganizer { .. })));
}

#[test]
fn prices_dial_in_by_the_dialled_bridge_number_and_type() {
    // (kind, bridge, seconds, charge): 10 minutes each
    let table = [
        (LegKind::DialInToll, US_BRIDGE, "0.10"),
        (LegKind::DialInToll, GB_BRIDGE, "0.15"),
        (LegKind::DialInTollFree, US_TOLL_FREE_BRIDGE, "0.40"),
        (LegKind::DialInTollFree, GB_BRIDGE, "0.60"),
    ];
    for (kind, bridge, charge) in table {
        let mut w = World::new();
        w.fund("contoso", "10");
        let (_, usage) = w.call("contoso", "ppm-us", kind, bridge, 600);
        let usage = usage.unwrap();
        assert_eq!(usage.charge, m(charge), "{kind:?} {bridge}");
        assert_eq!(usage.call_type, CallType::ConfIn);
        assert_eq!(usage.destination_number.to_string(), bridge);
    }
}

#[test]
fn prices_dial_out_by_destination_only() {
    // The same destination costs the same whoever organizes and wherever they are.
    for organizer in ["ppm-us", "ppm-gb"] {
        let mut w = World::new();
        w.fund("contoso", "10");
        let (_, usage) = w.call("contoso", organizer, LegKind::DialOut, DE, 600);
        assert_eq!(usage.unwrap().charge, m("0.35"), "{organizer}");
    }
    // Longest prefix decides: +1 416 (Toronto) and +1 787 (Puerto Rico) have their own rows.
    let table = [(US, "0.20", "1"), (CA, "0.30", "1416"), (PR, "0.50", "1787"), (GB_MOBILE, "1.20", "447")];
    for (number, charge, prefix) in table {
        let mut w = World::new();
        w.fund("contoso", "10");
        let usage = w.call("contoso", "ppm-us", LegKind::DialOut, number, 600).1.unwrap();
        assert_eq!((usage.charge, usage.rate_prefix.unwrap().to_string()), (m(charge), prefix.to_string()), "{number}");
    }
}

#[test]
fn prices_and_reports_the_digits_as_dialled() {
    // libphonenumber would read the 8 of this Russian toll-free number as a national prefix
    // and make it +7 001234567, priced by the "7" row at 0.06.
    let mut w = World::new();
    w.fund("contoso", "10");
    let usage = w.call("contoso", "ppm-us", LegKind::DialOut, "+78001234567", 60).1.unwrap();
    assert_eq!(
        (
            usage.destination_number.to_string(),
            usage.destination_country.code(),
            usage.rate_prefix.unwrap().to_string()
        ),
        ("+78001234567".to_string(), "RU", "7800".to_string())
    );
    assert_eq!(usage.charge, m("0.01"));
}

#[test]
fn refuses_a_leg_whose_number_is_impossible() {
    let mut w = World::new();
    w.fund("contoso", "10");
    for (leg, number) in [("a", "+1234"), ("b", "+4477009"), ("c", "+4407700900123")] {
        let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(number)) };
        let input = w.leg_event("contoso", leg, "ppm-us", T0, LegBody::Started(started));
        let err = w.try_apply(input).unwrap_err();
        assert_eq!(err.code(), "invalid_number");
        assert_eq!(
            err.to_string(),
            format!("leg {leg:?}: {number} is not a possible number for its calling code (length or leading digits)")
        );
    }
    assert_eq!(w.balance("contoso"), m("10"));
    assert!(w.state("contoso").open_legs.is_empty());
}

#[test]
fn ignores_the_later_events_of_a_leg_refused_for_its_number() {
    let mut w = World::new();
    w.fund("contoso", "10");
    // An end that arrived first waits for its start...
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(125), cause: DisconnectCause::Normal };
    let early_end = w.leg_event("contoso", "a", "ppm-us", T0 + 125, LegBody::Ended(ended));
    assert_eq!(w.try_apply(early_end).unwrap().0, Applied::Parked);
    // ...and is dropped when the start is refused: nothing is left waiting.
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num("+1234")) };
    let start = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    assert_eq!(w.try_apply(start.clone()).unwrap_err().code(), "invalid_number");
    assert!(w.state("contoso").parked_ends.is_empty());
    // Redelivered, the start is refused the same way.
    assert_eq!(w.try_apply(start).unwrap_err().code(), "invalid_number");
    // Later events of the leg are ignored, not parked.
    let interim = w.leg_event("contoso", "a", "ppm-us", T0 + 60, LegBody::Interim { elapsed_seconds: 60 });
    assert_eq!(w.try_apply(interim).unwrap(), (Applied::IgnoredAfterClose, vec![]));
    let late_end = w.leg_event("contoso", "a", "ppm-us", T0 + 300, LegBody::Ended(ended));
    assert_eq!(w.try_apply(late_end).unwrap(), (Applied::IgnoredAfterClose, vec![]));
    assert!(w.state("contoso").parked_ends.is_empty());
    assert_eq!(w.balance("contoso"), m("10"));
}

#[test]
fn draws_zone_a_dial_out_from_the_monthly_pool_and_splits_per_minute() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1); // 60 pooled minutes
    w.fund("contoso", "10");
    // 47 minutes: all pooled; no event yet (78 %).
    let mut out = w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, T0);
    out.extend(w.end("contoso", "a", 47 * 60, T0 + 47 * 60));
    let usage = &usages(&out)[0];
    assert_eq!((usage.capability, usage.pool_seconds, usage.charge), (Capability::Pool, 2820, Money::ZERO));
    assert!(credit_events(&out).is_empty());
    // 15 minutes 30 s = 16 billable minutes: 13 from the pool (crossing 80 % then 100 %), 3
    // charged at 0.04.
    let mut out = w.start("contoso", "b", "sub-us", LegKind::DialOut, GB, T0 + 4000);
    out.extend(w.end("contoso", "b", 930, T0 + 4930));
    let usage = &usages(&out)[0];
    assert_eq!((usage.billable_seconds, usage.pool_seconds, usage.charge), (960, 780, m("0.12")));
    let kinds: Vec<CreditEventKind> = credit_events(&out).iter().map(|c| c.0).collect();
    assert_eq!(kinds, vec![CreditEventKind::Pool80Percent, CreditEventKind::Pool100Percent]);
    assert_eq!(w.balance("contoso"), m("9.88"));
    // Pool used up: the next Zone A dial-out is charged in full.
    let usage = w.call("contoso", "sub-us", LegKind::DialOut, GB, 60).1.unwrap();
    assert_eq!((usage.pool_seconds, usage.charge), (0, m("0.04")));
    // A new UTC month refills the pool (and re-arms the events).
    let mut out = w.start("contoso", "c", "sub-us", LegKind::DialOut, GB, DEC_1 + 60);
    out.extend(w.end("contoso", "c", 120, DEC_1 + 180));
    let usage = &usages(&out)[0];
    assert_eq!((usage.pool_seconds, usage.charge), (120, Money::ZERO));
    assert_eq!(w.state("contoso").pool.used_minutes, 2);
}

#[test]
fn labels_a_pool_eligible_leg_paid_by_credits_alone_as_ppm() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1); // 60 pooled minutes
    w.fund("contoso", "10");
    let usage = w.call("contoso", "sub-us", LegKind::DialOut, GB, 60 * 60).1.unwrap();
    assert_eq!((usage.capability, usage.pool_seconds, usage.charge), (Capability::Pool, 3600, Money::ZERO));
    // The pool is used up: credits pay for all of the next leg, and both its allow decision
    // and its usage record say so (10.00 buys 250 minutes at 0.04).
    let (d, usage) = w.call("contoso", "sub-us", LegKind::DialOut, GB, 60);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: 15_000, capability: Some(Capability::Ppm) });
    let usage = usage.unwrap();
    assert_eq!((usage.capability, usage.pool_seconds, usage.charge), (Capability::Ppm, 0, m("0.04")));
}

#[test]
fn labels_a_leg_whose_pool_minutes_went_to_other_legs_as_ppm() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "10");
    w.call("contoso", "sub-us", LegKind::DialOut, GB, 59 * 60);
    // One minute left when both legs start: both are allowed as pool legs (that minute, then
    // 250 minutes of credits at 0.04).
    let mut out = w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, T0 + 4000);
    out.extend(w.start("contoso", "b", "sub-us", LegKind::DialOut, GB, T0 + 4000));
    let allowed_as: Vec<Decision> = decisions(&out);
    assert_eq!(
        allowed_as,
        vec![Decision::Allow { max_affordable_seconds: 15_060, capability: Some(Capability::Pool) }; 2]
    );
    // a takes the last pooled minute and pays for its second one; b finds the pool empty.
    let a = usages(&w.end("contoso", "a", 120, T0 + 4120)).remove(0);
    assert_eq!((a.capability, a.billable_seconds, a.pool_seconds, a.charge), (Capability::Pool, 120, 60, m("0.04")));
    let b = usages(&w.end("contoso", "b", 60, T0 + 4060)).remove(0);
    assert_eq!((b.capability, b.billable_seconds, b.pool_seconds, b.charge), (Capability::Ppm, 60, 0, m("0.04")));
    assert_eq!(w.balance("contoso"), m("9.92"));
}

#[test]
fn finish_in_pool_keeps_a_leg_that_started_with_pool_minutes_pooled_in_full() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.subscription_licences = 1; // 60 minutes
        t.pool_split = PoolSplit::FinishInPool;
    });
    w.fund("contoso", "10");
    let usage = w.call("contoso", "sub-us", LegKind::DialOut, GB, 59 * 60).1.unwrap();
    assert_eq!((usage.pool_seconds, usage.charge), (3540, Money::ZERO));
    // One minute left: a 10-minute leg starts and is pooled in full, past the end of the pool.
    let (d, usage) = w.call("contoso", "sub-us", LegKind::DialOut, GB, 600);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Pool) });
    let usage = usage.unwrap();
    assert_eq!((usage.pool_seconds, usage.charge), (600, Money::ZERO));
    assert_eq!(w.state("contoso").pool.used_minutes, 69);
    // The pool is used up: the next leg is charged to credits.
    let usage = w.call("contoso", "sub-us", LegKind::DialOut, GB, 60).1.unwrap();
    assert_eq!((usage.pool_seconds, usage.charge), (0, m("0.04")));
    assert_eq!(w.balance("contoso"), m("9.96"));
}

#[test]
fn pool_minutes_scale_with_licences() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 3); // 180 minutes
    w.fund("contoso", "10");
    let usage = w.call("contoso", "sub-us", LegKind::DialOut, DE, 180 * 60 + 1).1.unwrap();
    assert_eq!((usage.billable_seconds, usage.pool_seconds, usage.charge), (10_860, 10_800, m("0.04")));
}

#[test]
fn unpriced_legs_are_free_and_flagged_or_rejected() {
    let mut w = World::new();
    w.fund("contoso", "10");
    // No row for Argentina (+54).
    let (d, usage) = w.call("contoso", "ppm-us", LegKind::DialOut, AR, 600);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Unpriced) });
    let usage = usage.unwrap();
    assert_eq!(
        (usage.capability, usage.charge, usage.flags.names()),
        (Capability::Unpriced, Money::ZERO, vec!["unpriced"])
    );
    assert_eq!(w.balance("contoso"), m("10"));

    w.tenant("contoso", |t| t.unpriced = UnpricedHandling::Reject);
    let (d, usage) = w.call("contoso", "ppm-us", LegKind::DialOut, AR, 600);
    assert_eq!(d, Decision::Block(BlockReason::NoRate));
    assert_eq!(usage.unwrap().outcome, UsageOutcome::Blocked(BlockReason::NoRate));
}

/// An unpriced leg is free, but at a balance of zero it is still a leg that credits would pay
/// for: a pay-per-minute organizer's is blocked like every pay-per-minute leg, and so is a
/// subscription organizer's dial-out outside the pool. Funded again, both go through free.
#[test]
fn unpriced_legs_that_credits_would_pay_for_are_blocked_at_zero() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    for organizer in ["ppm-us", "sub-us"] {
        let (d, usage) = w.call("contoso", organizer, LegKind::DialOut, AR, 600);
        assert_eq!(d, Decision::Block(BlockReason::NoCredit), "{organizer}");
        let usage = usage.unwrap();
        assert_eq!(
            (usage.outcome, usage.charge, usage.flags.names()),
            (UsageOutcome::Blocked(BlockReason::NoCredit), Money::ZERO, vec!["unpriced"]),
            "{organizer}"
        );
    }
    w.fund("contoso", "1");
    for organizer in ["ppm-us", "sub-us"] {
        let (d, usage) = w.call("contoso", organizer, LegKind::DialOut, AR, 600);
        assert_eq!(
            d,
            Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Unpriced) }
        );
        assert_eq!(usage.unwrap().charge, Money::ZERO);
    }
    assert_eq!(w.balance("contoso"), m("1"));
}

/// A subscription organizer's unpriced dial-out to Zone A is one the pool would pay for: at a
/// balance of zero it goes through while the month's pool has minutes (free, drawing none),
/// and is blocked once the pool is used up. Under the `disconnect` cutoff a positive balance
/// lets an unpriced leg through: it has no first increment to afford.
#[test]
fn an_unpriced_pool_eligible_leg_at_zero_waits_for_the_pool() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.subscription_licences = 1;
        t.cutoff = CutoffPolicy::Disconnect;
    });
    let call = |w: &mut World, leg: &str, organizer: &str, number: &str, seconds: u32, at: i64| {
        let mut out = w.start("contoso", leg, organizer, LegKind::DialOut, number, at);
        let decision = decisions(&out)[0];
        if matches!(decision, Decision::Allow { .. }) {
            out.extend(w.end("contoso", leg, seconds, at + i64::from(seconds)));
        }
        (decision, usages(&out).into_iter().next())
    };
    // December's card prices no German number.
    let (d, usage) = call(&mut w, "a", "sub-us", DE, 600, DEC_1 + 600);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Unpriced) });
    assert_eq!(usage.unwrap().charge, Money::ZERO);
    assert_eq!(w.state("contoso").pool.used_minutes, 0);
    // An hour to the UK uses December's pool up.
    let (_, usage) = call(&mut w, "b", "sub-us", GB, 3600, DEC_1 + 1800);
    assert_eq!(usage.unwrap().pool_seconds, 3600);
    let (d, _) = call(&mut w, "c", "sub-us", DE, 600, DEC_1 + 7200);
    assert_eq!(d, Decision::Block(BlockReason::NoCredit));
    w.fund_at("contoso", "0.01", DEC_1 + 8000);
    let (d, _) = call(&mut w, "d", "ppm-us", DE, 600, DEC_1 + 9000);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Unpriced) });
}

// ---------------------------------------------------------------------------------------
// RULES.md §3: dial-out restriction policy.

#[test]
fn applies_the_conferencing_dial_out_control() {
    // (organizer, destination, allowed)
    let table = [
        ("ppm-us", NG, true),
        ("dom-us", US, true),
        ("dom-us", CA, false), // +1 416 from a US organizer is international
        ("dom-us", PR, false),
        ("dom-us", GB, false),
        ("zonea-us", CA, true),
        ("zonea-us", PR, true),
        ("zonea-us", GB, true),
        ("zonea-us", AU, true),
        ("zonea-us", NG, false),
        ("zonea-us", AR, false),
        ("off-us", US, false),
    ];
    for (organizer, destination, expect) in table {
        let mut w = World::new();
        w.fund("contoso", "10");
        let (d, _) = w.call("contoso", organizer, LegKind::DialOut, destination, 60);
        if expect {
            assert!(allowed(d), "{organizer} -> {destination}: {d:?}");
        } else {
            assert_eq!(d, Decision::Block(BlockReason::Policy), "{organizer} -> {destination}");
        }
    }
}

#[test]
fn resolves_policy_user_then_tenant_global_then_default() {
    let mut w = World::new();
    w.fund("contoso", "10");
    // ppm-us has no assignment: the tenant's global policy applies once set.
    assert!(allowed(w.call("contoso", "ppm-us", LegKind::DialOut, GB, 60).0));
    w.tenant("contoso", |t| t.global_dialout_policy = Some(DialoutPolicy::CpcAndPstnDomestic));
    assert_eq!(w.call("contoso", "ppm-us", LegKind::DialOut, GB, 60).0, Decision::Block(BlockReason::Policy));
    assert!(allowed(w.call("contoso", "ppm-us", LegKind::DialOut, US, 60).0));
    // An assignment beats the tenant's global policy.
    assert!(allowed(w.call("contoso", "zonea-us", LegKind::DialOut, GB, 60).0));
}

#[test]
fn dial_in_is_not_subject_to_dial_out_policy_but_toll_free_can_be_switched_off() {
    let mut w = World::new();
    w.fund("contoso", "10");
    // The organizer may not dial out at all, yet dial-in works.
    assert!(allowed(w.call("contoso", "off-us", LegKind::DialInToll, US_BRIDGE, 60).0));
    assert!(allowed(w.call("contoso", "off-us", LegKind::DialInTollFree, US_TOLL_FREE_BRIDGE, 60).0));
    // Toll-free dial-in to a meeting of an organizer with the switch off is blocked; toll is not.
    let (d, usage) = w.call("contoso", "notf-us", LegKind::DialInTollFree, US_TOLL_FREE_BRIDGE, 60);
    assert_eq!(d, Decision::Block(BlockReason::TollFreeDisabled));
    assert_eq!(usage.unwrap().number_type, NumberType::TollFree);
    assert!(allowed(w.call("contoso", "notf-us", LegKind::DialInToll, US_BRIDGE, 60).0));
}

// ---------------------------------------------------------------------------------------
// RULES.md §4: rates and billing arithmetic.

#[test]
fn rates_with_the_version_in_force_at_leg_start() {
    let mut w = World::new();
    w.fund("contoso", "10");
    // Starts one second before v2 and runs into it: v1 prices it.
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, DEC_1 - 1);
    out.extend(w.end("contoso", "a", 600, DEC_1 + 599));
    let usage = &usages(&out)[0];
    assert_eq!((usage.rate_card_version.as_str(), usage.charge), ("v1", m("0.20")));
    let mut out = w.start("contoso", "b", "ppm-us", LegKind::DialOut, US, DEC_1);
    out.extend(w.end("contoso", "b", 600, DEC_1 + 600));
    let usage = &usages(&out)[0];
    assert_eq!((usage.rate_card_version.as_str(), usage.charge), ("v2", m("0.25")));
}

#[test]
fn bills_increments_and_connection_fees_exactly() {
    // (destination, seconds, billable, charge)
    let table = [
        (US, 0, 0, "0"),     // unanswered: nothing, not even a fee
        (US, 1, 60, "0.02"), // 60/60: every started minute
        (US, 60, 60, "0.02"),
        (US, 61, 120, "0.04"),
        (FR, 0, 0, "0"),
        (FR, 61, 120, "0.16"),  // 0.10 fee + 2 x 0.0312 = 0.1624 -> 0.16
        (FR, 150, 180, "0.19"), // 0.10 + 0.0936 = 0.1936 -> 0.19
        (AU, 61, 61, "0.07"),   // 1/1 at 0.07: 0.071166.. -> 0.07
        (AU, 450, 450, "0.53"), // 0.525 -> half away from zero: 0.53
        (JP, 1, 60, "0.09"),    // 60/1: minimum minute
        (JP, 61, 61, "0.09"),   // 0.0915 -> 0.09
        (JP, 90, 90, "0.14"),   // 0.135 -> 0.14
    ];
    for (number, seconds, billable, charge) in table {
        let mut w = World::new();
        w.fund("contoso", "10");
        let usage = w.call("contoso", "ppm-us", LegKind::DialOut, number, seconds).1.unwrap();
        assert_eq!((usage.billable_seconds, usage.charge), (billable, m(charge)), "{number} {seconds}s");
        let fee = if number == FR && seconds > 0 { m("0.10") } else { Money::ZERO };
        assert_eq!(usage.connection_fee, fee);
        assert_eq!(w.balance("contoso"), m("10") - m(charge));
    }
}

#[test]
fn rounds_once_per_leg_in_the_currency_minor_unit() {
    // JPY has no minor unit: 3.5 yen/min x 3 min = 10.5 -> 11 (half away from zero), once.
    let mut w = World::new();
    w.fund("tokyo", "1000");
    let usage = w.call("tokyo", "taro", LegKind::DialOut, JP, 180).1.unwrap();
    assert_eq!((usage.charge, usage.currency.code()), (m("11"), "JPY"));
    // Interim debits do not round each slice: 1 minute at a time would be 4 + 4 + 4 = 12.
    let mut out = w.start("tokyo", "b", "taro", LegKind::DialOut, JP, T0);
    for (i, elapsed) in [60u32, 120].into_iter().enumerate() {
        out.extend(w.interim("tokyo", "b", elapsed, T0 + 60 * (i as i64 + 1)));
    }
    out.extend(w.end("tokyo", "b", 180, T0 + 180));
    assert_eq!(usages(&out)[0].charge, m("11"));
    assert_eq!(w.balance("tokyo"), m("978"));
}

#[test]
fn interim_debits_add_up_to_the_final_charge() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.start("contoso", "a", "ppm-us", LegKind::DialOut, AU, T0); // 0.07/min per second
    let mut balances = vec![w.balance("contoso")];
    for (elapsed, at) in [(61, 61), (125, 125), (125, 130), (100, 140), (450, 450)] {
        w.interim("contoso", "a", elapsed, T0 + at);
        balances.push(w.balance("contoso"));
    }
    // charge(61) = 0.07, charge(125) = 0.15, a repeated or lower interim debits nothing,
    // charge(450) = 0.53.
    assert_eq!(balances, vec![m("10"), m("9.93"), m("9.85"), m("9.85"), m("9.85"), m("9.47")]);
    let out = w.end("contoso", "a", 451, T0 + 451);
    let usage = &usages(&out)[0];
    assert_eq!(usage.charge, m("0.53")); // 0.526166.. -> 0.53
    assert_eq!(w.balance("contoso"), m("9.47"));
    assert_eq!(w.state("contoso").totals.usage_charges, m("0.53"));
}

#[test]
fn a_final_duration_below_an_interim_refunds_the_difference_and_is_flagged() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    w.interim("contoso", "a", 600, T0 + 600);
    assert_eq!(w.balance("contoso"), m("9.80"));
    let out = w.end("contoso", "a", 300, T0 + 600);
    let usage = &usages(&out)[0];
    assert_eq!((usage.charge, usage.flags.names()), (m("0.10"), vec!["interim_exceeded_final"]));
    assert_eq!(w.balance("contoso"), m("9.90"));
}

// ---------------------------------------------------------------------------------------
// RULES.md §5: communications credits.

#[test]
fn consumes_lots_fifo_and_forfeits_them_after_twelve_months() {
    let mut w = World::new();
    // 2025-11-01: 5.00; 2026-06-01: 20.00.
    w.fund_at("contoso", "5", 1_761_955_200);
    w.fund_at("contoso", "20", 1_780_272_000);
    // 2026-10-31: 3 minutes to NG = 0.75, from the oldest lot.
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, NG, 1_761_955_200 + 364 * 86_400);
    out.extend(w.end("contoso", "a", 180, 1_761_955_200 + 364 * 86_400 + 180));
    assert_eq!(usages(&out)[0].charge, m("0.75"));
    let lots: Vec<Money> = w.state("contoso").ledger.lots().map(|l| l.remaining).collect();
    assert_eq!(lots, vec![m("4.25"), m("20")]);
    // 2026-11-02: the first lot expired on 2026-11-01; the next event forfeits 4.25.
    let out = w.start("contoso", "b", "ppm-us", LegKind::DialOut, US, T0);
    let expired = credit_events(&out);
    assert_eq!(expired, vec![(CreditEventKind::LotExpired, m("4.25"), m("20"))]);
    assert_eq!(w.state("contoso").totals.forfeited, m("4.25"));
}

#[test]
fn requests_auto_recharge_once_per_crossing() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.auto_recharge = Some(AutoRecharge { trigger: m("5"), amount: m("25") }));
    w.fund("contoso", "6");
    // 6.00 - 1.25 (5 min NG) = 4.75 < 5: one request.
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, NG, T0);
    out.extend(w.end("contoso", "a", 300, T0 + 300));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::RechargeRequested, m("25"), m("4.75"))]);
    // Further debits below the trigger do not ask again.
    let mut out = w.start("contoso", "b", "ppm-us", LegKind::DialOut, NG, T0 + 400);
    out.extend(w.end("contoso", "b", 60, T0 + 460));
    assert!(credit_events(&out).is_empty());
    // The recharge arrives: back at/above the trigger re-arms it.
    let currency = Currency::from_code("USD").unwrap();
    let out = w.credit(
        "contoso",
        T0 + 500,
        CreditBody::RechargeSucceeded(LotFunding {
            lot_id: "r1".into(),
            amount: m("25"),
            currency,
            purchased_at: ts(T0 + 500),
        }),
    );
    assert_eq!(credit_events(&out), vec![(CreditEventKind::RechargeSucceeded, m("25"), m("29.50"))]);
    assert!(!w.state("contoso").recharge_pending);
    // The trigger raised above the balance: the next debit requests; then the request fails.
    w.tenant("contoso", |t| t.auto_recharge = Some(AutoRecharge { trigger: m("30"), amount: m("25") }));
    let out = w.call("contoso", "ppm-us", LegKind::DialOut, US, 60);
    assert!(allowed(out.0));
    let out = w.credit("contoso", T0 + 900, CreditBody::RechargeFailed { reason: "card declined".into() });
    let ev = credit_events(&out);
    assert_eq!(ev, vec![(CreditEventKind::RechargeFailed, m("25"), m("29.48"))]);
    // A failure is reported and does not re-arm: still below the trigger, this crossing had its
    // one request.
    let state = w.state("contoso");
    assert!(state.recharge_pending && state.recharge_failed);
    let mut out = w.start("contoso", "c", "ppm-us", LegKind::DialOut, NG, T0 + 1000);
    out.extend(w.end("contoso", "c", 60, T0 + 1060));
    assert!(credit_events(&out).is_empty(), "{:?}", credit_events(&out));
    // Funded back above the trigger another way: re-armed, and the next fall asks again.
    let out = w.fund_at("contoso", "5", T0 + 1100);
    assert_eq!(credit_events(&out), vec![(CreditEventKind::Funded, m("5"), m("34.23"))]);
    let state = w.state("contoso");
    assert!(!state.recharge_pending && !state.recharge_failed);
    let mut out = w.start("contoso", "d", "ppm-us", LegKind::DialOut, NG, T0 + 1200);
    out.extend(w.end("contoso", "d", 1200, T0 + 2400));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::RechargeRequested, m("25"), m("29.23"))]);
}

#[test]
fn an_auto_recharge_amount_is_whole_minor_units_of_the_tenant_currency() {
    // The request's amount is what the payment system pays back as a funding, and a funding
    // must be whole minor units: 25.005 USD or 1000.5 JPY would be requested, paid and then
    // refused, leaving the request pending for good.
    let recharge = |currency: &str, amount: &str| {
        let mut t = Tenant::new(TenantId::new("t").unwrap(), Currency::from_code(currency).unwrap(), "card");
        t.auto_recharge = Some(AutoRecharge { trigger: m("10"), amount: m(amount) });
        t.validated()
    };
    assert!(recharge("USD", "25.005").is_err());
    assert!(recharge("JPY", "1000.5").is_err());
    assert!(recharge("USD", "0").is_err());
    assert!(recharge("USD", "25.50").is_ok());
    assert!(recharge("JPY", "1000").is_ok());
}

#[test]
fn a_recharge_that_succeeds_after_a_failure_clears_it() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.auto_recharge = Some(AutoRecharge { trigger: m("5"), amount: m("25") }));
    w.fund("contoso", "6");
    // 6.00 - 1.25 = 4.75: requested, then failed.
    w.call("contoso", "ppm-us", LegKind::DialOut, NG, 300);
    w.credit("contoso", T0 + 400, CreditBody::RechargeFailed { reason: "card declined".into() });
    assert!(w.state("contoso").recharge_failed);
    // The payment system tried again and the money came: no longer failed, and re-armed as
    // the balance is back above the trigger.
    let lot = LotFunding { lot_id: "r1".into(), amount: m("25"), currency: usd(), purchased_at: ts(T0 + 500) };
    let out = w.credit("contoso", T0 + 500, CreditBody::RechargeSucceeded(lot));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::RechargeSucceeded, m("25"), m("29.75"))]);
    let state = w.state("contoso");
    assert!(!state.recharge_pending && !state.recharge_failed);
    // A failure while no request is out changes nothing but is reported.
    let out = w.credit("contoso", T0 + 600, CreditBody::RechargeFailed { reason: "late answer".into() });
    assert_eq!(credit_events(&out), vec![(CreditEventKind::RechargeFailed, m("25"), m("29.75"))]);
    let state = w.state("contoso");
    assert!(!state.recharge_pending && !state.recharge_failed);
}

#[test]
fn fires_low_balance_thresholds_once_per_downward_crossing() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.low_balance_thresholds = vec![m("2"), m("5")]);
    w.fund("contoso", "6");
    // 6 -> 4.75: crosses 5.
    w.call("contoso", "ppm-us", LegKind::DialOut, NG, 300);
    let state = w.state("contoso");
    assert_eq!(state.low_balance_fired, vec![m("5")]);
    // 4.75 -> 1.25: crosses 2 (and 5 does not fire again).
    let mut out = w.start("contoso", "x", "ppm-us", LegKind::DialOut, NG, T0 + 1000);
    out.extend(w.end("contoso", "x", 840, T0 + 1840));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::LowBalance, m("2"), m("1.25"))]);
    // Funding to 4.25 re-arms 2 but not 5; the next fall below 2 fires again.
    let out = w.fund("contoso", "3");
    assert_eq!(credit_events(&out), vec![(CreditEventKind::Funded, m("3"), m("4.25"))]);
    assert_eq!(w.state("contoso").low_balance_fired, vec![m("5")]);
    let mut out = w.start("contoso", "y", "ppm-us", LegKind::DialOut, NG, T0 + 2000);
    out.extend(w.end("contoso", "y", 600, T0 + 2600));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::LowBalance, m("2"), m("1.75"))]);
}

#[test]
fn depletes_at_zero_blocks_credit_funded_legs_and_restores_on_funding() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "0.50");
    // 2 minutes to NG = 0.50: balance exactly zero -> depleted.
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, NG, T0);
    out.extend(w.end("contoso", "a", 120, T0 + 120));
    assert_eq!(credit_events(&out), vec![(CreditEventKind::Depleted, Money::ZERO, Money::ZERO)]);
    // Credit-funded legs are now blocked: PPM dial-in, toll-free, credit dial-out.
    for (organizer, kind, number) in [
        ("ppm-us", LegKind::DialInToll, US_BRIDGE),
        ("sub-us", LegKind::DialInTollFree, US_TOLL_FREE_BRIDGE),
        ("ppm-us", LegKind::DialOut, US),
        ("sub-us", LegKind::DialOut, NG),
    ] {
        assert_eq!(
            w.call("contoso", organizer, kind, number, 60).0,
            Decision::Block(BlockReason::NoCredit),
            "{organizer} {kind:?}"
        );
    }
    // Not credit-funded: subscription toll dial-in, pooled dial-out with pool left, VoIP.
    assert!(allowed(w.call("contoso", "sub-us", LegKind::DialInToll, US_BRIDGE, 60).0));
    assert!(allowed(w.call("contoso", "sub-us", LegKind::DialOut, GB, 60).0));
    assert!(allowed(w.call("contoso", "ppm-us", LegKind::Voip, US, 60).0));
    // Funding restores.
    let out = w.fund("contoso", "5");
    let kinds: Vec<CreditEventKind> = credit_events(&out).iter().map(|c| c.0).collect();
    assert_eq!(kinds, vec![CreditEventKind::Funded, CreditEventKind::Restored]);
    assert!(allowed(w.call("contoso", "ppm-us", LegKind::DialOut, US, 60).0));
}

#[test]
fn credits_not_enabled_block_credit_funded_legs() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.tenant("contoso", |t| t.credits_enabled = false);
    assert_eq!(w.call("contoso", "ppm-us", LegKind::DialOut, US, 60).0, Decision::Block(BlockReason::NoCredit));
}

#[test]
fn refuses_funding_a_tenant_without_credits_enabled() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.credits_enabled = false);
    let usd = usd();
    let lot = LotFunding { lot_id: "lot-1".into(), amount: m("10"), currency: usd, purchased_at: ts(T0) };
    for (command_id, body) in [("c1", CreditBody::Fund(lot.clone())), ("c2", CreditBody::RechargeSucceeded(lot))] {
        let command =
            CreditCommand { command_id: command_id.into(), tenant_id: tid("contoso"), occurred_at: ts(T0), body };
        let err = w.try_apply(Input::Credit(command)).unwrap_err();
        assert_eq!(err.code(), "credits_disabled");
        assert_eq!(
            err.to_string(),
            format!(
                "tenant \"contoso\" does not have credits enabled: command \"{command_id}\" would fund a balance no leg can use"
            )
        );
    }
    assert_eq!(w.balance("contoso"), Money::ZERO);
    // An administrator's correction still applies.
    let out = w.credit("contoso", T0, CreditBody::Adjust { amount: m("5"), currency: usd, reason: "refund".into() });
    assert_eq!(credit_events(&out), vec![(CreditEventKind::Adjusted, m("5"), m("5"))]);
}

#[test]
fn finish_policy_lets_started_legs_complete_into_negative() {
    let mut w = World::new();
    w.fund("contoso", "0.30");
    let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, NG, T0);
    // 0.30 buys one minute at 0.25: informational under finish.
    assert_eq!(
        decisions(&out),
        vec![Decision::Allow { max_affordable_seconds: 60, capability: Some(Capability::Ppm) }]
    );
    let out = w.end("contoso", "a", 600, T0 + 600);
    assert_eq!(usages(&out)[0].charge, m("2.50"));
    assert_eq!(w.balance("contoso"), m("-2.20"));
    assert!(decisions(&out).is_empty());
}

#[test]
fn disconnect_policy_cuts_in_progress_credit_funded_legs_below_the_overdraft() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.cutoff = CutoffPolicy::Disconnect;
        t.overdraft_limit = m("0.50");
    });
    w.fund("contoso", "1");
    // (1.00 + 0.50 overdraft) buys 6 minutes at 0.25.
    let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, NG, T0);
    assert_eq!(
        decisions(&out),
        vec![Decision::Allow { max_affordable_seconds: 360, capability: Some(Capability::Ppm) }]
    );
    w.start("contoso", "b", "ppm-us", LegKind::DialOut, US, T0);
    w.start("contoso", "v", "ppm-us", LegKind::Voip, US, T0);
    // 4 minutes: 1.00 -> 0.00 (depleted), still within the overdraft.
    let out = w.interim("contoso", "a", 240, T0 + 240);
    assert!(decisions(&out).is_empty());
    // 7 minutes: -0.75 < -0.50: disconnect both credit-funded legs, once.
    let out = w.interim("contoso", "a", 420, T0 + 420);
    assert_eq!(decisions(&out), vec![Decision::Disconnect { balance: m("-0.75"), currency: usd() }; 2]);
    let out = w.interim("contoso", "a", 480, T0 + 480);
    assert!(decisions(&out).is_empty());
    // Each leg is charged for what its controller reports.
    let out = w.end("contoso", "a", 485, T0 + 485);
    assert_eq!(usages(&out)[0].charge, m("2.25"));
    let out = w.end("contoso", "b", 430, T0 + 430);
    assert_eq!(usages(&out)[0].charge, m("0.16"));
    assert_eq!(w.balance("contoso"), m("-1.41"));
}

/// An unpriced leg is free, but credits would pay for it: at its start it is blocked at zero
/// like a priced one, and at the cutoff it is disconnected like one. A pay-per-minute
/// organizer's always; a pool-eligible one once its month's pool is used up.
#[test]
fn disconnect_policy_cuts_the_unpriced_legs_credits_would_pay_for() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.cutoff = CutoffPolicy::Disconnect;
        t.subscription_licences = 1;
    });
    w.fund_at("contoso", "1", DEC_1);
    let legs = |out: &[Output]| -> Vec<String> {
        let mut legs: Vec<String> = out
            .iter()
            .filter_map(|o| match o {
                Output::Decision(d) if matches!(d.decision, Decision::Disconnect { .. }) => Some(d.leg_id.to_string()),
                _ => None,
            })
            .collect();
        legs.sort();
        legs
    };
    // December's card prices neither Argentina nor Germany: both legs are unpriced, the first
    // paid by credits if it had a price, the second by the pool.
    let at = DEC_1 + 60;
    let unpriced = Decision::Allow { max_affordable_seconds: MAX_LEG_SECONDS, capability: Some(Capability::Unpriced) };
    assert_eq!(decisions(&w.start("contoso", "free-ppm", "ppm-us", LegKind::DialOut, AR, at)), vec![unpriced]);
    assert_eq!(decisions(&w.start("contoso", "free-pool", "sub-us", LegKind::DialOut, DE, at)), vec![unpriced]);
    w.start("contoso", "paid", "ppm-us", LegKind::DialOut, US, at);
    // 60 minutes at 0.025 = 1.50: -0.50, past the cutoff. The pool has its minutes, so the
    // pool-eligible leg goes on.
    let out = w.interim("contoso", "paid", 3600, at + 3600);
    assert_eq!(w.balance("contoso"), m("-0.50"));
    assert_eq!(legs(&out), ["free-ppm", "paid"]);
    // An hour to the UK uses December's pool up; the next debit past the cutoff cuts the
    // pool-eligible unpriced leg too, and no leg twice.
    let mut out = w.start("contoso", "pooled", "sub-us", LegKind::DialOut, GB, at + 3600);
    out.extend(w.end("contoso", "pooled", 3600, at + 7200));
    assert_eq!(usages(&out)[0].pool_seconds, 3600);
    let out = w.interim("contoso", "paid", 3660, at + 7260);
    assert_eq!(legs(&out), ["free-pool"]);
    // Each is still charged what its controller reports: nothing.
    for leg in ["free-ppm", "free-pool"] {
        let usage = usages(&w.end("contoso", leg, 7300, at + 7300)).remove(0);
        assert_eq!((usage.capability, usage.charge), (Capability::Unpriced, Money::ZERO), "{leg}");
    }
}

#[test]
fn disconnect_policy_blocks_a_leg_that_cannot_afford_its_first_increment() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.cutoff = CutoffPolicy::Disconnect);
    w.fund("contoso", "0.20");
    assert_eq!(w.call("contoso", "ppm-us", LegKind::DialOut, NG, 60).0, Decision::Block(BlockReason::NoCredit));
    let (d, _) = w.call("contoso", "ppm-us", LegKind::DialOut, US, 60);
    assert_eq!(d, Decision::Allow { max_affordable_seconds: 600, capability: Some(Capability::Ppm) });
}

#[test]
fn reports_the_maximum_affordable_duration_at_leg_start() {
    // (balance, destination, max seconds): the charge is rounded before it is compared, so
    // FR: 0.10 + 29 x 0.0312 = 1.0048 -> 1.00; AU 1/1: 12 s = 0.014 -> 0.01; JP 60/1: 69 s = 0.1035 -> 0.10.
    let table = [("1", US, 3000), ("1", NG, 240), ("1", FR, 1740), ("0.01", AU, 12), ("0.10", JP, 69)];
    for (balance, number, max) in table {
        let mut w = World::new();
        w.fund("contoso", balance);
        let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, number, T0);
        assert_eq!(
            decisions(&out),
            vec![Decision::Allow { max_affordable_seconds: max, capability: Some(Capability::Ppm) }],
            "{balance} {number}"
        );
    }
}

#[test]
fn reports_a_pool_legs_affordable_duration_with_its_credit_part_charged_by_the_second() {
    // A subscription organizer's Zone A dial-out with one pooled minute left (59 used on GB).
    // The credit part of a pool leg is charged on its billable seconds past the pool, not on
    // increments of its own: JP at 0.09/min, 60/1, with 0.01 of credit: 69 s is 60 pooled + 9
    // charged, 0.0135 -> 0.01, which fits; 70 s is 0.015 -> 0.02, which does not. GB at 0.04,
    // 60/60, with 0.02: 120 s is 60 + 60 charged, 0.04, which does not fit, so 60.
    for (credit, number, max) in [("0.01", JP, 69), ("0.02", GB, 60), ("0.04", GB, 120)] {
        let mut w = World::new();
        w.tenant("contoso", |t| t.subscription_licences = 1);
        w.fund("contoso", credit);
        w.call("contoso", "sub-us", LegKind::DialOut, GB, 59 * 60);
        let out = w.start("contoso", "y", "sub-us", LegKind::DialOut, number, T0 + 3600);
        assert_eq!(
            decisions(&out),
            vec![Decision::Allow { max_affordable_seconds: max, capability: Some(Capability::Pool) }],
            "{credit} {number}"
        );
        // What the leg is charged at that duration fits, and a second more does not.
        let mut at_max = w.clone();
        let usage = usages(&at_max.end("contoso", "y", max, T0 + 3600 + i64::from(max))).remove(0);
        assert_eq!((usage.pool_seconds, usage.charge <= m(credit)), (60, true), "{credit} {number}");
        let usage = usages(&w.end("contoso", "y", max + 1, T0 + 3601 + i64::from(max))).remove(0);
        assert!(usage.charge > m(credit), "{credit} {number}: {}", usage.charge);
    }
    // With credits disabled the pool alone pays: the longest lattice point within its minute.
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.call("contoso", "sub-us", LegKind::DialOut, GB, 59 * 60);
    w.tenant("contoso", |t| t.credits_enabled = false);
    let out = w.start("contoso", "y", "sub-us", LegKind::DialOut, JP, T0 + 3600);
    assert_eq!(
        decisions(&out),
        vec![Decision::Allow { max_affordable_seconds: 60, capability: Some(Capability::Pool) }]
    );
}

#[test]
fn manual_adjustments_add_a_lot_or_debit_fifo() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let usd = Currency::from_code("USD").unwrap();
    let out =
        w.credit("contoso", T0, CreditBody::Adjust { amount: m("-10.50"), currency: usd, reason: "chargeback".into() });
    assert_eq!(
        credit_events(&out),
        vec![
            (CreditEventKind::Adjusted, m("-10.50"), m("-0.50")),
            (CreditEventKind::Depleted, Money::ZERO, m("-0.50"))
        ]
    );
    let out =
        w.credit("contoso", T0 + 1, CreditBody::Adjust { amount: m("2"), currency: usd, reason: "goodwill".into() });
    let kinds: Vec<(CreditEventKind, Money)> = credit_events(&out).iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(kinds, vec![(CreditEventKind::Adjusted, m("1.50")), (CreditEventKind::Restored, m("1.50"))]);
    let totals = &w.state("contoso").totals;
    assert_eq!((totals.funded, totals.adjusted), (m("10"), m("-8.50")));
}

impl World {
    /// Applies an input with the debit trail; returns its movements as (kind, amount, balance
    /// after, leg, lot).
    fn traced(&mut self, input: Input) -> Vec<(MovementKind, Money, Money, String, String)> {
        let state = self.states.entry(input.tenant_id().to_string()).or_default();
        let (mut out, mut movements) = (Vec::new(), Vec::new());
        self.rater.apply_traced(&self.reference, state, input, &mut out, &mut movements).unwrap();
        movements.into_iter().map(|m| (m.kind, m.amount, m.balance_after, m.leg_id, m.lot_id)).collect()
    }

    fn credit_input(&mut self, tenant: &str, at: i64, body: CreditBody) -> Input {
        let command_id = self.id();
        Input::Credit(CreditCommand {
            command_id: command_id.into(),
            tenant_id: tid(tenant),
            occurred_at: ts(at),
            body,
        })
    }
}

#[test]
fn the_debit_trail_has_one_movement_per_ledger_change_adding_up_to_the_balance() {
    use MovementKind::*;
    let mut w = World::new();
    let usd = usd();
    let s = |v: &str| v.to_owned();
    let mut trail = Vec::new();
    let lot = |id: &str, amount: &str, at: i64| {
        CreditBody::Fund(LotFunding { lot_id: id.into(), amount: m(amount), currency: usd, purchased_at: ts(at) })
    };
    let input = w.credit_input("contoso", T0 - 3600, lot("lot-1", "10.00", T0 - 3600));
    trail.extend(w.traced(input));
    // A lot bought 13 months ago is funded and forfeited at once.
    let input = w.credit_input("contoso", T0 - 1800, lot("lot-old", "5.00", T0 - 400 * 86_400));
    trail.extend(w.traced(input));
    // A leg debited at an interim (3 min at 0.25), then refunded by its shorter end (2 min).
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(NG)) };
    let input = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    trail.extend(w.traced(input));
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 180, LegBody::Interim { elapsed_seconds: 180 });
    trail.extend(w.traced(input));
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(100), cause: DisconnectCause::Normal };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 200, LegBody::Ended(ended));
    trail.extend(w.traced(input));
    for amount in ["-1.00", "2.00"] {
        let body = CreditBody::Adjust { amount: m(amount), currency: usd, reason: "correction".into() };
        let input = w.credit_input("contoso", T0 + 300, body);
        trail.extend(w.traced(input));
    }
    assert_eq!(
        trail,
        vec![
            (Funding, m("10.00"), m("10.00"), s(""), s("lot-1")),
            (Funding, m("5.00"), m("15.00"), s(""), s("lot-old")),
            (Forfeit, m("-5.00"), m("10.00"), s(""), s("lot-old")),
            (Debit, m("-0.75"), m("9.25"), s("a"), s("")),
            (Debit, m("0.25"), m("9.50"), s("a"), s("")),
            (Adjustment, m("-1.00"), m("8.50"), s(""), s("")),
            (Adjustment, m("2.00"), m("10.50"), s(""), s("")),
        ]
    );
    let sum: Money = trail.iter().map(|t| t.1).sum();
    assert_eq!((sum, w.balance("contoso")), (m("10.50"), m("10.50")));
}

#[test]
fn numbers_ledger_movements_by_the_input_that_caused_them() {
    let mut w = World::new();
    let usd = usd();
    let body = CreditBody::Fund(LotFunding {
        lot_id: "old".into(),
        amount: m("5"),
        currency: usd,
        purchased_at: ts(T0 - 400 * 86_400),
    });
    let input = Input::Credit(CreditCommand {
        command_id: "cmd-7".into(),
        tenant_id: tid("contoso"),
        occurred_at: ts(T0),
        body,
    });
    let state = w.states.entry("contoso".into()).or_default();
    let (mut out, mut movements) = (Vec::new(), Vec::new());
    w.rater.apply_traced(&w.reference, state, input.clone(), &mut out, &mut movements).unwrap();
    let ids: Vec<&str> = movements.iter().map(|m| m.movement_id.as_str()).collect();
    assert_eq!(ids, vec!["contoso/cmd-7/1", "contoso/cmd-7/2"]);
    // Tracing changes nothing else: the same outputs and state as without it.
    let mut plain = World::new();
    let mut plain_out = Vec::new();
    let plain_state = plain.states.entry("contoso".into()).or_default();
    plain.rater.apply(&plain.reference, plain_state, input, &mut plain_out).unwrap();
    assert_eq!((&out, w.state("contoso")), (&plain_out, plain.state("contoso")));
}

#[test]
fn numbers_credit_events_per_tenant_without_gaps() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.low_balance_thresholds = vec![m("5")]);
    let mut seqs = Vec::new();
    for out in [w.fund("contoso", "6"), w.call_outputs("contoso", NG, 300), w.fund("contoso", "1")] {
        seqs.extend(
            out.iter()
                .filter_map(|o| if let Output::Credit(c) = o { Some((c.sequence, c.credit_event_id())) } else { None }),
        );
    }
    assert_eq!(
        seqs,
        vec![
            (1, "contoso/credit/1".to_string()),
            (2, "contoso/credit/2".to_string()),
            (3, "contoso/credit/3".to_string())
        ]
    );
}

impl World {
    fn call_outputs(&mut self, tenant: &str, number: &str, seconds: u32) -> Vec<Output> {
        let leg = format!("leg-{}", self.next_id + 1);
        let mut out = self.start(tenant, &leg, "ppm-us", LegKind::DialOut, number, T0);
        out.extend(self.end(tenant, &leg, seconds, T0 + i64::from(seconds)));
        out
    }
}

// ---------------------------------------------------------------------------------------
// RULES.md §6: the usage record.

#[test]
fn usage_records_carry_what_a_usage_report_row_needs() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let mut out = w.start("contoso", "leg-42", "ppm-us", LegKind::CallMeAt, CA, T0);
    out.extend(w.end("contoso", "leg-42", 95, T0 + 95));
    let u = &usages(&out)[0];
    assert_eq!(u.usage_id(), "contoso/leg-42");
    assert_eq!(
        (u.call_id.as_str(), u.conference_id.as_str(), u.tenant_id.as_str()),
        ("call-leg-42", "meeting-1", "contoso")
    );
    assert_eq!((u.call_type, u.number_type, u.international), (CallType::ConfOut, NumberType::Toll, true));
    assert_eq!((u.destination_country.code(), u.destination_number.to_string().as_str()), ("CA", CA));
    assert_eq!(
        (u.started_at.to_string(), u.ended_at.to_string()),
        ("2026-11-02T09:00:00Z".into(), "2026-11-02T09:01:35Z".into())
    );
    assert_eq!((u.duration_seconds, u.billable_seconds, u.charge, u.connection_fee), (95, 120, m("0.06"), Money::ZERO));
    assert_eq!((u.capability, u.rate_card_id.as_str(), u.rate_card_version.as_str()), (Capability::Ppm, "usd", "v1"));
    assert_eq!((u.price_per_minute, u.outcome, u.balance_after), (m("0.03"), UsageOutcome::Rated, m("9.94")));
    let decision_ids: Vec<String> =
        out.iter().filter_map(|o| if let Output::Decision(d) = o { Some(d.decision_id()) } else { None }).collect();
    assert_eq!(decision_ids, vec!["contoso/leg-42/allow"]);
}

// ---------------------------------------------------------------------------------------
// RULES.md §7: sanity limits, and input anomalies.

#[test]
fn rates_legs_over_24_hours_up_to_the_limit_and_flags_them() {
    let mut w = World::new();
    w.fund("contoso", "100");
    let usage = w.call("contoso", "ppm-us", LegKind::DialOut, US, 90_000).1.unwrap();
    assert_eq!((usage.duration_seconds, usage.billable_seconds, usage.charge), (86_400, 86_400, m("28.80")));
    assert_eq!(usage.flags.names(), vec!["over_max_duration"]);
}

#[test]
fn refuses_an_end_before_the_start_without_changing_state() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    let before = w.state("contoso").clone();
    let ended = LegEnded { duration: LegDuration::EndedAt(ts(T0 - 1)), cause: DisconnectCause::Normal };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 5, LegBody::Ended(ended));
    let err = w.try_apply(input).unwrap_err();
    assert_eq!(err.code(), "end_before_start");
    assert_eq!(w.state("contoso"), &before);
    // So is an `ended` stamped before the start, whatever connected seconds it reports.
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(600), cause: DisconnectCause::Normal };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 - 3600, LegBody::Ended(ended));
    assert_eq!(w.try_apply(input).unwrap_err().code(), "end_before_start");
    assert_eq!(w.state("contoso"), &before);
    // One that arrived before the start and waited for it is dropped when the start shows it
    // bad, and the leg stays open for a valid end.
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(600), cause: DisconnectCause::Normal };
    let parked = w.leg_event("contoso", "b", "ppm-us", T0 - 60, LegBody::Ended(ended));
    assert!(w.apply(parked).is_empty());
    let out = w.start("contoso", "b", "ppm-us", LegKind::DialOut, US, T0);
    assert!(usages(&out).is_empty());
    let state = w.state("contoso");
    assert!(state.open_legs.contains_key("b") && state.parked_ends.is_empty());
    assert_eq!(state.totals.orphan_ends_dropped, 1);
    // An end instant after the start: duration rounded up to the second.
    let ended = LegEnded {
        duration: LegDuration::EndedAt(Timestamp::new(T0 + 61, 1).unwrap()),
        cause: DisconnectCause::Normal,
    };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 62, LegBody::Ended(ended));
    let usage = &usages(&w.apply(input))[0];
    assert_eq!((usage.duration_seconds, usage.billable_seconds), (62, 120));
}

#[test]
fn unanswered_legs_bill_nothing_whatever_the_duration() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.start("contoso", "a", "ppm-us", LegKind::DialOut, FR, T0);
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(30), cause: DisconnectCause::NoAnswer };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 30, LegBody::Ended(ended));
    let usage = &usages(&w.apply(input))[0];
    assert_eq!((usage.billable_seconds, usage.charge, usage.connection_fee), (0, Money::ZERO, Money::ZERO));
}

#[test]
fn duplicates_have_no_effect_and_conflicts_are_refused() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let input = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    assert_eq!(w.try_apply(input.clone()).unwrap().0, Applied::Processed);
    let state = w.state("contoso").clone();
    assert_eq!(w.try_apply(input.clone()).unwrap(), (Applied::Duplicate, vec![]));
    assert_eq!(w.state("contoso"), &state);
    // Same id, different content: refused, state unchanged.
    let Input::Leg(mut changed) = input else { unreachable!() };
    changed.occurred_at = ts(T0 + 1);
    let err = w.try_apply(Input::Leg(changed.clone())).unwrap_err();
    assert_eq!(err.code(), "duplicate_conflict");
    assert_eq!(w.state("contoso"), &state);
    // A second `started` for the same leg under a new id: refused.
    changed.event_id = "other".into();
    assert_eq!(w.try_apply(Input::Leg(changed)).unwrap_err().code(), "leg_already_started");
}

#[test]
fn an_end_before_its_start_waits_and_is_rated_when_the_start_arrives() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(125), cause: DisconnectCause::Normal };
    let input = w.leg_event("contoso", "a", "ppm-us", T0 + 125, LegBody::Ended(ended));
    assert_eq!(w.try_apply(input).unwrap(), (Applied::Parked, vec![]));
    let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    assert_eq!(decisions(&out).len(), 1);
    let usage = &usages(&out)[0];
    assert_eq!((usage.billable_seconds, usage.charge), (180, m("0.06")));
    // Late events for the closed leg are ignored.
    let (applied, out) = {
        let input = w.leg_event("contoso", "a", "ppm-us", T0 + 200, LegBody::Interim { elapsed_seconds: 500 });
        w.try_apply(input).unwrap()
    };
    assert_eq!((applied, out.len()), (Applied::IgnoredAfterClose, 0));
    // An interim for a leg never started is dropped (the ended carries the total).
    let input = w.leg_event("contoso", "zz", "ppm-us", T0, LegBody::Interim { elapsed_seconds: 5 });
    assert_eq!(w.try_apply(input).unwrap().0, Applied::IgnoredBeforeStart);
}

#[test]
fn refuses_unknown_tenants_and_organizers_and_foreign_currencies() {
    let mut w = World::new();
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let input = w.leg_event("nobody", "a", "ppm-us", T0, LegBody::Started(started));
    assert_eq!(w.try_apply(input).unwrap_err().code(), "unknown_tenant");
    let input = w.leg_event("contoso", "a", "ghost", T0, LegBody::Started(started));
    assert_eq!(w.try_apply(input).unwrap_err().code(), "unknown_organizer");
    let eur = Currency::from_code("EUR").unwrap();
    let fund = Input::Credit(CreditCommand {
        command_id: "c".into(),
        tenant_id: tid("contoso"),
        occurred_at: ts(T0),
        body: CreditBody::Fund(LotFunding { lot_id: "l".into(), amount: m("5"), currency: eur, purchased_at: ts(T0) }),
    });
    assert_eq!(w.try_apply(fund).unwrap_err().code(), "currency_mismatch");
    // Money below the minor unit cannot be funded.
    let usd = Currency::from_code("USD").unwrap();
    let fund = Input::Credit(CreditCommand {
        command_id: "c2".into(),
        tenant_id: tid("contoso"),
        occurred_at: ts(T0),
        body: CreditBody::Fund(LotFunding {
            lot_id: "l".into(),
            amount: m("5.005"),
            currency: usd,
            purchased_at: ts(T0),
        }),
    });
    assert_eq!(w.try_apply(fund).unwrap_err().code(), "invalid");
    // A lot purchased after the command that funds it: a wrong date, which would make the lot
    // outlive its 12 months and be spent after lots bought later.
    let four_years = 4 * 365 * 86_400;
    let fund = Input::Credit(CreditCommand {
        command_id: "c3".into(),
        tenant_id: tid("contoso"),
        occurred_at: ts(T0),
        body: CreditBody::Fund(LotFunding {
            lot_id: "l".into(),
            amount: m("5"),
            currency: usd,
            purchased_at: ts(T0 + four_years),
        }),
    });
    let refused = w.try_apply(fund).unwrap_err();
    assert_eq!(
        (refused.code(), refused.to_string()),
        (
            "invalid",
            "invalid input: command \"c3\": lot purchased at 2030-11-01T09:00:00Z, after the command itself (2026-11-02T09:00:00Z)"
                .to_owned()
        )
    );
    assert_eq!(w.balance("contoso"), Money::ZERO);
    // Five minutes after the command is the clocks of two systems, not a wrong date: funded.
    let skewed = |id: &str, after: i64| {
        Input::Credit(CreditCommand {
            command_id: id.into(),
            tenant_id: tid("contoso"),
            occurred_at: ts(T0),
            body: CreditBody::Fund(LotFunding {
                lot_id: id.into(),
                amount: m("5"),
                currency: usd,
                purchased_at: ts(T0 + after),
            }),
        })
    };
    assert_eq!(w.try_apply(skewed("c4", 301)).unwrap_err().code(), "invalid");
    w.apply(skewed("c5", 300));
    assert_eq!(w.balance("contoso"), m("5"));
}

/// Amounts carry no currency: a tenant republished in another currency while it holds money
/// would have its balance read one for one in the new one (100 USD spent as 100 JPY). Its
/// inputs are refused until the currency is set back; a tenant holding nothing may change.
#[test]
fn a_tenant_whose_currency_changes_while_it_holds_money_is_refused_until_set_back() {
    let mut w = World::new();
    w.fund("contoso", "100");
    let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    assert!(matches!(decisions(&out)[0], Decision::Allow { .. }));
    w.tenant("contoso", |t| t.currency = Currency::from_code("JPY").unwrap());
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(600), cause: DisconnectCause::Normal };
    let end = w.leg_event("contoso", "a", "", T0 + 600, LegBody::Ended(ended));
    let refused = w.try_apply(end.clone()).unwrap_err();
    assert_eq!(refused.code(), "currency_changed");
    assert_eq!(
        refused.to_string(),
        "tenant \"contoso\" holds money in USD, but its reference now says JPY: set the currency back"
    );
    let yen = Input::Credit(CreditCommand {
        command_id: "jpy-fund".into(),
        tenant_id: tid("contoso"),
        occurred_at: ts(T0 + 700),
        body: CreditBody::Fund(LotFunding {
            lot_id: "jpy".into(),
            amount: m("1000"),
            currency: Currency::from_code("JPY").unwrap(),
            purchased_at: ts(T0 + 700),
        }),
    });
    assert_eq!(w.try_apply(yen).unwrap_err().code(), "currency_changed");
    assert_eq!((w.balance("contoso"), w.state("contoso").currency), (m("100"), Some(usd())));

    // Set back, the end is rated in dollars: 10 minutes at 0.02.
    w.tenant("contoso", |t| t.currency = usd());
    let usage = usages(&w.apply(end)).pop().unwrap();
    assert_eq!((usage.charge, usage.currency, w.balance("contoso")), (m("0.20"), usd(), m("99.80")));

    // A tenant that holds nothing yet (a leg blocked for no credit) takes the new currency.
    let blocked = w.start("tokyo", "t", "taro", LegKind::DialOut, JP, T0);
    assert_eq!(decisions(&blocked)[0], Decision::Block(BlockReason::NoCredit));
    assert_eq!(w.state("tokyo").currency, Some(Currency::from_code("JPY").unwrap()));
    w.tenant("tokyo", |t| t.currency = usd());
    w.fund("tokyo", "10");
    assert_eq!((w.balance("tokyo"), w.state("tokyo").currency), (m("10"), Some(usd())));
}

/// Every id made from a tenant's id starts `<tenant>/`: a `/` inside a tenant id would make
/// tenant `a/b` with leg `c` and tenant `a` with leg `b/c` share the usage id `a/b/c`.
#[test]
fn a_tenant_id_with_a_slash_is_refused() {
    let refused = TenantId::new("a/b").unwrap_err();
    assert_eq!(
        (refused.code(), refused.to_string()),
        (
            "invalid",
            "invalid input: tenant id \"a/b\" contains '/', which separates the tenant from the rest of the ids made from it"
                .to_owned()
        )
    );
    assert_eq!(TenantId::new("a").unwrap().as_str(), "a");
}

#[test]
fn a_rate_card_in_another_currency_leaves_legs_unpriced_and_flagged() {
    let mut w = World::new();
    w.fund("mismatch", "10");
    let usage = w.call("mismatch", "eve", LegKind::DialOut, US, 60).1.unwrap();
    assert_eq!((usage.capability, usage.charge), (Capability::Unpriced, Money::ZERO));
    assert_eq!(usage.flags.names(), vec!["unpriced", "currency_mismatch"]);
}

#[test]
fn refuses_inputs_older_than_the_retention_window_so_a_replay_cannot_charge_twice() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    out.extend(w.end("contoso", "a", 60, T0 + 60));
    assert_eq!(usages(&out)[0].charge, m("0.02"));
    // Three days later the ids of leg a are forgotten...
    let later = T0 + 3 * 86_400;
    w.call_at("contoso", "b", later);
    // ...so a replay of leg a is refused as too late instead of being rated again.
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let replay = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    let err = w.try_apply(replay).unwrap_err();
    assert_eq!(err.code(), "too_late");
    assert_eq!(err.to_string(), "event time 2026-11-02T09:00:00Z is before the retention horizon 2026-11-03T09:01:00Z");
    assert_eq!(w.balance("contoso"), m("9.96"));
    // Exactly at the horizon is still accepted.
    let at_horizon =
        w.leg_event("contoso", "c", "ppm-us", later + 60 - 48 * 3600, LegBody::Interim { elapsed_seconds: 1 });
    assert_eq!(w.try_apply(at_horizon).unwrap().0, Applied::IgnoredBeforeStart);
}

/// A retention window made longer (48 h to 72 h, say, and the workers restarted) does not
/// bring back the ids forgotten under the shorter one: an input between the two horizons is
/// still refused as too late until the tenant's event time has moved past what was forgotten.
#[test]
fn a_longer_retention_window_still_refuses_what_the_shorter_one_forgot() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let mut out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    out.extend(w.end("contoso", "a", 60, T0 + 60));
    assert_eq!(usages(&out)[0].charge, m("0.02"));
    // 60 h later, under 48 h: leg a is forgotten.
    let later = T0 + 60 * 3600;
    w.call_at("contoso", "b", later);
    assert_eq!(w.state("contoso").closed_legs.kept_at("a"), None);
    w.rater = Rater::new(RatingConfig { retention_seconds: 72 * 3600 });
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let replay = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    let err = w.try_apply(replay).unwrap_err();
    assert_eq!(err.to_string(), "event time 2026-11-02T09:00:00Z is before the retention horizon 2026-11-02T21:01:00Z");
    assert_eq!(w.balance("contoso"), m("9.96"));
    // A new input within 72 h but before what 48 h forgot is refused too; one after it is not.
    let c = w.leg_event("contoso", "c", "ppm-us", later + 60 - 48 * 3600 - 1, LegBody::Interim { elapsed_seconds: 1 });
    assert_eq!(w.try_apply(c).unwrap_err().code(), "too_late");
    let d = w.leg_event("contoso", "d", "ppm-us", later + 60 - 48 * 3600, LegBody::Interim { elapsed_seconds: 1 });
    assert_eq!(w.try_apply(d).unwrap().0, Applied::IgnoredBeforeStart);
}

/// A late input is remembered from the tenant's newest event time, not its own: it goes at the
/// back of the retention window instead of among the newer ids, and its replay stays a
/// duplicate for as long as it is remembered (its own time in the window, and longer by how
/// late it came), then is refused as too late. Never applied twice either way.
#[test]
fn a_late_input_is_remembered_from_the_newest_time_and_its_replay_stays_a_duplicate() {
    let mut w = World::new();
    w.fund("contoso", "10");
    w.call_at("contoso", "b", T0 + 3600);
    // Leg a started an hour before the tenant's newest event, and is sent only now.
    let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(num(US)) };
    let late = w.leg_event("contoso", "a", "ppm-us", T0, LegBody::Started(started));
    assert_eq!(w.try_apply(late.clone()).unwrap().0, Applied::Processed);
    let kept = |w: &World, id: &str| {
        let state = w.state("contoso");
        state.seen.kept_at(id).or_else(|| state.closed_legs.kept_at(id))
    };
    let Input::Leg(event) = &late else { unreachable!() };
    assert_eq!(kept(&w, event.event_id.as_str()), Some(ts(T0 + 3660)), "kept from the newest time, the end of leg b");
    let ended = LegEnded { duration: LegDuration::ConnectedSeconds(60), cause: DisconnectCause::Normal };
    let end = w.leg_event("contoso", "a", "", T0 + 60, LegBody::Ended(ended));
    assert_eq!(usages(&w.apply(end))[0].charge, m("0.02"));
    assert_eq!(kept(&w, "a"), Some(ts(T0 + 3660)), "the closed leg too");
    // 48 h after the late start's own time, but not after the time it is kept from: a
    // duplicate, no effect.
    w.call_at("contoso", "c", T0 + 48 * 3600 + 1800);
    let balance = w.balance("contoso");
    assert_eq!(w.try_apply(late.clone()).unwrap(), (Applied::Duplicate, vec![]));
    // Once that time leaves the window too, the replay is refused as too late.
    w.call_at("contoso", "d", T0 + 3660 + 48 * 3600);
    assert_eq!(kept(&w, event.event_id.as_str()), None);
    assert_eq!(w.try_apply(late).unwrap_err().code(), "too_late");
    assert_eq!(w.balance("contoso"), balance - m("0.02"), "leg d alone");
}

impl World {
    fn call_at(&mut self, tenant: &str, leg: &str, at: i64) {
        self.start(tenant, leg, "ppm-us", LegKind::DialOut, US, at);
        self.end(tenant, leg, 60, at + 60);
    }
}

/// Around midnight at the end of a month, legs of both months are rated in whatever order
/// their events arrive. Each draws from the pool of its own month: a late leg of the month
/// before neither starts that month's pool afresh nor makes the new month's forget what it used.
#[test]
fn a_late_leg_draws_from_its_own_months_pool() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "10");
    let leg = |w: &mut World, id: &str, at: i64, seconds: u32| {
        let mut out = w.start("contoso", id, "sub-us", LegKind::DialOut, GB, at);
        out.extend(w.end("contoso", id, seconds, at + i64::from(seconds)));
        let usage = &usages(&out)[0];
        (usage.pool_seconds, usage.charge)
    };
    // November's 60 minutes used up an hour before the month ends.
    assert_eq!(leg(&mut w, "n", DEC_1 - 7200, 3600), (3600, Money::ZERO));
    // December: 30 of its 60 minutes.
    assert_eq!(leg(&mut w, "a", DEC_1 + 300, 1800), (1800, Money::ZERO));
    // A November leg whose events arrive now: November has nothing left (10 minutes at 0.04).
    assert_eq!(leg(&mut w, "b", DEC_1 - 1800, 600), (0, m("0.40")));
    // December again: the 30 minutes it has left, the rest at December's 0.045.
    assert_eq!(leg(&mut w, "c", DEC_1 + 3000, 2400), (1800, m("0.45")));
    let state = w.state("contoso");
    assert_eq!((state.pool.month, state.pool.used_minutes), (YearMonth { year: 2026, month: 12 }, 60));
    let earlier: Vec<(YearMonth, u32)> = state.earlier_pools.iter().map(|p| (p.month, p.used_minutes)).collect();
    assert_eq!(earlier, vec![(YearMonth { year: 2026, month: 11 }, 60)]);
    // No November input is rated 48 h into December, but the end of a leg started on 30
    // November can still draw from November's pool; a day later none can, and it goes.
    w.fund_at("contoso", "1", DEC_1 + 2 * 86_400);
    assert_eq!(w.state("contoso").earlier_pools.len(), 1);
    w.fund_at("contoso", "1", DEC_1 + 3 * 86_400);
    assert_eq!(w.state("contoso").earlier_pools, vec![]);
}

/// A leg across midnight at the end of a month draws all its pool minutes from the month it
/// started in, as its price comes from the rate card in force at its start: an interim before
/// midnight changes nothing in what it costs, nor in what the new month's pool has left.
#[test]
fn a_leg_across_the_end_of_a_month_draws_from_the_month_it_started_in() {
    let rate = |interim: bool| {
        let mut w = World::new();
        w.tenant("contoso", |t| t.subscription_licences = 1);
        w.fund("contoso", "10");
        // 61 minutes to the UK from 23:00 on 30 November: November's 60 are pooled, the 61st
        // is paid at November's 0.04.
        w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, DEC_1 - 3600);
        if interim {
            w.interim("contoso", "a", 3599, DEC_1 - 1);
        }
        let a = usages(&w.end("contoso", "a", 3660, DEC_1 + 60))[0].clone();
        // December's 60 minutes are all there: an hour in December is pooled in full.
        let mut out = w.start("contoso", "d", "sub-us", LegKind::DialOut, GB, DEC_1 + 600);
        out.extend(w.end("contoso", "d", 3600, DEC_1 + 4200));
        let d = usages(&out)[0].clone();
        ((a.pool_seconds, a.charge), (d.pool_seconds, d.charge), w.balance("contoso"))
    };
    let expected = ((3600, m("0.04")), (3600, Money::ZERO), m("9.96"));
    assert_eq!(rate(false), expected);
    assert_eq!(rate(true), expected);
}

/// A leg's end rates the same whether it arrives after its start or waits for it. Here a lot
/// expires while the leg runs: either way the expired remainder is forfeited at the end's
/// time and the leg is paid from the lot bought later.
#[test]
fn a_parked_end_finds_the_lots_that_expired_before_it() {
    let rate = |end_first: bool| {
        let mut w = World::new();
        // Lot A expires at T0 (bought twelve months before it), lot B was bought since.
        w.fund_at("contoso", "10", T0 - 365 * 86_400);
        w.fund_at("contoso", "10", T0 - 36_000);
        // Ten minutes to the US at 0.02 from T0 - 300 to T0 + 300: lot A expires meanwhile.
        if end_first {
            w.end("contoso", "a", 600, T0 + 300);
            w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0 - 300);
        } else {
            w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0 - 300);
            w.end("contoso", "a", 600, T0 + 300);
        }
        let state = w.state("contoso");
        (state.balance(), state.totals.forfeited, state.ledger.lots().map(|l| l.remaining).collect::<Vec<_>>())
    };
    let expected = (m("9.80"), m("10"), vec![m("9.80")]);
    assert_eq!(rate(false), expected);
    assert_eq!(rate(true), expected);
}

/// An end before its start is bad input in either order. In order it is refused; when it
/// arrived first and waited, the start drops it: the leg stays open for a valid end, as it
/// does in order, instead of being closed unbilled.
#[test]
fn an_end_before_its_start_that_waited_is_dropped_and_the_leg_stays_open() {
    let mut w = World::new();
    w.fund("contoso", "10");
    let early = LegEnded { duration: LegDuration::EndedAt(ts(T0 - 10)), cause: DisconnectCause::Normal };
    let input = w.leg_event("contoso", "a", "", T0 + 600, LegBody::Ended(early));
    assert_eq!(w.try_apply(input).unwrap().0, Applied::Parked);
    let out = w.start("contoso", "a", "ppm-us", LegKind::DialOut, US, T0);
    assert!(allowed(decisions(&out)[0]));
    assert_eq!(usages(&out), vec![]);
    assert!(w.state("contoso").open_legs.contains_key("a"));
    assert_eq!(w.state("contoso").totals.orphan_ends_dropped, 1);
    // The valid end bills it: ten minutes to the US at 0.02.
    let usage = &usages(&w.end("contoso", "a", 600, T0 + 601))[0];
    assert_eq!((usage.billable_seconds, usage.charge), (600, m("0.20")));
    assert_eq!(w.balance("contoso"), m("9.80"));
}

/// A final duration below an interim refunds the credits the interim debited, and gives the
/// pool back the minutes the leg no longer needs.
#[test]
fn a_final_duration_below_an_interim_gives_pool_minutes_back() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "10");
    w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, T0);
    w.interim("contoso", "a", 600, T0 + 600);
    assert_eq!(w.state("contoso").pool.used_minutes, 10);
    let a = &usages(&w.end("contoso", "a", 120, T0 + 610))[0];
    assert_eq!((a.pool_seconds, a.charge, a.flags.names()), (120, Money::ZERO, vec!["interim_exceeded_final"]));
    assert_eq!(w.state("contoso").pool.used_minutes, 2);
    // The 58 minutes left pool a 58-minute leg in full.
    let mut out = w.start("contoso", "b", "sub-us", LegKind::DialOut, GB, T0 + 1000);
    out.extend(w.end("contoso", "b", 58 * 60, T0 + 1000 + 58 * 60));
    let b = &usages(&out)[0];
    assert_eq!((b.pool_seconds, b.charge), (3480, Money::ZERO));
    assert_eq!(w.state("contoso").pool.used_minutes, 60);
}

/// Minutes given back go to the month they came from, which is the month the leg started in:
/// here an interim stamped in the new month drew them from the month before, and the end
/// that reports less gives them back to it; the new month's pool is never touched.
#[test]
fn pool_minutes_given_back_go_to_the_month_they_came_from() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "10");
    // 50 of November's 60 minutes used.
    w.start("contoso", "n", "sub-us", LegKind::DialOut, GB, DEC_1 - 7200);
    w.end("contoso", "n", 50 * 60, DEC_1 - 7200 + 50 * 60);
    // Started in November; an interim stamped in December draws ten of November's; the end,
    // stamped in November, reports two minutes.
    w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, DEC_1 - 300);
    w.interim("contoso", "a", 600, DEC_1 + 300);
    assert_eq!(w.state("contoso").pool_of(YearMonth { year: 2026, month: 11 }).map(|p| p.used_minutes), Some(60));
    let a = &usages(&w.end("contoso", "a", 120, DEC_1 - 60))[0];
    assert_eq!((a.pool_seconds, a.charge), (120, Money::ZERO));
    let state = w.state("contoso");
    assert_eq!((state.pool.month, state.pool.used_minutes), (YearMonth { year: 2026, month: 11 }, 52));
    assert_eq!(state.earlier_pools, vec![]);
}

/// A leg opened by an earlier release may have drawn from two months (its interims drew from
/// the month they were stamped in): minutes it no longer needs go back to those months, the
/// newest first.
#[test]
fn a_leg_that_drew_from_two_months_gives_back_the_newest_first() {
    let mut w = World::new();
    w.tenant("contoso", |t| t.subscription_licences = 1);
    w.fund("contoso", "10");
    let nov = YearMonth { year: 2026, month: 11 };
    let dec = YearMonth { year: 2026, month: 12 };
    // 55 of November's minutes used; the leg takes the last five of them.
    w.start("contoso", "n", "sub-us", LegKind::DialOut, GB, DEC_1 - 7200);
    w.end("contoso", "n", 55 * 60, DEC_1 - 7200 + 55 * 60);
    w.start("contoso", "a", "sub-us", LegKind::DialOut, GB, DEC_1 - 300);
    w.interim("contoso", "a", 300, DEC_1);
    // As the earlier release left it: an interim stamped in December drew ten more from
    // December's pool.
    let state = w.states.get_mut("contoso").unwrap();
    let mut leg = state.open_legs.remove("a").unwrap();
    assert_eq!((leg.pool_draws.clone(), leg.pool_minutes), (vec![(nov, 5)], 5));
    leg.drew_from_pool(dec, 10);
    leg.minutes_accounted = 15;
    leg.elapsed_seconds = 900;
    state.open_legs.insert("a".into(), leg);
    state.pool_of_mut(dec).used_minutes = 10;
    // The end reports two minutes: thirteen go back, December's ten first, then three to
    // November.
    let a = &usages(&w.end("contoso", "a", 120, DEC_1 + 600))[0];
    assert_eq!((a.pool_seconds, a.charge, a.flags.names()), (120, Money::ZERO, vec!["interim_exceeded_final"]));
    let state = w.state("contoso");
    assert_eq!(state.pool_of(dec).map(|p| p.used_minutes), Some(0));
    assert_eq!(state.pool_of(nov).map(|p| p.used_minutes), Some(57));
}

/// A late input that takes the balance past the cutoff disconnects the credit-funded legs
/// in progress; a pool leg that its own month's pool pays is not one of them, even when the
/// late input's month has no pool left.
#[test]
fn a_late_input_past_the_cutoff_leaves_legs_their_own_months_pool_pays() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.subscription_licences = 1;
        t.cutoff = CutoffPolicy::Disconnect;
    });
    w.fund("contoso", "0.10");
    // November's pool used up; a pay-per-minute leg started at the end of November.
    w.start("contoso", "n", "sub-us", LegKind::DialOut, GB, DEC_1 - 7200);
    w.end("contoso", "n", 3600, DEC_1 - 3600);
    w.start("contoso", "p", "ppm-us", LegKind::DialOut, US, DEC_1 - 900);
    // A December pool leg, paid by December's pool.
    let out = w.start("contoso", "d", "sub-us", LegKind::DialOut, GB, DEC_1 + 60);
    assert!(allowed(decisions(&out)[0]));
    // The November leg's end arrives: 0.20 takes the balance to -0.10, past the cutoff.
    let out = w.end("contoso", "p", 600, DEC_1 - 300);
    assert_eq!(w.balance("contoso"), m("-0.10"));
    assert_eq!(decisions(&out), vec![]);
}

/// At the cutoff, a pool leg that started in the month before is disconnected once that
/// month's pool is empty, which is what it draws from, even while the new month's pool is
/// full.
#[test]
fn at_the_cutoff_a_pool_leg_of_the_month_before_is_disconnected_when_its_months_pool_is_empty() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.subscription_licences = 1;
        t.cutoff = CutoffPolicy::Disconnect;
    });
    w.fund("contoso", "1");
    // 59 of November's minutes used; a pool leg takes the last one ten minutes before midnight.
    w.start("contoso", "n", "sub-us", LegKind::DialOut, GB, DEC_1 - 7200);
    w.end("contoso", "n", 59 * 60, DEC_1 - 7200 + 59 * 60);
    let out = w.start("contoso", "p", "sub-us", LegKind::DialOut, GB, DEC_1 - 600);
    assert!(allowed(decisions(&out)[0]));
    // Nine minutes in: one pooled, eight at November's 0.04 (0.32), balance 0.68.
    assert!(decisions(&w.interim("contoso", "p", 540, DEC_1 - 60)).is_empty());
    assert_eq!(w.balance("contoso"), m("0.68"));
    // A December pay-per-minute leg: an hour at December's 0.025 takes the balance to -0.82,
    // past the cutoff.
    w.start("contoso", "q", "ppm-us", LegKind::DialOut, US, DEC_1 + 60);
    let out = w.interim("contoso", "q", 3600, DEC_1 + 3660);
    assert_eq!(w.balance("contoso"), m("-0.82"));
    assert_eq!(decisions(&out), vec![Decision::Disconnect { balance: m("-0.82"), currency: usd() }; 2]);
    let legs: Vec<String> = out
        .iter()
        .filter_map(|o| if let Output::Decision(d) = o { Some(d.leg_id.to_string()) } else { None })
        .collect();
    assert_eq!(legs, ["p", "q"]);
}

/// A lot bought more than twelve months before it is funded is forfeited at once. The money
/// was never spendable: the thresholds, the recharge request and the depletion event, which
/// fired when the balance reached zero, do not fire a second time on its account.
#[test]
fn a_lot_already_expired_when_funded_fires_nothing_again() {
    let mut w = World::new();
    w.tenant("contoso", |t| {
        t.low_balance_thresholds = vec![m("10")];
        t.auto_recharge = Some(AutoRecharge { trigger: m("5"), amount: m("20") });
    });
    w.fund("contoso", "1");
    let usd = usd();
    let out = w.credit("contoso", T0, CreditBody::Adjust { amount: m("-1"), currency: usd, reason: "test".into() });
    let kinds: Vec<CreditEventKind> = credit_events(&out).into_iter().map(|e| e.0).collect();
    use CreditEventKind::*;
    assert_eq!(kinds, vec![Adjusted, LowBalance, RechargeRequested, Depleted]);
    let stale =
        LotFunding { lot_id: "old".into(), amount: m("50.00"), currency: usd, purchased_at: ts(T0 - 400 * 86_400) };
    let out = w.credit("contoso", T0 + 60, CreditBody::Fund(stale));
    assert_eq!(credit_events(&out), vec![(Funded, m("50.00"), m("50.00")), (LotExpired, m("50.00"), m("0"))]);
}

/// Lots that expire together each get their event, with the balance after that lot (here
/// both expire as the next command arrives, before its own lot is funded).
#[test]
fn lots_that_expire_together_each_report_the_balance_after_them() {
    let mut w = World::new();
    let year = 366 * 86_400;
    w.fund_at("contoso", "10", T0 - year);
    w.fund_at("contoso", "5", T0 - year + 10);
    let out = w.fund_at("contoso", "5", T0 - 3600);
    use CreditEventKind::*;
    assert_eq!(
        credit_events(&out),
        vec![
            (LotExpired, m("10"), m("5")),
            (LotExpired, m("5"), m("0")),
            (Depleted, m("0"), m("0")),
            (Funded, m("5"), m("5")),
            (Restored, m("0"), m("5")),
        ]
    );
}
