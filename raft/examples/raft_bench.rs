//! Benchmark: three in-process nodes over loopback TCP, each with its own
//! LMDB dir; ownership changes committed per second (batched claims) with
//! p50/p99 latency, on the leader and through a follower; then the time to a
//! new leader after the leader stops.
//!
//! cargo run --release -p ringmq-raft --example raft_bench -- [secs] [inflight] [dir]
//! (env: BATCHES=n claim batches committing at once, default 8; MAX_ITEMS=n
//! claims per entry at most, default 4096; LINGER_US=n batching window;
//! FAILOVERS=n leader stops timed, default 5)

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq_raft::{ClaimError, NodeConfig, NodeId, Ownership, RaftNode};

const CLUSTER: &str = "bench";

fn config(id: NodeId, dir: &std::path::Path, addrs: &BTreeMap<NodeId, String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        CLUSTER,
        addrs[&id].parse().unwrap(),
        dir.join(format!("node-{id}")),
    );
    cfg.bootstrap = addrs.clone();
    cfg.heartbeat = Duration::from_millis(50);
    cfg.election_min = Duration::from_millis(300);
    cfg.election_max = Duration::from_millis(600);
    cfg.snapshot_every = 50_000;
    cfg.store.map_size = 4 << 30;
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = env("BATCHES") {
        cfg.batch.max_inflight = n as usize;
    }
    if let Some(n) = env("MAX_ITEMS") {
        cfg.batch.max_items = n as usize;
    }
    if let Some(us) = env("LINGER_US") {
        cfg.batch.linger = Duration::from_micros(us);
    }
    cfg
}

