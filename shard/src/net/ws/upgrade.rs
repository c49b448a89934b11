//! The opening handshake, server side (RFC 6455 4.2).
//!
//! `httparse` parses the request head (a small, fuzzed, zero-copy parser:
//! better than a hand-written one on hostile input); `sha1` and `base64`
//! compute `Sec-WebSocket-Accept` (RFC 6455 4.2.2 item 5.4).

use super::{UpgradeError, WsConfig};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID appended to the client's key (RFC 6455 1.3, 4.2.2).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Headers parsed at most; more is answered 431.
const MAX_HEADERS: usize = 32;

/// The subprotocol agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subprotocol {
    /// `mqtt`, the name MQTT 3.1.1 and 5.0 define [MQTT-6.0.0-4].
    Mqtt,
    /// `mqttv3.1`, what MQTT 3.1 clients (paho, MQTT.js with MQIsdp) offer.
    MqttV31,
}

impl Subprotocol {
    /// The name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Subprotocol::Mqtt => "mqtt",
            Subprotocol::MqttV31 => "mqttv3.1",
        }
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The request head is not complete yet: read more (within the deadline).
    Incomplete,
    /// Accepted: send `response` (101); the first `consumed` bytes were the
    /// request, the rest are already WebSocket frames.
    Done {
        response: Vec<u8>,
        consumed: usize,
        subprotocol: Subprotocol,
    },
    /// Refused: send `response`, then close.
    Refused {
        response: Vec<u8>,
        reason: UpgradeError,
    },
}

/// Parses the upgrade request at the front of `req`.
pub fn upgrade(req: &[u8], cfg: &WsConfig) -> Upgrade {
    match parse(req, cfg) {
        Ok(None) => Upgrade::Incomplete,
        Ok(Some((consumed, key, subprotocol))) => Upgrade::Done {
            response: switching(&key, subprotocol),
            consumed,
            subprotocol,
        },
        Err(reason) => Upgrade::Refused {
            response: refusal(reason),
            reason,
        },
    }
}

/// The key and subprotocol of a complete, valid request, with its length.
fn parse(
    req: &[u8],
    cfg: &WsConfig,
) -> Result<Option<(usize, Vec<u8>, Subprotocol)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let consumed = match r.parse(req) {
        Ok(httparse::Status::Complete(n)) if n <= cfg.max_request => n,
        Ok(httparse::Status::Complete(_)) => return Err(UpgradeError::TooLarge),
        Ok(httparse::Status::Partial) if req.len() >= cfg.max_request => {
            return Err(UpgradeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpgradeError::TooLarge),
        Err(_) => return Err(UpgradeError::Malformed),
    };
    // RFC 6455 4.2.1 item 1: a GET, HTTP/1.1 or higher.
    if r.method != Some("GET") {
        return Err(UpgradeError::NotGet);
    }
    if r.version != Some(1) {
        return Err(UpgradeError::OldHttp);
    }
    let target = r.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != &*cfg.path {
        return Err(UpgradeError::NotFound);
    }
    let mut host = false;
    let mut upgrade = false;
    let mut connection = false;
    let mut version = false;
    let mut key: Option<&[u8]> = None;
    let mut keys = 0;
    let (mut mqtt, mut mqtt31) = (false, false);
    for h in r.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            // Item 3: contains "websocket", case-insensitive.
            upgrade |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            // Item 4: a token list that includes "Upgrade", case-insensitive.
            connection |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = trim(value) == b"13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            keys += 1;
            key = Some(trim(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for p in value.split(|&b| b == b',').map(trim) {
                mqtt |= p == b"mqtt";
                mqtt31 |= p == b"mqttv3.1";
            }
        }
    }
    if !host {
        return Err(UpgradeError::NoHost);
    }
    if !upgrade {
        return Err(UpgradeError::NoUpgrade);
    }
    if !connection {
        return Err(UpgradeError::NoConnectionUpgrade);
    }
    if !version {
        return Err(UpgradeError::BadVersion);
    }
    // Item 5: a base64 nonce that decodes to 16 bytes.
    let key = match key {
        Some(k) if keys == 1 && B64.decode(k).is_ok_and(|n| n.len() == 16) => k.to_vec(),
        _ => return Err(UpgradeError::BadKey),
    };
    // [MQTT-6.0.0-3] the client offers "mqtt"; the server answers it [MQTT-6.0.0-4].
    let subprotocol = if mqtt {
        Subprotocol::Mqtt
    } else if mqtt31 {
        Subprotocol::MqttV31
    } else {
        return Err(UpgradeError::NoSubprotocol);
    };
    Ok(Some((consumed, key, subprotocol)))
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 4.2.2 item 5.4).
pub(super) fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    B64.encode(h.finalize())
}

