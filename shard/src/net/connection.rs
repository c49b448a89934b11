//! A client connection: one task on one descriptor, from accept to close.
//!
//! The task reads CONNECT, hands the socket to its home shard if that is
//! another one, then serves it: it reads and decodes packets, hands them to
//! the handlers and writes what the connection's outbound buffer
//! ([`ConnOut`]) holds, in one `poll` loop woken by the shard's poller
//! (`poller.rs`: socket readiness and deadlines) and by whoever appends to
//! the buffer. Reading never waits for writing: a socket that takes nothing
//! only stops the writing half until it is writable again or the slow
//! consumer deadline closes it. An idle connection holds no buffer.
//! A close always carries a [`CloseReason`].
//!
//! Bytes pass through the connection's transport [`Stack`] (`stack.rs`:
//! plain, TLS, WebSocket): this loop sees MQTT bytes only, for every
//! transport. The read path is [`read_into`], the write path `Link::write`.

use super::read_budget::Partial;
use super::stack::Stack;
use super::tls::fault_reason;
use crate::conn_out::ConnOut;
use crate::connect;
use crate::listener::ListenerRt;
use crate::mesh::{Handoff, MeshItem};
use crate::poller::{Io, READABLE, WRITABLE};
use crate::shard::Shard;
use crate::stats::CloseReason;
use crate::store::Ticket;
use bytes::BytesMut;
use ringmq_codec::{
    Connect, ConnectReturnCode, DecodeError, Decoder, Disconnect, DisconnectProperties, Packet,
    ProtocolVersion, ReasonCode,
};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read (the shard's scratch buffer).
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Read/write rounds per poll before the task lets others run.
const ROUNDS_PER_POLL: u32 = 16;

/// The read path: reads what the socket holds through the stack and
/// appends the MQTT bytes it carried to `buf`. Returns the socket's byte
/// count: `Ok(0)` is end of stream, `WouldBlock` nothing there (readiness
/// is forgotten then).
///
/// The bytes land in the shard's one scratch buffer and what arrived is
/// copied to `buf`: an idle connection holds no read buffer at all.
/// `max` bounds the bytes asked of the socket (the partial-packet budget).
fn read_into(
    shard: &Shard,
    io: &Io,
    stack: &mut Stack,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<usize> {
    let mut scratch = shard.read_scratch.borrow_mut();
    let want = max.min(scratch.len());
    match stack.read(io, &mut scratch[..want], buf) {
        Ok(r) => {
            let n = r.wire;
            // A layer that saw its stream's end keeps the socket "readable"
            // so that the next read reports the end.
            if n > 0 && n < want && !stack.at_eof() {
                // A short read emptied the socket; the next arrival is a new edge.
                shard.poller.clear(io.key, READABLE);
            }
            Ok(n)
        }
        Err(e) => {
            if e.kind() == io::ErrorKind::WouldBlock {
                shard.poller.clear(io.key, READABLE);
            }
            Err(e)
        }
    }
}

/// Maps a decode error to the close reason.
pub(crate) fn close_reason_for(e: &DecodeError) -> CloseReason {
    match e.reason_code() {
        ReasonCode::PacketTooLarge => CloseReason::PacketTooLarge,
        ReasonCode::ProtocolError => CloseReason::ProtocolError,
        ReasonCode::TopicAliasInvalid => CloseReason::TopicAliasInvalid,
        _ => CloseReason::MalformedPacket,
    }
}

/// The CONNACK that answers a CONNECT the codec refused, if any:
/// an unknown protocol level gets the 3.1.1 CONNACK 0x01 [MQTT-3.1.2-2];
/// a v5 CONNECT gets the reason code (v5 3.2.2.2, 0x80 and above, then
/// close); 3.1.x gets a return code where one exists (0x02 for an empty
/// client id without clean session, [MQTT-3.1.3-8] (3.1.1)), else only a close.
fn connect_error_answer(e: &DecodeError, v: Option<ProtocolVersion>) -> Option<Vec<u8>> {
    let code = e.connect_return_code();
    if code == Some(ConnectReturnCode::UnacceptableProtocolVersion) {
        return Some(vec![0x20, 0x02, 0x00, 0x01]);
    }
    if v == Some(ProtocolVersion::V5) {
        let mut out = BytesMut::new();
        let ack = crate::connect::refusal(e.reason_code());
        Packet::ConnAck(ack)
            .encode(ProtocolVersion::V5, &mut out)
            .ok()?;
        return Some(out.to_vec());
    }
    code.map(|c| vec![0x20, 0x02, 0x00, c as u8])
}

/// A last word before closing a connection that was never served (a
/// refusing CONNACK, a TLS alert, close_notify). A fresh socket's send
/// buffer is empty, so a few bytes always fit; nothing waits for them.
/// Counted per shard and per listener.
fn answer_and_close(
    shard: &Shard,
    io: Io,
    stack: &mut Stack,
    listener: u16,
    bytes: &[u8],
    reason: CloseReason,
) {
    if !bytes.is_empty() {
        let _ = stack.write(&io, bytes);
    }
    stack.close(reason);
    let _ = stack.flush(&io);
    shard.poller.close(io);
    shard.stats.close(reason);
    if let Some(l) = shard.stats.listener(listener) {
        l.handshake_failures[reason as usize].inc();
    }
}

/// A new socket: read CONNECT, then serve it here or hand it to its home shard.
pub(crate) async fn handshake(shard: Rc<Shard>, fd: OwnedFd, rt: Arc<ListenerRt>) {
    let io = match shard.poller.register(fd) {
        Ok(io) => io,
        Err(_) => return shard.stats.close(CloseReason::IoError),
    };
    let li = rt.index;
    let mut stack = match rt.stack() {
        Ok(s) => s,
        Err(reason) => return answer_and_close(&shard, io, &mut Stack::Plain, li, &[], reason),
    };
    // The deadline covers the PROXY header, the transport's handshake and CONNECT.
    let deadline = shard.poller.after(CONNECT_TIMEOUT);
    shard.poller.arm(io.key, deadline);
    let mut buf = BytesMut::new();
    let mut peer = None;
    if rt.cfg.proxy_protocol {
        let fed = match super::proxy::read_header(&shard, &io, deadline).await {
            Ok((source, rest)) => {
                peer = source;
                stack.feed(&rest, &mut buf)
            }
            Err(reason) => return answer_and_close(&shard, io, &mut stack, li, &[], reason),
        };
        if let Err(e) = fed {
            let reason = fault_reason(&e).unwrap_or(CloseReason::IoError);
            return answer_and_close(&shard, io, &mut stack, li, &[], reason);
        }
    }
    let (packet, mut buf) =
        match read_connect(&shard, &io, &mut stack, li, buf, None, deadline).await {
            Ok(p) => p,
            Err((reason, answer)) => {
                let answer = answer.as_deref().unwrap_or(&[]);
                return answer_and_close(&shard, io, &mut stack, li, answer, reason);
            }
        };
    let Packet::Connect(mut connect) = packet else {
        // [MQTT-3.1.0-1] the first packet must be CONNECT.
        return answer_and_close(&shard, io, &mut stack, li, &[], CloseReason::ProtocolError);
    };
    // As Mosquitto's use_identity_as_username: the verified client
    // certificate's subject CN is the user name (the authentication phase
    // asks no password then); no CN: refused.
    let tls_identity = if rt.cfg.tls.identity_as_username {
        match stack.peer_identity() {
            Some(cn) => Some(cn),
            None => {
                let mut out = BytesMut::new();
                let ack = connect::refusal(ReasonCode::NotAuthorized);
                let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
                let reason = CloseReason::ConnectRefused;
                return answer_and_close(&shard, io, &mut stack, li, &out, reason);
            }
        }
    } else {
        None
    };
    shard.stats.packets_in.inc();
    let assigned = connect.client_id.is_empty();
    if assigned {
        if !connect::may_assign_id(&connect) {
            // [MQTT-3.1.3-8] (3.1.1) empty id needs CleanSession=1: 0x02.
            let mut out = BytesMut::new();
            let ack = connect::refusal(ReasonCode::ClientIdentifierNotValid);
            let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
            let reason = CloseReason::ConnectRefused;
            return answer_and_close(&shard, io, &mut stack, li, &out, reason);
        }
        connect::assign_id(&shard, &mut connect);
    }
    if connect.client_id.len() > shard.cfg.max_client_id_length {
        // [MQTT-3.1.3-5] ids of 1-23 bytes MUST be allowed, longer ones MAY:
        // so they may be bounded. A rejected id gets CONNACK 0x02 and a close
        // in 3.1.1 [MQTT-3.1.3-9], 0x85 and a close in v5 [MQTT-3.1.3-8].
        // Checked before the handoff, so a long id never crosses the mesh.
        let mut out = BytesMut::new();
        let ack = connect::refusal(ReasonCode::ClientIdentifierNotValid);
        let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
        let reason = CloseReason::ClientIdTooLong;
        return answer_and_close(&shard, io, &mut stack, li, &out, reason);
    }
    // Authentication: one phase, before the socket leaves this shard.
    let peer_ip = peer
        .map(|p| p.ip())
        .or_else(|| connect::peer_ip(io.fd.as_raw_fd()));
    let link = crate::auth_phase::Link {
        io: &io,
        stack: &mut stack,
        listener: li,
        peer: peer_ip,
        allow_anonymous: rt.cfg.allow_anonymous,
        deadline,
    };
    let auth = match crate::auth_phase::authenticate(
        &shard,
        link,
        &connect,
        &mut buf,
        tls_identity.as_deref(),
    )
    .await
    {
        Ok(auth) => auth,
        Err((code, reason)) => {
            let mut out = BytesMut::new();
            if let Some(code) = code {
                let _ = Packet::ConnAck(connect::refusal(code)).encode(connect.protocol, &mut out);
            }
            return answer_and_close(&shard, io, &mut stack, li, &out, reason);
        }
    };
    // Cluster: this node becomes the session's owner before CONNACK (an
    // await on the control plane; this shard serves others meanwhile).
    let claim = match crate::ownership::claim(&shard, connect.client_id.as_bytes()).await {
        Ok(claim) => claim,
        Err(_) => {
            // A minority partition (or no leader yet) cannot record the owner:
            // v5 CONNACK 0x88 Server unavailable, 3.1.1 0x03 [MQTT-3.2.2-6].
            let mut out = BytesMut::new();
            let ack = connect::refusal(ReasonCode::ServerUnavailable);
            let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
            let reason = CloseReason::ClusterUnavailable;
            return answer_and_close(&shard, io, &mut stack, li, &out, reason);
        }
    };
    // A takeover from another node: that node ships the session here first
    // (bounded; `cluster/handover.rs`). A clean start discards it anyway.
    let fetched = if connect.clean_start {
        crate::cluster::handover::discarded(&shard, connect.client_id.as_str());
        crate::cluster::handover::Fetched::Fresh
    } else {
        crate::cluster::handover::fetch(&shard, connect.client_id.as_str(), claim).await
    };
    let shipped = match fetched {
        crate::cluster::handover::Fetched::Session(s) => Some(s),
        crate::cluster::handover::Fetched::Fresh => None,
        crate::cluster::handover::Fetched::Unavailable => {
            // The old node is unreachable mid-move: its session is not lost
            // yet, so no fresh one: v5 CONNACK 0x88 Server unavailable,
            // 3.1.1 0x03 [MQTT-3.2.2-6]; this node keeps the ownership and
            // the retry fetches again (`cluster/moving.rs`).
            let mut out = BytesMut::new();
            let ack = connect::refusal(ReasonCode::ServerUnavailable);
            let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
            let reason = CloseReason::ClusterUnavailable;
            return answer_and_close(&shard, io, &mut stack, li, &out, reason);
        }
    };
    let epoch = claim.epoch;
    let home = home_shard(connect.client_id.as_bytes(), shard.shards);
    if home == shard.id {
        let via = Via {
            stack,
            listener: li,
            peer,
        };
        let claim = Claimed {
            auth,
            epoch,
            shipped,
        };
        return serve(shard, io, via, connect, buf, assigned, deadline, claim);
    }
    // Hand the socket itself to the home shard: the descriptor crosses the
    // mesh, with its transport stack (TLS and WebSocket state included).
    let Ok((fd, wire_rest)) = shard.poller.deregister(io).await else {
        // io_uring: its last send (TLS session tickets) never completed: the
        // client reads nothing.
        shard.stats.close(CloseReason::HandshakeTimeout);
        return;
    };
    let mut buf = buf;
    if !wire_rest.is_empty() {
        // Bytes the io_uring backend had received behind the CONNECT: they
        // pass through the stack like any read and travel in `rest`.
        shard.stats.bytes_in.add(wire_rest.len() as u64);
        if let Err(e) = stack.feed(&wire_rest, &mut buf) {
            let reason = fault_reason(&e).unwrap_or(CloseReason::IoError);
            drop(fd);
            shard.stats.close(reason);
            return;
        }
    }
    shard.stats.close(CloseReason::HandedOff);
    shard.mesh.push(
        home,
        MeshItem::Handoff(Box::new(Handoff {
            fd,
            via: Via {
                stack,
                listener: li,
                peer,
            },
            connect,
            rest: buf,
            assigned,
            auth,
            epoch,
            shipped,
        })),
    );
}

/// Reads one packet of the handshake by `deadline` (which covers the
/// transport's own handshake too): CONNECT, or AUTH when `version` is
/// known. An error carries the close reason and the bytes that answer it,
/// if any.
pub(crate) async fn read_connect(
    shard: &Shard,
    io: &Io,
    stack: &mut Stack,
    listener: u16,
    mut buf: BytesMut,
    version: Option<ProtocolVersion>,
    deadline: u64,
) -> Result<(Packet, BytesMut), (CloseReason, Option<Vec<u8>>)> {
    let mut decoder = Decoder::new(shard.cfg.max_packet_size);
    decoder.set_reads_client(true);
    if let Some(v) = version {
        decoder.set_version(v);
    }
    let started = stack.handshaking().then(Instant::now);
    let mut handshaking = started.is_some();
    loop {
        if handshaking && !stack.handshaking() {
            handshaking = false;
            if let (Some(t), Some(l)) = (started, shard.stats.listener(listener)) {
                l.handshake_done(t.elapsed().as_micros() as u64);
            }
        }
        if matches!(stack, Stack::Plain) && buf.first() == Some(&0x16) {
            // A TLS ClientHello's record type (22) where CONNECT (0x10) belongs.
            return Err((CloseReason::TlsOnPlainListener, None));
        }
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => return Ok((p, buf)),
            Ok(None) => {}
            Err(e) => {
                let answer = connect_error_answer(&e, decoder.version());
                return Err((close_reason_for(&e), answer));
            }
        }
        // A layer's handshake answer (ServerHello, HTTP 101) leaves first.
        if stack.pending() && shard.poller.ready(io.key) & WRITABLE != 0 {
            match stack.flush(io) {
                Ok(true) => {}
                Ok(false) => shard.poller.clear(io.key, WRITABLE),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    shard.poller.clear(io.key, WRITABLE)
                }
                Err(_) => return Err((CloseReason::IoError, None)),
            }
        }
        // Over the partial-packet budget a CONNECT is read in small steps
        // (its own 10 s deadline bounds how long it may take).
        let max = if shard.read_budget.over() {
            super::read_budget::SMALL_READ
        } else {
            READ_CHUNK
        };
        match read_into(shard, io, stack, &mut buf, max) {
            Ok(0) if stack.handshaking() => return Err((CloseReason::HandshakeTruncated, None)),
            Ok(0) => return Err((CloseReason::ConnectionLost, None)),
            Ok(n) => shard.stats.bytes_in.add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let timed_out = std::future::poll_fn(|cx| {
                    let ready = shard.poller.ready(io.key);
                    if shard.poller.now_ms() >= deadline {
                        Poll::Ready(true)
                    } else if ready & READABLE != 0 || (stack.pending() && ready & WRITABLE != 0) {
                        Poll::Ready(false)
                    } else {
                        shard.poller.set_waker(io.key, cx.waker());
                        Poll::Pending
                    }
                })
                .await;
                if timed_out {
                    if stack.handshaking() {
                        return Err((CloseReason::HandshakeTimeout, None));
                    }
                    return Err((CloseReason::ConnectTimeout, None));
                }
            }
            Err(e) => return Err((fault_reason(&e).unwrap_or(CloseReason::IoError), None)),
        }
    }
}

