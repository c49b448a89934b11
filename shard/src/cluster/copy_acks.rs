//! Acked session copies (durability `sync`): a QoS 1/2 copy that the old
//! node forwards to the session's new node (its stub, `stub.rs`; its ghost,
//! `ghost.rs`; a share-group copy for a member that left, `share_move.rs`)
//! is acknowledged to its publisher only once the new node holds it durably.
//!
//! ```text
//! node A (old owner)                                   node B (new owner)
//! a delivery meets the stub, under the publish's confirm token t
//!   (the publisher's own; or, for a copy another shard routed here,
//!    a local token relayed to it: `confirm::relay`)
//! shard 0's ledger (`acks.rs`) ── AckedCopy{stamp, client, origin} (0x39) ──► shard 0: a token,
//!   t waits for one more answer                                            the home shard:
//!                                                    delivered (installed), or kept for the install
//!                                                    once that commit is durable (install included)
//!   t answered ◄──────────────── Durable(upto) (cumulative, with every acked copy) ─┘
//! ```
//!
//! The ledger gives the copy what it gives every acked copy: written again
//! first thing on a new connection; kept in A's outbox (and A's publisher
//! acknowledged once that row is durable) when B cannot answer within the
//! ack timeout; without an outbox, the publish is refused (v5 0x83, 3.1.1:
//! the connection closes). So kill -9 of B before its commit, or of A before
//! it forwarded, loses nothing A acknowledged.
//!
//! B delivers a copy once: the stamps of a session's copies grow on a link
//! and reach its home shard in that order (those kept for the install
//! too), so the last stamp per (A, session), stored with the delivery's
//! row (`cluster::delivered`, the same table as the per-node stamps under
//! a key of its own), knows a resend after a link break or a restart of
//! either node. A copy that comes after the merge ended (a resend) is
//! delivered to the session still here, not dropped.
//!
//! A copy kept for an install waits at most the claim timeout plus a
//! second (the fetch waits no longer; its answer would be dropped): then it
//! is answered `NotStored`, so the cumulative `Durable` of the link is not
//! held back longer than that.

use super::frame::{Origin, Stamp};
use super::routes::Slot;
use super::PeerStamp;
use crate::mesh::{ConfirmReq, Fate, MeshItem};
use crate::shard::Shard;
use ringmq_codec::{Publish, QoS, ReasonCode};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

/// A stub's copy waiting for the end of the delivery that made it.
struct Forward {
    slot: Slot,
    client: Box<str>,
    origin: Origin,
    publish: Publish,
}

/// One shard's delivery under a confirm token (old node).
#[derive(Default)]
pub(crate) struct Under {
    token: Cell<Option<u64>>,
    forwards: RefCell<Vec<Forward>>,
}

/// Routing of a publish confirmed under `token` starts on this shard: a
/// stub's copy of it becomes an acked copy. Nothing unless a stub exists.
pub(crate) fn begin(shard: &Shard, token: u64) {
    if let Some(n) = shard.cluster.as_ref().filter(|n| forwards(n)) {
        n.copy_acks.token.set(Some(token));
    }
}

/// Whether a delivery on this shard may forward a copy: a stub, or a
/// ghost's subscriptions (`ghost.rs`) routed here.
fn forwards(n: &super::Node) -> bool {
    n.stubs.any() || n.ghosts.forwarding()
}

/// Shard 0, a group copy another node picked this node for under `token`
/// (`share_move.rs`): its forward to a moved member becomes an acked copy.
pub(crate) fn begin_shared(shard: &Shard, token: u64) {
    if let Some(n) = shard.cluster.as_ref() {
        n.copy_acks.token.set(Some(token));
    }
}

/// The delivery ended: the acked copies it made leave (through shard 0);
/// returns how many (each is one more answer for the token).
pub(crate) fn end(shard: &Rc<Shard>) -> usize {
    let Some(n) = shard.cluster.as_ref() else {
        return 0;
    };
    let Some(token) = n.copy_acks.token.take() else {
        return 0;
    };
    let list = std::mem::take(&mut *n.copy_acks.forwards.borrow_mut());
    let count = list.len();
    for f in list {
        let w = (shard.id, token);
        match &n.hub {
            Some(hub) => {
                if !hub.session_copy(
                    shard,
                    f.slot,
                    &f.client,
                    f.origin,
                    &f.publish,
                    Some(w),
                    false,
                ) {
                    n.stats.handover.forward_lost.fetch_add(1, Relaxed);
                }
            }
            None => shard.mesh.push(
                0,
                MeshItem::Cluster(Box::new(super::Item::Move(super::stub::Move::Copy {
                    slot: f.slot,
                    client: f.client,
                    origin: f.origin,
                    publish: f.publish,
                    ack: Some(w),
                }))),
            ),
        }
    }
    count
}

