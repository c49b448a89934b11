//! Opening the data dir and reading everything back: one write transaction
//! per shard (sessions expired while the broker was down are purged in it,
//! sessions that were connected when it died get their disconnect time),
//! shards read in parallel, retained messages merged (newest wins) and the
//! superseded rows compacted away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use heed::{Env, RoTxn, WithoutTls};
use ringmq_codec::{PacketId, TopicName};

use super::batch::{self, MapPolicy};
use super::engine::Backend;
use super::error::StoreError;
use super::keys;
use super::layout::{self, Db};
use super::prepared;
use super::records::{self, RecoveredSession, RetainedRecord, SessionKey};
use super::StoreOptions;
use super::{unix_ms, StoreHandle};

/// What one shard held, plus the handle to start its store with.
pub struct ShardRecovery {
    pub shard: u16,
    pub sessions: Vec<RecoveredSession>,
    /// Call [`StoreHandle::start`] on the shard's executor.
    pub handle: StoreHandle,
}

/// Everything on disk, ready to rebuild the broker's state.
pub struct Recovery {
    /// Index = shard id.
    pub shards: Vec<ShardRecovery>,
    /// Retained messages of all shards, merged (every shard's replica starts from this).
    pub retained: Vec<RetainedRecord>,
    pub stats: RecoveryStats,
}

/// Figures for the startup log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoveryStats {
    pub elapsed: Duration,
    pub sessions: usize,
    pub purged_sessions: u64,
    pub subscriptions: usize,
    pub outbound: usize,
    pub inbound_qos2: usize,
    pub retained: usize,
    /// Rows whose session row was gone (deleted).
    pub orphans: usize,
    /// Prepared inbound QoS 2 messages whose delivery to other shards the broker completes.
    pub prepared_qos2: usize,
    /// Origin rows no prepared message refers to (deleted).
    pub orphan_origins: usize,
}

/// Session rows to write back (key, encoded record).
type Rewrites = Vec<(SessionKey, Vec<u8>)>;

type RawRetained = Vec<(Bytes, u64, Option<super::StoredMessage>)>;

struct Loaded {
    sessions: Vec<RecoveredSession>,
    retained: RawRetained,
    /// Origin rows: (origin shard, nonce).
    origins: Vec<(u16, u64)>,
    /// Rows about other nodes' acked copies (last seen, node origins).
    peer: super::PeerRows,
    /// The cluster outbox's rows and this start's link run.
    outbox: super::outbox::LinkRows,
    stats: RecoveryStats,
    next_key: SessionKey,
}

