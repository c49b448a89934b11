//! Issue 17, cases 2 and 6 (in-process broker): a QoS 1 subscriber whose window is full and
//! which acknowledges nothing is closed after the slow consumer timeout (`window_stalled`), its
//! persistent session and messages kept within the byte budget; a healthy subscriber on the
//! other shard keeps receiving. A v5 publisher whose message no subscriber could take gets
//! PUBACK 0x97. Both protocol versions, 1 and 2 shards, clients placed on purpose.
#[macro_use]
mod common;

use std::time::Duration;

use common::raw::{connect_packet, publish_packet, resp, subscribe_packet, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};
use ringmq_shard::stats::{CloseReason, DropReason};

matrix! {
    fn stalled_qos1_subscriber_is_closed_and_its_session_kept;
    fn byte_budget_bounds_a_stalled_session;
}

matrix_v5! {
    fn v5_publisher_gets_quota_exceeded_when_no_subscriber_can_take_it;
    fn quota_exceeded_is_judged_on_every_shard_under_durability_sync;
}

/// A persistent session (3.1.1 clean session 0; v5 expiry 300 s) subscribed to `filter` at QoS 1.
async fn persistent_sub(
    addr: std::net::SocketAddr,
    v: ProtocolVersion,
    id: &str,
    filter: &str,
) -> Raw {
    let mut c = connect_packet(v, id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    let (mut r, _) = Raw::connect_with(addr, c).await;
    r.send(&Packet::Subscribe(subscribe_packet(1, filter, 1)))
        .await;
    assert!(matches!(r.expect_packet("SUBACK").await, Packet::SubAck(_)));
    r
}

/// Publishes `n` QoS 1 messages of `size` bytes to `topic` from `r`, each PUBACK read; returns
/// the PUBACK reason codes.
async fn publish_n(r: &mut Raw, topic: &str, n: usize, size: usize) -> Vec<ReasonCode> {
    let body = vec![b'p'; size];
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        let id = (i % 60_000 + 1) as u16;
        r.send(&Packet::Publish(publish_packet(topic, 1, false, id, &body)))
            .await;
        match r.expect_packet("PUBACK").await {
            Packet::PubAck(a) => codes.push(a.reason),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    codes
}

/// Reads PUBLISHes (acknowledging QoS 1) until `n` arrived; panics on close or 5 s of silence.
async fn take(r: &mut Raw, n: usize, what: &str) -> usize {
    let mut got = 0;
    while got < n {
        match r.recv(WAIT).await {
            RawEv::Packet(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    r.send(&Packet::PubAck(resp(id.get()))).await;
                }
                got += 1;
            }
            RawEv::Packet(_) => {}
            other => panic!("{what}: after {got} of {n}: {other:?}"),
        }
    }
    got
}

/// Case 2: the window (256) fills, nothing is acknowledged; with a 400 ms timeout the broker
/// closes the subscriber (v5: DISCONNECT 0x97), counts `window_stalled`, keeps the session and
/// resends what was in flight on reconnect. The healthy subscriber on the other shard gets all.
async fn stalled_qos1_subscriber_is_closed_and_its_session_kept(ctx: Ctx) {
    let b = Broker::start_with(ctx.shards(), |c| {
        c.slow_consumer_timeout = Duration::from_millis(400);
    });
    let v = raw::version(ctx.proto);
    let (stalled_id, healthy_id) = cross_shard_ids("stall", ctx.shards());
    let (_, pub_id) = same_shard_ids("stall", ctx.shards());
    let mut stalled = persistent_sub(b.addr, v, &stalled_id, "stall/t").await;
    let mut healthy = persistent_sub(b.addr, v, &healthy_id, "stall/t").await;
    let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    const N: usize = 300;
    let reader = tokio::spawn(async move {
        let got = take(&mut healthy, N, "healthy subscriber").await;
        (healthy, got)
    });
    let codes = publish_n(&mut publ, "stall/t", N, 16).await;
    assert!(codes.iter().all(|c| *c == ReasonCode::Success), "{codes:?}");
    // The stalled client reads (its socket drains) but never acknowledges.
    let got = stalled
        .expect_closed(Duration::from_secs(10), "stalled window closed")
        .await;
    let publishes = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!(publishes, 256, "the window, then nothing more");
    if v == ProtocolVersion::V5 {
        assert!(
            matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::QuotaExceeded),
            "v5 DISCONNECT 0x97 last: {:?}",
            got.last()
        );
    }
    check_for(WAIT, "the close counted as window_stalled", || {
        let n = b.stat(|s| s.closes_for(CloseReason::WindowStalled));
        async move { (n == 1).then_some(()) }
    })
    .await;
    let (_, got_healthy) = reader.await.unwrap();
    assert_eq!(got_healthy, N, "the healthy subscriber lost nothing");
    assert_eq!(b.stat(|s| s.drops_for(DropReason::QueueFull)), 0);
    // The session survived: reconnect, get the window again (DUP) and the queued rest.
    let mut c = connect_packet(v, &stalled_id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    let (mut back, ack) = Raw::connect_with(b.addr, c).await;
    assert!(
        ack.session_present,
        "persistent session kept [MQTT-3.2.2-2]"
    );
    assert_eq!(take(&mut back, N, "resumed session").await, N);
}

/// Case 2's memory bound: a stalled persistent session holds at most `max_queued_bytes` of
/// QoS 1 messages (here 64 KiB; 1 KiB messages), the rest dropped as `queue_bytes_full`,
/// counted per session.
async fn byte_budget_bounds_a_stalled_session(ctx: Ctx) {
    let b = Broker::start_with(ctx.shards(), |c| {
        c.max_queued_bytes = 64 * 1024;
        c.max_packet_size = 16 * 1024;
    });
    let v = raw::version(ctx.proto);
    let (sub_id, pub_id) = cross_shard_ids("budget", ctx.shards());
    let mut s = persistent_sub(b.addr, v, &sub_id, "budget/t").await;
    s.send(&Packet::Disconnect(ringmq_codec::Disconnect {
        reason: ReasonCode::Success,
        properties: Default::default(),
    }))
    .await;
    s.expect_closed(WAIT, "own DISCONNECT").await;
    let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    const N: usize = 100;
    publish_n(&mut publ, "budget/t", N, 1024).await;
    // Each message costs 1024 + 8 (topic) bytes: 63 fit in 64 KiB.
    let fit = 64 * 1024 / (1024 + 8);
    check_for(WAIT, "the overflow counted", || {
        let dropped = b.stat(|s| s.drops_for(DropReason::QueueBytesFull));
        async move { (dropped == (N - fit) as u64).then_some(()) }
    })
    .await;
    assert_eq!(b.stat(|s| s.queued.get()), fit as u64);
    let mut c = connect_packet(v, &sub_id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    let (mut back, _) = Raw::connect_with(b.addr, c).await;
    assert_eq!(take(&mut back, fit, "the budget's worth").await, fit);
    back.expect_silence(QUIET, "nothing past the budget").await;
}

/// Case 6: the only subscriber (offline, on the publisher's shard, so the publisher's shard
/// sees every copy) has a full queue: the v5 publisher's PUBACK says 0x97 Quota exceeded
/// (v5 3.4.2.1) instead of Success, counted as a refusal; with room again it says Success.
async fn v5_publisher_gets_quota_exceeded_when_no_subscriber_can_take_it(ctx: Ctx) {
    let b = Broker::start_with(ctx.shards(), |c| c.max_queued_messages = 5);
    let v = ProtocolVersion::V5;
    let (pub_id, sub_id) = same_shard_ids("quota", ctx.shards());
    let mut s = persistent_sub(b.addr, v, &sub_id, "quota/t").await;
    s.send(&Packet::Disconnect(ringmq_codec::Disconnect {
        reason: ReasonCode::Success,
        properties: Default::default(),
    }))
    .await;
    s.expect_closed(WAIT, "own DISCONNECT").await;
    let (mut publ, _) = Raw::connect(b.addr, v, &pub_id, true).await;
    let codes = publish_n(&mut publ, "quota/t", 8, 4).await;
    let mut want = vec![ReasonCode::Success; 5];
    want.extend([ReasonCode::QuotaExceeded; 3]);
    assert_eq!(codes, want);
    assert_eq!(b.stat(|s| s.refusals_for(ReasonCode::QuotaExceeded)), 3);
    assert_eq!(b.stat(|s| s.drops_for(DropReason::QueueFull)), 3);
    // QoS 2 too: PUBREC 0x97, and the flow ends there, so the same packet id on the next
    // PUBLISH is a new message [MQTT-4.3.3-9] (refused again, not taken for a resend).
    assert_eq!(
        publish_qos2(&mut publ, "quota/t", 500).await,
        ReasonCode::QuotaExceeded
    );
    assert_eq!(
        publish_qos2(&mut publ, "quota/t", 500).await,
        ReasonCode::QuotaExceeded
    );
    assert_eq!(b.stat(|s| s.refusals_for(ReasonCode::QuotaExceeded)), 5);
    // A publish nobody subscribed to is not refused (no subscriber dropped it).
    let codes = publish_n(&mut publ, "quota/nobody", 1, 4).await;
    assert_eq!(codes, vec![ReasonCode::Success]);
    assert_eq!(
        publish_qos2(&mut publ, "quota/nobody", 501).await,
        ReasonCode::Success
    );
}

/// One QoS 2 PUBLISH with packet id `id`: the PUBREC's reason code (a successful one is
/// completed with PUBREL and PUBCOMP).
async fn publish_qos2(r: &mut Raw, topic: &str, id: u16) -> ReasonCode {
    r.send(&Packet::Publish(publish_packet(
        topic, 2, false, id, b"two",
    )))
    .await;
    let code = match r.expect_packet("PUBREC").await {
        Packet::PubRec(a) if a.packet_id.get() == id => a.reason,
        other => panic!("expected PUBREC {id}, got {other:?}"),
    };
    if !code.is_error() {
        r.send(&Packet::PubRel(resp(id))).await;
        assert!(matches!(
            r.expect_packet("PUBCOMP").await,
            Packet::PubComp(c) if c.packet_id.get() == id
        ));
    }
    code
}

/// Case 6 across shards: with durability `sync` each shard's confirmation of its copy says what
/// its sessions did with it, so the publisher's shard refuses (v5 0x97) a message that every
/// subscriber on every shard dropped, QoS 1 (PUBACK) and QoS 2 (PUBREC, packet id forgotten),
/// and acknowledges one that some shard's subscriber took. The full subscriber sits on the
/// other shard than the publisher (with 2 shards), where the old code always said Success.
/// The publisher's session is persistent, so its QoS 2 copies for the other shard go through
/// the prepared-row protocol, which the refusal must unwind.
async fn quota_exceeded_is_judged_on_every_shard_under_durability_sync(ctx: Ctx) {
    let b = Broker::start_with(ctx.shards(), |c| {
        c.max_queued_messages = 5;
        c.durability = ringmq_shard::config::Durability::Sync;
    });
    let v = ProtocolVersion::V5;
    let (pub_id, far_id) = cross_shard_ids("quota-far", ctx.shards());
    let offline = |mut s: Raw| async move {
        s.send(&Packet::Disconnect(ringmq_codec::Disconnect {
            reason: ReasonCode::Success,
            properties: Default::default(),
        }))
        .await;
        s.expect_closed(WAIT, "own DISCONNECT").await;
    };
    offline(persistent_sub(b.addr, v, &far_id, "quota/t").await).await;
    // A persistent publisher: its QoS 2 ids are stored, and copies for the other shard go
    // through the prepared row (`confirm.rs`).
    let mut c = connect_packet(v, &pub_id, false);
    c.properties.session_expiry_interval = Some(300);
    let (mut publ, _) = Raw::connect_with(b.addr, c).await;
    let codes = publish_n(&mut publ, "quota/t", 8, 4).await;
    let mut want = vec![ReasonCode::Success; 5];
    want.extend([ReasonCode::QuotaExceeded; 3]);
    assert_eq!(codes, want);
    assert_eq!(
        publish_qos2(&mut publ, "quota/t", 700).await,
        ReasonCode::QuotaExceeded
    );
    assert_eq!(
        publish_qos2(&mut publ, "quota/t", 700).await,
        ReasonCode::QuotaExceeded
    );
    assert_eq!(b.stat(|s| s.refusals_for(ReasonCode::QuotaExceeded)), 5);
    assert_eq!(b.stat(|s| s.drops_for(DropReason::QueueFull)), 5);
    // A second subscriber with room, on the publisher's own shard: the message is taken
    // somewhere, so Success, although the far one still drops it.
    let home = |id: &str| common::broker::home_shard(id, ctx.shards());
    if ctx.shards() > 1 {
        assert_ne!(
            home(&pub_id),
            home(&far_id),
            "the full subscriber is on the other shard"
        );
    }
    let near_id = (0..1000)
        .map(|i| format!("quota-near-{i}"))
        .find(|id| home(id) == home(&pub_id))
        .expect("an id on the publisher's shard");
    offline(persistent_sub(b.addr, v, &near_id, "quota/t").await).await;
    assert_eq!(
        publish_n(&mut publ, "quota/t", 1, 4).await,
        [ReasonCode::Success]
    );
    assert_eq!(
        publish_qos2(&mut publ, "quota/t", 701).await,
        ReasonCode::Success
    );
    assert_eq!(b.stat(|s| s.drops_for(DropReason::QueueFull)), 7);
    assert_eq!(b.stat(|s| s.refusals_for(ReasonCode::QuotaExceeded)), 5);
}
