//! Late copies of a moved session: a peer X whose link was down (or that did
//! not answer its flush) while a session moved from this node (A) to B sends
//! the copies it routed with A's route later (its outbox, `outbox.rs`, or
//! what it queued while stopped). Without more they reach A after the stub
//! ended (`stub.rs`), where nothing matches them any more. So A keeps the
//! session's *ghost*: the stub's subscriptions stay routed here (a tombstone,
//! as during the stub) and forward what X sends, until X has B's routes.
//!
//! ```text
//! node A (old owner)                                    node B (new owner, home shard)
//! flush peer X down or silent (shard 0) ── Ghost{client, [X]} ──►  haunt: every copy from X
//!   home shard: at the stub's end its filters stay routed;           delivered to the session
//!   copies from X that match ── SessionCopy ─────────────────►       is noted by origin; a
//!                                                                    second is dropped
//! X's link up: GhostFlush{token, B} ──► X: answers once its link to B is up, B's route sync
//!                                          applied on every shard of X, behind all it sent A
//!   ◄── Flushed
//! ghost ends: the filters leave the router ── Ghost{client, []} ──►  haunt kept MERGE_FOR more
//! ```
//!
//! **Why nothing is lost.** Until `Flushed`, A's route stays (A advertises
//! the filters as before the move), so whatever X routes for the session
//! reaches A, and B too once X has B's routes. X answers behind its outbox
//! and everything it sent A, and only once it holds B's routes: from then on
//! X routes the session's copies to B itself (and to A until A's withdrawal
//! reaches it, where nothing forwards them any more).
//!
//! **Why nothing twice.** While A's route and B's both stand at X, X's copy
//! reaches B directly and through the ghost. Origins are unique per publish,
//! so B notes the origin of every copy from X it delivers to the session
//! from the moment it learns of the ghost (before the stub's `StubEnd`, so
//! held and forwarded copies are noted too) and drops a second one (counted
//! `ghost_dups`). A resend of a copy A had before is not fresh on A's shard
//! (`cluster::fresh`) and not forwarded again. Copies from other nodes
//! reaching the ghost are not forwarded (those nodes answered the flush: B's
//! routes bring their copies).
//!
//! **The end.** It waits for a barrier over this node's shards (the home
//! shard's forwards leave through shard 0 before it) and is owed until
//! written on a connection of the link to B, then again on each later one
//! for [`GHOST_FOR`] (a connection that breaks loses what it had not
//! written; B drops an end for a closed haunt or from another node).
//!
//! **Bounded.** A ghost lives at most [`GHOST_FOR`] (the outbox may keep its
//! copies longer: those are then lost for the session; counted
//! `ghost_expired`); B notes at most [`SEEN_MAX`] origins per session.

use super::frame::{Frame, Origin};
use super::hub::Hub;
use super::link::Link;
use super::routes::Slot;
use super::Item;
use crate::mesh::MeshItem;
use crate::session::Session;
use crate::session::SessionId;
use crate::shard::Shard;
use crate::store::{MessageRef, OutboundState, SessionKey};
use ringmq_codec::{Publish, QoS, TopicFilter};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The longest a ghost forwards late copies.
pub const GHOST_FOR: Duration = Duration::from_secs(600);
/// Origins a haunted session notes, at most.
pub const SEEN_MAX: usize = 1 << 20;

/// Mesh items of ghosts.
pub enum Msg {
    /// Shard 0 to the home shard of a stub: the nodes whose copies its ghost
    /// forwards to peer `slot`.
    Late {
        client: Box<str>,
        slot: Slot,
        nodes: Vec<u64>,
    },
    /// Shard 0 to the home shard: the ghost ended, its filters leave the router.
    Release { client: Box<str> },
    /// The old node's `Ghost` frame (shard 0 to the session's home shard).
    Haunt {
        client: Box<str>,
        from: u64,
        peers: Vec<u64>,
    },
}

/// A peer whose late copies the ghost forwards.
struct LatePeer {
    node: u64,
    slot: Slot,
    /// The flush sent: (token, connection generation).
    flush: Option<(u64, u64)>,
    done: bool,
}

