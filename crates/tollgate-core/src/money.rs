//! Exact money: [`Money`] wraps a [`Decimal`]; [`Currency`] knows its ISO 4217 minor unit.
//!
//! Every charge is rounded in exactly one place, [`Currency::round`], half away from zero, once
//! per leg. Nothing here can be built from a binary float.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::text::ShortText;

/// An amount of money in some currency (the currency is carried by the owner: a tenant, a rate
/// card). Exact decimal; may be negative (a balance in overdraft, a refund).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(Decimal);

/// `POW10[i]` = 10^i, for every power of ten a `u64` holds (i in 0..=19).
const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Numeric order, as `Decimal`'s, computed on the integer mantissas brought to one scale
/// (`Decimal` rescales 96-bit words in a loop; balances and thresholds of different scales are
/// compared on every debit). A mantissa is below 2^96, so one multiplied by at most 10^9 fits
/// an `i128`; scales further apart go to `Decimal`.
impl Ord for Money {
    #[inline]
    fn cmp(&self, other: &Money) -> Ordering {
        let (a, b) = (self.0, other.0);
        let (sa, sb) = (a.scale(), b.scale());
        match POW10[..=9].get(sa.abs_diff(sb) as usize).map(|&p| i128::from(p)) {
            Some(p) if sa <= sb => (a.mantissa() * p).cmp(&b.mantissa()),
            Some(p) => a.mantissa().cmp(&(b.mantissa() * p)),
            None => a.cmp(&b),
        }
    }
}

impl PartialOrd for Money {
    fn partial_cmp(&self, other: &Money) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Wraps an exact decimal.
    pub const fn new(amount: Decimal) -> Self {
        Money(amount)
    }

    /// The decimal value.
    pub const fn amount(self) -> Decimal {
        self.0
    }

    /// True when strictly above zero.
    #[inline]
    pub fn is_positive(self) -> bool {
        // Sign and zero tests on the bits (`Decimal`'s comparison rescales); -0 is not positive.
        !self.0.is_zero() && self.0.is_sign_positive()
    }

    /// True when strictly below zero.
    #[inline]
    pub fn is_negative(self) -> bool {
        !self.0.is_zero() && self.0.is_sign_negative()
    }

    /// The smaller of two amounts.
    pub fn min(self, other: Money) -> Money {
        if self <= other { self } else { other }
    }

    /// The amount as `to_string()` writes it, with at least `min_decimals` decimals (zeros
    /// added, never rounded: [`Currency::with_minor_units`] is this with the minor unit), in
    /// one exact-size allocation instead of `Decimal`'s digit-by-digit 96-bit division and the
    /// formatter (the wire edge writes five amounts per usage record). A property test checks
    /// it against `Decimal`'s `Display`.
    pub fn to_string_with_decimals(self, min_decimals: u32) -> String {
        self.text_with_decimals(min_decimals).as_str().to_owned()
    }

    /// [`Money::to_string_with_decimals`] on the stack.
    pub fn text_with_decimals(self, min_decimals: u32) -> ShortText {
        let d = self.0;
        let scale = d.scale();
        let magnitude = d.mantissa().unsigned_abs();
        let pad = min_decimals.saturating_sub(scale);
        let mut text = ShortText::new();
        // Past 10^19 (or when padding could overflow 96 bits), leave it to `Decimal`.
        let Some(digits) = u64::try_from(magnitude).ok().filter(|_| pad <= 4 && magnitude < 1 << 80) else {
            let mut wide = d;
            if scale < min_decimals {
                wide.rescale(min_decimals);
            }
            text.push_str_front(&wide.to_string());
            return text;
        };
        let decimals = (scale + pad) as usize;
        for _ in 0..pad {
            text.push_front(b'0');
        }
        let mut rest = digits;
        let mut written = 0usize;
        // The digits, zero-padded to the decimals plus one integer digit, the point inserted.
        while rest > 0 || written <= scale as usize {
            if written == scale as usize && decimals > 0 {
                text.push_front(b'.');
            }
            text.push_front(b'0' + (rest % 10) as u8);
            rest /= 10;
            written += 1;
        }
        if d.is_sign_negative() {
            text.push_front(b'-');
        }
        text
    }
}

