//! The demo's traffic: a deterministic generator of `tollgate.v1` inputs over the sample
//! reference data (legs of every kind, interims, funding, and now and then a malformed record),
//! keyed and routed as the workers expect.

use tollgate_proto::Timestamp;
use tollgate_proto::v1;
use tollgate_proto::v1::call_leg_event::Body;
use tollgate_proto::v1::input_record::Record;
use tollgate_worker::publish::{self, Keyed};
use tollgate_worker::{TopicKind, Topics};

/// When the demo's lots are bought and funded: 2026-11-02T07:00:00Z.
const FUNDED_AT: i64 = 1_793_602_800;

/// A tenant of the sample: id, currency, and its users with their usage locations.
type SampleTenant = (String, String, Vec<(String, String)>);

/// A deterministic traffic generator over the sample reference data.
pub(super) struct Traffic {
    rng: u64,
    tenants: Vec<SampleTenant>,
    /// Tenants with credits enabled: the others refuse funding (`credits_disabled`).
    credit_tenants: Vec<String>,
    next_leg: u64,
    pub(super) pstn_legs: u64,
    pub(super) malformed: u64,
    pub(super) events: u64,
    topics: Topics,
}

/// Valid E.164 number stems by country, completed with random digits.
const NUMBERS: &[(&str, &str, usize)] = &[
    ("US", "+1212867", 4),
    ("US", "+1415392", 4),
    ("CA", "+1416340", 4),
    ("PR", "+1787722", 4),
    ("GB", "+44207183", 4),
    ("GB", "+44161496", 4),
    ("DE", "+49309018", 4),
    ("FR", "+331426853", 2),
    ("JP", "+813123456", 2),
    ("AU", "+612937440", 2),
    ("IN", "+9122234567", 2),
    ("BR", "+5511333344", 2),
    ("IT", "+3902123456", 2),
    ("ES", "+349112345", 2),
    ("NG", "+23480312345", 2),
    ("AR", "+5411432112", 2),
    ("ZZ", "+8823", 8),
];

const TOLL_BRIDGES: &[(&str, &str)] = &[
    ("US", "+12062078000"),
    ("GB", "+442038700000"),
    ("DE", "+4930901820"),
    ("JP", "+81312345678"),
    ("AU", "+61293744000"),
    ("FR", "+33142685300"),
    ("CA", "+14163402000"),
];

const TOLL_FREE_BRIDGES: &[(&str, &str)] = &[
    ("US", "+18665550100"),
    ("GB", "+448000121234"),
    ("DE", "+498001234567"),
    ("JP", "+81120123456"),
    ("AU", "+611800123456"),
];

impl Traffic {
    pub(super) fn new(reference: &v1::ReferenceData, topics: Topics, seed: u64) -> Traffic {
        let tenants = reference
            .tenants
            .iter()
            .map(|t| {
                let users = reference
                    .users
                    .iter()
                    .filter(|u| u.tenant_id == t.tenant_id)
                    .map(|u| (u.user_id.clone(), u.usage_location.clone()))
                    .collect();
                (t.tenant_id.clone(), t.currency.clone(), users)
            })
            .collect();
        Traffic {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            tenants,
            credit_tenants: reference
                .tenants
                .iter()
                .filter(|t| t.credits_enabled)
                .map(|t| t.tenant_id.clone())
                .collect(),
            next_leg: 0,
            pstn_legs: 0,
            malformed: 0,
            events: 0,
            topics,
        }
    }

    /// xorshift64*: deterministic, good enough for traffic.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One lot per tenant: generous, except fabrikam (runs out, cut off) and woodgrove
    /// (credits not enabled).
    pub(super) fn funds(&mut self) -> Vec<Keyed> {
        let amounts = [
            ("contoso", "5000.00"),
            ("fabrikam", "40.00"),
            ("northwind", "4000.00"),
            ("tailspin", "600000"),
            ("woodgrove", "100.00"),
        ];
        let mut out = Vec::new();
        for (tenant, currency, _) in self.tenants.iter().filter(|(t, _, _)| self.credit_tenants.contains(t)) {
            let amount = amounts.iter().find(|(t, _)| t == tenant).map_or("1000.00", |(_, a)| a);
            let at = Some(Timestamp::from_unix_seconds(FUNDED_AT));
            let command = v1::CreditCommand {
                command_id: format!("demo-fund-{tenant}"),
                tenant_id: tenant.clone(),
                occurred_at: at,
                body: Some(v1::credit_command::Body::Fund(v1::FundLot {
                    lot_id: format!("demo-{tenant}"),
                    amount: amount.to_owned(),
                    currency: currency.clone(),
                    purchased_at: at,
                })),
            };
            out.extend(self.keyed(Record::CreditCommand(command)));
        }
        self.events += out.len() as u64;
        out
    }

    fn number(&mut self, country: Option<&str>) -> String {
        let candidates: Vec<&(&str, &str, usize)> = match country {
            Some(c) => NUMBERS.iter().filter(|(cc, _, _)| *cc == c).collect(),
            None => NUMBERS.iter().collect(),
        };
        let candidates = if candidates.is_empty() { NUMBERS.iter().collect() } else { candidates };
        let (_, stem, digits) = candidates[self.below(candidates.len() as u64) as usize];
        let mut number = (*stem).to_owned();
        for _ in 0..*digits {
            number.push(char::from(b'0' + self.below(10) as u8));
        }
        number
    }

