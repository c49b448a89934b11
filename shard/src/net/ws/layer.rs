//! The WebSocket layer of one connection's transport stack: the upgrade,
//! then framing, with the bytes it owes the peer (101 or refusal, pongs,
//! Close frames, data frames) kept in one outbound buffer for the layer
//! below (the socket, or TLS for `wss`). No I/O here.

use super::{
    encode_binary, encode_close, upgrade, Subprotocol, Upgrade, UpgradeError, WsConfig, WsError,
    WsFramer, WsStatus,
};
use crate::stats::CloseReason;
use bytes::BytesMut;
use std::sync::Arc;

/// Where the connection is.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP upgrade request (bytes so far).
    Upgrading(BytesMut),
    /// Upgraded: frames both ways.
    Open(Subprotocol),
    /// A Close was sent or received: no more frames either way.
    Closed,
}

/// What the bytes given to [`WsLayer::input`] amounted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsInput {
    /// Still reading the upgrade request.
    Upgrading,
    /// Upgraded (MQTT bytes, if any, appended).
    Open,
    /// The client closed (its code): our echo is queued; flush it, then close.
    Closed(u16),
}

/// Why the layer ends the connection; its answer (an HTTP refusal or a
/// Close frame) is already queued in [`WsLayer::out`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsFail {
    Upgrade(UpgradeError),
    Frame(WsError),
}

impl WsFail {
    /// The typed reason the connection closes with.
    pub fn close_reason(self) -> CloseReason {
        match self {
            WsFail::Upgrade(e) => e.close_reason(),
            WsFail::Frame(e) => e.close_reason(),
        }
    }

    /// A stable label (per-listener metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            WsFail::Upgrade(e) => e.as_str(),
            WsFail::Frame(e) => e.as_str(),
        }
    }
}

/// One connection's WebSocket state (`Send`: it moves with the socket).
#[derive(Debug)]
pub struct WsLayer {
    cfg: Arc<WsConfig>,
    phase: Phase,
    framer: WsFramer,
    /// Bytes for the layer below, in order (no allocation while empty).
    out: BytesMut,
    /// How the input ended (the client's Close, or a refusal), once it did.
    end: Option<CloseReason>,
}

impl WsLayer {
    /// A new connection on a WebSocket listener.
    pub fn new(cfg: Arc<WsConfig>) -> Self {
        let framer = WsFramer::new(cfg.max_frame);
        WsLayer {
            cfg,
            phase: Phase::Upgrading(BytesMut::new()),
            framer,
            out: BytesMut::new(),
            end: None,
        }
    }

    /// Like [`WsLayer::input`], keeping the outcome for [`WsLayer::end`]:
    /// the stack reports it at its next read, after the MQTT bytes that came
    /// before it (a DISCONNECT right before a Close) have been handled.
    pub fn feed(&mut self, bytes: &[u8], mqtt: &mut BytesMut) {
        if self.end.is_some() {
            return;
        }
        match self.input(bytes, mqtt) {
            Ok(WsInput::Upgrading | WsInput::Open) => {}
            Ok(WsInput::Closed(_)) => self.end = Some(CloseReason::WsClosedByPeer),
            Err(f) => {
                tracing::debug!(reason = f.as_str(), "websocket refused");
                self.end = Some(f.close_reason());
            }
        }
    }

    /// Why the input ended, once it did: no more bytes are read.
    pub fn end(&self) -> Option<CloseReason> {
        self.end
    }

    /// Takes bytes from below: the upgrade request, then frames whose MQTT
    /// payload is appended to `mqtt`.
    pub fn input(&mut self, bytes: &[u8], mqtt: &mut BytesMut) -> Result<WsInput, WsFail> {
        let frames = match &mut self.phase {
            Phase::Closed => return Ok(WsInput::Closed(0)),
            Phase::Open(_) => bytes,
            Phase::Upgrading(req) => {
                req.extend_from_slice(bytes);
                match upgrade(req, &self.cfg) {
                    Upgrade::Incomplete => return Ok(WsInput::Upgrading),
                    Upgrade::Refused { response, reason } => {
                        self.out.extend_from_slice(&response);
                        self.phase = Phase::Closed;
                        return Err(WsFail::Upgrade(reason));
                    }
                    Upgrade::Done {
                        response,
                        consumed,
                        subprotocol,
                    } => {
                        self.out.extend_from_slice(&response);
                        let Phase::Upgrading(req) =
                            std::mem::replace(&mut self.phase, Phase::Open(subprotocol))
                        else {
                            unreachable!("matched above")
                        };
                        // Frames right behind the request (a client that did not wait for 101).
                        return self.frames(&req[consumed..], mqtt);
                    }
                }
            }
        };
        self.frames(frames, mqtt)
    }

    fn frames(&mut self, bytes: &[u8], mqtt: &mut BytesMut) -> Result<WsInput, WsFail> {
        match self.framer.decode(bytes, mqtt, &mut self.out) {
            Ok(WsStatus::Open) => Ok(WsInput::Open),
            Ok(WsStatus::Closed(code)) => {
                self.phase = Phase::Closed;
                Ok(WsInput::Closed(code))
            }
            Err(e) => {
                // RFC 6455 7.1.7: fail the connection with a Close frame carrying the code.
                encode_close(e.close_code(), &mut self.out);
                self.phase = Phase::Closed;
                Err(WsFail::Frame(e))
            }
        }
    }

