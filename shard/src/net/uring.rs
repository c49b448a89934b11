//! The io_uring socket backend (`--io-backend io_uring`): one ring per
//! shard, beside glommio's, for every client socket and listener of the
//! shard. The shard still waits in one place: the ring's descriptor is
//! waited on through glommio (`glommio::net::poll_readable`), exactly as the
//! epoll set is on the epoll backend (reason and figures: ARCHITECTURE.md).
//!
//! - **Receive**: one multishot `RECV` per socket, into the shard's
//!   provided-buffer ring (`BufRing`). An idle connection holds no receive
//!   buffer: a buffer is taken from the ring only when bytes arrive, and is
//!   given back as soon as the connection has read it ([`Uring::recv`]).
//!   A connection that does not read (over the partial-packet budget, a
//!   paused reader) holds at most `max_held` buffers: past it its receive is
//!   cancelled and re-armed once it has read them, so the bytes wait in the
//!   socket. When the ring runs dry the kernel ends the multishot receives
//!   with `ENOBUFS` (counted: `ShardStats::uring_buffers_dry`); they are
//!   re-armed as buffers come back. Meanwhile a starved socket is read the
//!   epoll way, with no ring buffer: a one-shot `POLL_ADD` announces its
//!   bytes and [`Uring::recv`] reads them with `recv(2)` straight into the
//!   connection's buffer. So connections that hold buffers and do not read
//!   them (paused by the partial-packet budget) cannot stall the others
//!   until their deadline; no byte is lost or reordered (the multishot
//!   receive has ended before the first direct read).
//!   The kernel is given 64 of the ring's buffers at a time (`BufRing::target`,
//!   doubled when it runs dry while spare ones wait): it picks buffers in ring
//!   order, so given all of them it cycled through all and made the whole
//!   ring resident; the spare ones are reused last in, first out.
//!   Where the kernel has it (6.12) the ring is consumed incrementally
//!   (`IOU_PBUF_RING_INC`): consecutive arrivals, of any socket, share a
//!   buffer, which goes back once the kernel moved past it and each of its
//!   chunks was read (`BufRing::landed`/`release`).
//! - **Task work**: the ring is set up with `DEFER_TASKRUN` +
//!   `SINGLE_ISSUER` + `TASKRUN_FLAG` (6.1; else `COOP_TASKRUN` +
//!   `TASKRUN_FLAG`, 5.19): completions do not interrupt the running shard;
//!   their task work (a receive copying bytes into the buffer ring) waits on
//!   the ring and runs when the shard enters with `GETEVENTS` (its park),
//!   and [`Uring::reap`] enters the kernel when the SQ flag says work waits
//!   (from the park hook only when no task is runnable: [`Uring::reap_with`];
//!   such an enter also submits the tick's sends).
//! - **Send**: a plain connection hands its outbound bytes themselves to
//!   [`Uring::send_from`] (its whole buffer, taken: no copy; the connection
//!   starts an empty one, which an idle connection would anyway); the send
//!   owns them until its completion, which gives the buffer to the shard's
//!   pool of outbound buffers (`out_pool.rs`) for the next connection to
//!   write. Bytes a layer keeps (TLS records, WebSocket frames) are copied
//!   by [`Uring::send`] into a buffer of the ring's own send pool. Either queues one `SEND` for the socket; the next send
//!   says `WouldBlock` until it completed (a short send is re-queued for the
//!   rest). The connection loop sends once per flush, so one `SEND` per
//!   dirty connection per tick. Its completion wakes the connection only if
//!   it waits for it (it saw `WouldBlock`, so WRITABLE was cleared).
//! - **Accept**: one multishot `ACCEPT` per listener.
//! - **Submission**: SQEs are queued without a syscall; the poller's task
//!   submits them all with one `io_uring_enter` at the end of the tick
//!   ([`Uring::submit`], woken by [`Uring::pending`]).
//!
//! Readiness for the connection code is the poller's slot bits, set here
//! from completions: READABLE while buffered bytes, end of stream or an error
//! wait; WRITABLE while no send is in flight. The code above (`Io::recv`,
//! `Io::send`, the `Wire` seam) is the same for both backends.
//!
//! A socket's slot lives until its last request completed: its key is in
//! the `user_data` of its requests, so it is not reused before. The
//! descriptor is closed only then, too, so no queued request can name a
//! descriptor number that was reused.

use super::poller::{Slot, Slots, READABLE, WRITABLE};
use crate::notify::Notify;
use crate::stats::ShardStats;
use bytes::{Buf, BytesMut};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

/// Operation tags in the high half of `user_data`; the low half is the slot key.
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_ACCEPT: u64 = 3;
const OP_CANCEL: u64 = 4;
const OP_POLL: u64 = 5;
/// A poll on one of glommio's rings (`park.rs`); the key indexes `watch`.
const OP_WATCH: u64 = 6;
/// The one buffer group of the shard's ring.
const BGID: u16 = 0;
/// `IOU_PBUF_RING_INC` (include/uapi/linux/io_uring.h): buffers consumed
/// incrementally.
const IOU_PBUF_RING_INC: u16 = 2;
/// No chunk / no send.
const NIL: u32 = u32::MAX;
/// Submission queue entries (a full queue is submitted at once).
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries (multishot receives post many per request).
const CQ_ENTRIES: u32 = 16384;
/// Send buffers kept for reuse, and the largest one kept.
const POOL_MAX: usize = 256;
const POOL_BUF_MAX: usize = 256 << 10;
/// How long the shard's sleep waits for one completion more than the SENDs
/// it submitted ([`Uring::park`]) before it returns with what it has: the
/// most a SEND that did not complete at once (a full socket) can delay the
/// shard's next wake-up, and the sleep after which an idle shard takes one
/// more enter to sleep for good. Above the gaps between arrivals that the
/// park is for (100 µs at 10k msg/s), small against the latencies a full
/// socket means.
const SEND_GRACE: std::time::Duration = std::time::Duration::from_millis(1);

fn ud(op: u64, key: u32) -> u64 {
    (op << 32) | key as u64
}

/// Sizes of the provided-buffer ring.
#[derive(Clone, Copy, Debug)]
pub struct UringConfig {
    /// Buffers in the ring (a power of two, 1..=32768).
    pub buffers: u16,
    /// Bytes per buffer.
    pub buffer_size: u32,
}

/// The shard's provided-buffer ring: `entries` descriptors the kernel picks
/// from (page-aligned, shared with the kernel) and the buffers behind them.
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_layout: Layout,
    mem: std::mem::ManuallyDrop<Box<[u8]>>,
    size: u32,
    mask: u16,
    /// Our producer index (published to the kernel at each give).
    tail: Cell<u16>,
    /// Buffers the kernel may still pick.
    free: Cell<u32>,
    /// How many buffers the kernel is given at a time (`free` is kept
    /// there while `spare` has any): the kernel picks buffers in ring
    /// order, so a ring given all its buffers cycles through all of them
    /// and makes all of its memory resident (4 MiB by default), whatever
    /// the load. Kept at a few, the same few buffers are reused.
    /// Doubled (up to all) when the kernel ran dry while spare ones waited.
    target: Cell<u32>,
    /// Buffers given back and not handed to the kernel yet, reused last
    /// in, first out (the most recently used pages first).
    spare: RefCell<Vec<u16>>,
    /// Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12): the
    /// kernel fills a buffer across receives, of any socket, so small
    /// arrivals share one buffer instead of taking 4 KiB each.
    inc: bool,
    /// Per buffer, with `inc`.
    state: RefCell<Vec<BufState>>,
}

