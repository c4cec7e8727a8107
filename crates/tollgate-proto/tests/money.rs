//! Every amount of money on the wire is written with its currency's minor units, by one
//! function (`convert::wire_money`): a balance of -0.8 USD is `"-0.80"` in a disconnect
//! decision exactly as in a usage record or a credit event.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::collections::BTreeSet;

use serde_json::Value;
use tollgate_core as core;
use tollgate_core::{Country, Currency, E164, Money, Prefix, TenantId, Timestamp};
use tollgate_proto::v1;

/// The JSON fields of the outputs that carry money. A new one must be added here, and this
/// test then checks it like the others.
const MONEY_FIELDS: [&str; 6] = ["connectionFee", "charge", "pricePerMinute", "balanceAfter", "balance", "amount"];

/// Digit strings that are not money: 64-bit integers (proto3 JSON writes them as strings) and
/// rate prefixes.
const NOT_MONEY: [&str; 3] = ["sequence", "sourceOffset", "ratePrefix"];

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn at() -> Timestamp {
    Timestamp::new(1_793_610_000, 0).unwrap()
}

/// One of each output, with these amounts: connection fee, charge, price per minute, balance,
/// credit amount.
fn outputs(currency: Currency, [fee, charge, price, balance, amount]: [&str; 5]) -> Vec<core::Output> {
    let tenant = TenantId::new("contoso").unwrap();
    let us = Country::from_code("US").unwrap();
    let usage = core::RatedUsage {
        leg_id: "leg-1".into(),
        call_id: "call-1".into(),
        conference_id: "meeting-1".into(),
        tenant_id: tenant.clone(),
        organizer_id: "alice".into(),
        organizer_usage_location: us,
        call_type: core::CallType::ConfOut,
        number_type: core::NumberType::Toll,
        international: false,
        destination_country: us,
        destination_number: E164::from_parts("12128675309", us).unwrap(),
        started_at: at(),
        ended_at: at(),
        duration_seconds: 600,
        billable_seconds: 600,
        pool_seconds: 0,
        connection_fee: m(fee),
        charge: m(charge),
        currency,
        capability: core::Capability::Ppm,
        rate_card_id: "card".into(),
        rate_card_version: "v1".into(),
        rate_prefix: Some(Prefix::parse("1").unwrap()),
        price_per_minute: m(price),
        outcome: core::UsageOutcome::Rated,
        balance_after: m(balance),
        flags: core::UsageFlags::default(),
    };
    let decision = core::LegDecision {
        tenant_id: tenant.clone(),
        leg_id: "leg-1".into(),
        call_id: "call-1".into(),
        conference_id: "meeting-1".into(),
        decided_at: at(),
        decision: core::Decision::Disconnect { balance: m(balance), currency },
    };
    let credit = core::CreditEvent {
        tenant_id: tenant,
        sequence: 1,
        occurred_at: at(),
        kind: core::CreditEventKind::Funded,
        amount: m(amount),
        currency,
        balance_after: m(balance),
        detail: "lot-1".into(),
    };
    vec![core::Output::Usage(usage), core::Output::Decision(decision), core::Output::Credit(credit)]
}

/// A ledger movement with these amounts: the change and the balance after.
fn movement(currency: Currency, [amount, balance]: [&str; 2]) -> core::LedgerMovement {
    core::LedgerMovement {
        movement_id: "contoso/e1/1".into(),
        tenant_id: TenantId::new("contoso").unwrap(),
        occurred_at: at(),
        kind: core::MovementKind::Debit,
        amount: m(amount),
        currency,
        balance_after: m(balance),
        leg_id: "leg-1".into(),
        lot_id: String::new(),
    }
}

/// Every string leaf of `value` with the name of the field holding it.
fn string_fields<'a>(value: &'a Value, field: &'a str, found: &mut Vec<(&'a str, &'a str)>) {
    match value {
        Value::String(s) => found.push((field, s)),
        Value::Array(items) => items.iter().for_each(|v| string_fields(v, field, found)),
        Value::Object(map) => map.iter().for_each(|(k, v)| string_fields(v, k, found)),
        _ => {}
    }
}

fn looks_like_a_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn decimals(s: &str) -> usize {
    s.split_once('.').map_or(0, |(_, d)| d.len())
}

#[test]
fn every_money_field_has_the_currency_minor_units() {
    // Every amount with fewer decimals than its currency has (none for JPY).
    let cases = [
        ("USD", 2, ["0.1", "2.1", "0.2", "-0.8", "5"]),
        ("JPY", 0, ["10", "210", "3", "-80", "500"]),
        ("KWD", 3, ["0.1", "2.12", "0.2", "-0.8", "5"]),
    ];
    for (code, minor_units, amounts) in cases {
        let currency = Currency::from_code(code).unwrap();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let records = outputs(currency, amounts)
            .into_iter()
            .map(v1::OutputRecord::from)
            .chain([v1::OutputRecord::from(movement(currency, [amounts[1], amounts[3]]))]);
        for record in records {
            let json = serde_json::to_value(record).unwrap();
            let mut fields = Vec::new();
            string_fields(&json, "", &mut fields);
            for (field, text) in fields {
                if !looks_like_a_number(text) || NOT_MONEY.contains(&field) {
                    continue;
                }
                assert!(MONEY_FIELDS.contains(&field), "{field} = {text:?} looks like money: add it to MONEY_FIELDS");
                assert_eq!(decimals(text), minor_units, "{code} {field} = {text:?}");
                seen.insert(field.to_owned());
            }
        }
        assert_eq!(seen, MONEY_FIELDS.into_iter().map(str::to_owned).collect(), "{code}");
    }
}

#[test]
fn a_disconnect_balance_is_written_like_every_other_balance() {
    let usd = Currency::from_code("USD").unwrap();
    let outputs = outputs(usd, ["0", "2", "0.2", "-0.8", "5"]);
    let [usage, decision, credit] = <[core::Output; 3]>::try_from(outputs).unwrap();
    let json = |o: core::Output| serde_json::to_value(v1::OutputRecord::from(o)).unwrap();
    assert_eq!(json(decision)["legDecision"]["disconnect"]["balance"], "-0.80");
    assert_eq!(json(usage)["ratedUsage"]["balanceAfter"], "-0.80");
    assert_eq!(json(credit)["creditEvent"]["balanceAfter"], "-0.80");
}

#[test]
fn amounts_are_never_rounded_on_the_wire() {
    let usd = Currency::from_code("USD").unwrap();
    let jpy = Currency::from_code("JPY").unwrap();
    assert_eq!(tollgate_proto::convert::wire_money(m("0.0147"), usd), "0.0147");
    assert_eq!(tollgate_proto::convert::wire_money(m("4.5"), jpy), "4.5");
    assert_eq!(tollgate_proto::convert::wire_money(m("0.2"), usd), "0.20");
    assert_eq!(tollgate_proto::convert::wire_money(m("120"), jpy), "120");
}
