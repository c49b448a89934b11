//! TLS and WebSocket under a connection: the layers between the MQTT bytes a
//! [`crate::conn::Conn`] queues and reads, and the bytes on the socket.
//!
//! Outbound: MQTT bytes -> WebSocket binary frames (masked, RFC 6455 5.3) -> TLS
//! records -> socket. Inbound the reverse, into the connection's receive buffer. Plain
//! TCP has no layers and keeps the zero-copy path in `conn.rs`.
//!
//! TLS is rustls with the ring provider (a well-kept, audited TLS stack; ring builds with
//! a C compiler alone); the same `ClientConfig` is shared by every connection of a run,
//! so its session cache gives resumed handshakes unless `--no-tls-resume`. The
//! WebSocket client is our own small framing: the opening handshake is one HTTP/1.1
//! request whose answer httparse parses, and the data path is a 2-14 byte header plus a
//! mask, cheaper to own than to adapt a crate's own I/O model to ours. `sha1` and
//! `base64` compute the `Sec-WebSocket-Accept` check (RFC 6455 4.1).

use crate::cli::{BrokerArgs, Transport};
use crate::rbuf::ReadBuf;
use base64::Engine;
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// Where to connect and through which layers: built once per run from [`BrokerArgs`].
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// WebSocket (Host header value, request path).
    pub ws: Option<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Target {
    /// A plain TCP target.
    pub fn tcp(addr: SocketAddr) -> Target {
        Target {
            addr,
            tls: None,
            ws: None,
        }
    }

    /// Resolves the broker address and builds the TLS configuration, if any.
    pub fn from_args(b: &BrokerArgs) -> Result<Target, String> {
        let addr = crate::runner::resolve(&b.host, b.port)?;
        let transport = b.transport();
        let tls = if matches!(transport, Transport::Tls | Transport::Wss) {
            let name = b.sni.clone().unwrap_or_else(|| b.host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("--sni/--host `{name}` is not a TLS server name: {e}"))?;
            Some((Arc::new(client_config(b)?), name))
        } else {
            None
        };
        let ws = matches!(transport, Transport::Ws | Transport::Wss)
            .then(|| (format!("{}:{}", b.host, b.port), b.ws_path.clone()));
        Ok(Target { addr, tls, ws })
    }

    /// `mqtt://`, `mqtts://`, `ws://` or `wss://` with the address (and path).
    pub fn describe(&self) -> String {
        match (&self.tls, &self.ws) {
            (None, None) => format!("mqtt://{}", self.addr),
            (Some(_), None) => format!("mqtts://{}", self.addr),
            (None, Some((_, p))) => format!("ws://{}{p}", self.addr),
            (Some(_), Some((_, p))) => format!("wss://{}{p}", self.addr),
        }
    }

    /// The layers for one new connection; None for plain TCP.
    pub fn layers(&self) -> io::Result<Option<Box<Layers>>> {
        if self.tls.is_none() && self.ws.is_none() {
            return Ok(None);
        }
        let tls = match &self.tls {
            Some((cfg, name)) => Some(
                ClientConnection::new(cfg.clone(), name.clone())
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?,
            ),
            None => None,
        };
        let mut l = Layers {
            tls,
            ws: None,
            raw_out: BytesMut::new(),
            plain_in: Vec::new(),
            mid_out: Vec::new(),
        };
        if let Some((host, path)) = &self.ws {
            let (ws, request) = Ws::new(host, path);
            l.mid_out.extend_from_slice(request.as_bytes());
            l.ws = Some(ws);
        }
        Ok(Some(Box::new(l)))
    }
}

