//! Retained messages for a node that was away: when a link comes up, each
//! side sends the other every retained message it holds (`Frame::Retained`,
//! with the wall-clock time it was set), in bounded steps (256 per tick, the
//! link queue's byte bound beyond which they are dropped and counted). The
//! receiver keeps one unless it holds a newer message on that topic or the
//! same payload already; it stores it durably and on every shard like a
//! retained PUBLISH, without delivering it (its subscribers get it as
//! retained when they subscribe). So a retained message set while a node was
//! down or cut off reaches it when it returns.
//!
//! **Deletions** too: shard 0 keeps a tombstone (topic, unix ms) for every
//! retained message deleted on this node or told by a peer
//! ([`Tombstones`]: the newest [`TOMBSTONES_MAX`], at most [`TOMBSTONE_KEEP`]
//! old; they survive a restart as the store's tombstone rows). The sync sends
//! them after the messages, as `Retained` frames with an empty payload. The
//! receiver deletes its message on that topic if it was set before the
//! deletion, and keeps the tombstone, so a node that comes back with the
//! deleted message neither keeps it nor gives it back to the others (a
//! message it receives older than a tombstone is ignored).

use super::frame::{encode_publish, Frame};
use super::link::Link;
use crate::shard::Shard;
use crate::store::{TOMBSTONES_MAX, TOMBSTONE_KEEP};
use bytes::{Bytes, BytesMut};
use ringmq_codec::{Publish, TopicFilter, TopicName};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Recent retained deletions, by topic (shard 0).
#[derive(Default)]
pub(crate) struct Tombstones {
    at: HashMap<TopicName, u64>,
    /// In the order noted, for eviction (entries superseded since are skipped).
    order: VecDeque<(TopicName, u64)>,
}

impl Tombstones {
    /// `topic`'s retained message was deleted at `at_ms` (the later time wins).
    pub fn note(&mut self, topic: &TopicName, at_ms: u64) {
        let e = self.at.entry(topic.clone()).or_insert(0);
        if *e >= at_ms {
            return;
        }
        *e = at_ms;
        self.order.push_back((topic.clone(), at_ms));
        while self.at.len() > TOMBSTONES_MAX || self.order.len() > 2 * TOMBSTONES_MAX {
            let Some((t, at)) = self.order.pop_front() else {
                break;
            };
            if self.at.get(&t) == Some(&at) {
                self.at.remove(&t);
            }
        }
    }

    /// A retained message was set on `topic`: its tombstone is void.
    pub fn clear(&mut self, topic: &TopicName) {
        self.at.remove(topic);
    }

    /// When `topic`'s retained message was last deleted, if recently.
    pub fn get(&self, topic: &str) -> Option<u64> {
        let t = TopicName::try_from(topic).ok()?;
        self.at
            .get(&t)
            .copied()
            .filter(|at| *at + TOMBSTONE_KEEP.as_millis() as u64 > crate::store::unix_ms())
    }

    /// The tombstones younger than [`TOMBSTONE_KEEP`].
    pub fn live(&self) -> Vec<(TopicName, u64)> {
        let after = crate::store::unix_ms().saturating_sub(TOMBSTONE_KEEP.as_millis() as u64);
        self.at
            .iter()
            .filter(|(_, at)| **at > after)
            .map(|(t, at)| (t.clone(), *at))
            .collect()
    }

    /// The tombstones the store kept across the restart (shard 0, at start).
    pub fn restore(&mut self, rows: Vec<crate::store::Tombstone>) {
        for (topic, at) in rows.into_iter().rev() {
            if let Ok(t) = TopicName::try_from(topic) {
                self.note(&t, at);
            }
        }
    }
}

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
    // Then the recent deletions: empty retained messages with their time.
    let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) else {
        return;
    };
    let dead = hub.tombstones.borrow().live();
    for chunk in dead.chunks(STEP) {
        if !link.is_up() || link.generation.get() != generation {
            return;
        }
        for (topic, at) in chunk {
            let mut p = Publish::new(topic.clone(), Bytes::new());
            p.retain = true;
            let mut b = BytesMut::new();
            encode_publish(&p, &mut b);
            if b.len() <= 5 {
                continue;
            }
            let mut f = BytesMut::with_capacity(b.len() + 8);
            Frame::encode_retained(*at, &b[5..], &mut f);
            link.push_publish(&f);
            sent += 1;
        }
        futures_lite::future::yield_now().await;
    }
    link.stats.retained_out.add(sent);
}

