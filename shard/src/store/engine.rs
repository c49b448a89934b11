//! Group commit on the shard: ops accumulate in the pending batch; one commit
//! is in flight at a time (glommio's blocking pool); ops arriving meanwhile
//! form the next batch. Every op returns a [`Ticket`] that resolves when the
//! batch holding it is durable (or failed).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use heed::{Env, WithoutTls};

use super::batch::{self, Batch, MapPolicy, OpKind};
use super::error::StoreError;
use super::layout::DirLock;
use crate::config::Durability;

/// Completion of one batch, shared by the tickets of its ops.
#[derive(Default)]
struct Slot {
    result: RefCell<Option<Result<(), StoreError>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Slot {
    fn complete(&self, r: Result<(), StoreError>) {
        *self.result.borrow_mut() = Some(r);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Resolves when the batch holding the op is durable. Dropping it is fine
/// (`Batch` mode callers usually do): the op is committed anyway.
#[must_use = "await it before acknowledging (Durability::Sync), or drop it explicitly"]
pub struct Ticket(Option<Rc<Slot>>);

impl Ticket {
    /// An already durable ticket (memory-only store, nothing pending).
    pub fn ready() -> Ticket {
        Ticket(None)
    }

    /// Lets the write go on without waiting for it (`Batch` mode, or ops
    /// whose durability nothing waits on). The op is committed all the same.
    pub fn detach(self) {}

    /// True once the batch is committed (or failed).
    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.result.borrow().is_some())
    }
}

impl Future for Ticket {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(slot) = &self.0 else {
            return Poll::Ready(Ok(()));
        };
        if let Some(r) = slot.result.borrow().as_ref() {
            return Poll::Ready(r.clone());
        }
        let mut wakers = slot.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Counters of one shard's store (read by `$SYS` and the admin socket).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Ops committed (sum of batch sizes).
    pub ops: u64,
    /// Ops that never reached LMDB: outbound rows put and deleted before
    /// their commit (each cancelled put, and each delete found unnecessary).
    pub cancelled: u64,
    /// Largest batch committed, ops.
    pub max_batch: u64,
    /// Bytes of keys and values committed.
    pub bytes: u64,
    /// Time spent in commits (blocking thread), total.
    pub commit_time: Duration,
    /// Commits that failed (any error).
    pub failed_commits: u64,
    /// Sessions deleted by expiry purges.
    pub purged_sessions: u64,
    /// Times the LMDB map was grown.
    pub map_resizes: u64,
    /// Commits by latency: `commit_buckets[i]` counts commits that took at
    /// most `COMMIT_BUCKETS_US[i]` microseconds (cumulative, Prometheus style).
    pub commit_buckets: [u64; COMMIT_BUCKETS_US.len()],
}

/// Upper bounds of the commit latency buckets, microseconds.
pub const COMMIT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

pub(crate) struct Backend {
    pub env: Env<WithoutTls>,
    pub map: MapPolicy,
    /// Keeps the data dir locked while any shard's store lives.
    pub _lock: Arc<DirLock>,
}

pub(crate) struct Engine {
    backend: Option<Backend>,
    durability: Durability,
    pending: RefCell<Batch>,
    spare: Cell<Option<Batch>>,
    pending_slot: RefCell<Rc<Slot>>,
    inflight_slot: RefCell<Option<Rc<Slot>>>,
    committing: Cell<bool>,
    no_space: Cell<bool>,
    stats: Cell<StoreStats>,
    /// How long a commit may wait for the acknowledgements of rows whose
    /// message is out (`ack_wait`); adapts between `ACK_WAIT_MIN` and the
    /// recent commit time.
    ack_wait: Cell<Duration>,
    /// Recent commit time (moving average).
    commit_avg: Cell<Duration>,
    /// The commit loop, waiting for `awaiting_marked` to reach zero.
    ack_waker: RefCell<Option<Waker>>,
}

/// Bounds of the wait for acknowledgements before a commit.
const ACK_WAIT_MIN: Duration = Duration::from_micros(20);
const ACK_WAIT_MAX: Duration = Duration::from_millis(1);

impl Engine {
    pub fn new(backend: Option<Backend>, durability: Durability) -> Rc<Engine> {
        let backend = if durability == Durability::None {
            None
        } else {
            backend
        };
        Rc::new(Engine {
            backend,
            durability,
            pending: RefCell::default(),
            spare: Cell::new(None),
            pending_slot: RefCell::default(),
            inflight_slot: RefCell::new(None),
            committing: Cell::new(false),
            no_space: Cell::new(false),
            stats: Cell::default(),
            ack_wait: Cell::new(Duration::from_micros(200)),
            commit_avg: Cell::new(Duration::from_micros(200)),
            ack_waker: RefCell::new(None),
        })
    }