/// rustls client configuration from the broker options: roots from `--ca` (PEM), a
/// client certificate from `--cert`/`--key`, protocol versions from `--tls-version`.
fn client_config(b: &BrokerArgs) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &b.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {ca}: {e}"))?;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("--ca {ca}: {e}"))?;
            roots.add(c).map_err(|e| format!("--ca {ca}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {ca}: no certificate in the file"));
        }
    } else {
        return Err("--tls needs --ca FILE (the broker's CA certificate, PEM)".into());
    }
    // ring, not aws-lc-rs: it builds with a C compiler alone (aws-lc-rs needs cmake and
    // nasm), as the broker's TLS does; deprecated in 0.23.48 only for lacking
    // post-quantum key exchange, which the peers compared here do not offer either.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(name) = &b.tls_suite {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name));
        if provider.cipher_suites.is_empty() {
            return Err(format!(
                "--tls-suite {name}: not offered by the ring provider (e.g. TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256)"
            ));
        }
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = match b.tls_version.as_deref() {
        None => rustls::DEFAULT_VERSIONS,
        Some("1.3") => &[&rustls::version::TLS13],
        Some("1.2") => &[&rustls::version::TLS12],
        Some(v) => return Err(format!("--tls-version {v}: use 1.2 or 1.3")),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut cfg = match (&b.cert, &b.key) {
        (Some(cert), Some(key)) => {
            let pem = std::fs::read(cert).map_err(|e| format!("--cert {cert}: {e}"))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--cert {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert/--key: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".into()),
    };
    if b.no_tls_resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(cfg)
}

/// The layers of one connection.
pub struct Layers {
    tls: Option<ClientConnection>,
    ws: Option<Ws>,
    /// Bytes for the socket.
    pub raw_out: BytesMut,
    /// Inbound bytes after TLS, before WebSocket deframing.
    plain_in: Vec<u8>,
    /// Outbound bytes above TLS: the WebSocket request, frames, pongs.
    mid_out: Vec<u8>,
}

impl Layers {
    /// Moves queued MQTT bytes (all of `app`, once a WebSocket is open) down the layers
    /// into [`Layers::raw_out`], with whatever TLS wants to send.
    pub fn encode(&mut self, app: &mut BytesMut) -> io::Result<()> {
        match &mut self.ws {
            Some(ws) if !ws.open => {} // held until the upgrade is answered
            Some(ws) => {
                if !app.is_empty() {
                    ws.frame(app, &mut self.mid_out);
                    app.clear();
                }
            }
            None => {
                self.mid_out.extend_from_slice(app);
                app.clear();
            }
        }
        match &mut self.tls {
            Some(tls) => {
                if !self.mid_out.is_empty() {
                    tls.writer().write_all(&self.mid_out)?;
                    self.mid_out.clear();
                }
                let mut w = BytesWriter(&mut self.raw_out);
                while tls.wants_write() {
                    tls.write_tls(&mut w)?;
                }
            }
            None => {
                self.raw_out.extend_from_slice(&self.mid_out);
                self.mid_out.clear();
            }
        }
        Ok(())
    }

    /// Takes bytes read from the socket up the layers into `rbuf` (MQTT bytes).
    pub fn decode(&mut self, mut raw: &[u8], rbuf: &mut ReadBuf) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => {
                while !raw.is_empty() {
                    tls.read_tls(&mut raw)?;
                    tls.process_new_packets().map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
                    })?;
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match tls.reader().read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => self.plain_in.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            None => self.plain_in.extend_from_slice(raw),
        }
        match &mut self.ws {
            Some(ws) => ws.decode(&mut self.plain_in, rbuf, &mut self.mid_out),
            None => {
                rbuf.extend(&self.plain_in);
                self.plain_in.clear();
                Ok(())
            }
        }
    }

    /// Whether there is something to push down ([`Layers::encode`] with nothing new).
    pub fn wants_write(&self) -> bool {
        !self.mid_out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether the WebSocket (if any) is open for MQTT bytes.
    pub fn ready(&self) -> bool {
        self.ws.as_ref().is_none_or(|w| w.open)
    }
}

struct BytesWriter<'a>(&'a mut BytesMut);

impl Write for BytesWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// RFC 6455 4.2.2: the GUID appended to the key for `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Client side of one WebSocket.
struct Ws {
    open: bool,
    accept: String,
    /// xorshift64* state for masking keys (seeded from the OS).
    rng: u64,
}

impl Ws {
    /// The state and the opening handshake request (RFC 6455 4.1; MQTT 5 6.0: the
    /// `mqtt` subprotocol).
    fn new(host: &str, path: &str) -> (Ws, String) {
        let mut seed = [0u8; 24];
        getrandom(&mut seed);
        let key = base64::engine::general_purpose::STANDARD.encode(&seed[..16]);
        let accept = accept_for(&key);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        let rng = u64::from_le_bytes(seed[16..24].try_into().expect("8 bytes")) | 1;
        (
            Ws {
                open: false,
                accept,
                rng,
            },
            request,
        )
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*: masking keys only need to be unpredictable to intermediaries
        // reading the stream (RFC 6455 10.3); a per-connection OS seed gives that.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v as u32).to_le_bytes()
    }

    /// One masked binary frame (FIN) carrying `payload` (RFC 6455 5.2; MQTT-6.0.0-1:
    /// binary data frames).
    fn frame(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.control(0x2, payload, out);
    }

