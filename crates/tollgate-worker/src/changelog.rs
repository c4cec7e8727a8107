//! The state changelog: a compacted topic co-partitioned with the inputs. Partition *p* holds
//! the state of the tenants of input partition *p*, as records of five kinds:
//!
//! | key | value | what |
//! |---|---|---|
//! | `t/<tenant>` | a `TenantStateRecord` (protobuf): the tenant's state without the kinds below | balance, lots, pool, thresholds, ... |
//! | `o/<len>/<tenant>/<leg>` | [`LegEntry`] JSON, or a tombstone when the leg closes | one leg in progress |
//! | `p/<len>/<tenant>/<leg>` | [`ParkedEntry`] JSON, or a tombstone when rated or dropped | one `ended` waiting for its `started` |
//! | `s/<len>/<tenant>/<id>` | a `WindowEntryRecord` (protobuf), or a tombstone when forgotten | one applied input id, when, and its fingerprint |
//! | `c/<len>/<tenant>/<leg>` | a `WindowEntryRecord` (protobuf), or a tombstone when forgotten | one recently closed leg, and when |
//! | `m/<partition>` | [`Manifest`] JSON, or a tombstone | at-least-once: the records of the batch after the committed offsets (see [`crate::batch`]) |
//!
//! Everything that grows with traffic (open legs, parked ends, the retention windows) is
//! written entry by entry as it changes (compaction keeps the latest per key and drops
//! tombstones), so the tenant's record stays small however busy the tenant is, and no record
//! comes near the broker's message size limit. `<len>` is the tenant id's length in bytes, so
//! no two (tenant, id) pairs share a key.
//!
//! Every batch's records are written in one Kafka transaction together with the batch's
//! input offsets, in both processing guarantees: a restore (which reads `read_committed`) sees
//! all of a batch or none of it, and a producer fenced by the partition's next owner can
//! write nothing more. Restoring a partition reads its changelog partition from the beginning
//! up to the high watermark seen when the restore started.
//!
//! A restored tenant with no leg in progress, no parked end and nothing remembered stays
//! dormant: the bytes of its record, decoded when it is first rated ([`crate::states`]).
//!
//! Earlier releases wrote the tenant's record as JSON. Such a record is still read (a JSON
//! value starts with `{`, which no record of the protobuf encoding does), kept dormant in the
//! protobuf encoding, and written in it the next time the tenant changes. The earliest
//! releases also kept open legs and parked ends inside the tenant's record;
//! [`Restored::rewrite`] names the tenants that have one, and the partition's owner rewrites
//! them in the current layout before it rates anything.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::kafka::{Reader, ReaderContext};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tollgate_core::event::CallLegEvent;
use tollgate_core::state::{Change, LegChanges, Recent};
use tollgate_core::{FastState, Id, OpenLeg, TenantState, Timestamp};

use crate::batch::Manifest;
use crate::config::TopicKind;
use crate::config::WorkerConfig;
use crate::states::{DormantBuilder, Live, States};
use crate::{Error, kafka, telemetry};

/// The value of a window record as earlier releases wrote it (JSON; still read).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WindowEntry {
    /// Tenant.
    pub tenant: String,
    /// Input id (`s/`) or leg id (`c/`).
    pub id: Id,
    /// Event time it was remembered at.
    pub at: Timestamp,
    /// Content fingerprint (`s/` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
}

/// The value of an open-leg record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LegEntry {
    /// Tenant.
    pub tenant: String,
    /// Leg id.
    pub leg: Id,
    /// The leg.
    pub open: OpenLeg,
}

/// The value of a parked-end record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ParkedEntry {
    /// Tenant.
    pub tenant: String,
    /// Leg id.
    pub leg: Id,
    /// The `ended` event waiting for its `started`.
    pub ended: CallLegEvent,
}

/// The key of a tenant's record.
pub fn tenant_key(tenant: &str) -> String {
    format!("t/{tenant}")
}

/// `<kind>/<tenant length>/<tenant>/<id>`. Built by hand: a batch writes one per applied id,
/// and `format!` cost about a twentieth of a worker's CPU.
fn entry_key(kind: char, tenant: &str, id: &str) -> String {
    let mut digits = itoa::Buffer::new();
    let len = digits.format(tenant.len());
    let mut key = String::with_capacity(4 + len.len() + tenant.len() + id.len());
    key.push(kind);
    key.push('/');
    key.push_str(len);
    key.push('/');
    key.push_str(tenant);
    key.push('/');
    key.push_str(id);
    key
}