/// One buffer of an incremental ring.
#[derive(Clone, Copy, Default)]
struct BufState {
    /// Where the kernel's next bytes go.
    off: u32,
    /// Chunks of it not read yet.
    refs: u32,
    /// The kernel has moved on to the next buffer.
    retired: bool,
}

impl BufRing {
    fn new(cfg: UringConfig) -> io::Result<Self> {
        let entries = cfg.buffers as usize;
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring_buffers must be a power of two up to 32768",
            ));
        }
        let ring_layout =
            Layout::from_size_align(entries * std::mem::size_of::<types::BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size; the result is checked.
        let ring = unsafe { std::alloc::alloc_zeroed(ring_layout) } as *mut types::BufRingEntry;
        if ring.is_null() {
            return Err(io::Error::other("cannot allocate the buffer ring"));
        }
        let br = BufRing {
            ring,
            ring_layout,
            mem: std::mem::ManuallyDrop::new(
                vec![0u8; entries * cfg.buffer_size as usize].into_boxed_slice(),
            ),
            size: cfg.buffer_size,
            mask: (entries - 1) as u16,
            tail: Cell::new(0),
            free: Cell::new(0),
            // 64 of the default 1024 (256 KiB of 4 KiB buffers): a tick's
            // arrivals of a busy shard fit many times over; a ring that runs
            // dry between two reaps is handled (module docs) and counted.
            target: Cell::new((entries as u32).min(64.max(entries as u32 / 16))),
            spare: RefCell::new(Vec::new()),
            inc: false,
            state: RefCell::new(Vec::new()),
        };
        Ok(br)
    }

    /// A completion put `len` bytes the socket keeps into `bid`
    /// (`more`: the kernel goes on filling it). Returns their offset.
    fn landed(&self, bid: u16, len: u32, more: bool) -> u32 {
        if !self.inc {
            self.took();
            return 0;
        }
        let off = {
            let mut st = self.state.borrow_mut();
            let b = &mut st[bid as usize];
            let off = b.off;
            b.off += len;
            b.refs += 1;
            b.retired |= !more;
            off
        };
        if !more {
            self.took();
        }
        off
    }

    /// A completion's `len` bytes in `bid` that nobody reads.
    fn discard(&self, bid: u16, len: u32, more: bool) {
        if !self.inc {
            self.took();
            return self.give(bid);
        }
        let give = {
            let mut st = self.state.borrow_mut();
            let b = &mut st[bid as usize];
            b.off += len;
            b.retired |= !more;
            b.retired && b.refs == 0
        };
        if !more {
            self.took();
        }
        if give {
            self.give(bid);
        }
    }

    /// A chunk of `bid` was read: the buffer goes back once the kernel
    /// is done with it and no other chunk of it waits.
    fn release(&self, bid: u16) {
        if !self.inc {
            return self.give(bid);
        }
        let give = {
            let mut st = self.state.borrow_mut();
            let b = &mut st[bid as usize];
            b.refs -= 1;
            b.retired && b.refs == 0
        };
        if give {
            self.give(bid);
        }
    }

    /// The kernel moved past a buffer: it gets a spare one if it has
    /// fewer than `target` left.
    fn took(&self) {
        self.free.set(self.free.get() - 1);
        self.top_up();
    }

    /// Hands spare buffers to the kernel up to `target`.
    fn top_up(&self) {
        while self.free.get() < self.target.get() {
            let Some(bid) = self.spare.borrow_mut().pop() else {
                return;
            };
            self.publish(bid);
        }
    }

    /// The kernel ran dry: if spare buffers waited, it is given twice as
    /// many from now on (a shard under load grows to the whole ring).
    fn ran_dry(&self) {
        if !self.spare.borrow().is_empty() {
            self.target.set((self.target.get() * 2).min(self.entries()));
            self.top_up();
        }
    }

    /// Buffer `bid` is free again: to the kernel if it has fewer than
    /// `target`, else kept spare.
    fn give(&self, bid: u16) {
        if self.free.get() < self.target.get() {
            self.publish(bid);
        } else {
            self.spare.borrow_mut().push(bid);
        }
    }

    /// Buffers free, the kernel's and the spare ones.
    fn available(&self) -> u32 {
        self.free.get() + self.spare.borrow().len() as u32
    }

    /// Gives buffer `bid` (back) to the kernel.
    fn publish(&self, bid: u16) {
        let tail = self.tail.get();
        // SAFETY: `tail & mask` indexes the ring's `entries` descriptors;
        // the kernel only reads descriptors below the published tail.
        let e = unsafe { &mut *self.ring.add((tail & self.mask) as usize) };
        // SAFETY: `bid` < entries, so the buffer lies within `mem`.
        let addr = unsafe { self.mem.as_ptr().add(bid as usize * self.size as usize) };
        e.set_addr(addr as u64);
        e.set_len(self.size);
        e.set_bid(bid);
        if self.inc {
            self.state.borrow_mut()[bid as usize] = BufState::default();
        }
        let next = tail.wrapping_add(1);
        self.tail.set(next);
        // SAFETY: the ring's first descriptor holds the shared tail
        // (`BufRingEntry::tail`); the kernel reads it with acquire ordering.
        unsafe {
            let t = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*t).store(next, Ordering::Release);
        }
        self.free.set(self.free.get() + 1);
    }

    fn entries(&self) -> u32 {
        self.mask as u32 + 1
    }

    fn bytes(&self, bid: u16, off: u32, len: u32) -> &[u8] {
        let start = bid as usize * self.size as usize + off as usize;
        &self.mem[start..start + len as usize]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the kernel pinned
        // these pages at registration and holds them until the ring is gone.
        unsafe { std::alloc::dealloc(self.ring as *mut u8, self.ring_layout) };
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before the buffers it points to.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.ring) };
        // The kernel tears the ring down after its descriptor closed; a
        // receive still in flight could land in a buffer meanwhile. The
        // buffers are freed only when no socket was left with one.
        if !self.socks.get_mut().iter().any(|s| s.live()) {
            // SAFETY: dropped once, here; nothing refers to them any more.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.bufs.mem) };
        }
    }
}

/// Bytes of one receive completion not yet read by the connection.
struct Chunk {
    bid: u16,
    off: u32,
    len: u32,
    next: u32,
}

/// The receive request of a socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Recv {
    /// None in flight.
    Idle,
    Armed,
    /// Cancel asked, the last completion not seen yet.
    Cancelling,
}

