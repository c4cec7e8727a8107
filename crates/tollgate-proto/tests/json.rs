//! Proto3 JSON mapping round trips: JSON -> message -> protobuf bytes -> message -> JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tollgate_proto::v1::{
    CreditCommand, DialoutPolicy, InputRecord, LegKind, NumberType, ReferenceData, call_leg_event, credit_command,
    input_record, leg_ended,
};
use tollgate_proto::{Message, Timestamp};

/// Parses `value`, checks the protobuf round trip, re-serializes, and asserts the JSON is
/// unchanged (so every field spelling in `value` is the canonical one). Returns the message.
fn round_trip<M>(value: &Value) -> M
where
    M: Message + Default + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let message: M = serde_json::from_value(value.clone()).expect("parse JSON");
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("decode protobuf");
    assert_eq!(decoded, message, "protobuf round trip changed the message");
    let back = serde_json::to_value(&decoded).expect("serialize JSON");
    assert_eq!(&back, value, "JSON round trip changed the document");
    decoded
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

const NOV_2_0900: i64 = 1_793_610_000; // 2026-11-02T09:00:00Z

#[test]
fn started_call_leg() {
    let value = json!({"callLeg": {
        "eventId": "e1",
        "tenantId": "contoso",
        "conferenceId": "conf-1",
        "callId": "call-1",
        "legId": "leg-1",
        "organizerId": "alice",
        "occurredAt": "2026-11-02T09:00:00Z",
        "started": {"kind": "LEG_KIND_DIAL_OUT", "remoteNumber": "+442071838750"}
    }});
    let record: InputRecord = round_trip(&value);

    let Some(input_record::Record::CallLeg(event)) = record.record else {
        panic!("expected callLeg, got {record:?}");
    };
    assert_eq!(event.event_id, "e1");
    assert_eq!(event.occurred_at, ts(NOV_2_0900));
    let Some(call_leg_event::Body::Started(started)) = event.body else {
        panic!("expected started");
    };
    assert_eq!(started.kind(), LegKind::DialOut);
    assert_eq!(started.remote_number, "+442071838750");
    assert!(started.bridge_number.is_empty());

    // Exact text: proto field order, empty fields omitted.
    let record: InputRecord = serde_json::from_value(value).expect("parse");
    assert_eq!(
        serde_json::to_string(&record).expect("serialize"),
        r#"{"callLeg":{"eventId":"e1","tenantId":"contoso","conferenceId":"conf-1","callId":"call-1","legId":"leg-1","organizerId":"alice","occurredAt":"2026-11-02T09:00:00Z","started":{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"+442071838750"}}}"#
    );
}

#[test]
fn dial_in_started_with_bridge_number() {
    let value = json!({"callLeg": {
        "eventId": "e2",
        "tenantId": "fabrikam",
        "conferenceId": "conf-2",
        "callId": "call-2",
        "legId": "leg-2",
        "organizerId": "bob",
        "occurredAt": "2026-11-02T09:00:00.250Z",
        "started": {
            "kind": "LEG_KIND_DIAL_IN_TOLL_FREE",
            "bridgeNumber": "+448000489000",
            "remoteNumber": "+447700900123"
        }
    }});
    let record: InputRecord = round_trip(&value);
    let Some(input_record::Record::CallLeg(event)) = record.record else {
        panic!("expected callLeg");
    };
    assert_eq!(event.occurred_at, Some(Timestamp { seconds: NOV_2_0900, nanos: 250_000_000 }));
}

