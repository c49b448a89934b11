//! One node link: its outbound queue (bounded in bytes), the handshake, and
//! the life of one connection (a reader here, a writer task flushing the
//! queue once per tick), reconnecting with backoff on the side that dials.
//!
//! The node with the lower id dials; the other accepts. So each pair of
//! nodes has one TCP connection, used both ways.

use super::config::Peer;
use super::frame::{Frame, FrameError, Hello, VERSION};
use super::hub::Hub;
use super::routes::Slot;
use super::stats::LinkStats;
use super::stream::LinkStream;
use crate::notify::Notify;
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds (the side that dials).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 64 * 1024;

/// The link to one peer (shard 0 holds one per peer).
pub(crate) struct Link {
    pub slot: Slot,
    pub peer: Peer,
    /// This node dials the peer (its id is lower).
    pub dials: bool,
    /// Frames waiting for the writer.
    out: RefCell<BytesMut>,
    limit: usize,
    up: Cell<bool>,
    /// Connection generation: a writer of an older one stops.
    pub generation: Cell<u64>,
    /// The socket of the current connection (for shutdown), -1 when none.
    fd: Cell<i32>,
    /// Highest route sequence the peer acknowledged on this connection.
    pub acked: Cell<u64>,
    /// When the current connection last brought bytes (a silent one is closed).
    last_rx: Cell<std::time::Instant>,
    wake: Notify,
    pub stats: Arc<LinkStats>,
    /// Acked copies (durability `sync`), both ways.
    pub acks: super::acks::LinkAcks,
    /// The node left the cluster: this link is closed for good.
    pub retired: Cell<bool>,
    /// Its dialer and ticker (dropped, so cancelled, when it is retired).
    pub tasks: RefCell<Vec<glommio::Task<()>>>,
}

