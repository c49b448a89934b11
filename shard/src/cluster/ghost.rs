//! Late copies of a moved session: a peer whose link was down (or that did
//! not answer its flush) while a session moved from this node (A) to B sends
//! the copies it routed with A's old route later (its outbox, `outbox.rs`,
//! or what it queued while stopped). They reach A after the stub ended
//! (`stub.rs`), where nothing matches them any more. The *ghost* of the
//! session catches them.
//!
//! ```text
//! node A (old owner, shard 0)                      node B (new owner, home shard)
//! stub start: the session's plain filters noted
//! a flush peer X down or silent ── Ghost{client, [X]} ──►  haunt: every copy from X
//!                                                            delivered to the session is
//!                                                            noted by origin; a second is dropped
//! stub ended; X's link up again: Flush ──► X
//! X's copies (outbox first), routed by A's old route:
//!   fresh here and matching ── SessionCopy ──────────────►  delivered (the merge is over)
//!   ◄── Flushed (behind all X sent)
//! ghost ends ── Ghost{client, []} ─────────────────────────►  haunt kept MERGE_FOR, then gone
//! ```
//!
//! **Why the end is right.** X's new connection starts with A's route sync
//! (the stub's filters withdrawn when it ended, which is before A sends the
//! ghost's flush), then X's outbox, then whatever X routes; `Flushed` comes
//! behind all of it. So every copy X routed with A's old route reached A
//! before `Flushed` and was forwarded. What X routes after applying A's sync
//! goes to B directly once X has B's routes: if X's link to B comes back
//! after its link to A, a copy X routes in between reaches neither (as for
//! any subscription X has not heard of yet; docs/cluster.md, "Limits").
//!
//! **Why nothing twice.** X may hold B's route and A's old one at once (its
//! link to B came back first): its copy then reaches B directly and through
//! the ghost. Origins are unique per publish, so B notes the origin of every
//! copy from X it delivers to the session from the moment it learns of the
//! ghost (before the stub's `StubEnd`, so held and forwarded copies too) and
//! drops a second one (counted `ghost_dups`). A copy A had before (a resend
//! of the outbox) is not fresh here (`cluster::fresh`) and not forwarded.
//!
//! **Bounded.** A ghost lives at most [`GHOST_FOR`] (the outbox keeps its
//! copies longer: past it they are lost for the session, counted at A as
//! `ghost_expired`); B's note of origins holds at most [`SEEN_MAX`] entries.

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
    /// A stub started (home shard to shard 0): its filters, should a ghost need them.
    Filters {
        client: Box<str>,
        slot: Slot,
        filters: Vec<TopicFilter>,
    },
    /// The old node's `Ghost` frame (shard 0 to the session's home shard).
    Haunt { client: Box<str>, peers: Vec<u64> },
}

/// A stub's filters kept on shard 0 until the stub ends.
struct Noted {
    slot: Slot,
    filters: Vec<TopicFilter>,
    at: Instant,
}

/// A peer whose late copies the ghost forwards.
struct Late {
    node: u64,
    slot: Slot,
    /// The flush sent: (token, connection generation).
    flush: Option<(u64, u64)>,
    done: bool,
}

/// Old node, shard 0: a moved session whose late copies are forwarded.
struct Ghost {
    client: Box<str>,
    to: Slot,
    filters: Vec<TopicFilter>,
    late: Vec<Late>,
    /// The stub ended (its route withdrawal is queued to every peer): flushes may start.
    stub_over: bool,
    deadline: Instant,
}

/// New node, home shard: the origins of copies from the ghost's peers delivered.
struct Haunt {
    peers: Vec<u64>,
    seen: HashSet<Origin>,
    id: u64,
}

/// One shard's ghosts (old node, shard 0) and haunted sessions (new node, home shard).
#[derive(Default)]
pub(crate) struct Ghosts {
    noted: RefCell<HashMap<Box<str>, Noted>>,
    ghosts: RefCell<Vec<Ghost>>,
    haunts: RefCell<HashMap<SessionId, Haunt>>,
    next: Cell<u64>,
}

