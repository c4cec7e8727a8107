//! The content fingerprint that deduplication persists with every applied input id.
//!
//! It is written out field by field (no `derive(Hash)`, no third-party hasher), so neither a
//! Rust release nor a crate upgrade can change it; a test pins its value. Words are mixed one
//! at a time with a folded multiply (the high and low halves of a 128-bit product, xored), the
//! mixer of wyhash and foldhash. (The in-memory maps hash with foldhash itself:
//! [`FastState`](crate::FastState); nothing of theirs is persisted.)

use crate::event::{
    CallLegEvent, CreditBody, CreditCommand, DisconnectCause, Input, LegBody, LegDuration, LegKind, LotFunding,
};
use crate::instant::Timestamp;
use crate::money::{Currency, Money};
use crate::number::E164;

/// Digits of pi: arbitrary, fixed constants with many bits set. (`SEED_FINAL` was the seed of
/// the in-memory maps when they used this hasher; the fingerprint's last step keeps it.)
const SEED_FINAL: u64 = 0x243f_6a88_85a3_08d3;
const SEED_FINGERPRINT: u64 = 0x1319_8a2e_0370_7344;
const MULTIPLIER: u64 = 0xa409_3822_299f_31d0 | 1;

/// The high and low halves of the 128-bit product, xored.
#[inline]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// A word-at-a-time hasher: every write is folded into the state with one multiply.
#[derive(Clone, Copy, Debug)]
struct WordHasher {
    state: u64,
}

impl WordHasher {
    const fn with_seed(seed: u64) -> Self {
        WordHasher { state: seed }
    }

    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, MULTIPLIER);
    }
}

impl WordHasher {
    #[inline]
    /// Mixes `bytes` a word at a time, a short tail as one word with its length.
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.mix(u64::from_le_bytes(buf));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            // 1 to 7 bytes, read without a variable-length copy (overlapping reads); the length
            // goes in the free top byte, so "ab" and "ab\0" differ.
            let n = tail.len();
            let word = if n >= 4 {
                let mut lo = [0u8; 4];
                let mut hi = [0u8; 4];
                lo.copy_from_slice(&tail[..4]);
                hi.copy_from_slice(&tail[n - 4..]);
                u64::from(u32::from_le_bytes(lo)) | u64::from(u32::from_le_bytes(hi)) << 24
            } else {
                u64::from(tail[0]) | u64::from(tail[n / 2]) << 8 | u64::from(tail[n - 1]) << 16
            };
            self.mix(word | (n as u64) << 56);
        }
    }
}

/// The persisted content fingerprint of an input: equal inputs give equal fingerprints, in
/// every process and every release.
pub fn fingerprint(input: &Input) -> u64 {
    let mut f = Fingerprinter(WordHasher::with_seed(SEED_FINGERPRINT));
    input.feed(&mut f);
    folded_multiply(f.0.state, SEED_FINAL)
}

/// Writes values in a fixed, documented encoding: integers as one word, strings as below, enum
/// variants as a small tag.
struct Fingerprinter(WordHasher);

impl Fingerprinter {
    fn word(&mut self, w: u64) {
        self.0.mix(w);
    }

    /// A string of up to 7 bytes is one word: its bytes, and its length in the top byte. A
    /// longer one is its length (at least 8, top byte 0), then its bytes. Either way no two
    /// sequences of strings write the same words.
    #[inline(always)]
    fn str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if bytes.len() < 8 {
            self.word(short_word(bytes));
        } else {
            self.word(bytes.len() as u64);
            self.0.write(bytes);
        }
    }
}

/// 0 to 7 bytes as one little-endian word, zero-padded, the length in the top byte: what
/// copying them into a zeroed `[u8; 8]` would give, read with two overlapping loads instead of
/// a loop over the bytes (ids are short, and six of them are fingerprinted per event).
#[inline]
fn short_word(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    debug_assert!(n < 8);
    let word = if n >= 4 {
        let mut lo = [0u8; 4];
        let mut hi = [0u8; 4];
        lo.copy_from_slice(&bytes[..4]);
        hi.copy_from_slice(&bytes[n - 4..]);
        // The overlapping bytes are the same on both sides, so or-ing them is harmless.
        u64::from(u32::from_le_bytes(lo)) | u64::from(u32::from_le_bytes(hi)) << (8 * (n - 4))
    } else if n > 0 {
        u64::from(bytes[0]) | u64::from(bytes[n / 2]) << (8 * (n / 2)) | u64::from(bytes[n - 1]) << (8 * (n - 1))
    } else {
        0
    };
    word | (n as u64) << 56
}

