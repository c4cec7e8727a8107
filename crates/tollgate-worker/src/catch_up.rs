//! A partition catching up on what its inputs held when it was assigned.
//!
//! Legs and credit commands are two topics, fetched apart: after a restart or a rebalance,
//! the legs of a backlog can arrive before the funding that preceded them, and a leg rated
//! then is blocked for no credit that the tenant had. So, until every input has delivered
//! what it held at assignment (its committed offset up to its last stable offset), the task
//! rates in record time across the inputs: a batch stops where an input still behind has no
//! record in hand ([`crate::batch::select`]), and waits for it (up to `catch_up_wait_ms`,
//! then it rates in arrival order). Once caught up, records are rated as they arrive, which
//! is their order in time.
//!
//! An input is caught up when a record at or after its end is in hand, or when the group
//! consumer's position passed its end (the end is a transaction marker, not a record) and the
//! polling thread has since finished a turn, so that every record it handed out before that
//! position is in the task's inbox.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::record::Record;

/// The inputs of a partition still behind, and how long records have been held for them.
#[derive(Debug, Default)]
pub struct CatchUp {
    behind: BTreeMap<String, Behind>,
    holding_since: Option<Instant>,
}

#[derive(Debug)]
struct Behind {
    /// The input's last stable offset when the partition was assigned.
    end: i64,
    /// The polling thread's turn count when the consumer's position was seen at `end`.
    passed_at_turn: Option<u64>,
}

impl CatchUp {
    /// From the group's committed offsets and each input's (log start, last stable offset):
    /// an input is behind when the group reads it from before its end (from its committed
    /// offset, else from its log start).
    pub fn new(committed: &BTreeMap<String, i64>, ends: &BTreeMap<String, (i64, i64)>) -> Self {
        let behind = ends
            .iter()
            .filter(|(topic, (low, end))| committed.get(*topic).map_or(*low, |c| (*c).max(*low)) < *end)
            .map(|(topic, (_, end))| (topic.clone(), Behind { end: *end, passed_at_turn: None }))
            .collect();
        CatchUp { behind, holding_since: None }
    }

    /// Every input caught up.
    pub fn done(&self) -> bool {
        self.behind.is_empty()
    }

    /// The inputs still behind.
    pub fn behind(&self) -> BTreeSet<String> {
        self.behind.keys().cloned().collect()
    }

    /// Takes note of the records in hand, read after the polling thread's turn count was
    /// `turns`: inputs with a record at their end, or whose position passed their end before
    /// a turn that has since finished, are caught up.
    pub fn observe<'a>(&mut self, held: impl IntoIterator<Item = &'a Record>, turns: u64) {
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for record in held {
            let offset = last.entry(record.topic.as_str()).or_insert(record.offset);
            *offset = (*offset).max(record.offset);
        }
        self.behind.retain(|topic, behind| {
            let delivered = last.get(topic.as_str()).is_some_and(|offset| offset + 1 >= behind.end);
            let passed = behind.passed_at_turn.is_some_and(|turn| turns > turn);
            !(delivered || passed)
        });
    }

    /// The group consumer's positions (read before the polling thread's turn count `turns`):
    /// an input whose position reached its end is caught up once a later turn has finished.
    pub fn positions(&mut self, positions: &BTreeMap<String, i64>, turns: u64) {
        for (topic, behind) in &mut self.behind {
            if behind.passed_at_turn.is_none() && positions.get(topic).is_some_and(|p| *p >= behind.end) {
                behind.passed_at_turn = Some(turns);
            }
        }
    }

    /// Records are held for an input behind; whether they have been for `wait` or longer.
    pub fn held_too_long(&mut self, wait: Duration) -> bool {
        self.holding_since.get_or_insert_with(Instant::now).elapsed() >= wait
    }

    /// A batch left: nothing is held back.
    pub fn released(&mut self) {
        self.holding_since = None;
    }

    /// Stops waiting for the inputs behind; returns them.
    pub fn give_up(&mut self) -> Vec<String> {
        self.holding_since = None;
        std::mem::take(&mut self.behind).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, offset: i64) -> Record {
        Record { topic: topic.into(), partition: 0, offset, timestamp: 0, produced_at: 0, key: None, payload: None }
    }

    /// Legs read from their log start 0 up to 10; credits committed at 5 of 8 (from a log
    /// starting at 2); `done` committed at its end; `empty` has nothing.
    fn catch_up() -> CatchUp {
        let committed = BTreeMap::from([("credits".to_owned(), 5), ("done".to_owned(), 7)]);
        let ends = BTreeMap::from([
            ("legs".to_owned(), (0, 10)),
            ("credits".to_owned(), (2, 8)),
            ("done".to_owned(), (0, 7)),
            ("empty".to_owned(), (3, 3)),
        ]);
        CatchUp::new(&committed, &ends)
    }

    #[test]
    fn an_input_is_behind_until_a_record_at_its_end_is_in_hand() {
        let mut catch_up = catch_up();
        assert_eq!(catch_up.behind(), BTreeSet::from(["credits".to_owned(), "legs".to_owned()]));
        catch_up.observe(&[record("legs", 8), record("credits", 6)], 0);
        assert_eq!(catch_up.behind().len(), 2);
        catch_up.observe(&[record("legs", 9), record("credits", 6)], 0);
        assert_eq!(catch_up.behind(), BTreeSet::from(["credits".to_owned()]));
        catch_up.observe(&[record("credits", 7)], 0);
        assert!(catch_up.done());
    }

    #[test]
    fn a_position_past_the_end_counts_once_the_polling_thread_finished_a_turn() {
        let mut catch_up = catch_up();
        // The last record of `credits` is at 6; 7 is a transaction marker.
        catch_up.observe(&[record("credits", 6)], 41);
        catch_up.positions(&BTreeMap::from([("credits".to_owned(), 7)]), 41);
        assert!(catch_up.behind().contains("credits"), "a position short of the end proves nothing");
        catch_up.positions(&BTreeMap::from([("credits".to_owned(), 8)]), 42);
        catch_up.observe(&[], 42);
        assert!(catch_up.behind().contains("credits"), "the turn that handed out the position may not have routed yet");
        catch_up.observe(&[], 43);
        assert_eq!(catch_up.behind(), BTreeSet::from(["legs".to_owned()]));
    }

    #[test]
    fn giving_up_names_the_inputs_and_ends_the_catch_up() {
        let mut catch_up = catch_up();
        assert!(catch_up.held_too_long(Duration::ZERO));
        assert!(!catch_up.held_too_long(Duration::from_secs(60)));
        assert_eq!(catch_up.give_up(), ["credits", "legs"]);
        assert!(catch_up.done());
    }
}
