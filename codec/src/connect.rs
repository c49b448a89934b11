//! CONNECT (v5 3.1, 3.1.1 3.1, 3.1 MQIsdp): decode, encode, length; tests at the bottom.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnectProperties, WillProperties};
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::types::{ProtocolVersion, QoS};
use crate::wire::{
    binary_len, check_binary, check_remaining, frame_len, put_binary, put_fixed_header, Reader,
};

/// CONNECT: the first packet of a connection; carries the protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Start (v5) / Clean Session (3.1.1).
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: MqttString,
    pub will: Option<LastWill>,
    pub username: Option<MqttString>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// The Will Message of a CONNECT (v5 3.1.3.2 .. 3.1.3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

const RESERVED: u8 = 0x01;
const CLEAN: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

impl Default for Connect {
    fn default() -> Self {
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: MqttString::new(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// Reads Protocol Name and Protocol Level (v5 3.1.2.1, 3.1.2.2).
pub(crate) fn read_protocol(r: &mut Reader<'_>) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        // [MQTT-3.1.2-2] unsupported level (or a level not matching the name): the server
        // answers CONNACK 0x84 (v5) / return code 0x01 (3.1.1) and closes.
        (b"MQTT", _) | (b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolVersion),
        // [MQTT-3.1.2-1] the protocol name MUST be "MQTT" (3.1: "MQIsdp").
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

/// Just the protocol version of a CONNECT body, so a failed CONNECT can still be answered in
/// the client's version.
pub(crate) fn peek_version(body: &Bytes) -> Result<ProtocolVersion, DecodeError> {
    read_protocol(&mut Reader::new(body))
}

/// Checks the Connect Flags byte (v5 3.1.2.3); returns the Will QoS.
fn check_flags(flags: u8, v5: bool) -> Result<QoS, DecodeError> {
    // [MQTT-3.1.2-3] the reserved flag MUST be 0.
    if flags & RESERVED != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_qos_bits = (flags >> 3) & 3;
    if flags & WILL == 0 {
        // [MQTT-3.1.2-11] / [MQTT-3.1.2-13] (3.1.1) no will: Will QoS MUST be 0.
        if will_qos_bits != 0 {
            return Err(DecodeError::WillQoSWithoutWill);
        }
        // [MQTT-3.1.2-13] / [MQTT-3.1.2-15] (3.1.1) no will: Will Retain MUST be 0.
        if flags & WILL_RETAIN != 0 {
            return Err(DecodeError::WillRetainWithoutWill);
        }
    }
    // [MQTT-3.1.2-22] (3.1.1): no user name => no password. v5 allows a password alone.
    if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    // [MQTT-3.1.2-12] / [MQTT-3.1.2-14] (3.1.1) Will QoS 3 is malformed.
    QoS::try_from(will_qos_bits).map_err(|_| DecodeError::WillQoSInvalid)
}

/// Client identifier rules that depend on the version.
fn check_client_id(
    protocol: ProtocolVersion,
    client_id: &MqttString,
    clean_start: bool,
) -> Result<(), DecodeError> {
    if !client_id.is_empty() {
        return Ok(());
    }
    match protocol {
        // [MQTT-3.1.3-8] (3.1.1) empty ClientId with CleanSession 0: return code 0x02.
        ProtocolVersion::V3_1_1 if !clean_start => Err(DecodeError::ClientIdRejected),
        // 3.1 (MQIsdp) 3.1: the Client Identifier is 1 to 23 characters.
        ProtocolVersion::V3_1 => Err(DecodeError::ClientIdRejected),
        // v5 3.1.3.1: the server may assign one.
        _ => Ok(()),
    }
}

/// Will Properties (v5), Will Topic, Will Payload (v5 3.1.3.2 .. 3.1.3.4).
fn read_will(
    r: &mut Reader<'_>,
    v5: bool,
    qos: QoS,
    retain: bool,
) -> Result<LastWill, DecodeError> {
    let properties = if v5 {
        WillProperties::read(r)?
    } else {
        WillProperties::default()
    };
    // [MQTT-3.1.3-11] UTF-8 string; v5 4.7: a topic name without wildcards.
    let topic = r.topic_name()?;
    let payload = r.binary()?;
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

impl Connect {
    pub(crate) fn decode(body: &Bytes) -> Result<Connect, DecodeError> {
        let mut r = Reader::new(body);
        let protocol = read_protocol(&mut r)?;
        let v5 = protocol.is_v5();
        let flags = r.u8()?;
        let will_qos = check_flags(flags, v5)?;
        let clean_start = flags & CLEAN != 0;
        let keep_alive = r.u16()?;
        let properties = if v5 {
            let p = ConnectProperties::read(&mut r)?;
            // v5 3.1.2.11.10: Authentication Data without Authentication Method.
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(DecodeError::AuthDataWithoutMethod);
            }
            p
        } else {
            ConnectProperties::default()
        };
        // [MQTT-3.1.3-4] the ClientID MUST be a UTF-8 Encoded String.
        let client_id = r.string()?;
        check_client_id(protocol, &client_id, clean_start)?;
        // [MQTT-3.1.2-9] will flag: Will Properties, Will Topic and Will Payload MUST be present.
        let will = if flags & WILL != 0 {
            Some(read_will(&mut r, v5, will_qos, flags & WILL_RETAIN != 0)?)
        } else {
            None
        };
        // [MQTT-3.1.2-17] / [MQTT-3.1.2-19] (3.1.1) user name present iff its flag is set.
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        // [MQTT-3.1.2-19] / [MQTT-3.1.2-21] (3.1.1) password present iff its flag is set.
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn remaining_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut n = binary_len(self.protocol.protocol_name().as_bytes()) + 1 + 1 + 2;
        if v5 {
            n += self.properties.encoded_len();
        }
        n += binary_len(self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                n += w.properties.encoded_len();
            }
            n += binary_len(w.topic.as_str().as_bytes()) + binary_len(&w.payload);
        }
        if let Some(u) = &self.username {
            n += binary_len(u.as_bytes());
        }
        if let Some(p) = &self.password {
            n += binary_len(p);
        }
        n
    }

    pub(crate) fn encoded_len(&self) -> usize {
        frame_len(self.remaining_len())
    }

    /// Encodes in `self.protocol` (a CONNECT carries its own version).
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining = self.remaining_len();
        check_remaining(remaining)?;
        if let Some(w) = &self.will {
            check_binary(&w.payload)?;
            if w.topic.is_empty() {
                return Err(EncodeError::EmptyTopic);
            }
        }
        if let Some(p) = &self.password {
            check_binary(p)?;
        }
        let v5 = self.protocol.is_v5();
        let mut flags = 0u8;
        if self.clean_start {
            flags |= CLEAN;
        }
        if let Some(w) = &self.will {
            flags |= WILL | (w.qos as u8) << 3;
            if w.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        out.reserve(frame_len(remaining));
        put_fixed_header(out, 0x10, remaining);
        put_binary(out, self.protocol.protocol_name().as_bytes());
        out.put_u8(self.protocol as u8);
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.put(out);
        }
        put_binary(out, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                w.properties.put(out);
            }
            put_binary(out, w.topic.as_str().as_bytes());
            put_binary(out, &w.payload);
        }
        if let Some(u) = &self.username {
            put_binary(out, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_binary(out, p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{both_ways, dec, enc};
    use crate::{ConnectReturnCode, Packet, ReasonCode};

    const V3: ProtocolVersion = ProtocolVersion::V3_1;
    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn s(x: &'static str) -> MqttString {
        MqttString::from_static(x)
    }

    /// v5 Figure 3-6 variable header (flags 0xCE, keep alive 10, Session Expiry 10), completed
    /// with the payload the flags call for.
    const V5_SPEC_EXAMPLE: &[u8] = &[
        0x10, 32, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xCE, 0,
        10, // header, name, level, flags, keep alive
        5, 0x11, 0, 0, 0, 10, // properties: Session Expiry Interval 10
        0, 1, b'c', // client id
        0,    // will properties
        0, 1, b'w', // will topic
        0, 1, b'x', // will payload
        0, 1, b'u', // user name
        0, 1, b'p', // password
    ];

    fn v5_spec_example() -> Packet {
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 10,
            client_id: s("c"),
            will: Some(LastWill {
                topic: TopicName::from_static("w"),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties::default(),
            }),
            username: Some(s("u")),
            password: Some(Bytes::from_static(b"p")),
            properties: ConnectProperties {
                session_expiry_interval: Some(10),
                ..Default::default()
            },
        }))
    }

    #[test]
    fn v5_spec_example_figure_3_6() {
        both_ways(V5, V5_SPEC_EXAMPLE, &v5_spec_example());
    }

    #[test]
    fn v311_spec_example_figure_3_6() {
        // 3.1.1 Figure 3.6: 00 04 MQTT 04 CE 00 0A, then the payload.
        let raw = [
            0x10, 25, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xCE, 0, 10, 0, 1, b'c', 0, 1, b'w', 0, 1,
            b'x', 0, 1, b'u', 0, 1, b'p',
        ];
        let Packet::Connect(mut c) = v5_spec_example() else {
            unreachable!()
        };
        c.protocol = V4;
        c.properties = ConnectProperties::default();
        both_ways(V4, &raw, &Packet::Connect(c));
    }

    #[test]
    fn v31_mqisdp_minimal() {
        let raw = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 0,
        ];
        // 3.1 requires a client id: an empty one is rejected with return code 2.
        assert_eq!(dec(V3, &raw), Err(DecodeError::ClientIdRejected));
        let raw = [
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'a',
        ];
        let c = Connect {
            protocol: V3,
            client_id: s("a"),
            ..Default::default()
        };
        both_ways(V3, &raw, &Packet::Connect(Box::new(c)));
    }

    #[test]
    fn unknown_level_mqtt_3_1_2_2() {
        for level in [0u8, 2, 6, 255] {
            let raw = [
                0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60, 0, 0,
            ];
            let e = dec(V5, &raw).unwrap_err();
            assert_eq!(e, DecodeError::UnsupportedProtocolVersion);
            assert_eq!(
                e.connect_return_code(),
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            );
            assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        }
        // Name and level that do not match.
        let raw = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 3, 0x02, 0, 60, 0, 0];
        assert_eq!(dec(V5, &raw), Err(DecodeError::UnsupportedProtocolVersion));
    }

