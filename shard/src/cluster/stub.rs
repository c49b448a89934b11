//! The old node's side of a session move: the session is shipped, but its
//! plain subscriptions stay routed here as a *stub* that forwards every copy
//! they match to the new node (`Frame::SessionCopy`, with the copy's origin),
//! until nothing routed the old way can still arrive.
//!
//! ```text
//! node A (old owner)                       node B (new owner)          node X (any other)
//! take: snapshot, stub on the home shard
//!   copies matching it ── SessionCopy ──►  merged (merge.rs)
//!                        ◄── MoveDone ───  installed, every peer applied its routes
//! Flush ──────────────────────────────────────────────────────────────►  (behind all X sent A)
//!   ◄──────────────────────────────────────────────────────── Flushed
//! every shard of A: cut token to the home shard (behind its own copies)
//! home shard: stub ends ── StubEnd{marks} ─►  held direct copies delivered
//! ```
//!
//! Why that is the end: B sends `MoveDone` once every peer acknowledged the
//! routes of the installed session (each peer's shards applied them) and
//! every shard of B applied its subscriptions. A copy a peer X routed without
//! B's route was queued on X's link to A before X acknowledged, so before X's
//! `Flushed`; a copy routed after reaches B directly, after the install. The
//! cut tokens do the same for A's own shards. `marks` are, per origin, the
//! last count the home shard delivered (to the session before the move, to
//! the stub after): a direct copy at or below its origin's mark reached the
//! session through A already; one above did not (`merge.rs`).
//!
//! Bounded: a stub whose `MoveDone` never comes (B down, or the client did
//! not resume the session) ends after [`STUB_FOR`]; a flush a peer does not
//! answer ends after the route-ack timeout. Both are counted.

use super::frame::{Frame, Origin};
use super::hub::Hub;
use super::link::Link;
use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::session::SessionId;
use crate::shard::Shard;
use ringmq_codec::{Publish, TopicFilter};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The longest a stub forwards without its end.
pub const STUB_FOR: Duration = Duration::from_secs(20);

/// Mesh items of a move (old node: `Copy`, `Cut`, `CutAck`, `Ended`;
/// new node: `CopyIn`, `Done`, `EndIn`, handled by `merge.rs`).
pub enum Move {
    /// A stub's copy for peer `slot` (home shard to shard 0); with `ack`
    /// (shard, confirm token) an acked copy (`copy_acks.rs`).
    Copy {
        slot: Slot,
        client: Box<str>,
        origin: Origin,
        publish: Publish,
        ack: Option<(usize, u64)>,
    },
    /// A stub's acked copy of a prepared QoS 2 message (`confirm.rs`): a
    /// target of the prepared row, sent after its commit with the message's
    /// key `(shard, token)` on this node (`ack`), so that recovery can send
    /// it again and the new node deliver it once (`origin.rs`).
    KeyedCopy {
        slot: Slot,
        client: Box<str>,
        origin: Origin,
        publish: Publish,
        ack: (usize, u64),
    },
    /// Shard 0 to every shard: send `CutAck` to the stub's home shard.
    Cut {
        client: Box<str>,
        token: u64,
    },
    CutAck {
        client: Box<str>,
        token: u64,
    },
    /// The stub ended (home shard to shard 0): `StubEnd` to peer `slot`.
    Ended {
        slot: Slot,
        client: Box<str>,
        marks: Vec<Origin>,
    },
    /// A forwarded copy for a session here (shard 0 to its home shard);
    /// with `ack`, answered once durable (`copy_acks.rs`).
    CopyIn {
        client: Box<str>,
        origin: Origin,
        publish: Publish,
        ack: Option<super::copy_acks::CopyAck>,
    },
    /// The session moved here settled (home shard to shard 0): `MoveDone` to `slot`.
    Done {
        slot: Slot,
        client: Box<str>,
    },
    /// The old node's stub ended (shard 0 to the session's home shard).
    EndIn {
        client: Box<str>,
        marks: Vec<Origin>,
    },
}

