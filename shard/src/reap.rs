//! Bounded cleanup of removed sessions: their subscriptions leave the router
//! a few hundred per scheduler turn, so closing 200 clean sessions of 1,000
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
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// The generation of a tombstone: never that of a live session.
pub const GONE: u64 = u64::MAX;

/// Subscriptions removed per scheduler turn.
pub const STEP: usize = 256;

/// Tombstones whose subscriptions are still in the router.
#[derive(Default)]
pub struct Reaper {
    queue: RefCell<VecDeque<(SessionId, Vec<TopicFilter>)>>,
    running: Cell<bool>,
}

/// Removes tombstone `sid`'s subscriptions (`filters`), then frees its slot:
/// at once when there are few, else in steps on the reaper task.
pub(crate) fn bury(shard: &Rc<Shard>, sid: SessionId, mut filters: Vec<TopicFilter>) {
    if filters.len() <= STEP && !shard.reaper.running.get() {
        for f in filters.drain(..) {
            crate::subscribe::remove(shard, sid, &f);
        }
        free(shard, sid);
        return;
    }
    shard.reaper.queue.borrow_mut().push_back((sid, filters));
    if !shard.reaper.running.replace(true) {
        glommio::spawn_local(run(shard.clone())).detach();
    }
}

/// The reaper task: [`STEP`] removals, then a yield, until the queue is empty.
async fn run(shard: Rc<Shard>) {
    loop {
        let mut budget = STEP;
        while budget > 0 {
            let mut queue = shard.reaper.queue.borrow_mut();
            let Some((sid, filters)) = queue.front_mut() else {
                break;
            };
            let sid = *sid;
            let n = budget.min(filters.len());
            let batch: Vec<TopicFilter> = filters.drain(filters.len() - n..).collect();
            let emptied = filters.is_empty();
            if emptied {
                queue.pop_front();
            }
            drop(queue);
            for f in &batch {
                crate::subscribe::remove(&shard, sid, f);
            }
            budget -= n;
            if emptied {
                free(&shard, sid);
            }
        }
        if shard.reaper.queue.borrow().is_empty() {
            shard.reaper.running.set(false);
            return;
        }
        // Let every other task of the shard run before the next step.
        futures_lite::future::yield_now().await;
    }
}

/// The tombstone's subscriptions are gone: its slot may be reused.
fn free(shard: &Shard, sid: SessionId) {
    let mut sessions = shard.sessions.borrow_mut();
    if sessions
        .get(sid as usize)
        .is_some_and(|s| s.generation == GONE)
    {
        sessions.remove(sid as usize);
    }
}
