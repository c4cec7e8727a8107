//! What a batch is made of, decided so that rating it again gives the same bytes.
//!
//! A partition task reads two input topics. Which records of each end up in a batch, and in
//! which order they meet, would otherwise depend on fetch timing; rating the same records in
//! another mix can change outputs (a balance in a rated usage, a credit event's sequence). So:
//!
//! - a batch's records are rated in a **merged order** that depends on the records only:
//!   each topic's records in offset order, the two merged by when each happened (the
//!   record's `timestamp`: an input's `occurred_at`), then topic name, see [`merge`];
//! - under at-least-once, where outputs become visible before the batch's transaction
//!   commits, the batch's **composition** is written to the changelog (a [`Manifest`], key
//!   `m/<partition>`) in a transaction before any of its outputs is produced: in the previous
//!   batch's transaction when its records arrived before that was done (the manifest is the
//!   transaction's last record, written once the rest was acknowledged), else in a
//!   transaction of its own. The partition's next owner, after a crash or a fencing, finds the manifest of the
//!   batch that follows the committed offsets and rates exactly those records first, so any
//!   output repeated downstream is byte-identical;
//! - in both guarantees, how far each input has been rated is written with the state: a
//!   [`Progress`] (key `i/<partition>`) in every batch's transaction. It is the record of
//!   progress: the partition's next owner skips the records it says are rated, whatever
//!   offsets the group committed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::record::Record;
use crate::reference::ReferencePin;

/// The changelog key of partition `partition`'s manifest.
pub fn manifest_key(partition: i32) -> String {
    format!("m/{partition}")
}

/// The changelog key of partition `partition`'s input offsets ([`Progress`]).
pub fn progress_key(partition: i32) -> String {
    format!("i/{partition}")
}

/// How far a partition's inputs have been rated: per input topic, the offset after the last
/// record whose effects are in the changelog. It is written in each batch's transaction with
/// the batch's state, so the state restored and the offsets it reflects are one record of
/// progress (the group's committed offsets follow it, committed after the transaction
/// without waiting, and may lag it after a crash).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Progress {
    /// Topic → the next offset to rate.
    pub next: BTreeMap<String, i64>,
}

impl Progress {
    /// Whether `record` is rated already: its effects are in the state this progress was
    /// written with. (The inbox asks [`Progress::pass_record`], which also moves past it.)
    #[cfg(test)]
    pub fn rated(&self, record: &Record) -> bool {
        self.next.get(&record.topic).is_some_and(|next| record.offset < *next)
    }

    /// This progress, moved past `records` (each topic only ever forward).
    pub fn past<'a>(&self, records: impl IntoIterator<Item = &'a Record>) -> Progress {
        let mut progress = self.clone();
        for r in records {
            progress.pass(&r.topic, r.offset + 1);
        }
        progress
    }

    /// Moves past `record` when it is not rated yet (one lookup of its topic), and says
    /// whether it was not.
    pub fn pass_record(&mut self, record: &Record) -> bool {
        match self.next.get_mut(&record.topic) {
            Some(next) if record.offset < *next => false,
            Some(next) => {
                *next = record.offset + 1;
                true
            }
            None => {
                self.next.insert(record.topic.clone(), record.offset + 1);
                true
            }
        }
    }

    /// Moves `topic` forward to `next` (never back).
    pub fn pass(&mut self, topic: &str, next: i64) {
        match self.next.get_mut(topic) {
            Some(n) => *n = (*n).max(next),
            None => {
                self.next.insert(topic.to_owned(), next);
            }
        }
    }
}

/// The records of a batch: per input topic, the offsets from the first to the last one; and
/// the position of the reference topics the batch is rated as of.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Topic → (first offset, last offset).
    pub ranges: BTreeMap<String, (i64, i64)>,
    /// The reference data the batch is rated with (absent in a manifest of an earlier
    /// release: the batch is then rated with the reference data at hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferencePin>,
}

