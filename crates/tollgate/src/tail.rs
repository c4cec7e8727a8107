//! `tollgate tail TOPIC`: decodes any tollgate topic to JSON lines
//! (`{"partition":..,"offset":..,"key":..,"value":{..}}`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_worker::{codec, kafka};

use crate::config::{Config, KafkaFlags, RunFlags};

/// Arguments of `tollgate tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The topic (one of the configured tollgate topics).
    topic: String,
    #[command(flatten)]
    kafka: KafkaFlags,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max: Option<u64>,
}

/// Prints the topic from the beginning.
pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    let topics = &config.worker.topics;
    let Some(kind) = topics.kind_of(&args.topic) else {
        bail!("{} is not a tollgate topic of this configuration (see [worker.topics])", args.topic)
    };
    crate::admin::ensure_reachable(&config)?;
    let consumer: BaseConsumer = kafka::reader(&config.worker, "tail").create()?;
    let timeout = config.worker.kafka_timeout();
    let metadata = consumer.fetch_metadata(Some(&args.topic), timeout).context("failed to read topic metadata")?;
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {} does not exist", args.topic);
    }
    let mut assignment = TopicPartitionList::new();
    // Partitions with records left to print (to the end seen at start).
    let mut remaining = std::collections::BTreeSet::new();
    for p in &partitions {
        assignment.add_partition_offset(&args.topic, *p, Offset::Beginning)?;
        let (low, high) = consumer.fetch_watermarks(&args.topic, *p, timeout)?;
        if high > low {
            remaining.insert(*p);
        }
    }
    consumer.assign(&assignment)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    while args.follow || !remaining.is_empty() {
        if args.max.is_some_and(|max| printed >= max) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = match m.payload() {
                    None => serde_json::Value::Null,
                    Some(bytes) => {
                        codec::to_json(kind, bytes).unwrap_or_else(|e| serde_json::json!({ "undecodable": e }))
                    }
                };
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let line =
                    serde_json::json!({ "partition": m.partition(), "offset": m.offset(), "key": key, "value": value });
                writeln!(out, "{line}").context("failed to write output")?;
                printed += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => eprintln!("tollgate tail: {e}"),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
