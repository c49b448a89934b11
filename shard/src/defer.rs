//! Deferred rows (durability `sync`): a QoS 1 copy for a connected
//! persistent subscriber is not written to the store at once. The
//! publisher's PUBACK waits, under the publish's confirm token, for each
//! such copy to be either acknowledged by its subscriber (PUBACK: the row is
//! never written) or stored: a copy still unacknowledged after [`DEFER_FOR`]
//! is written with its current state and counts once that commit is durable.
//!
//! So a subscriber that keeps up costs the store nothing, even when its
//! messages queue behind its inflight window, and nothing the broker
//! acknowledged depends on a row that is not durable (`docs/storage.md`,
//! "Deferred rows").

use crate::session::SessionId;
use crate::shard::Shard;
use crate::store::{OutboundState, SessionKey};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a copy may wait for its subscriber's PUBACK before it is stored.
pub const DEFER_FOR: Duration = Duration::from_millis(4);

/// A copy queued behind this many others is stored at once: at about half
/// a core's delivery rate (1M/s) it would not be acknowledged within
/// `DEFER_FOR`, and storing it late costs more than storing it now.
pub const DEFER_QUEUE_MAX: usize = 2048;

/// One shard's deferred rows.
#[derive(Default)]
pub struct Defer {
    /// The confirm token of the publish being routed now, when its local
    /// QoS 1 copies may be deferred; and how many were.
    current: Cell<Option<u64>>,
    count: Cell<usize>,
    /// (session key, seq) -> token of the publish waiting for the copy.
    rows: RefCell<crate::IntMap<(SessionKey, u64), u64>>,
    /// Deadlines, oldest first: (when, session, its key, seq).
    due: RefCell<VecDeque<(Instant, SessionId, SessionKey, u64)>>,
    /// Tokens of copies resolved (acknowledged, dropped), to answer.
    resolved: RefCell<Vec<u64>>,
    sweeping: Cell<bool>,
}

impl Defer {
    /// Routing of the publish behind `token` starts: its local QoS 1 copies may be deferred.
    pub fn begin(&self, token: u64) {
        self.current.set(Some(token));
        self.count.set(0);
    }

    /// Routing ended; returns how many copies were deferred under the token.
    pub fn end(&self) -> usize {
        self.current.set(None);
        self.count.replace(0)
    }

    /// Defers the first write of row (`key`, `seq`) if a publish is being
    /// routed under a token; false when the row must be written now.
    pub fn try_defer(&self, sid: SessionId, key: SessionKey, seq: u64, now: Instant) -> bool {
        let Some(token) = self.current.get() else {
            return false;
        };
        self.rows.borrow_mut().insert((key, seq), token);
        self.due
            .borrow_mut()
            .push_back((now + DEFER_FOR, sid, key, seq));
        self.count.set(self.count.get() + 1);
        true
    }

    /// Starts the task that stores copies past their deadline, if rows
    /// are deferred and it is not running.
    pub fn watch(shard: &Rc<Shard>) {
        if !shard.defer.due.borrow().is_empty() && !shard.defer.sweeping.replace(true) {
            glommio::spawn_local(sweep(shard.clone())).detach();
        }
    }

    /// True while row (`key`, `seq`) is deferred (not in the store).
    pub fn is_deferred(&self, key: SessionKey, seq: u64) -> bool {
        let rows = self.rows.borrow();
        !rows.is_empty() && rows.contains_key(&(key, seq))
    }

    /// The copy in row (`key`, `seq`) is gone (acknowledged, dropped): if it
    /// was deferred, its publish is answered and true is returned (no row
    /// to delete).
    pub fn resolve(&self, key: SessionKey, seq: u64) -> bool {
        let token = {
            let mut rows = self.rows.borrow_mut();
            if rows.is_empty() {
                return false;
            }
            rows.remove(&(key, seq))
        };
        match token {
            Some(t) => {
                self.resolved.borrow_mut().push(t);
                true
            }
            None => false,
        }
    }

    /// Answers the publishes whose deferred copies were resolved. Call with
    /// no session borrowed (it releases acknowledgements).
    pub fn drain(shard: &Rc<Shard>) {
        if shard.defer.resolved.borrow().is_empty() {
            return;
        }
        let mut tokens = std::mem::take(&mut *shard.defer.resolved.borrow_mut());
        loop {
            for t in tokens.drain(..) {
                crate::confirm::confirmed(shard, t);
            }
            // Answering may resolve more; the buffer is kept for the next time.
            let mut resolved = shard.defer.resolved.borrow_mut();
            if resolved.is_empty() {
                *resolved = tokens;
                return;
            }
            std::mem::swap(&mut *resolved, &mut tokens);
        }
    }
}

/// Stores the deferred copies whose deadline passed (every one with `all`),
/// with their current state; their publishes count them once that commit
/// is durable. Copies whose session entry is gone are answered at once.
pub(crate) fn store_due(shard: &Rc<Shard>, all: bool) {
    Defer::drain(shard);
    let now = Instant::now();
    let mut expired: Vec<(SessionId, SessionKey, u64, u64)> = Vec::new();
    {
        let mut due = shard.defer.due.borrow_mut();
        let mut rows = shard.defer.rows.borrow_mut();
        while let Some(&(at, sid, key, seq)) = due.front() {
            if !all && at > now {
                break;
            }
            due.pop_front();
            if let Some(t) = rows.remove(&(key, seq)) {
                expired.push((sid, key, seq, t));
            }
        }
    }
    if expired.is_empty() {
        return;
    }
    let mut stored = Vec::with_capacity(expired.len());
    {
        let sessions = shard.sessions.borrow();
        for (sid, key, seq, token) in expired {
            // The slab slot may hold another session by now: the key tells.
            let written = sessions
                .get(sid as usize)
                .filter(|s| s.key == Some(key))
                .is_some_and(|s| s.store_deferred(shard, seq));
            if written {
                stored.push(token);
            } else {
                // The copy left its session without being resolved: nothing to store.
                shard.defer.resolved.borrow_mut().push(token);
            }
        }
    }
    Defer::drain(shard);
    if stored.is_empty() {
        return;
    }
    shard.stats.deferred_rows_stored.add(stored.len() as u64);
    let ticket = shard.store.flush();
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let r = ticket.await;
        for t in stored {
            match &r {
                Ok(()) => crate::confirm::confirmed(&shard, t),
                Err(e) => crate::confirm::refused(&shard, t, crate::confirm::refusal(e)),
            }
        }
    })
    .detach();
}

/// Stores deferred copies as their deadlines pass (at most one pass per
/// `SWEEP_EVERY`: a deadline may be overrun by that much); ends when none is left.
async fn sweep(shard: Rc<Shard>) {
    loop {
        let next = shard.defer.due.borrow().front().map(|d| d.0);
        let Some(at) = next else {
            shard.defer.sweeping.set(false);
            return;
        };
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(SWEEP_EVERY);
        glommio::timer::sleep(wait).await;
        store_due(&shard, false);
    }
}

const SWEEP_EVERY: Duration = Duration::from_millis(1);

/// The state a deferred row is written with.
pub(crate) fn row_state(packet_id: Option<ringmq_codec::PacketId>) -> OutboundState {
    match packet_id {
        Some(id) => OutboundState::AwaitingAck(id),
        None => OutboundState::Queued,
    }
}