    /// Queues `mqtt` as one binary frame (one per flush, not per packet).
    /// Nothing is framed before the upgrade or after a Close.
    pub fn frame(&mut self, mqtt: &[u8]) -> bool {
        if !matches!(self.phase, Phase::Open(_)) || mqtt.is_empty() {
            return false;
        }
        encode_binary(mqtt, &mut self.out);
        true
    }

    /// The connection ends for `reason`: queues a Close frame with its code
    /// (RFC 6455 7.4.1) if the upgrade was done and no Close went either way.
    pub fn close(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Open(_)) {
            encode_close(super::close_code_for(reason), &mut self.out);
            self.phase = Phase::Closed;
        }
    }

    /// Whether the upgrade is done (successfully).
    pub fn upgraded(&self) -> bool {
        !matches!(self.phase, Phase::Upgrading(_))
    }

    /// The subprotocol agreed on, once upgraded.
    pub fn subprotocol(&self) -> Option<Subprotocol> {
        match self.phase {
            Phase::Open(p) => Some(p),
            _ => None,
        }
    }

    /// Bytes owed to the layer below; the caller advances past what it sent.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Bytes owed to the layer below, to read.
    pub fn out_ref(&self) -> &[u8] {
        &self.out
    }

    /// Releases buffers that are empty (an idle connection holds none).
    pub fn shrink(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    fn layer() -> WsLayer {
        WsLayer::new(Arc::new(WsConfig::default()))
    }

    #[test]
    fn upgrade_then_frames_in_one_read() {
        let mut l = layer();
        let mut wire = REQ.to_vec();
        // A masked binary frame "Hello" right behind the request.
        wire.extend_from_slice(&[
            0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        let mut mqtt = BytesMut::new();
        assert_eq!(l.input(&wire[..10], &mut mqtt), Ok(WsInput::Upgrading));
        assert!(l.out().is_empty());
        assert_eq!(l.input(&wire[10..], &mut mqtt), Ok(WsInput::Open));
        assert_eq!(&mqtt[..], b"Hello");
        assert!(l.out().starts_with(b"HTTP/1.1 101 "));
        assert_eq!(l.subprotocol(), Some(Subprotocol::Mqtt));
        l.out().clear();
        assert!(l.frame(b"ab"));
        assert_eq!(&l.out()[..], [0x82, 0x02, b'a', b'b']);
    }

    #[test]
    fn refusal_is_queued_and_typed() {
        let mut l = layer();
        let req = String::from_utf8(REQ.to_vec())
            .unwrap()
            .replace("/mqtt", "/x");
        let r = l.input(req.as_bytes(), &mut BytesMut::new());
        assert_eq!(r, Err(WsFail::Upgrade(UpgradeError::NotFound)));
        assert!(l.out().starts_with(b"HTTP/1.1 404 "));
        assert_eq!(r.unwrap_err().close_reason(), CloseReason::WsUpgradeRefused);
        assert!(!l.frame(b"x"), "nothing framed after a refusal");
    }

    #[test]
    fn frame_error_queues_its_close() {
        let mut l = layer();
        let mut mqtt = BytesMut::new();
        l.input(REQ, &mut mqtt).unwrap();
        l.out().clear();
        let r = l.input(&[0x81, 0x80, 0, 0, 0, 0], &mut mqtt);
        assert_eq!(r, Err(WsFail::Frame(WsError::TextFrame)));
        assert_eq!(&l.out()[..], [0x88, 0x02, 0x03, 0xEB]); // 1003
        assert_eq!(
            r.unwrap_err().close_reason(),
            CloseReason::WsUnsupportedData
        );
        l.close(CloseReason::ProtocolError);
        assert_eq!(l.out().len(), 4, "one Close only");
    }

    #[test]
    fn broker_close_sends_its_code_once() {
        let mut l = layer();
        l.input(REQ, &mut BytesMut::new()).unwrap();
        l.out().clear();
        l.close(CloseReason::ServerShuttingDown);
        assert_eq!(&l.out()[..], [0x88, 0x02, 0x03, 0xE9]); // 1001
        l.close(CloseReason::ClientDisconnect);
        assert_eq!(l.out().len(), 4);
        l.out().clear();
        l.shrink();
        assert_eq!(l.out().capacity(), 0);
    }

    #[test]
    fn layer_size() {
        // Boxed in the stack; what an idle WebSocket connection adds besides the box header.
        let n = std::mem::size_of::<WsLayer>();
        assert!(n <= 160, "{n}");
        eprintln!("WsLayer: {n} bytes");
    }

    #[test]
    fn feed_keeps_the_end_for_the_next_read() {
        let mut l = layer();
        let mut mqtt = BytesMut::new();
        let mut wire = REQ.to_vec();
        // DISCONNECT (e0 00, masked with 1 2 3 4) then Close 1000, in one read.
        wire.extend_from_slice(&[0x82, 0x82, 1, 2, 3, 4, 0xe0 ^ 1, 2]);
        wire.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
        l.feed(&wire, &mut mqtt);
        assert_eq!(&mqtt[..], [0xe0, 0x00], "the DISCONNECT is there to handle");
        assert_eq!(l.end(), Some(CloseReason::WsClosedByPeer));
        assert!(l.out().ends_with(&[0x88, 0x02, 0x03, 0xE8]), "echo queued");
        l.feed(b"more", &mut mqtt);
        assert_eq!(mqtt.len(), 2);
        let mut l = layer();
        l.feed(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &mut mqtt);
        assert_eq!(l.end(), Some(CloseReason::WsUpgradeRefused));
    }
}
