//! Shard 0's side of the cluster: the links, the route book, SUBACKs waiting
//! for peers to acknowledge a route, and route acknowledgements waiting for
//! every local shard to apply a peer's change.

use super::config::ClusterConfig;
use super::frame::{encode_publish, encode_publish_from, publish_header, Frame, Hello, Origin};
use super::link::{self, Link};
use super::routes::{Change, RouteBook, Slot};
use super::stats::ClusterStats;
use super::Item;
use crate::mesh::MeshItem;
use crate::router::ShardSet;
use crate::shard::Shard;
use bytes::BytesMut;
use ringmq_codec::{Publish, TopicFilter};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Something to do once every up peer acknowledged route changes up to `seq`.
struct Waiter {
    seq: u64,
    deadline: Instant,
    then: Box<dyn FnOnce()>,
}

/// A local barrier: replies still due, and what runs after the last.
type LocalBarrier = (usize, Box<dyn FnOnce()>);

pub(crate) struct Hub {
    pub(super) cfg: Arc<ClusterConfig>,
    /// Acked copies (durability `sync`) both ways.
    pub(super) durable: super::acks::Acks,
    /// Acked copies stored for nodes that cannot answer (`outbox.rs`).
    pub(super) outbox: super::outbox::Outbox,
    /// Recent retained deletions, sent to a node that comes back (`retained.rs`).
    pub(super) tombstones: RefCell<super::retained::Tombstones>,
    pub stats: Arc<ClusterStats>,
    /// By slot - 1; a link to a node that left stays, retired (slots are never reused).
    pub(super) links: RefCell<Vec<Rc<Link>>>,
    /// Every shard's control channel (`ops.rs` gathers client lists through them).
    pub(super) controls: Vec<flume::Sender<crate::control::Control>>,
    /// Questions asked of peers and not answered yet (`ops.rs`).
    pub(super) asks: RefCell<HashMap<u64, super::ops::Pending>>,
    pub(super) next_ask: Cell<u64>,
    pub(super) book: RefCell<RouteBook>,
    waiters: RefCell<Vec<Waiter>>,
    /// Route acks owed to a peer once every local shard applied its change: token -> (replies left, slot, seq).
    acks: RefCell<HashMap<u64, (usize, Slot, u64)>>,
    /// Local barriers with something to run once every shard answered: token -> (replies left, then).
    barriers: RefCell<HashMap<u64, LocalBarrier>>,
    next_token: Cell<u64>,
    epoch: Instant,
    /// Dialers, tickers, the acceptor, the sweep: cancelled (and their sockets closed) at stop.
    tasks: RefCell<Vec<glommio::Task<()>>>,
    /// The link port's accept loop and socket, ended and closed at stop (awaited:
    /// a cancelled task is only dropped when the executor runs it again).
    acceptor: RefCell<Option<glommio::Task<()>>>,
    listen_fd: Cell<i32>,
    /// Per shard of this node: no origin key below this nonce is needed (`origin.rs`).
    pub(super) floors: Vec<(u16, u64)>,
    /// Recovery's origin copies for nodes not linked yet (`origin.rs`).
    pub(super) unlinked: super::origin::Unlinked,
}

impl Hub {
    pub fn new(
        cfg: Arc<ClusterConfig>,
        stats: Arc<ClusterStats>,
        controls: Vec<flume::Sender<crate::control::Control>>,
        floors: Vec<(u16, u64)>,
    ) -> Self {
        let links = cfg
            .peers
            .iter()
            .zip(stats.links())
            .enumerate()
            .map(|(i, (p, st))| {
                Rc::new(Link::new(
                    i as Slot + 1,
                    p.clone(),
                    cfg.node_id,
                    cfg.link_queue_bytes,
                    st,
                ))
            })
            .collect();
        Hub {
            outbox: super::outbox::Outbox::new(cfg.outbox_max_bytes),
            tombstones: RefCell::default(),
            cfg,
            durable: super::acks::Acks::new(),
            stats,
            links: RefCell::new(links),
            controls,
            asks: RefCell::default(),
            next_ask: Cell::new(0),
            book: RefCell::default(),
            waiters: RefCell::default(),
            acks: RefCell::default(),
            barriers: RefCell::default(),
            next_token: Cell::new(0),
            epoch: Instant::now(),
            tasks: RefCell::default(),
            acceptor: RefCell::default(),
            listen_fd: Cell::new(-1),
            floors,
            unlinked: Default::default(),
        }
    }

