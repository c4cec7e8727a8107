//! `tollgate`: real-time usage rating for pay-per-minute meeting audio conferencing.
//!
//! Subcommands:
//! - `run`: a worker of the rating consumer group (the main job against a real Kafka).
//! - `demo`: the main job on an embedded Kafka, with traffic, a progress bar and a summary.
//! - `rate`: the offline rater (JSON lines in, JSON lines out; no Kafka).
//! - `produce`, `tail`, `admin`: operator tools.
//! - `verify`: the invariant checker (no leg lost or charged twice, balances exact).
//! - `balance`: a tenant's committed credit position, from any worker's tenant API.
//! - `report`: the usage report (CSV or JSON lines) of a time range, with exact totals.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: a worker allocates and frees from many threads at
/// once (partition tasks, librdkafka), where glibc's arenas spent about a fifth of a worker's
/// CPU in `malloc`, `free` and their consolidation (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod balance;
mod config;
mod demo;
mod http;
mod out;
mod produce;
mod rate;
mod redact;
mod report;
mod run;
mod tail;
mod telemetry;
mod verify;

/// tollgate: rates call legs of pay-per-minute meeting audio conferencing against prepaid
/// communications credits.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a rating worker (a member of the consumer group) until SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// Run the whole pipeline on an embedded Kafka with generated traffic, then summarize.
    Demo(demo::DemoArgs),
    /// Rate call-leg events and credit commands offline (JSON lines in, JSON lines out).
    Rate(rate::RateArgs),
    /// Publish JSON lines of input records to Kafka as protobuf, keyed and partitioned by tenant.
    Produce(produce::ProduceArgs),
    /// Print a tollgate topic as JSON lines.
    Tail(tail::TailArgs),
    /// Create topics, publish reference data, fund tenants.
    Admin(admin::AdminArgs),
    /// Check from Kafka alone that no leg was lost or charged twice and every balance is exact
    /// (exit code 1 when not).
    Verify(verify::VerifyArgs),
    /// Show a tenant's committed balance, lots, pool and open legs, asked of any worker's
    /// tenant API (exit code 3 while its partition restores).
    Balance(balance::BalanceArgs),
    /// Write the usage report of a time range from the rated usage: one row per leg, then
    /// the exact totals per tenant and currency (CSV or JSON lines).
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Rate(args) => rate::run(&args),
        Command::Produce(args) => produce::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Balance(args) => balance::run(&args),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader of the output had enough (`tollgate tail | head`): a quiet, clean end.
        Err(_) if out::reader_gone() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tollgate: error: {err:#}");
            exit_code(&err)
        }
    }
}

/// 1 for most failures; a code of its own when Kafka could not be used, per cause
/// (unreachable, TLS, authentication, authorization: `tollgate_worker::access`).
fn exit_code(err: &anyhow::Error) -> ExitCode {
    match tollgate_worker::access::find(err.as_ref()) {
        Some(cause) => ExitCode::from(cause.exit_code()),
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;
    use crate::config::{Config, KafkaFlags, RunFlags};

    /// Every `tollgate ...` and `cargo run ... -- ...` command line the README shows parses,
    /// and the `TOLLGATE_*=value` assignments in front of one are settings.
    #[test]
    fn every_command_line_in_the_readme_parses() {
        let readme = include_str!("../../../README.md");
        let mut checked = 0;
        let mut in_shell_block = false;
        for line in readme.lines() {
            if line.starts_with("```") {
                in_shell_block = line == "```sh";
                continue;
            }
            if !in_shell_block {
                continue;
            }
            let shown = line.split(" #").next().unwrap_or(line).split(" >").next().unwrap_or(line).trim();
            let mut line = shown;
            let mut env = Vec::new();
            while let Some((word, rest)) = line.split_once(' ')
                && let Some((name, value)) = word.split_once('=')
                && name.starts_with("TOLLGATE_")
            {
                env.push((name.to_owned(), value.to_owned()));
                line = rest.trim_start();
            }
            let args: Vec<&str> = if let Some(rest) = line.strip_prefix("cargo run --release -- ") {
                rest.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("tollgate ") {
                rest.split_whitespace().collect()
            } else {
                continue;
            };
            let argv = std::iter::once("tollgate").chain(args);
            if let Err(error) = Cli::try_parse_from(argv) {
                panic!("README line does not parse: {shown}\n{error}");
            }
            if let Err(error) = Config::load_with_env(&KafkaFlags::default(), &RunFlags::default(), env) {
                panic!("README line sets an invalid variable: {shown}\n{error:#}");
            }
            checked += 1;
        }
        assert!(checked >= 9, "only {checked} README command lines found");
    }
}
