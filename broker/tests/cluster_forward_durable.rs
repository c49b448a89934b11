//! Issue 14, `--durability sync`: a QoS 1/2 copy that the old node's stub forwards to the
//! session's new node during a move (`shard/src/cluster/copy_acks.rs`) is acknowledged to its
//! publisher only once the new node holds it durably. Three real `ringmq` processes (`--cores 1`
//! each, one test with `--cores 2`); the session moves from node 1 to node 2 while a publisher
//! on node 1 streams to it, so every copy its publishes make for the session goes through node
//! 1's stub. Test crash points (`RINGMQ_TEST_CRASH`) abort node 2 right after it received
//! forwarded copies and before it committed them (`fwd-copy-in`), or node 1 as its stub
//! forwards after node 2 installed the session (`fwd-copy-out`); every message the publisher
//! got a PUBACK/PUBREC for must be in the session afterwards.
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::watchdog::Watchdog;
use cluster_support::{rt, serial, Cluster};
use common::raw::{connect_packet, filter, pid, publish_packet, resp, RawEv};
use common::*;
use ringmq_codec::{
    Connect, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound for links, leadership and restarts.
const SETTLE: Duration = Duration::from_secs(30);

/// What the subscriber saw: per topic, (number, DUP) in arrival order.
type Seen = HashMap<String, Vec<(usize, bool)>>;
/// What the publisher got a success acknowledgement for: per topic, the numbers.
type Acked = HashMap<String, Vec<usize>>;

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

fn subscribe_packet(f: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![(filter(f), SubscriptionOptions::with_qos(qos))],
        properties: Default::default(),
    })
}

/// The longest [`take_all`] reads without a silence: its callers check their deadlines
/// between calls (a broker that never stops sending must fail a test, not hang it).
const TAKE_ALL_CAP: Duration = Duration::from_secs(3);

/// Reads for `within` of silence, or [`TAKE_ALL_CAP`] at most: each PUBLISH recorded and
/// acknowledged, each PUBREL completed. False once the connection closed.
async fn take_all(m: &mut Raw, seen: &mut Seen, within: Duration) -> bool {
    let cap = Instant::now() + TAKE_ALL_CAP;
    let mut n = 0usize;
    loop {
        if Instant::now() >= cap {
            eprintln!("take_all: {n} packets in {TAKE_ALL_CAP:?} without {within:?} of silence");
            return true;
        }
        n += 1;
        match m.recv(within).await {
            RawEv::Packet(Packet::Publish(p)) => take(m, seen, &p).await,
            RawEv::Packet(Packet::PubRel(r)) => {
                m.send(&Packet::PubComp(resp(r.packet_id.get()))).await
            }
            RawEv::Packet(Packet::Disconnect(d)) => {
                eprintln!("DISCONNECT from the broker: {:?}", d.reason)
            }
            RawEv::Packet(_) => {}
            RawEv::Timeout => return true,
            RawEv::Closed => return false,
            RawEv::Garbage(e) => {
                eprintln!("the broker sent what the decoder refuses: {e}");
                return false;
            }
        }
    }
}

/// [`take_all`] for `within` at most, whatever comes.
async fn take_for(m: &mut Raw, seen: &mut Seen, within: Duration) {
    let end = Instant::now() + within;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match m.recv(left).await {
            RawEv::Packet(Packet::Publish(p)) => take(m, seen, &p).await,
            RawEv::Packet(Packet::PubRel(r)) => {
                m.send(&Packet::PubComp(resp(r.packet_id.get()))).await
            }
            RawEv::Packet(_) => {}
            _ => return,
        }
    }
}

async fn take(m: &mut Raw, seen: &mut Seen, p: &Publish) {
    let n: usize = String::from_utf8_lossy(&p.payload).parse().unwrap();
    seen.entry(p.topic.as_str().to_string())
        .or_default()
        .push((n, p.dup));
    if let Some(id) = p.packet_id {
        let a = match p.qos {
            QoS::AtLeastOnce => Packet::PubAck(resp(id.get())),
            _ => Packet::PubRec(resp(id.get())),
        };
        m.send(&a).await;
    }
}

