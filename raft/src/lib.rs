//! ringmq-raft: cluster metadata replicated with openraft.
//!
//! This crate knows nothing of MQTT: the broker hands it opaque keys and
//! values. Layout:
//!
//! - `command`: the command set (put, delete, compare-and-set, batches).
//! - `payload`: a command as it travels in the log (shared, encoded once).
//! - `types`: openraft's type configuration.
//! - `store/`: LMDB (heed) log, vote, state machine, snapshots.
//! - `net/`: node-to-node TCP transport (frames, handshake, mTLS, faults).
//! - `node/`: the control-plane thread, writes/reads/forwarding, membership
//!   changes, status.
//! - `handle`: the `Send + Clone` handle shards use (channels only).
//! - `facade/`: session ownership (batched CAS) and liveness keys.
//! - `error`: error types.

pub mod command;
pub mod counters;
pub mod error;
pub mod facade;
pub mod handle;
pub mod net;
pub mod node;
pub mod payload;
pub mod store;
pub mod types;

pub use command::{Command, CommandResult, Op, OpResult, Versioned};
pub use counters::CountersSnapshot;
pub use error::{Error, OpenError};
pub use facade::liveness::Liveness;
pub use facade::owner::{ClaimError, Owner, Ownership};
pub use handle::{Consistency, RaftHandle};
pub use net::tls::TlsFiles;
pub use node::status::{NodeStatus, Status};
pub use node::{BatchConfig, NodeConfig, RaftNode};
pub use store::watch::Change;
pub use types::NodeId;
