//! Byte-level primitives of the record format: LEB128 varints, length-prefixed
//! byte strings, big-endian fixed integers. No allocation on read: byte
//! strings come back as slices of the record's `Bytes` (one copy out of the
//! LMDB map per record, none after).

use bytes::Bytes;

/// Decoding failed: the record is shorter than its fields say, or a field
/// holds a value no writer produces. Mapped to `StoreError::Corrupt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRecord(pub &'static str);

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad record: {}", self.0)
    }
}

/// Appends fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// LEB128, 1 byte below 128.
    pub fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// Varint length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    /// Raw bytes, no length (last field of a key).
    pub fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

/// Reads fields back from one record.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], BadRecord> {
        let end = self.pos.checked_add(n).ok_or(BadRecord(what))?;
        let s = self.buf.get(self.pos..end).ok_or(BadRecord(what))?;
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, BadRecord> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, BadRecord> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, BadRecord> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    pub fn var(&mut self, what: &'static str) -> Result<u64, BadRecord> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BadRecord(what))
    }
    pub fn var_u32(&mut self, what: &'static str) -> Result<u32, BadRecord> {
        u32::try_from(self.var(what)?).map_err(|_| BadRecord(what))
    }
    /// A length-prefixed byte string, as a slice of the record (no copy).
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, BadRecord> {
        let n = usize::try_from(self.var(what)?).map_err(|_| BadRecord(what))?;
        let start = self.pos;
        self.take(n, what)?;
        Ok(self.buf.slice(start..start + n))
    }
    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    /// The record must be fully consumed: trailing bytes mean a format we do not know.
    pub fn finish(&self, what: &'static str) -> Result<(), BadRecord> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(BadRecord(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_fields() {
        let mut v = Vec::new();
        let mut w = Writer(&mut v);
        w.u8(7);
        w.u16(0xBEEF);
        w.u64(u64::MAX - 1);
        for x in [0u64, 127, 128, 16_383, 16_384, u64::MAX] {
            w.var(x);
        }
        w.bytes(b"topic/a");
        let mut r = Reader::new(Bytes::from(v));
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 0xBEEF);
        assert_eq!(r.u64("c").unwrap(), u64::MAX - 1);
        for x in [0u64, 127, 128, 16_383, 16_384, u64::MAX] {
            assert_eq!(r.var("d").unwrap(), x);
        }
        assert_eq!(&r.bytes("e").unwrap()[..], b"topic/a");
        r.finish("end").unwrap();
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let mut v = Vec::new();
        Writer(&mut v).bytes(b"0123456789");
        for cut in 0..v.len() {
            let mut r = Reader::new(Bytes::copy_from_slice(&v[..cut]));
            assert!(r.bytes("x").is_err(), "cut at {cut}");
        }
        let mut r = Reader::new(Bytes::from_static(&[0xFF; 11]));
        assert!(r.var("overlong").is_err());
    }
}
