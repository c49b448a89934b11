//! The new node's side of a session move: the session was installed from the
//! old node's snapshot, and until the old node's stub ends (`stub.rs`) its
//! messages arrive by two paths: forwarded by the stub (`SessionCopy`) and
//! directly (this node's routes, or a peer's copy). Each copy carries its
//! origin (node, shard, count at that shard).
//!
//! - Forwarded copies are delivered at once, in their order (after the
//!   snapshot's messages: a copy that comes before the install waits for it).
//! - Direct copies are *held*, in arrival order, until the stub's `StubEnd`,
//!   which comes behind every forwarded copy and carries, per origin, the last
//!   count the old node delivered (`marks`). Then a held copy at or below its
//!   origin's mark is dropped (it reached the session through the old node:
//!   in the snapshot or forwarded) and the others are delivered, in order.
//!   A held QoS 1/2 copy is a queued row of the session meanwhile (`hold`):
//!   acknowledged, it survives a crash of this node before `StubEnd`.
//!
//! Each origin's copies travel every path in their order, the old node's
//! path carries an origin's copies up to its mark and the direct path every
//! copy from a point at or before it (`stub.rs` says why), so the session gets
//! each message once, and an origin's messages in its order: those up to the
//! mark, then the rest. Exception: this node's home shard of the session
//! routed its own copies after the install locally (No Local applied there);
//! their forwarded twins are skipped and the local ones never dropped.
//!
//! After `StubEnd` the marks still apply for [`MERGE_FOR`]: a peer's direct
//! copy covered by them can arrive after it (the peer's link to this node is
//! not the path `StubEnd` took) and is dropped.
//!
//! Bounded: without `StubEnd` within [`MERGE_FOR`] (old node down) the held
//! copies are delivered as they are (duplicates possible, counted).
//!
//! A crash of this node mid-merge (`recover`): the merge's state was in
//! memory, but a marker row written with the install says which sessions
//! were merging. For [`MERGE_FOR`] after the restart such a session notes
//! the origin of every copy delivered to it and drops a second copy of one
//! origin: the old node resends the acked copies this node did not answer
//! before it died, both twins of a message among them. A twin delivered
//! before the crash is known by the ranges stored with the rows
//! (`copy_acks::held_twin`, `copy_acks::forwarded_twin`).

use super::copy_acks::CopyAck;
use super::frame::Origin;
use super::routes::Slot;
use super::stub::Move;
use super::Item;
use crate::mesh::MeshItem;
use crate::router::PublishInfo;
use crate::session::{Session, SessionId};
use crate::shard::Shard;
use crate::store::{MessageRef, OutboundState, SessionKey};
use ringmq_codec::{Publish, QoS, ReasonCode};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The longest a moved session holds its direct copies.
pub const MERGE_FOR: Duration = Duration::from_secs(25);
/// Forwarded copies kept for a session not installed yet, at most.
const PENDING_MAX: usize = 100_000;

/// A forwarded copy that came before its session's install (with `ack`,
/// answered after the install: `copy_acks.rs`).
type Early = (Origin, Publish, Option<CopyAck>);

struct Held {
    publish: Publish,
    qos: QoS,
    retain: bool,
    sub_ids: SmallVec<[u32; 2]>,
    origin: Option<Origin>,
    /// A prepared QoS 2 message's key (sending node, key), when the copy
    /// came as one (`origin.rs`): the recovery's resend carries no origin.
    key: Option<(u64, super::origin::Origin)>,
    /// The session's queued row holding this copy durably (QoS 1/2 of a
    /// persistent session): acknowledged copies survive a crash of this node
    /// before the merge ends. Deleted once the merge delivered or dropped it.
    row: Option<(SessionKey, u64)>,
    /// Dropped already: its forwarded twin was delivered.
    gone: bool,
}

