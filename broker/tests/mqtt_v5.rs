//! MQTT 5.0 features: no-local, subscription identifiers, topic aliases both ways, message
//! expiry, maximum packet size, receive maximum, shared subscriptions across shards, and
//! properties forwarded unaltered (user properties, response topic, correlation data, ...).
#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{bytes_of, connect_packet, resp, subscribe_packet, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as Q5;

matrix_v5! {
    fn no_local_suppresses_own_messages;
    fn subscription_identifiers_are_forwarded;
    fn inbound_topic_alias_is_resolved;
    fn topic_alias_0_is_refused_with_0x94;
    fn topic_alias_above_maximum_is_refused_with_0x94;
    fn empty_topic_without_alias_mapping_is_a_protocol_error;
    fn no_outbound_alias_when_client_allows_none;
    fn outbound_aliases_stay_within_client_maximum;
    fn expired_messages_are_dropped_and_remaining_time_forwarded;
    fn publish_properties_are_forwarded_unaltered;
    fn messages_over_client_maximum_packet_size_are_not_sent;
    fn broker_honours_client_receive_maximum;
    fn client_exceeding_receive_maximum_gets_0x93;
    fn shared_subscription_delivers_each_message_to_one_member;
    fn invalid_utf8_with_payload_format_indicator_is_refused;
    fn topic_alias_mappings_end_with_the_connection;
    fn response_topic_with_wildcard_is_refused;
    fn invalid_utf8_content_type_is_malformed;
    fn qos0_and_pingresp_flow_while_receive_window_is_full;
    fn shared_subscription_delivers_at_member_granted_qos;
    fn invalid_share_names_are_refused;
    fn no_reason_string_when_problem_information_is_off;
}

fn sub_filter(path: &str, nolocal: bool) -> Filter {
    Filter {
        path: path.into(),
        qos: Q5::AtLeastOnce,
        nolocal,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    }
}

/// [MQTT-3.8.3-3]: no local 1: the server MUST NOT forward to the publishing connection.
async fn no_local_suppresses_own_messages(ctx: Ctx) {
    let (a, b) = ctx.pair_ids("nolocal");
    let mut me = ctx.client(&a).await;
    me.subscribe_v5(sub_filter("nl/t", true), None).await;
    let mut other = ctx.client(&b).await;
    other.subscribe("nl/t", 1).await;
    me.publish("nl/t", 1, false, "mine").await;
    assert_eq!(other.recv("others still get it").await.text(), "mine");
    me.expect_none(QUIET, "no local").await;
}

/// [MQTT-3.3.4-3]: the subscription identifiers of matching subscriptions are sent with the
/// message (one PUBLISH with all, or one per subscription [MQTT-3.3.4-4/5]).
async fn subscription_identifiers_are_forwarded(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("subid");
    let mut sub = ctx.client(&s).await;
    sub.subscribe_v5(sub_filter("sid/+", false), Some(7)).await;
    sub.subscribe_v5(sub_filter("sid/#", false), Some(9)).await;
    sub.subscribe("sid/none", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("sid/a", 1, false, "x").await;
    let mut ids = HashSet::new();
    let m = sub.recv("with ids").await;
    ids.extend(m.props.unwrap_or_default().subscription_identifiers);
    while let Some(m) = sub.recv_within(QUIET).await {
        ids.extend(m.props.unwrap_or_default().subscription_identifiers);
    }
    assert_eq!(ids, HashSet::from([7, 9]));
    let mut plain = ctx.client(&format!("{s}-plain")).await;
    plain.subscribe("sid/z", 1).await;
    publ.publish("sid/z", 1, false, "y").await;
    let m = plain.recv("no id").await;
    assert!(m
        .props
        .unwrap_or_default()
        .subscription_identifiers
        .is_empty());
}

/// A raw v5 publisher (already connected) and a rumqttc subscriber on `filter`.
async fn raw_pub_and_sub(ctx: &Ctx, prefix: &str, filter: &str) -> (Raw, Client) {
    let (p, s) = ctx.pair_ids(prefix);
    let mut sub = ctx.client(&s).await;
    sub.subscribe(filter, 1).await;
    let (raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    (raw, sub)
}

fn alias_prop(alias: u16) -> Vec<u8> {
    let mut p = vec![0x23];
    p.extend(alias.to_be_bytes());
    p
}

/// [MQTT-3.3.2-12]: the server maps an alias set with a topic name, and resolves later
/// PUBLISH packets with an empty topic name and that alias.
async fn inbound_topic_alias_is_resolved(ctx: Ctx) {
    let (mut raw, mut sub) = raw_pub_and_sub(&ctx, "alias", "alias/#").await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"alias/t",
        None,
        Some(&alias_prop(1)),
        b"one",
    ))
    .await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"",
        None,
        Some(&alias_prop(1)),
        b"two",
    ))
    .await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"alias/u",
        None,
        Some(&alias_prop(1)),
        b"three",
    ))
    .await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"",
        None,
        Some(&alias_prop(1)),
        b"four",
    ))
    .await;
    let got: Vec<(String, String)> = sub
        .recv_n(4, "aliased")
        .await
        .into_iter()
        .map(|m| (m.topic.clone(), m.text().to_string()))
        .collect();
    let want = [
        ("alias/t", "one"),
        ("alias/t", "two"),
        ("alias/u", "three"),
        ("alias/u", "four"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

/// [MQTT-3.3.2-8]: topic alias 0 is a protocol error: DISCONNECT 0x94 (Topic Alias invalid).
async fn topic_alias_0_is_refused_with_0x94(ctx: Ctx) {
    let (mut raw, mut sub) = raw_pub_and_sub(&ctx, "alias0", "a0/#").await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"a0/t",
        None,
        Some(&alias_prop(0)),
        b"x",
    ))
    .await;
    assert_disconnect(&mut raw, ReasonCode::TopicAliasInvalid, "alias 0").await;
    sub.expect_none(QUIET, "refused message not forwarded")
        .await;
}

