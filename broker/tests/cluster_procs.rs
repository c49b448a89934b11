//! Issue 14's data plane over real processes: three `ringmq` binaries on 127.0.0.1
//! (`--cores 1` each, own data dirs, cluster port P and node-link port P+1, stopped by PID).
//! Publisher on node 1, subscribers on nodes 2 and 3 with clients we did not write
//! (mosquitto_sub v3.1.1 and v5, rumqttc v5 with subscription identifiers), QoS 0/1/2;
//! `ctl cluster status --json` shows the links; kill -9 of a node under load leaves the
//! others serving each other, and the restarted node is linked and synced again.
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
#[macro_use]
mod common;
mod cluster_support;

use cluster_support::{rt, serial, Cluster};
use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS as Q5;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound for links and leadership after a (re)start.
const SETTLE: Duration = Duration::from_secs(30);

/// `mosquitto_sub -v` on `addr`: its lines arrive on a channel. Killed (by PID) on drop.
struct MosqSub(cluster_support::mosq::Sub);

impl MosqSub {
    fn start(addr: std::net::SocketAddr, id: &str, version: &str, filter: &str, qos: u8) -> Self {
        let child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-i", id, "-V", version, "-q", &qos.to_string()])
            .args(["-t", filter, "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        MosqSub(cluster_support::mosq::Sub::adopt(child))
    }

    /// The next line whose payload is not a probe (polled: the runtime's other tasks, the
    /// publisher's event loop among them, must keep running meanwhile).
    async fn next(&self, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            match self.0.lines.try_recv() {
                Ok(l) if l.contains(" probe") => continue,
                Ok(l) => return Some(l),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Publishes a probe on `topic` from `publ` until `got` says it arrived (the link and the route
/// are in place: a subscriber that is not an MQTT client of ours cannot tell us its SUBACK).
async fn probe_until(publ: &Client, topic: &str, mut got: impl FnMut() -> bool) {
    let end = Instant::now() + SETTLE;
    loop {
        publ.publish(topic, 0, false, "probe").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if got() {
            return;
        }
        assert!(
            Instant::now() < end,
            "no probe on {topic} crossed within {SETTLE:?}"
        );
    }
}

/// Connects, retrying while the cluster answers 0x88 (its ownership claim timed out: the
/// metadata layer still settling on this loaded machine; the data plane is not involved).
async fn connect(opts: Opts) -> Client {
    let end = Instant::now() + SETTLE;
    loop {
        let c = Client::try_connect(opts.clone()).await;
        if c.connack.1 == 0 {
            return c;
        }
        assert!(
            Instant::now() < end,
            "CONNACK 0x{:02x} for {}",
            c.connack.1,
            opts.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until node `id`'s `ctl cluster status --json` shows every link up.
fn wait_links(c: &Cluster, id: u64, peers: usize) -> serde_json::Value {
    check_for_blocking(SETTLE, "node links up", || {
        let s = c.get(id).status()?;
        let links = s["links"].as_array()?;
        (links.len() == peers && links.iter().all(|l| l["up"] == true)).then_some(s)
    })
}

#[test]
fn publish_on_node_1_reaches_mosquitto_and_rumqttc_subscribers_on_nodes_2_and_3() {
    let _g = serial();
    let c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a2, a3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    rt().block_on(async {
        let publ = connect(Opts::new(Proto::V5, a1, "p-pub")).await;
        // rumqttc v5 on node 3, with a subscription identifier (subscribed below).
        let mut r3 = connect(Opts::new(Proto::V5, a3, "p-r3")).await;
        drop(connect(Opts::new(Proto::V5, a2, "p-warm")).await);
        // mosquitto_sub v3.1.1 QoS 1 on node 2, v5 QoS 2 on node 3.
        let m2 = MosqSub::start(a2, "p-m2", "mqttv311", "p/#", 1);
        let m3 = MosqSub::start(a3, "p-m3", "mqttv5", "p/+/x", 2);
        let seen2 = std::cell::Cell::new(false);
        let seen3 = std::cell::Cell::new(false);
        probe_until(&publ, "p/probe/x", || {
            while let Ok(l) = m2.0.lines.try_recv() {
                seen2.set(seen2.get() || l.contains("probe"));
            }
            while let Ok(l) = m3.0.lines.try_recv() {
                seen3.set(seen3.get() || l.contains("probe"));
            }
            seen2.get() && seen3.get()
        })
        .await;
        // Published right after the SUBACK.
        let f = Filter {
            path: "p/#".into(),
            qos: Q5::ExactlyOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        };
        r3.subscribe_v5(f, Some(42)).await;
        for q in 0..=2u8 {
            publ.publish("p/1/x", q, false, format!("m{q}")).await;
        }
        for q in 0..=2u8 {
            let want = format!("p/1/x m{q}");
            assert_eq!(
                m2.next(WAIT).await.as_deref(),
                Some(want.as_str()),
                "node 2"
            );
            assert_eq!(
                m3.next(WAIT).await.as_deref(),
                Some(want.as_str()),
                "node 3"
            );
            let m = r3.recv("rumqttc on node 3").await;
            assert_eq!((m.text(), m.qos), (format!("m{q}").as_str(), q));
            let ids = m.props.unwrap_or_default().subscription_identifiers;
            assert_eq!(ids, vec![42]);
        }
        assert_eq!(m2.next(QUIET).await, None, "nothing twice on node 2");
        r3.expect_none(QUIET, "nothing twice on node 3").await;
        // Retained on node 1, seen by a late mosquitto_sub on node 2.
        publ.publish("p/ret", 1, true, "kept").await;
        let got = check_for(WAIT, "the retained message on node 2", || async {
            let out = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &a2.port().to_string()])
                .args(["-t", "p/ret", "-C", "1", "-W", "1", "-v"])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!s.is_empty()).then_some(s)
        })
        .await;
        assert_eq!(got, "p/ret kept");
    });
    // The links, as an operator sees them.
    let s = c.get(1).status().expect("status");
    let links = s["links"].as_array().expect("links in cluster status");
    for l in links {
        assert!(l["msgs_out"].as_u64().unwrap() >= 4, "{l}");
        assert!(l["bytes_out"].as_u64().unwrap() > 0 && l["batches_out"].as_u64().unwrap() > 0);
        assert_eq!(l["dropped"], 0);
    }
    let (code, out, err) = c.get(1).ctl(&["cluster", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node links:"), "{out}");
}

#[test]
fn kill_9_of_a_node_under_load_leaves_the_others_serving_and_it_rejoins() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let rt = rt();
    let (a1, a2) = (c.get(1).mqtt(), c.get(2).mqtt());
    let a3 = c.get(3).mqtt();
    let (publ, mut s2) = rt.block_on(async {
        let publ = connect(Opts::new(Proto::V5, a1, "k-pub")).await;
        let mut s2 = connect(Opts::new(Proto::V4, a2, "k-s2")).await;
        s2.subscribe("k/t", 1).await;
        let mut s3 = connect(Opts::new(Proto::V5, a3, "k-s3")).await;
        s3.subscribe("k/t", 1).await;
        for i in 0..100 {
            publ.publish("k/t", 1, false, format!("{i}")).await;
        }
        s2.recv_n(100, "node 2 before").await;
        s3.recv_n(100, "node 3 before").await;
        (publ, s2)
    });
    // kill -9 node 3 while node 1 keeps publishing to nodes 2 and 3.
    rt.block_on(async {
        for i in 0..200 {
            publ.publish("k/t", 1, false, format!("a{i}")).await;
        }
    });
    c.node(3).kill9();
    rt.block_on(async {
        for i in 200..400 {
            publ.publish("k/t", 1, false, format!("a{i}")).await;
        }
        let got = s2.recv_n(400, "node 2 through node 3's death").await;
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, m)| m.text() == format!("a{i}")),
            "node 2 got every message in order"
        );
    });
    // Node 3 restarts on its data dir: linked and synced again, delivery resumes.
    c.node(3).start();
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, 1, 2);
    let a3 = c.get(3).mqtt();
    rt.block_on(async {
        let mut s3 = connect(Opts::new(Proto::V5, a3, "k-s3b")).await;
        s3.subscribe("k/t", 1).await;
        publ.publish("k/t", 1, false, "after").await;
        assert_eq!(s3.recv("node 3 after its restart").await.text(), "after");
        assert_eq!(s2.recv("node 2 after").await.text(), "after");
    });
    let s = c.get(1).status().expect("status");
    let l3 = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["peer"] == 3)
        .cloned()
        .unwrap();
    assert!(l3["connects"].as_u64().unwrap() >= 2, "{l3}");
}

/// A share group with members on nodes 2 (rumqttc) and 3 (paho-mqtt), the publisher (paho) on
/// node 1: each of its QoS 1 messages reaches exactly one member, both members get some.
#[test]
fn a_share_group_across_processes_gets_each_message_once() {
    let _g = serial();
    let c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    for id in [1, 2, 3] {
        wait_links(&c, id, 2);
    }
    let (a1, a2, a3) = (c.get(1).mqtt(), c.get(2).mqtt(), c.get(3).mqtt());
    let rt = rt();
    for (proto, v) in [(Proto::V5, "5"), (Proto::V4, "311")] {
        let mut m2 = rt.block_on(async {
            let mut m = connect(Opts::new(proto, a2, &format!("pg{v}-m2"))).await;
            m.subscribe("$share/pg/q/t", 1).await;
            m
        });
        let out = Command::new("timeout")
            .args(["30", "python3"])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/py/cluster_paho.py"
            ))
            .args([
                &a3.port().to_string(),
                &a1.port().to_string(),
                v,
                &format!("pg{v}"),
                "40",
            ])
            .output()
            .expect("python3 with paho-mqtt (pip install paho-mqtt, as .ci/run does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(r["pubacks"], 40, "{r}");
        let mut seen: Vec<u32> = r["member"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().parse().unwrap())
            .collect();
        let on3 = seen.len();
        rt.block_on(async {
            while let Some(m) = m2.recv_within(Duration::from_millis(500)).await {
                seen.push(m.text().parse().unwrap());
            }
        });
        let on2 = seen.len() - on3;
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..40).collect::<Vec<_>>(),
            "v{v}: node 2 got {on2}, node 3 {on3}"
        );
        assert!(on2 > 0 && on3 > 0, "v{v}: node 2 got {on2}, node 3 {on3}");
        rt.block_on(m2.disconnect());
    }
}
