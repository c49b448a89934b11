//! Issue 14: QoS 2 stays exactly once across nodes when the *publisher's* node crashes, over
//! three real `ringmq` processes (docs/cluster-data-plane.md, "Exactly once across a crash of
//! the publisher's node"). Node 1 runs with a test crash point (`RINGMQ_TEST_CRASH`,
//! `shard/src/cluster/origin.rs`) that aborts it at one of the two dangerous moments of a QoS 2
//! publish whose subscribers are on nodes 2 and 3:
//!
//! - `node-copy-prepared`: the prepared row (packet id, message, target nodes) is durable on
//!   node 1 but no copy has left: after the restart the publisher's resend is answered from the
//!   stored id, so only recovery can bring the message to nodes 2 and 3 (before: lost);
//! - `node-copy-durable`: a node answered that it holds its copy durably, node 1 had not marked
//!   the message done nor sent PUBREC: the publisher resends, recovery resends to both nodes,
//!   and the node that has it must not deliver it again (before: a second copy under the
//!   restarted node's new stream).
//!
//! Each case: a v5 or a 3.1.1 persistent publisher on node 1 (home shard 0 or 1 when node 1 runs
//! two shards), node 1 aborted by the crash point and restarted, the publisher resumes (session
//! present), resends with DUP and completes the flow; then every subscriber holds the message
//! exactly once: a parked v5 session on node 2 and one on node 3 (their copies are rows) and a
//! 3.1.1 clean session kept online on node 2 through all cases (its dedup is in memory).
//! Clients: the project's codec client (exact packet ids and DUP).
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::{rt, serial, Cluster};
use common::persist::{disconnect, persistent_connect, subscribe, text, Inbox};
use common::raw::{connect_packet, publish_packet, resp, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use std::time::Duration;

/// A v5 persistent session subscribed to `eo/#` at QoS 2, parked (its copies are rows).
async fn parked_session(addr: std::net::SocketAddr, id: &str) {
    let (mut s, _) = raw_connect_sp(addr, persistent_connect(ProtocolVersion::V5, id, 3600)).await;
    let o = SubscriptionOptions::with_qos(QoS::ExactlyOnce);
    subscribe(&mut s, 1, "eo/#", o, None).await;
    disconnect(s).await;
}

/// How many times `payload` arrived.
fn count(i: &Inbox, payload: &str) -> usize {
    i.got.iter().filter(|p| text(&p.payload) == payload).count()
}

/// Resumes parked session `id` on `addr`: `payload` arrives exactly once (nothing more within a
/// quiet spell), then parks it again.
async fn holds_once(addr: std::net::SocketAddr, id: &str, payload: &str) {
    let (s, present) =
        raw_connect_sp(addr, persistent_connect(ProtocolVersion::V5, id, 3600)).await;
    assert!(present, "{id}: its session");
    let mut s = Inbox::new(s);
    s.until(WAIT * 4, &format!("{id}: {payload}"), |i| {
        count(i, payload) >= 1
    })
    .await;
    s.settle(Duration::from_millis(800)).await;
    assert_eq!(count(&s, payload), 1, "{id}: {payload} exactly once");
    disconnect(s.conn).await;
}

/// A client id whose home shard on a node of `shards` shards is `home`.
fn id_on_shard(prefix: &str, shards: usize, home: usize) -> String {
    (0..1000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| shards < 2 || broker::home_shard(id, shards) == Some(home))
        .expect("an id for that shard")
}

/// Every crash point with both protocol versions of the publisher.
const CASES: [(&str, ProtocolVersion); 4] = [
    ("node-copy-prepared", ProtocolVersion::V5),
    ("node-copy-durable", ProtocolVersion::V5),
    ("node-copy-prepared", ProtocolVersion::V3_1_1),
    ("node-copy-durable", ProtocolVersion::V3_1_1),
];

fn exactly_once_through_crashes_of_the_publishers_node(shards: usize) {
    let _g = serial();
    let mut c = Cluster::start_each(3, &[], |id| match id {
        1 if shards > 1 => vec!["--cores".into(), shards.to_string()],
        _ => Vec::new(),
    });
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let rt = rt();
    let (a2, a3) = (c.get(2).mqtt(), c.get(3).mqtt());
    let mut online = rt.block_on(async {
        parked_session(a2, "eo-s2").await;
        parked_session(a3, "eo-s3").await;
        let (mut on, _) =
            raw_connect_sp(a2, connect_packet(ProtocolVersion::V3_1_1, "eo-on2", true)).await;
        let o = SubscriptionOptions::with_qos(QoS::ExactlyOnce);
        subscribe(&mut on, 1, "eo/#", o, None).await;
        Inbox::new(on)
    });
    for (i, (point, v)) in CASES.iter().enumerate() {
        let payload = format!("eo-{shards}-{i}");
        // Each crash point with the publisher on either shard (two shards).
        let home = (i + i / 2) % shards;
        let pub_id = id_on_shard(&format!("eo-pub-{i}"), shards, home);
        eprintln!("case {i}: {point}, {v:?}, publisher on shard {home}");
        c.node(1).stop();
        c.node(1).start_env(&[("RINGMQ_TEST_CRASH", point)]);
        wait_links(&c, 1, 2);
        let a1 = c.get(1).mqtt();
        rt.block_on(async {
            // Routes of nodes 2 and 3 reach node 1 in its route sync (links up).
            let (mut p, _) = raw_connect_sp(a1, persistent_connect(*v, &pub_id, 3600)).await;
            let msg = publish_packet(&format!("eo/{i}"), 2, false, 7, payload.as_bytes());
            p.send(&Packet::Publish(msg)).await;
            // No PUBREC: the node dies at the crash point first.
            match p.recv(WAIT * 4).await {
                RawEv::Closed | RawEv::Timeout => {}
                other => panic!("case {i}: expected the node to die, got {other:?}"),
            }
        });
        let err = c.node(1).wait_crash(WAIT * 4);
        assert!(err.contains(&format!("aborting at {point}")), "{err}");
        c.node(1).start();
        let a1 = c.get(1).mqtt();
        rt.block_on(async {
            // The publisher resumes and resends with DUP: answered from the stored id
            // [MQTT-4.3.3-10] (v5) / [MQTT-4.3.3-2] (3.1.1), never routed again.
            let (mut p, present) = raw_connect_sp(a1, persistent_connect(*v, &pub_id, 3600)).await;
            assert!(present, "case {i}: the publisher's session survived");
            let mut msg = publish_packet(&format!("eo/{i}"), 2, false, 7, payload.as_bytes());
            msg.dup = true;
            p.send(&Packet::Publish(msg)).await;
            match p.expect_packet("PUBREC").await {
                Packet::PubRec(r) if r.packet_id.get() == 7 => {
                    assert_eq!(r.reason, ReasonCode::Success, "case {i}")
                }
                other => panic!("case {i}: expected PUBREC 7, got {other:?}"),
            }
            p.send(&Packet::PubRel(resp(7))).await;
            match p.expect_packet("PUBCOMP").await {
                Packet::PubComp(r) if r.packet_id.get() == 7 => {}
                other => panic!("case {i}: expected PUBCOMP 7, got {other:?}"),
            }
            disconnect(p).await;
            holds_once(a2, "eo-s2", &payload).await;
            holds_once(a3, "eo-s3", &payload).await;
            online
                .until(WAIT * 4, &format!("online: {payload}"), |x| {
                    count(x, &payload) >= 1
                })
                .await;
            online.conn.send(&Packet::PingReq).await;
            online.settle(Duration::from_millis(800)).await;
            assert_eq!(
                count(&online, &payload),
                1,
                "online: {payload} exactly once"
            );
        });
        // Recovery completed the prepared message (it resent node 1's copies).
        let log = c.get(1).stderr();
        assert!(
            log.contains("prepared before the restart"),
            "case {i}: no recovery of the prepared row:\n{log}"
        );
    }
    // Nodes 2 and 3 stored origin keys (node origin rows) with their copies; node 1 told them
    // it was done with each message (`OriginsDone`), so none is left: restarted, they restore
    // nothing.
    drop(online);
    for id in [2, 3] {
        c.node(id).stop();
        c.node(id).start();
        wait_links(&c, id, 2);
        let log = c.get(id).stderr();
        assert!(
            !log.contains("origin keys of other nodes"),
            "node {id} kept origin keys:\n{log}"
        );
    }
}

#[test]
fn qos_2_stays_exactly_once_through_crashes_of_the_publishers_node_one_shard() {
    exactly_once_through_crashes_of_the_publishers_node(1);
}

#[test]
fn qos_2_stays_exactly_once_through_crashes_of_the_publishers_node_two_shards() {
    exactly_once_through_crashes_of_the_publishers_node(2);
}
