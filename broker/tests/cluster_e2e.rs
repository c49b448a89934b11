//! Issue 13 over real processes: three (or four) `ringmq` binaries on
//! 127.0.0.1, `--cores 1` each, own data dirs and cluster ports, stopped by
//! PID. Election; kill -9 of the leader and its restart; a follower that
//! restarts catches up from the log and, after compaction, from a snapshot;
//! membership 3 -> 4 -> 3 through `ringmq ctl cluster`, a quorum-losing
//! change refused; a minority cannot record ownership (CONNACK 0x88 / 0x03,
//! bounded) and recovers when the majority returns.
//!
//! The tests of one binary run one at a time (a lock): each starts three
//! processes with sub-second elections, and the machine has two CPUs.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::Cluster;
use common::raw::RawEv;
use common::Raw;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// CONNECT `id` (clean) to `addr`; the CONNACK's reason.
async fn connack(addr: std::net::SocketAddr, v: ProtocolVersion, id: &str) -> ReasonCode {
    let mut raw = Raw::open(addr, v).await;
    raw.send(&Packet::Connect(Box::new(common::raw::connect_packet(
        v, id, true,
    ))))
    .await;
    match raw.recv(Duration::from_secs(20)).await {
        RawEv::Packet(Packet::ConnAck(a)) => a.reason,
        other => panic!("expected CONNACK for {id}, got {other:?}"),
    }
}

/// A persistent v5 session for `id` on `addr` (ownership stays recorded
/// while the connection or session lives); the connection.
async fn hold(addr: std::net::SocketAddr, id: &str) -> Raw {
    let mut cp = common::raw::connect_packet(ProtocolVersion::V5, id, false);
    cp.properties.session_expiry_interval = Some(300);
    Raw::connect_with(addr, cp).await.0
}

/// `n` sequential CONNECT/DISCONNECTs on `addr` (each claims, then releases).
async fn churn(addr: std::net::SocketAddr, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let (mut raw, _) = Raw::connect(addr, ProtocolVersion::V5, &id, true).await;
        raw.send(&Packet::Disconnect(Default::default())).await;
        raw.expect_closed(Duration::from_secs(5), "closed after DISCONNECT")
            .await;
    }
}

