//! A connection's transport stack: socket bytes in, MQTT bytes out, and back.
//!
//! ```text
//!   read:  socket ──recv──▶ [TLS decrypt] ──▶ [WebSocket unframe] ──▶ Link's inbuf ──▶ Decoder
//!   write: ConnOut.buf ──▶ [WebSocket frame] ──▶ [TLS encrypt] ──send──▶ socket
//! ```
//!
//! Everything above the stack (framing, the handshake's CONNECT, sessions,
//! handlers) sees MQTT bytes only and is the same for every transport.
//! Everything below it is the [`Wire`]: a non-blocking `recv`/`send` on one
//! descriptor, today `poller::Io`; another I/O backend implements `Wire` and
//! nothing above changes.
//!
//! Layers sit in a fixed order. The WebSocket layer goes after TLS decrypt on
//! read and before TLS encrypt on write: a `wss` connection's WebSocket frames
//! travel inside TLS records. During the handshake phase (before CONNECT) each
//! layer finishes its own handshake first, TLS then the HTTP upgrade; their
//! answers (ServerHello, the 101 response) leave through [`Stack::flush`].
//!
//! The WebSocket layer (`ws.rs`) slots in as further variants (`Ws`, and
//! `Wss` holding both layers): its `input` goes where `Tls` appends
//! plaintext to `mqtt`, its framing before `TlsLayer::encrypt`.
//!
//! Plain TCP has no layer ([`Stack::Plain`]): its read and write are the
//! direct `recv` into the shard's scratch buffer and `send` from the
//! outbound buffer, one branch away from what they were without a stack.
//!
//! A stack is `Send`: it moves with its socket to the home shard after CONNECT.

use super::tls::fault;
use super::tls_conn::TlsLayer;
use super::ws::WsLayer;
use crate::stats::CloseReason;
use bytes::{Buf, BytesMut};
use std::io;

/// The socket below the stack: the one narrow seam to the I/O backend.
pub(crate) trait Wire {
    /// Non-blocking read; `Ok(0)` is end of stream, `WouldBlock` nothing there.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Non-blocking write; `WouldBlock` when the socket takes nothing now.
    fn send(&self, buf: &[u8]) -> io::Result<usize>;
    /// Non-blocking write of the first `n` bytes of `buf`, which leave
    /// `buf` (advanced past what was taken). A wire that owns its sends
    /// until they complete (io_uring) takes the bytes themselves, no copy.
    fn send_from(&self, buf: &mut BytesMut, n: usize) -> io::Result<usize> {
        let k = self.send(&buf[..n])?;
        buf.advance(k);
        Ok(k)
    }
    /// Non-blocking read of at most `scratch.len()` bytes appended to
    /// `dst`, through `scratch` unless the wire holds them already.
    fn recv_append(&self, scratch: &mut [u8], dst: &mut BytesMut) -> io::Result<usize> {
        let n = self.recv(scratch)?;
        dst.extend_from_slice(&scratch[..n]);
        Ok(n)
    }
}

impl Wire for super::poller::Io {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        super::poller::Io::recv(self, buf)
    }
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        super::poller::Io::send(self, buf)
    }
    fn send_from(&self, buf: &mut BytesMut, n: usize) -> io::Result<usize> {
        super::poller::Io::send_from(self, buf, n)
    }
    fn recv_append(&self, scratch: &mut [u8], dst: &mut BytesMut) -> io::Result<usize> {
        // io_uring: the received bytes are in the ring's buffers already;
        // they go to `dst` with one copy.
        if let Some(r) = self.recv_buffered(dst, scratch.len()) {
            return r;
        }
        let n = self.recv(scratch)?;
        dst.extend_from_slice(&scratch[..n]);
        Ok(n)
    }
}

/// What the layers of one connection hold.
pub(crate) enum Stack {
    /// MQTT over TCP: bytes pass straight between socket and buffers.
    Plain,
    /// MQTT inside TLS.
    Tls(Box<TlsLayer>),
    /// MQTT in WebSocket binary frames (`ws://`).
    Ws(Box<WsLayer>),
    /// WebSocket inside TLS (`wss://`).
    Wss(Box<(TlsLayer, WsLayer)>),
}

