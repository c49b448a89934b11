//! A session: what the broker keeps for one client id, connected or not.
//!
//! Owned by the client id's home shard. Holds the subscriptions, outbound
//! QoS 1/2 messages in flight and queued, inbound QoS 2 packet ids awaiting
//! PUBREL, the will, and — while connected — the connection's outbound side.

use crate::config::OverflowPolicy;
use crate::conn_out::ConnOut;
use crate::shard::Shard;
use crate::stats::{DropReason, ShardStats};
use crate::store::{self, MessageRef, OutboundState, SessionKey};
use ringmq_codec::{
    Delivery, LastWill, MqttString, PacketId, ProtocolVersion, Publish, PublishFrame, QoS,
    SubscriptionOptions, TopicFilter,
};
use slab::Slab;
use smallvec::SmallVec;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

/// Index of a session in its shard's slab.
pub type SessionId = u32;

/// Client id -> session, without a copy of the id: 8 bytes a session
/// (the key's hash and the slab index); the id itself is compared in the
/// session. SipHash with a per-shard random key, as `HashMap`'s default.
#[derive(Default)]
pub struct ClientIndex {
    table: hashbrown::HashTable<(u32, SessionId)>,
    keys: std::collections::hash_map::RandomState,
}

impl ClientIndex {
    fn hash(&self, id: &MqttString) -> u32 {
        use std::hash::BuildHasher;
        self.keys.hash_one(id.as_bytes()) as u32
    }

    /// The table's hash from the stored 32 bits (both halves feed hashbrown).
    fn wide(h: u32) -> u64 {
        (h as u64) << 32 | h as u64
    }

    /// The session of `id`.
    pub fn get(&self, id: &MqttString, sessions: &Slab<Session>) -> Option<SessionId> {
        let h = self.hash(id);
        self.table
            .find(Self::wide(h), |&(eh, sid)| {
                eh == h
                    && sessions
                        .get(sid as usize)
                        .is_some_and(|s| s.client_id == *id)
            })
            .map(|&(_, sid)| sid)
    }

    /// Records that `id` is session `sid` (not already present).
    pub fn insert(&mut self, id: &MqttString, sid: SessionId) {
        let h = self.hash(id);
        self.table
            .insert_unique(Self::wide(h), (h, sid), |&(eh, _)| Self::wide(eh));
    }

    /// Forgets `id` (session `sid`).
    pub fn remove(&mut self, id: &MqttString, sid: SessionId) {
        let h = self.hash(id);
        if let Ok(e) = self
            .table
            .find_entry(Self::wide(h), |&(eh, s)| eh == h && s == sid)
        {
            e.remove();
        }
    }
}

/// A queue that allocates nothing until its first element: 8 bytes in
/// every session instead of a `VecDeque`'s 32, and most sessions (idle,
/// or QoS 0 only) never hold a QoS 1/2 message. `clear` gives the memory back.
#[allow(clippy::box_collection)] // the box is the point: 8 bytes while empty
pub struct LazyDeque<T>(Option<Box<VecDeque<T>>>);

/// Packet ids, 8 bytes while there are none (a `SmallVec<[u16; 8]>` inline
/// took 24 in every session; almost none holds an inbound QoS 2 id while
/// idle). The box is dropped when the last id goes.
#[derive(Default, Debug)]
pub struct LazyIds(Option<Box<SmallVec<[u16; 8]>>>);

impl LazyIds {
    pub fn push(&mut self, id: u16) {
        self.0.get_or_insert_with(Box::default).push(id);
    }

    pub fn retain(&mut self, keep: impl FnMut(&mut u16) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(keep);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn swap_remove(&mut self, i: usize) -> u16 {
        let v = self.0.as_mut().expect("swap_remove on no ids");
        let id = v.swap_remove(i);
        if v.is_empty() {
            self.0 = None;
        }
        id
    }

    /// Forgets every id and frees the memory.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl std::ops::Deref for LazyIds {
    type Target = [u16];

    fn deref(&self) -> &[u16] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }
}

impl FromIterator<u16> for LazyIds {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let v: SmallVec<[u16; 8]> = iter.into_iter().collect();
        LazyIds((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        LazyDeque(None)
    }
}

impl<T> LazyDeque<T> {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push_back(&mut self, v: T) {
        self.0.get_or_insert_with(Box::default).push_back(v);
    }

    pub fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut()?.pop_front()
    }

    pub fn remove(&mut self, i: usize) -> Option<T> {
        self.0.as_mut()?.remove(i)
    }

    pub fn iter(&self) -> std::iter::Flatten<std::option::IntoIter<&VecDeque<T>>> {
        self.0.as_deref().into_iter().flatten()
    }

    pub fn iter_mut(&mut self) -> std::iter::Flatten<std::option::IntoIter<&mut VecDeque<T>>> {
        self.0.as_deref_mut().into_iter().flatten()
    }