/// Old node, shard 0: a moved session whose late peers are awaited.
struct Ghost {
    client: Box<str>,
    to: Slot,
    to_node: u64,
    late: Vec<LatePeer>,
    deadline: Instant,
}

/// Old node, home shard: the late nodes of a stub (it becomes a ghost at its end).
struct Kept {
    slot: Slot,
    nodes: Vec<u64>,
    /// The tombstone and its subscriptions, once the stub ended (routed until the ghost ends).
    tomb: Option<(SessionId, Vec<TopicFilter>)>,
}

/// Old node, shard 0: a ghost ended, its end (`Ghost{client, []}`) owed to
/// the new owner. A connection that breaks loses what it had not written,
/// so the end is written again on each new connection of the link until
/// [`GHOST_FOR`] passed (the new node drops an end it has had).
struct Ended {
    client: Box<str>,
    to: Slot,
    /// The connection generation it was last written on.
    sent_on: Option<u64>,
    /// Still in the sweep that ended the ghost (a write later is counted).
    fresh: bool,
    until: Instant,
}

/// A peer's `GhostFlush` waiting for this node's link to the new owner (shard 0).
struct Asked {
    slot: Slot,
    generation: u64,
    token: u64,
    owner: u64,
    at: Instant,
}

/// New node, home shard: the origins of copies from the ghost's peers delivered.
struct Haunt {
    peers: Vec<u64>,
    /// The old node whose ghost this is (only its end closes the haunt).
    from: u64,
    seen: HashSet<Origin>,
    id: u64,
    /// The old node's ghost still forwards (until its `Ghost{client, []}`).
    open: bool,
    /// Direct copies from the peers, in arrival order, held while `open`.
    held: Vec<Direct>,
    /// Per origin (node, shard): the first and last count held in a durable row.
    ranges: HashMap<(u64, u16), (u64, u64)>,
    /// Per origin (node, shard): the first count held. The direct path
    /// brings every copy of that origin from there on, in order: a
    /// forwarded copy at or past it is dropped (the held stream has it,
    /// or will), so the held copies are not overtaken.
    first: HashMap<(u64, u16), u64>,
}

impl Haunt {
    /// A copy of origin `o` reaches the haunted session: `None` when `o` is
    /// not a ghost peer's, `Some(true)` when a copy of it came before (a
    /// duplicate), `Some(false)` the first time (noted, up to `SEEN_MAX`).
    fn note(&mut self, o: Origin) -> Option<bool> {
        if !self.peers.contains(&o.node) {
            return None;
        }
        if self.seen.contains(&o) {
            return Some(true);
        }
        if self.seen.len() < SEEN_MAX {
            self.seen.insert(o);
        }
        Some(false)
    }
}

/// A late peer's direct copy held on the new node until the ghost ends
/// (order per topic: the ghost forwards that peer's earlier copies).
pub(crate) struct Direct {
    publish: Publish,
    qos: QoS,
    retain: bool,
    sub_ids: SmallVec<[u32; 2]>,
    /// The session's queued row holding it durably (QoS 1/2, persistent).
    row: Option<(SessionKey, u64)>,
}

impl Direct {
    pub(crate) fn new(
        p: &Publish,
        qos: QoS,
        retain: bool,
        sub_ids: &[u32],
        row: Option<(SessionKey, u64)>,
    ) -> Self {
        Direct {
            publish: p.clone(),
            qos,
            retain,
            sub_ids: SmallVec::from_slice(sub_ids),
            row,
        }
    }
}

/// One shard's ghosts: old node (shard 0: flushes; home shard: kept
/// subscriptions), new node (home shard: haunted sessions), any node
/// (shard 0: flushes asked by a ghost).
#[derive(Default)]
pub(crate) struct Ghosts {
    ghosts: RefCell<Vec<Ghost>>,
    ended: RefCell<Vec<Ended>>,
    kept: RefCell<HashMap<Box<str>, Kept>>,
    haunts: RefCell<HashMap<SessionId, Haunt>>,
    asked: RefCell<Vec<Asked>>,
    /// Per link slot: the connection generation its peer's route sync came on.
    synced: RefCell<HashMap<Slot, u64>>,
    next: Cell<u64>,
}

