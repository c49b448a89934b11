//! Acked copies: QoS 1 and 2 across nodes under durability `sync`.
//!
//! The publisher's node (A) sends each target node (B) an *acked* copy
//! (`Frame::AckedPublish`, `AckedShared`) stamped with A's stream (a fresh
//! value per start of A) and an id growing by one per copy on that link. The
//! publisher's PUBACK/PUBREC waits for B's answer (`confirm.rs`: each target
//! node counts as one more copy to confirm):
//!
//! - B's shard 0 routes the copy on B asking every shard given it to confirm
//!   once its commit is durable (the same `Confirm` as between shards), waits
//!   for its own commit too, and answers `Durable(upto)`: every acked copy of
//!   this connection up to `upto` is durable on B (answers are cumulative, in
//!   arrival order). A copy B could not store is answered `NotStored`.
//! - A keeps every unanswered copy (bounded in bytes by the link queue). When
//!   the link breaks, they are written again, in order, first thing on the
//!   next connection; B's shards deliver a copy only if it is past the last
//!   one of A's stream they had ([`super::fresh`]), so a resend after a link
//!   break is never delivered twice (QoS 2 stays exactly once).
//! - A copy B does not answer within `durable_ack_timeout` (B down longer
//!   than that, or too slow) refuses the publish: v5 PUBACK/PUBREC 0x83
//!   Implementation specific error, a 3.1.1 publisher's connection closes
//!   (`cluster_unavailable`), as when a shard cannot store its copy. Nothing is acknowledged that B does not hold durably, so what
//!   the cluster acknowledged survives kill -9 of any node.

use super::frame::{encode_acked_from, encode_acked_origin, Frame, Origin, OriginAt, Stamp};
use super::hub::Hub;
use super::link::Link;
use crate::mesh::{ConfirmReq, Fate, MeshItem};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use ringmq_codec::{Publish, ReasonCode, TopicFilter};
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Copy ids are `run << ID_BITS | n`: a later run's ids are above an earlier one's.
const ID_BITS: u32 = 40;

/// Who waits for an acked copy: a publish's confirm token on one of this node's shards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter {
    pub shard: usize,
    pub token: u64,
}

/// An acked copy sent (or to send) to the peer, not answered yet.
pub(super) struct Sent {
    pub id: u64,
    pub frame: Bytes,
    pub waiters: SmallVec<[Waiter; 1]>,
    deadline: Instant,
    /// A prepared QoS 2 message's copy (`origin.rs`).
    origin: bool,
    /// Recovery's resend of one (no deadline).
    patient: bool,
    /// Held in this node's outbox (`outbox.rs`): no deadline, deleted once answered.
    pub stored: bool,
}

impl Sent {
    /// A copy read back from the outbox at start.
    pub fn restored(id: u64, frame: Bytes) -> Sent {
        Sent {
            id,
            frame,
            waiters: SmallVec::new(),
            deadline: Instant::now(),
            origin: false,
            patient: false,
            stored: true,
        }
    }
}

/// One link's acked copies, both ways.
#[derive(Default)]
pub(crate) struct LinkAcks {
    /// Outbound, in id order.
    pub(super) sent: RefCell<VecDeque<Sent>>,
    pub(super) sent_bytes: Cell<usize>,
    /// Of those, the copies held in the outbox (`outbox.rs`).
    pub(super) stored_bytes: Cell<usize>,
    pub(super) stored_rows: Cell<usize>,
    next_id: Cell<u64>,
    /// Inbound on the current connection, in arrival order: (id, durable here).
    inbox: RefCell<VecDeque<(u64, bool)>>,
    /// The connection the inbox belongs to.
    inbox_conn: Cell<u64>,
    /// An answer is due at the end of this tick.
    answering: Cell<bool>,
}

impl LinkAcks {
    /// A new connection: the peer resends what it has not had answered,
    /// so the inbox starts empty; our unanswered copies are written again.
    pub fn connected(&self, link: &Link, conn: u64) {
        self.inbox.borrow_mut().clear();
        self.inbox_conn.set(conn);
        let sent = self.sent.borrow();
        for s in sent.iter() {
            link.push_raw(&s.frame);
        }
        link.stats.resent.add(sent.len() as u64);
    }