struct Stub {
    client: Box<str>,
    slot: Slot,
    filters: Vec<TopicFilter>,
    id: u64,
}

/// A `MoveDone` waiting for the other peers' `Flushed` (shard 0).
struct Flushing {
    client: Box<str>,
    /// The new owner's link.
    to: Slot,
    left: Vec<Slot>,
    deadline: Instant,
}

/// One shard's stubs (home shard) and flushes (shard 0).
#[derive(Default)]
pub(crate) struct Stubs {
    by_sid: RefCell<HashMap<SessionId, Stub>>,
    next: Cell<u64>,
    /// Cut tokens received per (client, token).
    cuts: RefCell<HashMap<(Box<str>, u64), usize>>,
    flushing: RefCell<HashMap<u64, Flushing>>,
}

impl Stubs {
    pub fn any(&self) -> bool {
        !self.by_sid.borrow().is_empty()
    }
}

fn push(shard: &Rc<Shard>, to: usize, m: Move) {
    if to == shard.id {
        on_item(shard, to, m);
    } else {
        shard
            .mesh
            .push(to, MeshItem::Cluster(Box::new(Item::Move(m))));
    }
}

/// At a cross-node take (home shard): session `sid` (a tombstone now) keeps
/// `filters` routed and forwards what they match to peer `slot`. `subs`
/// (the filters with their options) are stored with the take, in the batch
/// deleting the session's rows (`stub_row.rs`): a crash of this node in the
/// stub's window restores it (`recover`).
pub(crate) fn start(
    shard: &Rc<Shard>,
    sid: SessionId,
    client: &str,
    slot: Slot,
    filters: Vec<TopicFilter>,
    subs: Vec<crate::store::SubscriptionRecord>,
) {
    if let Some(node) = shard.cluster.as_ref() {
        let peer = node.node_of(slot);
        if let (true, Some(peer)) = (shard.store.is_persistent(), peer) {
            let row = super::stub_row::StubRow {
                node: peer,
                end_ms: crate::store::unix_ms() + STUB_FOR.as_millis() as u64,
                subs,
            };
            let v = super::stub_row::encode(&row);
            shard.store.put_stub(client.as_bytes(), &v).detach();
        }
    }
    run(shard, sid, client, slot, filters, STUB_FOR);
}

/// At start (each shard, after its sessions): the stubs stored by a take
/// whose window had not ended at the crash forward again for the rest of it;
/// their subscriptions are routed to a tombstone as at the take.
pub(crate) fn recover(shard: &Rc<Shard>) {
    let rows = shard.store.take_stubs();
    let Some(node) = shard.cluster.as_ref() else {
        for (client, _) in rows {
            shard.store.delete_stub(&client).detach();
        }
        return;
    };
    let now = crate::store::unix_ms();
    for (client, v) in rows {
        let row = super::stub_row::decode(&v);
        let id = std::str::from_utf8(&client)
            .ok()
            .and_then(|c| ringmq_codec::MqttString::try_from(c).ok());
        let slot = row.as_ref().and_then(|r| node.slot_of(r.node));
        let (Some(row), Some(id), Some(slot)) = (row, id, slot) else {
            tracing::warn!(
                shard = shard.id,
                "session move: a stored stub is unreadable or for a node no longer a peer: dropped"
            );
            shard.store.delete_stub(&client).detach();
            continue;
        };
        if row.end_ms <= now {
            shard.store.delete_stub(&client).detach();
            continue;
        }
        let mut s = crate::session::Session::new(id.clone(), ringmq_codec::ProtocolVersion::V5);
        s.key = None;
        s.epoch = 0;
        s.generation = crate::reap::GONE;
        let sid = {
            let mut sessions = shard.sessions.borrow_mut();
            let sid = sessions.insert(s);
            sessions[sid].sid = sid as SessionId;
            sid as SessionId
        };
        // The `$share/` filters: the groups whose copies a peer may still pick this node for
        // (`share_move.rs`), covered again for the rest of the window; never routed here.
        let (groups, plain): (Vec<_>, Vec<_>) = row
            .subs
            .into_iter()
            .partition(|s| s.filter.shared().is_some());
        let groups: Vec<TopicFilter> = groups.into_iter().map(|s| s.filter).collect();
        super::share_move::start(shard, id.as_str(), slot, groups);
        let mut filters = Vec::with_capacity(plain.len());
        for sub in plain {
            let first = shard.router.borrow_mut().subscribe_local(
                &sub.filter,
                crate::router::LocalSub {
                    session: sid,
                    options: sub.options,
                    subscription_id: sub.subscription_id,
                    acl_check: false,
                },
            );
            if first {
                let f = sub.filter.clone();
                shard.mesh.broadcast(|| MeshItem::SubAdd(f.clone()));
                super::filter_changed(shard, &f, true);
            }
            filters.push(sub.filter);
        }
        node.stats.handover.stubs_restored.fetch_add(1, Relaxed);
        let left = Duration::from_millis(row.end_ms - now);
        tracing::info!(
            shard = shard.id,
            client = id.as_str(),
            to = row.node,
            left_ms = left.as_millis() as u64,
            "session move: stub restored after a restart"
        );
        run(shard, sid, id.as_str(), slot, filters, left);
    }
}

