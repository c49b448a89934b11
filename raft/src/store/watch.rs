//! Watchers of applied changes: a caller registers a key prefix and gets
//! every change to a key under it, in apply order, once the apply that made
//! it is visible (so a local read at that point sees it).
//!
//! A snapshot install replaces the map: every key it holds under a watched
//! prefix is sent as a change (keys it dropped are not announced).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One applied change of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The key's new version (0 when it was deleted).
    pub version: u64,
    /// The new value (`None` when deleted).
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct Watchers {
    any: AtomicBool,
    list: Mutex<Vec<(Vec<u8>, flume::Sender<Change>)>>,
}

impl Watchers {
    pub(crate) fn add(&self, prefix: &[u8]) -> flume::Receiver<Change> {
        let (tx, rx) = flume::unbounded();
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.push((prefix.to_vec(), tx));
        self.any.store(true, Ordering::Release);
        rx
    }

    /// Whether anyone watches `key` (cheap when nobody watches anything).
    pub(crate) fn wants(&self, key: &[u8]) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().any(|(p, _)| key.starts_with(p))
    }

    /// Hands committed changes to their watchers; forgets closed ones.
    pub(crate) fn send(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            l.retain(|(p, tx)| !c.key.starts_with(p) || tx.send(c.clone()).is_ok());
        }
        self.any.store(!l.is_empty(), Ordering::Release);
    }
}