/// A connection handed over by another shard.
pub(crate) fn adopt(shard: Rc<Shard>, h: Handoff) {
    match shard.poller.register(h.fd) {
        Ok(io) => serve(
            shard,
            io,
            h.via,
            h.connect,
            h.rest,
            h.assigned,
            u64::MAX,
            Claimed {
                auth: h.auth,
                epoch: h.epoch,
                shipped: h.shipped,
            },
        ),
        Err(_) => shard.stats.close(CloseReason::IoError),
    }
}

/// The home shard: CONNECT handled, then the connection's task until close.
/// How a connection came in: its transport layers, its listener and the
/// client's address a PROXY header carried. Moves with the socket.
pub(crate) struct Via {
    pub stack: Stack,
    pub listener: u16,
    pub peer: Option<std::net::SocketAddr>,
}

/// Who the client authenticated as, and the cluster epoch its CONNECT won
/// (0 without a cluster).
struct Claimed {
    auth: crate::auth_phase::Authenticated,
    epoch: u64,
    /// The session another node shipped (a cross-node takeover).
    shipped: Option<crate::cluster::handover::Shipped>,
}

#[allow(clippy::too_many_arguments)] // what the handshake or a handoff carries, once
fn serve(
    shard: Rc<Shard>,
    io: Io,
    via: Via,
    connect: Box<Connect>,
    buf: BytesMut,
    assigned: bool,
    armed: u64,
    claimed: Claimed,
) {
    let Via {
        mut stack,
        listener,
        peer,
    } = via;
    let version = connect.protocol;
    let Claimed {
        auth,
        epoch,
        shipped,
    } = claimed;
    if let Some(snapshot) = shipped {
        // Installed (rows written, subscriptions routed) before `accept`,
        // which then resumes it as any session present here: CONNACK session
        // present 1, once every connected peer node acknowledged the routes
        // of its subscriptions (as a SUBACK would wait): from then on a
        // message published on any node reaches it here.
        if crate::cluster::handover::install(&shard, &connect.client_id, snapshot) {
            let via = Via {
                stack,
                listener,
                peer,
            };
            let claimed = Claimed {
                auth,
                epoch,
                shipped: None,
            };
            let s = shard.clone();
            glommio::spawn_local(async move {
                crate::cluster::handover::routes_settled(&s).await;
                // The install durable before CONNACK and before MoveDone,
                // which lets the old node drop its keep (`cluster/moving.rs`).
                if let Err(e) = s.store.flush().await {
                    tracing::warn!(error = %e, "session handover: the install did not commit");
                }
                // The old node may stop forwarding once nothing routed its way can still come.
                crate::cluster::merge::settled(&s, connect.client_id.as_str());
                serve(s, io, via, connect, buf, assigned, armed, claimed);
            })
            .detach();
            return;
        }
    }
    let accepted = connect::accept(
        &shard,
        &connect,
        io.fd.as_raw_fd(),
        peer,
        assigned,
        auth,
        epoch,
    );
    drop(connect); // the session took what it needs
    let (sid, conn, keep_alive) = match accepted {
        Ok(accepted) => accepted,
        Err((ack, reason)) => {
            let mut out = BytesMut::new();
            let _ = Packet::ConnAck(*ack).encode(version, &mut out);
            return answer_and_close(&shard, io, &mut stack, listener, &out, reason);
        }
    };
    if let Some(p) = peer {
        conn.set_peer(p);
    }
    shard.conns.set(shard.conns.get() + 1);
    shard.stats.connections.inc();
    if let Some(l) = shard.stats.listener(listener) {
        l.open.inc();
    }
    let link = Link::new(&shard, stack, version, keep_alive, buf, armed);
    // The handshake's task ends here; this small one lives as long as the connection.
    glommio::spawn_local(Served {
        shard,
        conn,
        io: Some(io),
        sid,
        listener,
        link,
    })
    .detach();
}

