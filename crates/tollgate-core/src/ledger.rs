//! The prepaid credit balance: lots consumed first-in first-out, expiring 12 months after
//! purchase, and a debt for balances below zero.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::money::Money;

/// How long a lot lives (RULES.md §5).
pub const LOT_VALIDITY_MONTHS: u32 = 12;

/// One funded lot.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Lot {
    /// Purchase id.
    pub lot_id: String,
    /// What was bought (a refund lot: the refund); any debt at the time was paid from it
    /// first. `None` in a lot persisted before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchased: Option<Money>,
    /// What is left of it.
    pub remaining: Money,
    /// Purchase instant.
    pub purchased_at: Timestamp,
    /// `purchased_at` + 12 months: from then on the remainder is forfeited.
    pub expires_at: Timestamp,
}

/// A tenant's credit ledger.
///
/// Invariant: `balance == sum(lots.remaining) - debt`, every lot has `remaining > 0`, and
/// `debt > 0` only when there is no lot (new money pays the debt first).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    lots: VecDeque<Lot>,
    debt: Money,
    balance: Money,
    /// No lot expires before this; `None` when not known (a ledger read back, or one whose
    /// lots were all gone at the last look). [`Ledger::expire`] is asked on every input and
    /// looks through the lots only once this is reached, instead of each time: a tenant
    /// holding thousands of unspent lots paid a look at each of them per input. A lot added
    /// lowers it; a lot consumed leaves it where it is, still a bound, made exact again by
    /// the next look. Not persisted, and not part of what a ledger is (equality, `Debug`).
    #[serde(skip)]
    expiry_floor: Option<Timestamp>,
}

/// Equal when the lots, the debt and the balance are: the expiry floor is bookkeeping.
impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        (&self.lots, self.debt, self.balance) == (&other.lots, other.debt, other.balance)
    }
}

impl Eq for Ledger {}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("lots", &self.lots)
            .field("debt", &self.debt)
            .field("balance", &self.balance)
            .finish()
    }
}

impl Ledger {
    /// The balance (negative in overdraft).
    pub fn balance(&self) -> Money {
        self.balance
    }

    /// Open lots, in consumption order.
    pub fn lots(&self) -> impl Iterator<Item = &Lot> {
        self.lots.iter()
    }

    /// What the balance is below zero, when no lot is left.
    pub fn debt(&self) -> Money {
        self.debt
    }

    /// A ledger as persisted: its lots in consumption order, its debt and its balance (read
    /// back from what [`Ledger::lots`], [`Ledger::debt`] and [`Ledger::balance`] gave).
    pub fn from_parts(lots: impl IntoIterator<Item = Lot>, debt: Money, balance: Money) -> Self {
        Ledger { lots: lots.into_iter().collect(), debt, balance, expiry_floor: None }
    }

    /// When the first of the lots expires (`None`: there is none): the exact floor.
    fn earliest_expiry(&self) -> Option<Timestamp> {
        self.lots.iter().map(|l| l.expires_at).min()
    }

    /// A lot expiring at `expires_at` was added: the floor is a bound still.
    fn lot_added(&mut self, expires_at: Timestamp) {
        self.expiry_floor = self.expiry_floor.map(|floor| floor.min(expires_at));
    }

    /// Adds money as a lot: it pays any debt first; the rest is kept in purchase order, first
    /// in, first out (a backdated purchase goes before the lots bought after it; lots bought
    /// at the same instant in the order they came). Expiry order is almost the same, but not
    /// quite: twelve months after 29 February is 28 February.
    pub fn credit(&mut self, lot_id: String, amount: Money, purchased_at: Timestamp) {
        debug_assert!(amount.is_positive());
        self.balance += amount;
        let paid = self.debt.min(amount);
        self.debt -= paid;
        let remaining = amount - paid;
        if remaining.is_positive() {
            let lot = Lot {
                lot_id,
                purchased: Some(amount),
                remaining,
                purchased_at,
                expires_at: purchased_at.plus_months(LOT_VALIDITY_MONTHS),
            };
            let at = self.lots.partition_point(|l| l.purchased_at <= lot.purchased_at);
            self.lot_added(lot.expires_at);
            self.lots.insert(at, lot);
        }
    }

