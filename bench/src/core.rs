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
    pub target: crate::transport::Target,
    /// Where subscribers connect (`--sub-port`; else `target`).
    pub sub_target: crate::transport::Target,
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
    /// Per publisher: its probe subscriber (the last one matching it), if any.
    pub probe_of: Vec<Option<u32>>,
    /// Per publisher: 1 + the highest sequence number its probe has seen (0 = none).
    /// Written only by the probe's core, read by the publisher's: the closed-loop window.
    pub probe_seq: Vec<AtomicU64>,
    /// Per publisher: messages it may have ahead of its probe (0 = open loop).
    pub window_of: Vec<u64>,
}

impl Shared {
    pub fn new(
        plan: Plan,
        target: crate::transport::Target,
        sub_target: crate::transport::Target,
        cores: usize,
    ) -> Shared {
        let matches = plan.matches();
        let npubs = plan.pub_topics.len();
        let mut probe_of = vec![None; npubs];
        let mut fanout = vec![0usize; npubs];
        for (sub, pubs) in matches.iter().enumerate() {
            for &p in pubs {
                probe_of[p as usize] = Some(sub as u32);
                fanout[p as usize] += 1;
            }
        }
        let window_of = fanout
            .iter()
            .zip(&probe_of)
            .map(|(&f, probe)| match probe {
                None => 0, // nobody hears it: nothing to pace against
                Some(sub) => plan.load.window.unwrap_or_else(|| {
                    let frame = plan.load.payload + 8 + plan.sub_filters[*sub as usize].len();
                    crate::plan::auto_window(f, matches[*sub as usize].len(), frame)
                }),
            })
            .collect();
        let tag = if plan.broker.no_clean_start {
            String::new()
        } else {
            format!("{}-", std::process::id() % 100_000)
        };
        Shared {
            plan,
            matches,
            target,
            sub_target,
            cores,
            barrier: Barrier::new(cores),
            t0_ns: AtomicU64::new(0),
            pubs_done: AtomicUsize::new(0),
            sent_by_publisher: Mutex::new(vec![0; npubs]),
            progress: (0..cores).map(|_| CoreProgress::default()).collect(),
            tag,
            probe_of,
            probe_seq: (0..npubs).map(|_| AtomicU64::new(0)).collect(),
            window_of,
        }
    }

    pub fn client_id(&self, role: char, index: usize) -> String {
        format!(
            "{}{}{role}{index}",
            self.plan.broker.client_prefix, self.tag
        )
    }

    /// Publishers that subscriber `sub` is the probe for (sorted).
    pub fn probes_of(&self, sub: usize) -> Vec<u32> {
        self.matches[sub]
            .iter()
            .copied()
            .filter(|&p| self.probe_of[p as usize] == Some(sub as u32))
            .collect()
    }

    /// `SO_RCVLOWAT` for subscriber `sub` (1 = none): only for QoS 0 at unlimited rate
    /// (QoS 1/2 deliveries wait for acknowledgements, and latency at a fixed rate must
    /// not wait for a batch), and for a probe at most half of the bytes its publishers'
    /// windows let it have queued, so the closed loop cannot stall.
    pub fn rcvlowat_of(&self, sub: usize) -> usize {
        let load = &self.plan.load;
        if load.rcvlowat <= 1 || load.rate > 0.0 || load.qos != ringmq_codec::QoS::AtMostOnce {
            return 1;
        }
        let frame = load.payload + 16 + self.plan.sub_filters[sub].len();
        self.probe_capped(sub, frame, load.rcvlowat)
    }

    /// `SO_RCVLOWAT` for a QoS 1 subscriber at unlimited rate driven by the core's loop
    /// (`crate::subscriber::PolledSub`, which notices a stall and drops it; 1 = none):
    /// [`QOS1_LOWAT_MSGS`] deliveries, so each read and each acknowledgement write
    /// carries several messages. A broker keeps sending while fewer than its in-flight
    /// limit are unacknowledged, so this many unread ones always come while it has more
    /// queued; one whose limit is lower is caught by the stall check.
    pub fn qos1_lowat_of(&self, sub: usize) -> usize {
        let load = &self.plan.load;
        if load.rcvlowat <= 1 || load.rate > 0.0 || load.qos != ringmq_codec::QoS::AtLeastOnce {
            return 1;
        }
        // The smallest QoS 1 PUBLISH frame of this subscription: fixed header (2 bytes
        // at least), topic length and packet id (2 + 2), topic, payload.
        let frame = load.payload + 6 + self.plan.sub_filters[sub].len();
        self.probe_capped(sub, frame, load.rcvlowat.min(QOS1_LOWAT_MSGS * frame))
    }

