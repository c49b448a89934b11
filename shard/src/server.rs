//! Starting the broker core: listeners bound, one executor per shard, the
//! channel mesh joined; and the [`ServerHandle`] that controls them from
//! outside (main thread, admin socket, tests).

use crate::access::passwd::PasswordFile;
use crate::config::{available_cpus, Durability, IoBackend, ShardConfig};
use crate::control::{Control, Query, Reply};
use crate::listener::{self, ListenerRt};
use crate::mesh::ShardMsg;
use crate::stats::ShardStats;
use crate::store::{self, RecoveredSession, StoreHandle, StoreOptions};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

type ShardRecoveryParts = (StoreHandle, Vec<RecoveredSession>);

/// What one shard is given when it starts.
pub(crate) struct ShardInit {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<ShardConfig>,
    /// This shard's socket of each listener.
    pub listeners: Vec<(OwnedFd, Arc<ListenerRt>)>,
    /// Sender to each peer shard, by shard id (`None` at our own index).
    pub mesh_tx: Vec<Option<SharedSender<ShardMsg>>>,
    /// Receiver from each peer shard, by shard id (`None` at our own index).
    pub mesh_rx: Vec<Option<SharedReceiver<ShardMsg>>>,
    pub control: flume::Receiver<Control>,
    pub stats: Arc<ShardStats>,
    /// Every shard's counters (shard 0 sums them for `$SYS`).
    pub all_stats: Arc<Vec<Arc<ShardStats>>>,
    pub started: Instant,
    /// Told once the shard serves (mesh joined, listeners accepting).
    pub ready: flume::Sender<usize>,
    /// This shard's store and the sessions it recovered.
    pub store: crate::store::StoreHandle,
    pub recovered: Vec<crate::store::RecoveredSession>,
    /// Retained messages recovered (every shard keeps a replica).
    pub retained: Arc<Vec<crate::store::RetainedRecord>>,
    /// The password file read at start, if one is configured.
    pub passwords: Option<Arc<PasswordFile>>,
    /// Node-wide access state (ACL in force, bans, reloaders).
    pub access: Arc<crate::access::Shared>,
    /// The cluster's data plane (node links run on shard 0).
    pub cluster: Option<crate::cluster::Init>,
}

/// Settles `--io-backend`: `auto` takes io_uring when the kernel passes
/// the probe (`net::uring::probe`), else epoll, and says which and why.
fn resolve_io_backend(cfg: &ShardConfig) -> io::Result<IoBackend> {
    let check_ring = || -> io::Result<()> {
        if cfg.io_uring_buffers == 0
            || !cfg.io_uring_buffers.is_power_of_two()
            || cfg.io_uring_buffers > 32768
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring_buffers: {} is not a power of two from 1 to 32768",
                    cfg.io_uring_buffers
                ),
            ));
        }
        if cfg.io_uring_buffer_size < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring_buffer_size: {} is below 64",
                    cfg.io_uring_buffer_size
                ),
            ));
        }
        Ok(())
    };
    match cfg.io_backend {
        IoBackend::Epoll => {
            tracing::info!("socket I/O: epoll (--io-backend epoll)");
            Ok(IoBackend::Epoll)
        }
        IoBackend::IoUring => {
            check_ring()?;
            match crate::net::uring::probe() {
                Ok(k) => {
                    tracing::info!("socket I/O: io_uring (--io-backend io_uring, kernel {k})");
                    Ok(IoBackend::IoUring)
                }
                Err(why) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_backend: io_uring unavailable: {why}"),
                )),
            }
        }
        IoBackend::Auto => {
            check_ring()?;
            match crate::net::uring::probe() {
                Ok(k) => {
                    tracing::info!(
                        "socket I/O: io_uring (kernel {k} has multishot receive and buffer rings)"
                    );
                    Ok(IoBackend::IoUring)
                }
                Err(why) => {
                    tracing::warn!("socket I/O: epoll, io_uring unavailable: {why}");
                    Ok(IoBackend::Epoll)
                }
            }
        }
    }
}

/// A running broker core.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    controls: Vec<flume::Sender<Control>>,
    stats: Vec<Arc<ShardStats>>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    started: Instant,
    /// `--password-file`, re-read by [`ServerHandle::reload_passwords`].
    password_file: Option<std::path::PathBuf>,
    access: Arc<crate::access::Shared>,
    listeners: Vec<Arc<ListenerRt>>,
    cluster: Option<Arc<crate::cluster::ClusterStats>>,
}

