//! Counters of the node-to-node transport.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the transport refused or carried (read with [`NetStats::get`]).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Handshakes refused: another protocol version.
    pub refused_version: AtomicU64,
    /// Handshakes refused: another cluster id.
    pub refused_cluster: AtomicU64,
    /// Handshakes refused: addressed to another node id, or from this one.
    pub refused_node: AtomicU64,
    /// Connections closed on a frame that is not a handshake or not a message.
    pub malformed: AtomicU64,
    /// Connections closed on a frame over the size limit.
    pub oversized: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failed: AtomicU64,
    /// Connections accepted past the handshake.
    pub accepted: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
}

impl NetStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
