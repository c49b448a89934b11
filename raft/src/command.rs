//! The command set: operations on opaque keys and values, batched per entry.
//!
//! Every mutation gets a fresh *version* from one counter of the state machine
//! (a revision, as in etcd): versions only grow, per key and across keys, so a
//! key's version doubles as a fencing token. Version 0 means "absent".
//! The operations of one [`Command`] are applied in order, each on its own
//! (a failed compare-and-set does not undo the others), and each gets its
//! [`OpResult`] back in the same position.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One operation on the replicated map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set `key` to `value` unconditionally.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key` (a no-op when absent).
    Delete { key: Vec<u8> },
    /// Set `key` to `value` (or remove it when `value` is `None`) only if its
    /// version is `expected` (0: only if absent).
    Cas {
        key: Vec<u8>,
        expected: u64,
        value: Option<Vec<u8>>,
    },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Length of the value written (0 for a delete).
    pub fn value_len(&self) -> usize {
        match self {
            Op::Put { value, .. } => value.len(),
            Op::Delete { .. } => 0,
            Op::Cas { value, .. } => value.as_ref().map_or(0, Vec::len),
        }
    }
}

/// A batch of operations committed as one log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub ops: Vec<Op>,
}

impl Command {
    pub fn one(op: Op) -> Self {
        Command { ops: vec![op] }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} ops)", self.ops.len())
    }
}

/// A value and the version that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// The outcome of one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Written at this version.
    Written { version: u64 },
    /// Removed; `existed` says whether there was anything to remove.
    Deleted { existed: bool },
    /// A compare-and-set found another version: the current one (0 and no
    /// value when absent) is returned so the caller can decide again.
    Conflict { current: Option<Versioned> },
}

/// The results of one [`Command`], one per op, in order. A blank or
/// membership entry answers with no results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub results: Vec<OpResult>,
}
