//! ringmq-bench: a thread-per-core MQTT load generator (library part, used by the
//! binary and the tests).
//!
//! Layout, in the order a run goes through it:
//! - `cli`: subcommands and options; `plan`: scenario options -> publishers, subscribers,
//!   resolved load, expected matches.
//! - `cpus`: CPU lists and default pinning; `runner`: one glommio executor per core,
//!   setup, start barrier, drain, merge; `core`: what cores share and keep to themselves.
//! - `conn`: one MQTT connection (buffers, framing, write+read in one task);
//!   `publisher` and `subscriber`: the per-connection loops; `payload`: the 20-byte
//!   header (sequence, timestamp, publisher) and the once-encoded publish template;
//!   `tracker`: loss / duplicate / reorder detection.
//! - `storm` (connection storm) and `retained` (retained replay): scenarios with their
//!   own flow.
//! - `stats`: per-core measurements and the summary; `report`: table, JSON, comparison;
//!   `progress`: the live line on a terminal.
//! - `brokers` and `compare`: start ringmq / Mosquitto / FlashMQ / rumqttd, run the same
//!   scenario against each; `sweep`: fixed-rate latency at rising rates; `chart`: their
//!   SVG pictures; `selfcheck` measures the generator's ceiling.
//! - `rbuf`: a connection's receive buffer (reads land in place, frames parsed in place).
//! - `takeover`: a persistent session moving between cluster nodes under load (its own
//!   flow and report).
//! - `relay`: a TEST FIXTURE relay (never a broker) for the self-check and fault tests.

pub mod brokers;
pub mod chart;
pub mod cli;
pub mod compare;
pub mod conn;
pub mod core;
pub mod cpus;
pub mod driver;
pub mod payload;
pub mod plan;
pub mod poller;
pub mod progress;
pub mod publisher;
pub mod rbuf;
pub mod relay;
pub mod report;
pub mod retained;
pub mod runner;
pub mod stats;
pub mod storm;
pub mod subscriber;
pub mod sweep;
pub mod takeover;
pub mod tracker;
pub mod transport;

use cli::Scenario;
use stats::Summary;

/// Runs any scenario against the broker named in its options.
pub fn run_scenario(s: &Scenario) -> Result<Summary, String> {
    match s {
        Scenario::Conn(a) => storm::run(a),
        Scenario::Retained(a) => retained::run(a),
        _ => runner::run(plan::Plan::from_scenario(s)?),
    }
}
