//! Session ownership: client id -> (owner node, epoch), changed only by
//! compare-and-set, many claims per log entry.
//!
//! The epoch is the version of the ownership key: it grows with every change
//! (versions come from one counter of the state machine and are never reused,
//! even after a release), so it is a fencing token. A claim names the epoch
//! the claimer last saw (0: "nobody owns it"); it wins only if that is still
//! the current epoch, and gets the new epoch back. Otherwise it gets the
//! current owner and epoch, and may decide to claim again from there.
//!
//! Claims from every caller of a node go through one batcher on the
//! control-plane thread: it takes what queued up (at most `max_items`), waits
//! at most `linger` for more, and commits the lot as one entry, with up to
//! `max_inflight` entries committing at once.

use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::keys;
use crate::command::{Command, Op, OpResult, Versioned};
use crate::error::Error;
use crate::node::core::Core;
use crate::store::{sm, Store};
use crate::types::NodeId;

/// The current owner of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: NodeId,
    pub epoch: u64,
}

/// Why a claim did not win.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Someone else changed ownership first: the current state (`owner` None
    /// and `epoch` 0 when nobody owns it).
    #[error("ownership conflict: owner {owner:?} at epoch {epoch}")]
    Conflict { owner: Option<NodeId>, epoch: u64 },
    /// The cluster could not decide (no quorum, timeout, stopped). After
    /// `Timeout` or `Indeterminate` the claim may still have won.
    #[error("ownership unavailable: {0}")]
    Unavailable(Error),
}

/// One queued claim (or release, when `node` is None).
pub struct Claim {
    client_id: Vec<u8>,
    node: Option<NodeId>,
    expected: u64,
    reply: futures::channel::oneshot::Sender<Result<u64, ClaimError>>,
}

/// The ownership facade of one node (`Send + Clone`).
#[derive(Clone)]
pub struct Ownership {
    node: NodeId,
    tx: flume::Sender<Claim>,
    store: Weak<Store>,
}

fn owner_of(v: &Versioned) -> Option<NodeId> {
    decode_owner(&v.value)
}

/// The owner node an ownership key's value names (for watchers of `own/`).
pub fn decode_owner(value: &[u8]) -> Option<NodeId> {
    Some(NodeId::from_be_bytes(value.try_into().ok()?))
}

impl Ownership {
    pub(crate) fn new(node: NodeId, tx: flume::Sender<Claim>, store: Weak<Store>) -> Self {
        Ownership { node, tx, store }
    }

    async fn submit(
        &self,
        client_id: &[u8],
        node: Option<NodeId>,
        expected: u64,
    ) -> Result<u64, ClaimError> {
        let (reply, rx) = futures::channel::oneshot::channel();
        let claim = Claim {
            client_id: client_id.to_vec(),
            node,
            expected,
            reply,
        };
        self.tx
            .send_async(claim)
            .await
            .map_err(|_| ClaimError::Unavailable(Error::Stopped))?;
        rx.await
            .map_err(|_| ClaimError::Unavailable(Error::Stopped))?
    }

    /// Claims `client_id` for `node` if its epoch is still `expected_epoch`;
    /// the new epoch when won.
    pub async fn claim(
        &self,
        client_id: &[u8],
        node: NodeId,
        expected_epoch: u64,
    ) -> Result<u64, ClaimError> {
        self.submit(client_id, Some(node), expected_epoch).await
    }

    /// Claims `client_id` for this node.
    pub async fn claim_here(
        &self,
        client_id: &[u8],
        expected_epoch: u64,
    ) -> Result<u64, ClaimError> {
        self.submit(client_id, Some(self.node), expected_epoch)
            .await
    }

    /// Releases `client_id` if its epoch is still `epoch`.
    pub async fn release(&self, client_id: &[u8], epoch: u64) -> Result<(), ClaimError> {
        self.submit(client_id, None, epoch).await.map(|_| ())
    }

    /// The owner as this node has applied it (no Raft round).
    pub fn owner_local(&self, client_id: &[u8]) -> Result<Option<Owner>, Error> {
        let store = self.store.upgrade().ok_or(Error::Stopped)?;
        let v = sm::read_local(&store, &keys::own(client_id))
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(v.and_then(|v| {
            owner_of(&v).map(|node| Owner {
                node,
                epoch: v.version,
            })
        }))
    }
}

/// Collects claims into entries until the channel closes.
pub(crate) async fn run_batcher(core: Arc<Core>, rx: flume::Receiver<Claim>) {
    let cfg = core.cfg.batch.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_inflight));
    while let Ok(first) = rx.recv_async().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        // Everything that queued while the previous entries were committing.
        while batch.len() < cfg.max_items {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if batch.len() < cfg.max_items && !cfg.linger.is_zero() {
            let until = tokio::time::Instant::now() + cfg.linger;
            while batch.len() < cfg.max_items {
                match tokio::time::timeout_at(until, rx.recv_async()).await {
                    Ok(Ok(c)) => batch.push(c),
                    _ => break,
                }
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            commit(&core, batch).await;
            drop(permit);
        });
    }
}

async fn commit(core: &Core, batch: Vec<Claim>) {
    let ops = batch
        .iter()
        .map(|c| Op::Cas {
            key: keys::own(&c.client_id),
            expected: c.expected,
            value: c.node.map(|n| n.to_be_bytes().to_vec()),
        })
        .collect();
    let n = batch.len();
    match core.write(Command { ops }).await {
        Ok(res) if res.results.len() == n => {
            for (claim, r) in batch.into_iter().zip(res.results) {
                let answer = match r {
                    OpResult::Written { version } => Ok(version),
                    OpResult::Deleted { .. } => Ok(0),
                    OpResult::Conflict { current } => Err(ClaimError::Conflict {
                        owner: current.as_ref().and_then(owner_of),
                        epoch: current.map_or(0, |v| v.version),
                    }),
                };
                let _ = claim.reply.send(answer);
            }
        }
        Ok(res) => {
            let e = Error::Raft(format!("{} results for {n} claims", res.results.len()));
            for claim in batch {
                let _ = claim.reply.send(Err(ClaimError::Unavailable(e.clone())));
            }
        }
        Err(e) => {
            debug!(node = core.id, claims = n, error = %e, "ownership batch failed");
            for claim in batch {
                let _ = claim.reply.send(Err(ClaimError::Unavailable(e.clone())));
            }
        }
    }
}