    fn control(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(0x80 | opcode);
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask = self.next_mask();
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        mask_in_place(&mut out[start..], mask);
    }

    /// Handshake answer, then frames: binary payloads go to `rbuf`, pings are answered.
    fn decode(
        &mut self,
        input: &mut Vec<u8>,
        rbuf: &mut ReadBuf,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut pos = 0;
        if !self.open {
            let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                if input.len() > 16 * 1024 {
                    return Err(ws_err("WebSocket handshake answer over 16 KiB"));
                }
                return Ok(());
            };
            self.check_answer(&input[..end + 4])?;
            self.open = true;
            pos = end + 4;
        }
        loop {
            let b = &input[pos..];
            if b.len() < 2 {
                break;
            }
            let (fin_op, len7) = (b[0], b[1]);
            if len7 & 0x80 != 0 {
                // RFC 6455 5.1: a server MUST NOT mask frames it sends.
                return Err(ws_err("masked frame from the server"));
            }
            let (len, hdr) = match len7 & 0x7f {
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                    (
                        usize::try_from(n).map_err(|_| ws_err("frame too large"))?,
                        10,
                    )
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if b.len() < hdr + len {
                break;
            }
            let payload = &b[hdr..hdr + len];
            match fin_op & 0x0f {
                0x0 | 0x2 => rbuf.extend(payload),
                0x9 => {
                    let p = payload.to_vec();
                    self.control(0xA, &p, out);
                }
                0xA => {}
                0x8 => return Err(ws_err("WebSocket closed by the server")),
                op => {
                    // MQTT-6.0.0-1: MQTT travels in binary frames only.
                    return Err(ws_err(&format!("unexpected WebSocket opcode {op:#x}")));
                }
            }
            pos += hdr + len;
        }
        input.drain(..pos);
        Ok(())
    }

    fn check_answer(&self, head: &[u8]) -> io::Result<()> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ws_err("partial handshake answer")),
            Err(e) => return Err(ws_err(&format!("handshake answer: {e}"))),
        }
        if resp.code != Some(101) {
            return Err(ws_err(&format!(
                "WebSocket upgrade refused: {} {}",
                resp.code.unwrap_or(0),
                resp.reason.unwrap_or("")
            )));
        }
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
        // RFC 6455 4.1: the client MUST fail the connection if the accept value is wrong.
        if accept.as_deref() != Some(self.accept.as_str()) {
            return Err(ws_err("wrong Sec-WebSocket-Accept"));
        }
        Ok(())
    }
}

fn ws_err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_for(key: &str) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// XORs `data` with the 4-byte mask, 8 bytes at a time.
fn mask_in_place(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let done = data.len() / 8 * 8;
    for (i, b) in data[done..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

fn getrandom(buf: &mut [u8]) {
    // SAFETY: getrandom(2) writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Fall back to the clock: masking keys must only be unpredictable to proxies.
        let t = crate::payload::now_ns() ^ u64::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_mask_and_unmask() {
        let (mut ws, req) = Ws::new("h:1", "/mqtt");
        assert!(req.contains("Sec-WebSocket-Protocol: mqtt"));
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        ws.frame(&payload, &mut out);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 126);
        let mask = [out[4], out[5], out[6], out[7]];
        let mut body = out[8..].to_vec();
        mask_in_place(&mut body, mask);
        assert_eq!(body, payload);
    }

    #[test]
    fn server_frames_deframe_after_the_handshake() {
        let (mut ws, req) = Ws::new("h:1", "/mqtt");
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let mut input = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            accept_for(key)
        )
        .into_bytes();
        input.extend_from_slice(&[0x82, 3, 1, 2, 3, 0x89, 1, 9, 0x02, 2]);
        let mut rbuf = ReadBuf::default();
        let mut out = Vec::new();
        ws.decode(&mut input, &mut rbuf, &mut out).unwrap();
        assert!(ws.open);
        assert_eq!(rbuf.data(), &[1, 2, 3]);
        assert_eq!(out[0], 0x8A, "ping answered with a pong");
        assert_eq!(input, [0x02, 2], "a partial frame waits");
        input.extend_from_slice(&[4, 5]);
        ws.decode(&mut input, &mut rbuf, &mut out).unwrap();
        assert_eq!(rbuf.data(), &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn wrong_accept_fails_the_connection() {
        let (mut ws, _) = Ws::new("h:1", "/mqtt");
        let mut input = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n".to_vec();
        let mut rbuf = ReadBuf::default();
        assert!(ws.decode(&mut input, &mut rbuf, &mut Vec::new()).is_err());
    }
}