impl Ghosts {
    /// Whether deliveries on this shard look closer: a session is haunted
    /// (origins noted), or a ghost's subscriptions are routed here.
    pub fn any(&self) -> bool {
        !self.haunts.borrow().is_empty() || !self.kept.borrow().is_empty()
    }

    /// Whether a ghost's subscriptions (or a stub's that becomes one) are
    /// routed on this shard: a delivery may forward an acked copy.
    pub fn forwarding(&self) -> bool {
        !self.kept.borrow().is_empty()
    }
}

fn to_shard(shard: &Rc<Shard>, to: usize, m: Msg) {
    if to == shard.id {
        on_item(shard, m);
    } else {
        shard
            .mesh
            .push(to, MeshItem::Cluster(Box::new(Item::Ghost(m))));
    }
}

fn home(shard: &Shard, client: &str) -> usize {
    crate::connection::home_shard(client.as_bytes(), shard.shards)
}

/// Shard 0: flush peers `slots` of `client`'s move (to peer `to`) did not
/// answer (link down, or silent past the timeout): their copies keep the
/// session's subscriptions routed here and are forwarded. Called before the
/// stub's cut, so the home shard learns it before the stub ends.
pub(crate) fn missing(shard: &Rc<Shard>, hub: &Hub, client: &str, to: Slot, slots: &[Slot]) {
    let Some(n) = &shard.cluster else { return };
    let Some(owner) = hub.link_of(to).map(|l| l.peer.id) else {
        return;
    };
    let late: Vec<(u64, Slot)> = slots
        .iter()
        .filter_map(|s| hub.link_of(*s).map(|l| (l.peer.id, *s)))
        .collect();
    if late.is_empty() {
        return;
    }
    // A new ghost of the client: an end still owed for an older one would close it.
    n.ghosts.ended.borrow_mut().retain(|e| &*e.client != client);
    let nodes = {
        let mut ghosts = n.ghosts.ghosts.borrow_mut();
        let i = match ghosts.iter().position(|g| &*g.client == client) {
            Some(i) => i,
            None => {
                n.stats.handover.ghosts.fetch_add(1, Relaxed);
                ghosts.push(Ghost {
                    client: client.into(),
                    to,
                    to_node: owner,
                    late: Vec::new(),
                    deadline: Instant::now() + GHOST_FOR,
                });
                ghosts.len() - 1
            }
        };
        let g = &mut ghosts[i];
        for (node, slot) in late {
            if !g.late.iter().any(|x| x.slot == slot) {
                g.late.push(LatePeer {
                    node,
                    slot,
                    flush: None,
                    done: false,
                });
            }
        }
        g.late.iter().map(|x| x.node).collect::<Vec<u64>>()
    };
    tracing::info!(
        client,
        ?nodes,
        "session move: the old node forwards late copies of silent peers"
    );
    // Before any copy the ghost forwards, and before the stub's StubEnd.
    send(hub, to, client, nodes.clone());
    let m = Msg::Late {
        client: client.into(),
        slot: to,
        nodes,
    };
    to_shard(shard, home(shard, client), m);
}

fn send(hub: &Hub, to: Slot, client: &str, peers: Vec<u64>) {
    if let Some(l) = hub.link_of(to).filter(|l| l.is_up()) {
        l.push_frame(&Frame::Ghost {
            client: client.into(),
            peers,
        });
    }
}

/// Home shard, at the end of stub `sid`: true when its subscriptions stay
/// routed as a ghost (its late nodes are known), else the caller buries them.
pub(crate) fn keep(
    shard: &Shard,
    sid: SessionId,
    client: &str,
    filters: &mut Vec<TopicFilter>,
) -> bool {
    let Some(n) = &shard.cluster else {
        return false;
    };
    match n.ghosts.kept.borrow_mut().get_mut(client) {
        Some(k) if k.tomb.is_none() => {
            k.tomb = Some((sid, std::mem::take(filters)));
            true
        }
        _ => false,
    }
}

