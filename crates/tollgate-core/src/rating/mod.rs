//! The rating function: (reference data, tenant state, input) -> (new state, outputs).
//!
//! [`Rater::apply`] checks what every input shares (tenant, duplicate, lateness) here, then
//! hands the input to the module of its concern:
//!
//! - `leg_start`: a leg's start (what prices and funds it, whether and how long it may run);
//! - `leg_end`: a leg's interims and end (debits, settlement, the rated usage record);
//! - `credit`: credit commands (funding, recharge results, adjustments);
//! - `context`: `Ctx`, the tenant's state while one input is applied, and the ledger
//!   operations they share (debits, thresholds, cutoff, pool, the debit trail).
//!
//! Every `match` on a leg kind or a capability names each variant: a new one does not compile
//! until each place has said how it is rated.

mod context;
mod credit;
pub use credit::check as check_credit;
mod leg_end;
mod leg_start;

use crate::event::{Input, LegBody};
use crate::fingerprint::fingerprint;
use crate::output::{LedgerMovement, Output};
use crate::reference::Catalog;
use crate::state::{KeyedId, TenantState};
use crate::{Error, Timestamp};
use context::{Ctx, Trail};

/// The longest a leg can last (meetings end after 24 h): longer legs are rated up to it and
/// flagged.
pub const MAX_LEG_SECONDS: u32 = 86_400;

/// Tunables of the rater (tollgate decisions that are not per tenant).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RatingConfig {
    /// How long (event time) applied ids and closed legs are remembered for deduplication
    /// (from their own time, or from the tenant's newest when they came late: see
    /// [`TenantState::kept_from`]),
    /// how long an `ended` waits for its `started`, and how late an input may be: one older
    /// than the tenant's newest applied event minus this is refused (`too_late`). Default 48 h.
    pub retention_seconds: u32,
}

impl Default for RatingConfig {
    fn default() -> Self {
        RatingConfig { retention_seconds: 48 * 3600 }
    }
}

/// What applying an input did (for metrics; the outputs say the rest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Applied {
    /// Applied; outputs (possibly none) were emitted.
    Processed,
    /// The same input was applied before: no effect.
    Duplicate,
    /// An `ended` arrived before its `started` and waits for it.
    Parked,
    /// An `interim` for a leg not started (the `ended` will carry the total).
    IgnoredBeforeStart,
    /// An event for a leg already closed (ended, blocked, or VoIP).
    IgnoredAfterClose,
}

impl Applied {
    /// A short label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Applied::Processed => "processed",
            Applied::Duplicate => "duplicate",
            Applied::Parked => "parked",
            Applied::IgnoredBeforeStart => "ignored_before_start",
            Applied::IgnoredAfterClose => "ignored_after_close",
        }
    }
}

/// Rates inputs. Holds no state of its own: all of it is in [`TenantState`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rater {
    config: RatingConfig,
}

impl Rater {
    /// A rater with the given tunables.
    pub const fn new(config: RatingConfig) -> Self {
        Rater { config }
    }

    /// Applies one input of a tenant to that tenant's state, appending outputs to `out`.
    ///
    /// Deterministic: the same state and input give the same new state and outputs. On `Err`
    /// neither `state` nor `out` was changed, with one exception: a `started` refused because
    /// its priced number is impossible ([`Error::ImpossibleNumber`]) closes the leg, so that
    /// its later events are ignored rather than parked for a start that will never come.
    pub fn apply<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Result<Applied, Error> {
        self.apply_with(catalog, state, input, out, None)
    }

    /// [`Rater::apply`], also appending to `movements` one [`LedgerMovement`] per change of
    /// the tenant's ledger (debits and refunds, funding, forfeits, adjustments): the debit
    /// trail. The outputs and the new state are exactly those of `apply`; on `Err` nothing is
    /// appended.
    pub fn apply_traced<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
        movements: &mut Vec<LedgerMovement>,
    ) -> Result<Applied, Error> {
        self.apply_with(catalog, state, input, out, Some(movements))
    }

    fn apply_with<C: Catalog + ?Sized>(
        &self,
        catalog: &C,
        state: &mut TenantState,
        input: Input,
        out: &mut Vec<Output>,
        movements: Option<&mut Vec<LedgerMovement>>,
    ) -> Result<Applied, Error> {
        let tenant_id = input.tenant_id().as_str();
        let tenant = catalog.tenant(tenant_id).ok_or_else(|| Error::UnknownTenant(tenant_id.to_owned()))?;
        let fingerprint = fingerprint(&input);
        // The input's own id, shared (not copied) by the dedup map, its retention queue and
        // the trail, with its key in the dedup map: computed once for the lookup and the insert.
        let id = KeyedId::new(input.id().clone());
        if let Some(&seen) = state.seen.get_key(id.key()) {
            return if seen == fingerprint {
                Ok(Applied::Duplicate)
            } else {
                Err(Error::DuplicateConflict(input.id().to_string()))
            };
        }
        let at = input.occurred_at();
        // Older than the retention window, or than what was forgotten under a shorter one: its
        // id may have been forgotten, so applying it could apply it twice. Refuse it instead
        // (allowed lateness = the retention window).
        let horizon = self.horizon(state.watermark).max(state.forgotten_before);
        if at < horizon {
            return Err(Error::TooLate { event_time: at.to_string(), horizon: horizon.to_string() });
        }
        // The currency the money is held in, pinned (or pinned anew) once the input applied.
        let currency = tenant.currency;
        let pin = state.currency != Some(currency);
        if pin
            && let Some(held) = state.currency
            && state.holds_money()
        {
            return Err(Error::CurrencyChanged {
                tenant: tenant_id.to_owned(),
                held: held.to_string(),
                reference: currency.to_string(),
            });
        }
        let trail = movements.map(|movements| Trail { movements, cause: id.id().clone(), next: 1 });
        let ctx = Ctx { tenant: &tenant, state, out, at, retention_seconds: self.config.retention_seconds, trail };
        let applied = match input {
            Input::Leg(event) => match event.body {
                LegBody::Started(started) => leg_start::started(catalog, ctx, event, started)?,
                LegBody::Interim { elapsed_seconds } => leg_end::interim(ctx, event, elapsed_seconds),
                LegBody::Ended(ended) => leg_end::ended(ctx, event, ended)?,
            },
            Input::Credit(command) => {
                credit::credit(ctx, command)?;
                Applied::Processed
            }
        };
        state.remember_applied(id, fingerprint, at);
        if pin {
            state.currency = Some(currency);
        }
        self.advance_watermark(state, at);
        Ok(applied)
    }

    /// The oldest event time still accepted when the newest applied is `watermark`.
    fn horizon(&self, watermark: Timestamp) -> Timestamp {
        horizon(watermark, self.config.retention_seconds)
    }

    fn advance_watermark(&self, state: &mut TenantState, at: Timestamp) {
        if at <= state.watermark {
            return;
        }
        state.watermark = at;
        let cutoff = self.horizon(at);
        state.forget_before(cutoff);
        state.totals.orphan_ends_dropped += state.parked_ends.expire_before(cutoff) as u64;
    }
}

/// The oldest event time a tenant whose newest applied event is at `watermark` still
/// accepts, and the time before which its retention windows keep nothing.
pub fn horizon(watermark: Timestamp, retention_seconds: u32) -> Timestamp {
    Timestamp::new((watermark.unix_seconds() - i64::from(retention_seconds)).max(0), 0).unwrap_or_default()
}
