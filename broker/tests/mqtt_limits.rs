//! Server-side limits and features switched by configuration, as a client sees them (v5
//! CONNACK properties and reason codes), graceful shutdown, and `$SYS` topics.
#[macro_use]
mod common;

use std::time::Duration;

use common::raw::{bytes_of, connect_packet};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};

matrix_v5! {
    fn v5_server_keep_alive_is_enforced;
    fn v5_server_keep_alive_caps_the_client_keep_alive;
    fn v5_retain_unavailable_is_advertised_and_enforced;
    fn v5_wildcard_subscriptions_disabled_get_0xa2;
    fn v5_shared_subscriptions_disabled_get_0x9e;
    fn v5_shutdown_sends_server_shutting_down;
    fn v5_no_response_information_unless_requested;
}

matrix! {
    fn sys_topics_are_published;
    fn topic_over_level_or_length_limit_is_refused;
    fn subscription_quota_is_enforced;
    fn connection_limit_answers_with_connack;
}

matrix_v311! {
    fn slow_consumer_does_not_stall_others;
}

fn ctx_with(ctx: &Ctx, tweak: impl FnOnce(&mut ringmq_shard::config::ShardConfig)) -> Ctx {
    Ctx {
        proto: ctx.proto,
        broker: Broker::start_with(ctx.shards(), tweak),
    }
}

/// [MQTT-3.1.2-21]: a Server Keep Alive in CONNACK replaces the client's keep alive.
async fn v5_server_keep_alive_caps_the_client_keep_alive(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.max_keep_alive = 5);
    let mut c = connect_packet(ProtocolVersion::V5, "ka-cap", true);
    c.keep_alive = 60;
    let (_raw, ack) = Raw::connect_with(ctx.broker.addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(5));
}

/// [MQTT-3.2.2-13], [MQTT-3.2.2-14] v5 3.2.2.3.5: Retain Available 0 is advertised; a will
/// with retain 1 gets CONNACK 0x9A; a retained PUBLISH gets DISCONNECT 0x9A.
async fn v5_retain_unavailable_is_advertised_and_enforced(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.retain_available = false);
    let (mut raw, ack) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, "noretain", true).await;
    assert_eq!(ack.properties.retain_available, Some(false));
    raw.send_bytes(&bytes_of::publish(0x31, b"r/t", None, Some(&[]), b"x"))
        .await;
    let got = raw.expect_closed(WAIT, "retained PUBLISH refused").await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::RetainNotSupported),
        "DISCONNECT 0x9A, got {got:?}"
    );
    let mut body = bytes_of::s(b"MQTT");
    body.extend([5, 0x02 | 0x04 | 0x20, 0, 30, 0]);
    body.extend(bytes_of::s(b"willretain"));
    body.push(0);
    body.extend(bytes_of::s(b"w/t"));
    body.extend(bytes_of::s(b"bye"));
    let mut raw = Raw::open(ctx.broker.addr, ProtocolVersion::V5).await;
    raw.send_bytes(&bytes_of::frame(0x10, &body)).await;
    let got = raw.expect_closed(WAIT, "will retain refused").await;
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason == ReasonCode::RetainNotSupported),
        "CONNACK 0x9A, got {got:?}"
    );
}

/// v5 3.2.2.3.11 / 3.9.3: Wildcard Subscription Available 0: advertised; SUBACK 0xA2.
async fn v5_wildcard_subscriptions_disabled_get_0xa2(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.wildcard_subscriptions = false);
    let mut c = ctx.client("nowild").await;
    let props = c.connack_props.clone().expect("CONNACK properties");
    assert_eq!(props.wildcard_subscription_available, Some(0));
    assert_eq!(c.subscribe("w/+", 1).await, vec![0xA2]);
    assert_eq!(c.subscribe("w/plain", 1).await, vec![1]);
}

/// v5 3.2.2.3.13 / 3.9.3: Shared Subscription Available 0: advertised; SUBACK 0x9E.
async fn v5_shared_subscriptions_disabled_get_0x9e(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.shared_subscriptions = false);
    let mut c = ctx.client("noshare").await;
    let props = c.connack_props.clone().expect("CONNACK properties");
    assert_eq!(props.shared_subscription_available, Some(0));
    assert_eq!(c.subscribe("$share/g/t", 1).await, vec![0x9E]);
}

/// Issue 3 / v5 4.13.2: on shutdown v5 clients get DISCONNECT 0x8B, then the close.
async fn v5_shutdown_sends_server_shutting_down(ctx: Ctx) {
    let mut ctx = ctx;
    let (mut raw, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, "bye", true).await;
    let (mut old, _) = Raw::connect(ctx.broker.addr, ProtocolVersion::V3_1_1, "bye311", true).await;
    // Blocks this test's runtime while the broker drains; the sockets buffer what it sends.
    assert!(
        ctx.broker.shutdown(Duration::from_secs(10)),
        "graceful shutdown finishes"
    );
    let got = raw.expect_closed(WAIT, "shutdown").await;
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::ServerShuttingDown),
        "v5 DISCONNECT 0x8B, got {got:?}"
    );
    assert!(old
        .expect_closed(WAIT, "3.1.1 just closed")
        .await
        .is_empty());
}

