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
//! QoS 1/2 under durability `sync` cross as *acked* copies (`acks.rs`): the
//! publisher's acknowledgement waits until each target node answers that its
//! copies are durable; a copy is resent after a link break and delivered
//! only where it was not before.
//!
//! Interface to the rest of the shard: [`filter_changed`] (subscribe/unsubscribe),
//! [`forward`] (routing), [`on_item`] (mesh), [`after_routes`] (SUBACK), [`start`],
//! [`fresh`] and [`copy_answered`] (acked copies from other nodes).

mod acks;
pub mod config;
pub(crate) mod copy_acks;
pub mod frame;
mod frame_move;
pub(crate) mod ghost;
pub mod handover;
mod hub;
mod link;
mod members;
pub(crate) mod merge;
pub(crate) mod moving;
pub mod ops;
pub mod origin;
mod outbox;
mod retained;
pub mod routes;
pub(crate) mod share_move;
pub mod stats;
mod stream;
pub(crate) mod stub;
mod stub_row;
pub mod tls;
pub(crate) mod unrouted;

pub use config::{ClusterConfig, Peer};
pub use frame::{Origin, OriginAt, Stamp};
pub(crate) use members::set_peers;
pub use members::PeerSetter;
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
    /// With `token`: acked copies, each peer's answer confirms `token` to the sender.
    Forward {
        to: ShardSet,
        publish: Publish,
        token: Option<u64>,
        origin: Option<Origin>,
    },
    /// A publish for one member of share group `group` on peer `slot` (to shard 0).
    ForwardShared {
        slot: Slot,
        group: TopicFilter,
        publish: Publish,
        token: Option<u64>,
    },
    /// To every shard from shard 0: the nodes linked now and their slots (members changed).
    Slots(Vec<(u64, Slot)>),
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
        /// Not reached: how long the old node's link has been silent, when known.
        silent: Option<std::time::Duration>,
    },
    /// A prepared QoS 2 message's copies for `nodes` (to shard 0; `origin.rs`):
    /// acked copies carrying `origin`, each node's answer confirming `token`
    /// to the sender; `patient` (recovery's resend): no deadline.
    Origin {
        nodes: Vec<u64>,
        group: Option<TopicFilter>,
        publish: Publish,
        token: u64,
        origin: origin::Origin,
        /// Where the publish entered the cluster (`Forward`'s origin; none for recovery's resends).
        at: Option<Origin>,
        patient: bool,
    },
    /// Shard `shard`'s done marks of these (node, nonce) are durable (to shard 0).
    ForgetOrigins {
        shard: u16,
        list: Vec<(u64, u64)>,
    },
    /// Node `node` is done with these messages of its shard `shard` (from shard 0).
    OriginsDone {
        node: u64,
        shard: u16,
        nonces: Vec<u64>,
    },
    /// Node `node` needs none of its origin keys below these floors (from shard 0).
    OriginFloor {
        node: u64,
        floors: Vec<(u16, u64)>,
    },
    /// To shard 0: answer `RoutesSettled` once every connected peer
    /// acknowledged this node's route changes so far.
    RoutesQuery(u64),
    RoutesSettled(u64),
    /// A session moving between nodes (`stub.rs`, `merge.rs`).
    Move(stub::Move),
    /// Late copies of a moved session (`ghost.rs`).
    Ghost(ghost::Msg),
    /// Share groups of a moved session (`share_move.rs`).
    ShareMove(share_move::Msg),
    /// The new node holds this client's session durably (`MoveDone`; shard
    /// 0 to the home shard): its keep goes (`moving.rs`).
    KeepDone(String),
}

/// Given to each shard at start (the listener only to shard 0).
pub(crate) struct Init {
    pub cfg: Arc<ClusterConfig>,
    pub stats: Arc<ClusterStats>,
    pub listener: Option<std::net::TcpListener>,
    /// Every shard's control channel (shard 0 asks them for a peer's `ClientsAsk`).
    pub controls: Vec<flume::Sender<crate::control::Control>>,
    /// Per shard: the origin floor found at start (`origin.rs`; shard 0 sends it).
    pub floors: Vec<(u16, u64)>,
    /// Moves whose fetch failed (node-wide: a retry may land on any shard).
    pub pending: Arc<moving::Pending>,
}

