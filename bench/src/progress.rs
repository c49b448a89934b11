//! The live progress line: once a second on stderr, only when stderr is a terminal.

use crate::core::Shared;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the printer thread unless `quiet` or stderr is not a terminal.
    pub fn start(shared: &Arc<Shared>, quiet: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { stop, handle: None };
        }
        let (sh, st) = (shared.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let (mut last_s, mut last_r) = (0u64, 0u64);
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let s: u64 = sh
                    .progress
                    .iter()
                    .map(|p| p.sent.load(Ordering::Relaxed))
                    .sum();
                let r: u64 = sh
                    .progress
                    .iter()
                    .map(|p| p.received.load(Ordering::Relaxed))
                    .sum();
                let mut e = std::io::stderr().lock();
                let _ = write!(
                    e,
                    "\r\x1b[K{:>5.0}s  sent {:>12}  recv {:>12}  {:>10}/s out  {:>10}/s in",
                    started.elapsed().as_secs_f64(),
                    s,
                    r,
                    s - last_s,
                    r - last_r
                );
                let _ = e.flush();
                (last_s, last_r) = (s, r);
            }
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        });
        Progress {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