/// A batch of `len` bytes, capped at what [`Link::batch`] holds.
fn batch_len(len: usize) -> u32 {
    len.min(u32::MAX as usize) as u32
}

/// The task of a served connection: everything it holds across wake-ups
/// is in this struct (no `async` state machine around it).
pub(crate) struct Served {
    shard: Rc<Shard>,
    conn: Rc<ConnOut>,
    io: Option<Io>,
    sid: u32,
    listener: u16,
    link: Link,
}

impl Future for Served {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(io) = &this.io else {
            return Poll::Ready(());
        };
        let Poll::Ready(reason) = this.link.drive(&this.shard, this.sid, &this.conn, io, cx) else {
            return Poll::Pending;
        };
        this.link.inbuf = BytesMut::new();
        this.link.partial.release(&this.shard);
        if let Some(io) = this.io.take() {
            // The layers' goodbye (TLS close_notify), best effort.
            this.link
                .stack
                .close(this.conn.close.get().unwrap_or(reason));
            let _ = this.link.stack.flush(&io);
            if let Some(l) = this.shard.stats.listener(this.listener) {
                l.open.sub(1);
            }
            finish(&this.shard, this.sid, &this.conn, io, reason);
        }
        Poll::Ready(())
    }
}

/// The connection closed with `reason`: the socket goes, then the session learns it.
fn finish(shard: &Rc<Shard>, sid: u32, conn: &Rc<ConnOut>, io: Io, reason: CloseReason) {
    let reason = conn.close.get().unwrap_or(reason);
    conn.request_close(reason);
    io.shutdown();
    shard.poller.close(io);
    connect::closed(shard, sid, conn, reason);
    shard.conns.set(shard.conns.get() - 1);
    shard.stats.connections.sub(1);
    shard.stats.close(reason);
    if shard.conns.get() == 0 {
        shard.idle.notify();
    }
}

