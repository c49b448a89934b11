//! A batch of encoded operations and its commit: one LMDB write transaction,
//! run off the shard thread (glommio's blocking pool). Map full grows the
//! map and retries the whole batch; a ceiling or a full disk aborts the batch
//! and reports `NoSpace` (LMDB never half-applies a transaction, so what was
//! committed before stays intact).

use std::ops::Range;
use std::time::{Duration, Instant};

use heed::{Env, MdbError, RwTxn, WithoutTls};

use super::error::StoreError;
use super::keys;
use super::layout::{self, Db};
use super::records;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put,
    Delete,
    /// Delete a session row and every row of its children tables.
    DeleteSession(u64),
    /// Delete every disconnected session whose expiry has passed at `now_ms`.
    Purge {
        now_ms: u64,
    },
    /// Cancelled before its commit (an outbound row deleted in the same batch): skipped.
    Dead,
}

/// No earlier op of this batch writes the same row.
const NO_PREV: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub kind: OpKind,
    pub key: Range<usize>,
    pub val: Range<usize>,
    /// The previous op of this batch on the same outbound row (`NO_PREV`).
    prev: u32,
}

/// The writes of one outbound row in the pending batch.
#[derive(Clone, Copy, Debug)]
struct RowWrites {
    /// Index of the newest op on the row (earlier ones are chained by `Op::prev`).
    last: u32,
    /// The row did not exist before this batch's first write of it.
    fresh: bool,
    /// When counted in `Batch::awaiting` (its message is out to the
    /// client), the op index it was counted at; else `NO_PREV`.
    counted_at: u32,
}

/// Operations in arrival order; keys and values live in one arena.
#[derive(Default, Debug)]
pub(crate) struct Batch {
    pub buf: Vec<u8>,
    pub ops: Vec<Op>,
    /// Outbound rows written in this batch, by (session, seq).
    rows: crate::IntMap<(u64, u64), RowWrites>,
    /// Ops turned `Dead`.
    dead: usize,
    /// Rows written here whose message is out, its acknowledgement awaited
    /// (a PUBACK will likely cancel them before long).
    pub awaiting: usize,
    /// Of those, the ones counted before op `boundary` (`mark`).
    pub awaiting_marked: usize,
    boundary: u32,
    /// Ops cancelled (`Dead`) plus deletes found unnecessary.
    pub cancelled: u64,
    /// Puts that may be dropped when space runs out (`push_row` with `optional`).
    optional: Vec<u32>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Ops that will reach LMDB.
    pub fn live(&self) -> usize {
        self.ops.len() - self.dead
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.ops.clear();
        self.rows.clear();
        self.dead = 0;
        self.awaiting = 0;
        self.awaiting_marked = 0;
        self.boundary = 0;
        self.cancelled = 0;
        self.optional.clear();
    }

    /// Appends a put of outbound row (`session`, `seq`); `fresh`: the row
    /// does not exist yet (its first write), so a delete can cancel it
    /// outright; `sent`: its message is out to the client; `optional`: the
    /// row on disk is good enough without it (dropped if space runs out).
    pub fn push_row(
        &mut self,
        row: (u64, u64),
        (fresh, sent, optional): (bool, bool, bool),
        key: impl FnOnce(&mut Vec<u8>),
        val: impl FnOnce(&mut Vec<u8>),
    ) {
        let at = self.ops.len() as u32;
        if optional {
            self.optional.push(at);
        }
        let (prev, fresh, mut counted_at) = match self.rows.get(&row) {
            Some(w) => (w.last, w.fresh, w.counted_at),
            None => (NO_PREV, fresh, NO_PREV),
        };
        self.push(OpKind::Put, key, val);
        self.ops[at as usize].prev = prev;
        if sent && counted_at == NO_PREV {
            counted_at = at;
            self.awaiting += 1;
        }
        let w = RowWrites {
            last: at,
            fresh,
            counted_at,
        };
        self.rows.insert(row, w);
    }

    /// Drops the optional puts still live; false if there were none.
    pub fn drop_optional(&mut self) -> bool {
        let mut dropped = false;
        for &i in &self.optional {
            let op = &mut self.ops[i as usize];
            if op.kind == OpKind::Put {
                op.kind = OpKind::Dead;
                self.dead += 1;
                dropped = true;
            }
        }
        self.optional.clear();
        dropped
    }

    /// Marks the rows awaiting an acknowledgement now (`awaiting_marked`),
    /// so a wait for them is not prolonged by rows joining later.
    pub fn mark(&mut self) {
        self.boundary = self.ops.len() as u32;
        self.awaiting_marked = self.awaiting;
    }

    /// The row is to be deleted: its puts in this batch are dropped. Returns
    /// true when the row never reached the disk (first written in this batch),
    /// so no delete is needed either.
    pub fn cancel_row(&mut self, row: (u64, u64)) -> bool {
        let Some(w) = self.rows.remove(&row) else {
            return false;
        };
        let mut i = w.last;
        while i != NO_PREV {
            let op = &mut self.ops[i as usize];
            op.kind = OpKind::Dead;
            i = op.prev;
            self.dead += 1;
            self.cancelled += 1;
        }
        self.cancelled += u64::from(w.fresh);
        if w.counted_at != NO_PREV {
            self.awaiting -= 1;
            self.awaiting_marked -= usize::from(w.counted_at < self.boundary);
        }
        w.fresh
    }

