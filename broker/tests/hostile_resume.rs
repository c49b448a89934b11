//! Issue 17, the loose ends of case 1 and case 4 (in-process broker, our codec client):
//!
//! - A retained replay to a persistent session goes on after its connection goes away
//!   mid-replay: after a normal DISCONNECT and a reconnect, and after a takeover by a new
//!   connection, every retained message past the cut arrives, QoS 0 ones included, and every
//!   QoS 1 one overall (the unacknowledged ones resent [MQTT-4.4.0-1]).
//! - A clean-start takeover of a session with thousands of subscriptions gets a fresh session
//!   at once ([MQTT-3.1.2-4]); the old subscriptions leave the router in bounded steps and stop
//!   delivering to the new session.
//!
//! 3.1.1 and 5.0, 1 and 2 shards, publisher and subscriber on different home shards.
mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::{connect_packet, publish_packet, resp, subscribe_packet, RawEv};
use common::{check_for, cross_shard_ids, Broker, Proto, Raw, QUIET, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions};

/// Retained messages stored; every fourth (index % 4 == 3, the last one included) is QoS 0.
const N: usize = 2000;
/// The broker's Receive Maximum (the QoS 1 window of both versions here).
const WINDOW: u16 = 10;
const BOUND: Duration = Duration::from_secs(60);

fn topic_of(i: usize) -> String {
    format!("rr/{i:05}")
}

fn index_of(topic: &str) -> usize {
    topic.trim_start_matches("rr/").parse().expect("rr/NNNNN")
}

fn qos_of(i: usize) -> u8 {
    if i % 4 == 3 {
        0
    } else {
        1
    }
}

/// Stores the `N` retained messages (3.1.1 publisher, QoS 1 ones acknowledged).
async fn store_retained(addr: SocketAddr, id: &str) {
    let v = ProtocolVersion::V3_1_1;
    let (mut p, _) = Raw::connect(addr, v, id, true).await;
    for round in 0..N / 500 {
        let mut out = BytesMut::new();
        let mut acks = 0;
        for j in 0..500 {
            let i = round * 500 + j;
            let q = qos_of(i);
            acks += usize::from(q > 0);
            let pk = publish_packet(&topic_of(i), q, true, (j + 1) as u16, b"kept");
            Packet::Publish(pk).encode(v, &mut out).unwrap();
        }
        p.send_bytes(&out).await;
        for _ in 0..acks {
            assert!(matches!(p.expect_packet("PUBACK").await, Packet::PubAck(_)));
        }
    }
}

fn persistent(v: ProtocolVersion, id: &str) -> ringmq_codec::Connect {
    let mut c = connect_packet(v, id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// How the first connection goes away mid-replay.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// DISCONNECT, then a reconnect (session present).
    Reconnect,
    /// A second connection with the same client id while the first is open.
    Takeover,
}

async fn replay_resumes(proto: Proto, shards: usize, cut: Cut) {
    let b = Broker::start_with(shards, |c| {
        c.receive_maximum = WINDOW;
        c.sys_interval = Duration::ZERO;
    });
    let v = common::raw::version(proto);
    let (pub_id, sub_id) = cross_shard_ids(&format!("resume-{cut:?}"), shards);
    store_retained(b.addr, &pub_id).await;
    check_for(BOUND, "every shard holds every retained message", || {
        let held = b.stat(|s| s.retained.get());
        async move { (held == (N * shards) as u64).then_some(()) }
    })
    .await;
    let (mut first, ack) = Raw::connect_with(b.addr, persistent(v, &sub_id)).await;
    assert!(!ack.session_present);
    first
        .send(&Packet::Subscribe(subscribe_packet(1, "rr/#", 1)))
        .await;
    // Read without acknowledging: the window fills and the replay stops there.
    let mut before = BTreeSet::new();
    let mut unacked = 0;
    while unacked < WINDOW {
        match first.recv(WAIT).await {
            RawEv::Packet(Packet::Publish(p)) => {
                assert!(p.retain, "[MQTT-3.3.1-8]");
                unacked += u16::from(p.qos != QoS::AtMostOnce);
                before.insert(index_of(p.topic.as_str()));
            }
            RawEv::Packet(Packet::SubAck(_)) => {}
            other => panic!("first connection: {other:?}"),
        }
    }
    // What was written before the stall (QoS 0 ones ahead of the next QoS 1).
    while let RawEv::Packet(Packet::Publish(p)) = first.recv(QUIET).await {
        before.insert(index_of(p.topic.as_str()));
    }
    let cut_at = *before.last().unwrap();
    assert!(cut_at < N / 2, "the replay stopped at the window: {cut_at}");
    let second = match cut {
        Cut::Reconnect => {
            first
                .send(&Packet::Disconnect(ringmq_codec::Disconnect {
                    reason: ringmq_codec::ReasonCode::Success,
                    properties: Default::default(),
                }))
                .await;
            first.expect_closed(WAIT, "own DISCONNECT").await;
            let (r, ack) = Raw::connect_with(b.addr, persistent(v, &sub_id)).await;
            assert!(ack.session_present, "[MQTT-3.2.2-2]");
            r
        }
        Cut::Takeover => {
            let (r, ack) = Raw::connect_with(b.addr, persistent(v, &sub_id)).await;
            assert!(ack.session_present, "[MQTT-3.2.2-2]");
            first.expect_closed(WAIT, "taken over [MQTT-3.1.4-3]").await;
            r
        }
    };
    let after = read_all(second, v, cut_at).await;
    let all: BTreeSet<usize> = before.union(&after).copied().collect();
    for i in 0..N {
        if qos_of(i) == 1 {
            assert!(
                all.contains(&i),
                "{cut:?}: QoS 1 {} never arrived",
                topic_of(i)
            );
        }
    }
    for i in cut_at + 1..N {
        assert!(
            after.contains(&i),
            "{cut:?}: {} after the cut missing",
            topic_of(i)
        );
    }
}

/// Reads (acknowledging) until every message past `cut_at` and the resent ones arrived.
async fn read_all(mut r: Raw, v: ProtocolVersion, cut_at: usize) -> BTreeSet<usize> {
    let mut got = BTreeSet::new();
    let end = Instant::now() + BOUND;
    let done = |g: &BTreeSet<usize>| (cut_at + 1..N).all(|i| g.contains(&i));
    while !done(&got) {
        assert!(
            Instant::now() < end,
            "{} of {} past the cut within {BOUND:?}",
            got.range(cut_at + 1..).count(),
            N - cut_at - 1
        );
        match r.recv(Duration::from_secs(10)).await {
            RawEv::Packet(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    r.send(&Packet::PubAck(resp(id.get()))).await;
                }
                got.insert(index_of(p.topic.as_str()));
            }
            other => panic!("second connection ({v:?}) after {}: {other:?}", got.len()),
        }
    }
    got
}

