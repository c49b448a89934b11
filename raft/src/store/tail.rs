//! The in-memory tail of the log: the entries appended lately, readable the
//! moment `append` returns (openraft's contract) while the log writer makes
//! them durable in the background, and kept a while after so replication and
//! the state machine read them without touching LMDB or decoding anything.
//!
//! An entry leaves the tail only once it is on disk (`index < durable_end`)
//! and no truncation is still on its way to disk (until then the disk may
//! hold older entries at the same indexes).

use std::collections::VecDeque;

use openraft::entry::RaftEntry;
use openraft::EntryPayload;

use crate::types::Entry;

/// Entries kept after they are durable: at most this many bytes ...
const KEEP_BYTES: usize = 32 << 20;
/// ... and at most this many entries.
const KEEP_ENTRIES: usize = 16_384;

#[derive(Debug)]
pub(crate) struct Tail {
    /// Index of `entries[0]` (the next index to append when empty).
    first: u64,
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    /// Every index below this is in LMDB as the tail has it.
    durable_end: u64,
    /// Truncations handed to the writer and not yet committed.
    pending_truncates: usize,
}

/// The budget weight of one entry.
fn weight(e: &Entry) -> usize {
    64 + match &e.payload {
        EntryPayload::Normal(p) => p.weight(),
        _ => 0,
    }
}

impl Tail {
    /// An empty tail whose next entry has index `next`.
    pub(crate) fn new(next: u64) -> Self {
        Tail {
            first: next,
            entries: VecDeque::new(),
            bytes: 0,
            durable_end: next,
            pending_truncates: 0,
        }
    }

    /// The index the next appended entry must carry.
    pub(crate) fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    pub(crate) fn last(&self) -> Option<&Entry> {
        self.entries.back().map(|(e, _)| e)
    }

    /// Appends `e`; refuses an index that would leave a hole or overlap.
    pub(crate) fn push(&mut self, e: Entry) -> Result<(), String> {
        if e.index() != self.next() {
            return Err(format!(
                "append of index {} where {} was expected",
                e.index(),
                self.next()
            ));
        }
        let w = weight(&e);
        self.bytes += w;
        self.entries.push_back((e, w));
        Ok(())
    }

    /// Clones of the entries in `[start, end)` that the tail holds.
    pub(crate) fn range(&self, start: u64, end: u64) -> Vec<Entry> {
        let lo = start.max(self.first);
        let hi = end.min(self.next());
        if lo >= hi {
            return Vec::new();
        }
        let (lo, hi) = ((lo - self.first) as usize, (hi - self.first) as usize);
        self.entries.range(lo..hi).map(|(e, _)| e.clone()).collect()
    }

    /// Drops every entry from index `from` on.
    pub(crate) fn truncate(&mut self, from: u64) {
        if from <= self.first {
            self.entries.clear();
            self.bytes = 0;
            self.first = from;
        } else {
            let keep = (from - self.first) as usize;
            while self.entries.len() > keep {
                if let Some((_, w)) = self.entries.pop_back() {
                    self.bytes -= w;
                }
            }
        }
        self.pending_truncates += 1;
    }

    /// Drops every entry up to and including `upto`.
    pub(crate) fn purge(&mut self, upto: u64) {
        while self.first <= upto {
            match self.entries.pop_front() {
                Some((_, w)) => self.bytes -= w,
                None => {
                    self.first = upto + 1;
                    self.durable_end = self.durable_end.max(self.first);
                    return;
                }
            }
            self.first += 1;
        }
    }

    /// The writer committed: everything below `durable_end` is on disk, and
    /// `truncates` of the pending truncations are done. Trims the budget.
    pub(crate) fn flushed(&mut self, durable_end: u64, truncates: usize) {
        self.durable_end = durable_end;
        self.pending_truncates = self.pending_truncates.saturating_sub(truncates);
        if self.pending_truncates > 0 {
            return;
        }
        while (self.bytes > KEEP_BYTES || self.entries.len() > KEEP_ENTRIES)
            && self.first < self.durable_end
        {
            match self.entries.pop_front() {
                Some((_, w)) => self.bytes -= w,
                None => break,
            }
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, TypeConfig};
    use openraft::vote::RaftLeaderIdExt;

    type LeaderId = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;

    fn entry(i: u64) -> Entry {
        Entry::new_blank(LogId::new(LeaderId::new_committed(1, 1), i))
    }

    #[test]
    fn push_range_truncate_purge() {
        let mut t = Tail::new(5);
        assert!(t.push(entry(6)).is_err());
        for i in 5..10 {
            t.push(entry(i)).unwrap();
        }
        assert_eq!(t.range(0, 7).len(), 2);
        assert_eq!(t.range(8, 100).len(), 2);
        t.truncate(8);
        assert_eq!(t.next(), 8);
        t.purge(6);
        assert_eq!(t.first(), 7);
        assert_eq!(t.range(0, 100).len(), 1);
        t.purge(20);
        assert_eq!((t.first(), t.next()), (21, 21));
        t.truncate(3);
        assert_eq!((t.first(), t.next()), (3, 3));
    }
}