/// [MQTT-3.3.2-9]: an alias above the Topic Alias Maximum sent in CONNACK: DISCONNECT 0x94.
async fn topic_alias_above_maximum_is_refused_with_0x94(ctx: Ctx) {
    let (p, _) = ctx.pair_ids("aliasmax");
    let (mut raw, ack) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    let max = ack.properties.topic_alias_maximum.unwrap_or(0);
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"am/t",
        None,
        Some(&alias_prop(max + 1)),
        b"x",
    ))
    .await;
    assert_disconnect(
        &mut raw,
        ReasonCode::TopicAliasInvalid,
        "alias above maximum",
    )
    .await;
}

/// [MQTT-3.3.4-*] v5 3.3.2.3.4: an empty topic with an alias that has no mapping is a
/// protocol error (0x82).
async fn empty_topic_without_alias_mapping_is_a_protocol_error(ctx: Ctx) {
    let (mut raw, _sub) = raw_pub_and_sub(&ctx, "nomap", "nm/#").await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"",
        None,
        Some(&alias_prop(1)),
        b"x",
    ))
    .await;
    assert_disconnect(&mut raw, ReasonCode::ProtocolError, "unmapped alias").await;
}

/// [MQTT-3.2.2-17]/[MQTT-3.3.2-10]: no Topic Alias to a client whose maximum is 0 (absent).
async fn no_outbound_alias_when_client_allows_none(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("noalias");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("na/t", 1).await;
    let publ = ctx.client(&p).await;
    for i in 0..3 {
        publ.publish("na/t", 1, false, i.to_string()).await;
    }
    for m in sub.recv_n(3, "no alias").await {
        assert_eq!(m.props.unwrap_or_default().topic_alias, None);
        assert_eq!(m.topic, "na/t");
    }
}

/// [MQTT-3.3.2-10]: outbound aliases never exceed the client's Topic Alias Maximum; every
/// PUBLISH resolves to the right topic.
async fn outbound_aliases_stay_within_client_maximum(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("outalias");
    let mut c = connect_packet(ProtocolVersion::V5, &s, true);
    c.properties.topic_alias_maximum = Some(2);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "oa/#", 0)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    let topics = ["oa/a", "oa/b", "oa/c", "oa/a", "oa/b", "oa/c", "oa/a"];
    for (i, t) in topics.iter().enumerate() {
        publ.publish(t, 0, false, i.to_string()).await;
    }
    let mut map: HashMap<u16, String> = HashMap::new();
    for t in topics {
        let m = raw.expect_publish("aliased delivery").await;
        let resolved = match m.properties.topic_alias {
            Some(a) => {
                assert!((1..=2).contains(&a), "alias {a} outside 1..=2");
                if !m.topic.as_str().is_empty() {
                    map.insert(a, m.topic.as_str().to_string());
                }
                map.get(&a).cloned().expect("alias used before being set")
            }
            None => m.topic.as_str().to_string(),
        };
        assert_eq!(resolved, t);
    }
}

