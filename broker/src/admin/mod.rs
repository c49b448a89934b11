//! The admin socket: a Unix socket speaking line-delimited JSON
//! (docs/admin-protocol.md), served on its own thread, and `ringmq ctl`, its client.
//!
//! Layout:
//! - `backend.rs`: [`AdminBackend`], what the broker answers, and the answer types.
//! - `protocol.rs`: request/response types, dispatch to the backend.
//! - `server.rs`: the socket (mode 0600), one thread per admin connection.
//! - `client.rs`: `ringmq ctl`; `format.rs`: its tables.
//! - `shard_backend.rs`: [`AdminBackend`] for the running broker core.
//! - `threads.rs`: CPU time of the shard threads (busy ratio fallback).
//! - `access.rs`: `acl.check`, `ban.*` and `reload`.

pub mod access;
pub mod backend;
pub mod client;
pub mod format;
pub mod protocol;
pub mod server;
pub mod shard_backend;
pub mod threads;

pub use backend::{AdminBackend, AdminError, ErrorCode};
pub use server::AdminServer;

/// `--match PATTERN`: a glob with `*` and `?` when it has either, else a substring.
pub fn id_matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return id.contains(pattern);
    }
    glob(pattern.as_bytes(), id.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::id_matches;

    #[test]
    fn match_patterns() {
        assert!(id_matches("sensor", "a-sensor-1"));
        assert!(id_matches("sensor-*", "sensor-12"));
        assert!(!id_matches("sensor-*", "xsensor-12"));
        assert!(id_matches("s?n*1", "sensor-1"));
        assert!(id_matches("*", ""));
        assert!(!id_matches("a*b", "acbd"));
    }
}
