//! Fault injection for tests: cut this node off from chosen peers.
//!
//! A blocked peer is unreachable both ways as far as this node is concerned:
//! outgoing RPCs to it fail at once, and requests from it are dropped with
//! their connection. Partitioning two groups means blocking each side on the
//! nodes of the other.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::types::NodeId;

/// The set of peers this node refuses to talk to.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Faults {
    pub fn block(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer);
    }

    pub fn unblock(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&peer)
    }
}
