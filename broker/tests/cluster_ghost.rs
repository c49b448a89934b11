//! Issue 14, messages published during a session move by a node that could not answer the
//! move's flush (docs/cluster.md, "Late copies: the ghost"): three real `ringmq --cores 1`
//! processes, `--durability sync`. Node 3 is stopped (SIGSTOP, by PID) while a publisher on
//! it streams QoS 1 and 2 to a session on node 1; the session moves to node 2 meanwhile; node 3
//! resumes and sends what it routed with node 1's old route (its outbox) to node 1, after node
//! 1's stub ended. Node 1's ghost of the session forwards those copies to node 2: every message
//! arrives, QoS 2 once.
//!
//! The moving client and the publisher are the project's codec client (exact packet ids; a
//! publisher that waits out its node's stop without a client-side timeout).
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::mosq::link_up;
use cluster_support::{rt, serial, Cluster};
use common::raw::{connect_packet, filter, pid, publish_packet, resp, version, RawEv};
use common::*;
use ringmq_codec::{Packet, QoS, Subscribe, SubscribeProperties, SubscriptionOptions};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

type Seen = HashMap<String, Vec<(usize, bool)>>;

/// `ctl metrics --json` of node `id`: its session-move counters.
fn moves(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("metrics JSON");
    v["result"]["handover"]["moves"].clone()
}

fn count(m: &serde_json::Value, k: &str) -> u64 {
    m[k].as_u64().unwrap_or(0)
}

/// Sends `sig` (SIGSTOP, SIGCONT) to node `id`'s process, by its PID.
fn signal(c: &Cluster, id: u64, sig: libc::c_int) {
    let pid = c.get(id).proc.as_ref().expect("node running").pid();
    // SAFETY: kill(2) on the PID of a child process this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Reads one packet at most (or 10 ms) from the moving client, recording and acknowledging
/// each PUBLISH and completing each PUBREL: false once the connection closed.
async fn take_one(m: &mut Raw, seen: &mut Seen) -> bool {
    match m.recv(Duration::from_millis(10)).await {
        RawEv::Packet(Packet::Publish(p)) => {
            let n = String::from_utf8_lossy(&p.payload).parse().unwrap();
            seen.entry(p.topic.as_str().to_string())
                .or_default()
                .push((n, p.dup));
            let id = p.packet_id.unwrap().get();
            let ack = match p.qos {
                QoS::AtLeastOnce => Packet::PubAck(resp(id)),
                _ => Packet::PubRec(resp(id)),
            };
            m.send(&ack).await;
        }
        RawEv::Packet(Packet::PubRel(r)) => m.send(&Packet::PubComp(resp(r.packet_id.get()))).await,
        RawEv::Closed | RawEv::Garbage(_) => return false,
        _ => {}
    }
    true
}

/// Reads until `quiet` passes without a packet (or the connection closes).
async fn drain(m: &mut Raw, seen: &mut Seen, quiet: Duration) {
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let before: usize = seen.values().map(Vec::len).sum();
        if !take_one(m, seen).await {
            return;
        }
        if seen.values().map(Vec::len).sum::<usize>() != before {
            last = Instant::now();
        }
    }
}

/// The publisher on node 3: message i goes to `ghost/1` at QoS 1 and `ghost/2` at QoS 2, one
/// pair every 2 ms, at most 100 pairs unanswered, until `stop`; then every one is answered
/// (PUBACK, PUBCOMP; each PUBREC answered by PUBREL). Returns how many pairs it published, all
/// acknowledged with success. No client-side timeout: its node may be stopped for seconds.
fn publisher(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicUsize>) -> usize {
    rt().block_on(async {
        let v5 = ringmq_codec::ProtocolVersion::V5;
        let (mut p, _) = raw_connect_sp(addr, connect_packet(v5, "ghost-pub", true)).await;
        let (mut i, mut open) = (0usize, HashSet::<u16>::new());
        let end = Instant::now() + Duration::from_secs(120);
        let mut next_at = Instant::now();
        loop {
            assert!(Instant::now() < end, "publisher: {} unanswered at the end", open.len());
            let stopping = stop.load(Relaxed);
            if stopping && open.is_empty() {
                return i;
            }
            if !stopping && open.len() < 200 && Instant::now() >= next_at {
                let id1 = (i % 16_000 * 2 + 1) as u16;
                let m = format!("{i}");
                p.send(&Packet::Publish(publish_packet("ghost/1", 1, false, id1, m.as_bytes())))
                    .await;
                p.send(&Packet::Publish(publish_packet("ghost/2", 2, false, id1 + 1, m.as_bytes())))
                    .await;
                open.insert(id1);
                open.insert(id1 + 1);
                i += 1;
                sent.store(i, Relaxed);
                next_at += Duration::from_millis(2);
                continue;
            }
            match p.recv(Duration::from_millis(2)).await {
                RawEv::Packet(Packet::PubAck(r)) | RawEv::Packet(Packet::PubComp(r)) => {
                    assert!((r.reason as u8) < 0x80, "publisher: refused {r:?}");
                    open.remove(&r.packet_id.get());
                }
                RawEv::Packet(Packet::PubRec(r)) => {
                    assert!((r.reason as u8) < 0x80, "publisher: refused {r:?}");
                    p.send(&Packet::PubRel(resp(r.packet_id.get()))).await;
                }
                RawEv::Packet(_) | RawEv::Timeout => {}
                RawEv::Closed | RawEv::Garbage(_) => panic!("publisher: connection closed"),
            }
        }
    })
}