/// Opens (creating if needed) `<dir>` for `shards` shards and loads it.
/// With `Durability::None` nothing on disk is touched.
pub fn open(dir: &Path, shards: u16, opts: &StoreOptions) -> Result<Recovery, StoreError> {
    let start = Instant::now();
    if opts.durability == crate::config::Durability::None {
        let shards = (0..shards)
            .map(|shard| ShardRecovery {
                shard,
                sessions: Vec::new(),
                handle: StoreHandle::memory(),
            })
            .collect();
        return Ok(Recovery {
            shards,
            retained: Vec::new(),
            stats: RecoveryStats::default(),
        });
    }
    let lock = Arc::new(layout::lock_dir(dir)?);
    let migrate = layout::check_marker(dir, shards)?;
    let envs = (0..shards)
        .map(|s| layout::open_env(dir, s, shards, opts.initial_map_size, migrate))
        .collect::<Result<Vec<_>, _>>()?;
    if migrate {
        layout::finish_migration(dir, shards)?;
    }
    let now = unix_ms();
    let loaded: Vec<Result<Loaded, StoreError>> = std::thread::scope(|scope| {
        let tasks: Vec<_> = envs
            .iter()
            .map(|env| scope.spawn(move || load_shard(env, now)))
            .collect();
        tasks
            .into_iter()
            .map(|t| t.join().expect("store: recovery thread panicked"))
            .collect()
    });
    let mut stats = RecoveryStats::default();
    let mut shard_sessions = Vec::new();
    let mut raw_retained = Vec::new();
    let mut next_keys = Vec::new();
    let mut origins = Vec::new();
    let mut peer_seen = Vec::new();
    let mut outboxes = Vec::new();
    for l in loaded {
        let l = l?;
        add_stats(&mut stats, &l.stats);
        shard_sessions.push(l.sessions);
        raw_retained.push(l.retained);
        next_keys.push(l.next_key);
        origins.push(l.origins);
        peer_seen.push(l.peer);
        outboxes.push(l.outbox);
    }
    let (next_nonces, resolved) = prepared::resolve(&envs, &mut shard_sessions, &origins)?;
    // Per shard, the oldest prepared row with other nodes among its targets.
    let oldest: Vec<Option<u64>> = shard_sessions
        .iter()
        .map(|list| {
            list.iter()
                .flat_map(|s| s.inbound_qos2.iter())
                .filter_map(|i| i.prepared.as_ref())
                .filter(|p| !p.nodes.is_empty())
                .map(|p| p.nonce)
                .min()
        })
        .collect();
    stats.prepared_qos2 = resolved.prepared;
    stats.orphan_origins = resolved.orphans;
    let (retained, mut tombstones) = merge_retained(&envs, raw_retained)?;
    stats.retained = retained.len();
    stats.elapsed = start.elapsed();
    let map = MapPolicy {
        max: opts.max_map_size,
    };
    // Shard 0 runs the node links: its run is stored before anything starts.
    if let (Some(env), Some(o)) = (envs.first(), outboxes.first_mut()) {
        o.run = super::outbox::save_run(env, map, o.run)?;
    }
    let shards = envs
        .into_iter()
        .zip(shard_sessions)
        .zip(
            next_keys
                .into_iter()
                .zip(next_nonces)
                .zip(oldest)
                .map(|((k, n), o)| (k, n, o)),
        )
        .zip(peer_seen.into_iter().zip(outboxes))
        .enumerate()
        .map(
            |(i, (((env, sessions), next), (peer_seen, outbox)))| ShardRecovery {
                shard: i as u16,
                sessions,
                handle: StoreHandle::disk(
                    Backend {
                        env,
                        map,
                        _lock: lock.clone(),
                    },
                    opts.durability,
                    next,
                    peer_seen,
                )
                .with_outbox(outbox)
                // Shard 0 runs the node links: it tells returning nodes of recent deletions.
                .with_tombstones(if i == 0 {
                    std::mem::take(&mut tombstones)
                } else {
                    Vec::new()
                }),
            },
        )
        .collect();
    Ok(Recovery {
        shards,
        retained,
        stats,
    })
}

fn add_stats(into: &mut RecoveryStats, s: &RecoveryStats) {
    into.sessions += s.sessions;
    into.purged_sessions += s.purged_sessions;
    into.subscriptions += s.subscriptions;
    into.outbound += s.outbound;
    into.inbound_qos2 += s.inbound_qos2;
    into.orphans += s.orphans;
}

fn db_of(env: &Env<WithoutTls>) -> Result<Db<'_>, StoreError> {
    let path = env.path();
    layout::open_db(env)
        .map_err(|e| StoreError::from_heed(path, e))?
        .ok_or_else(|| StoreError::corrupt(path, "ringmq database vanished"))
}

