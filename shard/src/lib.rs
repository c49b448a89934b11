//! ringmq-shard: one share-nothing executor per core.
//!
//! Each shard (a glommio executor pinned to one CPU) owns its connections,
//! their sessions and a replica of the router. Shards talk only over the
//! channel mesh. Follow a PUBLISH in this order:
//!
//! - `server.rs`: [`server::start`] binds listeners (`net/listener.rs`), builds
//!   the mesh and starts one executor per shard running `shard.rs`.
//!   Everything of sockets lives in the `net/` wing.
//! - `shard.rs`: a shard's state and life: acceptors, mesh receivers,
//!   control, timers.
//! - `net/connection.rs`: a socket: CONNECT, hand-off to the client id's home
//!   shard, then one task that reads, handles and writes; `poller.rs`: the
//!   shard's epoll set and deadline heap that wake those tasks.
//! - `auth_phase.rs`: authentication of a CONNECT (password off the shard
//!   thread, SCRAM AUTH exchange) before hand-off; `access/`: the decisions
//!   (password file, SCRAM), knowing nothing of sockets.
//! - `connect.rs`: CONNECT to CONNACK, takeover, resume, will and expiry at close.
//! - `handle.rs`: dispatch of each packet; `publish.rs` for PUBLISH;
//!   `subscribe.rs` for SUBSCRIBE/UNSUBSCRIBE; `replay.rs` for the retained replay
//!   (paced by the subscriber, resumed with a persistent session).
//! - `route.rs`: matching (`router.rs`, `topic.rs`), the mesh (`mesh.rs`)
//!   and delivery to sessions (`session.rs`) through their outbound side
//!   (`net/conn_out.rs`), each (version, QoS) frame encoded once.
//! - `retained.rs`: retained messages; `store/`: LMDB persistence;
//!   `persist.rs`: restoring sessions at start, keeping their rows in step,
//!   and acknowledging only what is durable on every shard (`--durability sync`);
//!   `confirm.rs`: those acknowledgements, and exactly-once QoS 2 across shards.
//! - `bulk.rs`: large SUBSCRIBE/UNSUBSCRIBE and removed sessions' subscriptions
//!   (`reap.rs`), a bounded number of router changes per scheduler turn.
//! - `notify.rs`: the shard-local wake-up flag behind each connection and the mesh flusher.
//! - `stats.rs`: counters and typed close reasons; `control.rs` and
//!   `admin.rs`: operator queries; `sys.rs`: `$SYS` topics; `timers.rs`.
//! - `config.rs`: every tunable ([`config::ShardConfig`]).
//! - `cluster/`: the cluster's data plane: node-level routes and node links
//!   (a publish crosses to each target node once; SUBACK waits for peers' route acks).
//! - `access/`: ACL file, bans, reload registry (checked at CONNECT,
//!   SUBSCRIBE, PUBLISH and per delivery where a subscription needs it).

pub mod access;
pub mod admin;
mod auth_phase;
mod authz;
mod bulk;
mod clock;
pub mod cluster;
pub mod config;
mod confirm;
mod connect;
pub mod control;
mod defer;
mod handle;
pub mod mesh;
pub mod net;
mod notify;
pub mod ownership;
mod persist;
mod publish;
mod reap;
mod replay;
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
pub mod wills;

// The connection layer moved to `net/`; its old paths still resolve.
pub(crate) use net::{conn_out, poller};
pub use net::{connection, listener};

pub use connection::home_shard;

/// FxHash-style mixing for maps keyed by integers the broker allocates
/// (session keys, seqs, confirm tokens): nothing a client chooses, so no
/// keyed hash is needed, and these maps are touched per message.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` keyed by broker-allocated integers ([`IntHasher`]).
pub(crate) type IntMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;
