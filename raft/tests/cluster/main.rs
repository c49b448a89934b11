//! In-process cluster tests: several nodes in one process over loopback TCP,
//! each with its own LMDB dir. Conditions are polled with deadlines.

mod common;

mod bad_input;
mod basics;
mod catch_up;
mod membership;
mod ownership;
mod partition;
mod tls;