struct Merge {
    /// The slot is the session's while its client id is (a connection changes its generation).
    client: Box<str>,
    /// The old node's link slot.
    slot: Slot,
    held: Vec<Held>,
    /// This shard's origin count at the install: its later copies were routed here with the session.
    own_from: u64,
    id: u64,
    /// Per origin (node, shard): the first and last count held in a durable
    /// row (`copy_acks::held_durably`).
    ranges: HashMap<(u64, u16), (u64, u64)>,
    /// Held copies by origin, and the origins of the forwarded copies
    /// delivered: a copy that came both ways is dropped as its twin arrives
    /// (`twin_forwarded`, `twin_held`), not at `StubEnd` only, so a crash of
    /// this node before `StubEnd` leaves no durable row of both.
    held_at: HashMap<Origin, usize>,
    forwarded: std::collections::HashSet<Origin>,
    /// Per origin (node, shard): the first and last count of the acked
    /// forwarded copies delivered (`copy_acks::forwarded_durably`).
    fwd_ranges: HashMap<(u64, u16), (u64, u64)>,
}

/// A session whose merge a crash of this node cut (`recover`): the origins
/// of the copies delivered to it since the restart.
struct Recovered {
    client: Box<str>,
    seen: std::collections::HashSet<Origin>,
}

/// After a merge ended: the old node's marks, still applied to direct copies
/// (one that a peer sent before its flush may reach this node after the
/// `StubEnd` that came through the old node), until [`MERGE_FOR`] passed.
struct After {
    last: HashMap<(u64, u16), u64>,
    own_from: u64,
    id: u64,
}

/// One shard's merging sessions and early copies.
#[derive(Default)]
pub(crate) struct Merges {
    by_sid: RefCell<HashMap<SessionId, Merge>>,
    after: RefCell<HashMap<SessionId, After>>,
    /// Forwarded copies for sessions not installed yet, by client id.
    pending: RefCell<HashMap<Box<str>, Vec<Early>>>,
    next: Cell<u64>,
    /// Sessions whose merge a crash of this node cut, for [`MERGE_FOR`] after the restart.
    recovered: RefCell<HashMap<SessionId, Recovered>>,
}

impl Merges {
    pub fn any(&self) -> bool {
        !self.by_sid.borrow().is_empty()
            || !self.after.borrow().is_empty()
            || !self.recovered.borrow().is_empty()
    }
}

/// At start, after the sessions are restored: the persistent sessions whose
/// merge was running when this node stopped (a crash before `StubEnd`, or
/// within [`MERGE_FOR`] after it) drop a second copy of one origin for
/// [`MERGE_FOR`]: the old node's resends of what this node did not answer
/// carry both twins of a message (the forwarded and the direct copy), and
/// the merge that told them apart died with the process.
pub(crate) fn recover(shard: &Rc<Shard>) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let found: Vec<(SessionId, Box<str>)> = shard
        .sessions
        .borrow()
        .iter()
        .filter(|(_, s)| s.key.is_some())
        .filter(|(_, s)| super::copy_acks::was_merging(shard, s.client_id.as_str()))
        .map(|(sid, s)| (sid as SessionId, s.client_id.as_str().into()))
        .collect();
    if found.is_empty() {
        return;
    }
    n.stats
        .handover
        .merge_recovered
        .fetch_add(found.len() as u64, Relaxed);
    let mut r = n.merges.recovered.borrow_mut();
    for (sid, client) in found {
        tracing::info!(%client, "session move: a restart cut its merge; twins dropped for {MERGE_FOR:?}");
        let seen = Default::default();
        r.insert(sid, Recovered { client, seen });
    }
    drop(r);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(MERGE_FOR).await;
        let Some(n) = &shard.cluster else { return };
        let ended = std::mem::take(&mut *n.merges.recovered.borrow_mut());
        for (sid, r) in ended {
            if !n.merges.by_sid.borrow().contains_key(&sid) {
                super::copy_acks::merging(&shard, &r.client, false);
            }
        }
    })
    .detach();
}

/// A copy of `o` for session `sid` whose merge a restart cut: true when its
/// twin was delivered (dropped, counted), else noted. `direct`: routed here
/// (its forwarded twin may have been delivered durably before the crash).
fn recovered_twin(shard: &Shard, sid: SessionId, o: Option<Origin>, direct: bool) -> bool {
    let (Some(n), Some(o)) = (&shard.cluster, o) else {
        return false;
    };
    let mut recovered = n.merges.recovered.borrow_mut();
    let Some(r) = recovered.get_mut(&sid) else {
        return false;
    };
    let twin =
        (direct && super::copy_acks::forwarded_twin(shard, &r.client, o)) || r.seen.contains(&o);
    if twin {
        n.stats.handover.merge_dups.fetch_add(1, Relaxed);
    } else if r.seen.len() < super::ghost::SEEN_MAX {
        r.seen.insert(o);
    }
    twin
}

