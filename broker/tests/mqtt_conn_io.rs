//! A connection is one task on one descriptor (issue 3, memory per connection): its
//! reading must not wait for its writing.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use ringmq_codec::Packet;

matrix_v311! {
    fn blocked_writes_do_not_stop_reading;
}

matrix_v5! {
    fn a_close_right_behind_a_puback_is_seen;
}

/// The client's last packet and its end of stream arrive in one epoll edge: the short read
/// of the PUBACK must not hide the end (the will goes out at once, not at keep-alive expiry).
async fn a_close_right_behind_a_puback_is_seen(ctx: Ctx) {
    use bytes::Bytes;
    use ringmq_codec::{LastWill, QoS, SubscriptionOptions};
    let ids = spread_ids("eof", 3, ctx.shards());
    let mut watcher = ctx.client(&ids[0]).await;
    watcher.subscribe("will/eof", 1).await;
    let publ = ctx.client(&ids[1]).await;
    let v = common::raw::version(ctx.proto);
    let mut c = common::raw::connect_packet(v, &ids[2], true);
    c.will = Some(LastWill {
        topic: common::raw::topic("will/eof"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut d, _) = Raw::connect_with(ctx.broker.addr, c).await;
    let sub = ringmq_codec::Subscribe {
        packet_id: common::raw::pid(1),
        filters: vec![(
            common::raw::filter("eof/t"),
            SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    };
    d.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(d.expect_packet("SUBACK").await, Packet::SubAck(_)));
    publ.publish("eof/t", 1, false, "x").await;
    let m = d.expect_publish("x").await;
    d.send(&Packet::PubAck(common::raw::resp(
        m.packet_id.unwrap().get(),
    )))
    .await;
    drop(d);
    let w = watcher.recv("the will, at once").await;
    assert_eq!(w.text(), "gone");
}

/// A client that stops reading fills its socket and outbound buffer; what it sends is still
/// read and routed at once (well before its slow-consumer deadline).
async fn blocked_writes_do_not_stop_reading(ctx: Ctx) {
    let ctx = Ctx {
        proto: ctx.proto,
        broker: Broker::start_with(ctx.shards(), |c| {
            c.outbound_buffer_bytes = 64 * 1024;
            c.slow_consumer_timeout = Duration::from_secs(30);
        }),
    };
    let ids = spread_ids("blocked", 3, ctx.shards());
    let v = common::raw::version(ctx.proto);
    let mut stalled = Raw::stalled_subscriber(ctx.broker.addr, v, &ids[0], "flood/t").await;
    // From here on `stalled` reads nothing.
    let mut watcher = ctx.client(&ids[1]).await;
    watcher.subscribe("from/stalled", 1).await;
    let publ = ctx.client(&ids[2]).await;
    use ringmq_shard::stats::DropReason;
    let chunk = vec![b'x'; 1024];
    let t0 = Instant::now();
    while ctx.broker.stat(|s| s.drops_for(DropReason::QoS0BufferFull)) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the stalled connection's buffer never filled"
        );
        for _ in 0..100 {
            publ.publish("flood/t", 0, false, chunk.clone()).await;
        }
    }
    // Its outbound side is full and its socket takes nothing: its packets still get through.
    for (i, qos) in [0u8, 1, 0, 1].into_iter().enumerate() {
        let payload = format!("m{i}");
        stalled
            .send(&Packet::Publish(common::raw::publish_packet(
                "from/stalled",
                qos,
                false,
                i as u16 + 1,
                payload.as_bytes(),
            )))
            .await;
        let m = watcher
            .recv_within(Duration::from_secs(3))
            .await
            .expect("a publish from a connection whose writes are blocked is routed");
        assert_eq!(&m.payload[..], payload.as_bytes());
    }
}
