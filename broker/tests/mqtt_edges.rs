//! Edge rules of the QoS flows and of the v5 wire format, checked byte by byte with our
//! codec-based client: QoS 2 flows that outlive their message's expiry, shared-subscription
//! messages refused by a member, property length 0 when there are no properties, and server
//! packets that never carry a Reason String or User Property.
#[macro_use]
mod common;

use std::time::Duration;

use common::raw::{connect_packet, publish_packet, resp, subscribe_packet, version};
use common::*;
use ringmq_codec::{Connect, Packet, PubResp, ReasonCode};

matrix! {
    fn server_packets_without_properties_have_property_length_0;
}

matrix_v5! {
    fn qos2_flows_complete_after_the_message_expired;
    fn shared_message_refused_by_a_member_is_not_resent;
    fn server_packets_carry_no_reason_string_or_user_property;
}

/// Time must pass for an expiry the spec defines; nothing observable to poll meanwhile.
async fn let_time_pass(d: Duration) {
    tokio::time::sleep(d).await;
}

fn persistent(ctx: &Ctx, id: &str) -> Connect {
    let mut c = connect_packet(version(ctx.proto), id, false);
    if ctx.proto == Proto::V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

async fn subscribed(ctx: &Ctx, id: &str, filter: &str, qos: u8) -> Raw {
    let (mut raw, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), id, true).await;
    raw.send(&Packet::Subscribe(subscribe_packet(1, filter, qos)))
        .await;
    assert!(matches!(
        raw.expect_packet("SUBACK").await,
        Packet::SubAck(_)
    ));
    raw
}

/// Round trip that proves every packet sent before it was processed.
async fn ping(raw: &mut Raw) {
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.expect_any("PINGRESP").await, Packet::PingResp));
}

fn id_of(r: &PubResp) -> u16 {
    r.packet_id.get()
}

