//! The fast path of [`E164::parse`](crate::E164::parse): libphonenumber's answer for a plain
//! `+<digits>` number without running its general-purpose parser.
//!
//! `phonenumber::parse` accepts free text (RFC 3966 URIs, extensions, vanity letters, national
//! prefixes, carrier codes) and keeps its compiled patterns in one process-wide cache of 100
//! regexes behind a mutex: 1.4 to 11 µs a number, more than rating the leg. For the common
//! input, a `+`, digits and maybe spaces, what it does reduces to:
//!
//! 1. the calling code is the shortest prefix of 1 to 3 digits that the metadata knows;
//! 2. the *source region* is found by `validator::source_for`: a code's only region, or, for a
//!    shared code, the first of its regions (main region first) whose `leading_digits` pattern
//!    matches the start of the national number, or, for a region without that pattern, whose
//!    general pattern and one of its number-type patterns match it;
//! 3. a national prefix or carrier code is stripped when the region's rules match;
//! 4. the country is the source region of the final national number.
//!
//! This module does exactly that with the same metadata and patterns, each compiled once to a
//! DFA searched anchored at the start (a `find` starting at 0 is an anchored match; see
//! [`Matcher`]); a run of regions told apart by `leading_digits` is one multi-pattern DFA,
//! whose lowest matching pattern is the first region in libphonenumber's order. Where step 3
//! would change the number, or anything else falls outside the plain case, it answers
//! [`Verdict::Unsure`] and the caller runs the full parser: the result is libphonenumber's in
//! every case. Unit tests compare both paths over generated numbers for every shared code.
//!
//! Tables are built per calling code on first use (no I/O: the metadata is compiled into the
//! `phonenumber` crate) and never change afterwards.
//!
//! [`is_possible_national`] answers the other question rating asks of the metadata: whether
//! the digits received can be a number at all (see `is_possible`). `E164::parse` finds the
//! calling code once ([`calling_code`]) and asks both questions with it.

use std::sync::{LazyLock, OnceLock};

use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

use crate::number::{Country, MAX_DIGITS, main_country_for_code};

/// What [`parse_national`] found: the country libphonenumber would give the number, or that
/// it would refuse it, or that the full parser has to decide.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// libphonenumber would accept the number, with this country.
    Country(Country),
    /// libphonenumber would refuse it.
    Invalid,
    /// Not a case the fast path decides: run the full parser.
    Unsure,
}

/// What the fast path found for a whole text ([`parse`]: the tests compare it, digits and
/// all, with libphonenumber's reading).
#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fast {
    /// libphonenumber would accept the number with these digits and this country.
    Number {
        /// The E.164 digits.
        digits: u64,
        /// How many.
        len: u8,
        /// Its country.
        country: Country,
    },
    /// libphonenumber would refuse it.
    Invalid,
    /// Not a case the fast path decides: run the full parser.
    Unsure,
}

/// Longest national number the fast path sees: 15 digits minus a one-digit code.
const MAX_NATIONAL: usize = MAX_DIGITS as usize - 1;

/// The fast path of a whole text (`trimmed`: without surrounding whitespace; spaces between
/// the digits are dropped). [`E164::parse`](crate::E164::parse) scans the text itself and
/// comes in at [`parse_national`]; the tests hold this whole path to libphonenumber's.
#[cfg(test)]
pub(crate) fn parse(trimmed: &str) -> Fast {
    let Some(rest) = trimmed.strip_prefix('+') else {
        return Fast::Unsure;
    };
    // Digits and spaces only; spaces are dropped by libphonenumber's normalization, and with
    // any other character (punctuation, letters, a second plus) its parser may take another
    // route (RFC 3966, extensions, vanity numbers).
    let mut buf = [0u8; MAX_DIGITS as usize];
    let mut n = 0usize;
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' if n < buf.len() => {
                buf[n] = b;
                n += 1;
            }
            b' ' => {}
            _ => return Fast::Unsure,
        }
    }
    // Fewer than three digits is no viable number; longer than E.164 is left to the parser.
    if n < 3 {
        return if n == 0 { Fast::Unsure } else { Fast::Invalid };
    }
    let digits = &buf[..n];
    if digits[0] == b'0' {
        return Fast::Invalid;
    }
    // ASCII digits: valid UTF-8.
    let Ok(digits) = std::str::from_utf8(digits) else {
        return Fast::Unsure;
    };
    match calling_code(digits).map(|(code, code_len)| parse_national(digits, code, code_len)) {
        Some(Verdict::Country(country)) => {
            Fast::Number { digits: number_of(digits.as_bytes()), len: digits.len() as u8, country }
        }
        Some(Verdict::Unsure) => Fast::Unsure,
        Some(Verdict::Invalid) | None => Fast::Invalid,
    }
}

