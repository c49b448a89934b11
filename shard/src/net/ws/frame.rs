//! Data framing, server side (RFC 6455 5): the state of one connection.
//!
//! Frames are streamed, not buffered: a data frame's payload is unmasked
//! straight into the MQTT byte stream as it arrives, so a packet may span
//! frames and a frame may hold several packets [MQTT-6.0.0-2] with no work
//! of ours; the MQTT decoder above sees one byte stream. Only a partial
//! header (at most 14 bytes, inline) and a control frame's payload (at most
//! 125 bytes, allocated while one is arriving) are kept between reads.

use super::WsError;
use bytes::{BufMut, BytesMut};

/// The largest frame header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// The largest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;

/// What the connection does after a [`WsFramer::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsStatus {
    /// Go on reading.
    Open,
    /// The client sent Close (with this code, 1005 if none): our echo is in
    /// the reply; flush it and close the socket (RFC 6455 5.5.1, 7.1.1).
    /// Input after the Close frame is ignored.
    Closed(u16),
}

/// Which bytes the framer is taking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// A frame header (`hdr[..hdr_len]` so far).
    Header,
    /// A data frame's payload: out to the MQTT stream.
    Data,
    /// A control frame's payload (opcode): into `control`.
    Control(u8),
    /// After the client's Close: nothing more is read.
    Closed,
}

/// The framing state of one WebSocket connection (about 64 bytes idle).
#[derive(Debug)]
pub struct WsFramer {
    max_frame: u64,
    /// Payload bytes left in the current frame.
    left: u64,
    hdr: [u8; MAX_HEADER],
    hdr_len: u8,
    part: Part,
    mask: [u8; 4],
    /// Payload bytes of the current frame unmasked so far, mod 4.
    mask_pos: u8,
    /// A fragmented binary message is open (continuations expected).
    in_message: bool,
    /// The payload of the control frame arriving (empty, unallocated, between them).
    control: Vec<u8>,
}

impl WsFramer {
    /// A framer refusing frames with more than `max_frame` bytes of payload.
    pub fn new(max_frame: u64) -> Self {
        WsFramer {
            max_frame,
            left: 0,
            hdr: [0; MAX_HEADER],
            hdr_len: 0,
            part: Part::Header,
            mask: [0; 4],
            mask_pos: 0,
            in_message: false,
            control: Vec::new(),
        }
    }

