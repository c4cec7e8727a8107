//! `tollgate verify`: reads a deployment's inputs, outputs and changelog and checks that no
//! leg was lost or charged twice and that every balance is exact (see
//! `tollgate_worker::verify`). Exit code 0 when every invariant holds, 1 when one is broken,
//! 2 for a usage error, 3 when the check could not be done (Kafka unreachable, a missing
//! topic, an unreadable changelog).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use tollgate_worker::Cancel;
use tollgate_worker::verify::{self, Expectations, InputRef};

use crate::config::{Config, KafkaFlags, RunFlags};
use crate::telemetry;

/// Exit code when the check could not be done (1 is taken by "a violation was found").
const CANNOT_CHECK: u8 = 3;

/// Arguments of `tollgate verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// Print the report as JSON (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    /// The pipeline runs exactly-once: any duplicate output, even byte-identical, is a
    /// violation.
    #[arg(long)]
    exactly_once: bool,
    /// An input that must be in the dead letters, by event or command id, or as
    /// TOPIC:PARTITION:OFFSET; repeatable. Given at least once, the dead letters must be
    /// exactly these.
    #[arg(long, value_name = "ID|TOPIC:PARTITION:OFFSET")]
    expect_dead_letter: Vec<InputRef>,
    /// No input may be in the dead letters.
    #[arg(long, conflicts_with = "expect_dead_letter")]
    expect_no_dead_letters: bool,
    /// Every input must be rated: one the workers have not rated yet is a violation. Without
    /// it, such inputs (a pipeline still at work) are counted and left out of the check, with
    /// what they caused since.
    #[arg(long)]
    all_rated: bool,
    /// Log filter for the progress lines on stderr (`info`, `warn`, ...).
    #[arg(long)]
    log: Option<String>,
}

/// Checks the deployment and prints the report.
pub fn run(mut args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let flags = RunFlags { log: args.log.take(), ..RunFlags::default() };
    let config = match Config::load(&args.kafka, &flags) {
        Ok(config) => config,
        Err(error) => return Ok(cannot_check(&error)),
    };
    let secrets = tollgate_worker::secret::values(&config.worker.librdkafka);
    telemetry::init_logs_redacting(&config.telemetry.log, config.telemetry.log_format, secrets);
    let expectations = expectations(&args);
    let report = match crate::admin::ensure_reachable(&config)
        .and_then(|()| verify::run(&config.worker, &expectations, &Cancel::default()).context("verification failed"))
    {
        Ok(report) => report,
        Err(error) => return Ok(cannot_check(&error)),
    };
    let mut out = crate::out::Stdout;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("failed to write the report")?;
        writeln!(out).context("failed to write the report")?;
    } else {
        write!(out, "{report}").context("failed to write the report")?;
    }
    Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What the flags expect beyond the invariants.
fn expectations(args: &VerifyArgs) -> Expectations {
    let dead_letters = if args.expect_no_dead_letters {
        Some(BTreeSet::new())
    } else if args.expect_dead_letter.is_empty() {
        None
    } else {
        Some(args.expect_dead_letter.iter().cloned().collect())
    };
    Expectations { exactly_once: args.exactly_once, dead_letters, all_rated: args.all_rated }
}

/// Reports why the check could not be done: 3, or the code of a Kafka access failure
/// (unreachable, TLS, authentication, authorization), which is the same for every command.
fn cannot_check(error: &anyhow::Error) -> ExitCode {
    eprintln!("tollgate verify: error: {error:#}");
    let access = tollgate_worker::access::find(error.as_ref());
    ExitCode::from(access.map_or(CANNOT_CHECK, tollgate_worker::access::Cause::exit_code))
}