/// Polls `on`'s status until member `id`'s recorded liveness is `want`.
fn wait_liveness(c: &Cluster, on: u64, id: u64, want: &str) {
    let end = Instant::now() + cluster_support::CONVERGE;
    loop {
        let s = c.get(on).status().unwrap_or_default();
        let got = s["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["id"] == id))
            .map(|n| n["liveness"].clone());
        if got.as_ref().and_then(|l| l.as_str()) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < end,
            "node {id} never recorded {want} on node {on}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

#[test]
fn three_nodes_form_elect_and_fail_over() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    let (leader, term) = c.wait_leader(&[1, 2, 3]);

    // The status, human and JSON, on every node.
    for id in [1, 2, 3] {
        let n = c.get(id);
        let s = n.status().expect("status");
        assert_eq!(s["leader"], leader, "node {id}: {s}");
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{s}");
        for m in nodes {
            assert!(m["id"].is_u64() && m["addr"].is_string() && m["role"].is_string());
            assert!(m["up"].is_boolean());
        }
        let (code, out, err) = n.ctl(&["cluster", "status"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("leader {leader}")), "{out}");
        assert_eq!(
            out.lines().filter(|l| l.contains("127.0.0.1:")).count(),
            3,
            "{out}"
        );
    }
    let leader_addr = c.get(leader).mqtt();
    let rt = rt();
    rt.block_on(async {
        assert_eq!(
            connack(leader_addr, ProtocolVersion::V5, "before").await,
            ReasonCode::Success
        );
    });

    // kill -9 the leader: the other two elect a new one, in a later term.
    c.node(leader).kill9();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let (new_leader, new_term) = c.wait_leader(&rest);
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {new_term} after {term}");
    let surv = c.get(rest[0]).mqtt();
    rt.block_on(async {
        assert_eq!(
            connack(surv, ProtocolVersion::V5, "during").await,
            ReasonCode::Success
        );
        assert_eq!(
            connack(surv, ProtocolVersion::V3_1_1, "during4").await,
            ReasonCode::Success
        );
    });

    // Liveness in the metadata: the new leader records the dead one down
    // (after --node-down-after), read on the other survivor.
    let other = *rest.iter().find(|&&i| i != new_leader).unwrap();
    wait_liveness(&c, other, leader, "down");

    // The old leader restarts from its data dir and catches up.
    c.node(leader).start();
    c.wait_leader(&[1, 2, 3]);
    let committed = u(&c.get(new_leader).status().unwrap(), "committed");
    c.wait_applied(&[1, 2, 3], committed);
    wait_liveness(&c, other, leader, "up");
    let s = c.get(leader).status().unwrap();
    assert!(u(&s, "term") >= new_term, "{s}");
    assert_eq!(s["state"], "follower", "{s}");
}

#[test]
fn a_restarted_follower_catches_up_from_the_log_then_from_a_snapshot() {
    let _g = serial();
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-snapshot-every",
            "20",
            "--cluster-keep-logs",
            "10",
        ],
    );
    let (leader, _) = c.wait_leader(&[1, 2, 3]);
    let f = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    let addr = c.get(leader).mqtt();
    let rt = rt();

    // A short absence: the leader still holds the entries it missed.
    c.node(f).kill9();
    rt.block_on(churn(addr, "log", 2));
    c.node(f).start();
    let committed = u(&c.get(leader).status().unwrap(), "committed");
    c.wait_applied(&[f], committed);
    let s = c.get(f).status().unwrap();
    assert_eq!(
        s["raft"]["snapshots_installed"], 0,
        "caught up from the log: {s}"
    );

    // A long one: the leader snapshots and purges past it.
    c.node(f).kill9();
    rt.block_on(churn(addr, "snap", 40));
    let end = Instant::now() + cluster_support::CONVERGE;
    let purged = loop {
        let ls = c.get(leader).status().unwrap();
        if u(&ls, "purged") > u(&s, "applied") {
            break u(&ls, "purged");
        }
        assert!(
            Instant::now() < end,
            "the leader never purged past the follower: {ls}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    c.node(f).start();
    let committed = u(&c.get(leader).status().unwrap(), "committed");
    c.wait_applied(&[f], committed);
    let s = c.get(f).status().unwrap();
    assert!(
        u(&s, "snapshot") >= purged,
        "caught up from a snapshot: {s}"
    );
    assert!(u(&s["raft"], "snapshots_installed") >= 1, "{s}");
    assert!(u(&s["raft"], "last_snapshot_bytes") > 0, "{s}");
}

#[test]
fn membership_three_to_four_to_three_and_quorum_guard() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    let (leader, _) = c.wait_leader(&[1, 2, 3]);
    let j = c.joiner(4, &[]);
    j.start();
    let addr4 = j.cluster.clone();

    // Not on a follower: the answer names the leader.
    let f = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    let (code, _, err) = c.get(f).ctl(&["cluster", "add-node", "4", &addr4]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("ask node {leader}")), "{err}");

    let (code, out, err) = c.get(leader).ctl(&["cluster", "add-node", "4", &addr4]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_leader(&[1, 2, 3, 4]);
    let s = c.get(leader).status().unwrap();
    let n4 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(n4["voter"], true, "{s}");

    // Leadership to the new node, then an original node removed.
    let (code, _, err) = c.get(leader).ctl(&["cluster", "transfer-leader", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(c.wait_leader(&[1, 2, 3, 4]).0, 4);
    let (code, _, err) = c.get(4).ctl(&["cluster", "remove-node", "1"]);
    assert_eq!(code, 0, "{err}");
    c.node(1).stop();
    assert_eq!(c.wait_leader(&[2, 3, 4]).0, 4);
    let s = c.get(4).status().unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    let rt = rt();
    rt.block_on(async {
        let a = c.get(2).mqtt();
        assert_eq!(
            connack(a, ProtocolVersion::V5, "after-343").await,
            ReasonCode::Success
        );
    });

    // With node 3 gone, removing node 2 would leave {3, 4} with one reachable: refused.
    c.node(3).kill9();
    let end = Instant::now() + cluster_support::CONVERGE;
    loop {
        let s = c.get(4).status().unwrap();
        let down = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == 3 && n["up"] == false);
        if down {
            break;
        }
        assert!(Instant::now() < end, "node 3 never seen down: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = c.get(4).ctl(&["cluster", "remove-node", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("would lose quorum"), "{err}");
}

#[test]
fn a_minority_refuses_connect_in_bounded_time_and_heals() {
    let _g = serial();
    let mut c = Cluster::start(3, &["--cluster-claim-timeout", "1s"]);
    c.wait_leader(&[1, 2, 3]);
    // Nodes 2 and 3 gone: node 1 alone is a minority (it cannot tell a
    // partition from dead peers, and must not decide either way).
    c.node(2).kill9();
    c.node(3).kill9();
    let a = c.get(1).mqtt();
    let rt = rt();
    rt.block_on(async {
        let t = Instant::now();
        // v5: CONNACK 0x88 Server unavailable.
        assert_eq!(
            connack(a, ProtocolVersion::V5, "minority5").await,
            ReasonCode::ServerUnavailable
        );
        // 3.1.1: return code 0x03 Server unavailable (the codec maps 0x88).
        let mut raw = Raw::open(a, ProtocolVersion::V3_1_1).await;
        raw.send(&Packet::Connect(Box::new(common::raw::connect_packet(
            ProtocolVersion::V3_1_1,
            "minority4",
            true,
        ))))
        .await;
        let got = raw.read_raw(Duration::from_secs(20)).await.unwrap();
        assert_eq!(got, [0x20, 0x02, 0x00, 0x03], "3.1.1 CONNACK rc 3");
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "bounded: {:?}",
            t.elapsed()
        );
    });
    let s = c.get(1).status().unwrap();
    assert!(s.get("leader").is_none() || s["leader"] == 1, "{s}");
    assert!(u(&s["ownership"], "failures") >= 2, "{s}");

    // The majority returns: the same CONNECTs now succeed.
    c.node(2).start();
    c.node(3).start();
    c.wait_leader(&[1, 2, 3]);
    rt.block_on(async {
        assert_eq!(
            connack(a, ProtocolVersion::V5, "minority5").await,
            ReasonCode::Success
        );
        assert_eq!(
            connack(a, ProtocolVersion::V3_1_1, "minority4").await,
            ReasonCode::Success
        );
    });
}

/// A real partition: each node in its own network namespace on a bridge;
/// the leader's link is cut. The majority elects and records ownership; the
/// cut-off old leader commits nothing, and a client that can still reach it
/// (mosquitto_pub run inside its namespace) gets CONNACK "Server
/// unavailable" (v5 0x88, 3.1.1 3) in bounded time. Healing converges: the
/// old leader follows and holds every ownership the majority recorded.
#[test]
fn a_partitioned_leader_cannot_commit_the_majority_can_healing_converges() {
    let _g = serial();
    let Some(net) = cluster_support::netns::Net::create(3) else {
        eprintln!("skipped: needs root and `ip` to make network namespaces");
        return;
    };
    let c = Cluster::start_in(&net, 3, &[]);
    let (leader, term) = c.wait_leader(&[1, 2, 3]);
    let before = u(&c.get(leader).status().unwrap(), "committed");
    net.cut(leader as usize);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let (new_leader, new_term) = c.wait_leader(&rest);
    assert!(new_term > term);
    let rt = rt();
    let _held: Vec<Raw> = rt.block_on(async {
        let a = c.get(new_leader).mqtt();
        let mut held = Vec::new();
        for i in 0..5 {
            held.push(hold(a, &format!("majority-{i}")).await);
        }
        held
    });
    // A client on the minority side: mosquitto_pub inside its namespace.
    for v in ["mqttv5", "mqttv311"] {
        let t = Instant::now();
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &net.ns(leader as usize), "mosquitto_pub"])
            .args(["-h", &net.addr(leader as usize), "-p", "1883", "-V", v])
            .args(["-i", "on-minority", "-t", "t", "-m", "x"])
            .output()
            .expect("run mosquitto_pub");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{v}: published on a minority");
        assert!(err.contains("unavailable"), "{v}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{v}: {:?}",
            t.elapsed()
        );
    }
    // The minority committed nothing past what it had.
    let s = c.get(leader).status().unwrap();
    assert!(u(&s, "committed") <= before + 1, "minority committed: {s}");
    assert!(c.get(leader).owner("majority-0").is_none());
    net.heal(leader as usize);
    let (l, _) = c.wait_leader(&[1, 2, 3]);
    assert_ne!(l, 0);
    let committed = u(&c.get(l).status().unwrap(), "committed");
    c.wait_applied(&[1, 2, 3], committed);
    for i in 0..5 {
        let id = format!("majority-{i}");
        assert_eq!(
            c.get(leader).owner(&id).map(|o| o.0),
            Some(new_leader),
            "{id}"
        );
    }
    // And a CONNECT on the healed node claims again.
    let a = c.get(leader).mqtt();
    rt.block_on(async {
        assert_eq!(
            connack(a, ProtocolVersion::V5, "healed").await,
            ReasonCode::Success
        );
    });
}
