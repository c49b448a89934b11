//! The admin socket server: a Unix socket (mode 0600) on its own thread,
//! one short-lived thread per admin connection. Never runs on a shard.

use super::protocol::Handler;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// A running admin socket. Stopped (and the socket file removed) on drop.
pub struct AdminServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Alive while connection threads are (each holds a clone).
    handler: std::sync::Weak<Handler>,
}

/// Binds `path` with mode 0600: bound under a temporary name, restricted,
/// then renamed into place, so the final path is never reachable with looser
/// permissions. A stale socket file is replaced; a live one is an error.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("admin socket {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The data dir by default: created 0700 like the store creates it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(ctx)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "admin socket {} is in use by a running broker",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path).map_err(ctx)?;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("ringmq.sock");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(ctx)?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(ctx(e));
    }
    Ok(listener)
}

impl AdminServer {
    /// Binds the socket and starts serving `handler` on a thread named `ringmq-admin`.
    pub fn start(path: &Path, handler: Handler) -> io::Result<AdminServer> {
        let listener = bind_private(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let weak = Arc::downgrade(&handler);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringmq-admin".into())
            .spawn(move || accept_loop(listener, handler, stop2))?;
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(AdminServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            handler: weak,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the accept thread and removes the socket file.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = UnixStream::connect(&self.path); // wake the accept
            let _ = t.join();
            // Let requests in progress (e.g. the `shutdown` that got us here)
            // write their answer before the process exits; bounded.
            let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while self.handler.strong_count() > 0 && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: UnixListener, handler: Arc<Handler>, stop: Arc<AtomicBool>) {
    // Out of descriptors, the pending connection stays queued and accept fails
    // again at once: back off (5 ms doubling to 1 s) and log once per episode,
    // as the MQTT listeners do (shard/src/net/accept_backoff.rs).
    let mut failures = 0u64;
    let mut wait = std::time::Duration::from_millis(5);
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                if failures > 0 {
                    tracing::info!("admin: accept resumed after {failures} failed attempts");
                    failures = 0;
                    wait = std::time::Duration::from_millis(5);
                }
                let h = handler.clone();
                let spawned = std::thread::Builder::new()
                    .name("ringmq-admin-conn".into())
                    .spawn(move || serve(stream, &h));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "admin: cannot start a connection thread");
                }
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "admin: accept failed; backing off, logged again when it resumes");
                }
                failures += 1;
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Serves one admin connection: a response line per request line, until EOF.
fn serve(stream: UnixStream, handler: &Handler) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE {
            let _ = out.write_all(
                b"{\"ok\":false,\"error\":{\"code\":\"bad_json\",\"message\":\"request line too long\"}}\n",
            );
            return;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut resp = handler.handle_line(line.trim());
        resp.push('\n');
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
