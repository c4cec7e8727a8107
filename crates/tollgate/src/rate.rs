//! `tollgate rate`: the offline rater.
//!
//! Reads reference data (one `tollgate.v1.ReferenceData` JSON document) and a stream of
//! `tollgate.v1.InputRecord` JSON lines, rates them with the same core the Kafka worker uses,
//! and writes every output as a `tollgate.v1.OutputRecord` JSON line (with
//! `--ledger-movements`, also one `ledgerMovement` per change of a balance: the debit trail). A line that cannot be
//! parsed or applied is reported on stderr with its line number and written out as a dead
//! letter (source offset = line number); the rater goes on with the next line, and exits with
//! status 2 at the end unless `--allow-rejects` was given.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tollgate_core::{Applied, Currency, Input, Money, Output, Rater, Reference, TenantState, UsageOutcome};
use tollgate_proto::convert::wire_money;
use tollgate_proto::limits;
use tollgate_proto::v1;

/// `eprintln!` that does not panic when stderr's reader went away (`2>&1 >/dev/null | head`):
/// the rejections and the summary are a report on the side, and rating goes on without it.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// Arguments of `tollgate rate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every line was applied (duplicates and ignored events included); \
2 when a line was rejected (written out as a dead letter), unless --allow-rejects is given; \
1 when the rater could not run (unreadable file, invalid reference data).")]
pub struct RateArgs {
    /// Reference data: a JSON `tollgate.v1.ReferenceData` document (tenants, users, rate cards).
    #[arg(long, value_name = "PATH")]
    reference: PathBuf,
    /// Input: JSON lines of `tollgate.v1.InputRecord` (call-leg events and credit commands);
    /// `-` reads standard input.
    #[arg(long, value_name = "PATH|-")]
    events: String,
    /// Print no summary on stderr.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 0 even when lines were rejected (they are still reported on stderr
    /// and written out as dead letters).
    #[arg(long)]
    allow_rejects: bool,
    /// Also write the debit trail: one `ledgerMovement` line per change of a tenant's
    /// balance (a leg's debit or refund, funding, a forfeited lot, an adjustment) with its
    /// signed amount and the balance after, before the other outputs of the input line that
    /// caused it. A tenant's movements add up to its balance.
    #[arg(long)]
    ledger_movements: bool,
}

/// The exit status of a run that rejected some lines (without `--allow-rejects`).
pub const REJECTED_STATUS: u8 = 2;

/// Counts for the closing summary.
#[derive(Debug, Default)]
struct Summary {
    lines: u64,
    applied: u64,
    duplicates: u64,
    parked: u64,
    ignored: u64,
    rejected: u64,
    legs_rated: u64,
    legs_blocked: u64,
    decisions: u64,
    credit_events: BTreeMap<&'static str, u64>,
    /// Per currency code: the currency and the sum of the charges.
    charges: BTreeMap<String, (Currency, Money)>,
}