/// The fast path after the scan: `digits` are E.164 digits (ASCII digits, the first not 0,
/// at most 15) whose first `code_len` are the calling code `code` ([`calling_code`]).
/// [`E164::parse`](crate::E164::parse) comes here directly, with the code it found for
/// [`is_possible_national`].
pub(crate) fn parse_national(digits: &str, code: u16, code_len: usize) -> Verdict {
    if digits.len() < 3 {
        return Verdict::Invalid;
    }
    let Some(table) = CODES.table(code) else {
        return Verdict::Unsure;
    };
    let national = &digits[code_len..];
    let significant = national.trim_start_matches('0');
    let source = table.source_for(significant);
    let strip = match source {
        Source::Region(i) => table.regions[i].strip.as_ref(),
        Source::NonGeographic => table.non_geographic_strip.as_ref(),
        Source::None => None,
        Source::Unsure => return Verdict::Unsure,
    };
    if strip.is_some_and(|s| s.applies(national)) {
        return Verdict::Unsure;
    }
    if national.len() < 2 || significant.is_empty() {
        return Verdict::Invalid;
    }
    let country = match source {
        Source::Region(i) => match table.regions[i].country {
            Some(country) => country,
            None => return Verdict::Unsure,
        },
        _ => table.main,
    };
    Verdict::Country(country)
}

/// The calling code at the start of E.164 digits: the shortest prefix of 1 to 3 digits that
/// the metadata knows (calling codes are a prefix code), and its length.
pub(crate) fn calling_code(digits: &str) -> Option<(u16, usize)> {
    let known = &CODES.known;
    let mut code = 0usize;
    for (len, &d) in digits.as_bytes().iter().take(3).enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        code = code * 10 + usize::from(d - b'0');
        if known[code] {
            return Some((code as u16, len + 1));
        }
    }
    None
}

/// Whether E.164 `digits` (calling code first, digits only) are a *possible* number: the
/// calling code exists, and the national number after it has a length that one of the code's
/// regions allows and leading digits that its general number pattern allows (the pattern
/// matches at the start, as libphonenumber's `Descriptor::is_match` tests it). The lengths are
/// those of the region's number types (fixed line, mobile, toll-free, ...), the pattern is the
/// region's general description, which covers every type: so every valid number is possible,
/// while a number one digit short (`+4477009`), a bare code (`+1234`) or a national trunk
/// prefix left in (`+44 0 7700 900123`) is not. Unlike validity, possibility does not require
/// an allocated range, so a new range is never refused because the metadata is older.
/// ([`E164::parse`](crate::E164::parse) asks [`is_possible_national`] with the code it found.)
#[cfg(test)]
pub(crate) fn is_possible(digits: &str) -> bool {
    calling_code(digits).is_some_and(|(code, code_len)| is_possible_national(code, &digits[code_len..]))
}

/// `is_possible` for the national number after the calling code `code`.
pub(crate) fn is_possible_national(code: u16, national: &str) -> bool {
    let Some(table) = CODES.table(code) else {
        return false;
    };
    table.regions.iter().any(|region| region.possible().is_some_and(|p| p.accepts(national)))
}

/// The value of ASCII digits (at most 15: no overflow).
#[cfg(test)]
fn number_of(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
}

/// Calling codes the metadata knows, and their tables.
struct Codes {
    known: [bool; 1000],
    tables: Box<[OnceLock<Option<CodeTable>>]>,
}