fn load_shard(env: &Env<WithoutTls>, now_ms: u64) -> Result<Loaded, StoreError> {
    let path = env.path().to_path_buf();
    let heed_err = |e| StoreError::from_heed(&path, e);
    let db = db_of(env)?;
    let mut wtxn = env.write_txn().map_err(heed_err)?;
    let mut stats = RecoveryStats {
        purged_sessions: batch::purge_expired(db, &mut wtxn, now_ms).map_err(heed_err)?,
        ..Default::default()
    };
    let (mut sessions, rewrite) = read_sessions(db, &wtxn, &path, now_ms)?;
    for (key, val) in rewrite {
        db.put(&mut wtxn, &keys::session_prefix(keys::SESSION, key), &val)
            .map_err(heed_err)?;
    }
    let index: HashMap<SessionKey, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key, i))
        .collect();
    let orphans = read_children(db, &wtxn, &path, &index, &mut sessions, &mut stats)?;
    stats.orphans = orphans.len();
    for key in orphans {
        db.delete(&mut wtxn, &key).map_err(heed_err)?;
    }
    let mut retained = Vec::new();
    for entry in db.prefix_iter(&wtxn, &[keys::RETAINED]).map_err(heed_err)? {
        let (k, v) = entry.map_err(heed_err)?;
        let (at, msg) = records::read_retained(Bytes::copy_from_slice(v))
            .map_err(|e| StoreError::corrupt(&path, e))?;
        retained.push((Bytes::copy_from_slice(&k[1..]), at, msg));
    }
    let mut origins = Vec::new();
    for entry in db.prefix_iter(&wtxn, &[keys::ORIGIN]).map_err(heed_err)? {
        let (k, _) = entry.map_err(heed_err)?;
        origins.push(
            keys::split_origin(k).ok_or_else(|| StoreError::corrupt(&path, "bad origin key"))?,
        );
    }
    let mut peer_seen = Vec::new();
    for entry in db
        .prefix_iter(&wtxn, &[keys::PEER_SEEN])
        .map_err(heed_err)?
    {
        let (k, v) = entry.map_err(heed_err)?;
        let node = keys::tail_u64(&k[1..]);
        let (stream, id) = (
            v.get(..8).and_then(keys::tail_u64),
            v.get(8..).and_then(keys::tail_u64),
        );
        match (node, stream, id) {
            (Some(n), Some(s), Some(i)) => peer_seen.push((n, s, i)),
            _ => return Err(StoreError::corrupt(&path, "bad peer-seen row")),
        }
    }
    let mut node_origins = Vec::new();
    for entry in db
        .prefix_iter(&wtxn, &[keys::NODE_ORIGIN])
        .map_err(heed_err)?
    {
        let (k, _) = entry.map_err(heed_err)?;
        node_origins.push(
            keys::split_node_origin(k)
                .ok_or_else(|| StoreError::corrupt(&path, "bad node origin key"))?,
        );
    }
    let mut stubs = Vec::new();
    for entry in db.prefix_iter(&wtxn, &[keys::STUB]).map_err(heed_err)? {
        let (k, v) = entry.map_err(heed_err)?;
        stubs.push((k[1..].to_vec(), v.to_vec()));
    }
    let mut moving = Vec::new();
    for entry in db.prefix_iter(&wtxn, &[keys::MOVING]).map_err(heed_err)? {
        let (k, v) = entry.map_err(heed_err)?;
        moving.push((k[1..].to_vec(), v.to_vec()));
    }
    let outbox = super::outbox::load(db, &mut wtxn, &path)?;
    wtxn.commit().map_err(heed_err)?;
    stats.sessions = sessions.len();
    let next_key = sessions.iter().map(|s| s.key + 1).max().unwrap_or(1);
    Ok(Loaded {
        sessions,
        retained,
        origins,
        peer: super::PeerRows {
            seen: peer_seen,
            origins: node_origins,
            stubs,
            moving,
        },
        outbox,
        stats,
        next_key,
    })
}

/// Session rows; sessions connected at the crash get `disconnected_at = now`
/// (returned for rewriting, so the expiry clock runs from this restart).
fn read_sessions(
    db: Db<'_>,
    txn: &RoTxn<'_, WithoutTls>,
    path: &Path,
    now_ms: u64,
) -> Result<(Vec<RecoveredSession>, Rewrites), StoreError> {
    let heed_err = |e| StoreError::from_heed(path, e);
    let mut sessions = Vec::new();
    let mut rewrite = Vec::new();
    for entry in db.prefix_iter(txn, &[keys::SESSION]).map_err(heed_err)? {
        let (k, v) = entry.map_err(heed_err)?;
        let key = keys::split_session_key(k)
            .map(|(s, _)| s)
            .ok_or_else(|| StoreError::corrupt(path, "short session key"))?;
        let mut record = records::read_session(Bytes::copy_from_slice(v))
            .map_err(|e| StoreError::corrupt(path, format!("session {key}: {e}")))?;
        if record.disconnected_at_ms.is_none() {
            record.disconnected_at_ms = Some(now_ms);
            let mut val = Vec::new();
            records::put_session(&mut val, &record);
            rewrite.push((key, val));
        }
        sessions.push(RecoveredSession::new(key, record));
    }
    Ok((sessions, rewrite))
}

/// Subscriptions, outbound and inbound rows, attached to their sessions in
/// key order (so outbound comes back in `seq` order). Returns orphan keys.
fn read_children(
    db: Db<'_>,
    txn: &RoTxn<'_, WithoutTls>,
    path: &Path,
    index: &HashMap<SessionKey, usize>,
    sessions: &mut [RecoveredSession],
    stats: &mut RecoveryStats,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let heed_err = |e| StoreError::from_heed(path, e);
    let mut orphans = Vec::new();
    for table in keys::SESSION_CHILDREN {
        for entry in db.prefix_iter(txn, &[table]).map_err(heed_err)? {
            let (k, v) = entry.map_err(heed_err)?;
            let (key, rest) = keys::split_session_key(k)
                .ok_or_else(|| StoreError::corrupt(path, "short session child key"))?;
            let Some(&i) = index.get(&key) else {
                orphans.push(k.to_vec());
                continue;
            };
            let s = &mut sessions[i];
            let v = Bytes::copy_from_slice(v);
            let bad = |e| StoreError::corrupt(path, format!("session {key}: {e}"));
            match table {
                keys::SUBSCRIPTION => {
                    s.subscriptions
                        .push(records::read_subscription(rest, v).map_err(bad)?);
                    stats.subscriptions += 1;
                }
                keys::OUTBOUND => {
                    let seq = keys::tail_u64(rest).ok_or_else(|| bad(bad_key()))?;
                    s.outbound
                        .push(records::read_outbound(seq, v).map_err(bad)?);
                    s.next_seq = seq + 1;
                    stats.outbound += 1;
                }
                _ => {
                    let id = keys::tail_u16(rest)
                        .and_then(PacketId::new)
                        .ok_or_else(|| bad(bad_key()))?;
                    s.inbound_qos2
                        .push(records::read_inbound(id, v).map_err(bad)?);
                    stats.inbound_qos2 += 1;
                }
            }
        }
    }
    Ok(orphans)
}

