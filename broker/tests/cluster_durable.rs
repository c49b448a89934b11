//! QoS 1 and 2 across nodes under `--durability sync` (the default), over real processes:
//! three `ringmq --cores 1` binaries on 127.0.0.1 (docs/cluster-data-plane.md, "Durable
//! delivery"). The publisher's PUBACK/PUBREC waits for every node with subscribers to answer
//! that its copy is durable; without an outbox (`--cluster-outbox-max-bytes 0`,
//! `cluster_outbox.rs` tests it) a node that does not answer within `--cluster-ack-timeout`
//! refuses the publish (v5 0x83, 3.1.1 a close); copies resent after the subscriber's node
//! restarted are delivered exactly once. Clients: our raw codec client (exact reason codes,
//! packet ids), rumqttc v4, mosquitto_sub.
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::acked::{self, acks_by_id, link, raw_connect, wait_links, SETTLE};
use cluster_support::{rt, serial, Cluster};
use common::persist::{persistent_connect, Inbox};
use common::raw::{publish_packet, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use std::time::{Duration, Instant};

/// Connects rumqttc, retrying while the cluster answers 0x88.
async fn connect(opts: Opts) -> Client {
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

/// A v5 persistent session subscribed to `f` at QoS 2, then disconnected.
async fn parked_session(addr: std::net::SocketAddr, id: &str, f: &str) {
    acked::parked_session(addr, ProtocolVersion::V5, id, f, QoS::ExactlyOnce).await;
}

#[test]
fn qos_1_and_2_are_acknowledged_once_the_other_nodes_hold_them() {
    let _g = serial();
    let c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a2, a3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    rt().block_on(async {
        // A persistent v5 session on node 2, parked (its copies are rows there), and rumqttc
        // v3.1.1 online on node 3. Each SUBACK came after node 1 had the route.
        parked_session(a2, "d-s2", "d/#").await;
        let mut s3 = connect(Opts::new(Proto::V4, a3, "d-s3")).await;
        s3.subscribe("d/#", 2).await;
        let publ = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "d-pub", true),
        )
        .await;
        let mut publ = Inbox::new(publ);
        for i in 0..40u16 {
            let q = 1 + (i % 2) as u8;
            let p = publish_packet("d/x", q, false, i + 1, format!("{i}").as_bytes());
            publ.conn.send(&Packet::Publish(p)).await;
        }
        publ.until(WAIT * 4, "40 acknowledgements", |i| {
            acks_by_id(i).len() == 40
                && i.acks
                    .iter()
                    .filter(|a| matches!(a, Packet::PubComp(_)))
                    .count()
                    == 20
        })
        .await;
        let acks = acks_by_id(&publ);
        assert!(
            acks.values().all(|r| *r == ReasonCode::Success),
            "every copy durable on nodes 2 and 3: {acks:?}"
        );
        let got = s3.recv_n(40, "node 3").await;
        let mut texts: Vec<u32> = got.iter().map(|m| m.text().parse().unwrap()).collect();
        texts.sort_unstable();
        assert_eq!(texts, (0..40).collect::<Vec<_>>());
        s3.expect_none(QUIET, "nothing twice on node 3").await;
        // The parked session on node 2 holds all 40, once each.
        let s2 = raw_connect(a2, persistent_connect(ProtocolVersion::V5, "d-s2", 3600)).await;
        let mut s2 = Inbox::new(s2);
        s2.until(WAIT * 2, "40 on node 2", |i| i.got.len() >= 40)
            .await;
        s2.settle(QUIET).await;
        let mut texts: Vec<u32> = s2
            .got
            .iter()
            .map(|p| std::str::from_utf8(&p.payload).unwrap().parse().unwrap())
            .collect();
        texts.sort_unstable();
        assert_eq!(texts, (0..40).collect::<Vec<_>>());
    });
    for peer in [2, 3] {
        let l = link(&c, 1, peer);
        assert!(l["acked_out"].as_u64().unwrap() >= 40, "{l}");
        assert_eq!(l["unacked"], 0, "{l}");
        assert_eq!(l["ack_timeouts"], 0, "{l}");
        let back = link(&c, peer, 1);
        assert!(back["acked_in"].as_u64().unwrap() >= 40, "{back}");
    }
}