/// What a tenant's journals recorded in one batch: the changes of its retention windows and
/// of its open legs (the parts of its state that grow with traffic, so are not copied into a
/// batch's snapshot, [`TenantState::snapshot`]).
#[derive(Debug, Default)]
pub struct Journal {
    /// Of the applied ids.
    pub seen: Vec<Change<u64>>,
    /// Of the closed legs.
    pub closed: Vec<Change<()>>,
    /// The open legs changed, each with what it was before.
    pub legs: LegChanges,
}

impl Journal {
    /// Drains the state's journals.
    pub fn take(state: &mut TenantState) -> Self {
        Journal {
            seen: state.seen.take_changes(),
            closed: state.closed_legs.take_changes(),
            legs: state.open_legs.take_changes(),
        }
    }

    /// Undoes them on `state`.
    pub fn revert(self, state: &mut TenantState) {
        state.seen.revert(&self.seen);
        state.closed_legs.revert(&self.closed);
        state.open_legs.revert(self.legs);
    }
}

/// A changelog record: key and value (`None` = tombstone).
pub type ChangelogRecord = (String, Option<Vec<u8>>);

/// The changelog records that bring the changelog from `before` (the tenant's snapshot when
/// the batch started; `None` for a tenant new in the batch, or one to write in full) up to
/// `state`: its window changes, the open legs that changed (from the journal; every open leg
/// when `before` is `None`) and the parked ends that changed, then its record.
pub fn records(
    tenant: &str,
    state: &TenantState,
    before: Option<&TenantState>,
    changes: &Journal,
) -> Vec<ChangelogRecord> {
    let mut out = Vec::with_capacity(changes.seen.len() + changes.closed.len() + 3);
    for change in &changes.seen {
        out.push(window_record('s', tenant, change, |v| Some(*v)));
    }
    for change in &changes.closed {
        out.push(window_record('c', tenant, change, |()| None));
    }
    let empty = BTreeMap::new();
    let parked_before = before.map_or(&empty, |b| &b.parked_ends);
    let leg_record = |leg: &Id, open: &OpenLeg| {
        let entry = LegEntry { tenant: tenant.to_owned(), leg: leg.clone(), open: open.clone() };
        (entry_key('o', tenant, leg), Some(to_json(&entry)))
    };
    match before {
        None => out.extend(state.open_legs.iter().map(|(leg, open)| leg_record(leg, open))),
        Some(_) => {
            let mut changed: Vec<(&Id, &Option<OpenLeg>)> = changes.legs.iter().collect();
            changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut closed = Vec::new();
            for (leg, was) in changed {
                match (state.open_legs.get(leg), was) {
                    (Some(open), was) if was.as_ref() != Some(open) => out.push(leg_record(leg, open)),
                    (None, Some(_)) => closed.push((entry_key('o', tenant, leg), None)),
                    _ => {}
                }
            }
            out.extend(closed);
        }
    }
    for (leg, ended) in &state.parked_ends {
        if parked_before.get(leg) != Some(ended) {
            let entry = ParkedEntry { tenant: tenant.to_owned(), leg: leg.clone(), ended: ended.clone() };
            out.push((entry_key('p', tenant, leg), Some(to_json(&entry))));
        }
    }
    for leg in parked_before.keys() {
        if !state.parked_ends.contains_key(leg) {
            out.push((entry_key('p', tenant, leg), None));
        }
    }
    out.push((tenant_key(tenant), Some(tollgate_proto::state::tenant_record(state))));
    out
}

/// Every record of a tenant's state, for a tenant written in full (layout migration).
pub fn full_records(tenant: &str, state: &TenantState) -> Vec<ChangelogRecord> {
    let changes = Journal {
        legs: LegChanges::default(),
        seen: state.seen.iter().map(|(id, v, at)| Change::Added { id: id.clone(), value: *v, at }).collect(),
        closed: state.closed_legs.iter().map(|(id, (), at)| Change::Added { id: id.clone(), value: (), at }).collect(),
    };
    records(tenant, state, None, &changes)
}

