//! Bounds on what one untrusted record may hold, so that hostile input costs bounded memory
//! and time and ends as a refusal with a stable code.
//!
//! Four bounds, checked in this order:
//!
//! 1. **The record's size, before decoding** ([`decode`]): a value longer than the caller's
//!    limit (the worker's `max_record_bytes`) is refused with `too_large` and never decoded.
//! 2. **Repeated-field counts, on the wire, before decoding** ([`Bounded::prescan`], in
//!    [`decode`]): at most [`MAX_LOW_BALANCE_THRESHOLDS`] thresholds per tenant,
//!    [`MAX_RATE_CARD_VERSIONS`] versions per rate card and [`MAX_RATES_PER_TABLE`] rows per
//!    dial-in or dial-out table (`too_many`). Decoding allocates at most a fixed multiple of
//!    the bytes it reads, but for empty repeated messages that multiple is over fifty (an
//!    empty rate row: two bytes on the wire, a 112-byte struct in memory); counted first, a
//!    value that decodes holds at most the bounded number of entries. prost refuses nesting
//!    deeper than its recursion limit (100; unknown groups count too) with `decode`;
//!    tollgate's own messages are at most four levels deep.
//! 3. **String lengths (and the counts again), after decoding and before conversion**: the
//!    inbound `TryFrom`s in [`crate::convert`] call [`Bounded::bounds`] first, so the offline
//!    rater's JSON lines and reference files are bounded too. Ids, codes, numbers, prefixes
//!    and amounts at most [`MAX_ID_BYTES`], free text at most [`MAX_TEXT_BYTES`]
//!    (`too_long`). Nothing past a bound reaches the core, the state, the changelog or an
//!    error message (which would otherwise quote a megabyte-long id).
//! 4. **Amounts, at conversion**: an amount, price or fee has at most
//!    [`MAX_AMOUNT_DIGITS`] digits before the point (`invalid`), so the core's `Decimal`
//!    sums cannot overflow.
//!
//! ```
//! use tollgate_proto::{limits, v1, Message};
//!
//! let event = v1::CallLegEvent { event_id: "e".repeat(300), ..Default::default() };
//! let bytes = event.encode_to_vec();
//! let error = limits::decode::<v1::CallLegEvent>(&bytes, 100).unwrap_err();
//! assert_eq!((error.code(), error.to_string().as_str()), ("too_large", "a value of 303 bytes, more than the 100 allowed"));
//! let error = tollgate_core::Input::try_from(limits::decode::<v1::CallLegEvent>(&bytes, 1000)?).unwrap_err();
//! assert_eq!(error.to_string(), "eventId is 300 bytes long, more than the 256 allowed");
//! # Ok::<(), tollgate_proto::Error>(())
//! ```

use crate::v1;
use prost::Message;

/// The default largest record value decoded: 1 MiB, the order of Kafka's default
/// `max.message.bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Longest id, code, phone number, prefix or amount, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest free text (a display name, a reason, a rate row's description), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Most low-balance thresholds of one tenant (each is checked on every debit).
pub const MAX_LOW_BALANCE_THRESHOLDS: usize = 100;
/// Most versions of one rate card.
pub const MAX_RATE_CARD_VERSIONS: usize = 1000;
/// Most rows of one version's dial-in table, or of its dial-out table.
pub const MAX_RATES_PER_TABLE: usize = 100_000;
/// Most digits before the point of an amount, a price or a fee: below 10^15 in magnitude
/// (a quadrillion dollars, or yen). The core adds amounts with `Decimal`, which panics past
/// about 7.9 × 10^28: two funding commands near that bound crashed the worker on every
/// restart. Bounded, a balance would need some ten trillion of them to get there, and a
/// charge (a price times at most 24 h) stays below 10^20.
pub const MAX_AMOUNT_DIGITS: u32 = 15;

