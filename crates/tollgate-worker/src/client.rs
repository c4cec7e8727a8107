//! Kafka for the binary's commands, so that the binary speaks none itself: reading tollgate
//! topics from the beginning, or their last records, as plain [`Record`]s (`tollgate tail`, the demo's observer), the
//! rated usage to the ends seen at the start (`tollgate report`), the tenants' latest state
//! from the changelog, and an embedded cluster (librdkafka's mock
//! cluster) for the demo. Whether a cluster answers, and why not, is [`crate::access::probe`].
//!
//! These readers are not members of the workers' group: they assign every partition
//! themselves and commit nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::kafka::{Reader, ReaderContext};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tollgate_core::TenantState;

use crate::access::{self, AccessError, Cause};
use crate::config::WorkerConfig;
use crate::record::Record;
use crate::topics::{TopicKind, TopicSpec};
use crate::{Error, changelog, kafka};

/// Reads topics from the beginning, every partition, `read_committed`.
pub struct TopicReader {
    consumer: Reader,
    config: WorkerConfig,
    timeout: Duration,
    /// The end (high watermark) of every partition, as last noted.
    ends: Vec<(String, i32, i64)>,
    /// The start (low watermark) of every partition, in the order of `ends`.
    starts: Vec<i64>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("ends", &self.ends).finish_non_exhaustive()
    }
}