/// [MQTT-3.3.2-5]: an expired message is not delivered; [MQTT-3.3.2-6]: the forwarded
/// Message Expiry Interval is the received value minus the time waited.
async fn expired_messages_are_dropped_and_remaining_time_forwarded(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("expiry");
    let o = ctx.opts(&s).persistent(300);
    let mut sub = Client::connect(o.clone()).await;
    sub.subscribe("exp/#", 1).await;
    sub.disconnect().await;
    let mut publ = ctx.client(&p).await;
    for (t, e) in [("exp/short", 1u32), ("exp/long", 100)] {
        let props = PublishProperties {
            message_expiry_interval: Some(e),
            ..Default::default()
        };
        publ.v5()
            .publish_with_properties(t, Q5::AtLeastOnce, false, Bytes::from_static(b"x"), props)
            .await
            .unwrap();
        publ.wait_acked(1).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await; // expiry needs time to pass
    let mut back = Client::connect(o).await;
    let m = back.recv("long-lived message").await;
    assert_eq!(m.topic, "exp/long");
    let left = m
        .props
        .unwrap_or_default()
        .message_expiry_interval
        .expect("remaining expiry forwarded");
    assert!(
        (90..=98).contains(&left),
        "remaining expiry {left}, expected about 100 - 2"
    );
    back.expect_none(QUIET, "expired message dropped").await;
}

/// [MQTT-3.3.2-4], [MQTT-3.3.2-15]..[MQTT-3.3.2-20]: payload format indicator, response
/// topic, correlation data, user properties (in order) and content type are forwarded.
async fn publish_properties_are_forwarded_unaltered(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("props");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("props/t", 1).await;
    let publ = ctx.client(&p).await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        user_properties: vec![
            ("k".into(), "2".into()),
            ("a".into(), "1".into()),
            ("k".into(), "1".into()),
        ],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publ.v5()
        .publish_with_properties(
            "props/t",
            Q5::AtLeastOnce,
            false,
            Bytes::from_static(b"hello"),
            props.clone(),
        )
        .await
        .unwrap();
    let got = sub.recv("with properties").await.props.expect("properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(
        got.user_properties, props.user_properties,
        "user properties in order"
    );
    assert_eq!(got.content_type, props.content_type);
}

/// [MQTT-3.1.2-24]: the server MUST NOT send packets over the client's Maximum Packet Size
/// (it discards them [MQTT-3.1.2-25]).
async fn messages_over_client_maximum_packet_size_are_not_sent(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("maxpkt");
    let mut o = ctx.opts(&s);
    o.max_packet_size = Some(200);
    let mut sub = Client::connect(o).await;
    sub.subscribe("mp/t", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("mp/t", 1, false, vec![b'x'; 1000]).await;
    publ.publish("mp/t", 1, false, "small").await;
    assert_eq!(sub.recv("small one delivered").await.text(), "small");
    sub.expect_none(QUIET, "large one discarded").await;
}

/// [MQTT-3.3.4-9]: the server MUST NOT send more unacknowledged QoS 1/2 PUBLISH packets than
/// the client's Receive Maximum.
async fn broker_honours_client_receive_maximum(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rmax");
    let mut c = connect_packet(ProtocolVersion::V5, &s, true);
    c.properties.receive_maximum = Some(2);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "rm/t", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    for i in 0..5 {
        publ.publish("rm/t", 1, false, i.to_string()).await;
    }
    let a = raw.expect_publish("1st").await;
    let _b = raw.expect_publish("2nd").await;
    raw.expect_silence(QUIET, "window of 2 full").await;
    raw.send(&Packet::PubAck(resp(a.packet_id.unwrap().get())))
        .await;
    let c = raw.expect_publish("3rd after one ack").await;
    assert_eq!(&c.payload[..], b"2");
    raw.expect_silence(QUIET, "window full again").await;
}

/// [MQTT-3.3.4-8] v5 3.3.4: more unacknowledged QoS 2 PUBLISH than the server's Receive
/// Maximum: DISCONNECT 0x93.
async fn client_exceeding_receive_maximum_gets_0x93(ctx: Ctx) {
    let broker = Broker::start_with(ctx.shards(), |c| c.receive_maximum = 2);
    let (mut raw, ack) = Raw::connect(broker.addr, ProtocolVersion::V5, "greedy", true).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=3u16 {
        raw.send_bytes(&bytes_of::publish(0x34, b"rm/x", Some(id), Some(&[]), b"x"))
            .await;
    }
    let got = raw.expect_closed(WAIT, "receive maximum exceeded").await;
    let last = got.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    assert_eq!(
        last,
        Some(ReasonCode::ReceiveMaximumExceeded),
        "got {got:?}"
    );
}

/// v5 4.8.2: a shared subscription delivers each message to exactly one member; members on
/// every shard take part.
async fn shared_subscription_delivers_each_message_to_one_member(ctx: Ctx) {
    let ids = spread_ids("share", 5, ctx.shards());
    let mut members = Vec::new();
    for id in &ids[1..] {
        let mut m = ctx.client(id).await;
        m.subscribe("$share/g/sh/#", 1).await;
        members.push(m);
    }
    let mut plain = ctx.client("share-plain").await;
    plain.subscribe("sh/#", 1).await;
    let publ = ctx.client(&ids[0]).await;
    const N: usize = 40;
    for i in 0..N {
        publ.publish(&format!("sh/{i}"), 1, false, i.to_string())
            .await;
    }
    assert_eq!(plain.recv_n(N, "plain subscriber gets all").await.len(), N);
    let mut seen = Vec::new();
    let mut per_member = Vec::new();
    for m in members.iter_mut() {
        let mut n = 0;
        while let Some(msg) = m.recv_within(Duration::from_millis(300)).await {
            seen.push(msg.text().to_string());
            n += 1;
        }
        per_member.push(n);
    }
    seen.sort_by_key(|s| s.parse::<usize>().unwrap());
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(seen, want, "each message to exactly one member");
    assert!(
        per_member.iter().all(|&n| n > 0),
        "round robin reaches every member: {per_member:?}"
    );
}

/// [MQTT-3.3.2-*] v5 3.3.2.3.2: payload format indicator 1 with a payload that is not UTF-8:
/// PUBACK 0x99 (Payload format invalid) or DISCONNECT 0x99; not forwarded.
async fn invalid_utf8_with_payload_format_indicator_is_refused(ctx: Ctx) {
    let (mut raw, mut sub) = raw_pub_and_sub(&ctx, "pfi", "pfi/#").await;
    raw.send_bytes(&bytes_of::publish(
        0x32,
        b"pfi/t",
        Some(1),
        Some(&[0x01, 0x01]),
        &[0xff, 0xfe],
    ))
    .await;
    match raw.recv(WAIT).await {
        RawEv::Packet(Packet::PubAck(a)) => assert_eq!(a.reason, ReasonCode::PayloadFormatInvalid),
        RawEv::Packet(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::PayloadFormatInvalid)
        }
        other => panic!("expected PUBACK/DISCONNECT 0x99, got {other:?}"),
    }
    sub.expect_none(QUIET, "invalid payload not forwarded")
        .await;
}

async fn assert_disconnect(raw: &mut Raw, reason: ReasonCode, what: &str) {
    let got = raw.expect_closed(WAIT, what).await;
    match got.last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason, "{what}"),
        other => panic!("{what}: expected DISCONNECT {reason:?}, got {other:?}"),
    }
}

