//! Sessions across nodes: a CONNECT on this node for a session another node
//! owned gets that session, shipped over the node link, before its CONNACK.
//!
//! ```text
//! node B (new owner)                                   node A (old owner)
//! CONNECT, claim won at epoch e (previous: A)
//! fetch: SessionFetch{req, e, client} ── link ──►  shard 0 ──mesh──► home shard
//!   (the CONNECT's task awaits, bounded;            take: close 0x8E, snapshot,
//!    the shard serves others)                        discard here (no release)
//!                                     ◄── link ──  SessionShip{req, snapshot}
//! home shard: install (rows written, subscriptions routed) ── CONNACK session present 1
//! ```
//!
//! The fence from the metadata watch (`ownership::fence`) may reach A before
//! B's fetch does: it takes the session the same way and parks the snapshot
//! for [`PARK_FOR`], where the fetch finds it. A fetch finds the session live
//! (and takes it), parked, or not at all (A never had it, or its node
//! restarted without it: answered `None`). The take keeps the session's
//! snapshot on A, durably, until B's `MoveDone` (`moving.rs`): a fetch that
//! finds it neither live nor parked is answered from that keep. B waits at
//! most the claim timeout (`--cluster-claim-timeout`); then, or when the
//! link to A is down, the CONNECT is refused with Server unavailable and
//! the client's retry fetches again, until A has been down
//! `--node-down-after` (then a fresh session); counted by reason in
//! [`HandoverStats`].
//!
//! Interface: [`fetch`] (CONNECT), [`install`] (home shard, before
//! `connect::accept`), [`take`] + [`park`] (fence), and the frame and mesh
//! handlers [`on_fetch`], [`on_ship`], [`on_item`].

use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::ownership::Claim;
use crate::session::{OutState, SessionId};
use crate::shard::Shard;
use crate::stats::CloseReason;
use crate::store::{self, MessageRef, OutboundState, SnapshotWriter, SubscriptionRecord};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What a CONNECT's fetch brought.
pub enum Fetched {
    /// The session, shipped by the old node.
    Session(Shipped),
    /// A fresh session: nobody else had it, the old node had none, or it
    /// has been down `--node-down-after` (the session is lost).
    Fresh,
    /// The old node is unreachable mid-move: refuse the CONNECT with Server
    /// unavailable; its retry fetches again (`moving.rs`).
    Unavailable,
}

/// A session another node shipped here, and the peer it came from.
pub struct Shipped {
    pub snapshot: Bytes,
    pub from: Slot,
}

/// How long a snapshot taken by a fence waits for its new owner's fetch.
pub const PARK_FOR: Duration = Duration::from_secs(10);

