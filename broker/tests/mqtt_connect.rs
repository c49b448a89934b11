//! CONNECT / CONNACK, client identifiers, keep alive and session takeover, checked byte-exact
//! with our codec-based raw client (and rumqttc for the plain cases).
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::raw::{bytes_of, connect_packet, version, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};

matrix! {
    fn connack_is_first_packet_and_clean_session_has_no_session;
    fn client_ids_of_1_to_23_alphanumerics_are_accepted;
    fn first_packet_not_connect_closes;
    fn second_connect_is_a_protocol_error;
    fn unsupported_protocol_level_is_refused_and_closed;
    fn wrong_protocol_name_closes_without_accepting;
    fn reserved_connect_flag_closes;
    fn will_qos_without_will_flag_closes;
    fn will_qos_3_closes;
    fn keep_alive_expires_after_one_and_a_half_times;
    fn pingreq_keeps_connection_alive;
    fn takeover_closes_the_old_connection;
    fn data_after_a_refused_connect_is_not_processed;
    fn concurrent_connects_all_get_connack;
    fn will_retain_without_will_flag_closes;
    fn username_flag_without_username_closes;
    fn invalid_utf8_will_topic_or_user_name_is_refused;
    fn keep_alive_0_never_times_out;
}

matrix_v311! {
    fn v311_empty_client_id_with_clean_session_is_accepted;
    fn v311_empty_client_id_without_clean_session_gets_0x02;
    fn v311_password_without_username_closes;
}

matrix_v5! {
    fn v5_empty_client_id_gets_assigned_identifier;
    fn v5_auth_method_without_auth_configured_gets_0x8c;
    fn v5_connack_advertises_limits;
}

fn level(ctx: &Ctx) -> u8 {
    match ctx.proto {
        Proto::V4 => 4,
        Proto::V5 => 5,
    }
}

/// [MQTT-3.2.0-1] (3.1.1) / [MQTT-3.2.0-1]: the first packet from the server is CONNACK;
/// [MQTT-3.2.2-1] (3.1.1) / [MQTT-3.2.2-2]: clean start 1 gives session present 0.
async fn connack_is_first_packet_and_clean_session_has_no_session(ctx: Ctx) {
    let (_raw, ack) = Raw::connect(ctx.broker.addr, version(ctx.proto), "first", true).await;
    assert!(!ack.session_present);
    let c = ctx.client("first-rumqttc").await;
    assert!(!c.session_present());
}

/// [MQTT-3.1.3-5]: the server MUST allow ids of 1 to 23 bytes of [0-9a-zA-Z].
async fn client_ids_of_1_to_23_alphanumerics_are_accepted(ctx: Ctx) {
    for id in ["a", "Z9", "0123456789abcdefghijXYZ"] {
        let _ = Raw::connect(ctx.broker.addr, version(ctx.proto), id, true).await;
    }
}

/// [MQTT-3.1.0-1]: the first packet from the client MUST be CONNECT; anything else closes.
async fn first_packet_not_connect_closes(ctx: Ctx) {
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&[0xC0, 0x00]).await; // PINGREQ
    let got = raw.expect_closed(WAIT, "PINGREQ before CONNECT").await;
    assert!(
        !got.iter().any(|p| matches!(p, Packet::PingResp)),
        "no PINGRESP before CONNECT: {got:?}"
    );
    assert!(!got
        .iter()
        .any(|p| matches!(p, Packet::ConnAck(a) if a.reason == ReasonCode::Success)));
    // [MQTT-3.14.0-1]: no DISCONNECT before a successful CONNACK.
    assert!(
        !got.iter().any(|p| matches!(p, Packet::Disconnect(_))),
        "no DISCONNECT before CONNACK: {got:?}"
    );
}

/// [MQTT-3.1.0-2]: a second CONNECT is a protocol violation: close (v5: DISCONNECT 0x82 first
/// if anything is sent).
async fn second_connect_is_a_protocol_error(ctx: Ctx) {
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), "twice", true).await;
    raw.send_bytes(&bytes_of::connect_ok(level(&ctx), "twice"))
        .await;
    raw.expect_disconnect(ReasonCode::ProtocolError, "second CONNECT")
        .await;
}

/// [MQTT-3.1.2-2]: unsupported protocol level: CONNACK 0x01 (3.1.1) / 0x84 (v5), then close.
async fn unsupported_protocol_level_is_refused_and_closed(ctx: Ctx) {
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bytes_of::connect("MQTT", 6, 0x02, 30, b"lvl6", None))
        .await;
    let got = raw_until_close(&mut raw).await;
    let v311 = [0x20, 0x02, 0x00, 0x01];
    let v5 = [0x20, 0x03, 0x00, 0x84, 0x00];
    assert!(
        got == v311 || got == v5,
        "expected CONNACK 0x01 (3.1.1 form) or 0x84 (v5 form) then close, got {got:02x?}"
    );
}

