//! E.164 numbers, countries and Zone A.
//!
//! A number is kept, priced and reported with exactly the digits it was received with. Its
//! country is decided by the number itself with libphonenumber's metadata (the `phonenumber`
//! crate), so shared calling codes are told apart: +1 416 is Canada, +1 787 is Puerto Rico,
//! +1 212 is the United States. The metadata also says whether the digits can be a number at
//! all ([`E164::is_possible`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::region::Verdict;
use crate::text::ShortText;

/// An ISO 3166-1 alpha-2 country or region code (`US`, `GB`), or [`Country::NON_GEOGRAPHIC`]
/// for numbers that belong to no country (satellite, international networks).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country([u8; 2]);

impl Country {
    /// `ZZ` ("unknown or unspecified" in ISO 3166 user space): never domestic, never Zone A.
    pub const NON_GEOGRAPHIC: Country = Country(*b"ZZ");

    /// Parses a two-letter code (case-insensitive).
    pub fn from_code(code: &str) -> Result<Self, Error> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(Error::InvalidCountry(code.to_owned())),
        }
    }

    /// Parses the ISO 3166-1 alpha-2 code of a country (case-insensitive), as a user's usage
    /// location must be: a code ISO does not assign is refused, `UK` (the United Kingdom is
    /// `GB`), `XX` and `ZZ` among them. Kept, such a location would match no destination:
    /// every domestic dial-out blocked by policy, every call flagged international. One
    /// user-assigned code is accepted: `XK`, Kosovo, which the European Union and
    /// libphonenumber (the country of +383 numbers) use. (The countries of numbers come from
    /// libphonenumber's regions and use [`Country::from_code`]: some of those, `AC` for one,
    /// are not ISO's.)
    pub fn from_iso_code(code: &str) -> Result<Self, Error> {
        let country = Self::from_code(code)?;
        if country.code() != "XK" {
            country.code().parse::<iso_country::Country>().map_err(|_| Error::InvalidCountry(code.to_owned()))?;
        }
        Ok(country)
    }

    /// The two-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }

    /// The code's two ASCII letters, for a writer that copies them out.
    pub const fn code_bytes(&self) -> &[u8; 2] {
        &self.0
    }

    /// Whether the country is one of the 44 Zone A countries and regions.
    pub fn is_zone_a(self) -> bool {
        ZONE_A.binary_search(&self.0).is_ok()
    }
}

/// Zone A (RULES.md §3), sorted for binary search.
const ZONE_A: [[u8; 2]; 44] = [
    *b"AT", *b"AU", *b"BE", *b"BG", *b"BR", *b"CA", *b"CH", *b"CN", *b"CZ", *b"DE", *b"DK", *b"EE", *b"ES", *b"FI",
    *b"FR", *b"GB", *b"GR", *b"HK", *b"HR", *b"HU", *b"IE", *b"IN", *b"IT", *b"JP", *b"KR", *b"LU", *b"MX", *b"MY",
    *b"NL", *b"NO", *b"NZ", *b"PL", *b"PR", *b"PT", *b"RO", *b"RU", *b"SE", *b"SG", *b"SI", *b"SK", *b"TH", *b"TW",
    *b"US", *b"ZA",
];

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Country {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Country::from_code(s)
    }
}

impl TryFrom<String> for Country {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Country::from_code(&value)
    }
}

impl From<Country> for String {
    fn from(value: Country) -> Self {
        value.code().to_owned()
    }
}

/// Most digits an E.164 number may have.
pub const MAX_DIGITS: u32 = 15;

/// An E.164 number as received: its digits (without `+`), the country it belongs to, and
/// whether it is a possible number.
///
/// Parsing happens once, at the edge (wire decoding); rating only compares digits and
/// countries. The digits are never rewritten: a rate prefix is matched against the digits the
/// controller sent, and the usage record reports them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164 {
    /// The digits as an integer (E.164 never starts with 0, so no digit is lost).
    digits: u64,
    len: u8,
    country: Country,
    possible: bool,
}

