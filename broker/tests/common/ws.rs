//! Our own WebSocket client (RFC 6455, client side) for bad and edge-case
//! input over `ws://`: the upgrade request byte for byte, frames built by
//! hand (masked or not, any opcode, split anywhere), and the server's frames
//! read back exactly. Well-behaved WebSocket clients in tests are ones we
//! did not write (paho-mqtt, MQTT.js in Chromium, rumqttc's websocket transport).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{Decoder, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// Whether the harness runs its clients over WebSocket
/// (`RINGMQ_TEST_TRANSPORT=ws`, or `wss` for WebSocket inside TLS).
pub fn enabled() -> bool {
    std::env::var("RINGMQ_TEST_TRANSPORT").is_ok_and(|v| v == "ws" || v == "wss")
}

/// `RINGMQ_TEST_TRANSPORT=wss`.
pub fn secure() -> bool {
    std::env::var("RINGMQ_TEST_TRANSPORT").is_ok_and(|v| v == "wss")
}

/// The harness's WebSocket listener: `ws://127.0.0.1:0/mqtt`, or `wss://` with
/// the shared test PKI's server certificate.
pub fn listener() -> ringmq_shard::config::Listener {
    use ringmq_shard::config::{Listener, Transport};
    let mut l = Listener::mqtt("127.0.0.1:0".parse().unwrap());
    if secure() {
        l.transport = Transport::Wss {
            path: "/mqtt".into(),
        };
        l.tls = super::tls::Pki::shared().server_files();
    } else {
        l.transport = Transport::Ws {
            path: "/mqtt".into(),
        };
    }
    l
}

/// The URL of the harness's WebSocket listener at `addr`.
pub fn url(addr: SocketAddr) -> String {
    let scheme = if secure() { "wss" } else { "ws" };
    format!("{scheme}://{addr}/mqtt")
}

/// rumqttc's WebSocket transport for the harness (`ws`, or `wss` trusting the test CA).
pub fn rumqttc_transport() -> rumqttc::Transport {
    if secure() {
        let cfg = super::tls::Pki::shared().client_config(None);
        rumqttc::Transport::wss_with_config(rumqttc::TlsConfiguration::Rustls(cfg))
    } else {
        rumqttc::Transport::Ws
    }
}

/// Upgrades `stream` (TCP, or TLS over it) to a WebSocket with subprotocol
/// `mqtt`, by async-tungstenite (a client we did not write): each write is one
/// binary message, reads yield the binary messages' bytes.
pub async fn client_stream<S>(stream: S, addr: SocketAddr) -> Box<dyn super::raw::Stream>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url(addr).into_client_request().expect("ws request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, resp) = async_tungstenite::tokio::client_async(req, stream)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..]),
        "[MQTT-6.0.0-4] the server answers the subprotocol mqtt"
    );
    Box::new(ws_stream_tungstenite::WsStream::new(ws))
}

/// The RFC 6455 1.3 sample key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A well-formed upgrade request for `path` offering `protocols`.
pub fn request(path: &str, protocols: Option<&str>) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocols {
        r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// A client frame; `mask: None` sends it unmasked (a protocol error).
pub fn frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        f.push(m | len as u8);
    } else if len <= 0xFFFF {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A masked binary frame (what a good client sends).
pub fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, 0x2, payload, Some(MASK))
}

/// What one read of server frames gave.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEv {
    /// A frame: opcode and payload.
    Frame(u8, Vec<u8>),
    /// The TCP connection closed.
    Closed,
    Timeout,
}

/// A raw WebSocket connection.
pub struct WsRaw {
    pub stream: TcpStream,
    buf: BytesMut,
    mqtt: BytesMut,
    dec: Decoder,
}

impl WsRaw {
    /// Opens TCP, sends `req` and reads the response head. Returns the
    /// connection and the head (status line and headers).
    pub async fn open_with(addr: SocketAddr, req: &[u8]) -> (WsRaw, String) {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect within 5 s")
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        stream.write_all(req).await.expect("send request");
        let mut buf = BytesMut::new();
        let end = Instant::now() + WAIT;
        let head = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = buf.split_to(i + 4);
                break String::from_utf8_lossy(&head).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break String::from_utf8_lossy(&buf).into_owned(),
            }
        };
        let mut dec = Decoder::new(u32::MAX);
        dec.set_version(ProtocolVersion::V3_1_1);
        (
            WsRaw {
                stream,
                buf,
                mqtt: BytesMut::new(),
                dec,
            },
            head,
        )
    }

    /// Opens and upgrades on `path` with subprotocol `mqtt`; panics unless 101.
    pub async fn open(addr: SocketAddr, path: &str, v: ProtocolVersion) -> WsRaw {
        let (mut ws, head) = WsRaw::open_with(addr, request(path, Some("mqtt")).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        assert!(
            head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
        ws.dec.set_version(v);
        ws
    }

    /// Sends raw bytes (frames built by the caller); errors ignored (the broker may have closed).
    pub async fn send_raw(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b).await;
    }

    /// Sends an MQTT packet in one masked binary frame.
    pub async fn send(&mut self, p: &Packet, v: ProtocolVersion) {
        let mut out = BytesMut::new();
        p.encode(v, &mut out).expect("encode");
        self.send_raw(&binary(&out)).await;
    }

    /// The next server frame within `within`. Checks the RFC 6455 5.1 rule
    /// that server frames are unmasked.
    pub async fn frame(&mut self, within: Duration) -> WsEv {
        let end = Instant::now() + within;
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    l => (l as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let op = self.buf[0] & 0x0F;
                    let f = self.buf.split_to(at + len);
                    return WsEv::Frame(op, f[at..].to_vec());
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WsEv::Timeout;
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return WsEv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return WsEv::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next MQTT packet carried in binary frames; panics on anything else.
    pub async fn packet(&mut self, what: &str) -> Packet {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(p) = self.dec.decode(&mut self.mqtt).expect("decodable") {
                return p;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.frame(left).await {
                WsEv::Frame(0x2, payload) => self.mqtt.extend_from_slice(&payload),
                other => panic!("expected a binary frame ({what}), got {other:?}"),
            }
        }
    }

    /// Reads until the server closes TCP; returns the Close frame's code
    /// (None if it sent none) and the frames before it.
    pub async fn close_code(&mut self, what: &str) -> (Option<u16>, Vec<(u8, Vec<u8>)>) {
        let mut before = Vec::new();
        let mut code = None;
        loop {
            match self.frame(WAIT).await {
                WsEv::Frame(0x8, p) => {
                    code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                }
                WsEv::Frame(op, p) => before.push((op, p)),
                WsEv::Closed => return (code, before),
                WsEv::Timeout => panic!("server did not close ({what}); frames: {before:?}"),
            }
        }
    }
}
