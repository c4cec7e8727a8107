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
use tollgate_proto::v1;

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
    let input: Box<dyn BufRead> = if args.events == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.events).with_context(|| format!("failed to open events file {}", args.events))?;
        Box::new(BufReader::new(file))
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let rater = Rater::default();
    let mut states: BTreeMap<String, TenantState> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut outputs = Vec::new();
    let mut movements = Vec::new();

    for (index, line) in input.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.with_context(|| format!("failed to read line {line_no} of {}", args.events))?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let parsed = serde_json::from_str::<v1::InputRecord>(&line)
            .map_err(|e| ("decode", e.to_string()))
            .and_then(|record| Input::try_from(record).map_err(|e| (e.code(), e.to_string())));
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
                eprintln!("{}:{line_no}: {code}: {message}", args.events);
                let dead = v1::DeadLetter {
                    original: line.clone().into_bytes(),
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
        eprintln!(
            "tollgate rate: {} lines, {} applied ({} duplicates, {} waiting for their start, {} ignored), {} rejected",
            self.lines, self.applied, self.duplicates, self.parked, self.ignored, self.rejected
        );
        eprintln!(
            "  legs: {} rated, {} blocked; {} decisions; credit events: {}",
            self.legs_rated,
            self.legs_blocked,
            self.decisions,
            self.credit_events.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        );
        let charges: Vec<String> = self
            .charges
            .iter()
            .map(|(code, (currency, sum))| format!("{} {code}", wire_money(*sum, *currency)))
            .collect();
        eprintln!("  charges: {}", if charges.is_empty() { "none".to_owned() } else { charges.join(", ") });
        for (tenant, state) in states {
            let Some(currency) = reference.tenant(tenant).map(|t| t.currency) else { continue };
            eprintln!(
                "  {tenant}: balance {} {currency}, {} legs in progress",
                wire_money(state.balance(), currency),
                state.open_legs.len()
            );
        }
    }
}