/// Whether the old node's `last` counts cover a direct copy of `o` (it
/// reached the session through the old node), this shard's own copies since
/// the install (`own_from`) excepted.
fn covered(
    node: u64,
    shard: usize,
    last: &HashMap<(u64, u16), u64>,
    own_from: u64,
    o: Origin,
) -> bool {
    let own = o.node == node && usize::from(o.shard) == shard && o.seq >= own_from;
    !own && last.get(&(o.node, o.shard)).is_some_and(|&l| o.seq <= l)
}

/// At install (home shard): session `sid` merges what peer `slot` still forwards.
pub(crate) fn begin(shard: &Rc<Shard>, sid: SessionId, client: &str, slot: Slot) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let id = n.merges.next.get() + 1;
    n.merges.next.set(id);
    n.merges.after.borrow_mut().remove(&sid);
    n.merges.by_sid.borrow_mut().insert(
        sid,
        Merge {
            client: client.into(),
            slot,
            held: Vec::new(),
            own_from: super::origin_now(shard),
            id,
            ranges: HashMap::new(),
            held_at: HashMap::new(),
            forwarded: Default::default(),
            fwd_ranges: HashMap::new(),
        },
    );
    // In the install's batch: a restart before the merge ends knows it.
    super::copy_acks::merging(shard, client, true);
    n.merges.recovered.borrow_mut().remove(&sid);
    let early = n.merges.pending.borrow_mut().remove(client);
    for (o, p, ack) in early.into_iter().flatten() {
        // Behind the install's rows: one commit answers both.
        forwarded(shard, client, o, p, ack);
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(MERGE_FOR).await;
        let live = shard.cluster.as_ref().is_some_and(|n| {
            n.merges
                .by_sid
                .borrow()
                .get(&sid)
                .is_some_and(|m| m.id == id)
        });
        if live {
            if let Some(n) = &shard.cluster {
                n.stats.handover.merge_expired.fetch_add(1, Relaxed);
            }
            tracing::warn!(sid, "session move: no end from the old node within {MERGE_FOR:?}: held copies delivered");
            finish(&shard, sid, None);
        }
    })
    .detach();
}

/// In delivery: holds a direct copy for a merging session (true), or not.
/// A held QoS 1/2 copy is stored as a queued row of the session at once, in
/// the batch whose commit the acknowledgement of its publish waits for
/// (the publisher's flush, or this shard's confirmation to another shard or
/// node): the copy is the session's, acknowledged, and must survive a crash
/// before `StubEnd`: the receiver's acknowledgement after accepting
/// ownership, [MQTT-4.3.2-4]/[MQTT-4.3.3-8] (v5), [MQTT-4.3.2-2]/[MQTT-4.3.3-2] (3.1.1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn hold(
    shard: &Shard,
    s: &mut Session,
    sid: SessionId,
    p: &Publish,
    qos: QoS,
    retain: bool,
    sub_ids: &[u32],
    origin: Option<Origin>,
) -> bool {
    let Some(n) = shard.cluster.as_ref() else {
        return false;
    };
    if let Some(a) = n.merges.after.borrow().get(&sid) {
        // Ended: a late direct copy the old node delivered is dropped.
        if origin.is_some_and(|o| covered(n.node_id, shard.id, &a.last, a.own_from, o)) {
            n.stats.handover.merge_dups.fetch_add(1, Relaxed);
            return true;
        }
        let d = super::ghost::Direct::new(p, qos, retain, sub_ids, None);
        return super::ghost::hold(shard, s, sid, d, origin);
    }
    let mut m = n.merges.by_sid.borrow_mut();
    let Some(m) = m.get_mut(&sid) else {
        if recovered_twin(shard, sid, origin, true) {
            return true; // a restart cut its merge: the forwarded twin came
        }
        // A late peer's copy may also come through the old node (`ghost.rs`):
        // held until the ghost ends, or dropped as a duplicate.
        let d = super::ghost::Direct::new(p, qos, retain, sub_ids, None);
        return super::ghost::hold(shard, s, sid, d, origin);
    };
    if origin.is_some_and(|o| m.forwarded.contains(&o)) {
        // Its forwarded twin was delivered already.
        n.stats.handover.merge_dups.fetch_add(1, Relaxed);
        return true;
    }
    let row = match s.key {
        Some(key) if qos != QoS::AtMostOnce && shard.store.is_persistent() => {
            let seq = s.next_seq;
            s.next_seq += 1;
            let msg = MessageRef {
                publish: p,
                qos,
                retain,
                subscription_ids: sub_ids,
                received_at_ms: crate::store::unix_ms(),
            };
            shard
                .store
                .put_outbound_new(key, seq, OutboundState::Queued, msg)
                .detach();
            if let Some(o) = origin {
                let r = m.ranges.entry((o.node, o.shard)).or_insert((o.seq, o.seq));
                r.1 = o.seq;
                super::copy_acks::held_durably(shard, &m.client, o, *r);
            }
            Some((key, seq))
        }
        _ => None,
    };
    if let Some(o) = origin {
        m.held_at.insert(o, m.held.len());
    }
    m.held.push(Held {
        publish: p.clone(),
        qos,
        retain,
        sub_ids: SmallVec::from_slice(sub_ids),
        origin,
        key: super::origin::current(shard),
        row,
        gone: false,
    });
    n.stats.handover.held.fetch_add(1, Relaxed);
    true
}