    /// Empties the queue and frees its memory.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The entry whose `seq(entry)` is `want`: a binary search (entries are
    /// in `seq` order but for rare restored states), then a scan.
    pub fn find_seq(&self, want: u64, seq: impl Fn(&T) -> u64) -> Option<&T> {
        let q = self.0.as_deref()?;
        match q.binary_search_by_key(&want, &seq) {
            Ok(i) => q.get(i),
            Err(_) => q.iter().find(|e| seq(e) == want),
        }
    }
}

impl<'a, T> IntoIterator for &'a LazyDeque<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Flatten<std::option::IntoIter<&'a VecDeque<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.as_deref().into_iter().flatten()
    }
}

/// A message as received, shared by every session of this shard that holds it.
pub struct Message {
    /// The publish (topic resolved, no alias, no subscription ids).
    pub publish: Publish,
    /// When this broker received it (message expiry counts from here).
    pub received_at: Instant,
    /// `received_at` in unix ms (what the store keeps).
    pub received_at_ms: u64,
}

impl Message {
    /// A message received now (`now`: the routing's clock reading).
    pub fn received(publish: Publish, now: Instant) -> Message {
        Message {
            publish,
            received_at: now,
            received_at_ms: store::coarse_unix_ms(),
        }
    }

    /// A message received at `at`, in the past.
    pub fn received_at(publish: Publish, at: Instant) -> Message {
        Message {
            publish,
            received_at: at,
            received_at_ms: store::instant_to_unix_ms(at),
        }
    }

    /// A message read back from the store, received at `ms` (unix ms).
    pub fn restored(publish: Publish, ms: u64) -> Message {
        Message {
            publish,
            received_at: store::unix_ms_to_instant(ms),
            received_at_ms: ms,
        }
    }

    /// Seconds of expiry left, `None` when the message never expires,
    /// `Some(0)` when it has expired [MQTT-3.3.2-5].
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let total = self.publish.properties.message_expiry_interval?;
        let gone = now.saturating_duration_since(self.received_at).as_secs();
        Some((total as u64).saturating_sub(gone) as u32)
    }

    /// The frame for (version, qos) with the remaining expiry forwarded [MQTT-3.3.2-6].
    pub fn frame(&self, version: ProtocolVersion, qos: QoS, now: Instant) -> PublishFrame {
        match self.expiry_left(now) {
            Some(left) if Some(left) != self.publish.properties.message_expiry_interval => {
                let mut p = self.publish.clone();
                p.properties.message_expiry_interval = Some(left);
                PublishFrame::new(&p, version, qos)
            }
            _ => PublishFrame::new(&self.publish, version, qos),
        }
    }
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// An outbound QoS 1/2 message in flight.
pub struct Outflight {
    pub packet_id: PacketId,
    /// Order within the session (persistence key).
    pub seq: u64,
    /// The message; `None` once released (PUBREC received) and recovered from disk.
    pub msg: Option<Rc<Message>>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SmallVec<[u32; 1]>,
    pub state: OutState,
}

/// Window size from which a session tracks its packet ids in an [`IdBitmap`].
const BITMAP_FROM: usize = 32;

/// One bit per packet id (8 KiB).
pub struct IdBitmap([u64; 1024]);

impl IdBitmap {
    fn get(&self, id: u16) -> bool {
        self.0[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    fn set(&mut self, id: u16, on: bool) {
        let (w, bit) = (usize::from(id >> 6), 1u64 << (id & 63));
        if on {
            self.0[w] |= bit;
        } else {
            self.0[w] &= !bit;
        }
    }
}

/// A QoS 1/2 message waiting for the session's inflight window (or its client).
pub struct Queued {
    pub seq: u64,
    pub msg: Rc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SmallVec<[u32; 1]>,
}

/// `HashMap`'s keyed SipHash with one random key per process instead of one
/// per map: the same protection against chosen collisions, and a zero-sized
/// state instead of 16 bytes in every session.
#[derive(Clone, Copy, Default)]
pub struct ProcessKeys;

impl std::hash::BuildHasher for ProcessKeys {
    type Hasher = std::collections::hash_map::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        KEYS.get_or_init(Default::default).build_hasher()
    }
}

/// An `Option<Instant>` in 8 bytes instead of 16: milliseconds from a
/// process-wide origin (negative: before it), `i64::MIN`: none.
/// Milliseconds are finer than what it is used for (session expiry counts
/// seconds).
#[derive(Clone, Copy, Debug)]
pub struct MaybeInstant(i64);

impl MaybeInstant {
    pub const NONE: Self = MaybeInstant(i64::MIN);

    fn origin() -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    pub fn some(at: Instant) -> Self {
        let o = Self::origin();
        let ms = match at.checked_duration_since(o) {
            Some(d) => d.as_millis().min(i64::MAX as u128) as i64,
            None => -(o.duration_since(at).as_millis().min(i64::MAX as u128) as i64),
        };
        MaybeInstant(ms.max(i64::MIN + 1))
    }

