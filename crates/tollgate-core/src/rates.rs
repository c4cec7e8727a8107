//! Rate cards: versioned per-minute prices, billing increments, and longest-prefix lookup.

use std::fmt;
use std::num::NonZeroU32;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::number::{E164, MAX_DIGITS};
use crate::{Error, Id, Timestamp};

/// Billing increments in seconds: the first increment, then each subsequent one.
///
/// The default is 60/60, every started minute billed (a tollgate decision: the reference
/// service bills "by the minute"). 1/1 is per-second billing, 60/1 a minimum minute then
/// per-second.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Increments {
    /// First increment (seconds).
    pub first: NonZeroU32,
    /// Every later increment (seconds).
    pub subsequent: NonZeroU32,
}

impl Default for Increments {
    fn default() -> Self {
        Increments::PER_MINUTE
    }
}

impl Increments {
    /// 60/60.
    pub const PER_MINUTE: Increments =
        Increments { first: NonZeroU32::MIN.saturating_add(59), subsequent: NonZeroU32::MIN.saturating_add(59) };

    /// The longest increment: an hour (**tollgate decision**; telephony bills by the second,
    /// the 6 s, the 30 s or the minute). A longer one is a mistake, milliseconds written as
    /// seconds (60000), say, that would bill a 1 s call for 16 hours: refused, not rated.
    pub const MAX_SECONDS: u32 = 3_600;

    /// Builds increments, refusing zero and increments longer than [`Increments::MAX_SECONDS`].
    pub fn new(first: u32, subsequent: u32) -> Result<Self, Error> {
        match (NonZeroU32::new(first), NonZeroU32::new(subsequent)) {
            (Some(f), Some(s)) if first <= Self::MAX_SECONDS && subsequent <= Self::MAX_SECONDS => {
                Ok(Increments { first: f, subsequent: s })
            }
            _ => Err(Error::InvalidIncrements { first, subsequent }),
        }
    }

    /// 1/1: every second billed as it is used (what the credit part of a pool leg is charged
    /// by: its billable seconds past the pool's, see [`Increments::longest_within`]).
    pub const PER_SECOND: Increments = Increments { first: NonZeroU32::MIN, subsequent: NonZeroU32::MIN };

    /// The longest billable duration (a point of the increment lattice: the first increment
    /// plus whole subsequent ones) of at most `seconds`; 0 when the first increment is longer.
    pub const fn longest_within(&self, seconds: u32) -> u32 {
        let first = self.first.get();
        let sub = self.subsequent.get();
        if seconds < first { 0 } else { first + (seconds - first) / sub * sub }
    }

    /// Billable seconds for a connected duration: 0 for a zero-length leg; otherwise the first
    /// increment plus the rest rounded up to a multiple of the subsequent increment.
    pub const fn billable_seconds(&self, duration: u32) -> u32 {
        let first = self.first.get();
        let sub = self.subsequent.get();
        if duration == 0 {
            0
        } else if duration <= first {
            first
        } else {
            let rest = duration - first;
            first.saturating_add(rest.div_ceil(sub).saturating_mul(sub))
        }
    }
}

/// A price: per minute, an optional connection fee, and increments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Price {
    /// Price per minute (>= 0).
    pub per_minute: Money,
    /// Charged once per answered leg (>= 0).
    pub connection_fee: Money,
    /// Billing increments.
    pub increments: Increments,
}

impl Price {
    /// The most decimals a price or fee may have. Every charge of such prices is computed
    /// exactly and rounded once ([`Currency::round_charge`]); a price with more decimals
    /// could be charged through `Decimal`'s division, which rounds its quotient at 28 digits
    /// before the charge is rounded to the minor unit: rounded twice, a 1 s leg at
    /// 0.2999999999999999999999999997 a minute (0.00499... exactly) was charged 0.01.
    pub const MAX_DECIMALS: u32 = crate::money::EXACT_DECIMALS;

