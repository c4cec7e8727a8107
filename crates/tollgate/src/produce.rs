//! `tollgate produce`: JSON lines of `tollgate.v1.InputRecord` to Kafka as protobuf, keyed by
//! tenant and partitioned with murmur2 like the Java client.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tollgate_proto::v1;
use tollgate_worker::TopicKind;
use tollgate_worker::publish::{self, Keyed, Publisher};

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

/// What the reader hands over: a line, the end of the input (`None`), or why it could not be
/// read; or `Err(Cut)`: the start of a line, read when the signal stopped the reading.
type ReadLine = Result<io::Result<Option<Line>>, Cut>;

/// The start of a line whose rest was not read: the signal stopped the reading in it.
#[derive(Debug)]
struct Cut;

/// How long the sending loop waits for a line before it looks at the delivery reports and
/// the signals again.
const QUIET_TURN: Duration = Duration::from_millis(100);

/// Lines read ahead of the sender (each up to `MAX_LINE_BYTES`: at most 16 MiB held).
const READ_AHEAD: usize = 16;

/// Publishes every valid line; reports invalid ones with their line number and goes on: a
/// line that is not JSON of an input record, not UTF-8 text, longer than a record may be
/// ([`crate::rate::MAX_LINE_BYTES`], read without holding more of it), or whose record is
/// larger than a record may be ([`Publisher::largest_record`]).
///
/// A record Kafka did not take is said as soon as its report comes back, a quiet pipe
/// included, not only at the end. SIGINT or SIGTERM stop the reading (a pipe from a call
/// controller ends this way): every line already read is still sent (none is read from the
/// input after the signal), what was sent is flushed, the last line is named, and the exit
/// code is the signal's (130, 143). A second signal exits at once.
pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.kafka, &RunFlags::default())?;
    // The input first: a mistyped path is said at once, not after a wait for Kafka. Standard
    // input is read from its descriptor, without std's buffer, so that what was read is
    // what the line reader holds (see `StoppableInput`).
    let source: Box<dyn Read + Send> = if args.input == "-" {
        let fd = io::stdin().as_fd().try_clone_to_owned().context("failed to read standard input")?;
        Box::new(File::from(fd))
    } else {
        Box::new(File::open(&args.input).with_context(|| format!("failed to open {}", args.input))?)
    };
    let signals = StopOnSignal::listen()?;
    crate::admin::ensure_reachable(&config)?;
    let topics = &config.worker.topics;
    publish::ensure_topics(&config.worker, &[&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands]])?;
    let publisher = Publisher::new(&config.worker)?;
    let input = StoppableInput::new(source);
    let (stopping, waiting) = (Arc::clone(&input.stopping), Arc::clone(&input.waiting));
    let reads = read_ahead(input);
    let mut sending =
        Sending { publisher: &publisher, most: publisher.largest_record(), sent: 0, refused: 0, line_no: 0, said: 0 };
    let mut stopped = None;
    // A line cut by the stop: not sent, said in the summary.
    let mut cut = false;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        let read = match reads.recv_timeout(QUIET_TURN) {
            Ok(read) => Some(read),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                failure = Some(anyhow::anyhow!("the reader of {} stopped before its end", args.input));
                break;
            }
        };
        sending.report_failures();
        if stopped.is_none()
            && let Some(signal) = signals.signal()
        {
            // Nothing more is read from the input; the lines already read are still sent.
            stopping.store(true, Ordering::Release);
            stopped = Some(signal);
            eprintln!(
                "tollgate produce: {} after line {} of {}: sending the lines read, then flushing (again to exit now)",
                signal.name(),
                sending.line_no,
                args.input
            );
        }
        let Some(read) = read else {
            // Stopping, and the reader waits for the input: it holds no line it read.
            if stopped.is_some() && waiting.load(Ordering::Acquire) {
                break;
            }
            continue;
        };
        let read = match read {
            Ok(read) => read,
            Err(Cut) => {
                cut = true;
                continue;
            }
        };
        let line = match read {
            Ok(None) => break,
            Ok(Some(line)) => Ok(line),
            // The line was read to its end: the next one is read as usual.
            Err(error) if error.kind() == io::ErrorKind::InvalidData => Err("not UTF-8 text".to_owned()),
            Err(error) => {
                failure = Some(anyhow::Error::new(error).context(format!("failed to read {}", args.input)));
                break;
            }
        };
        if let Err(error) = sending.line(&config.worker.topics, line, &args.input) {
            failure = Some(error);
            break;
        }
    }
    // Whatever ended the loop, what was sent is flushed before anything is said: dropping the
    // producer would purge it.
    let flushed = publisher.flush();
    let (failed, first) = publisher.undelivered();
    let Sending { sent, refused, line_no, .. } = sending;
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
    if let Some(failure) = failure {
        return Err(failure.context(format!("{summary}, every one acknowledged; stopped after line {line_no}")));
    }
    match stopped {
        Some(signal) => {
            let partly = if cut { " (the start of the next one was, and is not sent)" } else { "" };
            eprintln!(
                "tollgate produce: {summary}, every record acknowledged; stopped by {} after line {line_no}: the lines after it were not read{partly}",
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

/// The sending side of `produce`: what it sent and refused, up to which line.
struct Sending<'a> {
    publisher: &'a Publisher,
    /// The largest record a worker takes ([`Publisher::largest_record`]).
    most: usize,
    sent: u64,
    refused: u64,
    /// The last line taken (sent, refused or blank).
    line_no: u64,
    /// Delivery failures said so far.
    said: u64,
}

impl Sending<'_> {
    /// Sends the record of the next line, or refuses the line (said with its number); fails
    /// only when the producer does.
    fn line(
        &mut self,
        topics: &tollgate_worker::Topics,
        line: Result<Line, String>,
        input: &str,
    ) -> anyhow::Result<()> {
        self.line_no += 1;
        let record = match line {
            Ok(Line::Text(text)) if text.trim().is_empty() => return Ok(()),
            Ok(Line::Text(text)) => self.record(topics, &text),
            Ok(Line::TooLong { bytes, .. }) => {
                Err(format!("a line of {bytes} bytes, more than the {MAX_LINE_BYTES} a record may have"))
            }
            Err(message) => Err(message),
        };
        match record {
            Ok(keyed) => {
                self.publisher.send(&keyed).with_context(|| format!("{input}:{}: not sent", self.line_no))?;
                self.sent += 1;
            }
            Err(message) => {
                self.refused += 1;
                eprintln!("{input}:{}: {message}", self.line_no);
            }
        }
        Ok(())
    }

    fn record(&self, topics: &tollgate_worker::Topics, text: &str) -> Result<Keyed, String> {
        let record = serde_json::from_str::<v1::InputRecord>(text).map_err(|e| e.to_string())?;
        let keyed = publish::input(topics, &record).ok_or_else(|| "no record in the line".to_owned())?;
        match keyed.value.len() {
            len if len > self.most => {
                Err(format!("a record of {len} bytes, more than the {} a record may have", self.most))
            }
            _ => Ok(keyed),
        }
    }

    /// Says the first delivery Kafka refused, as soon as its report is served (the run goes
    /// on, and ends in failure).
    fn report_failures(&mut self) {
        self.publisher.poll();
        let (failed, first) = self.publisher.undelivered();
        if failed > 0 && self.said == 0 {
            eprintln!(
                "tollgate produce: Kafka did not take a record ({}); going on, the run will end in failure",
                first.map_or_else(|| "no error code".to_owned(), |code| format!("{code:?}"))
            );
        }
        self.said = failed;
    }
}

/// The input under the line reader. Once `stopping`, it reads nothing more (the reader sees
/// an end after the lines it holds); `waiting` while it waits for the operating system, that
/// is while the reader holds no line it read (a `BufReader` reads only once its buffer is
/// empty). A line still arriving as the signal is handled is not read.
struct StoppableInput {
    source: Box<dyn Read + Send>,
    stopping: Arc<AtomicBool>,
    waiting: Arc<AtomicBool>,
    /// Set when a read found it stopping: a line it ended is a cut one.
    stopped: Arc<AtomicBool>,
}

impl StoppableInput {
    fn new(source: Box<dyn Read + Send>) -> Self {
        StoppableInput { source, stopping: Arc::default(), waiting: Arc::default(), stopped: Arc::default() }
    }
}

impl Read for StoppableInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stopping.load(Ordering::Acquire) {
            self.stopped.store(true, Ordering::Release);
            return Ok(0);
        }
        self.waiting.store(true, Ordering::Release);
        let read = self.source.read(buf);
        self.waiting.store(false, Ordering::Release);
        read
    }
}