/// A session with `SUBS` subscriptions is taken over by a clean-start CONNECT: session
/// present 0, and none of the old subscriptions delivers to the new session, while a
/// subscription the new session makes works at once; the subscription count drops back.
async fn clean_takeover_of_many_subscriptions(proto: Proto, shards: usize) {
    const SUBS: usize = 5000;
    let b = Broker::start_with(shards, |c| {
        c.max_subscriptions_per_client = SUBS + 10;
        c.sys_interval = Duration::ZERO;
    });
    let v = common::raw::version(proto);
    let (pub_id, sub_id) = cross_shard_ids("takeover", shards);
    let (mut old, _) = Raw::connect_with(b.addr, persistent(v, &sub_id)).await;
    let filters: Vec<_> = (0..SUBS)
        .map(|i| {
            (
                common::raw::filter(&format!("many/{i}/+")),
                SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            )
        })
        .collect();
    old.send(&Packet::Subscribe(Subscribe {
        packet_id: common::raw::pid(1),
        filters,
        properties: Default::default(),
    }))
    .await;
    match old.expect_packet("SUBACK of 5000").await {
        Packet::SubAck(a) => assert_eq!(a.reasons.len(), SUBS),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let subs = || b.stat(|s| s.subscriptions.get());
    assert!(subs() >= SUBS as u64);
    let (mut new, ack) = Raw::connect_with(b.addr, connect_packet(v, &sub_id, true)).await;
    assert!(
        !ack.session_present,
        "clean start discards the session [MQTT-3.1.2-4]"
    );
    old.expect_closed(WAIT, "taken over").await;
    new.send(&Packet::Subscribe(subscribe_packet(2, "fresh/#", 1)))
        .await;
    assert!(matches!(
        new.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    for (i, t) in ["many/1/x", "many/4999/y", "fresh/z"].iter().enumerate() {
        let p = publish_packet(t, 1, false, i as u16 + 1, b"m");
        publ.send(&Packet::Publish(p)).await;
        assert!(matches!(
            publ.expect_packet("PUBACK").await,
            Packet::PubAck(_)
        ));
    }
    match new.expect_packet("the fresh subscription's message").await {
        Packet::Publish(p) => assert_eq!(p.topic.as_str(), "fresh/z"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    new.expect_silence(QUIET, "nothing on the old subscriptions")
        .await;
    check_for(BOUND, "the old subscriptions left the router", || {
        let n = subs();
        async move { (n <= 1).then_some(()) }
    })
    .await;
}

macro_rules! cases {
    ($($name:ident $(, $arg:expr)?);*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1 $(, $arg)?).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2 $(, $arg)?).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1 $(, $arg)?).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2 $(, $arg)?).await }
        }
    )*};
}

async fn replay_resumes_after_reconnect(proto: Proto, shards: usize) {
    replay_resumes(proto, shards, Cut::Reconnect).await
}

async fn replay_resumes_after_takeover(proto: Proto, shards: usize) {
    replay_resumes(proto, shards, Cut::Takeover).await
}

cases!(
    replay_resumes_after_reconnect;
    replay_resumes_after_takeover;
    clean_takeover_of_many_subscriptions
);
