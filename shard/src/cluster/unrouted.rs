//! Copies another node routed here that match no subscription and no stub
//! (a share-group copy: no member of its group and no moving one):
//! for MQTT a message with no matching subscribers (v5 PUBACK 0x10, a
//! success: the publisher was acknowledged long ago, on its own node). Most
//! often a copy that was in the sender's outbox while this node was down and
//! came after the session it was for had moved on and its stub ended.
//! Counted (`copies_unrouted`) and logged once per sending node per minute.

use super::{Origin, PeerStamp};
use crate::shard::Shard;
use ringmq_codec::Publish;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(60);

thread_local! {
    /// Per sending node (0: not known), the last log on this shard's thread.
    static LOGGED: RefCell<HashMap<u64, Instant>> = RefCell::new(HashMap::new());
}

pub(crate) fn copy(shard: &Shard, p: &Publish, peer: Option<PeerStamp>, origin: Option<Origin>) {
    let Some(n) = shard.cluster.as_ref() else {
        return;
    };
    n.stats.handover.copies_unrouted.fetch_add(1, Relaxed);
    let from = peer.map(|s| s.node).or(origin.map(|o| o.node)).unwrap_or(0);
    let now = Instant::now();
    let log = LOGGED.with(|l| {
        let mut l = l.borrow_mut();
        let due = l
            .get(&from)
            .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if due {
            l.insert(from, now);
        }
        due
    });
    if log {
        tracing::warn!(
            shard = shard.id,
            from,
            topic = p.topic.as_str(),
            qos = p.qos as u8,
            "a copy from another node matched no subscription and no stub here: no matching subscribers (counted in copies_unrouted; logged once a minute per node)"
        );
    }
}
