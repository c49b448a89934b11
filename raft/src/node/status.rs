//! The node's view of the cluster, for `ctl cluster status` and tests.

use openraft::async_runtime::WatchReceiver as _;
use openraft::{Instant as _, ServerState};
use serde::Serialize;

use super::core::Core;
use crate::types::NodeId;

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    /// "voter" or "learner".
    pub role: &'static str,
    /// Reachable within the liveness window (as seen by the leader; on other
    /// nodes only this node itself is known up).
    pub up: bool,
    /// Highest log index known replicated to it (leader only).
    pub matched: Option<u64>,
    /// How far it is behind the leader's last log index (leader only).
    pub lag: Option<u64>,
    /// Milliseconds since it last answered a heartbeat (leader only).
    pub last_ack_ms: Option<u64>,
}

/// This node's state and the cluster's membership.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// Joint consensus in progress (more than one voter config).
    pub joint: bool,
    pub nodes: Vec<NodeStatus>,
}

impl Core {
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow_watched().clone();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let up = self.reachable();
        let last = m.last_log_index.unwrap_or(0);
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|l| l.as_ref().map_or(0, |l| l.index));
                let matched = if *id == self.id {
                    m.last_log_index
                } else {
                    matched
                };
                let last_ack_ms = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id))
                    .and_then(|t| t.as_ref().map(|t| t.elapsed().as_millis() as u64));
                NodeStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    up: up.contains(id),
                    matched,
                    lag: matched.map(|x| last.saturating_sub(x)),
                    last_ack_ms,
                }
            })
            .collect();
        Status {
            id: self.id,
            state,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed: m.cluster_committed.as_ref().map(|l| l.index),
            applied: m.last_applied.as_ref().map(|l| l.index),
            snapshot: m.snapshot.as_ref().map(|l| l.index),
            purged: m.purged.as_ref().map(|l| l.index),
            joint: membership.get_joint_config().len() > 1,
            nodes,
        }
    }
}
