//! Issue 14: a crash of the old node between the take and the new node's install loses
//! nothing (`shard/src/cluster/moving.rs`). Three real `ringmq` processes (`--durability
//! sync`, `--node-down-after 30s`). Two persistent sessions on node 1 (v5 and 3.1.1), each
//! with QoS 1 and QoS 2 messages queued and acknowledged to their publisher. The v5 client
//! connects to node 2: node 1 takes its session (crash point `session-taken`: the take's batch
//! commits, the snapshot never leaves) and is killed -9 by PID. Node 2 answers CONNACK 0x88
//! Server unavailable (3.1.1: return code 0x03, to the other client) instead of a fresh
//! session, and again at a retry; after node 1's restart both clients reconnect to node 2
//! with session present 1 and get every queued message, none of QoS 2 twice. Node 1 then
//! drops what it kept (the new node's MoveDone): a second restart restores nothing.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::{rt, serial, Cluster};
use common::persist::{disconnect, persistent_connect};
use common::raw::{connect_packet, publish_packet, resp, subscribe_packet, Raw, RawEv};
use ringmq_codec::{Connect, Packet, ProtocolVersion, ReasonCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bound for links, leadership and restarts.
const SETTLE: Duration = Duration::from_secs(30);
/// Messages queued per QoS and session.
const N: usize = 20;

fn links_up(c: &Cluster) {
    for id in 1..=3 {
        wait_links(c, id, 2);
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ctl metrics --json` of node `id`: its handover counters.
fn handover(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    v["result"]["handover"].clone()
}

fn kept(c: &Cluster, id: u64, k: &str) -> u64 {
    handover(c, id)["moves"][k].as_u64().unwrap_or(0)
}

fn listening(c: &Cluster, id: u64) {
    let addr = c.get(id).mqtt();
    wait_for(&format!("node {id} not listening"), SETTLE, || {
        std::net::TcpStream::connect(addr).is_ok()
    });
}

/// Three nodes started with `flags`, node `node` restarted with the test fault `env`; once
/// they have a leader, listen and have their links up.
fn start(flags: &[&str], node: u64, env: (&str, &str)) -> Cluster {
    let mut c = Cluster::start(3, flags);
    c.node(node).stop();
    c.node(node).start_env(&[env]);
    c.wait_leader(&[1, 2, 3]);
    for id in 1..=3 {
        listening(&c, id);
    }
    links_up(&c);
    c
}

fn v5(id: &str) -> Connect {
    persistent_connect(ProtocolVersion::V5, id, 600)
}

fn v4(id: &str) -> Connect {
    connect_packet(ProtocolVersion::V3_1_1, id, false)
}

/// The CONNECT's answer on `s` is CONNACK 0x88 Server unavailable with session present 0
/// ([MQTT-3.2.2-6]); `what` names it when it is not.
async fn unavailable(s: &mut Raw, what: &str) {
    match s.recv(SETTLE).await {
        RawEv::Packet(Packet::ConnAck(a)) => {
            assert_eq!(a.reason, ReasonCode::ServerUnavailable, "{what}: {a:?}");
            assert!(!a.session_present, "{what}: {a:?}");
        }
        e => panic!("{what}: {e:?}"),
    }
}

/// A persistent session subscribed to `f` at QoS 2, then disconnected.
async fn park(addr: SocketAddr, cp: Connect, f: &str) {
    let (mut s, _) = raw_connect_sp(addr, cp).await;
    s.send(&Packet::Subscribe(subscribe_packet(1, f, 2))).await;
    assert!(matches!(s.expect_packet("SUBACK").await, Packet::SubAck(_)));
    disconnect(s).await;
}

/// Publishes `N` QoS 1 and `N` QoS 2 messages to `prefix/q1` and `prefix/q2`, each
/// acknowledged (QoS 2 completed) before the next.
async fn publish(p: &mut Raw, prefix: &str, next_pid: &mut u16) {
    for q in [1u8, 2] {
        for i in 0..N {
            *next_pid += 1;
            let id = *next_pid;
            let body = format!("q{q}-{i}");
            let t = format!("{prefix}/q{q}");
            p.send(&Packet::Publish(publish_packet(
                &t,
                q,
                false,
                id,
                body.as_bytes(),
            )))
            .await;
            match (q, p.expect_packet("PUBACK/PUBREC").await) {
                (1, Packet::PubAck(r)) | (2, Packet::PubRec(r)) => {
                    assert_eq!(r.reason, ReasonCode::Success, "{t} {body}")
                }
                (_, other) => panic!("{t} {body}: {other:?}"),
            }
            if q == 2 {
                p.send(&Packet::PubRel(resp(id))).await;
                assert!(matches!(
                    p.expect_packet("PUBCOMP").await,
                    Packet::PubComp(_)
                ));
            }
        }
    }
}

/// Reads the resumed session's messages (answering each QoS 1 and 2 flow) until `2N`
/// distinct ones arrived, then 2 s more: payload -> times delivered.
async fn drain(s: &mut Raw, what: &str) -> HashMap<String, usize> {
    let mut got: HashMap<String, usize> = HashMap::new();
    let mut end = Instant::now() + SETTLE;
    let mut quiet_from: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if got.len() == 2 * N && quiet_from.is_none() {
            quiet_from = Some(now);
            end = now + Duration::from_secs(2);
        }
        if now >= end {
            break;
        }
        match s.recv(end - now).await {
            RawEv::Packet(Packet::Publish(p)) => {
                let body = String::from_utf8_lossy(&p.payload).into_owned();
                *got.entry(body).or_default() += 1;
                match (p.qos as u8, p.packet_id) {
                    (1, Some(id)) => s.send(&Packet::PubAck(resp(id.get()))).await,
                    (2, Some(id)) => s.send(&Packet::PubRec(resp(id.get()))).await,
                    _ => {}
                }
            }
            RawEv::Packet(Packet::PubRel(r)) => {
                s.send(&Packet::PubComp(resp(r.packet_id.get()))).await
            }
            RawEv::Packet(_) | RawEv::Timeout => {}
            other => panic!("{what}: {other:?} after {} messages", got.len()),
        }
    }
    got
}

fn check(got: &HashMap<String, usize>, what: &str) {
    for q in [1, 2] {
        for i in 0..N {
            let k = format!("q{q}-{i}");
            let n = got.get(&k).copied().unwrap_or(0);
            assert!(n >= 1, "{what}: {k} lost (got {} distinct)", got.len());
            if q == 2 {
                assert_eq!(n, 1, "{what}: QoS 2 {k} delivered {n} times");
            }
        }
    }
}

fn run(cores: &str) {
    let _g = serial();
    let flags = [
        "--cores",
        cores,
        "--durability",
        "sync",
        "--node-down-after",
        "30s",
        "--cluster-claim-timeout",
        "2s",
    ];
    // Node 1 runs with the crash point armed: it holds the first session it takes.
    let mut c = start(&flags, 1, ("RINGMQ_TEST_CRASH", "session-taken"));
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let (id5, id4) = ("acrash-v5", "acrash-v4");
    // One runtime for the whole test: a connection lives with the runtime it was opened on.
    let rt = rt();
    let mut c5 = rt.block_on(async {
        park(n1, v5(id5), "ac5/#").await;
        park(n1, v4(id4), "ac4/#").await;
        let (mut p, _) =
            raw_connect_sp(n1, connect_packet(ProtocolVersion::V5, "ac-pub", true)).await;
        let mut pid = 0;
        publish(&mut p, "ac5", &mut pid).await;
        publish(&mut p, "ac4", &mut pid).await;
        disconnect(p).await;
        // The v5 client resumes on node 2: node 1 takes the session and holds the ship.
        let mut s = Raw::open(n2, ProtocolVersion::V5).await;
        s.send(&Packet::Connect(Box::new(v5(id5)))).await;
        s
    });
    wait_for("node 1 never reached the crash point", SETTLE, || {
        c.get(1)
            .stderr()
            .contains("session-taken: held (committed true)")
    });
    c.node(1).kill9();
    rt.block_on(async {
        // [MQTT-3.2.2-6] v5: CONNACK 0x88 Server unavailable, not a fresh session.
        unavailable(&mut c5, "no CONNACK on node 2 for the v5 client").await;
        c5.expect_closed(Duration::from_secs(5), "after CONNACK 0x88")
            .await;
        // A retry while node 1 is down: refused again (node 2 kept the ownership).
        let mut again = Raw::open(n2, ProtocolVersion::V5).await;
        again.send(&Packet::Connect(Box::new(v5(id5)))).await;
        unavailable(&mut again, "no CONNACK on node 2 for the v5 retry").await;
        // 3.1.1: return code 0x03 Server unavailable [MQTT-3.2.2-6], as bytes.
        let mut s4 = Raw::open(n2, ProtocolVersion::V3_1_1).await;
        s4.send(&Packet::Connect(Box::new(v4(id4)))).await;
        let bytes = s4
            .read_raw(SETTLE)
            .await
            .expect("a CONNACK for the 3.1.1 client");
        assert_eq!(bytes, [0x20, 0x02, 0x00, 0x03], "3.1.1 CONNACK");
    });
    let h2 = handover(&c, 2);
    assert!(h2["unavailable"].as_u64().unwrap_or(0) >= 3, "node 2: {h2}");
    assert_eq!(h2["installed"].as_u64(), Some(0), "node 2: {h2}");
    // Node 1 comes back (no crash point): both sessions reach node 2 whole.
    c.node(1).start();
    listening(&c, 1);
    links_up(&c);
    rt.block_on(async {
        for (cp, what) in [(v5(id5), "v5"), (v4(id4), "3.1.1")] {
            let (mut s, present) = raw_connect_sp(n2, cp).await;
            assert!(present, "{what}: session present 1 on node 2");
            let got = drain(&mut s, what).await;
            check(&got, what);
            disconnect(s).await;
        }
    });
    let h1 = handover(&c, 1);
    assert!(
        h1["moves"]["kept_restored"].as_u64().unwrap_or(0) >= 1,
        "node 1: {h1}"
    );
    assert!(
        h1["moves"]["kept_served"].as_u64().unwrap_or(0) >= 1,
        "node 1: {h1}"
    );
    // Node 2's MoveDone (its install durable) lets node 1 drop both keeps.
    wait_for("node 1 kept the sessions after MoveDone", SETTLE, || {
        kept(&c, 1, "kept_done") >= 2
    });
    c.node(1).stop();
    c.node(1).start();
    listening(&c, 1);
    assert_eq!(
        kept(&c, 1, "kept_restored"),
        0,
        "node 1: {}",
        handover(&c, 1)
    );
}

#[test]
fn a_crash_of_the_old_node_before_the_new_one_installs_loses_nothing() {
    run("1");
}

#[test]
fn a_crash_of_the_old_node_before_the_new_one_installs_loses_nothing_2_cores() {
    run("2");
}

/// A claim answered after its CONNECT's timeout (test fault `RINGMQ_TEST_CLAIM_LATE` on
/// node 2: the claim commits, its answer comes 4 s late against a 2 s timeout). The CONNECT
/// gets CONNACK 0x88; the claim's entry committed anyway, so node 2 owns the client at an
/// epoch no session was installed under there, and node 1 fenced the session. The retry on
/// node 2 finds node 2 the owner and still fetches the session from node 1: session present
/// 1, every queued message, QoS 2 once (before, a fresh session: the session was lost).
#[test]
fn a_claim_that_commits_after_its_timeout_still_fetches_the_session() {
    let _g = serial();
    let flags = [
        "--durability",
        "sync",
        "--node-down-after",
        "30s",
        "--cluster-claim-timeout",
        "2s",
    ];
    let id5 = "aclate-v5";
    let c = start(&flags, 2, ("RINGMQ_TEST_CLAIM_LATE", "aclate-v5:4000"));
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let rt = rt();
    rt.block_on(async {
        park(n1, v5(id5), "acl/#").await;
        let (mut p, _) =
            raw_connect_sp(n1, connect_packet(ProtocolVersion::V5, "acl-pub", true)).await;
        let mut pid = 0;
        publish(&mut p, "acl", &mut pid).await;
        disconnect(p).await;
        let mut s = Raw::open(n2, ProtocolVersion::V5).await;
        s.send(&Packet::Connect(Box::new(v5(id5)))).await;
        // [MQTT-3.2.2-6] the claim timed out: CONNACK 0x88 Server unavailable.
        unavailable(&mut s, "no CONNACK on node 2").await;
    });
    // The claim committed (its answer was held past the timeout).
    wait_for("node 2's late claim never committed", SETTLE, || {
        c.get(2)
            .stderr()
            .contains("RINGMQ_TEST_CLAIM_LATE: claimed (true)")
    });
    rt.block_on(async {
        let (mut s, present) = raw_connect_sp(n2, v5(id5)).await;
        assert!(present, "session present 1 on node 2 after the late claim");
        let got = drain(&mut s, "late claim").await;
        check(&got, "late claim");
        disconnect(s).await;
    });
}

/// Two CONNECTs of one client on one node whose claims finish out of order (test fault: the
/// first claim commits, its answer comes 1.5 s late, within the 3 s claim timeout; the second
/// claims meanwhile at a later epoch and connects). When the first's answer comes it lost the
/// race: it is refused (CONNACK 0x88) and does not take the newer connection's session over.
#[test]
fn the_older_of_two_claims_on_one_node_does_not_take_over_the_newer() {
    let _g = serial();
    let flags = ["--cluster-claim-timeout", "3s"];
    let id5 = "race-v5";
    let c = start(&flags, 2, ("RINGMQ_TEST_CLAIM_LATE", "race-v5:1500"));
    let n2 = c.get(2).mqtt();
    let rt = rt();
    let mut first = rt.block_on(async {
        let mut first = Raw::open(n2, ProtocolVersion::V5).await;
        first.send(&Packet::Connect(Box::new(v5(id5)))).await;
        first
    });
    wait_for("node 2 never claimed for the first CONNECT", SETTLE, || {
        c.get(2)
            .stderr()
            .contains("RINGMQ_TEST_CLAIM_LATE: claimed (true)")
    });
    rt.block_on(async {
        let (mut second, _) = raw_connect_sp(n2, v5(id5)).await;
        unavailable(&mut first, "no CONNACK for the first CONNECT").await;
        // The newer connection is still the session's: it answers a ping.
        second.send(&Packet::PingReq).await;
        match second.recv(SETTLE).await {
            RawEv::Packet(Packet::PingResp) => {}
            e => panic!("the newer connection: {e:?} instead of PINGRESP"),
        }
        disconnect(second).await;
    });
}

/// When the old node never comes back: once it has been down `--node-down-after` (3 s
/// here) the session is declared lost, and the client gets a fresh session (session
/// present 0), as for any session on a dead node; counted as `lost`.
#[test]
fn a_session_whose_old_node_stays_down_is_given_up_after_node_down_after() {
    let _g = serial();
    let flags = [
        "--durability",
        "sync",
        "--node-down-after",
        "3s",
        "--cluster-claim-timeout",
        "2s",
    ];
    let mut c = start(&flags, 1, ("RINGMQ_TEST_CRASH", "session-taken"));
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let id5 = "acrash-gone";
    let rt = rt();
    let mut s = rt.block_on(async {
        park(n1, v5(id5), "acg/#").await;
        let mut s = Raw::open(n2, ProtocolVersion::V5).await;
        s.send(&Packet::Connect(Box::new(v5(id5)))).await;
        s
    });
    wait_for("node 1 never reached the crash point", SETTLE, || {
        c.get(1)
            .stderr()
            .contains("session-taken: held (committed true)")
    });
    c.node(1).kill9();
    let killed = Instant::now();
    rt.block_on(async {
        unavailable(&mut s, "no CONNACK on node 2").await;
        // The client retries; node 1 stays down.
        let end = Instant::now() + SETTLE;
        loop {
            let mut r = Raw::open(n2, ProtocolVersion::V5).await;
            r.send(&Packet::Connect(Box::new(v5(id5)))).await;
            match r.recv(SETTLE).await {
                RawEv::Packet(Packet::ConnAck(a)) if a.reason == ReasonCode::Success => {
                    assert!(!a.session_present, "a fresh session: node 1 is down");
                    break;
                }
                RawEv::Packet(Packet::ConnAck(a)) => {
                    assert_eq!(a.reason, ReasonCode::ServerUnavailable, "{a:?}")
                }
                e => panic!("no CONNACK on node 2: {e:?}"),
            }
            assert!(Instant::now() < end, "node 2 never gave the session up");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "given up before node-down-after: {:?}",
        killed.elapsed()
    );
    let h2 = handover(&c, 2);
    assert_eq!(h2["lost"].as_u64(), Some(1), "node 2: {h2}");
}
