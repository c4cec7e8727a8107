//! `tollgate`: real-time usage rating for pay-per-minute meeting audio conferencing.
//!
//! Subcommands:
//! - `rate`: the offline rater (what-if pricing and re-rating from JSON lines).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod rate;

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
    /// Rate call-leg events and credit commands offline (JSON lines in, JSON lines out).
    Rate(rate::RateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rate(args) => rate::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tollgate: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
