//! SUBACK (v5 3.9, 3.1.1 3.9): decode, encode, length; tests at the bottom.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::SubAckProperties;
use crate::props::Props;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// SUBACK: one reason per filter of the SUBSCRIBE, in order. Below v5 a reason is
/// `GrantedQoS0/1/2` or, for any failure, 0x80 (`UnspecifiedError` after decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub reasons: Vec<ReasonCode>,
    pub properties: Props<SubAckProperties>,
}

/// 3.1.1 return code for a reason: 0, 1, 2, or 0x80 for any failure [MQTT-3.9.3-2] (3.1.1).
fn v3_code(rc: ReasonCode) -> u8 {
    match rc {
        ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => rc as u8,
        _ => 0x80,
    }
}

impl SubAck {
    pub(crate) fn decode(body: &Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            SubAckProperties::read_props(&mut r)?
        } else {
            Props::none()
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let b = r.u8()?;
            let rc = if version.is_v5() {
                // v5 3.9.3: the SUBACK reason codes.
                ReasonCode::parse_in(b, ReasonContext::SubAck)?
            } else {
                // [MQTT-3.9.3-2] (3.1.1) 0x00, 0x01, 0x02, 0x80; other values are reserved.
                match b {
                    0x00..=0x02 | 0x80 => ReasonCode::try_from(b)?,
                    _ => return Err(DecodeError::InvalidReasonCode),
                }
            };
            reasons.push(rc);
        }
        // One code per Topic Filter, and a SUBSCRIBE has at least one (v5 3.9.3, 3.8.3).
        if reasons.is_empty() {
            return Err(DecodeError::EmptyAck);
        }
        Ok(SubAck {
            packet_id,
            reasons,
            properties,
        })
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self.reasons.len();
        if version.is_v5() {
            n += self.properties.encoded_len();
        }
        n
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
        if self.reasons.is_empty() {
            return Err(EncodeError::EmptyPayload);
        }
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0x90, remaining);
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.put(out);
            out.extend(self.reasons.iter().map(|&rc| rc as u8));
        } else {
            out.extend(self.reasons.iter().map(|&rc| v3_code(rc)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec, enc};
    use crate::Packet;

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn ack(reasons: &[ReasonCode]) -> Packet {
        Packet::SubAck(SubAck {
            packet_id: PacketId::new(10).unwrap(),
            reasons: reasons.to_vec(),
            properties: Props::none(),
        })
    }

    #[test]
    fn spec_example_v311_3_9_3() {
        // 3.1.1 Figure 3.26: Success QoS 0, 1, 2 and Failure.
        use ReasonCode::*;
        let p = ack(&[
            ReasonCode::GrantedQoS0,
            GrantedQoS1,
            GrantedQoS2,
            UnspecifiedError,
        ]);
        both_ways(V4, &[0x90, 6, 0, 10, 0, 1, 2, 0x80], &p);
    }

    #[test]
    fn v311_maps_failures_to_0x80() {
        let p = ack(&[ReasonCode::NotAuthorized]);
        assert_eq!(enc(&p, V4), [0x90, 3, 0, 10, 0x80]);
    }

    #[test]
    fn v311_reserved_codes_mqtt_3_9_3_2() {
        assert_eq!(
            dec(V4, &[0x90, 3, 0, 10, 3]),
            Err(DecodeError::InvalidReasonCode)
        );
        assert_eq!(
            dec(V4, &[0x90, 3, 0, 10, 0x87]),
            Err(DecodeError::InvalidReasonCode)
        );
    }

    #[test]
    fn v5_codes() {
        use ReasonCode::*;
        let p = ack(&[
            GrantedQoS2,
            NotAuthorized,
            WildcardSubscriptionsNotSupported,
        ]);
        both_ways(V5, &[0x90, 6, 0, 10, 0, 2, 0x87, 0xA2], &p);
        assert_eq!(
            dec(V5, &[0x90, 4, 0, 10, 0, 0x10]),
            Err(DecodeError::InvalidReasonCode)
        );
    }

    #[test]
    fn empty_suback() {
        assert_eq!(dec(V4, &[0x90, 2, 0, 10]), Err(DecodeError::EmptyAck));
        assert_eq!(dec(V5, &[0x90, 3, 0, 10, 0]), Err(DecodeError::EmptyAck));
    }
}
