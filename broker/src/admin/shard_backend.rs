//! [`AdminBackend`] for the running broker core: questions go to the shards
//! over their control channels (`ServerHandle::query`), counters are read
//! from each shard's single-writer stats (no lock on the message path).

use super::backend::{
    AdminBackend, AdminError, ClientInfo, ClientsScope, Histogram, ListenerMetrics,
    MetricsSnapshot, NodeAnswer, RetainedInfo, ShardMetrics, SubscriptionInfo,
};
use ringmq_shard::control::{self, Query, Reply};
use ringmq_shard::server::ServerHandle;
use ringmq_shard::stats::{AclAction, AuthOutcome, CloseReason, DropReason, ShardStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// How long a question waits for the shards.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker core seen by the admin socket and the metrics endpoint.
pub struct ShardBackend {
    /// `None` once `main` took it back to join the shards. Read-locked by
    /// concurrent questions (admin and metrics threads only, never a shard).
    handle: RwLock<Option<ServerHandle>>,
    /// Told when an admin `shutdown` arrives (main waits on it).
    on_shutdown: Mutex<Sender<()>>,
    draining: AtomicBool,
    /// Per shard: (when, busy ns) at the previous snapshot, for the busy ratio.
    last_busy: Mutex<Vec<(Instant, u64)>>,
    /// The cluster this node is in (`None`: a cluster of one).
    cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

impl ShardBackend {
    /// Adds the cluster this node is in (`ctl cluster`, cluster metrics).
    pub fn with_cluster(
        mut self,
        cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    ) -> Self {
        self.cluster = cluster;
        self
    }

    /// Wraps a started core; `on_shutdown` is signalled by the `shutdown` command.
    pub fn new(handle: ServerHandle, on_shutdown: Sender<()>) -> Self {
        let now = Instant::now();
        let last = handle
            .stats()
            .iter()
            .map(|s| (now, s.busy_ns.get()))
            .collect();
        ShardBackend {
            handle: RwLock::new(Some(handle)),
            on_shutdown: Mutex::new(on_shutdown),
            draining: AtomicBool::new(false),
            last_busy: Mutex::new(last),
            cluster: None,
        }
    }

    /// Takes the handle back (to `join` the shards); the backend then answers `unavailable`.
    pub fn take_handle(&self) -> Option<ServerHandle> {
        self.handle
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Re-reads the TLS listeners' certificates and keys (SIGHUP): new
    /// connections use them; a listener whose files fail keeps its old ones.
    pub fn reload_tls(&self) -> Result<String, String> {
        self.with(|h| h.reload_tls())
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    }

    fn with<T>(&self, f: impl FnOnce(&ServerHandle) -> T) -> Result<T, AdminError> {
        match &*self.handle.read().unwrap_or_else(|p| p.into_inner()) {
            Some(h) => Ok(f(h)),
            None => Err(AdminError::unavailable("the broker is shutting down")),
        }
    }

    fn ask(&self, q: Query, shard: Option<usize>) -> Result<Vec<Reply>, AdminError> {
        let (replies, asked) = self.with(|h| {
            let n = if shard.is_some() { 1 } else { h.shards() };
            (h.query(q, shard, QUERY_TIMEOUT), n)
        })?;
        if replies.is_empty() && asked > 0 {
            return Err(AdminError::unavailable("no shard answered"));
        }
        Ok(replies)
    }

    fn ask_clients(&self, q: Query, shard: Option<usize>) -> Result<Vec<ClientInfo>, AdminError> {
        let mut out = Vec::new();
        for r in self.ask(q, shard)? {
            if let Reply::Clients(_, list) = r {
                out.extend(list.into_iter().map(client));
            }
        }
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(out)
    }

    fn ask_done(&self, q: Query) -> Result<bool, AdminError> {
        Ok(self
            .ask(q, None)?
            .iter()
            .any(|r| matches!(r, Reply::Done(_, true))))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops of `c`'s session for `r`.
fn dropped(c: &control::ClientInfo, r: DropReason) -> u64 {
    c.dropped
        .iter()
        .find(|(k, _)| k == r.as_str())
        .map_or(0, |(_, n)| *n)
}

fn client(c: control::ClientInfo) -> ClientInfo {
    let (queue_full, bytes_full) = (
        dropped(&c, DropReason::QueueFull),
        dropped(&c, DropReason::QueueBytesFull),
    );
    ClientInfo {
        client_id: c.client_id,
        node: None,
        shard: c.shard,
        connected: c.connected,
        protocol: c.protocol,
        peer: c.peer,
        keep_alive: c.keep_alive,
        clean_start: c.clean_start,
        session_expiry: c.session_expiry,
        subscriptions: c.subscriptions,
        inflight: c.inflight,
        queued: c.queued,
        held_bytes: c.held_bytes,
        dropped_queue_full: queue_full,
        dropped_queue_bytes_full: bytes_full,
        dropped_total: c.dropped.iter().map(|(_, n)| n).sum(),
    }
}

fn listener_metrics(s: &ShardStats, urls: &[String]) -> Vec<ListenerMetrics> {
    s.listeners
        .iter()
        .zip(urls)
        .map(|(l, url)| {
            let count = l.handshakes.get();
            let handshake = (count > 0).then(|| {
                let mut upto = 0;
                let buckets = ringmq_shard::stats::HANDSHAKE_BUCKETS_US
                    .iter()
                    .zip(&l.handshake_buckets)
                    .map(|(&us, c)| {
                        upto += c.get();
                        (us as f64 / 1e6, upto)
                    })
                    .collect();
                Histogram {
                    buckets,
                    sum_seconds: l.handshake_us.get() as f64 / 1e6,
                    count,
                }
            });
            ListenerMetrics {
                url: url.clone(),
                accepted: l.accepted.get(),
                open: l.open.get(),
                handshake_failures: CloseReason::ALL
                    .iter()
                    .map(|&r| (r.as_str().to_string(), l.failures_for(r)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                handshake,
            }
        })
        .collect()
}

/// `SCHEME://ADDR[/PATH]` of each listener, bound ports resolved.
fn listener_urls(h: &ServerHandle) -> Vec<String> {
    h.listeners()
        .iter()
        .zip(h.local_addrs())
        .map(|(l, a)| {
            let path = match &l.cfg.transport {
                ringmq_shard::config::Transport::Ws { path }
                | ringmq_shard::config::Transport::Wss { path } => path.as_str(),
                _ => "",
            };
            format!("{}://{a}{path}", l.cfg.transport.scheme())
        })
        .collect()
}

fn shard_metrics(
    shard: usize,
    s: &ShardStats,
    busy_ns: u64,
    busy_ratio: f64,
    urls: &[String],
) -> ShardMetrics {
    let q = |c: &[ringmq_shard::stats::Counter; 3]| [c[0].get(), c[1].get(), c[2].get()];
    ShardMetrics {
        shard,
        connections: s.connections.get(),
        connections_total: s.connections_total.get(),
        accept_errors: s.accept_errors.get(),
        uring_buffers_dry: s.uring_buffers_dry.get(),
        uring_submits: s.uring_submits.get(),
        uring_sends_zc: s.uring_sends_zc.get(),
        uring_zc_copied: s.uring_zc_copied.get(),
        partial_bytes: s.partial_bytes.get(),
        reads_paused: s.reads_paused.get(),
        sessions: s.sessions.get(),
        subscriptions: s.subscriptions.get(),
        retained: s.retained.get(),
        messages_in: q(&s.msgs_in),
        messages_out: q(&s.msgs_out),
        publish_bytes_in: Some(q(&s.publish_bytes_in)),
        publish_bytes_out: Some(q(&s.publish_bytes_out)),
        bytes_in: s.bytes_in.get(),
        bytes_out: s.bytes_out.get(),
        packets_in: s.packets_in.get(),
        packets_out: s.packets_out.get(),
        inflight: s.inflight.get(),
        queued: s.queued.get(),
        closes: CloseReason::ALL
            .iter()
            .map(|&r| (r.as_str().to_string(), s.closes_for(r)))
            .collect(),
        drops: DropReason::ALL
            .iter()
            .map(|&r| (r.as_str().to_string(), s.drops_for(r)))
            .collect(),
        refusals: refusals(s),
        auth: AuthOutcome::ALL
            .iter()
            .map(|&o| (o.as_str().to_string(), s.auth_for(o)))
            .collect(),
        mesh_messages_out: s.mesh_msgs_out.get(),
        mesh_batches_out: s.mesh_batches_out.get(),
        busy_seconds: busy_ns as f64 / 1e9,
        busy_ratio,
        storage_commit: commit_histogram(s),
        storage_ops: storage_ops(s),
        acl_denied: AclAction::ALL
            .iter()
            .map(|&a| (a.as_str().to_string(), s.acl_denied_for(a)))
            .collect(),
        listeners: listener_metrics(s, urls),
    }
}

/// The shard's storage commit latency, when it has committed anything.
/// Refusals seen so far, by v5 reason code name in snake case (`quota_exceeded`).
fn refusals(s: &ShardStats) -> BTreeMap<String, u64> {
    (0..=u8::MAX)
        .filter_map(|b| {
            let code = ringmq_codec::ReasonCode::try_from(b).ok()?;
            let n = s.refusals_for(code);
            (n > 0).then(|| (snake_case(&format!("{code:?}")), n))
        })
        .collect()
}

/// `QuotaExceeded` -> `quota_exceeded`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn storage_ops(s: &ShardStats) -> Option<[u64; 4]> {
    let ops = [
        s.store_ops.get(),
        s.store_ops_cancelled.get(),
        s.deferred_rows.get(),
        s.deferred_rows_stored.get(),
    ];
    (ops != [0; 4]).then_some(ops)
}

fn commit_histogram(s: &ShardStats) -> Option<Histogram> {
    let count = s.store_commits.get();
    if count == 0 {
        return None;
    }
    let buckets = ringmq_shard::store::COMMIT_BUCKETS_US
        .iter()
        .zip(&s.store_commit_buckets)
        .map(|(&us, c)| (us as f64 / 1e6, c.get()))
        .collect();
    Some(Histogram {
        buckets,
        sum_seconds: s.store_commit_ns.get() as f64 / 1e9,
        count,
    })
}

impl AdminBackend for ShardBackend {
    fn access(&self) -> Option<std::sync::Arc<ringmq_shard::access::Shared>> {
        self.with(|h| h.access().clone()).ok()
    }

    fn reload(&self) -> Result<Vec<ringmq_shard::access::reload::Outcome>, AdminError> {
        self.with(|h| h.reload())
    }

    fn clients(
        &self,
        shard: Option<usize>,
        pattern: Option<&str>,
    ) -> Result<Vec<ClientInfo>, AdminError> {
        let mut list = self.ask_clients(Query::Clients { pattern: None }, shard)?;
        if let Some(p) = pattern {
            list.retain(|c| super::id_matches(p, &c.client_id));
        }
        Ok(list)
    }

    fn clients_everywhere(
        &self,
        scope: &ClientsScope,
    ) -> Result<(Vec<ClientInfo>, Vec<NodeAnswer>), AdminError> {
        let me = self.cluster.as_ref().map(|c| c.id());
        let peers: Vec<u64> = self
            .with(|h| h.cluster_stats())?
            .map_or_else(Vec::new, |c| c.links().iter().map(|l| l.peer).collect());
        let Some(me) = me else {
            return super::backend::clients_alone(self, scope);
        };
        let ask: Vec<u64> = match scope.node {
            None => peers.clone(),
            Some(n) if n == me => Vec::new(),
            Some(n) if peers.contains(&n) => vec![n],
            Some(n) => {
                return Err(AdminError::not_found(format!(
                    "node {n} is not a node of this cluster (this node {me}, peers {peers:?})"
                )))
            }
        };
        let (tx, rx) = flume::unbounded();
        if !ask.is_empty() {
            let sent = self.with(|h| {
                h.ask_peers(ringmq_shard::cluster::ops::AskClients {
                    nodes: ask.clone(),
                    shard: scope.shard,
                    pattern: scope.pattern.clone(),
                    limit: scope.limit,
                    timeout: scope.wait,
                    reply: tx,
                })
            })?;
            if !sent {
                return Err(AdminError::unavailable("shard 0 does not answer"));
            }
        }
        let mut rows = Vec::new();
        let mut answers = Vec::new();
        // This node's own rows while the peers work on theirs.
        if scope.node.is_none_or(|n| n == me) {
            let mut mine = self.clients(scope.shard, scope.pattern.as_deref())?;
            let total = mine.len() as u64;
            mine.truncate(scope.limit as usize);
            answers.push(NodeAnswer {
                node: me,
                answered: true,
                clients: total,
                shown: mine.len() as u64,
                error: None,
            });
            rows.extend(mine.into_iter().map(|c| ClientInfo {
                node: Some(me),
                ..c
            }));
        }
        let deadline = Instant::now() + scope.wait;
        let mut waiting = ask.clone();
        while !waiting.is_empty() {
            let Ok(a) = rx.recv_deadline(deadline) else {
                break;
            };
            waiting.retain(|n| *n != a.node);
            answers.push(match a.result {
                Ok((total, list)) => {
                    let shown = list.len() as u64;
                    rows.extend(list.into_iter().map(|c| ClientInfo {
                        node: Some(a.node),
                        ..client(c)
                    }));
                    NodeAnswer {
                        node: a.node,
                        answered: true,
                        clients: u64::from(total),
                        shown,
                        error: None,
                    }
                }
                Err(e) => NodeAnswer {
                    node: a.node,
                    answered: false,
                    error: Some(e),
                    ..NodeAnswer::default()
                },
            });
        }
        for node in waiting {
            answers.push(NodeAnswer {
                node,
                answered: false,
                error: Some(format!("no answer within {} ms", scope.wait.as_millis())),
                ..NodeAnswer::default()
            });
        }
        answers.sort_by_key(|a| a.node);
        rows.sort_by(|a, b| (a.node, &a.client_id).cmp(&(b.node, &b.client_id)));
        Ok((rows, answers))
    }

    fn client_show(&self, client_id: &str) -> Result<ClientInfo, AdminError> {
        let q = Query::ClientShow {
            client_id: client_id.to_string(),
        };
        self.ask_clients(q, None)?
            .into_iter()
            .find(|c| c.client_id == client_id)
            .ok_or_else(|| AdminError::not_found(format!("no session for client \"{client_id}\"")))
    }

    fn kick(&self, client_id: &str) -> Result<(), AdminError> {
        let q = Query::Kick {
            client_id: client_id.to_string(),
        };
        if self.ask_done(q)? {
            Ok(())
        } else {
            Err(AdminError::not_found(format!(
                "client \"{client_id}\" is not connected"
            )))
        }
    }

    fn sessions(&self) -> Result<Vec<ClientInfo>, AdminError> {
        self.ask_clients(Query::Sessions, None)
    }

    fn subscriptions(&self, topic: Option<&str>) -> Result<Vec<SubscriptionInfo>, AdminError> {
        let q = Query::Subscriptions {
            topic: topic.map(str::to_string),
        };
        let mut out = Vec::new();
        for r in self.ask(q, None)? {
            if let Reply::Subscriptions(_, list) = r {
                out.extend(list.into_iter().map(|s| SubscriptionInfo {
                    client_id: s.client_id,
                    filter: s.filter,
                    qos: s.qos,
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    retain_handling: s.retain_handling,
                    subscription_id: s.subscription_id,
                }));
            }
        }
        out.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        Ok(out)
    }

    fn retained_list(&self, filter: &str, limit: usize) -> Result<Vec<RetainedInfo>, AdminError> {
        let q = Query::RetainedList {
            filter: filter.to_string(),
            limit,
        };
        let mut out = Vec::new();
        for r in self.ask(q, Some(0))? {
            if let Reply::Retained(_, list) = r {
                out.extend(list.into_iter().map(|m| RetainedInfo {
                    topic: m.topic,
                    qos: m.qos,
                    payload_len: m.payload_len,
                }));
            }
        }
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(out)
    }

    fn retained_delete(&self, topic: &str) -> Result<(), AdminError> {
        if self.ask_done(Query::RetainedDelete {
            topic: topic.to_string(),
        })? {
            Ok(())
        } else {
            Err(AdminError::not_found(format!(
                "no retained message on \"{topic}\""
            )))
        }
    }

    fn metrics(&self) -> Result<MetricsSnapshot, AdminError> {
        let mut last = lock(&self.last_busy);
        self.with(|h| {
            let now = Instant::now();
            // Until the core reports busy time, the shard threads' CPU time stands in.
            let cpu = h
                .stats()
                .iter()
                .all(|s| s.busy_ns.get() == 0)
                .then(|| super::threads::shard_cpu_seconds(h.shards()));
            let urls = listener_urls(h);
            let shards = h
                .stats()
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let busy = match &cpu {
                        Some(m) => (m.get(&i).copied().unwrap_or(0.0) * 1e9) as u64,
                        None => s.busy_ns.get(),
                    };
                    let (t0, b0) = last.get(i).copied().unwrap_or((now, busy));
                    let wall = now.duration_since(t0).as_nanos() as f64;
                    let ratio = if wall > 0.0 {
                        (busy.saturating_sub(b0) as f64 / wall).min(1.0)
                    } else {
                        0.0
                    };
                    if let Some(l) = last.get_mut(i) {
                        *l = (now, busy);
                    }
                    shard_metrics(i, s, busy, ratio, &urls)
                })
                .collect();
            MetricsSnapshot {
                uptime_secs: h.uptime().as_secs_f64(),
                draining: self.draining.load(Ordering::Relaxed),
                shards,
                bans: Some(ban_metrics(&h.access().bans)),
                links: h.cluster_stats().map_or_else(Vec::new, |c| {
                    c.links()
                        .iter()
                        .map(|l| super::backend::LinkMetrics::of(l))
                        .collect()
                }),
                cluster: self.cluster.as_ref().and_then(|c| c.metrics().ok()),
                handover: h
                    .cluster_stats()
                    .map(|c| super::backend::HandoverMetrics::of(&c.handover)),
            }
        })
    }

    fn cluster(&self) -> Option<std::sync::Arc<crate::cluster::Cluster>> {
        self.cluster.clone()
    }

    fn drain(&self) -> Result<(), AdminError> {
        self.with(|h| h.drain())?;
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!("draining: no new connections");
        Ok(())
    }

    fn shutdown(&self) -> Result<(), AdminError> {
        self.with(|h| h.shutdown())?;
        let _ = lock(&self.on_shutdown).send(());
        Ok(())
    }
}

fn ban_metrics(b: &ringmq_shard::access::bans::Bans) -> super::backend::BanMetrics {
    use std::sync::atomic::Ordering::Relaxed;
    super::backend::BanMetrics {
        active: b.active() as u64,
        refused_connects: b.stats.refused.load(Relaxed),
        auto_bans: b.stats.auto_bans.load(Relaxed),
        auth_failures: b.stats.auth_failures.load(Relaxed),
    }
}
