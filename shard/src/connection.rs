//! A client connection: framing, the reader loop and the writer task.
//!
//! The connection owns its buffers and the [`Decoder`]; handlers only ever
//! see packets. The reader and the writer each own a descriptor of the same
//! socket (the writer's is a `dup`), so reading and writing never wait on
//! each other. A close always carries a [`CloseReason`].

use crate::conn_out::ConnOut;
use crate::connect;
use crate::mesh::{Handoff, MeshItem};
use crate::shard::Shard;
use crate::stats::CloseReason;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::spawn_local;
use ringmq_codec::{
    Connect, ConnectReturnCode, DecodeError, Decoder, Disconnect, DisconnectProperties, Packet,
    ProtocolVersion, ReasonCode,
};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read (the shard's scratch buffer).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Reads more bytes and appends them to `buf`. `Ok(0)` is end of stream.
///
/// glommio reads only inside `poll` (a non-blocking `recv`, else a wait
/// for readiness that holds no buffer), so the bytes land in the shard's
/// one scratch buffer, borrowed for that poll only, and what arrived is
/// copied to `buf`. An idle connection holds no read buffer at all.
pub(crate) fn read_more<'a>(
    shard: &'a Shard,
    stream: &'a mut TcpStream,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut scratch = shard.read_scratch.borrow_mut();
        match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
            Poll::Ready(Ok(n)) => {
                buf.extend_from_slice(&scratch[..n]);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    })
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

/// A new socket: read CONNECT, then serve it here or hand it to its home shard.
pub(crate) async fn handshake(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(shard.cfg.max_packet_size);
    decoder.set_reads_client(true);
    let packet = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(p)) => break p,
            Ok(None) => match read_more(&shard, &mut stream, &mut buf).await {
                Ok(0) => return shard.stats.close(CloseReason::ConnectionLost),
                Ok(n) => shard.stats.bytes_in.add(n as u64),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return shard.stats.close(CloseReason::ConnectTimeout)
                }
                Err(_) => return shard.stats.close(CloseReason::IoError),
            },
            Err(e) => {
                if let Some(ack) = connect_error_answer(&e, decoder.version()) {
                    let _ = stream.write_all(&ack).await;
                }
                return shard.stats.close(close_reason_for(&e));
            }
        }
    };
    let Packet::Connect(mut connect) = packet else {
        // [MQTT-3.1.0-1] the first packet must be CONNECT.
        return shard.stats.close(CloseReason::ProtocolError);
    };
    shard.stats.packets_in.inc();
    let assigned = connect.client_id.is_empty();
    if assigned {
        if !connect::may_assign_id(&connect) {
            // [MQTT-3.1.3-8] (3.1.1) empty id needs CleanSession=1: 0x02.
            let mut out = BytesMut::new();
            let ack = connect::refusal(ReasonCode::ClientIdentifierNotValid);
            let _ = Packet::ConnAck(ack).encode(connect.protocol, &mut out);
            let _ = stream.write_all(&out).await;
            return shard.stats.close(CloseReason::ConnectRefused);
        }
        connect::assign_id(&shard, &mut connect);
    }
    let home = home_shard(connect.client_id.as_bytes(), shard.shards);
    if home == shard.id {
        return serve(shard, stream, connect, buf, peer, assigned).await;
    }
    // Hand the socket to the home shard: a duplicate descriptor crosses the mesh.
    // SAFETY: dup on a descriptor we own; the result is checked and owned below.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return shard.stats.close(CloseReason::IoError);
    }
    // SAFETY: `fd` is a fresh descriptor returned by dup above, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    drop(stream);
    shard.stats.close(CloseReason::HandedOff);
    shard.mesh.push(
        home,
        MeshItem::Handoff(Box::new(Handoff {
            fd,
            connect,
            rest: buf,
            peer,
            assigned,
        })),
    );
}

/// A connection handed over by another shard.
pub(crate) fn adopt(shard: Rc<Shard>, h: Handoff) {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor is a connected TCP socket whose ownership moved to us.
    let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
    spawn_local(serve(shard, stream, h.connect, h.rest, h.peer, h.assigned)).detach();
}

