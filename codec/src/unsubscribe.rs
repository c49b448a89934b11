//! UNSUBSCRIBE (v5 3.10, 3.1.1 3.10): decode, encode, length; tests at the bottom.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::UnsubscribeProperties;
use crate::topic::TopicFilter;
use crate::types::{PacketId, ProtocolVersion};
use crate::wire::{binary_len, check_remaining, frame_len, put_binary, put_fixed_header, Reader};

/// UNSUBSCRIBE: at least one filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub filters: Vec<TopicFilter>,
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    pub(crate) fn decode(
        body: &Bytes,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let mut r = Reader::new(body);
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::read(&mut r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::with_capacity(1);
        while !r.is_empty() {
            // [MQTT-3.10.3-1] Topic Filters MUST be UTF-8 strings.
            filters.push(r.topic_filter()?);
        }
        // [MQTT-3.10.3-2] at least one Topic Filter.
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2;
        if version.is_v5() {
            n += self.properties.encoded_len();
        }
        n + self
            .filters
            .iter()
            .map(|f| binary_len(f.as_str().as_bytes()))
            .sum::<usize>()
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
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload);
        }
        out.reserve(frame_len(remaining));
        // [MQTT-3.10.1-1] fixed header flags 0010.
        put_fixed_header(out, 0xA2, remaining);
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.put(out);
        }
        for f in &self.filters {
            put_binary(out, f.as_str().as_bytes());
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

    fn unsub(filters: &[&'static str]) -> Unsubscribe {
        Unsubscribe {
            packet_id: PacketId::new(10).unwrap(),
            filters: filters
                .iter()
                .map(|f| TopicFilter::from_static(f))
                .collect(),
            properties: UnsubscribeProperties::default(),
        }
    }

    #[test]
    fn spec_example_v311_3_10_3() {
        // 3.1.1 Figure 3.30: "a/b", "c/d".
        let raw = [
            0xA2, 12, 0, 10, 0, 3, b'a', b'/', b'b', 0, 3, b'c', b'/', b'd',
        ];
        both_ways(V4, &raw, &Packet::Unsubscribe(unsub(&["a/b", "c/d"])));
    }

    #[test]
    fn v5_with_user_property() {
        let mut u = unsub(&["#"]);
        u.properties
            .user_properties
            .push((MqttString::from_static("k"), MqttString::from_static("v")));
        let raw = [0xA2, 13, 0, 10, 7, 0x26, 0, 1, b'k', 0, 1, b'v', 0, 1, b'#'];
        both_ways(V5, &raw, &Packet::Unsubscribe(u));
    }

    #[test]
    fn flags_mqtt_3_10_1_1() {
        assert_eq!(
            dec(V4, &[0xA0, 5, 0, 10, 0, 1, b'a']),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }

    #[test]
    fn empty_payload_mqtt_3_10_3_2() {
        assert_eq!(
            dec(V4, &[0xA2, 2, 0, 10]),
            Err(DecodeError::EmptyUnsubscribe)
        );
        assert_eq!(
            dec(V5, &[0xA2, 3, 0, 10, 0]),
            Err(DecodeError::EmptyUnsubscribe)
        );
    }

    #[test]
    fn subscription_identifier_not_allowed() {
        assert_eq!(
            dec(V5, &[0xA2, 8, 0, 10, 2, 0x0B, 1, 0, 1, b'a']),
            Err(DecodeError::PropertyNotAllowed)
        );
    }
}
