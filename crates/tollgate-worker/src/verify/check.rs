//! The pure half of the checker: a [`Snapshot`] in, a [`Report`] out. Nothing here rates: it
//! decodes, groups, counts and adds up (see the parent module for what is checked and why).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use tollgate_core::{CreditBody, Input, LegBody, LegKind, Money, TenantState};
use tollgate_proto::v1::credit_event::Kind;
use tollgate_proto::v1::leg_decision::Decision;
use tollgate_proto::{Message as _, v1};

use super::report::{self, DeadLetterRow, LISTED, Report, TenantRow};
use super::{Expectations, InputRef, Snapshot};
use crate::codec;
use crate::config::{TopicKind, Topics, WorkerConfig};
use crate::partitioner::partition_for;
use crate::record::Record;

/// Where an input record is: topic, partition, offset.
type Source = (String, i32, i64);

/// Checks a snapshot of the deployment of `config` against the invariants and `expectations`.
pub fn check(snapshot: &Snapshot, config: &WorkerConfig, expectations: &Expectations) -> Report {
    let topics = &config.topics;
    let mut findings = Findings::default();
    let mut tenants: BTreeMap<String, Tenant<'_>> = BTreeMap::new();
    let partitions = input_partitions(snapshot, topics, &mut findings);
    let dead = distinct(&snapshot.dead_letters, decode_dead_letter, &mut findings);
    let mut unrated = Unrated::listing(expectations.all_rated);
    let found = inputs(snapshot, config, partitions, &dead, (&mut tenants, &mut unrated), &mut findings);
    let dead_letters = dead_letter_rows(topics, &dead, &found, expectations, &mut tenants, &mut findings);
    usages(snapshot, expectations, &mut tenants, &mut findings);
    decisions(snapshot, expectations, &mut tenants, &mut findings);
    credit_events(snapshot, expectations, &mut tenants, &mut findings);
    states(snapshot, partitions, &mut tenants, &mut findings);
    for tenant in tenants.values_mut() {
        tenant.leave_out_unrated();
    }
    let mut warnings = snapshot.warnings.clone();
    unrated.report(&mut warnings, &mut findings);
    let mut rows: Vec<TenantRow> = tenants.iter().map(|(id, tenant)| tenant_row(id, tenant, &mut findings)).collect();
    let violations = findings.into_lines();
    for row in &mut rows {
        row.ok = !violations.iter().any(|(tenant, _)| tenant.as_deref() == Some(row.tenant.as_str()));
    }
    let violations: Vec<String> = violations.into_iter().map(|(_, line)| line).collect();
    Report {
        ok: violations.is_empty(),
        records: records_per_topic(snapshot),
        tenants: rows,
        dead_letters,
        violations,
        warnings,
    }
}

/// Violations, single or gathered in lists (one line per tenant and kind of finding).
#[derive(Default)]
struct Findings {
    /// Single findings: tenant, message.
    notes: Vec<(Option<String>, String)>,
    /// Listed findings: (tenant, what) -> the ids concerned.
    lists: BTreeMap<(Option<String>, &'static str), Vec<String>>,
}

impl Findings {
    /// One finding.
    fn note(&mut self, tenant: Option<&str>, message: String) {
        self.notes.push((tenant.map(str::to_owned), message));
    }

    /// One more id in the list `what` of `tenant`.
    fn list(&mut self, tenant: Option<&str>, what: &'static str, item: String) {
        self.lists.entry((tenant.map(str::to_owned), what)).or_default().push(item);
    }

