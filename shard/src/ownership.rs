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
    // The owner before this claim: the node holding the session if the
    // claim commits after its refusal below.
    let before = g.gate.owner(client_id);
    let claim = g.gate.claim(client_id);
    let late = late_answer(client_id);
    let claim = async move {
        let r = claim.await;
        if let Some(d) = late {
            eprintln!(
                "RINGMQ_TEST_CLAIM_LATE: claimed ({}), held {d:?}",
                r.is_ok()
            );
            glommio::timer::sleep(d).await;
        }
        r
    };
    let timeout = g.timeout;
    let r = futures_lite::future::or(claim, async move {
        glommio::timer::sleep(timeout).await;
        Err(ClaimRefused::Timeout)
    })
    .await;
    if r.is_err() {
        g.gate.refused();
        // The claim's entry may still commit (it is on its way through the
        // cluster): the retry must fetch the session from its old node
        // (`cluster/moving.rs`, `claim_refused`).
        let prev = before.map(|(node, _)| node);
        if let (Some(prev), Some(n)) = (prev, shard.cluster.as_ref()) {
            if let (true, Ok(id)) = (prev != g.gate.node_id(), std::str::from_utf8(client_id)) {
                crate::cluster::moving::claim_refused(n, id, prev);
            }
        }
    }
    r
}

/// A test fault (`RINGMQ_TEST_CLAIM_LATE=CLIENT_ID:MS`): the first claim of
/// that client on this node is answered `MS` late, after it committed, so
/// its CONNECT's claim timeout fires first.
fn late_answer(client_id: &[u8]) -> Option<Duration> {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<(Vec<u8>, u64)>> = OnceLock::new();
    static USED: AtomicBool = AtomicBool::new(false);
    let at = AT.get_or_init(|| {
        let v = std::env::var("RINGMQ_TEST_CLAIM_LATE").ok()?;
        let (id, ms) = v.rsplit_once(':')?;
        Some((id.as_bytes().to_vec(), ms.parse().ok()?))
    });
    match at {
        Some((id, ms)) if id == client_id && !USED.swap(true, Relaxed) => {
            Some(Duration::from_millis(*ms))
        }
        _ => None,
    }
}

/// At accept on the home shard: has this node already applied a later
/// epoch of the client than ours, a move to another node or a later
/// CONNECT's claim here? (Then the CONNECT lost a race and is refused.)
pub(crate) fn superseded(shard: &Shard, client_id: &[u8], epoch: u64) -> bool {
    let Some(g) = &shard.cfg.ownership else {
        return false;
    };
    // A later epoch of this node is a later CONNECT here whose claim
    // finished first (claims answer out of order): this older one lost too,
    // and must not take over the newer connection's session.
    matches!(g.gate.owner(client_id), Some((_, e)) if e > epoch)
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
