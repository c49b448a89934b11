//! Decodes arbitrary input whole and split in two (at a point chosen by the first byte), and
//! checks both give the same packets and the same error. Every decoded packet is re-encoded,
//! its declared length checked, and decoded again to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_codec::{DecodeError, Decoder, Packet, ProtocolVersion};

/// Decodes everything in `chunks`, fed one after the other, until an error or no progress.
fn run(version: Option<ProtocolVersion>, max: u32, chunks: &[&[u8]]) -> (Vec<Packet>, Option<DecodeError>) {
    let mut d = Decoder::new(max);
    if let Some(v) = version {
        d.set_version(v);
    }
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let version = match data[0] % 4 {
        0 => None,
        1 => Some(ProtocolVersion::V3_1),
        2 => Some(ProtocolVersion::V3_1_1),
        _ => Some(ProtocolVersion::V5),
    };
    let max = if data[0] & 0x80 != 0 { 64 } else { 0 };
    let input = &data[2..];
    let split = if input.is_empty() { 0 } else { data[1] as usize % (input.len() + 1) };
    let whole = run(version, max, &[input]);
    let parts = run(version, max, &[&input[..split], &input[split..]]);
    assert_eq!(whole, parts, "split at {split} differs");
    for p in &whole.0 {
        let v = match p {
            Packet::Connect(c) => c.protocol,
            _ => version.unwrap_or(ProtocolVersion::V5),
        };
        let mut enc = BytesMut::new();
        p.encode(v, &mut enc).expect("a decoded packet encodes");
        assert_eq!(enc.len(), p.encoded_len(v));
        let (again, err) = run(if matches!(p, Packet::Connect(_)) { None } else { Some(v) }, 0, &[&enc]);
        assert_eq!(err, None);
        assert_eq!(again.as_slice(), std::slice::from_ref(p));
    }
});
