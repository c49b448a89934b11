//! The node links of the data plane (`ringmq_shard::cluster`), from the
//! `[cluster]` section: each node accepts links on its cluster port + 1, on
//! the same host (as Redis Cluster's bus is its port + 10000), so
//! `--cluster-peers` alone says where every node's links are.

use super::{Config, ConfigError, Sources};
use ringmq_shard::cluster::{ClusterConfig, Peer};
use std::net::{SocketAddr, ToSocketAddrs};

/// The link port is the cluster port plus this.
pub const LINK_PORT_OFFSET: u16 = 1;

fn link_addr(mut a: SocketAddr) -> Result<SocketAddr, String> {
    let port = a
        .port()
        .checked_add(LINK_PORT_OFFSET)
        .ok_or_else(|| format!("{a}: the node link port (cluster port + 1) would be past 65535"))?;
    a.set_port(port);
    Ok(a)
}

impl Config {
    /// The node links' configuration when this node is clustered.
    pub fn cluster_links(&self) -> Result<Option<ClusterConfig>, String> {
        if !self.clustered() {
            return Ok(None);
        }
        let c = &self.cluster;
        let listen = link_addr(self.cluster_bind()?)?;
        let mut peers = Vec::new();
        for p in c.cluster_peers.iter().filter(|p| p.id != c.node_id) {
            let addr = p
                .addr
                .to_socket_addrs()
                .map_err(|e| format!("{} does not resolve ({e})", p.addr))?
                .next()
                .ok_or_else(|| format!("{} resolves to no address", p.addr))?;
            peers.push(Peer {
                id: p.id,
                link_addr: link_addr(addr)?,
            });
        }
        let mut cfg = ClusterConfig::new(c.node_id, c.cluster_id.clone(), listen, peers);
        cfg.durable_ack_timeout = c.cluster_ack_timeout.duration();
        cfg.outbox_max_bytes = usize::try_from(c.cluster_outbox_max_bytes).unwrap_or(usize::MAX);
        cfg.node_down_after = c.node_down_after.duration();
        // The metadata links' files secure the data links too: one CA, one name (the cluster id).
        if let (Some(cert), Some(key), Some(ca)) = (
            &c.cluster_tls_cert.0,
            &c.cluster_tls_key.0,
            &c.cluster_tls_ca.0,
        ) {
            cfg.tls = Some(ringmq_shard::cluster::tls::load(
                cert.clone(),
                key.clone(),
                ca.clone(),
                &c.cluster_id,
            )?);
        }
        Ok(Some(cfg))
    }

    pub(super) fn validate_links(&self, src: &Sources) -> Result<(), ConfigError> {
        match self.cluster_links() {
            Ok(_) => Ok(()),
            Err(why) => {
                let peers = self
                    .cluster
                    .cluster_peers
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                Err(ConfigError(format!(
                    "{}: {why}",
                    src.describe("cluster_peers", &peers)
                )))
            }
        }
    }
}
