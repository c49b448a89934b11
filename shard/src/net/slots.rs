//! The poller's slot table: one entry per registered descriptor, keyed by a
//! small integer (the epoll event's data, the io_uring request's key), freed
//! keys reused first. A slab whose free entries chain through the entry
//! itself: 24 bytes an entry, where the `slab` crate's enum tag made 32
//! (one per connection: `docs/connection-memory.md`).

use std::task::Waker;

const NIL: u32 = u32::MAX;
/// `Slot::ready` of a free entry (readiness bits are below it).
const FREE: u8 = 0x80;

/// One registered descriptor.
pub(crate) struct Slot {
    pub waker: Option<Waker>,
    pub ready: u8,
    /// The next free entry, while this one is free.
    next: u32,
}

impl Slot {
    pub fn new(ready: u8) -> Self {
        Slot {
            waker: None,
            ready,
            next: NIL,
        }
    }
}

pub(crate) struct Slots {
    v: Vec<Slot>,
    /// The most recently freed entry (NIL: none).
    free: u32,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            v: Vec::new(),
            free: NIL,
        }
    }
}

impl Slots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `slot`; its key.
    pub fn insert(&mut self, slot: Slot) -> usize {
        debug_assert!(slot.ready & FREE == 0);
        if self.free == NIL {
            self.v.push(slot);
            return self.v.len() - 1;
        }
        let k = self.free as usize;
        self.free = self.v[k].next;
        self.v[k] = slot;
        k
    }

    /// Frees `key`'s entry; `None` when it was free already.
    pub fn try_remove(&mut self, key: usize) -> Option<Slot> {
        let s = self.v.get_mut(key).filter(|s| s.ready & FREE == 0)?;
        let old = std::mem::replace(
            s,
            Slot {
                waker: None,
                ready: FREE,
                next: self.free,
            },
        );
        self.free = key as u32;
        Some(old)
    }

    /// Frees `key`'s entry, which must be in use.
    pub fn remove(&mut self, key: usize) -> Slot {
        self.try_remove(key).expect("no slot of this key")
    }

    pub fn get(&self, key: usize) -> Option<&Slot> {
        self.v.get(key).filter(|s| s.ready & FREE == 0)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Slot> {
        self.v.get_mut(key).filter(|s| s.ready & FREE == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_keys_are_reused_last_freed_first() {
        let mut s = Slots::new();
        let a = s.insert(Slot::new(2));
        let b = s.insert(Slot::new(2));
        let c = s.insert(Slot::new(2));
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(s.try_remove(a).is_some());
        assert!(s.try_remove(c).is_some());
        assert!(s.try_remove(c).is_none(), "freed twice");
        assert!(s.get(a).is_none() && s.get(c).is_none());
        assert_eq!(s.get(b).map(|x| x.ready), Some(2));
        assert_eq!(s.insert(Slot::new(1)), c);
        assert_eq!(s.insert(Slot::new(1)), a);
        assert_eq!(s.insert(Slot::new(1)), 3);
        assert_eq!(s.get_mut(a).map(|x| x.ready), Some(1));
        assert!(s.get(99).is_none() && s.try_remove(99).is_none());
    }
}
