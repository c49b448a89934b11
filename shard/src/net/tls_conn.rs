//! One connection's TLS state: rustls's *unbuffered* server connection, with
//! the ciphertext buffers owned here so that an idle connection holds none.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB read buffer for the
//! life of a connection, used or not (docs/connection-memory.md). Here the
//! ciphertext read from the socket lands in the shard's scratch buffer; only
//! the tail of a record cut by the read is kept (`incoming`), and ciphertext
//! waiting for the socket (`outgoing`) exists only until it is sent. Each
//! buffer is dropped as soon as it is empty.
//!
//! The state machine (`process_tls_records`) is driven from two places:
//! `decrypt` (bytes in: handshake answers are encoded, application data is
//! appended to the MQTT buffer) and `encrypt` (MQTT bytes out, in as few
//! records as the batch needs).

use super::stack::Wire;
use super::tls::{fault, reason_for};
use crate::stats::CloseReason;
use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use std::io;

/// Plaintext encrypted per `encrypt` call at most; the rest waits for the
/// socket to take what is pending (back-pressure, bounded memory).
const ENCRYPT_CHUNK: usize = 64 * 1024;
/// Spare room a kept record tail may carry before it is copied into an
/// allocation of its own size.
const TAIL_SLACK: usize = 4096;

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    conn: UnbufferedServerConnection,
    /// Ciphertext read but not yet a whole record (no allocation while empty).
    incoming: BytesMut,
    /// Ciphertext for the socket (no allocation while empty).
    outgoing: BytesMut,
    /// The peer sent close_notify: the stream ends after what it carried.
    eof: bool,
    /// The peer's first byte was seen.
    started: bool,
}

/// Grows `buf` so that `size` more bytes fit after what it holds; returns
/// where they start.
fn room(buf: &mut BytesMut, size: usize) -> usize {
    let at = buf.len();
    buf.resize(at + size, 0);
    at
}

/// What one turn of the state machine did.
enum Turn {
    /// Something happened; turn again.
    Again,
    /// Nothing more to do until more bytes come (or may be written).
    Idle,
}

impl TlsLayer {
    pub fn new(conn: UnbufferedServerConnection) -> Self {
        TlsLayer {
            conn,
            incoming: BytesMut::new(),
            outgoing: BytesMut::new(),
            eof: false,
            started: false,
        }
    }

