//! A deadline for a whole multi-process test: a hang becomes a failure that says where.
//!
//! The test names its phase as it goes ([`Watchdog::phase`], which also records the nodes'
//! PIDs and data dirs). If the deadline passes first, the watchdog prints the phase, each
//! node's session-move and handover counters and link states (`ringmq ctl` on its admin
//! socket, which has its own read timeout), kills the nodes by PID (SIGKILL) and aborts the
//! test process: a hung test fails with the phase and the counters in its output instead of
//! stalling CI.

use super::Cluster;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    phase: String,
    /// (node id, PID while running, data dir).
    nodes: Vec<(u64, Option<u32>, PathBuf)>,
    done: bool,
}

pub struct Watchdog {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a deadline of `within` for test `name`.
    pub fn arm(name: &'static str, within: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + within;
            let (lock, cv) = &*s;
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !st.done {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    expired(name, within, &st);
                }
                st = cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    /// The test enters `phase`; the nodes as they are now (PIDs change on restarts).
    pub fn phase(&self, phase: &str, c: &Cluster) {
        eprintln!("[watchdog] phase: {phase}");
        let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        st.phase = phase.to_string();
        st.nodes = c
            .nodes
            .iter()
            .map(|n| (n.id, n.proc.as_ref().map(|p| p.pid()), n.dir.path.clone()))
            .collect();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        self.state.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn expired(name: &str, within: Duration, st: &State) -> ! {
    eprintln!(
        "[watchdog] {name}: HUNG, no end within {within:?}; last phase: {}",
        st.phase
    );
    for (id, pid, dir) in &st.nodes {
        let ctl = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_ringmq"))
                .arg("ctl")
                .arg("--data-dir")
                .arg(dir)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| format!("(ctl failed: {e})"))
        };
        let m = ctl(&["metrics", "--json"]);
        let v: serde_json::Value = serde_json::from_str(m.trim()).unwrap_or_default();
        eprintln!(
            "[watchdog] node {id} (pid {pid:?}): handover {}\n[watchdog] node {id} links: {}",
            v["result"]["handover"],
            ctl(&["cluster", "status"]).trim()
        );
    }
    for (_, pid, _) in &st.nodes {
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the PID of a child process this test started.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    eprintln!("[watchdog] nodes killed; aborting the test process");
    std::process::abort();
}
