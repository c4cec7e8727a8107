//! The state changelog: a compacted topic co-partitioned with the inputs. Partition *p* holds
//! the state of the tenants of input partition *p*, as records of six kinds:
//!
//! | key | value | what |
//! |---|---|---|
//! | `t/<tenant>` | a `TenantStateRecord` (protobuf): the tenant's state without the kinds below | balance, lots, pool, thresholds, ... |
//! | `o/<len>/<tenant>/<leg>` | [`LegEntry`] JSON, or a tombstone when the leg closes | one leg in progress |
//! | `p/<len>/<tenant>/<leg>` | [`ParkedEntry`] JSON, or a tombstone when rated or dropped | one `ended` waiting for its `started` |
//! | `w/<len>/<tenant>/<tag>` | a `WindowSegmentRecord` (protobuf), or a tombstone once all its entries are past the tenant's horizon | the applied input ids (with time and fingerprint) and the closed legs (with time) one batch added: a window segment |
//! | `m/<partition>` | [`Manifest`] JSON, or a tombstone | at-least-once: the records of the batch after the committed offsets (see [`crate::batch`]) |
//! | `i/<partition>` | [`Progress`] JSON | per input topic, the offset after the last record whose effects are in the state |
//!
//! Everything that grows with traffic (open legs, parked ends, the retention windows) is
//! written in records of its own (compaction keeps the latest per key and drops tombstones),
//! so the tenant's record stays small however busy the tenant is, and no record comes near
//! the broker's message size limit. `<len>` is the tenant id's length in bytes, so no two
//! (tenant, id) pairs share a key.
//!
//! **Window segments.** The retention windows change with every input: each applied input
//! adds an id, each closed leg another, and each is forgotten 48 hours (the retention) later.
//! Earlier releases wrote one record per entry and one tombstone per forgotten entry, about
//! three changelog records per input. A batch now writes the entries it added to a tenant's
//! windows as one segment, tagged with the batch's first record of the tenant (`l<offset>` on
//! the call legs, `k<offset>` on the credit commands; a replayed batch writes the same key),
//! and tombstones a segment once its newest entry is older than the tenant's horizon (newest
//! event minus the retention). Entries are forgotten by time alone (a window keeps its
//! entries in time order), so a restore rebuilds the windows from the live segments and
//! forgets what is older than the restored tenant's horizon: exactly what the last owner
//! kept. A segment whose entries are all forgotten but which is not yet tombstoned (segments
//! are retired oldest-written first) costs space, not correctness.
//!
//! Releases before window segments wrote `s/<len>/<tenant>/<id>` (an applied input id) and
//! `c/<len>/<tenant>/<leg>` (a closed leg) records, a `WindowEntryRecord` or earlier JSON
//! each. They are still read; a tenant that has any is rewritten once, before the partition
//! rates anything: its windows as one segment (tag `r`) and a tombstone for each such key
//! ([`Restored::retire`]).
//!
//! Every batch's records are written in one Kafka transaction together with the partition's
//! input offsets (`i/<partition>`), in both processing guarantees: a restore (which reads
//! `read_committed`) sees all of a batch or none of it, with the offsets the state reflects,
//! and a producer fenced by the partition's next owner can write nothing more. Restoring a partition reads its changelog partition from the beginning
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::kafka::WatchedConsumer;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tollgate_core::event::CallLegEvent;
use tollgate_core::state::{Change, IdKey, KeyState, LegChanges, ParkedChanges, Recent};
use tollgate_core::{FastState, Id, OpenLeg, TenantState, Timestamp};

use crate::batch::{Manifest, Progress};
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

/// What a tenant's journals recorded in one batch: the changes of its retention windows, of
/// its open legs and of its parked ends (the parts of its state that grow with traffic, so are
/// not copied into a batch's snapshot, [`TenantState::snapshot`]).
#[derive(Debug, Default)]
pub struct Journal {
    /// Of the applied ids.
    pub seen: Vec<Change<u64>>,
    /// Of the closed legs.
    pub closed: Vec<Change<()>>,
    /// The open legs changed, each with what it was before.
    pub legs: LegChanges,
    /// The parked ends changed, each with what it was before.
    pub parked: ParkedChanges,
}

impl Journal {
    /// Drains the state's journals.
    pub fn take(state: &mut TenantState) -> Self {
        Journal {
            seen: state.seen.take_changes(),
            closed: state.closed_legs.take_changes(),
            legs: state.open_legs.take_changes(),
            parked: state.parked_ends.take_changes(),
        }
    }

    /// Undoes them on `state`.
    pub fn revert(self, state: &mut TenantState) {
        state.seen.revert(&self.seen);
        state.closed_legs.revert(&self.closed);
        state.open_legs.revert(self.legs);
        state.parked_ends.revert(self.parked);
    }

    /// Takes `current` back to where it was when `before` was snapshotted
    /// ([`TenantState::snapshot`]) and these changes started: the parts the snapshot leaves
    /// out are reverted from the journals, the rest is the snapshot.
    pub fn roll_back(self, mut before: TenantState, current: &mut TenantState) {
        self.revert(current);
        before.seen = std::mem::take(&mut current.seen);
        before.closed_legs = std::mem::take(&mut current.closed_legs);
        before.open_legs = std::mem::take(&mut current.open_legs);
        before.parked_ends = std::mem::take(&mut current.parked_ends);
        *current = before;
    }
}

/// A changelog record: key and value (`None` = tombstone).
pub type ChangelogRecord = (String, Option<Vec<u8>>);

/// A tenant's window segments in the changelog: each tag with the time of its newest entry,
/// in the order they were written (a restore lists them by that time).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Segments(VecDeque<(Box<str>, Timestamp)>);

/// What a batch did to a tenant's [`Segments`], to undo it if the batch is rolled back.
#[derive(Debug, Default)]
pub struct SegmentsUndo {
    /// Segments added at the back.
    pushed: usize,
    /// Segments retired from the front, oldest first.
    retired: Vec<(Box<str>, Timestamp)>,
}

impl Segments {
    /// The tags, in order.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(tag, _)| &**tag)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Undoes what a batch did.
    pub fn revert(&mut self, undo: SegmentsUndo) {
        for _ in 0..undo.pushed {
            self.0.pop_back();
        }
        for segment in undo.retired.into_iter().rev() {
            self.0.push_front(segment);
        }
    }

