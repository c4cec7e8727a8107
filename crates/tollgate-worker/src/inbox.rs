//! A partition task's inbox: an unbounded channel that counts the records waiting in it.
//!
//! The polling thread never blocks on a task. It hands every record over at once and, when a
//! task falls behind (its inbox holds [`Backpressure::pause_at`] records), pauses that
//! partition's fetching; once the task has worked its inbox down to
//! [`Backpressure::resume_at`], the partition is resumed. A task busy committing a batch so
//! holds up only its own partition, not every partition of the worker (which a bounded
//! channel, blocking the polling thread when full, did), and memory stays bounded.
//!
//! Pausing loses nothing: librdkafka fetches a paused partition again from the position after
//! the last record it handed out, and drops what it had fetched beyond it.
//!
//! The inbox also drops the records its task's restored state already holds
//! ([`Inbox::skip_rated`]): the group's committed offsets may lag the changelog's record of
//! progress (they are committed after each transaction, without waiting), so a new owner can
//! be handed records its predecessor rated. And it hands its task each offset once: a record
//! at or before one already taken (fetched again after a seek) is dropped the same way. A
//! batch then never holds a record twice, which the changelog's window segments rely on
//! (a tenant's segment is named by the offset of its first record in the batch).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use crate::batch::Progress;
use crate::partition::Command;
use crate::record::Record;

/// The sending half, kept by the polling thread.
#[derive(Debug)]
pub struct Mailbox {
    tx: Sender<Command>,
    queued: Arc<AtomicUsize>,
}

/// The receiving half, read by the partition task.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Command>,
    queued: Arc<AtomicUsize>,
    /// Records before these offsets are dropped: rated by the restored state, or taken
    /// already.
    rated: Progress,
    /// Records dropped so.
    skipped: u64,
}

/// A new inbox and its mailbox.
pub fn channel_pair() -> (Mailbox, Inbox) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Mailbox { tx, queued: Arc::clone(&queued) }, Inbox { rx, queued, rated: Progress::default(), skipped: 0 })
}

impl Mailbox {
    /// Hands a record over without blocking; returns the records now waiting (0 when the task
    /// is gone and the record was dropped: it is fetched again by the partition's next owner).
    pub fn send(&self, record: Record) -> usize {
        let waiting = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if self.tx.send(Command::Record(record)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return 0;
        }
        waiting
    }

