//! Session ownership across nodes, as the shard sees it: a narrow door to
//! the cluster (the broker implements [`OwnershipGate`] with the raft crate;
//! this crate knows nothing of Raft).
//!
//! - At CONNECT, before the socket goes to its home shard, the accepting
//!   shard awaits [`claim`]: the cluster records this node as the owner of
//!   the client id and returns a new epoch (a fencing token). The shard
//!   thread is not blocked: the claim is a future (a channel to the
//!   control-plane thread). No answer within the claim timeout (a minority
//!   partition cannot commit) refuses the CONNECT with 0x88 / 3.1.1 0x03.
//! - The session keeps its epoch. When this node applies an ownership change
//!   that moves the client to another node at a later epoch, the broker
//!   sends [`crate::control::Control::Fence`] to the home shard, which closes
//!   the connection (v5 DISCONNECT 0x8E Session taken over) and discards the
//!   session: this node never acts for the old epoch again.
//! - A session removed here releases its ownership (if its epoch still holds).
//!
//! Without a gate (a cluster of one) none of this runs.

use crate::session::SessionId;
use crate::shard::Shard;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Why a claim did not give an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The cluster could not decide (no quorum, no leader, stopped).
    Unavailable,
    /// No answer within the claim timeout.
    Timeout,
}

/// A claim that won: the new epoch, and who owned the session just before
/// (the node a takeover asks for the session, `cluster/handover.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// The previous owner node and its epoch (`None`: nobody owned it).
    pub previous: Option<(u64, u64)>,
}

/// A claim in progress (`Send`: it is a channel to another thread).
pub type ClaimFuture = Pin<Box<dyn Future<Output = Result<Claim, ClaimRefused>> + Send>>;

/// What the shards ask of the cluster.
pub trait OwnershipGate: Send + Sync + 'static {
    /// Records this node as the owner of `client_id` (a takeover when
    /// another node owns it); the new epoch.
    fn claim(&self, client_id: &[u8]) -> ClaimFuture;
    /// The owner node and epoch as this node has applied them.
    fn owner(&self, client_id: &[u8]) -> Option<(u64, u64)>;
    /// Gives up ownership if the epoch is still `epoch` (the shard spawns
    /// the future and does not wait for it).
    fn release(&self, client_id: &[u8], epoch: u64) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// This node's id.
    fn node_id(&self) -> u64;
    /// Counts a session fenced here (metrics live with the gate).
    fn fenced(&self) {}
    /// Counts a CONNECT refused because its claim failed or timed out.
    fn refused(&self) {}
}

/// The gate in the shard configuration (`None`: a cluster of one).
#[derive(Clone)]
pub struct Gate {
    pub gate: Arc<dyn OwnershipGate>,
    /// Longest a CONNECT waits for its claim.
    pub timeout: Duration,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("node", &self.gate.node_id())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Claims `client_id` for this node (epoch 0 without a cluster), bounded by
/// the gate's timeout; the shard keeps serving others while it waits.
pub(crate) async fn claim(shard: &Shard, client_id: &[u8]) -> Result<Claim, ClaimRefused> {
    let Some(g) = &shard.cfg.ownership else {
        return Ok(Claim::default());
    };
    let claim = g.gate.claim(client_id);
    let timeout = g.timeout;
    let r = futures_lite::future::or(claim, async move {
        glommio::timer::sleep(timeout).await;
        Err(ClaimRefused::Timeout)
    })
    .await;
    if r.is_err() {
        g.gate.refused();
    }
    r
}

/// At accept on the home shard: has this node already applied a move of the
/// client to another node at a later epoch than ours? (Then the CONNECT
/// lost a race and is refused.)
pub(crate) fn superseded(shard: &Shard, client_id: &[u8], epoch: u64) -> bool {
    let Some(g) = &shard.cfg.ownership else {
        return false;
    };
    matches!(g.gate.owner(client_id), Some((node, e)) if node != g.gate.node_id() && e > epoch)
}

/// A session removed here gives its ownership back (if still its epoch).
pub(crate) fn released(shard: &Shard, client_id: &[u8], epoch: u64) {
    if let Some(g) = &shard.cfg.ownership {
        if epoch > 0 {
            glommio::spawn_local(g.gate.release(client_id, epoch)).detach();
        }
    }
}

/// `Control::Fence`: the client moved to another node at `epoch`. A session
/// here with an older epoch loses its connection (v5 DISCONNECT 0x8E) and is
/// discarded (its persistent state included), after a snapshot of it is
/// parked for the new owner to fetch (`cluster/handover.rs`). Returns
/// whether one was.
pub(crate) fn fence(shard: &Rc<Shard>, client_id: &str, epoch: u64) -> bool {
    let Ok(id) = ringmq_codec::MqttString::try_from(client_id) else {
        return false;
    };
    let sid: Option<SessionId> = shard.by_client.borrow().get(&id, &shard.sessions.borrow());
    let Some(sid) = sid else {
        return false;
    };
    let to = crate::cluster::handover::owner_slot(shard, client_id);
    let Some(snapshot) = crate::cluster::handover::take(shard, sid, epoch, to) else {
        return false;
    };
    crate::cluster::handover::park(shard, client_id, epoch, snapshot);
    true
}

/// Sends fences to the home shard of each client id (`Send + Clone`: the
/// broker's thread that watches ownership changes holds it).
#[derive(Clone)]
pub struct Fencer {
    controls: Vec<flume::Sender<crate::control::Control>>,
}

impl Fencer {
    pub(crate) fn new(controls: Vec<flume::Sender<crate::control::Control>>) -> Self {
        Fencer { controls }
    }

    /// The client moved to another node at `epoch`: its home shard closes
    /// and discards a session here with an older epoch.
    pub fn fence(&self, client_id: &str, epoch: u64) {
        let home = crate::connection::home_shard(client_id.as_bytes(), self.controls.len());
        let _ = self.controls[home].send(crate::control::Control::Fence {
            client_id: client_id.to_string(),
            epoch,
        });
    }
}