/// Checks the placement asked for against the CPUs present.
fn placements(cfg: &ShardConfig) -> io::Result<Vec<Placement>> {
    let cpus = available_cpus();
    let online = online_cpus();
    let shards = cfg.shard_count();
    if shards == 0 {
        return Err(invalid("--cores: must be at least 1".into()));
    }
    if cfg.cpu_list.is_none() && shards > cpus {
        return Err(invalid(format!(
            "--cores {shards}: only {cpus} CPUs available"
        )));
    }
    if !cfg.pin {
        return Ok(vec![Placement::Unbound; shards]);
    }
    let list: Vec<usize> = match &cfg.cpu_list {
        Some(l) => l.clone(),
        None => (0..shards).collect(),
    };
    if list.len() < shards {
        return Err(invalid(format!(
            "--cpu-list: {} CPUs listed for {shards} shards",
            list.len()
        )));
    }
    if let Some(bad) = list.iter().find(|&&c| c >= online) {
        return Err(invalid(format!(
            "--cpu-list: CPU {bad} does not exist (CPUs 0-{} present)",
            online - 1
        )));
    }
    Ok(list[..shards]
        .iter()
        .map(|&c| Placement::Fixed(c))
        .collect())
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        available_cpus()
    } else {
        n as usize
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Starts the broker core: binds every listener, starts one executor per
/// shard and returns once the listeners are bound.
pub fn start(mut cfg: ShardConfig) -> io::Result<ServerHandle> {
    cfg.io_backend = resolve_io_backend(&cfg)?;
    let placements = placements(&cfg)?;
    let shards = placements.len();
    // Bans persist beside the store (not with memory-only durability).
    let bans_dir = (cfg.durability != Durability::None).then(|| cfg.data_dir.clone());
    let access = crate::access::Shared::new(&cfg.access, bans_dir)
        .map_err(|e| invalid(format!("--acl-file: {e}")))?;
    let access = Arc::new(access);
    if cfg.listen.is_empty() {
        return Err(invalid("--listen: no listener configured".into()));
    }
    // The password-check threads, started here so they float over the
    // process's CPUs rather than inherit a pinned shard's one.
    crate::access::pool::start();
    // The password file before anything binds: a file that does not parse stops the start.
    let passwords = match &cfg.authn.password_file {
        Some(path) => Some(Arc::new(
            PasswordFile::load(path).map_err(|e| invalid(e.to_string()))?,
        )),
        None => None,
    };
    // Every listener's TLS files are read before anything is bound.
    let listeners = cfg
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| ListenerRt::new(i, l, cfg.max_packet_size).map(Arc::new))
        .collect::<io::Result<Vec<_>>>()?;
    // The node-link listener, bound before anything starts (a busy port stops the start).
    let mut link_listener = match &cfg.cluster {
        Some(c) => Some(crate::cluster::bind(c)?),
        None => None,
    };
    let cluster_stats = cfg.cluster.as_ref().map(|c| {
        let peers: Vec<u64> = c.peers.iter().map(|p| p.id).collect();
        Arc::new(crate::cluster::ClusterStats::new(&peers))
    });
    let mut addrs = Vec::new();
    let mut per_shard: Vec<Vec<(OwnedFd, Arc<ListenerRt>)>> =
        (0..shards).map(|_| Vec::new()).collect();
    for rt in &listeners {
        let bound = listener::bind(rt.cfg.addr, shards, cfg.backlog)?;
        addrs.push(bound.addr);
        for (i, fd) in bound.sockets.into_iter().enumerate() {
            per_shard[i].push((fd, rt.clone()));
        }
    }
    // Persistence: open (lock, check, load, purge) before any shard starts.
    let (mut stores, retained): (Vec<ShardRecoveryParts>, _) = match cfg.durability {
        Durability::None => (
            (0..shards)
                .map(|_| (StoreHandle::memory(), Vec::new()))
                .collect(),
            Arc::new(Vec::new()),
        ),
        d => {
            let opts = StoreOptions::with_quota(d, cfg.store_max_bytes);
            let rec = store::open(&cfg.data_dir, shards as u16, &opts)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let st = &rec.stats;
            tracing::info!(
                elapsed_ms = st.elapsed.as_millis() as u64,
                sessions = st.sessions,
                purged = st.purged_sessions,
                subscriptions = st.subscriptions,
                outbound = st.outbound,
                inbound_qos2 = st.inbound_qos2,
                retained = st.retained,
                orphans = st.orphans,
                prepared_qos2 = st.prepared_qos2,
                orphan_origins = st.orphan_origins,
                "recovered {} in {:?}",
                cfg.data_dir.display(),
                st.elapsed
            );
            let retained = Arc::new(rec.retained);
            (
                rec.shards
                    .into_iter()
                    .map(|s| (s.handle, s.sessions))
                    .collect(),
                retained,
            )
        }
    };
    // Other nodes may forget this node's origin keys below these (`cluster/origin.rs`).
    let floors: Vec<(u16, u64)> = stores
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (i as u16, h.origin_floor()))
        .collect();
    stores.reverse();
    let cfg = Arc::new(cfg);
    // The channel mesh: one SPSC channel per ordered pair of shards.
    let mut mesh_tx: Vec<Vec<Option<SharedSender<ShardMsg>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut mesh_rx: Vec<Vec<Option<SharedReceiver<ShardMsg>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    for from in 0..shards {
        for to in (0..shards).filter(|&to| to != from) {
            let (tx, rx) = shared_channel::new_bounded(cfg.mesh_capacity);
            mesh_tx[from][to] = Some(tx);
            mesh_rx[to][from] = Some(rx);
        }
    }
    let mut mesh_tx = mesh_tx.into_iter();
    let mut mesh_rx = mesh_rx.into_iter();
    let started = Instant::now();
    // Every control channel first: a cluster's shard 0 holds them all (a peer's
    // `ctl clients` question is gathered from every shard).
    let (controls, mut control_rx): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| flume::unbounded()).unzip();
    control_rx.reverse();
    let stats: Vec<Arc<ShardStats>> = (0..shards)
        .map(|_| Arc::new(ShardStats::with_listeners(listeners.len())))
        .collect();
    let all_stats = Arc::new(stats.clone());
    let mut threads = Vec::new();
    let pending = std::sync::Arc::new(crate::cluster::moving::Pending::default());
    let (ready_tx, ready_rx) = flume::unbounded();
    for (id, (placement, listeners)) in placements.into_iter().zip(per_shard).enumerate() {
        let rx = control_rx.pop().expect("one control channel per shard");
        let st = stats[id].clone();
        let (store_handle, recovered) = stores.pop().expect("one store per shard");
        let init = ShardInit {
            id,
            shards,
            cfg: cfg.clone(),
            listeners,
            mesh_tx: mesh_tx.next().unwrap_or_default(),
            mesh_rx: mesh_rx.next().unwrap_or_default(),
            control: rx,
            stats: st,
            all_stats: all_stats.clone(),
            started,
            ready: ready_tx.clone(),
            store: store_handle,
            recovered,
            retained: retained.clone(),
            passwords: passwords.clone(),
            access: access.clone(),
            cluster: cfg.cluster.as_ref().map(|c| crate::cluster::Init {
                cfg: Arc::new(c.clone()),
                stats: cluster_stats.clone().expect("stats with the config"),
                listener: if id == 0 { link_listener.take() } else { None },
                controls: if id == 0 {
                    controls.clone()
                } else {
                    Vec::new()
                },
                floors: if id == 0 { floors.clone() } else { Vec::new() },
                pending: pending.clone(),
            }),
        };
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("ringmq-shard-{id}"))
            .io_memory(cfg.io_memory)
            .preempt_timer(Duration::from_millis(10));
        if !cfg.idle_spin.is_zero() && !cfg.pin && id == 0 {
            tracing::warn!("idle_spin_us is ignored: shards are not pinned (pin = false)");
        }
        if !cfg.idle_spin.is_zero() {
            // glommio spins only on a pinned executor; on io_uring the
            // spin submits the tick's sends first (vendor/README.md).
            builder = builder.spin_before_park(cfg.idle_spin);
        }
        let handle = builder
            .spawn(move || crate::shard::run(init))
            .map_err(|e| io::Error::other(format!("cannot start shard {id}: {e}")))?;
        threads.push(handle);
    }
    drop(ready_tx);
    // Wait until every shard serves, so a shard that cannot start (memlock,
    // CPU) is an error of `start`, not a silent half-broker.
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..threads.len() {
        if ready_rx.recv_deadline(deadline).is_err() {
            for c in &controls {
                let _ = c.send(Control::Shutdown);
            }
            let mut why = String::from("a shard did not start");
            for t in threads {
                if let Err(e) = t.join() {
                    why = format!("shard failed to start: {e}");
                }
            }
            return Err(io::Error::other(why));
        }
    }
    register_acl_reload(&access, &controls);
    register_password_reload(&access, &controls, cfg.authn.password_file.clone());
    if listeners.iter().any(|l| {
        matches!(
            l.cfg.transport,
            crate::config::Transport::Mqtts | crate::config::Transport::Wss { .. }
        )
    }) {
        let ls = listeners.clone();
        access
            .reloaders
            .register("certificates", Box::new(move || reload_listeners_tls(&ls)));
    }
    Ok(ServerHandle {
        password_file: cfg.authn.password_file.clone(),
        addrs,
        controls,
        stats,
        threads,
        started,
        access,
        listeners,
        cluster: cluster_stats,
    })
}

