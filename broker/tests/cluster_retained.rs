//! Retained deletions across nodes over real processes (docs/cluster-data-plane.md, "Retained
//! messages for a node that was away"): a retained message deleted while a node was down is
//! deleted there when it returns, also when every node restarted meanwhile (the deletion is a
//! tombstone kept in the store), and the returning node does not give the deleted message
//! back to the others. Clients: mosquitto_pub / mosquitto_sub (clients we did not write).
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
mod cluster_support;
mod common;

use cluster_support::acked::{link, wait_links, SETTLE};
use cluster_support::{serial, Cluster};
use common::check_for_blocking;
use std::net::SocketAddr;
use std::process::Command;

/// `mosquitto_pub -r` of `m` on `topic` (`None`: an empty payload, a deletion [MQTT-3.3.1-6]).
/// Retried while the node answers "Server unavailable" (its metadata layer settling after a
/// restart).
fn set_retained(addr: SocketAddr, topic: &str, m: Option<&str>) {
    check_for_blocking(SETTLE, &format!("retained {topic} set on {addr}"), || {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-t", topic, "-r", "-q", "1", "-V", "mqttv5"]);
        match m {
            Some(m) => cmd.args(["-m", m]),
            None => cmd.arg("-n"),
        };
        let out = cmd.output().expect("run mosquitto_pub");
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("unavailable") {
            return None;
        }
        assert!(out.status.success() && err.is_empty(), "{topic}: {err}");
        Some(())
    });
}

/// The retained messages under `filter` on `addr`, as "topic payload" lines, sorted.
fn retained(addr: SocketAddr, filter: &str) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", filter, "--retained-only", "-W", "1", "-v"])
        .output()
        .expect("run mosquitto_sub");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Waits until `addr` holds exactly `want` under `filter`.
fn wait_retained(addr: SocketAddr, filter: &str, want: &[&str]) {
    check_for_blocking(SETTLE, &format!("{want:?} retained on {addr}"), || {
        (retained(addr, filter) == want).then_some(())
    });
}

#[test]
fn a_retained_deletion_while_a_node_was_down_reaches_it_and_is_not_undone() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let a1 = c.get(1).mqtt();
    set_retained(a1, "rd/gone", Some("g1"));
    set_retained(a1, "rd/stays", Some("s1"));
    let both = ["rd/gone g1", "rd/stays s1"];
    wait_retained(c.get(3).mqtt(), "rd/#", &both);
    // mosquitto_sub's sessions are gone, and with them node 3's routes on node 1.
    check_for_blocking(SETTLE, "node 3's routes gone from node 1", || {
        (link(&c, 1, 3)["peer_routes"] == 0).then_some(())
    });

    // Node 3 dies; rd/gone is deleted on node 1.
    c.node(3).kill9();
    set_retained(a1, "rd/gone", None);
    wait_retained(a1, "rd/#", &["rd/stays s1"]);
    // Nodes 1 and 2 die too: what they queued for node 3 is gone, their stores are not.
    c.node(1).kill9();
    c.node(2).kill9();
    for id in [1, 2, 3] {
        c.node(id).start();
    }
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    // Node 3 came back with rd/gone on disk: the tombstone from nodes 1 and 2 deletes it.
    wait_retained(c.get(3).mqtt(), "rd/#", &["rd/stays s1"]);
    let told: u64 = [1, 2]
        .iter()
        .map(|&p| link(&c, 3, p)["retained_in"].as_u64().unwrap_or(0))
        .sum();
    assert!(told >= 1, "node 3 applied {told} deletions of its peers");
    // And node 3's own copy, sent to nodes 1 and 2 at link up, did not bring it back there
    // (polled: a CONNECT may be refused while the metadata layer settles after the restarts).
    for id in [1, 2] {
        wait_retained(c.get(id).mqtt(), "rd/#", &["rd/stays s1"]);
    }
    // A deletion made now on node 3 reaches the others live, as before.
    set_retained(c.get(3).mqtt(), "rd/stays", None);
    for id in [1, 2] {
        wait_retained(c.get(id).mqtt(), "rd/#", &[]);
    }
}
