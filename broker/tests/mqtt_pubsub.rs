//! Publish/subscribe with clients we did not write (rumqttc v4 and v5), on 1 and 2 shards, with
//! publisher and subscriber on different home shards: QoS 0/1/2 both directions, QoS
//! downgrade, ordering per topic, wildcards, `$`-topics, overlapping subscriptions, unsubscribe.
#[macro_use]
mod common;

use common::raw::{bytes_of, resp, version};
use common::*;
use ringmq_codec::{Packet, ReasonCode};

matrix! {
    fn qos_0_1_2_delivered_at_min_of_publish_and_granted;
    fn subscriber_qos_0_downgrades_every_message;
    fn suback_grants_requested_qos;
    fn messages_stay_in_order_per_topic;
    fn plus_wildcard_matches_one_level;
    fn hash_wildcard_matches_parent_and_children;
    fn dollar_topics_not_matched_by_first_level_wildcards;
    fn overlapping_subscriptions_deliver_once_at_max_qos;
    fn unsubscribe_stops_delivery;
    fn publish_to_topic_without_subscribers_is_acked;
    fn many_publishers_on_every_shard_reach_one_subscriber;
    fn topic_matching_is_case_sensitive_and_exact;
    fn one_subscribe_with_many_filters_gets_one_suback_in_order;
    fn inbound_dup_flag_is_not_propagated;
    fn qos1_packet_id_reused_after_puback_is_a_new_message;
    fn qos2_duplicate_before_pubrel_is_delivered_once;
    fn publish_right_after_suback_is_delivered;
    fn bom_is_part_of_the_topic;
    fn acks_are_sent_in_publish_order;
    fn one_unsubscribe_with_many_filters_gets_one_unsuback;
    fn fan_out_reaches_every_subscriber_on_every_shard;
    fn outbound_packet_ids_are_unique_while_in_flight;
    fn packets_split_byte_by_byte_or_coalesced_are_framed;
}

/// [MQTT-3.8.4-8] (v5) / 3.1.1 §3.8.4: delivered QoS = min(published QoS, granted QoS);
/// [MQTT-4.3.2-1], [MQTT-4.3.3-1]: QoS 1 and 2 flows complete in both directions.
async fn qos_0_1_2_delivered_at_min_of_publish_and_granted(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("qos");
    let mut sub2 = ctx.client(&s).await;
    assert_eq!(sub2.subscribe("qos/t", 2).await, vec![2]);
    let mut sub1 = ctx.client(&format!("{s}-1")).await;
    assert_eq!(sub1.subscribe("qos/t", 1).await, vec![1]);
    let mut publ = ctx.client(&p).await;
    for q in 0..=2u8 {
        publ.publish("qos/t", q, false, format!("m{q}")).await;
        if q > 0 {
            publ.wait_acked(q).await;
        }
        let m = sub2.recv("sub QoS 2").await;
        assert_eq!(
            (m.topic.as_str(), m.text(), m.qos, m.retain),
            ("qos/t", format!("m{q}").as_str(), q, false)
        );
        let m = sub1.recv("sub QoS 1").await;
        assert_eq!((m.text(), m.qos), (format!("m{q}").as_str(), q.min(1)));
    }
    sub2.expect_none(QUIET, "exactly once").await;
    sub1.expect_none(QUIET, "no duplicates").await;
}

async fn subscriber_qos_0_downgrades_every_message(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("down");
    let mut sub = ctx.client(&s).await;
    assert_eq!(sub.subscribe("down/#", 0).await, vec![0]);
    let publ = ctx.client(&p).await;
    for q in [2u8, 1, 0] {
        publ.publish(&format!("down/{q}"), q, false, "x").await;
        let m = sub.recv("downgraded").await;
        assert_eq!(
            (m.topic, m.qos, m.dup),
            (format!("down/{q}"), 0, false),
            "[MQTT-3.3.1-2] DUP 0 at QoS 0"
        );
    }
}

/// [MQTT-3.8.4-1] SUBACK with the same packet id; [MQTT-3.9.3-1] one code per filter in order.
async fn suback_grants_requested_qos(ctx: Ctx) {
    let mut c = ctx.client("granted").await;
    for q in 0..=2u8 {
        assert_eq!(c.subscribe(&format!("g/{q}"), q).await, vec![q]);
    }
}