/// One read from the socket through the stack.
#[derive(Debug)]
pub(crate) struct Read {
    /// Bytes the socket gave (0: end of stream).
    pub wire: usize,
}

impl Stack {
    /// Reads once from `wire` into `scratch` and appends the MQTT bytes it
    /// carried to `mqtt`. `WouldBlock` when the socket had nothing.
    #[inline]
    pub fn read(
        &mut self,
        wire: &impl Wire,
        scratch: &mut [u8],
        mqtt: &mut BytesMut,
    ) -> io::Result<Read> {
        match self {
            Stack::Plain => Ok(Read {
                wire: wire.recv_append(scratch, mqtt)?,
            }),
            Stack::Tls(t) => {
                if t.at_eof() {
                    return Ok(Read { wire: 0 });
                }
                let n = wire.recv(scratch)?;
                t.decrypt(&scratch[..n], mqtt)?;
                Ok(Read { wire: n })
            }
            Stack::Ws(w) => {
                if let Some(end) = w.end() {
                    return Err(fault(end));
                }
                let n = wire.recv(scratch)?;
                self.feed(&scratch[..n], mqtt)?;
                Ok(Read { wire: n })
            }
            Stack::Wss(tw) => {
                if let Some(end) = tw.1.end() {
                    return Err(fault(end));
                }
                if tw.0.at_eof() {
                    return Ok(Read { wire: 0 });
                }
                let n = wire.recv(scratch)?;
                self.feed(&scratch[..n], mqtt)?;
                Ok(Read { wire: n })
            }
        }
    }

    /// Takes wire bytes that were read before the stack (those right behind
    /// a PROXY header) as if they had just come from the socket.
    pub fn feed(&mut self, wire: &[u8], mqtt: &mut BytesMut) -> io::Result<()> {
        match self {
            Stack::Plain => {
                mqtt.extend_from_slice(wire);
                Ok(())
            }
            Stack::Tls(t) => t.decrypt(wire, mqtt),
            Stack::Ws(w) => {
                w.feed(wire, mqtt);
                Ok(())
            }
            Stack::Wss(tw) => {
                // WebSocket frames travel inside TLS records: decrypt, then unframe.
                let mut plain = BytesMut::new();
                tw.0.decrypt(wire, &mut plain)?;
                tw.1.feed(&plain, mqtt);
                Ok(())
            }
        }
    }