impl E164 {
    /// Parses `+<digits>`: a plus, then 1 to 15 digits, the first not 0; spaces, hyphens, dots
    /// and parentheses between them are ignored. Anything else is refused
    /// ([`Error::InvalidNumber`]).
    ///
    /// The digits are kept as they are. libphonenumber's metadata is used for two answers
    /// only: whether the digits are a possible number ([`E164::is_possible`]: a number that is
    /// not is still returned, so that the rater can refuse the leg it belongs to), and the
    /// country. The country of a plain number is answered from the metadata without
    /// libphonenumber's free-text parser, in well under a microsecond; a number whose national
    /// prefix the parser would strip goes through `phonenumber::parse`, whose country is taken
    /// (and its rewritten digits are not). An impossible number's country is its calling
    /// code's main country (`ZZ` when the code does not exist). Both answers depend on the
    /// digits alone, and each thread remembers them for the last numbers it parsed (1,024
    /// slots), so a number met again is not resolved again.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_ascii(text.trim().as_bytes()).ok_or_else(|| Error::InvalidNumber(text.to_owned()))
    }

    /// [`E164::parse`] of a text given as its bytes, without the surrounding whitespace;
    /// `None` where it refuses the text. Any byte that is not ASCII is refused, so the bytes
    /// need not be checked as UTF-8 first (the wire edge reads a number straight from a
    /// record this way, and leaves anything refused to the general decoder).
    pub fn parse_ascii(trimmed: &[u8]) -> Option<Self> {
        let rest = trimmed.strip_prefix(b"+")?;
        let mut buf = [b'+'; MAX_DIGITS as usize + 1];
        let mut len = 0usize;
        // The digits' value, read as they are scanned (at most 15 digits: no overflow).
        let mut digits = 0u64;
        for &b in rest {
            match b {
                b'0'..=b'9' if len < MAX_DIGITS as usize => {
                    len += 1;
                    buf[len] = b;
                    digits = digits * 10 + u64::from(b - b'0');
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                _ => return None,
            }
        }
        if len == 0 || buf[1] == b'0' {
            return None;
        }
        if let Some(known) = Known::recall(digits) {
            return Some(E164 { digits, len: len as u8, country: known.country, possible: known.possible });
        }
        // ASCII only.
        let canonical = std::str::from_utf8(&buf[..=len]).ok()?;
        let code = crate::region::calling_code(&canonical[1..]);
        let possible =
            code.is_some_and(|(code, code_len)| crate::region::is_possible_national(code, &canonical[1 + code_len..]));
        let main = || code.map_or(Country::NON_GEOGRAPHIC, |(code, _)| main_country_for_code(code));
        let country = match code {
            Some((code, code_len)) if possible => {
                match crate::region::parse_national(&canonical[1..], code, code_len) {
                    Verdict::Country(country) => country,
                    Verdict::Invalid => main(),
                    Verdict::Unsure => {
                        Self::parse_with_libphonenumber(canonical).map_or_else(|_| main(), |n| n.country)
                    }
                }
            }
            _ => main(),
        };
        Known { digits, country, possible }.remember();
        Some(E164 { digits, len: len as u8, country, possible })
    }

    /// Whether the number is a possible number for its calling code: the national number's
    /// length is one the code's regions use and its leading digits fit their general number
    /// pattern (libphonenumber's metadata). `+1234` and `+4477009` are not. A leg whose priced
    /// number is not possible is refused by the rater (`invalid_number`).
    pub const fn is_possible(&self) -> bool {
        self.possible
    }

    /// libphonenumber's own reading of `text` (`phonenumber::parse`): the digits as it
    /// rewrites them (a national prefix it recognises stripped) and the country. The reference
    /// of the fast path in the `region` module, and where [`E164::parse`] takes the country
    /// from when the fast path is unsure; its digits are never used for rating.
    pub(crate) fn parse_with_libphonenumber(text: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidNumber(text.to_owned());
        let trimmed = text.trim();
        if !trimmed.starts_with('+') {
            return Err(invalid());
        }
        let parsed = phonenumber::parse(None, trimmed).map_err(|_| invalid())?;
        let code = parsed.code().value();
        let national = parsed.national().value();
        let zeros = parsed.national().zeros();
        let e164 = format!("{code}{}{national}", "0".repeat(usize::from(zeros)));
        if e164.len() > MAX_DIGITS as usize || e164.len() < 3 {
            return Err(invalid());
        }
        let country = match parsed.country().id() {
            Some(id) => Country::from_code(id.as_ref()).map_err(|_| invalid())?,
            None => main_country_for_code(code),
        };
        let digits = e164.parse::<u64>().map_err(|_| invalid())?;
        Ok(E164 { digits, len: e164.len() as u8, country, possible: true })
    }

    /// Builds a number from trusted parts (tests, benchmarks): a possible number of `country`.
    pub fn from_parts(digits: &str, country: Country) -> Result<Self, Error> {
        let invalid = || Error::InvalidNumber(digits.to_owned());
        if digits.is_empty()
            || digits.len() > MAX_DIGITS as usize
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        Ok(E164 { digits: digits.parse().map_err(|_| invalid())?, len: digits.len() as u8, country, possible: true })
    }

    /// The country (or region) the number belongs to.
    pub const fn country(&self) -> Country {
        self.country
    }

    /// The digits as an integer.
    pub const fn digits(&self) -> u64 {
        self.digits
    }

    /// How many digits the number has.
    pub const fn len(&self) -> u32 {
        self.len as u32
    }

    /// Always false: an E.164 number has at least one digit.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th digit (0-based) from the left.
    pub fn digit(&self, i: u32) -> u8 {
        let shift = self.len() - 1 - i;
        ((self.digits / 10u64.pow(shift)) % 10) as u8
    }
}

