//! Bounded cleanup of removed sessions: their subscriptions leave the router
//! a few dozen per scheduler turn (`bulk.rs`), so closing 200 clean sessions of 1,000
//! subscriptions each does not hold the shard for the 200,000 removals.
//!
//! A removed session becomes a *tombstone* at once: out of the client index
//! (a new CONNECT with its id gets a fresh session), state cleared, store rows
//! deleted, [`GONE`] as its generation so deliveries to it are ignored. Its
//! slab slot stays taken until its last subscription has left the router, so
//! no new session can inherit its index (and with it, stale matches).

use crate::session::SessionId;
use crate::shard::Shard;
use ringmq_codec::TopicFilter;
use std::rc::Rc;

/// The generation of a tombstone: never that of a live session.
pub const GONE: u64 = u64::MAX;

/// Removes tombstone `sid`'s subscriptions (`filters`), then frees its slot:
/// at once when there are few and no bulk work waits, else in steps on the
/// shard's bulk worker (`bulk.rs`).
pub(crate) fn bury(shard: &Rc<Shard>, sid: SessionId, mut filters: Vec<TopicFilter>) {
    if filters.len() <= crate::bulk::OPS_PER_TURN && !shard.bulk.busy() {
        for f in filters.drain(..) {
            crate::subscribe::remove(shard, sid, &f);
        }
        free(shard, sid);
        return;
    }
    crate::bulk::push(shard, crate::bulk::Job::Reap { sid, filters });
}

/// The tombstone's subscriptions are gone: its slot may be reused.
pub(crate) fn free(shard: &Shard, sid: SessionId) {
    let mut sessions = shard.sessions.borrow_mut();
    if sessions
        .get(sid as usize)
        .is_some_and(|s| s.generation == GONE)
    {
        sessions.remove(sid as usize);
    }
}