/// The I/O state of a served connection (lives in its task, not in the session).
pub(crate) struct Link {
    /// The transport layers between the socket and `inbuf`/`ConnOut.buf`.
    stack: Stack,
    /// Bytes read and not yet decoded (no allocation while empty).
    inbuf: BytesMut,
    /// `inbuf`'s unfinished packet: its share of the shard's budget, its deadline.
    partial: Partial,
    decoder: Decoder,
    /// Bytes at the front of the outbound buffer being written as one batch
    /// (u32: at most 4 GiB a batch; the rest goes in the next one).
    batch: u32,
    /// When the batch must be out (slow consumer), poller clock.
    batch_deadline: u64,
    /// Durability `sync`: the commit the next batch waits for, and that
    /// batch's size (boxed: most connections never wait for one).
    ticket: Option<Box<(Ticket, usize)>>,
    /// Keep alive times 1.5, ms (0: none).
    keep_alive_ms: u32,
    last_read: u64,
    /// The deadline our latest poller timer entry stands for (u64::MAX: none).
    armed: u64,
}

impl Link {
    /// `armed`: a poller entry still pending for this socket (the CONNECT
    /// deadline), so the keep-alive deadline needs none before it fires.
    fn new(
        shard: &Shard,
        stack: Stack,
        version: ProtocolVersion,
        keep_alive: u16,
        inbuf: BytesMut,
        armed: u64,
    ) -> Self {
        let mut decoder = Decoder::new(shard.cfg.max_packet_size);
        decoder.set_version(version);
        decoder.set_reads_client(true);
        Link {
            stack,
            // An empty remainder still holds the CONNECT's read buffer.
            inbuf: if inbuf.is_empty() {
                BytesMut::new()
            } else {
                inbuf
            },
            partial: Partial::default(),
            decoder,
            batch: 0,
            batch_deadline: 0,
            ticket: None,
            // Keep alive: 1.5 times the interval [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]).
            keep_alive_ms: keep_alive as u32 * 1500,
            last_read: shard.poller.now_ms(),
            armed,
        }
    }

