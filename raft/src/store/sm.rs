//! The state machine: the replicated map of versioned values, in memory.
//!
//! The map is not written to LMDB on every apply: its durable form is the
//! latest snapshot (an LMDB row, fsynced when built or installed) plus the
//! fsynced log after it, with the commit point saved beside the log. On
//! start openraft installs the stored snapshot and re-applies the committed
//! log after it (a "transient" state machine in openraft's terms), so every
//! acknowledged write is back before the node serves anything.
//!
//! Why: applying into LMDB cost a write transaction and an fsync per apply
//! batch, and each rewrote one B-tree page per key touched (keys are random
//! client ids): the profile of the ownership benchmark put 56 % of all CPU
//! there. Applying to a hash map under a lock costs a few hundred
//! nanoseconds per op. The price: the map lives in memory (about 100-150
//! bytes per key plus the value), and a restart re-applies the log since the
//! last snapshot (`snapshot_every` entries at most).
//!
//! One `apply` call applies every entry openraft hands it under one write
//! lock (the map, the version counter and the applied log id change
//! together; readers never see half a batch), then answers each entry.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::snapshot::SnapshotImage;
use super::watch::Change;
use super::{blocking, decode, encode, io as lmdb, Store};
use crate::command::{Command, CommandResult, Op, OpResult, Versioned};
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