impl Manifest {
    /// The composition of `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Manifest {
        let mut ranges: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in records {
            match ranges.get_mut(&r.topic) {
                Some(range) => {
                    range.0 = range.0.min(r.offset);
                    range.1 = range.1.max(r.offset);
                }
                None => {
                    ranges.insert(r.topic.clone(), (r.offset, r.offset));
                }
            }
        }
        Manifest { ranges, reference: None }
    }

    /// This composition, rated as of `pin`.
    pub fn pinned(self, pin: ReferencePin) -> Manifest {
        Manifest { reference: Some(pin), ..self }
    }

    /// At most how many records the batch has: the offsets its ranges span (transaction
    /// markers take offsets too).
    pub fn len_bound(&self) -> usize {
        let spans = self.ranges.values().map(|(first, last)| usize::try_from(last - first + 1).unwrap_or(0));
        spans.fold(0, usize::saturating_add)
    }

    /// Whether `record` belongs to the batch.
    pub fn contains(&self, record: &Record) -> bool {
        self.ranges.get(&record.topic).is_some_and(|(_, last)| record.offset <= *last)
    }

    /// Whether `record` comes after the batch in a topic of it: once one has come, none of the
    /// batch's records of that topic is still to come (a topic's records come in offset order).
    pub fn past(&self, record: &Record) -> bool {
        self.ranges.get(&record.topic).is_some_and(|(_, last)| record.offset > *last)
    }

    /// The topics of the batch whose records are still to come, with their last offsets: not
    /// `passed` (a record past the batch came) and without their last record in `records`.
    pub fn awaited<'a>(
        &'a self,
        records: &'a [Record],
        passed: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a String, i64)> + 'a {
        self.ranges.iter().filter_map(move |(topic, &(_, last))| {
            let complete = records.iter().any(|r| &r.topic == topic && r.offset >= last);
            (!passed.contains(topic) && !complete).then_some((topic, last))
        })
    }

    /// Whether `records` hold the whole batch (the last record of every topic in it).
    pub fn complete(&self, records: &[Record]) -> bool {
        self.awaited(records, &BTreeSet::new()).next().is_none()
    }

    /// Whether `records` hold the whole batch from its start too: the first and the last
    /// record of every topic in it (both are records, and a topic's records come in offset
    /// order, so nothing between them is missing). A batch whose first records are gone
    /// (deleted by retention, or skipped by offsets moved forward) is complete, not whole.
    pub fn whole(&self, records: &[Record]) -> bool {
        self.complete(records)
            && self
                .ranges
                .iter()
                .all(|(topic, (first, _))| records.iter().any(|r| &r.topic == topic && r.offset == *first))
    }
}

/// Records in the order the batch rates them: each topic's records keep their order (they
/// arrive in offset order), and the topics are merged by (timestamp, topic name).
pub fn merge(records: Vec<Record>) -> Vec<Record> {
    // One topic: its own order is the merged one (the usual batch, credit commands being rare).
    if records.first().is_none_or(|first| records.iter().all(|r| r.topic == first.topic)) {
        return records;
    }
    select(&mut VecDeque::from(records), usize::MAX, &BTreeSet::new())
}

/// The next batch of a partition catching up: `held`'s records in the merged order, up to
/// `batch_size`, stopping where an input of `behind` has no record left in hand (the record
/// that comes next in time may be one of its own, not fetched yet). What is not taken stays
/// in `held`, each topic's records in offset order. With nothing behind, this is the first
/// `batch_size` records of the merged order.
pub fn select(held: &mut VecDeque<Record>, batch_size: usize, behind: &BTreeSet<String>) -> Vec<Record> {
    let order = plan(held, batch_size, behind);
    let mut slots: Vec<Option<Record>> = held.drain(..).map(Some).collect();
    let mut batch = Vec::with_capacity(order.len());
    batch.extend(order.iter().filter_map(|&i| slots[i].take()));
    held.extend(slots.into_iter().flatten());
    batch
}

