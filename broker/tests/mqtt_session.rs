//! Sessions: clean session / clean start, v5 session expiry, the offline queue, session
//! present, resending unacknowledged messages with DUP on resume, takeover of a session.
#[macro_use]
mod common;

use std::time::Duration;

use common::raw::{connect_packet, resp, subscribe_packet, version};
use common::*;
use ringmq_codec::{Connect, Packet, ProtocolVersion, QoS};

matrix! {
    fn persistent_session_queues_qos1_and_2_while_offline;
    fn clean_session_discards_the_old_session;
    fn no_session_means_session_present_0;
    fn unacked_qos1_is_resent_with_dup_on_resume;
    fn unacked_qos2_pubrel_is_resent_on_resume;
    fn takeover_keeps_the_persistent_session;
    fn offline_queue_is_bounded;
    fn pubrel_follows_pubrec_order;
    fn inflight_delivery_completes_after_unsubscribe;
    fn inbound_qos2_state_survives_reconnect;
}

matrix_v5! {
    fn v5_session_expiry_0_ends_session_at_disconnect;
    fn v5_session_expires_after_its_interval;
    fn v5_puback_with_error_completes_the_message;
    fn shared_inflight_message_resumes_to_the_same_member;
    fn v5_disconnect_can_end_the_session;
    fn v5_disconnect_cannot_extend_a_zero_expiry;
}

