//! ringmq-shard: one share-nothing executor per core.
//!
//! Each shard (a glommio executor pinned to one CPU) owns its connections,
//! their sessions and a replica of the router. Shards talk only over the
//! channel mesh. Layout:
//!
//! - `config.rs`: every tunable ([`config::ShardConfig`]).
//! - `server.rs`: starting the shards, the [`server::ServerHandle`].

pub mod config;
