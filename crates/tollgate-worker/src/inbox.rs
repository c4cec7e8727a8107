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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::Duration;

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
}

/// A new inbox and its mailbox.
pub fn channel_pair() -> (Mailbox, Inbox) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Mailbox { tx, queued: Arc::clone(&queued) }, Inbox { rx, queued })
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
    /// The next command, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Command, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).inspect(|command| self.taken(command))
    }

    /// The next command if one waits.
    pub fn try_recv(&self) -> Result<Command, TryRecvError> {
        self.rx.try_recv().inspect(|command| self.taken(command))
    }

    fn taken(&self, command: &Command) {
        if matches!(command, Command::Record(_)) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
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
    /// Two batches' worth waiting pauses; resumed when less than one batch is left, so that
    /// the task has records to rate while fetching starts again.
    pub fn for_batch_size(batch_size: usize) -> Self {
        let batch = batch_size.max(1);
        Backpressure { pause_at: batch.saturating_mul(2), resume_at: batch - 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> Record {
        Record { topic: "t".into(), partition: 0, offset, timestamp: 0, key: None, payload: None }
    }

    #[test]
    fn counts_the_records_waiting_and_not_the_stop() {
        let (mailbox, inbox) = channel_pair();
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
    fn pauses_at_two_batches_and_resumes_below_one() {
        assert_eq!(Backpressure::for_batch_size(5000), Backpressure { pause_at: 10_000, resume_at: 4999 });
        assert_eq!(Backpressure::for_batch_size(1), Backpressure { pause_at: 2, resume_at: 0 });
    }
}
