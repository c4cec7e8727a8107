//! `tollgate report`: the usage report billing starts from. Reads `tollgate.rated-usage.v1`
//! (`read_committed`) from the beginning to the high watermarks seen at the start, keeps the
//! legs that started in `[--from, --to)` (UTC) of the tenants asked for, drops at-least-once
//! repeats by usage id, and writes one row per leg, then one total row per tenant and
//! currency: CSV (default) or JSON lines.
//!
//! A total is the exact decimal sum of its rows (charges, connection fees, seconds), so the
//! report reconciles to the cent with the ledgers' debits. Rows come in the order they are
//! first read (partition by partition); the totals are sorted by tenant and currency. The
//! rows are written once the topic is read to its ends: a later record can change a row.
//!
//! Two different records under one usage id happen under at-least-once when a batch is rated
//! again (after an abort, or by the partition's next owner) with other reference data than
//! the first time (a rate card or a tenant republished in between): the first attempt's
//! outputs were already visible. The later record is the one of the attempt that committed,
//! so the tenant's ledger was debited for it: the report keeps the last record of each id.
//!
//! A tenant asked for (`--tenant`) that has no row is named on stderr, with why: no legs in
//! the range, or no rated usage at all (a misspelt id looks like a quiet month otherwise).
//!
//! Exit codes: 0 written; 1 a failure; 2 the topic held records that are not rated usage or
//! whose amounts do not parse (left out), or two different records under one usage id (the
//! last kept); stderr names each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tollgate_core::{Currency, Money};
use tollgate_proto::{Timestamp, v1};
use tollgate_worker::Error;

use crate::config::{Config, KafkaFlags, RunFlags};

/// Arguments of `tollgate report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// Legs that started at or after this instant (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    /// Default: from the first leg the topic holds.
    #[arg(long, value_name = "INSTANT")]
    from: Option<Timestamp>,
    /// Legs that started before this instant (RFC 3339). Default: up to the last leg rated.
    #[arg(long, value_name = "INSTANT")]
    to: Option<Timestamp>,
    /// Only this tenant (repeatable; default: every tenant).
    #[arg(long = "tenant", value_name = "TENANT")]
    tenants: Vec<String>,
    /// `csv` or `jsonl`.
    #[arg(long, value_name = "FORMAT", default_value = "csv")]
    format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The report's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// One line of the report: a leg (`record` = `usage`) or a tenant's total in one currency
/// (`record` = `total`: the sums of its rows, the leg-only columns empty). The CSV header is
/// these field names, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
struct Row {
    record: &'static str,
    tenant_id: String,
    usage_id: String,
    call_id: String,
    conference_id: String,
    organizer_id: String,
    organizer_usage_location: String,
    call_type: String,
    number_type: String,
    international: Option<bool>,
    destination_country: String,
    destination_number: String,
    started_at: String,
    ended_at: String,
    duration_seconds: u64,
    billable_seconds: u64,
    pool_seconds: u64,
    connection_fee: String,
    price_per_minute: String,
    charge: String,
    currency: String,
    capability: String,
    rate_card_id: String,
    rate_card_version: String,
    rate_prefix: String,
    outcome: String,
    block_reason: String,
    /// Anomaly flags, `;`-separated.
    flags: String,
    balance_after: String,
    /// Legs in a total (1 for a leg).
    legs: u64,
}

/// A tenant's sums in one currency.
#[derive(Default)]
struct Total {
    legs: u64,
    duration: u64,
    billable: u64,
    pool: u64,
    fees: Money,
    charges: Money,
}

