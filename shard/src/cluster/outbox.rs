//! The durable outbox (hinted handoff): QoS 1/2 across nodes keeps flowing
//! while a target node is down.
//!
//! Under durability `sync` an acked copy (`acks.rs`) waits for the target
//! node's `Durable` answer. When that node cannot answer (its link is down,
//! or it did not answer within `--cluster-ack-timeout`), the copy is stored
//! instead in this node's own store, in shard 0's LMDB environment (table
//! `H`: peer, copy id -> the link frame, `store/outbox.rs`), and its
//! publishers are acknowledged once that row is durable (group-committed with
//! shard 0's other rows; the shard never waits for it). The promise becomes:
//! every acknowledged message is durable on its target node **or** in the
//! outbox of a live node.
//!
//! Shard 0 because it runs the links and their ledgers: the node that
//! learns the answer is the one that deletes the row, with no mesh round
//! trip, and one environment keeps a peer's rows in one order.
//!
//! - **Same copy, same stamp.** A stored copy stays in the link's ledger
//!   (marked `stored`, no deadline): it keeps its `(stream, id)` and is
//!   written again, in id order, on every new connection right after the
//!   route sync and before anything newer (`LinkAcks::connected`). The
//!   receiver's dedup (last `(stream, id)` per sending node) delivers it once,
//!   whether or not an earlier attempt reached it.
//! - **Across a restart of this node.** The stream is kept in the data dir
//!   and copy ids are `run << 40 | n` with the run made durable at recovery
//!   (`store/outbox.rs`), so the rows read back at start (into the ledger,
//!   before any new copy) have lower ids than any copy of the new run: the
//!   receiver skips those it had and delivers the rest once.
//! - **Deleted** when the peer answers `Durable` (counted `outbox_sent`).
//! - **Bounded** per peer by `--cluster-outbox-max-bytes`: a copy that does
//!   not fit is refused as before the outbox existed (v5 0x97 Quota exceeded,
//!   3.1.1 the connection closes), counted `outbox_refused`. 0 turns it off.
//! - **Dropped** (counted `outbox_dropped`) when the peer is removed from the
//!   cluster, or answers `NotStored` (its store is full).
//! - **The peers' routes** are kept too (table `P`, written as peers tell
//!   them, read back at start): a node restarted while a peer is down still
//!   knows what that peer subscribes to, so copies for it go to the outbox
//!   instead of nowhere. The peer's route sync replaces them when it returns.

use super::acks::{answer, Sent};
use super::hub::Hub;
use super::link::Link;
use crate::shard::Shard;
use crate::store::OutboxRow;
use ringmq_codec::ReasonCode;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Shard 0's outbox state across links.
pub(crate) struct Outbox {
    max_bytes: usize,
    /// Publishers waiting for the commit holding their copy's row.
    waiting: RefCell<Vec<super::acks::Waiter>>,
    paying: Cell<bool>,
    /// Rows read at start for nodes without a link yet (added by the membership later).
    orphans: RefCell<HashMap<u64, Vec<OutboxRow>>>,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            max_bytes,
            waiting: RefCell::default(),
            paying: Cell::new(false),
            orphans: RefCell::default(),
        }
    }

    /// Whether copies for a node that cannot answer are stored (else refused).
    pub fn on(&self) -> bool {
        self.max_bytes > 0
    }
}

/// Stores the ledger copy `s` for `link`'s peer; its waiters are answered
/// once the row is durable. False when the peer's outbox is full (counted).
pub(super) fn store(shard: &Rc<Shard>, hub: &Hub, link: &Link, s: &mut Sent) -> bool {
    let la = &link.acks;
    if la.stored_bytes.get() + s.frame.len() > hub.outbox.max_bytes {
        link.stats.outbox_refused.inc();
        return false;
    }
    shard
        .store
        .put_outbox(link.peer.id, s.id, &s.frame)
        .detach();
    s.stored = true;
    la.stored_bytes.set(la.stored_bytes.get() + s.frame.len());
    la.stored_rows.set(la.stored_rows.get() + 1);
    link.stats.outbox_stored.inc();
    gauges(link);
    if !s.waiters.is_empty() {
        hub.outbox.waiting.borrow_mut().extend(s.waiters.drain(..));
        if !hub.outbox.paying.replace(true) {
            glommio::spawn_local(pay(shard.clone())).detach();
        }
    }
    true
}

/// The link went down: every copy not answered yet is stored now (its
/// publishers need not wait for the timeout); those that do not fit stay
/// in the ledger and meet the timeout as before.
pub(super) fn link_down(shard: &Rc<Shard>, hub: &Hub, link: &Link) {
    if !hub.outbox.on() {
        return;
    }
    let mut sent = link.acks.sent.borrow_mut();
    for s in sent.iter_mut().filter(|s| !s.stored) {
        store(shard, hub, link, s);
    }
}