    pub fn is_persistent(&self) -> bool {
        self.backend.is_some()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn no_space(&self) -> bool {
        self.no_space.get()
    }

    pub fn stats(&self) -> StoreStats {
        self.stats.get()
    }

    /// True while the commit loop runs (it holds the environment open).
    pub fn is_committing(&self) -> bool {
        self.committing.get()
    }

    pub fn pending_ops(&self) -> usize {
        self.pending.borrow().ops.len()
    }

    /// Appends one op to the pending batch and makes sure a commit will run.
    pub fn push(
        self: &Rc<Self>,
        kind: OpKind,
        key: impl FnOnce(&mut Vec<u8>),
        val: impl FnOnce(&mut Vec<u8>),
    ) -> Ticket {
        if self.backend.is_none() {
            return Ticket::ready();
        }
        self.pending.borrow_mut().push(kind, key, val);
        let slot = self.pending_slot.borrow().clone();
        self.schedule();
        Ticket(Some(slot))
    }

    /// Appends a put of outbound row `row` = (session, seq); `how`: see
    /// [`Batch::push_row`] (fresh, sent, optional).
    pub fn push_row(
        self: &Rc<Self>,
        row: (u64, u64),
        how: (bool, bool, bool),
        key: impl FnOnce(&mut Vec<u8>),
        val: impl FnOnce(&mut Vec<u8>),
    ) -> Ticket {
        if self.backend.is_none() {
            return Ticket::ready();
        }
        self.pending.borrow_mut().push_row(row, how, key, val);
        let slot = self.pending_slot.borrow().clone();
        self.schedule();
        Ticket(Some(slot))
    }

    /// Drops the pending puts of outbound row `row`; true when it never
    /// reached the disk, so its delete can be skipped as well.
    pub fn cancel_row(&self, row: (u64, u64)) -> bool {
        if self.backend.is_none() {
            return false;
        }
        let mut pending = self.pending.borrow_mut();
        let fresh = pending.cancel_row(row);
        if pending.awaiting_marked == 0 {
            if let Some(w) = self.ack_waker.borrow_mut().take() {
                w.wake();
            }
        }
        fresh
    }

    /// Sync mode: before a commit, waits (up to `ack_wait`) for the
    /// acknowledgements of the QoS 1 messages already out whose rows are
    /// pending. Each one that arrives cancels its row's put and delete, so
    /// a subscriber keeping up costs the store nothing; a batch left with
    /// no op at all commits at once without touching LMDB.
    async fn await_acks(&self) {
        let budget = self.ack_wait.get();
        {
            let mut pending = self.pending.borrow_mut();
            if pending.awaiting == 0 {
                return;
            }
            pending.mark();
        }
        let settled = futures_lite::future::or(
            async {
                std::future::poll_fn(|cx| {
                    if self.pending.borrow().awaiting_marked == 0 {
                        return Poll::Ready(true);
                    }
                    *self.ack_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await
            },
            async {
                glommio::timer::sleep(budget).await;
                false
            },
        )
        .await;
        self.ack_waker.borrow_mut().take();
        // Acknowledgements that keep missing the budget (a client that does
        // not answer, or whose PUBLISH waits behind this very commit) shrink
        // it; prompt ones let it grow back to about one commit time.
        let next = if settled {
            (budget * 2).min(self.commit_avg.get())
        } else {
            budget / 2
        };
        self.ack_wait.set(next.clamp(ACK_WAIT_MIN, ACK_WAIT_MAX));
    }

    /// A ticket for everything pushed so far.
    pub fn flush(self: &Rc<Self>) -> Ticket {
        if !self.pending.borrow().is_empty() {
            return Ticket(Some(self.pending_slot.borrow().clone()));
        }
        Ticket(self.inflight_slot.borrow().clone())
    }

    fn schedule(self: &Rc<Self>) {
        if self.committing.replace(true) {
            return;
        }
        let this = self.clone();
        glommio::spawn_local(async move { this.drive().await }).detach();
    }

    /// The commit loop: runs while there is work, one commit at a time.
    async fn drive(self: Rc<Self>) {
        let Some(backend) = &self.backend else {
            return;
        };
        loop {
            if let Durability::Batch { interval_ms } = self.durability {
                glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
            } else {
                // glommio runs a spawned task at once: step aside so the ops
                // the spawning task pushes in this same tick join the batch.
                futures_lite::future::yield_now().await;
                self.await_acks().await;
            }
            if self.pending.borrow().is_empty() {
                self.committing.set(false);
                return;
            }
            let spare = self.spare.take().unwrap_or_default();
            let batch = self.pending.replace(spare);
            let slot = self.pending_slot.replace(Rc::default());
            *self.inflight_slot.borrow_mut() = Some(slot.clone());
            let (mut batch, result) = if batch.live() == 0 {
                // Every op was cancelled (rows put and deleted before their
                // commit): nothing to write, and everything before is durable.
                self.count_cancelled(&batch);
                (batch, Ok(batch::CommitInfo::default()))
            } else {
                let (env, map) = (backend.env.clone(), backend.map);
                let (batch, result) = glommio::executor()
                    .spawn_blocking(move || {
                        let mut batch = batch;
                        let r = batch::commit(&env, &mut batch, map);
                        (batch, r)
                    })
                    .await;
                self.account(&batch, &result);
                (batch, result)
            };
            batch.clear();
            self.spare.set(Some(batch));
            *self.inflight_slot.borrow_mut() = None;
            slot.complete(result.map(|_| ()));
        }
    }

    fn count_cancelled(&self, batch: &Batch) {
        let mut s = self.stats.get();
        s.cancelled += batch.cancelled;
        self.stats.set(s);
    }

    fn account(&self, batch: &Batch, result: &Result<batch::CommitInfo, StoreError>) {
        self.count_cancelled(batch);
        let mut s = self.stats.get();
        match result {
            Ok(info) => {
                let live = batch.live() as u64;
                s.commits += 1;
                s.ops += live;
                s.max_batch = s.max_batch.max(live);
                s.bytes += batch.buf.len() as u64;
                s.commit_time += info.elapsed;
                let avg = self.commit_avg.get();
                self.commit_avg.set((avg * 7 + info.elapsed) / 8);
                let us = info.elapsed.as_micros() as u64;
                for (b, &le) in s.commit_buckets.iter_mut().zip(&COMMIT_BUCKETS_US) {
                    *b += u64::from(us <= le);
                }
                s.purged_sessions += info.purged;
                s.map_resizes += u64::from(info.resized_to.is_some());
                if self.no_space.replace(false) {
                    tracing::warn!("store: commits succeed again, QoS 1/2 accepted");
                }
            }
            Err(e) => {
                s.failed_commits += 1;
                if e.is_no_space() && !self.no_space.replace(true) {
                    tracing::error!("store: {e}");
                } else if !e.is_no_space() {
                    tracing::error!("store: commit failed: {e}");
                }
            }
        }
        self.stats.set(s);
    }
}