/// Re-reads `path` and hands the new file to every shard, waiting (5 s at
/// most) until each has it in force.
fn reload_passwords(
    path: Option<&std::path::Path>,
    controls: &[flume::Sender<Control>],
) -> Result<Option<usize>, crate::access::passwd::PasswdError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = Arc::new(PasswordFile::load(path)?);
    let (tx, rx) = flume::unbounded();
    let asked = controls
        .iter()
        .filter(|c| {
            c.send(Control::SetPasswords(Some(file.clone()), tx.clone()))
                .is_ok()
        })
        .count();
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..asked {
        let _ = rx.recv_deadline(deadline);
    }
    Ok(Some(file.len()))
}

/// The password part of a reload (SIGHUP, `ringmq ctl reload`): a file that
/// fails to parse keeps the previous one in force everywhere.
fn register_password_reload(
    access: &Arc<crate::access::Shared>,
    controls: &[flume::Sender<Control>],
    path: Option<std::path::PathBuf>,
) {
    if path.is_none() {
        return;
    }
    let controls = controls.to_vec();
    access.reloaders.register(
        "passwords",
        Box::new(move || match reload_passwords(path.as_deref(), &controls) {
            Ok(Some(n)) => Ok(format!(
                "{}: {n} users",
                path.as_deref()
                    .map_or(String::new(), |p| p.display().to_string())
            )),
            Ok(None) => Ok("no password file configured".into()),
            Err(e) => Err(e.to_string()),
        }),
    );
}