/// Home shard, a copy matched tombstone `sid` that is no stub: forwarded
/// when it is a ghost's and comes from one of its late nodes.
pub(crate) fn offer(shard: &Shard, sid: SessionId, p: &Publish, origin: Option<Origin>) {
    let (Some(n), Some(o)) = (&shard.cluster, origin) else {
        return;
    };
    let found = n.ghosts.kept.borrow().iter().find_map(|(c, k)| {
        let mine = k.tomb.as_ref().is_some_and(|t| t.0 == sid) && k.nodes.contains(&o.node);
        mine.then(|| (k.slot, c.clone()))
    });
    let Some((slot, client)) = found else { return };
    let stats = &n.stats.handover;
    stats.ghost_forwarded.fetch_add(1, Relaxed);
    if super::copy_acks::take(shard, slot, &client, o, p) {
        return; // acked: leaves at the end of this delivery (`copy_acks.rs`)
    }
    match &n.hub {
        Some(hub) => {
            if !hub.session_copy_plain(slot, &client, o, p) {
                stats.forward_lost.fetch_add(1, Relaxed);
            }
        }
        None => {
            let m = super::stub::Move::Copy {
                slot,
                client,
                origin: o,
                publish: p.clone(),
                ack: None,
            };
            shard
                .mesh
                .push(0, MeshItem::Cluster(Box::new(Item::Move(m))));
        }
    }
}

/// Shard 0: peer `link` answered flush `token`; true when a ghost's.
pub(crate) fn on_flushed(shard: &Shard, link: &Link, token: u64) -> bool {
    let Some(n) = &shard.cluster else {
        return false;
    };
    let mut hit = false;
    for g in n.ghosts.ghosts.borrow_mut().iter_mut() {
        for x in g.late.iter_mut().filter(|x| x.slot == link.slot) {
            if x.flush == Some((token, link.generation.get())) {
                x.done = true;
                hit = true;
            }
        }
    }
    hit
}

/// Shard 0: a peer's route sync came on `link` (this connection's first frame).
pub(crate) fn synced(shard: &Shard, link: &Link) {
    if let Some(n) = &shard.cluster {
        n.ghosts
            .synced
            .borrow_mut()
            .insert(link.slot, link.generation.get());
    }
}

/// Shard 0: a ghost on peer `link` asks for `Flushed(token)` once this node
/// holds the routes of `owner` (the moved session's new node).
pub(crate) fn on_flush(shard: &Rc<Shard>, hub: &Rc<Hub>, link: &Link, token: u64, owner: u64) {
    let Some(n) = &shard.cluster else { return };
    n.ghosts.asked.borrow_mut().push(Asked {
        slot: link.slot,
        generation: link.generation.get(),
        token,
        owner,
        at: Instant::now(),
    });
    answer(shard, hub);
}

/// Shard 0: the flushes asked whose new owner's routes are here now are
/// answered, behind every shard having applied them.
fn answer(shard: &Rc<Shard>, hub: &Rc<Hub>) {
    let Some(n) = &shard.cluster else { return };
    let g = &n.ghosts;
    let mut ready = Vec::new();
    g.asked.borrow_mut().retain(|a| {
        let asker = hub
            .link_of(a.slot)
            .filter(|l| l.is_up() && l.generation.get() == a.generation);
        if asker.is_none() || a.at.elapsed() > GHOST_FOR {
            return false; // asked again on the next connection
        }
        let has_routes = match hub.link_to(a.owner) {
            // This node is the owner, or does not know it: nothing to wait for.
            None => true,
            Some(l) => l.is_up() && g.synced.borrow().get(&l.slot) == Some(&l.generation.get()),
        };
        if has_routes {
            ready.push((a.slot, a.generation, a.token));
        }
        !has_routes
    });
    for (slot, generation, token) in ready {
        let h = hub.clone();
        hub.after_local_barrier(
            shard,
            Box::new(move || {
                if let Some(l) = h
                    .link_of(slot)
                    .filter(|l| l.is_up() && l.generation.get() == generation)
                {
                    l.push_frame(&Frame::Flushed(token));
                }
            }),
        );
    }
}