    pub fn get(self) -> Option<Instant> {
        if self.0 == i64::MIN {
            return None;
        }
        let o = Self::origin();
        let d = std::time::Duration::from_millis(self.0.unsigned_abs());
        Some(if self.0 >= 0 {
            o + d
        } else {
            o.checked_sub(d).unwrap_or(o)
        })
    }
}

/// A session's subscriptions: 8 bytes while it has none (an empty
/// `HashMap` took 32 in every session, subscribed or not); the map is
/// boxed at the first and dropped with the last.
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes, not 32, while empty
pub struct Subs(Option<Box<HashMap<TopicFilter, SubEntry, ProcessKeys>>>);

impl Subs {
    pub fn insert(&mut self, f: TopicFilter, e: SubEntry) -> Option<SubEntry> {
        self.0.get_or_insert_with(Box::default).insert(f, e)
    }

    pub fn remove(&mut self, f: &TopicFilter) -> Option<SubEntry> {
        let m = self.0.as_mut()?;
        let e = m.remove(f);
        if m.is_empty() {
            self.0 = None;
        }
        e
    }

    pub fn contains_key(&self, f: &TopicFilter) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(f))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> <&Subs as IntoIterator>::IntoIter {
        self.into_iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &TopicFilter> {
        self.iter().map(|(f, _)| f)
    }

    /// Takes every subscription out.
    pub fn drain(&mut self) -> impl Iterator<Item = (TopicFilter, SubEntry)> {
        self.0.take().into_iter().flat_map(|m| *m)
    }
}

impl<'a> IntoIterator for &'a Subs {
    type Item = (&'a TopicFilter, &'a SubEntry);
    type IntoIter =
        std::iter::Flatten<std::option::IntoIter<&'a HashMap<TopicFilter, SubEntry, ProcessKeys>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.as_deref().into_iter().flatten()
    }
}

/// One subscription as the session remembers it.
#[derive(Clone, Debug)]
pub struct SubEntry {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// What a broker keeps for one client id.
pub struct Session {
    /// Its index in the shard's session slab (set when inserted).
    pub sid: SessionId,
    pub client_id: MqttString,
    /// Protocol of the last connection.
    pub version: ProtocolVersion,
    /// The live connection's outbound side, if connected.
    pub conn: Option<Rc<ConnOut>>,
    /// Bumped at every (re)connect; stale timers compare it.
    pub generation: u64,
    /// The cluster's ownership epoch of the current connection (0: none,
    /// a cluster of one, or a session restored from disk).
    pub epoch: u64,
    pub subs: Subs,
    /// Outbound QoS 1/2 in send order.
    pub inflight: LazyDeque<Outflight>,
    /// Outbound QoS 1/2 waiting for the window.
    pub queue: LazyDeque<Queued>,
    /// Inbound QoS 2 packet ids received, PUBREC sent, PUBREL not yet [MQTT-4.3.3-10].
    pub inbound_qos2: LazyIds,
    next_packet_id: u16,
    /// Bytes (topic and payload) of the QoS 1/2 messages this session holds,
    /// in flight and queued: bounded by `max_queued_bytes`.
    pub held_bytes: u32,
    /// What few sessions hold (drop counts, the packet-id bitmap of a large
    /// window, unfinished retained replays), in one box made at first use:
    /// 8 bytes per session instead of 24 (`docs/connection-memory.md`).
    rare: Option<Box<Rare>>,
    /// Session Expiry Interval, seconds (u32::MAX: never).
    pub expiry: u32,
    /// The will of the current connection (boxed: most clients have none,
    /// and an unboxed `LastWill` would double the size of every session).
    pub will: Option<Box<LastWill>>,
    /// When the last connection closed (session expiry counts from here).
    pub disconnected_at: MaybeInstant,
    /// The session's key in the store, while it is persisted (expiry > 0).
    pub key: Option<SessionKey>,
    /// Next outbound sequence number.
    pub next_seq: u64,
    /// Who the current connection authenticated as (`None`: anonymous, or
    /// no connection). Boxed: 8 bytes per session when unused.
    pub identity: Option<Box<crate::access::authn::Identity>>,
    /// Its copies are not deferred before this (ms since the shard
    /// started): one missed its deadline (`defer.rs`).
    defer_off_until: Cell<u64>,
    /// Identity and ACL rules (`None` without an ACL, or for a restored
    /// session whose owner is not known).
    pub acl: Option<Box<crate::access::session::SessionAcl>>,
    /// Who the session belongs to (its last connection's user), stored
    /// with it so the ACL decides for it after a restart too.
    pub owner: store::Owner,
}

/// The part of a [`Session`] few sessions ever hold (`Session::rare`).
#[derive(Default)]
struct Rare {
    /// QoS 1/2 messages this session dropped, by reason, and when it last
    /// warned of them (allocated at the first drop).
    drops: Option<Box<SessionDrops>>,
    /// Packet ids in flight, one bit each, kept while the window is large
    /// (a scan of `inflight` per send costs more beyond a few dozen).
    ids_in_use: Option<Box<IdBitmap>>,
    /// Retained replays its last connection left unfinished, resumed by the
    /// next one (`replay.rs`).
    replays: Vec<crate::replay::Replay>,
}

impl Session {
    /// A fresh session.
    pub fn new(client_id: MqttString, version: ProtocolVersion) -> Self {
        Session {
            sid: 0,
            client_id,
            version,
            conn: None,
            generation: 0,
            epoch: 0,
            subs: Subs::default(),
            inflight: LazyDeque::default(),
            queue: LazyDeque::default(),
            inbound_qos2: LazyIds::default(),
            next_packet_id: 0,
            held_bytes: 0,
            rare: None,
            expiry: 0,
            will: None,
            disconnected_at: MaybeInstant::NONE,
            key: None,
            next_seq: 1,
            identity: None,
            defer_off_until: Cell::new(0),
            acl: None,
            owner: store::Owner::Unknown,
        }
    }

