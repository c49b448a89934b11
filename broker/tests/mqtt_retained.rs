//! Retained messages: store, replace, delete with an empty payload, the RETAIN flag on
//! delivery, retain handling 0/1/2 and retain-as-published (v5), across shards.
#[macro_use]
mod common;

use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as Q5;

matrix! {
    fn retained_is_sent_to_new_subscribers_with_retain_set;
    fn retained_is_replaced_by_newer;
    fn empty_payload_deletes_retained;
    fn non_retained_publish_leaves_retained_alone;
    fn live_delivery_has_retain_clear;
    fn wildcard_subscription_gets_every_matching_retained;
    fn resubscribe_sends_retained_again;
    fn retained_delivery_qos_is_min_of_stored_and_granted;
    fn retained_outlives_the_publishers_session;
    fn qos0_retained_replaces_the_old_one;
    fn large_retained_replay_is_complete;
}

matrix_v5! {
    fn v5_retain_handling_1_sends_only_for_new_subscription;
    fn v5_retain_handling_2_never_sends_retained;
    fn v5_retain_as_published_keeps_retain_flag_on_live_delivery;
    fn v5_retained_message_expires;
}

/// Publishes a retained message and waits until the broker acknowledged it (QoS 1).
async fn store(c: &mut Client, topic: &str, payload: &str) {
    c.publish(topic, 1, true, payload.to_string()).await;
    c.wait_acked(1).await;
}

/// [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8] (3.1.1) / [MQTT-3.3.1-5], [MQTT-3.3.1-9]:
/// stored, sent on a new subscription, with RETAIN 1.
async fn retained_is_sent_to_new_subscribers_with_retain_set(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("ret");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "ret/a", "kept").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("ret/a", 1).await;
    let m = sub.recv("retained on subscribe").await;
    assert_eq!(
        (m.topic.as_str(), m.text(), m.retain),
        ("ret/a", "kept", true)
    );
    sub.expect_none(QUIET, "one retained message per topic")
        .await;
}

/// [MQTT-3.3.1-5]: a new retained message replaces the old one.
async fn retained_is_replaced_by_newer(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("repl");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "repl/a", "old").await;
    store(&mut publ, "repl/a", "new").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("repl/a", 1).await;
    assert_eq!(sub.recv("replaced retained").await.text(), "new");
    sub.expect_none(QUIET, "old one is gone").await;
}

/// [MQTT-3.3.1-10], [MQTT-3.3.1-11] (3.1.1) / [MQTT-3.3.1-6], [MQTT-3.3.1-7]: a zero-byte
/// retained message removes the stored one and is not itself stored; it is still delivered
/// to current subscribers.
async fn empty_payload_deletes_retained(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("del");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "del/a", "doomed").await;
    let mut live = ctx.client(&format!("{s}-live")).await;
    live.subscribe("del/a", 1).await;
    assert_eq!(live.recv("retained before delete").await.text(), "doomed");
    store(&mut publ, "del/a", "").await;
    let m = live.recv("empty retained is processed normally").await;
    assert!(m.payload.is_empty());
    let mut sub = ctx.client(&s).await;
    sub.subscribe("del/#", 1).await;
    sub.expect_none(QUIET, "deleted retained message is not sent")
        .await;
}

/// [MQTT-3.3.1-12] (3.1.1) / [MQTT-3.3.1-8]: RETAIN 0 neither stores nor replaces.
async fn non_retained_publish_leaves_retained_alone(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("keep");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "keep/a", "retained").await;
    publ.publish("keep/a", 1, false, "transient").await;
    publ.wait_acked(1).await;
    publ.publish("keep/b", 1, false, "transient").await;
    publ.wait_acked(1).await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("keep/+", 1).await;
    let m = sub.recv("retained survives").await;
    assert_eq!((m.topic.as_str(), m.text()), ("keep/a", "retained"));
    sub.expect_none(QUIET, "keep/b has nothing retained").await;
}

/// [MQTT-3.3.1-9] (3.1.1) / [MQTT-3.3.1-12] (retain as published 0): a retained publish
/// forwarded to an established subscription has RETAIN 0.
async fn live_delivery_has_retain_clear(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("live");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("live/a", 1).await;
    let publ = ctx.client(&p).await;
    publ.publish("live/a", 1, true, "now").await;
    let m = sub.recv("live retained publish").await;
    assert_eq!((m.text(), m.retain), ("now", false));
}

async fn wildcard_subscription_gets_every_matching_retained(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("many");
    let mut publ = ctx.client(&p).await;
    for i in 0..20 {
        store(&mut publ, &format!("many/{i}"), &i.to_string()).await;
    }
    store(&mut publ, "other/x", "no").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("many/#", 1).await;
    let mut got: Vec<String> = sub
        .recv_n(20, "retained replay")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("many/{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    sub.expect_none(QUIET, "nothing outside many/#").await;
}

/// [MQTT-3.8.4-3]: a SUBSCRIBE replacing an existing subscription re-sends retained messages
/// (v5: with the default retain handling 0).
async fn resubscribe_sends_retained_again(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("again");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "again/a", "r").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("again/a", 1).await;
    assert!(sub.recv("first").await.retain);
    sub.subscribe("again/a", 1).await;
    assert!(sub.recv("re-sent on resubscribe").await.retain);
}

async fn retained_delivery_qos_is_min_of_stored_and_granted(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rq");
    let mut publ = ctx.client(&p).await;
    publ.publish("rq/a", 2, true, "q2").await;
    publ.wait_acked(2).await;
    let mut s0 = ctx.client(&s).await;
    s0.subscribe("rq/a", 0).await;
    assert_eq!(s0.recv("retained at QoS 0").await.qos, 0);
    let mut s2 = ctx.client(&format!("{s}-2")).await;
    s2.subscribe("rq/a", 2).await;
    assert_eq!(s2.recv("retained at QoS 2").await.qos, 2);
}