    /// The live link to node `node`.
    pub fn link_to(&self, node: u64) -> Option<Rc<Link>> {
        self.links
            .borrow()
            .iter()
            .find(|l| l.peer.id == node && !l.retired.get())
            .cloned()
    }

    /// Starts the link tasks: dialers, the acceptor, tickers, the waiter deadline sweep.
    pub fn start(self: &Rc<Self>, shard: &Rc<Shard>, listener: Option<std::net::TcpListener>) {
        // Copy ids continue above the last run's; its outbox goes first.
        self.durable.begin(shard.store.link_run());
        super::outbox::restore(shard, self);
        super::outbox::restore_routes(shard, self);
        let dead = shard.store.take_retained_tombstones();
        self.tombstones.borrow_mut().restore(dead);
        for l in self.live() {
            self.run_link(shard, &l);
        }
        let mut tasks = self.tasks.borrow_mut();
        if let Some(l) = listener {
            use std::os::fd::AsRawFd;
            self.listen_fd.set(l.as_raw_fd());
            let t = glommio::spawn_local(accept_loop(shard.clone(), self.clone(), l));
            *self.acceptor.borrow_mut() = Some(t);
        }
        tasks.push(glommio::spawn_local(sweep(shard.clone(), self.clone())));
    }

    /// Starts one link's tasks: its dialer (when this node dials) and its ticker.
    pub fn run_link(self: &Rc<Self>, shard: &Rc<Shard>, l: &Rc<Link>) {
        let mut tasks = l.tasks.borrow_mut();
        if l.dials {
            let d = link::dial_loop(shard.clone(), self.clone(), l.clone());
            tasks.push(glommio::spawn_local(d));
        }
        let t = link::tick_loop(
            shard.clone(),
            self.clone(),
            l.clone(),
            self.cfg.digest_interval,
            self.cfg.link_silence,
        );
        tasks.push(glommio::spawn_local(t));
    }

    /// The links to the nodes in the cluster now.
    pub fn live(&self) -> Vec<Rc<Link>> {
        self.links
            .borrow()
            .iter()
            .filter(|l| !l.retired.get())
            .cloned()
            .collect()
    }

