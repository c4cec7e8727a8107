//! Dial-out restriction policy (RULES.md §3): the 13 fixed identities, their two
//! controls, and the user -> tenant global -> built-in default resolution.

use serde::{Deserialize, Serialize};

use crate::number::Country;

/// The *conferencing dial-out* control: which `conf_out` legs of a user's meetings may go.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ConferencingDialout {
    /// Any destination (default).
    InternationalAndDomestic,
    /// Only destinations in the organizer's usage location.
    DomesticOnly,
    /// Only Zone A destinations.
    ZoneA,
    /// No dial-out.
    Disabled,
}

impl ConferencingDialout {
    /// Whether a dial-out from a meeting organized by someone located in `organizer_location`
    /// to a number of `destination` country is allowed.
    pub fn allows(self, organizer_location: Country, destination: Country) -> bool {
        match self {
            ConferencingDialout::InternationalAndDomestic => true,
            ConferencingDialout::DomesticOnly => {
                destination != Country::NON_GEOGRAPHIC && destination == organizer_location
            }
            ConferencingDialout::ZoneA => destination.is_zone_a(),
            ConferencingDialout::Disabled => false,
        }
    }
}

/// The *user PSTN calls* control: the user's own (non-meeting) calls. tollgate rates meeting
/// legs only; the control is carried so the policy identity is complete and testable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum UserPstnDialout {
    /// Any destination.
    InternationalAndDomestic,
    /// Only destinations in the user's usage location.
    DomesticOnly,
    /// No outbound PSTN calls.
    Disabled,
}

impl UserPstnDialout {
    /// Whether the user's own call to `destination` is allowed. Emergency numbers always are.
    pub fn allows(self, usage_location: Country, destination: Country, emergency: bool) -> bool {
        emergency
            || match self {
                UserPstnDialout::InternationalAndDomestic => true,
                UserPstnDialout::DomesticOnly => {
                    destination != Country::NON_GEOGRAPHIC && destination == usage_location
                }
                UserPstnDialout::Disabled => false,
            }
    }
}

/// One of the fixed dial-out policy identities.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum DialoutPolicy {
    /// `DialoutCPCandPSTNInternational`
    CpcAndPstnInternational,
    /// `DialoutCPCDomesticPSTNInternational`
    CpcDomesticPstnInternational,
    /// `DialoutCPCDisabledPSTNInternational`
    CpcDisabledPstnInternational,
    /// `DialoutCPCInternationalPSTNDomestic`
    CpcInternationalPstnDomestic,
    /// `DialoutCPCInternationalPSTNDisabled`
    CpcInternationalPstnDisabled,
    /// `DialoutCPCandPSTNDomestic`
    CpcAndPstnDomestic,
    /// `DialoutCPCDomesticPSTNDisabled`
    CpcDomesticPstnDisabled,
    /// `DialoutCPCDisabledPSTNDomestic`
    CpcDisabledPstnDomestic,
    /// `DialoutCPCandPSTNDisabled`
    CpcAndPstnDisabled,
    /// `DialoutCPCZoneAPSTNInternational`
    CpcZoneAPstnInternational,
    /// `DialoutCPCZoneAPSTNDomestic`
    CpcZoneAPstnDomestic,
    /// `DialoutCPCZoneAPSTNDisabled`
    CpcZoneAPstnDisabled,
    /// The global default: any destination for both controls.
    GlobalDefault,
}

impl DialoutPolicy {
    /// Every identity, in the order of the table of RULES.md §3.
    pub const ALL: [DialoutPolicy; 13] = [
        DialoutPolicy::CpcAndPstnInternational,
        DialoutPolicy::CpcDomesticPstnInternational,
        DialoutPolicy::CpcDisabledPstnInternational,
        DialoutPolicy::CpcInternationalPstnDomestic,
        DialoutPolicy::CpcInternationalPstnDisabled,
        DialoutPolicy::CpcAndPstnDomestic,
        DialoutPolicy::CpcDomesticPstnDisabled,
        DialoutPolicy::CpcDisabledPstnDomestic,
        DialoutPolicy::CpcAndPstnDisabled,
        DialoutPolicy::CpcZoneAPstnInternational,
        DialoutPolicy::CpcZoneAPstnDomestic,
        DialoutPolicy::CpcZoneAPstnDisabled,
        DialoutPolicy::GlobalDefault,
    ];

