//! One v5 property struct per packet kind (v5 2.2.2.2, table 2-4). Fields are `Option`s (or
//! lists for repeatable properties); a property not listed for a packet is rejected on decode.
//! Below v5 these structs are not on the wire: encoding drops them, decoding leaves them empty.

use bytes::Bytes;

use crate::property::properties;
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::types::QoS;

properties! {
    /// CONNECT properties (v5 3.1.2.11).
    ConnectProperties {
        session_expiry_interval: u32 as U32 = SESSION_EXPIRY_INTERVAL,
        receive_maximum: u16 as U16NonZero = RECEIVE_MAXIMUM,
        maximum_packet_size: u32 as U32NonZero = MAXIMUM_PACKET_SIZE,
        topic_alias_maximum: u16 as U16 = TOPIC_ALIAS_MAXIMUM,
        request_response_information: bool as Flag = REQUEST_RESPONSE_INFORMATION,
        request_problem_information: bool as Flag = REQUEST_PROBLEM_INFORMATION,
        authentication_method: MqttString as Str = AUTHENTICATION_METHOD,
        authentication_data: Bytes as Bin = AUTHENTICATION_DATA,
    }
}

properties! {
    /// Will properties in the CONNECT payload (v5 3.1.3.2).
    WillProperties {
        will_delay_interval: u32 as U32 = WILL_DELAY_INTERVAL,
        payload_format_indicator: u8 as Format = PAYLOAD_FORMAT_INDICATOR,
        message_expiry_interval: u32 as U32 = MESSAGE_EXPIRY_INTERVAL,
        content_type: MqttString as Str = CONTENT_TYPE,
        response_topic: TopicName as Topic = RESPONSE_TOPIC,
        correlation_data: Bytes as Bin = CORRELATION_DATA,
    }
}

properties! {
    /// CONNACK properties (v5 3.2.2.3).
    ConnAckProperties {
        session_expiry_interval: u32 as U32 = SESSION_EXPIRY_INTERVAL,
        receive_maximum: u16 as U16NonZero = RECEIVE_MAXIMUM,
        maximum_qos: QoS as MaxQoS = MAXIMUM_QOS,
        retain_available: bool as Flag = RETAIN_AVAILABLE,
        maximum_packet_size: u32 as U32NonZero = MAXIMUM_PACKET_SIZE,
        assigned_client_identifier: MqttString as Str = ASSIGNED_CLIENT_IDENTIFIER,
        topic_alias_maximum: u16 as U16 = TOPIC_ALIAS_MAXIMUM,
        reason_string: MqttString as Str = REASON_STRING,
        wildcard_subscription_available: bool as Flag = WILDCARD_SUBSCRIPTION_AVAILABLE,
        subscription_identifiers_available: bool as Flag = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        shared_subscription_available: bool as Flag = SHARED_SUBSCRIPTION_AVAILABLE,
        server_keep_alive: u16 as U16 = SERVER_KEEP_ALIVE,
        response_information: MqttString as Str = RESPONSE_INFORMATION,
        server_reference: MqttString as Str = SERVER_REFERENCE,
        authentication_method: MqttString as Str = AUTHENTICATION_METHOD,
        authentication_data: Bytes as Bin = AUTHENTICATION_DATA,
    }
}

properties! {
    /// PUBLISH properties (v5 3.3.2.3). `topic_alias` and `subscription_identifiers` are per
    /// connection: `PublishFrame` never copies them from the publisher.
    PublishProperties {
        payload_format_indicator: u8 as Format = PAYLOAD_FORMAT_INDICATOR,
        message_expiry_interval: u32 as U32 = MESSAGE_EXPIRY_INTERVAL,
        topic_alias: u16 as Alias = TOPIC_ALIAS,
        response_topic: TopicName as Topic = RESPONSE_TOPIC,
        correlation_data: Bytes as Bin = CORRELATION_DATA,
        content_type: MqttString as Str = CONTENT_TYPE,
    }
    repeated {
        /// v5 3.3.2.3.8: one per matching subscription that had an identifier.
        subscription_identifiers: u32 as SubId = SUBSCRIPTION_IDENTIFIER,
    }
}

properties! {
    /// PUBACK, PUBREC, PUBREL and PUBCOMP properties (v5 3.4.2.2 .. 3.7.2.2).
    PubRespProperties {
        reason_string: MqttString as Str = REASON_STRING,
    }
}

properties! {
    /// SUBSCRIBE properties (v5 3.8.2.1).
    SubscribeProperties {
        subscription_identifier: u32 as SubId = SUBSCRIPTION_IDENTIFIER,
    }
}

