//! The control-plane thread: one OS thread per node running a current-thread
//! tokio runtime with openraft, the cluster listener, the ownership batcher
//! and the liveness task. Callers talk to it only through a [`RaftHandle`]
//! (channels), so no Raft call ever runs on a broker shard.

pub mod core;
pub mod membership;
pub mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use self::core::Core;
use crate::error::OpenError;
use crate::facade::{liveness, owner};
use crate::handle::{Job, RaftHandle};
use crate::net::client::NetworkFactory;
use crate::net::faults::Faults;
use crate::net::stats::NetStats;
use crate::net::tls::{Tls, TlsFiles};
use crate::net::{server, NetCtx};
use crate::store::{LogStore, StateMachine, Store, StoreOptions};
use crate::types::{BasicNode, NodeId, Raft};

/// How ownership claims are grouped into log entries.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Most claims in one entry.
    pub max_items: usize,
    /// How long a batch that is not full waits for more claims (0: take what
    /// queued while the previous batch was committing, no extra wait).
    pub linger: Duration,
    /// Batches committing at once.
    pub max_inflight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: 4096,
            linger: Duration::ZERO,
            max_inflight: 8,
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Every node of one cluster carries the same id; data dirs and peers of
    /// another cluster are refused.
    pub cluster_id: String,
    /// Where the cluster port listens.
    pub listen: SocketAddr,
    /// The address other nodes dial (default: the bound address).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// The initial voters (id -> address, this node included) when the
    /// cluster is formed by static configuration; empty for a node that waits
    /// to be added as a learner. An empty address stands for this node's own.
    pub bootstrap: BTreeMap<NodeId, String>,
    pub tls: Option<TlsFiles>,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot (a follower that lags less catches up
    /// from the log, one that lags more gets the snapshot).
    pub keep_logs: u64,
    /// Longest a write or a linearizable read waits.
    pub write_timeout: Duration,
    /// Longest a membership change waits.
    pub membership_timeout: Duration,
    /// A member unheard of this long is marked down in the liveness keys.
    pub node_down_after: Duration,
    /// How often the leader re-checks liveness.
    pub liveness_interval: Duration,
    /// Largest frame between nodes (a whole snapshot is one frame).
    pub max_frame: usize,
    pub connect_timeout: Duration,
    pub batch: BatchConfig,
    pub store: StoreOptions,
}

