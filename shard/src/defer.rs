//! Deferred rows (durability `sync`): a QoS 1 copy for a connected
//! persistent subscriber is not written to the store at once. The
//! publisher's PUBACK waits, under the publish's confirm token, for each
//! such copy to be either acknowledged by its subscriber (PUBACK: the row is
//! never written) or stored: a copy still unacknowledged by its deadline
//! ([`DEFER_FOR`] plus [`DEFER_PER_QUEUED`] per message queued ahead of it)
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
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a copy may wait for its subscriber's PUBACK before it is
/// stored, plus `DEFER_PER_QUEUED` for each message queued before it.
pub const DEFER_FOR: Duration = Duration::from_millis(4);
pub const DEFER_PER_QUEUED: Duration = Duration::from_micros(1);

/// A copy queued behind this many others is stored at once (its deadline
/// would pass 20 ms).
pub const DEFER_QUEUE_MAX: usize = 16384;

/// The deadline of a copy queued behind `queued` others, ms.
pub fn wait_ms(queued: usize) -> u64 {
    (DEFER_FOR + DEFER_PER_QUEUED * queued as u32).as_millis() as u64
}

/// A session one of whose deferred copies reached its deadline is behind:
/// its copies are stored at once for this long (its publishers then wait
/// for a commit, not for a deadline).
pub const BEHIND_FOR_MS: u64 = 100;

/// One shard's deferred rows.
#[derive(Default)]
pub struct Defer {
    /// The confirm token of the publish being routed now, when its local
    /// QoS 1 copies may be deferred; and how many were.
    current: Cell<Option<u64>>,
    count: Cell<usize>,
    /// (session key, seq) -> token of the publish waiting for the copy.
    rows: RefCell<crate::IntMap<(SessionKey, u64), u64>>,
    /// Deadlines: a wheel of 1 ms slots, `WHEEL` of them, from `next_ms`
    /// (ms since the shard started); each slot holds (session, key, seq).
    wheel: RefCell<Vec<Vec<(SessionId, SessionKey, u64)>>>,
    next_ms: Cell<u64>,
    /// Entries in the wheel (resolved ones included until their slot is swept).
    due: Cell<usize>,
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
    /// `now_ms`: ms since the shard started; `wait_ms`: the copy's deadline after that.
    pub fn try_defer(
        &self,
        sid: SessionId,
        (key, seq): (SessionKey, u64),
        now_ms: u64,
        wait_ms: u64,
    ) -> bool {
        let Some(token) = self.current.get() else {
            return false;
        };
        self.rows.borrow_mut().insert((key, seq), token);
        let mut wheel = self.wheel.borrow_mut();
        if wheel.is_empty() {
            wheel.resize_with(WHEEL, Vec::new);
        }
        if self.due.get() == 0 {
            self.next_ms.set(now_ms);
        }
        // Late sweeps only ever bring a deadline forward.
        let next = self.next_ms.get();
        let at = (now_ms + wait_ms).clamp(next, next + WHEEL as u64 - 1);
        wheel[(at % WHEEL as u64) as usize].push((sid, key, seq));
        self.due.set(self.due.get() + 1);
        self.count.set(self.count.get() + 1);
        true
    }

    /// Starts the task that stores copies past their deadline, if rows
    /// are deferred and it is not running.
    pub fn watch(shard: &Rc<Shard>) {
        if shard.defer.due.get() > 0 && !shard.defer.sweeping.replace(true) {
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
    let now_ms = now.saturating_duration_since(shard.started).as_millis() as u64;
    let mut expired: Vec<(SessionId, SessionKey, u64, u64)> = Vec::new();
    {
        let d = &shard.defer;
        let mut wheel = d.wheel.borrow_mut();
        let mut rows = d.rows.borrow_mut();
        let mut slots = 0;
        while d.due.get() > 0 && (all || d.next_ms.get() <= now_ms) && slots < WHEEL {
            let slot = &mut wheel[(d.next_ms.get() % WHEEL as u64) as usize];
            d.due.set(d.due.get() - slot.len());
            for (sid, key, seq) in slot.drain(..) {
                if let Some(t) = rows.remove(&(key, seq)) {
                    expired.push((sid, key, seq, t));
                }
            }
            d.next_ms.set(d.next_ms.get() + 1);
            slots += 1;
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
                .is_some_and(|s| s.store_deferred(shard, seq, now));
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
    while shard.defer.due.get() > 0 {
        glommio::timer::sleep(SWEEP_EVERY).await;
        store_due(&shard, false);
    }
    shard.defer.sweeping.set(false);
}

/// Slots of the deadline wheel (ms): more than the longest deadline.
const WHEEL: usize = 64;

const SWEEP_EVERY: Duration = Duration::from_millis(1);

/// The state a deferred row is written with.
pub(crate) fn row_state(packet_id: Option<ringmq_codec::PacketId>) -> OutboundState {
    match packet_id {
        Some(id) => OutboundState::AwaitingAck(id),
        None => OutboundState::Queued,
    }
}