    /// Builds a price, refusing negative amounts and amounts with more than
    /// [`Price::MAX_DECIMALS`] decimals (trailing zeros not counted).
    pub fn new(per_minute: Money, connection_fee: Money, increments: Increments) -> Result<Self, Error> {
        if per_minute.is_negative() || connection_fee.is_negative() {
            return Err(Error::NegativePrice);
        }
        for amount in [per_minute, connection_fee] {
            if amount.amount().normalize().scale() > Self::MAX_DECIMALS {
                return Err(Error::Invalid(format!("price {amount} has more than {} decimals", Self::MAX_DECIMALS)));
            }
        }
        Ok(Price { per_minute, connection_fee, increments })
    }

    /// The exact, unrounded amount for `billable` seconds of which `charged` are paid with
    /// credits: connection fee + per_minute x charged / 60. Zero when nothing was billable
    /// (an unanswered leg pays no connection fee) or when nothing is credit-charged.
    pub fn exact_amount(&self, charged_seconds: u32) -> Decimal {
        crate::money::exact_charge(self.connection_fee, self.per_minute, charged_seconds)
    }

    /// The rounded charge for `charged_seconds` credit-paid seconds: [`Price::exact_amount`]
    /// rounded by [`Currency::round`], computed on integers ([`Currency::round_charge`]).
    pub fn charge(&self, currency: &Currency, charged_seconds: u32) -> Money {
        currency.round_charge(self.connection_fee, self.per_minute, charged_seconds)
    }

    /// The longest billable duration (a value of the increment lattice, at most `cap`) whose
    /// charge is at most `available`; 0 when not even the first increment is affordable.
    pub fn max_affordable_seconds(&self, currency: &Currency, available: Money, cap: u32) -> u32 {
        let first = self.increments.first.get();
        let sub = self.increments.subsequent.get();
        // The answer is the largest lattice point that fits, capped. With non-negative prices
        // the charge never decreases with the duration, so when the lattice point at or above
        // the cap fits, every point below it does too and the answer is the cap: one charge
        // instead of the search below (the common case of a funded tenant).
        if first < cap && !self.per_minute.is_negative() && !self.connection_fee.is_negative() {
            let top = u64::from(first) + u64::from((cap - first).div_ceil(sub)) * u64::from(sub);
            let top = top.min(u64::from(u32::MAX)) as u32;
            if self.charge(currency, top) <= available {
                return cap;
            }
        }
        if self.charge(currency, first) > available {
            return 0;
        }
        if self.per_minute.amount().is_zero() || first >= cap {
            return cap;
        }
        // Estimate the number of subsequent increments, then correct for rounding.
        let per_increment = self.per_minute.amount() * Decimal::from(sub) / Decimal::from(60);
        let head = available.amount() - self.exact_amount(first);
        let max_steps = u64::from((cap - first).div_ceil(sub));
        let estimate = if per_increment.is_zero() {
            max_steps
        } else {
            (head / per_increment).floor().try_into().unwrap_or(0u64).min(max_steps)
        };
        let at = |steps: u64| first as u64 + steps * u64::from(sub);
        let fits = |steps: u64| {
            let secs = at(steps).min(u64::from(u32::MAX)) as u32;
            self.charge(currency, secs) <= available
        };
        let mut steps = estimate;
        while steps > 0 && !fits(steps) {
            steps -= 1;
        }
        while steps < max_steps && fits(steps + 1) {
            steps += 1;
        }
        at(steps).min(u64::from(cap)) as u32
    }
}

/// A rate prefix: leading E.164 digits, e.g. `4420`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    digits: u64,
    len: u8,
}

impl Prefix {
    /// Parses 1 to 15 digits (a leading `+` is tolerated).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || digits.len() > MAX_DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidPrefix(text.to_owned()));
        }
        Ok(Prefix {
            digits: digits.parse().map_err(|_| Error::InvalidPrefix(text.to_owned()))?,
            len: digits.len() as u8,
        })
    }

    /// How many digits.
    pub const fn len(&self) -> u32 {
        self.len as u32
    }

    /// Always false.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Whether `number` starts with this prefix (the obvious definition, used as the
    /// reference for the fast table).
    pub fn matches(&self, number: &E164) -> bool {
        number.to_string()[1..].starts_with(&self.to_string())
    }

    fn key_range(&self) -> (u64, u64) {
        let start = key_of(self.digits, self.len());
        (start, start + POW11[(MAX_DIGITS - self.len()) as usize])
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.digits, width = self.len as usize)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix({self})")
    }
}

