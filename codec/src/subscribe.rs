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
