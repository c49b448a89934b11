//! PUBACK, PUBREC, PUBREL, PUBCOMP (v5 3.4-3.7): one shape, decode, encode, length; tests at the
//! bottom. The v5 short forms are used when possible: remaining length 2 means Success and no
//! properties, 3 means no properties (v5 3.4.2.1).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::PubRespProperties;
use crate::reason::{ReasonCode, ReasonContext};
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{check_remaining, frame_len, put_fixed_header, Reader};

/// Acknowledgement of a QoS 1/2 PUBLISH (which packet is given by `Packet`'s variant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: PubRespProperties,
}

impl PubResp {
    /// A Success acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        PubResp {
            packet_id,
            reason: ReasonCode::Success,
            properties: PubRespProperties::default(),
        }
    }

    /// `rel_comp`: PUBREL/PUBCOMP (their reason codes differ from PUBACK/PUBREC).
    pub(crate) fn decode(
        body: &Bytes,
        version: ProtocolVersion,
        rel_comp: bool,
    ) -> Result<PubResp, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = r.packet_id()?;
        let mut resp = PubResp::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            let ctx = if rel_comp {
                ReasonContext::PubRelComp
            } else {
                ReasonContext::PubAckRec
            };
            resp.reason = ReasonCode::parse_in(r.u8()?, ctx)?;
            if !r.is_empty() {
                resp.properties = PubRespProperties::read(&mut r)?;
            }
        }
        // 3.1.1 3.4.1: remaining length is exactly 2.
        r.finish()?;
        Ok(resp)
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            2
        } else if !self.properties.is_empty() {
            3 + self.properties.encoded_len()
        } else if self.reason != ReasonCode::Success {
            3
        } else {
            2
        }
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        frame_len(self.remaining_len(version))
    }

    pub(crate) fn encode(
        &self,
        first: u8,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        check_remaining(remaining)?;
        out.reserve(frame_len(remaining));
        put_fixed_header(out, first, remaining);
        out.put_u16(self.packet_id.get());
        if remaining > 2 {
            out.put_u8(self.reason as u8);
        }
        if remaining > 3 {
            self.properties.put(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec};
    use crate::{MqttString, Packet};

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    #[test]
    fn v311_each_ack() {
        both_ways(V4, &[0x40, 2, 0, 10], &Packet::PubAck(PubResp::new(id(10))));
        both_ways(V4, &[0x50, 2, 0, 10], &Packet::PubRec(PubResp::new(id(10))));
        both_ways(V4, &[0x62, 2, 0, 10], &Packet::PubRel(PubResp::new(id(10))));
        both_ways(
            V4,
            &[0x70, 2, 0, 10],
            &Packet::PubComp(PubResp::new(id(10))),
        );
    }

    #[test]
    fn v5_short_forms_3_4_2_1() {
        both_ways(V5, &[0x40, 2, 1, 0], &Packet::PubAck(PubResp::new(id(256))));
        let mut r = PubResp::new(id(1));
        r.reason = ReasonCode::NoMatchingSubscribers;
        both_ways(V5, &[0x40, 3, 0, 1, 0x10], &Packet::PubAck(r));
        // Reason 0 and property length 0 written out: also valid.
        assert_eq!(
            dec(V5, &[0x40, 4, 0, 1, 0, 0]),
            Ok(Packet::PubAck(PubResp::new(id(1))))
        );
    }

    #[test]
    fn v5_with_reason_string() {
        let mut r = PubResp::new(id(1));
        r.reason = ReasonCode::PacketIdentifierNotFound;
        r.properties.reason_string = Some(MqttString::from_static("x"));
        both_ways(
            V5,
            &[0x62, 8, 0, 1, 0x92, 4, 0x1F, 0, 1, b'x'],
            &Packet::PubRel(r),
        );
    }

    #[test]
    fn pubrel_flags_mqtt_3_6_1_1() {
        assert_eq!(
            dec(V4, &[0x60, 2, 0, 1]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
        assert_eq!(
            dec(V4, &[0x41, 2, 0, 1]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }

    #[test]
    fn packet_id_zero_mqtt_2_2_1_3() {
        assert_eq!(dec(V4, &[0x40, 2, 0, 0]), Err(DecodeError::PacketIdZero));
    }

    #[test]
    fn reason_codes_per_packet() {
        // 0x92 is for PUBREL/PUBCOMP, not PUBACK; 0x10 the other way round.
        assert_eq!(
            dec(V5, &[0x40, 3, 0, 1, 0x92]),
            Err(DecodeError::InvalidReasonCode)
        );
        assert_eq!(
            dec(V5, &[0x70, 3, 0, 1, 0x10]),
            Err(DecodeError::InvalidReasonCode)
        );
    }

    #[test]
    fn v311_length_is_exactly_two() {
        assert_eq!(
            dec(V4, &[0x40, 3, 0, 1, 0]),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(dec(V4, &[0x40, 1, 0]), Err(DecodeError::UnexpectedEof));
    }
}
