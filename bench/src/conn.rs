//! One MQTT client connection over a glommio `TcpStream`.
//!
//! The connection owns its buffers and framing: callers queue packets (or append
//! pre-encoded bytes to [`Conn::wbuf`]) and pull decoded packets with
//! [`Conn::next_packet`]. [`Conn::drive`] writes what is queued and reads what has
//! arrived in one task, so a publisher can keep writing while acknowledgements come back.

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use ringmq_codec::{
    ConnAck, Connect, ConnectProperties, Decoder, Disconnect, DisconnectProperties, MqttString,
    Packet, PacketId, ProtocolVersion, PubResp, PubRespProperties, QoS, ReasonCode, RetainHandling,
    Subscribe, SubscribeProperties, SubscriptionOptions, TopicFilter,
};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// Bytes read per syscall.
const READ_CHUNK: usize = 64 * 1024;
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
    rbuf: BytesMut,
    scratch: Box<[u8]>,
    /// Bytes waiting to be written; publishers append pre-encoded frames here.
    pub wbuf: BytesMut,
    decoder: Decoder,
    pub version: ProtocolVersion,
}

impl Conn {
    /// TCP connect with `TCP_NODELAY`.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, Duration::from_secs(10)).await?;
        stream.set_nodelay(true)?;
        let mut decoder = Decoder::new(MAX_PACKET);
        decoder.set_version(version);
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder,
            version,
        })
    }

    /// Wraps a stream accepted by the relay fixture; the version is learnt from CONNECT.
    pub fn accepted(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::new(MAX_PACKET),
            version: ProtocolVersion::V5,
        })
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
            will: None,
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

    /// Queues PUBACK / PUBREC / PUBREL / PUBCOMP.
    pub fn queue_ack(&mut self, kind: AckKind, id: PacketId) -> io::Result<()> {
        let r = PubResp {
            packet_id: id,
            reason: ReasonCode::Success,
            properties: PubRespProperties::default(),
        };
        self.queue(&match kind {
            AckKind::PubAck => Packet::PubAck(r),
            AckKind::PubRec => Packet::PubRec(r),
            AckKind::PubRel => Packet::PubRel(r),
            AckKind::PubComp => Packet::PubComp(r),
        })
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
        let b = &self.rbuf[..];
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

    /// Bytes read and not yet consumed.
    pub fn read_buf(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops `n` consumed bytes from the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }

    /// The next whole packet already read, if any.
    #[inline]
    pub fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        self.decoder
            .decode(&mut self.rbuf)
            .map_err(|e| invalid(format!("decode: {e:?}")))
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

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            self.drive().await?;
        }
        Ok(())
    }

    /// Writes as much queued output as the socket takes and reads what has arrived;
    /// returns once either made progress.
    pub async fn drive(&mut self) -> io::Result<Progress> {
        let Conn {
            stream,
            rbuf,
            scratch,
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
            match Pin::new(&mut *stream).poll_read(cx, scratch) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ))),
                Poll::Ready(Ok(n)) => {
                    rbuf.extend_from_slice(&scratch[..n]);
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