/// A publisher on `addr` publishing `fwd/1` at QoS 1 and `fwd/2` at QoS 2, alternately, 40 in
/// flight, until `stop` (or its connection ends, or 40,000 messages): the numbers each topic got
/// a success PUBACK/PUBREC for. The first 200 leave before `started` is set.
fn publisher(
    addr: std::net::SocketAddr,
    started: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    persistent: bool,
) -> (Acked, Unacked) {
    rt().block_on(async {
        let (mut p, _) = raw_connect_sp(addr, pub_connect(persistent)).await;
        let mut acked: Acked = HashMap::new();
        // Packet id -> (topic, number).
        let mut out: HashMap<u16, (String, usize)> = HashMap::new();
        let mut next = 0usize;
        let send = |p_: &mut usize, out: &mut HashMap<u16, (String, usize)>| {
            let i = *p_;
            *p_ += 1;
            let (t, q) = if i.is_multiple_of(2) {
                ("fwd/1", 1)
            } else {
                ("fwd/2", 2)
            };
            let id = (i % 60_000 + 1) as u16;
            out.insert(id, (t.to_string(), i / 2));
            Packet::Publish(publish_packet(
                t,
                q,
                false,
                id,
                format!("{}", i / 2).as_bytes(),
            ))
        };
        for _ in 0..40 {
            let pkt = send(&mut next, &mut out);
            p.send(&pkt).await;
        }
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            if next >= 200 {
                started.store(true, Relaxed);
            }
            // (acknowledged id, a slot in flight freed)
            let (id, freed) = match p.recv(WAIT).await {
                RawEv::Packet(Packet::PubAck(r)) => {
                    (((r.reason as u8) < 0x80).then_some(r.packet_id.get()), true)
                }
                RawEv::Packet(Packet::PubRec(r)) if (r.reason as u8) < 0x80 => {
                    p.send(&Packet::PubRel(resp(r.packet_id.get()))).await;
                    (Some(r.packet_id.get()), false)
                }
                RawEv::Packet(Packet::PubRec(r)) => {
                    out.remove(&r.packet_id.get());
                    (None, true)
                }
                RawEv::Packet(Packet::PubComp(_)) => (None, true),
                RawEv::Packet(Packet::Disconnect(d)) => {
                    eprintln!("publisher: DISCONNECT {:?} after {next} sent", d.reason);
                    (None, false)
                }
                RawEv::Packet(_) => (None, false),
                RawEv::Timeout => {
                    eprintln!("publisher: no acknowledgement within {WAIT:?}");
                    (None, false)
                }
                RawEv::Closed | RawEv::Garbage(_) => {
                    eprintln!("publisher: connection ended after {next} sent");
                    return (acked, out);
                }
            };
            if let Some((t, n)) = id.and_then(|id| out.remove(&id)) {
                acked.entry(t).or_default().push(n);
            }
            if !freed {
                continue;
            }
            if !stop.load(Relaxed) && next < 40_000 {
                let pkt = send(&mut next, &mut out);
                p.send(&pkt).await;
            } else if out.is_empty() {
                eprintln!("publisher: stopped after {next} sent");
                return (acked, out);
            }
        }
        eprintln!("publisher: out of time after {next} sent");
        (acked, out)
    })
}

/// Packet id -> (topic, number) of the publishes not acknowledged yet.
type Unacked = HashMap<u16, (String, usize)>;

/// The publisher's CONNECT: v5, a clean session or (`persistent`) one kept 600 s.
fn pub_connect(persistent: bool) -> Connect {
    let mut cp = connect_packet(ProtocolVersion::V5, "fwd-pub", !persistent);
    if persistent {
        cp.properties.session_expiry_interval = Some(600);
    }
    cp
}

