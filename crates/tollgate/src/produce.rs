//! `tollgate produce`: JSON lines of `tollgate.v1.InputRecord` to Kafka as protobuf, keyed by
//! tenant and partitioned with murmur2 like the Java client.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;

use anyhow::Context;
use tollgate_proto::v1;
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Publisher};

use crate::config::{Config, KafkaFlags, RunFlags};
use crate::rate::{Line, MAX_LINE_BYTES, read_line};

/// Arguments of `tollgate produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// JSON lines of `tollgate.v1.InputRecord`; `-` reads standard input.
    #[arg(long, default_value = "-", value_name = "PATH|-")]
    input: String,
}

/// Publishes every valid line; reports invalid ones with their line number and goes on: a
/// line that is not JSON of an input record, not UTF-8 text, longer than a record may be
/// ([`crate::rate::MAX_LINE_BYTES`], read without holding more of it), or whose record is
/// larger than a record may be ([`Publisher::largest_record`]).
pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    // The input first: a mistyped path is said at once, not after a wait for Kafka.
    let mut reader: Box<dyn BufRead> = if args.input == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        Box::new(BufReader::new(File::open(&args.input).with_context(|| format!("failed to open {}", args.input))?))
    };
    crate::admin::ensure_reachable(&config)?;
    let topics = &config.worker.topics;
    publish::ensure_topics(&config.worker, &[&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands]])?;
    let publisher = Publisher::new(&config.worker)?;
    let most = publisher.largest_record();
    let (mut sent, mut refused) = (0u64, 0u64);
    let mut line_no = 0u64;
    loop {
        line_no += 1;
        let record = match read_line(&mut reader, MAX_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(Line::Text(line))) if line.trim().is_empty() => continue,
            Ok(Some(Line::Text(line))) => serde_json::from_str::<v1::InputRecord>(&line)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    publish::input(&config.worker.topics, &r).ok_or_else(|| "no record in the line".to_owned())
                })
                .and_then(|keyed| match keyed.value.len() {
                    len if len > most => {
                        Err(format!("a record of {len} bytes, more than the {most} a record may have"))
                    }
                    _ => Ok(keyed),
                }),
            Ok(Some(Line::TooLong { bytes, .. })) => {
                Err(format!("a line of {bytes} bytes, more than the {MAX_LINE_BYTES} a record may have"))
            }
            // The line was read to its end: the next one is read as usual.
            Err(error) if error.kind() == io::ErrorKind::InvalidData => Err("not UTF-8 text".to_owned()),
            Err(error) => return Err(error).with_context(|| format!("failed to read {}", args.input)),
        };
        match record {
            Ok(keyed) => {
                publisher.send(&keyed).with_context(|| format!("{}:{line_no}: not sent", args.input))?;
                sent += 1;
            }
            Err(message) => {
                refused += 1;
                eprintln!("{}:{line_no}: {message}", args.input);
            }
        }
    }
    publisher.flush().context("not every record was acknowledged by Kafka")?;
    eprintln!("tollgate produce: {sent} records sent, {refused} lines refused");
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
