//! Bans by client id, username or source address (CIDR, v4 and v6), with an
//! optional end; and temporary bans of an address after repeated
//! authentication failures.
//!
//! One [`Bans`] per node, shared by every shard (`Arc`): it is consulted
//! once per CONNECT, never on the message path, so a mutex is fine; an
//! atomic count lets the common case (no bans) skip the lock.
//!
//! Manual bans persist in `DATA_DIR/bans.txt` (one ban a line, written
//! atomically on every change): an operator's ban must survive a restart,
//! or a restart would quietly lift it. Auto-bans are not persisted: they
//! are short and re-earned by the same failures.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Does the block hold `ip`? A v4 block also holds v4-mapped v6 addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("\"{a}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("\"{p}\" is not a prefix length 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a ban matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    ClientId(String),
    Username(String),
    Address(Cidr),
}

impl Target {
    /// Parses `KIND VALUE` as the admin protocol gives it (`client_id`,
    /// `username`, `address`).
    pub fn parse(kind: &str, value: &str) -> Result<Target, String> {
        match kind {
            "client_id" | "client-id" | "clientid" => Ok(Target::ClientId(value.into())),
            "username" | "user" => Ok(Target::Username(value.into())),
            "address" | "addr" | "ip" => Ok(Target::Address(value.parse()?)),
            k => Err(format!(
                "ban kind \"{k}\" is not client_id, username or address"
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::ClientId(_) => "client_id",
            Target::Username(_) => "username",
            Target::Address(_) => "address",
        }
    }

    pub fn value(&self) -> String {
        match self {
            Target::ClientId(s) | Target::Username(s) => s.clone(),
            Target::Address(c) => c.to_string(),
        }
    }
}

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub target: Target,
    /// When it ends (`None`: until removed).
    pub until: Option<SystemTime>,
    /// Set by the failure counter rather than an operator.
    pub auto: bool,
}

/// Auto-ban settings (`--auth-fail-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBan {
    /// Failures from one address within `window` that ban it (0: never).
    pub max_failures: u32,
    pub window: Duration,
    /// How long the address stays banned.
    pub ban_for: Duration,
}

impl Default for AutoBan {
    fn default() -> Self {
        AutoBan {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban_for: Duration::from_secs(600),
        }
    }
}

/// Counters (read by metrics).
#[derive(Debug, Default)]
pub struct BanStats {
    /// CONNECTs refused because of a ban.
    pub refused: AtomicU64,
    /// Auto-bans set.
    pub auto_bans: AtomicU64,
    /// Authentication failures counted.
    pub auth_failures: AtomicU64,
}