/// Serializing plain data to a `Vec` cannot fail.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn window_record<V>(
    kind: char,
    tenant: &str,
    change: &Change<V>,
    fingerprint: impl Fn(&V) -> Option<u64>,
) -> ChangelogRecord {
    match change {
        Change::Added { id, value, at } => {
            let mut record = Vec::with_capacity(24);
            tollgate_proto::state::encode_window(*at, fingerprint(value), &mut record);
            (entry_key(kind, tenant, id), Some(record))
        }
        Change::Removed { id, .. } => (entry_key(kind, tenant, id), None),
    }
}

/// A tenant's restored window entries: applied ids (fingerprint and time) and closed legs.
#[derive(Debug, Default)]
struct Windows {
    seen: HashMap<Id, (u64, Timestamp), FastState>,
    closed: HashMap<Id, Timestamp, FastState>,
}

/// Folds changelog records (in offset order) into tenant states.
#[derive(Debug, Default)]
pub struct Restorer {
    /// Tenants kept live from the start: a record of the earliest layout (legs inside), or
    /// one that did not fit the dormant arena.
    live: Live,
    dormant: DormantBuilder,
    // The entries' maps hash with foldhash: SipHash was 8 % of a large restore.
    /// By tenant: its window entries, read straight into per-tenant tables (a table of a
    /// million record keys was most of a large restore).
    windows: HashMap<String, Windows, FastState>,
    legs: HashMap<String, LegEntry, FastState>,
    parked: HashMap<String, ParkedEntry, FastState>,
    manifest: Option<Manifest>,
    /// Keys whose latest record cannot be read, and why. A later record of the same key
    /// (a repair, or a tombstone) supersedes an unreadable one, as compaction would.
    unreadable: BTreeMap<String, String>,
    /// Records read.
    pub records: u64,
}

/// A restored partition.
#[derive(Debug, Default)]
pub struct Restored {
    /// The tenants' states, with change tracking on; most dormant.
    pub states: States,
    /// Tenants whose latest record is in the earlier layout (open legs and parked ends inside
    /// it): to be rewritten in full before anything else is written for them.
    pub rewrite: Vec<String>,
    /// The batch to rate first (at-least-once), if the last owner had decided it.
    pub manifest: Option<Manifest>,
}

impl Restorer {
    /// Applies one record. A record that cannot be read is remembered, not fatal yet: only
    /// the latest record of a key counts, so a later one may replace it ([`Restorer::finish`]
    /// fails if none did).
    pub fn apply(&mut self, key: &[u8], payload: Option<&[u8]>) {
        self.apply_checked(key, payload, false);
    }

    /// [`Restorer::apply`], for a record whose value is known to decode when `decodes`
    /// ([`decodes_as_tenant_record`], run by the reading thread while this one applies).
    fn apply_checked(&mut self, key: &[u8], payload: Option<&[u8]>, decodes: bool) {
        self.records += 1;
        let key = std::str::from_utf8(key).map_or_else(|_| String::from_utf8_lossy(key), std::borrow::Cow::Borrowed);
        match self.read(&key, payload, decodes) {
            Ok(()) => {
                if !self.unreadable.is_empty() {
                    self.unreadable.remove(key.as_ref());
                }
            }
            Err(message) => {
                // Whatever the key held before is not its latest value either.
                self.forget(&key);
                self.unreadable.insert(key.into_owned(), message);
            }
        }
    }

    fn forget(&mut self, key: &str) {
        match key.split_once('/') {
            Some(("t", tenant)) => {
                self.live.remove(tenant);
                self.dormant.remove(tenant);
            }
            Some(("s" | "c", _)) => self.remove_window_entry(key),
            Some(("o", _)) => {
                self.legs.remove(key);
            }
            Some(("p", _)) => {
                self.parked.remove(key);
            }
            Some(("m", _)) => self.manifest = None,
            _ => {}
        }
    }

    fn remove_window_entry(&mut self, key: &str) {
        if let Some((kind, tenant, id)) = entry_key_parts(key)
            && let Some(windows) = self.windows.get_mut(tenant)
        {
            if kind == "s" {
                windows.seen.remove(id);
            } else {
                windows.closed.remove(id);
            }
        }
    }

