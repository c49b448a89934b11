//! One subscriber connection: acknowledges QoS 1/2 deliveries, checks sequence numbers
//! and records publish-to-delivery latency from the payload timestamp.

use crate::conn::{AckKind, Conn};
use crate::core::CoreCtx;
use crate::payload::{now_ns, read_stamp};
use crate::tracker::Tracker;
use futures_lite::future::or;
use ringmq_codec::Packet;
use std::io;
use std::rc::Rc;

enum Wake {
    Io(io::Result<()>),
    Stop,
    Ping,
    PubsFinished,
}

/// Receives until the core's stop signal, then disconnects.
pub async fn run(ctx: Rc<CoreCtx>, index: usize, mut conn: Conn, mut tracker: Tracker) {
    let slot = ctx.stop.slot();
    let ping_slot = ctx.ping.slot();
    let fin_slot = ctx.pubs_finished.slot();
    let lowat = ctx.shared.rcvlowat_of(index);
    if lowat > 1 {
        if let Err(e) = conn.set_rcvlowat(lowat) {
            ctx.stats.borrow_mut().error(format!("SO_RCVLOWAT: {e}"));
        }
    }
    let mut batching = lowat > 1;
    let mut probes: Vec<(u32, u64)> = ctx
        .shared
        .probes_of(index)
        .into_iter()
        .map(|p| (p, 0))
        .collect();
    loop {
        let pings = ctx.ping.generation();
        let wake = or(
            async { Wake::Io(conn.drive().await.map(|_| ())) },
            or(
                async {
                    ctx.stop.wait(slot, 0).await;
                    Wake::Stop
                },
                or(
                    async {
                        ctx.ping.wait(ping_slot, pings).await;
                        Wake::Ping
                    },
                    async {
                        if batching {
                            ctx.pubs_finished.wait(fin_slot, 0).await;
                            Wake::PubsFinished
                        } else {
                            futures_lite::future::pending().await
                        }
                    },
                ),
            ),
        )
        .await;
        let r = match wake {
            Wake::Io(r) => r.and_then(|_| on_packets(&ctx, &mut conn, &mut tracker, &mut probes)),
            Wake::Stop => break,
            Wake::Ping => conn.queue(&Packet::PingReq),
            Wake::PubsFinished => {
                // Linux re-checks readiness when the low mark changes (tcp_set_rcvlowat).
                batching = false;
                conn.set_rcvlowat(1)
            }
        };
        if let Err(e) = r {
            if !ctx.stop.is_fired() {
                ctx.stats
                    .borrow_mut()
                    .error(format!("subscriber {index}: {e}"));
            }
            return;
        }
    }
    let _ = on_packets(&ctx, &mut conn, &mut tracker, &mut probes);
    conn.disconnect().await;
}

/// A subscriber driven by the core's driver (`crate::driver`) instead of a task: the
/// same reading, acknowledging and checking as [`run`], one [`PolledSub::on_event`] per
/// socket event.
pub struct PolledSub {
    pub index: usize,
    pub conn: Conn,
    tracker: Tracker,
    probes: Vec<(u32, u64)>,
    /// `SO_RCVLOWAT` batching on (dropped once every publisher stopped).
    batching: bool,
    /// Its mark is the QoS 1 one ([`CoreCtx`]'s `qos1_lowat_of`): dropped if the broker
    /// stops short of it ([`PolledSub::check_stall`]).
    acked_batching: bool,
    /// When it last read bytes, or was last checked for a stall.
    last_read_ns: u64,
    /// Reads that brought bytes.
    reads: u64,
    /// Stall checks in a row that found bytes below the mark, and `reads` after the last.
    stalls: u32,
    reads_after_stall: u64,
    /// Ended by an error (recorded) or by the stop signal.
    pub done: bool,
}