fn leader(nodes: &BTreeMap<NodeId, RaftNode>, within: Duration) -> (NodeId, Duration) {
    let t = Instant::now();
    loop {
        let mut agreed = None;
        let mut ok = true;
        for n in nodes.values() {
            match futures::executor::block_on(n.handle().status()) {
                Ok(s) if s.leader.is_some_and(|l| nodes.contains_key(&l)) => {
                    if agreed.is_some_and(|a| Some(a) != s.leader) {
                        ok = false;
                    }
                    agreed = s.leader;
                }
                _ => ok = false,
            }
        }
        if let (true, Some(l)) = (ok, agreed) {
            return (l, t.elapsed());
        }
        assert!(t.elapsed() < within, "no leader within {within:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `inflight` claim loops on `own` for `secs`; ownership changes/s and latency.
fn run(
    own: Ownership,
    node: NodeId,
    secs: u64,
    inflight: usize,
    base: u64,
) -> (f64, Histogram<u64>, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hist = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..inflight {
            let (own, stop, done, conflicts) =
                (own.clone(), stop.clone(), done.clone(), conflicts.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let mut i = 0u64;
                // Each loop owns its ids: claim new ones (epoch 0), and every
                // fourth time take one back over from its current epoch.
                let mut last: Option<(Vec<u8>, u64)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let (id, expected) = match last.take() {
                        Some((id, epoch)) if i.is_multiple_of(4) => (id, epoch),
                        _ => (format!("c-{base}-{t}-{i}").into_bytes(), 0),
                    };
                    i += 1;
                    let t0 = Instant::now();
                    match own.claim(&id, node, expected).await {
                        Ok(epoch) => {
                            h.record(t0.elapsed().as_micros() as u64).unwrap();
                            done.fetch_add(1, Ordering::Relaxed);
                            last = Some((id, epoch));
                        }
                        Err(ClaimError::Conflict { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("claim failed: {e}"),
                    }
                }
                h
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        all
    });
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    (rate, hist, conflicts.load(Ordering::Relaxed))
}

/// CPU time of this process so far (all threads), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What the control-plane thread shape costs: CPU of three idle nodes
/// (heartbeats only) and the round trip of a request through the handle
/// (flume channel in, oneshot back, no Raft work).
fn runtime_cost(nodes: &BTreeMap<NodeId, RaftNode>, l: NodeId) {
    let c0 = cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let idle = cpu_time() - c0;
    println!(
        "idle: 3 nodes, heartbeat 50 ms: {:.1}% of one core for the whole process over {:.1} s",
        idle.as_secs_f64() * 100.0 / t0.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let h = nodes[&l].handle();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..10_000 {
        let t = Instant::now();
        futures::executor::block_on(h.status()).unwrap();
        hist.record(t.elapsed().as_nanos() as u64 / 1000 + 1)
            .unwrap();
    }
    println!(
        "handle round trip (status(), from another thread, 10k sequential): p50 {} us, p99 {} us",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99)
    );
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).map_or(5, |s| s.parse().expect("secs"));
    let inflight: usize = args.get(2).map_or(2048, |s| s.parse().expect("inflight"));
    let base = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("raft-bench")
        .tempdir_in(&base)
        .unwrap();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").unwrap());
    }
    let addrs: BTreeMap<NodeId, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(
            id,
            RaftNode::start_with_listener(config(id, dir.path(), &addrs), l).unwrap(),
        );
    }
    let (l, t) = leader(&nodes, Duration::from_secs(20));
    println!(
        "cluster: 3 nodes, data in {} ; first leader {l} after {} ms",
        base.display(),
        t.as_millis()
    );
    runtime_cost(&nodes, l);

    for (label, via) in [
        ("leader", l),
        ("follower (forwarded)", if l == 1 { 2 } else { 1 }),
    ] {
        let own = nodes[&via].handle().ownership();
        let c0 = cpu_time();
        let (rate, h, conflicts) = run(own, via, secs, inflight, via * 1_000_000_000);
        let cpu = (cpu_time() - c0).as_secs_f64();
        println!(
            "  cpu: {cpu:.2} s of CPU for the whole process (3 nodes + load) in {secs} s: {:.0} changes per CPU-second",
            rate * secs as f64 / cpu
        );
        println!(
            "claims via {label}: {rate:.0} ownership changes/s over {secs} s, {inflight} in flight; latency p50 {} us, p99 {} us, max {} us; {conflicts} conflicts",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    let s = futures::executor::block_on(nodes[&l].handle().status()).unwrap();
    println!(
        "log: last index {:?}, snapshot {:?}, purged {:?}",
        s.last_log_index, s.snapshot, s.purged
    );
    for (id, n) in &nodes {
        let k = futures::executor::block_on(n.handle().status())
            .unwrap()
            .counters;
        println!(
            "node {id}: {} appends (fsyncs) for {} entries ({:.1} entries per append); {} commands committed here, mean commit {} us; {} terms seen, {} leader changes",
            k.appends,
            k.appended_entries,
            k.appended_entries as f64 / k.appends.max(1) as f64,
            k.commits,
            k.commit_us_total / k.commits.max(1),
            k.terms_seen,
            k.leader_changes
        );
    }

    // Failover: stop the leader, time until the other two agree on a new one.
    let runs = std::env::var("FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if runs == 0 {
        return;
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let (old, _) = leader(&nodes, Duration::from_secs(20));
        let node = nodes.remove(&old).unwrap();
        let t0 = Instant::now();
        node.stop();
        let (new, _) = leader(&nodes, Duration::from_secs(20));
        let took = t0.elapsed();
        times.push(took);
        println!(
            "failover: leader {old} stopped, {new} leads after {} ms",
            took.as_millis()
        );
        let cfg = config(old, dir.path(), &addrs);
        let node = loop {
            match RaftNode::start(cfg.clone()) {
                Ok(n) => break n,
                Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                    eprintln!("restart {old}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restart {old}: {e}"),
            }
        };
        nodes.insert(old, node);
        leader(&nodes, Duration::from_secs(20));
    }
    times.sort();
    println!(
        "failover over {} runs (election timeout 300-600 ms, heartbeat 50 ms): min {} ms, median {} ms, max {} ms",
        times.len(),
        times[0].as_millis(),
        times[times.len() / 2].as_millis(),
        times[times.len() - 1].as_millis()
    );
}
