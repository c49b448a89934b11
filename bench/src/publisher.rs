//! One publisher connection: stamps messages into a once-encoded template, at a fixed
//! rate per second or as fast as the socket takes them, with a QoS 1/2 window.

use crate::conn::{AckKind, Conn};
use crate::core::CoreCtx;
use crate::payload::{now_ns, Template};
use futures_lite::future::or;
use glommio::timer::Timer;
use ringmq_codec::{Packet, QoS};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Keep about this many bytes queued for the socket.
const WBUF_TARGET: usize = 64 * 1024;
/// Rate-limited publishers without a pace grid (`--pace-slot-us 0`) wake at most this
/// often and send what is due.
const MIN_TICK_NS: u64 = 1_000_000;

enum Wake {
    Io(io::Result<()>),
    Tick,
    End,
}

/// State of one publisher's send loop.
struct Sender {
    index: u32,
    tpl: Template,
    seq: u64,
    next_id: u16,
    inflight: u32,
    window: u32,
    measured: u64,
}

impl Sender {
    /// Appends `n` messages, each stamped with its scheduled send time ([`Pace::stamp`]).
    fn append(&mut self, conn: &mut Conn, n: u64, now: u64, pace: &Pace<'_>, measuring: bool) {
        for _ in 0..n {
            let stamp = pace.stamp(self.seq, now);
            self.tpl
                .append(&mut conn.wbuf, self.next_id, self.seq, stamp);
            self.seq += 1;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        }
        if self.tpl_qos_acked() {
            self.inflight += n as u32;
        }
        if measuring {
            self.measured += n;
        }
    }

    fn tpl_qos_acked(&self) -> bool {
        self.window != u32::MAX
    }

    /// Handles acknowledgements already read.
    fn on_packets(&mut self, conn: &mut Conn) -> io::Result<()> {
        loop {
            // Fast path: acknowledgements read in place.
            while let Some((kind, id, reason)) = conn.take_ack() {
                if kind == 5 && reason < 0x80 {
                    conn.queue_ack(AckKind::PubRel, id)?;
                } else {
                    self.inflight = self.inflight.saturating_sub(1);
                }
            }
            let Some(p) = conn.next_packet()? else {
                return Ok(());
            };
            match p {
                Packet::PubAck(r) | Packet::PubComp(r) => {
                    self.inflight = self.inflight.saturating_sub(1);
                    let _ = r;
                }
                Packet::PubRec(r) => {
                    if (r.reason as u8) < 0x80 {
                        conn.queue_ack(AckKind::PubRel, r.packet_id)?;
                    } else {
                        self.inflight = self.inflight.saturating_sub(1);
                    }
                }
                Packet::Disconnect(d) => {
                    return Err(io::Error::other(format!(
                        "DISCONNECT from broker: {:?}",
                        d.reason
                    )))
                }
                _ => {}
            }
        }
    }
}

/// Publisher `index`'s state on `conn`: its template and window, and whether its socket
/// batches acknowledgements (`SO_RCVLOWAT`, set here). None after recording an error.
fn prepare(ctx: &CoreCtx, index: u32, conn: &Conn, window: u16) -> Option<(Sender, bool)> {
    let plan = &ctx.shared.plan;
    let load = &plan.load;
    let tpl = match Template::new(
        conn.version,
        &plan.pub_topics[index as usize],
        load.qos,
        false,
        load.payload,
        index,
    ) {
        Ok(t) => t,
        Err(e) => {
            ctx.stats.borrow_mut().error(e);
            return None;
        }
    };
    let s = Sender {
        index,
        tpl,
        seq: 0,
        next_id: 1,
        inflight: 0,
        window: if load.qos == QoS::AtMostOnce {
            u32::MAX
        } else {
            u32::from(window.max(1))
        },
        measured: 0,
    };
    let ack_lowat = s.window != u32::MAX && load.rate == 0.0 && s.window >= 8;
    if ack_lowat {
        // Woken once a quarter of the window's acknowledgements (4 bytes each at least)
        // is queued, the batch `Pace::quota` refills. No stall: the publisher waits for
        // acknowledgements only with more than three quarters of the window outstanding,
        // and each outstanding message still brings at least 4 bytes.
        if let Err(e) = conn.set_rcvlowat(4 * (s.window / 4) as usize) {
            ctx.stats.borrow_mut().error(format!("SO_RCVLOWAT: {e}"));
        }
    }
    Some((s, ack_lowat))
}

