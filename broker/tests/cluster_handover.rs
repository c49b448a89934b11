//! Issue 14, sessions across nodes, over three real `ringmq` processes (`--cores 1` each):
//! a client whose session node 1 holds reconnects to node 2 and finds the whole session
//! there (docs/cluster.md, "Sessions across nodes"): subscriptions with their options and
//! identifiers, QoS 1 and 2 messages in flight both ways with their packet ids, messages
//! queued while it was offline; its subscriptions work from every node; its will too.
//! The moving client is the project's codec client (exact packets and ids); publishers and
//! watchers are rumqttc and mosquitto_sub (clients we did not write).
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use bytes::Bytes;
use cluster_support::acked::{raw_connect_sp, wait_links};
use cluster_support::{rt, serial, Cluster};
use common::raw::{connect_packet, filter, pid, publish_packet, resp, topic, version, RawEv};
use common::*;
use ringmq_codec::{
    Connect, LastWill, Packet, PubResp, Publish, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeProperties, SubscriptionOptions,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Bound for links and leadership after a start.
const SETTLE: Duration = Duration::from_secs(30);

/// Three nodes with every link up and a leader.
fn cluster() -> Cluster {
    let c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in 1..=3 {
        wait_links(&c, id, 2);
    }
    c
}

/// Connects (rumqttc), retrying while the cluster answers 0x88 (a claim timed out while
/// the metadata layer settles on this loaded machine).
async fn client(opts: Opts) -> Client {
    let end = Instant::now() + SETTLE;
    loop {
        let c = Client::try_connect(opts.clone()).await;
        if c.connack.1 == 0 {
            return c;
        }
        assert!(Instant::now() < end, "CONNACK 0x{:02x}", c.connack.1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Raw CONNECT, retrying on 0x88 as above: (connection, session present).
async fn raw_connect(addr: std::net::SocketAddr, c: &Connect) -> (Raw, bool) {
    raw_connect_sp(addr, c.clone()).await
}

/// `ctl metrics --json` of node `id`: its handover counters.
fn handover(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.get(id).ctl(&["metrics", "--json"]).1;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("metrics JSON");
    v["result"]["handover"].clone()
}

fn will(t: &str, payload: &'static str) -> LastWill {
    LastWill {
        topic: topic(t),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

/// The moving client's CONNECT: clean start 0, a will, v5 session expiry 600 s.
fn mover_connect(p: Proto, id: &str, will_payload: &'static str) -> Connect {
    let mut c = connect_packet(version(p), id, false);
    if p == Proto::V5 {
        c.properties.session_expiry_interval = Some(600);
    }
    c.will = Some(will(&format!("will/{id}"), will_payload));
    c
}

fn subscribe(pid_: u16, f: &str, o: SubscriptionOptions, id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(pid_),
        filters: vec![(filter(f), o)],
        properties: SubscribeProperties {
            subscription_identifier: id,
            ..Default::default()
        },
    })
}

fn ack(p: &Publish) -> Option<Packet> {
    let id = p.packet_id?.get();
    Some(match p.qos {
        QoS::AtLeastOnce => Packet::PubAck(resp(id)),
        _ => Packet::PubRec(resp(id)),
    })
}

fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn sub_ids(p: &Publish) -> Vec<u32> {
    p.properties.subscription_identifiers.to_vec()
}

/// The whole session moves from node 1 to node 2 (and, taken over while connected, to node 3).
fn a_session_moves_whole(p: Proto) {
    let _g = serial();
    let c = cluster();
    let (n1, n2, n3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    let v5 = p == Proto::V5;
    let id = format!("mover-{p:?}");
    rt().block_on(async {
        // A watcher of wills on node 3, a publisher on node 1.
        let mut watcher = client(Opts::new(Proto::V5, n3, &format!("watch-{p:?}"))).await;
        watcher.subscribe("will/#", 1).await;
        let mut publ = client(Opts::new(Proto::V5, n1, &format!("pub-{p:?}"))).await;

        // On node 1: two subscriptions with options and identifiers.
        let (mut a, present) = raw_connect(n1, &mover_connect(p, &id, "gone-1")).await;
        assert!(!present);
        let opts_a = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: v5,
            retain_as_published: v5,
            retain_handling: if v5 {
                RetainHandling::DoNotSend
            } else {
                RetainHandling::SendAtSubscribe
            },
        };
        a.send(&subscribe(1, "h/a/#", opts_a, v5.then_some(7)))
            .await;
        assert!(matches!(
            a.expect_packet("SUBACK a").await,
            Packet::SubAck(_)
        ));
        let opts_b = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        a.send(&subscribe(2, "h/b", opts_b, v5.then_some(9))).await;
        assert!(matches!(
            a.expect_packet("SUBACK b").await,
            Packet::SubAck(_)
        ));

        // In flight out: a QoS 2 message at PUBREL (PUBREC sent, no PUBCOMP), a QoS 1
        // message unacknowledged.
        publ.publish("h/a/in", 2, false, "f2").await;
        publ.wait_acked(2).await;
        let f2 = a.expect_publish("f2").await;
        let f2_id = f2.packet_id.unwrap().get();
        a.send(&Packet::PubRec(resp(f2_id))).await;
        match a.expect_packet("PUBREL f2").await {
            Packet::PubRel(r) => assert_eq!(r.packet_id.get(), f2_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        publ.publish("h/b", 1, false, "f1").await;
        publ.wait_acked(1).await;
        let f1 = a.expect_publish("f1").await;
        let f1_id = f1.packet_id.unwrap().get();
        // In flight in: a QoS 2 PUBLISH of the client, PUBREC received, PUBREL not sent.
        a.send(&Packet::Publish(publish_packet("in/x", 2, false, 42, b"i")))
            .await;
        match a.expect_packet("PUBREC 42").await {
            Packet::PubRec(r) => assert_eq!(r.packet_id.get(), 42),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        // The client is lost: its will goes out from node 1, as on one node.
        drop(a);
        let w = watcher.recv("will of node 1's connection").await;
        assert_eq!(w.text(), "gone-1");

        // Offline: queued on node 1 (the publisher is on node 1: routed before its PUBACK).
        for (t, q, m) in [
            ("h/b", 1, "q1"),
            ("h/b", 1, "q2"),
            ("h/a/x", 2, "q3"),
            ("h/a/y", 1, "q4"),
        ] {
            publ.publish(t, q, false, m).await;
            publ.wait_acked(q).await;
        }

        // On node 2: the session is there, whole.
        let (mut b, present) = raw_connect(n2, &mover_connect(p, &id, "gone-2")).await;
        assert!(present, "CONNACK session present 1 on node 2");
        let mut got = Vec::new();
        let mut pubrel = None;
        while got.len() < 5 || pubrel.is_none() {
            match b.expect_packet("the shipped session").await {
                Packet::Publish(m) => got.push(m),
                Packet::PubRel(r) => pubrel = Some(r.packet_id.get()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pubrel, Some(f2_id), "PUBREL resent with the same packet id");
        let texts: Vec<String> = got.iter().map(text).collect();
        assert_eq!(texts, ["f1", "q1", "q2", "q3", "q4"]);
        // [MQTT-4.4.0-1] the unacknowledged PUBLISH again, DUP 1, same packet id.
        assert!(got[0].dup, "f1 resent with DUP");
        assert_eq!(got[0].packet_id.unwrap().get(), f1_id);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        assert_eq!(got[3].qos, QoS::ExactlyOnce, "q3 at QoS 2");
        if v5 {
            let ids: Vec<Vec<u32>> = got.iter().map(sub_ids).collect();
            assert_eq!(ids, [vec![9], vec![9], vec![9], vec![7], vec![7]]);
        }
        b.send(&Packet::PubComp(resp(f2_id))).await;
        for m in &got {
            if let Some(a) = ack(m) {
                b.send(&a).await;
            }
            if m.qos == QoS::ExactlyOnce {
                match b.expect_packet("PUBREL").await {
                    Packet::PubRel(r) => b.send(&Packet::PubComp(resp(r.packet_id.get()))).await,
                    other => panic!("expected PUBREL, got {other:?}"),
                }
            }
        }
        // The inbound QoS 2 id moved too: PUBREL 42 completes it.
        b.send(&Packet::PubRel(resp(42))).await;
        match b.expect_packet("PUBCOMP 42").await {
            Packet::PubComp(PubResp {
                packet_id, reason, ..
            }) => {
                assert_eq!(packet_id.get(), 42);
                assert_eq!(reason, ReasonCode::Success, "packet id 42 known on node 2");
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        assert_eq!(c.get(2).owner(&id).map(|o| o.0), Some(2));

        // Its subscriptions route from every node: CONNACK waited for the peers' route acks.
        let mut publ3 = client(Opts::new(Proto::V5, n3, &format!("pub3-{p:?}"))).await;
        publ3.publish("h/a/z", 1, false, "n3").await;
        publ3.wait_acked(1).await;
        let m = b.expect_publish("from node 3").await;
        assert_eq!(text(&m), "n3");
        if v5 {
            assert_eq!(sub_ids(&m), [7]);
            b.send(&ack(&m).unwrap()).await;
            // No Local kept: its own publish on h/a/.. does not come back.
            b.send(&Packet::Publish(publish_packet(
                "h/a/self", 0, false, 0, b"me",
            )))
            .await;
            b.expect_silence(QUIET, "no local").await;
        } else {
            b.send(&ack(&m).unwrap()).await;
        }

        // Taken over while connected, from node 3: node 2 closes it (v5 0x8E), node 3 has it.
        let (mut d, present) = raw_connect(n3, &mover_connect(p, &id, "gone-3")).await;
        assert!(present, "CONNACK session present 1 on node 3");
        if v5 {
            b.expect_disconnect(ReasonCode::SessionTakenOver, "node 2 fenced")
                .await;
        } else {
            b.expect_closed(WAIT, "node 2 fenced").await;
        }
        publ.publish("h/b", 1, false, "n1").await;
        let m = d.expect_publish("from node 1 on node 3").await;
        assert_eq!(text(&m), "n1");
        d.send(&ack(&m).unwrap()).await;
        // Reads work on the new node too.
        d.send(&Packet::PingReq).await;
        assert!(matches!(d.expect_any("PINGRESP").await, Packet::PingResp));
        // The will of the fenced connection is not sent; the live one's is, at its loss.
        drop(d);
        let w = watcher.recv("will of node 3's connection").await;
        assert_eq!(w.text(), "gone-3");
        watcher.expect_none(QUIET, "no other will").await;
        // Counted: node 2 installed one session and shipped one (found parked or live).
        let h = handover(&c, 2);
        assert_eq!(
            (h["installed"].as_u64(), h["shipped"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(handover(&c, 3)["installed"].as_u64(), Some(1));
    });
}

#[test]
fn a_v5_session_moves_whole_between_nodes() {
    a_session_moves_whole(Proto::V5);
}

#[test]
fn a_v311_session_moves_whole_between_nodes() {
    a_session_moves_whole(Proto::V4);
}

/// mosquitto_sub (3.1.1, clean session 0) moves from node 1 to node 2 and gets what was
/// queued for it meanwhile.
#[test]
fn mosquitto_sub_finds_its_queued_messages_on_another_node() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let _g = serial();
    let c = cluster();
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let sub = |addr: std::net::SocketAddr| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-i", "mosq-mover", "-V", "mqttv311", "-c", "-q", "1"])
            .args(["-t", "m/#", "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)")
    };
    rt().block_on(async {
        let publ = client(Opts::new(Proto::V5, n1, "mosq-pub")).await;
        // First session on node 1: the probe shows it is subscribed.
        let mut first = sub(n1);
        let out = first.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + SETTLE;
        loop {
            // QoS 0: no PUBACK that a later `wait_acked` could take for its own.
            publ.publish("m/probe", 0, false, "probe").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if rx.try_iter().any(|l| l.contains("probe")) {
                break;
            }
            assert!(Instant::now() < end, "mosquitto_sub never subscribed");
        }
        let _ = first.kill();
        let _ = first.wait();
        let mut publ = publ;
        for i in 0..5 {
            publ.publish("m/q", 1, false, format!("queued-{i}")).await;
            publ.wait_acked(1).await;
        }
        // Second connection, on node 2: the queued messages, in order.
        let mut second = sub(n2);
        let out = second.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        while got.len() < 5 && Instant::now() < end {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("m/q ") => got.push(l),
                _ => {}
            }
        }
        let _ = second.kill();
        let _ = second.wait();
        assert_eq!(handover(&c, 2)["installed"].as_u64(), Some(1));
        let want: Vec<String> = (0..5).map(|i| format!("m/q queued-{i}")).collect();
        assert_eq!(got, want);
    });
}

/// Reads from the moving client for `within`: each PUBLISH recorded (topic, number, DUP)
/// and acknowledged, each PUBREL completed (whatever its id: a client that kept no state
/// answers so too, v5 4.3.3). False once the broker closed the connection.
async fn take_all(
    m: &mut Raw,
    seen: &mut HashMap<String, Vec<(usize, bool)>>,
    within: Duration,
) -> bool {
    loop {
        match m.recv(within).await {
            RawEv::Packet(Packet::Publish(p)) => {
                seen.entry(p.topic.as_str().to_string())
                    .or_default()
                    .push((text(&p).parse().unwrap(), p.dup));
                m.send(&ack(&p).unwrap()).await;
            }
            RawEv::Packet(Packet::PubRel(r)) => {
                m.send(&Packet::PubComp(resp(r.packet_id.get()))).await
            }
            RawEv::Packet(_) => {}
            RawEv::Timeout => return true,
            RawEv::Closed | RawEv::Garbage(_) => return false,
        }
    }
}

/// [`take_all`] for one packet at most (or 10 ms): false once the connection closed.
async fn take_one(m: &mut Raw, seen: &mut HashMap<String, Vec<(usize, bool)>>) -> bool {
    match m.recv(Duration::from_millis(10)).await {
        RawEv::Packet(Packet::Publish(p)) => {
            seen.entry(p.topic.as_str().to_string())
                .or_default()
                .push((text(&p).parse().unwrap(), p.dup));
            m.send(&ack(&p).unwrap()).await;
        }
        RawEv::Packet(Packet::PubRel(r)) => m.send(&Packet::PubComp(resp(r.packet_id.get()))).await,
        RawEv::Closed | RawEv::Garbage(_) => return false,
        _ => {}
    }
    true
}

/// Where the publisher of [`takeover_under_load`] runs: node 3 (neither end of the move),
/// node 1 (the old owner) or node 2 (the new owner). Each is its own path: node 3's copies
/// reach the session through node 1's stub or straight to node 2; node 1's own publishes
/// meet the stub on node 1; node 2's reach node 1 until its route changes, then stay local.
#[derive(Clone, Copy, Debug)]
enum PubOn {
    Third = 3,
    Old = 1,
    New = 2,
}

/// A takeover across nodes while a publisher keeps publishing QoS 1 and QoS 2 to the session
/// (the new connection on node 2 takes over the live one on node 1; docs/cluster.md,
/// "Messages published during the move"): nothing lost, no QoS 2 message twice (but for the
/// DUP resend MQTT requires of a message in flight on the old connection whose acknowledgement
/// may not have reached node 1 [MQTT-4.3.3], which a client keeping its session state knows by
/// its packet id), order per topic kept. QoS 1 repeats are allowed and printed. The move's
/// merge must end by the old node's StubEnd, not by its time bound.
fn takeover_under_load(p: Proto, on: PubOn) {
    let _g = serial();
    let c = cluster();
    let addrs = [c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt()];
    let (n1, n2) = (addrs[0], addrs[1]);
    let publ_addr = addrs[on as usize - 1];
    rt().block_on(async {
        let mut cp = connect_packet(version(p), "load-mover", false);
        if p == Proto::V5 {
            cp.properties.session_expiry_interval = Some(600);
        }
        let (mut m, _) = raw_connect(n1, &cp).await;
        let o = SubscriptionOptions::with_qos(QoS::ExactlyOnce);
        m.send(&subscribe(1, "load/#", o, None)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        // The publisher runs on its own thread: Q messages per topic, then (told the
        // subscriber has them) on as fast as its acknowledgements allow until told to stop,
        // half a second after the move: the move (a Raft commit, a fetch, an install,
        // route acks, the stub's end) falls amid the stream.
        const Q: usize = 500;
        let (go, went) = std::sync::mpsc::channel::<()>();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let publisher = std::thread::spawn(move || {
            rt().block_on(async {
                let mut publ = client(Opts::new(p, publ_addr, "load-pub")).await;
                let (mut i, mut acked) = (0, 0);
                while i < 50 * Q {
                    if i == Q {
                        while went.try_recv().is_err() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    if i > Q && stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    publ.publish("load/1", 1, false, format!("{i}")).await;
                    publ.publish("load/2", 2, false, format!("{i}")).await;
                    if i % 50 == 49 {
                        publ.wait_acked(1).await;
                        acked += 1;
                    }
                    i += 1;
                }
                // Every message acknowledged: the broker has them all.
                for _ in acked..i {
                    publ.wait_acked(1).await;
                }
                for _ in 0..i {
                    publ.wait_acked(2).await;
                }
                i
            })
        });
        let mut seen: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
        let end = Instant::now() + SETTLE;
        let count = |seen: &HashMap<String, Vec<(usize, bool)>>| seen.get("load/1").map_or(0, |v| v.len());
        while count(&seen) < Q {
            assert!(Instant::now() < end, "the first {Q} never arrived");
            assert!(take_one(&mut m, &mut seen).await);
        }
        go.send(()).unwrap();
        // A few more on the old connection: the publisher is in full flow.
        while count(&seen) < Q + 20 {
            assert!(Instant::now() < end, "the stream never went on");
            assert!(take_one(&mut m, &mut seen).await);
        }
        let at_move = count(&seen);
        let started = Instant::now();
        let (mut new, present) = raw_connect(n2, &cp).await;
        let took = started.elapsed();
        assert!(present, "session present on node 2");
        // Node 1 closed the old connection (v5: DISCONNECT 0x8E behind what it had sent).
        let old = m.expect_closed(WAIT, "taken over").await;
        if p == Proto::V5 {
            assert!(
                matches!(old.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::SessionTakenOver),
                "old connection ended with {:?}",
                old.last()
            );
        }
        // The stream goes on for half a second on the new node, then stops; drain until quiet.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            assert!(take_one(&mut new, &mut seen).await);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let n = publisher.join().unwrap();
        assert!(take_all(&mut new, &mut seen, Duration::from_secs(2)).await);
        let mut report = Vec::new();
        for t in ["load/1", "load/2"] {
            let v = seen.get(t).map(Vec::as_slice).unwrap_or_default();
            let mut taken = std::collections::HashSet::new();
            let (mut last, mut repeats) = (None, 0);
            for &(n, dup) in v {
                if !taken.insert(n) {
                    // QoS 2: only the DUP resend of a message in flight at the move.
                    assert!(dup || t == "load/1", "{t}: {n} delivered twice, the second time without DUP");
                    repeats += 1;
                    continue;
                }
                // Order kept: each new message comes after the previous one.
                assert!(last < Some(n), "{t}: {n} after {last:?}");
                last = Some(n);
            }
            let lost: Vec<usize> = (0..n).filter(|i| !taken.contains(i)).collect();
            assert!(lost.is_empty(), "{t}: lost {} of {n}: {:?}", lost.len(), &lost[..lost.len().min(20)]);
            assert_eq!(taken.len(), n, "{t}: a message never published");
            report.push(format!("{t} repeated {repeats}"));
        }
        // The merge on node 2 ended by node 1's StubEnd (not its time bound).
        let moves = check_for_blocking(SETTLE, "the move's merge ended", || {
            let h = handover(&c, 2);
            (h["moves"]["merge_ended"].as_u64()? >= 1).then_some(h["moves"].clone())
        });
        assert_eq!(moves["merge_expired"].as_u64(), Some(0));
        let old_moves = handover(&c, 1)["moves"].clone();
        assert_eq!(old_moves["stub_expired"].as_u64(), Some(0));
        assert_eq!(old_moves["stub_ended"].as_u64(), Some(1));
        eprintln!(
            "takeover under load ({p:?}, publisher on node {}): {n} per topic, {at_move} arrived before the move; CONNECT->CONNACK {took:?}; nothing lost; {}; node 1 forwarded {}; node 2 held {}, merged {}, duplicates dropped {}",
            on as u8,
            report.join(", "),
            old_moves["forwarded"],
            moves["held"],
            moves["merged"],
            moves["merge_dups"],
        );
    });
}

#[test]
fn takeover_under_load_v5_publisher_on_a_third_node() {
    takeover_under_load(Proto::V5, PubOn::Third);
}

#[test]
fn takeover_under_load_v5_publisher_on_the_old_node() {
    takeover_under_load(Proto::V5, PubOn::Old);
}

#[test]
fn takeover_under_load_v5_publisher_on_the_new_node() {
    takeover_under_load(Proto::V5, PubOn::New);
}

#[test]
fn takeover_under_load_v311_publisher_on_a_third_node() {
    takeover_under_load(Proto::V4, PubOn::Third);
}

#[test]
fn takeover_under_load_v311_publisher_on_the_old_node() {
    takeover_under_load(Proto::V4, PubOn::Old);
}

#[test]
fn takeover_under_load_v311_publisher_on_the_new_node() {
    takeover_under_load(Proto::V4, PubOn::New);
}

/// Takeover time across nodes: a v5 session (two subscriptions, 20 queued QoS 1 messages)
/// moves node 1 -> 2 -> 3 -> 1 ... 30 times; CONNECT to CONNACK (claim, fetch, ship, install,
/// route acks) is printed as p50/p99. The test binary's broker is a debug build on a shared
/// machine: a direction, not a benchmark (no timing is asserted).
#[test]
fn takeover_time_across_nodes_is_printed() {
    let _g = serial();
    let c = cluster();
    let addrs = [c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt()];
    rt().block_on(async {
        let publ = client(Opts::new(Proto::V5, addrs[0], "tt-pub")).await;
        let mut cp = connect_packet(version(Proto::V5), "tt-mover", false);
        cp.properties.session_expiry_interval = Some(600);
        let (mut m, _) = raw_connect(addrs[0], &cp).await;
        let o = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        m.send(&subscribe(1, "tt/a/#", o, Some(1))).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        m.send(&subscribe(2, "tt/b", o, Some(2))).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        drop(m);
        let mut publ = publ;
        let mut times = Vec::new();
        let mut on = 0;
        for round in 0..30 {
            // 20 messages for the session, wherever it is now (routed there before PUBACK
            // on its node; from node 1 they cross a link when it is elsewhere).
            for i in 0..20 {
                publ.publish("tt/a/x", 1, false, format!("{round}-{i}")).await;
                publ.wait_acked(1).await;
            }
            on = (on + 1) % 3;
            let started = Instant::now();
            let (mut m, present) = raw_connect(addrs[on], &cp).await;
            times.push(started.elapsed());
            assert!(present, "round {round}: session present on node {}", on + 1);
            // Take the 20 (the link copies may still be on their way: poll).
            let mut got = 0;
            while got < 20 {
                let p = m.expect_publish("queued").await;
                m.send(&ack(&p).unwrap()).await;
                got += 1;
            }
            m.send(&Packet::Disconnect(ringmq_codec::Disconnect::new(
                ReasonCode::Success,
            )))
            .await;
            m.expect_closed(WAIT, "DISCONNECT").await;
        }
        times.sort();
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
        eprintln!(
            "takeover across nodes (debug build, shared machine): {} moves, CONNECT->CONNACK p50 {:?}, p99 {:?}, max {:?}",
            times.len(),
            pct(50),
            pct(99),
            times.last().unwrap()
        );
    });
}

/// A node added at run time (`--cluster-join true`, then `ctl cluster add-node` on the leader)
/// takes part in session moves both ways: its link slot is known to every shard of every node
/// (not only the peers given at start), so a session of node 1 moves to node 4 whole (queued
/// message with its subscription identifier, subscriptions routed from every node) and back.
/// Before, node 4 was "unreachable" for a fetch and the client got a fresh session.
#[test]
fn a_session_moves_to_and_from_a_node_added_at_run_time() {
    let _g = serial();
    let mut c = cluster();
    let (leader, _) = c.wait_leader(&[1, 2, 3]);
    let j = c.joiner(4, &[]);
    j.start();
    let addr4 = j.cluster.clone();
    let (code, out, err) = c.get(leader).ctl(&["cluster", "add-node", "4", &addr4]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_leader(&[1, 2, 3, 4]);
    for id in 1..=4 {
        wait_links(&c, id, 3);
    }
    let (n1, n2, n3, n4) = (
        c.get(1).mqtt(),
        c.get(2).mqtt(),
        c.get(3).mqtt(),
        c.get(4).mqtt(),
    );
    let id = "mover-joined";
    let connect = || {
        let mut k = connect_packet(ringmq_codec::ProtocolVersion::V5, id, false);
        k.properties.session_expiry_interval = Some(600);
        k
    };
    rt().block_on(async {
        let mut publ = client(Opts::new(Proto::V5, n2, "pub-joined")).await;
        // On node 1: a subscription with an identifier, then offline with a message queued.
        let (mut a, present) = raw_connect(n1, &connect()).await;
        assert!(!present);
        let o = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        a.send(&subscribe(1, "jm/#", o, Some(11))).await;
        assert!(matches!(a.expect_packet("SUBACK").await, Packet::SubAck(_)));
        drop(a);
        publ.publish("jm/a", 1, false, "queued-1").await;
        publ.wait_acked(1).await;

        // To node 4, added at run time: the session is there, whole.
        let (mut b, present) = raw_connect(n4, &connect()).await;
        assert!(present, "CONNACK session present 1 on node 4");
        let m = b.expect_publish("queued on node 1").await;
        assert_eq!(text(&m), "queued-1");
        assert_eq!(sub_ids(&m), [11]);
        b.send(&ack(&m).unwrap()).await;
        assert_eq!(c.get(4).owner(id).map(|o| o.0), Some(4));
        // Its subscription routes from every node to node 4.
        let mut publ3 = client(Opts::new(Proto::V5, n3, "pub3-joined")).await;
        publ3.publish("jm/b", 1, false, "from-3").await;
        publ3.wait_acked(1).await;
        let m = b.expect_publish("from node 3").await;
        assert_eq!(text(&m), "from-3");
        b.send(&ack(&m).unwrap()).await;
        drop(b);
        publ.publish("jm/c", 1, false, "queued-4").await;
        publ.wait_acked(1).await;

        // And back from node 4 to node 1.
        let (mut a, present) = raw_connect(n1, &connect()).await;
        assert!(present, "CONNACK session present 1 back on node 1");
        let m = a.expect_publish("queued on node 4").await;
        assert_eq!(text(&m), "queued-4");
        assert_eq!(sub_ids(&m), [11]);
        a.send(&ack(&m).unwrap()).await;
        assert_eq!(c.get(1).owner(id).map(|o| o.0), Some(1));
    });
    let installed = |n: u64| handover(&c, n)["installed"].as_u64().unwrap_or(0);
    assert!(installed(4) >= 1, "node 4 installed the shipped session");
    assert!(installed(1) >= 1, "node 1 installed it back");
}

/// Sends `sig` (SIGSTOP, SIGCONT) to node `id`'s process, by its PID.
fn signal(c: &Cluster, id: u64, sig: libc::c_int) {
    let pid = c.get(id).proc.as_ref().expect("node running").pid();
    // SAFETY: kill(2) on the PID of a child process this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Every link of every node up again (after a restart).
fn links_up(c: &Cluster) {
    for id in 1..=3 {
        wait_links(c, id, 2);
    }
}

/// A publisher on node 2 (the new owner) publishing QoS 2 to `crash/1`, 50 in flight, until
/// its connection ends (node 2 crashes): the payloads PUBREC'd with success.
fn crash_publisher(addr: std::net::SocketAddr) -> Vec<usize> {
    rt().block_on(async {
        let v5 = ringmq_codec::ProtocolVersion::V5;
        let (mut p, _) = raw_connect(addr, &connect_packet(v5, "crash-pub", true)).await;
        let mut acked = Vec::new();
        let end = Instant::now() + Duration::from_secs(60);
        let mut next = 0usize;
        let send_next = |i: &mut usize| {
            let id = (*i % 60_000 + 1) as u16;
            let pkt = Packet::Publish(publish_packet(
                "crash/1",
                2,
                false,
                id,
                format!("{i}").as_bytes(),
            ));
            *i += 1;
            pkt
        };
        for _ in 0..50 {
            let pkt = send_next(&mut next);
            p.send(&pkt).await;
        }
        while Instant::now() < end {
            match p.recv(WAIT).await {
                RawEv::Packet(Packet::PubRec(r)) => {
                    if (r.reason as u8) < 0x80 {
                        acked.push(usize::from(r.packet_id.get()) - 1);
                    }
                    p.send(&Packet::PubRel(resp(r.packet_id.get()))).await;
                    if next < 5_000 {
                        let pkt = send_next(&mut next);
                        p.send(&pkt).await;
                    }
                }
                RawEv::Packet(_) => {}
                RawEv::Timeout => eprintln!("crash publisher: no PUBREC within {WAIT:?}"),
                RawEv::Closed | RawEv::Garbage(_) => return acked,
            }
        }
        acked
    })
}

/// Issue 14, `--durability sync`: a QoS 2 message node 2 acknowledged while the session it
/// just took from node 1 was still merging (a direct copy held until node 1's StubEnd,
/// `merge.rs`) survives node 2 crashing before the merge delivered it. Node 2 runs with the
/// test crash point `merge-held-end`: at the StubEnd of a merge holding copies it commits
/// what it has pending and aborts, the held copies undelivered. After its restart the
/// session has every message the publisher got a PUBREC for.
#[test]
fn held_copies_survive_a_crash_of_the_new_node_before_the_merge_ends() {
    let _g = serial();
    let mut c = cluster();
    c.node(2).stop();
    c.node(2)
        .start_env(&[("RINGMQ_TEST_CRASH", "merge-held-end")]);
    c.wait_leader(&[1, 2, 3]);
    links_up(&c);
    let (n1, n2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let mut cp = connect_packet(ringmq_codec::ProtocolVersion::V5, "crash-mover", false);
    cp.properties.session_expiry_interval = Some(600);
    let mut seen: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
    let acked = rt().block_on(async {
        let (mut m, _) = raw_connect(n1, &cp).await;
        let o = SubscriptionOptions::with_qos(QoS::ExactlyOnce);
        m.send(&subscribe(1, "crash/#", o, None)).await;
        assert!(matches!(m.expect_packet("SUBACK").await, Packet::SubAck(_)));
        let publisher = std::thread::spawn(move || crash_publisher(n2));
        let end = Instant::now() + SETTLE;
        while seen.get("crash/1").map_or(0, |v| v.len()) < 200 {
            assert!(Instant::now() < end, "the stream never started");
            assert!(take_one(&mut m, &mut seen).await);
        }
        // The move, amid the stream, with node 3 stopped (SIGSTOP, by PID): its route ack
        // and flush answer time out (5 s each), so the merge on node 2 holds what the
        // publisher sends it meanwhile. Node 2 crashes at the merge's end, maybe before its
        // CONNACK leaves.
        signal(&c, 3, libc::SIGSTOP);
        let mut new = Raw::open(n2, cp.protocol).await;
        new.send(&Packet::Connect(Box::new(cp.clone()))).await;
        take_all(&mut m, &mut seen, Duration::from_millis(200)).await;
        let end = Instant::now() + SETTLE;
        while take_all(&mut new, &mut seen, WAIT).await {
            assert!(
                Instant::now() < end,
                "node 2 never reached the merge's end crash point: {}",
                handover(&c, 2)["moves"]
            );
        }
        publisher.join().unwrap()
    });
    signal(&c, 3, libc::SIGCONT);
    let err = c.node(2).wait_crash(SETTLE);
    assert!(err.contains("aborting at merge-held-end"), "{err}");
    c.node(2).start();
    links_up(&c);
    let n2 = c.get(2).mqtt();
    let end = Instant::now() + SETTLE;
    while std::net::TcpStream::connect(n2).is_err() {
        assert!(
            Instant::now() < end,
            "node 2 not listening for MQTT after its restart:\n{}",
            c.get(2).stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rt().block_on(async {
        let (mut again, present) = raw_connect(n2, &cp).await;
        assert!(present, "session present on node 2 after its restart");
        take_all(&mut again, &mut seen, Duration::from_secs(3)).await;
    });
    let got: std::collections::HashSet<usize> = seen
        .get("crash/1")
        .map(|v| v.iter().map(|x| x.0).collect())
        .unwrap_or_default();
    let lost: Vec<usize> = acked.iter().copied().filter(|i| !got.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "lost {} of {} acknowledged: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
    // QoS 2 at most once (a DUP resend of one in flight when a connection ended aside).
    let mut count: HashMap<usize, usize> = HashMap::new();
    let twice: Vec<usize> = seen
        .get("crash/1")
        .into_iter()
        .flatten()
        .filter_map(|&(n, dup)| {
            let k = count.entry(n).or_default();
            *k += 1;
            (*k > 1 && !dup).then_some(n)
        })
        .collect();
    eprintln!(
        "crash at the merge's end: {} acknowledged, all in the session after node 2's restart ({} received, {} twice without DUP); node 2 moves {}",
        acked.len(),
        got.len(),
        twice.len(),
        handover(&c, 2)["moves"]
    );
    assert!(twice.is_empty(), "QoS 2 delivered twice: {twice:?}");
}
