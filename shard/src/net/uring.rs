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
//!   A send of at least `UringConfig::send_zc` bytes (`--io-uring-send-zc`,
//!   default 0: off) goes as `SEND_ZC`: the kernel sends from the bytes
//!   themselves, pinned, and posts a second completion (a notification)
//!   when it let go of them; the send counts as in flight until then. On
//!   loopback the receiving socket copies the pages anyway (counted:
//!   `ShardStats::uring_zc_copied`), which is why it is off by default
//!   (measured: docs/benchmarking.md, "SEND_ZC").
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
use std::collections::{HashMap, VecDeque};
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
/// `IORING_SEND_ZC_REPORT_USAGE` (6.2): the notification says whether the
/// kernel copied the bytes after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a notification's result.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
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
/// How long a shard with no unread received bytes sleeps before it gives
/// the buffer ring's pages back ([`BufRing::trim`]): a CONNECT storm leaves
/// the buffers it cycled through resident (~256 kB, 13 B per connection at
/// 19,000), which an idle shard does not need.
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Sends of at least this many bytes go as `SEND_ZC` (0: never; module
    /// docs, `send_zc.md` figures in docs/benchmarking.md).
    pub send_zc: u32,
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
    /// The kernel wrote into a buffer since the last [`BufRing::trim`].
    touched: Cell<bool>,
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
            touched: Cell::new(false),
        };
        Ok(br)
    }

    /// A completion put `len` bytes the socket keeps into `bid`
    /// (`more`: the kernel goes on filling it). Returns their offset.
    fn landed(&self, bid: u16, len: u32, more: bool) -> u32 {
        self.touched.set(true);
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
        self.touched.set(true);
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

    /// Gives the pages of every buffer back to the kernel (`MADV_DONTNEED`:
    /// they read as zeros and are faulted in again when the kernel next
    /// writes one). Only when no received byte waits in any buffer, and on
    /// a `DEFER_TASKRUN` ring, whose receives write buffers only inside the
    /// shard's own `io_uring_enter`, never while this runs.
    fn trim(&self) {
        self.touched.set(false);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let start = self.mem.as_ptr() as usize;
        let lo = (start + page - 1) & !(page - 1);
        let hi = (start + self.mem.len()) & !(page - 1);
        if hi > lo {
            // SAFETY: `lo..hi` lies within `mem`, which we own; no byte of
            // it is read before the kernel writes it again (the caller
            // checked that no chunk is unread), and the kernel writes it
            // only from this thread's `io_uring_enter` (caller: the ring is
            // `DEFER_TASKRUN`). Anonymous memory stays mapped (zero pages).
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
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
    /// In a socket's first chunk: its last (`Sock` keeps only the first:
    /// 4 bytes less per socket, and the slab entry is 24 bytes either way).
    tail: u32,
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
    recv: Recv,
    /// [`LIVE`], [`STOPPED`], ... (one byte: `Sock` is 16 bytes, one per
    /// socket, `docs/connection-memory.md`). The error's errno, rare, is
    /// kept beside (`Uring::errs`) while [`FAILED`] is set.
    flags: u8,
    /// Received chunks held (bounded by `Uring::max_held`, at most 1024).
    held: u16,
    /// The first received chunk not read yet (its `tail` names the last).
    head: u32,
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
/// The socket failed: its errno is in `Uring::errs`.
const FAILED: u8 = 128;

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
    failed set_failed FAILED;
}

impl Sock {
    fn new(fd: RawFd) -> Self {
        Sock {
            fd,
            recv: Recv::Idle,
            flags: LIVE,
            held: 0,
            head: NIL,
            send: NIL,
        }
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
    /// `SEND_ZC` notifications still owed: the kernel may still read `buf`.
    notifs: u16,
    /// Every byte was sent (or the send failed) while notifications were
    /// owed: the send ends at the last one.
    ended: bool,
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
    max_held: u16,
    stats: Arc<ShardStats>,
    cqes: RefCell<Vec<(u64, i32, u32)>>,
    /// Descriptors the shard's sleep also waits for (glommio's rings:
    /// `park.rs`), and whether their poll is armed.
    watch: RefCell<Vec<(RawFd, bool)>>,
    /// SENDs queued since the last submission (see [`Uring::park`]).
    sends_queued: Cell<u32>,
    /// The errno of each socket that failed ([`FAILED`]), by slot key: kept
    /// out of `Sock`, which every socket has.
    errs: RefCell<HashMap<u32, i32>>,
    /// Sends of at least this many bytes go as `SEND_ZC` (0: never).
    send_zc: u32,
    /// The ring defers task work (`DEFER_TASKRUN`): the kernel writes the
    /// buffers only inside our `io_uring_enter`, so an idle shard may give
    /// their pages back ([`BufRing::trim`]).
    can_trim: bool,
    /// Since when the shard's sleeps end with nothing (see [`Uring::park`]).
    quiet_since: Cell<Option<std::time::Instant>>,
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
            .max(1) as u16;
        let can_trim = ring.params().is_setup_single_issuer();
        let send_zc = if cfg.send_zc > 0 && !zero_copy_sends(&ring) {
            tracing::warn!("io_uring SEND_ZC with usage reports needs Linux 6.2: sends are copied");
            0
        } else {
            cfg.send_zc
        };
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
            errs: RefCell::new(HashMap::new()),
            send_zc,
            can_trim,
            quiet_since: Cell::new(None),
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
                self.send_sqe(s.fd, &sb.buf, key)
            };
            self.push(sqe);
        }
        dirty.clear();
        let mut list = self.dirty.borrow_mut();
        if list.is_empty() {
            *list = dirty;
        }
    }

    /// The request that sends `buf` on `fd`: `SEND_ZC` from
    /// `UringConfig::send_zc` bytes on, else a plain `SEND`.
    fn send_sqe(&self, fd: RawFd, buf: &[u8], key: u32) -> squeue::Entry {
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        if self.send_zc != 0 && len >= self.send_zc {
            self.stats.uring_sends_zc.inc();
            opcode::SendZc::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .build()
                .user_data(ud(OP_SEND, key))
        } else {
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud(OP_SEND, key))
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

    /// Records the socket's error (an errno; the last one counts).
    fn set_err(&self, key: u32, s: &mut Sock, errno: i32) {
        s.set_failed(true);
        self.errs.borrow_mut().insert(key, errno);
    }

    /// The socket's errno (0: none).
    fn err_of(&self, key: u32, s: &Sock) -> i32 {
        if !s.failed() {
            return 0;
        }
        self.errs.borrow().get(&key).copied().unwrap_or(libc::EIO)
    }

    /// The socket's errno, cleared (0: none).
    fn take_err(&self, key: u32, s: &mut Sock) -> i32 {
        if !s.failed() {
            return 0;
        }
        s.set_failed(false);
        self.errs.borrow_mut().remove(&key).unwrap_or(libc::EIO)
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
        if !self.errs.borrow().is_empty() {
            self.errs.borrow_mut().remove(&key);
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
            if s.recv != Recv::Idle || s.stopped() || s.eof() || s.failed() {
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
            if s.poll_armed() || s.stopped() || s.eof() || s.failed() {
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
                if s.head != NIL {
                    chunks[s.head as usize].tail = c.tail;
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
                && !s.failed()
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
                            Some(code) => self.set_err(key, s, code),
                            None => self.set_err(key, s, libc::EIO),
                        }
                    }
                }
            }
            (s.eof() && s.head == NIL, self.err_of(key, s))
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
        if s.failed() {
            return Err(io::Error::from_raw_os_error(self.err_of(key, s)));
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
            notifs: 0,
            ended: false,
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
            .with_sock(key, |s| (s.accept_armed(), self.take_err(key, s)))
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
        self.with_sock(key, |s| s.head != NIL || s.eof() || s.failed())
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
        self.errs.borrow_mut().remove(&key);
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
                OP_SEND => self.on_send(key, res, flags),
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
        // Received bytes came since the last trim and none waits unread:
        // a second without any completion gives the ring's pages back.
        let trim = sends == 0
            && self.can_trim
            && self.bufs.touched.get()
            && self.chunks.borrow().is_empty();
        let limit = if sends > 0 {
            Some(timeout.map_or(SEND_GRACE, |t| t.min(SEND_GRACE)))
        } else if trim {
            Some(timeout.map_or(IDLE_TRIM, |t| t.min(IDLE_TRIM)))
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
        let timed_out = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ETIME));
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
        let n = self.reap_with(false);
        if !(trim && timed_out && n == 0) {
            self.quiet_since.set(None);
        } else if self.chunks.borrow().is_empty() {
            // Idle: a sleep that timed out with nothing (glommio's own
            // timers may end sleeps more often than IDLE_TRIM). The clock
            // is read only here, never on a busy path.
            let now = std::time::Instant::now();
            match self.quiet_since.get() {
                None => self.quiet_since.set(Some(now)),
                Some(t) if now.duration_since(t) >= IDLE_TRIM => {
                    self.quiet_since.set(None);
                    self.bufs.trim();
                    self.stats.uring_ring_trims.inc();
                }
                Some(_) => {}
            }
        }
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
                    let mut chunks = self.chunks.borrow_mut();
                    let c = chunks.insert(Chunk {
                        bid: b,
                        off,
                        len: n as u32,
                        next: NIL,
                        tail: NIL,
                    }) as u32;
                    if s.head == NIL {
                        s.head = c;
                    } else {
                        let last = chunks[s.head as usize].tail;
                        chunks[last as usize].next = c;
                    }
                    chunks[s.head as usize].tail = c;
                    drop(chunks);
                    s.held = s.held.saturating_add(1);
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
                    self.set_err(key, s, -n);
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
            && !s.failed()
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

    fn on_send(&self, key: u32, res: i32, flags: u32) {
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
        if cqueue::notif(flags) {
            // A `SEND_ZC`'s notification: the kernel let go of the bytes.
            sb.notifs = sb.notifs.saturating_sub(1);
            if res as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
                self.stats.uring_zc_copied.inc();
            }
            if sb.notifs > 0 || !sb.ended {
                return;
            }
        } else {
            if cqueue::more(flags) {
                // A `SEND_ZC`: its notification follows.
                sb.notifs += 1;
            }
            if res > 0 && !(s.stopped() && s.owns_fd()) {
                sb.off += res as usize;
                if sb.off < sb.buf.len() {
                    // A short send: the rest goes next (the bytes sent stay
                    // where they are until any notification).
                    let sqe = self.send_sqe(s.fd, &sb.buf[sb.off..], key);
                    drop(sends);
                    drop(socks);
                    self.push(sqe);
                    return;
                }
            } else if res == 0 && !s.stopped() {
                self.set_err(key, s, libc::EPIPE);
            } else if res < 0 && res != -libc::ECANCELED {
                self.set_err(key, s, -res);
            }
            if sb.notifs > 0 {
                // The kernel may still read the bytes: the send ends at
                // the last notification.
                sb.ended = true;
                return;
            }
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
        let (bits, must) = if s.failed() {
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
                    self.set_err(key, s, -res);
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
            send_zc: 0,
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

/// Whether the ring has `SEND_ZC` with usage reports (6.2: the release
/// that added `IORING_SEND_ZC_REPORT_USAGE`; the opcode itself is 6.0).
fn zero_copy_sends(ring: &IoUring) -> bool {
    let mut probe = io_uring::register::Probe::new();
    let has_op = ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::SendZc::CODE);
    let release = kernel_release();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    has_op && (major, minor) >= (6, 2)
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
                send_zc: 0,
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
        assert_eq!(u.with_sock(key, |s| (s.held, s.head)), Some((0, NIL)));
        assert_eq!(u.bufs.available(), 16, "every buffer back in the ring");
        u.close(key, a);
        u.submit();
    }

    /// An idle shard gives the buffer ring's pages back after a second
    /// without completions (once per idle spell), and bytes that arrive
    /// afterwards are received whole into the fresh pages.
    #[test]
    fn idle_ring_trims_its_pages_and_receives_after() {
        let (u, key, a, b) = ring_with_socket(4);
        let trims = |u: &Uring| u.stats.uring_ring_trims.get();
        let mut got = Vec::new();
        for round in 0..2u8 {
            let msg = [b'x' + round; 9];
            // SAFETY: nine bytes from a valid buffer.
            let w = unsafe { libc::write(b.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
            assert_eq!(w, 9);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !u.has_input(key) {
                assert!(std::time::Instant::now() < deadline, "no completion");
                u.park(Some(std::time::Duration::from_secs(5)));
            }
            let mut buf = [0u8; 16];
            let n = u.recv(key, &mut buf).expect("bytes");
            assert_eq!(&buf[..n], &msg[..], "round {round}");
            got.push(n);
            let before = trims(&u);
            // No traffic: sleeps that end with nothing for IDLE_TRIM trim
            // (short ones too, as glommio's timers may end them).
            if u.can_trim {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while trims(&u) == before {
                    assert!(std::time::Instant::now() < deadline, "never trimmed");
                    u.park(Some(std::time::Duration::from_millis(300)));
                }
                assert_eq!(trims(&u), before + 1, "trimmed once idle");
                // Nothing received since: the next sleep does not trim again.
                u.park(Some(std::time::Duration::from_millis(10)));
                assert_eq!(trims(&u), before + 1);
            }
        }
        assert_eq!(got, [9, 9]);
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