fn run(
    shard: &Rc<Shard>,
    sid: SessionId,
    client: &str,
    slot: Slot,
    filters: Vec<TopicFilter>,
    window: Duration,
) {
    let Some(node) = shard.cluster.as_ref() else {
        return crate::reap::bury(shard, sid, filters);
    };
    let id = node.stubs.next.get() + 1;
    node.stubs.next.set(id);
    let old = node.stubs.by_sid.borrow_mut().insert(
        sid,
        Stub {
            client: client.into(),
            slot,
            filters,
            id,
        },
    );
    debug_assert!(old.is_none(), "a tombstone's slot is not reused");
    node.stats.handover.stubs.fetch_add(1, Relaxed);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(window).await;
        let live = shard.cluster.as_ref().is_some_and(|n| {
            n.stubs
                .by_sid
                .borrow()
                .get(&sid)
                .is_some_and(|s| s.id == id)
        });
        if live {
            if let Some(n) = &shard.cluster {
                n.stats.handover.stub_expired.fetch_add(1, Relaxed);
            }
            tracing::warn!(
                sid,
                "session move: no end within {STUB_FOR:?}: stub removed"
            );
            end(&shard, sid);
        }
    })
    .detach();
}

/// A copy matched tombstone `sid`: forwarded if it is a stub.
pub(crate) fn offer(shard: &Shard, sid: SessionId, p: &Publish, origin: Option<Origin>) {
    let Some(node) = shard.cluster.as_ref() else {
        return;
    };
    let (slot, client) = match node.stubs.by_sid.borrow().get(&sid) {
        Some(s) => (s.slot, s.client.clone()),
        // Its stub ended: maybe a ghost, forwarding a late peer's copies.
        None => return super::ghost::offer(shard, sid, p, origin),
    };
    // No origin (a publish recovered at start): never a duplicate of a direct copy.
    let origin = origin.unwrap_or(Origin {
        node: 0,
        shard: 0,
        seq: 0,
    });
    node.stats.handover.forwarded.fetch_add(1, Relaxed);
    super::copy_acks::crash_copy_out();
    if super::copy_acks::take(shard, slot, &client, origin, p) {
        return; // acked: leaves at the end of this delivery
    }
    match &node.hub {
        Some(hub) => {
            if !hub.session_copy_plain(slot, &client, origin, p) {
                node.stats.handover.forward_lost.fetch_add(1, Relaxed);
            }
        }
        None => shard.mesh.push(
            0,
            MeshItem::Cluster(Box::new(Item::Move(Move::Copy {
                slot,
                client,
                origin,
                publish: p.clone(),
                ack: None,
            }))),
        ),
    }
}