    /// Still in the handshake.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer ended the TLS stream (close_notify).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// One turn of the state machine over what `incoming` holds: handshake
    /// messages to send are encoded into `outgoing`, application data goes to
    /// `mqtt`.
    fn turn(&mut self, mqtt: &mut BytesMut) -> Result<Turn, CloseReason> {
        let handshaking = self.conn.is_handshaking();
        let status = self.conn.process_tls_records(&mut self.incoming[..]);
        let discard = status.discard;
        let turn = match status.state {
            Err(e) => Err(reason_for(&e, handshaking)),
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(rec) = r.next_record() {
                    match rec {
                        Ok(rec) => mqtt.extend_from_slice(rec.payload),
                        Err(e) => return Err(reason_for(&e, false)),
                    }
                }
                Ok(Turn::Again)
            }
            Ok(ConnectionState::ReadEarlyData(mut r)) => {
                // Not offered (max_early_data_size is 0); drained should it come.
                while let Some(rec) = r.next_record() {
                    if let Ok(rec) = rec {
                        mqtt.extend_from_slice(rec.payload);
                    }
                }
                Ok(Turn::Again)
            }
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                let mut size = 2048;
                loop {
                    let at = room(&mut self.outgoing, size);
                    match e.encode(&mut self.outgoing[at..]) {
                        Ok(n) => {
                            self.outgoing.truncate(at + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            self.outgoing.truncate(at);
                            size = required_size;
                        }
                        Err(_) => {
                            self.outgoing.truncate(at);
                            break;
                        }
                    }
                }
                Ok(Turn::Again)
            }
            // What was encoded is in `outgoing`, in order; it leaves with the next flush.
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                Ok(Turn::Again)
            }
            Ok(ConnectionState::PeerClosed) => {
                self.eof = true;
                Ok(Turn::Again)
            }
            Ok(ConnectionState::Closed) => {
                self.eof = true;
                Ok(Turn::Idle)
            }
            Ok(ConnectionState::BlockedHandshake) | Ok(ConnectionState::WriteTraffic(_)) => {
                Ok(Turn::Idle)
            }
            Ok(_) => Ok(Turn::Idle),
        };
        self.incoming.advance(discard);
        turn
    }

    /// Takes ciphertext from the socket, appends the plaintext to `out`.
    /// An error's alert (if any) waits in the layer: flush it before closing.
    pub fn decrypt(&mut self, wire: &[u8], out: &mut BytesMut) -> io::Result<()> {
        if self.eof || wire.is_empty() {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            if wire[0] != 0x16 {
                // The first record is not a handshake (RFC 8446 5.1: ContentType
                // 22): plain MQTT or garbage on a TLS listener.
                return Err(fault(CloseReason::TlsNotTls));
            }
        }
        self.incoming.extend_from_slice(wire);
        let r = loop {
            match self.turn(out) {
                Ok(Turn::Again) if !self.eof => {}
                Ok(_) => break Ok(()),
                Err(reason) => break Err(fault(reason)),
            }
        };
        if self.incoming.is_empty() {
            // A whole number of records: nothing kept while idle.
            self.incoming = BytesMut::new();
        } else if self.incoming.capacity() > 2 * self.incoming.len() + TAIL_SLACK {
            // The tail of a record cut by the read (at most one record, 16 KiB
            // plus overhead, RFC 8446 5.2): keep it alone, not the read's whole
            // allocation (64 KiB) while the connection waits, e.g. paused by
            // the partial-packet budget, which counts it (`held`).
            self.incoming = BytesMut::from(&self.incoming[..]);
        }
        r
    }

    /// Bytes this layer holds of a record still arriving (its allocation):
    /// counted with the MQTT buffer against the partial-packet budget, and
    /// under the same deadline, so a peer trickling one record forever is
    /// closed like one trickling a packet (net/read_budget.rs).
    pub fn held(&self) -> usize {
        self.incoming.capacity()
    }

    /// Encrypts up to 64 KiB of `plain` into records (16 KiB each, not one
    /// per packet); returns the bytes taken (0 while handshaking, closing, or
    /// while 64 KiB of ciphertext already wait for the socket).
    pub fn encrypt(&mut self, plain: &[u8]) -> usize {
        if plain.is_empty() || self.outgoing.len() >= ENCRYPT_CHUNK || self.eof {
            return 0;
        }
        let take = plain.len().min(ENCRYPT_CHUNK);
        let mut sink = BytesMut::new();
        for _ in 0..8 {
            let status = self.conn.process_tls_records(&mut self.incoming[..]);
            let discard = status.discard;
            let done = match status.state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let mut size = take + (take / 16384 + 1) * 64;
                    loop {
                        let at = room(&mut self.outgoing, size);
                        match w.encrypt(&plain[..take], &mut self.outgoing[at..]) {
                            Ok(n) => {
                                self.outgoing.truncate(at + n);
                                break Some(take);
                            }
                            Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => {
                                self.outgoing.truncate(at);
                                size = required_size;
                            }
                            Err(_) => {
                                self.outgoing.truncate(at);
                                break Some(0);
                            }
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(_))
                | Ok(ConnectionState::TransmitTlsData(_))
                | Ok(ConnectionState::ReadTraffic(_)) => None,
                _ => Some(0),
            };
            self.incoming.advance(discard);
            match done {
                Some(n) => return n,
                // Handshake messages (tickets) or records first: one turn, then again.
                None => {
                    if self.turn(&mut sink).is_err() {
                        return 0;
                    }
                }
            }
        }
        0
    }

    /// Holds no buffer (tests: an idle connection keeps nothing).
    #[cfg(test)]
    pub fn idle(&self) -> bool {
        self.incoming.capacity() == 0 && self.outgoing.capacity() == 0
    }

    /// Whether ciphertext waits for the socket.
    pub fn pending(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Sends waiting ciphertext; `Ok(true)` once all left.
    pub fn flush(&mut self, wire: &impl Wire) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match wire.send(&self.outgoing) {
                Ok(0) => return Ok(false),
                Ok(n) => self.outgoing.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = BytesMut::new();
        Ok(true)
    }

    /// Queues what the peer is owed before the socket closes: a pending alert
    /// (a failed handshake's), or close_notify once the handshake is done.
    pub fn close(&mut self) {
        let mut sink = BytesMut::new();
        for _ in 0..8 {
            let status = self.conn.process_tls_records(&mut self.incoming[..]);
            let discard = status.discard;
            let again = match status.state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let at = room(&mut self.outgoing, 64);
                    match w.queue_close_notify(&mut self.outgoing[at..]) {
                        Ok(n) => self.outgoing.truncate(at + n),
                        Err(_) => self.outgoing.truncate(at),
                    }
                    false
                }
                Ok(ConnectionState::EncodeTlsData(_)) | Ok(ConnectionState::TransmitTlsData(_)) => {
                    true
                }
                _ => false,
            };
            self.incoming.advance(discard);
            if !again || self.turn(&mut sink).is_err() {
                return;
            }
        }
    }

    /// The subject CN of the client's verified certificate (mTLS).
    pub fn peer_cn(&self) -> Option<String> {
        let der = self.conn.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }
}
