//! Producing tollgate records the way the worker expects them: keyed by tenant (reference
//! records by their id), values as `tollgate.v1` protobuf, partitioned with murmur2. Used by
//! `tollgate produce`, `tollgate admin`, the demo, and the tests.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tollgate_proto::{Message as _, v1};

use crate::config::TopicKind;
use crate::config::{Topics, WorkerConfig};
use crate::partition::DeliveryTracker;
use crate::reference::user_key;
use crate::{Error, kafka};

/// A record ready to produce.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Keyed {
    /// Topic.
    pub topic: String,
    /// Key (tenant id, `tenant/user`, or rate card id).
    pub key: String,
    /// Protobuf value.
    pub value: Vec<u8>,
}

/// The topic, key and value of an input record.
pub fn input(topics: &Topics, record: &v1::InputRecord) -> Option<Keyed> {
    match record.record.as_ref()? {
        v1::input_record::Record::CallLeg(e) => Some(Keyed {
            topic: topics[TopicKind::CallLegs].clone(),
            key: e.tenant_id.clone(),
            value: e.encode_to_vec(),
        }),
        v1::input_record::Record::CreditCommand(c) => Some(Keyed {
            topic: topics[TopicKind::CreditCommands].clone(),
            key: c.tenant_id.clone(),
            value: c.encode_to_vec(),
        }),
    }
}

/// One record per rate card, user and tenant, in that order: what a record names comes
/// before it (a tenant names its rate card; a tenant switched to a card that is not written
/// yet would have its calls unpriced, free by default, until it is).
pub fn reference(topics: &Topics, data: &v1::ReferenceData) -> Vec<Keyed> {
    let mut out = Vec::new();
    for c in &data.rate_cards {
        out.push(Keyed {
            topic: topics[TopicKind::RateCards].clone(),
            key: c.rate_card_id.clone(),
            value: c.encode_to_vec(),
        });
    }
    for u in &data.users {
        out.push(Keyed {
            topic: topics[TopicKind::Users].clone(),
            key: user_key(&u.tenant_id, &u.user_id),
            value: u.encode_to_vec(),
        });
    }
    for t in &data.tenants {
        out.push(Keyed {
            topic: topics[TopicKind::Tenants].clone(),
            key: t.tenant_id.clone(),
            value: t.encode_to_vec(),
        });
    }
    out
}

/// Fails naming the first of `topics` that does not exist, before anything is sent to it.
/// Any other answer (a topic Kafka refuses to describe, a leader being elected) is left to
/// the sends, whose refusal names what the principal may not do (write). Asked by a client of
/// its own: an idempotent producer told it may not describe a topic fails for good, before
/// its sends could say why.
pub fn ensure_topics(config: &WorkerConfig, topics: &[&str]) -> Result<(), Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = kafka::base(config).set("allow.auto.create.topics", "false").create()?;
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), config.kafka_timeout())?;
        let Some(found) = metadata.topics().first() else { continue };
        // Only what says it does not exist: a leader being elected, say, is the sends' to
        // wait out.
        let missing = match found.error().map(RDKafkaErrorCode::from) {
            Some(code) => code == RDKafkaErrorCode::UnknownTopicOrPartition,
            None => found.partitions().is_empty(),
        };
        if missing {
            return Err(Error::Topology(format!(
                "topic {topic} does not exist (create it with `tollgate admin create-topics`)"
            )));
        }
    }
    Ok(())
}

/// An idempotent producer with the Java-compatible partitioner.
pub struct Publisher {
    producer: BaseProducer<DeliveryTracker>,
    /// How long [`Publisher::flush`] waits: librdkafka's own delivery timeout and a little,
    /// by when every record sent has its report (written, or failed for good).
    timeout: Duration,
    /// The largest record it sends that a worker takes: see [`Publisher::largest_record`].
    largest: usize,
}

/// librdkafka's default `message.timeout.ms`.
const DELIVERY_TIMEOUT_MS: u64 = 300_000;
/// librdkafka's default `message.max.bytes`.
const MAX_MESSAGE_BYTES: usize = 1_000_000;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects (lazily: librdkafka connects on first use).
    pub fn new(config: &WorkerConfig) -> Result<Self, Error> {
        let mut client = kafka::base(config);
        client.set("enable.idempotence", "true").set("acks", "all").set("partitioner", "murmur2_random");
        // A broker that creates topics on first use would make a missing input topic with its
        // own partition count (one, by default): the workers would refuse to start, and the
        // records sent, keyed for one partition, would be refused once it was grown.
        client.set("allow.auto.create.topics", "false");
        // Waiting less than librdkafka retries would give up on records it would still
        // deliver (a partition's leader moving takes seconds), and the producer's drop would
        // then purge them.
        let setting = |key: &str| config.librdkafka.get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let delivery = setting("message.timeout.ms").or_else(|| setting("delivery.timeout.ms"));
        let message_max = setting("message.max.bytes").and_then(|b| usize::try_from(b).ok());
        Ok(Publisher {
            producer: client.create_with_context(DeliveryTracker::default())?,
            timeout: Duration::from_millis(delivery.unwrap_or(DELIVERY_TIMEOUT_MS)) + Duration::from_secs(5),
            largest: config.max_record_bytes.min(message_max.unwrap_or(MAX_MESSAGE_BYTES)),
        })
    }

    /// The largest record value it sends that a worker takes: what a worker reads
    /// (`max_record_bytes`) and what the producer sends (`message.max.bytes`), the smaller.
    /// A larger one is refused by the producer when it is sent, or dead-lettered by a worker.
    pub fn largest_record(&self) -> usize {
        self.largest
    }

    /// Queues a record (waiting while librdkafka's queue is full).
    pub fn send(&self, record: &Keyed) -> Result<(), Error> {
        self.send_raw(&record.topic, Some(record.key.as_bytes()), Some(&record.value))
    }

    /// Queues raw bytes (tests use it to publish malformed records and tombstones).
    pub fn send_raw(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), Error> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        kafka::send_waiting(&self.producer, record)?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Serves the delivery reports that came back (as sending does), without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Records whose delivery failed so far (each for good: librdkafka retried it until
    /// `message.timeout.ms`, or Kafka refused it), and the first one's error code. Reports are
    /// served as records are sent, so a failure shows here before the final flush.
    pub fn undelivered(&self) -> (u64, Option<RDKafkaErrorCode>) {
        let tracker = self.producer.context();
        (tracker.failures(), tracker.first_error())
    }

    /// Waits until everything queued is acknowledged; fails if anything was not, or if some
    /// record has no report after librdkafka's delivery timeout (and a little).
    pub fn flush(&self) -> Result<(), Error> {
        self.flush_within(self.timeout)
    }

    /// [`Publisher::flush`], giving up after `timeout` (a caller that sends again with a new
    /// client when one is stuck, as the fault suite's traffic does).
    pub fn flush_within(&self, timeout: Duration) -> Result<(), Error> {
        kafka::flush(&self.producer, timeout)?;
        if let Some(denied) = self.producer.context().denied() {
            return Err(Error::Access(denied));
        }
        if self.producer.context().failures() > 0 {
            return Err(Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)));
        }
        Ok(())
    }
}
