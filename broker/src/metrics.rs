//! Prometheus metrics: text exposition format 0.0.4 at `GET /metrics` on
//! `--metrics-listen HOST:PORT`, served by a tiny HTTP/1.1 server on its own
//! thread (one request per connection, `Connection: close`).
//!
//! Each scrape asks the backend for per-shard snapshots (the shards' own
//! counters, read without a lock) and renders them; docs/metrics.md lists
//! every family.

use crate::admin::backend::{AdminBackend, ListenerMetrics, MetricsSnapshot, ShardMetrics};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const QOS: [&str; 3] = ["0", "1", "2"];

/// Writes the `# HELP` and `# TYPE` lines of a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP ringmq_{name} {help}\n# TYPE ringmq_{name} {kind}"
    );
}

/// One sample per shard of a per-shard value.
fn per_shard(
    out: &mut String,
    s: &MetricsSnapshot,
    name: &str,
    kind: &str,
    help: &str,
    f: fn(&ShardMetrics) -> f64,
) {
    family(out, name, kind, help);
    for m in &s.shards {
        let _ = writeln!(out, "ringmq_{name}{{shard=\"{}\"}} {}", m.shard, f(m));
    }
}

/// One sample per shard and QoS.
fn per_qos(
    out: &mut String,
    s: &MetricsSnapshot,
    name: &str,
    help: &str,
    f: fn(&ShardMetrics) -> Option<[u64; 3]>,
) {
    if s.shards.iter().all(|m| f(m).is_none()) {
        return;
    }
    family(out, name, "counter", help);
    for m in &s.shards {
        for (q, v) in QOS.iter().zip(f(m).unwrap_or_default()) {
            let _ = writeln!(
                out,
                "ringmq_{name}{{shard=\"{}\",qos=\"{q}\"}} {v}",
                m.shard
            );
        }
    }
}

/// One sample per shard and reason.
fn per_reason(
    out: &mut String,
    s: &MetricsSnapshot,
    name: &str,
    help: &str,
    f: fn(&ShardMetrics) -> &std::collections::BTreeMap<String, u64>,
) {
    family(out, name, "counter", help);
    for m in &s.shards {
        for (reason, v) in f(m) {
            let _ = writeln!(
                out,
                "ringmq_{name}{{shard=\"{}\",reason=\"{reason}\"}} {v}",
                m.shard
            );
        }
    }
}

