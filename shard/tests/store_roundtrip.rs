//! Write every kind of record, reopen the data dir, read it all back.

#[path = "store_util.rs"]
mod util;

use std::num::NonZeroU16;

use ringmq_codec::{QoS, TopicFilter, TopicName};
use ringmq_shard::store::{self, OutboundState, StoreHandle};
use util::*;

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

/// Starts shard `i`'s store on an executor and runs `f` on it, flushing after.
fn with_store<F>(handle: StoreHandle, f: F)
where
    F: FnOnce(&store::Store) + Send + 'static,
{
    on_executor(move || async move {
        let s = handle.start();
        f(&s);
        s.close().await.expect("commit");
    });
}

#[test]
fn every_record_survives_reopen_in_order() {
    let dir = TempDir::new("roundtrip");
    let mut rec = open(dir.path(), 2);
    assert_eq!(rec.stats.sessions, 0);
    let handle = rec.shards.remove(1).handle;
    drop(rec);
    with_store(handle, |s| {
        let key = s.allocate_session_key();
        let mut sess = session("client-1", 3600);
        sess.will = Some(will());
        s.put_session(key, &sess).detach();
        s.put_subscription(key, &sub("a/+/c", QoS::ExactlyOnce, Some(7)))
            .detach();
        s.put_subscription(key, &sub("x/#", QoS::AtLeastOnce, None))
            .detach();
        s.put_subscription(key, &sub("gone", QoS::AtMostOnce, None))
            .detach();
        s.delete_subscription(key, &TopicFilter::try_from("gone").unwrap())
            .detach();
        // Outbound in seq order, written out of order, in all three states.
        s.put_outbound(
            key,
            300,
            OutboundState::Queued,
            Some(msg("q/1", QoS::AtLeastOnce, b"3").view()),
        )
        .detach();
        s.put_outbound(
            key,
            2,
            OutboundState::AwaitingAck(pid(9)),
            Some(rich_msg().view()),
        )
        .detach();
        s.put_outbound(key, 5, OutboundState::AwaitingPubComp(pid(10)), None)
            .detach();
        s.put_outbound(
            key,
            6,
            OutboundState::Queued,
            Some(msg("q/2", QoS::AtLeastOnce, b"6").view()),
        )
        .detach();
        s.delete_outbound(key, 6).detach();
        s.put_inbound_qos2(key, pid(77), None).detach();
        s.put_inbound_qos2(key, pid(78), Some(rich_msg().view()))
            .detach();
        s.delete_inbound_qos2(key, pid(78)).detach();
        s.put_inbound_qos2(key, pid(79), Some(rich_msg().view()))
            .detach();
        s.set_retained(
            &TopicName::try_from("r/1").unwrap(),
            Some(rich_msg().view()),
        )
        .detach();
    });

    let rec = open(dir.path(), 2);
    assert_eq!(rec.stats.sessions, 1);
    assert!(rec.shards[0].sessions.is_empty());
    let s = &rec.shards[1].sessions[0];
    assert_eq!(s.record.client_id.as_str(), "client-1");
    assert_eq!(s.record.expiry_interval, 3600);
    assert_eq!(s.record.will, Some(will()));
    assert!(
        s.record.disconnected_at_ms.is_some(),
        "connected at crash: disconnect time set"
    );
    let filters: Vec<&str> = s.subscriptions.iter().map(|x| x.filter.as_str()).collect();
    assert_eq!(filters, ["a/+/c", "x/#"]);
    assert_eq!(s.subscriptions[0], sub("a/+/c", QoS::ExactlyOnce, Some(7)));
    let seqs: Vec<(u64, OutboundState)> = s.outbound.iter().map(|o| (o.seq, o.state)).collect();
    assert_eq!(
        seqs,
        [
            (2, OutboundState::AwaitingAck(pid(9))),
            (5, OutboundState::AwaitingPubComp(pid(10))),
            (300, OutboundState::Queued)
        ]
    );
    assert_eq!(s.outbound[0].message, Some(rich_msg()));
    assert_eq!(s.outbound[1].message, None);
    assert_eq!(s.next_seq, 301);
    let ids: Vec<u16> = s.inbound_qos2.iter().map(|i| i.packet_id.get()).collect();
    assert_eq!(ids, [77, 79]);
    assert_eq!(s.inbound_qos2[1].message, Some(rich_msg()));
    assert_eq!(rec.retained.len(), 1);
    assert_eq!(rec.retained[0].topic.as_str(), "r/1");
    assert_eq!(rec.retained[0].message, rich_msg());

    // A new session key never collides with a recovered one.
    let mut rec = rec;
    let handle = rec.shards.remove(1).handle;
    drop(rec);
    on_executor(move || async move {
        assert_eq!(handle.start().allocate_session_key(), 2);
    });
}