/// [MQTT-4.6.0-5] (3.1.1: [MQTT-4.6.0-6]): every topic is an ordered topic by default.
async fn messages_stay_in_order_per_topic(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("order");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("order/#", 2).await;
    let publ = ctx.client(&p).await;
    const N: usize = 200;
    for i in 0..N {
        let q = (i % 3) as u8;
        publ.publish(&format!("order/{}", q), q, false, i.to_string())
            .await;
    }
    let mut last = [None::<usize>; 3];
    for m in sub.recv_n(N, "ordered stream").await {
        let i: usize = m.text().parse().unwrap();
        let lane = i % 3;
        if let Some(prev) = last[lane] {
            assert!(i > prev, "topic order/{lane}: {i} after {prev}");
        }
        last[lane] = Some(i);
    }
}

/// [MQTT-4.7.1-2]: `+` matches exactly one level (including an empty one).
async fn plus_wildcard_matches_one_level(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("plus");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("a/+/c", 1).await;
    let publ = ctx.client(&p).await;
    for t in ["a/b/c", "a//c", "a/b/c/d", "a/c", "x/b/c"] {
        publ.publish(t, 1, false, t).await;
    }
    let got: Vec<String> = sub
        .recv_n(2, "a/+/c")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(got, vec!["a/b/c", "a//c"]);
    sub.expect_none(QUIET, "non-matching topics").await;
}

/// [MQTT-4.7.1-1]: `#` matches the parent level and any number of children.
async fn hash_wildcard_matches_parent_and_children(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("hash");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("sport/#", 1).await;
    let publ = ctx.client(&p).await;
    for t in [
        "sport",
        "sport/tennis",
        "sport/tennis/player1/score",
        "sports",
        "other/sport",
    ] {
        publ.publish(t, 1, false, t).await;
    }
    let got: Vec<String> = sub
        .recv_n(3, "sport/#")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        got,
        vec!["sport", "sport/tennis", "sport/tennis/player1/score"]
    );
    sub.expect_none(QUIET, "non-matching topics").await;
}

