//! The network wing: sockets, their readiness, listeners and the loop that
//! turns a byte stream into MQTT packets and back.
//!
//! - `poller.rs`: the shard's sockets' readiness (epoll set, or the
//!   io_uring ring of `uring.rs`) and deadline heap; `slots.rs`: its slot
//!   table (a waker and readiness bits per descriptor).
//! - `uring.rs`: the io_uring backend: multishot accept and receive into a
//!   provided-buffer ring, sends as SQEs.
//! - `park.rs`: where the shard sleeps (on io_uring: in its own ring, as
//!   glommio's park).
//! - `listener.rs`: listener sockets, bound once per shard.
//! - `connection.rs`: a connection's one task, from accept to close.
//! - `conn_out.rs`: a connection's outbound buffer; `out_pool.rs`: the
//!   shard's outbound buffers kept for reuse.
//! - `accept_backoff.rs`: waiting out failed accepts (out of descriptors).
//! - `read_budget.rs`: partial packets: the shard's byte budget, the packet deadline.
//! - `stack.rs`: the transport layers between a socket and the MQTT bytes
//!   (plain; TLS and WebSocket slot in there), below them the `Wire` seam.
//! - `proxy.rs`: PROXY protocol v1/v2 headers (the client's address behind
//!   a load balancer), read before any other layer.
//! - `tls.rs`: rustls configuration per listener (reloadable);
//!   `tls_conn.rs`: a connection's TLS layer (rustls unbuffered, no buffer
//!   held while idle).
//! - `ws/`: WebSocket (RFC 6455), sans I/O: the upgrade and the framing.

pub(crate) mod accept_backoff;
pub(crate) mod conn_out;
pub mod connection;
pub mod listener;
mod out_pool;
mod park;
pub(crate) mod poller;
pub mod proxy;
pub(crate) mod read_budget;
#[cfg(test)]
mod sizes_tests;
mod slots;
pub(crate) mod stack;
pub mod tls;
mod tls_conn;
pub mod uring;
pub mod ws;
