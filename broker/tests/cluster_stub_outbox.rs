//! Issue 14: a third node's outbox copies routed only to a session's old node, across a crash
//! of that node in its stub's window (`shard/src/cluster/stub_row.rs`, `outbox.rs`,
//! `unrouted.rs`). Three real `ringmq` processes, `--cores 1 --durability sync` each.
//!
//! The session moves from node 1 (A, the old node) to node 2 (B) while node 3 (X) is stopped
//! (SIGSTOP, so A's flush waits and its stub stays); A is killed -9 by PID once B installed the
//! session. X runs with the test fault `RINGMQ_TEST_DEAF_TO=2`: it acknowledges B's route
//! changes but never applies them, so it keeps routing the session's filter to A only, as a node
//! held behind B's route would. X's publisher then gets its PUBACKs from X's outbox (A is down).
//!
//! - A restarted **within** the stub's window restores the stub from its row; X's outbox copies
//!   reach A and the restored stub forwards every one of them to the session on B.
//! - A restarted **after** the window has no stub: X's copies match nothing on A and are
//!   counted `copies_unrouted` and logged, nothing else (links, the session, the publisher)
//!   is disturbed. What the session misses then is what docs/cluster.md says a node down past
//!   the window costs.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, try_link, wait_links};
use cluster_support::watchdog::Watchdog;
use cluster_support::{rt, serial, Cluster};
use common::raw::Raw;
use common::raw::{connect_packet, filter, pid, publish_packet, resp, RawEv};
use ringmq_codec::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Bound for links, leadership, restarts.
const SETTLE: Duration = Duration::from_secs(30);
/// The stub's window (`stub::STUB_FOR`).
const STUB_FOR: Duration = Duration::from_secs(20);
/// Messages X publishes while A is down.
const K: usize = 20;

fn links_up(c: &Cluster) {
    for id in 1..=3 {
        wait_links(c, id, 2);
    }
}

/// `ctl metrics --json` of node `id`: its handover counters.
fn handover(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    v["result"]["handover"].clone()
}

fn moves(c: &Cluster, id: u64) -> serde_json::Value {
    handover(c, id)["moves"].clone()
}

fn count(c: &Cluster, id: u64, k: &str) -> u64 {
    moves(c, id)[k].as_u64().unwrap_or(0)
}

/// Node `id`'s counter `k` of its link to `peer` (0 while unanswered).
fn link_count(c: &Cluster, id: u64, peer: u64, k: &str) -> u64 {
    try_link(c, id, peer).map_or(0, |l| l[k].as_u64().unwrap_or(0))
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

fn listening(c: &Cluster, id: u64) {
    let addr = c.get(id).mqtt();
    wait_for(
        &format!("node {id} not listening:\n{}", c.get(id).stderr()),
        SETTLE,
        || std::net::TcpStream::connect(addr).is_ok(),
    );
}

/// Publishes `so/{topic}` QoS 1 with payloads `from..from+n` on `p`; every PUBACK a success.
async fn publish_acked(p: &mut Raw, topic: &str, from: usize, n: usize) {
    for i in from..from + n {
        let id = (i % 60_000 + 1) as u16;
        p.send(&Packet::Publish(publish_packet(
            topic,
            1,
            false,
            id,
            format!("{i}").as_bytes(),
        )))
        .await;
    }
    let mut left: BTreeSet<u16> = (from..from + n).map(|i| (i % 60_000 + 1) as u16).collect();
    let end = Instant::now() + SETTLE;
    while !left.is_empty() {
        assert!(Instant::now() < end, "no PUBACK for {left:?}");
        match p.recv(Duration::from_millis(500)).await {
            RawEv::Packet(Packet::PubAck(a)) => {
                assert!(
                    (a.reason as u8) < 0x80,
                    "PUBACK {:?} for {}",
                    a.reason,
                    a.packet_id.get()
                );
                left.remove(&a.packet_id.get());
            }
            RawEv::Closed | RawEv::Garbage(_) => panic!("the publisher's connection ended"),
            _ => {}
        }
    }
}

/// What a connection received: per topic, the numbers.
type Got = BTreeMap<String, BTreeSet<usize>>;

fn of<'a>(got: &'a Got, topic: &str) -> &'a BTreeSet<usize> {
    static EMPTY: BTreeSet<usize> = BTreeSet::new();
    got.get(topic).unwrap_or(&EMPTY)
}