    /// Writes the entries `changes` added that are not before `cutoff` as segment `tag`,
    /// and tombstones the segments whose newest entry is before `cutoff` (from the oldest
    /// written, up to the first that is not).
    fn write(
        &mut self,
        tenant: &str,
        tag: &str,
        changes: &Journal,
        cutoff: Timestamp,
        out: &mut Vec<ChangelogRecord>,
    ) -> SegmentsUndo {
        let mut undo = SegmentsUndo::default();
        while self.0.front().is_some_and(|(_, newest)| *newest < cutoff) {
            if let Some((retired, newest)) = self.0.pop_front() {
                out.push((entry_key('w', tenant, &retired), None));
                undo.retired.push((retired, newest));
            }
        }
        let applied: Vec<(&str, Timestamp, u64)> = changes
            .seen
            .iter()
            .filter_map(|c| match c {
                Change::Added { id, value, at } if *at >= cutoff => Some((id.as_str(), *at, *value)),
                _ => None,
            })
            .collect();
        let closed: Vec<(&str, Timestamp)> = changes
            .closed
            .iter()
            .filter_map(|c| match c {
                Change::Added { id, at, .. } if *at >= cutoff => Some((id.as_str(), *at)),
                _ => None,
            })
            .collect();
        let (mut applied, mut closed) = (&applied[..], &closed[..]);
        while !applied.is_empty() || !closed.is_empty() {
            let (part, rest) = applied.split_at(applied.len().min(SEGMENT_ENTRIES));
            let (part_closed, rest_closed) = closed.split_at(closed.len().min(SEGMENT_ENTRIES - part.len()));
            let newest = part.iter().map(|e| e.1).chain(part_closed.iter().map(|e| e.1)).max().unwrap_or_default();
            let mut value = Vec::with_capacity(32 * (part.len() + part_closed.len()));
            tollgate_proto::state::encode_segment(part, part_closed, &mut value);
            let tag: Box<str> = match undo.pushed {
                0 => tag.into(),
                n => format!("{tag}.{n}").into(),
            };
            out.push((entry_key('w', tenant, &tag), Some(value)));
            self.0.push_back((tag, newest));
            undo.pushed += 1;
            (applied, closed) = (rest, rest_closed);
        }
        undo
    }
}

/// The tag of the segment a batch writes for a tenant whose first record in the batch is
/// `offset` of an input of `kind`: `k<offset>` on the credit commands, `l<offset>` on the
/// call legs.
pub fn segment_tag(kind: TopicKind, offset: i64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(offset);
    let mut tag = String::with_capacity(1 + digits.len());
    tag.push(if kind == TopicKind::CreditCommands { 'k' } else { 'l' });
    tag.push_str(digits);
    tag
}

/// Entries per segment at most: a batch that adds more to one tenant writes several
/// (`<tag>`, `<tag>.1`, ...), so that a segment stays far below the producer's largest
/// message (1 MB by default) whatever `batch_size` is (an id is at most 256 bytes).
pub const SEGMENT_ENTRIES: usize = 1024;

/// The tag of the segment written for a tenant when it is written in full.
pub const FULL_SEGMENT_TAG: &str = "r";

/// Where a batch writes a tenant's window changes.
#[derive(Debug)]
pub struct WindowWrite<'a> {
    /// The tenant's segments (the batch's added, the expired retired).
    pub segments: &'a mut Segments,
    /// The batch's segment tag for the tenant.
    pub tag: &'a str,
    /// The tenant's horizon after the batch ([`tollgate_core::rating::horizon`]).
    pub cutoff: Timestamp,
}

/// The changelog records that bring the changelog from `before` (the tenant's snapshot when
/// the batch started; `None` for a tenant new in the batch, or one to write in full) up to
/// `state`: its window segment and retired segments, the open legs and the parked ends that
/// changed (from the journal; every one when `before` is `None`), then its record. Returns
/// what to undo on `window.segments` if the batch is rolled back.
pub fn records(
    tenant: &str,
    state: &TenantState,
    before: Option<&TenantState>,
    changes: &Journal,
    window: WindowWrite<'_>,
) -> (Vec<ChangelogRecord>, SegmentsUndo) {
    let mut out = Vec::with_capacity(changes.legs.len() + 3);
    let undo = window.segments.write(tenant, window.tag, changes, window.cutoff, &mut out);
    let leg_record = |leg: &Id, open: &OpenLeg| {
        let entry = LegEntry { tenant: tenant.to_owned(), leg: leg.clone(), open: open.clone() };
        (entry_key('o', tenant, leg), Some(to_json(&entry)))
    };
    let parked_record = |leg: &Id, ended: &CallLegEvent| {
        let entry = ParkedEntry { tenant: tenant.to_owned(), leg: leg.clone(), ended: ended.clone() };
        (entry_key('p', tenant, leg), Some(to_json(&entry)))
    };
    match before {
        None => {
            out.extend(state.open_legs.iter().map(|(leg, open)| leg_record(leg, open)));
            out.extend(state.parked_ends.iter().map(|(leg, ended)| parked_record(leg, ended)));
        }
        Some(_) => {
            // Written first, then tombstoned, each kind in leg-id order.
            let legs = changed(changes.legs.iter(), |leg| state.open_legs.get(leg));
            out.extend(legs.iter().filter_map(|(leg, open)| open.map(|open| leg_record(leg, open))));
            out.extend(
                legs.iter().filter(|(_, open)| open.is_none()).map(|(leg, _)| (entry_key('o', tenant, leg), None)),
            );
            let parked = changed(changes.parked.iter(), |leg| state.parked_ends.get(leg));
            out.extend(parked.iter().filter_map(|(leg, ended)| ended.map(|ended| parked_record(leg, ended))));
            out.extend(
                parked.iter().filter(|(_, ended)| ended.is_none()).map(|(leg, _)| (entry_key('p', tenant, leg), None)),
            );
        }
    }
    out.push((tenant_key(tenant), Some(tollgate_proto::state::tenant_record(state))));
    (out, undo)
}

/// The entries whose record a batch changes, from its journal (each entry it touched, with
/// what it was before) and `now` (what it is after): present and not as before, with its
/// value, or gone (`None`); in leg-id order. Most legs a busy batch touches opened and closed
/// within it and write nothing, so they are left out before sorting, not after.
fn changed<'s, V: PartialEq + 's>(
    journal: impl Iterator<Item = (&'s Id, &'s Option<V>)>,
    now: impl Fn(&Id) -> Option<&'s V>,
) -> Vec<(&'s Id, Option<&'s V>)> {
    let mut changed: Vec<(&Id, Option<&V>)> = journal
        .filter_map(|(id, was)| match (now(id), was) {
            (Some(value), was) if was.as_ref() != Some(value) => Some((id, Some(value))),
            (None, Some(_)) => Some((id, None)),
            _ => None,
        })
        .collect();
    changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    changed
}

