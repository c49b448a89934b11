//! The crate's errors: opening a data dir, talking to the control plane, and
//! what a write or a membership change can be refused with.

use std::path::PathBuf;

use crate::types::NodeId;

/// Why a data dir could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("raft data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raft data dir {path}: {source}")]
    Lmdb { path: PathBuf, source: heed::Error },
    #[error(
        "raft data dir {path} belongs to cluster {found:?}, not {expected:?}: refusing to open it"
    )]
    ForeignCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "raft data dir {path} belongs to node {found}, not node {expected}: refusing to open it"
    )]
    WrongNode {
        path: PathBuf,
        found: NodeId,
        expected: NodeId,
    },
    #[error("raft data dir {path}: format {found}, this build reads format {expected}")]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("raft data dir {path}: corrupt meta row {row}")]
    Corrupt { path: PathBuf, row: &'static str },
    #[error("raft node config: {0}")]
    Config(String),
    #[error("raft node: {0}")]
    Start(String),
}

/// Why a request to the control plane failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No leader is known right now (election in progress, or this node is
    /// cut off from a majority). Retry later.
    #[error("no leader known")]
    NoLeader,
    /// A membership change must be asked of the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The change would leave fewer reachable voters than a quorum needs.
    #[error("refused: the change would lose quorum ({reachable} of {voters} voters reachable, {needed} needed)")]
    WouldLoseQuorum {
        voters: usize,
        reachable: usize,
        needed: usize,
    },
    /// The change names a node that is not in the membership (or already is).
    #[error("refused: {0}")]
    Membership(String),
    /// The request did not complete in time (a minority partition waits
    /// here). A write that timed out may still commit later.
    #[error("timed out (a write may still commit)")]
    Timeout,
    /// The write reached a leader that lost leadership before answering: it
    /// may or may not have committed.
    #[error("outcome unknown: leader changed before the write was answered")]
    Indeterminate,
    /// The node is stopping or stopped.
    #[error("raft node stopped")]
    Stopped,
    /// Reading or writing the local store failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Talking to the leader failed.
    #[error("network: {0}")]
    Network(String),
    /// openraft refused for another reason (its message).
    #[error("raft: {0}")]
    Raft(String),
}
