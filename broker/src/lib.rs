//! ringmq-broker: configuration, startup and the process around the shards.
//!
//! Layout:
//! - `cli.rs`: the command line (`ringmq`, `ringmq config check`, `ringmq ctl`).
//! - `config.rs` (+ `config/`): every tunable as flag, environment variable and TOML key.
//! - `logging.rs`: tracing subscriber, text or JSON, live log level.
//! - `cluster/`: the cluster's control plane, ownership at CONNECT, fencing, `ctl cluster`.
//! - `admin/`: the admin socket (line-delimited JSON) and its `AdminBackend`.
//! - `metrics.rs`: Prometheus `/metrics` over a tiny HTTP server.
//! - `passwd.rs`: `ringmq passwd`, the password file editor.
//! - `main.rs`: startup, signals, shutdown.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod passwd;
