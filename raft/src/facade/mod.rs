//! Typed views over the replicated map for the broker: session ownership and
//! node liveness. Keys live under fixed prefixes (see `keys`).

pub mod keys;
pub mod liveness;
pub mod owner;