/// A QoS 1 subscriber batching its reads that has read nothing for this long is read
/// anyway ([`PolledSub::check_stall`]).
pub const STALL_NS: u64 = 20_000_000;
/// Stall checks in a row finding bytes below the mark before it is dropped.
pub const STALLS_TO_DROP: u32 = 3;

impl PolledSub {
    pub fn new(ctx: &CoreCtx, index: usize, mut conn: Conn, tracker: Tracker) -> PolledSub {
        if ctx.shared.plan.load.rx_stamps {
            if let Err(e) = conn.enable_rx_stamps(ctx.shared.min_frame_of(index)) {
                ctx.stats.borrow_mut().error(format!("SO_TIMESTAMPNS: {e}"));
            }
        }
        let acked = ctx.shared.qos1_lowat_of(index);
        let lowat = ctx.shared.rcvlowat_of(index).max(acked);
        if lowat > 1 {
            if let Err(e) = conn.set_rcvlowat(lowat) {
                ctx.stats.borrow_mut().error(format!("SO_RCVLOWAT: {e}"));
            }
        }
        PolledSub {
            index,
            conn,
            tracker,
            probes: ctx
                .shared
                .probes_of(index)
                .into_iter()
                .map(|p| (p, 0))
                .collect(),
            batching: lowat > 1,
            acked_batching: acked > 1,
            last_read_ns: now_ns(),
            reads: 0,
            stalls: 0,
            reads_after_stall: u64::MAX,
            done: false,
        }
    }

    /// Reads everything the socket has, processes it and sends the acknowledgements.
    pub fn on_event(&mut self, ctx: &CoreCtx) {
        if self.done {
            return;
        }
        if let Err(e) = self.read(ctx) {
            if !ctx.stop.is_fired() {
                ctx.stats
                    .borrow_mut()
                    .error(format!("subscriber {}: {e}", self.index));
            }
            self.done = true;
        }
    }

    fn read(&mut self, ctx: &CoreCtx) -> io::Result<()> {
        loop {
            let p = self.conn.pump()?;
            on_packets(ctx, &mut self.conn, &mut self.tracker, &mut self.probes)?;
            if !p.read {
                break;
            }
            self.reads += 1;
            self.last_read_ns = now_ns();
        }
        if self.conn.pending_out() > 0 {
            self.conn.pump()?;
        }
        Ok(())
    }

    /// Keep-alive round: a PINGREQ.
    pub fn ping(&mut self, ctx: &CoreCtx) {
        if !self.done && self.conn.queue(&Packet::PingReq).is_ok() {
            self.on_event(ctx);
        }
    }

    /// Called about once a millisecond: a QoS 1 subscriber whose low mark kept it from
    /// reading for [`STALL_NS`] reads what is there. Bytes found that way
    /// [`STALLS_TO_DROP`] times in a row, with no read woken by the mark in between,
    /// mean the broker stops short of the mark (an in-flight limit below it: it waits
    /// for the acknowledgements of what this has not read), so the mark goes for good and
    /// the subscriber reads every delivery as it comes. Once is not enough: the first
    /// deliveries of a run also come fewer than the mark.
    pub fn check_stall(&mut self, ctx: &CoreCtx, now: u64) {
        if self.done || !self.batching || !self.acked_batching {
            return;
        }
        if now.saturating_sub(self.last_read_ns) < STALL_NS {
            return;
        }
        self.last_read_ns = now;
        let before = self.reads;
        self.conn.may_read();
        self.on_event(ctx);
        if self.reads == before {
            self.stalls = 0; // nothing waiting: idle, not stalled
            return;
        }
        self.stalls = if before == self.reads_after_stall {
            self.stalls + 1
        } else {
            1
        };
        self.reads_after_stall = self.reads;
        if self.stalls >= STALLS_TO_DROP {
            self.batching = false;
            self.acked_batching = false;
            if let Err(e) = self.conn.set_rcvlowat(1) {
                ctx.stats.borrow_mut().error(format!("SO_RCVLOWAT: {e}"));
            }
            self.on_event(ctx);
        }
    }

