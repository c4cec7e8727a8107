//! The state changelog: a compacted topic co-partitioned with the inputs. Partition *p* holds
//! the state of the tenants of input partition *p*, as records of three kinds:
//!
//! | key | value | what |
//! |---|---|---|
//! | `t/<tenant>` | the tenant's `TenantState` as JSON, without its retention windows | balance, lots, pool, open legs, ... |
//! | `s/<len>/<tenant>/<id>` | [`WindowEntry`] JSON, or a tombstone when forgotten | one applied input id and its fingerprint |
//! | `c/<len>/<tenant>/<leg>` | [`WindowEntry`] JSON, or a tombstone when forgotten | one recently closed leg |
//!
//! The windows grow with traffic, so they are written entry by entry as they change
//! (compaction keeps the latest per key and drops tombstones) instead of inside the tenant's
//! record, which stays small however busy the tenant is. `<len>` is the tenant id's length in
//! bytes, so no two (tenant, id) pairs share a key.
//!
//! Restoring a partition reads its changelog partition from the beginning up to the high
//! watermark seen when the restore started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tollgate_core::state::{Change, Recent};
use tollgate_core::{TenantState, Timestamp};

use crate::config::WorkerConfig;
use crate::{Error, kafka, telemetry};

/// The value of a window record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WindowEntry {
    /// Tenant.
    pub tenant: String,
    /// Input id (`s/`) or leg id (`c/`).
    pub id: String,
    /// Event time it was remembered at.
    pub at: Timestamp,
    /// Content fingerprint (`s/` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
}

/// The key of a tenant's record.
pub fn tenant_key(tenant: &str) -> String {
    format!("t/{tenant}")
}

fn window_key(kind: char, tenant: &str, id: &str) -> String {
    format!("{kind}/{}/{tenant}/{id}", tenant.len())
}

/// The changes of a tenant's retention windows in one batch.
#[derive(Debug, Default)]
pub struct WindowChanges {
    /// Of the applied ids.
    pub seen: Vec<Change<u64>>,
    /// Of the closed legs.
    pub closed: Vec<Change<()>>,
}

impl WindowChanges {
    /// Drains the state's journals.
    pub fn take(state: &mut TenantState) -> Self {
        WindowChanges { seen: state.seen.take_changes(), closed: state.closed_legs.take_changes() }
    }

    /// Undoes them on `state`.
    pub fn revert(&self, state: &mut TenantState) {
        state.seen.revert(&self.seen);
        state.closed_legs.revert(&self.closed);
    }
}

/// The changelog records (key, value; `None` = tombstone) that bring the changelog up to
/// `state`: its window `changes`, then its record.
pub fn records(tenant: &str, state: &TenantState, changes: &WindowChanges) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::with_capacity(changes.seen.len() + changes.closed.len() + 1);
    for change in &changes.seen {
        out.push(window_record('s', tenant, change, |v| Some(*v)));
    }
    for change in &changes.closed {
        out.push(window_record('c', tenant, change, |()| None));
    }
    // Serializing plain data to a Vec cannot fail.
    out.push((tenant_key(tenant), Some(serde_json::to_vec(state).unwrap_or_default())));
    out
}

fn window_record<V>(
    kind: char,
    tenant: &str,
    change: &Change<V>,
    fingerprint: impl Fn(&V) -> Option<u64>,
) -> (String, Option<Vec<u8>>) {
    match change {
        Change::Added { id, value, at } => {
            let entry =
                WindowEntry { tenant: tenant.to_owned(), id: id.to_string(), at: *at, fingerprint: fingerprint(value) };
            (window_key(kind, tenant, id), Some(serde_json::to_vec(&entry).unwrap_or_default()))
        }
        Change::Removed { id, .. } => (window_key(kind, tenant, id), None),
    }
}

/// Folds changelog records (in offset order) into tenant states.
#[derive(Debug, Default)]
pub struct Restorer {
    tenants: HashMap<String, TenantState>,
    windows: HashMap<String, WindowEntry>,
    /// Records read.
    pub records: u64,
}

impl Restorer {
    /// Applies one record.
    pub fn apply(&mut self, key: &[u8], payload: Option<&[u8]>) -> Result<(), Error> {
        self.records += 1;
        let key = String::from_utf8_lossy(key).into_owned();
        let unreadable = |e: serde_json::Error| Error::Changelog { key: key.clone(), message: e.to_string() };
        if let Some(tenant) = key.strip_prefix("t/") {
            match payload {
                Some(bytes) => {
                    let state: TenantState = serde_json::from_slice(bytes).map_err(unreadable)?;
                    self.tenants.insert(tenant.to_owned(), state);
                }
                None => {
                    self.tenants.remove(tenant);
                }
            }
        } else if key.starts_with("s/") || key.starts_with("c/") {
            match payload {
                Some(bytes) => {
                    let entry: WindowEntry = serde_json::from_slice(bytes).map_err(unreadable)?;
                    self.windows.insert(key, entry);
                }
                None => {
                    self.windows.remove(&key);
                }
            }
        } else {
            return Err(Error::Changelog { key, message: "not a tollgate changelog key".into() });
        }
        Ok(())
    }

    /// The restored states, with their windows rebuilt and change tracking on.
    pub fn finish(self) -> HashMap<String, TenantState> {
        let mut tenants = self.tenants;
        let mut seen: HashMap<String, Vec<(Arc<str>, u64, Timestamp)>> = HashMap::new();
        let mut closed: HashMap<String, Vec<(Arc<str>, (), Timestamp)>> = HashMap::new();
        for (key, entry) in self.windows {
            let id: Arc<str> = Arc::from(entry.id.as_str());
            if key.starts_with("s/") {
                seen.entry(entry.tenant).or_default().push((id, entry.fingerprint.unwrap_or_default(), entry.at));
            } else {
                closed.entry(entry.tenant).or_default().push((id, (), entry.at));
            }
        }
        for (tenant, state) in &mut tenants {
            state.seen = Recent::from_entries(seen.remove(tenant).unwrap_or_default());
            state.closed_legs = Recent::from_entries(closed.remove(tenant).unwrap_or_default());
            state.track_changes();
        }
        tenants
    }
}

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
    let mut restorer = Restorer::default();
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
                    restorer.apply(message.key().unwrap_or_default(), message.payload())?;
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
    let records = restorer.records;
    let states = restorer.finish();
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
