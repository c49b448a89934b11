//! SIGKILL while a persistent subscriber is online and acknowledging (issue 5, `--durability
//! sync`). QoS 1 deliveries leave without waiting for their row's commit, and a row whose
//! PUBACK comes back before its commit never reaches the disk (`docs/storage.md`, "Rows that
//! never reach the disk"). What must still hold: every message the publisher had a PUBACK for
//! was either acknowledged by the subscriber before the kill or is delivered again after the
//! restart; one the subscriber held unacknowledged comes back with DUP 1 and its original
//! packet id [MQTT-4.4.0-1].
//!
//! The subscriber (our raw codec client) acknowledges every delivery except those numbered
//! 0 mod 3, which it holds; the publisher streams `N` numbered QoS 1 messages, `WINDOW` in
//! flight, and the broker is SIGKILLed once half of them are acknowledged.
#[macro_use]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::persist::{persistent_connect, subscribe, text, DataDir, Durable, Inbox};
use common::raw::{publish_packet, resp, version, RawEv};
use common::{cross_shard_ids, Proto, Raw, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, QoS, SubscriptionOptions};

/// Messages in the stream (at most N / 3 held: below the outbound window of 256).
const N: u16 = 300;
/// Publishes in flight at once.
const WINDOW: usize = 32;
/// Deliveries after the restart come within this.
const PHASE: Duration = Duration::from_secs(20);
/// Silence that ends the redelivery phase (duplicates would come within it).
const SETTLE: Duration = Duration::from_millis(500);

fn held(seq: u16) -> bool {
    seq.is_multiple_of(3)
}

/// What the subscriber saw before the kill: seq -> (packet id, acknowledged).
type Seen = HashMap<u16, (u16, bool)>;

/// Reads deliveries until the connection dies, acknowledging all but the held ones.
async fn subscriber_until_killed(mut sub: Raw) -> Seen {
    let mut seen = Seen::new();
    loop {
        match sub.recv(WAIT).await {
            RawEv::Packet(Packet::Publish(p)) => {
                let seq: u16 = text(&p.payload).parse().expect("numbered payload");
                let id = p.packet_id.expect("QoS 1 has a packet id").get();
                assert_eq!(p.qos, QoS::AtLeastOnce);
                let ack = !held(seq);
                if ack {
                    sub.send(&Packet::PubAck(resp(id))).await;
                }
                let first = seen.insert(seq, (id, ack));
                assert!(first.is_none(), "#{seq} delivered twice before the kill");
            }
            RawEv::Packet(Packet::PingResp) => {}
            RawEv::Packet(other) => panic!("subscriber: unexpected {other:?}"),
            RawEv::Closed | RawEv::Garbage(_) => return seen,
            RawEv::Timeout => panic!("subscriber: nothing for {WAIT:?} before the kill"),
        }
    }
}

/// Streams numbered QoS 1 messages until half are acknowledged, then SIGKILLs the broker and
/// reads the PUBACKs still in the socket. Returns the sequence numbers acknowledged.
async fn publish_until_half_then_kill(broker: &mut Durable, mut publ: Raw) -> Vec<u16> {
    let mut acked = vec![false; N as usize];
    let (mut sent, mut done) = (0u16, 0usize);
    while done < N as usize / 2 {
        while sent < N && (sent as usize) - done < WINDOW {
            let p = publish_packet("o/t", 1, false, sent + 1, sent.to_string().as_bytes());
            publ.send(&Packet::Publish(p)).await;
            sent += 1;
        }
        match publ.recv(WAIT).await {
            RawEv::Packet(Packet::PubAck(r)) => {
                acked[r.packet_id.get() as usize - 1] = true;
                done += 1;
            }
            other => panic!("publisher: expected PUBACK, got {other:?}"),
        }
    }
    broker.kill9();
    loop {
        match publ.recv(WAIT).await {
            RawEv::Packet(Packet::PubAck(r)) => acked[r.packet_id.get() as usize - 1] = true,
            RawEv::Closed | RawEv::Garbage(_) => break,
            other => panic!("publisher after SIGKILL: {other:?}"),
        }
    }
    (0..N).filter(|s| acked[*s as usize]).collect()
}

async fn kill_with_online_subscriber(proto: Proto, shards: usize) {
    let v: ProtocolVersion = version(proto);
    let dir = DataDir::new();
    let mut broker = Durable::start(&dir, shards, "sync");
    let (p_id, s_id) = cross_shard_ids("online", shards);
    let (mut sub, _) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    let opts = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    subscribe(&mut sub, 1, "o/#", opts, None).await;
    let sub_task = tokio::spawn(subscriber_until_killed(sub));
    let (publ, _) = Raw::connect_with(broker.addr, persistent_connect(v, &p_id, 300)).await;
    let acked = publish_until_half_then_kill(&mut broker, publ).await;
    let seen = sub_task.await.expect("subscriber task");

    let broker = Durable::start(&dir, shards, "sync");
    let (conn, ack) = Raw::connect_with(broker.addr, persistent_connect(v, &s_id, 300)).await;
    assert!(
        ack.session_present,
        "subscriber session present after restart"
    );
    // Acknowledged to the publisher and not by the subscriber: must come again.
    let owed: Vec<u16> = acked
        .iter()
        .copied()
        .filter(|s| seen.get(s).is_none_or(|(_, a)| !a))
        .collect();
    let mut inbox = Inbox::new(conn);
    let has = |i: &Inbox, s: u16| i.got.iter().any(|p| text(&p.payload) == s.to_string());
    let all_in = inbox
        .wait_for(PHASE, |i| owed.iter().all(|s| has(i, *s)))
        .await;
    inbox.settle(SETTLE).await;
    let lost: Vec<u16> = owed.iter().copied().filter(|s| !has(&inbox, *s)).collect();
    assert!(
        all_in && lost.is_empty(),
        "acknowledged messages lost: {lost:?} ({} acknowledged to the publisher, {} seen by \
         the subscriber before the kill)",
        acked.len(),
        seen.len()
    );
    for p in &inbox.got {
        let seq: u16 = text(&p.payload).parse().expect("numbered payload");
        if let (Some((id, false)), true) = (seen.get(&seq), acked.contains(&seq)) {
            // Held by the subscriber, acknowledged to the publisher: its row was durable
            // before that PUBACK, so it comes back as a resend [MQTT-4.4.0-1].
            assert!(p.dup, "#{seq} resent with DUP 1");
            assert_eq!(
                p.packet_id.map(|i| i.get()),
                Some(*id),
                "#{seq} keeps its id"
            );
        }
    }
}

mod online_subscriber_survives_kill {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v311_1shard() {
        kill_with_online_subscriber(Proto::V4, 1).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v311_2shards() {
        kill_with_online_subscriber(Proto::V4, 2).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v5_1shard() {
        kill_with_online_subscriber(Proto::V5, 1).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v5_2shards() {
        kill_with_online_subscriber(Proto::V5, 2).await
    }
}
