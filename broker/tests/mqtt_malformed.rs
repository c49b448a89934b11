//! Bad input gets the spec's answer (close; v5: DISCONNECT with the right reason code first),
//! and never stalls other clients: every test ends with a good client round trip.
#[macro_use]
mod common;

use std::time::Duration;

use common::raw::{bytes_of, version};
use common::*;
use ringmq_codec::{Packet, ReasonCode};

matrix! {
    fn reserved_fixed_header_flags_close;
    fn malformed_remaining_length_closes;
    fn invalid_utf8_in_topic_closes;
    fn null_character_in_topic_closes;
    fn wildcard_in_publish_topic_closes;
    fn publish_qos_3_closes;
    fn qos_0_with_dup_closes;
    fn packet_id_0_closes;
    fn subscribe_without_filters_closes;
    fn unsubscribe_without_filters_closes;
    fn subscribe_reserved_option_bits_close;
    fn invalid_topic_filter_is_refused;
    fn packet_too_large_is_refused;
    fn reserved_packet_type_closes;
    fn bad_clients_never_stall_a_good_one;
    fn invalid_utf8_in_topic_filter_closes;
    fn empty_topic_filter_closes;
    fn invalid_utf8_client_id_is_refused;
    fn invalid_utf8_in_unsubscribe_filter_closes;
}

matrix_v5! {
    fn v5_subscription_identifier_from_client_is_a_protocol_error;
    fn v5_duplicate_property_is_a_protocol_error;
    fn v5_no_local_on_shared_subscription_is_a_protocol_error;
    fn v5_subscription_identifier_0_is_malformed;
    fn v5_invalid_utf8_in_user_property_is_malformed;
    fn v5_auth_without_authentication_method_is_a_protocol_error;
}

fn is_v5(ctx: &Ctx) -> bool {
    ctx.proto == Proto::V5
}

/// Connects a raw client, sends `bad`, expects the close (v5: DISCONNECT with one of
/// `reasons` if the broker sends one), then checks the broker still serves a good client.
async fn refused(ctx: &Ctx, id: &str, bad: &[u8], reasons: &[ReasonCode], what: &str) {
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), id, true).await;
    raw.send_bytes(bad).await;
    let got = raw.expect_closed(WAIT, what).await;
    let disconnect = got.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    match (is_v5(ctx), disconnect) {
        (true, Some(r)) => assert!(
            reasons.contains(&r),
            "{what}: DISCONNECT {r:?}, expected one of {reasons:?}"
        ),
        (false, Some(r)) => panic!("{what}: 3.1.1 has no server DISCONNECT, got {r:?}"),
        _ => {}
    }
    healthy(ctx, id).await;
}

/// A fresh publisher and subscriber still get a message through.
async fn healthy(ctx: &Ctx, prefix: &str) {
    let (p, s) = ctx.pair_ids(&format!("{prefix}-ok"));
    let mut sub = ctx.client(&s).await;
    sub.subscribe("healthy/t", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("healthy/t", 1, false, "alive").await;
    assert_eq!(
        sub.recv("broker still serves good clients").await.text(),
        "alive"
    );
}

const MALFORMED: &[ReasonCode] = &[ReasonCode::MalformedPacket];
const MALFORMED_OR_PROTOCOL: &[ReasonCode] =
    &[ReasonCode::MalformedPacket, ReasonCode::ProtocolError];

/// [MQTT-2.2.2-2] (3.1.1) / [MQTT-2.1.3-1]: invalid fixed-header flags: SUBSCRIBE 0x80
/// [MQTT-3.8.1-1], UNSUBSCRIBE 0xA0 [MQTT-3.10.1-1], PUBREL 0x60 [MQTT-3.6.1-1], PINGREQ 0xC1.
async fn reserved_fixed_header_flags_close(ctx: Ctx) {
    let v5 = is_v5(&ctx);
    refused(
        &ctx,
        "flags-sub",
        &bytes_of::subscribe(0x80, 1, b"a/b", 0, v5),
        MALFORMED,
        "SUBSCRIBE flags 0000",
    )
    .await;
    let mut unsub = vec![0, 1];
    if v5 {
        unsub.push(0);
    }
    unsub.extend(bytes_of::s(b"a/b"));
    refused(
        &ctx,
        "flags-unsub",
        &bytes_of::frame(0xA0, &unsub),
        MALFORMED,
        "UNSUBSCRIBE flags 0000",
    )
    .await;
    refused(
        &ctx,
        "flags-rel",
        &bytes_of::frame(0x60, &[0, 1]),
        MALFORMED,
        "PUBREL flags 0000",
    )
    .await;
    refused(
        &ctx,
        "flags-ping",
        &[0xC1, 0x00],
        MALFORMED,
        "PINGREQ flags 0001",
    )
    .await;
}

/// [MQTT-1.5.5-1] (v5) / 3.1.1 §2.2.3: a remaining length of more than 4 bytes is malformed.
async fn malformed_remaining_length_closes(ctx: Ctx) {
    let bad = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00];
    refused(&ctx, "remlen", &bad, MALFORMED, "5-byte remaining length").await;
}

