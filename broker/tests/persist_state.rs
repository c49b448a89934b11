//! State that must survive a restart with `--durability sync` (issue 5): retained messages with
//! their v5 properties (and deletes), subscriptions with their options and subscription
//! identifiers, persistent sessions (session present 1) with the recovery time logged, and the
//! end of an expired v5 session. The real binary, 1 and 2 shards, one data dir per test.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::persist::{
    disconnect, persistent_connect, publish_acked, qos, subscribe, text, DataDir, Durable, Inbox,
};
use common::raw::{publish_packet, topic, version};
use common::{spread_ids, Proto, Raw, QUIET};
use ringmq_codec::{
    MqttString, Packet, ProtocolVersion, Publish, PublishProperties, RetainHandling,
    SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const SETTLE: Duration = Duration::from_millis(500);
const PHASE: Duration = Duration::from_secs(10);

fn s(x: &str) -> MqttString {
    MqttString::try_from(x).expect("valid string")
}

/// The v5 properties a retained message must keep across a restart.
fn rich_props() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        response_topic: Some(topic("r/reply")),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        content_type: Some(s("text/plain")),
        user_properties: vec![(s("k"), s("v")), (s("k"), s("v2")), (s("a"), s("b"))],
        ..Default::default()
    }
}

fn topics(got: &[Publish]) -> Vec<&str> {
    got.iter().map(|p| p.topic.as_str()).collect()
}

/// Retained messages (v5 properties, QoS 1 and 2, a replaced one set from two shards, a deleted
/// one) survive SIGKILL: a new subscriber gets exactly the live ones, properties intact.
async fn retained_survives_kill(shards: usize) {
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("ret", 2, shards);
    let (mut p1, _) = Raw::connect(broker.addr, V5, &ids[0], true).await;
    let (mut p2, _) = Raw::connect(broker.addr, V5, &ids[1], true).await;
    let mut rich = publish_packet("r/props", 1, true, 1, b"with props");
    rich.properties = rich_props().into();
    publish_acked(&mut p1, rich).await;
    publish_acked(&mut p2, publish_packet("r/q2", 2, true, 1, b"two")).await;
    publish_acked(&mut p1, publish_packet("r/replaced", 1, true, 2, b"old")).await;
    publish_acked(&mut p2, publish_packet("r/replaced", 1, true, 2, b"new")).await;
    publish_acked(&mut p1, publish_packet("r/gone", 1, true, 3, b"x")).await;
    // [MQTT-3.3.1-6] (v5) / [MQTT-3.3.1-10] (3.1.1): an empty retained payload deletes it.
    publish_acked(&mut p2, publish_packet("r/gone", 1, true, 3, b"")).await;
    broker.kill9();

    let broker = Durable::start(&dir, shards, "sync");
    let (conn, _) = Raw::connect(broker.addr, V5, "ret-reader", true).await;
    let mut inbox = Inbox::new(conn);
    subscribe(
        &mut inbox.conn,
        1,
        "r/#",
        SubscriptionOptions::with_qos(qos(2)),
        None,
    )
    .await;
    inbox
        .until(PHASE, "3 retained messages after restart", |i| {
            i.got.len() >= 3
        })
        .await;
    inbox.settle(SETTLE).await;
    let mut got = inbox.got.clone();
    got.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
    assert_eq!(
        topics(&got),
        ["r/props", "r/q2", "r/replaced"],
        "retained set after restart (r/gone was deleted)"
    );
    for p in &got {
        // [MQTT-3.3.1-9]: sent at subscribe (Retain Handling 0), with retain 1 (v5 3.3.1.3).
        assert!(p.retain, "{} delivered with retain 1", p.topic.as_str());
    }
    let (props, q2, replaced) = (&got[0], &got[1], &got[2]);
    assert_eq!(text(&replaced.payload), "new", "newest retained value wins");
    assert_eq!(q2.qos, qos(2), "retained QoS 2 kept");
    assert_eq!(text(&q2.payload), "two");
    assert_eq!(props.qos, qos(1));
    assert_eq!(text(&props.payload), "with props");
    let want = rich_props();
    let p = &props.properties;
    assert_eq!(p.payload_format_indicator, want.payload_format_indicator);
    assert_eq!(p.content_type, want.content_type);
    assert_eq!(p.response_topic, want.response_topic);
    assert_eq!(p.correlation_data, want.correlation_data);
    // [MQTT-3.3.2-17], [MQTT-3.3.2-18]: user properties forwarded unaltered, in order.
    assert_eq!(p.user_properties, want.user_properties);
    // [MQTT-3.3.2-6]: the expiry sent is the received value minus the time waited.
    let left = p.message_expiry_interval.expect("message expiry kept");
    assert!(
        (3500..=3600).contains(&left),
        "message expiry after restart: {left}"
    );
}

