//! Starting the broker: in-process (`ringmq_shard::server::start`) or as the `ringmq` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ringmq_shard::config::ShardConfig;
use ringmq_shard::server::{self, ServerHandle};

/// The home shard the broker places `client_id` on (`ringmq_shard::home_shard`), so tests can
/// put publisher and subscriber on different shards on purpose.
pub fn home_shard(client_id: &str, shards: usize) -> Option<usize> {
    Some(ringmq_shard::home_shard(client_id.as_bytes(), shards))
}

/// A fresh directory for one broker's persistent state.
pub fn scratch_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmq-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The socket backend of the brokers tests start: `RINGMQ_IO_BACKEND` (`epoll`, `io_uring`,
/// `auto`), as the binary reads it; unset is the broker's default (`epoll`). Binary brokers
/// inherit the variable itself.
pub fn io_backend() -> ringmq_shard::config::IoBackend {
    use ringmq_shard::config::IoBackend;
    match std::env::var("RINGMQ_IO_BACKEND").as_deref() {
        Ok("epoll") => IoBackend::Epoll,
        Ok("io_uring") => IoBackend::IoUring,
        Ok("auto") => IoBackend::Auto,
        Err(_) => ShardConfig::default().io_backend,
        Ok(other) => panic!("RINGMQ_IO_BACKEND={other}: not epoll, io_uring or auto"),
    }
}

/// An in-process broker on 127.0.0.1:0. Shut down (bounded) when dropped.
pub struct Broker {
    handle: Option<ServerHandle>,
    /// `RINGMQ_TEST_CLUSTER=N`: the nodes behind `addr` (a round-robin forwarder).
    nodes: Option<super::cluster::Nodes>,
    pub addr: SocketAddr,
    pub shards: usize,
    pub data_dir: std::path::PathBuf,
}

impl Broker {
    /// Starts a broker with `shards` shards and default limits.
    pub fn start(shards: usize) -> Broker {
        Broker::start_with(shards, |_| {})
    }

    /// Starts a broker after `tweak` adjusts the configuration (limits, intervals).
    pub fn start_with(shards: usize, tweak: impl FnOnce(&mut ShardConfig)) -> Broker {
        let mut cfg = ShardConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            cores: shards,
            data_dir: scratch_dir(),
            // These tests connect without user names: they need anonymous
            // clients, which a broker refuses by default.
            authn: ringmq_shard::access::authn::AuthnConfig {
                allow_anonymous: true,
                password_file: None,
            },
            ..ShardConfig::default()
        };
        if super::tls::enabled() {
            cfg.listen = vec![super::tls::listener()];
        }
        if super::ws::enabled() {
            cfg.listen = vec![super::ws::listener()];
        }
        cfg.io_backend = io_backend();
        tweak(&mut cfg);
        if let Some(n) = super::cluster::nodes() {
            let nodes = super::cluster::start(n, &cfg);
            return Broker {
                handle: None,
                addr: nodes.front.addr,
                shards,
                data_dir: nodes.nodes[0].data_dir.clone(),
                nodes: Some(nodes),
            };
        }
        let data_dir = cfg.data_dir.clone();
        let handle = server::start(cfg).expect("broker starts");
        let addr = *handle.local_addrs().first().expect("one listener");
        Broker {
            handle: Some(handle),
            nodes: None,
            addr,
            shards,
            data_dir,
        }
    }

    /// Every listener's bound address, in `listen` order (a cluster: the forwarder's).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        if self.nodes.is_some() {
            return vec![self.addr];
        }
        self.handle.as_ref().map_or(Vec::new(), |h| h.local_addrs())
    }

    /// The running core (reload, listeners); in a cluster, node 1's.
    pub fn handle(&self) -> &ServerHandle {
        match &self.nodes {
            Some(n) => &n.nodes[0].handle,
            None => self.handle.as_ref().expect("broker running"),
        }
    }

    /// Sum of one counter over all shards (`closes_for`, `drops_for`, ...), of every node
    /// in a cluster.
    pub fn stat(&self, f: impl Fn(&ringmq_shard::stats::ShardStats) -> u64) -> u64 {
        if let Some(n) = &self.nodes {
            return n
                .nodes
                .iter()
                .map(|n| n.handle.stats().iter().map(|s| f(s)).sum::<u64>())
                .sum();
        }
        self.handle
            .as_ref()
            .map_or(0, |h| h.stats().iter().map(|s| f(s)).sum())
    }

    /// Graceful shutdown, waited for at most `deadline`; returns whether it finished.
    pub fn shutdown(&mut self, deadline: Duration) -> bool {
        if let Some(n) = self.nodes.take() {
            return n.shutdown(deadline);
        }
        let Some(handle) = self.handle.take() else {
            return true;
        };
        handle.shutdown();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = handle.join();
            let _ = tx.send(());
        });
        let done = rx.recv_timeout(deadline).is_ok();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        done
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