    /// The findings as report lines with their tenant: findings about no tenant first, then
    /// by tenant; each list as `<what> (<count>): <ids>`.
    fn into_lines(self) -> Vec<(Option<String>, String)> {
        let mut lines = self.notes;
        for ((tenant, what), items) in self.lists {
            lines.push((tenant, format!("{what} ({}): {}", items.len(), listed(&items))));
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        lines
            .into_iter()
            .map(|(tenant, line)| {
                let line = match &tenant {
                    Some(t) => format!("{t}: {line}"),
                    None => line,
                };
                (tenant, line)
            })
            .collect()
    }
}

/// At most [`LISTED`] items, then how many more.
fn listed(items: &[String]) -> String {
    let mut text = items.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > LISTED {
        text.push_str(&format!(", … and {} more", items.len() - LISTED));
    }
    text
}

/// `topic:partition:offset`, the form [`InputRef`] parses.
fn place(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

/// Where a record is.
fn place_of(record: &Record) -> String {
    place(&record.topic, record.partition, record.offset)
}

/// What the checker gathers about one tenant.
#[derive(Default)]
struct Tenant<'a> {
    /// Currencies of the amounts its outputs and funding move (not of zero amounts).
    currencies: BTreeSet<String>,
    /// Legs with an applied start: leg id -> VoIP.
    legs: BTreeMap<String, bool>,
    /// Applied credit commands, the first per command id: kind and amount.
    commands: BTreeMap<String, (Command, Money)>,
    /// Distinct usages: usage id -> charge.
    usages: BTreeMap<String, Money>,
    /// Distinct decisions per leg id: `allow`, `block`, `disconnect`.
    decided: BTreeMap<String, Vec<&'static str>>,
    /// Distinct credit events by sequence: kind and amount.
    credits: BTreeMap<u64, (Kind, Money)>,
    /// Extra copies of its outputs.
    duplicates: u64,
    /// Its dead-lettered inputs.
    dead_letters: u64,
    /// Its restored state.
    state: Option<&'a TenantState>,
    /// Its inputs the restored state does not account for yet.
    unrated: u64,
    /// Legs with an event not rated yet.
    unrated_legs: BTreeSet<String>,
    /// Legs with a `started` not rated yet.
    unrated_starts: BTreeSet<String>,
}

impl Tenant<'_> {
    /// Leaves out what inputs not rated yet may have caused after the changelog was read (see
    /// the parent module): usages and decisions of legs whose start is not rated, usages of
    /// legs still open in the state with a later event not rated, credit events beyond the
    /// restored sequence.
    fn leave_out_unrated(&mut self) {
        if self.unrated == 0 {
            return;
        }
        let open = self.state.map(|s| &s.open_legs);
        let (legs, unrated_starts, unrated_legs) = (&self.legs, &self.unrated_starts, &self.unrated_legs);
        let start_unrated = |leg: &str| unrated_starts.contains(leg) && !legs.contains_key(leg);
        let end_unrated = |leg: &str| unrated_legs.contains(leg) && open.is_some_and(|o| o.contains_key(leg));
        self.usages.retain(|usage_id, _| {
            let leg = usage_id.split_once('/').map_or(usage_id.as_str(), |(_, leg)| leg);
            !start_unrated(leg) && !end_unrated(leg)
        });
        self.decided.retain(|leg, _| !start_unrated(leg));
        let sequence = self.state.map_or(0, |s| s.credit_sequence);
        self.credits.retain(|s, _| *s <= sequence);
    }

    /// Nothing the restored states account for names the tenant: it has only inputs not rated
    /// yet.
    fn only_unrated(&self) -> bool {
        self.unrated > 0
            && self.legs.is_empty()
            && self.commands.is_empty()
            && self.usages.is_empty()
            && self.decided.is_empty()
            && self.credits.is_empty()
            && self.dead_letters == 0
    }

    /// Notes the currency of an amount an output names (an empty one names none): what it
    /// moves, or the balance it leaves. An amount of zero does not count: a tenant that never
    /// held money may take another currency (`TenantState::holds_money`), so the currency of
    /// its outputs that moved none and left none (calls blocked for no credit) may differ from
    /// the one its money is held in later. One that left a balance in another currency counts.
    fn note_currency(&mut self, currency: &str, amount: Money) {
        if !currency.is_empty() && amount != Money::ZERO {
            self.currencies.insert(currency.to_owned());
        }
    }
}

/// The credit commands that move money.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Command {
    Fund,
    Recharge,
    Adjust,
    /// `recharge_failed`: no money.
    Other,
}

/// The first copy of an output id and how many copies there were.
struct Distinct<'a, T> {
    value: T,
    payload: &'a [u8],
    copies: u64,
    /// Some copy's bytes differ from the first's.
    conflicting: bool,
}

/// How the two kinds of duplicate of one output are listed.
struct Labels {
    conflicting: &'static str,
    repeated: &'static str,
}

const USAGES: Labels = Labels {
    conflicting: "usage ids with copies of different content",
    repeated: "usage ids published more than once under exactly-once",
};
const DECISIONS: Labels = Labels {
    conflicting: "decision ids with copies of different content",
    repeated: "decision ids published more than once under exactly-once",
};
const CREDITS: Labels = Labels {
    conflicting: "credit-event sequences with copies of different content",
    repeated: "credit-event sequences published more than once under exactly-once",
};
const DEAD: Labels = Labels {
    conflicting: "dead letters with copies of different content",
    repeated: "dead letters published more than once under exactly-once",
};

