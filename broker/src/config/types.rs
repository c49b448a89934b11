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
pub(crate) use serde_via_str;

/// Listener schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `mqtt://`: MQTT over TCP.
    Mqtt,
    /// `mqtts://`: MQTT over TLS.
    Mqtts,
    /// `ws://`: MQTT over WebSocket.
    Ws,
    /// `wss://`: MQTT over WebSocket over TLS.
    Wss,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
    /// Whether connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
    /// Whether it speaks WebSocket (and has a path).
    pub fn is_ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// One listener's own options, given after `?` in its URL (`&` between):
/// `proxy`, `allow_anonymous` (over `--allow-anonymous` for this listener),
/// and for TLS listeners `cert`, `key`, `client_ca`,
/// `require_client_cert`, `identity_as_username`, which override the
/// `--tls-*` settings for this listener only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// PROXY protocol v1/v2 header expected first (`proxy=true`).
    pub proxy: bool,
    /// Anonymous clients on this listener (`allow_anonymous=true|false`);
    /// unset: `--allow-anonymous`.
    pub allow_anonymous: Option<bool>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: Option<bool>,
    pub identity_as_username: Option<bool>,
}

/// One listener: `mqtt://HOST:PORT`, `mqtts://HOST:PORT`,
/// `ws://HOST:PORT/PATH`, `wss://HOST:PORT/PATH` (path default `/mqtt`),
/// optionally followed by `?option=value&...` ([`ListenOptions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    pub scheme: Scheme,
    pub addr: SocketAddr,
    /// WebSocket listeners: the path upgrades are accepted on.
    pub path: Option<String>,
    pub options: ListenOptions,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("option {key}={v}: use true or false")),
    }
}

fn parse_options(scheme: Scheme, query: &str) -> Result<ListenOptions, String> {
    let mut o = ListenOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("option \"{pair}\" is not key=value"))?;
        let tls_only = || {
            if scheme.is_tls() {
                Ok(())
            } else {
                Err(format!("option {k} is for mqtts:// and wss:// listeners"))
            }
        };
        let path = || (!v.is_empty()).then(|| PathBuf::from(v));
        match k {
            "proxy" => o.proxy = parse_bool(k, v)?,
            "allow_anonymous" => o.allow_anonymous = Some(parse_bool(k, v)?),
            "cert" => (tls_only()?, o.cert = path()).1,
            "key" => (tls_only()?, o.key = path()).1,
            "client_ca" => (tls_only()?, o.client_ca = path()).1,
            "require_client_cert" => {
                tls_only()?;
                o.require_client_cert = Some(parse_bool(k, v)?);
            }
            "identity_as_username" => {
                tls_only()?;
                o.identity_as_username = Some(parse_bool(k, v)?);
            }
            _ => {
                return Err(format!(
                    "unknown option \"{k}\" (proxy, allow_anonymous, cert, key, client_ca, require_client_cert, identity_as_username)"
                ))
            }
        }
    }
    Ok(o)
}

impl FromStr for ListenUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (Scheme::Mqtt, rest),
            Some(("mqtts" | "ssl" | "tls", rest)) => (Scheme::Mqtts, rest),
            Some(("ws", rest)) => (Scheme::Ws, rest),
            Some(("wss", rest)) => (Scheme::Wss, rest),
            Some((other, _)) => {
                return Err(format!(
                    "listener scheme \"{other}\" is not supported (use mqtt://, mqtts://, ws:// or wss://)"
                ))
            }
            None => (Scheme::Mqtt, s),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let path = match (scheme.is_ws(), path) {
            (true, None) => Some("/mqtt".to_string()),
            (true, Some(p)) => Some(p.to_string()),
            (false, None) => None,
            (false, Some(p)) => {
                return Err(format!(
                    "\"{s}\": a path ({p}) is only for ws:// and wss:// listeners"
                ))
            }
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("\"{s}\" is not HOST:PORT ({e})"))?
            .next()
            .ok_or_else(|| format!("\"{s}\" resolves to no address"))?;
        let options = parse_options(scheme, query).map_err(|e| format!("\"{s}\": {e}"))?;
        Ok(ListenUrl {
            scheme,
            addr,
            path,
            options,
        })
    }
}