    /// At shutdown: every link closes (peers see it at once) and the link port is released.
    pub async fn stop(&self) {
        for l in self.live() {
            l.close();
            l.tasks.borrow_mut().clear();
        }
        self.tasks.borrow_mut().clear();
        let fd = self.listen_fd.replace(-1);
        if fd >= 0 {
            // SAFETY: the listening socket the accept loop owns; shutdown wakes its
            // pending accept with an error, and the loop (stopping) drops the socket.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let acceptor = self.acceptor.borrow_mut().take();
        if let Some(t) = acceptor {
            let deadline = async {
                glommio::timer::sleep(Duration::from_secs(1)).await;
            };
            futures_lite::future::or(t, deadline).await;
        }
    }

    /// Mutual TLS of the links, when configured.
    pub fn tls(&self) -> Option<&super::tls::LinkTls> {
        self.cfg.tls.as_ref()
    }

    pub fn hello(&self) -> Hello {
        link::hello(&self.cfg.cluster_id, self.cfg.node_id)
    }

    /// Checks a peer's hello; `expect` is the node dialed. Returns its link or one line saying why not.
    pub fn check_hello(&self, h: &Hello, expect: Option<u64>) -> Result<Rc<Link>, String> {
        if h.version != super::frame::VERSION {
            return Err(format!(
                "node {} speaks link version {}, this node speaks {}",
                h.node,
                h.version,
                super::frame::VERSION
            ));
        }
        if h.cluster != self.cfg.cluster_id {
            return Err(format!(
                "node {} is in cluster '{}', this node is in cluster '{}'",
                h.node, h.cluster, self.cfg.cluster_id
            ));
        }
        if let Some(e) = expect {
            if h.node != e {
                return Err(format!("dialed node {e} but node {} answered", h.node));
            }
        }
        match self.live().into_iter().find(|l| l.peer.id == h.node) {
            // The lower id dials: an accepted hello must come from a lower id.
            Some(l) if expect.is_some() || !l.dials => Ok(l.clone()),
            Some(_) => Err(format!(
                "node {} should be dialed by this node {}, not dial it",
                h.node, self.cfg.node_id
            )),
            None => Err(format!(
                "node {} is not a peer of node {}",
                h.node, self.cfg.node_id
            )),
        }
    }

    /// The link of peer `slot`.
    pub fn link_of(&self, slot: Slot) -> Option<Rc<Link>> {
        self.links
            .borrow()
            .get((slot as usize).checked_sub(1)?)
            .filter(|l| !l.retired.get())
            .cloned()
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    // ---- this node's routes ------------------------------------------------------------------

    /// A local shard gained its first (`add`) or lost its last subscriber on `filter`.
    /// Returns whether the node's route set changed (and the peers were told).
    pub fn local_change(&self, filter: &TopicFilter, add: bool) -> bool {
        let Some(change) = self.book.borrow_mut().local_change(filter, add) else {
            return false;
        };
        let seq = self.book.borrow().seq;
        let f = match change {
            Change::Add => Frame::RouteAdd {
                seq,
                filter: filter.clone(),
            },
            Change::Remove => Frame::RouteDel {
                seq,
                filter: filter.clone(),
            },
        };
        for l in self.live().iter().filter(|l| l.is_up()) {
            l.push_frame(&f);
            l.stats.routes_out.inc();
        }
        true
    }

    /// Sends this node's whole route set on `link` (at connect and on a resync).
    pub fn send_sync(&self, link: &Link) {
        let book = self.book.borrow();
        link.push_frame(&Frame::RouteSync {
            seq: book.seq,
            filters: book.local_filters(),
        });
        link.stats.syncs_out.inc();
    }

    pub fn local_digest(&self) -> (u32, u64) {
        self.book.borrow().local_digest()
    }

    pub fn peer_digest(&self, slot: Slot) -> (u32, u64) {
        self.book.borrow().peer_digest(slot)
    }

    /// Runs `then` once every up peer acknowledged this node's route changes so far
    /// (at once when they all have), or after the route-ack timeout.
    pub fn when_routes_acked(&self, then: Box<dyn FnOnce()>) {
        let seq = self.book.borrow().seq;
        if self.acked(seq) {
            then();
            return;
        }
        self.waiters.borrow_mut().push(Waiter {
            seq,
            deadline: Instant::now() + self.cfg.route_ack_timeout,
            then,
        });
    }

    pub fn routes_pending(&self) -> bool {
        !self.acked(self.book.borrow().seq)
    }

    fn acked(&self, seq: u64) -> bool {
        self.links
            .borrow()
            .iter()
            .all(|l| l.retired.get() || !l.is_up() || l.acked.get() >= seq)
    }

    /// Runs the waiters that are satisfied (or, with `now`, past their deadline).
    pub fn check_waiters(&self) {
        self.release(None);
    }

    fn release(&self, now: Option<Instant>) {
        let due: Vec<Waiter> = {
            let mut ws = self.waiters.borrow_mut();
            if ws.is_empty() {
                return;
            }
            let (due, keep) = std::mem::take(&mut *ws)
                .into_iter()
                .partition(|w| self.acked(w.seq) || now.is_some_and(|n| n >= w.deadline));
            *ws = keep;
            due
        };
        for w in due {
            if !self.acked(w.seq) {
                self.stats.route_ack_timeouts.inc();
            }
            (w.then)();
        }
    }

    /// A link went down: waiters no longer wait for it.
    pub fn link_down(&self) {
        self.release(None);
    }

    // ---- peers' routes -----------------------------------------------------------------------

    pub fn peer_sync(&self, shard: &Rc<Shard>, link: &Link, seq: u64, filters: Vec<TopicFilter>) {
        if deaf_to(link.peer.id, true) {
            self.ack_after_barrier(shard, link, seq);
            return;
        }
        let changes = self.book.borrow_mut().peer_sync(link.slot, filters);
        for (f, add) in changes {
            if deaf_to(link.peer.id, add) {
                continue;
            }
            super::outbox::route_told(shard, link, &f, add);
            apply_everywhere(shard, link.slot, f, add);
        }
        link.stats
            .peer_routes
            .set(self.book.borrow().peer_len(link.slot) as u64);
        self.ack_after_barrier(shard, link, seq);
    }

    pub fn peer_route(&self, shard: &Rc<Shard>, link: &Link, seq: u64, f: TopicFilter, add: bool) {
        link.stats.routes_in.inc();
        if deaf_to(link.peer.id, add) {
            self.ack_after_barrier(shard, link, seq);
            return;
        }
        if self.book.borrow_mut().peer_change(link.slot, &f, add) {
            super::outbox::route_told(shard, link, &f, add);
            apply_everywhere(shard, link.slot, f, add);
        }
        link.stats
            .peer_routes
            .set(self.book.borrow().peer_len(link.slot) as u64);
        self.ack_after_barrier(shard, link, seq);
    }

    /// Acknowledges `seq` to the peer once every shard of this node applied it.
    fn ack_after_barrier(&self, shard: &Rc<Shard>, link: &Link, seq: u64) {
        if shard.shards == 1 {
            link.push_frame(&Frame::RouteAck(seq));
            return;
        }
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        self.acks
            .borrow_mut()
            .insert(token, (shard.shards - 1, link.slot, seq));
        shard
            .mesh
            .broadcast(|| MeshItem::Cluster(Box::new(Item::Barrier(token))));
    }

    /// Runs `then` once every other shard of this node handled everything
    /// it had sent to shard 0 before this call (at once with one shard).
    pub fn after_local_barrier(&self, shard: &Shard, then: Box<dyn FnOnce()>) {
        if shard.shards == 1 {
            then();
            return;
        }
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        self.barriers
            .borrow_mut()
            .insert(token, (shard.shards - 1, then));
        shard
            .mesh
            .broadcast(|| MeshItem::Cluster(Box::new(Item::Barrier(token))));
    }

    /// A local shard applied everything up to the barrier `token`.
    pub fn barrier_ack(&self, token: u64) {
        let local = {
            let mut b = self.barriers.borrow_mut();
            match b.get_mut(&token) {
                Some(e) if e.0 > 1 => {
                    e.0 -= 1;
                    return;
                }
                Some(_) => b.remove(&token),
                None => None,
            }
        };
        if let Some((_, then)) = local {
            then();
            return;
        }
        let done = {
            let mut acks = self.acks.borrow_mut();
            let Some(e) = acks.get_mut(&token) else {
                return;
            };
            e.0 -= 1;
            if e.0 > 0 {
                return;
            }
            acks.remove(&token)
        };
        if let Some((_, slot, seq)) = done {
            if let Some(l) = self.link_of(slot) {
                l.push_frame(&Frame::RouteAck(seq));
            }
        }
    }

    // ---- session handover ---------------------------------------------------------------------

    /// Asks peer `slot` for `client`'s session; false when its link is down.
    pub fn session_fetch(&self, slot: Slot, req: u64, epoch: u64, client: String) -> bool {
        match self.link_of(slot) {
            Some(l) if l.is_up() => {
                l.push_frame(&Frame::SessionFetch { req, epoch, client });
                true
            }
            _ => false,
        }
    }

    /// Answers peer `slot`'s fetch `req` (lost if its link went down meanwhile:
    /// the asker times out).
    pub fn session_ship(&self, slot: Slot, req: u64, mut snapshot: Option<bytes::Bytes>) {
        if snapshot
            .as_ref()
            .is_some_and(|b| b.len() + 64 > super::frame::MAX_FRAME)
        {
            // Over one frame: the peer would close the link. The session is lost
            // (discarded here already); the client gets a fresh one there.
            tracing::warn!(
                peer = slot,
                "session handover: a snapshot over the frame limit cannot be shipped"
            );
            snapshot = None;
        }
        if let Some(l) = self.link_of(slot) {
            if l.is_up() {
                l.push_frame(&Frame::SessionShip { req, snapshot });
            }
        }
    }

    // ---- publishes ---------------------------------------------------------------------------

    /// Sends `p` to peer `slot` for one member of share group `group` there;
    /// with `waiter` (origin shard, confirm token) as an acked copy.
    pub fn send_shared(
        &self,
        shard: &Rc<Shard>,
        slot: Slot,
        group: &TopicFilter,
        p: &Publish,
        waiter: Option<(usize, u64)>,
    ) {
        let Some(l) = self.link_of(slot) else {
            return;
        };
        if let Some((from, token)) = waiter {
            let mut b = BytesMut::new();
            encode_publish(p, &mut b);
            if b.len() > 5 {
                let w = super::acks::Waiter { shard: from, token };
                self.durable
                    .send(shard, self, &l, Some(group), None, &b[5..], w);
            }
            return;
        }
        let mut b = BytesMut::new();
        super::frame::encode_shared_publish(group, p, &mut b);
        if !b.is_empty() {
            l.push_publish(&b);
        }
    }

    /// Sends `p` to the peers in `to`, encoded once; with `waiter` (origin
    /// shard, confirm token) as acked copies, each peer's answer confirming it.
    pub fn send_publish(
        &self,
        shard: &Rc<Shard>,
        to: &ShardSet,
        p: &Publish,
        waiter: Option<(usize, u64)>,
        origin: Option<Origin>,
    ) {
        let at = origin.map(Origin::at);
        let mut b = BytesMut::new();
        encode_publish_from(p, at, &mut b);
        let head = publish_header(at);
        if b.len() <= head {
            return;
        }
        for slot in to.iter() {
            let Some(l) = self.link_of(slot) else {
                continue;
            };
            match waiter {
                Some((from, token)) => {
                    let w = super::acks::Waiter { shard: from, token };
                    self.durable.send(shard, self, &l, None, at, &b[head..], w);
                }
                None => l.push_publish(&b),
            }
        }
    }
}

impl Hub {
    /// A fresh token for a move's flush or cut (`stub.rs`).
    pub fn next_move_token(&self) -> u64 {
        let t = self.next_token.get() + 1;
        self.next_token.set(t);
        t
    }

    /// Forwards `p` to peer `slot` for its session `client` (a stub of this
    /// node, `stub.rs`); false when the link is down (the copy is lost).
    pub fn session_copy_plain(
        &self,
        slot: Slot,
        client: &str,
        origin: Origin,
        p: &Publish,
    ) -> bool {
        let Some(l) = self.link_of(slot).filter(|l| l.is_up()) else {
            return false;
        };
        let mut mqtt = BytesMut::new();
        encode_publish(p, &mut mqtt);
        if mqtt.len() <= 5 {
            return false;
        }
        let mut b = BytesMut::new();
        super::frame_move::encode_copy(client, origin, &mqtt[5..], &mut b);
        l.push_publish(&b);
        true
    }

    /// [`Self::session_copy_plain`], or with `ack` (shard, confirm token) an
    /// acked copy in the link's ledger (`copy_acks.rs`): sent now or on the
    /// next connection, the token answered by the peer's `Durable` (or
    /// refused, or the outbox: as every acked copy). False when lost.
    /// `keyed`: a prepared QoS 2 message's copy, carrying its key
    /// `(shard, token)` (`stub::Move::KeyedCopy`).
    #[allow(clippy::too_many_arguments)]
    pub fn session_copy(
        &self,
        shard: &Rc<Shard>,
        slot: Slot,
        client: &str,
        origin: Origin,
        p: &Publish,
        ack: Option<(usize, u64)>,
        keyed: bool,
    ) -> bool {
        let Some((from, token)) = ack else {
            return self.session_copy_plain(slot, client, origin, p);
        };
        let w = super::acks::Waiter { shard: from, token };
        let key = keyed.then_some(super::origin::Origin {
            shard: from as u16,
            nonce: token,
        });
        let mut mqtt = BytesMut::new();
        encode_publish(p, &mut mqtt);
        match self.link_of(slot) {
            Some(l) if mqtt.len() > 5 => {
                self.durable
                    .send_copy(shard, self, &l, (client, origin, key), &mqtt[5..], w);
                true
            }
            _ => {
                // The node left the cluster: nothing can hold the copy.
                let code = ringmq_codec::ReasonCode::ImplementationSpecificError;
                super::outbox::refuse_later(shard, w, code);
                false
            }
        }
    }
}

/// Applies a node's route change on this shard and every other shard of this node.
pub(super) fn apply_everywhere(shard: &Shard, slot: Slot, filter: TopicFilter, add: bool) {
    if let Some(node) = &shard.cluster {
        node.routes.borrow_mut().apply(slot, &filter, add);
    }
    shard.mesh.broadcast(|| {
        MeshItem::Cluster(Box::new(Item::Route {
            slot,
            filter: filter.clone(),
            add,
        }))
    });
}

async fn accept_loop(shard: Rc<Shard>, hub: Rc<Hub>, l: std::net::TcpListener) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor comes from a listening std socket we own and give up here.
    let l = unsafe { glommio::net::TcpListener::from_raw_fd(l.into_raw_fd()) };
    loop {
        let r = l.accept().await;
        if shard.stopping.get() {
            return;
        }
        match r {
            Ok(s) => {
                glommio::spawn_local(link::accepted(shard.clone(), hub.clone(), s)).detach();
            }
            Err(e) => {
                tracing::warn!("node link accept: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Releases SUBACK waiters past the route-ack timeout.
async fn sweep(shard: Rc<Shard>, hub: Rc<Hub>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        if shard.stopping.get() {
            return;
        }
        let now = Instant::now();
        hub.release(Some(now));
        hub.expire_asks(now);
        super::stub::sweep(&shard, &hub, now);
        super::ghost::sweep(&shard, &hub, now);
        for l in hub.live() {
            hub.durable.expire(&shard, &hub, &l, now);
        }
    }
}

/// A test fault (`RINGMQ_TEST_DEAF_TO`, comma-separated `N` or `N-`): the route changes
/// node `N` tells (`N-`: its withdrawals only) are acknowledged but never applied, so this
/// node keeps routing the old way, as a node held behind a move's route changes would (tests
/// of a third node's copies routed only to a session's old node:
/// `broker/tests/cluster_stub_outbox.rs`). Whether a change (`add`) of `peer` is ignored.
/// Read once; never set in production.
fn deaf_to(peer: u64, add: bool) -> bool {
    static DEAF: std::sync::OnceLock<Vec<(u64, bool)>> = std::sync::OnceLock::new();
    let deaf = DEAF.get_or_init(|| {
        let v = std::env::var("RINGMQ_TEST_DEAF_TO").unwrap_or_default();
        v.split(',')
            .filter_map(|n| match n.strip_suffix('-') {
                Some(n) => Some((n.parse().ok()?, false)),
                None => Some((n.parse().ok()?, true)),
            })
            .collect()
    });
    deaf.iter().any(|&(n, all)| n == peer && (all || !add))
}