trait Feed {
    fn feed(&self, f: &mut Fingerprinter);
}

impl Feed for Input {
    fn feed(&self, f: &mut Fingerprinter) {
        match self {
            Input::Leg(e) => {
                f.word(1);
                e.feed(f);
            }
            Input::Credit(c) => {
                f.word(2);
                c.feed(f);
            }
        }
    }
}

impl Feed for CallLegEvent {
    fn feed(&self, f: &mut Fingerprinter) {
        f.str(&self.event_id);
        f.str(self.tenant_id.as_str());
        f.str(&self.conference_id);
        f.str(&self.call_id);
        f.str(&self.leg_id);
        f.str(&self.organizer_id);
        self.occurred_at.feed(f);
        match &self.body {
            LegBody::Started(s) => {
                f.word(1);
                f.word(kind_tag(s.kind));
                s.bridge_number.feed(f);
                s.remote_number.feed(f);
            }
            LegBody::Interim { elapsed_seconds } => {
                f.word(2);
                f.word(u64::from(*elapsed_seconds));
            }
            LegBody::Ended(e) => {
                f.word(3);
                match e.duration {
                    LegDuration::ConnectedSeconds(s) => {
                        f.word(1);
                        f.word(u64::from(s));
                    }
                    LegDuration::EndedAt(t) => {
                        f.word(2);
                        t.feed(f);
                    }
                }
                f.word(cause_tag(e.cause));
            }
        }
    }
}

/// Explicit tags: reordering the enum must not change fingerprints.
fn kind_tag(kind: LegKind) -> u64 {
    match kind {
        LegKind::DialInToll => 1,
        LegKind::DialInTollFree => 2,
        LegKind::DialOut => 3,
        LegKind::CallMeAt => 4,
        LegKind::Voip => 5,
    }
}

fn cause_tag(cause: DisconnectCause) -> u64 {
    match cause {
        DisconnectCause::Unspecified => 1,
        DisconnectCause::Normal => 2,
        DisconnectCause::NoAnswer => 3,
        DisconnectCause::Busy => 4,
        DisconnectCause::Failed => 5,
        DisconnectCause::CreditCutoff => 6,
        DisconnectCause::MeetingEnded => 7,
    }
}

impl Feed for CreditCommand {
    fn feed(&self, f: &mut Fingerprinter) {
        f.str(&self.command_id);
        f.str(self.tenant_id.as_str());
        self.occurred_at.feed(f);
        match &self.body {
            CreditBody::Fund(lot) => {
                f.word(1);
                lot.feed(f);
            }
            CreditBody::RechargeSucceeded(lot) => {
                f.word(2);
                lot.feed(f);
            }
            CreditBody::RechargeFailed { reason } => {
                f.word(3);
                f.str(reason);
            }
            CreditBody::Adjust { amount, currency, reason } => {
                f.word(4);
                amount.feed(f);
                currency.feed(f);
                f.str(reason);
            }
        }
    }
}

impl Feed for LotFunding {
    fn feed(&self, f: &mut Fingerprinter) {
        f.str(&self.lot_id);
        self.amount.feed(f);
        self.currency.feed(f);
        self.purchased_at.feed(f);
    }
}

impl Feed for Timestamp {
    fn feed(&self, f: &mut Fingerprinter) {
        f.word(self.unix_seconds() as u64);
        f.word(u64::from(self.subsec_nanos()));
    }
}

impl Feed for Option<E164> {
    fn feed(&self, f: &mut Fingerprinter) {
        match self {
            None => f.word(0),
            Some(n) => {
                let [a, b] = *n.country().code_bytes();
                f.word(1 + u64::from(n.len()));
                f.word(n.digits());
                f.word(u64::from(a) | u64::from(b) << 8);
            }
        }
    }
}

impl Feed for Money {
    fn feed(&self, f: &mut Fingerprinter) {
        // Normalized, so amounts that compare equal (1.0 and 1.00) fingerprint equal.
        let bytes = self.amount().normalize().serialize();
        let (lo, hi) = bytes.split_at(8);
        let word = |half: &[u8]| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(half);
            u64::from_le_bytes(buf)
        };
        f.word(word(lo));
        f.word(word(hi));
    }
}

