//! Outbound QoS 1/2 messages in flight to a connected subscriber survive SIGKILL with their
//! state (issue 5, `docs/storage.md` "Resuming with DUP and order right"): after the restart a
//! PUBLISH not acknowledged is resent with DUP 1 and its original packet id, in the original
//! order, and a QoS 2 message the subscriber already PUBREC'd is continued with PUBREL, never
//! resent as PUBLISH. `--durability sync`, the real binary, 1 and 2 shards.
#[macro_use]
mod common;

use common::persist::{persistent_connect, publish_acked, qos, subscribe, text, DataDir, Durable};
use common::raw::{publish_packet, resp, version};
use common::{spread_ids, Proto, Raw, QUIET};
use ringmq_codec::{Packet, Publish, SubscriptionOptions};

/// Next packet the subscriber gets (PINGRESP skipped).
async fn next(c: &mut Raw, what: &str) -> Packet {
    c.expect_packet(what).await
}

async fn expect_publish(c: &mut Raw, what: &str) -> Publish {
    match next(c, what).await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH ({what}), got {other:?}"),
    }
}

fn id_of(p: &Publish) -> u16 {
    p.packet_id.expect("QoS > 0 has a packet id").get()
}

async fn inflight_resent_after_kill(proto: Proto, shards: usize) {
    let v = version(proto);
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("inflight", 2, shards);
    let (s_id, p_id) = (&ids[0], &ids[1]);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 300)).await;
    subscribe(
        &mut sub,
        1,
        "f/#",
        SubscriptionOptions::with_qos(qos(2)),
        None,
    )
    .await;
    let (mut publ, _) = Raw::connect(broker.addr, v, p_id, true).await;
    publish_acked(&mut publ, publish_packet("f/a", 1, false, 1, b"a")).await;
    publish_acked(&mut publ, publish_packet("f/b", 2, false, 2, b"b")).await;
    publish_acked(&mut publ, publish_packet("f/c", 2, false, 3, b"c")).await;
    let a = expect_publish(&mut sub, "a").await;
    let b = expect_publish(&mut sub, "b").await;
    let c = expect_publish(&mut sub, "c").await;
    let got: Vec<&str> = [&a, &b, &c].iter().map(|p| text(&p.payload)).collect();
    assert_eq!(got, ["a", "b", "c"], "first deliveries in order");
    // Only b moves on: PUBREC, and the broker answers PUBREL (which we leave unanswered).
    sub.send(&Packet::PubRec(resp(id_of(&b)))).await;
    match next(&mut sub, "PUBREL for b").await {
        Packet::PubRel(r) => assert_eq!(r.packet_id.get(), id_of(&b)),
        other => panic!("expected PUBREL for b, got {other:?}"),
    }
    // Its PUBACK waits for the new row on the subscriber's shard, written after b's PUBREC
    // state: a durability barrier for everything above.
    publish_acked(&mut publ, publish_packet("f/d", 1, false, 4, b"d")).await;
    let d = expect_publish(&mut sub, "d").await;
    assert_eq!(text(&d.payload), "d");
    broker.kill9();

    let broker = Durable::start(&dir, shards, "sync");
    let (mut sub, ack) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 300)).await;
    assert!(ack.session_present, "session present after restart");
    let mut resent = Vec::new();
    let mut pubrel = None;
    while resent.len() < 3 || pubrel.is_none() {
        match next(&mut sub, "resent PUBLISH / PUBREL after restart").await {
            Packet::Publish(p) => resent.push(p),
            Packet::PubRel(r) => pubrel = Some(r.packet_id.get()),
            other => panic!("unexpected {other:?} after restart"),
        }
    }
    // [MQTT-4.3.3-6] (v5) / [MQTT-4.3.3-1] (3.1.1): after PUBREC the PUBLISH is not resent;
    // [MQTT-4.4.0-1]: PUBREL resent with its original packet id.
    assert_eq!(pubrel, Some(id_of(&b)), "PUBREL for b resent");
    let order: Vec<&str> = resent.iter().map(|p| text(&p.payload)).collect();
    // [MQTT-4.6.0-1]: re-sent in the order the PUBLISH packets were first sent.
    assert_eq!(
        order,
        ["a", "c", "d"],
        "unacknowledged PUBLISHes resent in order"
    );
    for (p, first) in resent.iter().zip([&a, &c, &d]) {
        // [MQTT-4.4.0-1]: original packet identifier; [MQTT-3.3.1-1]: DUP 1 on a re-delivery.
        assert_eq!(
            id_of(p),
            id_of(first),
            "{} keeps its packet id",
            text(&p.payload)
        );
        assert!(p.dup, "{} resent with DUP 1", text(&p.payload));
        assert_eq!(p.qos, first.qos, "{} keeps its QoS", text(&p.payload));
        assert_eq!(p.topic.as_str(), first.topic.as_str());
    }
    // Finish every flow; nothing more may come.
    sub.send(&Packet::PubAck(resp(id_of(&a)))).await;
    sub.send(&Packet::PubComp(resp(id_of(&b)))).await;
    sub.send(&Packet::PubRec(resp(id_of(&c)))).await;
    sub.send(&Packet::PubAck(resp(id_of(&d)))).await;
    match next(&mut sub, "PUBREL for c").await {
        Packet::PubRel(r) => assert_eq!(r.packet_id.get(), id_of(&c)),
        other => panic!("expected PUBREL for c, got {other:?}"),
    }
    sub.send(&Packet::PubComp(resp(id_of(&c)))).await;
    sub.expect_silence(QUIET, "no further redelivery").await;
}

mod inflight_resent_after_kill {
    use super::Proto;
    #[tokio::test]
    async fn v311_1shard() {
        super::inflight_resent_after_kill(Proto::V4, 1).await
    }
    #[tokio::test]
    async fn v311_2shards() {
        super::inflight_resent_after_kill(Proto::V4, 2).await
    }
    #[tokio::test]
    async fn v5_1shard() {
        super::inflight_resent_after_kill(Proto::V5, 1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        super::inflight_resent_after_kill(Proto::V5, 2).await
    }
}