/// What [`E164::parse`] answered for the digits it parsed lately in this thread: a
/// direct-mapped table of [`Known::SLOTS`] entries, a slot chosen by the digits.
///
/// The country and whether the number is possible depend on the digits alone (separators are
/// dropped before either is asked), so an answer remembered is the answer computed, and a
/// number met again (a meeting's bridge numbers price every dial-in leg) costs a multiply and
/// a compare instead of the metadata's patterns. A slot holds the last digits that mapped to
/// it; a number is recalled only when its slot holds exactly its digits.
#[derive(Clone, Copy)]
struct Known {
    /// The digits; 0 in a slot never written (no number is 0: the first digit is not).
    digits: u64,
    country: Country,
    possible: bool,
}

thread_local! {
    /// The table, allocated in a thread the first time it parses a number.
    static KNOWN: Box<[std::cell::Cell<Known>]> =
        (0..Known::SLOTS).map(|_| std::cell::Cell::new(Known::EMPTY)).collect();
}

impl Known {
    /// 1,024 slots of 16 bytes: 16 KiB per thread that parses numbers.
    const SLOTS: usize = 1 << Known::BITS;
    const BITS: u32 = 10;
    const EMPTY: Known = Known { digits: 0, country: Country::NON_GEOGRAPHIC, possible: false };

    /// The slot of `digits` (Fibonacci hashing: the top bits of a multiply).
    const fn slot(digits: u64) -> usize {
        (digits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Known::BITS)) as usize
    }

    /// The answer remembered for `digits`, if its slot holds them.
    fn recall(digits: u64) -> Option<Known> {
        Some(KNOWN.with(|table| table[Known::slot(digits)].get())).filter(|known| known.digits == digits)
    }

    /// Keeps this answer in its slot (replacing what was there).
    fn remember(self) {
        KNOWN.with(|table| table[Known::slot(self.digits)].set(self));
    }
}

