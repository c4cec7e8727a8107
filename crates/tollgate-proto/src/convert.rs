//! Conversions between the `tollgate.v1` wire messages and `tollgate-core` types.
//!
//! Inbound (wire -> core) conversions validate: every required field present, enums
//! specified, amounts decimal, numbers E.164. They are where E.164 strings are parsed (once).
//! Their errors name fields as the proto3 JSON mapping spells them (`fund.purchasedAt`), the
//! form people write, and name a oneof by its choices ("one of started, interim, ended").
//! A refused reference-data object is named (`tenant "contoso"`, `rate card "usd" version
//! "v1" dialOut prefix "44"`), with its place in a `ReferenceData` document
//! ([`Error::path`]) so that a file's line can be reported ([`crate::locate::line_of`]).
//! Outbound (core -> wire) conversions are total. Every amount of money goes through one
//! function, [`wire_money`]: at least the currency's minor units (`-0.80 USD`, `120 JPY`),
//! never rounded. Numbers, prefixes and codes are written with the core's exact-size string
//! builders (`String::from`) rather than `to_string()`: the same text without the formatter.

use std::str::FromStr;

use tollgate_core as core;
use tollgate_core::{Country, Currency, E164, Money, TenantId};

use crate::Timestamp;
use crate::limits::{self, Bounded};
use crate::v1;

