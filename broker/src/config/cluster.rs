//! The `[cluster]` section: checks, and the mapping to the raft crate's
//! [`ringmq_raft::NodeConfig`].
//!
//! A node is clustered when `cluster_peers` names a node other than itself;
//! otherwise it is a cluster of one and starts no control-plane thread.

use super::{Config, ConfigError, Sources};
use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};

/// Subdirectory of the data dir holding the cluster metadata (LMDB).
pub const CLUSTER_DIR: &str = "cluster";

impl Config {
    /// Whether this node runs the cluster: `cluster_peers` names another
    /// node, or it joins a running cluster (`cluster_join`).
    pub fn clustered(&self) -> bool {
        let c = &self.cluster;
        c.cluster_join || c.cluster_peers.iter().any(|p| p.id != c.node_id)
    }

    /// The cluster port's bind address: `cluster_listen`, else this node's
    /// entry of `cluster_peers` resolved.
    pub(super) fn cluster_bind(&self) -> Result<SocketAddr, String> {
        let c = &self.cluster;
        if let Some(a) = c.cluster_listen.0 {
            return Ok(a);
        }
        let me = c
            .cluster_peers
            .iter()
            .find(|p| p.id == c.node_id)
            .ok_or("this node is not in cluster_peers")?;
        me.addr
            .to_socket_addrs()
            .map_err(|e| format!("{} does not resolve ({e})", me.addr))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", me.addr))
    }

    pub(super) fn validate_cluster(&self, src: &Sources) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn Display, why: &str| {
            Err(ConfigError(format!("{}: {why}", src.describe(key, value))))
        };
        let c = &self.cluster;
        let peers_text = || {
            c.cluster_peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        if !c.cluster_peers.is_empty() {
            if c.node_id == 0 {
                return bad(
                    "node_id",
                    &0,
                    "cluster_peers is set: give this node's id (1 or more)",
                );
            }
            for (i, p) in c.cluster_peers.iter().enumerate() {
                if c.cluster_peers[..i].iter().any(|q| q.id == p.id) {
                    let why = format!("node id {} listed twice", p.id);
                    return bad("cluster_peers", &peers_text(), &why);
                }
            }
            if !c.cluster_peers.iter().any(|p| p.id == c.node_id) {
                let why = format!("must include this node (node_id {})", c.node_id);
                return bad("cluster_peers", &peers_text(), &why);
            }
        }
        if c.cluster_join && c.node_id == 0 {
            return bad(
                "node_id",
                &0,
                "cluster_join is set: give this node's id (1 or more)",
            );
        }
        if c.cluster_join && c.cluster_peers.is_empty() && c.cluster_listen.0.is_none() {
            let why = "cluster_join needs this node's address: cluster_peers ID@HOST:PORT or cluster_listen";
            return bad("cluster_peers", &"", why);
        }
        if c.cluster_id.is_empty() || c.cluster_id.len() > 256 {
            return bad("cluster_id", &c.cluster_id, "must be 1 to 256 bytes");
        }
        if c.node_down_after.0 < 200 {
            return bad(
                "node_down_after",
                &c.node_down_after,
                "must be at least 200ms",
            );
        }
        if !(100..=60_000).contains(&c.cluster_claim_timeout.0) {
            let v = c.cluster_claim_timeout;
            return bad("cluster_claim_timeout", &v, "must be in 100ms..=60s");
        }
        if !(100..=600_000).contains(&c.cluster_ack_timeout.0) {
            let v = c.cluster_ack_timeout;
            return bad("cluster_ack_timeout", &v, "must be in 100ms..=600s");
        }
        if c.cluster_outbox_max_bytes > 1 << 40 {
            let v = c.cluster_outbox_max_bytes;
            return bad("cluster_outbox_max_bytes", &v, "must be at most 1 TiB");
        }
        if c.cluster_snapshot_every == 0 {
            return bad("cluster_snapshot_every", &0, "must be at least 1");
        }
        let tls = [
            ("cluster_tls_cert", &c.cluster_tls_cert),
            ("cluster_tls_key", &c.cluster_tls_key),
            ("cluster_tls_ca", &c.cluster_tls_ca),
        ];
        let given = tls.iter().filter(|(_, v)| v.0.is_some()).count();
        if given != 0 && given != 3 {
            let (key, v) = tls
                .iter()
                .find(|(_, v)| v.0.is_none())
                .expect("one is missing");
            let why =
                "cluster TLS needs cluster_tls_cert, cluster_tls_key and cluster_tls_ca together";
            return bad(key, *v, why);
        }
        for (key, v) in tls {
            if let Some(p) = &v.0 {
                if let Err(e) = std::fs::metadata(p) {
                    return bad(key, v, &format!("cannot read it ({e})"));
                }
            }
        }
        let dns = matches!(
            rustls::pki_types::ServerName::try_from(c.cluster_id.as_str()),
            Ok(rustls::pki_types::ServerName::DnsName(_))
        );
        if given == 3 && !dns {
            let why =
                "with cluster TLS it is the name node certificates carry: it must be a DNS name";
            return bad("cluster_id", &c.cluster_id, why);
        }
        if self.clustered() {
            if let Err(why) = self.cluster_bind() {
                return bad("cluster_listen", &c.cluster_listen, &why);
            }
        }
        Ok(())
    }

    /// The raft node's configuration when this node is clustered.
    pub fn raft_node_config(&self) -> Option<ringmq_raft::NodeConfig> {
        if !self.clustered() {
            return None;
        }
        let c = &self.cluster;
        let bind = self.cluster_bind().ok()?;
        let dir = self.persistence.data_dir.join(CLUSTER_DIR);
        let mut n = ringmq_raft::NodeConfig::new(c.node_id, &c.cluster_id, bind, dir);
        n.advertise = c
            .cluster_peers
            .iter()
            .find(|p| p.id == c.node_id)
            .map(|p| p.addr.clone());
        // A joining node forms nothing: it waits to be added by the leader.
        // Every node of a new cluster proposes the same voters; the raft
        // crate initializes only a node that never was (restarts never do).
        if !c.cluster_join {
            n.bootstrap = c
                .cluster_peers
                .iter()
                .map(|p| (p.id, p.addr.clone()))
                .collect();
        }
        n.node_down_after = c.node_down_after.duration();
        n.liveness_interval = (n.node_down_after / 6).max(std::time::Duration::from_millis(50));
        n.snapshot_every = c.cluster_snapshot_every;
        n.keep_logs = c.cluster_keep_logs;
        if let (Some(cert), Some(key), Some(ca)) = (
            &c.cluster_tls_cert.0,
            &c.cluster_tls_key.0,
            &c.cluster_tls_ca.0,
        ) {
            n.tls = Some(ringmq_raft::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                server_name: c.cluster_id.clone(),
            });
        }
        Some(n)
    }
}