/// The persistent publisher back on `addr` after its node restarted: resends every publish
/// not acknowledged with DUP [MQTT-4.4.0-1] and adds those now acknowledged to `acked`.
async fn publisher_resumes(addr: std::net::SocketAddr, out: Unacked, acked: &mut Acked) {
    let (mut p, present) = raw_connect_sp(addr, pub_connect(true)).await;
    assert!(
        present,
        "the publisher's session survived its node's restart"
    );
    let mut left = out;
    for (&id, (t, n)) in &left {
        let q = if t == "fwd/1" { 1 } else { 2 };
        let mut m = publish_packet(t, q, false, id, format!("{n}").as_bytes());
        m.dup = true;
        p.send(&Packet::Publish(m)).await;
    }
    let end = Instant::now() + SETTLE;
    while !left.is_empty() && Instant::now() < end {
        let (id, ok) = match p.recv(WAIT).await {
            RawEv::Packet(Packet::PubAck(r)) => (r.packet_id.get(), (r.reason as u8) < 0x80),
            RawEv::Packet(Packet::PubRec(r)) => {
                p.send(&Packet::PubRel(resp(r.packet_id.get()))).await;
                (r.packet_id.get(), (r.reason as u8) < 0x80)
            }
            RawEv::Packet(_) => continue,
            other => panic!("publisher after the restart: {other:?}"),
        };
        if let Some((t, n)) = left.remove(&id).filter(|_| ok) {
            acked.entry(t).or_default().push(n);
        }
    }
    assert!(
        left.is_empty(),
        "not acknowledged after the restart: {left:?}"
    );
}

/// The session's CONNECT (v5, expiry 600 s, clean start 0).
fn mover(id: &str) -> Connect {
    let mut cp = connect_packet(ProtocolVersion::V5, id, false);
    cp.properties.session_expiry_interval = Some(600);
    cp
}

/// Which node crashes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Crash {
    /// Node 2, the new owner, at the 10th forwarded copy after its install is durable.
    New,
    /// Node 1, the old owner, at the 10th copy its stub forwards once node 2 answered the
    /// first one (node 2's install is durable then).
    Old,
    /// Node 1, the old owner, once the prepare commit of a persistent publisher's QoS 2
    /// message with copies for node 2 (its stub's, a direct one) is durable, before they
    /// leave (`node-copy-prepared`); the publisher resends what it had no answer for.
    Prepared,
}