static CODES: LazyLock<Codes> = LazyLock::new(|| {
    // By code, not `DATABASE.iter()`: that lists metadata by region id, and every
    // non-geographic code shares the id "001".
    let mut known = [false; 1000];
    for (code, k) in known.iter_mut().enumerate() {
        *k = DATABASE.by_code(&(code as u16)).is_some();
    }
    Codes { known, tables: (0..1000).map(|_| OnceLock::new()).collect() }
});

impl Codes {
    /// The table of a known code; `None` when a pattern did not compile (never expected: the
    /// parser is used for that code then).
    fn table(&self, code: u16) -> Option<&CodeTable> {
        self.tables.get(usize::from(code))?.get_or_init(|| CodeTable::build(code)).as_ref()
    }
}

/// Where `validator::source_for` lands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    /// A region of the code (an index into [`CodeTable::regions`]).
    Region(usize),
    /// The code is a non-geographic entity (region "001").
    NonGeographic,
    /// No region matches (or the code's only region has an unknown id).
    None,
    /// A case the fast path does not decide.
    Unsure,
}

/// One calling code.
struct CodeTable {
    /// Its regions in the order libphonenumber tries them (the main one first).
    regions: Vec<Region>,
    /// `source_for`'s walk over the regions, with each run of consecutive regions that have
    /// `leading_digits` tested in one pass (the NANP has runs of up to 11).
    steps: Vec<Step>,
    /// Set when the code has one region: where `source_for` lands without looking.
    single: Option<Source>,
    /// National-prefix rules of the metadata used for a non-geographic code.
    non_geographic_strip: Option<Strip>,
    /// The country when no region matches (see `main_country_for_code`).
    main: Country,
}

/// One step of `source_for`.
enum Step {
    /// Regions `first..` up to the set's pattern count all have `leading_digits`: the first
    /// whose pattern matches wins.
    Leading { first: usize, set: Box<Matcher> },
    /// A region without `leading_digits`: it wins when its number patterns know the number.
    Patterns(usize),
}

/// One region of a calling code.
struct Region {
    /// Its `leading_digits` pattern, if it has one.
    leading: Option<&'static str>,
    /// For a region without `leading_digits`: its number patterns, compiled on first use.
    patterns: OnceLock<Option<NumberPatterns>>,
    meta: &'static Metadata,
    strip: Option<Strip>,
    /// The country libphonenumber reports for it; `None` when its id is no ISO country (the
    /// parser decides then).
    country: Option<Country>,
    /// What a possible national number of it looks like, compiled on first use.
    possible: OnceLock<Option<Possible>>,
}

/// The possible national numbers of a region (see [`is_possible`]).
struct Possible {
    /// Bit `n` set: `n` digits is a possible length.
    lengths: u32,
    /// The general description's pattern, anchored at the start: it decides the leading
    /// digits (as `Descriptor::is_match` does), the lengths decide the rest.
    general: Matcher,
}

impl Possible {
    fn build(meta: &'static Metadata) -> Option<Possible> {
        let d = meta.descriptors();
        let mut lengths = 0u32;
        for desc in [
            Some(d.general()),
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        {
            for &len in desc.possible_length() {
                if len < 32 {
                    lengths |= 1 << len;
                }
            }
        }
        let general = Matcher::new(&[d.general().national_number().as_str()]).ok()?;
        Some(Possible { lengths, general })
    }

    fn accepts(&self, national: &str) -> bool {
        national.len() < 32 && self.lengths & (1 << national.len()) != 0 && self.general.is_match(national)
    }
}

/// The patterns `validator::number_type` tries: the general one, then the number types.
struct NumberPatterns {
    general: Pattern,
    /// Per national-number length: the number-type patterns whose possible lengths allow it,
    /// as one matcher (`None`: no type allows that length).
    by_length: Vec<Option<Matcher>>,
}

/// A descriptor's pattern and possible lengths (`Descriptor::is_match`).
struct Pattern {
    matcher: Matcher,
    lengths: &'static [u16],
}

impl Pattern {
    fn is_match(&self, value: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(value.len() as u16))) && self.matcher.is_match(value)
    }
}