impl TryFrom<String> for Prefix {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Prefix::parse(&value)
    }
}

/// The digits as `to_string()` writes them (leading zeros kept), without the formatter.
impl From<Prefix> for String {
    fn from(value: Prefix) -> Self {
        crate::number::digit_string(value.digits, usize::from(value.len), "")
    }
}

impl Prefix {
    /// The digits (leading zeros kept), on the stack.
    pub fn text(self) -> crate::ShortText {
        crate::number::digit_text(self.digits, usize::from(self.len), "")
    }
}

/// `POW11[i]` = 11^i, for i in 0..=15.
const POW11: [u64; MAX_DIGITS as usize + 1] = {
    let mut table = [1u64; MAX_DIGITS as usize + 1];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 11;
        i += 1;
    }
    table
};

/// `TRIPLES[n]` = the base-11 key of the three digits of `n` (zero-padded to three), each
/// written as `digit + 1`: `(a + 1) × 121 + (b + 1) × 11 + (c + 1)` for `n = abc`.
const TRIPLES: [u16; 1000] = {
    let mut table = [0u16; 1000];
    let mut n = 0;
    while n < 1000 {
        table[n] = ((n / 100 + 1) * 121 + (n / 10 % 10 + 1) * 11 + (n % 10 + 1)) as u16;
        n += 1;
    }
    table
};

/// Maps a digit string (`len` digits of `digits`, leading zeros counted by `len`) to its
/// place in a 15-position base-11 space, each digit written as `digit + 1` and missing
/// positions as 0. Every string that starts with `p` then falls in
/// `[key(p), key(p) + 11^(15 - len(p)))`, and a shorter string never falls in a longer
/// prefix's range: prefixes become nested or disjoint intervals. Computed three digits at a
/// time from the last: one division by 1000 and one table read per three digits.
fn key_of(digits: u64, len: u32) -> u64 {
    let len = len.min(MAX_DIGITS);
    let mut rest = digits;
    // The weight of the last digit (position len - 1): 11^(15 - len).
    let mut weight = POW11[(MAX_DIGITS - len) as usize];
    let mut key = 0u64;
    let mut left = len;
    while left >= 3 {
        key += u64::from(TRIPLES[(rest % 1000) as usize]) * weight;
        rest /= 1000;
        weight *= 1331;
        left -= 3;
    }
    // One or two leading digits: a triple's key without the missing digits' `+ 1`s.
    key + match left {
        2 => u64::from(TRIPLES[rest as usize] - 121) * weight,
        1 => u64::from(TRIPLES[rest as usize] - 132) * weight,
        _ => 0,
    }
}

/// A number's place in the key space: [`key_of`] of its digits.
fn key_of_number(number: &E164) -> u64 {
    key_of(number.digits(), number.len())
}

/// How many leading digits the bucket index of a table with `bounds` segment starts covers:
/// about 8 starts or fewer per bucket, at most 4 digits (11^4 buckets, 57 KiB of index).
fn index_digits(bounds: usize) -> u32 {
    (0..4).find(|&k| POW11[k as usize] * 8 >= bounds as u64).unwrap_or(4)
}

const NO_ENTRY: u32 = u32::MAX;