/// [`end`] for a prepared QoS 2 message (`confirm::prepare`, token = the
/// prepared row's nonce): the acked copies go to `held`, so they leave
/// after the prepare commit, as targets of the row (`origin::hold`): a
/// crash of this node after that commit sends them again at recovery.
pub(crate) fn end_keyed(shard: &Shard, held: &mut dyn FnMut(usize, MeshItem)) -> usize {
    let Some(n) = shard.cluster.as_ref() else {
        return 0;
    };
    let Some(token) = n.copy_acks.token.take() else {
        return 0;
    };
    let list = std::mem::take(&mut *n.copy_acks.forwards.borrow_mut());
    let count = list.len();
    for f in list {
        let m = super::stub::Move::KeyedCopy {
            slot: f.slot,
            client: f.client,
            origin: f.origin,
            publish: f.publish,
            ack: (shard.id, token),
        };
        held(0, MeshItem::Cluster(Box::new(super::Item::Move(m))));
    }
    count
}

/// A stub's copy of `p` for `client` at peer `slot`: kept as an acked copy
/// (true) when a delivery under a token is running and `p` is QoS 1/2.
pub(crate) fn take(shard: &Shard, slot: Slot, client: &str, origin: Origin, p: &Publish) -> bool {
    let Some(n) = shard.cluster.as_ref() else {
        return false;
    };
    if n.copy_acks.token.get().is_none() || p.qos == QoS::AtMostOnce {
        return false;
    }
    n.stats.handover.forwarded_acked.fetch_add(1, Relaxed);
    n.copy_acks.forwards.borrow_mut().push(Forward {
        slot,
        client: client.into(),
        origin,
        publish: p.clone(),
    });
    true
}

/// A copy another shard routed here under its `token` (`from`): with a
/// stub on this shard, the delivery runs under a local token of its own.
pub(crate) fn relay_begin(shard: &Shard) -> Option<u64> {
    let n = shard.cluster.as_ref().filter(|n| forwards(n))?;
    let local = crate::confirm::new_token(shard);
    n.copy_acks.token.set(Some(local));
    Some(local)
}

/// After [`relay_begin`]: true when acked copies left, and the answer to
/// `from` now waits for them and this shard's commit (`confirm::relay`).
pub(crate) fn relay_end(
    shard: &Rc<Shard>,
    local: u64,
    from: usize,
    req: ConfirmReq,
    fate: Fate,
) -> bool {
    let sent = end(shard);
    if sent == 0 {
        return false;
    }
    crate::confirm::relay(shard, local, sent, (from, req), fate);
    true
}

// ---- the new node --------------------------------------------------------------------------

/// An acked copy on the new node: who sent it, its stamp, and the token
/// shard 0 answers the sender under.
#[derive(Clone, Copy, Debug)]
pub struct CopyAck {
    pub node: u64,
    pub stamp: Stamp,
    pub token: u64,
    /// A prepared QoS 2 message's key on the sender (`origin.rs`):
    /// delivered once per key, a resend by the sender's recovery included.
    pub key: Option<super::origin::Origin>,
}

/// The key of a session's copies from `node` among the per-node stamps:
/// high bit set (node ids stay below it), FNV-1a of the client id.
fn key(node: u64, client: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ node.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in client.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 << 63
}

/// The key of the held-row range of `client`'s copies from origin `o`'s
/// node and shard (`held_durably`), apart from [`key`]'s.
fn twin_key(client: &str, o: Origin) -> u64 {
    let at = o.node.rotate_left(17) ^ u64::from(o.shard) << 40 ^ 0x5bd1_e995_0000_0001;
    key(at, client)
}

