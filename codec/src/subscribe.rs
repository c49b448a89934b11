//! SUBSCRIBE (v5 3.8, 3.1.1 3.8): decode, encode, length; tests at the bottom.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::SubscribeProperties;
use crate::topic::TopicFilter;
use crate::types::{PacketId, ProtocolVersion, SubscriptionOptions};
use crate::wire::{binary_len, check_remaining, frame_len, put_binary, put_fixed_header, Reader};

/// SUBSCRIBE: at least one (filter, options) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
    pub properties: SubscribeProperties,
}

impl Subscribe {
    pub(crate) fn decode(body: &Bytes, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
        let mut r = Reader::new(body);
        // [MQTT-2.2.1-3] / [MQTT-2.3.1-1] (3.1.1) non-zero packet id.
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            SubscribeProperties::read(&mut r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::with_capacity(1);
        while !r.is_empty() {
            // [MQTT-3.8.3-1] the Topic Filters MUST be UTF-8 strings (v5 4.7 rules).
            let filter = r.topic_filter()?;
            let options = SubscriptionOptions::from_byte(r.u8()?, version)?;
            // [MQTT-3.8.3-4] No Local on a Shared Subscription is a Protocol Error.
            if options.no_local && filter.shared().is_some() {
                return Err(DecodeError::NoLocalOnShared);
            }
            filters.push((filter, options));
        }
        // [MQTT-3.8.3-2] / [MQTT-3.8.3-3] (3.1.1) at least one Topic Filter.
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Subscribe {
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
            .map(|(f, _)| binary_len(f.as_str().as_bytes()) + 1)
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
        // [MQTT-3.8.1-1] fixed header flags 0010.
        put_fixed_header(out, 0x82, remaining);
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.put(out);
        }
        for (f, o) in &self.filters {
            put_binary(out, f.as_str().as_bytes());
            out.put_u8(o.to_byte(version));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec};
    use crate::{Packet, QoS, RetainHandling};

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn sub(filters: &[(&'static str, SubscriptionOptions)]) -> Subscribe {
        Subscribe {
            packet_id: PacketId::new(10).unwrap(),
            filters: filters
                .iter()
                .map(|&(f, o)| (TopicFilter::from_static(f), o))
                .collect(),
            properties: SubscribeProperties::default(),
        }
    }

    #[test]
    fn spec_example_v311_3_8_3() {
        // Packet id 10; "a/b" QoS 1, "c/d" QoS 2 (3.1.1 Figure 3.21).
        let raw = [
            0x82, 14, 0, 10, 0, 3, b'a', b'/', b'b', 1, 0, 3, b'c', b'/', b'd', 2,
        ];
        let s = sub(&[
            ("a/b", SubscriptionOptions::with_qos(QoS::AtLeastOnce)),
            ("c/d", SubscriptionOptions::with_qos(QoS::ExactlyOnce)),
        ]);
        both_ways(V4, &raw, &Packet::Subscribe(s));
    }

    #[test]
    fn v5_options_and_subscription_identifier() {
        let o = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        let mut s = sub(&[("a/+", o)]);
        s.properties.subscription_identifier = Some(300);
        let raw = [
            0x82, 12, 0, 10, 3, 0x0B, 0xAC, 0x02, 0, 3, b'a', b'/', b'+', 0x2D,
        ];
        both_ways(V5, &raw, &Packet::Subscribe(s));
    }

    #[test]
    fn flags_mqtt_3_8_1_1() {
        let raw = [0x80, 6, 0, 10, 0, 1, b'a', 0];
        assert_eq!(dec(V4, &raw), Err(DecodeError::InvalidFixedHeaderFlags));
    }

    #[test]
    fn empty_payload_mqtt_3_8_3_2() {
        assert_eq!(dec(V4, &[0x82, 2, 0, 10]), Err(DecodeError::EmptySubscribe));
        assert_eq!(
            dec(V5, &[0x82, 3, 0, 10, 0]),
            Err(DecodeError::EmptySubscribe)
        );
    }

    #[test]
    fn reserved_option_bits() {
        // 3.1.1 [MQTT-3-8.3-4]: bits 7..2.
        assert_eq!(
            dec(V4, &[0x82, 6, 0, 10, 0, 1, b'a', 0x04]),
            Err(DecodeError::SubscriptionOptionsReserved)
        );
        // v5 [MQTT-3.8.3-5]: bits 7..6.
        assert_eq!(
            dec(V5, &[0x82, 7, 0, 10, 0, 0, 1, b'a', 0x40]),
            Err(DecodeError::SubscriptionOptionsReserved)
        );
        // QoS 3.
        assert_eq!(
            dec(V4, &[0x82, 6, 0, 10, 0, 1, b'a', 3]),
            Err(DecodeError::SubscriptionQoSInvalid)
        );
        // Retain handling 3.
        assert_eq!(
            dec(V5, &[0x82, 7, 0, 10, 0, 0, 1, b'a', 0x30]),
            Err(DecodeError::RetainHandlingInvalid)
        );
    }

    #[test]
    fn no_local_on_shared_mqtt_3_8_3_4() {
        let mut raw = vec![0x82, 0, 0, 10, 0, 0, 12];
        raw.extend_from_slice(b"$share/g/a/b");
        raw.push(0x04);
        raw[1] = (raw.len() - 2) as u8;
        assert_eq!(dec(V5, &raw), Err(DecodeError::NoLocalOnShared));
    }

    #[test]
    fn invalid_filters_mqtt_4_7_1() {
        assert_eq!(
            dec(V4, &[0x82, 7, 0, 10, 0, 2, b'a', b'#', 0]),
            Err(DecodeError::TopicFilterInvalid)
        );
        assert_eq!(
            dec(V4, &[0x82, 5, 0, 10, 0, 0, 0]),
            Err(DecodeError::FilterEmpty)
        );
    }

    #[test]
    fn duplicate_subscription_identifier() {
        let raw = [0x82, 11, 0, 10, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0];
        assert_eq!(dec(V5, &raw), Err(DecodeError::DuplicateProperty));
    }

    #[test]
    fn packet_id_zero() {
        assert_eq!(
            dec(V4, &[0x82, 6, 0, 0, 0, 1, b'a', 0]),
            Err(DecodeError::PacketIdZero)
        );
    }
}