/// [MQTT-4.3.3-13]: the QoS 2 flow is completed even when the message expired meanwhile,
/// inbound (PUBREL answered with PUBCOMP 0x00) and outbound (PUBREC answered with PUBREL).
async fn qos2_flows_complete_after_the_message_expired(ctx: Ctx) {
    let (p, s) = ctx.pair_ids("exp2");
    let mut sub = subscribed(&ctx, &s, "exp2/#", 2).await;
    let (mut publ, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &p, true).await;
    let mut msg = publish_packet("exp2/t", 2, false, 7, b"short-lived");
    msg.properties.message_expiry_interval = Some(1);
    publ.send(&Packet::Publish(msg)).await;
    match publ.expect_packet("PUBREC").await {
        Packet::PubRec(r) => {
            assert_eq!(id_of(&r), 7);
            assert_eq!(r.reason, ReasonCode::Success);
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let got = sub.expect_publish("delivery before expiry").await;
    let out_id = got.packet_id.expect("QoS 2 delivery has an id").get();
    let_time_pass(Duration::from_millis(1300)).await;
    sub.send(&Packet::PubRec(resp(out_id))).await;
    match sub.expect_packet("PUBREL after expiry").await {
        Packet::PubRel(r) => assert_eq!(id_of(&r), out_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.send(&Packet::PubComp(resp(out_id))).await;
    publ.send(&Packet::PubRel(resp(7))).await;
    match publ.expect_packet("PUBCOMP after expiry").await {
        Packet::PubComp(r) => {
            assert_eq!(id_of(&r), 7);
            assert_eq!(r.reason, ReasonCode::Success);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    ping(&mut sub).await;
    sub.expect_silence(QUIET, "the message is delivered once")
        .await;
}

/// [MQTT-4.8.2-6]: a shared-subscription message a member refuses with PUBACK >= 0x80 is
/// complete: not resent to that member on resume, not sent to another member.
async fn shared_message_refused_by_a_member_is_not_resent(ctx: Ctx) {
    let ids = spread_ids("sharenack", 3, ctx.shards());
    let (a_id, b_id, p_id) = (&ids[0], &ids[1], &ids[2]);
    let (mut a, _) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, a_id)).await;
    a.send(&Packet::Subscribe(subscribe_packet(1, "$share/g/sn/t", 1)))
        .await;
    assert!(matches!(a.expect_packet("SUBACK").await, Packet::SubAck(_)));
    let publ = ctx.client(p_id).await;
    publ.publish("sn/t", 1, false, "refused").await;
    let m = a.expect_publish("the only member gets it").await;
    let mut nack = resp(m.packet_id.expect("QoS 1").get());
    nack.reason = ReasonCode::UnspecifiedError;
    a.send(&Packet::PubAck(nack)).await;
    ping(&mut a).await;
    let mut b = subscribed(&ctx, b_id, "$share/g/sn/t", 1).await;
    drop(a);
    let (mut a, ack) = Raw::connect_with(ctx.broker.addr, persistent(&ctx, a_id)).await;
    assert!(ack.session_present, "the member's session is kept");
    a.expect_silence(QUIET, "refused message not resent to the member")
        .await;
    b.expect_silence(QUIET, "refused message not sent to another member")
        .await;
}

/// [MQTT-2.2.2-1]: a v5 packet without properties carries Property Length 0 (SUBACK,
/// UNSUBACK, a forwarded PUBLISH); 3.1.1 packets have no property field at all. Checked on
/// the exact bytes.
async fn server_packets_without_properties_have_property_length_0(ctx: Ctx) {
    let v5 = ctx.proto == Proto::V5;
    let (p, s) = ctx.pair_ids("proplen");
    let (mut sub, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &s, true).await;
    sub.send(&Packet::Subscribe(subscribe_packet(5, "pl/t", 0)))
        .await;
    let suback = sub.read_raw(WAIT).await.expect("SUBACK bytes");
    let want: &[u8] = if v5 {
        &[0x90, 0x04, 0x00, 0x05, 0x00, 0x00]
    } else {
        &[0x90, 0x03, 0x00, 0x05, 0x00]
    };
    assert_eq!(suback, want, "SUBACK");
    let (mut publ, _) = Raw::connect(ctx.broker.addr, version(ctx.proto), &p, true).await;
    publ.send(&Packet::Publish(publish_packet("pl/t", 0, false, 0, b"x")))
        .await;
    ping(&mut publ).await;
    let publish = sub.read_raw(WAIT).await.expect("PUBLISH bytes");
    let mut want = vec![0x30, 0, 0x00, 0x04, b'p', b'l', b'/', b't'];
    if v5 {
        want.push(0x00);
    }
    want.push(b'x');
    want[1] = (want.len() - 2) as u8;
    assert_eq!(publish, want, "forwarded PUBLISH");
    let unsub = ringmq_codec::Unsubscribe {
        packet_id: common::raw::pid(6),
        filters: vec![common::raw::filter("pl/t")],
        properties: Default::default(),
    };
    sub.send(&Packet::Unsubscribe(unsub)).await;
    let unsuback = sub.read_raw(WAIT).await.expect("UNSUBACK bytes");
    let want: &[u8] = if v5 {
        &[0xB0, 0x04, 0x00, 0x06, 0x00, 0x00]
    } else {
        &[0xB0, 0x02, 0x00, 0x06]
    };
    assert_eq!(unsuback, want, "UNSUBACK");
}

/// [MQTT-3.2.2-19], [MQTT-3.2.2-20] (and the same rule for every other packet): the server
/// never adds a Reason String or User Property, so none can push a packet over the client's
/// Maximum Packet Size. Checked on a CONNACK, a PUBACK, a PUBACK refusal (0x99) and a
/// DISCONNECT for a client that allows small packets only.
async fn server_packets_carry_no_reason_string_or_user_property(ctx: Ctx) {
    let mut c = connect_packet(version(ctx.proto), "noreason", true);
    c.properties.maximum_packet_size = Some(64);
    let (mut raw, ack) = Raw::connect_with(ctx.broker.addr, c).await;
    assert!(ack.properties.reason_string.is_none());
    assert!(ack.properties.user_properties.is_empty());
    raw.send(&Packet::Publish(publish_packet("nr/t", 1, false, 3, b"x")))
        .await;
    match raw.expect_packet("PUBACK").await {
        Packet::PubAck(r) => {
            assert!(r.properties.reason_string.is_none());
            assert!(r.properties.user_properties.is_empty());
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // An invalid UTF-8 payload marked as UTF-8 is refused: PUBACK 0x99, still no reason string.
    let mut bad = publish_packet("nr/t", 1, false, 4, &[0xff, 0xfe]);
    bad.properties.payload_format_indicator = Some(1);
    raw.send(&Packet::Publish(bad)).await;
    match raw.expect_packet("PUBACK 0x99").await {
        Packet::PubAck(r) => {
            assert_eq!(r.reason, ReasonCode::PayloadFormatInvalid);
            assert!(r.properties.reason_string.is_none());
            assert!(r.properties.user_properties.is_empty());
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // The refusal is counted by its reason.
    assert_eq!(
        ctx.broker
            .stat(|s| s.refusals_for(ReasonCode::PayloadFormatInvalid)),
        1
    );
    // Topic Alias 0 is a protocol error: DISCONNECT 0x94 without a reason string.
    let mut bad = publish_packet("nr/t", 0, false, 0, b"x");
    bad.properties.topic_alias = Some(0);
    raw.send(&Packet::Publish(bad)).await;
    let got = raw.expect_closed(WAIT, "DISCONNECT 0x94").await;
    let d = got
        .iter()
        .find_map(|p| match p {
            Packet::Disconnect(d) => Some(d),
            _ => None,
        })
        .expect("a v5 DISCONNECT before the close");
    assert!(d.properties.reason_string.is_none());
    assert!(d.properties.user_properties.is_empty());
}
