//! What the cores share (set up once, read-mostly) and what each core keeps to itself.
//!
//! [`Shared`] crosses threads: the plan, a start barrier, the start time, and the sent
//! counts each core reports once its publishers stop. Nothing in it is touched per
//! message except the per-core progress counters, written by their own core a few times
//! a second. [`CoreCtx`] is `!Send` and lives on one executor.

use crate::plan::Plan;
use crate::stats::CoreStats;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Counters one core publishes for the live progress line (cache-line padded).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct CoreProgress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// Cross-core state of one run.
#[derive(Debug)]
pub struct Shared {
    pub plan: Plan,
    /// Per subscriber: the sorted publishers it should hear from.
    pub matches: Vec<Vec<u32>>,
    pub addr: SocketAddr,
    pub cores: usize,
    pub barrier: Barrier,
    /// Publishing start on the payload clock, set by the barrier leader.
    pub t0_ns: AtomicU64,
    /// Cores whose publishers have all finished.
    pub pubs_done: AtomicUsize,
    /// Messages sent per publisher, filled in by each core when its publishers finish.
    pub sent_by_publisher: Mutex<Vec<u64>>,
    pub progress: Vec<CoreProgress>,
    /// Distinguishes this run's client ids from other runs' (empty with --no-clean-start).
    pub tag: String,
}

impl Shared {
    pub fn new(plan: Plan, addr: SocketAddr, cores: usize) -> Shared {
        let matches = plan.matches();
        let npubs = plan.pub_topics.len();
        let tag = if plan.broker.no_clean_start {
            String::new()
        } else {
            format!("{}-", std::process::id() % 100_000)
        };
        Shared {
            plan,
            matches,
            addr,
            cores,
            barrier: Barrier::new(cores),
            t0_ns: AtomicU64::new(0),
            pubs_done: AtomicUsize::new(0),
            sent_by_publisher: Mutex::new(vec![0; npubs]),
            progress: (0..cores).map(|_| CoreProgress::default()).collect(),
            tag,
        }
    }

    pub fn client_id(&self, role: char, index: usize) -> String {
        format!(
            "{}{}{role}{index}",
            self.plan.broker.client_prefix, self.tag
        )
    }

    pub fn t0(&self) -> u64 {
        self.t0_ns.load(Ordering::Acquire)
    }
}

/// Per-core state shared by the tasks of one executor.
pub struct CoreCtx {
    pub shared: Arc<Shared>,
    pub core: usize,
    pub stats: RefCell<CoreStats>,
    pub stop: Stop,
    /// Start of the measured window (end of warm-up), payload clock.
    pub measure_start_ns: Cell<u64>,
    /// End of publishing (u64::MAX with --count), payload clock.
    pub pub_end_ns: Cell<u64>,
}

impl CoreCtx {
    pub fn new(shared: Arc<Shared>, core: usize) -> Rc<CoreCtx> {
        Rc::new(CoreCtx {
            shared,
            core,
            stats: RefCell::new(CoreStats::default()),
            stop: Stop::default(),
            measure_start_ns: Cell::new(0),
            pub_end_ns: Cell::new(u64::MAX),
        })
    }

    /// Copies the counters into this core's progress slot.
    pub fn publish_progress(&self) {
        let s = self.stats.borrow();
        let p = &self.shared.progress[self.core];
        p.sent.store(s.sent, Ordering::Relaxed);
        p.received.store(s.received, Ordering::Relaxed);
    }
}

/// A core-local stop signal that many tasks can wait on.
#[derive(Default)]
pub struct Stop {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Stop {
    /// Registers a waiter slot.
    pub fn slot(&self) -> usize {
        let mut w = self.wakers.borrow_mut();
        w.push(None);
        w.len() - 1
    }

    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once [`Stop::fire`] has been called.
    pub fn wait(&self, slot: usize) -> StopWait<'_> {
        StopWait { stop: self, slot }
    }
}

pub struct StopWait<'a> {
    stop: &'a Stop,
    slot: usize,
}

impl Future for StopWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stop.fired.get() {
            return Poll::Ready(());
        }
        self.stop.wakers.borrow_mut()[self.slot] = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls `cond` every `every` until it holds or `timeout` passes; true if it held.
pub async fn wait_until(
    mut cond: impl FnMut() -> bool,
    every: Duration,
    timeout: Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(every).await;
    }
}
