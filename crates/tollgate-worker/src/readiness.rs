//! Whether a worker is ready to rate, for an orchestrator's readiness probe.
//!
//! A worker is ready once its reference tables caught up with the reference topics, it is a
//! member of the consumer group (it got its first assignment, possibly empty), and every input
//! partition it owns has its state restored from the changelog. Before that, records of its
//! partitions wait in Kafka; a rolling update that replaced the next worker already would move
//! more partitions onto workers that cannot rate them yet.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::worker::Assignment;

/// How far a worker got, from start to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not running yet.
    Starting,
    /// Checking that the topics exist and are co-partitioned.
    CheckingTopics,
    /// Reading the reference topics up to their ends at start.
    LoadingReference,
    /// Reference data caught up, and not one tenant in it: the inputs wait in Kafka until one
    /// is published (rated now, every one would be dead-lettered as `unknown_tenant`).
    WaitingForTenants,
    /// Reference data caught up; waiting for the consumer group's first assignment.
    JoiningGroup,
    /// A member of the group: rating the partitions it owns once they are restored.
    InGroup,
    /// Asked to stop: committing the batches in flight and leaving the group.
    ShuttingDown,
    /// Stopped.
    Stopped,
}

impl Stage {
    /// What the stage means, for the readiness endpoint.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::CheckingTopics => "checking the topics",
            Stage::LoadingReference => "loading reference data",
            Stage::WaitingForTenants => "no tenant in the reference data (tollgate admin publish-reference)",
            Stage::JoiningGroup => "joining the consumer group",
            Stage::InGroup => "in the consumer group",
            Stage::ShuttingDown => "shutting down",
            Stage::Stopped => "stopped",
        }
    }
}

/// A worker's readiness, shared with whoever asks (an HTTP probe, a test).
#[derive(Debug)]
pub struct Readiness {
    stage: Mutex<Stage>,
    assignment: Arc<Assignment>,
}

/// A snapshot of a worker's readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The worker's name (`w1`, ...).
    pub worker: String,
    /// How far it got.
    pub stage: Stage,
    /// The input partitions it owns.
    pub assigned: BTreeSet<i32>,
    /// The owned partitions whose state is not restored yet.
    pub restoring: BTreeSet<i32>,
}

impl Readiness {
    /// The readiness of the worker that owns `assignment`.
    pub fn new(assignment: Arc<Assignment>) -> Self {
        Readiness { stage: Mutex::new(Stage::Starting), assignment }
    }

    /// Records the stage the worker reached.
    pub(crate) fn reached(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
    }

    /// The group assigned partitions (possibly none): the worker is a member, unless it is
    /// already on its way out.
    pub(crate) fn joined(&self) {
        let mut stage = self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *stage == Stage::JoiningGroup {
            *stage = Stage::InGroup;
        }
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The worker's readiness now.
    pub fn status(&self) -> Status {
        let stage = self.stage();
        let (assigned, restored) = self.assignment.snapshot();
        let restoring = assigned.difference(&restored).copied().collect();
        Status { worker: self.assignment.worker().to_owned(), stage, assigned, restoring }
    }
}

impl Status {
    /// Ready to rate: in the group, with every owned partition restored.
    pub fn is_ready(&self) -> bool {
        self.stage == Stage::InGroup && self.restoring.is_empty()
    }
}

impl std::fmt::Display for Status {
    /// One line: `w1 ready: in the consumer group, partitions [0, 1] restored`, or what is
    /// missing: `w1 not ready: restoring partitions [1] of [0, 1]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let worker = &self.worker;
        if self.is_ready() {
            return write!(f, "{worker} ready: in the consumer group, partitions {:?} restored", self.assigned);
        }
        if self.stage == Stage::InGroup {
            return write!(f, "{worker} not ready: restoring partitions {:?} of {:?}", self.restoring, self.assigned);
        }
        write!(f, "{worker} not ready: {}", self.stage.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness() -> (Arc<Assignment>, Readiness) {
        let assignment = Arc::new(Assignment::new("w1"));
        let readiness = Readiness::new(Arc::clone(&assignment));
        (assignment, readiness)
    }

    #[test]
    fn is_ready_only_in_the_group_with_every_owned_partition_restored() {
        let (assignment, readiness) = readiness();
        assert_eq!(readiness.status().to_string(), "w1 not ready: starting");
        readiness.reached(Stage::LoadingReference);
        assert_eq!(readiness.status().to_string(), "w1 not ready: loading reference data");
        readiness.reached(Stage::InGroup);
        assignment.starting(0);
        assignment.starting(1);
        assignment.set([0, 1]);
        assignment.restored(1);
        let status = readiness.status();
        assert!(!status.is_ready());
        assert_eq!(status.to_string(), "w1 not ready: restoring partitions {0} of {0, 1}");
        assignment.restored(0);
        let status = readiness.status();
        assert!(status.is_ready());
        assert_eq!(status.to_string(), "w1 ready: in the consumer group, partitions {0, 1} restored");
        readiness.reached(Stage::ShuttingDown);
        assert_eq!(readiness.status().to_string(), "w1 not ready: shutting down");
    }

    /// A member that owns no partition (more workers than partitions) is ready: it waits for
    /// a rebalance to give it work, like the others.
    #[test]
    fn a_member_without_partitions_is_ready() {
        let (assignment, readiness) = readiness();
        readiness.reached(Stage::InGroup);
        assignment.set([]);
        assert_eq!(readiness.status().to_string(), "w1 ready: in the consumer group, partitions {} restored");
    }

    /// A partition given away and assigned again is restored again before it counts.
    #[test]
    fn a_partition_assigned_again_must_be_restored_again() {
        let (assignment, readiness) = readiness();
        readiness.reached(Stage::InGroup);
        assignment.starting(0);
        assignment.restored(0);
        assignment.set([0]);
        assert!(readiness.status().is_ready());
        assignment.set([]);
        assignment.starting(0);
        assignment.set([0]);
        assert_eq!(readiness.status().to_string(), "w1 not ready: restoring partitions {0} of {0}");
    }
}
