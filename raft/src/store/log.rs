//! openraft's log storage on LMDB: entries, vote, purge point.
//!
//! Group commit: openraft hands `append` every entry that queued up while the
//! previous append was on disk, and all of them go into one write transaction
//! with one fsync; `callback.io_completed` is called only after that commit
//! returned. The vote is fsynced before `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use super::{blocking, decode, encode, io as lmdb, Store};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The log store (and its reader: the same handle).
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Arc<Store>,
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> Self {
        LogStore { store }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, row: &str) -> io::Result<Option<T>> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        match self.store.meta.get(&rtxn, row).map_err(lmdb)? {
            Some(raw) => decode(raw).map(Some),
            None => Ok(None),
        }
    }

    /// Entries in `[start, end)`, as stored.
    fn range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        let mut out = Vec::new();
        let iter = match end {
            Some(end) => self.store.log.range(&rtxn, &(start..end)).map_err(lmdb)?,
            None => self.store.log.range(&rtxn, &(start..)).map_err(lmdb)?,
        };
        for row in iter {
            let (index, raw) = row.map_err(lmdb)?;
            let entry: Entry = decode(raw)?;
            if entry.index() != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log row {index} holds entry {}", entry.index()),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        self.range(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.meta("vote")
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.meta("last_purged")?;
        let last = {
            let rtxn = self.store.env.read_txn().map_err(lmdb)?;
            match self.store.log.last(&rtxn).map_err(lmdb)? {
                Some((_, raw)) => Some(decode::<Entry>(raw)?.log_id()),
                None => None,
            }
        };
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let raw = encode(vote)?;
        let store = self.store.clone();
        blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            store.meta.put(&mut wtxn, "vote", &raw).map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for entry in entries {
            rows.push((entry.index(), encode(&entry)?));
        }
        let store = self.store.clone();
        let res = blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            for (index, raw) in &rows {
                store.log.put(&mut wtxn, index, raw).map_err(lmdb)?;
            }
            // LMDB's commit fsyncs (the env has no NOSYNC flag): durable here.
            wtxn.commit().map_err(lmdb)
        })
        .await;
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        let store = self.store.clone();
        blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            store.log.delete_range(&mut wtxn, &(from..)).map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let raw = encode(&log_id)?;
        let upto = log_id.index();
        let store = self.store.clone();
        blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            store
                .meta
                .put(&mut wtxn, "last_purged", &raw)
                .map_err(lmdb)?;
            store
                .log
                .delete_range(&mut wtxn, &(..=upto))
                .map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)
        })
        .await
    }
}
