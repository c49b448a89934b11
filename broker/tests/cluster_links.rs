//! The cluster's data plane with three broker cores in one test process (each its own node,
//! own shards, own link port on 127.0.0.1), clients we did not write (rumqttc v4/v5) and raw
//! bytes on the link port: a publish on node 1 reaches subscribers on nodes 2 and 3 once per
//! node, right after their SUBACK, at the right QoS, in order, with v5 options; retained
//! messages are seen from every node; routes go away with the last unsubscribe; bad input on
//! the link port is refused and counted; a node that stops and comes back is synced again.
//! The same scenarios with three `ringmq` processes are in `cluster_procs.rs`.
#[macro_use]
mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ringmq_shard::cluster::frame::{Frame, Hello, VERSION};
use ringmq_shard::cluster::{ClusterConfig, ClusterStats, LinkStats, Peer};
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as Q5;

const CLUSTER: &str = "test-cluster";

/// A free port on 127.0.0.1 (bound and released: a small race other tests are unlikely to hit).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// N in-process nodes, ids 1..=N.
struct Cluster {
    nodes: Vec<Option<Broker>>,
    link_ports: Vec<u16>,
    shards: usize,
    durability: ringmq_shard::config::Durability,
}

impl Cluster {
    fn start(n: usize, shards: usize) -> Cluster {
        Cluster::start_with(n, shards, ringmq_shard::config::Durability::None)
    }

    fn start_with(
        n: usize,
        shards: usize,
        durability: ringmq_shard::config::Durability,
    ) -> Cluster {
        let link_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut c = Cluster {
            nodes: (0..n).map(|_| None).collect(),
            link_ports,
            shards,
            durability,
        };
        for i in 0..n {
            c.boot(i);
        }
        c
    }

    fn config(&self, i: usize) -> ClusterConfig {
        let addr = |j: usize| SocketAddr::from(([127, 0, 0, 1], self.link_ports[j]));
        let peers = (0..self.link_ports.len())
            .filter(|&j| j != i)
            .map(|j| Peer {
                id: j as u64 + 1,
                link_addr: addr(j),
            })
            .collect();
        ClusterConfig::new(i as u64 + 1, CLUSTER.into(), addr(i), peers)
    }

    fn boot(&mut self, i: usize) {
        let cc = self.config(i);
        let durability = self.durability;
        self.nodes[i] = Some(Broker::start_with(self.shards, move |cfg| {
            cfg.cluster = Some(cc);
            cfg.sys_interval = Duration::ZERO;
            cfg.durability = durability;
        }));
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut b) = self.nodes[i].take() {
            assert!(b.shutdown(Duration::from_secs(10)), "node {} stops", i + 1);
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().expect("node running").addr
    }

    fn stats(&self, i: usize) -> Arc<ClusterStats> {
        let b = self.nodes[i].as_ref().expect("node running");
        b.handle().cluster_stats().expect("a cluster node")
    }

    /// Node `i`'s link to node id `peer`.
    fn link(&self, i: usize, peer: u64) -> Arc<LinkStats> {
        let st = self.stats(i);
        st.links()
            .into_iter()
            .find(|l| l.peer == peer)
            .expect("a link to that peer")
    }

    /// Every running node's every link to a running node is up.
    async fn wait_links(&self) {
        let n = self.nodes.len();
        check_for(Duration::from_secs(10), "every node link up", || async {
            let all = (0..n).filter(|&i| self.nodes[i].is_some()).all(|i| {
                (0..n)
                    .filter(|&j| j != i && self.nodes[j].is_some())
                    .all(|j| self.link(i, j as u64 + 1).up.get() == 1)
            });
            all.then_some(())
        })
        .await;
    }

    async fn client(&self, proto: Proto, i: usize, id: &str) -> Client {
        Client::connect(Opts::new(proto, self.addr(i), id)).await
    }
}

