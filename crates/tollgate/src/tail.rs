//! `tollgate tail TOPIC`: decodes any tollgate topic to JSON lines
//! (`{"partition":..,"offset":..,"key":..,"value":{..}}`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tollgate_worker::client::TopicReader;
use tollgate_worker::record::Record;
use tollgate_worker::{Error, codec};

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
    /// The last this many records (oldest first), instead of the whole topic; with `-f`,
    /// then what comes.
    #[arg(long, short = 'n')]
    last: Option<u64>,
}

/// Prints the topic from the beginning, or its last records.
pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    let topics = &config.worker.topics;
    let Some(kind) = topics.kind_of(&args.topic) else {
        bail!("{} is not a tollgate topic of this configuration (see [worker.topics])", args.topic)
    };
    crate::admin::ensure_reachable(&config)?;
    let reader = TopicReader::from_beginning(&config.worker, "tail", &[&args.topic])?;
    let mut out = crate::out::Stdout;
    let mut print = |record: &Record| -> anyhow::Result<()> {
        let value = match &record.payload {
            None => serde_json::Value::Null,
            Some(bytes) => {
                let key = record.key.as_deref().unwrap_or_default();
                codec::to_json(kind, key, bytes).unwrap_or_else(|e| serde_json::json!({ "undecodable": e }))
            }
        };
        let key = record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned());
        let line = serde_json::json!({
            "partition": record.partition, "offset": record.offset, "key": key, "value": value
        });
        writeln!(out, "{line}").context("failed to write output")
    };
    if let Some(n) = args.last {
        for record in reader.last(n, config.worker.kafka_timeout() * 6)? {
            print(&record)?;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        reader.go_on_from_ends()?;
    }
    while args.follow || !reader.caught_up()? {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(record)) => print(&record)?,
            // A missing ACL does not heal: stop, naming the topic.
            Some(Err(Error::Access(access))) => return Err(access.into()),
            Some(Err(e)) => eprintln!("tollgate tail: {e}"),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
