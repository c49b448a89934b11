//! The router replica each shard holds: which shards and which local sessions a PUBLISH goes to.
//!
//! Three tries keyed by topic level (`router/trie.rs`):
//! - **remote** (global view): filter -> subscriber count per shard, kept in step by the lead
//!   broadcasting subscription changes ([`Router::add_remote`]); [`Router::match_shards`].
//! - **local**: filter -> this shard's sessions ([`Router::subscribe_local`]);
//!   [`Router::match_local`] merges overlapping subscriptions per session (`router/local.rs`).
//! - **shared**: `$share/{group}/{filter}` keyed by `{filter}`, groups with member counts on
//!   every shard and this shard's members (`router/shared.rs`); [`Router::match_shared`] on the
//!   publisher's shard, [`Router::pick_shared_local`] on the target shard.
//!
//! Plain data, `!Send`-friendly, no I/O. Matching allocates nothing once warm.

mod children;
mod local;
mod shardset;
mod shared;
mod trie;

use ringmq_codec::{SubscriptionOptions, TopicFilter};
use smallvec::SmallVec;

pub use local::{Match, MatchScratch, PublishInfo};
pub use shardset::ShardSet;

use local::SubList;
use shared::SharedGroups;
use trie::{Payload, Trie};

/// Index of a shard (executor).
pub type ShardId = u16;
/// Index into the owning shard's session slab (shard-local).
pub type SessionId = u32;

/// One subscription of a session of this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSub {
    pub session: SessionId,
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier given in the SUBSCRIBE, if any.
    pub subscription_id: Option<u32>,
    /// The ACL must be asked per delivered topic (the filter is not wholly
    /// readable by its session); false without an ACL.
    pub acl_check: bool,
}

/// A shared-subscription delivery chosen on the publisher's shard: send the message to `shard`
/// naming `filter` (the full `$share/{group}/{filter}`); that shard calls
/// [`Router::pick_shared_local`] with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedTarget {
    pub shard: ShardId,
    pub filter: TopicFilter,
}

/// Subscriber count per shard on one filter (global view).
#[derive(Default)]
struct ShardCounts(SmallVec<[(ShardId, u32); 2]>);

impl Payload for ShardCounts {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ShardCounts {
    fn add(&mut self, shard: ShardId) {
        match self.0.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, n)) => *n += 1,
            None => self.0.push((shard, 1)),
        }
    }

    fn remove(&mut self, shard: ShardId) {
        if let Some(i) = self.0.iter().position(|(s, _)| *s == shard) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }
}

/// The router replica of one shard.
pub struct Router {
    this_shard: ShardId,
    shards: u16,
    remote: Trie<ShardCounts>,
    local: Trie<SubList>,
    shared: Trie<SharedGroups>,
    local_subs: usize,
}

impl Router {
    pub fn new(this_shard: ShardId, shards: u16) -> Self {
        assert!(this_shard < shards, "shard {this_shard} out of {shards}");
        Router {
            this_shard,
            shards,
            remote: Trie::default(),
            local: Trie::default(),
            shared: Trie::default(),
            local_subs: 0,
        }
    }

