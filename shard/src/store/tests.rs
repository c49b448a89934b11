//! Encoding properties: every record decodes to what was encoded, and no
//! byte string (truncated, flipped, random) makes a decoder panic.

use bytes::Bytes;
use proptest::prelude::*;
use ringmq_codec::{
    MqttString, PacketId, ProtocolVersion, Publish, PublishProperties, QoS, TopicName,
};

use super::enc::Reader;
use super::message::{put_message, read_message, StoredMessage};
use super::records::{self, OutboundState, SessionRecord};

fn topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9]{1,8}(/[a-z0-9]{0,8}){0,3}".prop_map(|s| TopicName::try_from(s.as_str()).unwrap())
}

fn text() -> impl Strategy<Value = MqttString> {
    "[a-zA-Z0-9 /é]{0,12}".prop_map(|s| MqttString::try_from(s.as_str()).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

prop_compose! {
    fn message()(
        topic in topic(),
        qos in qos(),
        retain: bool,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        format in proptest::option::of(0u8..2),
        expiry in proptest::option::of(any::<u32>()),
        response in proptest::option::of(topic()),
        corr in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        content in proptest::option::of(text()),
        user in proptest::collection::vec((text(), text()), 0..3),
        ids in proptest::collection::vec(1u32..268_435_456, 0..3),
        at: u64,
    ) -> StoredMessage {
        let properties = PublishProperties {
            payload_format_indicator: format,
            message_expiry_interval: expiry,
            topic_alias: None,
            response_topic: response,
            correlation_data: corr.map(Bytes::from),
            content_type: content,
            user_properties: user,
            subscription_identifiers: ids.into_iter().collect(),
        };
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: None,
            properties: properties.into(),
            payload: Bytes::from(payload),
        };
        StoredMessage { publish, received_at_ms: at }
    }
}

#[test]
fn format_1_inbound_rows_read_as_done() {
    let id = PacketId::new(3).unwrap();
    let v1 = records::read_inbound(id, Bytes::from_static(&[1, 0])).unwrap();
    assert_eq!((v1.message, v1.prepared), (None, None));
    let mut buf = Vec::new();
    records::put_inbound(&mut buf, None, None);
    assert_eq!(buf, [2, 0, 0]);
    // A prepared row without its message is refused, never half-read.
    assert!(records::read_inbound(
        id,
        Bytes::from_static(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    )
    .is_err());
}

proptest! {
    #[test]
    fn message_round_trips(m in message()) {
        let mut buf = Vec::new();
        put_message(&mut super::enc::Writer(&mut buf), m.view());
        let back = read_message(&mut Reader::new(Bytes::from(buf))).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn outbound_round_trips(m in message(), id in 1u16.., seq: u64, tag in 0u8..3) {
        let id = PacketId::new(id).unwrap();
        let state = [OutboundState::Queued, OutboundState::AwaitingAck(id),
                     OutboundState::AwaitingPubComp(id)][tag as usize];
        let mut buf = Vec::new();
        records::put_outbound(&mut buf, state, Some(m.view()));
        let back = records::read_outbound(seq, Bytes::from(buf)).unwrap();
        prop_assert_eq!(back.state, state);
        prop_assert_eq!(back.seq, seq);
        prop_assert_eq!(back.message, Some(m));
    }

    #[test]
    fn inbound_round_trips(m in message(), nonce: u64, shards in proptest::collection::vec(0u16..8, 0..4)) {
        let id = PacketId::new(5).unwrap();
        let targets: Vec<records::Target> = shards
            .iter()
            .map(|&shard| records::Target { shard, group: None })
            .collect();
        let mut buf = Vec::new();
        records::put_inbound(&mut buf, Some((nonce, &targets)), Some(m.view()));
        let back = records::read_inbound(id, Bytes::from(buf)).unwrap();
        let p = back.prepared.expect("prepared");
        prop_assert_eq!(p.nonce, nonce);
        prop_assert_eq!(p.targets, targets);
        prop_assert!(p.nodes.is_empty());
        prop_assert_eq!(back.message, Some(m));
    }

    /// Format 3: a prepared row naming other nodes (record V3) reads back whole.
    #[test]
    fn inbound_with_nodes_round_trips(
        m in message(),
        nonce: u64,
        shards in proptest::collection::vec(0u16..8, 0..4),
        nodes in proptest::collection::vec((1u64.., proptest::bool::ANY), 1..4),
    ) {
        let id = PacketId::new(5).unwrap();
        let targets: Vec<records::Target> = shards
            .iter()
            .map(|&shard| records::Target { shard, group: None })
            .collect();
        let group = ringmq_codec::TopicFilter::try_from("$share/g/a/#").unwrap();
        let nodes: Vec<records::NodeTarget> = nodes
            .into_iter()
            .map(|(node, shared)| records::NodeTarget { node, group: shared.then(|| group.clone()) })
            .collect();
        let mut buf = Vec::new();
        records::put_inbound_nodes(&mut buf, Some((nonce, &targets, &nodes)), Some(m.view()));
        let back = records::read_inbound(id, Bytes::from(buf)).unwrap();
        let p = back.prepared.expect("prepared");
        prop_assert_eq!(p.nonce, nonce);
        prop_assert_eq!(p.targets, targets);
        prop_assert_eq!(p.nodes, nodes);
        prop_assert_eq!(back.message, Some(m));
    }

    #[test]
    fn session_round_trips(
        id in text(),
        expiry: u32,
        at in proptest::option::of(1u64..),
        owner in prop_oneof![
            Just(records::Owner::Unknown),
            Just(records::Owner::Anonymous),
            "[a-z%/+# ]{0,12}".prop_map(|u| records::Owner::User(u.into())),
        ],
    ) {
        let s = SessionRecord {
            client_id: id,
            protocol: ProtocolVersion::V3_1_1,
            expiry_interval: expiry,
            disconnected_at_ms: at,
            will: None,
            owner,
        };
        let mut buf = Vec::new();
        records::put_session(&mut buf, &s);
        prop_assert_eq!(records::read_session(Bytes::from(buf)).unwrap(), s);
    }

    #[test]
    fn damaged_records_are_errors_not_panics(
        m in message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        noise in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut buf = Vec::new();
        records::put_retained(&mut buf, 7, Some(m.view()));
        let short = Bytes::copy_from_slice(&buf[..cut.index(buf.len())]);
        let _ = records::read_retained(short);
        let mut flipped = buf.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 0x5A;
        let _ = records::read_retained(Bytes::from(flipped));
        let noise = Bytes::from(noise);
        let _ = records::read_session(noise.clone());
        let _ = records::read_outbound(0, noise.clone());
        let _ = records::read_subscription(b"a/#", noise.clone());
        let _ = records::read_inbound(PacketId::new(1).unwrap(), noise.clone());
        let _ = records::read_retained(noise);
    }
}

#[test]
fn coarse_clock_agrees_with_the_precise_one() {
    // Resolution is one kernel tick; 1 s of slack covers any HZ and a descheduled test thread.
    let (a, b, c) = (super::unix_ms(), super::coarse_unix_ms(), super::unix_ms());
    assert!(b + 1000 >= a && b <= c + 1000, "{a} {b} {c}");
}