#[test]
fn ended_call_leg() {
    let value = json!({"callLeg": {
        "eventId": "e9",
        "tenantId": "contoso",
        "conferenceId": "conf-1",
        "callId": "call-1",
        "legId": "leg-1",
        "organizerId": "alice",
        "occurredAt": "2026-11-02T09:12:05Z",
        "ended": {"connectedSeconds": 725, "cause": "DISCONNECT_CAUSE_NORMAL"}
    }});
    let record: InputRecord = round_trip(&value);
    let Some(input_record::Record::CallLeg(event)) = record.record else {
        panic!("expected callLeg");
    };
    let Some(call_leg_event::Body::Ended(ended)) = event.body else {
        panic!("expected ended");
    };
    assert_eq!(ended.duration, Some(leg_ended::Duration::ConnectedSeconds(725)));
    assert_eq!(ended.cause(), tollgate_proto::v1::DisconnectCause::Normal);

    // The other duration variant, and interim.
    let value = json!({"callLeg": {
        "eventId": "e10", "tenantId": "contoso", "legId": "leg-1",
        "occurredAt": "2026-11-02T10:00:00Z",
        "ended": {"endedAt": "2026-11-02T10:00:00Z", "cause": "DISCONNECT_CAUSE_NO_ANSWER"}
    }});
    let record: InputRecord = round_trip(&value);
    let Some(input_record::Record::CallLeg(event)) = record.record else {
        panic!("expected callLeg");
    };
    let Some(call_leg_event::Body::Ended(ended)) = event.body else {
        panic!("expected ended");
    };
    assert_eq!(ended.duration, Some(leg_ended::Duration::EndedAt(Timestamp { seconds: NOV_2_0900 + 3600, nanos: 0 })));

    let value = json!({"callLeg": {
        "eventId": "e11", "tenantId": "contoso", "legId": "leg-1",
        "occurredAt": "2026-11-02T09:05:00Z",
        "interim": {"elapsedSeconds": 300}
    }});
    let _: InputRecord = round_trip(&value);
}

#[test]
fn credit_command_fund() {
    let value = json!({"creditCommand": {
        "commandId": "c1",
        "tenantId": "contoso",
        "occurredAt": "2026-11-01T00:00:00Z",
        "fund": {
            "lotId": "lot-1",
            "amount": "250.00",
            "currency": "USD",
            "purchasedAt": "2026-11-01T00:00:00Z"
        }
    }});
    let record: InputRecord = round_trip(&value);
    let Some(input_record::Record::CreditCommand(CreditCommand {
        body: Some(credit_command::Body::Fund(fund)), ..
    })) = record.record
    else {
        panic!("expected creditCommand.fund");
    };
    assert_eq!(fund.amount, "250.00");
    assert_eq!(fund.currency, "USD");

    for body in [
        json!({"rechargeSucceeded": {"lotId": "lot-2", "amount": "50.00", "currency": "USD",
            "purchasedAt": "2026-11-03T00:00:00Z"}}),
        json!({"rechargeFailed": {"reason": "card declined"}}),
        json!({"adjustment": {"amount": "-3.50", "currency": "USD", "reason": "goodwill"}}),
    ] {
        let mut command = json!({"commandId": "c2", "tenantId": "contoso",
            "occurredAt": "2026-11-03T00:00:00Z"});
        command.as_object_mut().expect("object").extend(body.as_object().expect("object").clone());
        let _: InputRecord = round_trip(&json!({"creditCommand": command}));
    }
}