    pub fn this_shard(&self) -> ShardId {
        self.this_shard
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    // ---- global view -------------------------------------------------------------------------

    /// Another shard gained a subscriber on `filter` (plain or `$share/...`). Count-based: call
    /// once per broadcast received. Calls for this shard are ignored: `subscribe_local` keeps
    /// this shard's entry, so the lead may broadcast to every shard including itself.
    pub fn add_remote(&mut self, filter: &TopicFilter, shard: ShardId) {
        if shard == self.this_shard {
            return;
        }
        self.add_global(filter, shard);
    }

    /// Another shard lost a subscriber on `filter`; the inverse of [`Router::add_remote`].
    pub fn remove_remote(&mut self, filter: &TopicFilter, shard: ShardId) {
        if shard == self.this_shard {
            return;
        }
        self.remove_global(filter, shard);
    }

    fn add_global(&mut self, filter: &TopicFilter, shard: ShardId) {
        match filter.shared() {
            Some((group, inner)) => {
                let id = self.shared.find_or_insert(inner);
                self.shared
                    .value_mut(id)
                    .get_or_insert(group, filter)
                    .add_weight(shard, 1);
            }
            None => {
                let id = self.remote.find_or_insert(filter.as_str());
                self.remote.value_mut(id).add(shard);
            }
        }
    }

    fn remove_global(&mut self, filter: &TopicFilter, shard: ShardId) {
        match filter.shared() {
            Some((group, inner)) => {
                let Some(id) = self.shared.find(inner) else {
                    return;
                };
                let groups = self.shared.value_mut(id);
                if let Some(g) = groups.get_mut(group) {
                    g.add_weight(shard, -1);
                }
                groups.retain_nonempty();
                self.shared.prune(inner);
            }
            None => {
                let Some(id) = self.remote.find(filter.as_str()) else {
                    return;
                };
                self.remote.value_mut(id).remove(shard);
                self.remote.prune(filter.as_str());
            }
        }
    }

    /// Adds to `out` every shard (this one included) with a non-shared subscription matching
    /// `topic`. Does not clear `out`.
    pub fn match_shards(&self, topic: &str, out: &mut ShardSet) {
        self.remote.for_each_match(topic, |_, counts| {
            for &(shard, _) in &counts.0 {
                out.insert(shard);
            }
        });
    }

    /// For every share group with a filter matching `topic`, picks the shard to deliver to
    /// (smooth weighted round robin by member count) and appends it to `out` (not cleared).
    /// Allocation-free once `out` has grown (the filter is a refcounted clone).
    pub fn match_shared(&mut self, topic: &str, out: &mut Vec<SharedTarget>) {
        if self.shared.node_count() == 1 {
            return; // no share group anywhere: skip the walk
        }
        let mut nodes: SmallVec<[trie::NodeId; 8]> = SmallVec::new();
        self.shared.for_each_match(topic, |id, v| {
            if !v.is_empty() {
                nodes.push(id)
            }
        });
        for id in nodes {
            for g in self.shared.value_mut(id).groups.iter_mut() {
                if let Some(shard) = g.pick_shard() {
                    out.push(SharedTarget {
                        shard,
                        filter: g.filter.clone(),
                    });
                }
            }
        }
    }

    // ---- local view --------------------------------------------------------------------------

    /// Subscribes a session of this shard. Subscribing the same filter again replaces the
    /// options and identifier [MQTT-3.8.4-3]. Returns true when the lead must broadcast
    /// `add_remote(filter, this_shard)`: for a plain filter, when it is the first subscriber on
    /// this shard; for `$share/...`, for every new member (weights are member counts).
    pub fn subscribe_local(&mut self, filter: &TopicFilter, sub: LocalSub) -> bool {
        match filter.shared() {
            Some((group, inner)) => {
                let id = self.shared.find_or_insert(inner);
                let g = self.shared.value_mut(id).get_or_insert(group, filter);
                let new = g.members.upsert(sub);
                if new {
                    g.add_weight(self.this_shard, 1);
                    self.local_subs += 1;
                }
                new
            }
            None => {
                let id = self.local.find_or_insert(filter.as_str());
                let list = self.local.value_mut(id);
                let first = list.upsert(sub) && {
                    self.local_subs += 1;
                    list.len() == 1
                };
                if first {
                    self.add_global(filter, self.this_shard);
                }
                first
            }
        }
    }

    /// Unsubscribes a session of this shard. `None` if it was not subscribed; `Some(true)` when
    /// the lead must broadcast `remove_remote(filter, this_shard)` (the mirror of
    /// [`Router::subscribe_local`]'s return).
    pub fn unsubscribe_local(&mut self, filter: &TopicFilter, session: SessionId) -> Option<bool> {
        match filter.shared() {
            Some((group, inner)) => {
                let id = self.shared.find(inner)?;
                let groups = self.shared.value_mut(id);
                let g = groups.get_mut(group)?;
                g.members.remove(session)?;
                g.add_weight(self.this_shard, -1);
                groups.retain_nonempty();
                self.shared.prune(inner);
                self.local_subs -= 1;
                Some(true)
            }
            None => {
                let id = self.local.find(filter.as_str())?;
                let list = self.local.value_mut(id);
                list.remove(session)?;
                let last = list.len() == 0;
                self.local.prune(filter.as_str());
                self.local_subs -= 1;
                if last {
                    self.remove_global(filter, self.this_shard);
                }
                Some(last)
            }
        }
    }

    /// This shard's sessions matching `topic`, one entry per session (see [`Match`] for the
    /// merge), for a publish with no local publisher and RETAIN 0.
    pub fn match_local<'a>(&self, topic: &str, scratch: &'a mut MatchScratch) -> &'a [Match] {
        self.match_local_with(topic, PublishInfo::default(), scratch)
    }

    /// [`Router::match_local`] knowing the publisher (No Local [MQTT-3.8.3-3]) and the RETAIN
    /// flag (Retain As Published [MQTT-3.3.1-12/13]).
    pub fn match_local_with<'a>(
        &self,
        topic: &str,
        info: PublishInfo,
        scratch: &'a mut MatchScratch,
    ) -> &'a [Match] {
        scratch.run(&self.local, topic, info)
    }

    /// On the target shard of a [`SharedTarget`]: the next local member of the group, in turn.
    /// `None` if the group has no member here any more (it left while the message was in
    /// flight); the lead may then pick again with `match_shared` or drop a QoS 0 message.
    pub fn pick_shared_local(&mut self, filter: &TopicFilter) -> Option<LocalSub> {
        let (group, inner) = filter.shared()?;
        let id = self.shared.find(inner)?;
        self.shared.value_mut(id).get_mut(group)?.pick_member()
    }

    /// Subscriptions of this shard's sessions (plain and shared), for `$SYS` and limits.
    pub fn local_subscription_count(&self) -> usize {
        self.local_subs
    }

    /// Trie nodes in use (remote, local, shared), for metrics and leak tests.
    pub fn node_counts(&self) -> (usize, usize, usize) {
        (
            self.remote.node_count(),
            self.local.node_count(),
            self.shared.node_count(),
        )
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_model;
