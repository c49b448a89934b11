//! Value types of the `[cluster]` section: a peer (`ID@HOST:PORT`) and a
//! duration with a unit (`500ms`, `3s`, `1m`).

use super::types::serde_via_str;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One member of the initial cluster: `ID@HOST:PORT` (the address other
/// nodes dial for this node's cluster port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

impl FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (id, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("\"{s}\" is not ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| format!("\"{s}\": the node id must be a number of 1 or more"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{s}\": the address must be HOST:PORT"))?;
        if host.is_empty() || !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(format!(
                "\"{s}\": the address must be HOST:PORT with a port of 1-65535"
            ));
        }
        Ok(Peer {
            id,
            addr: addr.to_string(),
        })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

/// A duration in milliseconds, written with a unit: `250ms`, `3s`, `2m`
/// (a bare number is milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub u64);

impl Millis {
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl FromStr for Millis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (n, mul) = if let Some(n) = t.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1000)
        } else if let Some(n) = t.strip_suffix('m') {
            (n, 60_000)
        } else {
            (t, 1)
        };
        n.trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mul))
            .map(Millis)
            .ok_or_else(|| format!("\"{s}\" is not a duration (e.g. 500ms, 3s, 1m)"))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 && self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

serde_via_str!(Peer);
serde_via_str!(Millis);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_print_back() {
        let p: Peer = "2@127.0.0.1:7102".parse().unwrap();
        assert_eq!((p.id, p.addr.as_str()), (2, "127.0.0.1:7102"));
        assert_eq!(p.to_string(), "2@127.0.0.1:7102");
        let p: Peer = "3@node3.example:7103".parse().unwrap();
        assert_eq!(p.addr, "node3.example:7103");
        let p: Peer = "4@[::1]:7104".parse().unwrap();
        assert_eq!(p.addr, "[::1]:7104");
        for bad in [
            "",
            "1",
            "0@h:1",
            "x@h:1",
            "1@h",
            "1@:5",
            "1@h:0",
            "1@h:99999",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!("3s".parse::<Millis>().unwrap(), Millis(3000));
        assert_eq!("250ms".parse::<Millis>().unwrap(), Millis(250));
        assert_eq!("2m".parse::<Millis>().unwrap(), Millis(120_000));
        assert_eq!("40".parse::<Millis>().unwrap(), Millis(40));
        assert_eq!(Millis(3000).to_string(), "3s");
        assert_eq!(Millis(1500).to_string(), "1500ms");
        for bad in ["", "s", "3h", "-1s", "1.5s"] {
            assert!(bad.parse::<Millis>().is_err(), "{bad}");
        }
    }
}