    /// The packet-id bitmap, while the window is large.
    fn ids_in_use(&self) -> Option<&IdBitmap> {
        self.rare.as_ref()?.ids_in_use.as_deref()
    }

    fn ids_in_use_mut(&mut self) -> Option<&mut IdBitmap> {
        self.rare.as_mut()?.ids_in_use.as_deref_mut()
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the box once it holds nothing.
    fn tidy_rare(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.drops.is_none() && r.ids_in_use.is_none() && r.replays.is_empty())
        {
            self.rare = None;
        }
    }

    /// Dropped QoS 1/2 messages by reason ([`DropReason::ALL`] order), if any.
    pub fn drops(&self) -> Option<&SessionDrops> {
        self.rare.as_ref()?.drops.as_deref()
    }

    /// Takes the retained replays left unfinished (`replay.rs`).
    pub(crate) fn take_replays(&mut self) -> Vec<crate::replay::Replay> {
        let Some(r) = self.rare.as_mut() else {
            return Vec::new();
        };
        let left = std::mem::take(&mut r.replays);
        self.tidy_rare();
        left
    }

    /// Keeps a retained replay for the next connection (`replay.rs`).
    pub(crate) fn keep_replay(&mut self, r: crate::replay::Replay) {
        self.rare_mut().replays.push(r);
    }

    /// Persists one outbound message row (no-op when the session is not
    /// persisted). `fresh`: `seq` was never written before (a delete before
    /// the commit then cancels the row outright).
    #[allow(clippy::too_many_arguments)]
    fn persist_out(
        &self,
        shard: &Shard,
        seq: u64,
        state: OutboundState,
        msg: &Message,
        qos: QoS,
        retain: bool,
        ids: &[u32],
        fresh: bool,
    ) {
        let Some(key) = self.key else { return };
        let defer = &shard.defer;
        if fresh {
            // Sync: a QoS 1 copy for a connected subscriber waits for its
            // PUBACK before it is stored (`defer.rs`), unless it queues so
            // deep that it would be stored at its deadline anyway.
            let queued = self.queue.len();
            let now_ms = msg
                .received_at
                .saturating_duration_since(shard.started)
                .as_millis() as u64;
            if qos == QoS::AtLeastOnce
                && self.conn.is_some()
                && queued < crate::defer::DEFER_QUEUE_MAX
                && now_ms >= self.defer_off_until.get()
                && defer.try_defer(self.sid, (key, seq), now_ms, crate::defer::wait_ms(queued))
            {
                return;
            }
        } else if defer.is_deferred(key, seq) {
            // Not in the store: the deferred row is written with its state when due.
            return;
        }
        let m = MessageRef {
            publish: &msg.publish,
            qos,
            retain,
            subscription_ids: ids,
            received_at_ms: msg.received_at_ms,
        };
        if fresh {
            shard.store.put_outbound_new(key, seq, state, m).detach();
        } else {
            shard.store.put_outbound(key, seq, state, Some(m)).detach();
        }
    }

    fn unpersist_out(&self, shard: &Shard, seq: u64) {
        if let Some(key) = self.key {
            if shard.defer.resolve(key, seq) {
                return;
            }
            shard.store.delete_outbound(key, seq).detach();
        }
    }

    /// Its next copies are stored at once, not deferred (`defer.rs`), for
    /// [`crate::defer::BEHIND_FOR_MS`]: a moved session's held copies
    /// (`cluster/merge.rs`) replace their durable rows by their deliveries.
    pub(crate) fn store_at_once(&self, shard: &Shard) {
        let now_ms = Instant::now()
            .saturating_duration_since(shard.started)
            .as_millis() as u64;
        self.defer_off_until
            .set(now_ms.saturating_add(crate::defer::BEHIND_FOR_MS));
    }