/// A retained message of the peer, set at `at_ms`: kept unless this node
/// has a newer one on the topic, or this one already.
pub(super) fn received(shard: &Rc<Shard>, link: &Link, at_ms: u64, mut p: Publish) {
    let Some(hub) = shard.cluster.as_ref().and_then(|n| n.hub.clone()) else {
        return;
    };
    if p.payload.is_empty() {
        deleted(shard, &hub, link, at_ms, p);
        return;
    }
    // Deleted here after it was set there: it stays deleted.
    if hub
        .tombstones
        .borrow()
        .get(p.topic.as_str())
        .is_some_and(|dead| dead >= at_ms)
    {
        return;
    }
    let keep = match shard.retained.borrow().get(p.topic.as_str()) {
        None => true,
        Some(m) => {
            m.publish.payload != p.payload && crate::store::instant_to_unix_ms(m.stored_at) < at_ms
        }
    };
    if !keep {
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

/// A retained deletion of the peer at `at_ms`: this node's message on the
/// topic goes if it was set before (stored as a deletion, on every shard).
fn deleted(shard: &Rc<Shard>, hub: &super::hub::Hub, link: &Link, at_ms: u64, p: Publish) {
    let older = shard
        .retained
        .borrow()
        .get(p.topic.as_str())
        .map(|m| crate::store::instant_to_unix_ms(m.stored_at) < at_ms);
    if older == Some(true) {
        link.stats.retained_in.inc();
        let topic = p.topic.clone();
        let mut p = p;
        p.retain = true;
        crate::route::retain_only(shard, p);
        // The deletion's own time, not the time it was applied here.
        let mut t = hub.tombstones.borrow_mut();
        t.clear(&topic);
        t.note(&topic, at_ms);
    } else if older.is_none() {
        hub.tombstones.borrow_mut().note(&p.topic, at_ms);
    }
}

/// A retained message was set (`deleted` false) or deleted on this node
/// (shard 0's replica, for local publishes and peers' alike).
pub(super) fn changed(hub: &super::hub::Hub, topic: &TopicName, deleted: bool) {
    if topic.as_str().starts_with('$') {
        return;
    }
    let mut t = hub.tombstones.borrow_mut();
    if deleted {
        t.note(topic, crate::store::unix_ms());
    } else {
        t.clear(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::try_from(s).unwrap()
    }

    #[test]
    fn the_later_deletion_wins_and_a_set_clears_it() {
        let now = crate::store::unix_ms();
        let mut ts = Tombstones::default();
        ts.note(&t("a/b"), now - 10);
        ts.note(&t("a/b"), now - 20);
        assert_eq!(ts.get("a/b"), Some(now - 10));
        ts.note(&t("a/b"), now);
        assert_eq!(ts.get("a/b"), Some(now));
        ts.clear(&t("a/b"));
        assert_eq!(ts.get("a/b"), None);
        assert!(ts.live().is_empty());
    }

    #[test]
    fn old_tombstones_are_not_live_and_the_count_is_bounded() {
        let now = crate::store::unix_ms();
        let mut ts = Tombstones::default();
        let old = now - TOMBSTONE_KEEP.as_millis() as u64 - 1;
        ts.note(&t("old"), old);
        assert_eq!(ts.get("old"), None);
        assert!(ts.live().is_empty());
        for i in 0..TOMBSTONES_MAX + 10 {
            ts.note(&t(&format!("t/{i}")), now);
        }
        assert_eq!(ts.at.len(), TOMBSTONES_MAX);
        // The first noted went first.
        assert_eq!(ts.get("t/0"), None);
        assert_eq!(ts.get(&format!("t/{}", TOMBSTONES_MAX + 9)), Some(now));
    }
}
