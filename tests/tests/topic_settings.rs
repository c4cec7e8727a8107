//! Topics made outside tollgate, on a real broker: a changelog or reference topic that the
//! broker would not keep (its cleanup policy deletes old records) stops the worker before it
//! rates anything. librdkafka's mock cluster answers no `DescribeConfigs`, so this runs
//! against Kafka itself.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::sync::{Arc, mpsc};
use std::time::Duration;

use tollgate_e2e::broker;
use tollgate_worker::{Cancel, TopicKind, Worker, WorkerConfig, topics};

/// The worker's configuration on the shared broker, its topics named after `tag`.
fn config(tag: &str) -> WorkerConfig {
    let mut config = WorkerConfig {
        bootstrap_servers: broker::shared().bootstrap_servers(),
        group_id: format!("settings-{tag}"),
        transactional_id_prefix: format!("settings-{tag}"),
        ..WorkerConfig::default()
    };
    for name in config.topics.names_mut() {
        *name = format!("{tag}.{name}");
    }
    config
}

/// Creates tollgate's topics as `tollgate admin create-topics` would, but `kind`'s with
/// `settings` in place of its compaction settings; returns the configuration.
fn topics_with(tag: &str, kind: TopicKind, settings: &[(&'static str, &str)]) -> WorkerConfig {
    let config = config(tag);
    let mut specs = topics::specs(&config, 2);
    for spec in specs.iter_mut().filter(|s| s.name == config.topics[kind]) {
        spec.configs.retain(|(key, _)| !key.contains("compaction") && *key != "cleanup.policy");
        spec.configs.extend(settings.iter().map(|&(key, value)| (key, value.to_owned())));
    }
    broker::create_topics(&config, &specs).expect("create topics");
    for spec in &specs {
        broker::shared().wait_for_topic(&spec.name, spec.partitions);
    }
    config
}

/// What the worker says when it starts on tollgate's topics with `kind`'s `cleanup.policy`
/// set to `cleanup`.
fn start_with(tag: &str, kind: TopicKind, cleanup: &str) -> String {
    let config = topics_with(tag, kind, &[("cleanup.policy", cleanup)]);
    let worker = Worker::new(config).expect("worker");
    let stop = Arc::new(Cancel::default());
    let flag = Arc::clone(&stop);
    let (sender, ended) = mpsc::channel();
    std::thread::spawn(move || sender.send(worker.run(&flag)));
    match ended.recv_timeout(Duration::from_secs(60)) {
        Ok(result) => result.expect_err("the worker ran").to_string(),
        Err(_) => {
            stop.cancel();
            panic!("the worker is running on topics retention deletes from");
        }
    }
}

#[test]
fn a_changelog_that_retention_deletes_from_is_refused() {
    assert_eq!(
        start_with("delete", TopicKind::State, "delete"),
        "topic layout: topic delete.tollgate.state.v1 has cleanup.policy=delete: it must be `compact` alone \
         (or keep everything: retention.ms=-1 and retention.bytes=-1), or retention deletes what the worker keeps there (set it with kafka-configs --alter --entity-type topics \
         --entity-name delete.tollgate.state.v1 --add-config cleanup.policy=compact)"
    );
}

#[test]
fn reference_data_compacted_and_deleted_is_refused() {
    assert_eq!(
        start_with("both", TopicKind::Tenants, "compact,delete"),
        "topic layout: topic both.tollgate.tenants.v1 has cleanup.policy=compact,delete: it must be `compact` \
         alone (or keep everything: retention.ms=-1 and retention.bytes=-1), or retention deletes what the worker keeps there (set it with kafka-configs --alter --entity-type \
         topics --entity-name both.tollgate.tenants.v1 --add-config cleanup.policy=compact)"
    );
}

/// Deleting by age or size is what loses records: a topic that keeps everything passes,
/// whatever its policy says.
#[test]
fn reference_data_that_keeps_everything_is_accepted() {
    let settings = [("cleanup.policy", "compact,delete"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
    let config = topics_with("forever", TopicKind::Users, &settings);
    assert_eq!(tollgate_worker::worker::check_topology(&config).expect("accepted"), 2);
}
