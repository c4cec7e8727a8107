//! Golden test of `tollgate rate` over the shipped sample: the command the README shows, run
//! as the README runs it (from the repository root), must write
//! `examples/expected-output.jsonl` byte for byte, and the summary the README shows. After an
//! intended change of rating behaviour, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test -p tollgate --test golden` and review the diff like code.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> PathBuf {
    root().join("examples")
}

/// The README's `tollgate rate` example: its arguments (after `cargo run --release --`, without
/// the redirection) and the summary lines it shows (without the `...` line).
fn readme_rate_example() -> (Vec<String>, Vec<String>) {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let at =
        lines.iter().position(|l| l.starts_with("cargo run --release -- rate ")).expect("the README's rate command");
    let command = lines[at].split_once(" -- ").unwrap().1;
    let command = command.split_once('>').map_or(command, |(args, _)| args);
    let args = command.split_whitespace().map(str::to_owned).collect();
    let summary = lines[at..]
        .iter()
        .skip_while(|l| !l.starts_with("tollgate rate: "))
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| l.trim() != "...")
        .map(|l| (*l).to_owned())
        .collect();
    (args, summary)
}

/// Runs `tollgate` with `args` from `examples/`, so paths in its output (dead letters name
/// their source file) do not depend on where the repository is checked out.
fn tollgate_in_examples(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(examples())
        .args(args)
        .output()
        .expect("failed to run tollgate")
}

/// Rates `events` with the sample's reference data.
fn rate(events: &str) -> std::process::Output {
    tollgate_in_examples(&["rate", "--reference", "reference.json", "--events", events])
}

/// A fresh directory `tollgate-<name>-<pid>` under the temporary directory; the test removes it.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A line the sample rates: contoso funded with 10.00 USD.
const FUND_CONTOSO: &str = r#"{"creditCommand":{"commandId":"c1","tenantId":"contoso","occurredAt":"2026-11-01T00:00:00Z","fund":{"lotId":"l1","amount":"10.00","currency":"USD","purchasedAt":"2026-11-01T00:00:00Z"}}}"#;

#[test]
fn rates_the_sample_exactly_as_recorded() {
    let (args, summary) = readme_rate_example();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate")).current_dir(root()).args(&args).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
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
    // The README's four summary lines (the command, legs, charges, a balance), each checked.
    assert_eq!(summary.len(), 4, "{summary:?}");
    for line in summary {
        // A line the README cuts short ends with "...": the rest must be as printed.
        let found = match line.strip_suffix("...") {
            Some(start) => stderr.lines().any(|l| l.starts_with(start)),
            None => stderr.lines().any(|l| l == line),
        };
        assert!(found, "the README shows {line:?}, the rater printed:\n{stderr}");
    }
}

#[test]
fn exits_with_status_2_when_a_line_was_rejected_unless_allowed() {
    // The sample has two bad lines on purpose.
    let strict = rate("events.jsonl");
    assert_eq!(strict.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(stderr.contains(", 2 rejected"), "{stderr}");
    let allowed =
        tollgate_in_examples(&["rate", "--reference", "reference.json", "--events", "events.jsonl", "--allow-rejects"]);
    assert_eq!(allowed.status.code(), Some(0));
    assert_eq!(allowed.stdout, strict.stdout);
    // Without a rejected line, 0.
    let dir = scratch_dir("clean");
    let events = dir.join("events.jsonl");
    let sample = std::fs::read_to_string(examples().join("events.jsonl")).unwrap();
    let first: Vec<&str> = sample.lines().take(100).collect();
    std::fs::write(&events, first.join("\n")).unwrap();
    assert_eq!(rate(events.to_str().unwrap()).status.code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn says_what_the_exit_status_means_in_its_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate")).args(["rate", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--allow-rejects"), "{help}");
    assert!(help.contains("2 when a line was rejected"), "{help}");
}