    /// Writes deferred row `seq` with its current state, now due; false if
    /// the session no longer holds it.
    pub fn store_deferred(&self, shard: &Shard, seq: u64, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(shard.started).as_millis() as u64;
        self.defer_off_until
            .set(now_ms.saturating_add(crate::defer::BEHIND_FOR_MS));
        let found = self
            .inflight
            .find_seq(seq, |o| o.seq)
            .and_then(|o| {
                Some((
                    o.msg.as_ref()?,
                    Some(o.packet_id),
                    o.qos,
                    o.retain,
                    &o.sub_ids,
                ))
            })
            .or_else(|| {
                let q = self.queue.find_seq(seq, |q| q.seq)?;
                Some((&q.msg, None, q.qos, q.retain, &q.sub_ids))
            });
        let Some((msg, id, qos, retain, ids)) = found else {
            return false;
        };
        let state = crate::defer::row_state(id);
        self.persist_out(shard, seq, state, msg, qos, retain, ids, true);
        true
    }

    /// Next packet id not in flight [MQTT-2.2.1-4] ([MQTT-2.3.1-2] (3.1.1)).
    fn alloc_packet_id(&mut self) -> Option<PacketId> {
        if self.ids_in_use().is_none() && self.inflight.len() >= BITMAP_FROM {
            let mut b = Box::new(IdBitmap([0; 1024]));
            for o in &self.inflight {
                b.set(o.packet_id.get(), true);
            }
            self.rare_mut().ids_in_use = Some(b);
        }
        for _ in 0..=u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.next_packet_id) else {
                continue;
            };
            let used = match self.ids_in_use() {
                Some(b) => b.get(id.get()),
                None => self.inflight.iter().any(|o| o.packet_id == id),
            };
            if !used {
                if let Some(b) = self.ids_in_use_mut() {
                    b.set(id.get(), true);
                }
                return Some(id);
            }
        }
        None
    }

    /// `id` left the window.
    fn free_packet_id(&mut self, id: PacketId) {
        if self.inflight.is_empty() {
            if let Some(r) = self.rare.as_mut() {
                r.ids_in_use = None;
                self.tidy_rare();
            }
        } else if let Some(b) = self.ids_in_use_mut() {
            b.set(id.get(), false);
        }
    }

    /// How many more QoS 1/2 messages the client accepts now.
    pub(crate) fn window_open(&self) -> bool {
        match &self.conn {
            Some(c) => self.inflight.len() < c.receive_max as usize,
            None => false,
        }
    }

    /// Delivers one message to this session: QoS 0 straight to the socket
    /// buffer (or dropped, counted), QoS 1/2 into the inflight window or the queue.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        shard: &Shard,
        msg: &Publish,
        shared: &mut Option<Rc<Message>>,
        frame: &PublishFrame,
        retain: bool,
        sub_ids: &[u32],
        now: Instant,
    ) {
        if self.is_gone() {
            return; // removed; its subscriptions are leaving the router (`reap.rs`)
        }
        let (cfg, stats) = (&*shard.cfg, &*shard.stats);
        let qos = frame.qos();
        if qos == QoS::AtMostOnce {
            match &self.conn {
                Some(c) if c.has_room(cfg) => {
                    c.write_publish(stats, frame, None, false, retain, sub_ids);
                }
                Some(_) => stats.drop_msg(DropReason::QoS0BufferFull),
                None => stats.drop_msg(DropReason::QoS0Offline),
            }
            return;
        }
        let msg = shared
            .get_or_insert_with(|| Rc::new(Message::received(msg.clone(), now)))
            .clone();
        if !self.make_room(shard, cost(&msg)) {
            shard.tally.dropped();
            return;
        }
        let sub_ids: SmallVec<[u32; 1]> = SmallVec::from_slice(sub_ids);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.queue.is_empty() && self.window_open() {
            self.send_new(shard, seq, msg, Some(frame), qos, retain, sub_ids, now);
        } else {
            self.enqueue(
                shard,
                Queued {
                    seq,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                },
            );
        }
    }

    /// Whether a message of `bytes` fits the session's byte budget
    /// (`max_queued_bytes`, in flight and queued together), after dropping
    /// the oldest queued messages under `drop-oldest`. A message that does
    /// not fit is dropped, counted and warned of; true once it is held.
    fn make_room(&mut self, shard: &Shard, bytes: u32) -> bool {
        let max = shard.cfg.max_queued_bytes;
        if self.held_bytes as u64 + bytes as u64 <= max {
            self.held_bytes += bytes;
            return true;
        }
        if shard.cfg.queue_overflow == OverflowPolicy::DropOldest {
            while self.held_bytes as u64 + bytes as u64 > max {
                let Some(old) = self.queue.pop_front() else {
                    break;
                };
                self.forget_queued(shard, old, DropReason::QueueBytesFull);
            }
            if self.held_bytes as u64 + bytes as u64 <= max {
                self.held_bytes += bytes;
                return true;
            }
        }
        self.note_drop(shard, DropReason::QueueBytesFull);
        false
    }

    /// A queued message leaves the queue undelivered (overflow).
    fn forget_queued(&mut self, shard: &Shard, old: Queued, reason: DropReason) {
        self.unpersist_out(shard, old.seq);
        self.held_bytes = self.held_bytes.saturating_sub(cost(&old.msg));
        shard.stats.queued.sub(1);
        self.note_drop(shard, reason);
    }

    /// Counts a dropped QoS 1/2 message (shard and session), and warns of
    /// it at most once per [`DROP_WARN_EVERY`] per session: an acknowledged
    /// message is never lost in silence.
    pub(crate) fn note_drop(&mut self, shard: &Shard, reason: DropReason) {
        shard.stats.drop_msg(reason);
        let rare = self.rare.get_or_insert_with(Box::default);
        let d = rare.drops.get_or_insert_with(Box::default);
        d.by_reason[reason as usize] += 1;
        d.unwarned += 1;
        let now = Instant::now();
        if d.warned_at
            .is_some_and(|t| now.duration_since(t) < DROP_WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            shard = shard.id,
            client_id = %self.client_id,
            reason = reason.as_str(),
            dropped = d.unwarned,
            total = d.total(),
            policy = shard.cfg.queue_overflow.as_str(),
            "acknowledged QoS 1/2 messages dropped for a subscriber"
        );
        d.unwarned = 0;
        d.warned_at = Some(now);
    }

    fn enqueue(&mut self, shard: &Shard, q: Queued) {
        let cfg = &*shard.cfg;
        if self.queue.len() >= cfg.max_queued_messages {
            match cfg.queue_overflow {
                OverflowPolicy::DropNewest => {
                    self.held_bytes = self.held_bytes.saturating_sub(cost(&q.msg));
                    self.note_drop(shard, DropReason::QueueFull);
                    shard.tally.dropped();
                    return;
                }
                OverflowPolicy::DropOldest => {
                    if let Some(old) = self.queue.pop_front() {
                        self.forget_queued(shard, old, DropReason::QueueFull);
                    }
                }
            }
        }
        let stats = &*shard.stats;
        self.persist_out(
            shard,
            q.seq,
            OutboundState::Queued,
            &q.msg,
            q.qos,
            q.retain,
            &q.sub_ids,
            true,
        );
        self.queue.push_back(q);
        stats.queued.inc();
        shard.tally.held();
    }

    /// Sends a QoS 1/2 message now under a fresh packet id.
    #[allow(clippy::too_many_arguments)]
    fn send_new(
        &mut self,
        shard: &Shard,
        seq: u64,
        msg: Rc<Message>,
        frame: Option<&PublishFrame>,
        qos: QoS,
        retain: bool,
        sub_ids: SmallVec<[u32; 1]>,
        now: Instant,
    ) {
        let stats = &*shard.stats;
        let Some(conn) = self.conn.clone() else {
            self.held_bytes = self.held_bytes.saturating_sub(cost(&msg));
            return;
        };
        let Some(packet_id) = self.alloc_packet_id() else {
            self.held_bytes = self.held_bytes.saturating_sub(cost(&msg));
            return;
        };
        // The row is written before the PUBLISH. QoS 2 (sync): the connection
        // holds the bytes until it is durable, so a restart resends the same
        // id [MQTT-4.3.3-3]. QoS 1 leaves at once: a crash before the commit
        // only means the publisher (unacknowledged) resends, at least once.
        // A first delivery (`frame`: straight from routing) writes a fresh row.
        self.persist_out(
            shard,
            seq,
            OutboundState::AwaitingAck(packet_id),
            &msg,
            qos,
            retain,
            &sub_ids,
            frame.is_some(),
        );
        if qos == QoS::ExactlyOnce {
            crate::persist::gate(shard, &conn);
        }
        match frame {
            Some(f) => conn.write_publish(stats, f, Some(packet_id), false, retain, &sub_ids),
            None => {
                let f = msg.frame(conn.version, qos, now);
                conn.write_publish(stats, &f, Some(packet_id), false, retain, &sub_ids)
            }
        }
        self.inflight.push_back(Outflight {
            packet_id,
            seq,
            msg: Some(msg),
            qos,
            retain,
            sub_ids,
            state: OutState::Published,
        });
        stats.inflight.inc();
        shard.tally.held();
        if !self.window_open() {
            // Full: the client must acknowledge within the slow consumer timeout.
            conn.window_stalled(shard.clock.poller_ms(&shard.poller));
        }
    }

    /// Moves queued messages into the window while it is open; expired ones are dropped.
    pub fn pump(&mut self, shard: &Shard, now: Instant) {
        while self.window_open() {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            shard.stats.queued.sub(1);
            if q.msg.expiry_left(now) == Some(0) {
                // [MQTT-3.3.2-5] expired: not delivered.
                shard.stats.drop_msg(DropReason::Expired);
                self.unpersist_out(shard, q.seq);
                self.held_bytes = self.held_bytes.saturating_sub(cost(&q.msg));
                continue;
            }
            self.send_new(shard, q.seq, q.msg, None, q.qos, q.retain, q.sub_ids, now);
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) received: frees the packet id.
    /// Returns whether the id was in flight in the expected state.
    pub fn complete(&mut self, shard: &Shard, id: PacketId, qos: QoS) -> bool {
        let want = if qos == QoS::AtLeastOnce {
            OutState::Published
        } else {
            OutState::Released
        };
        self.finish(shard, id, qos, want)
    }

    /// PUBREC with an error reason: the flow ends, the packet id is free (v5 4.3.3).
    pub fn complete_rejected(&mut self, shard: &Shard, id: PacketId) -> bool {
        self.finish(shard, id, QoS::ExactlyOnce, OutState::Published)
    }

    /// Ends the flow of `id` if it is in flight at `qos` in state `want`.
    fn finish(&mut self, shard: &Shard, id: PacketId, qos: QoS, want: OutState) -> bool {
        let Some(i) = self
            .inflight
            .iter()
            .position(|o| o.packet_id == id && o.qos == qos && o.state == want)
        else {
            return false;
        };
        if let Some(o) = self.inflight.remove(i) {
            self.unpersist_out(shard, o.seq);
            self.free_packet_id(o.packet_id);
            if let Some(m) = &o.msg {
                self.held_bytes = self.held_bytes.saturating_sub(cost(m));
            }
        }
        shard.stats.inflight.sub(1);
        if let Some(c) = &self.conn {
            // Acknowledged: the window moves (a stall counts again from the
            // next time it fills), and a waiting replay may go on.
            c.window_moving();
            c.room_freed();
        }
        true
    }

    /// PUBREC received: the message is released (PUBREL follows). Returns
    /// whether the id was awaiting PUBREC.
    pub fn released(&mut self, shard: &Shard, id: PacketId) -> bool {
        if let Some(c) = self.conn.as_ref().filter(|_| !self.window_open()) {
            // An acknowledgement: a full window's stall clock starts again.
            c.window_stalled(shard.poller.now_ms());
        }
        match self.inflight.iter_mut().find(|o| {
            o.packet_id == id && o.qos == QoS::ExactlyOnce && o.state == OutState::Published
        }) {
            Some(o) => {
                o.state = OutState::Released;
                if let Some(key) = self.key {
                    let state = OutboundState::AwaitingPubComp(id);
                    shard.store.put_outbound(key, o.seq, state, None).detach();
                    // The PUBREL that follows waits for this row: once it is
                    // out, a restart must resend PUBREL, never the PUBLISH.
                    if let Some(c) = &self.conn {
                        crate::persist::gate(shard, c);
                    }
                }
                true
            }
            None => self
                .inflight
                .iter()
                .any(|o| o.packet_id == id && o.state == OutState::Released),
        }
    }

    /// Resends everything in flight after a reconnect, in order: PUBLISH with
    /// DUP=1, PUBREL as PUBREL [MQTT-4.4.0-1].
    pub fn resend_inflight(&mut self, stats: &ShardStats, now: Instant, now_ms: u64) {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        for o in &self.inflight {
            match (&o.msg, o.state) {
                (Some(msg), OutState::Published) => {
                    let f = msg.frame(conn.version, o.qos, now);
                    conn.write_publish(stats, &f, Some(o.packet_id), true, o.retain, &o.sub_ids);
                }
                _ => conn.write_pubrel(o.packet_id),
            }
        }
        if !self.inflight.is_empty() && !self.window_open() {
            conn.window_stalled(now_ms);
        }
    }

    /// Forgets everything but the identity (clean start, or expiry).
    /// The store rows go with `delete_session`, by the caller; deferred
    /// rows are resolved (answer them with `Defer::drain`).
    pub fn clear(&mut self, shard: &Shard) {
        let stats = &*shard.stats;
        if let Some(key) = self.key {
            let seqs = self.inflight.iter().map(|o| o.seq);
            for seq in seqs.chain(self.queue.iter().map(|q| q.seq)) {
                shard.defer.resolve(key, seq);
            }
        }
        stats.inflight.sub(self.inflight.len() as u64);
        stats.queued.sub(self.queue.len() as u64);
        self.inflight.clear();
        self.queue.clear();
        self.held_bytes = 0;
        if let Some(r) = self.rare.as_mut() {
            r.ids_in_use = None;
            r.replays = Vec::new();
            self.tidy_rare();
        }
        self.inbound_qos2.clear();
        self.will = None;
    }

    /// Whether the session was removed and waits for its subscriptions to
    /// leave the router (`reap.rs`).
    pub fn is_gone(&self) -> bool {
        self.generation == crate::reap::GONE
    }

    /// Recomputes `held_bytes` from what is in flight and queued (restored sessions).
    pub fn recount_held(&mut self) {
        let inflight = self.inflight.iter().filter_map(|o| o.msg.as_deref());
        let queued = self.queue.iter().map(|q| &*q.msg);
        let sum: u64 = inflight.chain(queued).map(|m| cost(m) as u64).sum();
        self.held_bytes = sum.min(u32::MAX as u64) as u32;
    }

    /// The session row as stored.
    pub fn record(&self) -> store::SessionRecord {
        store::SessionRecord {
            client_id: self.client_id.clone(),
            protocol: self.version,
            expiry_interval: self.expiry,
            disconnected_at_ms: self.disconnected_at.get().map(store::instant_to_unix_ms),
            will: self.will.as_deref().cloned(),
            owner: self.owner.clone(),
        }
    }
}

