//! Multi-process cluster harness: N real `ringmq` binaries on 127.0.0.1,
//! `--cores 1` each, each with its own data dir and cluster port, stopped by
//! PID (SIGKILL or SIGTERM), restartable on the same data dir; `ringmq ctl`
//! against each node's admin socket.
#![allow(dead_code)]

pub mod acked;
pub mod mosq;
pub mod netns;
pub mod watchdog;

use crate::common::persist::{launch, launch_cmd, DataDir, Durable, Launched};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound for a cluster to elect a leader or converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// A port free right now on 127.0.0.1 (bound then released), below the ephemeral range
/// (`common::cluster::free_pair_below_ephemeral`). The port after it is free too: a node's
/// data-plane links listen on its cluster port + 1 (docs/cluster-data-plane.md).
pub fn free_port() -> u16 {
    crate::common::cluster::free_pair_below_ephemeral()
}

/// One node: its id, cluster address, data dir and process (while running).
pub struct Node {
    pub id: u64,
    pub cluster: String,
    pub dir: DataDir,
    pub proc: Option<Durable>,
    /// Arguments beyond the common ones (node id, peers, extra flags).
    args: Vec<String>,
    /// The MQTT listener URL.
    listen: String,
    /// The network namespace it runs in (partition tests).
    ns: Option<String>,
}

impl Node {
    /// A node outside any cluster of the test, with its own data dir and
    /// `cluster` flags (not started).
    pub fn stranger(id: u64, cluster: &[&str]) -> Node {
        let mut args = vec!["--node-id".to_string(), id.to_string()];
        args.extend(cluster.iter().map(|s| s.to_string()));
        Node {
            id,
            cluster: String::new(),
            dir: DataDir::new(),
            proc: None,
            args,
            listen: "mqtt://127.0.0.1:0".into(),
            ns: None,
        }
    }

    pub fn mqtt(&self) -> SocketAddr {
        self.proc.as_ref().expect("node running").addr
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// Starts the process with the common flags and `cluster` instead of its
    /// own cluster flags; expects a refusal: its stderr.
    pub fn start_refused_with(&self, cluster: &[&str]) -> String {
        let mut a = self.base_args();
        a.extend(cluster.iter().map(|s| s.to_string()));
        match launch(&a) {
            Launched::Exited { stderr, .. } => stderr,
            Launched::Up(_) => panic!("node {} started but should have been refused", self.id),
        }
    }

    /// `ctl cluster owner ID --json`: (owner, epoch), None when unowned or unanswered.
    pub fn owner(&self, client_id: &str) -> Option<(u64, u64)> {
        let (code, out, _) = self.ctl(&["--json", "cluster", "owner", client_id]);
        if code != 0 {
            return None;
        }
        let v: Value = serde_json::from_str(out.trim()).ok()?;
        let r = &v["result"];
        Some((r["owner"].as_u64()?, r["epoch"].as_u64()?))
    }

    fn base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["--listen", &self.listen, "--allow-anonymous", "true"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // One core unless the node's own flags say otherwise.
        if !self.args.iter().any(|a| a == "--cores") {
            a.extend(["--cores".to_string(), "1".to_string()]);
        }
        // $SYS off unless the test's own flags set an interval.
        if !self.args.iter().any(|a| a == "--sys-interval-secs") {
            a.extend(["--sys-interval-secs".to_string(), "0".to_string()]);
        }
        a.push("--data-dir".to_string());
        a.push(self.dir.path.to_string_lossy().into_owned());
        a
    }

    fn all_args(&self) -> Vec<String> {
        let mut a = self.base_args();
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts (or restarts) the process on its data dir.
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "node {} already running", self.id);
        let args = self.all_args();
        let launched = match &self.ns {
            Some(ns) => launch_cmd(
                Command::new("ip")
                    .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ringmq")])
                    .args(&args),
            ),
            None => launch(&args),
        };
        match launched {
            Launched::Up(d) => self.proc = Some(d),
            Launched::Exited { status, stderr } => {
                panic!(
                    "node {} exited ({status}) instead of listening:\n{stderr}",
                    self.id
                )
            }
        }
    }

