//! Exactly once across nodes and their crashes: inbound QoS 2 under
//! durability `sync` from a persistent session, with subscribers on other
//! nodes (docs/cluster-data-plane.md, "Exactly once across a crash of the
//! publisher's node"; docs/storage.md, "Exactly once across shards").
//!
//! The publisher's node (A) treats each other node given an acked copy as
//! one more target of the prepare step `confirm.rs` runs for other shards:
//!
//! 1. the node copies are *held* with the shard copies ([`hold`]); the
//!    prepared row names the target nodes (`NodeTarget`, format 3) and is
//!    committed before any copy leaves;
//! 2. each node copy crosses as `AckedOrigin`: an acked copy (`acks.rs`)
//!    that also carries the message's key on A, `(A's shard, nonce)`, which
//!    is stored in the prepared row and so survives A's restart, where the
//!    link stream does not;
//! 3. a receiving shard on node B delivers it only if it has not delivered
//!    that `(A, shard, nonce)` before ([`first_time`]), and stores a node
//!    origin row `K(A, shard, nonce)` in the batch of the rows it wrote
//!    ([`stored`]), so a resend after *either* node restarted is known;
//! 4. once every target answered, A marks the row done, and after that
//!    commit tells the nodes `OriginsDone` ([`forget`]): B drops the keys.
//!
//! Recovery on A sends every prepared row's message again to all its target
//! nodes (A cannot know which stored it; B skips the ones it has), without
//! a deadline: the copy waits for its node like a durable outbox
//! ([`Item::Origin`]`{patient}`). A lost `OriginsDone` (A died after its
//! done mark, or the link broke) leaves keys on B: each time a link comes up
//! A sends its per-shard *floor* (`OriginFloor`: the oldest prepared row with
//! node targets found at its start, or the first nonce of this run, which
//! is at least the wall clock in ns so nonces never repeat across
//! restarts), and B forgets A's keys below it ([`floor`]).
//!
//! Test hook (test builds of the suite set it; documented in
//! docs/cluster-data-plane.md): `RINGMQ_TEST_CRASH=node-copy-prepared`
//! aborts the process when a prepare commit with node targets is durable,
//! before its node copies leave (`stub-copy-prepared`: the same when they
//! are a stub's copies only, `stub.rs`); `node-copy-durable` when a node answers
//! that such a copy is durable, before the done mark and PUBREC.

use super::acks::Waiter;
use super::frame::Frame;
use super::hub::Hub;
use super::link::Link;
use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::shard::Shard;
use crate::store::NodeTarget;
use bytes::Bytes;
use ringmq_codec::{Publish, TopicFilter};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A prepared QoS 2 message's key on its publisher's node: the shard that
/// prepared it and the nonce of its prepared row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub shard: u16,
    pub nonce: u64,
}

/// One shard's receiving side: the origin keys `(node, shard, nonce)` of
/// copies delivered here and not forgotten yet, each with whether a row
/// on disk holds it.
#[derive(Default)]
pub(crate) struct Delivered {
    keys: RefCell<HashMap<(u64, u16, u64), bool>>,
    /// The key of the acked copy being delivered on this shard (sending
    /// node, key): a merge holding it notes it (`merge::hold`).
    current: std::cell::Cell<Option<(u64, Origin)>>,
}

/// Runs `deliver` with `key` (sending node, key) as the key of the copy
/// being delivered on this shard.
pub(crate) fn delivering(shard: &Shard, key: Option<(u64, Origin)>, deliver: impl FnOnce()) {
    match (&shard.cluster, key) {
        (Some(n), Some(k)) => {
            let before = n.origins.current.replace(Some(k));
            deliver();
            n.origins.current.set(before);
        }
        _ => deliver(),
    }
}

/// The key of the acked copy being delivered on this shard, if it has one.
pub(crate) fn current(shard: &Shard) -> Option<(u64, Origin)> {
    shard.cluster.as_ref().and_then(|n| n.origins.current.get())
}