#[derive(Default)]
struct Inner {
    bans: Vec<Ban>,
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Every ban of this node.
pub struct Bans {
    inner: Mutex<Inner>,
    active: AtomicUsize,
    pub auto: AutoBan,
    pub stats: BanStats,
    file: Option<PathBuf>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Bans {
    /// Bans persisted in `file` (if given and present), auto-bans per `auto`.
    pub fn new(auto: AutoBan, file: Option<PathBuf>) -> Bans {
        let mut inner = Inner::default();
        if let Some(f) = &file {
            if let Ok(text) = std::fs::read_to_string(f) {
                inner.bans = parse_file(&text);
            }
        }
        let n = inner.bans.len();
        Bans {
            inner: Mutex::new(inner),
            active: AtomicUsize::new(n),
            auto,
            stats: BanStats::default(),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ban refusing this CONNECT, if any (expired bans are dropped here).
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        addr: Option<IpAddr>,
    ) -> Option<Ban> {
        if self.active.load(Relaxed) == 0 {
            return None;
        }
        let mut g = self.lock();
        self.expire(&mut g);
        let hit = g.bans.iter().find(|b| match &b.target {
            Target::ClientId(c) => c == client_id,
            Target::Username(u) => username == Some(u.as_str()),
            Target::Address(c) => addr.is_some_and(|a| c.contains(a)),
        })?;
        self.stats.refused.fetch_add(1, Relaxed);
        Some(hit.clone())
    }

    fn expire(&self, g: &mut Inner) {
        let now = SystemTime::now();
        let before = g.bans.len();
        g.bans.retain(|b| b.until.is_none_or(|u| u > now));
        if g.bans.len() != before {
            self.active.store(g.bans.len(), Relaxed);
        }
    }

    /// Adds (or replaces) a ban; `ttl` `None` lasts until removed.
    pub fn add(&self, target: Target, ttl: Option<Duration>) {
        let mut g = self.lock();
        g.bans.retain(|b| b.target != target);
        g.bans.push(Ban {
            target,
            until: ttl.map(|d| SystemTime::now() + d),
            auto: false,
        });
        self.active.store(g.bans.len(), Relaxed);
        self.save(&g);
    }

    /// Removes a ban; false when there was none.
    pub fn remove(&self, target: &Target) -> bool {
        let mut g = self.lock();
        let before = g.bans.len();
        g.bans.retain(|b| &b.target != target);
        let removed = g.bans.len() != before;
        self.active.store(g.bans.len(), Relaxed);
        if removed {
            self.save(&g);
        }
        removed
    }

    /// Bans in force.
    pub fn list(&self) -> Vec<Ban> {
        let mut g = self.lock();
        self.expire(&mut g);
        g.bans.clone()
    }

    /// Bans in force (gauge).
    pub fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    /// One authentication failure from `addr`. Returns true when it bans the
    /// address now (logged once, here).
    pub fn auth_failed(&self, addr: IpAddr) -> bool {
        self.stats.auth_failures.fetch_add(1, Relaxed);
        let a = self.auto;
        if a.max_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let mut g = self.lock();
        let q = g.failures.entry(addr).or_default();
        while q.front().is_some_and(|&t| now.duration_since(t) > a.window) {
            q.pop_front();
        }
        q.push_back(now);
        if q.len() < a.max_failures as usize {
            if g.failures.len() > 100_000 {
                // Bounded memory under a spray of addresses: forget the idle ones.
                g.failures
                    .retain(|_, q| q.back().is_some_and(|&t| now.duration_since(t) <= a.window));
            }
            return false;
        }
        g.failures.remove(&addr);
        let target = Target::Address(Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        });
        g.bans.retain(|b| b.target != target);
        g.bans.push(Ban {
            target,
            until: Some(SystemTime::now() + a.ban_for),
            auto: true,
        });
        self.active.store(g.bans.len(), Relaxed);
        self.stats.auto_bans.fetch_add(1, Relaxed);
        tracing::warn!(
            %addr,
            failures = a.max_failures,
            window_secs = a.window.as_secs(),
            ban_secs = a.ban_for.as_secs(),
            "address banned after repeated authentication failures"
        );
        true
    }

    /// Writes the manual bans (temp file + rename). Errors are logged: the
    /// ban is in force either way.
    fn save(&self, g: &Inner) {
        let Some(f) = &self.file else { return };
        let mut text = String::from("# ringmq bans: KIND UNTIL_UNIX_SECS (0: none) VALUE\n");
        for b in g.bans.iter().filter(|b| !b.auto) {
            let until = b.until.map_or(0, unix);
            text.push_str(&format!(
                "{} {} {}\n",
                b.target.kind(),
                until,
                b.target.value()
            ));
        }
        let tmp = f.with_extension("tmp");
        let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = r {
            tracing::error!(file = %f.display(), error = %e, "cannot save bans");
        }
    }
}

/// `KIND UNTIL VALUE` lines (VALUE last: client ids may hold spaces).
fn parse_file(text: &str) -> Vec<Ban> {
    let now = SystemTime::now();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let (kind, until, value) = (it.next()?, it.next()?, it.next()?);
            let until: u64 = until.parse().ok()?;
            let until = (until != 0).then(|| UNIX_EPOCH + Duration::from_secs(until));
            let target = Target::parse(kind, value).ok()?;
            Some(Ban {
                target,
                until,
                auto: false,
            })
        })
        .filter(|b| b.until.is_none_or(|u| u > now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_v4_v6_and_mapped() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("2001:db9::5")));
        assert!(!c.contains(ip("10.1.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn ban_by_each_kind_and_remove() {
        let b = Bans::new(AutoBan::default(), None);
        assert!(b.check("c", None, None).is_none());
        b.add(Target::ClientId("c1".into()), None);
        b.add(Target::Username("bob".into()), None);
        b.add(Target::Address("192.168.0.0/24".parse().unwrap()), None);
        assert!(b.check("c1", None, None).is_some());
        assert!(b.check("c2", Some("bob"), None).is_some());
        assert!(b
            .check("c2", Some("alice"), Some(ip("192.168.0.7")))
            .is_some());
        assert!(b
            .check("c2", Some("alice"), Some(ip("192.168.1.7")))
            .is_none());
        assert!(b.remove(&Target::ClientId("c1".into())));
        assert!(!b.remove(&Target::ClientId("c1".into())));
        assert!(b.check("c1", None, None).is_none());
        assert_eq!(b.stats.refused.load(Relaxed), 3);
    }

    #[test]
    fn bans_expire() {
        let b = Bans::new(AutoBan::default(), None);
        b.add(
            Target::ClientId("c".into()),
            Some(Duration::from_millis(50)),
        );
        assert!(b.check("c", None, None).is_some());
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.check("c", None, None).is_some() {
            assert!(Instant::now() < deadline, "ban never expired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn auto_ban_after_n_failures_in_window() {
        let auto = AutoBan {
            max_failures: 3,
            window: Duration::from_secs(60),
            ban_for: Duration::from_secs(60),
        };
        let b = Bans::new(auto, None);
        let a = ip("10.0.0.5");
        assert!(!b.auth_failed(a));
        assert!(!b.auth_failed(ip("10.0.0.6")));
        assert!(!b.auth_failed(a));
        assert!(b.check("x", None, Some(a)).is_none());
        assert!(b.auth_failed(a));
        assert!(b.check("x", None, Some(a)).is_some_and(|b| b.auto));
        assert!(b.check("x", None, Some(ip("10.0.0.6"))).is_none());
        assert_eq!(b.stats.auto_bans.load(Relaxed), 1);
        let off = Bans::new(
            AutoBan {
                max_failures: 0,
                ..auto
            },
            None,
        );
        for _ in 0..10 {
            assert!(!off.auth_failed(a));
        }
    }

    #[test]
    fn manual_bans_persist_auto_bans_do_not() {
        let dir = std::env::temp_dir().join(format!("ringmq-bans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bans.txt");
        let _ = std::fs::remove_file(&f);
        let auto = AutoBan {
            max_failures: 1,
            ..AutoBan::default()
        };
        {
            let b = Bans::new(auto, Some(f.clone()));
            b.add(Target::ClientId("with space".into()), None);
            b.add(
                Target::Address("::1".parse().unwrap()),
                Some(Duration::from_secs(600)),
            );
            b.auth_failed(ip("10.9.9.9"));
            assert_eq!(b.list().len(), 3);
        }
        let b = Bans::new(auto, Some(f.clone()));
        let l = b.list();
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(b.check("with space", None, None).is_some());
        assert!(b
            .check("z", None, Some(ip("::1")))
            .is_some_and(|b| b.until.is_some()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
