//! Benchmark of one event through the wire edge and the rater (results and targets in
//! docs/BENCHMARKS.md).
//!
//! - `wire_leg_pair/10k_prefixes`: per event, read a protobuf `v1::CallLegEvent` (a
//!   `started`, then its `ended`) into a core input with `direct::call_leg_event` (the E.164
//!   destination is parsed here), rate it with [`Rater::apply`] on a 10 000-prefix card, and
//!   encode its output with `tollgate_proto::encode::output` into a reused buffer, as the worker
//!   does. Reported per event. Each batch of pairs is rated on a tenant in steady state, as
//!   in the core's benchmark: the same pairs rated three days before under other ids, so
//!   its windows forget an id for each one they remember.
//! - `wire_parts/*`: the same events, one stage at a time, to show where the time goes:
//!   `decode` (prost: protobuf bytes to `v1::CallLegEvent`), `decode_convert` (and
//!   `Input::try_from`: the path before `direct`), `read_direct` (`direct::call_leg_event`,
//!   the worker's path), `rate` (`Rater::apply` on converted inputs), `convert_encode`
//!   (outputs to bytes). Reported per event.
//!
//! The binary allocates with mimalloc, as the worker binary does: the wire edge allocates each
//! event's ids, so the allocator is part of what is measured (docs/BENCHMARKS.md gives the
//! figures with glibc's allocator too).
//!
//! The destinations are 4 000 different valid numbers of 16 Zone A countries, built from
//! libphonenumber's example numbers with their last digits varied, so no cache of recent
//! numbers can make the figure look better than live traffic. Inputs come from a fixed-seed
//! generator, so every run measures the same work.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmarks fail loudly on purpose")]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use phonenumber::metadata::DATABASE;
use tollgate_core::testing::{self, Rng, random_rate};
use tollgate_core::{Decision, E164, Input, Output, Prefix, PrefixTable, Rater, Reference, TenantState, Timestamp};
use tollgate_proto::v1::{self, call_leg_event, leg_ended};
use tollgate_proto::{Message, Timestamp as WireTimestamp, direct, encode, limits};

/// The worker binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2026-11-10T00:00:00Z.
const BASE: i64 = 1_794_268_800;
/// Leg pairs rated on one tenant state before it is reset (as in the core's benchmark).
const PAIRS_PER_STATE: usize = 1_000;
/// How much earlier than a batch its warm-up pairs come (as in the core's benchmark): beyond
/// the 48 h retention, so each measured pair's ids replace a warm-up pair's in the tenant's
/// windows, which forget as many ids as they remember.
const EARLIER_SECONDS: u32 = 3 * 86_400;
/// Batches of pairs, each with its own destinations: 4 000 numbers in all.
const BATCHES: usize = 4;
const PREFIXES: usize = 10_000;
/// Zone A regions whose numbers the legs dial (several share a calling code with others).
const REGIONS: [&str; 16] =
    ["US", "CA", "PR", "GB", "DE", "FR", "IT", "ES", "NL", "JP", "AU", "RU", "IN", "BR", "MX", "CH"];

/// `count` different numbers, as `+<digits>` strings, that parse to one of [`REGIONS`]: each
/// region's fixed-line and mobile example numbers with their last four digits replaced.
fn destinations(rng: &mut Rng, count: usize) -> Vec<String> {
    let mut seeds = Vec::new();
    for region in REGIONS {
        let meta = DATABASE.by_id(region).expect("a region of libphonenumber");
        let d = meta.descriptors();
        for example in [d.fixed_line(), d.mobile()].into_iter().flatten().filter_map(|t| t.example()) {
            seeds.push((region, format!("+{}{example}", meta.country_code())));
        }
    }
    let mut numbers = BTreeSet::new();
    let mut out = Vec::with_capacity(count);
    for attempt in 0.. {
        assert!(attempt < 100 * count, "the example numbers do not vary into {count} valid numbers");
        if out.len() == count {
            break;
        }
        let (region, seed) = &seeds[attempt % seeds.len()];
        let text = format!("{}{}", &seed[..seed.len() - 4], rng.digits(4));
        match E164::parse(&text) {
            Ok(n) if n.country().code() == *region && n.country().is_zone_a() && numbers.insert(text.clone()) => {
                out.push(text);
            }
            _ => {}
        }
    }
    out
}

fn ts(offset: i64) -> Timestamp {
    Timestamp::new(BASE + offset, 0).expect("in range")
}