/// Issue 14: node 3 stopped while its publisher streams QoS 1 and 2 to a session on node 1;
/// the session moves to node 2 with node 3's links down; node 3 resumes and sends the copies
/// it routed with node 1's old route to node 1 (after node 1's stub ended). All arrive, each
/// QoS 2 message once (but the DUP resend of one in flight at the move); node 1's ghost
/// forwarded some, and ended once node 3 answered its flush.
#[test]
fn late_copies_of_a_stopped_node_reach_the_moved_session() {
    let _g = serial();
    let c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in 1..=3 {
        wait_links(&c, id, 2);
    }
    let (n1, n2, n3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    let mut cp = connect_packet(version(Proto::V5), "ghost-mover", false);
    cp.properties.session_expiry_interval = Some(600);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut seen = Seen::new();
    let n = rt().block_on(async {
        let (mut m, _) = raw_connect_sp(n1, cp.clone()).await;
        m.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![(filter("ghost/#"), SubscriptionOptions::with_qos(QoS::ExactlyOnce))],
            properties: SubscribeProperties::default(),
        }))
        .await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        let (s, p) = (stop.clone(), sent.clone());
        let publ = std::thread::spawn(move || publisher(n3, s, p));
        let end = Instant::now() + SETTLE;
        let got = |seen: &Seen| seen.get("ghost/2").map_or(0, Vec::len);
        while got(&seen) < 200 {
            assert!(Instant::now() < end, "the stream never started");
            assert!(take_one(&mut m, &mut seen).await);
        }
        // Node 3 stops amid the stream; nodes 1 and 2 close their silent links to it.
        signal(&c, 3, libc::SIGSTOP);
        let at_stop = sent.load(Relaxed);
        let end = Instant::now() + SETTLE;
        while link_up(&c, 1, 3) != Some(false) || link_up(&c, 2, 3) != Some(false) {
            assert!(Instant::now() < end, "links to the stopped node 3 never went down");
            assert!(take_one(&mut m, &mut seen).await);
        }
        // The move to node 2, node 3 away: node 1's stub ends without its flush.
        let (mut new, present) = raw_connect_sp(n2, cp.clone()).await;
        assert!(present, "session present on node 2");
        let _ = m.expect_closed(WAIT, "taken over").await;
        let end = Instant::now() + SETTLE;
        while count(&moves(&c, 1), "stub_ended") < 1 {
            assert!(Instant::now() < end, "node 1's stub never ended");
            assert!(take_one(&mut new, &mut seen).await);
        }
        // Node 3 resumes: what it routed to node 1 comes late; the stream goes on a while.
        signal(&c, 3, libc::SIGCONT);
        let end = Instant::now() + SETTLE;
        while link_up(&c, 3, 1) != Some(true) || link_up(&c, 3, 2) != Some(true) {
            assert!(Instant::now() < end, "node 3's links never came back");
            assert!(take_one(&mut new, &mut seen).await);
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            assert!(take_one(&mut new, &mut seen).await);
        }
        stop.store(true, Relaxed);
        let n = publ.join().unwrap();
        drain(&mut new, &mut seen, Duration::from_secs(3)).await;
        eprintln!("published {n} pairs, {at_stop} before node 3 stopped");
        n
    });
    let (m1, m2) = (moves(&c, 1), moves(&c, 2));
    let mut report = Vec::new();
    for t in ["ghost/1", "ghost/2"] {
        let v = seen.get(t).map(Vec::as_slice).unwrap_or_default();
        let mut taken = HashSet::new();
        let (mut last, mut repeats, mut late) = (None, 0, 0);
        for &(i, dup) in v {
            if !taken.insert(i) {
                assert!(dup || t == "ghost/1", "{t}: {i} delivered twice, the second time without DUP");
                repeats += 1;
                continue;
            }
            if last > Some(i) {
                late += 1;
            }
            last = last.max(Some(i));
        }
        let lost: Vec<usize> = (0..n).filter(|i| !taken.contains(i)).collect();
        assert!(
            lost.is_empty(),
            "{t}: lost {} of {n}: {:?}; node 1 moves {m1}; node 2 moves {m2}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        report.push(format!("{t}: repeated {repeats}, after a later one {late}"));
    }
    assert!(count(&m1, "ghosts") >= 1, "node 1 made no ghost: {m1}");
    assert!(count(&m1, "ghost_forwarded") >= 1, "node 1's ghost forwarded nothing: {m1}");
    let end = Instant::now() + SETTLE;
    while count(&moves(&c, 1), "ghost_ended") < 1 {
        assert!(Instant::now() < end, "node 1's ghost never ended: {}", moves(&c, 1));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "late copies: {n} pairs, nothing lost; {}; node 1 ghost forwarded {}, node 2 ghost duplicates dropped {}",
        report.join(", "),
        m1["ghost_forwarded"],
        m2["ghost_dups"],
    );
}