/// v5 subscriptions keep QoS, No Local, Retain As Published and their identifiers.
async fn v5_subscriptions_survive_kill(shards: usize) {
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("subopt", 2, shards);
    let (s_id, p_id) = (&ids[0], &ids[1]);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(V5, s_id, 300)).await;
    let local = SubscriptionOptions {
        qos: qos(1),
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    subscribe(&mut sub, 1, "o/local", local, Some(42)).await;
    subscribe(
        &mut sub,
        2,
        "o/+/x",
        SubscriptionOptions::with_qos(qos(2)),
        Some(7),
    )
    .await;
    disconnect(sub).await;
    // In sync mode this PUBACK waits for the subscriber's queued copy to be durable, which is
    // written after its subscriptions: a durability barrier for them.
    let (mut publ, _) = Raw::connect(broker.addr, V5, p_id, true).await;
    publish_acked(&mut publ, publish_packet("o/a/x", 1, false, 1, b"barrier")).await;
    broker.kill9();

    let broker = Durable::start(&dir, shards, "sync");
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(V5, s_id, 300)).await;
    assert!(ack.session_present, "session present after restart");
    let mut inbox = Inbox::new(conn);
    inbox
        .until(PHASE, "the queued message", |i| !i.got.is_empty())
        .await;
    let queued = &inbox.got[0];
    assert_eq!(text(&queued.payload), "barrier");
    assert_eq!(queued.qos, qos(1), "min(publish QoS 1, subscription QoS 2)");
    // [MQTT-3.3.4-3]: the subscription identifier travels with the queued delivery.
    assert_eq!(queued.properties.subscription_identifiers.as_slice(), [7]);

    // No Local [MQTT-3.8.3-3]: our own publish on o/local must not come back.
    let mine = publish_packet("o/local", 1, false, 10, b"mine");
    inbox.conn.send(&Packet::Publish(mine)).await;
    inbox
        .until(PHASE, "PUBACK of our own publish", |i| !i.acks.is_empty())
        .await;
    let (mut publ, _) = Raw::connect(broker.addr, V5, p_id, true).await;
    publish_acked(&mut publ, publish_packet("o/local", 1, true, 1, b"theirs")).await;
    publish_acked(&mut publ, publish_packet("o/b/x", 2, false, 2, b"exact")).await;
    inbox
        .until(PHASE, "2 more deliveries", |i| i.got.len() >= 3)
        .await;
    inbox.settle(SETTLE).await;
    let got: Vec<&str> = inbox.got.iter().map(|p| text(&p.payload)).collect();
    assert_eq!(got, ["barrier", "theirs", "exact"], "No Local kept");
    let (theirs, exact) = (&inbox.got[1], &inbox.got[2]);
    // [MQTT-3.3.1-13]: Retain As Published keeps the retain flag.
    assert!(theirs.retain, "retain as published kept");
    assert_eq!(theirs.qos, qos(1));
    assert_eq!(theirs.properties.subscription_identifiers.as_slice(), [42]);
    assert!(!exact.retain);
    assert_eq!(exact.qos, qos(2), "subscription QoS 2 kept");
    assert_eq!(exact.properties.subscription_identifiers.as_slice(), [7]);
}

