//! Literal children of a trie node, keyed by topic level.
//!
//! A few children: a small vec scanned linearly. Many: a `hashbrown::HashTable` with a seeded
//! folded-multiply hash (per trie random seed, so clients cannot aim collisions at a node).
//! Levels carry their first 8 bytes as an integer (`tag`) and their hash, both computed once
//! per topic level, so a comparison is usually one integer and one length compare.

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::trie::NodeId;

/// Literal children above this count move from a scanned vec to a hash table.
const SMALL_CHILDREN: usize = 8;

const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7344;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The bytes of `b` (at most 8) as a little-endian integer, zero-padded; no memcpy call.
#[inline]
fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    } else if n >= 4 {
        let lo = u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")));
        let hi = u64::from(u32::from_le_bytes(b[n - 4..].try_into().expect("4 bytes")));
        lo | hi << ((n - 4) * 8)
    } else if n > 0 {
        u64::from(b[0]) | u64::from(b[n / 2]) << (n / 2 * 8) | u64::from(b[n - 1]) << ((n - 1) * 8)
    } else {
        0
    }
}

/// A topic level prepared for lookups in one trie.
#[derive(Clone, Copy)]
pub(crate) struct Level<'a> {
    pub(crate) s: &'a str,
    tag: u64,
    hash: u64,
}

impl<'a> Level<'a> {
    #[inline]
    pub(crate) fn new(s: &'a str, seed: u64) -> Self {
        let b = s.as_bytes();
        let tag = load_le(b);
        let mut h = fold_mul(seed ^ tag, K1) ^ b.len() as u64;
        if b.len() > 8 {
            let mut rest = &b[8..];
            while rest.len() > 8 {
                h = fold_mul(h ^ load_le(rest), K2);
                rest = &rest[8..];
            }
            h = fold_mul(h ^ load_le(rest), K1);
        }
        Level {
            s,
            tag,
            hash: fold_mul(h, K2),
        }
    }
}

/// A literal child's key.
pub(crate) struct Key {
    tag: u64,
    hash: u64,
    s: Box<str>,
}

impl Key {
    fn new(l: &Level<'_>) -> Self {
        Key {
            tag: l.tag,
            hash: l.hash,
            s: l.s.into(),
        }
    }

    #[inline]
    fn eq(&self, l: &Level<'_>) -> bool {
        self.tag == l.tag
            && self.s.len() == l.s.len()
            && (l.s.len() <= 8 || self.s.as_bytes()[8..] == l.s.as_bytes()[8..])
    }
}

pub(crate) enum Children {
    Small(SmallVec<[(Key, NodeId); 2]>),
    Map(HashTable<(Key, NodeId)>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Small(SmallVec::new())
    }
}

impl Children {
    #[inline]
    pub(crate) fn get(&self, level: &Level<'_>) -> Option<NodeId> {
        match self {
            Children::Small(v) => v.iter().find(|(k, _)| k.eq(level)).map(|&(_, id)| id),
            Children::Map(m) => m.find(level.hash, |(k, _)| k.eq(level)).map(|&(_, id)| id),
        }
    }

    /// Adds a child; `level` must not be present.
    pub(crate) fn insert(&mut self, level: &Level<'_>, id: NodeId) {
        match self {
            Children::Small(v) if v.len() < SMALL_CHILDREN => v.push((Key::new(level), id)),
            Children::Small(v) => {
                let mut m = HashTable::with_capacity(SMALL_CHILDREN * 2);
                for (k, id) in v.drain(..) {
                    m.insert_unique(k.hash, (k, id), |(k, _)| k.hash);
                }
                m.insert_unique(level.hash, (Key::new(level), id), |(k, _)| k.hash);
                *self = Children::Map(m);
            }
            Children::Map(m) => {
                m.insert_unique(level.hash, (Key::new(level), id), |(k, _)| k.hash);
            }
        }
    }

    pub(crate) fn remove(&mut self, level: &Level<'_>) {
        match self {
            Children::Small(v) => v.retain(|(k, _)| !k.eq(level)),
            Children::Map(m) => {
                if let Ok(e) = m.find_entry(level.hash, |(k, _)| k.eq(level)) {
                    e.remove();
                }
                if m.len() <= SMALL_CHILDREN / 2 {
                    *self = Children::Small(m.drain().collect());
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Children::Small(v) => v.is_empty(),
            Children::Map(m) => m.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_le_is_the_zero_padded_prefix() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdef",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
        ] {
            let mut buf = [0u8; 8];
            let n = s.len().min(8);
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            assert_eq!(load_le(s.as_bytes()), u64::from_le_bytes(buf), "{s}");
        }
    }

    #[test]
    fn levels_compare_by_content() {
        let seed = 7;
        let names = [
            "",
            "a",
            "a\0",
            "temp",
            "temperature",
            "temperaturf",
            "temperature/x",
            "12345678",
        ];
        let mut c = Children::default();
        for (i, n) in names.iter().enumerate() {
            c.insert(&Level::new(n, seed), i as NodeId);
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(c.get(&Level::new(n, seed)), Some(i as NodeId), "{n:?}");
        }
        for i in 0..20 {
            c.insert(&Level::new(&format!("x{i}"), seed), 100 + i);
        }
        assert!(matches!(c, Children::Map(_)));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(c.get(&Level::new(n, seed)), Some(i as NodeId), "{n:?}");
        }
        assert_eq!(c.get(&Level::new("x21", seed)), None);
        for i in 0..20 {
            c.remove(&Level::new(&format!("x{i}"), seed));
        }
        for n in &names[..5] {
            c.remove(&Level::new(n, seed));
        }
        assert!(matches!(c, Children::Small(_)));
        assert_eq!(c.get(&Level::new("a", seed)), None);
        assert_eq!(c.get(&Level::new("temperaturf", seed)), Some(5));
    }
}