fn v5_filter(path: &str, qos: Q5, nolocal: bool) -> Filter {
    Filter {
        path: path.into(),
        qos,
        nolocal,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    }
}

/// Generates one test per (protocol, shards per node).
macro_rules! cluster_matrix {
    ($( fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            #[tokio::test] async fn v311_1shard() { super::$name(Proto::V4, 1).await }
            #[tokio::test] async fn v5_1shard() { super::$name(Proto::V5, 1).await }
            #[tokio::test] async fn v311_2shards() { super::$name(Proto::V4, 2).await }
            #[tokio::test] async fn v5_2shards() { super::$name(Proto::V5, 2).await }
        }
    )*};
}

cluster_matrix! {
    fn publish_on_node_1_reaches_nodes_2_and_3_once_per_node;
    fn a_share_group_spanning_nodes_gets_each_message_once;
    fn retained_messages_are_seen_from_every_node;
    fn last_unsubscribe_removes_the_route;
    fn qos_1_and_2_under_sync_wait_for_every_nodes_durable_copy;
}

/// `--durability sync`: the publisher's PUBACK/PUBREC comes once nodes 2 and 3 answered that
/// their copies are durable (acked copies, one per node, confirmed by every shard there that
/// took one); every subscriber gets each message once, in order.
async fn qos_1_and_2_under_sync_wait_for_every_nodes_durable_copy(proto: Proto, shards: usize) {
    use common::persist::Inbox;
    use common::raw::publish_packet;
    use ringmq_codec::{Packet, ReasonCode};
    let c = Cluster::start_with(3, shards, ringmq_shard::config::Durability::Sync);
    c.wait_links().await;
    // Four subscribers per node: with two shards, most likely on both.
    let mut subs = Vec::new();
    for node in [1, 2] {
        for k in 0..4 {
            let mut s = c.client(proto, node, &format!("s{node}-{k}")).await;
            s.subscribe("y/#", 2).await;
            subs.push(s);
        }
    }
    let v = common::raw::version(proto);
    let (raw, _) = Raw::connect(c.addr(0), v, "y-pub", true).await;
    let mut publ = Inbox::new(raw);
    for i in 0..30u16 {
        let q = 1 + (i % 2) as u8;
        let p = publish_packet("y/t", q, false, i + 1, format!("{i}").as_bytes());
        publ.conn.send(&Packet::Publish(p)).await;
    }
    publ.until(WAIT * 2, "30 acknowledgements", |i| {
        i.acks
            .iter()
            .filter(|a| matches!(a, Packet::PubAck(_) | Packet::PubComp(_)))
            .count()
            == 30
    })
    .await;
    for a in &publ.acks {
        if let Packet::PubAck(r) | Packet::PubRec(r) = a {
            assert_eq!(r.reason, ReasonCode::Success, "{a:?}");
        }
    }
    for s in &mut subs {
        let got: Vec<String> = s
            .recv_n(30, "30 in order")
            .await
            .iter()
            .map(|m| m.text().to_string())
            .collect();
        assert_eq!(got, (0..30).map(|i| i.to_string()).collect::<Vec<_>>());
        s.expect_none(Duration::ZERO, "nothing twice").await;
    }
    for (peer, i) in [(2, 1), (3, 2)] {
        let out = c.link(0, peer);
        assert_eq!(out.acked_out.get(), 30, "node 1 -> {peer}");
        assert_eq!(out.unacked.get(), 0);
        assert_eq!(c.link(i, 1).acked_in.get(), 30, "node {peer} <- 1");
    }
}