/// Adds a finished publisher's counts to the core's.
fn record(ctx: &CoreCtx, s: &Sender) {
    let mut st = ctx.stats.borrow_mut();
    st.sent_measured += s.measured;
    st.sent_by_publisher.push((s.index, s.seq));
}

/// Runs publisher `index` on `conn` until the duration or count is reached, then waits
/// (up to the drain time) for its QoS 1/2 acknowledgements. Returns messages sent.
pub async fn run(ctx: Rc<CoreCtx>, index: u32, mut conn: Conn, window: u16) -> u64 {
    let Some((mut s, ack_lowat)) = prepare(&ctx, index, &conn, window) else {
        return 0;
    };
    if let Err(e) = send_loop(&ctx, &mut conn, &mut s, ack_lowat).await {
        ctx.stats
            .borrow_mut()
            .error(format!("publisher {index}: {e}"));
    }
    record(&ctx, &s);
    conn.disconnect().await;
    s.seq
}

/// A publisher stepped by the core's driver (`crate::driver`) instead of a task: the
/// same pacing, window and drain as [`run`], one [`Polled::step`] per event or due time.
pub struct Polled<'a> {
    s: Sender,
    pace: Pace<'a>,
    pub conn: Conn,
    ack_lowat: bool,
    /// When to step it again without an event (u64::MAX: on an event only).
    pub wake: u64,
    /// Its window is full against a probe on this core that had seen this much.
    on_probe: Option<u64>,
    /// Set once publishing ended: the end of its drain.
    drain_until: Option<u64>,
    pub done: bool,
}

