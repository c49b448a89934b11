//! Session ownership across real processes (issue 13): a CONNECT on one node
//! fences the same client id's connection on another (v5 DISCONNECT 0x8E,
//! 3.1.1 a close) and discards that session there; concurrent CONNECTs of a
//! few client ids on three nodes, with a node killed and restarted mid-run,
//! end with one owner per client id, agreed by every node, at most one live
//! connection per client id, and every epoch durable across restarts; bad
//! input on the cluster port and foreign data dirs are refused with one line.
//!
//! Clients: rumqttc v4/v5 (not ours) for the fencing behaviour, the codec's
//! raw client where exact CONNACKs are counted.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::Cluster;
use common::raw::RawEv;
use common::{Client, Opts, Proto, Raw};
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `ctl sessions --json` on `node` until `client_id` is gone.
fn wait_session_gone(node: &cluster_support::Node, client_id: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = node.ctl(&["--json", "sessions"]);
        assert_eq!(code, 0, "{err}");
        if !out.contains(&format!("\"client_id\":\"{client_id}\"")) {
            return;
        }
        assert!(
            Instant::now() < end,
            "session {client_id} still on node {}: {out}",
            node.id
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connect_on_another_node_fences_the_old_connection() {
    let _g = serial();
    let c = Cluster::start(3, &["--metrics-listen", "127.0.0.1:0"]);
    c.wait_leader(&[1, 2, 3]);
    let rt = rt();
    rt.block_on(async {
        // v5: a persistent session on node 1, taken over from node 2.
        let mut old =
            Client::connect(Opts::new(Proto::V5, c.get(1).mqtt(), "dev-5").persistent(300)).await;
        old.subscribe("t/#", 1).await;
        let new =
            Client::connect(Opts::new(Proto::V5, c.get(2).mqtt(), "dev-5").persistent(300)).await;
        let reason = old.closed_by_broker(Duration::from_secs(10)).await;
        assert_eq!(reason, Some(0x8E), "DISCONNECT Session taken over");
        drop(new);

        // 3.1.1: the old connection is closed (no DISCONNECT in 3.1.1).
        let mut old4 =
            Client::connect(Opts::new(Proto::V4, c.get(1).mqtt(), "dev-4").persistent(300)).await;
        let _new4 =
            Client::connect(Opts::new(Proto::V4, c.get(3).mqtt(), "dev-4").persistent(300)).await;
        assert_eq!(old4.closed_by_broker(Duration::from_secs(10)).await, None);
    });
    // Node 1 discarded both sessions (their epochs moved to other nodes).
    wait_session_gone(c.get(1), "dev-5");
    wait_session_gone(c.get(1), "dev-4");
    let s = c.get(1).status().unwrap();
    assert!(s["ownership"]["fenced"].as_u64().unwrap() >= 2, "{s}");
    // The same counters on /metrics, with the cluster's own families.
    let m = c.get(1).proc.as_ref().unwrap();
    assert!(m.metric("ringmq_cluster_ownership_fenced_total").unwrap() >= 2.0);
    assert_eq!(m.metric("ringmq_cluster_members "), Some(3.0));
    let claims = c.get(2).proc.as_ref().unwrap();
    assert!(
        claims
            .metric("ringmq_cluster_ownership_claims_total")
            .unwrap()
            >= 1.0
    );
    assert!(
        claims
            .metric("ringmq_cluster_ownership_claim_seconds_count")
            .unwrap()
            >= 1.0
    );
    assert!(claims.metric("ringmq_cluster_commits_total").is_some());
    assert!(claims.metric("ringmq_cluster_elections_total").unwrap() >= 1.0);
    assert_eq!(c.get(2).owner("dev-5").map(|o| o.0), Some(2));
    assert_eq!(c.get(1).owner("dev-4").map(|o| o.0), Some(3));
}

/// Ownership races: 3 nodes x 2 workers CONNECT (v5, persistent) 6 client
/// ids with random delays; node 3 is killed mid-run and restarted. Every
/// won CONNACK is recorded; at the end every node agrees on one owner and
/// epoch per client id, at most one connection per client id is still open
/// (on its owner), and after restarting every node the epochs are the same.
#[test]
fn ownership_races_with_a_kill_end_with_one_owner_per_client() {
    let _g = serial();
    let mut c = Cluster::start(3, &["--cluster-claim-timeout", "2s"]);
    c.wait_leader(&[1, 2, 3]);
    let ids: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    let rt = rt();
    let addrs: Vec<_> = (1..=3).map(|i| (i, c.get(i).mqtt())).collect();
    let run = |rounds: usize, seed: u64| {
        let ids = ids.clone();
        let addrs = addrs.clone();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (w, (node, addr)) in addrs.iter().flat_map(|a| [a, a]).enumerate() {
                let (node, addr, ids) = (*node, *addr, ids.clone());
                let mut rng = seed.wrapping_mul(31).wrapping_add(w as u64 + 1);
                tasks.push(tokio::spawn(async move {
                    let mut won: Vec<(String, u64, Raw)> = Vec::new();
                    for _ in 0..rounds {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let id = ids[(rng % ids.len() as u64) as usize].clone();
                        tokio::time::sleep(Duration::from_millis(rng % 40)).await;
                        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                            break; // the node is down
                        };
                        drop(tcp);
                        let mut raw = Raw::open(addr, ProtocolVersion::V5).await;
                        let mut cp = common::raw::connect_packet(ProtocolVersion::V5, &id, false);
                        cp.properties.session_expiry_interval = Some(60);
                        raw.send(&Packet::Connect(Box::new(cp))).await;
                        match raw.recv(Duration::from_secs(10)).await {
                            RawEv::Packet(Packet::ConnAck(a))
                                if a.reason == ReasonCode::Success =>
                            {
                                won.push((id, node, raw));
                            }
                            RawEv::Packet(Packet::ConnAck(a)) => {
                                assert_eq!(a.reason, ReasonCode::ServerUnavailable, "{a:?}");
                            }
                            _ => {} // the node died under us
                        }
                    }
                    won
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
    };
    let mut won = run(12, 1);
    c.node(3).kill9();
    won.extend(run(12, 2).into_iter().filter(|(_, n, _)| *n != 3));
    c.node(3).start();
    c.wait_leader(&[1, 2, 3]);
    let committed = c.get(c.wait_leader(&[1, 2, 3]).0).status().unwrap()["committed"]
        .as_u64()
        .unwrap();
    c.wait_applied(&[1, 2, 3], committed);
    assert!(won.len() >= 20, "only {} CONNECTs won", won.len());

    // One owner and epoch per client id, the same on every node.
    let mut owners: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for id in &ids {
        let views: Vec<Option<(u64, u64)>> = (1..=3).map(|n| c.get(n).owner(id)).collect();
        assert!(views.iter().all(|v| *v == views[0]), "{id}: {views:?}");
        if let Some(o) = views[0] {
            owners.insert(id.clone(), o);
        }
    }
    // At most one connection per client id still open, on its owner node.
    rt.block_on(async {
        let mut open: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, node, mut raw) in won {
            let alive = loop {
                match raw.recv(Duration::from_millis(300)).await {
                    RawEv::Timeout => break true,
                    RawEv::Packet(Packet::Disconnect(d)) => {
                        assert_eq!(d.reason, ReasonCode::SessionTakenOver);
                    }
                    RawEv::Packet(_) => {}
                    RawEv::Closed | RawEv::Garbage(_) => break false,
                }
            };
            if alive {
                open.entry(id).or_default().push(node);
            }
        }
        for (id, nodes) in &open {
            assert_eq!(nodes.len(), 1, "{id} open on {nodes:?}");
            assert_eq!(Some(nodes[0]), owners.get(id).map(|o| o.0), "{id}");
        }
    });
    // Every won epoch durable: all nodes restarted, the same owners and epochs.
    for n in 1..=3 {
        c.node(n).kill9();
    }
    for n in 1..=3 {
        c.node(n).start();
    }
    c.wait_leader(&[1, 2, 3]);
    for (id, o) in &owners {
        for n in 1..=3 {
            assert_eq!(
                c.get(n).owner(id),
                Some(*o),
                "{id} on node {n} after restart"
            );
        }
    }
}

#[test]
fn bad_input_on_the_cluster_port_and_foreign_data_dirs_are_refused() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    let port1 = c.get(1).cluster.clone();

    // Garbage and an HTTP request on the cluster port: closed, nothing breaks.
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 64][..]] {
        let mut s = std::net::TcpStream::connect(&port1).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(junk);
        let mut buf = [0u8; 256];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                // A reset (our bytes unread) is a close too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the cluster port kept a bad connection open: {e}"),
            }
            assert!(total < 4096);
        }
    }
    // A node of another cluster dialing node 1: refused, node 1 says why.
    let mut stranger = cluster_support::Node::stranger(
        9,
        &[
            "--cluster-id",
            "other",
            "--cluster-peers",
            &format!("9@127.0.0.1:{},1@{port1}", cluster_support::free_port()),
        ],
    );
    stranger.start();
    let end = Instant::now() + Duration::from_secs(15);
    while !c.get(1).stderr().contains("other") {
        assert!(
            Instant::now() < end,
            "node 1 never refused the foreign cluster: {}",
            c.get(1).stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stranger.kill9();
    c.wait_leader(&[1, 2, 3]);
    let rt = rt();
    rt.block_on(async {
        let (mut raw, _) =
            Raw::connect(c.get(1).mqtt(), ProtocolVersion::V5, "still-fine", true).await;
        raw.send(&Packet::Disconnect(Default::default())).await;
    });

    // Node 2's data dir under another cluster id or another node id: one line, refused.
    c.node(2).stop();
    let peers: String = c
        .nodes
        .iter()
        .map(|n| format!("{}@{}", n.id, n.cluster))
        .collect::<Vec<_>>()
        .join(",");
    let err = c.get(2).start_refused_with(&[
        "--node-id",
        "2",
        "--cluster-peers",
        &peers,
        "--cluster-id",
        "other",
    ]);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains("belongs to cluster \"ringmq\", not \"other\""),
        "{err}"
    );
    let peers7 = peers.replace("2@", "7@");
    let err = c
        .get(2)
        .start_refused_with(&["--node-id", "7", "--cluster-peers", &peers7]);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(line.contains("belongs to node 2, not node 7"), "{err}");
    // Nothing corrupted: it starts as itself and rejoins.
    c.node(2).start();
    c.wait_leader(&[1, 2, 3]);
}
