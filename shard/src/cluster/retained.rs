//! Retained messages for a node that was away: when a link comes up, each
//! side sends the other every retained message it holds (`Frame::Retained`,
//! with the wall-clock time it was set), in bounded steps (256 per tick, the
//! link queue's byte bound beyond which they are dropped and counted). The
//! receiver keeps one unless it holds a newer message on that topic or the
//! same payload already; it stores it durably and on every shard like a
//! retained PUBLISH, without delivering it (its subscribers get it as
//! retained when they subscribe). So a retained message set while a node was
//! down or cut off reaches it when it returns. A retained message *deleted*
//! while a node was away is not: deletions leave no trace to send (left).

use super::frame::{encode_publish, Frame};
use super::link::Link;
use crate::shard::Shard;
use bytes::BytesMut;
use ringmq_codec::{Publish, TopicFilter};
use std::rc::Rc;

/// Messages per step of the sync.
const STEP: usize = 256;

/// Sends this node's retained messages on `link` (connection `generation`),
/// `$` topics excepted, in steps of [`STEP`].
pub(super) async fn send_all(shard: Rc<Shard>, link: Rc<Link>, generation: u64) {
    let Ok(all) = TopicFilter::try_from("#") else {
        return;
    };
    let mut cursor = shard.retained.borrow().replay(&all);
    let mut batch = Vec::new();
    let mut sent = 0u64;
    loop {
        if !link.is_up() || link.generation.get() != generation {
            return;
        }
        batch.clear();
        let done = cursor.next_batch(&shard.retained.borrow(), STEP, &mut batch);
        for m in &batch {
            let mut b = BytesMut::new();
            encode_publish(&m.publish, &mut b);
            if b.len() <= 5 {
                continue;
            }
            let at = crate::store::instant_to_unix_ms(m.stored_at);
            let mut f = BytesMut::with_capacity(b.len() + 8);
            Frame::encode_retained(at, &b[5..], &mut f);
            link.push_publish(&f);
            sent += 1;
        }
        if done {
            break;
        }
        futures_lite::future::yield_now().await;
    }
    link.stats.retained_out.add(sent);
}

/// A retained message of the peer, set at `at_ms`: kept unless this node
/// has a newer one on the topic, or this one already.
pub(super) fn received(shard: &Rc<Shard>, link: &Link, at_ms: u64, mut p: Publish) {
    let keep = match shard.retained.borrow().get(p.topic.as_str()) {
        None => true,
        Some(m) => {
            m.publish.payload != p.payload && crate::store::instant_to_unix_ms(m.stored_at) < at_ms
        }
    };
    if !keep || p.payload.is_empty() {
        return;
    }
    // [MQTT-3.3.2-6] the expiry interval goes on from when it was set.
    if let Some(total) = p.properties.message_expiry_interval {
        let gone = crate::store::unix_ms().saturating_sub(at_ms) / 1000;
        match u64::from(total).checked_sub(gone).filter(|l| *l > 0) {
            Some(left) => p.properties.message_expiry_interval = Some(left as u32),
            None => return,
        }
    }
    p.retain = true;
    link.stats.retained_in.inc();
    crate::route::retain_only(shard, p);
}
