//! Our own MQTT client on `ringmq_codec`: sends well-formed packets through the codec's encoder
//! and hand-built bytes for malformed ones, and reads the broker's answers with the codec's
//! decoder, so tests can check the exact packet and reason code the spec requires.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    ConnAck, Connect, ConnectProperties, Decoder, Packet, ProtocolVersion, PubResp,
    PubRespProperties, Publish, PublishProperties, QoS, ReasonCode, Subscribe, SubscribeProperties,
    SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Proto, WAIT};

/// What one read from the broker gave.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // test code: one value at a time
pub enum RawEv {
    Packet(Packet),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing within the time given.
    Timeout,
    /// The broker sent bytes our decoder rejects.
    Garbage(String),
}

/// A byte stream to the broker: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// TLS on `tcp` when the harness runs over TLS (`tls.rs`), WebSocket (or
/// WebSocket in TLS) when it runs over `ws`/`wss` (`ws.rs`), else `tcp` itself.
pub async fn over_transport(tcp: TcpStream) -> Box<dyn Stream> {
    if super::ws::enabled() {
        let addr = tcp.peer_addr().expect("peer address");
        if super::ws::secure() {
            let tls = super::tls::connect(tcp).await.expect("TLS handshake");
            super::ws::client_stream(tls, addr).await
        } else {
            super::ws::client_stream(tcp, addr).await
        }
    } else if super::tls::enabled() {
        Box::new(super::tls::connect(tcp).await.expect("TLS handshake"))
    } else {
        Box::new(tcp)
    }
}

/// A raw connection to the broker.
pub struct Raw {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    dec: Decoder,
    pub version: ProtocolVersion,
}

pub fn version(p: Proto) -> ProtocolVersion {
    match p {
        Proto::V4 => ProtocolVersion::V3_1_1,
        Proto::V5 => ProtocolVersion::V5,
    }
}

pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("packet id is non-zero")
}

pub fn topic(s: &str) -> TopicName {
    TopicName::try_from(s).expect("valid topic name")
}

pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::try_from(s).expect("valid topic filter")
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A CONNECT for `id` (keep alive 30 s, no will, no credentials).
pub fn connect_packet(v: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        protocol: v,
        clean_start: clean,
        keep_alive: 30,
        client_id: id.try_into().expect("valid client id"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A PUBLISH (packet id `pid` for QoS > 0).
pub fn publish_packet(t: &str, q: u8, retain: bool, packet_id: u16, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos: qos(q),
        retain,
        topic: topic(t),
        packet_id: (q > 0).then(|| pid(packet_id)),
        properties: PublishProperties::default().into(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn subscribe_packet(packet_id: u16, f: &str, q: u8) -> Subscribe {
    Subscribe {
        packet_id: pid(packet_id),
        filters: vec![(filter(f), SubscriptionOptions::with_qos(qos(q)))],
        properties: SubscribeProperties::default(),
    }
}

pub fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id: pid(packet_id),
        reason: ReasonCode::Success,
        properties: PubRespProperties::default(),
    }
}

impl Raw {
    /// Opens a TCP connection (no MQTT yet).
    pub async fn open(addr: SocketAddr, v: ProtocolVersion) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect within 5 s")
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        Raw::on(over_transport(stream).await, v)
    }

    /// Opens a TCP connection with a small receive buffer (a client that reads slowly or not
    /// at all fills the broker's side quickly).
    pub async fn open_small_rcvbuf(addr: SocketAddr, v: ProtocolVersion, rcvbuf: u32) -> Raw {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(WAIT, sock.connect(addr))
            .await
            .expect("TCP connect within 5 s")
            .expect("TCP connect");
        Raw::on(over_transport(stream).await, v)
    }

    /// Opens a TLS connection presenting the client certificate `pair` (mTLS; no MQTT yet).
    pub async fn open_tls_with_cert(
        addr: SocketAddr,
        v: ProtocolVersion,
        pair: &super::tls::Pair,
    ) -> Raw {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect within 5 s")
            .expect("TCP connect");
        let tls = super::tls::connect_with_cert(tcp, pair)
            .await
            .expect("TLS handshake with a client certificate");
        Raw::on(Box::new(tls), v)
    }

    /// A client of protocol `v` on a connected stream.
    fn on(stream: Box<dyn Stream>, v: ProtocolVersion) -> Raw {
        let mut dec = Decoder::new(u32::MAX);
        dec.set_version(v);
        Raw {
            stream,
            buf: BytesMut::with_capacity(4096),
            dec,
            version: v,
        }
    }

    /// A clean-session subscriber to `filter` at QoS 0 on a 4 KiB receive buffer, which the
    /// caller then stops reading: the broker's side of it fills quickly (slow consumers).
    pub async fn stalled_subscriber(
        addr: SocketAddr,
        v: ProtocolVersion,
        id: &str,
        filter: &str,
    ) -> Raw {
        let mut r = Raw::open_small_rcvbuf(addr, v, 4096).await;
        r.send(&Packet::Connect(Box::new(connect_packet(v, id, true))))
            .await;
        assert!(matches!(
            r.expect_packet("CONNACK").await,
            Packet::ConnAck(_)
        ));
        r.send(&Packet::Subscribe(subscribe_packet(1, filter, 0)))
            .await;
        assert!(matches!(r.expect_packet("SUBACK").await, Packet::SubAck(_)));
        r
    }

    /// Opens, sends CONNECT and expects a successful CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        v: ProtocolVersion,
        id: &str,
        clean: bool,
    ) -> (Raw, ConnAck) {
        Raw::connect_with(addr, connect_packet(v, id, clean)).await
    }

    pub async fn connect_with(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::open(addr, c.protocol).await;
        raw.send(&Packet::Connect(Box::new(c))).await;
        match raw.recv(WAIT).await {
            RawEv::Packet(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::Success, "CONNACK refused: {ack:?}");
                (raw, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    /// Writes raw bytes; a write error (the broker already closed) is ignored.
    pub async fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b).await;
        let _ = self.stream.flush().await;
    }

    /// Next packet from the broker within `within`.
    pub async fn recv(&mut self, within: Duration) -> RawEv {
        let end = Instant::now() + within;
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(p)) => return RawEv::Packet(p),
                Ok(None) => {}
                Err(e) => return RawEv::Garbage(format!("{e:?}")),
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RawEv::Timeout;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return RawEv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return RawEv::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Raw bytes, bypassing the decoder: `Some(empty)` on close, `None` on timeout.
    pub async fn read_raw(&mut self, within: Duration) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            return Some(self.buf.split().to_vec());
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Err(_) => None,
            Ok(Ok(n)) => Some(chunk[..n].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
        }
    }

    /// Next packet, skipping PINGRESP; panics on close or timeout.
    pub async fn expect_packet(&mut self, what: &str) -> Packet {
        loop {
            match self.recv(WAIT).await {
                RawEv::Packet(Packet::PingResp) => continue,
                RawEv::Packet(p) => return p,
                other => panic!("expected a packet ({what}), got {other:?}"),
            }
        }
    }

    /// Next packet of any kind; panics on close or timeout.
    pub async fn expect_any(&mut self, what: &str) -> Packet {
        match self.recv(WAIT).await {
            RawEv::Packet(p) => p,
            other => panic!("expected a packet ({what}), got {other:?}"),
        }
    }

    /// Next PUBLISH (other packets are skipped); panics after 5 s.
    pub async fn expect_publish(&mut self, what: &str) -> Publish {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                RawEv::Packet(Packet::Publish(p)) => return p,
                RawEv::Packet(_) => continue,
                other => panic!("expected PUBLISH ({what}), got {other:?}"),
            }
        }
    }

    /// Reads until the broker closes the connection (within `within`, else panics); returns
    /// the packets it sent before closing (e.g. CONNACK with an error, DISCONNECT).
    pub async fn expect_closed(&mut self, within: Duration, what: &str) -> Vec<Packet> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                RawEv::Packet(p) => got.push(p),
                RawEv::Closed => return got,
                RawEv::Garbage(e) => panic!("undecodable bytes from broker ({what}): {e}"),
                RawEv::Timeout => {
                    panic!("broker did not close the connection ({what}); got {got:?}")
                }
            }
        }
    }

    /// Expects the broker to close the connection, and (v5) that the last packet it sent, if
    /// any, is a DISCONNECT with `reason`; returns that DISCONNECT reason.
    pub async fn expect_disconnect(
        &mut self,
        reason: ReasonCode,
        what: &str,
    ) -> Option<ReasonCode> {
        let got = self.expect_closed(WAIT, what).await;
        let last = got.iter().rev().find_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason),
            _ => None,
        });
        if let Some(r) = last {
            assert_eq!(r, reason, "DISCONNECT reason ({what})");
        }
        last
    }

    /// Asserts the connection stays open and silent for `within`.
    pub async fn expect_silence(&mut self, within: Duration, what: &str) {
        match self.recv(within).await {
            RawEv::Timeout => {}
            other => panic!("expected nothing ({what}), got {other:?}"),
        }
    }
}

