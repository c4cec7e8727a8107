//! Deterministic traffic for the fault suite: tenants (a few hot ones), their reference data
//! and funding, legs of several kinds with interims, duplicate deliveries and poison records,
//! and the exact charge each tenant must end up with.
//!
//! Funding is published (and applied) before any leg, and every tenant is funded well above
//! what its legs cost, so every leg is rated and the expected charges do not depend on how the
//! two input topics interleave.

use std::collections::BTreeMap;

use tollgate_proto::v1;
use tollgate_worker::Topics;
use tollgate_worker::publish::{self, Keyed};

/// Prices of the test rate card, in cents per started minute.
const US_CENTS: u64 = 2;
const GB_CENTS: u64 = 4;
const DIAL_IN_CENTS: u64 = 1;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Tenants (`t0000`, `t0001`, ...).
    pub tenants: usize,
    /// Of them, the first `hot` get `hot_share` percent of the legs.
    pub hot: usize,
    /// Percent of the legs that go to the hot tenants.
    pub hot_share: u64,
    /// Legs in all.
    pub legs: usize,
    /// Per mille of events delivered twice (same bytes).
    pub duplicate_per_mille: u64,
    /// Legs that start and never end (on the first hot tenant), left open at the end.
    pub open_legs: usize,
    /// How many legs may be in progress at once (an `ended` follows its `started` by this many
    /// events).
    pub concurrency: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            tenants: 40,
            hot: 3,
            hot_share: 30,
            legs: 3_000,
            duplicate_per_mille: 10,
            open_legs: 0,
            concurrency: 40,
            seed: 7,
        }
    }
}

