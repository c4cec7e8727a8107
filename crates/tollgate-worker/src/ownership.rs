//! Who owns which partition, and where its HTTP API is: the ownership topic
//! (`tollgate.ownership.v1`, compacted, one partition). Kafka stays the only coordination
//! service: each worker announces its partitions and address there when the group assigns
//! them and again (without them) when they are revoked, and every worker follows the topic to
//! forward a tenant's question to its owner.
//!
//! A record is keyed `<group>/<address>/<worker>` and holds the worker's whole set of
//! partitions (JSON: `{"worker","address","partitions"}`); a graceful stop writes a tombstone.
//! The owner of partition *p* is the worker whose **latest** record listing *p* has the
//! highest offset. Under eager rebalancing a worker's partitions are revoked before the next
//! owner is assigned them, so the new owner's announcement always comes after: a record left
//! behind by a worker killed with its partitions (no withdrawal written) is superseded by the
//! next owner's, and a withdrawal written late changes nothing for partitions it does not
//! list. Compaction keeps offsets, so the rule holds after it too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::config::WorkerConfig;
use crate::topics::TopicKind;
use crate::{Error, kafka};

/// One worker's announcement.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Announcement {
    /// The worker's name in its process.
    pub worker: String,
    /// Its HTTP address (`host:port`).
    pub address: String,
    /// The input partitions it owns.
    pub partitions: BTreeSet<i32>,
}

/// The owners of the group's partitions, as the ownership topic says.
#[derive(Debug)]
pub struct Directory {
    /// Only records of this group count (`<group>/` keys).
    prefix: String,
    /// Latest record per key, with its offset.
    latest: RwLock<BTreeMap<String, (i64, Announcement)>>,
}

impl Directory {
    /// An empty directory for the consumer group `group`.
    pub fn new(group: &str) -> Self {
        Directory { prefix: format!("{group}/"), latest: RwLock::default() }
    }

    /// Applies one record of the ownership topic (a tombstone: `None`).
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>, offset: i64) {
        let Ok(key) = std::str::from_utf8(key) else { return };
        if !key.starts_with(&self.prefix) {
            return;
        }
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        match value.map(serde_json::from_slice::<Announcement>) {
            None => {
                latest.remove(key);
            }
            Some(Ok(announcement)) => {
                latest.insert(key.to_owned(), (offset, announcement));
            }
            Some(Err(error)) => tracing::warn!(key, offset, %error, "unreadable ownership record: ignored"),
        }
    }

    /// The HTTP address of `partition`'s owner, if any worker announced it.
    pub fn owner(&self, partition: i32) -> Option<String> {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        latest
            .values()
            .filter(|(_, a)| a.partitions.contains(&partition))
            .max_by_key(|(offset, _)| *offset)
            .map(|(_, a)| a.address.clone())
    }
}

/// Follows the ownership topic into `directory` on a thread of its own until `cancel`. A topic
/// that cannot be read (missing, refused) is logged and tried again: the API then answers 503
/// for the partitions owned elsewhere, and rating is not affected.
pub(crate) fn follow(config: &WorkerConfig, directory: Arc<Directory>, cancel: Arc<Cancel>) -> Option<JoinHandle<()>> {
    let config = config.clone();
    let spawned = std::thread::Builder::new().name("tollgate-ownership".into()).spawn(move || {
        let mut attempt = 0u32;
        while !cancel.is_cancelled() {
            match read(&config, &directory, &cancel) {
                Ok(()) => return,
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "cannot follow the ownership topic, retrying");
                    if cancel.wait(Duration::from_secs(1u64 << attempt.min(5))) {
                        return;
                    }
                }
            }
        }
    });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::error!(%error, "cannot start the ownership reader: the tenant API cannot forward");
            None
        }
    }
}

fn read(config: &WorkerConfig, directory: &Directory, cancel: &Cancel) -> Result<(), Error> {
    let topic = &config.topics[TopicKind::Ownership];
    let consumer = kafka::watched_reader(config, "ownership")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    while !cancel.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                directory.apply(message.key().unwrap_or_default(), message.payload(), message.offset())
            }
            // A reader stuck for good (see `kafka::BrokerWatch`) is replaced, like one that
            // failed.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => consumer.context().0.check()?,
            Some(Err(error)) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The announcer's producer context: remembers that a delivery failed, so that the set is
/// announced again.
#[derive(Debug, Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicBool,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        if let Err((error, _)) = result {
            tracing::warn!(%error, "an announcement of this worker's partitions was not written; it is sent again");
            self.failed.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Writes this worker's announcements.