/// Reads the rated usage and writes the report.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    if let (Some(from), Some(to)) = (args.from, args.to)
        && to <= from
    {
        // A usage mistake, as one the parser finds: exit code 2, nothing read.
        eprintln!("tollgate report: error: --to must be after --from");
        return Ok(ExitCode::from(2));
    }
    // A mistyped output path is said at once, not after the wait for Kafka (the file itself
    // is created once the rated usage was read, so that a failed run leaves none behind and
    // an earlier report at the same path as it was).
    if let Some(dir) = args.output.as_deref().and_then(Path::parent).filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "cannot write the report to {}: there is no directory {}",
            args.output.as_deref().unwrap_or(dir).display(),
            dir.display()
        );
    }
    crate::admin::ensure_reachable(&config)?;
    let bar = ProgressBar::with_draw_target(
        None,
        if args.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(
        ProgressStyle::with_template("reading rated usage {bar:40} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let wanted: BTreeSet<&str> = args.tenants.iter().map(String::as_str).collect();
    // Every leg read, in the order first read, with the content of its last record (see the
    // module: the record its tenant's ledger was debited for); `index` finds a leg's entry.
    let mut legs: Vec<Option<Leg>> = Vec::new();
    // Per usage id read: a hash of its last record's bytes (repeats are byte-identical), and
    // where its leg is in `legs` when that record started in the range (only those are kept).
    let mut index: HashMap<String, (u64, Option<usize>)> = HashMap::new();
    let (mut repeats, mut problems) = (0u64, 0u64);
    // The tenants asked for that have any rated usage at all, in the range or not.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // Per partition, when the first record read of it ended (its latest time): the records
    // before it are the ones a trimmed partition lost.
    let mut first: HashMap<i32, Option<Timestamp>> = HashMap::new();
    let read = tollgate_worker::client::read_rated_usage(
        &config.worker,
        config.worker.kafka_timeout() * 3,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
        |partition, usage| {
            first.entry(partition).or_insert_with(|| {
                let usage = usage.as_ref().ok()?;
                usage.ended_at.into_iter().chain(usage.started_at).max()
            });
            let usage = match usage {
                Ok(usage) => usage,
                Err(error) => {
                    problems += 1;
                    eprintln!("tollgate report: not rated usage, skipped: {error}");
                    return;
                }
            };
            // The tenant is part of the usage id: every record of one id passes this or none.
            if !wanted.is_empty() && !wanted.contains(usage.tenant_id.as_str()) {
                return;
            }
            if !wanted.is_empty() && !seen.contains(usage.tenant_id.as_str()) {
                seen.insert(usage.tenant_id.clone());
            }
            let fingerprint = {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                tollgate_proto::Message::encode_to_vec(&usage).hash(&mut hasher);
                hasher.finish()
            };
            let started = usage.started_at;
            let in_range = !(args.from.is_some_and(|from| started.is_none_or(|s| s < from))
                || args.to.is_some_and(|to| started.is_none_or(|s| s >= to)));
            let known = index.get(&usage.usage_id).copied();
            let slot = match known {
                Some((seen, _)) if seen == fingerprint => {
                    repeats += 1;
                    return;
                }
                Some((_, slot)) => {
                    // A problem of this report when either record is in its range.
                    if slot.is_some() || in_range {
                        problems += 1;
                        eprintln!(
                            "tollgate report: usage id {} has two different records; the last is kept",
                            usage.usage_id
                        );
                    }
                    slot
                }
                None => None,
            };
            let leg = if in_range {
                match Leg::of(&usage) {
                    Ok(leg) => Some(leg),
                    Err(error) => {
                        problems += 1;
                        eprintln!("tollgate report: usage {} skipped: {error:#}", usage.usage_id);
                        None
                    }
                }
            } else {
                None
            };
            let slot = match (slot, leg) {
                (Some(i), leg) => {
                    legs[i] = leg;
                    Some(i)
                }
                (None, Some(leg)) => {
                    legs.push(Some(leg));
                    if legs.len() % 1000 == 0 {
                        bar.set_message(format!("{} legs", legs.len()));
                    }
                    Some(legs.len() - 1)
                }
                (None, None) => None,
            };
            index.insert(usage.usage_id, (fingerprint, slot));
        },
    );
    bar.finish_and_clear();
    let trimmed = match read {
        Ok(trimmed) => trimmed,
        Err(Error::Access(access)) => return Err(access.into()),
        Err(error) => return Err(anyhow::Error::new(error).context("failed to read the rated usage")),
    };
    // Records deleted from the topic (its retention, 7 days on a broker's default) are legs
    // the report cannot have: said, and the exit code says the report is incomplete, when the
    // range reaches back to them (they ended before the partition's first record left).
    for (partition, low) in trimmed {
        let left_from = first.get(&partition).copied().flatten();
        if args.from.is_none_or(|from| left_from.is_none_or(|t| from <= t)) {
            problems += 1;
            let since = left_from.map_or_else(|| "its first record left".to_owned(), |t| t.to_string());
            eprintln!(
                "tollgate report: partition {partition} of {} starts at offset {low}: the records before it were deleted \
                 (retention), so legs rated before {since} may be missing; give --from after it, or keep the topic longer",
                config.worker.topics[tollgate_worker::TopicKind::RatedUsage]
            );
        }
    }
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path).with_context(|| format!("failed to create {}", path.display()))?),
        None => Box::new(crate::out::Stdout),
    };
    let mut writer = Writer::new(args.format, BufWriter::new(out));
    let mut totals: BTreeMap<(String, String), Total> = BTreeMap::new();
    let mut rows = 0u64;
    for leg in legs.iter().flatten() {
        let total = totals.entry((leg.row.tenant_id.clone(), leg.row.currency.clone())).or_default();
        total.add(leg);
        writer.write(&leg.row)?;
        rows += 1;
    }
    for ((tenant, currency), total) in &totals {
        writer.write(&total.row(tenant, currency))?;
        eprintln!(
            "tollgate report: {tenant}: {} legs, {} {currency} ({} s billable, {} s pooled)",
            total.legs,
            total.format(total.charges, currency),
            total.billable,
            total.pool
        );
    }
    writer.finish()?;
    // A misspelt tenant id and a quiet month both make an empty report: say which it is.
    for tenant in wanted.iter().filter(|t| !totals.keys().any(|(known, _)| known == *t)) {
        if seen.contains(*tenant) {
            eprintln!("tollgate report: {tenant}: no legs in the range");
        } else {
            eprintln!("tollgate report: {tenant}: no rated usage at all in the topic (is the tenant id right?)");
        }
    }
    eprintln!("tollgate report: {rows} legs of {} tenants ({repeats} repeats dropped)", totals.len());
    Ok(if problems > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

impl Row {
    /// The row of one leg.
    fn of(u: &v1::RatedUsage) -> Row {
        let instant = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        Row {
            record: "usage",
            tenant_id: u.tenant_id.clone(),
            usage_id: u.usage_id.clone(),
            call_id: u.call_id.clone(),
            conference_id: u.conference_id.clone(),
            organizer_id: u.organizer_id.clone(),
            organizer_usage_location: u.organizer_usage_location.clone(),
            call_type: label(v1::CallType::try_from(u.call_type).ok().map(|e| e.as_str_name()), "CALL_TYPE_"),
            number_type: label(v1::NumberType::try_from(u.number_type).ok().map(|e| e.as_str_name()), "NUMBER_TYPE_"),
            international: Some(u.international),
            destination_country: u.destination_country.clone(),
            destination_number: u.destination_number.clone(),
            started_at: instant(u.started_at),
            ended_at: instant(u.ended_at),
            duration_seconds: u64::from(u.duration_seconds),
            billable_seconds: u64::from(u.billable_seconds),
            pool_seconds: u64::from(u.pool_seconds),
            connection_fee: u.connection_fee.clone(),
            price_per_minute: u.price_per_minute.clone(),
            charge: u.charge.clone(),
            currency: u.currency.clone(),
            capability: label(v1::Capability::try_from(u.capability).ok().map(|e| e.as_str_name()), "CAPABILITY_"),
            rate_card_id: u.rate_card_id.clone(),
            rate_card_version: u.rate_card_version.clone(),
            rate_prefix: u.rate_prefix.clone(),
            outcome: label(v1::rated_usage::Outcome::try_from(u.outcome).ok().map(|e| e.as_str_name()), "OUTCOME_"),
            block_reason: label(
                v1::BlockReason::try_from(u.block_reason).ok().map(|e| e.as_str_name()),
                "BLOCK_REASON_",
            ),
            flags: u.flags.join(";"),
            balance_after: u.balance_after.clone(),
            legs: 1,
        }
    }
}

/// A leg of the report: its row and its amounts.
struct Leg {
    row: Row,
    connection_fee: Money,
    charge: Money,
}

impl Leg {
    /// A leg from its record; an amount that does not parse refuses it (a record the worker
    /// did not write: its row would show an amount its total left out).
    fn of(usage: &v1::RatedUsage) -> anyhow::Result<Leg> {
        let amount = |text: &str, name: &str| {
            if text.is_empty() {
                Ok(Money::ZERO)
            } else {
                text.parse::<Money>().with_context(|| format!("{name} {text:?} is not an amount"))
            }
        };
        Ok(Leg {
            row: Row::of(usage),
            connection_fee: amount(&usage.connection_fee, "connection fee")?,
            charge: amount(&usage.charge, "charge")?,
        })
    }
}

impl Total {
    fn add(&mut self, leg: &Leg) {
        self.legs += 1;
        self.duration += leg.row.duration_seconds;
        self.billable += leg.row.billable_seconds;
        self.pool += leg.row.pool_seconds;
        self.fees += leg.connection_fee;
        self.charges += leg.charge;
    }

    /// An amount with at least the currency's minor units, as the rows write theirs.
    fn format(&self, amount: Money, currency: &str) -> String {
        Currency::from_code(currency).map_or_else(|_| amount.to_string(), |c| c.format(amount))
    }

    fn row(&self, tenant: &str, currency: &str) -> Row {
        Row {
            record: "total",
            tenant_id: tenant.to_owned(),
            duration_seconds: self.duration,
            billable_seconds: self.billable,
            pool_seconds: self.pool,
            connection_fee: self.format(self.fees, currency),
            charge: self.format(self.charges, currency),
            currency: currency.to_owned(),
            legs: self.legs,
            ..Row::default()
        }
    }
}

/// `CALL_TYPE_CONF_IN` → `conf_in`; unspecified or unknown → empty.
fn label(name: Option<&'static str>, prefix: &str) -> String {
    match name.and_then(|n| n.strip_prefix(prefix)) {
        Some("UNSPECIFIED") | None => String::new(),
        Some(rest) => rest.to_ascii_lowercase(),
    }
}

/// Writes rows as CSV or JSON lines.
enum Writer<W: Write> {
    // Boxed: the CSV writer carries its buffer and state, the other variant nothing. `wrote`:
    // a row (and so the header) was written.
    Csv { csv: Box<csv::Writer<W>>, wrote: bool },
    Jsonl(W),
}

impl<W: Write> Writer<W> {
    fn new(format: Format, out: W) -> Self {
        match format {
            Format::Csv => Writer::Csv { csv: Box::new(csv::Writer::from_writer(out)), wrote: false },
            Format::Jsonl => Writer::Jsonl(out),
        }
    }

    fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        match self {
            Writer::Csv { csv, wrote } => {
                *wrote = true;
                csv.serialize(row).context("failed to write the report")
            }
            Writer::Jsonl(out) => {
                serde_json::to_writer(&mut *out, row).context("failed to write the report")?;
                out.write_all(b"\n").context("failed to write the report")
            }
        }
    }

    /// Flushes the report. A CSV report without rows still gets its header, so that what
    /// imports it finds the columns (an empty file has none).
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Writer::Csv { mut csv, wrote } => {
                if !wrote {
                    csv.write_record(&csv_header()?).context("failed to write the report")?;
                }
                csv.flush()
            }
            Writer::Jsonl(mut out) => out.flush(),
        }
        .context("failed to write the report")
    }
}

