//! Counters of the broker's side of the cluster: ownership claims at
//! CONNECT (with a latency histogram), conflicts, failures and fencings.
//! Written from any shard (atomic adds), read by metrics and status.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the claim latency buckets, seconds.
pub const CLAIM_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// CONNECTs whose claim won (one epoch each).
    pub claims: AtomicU64,
    /// Claims that found another epoch than expected and were retried.
    pub conflicts: AtomicU64,
    /// Claims the cluster could not decide (no quorum, no leader).
    pub failures: AtomicU64,
    /// Releases sent (a session removed here gives its ownership back).
    pub releases: AtomicU64,
    /// Fences sent to shards (ownership moved to another node).
    pub fences_sent: AtomicU64,
    /// Sessions actually closed and discarded by a fence.
    pub fenced: AtomicU64,
    /// Won claims by latency bucket (last: above every bound), and the sum.
    buckets: [AtomicU64; CLAIM_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// A copy for metrics and `ctl cluster status`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct OwnershipCounters {
    pub claims: u64,
    pub conflicts: u64,
    pub failures: u64,
    pub releases: u64,
    pub fences_sent: u64,
    pub fenced: u64,
    /// Cumulative counts per bucket of [`CLAIM_BUCKETS`] (Prometheus `le`).
    pub claim_latency_buckets: Vec<u64>,
    pub claim_latency_sum_seconds: f64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl ClusterStats {
    pub fn claim_won(&self, elapsed: std::time::Duration) {
        inc(&self.claims);
        let s = elapsed.as_secs_f64();
        let i = CLAIM_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(CLAIM_BUCKETS.len());
        inc(&self.buckets[i]);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> OwnershipCounters {
        let mut acc = 0;
        let claim_latency_buckets = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        OwnershipCounters {
            claims: self.claims.load(Relaxed),
            conflicts: self.conflicts.load(Relaxed),
            failures: self.failures.load(Relaxed),
            releases: self.releases.load(Relaxed),
            fences_sent: self.fences_sent.load(Relaxed),
            fenced: self.fenced.load(Relaxed),
            claim_latency_buckets,
            claim_latency_sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}
