//! The data dir on disk: marker, lock, one LMDB environment per shard.
//!
//! ```text
//! <data-dir>/RINGMQ          marker: "ringmq data dir" / "format 2" / "shards N"
//! <data-dir>/ringmq.lock     flock(LOCK_EX) held for the broker's lifetime (mode 0600)
//! <data-dir>/shard-<N>/      LMDB environment of shard N (data.mdb, lock.mdb)
//! ```
//!
//! The dir and the shard dirs are created 0700, every file in them 0600
//! (LMDB's own files too: heed opens them 0600), so no other local user can
//! read the state or take the lock (`flock` needs an open descriptor).
//!
//! Every check refuses rather than guesses: content without a marker is
//! foreign, a marker or meta row of another format is refused, LMDB's own
//! "invalid file" is reported as corrupt.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use heed::types::Bytes as Raw;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, WithoutTls};

use super::error::StoreError;
use super::keys;

/// Storage format written and read by this build. Bump on any change of keys
/// or record layout; older formats get a migration, newer ones are refused.
/// 2: inbound QoS 2 rows may be prepared (record V2), origin table `G`.
/// 3: prepared rows may name other nodes (record V3), node origin table `K`.
pub const FORMAT: u32 = 3;

/// Formats 1 and 2 are migrated in place: every row of theirs reads the same
/// under format 3 (inbound record V1 = done, V2 = prepared without nodes), so
/// only the meta rows and then the marker are rewritten (marker last: a crash
/// between is resumed). The oldest format migrated:
pub const MIGRATES_FROM: u32 = 1;

/// A format this build migrates in place.
fn migrates(format: u32) -> bool {
    (MIGRATES_FROM..FORMAT).contains(&format)
}

const MARKER: &str = "RINGMQ";
const MARKER_HEAD: &str = "ringmq data dir";
const LOCK: &str = "ringmq.lock";
/// Files the broker itself may put in the data dir before the store exists
/// (the admin socket's default place): not a sign of a foreign dir.
/// Entries a fresh data dir may already hold: the lock, the admin socket,
/// and the cluster metadata (`cluster/`, opened before the shards start).
const OURS: [&str; 3] = [LOCK, "ringmq.sock", "cluster"];
const MAGIC: &[u8; 8] = b"RINGMQST";

pub type Db<'e> = Database<'e, Raw, Raw>;

/// The data dir's lock: held until dropped (every shard's store keeps it alive).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Creates `dir` (and missing parents) with mode 0700. An existing dir
/// keeps its mode: one open to others gets a warning, not a change.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(dir, e))?;
    if let Ok(m) = dir.metadata() {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "store: data dir has mode {mode:o}, open to other users (ringmq creates it 0700)"
            );
        }
    }
    Ok(())
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `<dir>/ringmq.lock` (mode 0600; an
/// older, looser lock file is restricted first). A held lock's error names
/// the holder as the kernel reports it ([`super::holder`]).
pub fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    create_private_dir(dir)?;
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    if file
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::io(&path, e))?;
    }
    // SAFETY: flock on a file descriptor we own and keep open; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder: super::holder::describe(&file),
            });
        }
        return Err(StoreError::io(&path, err));
    }
    // Older builds wrote their pid here; the holder is read from the kernel now.
    let _ = file.set_len(0);
    Ok(DirLock { _file: file })
}