    /// A layer saw the end of its stream (TLS close_notify): the next
    /// [`Stack::read`] returns end of stream without asking the socket.
    #[inline]
    pub fn at_eof(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.at_eof(),
            // The client's Close or a refusal: reported by the next read.
            Stack::Ws(w) => w.end().is_some(),
            Stack::Wss(tw) => tw.0.at_eof() || tw.1.end().is_some(),
        }
    }

    /// Bytes the layers hold of input not yet handed on as MQTT bytes (the
    /// tail of a TLS record): part of the connection's partial-packet share.
    /// The WebSocket framer holds at most a 14-byte header inline.
    #[inline]
    pub fn held(&self) -> usize {
        match self {
            Stack::Plain | Stack::Ws(_) => 0,
            Stack::Tls(t) => t.held(),
            Stack::Wss(tw) => tw.0.held(),
        }
    }

    /// A layer is still in its own handshake (TLS, the WebSocket upgrade).
    pub fn handshaking(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.handshaking(),
            Stack::Ws(w) => !w.upgraded(),
            Stack::Wss(tw) => tw.0.handshaking() || !tw.1.upgraded(),
        }
    }

    /// The subject CN of a verified client certificate (mTLS).
    pub fn peer_identity(&self) -> Option<String> {
        match self {
            Stack::Plain | Stack::Ws(_) => None,
            Stack::Tls(t) => t.peer_cn(),
            Stack::Wss(tw) => tw.0.peer_cn(),
        }
    }

    /// Queues the layers' goodbye for the last flush: a WebSocket Close
    /// with the code for `reason` (RFC 6455 7.4.1), TLS close_notify.
    pub fn close(&mut self, reason: CloseReason) {
        match self {
            Stack::Plain => {}
            Stack::Tls(t) => t.close(),
            Stack::Ws(w) => w.close(reason),
            Stack::Wss(tw) => {
                tw.1.close(reason);
                wss_pump(&mut tw.0, &mut tw.1);
                tw.0.close();
            }
        }
    }

    /// Writes MQTT bytes; returns how many of them the stack took (the rest
    /// stay in the caller's buffer). Bytes a layer took may still wait in
    /// it for the socket: see [`Stack::pending`]. The promise the caller's
    /// edge-triggered readiness relies on: when not all was taken, or
    /// something is pending afterwards, the socket said `WouldBlock`.
    #[inline]
    pub fn write(&mut self, wire: &impl Wire, mqtt: &[u8]) -> io::Result<usize> {
        match self {
            Stack::Plain => wire.send(mqtt),
            Stack::Tls(t) => {
                // Encrypt once per flush: the whole batch goes into records
                // (16 KiB each) up to the layer's buffer limit, then out.
                // Ciphertext already waiting goes first: returning short with
                // nothing pending would break the promise above.
                let mut taken = 0;
                loop {
                    if !t.flush(wire)? || taken == mqtt.len() {
                        return Ok(taken);
                    }
                    let n = t.encrypt(&mqtt[taken..]);
                    if n == 0 {
                        // Handshaking or closed: nothing to encrypt into.
                        return Ok(taken);
                    }
                    taken += n;
                }
            }
            // One binary frame per flush, not per packet: the whole batch.
            Stack::Ws(w) => {
                if !ws_flush(w, wire)? {
                    return Ok(0);
                }
                w.frame(mqtt);
                ws_flush(w, wire)?;
                Ok(mqtt.len())
            }
            Stack::Wss(tw) => {
                let (t, w) = &mut **tw;
                if !wss_flush(t, w, wire)? {
                    return Ok(0);
                }
                w.frame(mqtt);
                wss_flush(t, w, wire)?;
                Ok(mqtt.len())
            }
        }
    }

    /// [`Stack::write`] of the first `n` bytes of `mqtt`, which leave it:
    /// plain TCP hands them to the wire as they are (on io_uring the send
    /// owns them until its completion, no copy); a layer encodes them into
    /// its own buffer.
    #[inline]
    pub fn write_from(
        &mut self,
        wire: &impl Wire,
        mqtt: &mut BytesMut,
        n: usize,
    ) -> io::Result<usize> {
        if let Stack::Plain = self {
            return wire.send_from(mqtt, n);
        }
        let k = self.write(wire, &mqtt[..n])?;
        mqtt.advance(k);
        Ok(k)
    }

    /// Whether a layer holds bytes the socket has not taken yet.
    #[inline]
    pub fn pending(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.pending(),
            Stack::Ws(w) => !w.out_ref().is_empty(),
            Stack::Wss(tw) => tw.0.pending() || !tw.1.out_ref().is_empty(),
        }
    }

    /// Sends what the layers hold; `Ok(true)` once nothing is left.
    pub fn flush(&mut self, wire: &impl Wire) -> io::Result<bool> {
        match self {
            Stack::Plain => Ok(true),
            Stack::Tls(t) => t.flush(wire),
            Stack::Ws(w) => ws_flush(w, wire),
            Stack::Wss(tw) => wss_flush(&mut tw.0, &mut tw.1, wire),
        }
    }
}