/// Counts, while one publish is routed on this shard, the QoS 1/2 copies
/// sessions took and those they dropped: a v5 publisher whose message no
/// session could take gets PUBACK/PUBREC 0x97 (`publish.rs`, `confirm.rs`).
#[derive(Default)]
pub struct Tally {
    held: Cell<u32>,
    dropped: Cell<u32>,
}

impl Tally {
    fn held(&self) {
        self.held.set(self.held.get().saturating_add(1));
    }

    fn dropped(&self) {
        self.dropped.set(self.dropped.get().saturating_add(1));
    }

    /// Starts counting for one publish.
    pub fn reset(&self) {
        self.held.set(0);
        self.dropped.set(0);
    }

    /// What happened to the copies since `reset`.
    pub fn fate(&self) -> crate::mesh::Fate {
        use crate::mesh::Fate;
        let held = if self.held.get() > 0 { Fate::HELD } else { 0 };
        let dropped = if self.dropped.get() > 0 {
            Fate::DROPPED
        } else {
            0
        };
        Fate(held | dropped)
    }
}

/// How often a session warns of its dropped QoS 1/2 messages, at most.
pub const DROP_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The QoS 1/2 messages one session dropped (shown by `ringmq ctl client show`).
#[derive(Default, Debug)]
pub struct SessionDrops {
    /// Indexed by `DropReason as usize`.
    pub by_reason: [u64; DropReason::ALL.len()],
    /// Dropped since the last warning.
    unwarned: u64,
    warned_at: Option<Instant>,
}