/// The move amid the stream, the crash, the restart, and the check: nothing acknowledged
/// lost; returns (acknowledged, QoS 2 messages delivered twice).
fn forwarded_copies_survive(cores: usize, crash: Crash, client: &str) -> (usize, usize) {
    let _g = serial();
    let cores_s = cores.to_string();
    let mut c = Cluster::start(3, &["--cores", &cores_s]);
    let (victim, point) = match crash {
        Crash::New => (2, "fwd-copy-in"),
        Crash::Old => (1, "fwd-copy-out"),
        Crash::Prepared => (1, "node-copy-prepared"),
    };
    c.node(victim).stop();
    c.node(victim).start_env(&[("RINGMQ_TEST_CRASH", point)]);
    // A hang (one run once hung after node 1's restart) fails with the phase and the
    // nodes' counters: a run takes 20-60 s.
    let wd = Watchdog::arm("forwarded_copies_survive", Duration::from_secs(300));
    wd.phase("leader and links", &c);
    c.wait_leader(&[1, 2, 3]);
    links_up(&c);
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let cp = mover(client);
    let mut seen: Seen = HashMap::new();
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // One runtime for both halves: the session's connection on node 2 opened in the first is
    // read in the second (a socket of a dropped runtime reads as closed).
    let runtime = rt();
    let acked = runtime.block_on(async {
        let (mut m, _) = raw_connect_sp(n1, cp.clone()).await;
        m.send(&subscribe_packet("fwd/#", QoS::ExactlyOnce)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        let (s, t) = (started.clone(), stop.clone());
        let publ = std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| publisher(n1, s, t, crash == Crash::Prepared));
            if r.is_err() {
                eprintln!("publisher panicked");
            }
            r.unwrap_or_default()
        });
        let end = Instant::now() + SETTLE;
        while !started.load(Relaxed) {
            assert!(Instant::now() < end, "the stream never started");
            take_for(&mut m, &mut seen, Duration::from_millis(5)).await;
        }
        // The move, with node 3 stopped (SIGSTOP, by PID): its route ack and its answer to
        // node 1's flush time out (5 s each), so node 1's stub forwards what its publisher
        // sends to the session for seconds after node 2 installed it.
        wd.phase("the move to node 2 (node 3 stopped)", &c);
        signal(&c, 3, libc::SIGSTOP);
        let mut new = Raw::open(n2, cp.protocol).await;
        new.send(&Packet::Connect(Box::new(cp.clone()))).await;
        take_all(&mut m, &mut seen, Duration::from_millis(200)).await;
        // A refused CONNECT (a claim that timed out while node 3 is stopped: 0x88) is
        // sent again; a connection closed without CONNACK is node 2's crash.
        let end = Instant::now() + SETTLE;
        while Instant::now() < end {
            match new.recv(WAIT).await {
                RawEv::Packet(Packet::ConnAck(a))
                    if a.reason != ringmq_codec::ReasonCode::Success =>
                {
                    eprintln!("CONNACK on node 2: {:?}, CONNECT again", a.reason);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    new = Raw::open(n2, cp.protocol).await;
                    new.send(&Packet::Connect(Box::new(cp.clone()))).await;
                }
                RawEv::Packet(Packet::ConnAck(a)) => {
                    eprintln!("CONNACK on node 2: session present {}", a.session_present);
                    // The session moved whole (these crash points fire only after the
                    // install: node 2 at a forwarded copy after it, node 1 once node 2
                    // answered its first forwarded copy, or, `node-copy-prepared`, at a
                    // prepare commit holding a copy routed by node 2's own route).
                    assert!(a.session_present, "session present on node 2");
                    break;
                }
                RawEv::Packet(other) => {
                    eprintln!("CONNECT on node 2: {other:?} before its CONNACK");
                }
                RawEv::Timeout => {
                    // Node 2's claim or fetch may wait for a node 1 that is crashing.
                    eprintln!("CONNECT on node 2: no CONNACK within {WAIT:?} yet");
                }
                other => {
                    // Closed without CONNACK (the probe loop below resumes the session).
                    eprintln!("CONNECT on node 2 ended without CONNACK: {other:?}");
                    break;
                }
            }
        }
        // Until the victim crashed: node 2 ends the session's connection, node 1 the
        // publisher's.
        wd.phase("waiting for the crash point", &c);
        let end = Instant::now() + SETTLE;
        loop {
            assert!(
                Instant::now() < end,
                "node {victim} never reached {point}: node 1 {}, node 2 {}, publisher done {}",
                moves(&c, 1),
                moves(&c, 2),
                publ.is_finished()
            );
            let open = take_all(&mut new, &mut seen, Duration::from_millis(100)).await;
            if !open && crash == Crash::Prepared {
                eprintln!("the session's connection on node 2 closed before the restart");
            }
            let gone = match crash {
                Crash::New => !open,
                Crash::Old | Crash::Prepared => publ.is_finished(),
            };
            if gone {
                break;
            }
        }
        stop.store(true, Relaxed);
        let got = publ.join().unwrap();
        (got, new)
    });
    signal(&c, 3, libc::SIGCONT);
    let ((mut acked, unacked), mut new) = acked;
    eprintln!(
        "before the restart: node 1 moves {}; node 2 moves {}",
        moves(&c, 1),
        moves(&c, 2)
    );
    let err = c.node(victim).wait_crash(SETTLE);
    assert!(err.contains(&format!("aborting at {point}")), "{err}");
    c.node(victim).start();
    wd.phase("links after the restart", &c);
    links_up(&c);
    let addr = c.get(victim).mqtt();
    let end = Instant::now() + SETTLE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < end,
            "node {victim} not listening for MQTT after its restart:\n{}",
            c.get(victim).stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut dups = 0;
    // Where each topic's arrivals stood at the restart (a duplicate's two arrivals are
    // reported as before/after it).
    let at_restart: HashMap<String, usize> =
        seen.iter().map(|(t, v)| (t.clone(), v.len())).collect();
    runtime.block_on(async {
        if crash == Crash::Prepared {
            // Node 1 died before node 2's route reached it: a publish it routes before node
            // 2's route sync is applied goes nowhere (docs/cluster.md, Still open). Probes
            // until one reaches the session on node 2.
            let (mut probe, _) =
                raw_connect_sp(addr, connect_packet(ProtocolVersion::V5, "fwd-probe", true)).await;
            let end = Instant::now() + SETTLE;
            while !seen.contains_key("fwd/probe") {
                assert!(
                    Instant::now() < end,
                    "node 1 never routed to node 2 again: node 1 {}\nnode 2 {}\nnode 2 moves {}\nnode 1 log (end): {}",
                    c.get(1).ctl(&["cluster", "status"]).1,
                    c.get(2).ctl(&["cluster", "status"]).1,
                    moves(&c, 2),
                    {
                        let l = c.get(1).stderr();
                        l[l.len().saturating_sub(4000)..].to_string()
                    }
                );
                let m = publish_packet("fwd/probe", 0, false, 0, b"0");
                probe.send(&Packet::Publish(m)).await;
                // One probe per 200 ms: a closed session connection must not turn this
                // into a flood (it did: 1.4M probes in 30 s, which swamped node 1).
                let pace = Instant::now() + Duration::from_millis(200);
                if !take_all(&mut new, &mut seen, Duration::from_millis(200)).await {
                    let m = c.get(2).ctl(&["metrics", "--json"]).1;
                    let v: serde_json::Value = serde_json::from_str(m.trim()).unwrap_or_default();
                    eprintln!(
                        "the session's connection on node 2 closed (node 2 closes {}): resumed",
                        v["result"]["shards"][0]["closes"]
                    );
                    for l in c.get(2).stderr().lines().filter(|l| !l.contains("openraft")) {
                        if l.contains("WARN") || l.contains("fwd-mover") || l.contains("session") {
                            eprintln!("node 2: {l}");
                        }
                    }
                    let (again, present) = raw_connect_sp(n2, cp.clone()).await;
                    eprintln!("session present {present} on the resume");
                    new = again;
                }
                tokio::time::sleep_until(pace.into()).await;
            }
            publisher_resumes(addr, unacked, &mut acked).await;
        }
        if crash == Crash::New {
            let (again, present) = raw_connect_sp(addr, cp.clone()).await;
            assert!(present, "session present on node 2 after its restart");
            let m = moves(&c, 2);
            assert_eq!(
                m["merge_recovered"].as_u64(),
                Some(1),
                "node 2 knew the session's merge was cut: {m}"
            );
            new = again;
        }
        wd.phase("every acknowledged message to the session", &c);
        // Every acknowledged message reaches the session (resends from node 1's ledger or
        // outbox included), within the bound: SETTLE without progress (the session may
        // hold thousands, delivered at the pace this client acknowledges them).
        let mut end = Instant::now() + SETTLE;
        let mut missing = usize::MAX;
        loop {
            take_all(&mut new, &mut seen, Duration::from_millis(500)).await;
            let lost = lost_of(&acked, &seen);
            if lost.is_empty() {
                break;
            }
            if lost.len() < missing {
                missing = lost.len();
                end = Instant::now() + SETTLE;
            }
            assert!(
                Instant::now() < end,
                "lost {} of {} acknowledged: {:?}\nnode 1 moves: {}\nnode 2 moves: {}",
                lost.len(),
                acked.values().map(Vec::len).sum::<usize>(),
                &lost[..lost.len().min(20)],
                moves(&c, 1),
                moves(&c, 2)
            );
        }
        if crash != Crash::New {
            wd.phase("node 2's merge to end", &c);
            // Node 2's merge ends without node 1's StubEnd (its time bound): what it held
            // is delivered then.
            let end = Instant::now() + Duration::from_secs(60);
            loop {
                let m = moves(&c, 2);
                let over = m["merge_ended"].as_u64().unwrap_or(0)
                    + m["merge_expired"].as_u64().unwrap_or(0);
                if over >= 1 {
                    break;
                }
                assert!(Instant::now() < end, "node 2's merge never ended: {m}");
                take_all(&mut new, &mut seen, Duration::from_millis(500)).await;
            }
        }
        take_all(&mut new, &mut seen, Duration::from_secs(1)).await;
        // QoS 2 twice (a DUP resend of a message in flight when a connection ended aside).
        let mut first: HashMap<usize, Vec<usize>> = HashMap::new();
        let cut = at_restart.get("fwd/2").copied().unwrap_or(0);
        for (i, (n, dup)) in seen.get("fwd/2").into_iter().flatten().enumerate() {
            let k = first.entry(*n).or_default();
            k.push(i);
            if k.len() > 1 && !dup {
                dups += 1;
                eprintln!("QoS 2 twice: {n} at arrivals {k:?} (restart at arrival {cut})");
            }
        }
    });
    let total = acked.values().map(Vec::len).sum::<usize>();
    eprintln!(
        "{crash:?} node crash, --cores {cores}: {total} acknowledged, all in the session; \
         QoS 2 delivered twice without DUP: {dups}; node 1 moves: {}; node 2 moves: {}",
        moves(&c, 1),
        moves(&c, 2)
    );
    (total, dups)
}

