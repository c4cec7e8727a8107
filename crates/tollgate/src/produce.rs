//! `tollgate produce`: JSON lines of `tollgate.v1.InputRecord` to Kafka as protobuf, keyed by
//! tenant and partitioned with murmur2 like the Java client.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tollgate_proto::v1;
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Publisher};

use crate::config::{Config, KafkaFlags, RunFlags};
use crate::rate::{Line, MAX_LINE_BYTES, read_line};
use crate::run::{Signals, Stop};

/// Arguments of `tollgate produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaFlags,
    /// JSON lines of `tollgate.v1.InputRecord`; `-` reads standard input.
    #[arg(long, default_value = "-", value_name = "PATH|-")]
    input: String,
}

/// A line read: a line, the end of the input (`None`), or why it could not be read.
type Read = io::Result<Option<Line>>;

/// Publishes every valid line; reports invalid ones with their line number and goes on: a
/// line that is not JSON of an input record, not UTF-8 text, longer than a record may be
/// ([`crate::rate::MAX_LINE_BYTES`], read without holding more of it), or whose record is
/// larger than a record may be ([`Publisher::largest_record`]).
///
/// A record Kafka did not acknowledge is said as soon as its report comes, not only at the
/// end. SIGINT or SIGTERM stop the reading (a pipe from a call controller ends this way):
/// what was sent is flushed, the last line read is named, so that a re-run can start after
/// it, and the exit code is the signal's (130, 143). A second signal exits at once.
pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    // The input first: a mistyped path is said at once, not after a wait for Kafka.
    let reader: Box<dyn BufRead + Send> = if args.input == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(&args.input).with_context(|| format!("failed to open {}", args.input))?))
    };
    let (lines, reads) = mpsc::sync_channel(READ_AHEAD);
    let stop = StopOnSignal::listen(lines.clone())?;
    crate::admin::ensure_reachable(&config)?;
    let topics = &config.worker.topics;
    publish::ensure_topics(&config.worker, &[&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands]])?;
    let publisher = Publisher::new(&config.worker)?;
    let most = publisher.largest_record();
    let (mut sent, mut refused, mut undelivered) = (0u64, 0u64, 0u64);
    let mut line_no = 0u64;
    read_ahead(reader, lines);
    let stopped = loop {
        let Ok(read) = reads.recv() else { break None };
        if let Some(signal) = stop.signal() {
            break Some(signal);
        }
        let read = match read {
            // A wake-up from the signal listener, heard above.
            None => continue,
            Some(Ok(None)) => break None,
            Some(Ok(Some(line))) => Ok(line),
            Some(Err(error)) => Err(error),
        };
        line_no += 1;
        let record = match read {
            Ok(Line::Text(line)) if line.trim().is_empty() => continue,
            Ok(Line::Text(line)) => serde_json::from_str::<v1::InputRecord>(&line)
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
            Ok(Line::TooLong { bytes, .. }) => {
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
        let (failed, first) = publisher.undelivered();
        if failed > 0 && undelivered == 0 {
            eprintln!(
                "tollgate produce: Kafka did not take a record ({}); going on, the run will end with exit code 1",
                first.map_or_else(|| "no error code".to_owned(), |code| format!("{code:?}"))
            );
        }
        undelivered = failed;
    };
    if let Some(signal) = stopped {
        eprintln!(
            "tollgate produce: {} after line {line_no} of {}: flushing what was sent (again to exit now)",
            signal.name(),
            args.input
        );
    }
    let flushed = publisher.flush();
    let (failed, first) = publisher.undelivered();
    let summary = format!("{sent} records sent, {refused} lines refused");
    if let Err(error) = flushed {
        let what = match first {
            Some(code) if failed > 0 => format!("{failed} of them not acknowledged by Kafka, the first with {code:?}"),
            _ => "not every record was acknowledged by Kafka".to_owned(),
        };
        let message = format!("{summary}: {what} (the input was read to line {line_no})");
        // The failures counted say it all; the flush's own error says more when none was
        // (a delivery still unreported) and names what an ACL refused (its exit code).
        return Err(if failed == 0 || tollgate_worker::access::find(&error).is_some() {
            anyhow::Error::new(error).context(message)
        } else {
            anyhow::anyhow!(message)
        });
    }
    match stopped {
        Some(signal) => {
            eprintln!(
                "tollgate produce: {summary}, every record acknowledged; stopped by {} after line {line_no}: the lines after it were not sent",
                signal.name()
            );
            Ok(ExitCode::from(signal.exit_code()))
        }
        None => {
            eprintln!("tollgate produce: {summary}");
            Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
}

/// Lines read ahead of the sender.
const READ_AHEAD: usize = 64;

/// Reads lines on a thread of its own, a few ahead of the sender, so that the sender hears a
/// signal while the input has nothing to give. Ends after the end of the input or a read
/// error (the sender stops at either).
fn read_ahead(mut reader: Box<dyn BufRead + Send>, lines: SyncSender<Option<Read>>) {
    std::thread::spawn(move || {
        loop {
            let read = read_line(&mut *reader, MAX_LINE_BYTES);
            let last = match &read {
                Ok(None) => true,
                Err(error) => error.kind() != io::ErrorKind::InvalidData,
                Ok(Some(_)) => false,
            };
            if lines.send(Some(read)).is_err() || last {
                return;
            }
        }
    });
}

/// SIGINT and SIGTERM, heard on a thread of their own: the first is kept for the sender to
/// see, with a wake-up (`None`) in its channel; a second ends the process at once.
struct StopOnSignal {
    first: Arc<OnceLock<Stop>>,
}

impl StopOnSignal {
    /// Listens from now on (a signal before the sending starts is seen by its first turn).
    fn listen(wake: SyncSender<Option<Read>>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("cannot start the signal listener")?;
        let mut signals = {
            let _entered = runtime.enter();
            Signals::listen()?
        };
        let first = Arc::new(OnceLock::new());
        let seen = Arc::clone(&first);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let signal = signals.next().await;
                let _ = seen.set(signal);
                // The sender sees it at its next turn; when the channel is full, that turn is
                // due anyway.
                let _ = wake.try_send(None);
                let again = signals.next().await;
                eprintln!("tollgate produce: {}: exiting without waiting for Kafka's acknowledgements", again.name());
                std::process::exit(i32::from(signal.exit_code()));
            });
        });
        Ok(StopOnSignal { first })
    }

    /// The signal heard, if any.
    fn signal(&self) -> Option<Stop> {
        self.first.get().copied()
    }
}