impl FromStr for Money {
    type Err = Error;

    /// Parses a plain decimal string such as `"12.50"` or `"-0.0240"` (surrounding whitespace
    /// aside): an optional `-`, digits, and optionally a point followed by digits. Anything
    /// else `Decimal` would read is refused: exponents, a `+`, a point without digits on both
    /// sides, and `_` separators (`"1_00"`, a typo, read as 100).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(fraction) {
            return Err(Error::InvalidAmount(s.to_owned()));
        }
        Decimal::from_str_exact(s).map(|d| Money(d.normalize())).map_err(|_| Error::InvalidAmount(s.to_owned()))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({})", self.0)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 += rhs.0;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        self.0 -= rhs.0;
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

/// An ISO 4217 currency: its code and the number of decimals of its minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    minor_units: u8,
}

impl Currency {
    /// Parses an ISO 4217 code (case-insensitive). Codes and minor units come from the
    /// `iso_currency` crate's copy of the ISO 4217 list; a code that is not on it (`XYZ`), or
    /// one without a minor unit (gold `XAU`, "no currency" `XXX`), cannot hold money and is
    /// refused.
    pub fn from_code(code: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidCurrency(code.to_owned());
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(invalid());
        }
        let upper = [bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase(), bytes[2].to_ascii_uppercase()];
        let iso = std::str::from_utf8(&upper).ok().and_then(iso_currency::Currency::from_code).ok_or_else(invalid)?;
        let minor_units = iso.exponent().and_then(|e| u8::try_from(e).ok()).ok_or_else(invalid)?;
        Ok(Currency { code: upper, minor_units })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Built only from ASCII letters.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// The code's three ASCII letters, for a writer that copies them out.
    pub const fn code_bytes(&self) -> &[u8; 3] {
        &self.code
    }

    /// Decimals of the minor unit: 2 for USD/EUR/GBP, 0 for JPY, 3 for KWD.
    pub const fn minor_units(&self) -> u32 {
        self.minor_units as u32
    }

    /// The same amount written with at least this currency's decimals (`120` -> `120.00` in
    /// USD), for output. Never rounds: an amount with more decimals keeps them.
    pub fn with_minor_units(&self, amount: Money) -> Money {
        let mut d = amount.0;
        if d.scale() < self.minor_units() {
            d.rescale(self.minor_units());
        }
        Money(d)
    }

    /// `self.with_minor_units(amount).to_string()`, without the formatter (see
    /// [`Money::to_string_with_decimals`]).
    pub fn format(&self, amount: Money) -> String {
        amount.to_string_with_decimals(self.minor_units())
    }

    /// [`Currency::format`] on the stack.
    pub fn format_text(&self, amount: Money) -> ShortText {
        amount.text_with_decimals(self.minor_units())
    }

    /// Whether `amount` is a whole number of minor units (cents for USD, yen for JPY).
    pub fn is_whole_minor_units(&self, amount: Money) -> bool {
        amount.0.normalize().scale() <= self.minor_units()
    }

    /// **The** rounding point of tollgate: rounds an exact amount to this currency's minor
    /// unit, half away from zero. Called once per leg charge (through
    /// [`Currency::round_charge`], which gives its result on integers) and nowhere else.
    pub fn round(&self, amount: Decimal) -> Money {
        Money(amount.round_dp_with_strategy(self.minor_units(), RoundingStrategy::MidpointAwayFromZero))
    }

