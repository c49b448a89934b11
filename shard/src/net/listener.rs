//! Listener sockets: built with socket2 (SO_REUSEPORT, backlog, TCP_NODELAY
//! inherited by accepted sockets) before the shards start, so the bound
//! addresses are known when `start` returns. Every shard gets its own socket
//! on the same address; the kernel spreads incoming connections.

use super::stack::Stack;
use super::tls::TlsAcceptor;
use crate::config::{Listener, Transport};
use crate::stats::CloseReason;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// One listener address, bound once per shard.
pub struct BoundListener {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// One socket per shard, in shard order.
    pub sockets: Vec<OwnedFd>,
}

/// A TCP socket for `addr` with SO_REUSEADDR (and SO_REUSEPORT when `shared`).
fn tcp_socket(addr: SocketAddr, shared: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(shared)?;
    Ok(s)
}

fn socket_for(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let s = tcp_socket(addr, true)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(s)
}

/// SO_REUSEPORT would let a second broker of the same user share the port
/// and silently split the clients between the two: a plain bind (without
/// SO_REUSEPORT) first tells whether anyone holds the address.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    tcp_socket(addr, false)?
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Binds `addr` once per shard. Port 0 is resolved by the first socket and
/// the rest bind the same port.
pub fn bind(addr: SocketAddr, shards: usize, backlog: u32) -> io::Result<BoundListener> {
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let first = socket_for(addr, backlog)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no inet address"))?;
    let mut sockets = vec![OwnedFd::from(first)];
    for _ in 1..shards {
        let s = socket_for(bound, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bound}: {e}")))?;
        sockets.push(OwnedFd::from(s));
    }
    Ok(BoundListener {
        addr: bound,
        sockets,
    })
}

/// A listener as the shards see it: its configuration and its TLS state,
/// shared by every shard (one per `--listen`, in order).
pub struct ListenerRt {
    /// Position in `ShardConfig::listen` (metrics label, hand-off).
    pub index: u16,
    pub cfg: Listener,
    tls: Option<TlsAcceptor>,
}

impl ListenerRt {
    /// Checks the listener and reads its TLS files; the error is one line
    /// naming the listener and the file at fault.
    pub fn new(index: usize, cfg: &Listener) -> io::Result<Self> {
        let url = format!("{}://{}", cfg.transport.scheme(), cfg.addr);
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if matches!(cfg.transport, Transport::Ws { .. } | Transport::Wss { .. }) {
            return Err(invalid(format!(
                "--listen {url}: WebSocket listeners are not in this build yet"
            )));
        }
        let tls = if cfg.transport.is_tls() {
            let t = TlsAcceptor::new(&cfg.tls, &cfg.transport)
                .map_err(|e| invalid(format!("--listen {url}: {e}")))?;
            Some(t)
        } else {
            None
        };
        Ok(ListenerRt {
            index: index as u16,
            cfg: cfg.clone(),
            tls,
        })
    }

    /// The transport stack of a connection accepted here.
    pub(crate) fn stack(&self) -> Result<Stack, CloseReason> {
        match &self.tls {
            None => Ok(Stack::Plain),
            Some(t) => Ok(Stack::Tls(Box::new(t.accept()?))),
        }
    }

    /// Re-reads the listener's certificate, key and client CA; on error the
    /// old ones stay in use. `Ok(false)`: not a TLS listener.
    pub fn reload_tls(&self) -> Result<bool, String> {
        match &self.tls {
            None => Ok(false),
            Some(t) => t
                .reload()
                .map(|()| true)
                .map_err(|e| format!("{}://{}: {e}", self.cfg.transport.scheme(), self.cfg.addr)),
        }
    }
}