/// [MQTT-1.5.3-1] (3.1.1) / [MQTT-1.5.4-1]: ill-formed UTF-8 in a topic closes.
async fn invalid_utf8_in_topic_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    let bad = bytes_of::publish(0x30, &[b'a', 0xC3, 0x28], None, props, b"x");
    refused(&ctx, "utf8", &bad, MALFORMED, "invalid UTF-8 topic").await;
}

/// [MQTT-1.5.3-2] (3.1.1) / [MQTT-1.5.4-2]: U+0000 in a UTF-8 string closes.
async fn null_character_in_topic_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    let bad = bytes_of::publish(0x30, b"a\0b", None, props, b"x");
    refused(&ctx, "nul", &bad, MALFORMED, "U+0000 in topic").await;
}

/// [MQTT-3.3.2-2]: the topic name in PUBLISH MUST NOT contain wildcards.
async fn wildcard_in_publish_topic_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    let reasons = &[
        ReasonCode::MalformedPacket,
        ReasonCode::ProtocolError,
        ReasonCode::TopicNameInvalid,
    ];
    refused(
        &ctx,
        "wild-plus",
        &bytes_of::publish(0x30, b"a/+", None, props, b"x"),
        reasons,
        "+ in topic",
    )
    .await;
    refused(
        &ctx,
        "wild-hash",
        &bytes_of::publish(0x30, b"a/#", None, props, b"x"),
        reasons,
        "# in topic",
    )
    .await;
}

/// [MQTT-3.3.1-4]: a PUBLISH with both QoS bits set closes.
async fn publish_qos_3_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    refused(
        &ctx,
        "qos3",
        &bytes_of::publish(0x36, b"q/3", Some(1), props, b"x"),
        MALFORMED,
        "QoS 3",
    )
    .await;
}

/// [MQTT-3.3.1-2]: DUP MUST be 0 for QoS 0.
async fn qos_0_with_dup_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    refused(
        &ctx,
        "dup0",
        &bytes_of::publish(0x38, b"q/0", None, props, b"x"),
        MALFORMED,
        "QoS 0 DUP 1",
    )
    .await;
}

/// [MQTT-2.3.1-1] (3.1.1) / [MQTT-2.2.1-3]: QoS > 0 PUBLISH needs a non-zero packet id.
async fn packet_id_0_closes(ctx: Ctx) {
    let props: Option<&[u8]> = is_v5(&ctx).then_some(&[]);
    let bad = bytes_of::publish(0x32, b"p/0", Some(0), props, b"x");
    refused(&ctx, "pid0", &bad, MALFORMED_OR_PROTOCOL, "packet id 0").await;
}

/// [MQTT-3.8.3-3] (3.1.1) / [MQTT-3.8.3-2]: SUBSCRIBE with no topic filter is a violation.
async fn subscribe_without_filters_closes(ctx: Ctx) {
    let body: &[u8] = if is_v5(&ctx) { &[0, 1, 0] } else { &[0, 1] };
    refused(
        &ctx,
        "nofilter",
        &bytes_of::frame(0x82, body),
        MALFORMED_OR_PROTOCOL,
        "empty SUBSCRIBE",
    )
    .await;
}

