//! Inputs: call-leg events and credit commands, already validated by the wire layer.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::number::E164;
use crate::reference::TenantId;
use crate::{Id, Timestamp};

/// Anything the rater consumes for one tenant.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Input {
    /// A call-leg event.
    Leg(CallLegEvent),
    /// A credit command.
    Credit(CreditCommand),
}

impl Input {
    /// The tenant the input belongs to (and its Kafka key).
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Input::Leg(e) => &e.tenant_id,
            Input::Credit(c) => &c.tenant_id,
        }
    }

    /// The idempotency key.
    pub fn id(&self) -> &Id {
        match self {
            Input::Leg(e) => &e.event_id,
            Input::Credit(c) => &c.command_id,
        }
    }

    /// When it happened.
    pub fn occurred_at(&self) -> Timestamp {
        match self {
            Input::Leg(e) => e.occurred_at,
            Input::Credit(c) => c.occurred_at,
        }
    }
}

/// How a leg joined the meeting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum LegKind {
    /// Dialled the toll bridge number.
    DialInToll,
    /// Dialled a toll-free bridge number.
    DialInTollFree,
    /// The meeting dialled out.
    DialOut,
    /// "Call me at": a dial-out to a participant.
    CallMeAt,
    /// App / VoIP join: never billed, never blocked.
    Voip,
}

/// One event of a leg's life.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CallLegEvent {
    /// Idempotency key.
    pub event_id: Id,
    /// Tenant owning the meeting.
    pub tenant_id: TenantId,
    /// The meeting.
    pub conference_id: Id,
    /// The controller's call id.
    pub call_id: Id,
    /// Unique within the tenant.
    pub leg_id: Id,
    /// The meeting organizer: every PSTN leg is billed to and policy-checked against them.
    pub organizer_id: Id,
    /// When the event happened; for `Started`, the leg's start.
    pub occurred_at: Timestamp,
    /// What happened.
    pub body: LegBody,
}

/// What happened to the leg.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum LegBody {
    /// The leg connected.
    Started(LegStarted),
    /// The leg is still up after `elapsed_seconds` connected seconds.
    Interim {
        /// Connected seconds so far.
        elapsed_seconds: u32,
    },
    /// The leg is over.
    Ended(LegEnded),
}

/// A started leg.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LegStarted {
    /// How it joined.
    pub kind: LegKind,
    /// The dialled bridge number (dial-in legs).
    pub bridge_number: Option<E164>,
    /// The other party (the destination of dial-out legs).
    pub remote_number: Option<E164>,
}

/// How long an ended leg was connected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum LegDuration {
    /// Connected seconds measured by the controller.
    ConnectedSeconds(u32),
    /// End instant: duration = end - start, a started second counting as one.
    EndedAt(Timestamp),
}

/// Why a leg ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum DisconnectCause {
    /// Not given.
    #[default]
    Unspecified,
    /// Normal hang-up.
    Normal,
    /// Never answered: zero billable seconds.
    NoAnswer,
    /// Busy: zero billable seconds.
    Busy,
    /// Failed to connect: zero billable seconds.
    Failed,
    /// The controller carried out a tollgate disconnect decision.
    CreditCutoff,
    /// The meeting ended.
    MeetingEnded,
}

impl DisconnectCause {
    /// Whether the leg never connected (billed zero seconds whatever the duration says).
    pub const fn never_connected(self) -> bool {
        matches!(self, DisconnectCause::NoAnswer | DisconnectCause::Busy | DisconnectCause::Failed)
    }
}

/// An ended leg.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LegEnded {
    /// Its duration.
    pub duration: LegDuration,
    /// Why it ended.
    pub cause: DisconnectCause,
}

/// A command on the credit balance.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CreditCommand {
    /// Idempotency key.
    pub command_id: Id,
    /// The tenant.
    pub tenant_id: TenantId,
    /// When it was issued.
    pub occurred_at: Timestamp,
    /// What to do.
    pub body: CreditBody,
}

/// A funded lot of credits.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct LotFunding {
    /// Purchase id.
    pub lot_id: String,
    /// Amount (> 0).
    pub amount: Money,
    /// Must equal the tenant's currency.
    pub currency: Currency,
    /// Purchase instant: the lot expires 12 months later.
    pub purchased_at: Timestamp,
}

/// What a credit command does.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CreditBody {
    /// A one-time purchase.
    Fund(LotFunding),
    /// A requested auto-recharge was paid.
    RechargeSucceeded(LotFunding),
    /// A requested auto-recharge failed.
    RechargeFailed {
        /// Why.
        reason: String,
    },
    /// An administrator's correction: positive adds a lot, negative debits FIFO.
    Adjust {
        /// Signed amount (non-zero).
        amount: Money,
        /// Must equal the tenant's currency.
        currency: Currency,
        /// Why.
        reason: String,
    },
}
