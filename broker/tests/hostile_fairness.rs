//! Issue 17, case 4 (correctness side; latency is measured by `bench/scripts/fairness.py`):
//! closing many clean sessions with many subscriptions each removes those subscriptions in
//! bounded steps (`reap.rs`) and still removes all of them; while they leave, a publish to
//! their filters reaches no one, a client reconnecting with the same id gets a fresh session,
//! and other clients keep being served. Both versions, 1 and 2 shards.
#[macro_use]
mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::raw::{publish_packet, RawEv};
use common::*;
use ringmq_codec::{Packet, Subscribe, SubscribeProperties, SubscriptionOptions};

matrix! {
    fn mass_close_removes_every_subscription_in_steps;
    fn large_subscribe_is_handled_in_steps_and_in_order;
}

const CLIENTS: usize = 12;
/// More than `reap::STEP` (256): the reaper task does the work.
const FILTERS: usize = 700;

fn filter_of(c: usize, j: usize) -> String {
    format!("mc/{c}/{}/{}/x", j / 50, j % 50)
}

/// One SUBSCRIBE of `FILTERS` filters at QoS 1 (packets of 100 filters each).
async fn subscribe_many(r: &mut Raw, c: usize) {
    let mut out = BytesMut::new();
    for chunk in 0..FILTERS / 100 {
        let filters = (0..100)
            .map(|k| {
                let f = raw::filter(&filter_of(c, chunk * 100 + k));
                (
                    f,
                    SubscriptionOptions::with_qos(ringmq_codec::QoS::AtLeastOnce),
                )
            })
            .collect();
        let s = Subscribe {
            packet_id: raw::pid(chunk as u16 + 1),
            filters,
            properties: SubscribeProperties::default(),
        };
        Packet::Subscribe(s).encode(r.version, &mut out).unwrap();
    }
    r.send_bytes(&out).await;
    for _ in 0..FILTERS / 100 {
        assert!(matches!(r.expect_packet("SUBACK").await, Packet::SubAck(_)));
    }
}

async fn mass_close_removes_every_subscription_in_steps(ctx: Ctx) {
    let v = raw::version(ctx.proto);
    let b = &ctx.broker;
    let ids = spread_ids("mc", CLIENTS, ctx.shards());
    let mut clients = Vec::new();
    for (c, id) in ids.iter().enumerate() {
        let (mut r, _) = Raw::connect(b.addr, v, id, true).await;
        subscribe_many(&mut r, c).await;
        clients.push(r);
    }
    let total = (CLIENTS * FILTERS) as u64;
    check_for(WAIT, "every subscription in place", || {
        let n = b.stat(|s| s.subscriptions.get());
        async move { (n == total).then_some(()) }
    })
    .await;
    let (pub_id, watcher_id) = cross_shard_ids("mc-pair", ctx.shards());
    let mut watcher = ctx.client(&watcher_id).await;
    watcher.subscribe("mc-live/t", 1).await;
    let publ = ctx.client(&pub_id).await;
    // Every subscriber goes at once (clean sessions: removed at close).
    drop(clients);
    // Meanwhile: the old filters reach no one, the live pair is served.
    let (mut p, _) = Raw::connect(b.addr, v, "mc-prober", true).await;
    for c in 0..CLIENTS {
        let pk = publish_packet(&filter_of(c, 1), 1, false, c as u16 + 1, b"gone?");
        p.send(&Packet::Publish(pk)).await;
        assert!(matches!(p.expect_packet("PUBACK").await, Packet::PubAck(_)));
    }
    publ.publish("mc-live/t", 1, false, "live".to_string())
        .await;
    assert_eq!(watcher.recv("the live pair is served").await.text(), "live");
    check_for(
        Duration::from_secs(30),
        "every subscription removed",
        || {
            let n = b.stat(|s| s.subscriptions.get());
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    // The same id again: a fresh session that holds none of the old subscriptions.
    let (mut again, ack) = Raw::connect(b.addr, v, &ids[0], true).await;
    assert!(!ack.session_present);
    let pk = publish_packet(&filter_of(0, 2), 0, false, 0, b"old filter");
    p.send(&Packet::Publish(pk)).await;
    match again.recv(QUIET).await {
        RawEv::Timeout => {}
        other => panic!("a removed subscription still delivers: {other:?}"),
    }
}

/// A SUBSCRIBE of 200 filters (handled in steps of 64), then in the same write an UNSUBSCRIBE
/// of one of them, a SUBSCRIBE of another topic and a PINGREQ: answered in order (SUBACK with
/// 200 reasons, UNSUBACK, SUBACK, PINGRESP) [MQTT-4.6.0-?] packet order; the unsubscribed
/// filter no longer delivers, the others do.
async fn large_subscribe_is_handled_in_steps_and_in_order(ctx: Ctx) {
    let v = raw::version(ctx.proto);
    let b = &ctx.broker;
    let (sub_id, pub_id) = cross_shard_ids("steps", ctx.shards());
    let (mut r, _) = Raw::connect(b.addr, v, &sub_id, true).await;
    let filters = (0..200)
        .map(|j| {
            let f = raw::filter(&format!("steps/{j}"));
            (
                f,
                SubscriptionOptions::with_qos(ringmq_codec::QoS::AtMostOnce),
            )
        })
        .collect();
    let mut out = BytesMut::new();
    let big = Subscribe {
        packet_id: raw::pid(1),
        filters,
        properties: SubscribeProperties::default(),
    };
    Packet::Subscribe(big).encode(v, &mut out).unwrap();
    let un = ringmq_codec::Unsubscribe {
        packet_id: raw::pid(2),
        filters: vec![raw::filter("steps/7")],
        properties: Default::default(),
    };
    Packet::Unsubscribe(un).encode(v, &mut out).unwrap();
    Packet::Subscribe(raw::subscribe_packet(3, "steps/extra", 0))
        .encode(v, &mut out)
        .unwrap();
    Packet::PingReq.encode(v, &mut out).unwrap();
    r.send_bytes(&out).await;
    match r.expect_any("SUBACK of 200").await {
        Packet::SubAck(a) => assert_eq!((a.packet_id.get(), a.reasons.len()), (1, 200)),
        other => panic!("expected the big SUBACK first, got {other:?}"),
    }
    match r.expect_any("UNSUBACK").await {
        Packet::UnsubAck(a) => assert_eq!(a.packet_id.get(), 2),
        other => panic!("expected UNSUBACK second, got {other:?}"),
    }
    match r.expect_any("SUBACK").await {
        Packet::SubAck(a) => assert_eq!(a.packet_id.get(), 3),
        other => panic!("expected SUBACK third, got {other:?}"),
    }
    assert!(matches!(r.expect_any("PINGRESP").await, Packet::PingResp));
    let (mut p, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    for t in ["steps/7", "steps/8", "steps/199", "steps/extra"] {
        let pk = publish_packet(t, 1, false, 1, t.as_bytes());
        p.send(&Packet::Publish(pk)).await;
        assert!(matches!(p.expect_packet("PUBACK").await, Packet::PubAck(_)));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            r.expect_publish("a subscribed topic")
                .await
                .topic
                .as_str()
                .to_string(),
        );
    }
    assert_eq!(got, ["steps/8", "steps/199", "steps/extra"]);
    r.expect_silence(QUIET, "steps/7 was unsubscribed").await;
}