/// Publisher on node 1, subscribers on nodes 2 and 3 with overlapping filters; each publish
/// sent right after the SUBACKs: [MQTT-3.8.4-8] QoS min, one copy per session for overlapping
/// subscriptions (v5 §4.8.1), order per topic [MQTT-4.6.0-5], and one copy per target node.
async fn publish_on_node_1_reaches_nodes_2_and_3_once_per_node(proto: Proto, shards: usize) {
    let c = Cluster::start(3, shards);
    c.wait_links().await;
    let mut s2 = c.client(proto, 1, "x-sub2").await;
    assert_eq!(s2.subscribe("x/+/t", 2).await, vec![2]);
    let mut s2b = c.client(proto, 1, "x-sub2b").await;
    assert_eq!(s2b.subscribe("x/1/t", 0).await, vec![0]);
    let mut s3 = c.client(proto, 2, "x-sub3").await;
    assert_eq!(s3.subscribe("x/#", 1).await, vec![1]);
    assert_eq!(s3.subscribe("x/1/+", 2).await, vec![2]);
    // Published as soon as the SUBACKs are in: the routes must already be on node 1.
    let publ = c.client(proto, 0, "x-pub").await;
    for q in 0..=2u8 {
        publ.publish("x/1/t", q, false, format!("m{q}")).await;
        let m = s2.recv("node 2, QoS 2 sub").await;
        assert_eq!(
            (m.topic.as_str(), m.text(), m.qos),
            ("x/1/t", format!("m{q}").as_str(), q)
        );
        let m = s2b.recv("node 2, QoS 0 sub").await;
        assert_eq!((m.text(), m.qos), (format!("m{q}").as_str(), 0));
        // Overlapping subscriptions on node 3: one copy at the highest granted QoS.
        let m = s3.recv("node 3").await;
        assert_eq!((m.text(), m.qos), (format!("m{q}").as_str(), q));
    }
    // Order per topic from one publisher, QoS 1.
    for i in 0..200 {
        publ.publish("x/2/t", 1, false, format!("{i}")).await;
    }
    let got: Vec<String> = s2
        .recv_n(200, "200 in order on node 2")
        .await
        .iter()
        .map(|m| m.text().to_string())
        .collect();
    assert_eq!(got, (0..200).map(|i| i.to_string()).collect::<Vec<_>>());
    let got = s3.recv_n(200, "200 in order on node 3").await;
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| m.text() == i.to_string()));
    s2.expect_none(QUIET, "nothing twice on node 2").await;
    s2b.expect_none(Duration::ZERO, "x/2/t not for node 2's second sub")
        .await;
    s3.expect_none(Duration::ZERO, "nothing twice on node 3")
        .await;
    // One copy per target node, whatever the number of subscribers there.
    assert_eq!(c.link(0, 2).msgs_out.get(), 203);
    assert_eq!(c.link(0, 3).msgs_out.get(), 203);
    assert_eq!(c.link(1, 1).msgs_in.get(), 203);
    assert_eq!(c.link(0, 2).dropped.get(), 0);
}

/// v5 §4.8.2 (non-normative text: each message goes to only one member of a share group), here with members
/// on all three nodes; a plain subscriber beside them still gets every message once.
async fn a_share_group_spanning_nodes_gets_each_message_once(proto: Proto, shards: usize) {
    let c = Cluster::start(3, shards);
    c.wait_links().await;
    let mut members = Vec::new();
    for node in 0..3 {
        let mut m = c.client(proto, node, &format!("g-m{node}")).await;
        m.subscribe("$share/g/s/+", 1).await;
        members.push(m);
    }
    let mut plain = c.client(proto, 1, "g-plain").await;
    plain.subscribe("s/#", 1).await;
    let publ = c.client(proto, 0, "g-pub").await;
    for i in 0..60 {
        publ.publish("s/t", 1, false, format!("{i}")).await;
    }
    let got = plain
        .recv_n(60, "the plain subscriber, every message")
        .await;
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| m.text() == i.to_string()));
    let mut seen = Vec::new();
    let mut per_member = Vec::new();
    for m in members.iter_mut() {
        let mut n = 0;
        while let Some(msg) = m.recv_within(Duration::from_millis(500)).await {
            seen.push(msg.text().parse::<u32>().unwrap());
            n += 1;
        }
        per_member.push(n);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..60).collect::<Vec<_>>(),
        "once each across the group: {per_member:?}"
    );
    assert!(
        per_member.iter().all(|&n| n > 0),
        "every node's member served: {per_member:?}"
    );
    plain
        .expect_none(Duration::ZERO, "no duplicate for the plain subscriber")
        .await;
}