pub(crate) struct Announcer {
    producer: BaseProducer<Deliveries>,
    topic: String,
    key: String,
    worker: String,
    address: String,
    /// The set last announced: a set announced again is not written again.
    last: Mutex<Option<BTreeSet<i32>>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Announcer {
    /// The announcer of worker `worker` serving its API at `address`.
    pub(crate) fn new(config: &WorkerConfig, worker: &str, address: &str) -> Result<Self, Error> {
        Ok(Announcer {
            producer: kafka::producer(config).create_with_context(Deliveries::default())?,
            topic: config.topics[TopicKind::Ownership].clone(),
            key: format!("{}/{address}/{worker}", config.group_id),
            worker: worker.to_owned(),
            address: address.to_owned(),
            last: Mutex::new(None),
        })
    }

    /// Announces that this worker owns `partitions` (and no other), unless it already did
    /// and no announcement failed since (a broker down for longer than the delivery timeout):
    /// whether it sent one. Not waited for: the records of one producer keep their order.
    pub(crate) fn announce(&self, partitions: &BTreeSet<i32>) -> bool {
        // The reports of earlier announcements first: one may have failed.
        self.producer.poll(Duration::ZERO);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = self.producer.context().failed.swap(false, std::sync::atomic::Ordering::AcqRel);
        if last.as_ref() == Some(partitions) && !failed {
            return false;
        }
        let announcement =
            Announcement { worker: self.worker.clone(), address: self.address.clone(), partitions: partitions.clone() };
        let payload = serde_json::to_vec(&announcement).unwrap_or_default();
        let sent = match self.producer.send(BaseRecord::to(&self.topic).key(&self.key).payload(&payload).partition(0)) {
            Ok(()) => {
                *last = Some(partitions.clone());
                true
            }
            Err((error, _)) => {
                tracing::warn!(%error, "cannot announce this worker's partitions");
                false
            }
        };
        self.producer.poll(Duration::ZERO);
        sent
    }

    /// Withdraws this worker (a tombstone) and waits up to `timeout` for everything written;
    /// nothing when it never announced anything (it stopped before the group assigned it).
    pub(crate) fn withdraw(&self, timeout: Duration) {
        if self.last.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            return;
        }
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(self.topic.as_str()).key(self.key.as_str()).partition(0);
        if let Err((error, _)) = self.producer.send(record) {
            tracing::warn!(%error, "cannot withdraw this worker's announcement");
        }
        if let Err(error) = crate::kafka::flush(&self.producer, timeout) {
            tracing::warn!(%error, "ownership announcements not all written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(worker: &str, partitions: &[i32]) -> Vec<u8> {
        let address = format!("127.0.0.1:{}", if worker == "a" { 1 } else { 2 });
        let a = Announcement { worker: worker.into(), address, partitions: partitions.iter().copied().collect() };
        serde_json::to_vec(&a).unwrap_or_default()
    }

    /// An announcement that was not written (here: no broker, a delivery timeout of 200 ms)
    /// is sent again the next time the worker announces the same set; one written is not.
    #[test]
    fn an_announcement_not_written_is_sent_again() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut config = WorkerConfig { bootstrap_servers: unused.to_string(), ..WorkerConfig::default() };
        config.librdkafka.insert("message.timeout.ms".into(), "200".into());
        let announcer = Announcer::new(&config, "w1", "127.0.0.1:9464").unwrap();
        let partitions: BTreeSet<i32> = [0, 3].into_iter().collect();
        assert!(announcer.announce(&partitions), "a new set is sent");
        assert!(!announcer.announce(&partitions), "not again while its delivery is pending");
        // The failed delivery is reported once its timeout passes; nothing else says when.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !announcer.announce(&partitions) {
            assert!(std::time::Instant::now() < deadline, "the failed announcement was not sent again");
            std::thread::sleep(Duration::from_millis(50));
        }

        let kafka = crate::client::EmbeddedKafka::start().unwrap();
        let config = WorkerConfig { bootstrap_servers: kafka.bootstrap_servers(), ..WorkerConfig::default() };
        kafka.create_topics(&crate::topics::specs(&config, 1)).unwrap();
        let announcer = Announcer::new(&config, "w1", "127.0.0.1:9464").unwrap();
        assert!(announcer.announce(&partitions));
        kafka::flush(&announcer.producer, Duration::from_secs(10)).unwrap();
        assert!(!announcer.announce(&partitions), "written: not sent again");
    }

    /// The latest record listing a partition names its owner: a worker killed without
    /// withdrawing is superseded by the next owner, and a late withdrawal changes nothing for
    /// partitions it does not list.
    #[test]
    fn the_latest_announcement_of_a_partition_names_its_owner() {
        let d = Directory::new("g");
        d.apply(b"g/127.0.0.1:1/a", Some(&record("a", &[0, 1, 2])), 0);
        d.apply(b"other/127.0.0.1:9/z", Some(&record("a", &[0])), 1);
        assert_eq!(d.owner(0).as_deref(), Some("127.0.0.1:1"));
        // b takes 1 and 2 while a's record still lists them (a was killed).
        d.apply(b"g/127.0.0.1:2/b", Some(&record("b", &[1, 2])), 2);
        assert_eq!((d.owner(0), d.owner(1)), (Some("127.0.0.1:1".into()), Some("127.0.0.1:2".into())));
        // a's withdrawal arrives late.
        d.apply(b"g/127.0.0.1:1/a", None, 3);
        assert_eq!((d.owner(0), d.owner(2)), (None, Some("127.0.0.1:2".into())));
        assert_eq!(d.owner(7), None);
    }
}
