//! ringmq patch (vendor/README.md): a ring of the application's own that the
//! executor sleeps in, so a thread that serves its sockets through that ring
//! waits for sockets, timers and cross-executor wake-ups with one
//! `io_uring_enter` per wake-up (which also submits what the tick queued).
//!
//! Without a hook the executor sleeps in its main ring, as upstream does.

use std::{os::unix::io::RawFd, rc::Rc, time::Duration};

/// The application's side of the executor's park.
pub trait ParkHook {
    /// Called whenever the reactor polls for events without sleeping: reads
    /// what completed (from memory: no syscall unless the kernel holds work
    /// for this thread) and wakes the tasks concerned. `submit`: the executor
    /// is about to run its task queues; hand what is queued to the kernel now.
    /// Returns how many tasks it woke (any non-zero value keeps the executor
    /// awake).
    fn poll(&self, submit: bool) -> usize;

    /// Called instead of the executor's own sleep, when no task is runnable
    /// and nothing is pending in the executor's rings: submits what is queued
    /// and blocks until a completion of its own, a descriptor of
    /// [`install_park_hook`]'s list is readable, or `timeout` passed (the
    /// executor's next timer; `None`: none). Wakes the tasks concerned.
    fn sleep(&self, timeout: Option<Duration>);
}

/// Installs `hook` as the current executor's park; returns the descriptors
/// the hook must wake up for: the executor's own rings (readable when they
/// hold completions: timers, cross-executor wake-ups, glommio I/O).
///
/// # Panics
/// Outside an executor.
pub fn install_park_hook(hook: Rc<dyn ParkHook>) -> Vec<RawFd> {
    crate::executor().reactor().sys.set_park_hook(Some(hook))
}

/// Removes the current executor's park hook (it sleeps in its own ring again).
pub fn remove_park_hook() {
    crate::executor().reactor().sys.set_park_hook(None);
}