/// What happened to cross-node takeovers on this node (every shard adds).
#[derive(Debug, Default)]
pub struct HandoverStats {
    /// Sessions asked of another node at CONNECT.
    pub fetches: AtomicU64,
    /// Sessions received and installed here.
    pub installed: AtomicU64,
    /// Fresh sessions given instead: the old node had none.
    pub missing: AtomicU64,
    /// ... no answer within the claim timeout.
    pub timeouts: AtomicU64,
    /// ... the link to the old node was down.
    pub unreachable: AtomicU64,
    /// ... the snapshot did not decode (counted, logged).
    pub bad: AtomicU64,
    /// Answers that came after their CONNECT stopped waiting (dropped).
    pub late: AtomicU64,
    /// Sessions this node shipped to another.
    pub shipped: AtomicU64,
    /// Bytes of the snapshots shipped.
    pub shipped_bytes: AtomicU64,
    /// Snapshots parked by a fence, and those never fetched.
    pub parked: AtomicU64,
    pub expired: AtomicU64,
    /// Session moves: stubs started on this node (sessions that left, still forwarded).
    pub stubs: AtomicU64,
    /// Session moves: stubs ended by their move's end.
    pub stub_ended: AtomicU64,
    /// Session moves: stubs ended without their move's end within STUB_FOR.
    pub stub_expired: AtomicU64,
    /// Session moves: stubs restored from the store at start (a crash in their window).
    pub stubs_restored: AtomicU64,
    /// Copies from other nodes that matched no subscription and no stub
    /// here: no matching subscribers (their publishers were acknowledged).
    pub copies_unrouted: AtomicU64,
    /// Session moves: copies a stub forwarded.
    pub forwarded: AtomicU64,
    /// Session moves: forwarded copies lost: link down, session gone, or not installed in time.
    pub forward_lost: AtomicU64,
    /// Session moves: of the forwarded copies, QoS 1/2 ones sent acked
    /// (durability `sync`: the publisher's acknowledgement waits for the new node).
    pub forwarded_acked: AtomicU64,
    /// Session moves: acked forwarded copies that came after their merge
    /// ended (resent after a link break or a restart), delivered once.
    pub copies_late: AtomicU64,
    /// Session moves: flushes a peer did not answer within the route-ack timeout.
    pub flush_timeouts: AtomicU64,
    /// Session moves: direct copies held by a session that moved here.
    pub held: AtomicU64,
    /// Session moves: forwarded copies delivered to a session that moved here.
    pub merged: AtomicU64,
    /// Session moves: copies that reached a moved session by both paths, delivered once.
    pub merge_dups: AtomicU64,
    /// Session moves: sessions whose merge a restart of this node cut
    /// (twins dropped for MERGE_FOR after it: `merge::recover`).
    pub merge_recovered: AtomicU64,
    /// Session moves: merges ended by the old node's StubEnd.
    pub merge_ended: AtomicU64,
    /// Session moves: merges ended without StubEnd within MERGE_FOR.
    pub merge_expired: AtomicU64,
    /// Session moves: ghosts (a flush peer silent; its late copies forwarded, `ghost.rs`).
    pub ghosts: AtomicU64,
    /// Session moves: late copies a ghost forwarded to the new owner.
    pub ghost_forwarded: AtomicU64,
    /// Session moves: ghosts ended by every late peer's flush.
    pub ghost_ended: AtomicU64,
    /// Session moves: a ghost's end written on a later connection of the
    /// link to the new owner (the link was down at the end, or broke after).
    pub ghost_end_resent: AtomicU64,
    /// Session moves: ghosts ended by their time bound.
    pub ghost_expired: AtomicU64,
    /// Session moves: copies from a ghost's peers that came by both paths, delivered once.
    pub ghost_dups: AtomicU64,
    /// Session moves: direct copies from a ghost's peers held until the ghost ended (order).
    pub ghost_held: AtomicU64,
    /// Gauge: rows of moved sessions in the stamp tables (acked-copy stamps,
    /// merge ranges); they go with their session (`copy_acks::session_removed`).
    pub stamp_rows: AtomicU64,
    /// Session moves: share-group copies given to the old node, forwarded to the moving member.
    pub shared_forwarded: AtomicU64,
    /// Old node: sessions kept (stored with the take) until the new node's `MoveDone` (`moving.rs`).
    pub kept: AtomicU64,
    /// ... fetches answered from a keep (after a restart, or a retry).
    pub kept_served: AtomicU64,
    /// ... keeps dropped by `MoveDone` (or the session installed here again).
    pub kept_done: AtomicU64,
    /// ... keeps dropped by their time bound.
    pub kept_expired: AtomicU64,
    /// ... keeps restored from the store at start.
    pub kept_restored: AtomicU64,
    /// New node: CONNECTs refused (server unavailable) because the old node
    /// was unreachable mid-move; the retry fetches again.
    pub unavailable: AtomicU64,
    /// New node: sessions given up, the old node down `--node-down-after` (fresh session).
    pub lost: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// A snapshot taken by a fence, waiting for the fetch of the node that won.
struct Parked {
    epoch: u64,
    snapshot: Bytes,
    token: u64,
}

/// One shard's handover state.
#[derive(Default)]
pub(crate) struct Handover {
    /// Fetches of this shard awaiting their answer: request id -> answer.
    waiting: RefCell<HashMap<u64, flume::Sender<Answer>>>,
    next: Cell<u64>,
    parked: RefCell<HashMap<Box<str>, Parked>>,
    /// `routes_settled` calls of this shard waiting for shard 0.
    settled: RefCell<HashMap<u64, flume::Sender<()>>>,
    /// Delayed wills pending on this shard, by session (slot, generation):
    /// a session shipped away cancels its own ([`will_due`]).
    wills: RefCell<std::collections::HashSet<(SessionId, u64)>>,
}

/// A delayed will of session `sid` at `generation` is pending (`connect::closed`).
pub(crate) fn will_pending(shard: &Shard, sid: SessionId, generation: u64) {
    if let Some(n) = &shard.cluster {
        n.handover.wills.borrow_mut().insert((sid, generation));
    }
}

/// Its delay elapsed: false when the session was shipped to another node
/// meanwhile (its client reconnected there: no will [MQTT-3.1.3-9]).
pub(crate) fn will_due(shard: &Shard, sid: SessionId, generation: u64) -> bool {
    shard
        .cluster
        .as_ref()
        .is_none_or(|n| n.handover.wills.borrow_mut().remove(&(sid, generation)))
}

/// A fetch's answer: the snapshot (or none), whether the old node answered,
/// and when it did not, how long its link has been silent (if known).
type Answer = (Option<Bytes>, bool, Option<Duration>);

/// Request ids carry the asking shard in their top 16 bits.
fn shard_of(req: u64) -> usize {
    (req >> 48) as usize
}

/// At CONNECT (clean start 0) after a claim won: the session the previous
/// owner node held ([`Fetched::Session`]), a fresh one (nobody owned it,
/// this node did, the old node had none, or it is down), or
/// [`Fetched::Unavailable`] (the old node unreachable mid-move).
pub(crate) async fn fetch(shard: &Rc<Shard>, client_id: &str, claim: Claim) -> Fetched {
    let (Some(node), Some(cfg)) = (shard.cluster.as_ref(), shard.cfg.cluster.as_ref()) else {
        return Fetched::Fresh;
    };
    let Some((prev, _)) = claim.previous else {
        return Fetched::Fresh;
    };
    // This node owns it already: a retry after a failed move fetches again.
    let prev = if prev == cfg.node_id {
        match super::moving::pending_from(node, client_id) {
            Some(from) => from,
            None => return Fetched::Fresh,
        }
    } else {
        prev
    };
    let stats = &node.stats.handover;
    inc(&stats.fetches);
    // The live link's slot: a node added at run time has one too
    // (`members.rs` tells every shard), the static peer list is not enough.
    let Some(slot) = node.slot_of(prev) else {
        // A member without a node link (removed, or not linked yet): it cannot ship.
        inc(&stats.unreachable);
        super::moving::settled(node, client_id);
        return Fetched::Fresh;
    };
    let n = node.handover.next.get() + 1;
    node.handover.next.set(n);
    let req = (shard.id as u64) << 48 | (n & ((1 << 48) - 1));
    let (tx, rx) = flume::bounded(1);
    node.handover.waiting.borrow_mut().insert(req, tx);
    let item = Item::Fetch {
        slot,
        req,
        epoch: claim.epoch,
        client: client_id.into(),
    };
    if shard.id == 0 {
        on_item(shard, 0, item);
    } else {
        shard.mesh.push(0, MeshItem::Cluster(Box::new(item)));
    }
    let timeout = shard
        .cfg
        .ownership
        .as_ref()
        .map_or(Duration::from_secs(3), |g| g.timeout);
    let answer = futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await;
    node.handover.waiting.borrow_mut().remove(&req);
    let silent = match answer {
        Some((Some(snapshot), _, _)) => {
            super::moving::settled(node, client_id);
            return Fetched::Session(Shipped {
                snapshot,
                from: slot,
            });
        }
        // The old node answered it has none (counted as missing).
        Some((None, true, _)) => {
            super::moving::settled(node, client_id);
            return Fetched::Fresh;
        }
        Some((None, false, silent)) => silent, // counted as unreachable
        None => {
            inc(&stats.timeouts);
            tracing::info!(
                client_id,
                node = prev,
                "session handover: no answer within {timeout:?}"
            );
            None
        }
    };
    if super::moving::failed(node, client_id, prev, silent) {
        Fetched::Unavailable
    } else {
        Fetched::Fresh
    }
}

/// A clean start discards the session: a failed move of it is not retried.
pub(crate) fn discarded(shard: &Shard, client_id: &str) {
    if let Some(n) = shard.cluster.as_ref() {
        super::moving::settled(n, client_id);
    }
}

/// On the home shard, before `connect::accept`: installs the shipped
/// session of `client_id` (rows written to the store, subscriptions routed),
/// replacing any stale copy here. False (counted) when it does not decode.
pub(crate) fn install(
    shard: &Rc<Shard>,
    client_id: &ringmq_codec::MqttString,
    shipped: Shipped,
) -> bool {
    let Shipped { snapshot, from } = shipped;
    let Some(node) = shard.cluster.as_ref() else {
        return false;
    };
    let stats = &node.stats.handover;
    let rs = match store::read_snapshot(snapshot) {
        Ok(rs) if rs.record.client_id == *client_id => rs,
        Ok(_) => {
            inc(&stats.bad);
            tracing::warn!(
                client_id = client_id.as_str(),
                "session handover: snapshot of another client"
            );
            return false;
        }
        Err(e) => {
            inc(&stats.bad);
            tracing::warn!(
                client_id = client_id.as_str(),
                "session handover: {e}: fresh session"
            );
            return false;
        }
    };
    let stale: Option<SessionId> = shard
        .by_client
        .borrow()
        .get(client_id, &shard.sessions.borrow());
    if let Some(sid) = stale {
        // An older copy here (its ownership moved away and back): the
        // shipped one is the newer. Its epoch is not ours to release.
        shard.sessions.borrow_mut()[sid as usize].epoch = 0;
        crate::connect::remove_session(shard, sid);
    }
    crate::persist::install(shard, rs);
    inc(&stats.installed);
    // Moved away and back: what this node kept for that move is older.
    super::moving::drop_keep(shard, client_id.as_str());
    let sid: Option<SessionId> = shard
        .by_client
        .borrow()
        .get(client_id, &shard.sessions.borrow());
    if let Some(sid) = sid {
        // Copies the old node still forwards are merged with the direct ones.
        super::merge::begin(shard, sid, client_id.as_str(), from);
    }
    true
}

/// Resolves once every connected peer acknowledged this node's route
/// changes made so far (those of an installed session's subscriptions among
/// them), or after the route-ack timeout (shard 0 keeps that bound).
pub(crate) async fn routes_settled(shard: &Rc<Shard>) {
    let Some(node) = shard.cluster.as_ref() else {
        return;
    };
    let (tx, rx) = flume::bounded(1);
    if shard.id == 0 {
        super::after_routes(
            shard,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
    } else {
        let token = node.handover.next.get() + 1;
        node.handover.next.set(token);
        node.handover.settled.borrow_mut().insert(token, tx);
        // Behind this shard's `SubAdd`s on the same channel: shard 0 has
        // sent their route changes when it reads this.
        let item = Item::RoutesQuery(token);
        shard.mesh.push(0, MeshItem::Cluster(Box::new(item)));
    }
    let _ = rx.recv_async().await;
}

/// Closes session `sid`'s connection (v5 DISCONNECT 0x8E), snapshots the
/// session and discards it here, without releasing its ownership (it moved
/// to epoch `epoch`). `None` when it is gone or not older than `epoch`.
/// `to`: the new owner's link slot; the session's plain subscriptions then
/// stay routed here as a stub forwarding what they match (`stub.rs`).
pub(crate) fn take(
    shard: &Rc<Shard>,
    sid: SessionId,
    epoch: u64,
    to: Option<Slot>,
) -> Option<Bytes> {
    if shard
        .sessions
        .borrow()
        .get(sid as usize)
        .is_some_and(|s| s.epoch < epoch && !s.is_gone())
    {
        // Moving on before its own move settled: what it holds back goes with it.
        super::merge::abort(shard, sid);
    }
    let (conn, snapshot) = {
        let mut sessions = shard.sessions.borrow_mut();
        let s = sessions.get_mut(sid as usize)?;
        if s.epoch >= epoch || s.is_gone() {
            return None;
        }
        // The taken-over connection's will goes with the session, and the
        // new connection's own will replaces it there: its registration
        // under the old epoch is discarded (crate::wills).
        if s.will.is_some() {
            crate::wills::discarded(shard, s.client_id.as_bytes(), s.epoch);
        }
        // Never again acts for the old epoch: no release of it either.
        s.epoch = 0;
        if let Some(node) = shard.cluster.as_ref() {
            // A pending delayed will is cancelled: the client reconnects on the new node.
            node.handover
                .wills
                .borrow_mut()
                .remove(&(sid, s.generation));
        }
        let conn = s.conn.take();
        if conn.is_some() {
            s.disconnected_at = crate::session::MaybeInstant::some(std::time::Instant::now());
        }
        (conn, snapshot_of(s))
    };
    if let Some(conn) = conn {
        // [MQTT-3.1.4-3] as for a takeover on one node: the existing
        // connection is closed, v5 with DISCONNECT 0x8E.
        crate::connection::disconnect_client(&conn, CloseReason::SessionTakenOver);
    }
    let (client, groups, subs) = match shard.sessions.borrow().get(sid as usize) {
        Some(s) => (
            Some(s.client_id.clone()),
            Some(super::share_move::shared_of(s)),
            stub_subs(s),
        ),
        None => (None, None, Vec::new()),
    };
    if let Some(filters) = crate::connect::retire_session(shard, sid) {
        // In the batch deleting the session's rows: kept until the new
        // node's MoveDone, so a crash of this node loses nothing (`moving.rs`).
        let to_node = to.and_then(|slot| shard.cluster.as_ref()?.node_of(slot));
        if let (Some(node), Some(c)) = (to_node, &client) {
            super::moving::keep(shard, c.as_str(), node, epoch, &snapshot);
        }
        match (to, client) {
            (Some(slot), Some(c)) => {
                let groups = groups.unwrap_or_default();
                super::share_move::start(shard, c.as_str(), slot, groups);
                super::stub::start(shard, sid, c.as_str(), slot, filters, subs)
            }
            _ => crate::reap::bury(shard, sid, filters),
        }
    }
    if let Some(g) = &shard.cfg.ownership {
        g.gate.fenced();
    }
    Some(snapshot)
}

/// The session's subscriptions with their options, as stored with the take
/// (`stub_row.rs`): the plain ones its stub keeps routed, the `$share/` ones
/// whose group copies it forwards (`share_move.rs`).
fn stub_subs(s: &crate::session::Session) -> Vec<crate::store::SubscriptionRecord> {
    s.subs
        .iter()
        .map(|(f, e)| crate::store::SubscriptionRecord {
            filter: f.clone(),
            options: e.options,
            subscription_id: e.subscription_id,
        })
        .collect()
}

/// The session as the store would hold it: its row, subscriptions, outbound
/// messages in order (in flight with their packet ids and states, then
/// queued), inbound QoS 2 ids awaiting PUBREL.
fn snapshot_of(s: &crate::session::Session) -> Bytes {
    let mut w = SnapshotWriter::new(&s.record(), s.next_seq);
    for (filter, e) in &s.subs {
        w.subscription(&SubscriptionRecord {
            filter: filter.clone(),
            options: e.options,
            subscription_id: e.subscription_id,
        });
    }
    for o in &s.inflight {
        let m = o.msg.as_deref().map(|m| MessageRef {
            publish: &m.publish,
            qos: o.qos,
            retain: o.retain,
            subscription_ids: &o.sub_ids,
            received_at_ms: m.received_at_ms,
        });
        match (o.state, m) {
            (OutState::Published, Some(m)) => {
                w.outbound(o.seq, OutboundState::AwaitingAck(o.packet_id), Some(m))
            }
            (OutState::Released, m) => {
                w.outbound(o.seq, OutboundState::AwaitingPubComp(o.packet_id), m)
            }
            (OutState::Published, None) => {}
        }
    }
    for q in &s.queue {
        let m = MessageRef {
            publish: &q.msg.publish,
            qos: q.qos,
            retain: q.retain,
            subscription_ids: &q.sub_ids,
            received_at_ms: q.msg.received_at_ms,
        };
        w.outbound(q.seq, OutboundState::Queued, Some(m));
    }
    Bytes::from(w.finish(&s.inbound_qos2))
}

/// The link slot of the node that owns `client_id` now (as applied here), if not this one.
pub(crate) fn owner_slot(shard: &Shard, client_id: &str) -> Option<Slot> {
    let (node, _) = shard
        .cfg
        .ownership
        .as_ref()?
        .gate
        .owner(client_id.as_bytes())?;
    let n = shard.cluster.as_ref()?;
    // The live links (a node added at run time too), not the start-up peer list:
    // without a slot the fenced session gets no stub, and the new owner's merge
    // would hold its direct copies until its time bound.
    (node != n.node_id).then(|| n.slot_of(node)).flatten()
}

/// Keeps a fenced session's snapshot for the new owner's fetch, [`PARK_FOR`] at most.
pub(crate) fn park(shard: &Rc<Shard>, client_id: &str, epoch: u64, snapshot: Bytes) {
    let Some(node) = shard.cluster.as_ref() else {
        return;
    };
    let token = node.handover.next.get() + 1;
    node.handover.next.set(token);
    node.handover.parked.borrow_mut().insert(
        client_id.into(),
        Parked {
            epoch,
            snapshot,
            token,
        },
    );
    inc(&node.stats.handover.parked);
    let shard = shard.clone();
    let id: Box<str> = client_id.into();
    glommio::spawn_local(async move {
        glommio::timer::sleep(PARK_FOR).await;
        let Some(node) = shard.cluster.as_ref() else {
            return;
        };
        let mut parked = node.handover.parked.borrow_mut();
        if parked.get(&id).is_some_and(|p| p.token == token) {
            parked.remove(&id);
            inc(&node.stats.handover.expired);
        }
    })
    .detach();
}

/// On the old owner's home shard: the session for the node that won `epoch`.
fn serve(shard: &Rc<Shard>, slot: Slot, client: &str, epoch: u64) -> Option<Bytes> {
    let node = shard.cluster.as_ref()?;
    let id = ringmq_codec::MqttString::try_from(client).ok()?;
    let sid: Option<SessionId> = shard.by_client.borrow().get(&id, &shard.sessions.borrow());
    let live = sid.and_then(|sid| take(shard, sid, epoch, Some(slot)));
    let snapshot = live
        .or_else(|| {
            let mut parked = node.handover.parked.borrow_mut();
            match parked.get(client) {
                Some(p) if p.epoch <= epoch => parked.remove(client).map(|p| p.snapshot),
                _ => None,
            }
        })
        .or_else(|| super::moving::serve(shard, client, node.node_of(slot)?, epoch));
    match &snapshot {
        Some(b) => {
            inc(&node.stats.handover.shipped);
            node.stats
                .handover
                .shipped_bytes
                .fetch_add(b.len() as u64, Relaxed);
        }
        None => tracing::debug!(
            client,
            "session handover: asked for a session this node does not hold"
        ),
    }
    snapshot
}

/// Shard 0, a `SessionFetch` from peer `slot`: the client's home shard answers.
pub(crate) fn on_fetch(shard: &Rc<Shard>, slot: Slot, req: u64, epoch: u64, client: String) {
    let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
    let item = Item::Serve {
        slot,
        req,
        epoch,
        client,
    };
    if home == shard.id {
        on_item(shard, shard.id, item);
    } else {
        shard.mesh.push(home, MeshItem::Cluster(Box::new(item)));
    }
}

/// Shard 0, a `SessionShip`: to the shard whose CONNECT asked.
pub(crate) fn on_ship(shard: &Rc<Shard>, req: u64, snapshot: Option<Bytes>) {
    answer(shard, req, snapshot, (true, None));
}

/// Shard 0: the answer to fetch `req` goes to the shard that asked
/// (`reached`: the old node answered, rather than its link being down;
/// `silent`: not reached, how long its link has been silent, when known).
fn answer(shard: &Rc<Shard>, req: u64, snapshot: Option<Bytes>, ans: (bool, Option<Duration>)) {
    let (reached, silent) = ans;
    let item = Item::Shipped {
        req,
        snapshot,
        reached,
        silent,
    };
    let to = shard_of(req);
    if to == shard.id {
        on_item(shard, shard.id, item);
    } else if to < shard.shards {
        shard.mesh.push(to, MeshItem::Cluster(Box::new(item)));
    }
}

/// Test crash point `session-taken` (`RINGMQ_TEST_CRASH`): the take's
/// batch (rows deleted, session kept) commits, the snapshot never leaves,
/// and the test kills this node by PID: a crash of the old node between the
/// take and the new node's install (`moving.rs`).
fn hold_for_crash(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let committed = shard.store.flush().await.is_ok();
        eprintln!("RINGMQ_TEST_CRASH: session-taken: held (committed {committed})");
    })
    .detach();
}

