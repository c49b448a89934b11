//! Runs a message scenario: one glommio executor per core, clients spread round robin
//! over the cores, a start barrier once everyone is connected and subscribed, then
//! publish, drain, and merge the per-core measurements into a [`Summary`].

use crate::conn::{with_timeout, Conn, Login, SETUP_TIMEOUT};
use crate::core::{wait_until, CoreCtx, Shared};
use crate::cpus;
use crate::plan::{protocol, Plan};
use crate::progress::Progress;
use crate::stats::{CoreStats, Latency, Summary};
use crate::tracker::Tracker;
use crate::{payload, publisher, subscriber};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Handshakes in flight per core while setting up.
const SETUP_CONCURRENCY: usize = 64;

/// Resolves the broker address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}:{port}"))
}

/// Starts one executor per core running `f(core)` and collects the results.
pub fn on_cores<T, F, Fut>(cores: usize, cpus: Option<&[usize]>, f: F) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let mut handles = Vec::new();
    for core in 0..cores {
        let placement = match cpus {
            Some(c) => Placement::Fixed(c[core]),
            None => Placement::Unbound,
        };
        let f = f.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{core}"))
            .io_memory(1 << 20)
            .spawn(move || f(core))
            .map_err(|e| format!("cannot start executor on core {core}: {e}"))?;
        handles.push(h);
    }
    handles
        .into_iter()
        .map(|h| h.join().map_err(|e| format!("executor failed: {e}")))
        .collect()
}

/// The CPUs to pin to, or None with --no-pin.
pub fn placement(run: &crate::cli::RunArgs) -> Result<Option<Vec<usize>>, String> {
    if run.no_pin {
        return Ok(None);
    }
    cpus::placement(run.cores, run.cpus.as_deref()).map(Some)
}

/// Runs a planned message scenario and returns its summary.
pub fn run(plan: Plan) -> Result<Summary, String> {
    payload::epoch();
    raise_fd_limit();
    let target = crate::transport::Target::from_args(&plan.broker)?;
    let sub_target = match plan.broker.sub_port {
        Some(port) => {
            let mut b = plan.broker.clone();
            b.port = port;
            crate::transport::Target::from_args(&b)?
        }
        None => target.clone(),
    };
    let cores = plan.run.cores.max(1);
    let pinned = placement(&plan.run)?;
    let shared = Arc::new(Shared::new(plan, target, sub_target, cores));
    let progress = Progress::start(&shared, shared.plan.run.quiet);
    let s2 = shared.clone();
    let results = on_cores(cores, pinned.as_deref(), move |core| {
        core_main(s2.clone(), core)
    });
    progress.stop();
    let mut total = CoreStats::default();
    for r in results? {
        total.merge(r);
    }
    let mut s = summarize(&shared, total, pinned.unwrap_or_default());
    if shared.plan.load.rate == 0.0 {
        let w: Vec<u64> = shared
            .window_of
            .iter()
            .copied()
            .filter(|&w| w > 0)
            .collect();
        if let (Some(lo), Some(hi)) = (w.iter().min(), w.iter().max()) {
            let range = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}..{hi}")
            };
            s.notes.push(format!(
                "unlimited rate is closed loop: each publisher stays at most {range} messages ahead of its probe subscriber (--window)"
            ));
        }
    }
    Ok(s)
}

fn login(shared: &Shared, role: char, index: usize) -> Login {
    let b = &shared.plan.broker;
    Login {
        version: protocol(b.mqtt),
        client_id: shared.client_id(role, index),
        username: b.username.clone(),
        password: b.password.clone(),
        keep_alive: b.keep_alive,
        clean_start: !b.no_clean_start,
        will_topic: None,
    }
}