    /// The smallest QoS 0 PUBLISH frame subscriber `sub` can receive from the publishers
    /// it hears (fixed header, topic length, topic, MQTT 5 property length, payload):
    /// with kernel receive timestamps it reads at most this much at a time, so each read
    /// ends with the segment that carried the frame it completes
    /// (`crate::conn::Conn::enable_rx_stamps`).
    pub fn min_frame_of(&self, sub: usize) -> usize {
        let load = &self.plan.load;
        let props = usize::from(self.plan.broker.mqtt == crate::cli::MqttVersion::V5);
        self.matches[sub]
            .iter()
            .map(|&p| {
                let rem = 2 + self.plan.pub_topics[p as usize].len() + props + load.payload;
                let varint = match rem {
                    0..=127 => 1,
                    128..=16_383 => 2,
                    16_384..=2_097_151 => 3,
                    _ => 4,
                };
                1 + varint + rem
            })
            .min()
            .unwrap_or(0)
    }

    /// `want` bytes, for a probe at most half of what its publishers' windows let it
    /// have queued, so the closed loop cannot stall.
    fn probe_capped(&self, sub: usize, frame: usize, want: usize) -> usize {
        let mut cap = usize::MAX;
        let probed: Vec<u32> = self.probes_of(sub);
        if !probed.is_empty() && probed.iter().all(|&p| self.window_of[p as usize] > 0) {
            let queued: u64 = probed.iter().map(|&p| self.window_of[p as usize]).sum();
            cap = (queued as usize).saturating_mul(frame) / 2;
        }
        want.min(cap).max(1)
    }

    pub fn t0(&self) -> u64 {
        self.t0_ns.load(Ordering::Acquire)
    }
}

/// Deliveries a QoS 1 subscriber at unlimited rate lets queue before it reads
/// ([`Shared::qos1_lowat_of`]): below the in-flight limit of every broker we compare
/// with (Mosquitto 20 by default, ringmq and FlashMQ far more).
pub const QOS1_LOWAT_MSGS: usize = 4;

/// Per-core state shared by the tasks of one executor.
pub struct CoreCtx {
    pub shared: Arc<Shared>,
    pub core: usize,
    pub stats: RefCell<CoreStats>,
    pub stop: Stop,
    /// Fired every keep-alive/2: subscribers send PINGREQ.
    pub ping: Signal,
    /// Fired once every core's publishers have stopped: subscribers drop their
    /// `SO_RCVLOWAT` batching so the last bytes are read at once.
    pub pubs_finished: Signal,
    /// Start of the measured window (end of warm-up), payload clock.
    pub measure_start_ns: Cell<u64>,
    /// End of publishing (u64::MAX with --count), payload clock.
    pub pub_end_ns: Cell<u64>,
    /// Wakers of this core's publishers waiting on their window, by publisher index.
    pub window_waiters: RefCell<std::collections::HashMap<u32, Waker>>,
}

impl CoreCtx {
    pub fn new(shared: Arc<Shared>, core: usize) -> Rc<CoreCtx> {
        Rc::new(CoreCtx {
            shared,
            core,
            stats: RefCell::new(CoreStats::default()),
            stop: Stop::default(),
            ping: Signal::default(),
            pubs_finished: Signal::default(),
            measure_start_ns: Cell::new(0),
            pub_end_ns: Cell::new(u64::MAX),
            window_waiters: RefCell::new(std::collections::HashMap::new()),
        })
    }

    /// A probe saw publisher `p` up to `seq_end` (exclusive): publish it and wake the
    /// publisher if it waits on this core.
    pub fn probe_advanced(&self, p: u32, seq_end: u64) {
        self.shared.probe_seq[p as usize].store(seq_end, Ordering::Relaxed);
        if let Some(w) = self.window_waiters.borrow_mut().remove(&p) {
            w.wake();
        }
    }

    /// Copies the counters into this core's progress slot.
    pub fn publish_progress(&self) {
        let s = self.stats.borrow();
        let p = &self.shared.progress[self.core];
        p.sent.store(s.sent, Ordering::Relaxed);
        p.received.store(s.received, Ordering::Relaxed);
    }
}

/// A core-local broadcast signal many tasks can wait on (stop, keep-alive rounds).
/// Each waiter has a slot, so waiting again does not grow anything.
#[derive(Default)]
pub struct Signal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

/// The stop signal: fired once when a core's subscribers should finish.
pub type Stop = Signal;

impl Signal {
    /// Registers a waiter slot.
    pub fn slot(&self) -> usize {
        let mut w = self.wakers.borrow_mut();
        w.push(None);
        w.len() - 1
    }

    pub fn fire(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    /// How many times it fired.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn is_fired(&self) -> bool {
        self.generation.get() > 0
    }

    /// Resolves once the signal fires (again) after generation `seen`.
    pub fn wait(&self, slot: usize, seen: u64) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            slot,
            seen,
        }
    }
}

pub struct SignalWait<'a> {
    signal: &'a Signal,
    slot: usize,
    seen: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() > self.seen {
            return Poll::Ready(());
        }
        let mut w = self.signal.wakers.borrow_mut();
        let slot = &mut w[self.slot];
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
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
