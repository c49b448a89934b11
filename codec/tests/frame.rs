//! Property test of `PublishFrame`: for any PUBLISH, version, delivery QoS and per-subscriber
//! `Delivery`, the written frame decodes to the expected PUBLISH and `len` is exact.

mod strategy;

use proptest::prelude::*;
use ringmq_codec::bytes::{Bytes, BytesMut};
use ringmq_codec::*;
use strategy::*;

fn delivery_parts() -> impl Strategy<Value = (PacketId, bool, bool, Option<(u16, bool)>, Vec<u32>)>
{
    (
        packet_id(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of((1..=u16::MAX, any::<bool>())),
        proptest::collection::vec(1..=MAX_VAR_INT, 0..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn written_frame_decodes_to_the_expected_publish(
        (v, p) in version().prop_flat_map(|v| (Just(v), publish_with_payload(v, proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from).boxed()))),
        qos in qos(),
        (id, dup, retain, alias, ids) in delivery_parts(),
    ) {
        let mut p = p;
        if p.topic.is_empty() {
            p.topic = TopicName::from_static("resolved/alias");
        }
        let frame = PublishFrame::new(&p, v, qos);
        let d = Delivery { packet_id: Some(id), dup, retain, topic_alias: alias, subscription_ids: &ids };
        let mut out = BytesMut::from(&b"prefix"[..]);
        frame.write(&mut out, &d);
        prop_assert_eq!(out.len() - 6, frame.len(&d));

        let v5 = v.is_v5();
        let mut expected = p.clone();
        expected.qos = qos;
        expected.dup = dup && qos != QoS::AtMostOnce;
        expected.retain = retain;
        expected.packet_id = if qos == QoS::AtMostOnce { None } else { Some(id) };
        if v5 {
            expected.properties.topic_alias = alias.map(|a| a.0);
            expected.properties.subscription_identifiers = ids.iter().copied().collect();
            if let Some((_, false)) = alias {
                expected.topic = TopicName::empty_for_alias();
            }
        } else {
            expected.properties = PublishProperties::default().into();
        }
        let mut dec = Decoder::new(0);
        dec.set_version(v);
        let mut buf = out.split_off(6);
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(Packet::Publish(expected))));
        prop_assert!(buf.is_empty());

        // The accessors read back what was cached.
        prop_assert_eq!(frame.topic(), p.topic.as_str());
        prop_assert_eq!(frame.payload(), p.payload.clone());
        let expiry = if v5 { p.properties.message_expiry_interval } else { None };
        prop_assert_eq!(frame.message_expiry_interval(), expiry);
    }
}