    /// Reads, handles and writes until nothing moves; `Ready` once closed.
    fn drive(
        &mut self,
        shard: &Rc<Shard>,
        sid: u32,
        conn: &Rc<ConnOut>,
        io: &Io,
        cx: &mut Context<'_>,
    ) -> Poll<CloseReason> {
        let packet_timeout = shard.cfg.packet_timeout.as_millis() as u64;
        for _ in 0..ROUNDS_PER_POLL {
            let now = shard.poller.now_ms();
            let read = !conn.closing() && self.read(shard, sid, conn, io, now, cx.waker());
            let wrote = match self.write(shard, conn, io, cx, now) {
                Ok(wrote) => wrote,
                Err(reason) => {
                    conn.request_close(reason);
                    return Poll::Ready(reason);
                }
            };
            if self.sending() && now >= self.batch_deadline {
                // The batch did not leave within the slow consumer deadline:
                // a peer that stops reading is closed even while the kernel's
                // buffers still take a trickle.
                conn.request_close(CloseReason::SlowConsumer);
                return Poll::Ready(CloseReason::SlowConsumer);
            }
            if conn
                .stall_deadline(now, slow_ms(shard))
                .is_some_and(|at| now >= at)
            {
                // The window stayed full and nothing was acknowledged: shed
                // like a socket that takes nothing (the session stays).
                conn.window_moving();
                disconnect_client(conn, CloseReason::WindowStalled);
            }
            if self.keep_alive_ms > 0 && now >= self.last_read + self.keep_alive_ms as u64 {
                conn.request_close(CloseReason::KeepAliveTimeout);
            }
            if self
                .partial
                .deadline(packet_timeout)
                .is_some_and(|d| now >= d)
            {
                // Keep alive 0 does not exempt a packet from its deadline.
                conn.request_close(CloseReason::PacketTimeout);
            }
            if let Some(reason) = conn.close.get() {
                if !self.sending() && self.ticket.is_none() && conn.buf.borrow().is_empty() {
                    return Poll::Ready(reason);
                }
            }
            if !read && !wrote {
                conn.wake.register(cx.waker());
                shard.poller.set_waker(io.key, cx.waker());
                self.arm(shard, conn, io.key, now);
                return Poll::Pending;
            }
        }
        // Busy: let the other tasks of the shard run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A batch is on its way out: in the outbound buffer or in a layer.
    #[inline]
    fn sending(&self) -> bool {
        self.batch > 0 || self.stack.pending()
    }

    /// Arms the poller for the earliest of our deadlines if no entry covers it.
    fn arm(&mut self, shard: &Shard, conn: &ConnOut, key: u32, now: u64) {
        let mut next = u64::MAX;
        if self.keep_alive_ms > 0 {
            next = self.last_read + self.keep_alive_ms as u64;
        }
        if self.sending() {
            next = next.min(self.batch_deadline);
        }
        if let Some(d) = self
            .partial
            .deadline(shard.cfg.packet_timeout.as_millis() as u64)
        {
            next = next.min(d);
        }
        if let Some(at) = conn.stall_deadline(now, slow_ms(shard)) {
            next = next.min(at);
        }
        if next == u64::MAX {
            return;
        }
        if next < self.armed || self.armed <= now {
            shard.poller.arm(key, next);
            self.armed = next;
        }
    }

    /// Decodes and handles what was read, then reads once more.
    /// Returns whether anything happened.
    fn read(
        &mut self,
        shard: &Rc<Shard>,
        sid: u32,
        conn: &Rc<ConnOut>,
        io: &Io,
        now: u64,
        waker: &Waker,
    ) -> bool {
        let mut handled = false;
        loop {
            if conn.reading_paused() {
                // A large SUBSCRIBE/UNSUBSCRIBE goes on in steps: the packets
                // after it wait, in order (and nothing more is read meanwhile).
                return handled;
            }
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(p)) => {
                    handled = true;
                    shard.stats.packets_in.inc();
                    if conn.closing() {
                        // Closing (taken over, kicked, shutting down): the session may
                        // belong to another connection now; nothing more is processed.
                        return true;
                    }
                    if let Err(r) = crate::handle::packet(shard, sid, conn, p) {
                        conn.request_close(r);
                        return true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_close(conn, e.reason_code(), close_reason_for(&e));
                    return true;
                }
            }
        }
        if conn.closing() {
            return true;
        }
        if self.inbuf.is_empty() {
            // Drop the last read's allocation (decoded packets keep their slices).
            self.inbuf = BytesMut::new();
        }
        let held = self.inbuf.capacity() + self.stack.held();
        self.partial.update(shard, held, handled, now);
        if shard.poller.ready(io.key) & READABLE == 0 {
            return handled;
        }
        let allowed = self.partial.allowance(shard, waker, READ_CHUNK);
        if allowed == 0 {
            // Over the shard's partial-packet budget: the bytes wait in the
            // socket (net/read_budget.rs); the budget or the deadline wakes us.
            return handled;
        }
        match read_into(shard, io, &mut self.stack, &mut self.inbuf, allowed) {
            Ok(0) => {
                conn.request_close(CloseReason::ConnectionLost);
                true
            }
            Ok(n) => {
                shard.stats.bytes_in.add(n as u64);
                self.last_read = now;
                // Counted at once, so the next connection's read sees it.
                let held = self.inbuf.capacity() + self.stack.held();
                self.partial.update(shard, held, false, now);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => handled,
            Err(e) => {
                conn.request_close(fault_reason(&e).unwrap_or(CloseReason::IoError));
                true
            }
        }
    }

    /// Writes the outbound buffer batch by batch. `Err` closes at once.
    fn write(
        &mut self,
        shard: &Shard,
        conn: &ConnOut,
        io: &Io,
        cx: &mut Context<'_>,
        now: u64,
    ) -> Result<bool, CloseReason> {
        let mut wrote = false;
        loop {
            if self.batch == 0 && self.stack.pending() {
                // A layer still holds encoded bytes of the last batch.
                if shard.poller.ready(io.key) & WRITABLE == 0 {
                    return Ok(wrote);
                }
                match self.stack.flush(io) {
                    Ok(true) => wrote = true,
                    Ok(false) => {
                        shard.poller.clear(io.key, WRITABLE);
                        return Ok(wrote);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        shard.poller.clear(io.key, WRITABLE);
                        return Ok(wrote);
                    }
                    Err(_) => return Err(CloseReason::IoError),
                }
                continue;
            }
            if self.batch == 0 {
                let len = conn.buf.borrow().len();
                if len == 0 {
                    conn.release_idle_buffer();
                    return Ok(wrote);
                }
                if conn.gate.get() && self.ticket.is_none() {
                    conn.gate.set(false);
                    let mut t = shard.store.flush();
                    match Pin::new(&mut t).poll(cx) {
                        // Nothing pending or in flight: no wait (and no box).
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            tracing::warn!(shard = shard.id, "commit failed, closing client: {e}");
                            return Err(CloseReason::StorageError);
                        }
                        Poll::Pending => self.ticket = Some(Box::new((t, len))),
                    }
                }
                if self.ticket.is_some() {
                    // Durability sync: these bytes leave once the rows behind
                    // them are durable. The ticket covers every op pushed so
                    // far; bytes buffered later without a new gate follow it.
                    let t = self.ticket.as_mut().expect("checked");
                    let polled = Pin::new(&mut t.0).poll(cx);
                    let ticket_len = t.1;
                    match polled {
                        Poll::Pending => return Ok(wrote),
                        Poll::Ready(Err(e)) => {
                            self.ticket = None;
                            tracing::warn!(shard = shard.id, "commit failed, closing client: {e}");
                            return Err(CloseReason::StorageError);
                        }
                        Poll::Ready(Ok(())) => {
                            self.batch = batch_len(ticket_len);
                            self.ticket = None;
                        }
                    }
                } else {
                    self.batch = batch_len(len);
                }
                self.batch_deadline = now + slow_ms(shard);
            }
            if shard.poller.ready(io.key) & WRITABLE == 0 {
                return Ok(wrote);
            }
            let sent = self
                .stack
                .write_from(io, &mut conn.buf.borrow_mut(), self.batch as usize);
            match sent {
                Ok(n) => {
                    conn.room_freed();
                    self.batch -= n as u32;
                    shard.stats.bytes_out.add(n as u64);
                    wrote = true;
                    if self.sending() {
                        // The socket took part of it: it is full until told otherwise.
                        shard.poller.clear(io.key, WRITABLE);
                        return Ok(wrote);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    shard.poller.clear(io.key, WRITABLE);
                    return Ok(wrote);
                }
                Err(_) => return Err(CloseReason::IoError),
            }
        }
    }
}

/// The slow consumer timeout in ms (socket not draining, window stalled).
fn slow_ms(shard: &Shard) -> u64 {
    shard.cfg.slow_consumer_timeout.as_millis() as u64
}

/// Sends a v5 DISCONNECT with `code` (3.1.x has none) and closes with `reason`.
pub(crate) fn protocol_close(conn: &ConnOut, code: ReasonCode, reason: CloseReason) {
    if conn.version == ProtocolVersion::V5 {
        conn.send(&Packet::Disconnect(Disconnect {
            reason: code,
            properties: DisconnectProperties::default().into(),
        }));
    }
    conn.request_close(reason);
}

/// Closes a client for a server-side reason (takeover, kick, shutdown).
pub fn disconnect_client(conn: &ConnOut, reason: CloseReason) {
    let code = match reason {
        CloseReason::SessionTakenOver => ReasonCode::SessionTakenOver,
        CloseReason::ServerShuttingDown => ReasonCode::ServerShuttingDown,
        CloseReason::AdministrativeAction => ReasonCode::AdministrativeAction,
        CloseReason::KeepAliveTimeout => ReasonCode::KeepAliveTimeout,
        CloseReason::SlowConsumer | CloseReason::WindowStalled => ReasonCode::QuotaExceeded,
        _ => ReasonCode::UnspecifiedError,
    };
    protocol_close(conn, code, reason);
}

/// Drain: shed connections gradually (a few per 10 ms) after accepting stopped.
pub(crate) async fn drain(shard: Rc<Shard>) {
    loop {
        let victims: Vec<Rc<ConnOut>> = shard
            .sessions
            .borrow()
            .iter()
            .filter_map(|(_, s)| s.conn.clone())
            .filter(|c| !c.closing())
            .take(16)
            .collect();
        if victims.is_empty() {
            return;
        }
        for c in victims {
            disconnect_client(&c, CloseReason::ServerShuttingDown);
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The home shard of a client id: FNV-1a, stable across runs.
pub fn home_shard(client_id: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in client_id {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % shards.max(1) as u64) as usize
}