/// When `helper::national_number` (and the parser after it) would rewrite the national number.
struct Strip {
    national_prefix: Option<&'static str>,
    for_parsing: Option<Matcher>,
}

impl Strip {
    fn of(meta: &'static Metadata) -> Result<Option<Strip>, BuildError> {
        let for_parsing = meta.national_prefix_for_parsing().map(|p| Matcher::new(&[p.as_str()])).transpose()?;
        let national_prefix = meta.national_prefix();
        Ok((for_parsing.is_some() || national_prefix.is_some()).then_some(Strip { national_prefix, for_parsing }))
    }

    fn applies(&self, national: &str) -> bool {
        self.national_prefix.is_some_and(|p| national.starts_with(p))
            || self.for_parsing.as_ref().is_some_and(|r| r.is_match(national))
    }
}

type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The most one [`Matcher`]'s DFA (and its construction) may take.
const MAX_DFA_BYTES: usize = 4 << 20;

/// Metadata patterns compiled to one fully built DFA, searched anchored at the start of the
/// text. The patterns are compiled like the metadata's (`ignore_whitespace`; each ends with a
/// newline so a trailing comment cannot swallow a closing parenthesis), with ASCII classes: a
/// national number here is ASCII digits, on which `\d` means the same either way, and the DFA
/// stays small (the largest, Argentina's number types, about 22 KiB; every code's together
/// under 2 MiB, built in about 70 ms).
///
/// A `regex::Regex` answers the same questions through a lazily built DFA behind a
/// thread-aware cache pool; on numbers of ten digits that setup cost more than the search.
/// Walking a built DFA is a table lookup per digit.
struct Matcher {
    dfa: dense::DFA<Vec<u32>>,
    /// The anchored start state at the start of a text (it never depends on more: every
    /// search starts at offset 0).
    start: StateID,
}

impl Matcher {
    /// A matcher for the text where any of `patterns` (metadata patterns, as written there)
    /// would match at its start, as `find(..).start() == 0` does; every one that matches is
    /// reported (`first_match`).
    fn new(patterns: &[&str]) -> Result<Matcher, BuildError> {
        let patterns: Vec<String> = patterns.iter().map(|p| format!("(?:{p}\n)")).collect();
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().ignore_whitespace(true).unicode(false).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                // No acceleration: texts are at most 15 digits, too short for it to pay, and
                // without it only dead and match states are special (one compare per digit).
                // A bound on the size: today's largest is 22 KiB; a pattern of a later
                // metadata that would blow up fails to build, and its code falls back to the
                // full parser (`Verdict::Unsure`) instead of taking the memory.
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .accelerate(false)
                    .dfa_size_limit(Some(MAX_DFA_BYTES))
                    .determinize_size_limit(Some(MAX_DFA_BYTES)),
            )
            .build_many(&patterns)?;
        let start = dfa.start_state(&start::Config::new().anchored(Anchored::Yes))?;
        Ok(Matcher { dfa, start })
    }

    /// Whether a pattern matches at the start of `text`.
    fn is_match(&self, text: &str) -> bool {
        let mut state = self.start;
        for &byte in text.as_bytes() {
            if self.dfa.is_special_state(state) {
                // A match state is entered one byte after the match ends.
                return self.dfa.is_match_state(state);
            }
            state = self.dfa.next_state(state, byte);
        }
        self.dfa.is_match_state(state) || self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }

    /// The lowest index of the patterns that match at the start of `text`.
    fn first_match(&self, text: &str) -> Option<usize> {
        let mut lowest: Option<usize> = None;
        let mut note = |state: StateID| {
            for i in 0..self.dfa.match_len(state) {
                let pattern = self.dfa.match_pattern(state, i).as_usize();
                lowest = Some(lowest.map_or(pattern, |l| l.min(pattern)));
            }
        };
        let mut state = self.start;
        for &byte in text.as_bytes() {
            if self.dfa.is_special_state(state) {
                if !self.dfa.is_match_state(state) {
                    return lowest;
                }
                // Longer matches of other patterns may follow.
                note(state);
            }
            state = self.dfa.next_state(state, byte);
        }
        if self.dfa.is_match_state(state) {
            note(state);
        }
        let end = self.dfa.next_eoi_state(state);
        if self.dfa.is_match_state(end) {
            note(end);
        }
        lowest
    }
}

