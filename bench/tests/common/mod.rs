//! Helpers shared by the bench tests: parse a scenario command line, find brokers.

#![allow(dead_code)]

use clap::Parser;
use ringmq_bench::cli::{Cli, Command, Scenario};
use std::path::PathBuf;

/// Parses `ringmq-bench ARGS...` into a scenario (panics on anything else).
pub fn scenario(args: &[&str]) -> Scenario {
    let cli = Cli::try_parse_from(std::iter::once("ringmq-bench").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("parse {args:?}: {e}"));
    match cli.command {
        Command::Scenario(s) => s,
        other => panic!("not a scenario: {other:?}"),
    }
}

/// The mosquitto binary on PATH (or /usr/sbin), if any.
pub fn mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// The ringmq binary: $RINGMQ_BIN, or target/{release,debug}/ringmq under the workspace
/// or $CARGO_TARGET_DIR.
pub fn ringmq() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGMQ_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![ws.join("target")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.insert(0, PathBuf::from(t));
    }
    dirs.iter()
        .flat_map(|d| [d.join("release/ringmq"), d.join("debug/ringmq")])
        .find(|p| p.is_file())
}
