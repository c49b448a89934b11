//! One MQTT client connection over a glommio `TcpStream`.
//!
//! The connection owns its buffers and framing: callers queue packets (or append
//! pre-encoded bytes to [`Conn::wbuf`]) and pull decoded packets with
//! [`Conn::next_packet`]. [`Conn::drive`] writes what is queued and reads what has
//! arrived in one task, so a publisher can keep writing while acknowledgements come back.

use crate::poller::{PolledFd, Poller};
use crate::rbuf::{frame_len, ReadBuf};
use crate::transport::{Layers, Target};
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use ringmq_codec::{
    ConnAck, Connect, ConnectProperties, Decoder, Disconnect, DisconnectProperties, MqttString,
    Packet, PacketId, ProtocolVersion, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeProperties, SubscriptionOptions, TopicFilter,
};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// Initial write buffer capacity.
const WRITE_CHUNK: usize = 64 * 1024;
/// Largest packet accepted from the broker.
const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// What one [`Conn::drive`] call achieved.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub read: bool,
    pub wrote: bool,
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct Login {
    pub version: ProtocolVersion,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: u16,
    pub clean_start: bool,
    /// A will (QoS 0, topic) carried by the CONNECT (`conn --will-prefix`).
    pub will_topic: Option<String>,
}

/// Longest wait for a TCP connect plus CONNACK (and SUBACK) during setup.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// `fut`, or a `TimedOut` error after `limit` (a broker that accepts but never answers).
pub async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(limit).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: no answer within {limit:?}"),
        ))
    })
    .await
}