/// What libphonenumber reports as the country of `region`, if it is an ISO country.
fn region_country(region: &str) -> Option<Country> {
    let id: Id = region.parse().ok()?;
    let meta = DATABASE.by_id(id.as_ref())?;
    if meta.id() != region {
        return None;
    }
    let id: Id = meta.id().parse().ok()?;
    Country::from_code(id.as_ref()).ok()
}

impl CodeTable {
    fn build(code: u16) -> Option<CodeTable> {
        let metas = DATABASE.by_code(&code)?;
        let mut regions = Vec::with_capacity(metas.len());
        for &meta in &metas {
            regions.push(Region {
                leading: meta.leading_digits().map(|p| p.as_str()),
                patterns: OnceLock::new(),
                meta,
                strip: Strip::of(meta).ok()?,
                country: region_country(meta.id()),
                possible: OnceLock::new(),
            });
        }
        let single = match metas.as_slice() {
            [only] if only.id() == "001" => Some(Source::NonGeographic),
            [only] => Some(match only.id().parse::<Id>() {
                Ok(_) if regions[0].country.is_some() => Source::Region(0),
                Ok(_) => Source::Unsure,
                Err(_) => Source::None,
            }),
            _ => None,
        };
        let mut steps = Vec::new();
        let mut i = 0;
        while i < regions.len() {
            let run = regions[i..].iter().take_while(|r| r.leading.is_some()).count();
            if run == 0 {
                steps.push(Step::Patterns(i));
                i += 1;
            } else {
                let patterns: Vec<&str> = regions[i..i + run].iter().filter_map(|r| r.leading).collect();
                let set = Box::new(Matcher::new(&patterns).ok()?);
                steps.push(Step::Leading { first: i, set });
                i += run;
            }
        }
        let non_geographic_strip = match metas.first() {
            Some(first) if single == Some(Source::NonGeographic) => Strip::of(first).ok()?,
            _ => None,
        };
        Some(CodeTable { regions, steps, single, non_geographic_strip, main: main_country_for_code(code) })
    }

    /// `validator::source_for(code, significant)`.
    fn source_for(&self, significant: &str) -> Source {
        if let Some(single) = self.single {
            return single;
        }
        for step in &self.steps {
            let hit = match step {
                // The lowest index among the matching patterns: the first region in order.
                Step::Leading { first, set } => set.first_match(significant).map(|k| first + k),
                Step::Patterns(i) => match self.regions[*i].number_patterns() {
                    Some(patterns) => patterns.knows(significant).then_some(*i),
                    None => return Source::Unsure,
                },
            };
            if let Some(i) = hit {
                // libphonenumber unwraps the region id here; one that is no country is left to it.
                return if self.regions[i].country.is_some() { Source::Region(i) } else { Source::Unsure };
            }
        }
        Source::None
    }
}

impl Region {
    fn number_patterns(&self) -> Option<&NumberPatterns> {
        self.patterns.get_or_init(|| NumberPatterns::build(self.meta)).as_ref()
    }

    fn possible(&self) -> Option<&Possible> {
        self.possible.get_or_init(|| Possible::build(self.meta)).as_ref()
    }
}

impl NumberPatterns {
    fn build(meta: &'static Metadata) -> Option<NumberPatterns> {
        let d = meta.descriptors();
        let general = d.general();
        let general =
            Pattern { matcher: Matcher::new(&[general.national_number().as_str()]).ok()?, lengths: lengths(general) };
        // The types `validator::number_type` tries; any match makes the type known.
        let types: Vec<&'static Descriptor> = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut by_length = Vec::with_capacity(MAX_NATIONAL + 1);
        for len in 0..=MAX_NATIONAL {
            let allowed: Vec<&str> = types
                .iter()
                .filter(|t| lengths(t).is_empty() || lengths(t).contains(&(len as u16)))
                .map(|t| t.national_number().as_str())
                .collect();
            by_length.push(if allowed.is_empty() { None } else { Some(Matcher::new(&allowed).ok()?) });
        }
        Some(NumberPatterns { general, by_length })
    }