/// Whether records of `manifest` missing from `batch` can still come. For each of the
/// batch's topics neither complete in `batch` nor `passed` (a record past the batch came),
/// some of the offsets still missing up to its last are in the log, and the consumer will
/// read them: the topic is one of the task's `inputs` (a manifest of a topic renamed since
/// names records that never come), the log neither starts after the batch's last offset
/// (retention deleted them) nor ends at or before it (`ends`: log start and last stable
/// offset per input; a log truncated, or a topic created anew), and the consumer does not
/// read from past it (`reading`: its position, else the group's committed offset; an
/// operator moved the offsets). Offsets between records are not taken for records skipped:
/// transaction markers take offsets too. Not knowing an input's ends or where it is read
/// from (the broker is away) counts as "can still come".
pub fn missing_can_come(
    manifest: &Manifest,
    batch: &[Record],
    passed: &BTreeSet<String>,
    inputs: &[&str],
    ends: &BTreeMap<String, (i64, i64)>,
    reading: &BTreeMap<String, i64>,
) -> bool {
    manifest.awaited(batch, passed).any(|(topic, last)| {
        let gone = ends.get(topic).is_some_and(|&(log_start, end)| log_start > last || end <= last);
        let skipped = reading.get(topic).is_some_and(|&from| from > last);
        inputs.contains(&topic.as_str()) && !gone && !skipped
    })
}

/// The composition of what [`select`] would take from `held` now, leaving it in place.
pub fn preview(held: &VecDeque<Record>, batch_size: usize, behind: &BTreeSet<String>) -> Manifest {
    Manifest::of(plan(held, batch_size, behind).into_iter().map(|i| &held[i]))
}

