//! Benchmarks of the rating hot path (results and targets in docs/BENCHMARKS.md).
//!
//! - `rate_leg_pair/10k_prefixes`: one started + ended dial-out leg pair through
//!   [`Rater::apply`]: dedup, organizer and policy check, rate lookup in a 10 000-prefix table,
//!   allow decision, billing, ledger debit, thresholds and the usage record, on a tenant in
//!   steady state (its maps at their working size, each new id replacing one past retention).
//!   Reported per event, with the heap allocations per pair. Each pair's `started` comes
//!   right after the previous pair's `ended`; `rate_leg_pair/10k_prefixes_in_time_order` rates
//!   the same events in event-time order, as live traffic arrives;
//!   `rate_leg_pair/10k_prefixes_10k_parked_ends` the same pairs on a tenant holding ten
//!   thousand ends whose start never came.
//! - `disconnect_cutoff/3000_open_legs`: the `ended` of one of 3,000 legs of a tenant past
//!   its overdraft under the `disconnect` policy, every leg already told to disconnect: each
//!   debit looks for legs still to tell.
//! - `prefix_lookup/100k_prefixes`: [`PrefixTable::lookup`] alone on 100 000 prefixes.
//! - `e164_parse`: [`E164::parse`] of real numbers, for reference: parsing happens once at the
//!   wire edge, so the rating benchmark builds its numbers outside the timed loop.
//!
//! Inputs come from a fixed-seed generator, so every run measures the same work. The binary's
//! allocator counts allocations (`stats_alloc`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::alloc::System;
use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tollgate_core::testing::{self, Rng, random_rate};
use tollgate_core::{
    CallLegEvent, Catalog, Country, CutoffPolicy, Decision, DisconnectCause, E164, Input, LegBody, LegDuration,
    LegEnded, LegKind, LegStarted, Output, Prefix, PrefixTable, Rater, Reference, TenantId, TenantState, Timestamp,
    UsageOutcome,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// 2026-11-10T00:00:00Z.
const BASE: i64 = 1_794_268_800;
/// Leg pairs rated on one tenant state before it is reset: keeps the dedup memory at the size
/// a busy tenant has, instead of growing with the iteration count.
const PAIRS_PER_STATE: usize = 1_000;
/// How much later than the warm-up pairs the measured pairs come: beyond the 48 h retention,
/// so each measured pair's ids replace a warm-up pair's in the tenant's maps.
const LATER_SECONDS: u32 = 3 * 86_400;

/// `count` distinct prefixes of 2 to `max_len` digits, plus the nine one-digit prefixes so
/// every number matches something.
fn prefixes(rng: &mut Rng, count: usize, max_len: u64) -> Vec<String> {
    let mut set: BTreeSet<String> = (1..=9).map(|d| d.to_string()).collect();
    while set.len() < count {
        let len = 2 + rng.below(max_len - 1) as usize;
        let first = char::from(b'1' + rng.below(9) as u8);
        set.insert(format!("{first}{}", rng.digits(len - 1)));
    }
    set.into_iter().collect()
}

/// Numbers of 11 or 12 digits, each extending a randomly chosen prefix.
fn numbers_under(rng: &mut Rng, prefixes: &[String], count: usize, country: Country) -> Vec<E164> {
    (0..count)
        .map(|_| {
            let prefix = &prefixes[rng.below(prefixes.len() as u64) as usize];
            let len = 11 + rng.below(2) as usize;
            let digits = format!("{prefix}{}", rng.digits(len.saturating_sub(prefix.len())));
            E164::from_parts(&digits, country).expect("valid digits")
        })
        .collect()
}

fn ts(offset: i64) -> Timestamp {
    Timestamp::new(BASE + offset, 0).expect("in range")
}

/// An event of leg `leg-<name>` (call `call-<name>`, event id `ev-<name>-<suffix>`) of
/// `contoso`'s `alice`.
fn leg_event(name: &str, suffix: &str, conference: &str, at: Timestamp, body: LegBody) -> Input {
    Input::Leg(CallLegEvent {
        event_id: format!("ev-{name}-{suffix}").into(),
        tenant_id: TenantId::new("contoso").expect("non-empty"),
        conference_id: conference.into(),
        call_id: format!("call-{name}").into(),
        leg_id: format!("leg-{name}").into(),
        organizer_id: "alice".into(),
        occurred_at: at,
        body,
    })
}

struct LegPairFixture {
    reference: Reference,
    /// Funded, with `PAIRS_PER_STATE` pairs rated three days before `inputs`: a busy tenant in
    /// steady state, whose dedup and closed-leg maps already have their working size.
    warm: TenantState,
    /// `PAIRS_PER_STATE` started + ended pairs, in order.
    inputs: Vec<Input>,
    /// The same inputs in event-time order, as live traffic arrives.
    in_time_order: Vec<Input>,
}

/// A USD tenant with thresholds and auto-recharge (checked on every debit, never crossed: the
/// balance is a million), a pay-per-minute organizer restricted to Zone A, and 10 000
/// dial-out prefixes.
fn leg_pair_fixture() -> LegPairFixture {
    let mut rng = Rng(0x7011_6a7e);
    let table = prefixes(&mut rng, 10_000, 7);
    let dial_out =
        PrefixTable::new(table.iter().map(|p| (Prefix::parse(p).expect("digits"), random_rate(&mut rng))).collect())
            .expect("distinct prefixes");
    let (reference, funded) = testing::tenant(dial_out, ts(0), "1000000".parse().expect("decimal"));
    let rater = Rater::default();

    // Zone A destinations, so the organizer's policy lets them through.
    let zone_a: Vec<Country> =
        ["US", "CA", "GB", "DE", "JP"].iter().map(|c| Country::from_code(c).expect("ISO 3166")).collect();
    let mut inputs = Vec::with_capacity(2 * PAIRS_PER_STATE);
    for i in 0..PAIRS_PER_STATE {
        let country = zone_a[i % zone_a.len()];
        let to = numbers_under(&mut rng, &table, 1, country)[0];
        let start = ts(60 + i as i64 * 10);
        let connected = 30 + rng.below(3_600) as u32;
        let conference = format!("conf-{}", i / 4);
        let event = |id: &str, at: Timestamp, body: LegBody| leg_event(&i.to_string(), id, &conference, at, body);
        let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(to) };
        let ended = LegEnded { duration: LegDuration::ConnectedSeconds(connected), cause: DisconnectCause::Normal };
        inputs.push(event("s", start, LegBody::Started(started)));
        inputs.push(event("e", start.plus_seconds(connected), LegBody::Ended(ended)));
    }
    let mut warm = funded;
    for input in &inputs {
        rater.apply(&reference, &mut warm, input.clone(), &mut Vec::new()).expect("warm-up pair");
    }
    let inputs: Vec<Input> = inputs.into_iter().map(later).collect();
    let mut in_time_order = inputs.clone();
    in_time_order.sort_by_key(|input| match input {
        Input::Leg(event) => event.occurred_at,
        Input::Credit(_) => Timestamp::default(),
    });
    LegPairFixture { reference, warm, inputs, in_time_order }
}

