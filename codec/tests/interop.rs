//! Bytes captured from other implementations (mosquitto 2.0.11: `mosquitto_pub`,
//! `mosquitto_sub` and the broker, on 2026-11-21) must decode to what was sent, and re-encode
//! to the same bytes where the encoding is canonical.

use ringmq_codec::bytes::BytesMut;
use ringmq_codec::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes a whole stream; `version` None = a server reading a client.
fn decode_stream(version: Option<ProtocolVersion>, raw: &[u8]) -> Vec<Packet> {
    let mut d = Decoder::new(0);
    if let Some(v) = version {
        d.set_version(v);
    }
    let mut buf = BytesMut::from(raw);
    let mut out = Vec::new();
    while let Some(p) = d.decode(&mut buf).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

fn reencode(packets: &[Packet], v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.encode(v, &mut out).unwrap();
    }
    out.to_vec()
}

/// `mosquitto_pub -V mqttv31 -i cid31 -t a/b -m hello -r --will-topic w/t --will-payload bye
/// --will-qos 1 -u user -P pw`: CONNECT (MQIsdp), PUBLISH, DISCONNECT.
const MOSQUITTO_PUB_V31: &str = "102700064d514973647003ce003c000563696433310003772f74000362796500047573657200027077310a0003612f6268656c6c6fe000";

/// `mosquitto_pub -V mqttv311 -i cid311 -t a/b -m hello -k 30`.
const MOSQUITTO_PUB_V311: &str =
    "101200044d5154540402001e0006636964333131300a0003612f6268656c6c6fe000";

/// `mosquitto_pub -V mqttv5 -i cid5 -t a/b -m hello -r -D connect session-expiry-interval 120
/// -D connect user-property ck cv -D publish message-expiry-interval 60 -D publish
/// user-property k v -D publish content-type text/plain --will-topic w/t --will-payload bye
/// -D will will-delay-interval 5 -u user`.
const MOSQUITTO_PUB_V5: &str = "103800044d5154540586003c111100000078260002636b000263762100140004636964350518000000050003772f74000362796500047573657231240003612f6219020000003c2600016b00017603000a746578742f706c61696e68656c6c6fe000";

/// `mosquitto_sub -V mqttv311 -i sub4 -t 'a/+' -t '$share/g/x/#' -q 1`: CONNECT, SUBSCRIBE.
const MOSQUITTO_SUB_V311: &str =
    "101000044d5154540402003c000473756234821700010003612f2b01000c2473686172652f672f782f2301";

/// `mosquitto_sub -V mqttv5 -i sub5 -t 'a/+' -t 'b/#' -q 2 -D subscribe
/// subscription-identifier 5 -D subscribe user-property k v`.
const MOSQUITTO_SUB_V5: &str = "101400044d5154540502003c0321001400047375623582180001090b052600016b0001760003612f2b020003622f2302";

/// The mosquitto broker answering a v5 client that subscribed to `a/+` (id 7) and `b/#`,
/// published QoS 1 to `a/x`, unsubscribed `a/+` and `zz`, pinged: CONNACK, SUBACK, PUBLISH,
/// PUBACK, UNSUBACK, PINGRESP.
const MOSQUITTO_BROKER_V5: &str = "200900000622000a21001490050001000102321d0003612f7800010e0b072600016b000176020000001e7061796c6f616440020005b0050002000011d000";

#[test]
fn mosquitto_pub_v31() {
    let raw = hex(MOSQUITTO_PUB_V31);
    let ps = decode_stream(None, &raw);
    let [Packet::Connect(c), Packet::Publish(p), Packet::Disconnect(_)] = &ps[..] else {
        panic!("{ps:?}")
    };
    assert_eq!(c.protocol, ProtocolVersion::V3_1);
    assert_eq!(c.client_id.as_str(), "cid31");
    let will = c.will.as_ref().unwrap();
    assert_eq!(
        (will.topic.as_str(), &will.payload[..], will.qos),
        ("w/t", &b"bye"[..], QoS::AtLeastOnce)
    );
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    assert!(p.retain);
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("a/b", &b"hello"[..]));
    assert_eq!(reencode(&ps, ProtocolVersion::V3_1), raw);
}