#[test]
fn is_byte_identical_across_runs() {
    let a = rate("events.jsonl");
    let b = rate("events.jsonl");
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn reports_malformed_lines_with_their_number_and_goes_on() {
    let dir = scratch_dir("golden");
    let events = dir.join("events.jsonl");
    let bad_number = r#"{"callLeg":{"eventId":"e1","tenantId":"contoso","legId":"l","occurredAt":"2026-11-01T00:00:00Z","started":{"kind":"LEG_KIND_DIAL_OUT","remoteNumber":"12"}}}"#;
    let impossible = bad_number.replace(r#""12""#, r#""+1234""#).replace(r#""e1""#, r#""e2""#);
    std::fs::write(&events, format!("{FUND_CONTOSO}\nnot json\n\n{bad_number}\n{impossible}\n")).unwrap();
    let output = rate(events.to_str().unwrap());
    assert_eq!(output.status.code(), Some(2));
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

/// A line over the limit (1 MiB) is refused and skipped as it is read, never held whole; its
/// dead letter keeps its first 1024 bytes, and the lines after it are rated.
#[test]
fn refuses_a_line_longer_than_a_mebibyte_and_goes_on() {
    let dir = scratch_dir("golden-long");
    let events = dir.join("events.jsonl");
    let long = format!(r#"{{"callLeg":{{"eventId":"{}"}}}}"#, "e".repeat(1_100_000));
    std::fs::write(&events, format!("{long}\n{FUND_CONTOSO}\n")).unwrap();
    let output = rate(events.to_str().unwrap());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let message =
        format!("{}:1: too_large: a value of {} bytes, more than the 1048576 allowed", events.display(), long.len());
    assert!(stderr.contains(&message), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", &stdout[..stdout.len().min(2000)]);
    let dead: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(dead["deadLetter"]["errorCode"], "too_large");
    assert_eq!(dead["deadLetter"]["original"].as_str().unwrap().len(), 1368, "1024 bytes in base64");
    assert!(lines[1].contains(r#""kind":"KIND_FUNDED","amount":"10.00""#), "{}", lines[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reports_a_refused_reference_object_with_its_line() {
    let dir = scratch_dir("reference");
    let row = r#"{"prefix": "1787", "numberType": "NUMBER_TYPE_TOLL", "price": {"perMinute": "0.0240"}}"#;
    let original = std::fs::read_to_string(examples().join("reference.json")).unwrap();
    let at = original.find(row).expect("the row is in the sample");
    let line = 1 + original[..at].matches('\n').count();
    let broken = original.replacen(row, &row.replace("0.0240", "0.012.0"), 1);
    let reference = dir.join("reference.json");
    std::fs::write(&reference, broken).unwrap();
    let output =
        tollgate_in_examples(&["rate", "--reference", reference.to_str().unwrap(), "--events", "events.jsonl"]);
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

#[test]
fn ledger_movements_add_up_to_each_tenant_balance() {
    use std::collections::BTreeMap;
    use tollgate_core::Money;
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(root())
        .args(["rate", "--reference", "examples/reference.json", "--events", "examples/events.jsonl"])
        .args(["--allow-rejects", "--ledger-movements"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    // Without the trail, the output is the golden one: the trail adds lines, changes none.
    let rest: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(r#"{"ledgerMovement":"#)).collect();
    let golden = std::fs::read_to_string(examples().join("expected-output.jsonl")).unwrap();
    assert_eq!(rest, golden.lines().collect::<Vec<_>>());
    // Per tenant: each balanceAfter is the running sum of the amounts.
    let mut balances: BTreeMap<String, (Money, String)> = BTreeMap::new();
    let mut count = 0;
    for line in stdout.lines().filter(|l| l.starts_with(r#"{"ledgerMovement":"#)) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let m = &value["ledgerMovement"];
        let money = |field: &str| m[field].as_str().unwrap().parse::<Money>().unwrap();
        let (balance, currency) = balances.entry(m["tenantId"].as_str().unwrap().to_owned()).or_default();
        *balance += money("amount");
        *currency = m["currency"].as_str().unwrap().to_owned();
        assert_eq!(*balance, money("balanceAfter"), "{line}");
        count += 1;
    }
    assert_eq!(count, 212, "movements");
    // The sums are the balances the summary reports.
    for (tenant, (balance, currency)) in &balances {
        let currency = tollgate_core::Currency::from_code(currency).unwrap();
        let line = format!("  {tenant}: balance {} {currency}, ", currency.format(*balance));
        assert!(stderr.lines().any(|l| l.starts_with(&line)), "{line:?} not in\n{stderr}");
    }
    let kinds = ["KIND_DEBIT", "KIND_FUNDING", "KIND_ADJUSTMENT"];
    for kind in kinds {
        assert!(stdout.contains(&format!(r#""kind":"{kind}""#)), "no {kind}");
    }
}

/// `tollgate rate ... | head`: a reader that stops reading ends the command quietly, with
/// status 0, not with a write error (or, as `println!` did elsewhere, a panic).
#[test]
fn ends_quietly_when_the_reader_of_its_output_is_gone() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(examples())
        .args(["rate", "--reference", "reference.json", "--events", "events.jsonl", "--allow-rejects"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closed before anything was read: the first write fails.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("tollgate: error") && !stderr.contains("panicked"), "{stderr}");
}

/// `tollgate rate ... 2>&1 >/dev/null | head`: when the reader of the rejections goes away,
/// rating goes on to the end and exits as it would have (2: lines were rejected), not with a
/// panic (101) from a write to stderr.
#[test]
fn goes_on_when_the_reader_of_its_rejections_is_gone() {
    // A pipe whose read end is closed before the command starts: every write to it fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(root())
        .args(["rate", "--reference", "examples/reference.json", "--events", "examples/events.jsonl"])
        .stderr(writer)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let golden = std::fs::read_to_string(examples().join("expected-output.jsonl")).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), golden);
}
