//! The pure rating core of tollgate.
//!
//! Everything docs/RULES.md says about pay-per-minute meeting audio conferencing lives here, as a
//! deterministic function of (tenant state, reference data, input) -> (new state, outputs):
//! leg classification and billing to the organizer, the dial-out restriction policy, rate
//! lookup, billing increments and rounding, the subscription pool, the prepaid credit ledger
//! with its lots, thresholds, auto-recharge, depletion and cutoff, and deduplication.
//!
//! **No I/O, no clock, no floats.** Time arrives as event timestamps; money is
//! [`rust_decimal::Decimal`] inside [`Money`]; nothing here reads the environment, a file,
//! a socket or the system time. That keeps rating replayable: the Kafka worker and the
//! offline rater get byte-identical outputs from the same inputs.
//!
//! # Layout
//!
//! - [`money`]: [`Money`], [`Currency`] and the one rounding function, [`Currency::round`].
//! - [`instant`]: [`Timestamp`] and calendar arithmetic (lot expiry, pool months).
//! - [`number`]: [`E164`] parsing with libphonenumber, [`Country`], Zone A. A plain `+<digits>`
//!   is answered from libphonenumber's metadata by the private `region` module, exactly as its
//!   parser would, without running the parser.
//! - [`policy`]: the 13 dial-out policy identities and their resolution.
//! - [`rates`]: rate cards, billing increments, and the longest-prefix [`PrefixTable`].
//! - [`reference`]: tenants, users, and the [`Catalog`] the rater reads them through.
//! - [`ledger`]: lots, FIFO consumption, expiry, debt.
//! - [`event`], [`output`]: inputs and outputs.
//! - [`state`]: [`TenantState`], what the worker persists per tenant.
//! - `fingerprint` (private): the persisted, release-stable content fingerprint of inputs.
//! - [`FastState`]: the hasher of the in-memory maps (foldhash, fixed seed).
//! - [`rating`]: [`Rater::apply`], the function everything else exists for.
//!
//! # Invariants
//!
//! - `balance == funded + adjusted - usage_charges - forfeited` ([`state::Totals`]).
//! - A leg's debits add up to its final charge, which is rounded once.
//! - Applying an input either succeeds, or returns `Err` and changes nothing (except that a
//!   leg refused for an impossible number is closed, so its later events are ignored).
//! - Re-applying an applied input (same id, same content) changes nothing.
//!
//! # Example
//!
//! ```
//! use tollgate_core::*;
//!
//! let usd = Currency::from_code("USD")?;
//! let contoso = TenantId::new("contoso")?;
//! let us = Country::from_code("US")?;
//! let t = |s: i64| Timestamp::new(1_793_000_000 + s, 0);
//!
//! // A rate card: dial-out to the US at 0.0240/min, billed per started minute.
//! let price = Price::new("0.024".parse()?, Money::ZERO, Increments::default())?;
//! let version = RateCardVersion {
//!     version: "2026-11".into(),
//!     effective_from: t(0)?,
//!     dial_in_toll: PrefixTable::new(vec![])?,
//!     dial_in_toll_free: PrefixTable::new(vec![])?,
//!     dial_out: PrefixTable::new(vec![(Prefix::parse("1")?, DialOutRate { price, premium: false })])?,
//! };
//! let mut reference = Reference::default();
//! reference.put_rate_card(RateCard::new("usd".into(), usd, vec![version])?);
//! reference.put_tenant(Tenant::new(contoso.clone(), usd, "usd"));
//! reference.put_user(User::new(contoso.clone(), "alice", us));
//!
//! let rater = Rater::default();
//! let mut state = TenantState::default();
//! let mut out = Vec::new();
//! let fund = Input::Credit(CreditCommand {
//!     command_id: "c1".into(),
//!     tenant_id: contoso.clone(),
//!     occurred_at: t(1)?,
//!     body: CreditBody::Fund(LotFunding { lot_id: "lot-1".into(), amount: "10".parse()?, currency: usd, purchased_at: t(1)? }),
//! });
//! rater.apply(&reference, &mut state, fund, &mut out)?;
//!
//! let leg = |id: &str, at: i64, body: LegBody| -> Result<Input, Error> {
//!     Ok(Input::Leg(CallLegEvent {
//!         event_id: id.into(), tenant_id: contoso.clone(), conference_id: "m1".into(),
//!         call_id: "call-1".into(), leg_id: "leg-1".into(), organizer_id: "alice".into(),
//!         occurred_at: t(at)?, body,
//!     }))
//! };
//! let to = E164::parse("+12128675309")?;
//! let started = LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(to) };
//! rater.apply(&reference, &mut state, leg("e1", 10, LegBody::Started(started))?, &mut out)?;
//! let ended = LegEnded { duration: LegDuration::ConnectedSeconds(125), cause: DisconnectCause::Normal };
//! rater.apply(&reference, &mut state, leg("e2", 135, LegBody::Ended(ended))?, &mut out)?;
//!
//! // 125 s bill as 3 minutes: 3 x 0.024 = 0.072, rounded once to 0.07.
//! let Some(Output::Usage(usage)) = out.last() else { panic!("no usage") };
//! assert_eq!(usage.billable_seconds, 180);
//! assert_eq!(usage.charge.to_string(), "0.07");
//! assert_eq!(state.balance().to_string(), "9.93");
//! # Ok::<(), tollgate_core::Error>(())
//! ```

#![deny(clippy::float_arithmetic)]

pub mod error;
pub mod event;
mod fingerprint;
mod id;
pub mod instant;
pub mod ledger;
pub mod money;
pub mod number;
pub mod output;
pub mod policy;
pub mod rates;
pub mod rating;
pub mod reference;
mod region;
pub mod state;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod text;

pub use error::Error;
pub use event::{
    CallLegEvent, CreditBody, CreditCommand, DisconnectCause, Input, LegBody, LegDuration, LegEnded, LegKind,
    LegStarted, LotFunding,
};
pub use id::Id;
pub use instant::{Timestamp, YearMonth};
pub use ledger::{Ledger, Lot};
pub use money::{Currency, Money};
pub use number::{Country, E164};
pub use output::{
    BlockReason, CallType, Capability, CreditEvent, CreditEventKind, Decision, LedgerMovement, LegDecision,
    MovementKind, NumberType, Output, RatedUsage, UsageFlags, UsageOutcome,
};
pub use policy::{ConferencingDialout, DialoutPolicy, UserPstnDialout};
pub use rates::{DialOutRate, Increments, Prefix, PrefixTable, Price, RateCard, RateCardVersion};
pub use rating::{Applied, MAX_LEG_SECONDS, Rater, RatingConfig};
pub use reference::{
    AutoRecharge, Catalog, CutoffPolicy, LicenceModel, PoolSplit, Reference, Tenant, TenantId, UnpricedHandling, User,
};
pub use state::{OpenLeg, OpenLegs, ParkedEnds, TenantState, Totals};
pub use text::ShortText;

/// The hasher of the in-memory maps (dedup windows, open legs, reference data): foldhash with
/// a fixed seed. Their iteration order never reaches an output; the fixed seed keeps a
/// serialized [`TenantState`] the same bytes in every process. Ids crafted to collide could
/// slow one tenant's maps down, never change a result: they come from the call controllers
/// and the billing system, not from the public.
pub type FastState = foldhash::fast::FixedState;
