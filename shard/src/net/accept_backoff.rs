//! Backing off when accept(2) fails: out of descriptors (EMFILE, ENFILE) or
//! kernel memory (ENOBUFS, ENOMEM) the pending connection stays queued and
//! the listener stays readable, so an immediate retry spins and a fixed short
//! sleep logs the same line dozens of times a second.
//!
//! An *episode* runs from the first failure to the next successful accept.
//! Its first failure is logged once at warn; the waits double from
//! [`FIRST`] to [`CAP`]; its end is logged once at info with the count of
//! failed attempts and how long it lasted. Every failure is counted
//! (`ShardStats::accept_errors`, `ringmq_accept_errors_total`).

use std::io;
use std::time::{Duration, Instant};

/// The first wait after a failed accept.
pub const FIRST: Duration = Duration::from_millis(5);
/// The longest wait: a freed descriptor is used within this.
pub const CAP: Duration = Duration::from_secs(1);

/// The state of one acceptor's failure episode.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Failed attempts in the current episode (0: none under way).
    failures: u64,
    /// When the episode started.
    since: Option<Instant>,
    /// The wait after the latest failure.
    wait: Duration,
}

impl Backoff {
    /// A failed accept: logs if it opens an episode; returns how long to wait.
    pub fn failed(&mut self, shard: usize, e: &io::Error) -> Duration {
        if self.failures == 0 {
            self.since = Some(Instant::now());
            self.wait = FIRST;
            tracing::warn!(
                shard,
                "accept failed: {e}; retrying with backoff ({FIRST:?} doubling to {CAP:?}), \
                 logged again when accepting resumes"
            );
        } else {
            self.wait = (self.wait * 2).min(CAP);
        }
        self.failures += 1;
        self.wait
    }

    /// A successful accept: closes an episode under way (logged once).
    #[inline]
    pub fn recovered(&mut self, shard: usize) {
        if self.failures == 0 {
            return;
        }
        let lasted = self.since.map_or(Duration::ZERO, |t| t.elapsed());
        tracing::info!(
            shard,
            failures = self.failures,
            "accept resumed after {} failed attempts over {lasted:.1?}",
            self.failures
        );
        *self = Backoff::default();
    }

    /// Failed attempts in the current episode.
    #[cfg(test)]
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::default();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<Duration> = (0..12).map(|_| b.failed(0, &e)).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), CAP);
        assert_eq!(b.failures(), 12);
        b.recovered(0);
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(0, &e), FIRST, "a new episode starts over");
    }
}
