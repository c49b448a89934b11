//! Filter trie keyed by level, shared by the router's views.
//!
//! Nodes live in one arena (`Vec`) addressed by `u32`; `+` and `#` children have their own slots,
//! literal children are in `router/children.rs`. Matching a topic walks it without allocating.

use std::hash::{BuildHasher, RandomState};

use smallvec::SmallVec;

use super::children::{Children, Level};
use crate::topic::{is_dollar, levels};

/// Node id in the arena.
pub type NodeId = u32;
const NIL: NodeId = u32::MAX;
/// Topic levels kept on the stack while matching (the default topic level limit is 32; more
/// spill to the heap).
pub const INLINE_LEVELS: usize = 32;

/// A node's payload: the trie prunes nodes whose payload is empty and that have no children.
pub trait Payload: Default {
    fn is_empty(&self) -> bool;
}

struct Node<V> {
    value: V,
    plus: NodeId,
    hash: NodeId,
    children: Children,
}

impl<V: Payload> Node<V> {
    fn new() -> Self {
        Node {
            value: V::default(),
            plus: NIL,
            hash: NIL,
            children: Children::default(),
        }
    }

    /// Child for a filter level (`+` and `#` are the wildcard slots).
    fn child(&self, level: &Level<'_>) -> Option<NodeId> {
        match level.s {
            "+" => (self.plus != NIL).then_some(self.plus),
            "#" => (self.hash != NIL).then_some(self.hash),
            _ => self.children.get(level),
        }
    }

    fn is_prunable(&self) -> bool {
        self.value.is_empty() && self.plus == NIL && self.hash == NIL && self.children.is_empty()
    }
}

/// Trie from topic filter to payload `V`.
pub struct Trie<V> {
    nodes: Vec<Node<V>>,
    free: Vec<NodeId>,
    /// Random per trie: seeds the level hash of large child tables.
    seed: u64,
}

impl<V: Payload> Default for Trie<V> {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::new()],
            free: Vec::new(),
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

const ROOT: NodeId = 0;

impl<V: Payload> Trie<V> {
    /// Payload of node `id`.
    #[inline]
    pub fn value(&self, id: NodeId) -> &V {
        &self.nodes[id as usize].value
    }

    /// Mutable payload of node `id`.
    #[inline]
    pub fn value_mut(&mut self, id: NodeId) -> &mut V {
        &mut self.nodes[id as usize].value
    }

    /// Live nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Node of exactly this filter (wildcards are literal steps), if present.
    pub fn find(&self, filter: &str) -> Option<NodeId> {
        let mut id = ROOT;
        for level in levels(filter) {
            id = self.nodes[id as usize].child(&Level::new(level, self.seed))?;
        }
        Some(id)
    }

    /// Node of exactly this filter, created with an empty payload if absent.
    pub fn find_or_insert(&mut self, filter: &str) -> NodeId {
        let mut id = ROOT;
        for level in levels(filter) {
            let level = Level::new(level, self.seed);
            id = match self.nodes[id as usize].child(&level) {
                Some(c) => c,
                None => {
                    let c = self.alloc();
                    let node = &mut self.nodes[id as usize];
                    match level.s {
                        "+" => node.plus = c,
                        "#" => node.hash = c,
                        _ => node.children.insert(&level, c),
                    }
                    c
                }
            };
        }
        id
    }

    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Node::new();
                id
            }
            None => {
                self.nodes.push(Node::new());
                NodeId::try_from(self.nodes.len() - 1).expect("trie over 4G nodes")
            }
        }
    }

    /// Removes the nodes on `filter`'s path that have become empty, deepest first.
    pub fn prune(&mut self, filter: &str) {
        let mut path: SmallVec<[(NodeId, Level<'_>); INLINE_LEVELS]> = SmallVec::new();
        let mut id = ROOT;
        for level in levels(filter) {
            let level = Level::new(level, self.seed);
            match self.nodes[id as usize].child(&level) {
                Some(c) => {
                    path.push((id, level));
                    id = c;
                }
                None => return,
            }
        }
        while let Some((parent, level)) = path.pop() {
            if !self.nodes[id as usize].is_prunable() {
                return;
            }
            let p = &mut self.nodes[parent as usize];
            match level.s {
                "+" => p.plus = NIL,
                "#" => p.hash = NIL,
                _ => p.children.remove(&level),
            }
            self.nodes[id as usize] = Node::new();
            self.free.push(id);
            id = parent;
        }
    }

    /// Calls `visit` with every node whose filter matches `topic` (each node at most once).
    /// Wildcards in the first level skip `$` topics [MQTT-4.7.2-1]. No allocation for topics of
    /// up to [`INLINE_LEVELS`] levels.
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(NodeId, &V)) {
        let mut lv: SmallVec<[Level<'_>; INLINE_LEVELS]> = SmallVec::new();
        for l in levels(topic) {
            lv.push(Level::new(l, self.seed));
        }
        self.walk(ROOT, &lv, 0, is_dollar(topic), &mut visit);
    }

    fn walk(
        &self,
        id: NodeId,
        lv: &[Level<'_>],
        depth: usize,
        dollar: bool,
        visit: &mut impl FnMut(NodeId, &V),
    ) {
        let node = &self.nodes[id as usize];
        // [MQTT-4.7.2-1]
        let wild_ok = depth != 0 || !dollar;
        // `#` matches the parent level and everything below it (v5 4.7.1.2).
        if node.hash != NIL && wild_ok {
            let h = node.hash;
            visit(h, &self.nodes[h as usize].value);
        }
        let Some(level) = lv.get(depth) else {
            visit(id, &node.value);
            return;
        };
        if let Some(c) = node.children.get(level) {
            self.walk(c, lv, depth + 1, dollar, visit);
        }
        // `+` matches exactly one level (v5 4.7.1.3).
        if node.plus != NIL && wild_ok {
            self.walk(node.plus, lv, depth + 1, dollar, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(u32);
    impl Payload for Count {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    fn matched(t: &Trie<Count>, topic: &str) -> Vec<u32> {
        let mut v = Vec::new();
        t.for_each_match(topic, |_, c| {
            if c.0 > 0 {
                v.push(c.0)
            }
        });
        v.sort();
        v
    }

    #[test]
    fn insert_match_prune() {
        let mut t = Trie::<Count>::default();
        for (i, f) in ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#"]
            .iter()
            .enumerate()
        {
            let id = t.find_or_insert(f);
            t.value_mut(id).0 = i as u32 + 1;
        }
        assert_eq!(matched(&t, "a/b"), [1, 2, 3, 4, 5]);
        assert_eq!(matched(&t, "a"), [3, 4]);
        assert_eq!(matched(&t, "$SYS/x"), [6]);
        for f in ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#"] {
            let id = t.find(f).unwrap();
            t.value_mut(id).0 = 0;
            t.prune(f);
        }
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn many_children_switch_to_map_and_back() {
        let mut t = Trie::<Count>::default();
        for i in 0..100 {
            let f = format!("x/{i}");
            let id = t.find_or_insert(&f);
            t.value_mut(id).0 = i + 1;
        }
        assert_eq!(matched(&t, "x/42"), [43]);
        for i in 0..100 {
            let f = format!("x/{i}");
            let id = t.find(&f).unwrap();
            t.value_mut(id).0 = 0;
            t.prune(&f);
            if i < 99 {
                assert_eq!(matched(&t, "x/99"), [100]);
            }
        }
        assert_eq!(t.node_count(), 1);
    }
}
