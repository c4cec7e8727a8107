//! `tollgate produce`: JSON lines of `tollgate.v1.InputRecord` to Kafka as protobuf, keyed by
//! tenant and partitioned with murmur2 like the Java client.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;

use anyhow::Context;
use tollgate_proto::v1;
use tollgate_worker::publish::{self, Publisher};

use crate::config::{Config, KafkaFlags, RunFlags};

/// Arguments of `tollgate produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// JSON lines of `tollgate.v1.InputRecord`; `-` reads standard input.
    #[arg(long, default_value = "-", value_name = "PATH|-")]
    input: String,
}

/// Publishes every valid line; reports invalid ones with their line number and goes on.
pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    // The input first: a mistyped path is said at once, not after a wait for Kafka.
    let reader: Box<dyn BufRead> = if args.input == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::new(File::open(&args.input).with_context(|| format!("failed to open {}", args.input))?))
    };
    crate::admin::ensure_reachable(&config)?;
    let publisher = Publisher::new(&config.worker)?;
    let (mut sent, mut refused) = (0u64, 0u64);
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("failed to read {}", args.input))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str::<v1::InputRecord>(&line)
            .map_err(|e| e.to_string())
            .and_then(|r| publish::input(&config.worker.topics, &r).ok_or_else(|| "no record in the line".to_owned()));
        match record {
            Ok(keyed) => {
                publisher.send(&keyed)?;
                sent += 1;
            }
            Err(message) => {
                refused += 1;
                eprintln!("{}:{}: {message}", args.input, index + 1);
            }
        }
    }
    publisher.flush().context("not every record was acknowledged by Kafka")?;
    eprintln!("tollgate produce: {sent} records sent, {refused} lines refused");
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
