//! Helpers for the per-packet unit tests (compiled only under `cfg(test)`).

use bytes::BytesMut;

use crate::{DecodeError, Decoder, Packet, ProtocolVersion};

/// Decodes one whole frame with a decoder in `v` (no version for a CONNECT); the frame must
/// use every byte.
pub(crate) fn dec(v: ProtocolVersion, raw: &[u8]) -> Result<Packet, DecodeError> {
    let mut d = Decoder::new(0);
    if raw.first().map(|b| b >> 4) != Some(1) {
        d.set_version(v);
    }
    let mut b = BytesMut::from(raw);
    let p = d.decode(&mut b)?.expect("whole frame");
    assert!(b.is_empty(), "frame left {} bytes", b.len());
    Ok(p)
}

/// Encodes and checks `encoded_len` matches.
pub(crate) fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("encode");
    assert_eq!(out.len(), p.encoded_len(v), "encoded_len of {p:?}");
    out.to_vec()
}

/// Decodes, checks equality with `expected`, re-encodes and checks the bytes are the same.
pub(crate) fn both_ways(v: ProtocolVersion, raw: &[u8], expected: &Packet) {
    assert_eq!(&dec(v, raw).expect("decode"), expected);
    assert_eq!(enc(expected, v), raw);
}