#[test]
fn a_node_that_does_not_answer_within_the_bound_refuses_the_publish() {
    let _g = serial();
    // Without an outbox (docs/cluster-data-plane.md, "Durable outbox"): refused, as before it.
    let mut c = Cluster::start(
        3,
        &[
            "--cluster-ack-timeout",
            "1s",
            "--cluster-outbox-max-bytes",
            "0",
        ],
    );
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a2, a3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    let rt = rt();
    let mut s2 = rt.block_on(async {
        parked_session(a3, "t-s3", "t/#").await;
        let mut s2 = connect(Opts::new(Proto::V5, a2, "t-s2")).await;
        s2.subscribe("t/#", 1).await;
        s2
    });
    // Node 3 (a subscriber's node) dies: nothing can be stored there.
    c.node(3).kill9();
    rt.block_on(async {
        let publ = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "t-pub", true),
        )
        .await;
        let mut publ = Inbox::new(publ);
        let t0 = Instant::now();
        publ.conn
            .send(&Packet::Publish(publish_packet("t/x", 1, false, 1, b"q1")))
            .await;
        publ.conn
            .send(&Packet::Publish(publish_packet("t/x", 2, false, 2, b"q2")))
            .await;
        publ.until(WAIT * 3, "two refusals", |i| acks_by_id(i).len() == 2)
            .await;
        let acks = acks_by_id(&publ);
        assert_eq!(
            acks[&1],
            ReasonCode::ImplementationSpecificError,
            "{acks:?}"
        );
        assert_eq!(
            acks[&2],
            ReasonCode::ImplementationSpecificError,
            "{acks:?}"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        // Node 2's subscriber had its copies all the same (at least once: the publisher was
        // told the message is not acknowledged, not that nobody got it).
        let got = s2.recv_n(2, "node 2").await;
        assert_eq!(got[0].text(), "q1");
        // [MQTT-4.3.3-9] after PUBREC 0x83 the id is free: the same id is a new message.
        publ.conn
            .send(&Packet::Publish(publish_packet(
                "u/x", 2, false, 2, b"again",
            )))
            .await;
        publ.until(WAIT, "PUBREC of the reused id", |i| {
            i.acks
                .iter()
                .filter(|a| matches!(a, Packet::PubRec(_)))
                .count()
                == 2
        })
        .await;
        // 3.1.1 has no negative PUBACK: the publisher's connection closes.
        let mut v4 = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V3_1_1, "t-pub4", true),
        )
        .await;
        v4.send(&Packet::Publish(publish_packet("t/y", 1, false, 7, b"v4")))
            .await;
        match v4.recv(WAIT * 3).await {
            RawEv::Closed => {}
            other => panic!("3.1.1 publisher: expected a close, got {other:?}"),
        }
    });
    let l = link(&c, 1, 3);
    assert!(l["ack_timeouts"].as_u64().unwrap() >= 3, "{l}");
    assert_eq!(l["unacked"], 0, "{l}");
    rt.block_on(s2.disconnect());
}

#[test]
fn qos_2_copies_resent_after_the_subscribers_node_restarts_arrive_exactly_once() {
    let _g = serial();
    let mut c = Cluster::start(3, &["--cluster-ack-timeout", "60s"]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a3) = (c.get(1).mqtt(), c.get(3).mqtt());
    let rt = rt();
    rt.block_on(parked_session(a3, "x-s3", "x/#"));
    let mut publ = rt.block_on(async {
        let p = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "x-pub", true),
        )
        .await;
        Inbox::new(p)
    });
    let send = |publ: &mut Inbox, range: std::ops::Range<u16>| {
        rt.block_on(async {
            for i in range {
                let p = publish_packet("x/t", 2, false, i + 1, format!("{i}").as_bytes());
                publ.conn.send(&Packet::Publish(p)).await;
                // Keep the acknowledgements flowing (PUBREL as PUBRECs come).
                while publ.pump(Duration::from_millis(0)).await {}
            }
        })
    };
    // 100 while node 3 is up, 100 while it is down (and in flight when it died), 50 after.
    send(&mut publ, 0..100);
    c.node(3).kill9();
    send(&mut publ, 100..200);
    c.node(3).start();
    send(&mut publ, 200..250);
    rt.block_on(async {
        publ.until(SETTLE * 2, "250 PUBCOMPs", |i| {
            i.acks
                .iter()
                .filter(|a| matches!(a, Packet::PubComp(_)))
                .count()
                == 250
        })
        .await;
        let acks = acks_by_id(&publ);
        assert_eq!(acks.len(), 250);
        assert!(
            acks.values().all(|r| *r == ReasonCode::Success),
            "every PUBREC waited for node 3's durable copy: {acks:?}"
        );
    });
    let a3 = c.get(3).mqtt();
    rt.block_on(async {
        let s = raw_connect(a3, persistent_connect(ProtocolVersion::V5, "x-s3", 3600)).await;
        let mut s = Inbox::new(s);
        s.until(SETTLE, "250 on node 3", |i| i.got.len() >= 250)
            .await;
        s.settle(Duration::from_millis(500)).await;
        let mut texts: Vec<u32> = s
            .got
            .iter()
            .map(|p| std::str::from_utf8(&p.payload).unwrap().parse().unwrap())
            .collect();
        texts.sort_unstable();
        let mut dups = texts.clone();
        dups.dedup();
        assert_eq!(dups.len(), texts.len(), "a QoS 2 message twice");
        assert_eq!(
            texts,
            (0..250).collect::<Vec<_>>(),
            "every acknowledged message"
        );
    });
    let l = link(&c, 1, 3);
    assert!(
        l["resent"].as_u64().unwrap() >= 1,
        "copies were resent: {l}"
    );
    assert_eq!(l["unacked"], 0, "{l}");
}