    /// The link to the same node was replaced (its address changed): the
    /// ledger and the id sequence move to the new link.
    pub fn carry_to(&self, to: &LinkAcks) {
        std::mem::swap(&mut *self.sent.borrow_mut(), &mut *to.sent.borrow_mut());
        to.sent_bytes.set(self.sent_bytes.replace(0));
        to.stored_bytes.set(self.stored_bytes.replace(0));
        to.stored_rows.set(self.stored_rows.replace(0));
        to.next_id.set(self.next_id.get().max(to.next_id.get()));
    }
}

/// A copy from a peer being stored on this node.
struct Incoming {
    slot: super::routes::Slot,
    conn: u64,
    id: u64,
    left: usize,
    refused: Option<ReasonCode>,
}

/// Shard 0's acked-copy state across links.
pub(crate) struct Acks {
    /// This data dir's stream (kept across restarts, `store/outbox.rs`).
    stream: Cell<u64>,
    /// The first copy id of this run: `run << 40`.
    id_base: Cell<u64>,
    /// Local confirm token -> the peer copy it stores.
    incoming: RefCell<crate::IntMap<u64, Incoming>>,
    /// Tokens waiting for this shard's own next commit.
    own: RefCell<Vec<u64>>,
    paying: Cell<bool>,
}

impl Acks {
    pub fn new() -> Self {
        let run = crate::store::LinkRun::fresh();
        Acks {
            stream: Cell::new(run.stream),
            id_base: Cell::new(run.run << ID_BITS),
            incoming: RefCell::default(),
            own: RefCell::default(),
            paying: Cell::new(false),
        }
    }

    /// This start's stream and run, from the store (at start, before any copy).
    pub fn begin(&self, run: crate::store::LinkRun) {
        self.stream.set(run.stream);
        self.id_base.set(run.run << ID_BITS);
    }

    // ---- the sending side --------------------------------------------------------------------

    /// Queues an acked copy of the MQTT bytes `mqtt` for `link` (for share
    /// group `group` there); `w` is answered when the peer does.
    #[allow(clippy::too_many_arguments)] // the copy, where it goes, and who waits for it
    pub fn send(
        &self,
        shard: &Rc<Shard>,
        hub: &Hub,
        link: &Link,
        group: Option<&TopicFilter>,
        origin: Option<OriginAt>,
        mqtt: &[u8],
        w: Waiter,
    ) {
        let deadline = Instant::now() + hub.cfg.durable_ack_timeout;
        self.queue(
            shard,
            hub,
            link,
            mqtt.len(),
            w,
            (deadline, false, false),
            |stamp, b| encode_acked_from(stamp, group, origin, mqtt, b),
        );
    }

    /// An acked copy for session `client` of the peer, forwarded by a stub
    /// of this node (`copy_acks.rs`).
    pub fn send_copy(
        &self,
        shard: &Rc<Shard>,
        hub: &Hub,
        link: &Link,
        (client, origin, key): (&str, Origin, Option<super::origin::Origin>),
        mqtt: &[u8],
        w: Waiter,
    ) {
        let deadline = Instant::now() + hub.cfg.durable_ack_timeout;
        self.queue(
            shard,
            hub,
            link,
            mqtt.len() + client.len(),
            w,
            (deadline, false, false),
            |stamp, b| {
                super::copy_acks::crash_copy_sent(link.peer.id, stamp.id);
                super::frame_move::encode_acked_copy(stamp, (client, origin, key), mqtt, b)
            },
        );
    }