impl SessionDrops {
    /// Every drop of this session.
    pub fn total(&self) -> u64 {
        self.by_reason.iter().sum()
    }
}

/// What a held QoS 1/2 message costs the session's byte budget: its topic
/// and payload (the bytes a session pins; shared copies count in each).
pub fn cost(m: &Message) -> u32 {
    let n = m.publish.topic.len() + m.publish.payload.len();
    n.min(u32::MAX as usize) as u32
}

/// Per-publish, per-shard frame cache: each (version, QoS) encoded at most once.
#[derive(Default)]
pub struct FrameCache {
    frames: [Option<PublishFrame>; 6],
}

impl FrameCache {
    /// The frame of `publish` for (version, qos), encoded on first use.
    pub fn get(&mut self, publish: &Publish, version: ProtocolVersion, qos: QoS) -> &PublishFrame {
        let v = usize::from(version == ProtocolVersion::V5);
        let slot = &mut self.frames[v * 3 + qos as usize];
        slot.get_or_insert_with(|| PublishFrame::new(publish, version, qos))
    }
}

/// A delivery with no topic alias (set by the connection).
pub fn delivery(packet_id: Option<PacketId>, dup: bool, retain: bool, ids: &[u32]) -> Delivery<'_> {
    Delivery {
        packet_id,
        dup,
        retain,
        topic_alias: None,
        subscription_ids: ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_id(s: &mut Session) -> PacketId {
        let id = s.alloc_packet_id().expect("an id is free");
        s.inflight.push_back(Outflight {
            packet_id: id,
            seq: 0,
            msg: None,
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SmallVec::new(),
            state: OutState::Published,
        });
        id
    }

    fn give_back(s: &mut Session, id: PacketId) {
        let i = s.inflight.iter().position(|o| o.packet_id == id).unwrap();
        s.inflight.remove(i);
        s.free_packet_id(id);
    }

    /// [MQTT-2.2.1-4] ([MQTT-2.3.1-2] (3.1.1)): a new PUBLISH gets an id not in flight, with
    /// the window small (scan) and large (bitmap), across wrap-arounds with ids held.
    #[test]
    fn packet_ids_in_flight_are_never_reused() {
        for window in [4usize, 300] {
            let mut s = Session::new(MqttString::from_static("c"), ProtocolVersion::V3_1_1);
            let held: Vec<PacketId> = (0..3).map(|_| take_id(&mut s)).collect();
            let mut live = std::collections::VecDeque::new();
            for _ in 0..140_000 {
                if live.len() == window {
                    let old = live.pop_front().unwrap();
                    give_back(&mut s, old);
                }
                let id = take_id(&mut s);
                assert!(!held.contains(&id), "held id {id} reused (window {window})");
                assert!(!live.contains(&id), "live id {id} reused (window {window})");
                live.push_back(id);
            }
            assert_eq!(s.ids_in_use().is_some(), window >= BITMAP_FROM);
            while let Some(id) = live.pop_front() {
                give_back(&mut s, id);
            }
            for id in held {
                give_back(&mut s, id);
            }
            assert!(s.ids_in_use().is_none(), "bitmap dropped with the last id");
        }
    }
}
