//! What the admin socket and the metrics endpoint need from the broker: the
//! [`AdminBackend`] trait and the plain, serializable answers it gives.
//!
//! The admin and metrics servers run on their own threads; a backend answers
//! them by asking the shards over their control channels (never a lock on the
//! message path). `shard_backend.rs` implements it for the real broker;
//! tests of the protocol use a fake.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Machine-readable error codes of the admin protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line is not JSON (or not an object).
    BadJson,
    /// A known command with missing or wrong arguments.
    BadRequest,
    /// The `cmd` is not a command of this protocol.
    UnknownCommand,
    /// The client, session or retained message does not exist.
    NotFound,
    /// The broker cannot answer now (shutting down, shard not answering).
    Unavailable,
    /// Anything else.
    Internal,
}

/// An error answer: a code and a one-line message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    pub code: ErrorCode,
    pub message: String,
}

impl AdminError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, code_str(self.code))
    }
}

impl std::error::Error for AdminError {}

fn code_str(c: ErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `status`: the broker at a glance. Rates are filled in by the admin server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub version: String,
    pub uptime_secs: u64,
    pub shards: usize,
    pub connections: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// PUBLISH received per second, since the previous `status` (or start).
    pub messages_in_per_sec: f64,
    /// PUBLISH sent per second, since the previous `status` (or start).
    pub messages_out_per_sec: f64,
    pub draining: bool,
}

/// A client or session (`clients`, `client show`, `sessions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    /// The node serving it (cluster-wide `clients` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    pub shard: usize,
    pub connected: bool,
    /// Protocol level: 3 (3.1), 4 (3.1.1), 5 (5.0).
    pub protocol: u8,
    pub peer: Option<String>,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub session_expiry: u32,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
    /// Bytes of QoS 1/2 messages held (in flight and queued), against `max_queued_bytes`.
    #[serde(default)]
    pub held_bytes: u64,
    /// QoS 1/2 messages this session dropped: queue full by count, by bytes, all reasons.
    #[serde(default)]
    pub dropped_queue_full: u64,
    #[serde(default)]
    pub dropped_queue_bytes_full: u64,
    #[serde(default)]
    pub dropped_total: u64,
}

/// How one node answered a cluster-wide `clients` (the response's `nodes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnswer {
    pub node: u64,
    /// False: no rows of this node are in the list; `error` says why.
    pub answered: bool,
    /// Connected clients matching on that node (rows shown: at most `--limit`).
    pub clients: u64,
    pub shown: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The nodes a `clients` question covers and its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientsScope {
    /// Only this node (`None`: every node of the cluster).
    pub node: Option<u64>,
    /// Only this shard of each node.
    pub shard: Option<usize>,
    pub pattern: Option<String>,
    /// Rows per node at most.
    pub limit: u32,
    /// How long to wait for other nodes.
    pub wait: std::time::Duration,
}

/// One subscription (`subscriptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// One retained message (`retained list`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedInfo {
    pub topic: String,
    pub qos: u8,
    pub payload_len: usize,
}

/// A latency histogram: cumulative counts per upper bound, Prometheus style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `(upper bound in seconds, observations <= bound)`, bounds increasing.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Counters of one listener on one shard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerMetrics {
    /// The listener's URL (`mqtts://0.0.0.0:8883`).
    pub url: String,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open (gauge; counted on the shard that serves them).
    pub open: u64,
    /// Connections closed before CONNECT was accepted, by reason (handshake
    /// failures among them); only reasons seen at least once.
    pub handshake_failures: BTreeMap<String, u64>,
    /// TLS handshake time, when the listener has completed any.
    pub handshake: Option<Histogram>,
}