/// Every record of a tenant's state, for a tenant written in full (layout migration): its
/// windows (`windows`'s applied ids and closed legs, as added: the state keeps only their
/// keys, see [`tollgate_core::state::IdKey`]; its legs are not read, every open leg is
/// written) as one segment ([`FULL_SEGMENT_TAG`]) that replaces the segments in `segments`
/// (they are tombstoned first, so a tenant written in full twice has one segment, not two
/// under one key).
pub fn full_records(
    tenant: &str,
    state: &TenantState,
    windows: &Journal,
    segments: &mut Segments,
) -> Vec<ChangelogRecord> {
    let mut out: Vec<ChangelogRecord> =
        segments.0.drain(..).map(|(tag, _)| (entry_key('w', tenant, &tag), None)).collect();
    // Everything kept is within the horizon; none is retired here.
    let window = WindowWrite { segments, tag: FULL_SEGMENT_TAG, cutoff: Timestamp::default() };
    out.extend(records(tenant, state, None, windows, window).0);
    out
}

/// What a restored `window` keeps, as added, each entry with the id it was read as (`read`:
/// the entries the window was rebuilt from): what a tenant written in full writes again.
fn with_ids<V: Clone>(window: &Recent<V>, read: &[(Id, V, Timestamp)]) -> Vec<Change<V>> {
    let ids: HashMap<IdKey, &Id, KeyState> = read.iter().map(|(id, _, _)| (IdKey::of(id), id)).collect();
    window
        .entries()
        .filter_map(|(key, value, at)| {
            ids.get(&key).map(|id| Change::Added { id: (*id).clone(), value: value.clone(), at })
        })
        .collect()
}

/// Serializing plain data to a `Vec` cannot fail.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A tenant's restored window entries: the live segments by tag, and the entries of the
/// earlier layout's records of their own (applied ids with fingerprint and time, closed legs).
#[derive(Debug, Default)]
struct Windows {
    segments: HashMap<Box<str>, tollgate_proto::state::Segment<Id>, FastState>,
    seen: HashMap<Id, (u64, Timestamp), FastState>,
    closed: HashMap<Id, Timestamp, FastState>,
}

/// Folds changelog records (in offset order) into tenant states. No `Default`: a restorer
/// needs the retention, and one of 0 would forget every window entry older than the
/// tenant's newest event.
#[derive(Debug)]
pub struct Restorer {
    /// The retention window (seconds): a tenant's restored windows forget what is older than
    /// its horizon, as its last owner had.
    retention_seconds: u32,
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
    progress: Option<Progress>,
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
    /// Tenants with records of an earlier layout (open legs and parked ends inside the
    /// tenant's record, or window entries of their own): to be rewritten in full before
    /// anything else is written for them.
    pub rewrite: Vec<String>,
    /// The batch to rate first (at-least-once), if the last owner had decided it.
    pub manifest: Option<Manifest>,
    /// How far the inputs were rated: the records before it are in the state (empty when
    /// a release before the progress record last wrote the partition: then the group's
    /// committed offsets, written in the same transactions, are exact).
    pub progress: Progress,
    /// By tenant: its window segments in the changelog.
    pub segments: HashMap<String, Segments, FastState>,
    /// Window entries' keys of the layout before segments, to tombstone once their tenants
    /// are rewritten (the tenants are in [`Restored::rewrite`]).
    pub retire: Vec<String>,
    /// By tenant of [`Restored::rewrite`] with remembered ids or closed legs: those entries,
    /// which [`full_records`] writes again (the restored windows keep their keys only).
    pub rewrite_windows: HashMap<String, Journal, FastState>,
}