/// What the ring knows of one registered socket (indexed by slot key).
pub(crate) struct Sock {
    fd: RawFd,
    /// The socket's error (errno, 0: none); errno values fit 16 bits.
    err: i16,
    recv: Recv,
    /// [`LIVE`], [`STOPPED`], ... (one byte: `Sock` is 24 bytes, one per
    /// socket, `docs/connection-memory.md`).
    flags: u8,
    held: u32,
    head: u32,
    tail: u32,
    send: u32,
}

/// The slot holds a registered socket.
const LIVE: u8 = 1;
/// The owner let go of it: closed (free at the last completion) or being
/// handed to another shard (no more receives).
const STOPPED: u8 = 2;
/// Close the descriptor when the slot is freed.
const OWNS_FD: u8 = 4;
const ACCEPT_ARMED: u8 = 8;
/// Its receive ended on an empty buffer ring: read with `recv(2)` until the
/// ring has buffers again.
const STARVED: u8 = 16;
/// A one-shot `POLL_ADD` in flight (a starved socket's readiness).
const POLL_ARMED: u8 = 32;
const EOF: u8 = 64;

macro_rules! sock_flags {
    ($($get:ident $set:ident $bit:ident;)*) => {
        impl Sock {
            $(
                #[inline]
                fn $get(&self) -> bool {
                    self.flags & $bit != 0
                }

                #[inline]
                fn $set(&mut self, on: bool) {
                    if on {
                        self.flags |= $bit;
                    } else {
                        self.flags &= !$bit;
                    }
                }
            )*
        }
    };
}

sock_flags! {
    live set_live LIVE;
    stopped set_stopped STOPPED;
    owns_fd set_owns_fd OWNS_FD;
    accept_armed set_accept_armed ACCEPT_ARMED;
    starved set_starved STARVED;
    poll_armed set_poll_armed POLL_ARMED;
    eof set_eof EOF;
}

impl Sock {
    fn new(fd: RawFd) -> Self {
        Sock {
            fd,
            err: 0,
            recv: Recv::Idle,
            flags: LIVE,
            held: 0,
            head: NIL,
            tail: NIL,
            send: NIL,
        }
    }

    /// Sets the socket's error (an errno).
    fn set_err(&mut self, errno: i32) {
        self.err = errno as i16;
    }

    fn quiet(&self) -> bool {
        self.recv == Recv::Idle && self.send == NIL && !self.accept_armed() && !self.poll_armed()
    }
}

/// A socket's send: the bytes (owned until the completion) and how far.
/// Bytes given in the same tick join it until the tick's submission.
struct SendBuf {
    /// The connection's own outbound bytes ([`Uring::send_from`]), or a
    /// copy from the pool ([`Uring::send`]).
    buf: BytesMut,
    off: usize,
    submitted: bool,
    /// `buf` came from the pool (and goes back to it).
    pooled: bool,
}

/// One shard's ring and the state of its sockets.
pub(crate) struct Uring {
    /// Dropped first, by hand (see `Drop`).
    ring: std::mem::ManuallyDrop<RefCell<IoUring>>,
    bufs: BufRing,
    slots: Rc<RefCell<Slots>>,
    socks: RefCell<Vec<Sock>>,
    chunks: RefCell<Slab<Chunk>>,
    sends: RefCell<Slab<SendBuf>>,
    /// Sockets whose send waits for the tick's submission.
    dirty: RefCell<Vec<u32>>,
    /// Buffers for copied sends (TLS, WebSocket layers' bytes).
    pool: RefCell<Vec<BytesMut>>,
    /// Accepted descriptors per listener key.
    accepted: RefCell<Vec<(u32, VecDeque<OwnedFd>)>>,
    /// Sockets whose receive ended on an empty buffer ring.
    starved: RefCell<Vec<u32>>,
    /// Slots whose last request completed after their owner let go.
    to_free: RefCell<Vec<u32>>,
    unsubmitted: Cell<u32>,
    /// Wakes the poller's task: SQEs to submit, or starved sockets.
    pub pending: Notify,
    max_held: u32,
    stats: Arc<ShardStats>,
    cqes: RefCell<Vec<(u64, i32, u32)>>,
    /// Descriptors the shard's sleep also waits for (glommio's rings:
    /// `park.rs`), and whether their poll is armed.
    watch: RefCell<Vec<(RawFd, bool)>>,
    /// SENDs queued since the last submission (see [`Uring::park`]).
    sends_queued: Cell<u32>,
}

