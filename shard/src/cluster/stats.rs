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
}

/// Every link's counters, one per peer in config order.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub links: Vec<Arc<LinkStats>>,
    /// Connections on the link port refused before a peer was known (bad hello, garbage).
    pub refused_unknown: Counter,
    /// SUBACKs released by the route-ack timeout rather than by every peer's ack.
    pub route_ack_timeouts: Counter,
}

impl ClusterStats {
    pub fn new(peers: &[u64]) -> Self {
        ClusterStats {
            links: peers
                .iter()
                .map(|&peer| {
                    Arc::new(LinkStats {
                        peer,
                        ..LinkStats::default()
                    })
                })
                .collect(),
            ..ClusterStats::default()
        }
    }
}