/// Sends the WebSocket layer's bytes; `Ok(true)` once none is left (then
/// its buffer is released: an idle connection holds none).
fn ws_flush(w: &mut WsLayer, wire: &impl Wire) -> io::Result<bool> {
    while !w.out_ref().is_empty() {
        match wire.send(w.out_ref()) {
            Ok(n) => w.out().advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    w.shrink();
    Ok(true)
}

/// Moves the WebSocket layer's bytes into TLS records, as many as it takes.
fn wss_pump(t: &mut TlsLayer, w: &mut WsLayer) -> usize {
    let n = t.encrypt(w.out_ref());
    w.out().advance(n);
    n
}

/// `ws_flush` through TLS: frames into records, records onto the socket.
fn wss_flush(t: &mut TlsLayer, w: &mut WsLayer, wire: &impl Wire) -> io::Result<bool> {
    loop {
        let moved = if w.out_ref().is_empty() {
            0
        } else {
            wss_pump(t, w)
        };
        if !t.flush(wire)? {
            return Ok(false);
        }
        if w.out_ref().is_empty() {
            w.shrink();
            return Ok(true);
        }
        if moved == 0 {
            // TLS takes nothing (still in its handshake): wait for it.
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory socket: what it will give, and what it took.
    #[derive(Default)]
    pub(crate) struct Pipe {
        pub inbound: RefCell<Vec<u8>>,
        pub taken: RefCell<Vec<u8>>,
        /// Bytes `send` takes per call (0: all).
        pub chunk: usize,
        /// Bytes `send` takes in all before saying WouldBlock (None: no limit).
        pub budget: std::cell::Cell<Option<usize>>,
    }

    impl Wire for Pipe {
        fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            let mut i = self.inbound.borrow_mut();
            if i.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = i.len().min(buf.len());
            buf[..n].copy_from_slice(&i[..n]);
            i.drain(..n);
            Ok(n)
        }
        fn send(&self, buf: &[u8]) -> io::Result<usize> {
            let mut n = if self.chunk == 0 {
                buf.len()
            } else {
                buf.len().min(self.chunk)
            };
            if let Some(left) = self.budget.get() {
                if left == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                n = n.min(left);
                self.budget.set(Some(left - n));
            }
            self.taken.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    #[test]
    fn plain_passes_bytes_straight_through() {
        let pipe = Pipe {
            chunk: 3,
            ..Default::default()
        };
        pipe.inbound
            .borrow_mut()
            .extend_from_slice(b"\x10\x00hello");
        let mut s = Stack::Plain;
        let mut scratch = [0u8; 4];
        let mut mqtt = BytesMut::new();
        assert_eq!(s.read(&pipe, &mut scratch, &mut mqtt).unwrap().wire, 4);
        assert_eq!(s.read(&pipe, &mut scratch, &mut mqtt).unwrap().wire, 3);
        assert_eq!(&mqtt[..], b"\x10\x00hello");
        let e = s.read(&pipe, &mut scratch, &mut mqtt).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(s.write(&pipe, b"abcdef").unwrap(), 3);
        assert!(!s.pending());
        assert!(s.flush(&pipe).unwrap());
        assert_eq!(&pipe.taken.borrow()[..], b"abc");
    }

    /// A rustls client and our server stack, handshaken over a `Pipe`.
    fn tls_pair() -> (rustls::ClientConnection, Stack, Pipe) {
        use crate::config::{TlsFiles, Transport};
        // One directory per pair: tests run in parallel.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringmq-stack-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cp, kp) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: Some(cp),
            key: Some(kp),
            ..TlsFiles::default()
        };
        let acceptor = super::super::tls::TlsAcceptor::new(&files, &Transport::Mqtts).unwrap();
        let mut stack = Stack::Tls(Box::new(acceptor.accept().unwrap()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let pipe = Pipe::default();
        let mut mqtt = BytesMut::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            stack.feed(&wire, &mut mqtt).unwrap();
            assert!(stack.flush(&pipe).unwrap());
            let out = std::mem::take(&mut *pipe.taken.borrow_mut());
            client.read_tls(&mut &out[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !stack.handshaking() && !client.wants_write() {
                break;
            }
        }
        assert!(!stack.handshaking() && !client.is_handshaking());
        assert!(mqtt.is_empty());
        (client, stack, pipe)
    }

    /// Content types of the TLS records in `wire` (RFC 8446 5.1 headers).
    fn records(wire: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 5 <= wire.len() {
            let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
            out.push((wire[at], len));
            at += 5 + len;
        }
        assert_eq!(at, wire.len(), "whole records");
        out
    }

    #[test]
    fn tls_encrypts_once_per_flush_not_once_per_packet() {
        let (mut client, mut stack, pipe) = tls_pair();
        // 100 small PUBLISHes buffered for one flush: one application data record.
        let mut batch = Vec::new();
        for i in 0..100u8 {
            batch.extend_from_slice(&[0x30, 12, 0, 3, b'a', b'/', b'b', i, 1, 2, 3, 4, 5, 6]);
        }
        assert_eq!(stack.write(&pipe, &batch).unwrap(), batch.len());
        assert!(!stack.pending());
        let wire = std::mem::take(&mut *pipe.taken.borrow_mut());
        let recs = records(&wire);
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].0, 0x17);
        assert_eq!(client_reads(&mut client, &wire), batch);
        // 100 KB: 16 KiB records (64 KiB per encrypt, the stack loops).
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(stack.write(&pipe, &big).unwrap(), big.len());
        let wire = std::mem::take(&mut *pipe.taken.borrow_mut());
        let recs = records(&wire);
        assert_eq!(recs.len(), 7, "{recs:?}");
        assert_eq!(client_reads(&mut client, &wire), big);
    }

    /// What the client decrypts from `wire` (rustls reads a few KiB per `read_tls`).
    fn client_reads(client: &mut rustls::ClientConnection, wire: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        let mut rd = wire;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
            while let Ok(n) = client.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    }

    /// The write promise under a socket that fills: whenever the stack takes less than
    /// offered or holds ciphertext, the socket said WouldBlock; once it drains, everything
    /// arrives intact (a slow TLS subscriber never stalls the connection).
    #[test]
    fn tls_write_under_a_full_socket_keeps_the_promise() {
        let (mut client, mut stack, pipe) = tls_pair();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let mut off = 0;
        let mut rounds = 0;
        while off < big.len() || stack.pending() {
            rounds += 1;
            assert!(rounds < 1000);
            // Alternately a trickle and a gulp; the connection writes whether or not ciphertext
            // is still waiting (as Link::write does with a batch under way).
            pipe.budget
                .set(Some(if rounds % 2 == 0 { 10_000 } else { 150_000 }));
            if off < big.len() {
                let n = stack.write(&pipe, &big[off..]).unwrap();
                off += n;
                if off < big.len() || stack.pending() {
                    assert_eq!(
                        pipe.budget.get(),
                        Some(0),
                        "short only when the socket is full"
                    );
                }
            } else {
                let _ = stack.flush(&pipe);
            }
        }
        let wire = std::mem::take(&mut *pipe.taken.borrow_mut());
        assert_eq!(client_reads(&mut client, &wire), big);
    }

    /// A read that cuts a record keeps only the record's tail (not the read's
    /// allocation), reports it as held (the partial-packet budget counts it),
    /// and holds nothing once the record completes.
    #[test]
    fn tls_holds_only_a_cut_records_tail_and_reports_it() {
        use std::io::Write as _;
        let (mut client, mut stack, _pipe) = tls_pair();
        client.writer().write_all(&[b'm'; 40_000]).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        assert!(wire.len() > 40_000);
        let mut mqtt = BytesMut::new();
        // Two whole 16 KiB records and 100 bytes of the third, in one read.
        let recs = records(&wire);
        assert!(recs.len() >= 3, "{recs:?}");
        let cut = 5 + recs[0].1 + 5 + recs[1].1 + 100;
        stack.feed(&wire[..cut], &mut mqtt).unwrap();
        let held = stack.held();
        assert!((100..=100 + 4096 + 200).contains(&held), "held {held}");
        stack.feed(&wire[cut..], &mut mqtt).unwrap();
        assert_eq!(mqtt.len(), 40_000);
        assert_eq!(stack.held(), 0);
    }

    #[test]
    fn tls_reads_records_cut_anywhere_and_keeps_no_buffer_when_idle() {
        use std::io::Write as _;
        let (mut client, mut stack, _pipe) = tls_pair();
        client.writer().write_all(b"\x10\x00hello mqtt").unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut mqtt = BytesMut::new();
        for chunk in wire.chunks(3) {
            stack.feed(chunk, &mut mqtt).unwrap();
        }
        assert_eq!(&mqtt[..], b"\x10\x00hello mqtt");
        let Stack::Tls(t) = &stack else {
            unreachable!()
        };
        assert!(t.idle(), "no ciphertext buffer held between records");
    }
}