/// [MQTT-3.3.1-5]/[MQTT-3.3.1-6]: a retained message published on node 1 is sent to a later
/// subscriber on node 3; [MQTT-3.3.1-10]: an empty retained publish deletes it everywhere.
async fn retained_messages_are_seen_from_every_node(proto: Proto, shards: usize) {
    let c = Cluster::start(3, shards);
    c.wait_links().await;
    let mut publ = c.client(proto, 0, "r-pub").await;
    publ.publish("r/a", 1, true, "kept").await;
    publ.wait_acked(1).await;
    for node in [1, 2] {
        let got = check_for(WAIT, "the retained message on another node", || async {
            let mut s = c.client(proto, node, &format!("r-sub{node}")).await;
            s.subscribe("r/#", 1).await;
            let m = s.recv_within(Duration::from_millis(200)).await;
            s.disconnect().await;
            // A copy that crossed while subscribed is a live delivery (3.1.1 clears its RETAIN
            // [MQTT-3.3.1-9]): only a replay from node's own retained store counts here.
            m.filter(|m| m.retain)
        })
        .await;
        assert_eq!(
            (got.topic.as_str(), got.text(), got.retain),
            ("r/a", "kept", true)
        );
    }
    publ.publish("r/a", 1, true, "").await;
    check_for(WAIT, "the retained message deleted on node 3", || async {
        let mut s = c.client(proto, 2, "r-gone").await;
        s.subscribe("r/#", 1).await;
        let m = s.recv_within(Duration::from_millis(200)).await;
        s.disconnect().await;
        m.is_none().then_some(())
    })
    .await;
}

/// Only a node's last unsubscribe removes its route: node 1 stops sending.
async fn last_unsubscribe_removes_the_route(proto: Proto, shards: usize) {
    let c = Cluster::start(2, shards);
    c.wait_links().await;
    let mut a = c.client(proto, 1, "u-a").await;
    let mut b = c.client(proto, 1, "u-b").await;
    a.subscribe("u/t", 1).await;
    b.subscribe("u/t", 1).await;
    check_for(WAIT, "node 1 knows node 2's route", || async {
        (c.link(0, 2).peer_routes.get() == 1).then_some(())
    })
    .await;
    a.unsubscribe("u/t").await;
    let publ = c.client(proto, 0, "u-pub").await;
    publ.publish("u/t", 1, false, "still").await;
    assert_eq!(b.recv("b still subscribed").await.text(), "still");
    b.unsubscribe("u/t").await;
    check_for(WAIT, "node 2's route gone from node 1", || async {
        (c.link(0, 2).peer_routes.get() == 0).then_some(())
    })
    .await;
    let before = c.link(0, 2).msgs_out.get();
    publ.publish("u/t", 1, false, "nobody").await;
    publ.publish("u/other", 0, false, "nobody").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        c.link(0, 2).msgs_out.get(),
        before,
        "nothing crosses without a route"
    );
}

