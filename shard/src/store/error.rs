//! Typed storage errors: one line each, naming the path and the fix.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything the store can report. `Clone` so one failed commit can be
/// handed to every [`super::Ticket`] waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data dir's lock file.
    #[error("data dir {path} is in use (its lock is {holder}); stop that process or choose another --data-dir")]
    Locked { path: PathBuf, holder: String },
    /// The directory has content but no ringmq marker: never touched.
    #[error("data dir {path} is not a ringmq data dir ({detail}); refusing to use it, choose an empty or ringmq --data-dir")]
    Foreign { path: PathBuf, detail: String },
    /// Written by a newer (or unknown) ringmq storage format.
    #[error("data dir {path} has storage format {found}, this ringmq reads format {supported} only; refusing to misread it")]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The data dir was written with another shard count.
    #[error("data dir {path} was written by {found} shards, this broker runs {configured}; run with --cores {found} or use another --data-dir")]
    ShardCountMismatch {
        path: PathBuf,
        found: u16,
        configured: u16,
    },
    /// LMDB or our records say the files are damaged.
    #[error("data dir {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// Disk full, quota or the configured map ceiling reached. What was
    /// committed before is intact; the failed batch was not written.
    #[error("storage full ({detail}): new QoS 1/2 messages are refused until space is freed")]
    NoSpace { detail: String },
    /// Any other I/O or LMDB failure.
    #[error("storage I/O error on {path}: {detail}")]
    Io { path: PathBuf, detail: Arc<str> },
}

impl StoreError {
    /// True when the broker should keep serving QoS 0 and refuse QoS 1/2
    /// with 0x97 Quota exceeded (v5) until a commit succeeds again.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }

    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            detail: e.to_string().into(),
        }
    }

    pub(crate) fn corrupt(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }

    /// Classifies a heed error met while writing.
    pub(crate) fn from_heed(path: &std::path::Path, e: heed::Error) -> Self {
        use heed::MdbError;
        match e {
            heed::Error::Io(io) if is_no_space_errno(io.raw_os_error()) => StoreError::NoSpace {
                detail: format!("{}: {io}", path.display()),
            },
            heed::Error::Mdb(MdbError::MapFull) => StoreError::NoSpace {
                detail: format!("{}: LMDB map at its ceiling", path.display()),
            },
            heed::Error::Mdb(
                m @ (MdbError::Corrupted
                | MdbError::Invalid
                | MdbError::PageNotFound
                | MdbError::VersionMismatch
                | MdbError::Panic),
            ) => StoreError::corrupt(path, m),
            other => StoreError::io(path, other),
        }
    }
}

fn is_no_space_errno(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}
