//! Durable broker state on LMDB (heed): one environment per shard under
//! `<data-dir>/shard-<N>/`, written by group commit off the shard thread.
//! Key schema, record layout, format version and figures: `docs/storage.md`.
//!
//! # Layout of this module
//! - `mod.rs`: the API below ([`Store`], [`StoreHandle`], [`StoreOptions`]).
//! - `layout.rs`: data dir marker, lock file, opening and checking environments.
//! - `holder.rs`: who holds the lock, from `/proc/locks`.
//! - `recover.rs`: [`open`] + load of every shard, retained merge, startup purge.
//! - `prepared.rs`: prepared inbound QoS 2 rows matched with other shards' origin rows.
//! - `engine.rs`: group commit on the shard, [`Ticket`], [`StoreStats`].
//! - `batch.rs`: one batch = one write transaction (blocking pool), map growth.
//! - `keys.rs`, `records.rs`, `message.rs`, `enc.rs`: key schema and encodings.
//! - `error.rs`: [`StoreError`], one line each.
//!
//! # How the broker uses it
//! ```ignore
//! // main thread, before the shards start (takes the data dir lock, loads, purges):
//! let mut rec = store::open(&cfg.data_dir, shards, &StoreOptions { durability, ..Default::default() })?;
//! tracing::info!(?rec.stats, "recovered in {:?}", rec.stats.elapsed);
//! // every shard: replicate `rec.retained`; shard N rebuilds `rec.shards[N].sessions`.
//! // on shard N's executor:
//! let store: Store = rec.shards[N].handle.start();       // !Send, lives on the shard
//! // persistent session created (expiry > 0):
//! let key = store.allocate_session_key();
//! store.put_session(key, &SessionRecord { .. });         // again on disconnect (disconnected_at_ms)
//! store.put_subscription(key, &SubscriptionRecord { .. });
//! // QoS 1/2 message for a persistent session, seq increasing per session:
//! let m = MessageRef { publish: &msg.publish, qos, retain, subscription_ids: &ids,
//!                      received_at_ms: store::instant_to_unix_ms(msg.received_at) };
//! let t = store.put_outbound(key, seq, OutboundState::Queued, Some(m));
//! // sent with packet id P: put_outbound(key, seq, AwaitingAck(P), Some(m));
//! // PUBREC: put_outbound(key, seq, AwaitingPubComp(P), None); PUBACK/PUBCOMP: delete_outbound(key, seq)
//! // inbound QoS 2: put_inbound_qos2(key, id, None) before PUBREC; delete_inbound_qos2 on PUBREL.
//! // routed to other shards: prepare_inbound_qos2(key, id, nonce, &targets, m) durable first;
//! // each target stores put_origin(from, nonce) with its copies; forget_origin once done.
//! // retained on the publisher's shard: set_retained(&topic, Some(m)) / None to delete.
//! if store.durability() == Durability::Sync { t.await?; } else { t.detach(); } // then PUBACK / PUBREC
//! if store.no_space() { /* refuse new QoS 1/2 with 0x97 (v5); keep serving QoS 0 */ }
//! // every minute or so: store.purge_expired(store::unix_ms());
//! ```
//! Every write returns a [`Ticket`]: it resolves when the batch holding the
//! op is durable. Ops of one shard are applied in call order. Dropping a
//! ticket never cancels the write. With `Durability::None` every call is a
//! no-op returning a ready ticket.
//!
//! Retained messages are written by the shard that received the PUBLISH (its
//! own commit, so the publisher is acknowledged without a cross-shard round
//! trip); rows carry the wall-clock time and recovery keeps the newest per
//! topic across shards (deletes are tombstones, compacted at startup).
//! Other shards may call [`Store::forget_retained`] when the broadcast
//! reaches them, to drop their stale row early (optional).

mod batch;
mod enc;
mod engine;
mod error;
mod holder;
mod keys;
mod layout;
mod message;
mod outbox;
mod prepared;
pub(crate) mod records;
mod recover;
mod ship;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq_codec::{PacketId, QoS, TopicFilter, TopicName};