#[test]
fn reference_data() {
    let value = json!({
        "tenants": [{
            "tenantId": "contoso",
            "displayName": "Contoso Ltd",
            "currency": "USD",
            "creditsEnabled": true,
            "autoRecharge": {"enabled": true, "trigger": "20.00", "amount": "100.00"},
            "lowBalanceThresholds": ["50.00", "10.00"],
            "overdraftLimit": "5.00",
            "cutoffPolicy": "CUTOFF_POLICY_DISCONNECT",
            "globalDialoutPolicy": "DIALOUT_POLICY_CPC_ZONE_A_PSTN_INTERNATIONAL",
            "subscriptionLicences": 2,
            "unpricedHandling": "UNPRICED_HANDLING_REJECT",
            "rateCardId": "card-usd"
        }],
        "users": [
            {
                "tenantId": "contoso",
                "userId": "alice",
                "usageLocation": "US",
                "dialoutPolicy": "DIALOUT_POLICY_CPC_DOMESTIC_PSTN_INTERNATIONAL",
                "licence": "LICENCE_MODEL_PAY_PER_MINUTE",
                "allowTollFreeDialIn": false
            },
            {
                "tenantId": "contoso",
                "userId": "bob",
                "usageLocation": "CA",
                "licence": "LICENCE_MODEL_SUBSCRIPTION"
            }
        ],
        "rateCards": [{
            "rateCardId": "card-usd",
            "currency": "USD",
            "versions": [{
                "version": "2026-01",
                "effectiveFrom": "2026-01-01T00:00:00Z",
                "dialIn": [
                    {"prefix": "1", "numberType": "NUMBER_TYPE_TOLL",
                        "price": {"perMinute": "0.0100"}},
                    {"prefix": "1", "numberType": "NUMBER_TYPE_TOLL_FREE",
                        "price": {"perMinute": "0.0300"}}
                ],
                "dialOut": [
                    {"prefix": "4420", "price": {"perMinute": "0.0240", "connectionFee": "0.05",
                        "firstIncrementSeconds": 60, "subsequentIncrementSeconds": 1},
                        "description": "United Kingdom - London"},
                    {"prefix": "870", "price": {"perMinute": "6.5000"}, "premium": true,
                        "description": "Inmarsat"}
                ]
            }]
        }]
    });
    let reference: ReferenceData = round_trip(&value);

    let tenant = &reference.tenants[0];
    assert_eq!(tenant.global_dialout_policy(), DialoutPolicy::CpcZoneAPstnInternational);
    assert_eq!(tenant.subscription_licences, 2);
    let alice = &reference.users[0];
    assert_eq!(alice.allow_toll_free_dial_in, Some(false));
    assert_eq!(alice.dialout_policy(), DialoutPolicy::CpcDomesticPstnInternational);
    let bob = &reference.users[1];
    assert_eq!(bob.allow_toll_free_dial_in, None, "absent optional bool stays absent");
    assert_eq!(bob.dialout_policy(), DialoutPolicy::Unspecified);
    let version = &reference.rate_cards[0].versions[0];
    assert_eq!(version.effective_from.map(|t| t.seconds), Some(1_767_225_600));
    assert_eq!(version.dial_in[1].number_type(), NumberType::TollFree);
    let london = &version.dial_out[0];
    let price = london.price.as_ref().expect("price");
    assert_eq!(price.subsequent_increment_seconds, 1);
    assert!(version.dial_out[1].premium);
}

#[test]
fn unknown_enum_string_is_rejected() {
    let value = json!({"callLeg": {
        "eventId": "e1",
        "tenantId": "contoso",
        "occurredAt": "2026-11-02T09:00:00Z",
        "started": {"kind": "LEG_KIND_TELEPATHY", "remoteNumber": "+442071838750"}
    }});
    let err = serde_json::from_value::<InputRecord>(value).expect_err("unknown enum accepted");
    assert!(err.to_string().contains("LEG_KIND_TELEPATHY"), "{err}");

    // Enum names are case sensitive and must be the full prefixed name.
    for kind in ["leg_kind_dial_out", "DIAL_OUT"] {
        let value = json!({"callLeg": {"started": {"kind": kind}}});
        assert!(serde_json::from_value::<InputRecord>(value).is_err(), "{kind} accepted");
    }
}

#[test]
fn unknown_field_is_rejected() {
    let value = json!({"callLeg": {"eventId": "e1", "event_idd": "x"}});
    assert!(serde_json::from_value::<InputRecord>(value).is_err());
}

#[test]
fn snake_case_field_names_are_accepted_on_input() {
    // The proto3 JSON mapping requires parsers to accept the original proto field names too.
    let value = json!({"call_leg": {"event_id": "e1", "occurred_at": "2026-11-02T09:00:00Z"}});
    let record: InputRecord = serde_json::from_value(value).expect("parse");
    let Some(input_record::Record::CallLeg(event)) = record.record else {
        panic!("expected callLeg");
    };
    assert_eq!(event.event_id, "e1");
}