/// [MQTT-3.1.2-1]: wrong protocol name: the server must not accept the connection.
async fn wrong_protocol_name_closes_without_accepting(ctx: Ctx) {
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bytes_of::connect(
        "MQTX",
        level(&ctx),
        0x02,
        30,
        b"name",
        None,
    ))
    .await;
    let got = raw_until_close(&mut raw).await;
    assert!(
        got.len() < 4 || got[3] != 0x00,
        "a CONNECT with protocol name MQTX must not be accepted, got {got:02x?}"
    );
}

/// [MQTT-3.1.2-3]: the reserved flag in CONNECT MUST be 0, else close (v5: malformed, 0x81).
async fn reserved_connect_flag_closes(ctx: Ctx) {
    expect_refused_connect(&ctx, 0x03, 0x81).await;
}

/// [MQTT-3.1.2-11] (v5) / [MQTT-3.1.2-13] (3.1.1): will flag 0 => will QoS MUST be 0.
async fn will_qos_without_will_flag_closes(ctx: Ctx) {
    expect_refused_connect(&ctx, 0x02 | 0x08, 0x81).await;
}

/// [MQTT-3.1.2-12] (v5) / [MQTT-3.1.2-14] (3.1.1): will QoS 3 is malformed.
async fn will_qos_3_closes(ctx: Ctx) {
    let mut body = bytes_of::s(b"MQTT");
    body.extend([level(&ctx), 0x02 | 0x04 | 0x18, 0, 30]);
    if ctx.proto == Proto::V5 {
        body.push(0); // connect properties
    }
    body.extend(bytes_of::s(b"willq3"));
    if ctx.proto == Proto::V5 {
        body.push(0); // will properties
    }
    body.extend(bytes_of::s(b"will/t"));
    body.extend(bytes_of::s(b"bye"));
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bytes_of::frame(0x10, &body)).await;
    assert_not_accepted(&ctx, raw_until_close(&mut raw).await, 0x81);
}

/// [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22]: no packet within 1.5 x keep alive: the server
/// MUST close the connection (v5 may send DISCONNECT 0x8D).
async fn keep_alive_expires_after_one_and_a_half_times(ctx: Ctx) {
    let mut c = connect_packet(version(ctx.proto), "ka", true);
    c.keep_alive = 1;
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    let t0 = Instant::now();
    raw.expect_silence(
        Duration::from_millis(1000),
        "still connected within 1 x keep alive",
    )
    .await;
    raw.expect_disconnect(ReasonCode::KeepAliveTimeout, "keep alive expired")
        .await;
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(2600),
        "closed after {took:?}, expected about 1.5 s"
    );
}

/// [MQTT-3.12.4-1]: PINGREQ gets PINGRESP; it keeps the connection alive past 1.5 x keep alive.
async fn pingreq_keeps_connection_alive(ctx: Ctx) {
    let mut c = connect_packet(version(ctx.proto), "pinger", true);
    c.keep_alive = 1;
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    for _ in 0..6 {
        raw.send(&Packet::PingReq).await;
        match raw.recv(Duration::from_millis(500)).await {
            RawEv::Packet(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
        raw.expect_silence(Duration::from_millis(400), "idle between pings")
            .await;
    }
}

/// [MQTT-3.1.4-2] (3.1.1) / [MQTT-3.1.4-3]: a second connection with the same client id
/// closes the first; v5 sends it DISCONNECT 0x8E (Session taken over) [MQTT-3.14.0-1 usage].
async fn takeover_closes_the_old_connection(ctx: Ctx) {
    let v = version(ctx.proto);
    let (mut old, _) = Raw::connect(ctx.broker.addr, v, "taken", true).await;
    let (mut new, _) = Raw::connect(ctx.broker.addr, v, "taken", true).await;
    let got = old
        .expect_closed(WAIT, "old connection after takeover")
        .await;
    if ctx.proto == Proto::V5 {
        assert!(
            matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::SessionTakenOver),
            "v5: DISCONNECT 0x8E to the old connection, got {got:?}"
        );
        // [MQTT-3.14.2-2]: the server never sends a Session Expiry Interval in DISCONNECT.
        if let Some(Packet::Disconnect(d)) = got.last() {
            assert_eq!(d.properties.session_expiry_interval, None);
        }
    } else {
        assert!(got.is_empty(), "3.1.1: no server DISCONNECT, got {got:?}");
    }
    new.send(&Packet::PingReq).await;
    match new.recv(WAIT).await {
        RawEv::Packet(Packet::PingResp) => {}
        other => panic!("new connection works: expected PINGRESP, got {other:?}"),
    }
}

/// [MQTT-3.1.4-5] (3.1.1) / [MQTT-3.1.4-6]: after refusing a CONNECT the server MUST NOT
/// process any data the client sent after it.
async fn data_after_a_refused_connect_is_not_processed(ctx: Ctx) {
    let mut bad = bytes_of::connect("MQTT", 6, 0x02, 30, b"refused", None);
    bad.extend(bytes_of::publish(
        0x31,
        b"refused/t",
        None,
        None,
        b"must not be stored",
    ));
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bad).await;
    let _ = raw_until_close(&mut raw).await;
    let mut sub = ctx.client("checker").await;
    sub.subscribe("refused/#", 0).await;
    sub.expect_none(QUIET, "no retained message from a refused connection")
        .await;
}

