//! A cluster of in-process nodes over loopback TCP, each with its own LMDB
//! dir in one temp dir, with the means to stop, restart and partition them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringmq_raft::{NodeConfig, NodeId, OpenError, RaftHandle, RaftNode, Status};

pub const CLUSTER: &str = "test-cluster";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RINGMQ_TEST_LOG"))
        .with_test_writer()
        .try_init();
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Option<RaftNode>>,
    pub tweak: Tweak,
}

pub type Tweak = std::sync::Arc<dyn Fn(&mut NodeConfig) + Send + Sync>;

impl Cluster {
    /// `n` voters formed by static bootstrap (as `--cluster-peers` would).
    pub fn new(n: u64) -> Cluster {
        Self::with(n, |_: &mut NodeConfig| {})
    }

    pub fn with(n: u64, tweak: impl Fn(&mut NodeConfig) + Send + Sync + 'static) -> Cluster {
        let tweak: Tweak = std::sync::Arc::new(tweak);
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<_, _> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let mut c = Cluster {
            dir,
            addrs,
            nodes: BTreeMap::new(),
            tweak,
        };
        let bootstrap: BTreeMap<NodeId, String> =
            c.addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        for (id, l) in listeners {
            let mut cfg = c.config(id);
            cfg.bootstrap = bootstrap.clone();
            let node = RaftNode::start_with_listener(cfg, l).expect("start node");
            c.nodes.insert(id, Some(node));
        }
        c
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Fast timings for tests.
    pub fn config(&self, id: NodeId) -> NodeConfig {
        let listen = self
            .addrs
            .get(&id)
            .copied()
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let mut cfg = NodeConfig::new(id, CLUSTER, listen, self.data_dir(id));
        cfg.heartbeat = Duration::from_millis(50);
        cfg.election_min = Duration::from_millis(300);
        cfg.election_max = Duration::from_millis(600);
        cfg.write_timeout = Duration::from_secs(3);
        cfg.membership_timeout = Duration::from_secs(20);
        cfg.node_down_after = Duration::from_millis(1000);
        cfg.liveness_interval = Duration::from_millis(200);
        cfg.store.map_size = 64 << 20;
        (self.tweak)(&mut cfg);
        cfg
    }

    /// Adds a fresh node (no bootstrap: it waits to be added as a learner).
    pub fn spawn_fresh(&mut self, id: NodeId) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().unwrap();
        self.addrs.insert(id, addr);
        let node = RaftNode::start_with_listener(self.config(id), l).expect("start fresh node");
        self.nodes.insert(id, Some(node));
        addr
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes[&id].as_ref().expect("node running")
    }

    pub fn handle(&self, id: NodeId) -> RaftHandle {
        self.node(id).handle()
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn stop(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id).and_then(|n| n.take()) {
            n.stop();
        }
    }

    pub fn try_restart(&mut self, id: NodeId) -> Result<(), OpenError> {
        let cfg = self.config(id);
        let node = poll(
            "the old listener/env to be released",
            Duration::from_secs(10),
            || match RaftNode::start(cfg.clone()) {
                Ok(n) => Some(Ok(n)),
                Err(OpenError::Lmdb {
                    source: heed::Error::EnvAlreadyOpened,
                    ..
                }) => None,
                Err(OpenError::Config(m)) if m.contains("Address already in use") => None,
                Err(e) => Some(Err(e)),
            },
        )?;
        self.nodes.insert(id, Some(node));
        Ok(())
    }

    pub fn restart(&mut self, id: NodeId) {
        self.try_restart(id).expect("restart node");
    }

    pub fn status(&self, id: NodeId) -> Status {
        block_on(self.handle(id).status()).expect("status")
    }

    /// The leader every running node (among `among`) agrees on.
    pub fn leader_among(&self, among: &[NodeId], within: Duration) -> NodeId {
        poll("a leader all agree on", within, || {
            let mut leader = None;
            for id in among {
                let s = block_on(self.handle(*id).status()).ok()?;
                let l = s.leader?;
                if !among.contains(&l) || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            let l = leader?;
            (self.status(l).state == "leader").then_some(l)
        })
    }

    pub fn leader(&self) -> NodeId {
        self.leader_among(&self.running(), Duration::from_secs(20))
    }

    /// Cuts `a` and `b` off from each other (both directions).
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.node(a).faults().block(b);
        self.node(b).faults().block(a);
    }

    pub fn heal(&self) {
        for id in self.running() {
            self.node(id).faults().heal();
        }
    }

    /// Waits until every running node has applied `key` at `version`.
    pub fn converged(&self, key: &[u8], version: u64) {
        for id in self.running() {
            poll(
                &format!("node {id} to apply {key:?}@{version}"),
                Duration::from_secs(20),
                || {
                    let v = self.handle(id).read_local(key).ok()??;
                    (v.version >= version).then_some(())
                },
            );
        }
    }
}