/// The 101 answer (RFC 6455 4.2.2 item 5).
fn switching(key: &[u8], p: Subprotocol) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        accept_key(key),
        p.as_str()
    )
    .into_bytes()
}

/// The refusal, which also ends the connection.
fn refusal(e: UpgradeError) -> Vec<u8> {
    let extra = match e {
        UpgradeError::BadVersion => "Sec-WebSocket-Version: 13\r\n",
        UpgradeError::NotGet => "Allow: GET\r\n",
        _ => "",
    };
    format!(
        "HTTP/1.1 {}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n",
        e.status()
    )
    .into_bytes()
}

/// Whether a comma-separated header value holds `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WsConfig {
        WsConfig::default()
    }

    /// A request like a browser's `new WebSocket(url, ["mqtt"])`.
    const BROWSER: &str = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:8083\r\n\
        Connection: Upgrade\r\nPragma: no-cache\r\nUpgrade: websocket\r\n\
        Origin: http://127.0.0.1:8000\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";

    fn with(from: &str, to: &str) -> Vec<u8> {
        assert!(BROWSER.contains(from), "{from}");
        BROWSER.replacen(from, to, 1).into_bytes()
    }

    fn refused(req: &[u8]) -> (UpgradeError, String) {
        match upgrade(req, &cfg()) {
            Upgrade::Refused { response, reason } => (reason, String::from_utf8(response).unwrap()),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn rfc6455_1_3_accept_key() {
        // RFC 6455 1.3: the sample nonce and its accept value.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn browser_request_is_switched_with_mqtt() {
        let mut req = BROWSER.as_bytes().to_vec();
        req.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]); // a first frame right behind
        let Upgrade::Done {
            response,
            consumed,
            subprotocol,
        } = upgrade(&req, &cfg())
        else {
            panic!()
        };
        assert_eq!(consumed, BROWSER.len());
        assert_eq!(subprotocol, Subprotocol::Mqtt);
        assert_eq!(
            String::from_utf8(response).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let req = BROWSER.as_bytes();
        for n in 0..req.len() {
            assert_eq!(upgrade(&req[..n], &cfg()), Upgrade::Incomplete, "{n}");
        }
    }

    #[test]
    fn tokens_are_lists_and_case_insensitive() {
        let r = with("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        let r = String::from_utf8(r)
            .unwrap()
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(matches!(
            upgrade(r.as_bytes(), &cfg()),
            Upgrade::Done { .. }
        ));
    }

    #[test]
    fn query_string_is_ignored() {
        let r = with("GET /mqtt ", "GET /mqtt?token=1 ");
        assert!(matches!(upgrade(&r, &cfg()), Upgrade::Done { .. }));
    }

    #[test]
    fn mqtt_is_preferred_over_mqttv31() {
        let r = with("Protocol: mqtt\r", "Protocol: mqttv3.1, mqtt\r");
        let Upgrade::Done { subprotocol, .. } = upgrade(&r, &cfg()) else {
            panic!()
        };
        assert_eq!(subprotocol, Subprotocol::Mqtt);
        // paho-mqtt and MQTT.js offer mqttv3.1 for protocol 3.1; answered in kind.
        let r = with("Protocol: mqtt\r", "Protocol: mqttv3.1\r");
        let Upgrade::Done {
            response,
            subprotocol,
            ..
        } = upgrade(&r, &cfg())
        else {
            panic!()
        };
        assert_eq!(subprotocol, Subprotocol::MqttV31);
        assert!(String::from_utf8(response)
            .unwrap()
            .contains("Protocol: mqttv3.1\r\n"));
    }

    #[test]
    fn must_fail() {
        let cases: &[(Vec<u8>, UpgradeError, &str)] = &[
            (
                with("GET /mqtt", "GET /other"),
                UpgradeError::NotFound,
                "404",
            ),
            (
                with("GET /mqtt", "GET /mqttx"),
                UpgradeError::NotFound,
                "404",
            ),
            (with("GET /mqtt", "POST /mqtt"), UpgradeError::NotGet, "405"),
            (with("HTTP/1.1", "HTTP/1.0"), UpgradeError::OldHttp, "400"),
            (
                with("Host: 127.0.0.1:8083\r\n", ""),
                UpgradeError::NoHost,
                "400",
            ),
            (
                with("Upgrade: websocket\r\n", ""),
                UpgradeError::NoUpgrade,
                "400",
            ),
            (
                with("Upgrade: websocket", "Upgrade: h2c"),
                UpgradeError::NoUpgrade,
                "400",
            ),
            (
                with("Connection: Upgrade", "Connection: close"),
                UpgradeError::NoConnectionUpgrade,
                "400",
            ),
            (
                with("Connection: Upgrade", "Connection: upgrade-ish"),
                UpgradeError::NoConnectionUpgrade,
                "400",
            ),
            (
                with("Version: 13", "Version: 8"),
                UpgradeError::BadVersion,
                "426",
            ),
            (
                with("Sec-WebSocket-Version: 13\r\n", ""),
                UpgradeError::BadVersion,
                "426",
            ),
            (
                with("Key: dGhlIHNhbXBsZSBub25jZQ==", "Key: c2hvcnQ="),
                UpgradeError::BadKey,
                "400",
            ),
            (
                with("Key: dGhlIHNhbXBsZSBub25jZQ==", "Key: !!!"),
                UpgradeError::BadKey,
                "400",
            ),
            (
                with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                UpgradeError::BadKey,
                "400",
            ),
            (
                with(
                    "Sec-WebSocket-Key",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key",
                ),
                UpgradeError::BadKey,
                "400",
            ),
            (
                with("Sec-WebSocket-Protocol: mqtt\r\n", ""),
                UpgradeError::NoSubprotocol,
                "400",
            ),
            (
                with("Protocol: mqtt\r", "Protocol: mqtt5, MQTT\r"),
                UpgradeError::NoSubprotocol,
                "400",
            ),
            (
                b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".to_vec(),
                UpgradeError::Malformed,
                "400",
            ),
            (
                b"GET /mqtt HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
                UpgradeError::Malformed,
                "400",
            ),
        ];
        for (req, want, status) in cases {
            let (got, response) = refused(req);
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(req));
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{response}"
            );
            assert!(response.contains("Connection: close\r\n"));
        }
        assert!(refused(&with("Version: 13", "Version: 8"))
            .1
            .contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn oversized_heads_get_431() {
        // Still incomplete at the bound.
        let mut r = b"GET /mqtt HTTP/1.1\r\nX: ".to_vec();
        r.resize(cfg().max_request, b'a');
        assert_eq!(refused(&r).0, UpgradeError::TooLarge);
        // Complete, but too many headers.
        let mut r = String::from("GET /mqtt HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            r.push_str(&format!("X-{i}: y\r\n"));
        }
        r.push_str("\r\n");
        assert_eq!(refused(r.as_bytes()).0, UpgradeError::TooLarge);
        // Complete, but beyond the bound.
        let small = WsConfig {
            max_request: 64,
            ..cfg()
        };
        assert!(matches!(
            upgrade(BROWSER.as_bytes(), &small),
            Upgrade::Refused {
                reason: UpgradeError::TooLarge,
                ..
            }
        ));
    }
}