/// Groups records by the id `decode` finds in them; records that do not decode are listed.
fn distinct<'a, K: Ord, T>(
    records: &'a [Record],
    decode: impl Fn(&[u8]) -> Option<(K, T)>,
    findings: &mut Findings,
) -> BTreeMap<K, Distinct<'a, T>> {
    let mut out = BTreeMap::new();
    for record in records {
        let payload = record.payload.as_deref().unwrap_or_default();
        let Some((id, value)) = decode(payload) else {
            findings.list(None, "output records that do not decode", place_of(record));
            continue;
        };
        match out.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(Distinct { value, payload, copies: 1, conflicting: false });
            }
            Entry::Occupied(mut slot) => {
                let first = slot.get_mut();
                first.copies += 1;
                first.conflicting |= first.payload != payload;
            }
        }
    }
    out
}

/// Lists an output whose copies differ (or, under exactly-once, that has copies at all);
/// returns how many extra copies it has.
fn copies<T>(
    tenant_id: Option<&str>,
    labels: &Labels,
    id: String,
    output: &Distinct<'_, T>,
    exactly_once: bool,
    findings: &mut Findings,
) -> u64 {
    if output.copies <= 1 {
        return 0;
    }
    let item = format!("{id} ({} copies)", output.copies);
    if output.conflicting {
        findings.list(tenant_id, labels.conflicting, item);
    } else if exactly_once {
        findings.list(tenant_id, labels.repeated, item);
    }
    output.copies - 1
}

/// The partition count of the inputs, 0 when inputs and changelog disagree (then records'
/// placement is not checked).
fn input_partitions(snapshot: &Snapshot, topics: &Topics, findings: &mut Findings) -> i32 {
    let counts: Vec<(&str, i32)> =
        [&topics[TopicKind::CallLegs], &topics[TopicKind::CreditCommands], &topics[TopicKind::State]]
            .into_iter()
            .filter_map(|t| snapshot.partitions.get(t.as_str()).map(|n| (t.as_str(), *n)))
            .collect();
    let Some(&(_, first)) = counts.first() else { return 0 };
    if counts.iter().any(|(_, n)| *n != first) {
        let listed: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
        findings.note(
            None,
            format!("inputs and changelog have different partition counts: {} (not co-partitioned)", listed.join(", ")),
        );
        return 0;
    }
    first
}

/// A dead letter's source and content.
fn decode_dead_letter(payload: &[u8]) -> Option<(Source, v1::DeadLetter)> {
    let letter = v1::DeadLetter::decode(payload).ok()?;
    Some(((letter.source_topic.clone(), letter.source_partition, letter.source_offset), letter))
}

/// Goes through the inputs: dead-lettered ones are matched with their dead letter (their
/// positions are returned), the others are applied ones and feed the tenants' legs and
/// commands.
fn inputs<'a>(
    snapshot: &'a Snapshot,
    config: &WorkerConfig,
    partitions: i32,
    dead: &BTreeMap<Source, Distinct<'_, v1::DeadLetter>>,
    (tenants, unrated): (&mut BTreeMap<String, Tenant<'a>>, &mut Unrated),
    findings: &mut Findings,
) -> BTreeSet<Source> {
    let mut found = BTreeSet::new();
    for record in &snapshot.inputs {
        let position = (record.topic.clone(), record.partition, record.offset);
        if let Some(letter) = dead.get(&position) {
            if !codec::keeps(&letter.value, record.payload.as_deref().unwrap_or_default()) {
                findings.list(None, "dead letters whose original bytes differ from the input's", place_of(record));
            }
            found.insert(position);
            continue;
        }
        if !snapshot.is_rated(record) {
            unrated.note(record, config, tenants);
            continue;
        }
        match config.topics.kind_of(&record.topic) {
            Some(kind @ (TopicKind::CallLegs | TopicKind::CreditCommands)) => {
                applied(record, kind, partitions, config, tenants, findings);
            }
            _ => findings.list(None, "records read as inputs from another topic", place_of(record)),
        }
    }
    found
}