pub fn invalid(msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

pub struct Conn {
    stream: TcpStream,
    rbuf: ReadBuf,
    /// Size of the frame at the front of `rbuf` when it is incomplete (0: unknown).
    want: usize,
    /// A whole non-PUBLISH frame copied out of `rbuf` for the codec's `Decoder`.
    slow: BytesMut,
    /// Bytes waiting to be written; publishers append pre-encoded frames here.
    pub wbuf: BytesMut,
    decoder: Decoder,
    pub version: ProtocolVersion,
    /// TLS / WebSocket under the MQTT bytes; None for plain TCP (the fast path).
    layers: Option<Box<Layers>>,
    /// Socket bytes read before the layers decode them (layered connections only).
    raw_in: Vec<u8>,
    /// Plain TCP moved to the core's epoll set for the measured run ([`Conn::use_poller`]),
    /// driven by [`Conn::pump`]; [`Conn::drive`] still works through `stream` (the same
    /// socket) for the DISCONNECT at the end.
    polled: Option<PolledFd>,
    /// Polled reads ask for the kernel's receive timestamp ([`Conn::enable_rx_stamps`]).
    rx_stamps: bool,
    /// The kernel's receive timestamp of the last polled read ([`crate::payload::now_ns`]
    /// clock), until taken.
    rx_ns: Option<u64>,
    /// With receive timestamps, most bytes per read (0 = no limit).
    rx_cap: usize,
}

impl Conn {
    /// TCP connect with `TCP_NODELAY`.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> io::Result<Conn> {
        Conn::open_target(&Target::tcp(addr), version).await
    }

    /// TCP connect with `TCP_NODELAY`, then TLS and / or WebSocket as the target says
    /// (their handshakes run as the first packets are exchanged).
    pub async fn open_target(target: &Target, version: ProtocolVersion) -> io::Result<Conn> {
        let addr = target.addr;
        let layers = target.layers()?;
        let stream = TcpStream::connect_timeout(addr, Duration::from_secs(10)).await?;
        stream.set_nodelay(true)?;
        let mut decoder = Decoder::new(MAX_PACKET);
        decoder.set_version(version);
        Ok(Conn {
            stream,
            rbuf: ReadBuf::default(),
            want: 0,
            slow: BytesMut::new(),
            wbuf: BytesMut::with_capacity(WRITE_CHUNK),
            decoder,
            version,
            raw_in: if layers.is_some() {
                vec![0; WRITE_CHUNK]
            } else {
                Vec::new()
            },
            layers,
            polled: None,
            rx_stamps: false,
            rx_ns: None,
            rx_cap: 0,
        })
    }

    /// Wraps a stream accepted by the relay fixture; the version is learnt from CONNECT.
    pub fn accepted(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: ReadBuf::default(),
            want: 0,
            slow: BytesMut::new(),
            wbuf: BytesMut::with_capacity(WRITE_CHUNK),
            decoder: Decoder::new(MAX_PACKET),
            version: ProtocolVersion::V5,
            layers: None,
            raw_in: Vec::new(),
            polled: None,
            rx_stamps: false,
            rx_ns: None,
            rx_cap: 0,
        })
    }

    /// Moves a plain TCP connection onto the core's epoll set (`crate::poller`): its
    /// reads and writes become direct non-blocking syscalls ([`Conn::pump`]) and its
    /// readiness comes from the set, one wait per core instead of an io_uring poll per
    /// socket and read. TLS / WebSocket connections stay on glommio's stream.
    pub fn use_poller(&mut self, poller: &Rc<Poller>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if self.layers.is_some() || self.polled.is_some() {
            return Ok(());
        }
        self.polled = Some(PolledFd::adopt(self.stream.as_raw_fd(), poller)?);
        Ok(())
    }

    /// A polled connection's reads carry the kernel's software receive timestamp
    /// (`SO_TIMESTAMPNS`), taken with [`Conn::take_rx_ns`]. Not available on a task's
    /// stream (TLS, WebSocket, `--glommio-io`): an error.
    ///
    /// TCP reports one timestamp per read, that of the last segment the read took, so a
    /// read of several deliveries would give the earlier ones a later time. Each read
    /// therefore takes at most `max_read` bytes (the smallest frame the subscriber can
    /// receive; 0 = no limit): with frames of that size, one delivery per read and its own
    /// segment's time (several deliveries coalesced in one segment share it, rightly).
    pub fn enable_rx_stamps(&mut self, max_read: usize) -> io::Result<()> {
        let p = self
            .polled
            .as_ref()
            .ok_or_else(|| io::Error::other("receive timestamps need a polled connection"))?;
        p.enable_rx_stamps()?;
        crate::payload::from_realtime(0, 0); // sample the clock offset now, not mid-run
        self.rx_stamps = true;
        self.rx_cap = max_read;
        Ok(())
    }

    /// The kernel's receive time of the last read (the last segment it took), if it
    /// gave one; cleared.
    pub fn take_rx_ns(&mut self) -> Option<u64> {
        self.rx_ns.take()
    }

    /// The epoll set of a polled connection.
    pub fn poller(&self) -> Option<&Rc<Poller>> {
        self.polled.as_ref().map(|p| &p.poller)
    }

    /// `SO_RCVLOWAT`: the socket reports readable only once `bytes` are queued (1 =
    /// any). Fewer, larger reads per message when the generator is faster than the
    /// broker: each read costs a syscall and, on loopback, the ACK it sends.
    pub fn set_rcvlowat(&self, bytes: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = match &self.polled {
            Some(p) => p.fd.as_raw_fd(),
            None => self.stream.as_raw_fd(),
        };
        let v = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads an int from the pointer we pass, on our own socket.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the protocol version for encoding and decoding.
    pub fn set_version(&mut self, v: ProtocolVersion) {
        self.version = v;
        self.decoder.set_version(v);
    }

    /// Sends CONNECT and waits for CONNACK; an error if the broker refuses.
    pub async fn login(&mut self, l: &Login) -> io::Result<ConnAck> {
        let mut properties = ConnectProperties::default();
        if l.version == ProtocolVersion::V5 {
            properties.receive_maximum = Some(u16::MAX);
        }
        let connect = Connect {
            protocol: l.version,
            clean_start: l.clean_start,
            keep_alive: l.keep_alive,
            client_id: MqttString::try_from(l.client_id.as_str())
                .map_err(|e| invalid(format!("{e:?}")))?,
            will: match &l.will_topic {
                Some(t) => Some(ringmq_codec::LastWill {
                    topic: ringmq_codec::TopicName::try_from(t.as_str())
                        .map_err(|e| invalid(format!("{e:?}")))?,
                    payload: Bytes::from_static(b"gone"),
                    qos: ringmq_codec::QoS::AtMostOnce,
                    retain: false,
                    properties: Default::default(),
                }),
                None => None,
            },
            username: match &l.username {
                Some(u) => {
                    Some(MqttString::try_from(u.as_str()).map_err(|e| invalid(format!("{e:?}")))?)
                }
                None => None,
            },
            password: l
                .password
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_bytes())),
            properties,
        };
        self.queue(&Packet::Connect(Box::new(connect)))?;
        match self.read_packet().await? {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => Ok(ack),
            Packet::ConnAck(ack) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("CONNACK refused: {:?}", ack.reason),
            )),
            other => Err(invalid(format!("expected CONNACK, got {other:?}"))),
        }
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK; error if the broker refuses it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, packet_id: u16) -> io::Result<()> {
        self.queue_subscribe(filter, qos, packet_id)?;
        loop {
            match self.read_packet().await? {
                Packet::SubAck(ack) => return check_suback(&ack),
                Packet::Publish(_) => continue, // retained messages may precede the SUBACK
                other => return Err(invalid(format!("expected SUBACK, got {other:?}"))),
            }
        }
    }

    /// Queues a SUBSCRIBE to one filter.
    pub fn queue_subscribe(&mut self, filter: &str, qos: QoS, packet_id: u16) -> io::Result<()> {
        let filter =
            TopicFilter::try_from(filter).map_err(|e| invalid(format!("bad filter: {e:?}")))?;
        let sub = Subscribe {
            packet_id: PacketId::new(packet_id.max(1)).expect("non-zero"),
            filters: vec![(
                filter,
                SubscriptionOptions {
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
            )],
            properties: SubscribeProperties::default(),
        };
        self.queue(&Packet::Subscribe(sub))
    }

    /// Encodes a packet into the write buffer.
    pub fn queue(&mut self, p: &Packet) -> io::Result<()> {
        p.encode(self.version, &mut self.wbuf)
            .map_err(|e| invalid(format!("encode: {e:?}")))
    }

    /// Queues PUBACK / PUBREC / PUBREL / PUBCOMP with reason Success: four bytes, the
    /// same in 3.1.1 and 5.0 (v5 3.4.2.1: the reason code and property length may be
    /// left out when the reason is 0x00 and there are no properties).
    #[inline]
    pub fn queue_ack(&mut self, kind: AckKind, id: PacketId) -> io::Result<()> {
        let first = match kind {
            AckKind::PubAck => 0x40,
            AckKind::PubRec => 0x50,
            AckKind::PubRel => 0x62, // [MQTT-3.6.1-1] flags 0010
            AckKind::PubComp => 0x70,
        };
        let [hi, lo] = id.get().to_be_bytes();
        self.wbuf.extend_from_slice(&[first, 2, hi, lo]);
        Ok(())
    }

    /// Queues DISCONNECT and writes everything out (best effort).
    pub async fn disconnect(&mut self) {
        let d = Disconnect {
            reason: ReasonCode::Success,
            properties: DisconnectProperties::default().into(),
        };
        if self.queue(&Packet::Disconnect(d)).is_ok() {
            let _ = futures_lite::future::or(self.flush(), async {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                Ok(())
            })
            .await;
        }
    }

    /// Subscriber fast path: when the next whole frame read is a PUBLISH, its fields
    /// (payload as a range of [`Conn::read_buf`]) without building a `Packet`. Only the
    /// framing is checked here: fixed header, topic length, non-zero packet id, v5
    /// property length. Anything else (other packets, incomplete or odd frames) returns
    /// None and goes through the codec's `Decoder` via [`Conn::next_packet`].
    #[inline]
    pub fn peek_publish(&self) -> Option<RawPublish> {
        let b = self.rbuf.data();
        let first = *b.first()?;
        let qos = (first >> 1) & 3;
        if first >> 4 != 3 || qos == 3 {
            return None;
        }
        let (mut rl, mut i, mut shift) = (0usize, 1usize, 0u32);
        loop {
            let byte = *b.get(i)?;
            rl |= usize::from(byte & 0x7f) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if i > 4 {
                return None;
            }
        }
        let end = i + rl;
        if b.len() < end {
            return None;
        }
        let topic_len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        let mut pos = i + 2 + topic_len;
        let mut packet_id = None;
        if qos > 0 {
            let id = u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]);
            packet_id = Some(PacketId::new(id)?);
            pos += 2;
        }
        if self.version == ProtocolVersion::V5 {
            let (mut plen, mut shift) = (0usize, 0u32);
            loop {
                let byte = *b.get(pos)?;
                plen |= usize::from(byte & 0x7f) << shift;
                pos += 1;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 21 {
                    return None;
                }
            }
            pos += plen;
        }
        if pos > end {
            return None;
        }
        Some(RawPublish {
            frame_len: end,
            first_byte: first,
            topic: i + 2..i + 2 + topic_len,
            qos,
            packet_id,
            payload: pos..end,
        })
    }

    /// Publisher fast path: when the next whole frame read is a PUBACK, PUBREC or
    /// PUBCOMP, its type (high nibble), packet id and reason code (0 when left out),
    /// consumed. Anything else returns None for [`Conn::next_packet`].
    #[inline]
    pub fn take_ack(&mut self) -> Option<(u8, PacketId, u8)> {
        let b = self.rbuf.data();
        let kind = *b.first()?;
        if !matches!(kind, 0x40 | 0x50 | 0x70) {
            return None;
        }
        let rl = usize::from(*b.get(1)?);
        if !(2..=0x7f).contains(&rl) || b.len() < 2 + rl {
            return None;
        }
        let id = PacketId::new(u16::from_be_bytes([b[2], b[3]]))?;
        let reason = if rl > 2 { b[4] } else { 0 };
        self.rbuf.consume(2 + rl);
        Some((kind >> 4, id, reason))
    }

    /// Bytes read and not yet consumed.
    pub fn read_buf(&self) -> &[u8] {
        self.rbuf.data()
    }

    /// Drops `n` consumed bytes from the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.consume(n);
    }

    /// The next whole packet already read, if any, through the codec's `Decoder` (the
    /// frame is copied out of the read buffer first: this is the path for rare packets).
    pub fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        let b = self.rbuf.data();
        if b.is_empty() {
            return Ok(None);
        }
        let n = match frame_len(b) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(None),
            Err(_) => return Err(invalid("decode: malformed remaining length")),
        };
        if n > MAX_PACKET as usize {
            return Err(invalid(format!("decode: packet of {n} bytes is too large")));
        }
        if b.len() < n {
            self.want = n;
            return Ok(None);
        }
        self.want = 0;
        self.slow.clear();
        self.slow.extend_from_slice(&b[..n]);
        self.rbuf.consume(n);
        match self.decoder.decode(&mut self.slow) {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => Err(invalid("decode: whole frame not decoded")),
            Err(e) => Err(invalid(format!("decode: {e:?}"))),
        }
    }

    /// Flushes, then waits for the next packet.
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            self.drive().await?;
        }
    }

    /// Bytes queued and not yet handed to the socket (MQTT bytes plus, for TLS or
    /// WebSocket, what the layers hold).
    pub fn pending_out(&self) -> usize {
        self.wbuf.len()
            + self
                .layers
                .as_ref()
                .map_or(0, |l| l.raw_out.len() + usize::from(l.wants_write()))
    }

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.pending_out() > 0 {
            self.drive().await?;
        }
        Ok(())
    }

    /// Writes as much queued output as the socket takes and reads what has arrived;
    /// returns once either made progress.
    pub async fn drive(&mut self) -> io::Result<Progress> {
        if self.layers.is_some() {
            return self.drive_layered().await;
        }
        let Conn {
            stream,
            rbuf,
            want,
            wbuf,
            ..
        } = self;
        poll_fn(|cx| {
            let mut wrote = false;
            while !wbuf.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, wbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        wbuf.advance(n);
                        wrote = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            match Pin::new(&mut *stream).poll_read(cx, rbuf.spare(*want)) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ))),
                Poll::Ready(Ok(n)) => {
                    rbuf.filled(n);
                    Poll::Ready(Ok(Progress { read: true, wrote }))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending if wrote => Poll::Ready(Ok(Progress { read: false, wrote })),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl Conn {
    /// A connection on the core's epoll set ([`Conn::use_poller`]), driven without a
    /// task by `crate::driver`: sends what is queued, then reads once if the socket may
    /// have bytes (a short read or `EAGAIN` means its queue was empty: the next input
    /// edge says when there are more). Never waits.
    pub fn pump(&mut self) -> io::Result<Progress> {
        let Conn {
            rbuf,
            want,
            wbuf,
            polled,
            rx_stamps,
            rx_ns,
            rx_cap,
            ..
        } = self;
        let io = polled.as_ref().expect("a polled connection");
        let mut p = Progress {
            read: false,
            wrote: false,
        };
        while !wbuf.is_empty() {
            match io.send(wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    wbuf.advance(n);
                    p.wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if io.poller.readable(io.key) {
            let spare = rbuf.spare(*want);
            let len = match *rx_cap {
                0 => spare.len(),
                cap => cap.min(spare.len()),
            };
            let spare = &mut spare[..len];
            let room = spare.len();
            let mut drained = false;
            let r = if *rx_stamps {
                io.recv_stamped(spare).map(|s| {
                    if let Some((sec, nsec)) = s.stamp {
                        *rx_ns = Some(crate::payload::from_realtime(sec, nsec));
                    }
                    drained = s.inq == Some(0);
                    s.len
                })
            } else {
                io.recv(spare)
            };
            match r {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "broker closed the connection",
                    ))
                }
                Ok(n) => {
                    rbuf.filled(n);
                    // Short, or nothing left queued (TCP_INQ): bytes arriving later raise
                    // a new edge.
                    if n < room || drained {
                        io.poller.clear_readable(io.key);
                    }
                    p.read = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.poller.clear_readable(io.key),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(p)
    }

    /// A polled connection: the next [`Conn::pump`] tries a read even without an input
    /// edge (bytes below the socket's low mark raise none).
    pub fn may_read(&self) {
        if let Some(io) = &self.polled {
            io.poller.set_readable(io.key);
        }
    }

    /// The key of a polled connection in its core's epoll set.
    pub fn poll_key(&self) -> Option<u32> {
        self.polled.as_ref().map(|p| p.key)
    }

    /// [`Conn::drive`] through TLS / WebSocket: MQTT bytes are pushed down the layers
    /// while less than a write chunk waits for the socket (so publishers still see
    /// back-pressure in `wbuf`), socket bytes are decoded up into the read buffer.
    async fn drive_layered(&mut self) -> io::Result<Progress> {
        let Conn {
            stream,
            rbuf,
            wbuf,
            layers,
            raw_in,
            ..
        } = self;
        let l = layers.as_mut().expect("layered");
        poll_fn(|cx| {
            let mut wrote = false;
            loop {
                if l.raw_out.len() < WRITE_CHUNK {
                    l.encode(wbuf)?;
                }
                if l.raw_out.is_empty() {
                    break;
                }
                match Pin::new(&mut *stream).poll_write(cx, &l.raw_out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        l.raw_out.advance(n);
                        wrote = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            match Pin::new(&mut *stream).poll_read(cx, raw_in) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ))),
                Poll::Ready(Ok(n)) => {
                    l.decode(&raw_in[..n], rbuf)?;
                    Poll::Ready(Ok(Progress { read: true, wrote }))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending if wrote => Poll::Ready(Ok(Progress { read: false, wrote })),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Error if the (single) subscription was refused.
pub fn check_suback(ack: &ringmq_codec::SubAck) -> io::Result<()> {
    let code = ack.reasons.first().map(|r| *r as u8).unwrap_or(0x80);
    if code >= 0x80 {
        return Err(invalid(format!("SUBACK refused: 0x{code:02x}")));
    }
    Ok(())
}

/// A PUBLISH found in place by [`Conn::peek_publish`].
#[derive(Debug, Clone)]
pub struct RawPublish {
    pub frame_len: usize,
    /// Type and flags (DUP, QoS, RETAIN).
    pub first_byte: u8,
    pub topic: std::ops::Range<usize>,
    pub qos: u8,
    pub packet_id: Option<PacketId>,
    pub payload: std::ops::Range<usize>,
}

/// The four publish acknowledgement kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}
