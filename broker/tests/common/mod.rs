//! Shared test harness for the broker's integration tests.
//!
//! Layout:
//! - `broker.rs`: start the broker in-process (`ringmq_shard::server::start`, 1 or N shards on
//!   127.0.0.1:0) or as the `ringmq` binary (parses its `ringmq listening on mqtt://...` line).
//! - `client.rs`: one wrapper over rumqttc's v4 and v5 clients (clients we did not write), so a
//!   scenario runs unchanged on MQTT 3.1.1 and 5.0.
//! - `raw.rs`: our own client on `ringmq_codec` plus raw bytes, for malformed and edge-case input
//!   with exact checks of the broker's answer.
//! - `tls.rs`: test certificates (rcgen) and `RINGMQ_TEST_TRANSPORT=tls`, which runs every
//!   suite's clients over TLS against an `mqtts://` listener.
//! - `cluster.rs`: `RINGMQ_TEST_CLUSTER=3` runs every in-process broker as a cluster of three
//!   nodes behind a round-robin forwarder (each new client connection to the next node).
//! - here: `check_for` (poll with a deadline instead of sleeping), protocol/shard matrix macros.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod broker;
pub mod client;
pub mod cluster;
pub mod persist;
pub mod raw;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::time::{Duration, Instant};

pub use broker::{BinBroker, Broker};
pub use client::{Client, Msg, Opts};
pub use raw::Raw;

/// Protocol a scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0.
    V5,
}

/// Default bound for one expected event.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that must NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// Polls `f` every 10 ms until it returns `Some`, or panics naming `what` after `deadline`.
pub async fn check_for<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`check_for`] for code outside a runtime.
pub fn check_for_blocking<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running in-process broker plus the protocol the scenario speaks.
pub struct Ctx {
    pub proto: Proto,
    pub broker: Broker,
}

impl Ctx {
    pub fn start(proto: Proto, shards: usize) -> Ctx {
        Ctx {
            proto,
            broker: Broker::start(shards),
        }
    }

    pub fn shards(&self) -> usize {
        self.broker.shards
    }

    /// Options for a client of this scenario's protocol.
    pub fn opts(&self, id: &str) -> Opts {
        Opts::new(self.proto, self.broker.addr, id)
    }

    /// Connects a clean client and waits for its CONNACK.
    pub async fn client(&self, id: &str) -> Client {
        Client::connect(self.opts(id)).await
    }

    /// Two client ids that, with 2+ shards, land on different home shards (publisher and
    /// subscriber on different shards on purpose); with 1 shard any two ids.
    pub fn pair_ids(&self, prefix: &str) -> (String, String) {
        cross_shard_ids(prefix, self.shards())
    }
}

/// Returns `(a, b)` client ids whose home shards differ when `shards > 1`.
pub fn cross_shard_ids(prefix: &str, shards: usize) -> (String, String) {
    let a = format!("{prefix}-a");
    if shards < 2 {
        return (a, format!("{prefix}-b"));
    }
    let Some(home_a) = broker::home_shard(&a, shards) else {
        return (a, format!("{prefix}-b"));
    };
    for i in 0..1000 {
        let b = format!("{prefix}-b{i}");
        if broker::home_shard(&b, shards) != Some(home_a) {
            return (a, b);
        }
    }
    (a, format!("{prefix}-b"))
}

/// Returns `(a, b)` client ids with the same home shard.
pub fn same_shard_ids(prefix: &str, shards: usize) -> (String, String) {
    let a = format!("{prefix}-a");
    let home = broker::home_shard(&a, shards);
    for i in 0..1000 {
        let b = format!("{prefix}-b{i}");
        if broker::home_shard(&b, shards) == home {
            return (a, b);
        }
    }
    (a, format!("{prefix}-b"))
}

/// Returns `n` client ids, spread over the home shards when `shards > 1`.
pub fn spread_ids(prefix: &str, n: usize, shards: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n && i < 10_000 {
        let id = format!("{prefix}-{i}");
        i += 1;
        let want = out.len() % shards.max(1);
        match broker::home_shard(&id, shards) {
            Some(home) if shards > 1 && home != want => {}
            _ => out.push(id),
        }
    }
    out
}

/// Generates one `#[tokio::test]` per (protocol, shards) case: `name::v311_1shard`,
/// `name::v311_2shards`, `name::v5_1shard`, `name::v5_2shards`, each calling `name(ctx)`.
/// Attributes (e.g. `#[ignore = ".."]`) written before `fn name;` go on every case.
macro_rules! matrix {
    ($( $(#[$attr:meta])* fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            $(#[$attr])* #[tokio::test] async fn v311_1shard() { super::$name(Ctx::start(Proto::V4, 1)).await }
            $(#[$attr])* #[tokio::test] async fn v311_2shards() { super::$name(Ctx::start(Proto::V4, 2)).await }
            $(#[$attr])* #[tokio::test] async fn v5_1shard() { super::$name(Ctx::start(Proto::V5, 1)).await }
            $(#[$attr])* #[tokio::test] async fn v5_2shards() { super::$name(Ctx::start(Proto::V5, 2)).await }
        }
    )*};
}

/// Like [`matrix!`] for one protocol only: `name::{p}_1shard`, `name::{p}_2shards`.
macro_rules! matrix_v5 {
    ($( $(#[$attr:meta])* fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            $(#[$attr])* #[tokio::test] async fn v5_1shard() { super::$name(Ctx::start(Proto::V5, 1)).await }
            $(#[$attr])* #[tokio::test] async fn v5_2shards() { super::$name(Ctx::start(Proto::V5, 2)).await }
        }
    )*};
}

/// Like [`matrix!`] for MQTT 3.1.1 only.
macro_rules! matrix_v311 {
    ($( $(#[$attr:meta])* fn $name:ident; )*) => {$(
        mod $name {
            use super::*;
            $(#[$attr])* #[tokio::test] async fn v311_1shard() { super::$name(Ctx::start(Proto::V4, 1)).await }
            $(#[$attr])* #[tokio::test] async fn v311_2shards() { super::$name(Ctx::start(Proto::V4, 2)).await }
        }
    )*};
}