/// An input that is not dead-lettered: it must be one the worker applies.
fn applied(
    record: &Record,
    kind: TopicKind,
    partitions: i32,
    config: &WorkerConfig,
    tenants: &mut BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) {
    let input = match codec::decode_input(kind, record.payload.as_deref(), config.max_record_bytes) {
        Ok(input) => input,
        Err(refusal) => {
            let item = format!("{} ({})", place_of(record), refusal.code);
            return findings.list(None, "inputs the worker refuses that are not in the dead letters", item);
        }
    };
    let tenant_id = input.tenant_id().as_str();
    let key = record.key.as_deref().unwrap_or_default();
    if key != tenant_id.as_bytes() {
        return findings.list(
            Some(tenant_id),
            "inputs keyed by another id that are not in the dead letters",
            place_of(record),
        );
    }
    if partitions > 0 && partition_for(key, partitions) != record.partition {
        return findings.list(
            Some(tenant_id),
            "inputs on the wrong partition that are not in the dead letters",
            place_of(record),
        );
    }
    if codec::refuse_future_dated(&input, record, config.max_future_seconds).is_err() {
        return findings.list(
            Some(tenant_id),
            "inputs dated after their record that are not in the dead letters",
            place_of(record),
        );
    }
    let tenant = tenants.entry(tenant_id.to_owned()).or_default();
    match input {
        Input::Leg(event) => {
            if let LegBody::Started(started) = event.body {
                tenant.legs.entry(event.leg_id.to_string()).or_insert(started.kind == LegKind::Voip);
            }
        }
        Input::Credit(command) => {
            let (kind, amount, currency) = match command.body {
                CreditBody::Fund(lot) => (Command::Fund, lot.amount, Some(lot.currency)),
                CreditBody::RechargeSucceeded(lot) => (Command::Recharge, lot.amount, Some(lot.currency)),
                CreditBody::Adjust { amount, currency, .. } => (Command::Adjust, amount, Some(currency)),
                CreditBody::RechargeFailed { .. } => (Command::Other, Money::ZERO, None),
            };
            if let Some(currency) = currency {
                tenant.note_currency(currency.code(), amount);
            }
            tenant.commands.entry(command.command_id.to_string()).or_insert((kind, amount));
        }
    }
}

/// The inputs the restored states do not account for yet.
struct Unrated {
    /// Per input partition: how many, and the first one's offset.
    partitions: BTreeMap<(String, i32), (u64, i64)>,
    /// Each one's tenant (when its bytes say) and place, when they are to be listed as
    /// violations ([`Expectations::all_rated`]); a pipeline at work may have millions.
    places: Option<Vec<(Option<String>, String)>>,
}

impl Unrated {
    /// None counted yet; `listed`: each one is named (a violation), not only counted.
    fn listing(listed: bool) -> Self {
        Unrated { partitions: BTreeMap::new(), places: listed.then(Vec::new) }
    }

    /// Counts `record`, for its tenant too when it decodes: left out of the check with the
    /// outputs it may have caused since.
    fn note(&mut self, record: &Record, config: &WorkerConfig, tenants: &mut BTreeMap<String, Tenant<'_>>) {
        let count = self.partitions.entry((record.topic.clone(), record.partition)).or_insert((0, record.offset));
        count.0 += 1;
        let input = config
            .topics
            .kind_of(&record.topic)
            .and_then(|kind| codec::decode_input(kind, record.payload.as_deref(), config.max_record_bytes).ok());
        let Some(input) = input else {
            if let Some(places) = &mut self.places {
                places.push((None, place_of(record)));
            }
            return;
        };
        let tenant_id = input.tenant_id().as_str();
        let tenant = tenants.entry(tenant_id.to_owned()).or_default();
        tenant.unrated += 1;
        if let Input::Leg(event) = &input {
            if matches!(event.body, LegBody::Started(_)) {
                tenant.unrated_starts.insert(event.leg_id.to_string());
            }
            tenant.unrated_legs.insert(event.leg_id.to_string());
        }
        if let Some(places) = &mut self.places {
            places.push((Some(tenant_id.to_owned()), place_of(record)));
        }
    }

    /// A warning per input partition with records not rated yet, or under
    /// [`Expectations::all_rated`] a violation per tenant listing them.
    fn report(self, warnings: &mut Vec<String>, findings: &mut Findings) {
        if let Some(places) = self.places {
            for (tenant, place) in places {
                findings.list(tenant.as_deref(), "inputs not rated yet", place);
            }
            return;
        }
        for ((topic, partition), (count, first)) in self.partitions {
            let records = if count == 1 { "record" } else { "records" };
            warnings.push(format!(
                "{count} {records} of {topic}[{partition}] from offset {first} on are not rated yet (the workers \
                 are behind, or stopped): left out of the check, with what they caused since"
            ));
        }
    }
}