pub use crate::config::Durability;
pub use enc::BadRecord;
pub use engine::{StoreStats, Ticket, COMMIT_BUCKETS_US};
pub use error::StoreError;
pub use layout::{lock_dir as lock_data_dir, DirLock as DataDirLock, FORMAT};
pub use message::{MessageRef, StoredMessage};
pub use outbox::{LinkRun, OutboxRow};
pub use records::{
    expires_by, InboundQos2, NodeTarget, OutboundRecord, OutboundState, Owner, Prepared,
    RecoveredSession, RetainedRecord, SessionKey, SessionRecord, SubscriptionRecord, Target,
};
pub use recover::{
    open, Recovery, RecoveryStats, ShardRecovery, Tombstone, TOMBSTONES_MAX, TOMBSTONE_KEEP,
};
pub use ship::{read_snapshot, SnapshotWriter};

use batch::OpKind;
use engine::{Backend, Engine};

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub durability: Durability,
    /// First LMDB map size per shard, bytes (address space, not disk).
    pub initial_map_size: usize,
    /// The map doubles when full, up to this; beyond it writes fail with
    /// [`StoreError::NoSpace`] (a per-shard storage quota).
    pub max_map_size: usize,
}

/// The map ceiling without a quota: 1 TiB of address space per shard.
const NO_QUOTA: usize = 1 << 40;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::with_quota(Durability::Sync, 0)
    }
}

impl StoreOptions {
    /// `durability` with a per-shard quota of `max_bytes` (0: none), the
    /// broker's `--store-max-bytes`.
    pub fn with_quota(durability: Durability, max_bytes: u64) -> Self {
        let max_map_size = match usize::try_from(max_bytes) {
            Ok(0) | Err(_) => NO_QUOTA,
            Ok(n) => n.min(NO_QUOTA),
        };
        StoreOptions {
            durability,
            initial_map_size: (256 << 20).min(max_map_size),
            max_map_size,
        }
    }
}

/// Milliseconds since the Unix epoch (the store's clock for expiry).
/// A will in the store's own layout (`message.rs`), for the cluster's will
/// registry (`crate::wills`): the same bytes a session row carries.
pub fn encode_will(will: &ringmq_codec::LastWill) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + will.topic.len() + will.payload.len());
    message::put_will(&mut enc::Writer(&mut out), Some(will));
    out
}

