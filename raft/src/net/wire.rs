//! The messages of protocol version 1 (postcard-encoded frame bodies).
//!
//! Why postcard: it is serde-driven (openraft's messages derive serde under
//! its `serde` feature, so nothing is hand-mapped), compact (varint integers,
//! no field names: an append of one small entry is a few dozen bytes),
//! `#![no_std]`-grade simple with a documented, stable wire format (1.x), and
//! it refuses trailing or truncated input rather than guessing. bincode 1.x
//! is similar but its fixed-width integers are larger; JSON is 3-5x larger
//! and slower. A change of these enums is a new [`super::frame::PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

use crate::command::{CommandResult, Versioned};
use crate::payload::Payload;
use crate::types::{NodeId, SnapshotMeta, TypeConfig, Vote};

type AppendReq = openraft::raft::AppendEntriesRequest<TypeConfig>;
type AppendResp = openraft::raft::AppendEntriesResponse<TypeConfig>;
type VoteReq = openraft::raft::VoteRequest<TypeConfig>;
type VoteResp = openraft::raft::VoteResponse<TypeConfig>;
type SnapResp = openraft::raft::SnapshotResponse<TypeConfig>;
type TransferReq = openraft::raft::TransferLeaderRequest<TypeConfig>;
type TransferResp = openraft::raft::TransferLeaderResponse<TypeConfig>;
type StreamedResp = openraft::raft::StreamAppendResult<TypeConfig>;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Request {
    Append(AppendReq),
    Vote(VoteReq),
    PreVote(VoteReq),
    /// A whole snapshot in one frame.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    TransferLeader(TransferReq),
    /// A follower forwards a client write to the leader.
    Forward(Payload),
    /// A follower asks the leader for a linearizable read of one key.
    Read(Vec<u8>),
    /// Switches the connection to a pipelined append stream (no answer):
    /// every later frame is an `Append`, answered in order by `Streamed`
    /// (see [`super::pipeline`]).
    AppendStream,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Response {
    Append(AppendResp),
    Vote(VoteResp),
    Snapshot(SnapResp),
    TransferLeader(TransferResp),
    Forward(CommandResult),
    Read(Option<Versioned>),
    /// The answer to one `Append` of an append stream.
    Streamed(StreamedResp),
    /// The receiver is not the leader (forwarded writes and reads).
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The write may or may not have committed (leader changed meanwhile).
    Indeterminate,
    /// Anything else the receiver could not do, as text.
    Failed(String),
}

pub fn encode<T: Serialize>(m: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(m)
}

pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(b)
}
