//! `ringmq`: the broker binary.
//!
//! `ringmq [FLAGS]` runs the broker: configuration (flag > env > file >
//! default), logging, the shards, the admin socket, the metrics endpoint, one
//! `ringmq listening on mqtt://ADDR` line per listener on stdout once ready,
//! then waits for SIGTERM/SIGINT or an admin `shutdown` and stops gracefully
//! (exit 0). `ringmq config check FILE` and `ringmq ctl ...` are subcommands.

use ringmq_broker::admin::protocol::Handler;
use ringmq_broker::admin::shard_backend::ShardBackend;
use ringmq_broker::admin::{self, AdminServer};
use ringmq_broker::cli::{self, Cli, Command, ConfigCommand};
use ringmq_broker::config::{self, Config};
use ringmq_broker::logging;
use ringmq_broker::metrics::MetricsServer;
use std::io::Write;
use std::sync::{mpsc, Arc};

/// jemalloc instead of glibc malloc, so memory goes back after a burst:
/// glibc keeps what a burst allocated below its mmap threshold (and the
/// threshold rises after the first big frees), jemalloc's background thread
/// purges dirty pages within about a second whether or not the shard that
/// freed them allocates again. Figures in docs/connection-memory.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its initialisation (the `_rjem_` prefix is
/// tikv-jemalloc-sys's symbol prefix): purge unused dirty pages after 1 s
/// (MADV_DONTNEED, straight away: no lazy "muzzy" stage that RSS would still
/// count), on jemalloc's own background thread.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let (cli, matches) = match cli::parse_from(std::env::args_os()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let resolved = || config::resolve(&matches, &cli.run, cli.config.as_deref());
    match &cli.command {
        Some(Command::Config(ConfigCommand::Check { file })) => match config::check_file(file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                0
            }
            Err(e) => fail(&e),
        },
        Some(Command::Config(ConfigCommand::Show)) => match resolved() {
            Ok((cfg, _)) => {
                print!("{}", toml::to_string(&cfg).unwrap_or_default());
                0
            }
            Err(e) => fail(&e),
        },
        Some(Command::Config(ConfigCommand::Example)) => {
            print!("{}", config::example_toml());
            0
        }
        Some(Command::Passwd(args)) => match ringmq_broker::passwd::run(args) {
            Ok(()) => 0,
            Err(e) => fail(&e),
        },
        Some(Command::Ctl(args)) => {
            // The socket from the broker's own flags/env/file when ctl has none.
            let cfg = resolved()
                .map(|(c, _)| c)
                .unwrap_or_else(|_| cli.run.clone());
            admin::client::run(args, cfg.admin_socket_path())
        }
        None => match resolved() {
            Ok((cfg, _)) => run(&cli, cfg),
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    1
}

/// Runs the broker until SIGTERM/SIGINT or an admin `shutdown`.
fn run(cli: &Cli, cfg: Config) -> i32 {
    let set_level = match logging::init(&cfg.logging.log_level, cfg.logging.log_format) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(f) = &cli.config {
        tracing::info!(file = %f.display(), "configuration file read");
    }
    // Blocked before any thread starts, so every thread inherits the mask and
    // the signals are only ever taken by `signals::wait`.
    signals::block();
    // The cluster's control plane first: the shards' CONNECTs claim through it.
    let cluster = match cfg.raft_node_config() {
        Some(node) => {
            let timeout = cfg.cluster.cluster_claim_timeout.duration();
            match ringmq_broker::cluster::Cluster::start(node, timeout) {
                Ok(c) => Some(c),
                Err(e) => return fail(&e),
            }
        }
        None => None,
    };
    let mut shard_cfg = cfg.to_shard_config();
    shard_cfg.ownership = cluster.as_ref().map(|c| c.gate());
    shard_cfg.wills = cluster.as_ref().map(|c| c.wills());
    let handle = match ringmq_shard::server::start(shard_cfg) {
        Ok(h) => h,
        Err(e) => {
            if let Some(c) = &cluster {
                c.stop();
            }
            return fail(&with_hint(&e.to_string()));
        }
    };
    if let Some(c) = &cluster {
        let started = c
            .start_fencing(handle.fencer())
            .and_then(|()| c.start_wills(handle.will_publisher()))
            .and_then(|()| c.start_link_membership(handle.link_peers()));
        if let Err(e) = started {
            handle.shutdown();
            let _ = handle.join();
            c.stop();
            return fail(&e);
        }
    }
    let addrs = handle.local_addrs();
    let urls: Vec<String> = handle
        .listeners()
        .iter()
        .zip(&addrs)
        .map(|(l, a)| {
            let path = match &l.cfg.transport {
                ringmq_shard::config::Transport::Ws { path }
                | ringmq_shard::config::Transport::Wss { path } => path.as_str(),
                _ => "",
            };
            format!("{}://{a}{path}", l.cfg.transport.scheme())
        })
        .collect();
    tracing::info!(shards = handle.shards(), "broker started");
    log_posture(&cfg, handle.listeners(), &urls);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let backend =
        Arc::new(ShardBackend::new(handle, stop_tx.clone()).with_cluster(cluster.clone()));
    let admin_path = cfg.admin_socket_path();
    let handler = Handler::new(backend.clone(), Some(set_level));
    let mut admin = match AdminServer::start(&admin_path, handler) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::error!(error = %e, "admin socket not available");
            None
        }
    };
    let mut metrics = match cfg.admin.metrics_listen.0 {
        Some(addr) => match MetricsServer::start(addr, backend.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                shutdown(&backend);
                if let Some(c) = &cluster {
                    c.stop();
                }
                return fail(&e);
            }
        },
        None => None,
    };
    let mut out = std::io::stdout().lock();
    for u in &urls {
        let _ = writeln!(out, "ringmq listening on {u}");
    }
    if let Some(m) = &metrics {
        let _ = writeln!(out, "ringmq metrics on http://{}/metrics", m.local_addr());
    }
    if let Some(a) = cluster.as_ref().and_then(|c| c.addr()) {
        let _ = writeln!(out, "ringmq cluster on {a}");
    }
    let _ = out.flush();
    drop(out);
    let reloader = backend.clone();
    std::thread::Builder::new()
        .name("ringmq-signals".into())
        .spawn(move || loop {
            let sig = signals::wait();
            if sig == "SIGHUP" {
                // Each part logs its own outcome (reload.rs); a failed one keeps the old.
                tracing::info!("SIGHUP: reloading");
                if let Err(e) = ringmq_broker::admin::AdminBackend::reload(&*reloader) {
                    tracing::error!(error = %e, "reload not possible");
                }
                continue;
            }
            tracing::info!(signal = sig, "signal received, shutting down");
            let _ = stop_tx.send(());
            return;
        })
        .expect("spawn the signal thread");
    let _ = stop_rx.recv();
    if let Some(a) = admin.as_mut() {
        a.stop();
    }
    if let Some(m) = metrics.as_mut() {
        m.stop();
    }
    let code = shutdown(&backend);
    // After the shards: no CONNECT waits on the control plane any more.
    if let Some(c) = &cluster {
        c.stop();
    }
    code
}

