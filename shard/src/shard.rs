//! One shard: its state and its life.
//!
//! [`run`] is the body of a shard's executor: it connects the mesh, starts
//! the acceptors, the mesh receivers, the control task and the timers, and
//! returns after a shutdown has closed every connection.

use crate::config::ShardConfig;
use crate::control::Control;
use crate::mesh::{Mesh, MeshItem, ShardMsg};
use crate::notify::Notify;
use crate::poller::{Io, Poller, READABLE};
use crate::retained::RetainedStore;
use crate::router::{MatchScratch, Router};
use crate::server::ShardInit;
use crate::session::Session;
use crate::stats::{CloseReason, ShardStats};
use crate::store::Store;
use glommio::{spawn_local, Task};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The state of one shard. `!Send`: it never leaves its executor.
pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<ShardConfig>,
    pub stats: Arc<ShardStats>,
    pub started: Instant,
    /// The time for per-message paths, read once per kernel tick (`clock.rs`).
    pub clock: crate::clock::Clock,
    pub router: RefCell<Router>,
    pub retained: RefCell<RetainedStore>,
    pub sessions: RefCell<Slab<Session>>,
    pub by_client: RefCell<crate::session::ClientIndex>,
    pub mesh: Rc<Mesh>,
    pub scratch: RefCell<MatchScratch>,
    /// New connections are accepted.
    pub accepting: Cell<bool>,
    /// Shutdown under way.
    pub stopping: Cell<bool>,
    /// Live connections on this shard.
    pub conns: Cell<usize>,
    /// Notified when `conns` drops to zero while stopping.
    pub idle: Notify,
    acceptors: RefCell<Vec<Task<()>>>,
    /// Counter for assigned client identifiers.
    pub next_assigned: Cell<u64>,
    /// Readiness and deadlines of every socket of this shard.
    pub poller: Rc<Poller>,
    /// Where every connection of this shard reads (see `connection::recv_into`).
    pub read_scratch: RefCell<Vec<u8>>,
    /// Bytes of packets still being received, against `--partial-packet-budget`.
    pub read_budget: crate::net::read_budget::ReadBudget,
    /// Tokens of mesh barriers.
    pub next_token: Cell<u64>,
    /// SUBACKs waiting for every shard to apply a subscription: token -> (replies left, what to send).
    pub pending_subacks: RefCell<HashMap<u64, (usize, crate::subscribe::SubDone)>>,
    /// Durable state of this shard's sessions and retained messages.
    pub store: Store,
    /// Acknowledgements waiting for other shards' commits (durability sync).
    pub confirms: RefCell<crate::persist::Confirms>,
    /// QoS 1 copies not yet stored, waiting for their subscriber's PUBACK.
    pub defer: crate::defer::Defer,
    /// Who may connect (policy and this shard's copy of the password file).
    pub authn: crate::access::authn::Authn,
    /// Node-wide access state: bans, reloaders (the ACL below is this shard's copy).
    pub access: Arc<crate::access::Shared>,
    /// The ACL rules in force on this shard (`None`: no ACL file), swapped
    /// by `Control::SetAcl`; `acl_gen` counts the swaps.
    pub acl: RefCell<Option<Arc<crate::access::acl::Acl>>>,
    pub acl_gen: Cell<u32>,
    /// Set from a reload until every subscription is classified again:
    /// meanwhile every delivery asks the rules (no stale *full* class).
    pub acl_recheck: Cell<bool>,
    /// QoS 1/2 copies of the publish being routed that sessions took or dropped.
    pub tally: crate::session::Tally,
    /// Large SUBSCRIBE/UNSUBSCRIBE and removed sessions' subscriptions, in steps.
    pub bulk: crate::bulk::Bulk,
    /// This shard's part of the cluster (`None`: a node alone).
    pub cluster: Option<crate::cluster::Node>,
}

impl Shard {
    /// Connections this shard may hold.
    pub fn conn_limit(&self) -> usize {
        self.cfg.max_connections.div_ceil(self.shards)
    }

