//! Node liveness in the replicated map: the leader watches heartbeat answers
//! and writes `live/<id>` when a member goes down (unheard of for
//! `node_down_after`) or comes back. Every node can read the keys locally.

use openraft::async_runtime::WatchReceiver as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::keys;
use crate::command::{Command, Op};
use crate::node::core::Core;
use crate::store::{decode, encode, sm};
use crate::types::NodeId;

/// A member's liveness as last written by a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub up: bool,
    /// The term of the leader that wrote it.
    pub term: u64,
}

/// A `live/<id>` value (for readers of `RaftHandle::scan_local`).
pub fn decode_value(value: &[u8]) -> Option<Liveness> {
    decode(value).ok()
}

/// Every member's recorded liveness, read from this node's applied state.
pub fn read_all(store: &crate::store::Store) -> std::io::Result<Vec<(NodeId, Liveness)>> {
    let mut out = Vec::new();
    for (k, v) in sm::scan_local(store, keys::LIVE)? {
        if let Some(id) = keys::live_node(&k) {
            out.push((id, decode(&v.value)?));
        }
    }
    Ok(out)
}

/// The leader's liveness loop (idle on other nodes).
pub(crate) async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.cfg.liveness_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this node's current term of leadership began (None: not leading).
    let mut leading_since: Option<(u64, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let m = core.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(core.id) {
            leading_since = None;
            continue;
        }
        let since = match leading_since {
            Some((term, at)) if term == m.current_term => at,
            _ => {
                let now = std::time::Instant::now();
                leading_since = Some((m.current_term, now));
                now
            }
        };
        // A fresh leader has heard no heartbeat answers yet: give every peer
        // one full window before calling it down (no flapping per election).
        if since.elapsed() < core.cfg.node_down_after {
            continue;
        }
        let up = core.reachable();
        let members: Vec<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let mut ops = Vec::new();
        for id in members {
            let now_up = up.contains(&id);
            let key = keys::live(id);
            let recorded = match sm::read_local(&core.store, &key) {
                Ok(v) => v.and_then(|v| decode::<Liveness>(&v.value).ok()),
                Err(e) => {
                    warn!(error = %e, "liveness: cannot read");
                    None
                }
            };
            if recorded.map(|l| l.up) != Some(now_up) {
                let Ok(value) = encode(&Liveness {
                    up: now_up,
                    term: m.current_term,
                }) else {
                    continue;
                };
                info!(node = id, up = now_up, "liveness change");
                ops.push(Op::Put { key, value });
            }
        }
        if !ops.is_empty() {
            if let Err(e) = core.write(Command { ops }).await {
                warn!(error = %e, "liveness: write failed");
            }
        }
    }
}