/// The id and tenant of a dead-lettered input, as far as its bytes decode.
fn identify(topics: &Topics, topic: &str, original: &[u8]) -> (Option<String>, Option<String>) {
    let given = |s: String| (!s.is_empty()).then_some(s);
    let ids = match topics.kind_of(topic) {
        Some(TopicKind::CallLegs) => v1::CallLegEvent::decode(original).ok().map(|e| (e.event_id, e.tenant_id)),
        Some(TopicKind::CreditCommands) => {
            v1::CreditCommand::decode(original).ok().map(|c| (c.command_id, c.tenant_id))
        }
        _ => None,
    };
    ids.map_or((None, None), |(id, tenant)| (given(id), given(tenant)))
}

/// The dead-letter rows; checks that each names an input that was read, and the expectation.
fn dead_letter_rows(
    topics: &Topics,
    dead: &BTreeMap<Source, Distinct<'_, v1::DeadLetter>>,
    found: &BTreeSet<Source>,
    expectations: &Expectations,
    tenants: &mut BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) -> Vec<DeadLetterRow> {
    let mut rows = Vec::with_capacity(dead.len());
    for (source, letter) in dead {
        let (topic, partition, offset) = source;
        let at = place(topic, *partition, *offset);
        let (input_id, tenant) = identify(topics, topic, &letter.value.original);
        // Attributed to a tenant only when it has a row (not to an unknown tenant, say).
        let about = tenant.as_deref().filter(|t| tenants.contains_key(*t));
        let extra = copies(about, &DEAD, at.clone(), letter, expectations.exactly_once, findings);
        if let Some(owner) = about.and_then(|t| tenants.get_mut(t)) {
            owner.dead_letters += 1;
            owner.duplicates += extra;
        }
        if !matches!(topics.kind_of(topic), Some(TopicKind::CallLegs | TopicKind::CreditCommands)) {
            findings.list(about, "dead letters from a topic that is not an input", at);
        } else if !found.contains(source) {
            findings.list(about, "dead letters naming no input record that was read", at);
        }
        rows.push(DeadLetterRow {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
            code: letter.value.error_code.clone(),
            input_id,
            tenant,
            copies: letter.copies,
        });
    }
    if let Some(expected) = &expectations.dead_letters {
        expected_dead_letters(&rows, expected, tenants, findings);
    }
    rows
}

/// Whether a dead-letter row is the input `wanted` names.
fn names(wanted: &InputRef, row: &DeadLetterRow) -> bool {
    match wanted {
        InputRef::Id(id) => row.input_id.as_deref() == Some(id.as_str()),
        InputRef::At { topic, partition, offset } => {
            (topic.as_str(), *partition, *offset) == (row.topic.as_str(), row.partition, row.offset)
        }
    }
}

/// The dead-lettered inputs must be exactly the expected ones.
fn expected_dead_letters(
    rows: &[DeadLetterRow],
    expected: &BTreeSet<InputRef>,
    tenants: &BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) {
    for row in rows {
        if !expected.iter().any(|wanted| names(wanted, row)) {
            let about = row.tenant.as_deref().filter(|t| tenants.contains_key(*t));
            let id = row.input_id.as_deref().map(|id| format!(", {id}")).unwrap_or_default();
            let item = format!("{} ({}{id})", place(&row.topic, row.partition, row.offset), row.code);
            findings.list(about, "dead letters not expected", item);
        }
    }
    for wanted in expected {
        if !rows.iter().any(|row| names(wanted, row)) {
            findings.list(None, "expected dead letters missing", wanted.to_string());
        }
    }
}

/// The entry of `tenant_id`, with the extra copies of its output `id` (named by `labels`)
/// counted as duplicates.
fn tenant_of_copies<'t, 'a, T>(
    tenants: &'t mut BTreeMap<String, Tenant<'a>>,
    tenant_id: &str,
    (labels, id): (&Labels, &str),
    output: &Distinct<'_, T>,
    expectations: &Expectations,
    findings: &mut Findings,
) -> &'t mut Tenant<'a> {
    let tenant = tenants.entry(tenant_id.to_owned()).or_default();
    tenant.duplicates += copies(Some(tenant_id), labels, id.to_owned(), output, expectations.exactly_once, findings);
    tenant
}

