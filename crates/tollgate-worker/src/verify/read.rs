//! Reading a deployment into a [`Snapshot`]: the changelog first, then the outputs, then the
//! inputs, each up to the end noted before it is read.
//!
//! The order makes a pipeline that is still running err on the safe side: whatever the
//! restored state reflects was published before it (outputs are acknowledged before the
//! changelog under at-least-once, in the same transaction under exactly-once), and whatever an
//! output (a dead letter) refers to was published before the output.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::kafka::{Reader, ReaderContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::Snapshot;
use crate::config::TopicKind;
use crate::config::WorkerConfig;
use crate::record::Record;
use crate::{Error, changelog, kafka};

/// A topic's partition.
type Place = (String, i32);

/// How often progress is logged while reading.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The shortest time without a record after which an unfinished read is given up.
const MIN_STALL: Duration = Duration::from_secs(30);

/// Reads everything [`super::check`] needs. `cancel` aborts the read.
pub fn read(config: &WorkerConfig, cancel: &Cancel) -> Result<Snapshot, Error> {
    let t = &config.topics;
    let consumer: Reader = kafka::reader(config, "verify").create_with_context(ReaderContext)?;
    let mut snapshot = Snapshot::default();
    for topic in [
        &t[TopicKind::CallLegs],
        &t[TopicKind::CreditCommands],
        &t[TopicKind::RatedUsage],
        &t[TopicKind::LegDecisions],
        &t[TopicKind::CreditEvents],
        &t[TopicKind::DeadLetter],
    ] {
        snapshot.partitions.insert(topic.clone(), partition_count(&consumer, topic, config)?);
    }
    let state_partitions = partition_count(&consumer, &t[TopicKind::State], config)?;
    snapshot.partitions.insert(t[TopicKind::State].clone(), state_partitions);
    let input_topics = [&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]];
    for partition in 0..state_partitions {
        let restored = changelog::restore_partition(config, partition, cancel)?;
        let states = restored.states.into_map();
        // How far the states reach: an input the progress record does not name has nothing
        // rated (a record names every input with a rated record), and so does every input of
        // a partition without state. States without a progress record come from a release
        // before it: their reach is unknown, and the partition is checked whole.
        if !restored.progress.next.is_empty() || states.is_empty() {
            for topic in input_topics {
                let next = restored.progress.next.get(topic.as_str()).copied().unwrap_or(0);
                snapshot.rated.insert((topic.clone(), partition), next);
            }
        }
        snapshot.states.insert(partition, states);
    }
    let outputs = [
        &t[TopicKind::RatedUsage],
        &t[TopicKind::LegDecisions],
        &t[TopicKind::CreditEvents],
        &t[TopicKind::DeadLetter],
    ];
    let inputs = [&t[TopicKind::CallLegs], &t[TopicKind::CreditCommands]];
    let mut ends = BTreeMap::new();
    for topic in outputs.into_iter().chain(inputs) {
        let count = snapshot.partitions.get(topic.as_str()).copied().unwrap_or_default();
        ends.extend(watermarks(&consumer, topic, count, config, &mut snapshot.warnings)?);
    }
    let mut by_topic = read_to(&consumer, &ends, config, cancel)?;
    let mut take = |topic: &str| by_topic.remove(topic).unwrap_or_default();
    snapshot.rated_usage = take(&t[TopicKind::RatedUsage]);
    snapshot.leg_decisions = take(&t[TopicKind::LegDecisions]);
    snapshot.credit_events = take(&t[TopicKind::CreditEvents]);
    snapshot.dead_letters = take(&t[TopicKind::DeadLetter]);
    snapshot.inputs = take(&t[TopicKind::CallLegs]);
    snapshot.inputs.extend(take(&t[TopicKind::CreditCommands]));
    // Where the changelog says how far rating stands, the checker counts what is not rated
    // yet; elsewhere the group's offsets say whether the workers are behind.
    let unknown: BTreeMap<Place, i64> =
        ends.into_iter().filter(|(place, _)| !snapshot.rated.contains_key(place)).collect();
    snapshot.warnings.extend(lag(config, &unknown));
    Ok(snapshot)
}

/// The partition count of `topic`; a missing topic is a topology error.
fn partition_count(consumer: &Reader, topic: &str, config: &WorkerConfig) -> Result<i32, Error> {
    let metadata = consumer.fetch_metadata(Some(topic), config.kafka_timeout())?;
    if let Some(code) = metadata.topics().first().and_then(|t| t.error()).map(RDKafkaErrorCode::from)
        && crate::access::Cause::of_code(code).is_some()
    {
        return Err(crate::access::AccessError::denied(config, &format!("describe topic {topic}"), code).into());
    }
    let count = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(Error::Topology(format!("topic {topic} does not exist")));
    }
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

/// The end (high watermark, or last stable offset under read_committed) of every partition
/// of `topic` that has records; warns when a partition's history was deleted.
fn watermarks(
    consumer: &Reader,
    topic: &str,
    partitions: i32,
    config: &WorkerConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<(Place, i64)>, Error> {
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, config.kafka_timeout())?;
        if low > 0 {
            warnings.push(format!(
                "{topic}[{partition}] starts at offset {low}: older records were deleted, so findings about them \
                 cannot be trusted"
            ));
        }
        if high > low {
            ends.push(((topic.to_owned(), partition), high));
        }
    }
    Ok(ends)
}