/// The storage commit latency histogram of every shard that persists.
fn commit_latency(out: &mut String, s: &MetricsSnapshot) {
    if s.shards.iter().all(|m| m.storage_commit.is_none()) {
        return;
    }
    let name = "storage_commit_seconds";
    family(
        out,
        name,
        "histogram",
        "Latency of storage commits (group commit), seconds.",
    );
    for m in &s.shards {
        let Some(h) = &m.storage_commit else { continue };
        let sh = m.shard;
        for (le, n) in &h.buckets {
            let _ = writeln!(
                out,
                "ringmq_{name}_bucket{{shard=\"{sh}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "ringmq_{name}_bucket{{shard=\"{sh}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "ringmq_{name}_sum{{shard=\"{sh}\"}} {}", h.sum_seconds);
        let _ = writeln!(out, "ringmq_{name}_count{{shard=\"{sh}\"}} {}", h.count);
    }
}

/// Per-listener counters and the TLS handshake time histogram.
fn listeners(out: &mut String, s: &MetricsSnapshot) {
    if s.shards.iter().all(|m| m.listeners.is_empty()) {
        return;
    }
    let each = |out: &mut String, f: &dyn Fn(&mut String, usize, &str, &ListenerMetrics)| {
        for m in &s.shards {
            for l in &m.listeners {
                f(out, m.shard, &l.url, l);
            }
        }
    };
    let help = "Connections accepted, per listener.";
    family(out, "listener_connections_accepted_total", "counter", help);
    each(out, &|o, sh, url, l| {
        let _ = writeln!(
            o,
            "ringmq_listener_connections_accepted_total{{shard=\"{sh}\",listener=\"{url}\"}} {}",
            l.accepted
        );
    });
    let help = "Connections open, per listener (on the shard serving them).";
    family(out, "listener_connections", "gauge", help);
    each(out, &|o, sh, url, l| {
        let _ = writeln!(
            o,
            "ringmq_listener_connections{{shard=\"{sh}\",listener=\"{url}\"}} {}",
            l.open
        );
    });
    let help = "Connections closed before CONNECT was accepted (handshake failures), by reason.";
    family(out, "listener_handshake_failures_total", "counter", help);
    each(out, &|o, sh, url, l| {
        for (reason, n) in &l.handshake_failures {
            let _ = writeln!(
                o,
                "ringmq_listener_handshake_failures_total{{shard=\"{sh}\",listener=\"{url}\",reason=\"{reason}\"}} {n}"
            );
        }
    });
    let name = "listener_tls_handshake_seconds";
    family(out, name, "histogram", "TLS handshake time, seconds.");
    each(out, &|o, sh, url, l| {
        let Some(h) = &l.handshake else { return };
        let labels = format!("shard=\"{sh}\",listener=\"{url}\"");
        for (le, n) in &h.buckets {
            let _ = writeln!(o, "ringmq_{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "ringmq_{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(o, "ringmq_{name}_sum{{{labels}}} {}", h.sum_seconds);
        let _ = writeln!(o, "ringmq_{name}_count{{{labels}}} {}", h.count);
    });
}

/// Storage ops committed and cancelled, for every shard that persists.
fn storage_ops(out: &mut String, s: &MetricsSnapshot) {
    if s.shards.iter().all(|m| m.storage_ops.is_none()) {
        return;
    }
    let families = [
        ("storage_ops_total", "Storage ops (puts, deletes) committed."),
        (
            "storage_ops_cancelled_total",
            "Storage ops that never reached the disk: outbound rows put and deleted before their commit.",
        ),
        (
            "storage_rows_deferred_total",
            "QoS 1 copies for connected subscribers not stored at once: the publisher's PUBACK waits for the subscriber's.",
        ),
        (
            "storage_rows_deferred_stored_total",
            "Deferred QoS 1 copies stored because their subscriber had not acknowledged them in time.",
        ),
    ];
    for (i, (name, help)) in families.into_iter().enumerate() {
        family(out, name, "counter", help);
        for m in &s.shards {
            let v = m.storage_ops.unwrap_or_default()[i];
            let _ = writeln!(out, "ringmq_{name}{{shard=\"{}\"}} {v}", m.shard);
        }
    }
}

/// Renders a snapshot in the Prometheus text format.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096 + s.shards.len() * 2048);
    family(
        &mut out,
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    let _ = writeln!(out, "ringmq_uptime_seconds {}", s.uptime_secs);
    family(&mut out, "shards", "gauge", "Number of shards.");
    let _ = writeln!(out, "ringmq_shards {}", s.shards.len());
    family(
        &mut out,
        "draining",
        "gauge",
        "1 while the broker is draining.",
    );
    let _ = writeln!(out, "ringmq_draining {}", u8::from(s.draining));
    let o = &mut out;
    per_shard(
        o,
        s,
        "connections",
        "gauge",
        "Open client connections.",
        |m| m.connections as f64,
    );
    per_shard(
        o,
        s,
        "connections_total",
        "counter",
        "Connections accepted.",
        |m| m.connections_total as f64,
    );
    per_shard(
        o,
        s,
        "accept_errors_total",
        "counter",
        "Failed accept(2) calls (out of descriptors, ...), each followed by a backoff.",
        |m| m.accept_errors as f64,
    );
    per_shard(
        o,
        s,
        "io_uring_buffers_dry_total",
        "counter",
        "io_uring backend: multishot receives ended because the shard's receive buffer ring was empty (reading slowed, nothing lost).",
        |m| m.uring_buffers_dry as f64,
    );
    per_shard(
        o,
        s,
        "io_uring_submits_total",
        "counter",
        "io_uring backend: io_uring_enter calls that submitted sends and receives.",
        |m| m.uring_submits as f64,
    );
    per_shard(
        o,
        s,
        "partial_packet_bytes",
        "gauge",
        "Bytes of packets still being received, held in read buffers (--partial-packet-budget).",
        |m| m.partial_bytes as f64,
    );
    per_shard(
        o,
        s,
        "reads_paused_total",
        "counter",
        "Times a connection holding a partial packet stopped reading: the shard's budget was spent.",
        |m| m.reads_paused as f64,
    );
    per_shard(
        o,
        s,
        "sessions",
        "gauge",
        "Sessions held, connected or not.",
        |m| m.sessions as f64,
    );
    per_shard(
        o,
        s,
        "subscriptions",
        "gauge",
        "Subscriptions held by the shard's sessions.",
        |m| m.subscriptions as f64,
    );
    per_shard(
        o,
        s,
        "retained_messages",
        "gauge",
        "Retained messages in the shard's replica.",
        |m| m.retained as f64,
    );
    per_shard(
        o,
        s,
        "inflight_messages",
        "gauge",
        "Outbound QoS 1/2 messages awaiting acknowledgement.",
        |m| m.inflight as f64,
    );
    per_shard(
        o,
        s,
        "queued_messages",
        "gauge",
        "Messages queued for sessions.",
        |m| m.queued as f64,
    );
    per_qos(
        o,
        s,
        "messages_received_total",
        "PUBLISH packets received, by QoS.",
        |m| Some(m.messages_in),
    );
    per_qos(
        o,
        s,
        "messages_sent_total",
        "PUBLISH packets sent, by QoS.",
        |m| Some(m.messages_out),
    );
    per_qos(
        o,
        s,
        "publish_bytes_received_total",
        "PUBLISH payload bytes received, by QoS.",
        |m| m.publish_bytes_in,
    );
    per_qos(
        o,
        s,
        "publish_bytes_sent_total",
        "PUBLISH payload bytes sent, by QoS.",
        |m| m.publish_bytes_out,
    );
    per_shard(
        o,
        s,
        "bytes_received_total",
        "counter",
        "Bytes read from client sockets.",
        |m| m.bytes_in as f64,
    );
    per_shard(
        o,
        s,
        "bytes_sent_total",
        "counter",
        "Bytes written to client sockets.",
        |m| m.bytes_out as f64,
    );
    per_shard(
        o,
        s,
        "packets_received_total",
        "counter",
        "MQTT packets received.",
        |m| m.packets_in as f64,
    );
    per_shard(
        o,
        s,
        "packets_sent_total",
        "counter",
        "MQTT packets sent.",
        |m| m.packets_out as f64,
    );
    per_reason(
        o,
        s,
        "messages_dropped_total",
        "Messages not delivered, by reason.",
        |m| &m.drops,
    );
    per_reason(
        o,
        s,
        "requests_refused_total",
        "Requests refused with a reason code while the connection stays open, by v5 reason.",
        |m| &m.refusals,
    );
    per_reason(
        o,
        s,
        "auth_total",
        "Authentication outcomes (CONNECT and v5 re-authentication), by reason.",
        |m| &m.auth,
    );
    per_reason(
        o,
        s,
        "connections_closed_total",
        "Connections closed, by reason.",
        |m| &m.closes,
    );
    per_shard(
        o,
        s,
        "mesh_messages_sent_total",
        "counter",
        "Messages sent to other shards.",
        |m| m.mesh_messages_out as f64,
    );
    per_shard(
        o,
        s,
        "mesh_batches_sent_total",
        "counter",
        "Batches sent to other shards.",
        |m| m.mesh_batches_out as f64,
    );
    per_shard(
        o,
        s,
        "busy_seconds_total",
        "counter",
        "Seconds the shard spent handling work.",
        |m| m.busy_seconds,
    );
    per_shard(
        o,
        s,
        "busy_ratio",
        "gauge",
        "Fraction of time the shard was busy since the previous scrape.",
        |m| m.busy_ratio,
    );
    commit_latency(o, s);
    storage_ops(o, s);
    access(o, s);
    listeners(o, s);
    links(o, s);
    handover(o, s);
    cluster(o, s);
    out
}

/// The cluster's families (present only on a node in a cluster).
fn cluster(out: &mut String, s: &MetricsSnapshot) {
    let Some(c) = &s.cluster else {
        return;
    };
    let o = &c.ownership;
    let one = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
        family(out, name, kind, help);
        let _ = writeln!(out, "ringmq_{name} {v}");
    };
    let rows: [(&str, &str, &str, f64); 22] = [
        (
            "cluster_node_id",
            "gauge",
            "This node's id.",
            c.node_id as f64,
        ),
        (
            "cluster_is_leader",
            "gauge",
            "1 while this node leads.",
            u8::from(c.is_leader) as f64,
        ),
        ("cluster_term", "gauge", "Current Raft term.", c.term as f64),
        (
            "cluster_last_log_index",
            "gauge",
            "Last log index on this node.",
            c.last_log_index as f64,
        ),
        (
            "cluster_committed_index",
            "gauge",
            "Highest committed log index known.",
            c.committed as f64,
        ),
        (
            "cluster_applied_index",
            "gauge",
            "Highest log index applied here.",
            c.applied as f64,
        ),
        (
            "cluster_members",
            "gauge",
            "Members (voters and learners).",
            c.members as f64,
        ),
        (
            "cluster_members_up",
            "gauge",
            "Members up (leader: heartbeats; others: recorded liveness).",
            c.members_up as f64,
        ),
        (
            "cluster_commits_total",
            "counter",
            "Log entries committed through this node.",
            c.commits as f64,
        ),
        (
            "cluster_committed_ops_total",
            "counter",
            "Operations in those entries (claims batch many per entry).",
            c.committed_ops as f64,
        ),
        (
            "cluster_commit_seconds_total",
            "counter",
            "Summed commit latency of those entries, seconds (mean = this / commits).",
            c.commit_us_total as f64 / 1e6,
        ),
        (
            "cluster_write_errors_total",
            "counter",
            "Writes that failed (timeout, no quorum, indeterminate).",
            c.write_errors as f64,
        ),
        (
            "cluster_appends_total",
            "counter",
            "Log appends, one fsync each.",
            c.appends as f64,
        ),
        (
            "cluster_elections_total",
            "counter",
            "Terms begun (elections) seen by this node.",
            c.elections as f64,
        ),
        (
            "cluster_leader_changes_total",
            "counter",
            "Changes of the known leader.",
            c.leader_changes as f64,
        ),
        (
            "cluster_snapshots_built_total",
            "counter",
            "Metadata snapshots built here.",
            c.snapshots_built as f64,
        ),
        (
            "cluster_snapshots_installed_total",
            "counter",
            "Metadata snapshots installed here (caught up from a snapshot).",
            c.snapshots_installed as f64,
        ),
        (
            "cluster_snapshot_bytes",
            "gauge",
            "Size of the last snapshot built or installed, bytes.",
            c.last_snapshot_bytes as f64,
        ),
        (
            "cluster_ownership_claims_total",
            "counter",
            "Session ownership claims won at CONNECT.",
            o.claims as f64,
        ),
        (
            "cluster_ownership_conflicts_total",
            "counter",
            "Claims that met another epoch and were retried (takeover races).",
            o.conflicts as f64,
        ),
        (
            "cluster_ownership_failures_total",
            "counter",
            "Claims the cluster could not decide (CONNACK 0x88 / 0x03).",
            o.failures as f64,
        ),
        (
            "cluster_ownership_fenced_total",
            "counter",
            "Sessions closed (0x8E) and discarded because another node took them over.",
            o.fenced as f64,
        ),
    ];
    for (name, kind, help, v) in rows {
        one(out, name, kind, help, v);
    }
    let w = &c.wills;
    let wills: [(&str, &str, u64); 7] = [
        (
            "registered",
            "Wills registered in the cluster metadata by this node's connections.",
            w.registered,
        ),
        (
            "discarded",
            "Registered wills discarded (DISCONNECT 0x00, reconnect within the delay, fenced).",
            w.discarded,
        ),
        (
            "published_own",
            "Wills of this node's clients taken from the registry and published here.",
            w.published_own,
        ),
        (
            "taken_elsewhere",
            "Wills of this node's clients not published: another node had published them.",
            w.taken_elsewhere,
        ),
        (
            "published_for_lost",
            "Wills of a dead node's clients (or of this node's previous run) published here.",
            w.published_for_lost,
        ),
        (
            "cancelled_for_lost",
            "Such wills dropped unpublished: their client connected again within the will delay.",
            w.cancelled_for_lost,
        ),
        (
            "write_failures",
            "Commands of the will registry that failed (no quorum, timeout).",
            w.write_failures,
        ),
    ];
    for (what, help, v) in wills {
        one(
            out,
            &format!("cluster_wills_{what}_total"),
            "counter",
            help,
            v as f64,
        );
    }
    let name = "cluster_ownership_claim_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from CONNECT to its ownership claim committed, seconds.",
    );
    for (b, n) in crate::cluster::stats::CLAIM_BUCKETS
        .iter()
        .zip(&o.claim_latency_buckets)
    {
        let _ = writeln!(out, "ringmq_{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let total = o.claim_latency_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(out, "ringmq_{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "ringmq_{name}_sum {}", o.claim_latency_sum_seconds);
    let _ = writeln!(out, "ringmq_{name}_count {total}");
}

/// Node links of a cluster node, one sample per peer.
fn links(out: &mut String, s: &MetricsSnapshot) {
    if s.links.is_empty() {
        return;
    }
    type F = fn(&crate::admin::backend::LinkMetrics) -> u64;
    let rows: [(&str, &str, &str, F); 28] = [
        (
            "cluster_link_up",
            "gauge",
            "1 while the node link is up.",
            |l| l.up as u64,
        ),
        (
            "cluster_link_connects_total",
            "counter",
            "Node links established.",
            |l| l.connects,
        ),
        (
            "cluster_link_messages_out_total",
            "counter",
            "Publishes sent to the peer node.",
            |l| l.msgs_out,
        ),
        (
            "cluster_link_messages_in_total",
            "counter",
            "Publishes received from the peer node.",
            |l| l.msgs_in,
        ),
        (
            "cluster_link_bytes_out_total",
            "counter",
            "Bytes written on the node link.",
            |l| l.bytes_out,
        ),
        (
            "cluster_link_bytes_in_total",
            "counter",
            "Bytes read on the node link.",
            |l| l.bytes_in,
        ),
        (
            "cluster_link_batches_out_total",
            "counter",
            "Writes on the node link (one per tick with data).",
            |l| l.batches_out,
        ),
        (
            "cluster_link_queue_bytes",
            "gauge",
            "Bytes queued for the peer node.",
            |l| l.queue_bytes,
        ),
        (
            "cluster_link_dropped_total",
            "counter",
            "Publishes dropped because the link queue was full.",
            |l| l.dropped,
        ),
        (
            "cluster_link_rtt_microseconds",
            "gauge",
            "Last round trip measured on the node link.",
            |l| l.rtt_us,
        ),
        (
            "cluster_link_errors_total",
            "counter",
            "Node links closed on bad input.",
            |l| l.errors,
        ),
        (
            "cluster_link_refused_total",
            "counter",
            "Handshakes with this peer refused.",
            |l| l.refused,
        ),
        (
            "cluster_link_route_changes_total",
            "counter",
            "Route changes sent to the peer node.",
            |l| l.routes_out,
        ),
        (
            "cluster_link_peer_routes",
            "gauge",
            "Filters the peer node has subscribers on.",
            |l| l.peer_routes,
        ),
        (
            "cluster_link_acked_out_total",
            "counter",
            "Acked copies (QoS 1/2, durability sync) sent to the peer node.",
            |l| l.acked_out,
        ),
        (
            "cluster_link_acked_in_total",
            "counter",
            "Acked copies received from the peer node.",
            |l| l.acked_in,
        ),
        (
            "cluster_link_resent_total",
            "counter",
            "Acked copies written again on a new connection.",
            |l| l.resent,
        ),
        (
            "cluster_link_ack_timeouts_total",
            "counter",
            "Acked copies the peer did not answer in time (publishers refused).",
            |l| l.ack_timeouts,
        ),
        (
            "cluster_link_not_stored_total",
            "counter",
            "Acked copies the peer node could not store.",
            |l| l.not_stored,
        ),
        (
            "cluster_link_unacked",
            "gauge",
            "Acked copies waiting for the peer node's answer.",
            |l| l.unacked,
        ),
        (
            "cluster_link_retained_out_total",
            "counter",
            "Retained messages sent to the peer node when the link came up.",
            |l| l.retained_out,
        ),
        (
            "cluster_link_retained_in_total",
            "counter",
            "Retained messages of the peer node kept here (newer than ours).",
            |l| l.retained_in,
        ),
        (
            "cluster_link_outbox_rows",
            "gauge",
            "Acked copies held in this node's outbox for the peer node.",
            |l| l.outbox_rows,
        ),
        (
            "cluster_link_outbox_bytes",
            "gauge",
            "Bytes of the acked copies held in this node's outbox for the peer node.",
            |l| l.outbox_bytes,
        ),
        (
            "cluster_link_outbox_stored_total",
            "counter",
            "Acked copies stored in the outbox (the peer node could not answer).",
            |l| l.outbox_stored,
        ),
        (
            "cluster_link_outbox_sent_total",
            "counter",
            "Outbox copies the peer node answered as durable (rows deleted).",
            |l| l.outbox_sent,
        ),
        (
            "cluster_link_outbox_dropped_total",
            "counter",
            "Outbox copies dropped: the peer node was removed or could not store them.",
            |l| l.outbox_dropped,
        ),
        (
            "cluster_link_outbox_refused_total",
            "counter",
            "QoS 1/2 publishes refused because the peer node's outbox was full.",
            |l| l.outbox_refused,
        ),
    ];
    for (name, kind, help, f) in rows {
        family(out, name, kind, help);
        for l in &s.links {
            let _ = writeln!(out, "ringmq_{name}{{peer=\"{}\"}} {}", l.peer, f(l));
        }
    }
}

/// Cross-node session takeovers by outcome (docs/cluster.md, "Sessions across nodes").
fn handover(out: &mut String, s: &MetricsSnapshot) {
    let Some(h) = &s.handover else {
        return;
    };
    let name = "cluster_handover_total";
    family(
        out,
        name,
        "counter",
        "Cross-node session takeovers: asked, installed, fresh instead (missing, timeout, unreachable, bad), late answers, shipped, parked, expired, refused with the old node unreachable mid-move (unavailable), given up after node-down-after (lost).",
    );
    for (outcome, v) in [
        ("fetched", h.fetches),
        ("installed", h.installed),
        ("missing", h.missing),
        ("timeout", h.timeouts),
        ("unreachable", h.unreachable),
        ("bad", h.bad),
        ("late", h.late),
        ("shipped", h.shipped),
        ("parked", h.parked),
        ("expired", h.expired),
        ("unavailable", h.unavailable),
        ("lost", h.lost),
    ] {
        let _ = writeln!(out, "ringmq_{name}{{outcome=\"{outcome}\"}} {v}");
    }
    let name = "cluster_handover_shipped_bytes_total";
    family(
        out,
        name,
        "counter",
        "Bytes of the session snapshots this node shipped.",
    );
    let _ = writeln!(out, "ringmq_{name} {}", h.shipped_bytes);
    let name = "cluster_move_total";
    family(
        out,
        name,
        "counter",
        "Messages published during session moves: stubs on the old node, copies forwarded, held and merged on the new one, duplicates dropped, ends and expiries.",
    );
    let m = &h.moves;
    for (event, v) in [
        ("stubs", m.stubs),
        ("stub_ended", m.stub_ended),
        ("stub_expired", m.stub_expired),
        ("stubs_restored", m.stubs_restored),
        ("copies_unrouted", m.copies_unrouted),
        ("forwarded", m.forwarded),
        ("forward_lost", m.forward_lost),
        ("forwarded_acked", m.forwarded_acked),
        ("copies_late", m.copies_late),
        ("flush_timeouts", m.flush_timeouts),
        ("held", m.held),
        ("merged", m.merged),
        ("merge_dups", m.merge_dups),
        ("merge_recovered", m.merge_recovered),
        ("merge_ended", m.merge_ended),
        ("merge_expired", m.merge_expired),
        ("ghosts", m.ghosts),
        ("ghost_forwarded", m.ghost_forwarded),
        ("ghost_ended", m.ghost_ended),
        ("ghost_end_resent", m.ghost_end_resent),
        ("ghost_expired", m.ghost_expired),
        ("ghost_dups", m.ghost_dups),
        ("ghost_held", m.ghost_held),
        ("shared_forwarded", m.shared_forwarded),
        ("kept", m.kept),
        ("kept_served", m.kept_served),
        ("kept_done", m.kept_done),
        ("kept_expired", m.kept_expired),
        ("kept_restored", m.kept_restored),
    ] {
        let _ = writeln!(out, "ringmq_{name}{{event=\"{event}\"}} {v}");
    }
    let name = "cluster_stamp_rows";
    family(
        out,
        name,
        "gauge",
        "Rows of moved sessions in the acked-copy stamp tables (stamps, merge ranges); they go with their session.",
    );
    let _ = writeln!(out, "ringmq_{name} {}", m.stamp_rows);
}

/// ACL refusals by action and node-wide ban counters.
fn access(out: &mut String, s: &MetricsSnapshot) {
    let name = "acl_denied_total";
    family(
        out,
        name,
        "counter",
        "Requests and deliveries the ACL refused, by action.",
    );
    for m in &s.shards {
        for (action, v) in &m.acl_denied {
            let _ = writeln!(
                out,
                "ringmq_{name}{{shard=\"{}\",action=\"{action}\"}} {v}",
                m.shard
            );
        }
    }
    let Some(b) = &s.bans else { return };
    for (name, kind, help, v) in [
        ("bans_active", "gauge", "Bans in force.", b.active),
        (
            "bans_refused_connects_total",
            "counter",
            "CONNECTs refused by a ban.",
            b.refused_connects,
        ),
        (
            "bans_auto_total",
            "counter",
            "Addresses banned after repeated authentication failures.",
            b.auto_bans,
        ),
        (
            "auth_failures_total",
            "counter",
            "Authentication failures counted for auto-bans.",
            b.auth_failures,
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "ringmq_{name} {v}");
    }
}

/// The metrics HTTP listener. Stopped on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `/metrics` on a thread named `ringmq-metrics`.
    pub fn start(addr: SocketAddr, backend: Arc<dyn AdminBackend>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("--metrics-listen {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringmq-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        if let Err(e) = serve(c, &*backend) {
                            tracing::debug!(error = %e, "metrics: request failed");
                        }
                    }
                }
            })?;
        tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener thread.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the request head (bounded, with a timeout) and answers it.
fn serve(mut c: TcpStream, backend: &dyn AdminBackend) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match backend.metrics() {
            Ok(s) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(&s),
            ),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "see /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    c.write_all(resp.as_bytes())
}
