//! A shard-local wake-up flag: one waiting task, any number of notifiers on
//! the same executor. `!Send` by construction; cheaper than any channel.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Set by `notify`, consumed by `wait`.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter (or makes its next `wait` return at once).
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Stores the task to wake on the next `notify` and forgets an earlier
    /// notification (the caller is about to look at everything anyway).
    pub fn register(&self, w: &Waker) {
        self.set.set(false);
        let old = self.waker.take();
        self.waker.set(match old {
            Some(old) if old.will_wake(w) => Some(old),
            _ => Some(w.clone()),
        });
    }

    /// Forgets a notification nobody waited for yet (what it announced was done).
    pub fn clear(&self) {
        self.set.set(false);
    }

    /// Waits until notified, consuming the notification.
    pub fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

/// Future of [`Notify::wait`].
pub struct Wait<'a>(&'a Notify);

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}
