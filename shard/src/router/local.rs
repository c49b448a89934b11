//! The local view's payload (subscriptions of this shard's sessions on one filter) and the
//! per-session merge of overlapping matches done by `Router::match_local`.

use std::collections::HashMap;

use ringmq_codec::QoS;
use smallvec::SmallVec;

use super::trie::{NodeId, Payload, Trie};
use super::{LocalSub, SessionId};

/// Above this many subscribers a filter keeps a session -> position index, so subscribe and
/// unsubscribe stay O(1) on filters with a large fan-out.
const INDEX_FROM: usize = 16;

/// Subscriptions of this shard's sessions on one filter, at most one per session
/// [MQTT-3.8.4-3].
#[derive(Default)]
pub(crate) struct SubList {
    subs: Vec<LocalSub>,
    index: Option<HashMap<SessionId, u32>>,
}

impl Payload for SubList {
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}

impl SubList {
    #[inline]
    pub(crate) fn as_slice(&self) -> &[LocalSub] {
        &self.subs
    }

    pub(crate) fn len(&self) -> usize {
        self.subs.len()
    }

    fn position(&self, session: SessionId) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(&session).map(|&i| i as usize),
            None => self.subs.iter().position(|s| s.session == session),
        }
    }

    /// Adds `sub`, or replaces the options of the same session's subscription
    /// [MQTT-3.8.4-3]. Returns true if the session was not subscribed before.
    pub(crate) fn upsert(&mut self, sub: LocalSub) -> bool {
        if let Some(i) = self.position(sub.session) {
            self.subs[i] = sub;
            return false;
        }
        self.subs.push(sub);
        let n = self.subs.len();
        match &mut self.index {
            Some(ix) => {
                ix.insert(sub.session, (n - 1) as u32);
            }
            None if n > INDEX_FROM => {
                let ix = self
                    .subs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.session, i as u32))
                    .collect();
                self.index = Some(ix);
            }
            None => {}
        }
        true
    }

    /// Removes the session's subscription; returns it if there was one.
    pub(crate) fn remove(&mut self, session: SessionId) -> Option<LocalSub> {
        let i = self.position(session)?;
        let removed = self.subs.swap_remove(i);
        if let Some(ix) = &mut self.index {
            ix.remove(&session);
            if let Some(moved) = self.subs.get(i) {
                ix.insert(moved.session, i as u32);
            }
            if self.subs.len() <= INDEX_FROM / 2 {
                self.index = None;
            }
        }
        Some(removed)
    }

    /// Entry `i` modulo the length (round robin over shared-subscription members).
    pub(crate) fn nth_wrapping(&self, i: usize) -> Option<&LocalSub> {
        if self.subs.is_empty() {
            None
        } else {
            self.subs.get(i % self.subs.len())
        }
    }
}

/// One session to deliver to, overlapping subscriptions merged.
///
/// Merge rule (v5 3.3.4): a session gets one copy carrying the maximum QoS of its matching
/// subscriptions [MQTT-3.3.4-2] ([MQTT-3.3.5-1] (3.1.1)) and the identifiers of all of them
/// [MQTT-3.3.4-3]. No Local is applied per subscription before merging: a subscription with
/// no_local set does not match its own session's publishes, the others still do [MQTT-3.8.3-3].
/// When the publish is retained and the session's matching subscriptions disagree on Retain As
/// Published, the session gets two copies (one per value, each with its own QoS and
/// identifiers [MQTT-3.3.4-4]), allowed by "the Server MAY deliver further copies" (v5 3.3.4)
/// and the only way to honour both [MQTT-3.3.1-12] and [MQTT-3.3.1-13]. For a non-retained
/// publish RAP is irrelevant and there is always one copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub session: SessionId,
    /// Maximum QoS granted by the merged subscriptions; deliver at min(publish QoS, this).
    pub qos: QoS,
    /// Send the RETAIN flag as published (true) or cleared (false) [MQTT-3.3.1-12/13].
    pub retain_as_published: bool,
    /// Subscription identifiers of the merged subscriptions that have one (v5 only).
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// The ACL must be asked for this topic: true only if every merged
    /// subscription needs it (one wholly readable filter settles it).
    pub acl_check: bool,
}