impl Ghosts {
    /// Whether a session of this shard is haunted (deliveries note origins).
    pub fn haunted(&self) -> bool {
        !self.haunts.borrow().is_empty()
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

/// A stub started on this home shard: shard 0 notes its filters.
pub(crate) fn stub_started(shard: &Rc<Shard>, client: &str, slot: Slot, filters: &[TopicFilter]) {
    let m = Msg::Filters {
        client: client.into(),
        slot,
        filters: filters.to_vec(),
    };
    to_shard(shard, 0, m);
}

/// Shard 0: flush peers `slots` of `client`'s move did not answer (link down,
/// or silent past the timeout): their late copies are forwarded to the new owner.
pub(crate) fn missing(shard: &Rc<Shard>, hub: &Hub, client: &str, slots: &[Slot]) {
    let Some(n) = &shard.cluster else { return };
    if slots.is_empty() {
        return;
    }
    let Some(noted) = n.ghosts.noted.borrow().get(client).map(|x| (x.slot, x.filters.clone())) else {
        return;
    };
    let (to, filters) = noted;
    let mut ghosts = n.ghosts.ghosts.borrow_mut();
    let i = match ghosts.iter().position(|g| &*g.client == client) {
        Some(i) => i,
        None => {
            n.stats.handover.ghosts.fetch_add(1, Relaxed);
            ghosts.push(Ghost {
                client: client.into(),
                to,
                filters,
                late: Vec::new(),
                stub_over: false,
                deadline: Instant::now() + GHOST_FOR,
            });
            ghosts.len() - 1
        }
    };
    let g = &mut ghosts[i];
    for &slot in slots {
        let Some(l) = hub.link_of(slot) else { continue };
        if !g.late.iter().any(|x| x.slot == slot) {
            g.late.push(Late {
                node: l.peer.id,
                slot,
                flush: None,
                done: false,
            });
        }
    }
    let peers = g.late.iter().map(|x| x.node).collect();
    tracing::info!(client, ?peers, "session move: late copies of silent peers go to the new owner");
    // Before any copy the ghost forwards, and before the stub's StubEnd.
    send(hub, to, client, peers);
}

fn send(hub: &Hub, to: Slot, client: &str, peers: Vec<u64>) {
    if let Some(l) = hub.link_of(to).filter(|l| l.is_up()) {
        l.push_frame(&Frame::Ghost {
            client: client.into(),
            peers,
        });
    }
}

/// Shard 0: the stub of `client` ended (its filters left the router here).
pub(crate) fn stub_ended(shard: &Shard, client: &str) {
    let Some(n) = &shard.cluster else { return };
    n.ghosts.noted.borrow_mut().remove(client);
    for g in n.ghosts.ghosts.borrow_mut().iter_mut() {
        if &*g.client == client {
            g.stub_over = true;
        }
    }
}

/// Shard 0, a peer's copy routed here (`fresh`: not had before): forwarded
/// to the new owner of each ghost it belongs to.
pub(crate) fn offer(shard: &Shard, p: &Publish, origin: Option<Origin>, fresh: bool) {
    let Some(n) = &shard.cluster else { return };
    let ghosts = n.ghosts.ghosts.borrow();
    if ghosts.is_empty() || !fresh {
        return;
    }
    let (Some(o), Some(hub)) = (origin, n.hub.as_ref()) else {
        return;
    };
    for g in ghosts.iter() {
        let late = g.late.iter().any(|x| x.node == o.node && !x.done);
        if late
            && g
                .filters
                .iter()
                .any(|f| crate::topic::matches(f.as_str(), p.topic.as_str()))
        {
            let stats = &n.stats.handover;
            if hub.session_copy(g.to, &g.client, o, p) {
                stats.ghost_forwarded.fetch_add(1, Relaxed);
            } else {
                stats.forward_lost.fetch_add(1, Relaxed);
            }
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

/// Shard 0, every 100 ms: a late peer whose link is up (again) is flushed;
/// a ghost whose peers all answered, or past its time, ends.
pub(crate) fn sweep(shard: &Rc<Shard>, hub: &Hub, now: Instant) {
    let Some(n) = &shard.cluster else { return };
    let g = &n.ghosts;
    // Filters of stubs that never ended by a move (their stub expired meanwhile).
    g.noted
        .borrow_mut()
        .retain(|_, x| now.duration_since(x.at) < super::stub::STUB_FOR * 2);
    let mut ended = Vec::new();
    g.ghosts.borrow_mut().retain_mut(|gh| {
        if gh.deadline <= now {
            n.stats.handover.ghost_expired.fetch_add(1, Relaxed);
            tracing::warn!(client = &*gh.client, "session move: late peers did not flush within {GHOST_FOR:?}");
            ended.push((gh.to, gh.client.clone()));
            return false;
        }
        if gh.stub_over {
            for x in gh.late.iter_mut().filter(|x| !x.done) {
                match hub.link_of(x.slot).filter(|l| l.is_up()) {
                    Some(l) => {
                        let generation = l.generation.get();
                        if x.flush.is_none_or(|(_, at)| at != generation) {
                            let token = hub.next_move_token();
                            l.push_frame(&Frame::Flush(token));
                            x.flush = Some((token, generation));
                        }
                    }
                    None => x.flush = None,
                }
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
        send(hub, to, &client, Vec::new());
    }
}

/// Shard 0, the old node's `Ghost` frame: to the session's home shard.
pub(crate) fn on_frame(shard: &Rc<Shard>, client: String, peers: Vec<u64>) {
    let home = crate::connection::home_shard(client.as_bytes(), shard.shards);
    let m = Msg::Haunt {
        client: client.into(),
        peers,
    };
    to_shard(shard, home, m);
}

/// The mesh items of ghosts.
pub(crate) fn on_item(shard: &Rc<Shard>, m: Msg) {
    let Some(n) = &shard.cluster else { return };
    match m {
        Msg::Filters {
            client,
            slot,
            filters,
        } => {
            let at = Instant::now();
            n.ghosts
                .noted
                .borrow_mut()
                .insert(client, Noted { slot, filters, at });
        }
        Msg::Haunt { client, peers } => haunt(shard, &client, peers),
    }
}

/// New node, home shard: `client`'s session is haunted by `peers` (none: the ghost ended).
fn haunt(shard: &Rc<Shard>, client: &str, peers: Vec<u64>) {
    let Some(n) = &shard.cluster else { return };
    let Some(sid) = super::merge::sid_of(shard, client) else {
        return;
    };
    let mut haunts = n.ghosts.haunts.borrow_mut();
    let (id, keep) = match haunts.get_mut(&sid) {
        Some(h) if peers.is_empty() => {
            // The ghost ended: late direct copies may still follow theirs.
            (h.id, super::merge::MERGE_FOR)
        }
        Some(h) => {
            h.peers = peers;
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
                    seen: HashSet::new(),
                    id,
                },
            );
            (id, GHOST_FOR + super::merge::MERGE_FOR)
        }
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(keep).await;
        if let Some(n) = &shard.cluster {
            let mut haunts = n.ghosts.haunts.borrow_mut();
            if haunts.get(&sid).is_some_and(|h| h.id == id) {
                haunts.remove(&sid);
            }
        }
    })
    .detach();
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
    let Some(h) = haunts.get_mut(&sid) else {
        return false;
    };
    if !h.peers.contains(&o.node) {
        return false;
    }
    if h.seen.contains(&o) {
        n.stats.handover.ghost_dups.fetch_add(1, Relaxed);
        return true;
    }
    if h.seen.len() < SEEN_MAX {
        h.seen.insert(o);
    }
    false
}