    /// Stops accepting: the acceptor tasks and their sockets are dropped.
    pub fn stop_accepting(&self) {
        self.accepting.set(false);
        self.acceptors.borrow_mut().clear();
    }

    /// Closes every connection with `reason` (v5 clients get DISCONNECT first).
    pub fn close_all(&self, reason: CloseReason) {
        let sessions = self.sessions.borrow();
        for (_, s) in sessions.iter() {
            if let Some(c) = &s.conn {
                crate::connection::disconnect_client(c, reason);
            }
        }
    }
}

/// The body of a shard's executor.
pub(crate) async fn run(init: ShardInit) {
    // Connect both halves of every channel concurrently: a sender's connect
    // completes only once its peer's receiver has connected.
    let rx_tasks: Vec<_> = init
        .mesh_rx
        .into_iter()
        .enumerate()
        .filter_map(|(from, rx)| rx.map(|rx| (from, spawn_local(rx.connect()))))
        .collect();
    let tx_tasks: Vec<_> = init
        .mesh_tx
        .into_iter()
        .map(|tx| tx.map(|tx| spawn_local(tx.connect())))
        .collect();
    // A peer's connect never wakes this executor: glommio re-polls pending
    // connects only when its reactor turns. So a ticker turns it while
    // connecting, and each shard, once connected, sends every peer an empty
    // batch whose notification (the peer's eventfd) wakes a sleeping peer at
    // once. (The 10 s startup stalls once blamed on this were a glommio bug,
    // fixed in vendor/glommio: see vendor/README.md.)
    let connecting = Rc::new(Cell::new(true));
    let ticking = connecting.clone();
    let ticker = spawn_local(async move {
        while ticking.get() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut senders = Vec::with_capacity(init.shards);
    for t in tx_tasks {
        senders.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let mut receivers = Vec::new();
    for (from, t) in rx_tasks {
        receivers.push((from, t.await));
    }
    connecting.set(false);
    ticker.await;
    for tx in senders.iter().flatten() {
        let _ = tx.try_send(ShardMsg::Batch(Vec::new()));
    }
    let mesh = Rc::new(Mesh::new(init.id, senders));
    let poller = Rc::new(
        Poller::new(init.cfg.uring(), init.stats.clone())
            .expect("cannot create the shard's poller (epoll set or io_uring)"),
    );
    spawn_local(poller.clone().run()).detach();
    let shard = Rc::new(Shard {
        id: init.id,
        shards: init.shards,
        router: RefCell::new(Router::new(init.id as u16, init.shards as u16)),
        retained: RefCell::new(RetainedStore::new()),
        sessions: RefCell::new(Slab::new()),
        by_client: RefCell::default(),
        mesh: mesh.clone(),
        scratch: RefCell::new(MatchScratch::default()),
        accepting: Cell::new(true),
        stopping: Cell::new(false),
        conns: Cell::new(0),
        idle: Notify::default(),
        acceptors: RefCell::new(Vec::new()),
        next_assigned: Cell::new(0),
        next_token: Cell::new(0),
        poller,
        read_scratch: RefCell::new(vec![0; crate::connection::READ_CHUNK]),
        read_budget: crate::net::read_budget::ReadBudget::new(init.cfg.partial_packet_budget),
        pending_subacks: RefCell::new(HashMap::new()),
        store: init.store.start(),
        confirms: RefCell::new(crate::persist::Confirms::default()),
        defer: crate::defer::Defer::default(),
        authn: crate::access::authn::Authn::new(init.cfg.authn.clone(), init.passwords),
        acl: RefCell::new(init.access.acl()),
        acl_gen: Cell::new(0),
        acl_recheck: Cell::new(false),
        access: init.access,
        tally: crate::session::Tally::default(),
        bulk: crate::bulk::Bulk::default(),
        cluster: init
            .cluster
            .as_ref()
            .map(|c| crate::cluster::Node::new(init.id, c)),
        cfg: init.cfg,
        stats: init.stats,
        started: init.started,
        clock: crate::clock::Clock::default(),
    });

    let st = shard.stats.clone();
    spawn_local(mesh.clone().run_flusher(move |n| {
        st.mesh_msgs_out.add(n as u64);
        st.mesh_batches_out.inc();
    }))
    .detach();
    // Restore before any task that takes input is spawned: glommio polls a
    // spawned task at once, so a receiver (or acceptor) spawned first could
    // apply a peer's message (or serve a client) before the sessions exist.
    crate::persist::restore(&shard, init.recovered, &init.retained);
    crate::cluster::seed(&shard);
    crate::cluster::merge::recover(&shard);
    crate::cluster::stub::recover(&shard);
    crate::cluster::moving::recover(&shard);
    for (from, rx) in receivers {
        let shard = shard.clone();
        spawn_local(async move {
            while let Some(ShardMsg::Batch(items)) = rx.recv().await {
                for item in items {
                    on_mesh_item(&shard, from, item);
                }
            }
        })
        .detach();
    }
    for (fd, rt) in init.listeners {
        let task = spawn_local(accept_loop(shard.clone(), fd, rt));
        shard.acceptors.borrow_mut().push(task);
    }
    spawn_local(crate::timers::expiry_sweep(shard.clone())).detach();
    if let Some(c) = init.cluster {
        crate::cluster::start(&shard, c.listener);
    }
    if shard.id == 0 && !shard.cfg.sys_interval.is_zero() {
        spawn_local(crate::sys::publish_loop(shard.clone(), init.all_stats)).detach();
    }

    spawn_local(busy_meter(shard.clone())).detach();
    let _ = init.ready.send(shard.id);
    // The control task runs in this future: the shard lives until shutdown.
    while let Ok(msg) = init.control.recv_async().await {
        match msg {
            Control::Shutdown => break,
            Control::Drain => {
                shard.stop_accepting();
                spawn_local(crate::connection::drain(shard.clone())).detach();
            }
            Control::SetPasswords(p, done) => {
                shard.authn.set_passwords(p);
                let _ = done.send(shard.id);
            }
            Control::SetAcl(acl, done) => {
                crate::authz::set_acl(&shard, acl);
                let _ = done.send(shard.id);
            }
            Control::Fence { client_id, epoch } => {
                crate::ownership::fence(&shard, &client_id, epoch);
            }
            Control::PublishWill(w) => crate::route::publish_will(&shard, *w),
            Control::ClusterPeers(peers) => crate::cluster::set_peers(&shard, peers),
            Control::Query(q, reply) => {
                let _ = reply.send(crate::admin::answer(&shard, q));
            }
            Control::AskPeers(ask) => crate::cluster::ask_clients(&shard, ask),
        }
    }
    shard.stopping.set(true);
    crate::cluster::stop(&shard).await;
    shard.stop_accepting();
    shard.close_all(CloseReason::ServerShuttingDown);
    let deadline = glommio::timer::sleep(Duration::from_secs(5));
    let wait_idle = async {
        while shard.conns.get() > 0 {
            shard.idle.wait().await;
        }
    };
    futures_lite::future::or(wait_idle, deadline).await;
    crate::persist::close(&shard).await;
    mesh.close();
}

/// Adds the executor's busy time to the shard's counter every 100 ms.
async fn busy_meter(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let busy = glommio::executor().executor_stats().total_runtime();
        shard.stats.busy_ns.add(busy.as_nanos() as u64);
        let st = shard.store.stats();
        shard.stats.store_commits.set(st.commits);
        shard.stats.store_ops.set(st.ops);
        shard.stats.store_ops_cancelled.set(st.cancelled);
        shard
            .stats
            .store_commit_ns
            .set(st.commit_time.as_nanos() as u64);
        for (c, &n) in shard
            .stats
            .store_commit_buckets
            .iter()
            .zip(&st.commit_buckets)
        {
            c.set(n);
        }
        if shard.stopping.get() {
            return;
        }
    }
}

/// The listener of an accept loop; closed when the loop is dropped.
struct Listening<'a> {
    shard: &'a Shard,
    io: Option<Io>,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            self.shard.poller.close(io);
        }
    }
}

