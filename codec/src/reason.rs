//! v5 reason codes (v5 2.4, one table, both directions) and 3.1.1 CONNACK return codes.

use crate::error::DecodeError;

macro_rules! reason_codes {
    ($($name:ident = $val:literal, $text:literal;)*) => {
        /// Every v5 reason code, named as in the v5 table (2.4). 0x00 is `Success`; the spec's other
        /// names for it are the associated constants `NormalDisconnection` and `GrantedQoS0`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(u8)]
        pub enum ReasonCode {
            #[default]
            $($name = $val,)*
        }

        impl TryFrom<u8> for ReasonCode {
            type Error = DecodeError;
            fn try_from(v: u8) -> Result<Self, DecodeError> {
                match v {
                    $($val => Ok(ReasonCode::$name),)*
                    _ => Err(DecodeError::InvalidReasonCode),
                }
            }
        }

        impl ReasonCode {
            /// Every reason code, in numeric order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The spec's name for the code.
            pub fn description(self) -> &'static str {
                match self {
                    $(ReasonCode::$name => $text,)*
                }
            }
        }
    };
}

reason_codes! {
    Success = 0x00, "Success";
    GrantedQoS1 = 0x01, "Granted QoS 1";
    GrantedQoS2 = 0x02, "Granted QoS 2";
    DisconnectWithWillMessage = 0x04, "Disconnect with Will Message";
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    NoSubscriptionExisted = 0x11, "No subscription existed";
    ContinueAuthentication = 0x18, "Continue authentication";
    ReAuthenticate = 0x19, "Re-authenticate";
    UnspecifiedError = 0x80, "Unspecified error";
    MalformedPacket = 0x81, "Malformed Packet";
    ProtocolError = 0x82, "Protocol Error";
    ImplementationSpecificError = 0x83, "Implementation specific error";
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    NotAuthorized = 0x87, "Not authorized";
    ServerUnavailable = 0x88, "Server unavailable";
    ServerBusy = 0x89, "Server busy";
    Banned = 0x8A, "Banned";
    ServerShuttingDown = 0x8B, "Server shutting down";
    BadAuthenticationMethod = 0x8C, "Bad authentication method";
    KeepAliveTimeout = 0x8D, "Keep Alive timeout";
    SessionTakenOver = 0x8E, "Session taken over";
    TopicFilterInvalid = 0x8F, "Topic Filter invalid";
    TopicNameInvalid = 0x90, "Topic Name invalid";
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    PacketTooLarge = 0x95, "Packet too large";
    MessageRateTooHigh = 0x96, "Message rate too high";
    QuotaExceeded = 0x97, "Quota exceeded";
    AdministrativeAction = 0x98, "Administrative action";
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    RetainNotSupported = 0x9A, "Retain not supported";
    QoSNotSupported = 0x9B, "QoS not supported";
    UseAnotherServer = 0x9C, "Use another server";
    ServerMoved = 0x9D, "Server moved";
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported";
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded";
    MaximumConnectTime = 0xA0, "Maximum connect time";
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported";
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported";
}

/// Which packet a reason code is read from; each allows its own subset (v5 2.4 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReasonContext {
    ConnAck,
    PubAckRec,
    PubRelComp,
    SubAck,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Reason codes each packet may carry: the "Packets" column of the v5 table in 2.4.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_PUBREC_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_PUBCOMP_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