    /// Tells the task to commit its batch and exit.
    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }

    /// Records handed over and not yet taken by the task.
    pub fn waiting(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl Inbox {
    /// From now on, drops the records `rated` says are rated already (they are never handed
    /// to the task).
    pub fn skip_rated(&mut self, rated: Progress) {
        for (topic, &next) in &rated.next {
            self.rated.pass(topic, next);
        }
    }

    /// Records dropped as rated or taken already.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next command, waiting up to `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Command, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            let command = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            if let Some(command) = self.taken(command) {
                return Ok(command);
            }
        }
    }

    /// The next command if one waits.
    pub fn try_recv(&mut self) -> Result<Command, TryRecvError> {
        loop {
            if let Some(command) = self.taken(self.rx.try_recv()?) {
                return Ok(command);
            }
        }
    }

    /// A batch of whatever arrives: what was carried over and what already waits, at once,
    /// up to `batch_size`. Only a batch that starts from idle (its first record had to be
    /// waited for) waits for company, until `commit_interval` after the previous batch left
    /// (`previous`; with none, after that first record): under load a batch is what arrived
    /// while the previous one was committed, and leaves at once; a partition that went quiet
    /// commits at most once per interval, like Kafka Streams' `commit.interval.ms`, and its
    /// first record waits only for what is left of the interval, not for a whole one. `idle`
    /// is called about every [`IDLE_TICK`] while nothing arrives, with a question it may ask
    /// as often as it likes: whether a record has arrived since (then it should return soon).
    pub fn take_batch(
        &mut self,
        carry: &mut VecDeque<Record>,
        batch_size: usize,
        commit_interval: Duration,
        previous: Option<Instant>,
        mut idle: impl FnMut(&dyn Fn() -> bool),
    ) -> Taken {
        // Sized for what is in hand, so that a large batch is not grown (and copied) by doubling.
        let in_hand = carry.len().saturating_add(self.queued.load(Ordering::Relaxed));
        let records = Vec::with_capacity(in_hand.min(batch_size));
        let mut batch = Taken { records, stop: false, waited: false };
        while batch.records.len() < batch_size {
            match carry.pop_front() {
                Some(record) => batch.records.push(record),
                None => break,
            }
        }
        while batch.records.len() < batch_size {
            match self.try_recv() {
                Ok(Command::Record(record)) => batch.records.push(record),
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return batch.stopped(),
                Err(TryRecvError::Empty) => break,
            }
        }
        while batch.records.is_empty() {
            batch.waited = true;
            idle(&|| self.arrived());
            match self.recv_timeout(IDLE_TICK) {
                Ok(Command::Record(record)) => batch.records.push(record),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return batch.stopped(),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        let deadline = company_until(previous, commit_interval, Instant::now());
        while batch.waited && batch.records.len() < batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_timeout(left) {
                Ok(Command::Record(record)) => batch.records.push(record),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return batch.stopped(),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        batch
    }

    /// Whether a record waits to be taken.
    pub fn arrived(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    /// Counts a command taken off the channel; `None` when it is a record rated already.
    fn taken(&mut self, command: Command) -> Option<Command> {
        if let Command::Record(record) = &command {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if !self.rated.pass_record(record) {
                self.skipped += 1;
                return None;
            }
        }
        Some(command)
    }
}

/// Until when a batch that started from idle at `now` waits for company: the commit interval
/// after the previous batch left (`previous`), or after `now` when there was none; never
/// before `now` (see [`Inbox::take_batch`]).
pub fn company_until(previous: Option<Instant>, commit_interval: Duration, now: Instant) -> Instant {
    previous.map_or(now + commit_interval, |left| (left + commit_interval).max(now))
}

/// How often [`Inbox::take_batch`] calls its `idle` while nothing arrives.
pub const IDLE_TICK: Duration = Duration::from_secs(5);

/// What [`Inbox::take_batch`] took.
#[derive(Debug)]
pub struct Taken {
    /// The records, in arrival order.
    pub records: Vec<Record>,
    /// The task was told to stop (or the mailbox is gone): commit these and exit.
    pub stop: bool,
    /// The first record had to be waited for: the batch started from idle.
    pub waited: bool,
}

impl Taken {
    fn stopped(mut self) -> Taken {
        self.stop = true;
        self
    }
}

/// When a partition is paused and resumed, in records waiting in its task's inbox.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backpressure {
    /// Pause fetching at this many.
    pub pause_at: usize,
    /// Resume at this many or fewer.
    pub resume_at: usize,
}

impl Backpressure {
    /// Four batches' worth waiting pauses; resumed at two batches left, so that the task has
    /// records to rate while fetching starts again: a resumed partition's first records come
    /// with the consumer's next fetch response, up to `fetch.wait.max.ms` later, and a task
    /// resumed below one batch sat idle for most of that time, then paused again a few
    /// batches later (`docs/BENCHMARKS.md`, "Window segments, and a partition resumed without
    /// waiting").
    pub fn for_batch_size(batch_size: usize) -> Self {
        let batch = batch_size.max(1);
        Backpressure { pause_at: batch.saturating_mul(4), resume_at: batch.saturating_mul(2) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> Record {
        Record { topic: "t".into(), partition: 0, offset, timestamp: 0, produced_at: 0, key: None, payload: None }
    }

    #[test]
    fn counts_the_records_waiting_and_not_the_stop() {
        let (mailbox, mut inbox) = channel_pair();
        assert_eq!((mailbox.send(record(0)), mailbox.send(record(1))), (1, 2));
        mailbox.stop();
        assert!(matches!(inbox.try_recv(), Ok(Command::Record(r)) if r.offset == 0));
        assert_eq!(mailbox.waiting(), 1);
        assert!(matches!(inbox.recv_timeout(Duration::ZERO), Ok(Command::Record(r)) if r.offset == 1));
        assert!(matches!(inbox.try_recv(), Ok(Command::Stop)));
        assert_eq!(mailbox.waiting(), 0);
    }

    #[test]
    fn a_record_for_a_task_that_is_gone_is_not_counted() {
        let (mailbox, inbox) = channel_pair();
        drop(inbox);
        assert_eq!(mailbox.send(record(0)), 0);
        assert_eq!(mailbox.waiting(), 0);
    }

    #[test]
    fn records_rated_already_are_dropped_and_counted_taken() {
        let (mailbox, mut inbox) = channel_pair();
        inbox.skip_rated(Progress { next: [("t".to_owned(), 2)].into() });
        for offset in 0..4 {
            mailbox.send(record(offset));
        }
        let other = Record { topic: "u".into(), ..record(0) };
        mailbox.send(other);
        mailbox.stop();
        assert!(matches!(inbox.recv_timeout(Duration::ZERO), Ok(Command::Record(r)) if r.offset == 2));
        assert_eq!((inbox.skipped(), mailbox.waiting()), (2, 2));
        assert!(matches!(inbox.try_recv(), Ok(Command::Record(r)) if r.offset == 3));
        assert!(matches!(inbox.try_recv(), Ok(Command::Record(r)) if r.topic == "u" && r.offset == 0));
        assert!(matches!(inbox.try_recv(), Ok(Command::Stop)));
        assert_eq!((inbox.skipped(), mailbox.waiting()), (2, 0));
    }

    /// A partition sought back while its task waits (say, restarted while the task was still
    /// restoring) delivers records again: each offset reaches the task once.
    #[test]
    fn records_taken_already_are_dropped_when_delivered_again() {
        let (mailbox, mut inbox) = channel_pair();
        for offset in [0, 1, 2, 1, 2, 3] {
            mailbox.send(record(offset));
        }
        mailbox.send(Record { topic: "u".into(), ..record(1) });
        let mut taken = Vec::new();
        while let Ok(Command::Record(r)) = inbox.try_recv() {
            taken.push((r.topic, r.offset));
        }
        let t = |offset| ("t".to_owned(), offset);
        assert_eq!(taken, [t(0), t(1), t(2), t(3), ("u".to_owned(), 1)]);
        assert_eq!((inbox.skipped(), mailbox.waiting()), (2, 0));
        // The restored progress, set after records were taken, moves nothing back.
        mailbox.send(record(3));
        inbox.skip_rated(Progress { next: [("t".to_owned(), 1)].into() });
        assert!(inbox.try_recv().is_err());
        assert_eq!(inbox.skipped(), 3);
    }

    #[test]
    fn pauses_at_four_batches_and_resumes_at_two() {
        assert_eq!(Backpressure::for_batch_size(5000), Backpressure { pause_at: 20_000, resume_at: 10_000 });
        assert_eq!(Backpressure::for_batch_size(1), Backpressure { pause_at: 4, resume_at: 2 });
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_batch_whose_records_already_wait_leaves_at_once() {
        let (mailbox, mut inbox) = channel_pair();
        mailbox.send(record(1));
        mailbox.send(record(2));
        // Nothing carried over, two records waiting: the batch did not start from idle, so it
        // neither waits for company (the flag says so) nor calls `idle`.
        let batch = inbox.take_batch(&mut VecDeque::new(), 10, Duration::from_millis(10), None, |_| panic!("not idle"));
        assert_eq!((offsets(&batch.records), batch.waited, batch.stop), (vec![1, 2], false, false));
        assert_eq!(mailbox.waiting(), 0);
        let mut carry = VecDeque::from([record(3)]);
        let batch = inbox.take_batch(&mut carry, 10, Duration::from_millis(10), None, |_| panic!("not idle"));
        assert_eq!((offsets(&batch.records), batch.waited), (vec![3], false));
    }

    #[test]
    fn a_batch_takes_at_most_batch_size_and_carries_nothing_over_itself() {
        let (mailbox, mut inbox) = channel_pair();
        let mut carry = VecDeque::from([record(0), record(1), record(2)]);
        mailbox.send(record(3));
        let batch = inbox.take_batch(&mut carry, 2, Duration::from_secs(3600), None, |_| panic!("not idle"));
        assert_eq!((offsets(&batch.records), batch.waited), (vec![0, 1], false));
        assert_eq!(carry.len(), 1);
        assert_eq!(mailbox.waiting(), 1);
    }

    #[test]
    fn a_batch_from_idle_waits_for_company() {
        let (mailbox, mut inbox) = channel_pair();
        let (go, went) = std::sync::mpsc::channel();
        // The records are sent once the batch waits (its first `idle` call), one by one.
        let sender = std::thread::spawn(move || {
            went.recv().expect("go");
            mailbox.send(record(7));
            mailbox.send(record(8));
            mailbox
        });
        let mut idle_calls = 0;
        let batch = inbox.take_batch(&mut VecDeque::new(), 2, Duration::from_secs(3600), None, |_| {
            idle_calls += 1;
            let _ = go.send(());
        });
        let mailbox = sender.join().expect("sender");
        // Both: the second arrived after the first was taken, and the batch waited for it.
        assert_eq!((offsets(&batch.records), batch.waited, batch.stop), (vec![7, 8], true, false));
        assert!(idle_calls >= 1);
        mailbox.stop();
        let batch = inbox.take_batch(&mut VecDeque::new(), 2, Duration::from_secs(3600), None, |_| {});
        assert_eq!((batch.records.len(), batch.stop), (0, true));
    }

    /// What `idle` does while nothing arrives can ask whether a record has arrived since: no
    /// before one is sent, yes once it is, so that long upkeep stops for it.
    #[test]
    fn idle_upkeep_learns_that_a_record_arrived() {
        let (mailbox, mut inbox) = channel_pair();
        let mut answers = Vec::new();
        let batch = inbox.take_batch(&mut VecDeque::new(), 1, Duration::ZERO, None, |arrived| {
            answers.push(arrived());
            mailbox.send(record(7));
            answers.push(arrived());
        });
        assert_eq!(answers, [false, true]);
        assert_eq!((offsets(&batch.records), batch.waited), (vec![7], true));
    }

    #[test]
    fn company_is_waited_for_until_the_interval_after_the_previous_batch() {
        let now = Instant::now();
        let interval = Duration::from_millis(100);
        let ago = |ms| now.checked_sub(Duration::from_millis(ms)).expect("after boot");
        assert_eq!(company_until(None, interval, now), now + interval);
        assert_eq!(company_until(Some(ago(60)), interval, now), now + Duration::from_millis(40));
        assert_eq!(company_until(Some(ago(250)), interval, now), now);
    }

    #[test]
    fn a_batch_from_idle_waits_only_for_what_is_left_of_the_interval() {
        let (mailbox, mut inbox) = channel_pair();
        let (go, went) = std::sync::mpsc::channel();
        let (taken, was_taken) = std::sync::mpsc::channel::<()>();
        // The first record once the batch waits; the second after the batch was taken, or
        // after ten seconds if the batch waits for it (then the batch takes it, and fails).
        let sender = std::thread::spawn(move || {
            went.recv().expect("go");
            mailbox.send(record(7));
            let _ = was_taken.recv_timeout(Duration::from_secs(10));
            mailbox.send(record(8));
            mailbox
        });
        let interval = Duration::from_secs(3600);
        // The previous batch left a whole interval ago: nothing is left to wait for (with
        // `None`, or a previous batch just now, this batch would wait an hour for the second).
        let previous = Instant::now().checked_sub(interval).expect("an hour after boot");
        let batch = inbox.take_batch(&mut VecDeque::new(), 2, interval, Some(previous), |_| {
            let _ = go.send(());
        });
        assert_eq!((offsets(&batch.records), batch.waited, batch.stop), (vec![7], true, false));
        taken.send(()).expect("sender waits");
        let mailbox = sender.join().expect("sender");
        assert_eq!(mailbox.waiting(), 1);
    }
}
