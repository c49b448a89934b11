//! Value types of the configuration that are more than a number: listener
//! URLs, CPU lists, optional addresses and paths, and the enums.
//!
//! Each parses from the same text on the command line, in the environment and
//! in the TOML file (`FromStr`), and prints back to it (`Display`), so the
//! example file, `--help` and error messages all use one spelling.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Serde through `Display`/`FromStr`, so TOML uses the flag's spelling.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Listener schemes. Only plain MQTT over TCP today; TLS and WebSocket
/// listeners will be further variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// MQTT over TCP.
    Mqtt,
}

/// One listener: `mqtt://HOST:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    pub scheme: Scheme,
    pub addr: SocketAddr,
}

impl FromStr for ListenUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (Scheme::Mqtt, rest),
            Some((other, _)) => {
                return Err(format!(
                    "listener scheme \"{other}\" is not supported (use mqtt://HOST:PORT)"
                ))
            }
            None => (Scheme::Mqtt, s),
        };
        let addr = rest
            .to_socket_addrs()
            .map_err(|e| format!("\"{s}\" is not HOST:PORT ({e})"))?
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address"))?;
        Ok(ListenUrl { scheme, addr })
    }
}

impl fmt::Display for ListenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Mqtt => write!(f, "mqtt://{}", self.addr),
        }
    }
}
serde_via_str!(ListenUrl);

/// CPUs to pin shards to: `2-7,9`. Empty: CPUs `0..cores`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |t: &str| {
                t.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("\"{s}\" is not a CPU list like 2-7,9"))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("CPU range {part} is reversed"));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(num(part)?),
            }
        }
        let mut seen = cpus.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("\"{s}\" lists a CPU twice"));
        }
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let v = &self.0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            if j > i {
                write!(f, "{}-{}", v[i], v[j])?;
            } else {
                write!(f, "{}", v[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}
serde_via_str!(CpuList);

/// An optional `HOST:PORT`; the empty string means off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptAddr(pub Option<SocketAddr>);

impl FromStr for OptAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() || s == "off" {
            return Ok(OptAddr(None));
        }
        let addr = s
            .to_socket_addrs()
            .map_err(|e| format!("\"{s}\" is not HOST:PORT ({e})"))?
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address"))?;
        Ok(OptAddr(Some(addr)))
    }
}

impl fmt::Display for OptAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => Ok(()),
        }
    }
}
serde_via_str!(OptAddr);

/// An optional path; the empty string means "the default".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptPath(pub Option<PathBuf>);

impl FromStr for OptPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(OptPath((!s.is_empty()).then(|| PathBuf::from(s))))
    }
}

impl fmt::Display for OptPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{}", p.display()),
            None => Ok(()),
        }
    }
}
serde_via_str!(OptPath);

/// Enums whose text form is a fixed list of words.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name { $($(#[$vm])* #[value(name = $s)] $v,)* }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$v),)*
                    _ => Err(format!(
                        "\"{s}\" is not one of {}",
                        [$($s),*].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$v => $s,)* })
            }
        }
        serde_via_str!($name);
    };
}

word_enum! {
    /// When an acknowledged QoS 1/2 message is durable.
    Durability {
        /// Acknowledge only after the commit is durable.
        Sync => "sync",
        /// Commit every `batch_interval_ms`, acknowledge before.
        Batch => "batch",
        /// Memory only.
        None => "none",
    }
}

word_enum! {
    /// What to do when a session's queue is full.
    Overflow {
        /// Drop the message that arrived.
        DropNewest => "drop-newest",
        /// Drop the oldest queued message.
        DropOldest => "drop-oldest",
    }
}

word_enum! {
    /// Log line format.
    LogFormat {
        /// Human-readable lines.
        Text => "text",
        /// One JSON object per line.
        Json => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_round_trips() {
        let l: CpuList = "2-7,9".parse().unwrap();
        assert_eq!(l.0, vec![2, 3, 4, 5, 6, 7, 9]);
        assert_eq!(l.to_string(), "2-7,9");
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("1,1".parse::<CpuList>().is_err());
        assert_eq!("".parse::<CpuList>().unwrap(), CpuList::default());
    }

    #[test]
    fn listen_url_parses() {
        let l: ListenUrl = "mqtt://127.0.0.1:1883".parse().unwrap();
        assert_eq!(l.to_string(), "mqtt://127.0.0.1:1883");
        assert!("ws://127.0.0.1:80".parse::<ListenUrl>().is_err());
        assert!("mqtt://nohost".parse::<ListenUrl>().is_err());
    }
}
