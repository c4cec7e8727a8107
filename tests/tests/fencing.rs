//! Who fences whom, on a real broker: the writers of one changelog partition fence each other
//! whatever consumer group they are in, so a zombie of another group (a group id changed in a
//! rolling update, a second deployment given the same topics) cannot commit a stale batch over
//! the state its successor restored. librdkafka's mock cluster does not honour
//! `read_committed`, so this runs against Kafka itself.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tollgate_e2e::broker;
use tollgate_worker::{TopicKind, WorkerConfig, kafka};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A worker's configuration on the shared broker, in consumer group `group`, its topics named
/// after `tag`.
fn config(tag: &str, group: &str) -> WorkerConfig {
    let mut config = WorkerConfig {
        bootstrap_servers: broker::shared().bootstrap_servers(),
        group_id: group.to_owned(),
        ..WorkerConfig::default()
    };
    for name in config.topics.names_mut() {
        *name = format!("{tag}.{name}");
    }
    config
}

/// Partition 0's first transactional producer, as a partition task builds it, initialised:
/// this fences every earlier producer of the same id.
fn task_producer(config: &WorkerConfig) -> BaseProducer {
    let [id, _] = kafka::transactional_ids(config, 0);
    let producer: BaseProducer = kafka::transactional_producer(config, &id).create().expect("producer");
    producer.init_transactions(TIMEOUT).expect("init transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, value: &str) {
    producer.send(BaseRecord::to(topic).key("t/contoso").payload(value)).map_err(|(e, _)| e).expect("send");
    producer.flush(TIMEOUT).expect("flush");
}

#[test]
fn a_writer_of_another_group_over_the_same_changelog_fences_the_previous_one() {
    let tag = format!("fencing-{}", std::process::id());
    let old = config(&tag, "tollgate");
    let new = config(&tag, "tollgate-renamed");
    let state = old.topics[TopicKind::State].clone();
    broker::shared().create_topic(&state, 1, true);
    broker::shared().wait_for_topic(&state, 1);

    // The old group's task, paused with a batch written and not committed.
    let zombie = task_producer(&old);
    zombie.begin_transaction().expect("begin");
    send(&zombie, &state, "stale");

    // The new group's task takes the partition over and commits its own batch.
    let successor = task_producer(&new);
    successor.begin_transaction().expect("begin");
    send(&successor, &state, "fresh");
    successor.commit_transaction(TIMEOUT).expect("the successor commits");

    // The zombie wakes up: its commit is refused, and its batch was aborted.
    zombie.commit_transaction(TIMEOUT).expect_err("the zombie of the old group committed its stale batch");
    let read = broker::shared().console_consume(&state, true, 1, TIMEOUT);
    let values: Vec<&[u8]> = read.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(values, vec![b"fresh".as_slice()], "what a restore reads first");
}