/// Shard 0, every 100 ms: a late peer whose link is up (again) is asked to
/// flush; a ghost whose peers all answered, or past its time, ends; asked
/// flushes are answered when they can be.
pub(crate) fn sweep(shard: &Rc<Shard>, hub: &Rc<Hub>, now: Instant) {
    let Some(n) = &shard.cluster else { return };
    if !n.ghosts.asked.borrow().is_empty() {
        answer(shard, hub);
    }
    let mut ended = Vec::new();
    n.ghosts.ghosts.borrow_mut().retain_mut(|gh| {
        if gh.deadline <= now {
            n.stats.handover.ghost_expired.fetch_add(1, Relaxed);
            tracing::warn!(
                client = &*gh.client,
                "session move: late peers did not flush within {GHOST_FOR:?}"
            );
            ended.push((gh.to, gh.client.clone()));
            return false;
        }
        for x in gh.late.iter_mut().filter(|x| !x.done) {
            match hub.link_of(x.slot) {
                // Removed from the cluster: nothing more comes from it.
                None => x.done = true,
                Some(l) if l.is_up() => {
                    let generation = l.generation.get();
                    if x.flush.is_none_or(|(_, at)| at != generation) {
                        let token = hub.next_move_token();
                        l.push_frame(&Frame::GhostFlush {
                            token,
                            owner: gh.to_node,
                        });
                        x.flush = Some((token, generation));
                    }
                }
                Some(_) => x.flush = None,
            }
        }
        if gh.late.iter().all(|x| x.done) {
            n.stats.handover.ghost_ended.fetch_add(1, Relaxed);
            ended.push((gh.to, gh.client.clone()));
            return false;
        }
        true
    });
    for (to, client) in ended {
        // The home shard forwards what the late peers sent before their
        // `Flushed` (routed to it from here) and releases the filters; the
        // end is owed once every shard handled what it had sent here before
        // (its forwards go to the link through shard 0): behind them.
        let home = home(shard, &client);
        to_shard(
            shard,
            home,
            Msg::Release {
                client: client.clone(),
            },
        );
        let (s, h) = (shard.clone(), hub.clone());
        hub.after_local_barrier(
            shard,
            Box::new(move || {
                if let Some(n) = &s.cluster {
                    n.ghosts.ended.borrow_mut().push(Ended {
                        client,
                        to,
                        sent_on: None,
                        fresh: true,
                        until: Instant::now() + GHOST_FOR,
                    });
                }
                send_ends(&s, &h, Instant::now());
            }),
        );
    }
    send_ends(shard, hub, now);
}

/// Shard 0: the ends owed are written on the new owner's link when it is up
/// and they were not written on this connection yet. Behind the acked copies
/// the ghost forwarded: a new connection writes its ledger's copies first
/// (`link.rs`, `serve`), and this runs after.
fn send_ends(shard: &Shard, hub: &Hub, now: Instant) {
    let Some(n) = &shard.cluster else { return };
    n.ghosts.ended.borrow_mut().retain_mut(|e| {
        if e.until <= now {
            return false;
        }
        let Some(l) = hub.link_of(e.to) else {
            return false; // removed from the cluster
        };
        let generation = l.generation.get();
        let fresh = std::mem::replace(&mut e.fresh, false);
        if l.is_up() && e.sent_on != Some(generation) {
            if !fresh {
                n.stats.handover.ghost_end_resent.fetch_add(1, Relaxed);
                tracing::info!(
                    client = &*e.client,
                    "session move: the ghost's end written on a later connection"
                );
            }
            l.push_frame(&Frame::Ghost {
                client: e.client.to_string(),
                peers: Vec::new(),
            });
            e.sent_on = Some(generation);
        }
        true
    });
}

/// Shard 0, the old node `from`'s `Ghost` frame: to the session's home shard.
pub(crate) fn on_frame(shard: &Rc<Shard>, from: u64, client: String, peers: Vec<u64>) {
    let to = home(shard, &client);
    let m = Msg::Haunt {
        client: client.into(),
        from,
        peers,
    };
    to_shard(shard, to, m);
}