/// Checks (or, for an empty dir, writes) the marker file. `Ok(true)`: the
/// dir has an older format that [`migrates`]; open the envs with `migrate` set, then
/// call [`finish_migration`].
pub fn check_marker(dir: &Path, shards: u16) -> Result<bool, StoreError> {
    let path = dir.join(MARKER);
    match fs::read(&path) {
        Ok(text) => parse_marker(dir, &text, shards),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let others: Vec<String> = fs::read_dir(dir)
                .map_err(|e| StoreError::io(dir, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !OURS.contains(&n.as_str()))
                .collect();
            if let Some(first) = others.first() {
                return Err(StoreError::Foreign {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "no {MARKER} marker but {} entries, e.g. {first:?}",
                        others.len()
                    ),
                });
            }
            write_marker(dir, shards).map(|()| false)
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Writes the marker for this build's format (atomically: temp file, rename).
fn write_marker(dir: &Path, shards: u16) -> Result<(), StoreError> {
    let path = dir.join(MARKER);
    let body = format!("{MARKER_HEAD}\nformat {FORMAT}\nshards {shards}\n");
    let tmp = dir.join("RINGMQ.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(&path, e))
}

/// Every environment's meta row is at [`FORMAT`]: the marker follows.
pub fn finish_migration(dir: &Path, shards: u16) -> Result<(), StoreError> {
    write_marker(dir, shards)?;
    tracing::info!(dir = %dir.display(), "store: data dir migrated to format {FORMAT}");
    Ok(())
}

fn parse_marker(dir: &Path, text: &[u8], shards: u16) -> Result<bool, StoreError> {
    let foreign = |detail: &str| StoreError::Foreign {
        path: dir.to_path_buf(),
        detail: format!("{MARKER} marker: {detail}"),
    };
    let text = std::str::from_utf8(text).map_err(|_| foreign("not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_HEAD) {
        return Err(foreign("unknown first line"));
    }
    let mut format = None;
    let mut found_shards = None;
    for line in lines {
        match line.split_once(' ') {
            Some(("format", v)) => format = v.trim().parse::<u32>().ok(),
            Some(("shards", v)) => found_shards = v.trim().parse::<u16>().ok(),
            _ => {}
        }
    }
    let format = format.ok_or_else(|| foreign("no readable format line"))?;
    if format != FORMAT && !migrates(format) {
        return Err(StoreError::UnsupportedFormat {
            path: dir.to_path_buf(),
            found: format,
            supported: FORMAT,
        });
    }
    let found = found_shards.ok_or_else(|| foreign("no readable shards line"))?;
    if found != shards {
        return Err(StoreError::ShardCountMismatch {
            path: dir.to_path_buf(),
            found,
            configured: shards,
        });
    }
    Ok(migrates(format))
}

/// Directory of shard `shard`'s environment.
pub fn shard_dir(dir: &Path, shard: u16) -> PathBuf {
    dir.join(format!("shard-{shard}"))
}

/// Rounds up to the page size (LMDB requires a multiple of it).
pub fn page_round(n: usize) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    n.div_ceil(page).max(1) * page
}

/// Opens (creating if new) shard `shard`'s environment and checks its meta
/// row (`migrate`: a format [`MIGRATES_FROM`] row is rewritten to [`FORMAT`]).
pub fn open_env(
    dir: &Path,
    shard: u16,
    shards: u16,
    map_size: usize,
    migrate: bool,
) -> Result<Env<WithoutTls>, StoreError> {
    let path = shard_dir(dir, shard);
    create_private_dir(&path)?;
    let existed = path.join("data.mdb").metadata().is_ok_and(|m| m.len() > 0);
    // SAFETY: the data dir's flock (held by our caller) keeps other ringmq
    // processes out, and nothing else in this process maps these files.
    let env = unsafe {
        EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(page_round(map_size))
            .max_dbs(4)
            .open(&path)
    }
    .map_err(|e| match e {
        heed::Error::EnvAlreadyOpened => StoreError::Locked {
            path: path.clone(),
            holder: "held by this process".into(),
        },
        e => match StoreError::from_heed(&path, e) {
            StoreError::Io { path, detail } => StoreError::Corrupt {
                path,
                detail: format!("LMDB cannot open it: {detail}"),
            },
            other => other,
        },
    })?;
    let meta = meta_value(shard, shards);
    match open_db(&env).map_err(|e| StoreError::from_heed(&path, e))? {
        Some(db) => {
            let found = check_meta(&env, db, &path, shard, shards, migrate)?;
            if found != FORMAT {
                let mut wtxn = env
                    .write_txn()
                    .map_err(|e| StoreError::from_heed(&path, e))?;
                db.put(&mut wtxn, keys::META_FORMAT, &meta)
                    .and_then(|()| wtxn.commit())
                    .map_err(|e| StoreError::from_heed(&path, e))?;
            }
        }
        None if existed && env_has_other_data(&env) => {
            return Err(StoreError::Foreign {
                path,
                detail: "LMDB environment without a ringmq database".into(),
            })
        }
        None => create_db(&env, &meta).map_err(|e| StoreError::from_heed(&path, e))?,
    }
    Ok(env)
}

fn meta_value(shard: u16, shards: u16) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&FORMAT.to_be_bytes());
    v.extend_from_slice(&shard.to_be_bytes());
    v.extend_from_slice(&shards.to_be_bytes());
    v
}

/// Returns the format found ([`FORMAT`], or an older one when migrating).
fn check_meta(
    env: &Env<WithoutTls>,
    db: Db<'_>,
    path: &Path,
    shard: u16,
    shards: u16,
    migrate: bool,
) -> Result<u32, StoreError> {
    let rtxn = env.read_txn().map_err(|e| StoreError::from_heed(path, e))?;
    let meta = db
        .get(&rtxn, keys::META_FORMAT)
        .map_err(|e| StoreError::from_heed(path, e))?
        .ok_or_else(|| StoreError::corrupt(path, "ringmq database without its format row"))?;
    if meta.len() < 16 || &meta[..8] != MAGIC {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
            detail: "format row without the ringmq magic".into(),
        });
    }
    let found = u32::from_be_bytes([meta[8], meta[9], meta[10], meta[11]]);
    if found != FORMAT && !(migrate && migrates(found)) {
        return Err(StoreError::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT,
        });
    }
    let (s, n) = (
        u16::from_be_bytes([meta[12], meta[13]]),
        u16::from_be_bytes([meta[14], meta[15]]),
    );
    if (s, n) != (shard, shards) {
        return Err(StoreError::corrupt(
            path,
            format!("holds shard {s} of {n}, expected shard {shard} of {shards} (moved files?)"),
        ));
    }
    Ok(found)
}

/// The one database handle, if it exists.
pub fn open_db(env: &Env<WithoutTls>) -> Result<Option<Db<'_>>, heed::Error> {
    let rtxn = env.read_txn()?;
    let r = env.open_databases_and_commit(rtxn, |opener, rtxn| {
        opener
            .open_database::<Raw, Raw>(rtxn, Some(keys::DB_NAME))
            .map(CommitOrAbort::<_, ()>::Commit)
    })?;
    Ok(r.unwrap_commit())
}

fn create_db(env: &Env<WithoutTls>, meta: &[u8]) -> Result<(), heed::Error> {
    let wtxn = env.write_txn()?;
    let db = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Raw, Raw>(wtxn, Some(keys::DB_NAME))
                .map(CommitOrAbort::<_, ()>::Commit)
        })?
        .unwrap_commit();
    let mut wtxn = env.write_txn()?;
    db.put(&mut wtxn, keys::META_FORMAT, meta)?;
    wtxn.commit()
}

fn env_has_other_data(env: &Env<WithoutTls>) -> bool {
    env.unnamed_database_stat().entries > 0
}