/// The applied state: the map, the version counter, what was applied last.
#[derive(Debug, Default)]
pub struct MapState {
    /// A hash map: point reads and compare-and-sets are nearly all the
    /// traffic (an ordered map spent a quarter of the benchmark's CPU
    /// comparing long client ids); std's SipHash with a random key because
    /// client ids come from clients (no hash flooding). Prefix scans are rare
    /// (liveness rows) and walk it all.
    kv: HashMap<Vec<u8>, Versioned>,
    /// The highest version handed out so far.
    revision: u64,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl Store {
    pub(crate) fn map(&self) -> RwLockReadGuard<'_, MapState> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn map_mut(&self) -> RwLockWriteGuard<'_, MapState> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

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
    Ok(store.map().kv.get(key).cloned())
}

/// Reads every key that starts with `prefix` (what this node has applied).
pub fn scan_local(store: &Store, prefix: &[u8]) -> io::Result<Vec<(Vec<u8>, Versioned)>> {
    let mut rows: Vec<(Vec<u8>, Versioned)> = {
        let map = store.map();
        map.kv
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

/// The applied log id.
pub fn applied_local(store: &Store) -> io::Result<Option<LogId>> {
    Ok(store.map().applied)
}

impl MapState {
    /// Applies one command's ops in order.
    fn apply_command(&mut self, cmd: &Command) -> CommandResult {
        let results = cmd.ops.iter().map(|op| self.apply_op(op)).collect();
        CommandResult { results }
    }

    fn apply_op(&mut self, op: &Op) -> OpResult {
        match op {
            Op::Put { key, value } => self.write(key, value),
            Op::Delete { key } => OpResult::Deleted {
                existed: self.kv.remove(key.as_slice()).is_some(),
            },
            Op::Cas {
                key,
                expected,
                value,
            } => {
                // One search when the key exists (the common takeover), two
                // when a new key is inserted.
                let Some(current) = self.kv.get_mut(key.as_slice()) else {
                    return match (expected, value) {
                        (0, Some(value)) => self.insert(key, value),
                        (0, None) => OpResult::Deleted { existed: false },
                        _ => OpResult::Conflict { current: None },
                    };
                };
                if current.version != *expected {
                    return OpResult::Conflict {
                        current: Some(current.clone()),
                    };
                }
                match value {
                    Some(value) => {
                        self.revision += 1;
                        current.version = self.revision;
                        current.value.clear();
                        current.value.extend_from_slice(value);
                        OpResult::Written {
                            version: self.revision,
                        }
                    }
                    None => OpResult::Deleted {
                        existed: self.kv.remove(key.as_slice()).is_some(),
                    },
                }
            }
        }
    }

    fn write(&mut self, key: &[u8], value: &[u8]) -> OpResult {
        match self.kv.get_mut(key) {
            Some(v) => {
                self.revision += 1;
                v.version = self.revision;
                v.value.clear();
                v.value.extend_from_slice(value);
                OpResult::Written {
                    version: self.revision,
                }
            }
            None => self.insert(key, value),
        }
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> OpResult {
        self.revision += 1;
        let version = self.revision;
        self.kv.insert(
            key.to_vec(),
            Versioned {
                version,
                value: value.to_vec(),
            },
        );
        OpResult::Written { version }
    }
}

/// The changes of one applied command that someone watches.
fn watched_changes(store: &Store, cmd: &Command, res: &CommandResult, out: &mut Vec<Change>) {
    for (op, r) in cmd.ops.iter().zip(&res.results) {
        if !store.watchers.wants(op.key()) {
            continue;
        }
        let value = match op {
            Op::Put { value, .. } => Some(value.clone()),
            Op::Cas { value, .. } => value.clone(),
            Op::Delete { .. } => None,
        };
        match r {
            OpResult::Written { version } => out.push(Change {
                key: op.key().to_vec(),
                version: *version,
                value,
            }),
            OpResult::Deleted { existed: true } => out.push(Change {
                key: op.key().to_vec(),
                version: 0,
                value: None,
            }),
            _ => {}
        }
    }
}

/// Stores `(meta, image)` as the current snapshot (fsynced).
fn persist_snapshot(store: &Store, meta: &SnapshotMeta, raw: &[u8]) -> io::Result<()> {
    let row = encode(&(meta, raw))?;
    let mut wtxn = store.env.write_txn().map_err(lmdb)?;
    store.sm.put(&mut wtxn, "snapshot", &row).map_err(lmdb)?;
    wtxn.commit().map_err(lmdb)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let map = self.store.map();
        Ok((map.applied, map.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        // Decode first (a follower's payloads arrive as bytes), so a bad
        // entry fails the batch before anything changed.
        for (entry, _) in &batch {
            if let EntryPayload::Normal(p) = &entry.payload {
                p.command()?;
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut map = self.store.map_mut();
            for (entry, _) in &batch {
                map.applied = Some(entry.log_id());
                let res = match &entry.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(p) => map.apply_command(p.command()?),
                    EntryPayload::Membership(m) => {
                        map.membership = StoredMembership::new(Some(entry.log_id()), m.clone());
                        CommandResult::default()
                    }
                };
                results.push(res);
            }
        }
        // Watchers hear of the changes once the lock is released (a local
        // read then sees them), before the callers get their answers.
        let mut changes = Vec::new();
        for ((entry, _), res) in batch.iter().zip(&results) {
            if let EntryPayload::Normal(p) = &entry.payload {
                watched_changes(&self.store, p.command()?, res, &mut changes);
            }
        }
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
        let (meta, store) = (meta.clone(), self.store.clone());
        // Durable first: once the map moves to the snapshot, the log before
        // it may be purged.
        let meta = blocking(move || persist_snapshot(&store, &meta, &raw).map(|()| meta)).await?;
        let mut kv = HashMap::with_capacity(image.rows.len());
        let mut changes = Vec::new();
        for (key, version, value) in image.rows {
            if self.store.watchers.wants(&key) {
                changes.push(Change {
                    key: key.clone(),
                    version,
                    value: Some(value.clone()),
                });
            }
            kv.insert(key, Versioned { version, value });
        }
        *self.store.map_mut() = MapState {
            kv,
            revision: image.revision,
            applied: meta.last_log_id,
            membership: meta.last_membership,
        };
        self.store.watchers.send(changes);
        Ok(())
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
        // A consistent copy under the read lock; encoding and the fsync off
        // this thread.
        let (meta, image) = {
            let map = self.store.map();
            let meta = SnapshotMeta {
                last_log_id: map.applied,
                last_membership: map.membership.clone(),
            };
            let rows = map
                .kv
                .iter()
                .map(|(k, v)| (k.clone(), v.version, v.value.clone()))
                .collect();
            let image = SnapshotImage {
                revision: map.revision,
                rows,
            };
            (meta, image)
        };
        let store = self.store.clone();
        let (meta, raw) = blocking(move || {
            let mut image = image;
            image.rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let raw = image.encode()?;
            persist_snapshot(&store, &meta, &raw)?;
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