/// Reads the session's connection until `done(got)` or `within`: the numbers of the
/// PUBLISHes per topic, each acknowledged. Panics if the connection closes.
async fn take(s: &mut Raw, got: &mut Got, within: Duration, done: impl Fn(&Got) -> bool) {
    let end = Instant::now() + within;
    while !done(got) {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return;
        };
        match s.recv(left.min(Duration::from_millis(500))).await {
            RawEv::Packet(Packet::Publish(m)) => {
                if let Some(id) = m.packet_id {
                    s.send(&Packet::PubAck(resp(id.get()))).await;
                }
                got.entry(m.topic.as_str().to_string())
                    .or_default()
                    .insert(String::from_utf8_lossy(&m.payload).parse().unwrap());
            }
            RawEv::Closed | RawEv::Garbage(_) => panic!("the session's connection ended"),
            _ => {}
        }
    }
}

/// What the session subscribes, and when A restarts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Case {
    /// `so/#`, A restarted within the stub's window.
    Plain,
    /// `so/#`, A restarted once the window is over.
    AfterWindow,
    /// `$share/g/so/#` (the session the group's only member), A restarted within the window.
    Shared,
    /// `$share/g/so/#`, A restarted once the window is over.
    SharedAfterWindow,
}

impl Case {
    fn shared(self) -> bool {
        matches!(self, Case::Shared | Case::SharedAfterWindow)
    }
}

