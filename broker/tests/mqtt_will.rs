//! Will messages: published on abnormal loss (socket drop, keep alive expiry, protocol
//! error), not after a normal DISCONNECT; v5 will delay and DISCONNECT 0x04.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::raw::{bytes_of, connect_packet, version};
use common::*;
use ringmq_codec::{
    Disconnect, DisconnectProperties, LastWill, Packet, QoS, ReasonCode, WillProperties,
};

matrix! {
    fn will_is_published_when_the_connection_drops;
    fn will_is_not_published_after_normal_disconnect;
    fn will_with_retain_is_stored_as_retained;
    fn will_is_published_when_keep_alive_expires;
    fn will_is_published_after_a_protocol_error;
    fn malformed_disconnect_does_not_discard_the_will;
}

matrix_v5! {
    fn v5_will_delay_holds_the_will;
    fn v5_reconnect_within_will_delay_cancels_the_will;
    fn v5_disconnect_with_will_message_publishes_it;
    fn v5_will_properties_are_forwarded;
    fn v5_will_is_sent_when_the_session_ends_before_the_delay;
}

async fn watcher(ctx: &Ctx, id: &str, filter: &str) -> Client {
    let mut w = ctx.client(id).await;
    w.subscribe(filter, 1).await;
    w
}

fn will(topic: &str, payload: &'static str) -> LastWill {
    LastWill {
        topic: common::raw::topic(topic),
        payload: bytes::Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    }
}

/// [MQTT-3.1.2-8]: the will is published when the network connection is closed without
/// DISCONNECT.
async fn will_is_published_when_the_connection_drops(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("drop");
    let mut watch = watcher(&ctx, &w, "will/drop").await;
    let client = Client::connect(ctx.opts(&c).will("will/drop", "gone", 1, false)).await;
    client.kill().await;
    let m = watch.recv("will after abnormal close").await;
    assert_eq!(
        (m.topic.as_str(), m.text(), m.qos, m.retain),
        ("will/drop", "gone", 1, false)
    );
}

/// [MQTT-3.1.2-10], [MQTT-3.14.4-3] (3.1.1) / [MQTT-3.1.2-10]: DISCONNECT (0x00) discards it.
async fn will_is_not_published_after_normal_disconnect(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("clean");
    let mut watch = watcher(&ctx, &w, "will/clean").await;
    let client = Client::connect(ctx.opts(&c).will("will/clean", "gone", 1, false)).await;
    client.disconnect().await;
    watch
        .expect_none(Duration::from_millis(500), "no will after DISCONNECT")
        .await;
}

/// [MQTT-3.1.2-17] (3.1.1) / [MQTT-3.1.2-15]: will retain 1 => published as retained.
async fn will_with_retain_is_stored_as_retained(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("wret");
    let mut live = watcher(&ctx, &format!("{w}-live"), "will/ret").await;
    let client = Client::connect(ctx.opts(&c).will("will/ret", "last", 1, true)).await;
    client.kill().await;
    live.recv("will published").await;
    let mut late = ctx.client(&w).await;
    late.subscribe("will/ret", 1).await;
    let m = late.recv("retained will").await;
    assert_eq!((m.text(), m.retain), ("last", true));
}

/// [MQTT-3.1.2-8]: the will is published when the server closes for keep alive expiry.
async fn will_is_published_when_keep_alive_expires(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("kaw");
    let mut watch = watcher(&ctx, &w, "will/ka").await;
    let mut p = connect_packet(version(ctx.proto), &c, true);
    p.keep_alive = 1;
    p.will = Some(will("will/ka", "timeout"));
    let (_raw, _) = Raw::connect_with(ctx.broker.addr, p).await;
    assert_eq!(
        watch.recv("will after keep alive expiry").await.text(),
        "timeout"
    );
}

/// [MQTT-3.1.2-8]: the will is published when the server closes for a protocol error.
async fn will_is_published_after_a_protocol_error(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("perr");
    let mut watch = watcher(&ctx, &w, "will/perr").await;
    let mut p = connect_packet(version(ctx.proto), &c, true);
    p.will = Some(will("will/perr", "violation"));
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, p).await;
    raw.send_bytes(&bytes_of::publish(0x36, b"qos/3", Some(1), None, b"x"))
        .await; // QoS 3
    raw.expect_closed(WAIT, "QoS 3 closes").await;
    assert_eq!(
        watch.recv("will after protocol error").await.text(),
        "violation"
    );
}

