//! The handle other threads hold: `Send + Clone`, every call a message to the
//! control-plane thread and a oneshot back, so any executor (a glommio shard,
//! a tokio task, a blocking thread with `futures::executor::block_on`) can
//! await it. Local reads skip the thread and read LMDB directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::command::{Command, CommandResult, Op, OpResult, Versioned};
use crate::error::Error;
use crate::facade::owner::{Claim, Ownership};
use crate::node::core::Core;
use crate::node::status::Status;
use crate::store::{sm, Store};
use crate::types::NodeId;

/// Work sent to the control-plane thread.
pub type Job = Box<dyn FnOnce(Arc<Core>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// What this node has applied (may lag the leader; never blocks on Raft).
    Local,
    /// Linearizable: the leader confirms its leadership with a quorum (read
    /// index) and answers once it has applied everything committed before.
    Linearizable,
}

/// A node's request handle.
#[derive(Clone)]
pub struct RaftHandle {
    id: NodeId,
    jobs: flume::Sender<Job>,
    claims: flume::Sender<Claim>,
    store: Weak<Store>,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle").field("id", &self.id).finish()
    }
}

impl RaftHandle {
    pub(crate) fn new(
        id: NodeId,
        jobs: flume::Sender<Job>,
        claims: flume::Sender<Claim>,
        store: Weak<Store>,
    ) -> Self {
        RaftHandle {
            id,
            jobs,
            claims,
            store,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Runs `f` on the control-plane thread and returns its answer.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = futures::channel::oneshot::channel();
        let job: Job = Box::new(move |core| {
            Box::pin(async move {
                let _ = tx.send(f(core).await);
            })
        });
        self.jobs
            .send_async(job)
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Commits a batch of ops (on the leader, forwarded if need be).
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Error> {
        self.run(move |core| async move { core.write(cmd).await })
            .await
    }

    /// Commits one op and returns its result.
    pub async fn op(&self, op: Op) -> Result<OpResult, Error> {
        let mut r = self.write(Command::one(op)).await?;
        r.results
            .pop()
            .ok_or_else(|| Error::Raft("empty result".into()))
    }

    /// Reads one key.
    pub async fn read(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Versioned>, Error> {
        match consistency {
            Consistency::Local => self.read_local(key),
            Consistency::Linearizable => {
                let key = key.to_vec();
                self.run(move |core| async move { core.read_linearizable(key).await })
                    .await
            }
        }
    }

    /// Reads one key from this node's applied state, on the calling thread.
    pub fn read_local(&self, key: &[u8]) -> Result<Option<Versioned>, Error> {
        let store = self.store.upgrade().ok_or(Error::Stopped)?;
        sm::read_local(&store, key).map_err(|e| Error::Storage(e.to_string()))
    }

    /// Every key under `prefix` from this node's applied state.
    pub fn scan_local(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Versioned)>, Error> {
        let store = self.store.upgrade().ok_or(Error::Stopped)?;
        sm::scan_local(&store, prefix).map_err(|e| Error::Storage(e.to_string()))
    }

    /// This node's state and view of the membership.
    pub async fn status(&self) -> Result<Status, Error> {
        self.run(|core| async move { Ok(core.status()) }).await
    }

    /// Adds a learner (leader only) and waits until it caught up.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), Error> {
        self.run(move |core| async move { core.add_learner(id, addr).await })
            .await
    }

    /// Promotes a learner to voter (leader only; joint consensus).
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        self.run(move |core| async move { core.promote(id).await })
            .await
    }

    /// Removes a node (leader only); refused when it would lose quorum.
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        self.run(move |core| async move { core.remove(id).await })
            .await
    }

    /// Hands leadership to `id` (leader only) and waits until it leads.
    pub async fn transfer_leader(&self, id: NodeId) -> Result<(), Error> {
        self.run(move |core| async move { core.transfer_leader(id).await })
            .await
    }

    /// Builds a snapshot now; returns the index it covers.
    pub async fn snapshot(&self) -> Result<u64, Error> {
        self.run(|core| async move { core.snapshot_now().await })
            .await
    }

    /// Every change applied on this node to a key under `prefix` from now on,
    /// in apply order, each after its transaction committed (snapshot
    /// installs send every key they hold under the prefix).
    pub fn watch(&self, prefix: &[u8]) -> Result<flume::Receiver<crate::Change>, Error> {
        let store = self.store.upgrade().ok_or(Error::Stopped)?;
        Ok(store.watchers.add(prefix))
    }

    /// The session-ownership facade of this node.
    pub fn ownership(&self) -> Ownership {
        Ownership::new(self.id, self.claims.clone(), self.store.clone())
    }
}
