//! The state machine: the replicated map of versioned values, applied on LMDB.
//!
//! One `apply` call applies every entry openraft hands it in one write
//! transaction (the map, the version counter and the applied log id change
//! together, so a crash never leaves them apart), then answers each entry.

use std::io;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use heed::RwTxn;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::snapshot::SnapshotImage;
use super::watch::Change;
use super::{blocking, decode, encode, io as lmdb, Store};
use crate::command::{Command, CommandResult, Op, OpResult, Versioned};
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

/// The state machine (and its snapshot builder: the same handle).
#[derive(Clone, Debug)]
pub struct StateMachine {
    store: Arc<Store>,
}

impl StateMachine {
    pub fn new(store: Arc<Store>) -> Self {
        StateMachine { store }
    }
}

/// Reads one key from the map (no Raft involved: what this node has applied).
pub fn read_local(store: &Store, key: &[u8]) -> io::Result<Option<Versioned>> {
    let rtxn = store.env.read_txn().map_err(lmdb)?;
    match store.kv.get(&rtxn, key).map_err(lmdb)? {
        Some(raw) => decode(raw).map(Some),
        None => Ok(None),
    }
}

/// Reads every key that starts with `prefix` (what this node has applied).
pub fn scan_local(store: &Store, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Versioned)>> {
    let rtxn = store.env.read_txn().map_err(lmdb)?;
    let mut out = Vec::new();
    for row in store.kv.prefix_iter(&rtxn, prefix).map_err(lmdb)? {
        let (k, raw) = row.map_err(lmdb)?;
        out.push((k.to_vec(), decode(raw)?));
    }
    Ok(out)
}

/// The applied log id, as stored.
pub fn applied_local(store: &Store) -> io::Result<Option<LogId>> {
    let rtxn = store.env.read_txn().map_err(lmdb)?;
    match store.sm.get(&rtxn, "applied").map_err(lmdb)? {
        Some(raw) => decode(raw),
        None => Ok(None),
    }
}

fn read_revision(store: &Store, txn: &heed::RoTxn<'_, heed::WithoutTls>) -> io::Result<u64> {
    match store.sm.get(txn, "revision").map_err(lmdb)? {
        Some(raw) => decode(raw),
        None => Ok(0),
    }
}

/// Applies one command's ops in order; `rev` is the version counter.
fn apply_command(
    store: &Store,
    wtxn: &mut RwTxn<'_>,
    rev: &mut u64,
    cmd: &Command,
    changes: &mut Vec<Change>,
) -> io::Result<CommandResult> {
    let mut results = Vec::with_capacity(cmd.ops.len());
    for op in &cmd.ops {
        let res = match op {
            Op::Put { key, value } => write(store, wtxn, rev, key, value)?,
            Op::Delete { key } => OpResult::Deleted {
                existed: store.kv.delete(wtxn, key).map_err(lmdb)?,
            },
            Op::Cas {
                key,
                expected,
                value,
            } => {
                let current: Option<Versioned> = match store.kv.get(wtxn, key).map_err(lmdb)? {
                    Some(raw) => Some(decode(raw)?),
                    None => None,
                };
                let version = current.as_ref().map_or(0, |v| v.version);
                if version != *expected {
                    OpResult::Conflict { current }
                } else {
                    match value {
                        Some(value) => write(store, wtxn, rev, key, value)?,
                        None => OpResult::Deleted {
                            existed: store.kv.delete(wtxn, key).map_err(lmdb)?,
                        },
                    }
                }
            }
        };
        if store.watchers.wants(op.key()) {
            let value = match op {
                Op::Put { value, .. } => Some(value.clone()),
                Op::Cas { value, .. } => value.clone(),
                Op::Delete { .. } => None,
            };
            match &res {
                OpResult::Written { version } => changes.push(Change {
                    key: op.key().to_vec(),
                    version: *version,
                    value,
                }),
                OpResult::Deleted { existed: true } => changes.push(Change {
                    key: op.key().to_vec(),
                    version: 0,
                    value: None,
                }),
                _ => {}
            }
        }
        results.push(res);
    }
    Ok(CommandResult { results })
}

