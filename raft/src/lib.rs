//! ringmq-raft: cluster metadata replicated with openraft.
//!
//! Membership, session ownership and routes. This crate knows nothing of MQTT:
//! the broker hands it opaque keys and values. Empty until the cluster issue.