properties! {
    /// SUBACK properties (v5 3.9.2.1).
    SubAckProperties {
        reason_string: MqttString as Str = REASON_STRING,
    }
}

properties! {
    /// UNSUBSCRIBE properties (v5 3.10.2.1): only User Property.
    UnsubscribeProperties {}
}

properties! {
    /// UNSUBACK properties (v5 3.11.2.1).
    UnsubAckProperties {
        reason_string: MqttString as Str = REASON_STRING,
    }
}

properties! {
    /// DISCONNECT properties (v5 3.14.2.2).
    DisconnectProperties {
        session_expiry_interval: u32 as U32 = SESSION_EXPIRY_INTERVAL,
        reason_string: MqttString as Str = REASON_STRING,
        server_reference: MqttString as Str = SERVER_REFERENCE,
    }
}

properties! {
    /// AUTH properties (v5 3.15.2.2).
    AuthProperties {
        authentication_method: MqttString as Str = AUTHENTICATION_METHOD,
        authentication_data: Bytes as Bin = AUTHENTICATION_DATA,
        reason_string: MqttString as Str = REASON_STRING,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::error::DecodeError;
    use crate::wire::Reader;

    fn read<T>(
        raw: &'static [u8],
        f: fn(&mut Reader<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let b = Bytes::from_static(raw);
        let mut r = Reader::new(&b);
        let v = f(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn publish_properties_round_trip() {
        let p = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            response_topic: Some(TopicName::from_static("r/t")),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            content_type: Some(MqttString::from_static("text/plain")),
            subscription_identifiers: smallvec::smallvec![1, 268_435_455],
            user_properties: vec![(MqttString::from_static("k"), MqttString::from_static("v"))],
        };
        let mut out = BytesMut::new();
        p.put(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        let b = out.freeze();
        let mut r = Reader::new(&b);
        assert_eq!(PublishProperties::read(&mut r), Ok(p));
    }

    #[test]
    fn duplicate_property_is_protocol_error() {
        // Message Expiry Interval twice.
        let raw = &[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
        assert_eq!(
            read(raw, PublishProperties::read),
            Err(DecodeError::DuplicateProperty)
        );
        // Subscription Identifier twice in SUBSCRIBE (v5 3.8.2.1.2).
        let raw = &[4, 0x0B, 1, 0x0B, 2];
        assert_eq!(
            read(raw, SubscribeProperties::read),
            Err(DecodeError::DuplicateProperty)
        );
        // ... but repeatable in PUBLISH, and User Property repeats anywhere.
        assert!(read(raw, PublishProperties::read).is_ok());
        let raw = &[12, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0];
        assert_eq!(
            read(raw, UnsubscribeProperties::read)
                .unwrap()
                .user_properties
                .len(),
            2
        );
    }

    #[test]
    fn property_not_allowed_vs_unknown() {
        // Topic Alias in CONNECT.
        assert_eq!(
            read(&[3, 0x23, 0, 1], ConnectProperties::read),
            Err(DecodeError::PropertyNotAllowed)
        );
        // Identifier 0x04 is not in table 2-4.
        assert_eq!(
            read(&[2, 0x04, 0], ConnectProperties::read),
            Err(DecodeError::UnknownProperty)
        );
    }

    #[test]
    fn value_ranges() {
        assert_eq!(
            read(&[2, 0x01, 2], PublishProperties::read),
            Err(DecodeError::InvalidPropertyValue)
        );
        assert_eq!(
            read(&[3, 0x23, 0, 0], PublishProperties::read),
            Err(DecodeError::TopicAliasZero)
        );
        assert_eq!(
            read(&[2, 0x0B, 0], PublishProperties::read),
            Err(DecodeError::SubscriptionIdZero)
        );
        assert_eq!(
            read(&[3, 0x21, 0, 0], ConnectProperties::read),
            Err(DecodeError::InvalidPropertyValue)
        );
        assert_eq!(
            read(&[2, 0x24, 2], ConnAckProperties::read),
            Err(DecodeError::InvalidPropertyValue)
        );
        assert_eq!(
            read(&[4, 0x08, 0, 1, b'#'], PublishProperties::read),
            Err(DecodeError::TopicNameWildcard)
        );
    }

    #[test]
    fn property_length_past_end() {
        assert_eq!(
            read(&[5, 0x01, 1], PublishProperties::read),
            Err(DecodeError::UnexpectedEof)
        );
    }
}