/// Counters of one shard, read without stopping it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardMetrics {
    pub shard: usize,
    /// Open connections (gauge).
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Failed accept(2) calls (out of descriptors, ...), each followed by a backoff.
    #[serde(default)]
    pub accept_errors: u64,
    /// io_uring backend: multishot receives ended on an empty buffer ring,
    /// and io_uring_enter calls that submitted.
    #[serde(default)]
    pub uring_buffers_dry: u64,
    #[serde(default)]
    pub uring_submits: u64,
    /// Bytes of packets still being received (gauge), and reads paused by
    /// the partial-packet budget.
    #[serde(default)]
    pub partial_bytes: u64,
    #[serde(default)]
    pub reads_paused: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    /// PUBLISH received, by QoS 0, 1, 2.
    pub messages_in: [u64; 3],
    /// PUBLISH sent, by QoS 0, 1, 2.
    pub messages_out: [u64; 3],
    /// PUBLISH payload bytes received by QoS, when the shard counts them.
    pub publish_bytes_in: Option<[u64; 3]>,
    /// PUBLISH payload bytes sent by QoS, when the shard counts them.
    pub publish_bytes_out: Option<[u64; 3]>,
    /// All bytes read from / written to sockets.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Outbound QoS 1/2 awaiting acknowledgement (gauge).
    pub inflight: u64,
    /// Messages queued for sessions (gauge).
    pub queued: u64,
    /// Closes by reason (`keep_alive_timeout`, `slow_consumer`, ...).
    pub closes: BTreeMap<String, u64>,
    /// Undelivered messages by reason (`qos0_buffer_full`, `queue_full`, ...).
    pub drops: BTreeMap<String, u64>,
    /// Requests refused with a reason code, connection kept (`quota_exceeded`, ...); only
    /// reasons seen at least once.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Authentication outcomes (`password`, `bad_password`, `anonymous_refused`, ...).
    #[serde(default)]
    pub auth: BTreeMap<String, u64>,
    pub mesh_messages_out: u64,
    pub mesh_batches_out: u64,
    /// Seconds spent handling work since start.
    pub busy_seconds: f64,
    /// Fraction of wall time busy since the previous snapshot (0..1).
    pub busy_ratio: f64,
    /// Per listener, in `listen` order.
    #[serde(default)]
    pub listeners: Vec<ListenerMetrics>,
    /// Storage commit latency, when the shard persists.
    pub storage_commit: Option<Histogram>,
    /// Storage ops [committed, cancelled before their commit, QoS 1 rows
    /// deferred, deferred rows stored at their deadline], when the shard persists.
    #[serde(default)]
    pub storage_ops: Option<[u64; 4]>,
    /// ACL refusals by action (`subscribe`, `publish`, `deliver`, `retained`, `will`).
    #[serde(default)]
    pub acl_denied: BTreeMap<String, u64>,
}

/// Bans of the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BanMetrics {
    /// Bans in force (gauge).
    pub active: u64,
    /// CONNECTs refused by a ban.
    pub refused_connects: u64,
    /// Addresses banned after repeated authentication failures.
    pub auto_bans: u64,
    /// Authentication failures counted for auto-bans.
    pub auth_failures: u64,
}

/// Every shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub uptime_secs: f64,
    pub draining: bool,
    pub shards: Vec<ShardMetrics>,
    /// Node-wide ban counters, when the broker has them.
    #[serde(default)]
    pub bans: Option<BanMetrics>,
    /// Node links to the other nodes of a cluster (empty: a node alone).
    #[serde(default)]
    pub links: Vec<LinkMetrics>,
    /// The cluster's numbers, when this node is in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterMetrics>,
    /// Cross-node session takeovers (docs/cluster.md), when this node has node links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverMetrics>,
}

/// Cross-node session takeovers (see `ringmq_shard::cluster::handover::HandoverStats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoverMetrics {
    pub fetches: u64,
    pub installed: u64,
    pub missing: u64,
    pub timeouts: u64,
    pub unreachable: u64,
    pub bad: u64,
    pub late: u64,
    pub shipped: u64,
    pub shipped_bytes: u64,
    pub parked: u64,
    pub expired: u64,
    /// CONNECTs refused (server unavailable): the old node unreachable mid-move.
    #[serde(default)]
    pub unavailable: u64,
    /// Sessions given up: the old node down `--node-down-after` (fresh session).
    #[serde(default)]
    pub lost: u64,
    /// Messages published during a move (docs/cluster.md): stubs, forwarded, held, merged.
    #[serde(default)]
    pub moves: MoveMetrics,
}

