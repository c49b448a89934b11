//! Wills and node loss (docs/cluster.md): the shards' will registry on the
//! raft crate's replicated map, and the thread that publishes the wills of
//! a dead node's clients.
//!
//! Keys (the broker gives them meaning, as it does for `own/`):
//!
//! ```text
//! will/<ownership epoch u64 BE><client id>  ->  node u64 BE | delay u32 BE | will
//! ```
//!
//! one per open connection with a will (the will in the shard store's
//! layout). The epoch is the connection's ownership epoch, so each key is
//! written by one node only and a reconnect never overwrites an older one.
//!
//! - Shards register, discard and take through [`Registry`]: a channel to
//!   the `ringmq-wills` thread; nothing on CONNECT or PUBLISH waits for it.
//! - The thread commits what queued as one raft command (Put, Delete, Cas),
//!   one command at a time, so a node's calls apply in the order made.
//! - It indexes every will key this node applied (a watch, then a scan, as
//!   `fence.rs` does) and reads `live/` every tick. The wills of a node the
//!   leader recorded down are due `delay` seconds after this node saw it
//!   down; those this node registered before it restarted (no process of
//!   this run registered them) are due `delay` after the start.
//! - A due will is taken by compare-and-delete on its key's version: one
//!   node wins, whoever else tries. The winner publishes it through its own
//!   router, unless the will has a delay and its client connected again
//!   meanwhile (a later ownership epoch: [MQTT-3.1.3-9]).
//! - A node publishing its own client's will takes it the same way first
//!   (`take`), so a will that a survivor already published (this node was
//!   thought dead) is not published again.

use ringmq_raft::facade::{keys, liveness};
use ringmq_raft::{Change, Command, Op, OpResult, RaftHandle};
use ringmq_shard::wills::{TakeFuture, WillPublisher, WillRegistry};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Key prefix of registered wills.
pub const WILL: &[u8] = b"will/";

/// How often liveness and due wills are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Most requests and due wills in one command.
const MAX_OPS: usize = 4096;
/// Attempts of a discard whose command failed.
const DISCARD_TRIES: u8 = 5;
/// A take of a due will whose command failed is tried again after this.
const RETRY: Duration = Duration::from_secs(1);

pub fn key(client_id: &[u8], epoch: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(WILL.len() + 8 + client_id.len());
    k.extend_from_slice(WILL);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(client_id);
    k
}

/// (epoch, client id) of a will key.
pub fn parse_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(WILL)?;
    let (epoch, client) = rest.split_at_checked(8)?;
    Some((u64::from_be_bytes(epoch.try_into().ok()?), client))
}

const HEAD: usize = 12;

fn value(node: u64, delay: u32, will: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEAD + will.len());
    v.extend_from_slice(&node.to_be_bytes());
    v.extend_from_slice(&delay.to_be_bytes());
    v.extend_from_slice(will);
    v
}

/// (node, delay) of a will value.
fn parse_value(v: &[u8]) -> Option<(u64, u32)> {
    let node = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let delay = u32::from_be_bytes(v.get(8..HEAD)?.try_into().ok()?);
    Some((node, delay))
}

/// What the will registry did (`ctl cluster status --json` "wills", metrics).
#[derive(Debug, Default)]
pub struct WillStats {
    /// Wills registered by this node's connections.
    pub registered: AtomicU64,
    /// Registered wills discarded (DISCONNECT 0x00, reconnect within the delay, fenced).
    pub discarded: AtomicU64,
    /// Own wills this node took and published.
    pub published_own: AtomicU64,
    /// Own wills not published: another node had taken them first.
    pub taken_elsewhere: AtomicU64,
    /// Wills of dead nodes' clients (or of this node's previous run) published here.
    pub published_for_lost: AtomicU64,
    /// Such wills dropped unpublished: their client connected again within the delay.
    pub cancelled_for_lost: AtomicU64,
    /// Commands of the registry that failed (no quorum, timeout).
    pub write_failures: AtomicU64,
}

/// A reading of [`WillStats`] (metrics, `ctl cluster status --json`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WillCounters {
    pub registered: u64,
    pub discarded: u64,
    pub published_own: u64,
    pub taken_elsewhere: u64,
    pub published_for_lost: u64,
    pub cancelled_for_lost: u64,
    pub write_failures: u64,
}

