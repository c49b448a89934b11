//! CONNACK (v5 3.2, 3.1.1 3.2): decode, encode, length; tests at the bottom.
//! Below v5 the reason travels as a CONNACK return code (`ReasonCode::to_connect_return_code`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::ConnAckProperties;
use crate::props::Props;
use crate::reason::{ConnectReturnCode, ReasonCode, ReasonContext};
use crate::types::ProtocolVersion;
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// CONNACK. In 3.1/3.1.1 `reason` is one of the six codes `ConnectReturnCode::to_reason_code`
/// yields, and encode maps any other reason to the closest return code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: Props<ConnAckProperties>,
}

impl ConnAck {
    pub(crate) fn decode(body: &Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        let code = r.u8()?;
        let (session_present, reason, properties) = match version {
            // 3.1: the first byte is unused.
            ProtocolVersion::V3_1 => (
                false,
                ConnectReturnCode::try_from(code)?.to_reason_code(),
                Props::none(),
            ),
            ProtocolVersion::V3_1_1 => {
                // [MQTT-3.2.2-1] (3.1.1) bits 7-1 are reserved and MUST be 0.
                if flags & 0xFE != 0 {
                    return Err(DecodeError::ConnAckReservedFlags);
                }
                let rc = ConnectReturnCode::try_from(code)?.to_reason_code();
                (flags & 1 != 0, rc, Props::none())
            }
            ProtocolVersion::V5 => {
                // v5 3.2.2.1: bits 7-1 are reserved and MUST be 0.
                if flags & 0xFE != 0 {
                    return Err(DecodeError::ConnAckReservedFlags);
                }
                let rc = ReasonCode::parse_in(code, ReasonContext::ConnAck)?;
                (flags & 1 != 0, rc, ConnAckProperties::read_props(&mut r)?)
            }
        };
        // [MQTT-3.2.2-6] / [MQTT-3.2.2-4] (3.1.1) a refused connection has Session Present 0.
        if session_present && reason != ReasonCode::Success {
            return Err(DecodeError::SessionPresentOnError);
        }
        r.finish()?;
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len()
        } else {
            2
        }
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.remaining_len(version))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        check_remaining(remaining)?;
        let code = if version.is_v5() {
            self.reason as u8
        } else {
            self.reason.to_connect_return_code() as u8
        };
        let sp = self.session_present && version != ProtocolVersion::V3_1 && code == 0;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0x20, remaining);
        out.put_u8(sp as u8);
        out.put_u8(code);
        if version.is_v5() {
            self.properties.put(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec, enc};
    use crate::{MqttString, Packet};

    const V3: ProtocolVersion = ProtocolVersion::V3_1;
    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn ack(sp: bool, reason: ReasonCode) -> Packet {
        Packet::ConnAck(ConnAck {
            session_present: sp,
            reason,
            properties: Props::none(),
        })
    }

    #[test]
    fn v311_accepted_and_return_codes() {
        both_ways(V4, &[0x20, 2, 0, 0], &ack(false, ReasonCode::Success));
        both_ways(V4, &[0x20, 2, 1, 0], &ack(true, ReasonCode::Success));
        both_ways(
            V4,
            &[0x20, 2, 0, 1],
            &ack(false, ReasonCode::UnsupportedProtocolVersion),
        );
        both_ways(
            V4,
            &[0x20, 2, 0, 2],
            &ack(false, ReasonCode::ClientIdentifierNotValid),
        );
        both_ways(
            V4,
            &[0x20, 2, 0, 3],
            &ack(false, ReasonCode::ServerUnavailable),
        );
        both_ways(
            V4,
            &[0x20, 2, 0, 4],
            &ack(false, ReasonCode::BadUserNameOrPassword),
        );
        both_ways(V4, &[0x20, 2, 0, 5], &ack(false, ReasonCode::NotAuthorized));
        both_ways(V3, &[0x20, 2, 0, 0], &ack(false, ReasonCode::Success));
    }

    #[test]
    fn v311_maps_v5_reasons_to_return_codes() {
        assert_eq!(enc(&ack(false, ReasonCode::Banned), V4), [0x20, 2, 0, 5]);
        assert_eq!(
            enc(&ack(false, ReasonCode::ServerBusy), V4),
            [0x20, 2, 0, 3]
        );
        // Session present is cleared on a refusal [MQTT-3.2.2-4] (3.1.1).
        assert_eq!(
            enc(&ack(true, ReasonCode::NotAuthorized), V4),
            [0x20, 2, 0, 5]
        );
    }

    #[test]
    fn reserved_return_code_3_2_2_3() {
        assert_eq!(
            dec(V4, &[0x20, 2, 0, 6]),
            Err(DecodeError::InvalidReasonCode)
        );
    }

    #[test]
    fn reserved_ack_flags_mqtt_3_2_2_1() {
        assert_eq!(
            dec(V4, &[0x20, 2, 2, 0]),
            Err(DecodeError::ConnAckReservedFlags)
        );
        assert_eq!(
            dec(V5, &[0x20, 3, 0x80, 0, 0]),
            Err(DecodeError::ConnAckReservedFlags)
        );
    }

    #[test]
    fn session_present_on_refusal_mqtt_3_2_2_6() {
        assert_eq!(
            dec(V4, &[0x20, 2, 1, 5]),
            Err(DecodeError::SessionPresentOnError)
        );
        assert_eq!(
            dec(V5, &[0x20, 3, 1, 0x87, 0]),
            Err(DecodeError::SessionPresentOnError)
        );
    }

    #[test]
    fn v5_with_properties() {
        let raw = [
            0x20, 13, 0, 0, 10, 0x24, 1, 0x12, 0, 2, b'i', b'd', 0x21, 0, 10,
        ];
        let p = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: ConnAckProperties {
                maximum_qos: Some(crate::QoS::AtLeastOnce),
                assigned_client_identifier: Some(MqttString::from_static("id")),
                receive_maximum: Some(10),
                ..Default::default()
            }
            .into(),
        });
        // Properties are written in a fixed order; decode accepts any order.
        assert_eq!(dec(V5, &raw).unwrap(), p);
        assert_eq!(dec(V5, &enc(&p, V5)).unwrap(), p);
    }

    #[test]
    fn v5_reason_not_allowed_in_connack() {
        // 0x8B Server shutting down is a DISCONNECT code, not a CONNACK one.
        assert_eq!(
            dec(V5, &[0x20, 3, 0, 0x8B, 0]),
            Err(DecodeError::InvalidReasonCode)
        );
        both_ways(
            V5,
            &[0x20, 3, 0, 0x84, 0],
            &ack(false, ReasonCode::UnsupportedProtocolVersion),
        );
    }

    #[test]
    fn v5_missing_property_length_is_malformed() {
        assert_eq!(dec(V5, &[0x20, 2, 0, 0]), Err(DecodeError::UnexpectedEof));
    }
}