/// Stores session row `k` of the stamp table as the range `(first, last)`,
/// in memory and in the store's next batch (counted in `stamp_rows` when new).
fn put_session_row(shard: &Shard, n: &super::Node, k: u64, (first, last): (u64, u64)) {
    let stamp = Stamp {
        stream: first,
        id: last,
    };
    if n.seen.borrow_mut().insert(k, stamp).is_none() {
        n.session_stamps_add(1);
    }
    shard.store.put_peer_seen(k, first, last).detach();
}

/// Whether count `seq` is in the range stored as session row `k`.
fn in_range(shard: &Shard, k: u64, seq: u64) -> bool {
    shard.cluster.as_ref().is_some_and(|n| {
        n.seen
            .borrow()
            .get(&k)
            .is_some_and(|r| r.stream <= seq && seq <= r.id)
    })
}

/// A direct copy of origin `o` for merging session `client` was held in a
/// durable row (`merge::hold`): `range` (first, last count of `o`'s node and
/// shard held by this merge) is stored in the same batch. After a crash of
/// this node ends the merge, the held rows come back as queued messages and
/// a forwarded twin resent by the old node is known by it ([`held_twin`]):
/// each origin's copies reach the merge in order on both paths, and from
/// the first one the old node routed with this node's route on, every one
/// came both ways, so a count in the range is a held twin.
pub(crate) fn held_durably(shard: &Shard, client: &str, o: Origin, range: (u64, u64)) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    put_session_row(shard, n, twin_key(client, o), range);
}

/// Whether a forwarded copy of origin `o` for `client`, coming after its
/// merge ended, has a direct twin the merge held durably ([`held_durably`]).
pub(crate) fn held_twin(shard: &Shard, client: &str, o: Origin) -> bool {
    in_range(shard, twin_key(client, o), o.seq)
}

/// The key of the forwarded-copy range of `client`'s copies from origin
/// `o`'s node and shard (`forwarded_durably`), apart from the others.
fn fwd_key(client: &str, o: Origin) -> u64 {
    let at = o.node.rotate_left(29) ^ u64::from(o.shard) << 44 ^ 0x27d4_eb2f_0000_0003;
    key(at, client)
}

/// The key of `client`'s merge marker (`merging`): a tag no node id takes.
fn merging_key(client: &str) -> u64 {
    key(0x6d65_7267_696e_6721, client)
}

/// The merge of `client` began (`on`) or ended: a row among the stamps, in
/// the batch of the install, so a restart of this node knows which sessions
/// it cut mid-merge (`merge::recover`). At the end (its marks no longer
/// apply) the row goes in the batch of the end, with the merge's forwarded
/// ranges ([`forwarded_durably`]): those serve only a restart that cut the
/// merge, which the missing marker rules out. The held ranges stay (a
/// forwarded twin resent later is known by them, [`held_twin`]), until the
/// session goes ([`session_removed`]).
pub(crate) fn merging(shard: &Shard, client: &str, on: bool) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    if on {
        put_session_row(shard, n, merging_key(client), (1, 1));
        return;
    }
    if !n.has_session_stamps() {
        return;
    }
    let mut keys = vec![merging_key(client)];
    keys.extend(origins(n).map(|o| fwd_key(client, o)));
    drop_rows(shard, n, keys);
}

/// Every origin (node, shard) this shard delivered copies from.
fn origins(n: &super::Node) -> impl Iterator<Item = Origin> + '_ {
    let handled: Vec<(u64, u16)> = n.handled.borrow().keys().copied().collect();
    handled.into_iter().map(|(node, shard)| Origin {
        node,
        shard,
        seq: 0,
    })
}

/// Session rows `keys` leave the stamp table, in memory and in the store's
/// next batch (the gauge `stamp_rows` counts them down).
fn drop_rows(shard: &Shard, n: &super::Node, keys: Vec<u64>) {
    let mut seen = n.seen.borrow_mut();
    for k in keys {
        if seen.remove(&k).is_some() {
            n.session_stamps_add(-1);
            shard.store.delete_peer_seen(k).detach();
        }
    }
}

/// Whether `client`'s merge was running when this node last stopped.
pub(crate) fn was_merging(shard: &Shard, client: &str) -> bool {
    shard.cluster.as_ref().is_some_and(|n| {
        n.seen
            .borrow()
            .get(&merging_key(client))
            .is_some_and(|s| s.id != 0)
    })
}