struct WireFixture {
    reference: Reference,
    /// Per batch, the tenant in steady state before it: funded, with the batch's pairs rated
    /// `EARLIER_SECONDS` before under other ids, so its windows are at their working size.
    warm: Vec<TenantState>,
    /// `BATCHES` batches of `PAIRS_PER_STATE` encoded started + ended events, in order.
    batches: Vec<Vec<Vec<u8>>>,
}

/// The tenant of the core benchmark (thresholds and auto-recharge checked on every debit, never
/// crossed; an organizer restricted to Zone A), and 10 000 dial-out prefixes: the calling codes
/// and prefixes of 2 to 7 digits of the destinations (so lookups end at varied depths), topped
/// up with random ones.
fn wire_fixture() -> WireFixture {
    let mut rng = Rng(0x0077_1e5e);
    let numbers = destinations(&mut rng, BATCHES * PAIRS_PER_STATE);
    let mut prefixes: BTreeSet<String> = (1..=9).map(|d| d.to_string()).collect();
    for (i, n) in numbers.iter().enumerate() {
        prefixes.insert(n[1..3 + i % 6].to_owned());
    }
    while prefixes.len() < PREFIXES {
        let len = 2 + rng.below(6) as usize;
        prefixes.insert(format!("{}{}", 1 + rng.below(9), rng.digits(len - 1)));
    }
    let dial_out =
        PrefixTable::new(prefixes.iter().map(|p| (Prefix::parse(p).expect("digits"), random_rate(&mut rng))).collect())
            .expect("distinct prefixes");

    // Funded before the warm-up pairs.
    let funded_at = ts(-i64::from(EARLIER_SECONDS));
    let (reference, funded) = testing::tenant(dial_out, funded_at, "1000000".parse().expect("decimal"));
    let at = |offset: i64| Some(WireTimestamp { seconds: BASE + offset, nanos: 0 });
    let batches = numbers
        .chunks(PAIRS_PER_STATE)
        .map(|chunk| {
            let mut events = Vec::with_capacity(2 * chunk.len());
            for (i, number) in chunk.iter().enumerate() {
                let start = 60 + i as i64 * 10;
                let connected = 30 + rng.below(3_600) as u32;
                let event = |id: &str, offset: i64, body: call_leg_event::Body| {
                    v1::CallLegEvent {
                        event_id: format!("ev-{i}-{id}"),
                        tenant_id: "contoso".into(),
                        conference_id: format!("conf-{}", i / 4),
                        call_id: format!("call-{i}"),
                        leg_id: format!("leg-{i}"),
                        organizer_id: "alice".into(),
                        occurred_at: at(offset),
                        body: Some(body),
                    }
                    .encode_to_vec()
                };
                let started = v1::LegStarted {
                    kind: v1::LegKind::DialOut as i32,
                    bridge_number: String::new(),
                    remote_number: number.clone(),
                };
                let ended = v1::LegEnded {
                    cause: v1::DisconnectCause::Normal as i32,
                    duration: Some(leg_ended::Duration::ConnectedSeconds(connected)),
                };
                events.push(event("s", start, call_leg_event::Body::Started(started)));
                events.push(event("e", start + i64::from(connected), call_leg_event::Body::Ended(ended)));
            }
            events
        })
        .collect::<Vec<Vec<Vec<u8>>>>();
    let warm = batches.iter().map(|batch| warmed(&reference, &funded, batch)).collect();
    WireFixture { reference, warm, batches }
}

/// `funded` after `batch`'s pairs, `EARLIER_SECONDS` earlier and with their ids suffixed, each
/// allowed (checked).
fn warmed(reference: &Reference, funded: &TenantState, batch: &[Vec<u8>]) -> TenantState {
    let rater = Rater::default();
    let mut state = funded.clone();
    let mut out = Vec::new();
    for bytes in batch {
        let Input::Leg(event) = direct::call_leg_event(bytes, limits::DEFAULT_MAX_RECORD_BYTES).expect("valid") else {
            unreachable!("the batches hold call-leg events");
        };
        let warm_up = testing::moved(event, "-warm", -i64::from(EARLIER_SECONDS));
        rater.apply(reference, &mut state, Input::Leg(warm_up), &mut out).expect("warm-up pair");
    }
    let allowed =
        out.iter().filter(|o| matches!(o, Output::Decision(d) if matches!(d.decision, Decision::Allow { .. })));
    assert_eq!(allowed.count(), batch.len() / 2, "every warm-up leg allowed");
    state
}

/// Inputs of each batch rated by [`primed`] before it is timed: its first pair.
const PRIMER: usize = 2;

