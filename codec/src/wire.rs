//! Wire primitives (v5 1.5): integers, variable byte integers, strings, binary data; a zero-copy
//! `Reader` over one frame's `Bytes` and the matching `put_*`/`*_len` writers.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::string::{validate_utf8, MqttString};
use crate::topic::{check_topic_name, is_plain_topic, TopicFilter, TopicName};
use crate::types::PacketId;

/// Largest value of a variable byte integer (v5 1.5.5).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Cursor over one frame body. Slices it hands out share the frame's buffer (no copy).
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// The next byte, not consumed.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            Some(self.buf[self.pos])
        } else {
            None
        }
    }

    /// Skips `n` bytes the caller knows are there.
    #[inline]
    pub fn skip(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        self.pos += n;
    }

    /// Bytes consumed so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == self.end
    }

    /// [v5 4.13.1] Bytes left over after the last field: Malformed Packet.
    #[inline]
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// A reader over the next `n` bytes; this one skips past them.
    #[inline]
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEof);
        }
        let r = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(r)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEof);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Packet identifier: non-zero [MQTT-2.2.1-3], [MQTT-2.3.1-1] (3.1.1).
    #[inline]
    pub fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::PacketIdZero)
    }

    /// Variable byte integer (v5 1.5.5).
    pub fn var_int(&mut self) -> Result<u32, DecodeError> {
        let rest = &self.buf[self.pos..self.end];
        match parse_var_int(rest) {
            VarInt::Value(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::UnexpectedEof),
            VarInt::Malformed => Err(DecodeError::MalformedVariableInteger),
        }
    }

    /// Slice of the next `n` bytes, sharing the frame buffer.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEof);
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Everything left, sharing the frame buffer.
    #[inline]
    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..self.end);
        self.pos = self.end;
        b
    }

    /// Binary Data (v5 1.5.6): 2-byte length then bytes.
    #[inline]
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// UTF-8 Encoded String (v5 1.5.4).
    #[inline]
    pub fn string(&mut self) -> Result<MqttString, DecodeError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        validate_utf8(raw)?;
        let start = self.pos - n;
        Ok(MqttString::from_validated(self.buf.slice(start..self.pos)))
    }

    /// A topic name (v5 4.7, [MQTT-3.3.2-1], [MQTT-3.3.2-2]); empty allowed (alias case is
    /// checked by the caller).
    #[inline]
    pub fn topic_name_or_empty(&mut self) -> Result<TopicName, DecodeError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        // One pass for the usual case: printable ASCII without U+0000 or wildcards (checked
        // together: [MQTT-1.5.4-2], [MQTT-3.3.2-2]). Anything else takes the full checks.
        if !is_plain_topic(raw) {
            validate_utf8(raw)?;
            if !raw.is_empty() {
                check_topic_name(raw)?;
            }
        }
        let start = self.pos - n;
        Ok(TopicName::from_checked(MqttString::from_validated(
            self.buf.slice(start..self.pos),
        )))
    }

    /// A non-empty topic name.
    pub fn topic_name(&mut self) -> Result<TopicName, DecodeError> {
        TopicName::try_from(self.string()?)
    }

    /// A topic filter [MQTT-3.8.3-1].
    pub fn topic_filter(&mut self) -> Result<TopicFilter, DecodeError> {
        TopicFilter::try_from(self.string()?)
    }
}

/// Result of parsing a variable byte integer from a prefix of a buffer.
pub(crate) enum VarInt {
    /// value, bytes used
    Value(u32, usize),
    Incomplete,
    Malformed,
}

/// Parses a variable byte integer: at most 4 bytes, minimally encoded [MQTT-1.5.5-1].
#[inline]
pub(crate) fn parse_var_int(b: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return VarInt::Incomplete;
        };
        value |= ((byte & 0x7F) as u32) << (7 * i);
        if byte & 0x80 == 0 {
            // [MQTT-1.5.5-1] minimum number of bytes: a trailing 0x00 after a continuation
            // byte means a shorter encoding existed.
            if i > 0 && byte == 0 {
                return VarInt::Malformed;
            }
            return VarInt::Value(value, i + 1);
        }
    }
    // A fifth byte would be needed: more than 4 bytes is malformed (v5 1.5.5).
    VarInt::Malformed
}

/// Encoded size of a variable byte integer.
#[inline]
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[inline]
pub(crate) fn put_var_int(out: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= MAX_VAR_INT as usize);
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Writes a fixed header; the remaining length must fit (checked by the caller).
#[inline]
pub(crate) fn put_fixed_header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.put_u8(first);
    put_var_int(out, remaining);
}

/// Size of a whole frame with `remaining` body bytes.
#[inline]
pub(crate) fn frame_len(remaining: usize) -> usize {
    1 + var_int_len(remaining) + remaining
}

/// Checks a body fits in a remaining length.
#[inline]
pub(crate) fn check_remaining(remaining: usize) -> Result<(), EncodeError> {
    if remaining > MAX_VAR_INT as usize {
        Err(EncodeError::PacketTooLarge)
    } else {
        Ok(())
    }
}

/// Checks a binary field fits its 2-byte length.
#[inline]
pub(crate) fn check_binary(b: &[u8]) -> Result<(), EncodeError> {
    if b.len() > u16::MAX as usize {
        Err(EncodeError::FieldTooLong)
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// Size of a string or binary field with its length prefix.
#[inline]
pub(crate) fn binary_len(b: &[u8]) -> usize {
    2 + b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_spec_boundaries_1_5_5() {
        let cases: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (v, enc) in cases {
            let mut out = BytesMut::new();
            put_var_int(&mut out, v as usize);
            assert_eq!(&out[..], enc);
            assert_eq!(var_int_len(v as usize), enc.len());
            assert!(matches!(parse_var_int(enc), VarInt::Value(x, n) if x == v && n == enc.len()));
        }
    }

    #[test]
    fn var_int_rejects_five_bytes_and_overlong() {
        assert!(matches!(
            parse_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            VarInt::Malformed
        ));
        assert!(matches!(parse_var_int(&[0x80, 0x00]), VarInt::Malformed));
        assert!(matches!(parse_var_int(&[0x80, 0x80]), VarInt::Incomplete));
    }
}
