//! ringmq-shard: one share-nothing executor per core.
//!
//! Each shard (a glommio executor pinned to one CPU) owns its connections,
//! their sessions and a replica of the router. Shards talk only over the
//! channel mesh. Follow a PUBLISH in this order:
//!
//! - `server.rs`: [`server::start`] binds listeners (`listener.rs`), builds
//!   the mesh and starts one executor per shard running `shard.rs`.
//! - `shard.rs`: a shard's state and life: acceptors, mesh receivers,
//!   control, timers.
//! - `connection.rs`: a socket: CONNECT, hand-off to the client id's home
//!   shard, then one task that reads, handles and writes; `poller.rs`: the
//!   shard's epoll set and deadline heap that wake those tasks.
//! - `connect.rs`: CONNECT to CONNACK, takeover, resume, will and expiry at close.
//! - `handle.rs`: dispatch of each packet; `publish.rs` for PUBLISH;
//!   `subscribe.rs` for SUBSCRIBE/UNSUBSCRIBE and retained replay.
//! - `route.rs`: matching (`router.rs`, `topic.rs`), the mesh (`mesh.rs`)
//!   and delivery to sessions (`session.rs`) through their outbound side
//!   (`conn_out.rs`), each (version, QoS) frame encoded once.
//! - `retained.rs`: retained messages; `store/`: LMDB persistence;
//!   `persist.rs`: restoring sessions at start, keeping their rows in step,
//!   and acknowledging only what is durable on every shard (`--durability sync`);
//!   `confirm.rs`: those acknowledgements, and exactly-once QoS 2 across shards.
//! - `notify.rs`: the shard-local wake-up flag behind each connection and the mesh flusher.
//! - `stats.rs`: counters and typed close reasons; `control.rs` and
//!   `admin.rs`: operator queries; `sys.rs`: `$SYS` topics; `timers.rs`.
//! - `config.rs`: every tunable ([`config::ShardConfig`]).

pub mod admin;
pub mod config;
mod confirm;
mod conn_out;
mod connect;
pub mod connection;
pub mod control;
mod defer;
mod handle;
pub mod listener;
pub mod mesh;
mod notify;
mod persist;
mod poller;
mod publish;
pub mod retained;
mod route;
pub mod router;
pub mod server;
mod session;
mod shard;
pub mod stats;
pub mod store;
mod subscribe;
mod sys;
mod timers;
pub mod topic;

pub use connection::home_shard;