/// A CONNECT resuming (clean 0) a session that outlives the connection (v5: expiry 300 s).
fn persistent(ctx: &Ctx, id: &str) -> Connect {
    let mut c = connect_packet(version(ctx.proto), id, false);
    if ctx.proto == Proto::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// Time must pass for an expiry the spec defines; nothing observable to poll meanwhile.
async fn let_time_pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// [MQTT-3.1.2-4], [MQTT-3.1.2-5] (3.1.1) / [MQTT-3.1.2-4]..: a persistent session keeps
/// subscriptions and queues QoS 1/2 messages while offline; [MQTT-3.2.2-2] (3.1.1) /
/// [MQTT-3.2.2-3] session present 1 on resume.
async fn persistent_session_queues_qos1_and_2_while_offline(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("offline");
    let mut sub = Client::connect(ctx.opts(&s).persistent(300)).await;
    assert!(!sub.session_present());
    sub.subscribe("off/#", 2).await;
    sub.disconnect().await;
    let mut publ = ctx.client(&p).await;
    for q in [1u8, 2] {
        publ.publish(&format!("off/{q}"), q, false, format!("queued{q}"))
            .await;
        publ.wait_acked(q).await;
    }
    let mut back = Client::connect(ctx.opts(&s).persistent(300)).await;
    assert!(back.session_present(), "session present 1 on resume");
    let got: Vec<(String, u8)> = back
        .recv_n(2, "queued while offline")
        .await
        .into_iter()
        .map(|m| (m.text().to_string(), m.qos))
        .collect();
    assert_eq!(got, vec![("queued1".into(), 1), ("queued2".into(), 2)]);
}

/// [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4]: clean session/start 1 discards any session.
async fn clean_session_discards_the_old_session(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("discard");
    let mut sub = Client::connect(ctx.opts(&s).persistent(300)).await;
    sub.subscribe("disc/#", 1).await;
    sub.disconnect().await;
    let mut publ = ctx.client(&p).await;
    publ.publish("disc/a", 1, false, "stale").await;
    publ.wait_acked(1).await;
    let mut clean = ctx.client(&s).await;
    assert!(!clean.session_present());
    clean.expect_none(QUIET, "queued messages discarded").await;
    clean.disconnect().await;
    let mut again = Client::connect(ctx.opts(&s).persistent(300)).await;
    assert!(
        !again.session_present(),
        "the clean session replaced the old one"
    );
    publ.publish("disc/a", 1, false, "after").await;
    again.expect_none(QUIET, "old subscription is gone").await;
}

/// [MQTT-3.2.2-3] (3.1.1) / [MQTT-3.2.2-3]: clean 0 without a stored session: present 0.
async fn no_session_means_session_present_0(ctx: Ctx) {
    let c = Client::connect(ctx.opts("fresh-persistent").persistent(300)).await;
    assert!(!c.session_present());
}

/// [MQTT-4.4.0-1]: on resume with clean 0 the server resends unacknowledged PUBLISH packets
/// with DUP 1 [MQTT-3.3.1-1] and the original packet identifier.
async fn unacked_qos1_is_resent_with_dup_on_resume(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("dup");
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "dup/t", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    let mut first = Vec::new();
    for i in 0..3 {
        publ.publish("dup/t", 1, false, format!("unacked{i}")).await;
        let m = raw.expect_publish("first delivery").await;
        assert!(!m.dup, "first delivery has DUP 0");
        assert_eq!(m.qos, QoS::AtLeastOnce);
        first.push(m);
    }
    drop(raw); // no PUBACK
    let (mut raw, ack) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    assert!(ack.session_present);
    // [MQTT-4.6.0-1]: re-sent in the original order.
    for f in &first {
        let again = raw.expect_publish("redelivery").await;
        assert!(again.dup, "redelivery has DUP 1");
        assert_eq!(again.packet_id, f.packet_id, "same packet identifier");
        assert_eq!(again.payload, f.payload, "original order");
        raw.send(&Packet::PubAck(resp(again.packet_id.unwrap().get())))
            .await;
    }
    raw.expect_silence(QUIET, "acknowledged: not sent again")
        .await;
}

/// [MQTT-4.4.0-1]: after PUBREC, an unfinished QoS 2 delivery resumes with PUBREL.
async fn unacked_qos2_pubrel_is_resent_on_resume(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("rel");
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "rel/t", 2)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    publ.publish("rel/t", 2, false, "q2").await;
    let first = raw.expect_publish("QoS 2 delivery").await;
    let id = first.packet_id.expect("QoS 2 has a packet id").get();
    raw.send(&Packet::PubRec(resp(id))).await;
    match raw.expect_packet("PUBREL").await {
        Packet::PubRel(r) => assert_eq!(r.packet_id.get(), id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(raw); // no PUBCOMP
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    match raw.expect_packet("PUBREL resent").await {
        Packet::PubRel(r) => assert_eq!(r.packet_id.get(), id),
        other => panic!("expected PUBREL on resume (not the PUBLISH again), got {other:?}"),
    }
    raw.send(&Packet::PubComp(resp(id))).await;
    raw.expect_silence(QUIET, "flow complete").await;
}

/// [MQTT-3.1.4-2] (3.1.1) / [MQTT-3.1.4-3]: takeover by clean 0 resumes the same session.
async fn takeover_keeps_the_persistent_session(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("take");
    let mut first = Client::connect(ctx.opts(&s).persistent(300)).await;
    first.subscribe("take/t", 1).await;
    let mut second = Client::connect(ctx.opts(&s).persistent(300)).await;
    assert!(second.session_present(), "takeover resumes the session");
    // The old connection is closed. The v5 reason (0x8E) is checked byte-exact by
    // mqtt_connect::takeover_closes_the_old_connection: the broker sends the short form
    // `E0 01 8E` (property length omitted, v5 3.14.2.2.1), which rumqttc 0.25 does not parse
    // (it reports "closed by peer"), so it is not asserted through rumqttc here.
    let _ = first.closed_by_broker(WAIT).await;
    let publ = ctx.client(&p).await;
    publ.publish("take/t", 1, false, "to-second").await;
    assert_eq!(
        second
            .recv("subscription moved with the session")
            .await
            .text(),
        "to-second"
    );
}

/// The offline queue is bounded (`max_queued_messages`); the default policy drops the newest.
async fn offline_queue_is_bounded(ctx: Ctx) {
    let broker = Broker::start_with(ctx.shards(), |c| {
        c.max_queued_messages = 3;
        c.receive_maximum = 1;
    });
    // Publisher and subscriber share a home shard here: a PUBACK from another shard does not
    // mean the message already sits in the remote queue, so a late arrival after the resume
    // freed space would be legitimate and make the bound unobservable.
    let (sub_id, pub_id) = same_shard_ids("bounded", ctx.shards());
    let o = Opts::new(ctx.proto, broker.addr, &sub_id).persistent(300);
    let mut sub = Client::connect(o.clone()).await;
    sub.subscribe("bound/t", 1).await;
    sub.disconnect().await;
    let mut publ = Client::connect(Opts::new(ctx.proto, broker.addr, &pub_id)).await;
    for i in 0..10 {
        publ.publish("bound/t", 1, false, i.to_string()).await;
        publ.wait_acked(1).await;
    }
    let mut back = Client::connect(o).await;
    let mut got = Vec::new();
    while let Some(m) = back.recv_within(Duration::from_millis(500)).await {
        got.push(m.text().to_string());
    }
    // 3 queued plus at most the 1-message inflight window; drop-newest keeps the oldest.
    assert!(
        (3..=4).contains(&got.len()),
        "queue bounded to 3 (+1 inflight), got {got:?}"
    );
    let want: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "drop-newest keeps the oldest messages, in order");
}

/// v5 3.1.2.11.2: absent Session Expiry Interval = 0: the session ends with the connection.
async fn v5_session_expiry_0_ends_session_at_disconnect(ctx: Ctx) {
    let mut o = ctx.opts("expiry0");
    o.clean = false;
    let mut c = Client::connect(o.clone()).await;
    c.subscribe("e0/t", 1).await;
    c.disconnect().await;
    let again = Client::connect(o).await;
    assert!(
        !again.session_present(),
        "expiry 0: no session after disconnect"
    );
}

/// v5 3.1.2.11.2: the session is kept for the interval, then discarded.
async fn v5_session_expires_after_its_interval(ctx: Ctx) {
    let o = ctx.opts("expiry1").persistent(1);
    let mut c = Client::connect(o.clone()).await;
    c.subscribe("e1/t", 1).await;
    c.disconnect().await;
    let_time_pass(Duration::from_millis(2200)).await;
    let again = Client::connect(o).await;
    assert!(!again.session_present(), "session expired after 1 s");
}

/// [MQTT-4.4.0-2]: a PUBACK with a reason code >= 0x80 completes the message: not re-sent
/// on resume.
async fn v5_puback_with_error_completes_the_message(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("nack");
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "nack/t", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    publ.publish("nack/t", 1, false, "refused").await;
    let m = raw.expect_publish("delivery").await;
    let mut nack = resp(m.packet_id.unwrap().get());
    nack.reason = ringmq_codec::ReasonCode::UnspecifiedError;
    raw.send(&Packet::PubAck(nack)).await;
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.expect_any("PINGRESP").await, Packet::PingResp));
    drop(raw);
    let (mut raw, ack) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    assert!(ack.session_present);
    raw.expect_silence(QUIET, "refused message is complete, not re-sent")
        .await;
}