    /// Takes all of `wire` (bytes read from the client): the payload of its
    /// binary frames is appended to `mqtt_out`, answers (pong, close echo)
    /// to `reply`. An error is answered by [`encode_close`] with
    /// [`WsError::close_code`], then the connection closes.
    pub fn decode(
        &mut self,
        mut wire: &[u8],
        mqtt_out: &mut BytesMut,
        reply: &mut BytesMut,
    ) -> Result<WsStatus, WsError> {
        while !wire.is_empty() {
            match self.part {
                Part::Closed => break,
                Part::Header => {
                    let want = self.header_len()?;
                    let have = self.hdr_len as usize;
                    let take = (want - have).min(wire.len());
                    self.hdr[have..have + take].copy_from_slice(&wire[..take]);
                    self.hdr_len += take as u8;
                    wire = &wire[take..];
                    // A length field completes the header length once read.
                    if self.hdr_len as usize == self.header_len()? {
                        self.start_frame(reply)?;
                    }
                }
                Part::Data => {
                    let n = (self.left.min(wire.len() as u64)) as usize;
                    self.unmask_into(&wire[..n], mqtt_out);
                    wire = &wire[n..];
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.part = Part::Header;
                    }
                }
                Part::Control(op) => {
                    let n = (self.left.min(wire.len() as u64)) as usize;
                    let start = self.control.len();
                    self.control.extend_from_slice(&wire[..n]);
                    unmask(&mut self.control[start..], self.mask, self.mask_pos);
                    self.mask_pos = ((self.mask_pos as usize + n) % 4) as u8;
                    wire = &wire[n..];
                    self.left -= n as u64;
                    if self.left == 0 {
                        self.end_control(op, reply)?;
                    }
                }
            }
        }
        Ok(match self.part {
            Part::Closed => WsStatus::Closed(self.close_code()),
            _ => WsStatus::Open,
        })
    }

    /// Whether the client's Close has been received.
    pub fn closed(&self) -> bool {
        self.part == Part::Closed
    }

    /// The code of the client's Close (kept in `hdr` once closed).
    fn close_code(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    /// The full length of the header being read, as far as known, checking
    /// the first two bytes as soon as they are in: a bad frame is refused
    /// before its payload, or the rest of its header, is read.
    fn header_len(&self) -> Result<usize, WsError> {
        if self.hdr_len < 2 {
            return Ok(2);
        }
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        // RFC 6455 5.2: no extension was negotiated, so RSV1-3 are 0.
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let op = b0 & 0x0F;
        let len7 = b1 & 0x7F;
        match op {
            OP_CONTINUATION | OP_BINARY => {}
            // [MQTT-6.0.0-1] MQTT is sent in binary frames; any other data frame closes.
            OP_TEXT => return Err(WsError::TextFrame),
            OP_CLOSE | OP_PING | OP_PONG => {
                // RFC 6455 5.5: control frames are not fragmented, 125 bytes at most.
                if b0 & 0x80 == 0 {
                    return Err(WsError::ControlFragmented);
                }
                if len7 > MAX_CONTROL as u8 {
                    return Err(WsError::ControlTooLong);
                }
            }
            _ => return Err(WsError::ReservedOpcode),
        }
        // RFC 6455 5.1: a client masks every frame it sends.
        if b1 & 0x80 == 0 {
            return Err(WsError::Unmasked);
        }
        Ok(match len7 {
            126 => 2 + 2 + 4,
            127 => 2 + 8 + 4,
            _ => 2 + 4,
        })
    }

    /// A complete header: checks length and fragmentation, then takes the payload.
    fn start_frame(&mut self, reply: &mut BytesMut) -> Result<(), WsError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        let fin = b0 & 0x80 != 0;
        let op = b0 & 0x0F;
        let h = &self.hdr;
        // RFC 6455 5.2: the minimal length encoding, the 64-bit one with its top bit 0.
        let (len, mask_at) = match b1 & 0x7F {
            126 => {
                let l = u16::from_be_bytes([h[2], h[3]]) as u64;
                if l < 126 {
                    return Err(WsError::BadLength);
                }
                (l, 4)
            }
            127 => {
                let l = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if l >> 63 != 0 || l <= u16::MAX as u64 {
                    return Err(WsError::BadLength);
                }
                (l, 10)
            }
            l => (l as u64, 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.mask_pos = 0;
        self.hdr_len = 0;
        self.left = len;
        match op {
            OP_BINARY | OP_CONTINUATION => {
                // RFC 6455 5.4: continuations follow a non-final data frame, and only them.
                if op == OP_BINARY && self.in_message {
                    return Err(WsError::ExpectedContinuation);
                }
                if op == OP_CONTINUATION && !self.in_message {
                    return Err(WsError::UnexpectedContinuation);
                }
                // Refused on the header, before any payload is buffered.
                if len > self.max_frame {
                    return Err(WsError::TooBig);
                }
                self.in_message = !fin;
                self.part = if len == 0 { Part::Header } else { Part::Data };
            }
            _ => {
                self.control = Vec::with_capacity(len as usize);
                self.part = Part::Control(op);
                if len == 0 {
                    self.end_control(op, reply)?;
                }
            }
        }
        Ok(())
    }

    /// A complete control frame (RFC 6455 5.5).
    fn end_control(&mut self, op: u8, reply: &mut BytesMut) -> Result<(), WsError> {
        let payload = std::mem::take(&mut self.control);
        self.part = Part::Header;
        match op {
            // RFC 6455 5.5.2: a Ping is answered by a Pong with its payload.
            OP_PING => frame(OP_PONG, &payload, reply),
            // RFC 6455 5.5.3: an unsolicited Pong needs no answer.
            OP_PONG => {}
            _ => {
                // RFC 6455 5.5.1: a body is a 2-byte code, then UTF-8.
                let code = match payload.len() {
                    0 => 1005, // "no status code was present" (7.4.1), never sent
                    1 => return Err(WsError::BadClose),
                    _ => u16::from_be_bytes([payload[0], payload[1]]),
                };
                if payload.len() >= 2 && !valid_close_code(code) {
                    return Err(WsError::BadClose);
                }
                if std::str::from_utf8(payload.get(2..).unwrap_or(&[])).is_err() {
                    return Err(WsError::BadCloseReason);
                }
                // Echo the code (or send an empty Close when there was none), then end.
                if payload.is_empty() {
                    frame(OP_CLOSE, &[], reply);
                } else {
                    encode_close(code, reply);
                }
                self.hdr[..2].copy_from_slice(&code.to_be_bytes());
                self.part = Part::Closed;
            }
        }
        Ok(())
    }

    fn unmask_into(&mut self, src: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(src);
        unmask(&mut out[start..], self.mask, self.mask_pos);
        self.mask_pos = ((self.mask_pos as usize + src.len()) % 4) as u8;
    }
}

/// Codes a Close frame may carry (RFC 6455 7.4.1, 7.4.2; 1012-1014 registered
/// with IANA since): not 1004-1006, 1015, or below 1000; 3000-4999 free.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `data` with the masking key, starting at key byte `pos` (RFC 6455 5.3),
/// eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4], pos: u8) {
    let p = pos as usize;
    let key = [
        mask[p % 4],
        mask[(p + 1) % 4],
        mask[(p + 2) % 4],
        mask[(p + 3) % 4],
    ];
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (chunks, rest) = data.as_chunks_mut::<8>();
    for c in chunks {
        *c = (u64::from_ne_bytes(*c) ^ k8).to_ne_bytes();
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Appends an unmasked server frame (RFC 6455 5.1: servers do not mask).
fn frame(op: u8, payload: &[u8], out: &mut BytesMut) {
    let len = payload.len();
    out.reserve(10 + len);
    out.put_u8(0x80 | op);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.extend_from_slice(payload);
}

/// Appends one binary frame holding `payload` (what one flush sends).
pub fn encode_binary(payload: &[u8], out: &mut BytesMut) {
    frame(OP_BINARY, payload, out);
}

/// Appends a Close frame with `code` and no reason (RFC 6455 5.5.1).
pub fn encode_close(code: u16, out: &mut BytesMut) {
    frame(OP_CLOSE, &code.to_be_bytes(), out);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