/// The session routes settled here (home shard, before CONNACK): the old
/// node is told through shard 0, behind what every shard routed before.
pub(crate) fn settled(shard: &Rc<Shard>, client: &str) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let slot = n
        .merges
        .by_sid
        .borrow()
        .values()
        .find(|m| &*m.client == client)
        .map(|m| m.slot);
    if let Some(slot) = slot {
        let m = Move::Done {
            slot,
            client: client.into(),
        };
        if shard.id == 0 {
            on_item(shard, m);
        } else {
            shard
                .mesh
                .push(0, MeshItem::Cluster(Box::new(Item::Move(m))));
        }
    }
}

/// Shard 0, a `SessionCopy` (with `ack`: an `AckedCopy`) from the old
/// node: to the session's home shard.
pub(crate) fn on_copy(
    shard: &Rc<Shard>,
    client: String,
    origin: Origin,
    publish: Publish,
    ack: Option<CopyAck>,
) {
    let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
    let m = Move::CopyIn {
        client: client.into(),
        origin,
        publish,
        ack,
    };
    to_home(shard, home, m);
}

/// Shard 0, a `StubEnd` from the old node: to the session's home shard.
pub(crate) fn on_stub_end(shard: &Rc<Shard>, client: String, marks: Vec<Origin>) {
    let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
    let m = Move::EndIn {
        client: client.into(),
        marks,
    };
    to_home(shard, home, m);
}

fn to_home(shard: &Rc<Shard>, home: usize, m: Move) {
    if home == shard.id {
        on_item(shard, m);
    } else {
        shard
            .mesh
            .push(home, MeshItem::Cluster(Box::new(Item::Move(m))));
    }
}

/// A session here that moved on before its merge ended: held copies are
/// delivered now (so they go with it), without the old node's marks.
pub(crate) fn abort(shard: &Rc<Shard>, sid: SessionId) {
    finish(shard, sid, None);
    super::ghost::release(shard, sid);
}

pub(crate) fn sid_of(shard: &Shard, client: &str) -> Option<SessionId> {
    let id = ringmq_codec::MqttString::try_from(client).ok()?;
    let sid = shard.by_client.borrow().get(&id, &shard.sessions.borrow());
    sid
}

/// A forwarded copy of `origin` is delivered to merging session `sid`: its
/// held twin, if any, is dropped now (its row deleted in the batch of the
/// delivery's row), and a direct copy coming later is dropped in `hold`.
/// An `acked` one extends the stored range of forwarded copies delivered.
/// A keyed one (`key`: a prepared QoS 2 message, sending node and key)
/// also finds its held twin by key: the old node's recovery resends such a
/// message with no origin, and its keyed copy may come after from its
/// outbox. Only a copy this merge holds is dropped so, never one the key
/// was noted by elsewhere (that would lose the session's only copy).
fn twin_forwarded(
    shard: &Shard,
    sid: SessionId,
    origin: Origin,
    acked: bool,
    key: Option<(u64, super::origin::Origin)>,
) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let mut merges = n.merges.by_sid.borrow_mut();
    let Some(m) = merges.get_mut(&sid) else {
        return;
    };
    m.forwarded.insert(origin);
    if acked && shard.store.is_persistent() {
        let o = origin;
        let r = m
            .fwd_ranges
            .entry((o.node, o.shard))
            .or_insert((o.seq, o.seq));
        r.1 = r.1.max(o.seq);
        super::copy_acks::forwarded_durably(shard, &m.client, o, *r);
    }
    let by_key = || {
        let k = key?;
        m.held.iter().position(|h| !h.gone && h.key == Some(k))
    };
    let Some(i) = m.held_at.remove(&origin).or_else(by_key) else {
        return;
    };
    if let Some(h) = m.held.get_mut(i) {
        if let Some((key, seq)) = h.row.take() {
            shard.store.delete_outbound(key, seq).detach();
        }
        h.gone = true;
        if let Some(o) = h.origin.filter(|o| *o != origin) {
            m.held_at.remove(&o); // found by its key
        }
        n.stats.handover.merge_dups.fetch_add(1, Relaxed);
    }
}