/// The CSV header, as the writer writes it before the first row: the names of [`Row`]'s
/// fields.
fn csv_header() -> anyhow::Result<csv::StringRecord> {
    let mut probe = csv::Writer::from_writer(Vec::new());
    probe.serialize(Row::default()).context("failed to write the report")?;
    let bytes = probe.into_inner().map_err(|error| anyhow::anyhow!("failed to write the report: {error}"))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
    reader.records().next().context("no header")?.context("failed to write the report")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV report of no rows is its header alone, the same header a report with rows
    /// starts with; a JSON-lines report of no rows is empty.
    #[test]
    fn a_report_without_rows_still_has_its_csv_header() {
        let written = |format: Format, rows: &[Row]| {
            let mut buf = Vec::new();
            let mut writer = Writer::new(format, &mut buf);
            for row in rows {
                writer.write(row).unwrap();
            }
            writer.finish().unwrap();
            String::from_utf8(buf).unwrap()
        };
        let empty = written(Format::Csv, &[]);
        assert!(empty.starts_with("record,tenant_id,") && empty.ends_with("legs\n"), "{empty}");
        assert_eq!(empty.lines().count(), 1);
        let one = written(Format::Csv, &[Row { record: "leg", ..Row::default() }]);
        assert_eq!(one.lines().next(), empty.lines().next());
        assert_eq!(one.lines().count(), 2);
        assert_eq!(written(Format::Jsonl, &[]), "");
    }

    fn usage(id: &str, charge: &str, fee: &str) -> v1::RatedUsage {
        v1::RatedUsage {
            usage_id: id.into(),
            tenant_id: "acme".into(),
            call_type: v1::CallType::ConfOut as i32,
            number_type: v1::NumberType::TollFree as i32,
            capability: v1::Capability::Ppm as i32,
            outcome: v1::rated_usage::Outcome::Rated as i32,
            charge: charge.into(),
            connection_fee: fee.into(),
            currency: "USD".into(),
            billable_seconds: 120,
            flags: vec!["unpriced".into(), "over_max_duration".into()],
            ..v1::RatedUsage::default()
        }
    }

    /// A CSV report: a header, a line per leg with enum names billing reads, and the total
    /// of its rows, exact.
    #[test]
    fn writes_legs_and_the_exact_total_of_their_rows() {
        let mut total = Total::default();
        let mut writer = Writer::new(Format::Csv, Vec::new());
        for u in [usage("acme/l1", "0.10", "0.05"), usage("acme/l2", "0.20", "0.00")] {
            let leg = Leg::of(&u).unwrap_or_else(|e| panic!("{e}"));
            total.add(&leg);
            writer.write(&leg.row).unwrap_or_else(|e| panic!("{e}"));
        }
        writer.write(&total.row("acme", "USD")).unwrap_or_else(|e| panic!("{e}"));
        let Writer::Csv { csv, .. } = writer else { panic!("not csv") };
        let text = String::from_utf8(csv.into_inner().unwrap_or_default()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "record,tenant_id,usage_id,call_id,conference_id,organizer_id,organizer_usage_location,call_type,\
             number_type,international,destination_country,destination_number,started_at,ended_at,duration_seconds,\
             billable_seconds,pool_seconds,connection_fee,price_per_minute,charge,currency,capability,rate_card_id,\
             rate_card_version,rate_prefix,outcome,block_reason,flags,balance_after,legs"
        );
        assert_eq!(
            lines[1],
            "usage,acme,acme/l1,,,,,conf_out,toll_free,false,,,,,0,120,0,0.05,,0.10,USD,ppm,,,,rated,,unpriced;over_max_duration,,1"
        );
        assert_eq!(lines[3], "total,acme,,,,,,,,,,,,,0,240,0,0.05,,0.30,USD,,,,,,,,,2");
        assert_eq!(lines.len(), 4);
    }
}