/// Copies recovery resends to a node that has no link yet (added at run
/// time): handed to its link when the membership brings it.
#[derive(Default)]
pub(crate) struct Unlinked {
    list: RefCell<Vec<(u64, Pending)>>,
}

pub(crate) struct Pending {
    group: Option<TopicFilter>,
    origin: Origin,
    mqtt: Bytes,
    waiter: Waiter,
}

/// Aborts the process at test crash point `point` when `RINGMQ_TEST_CRASH`
/// names it (read once).
pub(crate) fn crash_point(point: &str) {
    if crash_armed(point) {
        eprintln!("RINGMQ_TEST_CRASH: aborting at {point}");
        std::process::abort();
    }
}

/// Whether the test crash point `point` is armed (`RINGMQ_TEST_CRASH`).
pub(crate) fn crash_armed(point: &str) -> bool {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("RINGMQ_TEST_CRASH").ok());
    at.as_deref() == Some(point)
}

// ---- the publisher's node -----------------------------------------------------------------------

/// The node of peer `slot` (0 when it has no live link: refused when sent).
fn node_of(shard: &Shard, slot: Slot) -> u64 {
    shard
        .cluster
        .as_ref()
        .and_then(|n| {
            n.peer_slots
                .borrow()
                .iter()
                .find(|(_, s)| *s == slot)
                .map(|(id, _)| *id)
        })
        .unwrap_or(0)
}

/// A prepared message's held copies (`route_to`'s `held`): its acked node
/// copies become origin copies keyed `(this shard, nonce)`. Returns the
/// target nodes for the prepared row.
pub(crate) fn hold(shard: &Shard, items: &mut [(usize, MeshItem)], nonce: u64) -> Vec<NodeTarget> {
    let origin = Origin {
        shard: shard.id as u16,
        nonce,
    };
    let mut targets = Vec::new();
    for (_, item) in items.iter_mut() {
        let MeshItem::Cluster(c) = item else {
            continue;
        };
        if let Item::Move(super::stub::Move::KeyedCopy { slot, .. }) = &**c {
            // A stub's copy for the session's new node: that node is a
            // target too (recovery resends the message to it, and it
            // delivers the copy once per key: `merge.rs`).
            targets.push(NodeTarget {
                node: node_of(shard, *slot),
                group: None,
            });
            continue;
        }
        let (nodes, group, publish, token, at) = match &mut **c {
            Item::Forward {
                to,
                publish,
                token: Some(t),
                origin: at,
            } => (
                to.iter().map(|s| node_of(shard, s)).collect::<Vec<_>>(),
                None,
                publish,
                *t,
                *at,
            ),
            Item::ForwardShared {
                slot,
                group,
                publish,
                token: Some(t),
            } => (
                vec![node_of(shard, *slot)],
                Some(group.clone()),
                publish,
                *t,
                None,
            ),
            _ => continue,
        };
        targets.extend(nodes.iter().map(|&node| NodeTarget {
            node,
            group: group.clone(),
        }));
        let publish = publish.clone();
        **c = Item::Origin {
            nodes,
            group,
            publish,
            token,
            origin,
            at,
            patient: false,
        };
    }
    targets
}

/// Whether `items` hold a node copy routed by the target node's own route
/// (test crash point `node-copy-prepared`: during a session move that is
/// after the new node installed the session and its routes reached here, so
/// the crash never lands before the install, a case `docs/cluster.md` lists
/// as open).
pub(crate) fn has_node_copies(items: &[(usize, MeshItem)]) -> bool {
    items
        .iter()
        .any(|(_, i)| matches!(i, MeshItem::Cluster(c) if matches!(**c, Item::Origin { .. })))
}

/// Whether `items` (a prepare's held copies) hold a stub's copy for a moved
/// session and no other node copy (test crash point `stub-copy-prepared`:
/// the new node gets the message through the stub only).
pub(crate) fn stub_copies_only(items: &[(usize, MeshItem)]) -> bool {
    let is = |i: &MeshItem, keyed: bool| match i {
        MeshItem::Cluster(c) => match &**c {
            Item::Move(super::stub::Move::KeyedCopy { .. }) => keyed,
            Item::Origin { .. } => !keyed,
            _ => false,
        },
        _ => false,
    };
    items.iter().any(|(_, i)| is(i, true)) && !items.iter().any(|(_, i)| is(i, false))
}