/// `amount` as money; when it is not a decimal, zero, and `id` listed under `what` for
/// `tenant_id`.
fn money_or_listed(amount: &str, (tenant_id, what, id): (&str, &'static str, &str), findings: &mut Findings) -> Money {
    amount.parse::<Money>().unwrap_or_else(|_| {
        findings.list(Some(tenant_id), what, id.to_owned());
        Money::ZERO
    })
}

/// Distinct rated usages per tenant.
fn usages(
    snapshot: &Snapshot,
    expectations: &Expectations,
    tenants: &mut BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) {
    let decode = |b: &[u8]| v1::RatedUsage::decode(b).ok().map(|u| (u.usage_id.clone(), u));
    for (id, output) in distinct(&snapshot.rated_usage, decode, findings) {
        let usage = &output.value;
        let tenant_id = usage.tenant_id.as_str();
        let tenant = tenant_of_copies(tenants, tenant_id, (&USAGES, &id), &output, expectations, findings);
        let what = "usages whose charge is not a decimal";
        let charge = money_or_listed(&usage.charge, (tenant_id, what, &id), findings);
        tenant.note_currency(&usage.currency, charge);
        tenant.note_currency(&usage.currency, usage.balance_after.parse().unwrap_or(Money::ZERO));
        tenant.usages.insert(id, charge);
    }
}

/// Distinct leg decisions per tenant and leg.
fn decisions(
    snapshot: &Snapshot,
    expectations: &Expectations,
    tenants: &mut BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) {
    let decode = |b: &[u8]| v1::LegDecision::decode(b).ok().map(|d| (d.decision_id.clone(), d));
    for (id, output) in distinct(&snapshot.leg_decisions, decode, findings) {
        let decision = &output.value;
        let tenant_id = decision.tenant_id.as_str();
        let tenant = tenant_of_copies(tenants, tenant_id, (&DECISIONS, &id), &output, expectations, findings);
        let kind = match decision.decision {
            Some(Decision::Allow(_)) => "allow",
            Some(Decision::Block(_)) => "block",
            Some(Decision::Disconnect(_)) => "disconnect",
            None => {
                findings.list(Some(tenant_id), "decisions that decide nothing", id);
                continue;
            }
        };
        tenant.decided.entry(decision.leg_id.clone()).or_default().push(kind);
    }
}

/// Distinct credit events per tenant and sequence.
fn credit_events(
    snapshot: &Snapshot,
    expectations: &Expectations,
    tenants: &mut BTreeMap<String, Tenant<'_>>,
    findings: &mut Findings,
) {
    let decode = |b: &[u8]| v1::CreditEvent::decode(b).ok().map(|e| ((e.tenant_id.clone(), e.sequence), e));
    for ((tenant_id, sequence), output) in distinct(&snapshot.credit_events, decode, findings) {
        let event = &output.value;
        let id = event.credit_event_id.as_str();
        let tenant = tenant_of_copies(tenants, &tenant_id, (&CREDITS, id), &output, expectations, findings);
        if id != format!("{tenant_id}/credit/{sequence}") {
            findings.list(Some(&tenant_id), "credit events whose id is not <tenant>/credit/<sequence>", id.to_owned());
        }
        let what = "credit events whose amount is not a decimal";
        let amount = money_or_listed(&event.amount, (&tenant_id, what, id), findings);
        tenant.note_currency(&event.currency, amount);
        tenant.note_currency(&event.currency, event.balance_after.parse().unwrap_or(Money::ZERO));
        tenant.credits.insert(sequence, (event.kind(), amount));
    }
}

/// Attaches the restored states; a tenant must be in one changelog partition, its own.
fn states<'a>(
    snapshot: &'a Snapshot,
    partitions: i32,
    tenants: &mut BTreeMap<String, Tenant<'a>>,
    findings: &mut Findings,
) {
    let mut home: BTreeMap<&str, i32> = BTreeMap::new();
    for (partition, states) in &snapshot.states {
        let mut states: Vec<(&String, &TenantState)> = states.iter().collect();
        states.sort_by(|a, b| a.0.cmp(b.0));
        for (tenant_id, state) in states {
            if let Some(other) = home.insert(tenant_id, *partition) {
                findings.note(Some(tenant_id), format!("state in changelog partitions {other} and {partition}"));
            }
            let expected = partition_for(tenant_id.as_bytes(), partitions);
            if partitions > 0 && expected != *partition {
                findings.note(
                    Some(tenant_id),
                    format!("state in changelog partition {partition}, but murmur2 puts the tenant on {expected}"),
                );
            }
            tenants.entry(tenant_id.clone()).or_default().state = Some(state);
        }
    }
}