fn write(
    store: &Store,
    wtxn: &mut RwTxn<'_>,
    rev: &mut u64,
    key: &[u8],
    value: &[u8],
) -> io::Result<OpResult> {
    *rev += 1;
    let row = encode(&Versioned {
        version: *rev,
        value: value.to_vec(),
    })?;
    store.kv.put(wtxn, key, &row).map_err(lmdb)?;
    Ok(OpResult::Written { version: *rev })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        let applied = match self.store.sm.get(&rtxn, "applied").map_err(lmdb)? {
            Some(raw) => decode(raw)?,
            None => None,
        };
        let membership = match self.store.sm.get(&rtxn, "membership").map_err(lmdb)? {
            Some(raw) => decode(raw)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let (batch, results, changes) = blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            let mut rev = read_revision(&store, &wtxn)?;
            let mut changes = Vec::new();
            let mut results = Vec::with_capacity(batch.len());
            let mut last = None;
            for (entry, _) in &batch {
                last = Some(entry.log_id());
                let res = match &entry.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(cmd) => {
                        apply_command(&store, &mut wtxn, &mut rev, cmd, &mut changes)?
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id()), m.clone());
                        store
                            .sm
                            .put(&mut wtxn, "membership", &encode(&stored)?)
                            .map_err(lmdb)?;
                        CommandResult::default()
                    }
                };
                results.push(res);
            }
            store
                .sm
                .put(&mut wtxn, "revision", &encode(&rev)?)
                .map_err(lmdb)?;
            store
                .sm
                .put(&mut wtxn, "applied", &encode(&last)?)
                .map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)?;
            Ok((batch, results, changes))
        })
        .await?;
        self.store.watchers.send(changes);
        for ((_, responder), res) in batch.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(res);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let raw = snapshot.into_inner();
        crate::counters::add(&self.store.counters.snapshots_installed, 1);
        crate::counters::set(&self.store.counters.last_snapshot_bytes, raw.len() as u64);
        let image = SnapshotImage::decode(&raw)?;
        let meta = meta.clone();
        let store = self.store.clone();
        let watched = self.store.clone();
        blocking(move || {
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            store.kv.clear(&mut wtxn).map_err(lmdb)?;
            let mut changes = Vec::new();
            for (key, version, value) in image.rows {
                let watched = store.watchers.wants(&key).then(|| value.clone());
                let row = encode(&Versioned { version, value })?;
                store.kv.put(&mut wtxn, &key, &row).map_err(lmdb)?;
                if let Some(value) = watched {
                    changes.push(Change {
                        key,
                        version,
                        value: Some(value),
                    });
                }
            }
            store
                .sm
                .put(&mut wtxn, "revision", &encode(&image.revision)?)
                .map_err(lmdb)?;
            store
                .sm
                .put(&mut wtxn, "applied", &encode(&meta.last_log_id)?)
                .map_err(lmdb)?;
            store
                .sm
                .put(&mut wtxn, "membership", &encode(&meta.last_membership)?)
                .map_err(lmdb)?;
            store
                .sm
                .put(&mut wtxn, "snapshot", &encode(&(meta, raw))?)
                .map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)?;
            Ok(changes)
        })
        .await
        .map(|changes| watched.watchers.send(changes))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let rtxn = self.store.env.read_txn().map_err(lmdb)?;
        match self.store.sm.get(&rtxn, "snapshot").map_err(lmdb)? {
            Some(raw) => {
                let (meta, data): (SnapshotMeta, Vec<u8>) = decode(raw)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: std::io::Cursor::new(data),
                }))
            }
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let (meta, raw) = blocking(move || {
            let rtxn = store.env.read_txn().map_err(lmdb)?;
            let last_log_id: Option<LogId> = match store.sm.get(&rtxn, "applied").map_err(lmdb)? {
                Some(raw) => decode(raw)?,
                None => None,
            };
            let last_membership: StoredMembership =
                match store.sm.get(&rtxn, "membership").map_err(lmdb)? {
                    Some(raw) => decode(raw)?,
                    None => StoredMembership::default(),
                };
            let mut image = SnapshotImage {
                revision: read_revision(&store, &rtxn)?,
                rows: Vec::new(),
            };
            for row in store.kv.iter(&rtxn).map_err(lmdb)? {
                let (k, raw) = row.map_err(lmdb)?;
                let v: Versioned = decode(raw)?;
                image.rows.push((k.to_vec(), v.version, v.value));
            }
            drop(rtxn);
            let raw = image.encode()?;
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
            };
            let mut wtxn = store.env.write_txn().map_err(lmdb)?;
            store
                .sm
                .put(
                    &mut wtxn,
                    "snapshot",
                    &encode(&(meta.clone(), raw.clone()))?,
                )
                .map_err(lmdb)?;
            wtxn.commit().map_err(lmdb)?;
            Ok((meta, raw))
        })
        .await?;
        crate::counters::add(&self.store.counters.snapshots_built, 1);
        crate::counters::set(&self.store.counters.last_snapshot_bytes, raw.len() as u64);
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(raw),
        })
    }
}