fn bad_key() -> super::enc::BadRecord {
    super::enc::BadRecord("key")
}

/// Newest `(stored_at, shard)` wins per topic; then, in two phases so a
/// crash in between never resurrects a deleted message, the losing rows and
/// the winning tombstones are deleted.
/// Retained deletions younger than this are kept (their tombstone rows stay and
/// shard 0 gets them): a cluster node that was away meanwhile is told
/// (`cluster/retained.rs`). Older ones are compacted away at startup.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// At most this many tombstones are kept (the newest).
pub const TOMBSTONES_MAX: usize = 65_536;

/// A retained deletion kept: the topic and when it happened (unix ms).
pub type Tombstone = (Bytes, u64);

fn merge_retained(
    envs: &[Env<WithoutTls>],
    per_shard: Vec<RawRetained>,
) -> Result<(Vec<RetainedRecord>, Vec<Tombstone>), StoreError> {
    let keep_after = super::unix_ns().saturating_sub(TOMBSTONE_KEEP.as_nanos() as u64);
    let mut best: HashMap<Bytes, (u64, usize)> = HashMap::new();
    for (shard, rows) in per_shard.iter().enumerate() {
        for (topic, at, _) in rows {
            let e = best.entry(topic.clone()).or_insert((*at, shard));
            if (*at, shard) > *e {
                *e = (*at, shard);
            }
        }
    }
    let mut losers: Vec<Vec<Bytes>> = vec![Vec::new(); envs.len()];
    let mut tombstones: Vec<Vec<Bytes>> = vec![Vec::new(); envs.len()];
    let mut kept: Vec<(u64, usize, Bytes)> = Vec::new();
    let mut out = Vec::new();
    for (shard, rows) in per_shard.into_iter().enumerate() {
        for (topic, at, msg) in rows {
            if best.get(&topic) != Some(&(at, shard)) {
                losers[shard].push(topic);
                continue;
            }
            let Some(message) = msg else {
                if at >= keep_after {
                    kept.push((at, shard, topic));
                } else {
                    tombstones[shard].push(topic);
                }
                continue;
            };
            let name = TopicName::try_from(topic).map_err(|_| {
                StoreError::corrupt(envs[shard].path(), "retained row with an invalid topic")
            })?;
            out.push(RetainedRecord {
                topic: name,
                message,
                stored_at_ns: at,
            });
        }
    }
    // The newest TOMBSTONES_MAX stay; the rest go like older ones.
    kept.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
    for (_, shard, topic) in kept.drain(TOMBSTONES_MAX.min(kept.len())..) {
        tombstones[shard].push(topic);
    }
    delete_retained_rows(envs, &losers)?;
    delete_retained_rows(envs, &tombstones)?;
    let kept = kept
        .into_iter()
        .map(|(at, _, topic)| (topic, at / 1_000_000))
        .collect();
    Ok((out, kept))
}

fn delete_retained_rows(envs: &[Env<WithoutTls>], rows: &[Vec<Bytes>]) -> Result<(), StoreError> {
    for (env, topics) in envs.iter().zip(rows) {
        if topics.is_empty() {
            continue;
        }
        let path: PathBuf = env.path().to_path_buf();
        let heed_err = |e| StoreError::from_heed(&path, e);
        let db = db_of(env)?;
        let mut wtxn = env.write_txn().map_err(heed_err)?;
        let mut key = Vec::new();
        for t in topics {
            key.clear();
            keys::push_retained(&mut key, t);
            db.delete(&mut wtxn, &key).map_err(heed_err)?;
        }
        wtxn.commit().map_err(heed_err)?;
    }
    Ok(())
}