/// The test speaks the node-link protocol as node 1 (its process killed: nodes 2 and 3 keep
/// a quorum) to node 2: acked copies resent on the same connection, on a new one, and after
/// node 2 restarted (kill -9) are delivered once each to a parked QoS 2 session there, and
/// each is answered `Durable`; a new stream of node 1 (it restarted) is delivered afresh.
mod as_node_1 {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use ringmq_shard::cluster::frame::{encode_acked, encode_publish, Frame, Hello, VERSION};
    use ringmq_shard::cluster::Stamp;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A node link to `addr`, handshake done (node 1 of cluster "ringmq").
    struct Link {
        s: TcpStream,
        buf: BytesMut,
    }

    impl Link {
        fn open(addr: std::net::SocketAddr) -> Link {
            let end = Instant::now() + SETTLE;
            loop {
                if let Some(l) = Link::try_open(addr) {
                    return l;
                }
                assert!(Instant::now() < end, "no link handshake with {addr}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        fn try_open(addr: std::net::SocketAddr) -> Option<Link> {
            let s = TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            let mut l = Link {
                s,
                buf: BytesMut::new(),
            };
            l.send(&Frame::Hello(Hello {
                version: VERSION,
                cluster: "ringmq".into(),
                node: 1,
            }));
            match l.next(WAIT)? {
                Frame::Hello(h) if h.node == 2 => Some(l),
                _ => None,
            }
        }

        fn send(&mut self, f: &Frame) {
            let mut b = BytesMut::new();
            f.encode(&mut b);
            let _ = self.s.write_all(&b);
        }

        /// Acked copies `ids` of stream `stream`: QoS 2 PUBLISHes on f/x, payload the id.
        fn send_copies(&mut self, stream: u64, ids: std::ops::RangeInclusive<u64>) {
            let mut out = BytesMut::new();
            for id in ids {
                let mut p = ringmq_codec::Publish::new(
                    common::raw::topic("f/x"),
                    Bytes::from(format!("{stream}:{id}")),
                );
                p.qos = QoS::ExactlyOnce;
                let mut b = BytesMut::new();
                encode_publish(&p, &mut b);
                encode_acked(Stamp { stream, id }, None, &b[5..], &mut out);
            }
            self.s.write_all(&out).unwrap();
        }

        fn next(&mut self, within: Duration) -> Option<Frame> {
            let end = Instant::now() + within;
            loop {
                if let Ok(Some(f)) = Frame::decode(&mut self.buf) {
                    return Some(f);
                }
                if Instant::now() >= end {
                    return None;
                }
                let mut chunk = [0u8; 4096];
                match self.s.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(_) => {}
                }
            }
        }

        /// Reads until `Durable(upto)` (answering pings); panics after `WAIT * 2`.
        fn durable(&mut self, upto: u64) {
            let end = Instant::now() + WAIT * 2;
            while Instant::now() < end {
                match self.next(Duration::from_millis(200)) {
                    Some(Frame::Durable(n)) if n >= upto => return,
                    Some(Frame::Ping(n)) => self.send(&Frame::Pong(n)),
                    Some(Frame::NotStored { id, code }) => panic!("copy {id} not stored: {code}"),
                    _ => {}
                }
            }
            panic!("no Durable({upto}) from node 2");
        }
    }