    /// The records of one more leg (started, interims, ended), now and then with a malformed
    /// record among them.
    pub(super) fn leg(&mut self) -> Vec<Keyed> {
        let i = self.next_leg;
        self.next_leg += 1;
        let pick = self.below(self.tenants.len() as u64) as usize;
        let (tenant, _, users) = self.tenants[pick].clone();
        let (organizer, location) = users[self.below(users.len() as u64) as usize].clone();
        // 2026-11-02T08:00:00Z plus a few seconds per leg.
        let start = 1_793_606_400 + (i as i64) * 3;
        let roll = self.below(100);
        let (kind, number, bridge) = match roll {
            0..35 => {
                let b = TOLL_BRIDGES.iter().find(|(c, _)| *c == location).unwrap_or(&TOLL_BRIDGES[0]).1;
                (v1::LegKind::DialInToll, self.number(None), b.to_owned())
            }
            35..45 => {
                let b = TOLL_FREE_BRIDGES.iter().find(|(c, _)| *c == location).unwrap_or(&TOLL_FREE_BRIDGES[0]).1;
                (v1::LegKind::DialInTollFree, self.number(None), b.to_owned())
            }
            45..80 => {
                let destination = match self.below(10) {
                    0..6 => self.number(Some(&location)),
                    _ => self.number(None),
                };
                (if roll < 70 { v1::LegKind::DialOut } else { v1::LegKind::CallMeAt }, destination, String::new())
            }
            _ => (v1::LegKind::Voip, String::new(), String::new()),
        };
        let seconds: u64 = match self.below(20) {
            0 => 0,
            1..4 => 1 + self.below(59),
            4..19 => 60 + self.below(1740),
            _ => 1800 + self.below(5400),
        };
        let leg = format!("leg-{i}");
        let at = |offset: u64| Some(Timestamp::from_unix_seconds(start + offset as i64));
        let event = |id: &str, offset: u64, body: Body| v1::CallLegEvent {
            event_id: format!("{leg}-{id}"),
            tenant_id: tenant.clone(),
            conference_id: format!("conf-{}", i / 4),
            call_id: format!("call-{leg}"),
            leg_id: leg.clone(),
            organizer_id: organizer.clone(),
            occurred_at: at(offset),
            body: Some(body),
        };
        let started = |kind: v1::LegKind, bridge: String, remote: String| {
            Body::Started(v1::LegStarted { kind: kind as i32, bridge_number: bridge, remote_number: remote })
        };
        // In publishing order: start, interims, now and then a malformed record, end.
        let mut records = vec![Record::CallLeg(event("s", 0, started(kind, bridge, number)))];
        let mut offset = 900;
        while offset < seconds {
            let interim = Body::Interim(v1::LegInterim { elapsed_seconds: offset as u32 });
            records.push(Record::CallLeg(event(&format!("i{offset}"), offset, interim)));
            offset += 900;
        }
        let mut out: Vec<Keyed> = Vec::new();
        if self.below(200) == 0 {
            self.malformed += 1;
            match self.below(4) {
                // Not protobuf at all.
                0 => out.push(Keyed {
                    topic: self.topics[TopicKind::CallLegs].clone(),
                    key: tenant.clone(),
                    value: b"\x08\xff\xff garbage".to_vec(),
                }),
                // A tenant the reference data does not have.
                1 => records.push(Record::CallLeg(v1::CallLegEvent {
                    event_id: format!("{leg}-x"),
                    tenant_id: "initrode".into(),
                    leg_id: leg.clone(),
                    organizer_id: "nobody".into(),
                    occurred_at: at(1),
                    body: Some(Body::Interim(v1::LegInterim { elapsed_seconds: 1 })),
                    ..v1::CallLegEvent::default()
                })),
                // An impossible number.
                2 => records.push(Record::CallLeg(v1::CallLegEvent {
                    leg_id: format!("{leg}-bad"),
                    ..event("bad", 1, started(v1::LegKind::DialOut, String::new(), "+12".into()))
                })),
                // Funding in a currency that is not the tenant's.
                _ => {
                    let command = v1::CreditCommand {
                        command_id: format!("{leg}-chf"),
                        tenant_id: tenant.clone(),
                        occurred_at: at(1),
                        body: Some(v1::credit_command::Body::Fund(v1::FundLot {
                            lot_id: format!("{leg}-chf"),
                            amount: "10.00".into(),
                            currency: "CHF".into(),
                            purchased_at: at(1),
                        })),
                    };
                    records.push(Record::CreditCommand(command));
                }
            }
        }
        let cause = if seconds == 0 { v1::DisconnectCause::NoAnswer } else { v1::DisconnectCause::Normal };
        let ended = v1::LegEnded {
            duration: Some(v1::leg_ended::Duration::ConnectedSeconds(seconds as u32)),
            cause: cause as i32,
        };
        records.push(Record::CallLeg(event("e", seconds, Body::Ended(ended))));
        if kind != v1::LegKind::Voip {
            self.pstn_legs += 1;
        }
        out.extend(records.into_iter().filter_map(|record| self.keyed(record)));
        self.events += out.len() as u64;
        out
    }

    /// An input keyed and routed as the workers expect.
    fn keyed(&self, record: Record) -> Option<Keyed> {
        publish::input(&self.topics, &v1::InputRecord { record: Some(record) })
    }
}