/// `--listen` (and TLS files) of a binary broker on port 0: `mqtt://127.0.0.1:0`, or
/// `mqtts://127.0.0.1:0` with the test PKI when the harness runs over TLS.
pub fn listen_args() -> Vec<String> {
    // These tests connect without user names: a named listener refuses
    // anonymous clients unless told otherwise.
    let anonymous = ["--allow-anonymous".to_string(), "true".to_string()];
    if super::ws::enabled() {
        if !super::ws::secure() {
            let mut a = vec!["--listen".into(), "ws://127.0.0.1:0/mqtt".into()];
            a.extend(anonymous);
            return a;
        }
        let pki = super::tls::Pki::shared();
        let mut a: Vec<String> = vec![
            "--listen".into(),
            "wss://127.0.0.1:0/mqtt".into(),
            "--tls-cert".into(),
            pki.server.cert.display().to_string(),
            "--tls-key".into(),
            pki.server.key.display().to_string(),
        ];
        a.extend(anonymous);
        return a;
    }
    if !super::tls::enabled() {
        let mut a = vec!["--listen".into(), "mqtt://127.0.0.1:0".into()];
        a.extend(anonymous);
        return a;
    }
    let pki = super::tls::Pki::shared();
    vec![
        anonymous[0].clone(),
        anonymous[1].clone(),
        "--listen".into(),
        "mqtts://127.0.0.1:0".into(),
        "--tls-cert".into(),
        pki.server.cert.display().to_string(),
        "--tls-key".into(),
        pki.server.key.display().to_string(),
    ]
}

/// HOST:PORT of a `ringmq listening on mqtt://HOST:PORT` (or `mqtts://`) line.
pub fn listening_addr(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("ringmq listening on ")?;
    rest.strip_prefix("mqtt://")
        .or_else(|| rest.strip_prefix("mqtts://"))
        .or_else(|| {
            // ws://HOST:PORT/PATH: the address without the path.
            let r = rest
                .strip_prefix("ws://")
                .or_else(|| rest.strip_prefix("wss://"))?;
            r.split_once('/').map(|(a, _)| a)
        })
}

/// The `ringmq` binary started on port 0; killed (by its PID, through `Child`) when dropped.
pub struct BinBroker {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: std::path::PathBuf,
}

impl BinBroker {
    /// Runs `ringmq --listen mqtt://127.0.0.1:0 --allow-anonymous true --cores N`
    /// (a named listener refuses anonymous clients otherwise) and waits
    /// (bounded) for its `ringmq listening on mqtt://HOST:PORT` line.
    pub fn start(cores: usize) -> BinBroker {
        let cores = cores.to_string();
        let listen = listen_args();
        let mut args: Vec<&str> = listen.iter().map(String::as_str).collect();
        args.extend(["--cores", &cores]);
        BinBroker::start_args(&args)
    }

    /// Runs `ringmq` with `args`, its data directory and admin socket in a fresh scratch dir.
    pub fn start_args(args: &[&str]) -> BinBroker {
        let dir = scratch_dir();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--admin-socket")
            .arg(dir.join("ringmq.sock"))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringmq");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = listening_addr(&line) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => BinBroker {
                child,
                addr: addr.parse().expect("listening line has HOST:PORT"),
                dir,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringmq did not print `ringmq listening on mqtt://...` within 15 s");
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's PID; no memory is shared.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BinBroker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