impl<'a> Polled<'a> {
    pub fn new(ctx: &'a CoreCtx, index: u32, conn: Conn, window: u16) -> Option<Polled<'a>> {
        let (s, ack_lowat) = prepare(ctx, index, &conn, window)?;
        let pace = Pace::new(ctx, &s);
        Some(Polled {
            s,
            pace,
            conn,
            ack_lowat,
            wake: 0,
            on_probe: None,
            drain_until: None,
            done: false,
        })
    }

    /// Whether the probe it waits on moved.
    pub fn probe_moved(&self) -> bool {
        match (self.on_probe, &self.pace.probe) {
            (Some(seen), Some(p)) => p.seen() > seen,
            _ => false,
        }
    }

    /// Sends what is due, reads acknowledgements, and sets when to step again. An error
    /// ends the publisher (recorded).
    pub fn step(&mut self, ctx: &CoreCtx, now: u64) {
        if self.done {
            return;
        }
        if let Err(e) = self.try_step(ctx, now) {
            ctx.stats
                .borrow_mut()
                .error(format!("publisher {}: {e}", self.s.index));
            self.finish(ctx);
        }
    }

    fn try_step(&mut self, ctx: &CoreCtx, now: u64) -> io::Result<()> {
        let (s, pace, conn) = (&mut self.s, &self.pace, &mut self.conn);
        if self.drain_until.is_none() && (now >= ctx.pub_end_ns.get() || s.seq >= pace.count) {
            if self.ack_lowat {
                // The last acknowledgements may be fewer than the low mark.
                conn.set_rcvlowat(1)?;
            }
            self.drain_until = Some(now + ctx.shared.plan.load.drain.as_nanos() as u64);
        }
        if let Some(until) = self.drain_until {
            conn.pump()?;
            s.on_packets(conn)?;
            conn.pump()?;
            let pending_acks = s.window != u32::MAX && s.inflight > 0;
            if (conn.pending_out() == 0 && !pending_acks) || now >= until {
                self.finish(ctx);
            } else {
                self.wake = until;
            }
            return Ok(());
        }
        let seen = pace.probe.as_ref().map_or(0, Probe::seen);
        let n = pace.quota(s, now, conn.pending_out(), seen);
        if n > 0 {
            s.append(conn, n, now, pace, now >= ctx.measure_start_ns.get());
            ctx.stats.borrow_mut().sent += n;
        }
        conn.pump()?;
        s.on_packets(conn)?;
        if conn.pending_out() > 0 {
            conn.pump()?; // acknowledgements of acknowledgements (PUBREL)
        }
        let seen = pace.probe.as_ref().map_or(0, Probe::seen);
        let window_full = pace
            .probe
            .as_ref()
            .is_some_and(|p| s.seq - seen >= p.window);
        self.on_probe =
            (window_full && pace.probe.as_ref().is_some_and(|p| !p.remote)).then_some(seen);
        self.wake = match pace.tick(s, window_full) {
            Some(d) => now + d.as_nanos() as u64,
            // Unlimited and the socket took everything: more may go at once.
            None if conn.pending_out() == 0 && pace.quota(s, now, 0, seen) > 0 => now,
            None => u64::MAX,
        };
        if s.seq >= pace.count {
            self.wake = now; // all sent: the next step starts the drain
        }
        self.wake = self.wake.min(ctx.pub_end_ns.get());
        Ok(())
    }

    fn finish(&mut self, ctx: &CoreCtx) {
        if !self.done {
            self.done = true;
            self.wake = u64::MAX;
            record(ctx, &self.s);
        }
    }
}

/// Closed-loop pacing for unlimited publishers: how far the probe subscriber got.
struct Probe<'a> {
    seq_end: &'a std::sync::atomic::AtomicU64,
    window: u64,
    /// The probe lives on another core: poll instead of being woken.
    remote: bool,
}

impl Probe<'_> {
    fn seen(&self) -> u64 {
        self.seq_end.load(Ordering::Relaxed)
    }
}

/// The probe of publisher `index`, when it is paced by one.
fn probe<'a>(ctx: &'a CoreCtx, index: u32) -> Option<Probe<'a>> {
    let sh = &ctx.shared;
    let load = &sh.plan.load;
    let window = sh.window_of[index as usize];
    if load.rate > 0.0 || window == 0 {
        return None;
    }
    let sub = sh.probe_of[index as usize]? as usize;
    Some(Probe {
        seq_end: &sh.probe_seq[index as usize],
        window,
        remote: sub % sh.cores != index as usize % sh.cores,
    })
}

/// When a publisher may send: rate schedule, message count, probe window, buffer room.
struct Pace<'a> {
    /// Schedule origin of this publisher (t0 plus its phase offset).
    t0: u64,
    /// Origin of the wake-up grid, shared by every publisher (t0).
    grid0: u64,
    /// Wake-up grid, ns (0 = wake for each message).
    slot_ns: u64,
    /// Nanoseconds between messages; 0 = unlimited.
    interval_ns: f64,
    count: u64,
    frame: u64,
    probe: Option<Probe<'a>>,
}

