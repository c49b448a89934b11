//! The admin socket: a Unix socket speaking line-delimited JSON
//! (docs/admin-protocol.md), served on its own thread, and `ringmq ctl`, its client.
//!
//! Layout:
//! - `backend.rs`: [`AdminBackend`], what the broker answers, and the answer types.
//! - `protocol.rs`: request/response types, dispatch to the backend.
//! - `server.rs`: the socket (mode 0600), one thread per admin connection.
//! - `client.rs`: `ringmq ctl`; `format.rs`: its tables.
//! - `shard_backend.rs`: [`AdminBackend`] for the running broker core.
//! - `threads.rs`: CPU time of the shard threads (busy ratio fallback).
//! - `access.rs`: `acl.check`, `ban.*` and `reload`.

pub mod access;
pub mod backend;
pub mod client;
pub mod format;
pub mod protocol;
pub mod server;
pub mod shard_backend;
pub mod threads;

pub use backend::{AdminBackend, AdminError, ErrorCode};
pub use server::AdminServer;

/// `--match PATTERN`: a glob with `*` and `?` when it has either, else a substring
/// (in the shard crate: a node answering another's `ctl clients` matches with it too).
pub use ringmq_shard::cluster::ops::id_matches;