impl WillStats {
    pub fn snapshot(&self) -> WillCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WillCounters {
            registered: g(&self.registered),
            discarded: g(&self.discarded),
            published_own: g(&self.published_own),
            taken_elsewhere: g(&self.taken_elsewhere),
            published_for_lost: g(&self.published_for_lost),
            cancelled_for_lost: g(&self.cancelled_for_lost),
            write_failures: g(&self.write_failures),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A request of a shard to the will thread.
pub enum Req {
    Register {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Discard {
        key: Vec<u8>,
        tries: u8,
    },
    Take {
        key: Vec<u8>,
        reply: flume::Sender<bool>,
    },
}

/// The shards' side: [`WillRegistry`] over a channel to the will thread.
pub struct Registry {
    pub(super) tx: flume::Sender<Req>,
    pub(super) node: u64,
}

impl WillRegistry for Registry {
    fn register(&self, client_id: &[u8], epoch: u64, delay: u32, will: Vec<u8>) {
        let key = key(client_id, epoch);
        let value = value(self.node, delay, &will);
        let _ = self.tx.send(Req::Register { key, value });
    }

    fn discard(&self, client_id: &[u8], epoch: u64) {
        let key = key(client_id, epoch);
        let _ = self.tx.send(Req::Discard { key, tries: 0 });
    }

    fn take(&self, client_id: &[u8], epoch: u64) -> TakeFuture {
        let (reply, rx) = flume::bounded(1);
        let key = key(client_id, epoch);
        let sent = self.tx.send(Req::Take { key, reply }).is_ok();
        // No thread to ask (stopping): nobody else can take it from here.
        Box::pin(async move { !sent || rx.recv_async().await.unwrap_or(true) })
    }
}

/// Starts the will thread; it ends when the raft node stops.
pub fn start(
    handle: &RaftHandle,
    tx: flume::Sender<Req>,
    rx: flume::Receiver<Req>,
    publisher: WillPublisher,
    stats: Arc<WillStats>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let changes = handle
        .watch(WILL)
        .map_err(|e| format!("cluster: cannot watch wills: {e}"))?;
    let existing = handle
        .scan_local(WILL)
        .map_err(|e| format!("cluster: cannot read wills: {e}"))?;
    let mut w = Worker {
        me: handle.id(),
        handle: handle.clone(),
        publisher,
        stats,
        requests: rx,
        _keep: tx,
        changes,
        mine: HashMap::new(),
        index: HashMap::new(),
        due: HashMap::new(),
        down: HashMap::new(),
        retry: Vec::new(),
        started: Instant::now(),
    };
    std::thread::Builder::new()
        .name("ringmq-wills".into())
        .spawn(move || {
            for (k, v) in existing {
                w.index_put(k, v.version, v.value);
            }
            w.run();
        })
        .map_err(|e| format!("cluster: cannot start the will thread: {e}"))
}

/// A will key as applied here (the will itself stays in the replicated map:
/// it is read from there when it falls due).
struct Entry {
    version: u64,
    node: u64,
    delay: u32,
}

/// What woke the will thread.
enum Ev {
    Req(Req),
    Change(Change),
    Stopped,
    Tick,
}

/// What to do with an op's result.
enum Then {
    Registered(Vec<u8>),
    Discarded(Vec<u8>, u8),
    /// A take by compare-and-delete on the version this node wrote.
    Take(Vec<u8>, flume::Sender<bool>),
    /// A take of a key this node wrote but whose version it does not know
    /// (registered in this very command, or its command failed): nobody
    /// else can have taken it, so it is deleted and published.
    TakeUnknown(Vec<u8>, flume::Sender<bool>),
    /// A lost client's due will: key, version, the value to publish if
    /// won (None: not to be published).
    Lost(Vec<u8>, u64, Option<Vec<u8>>),
}

struct Worker {
    me: u64,
    handle: RaftHandle,
    publisher: WillPublisher,
    stats: Arc<WillStats>,
    requests: flume::Receiver<Req>,
    /// Keeps the request channel open (the selector must not spin on it).
    _keep: flume::Sender<Req>,
    changes: flume::Receiver<Change>,
    /// Keys registered by this run: the version written (None: unknown).
    mine: HashMap<Vec<u8>, Option<u64>>,
    /// Every will key applied here.
    index: HashMap<Vec<u8>, Entry>,
    /// Wills of lost clients this node will try to take: when, at which version.
    due: HashMap<Vec<u8>, (Instant, u64)>,
    /// Nodes recorded down, since when this node saw it.
    down: HashMap<u64, Instant>,
    /// Requests to send again (failed discards).
    retry: Vec<Req>,
    started: Instant,
}

impl Worker {
    fn run(&mut self) {
        let mut last_tick = Instant::now() - TICK;
        loop {
            let mut reqs = std::mem::take(&mut self.retry);
            let first = flume::Selector::new()
                .recv(&self.requests, |r| r.map_or(Ev::Tick, Ev::Req))
                .recv(&self.changes, |c| c.map_or(Ev::Stopped, Ev::Change))
                .wait_timeout(TICK)
                .unwrap_or(Ev::Tick);
            match first {
                Ev::Req(r) => reqs.push(r),
                Ev::Change(c) => self.apply(c),
                Ev::Stopped => return, // the raft node stopped
                Ev::Tick => {}
            }
            loop {
                match self.changes.try_recv() {
                    Ok(c) => self.apply(c),
                    Err(flume::TryRecvError::Empty) => break,
                    Err(flume::TryRecvError::Disconnected) => return,
                }
            }
            while reqs.len() < MAX_OPS {
                match self.requests.try_recv() {
                    Ok(r) => reqs.push(r),
                    Err(_) => break,
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
            self.commit(reqs);
        }
    }

    fn apply(&mut self, c: Change) {
        match c.value {
            Some(v) => self.index_put(c.key, c.version, v),
            None => {
                self.index.remove(&c.key);
                self.due.remove(&c.key);
            }
        }
    }

    fn index_put(&mut self, key: Vec<u8>, version: u64, value: Vec<u8>) {
        let Some((node, delay)) = parse_value(&value) else {
            return;
        };
        let after = Duration::from_secs(u64::from(delay));
        if node == self.me && !self.mine.contains_key(&key) {
            // Registered by this node before it restarted: its connection
            // was lost with that run.
            self.due
                .insert(key.clone(), (self.started + after, version));
        } else if let Some(since) = self.down.get(&node) {
            self.due.insert(key.clone(), (*since + after, version));
        }
        let e = Entry {
            version,
            node,
            delay,
        };
        self.index.insert(key, e);
    }

    /// Reads liveness: the wills of a node newly recorded down fall due.
    fn tick(&mut self) {
        let Ok(live) = self.handle.scan_local(keys::LIVE) else {
            return;
        };
        let now = Instant::now();
        for (k, v) in live {
            let (Some(node), Some(l)) = (keys::live_node(&k), liveness::decode_value(&v.value))
            else {
                continue;
            };
            if node == self.me {
                continue;
            }
            if l.up {
                // Its wills already due stay due: their connections were lost.
                self.down.remove(&node);
            } else if let std::collections::hash_map::Entry::Vacant(v) = self.down.entry(node) {
                tracing::info!(node, "node recorded down: its clients' wills fall due");
                v.insert(now);
                for (key, e) in &self.index {
                    if e.node == node {
                        let at = now + Duration::from_secs(u64::from(e.delay));
                        self.due.entry(key.clone()).or_insert((at, e.version));
                    }
                }
            }
        }
    }

    /// Publish a lost client's will? Always without a delay; with one, not
    /// when its client connected again (a later epoch) [MQTT-3.1.3-9].
    fn should_publish(&self, key: &[u8], e: &Entry) -> bool {
        let Some((epoch, client)) = parse_key(key) else {
            return false;
        };
        if e.delay == 0 {
            return true;
        }
        match self.handle.ownership().owner_local(client) {
            Ok(Some(o)) => o.epoch <= epoch,
            _ => true,
        }
    }

    fn commit(&mut self, reqs: Vec<Req>) {
        let now = Instant::now();
        let mut due: Vec<(Vec<u8>, u64)> = Vec::new();
        self.due.retain(|k, (at, v)| {
            if *at <= now && due.len() < MAX_OPS {
                due.push((k.clone(), *v));
                false
            } else {
                true
            }
        });
        if reqs.is_empty() && due.is_empty() {
            return;
        }
        let mut ops = Vec::with_capacity(reqs.len() + due.len());
        let mut then = Vec::with_capacity(ops.capacity());
        let mut fresh: HashSet<Vec<u8>> = HashSet::new();
        for r in reqs {
            match r {
                Req::Register { key, value } => {
                    fresh.insert(key.clone());
                    ops.push(Op::Put {
                        key: key.clone(),
                        value,
                    });
                    then.push(Then::Registered(key));
                }
                Req::Discard { key, tries } => {
                    ops.push(Op::Delete { key: key.clone() });
                    then.push(Then::Discarded(key, tries));
                }
                Req::Take { key, reply } => match self.mine.get(&key) {
                    Some(Some(v)) if !fresh.contains(&key) => {
                        ops.push(Op::Cas {
                            key: key.clone(),
                            expected: *v,
                            value: None,
                        });
                        then.push(Then::Take(key, reply));
                    }
                    _ => {
                        ops.push(Op::Delete { key: key.clone() });
                        then.push(Then::TakeUnknown(key, reply));
                    }
                },
            }
        }
        for (key, version) in due {
            let Some(e) = self.index.get(&key).filter(|e| e.version == version) else {
                continue;
            };
            let publish = self.should_publish(&key, e).then(|| {
                let v = self.handle.read_local(&key).ok().flatten();
                v.filter(|v| v.version == version).map(|v| v.value)
            });
            // Read here: once taken, the key is gone.
            let publish = publish.flatten();
            ops.push(Op::Cas {
                key: key.clone(),
                expected: version,
                value: None,
            });
            then.push(Then::Lost(key, version, publish));
        }
        if ops.is_empty() {
            return;
        }
        let n = ops.len();
        let res = futures_lite::future::block_on(self.handle.write(Command { ops }));
        match res {
            Ok(r) if r.results.len() == n => {
                for (t, r) in then.into_iter().zip(r.results) {
                    self.done(t, Some(r));
                }
            }
            other => {
                let e = match other {
                    Ok(r) => format!("{} results for {n} ops", r.results.len()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(ops = n, error = %e, "will registry: command failed");
                inc(&self.stats.write_failures);
                for t in then {
                    self.done(t, None);
                }
            }
        }
    }

    /// Acts on one op's result (`None`: its command failed).
    fn done(&mut self, t: Then, r: Option<OpResult>) {
        let won = matches!(r, Some(OpResult::Deleted { existed: true }));
        match t {
            Then::Registered(key) => {
                let v = match r {
                    Some(OpResult::Written { version }) => Some(version),
                    _ => None,
                };
                inc(&self.stats.registered);
                self.mine.insert(key, v);
            }
            Then::Discarded(key, tries) => {
                if r.is_none() && tries + 1 < DISCARD_TRIES {
                    self.retry.push(Req::Discard {
                        key,
                        tries: tries + 1,
                    });
                } else {
                    inc(&self.stats.discarded);
                    self.mine.remove(&key);
                }
            }
            Then::Take(key, reply) => {
                self.mine.remove(&key);
                // A failed command: publish (at least once rather than never).
                let ok = r.is_none() || won;
                inc(if ok {
                    &self.stats.published_own
                } else {
                    &self.stats.taken_elsewhere
                });
                let _ = reply.send(ok);
            }
            Then::TakeUnknown(key, reply) => {
                self.mine.remove(&key);
                inc(&self.stats.published_own);
                let _ = reply.send(true);
            }
            Then::Lost(key, version, publish) => {
                if r.is_none() {
                    self.due.insert(key, (Instant::now() + RETRY, version));
                    return;
                }
                if !won {
                    return; // another node took it
                }
                self.index.remove(&key);
                let client = parse_key(&key).map(|(_, c)| c).unwrap_or_default();
                let will = publish.as_ref().and_then(|v| v.get(HEAD..));
                if will.is_some_and(|w| self.publisher.publish(client, w)) {
                    tracing::debug!("published a lost client's will");
                    inc(&self.stats.published_for_lost);
                } else {
                    inc(&self.stats.cancelled_for_lost);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = key(b"dev/1", 0x0102_0304_0506_0708);
        assert_eq!(parse_key(&k), Some((0x0102_0304_0506_0708, &b"dev/1"[..])));
        assert_eq!(parse_key(b"will/short"), None);
        assert_eq!(parse_key(b"own/x"), None);
        let v = value(3, 7, b"W");
        assert_eq!(parse_value(&v), Some((3, 7)));
        assert_eq!(&v[HEAD..], b"W");
        assert_eq!(parse_value(&v[..5]), None);
    }
}