impl Pace<'_> {
    fn new<'a>(ctx: &'a CoreCtx, s: &Sender) -> Pace<'a> {
        let load = &ctx.shared.plan.load;
        let interval_ns = if load.rate > 0.0 {
            1e9 / load.rate
        } else {
            0.0
        };
        // Rate-limited publishers are spread evenly over one interval, not all in phase.
        let npubs = ctx.shared.plan.pub_topics.len().max(1) as f64;
        Pace {
            t0: ctx.shared.t0() + (interval_ns * f64::from(s.index) / npubs) as u64,
            grid0: ctx.shared.t0(),
            slot_ns: load.pace_slot_ns,
            interval_ns,
            count: load.count.unwrap_or(u64::MAX),
            frame: s.tpl.len() as u64,
            probe: probe(ctx, s.index),
        }
    }

    /// Messages that may be appended now.
    fn quota(&self, s: &Sender, now: u64, buffered: usize, seen: u64) -> u64 {
        let mut n = self.count - s.seq;
        if self.interval_ns > 0.0 {
            let due = ((now.saturating_sub(self.t0)) as f64 / self.interval_ns) as u64 + 1;
            n = n.min(due.saturating_sub(s.seq));
        }
        if s.window != u32::MAX {
            let free = s.window.saturating_sub(s.inflight);
            // Unlimited rate: refill the window in batches of a quarter of it, so a
            // broker that acknowledges one message per segment gets one write per
            // batch, not per acknowledgement (each loopback `send` also runs the
            // broker socket's receive path, charged to the generator).
            if self.interval_ns == 0.0 && free < (s.window / 4).max(1) {
                return 0;
            }
            n = n.min(u64::from(free));
        }
        if let Some(p) = &self.probe {
            n = n.min(p.window.saturating_sub(s.seq.saturating_sub(seen)));
        }
        n.min((WBUF_TARGET.saturating_sub(buffered) as u64) / self.frame)
    }

    /// The end of the grid slot holding `due` (publishers whose messages fall due in
    /// one slot wake together), or `due` itself without a grid.
    fn wake_at(&self, due: u64) -> u64 {
        if self.slot_ns == 0 || due <= self.grid0 {
            return due;
        }
        let slots = (due - self.grid0).div_ceil(self.slot_ns);
        self.grid0 + slots * self.slot_ns
    }

    /// The send time stamped into message `seq`, from which its latency is measured: at
    /// a fixed rate its scheduled time (the end of the grid slot it falls due in, or
    /// `now` if it goes out earlier), so a generator or a socket that falls behind the
    /// schedule shows as latency instead of hiding it (coordinated omission); at
    /// unlimited rate, `now`.
    #[inline]
    fn stamp(&self, seq: u64, now: u64) -> u64 {
        if self.interval_ns == 0.0 {
            return now;
        }
        self.wake_at(self.t0 + (seq as f64 * self.interval_ns) as u64)
            .min(now)
    }

    /// When to wake up without I/O: the next scheduled message, or a poll of a remote probe.
    fn tick(&self, s: &Sender, window_full: bool) -> Option<Duration> {
        if self.interval_ns > 0.0 && s.inflight < s.window {
            let next_due = self.wake_at(self.t0 + (s.seq as f64 * self.interval_ns) as u64);
            // With a pace grid the grid is the wake-up granularity (its slot); the
            // 1 ms floor made rates above 1000/s per publisher wake once per ms and
            // stamped messages up to 1 ms before they left (a p50 of ~570 µs for
            // every broker at 10 x 5000/s).
            let min = if self.slot_ns > 0 {
                0
            } else if self.interval_ns < 1e6 {
                MIN_TICK_NS
            } else {
                0
            };
            return Some(Duration::from_nanos(
                next_due.saturating_sub(now_ns()).max(min),
            ));
        }
        (window_full && self.probe.as_ref().is_some_and(|p| p.remote))
            .then(|| Duration::from_micros(100))
    }
}

