//! The broker's side of the cluster (docs/cluster.md): the raft control
//! plane started from `[cluster]`, the ownership gate the shards await at
//! CONNECT, the fencing thread, `ctl cluster ...` and the metrics.
//!
//! Without `cluster_peers` naming another node none of this exists: no
//! thread, no gate, nothing on the CONNECT path.
//!
//! - `gate.rs`: [`ringmq_shard::ownership::OwnershipGate`] on the raft
//!   crate's batched ownership CAS.
//! - `fence.rs`: ownership changes applied here -> fences to the shards.
//! - `members.rs`: membership changes -> the node links (nodes added at run time).
//! - `status.rs`: `ctl cluster status` (JSON) and membership changes.
//! - `stats.rs`: claim/conflict/fencing counters, claim latency histogram.
//! - `wills.rs`: wills registered in the metadata; the wills of a dead
//!   node's clients published by a survivor.

mod fence;
mod gate;
mod members;
pub mod stats;
mod status;
pub mod wills;

use ringmq_raft::{NodeConfig, RaftHandle, RaftNode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use stats::{ClusterStats, OwnershipCounters};
pub use status::ClusterMetrics;

/// A running cluster node.
pub struct Cluster {
    node: Mutex<Option<RaftNode>>,
    handle: RaftHandle,
    stats: Arc<ClusterStats>,
    claim_timeout: Duration,
    fence_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The shards' will requests; the receiver until the will thread starts.
    wills_tx: flume::Sender<wills::Req>,
    wills_rx: Mutex<Option<flume::Receiver<wills::Req>>>,
    will_stats: Arc<wills::WillStats>,
    members_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Cluster {
    /// Opens the metadata store and starts the control-plane thread; the
    /// node joins (or, on first start of every listed node, forms) the
    /// cluster in the background. Errors are one line.
    pub fn start(cfg: NodeConfig, claim_timeout: Duration) -> Result<Arc<Cluster>, String> {
        let (id, listen) = (cfg.node_id, cfg.listen);
        let node = RaftNode::start(cfg).map_err(|e| match e {
            ringmq_raft::OpenError::Config(m) if m.starts_with("listen") => {
                format!("--cluster-listen {listen}: {m}")
            }
            e => e.to_string(),
        })?;
        tracing::info!(node = id, cluster = %node.addr(), "cluster node started");
        let (wills_tx, wills_rx) = flume::unbounded();
        Ok(Arc::new(Cluster {
            wills_tx,
            wills_rx: Mutex::new(Some(wills_rx)),
            will_stats: Arc::default(),
            handle: node.handle(),
            node: Mutex::new(Some(node)),
            stats: Arc::default(),
            claim_timeout,
            fence_thread: Mutex::new(None),
            members_thread: Mutex::new(None),
        }))
    }

    pub fn id(&self) -> u64 {
        self.handle.id()
    }

    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    /// The cluster port's bound address.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|n| n.addr())
    }

    /// What the shards get in their configuration.
    pub fn gate(&self) -> ringmq_shard::ownership::Gate {
        ringmq_shard::ownership::Gate {
            gate: Arc::new(gate::RaftGate {
                ownership: self.handle.ownership(),
                node: self.handle.id(),
                stats: self.stats.clone(),
            }),
            timeout: self.claim_timeout,
        }
    }

    /// Starts fencing the shards' sessions whose ownership moves elsewhere.
    pub fn start_fencing(&self, fencer: ringmq_shard::ownership::Fencer) -> Result<(), String> {
        let t = fence::start(&self.handle, fencer, self.stats.clone())?;
        *self.fence_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    /// The will registry the shards get in their configuration.
    pub fn wills(&self) -> ringmq_shard::wills::Registry {
        ringmq_shard::wills::Registry(Arc::new(wills::Registry {
            tx: self.wills_tx.clone(),
            node: self.handle.id(),
        }))
    }

    /// Starts the will thread: registrations reach the metadata, and the
    /// wills of dead nodes' clients are published through `publisher`.
    pub fn start_wills(&self, publisher: ringmq_shard::wills::WillPublisher) -> Result<(), String> {
        let rx = self
            .wills_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(rx) = rx else {
            return Err("cluster: the will thread runs already".into());
        };
        let tx = self.wills_tx.clone();
        wills::start(&self.handle, tx, rx, publisher, self.will_stats.clone())?;
        Ok(())
    }

    pub fn will_stats(&self) -> &wills::WillStats {
        &self.will_stats
    }

    /// Keeps the node links in step with the membership (nodes added or removed at run time).
    pub fn start_link_membership(
        &self,
        links: ringmq_shard::cluster::PeerSetter,
    ) -> Result<(), String> {
        let t = members::start(self.handle.clone(), links)?;
        *self
            .members_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Stops the control plane (after the shards, so no CONNECT waits on it).
    pub fn stop(&self) {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(n) = node {
            n.stop();
        }
        // The fence thread ends when the store's watch channel closes; it
        // holds nothing to flush, so it is not waited for.
        drop(
            self.fence_thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}