/// [MQTT-3.1.3-9]: the will is delayed by the Will Delay Interval.
async fn v5_will_delay_holds_the_will(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("delay");
    let mut watch = watcher(&ctx, &w, "will/delay").await;
    let mut o = ctx
        .opts(&c)
        .will("will/delay", "late", 1, false)
        .persistent(60);
    o.will.as_mut().unwrap().delay = Some(2);
    let client = Client::connect(o).await;
    let t0 = Instant::now();
    client.kill().await;
    watch
        .expect_none(Duration::from_millis(1200), "will held during its delay")
        .await;
    let m = watch.recv("will after delay").await;
    assert_eq!(m.text(), "late");
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "will sent after {:?}",
        t0.elapsed()
    );
}

/// [MQTT-3.1.3-9]: reconnecting to the session before the delay ends: the will is not sent.
async fn v5_reconnect_within_will_delay_cancels_the_will(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("cancel");
    let mut watch = watcher(&ctx, &w, "will/cancel").await;
    let mut o = ctx
        .opts(&c)
        .will("will/cancel", "never", 1, false)
        .persistent(60);
    o.will.as_mut().unwrap().delay = Some(1);
    let client = Client::connect(o.clone()).await;
    client.kill().await;
    let again = ctx.opts(&c).persistent(60);
    let back = Client::connect(again).await;
    assert!(back.session_present());
    watch
        .expect_none(Duration::from_millis(1800), "will cancelled by reconnect")
        .await;
}

/// [MQTT-3.14.2-1] reason 0x04 (Disconnect with Will Message): the will is published.
async fn v5_disconnect_with_will_message_publishes_it(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("dw");
    let mut watch = watcher(&ctx, &w, "will/dw").await;
    let mut p = connect_packet(version(ctx.proto), &c, true);
    p.will = Some(will("will/dw", "asked"));
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, p).await;
    raw.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::DisconnectWithWillMessage,
        properties: DisconnectProperties::default().into(),
    }))
    .await;
    raw.expect_closed(WAIT, "after DISCONNECT").await;
    assert_eq!(
        watch.recv("will after DISCONNECT 0x04").await.text(),
        "asked"
    );
}

/// [MQTT-3.14.1-1]: DISCONNECT with reserved bits set is malformed: it closes the connection
/// but is not a normal DISCONNECT, so the will is published.
async fn malformed_disconnect_does_not_discard_the_will(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("baddisc");
    let mut watch = watcher(&ctx, &w, "will/baddisc").await;
    let mut p = connect_packet(version(ctx.proto), &c, true);
    p.will = Some(will("will/baddisc", "malformed"));
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, p).await;
    raw.send_bytes(&[0xE1, 0x00]).await;
    raw.expect_closed(WAIT, "malformed DISCONNECT").await;
    assert_eq!(
        watch.recv("will after malformed DISCONNECT").await.text(),
        "malformed"
    );
}

/// [MQTT-3.1.3-10]: will properties are forwarded, user properties in order (also content
/// type, response topic, correlation data, payload format indicator).
async fn v5_will_properties_are_forwarded(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("wprops");
    let mut watch = watcher(&ctx, &w, "will/props").await;
    let mut p = connect_packet(version(ctx.proto), &c, true);
    let mut lw = will("will/props", "with-props");
    lw.properties.content_type = Some("text/plain".try_into().unwrap());
    lw.properties.response_topic = Some(common::raw::topic("will/reply"));
    lw.properties.correlation_data = Some(bytes::Bytes::from_static(b"corr"));
    lw.properties.payload_format_indicator = Some(1);
    lw.properties.user_properties = vec![
        ("z".try_into().unwrap(), "1".try_into().unwrap()),
        ("a".try_into().unwrap(), "2".try_into().unwrap()),
    ];
    p.will = Some(lw);
    let (raw, _) = Raw::connect_with(ctx.broker.addr, p).await;
    drop(raw);
    let m = watch.recv("will with properties").await;
    let props = m.props.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("will/reply"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr"[..]));
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(
        props.user_properties,
        vec![
            ("z".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string())
        ]
    );
}

/// [MQTT-3.1.3-9]: the will waits for the delay or the end of the session, whichever comes
/// first: session expiry 1 s, will delay 30 s: the will comes after about 1 s.
async fn v5_will_is_sent_when_the_session_ends_before_the_delay(ctx: Ctx) {
    let (c, w) = ctx.pair_ids("wend");
    let mut watch = watcher(&ctx, &w, "will/end").await;
    let mut o = ctx
        .opts(&c)
        .will("will/end", "session over", 1, false)
        .persistent(1);
    o.will.as_mut().unwrap().delay = Some(30);
    let client = Client::connect(o).await;
    let t0 = Instant::now();
    client.kill().await;
    let m = watch.recv("will at the end of the session").await;
    assert_eq!(m.text(), "session over");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "not before the session ended: {:?}",
        t0.elapsed()
    );
}
