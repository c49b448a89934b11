//! Shared subscriptions of a session that moves between nodes. A node picks
//! one node per share group for each publish ([MQTT-4.8.2-3]: one member of
//! the group gets it). When the member on node A moves to B, A withdraws its
//! membership at the take, but a peer that has not applied the withdrawal yet
//! still picks A, and A has no member left: the copy would be lost.
//!
//! So while the session's stub runs (`stub.rs`), A forwards a group copy it
//! was picked for and has no member for to the new owner B, as a
//! `SessionCopy` of that session; B delivers it to the session's matching
//! shared subscription (`deliver` below), with that subscription's QoS and
//! identifier. Each copy still reaches one member: the publisher's node sent
//! it to A only, and A hands it to one session. A QoS 1/2 copy that reached A
//! under a confirm token (`--durability sync`) goes as an acked copy
//! (`copy_acks.rs`): A answers its sender only once B holds it durably.
//!
//! Why the stub's span is enough: A's withdrawal travels on each link ahead
//! of A's `Flush` to that peer, and the peer answers `Flushed` behind
//! everything it sent A, after it applied the withdrawal; the stub ends
//! after every `Flushed` (or its timeout). A peer that did not answer (its
//! link down) may still pick A later from stale routes: those group copies
//! are not covered by the ghost (`ghost.rs`, plain subscriptions only).

use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::session::Session;
use crate::shard::Shard;
use ringmq_codec::{Publish, QoS, TopicFilter};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Mesh items (home shard to shard 0).
pub enum Msg {
    /// A session with share-group memberships moved to peer `slot`.
    Start {
        client: Box<str>,
        slot: Slot,
        groups: Vec<TopicFilter>,
    },
}

struct Moved {
    slot: Slot,
    groups: Vec<TopicFilter>,
    at: Instant,
}

/// Shard 0: the share groups of sessions whose stub runs.
#[derive(Default)]
pub(crate) struct Shares {
    by_client: RefCell<HashMap<Box<str>, Moved>>,
}

/// At a cross-node take (home shard): the session's `$share/` filters.
pub(crate) fn shared_of(s: &Session) -> Vec<TopicFilter> {
    s.subs
        .keys()
        .filter(|f| f.shared().is_some())
        .cloned()
        .collect()
}

/// At a cross-node take (home shard): the session's groups are covered
/// until its stub ends.
pub(crate) fn start(shard: &Rc<Shard>, client: &str, slot: Slot, groups: Vec<TopicFilter>) {
    if groups.is_empty() {
        return;
    }
    let m = Msg::Start {
        client: client.into(),
        slot,
        groups,
    };
    if shard.id == 0 {
        on_item(shard, m);
    } else {
        shard
            .mesh
            .push(0, MeshItem::Cluster(Box::new(Item::ShareMove(m))));
    }
}

/// Shard 0: the stub of `client` ended (every peer flushed, or timed out).
pub(crate) fn end(shard: &Shard, client: &str) {
    if let Some(n) = &shard.cluster {
        n.shares.by_client.borrow_mut().remove(client);
    }
}

pub(crate) fn on_item(shard: &Rc<Shard>, m: Msg) {
    let Some(n) = &shard.cluster else { return };
    match m {
        Msg::Start {
            client,
            slot,
            groups,
        } => {
            let mut by = n.shares.by_client.borrow_mut();
            // Never more than the stubs' own bound.
            by.retain(|_, m| m.at.elapsed() < super::stub::STUB_FOR * 2);
            by.insert(
                client,
                Moved {
                    slot,
                    groups,
                    at: Instant::now(),
                },
            );
        }
    }
}

/// Shard 0: whether a session of `group` that is moving away is covered here.
pub(crate) fn covers(shard: &Shard, group: &TopicFilter) -> bool {
    shard.cluster.as_ref().is_some_and(|n| {
        n.shares
            .by_client
            .borrow()
            .values()
            .any(|m| m.groups.contains(group))
    })
}

/// Shard 0: a peer picked this node for `group` and no member of it is
/// here. True when a session of the group that is moving away takes it
/// (forwarded to its new node).
pub(crate) fn offer(shard: &Shard, group: &TopicFilter, p: &Publish) -> bool {
    let Some(n) = &shard.cluster else {
        return false;
    };
    let Some(hub) = &n.hub else { return false };
    let target = n
        .shares
        .by_client
        .borrow()
        .iter()
        .find(|(_, m)| m.groups.contains(group))
        .map(|(c, m)| (c.clone(), m.slot));
    let Some((client, slot)) = target else {
        return false;
    };
    // No origin: a group copy has no plain twin to merge with.
    let origin = super::frame::Origin {
        node: 0,
        shard: 0,
        seq: 0,
    };
    let stats = &n.stats.handover;
    if super::copy_acks::take(shard, slot, &client, origin, p) {
        // Acked: leaves at the end of this routing (`copy_acks.rs`).
        stats.shared_forwarded.fetch_add(1, Relaxed);
        return true;
    }
    if hub.session_copy_plain(slot, &client, origin, p) {
        stats.shared_forwarded.fetch_add(1, Relaxed);
        true
    } else {
        stats.forward_lost.fetch_add(1, Relaxed);
        false
    }
}

/// New node: how session `s` takes a forwarded copy that none of its plain
/// subscriptions matches: through a shared subscription matching it (QoS,
/// Retain As Published, identifier of that subscription).
pub(crate) fn deliver(s: &Session, p: &Publish) -> Option<(QoS, bool, SmallVec<[u32; 2]>)> {
    s.subs.iter().find_map(|(f, e)| {
        let (_, filter) = f.shared()?;
        crate::topic::matches(filter, p.topic.as_str()).then(|| {
            (
                p.qos.min(e.options.qos),
                e.options.retain_as_published && p.retain,
                e.subscription_id.into_iter().collect(),
            )
        })
    })
}
