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

use super::tls::TlsLayer;
use bytes::BytesMut;
use std::io;

/// The socket below the stack: the one narrow seam to the I/O backend.
pub(crate) trait Wire {
    /// Non-blocking read; `Ok(0)` is end of stream, `WouldBlock` nothing there.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Non-blocking write; `WouldBlock` when the socket takes nothing now.
    fn send(&self, buf: &[u8]) -> io::Result<usize>;
}

impl Wire for super::poller::Io {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        super::poller::Io::recv(self, buf)
    }
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        super::poller::Io::send(self, buf)
    }
}

/// What the layers of one connection hold.
pub(crate) enum Stack {
    /// MQTT over TCP: bytes pass straight between socket and buffers.
    Plain,
    /// MQTT inside TLS.
    Tls(Box<TlsLayer>),
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
            Stack::Plain => {
                let n = wire.recv(scratch)?;
                mqtt.extend_from_slice(&scratch[..n]);
                Ok(Read { wire: n })
            }
            Stack::Tls(t) => {
                if t.at_eof() {
                    return Ok(Read { wire: 0 });
                }
                let n = wire.recv(scratch)?;
                t.decrypt(&scratch[..n], mqtt)?;
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
        }
    }

    /// A layer saw the end of its stream (TLS close_notify): the next
    /// [`Stack::read`] returns end of stream without asking the socket.
    #[inline]
    pub fn at_eof(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.at_eof(),
        }
    }

    /// A layer is still in its own handshake (TLS).
    pub fn handshaking(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.handshaking(),
        }
    }

    /// The subject CN of a verified client certificate (mTLS).
    pub fn peer_identity(&self) -> Option<String> {
        match self {
            Stack::Plain => None,
            Stack::Tls(t) => t.peer_cn(),
        }
    }

    /// Queues the layers' goodbye (TLS close_notify) for the last flush.
    pub fn close(&mut self) {
        match self {
            Stack::Plain => {}
            Stack::Tls(t) => t.close(),
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
                let mut taken = 0;
                loop {
                    let n = t.encrypt(&mqtt[taken..]);
                    taken += n;
                    if !t.flush(wire)? || taken == mqtt.len() || n == 0 {
                        return Ok(taken);
                    }
                }
            }
        }
    }

    /// Whether a layer holds bytes the socket has not taken yet.
    #[inline]
    pub fn pending(&self) -> bool {
        match self {
            Stack::Plain => false,
            Stack::Tls(t) => t.pending(),
        }
    }

    /// Sends what the layers hold; `Ok(true)` once nothing is left.
    pub fn flush(&mut self, wire: &impl Wire) -> io::Result<bool> {
        match self {
            Stack::Plain => Ok(true),
            Stack::Tls(t) => t.flush(wire),
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
            let n = if self.chunk == 0 {
                buf.len()
            } else {
                buf.len().min(self.chunk)
            };
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
}
