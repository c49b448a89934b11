//! Per-link counters, written by the shard that runs the links (shard 0) and
//! read by the admin socket and the metrics endpoint.

use crate::stats::Counter;
use std::sync::Arc;

/// Counters of one node link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// The peer's node id.
    pub peer: u64,
    /// 1 while the link is up.
    pub up: Counter,
    /// Links established (handshake done), both directions.
    pub connects: Counter,
    /// Publishes sent to / received from the peer.
    pub msgs_out: Counter,
    pub msgs_in: Counter,
    /// Bytes written / read on the socket.
    pub bytes_out: Counter,
    pub bytes_in: Counter,
    /// Writes (one per tick with something to send).
    pub batches_out: Counter,
    /// Bytes queued for the peer now.
    pub queue_bytes: Counter,
    /// Publishes dropped because the queue was full.
    pub dropped: Counter,
    /// Last measured round trip, microseconds.
    pub rtt_us: Counter,
    /// Links closed on bad input (malformed frame, protocol violation).
    pub errors: Counter,
    /// Handshakes refused (foreign cluster, unknown node, other version).
    pub refused: Counter,
    /// Route changes sent / applied from the peer; full syncs sent; digests that did not match.
    pub routes_out: Counter,
    pub routes_in: Counter,
    pub syncs_out: Counter,
    pub digest_mismatches: Counter,
    /// Filters the peer has subscribers on (as last told).
    pub peer_routes: Counter,
    /// Acked copies (QoS 1/2, durability `sync`) sent / received.
    pub acked_out: Counter,
    pub acked_in: Counter,
    /// Acked copies written again on a new connection (the peer had not answered).
    pub resent: Counter,
    /// Acked copies the peer did not answer within the bound: their
    /// publishers were refused.
    pub ack_timeouts: Counter,
    /// Acked copies the peer could not store (answered `NotStored`).
    pub not_stored: Counter,
    /// Acked copies waiting for the peer's answer now.
    pub unacked: Counter,
    /// The outbox (`outbox.rs`): copies held for the peer now, their bytes;
    /// copies stored, sent and answered (rows deleted), dropped (the peer
    /// left or could not store them), and publishes refused because it was full.
    pub outbox_rows: Counter,
    pub outbox_bytes: Counter,
    pub outbox_stored: Counter,
    pub outbox_sent: Counter,
    pub outbox_dropped: Counter,
    pub outbox_refused: Counter,
    /// Retained messages sent when the link came up / kept from the peer's.
    pub retained_out: Counter,
    pub retained_in: Counter,
}

/// Every link's counters, one per peer (links to nodes added at run time
/// join the list; a removed node's leave it).
#[derive(Debug, Default)]
pub struct ClusterStats {
    links: std::sync::RwLock<Vec<Arc<LinkStats>>>,
    /// Connections on the link port refused before a peer was known (bad hello, garbage).
    pub refused_unknown: Counter,
    /// SUBACKs released by the route-ack timeout rather than by every peer's ack.
    pub route_ack_timeouts: Counter,
    /// Cross-node session takeovers (every shard adds: atomics).
    pub handover: super::handover::HandoverStats,
}

impl ClusterStats {
    pub fn new(peers: &[u64]) -> Self {
        let st = ClusterStats::default();
        for &p in peers {
            st.add(p);
        }
        st
    }

    /// The links' counters now.
    pub fn links(&self) -> Vec<Arc<LinkStats>> {
        self.links.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counters of a new link to `peer`.
    pub fn add(&self, peer: u64) -> Arc<LinkStats> {
        let l = Arc::new(LinkStats {
            peer,
            ..LinkStats::default()
        });
        self.links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(l.clone());
        l
    }

    /// The link to `peer` is gone (the node left the cluster).
    pub fn remove(&self, peer: u64) {
        self.links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| l.peer != peer);
    }
}