/// Longest-prefix lookup over E.164 prefixes.
///
/// The nested prefix intervals are flattened once, at build time, into sorted disjoint
/// segments labelled with their innermost (longest) prefix, so a lookup is one binary search
/// over a flat `Vec<u64>` whatever the number of prefixes. A bucket index on the first few
/// digits (up to four) narrows that search to the few segments of the number's bucket, so a
/// lookup in a large table touches two or three cache lines instead of one per halving.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<(Prefix, T)>", into = "Vec<(Prefix, T)>")]
#[serde(bound(serialize = "T: Clone + Serialize", deserialize = "T: Deserialize<'de>"))]
pub struct PrefixTable<T> {
    entries: Vec<(Prefix, T)>,
    bounds: Vec<u64>,
    labels: Vec<u32>,
    /// Keys per bucket: 11^(15 - index digits).
    bucket_width: u64,
    /// `index[b]` = how many segment starts lie before bucket `b`; one more entry at the end.
    index: Vec<u32>,
}

impl<T> PrefixTable<T> {
    /// Builds the table; a prefix listed twice is an error.
    pub fn new(mut entries: Vec<(Prefix, T)>) -> Result<Self, Error> {
        entries.sort_by(|a, b| a.0.key_range().0.cmp(&b.0.key_range().0).then(a.0.len.cmp(&b.0.len)));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::DuplicatePrefix(w[0].0.to_string()));
        }
        let mut bounds = vec![0u64];
        let mut labels = vec![NO_ENTRY];
        let mark = |pos: u64, label: u32, bounds: &mut Vec<u64>, labels: &mut Vec<u32>| {
            if bounds.last() == Some(&pos) {
                if let Some(last) = labels.last_mut() {
                    *last = label;
                }
            } else {
                bounds.push(pos);
                labels.push(label);
            }
        };
        // Open intervals, outermost first: (end, label).
        let mut open: Vec<(u64, u32)> = Vec::new();
        for (i, (prefix, _)) in entries.iter().enumerate() {
            let (start, end) = prefix.key_range();
            while let Some(&(top_end, _)) = open.last() {
                if top_end > start {
                    break;
                }
                open.pop();
                let label = open.last().map_or(NO_ENTRY, |o| o.1);
                mark(top_end, label, &mut bounds, &mut labels);
            }
            mark(start, i as u32, &mut bounds, &mut labels);
            open.push((end, i as u32));
        }
        while let Some((top_end, _)) = open.pop() {
            let label = open.last().map_or(NO_ENTRY, |o| o.1);
            mark(top_end, label, &mut bounds, &mut labels);
        }
        let digits = index_digits(bounds.len());
        let bucket_width = POW11[(MAX_DIGITS - digits) as usize];
        let mut index = Vec::with_capacity(POW11[digits as usize] as usize + 1);
        let mut before = 0usize;
        for bucket in 0..=POW11[digits as usize] {
            let start = bucket * bucket_width;
            while before < bounds.len() && bounds[before] < start {
                before += 1;
            }
            index.push(before as u32);
        }
        Ok(PrefixTable { entries, bounds, labels, bucket_width, index })
    }

    /// The entry with the longest prefix of `number`.
    pub fn lookup(&self, number: &E164) -> Option<&(Prefix, T)> {
        let key = key_of_number(number);
        let bucket = (key / self.bucket_width) as usize;
        let (lo, hi) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        // `bounds[0] == 0`, so some start <= key lies at or before `lo` (or inside the bucket).
        let segment = lo + self.bounds[lo..hi].partition_point(|b| *b <= key) - 1;
        match self.labels[segment] {
            NO_ENTRY => None,
            label => self.entries.get(label as usize),
        }
    }

    /// The same answer as [`PrefixTable::lookup`] by a linear scan: the reference the fast
    /// lookup is tested against.
    pub fn lookup_linear(&self, number: &E164) -> Option<&(Prefix, T)> {
        self.entries.iter().filter(|(p, _)| p.matches(number)).max_by_key(|(p, _)| p.len())
    }

    /// All entries, sorted by prefix.
    pub fn entries(&self) -> &[(Prefix, T)] {
        &self.entries
    }

    /// How many prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T> fmt::Debug for PrefixTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixTable").field("prefixes", &self.entries.len()).finish()
    }
}

