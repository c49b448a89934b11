//! The network wing: sockets, their readiness, listeners and the loop that
//! turns a byte stream into MQTT packets and back.
//!
//! - `poller.rs`: the shard's epoll set and deadline heap.
//! - `listener.rs`: listener sockets, bound once per shard.
//! - `connection.rs`: a connection's one task, from accept to close.
//! - `conn_out.rs`: a connection's outbound buffer.

pub(crate) mod conn_out;
pub mod connection;
pub mod listener;
pub(crate) mod poller;