/// Runs the offline rater.
pub fn run(args: &RateArgs) -> anyhow::Result<ExitCode> {
    let reference = load_reference(&args.reference)?;
    let mut input: Box<dyn BufRead> = if args.events == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.events).with_context(|| format!("failed to open events file {}", args.events))?;
        Box::new(BufReader::new(file))
    };
    let mut out = BufWriter::new(crate::out::Stdout);
    let rater = Rater::default();
    let mut states: BTreeMap<String, TenantState> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut outputs = Vec::new();
    let mut movements = Vec::new();

    let mut line_no = 0u64;
    loop {
        line_no += 1;
        let read = read_line(&mut input, MAX_LINE_BYTES)
            .with_context(|| format!("failed to read line {line_no} of {}", args.events))?;
        let (line, parsed) = match read {
            None => break,
            Some(Line::Text(line)) if line.trim().is_empty() => continue,
            Some(Line::Text(line)) => {
                let parsed = serde_json::from_str::<v1::InputRecord>(&line)
                    .map_err(|e| ("decode", e.to_string()))
                    .and_then(|record| Input::try_from(record).map_err(|e| (e.code(), e.to_string())));
                (line.into_bytes(), parsed)
            }
            Some(Line::TooLong { bytes, start }) => {
                let exceeded = limits::Exceeded::Record { bytes, max: MAX_LINE_BYTES };
                (start, Err((exceeded.code(), exceeded.to_string())))
            }
        };
        summary.lines += 1;
        let result = parsed.and_then(|input| {
            let state = states.entry(input.tenant_id().to_string()).or_default();
            let applied = if args.ledger_movements {
                rater.apply_traced(&reference, state, input, &mut outputs, &mut movements)
            } else {
                rater.apply(&reference, state, input, &mut outputs)
            };
            applied.map_err(|e| (e.code(), e.to_string()))
        });
        match result {
            Ok(applied) => {
                summary.applied += 1;
                match applied {
                    Applied::Duplicate => summary.duplicates += 1,
                    Applied::Parked => summary.parked += 1,
                    Applied::IgnoredAfterClose | Applied::IgnoredBeforeStart => summary.ignored += 1,
                    Applied::Processed => {}
                }
            }
            Err((code, message)) => {
                summary.rejected += 1;
                note!("{}:{line_no}: {code}: {message}", args.events);
                let dead = v1::DeadLetter {
                    original: line,
                    source_topic: args.events.clone(),
                    source_partition: 0,
                    source_offset: line_no as i64,
                    error_code: code.to_owned(),
                    message,
                    dead_at: None,
                };
                write_record(&mut out, v1::output_record::Record::DeadLetter(dead))?;
            }
        }
        for movement in movements.drain(..) {
            serde_json::to_writer(&mut out, &v1::OutputRecord::from(movement)).context("failed to write output")?;
            out.write_all(b"\n").context("failed to write output")?;
        }
        for output in outputs.drain(..) {
            summary.count(&output);
            let record = v1::OutputRecord::from(output);
            serde_json::to_writer(&mut out, &record).context("failed to write output")?;
            out.write_all(b"\n").context("failed to write output")?;
        }
    }
    out.flush().context("failed to write output")?;
    if !args.quiet {
        summary.print(&states, &reference);
    }
    Ok(if summary.rejected > 0 && !args.allow_rejects { ExitCode::from(REJECTED_STATUS) } else { ExitCode::SUCCESS })
}

/// The longest events line the rater reads whole, in bytes (the worker's default
/// `max_record_bytes`): a longer one is refused (`too_large`, its dead letter holding its first
/// [`KEPT_BYTES`]) and skipped without ever being held whole in memory.
pub(crate) const MAX_LINE_BYTES: usize = limits::DEFAULT_MAX_RECORD_BYTES;

/// How much of a line over [`MAX_LINE_BYTES`] its dead letter keeps.
const KEPT_BYTES: usize = 1024;

/// One line of the events file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Its text, without the line break (`\n` or `\r\n`).
    Text(String),
    /// A line longer than the limit: its length, and its first [`KEPT_BYTES`].
    TooLong { bytes: usize, start: Vec<u8> },
}

/// Reads the next line, holding at most `max` bytes of it: the rest of a longer one is skipped
/// as it is read. `None` at the end of the input; an error for text that is not UTF-8.
pub(crate) fn read_line(input: &mut dyn BufRead, max: usize) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    if io::Read::take(&mut *input, max as u64 + 1).read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') || buf.len() <= max {
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        return String::from_utf8(buf)
            .map(|text| Some(Line::Text(text)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
    }
    let mut bytes = buf.len();
    buf.truncate(KEPT_BYTES);
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            break;
        }
        if let Some(end) = available.iter().position(|&b| b == b'\n') {
            bytes += end;
            input.consume(end + 1);
            break;
        }
        let skipped = available.len();
        bytes += skipped;
        input.consume(skipped);
    }
    Ok(Some(Line::TooLong { bytes, start: buf }))
}

fn write_record(out: &mut impl Write, record: v1::output_record::Record) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &v1::OutputRecord { record: Some(record) }).context("failed to write output")?;
    out.write_all(b"\n").context("failed to write output")
}