    #[test]
    fn bad_protocol_name_mqtt_3_1_2_1() {
        let raw = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'X', 4, 0x02, 0, 60, 0, 0];
        let e = dec(V4, &raw).unwrap_err();
        assert_eq!(e, DecodeError::InvalidProtocolName);
        assert_eq!(
            e.connect_return_code(),
            Some(ConnectReturnCode::UnacceptableProtocolVersion)
        );
    }

    fn with_flags(level: u8, flags: u8) -> Vec<u8> {
        let mut raw = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
        if level == 5 {
            raw.push(0);
        }
        raw.extend_from_slice(&[0, 1, b'c']);
        raw[1] = (raw.len() - 2) as u8;
        raw
    }

    #[test]
    fn reserved_flag_mqtt_3_1_2_3() {
        assert_eq!(
            dec(V4, &with_flags(4, 0x03)),
            Err(DecodeError::ConnectReservedFlag)
        );
        assert_eq!(
            dec(V5, &with_flags(5, 0x03)),
            Err(DecodeError::ConnectReservedFlag)
        );
    }

    #[test]
    fn will_flags_mqtt_3_1_2_11_to_13() {
        // Will QoS 1 without the will flag.
        assert_eq!(
            dec(V5, &with_flags(5, 0x0A)),
            Err(DecodeError::WillQoSWithoutWill)
        );
        // Will Retain without the will flag.
        assert_eq!(
            dec(V4, &with_flags(4, 0x22)),
            Err(DecodeError::WillRetainWithoutWill)
        );
        // Will QoS 3 with the will flag.
        assert_eq!(
            dec(V4, &with_flags(4, 0x1E)),
            Err(DecodeError::WillQoSInvalid)
        );
        // Will flag but no will topic/payload [MQTT-3.1.2-9].
        assert_eq!(
            dec(V4, &with_flags(4, 0x06)),
            Err(DecodeError::UnexpectedEof)
        );
    }

    #[test]
    fn password_without_username_mqtt_3_1_2_22() {
        let mut raw = with_flags(4, 0x42);
        raw.extend_from_slice(&[0, 1, b'p']);
        raw[1] += 3;
        assert_eq!(dec(V4, &raw), Err(DecodeError::PasswordWithoutUsername));
        // v5 allows a password without a user name (v5 3.1.2.9).
        let mut raw = with_flags(5, 0x42);
        raw.extend_from_slice(&[0, 1, b'p']);
        raw[1] += 3;
        let Packet::Connect(c) = dec(V5, &raw).unwrap() else {
            panic!()
        };
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
        assert_eq!(c.username, None);
    }

    #[test]
    fn username_flag_without_field_mqtt_3_1_2_17() {
        assert_eq!(
            dec(V4, &with_flags(4, 0x82)),
            Err(DecodeError::UnexpectedEof)
        );
    }

    #[test]
    fn empty_client_id_mqtt_3_1_3_8() {
        let raw = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 0];
        let e = dec(V4, &raw).unwrap_err();
        assert_eq!(e, DecodeError::ClientIdRejected);
        assert_eq!(
            e.connect_return_code(),
            Some(ConnectReturnCode::IdentifierRejected)
        );
        // Clean session: accepted (the server assigns an id).
        let raw = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];
        assert!(dec(V4, &raw).is_ok());
        // v5: accepted with Clean Start 0 as well.
        let raw = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x00, 0, 60, 0, 0, 0,
        ];
        assert!(dec(V5, &raw).is_ok());
    }

    #[test]
    fn client_id_utf8_mqtt_3_1_3_4() {
        let raw = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, 0xFF,
        ];
        assert_eq!(dec(V4, &raw), Err(DecodeError::InvalidUtf8));
        let raw = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, 0x00,
        ];
        assert_eq!(dec(V4, &raw), Err(DecodeError::NullCharacter));
    }

    #[test]
    fn will_topic_wildcard_rejected() {
        let raw = [
            0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60, 0, 1, b'c', 0, 1, b'#', 0, 1,
            b'x',
        ];
        assert_eq!(dec(V4, &raw), Err(DecodeError::TopicNameWildcard));
    }

    #[test]
    fn auth_data_without_method() {
        let raw = [
            0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 4, 0x16, 0, 1, b'd', 0, 1, b'c',
        ];
        assert_eq!(dec(V5, &raw), Err(DecodeError::AuthDataWithoutMethod));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let raw = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0, 9,
        ];
        assert_eq!(dec(V4, &raw), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn v5_properties_are_dropped_in_v3() {
        let Packet::Connect(mut c) = v5_spec_example() else {
            unreachable!()
        };
        c.protocol = V4;
        let raw = enc(&Packet::Connect(c.clone()), V4);
        let Packet::Connect(back) = dec(V4, &raw).unwrap() else {
            panic!()
        };
        assert!(back.properties.is_empty());
    }
}