    /// [`Self::send`] for a prepared QoS 2 message with its origin key
    /// (`origin.rs`); `patient` (recovery's resend): no deadline.
    #[allow(clippy::too_many_arguments)]
    pub fn send_origin(
        &self,
        shard: &Rc<Shard>,
        hub: &Hub,
        link: &Link,
        (group, key): (Option<&TopicFilter>, super::origin::Origin),
        at: Option<OriginAt>,
        mqtt: &[u8],
        w: Waiter,
        patient: bool,
    ) {
        let now = Instant::now();
        let deadline = if patient {
            // Far enough never to come (Instant has no maximum).
            now.checked_add(Duration::from_secs(100 * 365 * 86_400))
                .unwrap_or(now + hub.cfg.durable_ack_timeout)
        } else {
            now + hub.cfg.durable_ack_timeout
        };
        self.queue(
            shard,
            hub,
            link,
            mqtt.len(),
            w,
            (deadline, true, patient),
            |stamp, b| encode_acked_origin(stamp, key, (group, at), mqtt, b),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        shard: &Rc<Shard>,
        hub: &Hub,
        link: &Link,
        len: usize,
        w: Waiter,
        (deadline, origin, patient): (Instant, bool, bool),
        encode: impl FnOnce(Stamp, &mut BytesMut),
    ) {
        let la = &link.acks;
        let in_memory = la.sent_bytes.get() - la.stored_bytes.get();
        if in_memory + len > hub.cfg.link_queue_bytes {
            // Bounded like the plain queue; the publisher learns it now.
            link.stats.dropped.inc();
            super::outbox::refuse_later(shard, w, ReasonCode::ImplementationSpecificError);
            return;
        }
        let id = (la.next_id.get() + 1).max(self.id_base.get() + 1);
        la.next_id.set(id);
        let mut b = BytesMut::with_capacity(len + 48);
        let stamp = Stamp {
            stream: self.stream.get(),
            id,
        };
        encode(stamp, &mut b);
        let mut s = Sent {
            id,
            frame: b.freeze(),
            waiters: SmallVec::from_buf([w]),
            deadline,
            origin,
            patient,
            stored: false,
        };
        if link.is_up() {
            link.push_raw(&s.frame);
        } else if !patient && hub.outbox.on() && !super::outbox::store(shard, hub, link, &mut s) {
            // The node is down and its outbox full: refused as without an outbox.
            // (Recovery's patient resends need no outbox: their prepared row holds them.)
            super::outbox::refuse_later(shard, w, ReasonCode::QuotaExceeded);
            return;
        }
        la.sent_bytes.set(la.sent_bytes.get() + s.frame.len());
        la.sent.borrow_mut().push_back(s);
        link.stats.acked_out.inc();
        link.stats.unacked.set(la.sent.borrow().len() as u64);
    }

    /// The peer answered `Durable(upto)`.
    pub fn durable(&self, shard: &Rc<Shard>, link: &Link, upto: u64) {
        super::copy_acks::crash_durable(link.peer.id, upto);
        let done = take(link, |s| s.id <= upto, true);
        super::outbox::done(shard, link, &done, false);
        if done.iter().any(|s| s.origin) {
            super::origin::crash_point("node-copy-durable");
        }
        for s in done {
            for w in s.waiters {
                answer(shard, w, None);
            }
        }
    }

    /// The peer could not store copy `id`.
    pub fn not_stored(&self, shard: &Rc<Shard>, link: &Link, id: u64, code: u8) {
        let code = ReasonCode::try_from(code)
            .ok()
            .filter(|c| *c as u8 >= 0x80)
            .unwrap_or(ReasonCode::UnspecifiedError);
        let done = take(link, |s| s.id == id, false);
        link.stats.not_stored.add(done.len() as u64);
        // A stored copy's publishers were acknowledged already: it is lost (counted).
        super::outbox::done(shard, link, &done, true);
        for s in done {
            for w in s.waiters {
                answer(shard, w, Some(code));
            }
        }
    }

    /// Copies past their deadline (the sweep, every 100 ms) go to the outbox;
    /// without one, or when it is full, their publishes are refused.
    pub fn expire(&self, shard: &Rc<Shard>, hub: &Hub, link: &Link, now: Instant) {
        let late = {
            let mut sent = link.acks.sent.borrow_mut();
            let mut late = Vec::new();
            let mut i = 0;
            // Deadlines grow with ids among the copies neither stored nor patient
            // (recovery's resends, `origin.rs`: no deadline): stop at the first one not due.
            while i < sent.len() {
                let s = &mut sent[i];
                if s.stored || s.patient {
                    i += 1;
                    continue;
                }
                if s.deadline > now {
                    break;
                }
                if hub.outbox.on() && super::outbox::store(shard, hub, link, s) {
                    i += 1;
                    continue;
                }
                late.extend(sent.remove(i));
            }
            let freed: usize = late.iter().map(|s: &Sent| s.frame.len()).sum();
            let la = &link.acks;
            la.sent_bytes.set(la.sent_bytes.get().saturating_sub(freed));
            link.stats.unacked.set(sent.len() as u64);
            late
        };
        if late.is_empty() {
            return;
        }
        link.stats.ack_timeouts.add(late.len() as u64);
        tracing::warn!(
            peer = link.peer.id,
            copies = late.len(),
            "node link: no durable answer within {:?}: publishes refused",
            shard
                .cfg
                .cluster
                .as_ref()
                .map(|c| c.durable_ack_timeout)
                .unwrap_or_default()
        );
        for s in late {
            for w in s.waiters {
                answer(shard, w, Some(ReasonCode::ImplementationSpecificError));
            }
        }
    }

    /// The peer left the cluster: every copy waiting for it is refused.
    pub fn abandon(&self, shard: &Rc<Shard>, link: &Link) {
        let gone = take(link, |_| true, true);
        super::outbox::done(shard, link, &gone, true);
        for s in gone {
            for w in s.waiters {
                answer(shard, w, Some(ReasonCode::ImplementationSpecificError));
            }
        }
    }

    // ---- the receiving side ------------------------------------------------------------------

    /// An acked copy from the peer of `link`: routed here, answered once durable.
    pub fn receive(
        &self,
        shard: &Rc<Shard>,
        link: &Link,
        stamp: Stamp,
        (group, key): (Option<&TopicFilter>, Option<super::origin::Origin>),
        p: Publish,
        origin: Option<Origin>,
    ) {
        link.stats.acked_in.inc();
        let token = crate::confirm::new_token(shard);
        let conn = link.acks.inbox_conn.get();
        link.acks.inbox.borrow_mut().push_back((stamp.id, false));
        let req = Some(ConfirmReq {
            token,
            origin_row: false,
        });
        let peer = Some(super::PeerStamp {
            node: link.peer.id,
            stamp,
            origin: key,
        });
        let remote = match group {
            None => crate::route::route_from_peer(shard, p, req, peer, origin),
            Some(g) => crate::route::route_shared_from_peer(shard, p, g, req, peer),
        };
        self.incoming.borrow_mut().insert(
            token,
            Incoming {
                slot: link.slot,
                conn,
                id: stamp.id,
                // The other shards' confirmations and this shard's own commit.
                left: remote + 1,
                refused: None,
            },
        );
        self.own.borrow_mut().push(token);
        if !self.paying.replace(true) {
            glommio::spawn_local(own_commits(shard.clone())).detach();
        }
    }

    /// An acked session copy from the peer (`copy_acks.rs`): to the
    /// session's home shard, answered once durable there.
    pub fn receive_copy(
        &self,
        shard: &Rc<Shard>,
        link: &Link,
        stamp: Stamp,
        (client, origin, key): (String, Origin, Option<super::origin::Origin>),
        p: Publish,
    ) {
        link.stats.acked_in.inc();
        let token = crate::confirm::new_token(shard);
        let conn = link.acks.inbox_conn.get();
        link.acks.inbox.borrow_mut().push_back((stamp.id, false));
        self.incoming.borrow_mut().insert(
            token,
            Incoming {
                slot: link.slot,
                conn,
                id: stamp.id,
                left: 1,
                refused: None,
            },
        );
        let ack = super::copy_acks::CopyAck {
            node: link.peer.id,
            stamp,
            token,
            key,
        };
        super::merge::on_copy(shard, client, origin, p, Some(ack));
    }

    /// One answer for the peer copy behind `token` (a shard's confirmation,
    /// or this shard's own commit).
    pub fn answered(&self, hub: &Hub, token: u64, refused: Option<ReasonCode>) {
        let done = {
            let mut inc = self.incoming.borrow_mut();
            let Some(e) = inc.get_mut(&token) else {
                return;
            };
            e.left = e.left.saturating_sub(1);
            if refused.is_some() {
                e.refused = refused;
            }
            if e.left > 0 {
                return;
            }
            inc.remove(&token)
        };
        let Some(e) = done else { return };
        let Some(link) = hub.link_of(e.slot) else {
            return;
        };
        let la = &link.acks;
        if la.inbox_conn.get() != e.conn {
            // That connection is gone: the peer sends the copy again.
            return;
        }
        if let Some(code) = e.refused {
            link.push_frame(&Frame::NotStored {
                id: e.id,
                code: code as u8,
            });
        }
        mark_durable(&mut la.inbox.borrow_mut(), e.id);
        if !la.answering.replace(true) {
            glommio::spawn_local(answer_at_tick_end(link)).detach();
        }
    }
}

/// Marks copy `id` of the inbox durable. The peer writes its copies in id
/// order on a connection (its resends first, oldest first, then new ones), so
/// the inbox is sorted and a binary search finds it: a linear scan per
/// answer was 72% of the receiving node's CPU with thousands of copies per
/// tick (perf, 50 QoS 1 pairs cross node). A peer that broke the order
/// still gets its answers, through the scan.
fn mark_durable(inbox: &mut VecDeque<(u64, bool)>, id: u64) {
    let at = match inbox.binary_search_by_key(&id, |x| x.0) {
        Ok(i) => Some(i),
        Err(_) => inbox.iter().position(|x| x.0 == id),
    };
    if let Some(i) = at {
        inbox[i].1 = true;
    }
}

/// Removes the copies `pick` selects from the front (`front`: stop at the
/// first one it does not) or anywhere.
fn take(link: &Link, pick: impl Fn(&Sent) -> bool, front: bool) -> Vec<Sent> {
    let la = &link.acks;
    let mut sent = la.sent.borrow_mut();
    let mut out = Vec::new();
    if front {
        while sent.front().is_some_and(&pick) {
            out.extend(sent.pop_front());
        }
    } else if let Some(i) = sent.iter().position(&pick) {
        out.extend(sent.remove(i));
    }
    let freed: usize = out.iter().map(|s| s.frame.len()).sum();
    la.sent_bytes.set(la.sent_bytes.get().saturating_sub(freed));
    link.stats.unacked.set(sent.len() as u64);
    out
}

/// Sends the cumulative answer once per tick: every copy up to the first one
/// not yet durable.
async fn answer_at_tick_end(link: Rc<Link>) {
    futures_lite::future::yield_now().await;
    let la = &link.acks;
    la.answering.set(false);
    let mut upto = None;
    {
        let mut inbox = la.inbox.borrow_mut();
        while inbox.front().is_some_and(|x| x.1) {
            upto = inbox.pop_front().map(|x| x.0);
        }
    }
    if let (Some(id), true) = (upto, link.is_up()) {
        link.push_frame(&Frame::Durable(id));
    }
}

/// Answers the tokens of peer copies once this shard's commit holding their
/// local rows is durable.
async fn own_commits(shard: Rc<Shard>) {
    loop {
        // Let the rest of this tick's link batch add its rows first.
        futures_lite::future::yield_now().await;
        let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) else {
            return;
        };
        let tokens = std::mem::take(&mut *hub.durable.own.borrow_mut());
        if tokens.is_empty() {
            hub.durable.paying.set(false);
            return;
        }
        let result = shard.store.flush().await;
        let refused = result.err().map(|e| crate::confirm::refusal(&e));
        for t in tokens {
            hub.durable.answered(&hub, t, refused);
        }
    }
}