    /// Takes `amount` first-in first-out; what the lots cannot cover becomes debt. A negative
    /// amount is a refund: it reduces the debt, then goes back to the lot being consumed (or a
    /// new lot bought at `at` when none is left).
    pub fn debit(&mut self, amount: Money, at: Timestamp) {
        if amount.is_negative() {
            let refund = -amount;
            self.balance += refund;
            let paid = self.debt.min(refund);
            self.debt -= paid;
            let rest = refund - paid;
            if rest.is_positive() {
                match self.lots.front_mut() {
                    Some(lot) => lot.remaining += rest,
                    None => {
                        let expires_at = at.plus_months(LOT_VALIDITY_MONTHS);
                        self.lot_added(expires_at);
                        self.lots.push_back(Lot {
                            lot_id: "refund".into(),
                            purchased: Some(rest),
                            remaining: rest,
                            purchased_at: at,
                            expires_at,
                        });
                    }
                }
            }
            return;
        }
        self.balance -= amount;
        // The usual case, one lot covering the debit and staying open: what the loop below
        // would do, with one `Decimal` subtraction instead of two and fewer comparisons.
        if let Some(lot) = self.lots.front_mut() {
            if lot.remaining > amount {
                lot.remaining -= amount;
                return;
            }
        }
        let mut left = amount;
        while left.is_positive() {
            let Some(lot) = self.lots.front_mut() else {
                self.debt += left;
                return;
            };
            let take = lot.remaining.min(left);
            lot.remaining -= take;
            left -= take;
            if !lot.remaining.is_positive() {
                self.lots.pop_front();
            }
        }
    }

