//! Membership changes at run time, asked of the leader: add a learner (it
//! catches up from the log or a snapshot), promote it (openraft's joint
//! consensus), remove a node, transfer leadership. A change that would leave
//! the new voter set without a reachable majority is refused up front.

use openraft::async_runtime::WatchReceiver as _;
use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{ChangeMembers, Instant as _, ServerState};

use super::core::{map_write_err, Core};
use crate::error::Error;
use crate::types::{BasicNode, NodeId, StoredMembership, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};

impl Core {
    fn require_leader(&self) -> Result<(), Error> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                leader: m.current_leader,
            })
        }
    }

    /// Peers whose last heartbeat answer is younger than the liveness window
    /// (this node, the leader, always counts).
    pub fn reachable(&self) -> BTreeSet<NodeId> {
        let window = self.cfg.node_down_after;
        let m = self.raft.metrics().borrow_watched().clone();
        let mut up = BTreeSet::from([self.id]);
        if let Some(hb) = &m.heartbeat {
            for (id, at) in hb {
                if at.as_ref().is_some_and(|t| t.elapsed() < window) {
                    up.insert(*id);
                }
            }
        }
        up
    }

    /// The membership this node last saw applied.
    fn membership(&self) -> std::sync::Arc<StoredMembership> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone()
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.membership().membership().voter_ids().collect()
    }

    fn check_quorum(&self, new_voters: &BTreeSet<NodeId>) -> Result<(), Error> {
        if new_voters.is_empty() {
            return Err(Error::Membership(
                "a cluster needs at least one voter".into(),
            ));
        }
        let up = self.reachable();
        let reachable = new_voters.iter().filter(|v| up.contains(v)).count();
        let needed = new_voters.len() / 2 + 1;
        if reachable < needed {
            return Err(Error::WouldLoseQuorum {
                voters: new_voters.len(),
                reachable,
                needed,
            });
        }
        Ok(())
    }

    async fn timed<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T, Error> {
        tokio::time::timeout(self.cfg.membership_timeout, fut)
            .await
            .map_err(|_| Error::Timeout)
    }

    /// Adds `id` at `addr` as a learner and waits until it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), Error> {
        self.require_leader()?;
        if id == 0 {
            return Err(Error::Membership("node id 0 is reserved".into()));
        }
        let m = self.membership();
        if m.membership().get_node(&id).is_some() {
            return Err(Error::Membership(format!("node {id} is already a member")));
        }
        let res = self
            .timed(self.raft.add_learner(id, BasicNode { addr }, true))
            .await?;
        change_result(res, "add learner")
    }

    /// Makes learner `id` a voter (joint consensus, then the new config).
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        self.require_leader()?;
        let m = self.membership();
        if m.membership().get_node(&id).is_none() {
            return Err(Error::Membership(format!(
                "node {id} is not a member; add it as a learner first"
            )));
        }
        let mut voters = self.voters();
        if !voters.insert(id) {
            return Err(Error::Membership(format!("node {id} is already a voter")));
        }
        self.check_quorum(&voters)?;
        let res = self
            .timed(
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
            )
            .await?;
        change_result(res, "promote")
    }

    /// Removes `id` from the cluster (voter or learner).
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        self.require_leader()?;
        let m = self.membership();
        if m.membership().get_node(&id).is_none() {
            return Err(Error::Membership(format!("node {id} is not a member")));
        }
        let mut voters = self.voters();
        let change = if voters.remove(&id) {
            self.check_quorum(&voters)?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let res = self
            .timed(self.raft.change_membership(change, false))
            .await?;
        change_result(res, "remove")
    }

    /// Hands leadership to voter `id` and waits until it leads.
    pub async fn transfer_leader(&self, id: NodeId) -> Result<(), Error> {
        self.require_leader()?;
        if id == self.id {
            return Ok(());
        }
        if !self.voters().contains(&id) {
            return Err(Error::Membership(format!("node {id} is not a voter")));
        }
        if !self.reachable().contains(&id) {
            return Err(Error::Membership(format!("node {id} is not reachable")));
        }
        self.raft
            .trigger()
            .transfer_leader(id)
            .await
            .map_err(|_| Error::Stopped)?;
        let wait = self.raft.wait(Some(self.cfg.membership_timeout));
        wait.current_leader(id, "transfer leader")
            .await
            .map_err(|_| Error::Timeout)?;
        Ok(())
    }

    /// Builds a snapshot now and waits for it (log purge follows per config).
    pub async fn snapshot_now(&self) -> Result<u64, Error> {
        let applied = self
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .as_ref()
            .map_or(0, |l| l.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| Error::Stopped)?;
        let wait = self.raft.wait(Some(self.cfg.membership_timeout));
        wait.metrics(
            |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
            "snapshot",
        )
        .await
        .map_err(|_| Error::Timeout)?;
        Ok(applied)
    }
}

/// A pause between polls of a condition (used by callers that retry).
pub const POLL: Duration = Duration::from_millis(20);

/// A membership change's outcome as the crate's error (`what` names it when
/// openraft's error maps to none of ours).
fn change_result<T>(
    res: Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
    what: &str,
) -> Result<(), Error> {
    res.map(|_| ())
        .map_err(|e| map_write_err(e).err().unwrap_or(Error::Raft(what.into())))
}
