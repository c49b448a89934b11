//! The shard's readiness poller: one epoll set (or, with `--io-backend
//! io_uring`, the shard's own ring: `uring.rs`) for every client socket and
//! listener of the shard, plus one timer heap for their deadlines. The
//! connection code sees the same slots either way: a waker and readiness
//! bits, set by epoll events or by io_uring completions.
//!
//! glommio waits for a socket with one io_uring poll request per waiting
//! stream, each a ~500-byte heap `Source`: an idle connection would pay for
//! it the whole time it is idle. Here a socket is registered once
//! (edge-triggered) and costs one slab slot (a waker and a readiness byte);
//! only the epoll descriptor itself is waited on through glommio, so the
//! executor still parks in io_uring when nothing happens.
//!
//! Deadlines (CONNECT timeout, keep alive, slow consumer) are entries of one
//! binary heap (16 bytes each) driven by one glommio timer per shard. An entry
//! only wakes its owner, which checks its own clocks and re-arms if needed,
//! so a stale entry costs a spurious wake-up, never a wrong close.

use super::uring::{Uring, UringConfig};
use crate::notify::Notify;
use crate::stats::ShardStats;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The socket has bytes, an end of stream or an error to read.
pub(crate) const READABLE: u8 = 1;
/// The socket takes bytes.
pub(crate) const WRITABLE: u8 = 2;
/// The peer closed its side or the socket failed: reads report it, so
/// [`READABLE`] stays set however short the read before it (epoll announces
/// an end of stream once, often in the same edge as the last bytes).
const ENDED: u8 = 4;

pub(crate) use super::slots::{Slot, Slots};

/// How the shard's sockets are served (`--io-backend`).
enum Backend {
    /// One epoll set, waited on through glommio; `recv`/`send` syscalls.
    Epoll(OwnedFd),
    /// A ring of the shard's own (`uring.rs`), waited on through glommio.
    Uring(Rc<Uring>),
}

/// Readiness and deadlines of one shard's sockets.
pub(crate) struct Poller {
    backend: Backend,
    slots: Rc<RefCell<Slots>>,
    /// (deadline in ms since `epoch`, slot key), earliest first.
    timers: RefCell<BinaryHeap<Reverse<(u64, u32)>>>,
    /// The deadline the run loop sleeps until (u64::MAX: none).
    sleeping_until: Cell<u64>,
    /// Wakes the run loop when an earlier deadline is armed.
    kick: Notify,
    epoch: Instant,
}

/// A descriptor registered with the shard's poller: 8 bytes (the
/// descriptor and its slot key). Which backend serves it is the thread's:
/// one shard, hence one poller, per thread; its ring (io_uring) is in
/// [`RING`], not in every connection's handle.
pub(crate) struct Io {
    pub fd: OwnedFd,
    pub key: u32,
}

thread_local! {
    /// The io_uring ring of the poller of this thread's shard (None: epoll).
    static RING: RefCell<Option<Rc<Uring>>> = const { RefCell::new(None) };
}

/// `f` on this thread's io_uring ring; `None` on epoll.
#[inline]
fn with_ring<R>(f: impl FnOnce(&Uring) -> R) -> Option<R> {
    // `try_with`: None once the thread's locals are torn down.
    RING.try_with(|r| r.borrow().as_deref().map(f))
        .ok()
        .flatten()
}

