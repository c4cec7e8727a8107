//! The topic layout of a tollgate deployment.
//!
//! Inputs, outputs and the changelog share one partition count (co-partitioning: the worker
//! that owns partition *p* of the inputs writes partition *p* of the changelog). Reference
//! topics are compacted and small; every worker reads them whole.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::WorkerConfig;
use crate::{Error, kafka};

/// One topic to create.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic configs (`cleanup.policy`, ...).
    pub configs: Vec<(&'static str, String)>,
}

/// The topics of a deployment with `partitions` input partitions.
pub fn specs(config: &WorkerConfig, partitions: i32) -> Vec<TopicSpec> {
    let t = &config.topics;
    let plain = |name: &str, partitions: i32| TopicSpec { name: name.to_owned(), partitions, configs: Vec::new() };
    let compacted = |name: &str, partitions: i32| TopicSpec {
        name: name.to_owned(),
        partitions,
        configs: vec![("cleanup.policy", "compact".into()), ("min.compaction.lag.ms", "60000".into())],
    };
    let mut state = compacted(&t.state, partitions);
    // Changelog records are one entry each (a tenant's fixed-size record, one open leg, one
    // window entry) and stay far below this; the headroom is for tenants with many lots.
    state.configs.push(("max.message.bytes", "16777216".into()));
    vec![
        plain(&t.call_legs, partitions),
        plain(&t.credit_commands, partitions),
        plain(&t.rated_usage, partitions),
        plain(&t.leg_decisions, partitions),
        plain(&t.credit_events, partitions),
        plain(&t.dead_letter, partitions),
        state,
        compacted(&t.tenants, 1),
        compacted(&t.users, 1),
        compacted(&t.rate_cards, 1),
    ]
}

/// Creates the topics through the admin API; existing topics are left alone. Returns, per
/// topic, whether it was created (`true`) or already existed (`false`).
pub fn create(config: &WorkerConfig, specs: &[TopicSpec], replication: i32) -> Result<Vec<(String, bool)>, Error> {
    let admin: AdminClient<DefaultClientContext> = kafka::base(config).create()?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut topic = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            for (k, v) in &s.configs {
                topic = topic.set(k, v);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_millis(config.kafka_timeout_ms)));
    let results = block_on(admin.create_topics(&topics, &options))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push((name, true)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => created.push((name, false)),
            Err((name, code)) => {
                if crate::access::Cause::of_code(code).is_some() {
                    return Err(
                        crate::access::AccessError::denied(config, &format!("create topic {name}"), code).into()
                    );
                }
                return Err(Error::Topology(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    Ok(created)
}

/// Drives a future to completion on this thread (the admin client's futures are resolved by
/// librdkafka's own threads).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