/// A forwarded acked copy of origin `o` was delivered to merging session
/// `client`: `range` (first, last count of `o`'s node and shard forwarded
/// and delivered by this merge) is stored in the batch of the delivery's
/// row. After a crash of this node ends the merge, a direct twin resent by
/// its sender is known by it ([`forwarded_twin`]): the old node forwards
/// each origin's copies in order, so every count in the range it routed
/// to the session came that way.
pub(crate) fn forwarded_durably(shard: &Shard, client: &str, o: Origin, range: (u64, u64)) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    put_session_row(shard, n, fwd_key(client, o), range);
}

/// Whether a direct copy of origin `o` for `client`, coming after a crash
/// ended its merge, has a forwarded twin delivered durably ([`forwarded_durably`]).
pub(crate) fn forwarded_twin(shard: &Shard, client: &str, o: Origin) -> bool {
    in_range(shard, fwd_key(client, o), o.seq)
}

/// Whether a stamp-table key is a session's (a [`key`] or [`twin_key`]),
/// not a node's.
pub(crate) fn is_session_key(k: u64) -> bool {
    k >= 1 << 63
}

/// Home shard, session `client` removed (expired, discarded, moved away):
/// its rows in the stamp table go, in memory and in the store. Those are
/// its acked-copy stamps per sending node ([`key`], for every linked peer)
/// its merge's held and forwarded ranges per origin ([`twin_key`],
/// [`fwd_key`], for every origin this shard delivered from) and its merge
/// marker ([`merging_key`]): no copy for the session is delivered
/// through them any more. Nothing to do (no hashing) while the table holds
/// no session row.
pub(crate) fn session_removed(shard: &Shard, client: &str) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    if !n.has_session_stamps() {
        return;
    }
    let mut keys: Vec<u64> = n
        .peer_slots
        .borrow()
        .iter()
        .map(|(node, _)| key(*node, client))
        .collect();
    keys.extend(origins(n).flat_map(|o| [twin_key(client, o), fwd_key(client, o)]));
    keys.push(merging_key(client));
    drop_rows(shard, n, keys);
}

/// The stamp a copy of `client` is delivered once by (`cluster::deliver_once`).
pub(crate) fn once(client: &str, a: CopyAck) -> PeerStamp {
    PeerStamp {
        node: key(a.node, client),
        stamp: a.stamp,
        origin: None,
    }
}

/// Answers the sender for copy `a` (home shard): after this shard's next
/// commit, or at once refused.
pub(crate) fn answer(shard: &Rc<Shard>, a: CopyAck, refused: Option<ReasonCode>) {
    match refused {
        None => crate::persist::owe(
            shard,
            0,
            ConfirmReq {
                token: a.token,
                origin_row: false,
            },
            Fate::default(),
        ),
        Some(code) if shard.id == 0 => super::copy_answered(shard, a.token, Some(code)),
        Some(code) => shard.mesh.push(0, MeshItem::Refused(a.token, code)),
    }
}

/// The longest a copy waits for its session's install.
pub(crate) fn pending_for(shard: &Shard) -> std::time::Duration {
    let claim = shard
        .cfg
        .ownership
        .as_ref()
        .map_or(std::time::Duration::from_secs(3), |g| g.timeout);
    claim + std::time::Duration::from_secs(1)
}

// ---- test crash points (`RINGMQ_TEST_CRASH`) -----------------------------------------------

thread_local! {
    /// Copies counted by an armed crash point; whether it fired.
    static CRASH: (Cell<usize>, Cell<bool>) = const { (Cell::new(0), Cell::new(false)) };
}

/// The copy at which an armed crash point fires.
const CRASH_AT: usize = 100;

/// Whether the new node's crash point is armed.
pub(crate) fn crash_in_armed() -> bool {
    super::origin::crash_armed("fwd-copy-in")
}