#[test]
fn mosquitto_pub_v311() {
    let raw = hex(MOSQUITTO_PUB_V311);
    let ps = decode_stream(None, &raw);
    let [Packet::Connect(c), Packet::Publish(p), Packet::Disconnect(_)] = &ps[..] else {
        panic!("{ps:?}")
    };
    assert_eq!(
        (c.protocol, c.keep_alive, c.clean_start),
        (ProtocolVersion::V3_1_1, 30, true)
    );
    assert_eq!(&p.payload[..], b"hello");
    assert_eq!(reencode(&ps, ProtocolVersion::V3_1_1), raw);
}

#[test]
fn mosquitto_pub_v5() {
    let raw = hex(MOSQUITTO_PUB_V5);
    let ps = decode_stream(None, &raw);
    let [Packet::Connect(c), Packet::Publish(p), Packet::Disconnect(d)] = &ps[..] else {
        panic!("{ps:?}")
    };
    assert_eq!(c.protocol, ProtocolVersion::V5);
    assert_eq!(c.properties.session_expiry_interval, Some(120));
    assert_eq!(c.properties.receive_maximum, Some(20));
    assert_eq!(c.properties.user_properties.len(), 1);
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.properties.will_delay_interval, Some(5));
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(p.properties.message_expiry_interval, Some(60));
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.user_properties[0].0.as_str(), "k");
    assert_eq!(d.reason, ReasonCode::NormalDisconnection);
    // Same fields, our property order: decodes to the same packets.
    let again = decode_stream(None, &reencode(&ps, ProtocolVersion::V5));
    assert_eq!(again, ps);
}

#[test]
fn mosquitto_sub_v311_with_shared_filter() {
    let raw = hex(MOSQUITTO_SUB_V311);
    let ps = decode_stream(None, &raw);
    let [Packet::Connect(_), Packet::Subscribe(s)] = &ps[..] else {
        panic!("{ps:?}")
    };
    assert_eq!(s.filters.len(), 2);
    assert_eq!(s.filters[1].0.shared(), Some(("g", "x/#")));
    assert_eq!(s.filters[0].1.qos, QoS::AtLeastOnce);
    assert_eq!(reencode(&ps, ProtocolVersion::V3_1_1), raw);
}

#[test]
fn mosquitto_sub_v5_with_subscription_identifier() {
    let raw = hex(MOSQUITTO_SUB_V5);
    let ps = decode_stream(None, &raw);
    let [Packet::Connect(_), Packet::Subscribe(s)] = &ps[..] else {
        panic!("{ps:?}")
    };
    assert_eq!(s.properties.subscription_identifier, Some(5));
    assert_eq!(s.properties.user_properties.len(), 1);
    assert_eq!(s.filters[1].0.as_str(), "b/#");
    assert_eq!(s.filters[1].1.qos, QoS::ExactlyOnce);
    assert_eq!(reencode(&ps, ProtocolVersion::V5), raw);
}

#[test]
fn mosquitto_broker_v5_as_seen_by_a_client() {
    let raw = hex(MOSQUITTO_BROKER_V5);
    let ps = decode_stream(Some(ProtocolVersion::V5), &raw);
    let [Packet::ConnAck(ca), Packet::SubAck(sa), Packet::Publish(p), Packet::PubAck(pa), Packet::UnsubAck(ua), Packet::PingResp] =
        &ps[..]
    else {
        panic!("{ps:?}")
    };
    assert_eq!(ca.reason, ReasonCode::Success);
    assert_eq!(ca.properties.topic_alias_maximum, Some(10));
    assert_eq!(ca.properties.receive_maximum, Some(20));
    assert_eq!(
        sa.reasons,
        [ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS2]
    );
    assert_eq!(
        (p.topic.as_str(), p.qos, &p.payload[..]),
        ("a/x", QoS::AtLeastOnce, &b"payload"[..])
    );
    assert_eq!(&p.properties.subscription_identifiers[..], &[7]);
    assert_eq!(p.properties.message_expiry_interval, Some(30));
    assert_eq!(pa.packet_id.get(), 5);
    assert_eq!(
        ua.reasons,
        [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
}