/// Answers a local publish waiting for a node: its confirm token on its shard.
pub(super) fn answer(shard: &Rc<Shard>, w: Waiter, refused: Option<ReasonCode>) {
    // What the node's sessions did with the copy is not told back: counted as taken.
    let fate = Fate(Fate::HELD);
    if w.shard == shard.id {
        match refused {
            None => crate::confirm::confirmed_with(shard, w.token, fate),
            Some(code) => crate::confirm::refused(shard, w.token, code),
        }
    } else {
        let item = match refused {
            None => MeshItem::Confirm(w.token, fate),
            Some(code) => MeshItem::Refused(w.token, code),
        };
        shard.mesh.push(w.shard, item);
    }
}

#[cfg(test)]
mod tests {
    use super::mark_durable;
    use std::collections::VecDeque;

    #[test]
    fn marks_the_copy_in_a_sorted_inbox_and_in_one_out_of_order() {
        let mut inbox: VecDeque<(u64, bool)> = (1..=1000).map(|i| (i * 2, false)).collect();
        mark_durable(&mut inbox, 600);
        mark_durable(&mut inbox, 601); // not there: nothing marked
        assert_eq!(inbox.iter().filter(|x| x.1).count(), 1);
        assert!(inbox[299].1);
        let mut odd: VecDeque<(u64, bool)> = [(5, false), (3, false), (9, false)].into();
        mark_durable(&mut odd, 3);
        assert!(odd[1].1);
    }
}