/// A bound that a record exceeds.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Exceeded {
    /// The encoded record is longer than allowed (code `too_large`).
    #[error("a value of {bytes} bytes, more than the {max} allowed")]
    Record {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A repeated field has too many entries (code `too_many`).
    #[error("{field} has {count} entries, more than the {max} allowed")]
    Entries {
        /// The field, as JSON names it (`versions[0].dialOut`).
        field: String,
        /// Its entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A string field is too long (code `too_long`).
    #[error("{field} is {bytes} bytes long, more than the {max} allowed")]
    Text {
        /// The field, as JSON names it.
        field: String,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

impl Exceeded {
    /// The dead-letter code: `too_large`, `too_many` or `too_long`.
    pub fn code(&self) -> &'static str {
        match self {
            Exceeded::Record { .. } => "too_large",
            Exceeded::Entries { .. } => "too_many",
            Exceeded::Text { .. } => "too_long",
        }
    }
}

/// Decodes a record value of at most `max_bytes` bytes: a longer one is refused before any
/// byte of it is decoded, and so is one whose repeated fields hold more entries than their
/// bounds ([`Bounded::prescan`]).
pub fn decode<M: Message + Default + Bounded>(payload: &[u8], max_bytes: usize) -> Result<M, crate::Error> {
    if payload.len() > max_bytes {
        return Err(Exceeded::Record { bytes: payload.len(), max: max_bytes }.into());
    }
    M::prescan(payload)?;
    Ok(M::decode(payload)?)
}

/// A message whose repeated fields and strings can be checked against the bounds.
pub trait Bounded {
    /// The first bound the decoded message exceeds, if any.
    fn bounds(&self) -> Result<(), Exceeded>;

    /// The counts of the message's repeated fields, from its wire bytes, before it is decoded:
    /// decoding a repeated field of empty messages allocates over fifty times the bytes it reads,
    /// so a value with too many entries is refused before that. Bytes that are not well-formed
    /// pass: decoding refuses them.
    fn prescan(_payload: &[u8]) -> Result<(), Exceeded> {
        Ok(())
    }
}

/// Calls `entry` with the bytes of each occurrence of the length-delimited field `field` in a
/// message's wire bytes, skipping every other field (groups included, under prost's recursion
/// limit) without decoding it. Stops, `Ok`, at bytes that are not well-formed.
pub(crate) fn each_entry(mut buf: &[u8], field: u32, mut entry: impl FnMut(&[u8])) {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else { return };
        if tag == field && wire_type == WireType::LengthDelimited {
            let Some(len) = decode_varint(&mut buf).ok().and_then(|len| usize::try_from(len).ok()) else { return };
            let Some(bytes) = buf.get(..len) else { return };
            entry(bytes);
            buf = &buf[len..];
        } else if skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            return;
        }
    }
}

/// How many times the length-delimited field `field` occurs in a message's wire bytes.
fn count(buf: &[u8], field: u32) -> usize {
    let mut n = 0;
    each_entry(buf, field, |_| n += 1);
    n
}

fn id(field: &str, value: &str) -> Result<(), Exceeded> {
    text_within(field, value, MAX_ID_BYTES)
}

fn text(field: &str, value: &str) -> Result<(), Exceeded> {
    text_within(field, value, MAX_TEXT_BYTES)
}

fn text_within(field: &str, value: &str, max: usize) -> Result<(), Exceeded> {
    if value.len() > max {
        return Err(Exceeded::Text { field: field.to_owned(), bytes: value.len(), max });
    }
    Ok(())
}

fn entries(field: impl FnOnce() -> String, count: usize, max: usize) -> Result<(), Exceeded> {
    if count > max {
        return Err(Exceeded::Entries { field: field(), count, max });
    }
    Ok(())
}

impl Bounded for v1::CallLegEvent {
    fn bounds(&self) -> Result<(), Exceeded> {
        id("eventId", &self.event_id)?;
        id("tenantId", &self.tenant_id)?;
        id("conferenceId", &self.conference_id)?;
        id("callId", &self.call_id)?;
        id("legId", &self.leg_id)?;
        id("organizerId", &self.organizer_id)?;
        if let Some(v1::call_leg_event::Body::Started(s)) = &self.body {
            id("started.bridgeNumber", &s.bridge_number)?;
            id("started.remoteNumber", &s.remote_number)?;
        }
        Ok(())
    }
}