/// [MQTT-3.1.2-28]: without Request Response Information, CONNACK has no Response Information.
async fn v5_no_response_information_unless_requested(ctx: Ctx) {
    let (_raw, ack) = Raw::connect(ctx.broker.addr, ProtocolVersion::V5, "noinfo", true).await;
    assert_eq!(ack.properties.response_information, None);
}

/// Issue 3: `$SYS/broker/...` topics like Mosquitto's at the configured interval; `#` does not
/// match them [MQTT-4.7.2-1].
async fn sys_topics_are_published(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.sys_interval = Duration::from_millis(200));
    let mut sys = ctx.client("sys").await;
    sys.subscribe("$SYS/broker/#", 0).await;
    let mut seen = std::collections::HashSet::new();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        let Some(m) = sys.recv_within(Duration::from_secs(1)).await else {
            break;
        };
        seen.insert(m.topic);
        if seen.contains("$SYS/broker/version")
            && seen.contains("$SYS/broker/uptime")
            && seen.contains("$SYS/broker/clients/connected")
        {
            break;
        }
    }
    for t in [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
    ] {
        assert!(seen.contains(t), "{t} published; saw {seen:?}");
    }
}

/// Issue 3: a subscriber that stops reading cannot slow anyone else: its outbound buffer is
/// bounded (QoS 0 dropped) and it is closed after the slow-consumer deadline, while a reading
/// subscriber of the same topic keeps receiving.
async fn slow_consumer_does_not_stall_others(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| {
        c.outbound_buffer_bytes = 64 * 1024;
        c.slow_consumer_timeout = Duration::from_secs(1);
    });
    let ids = spread_ids("slow", 3, ctx.shards());
    let v = common::raw::version(ctx.proto);
    let mut stalled = Raw::stalled_subscriber(ctx.broker.addr, v, &ids[0], "flood/t").await;
    // From here on `stalled` reads nothing.
    let mut fast = ctx.client(&ids[1]).await;
    fast.subscribe("flood/t", 1).await;
    let publ = ctx.client(&ids[2]).await;
    let chunk = vec![b'x'; 1024];
    // Keep the flood going until the broker gives up on the connection that stopped reading
    // (its deadline is 1 s); the reading subscriber must keep up meanwhile.
    use ringmq_shard::stats::{CloseReason, DropReason};
    let t0 = std::time::Instant::now();
    let mut sent = 0u64;
    while ctx.broker.stat(|s| s.closes_for(CloseReason::SlowConsumer)) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "slow consumer still open after 10 s ({sent} messages)"
        );
        for _ in 0..200 {
            publ.publish("flood/t", 0, false, chunk.clone()).await;
        }
        sent += 200;
        while fast.recv_within(Duration::from_millis(1)).await.is_some() {}
    }
    publ.publish("flood/t", 1, false, "end").await;
    loop {
        match fast.recv_within(Duration::from_secs(10)).await {
            Some(m) if &m.payload[..] == b"end" => break,
            Some(_) => continue,
            None => panic!("the reading subscriber stalled behind the one that does not read"),
        }
    }
    // QoS 0 beyond its bounded buffer was dropped and counted.
    assert!(
        ctx.broker.stat(|s| s.drops_for(DropReason::QoS0BufferFull)) > 0,
        "QoS 0 dropped, counted"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(b) = stalled.read_raw(Duration::from_secs(10)).await {
            if b.is_empty() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        closed.ok(),
        Some(true),
        "the slow consumer's socket is closed"
    );
}

/// [MQTT-3.1.2-21], [MQTT-3.1.2-22]: the Server Keep Alive is the one enforced (1.5x).
async fn v5_server_keep_alive_is_enforced(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.max_keep_alive = 1);
    let mut c = connect_packet(ProtocolVersion::V5, "ka-enforced", true);
    c.keep_alive = 60;
    let (mut raw, ack) = Raw::connect_with(ctx.broker.addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let t0 = std::time::Instant::now();
    raw.expect_disconnect(ReasonCode::KeepAliveTimeout, "server keep alive expired")
        .await;
    assert!(
        t0.elapsed() < Duration::from_millis(2600),
        "closed after {:?}",
        t0.elapsed()
    );
}