    /// Reads one record into the restorer; `decodes`: it is a tenant record known to decode.
    fn read(&mut self, key: &str, payload: Option<&[u8]>, decodes: bool) -> Result<(), String> {
        let unreadable = |e: serde_json::Error| e.to_string();
        match key.split_once('/').map(|(kind, _)| kind) {
            Some("t") => self.tenant(&key[2..], payload, decodes)?,
            Some("s" | "c") => {
                let Some(bytes) = payload else {
                    self.remove_window_entry(key);
                    return Ok(());
                };
                let Some((kind, tenant, id)) = entry_key_parts(key) else {
                    return Err("not a window entry's key".into());
                };
                let (at, fingerprint) = if bytes.first() == Some(&b'{') {
                    let earlier: WindowEntry = serde_json::from_slice(bytes).map_err(unreadable)?;
                    (earlier.at, earlier.fingerprint)
                } else {
                    tollgate_proto::state::decode_window(bytes).map_err(|e| e.to_string())?
                };
                if !self.windows.contains_key(tenant) {
                    self.windows.insert(tenant.to_owned(), Windows::default());
                }
                let windows = self.windows.get_mut(tenant).expect("present: inserted above when missing");
                if kind == "s" {
                    windows.seen.insert(id.into(), (fingerprint.unwrap_or_default(), at));
                } else {
                    windows.closed.insert(id.into(), at);
                }
            }
            Some("o") => upsert(&mut self.legs, key, payload, unreadable)?,
            Some("p") => upsert(&mut self.parked, key, payload, unreadable)?,
            Some("m") => {
                self.manifest = payload.map(serde_json::from_slice).transpose().map_err(unreadable)?;
            }
            _ => return Err("not a tollgate changelog key".into()),
        }
        Ok(())
    }