impl Link {
    pub fn new(slot: Slot, peer: Peer, me: u64, limit: usize, stats: Arc<LinkStats>) -> Self {
        Link {
            slot,
            dials: me < peer.id,
            peer,
            out: RefCell::new(BytesMut::new()),
            limit,
            up: Cell::new(false),
            generation: Cell::new(0),
            fd: Cell::new(-1),
            acked: Cell::new(0),
            last_rx: Cell::new(std::time::Instant::now()),
            wake: Notify::default(),
            stats,
            acks: super::acks::LinkAcks::default(),
            retired: Cell::new(false),
            tasks: RefCell::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    /// How long the peer has sent nothing (its last connection's last bytes).
    pub fn silent_for(&self) -> std::time::Duration {
        self.last_rx.get().elapsed()
    }

    /// Queues a control frame (never dropped: they are small and only sent while up).
    pub fn push_frame(&self, f: &Frame) {
        f.encode(&mut self.out.borrow_mut());
        self.queued();
    }

    /// Queues an encoded publish frame unless the queue is full (dropped and counted).
    pub fn push_publish(&self, frame: &[u8]) {
        {
            let mut out = self.out.borrow_mut();
            if out.len() + frame.len() > self.limit {
                self.stats.dropped.inc();
                return;
            }
            out.extend_from_slice(frame);
        }
        self.stats.msgs_out.inc();
        self.queued();
    }

    /// Queues an acked copy's frame (bounded by its own ledger, `acks.rs`).
    pub fn push_raw(&self, frame: &[u8]) {
        self.out.borrow_mut().extend_from_slice(frame);
        self.stats.msgs_out.inc();
        self.queued();
    }

    fn queued(&self) {
        self.stats.queue_bytes.set(self.out.borrow().len() as u64);
        if self.up.get() {
            self.wake.notify();
        }
    }

    /// Closes the current connection, if any (its reader and writer end).
    pub fn kick(&self) {
        let fd = self.fd.get();
        if fd >= 0 {
            // SAFETY: `fd` is the live socket of this link's connection (reset
            // to -1 before that socket is dropped); shutdown does not close it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// Closes the connection for good (shutdown: its task is about to be dropped).
    pub fn close(&self) {
        self.kick();
        self.fd.set(-1);
        self.up.set(false);
        self.stats.up.set(0);
    }
}

/// The dialing side: connect, handshake, serve, and again after a backoff.
pub(crate) async fn dial_loop(shard: Rc<Shard>, hub: Rc<Hub>, link: Rc<Link>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if shard.stopping.get() || link.retired.get() {
            return;
        }
        match dial_once(&hub, &link).await {
            Ok((stream, fd, rest)) => {
                backoff = BACKOFF_MIN;
                serve(&shard, &hub, &link, stream, fd, rest).await;
            }
            Err(e) => {
                tracing::debug!(peer = link.peer.id, "node link: {e}");
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection after its handshake: the stream, its socket (for shutdown), bytes read past the hello.
type Established = (LinkStream, i32, BytesMut);

/// Runs `f` within the handshake deadline.
async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let late = async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Err(format!("{what}: no answer within {HANDSHAKE_TIMEOUT:?}"))
    };
    futures_lite::future::or(f, late).await
}

async fn dial_once(hub: &Hub, link: &Link) -> Result<Established, String> {
    let tcp = TcpStream::connect_timeout(link.peer.link_addr, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| format!("connect {}: {e}", link.peer.link_addr))?;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let mut s = match hub.tls() {
        None => LinkStream::Plain(tcp),
        Some(t) => {
            let c = futures_rustls::TlsConnector::from(t.client.clone());
            let tls = within("TLS handshake", async {
                c.connect(t.name.clone(), tcp).await.map_err(|e| {
                    link.stats.refused.inc();
                    tracing::warn!(peer = link.peer.id, "node link TLS handshake failed: {e}");
                    format!("TLS: {e}")
                })
            })
            .await?;
            LinkStream::Tls(Box::new(tls.into()))
        }
    };
    let mut out = BytesMut::new();
    Frame::Hello(hub.hello()).encode(&mut out);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let (first, rest) = read_first(&mut s).await?;
    match first {
        Frame::Hello(h) => match hub.check_hello(&h, Some(link.peer.id)) {
            Ok(_) => Ok((s, fd, rest)),
            Err(why) => {
                link.stats.refused.inc();
                tracing::warn!(peer = link.peer.id, "node link refused: {why}");
                refuse(&mut s, why).await;
                Err("refused".into())
            }
        },
        Frame::Refuse(why) => {
            link.stats.refused.inc();
            tracing::warn!(
                peer = link.peer.id,
                "node {} refused our link: {why}",
                link.peer.id
            );
            Err("refused by peer".into())
        }
        other => Err(format!("expected a hello, got {other:?}")),
    }
}

/// The accepting side: one incoming connection on the link port.
pub(crate) async fn accepted(shard: Rc<Shard>, hub: Rc<Hub>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let from = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let fd = tcp.as_raw_fd();
    let mut s = match hub.tls() {
        None => LinkStream::Plain(tcp),
        Some(t) => {
            let a = futures_rustls::TlsAcceptor::from(t.server.clone());
            let hs = within("TLS handshake", async {
                a.accept(tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))
            });
            match hs.await {
                Ok(tls) => LinkStream::Tls(Box::new(tls.into())),
                Err(e) => {
                    hub.stats.refused_unknown.inc();
                    tracing::warn!("node link from {from} refused: {e}");
                    return;
                }
            }
        }
    };
    let (first, rest) = match read_first(&mut s).await {
        Ok(x) => x,
        Err(e) => {
            hub.stats.refused_unknown.inc();
            tracing::warn!("node link from {from} refused: {e}");
            return;
        }
    };
    let Frame::Hello(h) = first else {
        hub.stats.refused_unknown.inc();
        tracing::warn!("node link from {from} refused: it did not start with a hello");
        return;
    };
    let link = match hub.check_hello(&h, None) {
        Ok(link) => link,
        Err(why) => {
            hub.stats.refused_unknown.inc();
            tracing::warn!("node link from {from} refused: {why}");
            refuse(&mut s, why).await;
            return;
        }
    };
    // A peer that restarted finds its old connection still up here: the new one wins.
    link.kick();
    for _ in 0..1000 {
        if !link.is_up() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let mut out = BytesMut::new();
    Frame::Hello(hub.hello()).encode(&mut out);
    if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
        return;
    }
    serve(&shard, &hub, &link, s, fd, rest).await;
}

async fn refuse(s: &mut (impl AsyncWrite + Unpin), why: String) {
    let mut out = BytesMut::new();
    Frame::Refuse(why).encode(&mut out);
    let _ = s.write_all(&out).await;
    let _ = s.flush().await;
}

/// Reads the first frame (within the handshake deadline), keeping what follows it.
async fn read_first(s: &mut (impl AsyncRead + Unpin)) -> Result<(Frame, BytesMut), String> {
    let read = async {
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            match Frame::decode(&mut buf) {
                Ok(Some(f)) => return Ok((f, buf)),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            if buf.len() > 64 * 1024 {
                return Err("hello too long".into());
            }
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let timeout = async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT).await;
        Err("no hello within the handshake deadline".to_string())
    };
    futures_lite::future::or(read, timeout).await
}

/// Runs one established connection until it fails or is kicked.
async fn serve(
    shard: &Rc<Shard>,
    hub: &Rc<Hub>,
    link: &Rc<Link>,
    s: LinkStream,
    fd: i32,
    rest: BytesMut,
) {
    let generation = link.generation.get() + 1;
    link.generation.set(generation);
    link.fd.set(fd);
    link.acked.set(0);
    link.last_rx.set(std::time::Instant::now());
    link.up.set(true);
    link.stats.up.set(1);
    link.stats.connects.inc();
    tracing::info!(peer = link.peer.id, "node link up");
    // Publishes queued while the link was down go after the route sync and
    // the acked copies the peer has not answered yet (written again, in order).
    let queued = link.out.borrow_mut().split();
    hub.send_sync(link);
    super::origin::send_floor(hub, link);
    link.acks.connected(link, generation);
    link.out.borrow_mut().unsplit(queued);
    // Retained messages set while the peer was away reach it (in steps).
    glommio::spawn_local(super::retained::send_all(
        shard.clone(),
        link.clone(),
        generation,
    ))
    .detach();
    let (r, w) = futures_lite::io::split(s);
    let writer = glommio::spawn_local(write_loop(link.clone(), w, generation));
    link.wake.notify();
    if let Err(e) = read_loop(shard, hub, link, r, rest).await {
        link.stats.errors.inc();
        tracing::warn!(peer = link.peer.id, "node link closed: {e}");
    } else {
        tracing::info!(peer = link.peer.id, "node link down");
    }
    link.kick();
    link.up.set(false);
    link.stats.up.set(0);
    // The copies it did not have answered go to the outbox (`outbox.rs`).
    super::outbox::link_down(shard, hub, link);
    // What this connection did not write is lost with it (acked copies are
    // written again on the next one).
    link.out.borrow_mut().clear();
    link.stats.queue_bytes.set(0);
    link.wake.notify();
    writer.await;
    link.fd.set(-1);
    hub.link_down();
    hub.asks_link_down(link.peer.id);
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("unexpected {0} after the handshake")]
    Protocol(&'static str),
    #[error("peer refused: {0}")]
    Refused(String),
}

async fn read_loop(
    shard: &Rc<Shard>,
    hub: &Rc<Hub>,
    link: &Rc<Link>,
    mut r: futures_lite::io::ReadHalf<LinkStream>,
    mut buf: BytesMut,
) -> Result<(), LinkError> {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(f) = Frame::decode(&mut buf)? {
            on_frame(shard, hub, link, f)?;
        }
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        link.stats.bytes_in.add(n as u64);
        link.last_rx.set(std::time::Instant::now());
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The PUBLISH a data frame carries, counted as one message in.
fn publish_in(link: &Link, publish: Bytes) -> Result<ringmq_codec::Publish, LinkError> {
    let p = super::frame::decode_publish(publish)?;
    link.stats.msgs_in.inc();
    Ok(p)
}

fn on_frame(shard: &Rc<Shard>, hub: &Rc<Hub>, link: &Rc<Link>, f: Frame) -> Result<(), LinkError> {
    match f {
        Frame::Publish(b) => {
            let p = publish_in(link, b)?;
            crate::route::route_from_peer(shard, p, None, None, None);
        }
        Frame::PublishFrom { origin, publish } => {
            let p = publish_in(link, publish)?;
            let o = origin.on(link.peer.id);
            crate::route::route_from_peer(shard, p, None, None, Some(o));
        }
        Frame::AckedFrom {
            stamp,
            origin,
            publish,
        } => {
            let p = publish_in(link, publish)?;
            let o = origin.on(link.peer.id);
            hub.durable
                .receive(shard, link, stamp, (None, None), p, Some(o));
        }
        Frame::SessionCopy {
            client,
            origin,
            publish,
        } => {
            let p = publish_in(link, publish)?;
            super::merge::on_copy(shard, client, origin, p, None);
        }
        Frame::AckedCopy {
            stamp,
            client,
            origin,
            key,
            publish,
        } => {
            let p = publish_in(link, publish)?;
            hub.durable
                .receive_copy(shard, link, stamp, (client, origin, key), p);
        }
        Frame::MoveDone(client) => super::stub::on_move_done(shard, hub, link, client),
        Frame::Flush(t) => link.push_frame(&Frame::Flushed(t)),
        Frame::Flushed(t) => {
            if !super::ghost::on_flushed(shard, link, t) {
                super::stub::on_flushed(shard, hub, link, t)
            }
        }
        Frame::StubEnd { client, marks } => super::merge::on_stub_end(shard, client, marks),
        Frame::Ghost { client, peers } => {
            super::ghost::on_frame(shard, link.peer.id, client, peers)
        }
        Frame::GhostFlush { token, owner } => {
            super::ghost::on_flush(shard, hub, link, token, owner)
        }
        Frame::SharedPublish { group, publish } => {
            let p = publish_in(link, publish)?;
            crate::route::route_shared_from_peer(shard, p, &group, None, None);
        }
        Frame::AckedPublish { stamp, publish } => {
            let p = publish_in(link, publish)?;
            hub.durable
                .receive(shard, link, stamp, (None, None), p, None);
        }
        Frame::AckedShared {
            stamp,
            group,
            publish,
        } => {
            let p = publish_in(link, publish)?;
            hub.durable
                .receive(shard, link, stamp, (Some(&group), None), p, None);
        }
        Frame::AckedOrigin {
            stamp,
            origin,
            group,
            at,
            publish,
        } => {
            let p = publish_in(link, publish)?;
            let at = at.map(|a| a.on(link.peer.id));
            hub.durable
                .receive(shard, link, stamp, (group.as_ref(), Some(origin)), p, at);
        }
        Frame::OriginsDone { shard: s, nonces } => {
            super::origin::on_done(shard, link.peer.id, s, nonces)
        }
        Frame::OriginFloor(floors) => super::origin::on_floor(shard, link.peer.id, floors),
        Frame::Retained { at_ms, publish } => {
            let p = super::frame::decode_publish(publish)?;
            super::retained::received(shard, link, at_ms, p);
        }
        Frame::Durable(upto) => hub.durable.durable(shard, link, upto),
        Frame::NotStored { id, code } => hub.durable.not_stored(shard, link, id, code),
        Frame::RouteSync { seq, filters } => {
            hub.peer_sync(shard, link, seq, filters);
            super::ghost::synced(shard, link);
        }
        Frame::RouteAdd { seq, filter } => hub.peer_route(shard, link, seq, filter, true),
        Frame::RouteDel { seq, filter } => hub.peer_route(shard, link, seq, filter, false),
        Frame::RouteAck(seq) => {
            if seq > link.acked.get() {
                link.acked.set(seq);
            }
            hub.check_waiters();
        }
        Frame::Digest { count, hash } => {
            if hub.peer_digest(link.slot) != (count, hash) {
                link.stats.digest_mismatches.inc();
                link.push_frame(&Frame::Resync);
            }
        }
        Frame::Resync => hub.send_sync(link),
        Frame::Ping(n) => link.push_frame(&Frame::Pong(n)),
        Frame::Pong(n) => {
            let now = hub.now_us();
            link.stats.rtt_us.set(now.saturating_sub(n));
        }
        Frame::ClientsAsk {
            req,
            shard: only,
            limit,
            pattern,
        } => hub.on_clients_ask(link, req, only, limit, pattern),
        Frame::ClientsAnswer { req, total, rows } => {
            hub.on_clients_answer(link.peer.id, req, total, rows)
        }
        Frame::SessionFetch { req, epoch, client } => {
            super::handover::on_fetch(shard, link.slot, req, epoch, client)
        }
        Frame::SessionShip { req, snapshot } => super::handover::on_ship(shard, req, snapshot),
        Frame::Hello(_) => return Err(LinkError::Protocol("hello")),
        Frame::Refuse(why) => return Err(LinkError::Refused(why)),
    }
    Ok(())
}

/// Writes whatever is queued, once per tick, in one write.
async fn write_loop(
    link: Rc<Link>,
    mut w: futures_lite::io::WriteHalf<LinkStream>,
    generation: u64,
) {
    loop {
        link.wake.wait().await;
        // Let the rest of this tick add to the batch.
        futures_lite::future::yield_now().await;
        if !link.up.get() || link.generation.get() != generation {
            return;
        }
        let batch: Bytes = {
            let mut out = link.out.borrow_mut();
            if out.is_empty() {
                continue;
            }
            out.split().freeze()
        };
        link.stats.queue_bytes.set(0);
        if w.write_all(&batch).await.is_err() || w.flush().await.is_err() {
            // What was in this batch is lost with the connection (QoS 0 over a dead link).
            link.kick();
            return;
        }
        link.stats.bytes_out.add(batch.len() as u64);
        link.stats.batches_out.inc();
    }
}

/// Sends a ping every second and this node's route digest every `digest` interval.
/// A link silent for `silence` (no pong, no frame) is closed: a peer cut off by
/// the network leaves no socket error for minutes, and until the link reads as
/// down, SUBACKs wait for that peer's route acknowledgements.
pub(crate) async fn tick_loop(
    shard: Rc<Shard>,
    hub: Rc<Hub>,
    link: Rc<Link>,
    digest: Duration,
    silence: Duration,
) {
    let mut since_digest = Duration::ZERO;
    let step = Duration::from_secs(1).min(digest);
    loop {
        glommio::timer::sleep(step).await;
        if shard.stopping.get() || link.retired.get() {
            return;
        }
        if !link.is_up() {
            continue;
        }
        let quiet = link.last_rx.get().elapsed();
        if quiet >= silence {
            link.stats.errors.inc();
            tracing::warn!(
                peer = link.peer.id,
                "node link silent for {} ms: closing it",
                quiet.as_millis()
            );
            link.kick();
            continue;
        }
        link.push_frame(&Frame::Ping(hub.now_us()));
        since_digest += step;
        if since_digest >= digest {
            since_digest = Duration::ZERO;
            let (count, hash) = hub.local_digest();
            link.push_frame(&Frame::Digest { count, hash });
        }
    }
}

/// The hello this node sends.
pub(crate) fn hello(cluster: &str, node: u64) -> Hello {
    Hello {
        version: VERSION,
        cluster: cluster.to_string(),
        node,
    }
}