#[allow(non_upper_case_globals)]
impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NormalDisconnection: ReasonCode = ReasonCode::Success;
    /// 0x00 in SUBACK.
    pub const GrantedQoS0: ReasonCode = ReasonCode::Success;

    /// True for 0x80 and above.
    #[inline]
    pub fn is_error(self) -> bool {
        (self as u8) >= 0x80
    }

    /// The SUBACK code granting `qos`.
    pub fn granted(qos: crate::QoS) -> ReasonCode {
        match qos {
            crate::QoS::AtMostOnce => ReasonCode::GrantedQoS0,
            crate::QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            crate::QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }

    /// Whether the v5 table (2.4) lists this code for the packet.
    pub(crate) fn allowed_in(self, ctx: ReasonContext) -> bool {
        let codes: &[u8] = match ctx {
            ReasonContext::ConnAck => CONNACK_CODES,
            ReasonContext::PubAckRec => PUBACK_PUBREC_CODES,
            ReasonContext::PubRelComp => PUBREL_PUBCOMP_CODES,
            ReasonContext::SubAck => SUBACK_CODES,
            ReasonContext::UnsubAck => UNSUBACK_CODES,
            ReasonContext::Disconnect => DISCONNECT_CODES,
            ReasonContext::Auth => AUTH_CODES,
        };
        codes.contains(&(self as u8))
    }

    /// Whether the v5 table (2.4) lists this code for a packet of `packet_type`
    /// (see `crate::packet_type`); false for packets without a reason code.
    pub fn is_valid_for(self, packet_type: u8) -> bool {
        use crate::packet::packet_type::*;
        let ctx = match packet_type {
            CONNACK => ReasonContext::ConnAck,
            PUBACK | PUBREC => ReasonContext::PubAckRec,
            PUBREL | PUBCOMP => ReasonContext::PubRelComp,
            SUBACK => ReasonContext::SubAck,
            UNSUBACK => ReasonContext::UnsubAck,
            DISCONNECT => ReasonContext::Disconnect,
            AUTH => ReasonContext::Auth,
            _ => return false,
        };
        self.allowed_in(ctx)
    }

    /// Parses a reason code and checks the packet allows it (v5 2.4 table).
    pub(crate) fn parse_in(v: u8, ctx: ReasonContext) -> Result<ReasonCode, DecodeError> {
        let rc = ReasonCode::try_from(v)?;
        if rc.allowed_in(ctx) {
            Ok(rc)
        } else {
            Err(DecodeError::InvalidReasonCode)
        }
    }

    /// The 3.1.1 CONNACK return code closest to this v5 reason code.
    pub fn to_connect_return_code(self) -> ConnectReturnCode {
        use ReasonCode::*;
        match self {
            Success => ConnectReturnCode::Accepted,
            UnsupportedProtocolVersion => ConnectReturnCode::UnacceptableProtocolVersion,
            ClientIdentifierNotValid => ConnectReturnCode::IdentifierRejected,
            BadUserNameOrPassword | BadAuthenticationMethod => {
                ConnectReturnCode::BadUsernameOrPassword
            }
            NotAuthorized | Banned => ConnectReturnCode::NotAuthorized,
            _ => ConnectReturnCode::ServerUnavailable,
        }
    }
}

/// 3.1 / 3.1.1 CONNACK return codes (3.1.1 3.2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUsernameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The v5 reason code with the same meaning.
    pub fn to_reason_code(self) -> ReasonCode {
        match self {
            ConnectReturnCode::Accepted => ReasonCode::Success,
            ConnectReturnCode::UnacceptableProtocolVersion => {
                ReasonCode::UnsupportedProtocolVersion
            }
            ConnectReturnCode::IdentifierRejected => ReasonCode::ClientIdentifierNotValid,
            ConnectReturnCode::ServerUnavailable => ReasonCode::ServerUnavailable,
            ConnectReturnCode::BadUsernameOrPassword => ReasonCode::BadUserNameOrPassword,
            ConnectReturnCode::NotAuthorized => ReasonCode::NotAuthorized,
        }
    }
}

impl TryFrom<u8> for ConnectReturnCode {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUsernameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            // 3.1.1 3.2.2.3: 6-255 are reserved.
            _ => return Err(DecodeError::InvalidReasonCode),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips() {
        for &rc in ReasonCode::ALL {
            assert_eq!(ReasonCode::try_from(rc as u8), Ok(rc));
        }
        assert_eq!(ReasonCode::ALL.len(), 43);
        assert_eq!(
            ReasonCode::try_from(0x03),
            Err(DecodeError::InvalidReasonCode)
        );
    }

    #[test]
    fn aliases_are_zero() {
        assert_eq!(ReasonCode::NormalDisconnection as u8, 0);
        assert_eq!(ReasonCode::GrantedQoS0 as u8, 0);
    }
}