/// The mesh items of ghosts.
pub(crate) fn on_item(shard: &Rc<Shard>, m: Msg) {
    let Some(n) = &shard.cluster else { return };
    match m {
        Msg::Late {
            client,
            slot,
            nodes,
        } => {
            let mut kept = n.ghosts.kept.borrow_mut();
            let k = kept.entry(client).or_insert(Kept {
                slot,
                nodes: Vec::new(),
                tomb: None,
            });
            k.nodes = nodes;
        }
        Msg::Release { client } => {
            let k = n.ghosts.kept.borrow_mut().remove(&client);
            if let Some((sid, filters)) = k.and_then(|k| k.tomb) {
                crate::reap::bury(shard, sid, filters);
            }
        }
        Msg::Haunt {
            client,
            from,
            peers,
        } => haunt(shard, &client, from, peers),
    }
}

/// New node, home shard: `client`'s session is haunted by `peers` through
/// old node `from`'s ghost (none: the ghost ended).
fn haunt(shard: &Rc<Shard>, client: &str, from: u64, peers: Vec<u64>) {
    let Some(n) = &shard.cluster else { return };
    let Some(sid) = super::merge::sid_of(shard, client) else {
        return;
    };
    let mut haunts = n.ghosts.haunts.borrow_mut();
    let (id, keep) = match haunts.get_mut(&sid) {
        // An end written again (a new connection), or another node's.
        Some(h) if peers.is_empty() && (!h.open || h.from != from) => return,
        Some(h) if peers.is_empty() => {
            // The ghost ended, behind every copy it forwarded: the direct
            // copies held meanwhile follow them. Late direct copies may
            // still follow theirs: noted MERGE_FOR more.
            h.open = false;
            let id = h.id;
            drop(haunts);
            release(shard, sid);
            (id, super::merge::MERGE_FOR)
        }
        Some(h) => {
            h.peers = peers;
            h.from = from;
            return;
        }
        None if peers.is_empty() => return,
        None => {
            let id = n.ghosts.next.get() + 1;
            n.ghosts.next.set(id);
            haunts.insert(
                sid,
                Haunt {
                    peers,
                    from,
                    seen: HashSet::new(),
                    id,
                    open: true,
                    held: Vec::new(),
                    ranges: HashMap::new(),
                    first: HashMap::new(),
                },
            );
            (id, GHOST_FOR + super::merge::MERGE_FOR)
        }
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(keep).await;
        if let Some(n) = &shard.cluster {
            let live = n
                .ghosts
                .haunts
                .borrow()
                .get(&sid)
                .is_some_and(|h| h.id == id);
            if live {
                // No end came (the old node down): what is held goes now.
                release(&shard, sid);
                n.ghosts.haunts.borrow_mut().remove(&sid);
            }
        }
    })
    .detach();
}

/// New node, in delivery (the merge ended or never ran): a direct copy
/// `d` for haunted session `sid`. True when taken: a second copy of an
/// origin (dropped), or a late peer's copy while the ghost still forwards
/// (held, as a queued row of the session when QoS 1/2 and persistent).
pub(crate) fn hold(
    shard: &Shard,
    s: &mut Session,
    sid: SessionId,
    mut d: Direct,
    origin: Option<Origin>,
) -> bool {
    let (Some(n), Some(o)) = (&shard.cluster, origin) else {
        return false;
    };
    let mut haunts = n.ghosts.haunts.borrow_mut();
    let Some(h) = haunts.get_mut(&sid) else {
        return false;
    };
    match h.note(o) {
        Some(true) => {
            n.stats.handover.ghost_dups.fetch_add(1, Relaxed);
            return true;
        }
        None => return false,
        Some(false) if !h.open => return false,
        Some(false) => {}
    }
    if let Some(key) = s
        .key
        .filter(|_| d.qos != QoS::AtMostOnce && shard.store.is_persistent())
    {
        let seq = s.next_seq;
        s.next_seq += 1;
        let msg = MessageRef {
            publish: &d.publish,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: &d.sub_ids,
            received_at_ms: crate::store::unix_ms(),
        };
        shard
            .store
            .put_outbound_new(key, seq, OutboundState::Queued, msg)
            .detach();
        let r = h.ranges.entry((o.node, o.shard)).or_insert((o.seq, o.seq));
        r.1 = o.seq;
        super::copy_acks::held_durably(shard, s.client_id.as_str(), o, *r);
        d.row = Some((key, seq));
    }
    h.first.entry((o.node, o.shard)).or_insert(o.seq);
    h.held.push(d);
    n.stats.handover.ghost_held.fetch_add(1, Relaxed);
    true
}

