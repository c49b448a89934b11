//! MQTT over WebSocket (`ws://`) with our own raw client: the RFC 6455
//! upgrade's refusals, bad frames, and MQTT's rules for WebSocket (MQTT 5.0
//! and 3.1.1 section 6). Each bad connection is closed with its HTTP status
//! or Close code and a typed, counted reason, and a good WebSocket client
//! connected beforehand is served all along.
#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{connect_packet, publish_packet, subscribe_packet, version};
use common::ws::{binary, frame, request, WsEv, WsRaw};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion};
use ringmq_shard::config::{Listener, Transport};
use ringmq_shard::stats::CloseReason;

/// A broker whose one listener is `ws://127.0.0.1:0/mqtt`.
fn ws_broker(shards: usize, tweak: impl FnOnce(&mut ringmq_shard::config::ShardConfig)) -> Broker {
    Broker::start_with(shards, |c| {
        let mut l = Listener::mqtt("127.0.0.1:0".parse().unwrap());
        l.transport = Transport::Ws {
            path: "/mqtt".into(),
        };
        c.listen = vec![l];
        tweak(c);
    })
}

fn closes(b: &Broker, r: CloseReason) -> u64 {
    b.stat(|s| s.closes_for(r))
}

/// A WebSocket client, CONNECTed and subscribed to `t/#`.
async fn good_subscriber(addr: SocketAddr, v: ProtocolVersion, id: &str) -> WsRaw {
    let mut ws = WsRaw::open(addr, "/mqtt", v).await;
    ws.send(&Packet::Connect(Box::new(connect_packet(v, id, true))), v)
        .await;
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    ws.send(&Packet::Subscribe(subscribe_packet(1, "t/#", 0)), v)
        .await;
    assert!(matches!(ws.packet("SUBACK").await, Packet::SubAck(_)));
    ws
}

/// The good subscriber still gets what a new WebSocket publisher sends.
async fn still_served(addr: SocketAddr, sub: &mut WsRaw, v: ProtocolVersion, n: u32) {
    let mut p = WsRaw::open(addr, "/mqtt", v).await;
    let id = format!("after-{n}");
    p.send(&Packet::Connect(Box::new(connect_packet(v, &id, true))), v)
        .await;
    assert!(matches!(p.packet("CONNACK").await, Packet::ConnAck(_)));
    let body = format!("still-{n}");
    p.send(
        &Packet::Publish(publish_packet("t/x", 0, false, 0, body.as_bytes())),
        v,
    )
    .await;
    match sub.packet("PUBLISH to the good client").await {
        Packet::Publish(m) => assert_eq!(&m.payload[..], body.as_bytes()),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn upgrade_refusals_get_their_status_and_are_counted() {
    let b = ws_broker(2, |_| {});
    let v = ProtocolVersion::V3_1_1;
    let mut sub = good_subscriber(b.addr, v, "good").await;
    let good = request("/mqtt", Some("mqtt"));
    let cases: Vec<(String, &str)> = vec![
        (request("/other", Some("mqtt")), "404"),
        (good.replace("Upgrade: websocket\r\n", ""), "400"),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            "400",
        ),
        (good.replace("Version: 13", "Version: 8"), "426"),
        (
            good.replace("Key: dGhlIHNhbXBsZSBub25jZQ==", "Key: short"),
            "400",
        ),
        // [MQTT-6.0.0-3] the client must offer "mqtt".
        (request("/mqtt", None), "400"),
        (request("/mqtt", Some("chat")), "400"),
        (good.replace("GET", "POST"), "405"),
        // MQTT where HTTP was expected.
        ("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".into(), "400"),
    ];
    for (i, (req, status)) in cases.iter().enumerate() {
        let (mut ws, head) = WsRaw::open_with(b.addr, req.as_bytes()).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "case {i}: {req:?} got {head:?}"
        );
        assert_eq!(
            ws.frame(WAIT).await,
            WsEv::Closed,
            "case {i}: closed after the answer"
        );
    }
    let n = cases.len() as u64;
    check_for_blocking(WAIT, "refusals counted", || {
        (closes(&b, CloseReason::WsUpgradeRefused) == n).then_some(())
    });
    // Per listener, as handshake failures.
    let per_listener: u64 = b.stat(|s| {
        s.listener(0)
            .map_or(0, |l| l.failures_for(CloseReason::WsUpgradeRefused))
    });
    assert_eq!(per_listener, n);
    // An oversized request head: 431.
    let mut big = "GET /mqtt HTTP/1.1\r\nX-Pad: ".to_string();
    big.push_str(&"a".repeat(9000));
    let (_ws, head) = WsRaw::open_with(b.addr, big.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    still_served(b.addr, &mut sub, v, 0).await;
}

/// Connects over WebSocket, then sends `bad` (raw frames) and expects a Close with `code`.
async fn bad_frame(
    b: &Broker,
    v: ProtocolVersion,
    id: &str,
    bad: &[u8],
    code: u16,
    reason: CloseReason,
) {
    let before = closes(b, reason);
    let mut ws = WsRaw::open(b.addr, "/mqtt", v).await;
    ws.send(&Packet::Connect(Box::new(connect_packet(v, id, true))), v)
        .await;
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    ws.send_raw(bad).await;
    let (got, frames) = ws.close_code(id).await;
    assert_eq!(
        got,
        Some(code),
        "{id}: Close code; frames before: {frames:?}"
    );
    check_for_blocking(WAIT, "close counted", || {
        (closes(b, reason) == before + 1).then_some(())
    });
}

/// Both protocol versions, 1 and 2 shards: `name::{v311,v5}_{1shard,2shards}`.
macro_rules! ws_matrix {
    ($( fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2).await }
        }
    )*};
}