/// Delivers forwarded copy `p` to session `sid`; an acked one once per
/// stamp (a resend is not delivered again), answered after the commit.
fn deliver_forwarded(
    shard: &Rc<Shard>,
    (sid, merging): (SessionId, bool),
    client: &str,
    p: &Publish,
    ack: Option<CopyAck>,
    origin: Origin,
) {
    let Some(a) = ack else {
        return deliver_to(shard, sid, p, None, Some(origin));
    };
    // A prepared QoS 2 message's copy: its key is noted, so the sender
    // recovery's resend is not delivered again (`origin.rs`). While the
    // merge runs its direct twin (same key) is told apart by origin, not
    // by key (the twin is dropped for it: `twin_forwarded`); after it, a
    // key delivered already (the resend came first) is not delivered again.
    if let Some(k) = a.key {
        if !super::origin::first_time(shard, a.node, k) && !merging {
            return super::copy_acks::answer(shard, a, None);
        }
    }
    let ops = shard.store.pending_ops();
    let once = super::copy_acks::once(client, a);
    super::deliver_once(shard, Some(once), || {
        deliver_to(shard, sid, p, None, Some(origin))
    });
    if let Some(k) = a.key.filter(|_| shard.store.pending_ops() != ops) {
        // In the batch of the delivery's rows.
        super::origin::stored(shard, a.node, k);
    }
    super::copy_acks::answer(shard, a, None);
}