/// Hand-built frames for malformed input.
pub mod bytes_of {
    /// Variable Byte Integer (remaining length).
    pub fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    /// A UTF-8 string / binary data field: two-byte length then the bytes.
    pub fn s(b: &[u8]) -> Vec<u8> {
        let mut out = (b.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(b);
        out
    }

    /// One packet: first byte, remaining length, body.
    pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(varint(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// A CONNECT: protocol `name`/`level`, connect flags, keep alive, client id; for level 5 an
    /// empty property block (or `props` when given) follows the keep alive.
    pub fn connect(
        name: &str,
        level: u8,
        flags: u8,
        keep_alive: u16,
        id: &[u8],
        props: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = s(name.as_bytes());
        body.push(level);
        body.push(flags);
        body.extend_from_slice(&keep_alive.to_be_bytes());
        if level == 5 {
            let p = props.unwrap_or(&[]);
            body.extend(varint(p.len()));
            body.extend_from_slice(p);
        }
        body.extend(s(id));
        frame(0x10, &body)
    }

    /// A clean CONNECT for protocol level 4 or 5.
    pub fn connect_ok(level: u8, id: &str) -> Vec<u8> {
        connect("MQTT", level, 0x02, 30, id.as_bytes(), None)
    }

    /// A PUBLISH with arbitrary first byte; topic raw; packet id when `pid` is Some; v5 props.
    pub fn publish(
        first: u8,
        topic: &[u8],
        pid: Option<u16>,
        props: Option<&[u8]>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = s(topic);
        if let Some(p) = pid {
            body.extend_from_slice(&p.to_be_bytes());
        }
        if let Some(p) = props {
            body.extend(varint(p.len()));
            body.extend_from_slice(p);
        }
        body.extend_from_slice(payload);
        frame(first, &body)
    }

    /// A SUBSCRIBE with one filter and options byte; v5 adds an empty property block.
    pub fn subscribe(first: u8, pid: u16, filter: &[u8], options: u8, v5: bool) -> Vec<u8> {
        let mut body = pid.to_be_bytes().to_vec();
        if v5 {
            body.push(0);
        }
        body.extend(s(filter));
        body.push(options);
        frame(first, &body)
    }
}