impl Restorer {
    /// A restorer for windows of `retention_seconds`.
    pub fn new(retention_seconds: u32) -> Self {
        Restorer {
            retention_seconds,
            live: Live::default(),
            dormant: DormantBuilder::default(),
            windows: HashMap::default(),
            legs: HashMap::default(),
            parked: HashMap::default(),
            manifest: None,
            progress: None,
            unreadable: BTreeMap::new(),
            records: 0,
        }
    }

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
            Some(("s" | "c" | "w", _)) => self.remove_window_entry(key),
            Some(("o", _)) => {
                self.legs.remove(key);
            }
            Some(("p", _)) => {
                self.parked.remove(key);
            }
            Some(("m", _)) => self.manifest = None,
            Some(("i", _)) => self.progress = None,
            _ => {}
        }
    }

    fn remove_window_entry(&mut self, key: &str) {
        if let Some((kind, tenant, id)) = entry_key_parts(key)
            && let Some(windows) = self.windows.get_mut(tenant)
        {
            match kind {
                "s" => drop(windows.seen.remove(id)),
                "c" => drop(windows.closed.remove(id)),
                _ => drop(windows.segments.remove(id)),
            }
        }
    }

    fn windows(&mut self, tenant: &str) -> &mut Windows {
        if !self.windows.contains_key(tenant) {
            self.windows.insert(tenant.to_owned(), Windows::default());
        }
        self.windows.get_mut(tenant).expect("present: inserted above when missing")
    }

    /// Reads one record into the restorer; `decodes`: it is a tenant record known to decode.
    fn read(&mut self, key: &str, payload: Option<&[u8]>, decodes: bool) -> Result<(), String> {
        let unreadable = |e: serde_json::Error| e.to_string();
        match key.split_once('/').map(|(kind, _)| kind) {
            Some("t") => self.tenant(&key[2..], payload, decodes)?,
            Some("w") => {
                let Some(bytes) = payload else {
                    self.remove_window_entry(key);
                    return Ok(());
                };
                let Some((_, tenant, tag)) = entry_key_parts(key) else {
                    return Err("not a window segment's key".into());
                };
                let (applied, closed) = tollgate_proto::state::decode_segment(bytes).map_err(|e| e.to_string())?;
                let segment = (
                    applied.into_iter().map(|(id, at, fingerprint)| (Id::from(id), at, fingerprint)).collect(),
                    closed.into_iter().map(|(id, at)| (Id::from(id), at)).collect(),
                );
                self.windows(tenant).segments.insert(tag.into(), segment);
            }
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
                let windows = self.windows(tenant);
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
            Some("i") => {
                self.progress = payload.map(serde_json::from_slice).transpose().map_err(unreadable)?;
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
        // A set: the tenants with old window entries join it, up to every tenant of a large
        // partition the first time a release with segments restores it.
        let mut rewrite: std::collections::BTreeSet<String> = live
            .iter()
            .filter(|(_, s)| !s.open_legs.is_empty() || !s.parked_ends.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        // Entries of a tenant without state (its tenant record tombstoned by an operator, as
        // the repair of an unreadable one): tombstoned too, or a later tenant record of the
        // same name would bring them back at a later restore.
        let mut retire = Vec::new();
        // A tenant with entries is woken: only one with none stays dormant.
        for (key, entry) in self.legs {
            match woken(&mut live, &mut dormant, &entry.tenant) {
                Some(state) => {
                    state.open_legs.insert(entry.leg, entry.open);
                }
                None => {
                    tracing::warn!(tenant = entry.tenant, leg = %entry.leg, "open leg of a tenant without state: retired");
                    retire.push(key);
                }
            }
        }
        for (key, entry) in self.parked {
            match woken(&mut live, &mut dormant, &entry.tenant) {
                Some(state) => {
                    state.parked_ends.insert(entry.leg, entry.ended);
                }
                None => {
                    tracing::warn!(tenant = entry.tenant, leg = %entry.leg, "parked end of a tenant without state: retired");
                    retire.push(key);
                }
            }
        }
        retire.sort_unstable();
        let mut segments = HashMap::default();
        let mut rewrite_windows = HashMap::default();
        let mut tenants: Vec<(String, Windows)> = self.windows.into_iter().collect();
        // The keys to retire, in a stable order.
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (tenant, windows) in tenants {
            let Windows { segments: live_segments, seen, closed } = windows;
            if !seen.is_empty() || !closed.is_empty() {
                // The earlier layout: rewritten as a segment, its keys tombstoned.
                retire.extend(seen.keys().map(|id| entry_key('s', &tenant, id)));
                retire.extend(closed.keys().map(|id| entry_key('c', &tenant, id)));
                rewrite.insert(tenant.clone());
            }
            if live_segments.is_empty() && seen.is_empty() && closed.is_empty() {
                continue;
            }
            let Some(state) = woken(&mut live, &mut dormant, &tenant) else {
                tracing::warn!(tenant, "window entries of a tenant without state: retired");
                retire.extend(live_segments.keys().map(|tag| entry_key('w', &tenant, tag)));
                continue;
            };
            let mut listed: Vec<(Box<str>, Timestamp)> = Vec::with_capacity(live_segments.len());
            let mut all_seen: Vec<(Id, u64, Timestamp)> = seen.into_iter().map(|(id, (v, at))| (id, v, at)).collect();
            let mut all_closed: Vec<(Id, (), Timestamp)> = closed.into_iter().map(|(id, at)| (id, (), at)).collect();
            for (tag, (applied, closed)) in live_segments {
                let newest = applied.iter().map(|e| e.1).chain(closed.iter().map(|e| e.1)).max();
                listed.push((tag, newest.unwrap_or_default()));
                all_seen.extend(applied.into_iter().map(|(id, at, v)| (id, v, at)));
                all_closed.extend(closed.into_iter().map(|(id, at)| (id, (), at)));
            }
            listed.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            state.seen = Recent::from_entries(all_seen.iter().map(|(id, v, at)| (id, *v, *at)));
            state.closed_legs = Recent::from_entries(all_closed.iter().map(|(id, (), at)| (id, (), *at)));
            // What the last owner had forgotten by the tenant's watermark is forgotten again
            // (a segment stays until all its entries are).
            state.forget_before(tollgate_core::rating::horizon(state.watermark, self.retention_seconds));
            if rewrite.contains(&tenant) {
                let windows = Journal {
                    seen: with_ids(&state.seen, &all_seen),
                    closed: with_ids(&state.closed_legs, &all_closed),
                    legs: LegChanges::default(),
                    parked: ParkedChanges::default(),
                };
                rewrite_windows.insert(tenant.clone(), windows);
            }
            if !listed.is_empty() {
                segments.insert(tenant, Segments(listed.into()));
            }
        }
        for state in live.values_mut() {
            state.track_changes();
        }
        let states = States::new(live, dormant.finish());
        Ok(Restored {
            states,
            rewrite: rewrite.into_iter().collect(),
            manifest: self.manifest,
            progress: self.progress.unwrap_or_default(),
            segments,
            retire,
            rewrite_windows,
        })
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
    live.get_or_insert_with(tenant, || dormant.take(tenant)).map(|(state, _)| state)
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

/// Reads changelog partition `partition` (committed records only) up to its high watermark;
/// `cancel` aborts it.
///
/// Two threads: this one polls, packs the records into chunks and checks that tenant records
/// decode; a second one applies them in order. Applying is CPU-bound (about 2 µs a record)
/// and so is polling (about 1 µs), so side by side they take about the time of applying alone.
pub fn restore_partition(config: &WorkerConfig, partition: i32, cancel: &Cancel) -> Result<Restored, Error> {
    let started = Instant::now();
    let topic = &config.topics[TopicKind::State];
    let consumer = kafka::watched_reader(config, "restore")?;
    let (_, high) = consumer.fetch_watermarks(topic, partition, config.kafka_timeout())?;
    let restorer = std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let applier = scope.spawn(move || {
            let mut restorer = Restorer::new(config.retention_seconds);
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
    consumer: &WatchedConsumer,
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
            // Kafka refusing to let the worker read the changelog (an ACL that allows Describe
            // and not Read, credentials revoked) never heals: the start fails with it, named,
            // and the worker exits with its code instead of restoring for ever.
            Some(Err(e)) if e.rdkafka_error_code().and_then(crate::access::Cause::of_code).is_some() => {
                tracing::error!(partition, error = %e, "changelog restore: refused by Kafka");
                return Err(e.into());
            }
            Some(Err(e)) => {
                tracing::warn!(partition, error = %e, "changelog restore: consumer error, retrying");
                false
            }
            None => {
                // A reader stuck for good (see `kafka::BrokerWatch`), which delivers nothing,
                // would restore for ever: the restore is tried again with a new one.
                if let Err(error) = consumer.context().0.check() {
                    tracing::error!(partition, "changelog restore: the reader has known no broker for a minute");
                    return Err(error.into());
                }
                reached(consumer, topic, partition, high)
            }
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
fn reached(consumer: &WatchedConsumer, topic: &str, partition: i32, high: i64) -> bool {
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

    /// A restore whose reader forgot every broker gives up with a retriable error (the
    /// partition's start tries again with a new reader) instead of waiting for ever for
    /// records it can no longer fetch.
    #[test]
    fn a_restore_whose_reader_knows_no_broker_gives_up_to_be_tried_again() {
        let kafka = crate::client::EmbeddedKafka::start().unwrap();
        let config = WorkerConfig { bootstrap_servers: kafka.bootstrap_servers(), ..WorkerConfig::default() };
        kafka.create_topics(&crate::topics::specs(&config, 1)).unwrap();
        let consumer = kafka::watched_reader(&config, "restore").unwrap();
        consumer.context().0.known_none_since(kafka::STUCK_AFTER);
        // Without the watch the read goes on: the test ends it, and fails.
        let error = read_five_that_never_come(&config, &consumer).expect_err("no record was read");
        assert!(matches!(error, Error::Kafka(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown))), "{error:?}");
        assert_eq!(error.class(), crate::error::Class::Retriable);
    }

    /// Reads five changelog records of partition 0 that never come: what ended the read
    /// within 30 s (it is cancelled then, and the caller's `expect` fails).
    fn read_five_that_never_come(config: &WorkerConfig, consumer: &WatchedConsumer) -> Result<(), Error> {
        let (done, result) = std::sync::mpsc::channel();
        let cancel = Cancel::default();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let topic = &config.topics[TopicKind::State];
                let _ = done.send(read_changelog(consumer, topic, 0, 5, &cancel, |_| true));
            });
            let outcome = result.recv_timeout(Duration::from_secs(30));
            cancel.cancel();
            outcome.expect("the read ended")
        })
    }

    /// A restore Kafka refuses to read (the changelog's Read ACL missing, Describe granted:
    /// the watermarks were fetched) ends with the refusal, which stops the worker with its
    /// exit code, instead of retrying for as long as the partition stays assigned.
    #[test]
    fn a_restore_kafka_refuses_to_read_ends_with_the_refusal() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let config = WorkerConfig { bootstrap_servers: cluster.bootstrap_servers(), ..WorkerConfig::default() };
        cluster.create_topic(&config.topics[TopicKind::State], 1, 1).unwrap();
        let refusals = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1000];
        cluster.request_errors(RDKafkaApiKey::Fetch, &refusals);
        let consumer = kafka::watched_reader(&config, "restore").unwrap();
        // A read that retries the refusal goes on: the test ends it, and fails.
        let error = read_five_that_never_come(&config, &consumer).expect_err("no record was read");
        let code = match &error {
            Error::Kafka(e) => e.rdkafka_error_code(),
            _ => None,
        };
        assert_eq!(code, Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{error:?}");
        assert_eq!(error.class(), crate::error::Class::Fatal);
        let halt = crate::partition::Halt::of_start(&config, 0, &error);
        let crate::partition::Halt::Denied(access) = halt else { panic!("not a refusal: {halt:?}") };
        assert_eq!(access.cause.exit_code(), 13);
        assert!(access.message.contains("tollgate.state.v1"), "{}", access.message);
    }

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

    const RETENTION: u32 = 48 * 3600;

    fn window(segments: &mut Segments, cutoff: i64) -> WindowWrite<'_> {
        WindowWrite { segments, tag: "l1", cutoff: ts(cutoff) }
    }

    fn restore(records: &[ChangelogRecord]) -> Restored {
        let mut restorer = Restorer::new(RETENTION);
        for (key, value) in records {
            restorer.apply(key.as_bytes(), value.as_deref());
        }
        restorer.finish().expect("every key readable")
    }

    /// `records` as the broker's log cleaner leaves them at its most thorough: each key's
    /// latest record alone, where it was, and no tombstone (deleted after
    /// `delete.retention.ms`).
    fn compacted(records: &[ChangelogRecord]) -> Vec<ChangelogRecord> {
        let last: HashMap<&str, usize> = records.iter().enumerate().map(|(i, (key, _))| (key.as_str(), i)).collect();
        let kept = records.iter().enumerate().filter(|&(i, (key, value))| last[key.as_str()] == i && value.is_some());
        kept.map(|(_, record)| record.clone()).collect()
    }

    /// Only a key's latest record counts: an unreadable record fails the restore (naming the
    /// key) unless a later record of the key, or a tombstone, replaces it.
    #[test]
    fn an_unreadable_record_fails_the_restore_unless_superseded() {
        let state = TenantState::default();
        let good = full_records("acme", &state, &Journal::default(), &mut Segments::default());
        let garbage = (String::from("t/acme"), Some(b"{not json".to_vec()));
        let mut broken = good.clone();
        broken.push(garbage.clone());
        let mut restorer = Restorer::new(RETENTION);
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

    /// The repair of an unreadable tenant record is its tombstone; the tenant's open legs,
    /// parked ends and window segments are then retired by the next owner, so that a tenant
    /// record of the same name written later does not bring them back.
    #[test]
    fn entries_of_a_tenant_without_state_are_retired() {
        let mut state = TenantState::default();
        state.track_changes();
        state.open_legs.insert("leg-1".into(), open_leg("leg-1", 0));
        state.parked_ends.insert("late".into(), ended("late"));
        state.seen.insert("e-1", 1, ts(10));
        let journal = Journal::take(&mut state);
        let mut written = records("acme", &state, None, &journal, window(&mut Segments::default(), 0)).0;
        let keys: Vec<String> = written.iter().map(|(k, _)| k.clone()).filter(|k| k != "t/acme").collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        written.push((String::from("t/acme"), None));
        let restored = restore(&written);
        assert!(restored.states.is_empty());
        let mut retired = restored.retire.clone();
        retired.sort();
        let mut expected = keys;
        expected.sort();
        assert_eq!(retired, expected);
    }

    /// A batch rolled back: the snapshot, which copies no open leg, parked end or window, and
    /// the journals of those bring the tenant back to exactly where it was.
    #[test]
    fn a_batch_rolled_back_leaves_the_tenant_as_it_was() {
        let mut state = TenantState::default();
        state.open_legs.insert("open".into(), open_leg("open", 30));
        state.parked_ends.insert("waiting".into(), ended("waiting"));
        state.parked_ends.insert("old".into(), CallLegEvent { occurred_at: ts(5), ..ended("old") });
        state.closed_legs.insert(Id::from("closed"), (), ts(50));
        state.credit_sequence = 7;
        state.track_changes();
        let original = state.clone();
        let before = state.snapshot();
        assert!(before.open_legs.is_empty() && before.parked_ends.is_empty(), "the snapshot copies neither");

        // The batch: the waiting end's start came, another end parks, the old one leaves the
        // window, the open leg progresses, a leg closes, a credit event is numbered.
        state.parked_ends.remove("waiting");
        state.parked_ends.insert("new".into(), ended("new"));
        assert_eq!(state.parked_ends.expire_before(ts(50)), 1);
        state.open_legs.insert("open".into(), open_leg("open", 90));
        state.closed_legs.insert(Id::from("waiting"), (), ts(100));
        state.credit_sequence = 8;
        assert_ne!(state, original);

        Journal::take(&mut state).roll_back(before, &mut state);
        assert_eq!(state, original);
        // What the batch would do again, it does the same: the old end leaves the window once.
        assert_eq!(state.parked_ends.expire_before(ts(50)), 1);
        assert_eq!(state.parked_ends.keys().map(|leg| leg.as_str()).collect::<Vec<_>>(), ["waiting"]);
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
        let first = records("acme", &state, None, &Journal::default(), window(&mut Segments::default(), 0)).0;
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
        // Opened and closed within the batch: nothing to write either.
        state.open_legs.insert("leg-brief".into(), open_leg("leg-brief", 0));
        state.open_legs.remove("leg-brief");
        // The parked end is rated, another parks, a third parks and is rated within the batch.
        assert!(before.parked_ends.is_empty(), "the snapshot copies no parked end");
        state.parked_ends.remove("late");
        state.parked_ends.insert("early".into(), ended("early"));
        state.parked_ends.insert("brief".into(), ended("brief"));
        state.parked_ends.remove("brief");
        let journal = Journal::take(&mut state);
        let second = records("acme", &state, Some(&before), &journal, window(&mut Segments::default(), 0)).0;
        let keys: Vec<(&str, bool)> = second.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(
            keys,
            vec![
                ("o/4/acme/leg-0001", true),
                ("o/4/acme/leg-new", true),
                ("o/4/acme/leg-0002", false),
                ("p/4/acme/early", true),
                ("p/4/acme/late", false),
                ("t/acme", true),
            ]
        );

        // The log as written and as compacted restore the same.
        let log = [first, second].concat();
        for log in [compacted(&log), log] {
            let restored = restore(&log);
            assert!(restored.rewrite.is_empty());
            let states = restored.states.into_map();
            let back = &states["acme"];
            assert_eq!(back.open_legs.len(), 3000);
            assert_eq!(back.open_legs.get("leg-0001").map(|l| l.elapsed_seconds), Some(60));
            assert!(!back.open_legs.contains_key("leg-0002") && back.open_legs.contains_key("leg-new"));
            assert_eq!(back.parked_ends.keys().map(|leg| leg.as_str()).collect::<Vec<_>>(), ["early"]);
            assert_eq!((&back.open_legs, &back.parked_ends), (&state.open_legs, &state.parked_ends));
        }
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
        records.extend(full_records("globex", &busy, &windows(&[("leg-1-e", 42, 15)], &[]), &mut Segments::default()));
        // A window entry of an earlier release: JSON, with the tenant and the id in it too.
        let earlier = WindowEntry { tenant: "globex".into(), id: "old-e".into(), at: ts(12), fingerprint: Some(7) };
        records.push((entry_key('s', "globex", "old-e"), Some(serde_json::to_vec(&earlier).unwrap())));
        let mut expected = idle.clone();
        expected.seen.insert("old-e", 7, ts(12));
        expected.seen.insert("leg-1-e", 42, ts(15));

        let restored = restore(&records);
        // The entry of its own is of the layout before segments: globex is rewritten.
        assert_eq!(restored.rewrite, ["globex"]);
        assert_eq!(restored.retire, ["s/6/globex/old-e"]);
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
        for (key, value) in full_records("acme", &TenantState::default(), &Journal::default(), &mut Segments::default())
        {
            chunk.push(key.as_bytes(), value.as_deref());
        }
        chunk.push(b"t/globex", Some(b"\x0a\xff"));
        assert_eq!(chunk.records.iter().map(|r| r.3).collect::<Vec<_>>(), [true, false]);
        let mut restorer = Restorer::new(RETENTION);
        chunk.apply_to(&mut restorer);
        match restorer.finish() {
            Err(Error::Changelog { key, .. }) => assert_eq!(key, "t/globex"),
            other => panic!("restored over an unreadable record: {other:?}"),
        }
    }

    fn entry_record(kind: char, id: &str, at: i64, fingerprint: Option<u64>) -> ChangelogRecord {
        let mut value = Vec::new();
        tollgate_proto::state::encode_window(ts(at), fingerprint, &mut value);
        (entry_key(kind, "acme", id), Some(value))
    }

    /// The keys a window keeps, with their times, oldest first.
    fn kept<V>(set: &Recent<V>) -> Vec<(IdKey, i64)> {
        set.entries().map(|(key, _, at)| (key, at.unix_seconds())).collect()
    }

    /// `ids` with their times, as [`kept`] lists them.
    fn keyed(ids: &[(&str, i64)]) -> Vec<(IdKey, i64)> {
        ids.iter().map(|(id, at)| (IdKey::of(id), *at)).collect()
    }

    /// What a tenant written in full writes of its windows: `seen` (id, fingerprint, time)
    /// and `closed` (leg, time), as restored.
    fn windows(seen: &[(&str, u64, i64)], closed: &[(&str, i64)]) -> Journal {
        Journal {
            seen: seen.iter().map(|(id, v, at)| Change::Added { id: (*id).into(), value: *v, at: ts(*at) }).collect(),
            closed: closed.iter().map(|(id, at)| Change::Added { id: (*id).into(), value: (), at: ts(*at) }).collect(),
            legs: LegChanges::default(),
            parked: ParkedChanges::default(),
        }
    }

    /// A window entry of the layout before segments is forgotten by its tombstone; the tenant
    /// is rewritten once: its windows as one segment, its entries' keys tombstoned, after
    /// which it reads back the same and asks for nothing more.
    #[test]
    fn entries_of_the_layout_before_segments_are_read_and_rewritten_once() {
        let mut state = TenantState { watermark: ts(20), ..Default::default() };
        let mut records = full_records("acme", &state, &Journal::default(), &mut Segments::default());
        records.push(entry_record('s', "e-1", 10, Some(1)));
        records.push(entry_record('s', "e-2", 11, Some(2)));
        records.push(entry_record('c', "leg-1", 12, None));
        records.push(entry_record('c', "leg-2", 13, None));
        records.push((entry_key('s', "acme", "e-1"), None));
        records.push((entry_key('c', "acme", "leg-1"), None));
        let restored = restore(&records);
        assert_eq!(restored.rewrite, ["acme"]);
        assert_eq!(restored.retire, ["s/4/acme/e-2", "c/4/acme/leg-2"]);
        let states = restored.states.into_map();
        assert_eq!(kept(&states["acme"].seen), keyed(&[("e-2", 11)]));
        assert_eq!(kept(&states["acme"].closed_legs), keyed(&[("leg-2", 13)]));
        assert_eq!(states["acme"].seen.get("e-2"), Some(&2));

        // The rewrite: what the task writes before it rates anything.
        let mut segments = Segments::default();
        records.extend(full_records("acme", &states["acme"], &restored.rewrite_windows["acme"], &mut segments));
        records.extend(restored.retire.iter().map(|key| (key.clone(), None)));
        assert_eq!(segments.tags().collect::<Vec<_>>(), [FULL_SEGMENT_TAG]);
        let again = restore(&records);
        assert!(again.rewrite.is_empty() && again.retire.is_empty());
        assert_eq!(again.segments["acme"], segments);
        state.seen.insert("e-2", 2, ts(11));
        state.closed_legs.insert("leg-2", (), ts(13));
        assert_eq!(again.states.into_map()["acme"], state);
    }

    /// Rates batches on one tenant the way the task does: the journal's changes become one
    /// segment per batch, a segment whose newest entry falls behind the horizon is
    /// tombstoned, and a restore at any batch reads back exactly the windows the tenant had,
    /// though ids arrive out of time order and segments outlive some of their entries.
    #[test]
    fn each_batch_writes_one_segment_and_a_restore_forgets_what_the_owner_forgot() {
        const HOUR: i64 = 3600;
        let rater_horizon = |state: &TenantState| tollgate_core::rating::horizon(state.watermark, RETENTION);
        let mut state = TenantState::default();
        state.track_changes();
        let mut segments = Segments::default();
        let mut log: Vec<ChangelogRecord> = full_records("acme", &state, &Journal::default(), &mut Segments::default());
        // (batch, [(id, event time in hours)]): batch 2 has an id older than batch 1's.
        let batches: [(i64, &[(&str, i64)]); 5] = [
            (1, &[("a", 10), ("b", 12)]),
            (2, &[("c", 30), ("d", 11)]),
            (3, &[("e", 40)]),
            (4, &[("f", 59), ("g", 61)]),
            (5, &[("h", 100)]),
        ];
        let mut written = Vec::new();
        for (batch, ids) in batches {
            let before = state.snapshot();
            for &(id, hour) in ids {
                let at = ts(hour * HOUR);
                state.seen.insert(id, batch as u64, at);
                state.closed_legs.insert(format!("leg-{id}"), (), at);
                if at > state.watermark {
                    state.watermark = at;
                    state.forget_before(rater_horizon(&state));
                }
            }
            let journal = Journal::take(&mut state);
            let tag = segment_tag(TopicKind::CallLegs, batch * 100);
            let window = WindowWrite { segments: &mut segments, tag: &tag, cutoff: rater_horizon(&state) };
            let (records, _) = records("acme", &state, Some(&before), &journal, window);
            let keys: Vec<(String, bool)> =
                records.iter().filter(|(k, _)| k.starts_with("w/")).map(|(k, v)| (k.clone(), v.is_some())).collect();
            written.push(keys);
            log.extend(records);
            // The log as written and as compacted restore the same.
            for log in [log.clone(), compacted(&log)] {
                let restored = restore(&log);
                assert_eq!(restored.segments.get("acme"), Some(&segments), "batch {batch}");
                let back = &restored.states.into_map()["acme"];
                assert_eq!((kept(&back.seen), kept(&back.closed_legs)), (kept(&state.seen), kept(&state.closed_legs)));
                assert_eq!(back, &state, "batch {batch}");
            }
        }
        let w = |tag: &str, live: bool| (format!("w/4/acme/{tag}"), live);
        assert_eq!(
            written,
            [
                vec![w("l100", true)],
                vec![w("l200", true)],
                vec![w("l300", true)],
                // Batch 4's horizon is 13 h: batch 1's newest entry (12 h) is behind it;
                // batch 2's (30 h) is not, though its "d" (11 h) is forgotten.
                vec![w("l100", false), w("l400", true)],
                // Horizon 52 h: batches 2 and 3 retired, "f" (59 h) still kept.
                vec![w("l200", false), w("l300", false), w("l500", true)],
            ]
        );
        assert_eq!(kept(&state.seen), keyed(&[("f", 59 * HOUR), ("g", 61 * HOUR), ("h", 100 * HOUR)]));

        // A batch that adds more than a segment holds writes several, all retired together.
        let mut many = Segments::default();
        let mut journal = Journal::default();
        for n in 0..SEGMENT_ENTRIES + 5 {
            journal.seen.push(Change::Added { id: format!("e-{n}").into(), value: 1, at: ts(10) });
        }
        journal.closed.push(Change::Added { id: "leg-x".into(), value: (), at: ts(11) });
        let young = TenantState { watermark: ts(11), ..TenantState::default() };
        let window = WindowWrite { segments: &mut many, tag: "l9", cutoff: ts(0) };
        let (split, undo) = records("acme", &young, None, &journal, window);
        let sizes: Vec<(&str, usize)> = split
            .iter()
            .filter(|(k, _)| k.starts_with("w/"))
            .map(|(k, v)| (k.as_str(), v.as_ref().map_or(0, Vec::len)))
            .collect();
        assert_eq!(sizes.iter().map(|s| s.0).collect::<Vec<_>>(), ["w/4/acme/l9", "w/4/acme/l9.1"]);
        assert!(sizes.iter().all(|s| s.1 < 64 * 1024), "{sizes:?}");
        assert_eq!(
            many.0.iter().map(|(t, at)| (&**t, at.unix_seconds())).collect::<Vec<_>>(),
            [("l9", 10), ("l9.1", 11)]
        );
        let mut back = Restorer::new(RETENTION);
        for (key, value) in
            full_records("acme", &young, &Journal::default(), &mut Segments::default()).iter().chain(&split)
        {
            back.apply(key.as_bytes(), value.as_deref());
        }
        let back = back.finish().unwrap();
        assert_eq!(
            (back.states.into_map()["acme"].seen.len(), back.segments["acme"].0.len()),
            (SEGMENT_ENTRIES + 5, 2)
        );
        many.revert(undo);
        assert!(many.is_empty());

        // A batch rolled back takes its segment and its retirements back.
        let before = segments.clone();
        state.seen.insert("late", 6, ts(200 * HOUR));
        state.watermark = ts(200 * HOUR);
        state.forget_before(rater_horizon(&state));
        let journal = Journal::take(&mut state);
        let window = WindowWrite { segments: &mut segments, tag: "k7", cutoff: rater_horizon(&state) };
        let (records, undo) = records("acme", &state, None, &journal, window);
        assert!(records.iter().any(|(k, v)| k == "w/4/acme/l400" && v.is_none()));
        assert_eq!(segments.tags().collect::<Vec<_>>(), ["k7"]);
        segments.revert(undo);
        assert_eq!(segments, before);
    }

    /// What a tenant written in full writes again of a restored window is what the restored
    /// window keeps, under the ids it was read as: each id once, from its earliest time (an id
    /// two segments name), nothing before the horizon, not even the later copy of an id whose
    /// earliest is before it.
    #[test]
    fn a_rewrite_writes_each_restored_id_once_and_nothing_past_the_horizon() {
        let entries: Vec<(Id, u64, Timestamp)> = vec![
            ("b".into(), 2, ts(30)),
            ("a".into(), 1, ts(20)),
            ("a".into(), 1, ts(25)),
            ("old".into(), 3, ts(5)),
            ("old".into(), 3, ts(15)),
        ];
        let mut window = Recent::from_entries(entries.iter().map(|(id, v, at)| (id, *v, *at)));
        window.prune(ts(10));
        assert_eq!(kept(&window), keyed(&[("a", 20), ("b", 30)]));
        let kept: Vec<(String, u64, i64)> = with_ids(&window, &entries)
            .into_iter()
            .map(|c| match c {
                Change::Added { id, value, at } => (id.to_string(), value, at.unix_seconds()),
                Change::Removed { .. } => unreachable!("only additions"),
            })
            .collect();
        assert_eq!(kept, [("a".to_owned(), 1, 20), ("b".to_owned(), 2, 30)]);
    }

    /// A restore under a shorter window forgets what is behind it at once, and the tenant's
    /// cutoff moves with it: lengthened again later, the window still refuses what this
    /// restore forgot (the rater's `too_late` reads the cutoff).
    #[test]
    fn a_restore_under_a_shorter_window_raises_the_cutoff_it_forgot_before() {
        const HOUR: i64 = 3600;
        let mut state = TenantState::default();
        state.track_changes();
        state.seen.insert("old", 1, ts(20 * HOUR));
        state.seen.insert("new", 2, ts(70 * HOUR));
        state.watermark = ts(80 * HOUR);
        state.forget_before(ts(8 * HOUR)); // what 72 h forgot
        let journal = Journal::take(&mut state);
        let written = full_records("acme", &state, &journal, &mut Segments::default());
        let restore_with = |hours: u32| {
            let mut restorer = Restorer::new(hours * 3600);
            for (key, value) in &written {
                restorer.apply(key.as_bytes(), value.as_deref());
            }
            restorer.finish().unwrap().states.into_map().remove("acme").unwrap()
        };
        let longer = restore_with(72);
        assert_eq!((longer.forgotten_before, longer.seen.len()), (ts(8 * HOUR), 2));
        let shorter = restore_with(48);
        assert_eq!((shorter.forgotten_before, shorter.seen.len()), (ts(32 * HOUR), 1));
    }

    /// A tenant written in full replaces its segments: written twice, it has one segment under
    /// one key, and reads back the same.
    #[test]
    fn a_tenant_written_in_full_twice_keeps_one_segment() {
        let mut state = TenantState { watermark: ts(20), ..Default::default() };
        state.seen.insert("e-1", 1, ts(10));
        let mut segments = Segments::default();
        let mut batch = Journal::default();
        batch.seen.push(Change::Added { id: "e-1".into(), value: 1, at: ts(10) });
        let mut log = records("acme", &state, None, &batch, window(&mut segments, 0)).0;
        state.closed_legs.insert("leg-1", (), ts(12));
        let written = windows(&[("e-1", 1, 10)], &[("leg-1", 12)]);
        let first = full_records("acme", &state, &written, &mut segments);
        assert_eq!((first[0].0.as_str(), first[0].1.is_none()), ("w/4/acme/l1", true));
        log.extend(first);
        let second = full_records("acme", &state, &written, &mut segments);
        let window_keys: Vec<(&str, bool)> =
            second.iter().filter(|(k, _)| k.starts_with("w/")).map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(window_keys, [("w/4/acme/r", false), ("w/4/acme/r", true)]);
        log.extend(second);
        assert_eq!(segments.tags().collect::<Vec<_>>(), [FULL_SEGMENT_TAG]);
        let restored = restore(&log);
        assert_eq!(restored.segments["acme"], segments);
        assert_eq!(restored.states.into_map()["acme"], state);
    }

    /// What the restore puts back into a woken tenant is not a change: a leg restored open and
    /// closed by the first batch gets its tombstone (a restored leg journaled as new had none,
    /// and came back open after the next restore).
    #[test]
    fn a_leg_restored_open_and_then_closed_is_tombstoned() {
        let mut state = TenantState::default();
        state.open_legs.insert("leg-1".into(), open_leg("leg-1", 30));
        let restored = restore(&full_records("acme", &state, &Journal::default(), &mut Segments::default()));
        let mut states = restored.states;
        let acme = states.get_mut("acme").unwrap();
        let before = acme.snapshot();
        acme.open_legs.remove("leg-1");
        let journal = Journal::take(acme);
        let written = records("acme", acme, Some(&before), &journal, window(&mut Segments::default(), 0)).0;
        let keys: Vec<(&str, bool)> = written.iter().map(|(k, v)| (k.as_str(), v.is_some())).collect();
        assert_eq!(keys, [("o/4/acme/leg-1", false), ("t/acme", true)]);
        assert!(
            restore(&[full_records("acme", &state, &Journal::default(), &mut Segments::default()), written].concat())
                .states
                .into_map()["acme"]
                .open_legs
                .is_empty()
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
        all.extend(full_records("acme", migrated, &Journal::default(), &mut Segments::default()));
        let restored = restore(&all);
        assert!(restored.rewrite.is_empty());
        let states = restored.states.into_map();
        assert_eq!(states["acme"].open_legs, state.open_legs);
        assert_eq!(states["acme"].parked_ends, state.parked_ends);
    }
}
