//! Exactly once across shards, the store's half: at recovery, every prepared
//! inbound QoS 2 row learns which target shards hold its origin row (their
//! copy is durable), origin rows no prepared row claims are deleted, and each
//! shard's nonce counter starts above every nonce still on disk.
//!
//! All environments are open in this one process before any client is
//! served, so this reads every shard; the broker then delivers each prepared
//! message to the targets without an origin row (`shard/src/confirm.rs`).

use std::collections::{HashMap, HashSet};

use heed::{Env, WithoutTls};

use super::error::StoreError;
use super::keys;
use super::records::RecoveredSession;

/// What resolution found, for the startup log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Resolved {
    /// Prepared rows (messages whose delivery recovery completes).
    pub prepared: usize,
    /// Origin rows deleted (no prepared row refers to them).
    pub orphans: usize,
}

/// `origins[s]`: the `(origin shard, nonce)` rows found on shard `s`.
/// Fills `Prepared::delivered`, deletes orphan origin rows and returns each
/// shard's first free nonce.
pub(crate) fn resolve(
    envs: &[Env<WithoutTls>],
    sessions: &mut [Vec<RecoveredSession>],
    origins: &[Vec<(u16, u64)>],
) -> Result<(Vec<u64>, Resolved), StoreError> {
    let mut holders: HashMap<(u16, u64), Vec<u16>> = HashMap::new();
    let mut next = vec![1u64; envs.len()];
    for (shard, rows) in origins.iter().enumerate() {
        for &(from, nonce) in rows {
            holders.entry((from, nonce)).or_default().push(shard as u16);
            if let Some(n) = next.get_mut(from as usize) {
                *n = (*n).max(nonce + 1);
            }
        }
    }
    let mut resolved = Resolved::default();
    let mut claimed: HashSet<(u16, u64)> = HashSet::new();
    for (shard, list) in sessions.iter_mut().enumerate() {
        for p in list
            .iter_mut()
            .flat_map(|s| s.inbound_qos2.iter_mut())
            .filter_map(|i| i.prepared.as_mut())
        {
            let id = (shard as u16, p.nonce);
            p.delivered = holders.get(&id).cloned().unwrap_or_default();
            claimed.insert(id);
            next[shard] = next[shard].max(p.nonce + 1);
            resolved.prepared += 1;
        }
    }
    for (shard, rows) in origins.iter().enumerate() {
        let orphans: Vec<_> = rows.iter().filter(|r| !claimed.contains(r)).collect();
        if orphans.is_empty() {
            continue;
        }
        resolved.orphans += orphans.len();
        let env = &envs[shard];
        let path = env.path().to_path_buf();
        let heed_err = |e| StoreError::from_heed(&path, e);
        let db = super::layout::open_db(env)
            .map_err(heed_err)?
            .ok_or_else(|| StoreError::corrupt(&path, "ringmq database vanished"))?;
        let mut wtxn = env.write_txn().map_err(heed_err)?;
        let mut key = Vec::new();
        for &&(from, nonce) in &orphans {
            key.clear();
            keys::push_origin(&mut key, from, nonce);
            db.delete(&mut wtxn, &key).map_err(heed_err)?;
        }
        wtxn.commit().map_err(heed_err)?;
    }
    Ok((next, resolved))
}
