//! The durable outbox (hinted handoff) over real processes: three `ringmq --cores 1` binaries
//! on 127.0.0.1 under `--durability sync` (docs/cluster-data-plane.md, "Durable outbox").
//! A node with persistent subscribers dies (kill -9); QoS 1 and 2 publishes on the other nodes
//! are acknowledged all the same, their copies stored in the outbox of the publisher's node;
//! that node is killed too and restarted (its outbox survives, and it still knows the dead
//! node's routes, so what is published on it meanwhile is held too); when the dead node returns,
//! every acknowledged message reaches its sessions (v5 and 3.1.1, QoS 1 and 2), once each, in
//! order. Clients: our raw codec client (exact reason codes, packet ids) and mosquitto_pub
//! (3.1.1, a client we did not write).
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{
    acks_by_id, link, parked_session, raw_connect, try_link, wait_links, SETTLE,
};
use cluster_support::{rt, serial, Cluster};
use common::persist::{persistent_connect, text, Inbox};
use common::raw::publish_packet;
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use std::process::Command;

/// Node 3's persistent sessions: (client id, protocol, granted QoS).
const SESSIONS: [(&str, ProtocolVersion, QoS); 3] = [
    ("ob-v5-q2", ProtocolVersion::V5, QoS::ExactlyOnce),
    ("ob-v4-q2", ProtocolVersion::V3_1_1, QoS::ExactlyOnce),
    ("ob-v4-q1", ProtocolVersion::V3_1_1, QoS::AtLeastOnce),
];

/// `mosquitto_pub -V mqttv311` of each payload to `addr` at `qos`, one connection each; panics
/// unless it exits 0 (a 3.1.1 refusal is a closed connection: mosquitto_pub then fails).
fn mosquitto_pub_v311(addr: std::net::SocketAddr, id: &str, topic: &str, qos: u8, m: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-V", "mqttv311", "-i", id, "-t", topic, "-m", m])
        .args(["-q", &qos.to_string()])
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "{m}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node `id`'s outbox rows for `peer` (None while it does not answer).
fn outbox_rows(c: &Cluster, id: u64, peer: u64) -> Option<u64> {
    try_link(c, id, peer)?["outbox_rows"].as_u64()
}

#[test]
fn a_dead_nodes_copies_wait_in_the_outbox_across_a_restart_and_arrive_once_in_order() {
    let _g = serial();
    let mut c = Cluster::start(3, &["--cluster-ack-timeout", "2s"]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let rt = rt();
    let a3 = c.get(3).mqtt();
    rt.block_on(async {
        for (id, v, q) in SESSIONS {
            parked_session(a3, v, id, "ob/#", q).await;
        }
    });
    // Node 3 dies: its sessions' copies cannot be stored there.
    c.node(3).kill9();

    // 60 from a v5 publisher on node 1 (QoS 1 and 2 in turn), all acknowledged with success:
    // no 0x83 after the ack timeout, the copies are in node 1's outbox.
    let a1 = c.get(1).mqtt();
    rt.block_on(async {
        let p = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "ob-p1", true),
        )
        .await;
        let mut publ = Inbox::new(p);
        for i in 0..60u16 {
            let q = 1 + (i % 2) as u8;
            let p = publish_packet("ob/a", q, false, i + 1, format!("a-{i}").as_bytes());
            publ.conn.send(&Packet::Publish(p)).await;
            while publ.pump(std::time::Duration::from_millis(0)).await {}
        }
        publ.until(SETTLE, "60 acknowledgements, 30 PUBCOMPs", |i| {
            acks_by_id(i).len() == 60
                && i.acks
                    .iter()
                    .filter(|a| matches!(a, Packet::PubComp(_)))
                    .count()
                    == 30
        })
        .await;
        let acks = acks_by_id(&publ);
        assert!(
            acks.values().all(|r| *r == ReasonCode::Success),
            "acknowledged from the outbox: {acks:?}"
        );
    });
    // 20 from mosquitto_pub 3.1.1 on node 2 (which has an outbox for node 3 too).
    let a2 = c.get(2).mqtt();
    for i in 0..20 {
        mosquitto_pub_v311(a2, "ob-p2", "ob/b", 1 + (i % 2), &format!("b-{i}"));
    }
    let l = link(&c, 1, 3);
    assert_eq!(l["outbox_rows"], 60, "{l}");
    assert_eq!(
        l["ack_timeouts"], 0,
        "the link was known down: stored at once: {l}"
    );
    assert_eq!(link(&c, 2, 3)["outbox_rows"], 20);

    // Node 1 dies too, and restarts on its data dir: its outbox is read back.
    c.node(1).kill9();
    c.node(1).start();
    c.wait_leader(&[1, 2]);
    check_for_blocking(SETTLE, "node 1's outbox for node 3 restored", || {
        (outbox_rows(&c, 1, 3)? == 60).then_some(())
    });
    // More on node 2 while node 3 is still down (node 2 never lost node 3's routes), and on
    // the restarted node 1, which knows node 3's routes from its store: into its outbox.
    for i in 20..30 {
        mosquitto_pub_v311(a2, "ob-p2", "ob/b", 1 + (i % 2), &format!("b-{i}"));
    }
    assert!(link(&c, 1, 3)["peer_routes"].as_u64() >= Some(1));
    let a1 = c.get(1).mqtt();
    rt.block_on(async {
        let p = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "ob-p1", true),
        )
        .await;
        let mut publ = Inbox::new(p);
        for i in 60..80u16 {
            let p = publish_packet("ob/a", 2, false, i + 1, format!("a-{i}").as_bytes());
            common::persist::publish_acked(&mut publ.conn, p).await;
        }
    });
    assert_eq!(link(&c, 1, 3)["outbox_rows"], 80);

    // Node 3 returns: both outboxes drain, answered durable, rows deleted.
    c.node(3).start();
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    check_for_blocking(SETTLE, "outboxes for node 3 drained", || {
        (outbox_rows(&c, 1, 3)? == 0 && outbox_rows(&c, 2, 3)? == 0).then_some(())
    });
    let l1 = link(&c, 1, 3);
    assert!(l1["outbox_sent"].as_u64() >= Some(80), "{l1}");
    assert_eq!(l1["outbox_dropped"], 0, "{l1}");
    assert!(link(&c, 2, 3)["outbox_sent"].as_u64() >= Some(30));

    // Every acknowledged message is in each of node 3's sessions: once, in order per publisher.
    let a3 = c.get(3).mqtt();
    rt.block_on(async {
        for (id, v, _) in SESSIONS {
            let s = raw_connect(a3, persistent_connect(v, id, 3600)).await;
            let mut s = Inbox::new(s);
            s.until(SETTLE, "110 messages", |i| i.got.len() >= 110)
                .await;
            s.settle(std::time::Duration::from_millis(500)).await;
            let texts: Vec<String> = s.got.iter().map(|p| text(&p.payload).into()).collect();
            for (prefix, n) in [("a-", 80), ("b-", 30)] {
                let seq: Vec<u32> = texts
                    .iter()
                    .filter_map(|t| t.strip_prefix(prefix)?.parse().ok())
                    .collect();
                assert_eq!(
                    seq,
                    (0..n).collect::<Vec<u32>>(),
                    "{id}: every {prefix} message once, in order"
                );
            }
            assert_eq!(texts.len(), 110, "{id}: nothing else, nothing twice");
        }
    });
}

