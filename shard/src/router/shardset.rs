//! A small bitset of shards.

use smallvec::SmallVec;

use super::ShardId;

/// Set of shards: inline for up to 256 shards, grows beyond.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSet {
    words: SmallVec<[u64; 4]>,
}

impl ShardSet {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn insert(&mut self, shard: ShardId) {
        let w = usize::from(shard / 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (shard % 64);
    }

    #[inline]
    pub fn remove(&mut self, shard: ShardId) {
        if let Some(w) = self.words.get_mut(usize::from(shard / 64)) {
            *w &= !(1 << (shard % 64));
        }
    }

    #[inline]
    pub fn contains(&self, shard: ShardId) -> bool {
        self.words
            .get(usize::from(shard / 64))
            .is_some_and(|w| w & (1 << (shard % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Empties the set, keeping its storage.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Shards in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some((i * 64) as ShardId + b as ShardId)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_iter_remove() {
        let mut s = ShardSet::new();
        assert!(s.is_empty());
        for x in [0, 5, 63, 64, 255, 300] {
            s.insert(x);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 255, 300]);
        assert_eq!(s.len(), 6);
        assert!(s.contains(255) && !s.contains(254));
        s.remove(64);
        assert!(!s.contains(64));
        s.clear();
        assert!(s.is_empty());
    }
}
