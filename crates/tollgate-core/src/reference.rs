//! Reference data: tenants, users and rate cards, and the [`Catalog`] the rater reads them
//! through.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::FastState;
use crate::money::{Currency, Money};
use crate::number::Country;
use crate::policy::DialoutPolicy;
use crate::rates::RateCard;
use crate::{Error, Id};

/// A tenant id: non-empty, without a `/`. It is also the Kafka key of every tenant-scoped
/// record, and the first part of every id made from it (`<tenant>/<leg>`, the user key
/// `<tenant>/<user>`, ...): with a `/` of its own, tenant `a/b` with leg `c` and tenant `a`
/// with leg `b/c` would share a usage id, and a downstream that drops repeated ids would drop
/// one of the two charges.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Id);

impl TenantId {
    /// Wraps a non-empty id without a `/`.
    pub fn new(id: impl Into<Id>) -> Result<Self, Error> {
        let TenantId(id) = Self::stored(id.into())?;
        // A byte loop: a tenant id is short, and this runs for every input.
        if id.bytes().any(|b| b == b'/') {
            return Err(Error::Invalid(format!(
                "tenant id {:?} contains '/', which separates the tenant from the rest of the ids made from it",
                id.as_str()
            )));
        }
        Ok(TenantId(id))
    }

    /// A tenant id as tollgate wrote it itself (read back from its serde form: the
    /// changelog's parked ends, for one): not blank, a `/` accepted. An earlier release
    /// accepted such ids, and refusing one it stored would stall its partition's restore; new
    /// ids come in through [`TenantId::new`].
    fn stored(id: Id) -> Result<Self, Error> {
        // `trim().is_empty()`, stopping at the first non-whitespace character.
        if id.chars().all(char::is_whitespace) {
            return Err(Error::Invalid("tenant id is empty".into()));
        }
        Ok(TenantId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    /// The serde form: see [`TenantId::stored`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        TenantId::stored(Id::from(value))
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0.into()
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What happens to in-progress credit-funded legs when the balance runs out (tollgate
/// decision, per tenant).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum CutoffPolicy {
    /// A leg allowed at its start completes and is charged in full; the balance may go
    /// negative.
    #[default]
    Finish,
    /// When a debit takes the balance below -overdraft limit, every in-progress credit-funded
    /// leg gets a disconnect decision.
    Disconnect,
}

/// What happens to a leg that no rate matches (tollgate decision, per tenant).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum UnpricedHandling {
    /// Allow, charge zero, flag `unpriced` (the reference service's FREECALL).
    #[default]
    Free,
    /// Block with reason `no_rate`.
    Reject,
}

/// How a leg that crosses the end of the monthly subscription pool is paid (tollgate
/// decision, per tenant).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum PoolSplit {
    /// Pooled minutes at zero charge while the pool lasts, the rest charged to credits, per
    /// billable minute.
    #[default]
    PerMinute,
    /// A leg that starts while the pool has minutes is pooled in full, even past the pool's
    /// end (the month's usage may then exceed the allowance).
    FinishInPool,
}

/// A user's conferencing licence model.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum LicenceModel {
    /// Every PSTN leg is charged to credits.
    #[default]
    PayPerMinute,
    /// Toll dial-in included; Zone A non-premium dial-out drawn from the monthly pool first.
    Subscription,
}

/// Auto-recharge settings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct AutoRecharge {
    /// A recharge is requested when the balance falls strictly below this amount.
    pub trigger: Money,
    /// The amount requested.
    pub amount: Money,
}

/// A tenant, as rating needs it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Tenant {
    /// The id.
    pub id: TenantId,
    /// Currency of the balance and of every charge.
    pub currency: Currency,
    /// Without credits, credit-funded legs are blocked.
    pub credits_enabled: bool,
    /// Optional auto-recharge.
    pub auto_recharge: Option<AutoRecharge>,
    /// Low-balance thresholds, highest first.
    pub low_balance_thresholds: Vec<Money>,
    /// How far below zero the balance may go under [`CutoffPolicy::Disconnect`] (>= 0).
    pub overdraft_limit: Money,
    /// In-call cutoff policy.
    pub cutoff: CutoffPolicy,
    /// Tenant-wide dial-out policy for users without an assignment.
    pub global_dialout_policy: Option<DialoutPolicy>,
    /// Subscription licences: 60 pooled dial-out minutes each per UTC month.
    pub subscription_licences: u32,
    /// How a leg crossing the end of the pool is paid.
    pub pool_split: PoolSplit,
    /// What to do with legs no rate matches.
    pub unpriced: UnpricedHandling,
    /// The rate card pricing this tenant's legs.
    pub rate_card_id: Id,
}

impl Tenant {
    /// A tenant with credits enabled and every other setting at its default: no auto-recharge,
    /// no thresholds, no overdraft, finish, global default policy, no subscriptions, unpriced
    /// legs free.
    pub fn new(id: TenantId, currency: Currency, rate_card_id: impl Into<Id>) -> Self {
        Tenant {
            id,
            currency,
            credits_enabled: true,
            auto_recharge: None,
            low_balance_thresholds: Vec::new(),
            overdraft_limit: Money::ZERO,
            cutoff: CutoffPolicy::Finish,
            global_dialout_policy: None,
            subscription_licences: 0,
            pool_split: PoolSplit::PerMinute,
            unpriced: UnpricedHandling::Free,
            rate_card_id: rate_card_id.into(),
        }
    }