/// [MQTT-3.10.3-2]: UNSUBSCRIBE with no topic filter is a violation.
async fn unsubscribe_without_filters_closes(ctx: Ctx) {
    let body: &[u8] = if is_v5(&ctx) { &[0, 1, 0] } else { &[0, 1] };
    refused(
        &ctx,
        "nounfilter",
        &bytes_of::frame(0xA2, body),
        MALFORMED_OR_PROTOCOL,
        "empty UNSUBSCRIBE",
    )
    .await;
}

/// [MQTT-3.8.3-4] (3.1.1) / [MQTT-3.8.3-5]: reserved bits of the subscription options
/// MUST be 0 (3.1.1: requested QoS byte upper 6 bits; v5: bits 6-7; QoS 3 in both).
async fn subscribe_reserved_option_bits_close(ctx: Ctx) {
    let v5 = is_v5(&ctx);
    let reserved = if v5 { 0xC1 } else { 0x05 };
    refused(
        &ctx,
        "optbits",
        &bytes_of::subscribe(0x82, 1, b"o/t", reserved, v5),
        MALFORMED,
        "reserved option bits",
    )
    .await;
    refused(
        &ctx,
        "optq3",
        &bytes_of::subscribe(0x82, 1, b"o/t", 0x03, v5),
        MALFORMED,
        "requested QoS 3",
    )
    .await;
}

/// [MQTT-4.7.1-1], [MQTT-4.7.1-2] (3.1.1: -2, -3): `#` not last or `+` not a whole level:
/// SUBACK failure (0x80 / v5 0x8F) or close.
async fn invalid_topic_filter_is_refused(ctx: Ctx) {
    let v5 = is_v5(&ctx);
    for (i, f) in [&b"a/#/b"[..], b"a+/b", b"a/b#"].into_iter().enumerate() {
        let id = format!("badfilter{i}");
        let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &id, true).await;
        raw.send_bytes(&bytes_of::subscribe(0x82, 1, f, 0, v5))
            .await;
        match raw.recv(WAIT).await {
            common::raw::RawEv::Packet(Packet::SubAck(a)) => {
                let code = a.reasons[0];
                assert!(
                    (code as u8) >= 0x80,
                    "filter {:?}: SUBACK must refuse, got {code:?}",
                    String::from_utf8_lossy(f)
                );
                if v5 {
                    assert_eq!(code, ReasonCode::TopicFilterInvalid);
                }
            }
            common::raw::RawEv::Packet(Packet::Disconnect(d)) => {
                assert!(v5, "3.1.1 has no server DISCONNECT");
                assert!(
                    MALFORMED_OR_PROTOCOL.contains(&d.reason)
                        || d.reason == ReasonCode::TopicFilterInvalid
                );
            }
            common::raw::RawEv::Closed => {}
            other => panic!(
                "filter {:?}: expected refusal, got {other:?}",
                String::from_utf8_lossy(f)
            ),
        }
    }
    healthy(&ctx, "badfilter").await;
}

/// v5 3.2.2.3.6 / [MQTT-3.2.2-15 usage]: a packet over the server's Maximum Packet Size:
/// DISCONNECT 0x95 (v5), close (3.1.1), decided from the fixed header.
async fn packet_too_large_is_refused(ctx: Ctx) {
    let broker = Broker::start_with(ctx.shards(), |c| c.max_packet_size = 1024);
    let big = Ctx {
        proto: ctx.proto,
        broker,
    };
    if is_v5(&big) {
        let c = big.client("advertised").await;
        let max = c.connack_props.as_ref().and_then(|p| p.max_packet_size);
        assert_eq!(max, Some(1024), "CONNACK advertises Maximum Packet Size");
    }
    let props: Option<&[u8]> = is_v5(&big).then_some(&[]);
    let bad = bytes_of::publish(0x30, b"big/t", None, props, &vec![b'x'; 4096]);
    refused(
        &big,
        "toolarge",
        &bad,
        &[ReasonCode::PacketTooLarge],
        "packet too large",
    )
    .await;
    // Only the header: the broker must refuse before the body arrives.
    let (mut raw, _) = Raw::connect(big.broker.addr, version(big.proto), "header-only", true).await;
    let mut header = vec![0x30];
    header.extend(bytes_of::varint(1_000_000));
    raw.send_bytes(&header).await;
    let got = raw
        .expect_closed(WAIT, "refused from the fixed header alone")
        .await;
    if is_v5(&big) {
        assert!(
            matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::PacketTooLarge),
            "got {got:?}"
        );
    }
}