impl Bounded for v1::CreditCommand {
    fn bounds(&self) -> Result<(), Exceeded> {
        use v1::credit_command::Body;
        id("commandId", &self.command_id)?;
        id("tenantId", &self.tenant_id)?;
        match &self.body {
            Some(Body::Fund(f)) => {
                id("fund.lotId", &f.lot_id)?;
                id("fund.amount", &f.amount)?;
                id("fund.currency", &f.currency)?;
            }
            Some(Body::RechargeSucceeded(r)) => {
                id("rechargeSucceeded.lotId", &r.lot_id)?;
                id("rechargeSucceeded.amount", &r.amount)?;
                id("rechargeSucceeded.currency", &r.currency)?;
            }
            Some(Body::RechargeFailed(r)) => text("rechargeFailed.reason", &r.reason)?,
            Some(Body::Adjustment(a)) => {
                id("adjustment.amount", &a.amount)?;
                id("adjustment.currency", &a.currency)?;
                text("adjustment.reason", &a.reason)?;
            }
            None => {}
        }
        Ok(())
    }
}

impl Bounded for v1::Tenant {
    fn bounds(&self) -> Result<(), Exceeded> {
        id("tenantId", &self.tenant_id)?;
        text("displayName", &self.display_name)?;
        id("currency", &self.currency)?;
        if let Some(r) = &self.auto_recharge {
            id("autoRecharge.trigger", &r.trigger)?;
            id("autoRecharge.amount", &r.amount)?;
        }
        let thresholds = &self.low_balance_thresholds;
        entries(|| "lowBalanceThresholds".to_owned(), thresholds.len(), MAX_LOW_BALANCE_THRESHOLDS)?;
        for threshold in thresholds {
            id("lowBalanceThresholds", threshold)?;
        }
        id("overdraftLimit", &self.overdraft_limit)?;
        id("rateCardId", &self.rate_card_id)
    }

    fn prescan(payload: &[u8]) -> Result<(), Exceeded> {
        entries(|| "lowBalanceThresholds".to_owned(), count(payload, 6), MAX_LOW_BALANCE_THRESHOLDS)
    }
}

impl Bounded for v1::User {
    fn bounds(&self) -> Result<(), Exceeded> {
        id("tenantId", &self.tenant_id)?;
        id("userId", &self.user_id)?;
        id("usageLocation", &self.usage_location)
    }
}

impl Bounded for v1::RateCard {
    fn bounds(&self) -> Result<(), Exceeded> {
        id("rateCardId", &self.rate_card_id)?;
        id("currency", &self.currency)?;
        entries(|| "versions".to_owned(), self.versions.len(), MAX_RATE_CARD_VERSIONS)?;
        for (j, v) in self.versions.iter().enumerate() {
            id(&format!("versions[{j}].version"), &v.version)?;
            entries(|| format!("versions[{j}].dialIn"), v.dial_in.len(), MAX_RATES_PER_TABLE)?;
            entries(|| format!("versions[{j}].dialOut"), v.dial_out.len(), MAX_RATES_PER_TABLE)?;
            // Field names are only formatted for a row that exceeds a bound.
            for (k, r) in v.dial_in.iter().enumerate() {
                row(|| format!("versions[{j}].dialIn[{k}]"), &r.prefix, "", r.price.as_ref())?;
            }
            for (k, r) in v.dial_out.iter().enumerate() {
                row(|| format!("versions[{j}].dialOut[{k}]"), &r.prefix, &r.description, r.price.as_ref())?;
            }
        }
        Ok(())
    }

    /// Versions (field 3), then each version's dial-in (3) and dial-out (4) rows: the order
    /// [`Bounded::bounds`] checks them in.
    fn prescan(payload: &[u8]) -> Result<(), Exceeded> {
        let mut versions = 0;
        let mut tables = Ok(());
        each_entry(payload, 3, |version| {
            let j = versions;
            versions += 1;
            for (field, name) in [(3, "dialIn"), (4, "dialOut")] {
                if tables.is_ok() {
                    tables = entries(|| format!("versions[{j}].{name}"), count(version, field), MAX_RATES_PER_TABLE);
                }
            }
        });
        entries(|| "versions".to_owned(), versions, MAX_RATE_CARD_VERSIONS)?;
        tables
    }
}

