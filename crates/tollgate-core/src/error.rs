//! The core's one error type. Business outcomes (blocked, unpriced, no credit) are values,
//! never errors: an `Err` means the input is malformed or contradicts what came before, and
//! the worker sends it to the dead-letter topic under [`Error::code`].

/// Why an input could not be applied. The tenant's state is unchanged when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A decimal amount could not be parsed.
    #[error("invalid amount {0:?}")]
    InvalidAmount(String),
    /// Not an ISO 4217 code.
    #[error("invalid currency {0:?}")]
    InvalidCurrency(String),
    /// Not an ISO 3166-1 alpha-2 code.
    #[error("invalid country {0:?}")]
    InvalidCountry(String),
    /// Not an E.164 number: not a `+` followed by 1 to 15 digits.
    #[error("invalid E.164 number {0:?}")]
    InvalidNumber(String),
    /// The number that prices a leg is not a possible number for its calling code (length or
    /// leading digits). The leg is closed: its later events are ignored.
    #[error("leg {leg:?}: {number} is not a possible number for its calling code (length or leading digits)")]
    ImpossibleNumber {
        /// Leg.
        leg: String,
        /// The number, as received.
        number: String,
    },
    /// Not a digit prefix.
    #[error("invalid rate prefix {0:?}")]
    InvalidPrefix(String),
    /// A prefix appears twice in one table.
    #[error("rate prefix {0} is listed twice")]
    DuplicatePrefix(String),
    /// Two rate card versions start at the same instant.
    #[error("rate card version {0:?} starts at the same instant as another")]
    DuplicateVersion(String),
    /// A zero billing increment, or one longer than an hour.
    #[error("billing increments must be 1 to 3600 seconds, got {first}/{subsequent}")]
    InvalidIncrements {
        /// First increment.
        first: u32,
        /// Subsequent increment.
        subsequent: u32,
    },
    /// A negative price or fee.
    #[error("prices and fees must not be negative")]
    NegativePrice,
    /// Outside 1970..=9999 or nanos out of range.
    #[error("timestamp out of range: {secs}s {nanos}ns")]
    InvalidTimestamp {
        /// Seconds.
        secs: i64,
        /// Nanoseconds.
        nanos: u32,
    },
    /// Any other malformed input.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The tenant is not in the reference data.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// The organizer is not a user of the tenant.
    #[error("unknown organizer {user:?} of tenant {tenant:?}")]
    UnknownOrganizer {
        /// Tenant.
        tenant: String,
        /// User.
        user: String,
    },
    /// An amount in another currency than the tenant's.
    #[error("currency mismatch: tenant uses {expected}, command uses {got}")]
    CurrencyMismatch {
        /// Tenant's currency.
        expected: String,
        /// Command's currency.
        got: String,
    },
    /// The tenant's reference names another currency than the one its money is held in
    /// (its state holds a balance, a total or a leg in progress in `held`). Nothing of the
    /// tenant is rated until its currency is set back: amounts carry no currency, and reading
    /// them in the new one would convert them one for one.
    #[error("tenant {tenant:?} holds money in {held}, but its reference now says {reference}: set the currency back")]
    CurrencyChanged {
        /// Tenant.
        tenant: String,
        /// The currency its money is held in.
        held: String,
        /// The currency its reference names now.
        reference: String,
    },
    /// Money for a tenant whose credits are not enabled: it could pay for no leg.
    #[error("tenant {tenant:?} does not have credits enabled: command {command:?} would fund a balance no leg can use")]
    CreditsDisabled {
        /// Tenant.
        tenant: String,
        /// The funding command.
        command: String,
    },
    /// The same event id was seen with different content: never re-rated.
    #[error("event id {0:?} was already applied with different content")]
    DuplicateConflict(String),
    /// A second `started` (with another event id) for a leg already started.
    #[error("leg {0:?} was already started")]
    LegAlreadyStarted(String),
    /// A second `ended` (with another event id) for a leg still waiting for its start.
    #[error("leg {0:?} already has an ended event waiting for its start")]
    LegAlreadyEnded(String),
    /// An input older than the retention window behind the tenant's newest event: it may
    /// have been applied and forgotten, so it is not applied again.
    #[error("event time {event_time} is before the retention horizon {horizon}")]
    TooLate {
        /// The input's event time.
        event_time: String,
        /// The oldest event time accepted.
        horizon: String,
    },
    /// An end before the leg's start.
    #[error("leg {leg:?} ends before it starts")]
    EndBeforeStart {
        /// Leg.
        leg: String,
    },
}

impl Error {
    /// A stable, machine-readable code for the dead-letter topic and metrics labels.
    pub const fn code(&self) -> &'static str {
        match self {
            Error::InvalidAmount(_)
            | Error::InvalidCurrency(_)
            | Error::InvalidCountry(_)
            | Error::InvalidPrefix(_)
            | Error::DuplicatePrefix(_)
            | Error::DuplicateVersion(_)
            | Error::InvalidIncrements { .. }
            | Error::NegativePrice
            | Error::InvalidTimestamp { .. }
            | Error::Invalid(_) => "invalid",
            Error::InvalidNumber(_) | Error::ImpossibleNumber { .. } => "invalid_number",
            Error::UnknownTenant(_) => "unknown_tenant",
            Error::UnknownOrganizer { .. } => "unknown_organizer",
            Error::CurrencyMismatch { .. } => "currency_mismatch",
            Error::CurrencyChanged { .. } => "currency_changed",
            Error::CreditsDisabled { .. } => "credits_disabled",
            Error::DuplicateConflict(_) => "duplicate_conflict",
            Error::LegAlreadyStarted(_) => "leg_already_started",
            Error::LegAlreadyEnded(_) => "leg_already_ended",
            Error::EndBeforeStart { .. } => "end_before_start",
            Error::TooLate { .. } => "too_late",
        }
    }
}