/// The country of a number whose exact region libphonenumber cannot tell (its pattern matches
/// no region of the calling code, as with some Italian landlines): the calling code's main
/// country, or non-geographic for the +800/+870/+882-style global codes.
pub(crate) fn main_country_for_code(code: u16) -> Country {
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return Country::NON_GEOGRAPHIC;
    };
    let main = match regions.as_slice() {
        [only] => Some(*only),
        many => many.iter().copied().find(|m| m.is_main_country_for_code()),
    };
    main.and_then(|m| Country::from_code(m.id()).ok()).unwrap_or(Country::NON_GEOGRAPHIC)
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.digits)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} ({})", self.digits, self.country)
    }
}

impl TryFrom<String> for E164 {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        E164::parse(&value)
    }
}

/// `+` and the digits, as `to_string()` writes them, without the formatter (the wire edge
/// writes a number per usage record).
impl From<E164> for String {
    fn from(value: E164) -> Self {
        digit_string(value.digits, 0, "+")
    }
}

impl E164 {
    /// `+` and the digits, on the stack (see `From<E164> for String`).
    pub fn text(self) -> ShortText {
        digit_text(self.digits, 0, "+")
    }
}

/// `prefix` then `n` in decimal, zero-padded to at least `min_len` digits.
pub(crate) fn digit_string(n: u64, min_len: usize, prefix: &str) -> String {
    digit_text(n, min_len, prefix).as_str().to_owned()
}