/// The move, A's crash in the stub window, X's publishes into its outbox, A's restart.
fn outbox_copies_across_a_crash_of_the_old_node(case: Case, client: &str) {
    let after_window = matches!(case, Case::AfterWindow | Case::SharedAfterWindow);
    let _g = serial();
    let mut c = Cluster::start(3, &["--cores", "1", "--durability", "sync"]);
    let wd = Watchdog::arm("cluster_stub_outbox", Duration::from_secs(240));
    // X never applies B's routes (test fault); for a share group, nor A's withdrawal of its
    // membership at the take (a plain stub keeps its filters routed on A).
    let deaf = if case.shared() { "2,1-" } else { "2" };
    c.node(3).stop();
    c.node(3).start_env(&[("RINGMQ_TEST_DEAF_TO", deaf)]);
    wd.phase("leader and links", &c);
    c.wait_leader(&[1, 2, 3]);
    links_up(&c);
    for id in 1..=3 {
        listening(&c, id);
    }
    let (n1, n2, n3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    let cp = mover(client);
    // One runtime for the whole test: a connection lives with the runtime it was opened on.
    let rt = rt();
    let mut got = Got::new();
    let mut m = rt.block_on(async {
        let (mut m, _) = raw_connect_sp(n1, cp.clone()).await;
        let sub = Subscribe {
            packet_id: pid(1),
            filters: vec![(
                filter(if case.shared() {
                    "$share/g/so/#"
                } else {
                    "so/#"
                }),
                SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            )],
            properties: Default::default(),
        };
        m.send(&Packet::Subscribe(sub)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        m
    });
    wd.phase("node 3 routes to node 1", &c);
    wait_for("node 3 never learned node 1's route", SETTLE, || {
        link_count(&c, 3, 1, "peer_routes") >= 1
    });
    let mut p = rt.block_on(async {
        let (mut p, _) =
            raw_connect_sp(n3, connect_packet(ProtocolVersion::V5, "so-pub", true)).await;
        // The route works before the move: X's publish reaches the session on A.
        publish_acked(&mut p, "so/before", 0, 1).await;
        let mut before = Got::new();
        take(&mut m, &mut before, SETTLE, |g| {
            !of(g, "so/before").is_empty()
        })
        .await;
        assert!(
            !of(&before, "so/before").is_empty(),
            "node 3's publish never reached node 1"
        );
        p
    });
    // Node 3 stopped: B's CONNACK waits for its route ack (5 s) and A's flush for it, so A's
    // stub stays for seconds after B installed the session. A is killed as soon as B
    // installed it (A's take, and the stub row with it, committed before its ship left).
    wd.phase("the move (node 3 stopped)", &c);
    signal(&c, 3, libc::SIGSTOP);
    let mut new = rt.block_on(async {
        let mut new = Raw::open(n2, cp.protocol).await;
        new.send(&Packet::Connect(Box::new(cp.clone()))).await;
        new
    });
    wait_for("node 2 never installed the session", SETTLE, || {
        handover(&c, 2)["installed"].as_u64().unwrap_or(0) >= 1
    });
    let taken = Instant::now();
    assert!(
        count(&c, 1, "stubs") >= 1,
        "node 1 started a stub: {}",
        moves(&c, 1)
    );
    assert_eq!(
        count(&c, 1, "stub_ended") + count(&c, 1, "stub_expired"),
        0,
        "the stub ended before the crash: {}",
        moves(&c, 1)
    );
    c.node(1).kill9();
    drop(m);
    signal(&c, 3, libc::SIGCONT);
    wd.phase("CONNACK on node 2", &c);
    rt.block_on(async {
        match new.recv(SETTLE).await {
            RawEv::Packet(Packet::ConnAck(a)) => {
                assert_eq!(a.reason, ReasonCode::Success);
                assert!(a.session_present, "session present on node 2");
            }
            e => panic!("no CONNACK on node 2: {e:?}"),
        }
    });
    // A down: X routes so/# to A only, so its copies are stored in its outbox for A and its
    // publisher is acknowledged from there.
    wd.phase("node 3 publishes into its outbox for node 1", &c);
    let stored_before = link_count(&c, 3, 1, "outbox_stored");
    rt.block_on(publish_acked(&mut p, "so/x", 0, K));
    let stored = link_count(&c, 3, 1, "outbox_stored") - stored_before;
    assert!(
        stored >= K as u64,
        "node 3 stored {stored} copies for node 1, not {K}: link {:?}",
        try_link(&c, 3, 1)
    );
    // None reaches B directly (X does not route to B).
    rt.block_on(take(&mut new, &mut got, Duration::from_millis(500), |g| {
        !of(g, "so/x").is_empty()
    }));
    assert!(
        of(&got, "so/x").is_empty(),
        "node 3 routed to node 2: {got:?}"
    );
    if after_window {
        // The stub row's end passes while A is down (a wait on the clock: the window is
        // the thing tested).
        wd.phase("node 1 down past the stub's window", &c);
        let past = taken + STUB_FOR + Duration::from_secs(1);
        while Instant::now() < past {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    wd.phase("node 1 restarts", &c);
    c.node(1).start();
    listening(&c, 1);
    wd.phase("links after node 1's restart", &c);
    links_up(&c);
    wd.phase("node 3's outbox drains to node 1", &c);
    wait_for("node 3's outbox for node 1 never drained", SETTLE, || {
        try_link(&c, 3, 1)
            .is_some_and(|l| l["outbox_rows"] == 0 && l["outbox_sent"].as_u64() >= Some(K as u64))
    });
    let m1 = moves(&c, 1);
    if !after_window {
        assert_eq!(m1["stubs_restored"].as_u64(), Some(1), "node 1 moves: {m1}");
        wd.phase(
            &format!("the restored stub forwards node 3's copies to node 2 ({case:?})"),
            &c,
        );
        rt.block_on(take(&mut new, &mut got, SETTLE, |g| {
            of(g, "so/x").len() >= K
        }));
        let want: BTreeSet<usize> = (0..K).collect();
        assert_eq!(
            of(&got, "so/x"),
            &want,
            "node 3's copies in the session on node 2"
        );
        let m1 = moves(&c, 1);
        let k = if case.shared() {
            "shared_forwarded"
        } else {
            "forwarded"
        };
        assert!(
            m1[k].as_u64().unwrap_or(0) >= K as u64,
            "node 1's restored stub forwarded them ({k}): {m1}"
        );
        assert_eq!(
            m1["copies_unrouted"].as_u64(),
            Some(0),
            "node 1 moves: {m1}"
        );
        eprintln!(
            "restored stub ({case:?}): node 3 stored {stored} copies for node 1, all {K} reached the session on node 2 through node 1's restored stub; node 1 moves {m1}; node 2 moves {}",
            moves(&c, 2)
        );
    } else {
        assert_eq!(m1["stubs_restored"].as_u64(), Some(0), "node 1 moves: {m1}");
        wd.phase("node 1 counts node 3's copies unrouted", &c);
        wait_for(
            &format!("node 1 never counted {K} copies unrouted: {}", moves(&c, 1)),
            SETTLE,
            || count(&c, 1, "copies_unrouted") >= K as u64,
        );
        assert_eq!(
            count(&c, 1, "copies_unrouted"),
            K as u64,
            "{}",
            moves(&c, 1)
        );
        assert_eq!(count(&c, 1, "forwarded"), 0, "{}", moves(&c, 1));
        assert_eq!(count(&c, 1, "shared_forwarded"), 0, "{}", moves(&c, 1));
        let log = c.get(1).stderr();
        let lines = log
            .lines()
            .filter(|l| l.contains("matched no subscription and no stub"))
            .count();
        assert_eq!(lines, 1, "logged once a minute per node:\n{log}");
        // Nothing else broke: links up, X's publisher still acknowledged, the session on B
        // still gets what B itself routes (a publish on B), and none of the unrouted copies.
        wd.phase("nothing else broke", &c);
        links_up(&c);
        rt.block_on(async {
            publish_acked(&mut p, "so/later", K, 1).await;
            let (mut q, _) =
                raw_connect_sp(n2, connect_packet(ProtocolVersion::V5, "so-pub2", true)).await;
            publish_acked(&mut q, "so/on-b", 0, 1).await;
            take(&mut new, &mut got, SETTLE, |g| !of(g, "so/on-b").is_empty()).await;
            assert!(
                !of(&got, "so/on-b").is_empty(),
                "the session on node 2 got node 2's publish"
            );
            take(&mut new, &mut got, Duration::from_secs(1), |_| false).await;
        });
        assert!(
            of(&got, "so/x").is_empty() && of(&got, "so/later").is_empty(),
            "unrouted copies reached the session: {got:?}"
        );
        eprintln!(
            "after the window ({case:?}): node 3 stored {stored} copies for node 1; node 1 counted {} unrouted, logged once; node 1 moves {}",
            count(&c, 1, "copies_unrouted"),
            moves(&c, 1)
        );
    }
    drop(wd);
}

/// The durable stub's exact case: X's outbox copies, routed only to A, reach the session on B
/// through the stub A restored from its row after its crash.
#[test]
fn a_third_nodes_outbox_copies_reach_the_moved_session_through_the_restored_stub() {
    outbox_copies_across_a_crash_of_the_old_node(Case::Plain, "so-mover");
}

/// The same with the session a share group's member: the stub row holds its `$share/`
/// filters too, and the restored stub forwards the group copies X picked A for.
#[test]
fn a_third_nodes_share_group_copies_reach_the_moved_member_through_the_restored_stub() {
    outbox_copies_across_a_crash_of_the_old_node(Case::Shared, "so-mover-share");
}

/// `copies_unrouted`: the same copies reaching A after its stub's window are counted and
/// logged once, and nothing else is disturbed.
#[test]
fn outbox_copies_reaching_the_old_node_after_the_stubs_window_are_counted_unrouted() {
    outbox_copies_across_a_crash_of_the_old_node(Case::AfterWindow, "so-mover-late");
}

/// The same for share-group copies: no member of the group and no moving one on A.
#[test]
fn group_copies_reaching_the_old_node_after_the_stubs_window_are_counted_unrouted() {
    outbox_copies_across_a_crash_of_the_old_node(Case::SharedAfterWindow, "so-mover-share-late");
}