/// One shard's part of the cluster.
pub struct Node {
    pub(crate) routes: RefCell<NodeRoutes>,
    /// Shard 0 only.
    hub: Option<Rc<hub::Hub>>,
    scratch: RefCell<ShardSet>,
    /// Per sending node: the last acked copy this shard had (stream, id).
    seen: RefCell<crate::IntMap<u64, Stamp>>,
    /// How many of `seen`'s keys are a session's (`copy_acks::session_removed`).
    session_stamps: std::cell::Cell<usize>,
    /// Slots of the nodes linked now (every one gets retained messages).
    slots: RefCell<ShardSet>,
    /// The nodes linked now: (node id, slot). A node added at run time is
    /// here too, so a session can be fetched from it (`handover.rs`).
    peer_slots: RefCell<Vec<(u64, Slot)>>,
    /// Origin keys of other nodes' prepared QoS 2 copies delivered here (`origin.rs`).
    origins: origin::Delivered,
    pub(crate) handover: handover::Handover,
    pub(crate) stats: Arc<ClusterStats>,
    /// This node's id (origins of publishes).
    pub(crate) node_id: u64,
    /// This shard's origin count: the next publish routed here gets it.
    origin_seq: std::cell::Cell<u64>,
    /// Per origin (node, shard): the last count this shard delivered to a session.
    handled: RefCell<crate::IntMap<(u64, u16), u64>>,
    /// Sessions that moved away and whose traffic is still forwarded (old node).
    pub(crate) stubs: stub::Stubs,
    /// Sessions that moved here and still merge the old node's copies (new node).
    pub(crate) merges: merge::Merges,
    /// A delivery under a confirm token meeting a stub (`copy_acks.rs`).
    pub(crate) copy_acks: copy_acks::Under,
    /// Moved sessions whose late copies are forwarded (old node) or noted (new node).
    pub(crate) ghosts: ghost::Ghosts,
    /// Share groups of sessions moving away (shard 0).
    pub(crate) shares: share_move::Shares,
    /// Sessions taken for another node, kept until its `MoveDone` (old node).
    pub(crate) keeps: moving::Keeps,
    /// Moves whose fetch failed, the old node unreachable (new node).
    pub(crate) pending: Arc<moving::Pending>,
    /// `--node-down-after`: a failed move is given up then.
    pub(crate) down_after: std::time::Duration,
}

/// The origin stamp of a publish entering the cluster on this shard (routed here first).
pub(crate) fn next_origin(shard: &Shard) -> Option<Origin> {
    let node = shard.cluster.as_ref()?;
    let seq = node.origin_seq.get();
    node.origin_seq.set(seq + 1);
    Some(Origin {
        node: node.node_id,
        shard: shard.id as u16,
        seq,
    })
}

/// The next origin count of this shard (the first publish routed after now gets it).
pub(crate) fn origin_now(shard: &Shard) -> u64 {
    shard.cluster.as_ref().map_or(0, |n| n.origin_seq.get())
}

/// A publish of origin `o` reached sessions of this shard (each origin's
/// copies reach a shard in their order: the last one is kept).
pub(crate) fn handled(shard: &Shard, o: Option<Origin>) {
    if let (Some(n), Some(o)) = (&shard.cluster, o) {
        n.handled.borrow_mut().insert((o.node, o.shard), o.seq);
    }
}

/// Whether a session of this shard is moving between nodes (a stub of one
/// that left, or one that arrived and merges): deliveries look closer then.
pub(crate) fn moving(shard: &Shard) -> bool {
    shard
        .cluster
        .as_ref()
        .is_some_and(|n| n.stubs.any() || n.merges.any() || n.ghosts.any())
}

/// Every origin's last count handled on this shard.
pub(crate) fn handled_marks(shard: &Shard) -> Vec<Origin> {
    shard.cluster.as_ref().map_or_else(Vec::new, |n| {
        n.handled
            .borrow()
            .iter()
            .map(|(&(node, shard), &seq)| Origin { node, shard, seq })
            .collect()
    })
}