/// Opens, logs in and (for subscribers) subscribes `indices`, a few at a time.
async fn connect_all(
    ctx: &Rc<CoreCtx>,
    role: char,
    indices: Vec<usize>,
) -> Vec<(usize, Conn, u16)> {
    let next = Rc::new(Cell::new(0usize));
    let out = Rc::new(RefCell::new(Vec::new()));
    let indices = Rc::new(indices);
    let mut workers = Vec::new();
    for _ in 0..SETUP_CONCURRENCY.min(indices.len()) {
        let (ctx, next, out, indices) = (ctx.clone(), next.clone(), out.clone(), indices.clone());
        workers.push(glommio::spawn_local(async move {
            while next.get() < indices.len() {
                let i = indices[next.get()];
                next.set(next.get() + 1);
                let setup = with_timeout(SETUP_TIMEOUT, "setup", connect_one(&ctx, role, i));
                match setup.await {
                    Ok((c, w)) => out.borrow_mut().push((i, c, w)),
                    Err(e) => {
                        let mut st = ctx.stats.borrow_mut();
                        st.connect_failures += 1;
                        st.error(format!("{role}{i} setup: {e}"));
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await;
    }
    Rc::try_unwrap(out)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

async fn connect_one(ctx: &CoreCtx, role: char, i: usize) -> io::Result<(Conn, u16)> {
    let sh = &ctx.shared;
    let l = login(sh, role, i);
    let started = payload::now_ns();
    let target = if role == 's' {
        &sh.sub_target
    } else {
        &sh.target
    };
    let mut conn = Conn::open_target(target, l.version).await?;
    let ack = conn.login(&l).await?;
    {
        let mut st = ctx.stats.borrow_mut();
        st.connected += 1;
        st.connect_latency
            .saturating_record(payload::now_ns().saturating_sub(started).max(1));
    }
    let heard = role == 's' || sh.probe_of[i].is_some();
    let default = crate::plan::default_inflight(l.version, sh.plan.load.qos, heard);
    let window = ack
        .properties
        .receive_maximum
        .unwrap_or(u16::MAX)
        .min(sh.plan.load.inflight.unwrap_or(default));
    if role == 's' {
        let filter = &sh.plan.sub_filters[i];
        conn.subscribe(filter, sh.plan.load.qos, 1).await?;
    }
    Ok((conn, window))
}

async fn core_main(shared: Arc<Shared>, core: usize) -> CoreStats {
    let ctx = CoreCtx::new(shared.clone(), core);
    let n = shared.cores;
    let my_subs: Vec<usize> = (core..shared.plan.sub_filters.len()).step_by(n).collect();
    let my_pubs: Vec<usize> = (core..shared.plan.pub_topics.len()).step_by(n).collect();
    let mut subs = connect_all(&ctx, 's', my_subs).await;
    let mut pubs = connect_all(&ctx, 'p', my_pubs).await;
    // Plain TCP: one loop per core on an epoll set (crate::driver), not a task per client.
    let poller = if shared.plan.run.glommio_io {
        None
    } else {
        match crate::poller::Poller::new() {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.stats.borrow_mut().error(format!("epoll: {e}"));
                None
            }
        }
    };
    // Fixed rate, QoS 0: subscribers on a set of their own, read once per turn of the
    // driver's loop instead of waking it (crate::driver).
    let ticked = match &poller {
        Some(_) if shared.plan.load.read_on_tick => match crate::poller::Poller::new() {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.stats.borrow_mut().error(format!("epoll: {e}"));
                None
            }
        },
        _ => None,
    };
    if let Some(p) = &poller {
        for (_, conn, _) in subs.iter_mut() {
            let _ = conn.use_poller(ticked.as_ref().unwrap_or(p)); // refused (TLS, WebSocket): stays a task
        }
        for (_, conn, _) in pubs.iter_mut() {
            let _ = conn.use_poller(p);
        }
    }
    let all = subs.iter().chain(pubs.iter()).map(|(_, c, _)| c);
    let (sampler, cpu_start) = match poller {
        Some(p) if crate::driver::Driver::conns_polled(all) => {
            run_driven(&ctx, p, ticked, subs, pubs).await
        }
        _ => run_tasks(&ctx, subs, pubs).await,
    };
    // Awaited, not dropped: when every delivery is in as publishing ends, this point can
    // come before the sampler's end-of-window timer has been polled, and dropping it
    // then lost the window figures (busy from the whole run, no demand: the warning
    // test failed about one run in three). Its timer is due by now (publishers stop at
    // the window's end), or it returned at once (--count).
    sampler.await;
    ctx.publish_progress();
    let mut st = ctx.stats.take();
    st.busy_secs = thread_cpu_secs() - cpu_start.0;
    st.wall_secs = (payload::now_ns() - cpu_start.1) as f64 / 1e9;
    st
}

type Started = (glommio::Task<()>, (f64, u64));

/// The measured run with a task per client (TLS, WebSocket, `--glommio-io`). Returns
/// the CPU sampler and the CPU time and clock at the start.
async fn run_tasks(
    ctx: &Rc<CoreCtx>,
    subs: Vec<(usize, Conn, u16)>,
    pubs: Vec<(usize, Conn, u16)>,
) -> Started {
    let shared = &ctx.shared;
    let npubs = shared.plan.pub_topics.len();
    let mut sub_tasks = Vec::new();
    let mut sub_indices = Vec::new();
    for (i, conn, _) in subs {
        let tracker = Tracker::new(shared.matches[i].clone(), npubs);
        sub_indices.push(i);
        let task = subscriber::run(ctx.clone(), i, conn, tracker);
        sub_tasks.push(glommio::spawn_local(task));
    }
    let (sampler, cpu_start, ticker) = start(ctx).await;
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .map(|(i, conn, w)| glommio::spawn_local(publisher::run(ctx.clone(), i as u32, conn, w)))
        .collect();
    for t in pub_tasks {
        t.await;
    }
    report_sent(ctx);
    finish_subscribers(ctx, &sub_indices).await;
    for t in sub_tasks {
        t.await;
    }
    drop(ticker);
    (sampler, cpu_start)
}

/// The measured run of plain-TCP clients in one loop (crate::driver).
async fn run_driven(
    ctx: &Rc<CoreCtx>,
    poller: Rc<crate::poller::Poller>,
    ticked: Option<Rc<crate::poller::Poller>>,
    subs: Vec<(usize, Conn, u16)>,
    pubs: Vec<(usize, Conn, u16)>,
) -> Started {
    let shared = &ctx.shared;
    let npubs = shared.plan.pub_topics.len();
    let mut d = crate::driver::Driver::new(ctx, poller);
    if let Some(t) = ticked {
        d = d.with_ticked(t);
    }
    let mut sub_indices = Vec::new();
    for (i, conn, _) in subs {
        let tracker = Tracker::new(shared.matches[i].clone(), npubs);
        sub_indices.push(i);
        d.add_sub(subscriber::PolledSub::new(ctx, i, conn, tracker));
    }
    let (sampler, cpu_start, ticker) = start(ctx).await;
    for (i, conn, w) in pubs {
        if let Some(p) = publisher::Polled::new(ctx, i as u32, conn, w) {
            d.add_pub(p);
        }
    }
    d.publish().await;
    d.disconnect_pubs().await;
    report_sent(ctx);
    let fin = {
        let ctx = ctx.clone();
        glommio::spawn_local(async move { finish_subscribers(&ctx, &sub_indices).await })
    };
    d.until_stopped().await;
    fin.await;
    d.finish().await;
    drop(ticker);
    (sampler, cpu_start)
}

/// Every core connected: agree on the start, wait for it, start the ticker and the
/// CPU sampler.
async fn start(ctx: &Rc<CoreCtx>) -> (glommio::Task<()>, (f64, u64), glommio::Task<()>) {
    start_together(ctx);
    let cpu_start = (thread_cpu_secs(), payload::now_ns());
    let t0 = ctx.shared.t0();
    glommio::timer::sleep(Duration::from_nanos(t0.saturating_sub(payload::now_ns()))).await;
    let ticker = glommio::spawn_local(ticker(ctx.clone()));
    let sampler = glommio::spawn_local(sample_window(ctx.clone()));
    (sampler, cpu_start, ticker)
}

/// Blocks until every core is connected, agrees on the start time (20 ms ahead) and
/// sets this core's measured window.
fn start_together(ctx: &CoreCtx) {
    let shared = &ctx.shared;
    if shared.barrier.wait().is_leader() {
        let t0 = payload::now_ns() + 20_000_000;
        shared.t0_ns.store(t0, Ordering::Release);
    }
    shared.barrier.wait();
    let load = &shared.plan.load;
    let measure_start = shared.t0() + load.warmup.as_nanos() as u64;
    ctx.measure_start_ns.set(measure_start);
    if load.count.is_none() {
        ctx.pub_end_ns
            .set(measure_start + load.duration.as_nanos() as u64);
    }
}

/// Every 250 ms: progress counters; every keep-alive/2: the PINGREQ signal.
async fn ticker(ctx: Rc<CoreCtx>) {
    let ping_every = match ctx.shared.plan.broker.keep_alive {
        0 => u32::MAX,
        ka => u32::from(ka) * 2, // quarter-seconds in ka/2
    };
    for tick in 1u32.. {
        ctx.publish_progress();
        if tick % ping_every == 0 {
            ctx.ping.fire();
        }
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
}

/// CPU time and messages moved by this core over the measured window (end of warm-up
/// to end of publishing): the generator's load while the broker is driven, without
/// setup, drain and idle tails.
async fn sample_window(ctx: Rc<CoreCtx>) {
    let (start, end) = (ctx.measure_start_ns.get(), ctx.pub_end_ns.get());
    if end == u64::MAX {
        return; // --count: no fixed window; the whole run is used
    }
    let sample = |ctx: &CoreCtx| {
        let st = ctx.stats.borrow();
        let (cpu, wait) = thread_sched_secs().unwrap_or((thread_cpu_secs(), 0.0));
        (cpu, payload::now_ns(), st.sent + st.received, wait)
    };
    glommio::timer::sleep(Duration::from_nanos(
        start.saturating_sub(payload::now_ns()),
    ))
    .await;
    let a = sample(&ctx);
    glommio::timer::sleep(Duration::from_nanos(end.saturating_sub(payload::now_ns()))).await;
    let b = sample(&ctx);
    let mut st = ctx.stats.borrow_mut();
    st.window_busy_secs = b.0 - a.0;
    st.window_wall_secs = (b.1 - a.1) as f64 / 1e9;
    st.window_messages = b.2 - a.2;
    st.window_wait_secs = b.3 - a.3;
}

/// Tells the other cores how much this core's publishers sent.
fn report_sent(ctx: &CoreCtx) {
    let sh = &ctx.shared;
    let mut v = sh.sent_by_publisher.lock().expect("not poisoned");
    for &(i, n) in &ctx.stats.borrow().sent_by_publisher {
        v[i as usize] = n;
    }
    drop(v);
    sh.pubs_done.fetch_add(1, Ordering::AcqRel);
}

/// Waits for every core's publishers, then for this core's subscribers to have
/// everything they should get (or the drain time), then stops them.
async fn finish_subscribers(ctx: &Rc<CoreCtx>, subs: &[usize]) {
    let sh = ctx.shared.clone();
    let drain = sh.plan.load.drain;
    let every = Duration::from_millis(2);
    wait_until(
        || sh.pubs_done.load(Ordering::Acquire) == sh.cores,
        every,
        Duration::from_secs(86_400),
    )
    .await;
    ctx.pubs_finished.fire();
    let expected: u64 = {
        let sent = sh.sent_by_publisher.lock().expect("not poisoned");
        subs.iter()
            .map(|&s| sh.matches[s].iter().map(|&p| sent[p as usize]).sum::<u64>())
            .sum()
    };
    ctx.stats.borrow_mut().expected = expected;
    let c = ctx.clone();
    wait_until(|| c.stats.borrow().counts.unique >= expected, every, drain).await;
    ctx.stop.fire();
}

fn summarize(sh: &Shared, t: CoreStats, cpus: Vec<usize>) -> Summary {
    let p = &sh.plan;
    let t0 = sh.t0();
    let measure_start = t0 + p.load.warmup.as_nanos() as u64;
    let publish_secs = match p.load.count {
        None => p.load.duration.as_secs_f64(),
        // Count mode: the window ends when the last measured message arrived.
        Some(_) => (t.last_measured_recv_ns.saturating_sub(measure_start)) as f64 / 1e9,
    };
    // The delivery window runs at least as long as publishing did.
    let delivery_secs =
        ((t.last_measured_recv_ns.saturating_sub(measure_start)) as f64 / 1e9).max(publish_secs);
    let per_sec = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let mut s = Summary {
        scenario: p.scenario.clone(),
        broker: sh.target.describe(),
        mqtt: format!("{:?}", p.broker.mqtt),
        qos: p.load.qos as u8,
        payload_bytes: p.load.payload,
        publishers: p.pub_topics.len(),
        subscribers: p.sub_filters.len(),
        rate_per_publisher: p.load.rate,
        cores: p.run.cores,
        cpus,
        publish_secs,
        delivery_secs,
        sent: t.sent,
        expected: t.expected,
        received: t.received,
        unique: t.counts.unique,
        lost: t.expected.saturating_sub(t.counts.unique),
        duplicated: t.counts.duplicated,
        out_of_order: t.counts.out_of_order,
        unexpected: t.counts.unexpected,
        sent_per_sec: per_sec(t.sent_measured, publish_secs),
        delivered_per_sec: per_sec(t.received_measured, delivery_secs),
        latency: Latency::from_histogram(&t.latency),
        connections: t.connected,
        connect_failures: t.connect_failures,
        connects_per_sec: 0.0,
        connect_latency: Latency::from_histogram(&t.connect_latency),
        broker_memory: None,
        errors: t.errors,
        ..Summary::default()
    };
    if t.window_wall_secs > 0.0 {
        s.set_generator_cpu(t.window_busy_secs, t.window_wall_secs, t.window_messages);
        s.set_generator_demand(t.window_busy_secs + t.window_wait_secs, t.window_wall_secs);
    } else {
        s.set_generator_cpu(t.busy_secs, t.wall_secs, t.sent + t.received);
    }
    s
}

/// (time on a CPU, time runnable but waiting for one) of the calling thread, seconds,
/// from `/proc/thread-self/schedstat`. On a shared machine the generator can be the
/// limit while getting only part of its core: its demand is the sum of the two.
pub fn thread_sched_secs() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    let run = it.next()??;
    let wait = it.next()??;
    Some((run as f64 / 1e9, wait as f64 / 1e9))
}

/// CPU time (user + system) of the calling thread, seconds.
pub fn thread_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut r) != 0 {
            return 0.0;
        }
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(r.ru_utime) + t(r.ru_stime)
    }
}

/// Raises the open-files limit for many connections: to 1M when allowed (root), else
/// the soft limit to the hard one. Brokers started by `compare` inherit it.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        let want = r.rlim_max.max(1 << 20);
        let big = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if r.rlim_cur < want && libc::setrlimit(libc::RLIMIT_NOFILE, &big) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