async fn accept_loop(shard: Rc<Shard>, fd: OwnedFd, rt: Arc<crate::listener::ListenerRt>) {
    // SAFETY: plain syscall on a listening socket we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let io = match shard.poller.register_listener(fd) {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(shard = shard.id, "cannot poll the listener: {e}");
            return;
        }
    };
    let listening = Listening {
        shard: &shard,
        io: Some(io),
    };
    let Some(listener) = listening.io.as_ref() else {
        return;
    };
    let mut burst = 0u32;
    let mut backoff = crate::net::accept_backoff::Backoff::default();
    loop {
        match shard.poller.accept(listener) {
            Ok(fd) => {
                backoff.recovered(shard.id);
                shard.stats.connections_total.inc();
                if let Some(l) = shard.stats.listener(rt.index) {
                    l.accepted.inc();
                }
                spawn_local(crate::connection::handshake(shard.clone(), fd, rt.clone())).detach();
                burst += 1;
                if burst.is_multiple_of(64) {
                    futures_lite::future::yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // accept(2) takes a descriptor before it looks at the backlog, so
                // an episode can fail on an empty backlog: a descriptor free again
                // with nothing queued ends it too, or it would stay open (and
                // unlogged) until the next client came.
                backoff.recovered(shard.id);
                shard.poller.clear(listener.key, READABLE);
                shard.poller.wait(listener.key, READABLE).await;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors (or kernel memory): the pending
                // connection stays in the backlog and the listener stays
                // readable, so retrying at once would spin. Wait, doubling.
                shard.stats.accept_errors.inc();
                let wait = backoff.failed(shard.id, &e);
                glommio::timer::sleep(wait).await;
            }
        }
    }
}

