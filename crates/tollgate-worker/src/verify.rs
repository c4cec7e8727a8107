//! The invariant checker behind `tollgate verify`: proves from Kafka alone, without rating
//! anything, that no call leg was lost or charged twice and that every balance is exact.
//!
//! It works in two halves, so the checking can be tested on hand-built records:
//!
//! - [`read`] (module `read`): takes a [`Snapshot`] of a deployment. It restores every
//!   changelog partition with [`crate::changelog::restore_partition`] (its tenant states, and
//!   its progress record: how far the inputs are rated), then notes the end of every
//!   partition of the outputs and then of the inputs, and reads them from the beginning up to
//!   those ends with `isolation.level=read_committed` (librdkafka then reports the last stable
//!   offset as the end, and transaction markers leave offsets without messages, so a
//!   partition is done when the reader's position reaches its end).
//! - [`check`] (module `check`): a pure function of the snapshot that returns a [`Report`].
//!
//! # What is checked, per tenant
//!
//! An input is *applied* when it is not dead-lettered (the dead letters name their source
//! topic, partition and offset); the worker refuses every other input through the dead-letter
//! topic, so an input that does not decode, whose key is not its tenant or that sits on
//! another partition than murmur2 says, and is not dead-lettered, is a violation.
//!
//! - **Legs.** Every leg with an applied `started` that is not VoIP (VoIP legs are never
//!   billed and get no usage; blocked legs do get one, with a zero charge) has exactly one
//!   distinct rated usage `<tenant>/<leg>`, or is open in the restored state, not both. Every
//!   applied start, VoIP included, has exactly one `allow` or `block` decision. A usage or
//!   decision for a leg without an applied start, or an open leg without one, is a violation.
//! - **Duplicates.** An output id seen more than once (usage id, decision id, credit-event
//!   tenant and sequence, dead letter's source) is a duplicate: at-least-once delivery may
//!   repeat a record, but every copy must be byte-identical. With
//!   [`Expectations::exactly_once`] any duplicate is a violation.
//! - **Money**, exactly, in the tenant's currency (see [the formula](#the-money-formula)).
//!   Every output and applied command that moves money or leaves a balance names the currency
//!   the restored state holds its money in; two currencies are a violation. Outputs that move
//!   nothing and leave a zero balance do not count: a tenant that never held money may take
//!   another currency, and its earlier outputs (calls blocked for no credit) name the old one.
//! - **Credit-event sequences.** The distinct sequences of a tenant are exactly `1..=n`, with
//!   `n` the restored `credit_sequence`, and each event's id is `<tenant>/credit/<sequence>`.
//! - **Dead letters.** Every dead letter names an input record that was read, with the same
//!   bytes; with [`Expectations::dead_letters`] the dead-lettered inputs are exactly the
//!   expected ones.
//! - **Placement.** Inputs and changelog have one partition count, and a tenant's state is in
//!   exactly one changelog partition, the one murmur2 gives its id.
//!
//! # The money formula
//!
//! What the core does (`tollgate_core::rating`), event by event:
//!
//! | credit event | `amount` on the wire | effect on the balance | restored total |
//! |---|---|---|---|
//! | `FUNDED` | the lot, > 0 | `+ amount` | `funded += amount` |
//! | `RECHARGE_SUCCEEDED` | the lot, > 0 | `+ amount` | `funded += amount` |
//! | `ADJUSTED` | signed, ≠ 0 | `+ amount` (a negative one is debited) | `adjusted += amount` |
//! | `LOT_EXPIRED` | the forfeited remainder, > 0 | `− amount` | `forfeited += amount` |
//! | the others | a threshold, a request or 0 | none | none |
//!
//! and every leg debit (or refund) moves `usage_charges` and the balance by the same amount,
//! the debits of a leg adding up to its final charge. So, per tenant, with `charges` the sum of
//! the `charge` of its distinct rated usages (blocked legs: 0) and `open` the sum of `debited`
//! over its restored open legs:
//!
//! ```text
//! money_in = Σ FUNDED + Σ RECHARGE_SUCCEEDED + Σ ADJUSTED − Σ LOT_EXPIRED
//! charges + open == money_in − balance                       (conservation)
//! charges + open == totals.usage_charges                     (no debit lost or doubled)
//! Σ FUNDED + Σ RECHARGE_SUCCEEDED == totals.funded, Σ ADJUSTED == totals.adjusted,
//! Σ LOT_EXPIRED == totals.forfeited                          (events match the ledger)
//! Σ FUNDED == Σ applied fund commands, Σ RECHARGE_SUCCEEDED == Σ applied recharge commands,
//! Σ ADJUSTED == Σ applied adjustments                        (commands match the events)
//! ```
//!
//! where applied commands are counted once per command id (a re-delivered command is a
//! no-op for the worker).
//!
//! # A pipeline that is still running
//!
//! The check covers what the workers have **settled**: the records the restored states
//! account for. Each changelog partition's progress record, written in the same transaction as
//! the states, says per input partition where rating stands; the records from there on are
//! *not rated yet*, and they are left out together with everything that may have come of them
//! since the changelog was read:
//!
//! - their starts, credit commands and dead letters are not checked, only counted per tenant
//!   (`unrated`) and named in a warning;
//! - a usage is left out when its leg's start is not rated yet, or when the leg is open in the
//!   restored state and one of its later events is not rated yet (its end rated since);
//! - a decision is left out when its leg's start is not rated yet;
//! - a credit event beyond the restored `credit_sequence` is left out when its tenant has
//!   inputs not rated yet.
//!
//! Everything the states account for was published before them (outputs are acknowledged
//! before the changelog under at-least-once, in the same transaction under exactly-once), and
//! the outputs and inputs are read after the changelog, so the settled part is whole however
//! busy the workers are. On a quiescent pipeline nothing is left out. With
//! [`Expectations::all_rated`] (`--all-rated`), an input not rated yet is a violation instead.
//!
//! A changelog partition last written by a release without progress records has no such
//! record; its inputs are checked whole, as if quiescent, and the report warns when the
//! group's committed offsets say the workers are behind. The topics must still hold their
//! whole history (the report warns when a partition does not start at offset 0).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tollgate_core::TenantState;

