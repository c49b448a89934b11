//! PUBLISH (v5 3.3, 3.1.1 3.3): decode, encode, length; tests at the bottom.
//! Fan-out to many subscribers goes through `PublishFrame` (frame.rs), not through here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::PublishProperties;
use crate::props::Props;
use crate::topic::TopicName;
use crate::types::{PacketId, ProtocolVersion, QoS};
use crate::wire::{binary_len, check_remaining, frame_len, put_binary, put_fixed_header, Reader};

/// PUBLISH. `packet_id` is `Some` exactly when `qos` > 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in a v5 PUBLISH that names its topic by `properties.topic_alias`.
    pub topic: TopicName,
    pub packet_id: Option<PacketId>,
    pub properties: Props<PublishProperties>,
    pub payload: Bytes,
}

/// QoS from the PUBLISH fixed-header flags, checked before the body is read.
#[inline]
pub(crate) fn check_flags(flags: u8) -> Result<(), DecodeError> {
    // [MQTT-3.3.1-4] A PUBLISH Packet MUST NOT have both QoS bits set to 1.
    let qos = QoS::try_from((flags >> 1) & 3)?;
    // [MQTT-3.3.1-2] The DUP flag MUST be set to 0 for all QoS 0 messages.
    if qos == QoS::AtMostOnce && flags & 0x08 != 0 {
        return Err(DecodeError::DupOnQoS0);
    }
    Ok(())
}