    /// The two controls of this identity.
    pub const fn controls(self) -> (ConferencingDialout, UserPstnDialout) {
        use ConferencingDialout as C;
        use DialoutPolicy as P;
        use UserPstnDialout as U;
        match self {
            P::CpcAndPstnInternational | P::GlobalDefault => (C::InternationalAndDomestic, U::InternationalAndDomestic),
            P::CpcDomesticPstnInternational => (C::DomesticOnly, U::InternationalAndDomestic),
            P::CpcDisabledPstnInternational => (C::Disabled, U::InternationalAndDomestic),
            P::CpcInternationalPstnDomestic => (C::InternationalAndDomestic, U::DomesticOnly),
            P::CpcInternationalPstnDisabled => (C::InternationalAndDomestic, U::Disabled),
            P::CpcAndPstnDomestic => (C::DomesticOnly, U::DomesticOnly),
            P::CpcDomesticPstnDisabled => (C::DomesticOnly, U::Disabled),
            P::CpcDisabledPstnDomestic => (C::Disabled, U::DomesticOnly),
            P::CpcAndPstnDisabled => (C::Disabled, U::Disabled),
            P::CpcZoneAPstnInternational => (C::ZoneA, U::InternationalAndDomestic),
            P::CpcZoneAPstnDomestic => (C::ZoneA, U::DomesticOnly),
            P::CpcZoneAPstnDisabled => (C::ZoneA, U::Disabled),
        }
    }

    /// The conferencing dial-out control.
    pub const fn conferencing(self) -> ConferencingDialout {
        self.controls().0
    }

    /// The user PSTN control.
    pub const fn user_pstn(self) -> UserPstnDialout {
        self.controls().1
    }