/// Reads a `ReferenceData` JSON document.
pub fn load_reference(path: &Path) -> anyhow::Result<Reference> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read reference data {}", path.display()))?;
    Ok(parse_reference(&text, path)?.1)
}

/// Parses and checks a `ReferenceData` JSON document read from `path`. A refused object is
/// reported with the file's line where it starts:
/// `invalid reference data: examples/reference.json:230: rate card "card-usd" version "2026-10" dialOut prefix "44": price.perMinute: invalid amount "0.012.0"`.
pub fn parse_reference(text: &str, path: &Path) -> anyhow::Result<(v1::ReferenceData, Reference)> {
    let data: v1::ReferenceData =
        serde_json::from_str(text).with_context(|| format!("failed to parse reference data {}", path.display()))?;
    match Reference::try_from(data.clone()) {
        Ok(reference) => Ok((data, reference)),
        Err(error) => {
            let line = error.path().and_then(|p| tollgate_proto::locate::line_of(text, p));
            let place = match line {
                Some(line) => format!("{}:{line}", path.display()),
                None => path.display().to_string(),
            };
            Err(anyhow::anyhow!("invalid reference data: {place}: {error}"))
        }
    }
}

impl Summary {
    fn count(&mut self, output: &Output) {
        match output {
            Output::Usage(u) => {
                match u.outcome {
                    UsageOutcome::Rated => self.legs_rated += 1,
                    UsageOutcome::Blocked(_) => self.legs_blocked += 1,
                }
                self.charges.entry(u.currency.to_string()).or_insert((u.currency, Money::ZERO)).1 += u.charge;
            }
            Output::Decision(_) => self.decisions += 1,
            Output::Credit(c) => *self.credit_events.entry(c.kind.label()).or_default() += 1,
        }
    }

    fn print(&self, states: &BTreeMap<String, TenantState>, reference: &Reference) {
        use tollgate_core::Catalog;
        note!(
            "tollgate rate: {} lines, {} applied ({} duplicates, {} waiting for their start, {} ignored), {} rejected",
            self.lines,
            self.applied,
            self.duplicates,
            self.parked,
            self.ignored,
            self.rejected
        );
        note!(
            "  legs: {} rated, {} blocked; {} decisions; credit events: {}",
            self.legs_rated,
            self.legs_blocked,
            self.decisions,
            if self.credit_events.is_empty() {
                "none".to_owned()
            } else {
                self.credit_events.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
            }
        );
        let charges: Vec<String> = self
            .charges
            .iter()
            .map(|(code, (currency, sum))| format!("{} {code}", wire_money(*sum, *currency)))
            .collect();
        note!("  charges: {}", if charges.is_empty() { "none".to_owned() } else { charges.join(", ") });
        for (tenant, state) in states {
            let Some(currency) = reference.tenant(tenant).map(|t| t.currency) else { continue };
            note!(
                "  {tenant}: balance {} {currency}, {} legs in progress",
                wire_money(state.balance(), currency),
                state.open_legs.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], max: usize) -> Vec<Line> {
        let mut input: &[u8] = text;
        std::iter::from_fn(|| read_line(&mut input, max).unwrap()).collect()
    }

    #[test]
    fn a_line_longer_than_the_limit_is_skipped_keeping_its_length_and_start() {
        let long = "x".repeat(3000);
        let text = format!("short\r\n{long}\n{}\nlast", "y".repeat(10));
        assert_eq!(
            lines(text.as_bytes(), 2000),
            vec![
                Line::Text("short".into()),
                Line::TooLong { bytes: 3000, start: vec![b'x'; KEPT_BYTES] },
                Line::Text("y".repeat(10)),
                Line::Text("last".into()),
            ]
        );
        // At the end of the input, without a line break.
        assert_eq!(lines(long.as_bytes(), 2000), vec![Line::TooLong { bytes: 3000, start: vec![b'x'; KEPT_BYTES] }]);
        // A line of exactly the limit is read whole.
        assert_eq!(lines(&long.as_bytes()[..2000], 2000), vec![Line::Text("x".repeat(2000))]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error() {
        let mut input: &[u8] = b"\xff\xfe\n";
        assert_eq!(read_line(&mut input, 10).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