/// New node, at the end of the merge: a held direct copy of a late peer
/// (not covered by the old node's marks) waits for the ghost's end too,
/// with its row (true), while the ghost still forwards.
pub(crate) fn keep_held(shard: &Shard, sid: SessionId, d: Direct, origin: Option<Origin>) -> bool {
    let (Some(n), Some(o)) = (&shard.cluster, origin) else {
        return false;
    };
    let mut haunts = n.ghosts.haunts.borrow_mut();
    let Some(h) = haunts
        .get_mut(&sid)
        .filter(|h| h.open && h.peers.contains(&o.node))
    else {
        return false;
    };
    if h.seen.contains(&o) {
        // Forwarded already (delivered): the held row goes.
        if let Some((key, seq)) = d.row {
            shard.store.delete_outbound(key, seq).detach();
        }
        n.stats.handover.ghost_dups.fetch_add(1, Relaxed);
        return true;
    }
    if h.seen.len() < SEEN_MAX {
        h.seen.insert(o);
    }
    h.first.entry((o.node, o.shard)).or_insert(o.seq);
    h.held.push(d);
    n.stats.handover.ghost_held.fetch_add(1, Relaxed);
    true
}

/// New node, a copy the old node forwarded for haunted session `sid`:
/// true (dropped, counted) when the ghost still forwards and direct copies
/// of its origin are held from a count at or below its own: the direct
/// stream carries it too, behind those held, and delivering it now would
/// overtake them.
pub(crate) fn overtakes(shard: &Shard, sid: SessionId, origin: Option<Origin>) -> bool {
    let (Some(n), Some(o)) = (&shard.cluster, origin) else {
        return false;
    };
    let haunts = n.ghosts.haunts.borrow();
    let Some(h) = haunts.get(&sid).filter(|h| h.open) else {
        return false;
    };
    let covered = h
        .first
        .get(&(o.node, o.shard))
        .is_some_and(|&first| first <= o.seq);
    if covered {
        n.stats.handover.ghost_dups.fetch_add(1, Relaxed);
    }
    covered
}

/// New node: the ghost of `sid` ended (or its session moves on, or the
/// bound passed): its held direct copies are delivered, in arrival order,
/// each row deleted in the batch of its delivery's row.
pub(crate) fn release(shard: &Shard, sid: SessionId) {
    let Some(n) = &shard.cluster else { return };
    let held = match n.ghosts.haunts.borrow_mut().get_mut(&sid) {
        Some(h) => {
            h.open = false;
            std::mem::take(&mut h.held)
        }
        None => return,
    };
    if held.is_empty() {
        return;
    }
    let alive = shard
        .sessions
        .borrow()
        .get(sid as usize)
        .is_some_and(|s| !s.is_gone());
    if let Some(s) = shard.sessions.borrow().get(sid as usize).filter(|_| alive) {
        // Not deferred (`defer.rs`): the held rows go in the same batch.
        s.store_at_once(shard);
    }
    for d in held {
        if alive {
            super::merge::deliver_as(shard, sid, &d.publish, (d.qos, d.retain, &d.sub_ids));
        }
        if let Some((key, seq)) = d.row {
            shard.store.delete_outbound(key, seq).detach();
        }
    }
}

/// New node: whether session `sid` is haunted (a late copy is delivered).
pub(crate) fn haunted(shard: &Shard, sid: SessionId) -> bool {
    shard
        .cluster
        .as_ref()
        .is_some_and(|n| n.ghosts.haunts.borrow().contains_key(&sid))
}

/// New node, a copy about to be delivered to session `sid`: true when its
/// origin is a ghost peer's and a copy of it was delivered before (dropped,
/// counted); else noted.
pub(crate) fn dup(shard: &Shard, sid: SessionId, origin: Option<Origin>) -> bool {
    let (Some(n), Some(o)) = (&shard.cluster, origin) else {
        return false;
    };
    let mut haunts = n.ghosts.haunts.borrow_mut();
    let dup = haunts.get_mut(&sid).and_then(|h| h.note(o)) == Some(true);
    if dup {
        n.stats.handover.ghost_dups.fetch_add(1, Relaxed);
    }
    dup
}