    /// Starts (or restarts) the process with `env` set (e.g. a test crash point).
    pub fn start_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.proc.is_none(), "node {} already running", self.id);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        cmd.args(self.all_args());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match launch_cmd(&mut cmd) {
            Launched::Up(d) => self.proc = Some(d),
            Launched::Exited { status, stderr } => {
                panic!(
                    "node {} exited ({status}) instead of listening:\n{stderr}",
                    self.id
                )
            }
        }
    }

    /// Waits for the process to die by itself (a test crash point): its stderr.
    pub fn wait_crash(&mut self, within: Duration) -> String {
        let mut p = self.proc.take().expect("node running");
        let status = p.wait_exit(within);
        assert!(
            status.is_some_and(|s| !s.success()),
            "node {} did not crash within {within:?} ({status:?}); stderr:\n{}",
            self.id,
            p.stderr()
        );
        p.stderr()
    }

    /// Starts it and expects it to exit instead (a refused start): its stderr.
    pub fn start_refused(&mut self) -> String {
        match launch(&self.all_args()) {
            Launched::Exited { stderr, .. } => stderr,
            Launched::Up(_) => panic!("node {} started but should have been refused", self.id),
        }
    }

    /// SIGKILL by PID.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM by PID, waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    /// `ringmq ctl --data-dir DIR ARGS...`: (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("ctl")
            .arg("--data-dir")
            .arg(&self.dir.path)
            .args(args)
            .output()
            .expect("run ringmq ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ctl cluster status --json`, parsed (None when the node cannot answer).
    pub fn status(&self) -> Option<Value> {
        let (code, out, _) = self.ctl(&["cluster", "status", "--json"]);
        if code != 0 {
            return None;
        }
        serde_json::from_str(out.trim()).ok()
    }
}

/// A cluster of nodes 1..=n formed from one `--cluster-peers` list.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