/// A forwarded copy for `client` (home shard).
fn forwarded(shard: &Rc<Shard>, client: &str, origin: Origin, p: Publish, ack: Option<CopyAck>) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let stats = &n.stats.handover;
    let sid = sid_of(shard, client);
    let merging = sid.and_then(|sid| {
        n.merges
            .by_sid
            .borrow()
            .get(&sid)
            .map(|m| (sid, m.own_from))
    });
    match (sid, merging) {
        (_, Some((sid, own_from))) => {
            let own = origin.node == n.node_id && usize::from(origin.shard) == shard.id;
            if own && origin.seq >= own_from {
                // Routed here after the install: delivered (or held) here already.
                stats.merge_dups.fetch_add(1, Relaxed);
                if let Some(a) = ack {
                    super::copy_acks::answer(shard, a, None);
                }
                return;
            }
            if super::copy_acks::crash_in_armed() {
                let twinned = n
                    .merges
                    .by_sid
                    .borrow()
                    .get(&sid)
                    .is_some_and(|m| m.held.iter().any(|h| h.origin == Some(origin)));
                if super::copy_acks::crash_copy_in(shard, twinned) {
                    return; // test crash point: received, never committed
                }
            }
            stats.merged.fetch_add(1, Relaxed);
            let key = ack.and_then(|a| a.key.map(|k| (a.node, k)));
            twin_forwarded(shard, sid, origin, ack.is_some(), key);
            deliver_forwarded(shard, (sid, true), client, &p, ack, origin);
        }
        (Some(sid), None) if ack.is_none() && super::ghost::haunted(shard, sid) => {
            // A late peer's copy the old node's ghost forwarded (`ghost.rs`).
            deliver_to(shard, sid, &p, None, Some(origin));
        }
        (None, None) => {
            // Before the install (the snapshot is on its way): kept for it.
            let mut pending = n.merges.pending.borrow_mut();
            let fresh = !pending.contains_key(client);
            let v = pending.entry(client.into()).or_default();
            if v.len() >= PENDING_MAX {
                stats.forward_lost.fetch_add(1, Relaxed);
                drop(pending);
                if let Some(a) = ack {
                    super::copy_acks::answer(shard, a, Some(ReasonCode::QuotaExceeded));
                }
                return;
            }
            v.push((origin, p, ack));
            if fresh {
                // No install comes after the fetch stopped waiting (the claim timeout).
                let wait = super::copy_acks::pending_for(shard);
                let shard = shard.clone();
                let client: Box<str> = client.into();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(wait).await;
                    let Some(n) = &shard.cluster else { return };
                    let gone = n.merges.pending.borrow_mut().remove(&client);
                    let Some(v) = gone else { return };
                    n.stats
                        .handover
                        .forward_lost
                        .fetch_add(v.len() as u64, Relaxed);
                    let code = ReasonCode::ImplementationSpecificError;
                    for a in v.into_iter().filter_map(|e| e.2) {
                        super::copy_acks::answer(&shard, a, Some(code));
                    }
                })
                .detach();
            }
        }
        (Some(sid), None) => match ack {
            // An acked copy after the merge ended (a resend after a link
            // break or a restart): the session here takes it, once.
            Some(a) => {
                stats.copies_late.fetch_add(1, Relaxed);
                if super::copy_acks::crash_late_in(shard) {
                    return; // test crash point: received, never committed
                }
                if super::copy_acks::held_twin(shard, client, origin)
                    || recovered_twin(shard, sid, Some(origin), false)
                {
                    // Its direct twin was held in a durable row, or came
                    // since the restart (a crash of this node ended the
                    // merge): the session has it.
                    stats.merge_dups.fetch_add(1, Relaxed);
                    return super::copy_acks::answer(shard, a, None);
                }
                deliver_forwarded(shard, (sid, false), client, &p, Some(a), origin);
            }
            // The merge ended (or never began: a fresh session): nothing to merge into.
            None => {
                stats.forward_lost.fetch_add(1, Relaxed);
            }
        },
    }
}

/// Delivers `p` to session `sid` as its subscriptions here match it
/// (`held`: the QoS, flag and identifiers computed when it was held), once
/// per origin of a late peer (`ghost.rs`).
fn deliver_to(
    shard: &Shard,
    sid: SessionId,
    p: &Publish,
    held: Option<&Held>,
    origin: Option<Origin>,
) {
    if held.is_none() && super::ghost::overtakes(shard, sid, origin) {
        return; // a late peer's forwarded copy whose direct twin comes behind held ones
    }
    if super::ghost::dup(shard, sid, origin) {
        return;
    }
    let (qos, retain, ids): (QoS, bool, SmallVec<[u32; 2]>) = match held {
        Some(h) => (h.qos, h.retain, h.sub_ids.clone()),
        None => {
            let router = shard.router.borrow();
            let mut scratch = shard.scratch.borrow_mut();
            let info = PublishInfo {
                publisher: None,
                retain: p.retain,
            };
            let found = router
                .match_local_with(p.topic.as_str(), info, &mut scratch)
                .iter()
                .find(|m| m.session == sid)
                .map(|m| {
                    (
                        p.qos.min(m.qos),
                        m.retain_as_published && p.retain,
                        m.subscription_ids.clone(),
                    )
                });
            let found = found.or_else(|| {
                // A share-group copy the old node forwarded (`share_move.rs`).
                let sessions = shard.sessions.borrow();
                super::share_move::deliver(sessions.get(sid as usize)?, p)
            });
            match found {
                Some(f) => f,
                None => return, // unsubscribed meanwhile
            }
        }
    };
    deliver_as(shard, sid, p, (qos, retain, &ids));
}

/// Delivers `p` to session `sid` with the QoS, Retain As Published and
/// subscription identifiers computed for it.
pub(crate) fn deliver_as(shard: &Shard, sid: SessionId, p: &Publish, how: (QoS, bool, &[u32])) {
    let (qos, retain, ids) = how;
    let mut sessions = shard.sessions.borrow_mut();
    let Some(s) = sessions.get_mut(sid as usize) else {
        return;
    };
    let version = s.conn.as_ref().map_or(s.version, |c| c.version);
    let frame = ringmq_codec::PublishFrame::new(p, version, qos);
    let mut shared = None;
    s.deliver(shard, p, &mut shared, &frame, retain, ids, Instant::now());
}

