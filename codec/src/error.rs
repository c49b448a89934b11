//! Decode and encode errors: `Copy`, allocation-free, one variant per rule. Each knows the v5
//! reason code a server answers with, the 3.1.1 CONNACK return code where one applies, and the
//! spec statement it enforces.

use crate::reason::{ConnectReturnCode, ReasonCode};

macro_rules! decode_errors {
    ($($name:ident => $rc:ident, $spec:literal, $msg:literal;)*) => {
        /// Why a frame could not be decoded.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
        #[non_exhaustive]
        pub enum DecodeError {
            $(#[error($msg)] $name,)*
        }

        impl DecodeError {
            /// The v5 reason code to send in CONNACK (error during CONNECT) or DISCONNECT.
            pub fn reason_code(&self) -> ReasonCode {
                match self {
                    $(DecodeError::$name => ReasonCode::$rc,)*
                }
            }

            /// The spec statement (v5 numbering, with 3.1.1 numbering where it differs).
            pub fn spec(&self) -> &'static str {
                match self {
                    $(DecodeError::$name => $spec,)*
                }
            }
        }
    };
}

decode_errors! {
    MalformedRemainingLength => MalformedPacket, "[MQTT-1.5.5-1]",
        "remaining length longer than 4 bytes or not minimally encoded";
    MalformedVariableInteger => MalformedPacket, "[MQTT-1.5.5-1]",
        "variable byte integer longer than 4 bytes or not minimally encoded";
    PacketTooLarge => PacketTooLarge, "v5 3.1.2.11.4, 3.2.2.3.6",
        "packet larger than the maximum packet size";
    ReservedPacketType => MalformedPacket, "v5 2.1.2 / 3.1.1 2.2.1",
        "reserved control packet type";
    InvalidFixedHeaderFlags => MalformedPacket, "[MQTT-2.1.3-1] / [MQTT-2.2.2-1] (3.1.1)",
        "reserved fixed header flag bits are not as specified";
    FirstPacketNotConnect => ProtocolError, "[MQTT-3.1.0-1]",
        "first packet from a client must be CONNECT";
    SecondConnect => ProtocolError, "[MQTT-3.1.0-2]",
        "a second CONNECT on a connection";
    UnexpectedEof => MalformedPacket, "v5 4.13.1 / 3.1.1 2.2.3",
        "field runs past the end of the packet";
    TrailingBytes => MalformedPacket, "v5 4.13.1 / 3.1.1 2.2.3",
        "bytes left over after the last field of the packet";
    InvalidUtf8 => MalformedPacket, "[MQTT-1.5.4-1]",
        "string is not well-formed UTF-8 (or contains a surrogate)";
    NullCharacter => MalformedPacket, "[MQTT-1.5.4-2]",
        "string contains U+0000";
    StringTooLong => MalformedPacket, "[MQTT-1.5.4-1] / [MQTT-4.7.3-3]",
        "string longer than 65,535 bytes";
    InvalidProtocolName => UnsupportedProtocolVersion, "[MQTT-3.1.2-1]",
        "protocol name is not MQTT (or MQIsdp for level 3)";
    UnsupportedProtocolVersion => UnsupportedProtocolVersion, "[MQTT-3.1.2-2]",
        "unsupported protocol level";
    ConnectReservedFlag => MalformedPacket, "[MQTT-3.1.2-3]",
        "CONNECT reserved flag is not 0";
    WillQoSWithoutWill => MalformedPacket, "[MQTT-3.1.2-11] / [MQTT-3.1.2-13] (3.1.1)",
        "will QoS set without the will flag";
    WillRetainWithoutWill => MalformedPacket, "[MQTT-3.1.2-13] / [MQTT-3.1.2-15] (3.1.1)",
        "will retain set without the will flag";
    WillQoSInvalid => MalformedPacket, "[MQTT-3.1.2-12] / [MQTT-3.1.2-14] (3.1.1)",
        "will QoS is 3";
    PasswordWithoutUsername => MalformedPacket, "[MQTT-3.1.2-22] (3.1.1)",
        "password flag set without the user name flag";
    ClientIdRejected => ClientIdentifierNotValid, "[MQTT-3.1.3-8] (3.1.1)",
        "empty client identifier without clean session";
    InvalidQoS => MalformedPacket, "[MQTT-3.3.1-4]",
        "QoS is 3";
    DupOnQoS0 => MalformedPacket, "[MQTT-3.3.1-2]",
        "DUP set on a QoS 0 PUBLISH";
    TopicEmpty => TopicNameInvalid, "[MQTT-4.7.3-1]",
        "empty topic name";
    FilterEmpty => TopicFilterInvalid, "[MQTT-4.7.3-1]",
        "empty topic filter";
    TopicNameWildcard => TopicNameInvalid, "[MQTT-3.3.2-2]",
        "wildcard in a topic name";
    TopicFilterInvalid => TopicFilterInvalid, "[MQTT-4.7.1-1] [MQTT-4.7.1-2]",
        "wildcard not on a whole level, or '#' not last";
    SharedSubscriptionInvalid => TopicFilterInvalid, "[MQTT-4.8.2-1] [MQTT-4.8.2-2]",
        "malformed $share/{{ShareName}}/{{filter}}";
    TopicAliasMissing => ProtocolError, "v5 3.3.2.3.4",
        "empty topic name without a topic alias";
    PacketIdZero => ProtocolError, "[MQTT-2.2.1-3] / [MQTT-2.3.1-1] (3.1.1)",
        "packet identifier is 0";
    UnknownProperty => MalformedPacket, "v5 2.2.2.2",
        "unknown property identifier";
    PropertyNotAllowed => ProtocolError, "v5 2.2.2.2 (table 2-4)",
        "property not allowed in this packet";
    DuplicateProperty => ProtocolError, "v5 3.x.2.2 (each property: included more than once)",
        "property included more than once";
    InvalidPropertyValue => ProtocolError, "v5 3.x.2.2 (each property's allowed values)",
        "property value out of range";
    TopicAliasZero => TopicAliasInvalid, "[MQTT-3.3.2-8]",
        "topic alias 0";
    SubscriptionIdZero => ProtocolError, "v5 3.3.2.3.8, 3.8.2.1.2",
        "subscription identifier 0";
    AuthDataWithoutMethod => ProtocolError, "v5 3.1.2.11.10",
        "authentication data without an authentication method";
    EmptySubscribe => ProtocolError, "[MQTT-3.8.3-2] / [MQTT-3.8.3-3] (3.1.1)",
        "SUBSCRIBE without a topic filter";
    EmptyUnsubscribe => ProtocolError, "[MQTT-3.10.3-2]",
        "UNSUBSCRIBE without a topic filter";
    SubscriptionOptionsReserved => MalformedPacket, "[MQTT-3.8.3-5] / [MQTT-3-8.3-4] (3.1.1)",
        "reserved subscription option bits are not 0";
    SubscriptionQoSInvalid => MalformedPacket, "v5 3.8.3.1 / [MQTT-3-8.3-4] (3.1.1)",
        "subscription QoS is 3";
    RetainHandlingInvalid => ProtocolError, "v5 3.8.3.1",
        "retain handling is 3";
    NoLocalOnShared => ProtocolError, "[MQTT-3.8.3-4]",
        "no local set on a shared subscription";
    InvalidReasonCode => MalformedPacket, "v5 2.4 / 3.1.1 3.2.2.3, 3.9.3",
        "reason code not allowed in this packet";
    ConnAckReservedFlags => MalformedPacket, "[MQTT-3.2.2-1] (3.1.1) / v5 3.2.2.1",
        "CONNACK acknowledge flags reserved bits are not 0";
    SessionPresentOnError => ProtocolError, "[MQTT-3.2.2-6] / [MQTT-3.2.2-4] (3.1.1)",
        "session present set with a non-zero return code";
    WrongDirection => ProtocolError, "v5 2.1.2 / 3.1.1 2.2.1 (direction of flow)",
        "a packet only a server sends, received from a client";
    SubscriptionIdFromClient => ProtocolError, "[MQTT-3.3.4-6]",
        "PUBLISH from a client with a Subscription Identifier";
    EmptyAck => ProtocolError, "v5 3.9.3, 3.11.3 / 3.1.1 3.9.3",
        "SUBACK/UNSUBACK without a reason code";
}

