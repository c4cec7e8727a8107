//! A tenant's changelog record ([`v1::TenantStateRecord`]) to and from the core's
//! [`TenantState`], exactly: every amount keeps its scale, so a state read back is the state
//! that was written, byte for byte when written again.
//!
//! The record holds what the worker persists in the tenant's own record; the open legs, the
//! parked ends and the retention windows have records of their own and are left empty here.

use prost::Message;
use rust_decimal::Decimal;
use tollgate_core::{self as core, Ledger, Lot, Money, TenantState, Totals, YearMonth};

use crate::convert::{Error, field, timestamp, wire_timestamp};
use crate::v1;

/// Appends the record of `state` to `buf`.
pub fn encode_tenant(state: &TenantState, buf: &mut Vec<u8>) {
    let ledger = &state.ledger;
    let Totals { funded, adjusted, usage_charges, forfeited, orphan_ends_dropped } = &state.totals;
    let record = v1::TenantStateRecord {
        balance: amount(ledger.balance()),
        debt: amount(ledger.debt()),
        lots: ledger
            .lots()
            .map(|lot| v1::CreditLot {
                lot_id: lot.lot_id.clone(),
                purchased: lot.purchased.map(|m| m.amount().to_string()),
                remaining: amount(lot.remaining),
                purchased_at: Some(wire_timestamp(lot.purchased_at)),
                expires_at: Some(wire_timestamp(lot.expires_at)),
            })
            .collect(),
        funded: amount(*funded),
        adjusted: amount(*adjusted),
        usage_charges: amount(*usage_charges),
        forfeited: amount(*forfeited),
        orphan_ends_dropped: *orphan_ends_dropped,
        credit_sequence: state.credit_sequence,
        depleted: state.depleted,
        low_balance_fired: state.low_balance_fired.iter().map(|m| m.amount().to_string()).collect(),
        recharge_pending: state.recharge_pending,
        recharge_failed: state.recharge_failed,
        pool_year: state.pool.month.year,
        pool_month: u32::from(state.pool.month.month),
        pool_used_minutes: state.pool.used_minutes,
        pool_alerted_80: state.pool.alerted_80,
        pool_alerted_100: state.pool.alerted_100,
        watermark: Some(wire_timestamp(state.watermark)),
        forgotten_before: (state.forgotten_before != core::Timestamp::default())
            .then(|| wire_timestamp(state.forgotten_before)),
        earlier_pools: state
            .earlier_pools
            .iter()
            .map(|pool| v1::PoolMonth {
                year: pool.month.year,
                month: u32::from(pool.month.month),
                used_minutes: pool.used_minutes,
                alerted_80: pool.alerted_80,
                alerted_100: pool.alerted_100,
            })
            .collect(),
        currency: state.currency.map(|c| c.code().to_owned()).unwrap_or_default(),
    };
    // Encoding into a `Vec` cannot run out of room.
    let _ = record.encode(buf);
}

/// The record of `state`.
pub fn tenant_record(state: &TenantState) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    encode_tenant(state, &mut buf);
    buf
}