ws_matrix! {
    fn bad_frames_are_closed_with_their_code;
    fn packets_span_frames_and_frames_hold_packets;
}

async fn bad_frames_are_closed_with_their_code(proto: Proto, shards: usize) {
    let b = ws_broker(shards, |c| c.max_packet_size = 4096);
    let v = version(proto);
    let mut sub = good_subscriber(b.addr, v, "good").await;
    let m = Some([1, 2, 3, 4]);
    // [MQTT-6.0.0-1] MQTT is carried in binary frames: a text frame is closed 1003.
    let text = frame(true, 0x1, b"\xe0\x00", m);
    bad_frame(&b, v, "text", &text, 1003, CloseReason::WsUnsupportedData).await;
    // RFC 6455 5.1: client frames are masked.
    let unmasked = frame(true, 0x2, b"\xc0\x00", None);
    bad_frame(
        &b,
        v,
        "unmasked",
        &unmasked,
        1002,
        CloseReason::WsProtocolError,
    )
    .await;
    // RFC 6455 5.5: a control frame carries 125 bytes at most.
    let big_ping = frame(true, 0x9, &[0; 126], m);
    bad_frame(
        &b,
        v,
        "ping126",
        &big_ping,
        1002,
        CloseReason::WsProtocolError,
    )
    .await;
    // A header announcing 1 GiB against a 4 KiB maximum packet size: refused on the header.
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    bad_frame(&b, v, "huge", &huge, 1009, CloseReason::WsMessageTooBig).await;
    // RFC 6455 5.2: reserved bits, reserved opcodes.
    let rsv = frame(true, 0x2 | 0x40, b"x", m);
    bad_frame(&b, v, "rsv", &rsv, 1002, CloseReason::WsProtocolError).await;
    let op = frame(true, 0x3, b"x", m);
    bad_frame(&b, v, "opcode3", &op, 1002, CloseReason::WsProtocolError).await;
    still_served(b.addr, &mut sub, v, 1).await;
}

