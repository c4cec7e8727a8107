//! The invariant checker (`tollgate_worker::verify`) against what two real workers wrote to
//! librdkafka's mock cluster: a clean run checks out with exact figures, and each kind of
//! tampering with the topics is caught with its own violation.
//!
//! The mock cluster ignores read_committed, which changes nothing here: the workers run
//! at-least-once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

mod common;

use std::collections::BTreeSet;

use common::*;
use tollgate_core::Money;
use tollgate_e2e::fleet::{GroupProgress, wait_until};
use tollgate_proto::{Message as _, v1};
use tollgate_worker::TopicKind;
use tollgate_worker::partitioner::partition_for;
use tollgate_worker::verify::{self, Expectations, InputRef, Report};
use tollgate_worker::{Cancel, ProcessingGuarantee};

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

/// A leg event as a JSON line, `body` being its `started`/`interim`/`ended` member.
fn leg(tenant: &str, leg: &str, organizer: &str, suffix: &str, minute: u32, body: &str) -> String {
    format!(
        r#"{{"callLeg":{{"eventId":"{leg}-{suffix}","tenantId":"{tenant}","conferenceId":"m-{leg}","callId":"c-{leg}","legId":"{leg}","organizerId":"{organizer}","occurredAt":"2026-11-02T09:{minute:02}:00Z",{body}}}}}"#
    )
}

