//! Helpers for tests of acked copies across nodes (`--durability sync`): link counters,
//! raw and rumqttc connections retried while the metadata layer settles, parked sessions,
//! the acknowledgements a publisher got.

use super::Cluster;
use crate::common::persist::{persistent_connect, subscribe, Inbox};
use crate::common::raw::RawEv;
use crate::common::{check_for_blocking, Raw, WAIT};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bound for links and leadership after a (re)start.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Waits until node `id` shows `peers` links, all up; returns its status.
pub fn wait_links(c: &Cluster, id: u64, peers: usize) -> serde_json::Value {
    check_for_blocking(SETTLE, "node links up", || {
        let s = c.get(id).status()?;
        let links = s["links"].as_array()?;
        (links.len() == peers && links.iter().all(|l| l["up"] == true)).then_some(s)
    })
}

/// Node `id`'s counters for its link to `peer` (`None` while its admin socket does not answer).
pub fn try_link(c: &Cluster, id: u64, peer: u64) -> Option<serde_json::Value> {
    let s = c.get(id).status()?;
    s["links"]
        .as_array()?
        .iter()
        .find(|l| l["peer"] == peer)
        .cloned()
}

/// Node `id`'s counters for its link to `peer`.
pub fn link(c: &Cluster, id: u64, peer: u64) -> serde_json::Value {
    try_link(c, id, peer).expect("link to peer")
}

/// Connects a raw client, retrying while the cluster answers 0x88 (the metadata layer still
/// settling on this loaded machine).
pub async fn raw_connect(addr: SocketAddr, c: ringmq_codec::Connect) -> Raw {
    raw_connect_sp(addr, c).await.0
}

/// [`raw_connect`], with the CONNACK's session present flag.
pub async fn raw_connect_sp(addr: SocketAddr, c: ringmq_codec::Connect) -> (Raw, bool) {
    let end = Instant::now() + SETTLE;
    loop {
        let mut raw = Raw::open(addr, c.protocol).await;
        raw.send(&Packet::Connect(Box::new(c.clone()))).await;
        if let RawEv::Packet(Packet::ConnAck(a)) = raw.recv(WAIT).await {
            if a.reason == ReasonCode::Success {
                return (raw, a.session_present);
            }
        }
        assert!(Instant::now() < end, "no CONNACK 0 for {}", c.client_id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A persistent session (`v`) subscribed to `f` at `qos`, then disconnected: what matches is
/// stored in its session rows on its node.
pub async fn parked_session(addr: SocketAddr, v: ProtocolVersion, id: &str, f: &str, qos: QoS) {
    let mut s = raw_connect(addr, persistent_connect(v, id, 3600)).await;
    subscribe(&mut s, 1, f, SubscriptionOptions::with_qos(qos), None).await;
    crate::common::persist::disconnect(s).await;
}

/// The reason of every PUBACK/PUBREC a publisher got, by packet id.
pub fn acks_by_id(i: &Inbox) -> HashMap<u16, ReasonCode> {
    i.acks
        .iter()
        .filter_map(|a| match a {
            Packet::PubAck(r) | Packet::PubRec(r) => Some((r.packet_id.get(), r.reason)),
            _ => None,
        })
        .collect()
}