fn row(place: impl Fn() -> String, prefix: &str, description: &str, price: Option<&v1::Price>) -> Result<(), Exceeded> {
    let within = |field: &str, value: &str, max: usize| {
        if value.len() > max { text_within(&format!("{}.{field}", place()), value, max) } else { Ok(()) }
    };
    within("prefix", prefix, MAX_ID_BYTES)?;
    within("description", description, MAX_TEXT_BYTES)?;
    if let Some(p) = price {
        within("price.perMinute", &p.per_minute, MAX_ID_BYTES)?;
        within("price.connectionFee", &p.connection_fee, MAX_ID_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceeded<M: Bounded>(message: &M) -> (&'static str, String) {
        let e = message.bounds().unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn a_record_longer_than_the_limit_is_refused_before_decoding() {
        // Not a protobuf message at all: the size is checked first.
        let bytes = vec![0xff; 101];
        let e = decode::<v1::CallLegEvent>(&bytes, 100).unwrap_err();
        assert_eq!((e.code(), e.to_string()), ("too_large", "a value of 101 bytes, more than the 100 allowed".into()));
        let e = decode::<v1::CallLegEvent>(&bytes[..100], 100).unwrap_err();
        assert_eq!(e.code(), "decode");
    }

    #[test]
    fn an_id_is_at_most_256_bytes() {
        let mut event = v1::CallLegEvent { leg_id: "l".repeat(MAX_ID_BYTES), ..Default::default() };
        assert_eq!(event.bounds(), Ok(()));
        event.leg_id.push('l');
        assert_eq!(exceeded(&event), ("too_long", "legId is 257 bytes long, more than the 256 allowed".into()));
        let started = v1::LegStarted { remote_number: "1".repeat(300), ..Default::default() };
        let event = v1::CallLegEvent { body: Some(v1::call_leg_event::Body::Started(started)), ..Default::default() };
        assert_eq!(
            exceeded(&event),
            ("too_long", "started.remoteNumber is 300 bytes long, more than the 256 allowed".into())
        );
    }

    #[test]
    fn free_text_is_at_most_4096_bytes() {
        let failed = v1::RechargeFailed { reason: "r".repeat(MAX_TEXT_BYTES) };
        let mut command =
            v1::CreditCommand { body: Some(v1::credit_command::Body::RechargeFailed(failed)), ..Default::default() };
        assert_eq!(command.bounds(), Ok(()));
        let Some(v1::credit_command::Body::RechargeFailed(failed)) = &mut command.body else { unreachable!() };
        failed.reason.push('r');
        assert_eq!(
            exceeded(&command),
            ("too_long", "rechargeFailed.reason is 4097 bytes long, more than the 4096 allowed".into())
        );
        let tenant = v1::Tenant { display_name: "n".repeat(5000), ..Default::default() };
        assert_eq!(
            exceeded(&tenant),
            ("too_long", "displayName is 5000 bytes long, more than the 4096 allowed".into())
        );
    }

    #[test]
    fn a_tenant_has_at_most_100_low_balance_thresholds() {
        let mut tenant = v1::Tenant {
            low_balance_thresholds: vec!["1.00".into(); MAX_LOW_BALANCE_THRESHOLDS],
            ..Default::default()
        };
        assert_eq!(tenant.bounds(), Ok(()));
        tenant.low_balance_thresholds.push("1.00".into());
        assert_eq!(
            exceeded(&tenant),
            ("too_many", "lowBalanceThresholds has 101 entries, more than the 100 allowed".into())
        );
    }

    #[test]
    fn a_user_has_bounded_ids() {
        let user = v1::User { usage_location: "U".repeat(257), ..Default::default() };
        assert_eq!(exceeded(&user), ("too_long", "usageLocation is 257 bytes long, more than the 256 allowed".into()));
    }

    #[test]
    fn a_rate_card_has_at_most_1000_versions() {
        let mut card = v1::RateCard {
            versions: vec![v1::RateCardVersion::default(); MAX_RATE_CARD_VERSIONS],
            ..Default::default()
        };
        assert_eq!(card.bounds(), Ok(()));
        card.versions.push(v1::RateCardVersion::default());
        assert_eq!(exceeded(&card), ("too_many", "versions has 1001 entries, more than the 1000 allowed".into()));
    }

    #[test]
    fn a_rate_table_has_at_most_100_000_rows() {
        let version = v1::RateCardVersion {
            dial_out: vec![v1::DialOutRate::default(); MAX_RATES_PER_TABLE],
            dial_in: vec![v1::DialInRate::default(); MAX_RATES_PER_TABLE],
            ..Default::default()
        };
        let mut card = v1::RateCard { versions: vec![v1::RateCardVersion::default(), version], ..Default::default() };
        assert_eq!(card.bounds(), Ok(()));
        card.versions[1].dial_out.push(v1::DialOutRate::default());
        assert_eq!(
            exceeded(&card),
            ("too_many", "versions[1].dialOut has 100001 entries, more than the 100000 allowed".into())
        );
        card.versions[1].dial_in.push(v1::DialInRate::default());
        assert_eq!(
            exceeded(&card),
            ("too_many", "versions[1].dialIn has 100001 entries, more than the 100000 allowed".into())
        );
    }

    #[test]
    fn a_rate_row_has_bounded_strings() {
        let price = v1::Price { per_minute: "9".repeat(300), ..Default::default() };
        let row = v1::DialOutRate { prefix: "44".into(), price: Some(price), ..Default::default() };
        let version = v1::RateCardVersion { dial_out: vec![v1::DialOutRate::default(), row], ..Default::default() };
        let card = v1::RateCard { versions: vec![version], ..Default::default() };
        assert_eq!(
            exceeded(&card),
            ("too_long", "versions[0].dialOut[1].price.perMinute is 300 bytes long, more than the 256 allowed".into())
        );
    }

    #[test]
    fn repeated_fields_over_their_bounds_are_refused_before_decoding() {
        let version = v1::RateCardVersion {
            dial_out: vec![v1::DialOutRate::default(); MAX_RATES_PER_TABLE + 1],
            ..Default::default()
        };
        let card = v1::RateCard { versions: vec![v1::RateCardVersion::default(), version], ..Default::default() };
        // An unknown group in front hides nothing: it is skipped, not a reason to stop counting.
        let mut bytes = vec![(15 << 3) | 3, (1 << 3), 1, (15 << 3) | 4];
        bytes.extend(card.encode_to_vec());
        let expected = Exceeded::Entries { field: "versions[1].dialOut".into(), count: 100_001, max: 100_000 };
        assert_eq!(v1::RateCard::prescan(&bytes), Err(expected.clone()));
        let e = decode::<v1::RateCard>(&bytes, DEFAULT_MAX_RECORD_BYTES).unwrap_err();
        assert!(matches!(e, crate::Error::Limit(ref found) if *found == expected), "{e}");

        let card = v1::RateCard { versions: vec![v1::RateCardVersion::default(); 1001], ..Default::default() };
        assert_eq!(
            v1::RateCard::prescan(&card.encode_to_vec()).unwrap_err().to_string(),
            "versions has 1001 entries, more than the 1000 allowed"
        );
        let tenant = v1::Tenant { low_balance_thresholds: vec![String::new(); 101], ..Default::default() };
        assert_eq!(
            v1::Tenant::prescan(&tenant.encode_to_vec()).unwrap_err().to_string(),
            "lowBalanceThresholds has 101 entries, more than the 100 allowed"
        );
        // Within the bounds, and bytes that are not protobuf, pass to the decoder.
        let card = v1::RateCard { versions: vec![v1::RateCardVersion::default(); 1000], ..Default::default() };
        assert_eq!(v1::RateCard::prescan(&card.encode_to_vec()), Ok(()));
        assert_eq!(v1::RateCard::prescan(b"\x1a\xff\xff\xff"), Ok(()));
    }

    /// prost's recursion limit holds for unknown fields too: groups nested deeper than 100
    /// levels are refused, not followed down the stack.
    #[test]
    fn a_message_nested_past_the_recursion_limit_is_refused() {
        let nested = |depth: usize| {
            // Field 15, wire type 3 (start group) `depth` times, then as many end groups (type 4).
            let mut bytes = vec![(15 << 3) | 3; depth];
            bytes.extend(std::iter::repeat_n((15 << 3) | 4, depth));
            bytes
        };
        assert!(decode::<v1::CallLegEvent>(&nested(99), DEFAULT_MAX_RECORD_BYTES).is_ok());
        let e = decode::<v1::CallLegEvent>(&nested(100_000), DEFAULT_MAX_RECORD_BYTES).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string()),
            ("decode", "undecodable protobuf: failed to decode Protobuf message: recursion limit reached".into())
        );
    }
}