async fn send_loop(
    ctx: &CoreCtx,
    conn: &mut Conn,
    s: &mut Sender,
    ack_lowat: bool,
) -> io::Result<()> {
    let measure_start = ctx.measure_start_ns.get();
    let end = ctx.pub_end_ns.get();
    let until = Duration::from_nanos(
        end.min(now_ns() + 86_400_000_000_000)
            .saturating_sub(now_ns()),
    );
    let mut end_timer = Timer::new(until);
    let mut tick = Timer::new(Duration::from_secs(86_400));
    let pace = Pace::new(ctx, s);
    loop {
        let now = now_ns();
        if now >= end || s.seq >= pace.count {
            break;
        }
        let seen = pace.probe.as_ref().map_or(0, Probe::seen);
        let n = pace.quota(s, now, conn.pending_out(), seen);
        if n > 0 {
            s.append(conn, n, now, &pace, now >= measure_start);
            ctx.stats.borrow_mut().sent += n;
        }
        let window_full = pace
            .probe
            .as_ref()
            .is_some_and(|p| s.seq - seen >= p.window);
        let next_tick = pace.tick(s, window_full);
        if let Some(d) = next_tick {
            tick.reset(d);
        }
        let wake = or(
            async { Wake::Io(conn.drive().await.map(|_| ())) },
            or(
                async {
                    (&mut end_timer).await;
                    Wake::End
                },
                async {
                    match (&pace.probe, next_tick) {
                        (_, Some(_)) => drop((&mut tick).await),
                        (Some(p), None) if window_full => window_opens(ctx, s.index, p, seen).await,
                        _ => futures_lite::future::pending::<()>().await,
                    }
                    Wake::Tick
                },
            ),
        )
        .await;
        match wake {
            Wake::Io(r) => r?,
            Wake::Tick => {}
            Wake::End => break,
        }
        s.on_packets(conn)?;
        glommio::yield_if_needed().await;
    }
    if ack_lowat {
        // The last acknowledgements may be fewer than the low mark.
        conn.set_rcvlowat(1)?;
    }
    drain(ctx, conn, s).await
}

/// Resolves once the probe has seen more than `seen` (woken by a same-core probe).
async fn window_opens(ctx: &CoreCtx, index: u32, p: &Probe<'_>, seen: u64) {
    futures_lite::future::poll_fn(|cx| {
        if p.seen() > seen {
            return std::task::Poll::Ready(());
        }
        ctx.window_waiters
            .borrow_mut()
            .insert(index, cx.waker().clone());
        std::task::Poll::Pending
    })
    .await
}

/// Flushes and waits for outstanding QoS 1/2 acknowledgements, bounded by the drain time.
async fn drain(ctx: &CoreCtx, conn: &mut Conn, s: &mut Sender) -> io::Result<()> {
    let deadline = Timer::new(ctx.shared.plan.load.drain);
    let mut deadline = deadline;
    loop {
        s.on_packets(conn)?;
        let pending_acks = s.window != u32::MAX && s.inflight > 0;
        if conn.pending_out() == 0 && !pending_acks {
            return Ok(());
        }
        let r = or(async { Some(conn.drive().await) }, async {
            (&mut deadline).await;
            None
        })
        .await;
        match r {
            Some(r) => {
                r?;
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    fn pace(slot_ns: u64) -> Pace<'static> {
        Pace {
            t0: 1_000_300,
            grid0: 1_000_000,
            slot_ns,
            interval_ns: 1e6,
            count: u64::MAX,
            frame: 90,
            probe: None,
        }
    }

    #[test]
    fn wake_ups_round_up_to_the_shared_grid() {
        let p = pace(250_000);
        assert_eq!(p.wake_at(1_000_000), 1_000_000, "on the origin");
        assert_eq!(p.wake_at(1_000_001), 1_250_000);
        assert_eq!(p.wake_at(1_250_000), 1_250_000, "on a boundary");
        assert_eq!(p.wake_at(2_300_000), 2_500_000);
        assert_eq!(p.wake_at(999_000), 999_000, "before the origin");
        assert_eq!(pace(0).wake_at(2_300_123), 2_300_123, "no grid");
    }

    #[test]
    fn messages_are_stamped_with_their_schedule() {
        let p = pace(250_000);
        // seq 2 is due at 3_000_300, in the slot ending at 3_250_000.
        assert_eq!(p.stamp(2, 3_400_000), 3_250_000, "late: the schedule");
        assert_eq!(p.stamp(2, 3_100_000), 3_100_000, "early: when written");
        assert_eq!(
            pace(0).stamp(2, 3_400_000),
            3_000_300,
            "no grid: the due time"
        );
    }
}
