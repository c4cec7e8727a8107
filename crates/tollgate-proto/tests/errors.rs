//! What a refused input or reference object is told: fields named as JSON names them, and
//! reference objects named (tenant, user, rate card, version, rate row) with their place in
//! the document.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use serde_json::{Value, json};
use tollgate_core as core;
use tollgate_proto::v1::{InputRecord, ReferenceData};

/// The error of converting an input JSON line, as (code, message).
fn input_error(value: Value) -> (&'static str, String) {
    let record: InputRecord = serde_json::from_value(value).expect("parse");
    let error = core::Input::try_from(record).expect_err("accepted");
    (error.code(), error.to_string())
}

/// The error of converting a reference document, as (code, message, path).
fn reference_error(value: Value) -> (&'static str, String, Vec<(&'static str, usize)>) {
    let data: ReferenceData = serde_json::from_value(value).expect("parse");
    let error = core::Reference::try_from(data).expect_err("accepted");
    (error.code(), error.to_string(), error.path().expect("a path").to_vec())
}

fn fund(fund: Value) -> Value {
    json!({"creditCommand": {"commandId": "c1", "tenantId": "contoso", "occurredAt": "2026-11-01T00:00:00Z",
        "fund": fund}})
}

#[test]
fn names_a_missing_field_as_json_does() {
    let value = fund(json!({"lotId": "lot-1", "amount": "10.00", "currency": "USD"}));
    assert_eq!(input_error(value), ("invalid", "missing field fund.purchasedAt".to_owned()));
    // The same when the input used the proto field names.
    let value = json!({"credit_command": {"command_id": "c1", "tenant_id": "contoso",
        "occurred_at": "2026-11-01T00:00:00Z",
        "recharge_succeeded": {"lot_id": "lot-1", "amount": "10.00", "currency": "USD"}}});
    assert_eq!(input_error(value), ("invalid", "missing field rechargeSucceeded.purchasedAt".to_owned()));
    let value = json!({"callLeg": {"eventId": "e1", "tenantId": "contoso", "legId": "leg-1",
        "interim": {"elapsedSeconds": 5}}});
    assert_eq!(input_error(value), ("invalid", "missing field occurredAt".to_owned()));
}

#[test]
fn names_a_missing_oneof_by_its_choices() {
    let value = json!({"callLeg": {"eventId": "e1", "tenantId": "contoso", "legId": "leg-1",
        "occurredAt": "2026-11-02T09:00:00Z"}});
    assert_eq!(input_error(value), ("invalid", "missing one of started, interim, ended".to_owned()));
    let value = json!({"creditCommand": {"commandId": "c1", "tenantId": "contoso",
        "occurredAt": "2026-11-01T00:00:00Z"}});
    assert_eq!(
        input_error(value),
        ("invalid", "missing one of fund, rechargeSucceeded, rechargeFailed, adjustment".to_owned())
    );
    assert_eq!(input_error(json!({})), ("invalid", "missing one of callLeg, creditCommand".to_owned()));
    let value = json!({"callLeg": {"eventId": "e1", "tenantId": "contoso", "legId": "leg-1",
        "occurredAt": "2026-11-02T09:00:00Z", "ended": {"cause": "DISCONNECT_CAUSE_NORMAL"}}});
    assert_eq!(input_error(value), ("invalid", "missing one of ended.connectedSeconds, ended.endedAt".to_owned()));
}