/// [MQTT-4.6.0-4]: PUBREL packets go out in the order of the PUBREC packets received.
async fn pubrel_follows_pubrec_order(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("relorder");
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &s, true).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "ro/t", 2)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    for i in 0..3 {
        publ.publish("ro/t", 2, false, i.to_string()).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(raw.expect_publish("QoS 2").await.packet_id.unwrap().get());
    }
    for &id in ids.iter().rev() {
        raw.send(&Packet::PubRec(resp(id))).await;
    }
    for &id in ids.iter().rev() {
        match raw.expect_packet("PUBREL").await {
            Packet::PubRel(r) => assert_eq!(r.packet_id.get(), id, "PUBREL in PUBREC order"),
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
}

/// [MQTT-3.10.4-3]: a QoS 1 delivery started before UNSUBSCRIBE is completed: still re-sent
/// on resume until acknowledged.
async fn inflight_delivery_completes_after_unsubscribe(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("unsubflight");
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "uf/t", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    let publ = ctx.client(&p).await;
    publ.publish("uf/t", 1, false, "started").await;
    let first = raw.expect_publish("delivery started").await;
    let mut body = vec![0, 2];
    if ctx.proto == Proto::V5 {
        body.push(0);
    }
    body.extend(common::raw::bytes_of::s(b"uf/t"));
    raw.send_bytes(&common::raw::bytes_of::frame(0xA2, &body))
        .await;
    assert!(matches!(
        raw.expect_packet("UNSUBACK").await,
        Packet::UnsubAck(_)
    ));
    drop(raw);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &s)).await;
    let again = raw.expect_publish("in-flight delivery completed").await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    raw.send(&Packet::PubAck(resp(again.packet_id.unwrap().get())))
        .await;
    publ.publish("uf/t", 1, false, "after").await;
    raw.expect_silence(QUIET, "no new messages after UNSUBSCRIBE")
        .await;
}