/// Reads every partition in `ends` from the beginning to its end, grouped by topic.
fn read_to(
    consumer: &Reader,
    ends: &BTreeMap<Place, i64>,
    config: &WorkerConfig,
    cancel: &Cancel,
) -> Result<HashMap<String, Vec<Record>>, Error> {
    let mut records: HashMap<String, Vec<Record>> = HashMap::new();
    if ends.is_empty() {
        return Ok(records);
    }
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total: i64 = ends.values().sum();
    tracing::info!(partitions = ends.len(), records = total, "verify: reading inputs and outputs to their ends");
    let mut left = ends.clone();
    let stall = (config.kafka_timeout() * 3).max(MIN_STALL);
    let (mut last_record, mut last_log) = (Instant::now(), Instant::now());
    while !left.is_empty() {
        if cancel.is_cancelled() {
            return Err(Error::ShutDown("verifying"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_record = Instant::now();
                let place = (message.topic().to_owned(), message.partition());
                let Some(&end) = left.get(&place) else { continue };
                if message.offset() < end {
                    records.entry(place.0.clone()).or_default().push(Record::from_message(&message));
                }
                if message.offset() + 1 >= end {
                    finish(consumer, &mut left, &place);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => finish_reached(consumer, &mut left),
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                finish_reached(consumer, &mut left);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "verify: consumer error, retrying"),
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            progress(&records, "verify: reading");
        }
        if !left.is_empty() && last_record.elapsed() >= stall {
            let (place, end) = left.iter().next().map(|(p, e)| (format!("{}[{}]", p.0, p.1), *e)).unwrap_or_default();
            return Err(Error::Stalled(format!(
                "no record for {} s while {} partitions were left, e.g. {place} (end {end})",
                stall.as_secs(),
                left.len()
            )));
        }
    }
    progress(&records, "verify: read");
    Ok(records)
}

/// Logs the records read so far, per topic.
fn progress(records: &HashMap<String, Vec<Record>>, what: &str) {
    let mut topics: Vec<(&String, usize)> = records.iter().map(|(t, r)| (t, r.len())).collect();
    topics.sort();
    for (topic, count) in topics {
        tracing::info!(topic = %topic, records = count, "{what}");
    }
}

/// Marks every partition whose position passed its end as read (transaction markers leave
/// offsets no message has, so the last message may be before the end).
fn finish_reached(consumer: &Reader, left: &mut BTreeMap<Place, i64>) {
    let Ok(positions) = consumer.position() else { return };
    let reached: Vec<Place> = positions
        .elements()
        .iter()
        .filter_map(|e| {
            let place = (e.topic().to_owned(), e.partition());
            let end = left.get(&place)?;
            e.offset().to_raw().filter(|pos| pos >= end).map(|_| place)
        })
        .collect();
    for place in reached {
        finish(consumer, left, &place);
    }
}

/// Stops reading a partition that is done.
fn finish(consumer: &Reader, left: &mut BTreeMap<Place, i64>, place: &Place) {
    left.remove(place);
    let mut done = TopicPartitionList::new();
    done.add_partition(&place.0, place.1);
    // Pausing only saves fetching what would be ignored anyway.
    let _ = consumer.pause(&done);
}

/// Warnings for input partitions whose changelog has no progress record (written by a release
/// before it) and that the group's committed offsets say are not rated up to their end: the
/// pipeline may still be working, and findings about those records may be transient. (Those
/// releases committed the group's offsets in the batch's own transaction.)
fn lag(config: &WorkerConfig, ends: &BTreeMap<Place, i64>) -> Vec<String> {
    let t = &config.topics;
    let mut inputs = TopicPartitionList::new();
    for (topic, partition) in
        ends.keys().filter(|(topic, _)| *topic == t[TopicKind::CallLegs] || *topic == t[TopicKind::CreditCommands])
    {
        inputs.add_partition(topic, *partition);
    }
    if inputs.count() == 0 {
        return Vec::new();
    }
    let committed = group_offsets(config).and_then(|c| Ok(c.committed_offsets(inputs, config.kafka_timeout())?));
    let committed = match committed {
        Ok(committed) => committed,
        Err(e) => return vec![format!("cannot read the committed offsets of group {}: {e}", config.group_id)],
    };
    let mut warnings = Vec::new();
    for element in committed.elements() {
        let place = (element.topic().to_owned(), element.partition());
        let Some(&end) = ends.get(&place) else { continue };
        let at = element.offset().to_raw().filter(|o| *o >= 0);
        if at.is_none_or(|at| at < end) {
            let at = at.map_or_else(|| "nothing".to_owned(), |o| format!("the records before offset {o}"));
            warnings.push(format!(
                "group {} has rated {at} of {}[{}], whose end is {end}: the workers may not have processed \
                 everything yet",
                config.group_id, place.0, place.1
            ));
        }
    }
    warnings
}

/// A client of the workers' group that only reads its committed offsets: it never
/// subscribes, so it does not join the group, and it commits nothing.
fn group_offsets(config: &WorkerConfig) -> Result<BaseConsumer, Error> {
    let mut client = kafka::base(config);
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    Ok(client.create()?)
}