/// Reads a record back (legs, parked ends and windows empty).
pub fn decode_tenant(bytes: &[u8]) -> Result<TenantState, Error> {
    let record = v1::TenantStateRecord::decode(bytes)?;
    let lots = record
        .lots
        .into_iter()
        .map(|lot| {
            Ok(Lot {
                lot_id: lot.lot_id,
                purchased: lot.purchased.as_deref().map(|s| money(s, "lots.purchased")).transpose()?,
                remaining: money(&lot.remaining, "lots.remaining")?,
                purchased_at: timestamp(lot.purchased_at, "lots.purchasedAt")?,
                expires_at: timestamp(lot.expires_at, "lots.expiresAt")?,
            })
        })
        .collect::<Result<Vec<Lot>, Error>>()?;
    let month = |month: u32, field: &'static str| {
        u8::try_from(month).map_err(|_| Error::Field { field, source: core::Error::InvalidAmount(month.to_string()) })
    };
    let earlier_pools = record
        .earlier_pools
        .iter()
        .map(|pool| {
            Ok(core::state::PoolUsage {
                month: YearMonth { year: pool.year, month: month(pool.month, "earlierPools.month")? },
                used_minutes: pool.used_minutes,
                alerted_80: pool.alerted_80,
                alerted_100: pool.alerted_100,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(TenantState {
        ledger: Ledger::from_parts(lots, money(&record.debt, "debt")?, money(&record.balance, "balance")?),
        totals: Totals {
            funded: money(&record.funded, "funded")?,
            adjusted: money(&record.adjusted, "adjusted")?,
            usage_charges: money(&record.usage_charges, "usageCharges")?,
            forfeited: money(&record.forfeited, "forfeited")?,
            orphan_ends_dropped: record.orphan_ends_dropped,
        },
        credit_sequence: record.credit_sequence,
        depleted: record.depleted,
        low_balance_fired: record
            .low_balance_fired
            .iter()
            .map(|s| money(s, "lowBalanceFired"))
            .collect::<Result<_, Error>>()?,
        recharge_pending: record.recharge_pending,
        recharge_failed: record.recharge_failed,
        pool: core::state::PoolUsage {
            month: YearMonth { year: record.pool_year, month: month(record.pool_month, "poolMonth")? },
            used_minutes: record.pool_used_minutes,
            alerted_80: record.pool_alerted_80,
            alerted_100: record.pool_alerted_100,
        },
        earlier_pools,
        currency: held_currency(&record.currency)?,
        watermark: record.watermark.map_or(Ok(core::Timestamp::default()), |w| timestamp(Some(w), "watermark"))?,
        forgotten_before: record
            .forgotten_before
            .map_or(Ok(core::Timestamp::default()), |w| timestamp(Some(w), "forgottenBefore"))?,
        ..TenantState::default()
    })
}

/// The balance of a record and the currency it is held in (`None` in a record written before
/// the currency was kept), read without the rest of it.
pub fn decode_balance(bytes: &[u8]) -> Result<(Money, Option<core::Currency>), Error> {
    let record = v1::TenantBalance::decode(bytes)?;
    Ok((money(&record.balance, "balance")?, held_currency(&record.currency)?))
}

/// A record's `currency` field: empty in records written before it was kept.
fn held_currency(code: &str) -> Result<Option<core::Currency>, Error> {
    match code {
        "" => Ok(None),
        code => Ok(Some(field(core::Currency::from_code(code), "currency")?)),
    }
}

/// Appends the record of a retention-window entry remembered at `at` (with the input's
/// fingerprint for an applied id) to `buf`.
pub fn encode_window(at: core::Timestamp, fingerprint: Option<u64>, buf: &mut Vec<u8>) {
    let record = v1::WindowEntryRecord { at: Some(wire_timestamp(at)), fingerprint };
    // Encoding into a `Vec` cannot run out of room.
    let _ = record.encode(buf);
}

/// Reads a window entry's record back: when it was remembered, and the fingerprint.
pub fn decode_window(bytes: &[u8]) -> Result<(core::Timestamp, Option<u64>), Error> {
    let record = v1::WindowEntryRecord::decode(bytes)?;
    Ok((timestamp(record.at, "at")?, record.fingerprint))
}

/// The entries of one window segment: applied ids (id, time, fingerprint) and closed legs
/// (id, time).
pub type Segment<S> = (Vec<(S, core::Timestamp, u64)>, Vec<(S, core::Timestamp)>);

/// Appends a window segment's record ([`v1::WindowSegmentRecord`]) holding `applied` and
/// `closed`, written straight from the borrowed ids (the same bytes as prost's encoding of the
/// message).
pub fn encode_segment(applied: &[(&str, core::Timestamp, u64)], closed: &[(&str, core::Timestamp)], buf: &mut Vec<u8>) {
    use crate::encode::{message_header, string, string_len, timestamp, timestamp_len};
    let entry_len = |id: &str, at, fingerprint: Option<u64>| {
        string_len(1, id) + timestamp_len(2, at) + fingerprint.map_or(0, |_| prost::encoding::key_len(3) + 8)
    };
    let entry = |tag, id: &str, at, fingerprint: Option<u64>, buf: &mut Vec<u8>| {
        message_header(tag, entry_len(id, at, fingerprint), buf);
        string(1, id, buf);
        timestamp(2, at, buf);
        if let Some(fingerprint) = fingerprint {
            prost::encoding::encode_key(3, prost::encoding::WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&fingerprint.to_le_bytes());
        }
    };
    for &(id, at, fingerprint) in applied {
        entry(1, id, at, Some(fingerprint), buf);
    }
    for &(id, at) in closed {
        entry(2, id, at, None, buf);
    }
}

/// Reads a window segment's record back.
pub fn decode_segment(bytes: &[u8]) -> Result<Segment<String>, Error> {
    let record = v1::WindowSegmentRecord::decode(bytes)?;
    let applied = record
        .applied
        .into_iter()
        .map(|e| Ok((e.id, timestamp(e.at, "applied.at")?, e.fingerprint.unwrap_or_default())))
        .collect::<Result<_, Error>>()?;
    let closed =
        record.closed.into_iter().map(|e| Ok((e.id, timestamp(e.at, "closed.at")?))).collect::<Result<_, Error>>()?;
    Ok((applied, closed))
}

/// An amount as the record writes it: its exact decimal text, the empty string for a zero
/// without decimals (protobuf leaves an empty string out).
fn amount(m: Money) -> String {
    let d = m.amount();
    if d.is_zero() && d.scale() == 0 && !d.is_sign_negative() { String::new() } else { d.to_string() }
}

/// Reads an amount back with its scale ([`Money`]'s own parser normalizes).
fn money(text: &str, name: &'static str) -> Result<Money, Error> {
    if text.is_empty() {
        return Ok(Money::ZERO);
    }
    let exact = (!text.contains(['e', 'E'])).then(|| Decimal::from_str_exact(text).ok()).flatten();
    field(exact.map(Money::new).ok_or_else(|| core::Error::InvalidAmount(text.to_owned())), name)
}

#[cfg(test)]
mod tests {
    use tollgate_core::Timestamp;

    use super::*;

    fn m(s: &str) -> Money {
        Money::new(s.parse().unwrap())
    }

    /// A state with every field set reads back equal, every amount with its scale, and
    /// writes the same bytes again.
    #[test]
    fn a_tenant_reads_back_exactly() {
        let at = Timestamp::new(1_793_577_600, 250).unwrap();
        let mut state = TenantState::default();
        state.ledger.credit("lot-1".into(), m("100.00"), at);
        state.ledger.credit("lot-2".into(), m("5.5"), at.plus_months(1));
        state.ledger.debit(m("0.0240"), at);
        state.totals = Totals {
            funded: m("105.50"),
            adjusted: m("-1.25"),
            usage_charges: m("0.0240"),
            forfeited: m("0.00"),
            orphan_ends_dropped: 3,
        };
        state.credit_sequence = 7;
        state.depleted = true;
        state.low_balance_fired = vec![m("10.00"), m("5")];
        state.recharge_pending = true;
        state.recharge_failed = true;
        state.pool = core::state::PoolUsage {
            month: YearMonth { year: 2026, month: 11 },
            used_minutes: 42,
            alerted_80: true,
            alerted_100: false,
        };
        state.earlier_pools = vec![core::state::PoolUsage {
            month: YearMonth { year: 2026, month: 10 },
            used_minutes: 60,
            alerted_80: true,
            alerted_100: true,
        }];
        state.watermark = at;
        state.forgotten_before = Timestamp::new(1_793_404_800, 0).unwrap();
        state.currency = Some(core::Currency::from_code("EUR").unwrap());
        let bytes = tenant_record(&state);
        let back = decode_tenant(&bytes).unwrap();
        assert_eq!(back, state);
        let texts = |s: &TenantState| {
            let mut all: Vec<String> = s.ledger.lots().map(|l| l.remaining.to_string()).collect();
            all.extend(
                [s.balance(), s.totals.funded, s.totals.forfeited, s.totals.usage_charges].map(|m| m.to_string()),
            );
            all
        };
        assert_eq!(texts(&back), ["99.9760", "5.5", "105.4760", "105.50", "0.00", "0.0240"]);
        assert_eq!(tenant_record(&back), bytes);
        let (balance, currency) = decode_balance(&bytes).unwrap();
        assert_eq!((balance.to_string(), currency), ("105.4760".into(), state.currency));
        assert_eq!(decode_tenant(&tenant_record(&TenantState::default())).unwrap(), TenantState::default());
        assert_eq!(decode_balance(&tenant_record(&TenantState::default())).unwrap(), (Money::ZERO, None));
    }

    /// A segment is written as prost writes the message, and reads back entry by entry.
    #[test]
    fn a_window_segment_is_prosts_encoding_and_reads_back() {
        let at = |secs, nanos| Timestamp::new(secs, nanos).unwrap();
        let applied = [("e-1", at(1_793_577_600, 0), 0), ("leg-2-ended", at(1_793_577_601, 999), u64::MAX)];
        let closed = [("leg-2", at(1_793_577_601, 999)), ("x", at(0, 0))];
        let mut buf = Vec::new();
        encode_segment(&applied, &closed, &mut buf);
        let entry = |id: &str, t: Timestamp, fingerprint| v1::WindowSegmentEntry {
            id: id.into(),
            at: Some(wire_timestamp(t)),
            fingerprint,
        };
        let expected = v1::WindowSegmentRecord {
            applied: applied.iter().map(|&(id, t, f)| entry(id, t, Some(f))).collect(),
            closed: closed.iter().map(|&(id, t)| entry(id, t, None)).collect(),
        };
        assert_eq!(buf, expected.encode_to_vec());
        let (back_applied, back_closed) = decode_segment(&buf).unwrap();
        assert_eq!(back_applied, applied.map(|(id, t, f)| (id.to_owned(), t, f)));
        assert_eq!(back_closed, closed.map(|(id, t)| (id.to_owned(), t)));
        let mut empty = Vec::new();
        encode_segment(&[], &[], &mut empty);
        assert!(empty.is_empty() && decode_segment(&empty).unwrap() == (vec![], vec![]));
    }

    /// A window entry reads back with its time and fingerprint, in a few bytes.
    #[test]
    fn a_window_entry_reads_back() {
        let at = Timestamp::new(1_793_577_600, 7).unwrap();
        for fingerprint in [None, Some(0), Some(u64::MAX)] {
            let mut buf = Vec::new();
            encode_window(at, fingerprint, &mut buf);
            assert!(buf.len() <= 20, "{} bytes", buf.len());
            assert_eq!(decode_window(&buf).unwrap(), (at, fingerprint));
        }
        assert!(matches!(decode_window(&[]), Err(Error::Missing("at"))));
    }

    /// A record that is not one, or holds an amount that is not, is refused with the field.
    #[test]
    fn refuses_what_is_not_a_record() {
        assert!(matches!(decode_tenant(b"{\"ledger\":{}}"), Err(Error::Decode(_))));
        let record = v1::TenantStateRecord { balance: "1e3".into(), ..Default::default() };
        let error = decode_tenant(&record.encode_to_vec()).unwrap_err();
        assert_eq!(error.to_string(), "balance: invalid amount \"1e3\"");
    }
}
