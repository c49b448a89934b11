//! Retained messages of one shard's replica (every shard holds all of them; the lead broadcasts
//! retained publishes over the mesh).
//!
//! A trie keyed by topic level, children ordered (`BTreeMap`), so a replay can stop anywhere and
//! resume from the key path where it stopped: [`ReplayCursor::next_batch`] does O(batch) work
//! per step whatever the store size, and a `#` subscriber over a million retained messages is
//! served in bounded steps. Mutations between steps are fine: a message present for the whole
//! replay is yielded exactly once; one set or deleted meanwhile may or may not be.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{MqttString, Publish, TopicFilter, TopicName};
use smallvec::SmallVec;

use crate::topic::levels;

/// A retained message as stored.
#[derive(Clone, Debug)]
pub struct RetainedMessage {
    pub topic: TopicName,
    pub publish: Publish,
    /// For the remaining Message Expiry Interval when sent (v5 3.3.2.3.3).
    pub stored_at: Instant,
}

impl RetainedMessage {
    /// A retained message from a received PUBLISH, its bytes detached (see [`detach`]).
    pub fn new(publish: &Publish, stored_at: Instant) -> Self {
        let publish = detach(publish);
        RetainedMessage {
            topic: publish.topic.clone(),
            publish,
            stored_at,
        }
    }
}

/// A copy of `p` whose topic, payload and properties own their bytes. A decoded PUBLISH is a
/// slice of its connection's read buffer, and storing it would keep that whole buffer alive for
/// as long as the message stays retained (a small message pinning kilobytes). Call once on the
/// publisher's shard before the broadcast, so every replica shares the same detached buffers.
pub fn detach(p: &Publish) -> Publish {
    fn own(s: &MqttString) -> MqttString {
        MqttString::try_from(s.as_str()).unwrap_or_else(|_| s.clone())
    }
    fn own_topic(t: &TopicName) -> TopicName {
        TopicName::try_from(t.as_str()).unwrap_or_else(|_| t.clone())
    }
    let mut properties = (*p.properties).clone();
    properties.response_topic = p.properties.response_topic.as_ref().map(own_topic);
    properties.correlation_data = p
        .properties
        .correlation_data
        .as_deref()
        .map(Bytes::copy_from_slice);
    properties.content_type = p.properties.content_type.as_ref().map(own);
    properties.user_properties = p
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (own(k), own(v)))
        .collect();
    Publish {
        topic: own_topic(&p.topic),
        payload: Bytes::copy_from_slice(&p.payload),
        properties: properties.into(),
        ..p.clone()
    }
}

#[derive(Default)]
struct Node {
    msg: Option<Rc<RetainedMessage>>,
    children: BTreeMap<Rc<str>, Node>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.msg.is_none() && self.children.is_empty()
    }
}

/// The retained messages, by topic.
#[derive(Default)]
pub struct RetainedStore {
    root: Node,
    len: usize,
}

