//! One epoll set per core for the generator's plain-TCP sockets while a run measures;
//! the core's driver (`crate::driver`) waits on it directly (`epoll_pwait2`, with a
//! timeout to the next publisher due), not through glommio.
//!
//! Why: glommio's own streams arm an io_uring `POLL_ADD` per socket after every read,
//! and its ring has no `COOP_TASKRUN`, so each delivery arriving while the generator
//! runs is task work the kernel signals with an inter-processor interrupt (on a VM an
//! exit and re-entry), and each costs a submission and a completion; every wake-up of
//! the executor then costs several `io_uring_enter` (timer cancels and re-arms). With
//! an epoll set an arrival only puts the socket on the set's ready list, and one
//! `epoll_pwait2` per wake-up collects them all (docs/benchmarking.md, *Generator
//! cost*, has the figures).
//!
//! Sockets are registered edge-triggered (`EPOLLET`) for input and output. A socket's
//! `readable` flag is set by an input event and cleared by the connection when a read
//! comes back short or `EAGAIN` (the receive queue was empty then; bytes arriving after
//! that raise a new edge). Writes are tried directly; a send that would block waits for
//! the next output edge. One waker per socket: one task drives each connection.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// Events read per `epoll_wait`.
const EVENTS: usize = 256;

#[derive(Default)]
struct Slot {
    readable: bool,
    used: bool,
}

/// The epoll set of one core (`!Send`: lives on its executor).
pub struct Poller {
    epfd: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Poller {
    pub fn new() -> io::Result<Rc<Poller>> {
        // SAFETY: epoll_create1 has no pointer arguments; a valid descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rc::new(Poller {
            // SAFETY: `fd` was just created and is owned by nobody else.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
        }))
    }

    /// Registers `fd` (non-blocking); its key. Starts readable, so bytes that arrived
    /// before the registration are read by the first attempt.
    pub fn add(&self, fd: RawFd) -> io::Result<u32> {
        let key = match self.free.borrow_mut().pop() {
            Some(k) => k,
            None => {
                let mut s = self.slots.borrow_mut();
                s.push(Slot::default());
                (s.len() - 1) as u32
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::from(key),
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r != 0 {
            self.free.borrow_mut().push(key);
            return Err(io::Error::last_os_error());
        }
        self.slots.borrow_mut()[key as usize] = Slot {
            readable: true,
            used: true,
        };
        Ok(key)
    }

    /// Forgets `key`; the caller closes the descriptor (which leaves the set).
    pub fn remove(&self, key: u32) {
        if let Some(s) = self.slots.borrow_mut().get_mut(key as usize) {
            *s = Slot::default();
            self.free.borrow_mut().push(key);
        }
    }

    pub fn readable(&self, key: u32) -> bool {
        self.slots.borrow()[key as usize].readable
    }

    /// Try a read before the next input edge.
    pub fn set_readable(&self, key: u32) {
        self.slots.borrow_mut()[key as usize].readable = true;
    }

    /// The receive queue was found empty: wait for the next input edge.
    pub fn clear_readable(&self, key: u32) {
        self.slots.borrow_mut()[key as usize].readable = false;
    }

    /// Waits up to `timeout_ns` (0: only looks) for events, marks input-ready sockets
    /// readable and appends every key with an event to `keys`. Blocks the thread: only
    /// the core's driver calls it, and only when nothing else of its executor waits on
    /// glommio for less than the timeout (`crate::driver`).
    pub fn wait(&self, timeout_ns: u64, keys: &mut Vec<u32>) -> io::Result<usize> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: epoll_pwait2(2) with a valid descriptor, room for EVENTS events, a
        // valid timespec and no signal mask.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let mut slots = self.slots.borrow_mut();
        for ev in &events[..n as usize] {
            let key = ev.u64 as u32;
            let Some(s) = slots.get_mut(key as usize).filter(|s| s.used) else {
                continue;
            };
            let e = ev.events as i32;
            if e & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                s.readable = true;
            }
            keys.push(key);
        }
        Ok(n as usize)
    }
}

/// What [`PolledFd::recv_stamped`] read.
pub struct Stamped {
    pub len: usize,
    /// The kernel's receive timestamp of the last segment read, real time (sec, nsec).
    pub stamp: Option<(i64, i64)>,
    /// Bytes still queued after the read.
    pub inq: Option<libc::c_int>,
}

/// A non-blocking socket driven through a [`Poller`] (owns the descriptor).
pub struct PolledFd {
    pub fd: OwnedFd,
    pub key: u32,
    pub poller: Rc<Poller>,
}

impl PolledFd {
    /// Takes a duplicate of `fd` (the original is closed by its owner) into `poller`.
    pub fn adopt(fd: RawFd, poller: &Rc<Poller>) -> io::Result<PolledFd> {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold; the new one is owned below.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let key = poller.add(fd.as_raw_fd())?;
        Ok(PolledFd {
            fd,
            key,
            poller: poller.clone(),
        })
    }

    /// Non-blocking `send`.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
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

    /// Non-blocking `recv`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
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

    /// Asks the kernel for a software receive timestamp with every read (`SO_TIMESTAMPNS`)
    /// and for the bytes still queued after it (`TCP_INQ`, so a read that took
    /// everything needs no second read to find the queue empty).
    pub fn enable_rx_stamps(&self) -> io::Result<()> {
        for (level, opt) in [
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
            (libc::IPPROTO_TCP, libc::TCP_INQ),
        ] {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int from the pointer we pass, on our own socket.
            let r = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    level,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Non-blocking `recvmsg`: bytes read, the kernel's receive timestamp of the last
    /// segment read (real time, (sec, nsec)) and the bytes left queued, each if the
    /// kernel gave it (`enable_rx_stamps`).
    pub fn recv_stamped(&self, buf: &mut [u8]) -> io::Result<Stamped> {
        // CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(int)): 32 + 24 on 64-bit.
        const SPACE: usize = 64;
        #[repr(C, align(8))]
        struct Cbuf([u8; SPACE]);
        let mut cbuf = Cbuf([0; SPACE]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no iovec, no control yet).
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.0.as_mut_ptr().cast();
        m.msg_controllen = SPACE as _;
        // SAFETY: `m` points at one iovec over `buf` (valid for writes of its length) and
        // at `cbuf` (SPACE bytes, aligned for cmsghdr); the descriptor is ours.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut m, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut inq = None;
        // SAFETY: CMSG_FIRSTHDR / CMSG_NXTHDR walk the control bytes the kernel wrote
        // (msg_controllen was updated by recvmsg); each header lies inside `cbuf`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    stamp = Some((ts.tv_sec, ts.tv_nsec));
                } else if (*c).cmsg_level == libc::IPPROTO_TCP && (*c).cmsg_type == libc::TCP_CM_INQ
                {
                    let v: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    inq = Some(v);
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        Ok(Stamped {
            len: n as usize,
            stamp,
            inq,
        })
    }
}

impl Drop for PolledFd {
    fn drop(&mut self) {
        self.poller.remove(self.key);
    }
}