/// [MQTT-3.1.3-6]: a zero-length client id with clean session 1 is accepted.
async fn v311_empty_client_id_with_clean_session_is_accepted(ctx: Ctx) {
    let (_raw, ack) = Raw::connect(ctx.broker.addr, ProtocolVersion::V3_1_1, "", true).await;
    assert!(!ack.session_present);
}

/// [MQTT-3.1.3-8] (3.1.1): zero-length client id with clean session 0: CONNACK 0x02
/// (identifier rejected), then close.
async fn v311_empty_client_id_without_clean_session_gets_0x02(ctx: Ctx) {
    let mut raw = Raw::open(ctx.broker.addr, ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&bytes_of::connect("MQTT", 4, 0x00, 30, b"", None))
        .await;
    assert_eq!(
        raw_until_close(&mut raw).await,
        vec![0x20, 0x02, 0x00, 0x02]
    );
}

/// [MQTT-3.1.2-22] (3.1.1): password flag 1 with user name flag 0 is a protocol violation.
async fn v311_password_without_username_closes(ctx: Ctx) {
    let mut body = bytes_of::s(b"MQTT");
    body.extend([4, 0x02 | 0x40, 0, 30]);
    body.extend(bytes_of::s(b"pw-only"));
    body.extend(bytes_of::s(b"secret"));
    let mut raw = Raw::open(ctx.broker.addr, ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&bytes_of::frame(0x10, &body)).await;
    assert_not_accepted(&ctx, raw_until_close(&mut raw).await, 0x81);
}

/// [MQTT-3.1.3-7] (v5 numbering [MQTT-3.2.2-16]): a zero-length client id gets an Assigned
/// Client Identifier in CONNACK.
async fn v5_empty_client_id_gets_assigned_identifier(ctx: Ctx) {
    let (_raw, ack) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, "", true).await;
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("Assigned Client Identifier");
    assert!(!id.as_str().is_empty());
}

/// [MQTT-4.12.0-1]: an authentication method the server does not support: CONNACK 0x8C
/// (Bad authentication method), then close.
async fn v5_auth_method_without_auth_configured_gets_0x8c(ctx: Ctx) {
    let mut props = vec![0x15];
    props.extend(bytes_of::s(b"SCRAM-SHA-1"));
    let mut raw = Raw::open(ctx.broker.addr, ProtocolVersion::V5).await;
    raw.send_bytes(&bytes_of::connect(
        "MQTT",
        5,
        0x02,
        30,
        b"auth",
        Some(&props),
    ))
    .await;
    let got = raw.expect_closed(WAIT, "unsupported auth method").await;
    match got.first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason, ReasonCode::BadAuthenticationMethod),
        other => panic!("expected CONNACK 0x8C, got {other:?}"),
    }
}

/// [MQTT-3.2.2-*]: CONNACK carries the server's limits (receive maximum, topic alias maximum,
/// maximum packet size) when they differ from the defaults.
async fn v5_connack_advertises_limits(ctx: Ctx) {
    let c = ctx.client("limits").await;
    let p = c.connack_props.clone().expect("CONNACK properties");
    assert!(
        p.topic_alias_max.unwrap_or(0) > 0,
        "topic alias maximum advertised: {p:?}"
    );
    assert!(
        p.max_packet_size.is_some(),
        "maximum packet size advertised: {p:?}"
    );
}

/// Sends a CONNECT with `flags` and expects it refused: close, and any CONNACK not success.
async fn expect_refused_connect(ctx: &Ctx, flags: u8, v5_code: u8) {
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bytes_of::connect(
        "MQTT",
        level(ctx),
        flags,
        30,
        b"flags",
        None,
    ))
    .await;
    assert_not_accepted(ctx, raw_until_close(&mut raw).await, v5_code);
}