/// v5 across nodes: subscription identifiers are the subscriber node's [MQTT-3.3.4-3]; no
/// local [MQTT-3.8.3-3] keeps the publisher's own copy back but not the other node's.
#[tokio::test]
async fn v5_options_hold_across_nodes() {
    let c = Cluster::start(3, 1);
    c.wait_links().await;
    let mut sub = c.client(Proto::V5, 1, "o-sub").await;
    sub.subscribe_v5(v5_filter("o/+", Q5::AtLeastOnce, false), Some(7))
        .await;
    sub.subscribe_v5(v5_filter("o/#", Q5::AtLeastOnce, false), Some(9))
        .await;
    let mut me = c.client(Proto::V5, 0, "o-pub").await;
    me.subscribe_v5(v5_filter("o/a", Q5::AtLeastOnce, true), None)
        .await;
    me.publish("o/a", 1, false, "x").await;
    let mut ids = HashSet::new();
    let m = sub.recv("with ids").await;
    ids.extend(m.props.unwrap_or_default().subscription_identifiers);
    while let Some(m) = sub.recv_within(QUIET).await {
        ids.extend(m.props.unwrap_or_default().subscription_identifiers);
    }
    assert_eq!(ids, HashSet::from([7, 9]));
    me.expect_none(QUIET, "no local on the publisher's node")
        .await;
}