impl Publish {
    /// A QoS 0 PUBLISH with no properties.
    pub fn new(topic: TopicName, payload: Bytes) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: Props::none(),
            payload,
        }
    }

    /// The first byte of the fixed header.
    #[inline]
    pub(crate) fn first_byte(&self) -> u8 {
        0x30 | (self.dup as u8) << 3 | (self.qos as u8) << 1 | self.retain as u8
    }

    #[inline(always)]
    pub(crate) fn decode(
        flags: u8,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        // Flags were checked with the fixed header (`check_flags`, [MQTT-3.3.1-2/4]).
        let qos = match (flags >> 1) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            // [MQTT-3.3.1-4] (also refused earlier from the fixed header).
            _ => return Err(DecodeError::InvalidQoS),
        };
        let mut r = Reader::new(&body);
        // [MQTT-3.3.2-1] UTF-8 string; [MQTT-3.3.2-2] no wildcards.
        let topic = r.topic_name_or_empty()?;
        // [MQTT-2.2.1-2] no packet id at QoS 0; [MQTT-2.2.1-3] non-zero at QoS 1/2.
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(r.packet_id()?)
        };
        let properties = if version.is_v5() {
            PublishProperties::read_props(&mut r)?
        } else {
            Props::none()
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            // [MQTT-4.7.3-1] (3.1.1: [MQTT-4.7.3-1]); v5 3.3.2.3.4: an empty topic needs an alias.
            return Err(if version.is_v5() {
                DecodeError::TopicAliasMissing
            } else {
                DecodeError::TopicEmpty
            });
        }
        // The payload is the body itself, advanced past the header fields (no refcount traffic).
        let at = r.position();
        // A fresh local (not the one whose address the topic slice took) so the advance can
        // stay in registers.
        let payload = {
            let mut b = body;
            b.advance(at);
            b
        };
        Ok(Publish {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = binary_len(self.topic.as_str().as_bytes()) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
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
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        if self.topic.is_empty() && !(version.is_v5() && self.properties.topic_alias.is_some()) {
            return Err(EncodeError::EmptyTopic);
        }
        let mut first = self.first_byte();
        if self.qos == QoS::AtMostOnce {
            // [MQTT-3.3.1-2]
            first &= !0x08;
        }
        out.reserve(frame_len(remaining));
        put_fixed_header(out, first, remaining);
        put_binary(out, self.topic.as_str().as_bytes());
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.put(out);
        }
        out.put_slice(&self.payload);
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

    fn publish(qos: QoS, id: u16, payload: &'static [u8]) -> Publish {
        Publish {
            qos,
            packet_id: PacketId::new(id),
            ..Publish::new(TopicName::from_static("a/b"), Bytes::from_static(payload))
        }
    }

    #[test]
    fn spec_example_v5_figure_3_9() {
        // Topic "a/b", packet id 10, property length 0.
        let raw = [0x32, 8, 0, 3, b'a', b'/', b'b', 0, 10, 0];
        both_ways(
            V5,
            &raw,
            &Packet::Publish(publish(QoS::AtLeastOnce, 10, b"")),
        );
    }

    #[test]
    fn spec_example_v311_figure_3_11() {
        let raw = [0x32, 7, 0, 3, b'a', b'/', b'b', 0, 10];
        both_ways(
            V4,
            &raw,
            &Packet::Publish(publish(QoS::AtLeastOnce, 10, b"")),
        );
    }

    #[test]
    fn qos0_has_no_packet_id_mqtt_2_2_1_2() {
        let raw = [0x31, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
        let mut p = publish(QoS::AtMostOnce, 0, b"hi");
        p.retain = true;
        both_ways(V4, &raw, &Packet::Publish(p));
    }

    #[test]
    fn qos3_is_malformed_mqtt_3_3_1_4() {
        assert_eq!(
            dec(V4, &[0x36, 7, 0, 3, b'a', b'/', b'b', 0, 1]),
            Err(DecodeError::InvalidQoS)
        );
    }

    #[test]
    fn dup_on_qos0_mqtt_3_3_1_2() {
        assert_eq!(
            dec(V4, &[0x38, 5, 0, 3, b'a', b'/', b'b']),
            Err(DecodeError::DupOnQoS0)
        );
    }

    #[test]
    fn packet_id_zero_mqtt_2_2_1_3() {
        assert_eq!(
            dec(V4, &[0x32, 7, 0, 3, b'a', b'/', b'b', 0, 0]),
            Err(DecodeError::PacketIdZero)
        );
    }

    #[test]
    fn wildcard_topic_mqtt_3_3_2_2() {
        assert_eq!(
            dec(V4, &[0x30, 5, 0, 3, b'a', b'/', b'+']),
            Err(DecodeError::TopicNameWildcard)
        );
        assert_eq!(
            dec(V4, &[0x30, 3, 0, 1, b'#']),
            Err(DecodeError::TopicNameWildcard)
        );
    }

    #[test]
    fn empty_topic_mqtt_4_7_3_1() {
        assert_eq!(dec(V4, &[0x30, 2, 0, 0]), Err(DecodeError::TopicEmpty));
        assert_eq!(
            dec(V5, &[0x30, 3, 0, 0, 0]),
            Err(DecodeError::TopicAliasMissing)
        );
        // v5: empty topic with a Topic Alias is fine (3.3.2.3.4).
        let raw = [0x30, 6, 0, 0, 3, 0x23, 0, 7];
        let Packet::Publish(p) = dec(V5, &raw).unwrap() else {
            panic!()
        };
        assert!(p.topic.is_empty());
        assert_eq!(p.properties.topic_alias, Some(7));
        assert_eq!(enc(&Packet::Publish(p), V5), raw);
    }

    #[test]
    fn topic_invalid_utf8_mqtt_3_3_2_1() {
        assert_eq!(
            dec(V4, &[0x30, 4, 0, 2, 0xC3, 0x28]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            dec(V4, &[0x30, 4, 0, 2, b'a', 0]),
            Err(DecodeError::NullCharacter)
        );
    }

    #[test]
    fn topic_alias_zero_mqtt_3_3_2_8() {
        let raw = [0x30, 9, 0, 3, b'a', b'/', b'b', 3, 0x23, 0, 0];
        assert_eq!(dec(V5, &raw), Err(DecodeError::TopicAliasZero));
    }

    #[test]
    fn property_not_allowed_in_publish() {
        // Session Expiry Interval (0x11) belongs to CONNECT/CONNACK/DISCONNECT.
        let raw = [0x30, 11, 0, 3, b'a', b'/', b'b', 5, 0x11, 0, 0, 0, 1];
        assert_eq!(dec(V5, &raw), Err(DecodeError::PropertyNotAllowed));
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let p = publish(QoS::ExactlyOnce, 7, b"payload");
        let raw = enc(&Packet::Publish(p.clone()), V5);
        assert_eq!(dec(V5, &raw).unwrap(), Packet::Publish(p));
    }

    #[test]
    fn encode_rejects_inconsistent_packet_id() {
        let mut out = bytes::BytesMut::new();
        let p = publish(QoS::AtLeastOnce, 0, b"");
        assert_eq!(p.encode(V4, &mut out), Err(EncodeError::PacketIdMismatch));
        let mut p = publish(QoS::AtMostOnce, 0, b"");
        p.packet_id = PacketId::new(1);
        assert_eq!(p.encode(V4, &mut out), Err(EncodeError::PacketIdMismatch));
        assert!(out.is_empty());
    }
}