/// [MQTT-3.3.2-7]: alias mappings belong to one connection; a new connection starts empty.
async fn topic_alias_mappings_end_with_the_connection(ctx: Ctx) {
    let (p, _) = ctx.pair_ids("aliasconn");
    let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"ac/t",
        None,
        Some(&alias_prop(1)),
        b"x",
    ))
    .await;
    drop(raw);
    let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    raw.send_bytes(&bytes_of::publish(
        0x30,
        b"",
        None,
        Some(&alias_prop(1)),
        b"y",
    ))
    .await;
    assert_disconnect(
        &mut raw,
        ReasonCode::ProtocolError,
        "alias from an old connection",
    )
    .await;
}

/// [MQTT-3.3.2-14]: the Response Topic is a topic name: no wildcards.
async fn response_topic_with_wildcard_is_refused(ctx: Ctx) {
    let (p, _) = ctx.pair_ids("resptopic");
    let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    let mut props = vec![0x08];
    props.extend(bytes_of::s(b"reply/#"));
    raw.send_bytes(&bytes_of::publish(0x30, b"rt/t", None, Some(&props), b"x"))
        .await;
    let got = raw.expect_closed(WAIT, "wildcard response topic").await;
    let reason = got.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    });
    if let Some(r) = reason {
        assert!(
            [
                ReasonCode::MalformedPacket,
                ReasonCode::ProtocolError,
                ReasonCode::TopicNameInvalid
            ]
            .contains(&r),
            "got {r:?}"
        );
    }
}