/// An acked copy from another node: who sent it, where it stands in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStamp {
    pub node: u64,
    pub stamp: Stamp,
    /// A prepared QoS 2 message's key on that node (`origin.rs`): delivered
    /// once per key, whatever the stream (the sender may have restarted).
    pub origin: Option<origin::Origin>,
}

/// Whether this shard has not had the acked copy `s` yet (and notes that it
/// has now). A node's acked copies reach each shard in stream order, and a
/// link that breaks resends its unanswered copies in that order, so a copy
/// at or below the last one seen of the same stream is a resend.
pub(crate) fn fresh(shard: &Shard, s: PeerStamp) -> bool {
    let Some(node) = &shard.cluster else {
        return true;
    };
    let mut seen = node.seen.borrow_mut();
    match seen.get(&s.node) {
        Some(last) if last.stream == s.stamp.stream && s.stamp.id <= last.id => false,
        _ => {
            if seen.insert(s.node, s.stamp).is_none() && copy_acks::is_session_key(s.node) {
                node.session_stamps_add(1);
            }
            s.origin
                .is_none_or(|o| origin::first_time(shard, s.node, o))
        }
    }
}

/// Runs `deliver` unless `peer` stamps a copy this shard had already
/// (a plain copy is always delivered).
pub(crate) fn deliver_once(shard: &Shard, peer: Option<PeerStamp>, deliver: impl FnOnce()) {
    match peer {
        None => deliver(),
        Some(s) if fresh(shard, s) => {
            let ops = shard.store.pending_ops();
            origin::delivering(shard, s.origin.map(|o| (s.node, o)), deliver);
            delivered(shard, s, ops);
        }
        Some(_) => {}
    }
}

/// After delivering the fresh acked copy `s`: if its delivery wrote rows
/// (the store had `ops_before` pending ops), the last-seen row joins them in
/// the same batch, so a resend after this node restarts is known too.
pub(crate) fn delivered(shard: &Shard, s: PeerStamp, ops_before: usize) {
    if shard.store.is_persistent() && shard.store.pending_ops() != ops_before {
        shard
            .store
            .put_peer_seen(s.node, s.stamp.stream, s.stamp.id)
            .detach();
        if let Some(o) = s.origin {
            origin::stored(shard, s.node, o);
        }
    }
}

/// Seeds this shard's last-seen acked copies from its store (at start,
/// before any mesh item or link frame is handled).
pub(crate) fn seed(shard: &Shard) {
    let rows = shard.store.take_peer_seen();
    if let Some(node) = &shard.cluster {
        let mut seen = node.seen.borrow_mut();
        for (n, stream, id) in rows {
            seen.insert(n, Stamp { stream, id });
        }
        let sessions = seen
            .keys()
            .filter(|k| copy_acks::is_session_key(**k))
            .count();
        node.session_stamps_add(sessions as i64);
    }
    origin::seed(shard);
}

/// A confirmation (or refusal) for `token` that no local publish waits for:
/// one of this node's shards answered for a copy another node sent (shard 0).
pub(crate) fn copy_answered(
    shard: &Rc<Shard>,
    token: u64,
    refused: Option<ringmq_codec::ReasonCode>,
) {
    if let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.as_ref()) {
        hub.durable.answered(hub, token, refused);
    }
}

impl Node {
    pub(crate) fn has_session_stamps(&self) -> bool {
        self.session_stamps.get() > 0
    }

