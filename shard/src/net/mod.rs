//! The network wing: sockets, their readiness, listeners and the loop that
//! turns a byte stream into MQTT packets and back.
//!
//! - `poller.rs`: the shard's epoll set and deadline heap.
//! - `listener.rs`: listener sockets, bound once per shard.
//! - `connection.rs`: a connection's one task, from accept to close.
//! - `conn_out.rs`: a connection's outbound buffer.
//! - `stack.rs`: the transport layers between a socket and the MQTT bytes
//!   (plain; TLS and WebSocket slot in there), below them the `Wire` seam.
//! - `proxy.rs`: PROXY protocol v1/v2 headers (the client's address behind
//!   a load balancer), read before any other layer.
//! - `tls.rs`: rustls configuration per listener (reloadable) and a
//!   connection's TLS layer.

pub(crate) mod conn_out;
pub mod connection;
pub mod listener;
pub(crate) mod poller;
pub mod proxy;
pub(crate) mod stack;
pub mod tls;
