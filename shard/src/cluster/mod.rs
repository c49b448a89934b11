//! The cluster's data plane: routes at node level and node links.
//!
//! A publish is matched on its publisher's node: the local shards get it over
//! the mesh as always, and [`forward`] looks up which *nodes* have subscribers
//! (each shard's [`routes::NodeRoutes`]) and hands the publish to shard 0, which
//! runs the links (`hub.rs`, `link.rs`): encoded once (`frame.rs`), queued on
//! each target node's link, written once per tick. On the target node, shard 0
//! routes it like a local publish (`route::route_from_peer`), never onward.
//!
//! Routes: each node tells its peers, over the same links, the filters it has
//! subscribers on; only a node's first subscriber and its last unsubscribe are
//! changes (`routes::RouteBook`). A full sync runs when a link connects and
//! when a periodic digest disagrees. A SUBACK that added a node-level route
//! waits until every connected peer acknowledged it, and a peer acknowledges
//! only once all its shards applied it: a message published on any node after
//! the SUBACK reaches the new subscription.
//!
//! Operator questions cross the same links (`ops.rs`: `ringmq ctl clients`
//! cluster-wide, asked through `Control::AskPeers` on shard 0).
//!
//! Interface to the rest of the shard: [`filter_changed`] (subscribe/unsubscribe),
//! [`forward`] (routing), [`on_item`] (mesh), [`after_routes`] (SUBACK), [`start`].

pub mod config;
pub mod frame;
pub mod handover;
mod hub;
mod link;
pub mod ops;
pub mod routes;
pub mod stats;
mod stream;
pub mod tls;

pub use config::{ClusterConfig, Peer};
pub use stats::{ClusterStats, LinkStats};

use crate::mesh::MeshItem;
use crate::router::ShardSet;
use crate::shard::Shard;
use ringmq_codec::{Publish, TopicFilter};
use routes::{NodeRoutes, Slot};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// What crosses the mesh for the cluster wing.
pub enum Item {
    /// Peer `slot` gained or lost a filter: apply it to this shard's node routes.
    Route {
        slot: Slot,
        filter: TopicFilter,
        add: bool,
    },
    /// A publish for the peers in `to` (from any shard to shard 0, which runs the links).
    Forward {
        to: ShardSet,
        publish: Publish,
    },
    /// A publish for one member of share group `group` on peer `slot` (to shard 0).
    ForwardShared {
        slot: Slot,
        group: TopicFilter,
        publish: Publish,
    },
    /// To every shard from shard 0: reply `BarrierAck` (everything before is applied).
    Barrier(u64),
    BarrierAck(u64),
    /// Session handover (`handover.rs`): a CONNECT's fetch from peer `slot` (to shard 0).
    Fetch {
        slot: Slot,
        req: u64,
        epoch: u64,
        client: String,
    },
    /// Peer `slot` asks for `client`'s session (shard 0 to the home shard).
    Serve {
        slot: Slot,
        req: u64,
        epoch: u64,
        client: String,
    },
    /// The home shard's answer for peer `slot` (to shard 0).
    Ship {
        slot: Slot,
        req: u64,
        snapshot: Option<bytes::Bytes>,
    },
    /// The answer to this node's fetch `req` (shard 0 to the asking shard).
    Shipped {
        req: u64,
        snapshot: Option<bytes::Bytes>,
        reached: bool,
    },
    /// To shard 0: answer `RoutesSettled` once every connected peer
    /// acknowledged this node's route changes so far.
    RoutesQuery(u64),
    RoutesSettled(u64),
}

/// Given to each shard at start (the listener only to shard 0).
pub(crate) struct Init {
    pub cfg: Arc<ClusterConfig>,
    pub stats: Arc<ClusterStats>,
    pub listener: Option<std::net::TcpListener>,
    /// Every shard's control channel (shard 0 asks them for a peer's `ClientsAsk`).
    pub controls: Vec<flume::Sender<crate::control::Control>>,
}

/// One shard's part of the cluster.
pub struct Node {
    pub(crate) routes: RefCell<NodeRoutes>,
    /// Shard 0 only.
    hub: Option<Rc<hub::Hub>>,
    scratch: RefCell<ShardSet>,
    pub(crate) handover: handover::Handover,
    pub(crate) stats: Arc<ClusterStats>,
}

impl Node {
    pub(crate) fn new(shard_id: usize, init: &Init) -> Self {
        Node {
            routes: RefCell::new(NodeRoutes::new(init.cfg.peers.len())),
            hub: (shard_id == 0).then(|| {
                Rc::new(hub::Hub::new(
                    init.cfg.clone(),
                    init.stats.clone(),
                    init.controls.clone(),
                ))
            }),
            scratch: RefCell::default(),
            handover: Default::default(),
            stats: init.stats.clone(),
        }
    }
}

/// Binds the link listener (before the shards start: a busy port is a start error).
pub(crate) fn bind(cfg: &ClusterConfig) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(cfg.link_listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cluster link listener {}: {e}", cfg.link_listen),
        )
    })
}

/// Starts the links (shard 0).
pub(crate) fn start(shard: &Rc<Shard>, listener: Option<std::net::TcpListener>) {
    if let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) {
        hub.start(shard, listener);
    }
}

/// Closes the links and the link port (shard 0, at shutdown).
pub(crate) async fn stop(shard: &Shard) {
    if let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) {
        hub.stop().await;
    }
}