    /// Session rows in this shard's stamp table: `delta` more (or fewer);
    /// the node's total is the gauge `stamp_rows` (`handover.moves`).
    pub(crate) fn session_stamps_add(&self, delta: i64) {
        let now = self.session_stamps.get() as i64 + delta;
        self.session_stamps.set(now.max(0) as usize);
        let g = &self.stats.handover.stamp_rows;
        if delta >= 0 {
            g.fetch_add(delta as u64, std::sync::atomic::Ordering::Relaxed);
        } else {
            g.fetch_sub(delta.unsigned_abs(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The slot of node `id`'s live link, if it has one.
    pub(crate) fn slot_of(&self, id: u64) -> Option<Slot> {
        self.peer_slots
            .borrow()
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, s)| *s)
    }

    /// The node id of link slot `slot`.
    pub(crate) fn node_of(&self, slot: Slot) -> Option<u64> {
        self.peer_slots
            .borrow()
            .iter()
            .find(|(_, s)| *s == slot)
            .map(|(n, _)| *n)
    }

    /// The nodes linked now (shard 0 after a membership change).
    pub(crate) fn set_slots(&self, peers: Vec<(u64, Slot)>) {
        let mut set = ShardSet::new();
        for (_, s) in &peers {
            set.insert(*s);
        }
        *self.slots.borrow_mut() = set;
        *self.peer_slots.borrow_mut() = peers;
    }

    pub(crate) fn new(shard_id: usize, init: &Init) -> Self {
        Node {
            routes: RefCell::new(NodeRoutes::new()),
            hub: (shard_id == 0).then(|| {
                Rc::new(hub::Hub::new(
                    init.cfg.clone(),
                    init.stats.clone(),
                    init.controls.clone(),
                    init.floors.clone(),
                ))
            }),
            scratch: RefCell::default(),
            seen: RefCell::default(),
            session_stamps: Default::default(),
            slots: RefCell::new({
                let mut s = ShardSet::new();
                for slot in 1..=init.cfg.peers.len() {
                    s.insert(slot as Slot);
                }
                s
            }),
            peer_slots: RefCell::new(
                init.cfg
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.id, i as Slot + 1))
                    .collect(),
            ),
            handover: Default::default(),
            origins: Default::default(),
            stats: init.stats.clone(),
            node_id: init.cfg.node_id,
            // Above any count of an earlier run of this node (a count grows by
            // one per publish, far slower than the clock's nanoseconds).
            origin_seq: std::cell::Cell::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            handled: RefCell::default(),
            stubs: Default::default(),
            merges: Default::default(),
            copy_acks: Default::default(),
            ghosts: Default::default(),
            shares: Default::default(),
            keeps: Default::default(),
            pending: init.pending.clone(),
            down_after: init.cfg.node_down_after,
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
/// members; returns the groups given to another node (this node skips them)
/// and, with `token` (a QoS 1/2 publish under durability `sync`), how many
/// node answers will confirm `token` (acked copies, `acks.rs`).
/// With `held`, the copies for other nodes are appended to it instead (as
/// items for shard 0, to send once a prepare commit is durable and in
/// order behind the session's earlier held copies: `confirm.rs`).
pub(crate) fn forward(
    shard: &Rc<Shard>,
    p: &Publish,
    token: Option<u64>,
    mut held: Option<&mut Vec<(usize, MeshItem)>>,
    origin: Option<Origin>,
) -> (Vec<TopicFilter>, usize) {
    let Some(node) = &shard.cluster else {
        return (Vec::new(), 0);
    };
    if is_sys(p.topic.as_str()) {
        return (Vec::new(), 0);
    }
    let token = token.filter(|_| p.qos != ringmq_codec::QoS::AtMostOnce);
    let elsewhere = forward_shared(shard, node, p, token, &mut held);
    let n = forward_plain(shard, node, p, token, origin, &mut held);
    let answers = if token.is_some() {
        n + elsewhere.len()
    } else {
        0
    };
    (elsewhere, answers)
}

type Held<'a> = Option<&'a mut Vec<(usize, MeshItem)>>;

/// Hands a cluster item to shard 0: now (`hub` on this shard, or the mesh),
/// or into `held` for later.
fn to_hub(shard: &Rc<Shard>, held: &mut Held<'_>, item: Item, now: impl FnOnce(&hub::Hub)) {
    match (
        held.as_deref_mut(),
        &shard.cluster.as_ref().and_then(|n| n.hub.clone()),
    ) {
        (Some(h), _) => h.push((0, MeshItem::Cluster(Box::new(item)))),
        (None, Some(hub)) => now(hub),
        (None, None) => shard.mesh.push(0, MeshItem::Cluster(Box::new(item))),
    }
}

fn forward_shared(
    shard: &Rc<Shard>,
    node: &Node,
    p: &Publish,
    token: Option<u64>,
    held: &mut Held<'_>,
) -> Vec<TopicFilter> {
    let mut picks = Vec::new();
    node.routes
        .borrow_mut()
        .match_shared(p.topic.as_str(), &mut picks);
    let mut elsewhere = Vec::new();
    for t in picks.into_iter().filter(|t| t.shard != routes::THIS_NODE) {
        let item = Item::ForwardShared {
            slot: t.shard,
            group: t.filter.clone(),
            publish: p.clone(),
            token,
        };
        to_hub(shard, held, item, |hub| {
            hub.send_shared(shard, t.shard, &t.filter, p, token.map(|t| (0, t)))
        });
        elsewhere.push(t.filter);
    }
    elsewhere
}

/// Returns how many nodes get an acked copy (with `token`).
fn forward_plain(
    shard: &Rc<Shard>,
    node: &Node,
    p: &Publish,
    token: Option<u64>,
    origin: Option<Origin>,
    held: &mut Held<'_>,
) -> usize {
    let mut to = node.scratch.borrow_mut();
    to.clear();
    node.routes.borrow().match_nodes(p.topic.as_str(), &mut to);
    let acked = if token.is_some() { to.len() } else { 0 };
    if p.retain {
        // Every node keeps the retained message; only those with subscribers
        // on it are waited for (the copy of the others is a plain one).
        let mut rest = ShardSet::new();
        for slot in node.slots.borrow().iter() {
            if token.is_none() || !to.contains(slot) {
                rest.insert(slot);
            }
        }
        if token.is_none() {
            to.clear();
        }
        send_to(shard, &rest, p, None, origin, held);
    }
    if !to.is_empty() {
        send_to(shard, &to, p, token, origin, held);
    }
    acked
}

fn send_to(
    shard: &Rc<Shard>,
    to: &ShardSet,
    p: &Publish,
    token: Option<u64>,
    origin: Option<Origin>,
    held: &mut Held<'_>,
) {
    if to.is_empty() {
        return;
    }
    let item = Item::Forward {
        to: to.clone(),
        publish: p.clone(),
        token,
        origin,
    };
    to_hub(shard, held, item, |hub| {
        hub.send_publish(shard, to, p, token.map(|t| (0, t)), origin)
    });
}

/// This node's replica of `topic`'s retained message was set or (`deleted`)
/// deleted (shard 0 keeps recent deletions for nodes that were away).
pub(crate) fn retained_changed(shard: &Shard, topic: &ringmq_codec::TopicName, deleted: bool) {
    if let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.as_ref()) {
        retained::changed(hub, topic, deleted);
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
        Item::Forward {
            to,
            publish,
            token,
            origin,
        } => {
            if let Some(hub) = &node.hub {
                hub.send_publish(shard, &to, &publish, token.map(|t| (from, t)), origin);
            }
        }
        Item::ForwardShared {
            slot,
            group,
            publish,
            token,
        } => {
            if let Some(hub) = &node.hub {
                hub.send_shared(shard, slot, &group, &publish, token.map(|t| (from, t)));
            }
        }
        Item::Origin {
            nodes,
            group,
            publish,
            token,
            origin: o,
            at,
            patient,
        } => {
            if let Some(hub) = &node.hub {
                let w = acks::Waiter { shard: from, token };
                let at = at.map(Origin::at);
                let copy = (group.as_ref(), at);
                origin::send(shard, hub, &nodes, copy, &publish, w, o, patient);
            }
        }
        Item::ForgetOrigins { shard: s, list } => {
            if let Some(hub) = &node.hub {
                origin::send_forgets(hub, s, list);
            }
        }
        Item::OriginsDone {
            node: n,
            shard: s,
            nonces,
        } => origin::done(shard, n, s, &nonces),
        Item::OriginFloor { node: n, floors } => origin::floor(shard, n, &floors),
        Item::Slots(s) => node.set_slots(s),
        Item::Barrier(t) => shard
            .mesh
            .push(from, MeshItem::Cluster(Box::new(Item::BarrierAck(t)))),
        Item::BarrierAck(t) => {
            if let Some(hub) = &node.hub {
                hub.barrier_ack(t);
            }
        }
        Item::Move(m) => stub::on_item(shard, from, m),
        Item::Ghost(m) => ghost::on_item(shard, m),
        Item::ShareMove(m) => share_move::on_item(shard, m),
        Item::KeepDone(client) => moving::drop_keep(shard, &client),
        item => handover::on_item(shard, from, item),
    }
}