/// Why a wire message could not become a core value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a protobuf message of the expected type.
    #[error("undecodable protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A required field (its JSON name) is absent or empty.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// None of the fields of a oneof is set (their JSON names).
    #[error("missing one of {0}")]
    MissingOneOf(&'static str),
    /// An enum field holds UNSPECIFIED or an unknown value.
    #[error("field {field} has an unknown or unspecified value {value}")]
    BadEnum {
        /// Field (JSON name).
        field: &'static str,
        /// Raw value.
        value: i32,
    },
    /// The value of a field (its JSON name) that the core refuses.
    #[error("{field}: {source}")]
    Field {
        /// Field (JSON name).
        field: &'static str,
        /// Why.
        source: core::Error,
    },
    /// A reference-data object (tenant, user, rate card, version, rate row) that was refused.
    #[error("{object}: {source}")]
    Object {
        /// Which object: `tenant "contoso"`, `rate card "usd" version "v1" dialOut prefix "44"`.
        object: String,
        /// Where it is in a `ReferenceData` document: (array field, index) from the top.
        path: Vec<(&'static str, usize)>,
        /// Why.
        source: Box<Error>,
    },
    /// A value the core refuses that belongs to no single field.
    #[error(transparent)]
    Core(#[from] core::Error),
    /// The record exceeds a bound on its size, a repeated field or a string
    /// ([`crate::limits`]).
    #[error(transparent)]
    Limit(#[from] crate::limits::Exceeded),
}

impl Error {
    /// Machine-readable code for dead letters: `decode`, `invalid`, a bound's (`too_large`,
    /// `too_many`, `too_long`) or the core's.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Decode(_) => "decode",
            Error::Core(e) | Error::Field { source: e, .. } => e.code(),
            Error::Object { source, .. } => source.code(),
            Error::Limit(e) => e.code(),
            Error::Missing(_) | Error::MissingOneOf(_) | Error::BadEnum { .. } => "invalid",
        }
    }

    /// For a refused reference-data object, where it is in a `ReferenceData` document: the
    /// array fields (JSON names) and indexes that lead to it, from the top.
    pub fn path(&self) -> Option<&[(&'static str, usize)]> {
        match self {
            Error::Object { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Names the object this error is about and where it is (see [`Error::path`]); an error
    /// about an object inside it keeps its own name and gets `place` put in front of its path.
    fn in_object(self, object: impl FnOnce() -> String, place: Option<(&'static str, usize)>) -> Error {
        match self {
            Error::Object { object, mut path, source } => {
                path.splice(0..0, place);
                Error::Object { object, path, source }
            }
            other => Error::Object { object: object(), path: place.into_iter().collect(), source: Box::new(other) },
        }
    }

    /// Puts `place` in front of the path of an object's error.
    fn at(self, place: (&'static str, usize)) -> Error {
        match self {
            Error::Object { object, mut path, source } => {
                path.insert(0, place);
                Error::Object { object, path, source }
            }
            other => other,
        }
    }
}

/// Names the field of a core error.
pub(crate) fn field<T>(result: std::result::Result<T, core::Error>, field: &'static str) -> Result<T> {
    result.map_err(|source| Error::Field { field, source })
}

type Result<T> = std::result::Result<T, Error>;

/// `text.trim().is_empty()`, stopping at the first character that is not whitespace instead
/// of trimming both ends (six ids per event are checked).
pub(crate) fn is_blank(text: &str) -> bool {
    text.chars().all(char::is_whitespace)
}

fn required(value: String, field: &'static str) -> Result<String> {
    if is_blank(&value) { Err(Error::Missing(field)) } else { Ok(value) }
}

fn money(text: &str, name: &'static str) -> Result<Money> {
    if is_blank(text) {
        return Err(Error::Missing(name));
    }
    field(bounded_money(text), name)
}

fn money_or_zero(text: &str, name: &'static str) -> Result<Money> {
    if is_blank(text) { Ok(Money::ZERO) } else { field(bounded_money(text), name) }
}

/// An amount of at most [`limits::MAX_AMOUNT_DIGITS`] digits before the point.
fn bounded_money(text: &str) -> std::result::Result<Money, core::Error> {
    let money = Money::from_str(text)?;
    let bound = rust_decimal::Decimal::from(10u64.pow(limits::MAX_AMOUNT_DIGITS));
    if money.amount().abs() >= bound {
        return Err(core::Error::Invalid(format!(
            "amount {:?} has more than {} digits before the point",
            text.trim(),
            limits::MAX_AMOUNT_DIGITS
        )));
    }
    Ok(money)
}

fn currency(text: String, name: &'static str) -> Result<Currency> {
    field(Currency::from_code(&required(text, name)?), name)
}

fn tenant_id(text: String, name: &'static str) -> Result<TenantId> {
    field(TenantId::new(required(text, name)?), name)
}

pub(crate) fn timestamp(ts: Option<Timestamp>, name: &'static str) -> Result<core::Timestamp> {
    let ts = ts.ok_or(Error::Missing(name))?;
    let nanos = u32::try_from(ts.nanos).map_err(|_| Error::Field {
        field: name,
        source: core::Error::InvalidTimestamp { secs: ts.seconds, nanos: 0 },
    })?;
    field(core::Timestamp::new(ts.seconds, nanos), name)
}

/// **The** text of an amount of money on the wire, in every output: written with at least the
/// currency's minor units (`-0.8` USD is `-0.80`, `120` JPY is `120`) and never rounded (a
/// per-minute price of `0.0147` keeps its digits).
pub fn wire_money(amount: Money, currency: Currency) -> String {
    currency.format(amount)
}

/// A core instant on the wire.
pub fn wire_timestamp(ts: core::Timestamp) -> Timestamp {
    Timestamp { seconds: ts.unix_seconds(), nanos: ts.subsec_nanos() as i32 }
}

fn number(text: String, name: &'static str) -> Result<Option<E164>> {
    if is_blank(&text) {
        return Ok(None);
    }
    field(E164::parse(&text), name).map(Some)
}

fn bad_enum(field: &'static str, value: i32) -> Error {
    Error::BadEnum { field, value }
}

// ---------------------------------------------------------------------------------------
// Inputs

/// A leg kind on the wire as the core's; `None` for UNSPECIFIED or a value this release does
/// not know.
pub(crate) fn leg_kind(value: i32) -> Option<core::LegKind> {
    Some(match v1::LegKind::try_from(value).ok()? {
        v1::LegKind::DialInToll => core::LegKind::DialInToll,
        v1::LegKind::DialInTollFree => core::LegKind::DialInTollFree,
        v1::LegKind::DialOut => core::LegKind::DialOut,
        v1::LegKind::CallMeAt => core::LegKind::CallMeAt,
        v1::LegKind::Voip => core::LegKind::Voip,
        v1::LegKind::Unspecified => return None,
    })
}

/// A disconnect cause on the wire as the core's (UNSPECIFIED included); `None` for a value
/// this release does not know.
pub(crate) fn disconnect_cause(value: i32) -> Option<core::DisconnectCause> {
    Some(match v1::DisconnectCause::try_from(value).ok()? {
        v1::DisconnectCause::Unspecified => core::DisconnectCause::Unspecified,
        v1::DisconnectCause::Normal => core::DisconnectCause::Normal,
        v1::DisconnectCause::NoAnswer => core::DisconnectCause::NoAnswer,
        v1::DisconnectCause::Busy => core::DisconnectCause::Busy,
        v1::DisconnectCause::Failed => core::DisconnectCause::Failed,
        v1::DisconnectCause::CreditCutoff => core::DisconnectCause::CreditCutoff,
        v1::DisconnectCause::MeetingEnded => core::DisconnectCause::MeetingEnded,
    })
}

impl TryFrom<v1::InputRecord> for core::Input {
    type Error = Error;
    fn try_from(record: v1::InputRecord) -> Result<Self> {
        match record.record.ok_or(Error::MissingOneOf("callLeg, creditCommand"))? {
            v1::input_record::Record::CallLeg(event) => event.try_into(),
            v1::input_record::Record::CreditCommand(command) => command.try_into(),
        }
    }
}

impl TryFrom<v1::CallLegEvent> for core::Input {
    type Error = Error;
    fn try_from(e: v1::CallLegEvent) -> Result<Self> {
        e.bounds()?;
        let body = match e.body.ok_or(Error::MissingOneOf("started, interim, ended"))? {
            v1::call_leg_event::Body::Started(s) => {
                let kind = leg_kind(s.kind).ok_or_else(|| bad_enum("started.kind", s.kind))?;
                core::LegBody::Started(core::LegStarted {
                    kind,
                    bridge_number: number(s.bridge_number, "started.bridgeNumber")?,
                    remote_number: number(s.remote_number, "started.remoteNumber")?,
                })
            }
            v1::call_leg_event::Body::Interim(i) => core::LegBody::Interim { elapsed_seconds: i.elapsed_seconds },
            v1::call_leg_event::Body::Ended(end) => {
                let cause = disconnect_cause(end.cause).ok_or_else(|| bad_enum("ended.cause", end.cause))?;
                let duration = match end.duration.ok_or(Error::MissingOneOf("ended.connectedSeconds, ended.endedAt"))? {
                    v1::leg_ended::Duration::ConnectedSeconds(s) => core::LegDuration::ConnectedSeconds(s),
                    v1::leg_ended::Duration::EndedAt(t) => {
                        core::LegDuration::EndedAt(timestamp(Some(t), "ended.endedAt")?)
                    }
                };
                core::LegBody::Ended(core::LegEnded { duration, cause })
            }
        };
        Ok(core::Input::Leg(core::CallLegEvent {
            event_id: required(e.event_id, "eventId")?.into(),
            tenant_id: tenant_id(e.tenant_id, "tenantId")?,
            conference_id: e.conference_id.into(),
            call_id: e.call_id.into(),
            leg_id: required(e.leg_id, "legId")?.into(),
            organizer_id: e.organizer_id.into(),
            occurred_at: timestamp(e.occurred_at, "occurredAt")?,
            body,
        }))
    }
}

/// A funded lot; `names` are the JSON names of its amount, currency and purchase instant
/// (under `fund` or `rechargeSucceeded`).
fn lot(
    lot_id: String,
    amount: &str,
    currency_code: String,
    purchased_at: Option<Timestamp>,
    [amount_name, currency_name, purchased_at_name]: [&'static str; 3],
) -> Result<core::LotFunding> {
    Ok(core::LotFunding {
        lot_id,
        amount: money(amount, amount_name)?,
        currency: currency(currency_code, currency_name)?,
        purchased_at: timestamp(purchased_at, purchased_at_name)?,
    })
}

impl TryFrom<v1::CreditCommand> for core::Input {
    type Error = Error;
    fn try_from(c: v1::CreditCommand) -> Result<Self> {
        c.bounds()?;
        let body = match c.body.ok_or(Error::MissingOneOf("fund, rechargeSucceeded, rechargeFailed, adjustment"))? {
            v1::credit_command::Body::Fund(f) => core::CreditBody::Fund(lot(
                f.lot_id,
                &f.amount,
                f.currency,
                f.purchased_at,
                ["fund.amount", "fund.currency", "fund.purchasedAt"],
            )?),
            v1::credit_command::Body::RechargeSucceeded(r) => core::CreditBody::RechargeSucceeded(lot(
                r.lot_id,
                &r.amount,
                r.currency,
                r.purchased_at,
                ["rechargeSucceeded.amount", "rechargeSucceeded.currency", "rechargeSucceeded.purchasedAt"],
            )?),
            v1::credit_command::Body::RechargeFailed(r) => core::CreditBody::RechargeFailed { reason: r.reason },
            v1::credit_command::Body::Adjustment(a) => core::CreditBody::Adjust {
                amount: money(&a.amount, "adjustment.amount")?,
                currency: currency(a.currency, "adjustment.currency")?,
                reason: a.reason,
            },
        };
        Ok(core::Input::Credit(core::CreditCommand {
            command_id: required(c.command_id, "commandId")?.into(),
            tenant_id: tenant_id(c.tenant_id, "tenantId")?,
            occurred_at: timestamp(c.occurred_at, "occurredAt")?,
            body,
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Reference data

fn policy(value: i32, field: &'static str) -> Result<Option<core::DialoutPolicy>> {
    use core::DialoutPolicy as P;
    use v1::DialoutPolicy as W;
    Ok(Some(match W::try_from(value).map_err(|_| bad_enum(field, value))? {
        W::Unspecified => return Ok(None),
        W::CpcAndPstnInternational => P::CpcAndPstnInternational,
        W::CpcDomesticPstnInternational => P::CpcDomesticPstnInternational,
        W::CpcDisabledPstnInternational => P::CpcDisabledPstnInternational,
        W::CpcInternationalPstnDomestic => P::CpcInternationalPstnDomestic,
        W::CpcInternationalPstnDisabled => P::CpcInternationalPstnDisabled,
        W::CpcAndPstnDomestic => P::CpcAndPstnDomestic,
        W::CpcDomesticPstnDisabled => P::CpcDomesticPstnDisabled,
        W::CpcDisabledPstnDomestic => P::CpcDisabledPstnDomestic,
        W::CpcAndPstnDisabled => P::CpcAndPstnDisabled,
        W::CpcZoneAPstnInternational => P::CpcZoneAPstnInternational,
        W::CpcZoneAPstnDomestic => P::CpcZoneAPstnDomestic,
        W::CpcZoneAPstnDisabled => P::CpcZoneAPstnDisabled,
        W::GlobalDefault => P::GlobalDefault,
    }))
}

/// `"id"`, or a note that the id is missing, or too long to quote (it is refused:
/// [`crate::limits`]).
fn quoted_id(id: &str) -> String {
    if is_blank(id) {
        "(without an id)".to_owned()
    } else if id.len() > crate::limits::MAX_ID_BYTES {
        format!("(an id of {} bytes)", id.len())
    } else {
        format!("{id:?}")
    }
}

impl TryFrom<v1::Tenant> for core::Tenant {
    type Error = Error;
    /// Errors name the tenant: `tenant "contoso": autoRecharge.trigger: invalid amount "x"`.
    fn try_from(t: v1::Tenant) -> Result<Self> {
        let name = quoted_id(&t.tenant_id);
        tenant(t).map_err(|e| e.in_object(|| format!("tenant {name}"), None))
    }
}

fn tenant(t: v1::Tenant) -> Result<core::Tenant> {
    t.bounds()?;
    let id = tenant_id(t.tenant_id, "tenantId")?;
    let currency = currency(t.currency, "currency")?;
    let auto_recharge = match t.auto_recharge {
        Some(r) if r.enabled => {
            let amount = money(&r.amount, "autoRecharge.amount")?;
            if !amount.is_positive() || !currency.is_whole_minor_units(amount) {
                let source = core::Error::Invalid(format!(
                    "the recharge amount {:?} must be > 0 in whole {currency} minor units (it is paid as a funding)",
                    r.amount
                ));
                return Err(Error::Field { field: "autoRecharge.amount", source });
            }
            Some(core::AutoRecharge { trigger: money(&r.trigger, "autoRecharge.trigger")?, amount })
        }
        _ => None,
    };
    let cutoff = match v1::CutoffPolicy::try_from(t.cutoff_policy) {
        Ok(v1::CutoffPolicy::Unspecified | v1::CutoffPolicy::Finish) => core::CutoffPolicy::Finish,
        Ok(v1::CutoffPolicy::Disconnect) => core::CutoffPolicy::Disconnect,
        Err(_) => return Err(bad_enum("cutoffPolicy", t.cutoff_policy)),
    };
    let unpriced = match v1::UnpricedHandling::try_from(t.unpriced_handling) {
        Ok(v1::UnpricedHandling::Unspecified | v1::UnpricedHandling::Free) => core::UnpricedHandling::Free,
        Ok(v1::UnpricedHandling::Reject) => core::UnpricedHandling::Reject,
        Err(_) => return Err(bad_enum("unpricedHandling", t.unpriced_handling)),
    };
    let pool_split = match v1::PoolSplit::try_from(t.pool_split) {
        Ok(v1::PoolSplit::Unspecified | v1::PoolSplit::PerMinute) => core::PoolSplit::PerMinute,
        Ok(v1::PoolSplit::FinishInPool) => core::PoolSplit::FinishInPool,
        Err(_) => return Err(bad_enum("poolSplit", t.pool_split)),
    };
    let overdraft_limit = money_or_zero(&t.overdraft_limit, "overdraftLimit")?;
    if overdraft_limit.is_negative() {
        let source = core::Error::Invalid(format!("the overdraft limit {:?} is negative", t.overdraft_limit));
        return Err(Error::Field { field: "overdraftLimit", source });
    }
    let tenant = core::Tenant {
        id,
        currency,
        credits_enabled: t.credits_enabled,
        auto_recharge,
        low_balance_thresholds: t
            .low_balance_thresholds
            .iter()
            .map(|s| money(s, "lowBalanceThresholds"))
            .collect::<Result<_>>()?,
        overdraft_limit,
        cutoff,
        global_dialout_policy: policy(t.global_dialout_policy, "globalDialoutPolicy")?,
        subscription_licences: t.subscription_licences,
        pool_split,
        unpriced,
        rate_card_id: t.rate_card_id.into(),
    };
    Ok(tenant.validated()?)
}

impl TryFrom<v1::User> for core::User {
    type Error = Error;
    /// Errors name the user and its tenant: `user "alice" of tenant "contoso": usageLocation: ...`.
    fn try_from(u: v1::User) -> Result<Self> {
        let name = format!("user {} of tenant {}", quoted_id(&u.user_id), quoted_id(&u.tenant_id));
        user(u).map_err(|e| e.in_object(|| name, None))
    }
}

fn user(u: v1::User) -> Result<core::User> {
    u.bounds()?;
    let licence = match v1::LicenceModel::try_from(u.licence) {
        Ok(v1::LicenceModel::Unspecified | v1::LicenceModel::PayPerMinute) => core::LicenceModel::PayPerMinute,
        Ok(v1::LicenceModel::Subscription) => core::LicenceModel::Subscription,
        Err(_) => return Err(bad_enum("licence", u.licence)),
    };
    Ok(core::User {
        tenant_id: tenant_id(u.tenant_id, "tenantId")?,
        id: required(u.user_id, "userId")?,
        usage_location: field(Country::from_iso_code(&required(u.usage_location, "usageLocation")?), "usageLocation")?,
        dialout_policy: policy(u.dialout_policy, "dialoutPolicy")?,
        licence,
        allow_toll_free_dial_in: u.allow_toll_free_dial_in.unwrap_or(true),
    })
}

fn price(p: Option<v1::Price>) -> Result<core::Price> {
    let p = p.ok_or(Error::Missing("price"))?;
    let per_minute = money(&p.per_minute, "price.perMinute")?;
    let connection_fee = money_or_zero(&p.connection_fee, "price.connectionFee")?;
    for (name, amount) in [("price.perMinute", per_minute), ("price.connectionFee", connection_fee)] {
        if amount.is_negative() {
            return Err(Error::Field { field: name, source: core::Error::NegativePrice });
        }
    }
    let first = if p.first_increment_seconds == 0 { 60 } else { p.first_increment_seconds };
    let subsequent = if p.subsequent_increment_seconds == 0 { 60 } else { p.subsequent_increment_seconds };
    let increments = field(core::Increments::new(first, subsequent), "price.firstIncrementSeconds")?;
    Ok(core::Price::new(per_minute, connection_fee, increments)?)
}

/// One rate row's prefix and price, the row named by its table and prefix.
fn row<T>(
    table: &'static str,
    index: usize,
    prefix: &str,
    seen: &mut std::collections::HashSet<core::Prefix>,
    value: impl FnOnce() -> Result<T>,
) -> Result<(core::Prefix, T)> {
    let parsed = (|| {
        let parsed = field(core::Prefix::parse(prefix), "prefix")?;
        if !seen.insert(parsed) {
            return Err(Error::Field { field: "prefix", source: core::Error::DuplicatePrefix(prefix.to_owned()) });
        }
        Ok((parsed, value()?))
    })();
    parsed.map_err(|e| e.in_object(|| format!("{table} prefix {}", quoted_id(prefix)), Some((table, index))))
}

impl TryFrom<v1::RateCard> for core::RateCard {
    type Error = Error;
    /// Errors name the card, and the version and the rate row where there is one:
    /// `rate card "usd" version "v1" dialOut prefix "44": price.perMinute: invalid amount "x"`.
    fn try_from(card: v1::RateCard) -> Result<Self> {
        let name = format!("rate card {}", quoted_id(&card.rate_card_id));
        rate_card(card).map_err(|e| match e {
            Error::Object { object, path, source } => {
                Error::Object { object: format!("{name} {object}"), path, source }
            }
            other => other.in_object(|| name, None),
        })
    }
}

fn rate_card(card: v1::RateCard) -> Result<core::RateCard> {
    card.bounds()?;
    let id = required(card.rate_card_id, "rateCardId")?;
    let currency = currency(card.currency, "currency")?;
    let mut versions = Vec::with_capacity(card.versions.len());
    let mut starts = std::collections::HashSet::new();
    for (j, v) in card.versions.into_iter().enumerate() {
        let name = format!("version {}", quoted_id(&v.version));
        let version = version(v, &mut starts).map_err(|e| match e {
            Error::Object { object, mut path, source } => {
                path.insert(0, ("versions", j));
                Error::Object { object: format!("{name} {object}"), path, source }
            }
            other => other.in_object(|| name, Some(("versions", j))),
        })?;
        versions.push(version);
    }
    Ok(core::RateCard::new(id, currency, versions)?)
}

fn version(
    v: v1::RateCardVersion,
    starts: &mut std::collections::HashSet<core::Timestamp>,
) -> Result<core::RateCardVersion> {
    let effective_from = timestamp(v.effective_from, "effectiveFrom")?;
    if !starts.insert(effective_from) {
        return Err(Error::Field { field: "effectiveFrom", source: core::Error::DuplicateVersion(v.version) });
    }
    let mut toll = Vec::new();
    let mut toll_free = Vec::new();
    let (mut seen_toll, mut seen_toll_free) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for (k, r) in v.dial_in.into_iter().enumerate() {
        let (seen, rows) = match v1::NumberType::try_from(r.number_type) {
            Ok(v1::NumberType::Toll) => (&mut seen_toll, &mut toll),
            Ok(v1::NumberType::TollFree) => (&mut seen_toll_free, &mut toll_free),
            _ => {
                let e = bad_enum("numberType", r.number_type);
                return Err(e.in_object(|| format!("dialIn prefix {}", quoted_id(&r.prefix)), Some(("dialIn", k))));
            }
        };
        rows.push(row("dialIn", k, &r.prefix, seen, || price(r.price))?);
    }
    let mut seen_out = std::collections::HashSet::new();
    let dial_out = v
        .dial_out
        .into_iter()
        .enumerate()
        .map(|(k, r)| {
            row("dialOut", k, &r.prefix, &mut seen_out, || {
                Ok(core::DialOutRate { price: price(r.price)?, premium: r.premium })
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(core::RateCardVersion {
        version: v.version.into(),
        effective_from,
        dial_in_toll: core::PrefixTable::new(toll)?,
        dial_in_toll_free: core::PrefixTable::new(toll_free)?,
        dial_out: core::PrefixTable::new(dial_out)?,
    })
}

impl TryFrom<v1::ReferenceData> for core::Reference {
    type Error = Error;
    /// An error names the refused object and says where it is in the document
    /// ([`Error::path`]).
    fn try_from(data: v1::ReferenceData) -> Result<Self> {
        let mut reference = core::Reference::default();
        for (i, t) in data.tenants.into_iter().enumerate() {
            reference.put_tenant(t.try_into().map_err(|e: Error| e.at(("tenants", i)))?);
        }
        for (i, u) in data.users.into_iter().enumerate() {
            reference.put_user(u.try_into().map_err(|e: Error| e.at(("users", i)))?);
        }
        for (i, c) in data.rate_cards.into_iter().enumerate() {
            reference.put_rate_card(c.try_into().map_err(|e: Error| e.at(("rateCards", i)))?);
        }
        Ok(reference)
    }
}

// ---------------------------------------------------------------------------------------
// Outputs

pub(crate) fn capability(c: core::Capability) -> v1::Capability {
    match c {
        core::Capability::Ppm => v1::Capability::Ppm,
        core::Capability::Subscription => v1::Capability::Subscription,
        core::Capability::Pool => v1::Capability::Pool,
        core::Capability::Unpriced => v1::Capability::Unpriced,
    }
}

pub(crate) fn block_reason(r: core::BlockReason) -> v1::BlockReason {
    match r {
        core::BlockReason::Policy => v1::BlockReason::Policy,
        core::BlockReason::TollFreeDisabled => v1::BlockReason::TollFreeDisabled,
        core::BlockReason::NoCredit => v1::BlockReason::NoCredit,
        core::BlockReason::NoRate => v1::BlockReason::NoRate,
    }
}

/// A usage record's outcome and block reason (unspecified for a rated leg).
pub(crate) fn outcome(o: core::UsageOutcome) -> (v1::rated_usage::Outcome, v1::BlockReason) {
    match o {
        core::UsageOutcome::Rated => (v1::rated_usage::Outcome::Rated, v1::BlockReason::Unspecified),
        core::UsageOutcome::Blocked(r) => (v1::rated_usage::Outcome::Blocked, block_reason(r)),
    }
}

/// What pays for an allowed leg (unspecified for VoIP, which nothing pays for).
pub(crate) fn allowed_capability(c: Option<core::Capability>) -> v1::Capability {
    c.map_or(v1::Capability::Unspecified, capability)
}

pub(crate) fn call_type(t: core::CallType) -> v1::CallType {
    match t {
        core::CallType::ConfIn => v1::CallType::ConfIn,
        core::CallType::ConfOut => v1::CallType::ConfOut,
    }
}

pub(crate) fn number_type(t: core::NumberType) -> v1::NumberType {
    match t {
        core::NumberType::Toll => v1::NumberType::Toll,
        core::NumberType::TollFree => v1::NumberType::TollFree,
    }
}

impl From<core::RatedUsage> for v1::RatedUsage {
    fn from(u: core::RatedUsage) -> Self {
        let (outcome, reason) = outcome(u.outcome);
        v1::RatedUsage {
            usage_id: u.usage_id(),
            call_id: u.call_id.to_string(),
            conference_id: u.conference_id.to_string(),
            tenant_id: u.tenant_id.into(),
            organizer_id: u.organizer_id.to_string(),
            organizer_usage_location: u.organizer_usage_location.into(),
            call_type: call_type(u.call_type) as i32,
            number_type: number_type(u.number_type) as i32,
            international: u.international,
            destination_country: u.destination_country.into(),
            destination_number: u.destination_number.into(),
            started_at: Some(wire_timestamp(u.started_at)),
            ended_at: Some(wire_timestamp(u.ended_at)),
            duration_seconds: u.duration_seconds,
            billable_seconds: u.billable_seconds,
            pool_seconds: u.pool_seconds,
            connection_fee: wire_money(u.connection_fee, u.currency),
            charge: wire_money(u.charge, u.currency),
            currency: u.currency.into(),
            capability: capability(u.capability) as i32,
            rate_card_id: u.rate_card_id.to_string(),
            rate_card_version: u.rate_card_version.to_string(),
            rate_prefix: u.rate_prefix.map(String::from).unwrap_or_default(),
            price_per_minute: wire_money(u.price_per_minute, u.currency),
            outcome: outcome as i32,
            block_reason: reason as i32,
            balance_after: wire_money(u.balance_after, u.currency),
            flags: u.flags.names().into_iter().map(str::to_owned).collect(),
        }
    }
}

impl From<core::LegDecision> for v1::LegDecision {
    fn from(d: core::LegDecision) -> Self {
        use v1::leg_decision::{Allow, Block, Decision, Disconnect};
        let decision = match d.decision {
            core::Decision::Allow { max_affordable_seconds, capability: cap } => {
                Decision::Allow(Allow { max_affordable_seconds, capability: allowed_capability(cap) as i32 })
            }
            core::Decision::Block(reason) => Decision::Block(Block { reason: block_reason(reason) as i32 }),
            core::Decision::Disconnect { balance, currency } => {
                Decision::Disconnect(Disconnect { balance: wire_money(balance, currency) })
            }
        };
        v1::LegDecision {
            decision_id: d.decision_id(),
            tenant_id: d.tenant_id.into(),
            leg_id: d.leg_id.to_string(),
            call_id: d.call_id.to_string(),
            conference_id: d.conference_id.to_string(),
            decided_at: Some(wire_timestamp(d.decided_at)),
            decision: Some(decision),
        }
    }
}

impl From<core::CreditEvent> for v1::CreditEvent {
    fn from(c: core::CreditEvent) -> Self {
        use v1::credit_event::Kind;
        let kind = match c.kind {
            core::CreditEventKind::Funded => Kind::Funded,
            core::CreditEventKind::LowBalance => Kind::LowBalance,
            core::CreditEventKind::RechargeRequested => Kind::RechargeRequested,
            core::CreditEventKind::RechargeSucceeded => Kind::RechargeSucceeded,
            core::CreditEventKind::RechargeFailed => Kind::RechargeFailed,
            core::CreditEventKind::Depleted => Kind::Depleted,
            core::CreditEventKind::Restored => Kind::Restored,
            core::CreditEventKind::LotExpired => Kind::LotExpired,
            core::CreditEventKind::Pool80Percent => Kind::Pool80Percent,
            core::CreditEventKind::Pool100Percent => Kind::Pool100Percent,
            core::CreditEventKind::Adjusted => Kind::Adjusted,
        };
        v1::CreditEvent {
            credit_event_id: c.credit_event_id(),
            tenant_id: c.tenant_id.into(),
            sequence: c.sequence,
            occurred_at: Some(wire_timestamp(c.occurred_at)),
            kind: kind as i32,
            amount: wire_money(c.amount, c.currency),
            currency: c.currency.into(),
            balance_after: wire_money(c.balance_after, c.currency),
            detail: c.detail,
        }
    }
}

pub(crate) fn movement_kind(kind: core::MovementKind) -> v1::ledger_movement::Kind {
    use v1::ledger_movement::Kind;
    match kind {
        core::MovementKind::Debit => Kind::Debit,
        core::MovementKind::Funding => Kind::Funding,
        core::MovementKind::Forfeit => Kind::Forfeit,
        core::MovementKind::Adjustment => Kind::Adjustment,
    }
}

impl From<core::LedgerMovement> for v1::LedgerMovement {
    fn from(m: core::LedgerMovement) -> Self {
        let kind = movement_kind(m.kind);
        v1::LedgerMovement {
            movement_id: m.movement_id,
            tenant_id: m.tenant_id.into(),
            occurred_at: Some(wire_timestamp(m.occurred_at)),
            kind: kind as i32,
            amount: wire_money(m.amount, m.currency),
            currency: m.currency.into(),
            balance_after: wire_money(m.balance_after, m.currency),
            leg_id: m.leg_id,
            lot_id: m.lot_id,
        }
    }
}

impl From<core::LedgerMovement> for v1::OutputRecord {
    fn from(m: core::LedgerMovement) -> Self {
        v1::OutputRecord { record: Some(v1::output_record::Record::LedgerMovement(m.into())) }
    }
}

impl From<core::Output> for v1::OutputRecord {
    fn from(o: core::Output) -> Self {
        use v1::output_record::Record;
        let record = match o {
            core::Output::Usage(u) => Record::RatedUsage(u.into()),
            core::Output::Decision(d) => Record::LegDecision(d.into()),
            core::Output::Credit(c) => Record::CreditEvent(c.into()),
        };
        v1::OutputRecord { record: Some(record) }
    }
}