/// Shard 0: peer `link` installed `client` and its routes settled. Every
/// other connected peer is asked to flush its link to this node.
pub(crate) fn on_move_done(shard: &Rc<Shard>, hub: &Rc<Hub>, link: &Link, client: String) {
    // The new node holds the session durably: what the take kept goes.
    super::moving::move_done(shard, &client);
    let token = hub.next_move_token();
    let others: Vec<Rc<Link>> = hub
        .live()
        .into_iter()
        .filter(|l| l.slot != link.slot)
        .collect();
    let down: Vec<Slot> = others
        .iter()
        .filter(|l| !l.is_up())
        .map(|l| l.slot)
        .collect();
    // Their copies routed here come later: the session's ghost forwards them.
    super::ghost::missing(shard, hub, &client, link.slot, &down);
    let left: Vec<Slot> = others
        .iter()
        .filter(|l| l.is_up())
        .map(|l| {
            l.push_frame(&Frame::Flush(token));
            l.slot
        })
        .collect();
    let client: Box<str> = client.into();
    if left.is_empty() {
        return cut(shard, client);
    }
    let deadline = Instant::now() + hub.cfg.route_ack_timeout;
    if let Some(n) = &shard.cluster {
        n.stubs.flushing.borrow_mut().insert(
            token,
            Flushing {
                client,
                to: link.slot,
                left,
                deadline,
            },
        );
    }
}

/// Shard 0: peer `link` answered flush `token`.
pub(crate) fn on_flushed(shard: &Rc<Shard>, _hub: &Rc<Hub>, link: &Link, token: u64) {
    let Some(n) = &shard.cluster else { return };
    let done = {
        let mut f = n.stubs.flushing.borrow_mut();
        let Some(e) = f.get_mut(&token) else { return };
        e.left.retain(|s| *s != link.slot);
        if !e.left.is_empty() {
            return;
        }
        f.remove(&token)
    };
    if let Some(e) = done {
        cut(shard, e.client);
    }
}

/// Shard 0, every 100 ms: flushes past their deadline end anyway (counted);
/// a peer whose link went down is not waited for.
pub(crate) fn sweep(shard: &Rc<Shard>, hub: &Rc<Hub>, now: Instant) {
    let Some(n) = &shard.cluster else { return };
    let mut silent: Vec<(Box<str>, Slot, Vec<Slot>)> = Vec::new();
    let due: Vec<(u64, bool)> = {
        let mut f = n.stubs.flushing.borrow_mut();
        for e in f.values_mut() {
            let (up, down): (Vec<Slot>, Vec<Slot>) = e
                .left
                .iter()
                .partition(|s| hub.link_of(**s).is_some_and(|l| l.is_up()));
            if !down.is_empty() {
                silent.push((e.client.clone(), e.to, down));
            }
            e.left = up;
        }
        f.iter()
            .filter(|(_, e)| e.left.is_empty() || e.deadline <= now)
            .map(|(t, e)| (*t, !e.left.is_empty()))
            .collect()
    };
    // Peers that will not answer: their late copies go through the ghost.
    for (client, to, slots) in silent {
        super::ghost::missing(shard, hub, &client, to, &slots);
    }
    for (t, late) in due {
        if late {
            n.stats.handover.flush_timeouts.fetch_add(1, Relaxed);
        }
        let e = n.stubs.flushing.borrow_mut().remove(&t);
        if let Some(e) = e {
            super::ghost::missing(shard, hub, &e.client, e.to, &e.left);
            cut(shard, e.client);
        }
    }
}