/// The will [`encode_will`] wrote; `None` for bytes it did not write.
pub fn decode_will(bytes: &[u8]) -> Option<ringmq_codec::LastWill> {
    let mut r = enc::Reader::new(bytes::Bytes::copy_from_slice(bytes));
    let will = message::read_will(&mut r).ok()??;
    r.is_empty().then_some(will)
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch from the kernel's coarse clock (one
/// tick, 1 to 4 ms, of resolution for a fifth of the cost): for message
/// arrival times, whose expiry counts in seconds.
pub fn coarse_unix_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively
    // borrowed `ts`; CLOCK_REALTIME_COARSE exists on every Linux since 2.6.32.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return unix_ms();
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Converts the broker's `Instant` (e.g. a message's arrival) to unix ms.
pub fn instant_to_unix_ms(at: Instant) -> u64 {
    unix_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// Converts stored unix ms back to an `Instant` (clamped to now for
/// timestamps in the future, to the earliest representable past otherwise).
pub fn unix_ms_to_instant(ms: u64) -> Instant {
    let now = Instant::now();
    let ago = Duration::from_millis(unix_ms().saturating_sub(ms));
    now.checked_sub(ago).unwrap_or(now)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A shard's store before it starts: `Send`, moved to the shard's executor.
pub struct StoreHandle {
    backend: Option<Backend>,
    durability: Durability,
    next_key: SessionKey,
    next_nonce: u64,
    /// Rows about other nodes' copies, read at recovery.
    peer: PeerRows,
    /// No other node needs to keep an origin row of this shard below this
    /// nonce (`cluster/origin.rs`): the oldest prepared row with node
    /// targets, or the first nonce of this run.
    origin_floor: u64,
    /// The cluster outbox's rows and this start's link run (`outbox.rs`).
    outbox: Vec<OutboxRow>,
    link_run: LinkRun,
    peer_routes: Vec<(u64, bytes::Bytes)>,
    /// Recent retained deletions (shard 0 only).
    tombstones: Vec<Tombstone>,
}

/// What a shard's store holds about other nodes' acked copies.
#[derive(Default)]
pub(crate) struct PeerRows {
    /// `(node, stream, id)`: the last acked copy of each other node delivered here.
    pub seen: Vec<(u64, u64, u64)>,
    /// `(node, origin shard, nonce)`: node origin rows (that node's prepared message is here).
    pub origins: Vec<(u64, u16, u64)>,
    /// `(client id, value)`: stubs of session moves (`keys::STUB`).
    pub stubs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `(client id, value)`: sessions kept for their move (`keys::MOVING`).
    pub moving: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StoreHandle {
    /// Memory only (`Durability::None`).
    pub fn memory() -> StoreHandle {
        StoreHandle {
            backend: None,
            durability: Durability::None,
            next_key: 1,
            next_nonce: 1,
            peer: PeerRows::default(),
            origin_floor: 1,
            outbox: Vec::new(),
            link_run: LinkRun::fresh(),
            peer_routes: Vec::new(),
            tombstones: Vec::new(),
        }
    }

    /// `next_nonce` is at least the wall clock in ns, so nonces stay unique
    /// across restarts even when no row kept the last one: another node may
    /// still hold an origin row of an earlier run (until told the floor).
    pub(crate) fn disk(
        backend: Backend,
        durability: Durability,
        (next_key, next_nonce, oldest_node_prepared): (SessionKey, u64, Option<u64>),
        peer: PeerRows,
    ) -> Self {
        let next_nonce = next_nonce.max(unix_ns());
        StoreHandle {
            backend: Some(backend),
            durability,
            next_key,
            next_nonce,
            peer,
            origin_floor: oldest_node_prepared.map_or(next_nonce, |n| n.min(next_nonce)),
            outbox: Vec::new(),
            link_run: LinkRun::fresh(),
            peer_routes: Vec::new(),
            tombstones: Vec::new(),
        }
    }

    /// Other nodes may forget this shard's origin rows below this nonce.
    pub fn origin_floor(&self) -> u64 {
        self.origin_floor
    }

    /// Recent retained deletions read at recovery (shard 0's handle).
    pub(crate) fn with_tombstones(mut self, t: Vec<Tombstone>) -> Self {
        self.tombstones = t;
        self
    }

    /// The outbox rows, the link run and the peers' routes read at recovery.
    pub(super) fn with_outbox(mut self, rows: outbox::LinkRows) -> Self {
        self.outbox = rows.outbox;
        self.link_run = rows.run;
        self.peer_routes = rows.routes;
        self
    }

    /// Runs `f` on this store outside a running broker (offline tools,
    /// tests): on a short-lived executor thread, then commits and closes.
    pub fn run_offline<T, F>(self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let gone = |e: &dyn std::fmt::Display| StoreError::Io {
            path: std::path::PathBuf::from("<offline store>"),
            detail: e.to_string().into(),
        };
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let store = self.start();
                let out = f(&store);
                store.close().await.map(|()| out)
            })
            .map_err(|e| gone(&e))?
            .join()
            .map_err(|e| gone(&e))?
    }

    /// Starts the store. Must be called on the shard's glommio executor
    /// (commits are driven by a local task there).
    pub fn start(self) -> Store {
        Store {
            engine: Engine::new(self.backend, self.durability),
            next_key: Cell::new(self.next_key),
            next_nonce: Cell::new(self.next_nonce),
            last_retained_ns: Cell::new(0),
            peer: std::cell::RefCell::new(self.peer),
            outbox: std::cell::RefCell::new(self.outbox),
            link_run: self.link_run,
            peer_routes: std::cell::RefCell::new(self.peer_routes),
            tombstones: std::cell::RefCell::new(self.tombstones),
        }
    }
}

/// A QoS 1 message sent under a packet id: the broker writes it to the
/// socket without waiting for its row, so its PUBACK may well arrive before
/// the commit (QoS 2 waits for the row [MQTT-4.3.3-3]; queued rows are not out).
fn sent_ungated(state: OutboundState, m: Option<&MessageRef<'_>>) -> bool {
    matches!(state, OutboundState::AwaitingAck(_)) && m.is_some_and(|m| m.qos == QoS::AtLeastOnce)
}

/// One shard's store (`!Send`): enqueue ops, await [`Ticket`]s.
pub struct Store {
    engine: Rc<Engine>,
    next_key: Cell<SessionKey>,
    next_nonce: Cell<u64>,
    last_retained_ns: Cell<u64>,
    peer: std::cell::RefCell<PeerRows>,
    outbox: std::cell::RefCell<Vec<OutboxRow>>,
    link_run: LinkRun,
    peer_routes: std::cell::RefCell<Vec<(u64, bytes::Bytes)>>,
    tombstones: std::cell::RefCell<Vec<Tombstone>>,
}

impl Store {
    /// A store that keeps nothing (`Durability::None`).
    pub fn memory() -> Store {
        StoreHandle::memory().start()
    }

    /// False for `Durability::None`: callers may skip building records.
    pub fn is_persistent(&self) -> bool {
        self.engine.is_persistent()
    }

    pub fn durability(&self) -> Durability {
        self.engine.durability()
    }

    /// True after a commit failed for lack of space, until one succeeds:
    /// refuse new QoS 1/2 PUBLISH with 0x97 Quota exceeded (v5).
    pub fn no_space(&self) -> bool {
        self.engine.no_space()
    }

    pub fn stats(&self) -> StoreStats {
        self.engine.stats()
    }

    /// Ops waiting for the next commit (a gauge for metrics).
    pub fn pending_ops(&self) -> usize {
        self.engine.pending_ops()
    }

    /// A fresh key for a new persistent session on this shard.
    pub fn allocate_session_key(&self) -> SessionKey {
        let k = self.next_key.get();
        self.next_key.set(k + 1);
        k
    }

    /// A fresh nonce, unique on this shard across restarts (recovery starts
    /// above every nonce still on disk): the key of origin rows.
    pub fn allocate_nonce(&self) -> u64 {
        let n = self.next_nonce.get();
        self.next_nonce.set(n + 1);
        n
    }

    /// Retained deletions of the last [`TOMBSTONE_KEEP`] (topic, unix ms), newest
    /// first, recovered (once, at start; shard 0 only).
    pub fn take_retained_tombstones(&self) -> Vec<Tombstone> {
        std::mem::take(&mut *self.tombstones.borrow_mut())
    }

    /// The `(node, stream, id)` rows recovered (once, at start).
    pub fn take_peer_seen(&self) -> Vec<(u64, u64, u64)> {
        std::mem::take(&mut self.peer.borrow_mut().seen)
    }

    /// The `(node, origin shard, nonce)` node origin rows recovered (once, at start).
    pub fn take_node_origins(&self) -> Vec<(u64, u16, u64)> {
        std::mem::take(&mut self.peer.borrow_mut().origins)
    }

    /// The stub rows recovered (once, at start): `(client id, value)`.
    pub fn take_stubs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.peer.borrow_mut().stubs)
    }

    /// A session move's stub (`cluster/stub_row.rs`); issued right after the
    /// take's `delete_session`, so it commits in the same batch.
    pub fn put_stub(&self, client: &[u8], value: &[u8]) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_stub(b, client),
            |b| b.extend_from_slice(value),
        )
    }

    /// The rows of sessions kept for their move, recovered (once, at start).
    pub fn take_moving(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.peer.borrow_mut().moving)
    }

    /// A session kept for its move (`cluster/moving.rs`); issued right after
    /// the take's `delete_session`, so it commits in the same batch.
    pub fn put_moving(&self, client: &[u8], value: &[u8]) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_moving(b, client),
            |b| b.extend_from_slice(value),
        )
    }

    /// The new node holds `client`'s session (or the keep ended): its row goes.
    pub fn delete_moving(&self, client: &[u8]) -> Ticket {
        self.engine
            .push(OpKind::Delete, |b| keys::push_moving(b, client), |_| {})
    }

    /// The stub of `client` ended: its row goes.
    pub fn delete_stub(&self, client: &[u8]) -> Ticket {
        self.engine
            .push(OpKind::Delete, |b| keys::push_stub(b, client), |_| {})
    }

    /// In the batch holding the copies: node `node`'s prepared message
    /// `(shard, nonce)` is here (a resend after that node restarted is skipped).
    pub fn put_node_origin(&self, node: u64, shard: u16, nonce: u64) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_node_origin(b, node, shard, nonce),
            |_| {},
        )
    }

    /// Node `node` marked its message `(shard, nonce)` done (or it is below
    /// that node's floor): the row may go.
    pub fn forget_node_origin(&self, node: u64, shard: u16, nonce: u64) -> Ticket {
        self.engine.push(
            OpKind::Delete,
            |b| keys::push_node_origin(b, node, shard, nonce),
            |_| {},
        )
    }

    /// The last acked copy of `node` delivered on this shard, stored in the
    /// batch holding its rows: a resend of it after a restart is known.
    pub fn put_peer_seen(&self, node: u64, stream: u64, id: u64) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_peer_seen(b, node),
            |b| {
                b.extend_from_slice(&stream.to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
            },
        )
    }

    /// The row of [`Self::put_peer_seen`] is not needed any more (its session is gone).
    pub fn delete_peer_seen(&self, node: u64) -> Ticket {
        self.engine
            .push(OpKind::Delete, |b| keys::push_peer_seen(b, node), |_| {})
    }

    /// Creates or replaces the session row.
    pub fn put_session(&self, key: SessionKey, s: &SessionRecord) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_session(b, key),
            |b| records::put_session(b, s),
        )
    }

    /// Deletes the session and all its subscriptions, outbound and inbound rows.
    pub fn delete_session(&self, key: SessionKey) -> Ticket {
        self.engine.push(
            OpKind::DeleteSession(key),
            |b| keys::push_session(b, key),
            |_| {},
        )
    }

    /// Creates or replaces one subscription (keyed by its filter).
    pub fn put_subscription(&self, key: SessionKey, s: &SubscriptionRecord) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_subscription(b, key, s.filter.as_str().as_bytes()),
            |b| records::put_subscription(b, s),
        )
    }

    pub fn delete_subscription(&self, key: SessionKey, filter: &TopicFilter) -> Ticket {
        self.engine.push(
            OpKind::Delete,
            |b| keys::push_subscription(b, key, filter.as_str().as_bytes()),
            |_| {},
        )
    }

    /// Updates outbound message `seq` (increasing per session).
    /// `message` is required except in `AwaitingPubComp`.
    pub fn put_outbound(
        &self,
        key: SessionKey,
        seq: u64,
        state: OutboundState,
        message: Option<MessageRef<'_>>,
    ) -> Ticket {
        let sent = sent_ungated(state, message.as_ref());
        // A QoS 1 row moving to AwaitingAck: the queued row on disk already
        // holds the message; without the update a restart sends it afresh
        // (new id, at least once), so it is the first thing dropped when
        // space runs out.
        self.engine.push_row(
            (key, seq),
            (false, sent, sent),
            |b| keys::push_outbound(b, key, seq),
            |b| records::put_outbound(b, state, message),
        )
    }

    /// Creates outbound message `seq`: its first write (a `seq` never used
    /// before), so a delete before its commit cancels both.
    pub fn put_outbound_new(
        &self,
        key: SessionKey,
        seq: u64,
        state: OutboundState,
        message: MessageRef<'_>,
    ) -> Ticket {
        let sent = sent_ungated(state, Some(&message));
        self.engine.push_row(
            (key, seq),
            (true, sent, false),
            |b| keys::push_outbound(b, key, seq),
            |b| records::put_outbound(b, state, Some(message)),
        )
    }

    /// PUBACK or PUBCOMP received (or the message expired / was dropped).
    /// Puts of the row still pending are dropped; a row first written in the
    /// pending batch needs no delete at all (it never reached the disk).
    pub fn delete_outbound(&self, key: SessionKey, seq: u64) -> Ticket {
        if self.engine.cancel_row((key, seq)) {
            return self.engine.flush();
        }
        self.engine
            .push(OpKind::Delete, |b| keys::push_outbound(b, key, seq), |_| {})
    }

    /// Inbound QoS 2 PUBLISH accepted: remember its id until PUBREL
    /// [MQTT-4.3.3-9]. `message` may be kept until it is delivered.
    pub fn put_inbound_qos2(
        &self,
        key: SessionKey,
        id: PacketId,
        message: Option<MessageRef<'_>>,
    ) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_inbound(b, key, id.get()),
            |b| records::put_inbound(b, None, message),
        )
    }

    /// Inbound QoS 2 PUBLISH to be routed to other shards: the id and the
    /// message, stored before any copy leaves this shard [MQTT-4.3.3-8]. Each
    /// target stores an origin row `(this shard, nonce)` with its copies;
    /// recovery delivers to the targets without one. `put_inbound_qos2(.., None)`
    /// marks it done once every target confirmed.
    pub fn prepare_inbound_qos2(
        &self,
        key: SessionKey,
        id: PacketId,
        nonce: u64,
        targets: &[Target],
        message: MessageRef<'_>,
    ) -> Ticket {
        self.prepare_inbound_qos2_nodes(key, id, nonce, (targets, &[]), message)
    }

    /// [`Self::prepare_inbound_qos2`] with other nodes among the targets
    /// (`cluster/origin.rs`): recovery sends each of them the message again.
    pub fn prepare_inbound_qos2_nodes(
        &self,
        key: SessionKey,
        id: PacketId,
        nonce: u64,
        (targets, nodes): (&[Target], &[NodeTarget]),
        message: MessageRef<'_>,
    ) -> Ticket {
        self.engine.push(
            OpKind::Put,
            |b| keys::push_inbound(b, key, id.get()),
            |b| records::put_inbound_nodes(b, Some((nonce, targets, nodes)), Some(message)),
        )
    }

    /// On a target shard, in the batch holding the copies: the copy of
    /// shard `from`'s prepared message `nonce` is here.
    pub fn put_origin(&self, from: u16, nonce: u64) -> Ticket {
        self.engine
            .push(OpKind::Put, |b| keys::push_origin(b, from, nonce), |_| {})
    }

    /// Shard `from` marked its message `nonce` done: the origin row may go.
    pub fn forget_origin(&self, from: u16, nonce: u64) -> Ticket {
        self.engine.push(
            OpKind::Delete,
            |b| keys::push_origin(b, from, nonce),
            |_| {},
        )
    }

    /// PUBREL received [MQTT-4.3.3-11]: forget the id.
    pub fn delete_inbound_qos2(&self, key: SessionKey, id: PacketId) -> Ticket {
        self.engine.push(
            OpKind::Delete,
            |b| keys::push_inbound(b, key, id.get()),
            |_| {},
        )
    }

    /// On the shard that received the retained PUBLISH: store it (`Some`) or
    /// delete it (`None`, empty payload [MQTT-3.3.1-6]) as a tombstone.
    pub fn set_retained(&self, topic: &TopicName, message: Option<MessageRef<'_>>) -> Ticket {
        let at = unix_ns().max(self.last_retained_ns.get() + 1);
        self.last_retained_ns.set(at);
        self.engine.push(
            OpKind::Put,
            |b| keys::push_retained(b, topic.as_str().as_bytes()),
            |b| records::put_retained(b, at, message),
        )
    }

    /// On other shards, when the set/delete broadcast arrives: drop this
    /// shard's older row early. Optional (recovery keeps the newest anyway).
    pub fn forget_retained(&self, topic: &TopicName) -> Ticket {
        self.engine.push(
            OpKind::Delete,
            |b| keys::push_retained(b, topic.as_str().as_bytes()),
            |_| {},
        )
    }

    /// Deletes every disconnected session whose expiry passed at `now_ms`
    /// (counted in [`StoreStats::purged_sessions`]).
    pub fn purge_expired(&self, now_ms: u64) -> Ticket {
        self.engine.push(OpKind::Purge { now_ms }, |_| {}, |_| {})
    }

    /// A ticket for everything written so far.
    pub fn flush(&self) -> Ticket {
        self.engine.flush()
    }

    /// Graceful shutdown: commits everything pushed, waits for the commit
    /// loop to end, then closes the environment (and, with the last shard,
    /// releases the data dir lock) so the dir can be opened again at once.
    pub async fn close(self) -> Result<(), StoreError> {
        let mut result = Ok(());
        loop {
            if let Err(e) = self.flush().await {
                result = Err(e);
            }
            if !self.engine.is_committing() {
                return result;
            }
            futures_lite::future::yield_now().await;
        }
    }
}