#[test]
fn names_the_field_of_a_refused_value() {
    let value = fund(json!({"lotId": "lot-1", "amount": "ten", "currency": "USD",
        "purchasedAt": "2026-11-01T00:00:00Z"}));
    assert_eq!(input_error(value), ("invalid", r#"fund.amount: invalid amount "ten""#.to_owned()));
    let value = fund(json!({"lotId": "lot-1", "amount": "10", "currency": "XYZ",
        "purchasedAt": "2026-11-01T00:00:00Z"}));
    assert_eq!(input_error(value), ("invalid", r#"fund.currency: invalid currency "XYZ""#.to_owned()));
    let value = json!({"callLeg": {"eventId": "e1", "tenantId": "contoso", "legId": "leg-1",
        "occurredAt": "2026-11-02T09:00:00Z", "started": {"kind": "LEG_KIND_DIAL_OUT", "remoteNumber": "12"}}});
    assert_eq!(input_error(value), ("invalid_number", r#"started.remoteNumber: invalid E.164 number "12""#.to_owned()));
}

/// Amounts, prices and fees have at most 15 digits before the point. Two funding commands of
/// the largest amount `Decimal` holds (about 7.9 × 10^28) overflowed the balance's addition
/// and panicked: the worker crashed on every restart.
#[test]
fn refuses_an_amount_of_more_than_fifteen_digits_before_the_point() {
    let refused = |amount: &str| {
        let value = fund(json!({"lotId": "lot-1", "amount": amount, "currency": "USD",
            "purchasedAt": "2026-11-01T00:00:00Z"}));
        input_error(value)
    };
    for amount in ["1000000000000000", "79228162514264337593543950335", " 1000000000000000.00 "] {
        let message =
            format!("fund.amount: invalid input: amount {:?} has more than 15 digits before the point", amount.trim());
        assert_eq!(refused(amount), ("invalid", message));
    }
    let largest = fund(json!({"lotId": "lot-1", "amount": "999999999999999.99", "currency": "USD",
        "purchasedAt": "2026-11-01T00:00:00Z"}));
    let record: InputRecord = serde_json::from_value(largest).unwrap();
    let Ok(core::Input::Credit(command)) = core::Input::try_from(record) else { panic!("not a credit command") };
    let core::CreditBody::Fund(lot) = command.body else { panic!("not a funding") };
    assert_eq!(lot.amount, "999999999999999.99".parse::<core::Money>().unwrap());
    let value = json!({"creditCommand": {"commandId": "c1", "tenantId": "contoso", "occurredAt": "2026-11-01T00:00:00Z",
        "adjustment": {"amount": "-1000000000000000", "currency": "USD", "reason": "typo"}}});
    assert_eq!(
        input_error(value).1,
        r#"adjustment.amount: invalid input: amount "-1000000000000000" has more than 15 digits before the point"#
    );
    let rows = json!([{"prefix": "44", "price": {"perMinute": "0.01", "connectionFee": "1000000000000000"}}]);
    assert_eq!(
        reference_error(json!({"rateCards": [card(rows)]})).1,
        r#"rate card "card-usd" version "2026-10" dialOut prefix "44": price.connectionFee: invalid input: amount "1000000000000000" has more than 15 digits before the point"#
    );
    // An increment longer than an hour (milliseconds written as seconds) would bill a 1 s call
    // for 16 hours: the row is refused, not rated.
    let rows = json!([{"prefix": "44", "price": {"perMinute": "0.01", "firstIncrementSeconds": 60000}}]);
    let refused = reference_error(json!({"rateCards": [card(rows)]}));
    assert_eq!(refused.0, "invalid");
    assert_eq!(
        refused.1,
        r#"rate card "card-usd" version "2026-10" dialOut prefix "44": price.firstIncrementSeconds: billing increments must be 1 to 3600 seconds, got 60000/60"#
    );
}

fn tenant(changes: Value) -> Value {
    let mut tenant = json!({"tenantId": "contoso", "currency": "USD", "creditsEnabled": true, "rateCardId": "usd"});
    tenant.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
    tenant
}

#[test]
fn names_the_tenant_and_field_of_a_refused_tenant() {
    let data = json!({"tenants": [tenant(json!({})), tenant(json!({"tenantId": "fabrikam",
        "autoRecharge": {"enabled": true, "trigger": "0.012.0", "amount": "50.00"}}))]});
    assert_eq!(
        reference_error(data),
        (
            "invalid",
            r#"tenant "fabrikam": autoRecharge.trigger: invalid amount "0.012.0""#.to_owned(),
            vec![("tenants", 1)]
        )
    );
    let data = json!({"tenants": [tenant(json!({"currency": "XYZ"}))]});
    assert_eq!(
        reference_error(data),
        ("invalid", r#"tenant "contoso": currency: invalid currency "XYZ""#.to_owned(), vec![("tenants", 0)])
    );
    let data = json!({"tenants": [tenant(json!({"overdraftLimit": "-1.00"}))]});
    assert_eq!(
        reference_error(data).1,
        r#"tenant "contoso": overdraftLimit: invalid input: the overdraft limit "-1.00" is negative"#
    );
    // A recharge request is paid as a funding, which must be whole minor units: an amount
    // that could never be paid is refused with the tenant, not dead-lettered when paid.
    let data =
        json!({"tenants": [tenant(json!({"autoRecharge": {"enabled": true, "trigger": "10", "amount": "25.005"}}))]});
    assert_eq!(
        reference_error(data).1,
        r#"tenant "contoso": autoRecharge.amount: invalid input: the recharge amount "25.005" must be > 0 in whole USD minor units (it is paid as a funding)"#
    );
}

#[test]
fn names_the_user_and_field_of_a_refused_user() {
    let data = json!({"users": [
        {"tenantId": "contoso", "userId": "alice", "usageLocation": "US"},
        {"tenantId": "contoso", "userId": "bob", "usageLocation": "USA"}
    ]});
    assert_eq!(
        reference_error(data),
        (
            "invalid",
            r#"user "bob" of tenant "contoso": usageLocation: invalid country "USA""#.to_owned(),
            vec![("users", 1)]
        )
    );
}

fn card(dial_out: Value) -> Value {
    json!({"rateCardId": "card-usd", "currency": "USD", "versions": [
        {"version": "2026-01", "effectiveFrom": "2026-01-01T00:00:00Z", "dialOut": [{"prefix": "1", "price": {"perMinute": "0.01"}}]},
        {"version": "2026-10", "effectiveFrom": "2026-10-01T00:00:00Z", "dialOut": dial_out}
    ]})
}

#[test]
fn names_the_card_version_and_prefix_of_a_refused_rate() {
    let rows =
        json!([{"prefix": "1", "price": {"perMinute": "0.01"}}, {"prefix": "44", "price": {"perMinute": "-0.01"}}]);
    assert_eq!(
        reference_error(json!({"rateCards": [card(json!([])), card(rows)]})),
        (
            "invalid",
            r#"rate card "card-usd" version "2026-10" dialOut prefix "44": price.perMinute: prices and fees must not be negative"#
                .to_owned(),
            vec![("rateCards", 1), ("versions", 1), ("dialOut", 1)]
        )
    );
    let rows = json!([{"prefix": "44", "price": {"perMinute": "0.012.0"}}]);
    assert_eq!(
        reference_error(json!({"rateCards": [card(rows)]})).1,
        r#"rate card "card-usd" version "2026-10" dialOut prefix "44": price.perMinute: invalid amount "0.012.0""#
    );
    let rows =
        json!([{"prefix": "44", "price": {"perMinute": "0.01"}}, {"prefix": "44", "price": {"perMinute": "0.02"}}]);
    assert_eq!(
        reference_error(json!({"rateCards": [card(rows)]})),
        (
            "invalid",
            r#"rate card "card-usd" version "2026-10" dialOut prefix "44": prefix: rate prefix 44 is listed twice"#
                .to_owned(),
            vec![("rateCards", 0), ("versions", 1), ("dialOut", 1)]
        )
    );
}

#[test]
fn names_the_card_and_version_of_a_refused_version() {
    let mut data = card(json!([]));
    data["versions"][1]["effectiveFrom"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(
        reference_error(json!({"rateCards": [data]})),
        (
            "invalid",
            r#"rate card "card-usd" version "2026-10": effectiveFrom: rate card version "2026-10" starts at the same instant as another"#
                .to_owned(),
            vec![("rateCards", 0), ("versions", 1)]
        )
    );
    let data = json!({"rateCards": [{"rateCardId": "card-xyz", "currency": "XYZ"}]});
    assert_eq!(
        reference_error(data),
        ("invalid", r#"rate card "card-xyz": currency: invalid currency "XYZ""#.to_owned(), vec![("rateCards", 0)])
    );
}