/// Re-reads every TLS listener's files (see [`ServerHandle::reload_tls`]).
fn reload_listeners_tls(listeners: &[Arc<ListenerRt>]) -> Result<String, String> {
    let mut reloaded = 0;
    let mut errors = Vec::new();
    for l in listeners {
        match l.reload_tls() {
            Ok(true) => reloaded += 1,
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(format!("{reloaded} TLS listener(s) reloaded"))
    } else {
        Err(format!(
            "{}; previous certificates kept for {} listener(s)",
            errors.join("; "),
            errors.len()
        ))
    }
}

/// The ACL part of a reload: parse, then hand the new rules to every shard
/// (each swaps its `Arc`); a parse error keeps the old rules everywhere.
fn register_acl_reload(access: &Arc<crate::access::Shared>, controls: &[flume::Sender<Control>]) {
    if access.acl_file.is_none() {
        return;
    }
    let weak = Arc::downgrade(access);
    let controls = controls.to_vec();
    access.reloaders.register(
        "acl",
        Box::new(move || {
            let a = weak.upgrade().ok_or("broker stopped")?;
            match a.reload_acl() {
                Ok(Some(acl)) => {
                    // Reply once every shard applies them: after the reload
                    // answer, every check uses the new rules.
                    let (tx, rx) = flume::unbounded();
                    let asked = controls
                        .iter()
                        .filter(|c| c.send(Control::SetAcl(acl.clone(), tx.clone())).is_ok())
                        .count();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    for _ in 0..asked {
                        if rx.recv_deadline(deadline).is_err() {
                            return Err(
                                "the new rules are parsed but a shard did not confirm them in 5 s"
                                    .into(),
                            );
                        }
                    }
                    Ok(format!(
                        "{}: {} rules, {} users",
                        acl.file,
                        acl.rule_count(),
                        acl.user_count()
                    ))
                }
                Ok(None) => Ok("no ACL file configured".into()),
                Err(e) => Err(e.to_string()),
            }
        }),
    );
}

impl ServerHandle {
    /// The way to fence sessions whose ownership moved to another node.
    pub fn fencer(&self) -> crate::ownership::Fencer {
        crate::ownership::Fencer::new(self.controls.clone())
    }

    /// Publishes wills taken for a dead node's clients (`crate::wills`).
    pub fn will_publisher(&self) -> crate::wills::WillPublisher {
        crate::wills::WillPublisher::new(self.controls.clone())
    }

    /// The way to tell the node links who the cluster's other nodes are now.
    pub fn link_peers(&self) -> crate::cluster::PeerSetter {
        crate::cluster::PeerSetter::new(self.controls[0].clone())
    }
    /// Node-wide access state: bans, the ACL in force, the reload registry.
    pub fn access(&self) -> &Arc<crate::access::Shared> {
        &self.access
    }
    /// Re-reads what the reload registry holds (ACL file, and what other
    /// parts registered); one outcome per part.
    pub fn reload(&self) -> Vec<crate::access::reload::Outcome> {
        self.access.reloaders.reload_all()
    }
    /// The bound listener addresses, in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }
    /// The listeners, in `listen` order (URL, TLS state).
    pub fn listeners(&self) -> &[Arc<ListenerRt>] {
        &self.listeners
    }
    /// Re-reads every TLS listener's certificate, key and client CA (SIGHUP,
    /// `ringmq ctl reload`). New connections use the new material,
    /// established ones keep theirs. A listener whose files cannot be used
    /// keeps its old ones; the error names each such listener and file.
    /// `Ok` says what is in force now (the shape of a reload registry entry).
    pub fn reload_tls(&self) -> Result<String, String> {
        reload_listeners_tls(&self.listeners)
    }
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.controls.len()
    }
    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
    /// Per-shard counters, readable from any thread without stopping a shard.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }
    /// Asks other cluster nodes for their connected clients (through shard 0's
    /// node links); answers arrive on the ask's channel. False: no shard 0.
    pub fn ask_peers(&self, ask: crate::cluster::ops::AskClients) -> bool {
        self.controls
            .first()
            .is_some_and(|c| c.send(Control::AskPeers(ask)).is_ok())
    }

    /// Node-link counters (`None`: not a cluster node).
    pub fn cluster_stats(&self) -> Option<Arc<crate::cluster::ClusterStats>> {
        self.cluster.clone()
    }
    /// Graceful shutdown: stop accepting, tell v5 clients 0x8B, close, stop.
    /// Returns at once; `join` waits for the shards.
    pub fn shutdown(&self) {
        for c in &self.controls {
            let _ = c.send(Control::Shutdown);
        }
    }
    /// Re-reads the password file and hands it to every shard (each swaps
    /// its `Arc`; connections already accepted stay). A file that does not
    /// parse changes nothing: the error names the file and line. Returns
    /// the number of users, `Ok(None)` when no password file is configured.
    pub fn reload_passwords(&self) -> Result<Option<usize>, crate::access::passwd::PasswdError> {
        reload_passwords(self.password_file.as_deref(), &self.controls)
    }
    /// Stop accepting new connections on every shard (connections stay).
    pub fn drain(&self) {
        for c in &self.controls {
            let _ = c.send(Control::Drain);
        }
    }
    /// Asks every shard (or one) and collects the replies, waiting at most `timeout`.
    pub fn query(&self, q: Query, shard: Option<usize>, timeout: Duration) -> Vec<Reply> {
        let (tx, rx) = flume::unbounded();
        let mut asked = 0;
        for (i, c) in self.controls.iter().enumerate() {
            if shard.is_none_or(|s| s == i) && c.send(Control::Query(q.clone(), tx.clone())).is_ok()
            {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(asked);
        while out.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        out
    }
    /// Waits for every shard to stop.
    pub fn join(self) -> io::Result<()> {
        for t in self.threads {
            t.join()
                .map_err(|e| io::Error::other(format!("shard failed: {e}")))?;
        }
        Ok(())
    }
}