    /// Removes every lot whose expiry is at or before `now` and returns them with what was
    /// left (the forfeited amount).
    pub fn expire(&mut self, now: Timestamp) -> Vec<Lot> {
        if self.expiry_floor.is_some_and(|floor| floor > now) {
            return Vec::new();
        }
        let earliest = self.earliest_expiry();
        if earliest.is_none_or(|earliest| earliest > now) {
            self.expiry_floor = earliest;
            return Vec::new();
        }
        let (expired, kept): (Vec<Lot>, Vec<Lot>) = self.lots.drain(..).partition(|l| l.expires_at <= now);
        self.lots = kept.into();
        self.expiry_floor = self.earliest_expiry();
        for lot in &expired {
            self.balance -= lot.remaining;
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }
    fn t(secs: i64) -> Timestamp {
        Timestamp::new(secs, 0).unwrap()
    }
    const DAY: i64 = 86_400;

    #[test]
    fn consumes_lots_first_in_first_out() {
        let mut l = Ledger::default();
        l.credit("a".into(), m("10"), t(0));
        l.credit("b".into(), m("5"), t(DAY));
        l.debit(m("12"), t(2 * DAY));
        assert_eq!(l.balance(), m("3"));
        let lots: Vec<(&str, Money)> = l.lots().map(|x| (x.lot_id.as_str(), x.remaining)).collect();
        assert_eq!(lots, vec![("b", m("3"))]);
    }

    /// First in, first out by purchase, even where a later purchase expires first: twelve
    /// months after 29 February is 28 February, so a lot bought on 29 February 2028 at
    /// 00:00 expires before one bought twelve hours earlier.
    #[test]
    fn consumes_lots_in_purchase_order_when_expiries_cross() {
        let mut l = Ledger::default();
        // 2028-02-28T12:00:00Z and 2028-02-29T00:00:00Z; the second arrives first.
        l.credit("second".into(), m("5"), t(1_835_395_200));
        l.credit("first".into(), m("5"), t(1_835_352_000));
        l.debit(m("1"), t(1_835_400_000));
        let lots: Vec<(&str, Money)> = l.lots().map(|x| (x.lot_id.as_str(), x.remaining)).collect();
        assert_eq!(lots, vec![("first", m("4")), ("second", m("5"))]);
        assert!(l.lots().nth(1).unwrap().expires_at < l.lots().next().unwrap().expires_at);
    }

    #[test]
    fn goes_into_debt_and_new_money_pays_it_first() {
        let mut l = Ledger::default();
        l.credit("a".into(), m("1"), t(0));
        l.debit(m("3"), t(10));
        assert_eq!(l.balance(), m("-2"));
        assert_eq!(l.lots().count(), 0);
        l.credit("b".into(), m("5"), t(20));
        assert_eq!(l.balance(), m("3"));
        assert_eq!(l.lots().next().map(|x| x.remaining), Some(m("3")));
    }

    #[test]
    fn expires_lots_twelve_months_after_purchase() {
        let mut l = Ledger::default();
        // 2026-01-15T00:00:00Z and 2026-06-01T00:00:00Z
        let jan = t(1_768_435_200);
        let jun = t(1_780_272_000);
        l.credit("jan".into(), m("10"), jan);
        l.credit("jun".into(), m("7"), jun);
        l.debit(m("4"), jun);
        let before = jan.plus_months(12);
        assert_eq!(before.to_string(), "2027-01-15T00:00:00Z");
        assert!(l.expire(t(before.unix_seconds() - 1)).is_empty());
        let gone = l.expire(before);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].lot_id.as_str(), gone[0].remaining), ("jan", m("6")));
        assert_eq!(l.balance(), m("7"));
    }

    #[test]
    fn refunds_reduce_debt_then_return_to_the_current_lot() {
        let mut l = Ledger::default();
        l.credit("a".into(), m("2"), t(0));
        l.debit(m("5"), t(1));
        l.debit(m("-1"), t(2));
        assert_eq!(l.balance(), m("-2"));
        l.debit(m("-3"), t(3));
        assert_eq!(l.balance(), m("1"));
        assert_eq!(l.lots().map(|x| x.remaining).collect::<Vec<_>>(), vec![m("1")]);
    }

    /// What `expire` forfeits, and the ledger after it, are what a look at every lot gives
    /// (the model: the same ledger with its expiry floor forgotten before each call), through
    /// purchases (backdated ones too), debits, refunds, restores and a clock that moves both
    /// ways around 29 February, where a later purchase can expire first.
    mod expiry_floor {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            Credit { cents: i64, days_back: i64 },
            Debit { cents: i64 },
            Refund { cents: i64 },
            Clock { hours: i64 },
            Restore,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (1..5_000i64, 0..400i64).prop_map(|(cents, days_back)| Op::Credit { cents, days_back }),
                (1..5_000i64).prop_map(|cents| Op::Debit { cents }),
                (1..500i64).prop_map(|cents| Op::Refund { cents }),
                (-200..2_000i64).prop_map(|hours| Op::Clock { hours }),
                Just(Op::Restore),
            ]
        }

        fn cents(c: i64) -> Money {
            Money::new(rust_decimal::Decimal::new(c, 2))
        }

        proptest! {
            #[test]
            fn expire_answers_as_a_look_at_every_lot(ops in prop::collection::vec(op(), 1..120)) {
                // 2028-02-28T00:00:00Z: a year later the clock passes 28 February 2029, the
                // expiry of lots bought on both 28 and 29 February 2028.
                let mut now = Timestamp::new(1_835_395_200, 0).unwrap();
                let mut ledger = Ledger::default();
                let mut model = Ledger::default();
                for (n, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Credit { cents: c, days_back } => {
                            let at = Timestamp::new(now.unix_seconds() - days_back * DAY, 0).unwrap();
                            ledger.credit(format!("lot-{n}"), cents(c), at);
                            model.credit(format!("lot-{n}"), cents(c), at);
                        }
                        Op::Debit { cents: c } => {
                            ledger.debit(cents(c), now);
                            model.debit(cents(c), now);
                        }
                        Op::Refund { cents: c } => {
                            ledger.debit(-cents(c), now);
                            model.debit(-cents(c), now);
                        }
                        Op::Clock { hours } => {
                            now = Timestamp::new(now.unix_seconds() + hours * 3_600, 0).unwrap();
                        }
                        Op::Restore => {
                            ledger = Ledger::from_parts(ledger.lots().cloned(), ledger.debt(), ledger.balance());
                        }
                    }
                    model.expiry_floor = None;
                    prop_assert_eq!(ledger.expire(now), model.expire(now));
                    prop_assert_eq!(&ledger, &model);
                    if let Some(floor) = ledger.expiry_floor {
                        prop_assert!(ledger.lots().all(|lot| lot.expires_at >= floor));
                    }
                }
            }
        }
    }
}
