//! The log writer: one thread that owns every write to the log and the vote,
//! and commits whatever queued up while its previous commit was on disk in
//! one LMDB transaction, one fsync (group commit).
//!
//! `append` hands the entries over and returns at once (they are readable
//! from the tail meanwhile); the writer calls each append's
//! `callback.io_completed` only after the commit that holds it returned, in
//! queue order, so openraft never counts an entry durable before it is.
//! Truncations, purges and votes go through the same queue, so they reach
//! the disk in the order openraft issued them, and their callers wait for
//! the commit.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use tokio::sync::oneshot;
use tracing::error;

use super::tail::Tail;
use super::{encode, io as lmdb, Store};
use crate::types::{Entry, TypeConfig};

/// Most queued writes one commit takes (bounds a transaction's size).
const MAX_GROUP: usize = 1024;

/// One write for the writer thread.
pub(crate) enum Write {
    Append {
        entries: Vec<Entry>,
        callback: IOFlushed<TypeConfig>,
    },
    /// Delete every entry from `from` on.
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Record `raw` as the last purged log id and delete up to `upto`.
    Purge {
        upto: u64,
        raw: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Vote {
        raw: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// The commit point (nobody waits: a commit point saved late is only
    /// an older one, still committed; it is written after every append
    /// queued before it, so it never points past the durable log).
    Committed { raw: Vec<u8> },
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    store: Arc<Store>,
    tail: Arc<Mutex<Tail>>,
    durable_end: u64,
) -> io::Result<(flume::Sender<Write>, JoinHandle<()>)> {
    let (tx, rx) = flume::unbounded();
    let thread = std::thread::Builder::new()
        .name("raft-log".into())
        .spawn(move || run(&store, &tail, &rx, durable_end))?;
    Ok((tx, thread))
}

fn run(store: &Store, tail: &Mutex<Tail>, rx: &flume::Receiver<Write>, mut durable_end: u64) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter().take(MAX_GROUP - 1));
        let mut end = durable_end;
        let res = commit(store, &group, &mut end);
        if res.is_ok() {
            durable_end = end;
            let truncates = group
                .iter()
                .filter(|w| matches!(w, Write::Truncate { .. }))
                .count();
            tail.lock()
                .unwrap_or_else(|e| e.into_inner())
                .flushed(durable_end, truncates);
        } else if let Err(e) = &res {
            error!(path = %store.path.display(), error = %e, "raft log commit failed");
        }
        complete(group, &res);
    }
}

/// Writes the group in one transaction; `end` follows what the disk holds.
fn commit(store: &Store, group: &[Write], end: &mut u64) -> io::Result<()> {
    let mut wtxn = store.env.write_txn().map_err(lmdb)?;
    let mut entries = 0u64;
    for w in group {
        match w {
            Write::Append { entries: es, .. } => {
                for e in es {
                    store
                        .log
                        .put(&mut wtxn, &e.index(), &encode(e)?)
                        .map_err(lmdb)?;
                    *end = e.index() + 1;
                }
                entries += es.len() as u64;
            }
            Write::Truncate { from, .. } => {
                store
                    .log
                    .delete_range(&mut wtxn, &(*from..))
                    .map_err(lmdb)?;
                *end = (*end).min(*from);
            }
            Write::Purge { upto, raw, .. } => {
                store
                    .meta
                    .put(&mut wtxn, "last_purged", raw)
                    .map_err(lmdb)?;
                store
                    .log
                    .delete_range(&mut wtxn, &(..=*upto))
                    .map_err(lmdb)?;
                *end = (*end).max(upto + 1);
            }
            Write::Vote { raw, .. } => {
                store.meta.put(&mut wtxn, "vote", raw).map_err(lmdb)?;
            }
            Write::Committed { raw } => {
                store.meta.put(&mut wtxn, "committed", raw).map_err(lmdb)?;
            }
        }
    }
    // LMDB's commit fsyncs (the env has no NOSYNC flag): durable here.
    wtxn.commit().map_err(lmdb)?;
    let c = &store.counters;
    crate::counters::add(&c.appends, 1);
    crate::counters::add(&c.appended_entries, entries);
    Ok(())
}

fn complete(group: Vec<Write>, res: &io::Result<()>) {
    let answer = || match res {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    for w in group {
        match w {
            Write::Append { callback, .. } => callback.io_completed(answer()),
            Write::Truncate { done, .. } | Write::Purge { done, .. } | Write::Vote { done, .. } => {
                let _ = done.send(answer());
            }
            Write::Committed { .. } => {}
        }
    }
}