/// A shard gained its first (`add`) or lost its last subscriber on `filter`.
/// Called on the shard itself; shard 0 also calls it for every other shard's
/// `SubAdd`/`SubRemove`, and keeps the node-level count.
/// For `$share/...` it is called per member: the node-level change is the
/// node's first member of the group and its last; this node's presence in the
/// group is replicated to its own shards too (slot [`routes::THIS_NODE`]), so
/// a publish picks one node per group, this one included.
pub(crate) fn filter_changed(shard: &Shard, filter: &TopicFilter, add: bool) {
    if let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.as_ref()) {
        if hub.local_change(filter, add) && filter.shared().is_some() {
            hub::apply_everywhere(shard, routes::THIS_NODE, filter.clone(), add);
        }
    }
}

/// Whether some connected peer has not yet acknowledged this node's route
/// changes (shard 0 only: other shards' SUBACKs wait through its barrier).
pub(crate) fn routes_pending(shard: &Shard) -> bool {
    shard
        .cluster
        .as_ref()
        .and_then(|n| n.hub.as_ref())
        .is_some_and(|h| h.routes_pending())
}

/// Runs `then` once every connected peer acknowledged this node's route
/// changes so far (shard 0 only; at once elsewhere or without a cluster).
pub(crate) fn after_routes(shard: &Shard, then: Box<dyn FnOnce()>) {
    match shard.cluster.as_ref().and_then(|n| n.hub.as_ref()) {
        Some(hub) => hub.when_routes_acked(then),
        None => then(),
    }
}

/// Sends `p` (just routed on this node) to the other nodes with subscribers
/// on its topic; a retained message goes to every node. `$SYS` topics (each
/// node's own figures) stay here; other `$` topics clients publish cross like
/// any topic ([MQTT-4.7.2-1] only keeps them from first-level wildcards).
/// Each matching share group gets one node, in turn among the nodes with
/// members; returns the groups given to another node (this node skips them).
pub(crate) fn forward(shard: &Shard, p: &Publish) -> Vec<TopicFilter> {
    let Some(node) = &shard.cluster else {
        return Vec::new();
    };
    if is_sys(p.topic.as_str()) {
        return Vec::new();
    }
    let elsewhere = forward_shared(shard, node, p);
    forward_plain(shard, node, p);
    elsewhere
}

fn forward_shared(shard: &Shard, node: &Node, p: &Publish) -> Vec<TopicFilter> {
    let mut picks = Vec::new();
    node.routes
        .borrow_mut()
        .match_shared(p.topic.as_str(), &mut picks);
    let mut elsewhere = Vec::new();
    for t in picks.into_iter().filter(|t| t.shard != routes::THIS_NODE) {
        match &node.hub {
            Some(hub) => hub.send_shared(t.shard, &t.filter, p),
            None => shard.mesh.push(
                0,
                MeshItem::Cluster(Box::new(Item::ForwardShared {
                    slot: t.shard,
                    group: t.filter.clone(),
                    publish: p.clone(),
                })),
            ),
        }
        elsewhere.push(t.filter);
    }
    elsewhere
}

fn forward_plain(shard: &Shard, node: &Node, p: &Publish) {
    let mut to = node.scratch.borrow_mut();
    to.clear();
    if p.retain {
        for slot in 1..=shard.cfg.cluster.as_ref().map_or(0, |c| c.peers.len()) {
            to.insert(slot as Slot);
        }
    } else {
        node.routes.borrow().match_nodes(p.topic.as_str(), &mut to);
    }
    if to.is_empty() {
        return;
    }
    match &node.hub {
        Some(hub) => hub.send_publish(&to, p),
        None => shard.mesh.push(
            0,
            MeshItem::Cluster(Box::new(Item::Forward {
                to: to.clone(),
                publish: p.clone(),
            })),
        ),
    }
}

/// `Control::AskPeers` (shard 0): asks other nodes for their connected clients.
pub(crate) fn ask_clients(shard: &Shard, ask: ops::AskClients) {
    match shard.cluster.as_ref().and_then(|n| n.hub.as_ref()) {
        Some(hub) => hub.ask_clients(ask),
        None => {
            for node in ask.nodes {
                let _ = ask.reply.send(ops::PeerClients {
                    node,
                    result: Err("this node has no node links".into()),
                });
            }
        }
    }
}

/// `$SYS` or `$SYS/...`: a node's own figures, never sent to another node.
fn is_sys(topic: &str) -> bool {
    topic
        .strip_prefix("$SYS")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A cluster item from shard `from`.
pub(crate) fn on_item(shard: &Rc<Shard>, from: usize, item: Item) {
    let Some(node) = &shard.cluster else {
        return;
    };
    match item {
        Item::Route { slot, filter, add } => node.routes.borrow_mut().apply(slot, &filter, add),
        Item::Forward { to, publish } => {
            if let Some(hub) = &node.hub {
                hub.send_publish(&to, &publish);
            }
        }
        Item::ForwardShared {
            slot,
            group,
            publish,
        } => {
            if let Some(hub) = &node.hub {
                hub.send_shared(slot, &group, &publish);
            }
        }
        Item::Barrier(t) => shard
            .mesh
            .push(from, MeshItem::Cluster(Box::new(Item::BarrierAck(t)))),
        Item::BarrierAck(t) => {
            if let Some(hub) = &node.hub {
                hub.barrier_ack(t);
            }
        }
        item => handover::on_item(shard, from, item),
    }
}