    fn link_addr(c: &Cluster, id: u64) -> std::net::SocketAddr {
        let a: std::net::SocketAddr = c.get(id).cluster.parse().unwrap();
        std::net::SocketAddr::new(a.ip(), a.port() + 1)
    }

    #[test]
    fn resent_acked_copies_are_delivered_once_across_reconnects_and_a_restart() {
        let _g = serial();
        let mut c = Cluster::start(3, &[]);
        c.wait_leader(&[1, 2, 3]);
        wait_links(&c, 2, 2);
        c.node(1).kill9();
        let rt = rt();
        rt.block_on(parked_session(c.get(2).mqtt(), "n-s2", "f/#"));
        let to2 = link_addr(&c, 2);
        let mut l = Link::open(to2);
        l.send_copies(7, 1..=10);
        l.durable(10);
        // The answers were "lost": 6..=10 again on the same connection, with 11 and 12.
        l.send_copies(7, 6..=12);
        l.durable(12);
        // A new connection: everything unanswered again (here: all of it).
        drop(l);
        let mut l = Link::open(to2);
        l.send_copies(7, 1..=12);
        l.durable(12);
        drop(l);
        // Node 2 dies after answering; its last-seen rows came back with its copies.
        c.node(2).kill9();
        c.node(2).start();
        let mut l = Link::open(to2);
        l.send_copies(7, 1..=13);
        l.durable(13);
        // Node 1 "restarted": a new stream, its ids from 1 again.
        l.send_copies(8, 1..=2);
        l.durable(2);
        drop(l);
        let a2 = c.get(2).mqtt();
        rt.block_on(async {
            let s = raw_connect(a2, persistent_connect(ProtocolVersion::V5, "n-s2", 3600)).await;
            let mut s = Inbox::new(s);
            s.until(WAIT * 2, "15 copies", |i| i.got.len() >= 15).await;
            s.settle(Duration::from_millis(500)).await;
            let mut got: Vec<String> = s
                .got
                .iter()
                .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
                .collect();
            got.sort();
            let mut want: Vec<String> = (1..=13).map(|i| format!("7:{i}")).collect();
            want.extend((1..=2).map(|i| format!("8:{i}")));
            want.sort();
            assert_eq!(got, want, "each copy once");
        });
    }
}

/// Node links follow the membership: a node added at run time (`--cluster-join`, then `ctl
/// cluster add-node` on the leader) is linked with every node and gets routes both ways; a
/// node removed (`ctl cluster remove-node`) loses its links and its routes.
#[test]
fn a_node_added_at_run_time_is_linked_and_a_removed_one_unlinked() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    let (leader, _) = c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let j = c.joiner(4, &[]);
    j.start();
    let addr4 = j.cluster.clone();
    let (code, out, err) = c.get(leader).ctl(&["cluster", "add-node", "4", &addr4]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_leader(&[1, 2, 3, 4]);
    for id in [1, 2, 3, 4] {
        wait_links(&c, id, 3);
    }
    let (a1, a3, a4) = (c.get(1).mqtt(), c.get(3).mqtt(), c.get(4).mqtt());
    let rt = rt();
    rt.block_on(async {
        // Node 4 subscribes; node 1 publishes (an acked copy: node 4 answers durably).
        let mut s4 = connect(Opts::new(Proto::V5, a4, "j-s4")).await;
        s4.subscribe("j/#", 1).await;
        let mut s3 = connect(Opts::new(Proto::V4, a3, "j-s3")).await;
        s3.subscribe("j/#", 1).await;
        let publ = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "j-pub", true),
        )
        .await;
        let mut publ = Inbox::new(publ);
        publ.conn
            .send(&Packet::Publish(publish_packet(
                "j/x",
                1,
                false,
                1,
                b"to 3 and 4",
            )))
            .await;
        publ.until(WAIT, "PUBACK", |i| !i.acks.is_empty()).await;
        assert_eq!(acks_by_id(&publ)[&1], ReasonCode::Success);
        assert_eq!(s4.recv("node 4").await.text(), "to 3 and 4");
        assert_eq!(s3.recv("node 3").await.text(), "to 3 and 4");
        // And the other way: node 4 publishes to node 3's subscriber.
        let p4 = connect(Opts::new(Proto::V5, a4, "j-p4")).await;
        p4.publish("j/y", 1, false, "from 4").await;
        assert_eq!(s3.recv("node 3 from node 4").await.text(), "from 4");
        assert_eq!(s4.recv("node 4's own").await.text(), "from 4");
        // Node 3 leaves: its links go, so do its routes (a QoS 1 publish no longer waits
        // for it: acknowledged at once while it is stopped).
        let (code, _, err) = c.get(leader).ctl(&["cluster", "remove-node", "3"]);
        assert_eq!(code, 0, "{err}");
        drop(s3);
        c.node(3).stop();
        for id in [1, 2, 4] {
            wait_links(&c, id, 2);
            let s = c.get(id).status().unwrap();
            assert!(
                s["links"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["peer"] != 3),
                "node {id} still lists node 3: {s}"
            );
        }
        let t0 = Instant::now();
        publ.conn
            .send(&Packet::Publish(publish_packet(
                "j/z", 1, false, 2, b"after",
            )))
            .await;
        publ.until(WAIT, "second PUBACK", |i| i.acks.len() == 2)
            .await;
        assert_eq!(acks_by_id(&publ)[&2], ReasonCode::Success);
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "waited for node 3: {:?}",
            t0.elapsed()
        );
        assert_eq!(s4.recv("node 4 after").await.text(), "after");
    });
}

