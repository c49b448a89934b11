//! What the node links need to know: who this node is, where it listens for
//! its peers' links, where they listen for ours.

use std::net::SocketAddr;
use std::time::Duration;

/// One other node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    /// Where that node accepts node links.
    pub link_addr: SocketAddr,
}

/// The data plane of a cluster node (`None` in `ShardConfig`: a node alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id (`--node-id`).
    pub node_id: u64,
    /// Both ends of a link must name the same cluster.
    pub cluster_id: String,
    /// Where this node accepts node links.
    pub link_listen: SocketAddr,
    /// Every other node (this node excluded).
    pub peers: Vec<Peer>,
    /// Bytes a link may hold queued for its peer; publishes beyond are dropped and counted.
    pub link_queue_bytes: usize,
    /// How long a SUBACK waits at most for a peer that does not acknowledge a route.
    pub route_ack_timeout: Duration,
    /// Interval of route digests (anti-entropy) on each link.
    pub digest_interval: Duration,
    /// A link that brought nothing (pings are answered every second) for this
    /// long is closed: its peer is cut off or stuck, and the link must read as
    /// down (SUBACKs stop waiting for it, the dialer reconnects, a full sync follows).
    pub link_silence: Duration,
    /// How long a QoS 1/2 publish (durability `sync`) waits for a target
    /// node's answer that its copy is durable; then the publisher is refused.
    pub durable_ack_timeout: Duration,
    /// Bytes of acked copies this node may store for one node that cannot
    /// answer (`outbox.rs`); 0: none, such publishes are refused.
    pub outbox_max_bytes: usize,
    /// A node silent this long is down (`--node-down-after`): a session
    /// whose move it could not finish is given up then (`moving.rs`).
    pub node_down_after: Duration,
    /// Mutual TLS on the links (`None`: plain TCP).
    pub tls: Option<super::tls::LinkTls>,
}

impl ClusterConfig {
    /// A cluster config with the defaults for the tunables.
    pub fn new(
        node_id: u64,
        cluster_id: String,
        link_listen: SocketAddr,
        peers: Vec<Peer>,
    ) -> Self {
        ClusterConfig {
            node_id,
            cluster_id,
            link_listen,
            peers,
            link_queue_bytes: 64 << 20,
            route_ack_timeout: Duration::from_secs(5),
            digest_interval: Duration::from_secs(5),
            link_silence: Duration::from_secs(5),
            durable_ack_timeout: Duration::from_secs(5),
            outbox_max_bytes: 64 << 20,
            node_down_after: Duration::from_secs(3),
            tls: None,
        }
    }
}