/// [MQTT-3.3.2-19] / [MQTT-1.5.4-1]: Content Type is a UTF-8 string; ill-formed is malformed.
async fn invalid_utf8_content_type_is_malformed(ctx: Ctx) {
    let (p, _) = ctx.pair_ids("ctype");
    let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &p, true).await;
    let mut props = vec![0x03];
    props.extend(bytes_of::s(&[b't', 0xFF]));
    raw.send_bytes(&bytes_of::publish(0x30, b"ct/t", None, Some(&props), b"x"))
        .await;
    assert_disconnect(
        &mut raw,
        ReasonCode::MalformedPacket,
        "invalid UTF-8 content type",
    )
    .await;
}

/// [MQTT-3.3.4-10], [MQTT-4.9.0-3]: with the client's receive window full the server still
/// sends QoS 0 messages and other packets (PINGRESP).
async fn qos0_and_pingresp_flow_while_receive_window_is_full(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("window");
    let mut c = connect_packet(ProtocolVersion::V5, &s, true);
    c.properties.receive_maximum = Some(1);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "win/#", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    publ.publish("win/q1", 1, false, "fills the window").await;
    publ.publish("win/q1", 1, false, "waits").await;
    let first = raw.expect_publish("window of 1").await;
    assert_eq!(&first.payload[..], b"fills the window");
    publ.publish("win/q0", 0, false, "qos0").await;
    let m = raw.expect_publish("QoS 0 despite a full window").await;
    assert_eq!(&m.payload[..], b"qos0");
    raw.send(&Packet::PingReq).await;
    match raw.recv(WAIT).await {
        RawEv::Packet(Packet::PingResp) => {}
        other => panic!("PINGRESP despite a full window, got {other:?}"),
    }
}

/// [MQTT-4.8.2-3]: a shared subscription delivers at the member's granted QoS.
async fn shared_subscription_delivers_at_member_granted_qos(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("shareq");
    let mut member = ctx.client(&s).await;
    member.subscribe("$share/q/shq/t", 0).await;
    let publ = ctx.client(&p).await;
    publ.publish("shq/t", 2, false, "x").await;
    assert_eq!(member.recv("shared delivery").await.qos, 0);
}

/// [MQTT-4.8.2-1], [MQTT-4.8.2-2]: a ShareName is non-empty, has no `/ + #`, and a filter
/// follows it; otherwise the subscription is refused (SUBACK 0x8F, or malformed/protocol error).
async fn invalid_share_names_are_refused(ctx: Ctx) {
    for (i, f) in ["$share//t", "$share/g+/t", "$share/g#/t", "$share/g"]
        .into_iter()
        .enumerate()
    {
        let id = format!("sharename{i}");
        let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, &id, true).await;
        raw.send_bytes(&bytes_of::subscribe(0x82, 1, f.as_bytes(), 1, true))
            .await;
        match raw.recv(WAIT).await {
            RawEv::Packet(Packet::SubAck(a)) => assert!(
                a.reasons[0] as u8 >= 0x80,
                "{f}: refused, got {:?}",
                a.reasons
            ),
            RawEv::Packet(Packet::Disconnect(d)) => assert!(
                [
                    ReasonCode::MalformedPacket,
                    ReasonCode::ProtocolError,
                    ReasonCode::TopicFilterInvalid
                ]
                .contains(&d.reason),
                "{f}: {d:?}"
            ),
            RawEv::Closed => {}
            other => panic!("{f}: expected refusal, got {other:?}"),
        }
    }
}

/// [MQTT-3.1.2-29]: Request Problem Information 0: no Reason String or User Property on any
/// packet but CONNACK / DISCONNECT (here: the PUBACK refusing an invalid payload).
async fn no_reason_string_when_problem_information_is_off(ctx: Ctx) {
    let (p, _) = ctx.pair_ids("noproblem");
    let mut c = connect_packet(ProtocolVersion::V5, &p, true);
    c.properties.request_problem_information = Some(false);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c).await;
    raw.send_bytes(&bytes_of::publish(
        0x32,
        b"np/t",
        Some(1),
        Some(&[0x01, 0x01]),
        &[0xff],
    ))
    .await;
    match raw.recv(WAIT).await {
        RawEv::Packet(Packet::PubAck(a)) => {
            assert_eq!(a.properties.reason_string, None);
            assert!(a.properties.user_properties.is_empty());
        }
        RawEv::Packet(Packet::Disconnect(_)) | RawEv::Closed => {} // allowed on DISCONNECT
        other => panic!("expected PUBACK or DISCONNECT, got {other:?}"),
    }
}