/// How many ends wait for a start that never comes in the state of
/// `rate_leg_pair/10k_prefixes_10k_parked_ends`.
const PARKED_ENDS: usize = 10_000;

/// `warm` with [`PARKED_ENDS`] ends of legs whose start never came (a call controller that
/// lost them), spread over the 47 h before the measured pairs: the oldest leave the window as
/// the measured pairs move the tenant's time on, as they would in steady state.
fn with_parked_ends(fx: &LegPairFixture) -> TenantState {
    let mut state = fx.warm.clone();
    let first = i64::from(LATER_SECONDS) + 60 - 47 * 3_600;
    for k in 0..PARKED_ENDS {
        let at = ts(first + (k as i64 * 47 * 3_600) / PARKED_ENDS as i64);
        let ended = LegEnded { duration: LegDuration::ConnectedSeconds(60), cause: DisconnectCause::Normal };
        let orphan = leg_event(&format!("orphan-{k}"), "e", "conf-orphans", at, LegBody::Ended(ended));
        Rater::default().apply(&fx.reference, &mut state, orphan, &mut Vec::new()).expect("parked");
    }
    assert_eq!(state.parked_ends.len(), PARKED_ENDS);
    state
}

/// The input `LATER_SECONDS` later, with its ids suffixed so it is new to the tenant.
fn later(input: Input) -> Input {
    match input {
        Input::Leg(event) => Input::Leg(testing::moved(event, "-later", i64::from(LATER_SECONDS))),
        credit @ Input::Credit(_) => credit,
    }
}

