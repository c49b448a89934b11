//! PROXY protocol headers, versions 1 (text) and 2 (binary), sans I/O
//! (HAProxy's "The PROXY protocol", haproxy.org/download/2.9/doc/proxy-protocol.txt).
//!
//! A listener behind a load balancer that sends `send-proxy`/`send-proxy-v2`
//! gets one header before anything else (before TLS): it carries the
//! client's address, which then stands for the connection everywhere
//! (`ringmq ctl clients`, logs). A connection on such a listener that does not
//! start with a valid header is closed (the spec, 2.1 and 2.2: the receiver
//! must not guess).
//!
//! Our own parser, not a crate: it is 150 lines, needs to say "incomplete"
//! on a prefix (bytes arrive in pieces), and bounds what it buffers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (section 2.2).
const SIG_V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1: the longest header, CRLF included (section 2.1).
const MAX_V1: usize = 107;
/// v2: the most address and TLV bytes we accept after the 16-byte header.
const MAX_V2_BODY: usize = 1024;

/// What the bytes at the start of a connection amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A prefix of a header: read more.
    Incomplete,
    /// A header of `len` bytes; `source` is the client's address (`None`:
    /// v1 `UNKNOWN`, v2 `LOCAL` or a family we do not route, so the socket's
    /// own peer stands).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid header.
    Invalid,
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Header {
    let n = buf.len().min(SIG_V2.len());
    if buf[..n] == SIG_V2[..n] {
        return if n < SIG_V2.len() {
            Header::Incomplete
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Header::Invalid
}

fn parse_v1(buf: &[u8]) -> Header {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1 {
            Header::Invalid
        } else {
            Header::Incomplete
        };
    };
    if end + 2 > MAX_V1 {
        return Header::Invalid;
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Header::Invalid;
    };
    let len = end + 2;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let source = match parts.next() {
        Some("UNKNOWN") => return Header::Done { len, source: None },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(_dst), Some(sport), Some(_dport), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Header::Invalid;
            };
            let ip: Option<IpAddr> = match proto {
                "TCP4" => src.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                _ => src.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            };
            let port = sport.parse::<u16>().ok().filter(|_| valid_port(sport));
            match (ip, port) {
                (Some(ip), Some(port)) => SocketAddr::new(ip, port),
                _ => return Header::Invalid,
            }
        }
        _ => return Header::Invalid,
    };
    Header::Done {
        len,
        source: Some(source),
    }
}

/// v1 ports are decimal without leading zeros (section 2.1).
fn valid_port(s: &str) -> bool {
    !s.is_empty() && (s == "0" || !s.starts_with('0')) && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::Incomplete;
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Header::Invalid;
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if body > MAX_V2_BODY {
        return Header::Invalid;
    }
    let len = 16 + body;
    if buf.len() < len {
        return Header::Incomplete;
    }
    let a = &buf[16..len];
    let source = match (ver_cmd & 0x0f, buf[13]) {
        // LOCAL: the proxy's own connection (health checks): no client address.
        (0, _) => None,
        // PROXY over TCP (0x1) or UDP (0x2) on IPv4 (0x1_) and IPv6 (0x2_).
        (1, 0x11 | 0x12) if a.len() >= 12 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 0x21 | 0x22) if a.len() >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(o);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        (1, 0x11 | 0x12 | 0x21 | 0x22) => return Header::Invalid,
        // UNSPEC or UNIX: accepted, the socket's peer stands (section 2.2).
        (1, 0x00 | 0x31 | 0x32) => None,
        _ => return Header::Invalid,
    };
    Header::Done { len, source }
}

