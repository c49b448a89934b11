//! WebSocket (RFC 6455), server side, sans I/O: bytes in, bytes out.
//!
//! MQTT over WebSocket (MQTT 5.0 and 3.1.1 section 6) is MQTT's byte stream
//! carried in binary frames. This module knows nothing of sockets or MQTT
//! packets; the connection feeds it what it read and writes what it returns:
//!
//! - [`upgrade`] (`upgrade.rs`): the opening HTTP/1.1 handshake (RFC 6455
//!   4.2), parsed with `httparse`; answers `101 Switching Protocols` with the
//!   `mqtt` subprotocol, or a refusal (404 on another path, 400, 405, 426, 431).
//! - [`WsFramer`] (`frame.rs`): the data-framing state of one connection
//!   (RFC 6455 5): client frames in, the unmasked MQTT byte stream out
//!   (packets may span frames and a frame may hold several, [MQTT-6.0.0-2]),
//!   pongs and the closing handshake's echo as replies; server frames out.
//! - [`WsLayer`] (`layer.rs`): both together, as one connection's layer in
//!   the transport stack, with the bytes owed to the layer below.
//! - [`WsError`] and [`UpgradeError`]: every refusal, each mapped here, in one
//!   place, to its close code or HTTP status and to its [`CloseReason`].

mod frame;
mod layer;
mod upgrade;

pub use frame::{encode_binary, encode_close, WsFramer, WsStatus, MAX_HEADER};
pub use layer::{WsFail, WsInput, WsLayer};
pub use upgrade::{upgrade, Subprotocol, Upgrade};

use crate::stats::CloseReason;

/// The settings of one WebSocket listener.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// The one path upgrades are accepted on (`/mqtt` by default); any other is 404.
    pub path: Box<str>,
    /// The largest upgrade request, head and headers, in bytes (431 above it).
    pub max_request: usize,
    /// The largest frame payload accepted; a header announcing more is
    /// refused before any of it is buffered (1009). The broker sets it to
    /// its maximum packet size.
    pub max_frame: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: "/mqtt".into(),
            max_request: 8 * 1024,
            max_frame: 256 * 1024 * 1024,
        }
    }
}

/// Why an upgrade request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not an HTTP/1.x request (`httparse` refused it).
    Malformed,
    /// Head larger than [`WsConfig::max_request`] or too many headers.
    TooLarge,
    /// Not `GET` (RFC 6455 4.1 item 2, 4.2.1 item 1).
    NotGet,
    /// HTTP/1.0 (RFC 6455 4.2.1 item 1: HTTP/1.1 or higher).
    OldHttp,
    /// Another path than the listener's.
    NotFound,
    /// No `Host` header (RFC 6455 4.2.1 item 2).
    NoHost,
    /// No `Upgrade: websocket` (RFC 6455 4.2.1 item 3).
    NoUpgrade,
    /// No `upgrade` token in `Connection` (RFC 6455 4.2.1 item 4).
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (RFC 6455 4.2.1 item 6, 4.4).
    BadVersion,
    /// `Sec-WebSocket-Key` missing, repeated or not 16 base64 bytes (RFC 6455 4.2.1 item 5).
    BadKey,
    /// The client offered neither `mqtt` nor `mqttv3.1` [MQTT-6.0.0-3].
    NoSubprotocol,
}

impl UpgradeError {
    /// The HTTP status line that answers it.
    pub fn status(self) -> &'static str {
        match self {
            UpgradeError::TooLarge => "431 Request Header Fields Too Large",
            UpgradeError::NotGet => "405 Method Not Allowed",
            UpgradeError::NotFound => "404 Not Found",
            // RFC 6455 4.4: an unsupported version is answered 426 with the ones we speak.
            UpgradeError::BadVersion => "426 Upgrade Required",
            _ => "400 Bad Request",
        }
    }

    /// A stable snake_case name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeError::Malformed => "malformed_request",
            UpgradeError::TooLarge => "request_too_large",
            UpgradeError::NotGet => "not_get",
            UpgradeError::OldHttp => "old_http",
            UpgradeError::NotFound => "not_found",
            UpgradeError::NoHost => "no_host",
            UpgradeError::NoUpgrade => "no_upgrade",
            UpgradeError::NoConnectionUpgrade => "no_connection_upgrade",
            UpgradeError::BadVersion => "bad_version",
            UpgradeError::BadKey => "bad_key",
            UpgradeError::NoSubprotocol => "no_subprotocol",
        }
    }

    /// The close reason of the connection it ends.
    pub fn close_reason(self) -> CloseReason {
        CloseReason::WsUpgradeRefused
    }
}