/// The tenant's row, after its legs, sequences and money are checked.
fn tenant_row(tenant_id: &str, tenant: &Tenant<'_>, findings: &mut Findings) -> TenantRow {
    // The currency the state holds its money in, when it holds any, counts as well: outputs
    // in one currency and a balance in another are a violation too.
    let mut currencies = tenant.currencies.clone();
    let held = tenant.state.and_then(|s| s.currency);
    if let Some(held) = held.filter(|_| tenant.state.is_some_and(TenantState::holds_money)) {
        currencies.insert(held.code().to_owned());
    }
    // Labelled with the currency held (the latest the tenant took), else the one its
    // outputs name.
    let currency = held.map(|c| c.code().to_owned()).or_else(|| currencies.iter().next().cloned()).unwrap_or_default();
    if currencies.len() > 1 {
        let all: Vec<&str> = currencies.iter().map(String::as_str).collect();
        findings.note(Some(tenant_id), format!("outputs and funding in several currencies: {}", all.join(", ")));
    }
    if tenant.state.is_none() && !tenant.only_unrated() {
        findings.note(Some(tenant_id), "has applied inputs or outputs but no state in the changelog".to_owned());
    }
    let legs = legs(tenant_id, tenant, findings);
    leg_decisions(tenant_id, tenant, findings);
    sequences(tenant_id, tenant, findings);
    let money = money(tenant_id, &currency, tenant, findings);
    let amount = |m: Money| report::amount(&currency, m);
    TenantRow {
        tenant: tenant_id.to_owned(),
        legs: legs.billable,
        voip_legs: legs.voip,
        usages: tenant.usages.len() as u64,
        duplicates: tenant.duplicates,
        missing: legs.missing,
        open_legs: tenant.state.map_or(0, |s| s.open_legs.len() as u64),
        parked_ends: tenant.state.map_or(0, |s| s.parked_ends.len() as u64),
        credit_events: tenant.credits.len() as u64,
        dead_letters: tenant.dead_letters,
        unrated: tenant.unrated,
        charges: amount(money.charges),
        open_debited: amount(money.open),
        money_in: amount(money.money_in),
        balance: amount(money.balance),
        usage_charges: amount(money.usage_charges),
        ok: true,
        currency,
    }
}

/// Leg counts of a tenant.
struct Legs {
    billable: u64,
    voip: u64,
    missing: u64,
}

/// Every applied non-VoIP start has its usage or is open (not both); every usage and open
/// leg has an applied start.
fn legs(tenant_id: &str, tenant: &Tenant<'_>, findings: &mut Findings) -> Legs {
    let about = Some(tenant_id);
    let open = tenant.state.map(|s| &s.open_legs);
    let is_open = |leg: &str| open.is_some_and(|o| o.contains_key(leg));
    let mut counts = Legs { billable: 0, voip: 0, missing: 0 };
    let mut expected = BTreeSet::new();
    for (leg, voip) in &tenant.legs {
        if *voip {
            counts.voip += 1;
            continue;
        }
        counts.billable += 1;
        let usage_id = format!("{tenant_id}/{leg}");
        match (tenant.usages.contains_key(&usage_id), is_open(leg)) {
            (true, true) => findings.list(about, "legs both rated and open", leg.clone()),
            (false, false) => {
                counts.missing += 1;
                findings.list(about, "legs with neither a rated usage nor an open state", leg.clone());
            }
            _ => {}
        }
        expected.insert(usage_id);
    }
    for usage_id in tenant.usages.keys().filter(|id| !expected.contains(*id)) {
        findings.list(about, "usages of no applied non-VoIP start", usage_id.clone());
    }
    for (leg, _) in open.into_iter().flat_map(|o| o.iter()) {
        if tenant.legs.get(leg.as_str()).is_none_or(|voip| *voip) {
            findings.list(about, "open legs of no applied non-VoIP start", leg.to_string());
        }
    }
    counts
}

/// Every applied start, VoIP included, has exactly one `allow` or `block`; every decision is
/// about a leg with an applied start.
fn leg_decisions(tenant_id: &str, tenant: &Tenant<'_>, findings: &mut Findings) {
    let about = Some(tenant_id);
    for leg in tenant.legs.keys() {
        let decided = tenant.decided.get(leg).map_or(0, |kinds| kinds.iter().filter(|k| **k != "disconnect").count());
        match decided {
            0 => findings.list(about, "legs without an allow or block decision", leg.clone()),
            1 => {}
            _ => findings.list(about, "legs with both an allow and a block decision", leg.clone()),
        }
    }
    for leg in tenant.decided.keys().filter(|leg| !tenant.legs.contains_key(*leg)) {
        findings.list(about, "decisions about legs of no applied start", leg.clone());
    }
}