/// Reusable buffers for `Router::match_local`: once warm (grown to the largest fan-out and
/// session id seen), matching allocates nothing.
#[derive(Default)]
pub struct MatchScratch {
    matches: Vec<Match>,
    len: usize,
    nodes: Vec<NodeId>,
    /// Per session id: generation stamp and the match slot for RAP false / true.
    slots: Vec<(u32, [u32; 2])>,
    generation: u32,
}

const NO_SLOT: u32 = u32::MAX;

/// Who published and how: what the merge needs beyond the topic.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishInfo {
    /// The publishing session when it lives on this shard (for No Local).
    pub publisher: Option<SessionId>,
    /// RETAIN flag of the PUBLISH as received.
    pub retain: bool,
}

impl MatchScratch {
    pub fn new() -> Self {
        Self::default()
    }

    fn next_entry(&mut self) -> &mut Match {
        if self.len == self.matches.len() {
            self.matches.push(Match::default());
        }
        let m = &mut self.matches[self.len];
        self.len += 1;
        m.subscription_ids.clear();
        m
    }

    fn fill(m: &mut Match, sub: &LocalSub) {
        m.session = sub.session;
        m.qos = sub.options.qos;
        m.retain_as_published = sub.options.retain_as_published;
        m.acl_check = sub.acl_check;
        if let Some(id) = sub.subscription_id {
            m.subscription_ids.push(id);
        }
    }

    fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.iter_mut().for_each(|s| s.0 = 0);
            self.generation = 1;
        }
    }

    /// Runs the match: `trie` nodes matching `topic`, merged per session.
    pub(crate) fn run<'a>(
        &'a mut self,
        trie: &Trie<SubList>,
        topic: &str,
        info: PublishInfo,
    ) -> &'a [Match] {
        self.len = 0;
        self.nodes.clear();
        let nodes = &mut self.nodes;
        trie.for_each_match(topic, |id, v| {
            if !v.is_empty() {
                nodes.push(id)
            }
        });
        match self.nodes.len() {
            0 => {}
            // One filter: sessions are unique, no merge needed.
            1 => {
                let subs = trie.value(self.nodes[0]).as_slice();
                if self.matches.len() < subs.len() {
                    self.matches.resize_with(subs.len(), Match::default);
                }
                let (out, mut n) = (&mut self.matches[..], 0);
                for sub in subs {
                    if info.publisher == Some(sub.session) && sub.options.no_local {
                        continue; // [MQTT-3.8.3-3]
                    }
                    let m = &mut out[n];
                    n += 1;
                    m.subscription_ids.clear();
                    Self::fill(m, sub);
                }
                self.len = n;
            }
            _ => self.merge(trie, info),
        }
        &self.matches[..self.len]
    }

    fn merge(&mut self, trie: &Trie<SubList>, info: PublishInfo) {
        self.bump_generation();
        let generation = self.generation;
        for n in 0..self.nodes.len() {
            for sub in trie.value(self.nodes[n]).as_slice() {
                if info.publisher == Some(sub.session) && sub.options.no_local {
                    continue; // [MQTT-3.8.3-3]
                }
                let s = sub.session as usize;
                if s >= self.slots.len() {
                    self.slots.resize(s + 1, (0, [NO_SLOT; 2]));
                }
                if self.slots[s].0 != generation {
                    self.slots[s] = (generation, [NO_SLOT; 2]);
                }
                // Split by RAP only when it matters (retained publish).
                let k = usize::from(info.retain && sub.options.retain_as_published);
                let slot = self.slots[s].1[k];
                if slot == NO_SLOT {
                    self.slots[s].1[k] = self.len as u32;
                    let m = self.next_entry();
                    Self::fill(m, sub);
                } else {
                    let m = &mut self.matches[slot as usize];
                    m.qos = m.qos.max(sub.options.qos); // [MQTT-3.3.4-2]
                    m.retain_as_published |= sub.options.retain_as_published;
                    m.acl_check &= sub.acl_check;
                    if let Some(id) = sub.subscription_id {
                        m.subscription_ids.push(id); // [MQTT-3.3.4-3]
                    }
                }
            }
        }
    }
}
