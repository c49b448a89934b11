//! Fencing: a thread that watches ownership changes this node applies and
//! tells the home shard of each client whose session moved to another node
//! (at a later epoch) to close and discard it.
//!
//! At start (the data dir may hold sessions restored from disk whose
//! ownership moved on while this node was down) every ownership key this
//! node has applied is checked once, after the watch is registered so no
//! change falls between the two.

use super::stats::{inc, ClusterStats};
use ringmq_raft::facade::keys;
use ringmq_raft::facade::owner::decode_owner;
use ringmq_raft::RaftHandle;
use ringmq_shard::ownership::Fencer;
use std::sync::Arc;

/// Starts the fencing thread; it ends when the raft node stops.
pub fn start(
    handle: &RaftHandle,
    fencer: Fencer,
    stats: Arc<ClusterStats>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let me = handle.id();
    let changes = handle
        .watch(keys::OWN)
        .map_err(|e| format!("cluster: cannot watch ownership: {e}"))?;
    let existing = handle
        .scan_local(keys::OWN)
        .map_err(|e| format!("cluster: cannot read ownership: {e}"))?;
    let fence = move |key: &[u8], version: u64, value: Option<&[u8]>| {
        let (Some(client), Some(owner)) = (keys::own_client(key), value.and_then(decode_owner))
        else {
            return; // a release: nobody owns it now
        };
        if owner == me {
            return;
        }
        if let Ok(client) = std::str::from_utf8(client) {
            fencer.fence(client, version);
            inc(&stats.fences_sent);
        }
    };
    std::thread::Builder::new()
        .name("ringmq-fence".into())
        .spawn(move || {
            for (key, v) in &existing {
                fence(key, v.version, Some(v.value.as_slice()));
            }
            drop(existing);
            while let Ok(c) = changes.recv() {
                fence(&c.key, c.version, c.value.as_deref());
            }
        })
        .map_err(|e| format!("cluster: cannot start the fence thread: {e}"))
}
