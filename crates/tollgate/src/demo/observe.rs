//! The demo's observer: reads the output topics from the beginning and counts what the
//! workers wrote (duplicates under at-least-once once, by their deterministic ids). It runs on
//! the demo's own thread: reading is how the demo waits.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::ProgressBar;
use tollgate_core::Money;
use tollgate_proto::{Message as _, v1};
use tollgate_worker::client::TopicReader;
use tollgate_worker::record::Record;
use tollgate_worker::{TopicKind, Topics, WorkerConfig};

/// The outputs the summary counts.
const OBSERVED: [TopicKind; 4] =
    [TopicKind::RatedUsage, TopicKind::LegDecisions, TopicKind::CreditEvents, TopicKind::DeadLetter];

/// What the observer saw on the output topics (duplicates under at-least-once are counted
/// once, by their deterministic ids).
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) usages: BTreeMap<String, (String, String, String)>,
    pub(super) charges: BTreeMap<String, Money>,
    /// Rated charges per tenant.
    pub(super) tenant_charges: BTreeMap<String, Money>,
    /// Legs no rate matched (usage flag `unpriced`, what `tollgate_unpriced_legs_total`
    /// counts), by outcome: rated free, or blocked.
    pub(super) unpriced: BTreeMap<&'static str, u64>,
    pub(super) voip: u64,
    pub(super) decisions: HashSet<String>,
    pub(super) disconnects: u64,
    pub(super) credit_events: BTreeMap<String, u64>,
    pub(super) credit_ids: HashSet<String>,
    pub(super) funded: u64,
    pub(super) dead_letters: BTreeMap<String, u64>,
    pub(super) dead_ids: HashSet<(String, i32, i64)>,
}

/// Reads the outputs and keeps [`Stats`].
pub(super) struct Observer {
    reader: TopicReader,
    topics: Topics,
    stats: Stats,
}

impl Observer {
    pub(super) fn start(config: &WorkerConfig) -> anyhow::Result<Observer> {
        let topics: Vec<&str> = OBSERVED.iter().map(|&kind| config.topics[kind].as_str()).collect();
        let reader = TopicReader::from_beginning(config, "demo-observer", &topics)?;
        Ok(Observer { reader, topics: config.topics.clone(), stats: Stats::default() })
    }

    /// What was seen so far.
    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Reads what arrives during `period`.
    pub(super) fn observe_for(&mut self, period: Duration) {
        let until = Instant::now() + period;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(Ok(record)) = self.reader.poll(left) {
                count(&self.topics, &record, &mut self.stats);
            }
        }
    }

    /// Reads until `done` holds (the bar shows the legs rated), or fails after `timeout`.
    pub(super) fn wait_until(
        &mut self,
        timeout: Duration,
        bar: &ProgressBar,
        done: impl Fn(&Stats) -> bool,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            bar.set_position(self.stats.usages.len() as u64 + self.stats.voip);
            if done(&self.stats) {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("timed out after {} s", timeout.as_secs());
            }
            self.observe_for(Duration::from_millis(20));
        }
    }

    /// Reads the outputs to their current ends (call it once nothing writes to them any more).
    pub(super) fn drain(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Observer { reader, topics, stats } = self;
        reader.mark_ends()?;
        reader.read_to_end(timeout, |record| count(topics, &record, stats))?;
        Ok(())
    }
}

/// Counts one output record.
fn count(t: &Topics, m: &Record, s: &mut Stats) {
    let Some(payload) = m.payload.as_deref() else { return };
    if m.topic == t[TopicKind::RatedUsage] {
        let Ok(u) = v1::RatedUsage::decode(payload) else { return };
        if s.usages.contains_key(&u.usage_id) {
            return;
        }
        let kind = match (u.call_type(), u.number_type()) {
            (v1::CallType::ConfIn, v1::NumberType::TollFree) => "dial-in toll-free",
            (v1::CallType::ConfIn, _) => "dial-in toll",
            _ => "dial-out / call-me-at",
        };
        let blocked = u.outcome() == v1::rated_usage::Outcome::Blocked;
        let outcome = match u.outcome() {
            v1::rated_usage::Outcome::Blocked => match u.block_reason() {
                v1::BlockReason::Policy => "blocked: policy",
                v1::BlockReason::NoCredit => "blocked: no credit",
                v1::BlockReason::TollFreeDisabled => "blocked: toll-free off",
                _ => "blocked: no rate",
            },
            _ => match u.capability() {
                v1::Capability::Subscription => "rated: subscription",
                v1::Capability::Pool => "rated: pool",
                v1::Capability::Unpriced => "rated free: no rate",
                _ => "rated: ppm",
            },
        };
        if u.flags.iter().any(|f| f == "unpriced") {
            *s.unpriced.entry(if blocked { "blocked" } else { "rated free" }).or_default() += 1;
        }
        let charge: Money = u.charge.parse().unwrap_or_default();
        *s.charges.entry(u.currency.clone()).or_default() += charge;
        *s.tenant_charges.entry(u.tenant_id.clone()).or_default() += charge;
        s.usages.insert(u.usage_id, (kind.to_owned(), outcome.to_owned(), u.currency));
    } else if m.topic == t[TopicKind::LegDecisions] {
        let Ok(d) = v1::LegDecision::decode(payload) else { return };
        if s.decisions.insert(d.decision_id.clone()) {
            match d.decision {
                Some(v1::leg_decision::Decision::Allow(a)) if a.capability == 0 => s.voip += 1,
                Some(v1::leg_decision::Decision::Disconnect(_)) => s.disconnects += 1,
                _ => {}
            }
        }
    } else if m.topic == t[TopicKind::CreditEvents] {
        let Ok(c) = v1::CreditEvent::decode(payload) else { return };
        if s.credit_ids.insert(c.credit_event_id.clone()) {
            let kind = c.kind().as_str_name().trim_start_matches("KIND_").to_ascii_lowercase();
            if c.kind() == v1::credit_event::Kind::Funded {
                s.funded += 1;
            }
            *s.credit_events.entry(kind).or_default() += 1;
        }
    } else if m.topic == t[TopicKind::DeadLetter] {
        let Ok(d) = v1::DeadLetter::decode(payload) else { return };
        if s.dead_ids.insert((d.source_topic.clone(), d.source_partition, d.source_offset)) {
            *s.dead_letters.entry(d.error_code).or_default() += 1;
        }
    }
}
