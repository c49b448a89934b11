//! UNSUBACK (v5 3.11, 3.1.1 3.11): decode, encode, length; tests at the bottom.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::UnsubAckProperties;
use crate::props::Props;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// UNSUBACK: in v5 one reason per filter; below v5 `reasons` is empty (only the packet id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub reasons: Vec<ReasonCode>,
    pub properties: Props<UnsubAckProperties>,
}

impl UnsubAck {
    pub(crate) fn decode(body: &Bytes, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = r.packet_id()?;
        let mut ack = UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Props::none(),
        };
        if version.is_v5() {
            ack.properties = UnsubAckProperties::read_props(&mut r)?;
            ack.reasons.reserve(r.remaining());
            while !r.is_empty() {
                // v5 3.11.3: the UNSUBACK reason codes.
                ack.reasons
                    .push(ReasonCode::parse_in(r.u8()?, ReasonContext::UnsubAck)?);
            }
            // One code per Topic Filter of the UNSUBSCRIBE, which has at least one.
            if ack.reasons.is_empty() {
                return Err(DecodeError::EmptyAck);
            }
        }
        // 3.1.1 3.11.1: remaining length is exactly 2.
        r.finish()?;
        Ok(ack)
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len() + self.reasons.len()
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
        if version.is_v5() && self.reasons.is_empty() {
            return Err(EncodeError::EmptyPayload);
        }
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0xB0, remaining);
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.put(out);
            out.extend(self.reasons.iter().map(|&rc| rc as u8));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec};
    use crate::Packet;

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn ack(reasons: &[ReasonCode]) -> Packet {
        Packet::UnsubAck(UnsubAck {
            packet_id: PacketId::new(10).unwrap(),
            reasons: reasons.to_vec(),
            properties: Props::none(),
        })
    }

    #[test]
    fn v311_packet_id_only() {
        both_ways(V4, &[0xB0, 2, 0, 10], &ack(&[]));
        assert_eq!(
            dec(V4, &[0xB0, 3, 0, 10, 0]),
            Err(DecodeError::TrailingBytes)
        );
    }

    #[test]
    fn v5_reasons() {
        let p = ack(&[ReasonCode::Success, ReasonCode::NoSubscriptionExisted]);
        both_ways(V5, &[0xB0, 5, 0, 10, 0, 0, 0x11], &p);
        assert_eq!(
            dec(V5, &[0xB0, 4, 0, 10, 0, 0x01]),
            Err(DecodeError::InvalidReasonCode)
        );
        assert_eq!(dec(V5, &[0xB0, 3, 0, 10, 0]), Err(DecodeError::EmptyAck));
    }

    #[test]
    fn flags_reserved() {
        assert_eq!(
            dec(V4, &[0xB2, 2, 0, 10]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }
}
