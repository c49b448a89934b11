//! `ringmq ctl cluster status|add-node|remove-node|transfer-leader`, and the
//! numbers the metrics endpoint renders. Called from the admin and metrics
//! threads (never a shard): each blocks on one round trip to the
//! control-plane thread.

use super::Cluster;
use ringmq_raft::facade::{keys, liveness};
use ringmq_raft::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The cluster's numbers for `/metrics`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterMetrics {
    pub node_id: u64,
    pub is_leader: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub members: u64,
    pub members_up: u64,
    /// Log entries committed through this node, their ops, the summed
    /// commit time, failed writes.
    pub commits: u64,
    pub committed_ops: u64,
    pub commit_us_total: u64,
    pub write_errors: u64,
    /// Log appends (one fsync each).
    pub appends: u64,
    /// Terms begun (elections) and leader changes seen.
    pub elections: u64,
    pub leader_changes: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub last_snapshot_bytes: u64,
    pub ownership: super::OwnershipCounters,
    #[serde(default)]
    pub wills: super::wills::WillCounters,
}

/// How a membership change failed: the message names what to do.
fn explain(e: Error) -> String {
    match e {
        Error::NotLeader { leader: Some(l) } => {
            format!("this node is not the leader: ask node {l} (ringmq ctl on its admin socket)")
        }
        Error::NotLeader { leader: None } => "no leader right now: try again".into(),
        e => e.to_string(),
    }
}

impl Cluster {
    /// The membership as this node records liveness: `live/<id>` keys.
    fn liveness(&self) -> Vec<(u64, bool)> {
        self.handle
            .scan_local(keys::LIVE)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((keys::live_node(&k)?, liveness::decode_value(&v.value)?.up)))
            .collect()
    }

    /// `cluster.status`: one object with `leader` (absent while none) and
    /// `nodes` [{id, addr, role, up, reachable, liveness, matched, lag,
    /// last_ack_ms}], this node's state, term, log indexes and counters.
    pub fn status_json(&self) -> Result<Value, String> {
        let st = futures_lite::future::block_on(self.handle.status()).map_err(|e| e.to_string())?;
        let live = self.liveness();
        let leading = st.state == "leader";
        let nodes: Vec<Value> = st
            .nodes
            .iter()
            .map(|n| {
                let recorded = live.iter().find(|(id, _)| *id == n.id).map(|(_, up)| *up);
                // The leader sees heartbeat answers; others trust the
                // liveness the leader recorded (themselves: up).
                let up = if leading || n.id == st.id {
                    n.up
                } else {
                    recorded.unwrap_or(false)
                };
                json!({
                    "id": n.id,
                    "addr": n.addr,
                    "role": if st.leader == Some(n.id) { "leader" } else { n.role },
                    "voter": n.role == "voter",
                    "up": up,
                    "reachable": leading.then_some(n.up),
                    "liveness": recorded.map(|u| if u { "up" } else { "down" }),
                    "matched": n.matched,
                    "lag": n.lag,
                    "last_ack_ms": n.last_ack_ms,
                })
            })
            .collect();
        let mut o = Map::new();
        o.insert("id".into(), json!(st.id));
        if let Some(l) = st.leader {
            o.insert("leader".into(), json!(l));
        }
        o.insert("state".into(), json!(st.state));
        o.insert("term".into(), json!(st.term));
        o.insert("last_log_index".into(), json!(st.last_log_index));
        o.insert("committed".into(), json!(st.committed));
        o.insert("applied".into(), json!(st.applied));
        o.insert("snapshot".into(), json!(st.snapshot));
        o.insert("purged".into(), json!(st.purged));
        o.insert("joint".into(), json!(st.joint));
        o.insert("nodes".into(), Value::Array(nodes));
        o.insert("raft".into(), json!(st.counters));
        o.insert("ownership".into(), json!(self.stats.snapshot()));
        o.insert("wills".into(), json!(self.will_stats.snapshot()));
        Ok(Value::Object(o))
    }

    /// `cluster.owner`: the owner node and epoch of a client id as this node
    /// has applied them (`owner` absent when nobody owns it).
    pub fn owner_json(&self, client_id: &str) -> Result<Value, String> {
        let o = self
            .handle
            .ownership()
            .owner_local(client_id.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(match o {
            Some(o) => json!({ "client_id": client_id, "owner": o.node, "epoch": o.epoch }),
            None => json!({ "client_id": client_id }),
        })
    }

    /// Adds node `id` at `addr`: as a learner first (it catches up from the
    /// log or a snapshot), then promoted to voter (joint consensus).
    pub fn add_node(&self, id: u64, addr: &str) -> Result<Value, String> {
        let h = &self.handle;
        futures_lite::future::block_on(h.add_learner(id, addr.to_string())).map_err(explain)?;
        futures_lite::future::block_on(h.promote(id)).map_err(explain)?;
        Ok(json!({ "added": id, "addr": addr }))
    }

    /// Removes node `id` (refused when the voters left would lose quorum).
    pub fn remove_node(&self, id: u64) -> Result<Value, String> {
        futures_lite::future::block_on(self.handle.remove(id)).map_err(explain)?;
        Ok(json!({ "removed": id }))
    }

    /// Hands leadership to node `id` and waits until it leads.
    pub fn transfer_leader(&self, id: u64) -> Result<Value, String> {
        futures_lite::future::block_on(self.handle.transfer_leader(id)).map_err(explain)?;
        Ok(json!({ "leader": id }))
    }

    /// The numbers for `/metrics`.
    pub fn metrics(&self) -> Result<ClusterMetrics, String> {
        let st = futures_lite::future::block_on(self.handle.status()).map_err(|e| e.to_string())?;
        let live = self.liveness();
        let members_up = st
            .nodes
            .iter()
            .filter(|n| {
                if st.state == "leader" || n.id == st.id {
                    n.up
                } else {
                    live.iter().any(|(id, up)| *id == n.id && *up)
                }
            })
            .count() as u64;
        Ok(ClusterMetrics {
            wills: self.will_stats.snapshot(),
            node_id: st.id,
            is_leader: st.state == "leader",
            term: st.term,
            last_log_index: st.last_log_index.unwrap_or(0),
            committed: st.committed.unwrap_or(0),
            applied: st.applied.unwrap_or(0),
            members: st.nodes.len() as u64,
            members_up,
            commits: st.counters.commits,
            committed_ops: st.counters.committed_ops,
            commit_us_total: st.counters.commit_us_total,
            write_errors: st.counters.write_errors,
            appends: st.counters.appends,
            elections: st.counters.terms_seen,
            leader_changes: st.counters.leader_changes,
            snapshots_built: st.counters.snapshots_built,
            snapshots_installed: st.counters.snapshots_installed,
            last_snapshot_bytes: st.counters.last_snapshot_bytes,
            ownership: self.stats.snapshot(),
        })
    }
}