/// Connects to a link port, sends `bytes`, returns what came back until the close.
fn poke(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("link port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("write");
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

fn hello(cluster: &str, node: u64, version: u16) -> Vec<u8> {
    let mut b = BytesMut::new();
    Frame::Hello(Hello {
        version,
        cluster: cluster.into(),
        node,
    })
    .encode(&mut b);
    b.to_vec()
}

fn refusal(back: &[u8]) -> String {
    let mut b = BytesMut::from(back);
    match Frame::decode(&mut b) {
        Ok(Some(Frame::Refuse(why))) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Bad input on the link port: garbage, an HTTP request, a foreign cluster, another link
/// version, an unknown node, a node that must be dialed: each refused (with one line when it
/// spoke the link protocol), counted, and the cluster keeps working.
#[tokio::test]
async fn bad_input_on_the_link_port_is_refused_and_counted() {
    let c = Cluster::start(2, 1);
    c.wait_links().await;
    // Node 2 accepts links (node 1 dials it).
    let port = c.link_ports[1];
    assert!(poke(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    assert!(poke(port, &[0xff; 64]).is_empty());
    let why = refusal(&poke(port, &hello("other", 1, VERSION)));
    assert!(why.contains("cluster 'other'"), "{why}");
    let why = refusal(&poke(port, &hello(CLUSTER, 1, VERSION + 1)));
    assert!(why.contains("link version"), "{why}");
    let why = refusal(&poke(port, &hello(CLUSTER, 42, VERSION)));
    assert!(why.contains("not a peer"), "{why}");
    // Node 1 dials node 2, never the other way.
    let why = refusal(&poke(c.link_ports[0], &hello(CLUSTER, 2, VERSION)));
    assert!(why.contains("should be dialed"), "{why}");
    assert_eq!(c.stats(1).refused_unknown.get(), 5);
    assert_eq!(c.stats(0).refused_unknown.get(), 1);
    // The real link was not disturbed.
    let mut sub = c.client(Proto::V5, 1, "b-sub").await;
    sub.subscribe("b/t", 1).await;
    let publ = c.client(Proto::V5, 0, "b-pub").await;
    publ.publish("b/t", 1, false, "fine").await;
    assert_eq!(sub.recv("after the bad input").await.text(), "fine");
    assert_eq!(c.link(0, 2).connects.get(), 1);
}

/// A node that stops (mid-traffic) and comes back: the others keep serving each other, the
/// link reconnects, routes are synced in full again, and delivery resumes.
#[tokio::test]
async fn a_node_that_leaves_and_returns_is_synced_again() {
    let mut c = Cluster::start(3, 1);
    c.wait_links().await;
    let mut s2 = c.client(Proto::V5, 1, "n-sub2").await;
    s2.subscribe("n/t", 1).await;
    let mut s3 = c.client(Proto::V4, 2, "n-sub3").await;
    s3.subscribe("n/t", 1).await;
    let publ = c.client(Proto::V5, 0, "n-pub").await;
    publ.publish("n/t", 1, false, "before").await;
    assert_eq!(s3.recv("before").await.text(), "before");
    assert_eq!(s2.recv("before").await.text(), "before");
    drop(s3);
    c.stop(2);
    // Node 3 gone: node 2 still gets everything.
    for i in 0..50 {
        publ.publish("n/t", 1, false, format!("{i}")).await;
    }
    let got = s2.recv_n(50, "while node 3 is away").await;
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| m.text() == i.to_string()));
    check_for(WAIT, "node 1 sees node 3's link down", || async {
        (c.link(0, 3).up.get() == 0).then_some(())
    })
    .await;
    c.boot(2);
    c.wait_links().await;
    let mut s3 = c.client(Proto::V4, 2, "n-sub3").await;
    s3.subscribe("n/t", 1).await;
    publ.publish("n/t", 1, false, "after").await;
    assert_eq!(s3.recv("after the return").await.text(), "after");
    assert_eq!(s2.recv("after").await.text(), "after");
    assert!(c.link(0, 3).connects.get() >= 2);
    assert!(c.link(0, 3).syncs_out.get() >= 2);
}

/// Node certificates for mutual TLS on links: a CA, a certificate per role carrying the
/// cluster id as its DNS name (server and client use), and one from another CA.
struct LinkPki {
    dir: std::path::PathBuf,
}

impl LinkPki {
    fn new() -> LinkPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = common::broker::scratch_dir().join("link-pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let node = |name: &str, issuer: &CertifiedIssuer<'static, KeyPair>| {
            let mut p = CertificateParams::new(vec![CLUSTER.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        let good = ca("cluster CA");
        let other = ca("other CA");
        std::fs::write(dir.join("ca.pem"), good.pem()).unwrap();
        node("node", &good);
        node("intruder", &other);
        LinkPki { dir }
    }

    fn tls(&self, who: &str) -> ringmq_shard::cluster::tls::LinkTls {
        ringmq_shard::cluster::tls::load(
            self.dir.join(format!("{who}.pem")),
            self.dir.join(format!("{who}.key")),
            self.dir.join("ca.pem"),
            CLUSTER,
        )
        .expect("link TLS files load")
    }
}

/// Mutual TLS on the node links: delivery works across nodes, a node whose certificate
/// another CA signed is refused (counted on both sides) and never linked.
#[tokio::test]
async fn links_with_mutual_tls_deliver_and_refuse_a_foreign_certificate() {
    let pki = LinkPki::new();
    let link_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut c = Cluster {
        nodes: (0..3).map(|_| None).collect(),
        link_ports,
        shards: 1,
        durability: ringmq_shard::config::Durability::None,
    };
    for i in 0..3 {
        let mut cc = c.config(i);
        cc.tls = Some(pki.tls(if i == 2 { "intruder" } else { "node" }));
        c.nodes[i] = Some(Broker::start_with(1, move |cfg| {
            cfg.cluster = Some(cc);
            cfg.sys_interval = Duration::ZERO;
        }));
    }
    check_for(Duration::from_secs(10), "link 1-2 up over TLS", || async {
        (c.link(0, 2).up.get() == 1).then_some(())
    })
    .await;
    let mut sub = c.client(Proto::V5, 1, "t-sub").await;
    sub.subscribe("t/x", 2).await;
    let publ = c.client(Proto::V5, 0, "t-pub").await;
    publ.publish("t/x", 2, false, "sealed").await;
    let m = sub.recv("over the TLS link").await;
    assert_eq!((m.text(), m.qos), ("sealed", 2));
    // Node 3's certificate is from another CA: node 1 and 2 never link with it.
    check_for(Duration::from_secs(10), "node 3 refused", || async {
        let refused = c.link(0, 3).refused.get() + c.stats(2).refused_unknown.get();
        (refused > 0).then_some(())
    })
    .await;
    assert_eq!(c.link(0, 3).up.get(), 0);
    assert_eq!(c.link(1, 3).up.get(), 0);
    let _ = std::fs::remove_dir_all(&pki.dir);
    c.stop(2);
}
