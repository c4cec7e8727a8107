//! [`ShortText`]: a number or an amount written as text on the stack, so the wire edge can
//! copy it into a record without allocating a `String` first.

use std::fmt;
use std::ops::Deref;

/// Capacity: the longest amount (29 digits, a sign and a point) with room to spare.
const CAPACITY: usize = 48;

/// "00" to "99", each two bytes.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// ASCII text of at most 48 bytes, written from its last byte to its first.
#[derive(Clone, Copy)]
pub struct ShortText {
    buf: [u8; CAPACITY],
    /// Where the text starts.
    at: usize,
}

impl ShortText {
    /// Empty text.
    pub(crate) const fn new() -> Self {
        ShortText { buf: [0; CAPACITY], at: CAPACITY }
    }

    /// Puts an ASCII byte in front of the text (nothing when full: no caller writes that much).
    pub(crate) fn push_front(&mut self, byte: u8) {
        debug_assert!(byte.is_ascii());
        if self.at > 0 && byte.is_ascii() {
            self.at -= 1;
            self.buf[self.at] = byte;
        }
    }

    /// Puts `n` in decimal in front, zero-padded to at least `min_len` digits (1 to 20), two
    /// digits at a time. Like [`ShortText::push_front`], a full text keeps what it has: only
    /// the last digits that fit are written.
    pub(crate) fn push_decimal_front(&mut self, n: u64, min_len: usize) {
        // u64::MAX has 20 digits; the zeros of the padding are there from the start.
        let mut digits = [b'0'; 20];
        let mut at = digits.len();
        let mut rest = n;
        while rest >= 100 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if rest >= 10 {
            let pair = rest as usize * 2;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            at -= 1;
            digits[at] = b'0' + rest as u8;
        }
        let digits = &digits[at.min(digits.len() - min_len.clamp(1, 20))..];
        let kept = &digits[digits.len() - digits.len().min(self.at)..];
        self.at -= kept.len();
        self.buf[self.at..self.at + kept.len()].copy_from_slice(kept);
    }

    /// Puts ASCII text in front.
    pub(crate) fn push_str_front(&mut self, text: &str) {
        for &byte in text.as_bytes().iter().rev() {
            self.push_front(byte);
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever written.
        std::str::from_utf8(&self.buf[self.at..]).unwrap_or_default()
    }

    /// The text's bytes (ASCII), without the UTF-8 check of [`ShortText::as_str`]: for a
    /// writer that copies them out (the wire edge).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// The text's length in bytes.
    #[cfg(test)]
    pub(crate) const fn len(&self) -> usize {
        CAPACITY - self.at
    }
}

impl Deref for ShortText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_written_back_to_front() {
        let mut text = ShortText::new();
        text.push_str_front("34");
        text.push_front(b'.');
        text.push_str_front("-12");
        assert_eq!((text.as_str(), text.len()), ("-12.34", 6));
    }

    #[test]
    fn a_full_text_keeps_what_it_has() {
        let mut text = ShortText::new();
        for _ in 0..CAPACITY + 3 {
            text.push_front(b'9');
        }
        assert_eq!(text.as_str(), "9".repeat(CAPACITY));
    }

    /// Numbers are written as `format!` writes them, zero-padded, with room to spare and
    /// without (the digit-by-digit path near a full text).
    #[test]
    fn decimals_are_written_as_format_writes_them() {
        let mut values = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 12_128_675_309, u64::MAX, u64::MAX / 7];
        values.extend((0..64).map(|shift| 1u64 << shift));
        values.extend((1..20).map(|exp| 10u64.pow(exp) - 1));
        for value in values {
            for min_len in [0, 1, 2, 3, 7, 15, 20, 25] {
                let expected = format!("{value:0width$}", width = min_len.clamp(1, 20));
                for filled in [0, CAPACITY - 20, CAPACITY - 5] {
                    let mut text = ShortText::new();
                    text.push_str_front(&"x".repeat(filled));
                    text.push_decimal_front(value, min_len);
                    let written = &text.as_str()[..text.len() - filled];
                    let room = CAPACITY - filled;
                    let kept = &expected[expected.len().saturating_sub(room)..];
                    assert_eq!(written, kept, "{value} {min_len} {filled}");
                }
            }
        }
    }
}