/// [MQTT-2.2.1] (packet type 0 reserved) / v5: AUTH (15) is not a 3.1.1 packet.
async fn reserved_packet_type_closes(ctx: Ctx) {
    refused(
        &ctx,
        "type0",
        &[0x00, 0x00],
        MALFORMED_OR_PROTOCOL,
        "packet type 0",
    )
    .await;
    if !is_v5(&ctx) {
        refused(&ctx, "auth311", &[0xF0, 0x00], MALFORMED, "AUTH on 3.1.1").await;
    }
}

/// A good client's stream keeps flowing while bad clients connect, send garbage, stall
/// half-way through a packet or send nothing at all.
async fn bad_clients_never_stall_a_good_one(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("steady");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("steady/t", 1).await;
    let publ = ctx.client(&p).await;
    let mut idle = Vec::new();
    for i in 0..4 {
        // Silent TCP connections and a half-sent CONNECT hold no shard hostage.
        let mut r = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
        if i % 2 == 0 {
            r.send_bytes(&bytes_of::connect_ok(if is_v5(&ctx) { 5 } else { 4 }, "half")[..6])
                .await;
        }
        idle.push(r);
    }
    for i in 0..20 {
        let mut bad = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
        bad.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
        publ.publish("steady/t", 1, false, i.to_string()).await;
        let m = sub
            .recv_within(Duration::from_secs(2))
            .await
            .expect("good client not stalled");
        assert_eq!(m.text(), i.to_string());
        bad.expect_closed(WAIT, "garbage instead of CONNECT").await;
    }
}

/// [MQTT-3.3.4-6]: a PUBLISH from a client MUST NOT contain a Subscription Identifier.
async fn v5_subscription_identifier_from_client_is_a_protocol_error(ctx: Ctx) {
    let bad = bytes_of::publish(0x30, b"s/id", None, Some(&[0x0B, 0x05]), b"x");
    refused(
        &ctx,
        "pubsubid",
        &bad,
        MALFORMED_OR_PROTOCOL,
        "subscription id in PUBLISH",
    )
    .await;
}

/// v5 2.2.2.2: a property that may appear once, twice, is a protocol error.
async fn v5_duplicate_property_is_a_protocol_error(ctx: Ctx) {
    let props = [0x02, 0, 0, 0, 9, 0x02, 0, 0, 0, 9];
    let bad = bytes_of::publish(0x30, b"dup/prop", None, Some(&props), b"x");
    refused(
        &ctx,
        "dupprop",
        &bad,
        MALFORMED_OR_PROTOCOL,
        "duplicate message expiry",
    )
    .await;
}

/// [MQTT-3.8.3-4]: no local on a shared subscription is a protocol error.
async fn v5_no_local_on_shared_subscription_is_a_protocol_error(ctx: Ctx) {
    let bad = bytes_of::subscribe(0x82, 1, b"$share/g/t", 0x05, true);
    refused(
        &ctx,
        "sharednl",
        &bad,
        MALFORMED_OR_PROTOCOL,
        "no local on $share",
    )
    .await;
}

/// v5 3.8.2.1.2: a Subscription Identifier of 0 is a protocol error.
async fn v5_subscription_identifier_0_is_malformed(ctx: Ctx) {
    let mut body = vec![0, 1, 2, 0x0B, 0x00];
    body.extend(bytes_of::s(b"s/0"));
    body.push(0x01);
    refused(
        &ctx,
        "subid0",
        &bytes_of::frame(0x82, &body),
        MALFORMED_OR_PROTOCOL,
        "subscription id 0",
    )
    .await;
}

/// [MQTT-3.8.3-1] (3.1.1) / [MQTT-3.8.3-1]: topic filters MUST be valid UTF-8.
async fn invalid_utf8_in_topic_filter_closes(ctx: Ctx) {
    let bad = bytes_of::subscribe(0x82, 1, &[b'a', 0xFF], 0, is_v5(&ctx));
    refused(&ctx, "filterutf8", &bad, MALFORMED, "invalid UTF-8 filter").await;
}