impl Io {
    /// Non-blocking `recv` into `buf`; `WouldBlock` when nothing is there.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = with_ring(|u| u.recv(self.key, buf)) {
            return r;
        }
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the descriptor is ours.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// io_uring: appends up to `max` bytes already received to `dst`;
    /// `None` when none wait (or on epoll): read with [`Io::recv`].
    pub fn recv_buffered(
        &self,
        dst: &mut bytes::BytesMut,
        max: usize,
    ) -> Option<io::Result<usize>> {
        with_ring(|u| u.recv_append(self.key, dst, max)).flatten()
    }

    /// Non-blocking `send`; `WouldBlock` when the socket takes nothing now.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if let Some(r) = with_ring(|u| u.send(self.key, buf)) {
            return r;
        }
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; the descriptor is ours.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// [`Io::send`] of the first `n` bytes of `buf`, which leave it; on
    /// io_uring the bytes themselves go to the send (no copy).
    pub fn send_from(&self, buf: &mut bytes::BytesMut, n: usize) -> io::Result<usize> {
        if let Some(r) = with_ring(|u| u.send_from(self.key, buf, n)) {
            return r;
        }
        let k = self.send(&buf[..n])?;
        bytes::Buf::advance(buf, k);
        Ok(k)
    }

    /// Shuts both directions down (the peer sees the end of stream at once).
    pub fn shutdown(&self) {
        // Queued sends reach the socket before its end.
        with_ring(|u| u.submit());
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Poller {
    /// A new, empty poller: an io_uring ring with `uring` set, else an epoll set.
    pub fn new(uring: Option<UringConfig>, stats: Arc<ShardStats>) -> io::Result<Self> {
        let slots = Rc::new(RefCell::new(Slots::new()));
        let backend = match uring {
            Some(cfg) => Backend::Uring(Rc::new(Uring::new(cfg, slots.clone(), stats)?)),
            None => {
                // SAFETY: plain syscall; the result is checked and owned below.
                let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
                // SAFETY: `fd` is a fresh descriptor owned by nobody else.
                Backend::Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        RING.with(|r| {
            *r.borrow_mut() = match &backend {
                Backend::Uring(u) => Some(u.clone()),
                Backend::Epoll(_) => None,
            };
        });
        Ok(Poller {
            backend,
            slots,
            timers: RefCell::new(BinaryHeap::new()),
            sleeping_until: Cell::new(u64::MAX),
            kick: Notify::default(),
            epoch: Instant::now(),
        })
    }

    /// Registers a non-blocking client socket (edge-triggered, read and write).
    pub fn register(&self, fd: OwnedFd) -> io::Result<Io> {
        self.add(fd, false)
    }

    /// Registers a non-blocking listening socket ([`Poller::accept`] takes
    /// its connections).
    pub fn register_listener(&self, fd: OwnedFd) -> io::Result<Io> {
        self.add(fd, true)
    }

    fn add(&self, fd: OwnedFd, listener: bool) -> io::Result<Io> {
        let key = self.slots.borrow_mut().insert(Slot::new(WRITABLE)) as u32;
        let epfd = match &self.backend {
            Backend::Uring(u) => {
                u.add(key, fd.as_raw_fd(), listener);
                return Ok(Io { fd, key });
            }
            Backend::Epoll(epfd) => epfd,
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key as u64,
        };
        // SAFETY: both descriptors are valid; `ev` outlives the call.
        let r = unsafe {
            libc::epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if let Err(e) = cvt(r) {
            self.slots.borrow_mut().remove(key as usize);
            return Err(e);
        }
        Ok(Io { fd, key })
    }

    /// Takes the descriptor back out to hand it to another shard, with the
    /// bytes already received from it and not read yet (the io_uring
    /// backend's; they go through the connection's stack before the handoff).
    /// On io_uring a send still in flight is waited for, 10 s at most (a
    /// client that reads nothing): then the socket is closed, `TimedOut`.
    pub async fn deregister(&self, io: Io) -> io::Result<(OwnedFd, Vec<u8>)> {
        let epfd = match &self.backend {
            Backend::Uring(u) => {
                // No receive may be in flight when another shard arms its own.
                u.stop(io.key);
                let key = io.key;
                let until = self.after(Duration::from_secs(10));
                self.arm(key, until);
                std::future::poll_fn(|cx| {
                    if u.quiet(key) || self.now_ms() >= until {
                        Poll::Ready(())
                    } else {
                        self.set_waker(key, cx.waker());
                        Poll::Pending
                    }
                })
                .await;
                if !u.quiet(key) {
                    u.close(key, io.fd);
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let rest = u.take_rest(io.key);
                self.release(io.key);
                return Ok((io.fd, rest));
            }
            Backend::Epoll(epfd) => epfd,
        };
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both descriptors are valid; `ev` outlives the call.
        unsafe {
            libc::epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                io.fd.as_raw_fd(),
                &mut ev,
            )
        };
        self.release(io.key);
        Ok((io.fd, Vec::new()))
    }

    /// Frees the slot of a descriptor about to be closed (closing the last
    /// descriptor of a socket removes it from the epoll set).
    fn release(&self, key: u32) {
        self.slots.borrow_mut().try_remove(key as usize);
    }

    /// Closes a registered descriptor (on io_uring: once its requests ended).
    pub fn close(&self, io: Io) {
        match &self.backend {
            Backend::Uring(u) => u.close(io.key, io.fd),
            Backend::Epoll(_) => {
                self.release(io.key);
                drop(io.fd);
            }
        }
    }

    /// The next connection of a listener; `WouldBlock` when none waits.
    pub fn accept(&self, listener: &Io) -> io::Result<OwnedFd> {
        if let Backend::Uring(u) = &self.backend {
            return u.accept(listener.key);
        }
        // SAFETY: plain syscall; null address pointers are allowed by accept4.
        let fd = unsafe {
            libc::accept4(
                listener.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor from accept4, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The readiness bits of `key`.
    pub fn ready(&self, key: u32) -> u8 {
        self.slots.borrow().get(key as usize).map_or(0, |s| s.ready)
    }

    /// Forgets readiness (the last call would block). On io_uring the
    /// readable bit stays while received bytes, an end of stream or an
    /// error wait (no completion will announce them again).
    pub fn clear(&self, key: u32, mut bits: u8) {
        if let Backend::Uring(u) = &self.backend {
            if bits & READABLE != 0 && u.has_input(key) {
                bits &= !READABLE;
            }
        }
        if let Some(s) = self.slots.borrow_mut().get_mut(key as usize) {
            if s.ready & ENDED != 0 {
                bits &= !READABLE;
            }
            s.ready &= !bits;
        }
    }

    /// The task to wake on the next event of `key`.
    pub fn set_waker(&self, key: u32, w: &Waker) {
        if let Some(s) = self.slots.borrow_mut().get_mut(key as usize) {
            match &s.waker {
                Some(old) if old.will_wake(w) => {}
                _ => s.waker = Some(w.clone()),
            }
        }
    }

    /// Waits until `key` has one of `bits`; returns its readiness.
    pub async fn wait(&self, key: u32, bits: u8) -> u8 {
        std::future::poll_fn(|cx| {
            let r = self.ready(key);
            if r & bits != 0 {
                Poll::Ready(r)
            } else {
                self.set_waker(key, cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Milliseconds on the poller's clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The poller's clock `d` from now.
    pub fn after(&self, d: Duration) -> u64 {
        self.now_ms().saturating_add(d.as_millis() as u64)
    }

    /// Wakes `key` at `at_ms` (or soon after).
    pub fn arm(&self, key: u32, at_ms: u64) {
        self.timers.borrow_mut().push(Reverse((at_ms, key)));
        if at_ms < self.sleeping_until.get() {
            self.kick.notify();
        }
    }

    /// Reads every pending event (completion) and wakes the owners.
    fn dispatch(&self) -> usize {
        let epfd = match &self.backend {
            Backend::Uring(u) => return u.reap(),
            Backend::Epoll(epfd) => epfd,
        };
        const BATCH: usize = 256;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        let mut total = 0;
        loop {
            // SAFETY: `events` is valid for BATCH entries; the descriptor is ours.
            let n = unsafe {
                libc::epoll_wait(
                    epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    BATCH as libc::c_int,
                    0,
                )
            };
            if n <= 0 {
                return total;
            }
            let mut slots = self.slots.borrow_mut();
            for ev in &events[..n as usize] {
                let Some(s) = slots.get_mut(ev.u64 as usize) else {
                    continue;
                };
                let e = ev.events as libc::c_int;
                if e & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    s.ready |= READABLE;
                }
                if e & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    s.ready |= ENDED;
                }
                if e & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    s.ready |= WRITABLE;
                }
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
            total += n as usize;
            if (n as usize) < BATCH {
                return total;
            }
        }
    }

    /// Wakes the owners of every socket ready and every deadline reached,
    /// without waiting. For a task that keeps the shard busy for many turns
    /// (bulk router work): glommio reaps the io_uring poll on the epoll set
    /// only when its task queue runs dry or its preempt timer (10 ms) fires,
    /// so without this the shard's other sockets would wait up to 10 ms
    /// behind the busy task. One `epoll_wait(0)` per call; on io_uring the
    /// completions are read from memory and what was queued is submitted
    /// (one `io_uring_enter` when anything was).
    pub fn poll_now(&self) {
        self.dispatch();
        self.fire_timers();
        if let Backend::Uring(u) = &self.backend {
            u.submit();
        }
    }

    /// Wakes the owners of every deadline reached.
    fn fire_timers(&self) -> usize {
        let now = self.now_ms();
        let mut fired = 0;
        loop {
            let key = {
                let mut timers = self.timers.borrow_mut();
                match timers.peek() {
                    Some(Reverse((at, _))) if *at <= now => timers.pop().map(|Reverse((_, k))| k),
                    _ => None,
                }
            };
            let Some(key) = key else { return fired };
            if let Some(w) = self
                .slots
                .borrow_mut()
                .get_mut(key as usize)
                .and_then(|s| s.waker.take())
            {
                w.wake();
            }
            fired += 1;
        }
    }

    /// A future that completes once the epoll set has events: one io_uring
    /// poll request on the epoll descriptor (`glommio::net::poll_readable`,
    /// added to our vendored glommio: vendor/README.md), armed once per
    /// wake-up of the whole shard, never per socket.
    fn epoll_readable(&self) -> io::Result<impl std::future::Future<Output = ()>> {
        let fd = match &self.backend {
            Backend::Uring(u) => u.fd(),
            Backend::Epoll(epfd) => epfd.as_raw_fd(),
        };
        let ready = glommio::net::poll_readable(fd);
        Ok(async move {
            // An error of the poll itself shows in the next epoll_wait.
            let _ = ready.await;
        })
    }

    /// The poller's task: runs for the life of the shard.
    pub async fn run(self: Rc<Self>) {
        match &self.backend {
            Backend::Uring(u) => {
                // The shard sleeps in its ring from now on (`park.rs`):
                // completions are read at every executor loop, what a tick
                // queued is submitted by the sleep that follows it.
                super::park::install(u);
                self.run_deadlines(u).await
            }
            Backend::Epoll(_) => self.run_epoll().await,
        }
    }

    /// io_uring: the poller's task drives the deadline heap, and submits
    /// what a tick queued when other tasks are runnable after it (a busy
    /// shard: its sends would otherwise wait for the next executor loop);
    /// when none is, the shard is about to park and the park submits them
    /// with the enter that sleeps.
    ///
    /// glommio's timer for the earliest deadline is kept while that holds:
    /// this task wakes at every tick that queues a send or a request
    /// (`u.pending`), and a new timer per wake-up cost an insert and a
    /// removal in glommio's timer map and a clock read each (`perf record`
    /// at 10k msg/s: `Reactor::insert_timer`, `BTreeMap::remove`,
    /// `clock_gettime` under `Timer::poll`).
    async fn run_deadlines(&self, u: &Uring) {
        let mut timer: Option<(u64, glommio::timer::Timer)> = None;
        loop {
            self.fire_timers();
            if glommio::executor().has_runnable_tasks() {
                u.submit();
            }
            self.arm_deadline(&mut timer);
            let deadline = until_deadline(&mut timer);
            let fired = futures_lite::future::or(
                async {
                    deadline.await;
                    true
                },
                async {
                    futures_lite::future::or(self.kick.wait(), u.pending.wait()).await;
                    false
                },
            )
            .await;
            if fired {
                // A fired timer is not awaited again: the next round makes
                // a new one (for the same deadline too, should the clock's
                // millisecond not have turned yet).
                timer = None;
            }
            self.sleeping_until.set(0);
        }
    }

    fn next_deadline(&self) -> u64 {
        self.timers
            .borrow()
            .peek()
            .map_or(u64::MAX, |Reverse((at, _))| *at)
    }

    /// Before waiting: `timer` fires at the earliest deadline of the heap
    /// (none when it is empty). A timer already set for that deadline is
    /// kept, not re-armed, so a wait that the same deadline bounds costs no
    /// timer work.
    fn arm_deadline(&self, timer: &mut Option<(u64, glommio::timer::Timer)>) {
        let next = self.next_deadline();
        self.sleeping_until.set(next);
        if next == u64::MAX {
            *timer = None;
        } else if timer.as_ref().is_none_or(|(at, _)| *at != next) {
            let left = next.saturating_sub(self.now_ms());
            *timer = Some((
                next,
                glommio::timer::Timer::new(Duration::from_millis(left)),
            ));
        }
    }

    /// epoll: waits on the epoll set through glommio, and drives the
    /// deadline heap.
    async fn run_epoll(&self) {
        // Wake-ups by the epoll stream that found no event, in a row.
        let mut spurious = 0u32;
        let mut by_epoll = false;
        let mut armed: Option<Pin<Box<dyn std::future::Future<Output = ()>>>> = None;
        // glommio's timer for the earliest deadline, kept while that holds:
        // glommio keeps its sleep timeout armed while the deadline of its
        // next timer does not change (vendor/README.md).
        let mut timer: Option<(u64, glommio::timer::Timer)> = None;
        loop {
            let events = self.dispatch();
            self.fire_timers();
            if by_epoll && events == 0 {
                spurious += 1;
                if spurious > 3 {
                    // Never spin, should the epoll poll keep completing empty.
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            } else {
                spurious = 0;
            }
            // The epoll wait stays armed across timer and kick wake-ups.
            let ready = match &mut armed {
                Some(r) => r,
                None => match self.epoll_readable() {
                    Ok(f) => armed.insert(Box::pin(f)),
                    Err(e) => {
                        tracing::warn!("epoll wait failed: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            self.arm_deadline(&mut timer);
            let deadline = until_deadline(&mut timer);
            let ready = async {
                ready.as_mut().await;
                true
            };
            by_epoll = futures_lite::future::or(ready, async {
                futures_lite::future::or(deadline, self.kick.wait()).await;
                false
            })
            .await;
            if by_epoll {
                armed = None;
            }
            self.sleeping_until.set(0);
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // The thread's ring goes with its poller (a later poller on this
        // thread, e.g. a broker restarted in a test, sets its own).
        if let Backend::Uring(u) = &self.backend {
            let _ = RING.try_with(|r| {
                let mut r = r.borrow_mut();
                if r.as_ref().is_some_and(|x| Rc::ptr_eq(x, u)) {
                    *r = None;
                }
            });
        }
    }
}

/// Resolves when `timer` (set by `Poller::arm_deadline`) fires; never when
/// there is none.
async fn until_deadline(timer: &mut Option<(u64, glommio::timer::Timer)>) {
    match timer {
        Some((_, t)) => {
            t.await;
        }
        None => std::future::pending::<()>().await,
    }
}