pub fn peers_of(nodes: &[(u64, String)]) -> String {
    nodes
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// `n` nodes with `extra` flags each, all started.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_on(n, extra, None)
    }

    /// `n` nodes, each in its namespace of `net` (MQTT on ADDR:1883,
    /// cluster port ADDR:7000), all started.
    pub fn start_in(net: &netns::Net, n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_on(n, extra, Some(net))
    }

    /// `n` nodes on 127.0.0.1, node `id` listening on `listen(id)` (an MQTT URL), all started.
    pub fn start_listening(n: u64, extra: &[&str], listen: impl Fn(u64) -> String) -> Cluster {
        Cluster::launch(n, extra, None, Some(&listen))
    }

    fn start_on(n: u64, extra: &[&str], net: Option<&netns::Net>) -> Cluster {
        Cluster::launch(n, extra, net, None)
    }

    /// `n` nodes on 127.0.0.1, node `id` with `each(id)` flags beyond `extra` (e.g. `--cores 2`).
    pub fn start_each(n: u64, extra: &[&str], each: impl Fn(u64) -> Vec<String>) -> Cluster {
        let mut c = Cluster::launch_each(n, extra, None, None, &each);
        for n in &mut c.nodes {
            n.start();
        }
        c
    }

    fn launch(
        n: u64,
        extra: &[&str],
        net: Option<&netns::Net>,
        listen: Option<&dyn Fn(u64) -> String>,
    ) -> Cluster {
        let mut c = Cluster::launch_each(n, extra, net, listen, &|_| Vec::new());
        for n in &mut c.nodes {
            n.start();
        }
        c
    }

    fn launch_each(
        n: u64,
        extra: &[&str],
        net: Option<&netns::Net>,
        listen: Option<&dyn Fn(u64) -> String>,
        each: &dyn Fn(u64) -> Vec<String>,
    ) -> Cluster {
        let addrs: Vec<(u64, String)> = (1..=n)
            .map(|id| match net {
                Some(net) => (id, format!("{}:7000", net.addr(id as usize))),
                None => (id, format!("127.0.0.1:{}", free_port())),
            })
            .collect();
        let peers = peers_of(&addrs);
        let nodes: Vec<Node> = addrs
            .iter()
            .map(|(id, a)| {
                let mut args: Vec<String> = vec![
                    "--node-id".into(),
                    id.to_string(),
                    "--cluster-peers".into(),
                    peers.clone(),
                ];
                // 1 s unless the test's own flags say otherwise.
                if !extra.contains(&"--node-down-after") {
                    args.extend(["--node-down-after".into(), "1s".into()]);
                }
                args.extend(extra.iter().map(|s| s.to_string()));
                args.extend(each(*id));
                Node {
                    id: *id,
                    cluster: a.clone(),
                    dir: DataDir::new(),
                    proc: None,
                    args,
                    listen: match net {
                        Some(net) => format!("mqtt://{}:1883", net.addr(*id as usize)),
                        None => listen.map_or("mqtt://127.0.0.1:0".into(), |f| f(*id)),
                    },
                    ns: net.map(|net| net.ns(*id as usize)),
                }
            })
            .collect();
        Cluster { nodes }
    }

    /// A node that will join the running cluster (not started).
    pub fn joiner(&mut self, id: u64, extra: &[&str]) -> &mut Node {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--cluster-peers".into(),
            format!("{id}@{addr}"),
            "--cluster-join".into(),
            "true".into(),
            "--node-down-after".into(),
            "1s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.nodes.push(Node {
            id,
            cluster: addr,
            dir: DataDir::new(),
            proc: None,
            args,
            listen: "mqtt://127.0.0.1:0".into(),
            ns: None,
        });
        self.nodes.last_mut().unwrap()
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    pub fn get(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node id")
    }

    /// Polls until every running node named in `among` reports the same
    /// leader, one of `among`, and that leader sees every one of them up;
    /// returns (leader, term).
    pub fn wait_leader(&self, among: &[u64]) -> (u64, u64) {
        let end = Instant::now() + CONVERGE;
        let mut last;
        loop {
            let views: Vec<Option<Value>> = among.iter().map(|id| self.get(*id).status()).collect();
            let leaders: Vec<Option<u64>> = views
                .iter()
                .map(|v| v.as_ref().and_then(|v| v["leader"].as_u64()))
                .collect();
            if let Some(Some(l)) = leaders.first() {
                if among.contains(l) && leaders.iter().all(|x| *x == Some(*l)) {
                    let lv = views[among.iter().position(|x| x == l).unwrap()]
                        .as_ref()
                        .unwrap();
                    let all_up = among.iter().all(|id| {
                        lv["nodes"]
                            .as_array()
                            .is_some_and(|ns| ns.iter().any(|n| n["id"] == *id && n["up"] == true))
                    });
                    if all_up {
                        return (*l, lv["term"].as_u64().unwrap_or(0));
                    }
                }
            }
            last = format!("{views:?}");
            if Instant::now() >= end {
                panic!("no common leader among {among:?} within {CONVERGE:?}; last views: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until every node in `among` has applied at least `index`.
    pub fn wait_applied(&self, among: &[u64], index: u64) {
        let end = Instant::now() + CONVERGE;
        loop {
            let behind: Vec<u64> = among
                .iter()
                .copied()
                .filter(|id| {
                    self.get(*id)
                        .status()
                        .and_then(|v| v["applied"].as_u64())
                        .is_none_or(|a| a < index)
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            if Instant::now() >= end {
                panic!("nodes {behind:?} did not apply index {index} within {CONVERGE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One multi-process cluster test at a time per test binary (each starts several
/// processes on a 2-CPU machine).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A current-thread tokio runtime for the clients a test drives.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
