//! `RINGMQ_TEST_CLUSTER=N` (N >= 2): every in-process broker a suite starts is a cluster of
//! N nodes instead of one, and the address the suite's clients get is a round-robin TCP
//! forwarder in front of them, so successive connections go to node 1, 2, ..., N, 1, ...
//! (as a load balancer in `roundrobin` mode would spread them; deploy/haproxy.cfg).
//!
//! Each node is what the `ringmq` binary runs (src/main.rs): the raft control plane
//! (`ringmq_broker::cluster::Cluster`, ownership at CONNECT, fencing) and the shards with
//! their node links, configured from the same `[cluster]` settings (`Config::raft_node_config`,
//! `Config::cluster_links`). They run in the test's process so that a suite's configuration
//! tweaks (`Broker::start_with`) apply to every node as they are, and `Broker::stat` sums the
//! counters of every node. A node gets the shard count the suite asked for.
//!
//! The cluster is handed over once every node sees a leader and every node link is up: a
//! subscription made then is acknowledged by every node before its SUBACK.

use ringmq_shard::config::ShardConfig;
use ringmq_shard::server::{self, ServerHandle};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The number of nodes asked for by `RINGMQ_TEST_CLUSTER`, when it is 2 or more.
pub fn nodes() -> Option<usize> {
    let v = std::env::var("RINGMQ_TEST_CLUSTER").ok()?;
    match v.parse::<usize>() {
        Ok(n) if n >= 2 => Some(n),
        Ok(_) => None,
        Err(_) => panic!("RINGMQ_TEST_CLUSTER={v}: not a node count"),
    }
}

/// Whether suites run against a cluster (tests that inherently need one node skip).
pub fn enabled() -> bool {
    nodes().is_some()
}

/// Returns true (after saying why on stderr) when a test must skip in cluster mode.
pub fn skip(why: &str) -> bool {
    if enabled() {
        eprintln!("skipped against a cluster: {why}");
        return true;
    }
    false
}

/// One node: its core and its control plane.
pub struct Node {
    pub handle: ServerHandle,
    pub raft: Arc<ringmq_broker::cluster::Cluster>,
    pub data_dir: std::path::PathBuf,
    pub mqtt: SocketAddr,
}

/// A running in-process cluster behind a round-robin forwarder.
pub struct Nodes {
    pub nodes: Vec<Node>,
    pub front: Forwarder,
}

/// A port free now on 127.0.0.1 whose next port is free too (raft on P, node links on P+1).
pub fn free_port_pair() -> u16 {
    free_pair_below_ephemeral()
}