/// Why the framing layer ends a connection (RFC 6455 5, 7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// A text frame: MQTT rides binary frames only [MQTT-6.0.0-1].
    TextFrame,
    /// A client frame without the mask bit (RFC 6455 5.1).
    Unmasked,
    /// RSV1-3 set with no extension negotiated (RFC 6455 5.2).
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (RFC 6455 5.2).
    ReservedOpcode,
    /// A control frame with more than 125 bytes of payload (RFC 6455 5.5).
    ControlTooLong,
    /// A control frame without FIN (RFC 6455 5.5).
    ControlFragmented,
    /// A continuation frame with no message open (RFC 6455 5.4).
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is open (RFC 6455 5.4).
    ExpectedContinuation,
    /// A length not in its minimal form or with the top bit set (RFC 6455 5.2).
    BadLength,
    /// A frame announcing more payload than [`WsConfig::max_frame`].
    TooBig,
    /// A close frame with a 1-byte payload or an invalid code (RFC 6455 5.5.1, 7.4).
    BadClose,
    /// A close frame whose reason is not UTF-8 (RFC 6455 5.5.1, 8.1).
    BadCloseReason,
}

impl WsError {
    /// The status code of the Close frame that answers it (RFC 6455 7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            WsError::TextFrame => CLOSE_UNSUPPORTED_DATA,
            WsError::TooBig => CLOSE_TOO_BIG,
            WsError::BadCloseReason => CLOSE_INVALID_DATA,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// A stable snake_case name (metrics label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            WsError::TextFrame => "text_frame",
            WsError::Unmasked => "unmasked_frame",
            WsError::ReservedBits => "reserved_bits",
            WsError::ReservedOpcode => "reserved_opcode",
            WsError::ControlTooLong => "control_too_long",
            WsError::ControlFragmented => "control_fragmented",
            WsError::UnexpectedContinuation => "unexpected_continuation",
            WsError::ExpectedContinuation => "expected_continuation",
            WsError::BadLength => "bad_length",
            WsError::TooBig => "frame_too_big",
            WsError::BadClose => "bad_close",
            WsError::BadCloseReason => "bad_close_reason",
        }
    }

    /// The close reason of the connection it ends.
    pub fn close_reason(self) -> CloseReason {
        match self {
            WsError::TextFrame => CloseReason::WsUnsupportedData,
            WsError::TooBig => CloseReason::WsMessageTooBig,
            _ => CloseReason::WsProtocolError,
        }
    }
}

/// 1000: normal closure (RFC 6455 7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
/// 1001: going away (server shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// 1003: a data type the endpoint cannot accept (text, for MQTT).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// 1007: data inconsistent with the message type (a non-UTF-8 reason).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// 1008: policy violation (a generic refusal).
pub const CLOSE_POLICY: u16 = 1008;
/// 1009: a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// 1011: an unexpected condition on the server.
pub const CLOSE_INTERNAL: u16 = 1011;

/// The Close frame code for a connection the broker ends for `reason`
/// (after the MQTT layer said what it had to, e.g. a v5 DISCONNECT).
pub fn close_code_for(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::WsUnsupportedData => CLOSE_UNSUPPORTED_DATA,
        CloseReason::WsMessageTooBig | CloseReason::PacketTooLarge => CLOSE_TOO_BIG,
        CloseReason::WsProtocolError
        | CloseReason::MalformedPacket
        | CloseReason::ProtocolError
        | CloseReason::ReceiveMaximumExceeded
        | CloseReason::TopicAliasInvalid => CLOSE_PROTOCOL_ERROR,
        CloseReason::ServerShuttingDown => CLOSE_GOING_AWAY,
        CloseReason::StorageError | CloseReason::IoError => CLOSE_INTERNAL,
        CloseReason::ConnectRefused
        | CloseReason::AdministrativeAction
        | CloseReason::SlowConsumer
        | CloseReason::ServerBusy => CLOSE_POLICY,
        _ => CLOSE_NORMAL,
    }
}
