//! `conn`: a connection storm. Opens N connections (a bounded number of handshakes in
//! flight per core), reports connects/s and CONNECT-to-CONNACK latency, holds them all
//! open, and reads the broker's memory from /proc/PID/status when given its pid.

use crate::cli::ConnArgs;
use crate::conn::{with_timeout, Conn, Login, SETUP_TIMEOUT};
use crate::core::wait_until;
use crate::payload::{epoch, now_ns};
use crate::plan::protocol;
use crate::runner::{on_cores, placement, raise_fd_limit};
use crate::stats::{proc_memory, BrokerMemory, CoreStats, Latency, Summary};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct StormShared {
    args: ConnArgs,
    target: crate::transport::Target,
    cores: usize,
    done: AtomicUsize,
    last_connect_ns: AtomicU64,
    release: AtomicBool,
    tag: String,
}

pub fn run(a: &ConnArgs) -> Result<Summary, String> {
    epoch();
    raise_fd_limit();
    let mut broker = a.common.broker.clone();
    broker.apply_url();
    let target = crate::transport::Target::from_args(&broker)?;
    let addr = target.describe();
    let cores = a.common.run.cores.max(1);
    let pinned = placement(&a.common.run)?;
    let before = a.broker_pid.and_then(proc_memory);
    let sh = Arc::new(StormShared {
        args: a.clone(),
        target,
        cores,
        done: AtomicUsize::new(0),
        last_connect_ns: AtomicU64::new(0),
        release: AtomicBool::new(false),
        tag: format!("{}-", std::process::id() % 100_000),
    });
    let start_ns = now_ns();
    let started = Instant::now();
    let (s2, p2) = (sh.clone(), pinned.clone());
    let worker = std::thread::spawn(move || {
        let s3 = s2.clone();
        on_cores(s2.cores, p2.as_deref(), move |core| {
            storm_core(s3.clone(), core)
        })
    });
    // Wait until every core has tried all of its connections.
    while sh.done.load(Ordering::Acquire) < cores && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let open_secs = (sh
        .last_connect_ns
        .load(Ordering::Acquire)
        .saturating_sub(start_ns)) as f64
        / 1e9;
    let hold_until = started.elapsed() + a.hold;
    std::thread::sleep(hold_until.saturating_sub(started.elapsed()));
    let held = a.broker_pid.and_then(proc_memory);
    sh.release.store(true, Ordering::Release);
    let results = worker
        .join()
        .map_err(|_| "storm thread panicked".to_string())??;
    let mut t = CoreStats::default();
    for r in results {
        t.merge(r);
    }
    let mut s = summarize(a, addr, t, open_secs, pinned.unwrap_or_default());
    if let (Some(pid), Some((rss0, _)), Some((rss1, hwm))) = (a.broker_pid, before, held) {
        s.broker_memory = Some(BrokerMemory {
            pid,
            rss_before_kb: rss0,
            rss_after_kb: rss1,
            hwm_kb: hwm,
            per_connection_bytes: (rss1.saturating_sub(rss0) * 1024) / s.connections.max(1),
        });
    }
    Ok(s)
}

fn summarize(
    a: &ConnArgs,
    addr: String,
    t: CoreStats,
    open_secs: f64,
    cpus: Vec<usize>,
) -> Summary {
    let mut s = Summary {
        scenario: "conn".into(),
        broker: addr,
        mqtt: format!("{:?}", a.common.broker.mqtt),
        cores: a.common.run.cores.max(1),
        cpus,
        connections: t.connected,
        connect_failures: t.connect_failures,
        connects_per_sec: if open_secs > 0.0 {
            t.connected as f64 / open_secs
        } else {
            0.0
        },
        connect_latency: Latency::from_histogram(&t.connect_latency),
        errors: t.errors,
        ..Summary::default()
    };
    s.notes.push(format!(
        "all connections open after {open_secs:.3} s, held {:.1} s",
        a.hold.as_secs_f64()
    ));
    s
}

async fn storm_core(sh: Arc<StormShared>, core: usize) -> CoreStats {
    let stats = Rc::new(RefCell::new(CoreStats::default()));
    let conns = Rc::new(RefCell::new(Vec::new()));
    let mine: Rc<Vec<usize>> = Rc::new((core..sh.args.connections).step_by(sh.cores).collect());
    let next = Rc::new(Cell::new(0usize));
    let mut workers = Vec::new();
    for _ in 0..sh.args.concurrency.max(1).min(mine.len()) {
        let (sh, stats, conns, mine, next) = (
            sh.clone(),
            stats.clone(),
            conns.clone(),
            mine.clone(),
            next.clone(),
        );
        workers.push(glommio::spawn_local(async move {
            let per_core = sh.args.rate / sh.cores as f64;
            let started = now_ns();
            while next.get() < mine.len() {
                let k = next.get();
                let i = mine[k];
                next.set(k + 1);
                if per_core > 0.0 {
                    let due = started + (k as f64 * 1e9 / per_core) as u64;
                    let wait = due.saturating_sub(now_ns());
                    glommio::timer::sleep(Duration::from_nanos(wait)).await;
                }
                let t = now_ns();
                match with_timeout(SETUP_TIMEOUT, "connect", connect(&sh, i)).await {
                    Ok(c) => {
                        let done = now_ns();
                        let mut st = stats.borrow_mut();
                        st.connected += 1;
                        st.connect_latency
                            .saturating_record(done.saturating_sub(t).max(1));
                        sh.last_connect_ns.fetch_max(done, Ordering::AcqRel);
                        conns.borrow_mut().push(c);
                    }
                    Err(e) => {
                        let mut st = stats.borrow_mut();
                        st.connect_failures += 1;
                        st.error(format!("connection {i}: {e}"));
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await;
    }
    sh.done.fetch_add(1, Ordering::AcqRel);
    wait_until(
        || sh.release.load(Ordering::Acquire),
        Duration::from_millis(10),
        Duration::from_secs(86_400),
    )
    .await;
    let conns = std::mem::take(&mut *conns.borrow_mut());
    for mut c in conns {
        c.disconnect().await;
    }
    stats.take()
}

async fn connect(sh: &StormShared, i: usize) -> std::io::Result<Conn> {
    let b = &sh.args.common.broker;
    let l = Login {
        version: protocol(b.mqtt),
        client_id: format!("{}{}c{i}", b.client_prefix, sh.tag),
        username: b.username.clone(),
        password: b.password.clone(),
        keep_alive: b.keep_alive,
        clean_start: !b.no_clean_start,
        will_topic: sh.args.will_prefix.as_ref().map(|p| format!("{p}/{i}")),
    };
    let mut c = Conn::open_target(&sh.target, l.version).await?;
    c.login(&l).await?;
    Ok(c)
}