impl TopicReader {
    /// Assigns every partition of `topics` from the beginning and notes their current ends;
    /// `purpose` names the reader in the broker's logs. A topic without partitions does not
    /// exist: [`Error::Topology`].
    pub fn from_beginning(config: &WorkerConfig, purpose: &str, topics: &[&str]) -> Result<Self, Error> {
        let consumer: Reader = kafka::reader(config, purpose).create_with_context(ReaderContext)?;
        let timeout = config.kafka_timeout();
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            // A missing ACL does not heal: say so, naming the topic.
            if let Some(code) = metadata.topics().first().and_then(|t| t.error()).map(RDKafkaErrorCode::from)
                && Cause::of_code(code).is_some()
            {
                return Err(AccessError::denied(config, &format!("read topic {topic}"), code).into());
            }
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .flat_map(|t| t.partitions())
                .map(|p| p.id())
                .collect();
            if partitions.is_empty() {
                return Err(Error::Topology(format!("topic {topic} does not exist")));
            }
            for partition in partitions {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        let mut reader =
            TopicReader { consumer, config: config.clone(), timeout, ends: Vec::new(), starts: Vec::new() };
        // The ends first, while nothing is fetched: see `note_ends`.
        reader.note_ends(&assignment)?;
        reader.consumer.assign(&assignment)?;
        Ok(reader)
    }

    /// Notes the current end of every assigned partition: [`TopicReader::caught_up`] then
    /// says whether the reader got there (call it again once the writers stopped).
    pub fn mark_ends(&mut self) -> Result<(), Error> {
        let assignment = self.consumer.assignment()?;
        // Not fetched meanwhile: see `note_ends`.
        self.consumer.pause(&assignment)?;
        let noted = self.note_ends(&assignment);
        self.consumer.resume(&assignment)?;
        noted
    }

    /// Notes the ends of `partitions`. The consumer asks for them on its connection to each
    /// partition's leader, and a broker answers a connection's requests in order: behind a
    /// fetch of partitions with nothing new, each answer waited out the fetch's long poll
    /// (`fetch.wait.max.ms`, 500 ms by default), so noting the ends of the demo's 24 output
    /// partitions took 7 to 12 s. Asked while none of them is fetched, the answers come at
    /// once.
    fn note_ends(&mut self, partitions: &TopicPartitionList) -> Result<(), Error> {
        let mut ends = Vec::new();
        let mut starts = Vec::new();
        for entry in partitions.elements() {
            let (low, high) = self.consumer.fetch_watermarks(entry.topic(), entry.partition(), self.timeout)?;
            ends.push((entry.topic().to_owned(), entry.partition(), high));
            starts.push(low);
        }
        self.ends = ends;
        self.starts = starts;
        Ok(())
    }

    /// The next record, waiting up to `timeout`; `None` when none came (the end of a
    /// partition is not an error). A refused read is an [`Error::Access`] naming the topics.
    pub fn poll(&self, timeout: Duration) -> Option<Result<Record, Error>> {
        match self.consumer.poll(timeout)? {
            Ok(message) => Some(Ok(Record::from_message(&message))),
            Err(KafkaError::PartitionEOF(_)) => None,
            Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => None,
            Err(error) => {
                let topics = || {
                    let mut names: Vec<String> = self.ends.iter().map(|(t, _, _)| t.clone()).collect();
                    names.dedup();
                    format!("read topic {}", names.join(" or "))
                };
                Some(Err(access::of_kafka(&self.config, &error, topics).map_or_else(|| error.into(), Error::from)))
            }
        }
    }

    /// Hands every record before the ends last noted to `each` (what was written since is
    /// left to the next read) until the reader is at those ends; an error if that takes
    /// longer than `timeout`.
    pub fn read_to_end(&self, timeout: Duration, mut each: impl FnMut(Record)) -> Result<(), Error> {
        let until = Instant::now() + timeout;
        while !self.caught_up()? {
            if Instant::now() > until {
                return Err(Error::Topology(format!("topics not read to their ends within {} s", timeout.as_secs())));
            }
            if let Some(record) = self.poll(Duration::from_millis(100)).transpose()?
                && self.before_end(&record)
            {
                each(record);
            }
        }
        Ok(())
    }

    /// Whether `record` is before the end noted for its partition (one written since is left
    /// to the next read).
    pub fn before_end(&self, record: &Record) -> bool {
        self.ends.iter().any(|(topic, partition, high)| {
            *partition == record.partition && *topic == record.topic && record.offset < *high
        })
    }

    /// The partitions whose first records are gone (deleted by retention, or by an
    /// operator): each with the offset it starts at now, as noted with its end.
    pub fn trimmed(&self) -> Vec<(i32, i64)> {
        self.ends
            .iter()
            .zip(&self.starts)
            .filter(|(_, low)| **low > 0)
            .map(|((_, partition, _), &low)| (*partition, low))
            .collect()
    }

    /// How far the reader got: offsets passed and offsets to pass, from the start of each
    /// partition to the end last noted (transaction markers count, like records).
    pub fn progress(&self) -> Result<(u64, u64), Error> {
        let position = self.consumer.position()?;
        let (mut done, mut total) = (0u64, 0u64);
        for ((topic, partition, high), low) in self.ends.iter().zip(&self.starts) {
            let at = position.find_partition(topic, *partition).and_then(|e| e.offset().to_raw()).unwrap_or(*low);
            total += (high - low).max(0) as u64;
            done += (at.clamp(*low, (*high).max(*low)) - low) as u64;
        }
        Ok((done, total))
    }

    /// The last `n` records of the assigned partitions up to the ends last noted, oldest first
    /// (by timestamp, then partition and offset); [`TopicReader::go_on_from_ends`] then reads
    /// what comes after those ends. Each partition is read from `n` offsets before its end,
    /// and from further back while transaction markers and aborted records among those
    /// offsets leave it short; an empty one is not read.
    pub fn last(&self, n: u64, timeout: Duration) -> Result<Vec<Record>, Error> {
        let wanted = usize::try_from(n).unwrap_or(usize::MAX);
        let mut records = Vec::new();
        for ((topic, partition, high), low) in self.ends.iter().zip(&self.starts) {
            if high <= low {
                continue;
            }
            let mut window = n.max(1);
            loop {
                let start = high.saturating_sub(i64::try_from(window).unwrap_or(i64::MAX)).max(*low);
                let read = self.read_partition(topic, *partition, start, *high, timeout)?;
                if read.len() >= wanted || start == *low {
                    records.extend(read.into_iter().rev().take(wanted));
                    break;
                }
                window = window.saturating_mul(4);
            }
        }
        records.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
        let skip = records.len().saturating_sub(wanted);
        Ok(records.split_off(skip))
    }

    /// After [`TopicReader::last`]: reads on from the ends last noted, so that what comes
    /// after them is read next, once. Only for a reader that goes on reading: librdkafka 2.12
    /// fails an assertion (`rktp->rktp_started`, librdkafka issue 5573) when a partition this
    /// assignment takes over from `last`'s is removed again before its first removal was
    /// answered, as closing the reader right after did (`tollgate tail -n`, one run in five).
    pub fn go_on_from_ends(&self) -> Result<(), Error> {
        let mut ends = TopicPartitionList::new();
        for (topic, partition, high) in &self.ends {
            ends.add_partition_offset(topic, *partition, Offset::Offset(*high))?;
        }
        self.consumer.assign(&ends)?;
        Ok(())
    }

    /// The records of one partition from offset `from` up to `to` (excluded), the reader
    /// assigned to it alone meanwhile.
    fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        timeout: Duration,
    ) -> Result<Vec<Record>, Error> {
        let mut one = TopicPartitionList::new();
        one.add_partition_offset(topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&one)?;
        let until = Instant::now() + timeout;
        let mut read = Vec::new();
        loop {
            let position = self.consumer.position()?;
            let at = position.find_partition(topic, partition).and_then(|e| e.offset().to_raw()).unwrap_or(from);
            if at >= to {
                return Ok(read);
            }
            if Instant::now() > until {
                return Err(Error::Topology(format!(
                    "{topic}[{partition}] not read to {to} within {} s",
                    timeout.as_secs()
                )));
            }
            if let Some(record) = self.poll(Duration::from_millis(100)) {
                let record = record?;
                if record.offset < to {
                    read.push(record);
                }
            }
        }
    }

