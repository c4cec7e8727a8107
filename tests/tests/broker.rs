//! The real-broker harness itself (`tollgate_e2e::broker`): a Kafka 4.1 broker that honours
//! transactions and `read_committed`, keeps committed data through SIGKILL and SIGTERM, and
//! whose console consumer gives back the exact bytes that were produced.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tollgate_e2e::broker::{Broker, ConsoleRecord};

const EVENTS: &str = "smoke.events";
const STATE: &str = "smoke.state";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Every byte the console consumer has to escape, and some it does not.
const AWKWARD: &[u8] = b"one\n\t\\x41\\\x00\x7f\xff\r";

/// A transactional producer; a new one with the same id fences the previous one.
fn producer(broker: &Broker) -> BaseProducer {
    let producer: BaseProducer = broker
        .client_config()
        .set("transactional.id", "smoke")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    producer.init_transactions(TIMEOUT).expect("init transactions");
    producer
}

/// One transaction of `(topic, key, value)` records, committed or aborted.
fn transaction(producer: &BaseProducer, records: &[(&str, &str, &[u8])], commit: bool) {
    producer.begin_transaction().expect("begin");
    for (topic, key, value) in records {
        producer.send(BaseRecord::to(topic).key(*key).payload(*value)).map_err(|(e, _)| e).expect("send");
    }
    if commit {
        producer.commit_transaction(TIMEOUT).expect("commit");
    } else {
        producer.flush(TIMEOUT).expect("flush before abort");
        producer.abort_transaction(TIMEOUT).expect("abort");
    }
}

fn key_values(records: &[ConsoleRecord]) -> Vec<(String, Vec<u8>)> {
    records.iter().map(|r| (r.key_str(), r.value.clone())).collect()
}

fn kv(key: &str, value: &[u8]) -> (String, Vec<u8>) {
    (key.to_owned(), value.to_vec())
}

/// What a `read_committed` reader must see after the first three transactions.
fn committed_events() -> Vec<(String, Vec<u8>)> {
    vec![kv("k1", AWKWARD), kv("k2", b"two"), kv("k3", b"three"), kv("k4", b"four")]
}

fn committed_state() -> Vec<(String, Vec<u8>)> {
    vec![kv("a", b"a1"), kv("b", b"b1"), kv("b", b"b2")]
}

/// Reads both topics `read_committed` and checks them against what was committed.
fn assert_committed(broker: &Broker, extra_events: &[(String, Vec<u8>)]) {
    let mut expected = committed_events();
    expected.extend_from_slice(extra_events);
    let events = broker.console_consume(EVENTS, true, expected.len(), TIMEOUT);
    assert_eq!(key_values(&events), expected);
    assert!(events.iter().all(|r| r.partition == 0));
    let state = broker.console_consume(STATE, true, 3, TIMEOUT);
    assert_eq!(key_values(&state), committed_state());
}

#[test]
fn transactions_and_read_committed_survive_sigkill_and_sigterm() {
    let mut broker = Broker::start();
    let first_start = broker.startup_time();
    broker.create_topic(EVENTS, 1, false);
    broker.create_topic(STATE, 1, true);

    let txn = producer(&broker);
    transaction(&txn, &[(EVENTS, "k1", AWKWARD), (EVENTS, "k2", b"two"), (EVENTS, "k3", b"three")], true);
    transaction(&txn, &[(STATE, "a", b"a1"), (STATE, "b", b"b1")], true);
    transaction(&txn, &[(EVENTS, "x1", b"aborted-1"), (EVENTS, "x2", b"aborted-2"), (STATE, "a", b"a-aborted")], false);
    // Committed after the aborted one: a reader that got to it has skipped the aborted records.
    transaction(&txn, &[(EVENTS, "k4", b"four"), (STATE, "b", b"b2")], true);
    drop(txn);

    assert_committed(&broker, &[]);
    // The aborted records are in the log all the same: read_uncommitted sees them, in order.
    let all = broker.console_consume(EVENTS, false, 6, TIMEOUT);
    let keys: Vec<String> = all.iter().map(ConsoleRecord::key_str).collect();
    assert_eq!(keys, ["k1", "k2", "k3", "x1", "x2", "k4"]);
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));

    // SIGKILL: no shutdown, no flush; committed data survives (log recovery on restart).
    broker.kill9();
    assert!(!broker.is_running());
    broker.restart();
    assert_committed(&broker, &[]);

    // Transactions work after the restart; a new producer with the same id fences the old,
    // whose next transaction fails.
    let old = producer(&broker);
    let txn = producer(&broker);
    old.begin_transaction().expect("begin: local to the client");
    old.send(BaseRecord::to(EVENTS).key("z1").payload(&b"zombie"[..])).map_err(|(e, _)| e).expect("queue");
    let refused = old.commit_transaction(TIMEOUT).expect_err("the fenced producer committed");
    assert!(refused.to_string().to_lowercase().contains("fenced"), "{refused}");
    drop(old);
    transaction(&txn, &[(EVENTS, "k5", b"five")], true);
    transaction(&txn, &[(EVENTS, "x3", b"aborted-3")], false);
    // Committed last: a read_committed reader that reads it has read past x3, so x3 would
    // show in what it read before it.
    transaction(&txn, &[(EVENTS, "k6", b"six")], true);
    drop(txn);

    // SIGTERM: a graceful shutdown, then the same ports and data again.
    let servers = broker.bootstrap_servers();
    broker.sigterm();
    broker.restart();
    assert_eq!(broker.bootstrap_servers(), servers);
    assert_committed(&broker, &[kv("k5", b"five"), kv("k6", b"six")]);

    // A paused broker answers nothing; resumed, it does again.
    let client: BaseConsumer = broker.client_config().create().unwrap();
    client.fetch_metadata(None, TIMEOUT).expect("metadata before pause");
    broker.pause();
    assert!(client.fetch_metadata(Some(EVENTS), Duration::from_secs(2)).is_err(), "a paused broker answered");
    broker.resume();
    client.fetch_metadata(Some(EVENTS), TIMEOUT).expect("metadata after resume");

    eprintln!(
        "broker start {:.1} s, last restart {:.1} s",
        first_start.as_secs_f64(),
        broker.startup_time().as_secs_f64()
    );
}
