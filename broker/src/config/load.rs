//! Reading the TOML file and applying precedence: flag > environment > file > default.
//!
//! clap already resolves flag > environment > default; the file slots in for
//! every key whose value clap took from its default (`ArgMatches::value_source`).
//! Every error is one line naming the key, the flag or the variable.

use super::Config;
use clap::parser::ValueSource;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A configuration error: one line, without the `error: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where a key's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

/// The source of every key, to name it in error messages.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Key (the field name, e.g. `cores`) to (section, source).
    keys: BTreeMap<String, (String, Source)>,
}

impl Sources {
    /// Where `key` came from (default when unknown).
    pub fn source(&self, key: &str) -> Source {
        self.keys.get(key).map_or(Source::Default, |(_, s)| *s)
    }

    /// How to name `key` with `value` in an error, as the user wrote it:
    /// `--cores 64`, `RINGMQ_CORES=64` or `config key "placement.cores" = 64`.
    pub fn describe(&self, key: &str, value: &dyn fmt::Display) -> String {
        let section = self.keys.get(key).map_or("?", |(s, _)| s.as_str());
        match self.source(key) {
            Source::Flag | Source::Default => format!("--{} {value}", key.replace('_', "-")),
            Source::Env => format!("{}={value}", env_name(key)),
            Source::File => format!("config key \"{section}.{key}\" = {value}"),
        }
    }
}

/// The environment variable of a flag id: `RINGMQ_MAX_PACKET_SIZE`.
pub fn env_name(id: &str) -> String {
    format!("RINGMQ_{}", id.to_uppercase())
}

fn err(msg: String) -> ConfigError {
    ConfigError(msg)
}

/// First line of a serde/toml message, without trailing noise.
fn one_line(e: &dyn fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid value")
        .trim_end_matches('.')
        .to_string()
}

/// Parses TOML text into a table (syntax errors: one line with the position).
fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                format!(" at line {line}")
            })
            .unwrap_or_default();
        err(format!(
            "config file {}{at}: {}",
            path.display(),
            one_line(&e.message())
        ))
    })
}

/// Checks every key of `file` against the schema and each value against its
/// type. Returns `(section, key, value)` for each leaf.
fn leaves(file: toml::Table) -> Result<Vec<(String, String, toml::Value)>, ConfigError> {
    let defaults = Config::default().to_toml();
    let mut out = Vec::new();
    for (section, v) in file {
        let Some(schema) = defaults.get(&section).and_then(|s| s.as_table()) else {
            return Err(unknown(&defaults, &section, None));
        };
        let toml::Value::Table(t) = v else {
            return Err(err(format!(
                "config key \"{section}\" must be a table ([{section}])"
            )));
        };
        for (key, value) in t {
            if !schema.contains_key(&key) {
                return Err(unknown(&defaults, &section, Some(&key)));
            }
            // Type check this one value against the schema, to name it in the error.
            let mut probe = defaults.clone();
            if let Some(toml::Value::Table(s)) = probe.get_mut(&section) {
                s.insert(key.clone(), value.clone());
            }
            if let Err(e) = toml::Value::Table(probe).try_into::<Config>() {
                return Err(err(format!(
                    "config key \"{section}.{key}\": {}",
                    one_line(&e)
                )));
            }
            out.push((section.clone(), key, value));
        }
    }
    Ok(out)
}

/// `config key "x.y" is unknown`, with a hint when the key exists elsewhere.
fn unknown(defaults: &toml::Table, section: &str, key: Option<&str>) -> ConfigError {
    let name = match key {
        Some(k) => format!("{section}.{k}"),
        None => section.to_string(),
    };
    let wanted = key.unwrap_or(section);
    let hint = defaults
        .iter()
        .find_map(|(s, t)| {
            let t = t.as_table()?;
            t.contains_key(wanted).then(|| format!("{s}.{wanted}"))
        })
        .map(|h| format!(" (did you mean \"{h}\"?)"))
        .unwrap_or_default();
    err(format!("config key \"{name}\" is unknown{hint}"))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| err(format!("config file {}: {e}", path.display())))
}

/// Resolves the configuration: `cli` is what clap built (flags, environment,
/// defaults), `matches` tells where each value came from, `file` is `--config`.
pub fn resolve(
    matches: &clap::ArgMatches,
    cli: &Config,
    file: Option<&Path>,
) -> Result<(Config, Sources), ConfigError> {
    let mut tree = cli.to_toml();
    let mut sources = Sources::default();
    for (section, t) in &tree {
        for key in t.as_table().into_iter().flat_map(|t| t.keys()) {
            let src = match matches.value_source(key) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            };
            sources.keys.insert(key.clone(), (section.clone(), src));
        }
    }
    if let Some(path) = file {
        let table = parse_toml(path, &read(path)?)?;
        for (section, key, value) in leaves(table)? {
            if sources.source(&key) != Source::Default {
                continue; // a flag or the environment wins over the file
            }
            if let Some(toml::Value::Table(s)) = tree.get_mut(&section) {
                s.insert(key.clone(), value);
            }
            sources.keys.insert(key, (section, Source::File));
        }
    }
    let mut config: Config = toml::Value::Table(tree)
        .try_into()
        .map_err(|e| err(format!("configuration: {}", one_line(&e))))?;
    secure_default(&mut config, &sources);
    config.validate(&sources)?;
    Ok((config, sources))
}

/// Mosquitto 2.0's rule: with no listener named anywhere, ringmq listens
/// on loopback only and lets anonymous clients in there (unless
/// `allow_anonymous` itself was given); a host without IPv6 keeps 127.0.0.1.
/// As soon as a listener is named, anonymous clients need `allow_anonymous`.
fn secure_default(config: &mut Config, sources: &Sources) {
    if sources.source("listen") != Source::Default {
        return;
    }
    if sources.source("allow_anonymous") == Source::Default {
        config.auth.allow_anonymous = true;
    }
    let v6_loopback = std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok();
    if !v6_loopback {
        config.listeners.listen.retain(|l| !l.addr.is_ipv6());
    }
}

/// `ringmq config check FILE`: the file over the defaults, validated.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let table = parse_toml(path, &read(path)?)?;
    let mut tree = Config::default().to_toml();
    let mut sources = Sources::default();
    for (section, key, value) in leaves(table)? {
        if let Some(toml::Value::Table(s)) = tree.get_mut(&section) {
            s.insert(key.clone(), value);
        }
        sources.keys.insert(key, (section, Source::File));
    }
    let config: Config = toml::Value::Table(tree)
        .try_into()
        .map_err(|e| err(format!("configuration: {}", one_line(&e))))?;
    config.validate(&sources)?;
    Ok(config)
}
