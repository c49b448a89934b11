//! Rows of the cluster outbox (hinted handoff, `cluster/outbox.rs`) and
//! shard 0's link run: table `H` (`H` + peer node u64 + copy id u64 -> the
//! acked copy's link frame) and the meta row `Mlinkrun` (stream u64 + run
//! u64). Only shard 0 writes them; every shard reads its own at start.
//!
//! The run grows by one at every start, stored on shard 0 right after recovery
//! (so it is durable before any copy of the new run leaves): acked copy ids
//! are `run << 40 | n`, so a copy of a later run always has a higher id than
//! every copy of an earlier one, and the stream never changes for a data
//! dir. A receiving node's dedup (last `(stream, id)` per sending node) thus
//! keeps working across restarts of the sender, which resends its outbox
//! rows, lowest id first, before any copy of the new run.

use bytes::Bytes;
use heed::RwTxn;
use std::path::Path;

use super::batch::OpKind;
use super::engine::Ticket;
use super::error::StoreError;
use super::keys;
use super::layout::Db;
use super::Store;

/// An acked copy stored for a node that did not have it yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub peer: u64,
    pub id: u64,
    /// The whole link frame (`AckedPublish` / `AckedShared`), stamp included.
    pub frame: Bytes,
}

/// This data dir's acked-copy stream and this start's run number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRun {
    pub stream: u64,
    pub run: u64,
}

impl LinkRun {
    /// A stream never seen before, run 1 (a store that keeps nothing).
    pub fn fresh() -> LinkRun {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        LinkRun {
            stream: now ^ (u64::from(std::process::id()) << 40),
            run: 1,
        }
    }
}

/// What shard 0 keeps for the node links: the outbox, the run, the peers' routes.
pub(crate) struct LinkRows {
    pub outbox: Vec<OutboxRow>,
    pub run: LinkRun,
    /// (peer node id, filter bytes) as last told by each peer.
    pub routes: Vec<(u64, Bytes)>,
}

impl Store {
    /// Peer `peer` told this node it has subscribers on `filter` (`add`) or no longer.
    pub fn put_peer_route(&self, peer: u64, filter: &str, add: bool) -> Ticket {
        let kind = if add { OpKind::Put } else { OpKind::Delete };
        self.engine.push(
            kind,
            |b| keys::push_peer_route(b, peer, filter.as_bytes()),
            |_| {},
        )
    }

    /// The peers' routes recovered (once, at start): (peer, filter bytes).
    pub fn take_peer_routes(&self) -> Vec<(u64, Bytes)> {
        std::mem::take(&mut *self.peer_routes.borrow_mut())
    }

    /// Stores the acked copy `id` for node `peer` (its link frame): the
    /// publisher is acknowledged once this row is durable.
    pub fn put_outbox(&self, peer: u64, id: u64, frame: &[u8]) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_outbox(b, peer, id),
            |b| b.extend_from_slice(frame),
        )
    }

    /// Node `peer` answered that it holds copy `id` (or it left the cluster).
    pub fn delete_outbox(&self, peer: u64, id: u64) -> Ticket {
        self.engine
            .push(OpKind::Delete, |b| keys::push_outbox(b, peer, id), |_| {})
    }

    /// The outbox rows recovered (once, at start), by peer then id.
    pub fn take_outbox(&self) -> Vec<OutboxRow> {
        std::mem::take(&mut *self.outbox.borrow_mut())
    }

    /// This start's stream and run (the run was made durable at recovery).
    pub fn link_run(&self) -> LinkRun {
        self.link_run
    }
}

/// Reads the outbox rows, the peers' routes and the run row; the next run
/// is stored by [`save_run`] before the shards start.
pub(super) fn load(db: Db<'_>, wtxn: &mut RwTxn<'_>, path: &Path) -> Result<LinkRows, StoreError> {
    let heed_err = |e| StoreError::from_heed(path, e);
    let mut rows = Vec::new();
    for entry in db.prefix_iter(wtxn, &[keys::OUTBOX]).map_err(heed_err)? {
        let (k, v) = entry.map_err(heed_err)?;
        let (peer, id) =
            keys::split_outbox(k).ok_or_else(|| StoreError::corrupt(path, "bad outbox key"))?;
        rows.push(OutboxRow {
            peer,
            id,
            frame: Bytes::copy_from_slice(v),
        });
    }
    let last = db.get(wtxn, keys::META_LINK_RUN).map_err(heed_err)?;
    let run = match last {
        None => LinkRun::fresh(),
        Some(v) => match (
            v.get(..8).and_then(keys::tail_u64),
            v.get(8..).and_then(keys::tail_u64),
        ) {
            (Some(stream), Some(run)) => LinkRun {
                stream,
                run: run + 1,
            },
            _ => return Err(StoreError::corrupt(path, "bad link run row")),
        },
    };
    let mut routes = Vec::new();
    for entry in db
        .prefix_iter(wtxn, &[keys::PEER_ROUTE])
        .map_err(heed_err)?
    {
        let (k, _) = entry.map_err(heed_err)?;
        let peer = k
            .get(1..9)
            .and_then(keys::tail_u64)
            .ok_or_else(|| StoreError::corrupt(path, "bad peer route key"))?;
        routes.push((peer, Bytes::copy_from_slice(&k[9..])));
    }
    Ok(LinkRows {
        outbox: rows,
        run,
        routes,
    })
}

/// Stores this start's run on shard 0 (after recovery, before any copy of
/// the run leaves), in its own transaction, the map grown as for any
/// commit. A store at its map's ceiling cannot take it: the run then gets
/// a fresh stream instead (logged), so its copies can never be taken by a
/// peer for copies of an earlier run; the outbox rows keep their own stamps.
pub(super) fn save_run(
    env: &heed::Env<heed::WithoutTls>,
    map: super::batch::MapPolicy,
    run: LinkRun,
) -> Result<LinkRun, StoreError> {
    let mut b = super::batch::Batch::default();
    b.push(
        OpKind::Put,
        |k| k.extend_from_slice(keys::META_LINK_RUN),
        |v| {
            v.extend_from_slice(&run.stream.to_be_bytes());
            v.extend_from_slice(&run.run.to_be_bytes());
        },
    );
    match super::batch::commit(env, &mut b, map) {
        Ok(_) => Ok(run),
        Err(e) if e.is_no_space() => {
            let fresh = LinkRun::fresh();
            tracing::warn!(
                "store: {e}; the node links' run is not stored: this start uses a fresh stream"
            );
            Ok(fresh)
        }
        Err(e) => Err(e),
    }
}
