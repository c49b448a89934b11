//! Starting and stopping the broker is reliable: every test (and every deployment) depends on
//! it. Brokers with 2 shards are started and stopped from several threads at once, the way
//! the test suite itself does.
#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

/// Issue 3 ("a shard that cannot start is an error of `start`"): under parallel starts every
/// 2-shard broker starts (ready, serving) and shuts down gracefully. This caught a glommio
/// executor parking with runnable work (vendor/README.md).
#[test]
fn two_shard_brokers_start_and_stop_reliably_in_parallel() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let started = Instant::now();
                    let mut b = std::panic::catch_unwind(|| Broker::start(2))
                        .unwrap_or_else(|_| panic!("thread {t}: start #{i} failed"));
                    let start = started.elapsed();
                    let stopping = Instant::now();
                    assert!(
                        b.shutdown(Duration::from_secs(10)),
                        "thread {t}: shutdown #{i} hangs"
                    );
                    let stop = stopping.elapsed();
                    if start + stop > Duration::from_secs(1) {
                        eprintln!("thread {t} #{i}: slow: start {start:?}, shutdown {stop:?}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("every start and stop succeeds");
    }
}
