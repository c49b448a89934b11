//! Access control: who may connect (authentication) and, later, what they
//! may do (authorization). Knows nothing of the shard but its configuration:
//! the protocol wing (`auth_phase.rs`, `handle.rs`) calls in and acts on the
//! answers.
//!
//! - `passwd.rs`: the password file (Mosquitto `$6$`/`$7$`, argon2id, SCRAM entries).
//! - `scram.rs`: SCRAM-SHA-256 (RFC 5802/7677), server side, sans I/O.
//! - `authn.rs`: what a CONNECT needs (anonymous, password, SCRAM) and the
//!   per-shard password file behind an `Arc`.
//! - `pool.rs`: the threads that check passwords off the shard threads.

pub mod authn;
pub mod passwd;
pub mod pool;
pub mod scram;
