//! Routes at node level: which nodes have subscribers on which filters.
//!
//! Every shard holds a [`NodeRoutes`]: a router whose "shards" are node slots
//! (slot `i + 1` is the i-th peer; slot 0 is never used), so a publish finds
//! its target nodes with the same trie walk it uses for shards. Shard 0, which
//! runs the links, also keeps the [`RouteBook`]: how many local shards have
//! each filter (so only a node's first subscriber and its last unsubscribe
//! change what peers are told) and each peer's filter set as last told (to
//! apply a full sync as a diff and to check digests).

use crate::router::{Router, ShardSet, SharedTarget};
use ringmq_codec::TopicFilter;
use std::collections::{HashMap, HashSet};

/// Slot of a peer in a [`NodeRoutes`] (peer index + 1).
pub type Slot = u16;

/// The slot of this node itself: share groups only (plain filters are the shards' router's).
pub const THIS_NODE: Slot = 0;

/// The node-level router replica of one shard.
pub struct NodeRoutes {
    router: Router,
}

impl Default for NodeRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeRoutes {
    pub fn new() -> Self {
        // The router ignores its own "shard": an id no slot reaches (slots
        // grow as nodes join at run time and are never reused).
        let sentinel = u16::MAX - 1;
        NodeRoutes {
            router: Router::new(sentinel, sentinel + 1),
        }
    }

    /// For every share group with members on some node matching `topic`, the node to
    /// deliver to (round robin over the nodes with members, this node included).
    pub fn match_shared(&mut self, topic: &str, out: &mut Vec<SharedTarget>) {
        self.router.match_shared(topic, out);
    }

    /// Applies one change told by peer `slot`.
    pub fn apply(&mut self, slot: Slot, filter: &TopicFilter, add: bool) {
        if add {
            self.router.add_remote(filter, slot);
        } else {
            self.router.remove_remote(filter, slot);
        }
    }

    /// Adds to `out` the slots of peers with a subscriber matching `topic`.
    pub fn match_nodes(&self, topic: &str, out: &mut ShardSet) {
        self.router.match_shards(topic, out);
    }
}

/// What changed in a node's route set.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// Shard 0's ledger of routes, this node's and its peers'.
#[derive(Default)]
pub struct RouteBook {
    /// Filter -> shards of this node with a subscriber on it.
    local: HashMap<TopicFilter, u32>,
    /// Sequence number of this node's last route change.
    pub seq: u64,
    /// Each peer's filters as last told, by slot.
    peers: HashMap<Slot, HashSet<TopicFilter>>,
}

impl RouteBook {
    /// A local shard gained (`add`) its first or lost its last subscriber on `filter`.
    /// Returns the node-level change to announce, if any (and bumps `seq`).
    pub fn local_change(&mut self, filter: &TopicFilter, add: bool) -> Option<Change> {
        if add {
            let n = self.local.entry(filter.clone()).or_insert(0);
            *n += 1;
            (*n == 1).then(|| {
                self.seq += 1;
                Change::Add
            })
        } else {
            let n = self.local.get_mut(filter)?;
            *n -= 1;
            if *n > 0 {
                return None;
            }
            self.local.remove(filter);
            self.seq += 1;
            Some(Change::Remove)
        }
    }

    /// This node's filters (for a full sync).
    pub fn local_filters(&self) -> Vec<TopicFilter> {
        self.local.keys().cloned().collect()
    }

    /// Digest of this node's filters.
    pub fn local_digest(&self) -> (u32, u64) {
        super::frame::digest(self.local.keys())
    }

    /// Digest of what peer `slot` told us.
    pub fn peer_digest(&self, slot: Slot) -> (u32, u64) {
        super::frame::digest(self.peers.get(&slot).into_iter().flatten())
    }

    /// Number of filters peer `slot` has.
    pub fn peer_len(&self, slot: Slot) -> usize {
        self.peers.get(&slot).map_or(0, |s| s.len())
    }

    /// Peer `slot` changed one filter. Returns whether it is a change (a
    /// repeated add or a remove of an unknown filter is not).
    pub fn peer_change(&mut self, slot: Slot, filter: &TopicFilter, add: bool) -> bool {
        let set = self.peers.entry(slot).or_default();
        if add {
            set.insert(filter.clone())
        } else {
            set.remove(filter)
        }
    }

    /// Peer `slot` left the cluster: its filters, to remove.
    pub fn forget_peer(&mut self, slot: Slot) -> Vec<TopicFilter> {
        self.peers
            .remove(&slot)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Peer `slot` sent its whole set: returns the changes that make our copy equal to it.
    pub fn peer_sync(&mut self, slot: Slot, filters: Vec<TopicFilter>) -> Vec<(TopicFilter, bool)> {
        let new: HashSet<TopicFilter> = filters.into_iter().collect();
        let old = self.peers.remove(&slot).unwrap_or_default();
        let mut changes: Vec<(TopicFilter, bool)> = old
            .iter()
            .filter(|f| !new.contains(*f))
            .map(|f| (f.clone(), false))
            .collect();
        changes.extend(
            new.iter()
                .filter(|f| !old.contains(*f))
                .map(|f| (f.clone(), true)),
        );
        self.peers.insert(slot, new);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::try_from(s).unwrap()
    }

    #[test]
    fn only_first_and_last_shard_change_the_node() {
        let mut b = RouteBook::default();
        assert_eq!(b.local_change(&f("a/+"), true), Some(Change::Add));
        assert_eq!(b.local_change(&f("a/+"), true), None);
        assert_eq!(b.local_change(&f("a/+"), false), None);
        assert_eq!(b.local_change(&f("a/+"), false), Some(Change::Remove));
        assert_eq!(b.local_change(&f("a/+"), false), None);
        assert_eq!(b.seq, 2);
    }

    #[test]
    fn a_sync_applies_as_a_diff() {
        let mut b = RouteBook::default();
        assert!(b.peer_change(1, &f("x"), true));
        assert!(!b.peer_change(1, &f("x"), true));
        assert!(b.peer_change(1, &f("y"), true));
        let mut c = b.peer_sync(1, vec![f("y"), f("z")]);
        c.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(c, vec![(f("x"), false), (f("z"), true)]);
        assert_eq!(
            b.peer_digest(1),
            super::super::frame::digest([f("z"), f("y")].iter())
        );
    }

    #[test]
    fn node_routes_find_target_nodes() {
        let mut r = NodeRoutes::new();
        r.apply(THIS_NODE, &f("$share/g/a/b"), true);
        r.apply(2, &f("$share/g/a/+"), true);
        let mut picks = Vec::new();
        for _ in 0..4 {
            r.match_shared("a/b", &mut picks);
        }
        // Two groups (by inner filter), each picked once per publish.
        assert_eq!(picks.len(), 8);
        r.apply(1, &f("a/#"), true);
        r.apply(3, &f("a/b"), true);
        r.apply(2, &f("c"), true);
        let mut s = ShardSet::new();
        r.match_nodes("a/b", &mut s);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 3]);
        r.apply(1, &f("a/#"), false);
        s.clear();
        r.match_nodes("a/b", &mut s);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3]);
    }
}