/// Fails the benchmark early if the pairs do not take the path it claims to measure.
fn assert_rated(fx: &LegPairFixture) {
    for inputs in [&fx.inputs, &fx.in_time_order] {
        let mut state = fx.warm.clone();
        let mut out = Vec::new();
        for input in inputs.iter().cloned() {
            Rater::default().apply(&fx.reference, &mut state, input, &mut out).expect("applied");
        }
        let allowed =
            out.iter().filter(|o| matches!(o, Output::Decision(d) if matches!(d.decision, Decision::Allow { .. })));
        let rated = out
            .iter()
            .filter(|o| matches!(o, Output::Usage(u) if u.outcome == UsageOutcome::Rated && u.charge.is_positive()));
        assert_eq!((allowed.count(), rated.count()), (PAIRS_PER_STATE, PAIRS_PER_STATE));
    }
}

/// Heap allocations per leg pair in steady state: the pairs one timed batch of the benchmark
/// rates, on the primed warm state.
fn allocations_per_pair(fx: &LegPairFixture) -> f64 {
    let rater = Rater::default();
    let (mut state, rest) = primed(fx, &fx.inputs);
    let inputs = rest.to_vec();
    let mut out = Vec::with_capacity(inputs.len());
    let region = Region::new(GLOBAL);
    for input in inputs {
        let _ = black_box(rater.apply(&fx.reference, &mut state, input, &mut out));
    }
    let stats = region.change();
    (stats.allocations + stats.reallocations) as f64 / TIMED_PAIRS as f64
}

/// Inputs of each batch rated before it is timed (see [`testing::primed`]): its first pair.
const PRIMER: usize = 2;

/// The pairs of each batch that are timed: those after its primer.
const TIMED_PAIRS: usize = PAIRS_PER_STATE - PRIMER / 2;

/// A copy of the warm state that has rated the first pair of `all` (see [`testing::primed`]),
/// and the inputs after it.
fn primed<'a>(fx: &LegPairFixture, all: &'a [Input]) -> (TenantState, &'a [Input]) {
    let (primer, rest) = all.split_at(PRIMER);
    (testing::primed(&fx.reference, &fx.warm, primer.iter().cloned()), rest)
}

fn rate_leg_pair(c: &mut Criterion) {
    let fx = leg_pair_fixture();
    assert_rated(&fx);
    println!("rate_leg_pair/10k_prefixes: {:.2} heap allocations per pair", allocations_per_pair(&fx));
    let mut group = c.benchmark_group("rate_leg_pair");
    group.throughput(Throughput::Elements(2));
    // The target's benchmark: each pair's `started` right after the previous pair's `ended`.
    group.bench_function("10k_prefixes", |b| b.iter_custom(|iters| rate_pairs(&fx, &fx.inputs, iters)));
    // The same pairs on a tenant holding ten thousand ends whose start never came: what each
    // input pays for them (their expiry as the tenant's time moves on). Built only when this
    // benchmark runs, so that a profile of another one counts none of its rating.
    let parked = OnceCell::new();
    group.bench_function("10k_prefixes_10k_parked_ends", |b| {
        let parked = parked.get_or_init(|| LegPairFixture {
            reference: fx.reference.clone(),
            warm: with_parked_ends(&fx),
            inputs: fx.inputs.clone(),
            in_time_order: Vec::new(),
        });
        b.iter_custom(|iters| rate_pairs(parked, &parked.inputs, iters))
    });
    // The same events in event-time order, as live traffic arrives them: every id joins the
    // retention windows at their newest end, where the order above puts each `started`
    // behind the entries of the legs that ended later.
    group.bench_function("10k_prefixes_in_time_order", |b| {
        b.iter_custom(|iters| rate_pairs(&fx, &fx.in_time_order, iters))
    });
    group.finish();
}

/// Rates `iters` pairs' worth of `inputs` (two inputs a pair) and returns the time inside
/// `Rater::apply`. Every `TIMED_PAIRS` pairs the warm state is copied and primed (see
/// [`primed`]) and the inputs cloned, all outside the timed section.
fn rate_pairs(fx: &LegPairFixture, all: &[Input], iters: u64) -> Duration {
    let rater = Rater::default();
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let pairs = left.min(TIMED_PAIRS as u64) as usize;
        let (mut state, rest) = primed(fx, all);
        let inputs = rest[..2 * pairs].to_vec();
        let mut out = Vec::with_capacity(2 * pairs);
        let start = Instant::now();
        for input in inputs {
            let _ = black_box(rater.apply(&fx.reference, &mut state, input, &mut out));
        }
        timed += start.elapsed();
        black_box((state, out));
        left -= pairs as u64;
    }
    timed
}

/// Open legs of the `disconnect_cutoff` bench.
const CUTOFF_LEGS: usize = 3_000;

