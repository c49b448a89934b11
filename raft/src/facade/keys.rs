//! Key layout of the replicated map.
//!
//! ```text
//! own/<client id bytes>   owner node id (u64 BE); the key's version is the epoch
//! live/<node id u64 BE>   postcard(Liveness), written by the leader on change
//! ```

use crate::types::NodeId;

pub const OWN: &[u8] = b"own/";
pub const LIVE: &[u8] = b"live/";

pub fn own(client_id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(OWN.len() + client_id.len());
    k.extend_from_slice(OWN);
    k.extend_from_slice(client_id);
    k
}

/// The client id of an ownership key.
pub fn own_client(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(OWN)
}

pub fn live(node: NodeId) -> Vec<u8> {
    let mut k = LIVE.to_vec();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

pub fn live_node(key: &[u8]) -> Option<NodeId> {
    let rest = key.strip_prefix(LIVE)?;
    Some(NodeId::from_be_bytes(rest.try_into().ok()?))
}
