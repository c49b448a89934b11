//! The shards' door to session ownership ([`OwnershipGate`]), on the raft
//! crate's batched ownership facade.
//!
//! A claim reads the owner this node has applied, then compare-and-sets
//! from that epoch; a conflict (someone moved it meanwhile) retries from
//! the epoch the conflict reports, a few times: a CONNECT always takes the
//! session over ([MQTT-3.1.4-3]), across nodes as on one. The futures are
//! channel round trips to the control-plane thread, so a glommio shard
//! awaits them without blocking.

use super::stats::{inc, ClusterStats};
use ringmq_raft::{ClaimError, Ownership};
use ringmq_shard::ownership::{Claim, ClaimFuture, ClaimRefused, OwnershipGate};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Attempts of one claim before the CONNECT is refused.
const ATTEMPTS: usize = 5;

pub struct RaftGate {
    pub(super) ownership: Ownership,
    pub(super) node: u64,
    pub(super) stats: Arc<ClusterStats>,
}

impl OwnershipGate for RaftGate {
    fn claim(&self, client_id: &[u8]) -> ClaimFuture {
        let own = self.ownership.clone();
        let stats = self.stats.clone();
        let id = client_id.to_vec();
        Box::pin(async move {
            let started = Instant::now();
            // The owner the CAS replaces: a takeover asks it for the session.
            let mut previous = own
                .owner_local(&id)
                .ok()
                .flatten()
                .map(|o| (o.node, o.epoch));
            let mut expected = previous.map_or(0, |(_, e)| e);
            for _ in 0..ATTEMPTS {
                match own.claim_here(&id, expected).await {
                    Ok(epoch) => {
                        stats.claim_won(started.elapsed());
                        return Ok(Claim { epoch, previous });
                    }
                    Err(ClaimError::Conflict { owner, epoch }) => {
                        inc(&stats.conflicts);
                        previous = owner.map(|n| (n, epoch));
                        expected = epoch;
                    }
                    Err(ClaimError::Unavailable(e)) => {
                        tracing::debug!(error = %e, "ownership claim: cluster unavailable");
                        return Err(ClaimRefused::Unavailable);
                    }
                }
            }
            Err(ClaimRefused::Unavailable)
        })
    }

    fn owner(&self, client_id: &[u8]) -> Option<(u64, u64)> {
        let o = self.ownership.owner_local(client_id).ok().flatten()?;
        Some((o.node, o.epoch))
    }

    fn release(&self, client_id: &[u8], epoch: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let own = self.ownership.clone();
        let stats = self.stats.clone();
        let id = client_id.to_vec();
        Box::pin(async move {
            inc(&stats.releases);
            // A conflict means it moved on: nothing of ours to release.
            let _ = own.release(&id, epoch).await;
        })
    }

    fn node_id(&self) -> u64 {
        self.node
    }

    fn fenced(&self) {
        inc(&self.stats.fenced);
    }

    fn refused(&self) {
        inc(&self.stats.failures);
    }
}
