use super::*;
use proptest::prelude::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: masked with `mask`, length in its minimal form.
fn client(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | op];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Feeds `wire` in one piece: (status, MQTT bytes, replies).
fn feed(f: &mut WsFramer, wire: &[u8]) -> (Result<WsStatus, WsError>, Vec<u8>, Vec<u8>) {
    let (mut out, mut reply) = (BytesMut::new(), BytesMut::new());
    let r = f.decode(wire, &mut out, &mut reply);
    (r, out.to_vec(), reply.to_vec())
}

fn framer() -> WsFramer {
    WsFramer::new(1 << 20)
}

#[test]
fn rfc6455_5_7_masked_text_is_refused_1003() {
    // RFC 6455 5.7: a single-frame masked text message "Hello".
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (r, out, _) = feed(&mut framer(), &wire);
    // [MQTT-6.0.0-1] only binary frames carry MQTT.
    assert_eq!(r, Err(WsError::TextFrame));
    assert_eq!(WsError::TextFrame.close_code(), 1003);
    assert!(out.is_empty());
    // Refused on its first two bytes.
    assert_eq!(feed(&mut framer(), &wire[..2]).0, Err(WsError::TextFrame));
}

#[test]
fn rfc6455_5_7_unmasked_frames_are_refused_1002() {
    // RFC 6455 5.7: unmasked "Hello" as text and as a ping; a client must mask (5.1).
    let text = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(feed(&mut framer(), &text).0, Err(WsError::TextFrame));
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(feed(&mut framer(), &ping).0, Err(WsError::Unmasked));
    let binary = [0x82, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(feed(&mut framer(), &binary).0, Err(WsError::Unmasked));
    assert_eq!(WsError::Unmasked.close_code(), 1002);
}

#[test]
fn rfc6455_5_7_masked_binary_hello() {
    // The 5.7 masked example with the binary opcode.
    let wire = [
        0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (r, out, reply) = feed(&mut framer(), &wire);
    assert_eq!(r, Ok(WsStatus::Open));
    assert_eq!(out, b"Hello");
    assert!(reply.is_empty());
}

#[test]
fn rfc6455_5_7_ping_and_pong() {
    // Masked ping "Hello" is answered by the unmasked pong of 5.7.
    let (r, out, reply) = feed(&mut framer(), &client(true, 0x9, b"Hello", MASK));
    assert_eq!(r, Ok(WsStatus::Open));
    assert!(out.is_empty());
    assert_eq!(reply, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    // 5.7's masked pong "Hello": ignored.
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        feed(&mut framer(), &pong),
        (Ok(WsStatus::Open), vec![], vec![])
    );
    // An empty ping gets an empty pong.
    assert_eq!(
        feed(&mut framer(), &client(true, 0x9, b"", MASK)).2,
        [0x8a, 0x00]
    );
}

#[test]
fn rfc6455_5_7_fragments_with_a_ping_between() {
    // 5.7's fragmented "Hel" + "lo", binary and masked, with a ping inside (5.4).
    let mut wire = client(false, 0x2, b"Hel", MASK);
    wire.extend(client(true, 0x9, b"p", [9, 8, 7, 6]));
    wire.extend(client(true, 0x0, b"lo", [1, 2, 3, 4]));
    let (r, out, reply) = feed(&mut framer(), &wire);
    assert_eq!(r, Ok(WsStatus::Open));
    assert_eq!(out, b"Hello");
    assert_eq!(reply, [0x8a, 0x01, b'p']);
}

#[test]
fn rfc6455_5_7_extended_lengths() {
    // 256 bytes (16-bit length) and 64 KiB (64-bit length), masked.
    for len in [126usize, 256, 65535, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let wire = client(true, 0x2, &payload, MASK);
        let (r, out, _) = feed(&mut framer(), &wire);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(out, payload, "{len}");
    }
}

#[test]
fn server_frames_are_unmasked_minimal() {
    let mut out = BytesMut::new();
    encode_binary(b"Hello", &mut out);
    assert_eq!(&out[..], [0x82, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    let mut out = BytesMut::new();
    encode_binary(&[0; 256], &mut out);
    assert_eq!(&out[..4], [0x82, 0x7E, 0x01, 0x00]); // 5.7: 256 bytes
    assert_eq!(out.len(), 4 + 256);
    let mut out = BytesMut::new();
    encode_binary(&[0; 65536], &mut out);
    assert_eq!(&out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]); // 5.7: 64 KiB
    let mut out = BytesMut::new();
    encode_close(1002, &mut out);
    assert_eq!(&out[..], [0x88, 0x02, 0x03, 0xEA]);
}

#[test]
fn close_is_echoed_and_ends_input() {
    let mut f = framer();
    let mut wire = client(true, 0x8, &[0x03, 0xE8, b'b', b'y', b'e'], MASK);
    wire.extend(client(true, 0x2, b"late", MASK));
    let (r, out, reply) = feed(&mut f, &wire);
    assert_eq!(r, Ok(WsStatus::Closed(1000)));
    assert!(out.is_empty(), "nothing after Close is read");
    assert_eq!(reply, [0x88, 0x02, 0x03, 0xE8]);
    assert!(f.closed());
    assert_eq!(
        feed(&mut f, b"more"),
        (Ok(WsStatus::Closed(1000)), vec![], vec![])
    );
    // An empty Close gets an empty Close.
    let (r, _, reply) = feed(&mut framer(), &client(true, 0x8, &[], MASK));
    assert_eq!(r, Ok(WsStatus::Closed(1005)));
    assert_eq!(reply, [0x88, 0x00]);
    // 4000 (application range) is echoed.
    let (r, _, reply) = feed(&mut framer(), &client(true, 0x8, &[0x0F, 0xA0], MASK));
    assert_eq!(r, Ok(WsStatus::Closed(4000)));
    assert_eq!(reply, [0x88, 0x02, 0x0F, 0xA0]);
}

#[test]
fn must_fail() {
    let m = 0x80; // mask bit
    let cases: Vec<(&str, Vec<u8>, WsError)> = vec![
        ("rsv1", vec![0xC2, m, 0, 0, 0, 0], WsError::ReservedBits),
        ("rsv3", vec![0x92, m, 0, 0, 0, 0], WsError::ReservedBits),
        (
            "opcode 3",
            vec![0x83, m, 0, 0, 0, 0],
            WsError::ReservedOpcode,
        ),
        (
            "opcode 0xB",
            vec![0x8B, m, 0, 0, 0, 0],
            WsError::ReservedOpcode,
        ),
        (
            "ping 126",
            vec![0x89, m | 126, 0, 126],
            WsError::ControlTooLong,
        ),
        ("close 127", vec![0x88, m | 127], WsError::ControlTooLong),
        (
            "ping no fin",
            vec![0x09, m, 0, 0, 0, 0],
            WsError::ControlFragmented,
        ),
        (
            "lone continuation",
            client(true, 0x0, b"x", MASK),
            WsError::UnexpectedContinuation,
        ),
        (
            "binary inside a message",
            [
                client(false, 0x2, b"a", MASK),
                client(true, 0x2, b"b", MASK),
            ]
            .concat(),
            WsError::ExpectedContinuation,
        ),
        (
            "text inside a message",
            [
                client(false, 0x2, b"a", MASK),
                client(true, 0x1, b"b", MASK),
            ]
            .concat(),
            WsError::TextFrame,
        ),
        (
            "16-bit length 125",
            vec![0x82, m | 126, 0, 125, 0, 0, 0, 0],
            WsError::BadLength,
        ),
        (
            "64-bit length 65535",
            vec![0x82, m | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0],
            WsError::BadLength,
        ),
        (
            "64-bit length top bit",
            vec![0x82, m | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            WsError::BadLength,
        ),
        (
            "close 1 byte",
            client(true, 0x8, &[3], MASK),
            WsError::BadClose,
        ),
        (
            "close 999",
            client(true, 0x8, &[0x03, 0xE7], MASK),
            WsError::BadClose,
        ),
        (
            "close 1005",
            client(true, 0x8, &[0x03, 0xED], MASK),
            WsError::BadClose,
        ),
        (
            "close 1006",
            client(true, 0x8, &[0x03, 0xEE], MASK),
            WsError::BadClose,
        ),
        (
            "close 2000",
            client(true, 0x8, &[0x07, 0xD0], MASK),
            WsError::BadClose,
        ),
        (
            "close 5000",
            client(true, 0x8, &[0x13, 0x88], MASK),
            WsError::BadClose,
        ),
        (
            "close reason not utf-8",
            client(true, 0x8, &[0x03, 0xE8, 0xC3, 0x28], MASK),
            WsError::BadCloseReason,
        ),
    ];
    for (name, wire, want) in cases {
        let (r, _, reply) = feed(&mut framer(), &wire);
        assert_eq!(r, Err(want), "{name}");
        assert!(reply.is_empty(), "{name}: the caller answers errors");
    }
    assert_eq!(WsError::BadCloseReason.close_code(), 1007);
    assert_eq!(WsError::ReservedBits.close_code(), 1002);
}

#[test]
fn oversized_frame_is_refused_on_its_header() {
    // A header announcing 1 GiB against a 1 MiB bound: refused with 14 bytes read.
    let mut hdr = vec![0x82, 0x80 | 127];
    hdr.extend_from_slice(&(1u64 << 30).to_be_bytes());
    hdr.extend_from_slice(&MASK);
    let (mut out, mut reply) = (BytesMut::new(), BytesMut::new());
    let r = framer().decode(&hdr, &mut out, &mut reply);
    assert_eq!(r, Err(WsError::TooBig));
    assert_eq!(WsError::TooBig.close_code(), 1009);
    assert_eq!(out.capacity(), 0, "nothing was buffered");
    // A continuation is bounded the same way; the bound itself is fine.
    let mut f = WsFramer::new(300);
    let ok = [
        client(false, 0x2, &[1; 300], MASK),
        client(true, 0x0, &[2; 300], MASK),
    ]
    .concat();
    assert_eq!(feed(&mut f, &ok).0, Ok(WsStatus::Open));
    let bad = [
        client(false, 0x2, &[1; 10], MASK),
        client(true, 0x0, &[2; 301], MASK),
    ]
    .concat();
    assert_eq!(feed(&mut WsFramer::new(300), &bad).0, Err(WsError::TooBig));
}

#[test]
fn idle_framer_is_small() {
    assert!(
        std::mem::size_of::<WsFramer>() <= 72,
        "{}",
        std::mem::size_of::<WsFramer>()
    );
}

/// A client's input: MQTT bytes cut into frames, with pings between.
fn scenario() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<usize>)> {
    (
        proptest::collection::vec(any::<u8>(), 0..3000),
        proptest::collection::vec((1usize..400, any::<bool>(), any::<[u8; 4]>()), 1..20),
        proptest::collection::vec(1usize..200, 1..30),
    )
        .prop_map(|(mqtt, cuts, splits)| {
            let mut wire = Vec::new();
            let mut pongs = Vec::new();
            let mut rest = &mqtt[..];
            let mut i = 0;
            while !rest.is_empty() || i == 0 {
                let (size, fragment, mask) = cuts[i % cuts.len()];
                let n = size.min(rest.len());
                // Messages of two fragments when asked, else one frame each.
                let f = if fragment && n > 1 {
                    let h = n / 2;
                    [
                        client(false, 0x2, &rest[..h], mask),
                        client(true, 0x0, &rest[h..n], mask),
                    ]
                    .concat()
                } else {
                    client(true, 0x2, &rest[..n], mask)
                };
                wire.extend(f);
                if fragment {
                    let p = [i as u8, 0xAA];
                    wire.extend(client(true, 0x9, &p, mask));
                    pongs.extend([0x8a, 0x02, p[0], p[1]]);
                }
                rest = &rest[n..];
                i += 1;
            }
            (mqtt, wire, pongs, splits)
        })
}

proptest! {
    /// Split anywhere: the MQTT bytes and the replies do not depend on where reads end.
    #[test]
    fn split_anywhere_gives_the_same_stream((mqtt, wire, pongs, splits) in scenario()) {
        let mut f = framer();
        let (mut out, mut reply) = (BytesMut::new(), BytesMut::new());
        let mut at = 0;
        for s in splits.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + s).min(wire.len());
            prop_assert_eq!(f.decode(&wire[at..end], &mut out, &mut reply), Ok(WsStatus::Open));
            at = end;
        }
        prop_assert_eq!(&out[..], &mqtt[..]);
        prop_assert_eq!(&reply[..], &pongs[..]);
    }

    /// Any bytes at all: never a panic, and every error has a close code.
    #[test]
    fn garbage_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
        let mut f = WsFramer::new(1000);
        let (mut out, mut reply) = (BytesMut::new(), BytesMut::new());
        let cut = cut.min(wire.len());
        for part in [&wire[..cut], &wire[cut..]] {
            match f.decode(part, &mut out, &mut reply) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(matches!(e.close_code(), 1002 | 1003 | 1007 | 1009));
                    break;
                }
            }
        }
    }
}
