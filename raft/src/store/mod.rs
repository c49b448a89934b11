//! Durable state on LMDB (heed): the Raft log, the vote, the state machine and
//! its latest snapshot, in one environment per node.
//!
//! ```text
//! <dir>/data.mdb, lock.mdb   one LMDB environment, three databases:
//!   meta  str -> bytes       format, cluster_id, node_id, vote, last_purged,
//!                            committed
//!   log   u64 BE -> bytes    postcard(Entry), index order
//!   sm    str -> bytes       snapshot: postcard(meta, image)
//! ```
//!
//! The replicated map itself lives in memory (`sm`); its durable form is
//! the snapshot plus the log after it.
//!
//! Every write transaction is committed with LMDB's default durability
//! (fsync before the commit returns), off the control-plane thread: log
//! writes on the log writer thread (group commit, see `log` and `writer`),
//! state-machine applies and snapshots on tokio's blocking pool, so the
//! control-plane thread keeps serving heartbeats while the disk works.
//! A dir is bound to one cluster id and one node id at first open; another
//! cluster's or node's dir is refused.

pub mod log;
pub mod sm;
pub mod snapshot;
mod tail;
pub mod watch;
mod writer;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, WithoutTls};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log::LogStore;
pub use sm::StateMachine;

use crate::error::OpenError;
use crate::types::NodeId;

/// Data format written by this build (2: a log entry's command is stored as
/// its postcard bytes, see `crate::payload`).
pub const FORMAT: u32 = 2;

pub(crate) type LogDb = Database<'static, U64<BigEndian>, Bytes>;
pub(crate) type StrDb = Database<'static, Str, Bytes>;

/// The LMDB environment and its databases, shared by the log store, the state
/// machine and local readers.
pub struct Store {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) meta: StrDb,
    pub(crate) log: LogDb,
    pub(crate) sm: StrDb,
    pub(crate) map: std::sync::RwLock<sm::MapState>,
    pub(crate) path: PathBuf,
    pub(crate) counters: crate::counters::Counters,
    pub(crate) watchers: watch::Watchers,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// LMDB map size in bytes (the most the environment may grow to).
    pub map_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { map_size: 1 << 30 }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, bound to `cluster_id` and `node_id`.
    pub fn open(
        dir: &Path,
        cluster_id: &str,
        node_id: NodeId,
        opts: &StoreOptions,
    ) -> Result<Arc<Store>, OpenError> {
        let path = dir.to_path_buf();
        fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        let lmdb = |source| OpenError::Lmdb {
            path: path.clone(),
            source,
        };
        let page = 4096;
        let map_size = opts.map_size.div_ceil(page) * page;
        // SAFETY: the environment is opened once per directory in this process
        // (heed refuses a second open of the same path) and no other program
        // maps the file with other flags; the node's lifetime owns it.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(map_size)
                .max_dbs(8)
                .open(dir)
        }
        .map_err(lmdb)?;
        let wtxn = env.write_txn().map_err(lmdb)?;
        let (meta, log, sm) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                let meta = opener.create_database::<Str, Bytes>(wtxn, Some("meta"))?;
                let log = opener.create_database::<U64<BigEndian>, Bytes>(wtxn, Some("log"))?;
                let sm = opener.create_database::<Str, Bytes>(wtxn, Some("sm"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((meta, log, sm)))
            })
            .map_err(lmdb)?
            .unwrap_commit();
        // SAFETY: a `Database` is a dbi number and the id of its environment;
        // every use needs a transaction that borrows `env`, which this struct
        // owns, and heed checks the environment id at each use. Widening the
        // marker lifetime to 'static cannot outlive the environment.
        let (meta, log, sm) = unsafe {
            (
                std::mem::transmute::<Database<'_, Str, Bytes>, StrDb>(meta),
                std::mem::transmute::<Database<'_, U64<BigEndian>, Bytes>, LogDb>(log),
                std::mem::transmute::<Database<'_, Str, Bytes>, StrDb>(sm),
            )
        };
        let store = Store {
            env,
            meta,
            log,
            sm,
            map: Default::default(),
            path: path.clone(),
            counters: Default::default(),
            watchers: Default::default(),
        };
        store.bind(cluster_id, node_id)?;
        Ok(Arc::new(store))
    }

    /// First open writes the identity rows; later opens check them.
    fn bind(&self, cluster_id: &str, node_id: NodeId) -> Result<(), OpenError> {
        let path = self.path.clone();
        let lmdb = |source| OpenError::Lmdb {
            path: path.clone(),
            source,
        };
        let mut wtxn = self.env.write_txn().map_err(lmdb)?;
        match self.meta.get(&wtxn, "format").map_err(lmdb)? {
            None => {
                self.meta
                    .put(&mut wtxn, "format", &FORMAT.to_be_bytes())
                    .map_err(lmdb)?;
                self.meta
                    .put(&mut wtxn, "cluster_id", cluster_id.as_bytes())
                    .map_err(lmdb)?;
                self.meta
                    .put(&mut wtxn, "node_id", &node_id.to_be_bytes())
                    .map_err(lmdb)?;
                wtxn.commit().map_err(lmdb)?;
                return Ok(());
            }
            Some(raw) => {
                let found = u32::from_be_bytes(raw.try_into().map_err(|_| OpenError::Corrupt {
                    path: path.clone(),
                    row: "format",
                })?);
                if found != FORMAT {
                    return Err(OpenError::Format {
                        path,
                        found,
                        expected: FORMAT,
                    });
                }
            }
        }
        let found = self
            .meta
            .get(&wtxn, "cluster_id")
            .map_err(lmdb)?
            .unwrap_or_default();
        if found != cluster_id.as_bytes() {
            return Err(OpenError::ForeignCluster {
                path,
                found: String::from_utf8_lossy(found).into_owned(),
                expected: cluster_id.to_string(),
            });
        }
        let raw = self
            .meta
            .get(&wtxn, "node_id")
            .map_err(lmdb)?
            .unwrap_or_default();
        let found = u64::from_be_bytes(raw.try_into().map_err(|_| OpenError::Corrupt {
            path: path.clone(),
            row: "node_id",
        })?);
        if found != node_id {
            return Err(OpenError::WrongNode {
                path,
                found,
                expected: node_id,
            });
        }
        wtxn.abort();
        Ok(())
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// postcard-encodes a value for a row.
pub(crate) fn encode<T: Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes a row written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// heed's error as an I/O error for openraft.
pub(crate) fn io(e: heed::Error) -> std::io::Error {
    match e {
        heed::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Runs blocking storage work (an fsyncing commit) off the control-plane thread.
pub(crate) async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}