    /// A leg's charge: `fee + per_minute × seconds / 60` rounded by [`Currency::round`],
    /// computed on the integer mantissas (one `u64` division) instead of `Decimal`'s
    /// multiply, divide and round, each of which walks 96-bit words.
    ///
    /// The same value and the same scale as `self.round(fee + per_minute × seconds / 60)`
    /// (a property test compares them). `Decimal` cuts a quotient that does not end (a price
    /// not divisible by 3, say) after 28 or 29 digits before it rounds; the integer result is
    /// exactly rounded. The two agree because the amounts taken here are small: every
    /// mantissa and product fits a `u64`, the prices have at most 12 decimals and the currency
    /// at most 4. An amount that is not a half of the minor unit is then at least
    /// `1 / (120 × 10^(price decimals + 4))` away from one, and the cut moves it by less than
    /// a thousandth of that, so it cannot cross it. Any other amount (negative, larger, more
    /// decimals) takes the `Decimal` path.
    pub fn round_charge(&self, fee: Money, per_minute: Money, seconds: u32) -> Money {
        if seconds == 0 {
            return Money::ZERO;
        }
        match integer_charge(fee.0, per_minute.0, seconds, self.minor_units()) {
            Some(charge) => Money(charge),
            None => self.round(exact_charge(fee, per_minute, seconds)),
        }
    }
}

/// A leg's exact, unrounded charge: `fee + per_minute × seconds / 60`, zero when no second is
/// charged (an unanswered leg pays no fee). What [`Currency::round_charge`] rounds, and
/// `Price::exact_amount`.
pub(crate) fn exact_charge(fee: Money, per_minute: Money, seconds: u32) -> Decimal {
    if seconds == 0 {
        return Decimal::ZERO;
    }
    fee.0 + per_minute.0 * Decimal::from(seconds) / Decimal::from(60)
}

/// The most decimals a price or fee can have for [`integer_charge`] to take it: beyond, a
/// charge is computed with `Decimal`'s division, which rounds at 28 digits (what
/// [`crate::Price::MAX_DECIMALS`] refuses).
pub(crate) const EXACT_DECIMALS: u32 = 12;

/// [`Currency::round_charge`] on integers, `None` outside the bounds it is exact in.
///
/// With `s` the larger scale of the two prices, the exact amount is `n / (60 × 10^s)` where
/// `n = fee × 60 + per_minute × seconds` (both mantissas at scale `s`). It is computed in
/// `u64` (every everyday price), or in `u128` when a `u64` overflows: every amount the wire
/// edge admits (below 10^15, at most 12 decimals) keeps `n` below 10^37, so every charge of
/// admitted prices is computed here and rounded once. (`Decimal`, which answers beyond, would
/// round the largest twice: a sum or a quotient past 96 bits of mantissa is cut at its 28th
/// digit before the charge is rounded to the minor unit.)
fn integer_charge(fee: Decimal, per_minute: Decimal, seconds: u32, minor_units: u32) -> Option<Decimal> {
    if fee.is_sign_negative() || per_minute.is_sign_negative() || minor_units > 4 {
        return None;
    }
    charge_in::<u64>(fee, per_minute, seconds, minor_units)
        .or_else(|| wide_charge(fee, per_minute, seconds, minor_units))
}

/// [`charge_in`] in `u128`: out of line, as rare as prices of billions a minute.
#[cold]
#[inline(never)]
fn wide_charge(fee: Decimal, per_minute: Decimal, seconds: u32, minor_units: u32) -> Option<Decimal> {
    charge_in::<u128>(fee, per_minute, seconds, minor_units)
}

/// The unsigned integers [`charge_in`] computes with.
trait Word:
    Copy
    + Ord
    + From<u32>
    + TryFrom<i128>
    + TryInto<i128>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Rem<Output = Self>
{
    fn checked_mul(self, other: Self) -> Option<Self>;
    fn checked_add(self, other: Self) -> Option<Self>;
    /// 10^`exponent`, `None` past what the table holds.
    fn pow10(exponent: u32) -> Option<Self>;
}

