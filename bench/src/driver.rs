//! The measured run of one core's plain-TCP clients in one loop, without a task per
//! connection: publishers due are stepped, then the core waits on its epoll set
//! (`crate::poller`) until the next publisher is due, and each socket with an event is
//! read and processed in place.
//!
//! Why not glommio tasks: every wake-up of a glommio executor costs several
//! `io_uring_enter` (its preemption timer cancelled and re-armed on each loop, its
//! rings linked before sleeping), and its streams arm an io_uring poll per socket and
//! read; at fixed rates, where each message is its own wake-up, that was a quarter of
//! the generator's time and the kernel's loopback work most of the rest
//! (docs/benchmarking.md, *Generator cost*). Here a wake-up is one `epoll_pwait2`.
//!
//! At a fixed rate (QoS 0) subscribers sit on a second epoll set that is only looked at
//! (timeout 0) once per turn, so a delivery does not wake the loop: the loop wakes on the
//! publishers' pace grid and reads what has arrived then, and each delivery's latency
//! ends at the kernel's receive timestamp of its segment (`Conn::enable_rx_stamps`), not
//! at the read. At 50 x 1000 msg/s that is 4k wake-ups a second instead of 40k, which
//! were a third of the generator's CPU (docs/benchmarking.md, sixth pass).
//!
//! The other tasks of the core (progress and keep-alive ticker, the CPU sampler, the
//! end-of-run checks) still run on glommio: the loop waits at most
//! [`HOUSEKEEPING_NS`] at a time and yields to the executor at least that often, so
//! their timers fire at most about that late. Keep-alive and end-of-publishing signals
//! are read from the core's state each turn.

use crate::conn::Conn;
use crate::core::CoreCtx;
use crate::payload::now_ns;
use crate::poller::Poller;
use crate::publisher::Polled;
use crate::subscriber::PolledSub;
use std::rc::Rc;

/// Longest wait on the epoll set, and the longest the other tasks of the executor wait
/// for a turn, ns.
pub const HOUSEKEEPING_NS: u64 = 1_000_000;

#[derive(Clone, Copy)]
enum Who {
    Sub(usize),
    Pub(usize),
}

/// One core's clients for the measured run.
pub struct Driver<'a> {
    ctx: &'a CoreCtx,
    poller: Rc<Poller>,
    subs: Vec<PolledSub>,
    pubs: Vec<Polled<'a>>,
    /// By poller key.
    who: Vec<Option<Who>>,
    keys: Vec<u32>,
    /// Subscribers read once per turn, not woken ([`Driver::with_ticked`]): their epoll
    /// set, and subscriber index by its keys.
    ticked: Option<(Rc<Poller>, Vec<Option<usize>>)>,
    pings_seen: u64,
    pubs_finished_seen: bool,
}