/// The pairs of each batch that are timed: those after its primer.
const TIMED_PAIRS: usize = PAIRS_PER_STATE - PRIMER / 2;

/// A copy of batch `batch`'s warm state that has rated the batch's first pair, outside the
/// timed section (see [`testing::primed`]). Timing starts at the batch's second pair.
fn primed(fx: &WireFixture, batch: usize) -> TenantState {
    let primer = fx.batches[batch][..PRIMER]
        .iter()
        .map(|bytes| direct::call_leg_event(bytes, limits::DEFAULT_MAX_RECORD_BYTES).expect("valid"));
    testing::primed(&fx.reference, &fx.warm[batch], primer)
}

/// Where a pair's outputs go: the rater's output list and the encoding buffer, both reused.
struct Sink {
    outputs: Vec<Output>,
    buf: Vec<u8>,
}

/// One event through the wire edge and the rater; returns how many output bytes it produced.
/// Never inlined, so that callgrind can count what happens inside it
/// (`--toggle-collect='*wire::wire_event*'`) with link-time optimisation too.
#[inline(never)]
fn wire_event(rater: &Rater, reference: &Reference, state: &mut TenantState, bytes: &[u8], sink: &mut Sink) -> usize {
    let input = direct::call_leg_event(bytes, limits::DEFAULT_MAX_RECORD_BYTES).expect("valid event");
    rater.apply(reference, state, input, &mut sink.outputs).expect("applied");
    encoded(sink.outputs.drain(..), &mut sink.buf)
}

/// Encodes each output into `buf` (cleared first); returns the bytes written.
fn encoded(outputs: impl Iterator<Item = Output>, buf: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for output in outputs {
        buf.clear();
        encode::output(&output, buf);
        bytes += black_box(&buf).len();
    }
    bytes
}

/// Fails the benchmark early if the pairs do not take the path it claims to measure: every
/// leg allowed and rated, and the warm-up's ids forgotten.
fn assert_rated(fx: &WireFixture) {
    let rater = Rater::default();
    for (batch, warm) in fx.batches.iter().zip(&fx.warm) {
        let mut state = warm.clone();
        let mut out = Vec::new();
        for bytes in batch {
            let input = Input::try_from(v1::CallLegEvent::decode(bytes.as_slice()).expect("protobuf")).expect("valid");
            rater.apply(&fx.reference, &mut state, input, &mut out).expect("applied");
        }
        // The warm-up's ids were forgotten, the batch's own kept: the windows forgot as many
        // ids as they remembered.
        assert_eq!(state.seen.len(), batch.len(), "the warm-up's ids forgotten");
        let records: Vec<v1::OutputRecord> = out.into_iter().map(v1::OutputRecord::from).collect();
        let allowed = records
            .iter()
            .filter(|r| {
                matches!(&r.record, Some(v1::output_record::Record::LegDecision(d))
                    if matches!(d.decision, Some(v1::leg_decision::Decision::Allow(_))))
            })
            .count();
        let rated = records
            .iter()
            .filter(|r| {
                matches!(&r.record, Some(v1::output_record::Record::RatedUsage(u))
                    if u.outcome == v1::rated_usage::Outcome::Rated as i32)
            })
            .count();
        assert_eq!((allowed, rated), (PAIRS_PER_STATE, PAIRS_PER_STATE));
    }
}

fn wire_leg_pair(c: &mut Criterion) {
    let fx = wire_fixture();
    assert_rated(&fx);
    let rater = Rater::default();
    let mut group = c.benchmark_group("wire_leg_pair");
    group.throughput(Throughput::Elements(2));
    group.bench_function("10k_prefixes", |b| {
        // One iteration is one leg pair. Every TIMED_PAIRS pairs the next batch is
        // taken and its warm state copied and primed, outside the timed section.
        let mut batch = 0usize;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let pairs = left.min(TIMED_PAIRS as u64) as usize;
                let events = &fx.batches[batch % BATCHES][PRIMER..PRIMER + 2 * pairs];
                let mut state = primed(&fx, batch % BATCHES);
                batch += 1;
                let mut sink = Sink { outputs: Vec::with_capacity(4), buf: Vec::with_capacity(1024) };
                let mut bytes = 0usize;
                let start = Instant::now();
                for event in events {
                    bytes += wire_event(&rater, &fx.reference, &mut state, event, &mut sink);
                }
                timed += start.elapsed();
                black_box((state, bytes));
                left -= pairs as u64;
            }
            timed
        });
    });
    group.finish();
}