    /// A tenant's record: kept dormant once it decodes (an earlier release's JSON record
    /// re-encoded), or live when in the earliest layout.
    fn tenant(&mut self, tenant: &str, payload: Option<&[u8]>, decodes: bool) -> Result<(), String> {
        let Some(bytes) = payload else {
            self.live.remove(tenant);
            self.dormant.remove(tenant);
            return Ok(());
        };
        let earlier;
        let record = if bytes.first() == Some(&b'{') {
            let state: TenantState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            if !state.open_legs.is_empty() || !state.parked_ends.is_empty() {
                self.dormant.remove(tenant);
                self.live.insert(tenant.to_owned(), state);
                return Ok(());
            }
            earlier = tollgate_proto::state::tenant_record(&state);
            &earlier
        } else {
            // Read now (unless the reading thread did), so that a record that does not
            // decode fails the restore, not the first batch of its tenant.
            if !decodes {
                tollgate_proto::state::decode_tenant(bytes).map_err(|e| e.to_string())?;
            }
            bytes
        };
        if self.dormant.insert(tenant, record) {
            self.live.remove(tenant);
        } else {
            self.dormant.remove(tenant);
            self.live
                .insert(tenant.to_owned(), tollgate_proto::state::decode_tenant(record).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    /// The restored states, with their entries put back and change tracking on; fails if the
    /// latest record of any key cannot be read (restoring without it would rate on a wrong
    /// balance).
    pub fn finish(self) -> Result<Restored, Error> {
        if let Some((key, message)) = self.unreadable.first_key_value() {
            let more = self.unreadable.len() - 1;
            let message =
                if more > 0 { format!("{message} (and {more} more unreadable keys)") } else { message.clone() };
            return Err(Error::Changelog { key: key.clone(), message });
        }
        let (mut live, mut dormant) = (self.live, self.dormant);
        let rewrite = live
            .iter()
            .filter(|(_, s)| !s.open_legs.is_empty() || !s.parked_ends.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        // A tenant with entries is woken: only one with none stays dormant.
        for entry in self.legs.into_values() {
            match woken(&mut live, &mut dormant, &entry.tenant) {
                Some(state) => {
                    state.open_legs.insert(entry.leg, entry.open);
                }
                None => tracing::warn!(tenant = entry.tenant, leg = %entry.leg, "open leg of a tenant without state"),
            }
        }
        for entry in self.parked.into_values() {
            if let Some(state) = woken(&mut live, &mut dormant, &entry.tenant) {
                state.parked_ends.insert(entry.leg, entry.ended);
            }
        }
        for (tenant, windows) in self.windows {
            if windows.seen.is_empty() && windows.closed.is_empty() {
                continue;
            }
            if let Some(state) = woken(&mut live, &mut dormant, &tenant) {
                state.seen = Recent::from_entries(windows.seen.into_iter().map(|(id, (v, at))| (id, v, at)));
                state.closed_legs = Recent::from_entries(windows.closed.into_iter().map(|(id, at)| (id, (), at)));
            }
        }
        for state in live.values_mut() {
            state.track_changes();
        }
        Ok(Restored { states: States::new(live, dormant.finish()), rewrite, manifest: self.manifest })
    }
}

/// The kind, tenant and id of an entry's key (`<kind>/<len>/<tenant>/<id>`).
fn entry_key_parts(key: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = key.split_once('/')?;
    let (len, rest) = rest.split_once('/')?;
    let len: usize = len.parse().ok()?;
    let tenant = rest.get(..len)?;
    let id = rest.get(len..)?.strip_prefix('/')?;
    Some((kind, tenant, id))
}

/// The live state of `tenant`, woken if it was dormant.
fn woken<'a>(live: &'a mut Live, dormant: &mut DormantBuilder, tenant: &str) -> Option<&'a mut TenantState> {
    if !live.contains_key(tenant) {
        let state = dormant.take(tenant)?;
        live.insert(tenant.to_owned(), state);
    }
    live.get_mut(tenant)
}

/// Sets or (on a tombstone) removes `key`'s entry.
fn upsert<T: serde::de::DeserializeOwned>(
    map: &mut HashMap<String, T, FastState>,
    key: &str,
    payload: Option<&[u8]>,
    unreadable: impl Fn(serde_json::Error) -> String,
) -> Result<(), String> {
    match payload {
        Some(bytes) => {
            map.insert(key.to_owned(), serde_json::from_slice(bytes).map_err(unreadable)?);
        }
        None => {
            map.remove(key);
        }
    }
    Ok(())
}

/// Reads changelog partition `partition` into a map of tenant states; `cancel` aborts it.
pub fn restore(config: &WorkerConfig, partition: i32, cancel: &Cancel) -> Result<HashMap<String, TenantState>, Error> {
    restore_partition(config, partition, cancel).map(|restored| restored.states.into_map())
}

/// Reads changelog partition `partition` (committed records only) up to its high watermark;
/// `cancel` aborts it.
///
/// Two threads: this one polls, packs the records into chunks and checks that tenant records
/// decode; a second one applies them in order. Applying is CPU-bound (about 2 µs a record)
/// and so is polling (about 1 µs), so side by side they take about the time of applying alone.
pub fn restore_partition(config: &WorkerConfig, partition: i32, cancel: &Cancel) -> Result<Restored, Error> {
    let started = Instant::now();
    let topic = &config.topics[TopicKind::State];
    let consumer: Reader = kafka::reader(config, "restore").create_with_context(ReaderContext)?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, config.kafka_timeout())?;
    let restorer = std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let applier = scope.spawn(move || {
            let mut restorer = Restorer::default();
            for chunk in received {
                chunk.apply_to(&mut restorer);
            }
            restorer
        });
        let read = read_changelog(&consumer, topic, partition, high, cancel, |chunk| chunks.send(chunk).is_ok());
        drop(chunks);
        let restorer = applier.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read.map(|()| restorer)
    })?;
    let records = restorer.records;
    let restored = restorer.finish()?;
    telemetry::restored(partition, restored.states.len(), records, started.elapsed());
    Ok(restored)
}

/// Records per chunk handed to the applying thread.
const CHUNK_RECORDS: usize = 4096;
/// Chunks read ahead of the applying thread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Changelog records packed for the thread that applies them: keys and values in one buffer.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    /// Per record: where its key starts, where it ends, where its value ends (`None`: a
    /// tombstone; a value starts where its key ends), and whether it is a tenant record
    /// known to decode.
    records: Vec<(usize, usize, Option<usize>, bool)>,
}

impl Chunk {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        let value_end = value.map(|value| {
            self.bytes.extend_from_slice(value);
            self.bytes.len()
        });
        let decodes = value.is_some_and(|value| decodes_as_tenant_record(key, value));
        self.records.push((start, key_end, value_end, decodes));
    }

    fn apply_to(&self, restorer: &mut Restorer) {
        for &(start, key_end, value_end, decodes) in &self.records {
            let value = value_end.map(|end| &self.bytes[key_end..end]);
            restorer.apply_checked(&self.bytes[start..key_end], value, decodes);
        }
    }
}