/// Reads lines on a thread of its own, a few ahead of the sender, so that the sender hears
/// signals and delivery reports while the input has nothing to give. The thread ends after
/// the end of the input or a read error (the sender stops at either); its channel closes
/// with it.
fn read_ahead(input: StoppableInput) -> Receiver<ReadLine> {
    let (lines, reads) = mpsc::sync_channel(READ_AHEAD);
    let stopped = Arc::clone(&input.stopped);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(input);
        loop {
            let read = read_line(&mut reader, MAX_LINE_BYTES);
            let last = match &read {
                Ok(None) => true,
                Err(error) => error.kind() != io::ErrorKind::InvalidData,
                Ok(Some(_)) => false,
            };
            // A line is read to its break without asking the input for more once the break is
            // in hand: one that asked and was stopped is cut (and the end follows).
            let read = match read {
                Ok(Some(_)) | Err(_) if stopped.load(Ordering::Acquire) => Err(Cut),
                read => Ok(read),
            };
            if lines.send(read).is_err() || last {
                return;
            }
        }
    });
    reads
}

/// SIGINT and SIGTERM, heard on a thread of their own: the first is kept for the sender to
/// see at its next turn; a second ends the process at once, with its own exit code.
struct StopOnSignal {
    first: Arc<OnceLock<Stop>>,
}

impl StopOnSignal {
    /// Listens from now on (a signal before the sending starts is seen by its first turn).
    fn listen() -> anyhow::Result<Self> {
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
                let _ = seen.set(signals.next().await);
                let again = signals.next().await;
                eprintln!("tollgate produce: {}: exiting without waiting for Kafka's acknowledgements", again.name());
                std::process::exit(i32::from(again.exit_code()));
            });
        });
        Ok(StopOnSignal { first })
    }

    /// The signal heard, if any.
    fn signal(&self) -> Option<Stop> {
        self.first.get().copied()
    }
}
