//! The direct encoders write, byte for byte, what prost writes for the converted messages.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use proptest::prelude::*;
use rust_decimal::Decimal;
use tollgate_core::{
    BlockReason, CallType, Capability, Country, Currency, Decision, E164, LedgerMovement, LegDecision, Money,
    MovementKind, NumberType, Output, Prefix, RatedUsage, TenantId, Timestamp, UsageFlags, UsageOutcome,
};
use tollgate_proto::{Message, encode, v1};

/// What prost writes for the converted output.
fn through_prost(output: &Output) -> Vec<u8> {
    v1::OutputRecord::from(output.clone())
        .record
        .map(|record| match record {
            v1::output_record::Record::RatedUsage(u) => u.encode_to_vec(),
            v1::output_record::Record::LegDecision(d) => d.encode_to_vec(),
            v1::output_record::Record::CreditEvent(c) => c.encode_to_vec(),
            other => panic!("not a rater's output: {other:?}"),
        })
        .unwrap()
}

fn direct(output: &Output) -> Vec<u8> {
    let mut buf = b"kept".to_vec();
    encode::output(output, &mut buf);
    assert_eq!(&buf[..4], b"kept", "appends, never overwrites");
    buf.split_off(4)
}

fn seconds() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..100, any::<u32>()]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9/é-]{1,12}", "[a-z]{130,140}"]
}

fn money() -> impl Strategy<Value = Money> {
    (any::<i64>(), 0u32..=8).prop_map(|(m, scale)| Money::new(Decimal::new(m % 1_000_000_000_000, scale)))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![Just(0i64), 0i64..=253_402_300_799].prop_flat_map(|secs| {
        prop_oneof![Just(0u32), 0u32..1_000_000_000].prop_map(move |nanos| Timestamp::new(secs, nanos).unwrap())
    })
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec!["USD", "JPY", "EUR", "KWD", "GBP"]).prop_map(|c| Currency::from_code(c).unwrap())
}

fn country() -> impl Strategy<Value = Country> {
    prop::sample::select(vec!["US", "GB", "DE", "JP", "BH"]).prop_map(|c| Country::from_code(c).unwrap())
}

fn number() -> impl Strategy<Value = E164> {
    ("[1-9][0-9]{6,14}", country()).prop_map(|(digits, c)| E164::from_parts(&digits, c).unwrap())
}

fn prefix() -> impl Strategy<Value = Option<Prefix>> {
    prop::option::of("[0-9]{1,8}".prop_map(|p| Prefix::parse(&p).unwrap()))
}

fn capability() -> impl Strategy<Value = Capability> {
    prop::sample::select(vec![Capability::Ppm, Capability::Subscription, Capability::Pool, Capability::Unpriced])
}

fn block_reason() -> impl Strategy<Value = BlockReason> {
    prop::sample::select(vec![
        BlockReason::Policy,
        BlockReason::TollFreeDisabled,
        BlockReason::NoCredit,
        BlockReason::NoRate,
    ])
}

fn flags() -> impl Strategy<Value = UsageFlags> {
    any::<[bool; 5]>().prop_map(|f| UsageFlags {
        over_max_duration: f[0],
        unpriced: f[1],
        currency_mismatch: f[2],
        interim_exceeded_final: f[3],
        end_before_start: f[4],
    })
}