/// Recovery: sends prepared message `origin` again to `target` (patient:
/// no deadline, the node may still be starting), answering `token` on
/// this shard.
pub(crate) fn resend(
    shard: &Rc<Shard>,
    target: &NodeTarget,
    p: Publish,
    token: u64,
    origin: Origin,
) {
    let item = Item::Origin {
        nodes: vec![target.node],
        group: target.group.clone(),
        publish: p,
        token,
        origin,
        at: None,
        patient: true,
    };
    to_shard0(shard, item);
}

fn to_shard0(shard: &Rc<Shard>, item: Item) {
    if shard.id == 0 {
        super::on_item(shard, 0, item);
    } else {
        shard.mesh.push(0, MeshItem::Cluster(Box::new(item)));
    }
}

/// Shard 0: the origin copies of one message for `nodes`, answering
/// `waiter` (origin shard, token) per node.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send(
    shard: &Rc<Shard>,
    hub: &Hub,
    nodes: &[u64],
    (group, at): (Option<&TopicFilter>, Option<super::frame::OriginAt>),
    p: &Publish,
    waiter: Waiter,
    origin: Origin,
    patient: bool,
) {
    let mut b = bytes::BytesMut::new();
    super::frame::encode_publish(p, &mut b);
    // The PUBLISH bytes after the 5-byte frame header (none: not encodable, refused).
    let mqtt = (b.len() > 5).then(|| b.freeze().slice(5..));
    for &n in nodes {
        let Some(mqtt) = &mqtt else {
            let code = ringmq_codec::ReasonCode::ImplementationSpecificError;
            super::acks::answer(shard, waiter, Some(code));
            continue;
        };
        match hub.link_to(n) {
            Some(l) => {
                hub.durable
                    .send_origin(shard, hub, &l, (group, origin), at, mqtt, waiter, patient)
            }
            None if patient => hub.unlinked.list.borrow_mut().push((
                n,
                Pending {
                    group: group.cloned(),
                    origin,
                    mqtt: mqtt.clone(),
                    waiter,
                },
            )),
            // No link to that node (it left): refused like a copy it never answered.
            None => super::acks::answer(
                shard,
                waiter,
                Some(ringmq_codec::ReasonCode::ImplementationSpecificError),
            ),
        }
    }
}

/// A link to node `link.peer.id` now exists: recovery's copies waiting for it go to it.
pub(crate) fn linked(shard: &Rc<Shard>, hub: &Hub, link: &Rc<Link>) {
    let mine: Vec<Pending> = {
        let mut list = hub.unlinked.list.borrow_mut();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|(n, _)| *n == link.peer.id);
        *list = rest;
        mine.into_iter().map(|(_, p)| p).collect()
    };
    for p in mine {
        hub.durable.send_origin(
            shard,
            hub,
            link,
            (p.group.as_ref(), p.origin),
            None,
            &p.mqtt,
            p.waiter,
            true,
        );
    }
}

/// After the done marks of `list` (node, nonce) are durable on this shard:
/// their nodes may forget the keys.
pub(crate) fn forget(shard: &Rc<Shard>, list: Vec<(u64, u64)>) {
    if list.is_empty() {
        return;
    }
    to_shard0(
        shard,
        Item::ForgetOrigins {
            shard: shard.id as u16,
            list,
        },
    );
}

/// Shard 0: `OriginsDone` to each node of `list`, whose link is up (else
/// the floor sent at the next connect covers it).
pub(crate) fn send_forgets(hub: &Hub, from: u16, list: Vec<(u64, u64)>) {
    let mut by_node: HashMap<u64, Vec<u64>> = HashMap::new();
    for (node, nonce) in list {
        by_node.entry(node).or_default().push(nonce);
    }
    for (node, nonces) in by_node {
        if let Some(l) = hub.link_to(node).filter(|l| l.is_up()) {
            l.push_frame(&Frame::OriginsDone {
                shard: from,
                nonces,
            });
        }
    }
}

