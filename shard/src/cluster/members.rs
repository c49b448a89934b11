//! The node links follow the cluster's membership: a node added at run time
//! (`ctl cluster add-node`, `--cluster-join`) gets a link, its routes and
//! the retained messages; a node removed loses its link and its routes.
//!
//! The broker watches the metadata layer's membership and sends the other
//! members' link addresses to shard 0 ([`PeerSetter`], `Control::ClusterPeers`)
//! whenever they change. Slots are never reused: a new node takes the next
//! one, a removed node's link stays in the list, retired.

use super::config::Peer;
use super::hub::{apply_everywhere, Hub};
use super::link::Link;
use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::shard::Shard;
use std::rc::Rc;

/// Sends the cluster's other members to the node links (from any thread).
#[derive(Clone)]
pub struct PeerSetter {
    shard0: flume::Sender<crate::control::Control>,
}

impl PeerSetter {
    pub(crate) fn new(shard0: flume::Sender<crate::control::Control>) -> Self {
        PeerSetter { shard0 }
    }

    /// The other members and where their links listen, as of now.
    pub fn set(&self, peers: Vec<Peer>) {
        let _ = self
            .shard0
            .send(crate::control::Control::ClusterPeers(peers));
    }
}

/// Shard 0: links to the nodes in `peers` not linked yet, retires the links
/// of linked nodes not in it (a node whose address changed gets a new link).
pub(crate) fn set_peers(shard: &Rc<Shard>, peers: Vec<Peer>) {
    let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) else {
        return;
    };
    let me = hub.cfg.node_id;
    let live = hub.live();
    let mut changed = false;
    // A node whose address changed keeps its ledger and outbox on the new link.
    let mut carried = std::collections::HashMap::new();
    for l in live.iter().filter(|l| !peers.contains(&l.peer)) {
        let stays = peers.iter().any(|p| p.id == l.peer.id);
        retire(shard, &hub, l, stays);
        if stays {
            carried.insert(l.peer.id, l.clone());
        }
        changed = true;
    }
    for p in peers.into_iter().filter(|p| p.id != me) {
        if live.iter().any(|l| l.peer == p) {
            continue;
        }
        let slot = hub.links.borrow().len() as Slot + 1;
        let stats = hub.stats.add(p.id);
        tracing::info!(peer = p.id, addr = %p.link_addr, "node link added (cluster membership)");
        let l = Rc::new(Link::new(slot, p, me, hub.cfg.link_queue_bytes, stats));
        if let Some(old) = carried.remove(&l.peer.id) {
            old.acks.carry_to(&l.acks);
        }
        super::outbox::adopt(&hub, &l);
        hub.links.borrow_mut().push(l.clone());
        hub.run_link(shard, &l);
        super::origin::linked(shard, &hub, &l);
        changed = true;
    }
    if changed {
        let slots: Vec<(u64, Slot)> = hub.live().iter().map(|l| (l.peer.id, l.slot)).collect();
        if let Some(n) = &shard.cluster {
            n.set_slots(slots.clone());
        }
        shard
            .mesh
            .broadcast(|| MeshItem::Cluster(Box::new(Item::Slots(slots.clone()))));
    }
}

/// The node of `l` left: its link closes for good, its routes go from every
/// shard, the publishes waiting for its answer are refused and its outbox
/// dropped; unless it `stays` (only its address changed: the new link takes them).
fn retire(shard: &Rc<Shard>, hub: &Rc<Hub>, l: &Rc<Link>, stays: bool) {
    tracing::info!(peer = l.peer.id, "node link removed (cluster membership)");
    l.retired.set(true);
    l.close();
    l.tasks.borrow_mut().clear();
    let gone = hub.book.borrow_mut().forget_peer(l.slot);
    for f in gone {
        if !stays {
            super::outbox::route_told(shard, l, &f, false);
        }
        apply_everywhere(shard, l.slot, f, false);
    }
    if !stays {
        hub.durable.abandon(shard, l);
    }
    hub.stats.remove(l.peer.id);
    // SUBACKs no longer wait for it.
    hub.check_waiters();
}