fn ended(seconds: u32) -> String {
    format!(r#""ended":{{"connectedSeconds":{seconds},"cause":"DISCONNECT_CAUSE_NORMAL"}}"#)
}

/// Where the poison record is: the first call-leg record on acme's partition.
fn poison_at(env: &Env) -> InputRef {
    InputRef::at(&env.config.topics[TopicKind::CallLegs], partition_for(b"acme", 2), 0)
}

/// Two workers over funding of every kind, legs of every kind in three tenants (rated,
/// blocked, dial-in, VoIP, one still open), and one poison record; stopped when everything
/// was processed.
fn pipeline() -> Env {
    let env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    assert_ne!(partition_for(b"acme", 2), partition_for(b"globex", 2), "both workers get a tenant");
    let a = env.start_worker();
    let b = env.start_worker();
    for worker in [&a, &b] {
        assert!(worker.assignment.wait_until(DEADLINE, |p| p.len() == 1), "the workers did not split the partitions");
    }
    let legs = env.config.topics[TopicKind::CallLegs].clone();
    env.publisher.send_raw(&legs, Some(b"acme"), Some(b"\xff\xff not protobuf")).unwrap();
    env.fund(&[
        fund("acme", "f1", "10.00", "USD"),
        fund("globex", "f2", "5.00", "USD"),
        fund("initech", "f3", "20.00", "EUR"),
        // Bought 17 months before: expired on arrival (FUNDED, then LOT_EXPIRED).
        r#"{"creditCommand":{"commandId":"f4","tenantId":"initech","occurredAt":"2026-11-02T08:00:00Z","fund":{"lotId":"f4","amount":"5.00","currency":"EUR","purchasedAt":"2025-06-01T00:00:00Z"}}}"#.into(),
    ]);
    let mut lines = vec![
        r#"{"creditCommand":{"commandId":"adj1","tenantId":"globex","occurredAt":"2026-11-02T08:30:00Z","adjustment":{"amount":"-1.00","currency":"USD","reason":"goodwill"}}}"#.to_owned(),
    ];
    lines.extend(dial_out("acme", "a1", "ann", US, 125, 0)); // 3 min x 0.02 = 0.06
    lines.extend(dial_out("acme", "a2", "dom", GB, 60, 1)); // blocked by policy: 0.00
    let dial_in = format!(r#""started":{{"kind":"LEG_KIND_DIAL_IN_TOLL","bridgeNumber":"{US}"}}"#);
    lines.push(leg("acme", "d1", "ann", "s", 2, &dial_in));
    lines.push(leg("acme", "d1", "ann", "e", 2, &ended(90))); // 2 min x 0.01 = 0.02
    lines.push(leg("acme", "v1", "ann", "s", 3, r#""started":{"kind":"LEG_KIND_VOIP"}"#));
    lines.push(leg("acme", "v1", "ann", "e", 3, &ended(600))); // never billed
    let dial_out_us = format!(r#""started":{{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"{US}"}}"#);
    lines.push(leg("acme", "o1", "ann", "s", 4, &dial_out_us));
    lines.push(leg("acme", "o1", "ann", "i", 6, r#""interim":{"elapsedSeconds":150}"#)); // open: 0.06 debited
    lines.extend(dial_out("acme", "a3", "ann", US, 60, 7)); // 0.02, and behind o1's interim
    lines.extend(dial_out("globex", "g1", "gus", GB, 61, 8)); // 2 min x 0.04 = 0.08
    lines.extend(dial_out("initech", "i1", "ines", GB, 61, 9)); // 2 min x 0.05 = 0.10
    lines.extend(dial_out("initech", "i2", "ines", DE, 30, 10)); // 1 min x 0.03 = 0.03
    env.publish_inputs(&lines);
    env.usages(7);
    env.read_until(&env.config.topics[TopicKind::CreditEvents], |records| {
        records
            .iter()
            .any(|(_, v, _, _)| v1::CreditEvent::decode(v.as_slice()).unwrap().credit_event_id == "globex/credit/2")
    });
    // Outputs are readable before their batch's offsets are committed. The mock cluster keeps
    // only the consumer's (asynchronous) commit, which a worker stopping at once may drop, so
    // wait for the offsets: the checker warns about inputs not yet committed.
    let credits = env.config.topics[TopicKind::CreditCommands].clone();
    let progress = GroupProgress::new(&env.config.bootstrap_servers, &env.config.group_id, &[&legs, &credits], 2);
    wait_until("every input committed", DEADLINE, || progress.caught_up());
    a.stop();
    b.stop();
    env
}

fn verify(env: &Env, expectations: &Expectations) -> Report {
    verify::run(&env.config, expectations, &Cancel::default()).expect("verify")
}

#[test]
fn a_clean_run_checks_out_with_exact_figures() {
    let env = pipeline();
    let expectations =
        Expectations { exactly_once: true, dead_letters: Some(BTreeSet::from([poison_at(&env)])), all_rated: true };
    let report = verify(&env, &expectations);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    // (tenant, currency, legs, VoIP, usages, duplicates, missing, open, charges, open debited,
    //  money in, balance, usage_charges, credit events, dead letters)
    let rows: Vec<_> = report
        .tenants
        .iter()
        .map(|r| {
            let counts = (r.legs, r.voip_legs, r.usages, r.duplicates, r.missing, r.open_legs);
            let money = (r.charges, r.open_debited, r.money_in, r.balance, r.usage_charges);
            (r.tenant.as_str(), r.currency.as_str(), counts, money, r.credit_events, r.dead_letters, r.ok)
        })
        .collect();
    let money = |a, b, c, d, e| (m(a), m(b), m(c), m(d), m(e));
    assert_eq!(
        rows,
        vec![
            ("acme", "USD", (5, 1, 4, 0, 0, 1), money("0.10", "0.06", "10.00", "9.84", "0.16"), 1, 0, true),
            ("globex", "USD", (1, 0, 1, 0, 0, 0), money("0.08", "0", "4.00", "3.92", "0.08"), 2, 0, true),
            ("initech", "EUR", (2, 0, 2, 0, 0, 0), money("0.13", "0", "20.00", "19.87", "0.13"), 3, 0, true),
        ]
    );
    let dead: Vec<_> = report.dead_letters.iter().map(|d| (d.code.as_str(), d.input_id.as_deref(), d.copies)).collect();
    assert_eq!(dead, [("decode", None, 1)]);
    let t = &env.config.topics;
    let read = |topic: &str| report.records.get(topic).copied().unwrap_or_default();
    // 1 poison + 18 leg events; 4 funds + 1 adjustment.
    assert_eq!((read(&t[TopicKind::CallLegs]), read(&t[TopicKind::CreditCommands])), (19, 5));
    // 7 usages, 9 decisions (one per start, VoIP included), 6 credit events, 1 dead letter.
    assert_eq!(
        (
            read(&t[TopicKind::RatedUsage]),
            read(&t[TopicKind::LegDecisions]),
            read(&t[TopicKind::CreditEvents]),
            read(&t[TopicKind::DeadLetter])
        ),
        (7, 9, 6, 1)
    );
}

#[test]
fn the_dead_letters_must_be_exactly_the_expected_bad_records() {
    let env = pipeline();
    let poison = poison_at(&env);
    let report = verify(
        &env,
        &Expectations { exactly_once: false, dead_letters: Some(BTreeSet::new()), ..Expectations::default() },
    );
    assert_eq!(report.violations, [format!("dead letters not expected (1): {poison} (decode)")]);
    let expected = BTreeSet::from([poison, InputRef::Id("never-sent".into())]);
    let report =
        verify(&env, &Expectations { exactly_once: false, dead_letters: Some(expected), ..Expectations::default() });
    assert_eq!(report.violations, ["expected dead letters missing (1): never-sent"]);
    assert!(!report.is_ok() && report.tenants.iter().all(|r| r.ok), "not about a tenant");
}

#[test]
fn a_usage_replayed_with_different_content_is_caught() {
    let env = pipeline();
    let mut usage = env.usages(7).remove("acme/a1").unwrap();
    usage.charge = "0.07".into();
    env.publisher
        .send_raw(&env.config.topics[TopicKind::RatedUsage], Some(b"acme"), Some(&usage.encode_to_vec()))
        .unwrap();
    env.publisher.flush().unwrap();
    let report = verify(&env, &Expectations::default());
    assert_eq!(report.violations, ["acme: usage ids with copies of different content (1): acme/a1 (2 copies)"]);
    assert_eq!(report.tenant("acme").map(|r| (r.duplicates, r.ok)), Some((1, false)));
}

/// The group's offsets are committed after each batch's transaction, and can be behind it
/// after a crash; the changelog's progress record, written in the transaction, is not.
#[test]
fn inputs_the_changelog_says_are_rated_are_not_reported_as_lag_when_the_group_is_behind() {
    let env = pipeline();
    let topics = &env.config.topics;
    let places: Vec<(String, i32)> = [&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands]]
        .into_iter()
        .flat_map(|topic| (0..2).map(move |partition| (topic.clone(), partition)))
        .collect();
    env.rewind_group(&places);
    let expectations =
        Expectations { exactly_once: true, dead_letters: Some(BTreeSet::from([poison_at(&env)])), all_rated: true };
    let report = verify(&env, &expectations);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
}

/// A leg published after the workers stopped is not rated: the changelog's progress says so.
/// It is counted and left out of the check, unless every input must be rated.
#[test]
fn a_leg_no_worker_rated_is_unrated_and_a_violation_only_when_all_must_be_rated() {
    let env = pipeline();
    env.publish_inputs(&dial_out("acme", "late", "ann", US, 60, 20));
    let report = verify(&env, &Expectations::default());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.tenant("acme").map(|r| (r.legs, r.missing, r.unrated)), Some((5, 0, 2)));
    let legs = &env.config.topics[TopicKind::CallLegs];
    assert!(
        report.warnings.iter().any(|w| w.starts_with(&format!("2 records of {legs}[")) && w.contains("not rated yet")),
        "{report}"
    );
    let report = verify(&env, &Expectations { all_rated: true, ..Expectations::default() });
    assert_eq!(report.violations.len(), 1, "{report}");
    assert!(report.violations[0].starts_with(&format!("acme: inputs not rated yet (2): {legs}:")), "{report}");
    assert_eq!(report.tenant("acme").map(|r| r.ok), Some(false));
}

#[test]
fn a_credit_event_sequence_gap_is_caught() {
    let env = pipeline();
    // acme's credit_sequence is 1: sequence 3 leaves 2 out.
    let event = acme_credit_event(3);
    env.publisher
        .send_raw(&env.config.topics[TopicKind::CreditEvents], Some(b"acme"), Some(&event.encode_to_vec()))
        .unwrap();
    env.publisher.flush().unwrap();
    let report = verify(&env, &Expectations::default());
    assert_eq!(
        report.violations,
        ["acme: credit-event sequences are not exactly 1..=1 (the restored credit_sequence); missing 2; outside it: 3"]
    );
}