/// The home shard: CONNECT handled, then the reader loop until close.
async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    connect: Box<Connect>,
    mut buf: BytesMut,
    peer: Option<std::net::SocketAddr>,
    assigned: bool,
) {
    let version = connect.protocol;
    let accepted = connect::accept(&shard, &connect, peer, assigned);
    drop(connect); // the session took what it needs
    let (sid, conn, keep_alive) = match accepted {
        Ok(accepted) => accepted,
        Err(ack) => {
            let mut out = BytesMut::new();
            let _ = Packet::ConnAck(*ack).encode(version, &mut out);
            let _ = stream.write_all(&out).await;
            return shard.stats.close(CloseReason::ConnectRefused);
        }
    };
    shard.conns.set(shard.conns.get() + 1);
    shard.stats.connections.inc();
    // SAFETY: dup on a descriptor we own; checked below.
    let wfd = unsafe { libc::dup(stream.as_raw_fd()) };
    let writer = if wfd >= 0 {
        // SAFETY: fresh descriptor from dup, owned by the writer stream from here on.
        let w = unsafe { TcpStream::from_raw_fd(wfd) };
        let _ = w.set_write_timeout(Some(shard.cfg.slow_consumer_timeout));
        Some(spawn_local(write_loop(shard.clone(), conn.clone(), w)))
    } else {
        conn.request_close(CloseReason::IoError);
        None
    };
    // Keep alive: 1.5 times the interval [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]).
    let timeout = (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500));
    let _ = stream.set_read_timeout(timeout);
    let mut decoder = Decoder::new(shard.cfg.max_packet_size);
    decoder.set_version(version);
    decoder.set_reads_client(true);
    let reason = read_loop(&shard, sid, &conn, &mut stream, &mut decoder, &mut buf).await;
    let reason = conn.close.get().unwrap_or(reason);
    conn.request_close(reason);
    if let Some(w) = writer {
        w.await;
    }
    let _ = stream.shutdown(Shutdown::Both).await;
    connect::closed(&shard, sid, &conn, reason);
    shard.conns.set(shard.conns.get() - 1);
    shard.stats.connections.sub(1);
    shard.stats.close(reason);
    if shard.conns.get() == 0 {
        shard.idle.notify();
    }
}

async fn read_loop(
    shard: &Rc<Shard>,
    sid: u32,
    conn: &Rc<ConnOut>,
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> CloseReason {
    loop {
        loop {
            match decoder.decode(buf) {
                Ok(Some(p)) => {
                    shard.stats.packets_in.inc();
                    if let Some(r) = conn.close.get() {
                        // Closing (taken over, kicked, shutting down): the session may
                        // belong to another connection now; nothing more is processed.
                        return r;
                    }
                    if let Err(r) = crate::handle::packet(shard, sid, conn, p) {
                        return r;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let reason = close_reason_for(&e);
                    protocol_close(conn, e.reason_code(), reason);
                    return reason;
                }
            }
        }
        if conn.closing() {
            return conn.close.get().unwrap_or(CloseReason::ProtocolError);
        }
        if buf.is_empty() {
            // Drop the last read's allocation (decoded packets keep their slices).
            *buf = BytesMut::new();
        }
        match read_more(shard, stream, buf).await {
            Ok(0) => return conn.close.get().unwrap_or(CloseReason::ConnectionLost),
            Ok(n) => shard.stats.bytes_in.add(n as u64),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return CloseReason::KeepAliveTimeout,
            Err(_) => return conn.close.get().unwrap_or(CloseReason::IoError),
        }
    }
}

/// The writer: drains the outbound buffer once per wake-up; flushes and
/// shuts the socket down when the connection closes.
async fn write_loop(shard: Rc<Shard>, conn: Rc<ConnOut>, mut w: TcpStream) {
    loop {
        let data = conn.buf.borrow_mut().split();
        if !data.is_empty() {
            if conn.gate.get() {
                // Durability sync: nothing leaves before the rows behind it are durable.
                if let Err(e) = shard.store.flush().await {
                    tracing::warn!(shard = shard.id, "commit failed, closing client: {e}");
                    conn.request_close(CloseReason::StorageError);
                    break;
                }
            }
            let n = data.len();
            // The whole buffer must leave within the slow consumer deadline:
            // a peer that stops reading is closed even while the kernel's
            // buffers still take a trickle.
            let written =
                futures_lite::future::or(async { Some(w.write_all(&data).await) }, async {
                    glommio::timer::sleep(shard.cfg.slow_consumer_timeout).await;
                    None
                })
                .await;
            let Some(written) = written else {
                conn.request_close(CloseReason::SlowConsumer);
                break;
            };
            match written {
                Ok(()) => shard.stats.bytes_out.add(n as u64),
                Err(e) => {
                    let r = if e.kind() == io::ErrorKind::TimedOut {
                        CloseReason::SlowConsumer
                    } else {
                        CloseReason::IoError
                    };
                    conn.request_close(r);
                    break;
                }
            }
            continue;
        }
        if conn.closing() {
            break;
        }
        conn.wake.wait().await;
    }
    let _ = w.shutdown(Shutdown::Both).await;
}

/// Sends a v5 DISCONNECT with `code` (3.1.x has none) and closes with `reason`.
pub(crate) fn protocol_close(conn: &ConnOut, code: ReasonCode, reason: CloseReason) {
    if conn.version == ProtocolVersion::V5 {
        conn.send(&Packet::Disconnect(Disconnect {
            reason: code,
            properties: DisconnectProperties::default(),
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
        CloseReason::SlowConsumer => ReasonCode::QuotaExceeded,
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