fn on_mesh_item(shard: &Rc<Shard>, from: usize, item: MeshItem) {
    match item {
        MeshItem::Publish(r) => {
            shard.tally.reset();
            // A stub here forwards acked copies: the answer waits for them too.
            let relay = r
                .confirm
                .and_then(|_| crate::cluster::copy_acks::relay_begin(shard));
            crate::cluster::deliver_once(shard, r.peer, || {
                crate::route::deliver_local(shard, &r.publish, None, r.source);
            });
            if let Some(t) = r.confirm {
                let fate = shard.tally.fate();
                let relayed = relay
                    .is_some_and(|l| crate::cluster::copy_acks::relay_end(shard, l, from, t, fate));
                if !relayed {
                    crate::persist::owe(shard, from, t, fate);
                }
            }
        }
        MeshItem::SharedPublish(r, group) => {
            shard.tally.reset();
            crate::cluster::deliver_once(shard, r.peer, || {
                crate::route::deliver_shared_local(shard, &group, &r.publish)
            });
            if let Some(t) = r.confirm {
                crate::persist::owe(shard, from, t, shard.tally.fate());
            }
        }
        MeshItem::Confirm(t, fate) => crate::confirm::confirmed_with(shard, t, fate),
        MeshItem::Refused(t, code) => crate::confirm::refused(shard, t, code),
        MeshItem::Forget(nonce) => crate::confirm::forget(shard, from, nonce),
        MeshItem::SubAdd(f) => {
            shard.router.borrow_mut().add_remote(&f, from as u16);
            crate::cluster::filter_changed(shard, &f, true);
        }
        MeshItem::SubRemove(f) => {
            shard.router.borrow_mut().remove_remote(&f, from as u16);
            crate::cluster::filter_changed(shard, &f, false);
        }
        MeshItem::Retain(p) => crate::route::store_retained(shard, *p),
        MeshItem::Barrier(t) => {
            // Shard 0 answers once the peers also acknowledged the routes before it.
            let mesh = shard.mesh.clone();
            let ack = move || mesh.push(from, MeshItem::BarrierAck(t));
            crate::cluster::after_routes(shard, Box::new(ack));
        }
        MeshItem::BarrierAck(t) => crate::subscribe::barrier_passed(shard, t),
        MeshItem::Handoff(h) => crate::connection::adopt(shard.clone(), *h),
        MeshItem::Cluster(c) => crate::cluster::on_item(shard, from, *c),
    }
}