macro_rules! word {
    ($t:ty) => {
        impl Word for $t {
            #[inline]
            fn checked_mul(self, other: Self) -> Option<Self> {
                <$t>::checked_mul(self, other)
            }
            #[inline]
            fn checked_add(self, other: Self) -> Option<Self> {
                <$t>::checked_add(self, other)
            }
            #[inline]
            fn pow10(exponent: u32) -> Option<Self> {
                POW10.get(exponent as usize).map(|&p| p.into())
            }
        }
    };
}
word!(u64);
word!(u128);

/// [`integer_charge`] in the integers `W` (non-negative prices), `None` when one overflows.
///
/// `Decimal` would give the amount the scale of the quotient `per_minute × seconds / 60` (see
/// below), or the fee's if larger; rounding leaves a scale at or below the minor unit as it is
/// and brings a larger one to the minor unit.
#[inline]
fn charge_in<W: Word>(fee: Decimal, per_minute: Decimal, seconds: u32, minor_units: u32) -> Option<Decimal> {
    let (fee_scale, price_scale) = (fee.scale(), per_minute.scale());
    let s = fee_scale.max(price_scale);
    if s > EXACT_DECIMALS {
        return None;
    }
    let (zero, three, sixty) = (W::from(0), W::from(3), W::from(60));
    let fee_units = W::try_from(fee.mantissa()).ok()?.checked_mul(W::pow10(s - fee_scale)?)?;
    // `per_minute × seconds` at the price's own scale: `Decimal`'s product, exact here.
    let product = W::try_from(per_minute.mantissa()).ok()?.checked_mul(W::from(seconds))?;
    let n = fee_units.checked_mul(sixty)?.checked_add(product.checked_mul(W::pow10(s - price_scale)?)?)?;
    // The quotient's scale in `Decimal`: the price's when 60 divides the product; else two
    // digits more (`Decimal` widens a quotient by 100 at a time), which ends it when 3 divides
    // the product; else it does not end.
    let quotient_scale = if product % sixty == zero {
        price_scale
    } else if product % three == zero {
        price_scale + 2
    } else {
        u32::MAX
    };
    let scale = fee_scale.max(quotient_scale);
    let (mantissa, scale) = if scale <= minor_units {
        // Exact in `scale` decimals (at least `s`): nothing to round.
        (n.checked_mul(W::pow10(scale - s)?)? / sixty, scale)
    } else {
        // Rounded to the minor unit, half away from zero (the amount is not negative).
        let (numerator, denominator) = match minor_units.checked_sub(s) {
            Some(up) => (n.checked_mul(W::pow10(up)?)?, sixty),
            None => (n, W::pow10(s - minor_units)?.checked_mul(sixty)?),
        };
        let (quotient, remainder) = (numerator / denominator, numerator % denominator);
        (if remainder >= denominator - remainder { quotient + W::from(1) } else { quotient }, minor_units)
    };
    Decimal::try_from_i128_with_scale(mantissa.try_into().ok()?, scale).ok()
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::from_code(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn rounds_half_away_from_zero_to_the_minor_unit() {
        let usd = Currency::from_code("usd").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(usd.round(m("0.125").amount()), m("0.13"));
        assert_eq!(usd.round(m("0.124999").amount()), m("0.12"));
        assert_eq!(usd.round(m("-0.125").amount()), m("-0.13"));
        assert_eq!(jpy.round(m("12.5").amount()), m("13"));
        assert_eq!(jpy.round(m("12.4999").amount()), m("12"));
        assert_eq!(kwd.round(m("1.0005").amount()), m("1.001"));
        assert_eq!(usd.code(), "USD");
        assert_eq!(usd.with_minor_units(m("120")).to_string(), "120.00");
        assert_eq!(usd.with_minor_units(m("0.024")).to_string(), "0.024");
        assert_eq!(jpy.with_minor_units(m("120")).to_string(), "120");
        assert!(usd.is_whole_minor_units(m("1.20")) && !usd.is_whole_minor_units(m("1.205")));
        assert!(!jpy.is_whole_minor_units(m("1.5")));
        assert_eq!(jpy.minor_units(), 0);
    }

    proptest::proptest! {
        /// Money orders exactly as `Decimal` does, across scales, signs and sizes.
        #[test]
        fn orders_like_decimal(
            a in proptest::num::i128::ANY,
            b in proptest::num::i128::ANY,
            sa in 0u32..=28,
            sb in 0u32..=28,
            shift_a in 0u32..=96,
            shift_b in 0u32..=96,
        ) {
            // Mantissas of every magnitude up to the 96 bits a Decimal holds.
            let mantissa = |m: i128, shift: u32| m >> (31 + shift.min(96));
            let x = Decimal::try_from_i128_with_scale(mantissa(a, shift_a), sa).unwrap();
            let y = Decimal::try_from_i128_with_scale(mantissa(b, shift_b), sb).unwrap();
            proptest::prop_assert_eq!(Money(x).cmp(&Money(y)), x.cmp(&y));
            // The same value at a larger scale, where it fits.
            if let Ok(same) = Decimal::try_from_i128_with_scale(mantissa(a, shift_a) * 10, sa + 1) {
                proptest::prop_assert_eq!(Money(x).cmp(&Money(same)), Ordering::Equal);
            }
        }
    }

    proptest::proptest! {
        /// The fast formatting writes what `Decimal`'s `Display` writes after the rescale, for
        /// every sign (negative zero included), scale and magnitude.
        #[test]
        fn formats_like_decimal(
            m in proptest::num::i128::ANY,
            shift in 31u32..=127,
            scale in 0u32..=28,
            min_decimals in 0u32..=6,
            negative_zero in proptest::bool::ANY,
        ) {
            let mut d = Decimal::try_from_i128_with_scale(m >> shift, scale).unwrap();
            if negative_zero {
                d = Decimal::from_parts(0, 0, 0, true, scale);
            }
            let mut wide = d;
            if scale < min_decimals {
                wide.rescale(min_decimals);
            }
            proptest::prop_assert_eq!(Money(d).to_string_with_decimals(min_decimals), wide.to_string());
            let usd = Currency::from_code("USD").unwrap();
            proptest::prop_assert_eq!(usd.format(Money(d)), usd.with_minor_units(Money(d)).to_string());
        }
    }

    #[test]
    fn formats_amounts_like_display() {
        let usd = Currency::from_code("USD").unwrap();
        assert_eq!(usd.format(m("120")), "120.00");
        assert_eq!(usd.format(m("0.024")), "0.024");
        assert_eq!(usd.format(m("-0.5")), "-0.50");
        assert_eq!(usd.format(Money::ZERO), "0.00");
        assert_eq!(Money::ZERO.to_string_with_decimals(0), "0");
        assert_eq!(m("0.0007").to_string_with_decimals(0), "0.0007");
        assert_eq!(m("-12").to_string_with_decimals(0), "-12");
    }

    #[test]
    fn refuses_exponents_and_garbage() {
        // Garbage, exponents, and what `Decimal` alone reads but the wire's plain decimals are
        // not: separators (a typo read as 100), a sign of +, a point without digits on one side.
        for text in ["1e3", "", "1.2.3", "NaN", "1_00", "1_000.00", "+5", ".5", "5.", "-.5", "-", "--1", "1.-5", "0x10"]
        {
            assert_eq!(text.parse::<Money>(), Err(Error::InvalidAmount(text.to_owned())), "{text:?}");
        }
        for (text, value) in [(" 12.50 ", "12.5"), ("-0.0240", "-0.024"), ("007", "7"), ("0.0", "0")] {
            assert_eq!(text.parse::<Money>().unwrap().to_string(), value, "{text:?}");
        }
        for code in ["US", "U$D"] {
            assert_eq!(Currency::from_code(code), Err(Error::InvalidCurrency(code.to_owned())), "{code}");
        }
    }

    #[test]
    fn refuses_codes_that_are_not_iso_4217_currencies() {
        for code in ["XYZ", "ABC", "USX", "XXX", "XAU", "XTS"] {
            assert_eq!(Currency::from_code(code), Err(Error::InvalidCurrency(code.to_owned())), "{code}");
        }
    }

    #[test]
    fn takes_minor_units_from_iso_4217() {
        for (code, minor_units) in
            [("USD", 2), ("eur", 2), ("GBP", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3), ("CLF", 4), ("XCG", 2)]
        {
            let currency = Currency::from_code(code).unwrap();
            assert_eq!(
                (currency.code(), currency.minor_units()),
                (code.to_uppercase().as_str(), minor_units),
                "{code}"
            );
        }
    }

    /// The integer charge is `Decimal`'s: the same value and the same scale (the changelog
    /// writes balances with their scale), for prices of up to 8 decimals and every minor unit.
    #[test]
    fn integer_charges_are_decimal_charges_value_and_scale() {
        use proptest::prelude::*;
        let currencies: Vec<Currency> =
            ["JPY", "USD", "KWD", "CLF"].iter().map(|c| Currency::from_code(c).unwrap()).collect();
        let amount = |mantissa: i64, scale: u32| Money::new(Decimal::new(mantissa, scale));
        let config = proptest::test_runner::Config { cases: 20_000, ..Default::default() };
        proptest::proptest!(config, |(
            fee in (0i64..1_000_000, 0u32..=6), price in (0i64..100_000_000, 0u32..=8),
            seconds in prop_oneof![0u32..=7_200, 0u32..=u32::MAX], currency in 0usize..4,
        )| {
            let (fee, per_minute, currency) = (amount(fee.0, fee.1), amount(price.0, price.1), currencies[currency]);
            let by_decimal = if seconds == 0 {
                Money::ZERO
            } else {
                currency.round(fee.amount() + per_minute.amount() * Decimal::from(seconds) / Decimal::from(60))
            };
            let charge = currency.round_charge(fee, per_minute, seconds);
            prop_assert_eq!((charge, charge.amount().scale()), (by_decimal, by_decimal.amount().scale()));
        });
    }

    #[test]
    fn integer_charges_round_half_away_from_zero_and_keep_short_scales() {
        let usd = Currency::from_code("USD").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        let charge =
            |c: &Currency, fee: &str, per_minute: &str, seconds| c.round_charge(m(fee), m(per_minute), seconds);
        // 0.03 × 50 / 60 = 0.025: half a cent, away from zero.
        assert_eq!(charge(&usd, "0", "0.03", 50).to_string(), "0.03");
        // 0.01 × 7 / 60 = 0.001166…: a quotient that does not end.
        assert_eq!(charge(&usd, "0.10", "0.01", 7).to_string(), "0.10");
        // 0.5 × 60 / 60 = 0.5 keeps its one decimal, as `Decimal` does.
        assert_eq!(charge(&usd, "0", "0.5", 60).to_string(), "0.5");
        assert_eq!(charge(&jpy, "0", "7", 90).to_string(), "11");
        assert_eq!(charge(&usd, "1", "1", 0), Money::ZERO);
        // Beyond the integer bounds, `Decimal` answers.
        assert_eq!(charge(&usd, "0", "0.0000000000001", 60).to_string(), "0.00");
        // Past a `u64`, the integers are `u128`'s: exact where `Decimal` would round twice
        // (its sum past 96 bits of mantissa is cut at the 28th digit: …0.0049999… became
        // …0.0050000… and then a cent more).
        assert_eq!(charge(&usd, "0", "1000000000000", u32::MAX).to_string(), "71582788250000000000");
        assert_eq!(charge(&usd, "800000000000000", "0.299999999997", 1).to_string(), "800000000000000.00");
        assert_eq!(charge(&jpy, "800000000000000", "29.999999999997", 1).to_string(), "800000000000000");
        assert_eq!(
            charge(&usd, "999999999999999.999999999999", "999999999999999.999999999999", 86_400).to_string(),
            "1441000000000000000.00"
        );
    }
}
