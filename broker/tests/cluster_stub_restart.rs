//! Issue 14: a session move's stub is stored with the take (`shard/src/cluster/stub_row.rs`)
//! and restored when the old node restarts within its window, so copies routed to the old
//! node the old way (a third node's outbox among them) still reach the session on the new
//! node. Three real `ringmq` processes, `--cores 1` each: the session moves from node 1 to
//! node 2 while node 3 is stopped (SIGSTOP, so node 1's flush waits and the stub stays), node 1
//! is killed -9 by PID in the stub window and restarted; a QoS 1 publish on node 1 then
//! matches the restored stub and reaches the session on node 2. Once the stub's window is
//! over its row is gone: a second restart restores nothing.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::{rt, serial, Cluster};
use common::raw::Raw;
use common::raw::{connect_packet, filter, pid, publish_packet, resp, RawEv};
use ringmq_codec::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions,
};
use std::time::{Duration, Instant};

/// Bound for links, leadership, restarts and the stub's window (20 s).
const SETTLE: Duration = Duration::from_secs(30);

fn links_up(c: &Cluster) {
    for id in 1..=3 {
        wait_links(c, id, 2);
    }
}

/// `ctl metrics --json` of node `id`: its session-move counters.
fn moves(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    v["result"]["handover"]["moves"].clone()
}

/// Sessions node `id` installed from another node.
fn installed(c: &Cluster, id: u64) -> u64 {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    v["result"]["handover"]["installed"].as_u64().unwrap_or(0)
}

fn count(c: &Cluster, id: u64, k: &str) -> u64 {
    moves(c, id)[k].as_u64().unwrap_or(0)
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `sig` to node `id`'s process, by its PID.
fn signal(c: &Cluster, id: u64, sig: libc::c_int) {
    let pid = c.get(id).proc.as_ref().expect("node running").pid();
    // SAFETY: kill(2) on the PID of a child process this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

fn mover(id: &str) -> Connect {
    let mut cp = connect_packet(ProtocolVersion::V5, id, false);
    cp.properties.session_expiry_interval = Some(600);
    cp
}

fn restart_listening(c: &mut Cluster, id: u64) {
    c.node(id).start();
    let addr = c.get(id).mqtt();
    wait_for(
        &format!("node {id} not listening after its restart"),
        SETTLE,
        || std::net::TcpStream::connect(addr).is_ok(),
    );
    links_up(c);
}

#[test]
fn a_stub_stored_with_the_take_forwards_again_after_a_crash_of_the_old_node() {
    let _g = serial();
    let mut c = Cluster::start(3, &["--cores", "1", "--durability", "sync"]);
    c.wait_leader(&[1, 2, 3]);
    links_up(&c);
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    for id in 1..=3 {
        let addr = c.get(id).mqtt();
        wait_for(
            &format!("node {id} not listening:\n{}", c.get(id).stderr()),
            SETTLE,
            || std::net::TcpStream::connect(addr).is_ok(),
        );
    }
    let cp = mover("stubrow-mover");
    // One runtime for the whole test: a connection lives with the runtime it was opened on.
    let rt = rt();
    rt.block_on(async {
        let (mut m, _) = raw_connect_sp(n1, cp.clone()).await;
        let sub = Subscribe {
            packet_id: pid(1),
            filters: vec![(
                filter("sr/#"),
                SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            )],
            properties: Default::default(),
        };
        m.send(&Packet::Subscribe(sub)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
    });
    // Node 3 stopped: node 2's CONNACK waits for node 3's route ack (5 s) and node 1's
    // flush for node 3, so node 1's stub forwards for seconds after node 2 installed the
    // session. Node 1 is killed as soon as node 2 installed it (its take, and the stub row
    // with it, committed before its ship left): waiting for the CONNACK could come after
    // node 1 read node 3's link as down (5.8 s of silence) and ended the stub.
    signal(&c, 3, libc::SIGSTOP);
    let mut new = rt.block_on(async {
        let mut new = Raw::open(n2, cp.protocol).await;
        new.send(&Packet::Connect(Box::new(cp.clone()))).await;
        new
    });
    wait_for("node 2 never installed the session", SETTLE, || {
        installed(&c, 2) >= 1
    });
    assert!(
        count(&c, 1, "stubs") >= 1,
        "node 1 started a stub: {}",
        moves(&c, 1)
    );
    let ended = count(&c, 1, "stub_ended") + count(&c, 1, "stub_expired");
    assert_eq!(
        ended,
        0,
        "the stub ended before the crash: {}",
        moves(&c, 1)
    );
    c.node(1).kill9();
    signal(&c, 3, libc::SIGCONT);
    let present = rt.block_on(async {
        match new.recv(SETTLE).await {
            RawEv::Packet(Packet::ConnAck(a)) => {
                a.reason == ReasonCode::Success && a.session_present
            }
            e => panic!("no CONNACK on node 2: {e:?}"),
        }
    });
    assert!(present, "session present on node 2");
    restart_listening(&mut c, 1);
    let m1 = moves(&c, 1);
    assert_eq!(m1["stubs_restored"].as_u64(), Some(1), "node 1 moves: {m1}");
    rt.block_on(async {
        let n1 = c.get(1).mqtt();
        let (mut p, _) =
            raw_connect_sp(n1, connect_packet(ProtocolVersion::V5, "stubrow-pub", true)).await;
        p.send(&Packet::Publish(publish_packet(
            "sr/after", 1, false, 1, b"1",
        )))
        .await;
        match p.recv(SETTLE).await {
            RawEv::Packet(Packet::PubAck(a)) => assert_eq!(a.packet_id.get(), 1),
            e => panic!("no PUBACK on node 1: {e:?}"),
        }
        let end = Instant::now() + SETTLE;
        loop {
            assert!(
                Instant::now() < end,
                "the publish on node 1 never reached the session on node 2: node 1 {}, node 2 {}",
                moves(&c, 1),
                moves(&c, 2)
            );
            match new.recv(Duration::from_millis(500)).await {
                RawEv::Packet(Packet::Publish(m)) if m.topic.as_str() == "sr/after" => {
                    if let Some(id) = m.packet_id {
                        new.send(&Packet::PubAck(resp(id.get()))).await;
                    }
                    break;
                }
                RawEv::Packet(Packet::Publish(m)) => {
                    if let Some(id) = m.packet_id {
                        new.send(&Packet::PubAck(resp(id.get()))).await;
                    }
                }
                RawEv::Closed | RawEv::Garbage(_) => panic!(
                    "node 2 closed the session's connection: node 2 log (end): {}",
                    {
                        c.get(2)
                            .stderr()
                            .lines()
                            .filter(|l| l.contains("ringmq") || l.contains("WARN"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                ),
                RawEv::Packet(other) => eprintln!("node 2 sent {other:?}"),
                _ => {}
            }
        }
    });
    assert!(
        count(&c, 1, "forwarded") >= 1,
        "the restored stub forwarded: {}",
        moves(&c, 1)
    );
    eprintln!(
        "after the restart: node 1 moves {}; node 2 moves {}",
        moves(&c, 1),
        moves(&c, 2)
    );
    // The rest of its window over, the stub ends and its row goes with it.
    wait_for("the restored stub never ended", SETTLE, || {
        count(&c, 1, "stub_ended") + count(&c, 1, "stub_expired") >= 1
    });
    c.node(1).stop();
    restart_listening(&mut c, 1);
    let m1 = moves(&c, 1);
    assert_eq!(m1["stubs_restored"].as_u64(), Some(0), "node 1 moves: {m1}");
}