impl<T> TryFrom<Vec<(Prefix, T)>> for PrefixTable<T> {
    type Error = Error;
    fn try_from(value: Vec<(Prefix, T)>) -> Result<Self, Self::Error> {
        PrefixTable::new(value)
    }
}

impl<T: Clone> From<PrefixTable<T>> for Vec<(Prefix, T)> {
    fn from(value: PrefixTable<T>) -> Self {
        value.entries
    }
}

/// A dial-out rate row.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DialOutRate {
    /// The price.
    pub price: Price,
    /// Premium destinations never draw from the subscription pool.
    pub premium: bool,
}

/// One version of a rate card, in force from `effective_from` until the next one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RateCardVersion {
    /// Label copied into rated usage.
    pub version: Id,
    /// When this version starts to apply (inclusive), by leg start time.
    pub effective_from: Timestamp,
    /// Dial-in prices for toll bridge numbers, by bridge-number prefix.
    pub dial_in_toll: PrefixTable<Price>,
    /// Dial-in prices for toll-free bridge numbers, by bridge-number prefix.
    pub dial_in_toll_free: PrefixTable<Price>,
    /// Dial-out prices by destination prefix.
    pub dial_out: PrefixTable<DialOutRate>,
}

/// A rate card: a currency and its versions, sorted by effective-from.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RateCard {
    /// Card id, referenced by tenants.
    pub id: String,
    /// Currency of every price on the card.
    pub currency: Currency,
    versions: Vec<RateCardVersion>,
}

impl RateCard {
    /// Builds a card; versions are sorted by effective-from, and two versions may not start at
    /// the same instant.
    pub fn new(id: String, currency: Currency, mut versions: Vec<RateCardVersion>) -> Result<Self, Error> {
        versions.sort_by_key(|v| v.effective_from);
        if let Some(w) = versions.windows(2).find(|w| w[0].effective_from == w[1].effective_from) {
            return Err(Error::DuplicateVersion(w[1].version.to_string()));
        }
        Ok(RateCard { id, currency, versions })
    }