/// 3.1.1 subscriptions keep their granted QoS across SIGKILL.
async fn v311_subscriptions_survive_kill(shards: usize) {
    let v = ProtocolVersion::V3_1_1;
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("subq", 2, shards);
    let (s_id, p_id) = (&ids[0], &ids[1]);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 0)).await;
    subscribe(
        &mut sub,
        1,
        "q/one",
        SubscriptionOptions::with_qos(qos(1)),
        None,
    )
    .await;
    subscribe(
        &mut sub,
        2,
        "q/two",
        SubscriptionOptions::with_qos(qos(2)),
        None,
    )
    .await;
    disconnect(sub).await;
    let (mut publ, _) = Raw::connect(broker.addr, v, p_id, true).await;
    publish_acked(&mut publ, publish_packet("q/two", 1, false, 1, b"barrier")).await;
    broker.kill9();

    let broker = Durable::start(&dir, shards, "sync");
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 0)).await;
    // [MQTT-3.2.2-2] (3.1.1): session present 1 when resuming a stored session.
    assert!(ack.session_present, "session present after restart");
    let mut inbox = Inbox::new(conn);
    let (mut publ, _) = Raw::connect(broker.addr, v, p_id, true).await;
    publish_acked(&mut publ, publish_packet("q/one", 2, false, 1, b"one")).await;
    publish_acked(&mut publ, publish_packet("q/two", 2, false, 2, b"two")).await;
    inbox
        .until(PHASE, "3 deliveries", |i| i.got.len() >= 3)
        .await;
    inbox.settle(SETTLE).await;
    let got: Vec<(&str, u8)> = inbox
        .got
        .iter()
        .map(|p| (text(&p.payload), p.qos as u8))
        .collect();
    // [MQTT-3.8.4-6] (3.1.1): delivered at min(publish QoS, granted QoS).
    assert_eq!(got, [("barrier", 1), ("one", 1), ("two", 2)]);
}

/// Whether `line` holds a duration such as `12ms`, `1.5s`, `830µs` or `12.3 ms`.
fn has_duration(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len()).any(|i| {
        if !b[i].is_ascii_digit() {
            return false;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
            j += 1;
        }
        let rest = line[j..].trim_start();
        ["ns", "µs", "us", "ms", "s"].iter().any(|u| {
            rest.starts_with(u)
                && !rest[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
        })
    })
}

/// A graceful restart: the recovery time is logged at startup and the persistent session
/// resumes with session present 1 and its queued message.
async fn restart_logs_recovery_and_resumes(proto: Proto, shards: usize) {
    let v = version(proto);
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("resume", 2, shards);
    let (s_id, p_id) = (&ids[0], &ids[1]);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 300)).await;
    subscribe(
        &mut sub,
        1,
        "rs/t",
        SubscriptionOptions::with_qos(qos(1)),
        None,
    )
    .await;
    disconnect(sub).await;
    let (mut publ, _) = Raw::connect(broker.addr, v, p_id, true).await;
    publish_acked(&mut publ, publish_packet("rs/t", 1, false, 1, b"kept")).await;
    let status = broker.terminate().expect("ringmq exits on SIGTERM");
    assert!(status.success(), "SIGTERM exit status: {status}");

    let broker = Durable::start(&dir, shards, "sync");
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, s_id, 300)).await;
    assert!(ack.session_present, "session present after restart");
    let mut inbox = Inbox::new(conn);
    inbox
        .until(PHASE, "the queued message", |i| !i.got.is_empty())
        .await;
    assert_eq!(text(&inbox.got[0].payload), "kept");
    let log = broker.stderr();
    assert!(
        log.lines()
            .any(|l| l.to_ascii_lowercase().contains("recover") && has_duration(l)),
        "no startup line with the recovery time in stderr:\n{log}"
    );
}

