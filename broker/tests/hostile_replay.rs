//! Issue 17, case 1: the retained replay is paced by the subscriber. 100,000 retained messages
//! reach a deliberately slow reader in full, at QoS 0 and at QoS 1, with a 16 KiB outbound
//! buffer and the default 10,000-message session queue: the replay waits for buffer space and
//! for the inflight window instead of dropping (`qos0_buffer_full`) or queueing past the limit
//! (`queue_full`). Subscribers sit on the publisher's shard and on the other one, and another
//! client of the subscriber's shard is served while the replay waits.
#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::{connect_packet, publish_packet, resp, subscribe_packet, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, QoS};
use ringmq_shard::stats::DropReason;

matrix! {
    fn retained_replay_reaches_a_slow_reader_in_full;
}

const N: usize = 100_000;
/// Whole-test bound (debug build, shared machine); the replay itself takes a few seconds.
const BOUND: Duration = Duration::from_secs(240);

fn topic_of(i: usize) -> String {
    format!("ret/{}/{}", i / 1000, i % 1000)
}

/// Stores `N` retained QoS 1 messages through a 3.1.1 publisher, 1000 at a time, each round
/// acknowledged before the next.
async fn store_retained(addr: std::net::SocketAddr, id: &str) {
    let v = ProtocolVersion::V3_1_1;
    let (mut p, _) = Raw::connect(addr, v, id, true).await;
    let payload = [b'x'; 32];
    for round in 0..N / 1000 {
        let mut out = BytesMut::new();
        for j in 0..1000 {
            let i = round * 1000 + j;
            let pk = publish_packet(&topic_of(i), 1, true, (j + 1) as u16, &payload);
            Packet::Publish(pk).encode(v, &mut out).unwrap();
        }
        p.send_bytes(&out).await;
        for _ in 0..1000 {
            match p.expect_packet("PUBACK of a retained publish").await {
                Packet::PubAck(_) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
}

/// Subscribes `ret/#` at `qos` on a 4 KiB receive buffer, then reads slowly: nothing for
/// 300 ms, then a pause of 2 ms every 256 messages, PUBACKs sent in batches. Returns the
/// distinct topics received (all with RETAIN=1).
async fn slow_reader(addr: std::net::SocketAddr, v: ProtocolVersion, id: String, qos: u8) -> usize {
    let mut r = Raw::open_small_rcvbuf(addr, v, 4096).await;
    r.send(&Packet::Connect(Box::new(connect_packet(v, &id, true))))
        .await;
    assert!(matches!(
        r.expect_packet("CONNACK").await,
        Packet::ConnAck(_)
    ));
    r.send(&Packet::Subscribe(subscribe_packet(1, "ret/#", qos)))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a reader that starts late
    let mut seen = HashSet::with_capacity(N);
    let mut acks = BytesMut::new();
    let (mut n, end) = (0usize, Instant::now() + BOUND);
    while seen.len() < N {
        assert!(
            Instant::now() < end,
            "{id}: {} of {N} within {BOUND:?}",
            seen.len()
        );
        let ev = r.recv(Duration::from_secs(10)).await;
        let p = match ev {
            RawEv::Packet(Packet::Publish(p)) => p,
            RawEv::Packet(Packet::SubAck(_)) => continue,
            other => panic!("{id}: after {} of {N}: {other:?}", seen.len()),
        };
        assert!(p.retain, "retained messages carry RETAIN=1 [MQTT-3.3.1-8]");
        let want = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        assert_eq!(p.qos, want, "{id}: delivered at the granted QoS");
        if let Some(pid) = p.packet_id {
            Packet::PubAck(resp(pid.get()))
                .encode(v, &mut acks)
                .unwrap();
        }
        seen.insert(p.topic.as_str().to_string());
        n += 1;
        if acks.len() >= 64 * 4 {
            // Every 64 PUBACKs (the window is 256 for 3.1.1, 65,535 for v5).
            r.send_bytes(&acks.split()).await;
        }
        if n % 256 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    seen.len()
}

async fn retained_replay_reaches_a_slow_reader_in_full(ctx: Ctx) {
    let shards = ctx.shards();
    // No $SYS: its retained statistics would join the count below once
    // storing takes longer than the interval (a loaded machine).
    let broker = Broker::start_with(shards, |c| {
        c.outbound_buffer_bytes = 16 * 1024;
        c.sys_interval = Duration::ZERO;
    });
    let addr = broker.addr;
    let v = raw::version(ctx.proto);
    let (pub_id, far) = cross_shard_ids("rp", shards);
    let (_, near) = same_shard_ids("rp", shards);
    store_retained(addr, &pub_id).await;
    check_for(
        Duration::from_secs(30),
        "every shard holds every retained message",
        || {
            let held = broker.stat(|s| s.retained.get());
            async move { (held == (N * shards) as u64).then_some(()) }
        },
    )
    .await;
    let q0 = tokio::spawn(slow_reader(addr, v, format!("{near}-q0"), 0));
    let q1 = tokio::spawn(slow_reader(addr, v, format!("{far}-q1"), 1));
    // The shards serve others while the replays wait for their readers.
    let (mut other, _) = Raw::connect(addr, v, &format!("{near}-ping"), true).await;
    other.send(&Packet::PingReq).await;
    assert!(matches!(
        other.expect_any("PINGRESP").await,
        Packet::PingResp
    ));
    let r0 = q0.await;
    let r1 = q1.await;
    if r0.is_err() || r1.is_err() {
        for r in ringmq_shard::stats::CloseReason::ALL {
            eprintln!(
                "close {}: {}",
                r.as_str(),
                broker.stat(|s| s.closes_for(*r))
            );
        }
    }
    assert_eq!(r0.unwrap(), N, "QoS 0 replay complete");
    assert_eq!(r1.unwrap(), N, "QoS 1 replay complete");
    for r in [DropReason::QoS0BufferFull, DropReason::QueueFull] {
        assert_eq!(broker.stat(|s| s.drops_for(r)), 0, "{} drops", r.as_str());
    }
}
