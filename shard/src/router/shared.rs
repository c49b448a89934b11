//! Shared subscriptions `$share/{group}/{filter}` (v5 4.8.2): per filter node, the groups with
//! their member count on every shard (global view) and this shard's members (local view).
//!
//! Delivery is two-step, spreading messages round-robin over all members on all shards:
//! 1. the publisher's shard picks the target shard by smooth weighted round robin, weights being
//!    each shard's member count (`Router::match_shared`);
//! 2. the target shard picks its next local member in turn (`Router::pick_shared_local`).
//!
//! With every publisher shard running its own smooth WRR, each member receives 1/N of each
//! publisher shard's stream, interleaved evenly.

use ringmq_codec::TopicFilter;
use smallvec::SmallVec;

use super::local::SubList;
use super::trie::Payload;
use super::ShardId;

/// A shard's member count in a group and its smooth-WRR running weight.
#[derive(Clone, Copy, Debug)]
struct ShardWeight {
    shard: ShardId,
    members: u32,
    current: i64,
}

/// One share group on one filter.
pub(crate) struct SharedGroup {
    name: Box<str>,
    /// The full `$share/{group}/{filter}` the shards use to name the group to each other.
    pub(crate) filter: TopicFilter,
    weights: SmallVec<[ShardWeight; 2]>,
    pub(crate) members: SubList,
    next_member: usize,
}

impl SharedGroup {
    fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.members.len() == 0
    }

    /// Adds `delta` members on `shard` (global view, count-based).
    pub(crate) fn add_weight(&mut self, shard: ShardId, delta: i32) {
        match self.weights.iter().position(|w| w.shard == shard) {
            Some(i) => {
                let w = &mut self.weights[i];
                w.members = w.members.saturating_add_signed(delta);
                if w.members == 0 {
                    self.weights.remove(i);
                }
            }
            None if delta > 0 => {
                self.weights.push(ShardWeight {
                    shard,
                    members: delta as u32,
                    current: 0,
                });
            }
            None => {}
        }
    }

    /// Smooth weighted round robin over shards by member count (nginx's algorithm): over any
    /// window of `total` picks each shard is chosen exactly `members` times, evenly spread.
    pub(crate) fn pick_shard(&mut self) -> Option<ShardId> {
        let total: i64 = self.weights.iter().map(|w| i64::from(w.members)).sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, w) in self.weights.iter_mut().enumerate() {
            w.current += i64::from(w.members);
            if best.is_none_or(|(_, c)| w.current > c) {
                best = Some((i, w.current));
            }
        }
        let b = &mut self.weights[best?.0];
        b.current -= total;
        Some(b.shard)
    }

    /// This shard's next member in turn.
    pub(crate) fn pick_member(&mut self) -> Option<super::LocalSub> {
        let m = *self.members.nth_wrapping(self.next_member)?;
        self.next_member = self.next_member.wrapping_add(1);
        Some(m)
    }
}

/// Payload of the shared trie (keyed by the filter after `$share/{group}/`).
#[derive(Default)]
pub(crate) struct SharedGroups {
    pub(crate) groups: SmallVec<[SharedGroup; 1]>,
}

impl Payload for SharedGroups {
    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl SharedGroups {
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut SharedGroup> {
        self.groups.iter_mut().find(|g| &*g.name == name)
    }

    /// The group, created empty if absent. `full` is the whole `$share/...` filter.
    pub(crate) fn get_or_insert(&mut self, name: &str, full: &TopicFilter) -> &mut SharedGroup {
        let i = match self.groups.iter().position(|g| &*g.name == name) {
            Some(i) => i,
            None => {
                // Copy the filter so it does not pin the SUBSCRIBE packet's buffer.
                let filter = TopicFilter::try_from(full.as_str()).unwrap_or_else(|_| full.clone());
                self.groups.push(SharedGroup {
                    name: name.into(),
                    filter,
                    weights: SmallVec::new(),
                    members: SubList::default(),
                    next_member: 0,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }

    /// Drops groups left with no member anywhere.
    pub(crate) fn retain_nonempty(&mut self) {
        self.groups.retain(|g| !g.is_empty());
    }
}