/// Session moves (see `ringmq_shard::cluster::stub` and `merge`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveMetrics {
    pub stubs: u64,
    pub stub_ended: u64,
    pub stub_expired: u64,
    pub stubs_restored: u64,
    pub copies_unrouted: u64,
    pub forwarded: u64,
    pub forward_lost: u64,
    #[serde(default)]
    pub forwarded_acked: u64,
    #[serde(default)]
    pub copies_late: u64,
    pub flush_timeouts: u64,
    pub held: u64,
    pub merged: u64,
    pub merge_dups: u64,
    #[serde(default)]
    pub merge_recovered: u64,
    pub merge_ended: u64,
    pub merge_expired: u64,
    #[serde(default)]
    pub ghosts: u64,
    #[serde(default)]
    pub ghost_forwarded: u64,
    #[serde(default)]
    pub ghost_ended: u64,
    #[serde(default)]
    pub ghost_end_resent: u64,
    #[serde(default)]
    pub ghost_expired: u64,
    #[serde(default)]
    pub ghost_dups: u64,
    #[serde(default)]
    pub ghost_held: u64,
    #[serde(default)]
    pub stamp_rows: u64,
    #[serde(default)]
    pub shared_forwarded: u64,
    /// Old node: sessions kept until the new node's MoveDone (`cluster/moving.rs`).
    #[serde(default)]
    pub kept: u64,
    #[serde(default)]
    pub kept_served: u64,
    #[serde(default)]
    pub kept_done: u64,
    #[serde(default)]
    pub kept_expired: u64,
    #[serde(default)]
    pub kept_restored: u64,
}

impl HandoverMetrics {
    pub fn of(h: &ringmq_shard::cluster::handover::HandoverStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        HandoverMetrics {
            fetches: h.fetches.load(Relaxed),
            installed: h.installed.load(Relaxed),
            missing: h.missing.load(Relaxed),
            timeouts: h.timeouts.load(Relaxed),
            unreachable: h.unreachable.load(Relaxed),
            bad: h.bad.load(Relaxed),
            late: h.late.load(Relaxed),
            shipped: h.shipped.load(Relaxed),
            shipped_bytes: h.shipped_bytes.load(Relaxed),
            parked: h.parked.load(Relaxed),
            expired: h.expired.load(Relaxed),
            unavailable: h.unavailable.load(Relaxed),
            lost: h.lost.load(Relaxed),
            moves: MoveMetrics {
                stubs: h.stubs.load(Relaxed),
                stub_ended: h.stub_ended.load(Relaxed),
                stub_expired: h.stub_expired.load(Relaxed),
                stubs_restored: h.stubs_restored.load(Relaxed),
                copies_unrouted: h.copies_unrouted.load(Relaxed),
                forwarded: h.forwarded.load(Relaxed),
                forward_lost: h.forward_lost.load(Relaxed),
                forwarded_acked: h.forwarded_acked.load(Relaxed),
                copies_late: h.copies_late.load(Relaxed),
                flush_timeouts: h.flush_timeouts.load(Relaxed),
                held: h.held.load(Relaxed),
                merged: h.merged.load(Relaxed),
                merge_dups: h.merge_dups.load(Relaxed),
                merge_recovered: h.merge_recovered.load(Relaxed),
                merge_ended: h.merge_ended.load(Relaxed),
                merge_expired: h.merge_expired.load(Relaxed),
                ghosts: h.ghosts.load(Relaxed),
                ghost_forwarded: h.ghost_forwarded.load(Relaxed),
                ghost_ended: h.ghost_ended.load(Relaxed),
                ghost_end_resent: h.ghost_end_resent.load(Relaxed),
                ghost_expired: h.ghost_expired.load(Relaxed),
                ghost_dups: h.ghost_dups.load(Relaxed),
                ghost_held: h.ghost_held.load(Relaxed),
                stamp_rows: h.stamp_rows.load(Relaxed),
                shared_forwarded: h.shared_forwarded.load(Relaxed),
                kept: h.kept.load(Relaxed),
                kept_served: h.kept_served.load(Relaxed),
                kept_done: h.kept_done.load(Relaxed),
                kept_expired: h.kept_expired.load(Relaxed),
                kept_restored: h.kept_restored.load(Relaxed),
            },
        }
    }
}

