//! [`ShortText`]: a number or an amount written as text on the stack, so the wire edge can
//! copy it into a record without allocating a `String` first.

use std::fmt;
use std::ops::Deref;

/// Capacity: the longest amount (29 digits, a sign and a point) with room to spare.
const CAPACITY: usize = 48;

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
}
