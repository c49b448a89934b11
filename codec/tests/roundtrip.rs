//! Property-based round trips: for every packet in every version, `decode(encode(p)) == p` and
//! `encoded_len` equals the bytes written; streams of packets split at any point decode the
//! same as whole.

mod strategy;

use proptest::prelude::*;
use ringmq_codec::bytes::BytesMut;
use ringmq_codec::*;
use strategy::*;

/// Encodes `p`, checks the declared length, decodes with a decoder in `v`.
fn round_trip(v: ProtocolVersion, p: &Packet) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(out.len(), p.encoded_len(v));
    let mut d = Decoder::new(0);
    if !matches!(p, Packet::Connect(_)) {
        d.set_version(v);
    }
    let back = d.decode(&mut out);
    prop_assert_eq!(back, Ok(Some(p.clone())));
    prop_assert!(out.is_empty());
    Ok(())
}

fn decode_all(v: Option<ProtocolVersion>, chunks: &[&[u8]]) -> (Vec<Packet>, Option<DecodeError>) {
    let mut d = Decoder::new(0);
    if let Some(v) = v {
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

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn connect_round_trips(p in version().prop_flat_map(connect)) {
        let Packet::Connect(c) = &p else { unreachable!() };
        round_trip(c.protocol, &p)?;
    }

    #[test]
    fn connack_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), connack(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn publish_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), publish(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn pubresp_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), prop_oneof![
        pubresp(v, packet_type::PUBACK), pubresp(v, packet_type::PUBREC),
        pubresp(v, packet_type::PUBREL), pubresp(v, packet_type::PUBCOMP)]))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn subscribe_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), subscribe(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn suback_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), suback(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn unsubscribe_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), unsubscribe(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn unsuback_round_trips((v, p) in version().prop_flat_map(|v| (Just(v), unsuback(v)))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn disconnect_and_ping_round_trip((v, p) in version().prop_flat_map(|v| (Just(v), prop_oneof![
        disconnect(v).boxed(), Just(Packet::PingReq).boxed(), Just(Packet::PingResp).boxed()]))) {
        round_trip(v, &p)?;
    }

    #[test]
    fn auth_round_trips(p in auth()) {
        round_trip(ProtocolVersion::V5, &p)?;
    }

    /// What a server reads: a CONNECT followed by client packets, split at every point,
    /// decodes as the whole.
    #[test]
    fn client_stream_split_anywhere_decodes_the_same(
        (v, c, rest) in version().prop_flat_map(|v| (Just(v), connect(v), proptest::collection::vec(from_client(v), 0..4)))
    ) {
        let mut out = BytesMut::new();
        c.encode(v, &mut out).unwrap();
        for p in &rest {
            p.encode(v, &mut out).unwrap();
        }
        let whole = decode_all(None, &[&out]);
        prop_assert_eq!(whole.1, None);
        prop_assert_eq!(whole.0.len(), rest.len() + 1);
        for at in 0..=out.len() {
            let parts = decode_all(None, &[&out[..at], &out[at..]]);
            prop_assert_eq!(&parts, &whole, "split at {}", at);
        }
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// What a client reads: any packets but CONNECT, split at every point, decode as the whole.
    #[test]
    fn server_stream_split_anywhere_decodes_the_same(
        (v, ps) in version().prop_flat_map(|v| (Just(v), proptest::collection::vec(non_connect(v), 1..4)))
    ) {
        let mut out = BytesMut::new();
        for p in &ps {
            p.encode(v, &mut out).unwrap();
        }
        let whole = decode_all(Some(v), &[&out]);
        prop_assert_eq!(&whole, &(ps.clone(), None));
        for at in 0..=out.len() {
            let parts = decode_all(Some(v), &[&out[..at], &out[at..]]);
            prop_assert_eq!(&parts, &whole, "split at {}", at);
        }
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Arbitrary bytes (and mutated valid frames): split in two anywhere, same result as whole
    /// (same packets, same error); never a panic.
    #[test]
    fn arbitrary_input_split_anywhere(
        v in proptest::option::of(version()),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<prop::sample::Index>(),
    ) {
        let at = at.index(data.len() + 1);
        let whole = decode_all(v, &[&data]);
        let parts = decode_all(v, &[&data[..at], &data[at..]]);
        prop_assert_eq!(parts, whole);
    }

    #[test]
    fn mutated_frames_split_anywhere(
        (v, p) in version().prop_flat_map(|v| (Just(v), non_connect(v))),
        flip in any::<prop::sample::Index>(),
        bit in 0..8u8,
        at in any::<prop::sample::Index>(),
    ) {
        let mut out = BytesMut::new();
        p.encode(v, &mut out).unwrap();
        let i = flip.index(out.len());
        out[i] ^= 1 << bit;
        let at = at.index(out.len() + 1);
        let whole = decode_all(Some(v), &[&out]);
        let parts = decode_all(Some(v), &[&out[..at], &out[at..]]);
        prop_assert_eq!(parts, whole);
    }
}
