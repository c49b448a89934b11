//! The `Packet` enum: fixed-header checks (v5 2.1), dispatch of decode/encode/length to the
//! per-packet files, and PINGREQ/PINGRESP (which have no body).

use bytes::{Bytes, BytesMut};

use crate::auth::Auth;
use crate::connack::ConnAck;
use crate::connect::Connect;
use crate::disconnect::Disconnect;
use crate::error::{DecodeError, EncodeError};
use crate::publish::{self, Publish};
use crate::pubresp::PubResp;
use crate::suback::SubAck;
use crate::subscribe::Subscribe;
use crate::types::ProtocolVersion;
use crate::unsuback::UnsubAck;
use crate::unsubscribe::Unsubscribe;
use crate::wire::put_fixed_header;

/// One MQTT control packet of any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// Control packet types (v5 2.1.2).
pub mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// Checks the first byte of a fixed header: packet type and reserved flags. Runs before the
/// body is buffered. `version` None = before CONNECT (AUTH is then refused as not-v5).
#[inline]
pub(crate) fn check_first_byte(
    first: u8,
    version: Option<ProtocolVersion>,
) -> Result<(), DecodeError> {
    use packet_type::*;
    let flags = first & 0x0F;
    let expected = match first >> 4 {
        // v5 2.1.2 / 3.1.1 2.2.1: type 0 is reserved (forbidden).
        0 => return Err(DecodeError::ReservedPacketType),
        PUBLISH => return publish::check_flags(flags),
        // 3.1.1 2.2.1: type 15 is reserved; AUTH exists in v5 only.
        AUTH if version != Some(ProtocolVersion::V5) => {
            return Err(DecodeError::ReservedPacketType)
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => {
            // 3.1 (MQIsdp) 2.1: these were sent at QoS 1 and may carry DUP on a retry.
            if version == Some(ProtocolVersion::V3_1) && flags == 0x0A {
                return Ok(());
            }
            0x02
        }
        _ => 0x00,
    };
    // [MQTT-2.1.3-1] / [MQTT-2.2.2-1] (3.1.1) reserved flag bits MUST be as listed in table 2-2;
    // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: PUBREL, SUBSCRIBE, UNSUBSCRIBE are 0010.
    if flags != expected {
        return Err(DecodeError::InvalidFixedHeaderFlags);
    }
    Ok(())
}

impl Packet {
    /// Decodes one body whose first byte passed `check_first_byte`. `version` is that of the
    /// connection (a CONNECT carries its own).
    pub(crate) fn decode_body(
        first: u8,
        body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        use packet_type::*;
        if first >> 4 == PUBLISH {
            return Ok(Packet::Publish(Publish::decode(
                first & 0x0F,
                body,
                version,
            )?));
        }
        let body = &body;
        Ok(match first >> 4 {
            CONNECT => Packet::Connect(Box::new(Connect::decode(body)?)),
            CONNACK => Packet::ConnAck(ConnAck::decode(body, version)?),
            PUBACK => Packet::PubAck(PubResp::decode(body, version, false)?),
            PUBREC => Packet::PubRec(PubResp::decode(body, version, false)?),
            PUBREL => Packet::PubRel(PubResp::decode(body, version, true)?),
            PUBCOMP => Packet::PubComp(PubResp::decode(body, version, true)?),
            SUBSCRIBE => Packet::Subscribe(Subscribe::decode(body, version)?),
            SUBACK => Packet::SubAck(SubAck::decode(body, version)?),
            UNSUBSCRIBE => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
            UNSUBACK => Packet::UnsubAck(UnsubAck::decode(body, version)?),
            PINGREQ | PINGRESP => {
                // v5 3.12 / 3.13: no variable header, no payload.
                if !body.is_empty() {
                    return Err(DecodeError::TrailingBytes);
                }
                if first >> 4 == PINGREQ {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            DISCONNECT => Packet::Disconnect(Disconnect::decode(body, version)?),
            AUTH => Packet::Auth(Auth::decode(body)?),
            _ => return Err(DecodeError::ReservedPacketType),
        })
    }

    /// Appends the whole frame in `version`. CONNECT is always written in its own `protocol`.
    /// Below v5, properties and v5-only fields are left out.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(c) => c.encode(out),
            Packet::ConnAck(c) => c.encode(version, out),
            Packet::Publish(p) => p.encode(version, out),
            Packet::PubAck(p) => p.encode(0x40, version, out),
            Packet::PubRec(p) => p.encode(0x50, version, out),
            // [MQTT-3.6.1-1] PUBREL flags 0010.
            Packet::PubRel(p) => p.encode(0x62, version, out),
            Packet::PubComp(p) => p.encode(0x70, version, out),
            Packet::Subscribe(s) => s.encode(version, out),
            Packet::SubAck(s) => s.encode(version, out),
            Packet::Unsubscribe(u) => u.encode(version, out),
            Packet::UnsubAck(u) => u.encode(version, out),
            Packet::PingReq => {
                put_fixed_header(out, 0xC0, 0);
                Ok(())
            }
            Packet::PingResp => {
                put_fixed_header(out, 0xD0, 0);
                Ok(())
            }
            Packet::Disconnect(d) => d.encode(version, out),
            Packet::Auth(a) => a.encode(version, out),
        }
    }

    /// Size of the whole frame `encode` writes, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.encoded_len(),
            Packet::ConnAck(c) => c.encoded_len(version),
            Packet::Publish(p) => p.encoded_len(version),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.encoded_len(version)
            }
            Packet::Subscribe(s) => s.encoded_len(version),
            Packet::SubAck(s) => s.encoded_len(version),
            Packet::Unsubscribe(u) => u.encoded_len(version),
            Packet::UnsubAck(u) => u.encoded_len(version),
            Packet::PingReq | Packet::PingResp => 2,
            Packet::Disconnect(d) => d.encoded_len(version),
            Packet::Auth(a) => a.encoded_len(),
        }
    }

    /// The packet's name as in the spec, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

impl From<Publish> for Packet {
    fn from(p: Publish) -> Packet {
        Packet::Publish(p)
    }
}

impl From<Connect> for Packet {
    fn from(c: Connect) -> Packet {
        Packet::Connect(Box::new(c))
    }
}
