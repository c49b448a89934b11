//! A copy another shard cannot store gets the publisher a definite answer, never a held
//! acknowledgement (`docs/storage.md`, "Exactly once across shards").
//!
//! Each shard's store is capped at 1 MiB (`--store-max-bytes`, here through
//! `RINGMQ_STORE_MAX_BYTES`). An offline persistent subscriber on shard B takes 64 KiB messages
//! from a publisher on shard A until B's commits fail for lack of space. A's own store has room, so A accepts the PUBLISH and routes it; B answers
//! `Refused`:
//! - v5: PUBACK / PUBREC with 0x97 Quota exceeded; the QoS 2 flow ends there, so a PUBREL for
//!   that id finds nothing (PUBCOMP 0x92) [MQTT-4.3.3-11];
//! - 3.1.1 has no negative acknowledgement: the connection is closed.
//!
//! One test function (the cap is an environment variable of this test process, inherited by the
//! brokers it starts; other test binaries are other processes).
#[macro_use]
mod common;

use bytes::Bytes;
use common::persist::{disconnect, persistent_connect, qos, subscribe, DataDir, Durable};
use common::raw::{pid, resp, RawEv};
use common::{check_for, cross_shard_ids, Raw, WAIT};
use ringmq_codec::SubscriptionOptions;
use ringmq_codec::{Packet, ProtocolVersion, Publish, ReasonCode};

const PAYLOAD: usize = 64 << 10;
/// 1 MiB per shard holds about 15 such messages; a cap that never bites fails the test.
const MAX_MESSAGES: u16 = 200;

fn big(q: u8, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: qos(q),
        retain: false,
        topic: common::raw::topic("fill/x"),
        packet_id: Some(pid(id)),
        properties: Default::default(),
        payload: Bytes::from(vec![b'x'; PAYLOAD]),
    })
}

/// What the publisher got for one PUBLISH.
enum Answer {
    Ack(ReasonCode),
    Closed,
}

async fn answer(c: &mut Raw, what: &str) -> Answer {
    match c.recv(WAIT).await {
        RawEv::Packet(Packet::PubAck(r) | Packet::PubRec(r)) => Answer::Ack(r.reason),
        // A v5 close may come with DISCONNECT first.
        RawEv::Packet(Packet::Disconnect(_)) | RawEv::Closed => Answer::Closed,
        other => panic!("{what}: expected an acknowledgement or a close, got {other:?}"),
    }
}

/// Publishes QoS `q` messages until one is not acknowledged with Success; returns that answer.
async fn publish_until_refused(c: &mut Raw, q: u8, first_id: u16) -> Answer {
    for i in 0..MAX_MESSAGES {
        let id = first_id + i;
        c.send(&big(q, id)).await;
        match answer(c, "publish while filling").await {
            Answer::Ack(ReasonCode::Success) => {
                if q == 2 {
                    c.send(&Packet::PubRel(resp(id))).await;
                    match c.expect_packet("PUBCOMP").await {
                        Packet::PubComp(_) => {}
                        other => panic!("expected PUBCOMP, got {other:?}"),
                    }
                }
            }
            other => return other,
        }
    }
    panic!("{MAX_MESSAGES} messages of {PAYLOAD} bytes fit a 1 MiB store: cap not applied?");
}

async fn refused(v: ProtocolVersion) {
    let dir = DataDir::new();
    let broker = Durable::start(&dir, 2, "sync");
    let (p_id, s_id) = cross_shard_ids("full", 2);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    subscribe(
        &mut sub,
        1,
        "fill/#",
        SubscriptionOptions::with_qos(qos(2)),
        None,
    )
    .await;
    disconnect(sub).await;

    let (mut publ, _) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
    let first = publish_until_refused(&mut publ, 1, 1).await;
    match (v, first) {
        (ProtocolVersion::V5, Answer::Ack(code)) => {
            assert_eq!(code, ReasonCode::QuotaExceeded, "v5 PUBACK when B is full")
        }
        (ProtocolVersion::V5, Answer::Closed) => panic!("v5: expected PUBACK 0x97, got a close"),
        (_, Answer::Ack(code)) => panic!("3.1.1 has no negative PUBACK, got {code:?}"),
        (_, Answer::Closed) => {}
    }
    if v != ProtocolVersion::V5 {
        let (c, _) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
        publ = c;
    }
    // QoS 2 through a prepared row: A's commit succeeds, B's fails.
    publ.send(&big(2, 500)).await;
    match (v, answer(&mut publ, "QoS 2 while B is full").await) {
        (ProtocolVersion::V5, Answer::Ack(code)) => {
            assert_eq!(code, ReasonCode::QuotaExceeded, "v5 PUBREC when B is full");
            // The flow ended with the refusal: the id is not kept.
            publ.send(&Packet::PubRel(resp(500))).await;
            match publ.expect_packet("PUBCOMP").await {
                Packet::PubComp(r) => {
                    assert_eq!(r.reason, ReasonCode::PacketIdentifierNotFound)
                }
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        }
        (ProtocolVersion::V5, Answer::Closed) => panic!("v5: expected PUBREC 0x97, got a close"),
        (_, Answer::Ack(code)) => panic!("3.1.1: expected a close, got PUBREC {code:?}"),
        (_, Answer::Closed) => {}
    }
    // The answers came from the refusal path (B's failed commit), not from A's own store.
    let log = &broker;
    check_for(WAIT, "refusal logged", || async move {
        let e = log.stderr();
        (e.contains("storage full") && e.contains("publish refused")).then_some(())
    })
    .await;
    drop(broker);
}

#[tokio::test]
async fn remote_commit_failure_is_answered() {
    // The broker binaries this process starts inherit it (flag --store-max-bytes).
    std::env::set_var("RINGMQ_STORE_MAX_BYTES", (1usize << 20).to_string());
    refused(ProtocolVersion::V5).await;
    refused(ProtocolVersion::V3_1_1).await;
}