impl<'a> Driver<'a> {
    pub fn new(ctx: &'a CoreCtx, poller: Rc<Poller>) -> Driver<'a> {
        Driver {
            ctx,
            poller,
            subs: Vec::new(),
            pubs: Vec::new(),
            who: Vec::new(),
            keys: Vec::with_capacity(256),
            ticked: None,
            pings_seen: ctx.ping.generation(),
            pubs_finished_seen: false,
        }
    }

    /// Subscribers on `poller` (not the driver's own set) are read once per turn of the
    /// loop instead of waking it.
    pub fn with_ticked(mut self, poller: Rc<Poller>) -> Self {
        self.ticked = Some((poller, Vec::new()));
        self
    }

    fn register(&mut self, key: Option<u32>, w: Who) {
        let k = key.expect("a polled connection") as usize;
        if self.who.len() <= k {
            self.who.resize(k + 1, None);
        }
        self.who[k] = Some(w);
    }

    pub fn add_sub(&mut self, s: PolledSub) {
        let i = self.subs.len();
        match (&mut self.ticked, s.conn.poller()) {
            (Some((tp, by_key)), Some(p)) if Rc::ptr_eq(tp, p) => {
                let k = s.conn.poll_key().expect("a polled connection") as usize;
                if by_key.len() <= k {
                    by_key.resize(k + 1, None);
                }
                by_key[k] = Some(i);
            }
            _ => self.register(s.conn.poll_key(), Who::Sub(i)),
        }
        self.subs.push(s);
    }

    /// Reads the subscribers of the ticked set that have bytes waiting (one look, no wait).
    fn read_ticked(&mut self) {
        let Some((tp, by_key)) = &self.ticked else {
            return;
        };
        self.keys.clear();
        if let Err(e) = tp.wait(0, &mut self.keys) {
            self.ctx.stats.borrow_mut().error(format!("epoll: {e}"));
            return;
        }
        for &k in &self.keys {
            if let Some(i) = by_key.get(k as usize).copied().flatten() {
                self.subs[i].on_event(self.ctx);
            }
        }
    }

    pub fn add_pub(&mut self, p: Polled<'a>) {
        self.register(p.conn.poll_key(), Who::Pub(self.pubs.len()));
        self.pubs.push(p);
    }

    /// Runs until every publisher has finished (sent, drained its acknowledgements).
    pub async fn publish(&mut self) {
        self.run(|d| d.pubs.iter().all(|p| p.done)).await;
    }

    /// Runs until the core's stop signal.
    pub async fn until_stopped(&mut self) {
        self.run(|d| d.ctx.stop.is_fired()).await;
    }

    async fn run(&mut self, done: impl Fn(&Self) -> bool) {
        let ctx = self.ctx;
        let mut last_yield = now_ns();
        loop {
            let now = now_ns();
            let mut next = now + HOUSEKEEPING_NS;
            for p in &mut self.pubs {
                if !p.done && (p.wake <= now || p.probe_moved()) {
                    p.step(ctx, now);
                }
                if !p.done {
                    next = next.min(p.wake);
                }
            }
            self.read_ticked();
            self.signals();
            if done(self) {
                return;
            }
            self.keys.clear();
            let timeout = next.saturating_sub(now_ns());
            if let Err(e) = self.poller.wait(timeout, &mut self.keys) {
                ctx.stats.borrow_mut().error(format!("epoll: {e}"));
                return;
            }
            for &k in &self.keys {
                match self.who.get(k as usize).copied().flatten() {
                    Some(Who::Sub(i)) => self.subs[i].on_event(ctx),
                    Some(Who::Pub(i)) => self.pubs[i].step(ctx, now_ns()),
                    None => {}
                }
            }
            let now = now_ns();
            if now.saturating_sub(last_yield) >= HOUSEKEEPING_NS {
                for s in &mut self.subs {
                    s.check_stall(ctx, now);
                }
                // Back to the executor: timers fire, the other tasks run, then this.
                glommio::executor().yield_task_queue_now().await;
                last_yield = now_ns();
            }
        }
    }

    /// Keep-alive rounds and the end of publishing, signalled by the core's other tasks.
    fn signals(&mut self) {
        let ctx = self.ctx;
        let g = ctx.ping.generation();
        if g != self.pings_seen {
            self.pings_seen = g;
            for s in &mut self.subs {
                s.ping(ctx);
            }
        }
        if !self.pubs_finished_seen && ctx.pubs_finished.is_fired() {
            self.pubs_finished_seen = true;
            for s in &mut self.subs {
                s.pubs_finished(ctx);
            }
        }
    }

    /// Disconnects the publishers (after [`Driver::publish`]).
    pub async fn disconnect_pubs(&mut self) {
        for p in &mut self.pubs {
            p.conn.disconnect().await;
        }
    }

    /// Reads what is left, then disconnects the subscribers.
    pub async fn finish(mut self) {
        let ctx = self.ctx;
        for s in &mut self.subs {
            s.on_event(ctx);
        }
        for s in &mut self.subs {
            s.conn.disconnect().await;
        }
    }

    /// The clients of a core, if every one of them is plain TCP on the poller.
    pub fn conns_polled<'c>(conns: impl IntoIterator<Item = &'c Conn>) -> bool {
        conns.into_iter().all(|c| c.poll_key().is_some())
    }
}