/// Which of `held`'s records [`select`] takes, by index, in the merged order.
fn plan(held: &VecDeque<Record>, batch_size: usize, behind: &BTreeSet<String>) -> Vec<usize> {
    // One queue of indices per topic, each in arrival order.
    let mut queues: Vec<(&str, VecDeque<usize>)> = Vec::new();
    for (i, r) in held.iter().enumerate() {
        match queues.iter_mut().find(|(topic, _)| *topic == r.topic) {
            Some((_, queue)) => queue.push_back(i),
            None => queues.push((&r.topic, VecDeque::from([i]))),
        }
    }
    let dry = |queues: &[(&str, VecDeque<usize>)]| {
        behind.iter().any(|topic| !queues.iter().any(|(t, q)| t == topic && !q.is_empty()))
    };
    let mut order = Vec::new();
    while order.len() < batch_size && !dry(&queues) {
        let earliest = queues
            .iter()
            .enumerate()
            .filter_map(|(k, (topic, q))| q.front().map(|&i| ((held[i].timestamp, *topic), k)))
            .min()
            .map(|(_, k)| k);
        match earliest.and_then(|k| queues[k].1.pop_front()) {
            Some(i) => order.push(i),
            None => break,
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, offset: i64, timestamp: i64) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp,
            produced_at: timestamp,
            key: None,
            payload: None,
        }
    }

    fn order(records: &[Record]) -> Vec<(String, i64)> {
        records.iter().map(|r| (r.topic.clone(), r.offset)).collect()
    }

    /// A batch is whole when its first and last record of each topic are in hand; one whose
    /// first records are gone is complete (nothing more of it will come) but not whole.
    #[test]
    fn a_batch_without_its_first_records_is_complete_but_not_whole() {
        let manifest = Manifest::of(&[record("legs", 100, 1), record("legs", 101, 2), record("credits", 7, 3)]);
        let all = [record("legs", 100, 1), record("legs", 101, 2), record("credits", 7, 3)];
        assert!(manifest.complete(&all) && manifest.whole(&all));
        let without_first = [record("legs", 101, 2), record("credits", 7, 3)];
        assert!(manifest.complete(&without_first) && !manifest.whole(&without_first));
        let without_last = [record("legs", 100, 1), record("credits", 7, 3)];
        assert!(!manifest.complete(&without_last) && !manifest.whole(&without_last));
    }

    #[test]
    fn the_merged_order_does_not_depend_on_arrival() {
        let legs = [record("legs", 10, 100), record("legs", 11, 300), record("legs", 12, 250)];
        let credits = [record("credits", 4, 200), record("credits", 5, 300)];
        let arrived_one_way: Vec<Record> = legs.iter().chain(&credits).cloned().collect();
        let arrived_another: Vec<Record> =
            [&credits[0], &legs[0], &credits[1], &legs[1], &legs[2]].into_iter().cloned().collect();
        let expected = vec![
            ("legs".to_owned(), 10),
            ("credits".to_owned(), 4),
            ("credits".to_owned(), 5),
            ("legs".to_owned(), 11),
            ("legs".to_owned(), 12),
        ];
        assert_eq!(order(&merge(arrived_one_way)), expected);
        assert_eq!(order(&merge(arrived_another)), expected);
    }

    #[test]
    fn a_batch_stops_where_an_input_behind_runs_dry() {
        // Legs fetched up to time 400; credit commands only up to 200, more still to come.
        let held = || {
            VecDeque::from([
                record("legs", 10, 100),
                record("legs", 11, 300),
                record("legs", 12, 400),
                record("credits", 4, 150),
                record("credits", 5, 200),
            ])
        };
        let behind = BTreeSet::from(["credits".to_owned()]);
        let mut carry = held();
        let preview = preview(&carry, 100, &behind);
        let batch = select(&mut carry, 100, &behind);
        assert_eq!(order(&batch), [("legs".to_owned(), 10), ("credits".to_owned(), 4), ("credits".to_owned(), 5)]);
        assert_eq!(preview, Manifest::of(&batch));
        assert_eq!(order(&Vec::from(carry)), [("legs".to_owned(), 11), ("legs".to_owned(), 12)]);

        // Legs only: nothing can be rated until the credit commands arrive.
        let mut carry = VecDeque::from([record("legs", 10, 100)]);
        assert!(select(&mut carry, 100, &behind).is_empty());
        assert_eq!(carry.len(), 1);

        // Nothing behind: the merged order, cut at the batch size, the rest kept.
        let mut carry = held();
        let batch = select(&mut carry, 4, &BTreeSet::new());
        assert_eq!(order(&batch), order(&merge(held().into()))[..4]);
        assert_eq!(order(&Vec::from(carry)), [("legs".to_owned(), 12)]);

        // Both behind: stops when either runs dry.
        let mut carry = held();
        let both = BTreeSet::from(["credits".to_owned(), "legs".to_owned()]);
        assert_eq!(order(&select(&mut carry, 100, &both)).len(), 3);
    }

    #[test]
    fn progress_moves_each_input_forward_only() {
        let start = Progress { next: BTreeMap::from([("credits".to_owned(), 5)]) };
        assert!(start.rated(&record("credits", 4, 0)) && !start.rated(&record("credits", 5, 0)));
        assert!(!start.rated(&record("legs", 0, 0)), "an input it does not name is not rated yet");
        let moved = start.past(&[record("legs", 10, 1), record("legs", 12, 2), record("credits", 3, 3)]);
        assert_eq!(moved.next, BTreeMap::from([("credits".to_owned(), 5), ("legs".to_owned(), 13)]));
        let json = serde_json::to_string(&moved).unwrap();
        assert_eq!(json, r#"{"credits":5,"legs":13}"#);
        assert_eq!(serde_json::from_str::<Progress>(&json).unwrap(), moved);
    }

    #[test]
    fn a_manifest_names_the_last_record_of_each_topic() {
        let batch = [record("legs", 10, 1), record("legs", 12, 2), record("credits", 4, 3)];
        let manifest = Manifest::of(&batch);
        assert_eq!(manifest.ranges["legs"], (10, 12));
        assert!(manifest.contains(&record("legs", 11, 0)) && !manifest.contains(&record("legs", 13, 0)));
        assert!(!manifest.contains(&record("other", 1, 0)));
        assert!(!manifest.complete(&batch[..2]));
        assert!(manifest.complete(&batch));
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), manifest);
    }

    /// The records of a recorded batch that did not come are waited for while they are in the
    /// log and the consumer will read them; gone once retention deleted them, the log lost
    /// them, the consumer reads from past them, or their topic is no longer an input.
    #[test]
    fn missing_records_are_waited_for_until_gone() {
        let manifest = Manifest::of(&[record("legs", 10, 1), record("legs", 12, 2), record("credits", 5, 3)]);
        let legs_only = [record("legs", 10, 1), record("legs", 12, 2)];
        let none = BTreeSet::new();
        let inputs = ["legs", "credits"];
        let ends =
            |credits: (i64, i64)| BTreeMap::from([("credits".to_owned(), credits), ("legs".to_owned(), (0, 20))]);
        let from = |credits: i64| BTreeMap::from([("credits".to_owned(), credits), ("legs".to_owned(), 13)]);
        let can_come = |batch: &[Record], passed: &BTreeSet<String>, inputs: &[&str], ends, from| {
            missing_can_come(&manifest, batch, passed, inputs, &ends, &from)
        };
        // The credit command's leader is away: nothing known; or in the log and not passed.
        assert!(can_come(&legs_only, &none, &inputs, BTreeMap::new(), BTreeMap::new()));
        assert!(can_come(&legs_only, &none, &inputs, ends((0, 9)), from(5)));
        assert!(can_come(&legs_only, &none, &inputs, ends((5, 9)), BTreeMap::new()));
        // Deleted by retention, lost with the log's end, or read from past it.
        assert!(!can_come(&legs_only, &none, &inputs, ends((6, 9)), from(5)));
        assert!(!can_come(&legs_only, &none, &inputs, ends((0, 5)), from(5)));
        assert!(!can_come(&legs_only, &none, &inputs, ends((0, 9)), from(6)));
        // A topic that is no longer an input.
        assert!(!can_come(&legs_only, &none, &["legs", "credits-v2"], BTreeMap::new(), BTreeMap::new()));
        // A record past the batch came, or the batch is whole.
        let passed = BTreeSet::from(["credits".to_owned()]);
        assert!(!can_come(&legs_only, &passed, &inputs, ends((0, 9)), from(5)));
        let whole = [record("legs", 10, 1), record("legs", 12, 2), record("credits", 5, 3)];
        assert!(!can_come(&whole, &none, &inputs, BTreeMap::new(), BTreeMap::new()));
        // Legs 11 is missing, 12 is not: offset 11 may be a transaction marker, and the
        // consumer reading from 12 has not passed the batch.
        let gap = [record("legs", 10, 1), record("credits", 5, 3)];
        let legs_from = |legs: i64| BTreeMap::from([("legs".to_owned(), legs)]);
        assert!(can_come(&gap, &none, &inputs, ends((0, 9)), legs_from(12)));
        assert!(!can_come(&gap, &none, &inputs, ends((0, 9)), legs_from(13)));
        // The first records deleted, the last still there: it comes.
        assert!(can_come(&gap, &none, &inputs, BTreeMap::from([("legs".to_owned(), (12, 20))]), BTreeMap::new()));
    }

    /// A manifest names the reference position its batch is rated as of; one written by an
    /// earlier release, without it, still reads (its batch is rated with what is at hand).
    #[test]
    fn a_manifest_carries_its_reference_pin_and_reads_without_one() {
        let pin = ReferencePin { tenants: vec![7, 0, 3], users: vec![], rate_cards: vec![2] };
        let manifest = Manifest::of(&[record("legs", 10, 1)]).pinned(pin.clone());
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(json, r#"{"ranges":{"legs":[10,10]},"reference":{"tenants":[7,0,3],"rate_cards":[2]}}"#);
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap().reference, Some(pin));
        let earlier = serde_json::from_str::<Manifest>(r#"{"ranges":{"legs":[10,10]}}"#).unwrap();
        assert_eq!(earlier, Manifest::of(&[record("legs", 10, 1)]));
        assert_eq!(earlier.reference, None);
    }
}
