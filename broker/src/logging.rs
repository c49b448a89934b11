//! Logging with `tracing`: text or JSON lines on stderr, a filter that the
//! admin socket can change while the broker runs (`ringmq ctl log-level`).
//!
//! Nothing is logged per message at `info`: connection and session events are
//! `debug`, packets `trace`. stdout carries only the `ringmq listening on` lines.

use crate::config::types::LogFormat;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Parses a log filter: a level or `tracing` directives (`info,ringmq_shard=debug`).
pub fn parse_filter(s: &str) -> Result<EnvFilter, String> {
    if s.trim().is_empty() {
        return Err("empty log filter".into());
    }
    EnvFilter::builder()
        .parse(s)
        .map_err(|e| format!("not a log level or filter ({e})"))
}

/// Colour codes only for a terminal: a log written to a file or a pipe
/// stays plain text. `NO_COLOR` (no-color.org) turns them off on a terminal too.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Changes the live log filter.
pub type SetLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Installs the global subscriber. Returns the setter of the live filter.
pub fn init(level: &str, format: LogFormat) -> Result<SetLevel, String> {
    let filter = parse_filter(level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = Registry::default().with(filter);
    let res = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true)
                    .with_ansi(colour()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    res.map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(Arc::new(move |lvl: &str| {
        let f = parse_filter(lvl)?;
        handle
            .modify(|cur| *cur = f)
            .map_err(|e| format!("cannot change the log level: {e}"))?;
        tracing::info!(filter = lvl, "log level changed");
        Ok(())
    }))
}
