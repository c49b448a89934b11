//! The outbound side of one connection: a byte buffer that handlers and
//! fan-out append to, drained by the connection's task once per tick.
//!
//! Everything a shard sends to a client goes through here, so the per-
//! connection limits (buffer bound, client's Maximum Packet Size, outbound
//! topic aliases) are applied in one place.

use crate::config::ShardConfig;
use crate::notify::Notify;
use crate::session::delivery;
use crate::stats::{CloseReason, DropReason, ShardStats};
use bytes::BytesMut;
use ringmq_codec::{
    Packet, PacketId, ProtocolVersion, PubResp, PubRespProperties, PublishFrame, ReasonCode,
    TopicName,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::task::Waker;

/// Acknowledgements held until other shards confirm, in order:
/// (token, packet, confirmed). Token 0: nothing to wait for.
type Held = VecDeque<(u64, Packet, bool)>;

/// What few connections use, boxed at first use.
#[derive(Default)]
struct Cold {
    /// Our topic aliases, towards the client (v5).
    out: HashMap<Box<str>, u16>,
    /// The client's topic aliases, towards us (v5).
    inbound: HashMap<u16, TopicName>,
    /// Acknowledgements held until other shards confirm, in order.
    held: Held,
    /// The client's address as a PROXY header gave it.
    peer: Option<SocketAddr>,
    /// Tasks waiting for this connection to take more (retained replay),
    /// woken by [`ConnOut::room_freed`].
    room_waiters: Vec<Waker>,
}

/// Outbound state of one live connection.
pub struct ConnOut {
    /// Bytes waiting to be written (no allocation while empty).
    pub buf: RefCell<BytesMut>,
    /// Wakes the connection's task.
    pub wake: Notify,
    /// Set when the connection must close once `buf` is flushed.
    pub close: Cell<Option<CloseReason>>,
    pub version: ProtocolVersion,
    /// The client's Receive Maximum (our outbound QoS 1/2 window).
    pub receive_max: u16,
    /// The client's Maximum Packet Size [MQTT-3.1.2-24].
    pub max_packet: u32,
    /// The client's Topic Alias Maximum (0: no outbound aliases).
    pub alias_max: u16,
    /// Topic aliases and held acknowledgements, allocated at the first one.
    cold: Cell<Option<Box<Cold>>>,
    /// The socket (for `peer`; valid while the connection is the session's).
    fd: RawFd,
    pub keep_alive: u16,
    pub clean_start: bool,
    /// In `sync` durability: the bytes buffered so far wait for the commit
    /// of every store op pushed so far (cleared when the task takes that ticket).
    pub gate: Cell<bool>,
    /// A task waits in `room_waiters` (checked on every write: one byte, no borrow).
    room_wanted: Cell<bool>,
    /// A large SUBSCRIBE/UNSUBSCRIBE is being handled in steps: the next
    /// packets wait (read no further until it is done).
    reading_paused: Cell<bool>,
    /// Poller clock (ms, truncated to 32 bits, never 0) since which the
    /// QoS 1/2 window has been full with no acknowledgement; 0: not stalled.
    stalled_at: Cell<u32>,
}

impl ConnOut {
    /// A new connection's outbound side.
    pub fn new(
        version: ProtocolVersion,
        receive_max: u16,
        max_packet: u32,
        alias_max: u16,
        fd: RawFd,
        keep_alive: u16,
        clean_start: bool,
    ) -> Self {
        ConnOut {
            buf: RefCell::new(BytesMut::new()),
            wake: Notify::default(),
            close: Cell::new(None),
            version,
            receive_max: receive_max.max(1),
            max_packet,
            alias_max,
            cold: Cell::new(None),
            fd,
            keep_alive,
            clean_start,
            gate: Cell::new(false),
            room_wanted: Cell::new(false),
            reading_paused: Cell::new(false),
            stalled_at: Cell::new(0),
        }
    }

    /// `f` on the cold state. A `Cell` (taken out, put back), not a
    /// `RefCell`: 8 bytes less in every connection. `f` must not reach
    /// `cold` again (none does: they touch the outbound buffer at most).
    fn with_cold<R>(&self, f: impl FnOnce(&mut Option<Box<Cold>>) -> R) -> R {
        let mut c = self.cold.take();
        let r = f(&mut c);
        debug_assert!(self.cold.take().is_none(), "cold state reached twice");
        self.cold.set(c);
        r
    }

    /// The client's address: the one a PROXY header carried, else asked of
    /// the socket (not stored: 32 bytes a connection).
    pub fn peer(&self) -> Option<SocketAddr> {
        if let Some(p) = self.with_cold(|c| c.as_ref().and_then(|c| c.peer)) {
            return Some(p);
        }
        // SAFETY: the descriptor stays open while this connection is its
        // session's (it is closed just before the session forgets it).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&fd).peer_addr().ok()?.as_socket()
    }

    /// Records the client's address carried by a PROXY header.
    pub fn set_peer(&self, addr: SocketAddr) {
        self.with_cold(|c| c.get_or_insert_with(Box::default).peer = Some(addr));
    }

    /// What is buffered (and buffered next) leaves only once every store op
    /// pushed so far is durable.
    pub fn gate_on_durability(&self) {
        self.gate.set(true);
    }

    /// Sends an acknowledgement, after those held before it [MQTT-4.6.0-2];
    /// with a token, it waits for `release_ack(token)`.
    pub fn ack(&self, p: Packet, token: Option<u64>) {
        let p = self.with_cold(|cold| match token {
            Some(t) => {
                let held = &mut cold.get_or_insert_with(Box::default).held;
                held.push_back((t, p, false));
                None
            }
            None if cold.as_ref().is_none_or(|c| c.held.is_empty()) => Some(p),
            None => {
                let held = &mut cold.get_or_insert_with(Box::default).held;
                held.push_back((0, p, true));
                None
            }
        });
        if let Some(p) = p {
            self.send(&p);
        }
    }

    /// Other shards confirmed the publish behind `token`.
    pub fn release_ack(&self, token: u64) {
        self.with_cold(|cold| {
            let Some(held) = cold.as_mut().map(|c| &mut c.held) else {
                return;
            };
            if let Some(e) = held.iter_mut().find(|e| e.0 == token) {
                e.2 = true;
            }
            while held.front().is_some_and(|e| e.2) {
                if let Some((_, p, _)) = held.pop_front() {
                    // `send` touches the buffer only, not `cold`.
                    self.send(&p);
                }
            }
        });
    }

    /// The publish behind `token` was refused (v5): its held PUBACK/PUBREC
    /// carries `code` instead of Success, then leaves in order.
    pub fn refuse_ack(&self, token: u64, code: ReasonCode) {
        self.with_cold(|cold| {
            let e = cold.as_mut()?.held.iter_mut().find(|e| e.0 == token)?;
            if let Packet::PubAck(r) | Packet::PubRec(r) = &mut e.1 {
                r.reason = code;
            }
            Some(())
        });
        self.release_ack(token);
    }

    /// Gives the outbound buffer's memory back once everything left: an
    /// idle connection holds no buffer. It goes to the shard's pool of
    /// outbound buffers (`out_pool.rs`), for the next connection to write.
    pub fn release_idle_buffer(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() && buf.capacity() > 0 {
            super::out_pool::give(std::mem::take(&mut *buf));
        }
    }

    /// The outbound buffer, to append to: one from the shard's pool if the
    /// connection holds none (no allocation, no growth from nothing).
    #[inline]
    fn out_buf(&self) -> std::cell::RefMut<'_, BytesMut> {
        let mut buf = self.buf.borrow_mut();
        if buf.capacity() == 0 {
            *buf = super::out_pool::take();
        }
        buf
    }

    /// Whether a QoS 0 message may still be buffered.
    pub fn has_room(&self, cfg: &ShardConfig) -> bool {
        self.close.get().is_none() && self.buf.borrow().len() < cfg.outbound_buffer_bytes
    }

    /// Wakes `w` at the next [`ConnOut::room_freed`] (bytes written,
    /// window opened, closing). The waiter checks its own condition again.
    pub fn wait_room(&self, w: &Waker) {
        self.with_cold(|cold| {
            let waiters = &mut cold.get_or_insert_with(Box::default).room_waiters;
            if !waiters.iter().any(|o| o.will_wake(w)) {
                waiters.push(w.clone());
            }
        });
        self.room_wanted.set(true);
    }

    /// Bytes left the buffer, the window opened or the connection is
    /// closing: wakes the tasks waiting for room.
    pub fn room_freed(&self) {
        if !self.room_wanted.replace(false) {
            return;
        }
        let Some(waiters) = self.with_cold(|c| Some(std::mem::take(&mut c.as_mut()?.room_waiters)))
        else {
            return;
        };
        for w in waiters {
            w.wake();
        }
    }

    /// The QoS 1/2 window is full and nothing was acknowledged since `now_ms`
    /// (poller clock): the stall deadline counts from here. Wakes the
    /// connection's task so it arms that deadline.
    pub fn window_stalled(&self, now_ms: u64) {
        self.stalled_at.set((now_ms as u32).max(1));
        self.wake.notify();
    }

    /// The window has room again.
    pub fn window_moving(&self) {
        self.stalled_at.set(0);
    }

    /// When the window stall that started at `stalled_at` (see
    /// [`ConnOut::window_stalled`]) reaches `timeout_ms`, poller clock; `None`: not stalled.
    pub fn stall_deadline(&self, now_ms: u64, timeout_ms: u64) -> Option<u64> {
        let at = self.stalled_at.get();
        if at == 0 {
            return None;
        }
        // Signed: `now_ms` may be a reading taken just before the stall began.
        let waited = (now_ms as u32).wrapping_sub(at) as i32;
        let waited = waited.max(0) as u64;
        Some(now_ms.saturating_add(timeout_ms.saturating_sub(waited)))
    }

    /// Stops the handling of this connection's packets until `resume_reading`.
    pub fn pause_reading(&self) {
        self.reading_paused.set(true);
    }

    /// Handles the connection's packets again.
    pub fn resume_reading(&self) {
        self.reading_paused.set(false);
        self.wake.notify();
    }

    /// Whether the handling of packets is paused.
    pub fn reading_paused(&self) -> bool {
        self.reading_paused.get()
    }

    /// Whether the connection is closing.
    pub fn closing(&self) -> bool {
        self.close.get().is_some()
    }

    /// Appends any packet.
    pub fn send(&self, p: &Packet) {
        if self.closing() {
            return;
        }
        let mut buf = self.out_buf();
        let was_empty = buf.is_empty();
        if p.encode(self.version, &mut buf).is_ok() && was_empty {
            self.wake.notify();
        }
    }

    /// Appends a PUBLISH for this subscriber from a shared frame.
    pub fn write_publish(
        &self,
        stats: &ShardStats,
        frame: &PublishFrame,
        packet_id: Option<PacketId>,
        dup: bool,
        retain: bool,
        sub_ids: &[u32],
    ) {
        if self.closing() {
            return;
        }
        let mut d = delivery(packet_id, dup, retain, sub_ids);
        if self.alias_max > 0 && self.version == ProtocolVersion::V5 {
            d.topic_alias = self.alias_for(frame);
        }
        if frame.len(&d) > self.max_packet as usize {
            // [MQTT-3.1.2-25] never send more than the client accepts; the message is discarded.
            stats.drop_msg(DropReason::TooLargeForClient);
            return;
        }
        let mut buf = self.out_buf();
        let was_empty = buf.is_empty();
        frame.write(&mut buf, &d);
        stats.msgs_out[frame.qos() as usize].inc();
        stats.publish_bytes_out[frame.qos() as usize].add(frame.payload_len() as u64);
        if was_empty {
            self.wake.notify();
        }
    }

    fn alias_for(&self, frame: &PublishFrame) -> Option<(u16, bool)> {
        let topic = frame.topic();
        self.with_cold(|cold| {
            let aliases = &mut cold.get_or_insert_with(Box::default).out;
            if let Some(&a) = aliases.get(topic) {
                return Some((a, false));
            }
            let next = aliases.len() as u16 + 1;
            if next > self.alias_max {
                return None;
            }
            aliases.insert(topic.into(), next);
            Some((next, true))
        })
    }

    /// The topic a client's inbound alias stands for.
    pub fn alias_in(&self, alias: u16) -> Option<TopicName> {
        self.with_cold(|c| c.as_ref()?.inbound.get(&alias).cloned())
    }

    /// Records a client's inbound alias.
    pub fn set_alias_in(&self, alias: u16, topic: TopicName) {
        self.with_cold(|c| {
            c.get_or_insert_with(Box::default)
                .inbound
                .insert(alias, topic)
        });
    }

    /// Appends a PUBREL.
    pub fn write_pubrel(&self, id: PacketId) {
        self.send(&Packet::PubRel(resp(id, ReasonCode::Success)));
    }

    /// Asks the connection to flush and close.
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        self.wake.notify();
        self.room_freed();
    }
}

/// A PUBACK/PUBREC/PUBREL/PUBCOMP body.
pub fn resp(packet_id: PacketId, reason: ReasonCode) -> PubResp {
    PubResp {
        packet_id,
        reason,
        properties: PubRespProperties::default(),
    }
}
