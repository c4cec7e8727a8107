//! A partition task that falls behind has its partition paused, and the worker loses nothing
//! by it. In a binary of its own: it counts pauses through a process-wide metrics recorder.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

mod common;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tollgate_core::Money;
use tollgate_worker::ProcessingGuarantee;
use tollgate_worker::partitioner::partition_for;

/// Legs per tenant in the backlog.
const LEGS: u32 = 100;

#[test]
fn a_task_that_falls_behind_pauses_its_partition_and_loses_nothing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let mut env = Env::new(2, ProcessingGuarantee::AtLeastOnce);
    env.publish_reference(REFERENCE);
    let funding = env.start_worker();
    env.fund(&[fund("acme", "f1", "10.00", "USD"), fund("initech", "f2", "20.00", "EUR")]);
    funding.stop();

    // A backlog far larger than four batches of 5, waiting before the worker starts: its tasks
    // fall behind the fetcher at once.
    let mut lines = Vec::new();
    for i in 0..LEGS {
        lines.extend(dial_out("acme", &format!("a{i}"), "ann", US, 60, i)); // 1 min x 0.02
        lines.extend(dial_out("initech", &format!("i{i}"), "ines", GB, 61, i)); // 2 min x 0.05
    }
    env.publish_inputs(&lines);
    env.config.batch_size = 5;
    let worker = env.start_worker();
    let usages = env.usages(2 * LEGS as usize);
    worker.stop();

    let total = |tenant: &str| -> Money {
        usages.values().filter(|u| u.tenant_id == tenant).map(|u| u.charge.parse::<Money>().unwrap()).sum()
    };
    assert_eq!(usages.len(), 2 * LEGS as usize);
    assert_eq!((total("acme"), total("initech")), ("2.00".parse().unwrap(), "10.00".parse().unwrap()));
    let states = env.states();
    assert_eq!(states["acme"].balance(), "8.00".parse().unwrap());
    assert_eq!(states["initech"].balance(), "10.00".parse().unwrap());

    // Both tenants' partitions were paused for backpressure (and resumed: their legs all came).
    let mut paused = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() == "tollgate_backpressure_pauses_total" {
            let partition: i32 = key.key().labels().find(|l| l.key() == "partition").unwrap().value().parse().unwrap();
            let DebugValue::Counter(n) = value else { panic!("not a counter: {value:?}") };
            paused.insert(partition, n);
        }
    }
    for tenant in ["acme", "initech"] {
        let partition = partition_for(tenant.as_bytes(), 2);
        assert!(paused.get(&partition).is_some_and(|&n| n > 0), "partition {partition} never paused: {paused:?}");
    }
}