    /// Appends one op: `key` writes the key, `val` the value (may write nothing).
    pub fn push(
        &mut self,
        kind: OpKind,
        key: impl FnOnce(&mut Vec<u8>),
        val: impl FnOnce(&mut Vec<u8>),
    ) {
        let k0 = self.buf.len();
        key(&mut self.buf);
        let k1 = self.buf.len();
        val(&mut self.buf);
        let v1 = self.buf.len();
        self.ops.push(Op {
            kind,
            key: k0..k1,
            val: k1..v1,
            prev: NO_PREV,
        });
    }
}

/// Map size policy, copied into each commit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapPolicy {
    pub max: usize,
}

/// What one commit did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CommitInfo {
    pub elapsed: Duration,
    pub purged: u64,
    pub resized_to: Option<usize>,
}

/// Commits `batch` in one write transaction; grows the map on MapFull. Out
/// of space, the batch is tried once more without its optional puts.
pub(crate) fn commit(
    env: &Env<WithoutTls>,
    batch: &mut Batch,
    map: MapPolicy,
) -> Result<CommitInfo, StoreError> {
    match commit_all(env, batch, map) {
        Err(e) if e.is_no_space() && batch.drop_optional() => {
            tracing::info!("store: {e}; retrying without the optional state updates");
            commit_all(env, batch, map)
        }
        r => r,
    }
}

fn commit_all(
    env: &Env<WithoutTls>,
    batch: &Batch,
    map: MapPolicy,
) -> Result<CommitInfo, StoreError> {
    let path = env.path().to_path_buf();
    let start = Instant::now();
    let mut info = CommitInfo::default();
    loop {
        match try_commit(env, batch) {
            Ok(purged) => {
                info.purged = purged;
                info.elapsed = start.elapsed();
                return Ok(info);
            }
            Err(heed::Error::Mdb(MdbError::MapFull)) => {
                let cur = env.info().map_size;
                if cur >= map.max {
                    return Err(StoreError::NoSpace {
                        detail: format!(
                            "{}: LMDB map reached its ceiling of {} bytes",
                            path.display(),
                            map.max
                        ),
                    });
                }
                let next = layout::page_round(cur.saturating_mul(2).min(map.max));
                // SAFETY: one commit at a time per environment (the store's
                // driver), and no read transaction outlives recovery, so no
                // transaction is active in this process while resizing.
                unsafe { env.resize(next) }.map_err(|e| StoreError::from_heed(&path, e))?;
                tracing::info!(path = %path.display(), from = cur, to = next, "store: LMDB map grown");
                info.resized_to = Some(next);
            }
            Err(e) => return Err(StoreError::from_heed(&path, e)),
        }
    }
}

fn try_commit(env: &Env<WithoutTls>, batch: &Batch) -> Result<u64, heed::Error> {
    let db = layout::open_db(env)?.ok_or(heed::Error::Mdb(MdbError::NotFound))?;
    let mut wtxn = env.write_txn()?;
    let mut purged = 0;
    for op in &batch.ops {
        let key = &batch.buf[op.key.clone()];
        match op.kind {
            OpKind::Put => db.put(&mut wtxn, key, &batch.buf[op.val.clone()])?,
            OpKind::Delete => {
                db.delete(&mut wtxn, key)?;
            }
            OpKind::DeleteSession(session) => delete_session(db, &mut wtxn, session)?,
            OpKind::Purge { now_ms } => purged += purge_expired(db, &mut wtxn, now_ms)?,
            OpKind::Dead => {}
        }
    }
    wtxn.commit()?;
    Ok(purged)
}

/// Deletes a session row and all its subscriptions, outbound and inbound rows.
pub(crate) fn delete_session(db: Db<'_>, wtxn: &mut RwTxn<'_>, session: u64) -> heed::Result<()> {
    db.delete(wtxn, &keys::session_prefix(keys::SESSION, session))?;
    for table in keys::SESSION_CHILDREN {
        let prefix = keys::session_prefix(table, session);
        let mut it = db.prefix_iter_mut(wtxn, &prefix)?;
        while it.next().transpose()?.is_some() {
            // SAFETY: we hold no reference into the database across this call
            // (the key/value of the current entry are not kept).
            unsafe { it.del_current()? };
        }
    }
    Ok(())
}

/// Deletes every session whose expiry has passed; returns how many.
pub(crate) fn purge_expired(db: Db<'_>, wtxn: &mut RwTxn<'_>, now_ms: u64) -> heed::Result<u64> {
    let mut expired = Vec::new();
    for entry in db.prefix_iter(wtxn, &[keys::SESSION])? {
        let (key, val) = entry?;
        let Some((session, _)) = keys::split_session_key(key) else {
            continue;
        };
        if records::session_expired(val, now_ms) {
            expired.push(session);
        }
    }
    for &session in &expired {
        delete_session(db, wtxn, session)?;
    }
    Ok(expired.len() as u64)
}
