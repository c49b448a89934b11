//! The node links follow the membership: a thread reads this node's view of
//! the members every 500 ms and, when the set of other members or their
//! addresses changed, tells shard 0 where their links listen (their cluster
//! port plus one, docs/cluster-data-plane.md). So a node added with `ctl
//! cluster add-node` (learner, then voter) is linked by every node that
//! applied the change, and a removed node's link goes. Ends when the raft
//! node stops.

use ringmq_raft::RaftHandle;
use ringmq_shard::cluster::{Peer, PeerSetter};
use std::net::ToSocketAddrs;
use std::time::Duration;

const EVERY: Duration = Duration::from_millis(500);

pub fn start(handle: RaftHandle, links: PeerSetter) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("ringmq-members".into())
        .spawn(move || {
            let me = handle.id();
            let mut last: Option<Vec<Peer>> = None;
            loop {
                std::thread::sleep(EVERY);
                let Ok(st) = futures_lite::future::block_on(handle.status()) else {
                    return; // stopped
                };
                if st.nodes.is_empty() {
                    continue; // not a member yet (a joiner before add-node)
                }
                let mut peers: Vec<Peer> = st
                    .nodes
                    .iter()
                    .filter(|n| n.id != me)
                    .filter_map(|n| link_peer(n.id, &n.addr))
                    .collect();
                peers.sort_by_key(|p| p.id);
                if last.as_ref() != Some(&peers) {
                    links.set(peers.clone());
                    last = Some(peers);
                }
            }
        })
        .map_err(|e| format!("cluster: cannot start the membership thread: {e}"))
}

/// Where node `id` (cluster port at `addr`) accepts node links.
fn link_peer(id: u64, addr: &str) -> Option<Peer> {
    let mut a = addr.to_socket_addrs().ok()?.next()?;
    a.set_port(a.port().checked_add(crate::config::LINK_PORT_OFFSET)?);
    Some(Peer { id, link_addr: a })
}