#[test]
fn a_full_outbox_refuses_and_a_removed_node_has_its_outbox_dropped() {
    let _g = serial();
    // Room for a few copies only.
    let mut c = Cluster::start(3, &["--cluster-outbox-max-bytes", "600"]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let rt = rt();
    let a3 = c.get(3).mqtt();
    rt.block_on(parked_session(
        a3,
        ProtocolVersion::V5,
        "of-s3",
        "of/#",
        QoS::ExactlyOnce,
    ));
    c.node(3).kill9();
    // Node 1 has seen its link to node 3 go down: every copy below goes to the outbox or is
    // refused as full (0x97). A copy made while the link still looked up would wait for
    // the ack timeout instead, and one the outbox then cannot take is refused with 0x83.
    check_for_blocking(SETTLE, "node 1's link to node 3 down", || {
        (try_link(&c, 1, 3)?["up"] == false).then_some(())
    });
    let a1 = c.get(1).mqtt();
    let payload = vec![b'x'; 100];
    rt.block_on(async {
        let p = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "of-pub", true),
        )
        .await;
        let mut publ = Inbox::new(p);
        for i in 0..10u16 {
            let p = publish_packet("of/x", 1, false, i + 1, &payload);
            publ.conn.send(&Packet::Publish(p)).await;
        }
        if !publ.wait_for(SETTLE, |i| acks_by_id(i).len() == 10).await {
            panic!(
                "10 PUBACKs: got {:?}; node 1: {:?}\n{}",
                publ.acks,
                try_link(&c, 1, 3),
                c.get(1).stderr()
            );
        }
        let acks = acks_by_id(&publ);
        let ok = acks.values().filter(|r| **r == ReasonCode::Success).count();
        let full = acks
            .values()
            .filter(|r| **r == ReasonCode::QuotaExceeded)
            .count();
        assert!(ok >= 1 && full >= 1 && ok + full == 10, "{acks:?}");
        // [MQTT-4.3.2] in order: the first ones fit, the rest were refused.
        for id in 1..=ok as u16 {
            assert_eq!(acks[&id], ReasonCode::Success, "{acks:?}");
        }
        let l = link(&c, 1, 3);
        assert_eq!(l["outbox_rows"].as_u64(), Some(ok as u64), "{l}");
        assert_eq!(l["outbox_refused"].as_u64(), Some(full as u64), "{l}");
    });
    // Node 3 removed from the cluster: node 1 drops what it held for it.
    let (leader, _) = c.wait_leader(&[1, 2]);
    let (code, out, err) = c.get(leader).ctl(&["cluster", "remove-node", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    check_for_blocking(SETTLE, "node 1 no longer links to node 3", || {
        let s = c.get(1).status()?;
        let links = s["links"].as_array()?;
        links.iter().all(|l| l["peer"] != 3).then_some(())
    });
    check_for_blocking(SETTLE, "node 1 logged the drop", || {
        c.get(1)
            .stderr()
            .contains("outbox: copies for this node dropped")
            .then_some(())
    });
    // Its rows are gone from the store too: a restart of node 1 restores nothing for node 3.
    c.node(1).kill9();
    c.node(1).start();
    c.wait_leader(&[1, 2]);
    wait_links(&c, 1, 1);
    assert!(
        !c.get(1)
            .stderr()
            .contains("outbox: copies for other nodes restored"),
        "{}",
        c.get(1).stderr()
    );
}
