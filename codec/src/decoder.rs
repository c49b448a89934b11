//! `Decoder`: incremental framing over a `BytesMut` read buffer. Checks the fixed header (type,
//! flags, remaining length, size limit) as soon as it is in, splits off one whole frame without
//! copying and hands its body to the packet's decoder.

use bytes::{Buf, BytesMut};

use crate::connect::peek_version;
use crate::error::DecodeError;
use crate::packet::{check_first_byte, packet_type, Packet};
use crate::publish::Publish;
use crate::types::ProtocolVersion;
use crate::wire::{parse_var_int, VarInt};

/// Most `decode` reserves ahead for a partial frame.
const MAX_RESERVE: usize = 1 << 20;
/// What `decode` may reserve for a partial frame when few bytes are there.
const MIN_RESERVE: usize = 4096;

/// Framing state of one connection: its protocol version (None until CONNECT) and the largest
/// packet it accepts.
#[derive(Clone, Debug)]
pub struct Decoder {
    max_packet_size: u32,
    version: Option<ProtocolVersion>,
    /// Set once this decoder has read a CONNECT: it is a server reading a client.
    from_client: bool,
}

impl Decoder {
    /// `max_packet_size` bounds the whole frame (fixed header included, v5 3.1.2.11.4);
    /// 0 means no limit beyond the protocol's 268,435,460 bytes.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            max_packet_size,
            version: None,
            from_client: false,
        }
    }

    /// Sets the version (a client does this before reading CONNACK).
    pub fn set_version(&mut self, v: ProtocolVersion) {
        self.version = Some(v);
    }

    pub fn set_max_packet_size(&mut self, n: u32) {
        self.max_packet_size = n;
    }

    /// Declares that this decoder reads a client (a server's session decoder made after the
    /// CONNECT was read elsewhere): see `reads_client`. Set automatically by decoding a CONNECT.
    pub fn set_reads_client(&mut self, yes: bool) {
        self.from_client = yes;
    }

    /// True once a CONNECT was decoded (or `set_reads_client(true)`): this decoder reads a client, so packets only a server
    /// sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) and a PUBLISH with a Subscription Identifier
    /// [MQTT-3.3.4-6] are refused.
    pub fn reads_client(&self) -> bool {
        self.from_client
    }

    /// The connection's version: set by `set_version`, or by a CONNECT as soon as its protocol
    /// level has been read (even when the rest of that CONNECT then fails to decode, so the
    /// server can answer in the client's version).
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Splits one whole frame off the front of `buf` and decodes it (payload/topic are slices of
    /// it). `Ok(None)`: need more bytes (`buf` untouched; capacity reserved for at most as many bytes as
    /// it holds, 4 KiB to 1 MiB). The
    /// size limit is checked from the fixed header, before the body arrives. When the frame was
    /// the last bytes of `buf`, `buf` is left empty with no capacity (the frame keeps the
    /// allocation). After an error the connection must be closed (the buffer position is
    /// unspecified).
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        check_first_byte(first, self.version)?;
        let is_connect = first >> 4 == packet_type::CONNECT;
        match self.version {
            // [MQTT-3.1.0-1] the first packet from the client MUST be CONNECT.
            None if !is_connect => return Err(DecodeError::FirstPacketNotConnect),
            // [MQTT-3.1.0-2] a second CONNECT is a Protocol Error.
            Some(_) if is_connect => return Err(DecodeError::SecondConnect),
            _ => {}
        }
        if self.from_client && server_to_client_only(first >> 4) {
            // v5 2.1.2 / 3.1.1 2.2.1: "Direction of flow" of each packet type.
            return Err(DecodeError::WrongDirection);
        }
        let (remaining, len_bytes) = match parse_var_int(&buf[1..]) {
            VarInt::Value(v, n) => (v as usize, n),
            VarInt::Incomplete => return Ok(None),
            // [MQTT-1.5.5-1] at most 4 bytes, minimally encoded (v5 2.1.4).
            VarInt::Malformed => return Err(DecodeError::MalformedRemainingLength),
        };
        let total = 1 + len_bytes + remaining;
        // v5 3.1.2.11.4 / 3.2.2.3.6: a packet over the Maximum Packet Size is refused from its
        // fixed header, before its body is buffered.
        if self.max_packet_size != 0 && total > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge);
        }
        if buf.len() < total {
            // Room for the rest of the frame that grows with the bytes that arrived (at most
            // doubling what is there), never with the size the header announces alone: a peer
            // that announces 1 MiB and sends 10 bytes makes the buffer 4 KiB, not 1 MiB.
            let ahead = buf.len().clamp(MIN_RESERVE, MAX_RESERVE);
            buf.reserve((total - buf.len()).min(ahead));
            return Ok(None);
        }
        buf.advance(1 + len_bytes);
        let body = if buf.len() == remaining {
            // The last frame in the buffer takes the buffer's own reference: no refcount
            // increment (one of the four atomic operations a PUBLISH costs when a read brings
            // one frame). `buf` is left empty without capacity.
            std::mem::take(buf).freeze()
        } else {
            buf.split_to(remaining).freeze()
        };
        if first >> 4 == packet_type::PUBLISH {
            if let Some(version) = self.version {
                // The hot path, kept inline so the packet is built in place.
                let p = Publish::decode(first & 0x0F, body, version)?;
                // [MQTT-3.3.4-6] a PUBLISH from a Client MUST NOT contain a Subscription
                // Identifier.
                if self.from_client && !p.properties.subscription_identifiers.is_empty() {
                    return Err(DecodeError::SubscriptionIdFromClient);
                }
                return Ok(Some(Packet::Publish(p)));
            }
        }
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = peek_version(&body)?;
                self.version = Some(v);
                self.from_client = true;
                v
            }
        };
        Packet::decode_body(first, body, version).map(Some)
    }
}

