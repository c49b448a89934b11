//! The openraft type configuration and the aliases the rest of the crate uses.

use std::io::Cursor;

use crate::command::CommandResult;
use crate::payload::Payload;

/// A node's id in the cluster (never 0: openraft and the broker treat 0 as unset).
pub type NodeId = u64;

/// What a snapshot carries between the state machine and the network: one
/// encoded [`crate::store::snapshot::SnapshotImage`].
pub type SnapshotData = Cursor<Vec<u8>>;

openraft::declare_raft_types!(
    /// ringmq's Raft types: commands are batches of key operations (shared
    /// and encoded once, see [`Payload`]), nodes are addresses.
    pub TypeConfig:
        D = Payload,
        R = CommandResult,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type BasicNode = openraft::BasicNode;