/// Copies answered or given up (`dropped`): their rows go.
pub(super) fn done(shard: &Shard, link: &Link, copies: &[Sent], dropped: bool) {
    let la = &link.acks;
    let mut n = 0;
    for s in copies.iter().filter(|s| s.stored) {
        shard.store.delete_outbox(link.peer.id, s.id).detach();
        la.stored_bytes
            .set(la.stored_bytes.get().saturating_sub(s.frame.len()));
        n += 1;
    }
    if n == 0 {
        return;
    }
    la.stored_rows
        .set(la.stored_rows.get().saturating_sub(n as usize));
    if dropped {
        link.stats.outbox_dropped.add(n);
        tracing::warn!(
            peer = link.peer.id,
            copies = n,
            "outbox: copies for this node dropped"
        );
    } else {
        link.stats.outbox_sent.add(n);
    }
    gauges(link);
}

/// At start (shard 0): the rows of the last run go first into their links'
/// ledgers (lower ids than anything of this run); rows of nodes without a
/// link wait for one.
pub(super) fn restore(shard: &Shard, hub: &Hub) {
    let rows = shard.store.take_outbox();
    if rows.is_empty() {
        return;
    }
    tracing::info!(
        copies = rows.len(),
        "outbox: copies for other nodes restored"
    );
    let mut orphans = hub.outbox.orphans.borrow_mut();
    for r in rows {
        orphans.entry(r.peer).or_default().push(r);
    }
    drop(orphans);
    for l in hub.live() {
        adopt(hub, &l);
    }
}

/// A link to a node with restored rows: they join its ledger, in id order.
pub(super) fn adopt(hub: &Hub, link: &Link) {
    let Some(rows) = hub.outbox.orphans.borrow_mut().remove(&link.peer.id) else {
        return;
    };
    let la = &link.acks;
    let mut sent = la.sent.borrow_mut();
    for r in rows.into_iter().rev() {
        la.sent_bytes.set(la.sent_bytes.get() + r.frame.len());
        la.stored_bytes.set(la.stored_bytes.get() + r.frame.len());
        la.stored_rows.set(la.stored_rows.get() + 1);
        sent.push_front(Sent::restored(r.id, r.frame));
    }
    link.stats.unacked.set(sent.len() as u64);
    drop(sent);
    gauges(link);
    if link.is_up() {
        // Unusual (restored rows are adopted before links come up): written now.
        let sent = la.sent.borrow();
        for s in sent.iter().filter(|s| s.stored) {
            link.push_raw(&s.frame);
        }
    }
}

/// A copy neither sent nor stored: its publish is refused with `code`, once
/// it has registered its confirm token (this runs while the publish is being
/// routed, before its token waits for answers: an answer now would be lost).
pub(super) fn refuse_later(shard: &Rc<Shard>, w: super::acks::Waiter, code: ReasonCode) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        futures_lite::future::yield_now().await;
        answer(&shard, w, Some(code));
    })
    .detach();
}

fn gauges(link: &Link) {
    let la = &link.acks;
    link.stats.outbox_rows.set(la.stored_rows.get() as u64);
    link.stats.outbox_bytes.set(la.stored_bytes.get() as u64);
}

/// Answers the publishers whose copies' rows were in the commit just made durable.
async fn pay(shard: Rc<Shard>) {
    loop {
        // Let the rest of this tick add its rows to the same commit.
        futures_lite::future::yield_now().await;
        let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) else {
            return;
        };
        let waiters = std::mem::take(&mut *hub.outbox.waiting.borrow_mut());
        if waiters.is_empty() {
            hub.outbox.paying.set(false);
            return;
        }
        let result = shard.store.flush().await;
        let refused = result.err().map(|e| crate::confirm::refusal(&e));
        for w in waiters {
            answer(&shard, w, refused);
        }
    }
}

/// A peer told this node it has subscribers on `filter` (`add`) or no longer:
/// kept in shard 0's store, so a restart while that peer is down still knows.
pub(super) fn route_told(
    shard: &Shard,
    link: &Link,
    filter: &ringmq_codec::TopicFilter,
    add: bool,
) {
    if shard.store.is_persistent() {
        shard
            .store
            .put_peer_route(link.peer.id, filter.as_str(), add)
            .detach();
    }
}

/// At start (shard 0): the routes the linked peers last told, applied as if
/// they had just sent them (their sync on link up replaces them).
pub(super) fn restore_routes(shard: &Shard, hub: &Hub) {
    let mut by_peer: HashMap<u64, Vec<ringmq_codec::TopicFilter>> = HashMap::new();
    for (peer, f) in shard.store.take_peer_routes() {
        let f = std::str::from_utf8(&f)
            .ok()
            .and_then(|s| ringmq_codec::TopicFilter::try_from(s).ok());
        match f {
            Some(f) => by_peer.entry(peer).or_default().push(f),
            None => tracing::warn!(peer, "a stored peer route is not a topic filter: skipped"),
        }
    }
    for l in hub.live() {
        let Some(filters) = by_peer.remove(&l.peer.id) else {
            continue;
        };
        let changes = hub.book.borrow_mut().peer_sync(l.slot, filters);
        for (f, add) in changes {
            super::hub::apply_everywhere(shard, l.slot, f, add);
        }
        l.stats
            .peer_routes
            .set(hub.book.borrow().peer_len(l.slot) as u64);
    }
}
