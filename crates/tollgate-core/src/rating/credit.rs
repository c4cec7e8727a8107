//! Credit commands: funding, recharge results and adjustments.

use crate::Error;
use crate::event::{CreditBody, CreditCommand, LotFunding};
use crate::money::Money;
use crate::output::{CreditEventKind, MovementKind};

use super::context::Ctx;

/// How much later than the command that funds it a lot's purchase may be dated (the clocks of
/// the payment system and of the command's producer differ): 5 minutes.
const PURCHASE_CLOCK_SKEW_SECONDS: u32 = 300;

/// Whether `command` may apply to `tenant`, as [`credit`] checks it before anything changes:
/// credits enabled for a funding, the tenant's currency, an amount in whole minor units, a
/// lot not bought after the command. Anyone about to send a credit command can ask first
/// (`tollgate admin`).
///
/// # Errors
///
/// The refusal a worker would dead-letter the command with.
pub fn check(tenant: &crate::Tenant, command: &CreditCommand) -> Result<(), Error> {
    let check_currency = |currency: crate::Currency| {
        if currency == tenant.currency {
            Ok(())
        } else {
            Err(Error::CurrencyMismatch { expected: tenant.currency.to_string(), got: currency.to_string() })
        }
    };
    match &command.body {
        CreditBody::Fund(lot) | CreditBody::RechargeSucceeded(lot) => {
            // Refused rather than kept: the money would sit in a balance that blocks every
            // credit-funded leg (tollgate decision). Adjustments still apply.
            if !tenant.credits_enabled {
                return Err(Error::CreditsDisabled {
                    tenant: tenant.id.to_string(),
                    command: command.command_id.to_string(),
                });
            }
            check_currency(lot.currency)?;
            // A purchase dated after the command that funds it is a wrong date (a year typed
            // wrong, say): kept, the lot would expire years late and be spent after lots
            // bought later. A few minutes after is the two systems' clocks, not a wrong date:
            // refused, the money paid for would not arrive.
            if lot.purchased_at > command.occurred_at.plus_seconds(PURCHASE_CLOCK_SKEW_SECONDS) {
                return Err(Error::Invalid(format!(
                    "command {:?}: lot purchased at {}, after the command itself ({})",
                    command.command_id, lot.purchased_at, command.occurred_at
                )));
            }
            if !lot.amount.is_positive() || !tenant.currency.is_whole_minor_units(lot.amount) {
                return Err(Error::Invalid(format!(
                    "command {:?}: funded amount {} must be > 0 in whole {} minor units",
                    command.command_id, lot.amount, tenant.currency
                )));
            }
        }
        CreditBody::Adjust { amount, currency, .. } => {
            check_currency(*currency)?;
            if *amount == Money::ZERO || !tenant.currency.is_whole_minor_units(*amount) {
                return Err(Error::Invalid(format!(
                    "command {:?}: adjustment {amount} must be non-zero in whole {} minor units",
                    command.command_id, tenant.currency
                )));
            }
        }
        CreditBody::RechargeFailed { .. } => {}
    }
    Ok(())
}

/// A credit command: checked whole ([`check`]) before anything changes, then applied.
pub(super) fn credit(mut ctx: Ctx<'_>, command: CreditCommand) -> Result<(), Error> {
    check(ctx.tenant, &command)?;
    ctx.expire_lots();
    match command.body {
        CreditBody::Fund(lot) => fund(&mut ctx, lot, CreditEventKind::Funded),
        CreditBody::RechargeSucceeded(lot) => {
            ctx.state.recharge_failed = false;
            fund(&mut ctx, lot, CreditEventKind::RechargeSucceeded);
        }
        CreditBody::RechargeFailed { reason } => {
            // Not re-armed: one request per crossing. The trigger re-arms when the balance is
            // back at or above it; until then the request stands as failed.
            ctx.state.recharge_failed = ctx.state.recharge_pending;
            let amount = ctx.tenant.auto_recharge.map(|r| r.amount).unwrap_or_default();
            ctx.emit_credit(CreditEventKind::RechargeFailed, amount, reason);
        }
        CreditBody::Adjust { amount, reason, .. } => {
            ctx.state.totals.adjusted += amount;
            if amount.is_positive() {
                ctx.state.ledger.credit(command.command_id.into(), amount, ctx.at);
                ctx.moved(MovementKind::Adjustment, amount, "", "");
                ctx.emit_credit(CreditEventKind::Adjusted, amount, reason);
                ctx.after_balance_rose();
            } else {
                ctx.state.ledger.debit(-amount, ctx.at);
                ctx.moved(MovementKind::Adjustment, amount, "", "");
                ctx.emit_credit(CreditEventKind::Adjusted, amount, reason);
                ctx.after_balance_fell();
            }
        }
    }
    Ok(())
}

pub(super) fn fund(ctx: &mut Ctx<'_>, lot: LotFunding, kind: CreditEventKind) {
    ctx.state.totals.funded += lot.amount;
    ctx.state.ledger.credit(lot.lot_id.clone(), lot.amount, lot.purchased_at);
    ctx.moved(MovementKind::Funding, lot.amount, "", &lot.lot_id);
    ctx.emit_credit(kind, lot.amount, lot.lot_id);
    // A lot bought more than 12 months before the command is already expired: forfeited
    // before anything is re-armed or restored on its account, so that money which never was
    // spendable does not make the thresholds, the recharge request and the depletion event
    // fire a second time.
    ctx.expire_lots();
    ctx.after_balance_rose();
}
