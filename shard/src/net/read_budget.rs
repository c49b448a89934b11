//! Bytes of packets still being received: a per-shard budget and a
//! per-packet deadline (issue 17 case 3, the partial-packet attack).
//!
//! A connection's read buffer holds the front of a packet that has not fully
//! arrived. Those bytes are counted against the shard's budget
//! (`--partial-packet-budget`); the buffer grows with the bytes that arrive
//! (the decoder reserves at most what is there), never with the length a
//! header announces.
//!
//! **A packet must complete within `--packet-timeout-ms` of its first
//! byte**, whatever the keep alive (0 included): else the connection closes
//! with `packet_timeout`. The deadline is what frees the memory of a peer
//! that trickles bytes forever.
//!
//! **Over budget**, a connection that holds a partial packet stops reading
//! (its bytes wait in the kernel's socket buffer, and TCP flow control slows
//! the sender) until the shard is under budget again or its packet deadline
//! closes it; a connection that holds nothing reads at most [`SMALL_READ`]
//! bytes at a time. So small packets, which complete within one read, keep
//! flowing for every client, and what the shard holds stays within the
//! budget plus [`SMALL_READ`] per connection. Pausing rather than closing:
//! closing the newest or the largest would punish a legitimate big publish
//! that happens to arrive during an attack; a paused one resumes as soon as
//! the attackers' deadlines free their bytes.
//!
//! Over TLS the share also counts the tail of a record still arriving (the
//! TLS layer's `incoming`, at most one record, RFC 8446 5.2): decrypted bytes
//! reach the MQTT buffer record by record, so without it a flood of cut
//! records would sit outside the budget, and a peer trickling one record
//! forever (keep alive 0) would never meet the packet deadline.
//!
//! Not counted: a CONNECT still arriving (the handshake's buffer). Over
//! budget it is read [`SMALL_READ`] bytes at a time, and the 10 s CONNECT
//! deadline bounds it.

use crate::shard::Shard;
use std::cell::{Cell, RefCell};
use std::task::Waker;

/// Most bytes a connection without a partial packet reads at once while the
/// shard is over budget.
pub const SMALL_READ: usize = 4096;

/// The shard's budget of partial-packet bytes.
#[derive(Debug)]
pub struct ReadBudget {
    limit: usize,
    held: Cell<usize>,
    /// Connections paused by the budget, woken when it frees.
    waiters: RefCell<Vec<Waker>>,
    /// Times `waiters` was drained: a paused connection queues its waker
    /// once per round, however often it is polled meanwhile.
    round: Cell<u32>,
}

impl ReadBudget {
    pub fn new(limit: usize) -> Self {
        ReadBudget {
            limit,
            held: Cell::new(0),
            waiters: RefCell::default(),
            round: Cell::new(1),
        }
    }

    /// Whether the shard holds its budget's worth of partial packets.
    #[inline]
    pub fn over(&self) -> bool {
        self.held.get() >= self.limit
    }

    /// One connection's share changed from `old` to `new` bytes; wakes the
    /// paused connections once the budget has room again.
    fn adjust(&self, shard: &Shard, old: usize, new: usize) {
        let held = self.held.get() - old + new;
        self.held.set(held);
        shard.stats.partial_bytes.set(held as u64);
        if new < old && held < self.limit {
            self.round.set(self.round.get().wrapping_add(1));
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            for w in waiters {
                w.wake();
            }
        }
    }
}

/// One connection's partial packet: its bytes in the shard's budget and the
/// poller time its first byte arrived. 16 bytes: it lives in every
/// connection's task (`docs/connection-memory.md`).
#[derive(Debug, Default)]
pub struct Partial {
    held: u32,
    /// The budget's round in which this connection queued its waker (0: never).
    queued: u32,
    /// Poller ms + 1 when the packet's first byte arrived (0: no packet),
    /// and [`PAUSED`].
    started: u64,
}

/// `Partial::started`'s top bit: reading is paused (counted once per pause).
/// Poller times are ms since the shard started, far below it.
const PAUSED: u64 = 1 << 63;

impl Partial {
    /// The read buffer now takes `len` bytes (its capacity: what is allocated
    /// counts, not only what arrived; 0 when empty); `decoded`: a packet
    /// completed in this round (the remainder is a new packet).
    #[inline]
    pub fn update(&mut self, shard: &Shard, len: usize, decoded: bool, now: u64) {
        let paused = self.started & PAUSED;
        let started = self.started & !PAUSED;
        if len == 0 {
            self.started = paused;
        } else if started == 0 || decoded {
            self.started = (now + 1) | paused;
        }
        if len != self.held as usize {
            shard.read_budget.adjust(shard, self.held as usize, len);
            self.held = len as u32;
        }
    }

    /// When the packet under way must be complete, poller ms.
    #[inline]
    pub fn deadline(&self, timeout_ms: u64) -> Option<u64> {
        let started = self.started & !PAUSED;
        (started != 0).then(|| started - 1 + timeout_ms)
    }

    /// How many bytes this connection may read now: 0 means paused (then
    /// `waker` is woken when the budget frees).
    #[inline]
    pub fn allowance(&mut self, shard: &Shard, waker: &Waker, full: usize) -> usize {
        let budget = &shard.read_budget;
        if !budget.over() {
            self.started &= !PAUSED;
            // No read takes the shard further past its budget than SMALL_READ.
            let room = budget.limit - budget.held.get();
            return full.min(room.max(SMALL_READ));
        }
        if self.held == 0 {
            return SMALL_READ.min(full);
        }
        if self.started & PAUSED == 0 {
            self.started |= PAUSED;
            shard.stats.reads_paused.inc();
        }
        if self.queued != budget.round.get() {
            self.queued = budget.round.get();
            budget.waiters.borrow_mut().push(waker.clone());
        }
        0
    }

    /// The connection closed: its bytes leave the budget.
    pub fn release(&mut self, shard: &Shard) {
        self.update(shard, 0, false, 0);
    }
}