/// A v5 session with expiry 1 s is gone after a restart once its expiry has passed, while a
/// 300 s one resumes with its queued message; a queued message whose Message Expiry Interval
/// (1 s) passed across the restart is not delivered.
async fn v5_expired_session_gone_after_restart(shards: usize) {
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let ids = spread_ids("expiry", 3, shards);
    let (short, long, p_id) = (&ids[0], &ids[1], &ids[2]);
    for (id, expiry) in [(short, 1), (long, 300)] {
        let (mut c, _) = Raw::connect_with(broker.addr, persistent_connect(V5, id, expiry)).await;
        subscribe(
            &mut c,
            1,
            "ex/t",
            SubscriptionOptions::with_qos(qos(1)),
            None,
        )
        .await;
        disconnect(c).await;
    }
    let disconnected = Instant::now();
    let (mut publ, _) = Raw::connect(broker.addr, V5, p_id, true).await;
    let mut short_lived = publish_packet("ex/t", 1, false, 1, b"short-lived");
    short_lived.properties.message_expiry_interval = Some(1);
    publish_acked(&mut publ, short_lived).await;
    let published = Instant::now();
    publish_acked(&mut publ, publish_packet("ex/t", 1, false, 2, b"queued")).await;
    broker.kill9();
    let broker = Durable::start(&dir, shards, "sync");
    // The 1 s expiry must pass, counted from the disconnect, or from the restart if the broker
    // died before the disconnect was durable; nothing to poll meanwhile.
    let restarted = Instant::now();
    let until = (disconnected + Duration::from_millis(2000))
        .max(published + Duration::from_millis(1500))
        .max(restarted + Duration::from_millis(1500));
    tokio::time::sleep_until(until.into()).await;

    // v5 3.1.2.11.2: the session ends when its expiry interval has passed.
    let (mut gone, ack) = Raw::connect_with(broker.addr, persistent_connect(V5, short, 1)).await;
    assert!(!ack.session_present, "expired session must not be resumed");
    gone.expect_silence(QUIET, "no queued message for an expired session")
        .await;
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(V5, long, 300)).await;
    assert!(ack.session_present, "300 s session present after restart");
    let mut inbox = Inbox::new(conn);
    inbox
        .until(PHASE, "the queued message", |i| !i.got.is_empty())
        .await;
    inbox.settle(QUIET).await;
    let got: Vec<&str> = inbox.got.iter().map(|p| text(&p.payload)).collect();
    // [MQTT-3.3.2-5]: a message whose expiry passed before onward delivery is not delivered.
    assert_eq!(
        got,
        ["queued"],
        "expired message dropped, the other one kept"
    );
}

#[test]
fn duration_detector() {
    assert!(has_duration("INFO ringmq: recovered in 12.3ms sessions=1"));
    assert!(has_duration("recovery elapsed=830µs"));
    assert!(has_duration("recovered in 1.5 s"));
    assert!(!has_duration("recovered 3 sessions"));
}

mod retained_survives_kill {
    #[tokio::test]
    async fn v5_1shard() {
        super::retained_survives_kill(1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        super::retained_survives_kill(2).await
    }
}

mod subscriptions_survive_kill {
    #[tokio::test]
    async fn v311_1shard() {
        super::v311_subscriptions_survive_kill(1).await
    }
    #[tokio::test]
    async fn v311_2shards() {
        super::v311_subscriptions_survive_kill(2).await
    }
    #[tokio::test]
    async fn v5_1shard() {
        super::v5_subscriptions_survive_kill(1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        super::v5_subscriptions_survive_kill(2).await
    }
}

mod restart_logs_recovery_and_resumes {
    use super::Proto;
    #[tokio::test]
    async fn v311_1shard() {
        super::restart_logs_recovery_and_resumes(Proto::V4, 1).await
    }
    #[tokio::test]
    async fn v311_2shards() {
        super::restart_logs_recovery_and_resumes(Proto::V4, 2).await
    }
    #[tokio::test]
    async fn v5_1shard() {
        super::restart_logs_recovery_and_resumes(Proto::V5, 1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        super::restart_logs_recovery_and_resumes(Proto::V5, 2).await
    }
}

mod v5_expired_session_gone_after_restart {
    #[tokio::test]
    async fn v5_1shard() {
        super::v5_expired_session_gone_after_restart(1).await
    }
    #[tokio::test]
    async fn v5_2shards() {
        super::v5_expired_session_gone_after_restart(2).await
    }
}