use crate::Error;
use crate::cancel::Cancel;
use crate::config::WorkerConfig;
use crate::record::Record;

mod check;
mod read;
mod report;

pub use check::check;
pub use read::read;
pub use report::{DeadLetterRow, LISTED, Report, TenantRow};

/// What the caller expects beyond the invariants that always hold.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Expectations {
    /// The pipeline runs exactly-once: no output may appear twice, even byte-identical.
    pub exactly_once: bool,
    /// The inputs that must be in the dead letters, and nothing else; `None` checks only that
    /// every dead letter names an input.
    pub dead_letters: Option<BTreeSet<InputRef>>,
    /// Every input read must be rated: one the changelog does not say is rated yet is a
    /// violation (by default it is counted, and left out of the check).
    pub all_rated: bool,
}

/// An input record, by its id or by where it is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRef {
    /// Its `event_id` or `command_id` (any record with that id).
    Id(String),
    /// Its position.
    At {
        /// Input topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

impl InputRef {
    /// The input at `topic`, `partition`, `offset`.
    pub fn at(topic: &str, partition: i32, offset: i64) -> Self {
        InputRef::At { topic: topic.to_owned(), partition, offset }
    }
}

/// `TOPIC:PARTITION:OFFSET` for a position, the id itself otherwise.
impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputRef::Id(id) => f.write_str(id),
            InputRef::At { topic, partition, offset } => write!(f, "{topic}:{partition}:{offset}"),
        }
    }
}

/// `TOPIC:PARTITION:OFFSET` (two trailing integers) is a position; anything else is an id.
impl FromStr for InputRef {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.rsplitn(3, ':');
        let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
        if let (Some(offset), Some(partition), Some(topic)) = (offset, partition, topic) {
            if let (Ok(partition), Ok(offset), false) = (partition.parse(), offset.parse(), topic.is_empty()) {
                return Ok(InputRef::At { topic: topic.to_owned(), partition, offset });
            }
        }
        Ok(InputRef::Id(s.to_owned()))
    }
}

/// Everything the checker looks at, read from Kafka (or built by hand in tests).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Partition count of every topic read, by name.
    pub partitions: BTreeMap<String, i32>,
    /// Records of both input topics, in partition order.
    pub inputs: Vec<Record>,
    /// Records of the rated-usage topic.
    pub rated_usage: Vec<Record>,
    /// Records of the leg-decisions topic.
    pub leg_decisions: Vec<Record>,
    /// Records of the credit-events topic.
    pub credit_events: Vec<Record>,
    /// Records of the dead-letter topic.
    pub dead_letters: Vec<Record>,
    /// Restored tenant states, by changelog partition.
    pub states: BTreeMap<i32, HashMap<String, TenantState>>,
    /// Per input topic and partition, how far the restored states reach: the offset of the
    /// first record not rated yet, from the changelog's progress record (written in the same
    /// transaction as the states). The records from there on, and the outputs they caused, are
    /// left out of the check. A partition not listed is checked whole (its changelog was last
    /// written by a release without progress records).
    pub rated: BTreeMap<(String, i32), i64>,
    /// What the reader noticed that may make findings transient (lag, deleted history).
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// Whether the restored states account for `input` (see [`Snapshot::rated`]).
    pub fn is_rated(&self, input: &Record) -> bool {
        self.rated.get(&(input.topic.clone(), input.partition)).is_none_or(|next| input.offset < *next)
    }
}

/// Reads the deployment of `config` and checks it; `cancel` aborts the read.
pub fn run(config: &WorkerConfig, expectations: &Expectations, cancel: &Cancel) -> Result<Report, Error> {
    let snapshot = read(config, cancel)?;
    Ok(check(&snapshot, config, expectations))
}

#[cfg(test)]
mod tests;