/// Decodes one whole PUBLISH packet (fixed header included) held in `frame`, with nothing
/// after it: topic and payload are slices of `frame`, nothing is copied. For a PUBLISH that
/// arrives already framed, e.g. inside a node-link frame. `None`: `frame` is not exactly one
/// PUBLISH (another type, a length that disagrees, or bytes left over).
pub fn decode_publish_frame(
    frame: bytes::Bytes,
    version: ProtocolVersion,
) -> Result<Option<Publish>, DecodeError> {
    let Some(&first) = frame.first() else {
        return Ok(None);
    };
    if first >> 4 != packet_type::PUBLISH {
        return Ok(None);
    }
    check_first_byte(first, Some(version))?;
    let (remaining, len_bytes) = match parse_var_int(&frame[1..]) {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
        // [MQTT-1.5.5-1] at most 4 bytes, minimally encoded (v5 2.1.4).
        VarInt::Malformed => return Err(DecodeError::MalformedRemainingLength),
    };
    if frame.len() != 1 + len_bytes + remaining {
        return Ok(None);
    }
    let body = frame.slice(1 + len_bytes..);
    Publish::decode(first & 0x0F, body, version).map(Some)
}

/// Packet types only a server sends.
#[inline]
fn server_to_client_only(ty: u8) -> bool {
    use packet_type::*;
    matches!(ty, CONNACK | SUBACK | UNSUBACK | PINGRESP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::dec;

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;
    const CONNECT_V5: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 0,
    ];

    fn client(v: ProtocolVersion, max: u32) -> Decoder {
        let mut d = Decoder::new(max);
        d.set_version(v);
        d
    }

    #[test]
    fn a_framed_publish_decodes_without_copying() {
        let raw = bytes::Bytes::from_static(&[0x30, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i']);
        let p = decode_publish_frame(raw.clone(), V5).unwrap().unwrap();
        assert_eq!(p.topic.as_str(), "a/b");
        assert_eq!(&p.payload[..], b"hi");
        // The payload is a slice of the frame: same memory.
        assert_eq!(p.payload.as_ptr(), raw[8..].as_ptr());
        // Bytes after it, a short frame, or another packet type: not one whole PUBLISH.
        let mut longer = raw.to_vec();
        longer.push(0);
        assert_eq!(decode_publish_frame(longer.into(), V5), Ok(None));
        assert_eq!(decode_publish_frame(raw.slice(..9), V5), Ok(None));
        let ping = bytes::Bytes::from_static(&[0xC0, 0]);
        assert_eq!(decode_publish_frame(ping, V5), Ok(None));
        let bad_len = bytes::Bytes::from_static(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(decode_publish_frame(bad_len, V5).is_err());
    }

    #[test]
    fn partial_frame_is_need_more_bytes() {
        let raw = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
        for cut in 0..raw.len() {
            let mut d = client(V4, 0);
            let mut b = BytesMut::from(&raw[..cut]);
            assert_eq!(d.decode(&mut b), Ok(None), "cut {cut}");
            assert_eq!(&b[..], &raw[..cut]);
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut b = BytesMut::from(&[0xC0, 0, 0xD0, 0, 0xE0][..]);
        let mut d = client(V4, 0);
        assert_eq!(d.decode(&mut b), Ok(Some(Packet::PingReq)));
        assert_eq!(d.decode(&mut b), Ok(Some(Packet::PingResp)));
        assert_eq!(d.decode(&mut b), Ok(None));
        assert_eq!(&b[..], &[0xE0]);
    }

    /// Issue 17 case 3: a header announcing 1 MiB with 10 bytes behind it reserves a few KiB;
    /// the reservation grows with what arrives (at most doubling it), not with the announcement.
    #[test]
    fn partial_frame_reserves_with_the_bytes_that_arrived() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0x30, 0xF8, 0xFF, 0x3F, 0, 3, b'a', b'/', b'b', 0]);
        let mut d = client(V4, 0);
        assert_eq!(d.decode(&mut b), Ok(None));
        assert!(b.capacity() <= 8192, "capacity {}", b.capacity());
        b.extend_from_slice(&[7u8; 100_000]);
        assert_eq!(d.decode(&mut b), Ok(None));
        assert!(
            b.capacity() <= 2 * b.len() + 8192,
            "capacity {} for {} bytes",
            b.capacity(),
            b.len()
        );
    }

    #[test]
    fn last_frame_takes_the_buffer() {
        let raw = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
        let mut b = BytesMut::from(&raw[..]);
        b.extend_from_slice(&raw);
        let mut d = client(V4, 0);
        let first = d.decode(&mut b).unwrap().unwrap();
        assert_eq!(b.len(), raw.len());
        let second = d.decode(&mut b).unwrap().unwrap();
        assert_eq!(first, second);
        assert!(b.is_empty() && b.capacity() == 0);
        let Packet::Publish(p) = second else {
            panic!("{second:?}")
        };
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("a/b", &b"hi"[..]));
        // The emptied buffer takes the next read as a new one.
        b.extend_from_slice(&raw);
        assert_eq!(d.decode(&mut b).unwrap().unwrap(), first);
    }

    #[test]
    fn max_packet_size_from_fixed_header() {
        // Only the fixed header has arrived: 2,097,152 bytes announced, limit 1024.
        let mut b = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
        let e = client(V5, 1024).decode(&mut b).unwrap_err();
        assert_eq!(e, DecodeError::PacketTooLarge);
        assert_eq!(e.reason_code(), crate::ReasonCode::PacketTooLarge);
        // The limit counts the whole frame: 2 + 3 = 5 bytes.
        let raw = [0x30, 3, 0, 1, b'a'];
        assert!(client(V4, 5).decode(&mut BytesMut::from(&raw[..])).is_ok());
        assert_eq!(
            client(V4, 4).decode(&mut BytesMut::from(&raw[..])),
            Err(DecodeError::PacketTooLarge)
        );
    }

    #[test]
    fn remaining_length_mqtt_1_5_5_1() {
        let mut b = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert_eq!(
            client(V4, 0).decode(&mut b),
            Err(DecodeError::MalformedRemainingLength)
        );
        let mut b = BytesMut::from(&[0xC0, 0x80, 0x00][..]);
        assert_eq!(
            client(V4, 0).decode(&mut b),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Four continuation-free bytes still pending: need more.
        let mut b = BytesMut::from(&[0x30, 0xFF, 0xFF][..]);
        assert_eq!(client(V4, 0).decode(&mut b), Ok(None));
    }

    #[test]
    fn first_packet_must_be_connect_mqtt_3_1_0_1() {
        let mut b = BytesMut::from(&[0xC0, 0][..]);
        assert_eq!(
            Decoder::new(0).decode(&mut b),
            Err(DecodeError::FirstPacketNotConnect)
        );
    }

    #[test]
    fn second_connect_mqtt_3_1_0_2() {
        let mut b = BytesMut::from(CONNECT_V5);
        b.extend_from_slice(CONNECT_V5);
        let mut d = Decoder::new(0);
        assert!(matches!(d.decode(&mut b), Ok(Some(Packet::Connect(_)))));
        assert_eq!(d.version(), Some(V5));
        assert_eq!(d.decode(&mut b), Err(DecodeError::SecondConnect));
    }

    #[test]
    fn version_known_even_when_connect_fails() {
        let mut raw = CONNECT_V5.to_vec();
        raw[9] = 0x03; // reserved flag
        let mut d = Decoder::new(0);
        let mut b = BytesMut::from(&raw[..]);
        assert_eq!(d.decode(&mut b), Err(DecodeError::ConnectReservedFlag));
        assert_eq!(d.version(), Some(V5));
    }

    #[test]
    fn server_refuses_server_only_packets_from_a_client() {
        for raw in [
            &[0x20u8, 3, 0, 0, 0][..],
            &[0x90, 4, 0, 1, 0, 0],
            &[0xB0, 4, 0, 1, 0, 0],
            &[0xD0, 0],
        ] {
            let mut b = BytesMut::from(CONNECT_V5);
            b.extend_from_slice(raw);
            let mut d = Decoder::new(0);
            assert!(d.decode(&mut b).unwrap().is_some());
            assert!(d.reads_client());
            assert_eq!(
                d.decode(&mut b),
                Err(DecodeError::WrongDirection),
                "{raw:?}"
            );
        }
        // A client decoder takes them.
        assert!(client(V5, 0)
            .decode(&mut BytesMut::from(&[0xD0, 0][..]))
            .is_ok());
    }

    #[test]
    fn subscription_id_from_client_mqtt_3_3_4_6() {
        let publish = [0x30, 7, 0, 1, b'a', 2, 0x0B, 1, b'x'];
        let mut b = BytesMut::from(CONNECT_V5);
        b.extend_from_slice(&publish);
        let mut d = Decoder::new(0);
        d.decode(&mut b).unwrap();
        assert_eq!(d.decode(&mut b), Err(DecodeError::SubscriptionIdFromClient));
        // From a server it is how the subscriber learns which subscription matched.
        let mut b = BytesMut::from(&publish[..]);
        assert!(client(V5, 0).decode(&mut b).unwrap().is_some());
    }

    #[test]
    fn reserved_packet_type_0() {
        assert_eq!(dec(V4, &[0x00, 0]), Err(DecodeError::ReservedPacketType));
    }

    #[test]
    fn ping_with_body_is_malformed() {
        assert_eq!(dec(V4, &[0xC0, 1, 0]), Err(DecodeError::TrailingBytes));
        assert_eq!(
            dec(V4, &[0xD1, 0]),
            Err(DecodeError::InvalidFixedHeaderFlags)
        );
    }

    #[test]
    fn v31_allows_dup_on_qos1_control_packets() {
        let raw = [0x6A, 2, 0, 1];
        assert!(dec(ProtocolVersion::V3_1, &raw).is_ok());
        assert_eq!(dec(V4, &raw), Err(DecodeError::InvalidFixedHeaderFlags));
    }
}
