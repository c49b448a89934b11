//! Bulk subscription work of one shard, in bounded steps: large SUBSCRIBE
//! and UNSUBSCRIBE packets and the subscriptions of removed sessions. One
//! FIFO and one worker task per shard do at most [`OPS_PER_TURN`] router
//! changes per scheduler turn, whoever asked for them, so 50 clients sending
//! 1,000-filter SUBSCRIBEs (or 200 closing sessions of 1,000 subscriptions)
//! cost the other connections of the shard one short step per turn, not
//! one step per flooding client. Their own acknowledgements wait instead.

use crate::conn_out::ConnOut;
use crate::session::SessionId;
use crate::shard::Shard;
use crate::subscribe::SubState;
use ringmq_codec::{ReasonCode, Subscribe, TopicFilter, Unsubscribe};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// Router changes (subscribe, unsubscribe, removal) per scheduler turn.
pub const OPS_PER_TURN: usize = 64;

/// One piece of bulk work and how far it got.
pub(crate) enum Job {
    /// A SUBSCRIBE of more than `OPS_PER_TURN` filters; its connection's
    /// packet handling is paused until the SUBACK.
    Subscribe {
        sid: SessionId,
        conn: Rc<ConnOut>,
        sub: Subscribe,
        next: usize,
        st: Option<SubState>,
    },
    /// A large UNSUBSCRIBE, likewise.
    Unsubscribe {
        sid: SessionId,
        conn: Rc<ConnOut>,
        u: Unsubscribe,
        reasons: Vec<ReasonCode>,
    },
    /// A removed session's subscriptions (`reap.rs`).
    Reap {
        sid: SessionId,
        filters: Vec<TopicFilter>,
    },
}

/// The shard's bulk work queue.
#[derive(Default)]
pub struct Bulk {
    queue: RefCell<VecDeque<Job>>,
    running: Cell<bool>,
}

impl Bulk {
    /// Whether work is queued or running (small jobs may then not jump it).
    pub fn busy(&self) -> bool {
        self.running.get()
    }
}

/// Queues `job` behind the others and starts the worker if idle.
pub(crate) fn push(shard: &Rc<Shard>, job: Job) {
    shard.bulk.queue.borrow_mut().push_back(job);
    if !shard.bulk.running.replace(true) {
        glommio::spawn_local(run(shard.clone())).detach();
    }
}

/// The worker: up to [`OPS_PER_TURN`] changes, then a yield, until the queue is empty.
async fn run(shard: Rc<Shard>) {
    loop {
        let mut budget = OPS_PER_TURN;
        while budget > 0 {
            let Some(mut job) = shard.bulk.queue.borrow_mut().pop_front() else {
                break;
            };
            let (used, done) = step(&shard, &mut job, budget);
            budget = budget.saturating_sub(used.max(1));
            if !done {
                shard.bulk.queue.borrow_mut().push_front(job);
            }
        }
        if shard.bulk.queue.borrow().is_empty() {
            shard.bulk.running.set(false);
            return;
        }
        // Let every other task of the shard run before the next step, the
        // owners of sockets that became ready meanwhile included.
        shard.poller.poll_now();
        futures_lite::future::yield_now().await;
    }
}

/// Advances `job` by at most `budget` changes: (changes made, finished).
fn step(shard: &Rc<Shard>, job: &mut Job, budget: usize) -> (usize, bool) {
    match job {
        Job::Subscribe {
            sid,
            conn,
            sub,
            next,
            st,
        } => {
            if !crate::subscribe::serves(shard, *sid, conn) {
                conn.resume_reading();
                return (0, true);
            }
            let end = (*next + budget).min(sub.filters.len());
            let state = st.get_or_insert_with(|| SubState::new(sub, conn));
            for (filter, options) in &sub.filters[*next..end] {
                state.one(shard, *sid, filter, *options);
            }
            let used = end - *next;
            *next = end;
            if end < sub.filters.len() {
                return (used, false);
            }
            let waits = st
                .take()
                .is_some_and(|s| s.finish(shard, *sid, conn, sub.packet_id));
            if !waits {
                conn.resume_reading(); // else once the SUBACK leaves
            }
            (used, true)
        }
        Job::Unsubscribe {
            sid,
            conn,
            u,
            reasons,
        } => {
            if !crate::subscribe::serves(shard, *sid, conn) {
                conn.resume_reading();
                return (0, true);
            }
            let from = reasons.len();
            let end = (from + budget).min(u.filters.len());
            for f in &u.filters[from..end] {
                reasons.push(crate::subscribe::unsubscribe_one(shard, *sid, f));
            }
            if end < u.filters.len() {
                return (end - from, false);
            }
            let reasons = std::mem::take(reasons);
            crate::subscribe::unsuback(shard, *sid, conn, u.packet_id, reasons);
            conn.resume_reading();
            (end - from, true)
        }
        Job::Reap { sid, filters } => {
            let n = budget.min(filters.len());
            for f in filters.drain(filters.len() - n..) {
                crate::subscribe::remove(shard, *sid, &f);
            }
            if filters.is_empty() {
                crate::reap::free(shard, *sid);
                return (n, true);
            }
            (n, false)
        }
    }
}
