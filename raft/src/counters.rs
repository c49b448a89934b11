//! What a node has done, for metrics: counted where it happens, read with
//! [`Counters::snapshot`] (relaxed loads; each counter has one writer task
//! at a time or is a plain `fetch_add`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Counters {
    /// Commands committed through this node's `write` (each one log entry).
    pub commits: AtomicU64,
    /// Ops in those commands.
    pub committed_ops: AtomicU64,
    /// Sum of their commit latencies, microseconds (mean = sum / commits).
    pub commit_us_total: AtomicU64,
    /// Writes that failed (timeout, no quorum, indeterminate, stopped).
    pub write_errors: AtomicU64,
    /// Log commits (one fsync each; a commit carries every append, vote,
    /// truncation and purge that queued while the previous one was on disk)
    /// and the entries they carried.
    pub appends: AtomicU64,
    pub appended_entries: AtomicU64,
    /// Terms this node has seen begin (elections anywhere in the cluster).
    pub terms_seen: AtomicU64,
    /// Times the known leader changed (including to "none").
    pub leader_changes: AtomicU64,
    /// Snapshots built here, installed here, and the size of the last one.
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub last_snapshot_bytes: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub commits: u64,
    pub committed_ops: u64,
    pub commit_us_total: u64,
    pub write_errors: u64,
    pub appends: u64,
    pub appended_entries: u64,
    pub terms_seen: u64,
    pub leader_changes: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub last_snapshot_bytes: u64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            commits: g(&self.commits),
            committed_ops: g(&self.committed_ops),
            commit_us_total: g(&self.commit_us_total),
            write_errors: g(&self.write_errors),
            appends: g(&self.appends),
            appended_entries: g(&self.appended_entries),
            terms_seen: g(&self.terms_seen),
            leader_changes: g(&self.leader_changes),
            snapshots_built: g(&self.snapshots_built),
            snapshots_installed: g(&self.snapshots_installed),
            last_snapshot_bytes: g(&self.last_snapshot_bytes),
        }
    }
}

pub(crate) fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}