prop_compose! {
    fn usage()(
        ids in [id(), id(), id(), id(), id(), id()],
        tenant in "[a-z]{1,10}",
        (location, destination_country, destination_number) in (country(), country(), number()),
        (call_type, number_type, international) in (any::<bool>(), any::<bool>(), any::<bool>()),
        (started_at, ended_at) in (timestamp(), timestamp()),
        seconds in [seconds(), seconds(), seconds()],
        amounts in [money(), money(), money(), money()],
        (currency, capability, rate_prefix, flags) in (currency(), capability(), prefix(), flags()),
        outcome in prop::option::of(block_reason()),
    ) -> RatedUsage {
        let [leg, call, conference, organizer, card, version] = ids;
        RatedUsage {
            leg_id: leg.into(),
            call_id: call.into(),
            conference_id: conference.into(),
            tenant_id: TenantId::new(tenant).unwrap(),
            organizer_id: organizer.into(),
            organizer_usage_location: location,
            call_type: if call_type { CallType::ConfIn } else { CallType::ConfOut },
            number_type: if number_type { NumberType::Toll } else { NumberType::TollFree },
            international,
            destination_country,
            destination_number,
            started_at,
            ended_at,
            duration_seconds: seconds[0],
            billable_seconds: seconds[1],
            pool_seconds: seconds[2],
            connection_fee: amounts[0],
            charge: amounts[1],
            currency,
            capability,
            rate_card_id: card.into(),
            rate_card_version: version.into(),
            rate_prefix,
            price_per_minute: amounts[2],
            outcome: outcome.map_or(UsageOutcome::Rated, UsageOutcome::Blocked),
            balance_after: amounts[3],
            flags,
        }
    }
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        (prop_oneof![Just(0u32), any::<u32>()], prop::option::of(capability()))
            .prop_map(|(max_affordable_seconds, capability)| Decision::Allow { max_affordable_seconds, capability }),
        block_reason().prop_map(Decision::Block),
        (money(), currency()).prop_map(|(balance, currency)| Decision::Disconnect { balance, currency }),
    ]
}

prop_compose! {
    fn leg_decision()(
        ids in [id(), id(), id()],
        tenant in "[a-z]{1,10}",
        decided_at in timestamp(),
        decision in decision(),
    ) -> LegDecision {
        let [leg, call, conference] = ids;
        LegDecision {
            tenant_id: TenantId::new(tenant).unwrap(),
            leg_id: leg.into(),
            call_id: call.into(),
            conference_id: conference.into(),
            decided_at,
            decision,
        }
    }
}

prop_compose! {
    fn movement()(
        ids in [id(), id(), id()],
        tenant in "[a-z]{1,10}",
        occurred_at in timestamp(),
        kind in prop::sample::select(vec![
            MovementKind::Debit,
            MovementKind::Funding,
            MovementKind::Forfeit,
            MovementKind::Adjustment,
        ]),
        amounts in [money(), money()],
        currency in currency(),
    ) -> LedgerMovement {
        let [movement_id, leg_id, lot_id] = ids;
        LedgerMovement {
            movement_id,
            tenant_id: TenantId::new(tenant).unwrap(),
            occurred_at,
            kind,
            amount: amounts[0],
            currency,
            balance_after: amounts[1],
            leg_id,
            lot_id,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn a_usage_record_is_encoded_as_prost_encodes_it(u in usage()) {
        let output = Output::Usage(u);
        prop_assert_eq!(direct(&output), through_prost(&output));
    }

    #[test]
    fn a_decision_is_encoded_as_prost_encodes_it(d in leg_decision()) {
        let output = Output::Decision(d);
        prop_assert_eq!(direct(&output), through_prost(&output));
    }
}

proptest! {
    #[test]
    fn a_ledger_movement_is_encoded_as_prost_encodes_it(m in movement()) {
        let mut buf = Vec::new();
        encode::ledger_movement(&m, &mut buf);
        prop_assert_eq!(buf, v1::LedgerMovement::from(m).encode_to_vec());
    }
}

/// An amount over 10^19, formatted by `Decimal` rather than the fast path, and an empty
/// decision message (`Allow` with zero seconds and no capability).
#[test]
fn edge_values_are_encoded_as_prost_encodes_them() {
    let usd = Currency::from_code("USD").unwrap();
    let huge = Money::new(Decimal::from_i128_with_scale(-123_456_789_012_345_678_901_234_567, 3));
    let decisions = [
        Decision::Allow { max_affordable_seconds: 0, capability: None },
        Decision::Disconnect { balance: huge, currency: usd },
        Decision::Disconnect { balance: Money::ZERO, currency: usd },
    ];
    for decision in decisions {
        let output = Output::Decision(LegDecision {
            tenant_id: TenantId::new("acme").unwrap(),
            leg_id: "leg-1".into(),
            call_id: String::new().into(),
            conference_id: "meeting".into(),
            decided_at: Timestamp::new(0, 0).unwrap(),
            decision,
        });
        assert_eq!(direct(&output), through_prost(&output), "{output:?}");
    }
}