/// Sends `sig` (SIGSTOP, SIGCONT) to node `id`'s process, by its PID.
fn signal(c: &Cluster, id: u64, sig: libc::c_int) {
    let pid = c.get(id).proc.as_ref().expect("node running").pid();
    // SAFETY: kill(2) on the PID of a child process this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// The acknowledged (topic, number) pairs the session never got.
fn lost_of(acked: &Acked, seen: &Seen) -> Vec<(String, usize)> {
    let mut lost = Vec::new();
    for (t, ns) in acked {
        let got: std::collections::HashSet<usize> = seen
            .get(t)
            .map(|v| v.iter().map(|x| x.0).collect())
            .unwrap_or_default();
        lost.extend(
            ns.iter()
                .filter(|n| !got.contains(n))
                .map(|n| (t.clone(), *n)),
        );
    }
    lost.sort();
    lost
}

/// A client id whose home shard among `shards` is `want` (the session's home is not always
/// shard 0 with several cores).
fn id_on(prefix: &str, shards: usize, want: usize) -> String {
    (0..1000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| ringmq_shard::home_shard(id.as_bytes(), shards) == want)
        .expect("an id for that shard")
}

/// Also QoS 2 exactly once across the crash: the old node resends both twins of a message
/// the new node did not answer (the forwarded and the direct copy), and the restarted node
/// drops the second (`merge::recover`).
#[test]
fn forwarded_copies_survive_a_crash_of_the_new_node_before_its_commit() {
    let (acked, dups) = forwarded_copies_survive(1, Crash::New, "fwd-mover");
    assert!(acked > 0);
    assert_eq!(dups, 0, "QoS 2 delivered twice");
}

#[test]
fn forwarded_copies_survive_a_crash_of_the_new_node_with_two_cores() {
    let id = id_on("fwd-mover2", 2, 1);
    let (acked, dups) = forwarded_copies_survive(2, Crash::New, &id);
    assert!(acked > 0);
    assert_eq!(dups, 0, "QoS 2 delivered twice");
}

/// Node 1 aborts at the 10th copy its stub forwards once node 2 answered the first one (node
/// 2 holds the session durably then). Counted from the take, as before, the crash could come
/// before node 2 had the snapshot, and the client got a fresh session: one cause of the CI
/// failure (10 of 268 lost). Two later failures had test causes: the session's connection read
/// in a second tokio runtime (reads as closed) and, possibly the hang once seen after node 1's
/// restart, a reader that waited for a silence that never came; `take_all` is capped now and a
/// watchdog turns a hang into a failure naming the phase and the nodes' counters. Un-ignored
/// after 12 of 12 runs on a loaded machine (load 8-12, with other cluster tests beside it).
#[test]
fn forwarded_copies_survive_a_crash_of_the_old_node_as_it_forwards() {
    let (acked, dups) = forwarded_copies_survive(1, Crash::Old, "fwd-mover-old");
    assert!(acked > 0);
    assert_eq!(dups, 0, "QoS 2 delivered twice");
}

/// A persistent publisher on the old node's home shard: each QoS 2 message is prepared
/// (`confirm.rs`) and its stub's copy leaves after the prepare commit with the message's key
/// (`stub::Move::KeyedCopy`, frame 0x3D), a target of the prepared row. No crash: nothing
/// acknowledged lost, QoS 2 once, and the keyed copies were acknowledged by node 2.
#[test]
fn a_persistent_publishers_prepared_copies_reach_the_moved_session_once() {
    let _g = serial();
    let c = Cluster::start(3, &["--cores", "1"]);
    c.wait_leader(&[1, 2, 3]);
    links_up(&c);
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let cp = mover("fwd-mover-keyed");
    let mut seen: Seen = HashMap::new();
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = rt().block_on(async {
        let (mut m, _) = raw_connect_sp(n1, cp.clone()).await;
        m.send(&subscribe_packet("fwd/#", QoS::ExactlyOnce)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        let (s, t) = (started.clone(), stop.clone());
        let publ = std::thread::spawn(move || publisher(n1, s, t, true));
        let end = Instant::now() + SETTLE;
        while !started.load(Relaxed) {
            assert!(Instant::now() < end, "the stream never started");
            take_for(&mut m, &mut seen, Duration::from_millis(5)).await;
        }
        // Node 3 stopped: node 1's stub forwards for seconds (its flush times out).
        signal(&c, 3, libc::SIGSTOP);
        let mut new = Raw::open(n2, cp.protocol).await;
        new.send(&Packet::Connect(Box::new(cp.clone()))).await;
        take_all(&mut m, &mut seen, Duration::from_millis(200)).await;
        let end = Instant::now() + SETTLE;
        loop {
            assert!(
                Instant::now() < end,
                "the stub never forwarded: {}",
                moves(&c, 1)
            );
            take_all(&mut new, &mut seen, Duration::from_millis(100)).await;
            if moves(&c, 1)["forwarded_acked"].as_u64().unwrap_or(0) >= 50 {
                break;
            }
        }
        stop.store(true, Relaxed);
        let (acked, out) = publ.join().unwrap();
        assert!(out.is_empty(), "unacknowledged at the end: {out:?}");
        signal(&c, 3, libc::SIGCONT);
        let end = Instant::now() + SETTLE;
        loop {
            take_all(&mut new, &mut seen, Duration::from_millis(500)).await;
            let lost = lost_of(&acked, &seen);
            if lost.is_empty() {
                break;
            }
            assert!(
                Instant::now() < end,
                "lost {} : {:?}",
                lost.len(),
                &lost[..lost.len().min(20)]
            );
        }
        take_all(&mut new, &mut seen, Duration::from_secs(1)).await;
        acked
    });
    let mut count: HashMap<usize, usize> = HashMap::new();
    let twice = seen
        .get("fwd/2")
        .into_iter()
        .flatten()
        .filter(|&&(n, dup)| {
            let k = count.entry(n).or_default();
            *k += 1;
            *k > 1 && !dup
        })
        .count();
    eprintln!(
        "keyed copies: {} acknowledged, all in the session, QoS 2 twice {twice}; node 1 moves {}; node 2 moves {}",
        acked.values().map(Vec::len).sum::<usize>(),
        moves(&c, 1),
        moves(&c, 2)
    );
    assert_eq!(twice, 0, "QoS 2 delivered twice");
}

/// Issue 14: a prepared QoS 2 message of a persistent publisher on the old node's home shard
/// has its stub's copy as a target of the prepared row (`stub::Move::KeyedCopy`, sent after
/// the commit with the message's key): node 1 aborts once such a prepare commit is durable,
/// before the copies for node 2 leave (`node-copy-prepared`); after its restart, recovery
/// sends the message to node 2, which delivers it once per key, and the publisher's resend
/// is answered from the row: every message acknowledged is in the session, QoS 2 once.
///
/// The probe that waits for node 1 to route to node 2 again goes once per 200 ms: it used
/// to spin when the session's connection on node 2 was closed, and its flood (1.4M QoS 0
/// publishes in 30 s) was what kept node 1's links down.
#[test]
fn a_prepared_qos2_message_reaches_the_moved_session_across_a_crash_of_the_old_node() {
    let (acked, dups) = forwarded_copies_survive(1, Crash::Prepared, "fwd-mover-prep");
    assert!(acked > 0);
    assert_eq!(dups, 0, "QoS 2 delivered twice");
}
