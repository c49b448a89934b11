//! `Decoder`: incremental framing over a `BytesMut` read buffer. Checks the fixed header (type,
//! flags, remaining length, size limit) as soon as it is in, splits off one whole frame without
//! copying and hands its body to the packet's decoder.

use bytes::{Buf, BytesMut};

use crate::connect::peek_version;
use crate::error::DecodeError;
use crate::packet::{check_first_byte, packet_type, Packet};
use crate::types::ProtocolVersion;
use crate::wire::{parse_var_int, VarInt};

/// Framing state of one connection: its protocol version (None until CONNECT) and the largest
/// packet it accepts.
#[derive(Clone, Debug)]
pub struct Decoder {
    max_packet_size: u32,
    version: Option<ProtocolVersion>,
}

impl Decoder {
    /// `max_packet_size` bounds the whole frame (fixed header included, v5 3.1.2.11.4);
    /// 0 means no limit beyond the protocol's 268,435,460 bytes.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            max_packet_size,
            version: None,
        }
    }

    /// Sets the version (a client does this before reading CONNACK).
    pub fn set_version(&mut self, v: ProtocolVersion) {
        self.version = Some(v);
    }

    pub fn set_max_packet_size(&mut self, n: u32) {
        self.max_packet_size = n;
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
    /// it). `Ok(None)`: need more bytes (`buf` untouched, capacity reserved for the frame). The
    /// size limit is checked from the fixed header, before the body arrives. After an error the
    /// connection must be closed (the buffer position is unspecified).
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
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(1 + len_bytes);
        let body = buf.split_to(remaining).freeze();
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = peek_version(&body)?;
                self.version = Some(v);
                v
            }
        };
        Packet::decode_body(first, &body, version).map(Some)
    }
}