/// One node link's counters (see `ringmq_shard::cluster::LinkStats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkMetrics {
    pub peer: u64,
    pub up: bool,
    pub connects: u64,
    pub msgs_out: u64,
    pub msgs_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub batches_out: u64,
    pub queue_bytes: u64,
    pub dropped: u64,
    pub rtt_us: u64,
    pub errors: u64,
    pub refused: u64,
    pub routes_out: u64,
    pub routes_in: u64,
    pub syncs_out: u64,
    pub digest_mismatches: u64,
    pub peer_routes: u64,
    #[serde(default)]
    pub acked_out: u64,
    #[serde(default)]
    pub acked_in: u64,
    #[serde(default)]
    pub resent: u64,
    #[serde(default)]
    pub ack_timeouts: u64,
    #[serde(default)]
    pub not_stored: u64,
    #[serde(default)]
    pub unacked: u64,
    #[serde(default)]
    pub retained_out: u64,
    #[serde(default)]
    pub retained_in: u64,
    #[serde(default)]
    pub outbox_rows: u64,
    #[serde(default)]
    pub outbox_bytes: u64,
    #[serde(default)]
    pub outbox_stored: u64,
    #[serde(default)]
    pub outbox_sent: u64,
    #[serde(default)]
    pub outbox_dropped: u64,
    #[serde(default)]
    pub outbox_refused: u64,
}

impl LinkMetrics {
    /// A snapshot of one link's counters.
    pub fn of(l: &ringmq_shard::cluster::LinkStats) -> Self {
        LinkMetrics {
            peer: l.peer,
            up: l.up.get() == 1,
            connects: l.connects.get(),
            msgs_out: l.msgs_out.get(),
            msgs_in: l.msgs_in.get(),
            bytes_out: l.bytes_out.get(),
            bytes_in: l.bytes_in.get(),
            batches_out: l.batches_out.get(),
            queue_bytes: l.queue_bytes.get(),
            dropped: l.dropped.get(),
            rtt_us: l.rtt_us.get(),
            errors: l.errors.get(),
            refused: l.refused.get(),
            routes_out: l.routes_out.get(),
            routes_in: l.routes_in.get(),
            syncs_out: l.syncs_out.get(),
            digest_mismatches: l.digest_mismatches.get(),
            peer_routes: l.peer_routes.get(),
            acked_out: l.acked_out.get(),
            acked_in: l.acked_in.get(),
            resent: l.resent.get(),
            ack_timeouts: l.ack_timeouts.get(),
            not_stored: l.not_stored.get(),
            unacked: l.unacked.get(),
            retained_out: l.retained_out.get(),
            retained_in: l.retained_in.get(),
            outbox_rows: l.outbox_rows.get(),
            outbox_bytes: l.outbox_bytes.get(),
            outbox_stored: l.outbox_stored.get(),
            outbox_sent: l.outbox_sent.get(),
            outbox_dropped: l.outbox_dropped.get(),
            outbox_refused: l.outbox_refused.get(),
        }
    }
}

impl MetricsSnapshot {
    /// Sums across shards into a status (rates left at zero).
    pub fn to_status(&self) -> BrokerStatus {
        let sum = |f: fn(&ShardMetrics) -> u64| self.shards.iter().map(f).sum::<u64>();
        // Retained messages are replicated on every shard: take one replica.
        let retained = self.shards.iter().map(|s| s.retained).max().unwrap_or(0);
        BrokerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.uptime_secs as u64,
            shards: self.shards.len(),
            connections: sum(|s| s.connections),
            sessions: sum(|s| s.sessions),
            subscriptions: sum(|s| s.subscriptions),
            retained,
            messages_in: sum(|s| s.messages_in.iter().sum()),
            messages_out: sum(|s| s.messages_out.iter().sum()),
            bytes_in: sum(|s| s.bytes_in),
            bytes_out: sum(|s| s.bytes_out),
            messages_in_per_sec: 0.0,
            messages_out_per_sec: 0.0,
            draining: self.draining,
        }
    }
}

