//! Golden test of `tollgate rate` over the shipped sample: the output must match
//! `examples/expected-output.jsonl` byte for byte. After an intended change of rating
//! behaviour, regenerate it with `UPDATE_GOLDEN=1 cargo test -p tollgate --test golden` and
//! review the diff like code.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Runs the rater from `examples/`, so paths in its output (dead letters name their source
/// file) do not depend on where the repository is checked out.
fn rate(events: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(examples())
        .arg("rate")
        .arg("--reference")
        .arg("reference.json")
        .arg("--events")
        .arg(events)
        .output()
        .expect("failed to run tollgate")
}

#[test]
fn rates_the_sample_exactly_as_recorded() {
    let output = rate("events.jsonl");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let golden = examples().join("expected-output.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &output.stdout).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("examples/expected-output.jsonl is missing");
    let actual = String::from_utf8(output.stdout).unwrap();
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "output line {} differs", i + 1);
    }
    assert_eq!(actual.lines().count(), expected.lines().count());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unknown_tenant"), "{stderr}");
    assert!(stderr.contains("duplicate_conflict"), "{stderr}");
}

#[test]
fn is_byte_identical_across_runs() {
    let a = rate("events.jsonl");
    let b = rate("events.jsonl");
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn reports_malformed_lines_with_their_number_and_goes_on() {
    let dir = std::env::temp_dir().join(format!("tollgate-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let good = r#"{"creditCommand":{"commandId":"c1","tenantId":"contoso","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"l1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#;
    let bad_number = r#"{"callLeg":{"eventId":"e1","tenantId":"contoso","legId":"l","occurredAt":"2026-11-01T00:00:00Z","started":{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"12"}}}"#;
    let impossible = bad_number.replace(r#""12""#, r#""+1234""#).replace(r#""e1""#, r#""e2""#);
    std::fs::write(&events, format!("{good}\nnot json\n\n{bad_number}\n{impossible}\n")).unwrap();
    let output = rate(events.to_str().unwrap());
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let path = events.display().to_string();
    assert!(stderr.contains(&format!("{path}:2: decode: ")), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:4: invalid_number: started.remoteNumber: invalid E.164 number \"12\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:5: invalid_number: leg \"l\": +1234 is not a possible number for its calling code (length or leading digits)"
        )),
        "{stderr}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].contains(r#""kind":"KIND_FUNDED","amount":"10.00""#), "{}", lines[0]);
    assert!(
        lines[1].starts_with(r#"{"deadLetter":{"original":"#)
            && lines[1].contains(r#""sourceOffset":"2","errorCode":"decode""#),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains(r#""sourceOffset":"4","errorCode":"invalid_number""#), "{}", lines[2]);
    assert!(lines[3].contains(r#""sourceOffset":"5","errorCode":"invalid_number""#), "{}", lines[3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reports_a_refused_reference_object_with_its_line() {
    let dir = std::env::temp_dir().join(format!("tollgate-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let row = r#"{"prefix": "1787", "numberType": "NUMBER_TYPE_TOLL", "price": {"perMinute": "0.0240"}}"#;
    let original = std::fs::read_to_string(examples().join("reference.json")).unwrap();
    let at = original.find(row).expect("the row is in the sample");
    let line = 1 + original[..at].matches('\n').count();
    let broken = original.replacen(row, &row.replace("0.0240", "0.012.0"), 1);
    let reference = dir.join("reference.json");
    std::fs::write(&reference, broken).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(examples())
        .args(["rate", "--reference", reference.to_str().unwrap(), "--events", "events.jsonl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let expected = format!(
        "invalid reference data: {}:{line}: rate card \"card-usd\" version \"2026-01\" dialIn prefix \"1787\": \
         price.perMinute: invalid amount \"0.012.0\"",
        reference.display()
    );
    assert!(stderr.contains(&expected), "{stderr}\nexpected: {expected}");
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