/// [MQTT-4.7.3-1]: topic filters are at least one character long (3.1.1 also closes an empty
/// topic name; v5 treats it as an alias lookup, tested in mqtt_v5).
async fn empty_topic_filter_closes(ctx: Ctx) {
    let v5 = is_v5(&ctx);
    let reasons = &[
        ReasonCode::MalformedPacket,
        ReasonCode::ProtocolError,
        ReasonCode::TopicFilterInvalid,
    ];
    let id = "emptyfilter";
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), id, true).await;
    raw.send_bytes(&bytes_of::subscribe(0x82, 1, b"", 0, v5))
        .await;
    match raw.recv(WAIT).await {
        common::raw::RawEv::Packet(Packet::SubAck(a)) => {
            assert!(a.reasons[0] as u8 >= 0x80, "empty filter refused")
        }
        common::raw::RawEv::Packet(Packet::Disconnect(d)) => {
            assert!(v5, "3.1.1 has no server DISCONNECT");
            assert!(
                reasons.contains(&d.reason),
                "empty filter: DISCONNECT {:?}, expected one of {reasons:?}",
                d.reason
            );
        }
        common::raw::RawEv::Closed => {}
        other => panic!("expected refusal of an empty filter, got {other:?}"),
    }
    if !v5 {
        refused(
            &ctx,
            "emptytopic",
            &bytes_of::publish(0x30, b"", None, None, b"x"),
            MALFORMED,
            "empty topic",
        )
        .await;
    }
    healthy(&ctx, id).await;
}

/// [MQTT-3.1.3-4]: the client id MUST be UTF-8; an ill-formed one is refused.
async fn invalid_utf8_client_id_is_refused(ctx: Ctx) {
    let level = if is_v5(&ctx) { 5 } else { 4 };
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    raw.send_bytes(&bytes_of::connect(
        "MQTT",
        level,
        0x02,
        30,
        &[b'i', 0xC0, 0xAF],
        None,
    ))
    .await;
    let got = raw.expect_closed(WAIT, "invalid UTF-8 client id").await;
    assert!(
        !got.iter()
            .any(|p| matches!(p, Packet::ConnAck(a) if a.reason == ReasonCode::Success)),
        "must not be accepted: {got:?}"
    );
    healthy(&ctx, "badid").await;
}

/// [MQTT-3.10.3-1]: UNSUBSCRIBE topic filters MUST be valid UTF-8.
async fn invalid_utf8_in_unsubscribe_filter_closes(ctx: Ctx) {
    let mut body = vec![0, 1];
    if is_v5(&ctx) {
        body.push(0);
    }
    body.extend(bytes_of::s(&[b'u', 0xFE]));
    refused(
        &ctx,
        "unsubutf8",
        &bytes_of::frame(0xA2, &body),
        MALFORMED,
        "invalid UTF-8 unsubscribe filter",
    )
    .await;
}

/// [MQTT-1.5.7-1]: both strings of a UTF-8 string pair (User Property) are valid UTF-8.
async fn v5_invalid_utf8_in_user_property_is_malformed(ctx: Ctx) {
    let mut props = vec![0x26];
    props.extend(bytes_of::s(&[b'k', 0xFF]));
    props.extend(bytes_of::s(b"v"));
    let bad = bytes_of::publish(0x30, b"up/t", None, Some(&props), b"x");
    refused(
        &ctx,
        "userprop",
        &bad,
        MALFORMED,
        "invalid UTF-8 user property key",
    )
    .await;
}

/// v5 4.12: a client that gave no Authentication Method in CONNECT must not send AUTH; the
/// server treats it as a protocol error (and its CONNACK carried no Authentication Method).
async fn v5_auth_without_authentication_method_is_a_protocol_error(ctx: Ctx) {
    let (_raw, ack) = Raw::connect(ctx.broker.addr, version(ctx.proto), "authless", true).await;
    assert_eq!(ack.properties.authentication_method, None);
    refused(
        &ctx,
        "auth-pkt",
        &[0xF0, 0x00],
        MALFORMED_OR_PROTOCOL,
        "AUTH without a method",
    )
    .await;
}