/// One line per listener: who may connect there (its own
/// `allow_anonymous`, else `--allow-anonymous`).
fn log_posture(
    cfg: &Config,
    listeners: &[std::sync::Arc<ringmq_shard::listener::ListenerRt>],
    urls: &[String],
) {
    let a = &cfg.auth;
    let passwords = match &a.password_file.0 {
        Some(f) => format!("password file {}", f.display()),
        None => "no password file".into(),
    };
    for (l, url) in listeners.iter().zip(urls) {
        let cn = if l.cfg.tls.identity_as_username {
            ", client certificate CN as user name"
        } else {
            ""
        };
        if l.cfg.allow_anonymous.unwrap_or(a.allow_anonymous) {
            tracing::info!("listener {url}: anonymous clients allowed, {passwords}{cn}");
        } else {
            tracing::info!("listener {url}: anonymous clients refused, {passwords}{cn}");
        }
    }
}

/// Adds the fix to startup errors whose cause is a host limit.
fn with_hint(e: &str) -> String {
    let lower = e.to_ascii_lowercase();
    if lower.contains("memlock") {
        format!("{e} (io_uring memory is locked: raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity or ulimit -l, or lower --io-memory)")
    } else if lower.contains("too many open files") {
        format!("{e} (raise RLIMIT_NOFILE, e.g. LimitNOFILE=1048576 or ulimit -n)")
    } else {
        e.to_string()
    }
}

/// Graceful shutdown of the shards; waits for them.
fn shutdown(backend: &ShardBackend) -> i32 {
    let Some(handle) = backend.take_handle() else {
        return 0;
    };
    handle.shutdown();
    match handle.join() {
        Ok(()) => {
            tracing::info!("stopped");
            0
        }
        Err(e) => fail(&with_hint(&e.to_string())),
    }
}

/// SIGTERM/SIGINT (stop) and SIGHUP (reload) taken synchronously by one
/// thread (`sigwait`), so no async-signal-safety concerns.
mod signals {
    fn set() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        unsafe {
            let mut s: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut s);
            libc::sigaddset(&mut s, libc::SIGTERM);
            libc::sigaddset(&mut s, libc::SIGINT);
            libc::sigaddset(&mut s, libc::SIGHUP);
            s
        }
    }

    /// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and threads it starts later).
    pub fn block() {
        let s = set();
        // SAFETY: `s` is an initialised set; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    }

    /// Waits for SIGTERM, SIGINT or SIGHUP; returns its name.
    pub fn wait() -> &'static str {
        let s = set();
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `s` is initialised and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&s, &mut sig) } == 0 {
                return match sig {
                    libc::SIGINT => "SIGINT",
                    libc::SIGHUP => "SIGHUP",
                    _ => "SIGTERM",
                };
            }
        }
    }
}