impl Feed for Currency {
    fn feed(&self, f: &mut Fingerprinter) {
        f.str(self.code());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LegEnded, LegStarted};
    use crate::number::Country;
    use crate::reference::TenantId;

    fn leg(event_id: &str, body: LegBody) -> Input {
        Input::Leg(CallLegEvent {
            event_id: event_id.into(),
            tenant_id: TenantId::new("contoso").unwrap(),
            conference_id: "conf-1".into(),
            call_id: "call-1".into(),
            leg_id: "leg-1".into(),
            organizer_id: "alice".into(),
            occurred_at: Timestamp::new(1_794_268_800, 500).unwrap(),
            body,
        })
    }

    fn started() -> Input {
        let to = E164::from_parts("442071838750", Country::from_code("GB").unwrap()).unwrap();
        leg("e1", LegBody::Started(LegStarted { kind: LegKind::DialOut, bridge_number: None, remote_number: Some(to) }))
    }

    fn fund(amount: &str) -> Input {
        let usd = Currency::from_code("USD").unwrap();
        Input::Credit(CreditCommand {
            command_id: "c1".into(),
            tenant_id: TenantId::new("contoso").unwrap(),
            occurred_at: Timestamp::new(1_794_268_800, 0).unwrap(),
            body: CreditBody::Fund(LotFunding {
                lot_id: "lot-1".into(),
                amount: amount.parse().unwrap(),
                currency: usd,
                purchased_at: Timestamp::new(1_794_268_800, 0).unwrap(),
            }),
        })
    }

    /// The fingerprint is persisted: if this test fails, deduplication state written by
    /// earlier releases no longer recognises its inputs. Do not update the constants; add the
    /// old function as another fallback instead.
    #[test]
    fn fingerprints_are_stable_across_releases() {
        assert_eq!(fingerprint(&started()), 0x2c1f_3c2e_c783_17a7);
        assert_eq!(fingerprint(&fund("10.00")), 0xc008_cd69_55ce_4358);
    }

    #[test]
    fn fingerprints_follow_content() {
        assert_eq!(fingerprint(&fund("10.00")), fingerprint(&fund("10")));
        assert_ne!(fingerprint(&fund("10.00")), fingerprint(&fund("10.01")));
        let ended = |seconds| {
            leg(
                "e1",
                LegBody::Ended(LegEnded {
                    duration: LegDuration::ConnectedSeconds(seconds),
                    cause: DisconnectCause::Normal,
                }),
            )
        };
        assert_ne!(fingerprint(&ended(60)), fingerprint(&ended(61)));
        assert_ne!(fingerprint(&ended(60)), fingerprint(&started()));
        // Field boundaries count: moving a character from one id to the next changes it.
        let ids = |call_id: &str, leg_id: &str| {
            let Input::Leg(mut event) = started() else { unreachable!() };
            event.call_id = call_id.into();
            event.leg_id = leg_id.into();
            fingerprint(&Input::Leg(event))
        };
        assert_ne!(ids("call-1x", "leg-1"), ids("call-1", "xleg-1"));
    }

    #[test]
    fn short_strings_are_their_padded_bytes() {
        let reference = |bytes: &[u8]| {
            let mut buf = [0u8; 8];
            buf[..bytes.len()].copy_from_slice(bytes);
            buf[7] = bytes.len() as u8;
            u64::from_le_bytes(buf)
        };
        let sample = b"\x01\x80abc\xffz";
        for n in 0..8 {
            assert_eq!(short_word(&sample[..n]), reference(&sample[..n]), "{n} bytes");
            assert_eq!(short_word(&sample[7 - n..7]), reference(&sample[7 - n..7]), "{n} bytes");
        }
    }

    #[test]
    fn word_hasher_tells_short_tails_apart() {
        let hash = |bytes: &[u8]| {
            let mut h = WordHasher::with_seed(SEED_FINAL);
            h.write(bytes);
            h.state
        };
        assert_ne!(hash(b"ab"), hash(b"ab\0"));
        assert_ne!(hash(b"abcdefgh"), hash(b"abcdefgh\0"));
        assert_eq!(hash(b"leg-1"), hash(b"leg-1"));
    }
}