    /// The version in force at `at` (the leg's start); `None` before the first version.
    pub fn version_at(&self, at: Timestamp) -> Option<&RateCardVersion> {
        let n = self.versions.partition_point(|v| v.effective_from <= at);
        n.checked_sub(1).map(|i| &self.versions[i])
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> &[RateCardVersion] {
        &self.versions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::number::Country;

    fn n(digits: &str) -> E164 {
        E164::from_parts(digits, Country::NON_GEOGRAPHIC).unwrap()
    }

    /// A price of more than 12 decimals could be charged through a division that rounds
    /// before the charge is rounded: refused. Trailing zeros do not count.
    #[test]
    fn prices_of_more_than_twelve_decimals_are_refused() {
        let per_minute = |text: &str| text.parse::<Money>().unwrap();
        let minute = Increments::new(60, 60).unwrap();
        let refused = Price::new(per_minute("0.2999999999999999999999999997"), Money::ZERO, minute).unwrap_err();
        assert_eq!(
            (refused.code(), refused.to_string()),
            ("invalid", "invalid input: price 0.2999999999999999999999999997 has more than 12 decimals".to_owned())
        );
        let fee = Price::new(Money::ZERO, per_minute("0.0000000000001"), minute).unwrap_err();
        assert_eq!(fee.to_string(), "invalid input: price 0.0000000000001 has more than 12 decimals");
        let twelve = Price::new(per_minute("0.123456789012"), per_minute("0.1000000000000000"), minute).unwrap();
        assert_eq!((twelve.per_minute, twelve.connection_fee), (per_minute("0.123456789012"), per_minute("0.1")));
    }

    #[test]
    fn billable_seconds_follow_the_increments() {
        // (first, subsequent, duration, billable)
        let table = [
            (60, 60, 0, 0),
            (60, 60, 1, 60),
            (60, 60, 60, 60),
            (60, 60, 61, 120),
            (60, 60, 119, 120),
            (60, 60, 3601, 3660),
            (1, 1, 0, 0),
            (1, 1, 61, 61),
            (60, 1, 1, 60),
            (60, 1, 61, 61),
            (30, 6, 31, 36),
            (30, 6, 36, 36),
            (30, 6, 37, 42),
        ];
        for (first, sub, duration, billable) in table {
            let inc = Increments::new(first, sub).unwrap();
            assert_eq!(inc.billable_seconds(duration), billable, "{first}/{sub} {duration}s");
        }
        assert_eq!(Increments::default(), Increments::new(60, 60).unwrap());
        assert!(Increments::new(0, 60).is_err());
        // At most an hour each: 60000 (milliseconds meant) would bill a 1 s call for 16 h 40 min.
        assert_eq!(Increments::new(3_600, 3_600).unwrap().billable_seconds(1), 3_600);
        for (first, subsequent) in [(60_000, 60), (60, 3_601), (u32::MAX, 1)] {
            let refused = Increments::new(first, subsequent).unwrap_err();
            assert_eq!(refused, Error::InvalidIncrements { first, subsequent });
        }
    }

    #[test]
    fn prefixes_convert_to_strings_like_display() {
        for text in ["1", "4420", "0", "007", "123456789012345", "0000"] {
            let p = Prefix::parse(text).unwrap();
            assert_eq!((String::from(p), p.to_string()), (text.to_owned(), text.to_owned()));
        }
    }

    #[test]
    fn finds_the_longest_prefix() {
        let table = PrefixTable::new(vec![
            (Prefix::parse("1").unwrap(), 'a'),
            (Prefix::parse("1212").unwrap(), 'b'),
            (Prefix::parse("44").unwrap(), 'c'),
            (Prefix::parse("447").unwrap(), 'd'),
            (Prefix::parse("4420").unwrap(), 'e'),
            (Prefix::parse("44207").unwrap(), 'f'),
            (Prefix::parse("9").unwrap(), 'g'),
        ])
        .unwrap();
        let at = |d: &str| table.lookup(&n(d)).map(|e| e.1);
        assert_eq!(at("12128675309"), Some('b'));
        assert_eq!(at("12138675309"), Some('a'));
        assert_eq!(at("442071838750"), Some('f'));
        assert_eq!(at("442081838750"), Some('e'));
        assert_eq!(at("447911123456"), Some('d'));
        assert_eq!(at("441481123456"), Some('c'));
        assert_eq!(at("33142685300"), None);
        assert_eq!(at("999"), Some('g'));
        // A number shorter than a prefix is not matched by it.
        assert_eq!(at("4420"), Some('e'));
        assert_eq!(at("442"), Some('c'));
        assert!(PrefixTable::new(vec![(Prefix::parse("1").unwrap(), 1), (Prefix::parse("1").unwrap(), 2)]).is_err());
    }

    /// The key of a digit string, one digit at a time: the reference for [`key_of`].
    fn key_of_digits(digits: &str) -> u64 {
        let mut key = 0u64;
        for (i, b) in digits.bytes().take(MAX_DIGITS as usize).enumerate() {
            key += u64::from(b - b'0' + 1) * 11u64.pow(MAX_DIGITS - 1 - i as u32);
        }
        key
    }

    proptest::proptest! {
        /// A number's key, three digits at a time, is the key of its digits one at a time,
        /// for every length from 1 to 15; so is a prefix's, leading zeros included.
        #[test]
        fn a_numbers_key_is_the_key_of_its_digits(first in 1u8..=9, rest in proptest::collection::vec(0u8..=9, 0..15)) {
            let digits: String =
                std::iter::once(first).chain(rest).map(|d| char::from(b'0' + d)).collect();
            proptest::prop_assert_eq!(key_of_number(&n(&digits)), key_of_digits(&digits));
            let prefix = format!("0{}", &digits[..digits.len().min(14)]);
            let parsed = Prefix::parse(&prefix).unwrap();
            proptest::prop_assert_eq!(parsed.key_range().0, key_of_digits(&prefix));
        }
    }

    /// Large tables use a bucket index of up to four digits: check every index size against a
    /// plain set of prefixes (the longest prefix of the number that is in the set).
    #[test]
    fn bucket_index_agrees_with_a_prefix_set() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for count in [3usize, 50, 700, 6_000, 15_000] {
            let mut set = std::collections::BTreeSet::new();
            while set.len() < count {
                let len = 1 + next(7);
                let p: String =
                    (0..len).map(|i| char::from(b'0' + (if i == 0 { 1 + next(9) } else { next(10) }) as u8)).collect();
                set.insert(p);
            }
            let prefixes: Vec<String> = set.iter().cloned().collect();
            let table =
                PrefixTable::new(prefixes.iter().map(|p| (Prefix::parse(p).unwrap(), p.clone())).collect()).unwrap();
            for i in 0..4_000 {
                let mut digits = if i % 2 == 0 { prefixes[next(count as u64) as usize].clone() } else { String::new() };
                let len = 3 + next(13) as usize;
                while digits.len() < len {
                    digits.push(char::from(b'0' + next(10) as u8));
                }
                if digits.starts_with('0') {
                    digits.replace_range(..1, "9");
                }
                let expected = (1..=digits.len()).rev().map(|l| &digits[..l]).find(|p| set.contains(*p));
                assert_eq!(table.lookup(&n(&digits)).map(|e| e.1.as_str()), expected, "{digits} in {count}");
            }
        }
    }

    #[test]
    fn picks_the_version_in_force_at_leg_start() {
        let empty = |v: &str, at: i64| RateCardVersion {
            version: v.into(),
            effective_from: Timestamp::new(at, 0).unwrap(),
            dial_in_toll: PrefixTable::new(vec![]).unwrap(),
            dial_in_toll_free: PrefixTable::new(vec![]).unwrap(),
            dial_out: PrefixTable::new(vec![]).unwrap(),
        };
        let card =
            RateCard::new("c".into(), Currency::from_code("USD").unwrap(), vec![empty("v2", 200), empty("v1", 100)])
                .unwrap();
        let at = |s: i64| card.version_at(Timestamp::new(s, 0).unwrap()).map(|v| v.version.as_str());
        assert_eq!(at(99), None);
        assert_eq!(at(100), Some("v1"));
        assert_eq!(at(199), Some("v1"));
        assert_eq!(at(200), Some("v2"));
        assert_eq!(at(10_000), Some("v2"));
    }

    #[test]
    fn max_affordable_duration_is_the_longest_affordable_lattice_point() {
        let usd = Currency::from_code("USD").unwrap();
        let m = |s: &str| s.parse::<Money>().unwrap();
        let per_min = Price::new(m("0.10"), m("0"), Increments::default()).unwrap();
        assert_eq!(per_min.max_affordable_seconds(&usd, m("1.00"), 86_400), 600);
        assert_eq!(per_min.max_affordable_seconds(&usd, m("1.05"), 86_400), 600);
        assert_eq!(per_min.max_affordable_seconds(&usd, m("0.09"), 86_400), 0);
        assert_eq!(per_min.max_affordable_seconds(&usd, m("0"), 86_400), 0);
        assert_eq!(per_min.max_affordable_seconds(&usd, m("1000"), 86_400), 86_400);
        let with_fee = Price::new(m("0.10"), m("0.25"), Increments::default()).unwrap();
        assert_eq!(with_fee.max_affordable_seconds(&usd, m("1.00"), 86_400), 420);
        // Per second at 0.07/min: 432 s cost 0.504, rounded 0.50; 433 s cost 0.51.
        let per_sec = Price::new(m("0.07"), m("0"), Increments::new(1, 1).unwrap()).unwrap();
        assert_eq!(per_sec.max_affordable_seconds(&usd, m("0.50"), 86_400), 432);
        let free = Price::new(m("0"), m("0"), Increments::default()).unwrap();
        assert_eq!(free.max_affordable_seconds(&usd, m("0"), 86_400), 86_400);
    }
}