/// Retained messages set while a node was down reach it when it returns: set on node 1 with
/// node 3 killed (a new topic, and a newer value of a topic node 3 had), nodes 1 and 2 killed
/// too (nothing queued for node 3 survives), all restarted: read on node 3 by mosquitto_sub
/// and rumqttc.
#[test]
fn retained_messages_set_while_a_node_was_down_reach_it_when_it_returns() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let a1 = c.get(1).mqtt();
    let rt = rt();
    let mut publ = rt.block_on(async {
        let mut publ = raw_connect(
            a1,
            common::raw::connect_packet(ProtocolVersion::V5, "r-pub", true),
        )
        .await;
        let p = publish_packet("r/old", 1, true, 1, b"v1");
        common::persist::publish_acked(&mut publ, p).await;
        publ
    });
    let a3 = c.get(3).mqtt();
    let read = |addr: std::net::SocketAddr, topic: &str, want: &str| {
        check_for_blocking(SETTLE, &format!("{topic} = {want} on {addr}"), || {
            let out = std::process::Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
                .args(["-t", topic, "-C", "1", "-W", "1", "-v"])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (s == format!("{topic} {want}")).then_some(())
        })
    };
    read(a3, "r/old", "v1");
    // mosquitto_sub's clean session is gone on node 3, and so is its route on node 1 (else
    // the publishes below would wait for node 3, as they must for a subscriber there).
    check_for_blocking(SETTLE, "node 3's routes gone from node 1", || {
        (link(&c, 1, 3)["peer_routes"] == 0).then_some(())
    });
    c.node(3).kill9();
    rt.block_on(async {
        let p = publish_packet("r/old", 1, true, 2, b"v2");
        common::persist::publish_acked(&mut publ, p).await;
        let p = publish_packet("r/new", 1, true, 3, b"n1");
        common::persist::publish_acked(&mut publ, p).await;
    });
    // Acknowledged on node 1 (node 3 has no subscriber on them: not waited for).
    read(a1, "r/new", "n1");
    // Nodes 1 and 2 die too (kill -9): the copies they queued for node 3 are gone, what they
    // stored is not. All three restart: node 3 learns the new values from the sync alone.
    c.node(1).kill9();
    c.node(2).kill9();
    for id in [1, 2, 3] {
        c.node(id).start();
    }
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a3) = (c.get(1).mqtt(), c.get(3).mqtt());
    read(a3, "r/new", "n1");
    read(a3, "r/old", "v2");
    rt.block_on(async {
        let mut s = connect(Opts::new(Proto::V4, a3, "r-s3")).await;
        s.subscribe("r/#", 1).await;
        let mut got: Vec<String> = s
            .recv_n(2, "two retained on node 3")
            .await
            .iter()
            .map(|m| format!("{}={}", m.topic, m.text()))
            .collect();
        got.sort();
        assert_eq!(got, vec!["r/new=n1", "r/old=v2"]);
        s.expect_none(QUIET, "no third").await;
    });
    // From node 1 or node 2, whichever link came up first (the other's are the same).
    let kept: u64 = [1, 2]
        .iter()
        .map(|&p| link(&c, 3, p)["retained_in"].as_u64().unwrap())
        .sum();
    assert!(
        kept >= 2,
        "node 3 kept {kept} retained messages of its peers"
    );
    // Node 1 keeps its own (newer or equal) values: nothing of node 3's replaced them.
    read(a1, "r/old", "v2");
}