#[test]
fn deleted_session_takes_its_rows_with_it() {
    let dir = TempDir::new("delete");
    let mut rec = open(dir.path(), 1);
    let handle = rec.shards.remove(0).handle;
    drop(rec);
    with_store(handle, |s| {
        for name in ["keep", "drop"] {
            let key = s.allocate_session_key();
            s.put_session(key, &session(name, 60)).detach();
            s.put_subscription(key, &sub("t", QoS::AtLeastOnce, None))
                .detach();
            s.put_outbound(
                key,
                1,
                OutboundState::Queued,
                Some(msg("t", QoS::AtLeastOnce, b"x").view()),
            )
            .detach();
            s.put_inbound_qos2(key, pid(1), None).detach();
            if name == "drop" {
                s.delete_session(key).detach();
            }
        }
    });
    let rec = open(dir.path(), 1);
    let sessions = &rec.shards[0].sessions;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].record.client_id.as_str(), "keep");
    assert_eq!(sessions[0].outbound.len(), 1);
    assert_eq!(rec.stats.orphans, 0);
}

#[test]
fn expired_sessions_are_purged_at_startup_and_on_demand() {
    let dir = TempDir::new("purge");
    let mut rec = open(dir.path(), 1);
    let handle = rec.shards.remove(0).handle;
    drop(rec);
    let now = store::unix_ms();
    with_store(handle, move |s| {
        let mut old = session("expired", 10);
        old.disconnected_at_ms = Some(now - 11_000);
        s.put_session(s.allocate_session_key(), &old).detach();
        let mut fresh = session("fresh", 10);
        fresh.disconnected_at_ms = Some(now);
        s.put_session(s.allocate_session_key(), &fresh).detach();
        let mut forever = session("forever", u32::MAX);
        forever.disconnected_at_ms = Some(1);
        s.put_session(s.allocate_session_key(), &forever).detach();
    });
    let mut rec = open(dir.path(), 1);
    assert_eq!(rec.stats.purged_sessions, 1);
    let mut names: Vec<String> = rec.shards[0]
        .sessions
        .iter()
        .map(|s| s.record.client_id.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["forever", "fresh"]);
    let handle = rec.shards.remove(0).handle;
    drop(rec);
    on_executor(move || async move {
        let s = handle.start();
        s.purge_expired(now + 10_001).await.unwrap();
        assert_eq!(s.stats().purged_sessions, 1);
    });
    let rec = open(dir.path(), 1);
    assert_eq!(rec.shards[0].sessions.len(), 1);
    assert_eq!(
        rec.shards[0].sessions[0].record.client_id.as_str(),
        "forever"
    );
}

#[test]
fn retained_newest_wins_across_shards_and_tombstones_delete() {
    let dir = TempDir::new("retained");
    let mut rec = open(dir.path(), 2);
    let h1 = rec.shards.remove(1).handle;
    let h0 = rec.shards.remove(0).handle;
    drop(rec);
    let t = |s: &str| TopicName::try_from(s).unwrap();
    // Shard 0 sets both topics first; shard 1 later replaces one and deletes the other.
    with_store(h0, move |s| {
        s.set_retained(
            &t("r/replaced"),
            Some(msg("r/replaced", QoS::AtMostOnce, b"old").view()),
        )
        .detach();
        s.set_retained(
            &t("r/deleted"),
            Some(msg("r/deleted", QoS::AtMostOnce, b"old").view()),
        )
        .detach();
        s.set_retained(
            &t("r/kept"),
            Some(msg("r/kept", QoS::AtLeastOnce, b"k").view()),
        )
        .detach();
    });
    with_store(h1, move |s| {
        s.set_retained(
            &t("r/replaced"),
            Some(msg("r/replaced", QoS::AtMostOnce, b"new").view()),
        )
        .detach();
        s.set_retained(&t("r/deleted"), None).detach();
    });
    for _ in 0..2 {
        // Twice: the second open sees the compacted rows and must agree.
        let rec = open(dir.path(), 2);
        let mut got: Vec<(String, Vec<u8>)> = rec
            .retained
            .iter()
            .map(|r| (r.topic.to_string(), r.message.publish.payload.to_vec()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("r/kept".to_string(), b"k".to_vec()),
                ("r/replaced".to_string(), b"new".to_vec())
            ]
        );
    }
}

#[test]
fn delivery_fields_come_from_the_message_ref() {
    let dir = TempDir::new("delivery");
    let mut rec = open(dir.path(), 1);
    let handle = rec.shards.remove(0).handle;
    drop(rec);
    with_store(handle, |s| {
        // The shared publish says QoS 2, retain, alias 5, sub id 1; this delivery differs.
        let mut shared = rich_msg();
        shared.publish.properties.topic_alias = Some(5);
        let view = store::MessageRef {
            publish: &shared.publish,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: &[42],
            received_at_ms: 99,
        };
        s.put_session(1, &session("d", 60)).detach();
        s.put_outbound(1, 0, OutboundState::AwaitingAck(pid(3)), Some(view))
            .detach();
    });
    let rec = open(dir.path(), 1);
    let m = rec.shards[0].sessions[0].outbound[0]
        .message
        .clone()
        .unwrap();
    assert_eq!(m.publish.qos, QoS::AtLeastOnce);
    assert!(!m.publish.retain && !m.publish.dup);
    assert_eq!(m.publish.packet_id, None);
    assert_eq!(
        m.publish.properties.topic_alias, None,
        "aliases are per connection"
    );
    assert_eq!(&m.publish.properties.subscription_identifiers[..], &[42]);
    assert_eq!(m.received_at_ms, 99);
    assert_eq!(m.publish.payload, rich_msg().publish.payload);
}