impl RetainedStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `msg` as the retained message of `topic`, replacing the previous one
    /// [MQTT-3.3.1-5]; an empty payload deletes it and is not stored [MQTT-3.3.1-6]
    /// [MQTT-3.3.1-7] ([MQTT-3.3.1-10] [MQTT-3.3.1-11] (3.1.1)). Returns the previous message.
    pub fn set(&mut self, topic: TopicName, msg: RetainedMessage) -> Option<Rc<RetainedMessage>> {
        if msg.publish.payload.is_empty() {
            return self.remove(topic.as_str());
        }
        let mut node = &mut self.root;
        for level in levels(topic.as_str()) {
            if !node.children.contains_key(level) {
                node.children.insert(Rc::from(level), Node::default());
            }
            node = node.children.get_mut(level).expect("inserted above");
        }
        let prev = node.msg.replace(Rc::new(msg));
        if prev.is_none() {
            self.len += 1;
        }
        prev
    }

    /// Deletes the retained message of `topic`, pruning emptied nodes.
    pub fn remove(&mut self, topic: &str) -> Option<Rc<RetainedMessage>> {
        let lv: SmallVec<[&str; 16]> = levels(topic).collect();
        let prev = remove_at(&mut self.root, &lv);
        if prev.is_some() {
            self.len -= 1;
        }
        prev
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&Rc<RetainedMessage>> {
        let mut node = &self.root;
        for level in levels(topic) {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// A cursor over the retained messages matching `filter` (wildcards in the first level skip
    /// `$` topics [MQTT-4.7.2-1]). A `$share/...` filter gets none: retained messages are sent
    /// when a non-shared subscription is made (v5 3.3.1.3, 4.8.2).
    pub fn replay(&self, filter: &TopicFilter) -> ReplayCursor {
        ReplayCursor::new(Some(filter.clone()), filter.shared().is_some())
    }

    /// A cursor over every retained message, `$` topics included (admin listing).
    pub fn list(&self) -> ReplayCursor {
        ReplayCursor::new(None, false)
    }
}

fn remove_at(node: &mut Node, lv: &[&str]) -> Option<Rc<RetainedMessage>> {
    let Some((first, rest)) = lv.split_first() else {
        return node.msg.take();
    };
    let child = node.children.get_mut(*first)?;
    let prev = remove_at(child, rest);
    if child.is_empty() {
        node.children.remove(*first);
    }
    prev
}

/// Resumable walk over the retained messages matching a filter. Holds no borrow of the store:
/// its position is the key path where the last step stopped.
pub struct ReplayCursor {
    /// `None`: everything, `$` topics included.
    filter: Option<TopicFilter>,
    /// Per open frame of the walk, the last child key taken from it.
    lasts: Vec<Option<Rc<str>>>,
    /// `lasts` of the step before, kept for its allocation.
    spare: Vec<Option<Rc<str>>>,
    done: bool,
}

/// How a node's children are walked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Follow the filter's level at this depth.
    Filter,
    /// Inside a `#`: everything below matches.
    All,
}

struct Frame<'s> {
    depth: usize,
    mode: Mode,
    /// Children still to walk (`None`: none can match).
    iter: Option<std::collections::btree_map::Range<'s, Rc<str>, Node>>,
    /// The children were selected by a wildcard at the first level: skip `$` keys.
    skip_dollar: bool,
    /// Last child key taken (borrowed: no refcount traffic while walking).
    last: Option<&'s Rc<str>>,
}

impl ReplayCursor {
    fn new(filter: Option<TopicFilter>, done: bool) -> Self {
        ReplayCursor {
            filter,
            lasts: Vec::new(),
            spare: Vec::new(),
            done,
        }
    }

    /// True once every matching message has been yielded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends up to `max` matching messages to `out`, doing O(`max`) work (non-matching nodes
    /// count too). Returns true when the replay is complete.
    pub fn next_batch(
        &mut self,
        store: &RetainedStore,
        max: usize,
        out: &mut Vec<Rc<RetainedMessage>>,
    ) -> bool {
        if self.done {
            return true;
        }
        let filter = self.filter.clone();
        let lv: SmallVec<[&str; 16]> = match &filter {
            Some(f) => levels(f.as_str()).collect(),
            None => SmallVec::new(),
        };
        let w = Walk {
            lv: &lv,
            dollar_rule: filter.is_some(),
        };
        let saved = std::mem::take(&mut self.lasts);
        let mut stack = w.resume(store, &saved);
        let budget = max.saturating_mul(4).max(64);
        let (mut yielded, mut work) = (0usize, 0usize);
        while let Some(top) = stack.last_mut() {
            if yielded >= max || work >= budget {
                let mut next = std::mem::take(&mut self.spare);
                next.extend(stack.iter().map(|f| f.last.cloned()));
                drop(stack);
                self.lasts = next;
                self.spare = saved;
                self.spare.clear();
                return false;
            }
            work += 1;
            let Some((key, child)) = top.iter.as_mut().and_then(|it| it.next()) else {
                stack.pop();
                continue;
            };
            if top.skip_dollar && key.starts_with('$') {
                continue; // [MQTT-4.7.2-1]
            }
            top.last = Some(key);
            let (depth, mode) = (top.depth + 1, w.child_mode(top.mode, top.depth));
            if w.node_matches(mode, depth) {
                if let Some(m) = &child.msg {
                    out.push(m.clone());
                    yielded += 1;
                }
            }
            if !child.children.is_empty() {
                stack.push(w.frame(child, depth, mode, None));
            }
        }
        drop(stack);
        self.spare = saved;
        self.spare.clear();
        self.done = true;
        true
    }
}