    /// Whether every partition was read to the end last noted. Positions, not the offsets of
    /// the records read: transaction markers take offsets too.
    pub fn caught_up(&self) -> Result<bool, Error> {
        let position = self.consumer.position()?;
        // An empty partition (nothing yet, or everything deleted by retention) has nothing to
        // read: its position stays unset.
        Ok(self.ends.iter().zip(&self.starts).all(|((topic, partition, high), low)| {
            *high <= *low
                || position
                    .find_partition(topic, *partition)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|p| p >= *high)
        }))
    }
}

/// Reads `tollgate.rated-usage.v1` (`read_committed`) from the beginning to the ends noted
/// at the start, handing every record to `each` (decoded, or `Err` with the reason and the
/// record's place), with its partition, and the progress (offsets passed, offsets to pass)
/// to `progress` now and then. Fails when the reader has not moved for `stall`. Returns the
/// partitions whose first records were gone when the read began ([`TopicReader::trimmed`]).
pub fn read_rated_usage(
    config: &WorkerConfig,
    stall: Duration,
    mut progress: impl FnMut(u64, u64),
    mut each: impl FnMut(i32, Result<tollgate_proto::v1::RatedUsage, String>),
) -> Result<Vec<(i32, i64)>, Error> {
    use tollgate_proto::Message as _;
    let reader = TopicReader::from_beginning(config, "report", &[&config.topics[TopicKind::RatedUsage]])?;
    let (mut done, total) = reader.progress()?;
    progress(done, total);
    let mut moved = Instant::now();
    let mut shown = Instant::now();
    while !reader.caught_up()? {
        match reader.poll(Duration::from_millis(100)) {
            // What was written since the read began is the next report's.
            Some(Ok(record)) if !reader.before_end(&record) => {}
            Some(Ok(record)) => {
                let payload = record.payload.as_deref().unwrap_or_default();
                each(
                    record.partition,
                    tollgate_proto::v1::RatedUsage::decode(payload).map_err(|e| {
                        format!("{} partition {} offset {}: {e}", record.topic, record.partition, record.offset)
                    }),
                );
            }
            Some(Err(error)) => return Err(error),
            None => {}
        }
        if shown.elapsed() >= Duration::from_millis(100) {
            shown = Instant::now();
            let (now, total) = reader.progress()?;
            if now != done {
                done = now;
                moved = Instant::now();
            } else if moved.elapsed() > stall {
                return Err(Error::Topology(format!(
                    "reading rated usage made no progress for {} s ({done} of {total} offsets)",
                    stall.as_secs()
                )));
            }
            progress(done, total);
        }
    }
    progress(total, total);
    Ok(reader.trimmed())
}