/// [MQTT-6.0.0-2]: a packet split over frames (and over TCP writes), several
/// packets in one frame, pings between fragments.
async fn packets_span_frames_and_frames_hold_packets(proto: Proto, shards: usize) {
    let b = ws_broker(shards, |_| {});
    let v = version(proto);
    let mut sub = good_subscriber(b.addr, v, "sub").await;
    let mut ws = WsRaw::open(b.addr, "/mqtt", v).await;
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect_packet(v, "split", true)))
        .encode(v, &mut connect)
        .unwrap();
    // CONNECT in three frames of one fragmented message, a ping in the middle,
    // each frame written in two TCP writes.
    let (a, rest) = connect.split_at(3);
    let (c, d) = rest.split_at(rest.len() / 2);
    let m = Some([9, 8, 7, 6]);
    for f in [
        frame(false, 0x2, a, m),
        frame(true, 0x9, b"hi", m),
        frame(false, 0x0, c, m),
        frame(true, 0x0, d, m),
    ] {
        let (x, y) = f.split_at(f.len() / 2);
        ws.send_raw(x).await;
        tokio::task::yield_now().await;
        ws.send_raw(y).await;
    }
    // The pong comes back with the ping's payload (RFC 6455 5.5.3).
    assert_eq!(ws.frame(WAIT).await, WsEv::Frame(0xA, b"hi".to_vec()));
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    // Three PUBLISHes in one frame.
    let mut three = bytes::BytesMut::new();
    for i in 0..3 {
        let body = format!("m{i}");
        Packet::Publish(publish_packet("t/a", 0, false, 0, body.as_bytes()))
            .encode(v, &mut three)
            .unwrap();
    }
    ws.send_raw(&binary(&three)).await;
    for i in 0..3 {
        match sub.packet("PUBLISH").await {
            Packet::Publish(p) => assert_eq!(&p.payload[..], format!("m{i}").as_bytes()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_frame_per_flush_not_per_packet() {
    let b = ws_broker(1, |_| {});
    let v = ProtocolVersion::V3_1_1;
    let mut sub = good_subscriber(b.addr, v, "burst-sub").await;
    let mut p = WsRaw::open(b.addr, "/mqtt", v).await;
    p.send(
        &Packet::Connect(Box::new(connect_packet(v, "burst-pub", true))),
        v,
    )
    .await;
    assert!(matches!(p.packet("CONNACK").await, Packet::ConnAck(_)));
    // 100 PUBLISHes in one frame: routed in one read, flushed to the subscriber together.
    let mut burst = bytes::BytesMut::new();
    for i in 0..100 {
        Packet::Publish(publish_packet(
            "t/b",
            0,
            false,
            0,
            format!("{i}").as_bytes(),
        ))
        .encode(v, &mut burst)
        .unwrap();
    }
    p.send_raw(&binary(&burst)).await;
    let mut frames = 0;
    let mut got = 0;
    let mut dec = ringmq_codec::Decoder::new(u32::MAX);
    dec.set_version(v);
    let mut buf = bytes::BytesMut::new();
    while got < 100 {
        match sub.frame(WAIT).await {
            WsEv::Frame(0x2, payload) => {
                frames += 1;
                buf.extend_from_slice(&payload);
                while let Some(Packet::Publish(m)) = dec.decode(&mut buf).unwrap() {
                    assert_eq!(&m.payload[..], format!("{got}").as_bytes());
                    got += 1;
                }
            }
            other => panic!("expected binary frames, got {other:?} after {got}"),
        }
    }
    assert!(
        frames < 100,
        "{frames} frames for 100 packets: one per packet"
    );
}

#[tokio::test]
async fn client_close_is_echoed_and_the_will_is_sent() {
    let b = ws_broker(2, |_| {});
    let v = ProtocolVersion::V5;
    let mut sub = good_subscriber(b.addr, v, "will-sub").await;
    // A client with a will on t/will closes the WebSocket without DISCONNECT.
    let mut ws = WsRaw::open(b.addr, "/mqtt", v).await;
    let mut c = connect_packet(v, "willer", true);
    c.will = Some(ringmq_codec::LastWill {
        topic: common::raw::topic("t/will"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: ringmq_codec::QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    ws.send(&Packet::Connect(Box::new(c)), v).await;
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    ws.send_raw(&frame(
        true,
        0x8,
        &1000u16.to_be_bytes(),
        Some([5, 6, 7, 8]),
    ))
    .await;
    // RFC 6455 5.5.1: the Close is echoed with its code, then the server closes TCP.
    let (code, _) = ws.close_code("client close").await;
    assert_eq!(code, Some(1000));
    match sub.packet("the will").await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("expected the will, got {other:?}"),
    }
    check_for_blocking(WAIT, "closed by peer counted", || {
        (closes(&b, CloseReason::WsClosedByPeer) == 1).then_some(())
    });
    // DISCONNECT then Close in one write: the DISCONNECT is handled, no will.
    let mut ws = WsRaw::open(b.addr, "/mqtt", v).await;
    let mut c = connect_packet(v, "polite", true);
    c.will = Some(ringmq_codec::LastWill {
        topic: common::raw::topic("t/will"),
        payload: bytes::Bytes::from_static(b"must not"),
        qos: ringmq_codec::QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    ws.send(&Packet::Connect(Box::new(c)), v).await;
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    let mut both = binary(&[0xe0, 0x00]);
    both.extend(frame(true, 0x8, &1000u16.to_be_bytes(), Some([5, 6, 7, 8])));
    ws.send_raw(&both).await;
    let _ = ws.close_code("DISCONNECT + Close").await;
    check_for_blocking(WAIT, "client disconnect counted", || {
        (closes(&b, CloseReason::ClientDisconnect) >= 1).then_some(())
    });
    still_served(b.addr, &mut sub, v, 2).await;
}

#[tokio::test]
async fn broker_side_close_carries_a_close_frame() {
    let b = ws_broker(1, |_| {});
    let v = ProtocolVersion::V5;
    let mut ws = WsRaw::open(b.addr, "/mqtt", v).await;
    ws.send(
        &Packet::Connect(Box::new(connect_packet(v, "dup", true))),
        v,
    )
    .await;
    assert!(matches!(ws.packet("CONNACK").await, Packet::ConnAck(_)));
    // Taken over by a second connection with the same client id.
    let mut ws2 = WsRaw::open(b.addr, "/mqtt", v).await;
    ws2.send(
        &Packet::Connect(Box::new(connect_packet(v, "dup", true))),
        v,
    )
    .await;
    assert!(matches!(ws2.packet("CONNACK").await, Packet::ConnAck(_)));
    let (code, before) = ws.close_code("taken over").await;
    // The v5 DISCONNECT 0x8E rides in a binary frame, then Close 1000 (RFC 6455 7.4.1).
    assert!(
        matches!(before.last(), Some((0x2, p)) if p[0] == 0xe0 && p[2] == 0x8e),
        "{before:?}"
    );
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn a_stalled_upgrade_is_shed_at_the_connect_timeout() {
    let b = ws_broker(1, |_| {});
    let v = ProtocolVersion::V3_1_1;
    let mut sub = good_subscriber(b.addr, v, "patient").await;
    // Half a request head, then nothing (slowloris).
    let req = request("/mqtt", Some("mqtt"));
    let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &req.as_bytes()[..40])
        .await
        .unwrap();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read(&mut s, &mut one),
    )
    .await
    .expect("closed within the connect timeout");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "closed without an answer: {r:?}"
    );
    check_for_blocking(WAIT, "handshake timeout counted", || {
        (closes(&b, CloseReason::HandshakeTimeout) == 1).then_some(())
    });
    still_served(b.addr, &mut sub, v, 3).await;
}