/// `clients` of a node alone: its rows (no node named), at most `scope.limit`.
pub fn clients_alone<B: AdminBackend + ?Sized>(
    b: &B,
    scope: &ClientsScope,
) -> Result<(Vec<ClientInfo>, Vec<NodeAnswer>), AdminError> {
    if let Some(n) = scope.node {
        return Err(AdminError::new(
            ErrorCode::BadRequest,
            format!("--node {n}: this node is not in a cluster"),
        ));
    }
    let mut rows = b.clients(scope.shard, scope.pattern.as_deref())?;
    rows.truncate(scope.limit as usize);
    Ok((rows, Vec::new()))
}

/// The broker as the admin socket and metrics endpoint see it. Called from
/// their threads (never a shard); each call may block briefly while shards
/// answer over their control channels.
pub trait AdminBackend: Send + Sync {
    /// Version, uptime, shards, totals. Default: summed from [`Self::metrics`].
    fn status(&self) -> Result<BrokerStatus, AdminError> {
        Ok(self.metrics()?.to_status())
    }
    /// Connected clients, optionally of one shard; `pattern` as in `--match`
    /// (`*`/`?` glob, else substring), see [`crate::admin::id_matches`].
    fn clients(
        &self,
        shard: Option<usize>,
        pattern: Option<&str>,
    ) -> Result<Vec<ClientInfo>, AdminError>;
    /// Connected clients of every node of the cluster (or `scope.node`), each
    /// row naming its node, and how each node answered. Default: this node's
    /// (a node alone: rows without a node, no answers).
    fn clients_everywhere(
        &self,
        scope: &ClientsScope,
    ) -> Result<(Vec<ClientInfo>, Vec<NodeAnswer>), AdminError> {
        clients_alone(self, scope)
    }
    /// One client's session; `NotFound` when there is none.
    fn client_show(&self, client_id: &str) -> Result<ClientInfo, AdminError>;
    /// Disconnects a client (v5: DISCONNECT 0x98); `NotFound` when not connected.
    fn kick(&self, client_id: &str) -> Result<(), AdminError>;
    /// Every session, connected or not.
    fn sessions(&self) -> Result<Vec<ClientInfo>, AdminError>;
    /// Subscriptions, optionally only those matching topic name `topic`.
    fn subscriptions(&self, topic: Option<&str>) -> Result<Vec<SubscriptionInfo>, AdminError>;
    /// Retained messages matching `filter`, at most `limit`.
    fn retained_list(&self, filter: &str, limit: usize) -> Result<Vec<RetainedInfo>, AdminError>;
    /// Deletes a retained message; `NotFound` when there was none.
    fn retained_delete(&self, topic: &str) -> Result<(), AdminError>;
    /// Every shard's counters.
    fn metrics(&self) -> Result<MetricsSnapshot, AdminError>;
    /// Stop accepting connections, shed existing ones gradually. Returns at once.
    fn drain(&self) -> Result<(), AdminError>;
    /// Start a graceful shutdown; the process exits once the shards stopped.
    /// Returns at once.
    fn shutdown(&self) -> Result<(), AdminError>;
    /// Node-wide access state (ACL in force, bans); `None` when this backend has none.
    fn access(&self) -> Option<std::sync::Arc<ringmq_shard::access::Shared>> {
        None
    }
    /// Re-reads the ACL file, password file and certificates; one outcome each.
    fn reload(&self) -> Result<Vec<ringmq_shard::access::reload::Outcome>, AdminError> {
        Err(AdminError::unavailable("this broker cannot reload"))
    }
    /// The cluster this node is in; `None`: a cluster of one.
    fn cluster(&self) -> Option<std::sync::Arc<crate::cluster::Cluster>> {
        None
    }
}