/// Ends session `sid`'s merge: its held copies are delivered but those the
/// old node's `marks` cover (all of them without marks).
fn finish(shard: &Rc<Shard>, sid: SessionId, marks: Option<&[Origin]>) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    let Some(m) = n.merges.by_sid.borrow_mut().remove(&sid) else {
        return;
    };
    let alive = shard
        .sessions
        .borrow()
        .get(sid as usize)
        .is_some_and(|s| *s.client_id.as_str() == *m.client && !s.is_gone());
    if !alive {
        // Gone with its session (its rows went with it).
        super::copy_acks::merging(shard, &m.client, false);
        return;
    }
    if marks.is_some() && !m.held.is_empty() && super::origin::crash_armed("merge-held-end") {
        // Test crash point: the process ends once what it acknowledged is
        // committed, with the held copies not delivered yet.
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _ = shard.store.flush().await;
            super::origin::crash_point("merge-held-end");
        })
        .detach();
        return;
    }
    if let Some(s) = shard.sessions.borrow().get(sid as usize) {
        // The held rows are deleted as their copies are delivered: the new
        // rows must not be deferred (`defer.rs`), or a crash in between
        // would lose what the held rows kept.
        s.store_at_once(shard);
    }
    let last: HashMap<(u64, u16), u64> = marks
        .unwrap_or_default()
        .iter()
        .map(|o| ((o.node, o.shard), o.seq))
        .collect();
    let stats = &n.stats.handover;
    for h in m.held.iter().filter(|h| !h.gone) {
        let covered = h
            .origin
            .is_some_and(|o| covered(n.node_id, shard.id, &last, m.own_from, o));
        if covered {
            stats.merge_dups.fetch_add(1, Relaxed);
        } else {
            let d = super::ghost::Direct::new(&h.publish, h.qos, h.retain, &h.sub_ids, h.row);
            if super::ghost::keep_held(shard, sid, d, h.origin) {
                continue; // a late peer's direct copy: after the ghost's forwards (its row kept)
            }
            deliver_to(shard, sid, &h.publish, Some(h), h.origin);
        }
        // Behind the delivery's own row in the same batch: one commit.
        if let Some((key, seq)) = h.row {
            shard.store.delete_outbound(key, seq).detach();
        }
    }
    stats.merge_ended.fetch_add(1, Relaxed);
    if marks.is_some() {
        let id = m.id;
        let a = After {
            last,
            own_from: m.own_from,
            id,
        };
        n.merges.after.borrow_mut().insert(sid, a);
        let shard = shard.clone();
        let client = m.client;
        glommio::spawn_local(async move {
            glommio::timer::sleep(MERGE_FOR).await;
            if let Some(n) = &shard.cluster {
                let mut after = n.merges.after.borrow_mut();
                if after.get(&sid).is_some_and(|a| a.id == id) {
                    after.remove(&sid);
                    drop(after);
                    // The marks no longer apply: a restart has nothing to recover.
                    super::copy_acks::merging(&shard, &client, false);
                }
            }
        })
        .detach();
    } else {
        super::copy_acks::merging(shard, &m.client, false);
    }
}

/// The new node's mesh items of a move (`stub.rs` passes them on).
pub(crate) fn on_item(shard: &Rc<Shard>, m: Move) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    match m {
        Move::CopyIn {
            client,
            origin,
            publish,
            ack,
        } => forwarded(shard, &client, origin, publish, ack),
        Move::EndIn { client, marks } => {
            let sid = n
                .merges
                .by_sid
                .borrow()
                .iter()
                .find(|(_, m)| m.client == client)
                .map(|(sid, _)| *sid);
            if let Some(sid) = sid {
                finish(shard, sid, Some(&marks));
            }
        }
        Move::Done { slot, client } => {
            let Some(hub) = n.hub.clone() else { return };
            // Behind every copy this node's shards routed toward the old node
            // before they applied the session's subscriptions.
            let h = hub.clone();
            hub.after_local_barrier(
                shard,
                Box::new(move || {
                    if let Some(l) = h.link_of(slot).filter(|l| l.is_up()) {
                        l.push_frame(&super::frame::Frame::MoveDone(client.into()));
                    }
                }),
            );
        }
        _ => {}
    }
}
