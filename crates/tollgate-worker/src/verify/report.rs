//! The checker's verdict: per-tenant figures, the dead letters, and every violation found.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use tollgate_core::{Currency, Money};

/// What [`super::check`] found.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Report {
    /// No violation was found (`violations` is empty).
    pub ok: bool,
    /// Records read per topic.
    pub records: BTreeMap<String, u64>,
    /// One row per tenant seen in the inputs, the outputs or the changelog, by tenant id.
    pub tenants: Vec<TenantRow>,
    /// Every dead-lettered input, in source order.
    pub dead_letters: Vec<DeadLetterRow>,
    /// Broken invariants, each one line: `<tenant>: <what>`, or `<what>` when not about one
    /// tenant. Lists of ids are cut after [`LISTED`] entries.
    pub violations: Vec<String>,
    /// Conditions that make findings possibly transient (lag, deleted history); not
    /// violations.
    pub warnings: Vec<String>,
}

/// How many ids a violation lists before it says how many more there are.
pub const LISTED: usize = 20;

impl Report {
    /// True when no invariant is broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The row of `tenant`.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantRow> {
        self.tenants.iter().find(|row| row.tenant == tenant)
    }
}

/// One tenant's figures. Amounts are in the tenant's currency, at least to its minor unit.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct TenantRow {
    /// Tenant id.
    pub tenant: String,
    /// ISO 4217 code, from its outputs or its funding (empty when none says).
    pub currency: String,
    /// Legs with an applied start that need a usage (every kind but VoIP).
    pub legs: u64,
    /// VoIP legs with an applied start (no usage expected).
    pub voip_legs: u64,
    /// Distinct rated usages.
    pub usages: u64,
    /// Extra copies of its outputs (usages, decisions, credit events).
    pub duplicates: u64,
    /// Legs with neither a usage nor an open state.
    pub missing: u64,
    /// Legs open in the restored state.
    pub open_legs: u64,
    /// `ended` events in the restored state waiting for their start.
    pub parked_ends: u64,
    /// Distinct credit events.
    pub credit_events: u64,
    /// Dead-lettered inputs of the tenant (as far as they decode).
    pub dead_letters: u64,
    /// Its inputs not rated yet, left out of the check (0 on a quiescent pipeline).
    pub unrated: u64,
    /// Σ `charge` of the distinct usages.
    pub charges: Money,
    /// Σ `debited` of the open legs.
    pub open_debited: Money,
    /// Σ FUNDED + Σ RECHARGE_SUCCEEDED + Σ ADJUSTED − Σ LOT_EXPIRED.
    pub money_in: Money,
    /// Restored balance.
    pub balance: Money,
    /// Restored `totals.usage_charges`.
    pub usage_charges: Money,
    /// No violation is about this tenant.
    pub ok: bool,
}

/// One dead-lettered input.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct DeadLetterRow {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Error code.
    pub code: String,
    /// The input's event or command id, when its bytes decode to one.
    pub input_id: Option<String>,
    /// The input's tenant, when its bytes decode to one.
    pub tenant: Option<String>,
    /// Copies of the dead letter (more than one under at-least-once after a retry).
    pub copies: u64,
}

/// An amount to the currency's minor unit (`0.10`, `12`), as it is when the code is unknown.
pub(super) fn amount(currency: &str, money: Money) -> Money {
    Currency::from_code(currency).map_or(money, |c| c.with_minor_units(money))
}

/// A table: tenants, dead letters, warnings, violations, then the verdict.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read: Vec<String> = self.records.iter().map(|(topic, n)| format!("{topic} {n}")).collect();
        writeln!(f, "records read: {}", if read.is_empty() { "none".to_owned() } else { read.join(", ") })?;
        write_table(f, &self.tenants)?;
        if !self.dead_letters.is_empty() {
            writeln!(f, "dead letters ({}):", self.dead_letters.len())?;
            for d in &self.dead_letters {
                let id = d.input_id.as_deref().unwrap_or("(no id)");
                let copies = if d.copies > 1 { format!(" ({} copies)", d.copies) } else { String::new() };
                writeln!(f, "  {}:{}:{}  {}  {id}{copies}", d.topic, d.partition, d.offset, d.code)?;
            }
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        for violation in &self.violations {
            writeln!(f, "violation: {violation}")?;
        }
        if self.is_ok() {
            writeln!(f, "OK: no leg lost or charged twice, every balance exact")
        } else {
            writeln!(f, "FAILED: {} violations", self.violations.len())
        }
    }
}

/// The per-tenant table, columns sized to their contents.
fn write_table(f: &mut fmt::Formatter<'_>, rows: &[TenantRow]) -> fmt::Result {
    const HEAD: [&str; 14] = [
        "tenant",
        "currency",
        "legs",
        "usages",
        "dup",
        "missing",
        "open",
        "charges",
        "open debit",
        "money in",
        "balance",
        "dead",
        "unrated",
        "ok",
    ];
    let mut lines = vec![HEAD.map(str::to_owned).to_vec()];
    for r in rows {
        let money = |m: Money| amount(&r.currency, m).to_string();
        lines.push(vec![
            r.tenant.clone(),
            r.currency.clone(),
            r.legs.to_string(),
            r.usages.to_string(),
            r.duplicates.to_string(),
            r.missing.to_string(),
            r.open_legs.to_string(),
            money(r.charges),
            money(r.open_debited),
            money(r.money_in),
            money(r.balance),
            r.dead_letters.to_string(),
            r.unrated.to_string(),
            if r.ok { "ok" } else { "FAIL" }.to_owned(),
        ]);
    }
    let widths: Vec<usize> =
        (0..HEAD.len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| if c < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        writeln!(f, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