    /// Every publisher stopped: read the last bytes at once, below the low mark too.
    pub fn pubs_finished(&mut self, ctx: &CoreCtx) {
        if self.batching {
            self.batching = false;
            // Linux re-checks readiness when the low mark changes (tcp_set_rcvlowat).
            if let Err(e) = self.conn.set_rcvlowat(1) {
                ctx.stats.borrow_mut().error(format!("SO_RCVLOWAT: {e}"));
            }
            self.on_event(ctx);
        }
    }
}

/// Processes every whole packet read so far.
fn on_packets(
    ctx: &CoreCtx,
    conn: &mut Conn,
    tracker: &mut Tracker,
    probes: &mut [(u32, u64)],
) -> io::Result<()> {
    let r = read_all(ctx, conn, tracker, probes);
    for &(p, seq_end) in probes.iter() {
        if seq_end > ctx.shared.probe_seq[p as usize].load(std::sync::atomic::Ordering::Relaxed) {
            ctx.probe_advanced(p, seq_end);
        }
    }
    r
}

fn read_all(
    ctx: &CoreCtx,
    conn: &mut Conn,
    tracker: &mut Tracker,
    probes: &mut [(u32, u64)],
) -> io::Result<()> {
    // One time per read: the kernel's receive timestamp when the subscriber asks for it
    // (read on the pace grid), else now.
    let now = conn.take_rx_ns().unwrap_or_else(now_ns);
    let measure_start = ctx.measure_start_ns.get();
    let pub_end = ctx.pub_end_ns.get();
    let spin_ns = ctx.shared.plan.load.spin_ns;
    let mut st = ctx.stats.borrow_mut();
    let st = &mut *st;
    loop {
        // Hot path: PUBLISH read in place; everything else through the codec.
        let (qos, packet_id, stamp, len) = if let Some(rp) = conn.peek_publish() {
            let stamp = read_stamp(&conn.read_buf()[rp.payload.clone()]);
            (rp.qos, rp.packet_id, stamp, Some(rp.frame_len))
        } else {
            match conn.next_packet()? {
                None => return Ok(()),
                Some(Packet::Publish(p)) => {
                    (p.qos as u8, p.packet_id, read_stamp(&p.payload), None)
                }
                Some(Packet::PubRel(r)) => {
                    conn.queue_ack(AckKind::PubComp, r.packet_id)?;
                    continue;
                }
                Some(Packet::Disconnect(d)) => {
                    return Err(io::Error::other(format!(
                        "DISCONNECT from broker: {:?}",
                        d.reason
                    )))
                }
                Some(_) => continue,
            }
        };
        if let Some(n) = len {
            conn.consume(n);
        }
        st.received += 1;
        if spin_ns > 0 {
            spin(spin_ns);
        }
        match (qos, packet_id) {
            (1, Some(id)) => conn.queue_ack(AckKind::PubAck, id)?,
            (2, Some(id)) => conn.queue_ack(AckKind::PubRec, id)?,
            _ => {}
        }
        let Some(stamp) = stamp else {
            st.counts.unexpected += 1;
            continue;
        };
        if !probes.is_empty() {
            if let Ok(i) = probes.binary_search_by_key(&stamp.publisher, |x| x.0) {
                probes[i].1 = probes[i].1.max(stamp.seq + 1);
            }
        }
        if tracker.on_message(stamp.publisher, stamp.seq, &mut st.counts)
            && stamp.sent_ns >= measure_start
            && stamp.sent_ns < pub_end
        {
            st.received_measured += 1;
            st.last_measured_recv_ns = now;
            st.latency
                .saturating_record(now.saturating_sub(stamp.sent_ns).max(1));
        }
    }
}

/// Test hook (`--spin-ns`): burns `ns` of CPU, making the generator the bottleneck.
#[cold]
fn spin(ns: u64) {
    let until = now_ns() + ns;
    while now_ns() < until {
        std::hint::spin_loop();
    }
}
