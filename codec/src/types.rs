//! Small protocol enums shared by every packet: version, QoS, packet id, subscription options.

use crate::error::DecodeError;

/// Protocol level carried in CONNECT: 3 = MQTT 3.1 (`MQIsdp`), 4 = 3.1.1, 5 = 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProtocolVersion {
    V3_1 = 3,
    V3_1_1 = 4,
    V5 = 5,
}

impl ProtocolVersion {
    /// True for 5.0 (properties, reason codes, AUTH).
    #[inline]
    pub fn is_v5(self) -> bool {
        matches!(self, ProtocolVersion::V5)
    }

    /// The protocol name written in CONNECT for this level.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => "MQTT",
        }
    }
}

impl TryFrom<u8> for ProtocolVersion {
    type Error = DecodeError;
    fn try_from(level: u8) -> Result<Self, DecodeError> {
        match level {
            3 => Ok(ProtocolVersion::V3_1),
            4 => Ok(ProtocolVersion::V3_1_1),
            5 => Ok(ProtocolVersion::V5),
            // [MQTT-3.1.2-2]
            _ => Err(DecodeError::UnsupportedProtocolVersion),
        }
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl TryFrom<u8> for QoS {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            // [MQTT-3.3.1-4] A PUBLISH packet MUST NOT have both QoS bits set to 1.
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// Packet identifier: never zero [MQTT-2.2.1-3], [MQTT-2.3.1-1] (3.1.1).
pub type PacketId = core::num::NonZeroU16;

/// What the server does with retained messages when a subscription is made (v5 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    #[default]
    SendAtSubscribe = 0,
    SendIfNew = 1,
    DoNotSend = 2,
}

/// Options byte of one SUBSCRIBE entry. In 3.1/3.1.1 only `qos` is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a QoS (what 3.1.1 can express).
    pub fn with_qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    /// Parses the options byte.
    pub(crate) fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            // [MQTT-3-8.3-4] (3.1.1) reserved bits 7..2 MUST be 0.
            if b & 0xFC != 0 {
                return Err(DecodeError::SubscriptionOptionsReserved);
            }
            let qos = QoS::try_from(b & 3).map_err(|_| DecodeError::SubscriptionQoSInvalid)?;
            return Ok(SubscriptionOptions::with_qos(qos));
        }
        // [MQTT-3.8.3-5] bits 7 and 6 are reserved and MUST be 0.
        if b & 0xC0 != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        // v5 3.8.3.1: QoS 3 is a Malformed Packet.
        let qos = QoS::try_from(b & 3).map_err(|_| DecodeError::SubscriptionQoSInvalid)?;
        let retain_handling = match (b >> 4) & 3 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            // v5 3.8.3.1: Retain Handling 3 is a Protocol Error.
            _ => return Err(DecodeError::RetainHandlingInvalid),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte for `version` (v5 fields dropped below v5).
    pub(crate) fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= (self.no_local as u8) << 2;
            b |= (self.retain_as_published as u8) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}