impl Uring {
    pub fn new(
        cfg: UringConfig,
        slots: Rc<RefCell<Slots>>,
        stats: Arc<ShardStats>,
    ) -> io::Result<Self> {
        // Cooperative task work (5.19+): a completion arriving while the
        // shard runs does not interrupt it with an IPI; the kernel runs the
        // ring's task work at the shard's next syscall (its submit, glommio's
        // park), or at once when the thread sleeps. `taskrun` (the SQ flag)
        // says when work waits and nothing else enters the kernel: `reap`
        // enters then. Measured: the IPI's exit path was 3.5 % of the
        // broker's CPU on 50 pairs. Older kernels: the plain ring.
        //
        // Deferred task work (6.1+, `DEFER_TASKRUN`, which needs
        // `SINGLE_ISSUER`: only the shard's thread, which makes the ring,
        // enters it): a completion's task work (a multishot receive copying
        // the bytes into the buffer ring) waits on the ring, not on the
        // thread's task-work list, and runs when the shard enters with
        // `GETEVENTS` (its park, or `reap` when `taskrun` says work waits);
        // a sleeping shard is woken directly, without the signal-style
        // notification of plain task work.
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .setup_clamp()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .build(SQ_ENTRIES)
            })
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .setup_clamp()
                    .build(SQ_ENTRIES)
            })?;
        let mut bufs = BufRing::new(cfg)?;
        // SAFETY: the descriptors stay allocated (and the buffers too) for
        // the life of `Uring`, which closes the ring first (its `Drop`).
        // Incremental consumption where the kernel has it (6.12), else
        // one buffer per completion.
        let inc = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                cfg.buffers,
                BGID,
                IOU_PBUF_RING_INC,
            )
        };
        if inc.is_ok() {
            bufs.inc = true;
            bufs.state = RefCell::new(vec![BufState::default(); cfg.buffers as usize]);
        } else {
            // SAFETY: as above.
            unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    bufs.ring as u64,
                    cfg.buffers,
                    BGID,
                    0,
                )?;
            }
        }
        for bid in 0..cfg.buffers {
            bufs.give(bid);
        }
        // A connection may hold the bytes of up to 64 KiB (the epoll
        // backend's read size), and never more than half the ring.
        let max_held = ((64 << 10) / cfg.buffer_size.max(1))
            .min(cfg.buffers as u32 / 2)
            .max(1);
        Ok(Uring {
            ring: std::mem::ManuallyDrop::new(RefCell::new(ring)),
            bufs,
            slots,
            socks: RefCell::new(Vec::new()),
            chunks: RefCell::new(Slab::new()),
            sends: RefCell::new(Slab::new()),
            dirty: RefCell::new(Vec::new()),
            pool: RefCell::new(Vec::new()),
            accepted: RefCell::new(Vec::new()),
            starved: RefCell::new(Vec::new()),
            to_free: RefCell::new(Vec::new()),
            unsubmitted: Cell::new(0),
            pending: Notify::default(),
            max_held,
            stats,
            cqes: RefCell::new(Vec::new()),
            watch: RefCell::new(Vec::new()),
            sends_queued: Cell::new(0),
        })
    }

    /// The ring's descriptor (readable when completions wait).
    pub fn fd(&self) -> RawFd {
        self.ring.borrow().as_raw_fd()
    }

    fn push(&self, e: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: every buffer an entry points to (send bytes, none
            // else) stays alive until its completion: `sends` owns it.
            if unsafe { ring.submission().push(&e) }.is_ok() {
                break;
            }
            // Queue full: submit what is there now.
            self.stats.uring_submits.inc();
            if let Err(e) = ring.submit() {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::warn!("io_uring submit failed: {e}");
                }
            }
        }
        drop(ring);
        if self.unsubmitted.replace(self.unsubmitted.get() + 1) == 0 {
            self.pending.notify();
        }
    }

    /// Queues one SEND per socket with bytes given this tick.
    fn flush_sends(&self) {
        // The list's allocation is kept from tick to tick (taking it grew
        // a new one by doubling every tick: reallocations were 1.3 % of the
        // broker's CPU on 50 pairs in `perf record`).
        let mut dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for &key in &dirty {
            let sqe = {
                let socks = self.socks.borrow();
                let Some(s) = socks.get(key as usize).filter(|s| s.live()) else {
                    continue;
                };
                let mut sends = self.sends.borrow_mut();
                let Some(sb) = sends.get_mut(s.send as usize) else {
                    continue;
                };
                sb.submitted = true;
                self.sends_queued.set(self.sends_queued.get() + 1);
                opcode::Send::new(types::Fd(s.fd), sb.buf.as_ptr(), sb.buf.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(ud(OP_SEND, key))
            };
            self.push(sqe);
        }
        dirty.clear();
        let mut list = self.dirty.borrow_mut();
        if list.is_empty() {
            *list = dirty;
        }
    }

    /// Submits every queued request (and this tick's sends): one
    /// `io_uring_enter`, none if nothing waits.
    pub fn submit(&self) {
        self.flush_sends();
        if self.unsubmitted.get() == 0 {
            return;
        }
        self.stats.uring_submits.inc();
        match self.ring.borrow().submit() {
            Ok(_) => {
                self.unsubmitted.set(0);
                self.sends_queued.set(0);
                // What the notification announced is submitted (starved
                // receives were re-armed by the `reap` before this).
                self.pending.clear();
            }
            Err(e) => match e.raw_os_error() {
                // Completion queue overflowing or interrupted: the next round retries.
                Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR) => self.pending.notify(),
                _ => tracing::warn!("io_uring submit failed: {e}"),
            },
        }
    }

    fn with_sock<R>(&self, key: u32, f: impl FnOnce(&mut Sock) -> R) -> Option<R> {
        let mut socks = self.socks.borrow_mut();
        socks.get_mut(key as usize).filter(|s| s.live()).map(f)
    }

    /// Starts serving a socket (a client's, or a listener's).
    pub fn add(&self, key: u32, fd: RawFd, listener: bool) {
        {
            let mut socks = self.socks.borrow_mut();
            while socks.len() <= key as usize {
                socks.push(Sock {
                    flags: 0,
                    ..Sock::new(-1)
                });
            }
            socks[key as usize] = Sock::new(fd);
        }
        if listener {
            self.accepted.borrow_mut().push((key, VecDeque::new()));
            self.arm_accept(key);
        } else {
            self.arm_recv(key);
        }
    }

    fn arm_recv(&self, key: u32) {
        let fd = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key as usize];
            if s.recv != Recv::Idle || s.stopped() || s.eof() || s.err != 0 {
                return;
            }
            if self.bufs.available() == 0 {
                if !s.starved() {
                    s.set_starved(true);
                    self.starved.borrow_mut().push(key);
                }
                drop(socks);
                self.arm_poll(key);
                return;
            }
            s.recv = Recv::Armed;
            s.fd
        };
        self.push(
            opcode::RecvMulti::new(types::Fd(fd), BGID)
                .build()
                .user_data(ud(OP_RECV, key)),
        );
    }

    /// Readiness of a starved socket: one `POLL_ADD`, no buffer taken.
    fn arm_poll(&self, key: u32) {
        let fd = {
            let mut socks = self.socks.borrow_mut();
            let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
                return;
            };
            if s.poll_armed() || s.stopped() || s.eof() || s.err != 0 {
                return;
            }
            s.set_poll_armed(true);
            s.fd
        };
        self.push(
            opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(ud(OP_POLL, key)),
        );
    }

    fn on_poll(&self, key: u32) {
        let stopped = {
            let mut socks = self.socks.borrow_mut();
            let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
                return;
            };
            s.set_poll_armed(false);
            self.done_if_stopped(key, s);
            s.stopped()
        };
        // A socket being handed off waits for its requests to end.
        self.wake(key, if stopped { 0 } else { READABLE });
    }

    fn arm_accept(&self, key: u32) {
        let fd = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key as usize];
            if s.accept_armed() || s.stopped() {
                return;
            }
            s.set_accept_armed(true);
            s.fd
        };
        self.push(
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(OP_ACCEPT, key)),
        );
    }

    fn cancel(&self, target: u64) {
        self.push(
            opcode::AsyncCancel::new(target)
                .build()
                .user_data(ud(OP_CANCEL, 0)),
        );
    }

    /// Appends up to `max` received bytes to `dst` straight from the ring's
    /// buffers (no scratch copy); `None` when no received bytes wait (the
    /// caller reads with [`Uring::recv`], which reports an end of stream,
    /// an error, `WouldBlock` or reads a starved socket directly).
    pub fn recv_append(
        &self,
        key: u32,
        dst: &mut bytes::BytesMut,
        max: usize,
    ) -> Option<io::Result<usize>> {
        let n = {
            let mut socks = self.socks.borrow_mut();
            let s = socks.get_mut(key as usize).filter(|s| s.live())?;
            if s.head == NIL {
                return None;
            }
            let chunks = self.chunks.borrow();
            let (mut held, mut at) = (0usize, s.head);
            while at != NIL && held < max {
                held += chunks[at as usize].len as usize;
                at = chunks[at as usize].next;
            }
            drop(chunks);
            dst.reserve(held.min(max));
            self.take_chunks(s, max, |b| dst.extend_from_slice(b))
        };
        self.after_read(key);
        Some(Ok(n))
    }

    /// Consumes up to `max` bytes of `s`'s received chunks, in order,
    /// handing them to `put`; buffers read whole go back to the ring.
    fn take_chunks(&self, s: &mut Sock, max: usize, mut put: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        let mut chunks = self.chunks.borrow_mut();
        while n < max && s.head != NIL {
            let c = &mut chunks[s.head as usize];
            let take = (c.len as usize).min(max - n);
            put(self.bufs.bytes(c.bid, c.off, take as u32));
            n += take;
            c.off += take as u32;
            c.len -= take as u32;
            if c.len == 0 {
                let c = chunks.remove(s.head as usize);
                s.head = c.next;
                if s.head == NIL {
                    s.tail = NIL;
                }
                s.held -= 1;
                self.bufs.release(c.bid);
            }
        }
        n
    }

    /// After a read: re-arms the receive if it ended and the socket holds
    /// few enough buffers; wakes the poller when starved sockets wait for
    /// the buffers just given back.
    fn after_read(&self, key: u32) {
        let rearm = self
            .with_sock(key, |s| {
                s.recv == Recv::Idle && !s.starved() && s.held <= self.max_held / 2
            })
            .unwrap_or(false);
        if rearm {
            self.arm_recv(key);
        }
        if !self.starved.borrow().is_empty() {
            self.pending.notify();
        }
    }

    /// Copies buffered received bytes into `buf`; `Ok(0)` end of stream,
    /// `WouldBlock` nothing there. Buffers read whole go back to the ring.
    pub fn recv(&self, key: u32, buf: &mut [u8]) -> io::Result<usize> {
        let mut n: usize;
        let (eof, err) = {
            let mut socks = self.socks.borrow_mut();
            let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            };
            let room = buf.len();
            let mut at = 0;
            n = self.take_chunks(s, room, |b| {
                buf[at..at + b.len()].copy_from_slice(b);
                at += b.len();
            });
            if n == 0
                && s.head == NIL
                && s.starved()
                && s.recv == Recv::Idle
                && !s.stopped()
                && !s.eof()
                && s.err == 0
            {
                // The ring is dry: read the socket directly (module docs).
                // SAFETY: `buf` is valid for `buf.len()` bytes; `s.fd` is
                // open while its slot is live.
                let r = unsafe {
                    libc::recv(s.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                match r {
                    0 => s.set_eof(true),
                    r if r > 0 => {
                        // The caller may take a short read for an empty
                        // socket (epoll's edge): the poll announces the next
                        // bytes.
                        n = r as usize;
                        drop(socks);
                        self.arm_poll(key);
                        return Ok(n);
                    }
                    _ => {
                        let e = io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EAGAIN) | Some(libc::EINTR) => {
                                drop(socks);
                                self.arm_poll(key);
                                return Err(io::ErrorKind::WouldBlock.into());
                            }
                            Some(code) => s.set_err(code),
                            None => s.set_err(libc::EIO),
                        }
                    }
                }
            }
            (s.eof() && s.head == NIL, s.err as i32)
        };
        self.after_read(key);
        if n > 0 {
            Ok(n)
        } else if err != 0 {
            Err(io::Error::from_raw_os_error(err))
        } else if eof {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Takes a copy of `buf` whole for the socket's send of this tick
    /// (one SEND per socket per tick); `WouldBlock` while an earlier send is
    /// in flight. For bytes a layer (TLS, WebSocket) keeps: plain
    /// connections give theirs with [`Uring::send_from`].
    pub fn send(&self, key: u32, buf: &[u8]) -> io::Result<usize> {
        self.queue_send(key, buf.len(), |joined| match joined {
            Some(sb) => {
                sb.extend_from_slice(buf);
                None
            }
            None => {
                let mut v = self.pool.borrow_mut().pop().unwrap_or_default();
                v.extend_from_slice(buf);
                Some((v, true))
            }
        })
    }

    /// Takes the first `n` bytes of `src` themselves for the socket's send
    /// of this tick, no copy: the send owns them until its completion (a
    /// whole buffer is taken as it is, `src` left empty, which is what an
    /// idle connection's buffer would be anyway). Bytes given again before
    /// the tick's submission are appended to them. `WouldBlock` while an
    /// earlier send is in flight.
    pub fn send_from(&self, key: u32, src: &mut BytesMut, n: usize) -> io::Result<usize> {
        self.queue_send(key, n, |joined| match joined {
            Some(sb) => {
                sb.extend_from_slice(&src[..n]);
                src.advance(n);
                None
            }
            None if n == src.len() => Some((std::mem::take(src), false)),
            None => Some((src.split_to(n), false)),
        })
    }

    /// The common part of [`Uring::send`] and [`Uring::send_from`]: `put`
    /// appends `n` bytes to a send not yet submitted (given `Some`), or
    /// makes the bytes of a new one (given `None`; returns them and whether
    /// they came from the pool).
    fn queue_send(
        &self,
        key: u32,
        n: usize,
        put: impl FnOnce(Option<&mut BytesMut>) -> Option<(BytesMut, bool)>,
    ) -> io::Result<usize> {
        let mut socks = self.socks.borrow_mut();
        let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        if s.err != 0 {
            return Err(io::Error::from_raw_os_error(s.err as i32));
        }
        if n == 0 {
            return Ok(0);
        }
        let mut sends = self.sends.borrow_mut();
        if s.send != NIL {
            let sb = &mut sends[s.send as usize];
            if sb.submitted {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            put(Some(&mut sb.buf));
            return Ok(n);
        }
        let Some((buf, pooled)) = put(None) else {
            return Ok(n);
        };
        s.send = sends.insert(SendBuf {
            buf,
            off: 0,
            submitted: false,
            pooled,
        }) as u32;
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(key);
        if dirty.len() == 1 {
            self.pending.notify();
        }
        Ok(n)
    }

    /// A completed copied send's buffer: kept for the next if small.
    fn recycle(&self, mut v: BytesMut) {
        if v.capacity() <= POOL_BUF_MAX {
            let mut pool = self.pool.borrow_mut();
            if pool.len() < POOL_MAX {
                v.clear();
                pool.push(v);
            }
        }
    }

    /// The next accepted descriptor of a listener; `WouldBlock` when none
    /// waits; the error that ended the multishot accept, once.
    pub fn accept(&self, key: u32) -> io::Result<OwnedFd> {
        if let Some(fd) = self
            .accepted
            .borrow_mut()
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, q)| q.pop_front())
        {
            return Ok(fd);
        }
        let (armed, err) = self
            .with_sock(key, |s| {
                (s.accept_armed(), std::mem::take(&mut s.err) as i32)
            })
            .unwrap_or((true, libc::EBADF));
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        if !armed {
            self.arm_accept(key);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// The owner closes the socket: requests are cancelled, buffered bytes
    /// dropped, the descriptor closed once nothing in flight names it.
    pub fn close(&self, key: u32, fd: OwnedFd) {
        let raw = fd.into_raw_fd();
        // This tick's last bytes go before the cancels (a send the socket
        // cannot take at once is cancelled, as epoll would drop it).
        self.flush_sends();
        self.stop(key);
        let send = self.with_sock(key, |s| s.send != NIL).unwrap_or(false);
        if send {
            self.cancel(ud(OP_SEND, key));
        }
        let free = self
            .with_sock(key, |s| {
                s.set_owns_fd(true);
                debug_assert_eq!(s.fd, raw);
                s.quiet()
            })
            .unwrap_or(true);
        self.drop_chunks(key);
        let pos = self.accepted.borrow().iter().position(|(k, _)| *k == key);
        if let Some(pos) = pos {
            self.accepted.borrow_mut().swap_remove(pos);
        }
        if free {
            self.free(key);
        }
    }

    /// No more receives or accepts for `key` (cancels those in flight).
    pub fn stop(&self, key: u32) {
        let (recv, accept, poll) = self
            .with_sock(key, |s| {
                s.set_stopped(true);
                let r = s.recv == Recv::Armed;
                if r {
                    s.recv = Recv::Cancelling;
                }
                (r, s.accept_armed(), s.poll_armed())
            })
            .unwrap_or((false, false, false));
        if recv {
            self.cancel(ud(OP_RECV, key));
        }
        if poll {
            self.cancel(ud(OP_POLL, key));
        }
        if accept {
            self.cancel(ud(OP_ACCEPT, key));
        }
    }

    /// Bytes, an end of stream or an error wait to be read.
    pub fn has_input(&self, key: u32) -> bool {
        self.with_sock(key, |s| s.head != NIL || s.eof() || s.err != 0)
            .unwrap_or(false)
    }

    /// Nothing of `key` in flight any more.
    pub fn quiet(&self, key: u32) -> bool {
        self.with_sock(key, |s| s.quiet()).unwrap_or(true)
    }

    /// The bytes received and not read yet (a socket handed to another
    /// shard takes them along); its slot is forgotten.
    pub fn take_rest(&self, key: u32) -> Vec<u8> {
        let mut rest = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.recv(key, &mut buf) {
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        self.drop_chunks(key);
        if let Some(s) = self.socks.borrow_mut().get_mut(key as usize) {
            s.set_live(false);
        }
        rest
    }

    fn drop_chunks(&self, key: u32) {
        let mut socks = self.socks.borrow_mut();
        let Some(s) = socks.get_mut(key as usize) else {
            return;
        };
        let mut chunks = self.chunks.borrow_mut();
        while s.head != NIL {
            let c = chunks.remove(s.head as usize);
            s.head = c.next;
            self.bufs.release(c.bid);
        }
        s.tail = NIL;
        s.held = 0;
        drop(socks);
        if !self.starved.borrow().is_empty() {
            self.pending.notify();
        }
    }

    fn free(&self, key: u32) {
        let owns = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key as usize];
            s.set_live(false);
            s.owns_fd().then_some(s.fd)
        };
        if let Some(fd) = owns {
            // SAFETY: the descriptor was handed to us by `close` and no
            // request names it any more.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.slots.borrow_mut().try_remove(key as usize);
    }

    fn wake(&self, key: u32, bits: u8) {
        self.wake_if(key, bits, true);
    }

    /// Sets `bits`; wakes the owner if `always`, or if one of `bits` was
    /// not set (the owner cleared it: it waits for it).
    fn wake_if(&self, key: u32, bits: u8, always: bool) {
        if let Some(s) = self.slots.borrow_mut().get_mut(key as usize) {
            let new = bits & !s.ready != 0;
            s.ready |= bits;
            if always || new {
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Handles every completion waiting; re-arms starved receives when
    /// buffers came back. Returns the completions handled. Enters the
    /// kernel when the ring says task work waits (see [`Uring::reap_with`]).
    pub fn reap(&self) -> usize {
        self.reap_with(true)
    }

    /// [`Uring::reap`]; with `enter` false it only reads what the kernel
    /// already posted, leaving deferred task work (arrivals) for a later
    /// enter: the park's, or the next reap's once the tasks woken so far
    /// have run (`park.rs`).
    ///
    /// An enter for task work also submits this tick's sends (queued, not
    /// yet in the SQ): the kernel issues them before it runs the task work,
    /// so the bytes of messages already handled leave before the next
    /// arrivals are received, at no extra syscall. Before, they waited in
    /// the queue for the park while each arrival of a burst cost an enter of
    /// its own (`perf record` of tracepoints at 10k msg/s: up to 3 enters
    /// and ~8 µs of receive each between a message's handling and its
    /// send; bench/scripts/stages.sh).
    pub fn reap_with(&self, enter: bool) -> usize {
        let mut cqes = self.cqes.take();
        if enter && self.ring.borrow_mut().submission().taskrun() {
            // Completions wait as task work (deferred or cooperative task
            // run): any entry into the kernel runs it, and submits what is
            // queued.
            self.flush_sends();
            self.stats.uring_submits.inc();
            if self.ring.borrow().submit().is_ok() {
                self.unsubmitted.set(0);
                self.sends_queued.set(0);
                self.pending.clear();
            }
        }
        {
            let mut ring = self.ring.borrow_mut();
            cqes.extend(
                ring.completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
        }
        let n = cqes.len();
        for &(data, res, flags) in &cqes {
            let key = data as u32;
            match data >> 32 {
                OP_RECV => self.on_recv(key, res, flags),
                OP_SEND => self.on_send(key, res),
                OP_ACCEPT => self.on_accept(key, res, flags),
                OP_POLL => self.on_poll(key),
                OP_WATCH => self.on_watch(key, flags),
                _ => {}
            }
        }
        cqes.clear();
        self.cqes.replace(cqes);
        self.rearm_starved();
        for key in self.to_free.take() {
            self.free(key);
        }
        n
    }

    /// Also wakes [`Uring::park`] when one of `fds` is readable (glommio's
    /// rings: they hold completions for the executor).
    pub fn watch(&self, fds: &[RawFd]) {
        let first = {
            let mut w = self.watch.borrow_mut();
            let first = w.len();
            w.extend(fds.iter().map(|&fd| (fd, false)));
            first
        };
        for i in first..first + fds.len() {
            self.arm_watch(i as u32);
        }
    }

    fn arm_watch(&self, i: u32) {
        let fd = {
            let mut w = self.watch.borrow_mut();
            let (fd, armed) = &mut w[i as usize];
            if *armed {
                return;
            }
            *armed = true;
            *fd
        };
        // Multishot, though the kernel makes a poll on another ring's
        // descriptor one-shot (a ring's own wake-up path): re-armed below.
        self.push(
            opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(ud(OP_WATCH, i)),
        );
    }

    fn on_watch(&self, i: u32, flags: u32) {
        if !cqueue::more(flags) {
            if let Some(w) = self.watch.borrow_mut().get_mut(i as usize) {
                w.1 = false;
            }
            // Queued now, submitted by the next sleep's enter.
            self.arm_watch(i);
        }
    }

    /// The shard's sleep (glommio's park, `park.rs`): one `io_uring_enter`
    /// submits what the tick queued and waits for a completion, a readable
    /// watched descriptor or `timeout`; then reads what completed.
    ///
    /// The SENDs it submits usually complete inside that same call (the
    /// socket takes the bytes at once) and their completions would end the
    /// wait before it began, costing a second enter per wake-up. So it waits
    /// for one completion more than the SENDs it submits; should a SEND not
    /// complete at once (a full socket), the wait ends after
    /// [`SEND_GRACE`] at the latest, then sleeps again for any one.
    pub fn park(&self, timeout: Option<std::time::Duration>) {
        self.flush_sends();
        // Completions already waiting (posted by an enter since the last
        // reap, e.g. `submit`'s): read them instead of an enter that would
        // return at once; what they wake runs before the next park.
        if self.sends_queued.get() == 0 && !self.ring.borrow_mut().completion().is_empty() {
            self.reap_with(false);
            return;
        }
        let sends = self.sends_queued.replace(0);
        let want = 1 + sends as usize;
        let limit = if sends > 0 {
            Some(timeout.map_or(SEND_GRACE, |t| t.min(SEND_GRACE)))
        } else {
            timeout
        };
        self.stats.uring_submits.inc();
        let r = {
            let ring = self.ring.borrow();
            let submitter = ring.submitter();
            match limit {
                Some(d) => {
                    let ts = types::Timespec::from(d);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    submitter.submit_with_args(want, &args)
                }
                None => submitter.submit_and_wait(want),
            }
        };
        match r {
            Ok(_) => self.unsubmitted.set(0),
            Err(e) => match e.raw_os_error() {
                // Timed out or interrupted: what was queued was submitted
                // (the kernel submits before it waits).
                Some(libc::ETIME) | Some(libc::EINTR) => self.unsubmitted.set(0),
                // Completions overflowing: read them, the next round retries.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => tracing::warn!("io_uring wait failed: {e}"),
            },
        }
        self.pending.clear();
        // What woke it is read; task work that came meanwhile (a burst's
        // next arrivals) waits for the next enter, after the tasks woken
        // now have run and queued their sends (`reap_with`).
        self.reap_with(false);
    }

    fn rearm_starved(&self) {
        if self.bufs.available() == 0 || self.starved.borrow().is_empty() {
            return;
        }
        let starved = std::mem::take(&mut *self.starved.borrow_mut());
        for key in starved {
            let go = self
                .with_sock(key, |s| {
                    s.set_starved(false);
                    s.held <= self.max_held / 2
                })
                .unwrap_or(false);
            if go {
                self.arm_recv(key);
            }
        }
    }

    fn done_if_stopped(&self, key: u32, s: &Sock) {
        if s.stopped() && s.quiet() && s.owns_fd() {
            self.to_free.borrow_mut().push(key);
        }
    }

    fn on_recv(&self, key: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let buf_more = cqueue::buffer_more(flags);
        let len = res.max(0) as u32;
        let mut socks = self.socks.borrow_mut();
        let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
            if let Some(b) = bid {
                self.bufs.discard(b, len, buf_more);
            }
            return;
        };
        if !more {
            s.recv = Recv::Idle;
        }
        let mut bits = 0;
        match (res, bid) {
            (n, Some(b)) if n > 0 => {
                if s.stopped() && s.owns_fd() {
                    self.bufs.discard(b, len, buf_more);
                } else {
                    let off = self.bufs.landed(b, len, buf_more);
                    let c = self.chunks.borrow_mut().insert(Chunk {
                        bid: b,
                        off,
                        len: n as u32,
                        next: NIL,
                    }) as u32;
                    if s.tail == NIL {
                        s.head = c;
                    } else {
                        self.chunks.borrow_mut()[s.tail as usize].next = c;
                    }
                    s.tail = c;
                    s.held += 1;
                    bits = READABLE;
                    // Under pressure (a quarter of the ring left) every
                    // socket holds one buffer at a time, so connections
                    // that do not read cannot take the ring from the rest.
                    let pressed = self.bufs.available() < self.bufs.entries() / 4;
                    let cap = if pressed { 1 } else { self.max_held };
                    if s.held >= cap && s.recv == Recv::Armed {
                        // Enough held for a connection that does not read:
                        // the rest waits in the socket.
                        s.recv = Recv::Cancelling;
                        drop(socks);
                        self.cancel(ud(OP_RECV, key));
                        socks = self.socks.borrow_mut();
                    }
                }
            }
            (n, b) => {
                if let Some(b) = b {
                    self.bufs.discard(b, len, buf_more);
                }
                if n == 0 {
                    s.set_eof(true);
                    bits = READABLE;
                } else if n == -libc::ENOBUFS {
                    self.stats.uring_buffers_dry.inc();
                    self.bufs.ran_dry();
                    if !s.starved() && !s.stopped() {
                        s.set_starved(true);
                        self.starved.borrow_mut().push(key);
                        // Read the epoll way meanwhile (module docs).
                        bits = READABLE;
                    }
                } else if n == -libc::ECANCELED {
                } else if n < 0 {
                    s.set_err(-n);
                    bits = READABLE | WRITABLE;
                }
            }
        }
        let s = &socks[key as usize];
        self.done_if_stopped(key, s);
        // A socket being handed off waits for its receive to end.
        let stopped = s.stopped();
        // Ended with data (the kernel may end a multishot receive at any
        // time) or cancelled for holding enough, and read meanwhile: again.
        let again = !more
            && (res > 0 || res == -libc::ECANCELED)
            && s.err == 0
            && !s.eof()
            && s.recv == Recv::Idle
            && !s.stopped()
            && !s.starved()
            && s.held <= self.max_held / 2;
        drop(socks);
        if bits != 0 || stopped {
            self.wake(key, bits);
        }
        if again {
            self.arm_recv(key);
        }
    }

    fn on_send(&self, key: u32, res: i32) {
        let mut socks = self.socks.borrow_mut();
        let Some(s) = socks.get_mut(key as usize).filter(|s| s.live()) else {
            return;
        };
        let idx = s.send;
        if idx == NIL {
            return;
        }
        let mut sends = self.sends.borrow_mut();
        let sb = &mut sends[idx as usize];
        if res > 0 && !(s.stopped() && s.owns_fd()) {
            sb.off += res as usize;
            if sb.off < sb.buf.len() {
                // A short send: the rest goes next.
                let (ptr, len) = (sb.buf[sb.off..].as_ptr(), sb.buf.len() - sb.off);
                let fd = s.fd;
                drop(sends);
                drop(socks);
                self.push(
                    opcode::Send::new(types::Fd(fd), ptr, len as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(ud(OP_SEND, key)),
                );
                return;
            }
        } else if res == 0 && !s.stopped() {
            s.set_err(libc::EPIPE);
        } else if res < 0 && res != -libc::ECANCELED {
            s.set_err(-res);
        }
        let sb = sends.remove(idx as usize);
        s.send = NIL;
        if sb.pooled {
            self.recycle(sb.buf);
        } else {
            // A connection's own outbound buffer: to the shard's pool, for
            // the next connection to write (`out_pool.rs`).
            super::out_pool::give(sb.buf);
        }
        let s = &socks[key as usize];
        self.done_if_stopped(key, s);
        let (bits, must) = if s.err != 0 {
            (READABLE | WRITABLE, true)
        } else {
            (WRITABLE, s.stopped())
        };
        drop(sends);
        drop(socks);
        // The owner is woken only if it waits for this: it saw `WouldBlock`
        // (and cleared WRITABLE), or the socket failed or is being let go.
        // A connection whose send simply completed is not polled for it:
        // at one send per delivery that was one task poll per message more
        // than on epoll.
        self.wake_if(key, bits, must);
    }

    fn on_accept(&self, key: u32, res: i32, flags: u32) {
        let stopped = self
            .with_sock(key, |s| {
                if !cqueue::more(flags) {
                    s.set_accept_armed(false);
                }
                if res < 0 && res != -libc::ECANCELED && !s.stopped() {
                    s.set_err(-res);
                }
                s.stopped()
            })
            .unwrap_or(true);
        if res >= 0 {
            // SAFETY: a fresh descriptor the kernel accepted for us.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if stopped {
                return;
            }
            if let Some((_, q)) = self
                .accepted
                .borrow_mut()
                .iter_mut()
                .find(|(k, _)| *k == key)
            {
                q.push_back(fd);
            }
        }
        if let Some(s) = self.socks.borrow().get(key as usize) {
            self.done_if_stopped(key, s);
        }
        self.wake(key, READABLE);
    }
}

/// Checks that the kernel has what the backend needs: a provided-buffer
/// ring (5.19), multishot receive (6.0) and multishot accept (5.19). Runs a
/// multishot receive on a socket pair once. `Ok` carries the kernel release.
pub fn probe() -> Result<String, String> {
    // On a thread of its own: the kernel finishes tearing a ring down with
    // task work on the thread that used it, which interrupts that thread's
    // next blocking call with a timeout (EINTR); the caller's thread (the
    // broker's main thread, a test's) must not get it.
    std::thread::Builder::new()
        .name("ringmq-uring-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("cannot start the io_uring probe: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

fn probe_here() -> Result<String, String> {
    let release = kernel_release();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e} (kernel {release})");
    let slots = Rc::new(RefCell::new(Slots::new()));
    let u = Uring::new(
        UringConfig {
            buffers: 4,
            buffer_size: 64,
        },
        slots.clone(),
        Arc::new(ShardStats::default()),
    )
    .map_err(|e| fail("io_uring with a provided-buffer ring", &e))?;
    let mut probe = io_uring::register::Probe::new();
    u.ring
        .borrow()
        .submitter()
        .register_probe(&mut probe)
        .map_err(|e| fail("io_uring probe", &e))?;
    for (op, name) in [
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(op) {
            return Err(fail("io_uring opcode missing", &name));
        }
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors; checked below.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(fail("socketpair", &io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let key = slots.borrow_mut().insert(Slot::new(0)) as u32;
    u.add(key, a.as_raw_fd(), false);
    u.submit();
    // SAFETY: one byte from a valid buffer.
    unsafe { libc::write(b.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    let mut got = Err(fail("multishot receive", &"no completion"));
    for _ in 0..100 {
        let _ = u.ring.borrow().submitter().submit_and_wait(1);
        u.reap();
        let mut byte = [0u8; 1];
        match u.recv(key, &mut byte) {
            Ok(1) if byte[0] == b'x' => {
                let armed = u.with_sock(key, |s| s.recv == Recv::Armed).unwrap_or(false);
                got = if armed {
                    Ok(release.clone())
                } else {
                    Err(fail("multishot receive", &"ended after one completion"))
                };
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => {
                got = Err(fail("multishot receive", &format!("{other:?}")));
                break;
            }
        }
    }
    u.close(key, a);
    u.submit();
    for _ in 0..100 {
        if u.socks.borrow()[key as usize].live() {
            let _ = u.ring.borrow().submitter().submit_and_wait(1);
            u.reap();
        } else {
            break;
        }
    }
    got
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of `buffers` 64-byte buffers and one end (`a`, registered
    /// under the returned key, its receive armed) of a connected socket
    /// pair whose other end (`b`) the test writes to.
    fn ring_with_socket(buffers: u16) -> (Uring, u32, OwnedFd, OwnedFd) {
        let slots = Rc::new(RefCell::new(Slots::new()));
        let u = Uring::new(
            UringConfig {
                buffers,
                buffer_size: 64,
            },
            slots.clone(),
            Arc::new(ShardStats::default()),
        )
        .expect("ring");
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors; checked below.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let key = slots.borrow_mut().insert(Slot::new(0)) as u32;
        u.add(key, a.as_raw_fd(), false);
        u.submit();
        (u, key, a, b)
    }

    #[test]
    fn probe_passes_on_this_kernel() {
        // The CI and development kernels are 6.x: the backend must be usable there.
        super::probe().expect("io_uring probe");
    }

    /// Arrivals queue up as chunks while the
    /// connection does not read; reads of any size take them in order.
    #[test]
    fn queued_chunks_read_in_order_by_small_reads() {
        let (u, key, a, b) = ring_with_socket(16);
        let mut sent = Vec::new();
        for i in 0..5u8 {
            let msg = [b'a' + i; 9];
            sent.extend_from_slice(&msg);
            // SAFETY: nine bytes from a valid buffer.
            let w = unsafe { libc::write(b.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
            assert_eq!(w, 9);
            let want = (i + 1) as usize;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while u.with_sock(key, |s| s.held as usize).unwrap() < want {
                assert!(std::time::Instant::now() < deadline, "no completion");
                let _ = u.ring.borrow().submitter().submit_and_wait(1);
                u.reap();
                u.submit();
            }
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        while let Ok(n) = u.recv(key, &mut buf) {
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, sent);
        assert!(!u.has_input(key));
        assert_eq!(u.with_sock(key, |s| (s.held, s.tail)), Some((0, NIL)));
        assert_eq!(u.bufs.available(), 16, "every buffer back in the ring");
        u.close(key, a);
        u.submit();
    }

    /// Small arrivals share a buffer of an incremental ring; every byte is
    /// read once, in order, across buffer boundaries; every buffer goes
    /// back to the ring once read.
    #[test]
    fn incremental_ring_packs_small_arrivals_in_order() {
        let (u, key, a, b) = ring_with_socket(4);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut bids = Vec::new();
        // 40 arrivals of 10 bytes: 400 bytes through a 256-byte ring.
        for i in 0..40u8 {
            let msg = [i; 10];
            sent.extend_from_slice(&msg);
            // SAFETY: ten bytes from a valid buffer.
            let w = unsafe { libc::write(b.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
            assert_eq!(w, 10);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !u.has_input(key) {
                assert!(std::time::Instant::now() < deadline, "no completion");
                let _ = u.ring.borrow().submitter().submit_and_wait(1);
                u.reap();
                u.submit();
            }
            let head = u.with_sock(key, |s| s.head).unwrap();
            bids.push(u.chunks.borrow()[head as usize].bid);
            let mut dst = bytes::BytesMut::new();
            while let Some(Ok(n)) = u.recv_append(key, &mut dst, 1 << 16) {
                assert!(n > 0);
            }
            got.extend_from_slice(&dst);
        }
        assert_eq!(got, sent);
        if u.bufs.inc {
            // Several arrivals landed in one buffer (6.12+ kernels).
            assert!(bids.windows(2).any(|w| w[0] == w[1]), "bids {bids:?}");
        }
        assert_eq!(u.bufs.available(), 4, "every buffer back in the ring");
        u.close(key, a);
        u.submit();
    }
}