impl DecodeError {
    /// The 3.1.1 CONNACK return code when this error, met in CONNECT, is answered with a CONNACK.
    /// `None`: close the connection without a CONNACK [MQTT-4.8.0-1] (3.1.1).
    pub fn connect_return_code(&self) -> Option<ConnectReturnCode> {
        match self {
            DecodeError::UnsupportedProtocolVersion | DecodeError::InvalidProtocolName => {
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            DecodeError::ClientIdRejected => Some(ConnectReturnCode::IdentifierRejected),
            _ => None,
        }
    }
}

/// Why a packet could not be encoded (the packet breaks a rule the types cannot express).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("packet longer than 268,435,455 bytes of remaining length")]
    PacketTooLarge,
    #[error("binary field or string longer than 65,535 bytes")]
    FieldTooLong,
    #[error("packet does not exist in this protocol version")]
    NotInVersion,
    #[error("QoS 1/2 PUBLISH without a packet id, or QoS 0 with one")]
    PacketIdMismatch,
    #[error("empty topic name outside the v5 topic-alias case")]
    EmptyTopic,
    #[error("SUBSCRIBE, UNSUBSCRIBE, SUBACK or UNSUBACK with nothing in it")]
    EmptyPayload,
    #[error("value the packet cannot carry (zero topic alias or subscription id, password without user name in 3.1.1, ...)")]
    InvalidValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_level_maps_to_connack_codes() {
        let e = DecodeError::UnsupportedProtocolVersion;
        assert_eq!(
            e.connect_return_code(),
            Some(ConnectReturnCode::UnacceptableProtocolVersion)
        );
        assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(e.spec(), "[MQTT-3.1.2-2]");
    }

    #[test]
    fn errors_are_small_and_copy() {
        fn is_copy<T: Copy>() {}
        is_copy::<DecodeError>();
        assert_eq!(std::mem::size_of::<DecodeError>(), 1);
    }
}