/// Runs `stage` over the events of one batch after another, each after its primer (a fresh
/// `prepare`d value per batch, outside the timed section), until `iters` events are done;
/// returns the time inside `stage`.
fn per_event<P, S>(fx: &WireFixture, iters: u64, mut prepare: impl FnMut(usize) -> P, mut stage: S) -> Duration
where
    S: FnMut(&mut P, usize, &[u8]),
{
    let mut timed = Duration::ZERO;
    let mut left = iters;
    let mut batch = 0usize;
    while left > 0 {
        let events = &fx.batches[batch % BATCHES][PRIMER..];
        let n = left.min(events.len() as u64) as usize;
        let mut prepared = prepare(batch % BATCHES);
        let start = Instant::now();
        for (i, event) in events[..n].iter().enumerate() {
            stage(&mut prepared, i, event);
        }
        timed += start.elapsed();
        black_box(prepared);
        batch += 1;
        left -= n as u64;
    }
    timed
}

fn wire_parts(c: &mut Criterion) {
    let fx = wire_fixture();
    let rater = Rater::default();
    let inputs: Vec<Vec<Input>> = fx
        .batches
        .iter()
        .map(|b| {
            b[PRIMER..]
                .iter()
                .map(|e| Input::try_from(v1::CallLegEvent::decode(e.as_slice()).expect("protobuf")).expect("valid"))
                .collect()
        })
        .collect();
    let outputs: Vec<Vec<Output>> = inputs
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            let mut state = primed(&fx, i);
            let mut out = Vec::new();
            for input in batch {
                rater.apply(&fx.reference, &mut state, input.clone(), &mut out).expect("applied");
            }
            assert_eq!(out.len(), batch.len(), "one output per event");
            out
        })
        .collect();
    let mut group = c.benchmark_group("wire_parts");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter_custom(|iters| {
            per_event(
                &fx,
                iters,
                |_| 0usize,
                |n, _, bytes| {
                    *n += black_box(v1::CallLegEvent::decode(bytes).expect("protobuf")).leg_id.len();
                },
            )
        });
    });
    group.bench_function("decode_convert", |b| {
        b.iter_custom(|iters| {
            per_event(
                &fx,
                iters,
                |_| Vec::with_capacity(2 * PAIRS_PER_STATE),
                |kept, _, bytes| {
                    kept.push(Input::try_from(v1::CallLegEvent::decode(bytes).expect("protobuf")).expect("valid"));
                },
            )
        });
    });
    group.bench_function("read_direct", |b| {
        b.iter_custom(|iters| {
            per_event(
                &fx,
                iters,
                |_| Vec::with_capacity(2 * PAIRS_PER_STATE),
                |kept, _, bytes| {
                    kept.push(direct::call_leg_event(bytes, limits::DEFAULT_MAX_RECORD_BYTES).expect("valid"));
                },
            )
        });
    });
    group.bench_function("rate", |b| {
        b.iter_custom(|iters| {
            per_event(
                &fx,
                iters,
                |batch| {
                    (primed(&fx, batch), inputs[batch].clone().into_iter(), Vec::with_capacity(2 * PAIRS_PER_STATE))
                },
                |(state, inputs, out), _, _| {
                    let input = inputs.next().expect("one input per event");
                    rater.apply(&fx.reference, state, input, out).expect("applied");
                },
            )
        });
    });
    group.bench_function("convert_encode", |b| {
        b.iter_custom(|iters| {
            per_event(
                &fx,
                iters,
                |batch| (outputs[batch].clone().into_iter(), Vec::with_capacity(1024), 0usize),
                |(outputs, buf, bytes), _, _| {
                    *bytes += encoded(outputs.next().into_iter(), buf);
                },
            )
        });
    });
    group.finish();
}

/// A destination not met lately: `E164::parse` of 4,096 different numbers of the wire bench's
/// regions in turn, four times the slots of the thread's table of numbers met lately, so
/// nearly every parse resolves the country from libphonenumber's metadata (the core bench's
/// `e164_parse` group parses one number again and again, which that table answers).
fn e164_new_destination(c: &mut Criterion) {
    let numbers = destinations(&mut Rng(0x0e16_4000), 4_096);
    let mut group = c.benchmark_group("e164_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("new_destination", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % numbers.len();
            black_box(E164::parse(black_box(&numbers[i])))
        });
    });
    group.finish();
}

criterion_group!(benches, wire_leg_pair, wire_parts, e164_new_destination);
criterion_main!(benches);