/// [MQTT-4.7.2-1]: `#` and `+/...` do not match topics starting with `$`; `$foo/#` does.
async fn dollar_topics_not_matched_by_first_level_wildcards(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("dollar");
    let mut all = ctx.client(&s).await;
    all.subscribe("#", 1).await;
    all.subscribe("+/x", 1).await;
    let mut dollar = ctx.client(&format!("{s}-d")).await;
    dollar.subscribe("$test/#", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("$test/x", 1, false, "d").await;
    publ.publish("plain/x", 1, false, "p").await;
    let m = dollar.recv("$test/# matches $test/x").await;
    assert_eq!(m.topic, "$test/x");
    let m = all.recv("# matches plain/x").await;
    assert_eq!(m.topic, "plain/x");
    all.expect_none(QUIET, "no $-topic through # or +/x").await;
}

/// [MQTT-3.3.4-2] (v5) / [MQTT-3.3.5-1] (3.1.1): overlapping subscriptions of one client: the
/// message is delivered (v5: at least once, 3.1.1: once) with the maximum QoS of the matches.
async fn overlapping_subscriptions_deliver_once_at_max_qos(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("overlap");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("ov/#", 0).await;
    sub.subscribe("ov/+", 2).await;
    let publ = ctx.client(&p).await;
    publ.publish("ov/x", 2, false, "x").await;
    let m = sub.recv("overlap").await;
    assert_eq!(m.qos, 2, "delivered at the max granted QoS");
    if ctx.proto == Proto::V4 {
        sub.expect_none(QUIET, "3.1.1 delivers once").await;
    }
}

/// [MQTT-3.10.4-2]: after UNSUBACK no new messages for that filter; [MQTT-3.10.4-5] UNSUBACK
/// also when nothing matched.
async fn unsubscribe_stops_delivery(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("unsub");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("u/t", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("u/t", 1, false, "before").await;
    assert_eq!(sub.recv("before unsubscribe").await.text(), "before");
    sub.unsubscribe("u/t").await;
    sub.unsubscribe("u/never-subscribed").await;
    publ.publish("u/t", 1, false, "after").await;
    sub.expect_none(QUIET, "unsubscribed").await;
}

/// [MQTT-4.3.2-1]/[MQTT-4.3.3-1]: the publisher's flow completes with no subscriber at all.
async fn publish_to_topic_without_subscribers_is_acked(ctx: Ctx) {
    let mut publ = ctx.client("lonely").await;
    publ.publish("nobody/listens", 1, false, "x").await;
    publ.wait_acked(1).await;
    publ.publish("nobody/listens", 2, false, "x").await;
    publ.wait_acked(2).await;
}

/// Publishers homed on every shard reach one subscriber (cross-shard routing).
async fn many_publishers_on_every_shard_reach_one_subscriber(ctx: Ctx) {
    let ids = spread_ids("fanin", 5, ctx.shards());
    let mut sub = ctx.client(&ids[0]).await;
    sub.subscribe("fanin/+", 1).await;
    let mut pubs = Vec::new();
    for id in &ids[1..] {
        pubs.push(ctx.client(id).await);
    }
    for (i, p) in pubs.iter().enumerate() {
        p.publish(&format!("fanin/{i}"), 1, false, i.to_string())
            .await;
    }
    let mut got: Vec<String> = sub
        .recv_n(pubs.len(), "one per publisher")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    got.sort();
    assert_eq!(
        got,
        (0..pubs.len())
            .map(|i| format!("fanin/{i}"))
            .collect::<Vec<_>>()
    );
}

/// [MQTT-4.7.3-4]: no normalisation: matching is byte for byte, case sensitive.
async fn topic_matching_is_case_sensitive_and_exact(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("case");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("Case/Topic", 1).await;
    let publ = ctx.client(&p).await;
    for t in ["case/topic", "Case/Topic/", "Case/Topic ", "Case/Topic"] {
        publ.publish(t, 1, false, t).await;
    }
    assert_eq!(sub.recv("exact match").await.topic, "Case/Topic");
    sub.expect_none(QUIET, "no other spelling matches").await;
}

/// [MQTT-3.8.4-4], [MQTT-3.8.4-5] (3.1.1) / [MQTT-3.8.4-5]..[MQTT-3.8.4-7]: several filters
/// in one SUBSCRIBE: one SUBACK, one code per filter, in order.
async fn one_subscribe_with_many_filters_gets_one_suback_in_order(ctx: Ctx) {
    let v5 = ctx.proto == Proto::V5;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), "multi", true).await;
    let mut body = vec![0, 42];
    if v5 {
        body.push(0);
    }
    for (f, q) in [("m/2", 2u8), ("m/0", 0), ("m/1", 1)] {
        body.extend(bytes_of::s(f.as_bytes()));
        body.push(q);
    }
    raw.send_bytes(&bytes_of::frame(0x82, &body)).await;
    match raw.expect_packet("one SUBACK").await {
        Packet::SubAck(a) => {
            assert_eq!(a.packet_id.get(), 42, "[MQTT-3.8.4-2] same packet id");
            let want = [
                ReasonCode::GrantedQoS2,
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
            ];
            assert_eq!(a.reasons, want);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    raw.expect_silence(QUIET, "a single SUBACK").await;
}

/// [MQTT-3.3.1-3]: the DUP flag of an outgoing PUBLISH is independent of the incoming one.
async fn inbound_dup_flag_is_not_propagated(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("dupin");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("dupin/t", 1).await;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &p, true).await;
    let props: Option<&[u8]> = (ctx.proto == Proto::V5).then_some(&[]);
    raw.send_bytes(&bytes_of::publish(0x3A, b"dupin/t", Some(3), props, b"d"))
        .await;
    assert!(
        matches!(raw.expect_packet("PUBACK").await, Packet::PubAck(a) if a.packet_id.get() == 3)
    );
    let m = sub.recv("forwarded").await;
    assert!(!m.dup, "DUP set by the publisher is not forwarded");
}

/// [MQTT-4.3.2-2] (3.1.1) / [MQTT-4.3.2-5]: after sending PUBACK the receiver treats a
/// PUBLISH with the same packet id as a new publication.
async fn qos1_packet_id_reused_after_puback_is_a_new_message(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("reuse");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("reuse/t", 1).await;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &p, true).await;
    let props: Option<&[u8]> = (ctx.proto == Proto::V5).then_some(&[]);
    for payload in [&b"one"[..], b"two"] {
        raw.send_bytes(&bytes_of::publish(
            0x32,
            b"reuse/t",
            Some(9),
            props,
            payload,
        ))
        .await;
        match raw.expect_packet("PUBACK").await {
            Packet::PubAck(a) => assert_eq!(a.packet_id.get(), 9, "[MQTT-2.3.1-6] same packet id"),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let got: Vec<String> = sub
        .recv_n(2, "both")
        .await
        .iter()
        .map(|m| m.text().to_string())
        .collect();
    assert_eq!(got, ["one", "two"]);
}

/// [MQTT-4.3.3-2] (3.1.1) / [MQTT-4.3.3-10]: until PUBREL, a re-sent QoS 2 PUBLISH with the
/// same id is acknowledged with PUBREC but not delivered again; PUBREL gets PUBCOMP.
async fn qos2_duplicate_before_pubrel_is_delivered_once(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("once");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("once/t", 2).await;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &p, true).await;
    let props: Option<&[u8]> = (ctx.proto == Proto::V5).then_some(&[]);
    for first in [0x34u8, 0x3C] {
        raw.send_bytes(&bytes_of::publish(first, b"once/t", Some(11), props, b"x"))
            .await;
        match raw.expect_packet("PUBREC").await {
            Packet::PubRec(r) => assert_eq!(r.packet_id.get(), 11),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    raw.send(&Packet::PubRel(resp(11))).await;
    match raw.expect_packet("PUBCOMP").await {
        Packet::PubComp(c) => assert_eq!(c.packet_id.get(), 11),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    sub.recv("delivered").await;
    sub.expect_none(QUIET, "exactly once").await;
}

/// [MQTT-4.5.0-1]: once the SUBACK is sent the subscription exists: a message published right
/// after it (from a client on another shard) is added to the subscriber's session.
async fn publish_right_after_suback_is_delivered(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("race");
    let mut sub = ctx.client(&s).await;
    let mut publ = ctx.client(&p).await;
    for i in 0..30 {
        let topic = format!("race/{i}");
        sub.subscribe(&topic, 1).await;
        publ.publish(&topic, 1, false, i.to_string()).await;
        publ.wait_acked(1).await;
        let m = sub
            .recv(&format!("published right after SUBACK #{i}"))
            .await;
        assert_eq!(m.topic, topic);
    }
}

/// [MQTT-1.5.4-3] ([MQTT-1.5.3-3] (3.1.1)): a leading U+FEFF is part of the string: not
/// skipped or stripped.
async fn bom_is_part_of_the_topic(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("bom");
    let mut with = ctx.client(&s).await;
    with.subscribe("\u{FEFF}bom/t", 1).await;
    let mut without = ctx.client(&format!("{s}-plain")).await;
    without.subscribe("bom/t", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("\u{FEFF}bom/t", 1, false, "b").await;
    assert_eq!(with.recv("BOM topic").await.topic, "\u{FEFF}bom/t");
    without.expect_none(QUIET, "BOM not stripped").await;
}

/// [MQTT-4.6.0-2], [MQTT-4.6.0-3]: PUBACK and PUBREC go out in the order of the PUBLISH
/// packets they acknowledge.
async fn acks_are_sent_in_publish_order(ctx: Ctx) {
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), "acker", true).await;
    let props: Option<&[u8]> = (ctx.proto == Proto::V5).then_some(&[]);
    let mut burst = Vec::new();
    for id in 1..=10u16 {
        let first = if id % 2 == 0 { 0x34 } else { 0x32 };
        burst.extend(bytes_of::publish(first, b"acks/t", Some(id), props, b"x"));
    }
    raw.send_bytes(&burst).await;
    for id in 1..=10u16 {
        match raw.expect_packet("ack").await {
            Packet::PubAck(a) if id % 2 == 1 => assert_eq!(a.packet_id.get(), id),
            Packet::PubRec(r) if id % 2 == 0 => assert_eq!(r.packet_id.get(), id),
            other => panic!("ack #{id} out of order: {other:?}"),
        }
    }
}

/// [MQTT-3.10.4-6] (3.1.1 and v5): several filters in one UNSUBSCRIBE: one UNSUBACK (v5: one
/// reason per filter, 0x11 where none existed).
async fn one_unsubscribe_with_many_filters_gets_one_unsuback(ctx: Ctx) {
    let v5 = ctx.proto == Proto::V5;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), "unsub-many", true).await;
    raw.send(&Packet::Subscribe(common::raw::subscribe_packet(
        1, "um/a", 1,
    )))
    .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let mut body = vec![0, 7];
    if v5 {
        body.push(0);
    }
    body.extend(bytes_of::s(b"um/a"));
    body.extend(bytes_of::s(b"um/none"));
    raw.send_bytes(&bytes_of::frame(0xA2, &body)).await;
    match raw.expect_packet("UNSUBACK").await {
        Packet::UnsubAck(a) => {
            assert_eq!(a.packet_id.get(), 7);
            if v5 {
                assert_eq!(
                    a.reasons,
                    [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
                );
            }
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    raw.expect_silence(QUIET, "a single UNSUBACK").await;
}

/// [MQTT-4.5.0-1]: one PUBLISH is added to the session of every matching subscriber, wherever
/// their sessions live.
async fn fan_out_reaches_every_subscriber_on_every_shard(ctx: Ctx) {
    let ids = spread_ids("fan", 21, ctx.shards());
    let mut subs = Vec::new();
    for id in &ids[1..] {
        let mut c = ctx.client(id).await;
        c.subscribe("fan/+/t", 1).await;
        subs.push(c);
    }
    let publ = ctx.client(&ids[0]).await;
    for i in 0..5 {
        publ.publish(&format!("fan/{i}/t"), 1, false, i.to_string())
            .await;
    }
    for s in subs.iter_mut() {
        let got: Vec<String> = s
            .recv_n(5, "fan-out")
            .await
            .iter()
            .map(|m| m.text().to_string())
            .collect();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
    }
}

/// [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-2]): the server's QoS 1/2 PUBLISH packets in flight
/// carry distinct non-zero packet identifiers.
async fn outbound_packet_ids_are_unique_while_in_flight(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("pids");
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &s, true).await;
    raw.send(&Packet::Subscribe(common::raw::subscribe_packet(
        1, "pids/#", 2,
    )))
    .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    for i in 0..20u8 {
        publ.publish("pids/t", 1 + i % 2, false, vec![i]).await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let m = raw.expect_publish("unacknowledged delivery").await;
        let id = m.packet_id.expect("QoS > 0 has a packet id").get();
        assert!(seen.insert(id), "packet id {id} reused while in flight");
    }
}

/// Framing is the broker's job whatever TCP does: a CONNECT, SUBSCRIBE and PUBLISH sent one
/// byte per write, and then many packets in a single write, are all processed.
async fn packets_split_byte_by_byte_or_coalesced_are_framed(ctx: Ctx) {
    let level = if ctx.proto == Proto::V5 { 5 } else { 4 };
    let v5 = ctx.proto == Proto::V5;
    let props: Option<&[u8]> = v5.then_some(&[]);
    let mut raw = Raw::open(ctx.broker.addr, version(ctx.proto)).await;
    let mut bytes = bytes_of::connect_ok(level, "framing");
    bytes.extend(bytes_of::subscribe(0x82, 1, b"frame/t", 1, v5));
    for b in bytes {
        raw.send_bytes(&[b]).await;
    }
    assert!(matches!(
        raw.expect_packet("CONNACK").await,
        Packet::ConnAck(_)
    ));
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    for b in bytes_of::publish(0x32, b"frame/t", Some(1), props, b"split") {
        raw.send_bytes(&[b]).await;
    }
    let mut burst = Vec::new();
    for i in 2..=21u16 {
        burst.extend(bytes_of::publish(
            0x32,
            b"frame/t",
            Some(i),
            props,
            i.to_string().as_bytes(),
        ));
    }
    raw.send_bytes(&burst).await;
    let mut acks = 0;
    let mut got = Vec::new();
    while acks < 21 || got.len() < 21 {
        match raw.expect_packet("PUBACK or PUBLISH").await {
            Packet::PubAck(_) => acks += 1,
            Packet::Publish(p) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                raw.send(&Packet::PubAck(resp(p.packet_id.unwrap().get())))
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let want: Vec<String> = std::iter::once("split".to_string())
        .chain((2..=21).map(|i: u16| i.to_string()))
        .collect();
    assert_eq!(got, want);
}

/// The harness really puts publisher and subscriber on different home shards with 2 shards.
#[test]
fn harness_pairs_land_on_different_home_shards() {
    for prefix in ["qos", "order", "x", "retained-a"] {
        let (a, b) = cross_shard_ids(prefix, 2);
        assert_ne!(
            ringmq_shard::home_shard(a.as_bytes(), 2),
            ringmq_shard::home_shard(b.as_bytes(), 2)
        );
    }
    let ids = spread_ids("fanin", 4, 2);
    let homes: Vec<usize> = ids
        .iter()
        .map(|i| ringmq_shard::home_shard(i.as_bytes(), 2))
        .collect();
    assert_eq!(homes, [0, 1, 0, 1]);
}