/// Shard 0: every shard sends a cut token to the stub's home shard, behind
/// the copies it routed there before.
fn cut(shard: &Rc<Shard>, client: Box<str>) {
    let token = shard
        .cluster
        .as_ref()
        .and_then(|n| n.hub.as_ref())
        .map_or(0, |h| h.next_move_token());
    for to in (0..shard.shards).filter(|&s| s != shard.id) {
        let m = Move::Cut {
            client: client.clone(),
            token,
        };
        shard
            .mesh
            .push(to, MeshItem::Cluster(Box::new(Item::Move(m))));
    }
    on_item(shard, shard.id, Move::Cut { client, token });
}

/// The home shard: once every shard's cut token arrived, the stub ends.
fn cut_ack(shard: &Rc<Shard>, client: Box<str>, token: u64) {
    let Some(n) = &shard.cluster else { return };
    let all = {
        let mut cuts = n.stubs.cuts.borrow_mut();
        let k = (client.clone(), token);
        let c = cuts.entry(k.clone()).or_insert(0);
        *c += 1;
        if *c < shard.shards {
            return;
        }
        cuts.remove(&k);
        true
    };
    let sid = n
        .stubs
        .by_sid
        .borrow()
        .iter()
        .find(|(_, s)| s.client == client)
        .map(|(sid, _)| *sid);
    if let (true, Some(sid)) = (all, sid) {
        end(shard, sid);
    }
}

/// Ends stub `sid`: its subscriptions leave the router, and the new node
/// learns the marks (through shard 0, behind every copy forwarded).
fn end(shard: &Rc<Shard>, sid: SessionId) {
    let Some(n) = &shard.cluster else { return };
    let Some(stub) = n.stubs.by_sid.borrow_mut().remove(&sid) else {
        return;
    };
    // Nothing routed the old way can come any more (or its window is over).
    shard.store.delete_stub(stub.client.as_bytes()).detach();
    let mut filters = stub.filters;
    // A flush peer did not answer: the subscriptions stay routed (`ghost.rs`).
    if !super::ghost::keep(shard, sid, &stub.client, &mut filters) {
        crate::reap::bury(shard, sid, filters);
    }
    n.stats.handover.stub_ended.fetch_add(1, Relaxed);
    let marks = super::handled_marks(shard);
    push(
        shard,
        0,
        Move::Ended {
            slot: stub.slot,
            client: stub.client,
            marks,
        },
    );
}

/// The move's mesh items.
pub(crate) fn on_item(shard: &Rc<Shard>, _from: usize, m: Move) {
    let Some(n) = &shard.cluster else { return };
    match m {
        Move::Copy {
            slot,
            client,
            origin,
            publish,
            ack,
        } => {
            if let Some(hub) = &n.hub {
                if !hub.session_copy(shard, slot, &client, origin, &publish, ack, false) {
                    n.stats.handover.forward_lost.fetch_add(1, Relaxed);
                }
            }
        }
        Move::KeyedCopy {
            slot,
            client,
            origin,
            publish,
            ack,
        } => {
            if let Some(hub) = &n.hub {
                if !hub.session_copy(shard, slot, &client, origin, &publish, Some(ack), true) {
                    n.stats.handover.forward_lost.fetch_add(1, Relaxed);
                }
            }
        }
        Move::Cut { client, token } => {
            let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
            let ack = Move::CutAck { client, token };
            if home == shard.id {
                push(shard, home, ack);
            } else {
                // Behind the copies this shard holds for a prepare commit
                // (`confirm.rs`): they were routed before the cut.
                let item = MeshItem::Cluster(Box::new(Item::Move(ack)));
                crate::confirm::behind_held(shard, home, item);
            }
        }
        Move::CutAck { client, token } => cut_ack(shard, client, token),
        Move::Ended {
            slot,
            client,
            marks,
        } => {
            super::share_move::end(shard, &client);
            if let Some(l) = n.hub.as_ref().and_then(|h| h.link_of(slot)) {
                if l.is_up() {
                    l.push_frame(&Frame::StubEnd {
                        client: client.into(),
                        marks,
                    });
                }
            }
        }
        m => super::merge::on_item(shard, m),
    }
}
