//! Node-to-node transport: TCP (optionally mutual TLS), length-delimited
//! frames, a fixed handshake, postcard messages.
//!
//! - `frame`: framing and the handshake layout.
//! - `wire`: the request and response messages.
//! - `client`: outgoing connections, openraft's network factory, forwarding.
//! - `pipeline`: pipelined replication (openraft's `stream_append`).
//! - `server`: the listener, handshake checks, dispatch to Raft.
//! - `tls`, `faults`, `stats`: mutual TLS, test partitions, counters.

pub mod client;
pub mod faults;
pub mod frame;
pub mod pipeline;
pub mod server;
pub mod stats;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::types::NodeId;

/// A byte stream to a peer: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// What both sides of the transport need to know.
#[derive(Debug)]
pub struct NetCtx {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub tls: Option<tls::Tls>,
    pub faults: faults::Faults,
    pub stats: Arc<stats::NetStats>,
    /// Largest frame accepted (a whole snapshot travels in one frame).
    pub max_frame: usize,
    pub connect_timeout: Duration,
    /// Largest time a peer may take to finish its handshake.
    pub handshake_timeout: Duration,
}