/// The distinct sequences are exactly `1..=credit_sequence`.
fn sequences(tenant_id: &str, tenant: &Tenant<'_>, findings: &mut Findings) {
    let n = tenant.state.map_or(0, |s| s.credit_sequence);
    let highest = tenant.credits.keys().next_back().map_or(n, |s| (*s).max(n));
    let mut missing = Vec::new();
    let mut next = 1u64;
    for &sequence in tenant.credits.keys().filter(|s| **s >= 1) {
        if sequence > next {
            missing.push((next, sequence - 1));
        }
        next = sequence.saturating_add(1);
    }
    if next <= highest {
        missing.push((next, highest));
    }
    let outside: Vec<(u64, u64)> = tenant.credits.keys().filter(|s| **s == 0 || **s > n).map(|s| (*s, *s)).collect();
    if missing.is_empty() && outside.is_empty() {
        return;
    }
    let mut message = format!("credit-event sequences are not exactly 1..={n} (the restored credit_sequence)");
    if !missing.is_empty() {
        message.push_str(&format!("; missing {}", ranges(&missing)));
    }
    if !outside.is_empty() {
        message.push_str(&format!("; outside it: {}", ranges(&outside)));
    }
    findings.note(Some(tenant_id), message);
}

/// `2, 5..=9`, cut after [`LISTED`] ranges.
fn ranges(ranges: &[(u64, u64)]) -> String {
    let items: Vec<String> =
        ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}..={b}") }).collect();
    listed(&items)
}

/// A tenant's money figures.
struct Figures {
    charges: Money,
    open: Money,
    money_in: Money,
    balance: Money,
    usage_charges: Money,
}

/// The money checks of the parent module's formula.
fn money(tenant_id: &str, currency: &str, tenant: &Tenant<'_>, findings: &mut Findings) -> Figures {
    let fmt = |m: Money| report::amount(currency, m);
    let charges: Money = tenant.usages.values().copied().sum();
    let open: Money = tenant.state.map(|s| s.open_legs.iter().map(|(_, leg)| leg.debited).sum()).unwrap_or_default();
    let events = |kind: Kind| tenant.credits.values().filter(|(k, _)| *k == kind).map(|(_, a)| *a).sum::<Money>();
    let commands = |kind: Command| tenant.commands.values().filter(|(k, _)| *k == kind).map(|(_, a)| *a).sum::<Money>();
    let (funded, recharged) = (events(Kind::Funded), events(Kind::RechargeSucceeded));
    let (adjusted, expired) = (events(Kind::Adjusted), events(Kind::LotExpired));
    let money_in = funded + recharged + adjusted - expired;
    let (balance, usage_charges) =
        tenant.state.map_or((Money::ZERO, Money::ZERO), |s| (s.balance(), s.totals.usage_charges));
    let about = Some(tenant_id);
    let spent = charges + open;
    // (left, right, what the left is, what the right is): each pair must be equal.
    let mut pairs = Vec::new();
    if let Some(state) = tenant.state {
        let gone = money_in - balance;
        if spent != gone {
            let (c, o, s, i, b, g) = (fmt(charges), fmt(open), fmt(spent), fmt(money_in), fmt(balance), fmt(gone));
            findings.note(
                about,
                format!("charges {c} + open legs' debits {o} = {s}, but money in {i} − balance {b} = {g}"),
            );
        }
        let totals = &state.totals;
        pairs.extend([
            (spent, usage_charges, "charges + open legs' debits =", "the restored usage_charges ="),
            (
                funded + recharged,
                totals.funded,
                "FUNDED + RECHARGE_SUCCEEDED events sum to",
                "the restored funded total is",
            ),
            (adjusted, totals.adjusted, "ADJUSTED events sum to", "the restored adjusted total is"),
            (expired, totals.forfeited, "LOT_EXPIRED events sum to", "the restored forfeited total is"),
        ]);
    }
    pairs.extend([
        (funded, commands(Command::Fund), "FUNDED events sum to", "the applied fund commands to"),
        (
            recharged,
            commands(Command::Recharge),
            "RECHARGE_SUCCEEDED events sum to",
            "the applied recharge commands to",
        ),
        (adjusted, commands(Command::Adjust), "ADJUSTED events sum to", "the applied adjustments to"),
    ]);
    for (left, right, left_is, right_is) in pairs {
        if left != right {
            findings.note(about, format!("{left_is} {}, but {right_is} {}", fmt(left), fmt(right)));
        }
    }
    Figures { charges, open, money_in, balance, usage_charges }
}

/// Records read per topic.
fn records_per_topic(snapshot: &Snapshot) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let all = [
        &snapshot.inputs,
        &snapshot.rated_usage,
        &snapshot.leg_decisions,
        &snapshot.credit_events,
        &snapshot.dead_letters,
    ];
    for record in all.into_iter().flatten() {
        *counts.entry(record.topic.clone()).or_default() += 1;
    }
    counts
}