/// [`digit_string`] on the stack.
pub(crate) fn digit_text(n: u64, min_len: usize, prefix: &str) -> ShortText {
    let mut text = ShortText::new();
    text.push_decimal_front(n, min_len);
    text.push_str_front(prefix);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A usage location is a country ISO assigns; the countries of numbers are whatever
    /// libphonenumber's regions are.
    #[test]
    fn a_usage_location_is_an_iso_country() {
        for code in ["GB", "us", "Pr", "ZA", "AQ", "XK"] {
            assert_eq!(Country::from_iso_code(code).unwrap().code(), code.to_ascii_uppercase());
        }
        for code in ["UK", "XX", "ZZ", "EU", "XA", "G", "GBR"] {
            assert_eq!(Country::from_iso_code(code), Err(Error::InvalidCountry(code.to_owned())), "{code}");
        }
        assert_eq!(E164::parse("+38344123456").unwrap().country().code(), "XK");
    }

    #[test]
    fn strings_like_display() {
        for text in ["+12128675309", "+442071838750", "+4930901820", "+999"] {
            let n =
                E164::parse(text).unwrap_or_else(|_| E164::from_parts(&text[1..], Country::NON_GEOGRAPHIC).unwrap());
            assert_eq!(String::from(n), n.to_string());
        }
        let max = E164::from_parts("999999999999999", Country::NON_GEOGRAPHIC).unwrap();
        assert_eq!(String::from(max), max.to_string());
    }

    /// A number parsed again is answered from the table (`Known`) with exactly what was
    /// computed, also when another number took its slot in between, and for an impossible
    /// number.
    #[test]
    fn a_number_parsed_again_is_what_it_was_whatever_shared_its_slot() {
        let gb = 442_071_838_750u64;
        let us = (12_128_000_000u64..12_129_000_000)
            .find(|d| Known::slot(*d) == Known::slot(gb))
            .expect("a US number in the slot of the GB one");
        let texts = [format!("+{gb}"), format!("+{us}"), "+1234".to_owned()];
        let first: Vec<E164> = texts.iter().map(|t| E164::parse(t).unwrap()).collect();
        assert_eq!(
            first.iter().map(|n| (n.country().to_string(), n.is_possible())).collect::<Vec<_>>(),
            [("GB".to_owned(), true), ("US".to_owned(), true), ("US".to_owned(), false),]
        );
        for _ in 0..3 {
            for (text, expected) in texts.iter().zip(&first) {
                assert!(
                    Known::recall(expected.digits()).is_none_or(|k| k.digits == expected.digits()
                        && k.country == expected.country()
                        && k.possible == expected.is_possible()),
                    "{text}: a remembered answer is the computed one"
                );
                assert_eq!(E164::parse(text).unwrap(), *expected, "{text}");
                assert_eq!(E164::parse(&text.replace('+', "+ ")).unwrap(), *expected, "{text} with a space");
            }
        }
        // The two share one slot: the one parsed last is the one kept.
        assert!(Known::recall(gb).is_none() && Known::recall(us).is_some_and(|k| k.country.code() == "US"));
    }

    fn country_of(n: &str) -> String {
        E164::parse(n).unwrap().country().to_string()
    }

    #[test]
    fn tells_nanp_countries_apart_by_area_code() {
        assert_eq!(country_of("+12128675309"), "US");
        assert_eq!(country_of("+14163402000"), "CA");
        assert_eq!(country_of("+17877221000"), "PR");
        assert_eq!(country_of("+18762345678"), "JM");
    }

    #[test]
    fn resolves_countries_of_other_codes() {
        assert_eq!(country_of("+442071838750"), "GB");
        assert_eq!(country_of("+4930901820"), "DE");
        assert_eq!(country_of("+33142685300"), "FR");
        assert_eq!(country_of("+81312345678"), "JP");
        assert_eq!(country_of("+61293744000"), "AU");
        assert_eq!(country_of("+2348031234567"), "NG");
        assert_eq!(country_of("+74951234567"), "RU");
        assert_eq!(country_of("+77011234567"), "KZ");
        // libphonenumber has no region for this valid Milan landline: the code's main country.
        assert_eq!(country_of("+390212345678"), "IT");
        assert_eq!(country_of("+80012345678"), "ZZ");
    }

    #[test]
    fn keeps_digits_and_formats_back() {
        let n = E164::parse("+44 20 7183 8750").unwrap();
        assert_eq!(n.to_string(), "+442071838750");
        assert_eq!(n.len(), 12);
        assert_eq!(n.digit(0), 4);
        assert_eq!(n.digit(11), 0);
    }

    #[test]
    fn keeps_the_digits_as_received() {
        // libphonenumber reads the 8 of this Russian toll-free number as a national prefix
        // and rewrites it to +7 001234567; the number is kept as dialled.
        let n = E164::parse("+78001234567").unwrap();
        assert_eq!((n.to_string().as_str(), n.country().code(), n.is_possible()), ("+78001234567", "RU", true));
        let n = E164::parse("+1 (212) 867-5309").unwrap();
        assert_eq!((n.to_string().as_str(), n.country().code(), n.is_possible()), ("+12128675309", "US", true));
    }

    #[test]
    fn tells_impossible_numbers() {
        // Too short for NANP, one digit short of a UK mobile, a trunk prefix left in, a code
        // that does not exist.
        for text in ["+1234", "+4477009", "+4407700900123", "+90033996043", "+999123", "+1"] {
            let n = E164::parse(text).unwrap();
            assert_eq!((n.to_string().as_str(), n.is_possible()), (text, false), "{text}");
        }
        assert_eq!(E164::parse("+4477009").unwrap().country().code(), "GB");
        assert_eq!(E164::parse("+999123").unwrap().country(), Country::NON_GEOGRAPHIC);
    }

    #[test]
    fn refuses_malformed_numbers() {
        for bad in ["", "12128675309", "+", "+abc", "+1234567890123456789", "+0123456789", "+1 800 FLOWERS", "+1;ext=2"]
        {
            assert!(E164::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn knows_zone_a() {
        let zone_a = "AT AU BE BG BR CA CH CN CZ DE DK EE ES FI FR GB GR HK HR HU IE IN IT JP KR \
                      LU MX MY NL NO NZ PL PR PT RO RU SE SG SI SK TH TW US ZA";
        let codes: Vec<&str> = zone_a.split_whitespace().collect();
        assert_eq!(codes.len(), 44);
        for c in &codes {
            assert!(Country::from_code(c).unwrap().is_zone_a(), "{c}");
        }
        for c in ["NG", "KZ", "AR", "JM", "AE", "ZZ", "IL", "TR"] {
            assert!(!Country::from_code(c).unwrap().is_zone_a(), "{c}");
        }
        let mut sorted = ZONE_A;
        sorted.sort();
        assert_eq!(sorted, ZONE_A);
    }
}