/// The filter being walked.
struct Walk<'f> {
    lv: &'f [&'f str],
    /// Wildcards in the first level skip `$` topics (false for the admin listing).
    dollar_rule: bool,
}

impl<'f> Walk<'f> {
    /// Rebuilds the walk's stack from a saved key path.
    fn resume<'s>(
        &self,
        store: &'s RetainedStore,
        lasts: &'s [Option<Rc<str>>],
    ) -> SmallVec<[Frame<'s>; 8]> {
        let mut stack: SmallVec<[Frame<'s>; 8]> = SmallVec::new();
        let (mut node, mut depth) = (&store.root, 0);
        let mut mode = if self.dollar_rule {
            Mode::Filter
        } else {
            Mode::All
        };
        for (i, last) in lasts.iter().enumerate() {
            stack.push(self.frame(node, depth, mode, last.as_ref()));
            let deeper = i + 1 < lasts.len();
            let Some(child) = last
                .as_deref()
                .filter(|_| deeper)
                .and_then(|k| node.children.get(k))
            else {
                return stack;
            };
            mode = self.child_mode(mode, depth);
            depth += 1;
            node = child;
        }
        if stack.is_empty() {
            stack.push(self.frame(node, 0, mode, None));
        }
        stack
    }

    /// Mode of the children of a node at `depth` walked in `mode`.
    fn child_mode(&self, mode: Mode, depth: usize) -> Mode {
        if mode == Mode::All || self.lv.get(depth) == Some(&"#") {
            Mode::All
        } else {
            Mode::Filter
        }
    }

    /// Does a node at `depth`, reached in `mode`, match the filter?
    fn node_matches(&self, mode: Mode, depth: usize) -> bool {
        // `#` matches its parent level too (v5 4.7.1.2).
        mode == Mode::All || depth == self.lv.len() || self.lv.get(depth) == Some(&"#")
    }

    /// The frame walking `node`'s children after key `after`.
    fn frame<'s>(
        &self,
        node: &'s Node,
        depth: usize,
        mode: Mode,
        after: Option<&'s Rc<str>>,
    ) -> Frame<'s> {
        let after_b = after.map(|k| Bound::Excluded(&**k));
        let (iter, wildcard) = match (mode, self.lv.get(depth).copied()) {
            (Mode::All, _) | (Mode::Filter, Some("#" | "+")) => {
                let lower = after_b.unwrap_or(Bound::Unbounded);
                (
                    Some(node.children.range::<str, _>((lower, Bound::Unbounded))),
                    true,
                )
            }
            (Mode::Filter, Some(l)) => {
                let lower = after_b.unwrap_or(Bound::Included(l));
                (
                    Some(node.children.range::<str, _>((lower, Bound::Included(l)))),
                    false,
                )
            }
            (Mode::Filter, None) => (None, false),
        };
        let skip_dollar = self.dollar_rule && wildcard && depth == 0;
        Frame {
            depth,
            mode,
            iter,
            skip_dollar,
            last: after,
        }
    }
}

#[cfg(test)]
mod tests;
