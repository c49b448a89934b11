//! Where a shard sleeps. With `--io-backend io_uring` the shard's own ring
//! (`uring.rs`) is glommio's park (`glommio::park`, a patch of our vendored
//! glommio: vendor/README.md): when no task is runnable the executor calls
//! [`ParkHook::sleep`], which submits what the tick queued (sends, re-armed
//! receives) and waits for sockets, glommio's timers (the wait's timeout)
//! and glommio's rings (cross-shard wake-ups, its own I/O: a poll on each
//! ring's descriptor, held in our ring) with one `io_uring_enter`. Between
//! sleeps, [`ParkHook::poll`] reads completions from shared memory at every
//! executor loop, no syscall.
//!
//! Before: glommio slept in its main ring with a poll on our ring's
//! descriptor, and each wake-up cost 4-5 `io_uring_enter` across its three
//! rings and ours (bench/results/2026-12-05-park.md).

use super::uring::Uring;
use glommio::park::ParkHook;
use std::rc::Rc;
use std::time::Duration;

/// The io_uring backend's park.
struct UringPark(Rc<Uring>);

impl ParkHook for UringPark {
    fn poll(&self, submit: bool) -> usize {
        // Deferred task work (arrivals) is fetched with an enter only when
        // the executor is about to run its queues and has nothing else to
        // run: tasks already woken (a message read, its delivery to queue)
        // run first, and their sends go with the enter that fetches the
        // next arrivals (`Uring::reap_with`), or the park's. Without `submit`
        // the park follows, and its enter runs the task work.
        let enter = submit && !glommio::executor().has_runnable_tasks();
        let n = self.0.reap_with(enter);
        if submit {
            self.0.submit();
        }
        n
    }

    fn sleep(&self, timeout: Option<Duration>) {
        self.0.park(timeout);
    }
}

/// Makes `uring` the current executor's park: from now on the shard sleeps
/// in it. Call on the shard's executor.
pub(crate) fn install(uring: &Rc<Uring>) {
    let fds = glommio::park::install_park_hook(Rc::new(UringPark(uring.clone())));
    uring.watch(&fds);
}