fn filter(path: &str, rule: RetainForwardRule, rap: bool) -> Filter {
    Filter {
        path: path.into(),
        qos: Q5::AtLeastOnce,
        nolocal: false,
        preserve_retain: rap,
        retain_forward_rule: rule,
    }
}

/// [MQTT-3.3.1-10]: retain handling 1: retained sent only if the subscription did not exist.
async fn v5_retain_handling_1_sends_only_for_new_subscription(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rh1");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "rh1/a", "r").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe_v5(
        filter("rh1/a", RetainForwardRule::OnNewSubscribe, false),
        None,
    )
    .await;
    assert!(sub.recv("new subscription").await.retain);
    sub.subscribe_v5(
        filter("rh1/a", RetainForwardRule::OnNewSubscribe, false),
        None,
    )
    .await;
    sub.expect_none(QUIET, "existing subscription: no retained")
        .await;
}

/// [MQTT-3.3.1-11]: retain handling 2: retained messages not sent.
async fn v5_retain_handling_2_never_sends_retained(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rh2");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "rh2/a", "r").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe_v5(filter("rh2/a", RetainForwardRule::Never, false), None)
        .await;
    sub.expect_none(QUIET, "retain handling 2").await;
    publ.publish("rh2/a", 1, false, "live").await;
    assert_eq!(sub.recv("live still delivered").await.text(), "live");
}

/// [MQTT-3.3.1-13]: retain as published 1: RETAIN forwarded as published.
async fn v5_retain_as_published_keeps_retain_flag_on_live_delivery(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rap");
    let mut sub = ctx.client(&s).await;
    sub.subscribe_v5(filter("rap/a", RetainForwardRule::Never, true), None)
        .await;
    let publ = ctx.client(&p).await;
    publ.publish("rap/a", 1, true, "kept-flag").await;
    let m = sub.recv("retain as published").await;
    assert_eq!((m.text(), m.retain), ("kept-flag", true));
    publ.publish("rap/a", 1, false, "plain").await;
    assert!(!sub.recv("not retained").await.retain);
}

/// [MQTT-3.1.2-7] (3.1.1): retained messages are not part of the session; they survive its end.
async fn retained_outlives_the_publishers_session(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("outlive");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "outlive/a", "still here").await;
    publ.disconnect().await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("outlive/a", 1).await;
    assert_eq!(
        sub.recv("retained after the session ended").await.text(),
        "still here"
    );
}

/// [MQTT-3.3.1-7] (3.1.1): a QoS 0 retained message discards any earlier retained message
/// (the server may store or discard the new one).
async fn qos0_retained_replaces_the_old_one(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("q0r");
    let mut publ = ctx.client(&p).await;
    store(&mut publ, "q0r/a", "old").await;
    publ.publish("q0r/a", 0, true, "new").await;
    publ.publish("q0r/sync", 1, false, "barrier").await; // QoS 0 has no ack: order barrier
    publ.wait_acked(1).await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("q0r/a", 1).await;
    if let Some(m) = sub.recv_within(QUIET).await {
        assert_eq!(m.text(), "new", "the old retained message must be gone");
    }
}

/// v5 3.3.2.3.3 / [MQTT-3.3.2-5], [MQTT-3.3.2-6]: an expired retained message is discarded;
/// a live one is sent with its remaining expiry.
async fn v5_retained_message_expires(ctx: Ctx) {
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let (p, s) = ctx.pair_ids("rexp");
    let mut publ = ctx.client(&p).await;
    for (t, e) in [("rexp/short", 1u32), ("rexp/long", 100)] {
        let props = PublishProperties {
            message_expiry_interval: Some(e),
            ..Default::default()
        };
        publ.v5()
            .publish_with_properties(t, Q5::AtLeastOnce, true, Bytes::from_static(b"r"), props)
            .await
            .unwrap();
        publ.wait_acked(1).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await; // expiry needs time to pass
    let mut sub = ctx.client(&s).await;
    sub.subscribe("rexp/#", 1).await;
    let m = sub.recv("the unexpired retained message").await;
    assert_eq!(m.topic, "rexp/long");
    let left = m
        .props
        .unwrap_or_default()
        .message_expiry_interval
        .expect("remaining expiry");
    assert!((90..=98).contains(&left), "remaining expiry {left}");
    sub.expect_none(QUIET, "expired retained message discarded")
        .await;
}

/// Issue 3: retained replay runs in bounded steps (`retained_replay_batch`) and still sends
/// every matching retained message exactly once.
async fn large_retained_replay_is_complete(ctx: Ctx) {
    let ctx = Ctx {
        proto: ctx.proto,
        broker: Broker::start_with(ctx.shards(), |c| c.retained_replay_batch = 16),
    };
    let (p, s) = ctx.pair_ids("bulk");
    let mut publ = ctx.client(&p).await;
    const N: usize = 300;
    for i in 0..N {
        publ.publish(&format!("bulk/{}/{i}", i % 7), 0, true, i.to_string())
            .await;
    }
    store(&mut publ, "bulk/barrier", "last").await;
    let mut sub = ctx.client(&s).await;
    sub.subscribe("bulk/#", 1).await;
    let mut got: Vec<String> = sub
        .recv_n(N + 1, "retained replay")
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), N + 1, "every retained message once");
    sub.expect_none(QUIET, "nothing more").await;
}