/// Generated traffic.
#[derive(Debug)]
pub struct Traffic {
    /// Reference data (proto3 JSON's message form).
    pub reference: v1::ReferenceData,
    /// Fund commands, one per tenant.
    pub funding: Vec<v1::InputRecord>,
    /// Leg events in publishing order, duplicates included.
    pub legs: Vec<v1::InputRecord>,
    /// Raw poison records `(topic is call-legs, key, value)`, to publish among the legs.
    pub poison: Vec<(Vec<u8>, Vec<u8>)>,
    /// The ids of the poison records that decode (the others are found by position).
    pub poison_ids: Vec<String>,
    /// Per tenant: the exact charge in cents of its ended legs.
    pub expected_cents: BTreeMap<String, u64>,
    /// Per tenant: the legs that ended.
    pub expected_legs: BTreeMap<String, u64>,
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `2026-11-02T00:00:00Z` plus `seconds`.
fn at(seconds: u64) -> Option<tollgate_proto::Timestamp> {
    Some(tollgate_proto::Timestamp { seconds: 1_793_577_600 + seconds as i64, nanos: 0 })
}

fn tenant_id(i: usize) -> String {
    format!("t{i:04}")
}

impl Traffic {
    /// Generates traffic of `shape`.
    pub fn generate(shape: &Shape) -> Traffic {
        let mut rng = Rng(shape.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let tenants: Vec<String> = (0..shape.tenants).map(tenant_id).collect();
        let mut expected_cents: BTreeMap<String, u64> = tenants.iter().map(|t| (t.clone(), 0)).collect();
        let mut expected_legs: BTreeMap<String, u64> = tenants.iter().map(|t| (t.clone(), 0)).collect();
        // Each leg: (tenant, leg id, kind, number, start second, connected seconds, interim).
        let mut starts: Vec<v1::InputRecord> = Vec::new();
        let mut ends: Vec<Vec<v1::InputRecord>> = Vec::new();
        for i in 0..shape.legs {
            let tenant = if shape.hot > 0 && rng.below(100) < shape.hot_share {
                &tenants[rng.below(shape.hot as u64) as usize]
            } else {
                &tenants[rng.below(tenants.len() as u64) as usize]
            };
            let leg = format!("leg-{i:06}");
            let (kind, number, cents) = match rng.below(3) {
                0 => (v1::LegKind::DialOut, "+12128675309", US_CENTS),
                1 => (v1::LegKind::DialOut, "+442071838750", GB_CENTS),
                _ => (v1::LegKind::DialInToll, "+12125550100", DIAL_IN_CENTS),
            };
            let start = i as u64;
            let seconds = 1 + rng.below(900) as u32;
            let minutes = u64::from(seconds).div_ceil(60);
            *expected_cents.get_mut(tenant).unwrap_or(&mut 0) += minutes * cents;
            *expected_legs.get_mut(tenant).unwrap_or(&mut 0) += 1;
            starts.push(leg_event(tenant, &leg, "s", start, Body::Started(kind, number)));
            let mut tail = Vec::new();
            if rng.below(5) == 0 && seconds > 60 {
                tail.push(leg_event(tenant, &leg, "i", start + 60, Body::Interim(60)));
            }
            tail.push(leg_event(tenant, &leg, "e", start + u64::from(seconds), Body::Ended(seconds)));
            ends.push(tail);
        }
        // Interleave: the end of leg i follows the start of leg i + concurrency.
        let mut legs = Vec::with_capacity(shape.legs * 3);
        for i in 0..shape.legs {
            legs.push(starts[i].clone());
            if i >= shape.concurrency {
                legs.extend(ends[i - shape.concurrency].iter().cloned());
            }
        }
        for tail in ends.iter().skip(shape.legs.saturating_sub(shape.concurrency)) {
            legs.extend(tail.iter().cloned());
        }
        // Legs left open on the first hot tenant.
        let open_tenant = tenants[0].clone();
        for i in 0..shape.open_legs {
            let leg = format!("open-{i:06}");
            legs.push(leg_event(
                &open_tenant,
                &leg,
                "s",
                shape.legs as u64 + i as u64,
                Body::Started(v1::LegKind::DialOut, "+12128675309"),
            ));
        }
        // Duplicate deliveries, a little later than the original.
        let mut with_duplicates = Vec::with_capacity(legs.len() + legs.len() / 50);
        let mut pending: Vec<(usize, v1::InputRecord)> = Vec::new();
        for (n, event) in legs.into_iter().enumerate() {
            if rng.below(1000) < shape.duplicate_per_mille {
                pending.push((n + 1 + rng.below(20) as usize, event.clone()));
            }
            with_duplicates.push(event);
            pending.retain(|(due, dup)| {
                if *due <= n {
                    with_duplicates.push(dup.clone());
                    false
                } else {
                    true
                }
            });
        }
        with_duplicates.extend(pending.into_iter().map(|(_, e)| e));

        let funding = tenants
            .iter()
            .map(|t| {
                // Twice what the tenant's legs cost, plus room for the open legs' interims.
                let cents = expected_cents[t] * 2 + 10_000;
                fund(t, &format!("{t}-fund"), cents)
            })
            .collect();
        let poison = vec![(tenants[1].clone().into_bytes(), b"\xff\x00 not protobuf".to_vec())];
        let mut poison_ids = Vec::new();
        let unknown = leg_event("nobody", "leg-x", "s", 0, Body::Started(v1::LegKind::DialOut, "+12128675309"));
        poison_ids.push("nobody/leg-x-s".to_owned());
        let mut traffic = Traffic {
            reference: reference(&tenants),
            funding,
            legs: with_duplicates,
            poison,
            poison_ids,
            expected_cents,
            expected_legs,
        };
        traffic.legs.insert(traffic.legs.len() / 2, unknown);
        traffic
    }

    /// Total input records (funding, legs, poison).
    pub fn input_count(&self) -> usize {
        self.funding.len() + self.legs.len() + self.poison.len()
    }

    /// The keyed records of `inputs`.
    pub fn keyed(topics: &Topics, inputs: &[v1::InputRecord]) -> Vec<Keyed> {
        inputs.iter().filter_map(|r| publish::input(topics, r)).collect()
    }
}

enum Body {
    Started(v1::LegKind, &'static str),
    Interim(u32),
    Ended(u32),
}

fn leg_event(tenant: &str, leg: &str, suffix: &str, second: u64, body: Body) -> v1::InputRecord {
    use v1::call_leg_event::Body as B;
    let body = match body {
        Body::Started(kind, number) => {
            let (remote, bridge) = if kind == v1::LegKind::DialOut {
                (number.to_owned(), String::new())
            } else {
                (String::new(), number.to_owned())
            };
            B::Started(v1::LegStarted { kind: kind as i32, remote_number: remote, bridge_number: bridge })
        }
        Body::Interim(elapsed) => B::Interim(v1::LegInterim { elapsed_seconds: elapsed }),
        Body::Ended(seconds) => B::Ended(v1::LegEnded {
            cause: v1::DisconnectCause::Normal as i32,
            duration: Some(v1::leg_ended::Duration::ConnectedSeconds(seconds)),
        }),
    };
    let event = v1::CallLegEvent {
        event_id: format!("{tenant}/{leg}-{suffix}"),
        tenant_id: tenant.to_owned(),
        conference_id: format!("m-{leg}"),
        call_id: format!("c-{leg}"),
        leg_id: leg.to_owned(),
        organizer_id: "u".to_owned(),
        occurred_at: at(second),
        body: Some(body),
    };
    v1::InputRecord { record: Some(v1::input_record::Record::CallLeg(event)) }
}

fn fund(tenant: &str, id: &str, cents: u64) -> v1::InputRecord {
    let command = v1::CreditCommand {
        command_id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        occurred_at: at(0),
        body: Some(v1::credit_command::Body::Fund(v1::FundLot {
            lot_id: id.to_owned(),
            amount: format!("{}.{:02}", cents / 100, cents % 100),
            currency: "USD".to_owned(),
            purchased_at: at(0),
        })),
    };
    v1::InputRecord { record: Some(v1::input_record::Record::CreditCommand(command)) }
}

fn reference(tenants: &[String]) -> v1::ReferenceData {
    let json = serde_json::json!({
        "tenants": tenants.iter().map(|t| serde_json::json!({
            "tenantId": t, "currency": "USD", "creditsEnabled": true, "rateCardId": "usd",
            "lowBalanceThresholds": ["5.00"],
        })).collect::<Vec<_>>(),
        "users": tenants.iter().map(|t| serde_json::json!({
            "tenantId": t, "userId": "u", "usageLocation": "US", "licence": "LICENCE_MODEL_PAY_PER_MINUTE",
        })).collect::<Vec<_>>(),
        "rateCards": [{"rateCardId": "usd", "currency": "USD", "versions": [{"version": "v1", "effectiveFrom": "2026-01-01T00:00:00Z",
            "dialIn": [{"prefix": "1", "numberType": "NUMBER_TYPE_TOLL", "price": {"perMinute": "0.01"}}],
            "dialOut": [{"prefix": "1", "price": {"perMinute": "0.02"}}, {"prefix": "44", "price": {"perMinute": "0.04"}}]}]}],
    });
    serde_json::from_value(json).unwrap_or_default()
}