impl NodeConfig {
    /// Defaults for everything but the identity and the places.
    pub fn new(node_id: NodeId, cluster_id: &str, listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            node_id,
            cluster_id: cluster_id.to_string(),
            listen,
            advertise: None,
            data_dir,
            bootstrap: BTreeMap::new(),
            tls: None,
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            snapshot_every: 20_000,
            keep_logs: 1_000,
            write_timeout: Duration::from_secs(5),
            membership_timeout: Duration::from_secs(30),
            node_down_after: Duration::from_secs(3),
            liveness_interval: Duration::from_millis(500),
            max_frame: 256 << 20,
            connect_timeout: Duration::from_secs(1),
            batch: BatchConfig::default(),
            store: StoreOptions::default(),
        }
    }

    /// One line naming the field when a value cannot work.
    pub fn validate(&self) -> Result<(), OpenError> {
        let bad = |m: &str| Err(OpenError::Config(m.to_string()));
        if self.node_id == 0 {
            return bad("node_id: must be 1 or more");
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > crate::net::frame::MAX_CLUSTER_ID {
            return bad("cluster_id: must be 1 to 256 bytes");
        }
        if self.heartbeat.is_zero() || self.election_min <= self.heartbeat * 2 {
            return bad("election_min: must exceed twice the heartbeat interval");
        }
        if self.election_max <= self.election_min {
            return bad("election_max: must exceed election_min");
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every: must be 1 or more");
        }
        if self.batch.max_items == 0 || self.batch.max_inflight == 0 {
            return bad("batch: max_items and max_inflight must be 1 or more");
        }
        if !self.bootstrap.is_empty() && !self.bootstrap.contains_key(&self.node_id) {
            return bad("bootstrap: must include this node's id");
        }
        if self.max_frame < 1 << 20 {
            return bad("max_frame: must be at least 1 MiB");
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, OpenError> {
        let ms = |d: Duration| d.as_millis() as u64;
        openraft::Config {
            cluster_name: self.cluster_id.clone(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            install_snapshot_timeout: ms(self.membership_timeout),
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Config(format!("raft: {e}")))
    }
}

/// A running node: its control-plane thread and the handle to it.
pub struct RaftNode {
    handle: RaftHandle,
    addr: SocketAddr,
    faults: Faults,
    stats: Arc<NetStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Started {
    store: Weak<Store>,
}

impl RaftNode {
    /// Binds `cfg.listen` and starts the node.
    pub fn start(cfg: NodeConfig) -> Result<RaftNode, OpenError> {
        let listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| OpenError::Config(format!("listen {}: {e}", cfg.listen)))?;
        Self::start_with_listener(cfg, listener)
    }

    /// Starts the node on an already bound listener (tests bind port 0 first
    /// to learn every node's address before any node starts).
    pub fn start_with_listener(
        cfg: NodeConfig,
        listener: std::net::TcpListener,
    ) -> Result<RaftNode, OpenError> {
        cfg.validate()?;
        listener
            .set_nonblocking(true)
            .map_err(|e| OpenError::Config(format!("listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| OpenError::Config(format!("listen: {e}")))?;
        let (jobs_tx, jobs_rx) = flume::bounded::<Job>(1 << 16);
        let (claims_tx, claims_rx) = flume::bounded(1 << 16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let faults = Faults::default();
        let stats = Arc::new(NetStats::default());
        let id = cfg.node_id;
        let (f, s) = (faults.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || {
                run(
                    cfg, listener, addr, f, s, jobs_rx, claims_rx, stop_rx, ready_tx,
                )
            })
            .map_err(|e| OpenError::Start(format!("spawn thread: {e}")))?;
        let started = match ready_rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(OpenError::Start("control-plane thread exited".into()));
            }
        };
        let handle = RaftHandle::new(id, jobs_tx, claims_tx, started.store);
        Ok(RaftNode {
            handle,
            addr,
            faults,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    pub fn id(&self) -> NodeId {
        self.handle.id()
    }

    /// The bound cluster address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Test partitions (see [`Faults`]).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn net_stats(&self) -> &NetStats {
        &self.stats
    }

    /// Stops the node: Raft shut down, listener closed, store closed; returns
    /// when the thread has exited (the data dir may then be reopened).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    cfg: NodeConfig,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    faults: Faults,
    stats: Arc<NetStats>,
    jobs: flume::Receiver<Job>,
    claims: flume::Receiver<owner::Claim>,
    stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<Started, OpenError>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(OpenError::Start(format!("runtime: {e}"))));
            return;
        }
    };
    let log_writer = rt.block_on(async move {
        let (core, log_writer) = match boot(cfg, listener, addr, faults, stats).await {
            Ok(booted) => booted,
            Err(e) => {
                let _ = ready.send(Err(e));
                return None;
            }
        };
        tokio::spawn(owner::run_batcher(core.clone(), claims));
        tokio::spawn(liveness::run(core.clone()));
        let _ = ready.send(Ok(Started {
            store: Arc::downgrade(&core.store),
        }));
        let mut stop = stop;
        loop {
            tokio::select! {
                job = jobs.recv_async() => match job {
                    Ok(job) => { tokio::spawn(job(core.clone())); }
                    Err(_) => break,
                },
                _ = &mut stop => break,
            }
        }
        if let Err(e) = core.raft.shutdown().await {
            warn!(node = core.id, error = %e, "raft shutdown");
        }
        info!(node = core.id, "raft node stopped");
        Some(log_writer)
    });
    // Dropping the runtime cancels the remaining tasks (dropping every log
    // store handle, which ends the log writer) and waits for blocking
    // storage work; once the writer has ended too, the store is closed.
    drop(rt);
    if let Some(w) = log_writer {
        let _ = w.join();
    }
}

/// Counts terms and leader changes as openraft reports them.
async fn watch_leader(core: Arc<Core>) {
    use openraft::async_runtime::WatchReceiver as _;
    let mut rx = core.raft.metrics();
    let (mut term, mut leader) = {
        let m = rx.borrow_watched();
        (m.current_term, m.current_leader)
    };
    while rx.changed().await.is_ok() {
        let (t, l) = {
            let m = rx.borrow_watched();
            (m.current_term, m.current_leader)
        };
        let c = &core.store.counters;
        if t > term {
            crate::counters::add(&c.terms_seen, t - term);
        }
        if l != leader {
            crate::counters::add(&c.leader_changes, 1);
        }
        (term, leader) = (t, l);
    }
}

async fn boot(
    cfg: NodeConfig,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    faults: Faults,
    stats: Arc<NetStats>,
) -> Result<(Arc<Core>, JoinHandle<()>), OpenError> {
    let store = Store::open(&cfg.data_dir, &cfg.cluster_id, cfg.node_id, &cfg.store)?;
    let (log, log_writer) = LogStore::open(store.clone()).map_err(|source| OpenError::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let tls = match &cfg.tls {
        Some(files) => Some(Tls::load(files).map_err(OpenError::Config)?),
        None => None,
    };
    let net = Arc::new(NetCtx {
        node_id: cfg.node_id,
        cluster_id: cfg.cluster_id.clone(),
        tls,
        faults,
        stats,
        max_frame: cfg.max_frame,
        connect_timeout: cfg.connect_timeout,
        handshake_timeout: Duration::from_secs(5),
    });
    let config = Arc::new(cfg.raft_config()?);
    let raft = Raft::new(
        cfg.node_id,
        config,
        NetworkFactory::new(net.clone()),
        log,
        StateMachine::new(store.clone()),
    )
    .await
    .map_err(|e| OpenError::Start(format!("raft: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| OpenError::Config(format!("listen: {e}")))?;
    let own = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
    let bootstrap: BTreeMap<NodeId, BasicNode> = cfg
        .bootstrap
        .iter()
        .map(|(id, a)| {
            (
                *id,
                BasicNode {
                    addr: if a.is_empty() { own.clone() } else { a.clone() },
                },
            )
        })
        .collect();
    let core = Arc::new(Core::new(cfg.node_id, raft.clone(), store, net, cfg));
    // Watching terms before `initialize`: the first election can be over
    // within milliseconds, before `run` spawns anything else.
    tokio::spawn(watch_leader(core.clone()));
    tokio::spawn(server::serve(listener, core.clone()));
    if !bootstrap.is_empty()
        && !raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Start(e.to_string()))?
    {
        // Every bootstrap node proposes the same membership at index 0; the
        // first election settles it. A node that already joined refuses.
        if let Err(e) = raft.initialize(bootstrap).await {
            info!(node = core.id, error = %e, "bootstrap: not initializing");
        }
    }
    Ok((core, log_writer))
}
