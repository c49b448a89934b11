//! openraft's log storage on LMDB: entries, vote, purge point.
//!
//! Group commit: `append` puts the entries in the in-memory [`Tail`] (so they
//! are readable at once, as openraft requires) and queues them for the log
//! writer thread ([`super::writer`]), then returns without waiting for the
//! disk, so the Raft core keeps replicating and accepting writes while the
//! fsync runs. The writer commits everything that queued meanwhile in one
//! transaction and calls each `callback.io_completed` only after that commit
//! returned. Votes, truncations and purges take the same queue and are
//! awaited, so `save_vote` returns only once the vote is fsynced.
//!
//! Reads take the tail's entries (cheap clones: payloads are shared) and go
//! to LMDB only for older entries (a follower far behind, a restart).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use super::tail::Tail;
use super::writer::{self, Write};
use super::{decode, encode, io as lmdb, Store};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The log store (and its reader: the same handle).
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Arc<Store>,
    tail: Arc<Mutex<Tail>>,
    writer: flume::Sender<Write>,
}

impl LogStore {
    /// Opens the log of `store` and starts its writer thread, which ends
    /// once every clone of the returned store is dropped (join it then: the
    /// environment stays open until it has ended).
    pub fn open(store: Arc<Store>) -> io::Result<(LogStore, JoinHandle<()>)> {
        let next = {
            let rtxn = store.env.read_txn().map_err(lmdb)?;
            match store.log.last(&rtxn).map_err(lmdb)? {
                Some((index, _)) => index + 1,
                None => match store.meta.get(&rtxn, "last_purged").map_err(lmdb)? {
                    Some(raw) => decode::<LogId>(raw)?.index() + 1,
                    None => 0,
                },
            }
        };
        let tail = Arc::new(Mutex::new(Tail::new(next)));
        let (writer, thread) = writer::spawn(store.clone(), tail.clone(), next)?;
        Ok((
            LogStore {
                store,
                tail,
                writer,
            },
            thread,
        ))
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, row: &str) -> io::Result<Option<T>> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        match self.store.meta.get(&rtxn, row).map_err(lmdb)? {
            Some(raw) => decode(raw).map(Some),
            None => Ok(None),
        }
    }

    /// Entries in `[start, end)`: the tail's, and older ones from LMDB.
    fn range(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let (cached, first) = {
            let tail = self.tail();
            (tail.range(start, end), tail.first())
        };
        if start >= first {
            return Ok(cached);
        }
        // Entries below the tail's first index were on disk before they
        // left the tail, so reading them after releasing the lock is safe.
        let mut out = self.disk_range(start, end.min(first))?;
        out.extend(cached);
        Ok(out)
    }

    fn disk_range(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        let mut out = Vec::new();
        for row in self.store.log.range(&rtxn, &(start..end)).map_err(lmdb)? {
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

    /// Queues a write and waits until the writer committed it.
    async fn write_and_wait(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<io::Result<()>>) -> Write,
    ) -> io::Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.writer.send(make(done)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> io::Error {
    io::Error::other("raft log writer stopped")
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
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if end <= start {
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
        let cached = self.tail().last().map(|e| e.log_id());
        let last = match cached {
            Some(l) => Some(l),
            None => {
                let rtxn = self.store.env.read_txn().map_err(lmdb)?;
                match self.store.log.last(&rtxn).map_err(lmdb)? {
                    Some((_, raw)) => Some(decode::<Entry>(raw)?.log_id()),
                    None => None,
                }
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

    /// Saved so that a restart re-applies the log up to it at once (the
    /// state machine is in memory, see `sm`); queued without waiting.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let raw = encode(&committed)?;
        self.writer
            .send(Write::Committed { raw })
            .map_err(|_| stopped())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let raw = encode(vote)?;
        self.write_and_wait(|done| Write::Vote { raw, done }).await
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut tail = self.tail();
            for e in &entries {
                tail.push(e.clone())
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
            }
        }
        self.writer
            .send(Write::Append { entries, callback })
            .map_err(|_| stopped())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        self.tail().truncate(from);
        self.write_and_wait(|done| Write::Truncate { from, done })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let raw = encode(&log_id)?;
        let upto = log_id.index();
        self.tail().purge(upto);
        self.write_and_wait(|done| Write::Purge { upto, raw, done })
            .await
    }
}