/// The handover's mesh items (`Item::Fetch`, `Serve`, `Ship`, `Shipped`,
/// `RoutesQuery`, `RoutesSettled`).
pub(crate) fn on_item(shard: &Rc<Shard>, from: usize, item: Item) {
    let Some(node) = shard.cluster.as_ref() else {
        return;
    };
    match item {
        Item::Fetch {
            slot,
            req,
            epoch,
            client,
        } => {
            let sent = node
                .hub
                .as_ref()
                .is_some_and(|h| h.session_fetch(slot, req, epoch, client));
            if !sent {
                inc(&node.stats.handover.unreachable);
                let hub = node.hub.as_ref();
                let silent = hub.and_then(|h| h.link_of(slot)).map(|l| l.silent_for());
                answer(shard, req, None, (false, silent));
            }
        }
        Item::Serve {
            slot,
            req,
            epoch,
            client,
        } => {
            let snapshot = serve(shard, slot, &client, epoch);
            if snapshot.is_some() && super::origin::crash_armed("session-taken") {
                return hold_for_crash(shard);
            }
            let item = Item::Ship {
                slot,
                req,
                snapshot,
            };
            if shard.id == 0 {
                on_item(shard, 0, item);
            } else {
                shard.mesh.push(0, MeshItem::Cluster(Box::new(item)));
            }
        }
        Item::Ship {
            slot,
            req,
            snapshot,
        } => {
            if let Some(hub) = &node.hub {
                hub.session_ship(slot, req, snapshot);
            }
        }
        Item::Shipped {
            req,
            snapshot,
            reached,
            silent,
        } => {
            let waiter = node.handover.waiting.borrow_mut().remove(&req);
            match waiter {
                Some(tx) => {
                    if snapshot.is_none() && reached {
                        inc(&node.stats.handover.missing);
                    }
                    let _ = tx.send((snapshot, reached, silent));
                }
                None => {
                    if snapshot.is_some() {
                        inc(&node.stats.handover.late);
                        tracing::warn!(req, "session handover: a snapshot arrived after its CONNECT stopped waiting: dropped");
                    }
                }
            }
        }
        Item::RoutesQuery(token) => {
            let mesh = shard.mesh.clone();
            let reply = move || {
                mesh.push(
                    from,
                    MeshItem::Cluster(Box::new(Item::RoutesSettled(token))),
                )
            };
            super::after_routes(shard, Box::new(reply));
        }
        Item::RoutesSettled(token) => {
            if let Some(tx) = node.handover.settled.borrow_mut().remove(&token) {
                let _ = tx.send(());
            }
        }
        _ => {}
    }
}
