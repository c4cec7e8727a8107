//! Fixtures shared by the benchmarks and the tests of this crate and the crates above it
//! (feature `test-support`; not part of the product).
//!
//! Open legs are made by the rater itself, so a fixture is always a leg the rules could have
//! opened.

use rust_decimal::Decimal;

use crate::{
    AutoRecharge, CallLegEvent, Country, CreditBody, CreditCommand, Currency, DialOutRate, DialoutPolicy, E164,
    Increments, Input, LegBody, LegKind, LegStarted, LotFunding, Money, OpenLeg, Prefix, PrefixTable, Price, RateCard,
    RateCardVersion, Rater, Reference, Tenant, TenantId, TenantState, Timestamp, User,
};

/// SplitMix64: a fixed, dependency-free stream of pseudo-random numbers.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` random decimal digits.
    pub fn digits(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

/// A dial-out rate: 0.001 to 0.500 per minute, a mix of increments, some connection fees.
pub fn random_rate(rng: &mut Rng) -> DialOutRate {
    let per_minute = Money::new(Decimal::new(1 + rng.below(500) as i64, 3));
    let fee = if rng.below(4) == 0 { Money::new(Decimal::new(rng.below(20) as i64, 2)) } else { Money::ZERO };
    let increments = match rng.below(3) {
        0 => Increments::PER_MINUTE,
        1 => Increments::new(1, 1).expect("non-zero"),
        _ => Increments::new(60, 1).expect("non-zero"),
    };
    let price = Price::new(per_minute, fee, increments).expect("non-negative amounts");
    DialOutRate { price, premium: rng.below(10) == 0 }
}

/// The benchmarks' tenant `contoso`: USD, thresholds and auto-recharge (checked on every
/// debit), a pay-per-minute organizer `alice` in the US restricted to Zone A, and the rate card
/// `usd` version `v1` (from `from`) with these dial-out rates; funded with a lot of `balance`
/// bought at `from`. Returns the reference data and the funded state.
pub fn tenant(dial_out: PrefixTable<DialOutRate>, from: Timestamp, balance: Money) -> (Reference, TenantState) {
    let usd = currency("USD");
    let tenant_id = tenant_id("contoso");
    let version = RateCardVersion {
        version: "v1".into(),
        effective_from: from,
        dial_in_toll: PrefixTable::new(vec![]).expect("empty"),
        dial_in_toll_free: PrefixTable::new(vec![]).expect("empty"),
        dial_out,
    };
    let mut reference = Reference::default();
    reference.put_rate_card(RateCard::new("usd".into(), usd, vec![version]).expect("valid fixture"));
    let money = |s: &str| s.parse::<Money>().expect("valid fixture");
    let tenant = Tenant {
        auto_recharge: Some(AutoRecharge { trigger: money("50"), amount: money("500") }),
        low_balance_thresholds: vec![money("100"), money("10"), money("1")],
        ..Tenant::new(tenant_id.clone(), usd, "usd")
    };
    reference.put_tenant(tenant.validated().expect("valid fixture"));
    let mut alice = User::new(tenant_id.clone(), "alice", country("US"));
    alice.dialout_policy = Some(DialoutPolicy::CpcZoneAPstnInternational);
    reference.put_user(alice);
    let mut funded = TenantState::default();
    let fund = Input::Credit(CreditCommand {
        command_id: "fund".into(),
        tenant_id,
        occurred_at: from,
        body: CreditBody::Fund(LotFunding {
            lot_id: "lot-1".into(),
            amount: balance,
            currency: usd,
            purchased_at: from,
        }),
    });
    Rater::default().apply(&reference, &mut funded, fund, &mut Vec::new()).expect("valid fixture");
    (reference, funded)
}

/// An open leg as the rater opens it: `call_id`'s dial-out from `contoso`'s `alice` to
/// +1 212 867 5309 at `started_at`, paid by credits at 0.02 per minute on card `usd` `v1`.
pub fn open_leg(call_id: &str, started_at: Timestamp) -> OpenLeg {
    let rate = DialOutRate {
        price: Price::new(Money::new(Decimal::new(2, 2)), Money::ZERO, Increments::PER_MINUTE).expect("valid fixture"),
        premium: false,
    };
    let prefix = Prefix::parse("1").expect("valid fixture");
    let table = PrefixTable::new(vec![(prefix, rate)]).expect("valid fixture");
    let (reference, mut state) = tenant(table, started_at, Money::new(Decimal::from(1000)));
    let started = LegStarted {
        kind: LegKind::DialOut,
        bridge_number: None,
        remote_number: Some(E164::from_parts("12128675309", country("US")).expect("valid fixture")),
    };
    let event = Input::Leg(CallLegEvent {
        event_id: "start".into(),
        tenant_id: tenant_id("contoso"),
        conference_id: "conf".into(),
        call_id: call_id.into(),
        leg_id: "leg".into(),
        organizer_id: "alice".into(),
        occurred_at: started_at,
        body: LegBody::Started(started),
    });
    Rater::default().apply(&reference, &mut state, event, &mut Vec::new()).expect("valid fixture");
    state.open_legs.remove("leg").expect("the leg was allowed")
}

/// `event` as another leg's `by_seconds` later (earlier when negative): its event and leg ids
/// suffixed with `suffix`, so it is new to a tenant that rated `event`. The benchmarks warm a
/// tenant up with one copy of their pairs and measure another, a retention window apart.
pub fn moved(mut event: CallLegEvent, suffix: &str, by_seconds: i64) -> CallLegEvent {
    event.event_id = format!("{}{suffix}", event.event_id).into();
    event.leg_id = format!("{}{suffix}", event.leg_id).into();
    let at = event.occurred_at;
    event.occurred_at = Timestamp::new(at.unix_seconds() + by_seconds, at.subsec_nanos()).expect("valid fixture");
    event
}

/// A copy of `warm` that has rated `primer`, for a benchmark to time what comes after.
///
/// A copy's retention queues have no room beyond their entries (`VecDeque::clone` allocates
/// exactly what it holds), so the first id a copy remembers reallocates each queue to twice
/// its size: work a tenant in steady state, whose queues have had their room since it
/// reached its working size, never does. Rating a primer outside the timed section pays it.
pub fn primed(reference: &Reference, warm: &TenantState, primer: impl IntoIterator<Item = Input>) -> TenantState {
    let mut state = warm.clone();
    for input in primer {
        Rater::default().apply(reference, &mut state, input, &mut Vec::new()).expect("primer");
    }
    state
}

fn currency(code: &str) -> Currency {
    Currency::from_code(code).expect("valid fixture")
}

fn country(code: &str) -> Country {
    Country::from_code(code).expect("valid fixture")
}

fn tenant_id(id: &str) -> TenantId {
    TenantId::new(id).expect("valid fixture")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capability;

    /// An interim of `contoso`'s leg `leg-1`, as event `event_id` at `at`.
    fn interim(event_id: &str, at: Timestamp) -> CallLegEvent {
        CallLegEvent {
            event_id: event_id.into(),
            tenant_id: tenant_id("contoso"),
            conference_id: "conf".into(),
            call_id: "call".into(),
            leg_id: "leg-1".into(),
            organizer_id: "alice".into(),
            occurred_at: at,
            body: LegBody::Interim { elapsed_seconds: 7 },
        }
    }

    #[test]
    fn the_fixture_leg_is_a_credit_funded_dial_out_from_its_start() {
        let at = Timestamp::new(1_794_268_800, 0).expect("in range");
        let leg = open_leg("call-9", at);
        assert_eq!((leg.call_id.as_str(), leg.started_at, leg.capability), ("call-9", at, Capability::Ppm));
        assert_eq!((leg.rate_card_id.as_str(), leg.rate_card_version.as_str()), ("usd", "v1"));
        assert_eq!((leg.elapsed_seconds, leg.debited), (0, Money::ZERO));
    }

    #[test]
    fn a_moved_event_is_another_legs_at_another_time() {
        let at = Timestamp::new(1_794_268_800, 5).expect("in range");
        let event = interim("ev-1", at);
        let moved = moved(event.clone(), "-warm", -3600);
        assert_eq!((moved.event_id.as_str(), moved.leg_id.as_str()), ("ev-1-warm", "leg-1-warm"));
        assert_eq!(moved.occurred_at, Timestamp::new(1_794_265_200, 5).expect("in range"));
        assert_eq!((moved.call_id, moved.body), (event.call_id, event.body));
    }

    #[test]
    fn a_primed_copy_has_rated_its_primer_and_the_warm_state_is_untouched() {
        let at = Timestamp::new(1_794_268_800, 0).expect("in range");
        let (reference, funded) = tenant(PrefixTable::new(vec![]).expect("empty"), at, "10".parse().expect("decimal"));
        let event = interim("ev-1", at);
        let primed = primed(&reference, &funded, [Input::Leg(event)]);
        assert_eq!((primed.seen.len(), funded.seen.len()), (funded.seen.len() + 1, 1));
        assert!(primed.seen.get("ev-1").is_some() && funded.seen.get("ev-1").is_none());
    }
}
