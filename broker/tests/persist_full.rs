//! A full store on the publisher's own shard (issue 5): a clear log line, new QoS 1/2 refused
//! (v5 PUBACK 0x97 Quota exceeded; 3.1.1 has no negative acknowledgement, so the connection is
//! closed), QoS 0 still served, and nothing already acknowledged lost, across SIGKILL too.
//!
//! The store is capped at 1 MiB (`--store-max-bytes`, through `RINGMQ_STORE_MAX_BYTES`, which
//! the brokers this test process starts inherit); an offline persistent subscriber takes 64 KiB
//! QoS 1 messages until the commits fail for lack of space. One test function: the variable is
//! process-wide.
#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::persist::{disconnect, persistent_connect, qos, subscribe, DataDir, Durable, Inbox};
use common::raw::{connect_packet, pid, RawEv};
use common::{check_for, Raw, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, Publish, ReasonCode, SubscriptionOptions};

const PAYLOAD: usize = 64 << 10;
/// 1 MiB holds about 15 such messages; a cap that never bites fails the test.
const MAX_MESSAGES: u16 = 200;

/// A 64 KiB QoS 1 PUBLISH whose payload starts with its packet id.
fn big(id: u16) -> Packet {
    let mut payload = format!("{id:05}:").into_bytes();
    payload.resize(PAYLOAD, b'x');
    Packet::Publish(Publish {
        dup: false,
        qos: qos(1),
        retain: false,
        topic: common::raw::topic("full/x"),
        packet_id: Some(pid(id)),
        properties: Default::default(),
        payload: Bytes::from(payload),
    })
}

fn live(text: &str) -> Packet {
    Packet::Publish(common::raw::publish_packet(
        "live/t",
        0,
        false,
        0,
        text.as_bytes(),
    ))
}

/// The answer to one QoS 1 PUBLISH: `Some(reason)` for a PUBACK, `None` for a close.
async fn answer(c: &mut Raw, what: &str) -> Option<ReasonCode> {
    match c.recv(WAIT).await {
        RawEv::Packet(Packet::PubAck(r)) => Some(r.reason),
        RawEv::Packet(Packet::Disconnect(_)) | RawEv::Closed => None,
        other => panic!("{what}: expected PUBACK or a close, got {other:?}"),
    }
}

async fn publisher(addr: std::net::SocketAddr, v: ProtocolVersion) -> Raw {
    Raw::connect_with(addr, connect_packet(v, "full-pub", true))
        .await
        .0
}

/// Publishes until the broker stops acknowledging with Success; returns the acknowledged ids.
async fn fill(addr: std::net::SocketAddr, v: ProtocolVersion) -> BTreeSet<u16> {
    let mut publ = publisher(addr, v).await;
    let mut acked = BTreeSet::new();
    for id in 1..=MAX_MESSAGES {
        publ.send(&big(id)).await;
        match answer(&mut publ, "publish while filling").await {
            Some(ReasonCode::Success) => {
                acked.insert(id);
            }
            // The message whose commit failed: refused (v5) or its connection closed.
            Some(ReasonCode::QuotaExceeded) if v == ProtocolVersion::V5 => return acked,
            None => return acked,
            Some(other) => panic!("unexpected PUBACK reason {other:?}"),
        }
    }
    panic!("{MAX_MESSAGES} messages of {PAYLOAD} bytes fit a 1 MiB store: cap not applied?");
}

/// Resumes the subscriber's session on the still-full store, at the first attempt: the resume
/// sends queued messages, and their rows' moves to "awaiting PUBACK" (64 KiB each) cannot be
/// stored; the commit drops those optional updates and retries, so the CONNACK's commit (the
/// session row) still succeeds.
async fn resume(addr: std::net::SocketAddr, v: ProtocolVersion) -> (Raw, ringmq_codec::ConnAck) {
    let mut raw = Raw::open(addr, v).await;
    let connect = persistent_connect(v, "full-sub", 300);
    raw.send(&Packet::Connect(Box::new(connect))).await;
    match raw.recv(WAIT).await {
        RawEv::Packet(Packet::ConnAck(ack)) if ack.reason == ReasonCode::Success => (raw, ack),
        other => panic!("resume on a full store: expected CONNACK, got {other:?}"),
    }
}

async fn full(v: ProtocolVersion) {
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, 1, "sync");
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, "full-sub", 300)).await;
    let q1 = SubscriptionOptions::with_qos(qos(1));
    subscribe(&mut sub, 1, "full/#", q1, None).await;
    disconnect(sub).await;
    let (mut watcher, _) =
        Raw::connect_with(broker.addr, connect_packet(v, "full-qos0", true)).await;
    subscribe(
        &mut watcher,
        1,
        "live/#",
        SubscriptionOptions::with_qos(qos(0)),
        None,
    )
    .await;

    let acked = fill(broker.addr, v).await;
    assert!(
        !acked.is_empty(),
        "some messages fit before the store filled"
    );
    let log = &broker;
    check_for(WAIT, "a clear log line", || async move {
        log.stderr().contains("storage full").then_some(())
    })
    .await;

    // A new QoS 1 PUBLISH on a fresh connection is refused: 0x97 (v5), a close (3.1.1).
    let mut publ = publisher(broker.addr, v).await;
    publ.send(&big(1000)).await;
    match (v, answer(&mut publ, "QoS 1 while full").await) {
        (ProtocolVersion::V5, Some(r)) => assert_eq!(r, ReasonCode::QuotaExceeded),
        (ProtocolVersion::V5, None) => panic!("v5: expected PUBACK 0x97, got a close"),
        (_, Some(r)) => panic!("3.1.1 has no negative PUBACK, got {r:?}"),
        (_, None) => publ = publisher(broker.addr, v).await,
    }

    // QoS 0 is still served.
    publ.send(&live("still serving")).await;
    let p = watcher.expect_publish("QoS 0 while full").await;
    assert_eq!(&p.payload[..], b"still serving");

    // Nothing acknowledged is lost, even across SIGKILL.
    broker.kill9();
    let broker = Durable::start(&dir, 1, "sync");
    let (sub, ack) = resume(broker.addr, v).await;
    assert!(ack.session_present, "the subscriber's session survived");
    let mut inbox = Inbox::new(sub);
    let ids = |i: &Inbox| -> BTreeSet<u16> {
        i.got
            .iter()
            .filter_map(|p| std::str::from_utf8(&p.payload[..5]).ok()?.parse().ok())
            .collect()
    };
    inbox
        .until(Duration::from_secs(20), "every acknowledged message", |i| {
            acked.is_subset(&ids(i))
        })
        .await;
    drop(broker);
}

#[tokio::test]
async fn full_store_refuses_qos1_serves_qos0_and_keeps_what_was_acknowledged() {
    // The broker binaries this process starts inherit it (flag --store-max-bytes).
    std::env::set_var("RINGMQ_STORE_MAX_BYTES", (1usize << 20).to_string());
    full(ProtocolVersion::V5).await;
    full(ProtocolVersion::V3_1_1).await;
}