impl fmt::Display for ListenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.addr)?;
        if let Some(p) = &self.path {
            f.write_str(p)?;
        }
        let o = &self.options;
        let mut opts: Vec<String> = Vec::new();
        if o.proxy {
            opts.push("proxy=true".into());
        }
        for (k, v) in [
            ("cert", &o.cert),
            ("key", &o.key),
            ("client_ca", &o.client_ca),
        ] {
            if let Some(v) = v {
                opts.push(format!("{k}={}", v.display()));
            }
        }
        for (k, v) in [
            ("allow_anonymous", o.allow_anonymous),
            ("require_client_cert", o.require_client_cert),
            ("identity_as_username", o.identity_as_username),
        ] {
            if let Some(v) = v {
                opts.push(format!("{k}={v}"));
            }
        }
        if !opts.is_empty() {
            write!(f, "?{}", opts.join("&"))?;
        }
        Ok(())
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
    /// How the shards serve their sockets.
    IoBackendChoice {
        /// io_uring where the kernel has multishot receive and buffer rings (probed), else epoll.
        Auto => "auto",
        /// io_uring: multishot accept/receive into a provided-buffer ring, sends as SQEs.
        IoUring => "io_uring",
        /// One epoll set per shard, recv/send syscalls.
        Epoll => "epoll",
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
        assert!("http://127.0.0.1:80".parse::<ListenUrl>().is_err());
        assert!("mqtt://nohost".parse::<ListenUrl>().is_err());
    }

    #[test]
    fn listen_url_schemes_paths_and_options() {
        let l: ListenUrl = "ws://127.0.0.1:80".parse().unwrap();
        assert_eq!(l.path.as_deref(), Some("/mqtt"));
        assert_eq!(l.to_string(), "ws://127.0.0.1:80/mqtt");
        let l: ListenUrl = "wss://[::1]:443/broker?proxy=true".parse().unwrap();
        assert_eq!(
            (l.scheme, l.path.as_deref()),
            (Scheme::Wss, Some("/broker"))
        );
        assert!(l.options.proxy);
        assert_eq!(l.options.allow_anonymous, None);
        assert_eq!(l.to_string(), "wss://[::1]:443/broker?proxy=true");
        let l: ListenUrl = "mqtt://127.0.0.1:1884?allow_anonymous=true"
            .parse()
            .unwrap();
        assert_eq!(l.options.allow_anonymous, Some(true));
        assert_eq!(l.to_string(), "mqtt://127.0.0.1:1884?allow_anonymous=true");
        let s = "mqtts://0.0.0.0:8884?cert=/c.pem&key=/k.pem&client_ca=/ca.pem&require_client_cert=true&identity_as_username=false";
        let l: ListenUrl = s.parse().unwrap();
        assert_eq!(l.scheme, Scheme::Mqtts);
        assert_eq!(
            l.options.cert.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!(l.options.require_client_cert, Some(true));
        assert_eq!(l.options.identity_as_username, Some(false));
        assert_eq!(l.to_string(), s);
        assert_eq!(l.to_string().parse::<ListenUrl>().unwrap(), l);
        for bad in [
            "mqtt://127.0.0.1:1883/path",
            "mqtt://127.0.0.1:1883?cert=/c.pem",
            "mqtts://127.0.0.1:1883?proxy=yes",
            "mqtts://127.0.0.1:1883?nope=1",
            "mqtts://127.0.0.1:1883?proxy",
            "mqtt://127.0.0.1:1883?allow_anonymous=yes",
        ] {
            assert!(bad.parse::<ListenUrl>().is_err(), "{bad}");
        }
    }
}