/// Reads a listener's PROXY header off the socket (before any other layer)
/// by `deadline`. Returns the client's address it carried and the bytes
/// that followed it in the same reads (the next layer's).
pub(crate) async fn read_header(
    shard: &crate::shard::Shard,
    io: &super::poller::Io,
    deadline: u64,
) -> Result<(Option<SocketAddr>, Vec<u8>), crate::stats::CloseReason> {
    use super::poller::READABLE;
    use crate::stats::CloseReason;
    let mut buf = Vec::new();
    loop {
        let r = {
            let mut scratch = shard.read_scratch.borrow_mut();
            let r = io.recv(&mut scratch[..]);
            if let Ok(n) = r {
                buf.extend_from_slice(&scratch[..n]);
            }
            r
        };
        match r {
            Ok(0) => return Err(CloseReason::HandshakeTruncated),
            Ok(n) => {
                shard.stats.bytes_in.add(n as u64);
                match parse(&buf) {
                    Header::Incomplete => continue,
                    Header::Invalid => return Err(CloseReason::ProxyHeaderInvalid),
                    Header::Done { len, source } => return Ok((source, buf.split_off(len))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                shard.poller.clear(io.key, READABLE);
                let timed_out = std::future::poll_fn(|cx| {
                    if shard.poller.now_ms() >= deadline {
                        std::task::Poll::Ready(true)
                    } else if shard.poller.ready(io.key) & READABLE != 0 {
                        std::task::Poll::Ready(false)
                    } else {
                        shard.poller.set_waker(io.key, cx.waker());
                        std::task::Poll::Pending
                    }
                })
                .await;
                if timed_out {
                    return Err(CloseReason::HandshakeTimeout);
                }
            }
            Err(_) => return Err(CloseReason::IoError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut b = SIG_V2.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        b.extend_from_slice(addr);
        b
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n\x10";
        assert_eq!(
            parse(h),
            Header::Done {
                len: h.len() - 1,
                source: Some("192.0.2.7:56324".parse().unwrap())
            }
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n";
        assert_eq!(
            parse(h),
            Header::Done {
                len: h.len(),
                source: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        let h = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(
            parse(h),
            Header::Done {
                len: h.len(),
                source: None
            }
        );
    }

    #[test]
    fn v1_prefixes_are_incomplete_and_bad_lines_invalid() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n";
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Header::Incomplete, "{cut}");
        }
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 056324 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 70000 1883\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"\x10\x0c\x00\x04MQTT",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Header::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(&[b'P'; 200][..]), Header::Invalid);
        let mut long = b"PROXY ".to_vec();
        long.extend([b'1'; 120]);
        assert_eq!(parse(&long), Header::Invalid, "no CRLF within 107 bytes");
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let mut a4 = vec![198, 51, 100, 9, 10, 0, 0, 1];
        a4.extend_from_slice(&4321u16.to_be_bytes());
        a4.extend_from_slice(&1883u16.to_be_bytes());
        let h = v2(1, 0x11, &a4);
        assert_eq!(
            parse(&h),
            Header::Done {
                len: 28,
                source: Some("198.51.100.9:4321".parse().unwrap())
            }
        );
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Header::Incomplete, "{cut}");
        }
        let mut a6 = vec![0u8; 36];
        a6[15] = 1;
        a6[32..34].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &a6)),
            Header::Done {
                len: 52,
                source: Some("[::1]:7".parse().unwrap())
            }
        );
        // LOCAL (health check) and UNSPEC: the socket's address stands.
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Header::Done {
                len: 16,
                source: None
            }
        );
        // TLVs after the addresses are skipped.
        let mut tlv = a4.clone();
        tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert!(matches!(
            parse(&v2(1, 0x11, &tlv)),
            Header::Done { len: 32, .. }
        ));
    }

    #[test]
    fn v2_invalid() {
        let mut h = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11; // version 1 in a v2 header
        assert_eq!(parse(&h), Header::Invalid);
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 4])),
            Header::Invalid,
            "short address"
        );
        assert_eq!(
            parse(&v2(3, 0x11, &[0; 12])),
            Header::Invalid,
            "unknown command"
        );
        assert_eq!(
            parse(&v2(1, 0x41, &[0; 12])),
            Header::Invalid,
            "unknown family"
        );
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(parse(&big), Header::Invalid, "longer than we buffer");
    }
}