/// [MQTT-4.8.2-4], [MQTT-4.8.2-5]: an unacknowledged shared-subscription message goes back
/// to the same member when it reconnects, and to no other member meanwhile.
async fn shared_inflight_message_resumes_to_the_same_member(ctx: Ctx) {
    let ids = spread_ids("shflight", 3, ctx.shards());
    let (mut a, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &ids[0])).await;
    a.send(&Packet::Subscribe(subscribe_packet(1, "$share/g/sf/t", 1)))
        .await;
    assert!(matches!(a.expect_packet("SUBACK").await, Packet::SubAck(_)));
    let mut b = ctx.client(&ids[1]).await;
    b.subscribe("$share/g/sf/t", 1).await;
    let publ = ctx.client(&ids[2]).await;
    // Publish until member `a` holds one unacknowledged message.
    let mut held = None;
    for i in 0..20 {
        publ.publish("sf/t", 1, false, i.to_string()).await;
        if let common::raw::RawEv::Packet(Packet::Publish(m)) = a.recv(QUIET).await {
            held = Some(m);
            break;
        }
    }
    let held = held.expect("round robin reaches member a");
    drop(a);
    let mut seen_by_b = Vec::new();
    while let Some(m) = b.recv_within(QUIET).await {
        seen_by_b.push(m.payload.clone());
    }
    assert!(
        !seen_by_b.contains(&held.payload),
        "not re-routed to another member"
    );
    let (mut a, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &ids[0])).await;
    let again = a.expect_publish("resumed to the same member").await;
    assert_eq!(
        (again.dup, again.payload.clone()),
        (true, held.payload.clone())
    );
}

fn disconnect_with_expiry(expiry: u32) -> Packet {
    Packet::Disconnect(ringmq_codec::Disconnect {
        reason: ringmq_codec::ReasonCode::Success,
        properties: ringmq_codec::DisconnectProperties {
            session_expiry_interval: Some(expiry),
            ..Default::default()
        }
        .into(),
    })
}

/// v5 3.14.2.2.2: a Session Expiry Interval in DISCONNECT replaces the one of CONNECT; 0 ends
/// the session with the connection.
async fn v5_disconnect_can_end_the_session(ctx: Ctx) {
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, "endme")).await;
    raw.send(&disconnect_with_expiry(0)).await;
    raw.expect_closed(WAIT, "after DISCONNECT").await;
    let (_raw, ack) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, "endme")).await;
    assert!(
        !ack.session_present,
        "expiry 0 in DISCONNECT ended the session"
    );
}

/// v5 3.14.2.2.2: CONNECT expiry 0 then DISCONNECT expiry > 0 is a protocol error: the
/// session does not survive (and v5 may answer DISCONNECT 0x82).
async fn v5_disconnect_cannot_extend_a_zero_expiry(ctx: Ctx) {
    let c = connect_packet(ProtocolVersion::V5, "noextend", false);
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, c.clone()).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, "ne/t", 1)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    raw.send(&disconnect_with_expiry(300)).await;
    let got = raw.expect_closed(WAIT, "after DISCONNECT").await;
    if let Some(Packet::Disconnect(d)) = got.last() {
        assert_eq!(d.reason, ringmq_codec::ReasonCode::ProtocolError);
    }
    let (_raw, ack) = Raw::connect_with(ctx.broker.addr, c).await;
    assert!(
        !ack.session_present,
        "the session ended with the connection"
    );
}

/// 3.1.1 4.1 / v5 4.1 session state: QoS 2 messages received from the client but not fully
/// acknowledged survive a reconnect (clean 0): the re-sent PUBREL completes the flow, and the
/// message is delivered exactly once.
async fn inbound_qos2_state_survives_reconnect(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("inq2");
    let mut sub = ctx.client(&s).await;
    sub.subscribe("inq2/t", 2).await;
    let (mut raw, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &p)).await;
    let props: Option<&[u8]> = (ctx.proto == Proto::V5).then_some(&[]);
    raw.send_bytes(&common::raw::bytes_of::publish(
        0x34,
        b"inq2/t",
        Some(5),
        props,
        b"once",
    ))
    .await;
    assert!(
        matches!(raw.expect_packet("PUBREC").await, Packet::PubRec(r) if r.packet_id.get() == 5)
    );
    drop(raw); // no PUBREL yet
    let (mut raw, ack) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, &p)).await;
    assert!(ack.session_present);
    // A client resending the PUBLISH (DUP) before PUBREL must not cause a second delivery.
    raw.send_bytes(&common::raw::bytes_of::publish(
        0x3C,
        b"inq2/t",
        Some(5),
        props,
        b"once",
    ))
    .await;
    assert!(
        matches!(raw.expect_packet("PUBREC again").await, Packet::PubRec(r) if r.packet_id.get() == 5)
    );
    raw.send(&Packet::PubRel(resp(5))).await;
    assert!(
        matches!(raw.expect_packet("PUBCOMP").await, Packet::PubComp(c) if c.packet_id.get() == 5)
    );
    assert_eq!(sub.recv("delivered").await.text(), "once");
    sub.expect_none(QUIET, "exactly once across the reconnect")
        .await;
}