/// A link came up: this node's floors first (before any resent copy).
pub(crate) fn send_floor(hub: &Hub, link: &Link) {
    if !hub.floors.is_empty() {
        link.push_frame(&Frame::OriginFloor(hub.floors.clone()));
    }
}

// ---- the receiving node -------------------------------------------------------------------------

/// Whether this shard has not delivered node `node`'s message `o` yet; it
/// counts as delivered from now on.
pub(crate) fn first_time(shard: &Shard, node: u64, o: Origin) -> bool {
    let Some(n) = &shard.cluster else {
        return true;
    };
    let mut keys = n.origins.keys.borrow_mut();
    let k = (node, o.shard, o.nonce);
    if keys.contains_key(&k) {
        return false;
    }
    keys.insert(k, false);
    true
}

/// Delivering node `node`'s message `o` wrote rows here: its origin row
/// joins them (same batch, one transaction).
pub(crate) fn stored(shard: &Shard, node: u64, o: Origin) {
    if let Some(n) = &shard.cluster {
        if let Some(on_disk) = n
            .origins
            .keys
            .borrow_mut()
            .get_mut(&(node, o.shard, o.nonce))
        {
            if !*on_disk {
                *on_disk = true;
                shard.store.put_node_origin(node, o.shard, o.nonce).detach();
            }
        }
    }
}

/// Node `node` is done with these messages of its shard `from`.
pub(crate) fn done(shard: &Shard, node: u64, from: u16, nonces: &[u64]) {
    let Some(n) = &shard.cluster else { return };
    let mut keys = n.origins.keys.borrow_mut();
    for &nonce in nonces {
        if keys.remove(&(node, from, nonce)) == Some(true) {
            shard.store.forget_node_origin(node, from, nonce).detach();
        }
    }
}

/// Node `node` needs none of its keys below these per-shard floors.
pub(crate) fn floor(shard: &Shard, node: u64, floors: &[(u16, u64)]) {
    let Some(n) = &shard.cluster else { return };
    let mut keys = n.origins.keys.borrow_mut();
    let below = |&(kn, ks, nonce): &(u64, u16, u64)| {
        kn == node && floors.iter().any(|&(s, f)| s == ks && nonce < f)
    };
    let gone: Vec<((u64, u16, u64), bool)> = keys
        .iter()
        .filter(|(k, _)| below(k))
        .map(|(k, d)| (*k, *d))
        .collect();
    for (k, on_disk) in gone {
        keys.remove(&k);
        if on_disk {
            shard.store.forget_node_origin(k.0, k.1, k.2).detach();
        }
    }
}

/// Shard 0, from the link of node `node`: applied here and on every shard.
pub(crate) fn on_done(shard: &Shard, node: u64, from: u16, nonces: Vec<u64>) {
    done(shard, node, from, &nonces);
    shard.mesh.broadcast(|| {
        MeshItem::Cluster(Box::new(Item::OriginsDone {
            node,
            shard: from,
            nonces: nonces.clone(),
        }))
    });
}

/// Shard 0, from the link of node `node`: applied here and on every shard.
pub(crate) fn on_floor(shard: &Shard, node: u64, floors: Vec<(u16, u64)>) {
    floor(shard, node, &floors);
    shard.mesh.broadcast(|| {
        MeshItem::Cluster(Box::new(Item::OriginFloor {
            node,
            floors: floors.clone(),
        }))
    });
}

/// Seeds this shard's delivered keys from its store (at start).
pub(crate) fn seed(shard: &Shard) {
    let rows = shard.store.take_node_origins();
    if !rows.is_empty() {
        // Keys a node has not said it is done with (normally none after a clean run).
        tracing::info!(
            shard = shard.id,
            keys = rows.len(),
            "cluster: origin keys of other nodes' prepared QoS 2 messages restored"
        );
    }
    if let Some(n) = &shard.cluster {
        let mut keys = n.origins.keys.borrow_mut();
        for (node, s, nonce) in rows {
            keys.insert((node, s, nonce), true);
        }
    }
}
