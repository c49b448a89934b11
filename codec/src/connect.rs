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

impl Connect {
    pub(crate) fn decode(body: &Bytes) -> Result<Connect, DecodeError> {
        let mut r = Reader::new(body);
        let protocol = read_protocol(&mut r)?;
        let v5 = protocol.is_v5();
        let flags = r.u8()?;
        // [MQTT-3.1.2-3] the reserved flag MUST be 0.
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & WILL != 0;
        let will_qos_bits = (flags >> 3) & 3;
        if !will_flag {
            // [MQTT-3.1.2-11] / [MQTT-3.1.2-13] (3.1.1) no will: Will QoS MUST be 0.
            if will_qos_bits != 0 {
                return Err(DecodeError::WillQoSWithoutWill);
            }
            // [MQTT-3.1.2-13] / [MQTT-3.1.2-15] (3.1.1) no will: Will Retain MUST be 0.
            if flags & WILL_RETAIN != 0 {
                return Err(DecodeError::WillRetainWithoutWill);
            }
        }
        // [MQTT-3.1.2-12] / [MQTT-3.1.2-14] (3.1.1) Will QoS 3 is malformed.
        let will_qos = QoS::try_from(will_qos_bits).map_err(|_| DecodeError::WillQoSInvalid)?;
        // [MQTT-3.1.2-22] (3.1.1): no user name => no password. v5 allows a password alone.
        if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(DecodeError::PasswordWithoutUsername);
        }
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
        if client_id.is_empty() {
            match protocol {
                // [MQTT-3.1.3-8] (3.1.1) empty ClientId with CleanSession 0: return code 0x02.
                ProtocolVersion::V3_1_1 if !clean_start => {
                    return Err(DecodeError::ClientIdRejected)
                }
                // 3.1 (MQIsdp) 3.1: the Client Identifier is 1 to 23 characters.
                ProtocolVersion::V3_1 => return Err(DecodeError::ClientIdRejected),
                _ => {}
            }
        }
        // [MQTT-3.1.2-9] will flag: Will Properties, Will Topic and Will Payload MUST be present.
        let will = if will_flag {
            let properties = if v5 {
                WillProperties::read(&mut r)?
            } else {
                WillProperties::default()
            };
            // [MQTT-3.1.3-11] UTF-8 string; v5 4.7: a topic name without wildcards.
            let topic = r.topic_name()?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
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