    /// Checks the invariants the rater relies on and sorts thresholds highest first.
    pub fn validated(mut self) -> Result<Self, Error> {
        if self.overdraft_limit.is_negative() {
            return Err(Error::Invalid(format!("tenant {}: overdraft limit is negative", self.id)));
        }
        if let Some(r) = self.auto_recharge {
            // What is requested is what will be paid: a funding in whole minor units.
            if !r.amount.is_positive() || !self.currency.is_whole_minor_units(r.amount) {
                return Err(Error::Invalid(format!(
                    "tenant {}: auto-recharge amount {} must be > 0 in whole {} minor units",
                    self.id, r.amount, self.currency
                )));
            }
        }
        self.low_balance_thresholds.sort_by(|a, b| b.cmp(a));
        self.low_balance_thresholds.dedup();
        Ok(self)
    }

    /// Pooled dial-out minutes per month.
    pub fn pool_minutes(&self) -> u32 {
        self.subscription_licences.saturating_mul(60)
    }
}

/// A user, as rating needs it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct User {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The id.
    pub id: String,
    /// Usage location: decides what "domestic" means.
    pub usage_location: Country,
    /// Assigned dial-out policy; `None` falls back to the tenant's global policy.
    pub dialout_policy: Option<DialoutPolicy>,
    /// Licence model.
    pub licence: LicenceModel,
    /// Whether toll-free dial-in to this user's meetings is allowed (default true).
    pub allow_toll_free_dial_in: bool,
}

impl User {
    /// A pay-per-minute user with no policy assignment and toll-free dial-in allowed.
    pub fn new(tenant_id: TenantId, id: impl Into<String>, usage_location: Country) -> Self {
        User {
            tenant_id,
            id: id.into(),
            usage_location,
            dialout_policy: None,
            licence: LicenceModel::PayPerMinute,
            allow_toll_free_dial_in: true,
        }
    }
}

/// Read access to reference data. The offline rater uses [`Reference`]; the Kafka worker
/// implements it over its live tables.
///
/// What a lookup hands out is the implementation's: [`Reference`], which does not change
/// while an input is rated, lends a reference; a catalog that changes under its readers hands
/// out a counted one ([`Arc`]).
pub trait Catalog {
    /// What [`Catalog::tenant`] hands out.
    type TenantRef<'a>: Deref<Target = Tenant>
    where
        Self: 'a;
    /// What [`Catalog::user`] hands out.
    type UserRef<'a>: Deref<Target = User>
    where
        Self: 'a;
    /// What [`Catalog::rate_card`] hands out.
    type RateCardRef<'a>: Deref<Target = RateCard>
    where
        Self: 'a;
    /// A tenant by id.
    fn tenant(&self, tenant: &str) -> Option<Self::TenantRef<'_>>;
    /// A user of a tenant.
    fn user(&self, tenant: &str, user: &str) -> Option<Self::UserRef<'_>>;
    /// A rate card by id.
    fn rate_card(&self, rate_card: &str) -> Option<Self::RateCardRef<'_>>;
}

/// An in-memory, immutable-by-default set of reference data.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    tenants: HashMap<String, Arc<Tenant>, FastState>,
    users: HashMap<String, HashMap<String, Arc<User>, FastState>, FastState>,
    rate_cards: HashMap<String, Arc<RateCard>, FastState>,
}

impl Reference {
    /// Adds or replaces a tenant.
    pub fn put_tenant(&mut self, tenant: Tenant) {
        self.tenants.insert(tenant.id.as_str().to_owned(), Arc::new(tenant));
    }

    /// Adds or replaces a user.
    pub fn put_user(&mut self, user: User) {
        self.users.entry(user.tenant_id.as_str().to_owned()).or_default().insert(user.id.clone(), Arc::new(user));
    }

    /// Adds or replaces a rate card.
    pub fn put_rate_card(&mut self, card: RateCard) {
        self.rate_cards.insert(card.id.clone(), Arc::new(card));
    }

    /// Tenant ids, sorted.
    pub fn tenant_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

impl Catalog for Reference {
    type TenantRef<'a> = &'a Tenant;
    type UserRef<'a> = &'a User;
    type RateCardRef<'a> = &'a RateCard;

    fn tenant(&self, tenant: &str) -> Option<&Tenant> {
        self.tenants.get(tenant).map(|t| &**t)
    }

    fn user(&self, tenant: &str, user: &str) -> Option<&User> {
        self.users.get(tenant).and_then(|u| u.get(user)).map(|u| &**u)
    }

    fn rate_card(&self, rate_card: &str) -> Option<&RateCard> {
        self.rate_cards.get(rate_card).map(|c| &**c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant id with a `/` that an earlier release stored reads back (a restore must not
    /// stall on it); a new one is refused. A blank one is refused either way.
    #[test]
    fn a_stored_tenant_id_with_a_slash_reads_back_and_a_new_one_is_refused() {
        let stored: TenantId = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(stored.as_str(), "a/b");
        assert_eq!(TenantId::new("a/b").unwrap_err().code(), "invalid");
        let blank = serde_json::from_str::<TenantId>("\" \"").unwrap_err();
        assert!(blank.to_string().starts_with("invalid input: tenant id is empty"), "{blank}");
    }
}