/// Issue 3 limits (`max_topic_levels`, `max_topic_length`): a PUBLISH over them is refused
/// with the spec's answer (v5: PUBACK or DISCONNECT 0x90 Topic Name invalid; 3.1.1 has no
/// negative PUBACK [MQTT-3.3.5-2]: positive PUBACK or close) and never delivered; a filter
/// over them gets SUBACK 0x80 (v5 0x8F).
async fn topic_over_level_or_length_limit_is_refused(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| {
        c.max_topic_levels = 3;
        c.max_topic_length = 32;
    });
    let v5 = ctx.proto == Proto::V5;
    let mut watch = ctx.client("limit-watch").await;
    watch.subscribe("#", 1).await;
    for (i, t) in [
        "a/b/c/d",
        "long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]
    .into_iter()
    .enumerate()
    {
        let (mut raw, _) = Raw::connect(
            ctx.broker.addr,
            common::raw::version(ctx.proto),
            &format!("limit{i}"),
            true,
        )
        .await;
        let props: Option<&[u8]> = v5.then_some(&[]);
        raw.send_bytes(&bytes_of::publish(0x32, t.as_bytes(), Some(1), props, b"x"))
            .await;
        match raw.recv(WAIT).await {
            common::raw::RawEv::Packet(Packet::PubAck(a)) if v5 => {
                assert_eq!(a.reason, ReasonCode::TopicNameInvalid, "{t}")
            }
            common::raw::RawEv::Packet(Packet::PubAck(_)) => {}
            common::raw::RawEv::Packet(Packet::Disconnect(d)) if v5 => {
                assert_eq!(d.reason, ReasonCode::TopicNameInvalid, "{t}")
            }
            common::raw::RawEv::Closed => {}
            other => panic!("{t}: expected refusal, got {other:?}"),
        }
    }
    watch
        .expect_none(QUIET, "over-limit topics not delivered")
        .await;
    let mut c = ctx.client("limit-sub").await;
    let want = if v5 { 0x8F } else { 0x80 };
    assert_eq!(c.subscribe("a/b/c/d", 1).await, vec![want]);
    assert_eq!(c.subscribe("a/b/c", 1).await, vec![1]);
}

/// Issue 3 limit `max_subscriptions_per_client`: SUBACK 0x80 (v5 0x97 Quota exceeded),
/// counted as a refusal.
async fn subscription_quota_is_enforced(ctx: Ctx) {
    let ctx = ctx_with(&ctx, |c| c.max_subscriptions_per_client = 2);
    let mut c = ctx.client("quota").await;
    assert_eq!(c.subscribe("q/1", 1).await, vec![1]);
    assert_eq!(c.subscribe("q/2", 1).await, vec![1]);
    let want = if ctx.proto == Proto::V5 { 0x97 } else { 0x80 };
    assert_eq!(c.subscribe("q/3", 1).await, vec![want]);
    assert_eq!(
        c.subscribe("q/1", 0).await,
        vec![0],
        "replacing an existing one is not a new one"
    );
    // Every violation is counted: the refusal, by its v5 reason.
    assert_eq!(
        ctx.broker
            .stat(|s| s.refusals_for(ReasonCode::QuotaExceeded)),
        1
    );
}

/// Issue 3 limit `max_connections`: the connection over it gets a refusing CONNACK
/// (3.1.1 0x03 Server unavailable; v5 0x97 Quota exceeded, 0x89 Server busy or 0x88).
async fn connection_limit_answers_with_connack(ctx: Ctx) {
    if common::cluster::skip(
        "max_connections is a limit per node: three nodes hold three times as many",
    ) {
        return;
    }
    let ctx = ctx_with(&ctx, |c| c.max_connections = 2 * c.cores.max(1));
    let v = common::raw::version(ctx.proto);
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..(2 * ctx.shards() + 4) {
        let mut raw = Raw::open(ctx.broker.addr, v).await;
        raw.send(&Packet::Connect(Box::new(connect_packet(
            v,
            &format!("conn{i}"),
            true,
        ))))
        .await;
        match raw.recv(WAIT).await {
            common::raw::RawEv::Packet(Packet::ConnAck(a)) if a.reason == ReasonCode::Success => {
                held.push(raw)
            }
            common::raw::RawEv::Packet(Packet::ConnAck(a)) => {
                refused = Some(a.reason);
                break;
            }
            other => panic!("connection {i}: expected a CONNACK, got {other:?}"),
        }
    }
    let r = refused.expect("a connection over the limit is refused");
    if ctx.proto == Proto::V5 {
        assert!(
            [
                ReasonCode::QuotaExceeded,
                ReasonCode::ServerBusy,
                ReasonCode::ServerUnavailable
            ]
            .contains(&r),
            "got {r:?}"
        );
    } else {
        // The codec decodes the 3.1.1 return code 0x03 as ServerUnavailable.
        assert_eq!(r, ReasonCode::ServerUnavailable, "3.1.1 return code 0x03");
    }
}