/// A pair of ports (P, P+1) free now, drawn at random from 20000-32767: below Linux's
/// ephemeral range (32768-60999), so the connections other tests and benchmarks open on this
/// machine cannot take them between this check and the node's bind (ports picked from the
/// ephemeral range lost that race under load).
pub fn free_pair_below_ephemeral() -> u16 {
    use std::sync::atomic::AtomicU64;
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    if x == 0 {
        x = 0x2545_f491;
    }
    loop {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let p = 20_000 + (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u16 % 12_760;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

/// Starts `n` nodes, each from `cfg` (its listeners, limits, shards) plus the cluster.
/// The ports are picked free and released before the nodes bind them, so another test may
/// take one meanwhile: then the attempt is undone and made again on new ports.
pub fn start(n: usize, cfg: &ShardConfig) -> Nodes {
    let mut last = String::new();
    for _ in 0..5 {
        match try_start(n, cfg) {
            Ok(nodes) => {
                wait_ready(&nodes.nodes);
                return nodes;
            }
            Err(e) => last = e,
        }
    }
    panic!("test cluster did not start: {last}");
}

fn try_start(n: usize, cfg: &ShardConfig) -> Result<Nodes, String> {
    use ringmq_broker::config::Config;
    let ports: Vec<u16> = (0..n).map(|_| free_port_pair()).collect();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let undo = |nodes: Vec<Node>, why: String| {
        stop_nodes(nodes, Duration::from_secs(5));
        Err(why)
    };
    for id in 1..=n as u64 {
        let data_dir = super::broker::scratch_dir();
        let mut c = Config::default();
        c.cluster.node_id = id;
        c.cluster.cluster_id = "ringmq-test".into();
        c.cluster.cluster_peers = peers.iter().map(|p| p.parse().unwrap()).collect();
        c.persistence.data_dir = data_dir.clone();
        // A CONNECT waits for one raft commit (an fsync on a majority). On a machine shared with
        // compilers and benchmarks (load 16) the default 3 s bound was passed a few times in a
        // full run (CONNACK 0x88 in tests about something else); the suites test MQTT, not how
        // long an overloaded disk takes, so they get a wider bound.
        c.cluster.cluster_claim_timeout = ringmq_broker::config::cluster_types::Millis(10_000);
        let raft_cfg = c.raft_node_config().expect("a clustered config");
        let links = c.cluster_links().expect("node links").expect("clustered");
        let raft = match ringmq_broker::cluster::Cluster::start(
            raft_cfg,
            c.cluster.cluster_claim_timeout.duration(),
        ) {
            Ok(r) => r,
            Err(e) => return undo(nodes, format!("raft node {id}: {e}")),
        };
        let mut sc = cfg.clone();
        sc.data_dir = data_dir.clone();
        sc.cluster = Some(links);
        sc.ownership = Some(raft.gate());
        let handle = match server::start(sc) {
            Ok(h) => h,
            Err(e) => {
                raft.stop();
                return undo(nodes, format!("node {id}: {e}"));
            }
        };
        raft.start_fencing(handle.fencer()).expect("fencing starts");
        let mqtt = *handle.local_addrs().first().expect("one listener");
        nodes.push(Node {
            handle,
            raft,
            data_dir,
            mqtt,
        });
    }
    let front = Forwarder::start(nodes.iter().map(|n| n.mqtt).collect());
    Ok(Nodes { nodes, front })
}

/// Until every node sees the same leader and every node link is up.
fn wait_ready(nodes: &[Node]) {
    if nodes.is_empty() {
        return;
    }
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| n.raft.status_json().ok().and_then(|s| s["leader"].as_u64()))
            .collect();
        let same_leader = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
        let links_up = nodes.iter().all(|n| {
            n.handle
                .cluster_stats()
                .is_some_and(|c| c.links.iter().all(|l| l.up.get() == 1))
        });
        if same_leader && links_up {
            return;
        }
        if Instant::now() >= end {
            panic!("test cluster not ready within 30 s: leaders {leaders:?}, links up {links_up}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Nodes {
    /// Graceful shutdown of every node (bounded by `deadline` each); then the control planes.
    pub fn shutdown(self, deadline: Duration) -> bool {
        self.front.stop();
        stop_nodes(self.nodes, deadline)
    }
}

/// Stops every node's shards (each bounded by `deadline`), then its control plane.
fn stop_nodes(nodes: Vec<Node>, deadline: Duration) -> bool {
    let mut done = true;
    for n in &nodes {
        n.handle.shutdown();
    }
    for n in nodes {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = n.handle;
        std::thread::spawn(move || {
            let _ = h.join();
            let _ = tx.send(());
        });
        done &= rx.recv_timeout(deadline).is_ok();
        n.raft.stop();
        let _ = std::fs::remove_dir_all(&n.data_dir);
    }
    done
}

/// A round-robin TCP forwarder: connection k goes to `targets[k % len]`. Blocking threads
/// (two per connection, copying each way; an end-of-stream is passed on as a half close),
/// so it serves whatever runtime the test runs on.
pub struct Forwarder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections made so far (the next one goes to `targets[next % len]`).
    pub next: Arc<AtomicUsize>,
}

impl Forwarder {
    pub fn start(targets: Vec<SocketAddr>) -> Forwarder {
        let l = TcpListener::bind("127.0.0.1:0").expect("forwarder binds");
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let (st, nx) = (stop.clone(), next.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = c else { continue };
                let k = nx.fetch_add(1, Ordering::Relaxed);
                let Some(&target) = targets.get(k % targets.len().max(1)) else {
                    continue;
                };
                std::thread::spawn(move || forward(client, target));
            }
        });
        Forwarder { addr, stop, next }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn forward(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client, s2));
    pipe(server, c2);
    let _ = up.join();
}

/// Copies `from` to `to` until `from` ends, then half-closes `to` (or closes both on an error).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
