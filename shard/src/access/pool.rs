//! Threads that check passwords, off every shard's thread.
//!
//! Key stretching ($7$ PBKDF2, argon2id, SCRAM's Hi) takes milliseconds on
//! purpose. Not glommio's `spawn_blocking`: each executor has one blocking
//! thread and it runs the store's commits (`store/engine.rs`), so a storm of
//! wrong passwords there would hold back every durable PUBACK. This pool is
//! its own: `max(1, CPUs / 2)` threads for the whole process at SCHED_IDLE,
//! unpinned (shards are pinned; these float), fed by one
//! unbounded MPMC channel (each shard bounds what it queues:
//! [`super::authn::MAX_PENDING_CHECKS`]). The answer travels back on a
//! one-slot channel whose async receive wakes the shard's task from the pool
//! thread (glommio queues foreign wakes to the task's executor).

use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

fn sender() -> &'static flume::Sender<Job> {
    static POOL: OnceLock<flume::Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = flume::unbounded::<Job>();
        let n = (crate::config::available_cpus() / 2).max(1);
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("ringmq-auth-{i}"))
                .spawn(move || {
                    lower_priority();
                    while let Ok(job) = rx.recv() {
                        // A panicking check must not take the thread with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .expect("spawn a password-check thread");
        }
        tx
    })
}

/// SCHED_IDLE for the calling thread: where a check thread and a shard
/// share a CPU, the shard preempts it at once when it wakes (a nice value
/// alone still lets the check run out its time slice first: measured, a
/// storm then tripled the shard's latency). Checks run on CPU time nobody
/// else wants; a storm of them slows logins, not the shard's clients.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on this thread's own id with a valid param.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
    }
}

/// Starts the pool from the calling thread (`server::start`, the main
/// thread): the threads inherit its CPU affinity, the process's, not the
/// one CPU of a pinned shard that would otherwise start them lazily.
pub fn start() {
    sender();
}

/// Runs `f` on the pool; the future resolves with its result (`None` if it panicked).
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = flume::bounded(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    sender().send(job).ok()?;
    rx.recv_async().await.ok()
}
