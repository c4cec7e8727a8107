//! The demo's closing summary: legs by kind and outcome, unpriced legs against the metric,
//! rated charges against the ledgers' debits, credit events, dead letters, and per tenant the
//! money funded, charged and left.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_core::{Currency, Money, TenantState};
use tollgate_proto::v1;

use super::observe::Stats;
use super::traffic::Traffic;
use super::{DemoArgs, REFERENCE};

/// The value of an unlabelled counter in a Prometheus text rendering.
pub(super) fn counter_value(rendered: &str, name: &str) -> Option<u64> {
    rendered.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The closing summary, and whether it adds up. Everything in it follows from the seed and the
/// legs generated: the same `--seed` and `--legs` give the same text on every run.
pub(super) fn summary(
    args: &DemoArgs,
    stats: &Stats,
    states: &BTreeMap<String, TenantState>,
    traffic: &Traffic,
    legs: u64,
    unpriced_metric: Option<u64>,
) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "summary: seed {}, {legs} legs ({} input events), {} workers, {} partitions, {}",
        args.seed, traffic.events, args.workers, args.partitions, args.processing_guarantee
    );
    let _ = writeln!(o);
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (kind, outcome, _) in stats.usages.values() {
        *table.entry((kind.clone(), outcome.clone())).or_default() += 1;
    }
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "legs by kind", "outcome", "count");
    for ((kind, outcome), n) in &table {
        let _ = writeln!(o, "{kind:<24} {outcome:<24} {n:>8}");
    }
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "voip / app join", "allowed, not billed", stats.voip);
    let _ = writeln!(o, "{:<24} {:<24} {:>8}", "in-progress legs", "disconnect decisions", stats.disconnects);
    let _ = writeln!(o);
    // Unpriced: no rate matched the leg's number (usage flag `unpriced`), whatever became of
    // the leg; the same definition as the worker's tollgate_unpriced_legs_total.
    let free = stats.unpriced.get("rated free").copied().unwrap_or(0);
    let blocked = stats.unpriced.get("blocked").copied().unwrap_or(0);
    let unpriced = free + blocked;
    let metric_agrees = unpriced_metric == Some(unpriced);
    let _ = writeln!(
        o,
        "unpriced legs (no rate matched): {unpriced} ({free} rated free, {blocked} blocked); \
         tollgate_unpriced_legs_total {} {}",
        unpriced_metric.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        if metric_agrees { "ok" } else { "MISMATCH" }
    );
    let _ = writeln!(o);
    // Reconciliation: what the usage records charged equals what the ledgers debited.
    let mut debited: BTreeMap<String, Money> = BTreeMap::new();
    let mut open = 0usize;
    let reference: v1::ReferenceData = serde_json::from_str(REFERENCE).unwrap_or_default();
    let tenant_of: BTreeMap<&str, &v1::Tenant> = reference.tenants.iter().map(|t| (t.tenant_id.as_str(), t)).collect();
    let currency_of = |tenant: &str| tenant_of.get(tenant).map_or("???", |t| t.currency.as_str());
    for (tenant, state) in states {
        let in_flight: Money = state.open_legs.values().map(|l| l.debited).sum();
        open += state.open_legs.len();
        *debited.entry(currency_of(tenant).to_owned()).or_default() += state.totals.usage_charges - in_flight;
    }
    let currencies: BTreeSet<&String> = stats.charges.keys().chain(debited.keys()).collect();
    let mut adds_up = metric_agrees;
    let _ = writeln!(o, "{:<10} {:>16} {:>16}", "currency", "rated charges", "ledger debits");
    for c in currencies {
        let rated = stats.charges.get(c).copied().unwrap_or_default();
        let ledger = debited.get(c).copied().unwrap_or_default();
        let ok = rated == ledger;
        adds_up &= ok;
        let _ = writeln!(o, "{c:<10} {rated:>16} {ledger:>16} {}", if ok { "ok" } else { "MISMATCH" });
    }
    if open > 0 {
        let _ = writeln!(o, "({open} legs still in progress; their debits so far are excluded)");
    }
    let _ = writeln!(o);
    let credit: Vec<String> = stats.credit_events.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(o, "credit events: {}", credit.join(", "));
    let dead: Vec<String> = stats.dead_letters.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(o, "dead letters:  {}", if dead.is_empty() { "none".into() } else { dead.join(", ") });
    let _ = writeln!(o);
    // Per tenant: money in, what its legs were charged, and what is left.
    let _ = writeln!(o, "{:<12} {:<8} {:>14} {:>14} {:>14}", "tenant", "currency", "funded", "charges", "balance");
    let mut notes = Vec::new();
    for (tenant, state) in states {
        let currency = currency_of(tenant);
        // In the currency's minor units, as on the wire (5000.00, not 5000).
        let money =
            |amount: Money| Currency::from_code(currency).map_or_else(|_| amount.to_string(), |c| c.format(amount));
        let charges = stats.tenant_charges.get(tenant).copied().unwrap_or_default();
        let balance = state.balance();
        let negative = balance < Money::ZERO;
        let _ = writeln!(
            o,
            "{tenant:<12} {currency:<8} {:>14} {:>14} {:>14}{}",
            money(state.totals.funded),
            money(charges),
            money(balance),
            if negative { " *" } else { "" }
        );
        if negative {
            notes.push(overdrawn(tenant, tenant_of.get(tenant.as_str()).copied()));
        }
    }
    for note in notes {
        let _ = writeln!(o, "* {note}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        if adds_up {
            "summary adds up: rated charges = ledger debits, unpriced legs = tollgate_unpriced_legs_total"
        } else {
            "SUMMARY DOES NOT ADD UP"
        }
    );
    (out, adds_up)
}

/// Why a tenant's balance is below zero: its cutoff policy let calls go on after the credit
/// ran out. The overdraft is a debt that the next funding pays first, or, for a tenant
/// without credits (which cannot be funded), an adjustment settles.
fn overdrawn(tenant: &str, reference: Option<&v1::Tenant>) -> String {
    let settled = match reference {
        Some(t) if !t.credits_enabled => {
            "; it has no credits, so no funding can pay the debt: an adjustment settles it (tollgate admin adjust)"
        }
        _ => "; the next funding pays the debt first",
    };
    let why = match reference.map(|t| (t.cutoff_policy(), t.overdraft_limit.as_str())) {
        Some((v1::CutoffPolicy::Disconnect, limit)) => format!(
            "{tenant}: cutoff policy `disconnect` with an overdraft limit of {limit}: calls in progress \
             go on below zero until a debit takes the balance past -{limit}, then they are \
             disconnected"
        ),
        _ => format!(
            "{tenant}: cutoff policy `finish`: a call allowed at its start completes and is charged \
             in full even when the credit (or the subscription's pool) runs out during it, so the \
             balance can go below zero. New credit-funded calls are blocked until the balance is \
             above zero again"
        ),
    };
    format!("{why}{settled}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant without credits cannot be funded: the note names what settles its debt.
    #[test]
    fn an_overdrawn_tenant_is_told_what_settles_its_debt() {
        let funded = v1::Tenant { credits_enabled: true, ..v1::Tenant::default() };
        let without = v1::Tenant { credits_enabled: false, ..v1::Tenant::default() };
        assert!(overdrawn("a", Some(&funded)).ends_with("above zero again; the next funding pays the debt first."));
        assert!(overdrawn("b", Some(&without)).ends_with(
            "above zero again; it has no credits, so no funding can pay the debt: an adjustment settles it (tollgate admin adjust)."
        ));
    }
}
