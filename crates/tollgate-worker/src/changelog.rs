//! The state changelog: a compacted topic co-partitioned with the inputs, keyed by tenant,
//! holding each tenant's latest state. Restoring a partition reads its changelog partition
//! from the beginning up to the high watermark seen when the restore started.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tollgate_core::TenantState;

use crate::config::WorkerConfig;
use crate::{Error, codec, kafka, telemetry};

/// Reads changelog partition `partition` into a map of tenant states.
pub fn restore(
    config: &WorkerConfig,
    partition: i32,
    stop: &dyn Fn() -> bool,
) -> Result<HashMap<String, TenantState>, Error> {
    let started = Instant::now();
    let topic = &config.topics.state;
    let consumer: BaseConsumer = kafka::reader(config, "restore").create()?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, config.kafka_timeout())?;
    let mut states = HashMap::new();
    let mut records = 0u64;
    if high > 0 {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        loop {
            if stop() {
                return Err(Error::ShutDown("restoring state"));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    records += 1;
                    let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    match message.payload() {
                        None => {
                            states.remove(&key);
                        }
                        Some(payload) => {
                            let state = codec::decode_state(payload)
                                .map_err(|e| Error::Changelog { key: key.clone(), message: e.to_string() })?;
                            states.insert(key, state);
                        }
                    }
                    if message.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    if reached(&consumer, topic, partition, high) {
                        break;
                    }
                }
                Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                    if reached(&consumer, topic, partition, high) {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(partition, error = %e, "changelog restore: consumer error, retrying");
                }
                None => {
                    if reached(&consumer, topic, partition, high) {
                        break;
                    }
                }
            }
        }
    }
    telemetry::restored(partition, states.len(), records, started.elapsed());
    Ok(states)
}

/// Whether the reader's position passed the target (transaction markers leave offsets no
/// message has).
fn reached(consumer: &BaseConsumer, topic: &str, partition: i32, high: i64) -> bool {
    consumer
        .position()
        .ok()
        .and_then(|p| p.find_partition(topic, partition).and_then(|e| e.offset().to_raw()))
        .is_some_and(|pos| pos >= high)
}