/// The latest state of every tenant, read from the changelog to its current end (within
/// `timeout`).
pub fn read_states(config: &WorkerConfig, timeout: Duration) -> Result<HashMap<String, TenantState>, Error> {
    let reader = TopicReader::from_beginning(config, "states", &[&config.topics[TopicKind::State]])?;
    let mut restorer = changelog::Restorer::new(config.retention_seconds);
    reader.read_to_end(timeout, |record| {
        restorer.apply(record.key.as_deref().unwrap_or_default(), record.payload.as_deref());
    })?;
    Ok(restorer.finish()?.states.into_map())
}

/// A Kafka cluster inside this process (librdkafka's mock cluster): no transactions stored,
/// no `read_committed`, gone with the process. For the demo.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka").field("bootstrap_servers", &self.bootstrap_servers()).finish()
    }
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster.
    pub fn start() -> Result<Self, Error> {
        Ok(EmbeddedKafka { cluster: MockCluster::new(1)? })
    }

    /// Its `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates the topics (replication 1).
    pub fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), Error> {
        for spec in specs {
            self.cluster
                .create_topic(&spec.name, spec.partitions, 1)
                .map_err(|e| Error::Topology(format!("cannot create topic {}: {e}", spec.name)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tollgate_proto::Message as _;
    use tollgate_proto::v1;

    use super::*;
    use crate::publish::Publisher;
    use crate::testing::key_on;

    /// A rated usage of about 2 KiB: a thousand of them take the consumer several fetches.
    fn usage(id: String) -> Vec<u8> {
        v1::RatedUsage { usage_id: id, conference_id: "c".repeat(2048), ..Default::default() }.encode_to_vec()
    }

    /// A report reads the rated usage to the ends it noted when it began: records written
    /// while it reads are the next report's. One partition holds a record and gets two more
    /// during the read, the other holds a thousand; the first is read to its new end long
    /// before the second is done, so a read that stopped only at the second's end would hand
    /// over the late records (it did before `7c2db5e`).
    #[test]
    fn a_report_leaves_what_was_written_during_the_read_to_the_next_one() {
        let kafka = EmbeddedKafka::start().unwrap();
        let config = WorkerConfig { bootstrap_servers: kafka.bootstrap_servers(), ..WorkerConfig::default() };
        let topic = config.topics[TopicKind::RatedUsage].clone();
        kafka.create_topics(&[TopicSpec { name: topic.clone(), partitions: 2, configs: Vec::new() }]).unwrap();
        let (small, large) = (key_on("tenant", 0, 2), key_on("tenant", 1, 2));
        let publisher = Publisher::new(&config).unwrap();
        publisher.send_raw(&topic, Some(small.as_bytes()), Some(&usage("early-0".into()))).unwrap();
        for n in 0..1000 {
            publisher.send_raw(&topic, Some(large.as_bytes()), Some(&usage(format!("early-{}", n + 1)))).unwrap();
        }
        publisher.flush().unwrap();

        let mut written_during = false;
        let mut read = Vec::new();
        // Small fetches, and no pause after a partition's end, so that the late records'
        // partition is fetched again while the large one is still being read.
        let mut small_fetches = config.clone();
        small_fetches.librdkafka.insert("max.partition.fetch.bytes".into(), "16384".into());
        small_fetches.librdkafka.insert("fetch.error.backoff.ms".into(), "1".into());
        let trimmed = read_rated_usage(
            &small_fetches,
            Duration::from_secs(30),
            |_, _| {
                // Called first once the ends are noted, before any record is read.
                if !written_during {
                    written_during = true;
                    for late in ["late-0", "late-1"] {
                        publisher.send_raw(&topic, Some(small.as_bytes()), Some(&usage(late.into()))).unwrap();
                    }
                    publisher.flush().unwrap();
                }
            },
            |partition, record| read.push((partition, record.unwrap().usage_id)),
        )
        .unwrap();

        assert!(written_during);
        assert_eq!(trimmed, Vec::new());
        assert_eq!(read.len(), 1001, "{:?}", read.iter().filter(|(_, id)| id.starts_with("late")).collect::<Vec<_>>());
        assert!(read.iter().all(|(_, id)| id.starts_with("early-")));
        assert_eq!(read.iter().filter(|(partition, _)| *partition == 0).count(), 1);
    }
}
