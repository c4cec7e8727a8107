//! A consumed Kafka record as plain data: librdkafka's borrowed message is translated once,
//! at the edge, so everything behind it can be built by hand in tests.

use rdkafka::Message;

/// One consumed record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// When the record happened, in milliseconds since the epoch: the Kafka timestamp (0
    /// when it has none), replaced for an input by the `occurred_at` its value carries when
    /// the worker routes it (`i64::MIN` when it carries none that can be read, or one too
    /// far after `produced_at`: it is refused when rated). Orders the records of the two
    /// input topics within a batch.
    pub timestamp: i64,
    /// The record's Kafka timestamp, in milliseconds since the epoch (0 when it has none),
    /// kept as read: an input dated too far after it is refused (`future_dated`).
    pub produced_at: i64,
    /// Key bytes (tollgate inputs: the tenant id).
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// Copies a librdkafka message.
    pub fn from_message<M: Message>(message: &M) -> Self {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis().unwrap_or(0),
            produced_at: message.timestamp().to_millis().unwrap_or(0),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}