/// `fwd-copy-in` (new node), at a forwarded copy for a merging session
/// (`twinned`: a direct copy of it is held, so the copy came only after
/// the old node had this node's route): from the first copy with no twin
/// (or the 100th twinned one) on,
/// copies are received but not delivered (true: drop it), and the process
/// aborts once what it had before is committed (the install among it): a
/// crash right after receiving forwarded copies, before their commit.
pub(crate) fn crash_copy_in(shard: &Rc<Shard>, twinned: bool) -> bool {
    let fire = CRASH.with(|c| {
        if c.1.get() {
            return None;
        }
        // Twinned copies count a hundredth: a move whose every copy is
        // twinned (the old node had this node's route early) still crashes.
        c.0.set(c.0.get() + if twinned { 1 } else { 100 });
        let fire = c.0.get() >= CRASH_AT;
        c.1.set(fire);
        Some(fire)
    });
    match fire {
        None => true,
        Some(false) => false,
        Some(true) => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = shard.store.flush().await;
                super::origin::crash_point("fwd-copy-in");
            })
            .detach();
            true
        }
    }
}

/// `late-copy-in` (new node), at an acked copy for a session whose merge
/// ended (a ghost's or a share group's forward, or a resend): from the 10th
/// on, copies are received but not delivered (true: drop it), and the
/// process aborts once what it had before is committed.
pub(crate) fn crash_late_in(shard: &Rc<Shard>) -> bool {
    if !super::origin::crash_armed("late-copy-in") {
        return false;
    }
    let fire = CRASH.with(|c| {
        if c.1.get() {
            return None;
        }
        c.0.set(c.0.get() + 1);
        let fire = c.0.get() >= 10;
        c.1.set(fire);
        Some(fire)
    });
    match fire {
        None => true,
        Some(false) => false,
        Some(true) => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = shard.store.flush().await;
                super::origin::crash_point("late-copy-in");
            })
            .detach();
            true
        }
    }
}

const CRASH_OUT_AT: usize = 10;

/// The first acked copy a stub sent (peer, id), and whether that peer's
/// `Durable` covered it (armed `fwd-copy-out` only).
static FIRST_COPY: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// An acked copy `id` left for `peer` (`acks.rs`).
pub(super) fn crash_copy_sent(peer: u64, id: u64) {
    if super::origin::crash_armed("fwd-copy-out") && FIRST_COPY.1.load(Relaxed) == 0 {
        FIRST_COPY.0.store(peer, Relaxed);
        FIRST_COPY.1.store(id, Relaxed);
    }
}

/// `peer` answered `Durable(upto)`: once it covers the first forwarded copy,
/// the new node holds the session durably (it answers a copy that came
/// before its install only after the commit holding the install).
pub(super) fn crash_durable(peer: u64, upto: u64) {
    let first = FIRST_COPY.1.load(Relaxed);
    if first != 0 && FIRST_COPY.0.load(Relaxed) == peer && upto >= first {
        INSTALLED.store(true, Relaxed);
    }
}

/// `fwd-copy-out` (old node): aborts at the 10th copy a stub forwards once
/// the new node answered the first one (its install is durable then), before
/// it leaves. Counted from the take instead, the 10th copy could come before
/// the new node had the snapshot (the fence took the session and parked it
/// in memory before the fetch came, or the ship had not left), and the crash
/// ended the move itself: the new node's fetch fails, the client gets a
/// fresh session (session present 0) and the old session's queued messages
/// go with it, as for any session of a node that dies (docs/cluster.md,
/// "A crash of the old node before the new one has the session"): one of
/// the two ways the test lost messages under load.
pub(crate) fn crash_copy_out() {
    if !super::origin::crash_armed("fwd-copy-out") || !INSTALLED.load(Relaxed) {
        return;
    }
    let n = CRASH.with(|c| {
        c.0.set(c.0.get() + 1);
        c.0.get()
    });
    if n >= CRASH_OUT_AT {
        super::origin::crash_point("fwd-copy-out");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_apart_from_node_ids_and_per_session() {
        let a = super::key(2, "c1");
        assert!(a >= 1 << 63);
        assert_ne!(a, super::key(2, "c2"));
        assert_ne!(a, super::key(3, "c1"));
        assert_eq!(a, super::key(2, "c1"));
        let o = super::Origin {
            node: 2,
            shard: 0,
            seq: 7,
        };
        let keys = [
            a,
            super::twin_key("c1", o),
            super::fwd_key("c1", o),
            super::merging_key("c1"),
        ];
        for (i, k) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|x| x != k), "keys apart");
        }
    }
}
