//! A cancellation token for the worker's threads: set once, observed by waits that end as soon
//! as it is set (a backoff does not outlive a shutdown).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Set once by whoever gives up on a piece of work; waited on by the thread doing it.
#[derive(Debug, Default)]
pub struct Cancel {
    cancelled: Mutex<bool>,
    changed: Condvar,
}

impl Cancel {
    /// Cancels, waking every waiter.
    pub fn cancel(&self) {
        *self.cancelled.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits `timeout` or until cancelled; returns whether it was cancelled.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let guard = self.cancelled.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, deadline.saturating_duration_since(Instant::now()), |c| !*c)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_wait_ends_when_cancelled_from_another_thread() {
        let cancel = Arc::new(Cancel::default());
        assert!(!cancel.wait(Duration::from_millis(1)));
        let other = Arc::clone(&cancel);
        let waiter = std::thread::spawn(move || other.wait(Duration::from_secs(600)));
        cancel.cancel();
        assert!(waiter.join().unwrap());
        assert!(cancel.is_cancelled());
    }
}