    /// The administrator-facing identity name (`DialoutCPCZoneAPSTNDomestic`).
    pub const fn identity(self) -> &'static str {
        use DialoutPolicy as P;
        match self {
            P::CpcAndPstnInternational => "DialoutCPCandPSTNInternational",
            P::CpcDomesticPstnInternational => "DialoutCPCDomesticPSTNInternational",
            P::CpcDisabledPstnInternational => "DialoutCPCDisabledPSTNInternational",
            P::CpcInternationalPstnDomestic => "DialoutCPCInternationalPSTNDomestic",
            P::CpcInternationalPstnDisabled => "DialoutCPCInternationalPSTNDisabled",
            P::CpcAndPstnDomestic => "DialoutCPCandPSTNDomestic",
            P::CpcDomesticPstnDisabled => "DialoutCPCDomesticPSTNDisabled",
            P::CpcDisabledPstnDomestic => "DialoutCPCDisabledPSTNDomestic",
            P::CpcAndPstnDisabled => "DialoutCPCandPSTNDisabled",
            P::CpcZoneAPstnInternational => "DialoutCPCZoneAPSTNInternational",
            P::CpcZoneAPstnDomestic => "DialoutCPCZoneAPSTNDomestic",
            P::CpcZoneAPstnDisabled => "DialoutCPCZoneAPSTNDisabled",
            P::GlobalDefault => "Global",
        }
    }

    /// The effective policy of an organizer: the user's assignment, else the tenant's global
    /// policy, else the built-in default (any destination).
    pub fn effective(user: Option<DialoutPolicy>, tenant_global: Option<DialoutPolicy>) -> DialoutPolicy {
        user.or(tenant_global).unwrap_or(DialoutPolicy::GlobalDefault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConferencingDialout as C;
    use DialoutPolicy as P;
    use UserPstnDialout as U;

    fn c(code: &str) -> Country {
        Country::from_code(code).unwrap()
    }

    #[test]
    fn every_identity_maps_to_the_documented_controls() {
        let table = [
            ("DialoutCPCandPSTNInternational", C::InternationalAndDomestic, U::InternationalAndDomestic),
            ("DialoutCPCDomesticPSTNInternational", C::DomesticOnly, U::InternationalAndDomestic),
            ("DialoutCPCDisabledPSTNInternational", C::Disabled, U::InternationalAndDomestic),
            ("DialoutCPCInternationalPSTNDomestic", C::InternationalAndDomestic, U::DomesticOnly),
            ("DialoutCPCInternationalPSTNDisabled", C::InternationalAndDomestic, U::Disabled),
            ("DialoutCPCandPSTNDomestic", C::DomesticOnly, U::DomesticOnly),
            ("DialoutCPCDomesticPSTNDisabled", C::DomesticOnly, U::Disabled),
            ("DialoutCPCDisabledPSTNDomestic", C::Disabled, U::DomesticOnly),
            ("DialoutCPCandPSTNDisabled", C::Disabled, U::Disabled),
            ("DialoutCPCZoneAPSTNInternational", C::ZoneA, U::InternationalAndDomestic),
            ("DialoutCPCZoneAPSTNDomestic", C::ZoneA, U::DomesticOnly),
            ("DialoutCPCZoneAPSTNDisabled", C::ZoneA, U::Disabled),
            ("Global", C::InternationalAndDomestic, U::InternationalAndDomestic),
        ];
        assert_eq!(table.len(), P::ALL.len());
        for (policy, (name, conf, pstn)) in P::ALL.iter().zip(table) {
            assert_eq!(policy.identity(), name);
            assert_eq!(policy.controls(), (conf, pstn), "{name}");
        }
    }

    #[test]
    fn conferencing_control_decides_by_destination_country() {
        let us = c("US");
        // (control, organizer, destination, allowed)
        let table = [
            (C::InternationalAndDomestic, us, c("NG"), true),
            (C::InternationalAndDomestic, us, Country::NON_GEOGRAPHIC, true),
            (C::DomesticOnly, us, c("US"), true),
            (C::DomesticOnly, us, c("CA"), false), // +1 416 from a US organizer is international
            (C::DomesticOnly, us, c("PR"), false),
            (C::DomesticOnly, c("GB"), c("GB"), true),
            (C::DomesticOnly, us, Country::NON_GEOGRAPHIC, false),
            (C::ZoneA, us, c("CA"), true),
            (C::ZoneA, us, c("PR"), true),
            (C::ZoneA, us, c("NG"), false),
            (C::ZoneA, us, c("JM"), false),
            (C::ZoneA, us, Country::NON_GEOGRAPHIC, false),
            (C::Disabled, us, c("US"), false),
        ];
        for (control, organizer, destination, allowed) in table {
            assert_eq!(control.allows(organizer, destination), allowed, "{control:?} {organizer} -> {destination}");
        }
    }

    #[test]
    fn user_pstn_control_always_allows_emergency() {
        let us = c("US");
        assert!(U::Disabled.allows(us, us, true));
        assert!(!U::Disabled.allows(us, us, false));
        assert!(U::DomesticOnly.allows(us, us, false));
        assert!(!U::DomesticOnly.allows(us, c("MX"), false));
        assert!(U::DomesticOnly.allows(us, c("MX"), true));
        assert!(U::InternationalAndDomestic.allows(us, c("MX"), false));
    }

    #[test]
    fn resolves_user_then_tenant_then_default() {
        assert_eq!(P::effective(Some(P::CpcAndPstnDisabled), Some(P::CpcZoneAPstnDomestic)), P::CpcAndPstnDisabled);
        assert_eq!(P::effective(None, Some(P::CpcZoneAPstnDomestic)), P::CpcZoneAPstnDomestic);
        assert_eq!(P::effective(None, None), P::GlobalDefault);
        assert_eq!(P::effective(None, None).conferencing(), C::InternationalAndDomestic);
    }
}