/// Whether the record is a tenant's protobuf record that decodes: checked by the reading
/// thread, which waits for the applying one most of the time (the check was 40 % of
/// applying a tenant's record).
fn decodes_as_tenant_record(key: &[u8], value: &[u8]) -> bool {
    key.starts_with(b"t/") && value.first() != Some(&b'{') && tollgate_proto::state::decode_tenant(value).is_ok()
}

/// Reads the partition from the beginning up to `high`, handing the records to `apply` a
/// chunk at a time (`false` from it: the applier is gone, stop reading).
fn read_changelog(
    consumer: &Reader,
    topic: &str,
    partition: i32,
    high: i64,
    cancel: &Cancel,
    mut apply: impl FnMut(Chunk) -> bool,
) -> Result<(), Error> {
    if high <= 0 {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut chunk = Chunk::default();
    loop {
        if cancel.is_cancelled() {
            return Err(Error::ShutDown("restoring state"));
        }
        let done = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                chunk.push(message.key().unwrap_or_default(), message.payload());
                message.offset() + 1 >= high
            }
            Some(Err(KafkaError::PartitionEOF(_))) => reached(consumer, topic, partition, high),
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                reached(consumer, topic, partition, high)
            }
            Some(Err(e)) => {
                tracing::warn!(partition, error = %e, "changelog restore: consumer error, retrying");
                false
            }
            None => reached(consumer, topic, partition, high),
        };
        if done || chunk.records.len() >= CHUNK_RECORDS {
            let full = std::mem::take(&mut chunk);
            if !full.records.is_empty() && !apply(full) {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// Whether the reader's position passed the target (transaction markers leave offsets no
/// message has).
fn reached(consumer: &Reader, topic: &str, partition: i32, high: i64) -> bool {
    consumer
        .position()
        .ok()
        .and_then(|p| p.find_partition(topic, partition).and_then(|e| e.offset().to_raw()))
        .is_some_and(|pos| pos >= high)
}

#[cfg(test)]
mod tests {
    use tollgate_core::event::{LegBody, LegDuration, LegEnded};
    use tollgate_core::{DisconnectCause, Money};

    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }

    fn open_leg(leg: &str, elapsed_seconds: u32) -> OpenLeg {
        OpenLeg { elapsed_seconds, ..tollgate_core::testing::open_leg(&format!("call-{leg}"), ts(10)) }
    }

    fn ended(leg: &str) -> CallLegEvent {
        CallLegEvent {
            event_id: format!("{leg}-e").into(),
            tenant_id: tollgate_core::TenantId::new("acme").unwrap(),
            conference_id: "conf".into(),
            call_id: format!("call-{leg}").into(),
            leg_id: leg.into(),
            organizer_id: "alice".into(),
            occurred_at: ts(100),
            body: LegBody::Ended(LegEnded {
                duration: LegDuration::ConnectedSeconds(90),
                cause: DisconnectCause::Normal,
            }),
        }
    }

    fn restore(records: &[ChangelogRecord]) -> Restored {
        let mut restorer = Restorer::default();
        for (key, value) in records {
            restorer.apply(key.as_bytes(), value.as_deref());
        }
        restorer.finish().expect("every key readable")
    }

    /// Only a key's latest record counts: an unreadable record fails the restore (naming the
    /// key) unless a later record of the key, or a tombstone, replaces it.
    #[test]
    fn an_unreadable_record_fails_the_restore_unless_superseded() {
        let state = TenantState::default();
        let good = full_records("acme", &state);
        let garbage = (String::from("t/acme"), Some(b"{not json".to_vec()));
        let mut broken = good.clone();
        broken.push(garbage.clone());
        let mut restorer = Restorer::default();
        for (key, value) in &broken {
            restorer.apply(key.as_bytes(), value.as_deref());
        }
        match restorer.finish() {
            Err(Error::Changelog { key, message }) => {
                assert_eq!(key, "t/acme");
                assert!(message.starts_with("key must be a string"), "{message}");
            }
            other => panic!("restored over an unreadable record: {other:?}"),
        }
        let mut repaired = broken.clone();
        repaired.extend(good.iter().cloned());
        assert_eq!(restore(&repaired).states.into_map().keys().collect::<Vec<_>>(), vec!["acme"]);
        let mut deleted = broken;
        deleted.push((String::from("t/acme"), None));
        assert!(restore(&deleted).states.is_empty());
    }

    /// A tenant with thousands of legs in progress: each is its own record, the tenant's
    /// record stays small, and only what changed is written again.
    #[test]
    fn open_legs_and_parked_ends_are_records_of_their_own() {
        let mut state = TenantState::default();
        for i in 0..3000 {
            state.open_legs.insert(format!("leg-{i:04}").into(), open_leg(&format!("leg-{i:04}"), 0));
        }
        state.parked_ends.insert("late".into(), ended("late"));
        let first = records("acme", &state, None, &Journal::default());
        assert_eq!(first.len(), 3002);
        let (key, tenant) = first.last().unwrap();
        assert_eq!(key, "t/acme");
        let tenant_bytes = tenant.as_ref().unwrap().len();
        assert!(tenant_bytes < 1024, "tenant record is {tenant_bytes} bytes");
        assert!(first.iter().all(|(_, v)| v.as_ref().is_some_and(|v| v.len() < 2048)));

        // One leg progresses, one ends, one starts, the parked end is rated.
        state.track_changes();
        let before = state.snapshot();
        state.open_legs.insert("leg-0001".into(), open_leg("leg-0001", 60));
        state.open_legs.remove("leg-0002");
        state.open_legs.insert("leg-new".into(), open_leg("leg-new", 0));
        // Touched and put back as it was: nothing to write.
        let same = state.open_legs.remove("leg-0003").unwrap();
        state.open_legs.insert("leg-0003".into(), same);
        state.parked_ends.remove("late");
        let journal = Journal::take(&mut state);
        let second = records("acme", &state, Some(&before), &journal);
        let keys: Vec<(&str, bool)> = second.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(
            keys,
            vec![
                ("o/4/acme/leg-0001", true),
                ("o/4/acme/leg-new", true),
                ("o/4/acme/leg-0002", false),
                ("p/4/acme/late", false),
                ("t/acme", true),
            ]
        );

        let restored = restore(&[first, second].concat());
        assert!(restored.rewrite.is_empty());
        let states = restored.states.into_map();
        let back = &states["acme"];
        assert_eq!(back.open_legs.len(), 3000);
        assert_eq!(back.open_legs.get("leg-0001").map(|l| l.elapsed_seconds), Some(60));
        assert!(!back.open_legs.contains_key("leg-0002") && back.open_legs.contains_key("leg-new"));
        assert!(back.parked_ends.is_empty());
        assert_eq!(back.open_legs, state.open_legs);
    }

    /// A JSON tenant record of an earlier release is read and kept as the record this
    /// release writes for the same state; a tenant with remembered ids is woken, one without
    /// stays dormant, and both read back to the state that was written.
    #[test]
    fn keeps_idle_tenants_dormant_and_reads_json_records_of_earlier_releases() {
        let mut idle = TenantState::default();
        idle.ledger.credit("lot-1".into(), Money::new("12.50".parse().unwrap()), ts(10));
        idle.credit_sequence = 3;
        idle.watermark = ts(20);
        let mut busy = idle.clone();
        busy.seen.insert("leg-1-e", 42, ts(15));
        let mut records = vec![(tenant_key("acme"), Some(serde_json::to_vec(&idle).unwrap()))];
        records.extend(full_records("globex", &busy));
        // A window entry of an earlier release: JSON, with the tenant and the id in it too.
        let earlier = WindowEntry { tenant: "globex".into(), id: "old-e".into(), at: ts(12), fingerprint: Some(7) };
        records.push((entry_key('s', "globex", "old-e"), Some(serde_json::to_vec(&earlier).unwrap())));
        let mut expected = idle.clone();
        expected.seen.insert("old-e", 7, ts(12));
        expected.seen.insert("leg-1-e", 42, ts(15));

        let restored = restore(&records);
        assert!(restored.rewrite.is_empty());
        let dormant = restored.states.dormant();
        assert_eq!(dormant.record("acme"), Some(tollgate_proto::state::tenant_record(&idle).as_slice()));
        assert!(dormant.record("globex").is_none(), "a tenant with remembered ids is woken");
        assert_eq!(restored.states.live().keys().collect::<Vec<_>>(), ["globex"]);
        let states = restored.states.into_map();
        assert_eq!(states["acme"], idle);
        assert_eq!(states["acme"].ledger.lots().next().map(|l| l.remaining.to_string()), Some("12.50".into()));
        assert_eq!(states["globex"], expected);
        assert_eq!(states["globex"].seen.get("old-e"), Some(&7));
    }

    /// A chunk is applied record by record, in order; a tenant record the reading thread
    /// found unreadable is read again by the applier and fails the restore, naming its key.
    #[test]
    fn a_chunk_applies_in_order_and_an_unchecked_record_is_read_again() {
        let mut chunk = Chunk::default();
        for (key, value) in full_records("acme", &TenantState::default()) {
            chunk.push(key.as_bytes(), value.as_deref());
        }
        chunk.push(b"t/globex", Some(b"\x0a\xff"));
        assert_eq!(chunk.records.iter().map(|r| r.3).collect::<Vec<_>>(), [true, false]);
        let mut restorer = Restorer::default();
        chunk.apply_to(&mut restorer);
        match restorer.finish() {
            Err(Error::Changelog { key, .. }) => assert_eq!(key, "t/globex"),
            other => panic!("restored over an unreadable record: {other:?}"),
        }
    }

    /// A window entry's tombstone forgets it; the entries left keep their values.
    #[test]
    fn a_window_entry_is_forgotten_by_its_tombstone() {
        let mut state = TenantState::default();
        state.seen.insert("e-1", 1, ts(10));
        state.seen.insert("e-2", 2, ts(11));
        state.closed_legs.insert("leg-1", (), ts(12));
        let mut records = full_records("acme", &state);
        records.push((entry_key('s', "acme", "e-1"), None));
        records.push((entry_key('c', "acme", "leg-1"), None));
        let states = restore(&records).states.into_map();
        let seen: Vec<(String, u64)> = states["acme"].seen.iter().map(|(id, v, _)| (id.to_string(), *v)).collect();
        assert_eq!(seen, [("e-2".to_owned(), 2)]);
        assert!(states["acme"].closed_legs.is_empty());
    }

    /// What the restore puts back into a woken tenant is not a change: a leg restored open and
    /// closed by the first batch gets its tombstone (a restored leg journaled as new had none,
    /// and came back open after the next restore).
    #[test]
    fn a_leg_restored_open_and_then_closed_is_tombstoned() {
        let mut state = TenantState::default();
        state.open_legs.insert("leg-1".into(), open_leg("leg-1", 30));
        let restored = restore(&full_records("acme", &state));
        let mut states = restored.states;
        let acme = states.get_mut("acme").unwrap();
        let before = acme.snapshot();
        acme.open_legs.remove("leg-1");
        let journal = Journal::take(acme);
        let written = records("acme", acme, Some(&before), &journal);
        let keys: Vec<(&str, bool)> = written.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(keys, [("o/4/acme/leg-1", false), ("t/acme", true)]);
        assert!(
            restore(&[full_records("acme", &state), written].concat()).states.into_map()["acme"].open_legs.is_empty()
        );
    }

    /// A tenant record written by an earlier release (legs inside it) is read, and named for
    /// a rewrite in the new layout; after the rewrite the legs come from their own records.
    #[test]
    fn reads_the_earlier_layout_and_asks_for_a_rewrite() {
        let mut state = TenantState::default();
        state.open_legs.insert("leg-1".into(), open_leg("leg-1", 30));
        state.parked_ends.insert("late".into(), ended("late"));
        let mut legacy = serde_json::to_value(&state).unwrap();
        legacy["open_legs"] = serde_json::to_value(&state.open_legs).unwrap();
        legacy["parked_ends"] = serde_json::to_value(&state.parked_ends).unwrap();
        let legacy_record = (tenant_key("acme"), Some(serde_json::to_vec(&legacy).unwrap()));

        let restored = restore(std::slice::from_ref(&legacy_record));
        assert_eq!(restored.rewrite, vec!["acme".to_owned()]);
        let states = restored.states.into_map();
        let migrated = &states["acme"];
        assert_eq!((migrated.open_legs.len(), migrated.parked_ends.len()), (1, 1));

        let mut all = vec![legacy_record];
        all.extend(full_records("acme", migrated));
        let restored = restore(&all);
        assert!(restored.rewrite.is_empty());
        let states = restored.states.into_map();
        assert_eq!(states["acme"].open_legs, state.open_legs);
        assert_eq!(states["acme"].parked_ends, state.parked_ends);
    }
}