/// A `disconnect`-policy tenant with [`CUTOFF_LEGS`] legs open, driven past its overdraft by
/// their interims (so every leg was told to disconnect), and the `ended` of each leg.
fn cutoff_fixture() -> (Reference, TenantState, Vec<Input>) {
    let mut rng = Rng(0x0c07_0ff5);
    let table = prefixes(&mut rng, 1_000, 6);
    let dial_out =
        PrefixTable::new(table.iter().map(|p| (Prefix::parse(p).expect("digits"), random_rate(&mut rng))).collect())
            .expect("distinct prefixes");
    let (mut reference, mut state) = testing::tenant(dial_out, ts(0), "50".parse().expect("decimal"));
    let mut tenant = reference.tenant("contoso").expect("the fixture's tenant").clone();
    tenant.cutoff = CutoffPolicy::Disconnect;
    reference.put_tenant(tenant);
    let event = |i: usize, suffix: &str, at: Timestamp, body: LegBody| {
        leg_event(&format!("cut-{i}"), suffix, "conf-cutoff", at, body)
    };
    let rater = Rater::default();
    let numbers = numbers_under(&mut rng, &table, CUTOFF_LEGS, Country::from_code("US").expect("ISO 3166"));
    let mut out = Vec::new();
    for (i, to) in numbers.into_iter().enumerate() {
        let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(to) };
        rater.apply(&reference, &mut state, event(i, "s", ts(60), LegBody::Started(started)), &mut out).expect("start");
    }
    for i in 0..CUTOFF_LEGS {
        let interim = LegBody::Interim { elapsed_seconds: 3_600 };
        rater.apply(&reference, &mut state, event(i, "i", ts(3_660), interim), &mut out).expect("interim");
    }
    let told =
        out.iter().filter(|o| matches!(o, Output::Decision(d) if matches!(d.decision, Decision::Disconnect { .. })));
    assert!(state.balance().is_negative() && state.open_legs.len() == CUTOFF_LEGS);
    assert!(told.count() > 0, "the tenant reached its cutoff");
    let ended = |i: usize| {
        let ended = LegEnded { duration: LegDuration::ConnectedSeconds(3_700), cause: DisconnectCause::Normal };
        event(i, "e", ts(3_760), LegBody::Ended(ended))
    };
    (reference, state, (0..CUTOFF_LEGS).map(ended).collect())
}

fn disconnect_cutoff(c: &mut Criterion) {
    // Built only when the benchmark runs (see `rate_leg_pair`).
    let fixture = OnceCell::new();
    let mut group = c.benchmark_group("disconnect_cutoff");
    group.throughput(Throughput::Elements(1));
    // Each sample ends the first `iters` legs (at most all of them) of a fresh copy; only
    // the rating is timed. The legs still open, and so the debit's look through them, go
    // from 3,000 to 3,000 - iters.
    group.bench_function("3000_open_legs", |b| {
        let (reference, state, ends) = fixture.get_or_init(cutoff_fixture);
        b.iter_custom(|iters| {
            let rater = Rater::default();
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(CUTOFF_LEGS / 10);
                let mut state = state.clone();
                let inputs = ends[..n].to_vec();
                let mut out = Vec::with_capacity(4 * n);
                let start = Instant::now();
                for input in inputs {
                    let _ = black_box(rater.apply(reference, &mut state, input, &mut out));
                }
                timed += start.elapsed();
                black_box((state, out));
                left -= n;
            }
            timed
        });
    });
    group.finish();
}

fn prefix_lookup(c: &mut Criterion) {
    let mut rng = Rng(0x0070_0b1e);
    let prefixes = prefixes(&mut rng, 100_000, 8);
    let table =
        PrefixTable::new(prefixes.iter().enumerate().map(|(i, p)| (Prefix::parse(p).expect("digits"), i)).collect())
            .expect("distinct prefixes");
    let numbers = numbers_under(&mut rng, &prefixes, 4_096, Country::NON_GEOGRAPHIC);
    let mut group = c.benchmark_group("prefix_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("100k_prefixes", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % numbers.len();
            black_box(table.lookup(black_box(&numbers[i])))
        });
    });
    group.finish();
}

fn e164_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("e164_parse");
    group.throughput(Throughput::Elements(1));
    for (country, number) in [
        ("US", "+12128675309"),
        ("CA", "+14163402000"),
        ("GB", "+442071838750"),
        ("DE", "+4930901820"),
        ("JP", "+81312345678"),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(country), number, |b, n| {
            b.iter(|| E164::parse(black_box(n)));
        });
    }
    group.finish();
}

criterion_group!(benches, rate_leg_pair, disconnect_cutoff, prefix_lookup, e164_parse);
criterion_main!(benches);