/// A refused CONNECT: either silence then close, or a CONNACK with a failure code (v5: `code`).
fn assert_not_accepted(ctx: &Ctx, got: Vec<u8>, code: u8) {
    if got.is_empty() {
        return;
    }
    assert_eq!(
        got[0], 0x20,
        "only a CONNACK may precede the close, got {got:02x?}"
    );
    if ctx.proto == Proto::V5 {
        assert_eq!(got.get(3), Some(&code), "v5 CONNACK reason, got {got:02x?}");
    } else {
        assert_ne!(
            got.get(3),
            Some(&0),
            "3.1.1 CONNACK must not accept, got {got:02x?}"
        );
    }
}

/// Raw bytes the broker sends until it closes the connection (bounded by 5 s).
async fn raw_until_close(raw: &mut Raw) -> Vec<u8> {
    let mut out = Vec::new();
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match raw.read_raw(left).await {
            Some(chunk) if chunk.is_empty() => return out,
            Some(chunk) => out.extend(chunk),
            None => panic!("broker did not close the connection; got {out:02x?}"),
        }
    }
}

/// [MQTT-3.1.4-5] (3.1.1: [MQTT-3.1.4-4]): every accepted CONNECT gets its CONNACK, also when
/// many clients connect at once and their sessions live on other shards.
async fn concurrent_connects_all_get_connack(ctx: Ctx) {
    let v = version(ctx.proto);
    let mut set = tokio::task::JoinSet::new();
    for id in spread_ids("storm", 40, ctx.shards()) {
        let addr = ctx.broker.addr;
        set.spawn(async move {
            let (mut raw, _) = Raw::connect(addr, v, &id, true).await;
            raw.send(&Packet::PingReq).await;
            match raw.recv(WAIT).await {
                RawEv::Packet(Packet::PingResp) => id,
                other => panic!("{id}: expected PINGRESP, got {other:?}"),
            }
        });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        r.expect("connect task");
        done += 1;
    }
    assert_eq!(done, 40);
}

/// [MQTT-3.1.2-13] (v5) / [MQTT-3.1.2-15] (3.1.1): will flag 0 => will retain MUST be 0.
async fn will_retain_without_will_flag_closes(ctx: Ctx) {
    expect_refused_connect(&ctx, 0x02 | 0x20, 0x81).await;
}

/// [MQTT-3.1.2-17] (v5) / [MQTT-3.1.2-19] (3.1.1): user name flag 1 => a user name follows;
/// a CONNECT that ends before it is malformed.
async fn username_flag_without_username_closes(ctx: Ctx) {
    expect_refused_connect(&ctx, 0x02 | 0x80, 0x81).await;
}

/// [MQTT-3.1.3-11], [MQTT-3.1.3-12] (v5) / [MQTT-3.1.3-10], [MQTT-3.1.3-11] (3.1.1): will
/// topic and user name are UTF-8; ill-formed ones are refused.
async fn invalid_utf8_will_topic_or_user_name_is_refused(ctx: Ctx) {
    let v5 = ctx.proto == Proto::V5;
    for (flags, field) in [(0x02 | 0x04, "will topic"), (0x02 | 0x80, "user name")] {
        let mut body = bytes_of::s(b"MQTT");
        body.extend([level(&ctx), flags, 0, 30]);
        if v5 {
            body.push(0);
        }
        body.extend(bytes_of::s(b"utf8fields"));
        if flags & 0x04 != 0 {
            if v5 {
                body.push(0);
            }
            body.extend(bytes_of::s(&[b'w', 0xFF]));
            body.extend(bytes_of::s(b"payload"));
        } else {
            body.extend(bytes_of::s(&[b'u', 0xC0, 0x80]));
        }
        let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
        raw.send_bytes(&bytes_of::frame(0x10, &body)).await;
        let got = raw_until_close(&mut raw).await;
        assert!(
            got.len() < 4 || got[3] != 0,
            "{field}: invalid UTF-8 must not be accepted, got {got:02x?}"
        );
    }
}

/// [MQTT-3.1.2-22] (v5 3.1.2.10): keep alive 0 turns the mechanism off: an idle client stays.
async fn keep_alive_0_never_times_out(ctx: Ctx) {
    let mut c = connect_packet(version(ctx.proto), "ka0", true);
    c.keep_alive = 0;
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    raw.expect_silence(Duration::from_millis(2500), "idle with keep alive 0")
        .await;
    raw.send(&Packet::PingReq).await;
    assert!(matches!(
        raw.expect_any("still connected").await,
        Packet::PingResp
    ));
}
