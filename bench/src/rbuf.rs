//! The receive buffer of one connection: the socket reads straight into it (no bounce
//! buffer), frames are parsed in place, and consumed bytes are only an index move.
//!
//! `[start, end)` holds bytes read and not yet consumed. Before a read the buffer is
//! reset when empty, or the unconsumed tail (at most one partial frame, in practice)
//! is moved to the front when less than [`MIN_READ`] bytes of room are left. A frame
//! larger than the buffer grows it (up to the connection's largest packet).

/// Bytes the buffer starts with (allocated on the first read, so idle connections of a
/// connection storm hold none).
pub const CHUNK: usize = 64 * 1024;
/// Least room offered to one read; below it the tail is compacted to the front.
const MIN_READ: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// Bytes read and not yet consumed.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops `n` consumed bytes from the front.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, after making some (`need`: the size of the frame being
    /// waited for, if known, so one larger than the buffer can still complete).
    pub fn spare(&mut self, need: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK.max(need)];
        }
        if self.buf.len() - self.end < MIN_READ || self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() || self.buf.len() - self.end < MIN_READ.min(self.buf.len() / 4) {
            let grow = need.max(self.buf.len() * 2);
            self.buf.resize(grow, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`ReadBuf::spare`] as filled.
    #[inline]
    pub fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.buf.len());
    }

    /// Appends bytes (from a transport that decodes into this buffer: TLS, WebSocket).
    pub fn extend(&mut self, bytes: &[u8]) {
        let room = self.spare(self.len() + bytes.len());
        if room.len() < bytes.len() {
            let need = self.end + bytes.len();
            self.buf.resize(need, 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }
}

/// A remaining length longer than 4 bytes ([MQTT-1.5.5-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedLength;

/// The total length of the MQTT frame at the front of `b` (fixed header included), if
/// its remaining length is complete.
#[inline]
pub fn frame_len(b: &[u8]) -> Result<Option<usize>, MalformedLength> {
    let (mut rl, mut shift) = (0usize, 0u32);
    for i in 1..5 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        rl |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(Some(1 + i + rl));
        }
        shift += 7;
    }
    Err(MalformedLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumes_compacts_and_grows() {
        let mut r = ReadBuf::default();
        let room = r.spare(0);
        assert_eq!(room.len(), CHUNK);
        room[..4].copy_from_slice(b"abcd");
        r.filled(4);
        r.consume(3);
        assert_eq!(r.data(), b"d");
        // Fill to near the end: the tail moves to the front.
        let n = r.spare(0).len();
        r.filled(n - 100);
        r.consume(r.len() - 10);
        let room = r.spare(0).len();
        assert!(room >= CHUNK - 10, "{room}");
        assert_eq!(r.len(), 10);
        // A frame bigger than the buffer grows it.
        let room = r.spare(3 * CHUNK).len();
        assert!(room >= 3 * CHUNK - 10, "{room}");
        r.consume(10);
        assert!(r.is_empty());
        r.extend(&[7u8; 100]);
        assert_eq!(r.data(), &[7u8; 100][..]);
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(frame_len(&[0x30]), Ok(None));
        assert_eq!(frame_len(&[0x30, 0x05]), Ok(Some(7)));
        assert_eq!(frame_len(&[0x30, 0x80, 0x01]), Ok(Some(3 + 128)));
        assert_eq!(
            frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(MalformedLength)
        );
    }
}