    /// `validator::number_type(meta, value) != Type::Unknown`.
    fn knows(&self, value: &str) -> bool {
        self.general.is_match(value)
            && self.by_length.get(value.len()).and_then(Option::as_ref).is_some_and(|r| r.is_match(value))
    }
}

fn lengths(d: &'static Descriptor) -> &'static [u16] {
    d.possible_length()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::E164;

    /// The full parser's verdict, as `E164::parse` reports it.
    fn full(text: &str) -> Option<(u64, u32, Country)> {
        E164::parse_with_libphonenumber(text).ok().map(|n| (n.digits(), n.len(), n.country()))
    }

    fn fast(text: &str) -> Fast {
        parse(text.trim())
    }

    /// The fast path agrees with the full parser wherever it answers.
    fn check(text: &str) -> bool {
        match fast(text) {
            Fast::Number { digits, len, country } => {
                assert_eq!(full(text), Some((digits, u32::from(len), country)), "{text}");
                true
            }
            Fast::Invalid => {
                assert_eq!(full(text), None, "{text}");
                true
            }
            Fast::Unsure => false,
        }
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn digits(&mut self, n: usize) -> String {
            (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
        }
    }

    /// Every calling code with its regions' metadata.
    fn all_codes() -> Vec<(u16, Vec<&'static Metadata>)> {
        (1..1000u16).filter_map(|code| Some((code, DATABASE.by_code(&code)?))).collect()
    }

    /// Codes shared by several regions, in libphonenumber's metadata.
    fn shared_codes() -> Vec<u16> {
        all_codes().into_iter().filter(|(_, metas)| metas.len() > 1).map(|(code, _)| code).collect()
    }

    fn matcher(patterns: &[&str]) -> Matcher {
        Matcher::new(patterns).expect("compiles")
    }

    #[test]
    fn a_matcher_matches_at_the_start_only() {
        let m = matcher(&["23", r"9\d{2}$"]);
        // A prefix is enough; elsewhere in the text is not.
        assert!(m.is_match("23"));
        assert!(m.is_match("2345"));
        assert!(!m.is_match("123"));
        assert!(!m.is_match("2"));
        assert!(!m.is_match(""));
        // An end anchor is decided after the last digit.
        assert!(m.is_match("912"));
        assert!(!m.is_match("9123"));
        // Whitespace and comments in a pattern are ignored, as in the metadata.
        assert!(matcher(&["4 5 # a comment"]).is_match("456"));
    }

    #[test]
    fn a_matcher_too_large_is_not_built() {
        // The classic blow-up: a DFA must remember the last 21 digits, 2^21 states.
        assert!(Matcher::new(&["[01]*1[01]{20}"]).is_err());
    }

    #[test]
    fn a_matcher_reports_the_lowest_of_the_patterns_that_match() {
        // Overlapping patterns (the metadata's runs of leading digits do not overlap today;
        // the order is libphonenumber's if they ever do).
        let m = matcher(&["12", "1", "9", r"1\d{3}"]);
        assert_eq!(m.first_match("1234"), Some(0));
        assert_eq!(m.first_match("13"), Some(1));
        assert_eq!(m.first_match("1"), Some(1));
        assert_eq!(m.first_match("95"), Some(2));
        assert_eq!(m.first_match("5"), None);
        let m = matcher(&["5", r"1\d{3}", "12"]);
        assert_eq!(m.first_match("1234"), Some(1));
        assert_eq!(m.first_match("129"), Some(2));
    }

    #[test]
    fn covers_the_shared_codes() {
        let codes = shared_codes();
        for code in [1, 7, 39, 44, 47, 61, 212, 262, 290, 358, 590, 599] {
            assert!(codes.contains(&code), "{code} in {codes:?}");
        }
    }

    /// Every region's example numbers, and random numbers under every shared code: the fast
    /// path gives libphonenumber's answer, and decides most of them.
    #[test]
    fn agrees_with_libphonenumber_on_generated_numbers() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut decided, mut total) = (0usize, 0usize);
        let mut run = |text: &str| {
            total += 1;
            decided += usize::from(check(text));
        };
        for meta in all_codes().into_iter().flat_map(|(_, metas)| metas) {
            let d = meta.descriptors();
            for desc in [d.general(), d.fixed_line().unwrap_or(d.general()), d.mobile().unwrap_or(d.general())] {
                if let Some(example) = desc.example() {
                    let code = meta.country_code();
                    run(&format!("+{code}{example}"));
                    // The same number with its last digits changed.
                    let keep = example.len().saturating_sub(3);
                    run(&format!("+{code}{}{}", &example[..keep], rng.digits(example.len() - keep)));
                }
            }
        }
        for code in shared_codes() {
            for _ in 0..3_000 {
                let len = 1 + rng.below(14) as usize;
                run(&format!("+{code}{}", rng.digits(len)));
            }
        }
        // Decided means no call to the slow parser: the point of the fast path.
        assert!(decided * 10 > total * 8, "decided {decided} of {total}");
    }

    /// Possibility is looser than validity: every example number of every region (fixed
    /// line, mobile, toll-free, ...) is possible.
    #[test]
    fn every_example_number_of_the_metadata_is_possible() {
        let mut checked = 0;
        for meta in all_codes().into_iter().flat_map(|(_, metas)| metas) {
            let d = meta.descriptors();
            let types = [d.fixed_line(), d.mobile(), d.toll_free(), d.premium_rate(), d.shared_cost(), d.voip()];
            for example in types.into_iter().flatten().filter_map(|desc| desc.example()) {
                let digits = format!("{}{example}", meta.country_code());
                assert!(is_possible(&digits), "{} example +{digits}", meta.id());
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked}");
        for impossible in ["1234", "4477009", "4407700900123", "12", "999123456", "0441234567"] {
            assert!(!is_possible(impossible), "{impossible}");
        }
    }

    #[test]
    fn agrees_on_arbitrary_digit_strings_and_spacing() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(18) as usize;
            let digits = rng.digits(len);
            check(&format!("+{digits}"));
            let spaced: String =
                digits.chars().flat_map(|c| if rng.below(4) == 0 { vec![c, ' '] } else { vec![c] }).collect();
            check(&format!(" +{spaced} "));
            check(&format!("+ {spaced}"));
        }
    }

    static SHARED: LazyLock<Vec<u16>> = LazyLock::new(shared_codes);

    proptest::proptest! {
        /// Any national digits under any shared code, with spaces anywhere after the plus.
        #[test]
        fn fast_path_matches_libphonenumber_on_shared_codes(
            pick in 0usize..1_000,
            national in "[0-9]{0,15}",
            spaces in proptest::collection::vec(1usize..20, 0..4),
        ) {
            let mut text = format!("+{}{national}", SHARED[pick % SHARED.len()]);
            for at in spaces {
                if at < text.len() {
                    text.insert(at, ' ');
                }
            }
            check(&text);
        }
    }

    #[test]
    fn decides_common_numbers_without_the_parser() {
        for (text, country) in [
            ("+12128675309", "US"),
            ("+14163402000", "CA"),
            ("+17877221000", "PR"),
            ("+18762345678", "JM"),
            ("+442071838750", "GB"),
            ("+44 20 7183 8750", "GB"),
            ("+4930901820", "DE"),
            ("+33142685300", "FR"),
            ("+81312345678", "JP"),
            ("+61293744000", "AU"),
            ("+74951234567", "RU"),
            ("+77011234567", "KZ"),
            ("+390212345678", "IT"),
            ("+80012345678", "ZZ"),
        ] {
            let Fast::Number { country: c, .. } = fast(text) else { panic!("{text}: {:?}", fast(text)) };
            assert_eq!(c.code(), country, "{text}");
            assert!(check(text));
        }
        for bad in ["+", "+1", "+12", "+0123456789", "+999123456"] {
            assert!(matches!(fast(bad), Fast::Invalid | Fast::Unsure), "{bad}");
            check(bad);
        }
    }
}
