//! Outbound rows put and deleted before their commit never reach LMDB
//! (`docs/storage.md`, "Rows that never reach the disk"), and a row that was
//! on disk before is still deleted.

#[path = "store_util.rs"]
mod util;

use std::time::Duration;

use ringmq_codec::{PacketId, QoS};
use ringmq_shard::store::{self, Durability, OutboundState, Store};
use util::*;

fn start(dir: &std::path::Path) -> store::StoreHandle {
    let mut rec = store::open(dir, 1, &opts(Durability::Sync)).expect("open");
    rec.shards.remove(0).handle
}

fn sent(id: u16) -> OutboundState {
    OutboundState::AwaitingAck(PacketId::new(id).unwrap())
}

/// A committed session row to hang outbound rows on.
async fn with_session(s: &Store) -> u64 {
    let key = s.allocate_session_key();
    s.put_session(key, &session("c", 60))
        .await
        .expect("durable");
    key
}

fn outbound_rows(dir: &std::path::Path) -> Vec<u64> {
    let rec = open(dir, 1);
    rec.shards[0].sessions[0]
        .outbound
        .iter()
        .map(|o| o.seq)
        .collect()
}

#[test]
fn a_fresh_row_deleted_before_its_commit_costs_no_commit() {
    let dir = TempDir::new("cancel-fresh");
    let handle = start(dir.path());
    let stats = on_executor(move || async move {
        let s = handle.start();
        let key = with_session(&s).await;
        let m = msg("t", QoS::AtLeastOnce, b"m");
        s.put_outbound_new(key, 1, sent(1), m.view()).detach();
        let m2 = msg("t", QoS::AtLeastOnce, b"kept");
        s.put_outbound_new(key, 2, OutboundState::Queued, m2.view())
            .detach();
        // The PUBACK of seq 1 arrives before the commit: put and delete both vanish.
        s.delete_outbound(key, 1).await.expect("durable");
        s.stats()
    });
    assert_eq!(stats.commits, 2, "session, then seq 2 alone: {stats:?}");
    assert_eq!(stats.ops, 2, "{stats:?}");
    assert_eq!(stats.cancelled, 2, "the put and its delete: {stats:?}");
    assert_eq!(outbound_rows(dir.path()), [2]);
}

#[test]
fn a_batch_left_empty_resolves_without_touching_lmdb() {
    let dir = TempDir::new("cancel-empty");
    let handle = start(dir.path());
    let stats = on_executor(move || async move {
        let s = handle.start();
        let key = with_session(&s).await;
        for seq in 1..=100 {
            let m = msg("t", QoS::AtLeastOnce, b"m");
            s.put_outbound_new(key, seq, sent(seq as u16), m.view())
                .detach();
        }
        for seq in 1..=100 {
            s.delete_outbound(key, seq).detach();
        }
        s.flush().await.expect("resolved");
        s.stats()
    });
    assert_eq!(stats.commits, 1, "only the session row: {stats:?}");
    assert_eq!(stats.cancelled, 200, "{stats:?}");
    assert!(outbound_rows(dir.path()).is_empty());
}

#[test]
fn a_row_already_on_disk_is_still_deleted() {
    let dir = TempDir::new("cancel-update");
    let handle = start(dir.path());
    let stats = on_executor(move || async move {
        let s = handle.start();
        let key = with_session(&s).await;
        let m = msg("t", QoS::AtLeastOnce, b"m");
        s.put_outbound_new(key, 7, OutboundState::Queued, m.view())
            .await
            .expect("queued row durable");
        // Sent from the queue, then acknowledged, before the next commit:
        // the update is dropped, the delete is not.
        s.put_outbound(key, 7, sent(3), Some(m.view())).detach();
        s.delete_outbound(key, 7).await.expect("durable");
        s.stats()
    });
    assert_eq!(stats.commits, 3, "{stats:?}");
    assert_eq!(stats.ops, 3, "session, queued row, delete: {stats:?}");
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert!(outbound_rows(dir.path()).is_empty());
}

#[test]
fn a_sent_row_never_acknowledged_is_committed_after_a_bounded_wait() {
    let dir = TempDir::new("cancel-unacked");
    let handle = start(dir.path());
    on_executor(move || async move {
        let s = handle.start();
        let key = with_session(&s).await;
        let m = msg("t", QoS::AtLeastOnce, b"m");
        let t = s.put_outbound_new(key, 1, sent(9), m.view());
        let deadline = glommio::timer::sleep(Duration::from_secs(10));
        let done = futures_lite::future::or(async { Some(t.await) }, async {
            deadline.await;
            None
        })
        .await;
        done.expect("committed without its PUBACK")
            .expect("durable");
    });
    assert_eq!(outbound_rows(dir.path()), [1]);
}

#[test]
fn queued_and_qos2_rows_are_not_waited_for() {
    // Rows whose message is not out without its commit (queued, or QoS 2,
    // which leaves only once durable) commit at once: the store must not
    // wait for an acknowledgement that cannot come first.
    let dir = TempDir::new("cancel-nowait");
    let handle = start(dir.path());
    let stats = on_executor(move || async move {
        let s = handle.start();
        let key = with_session(&s).await;
        let q2 = msg("t", QoS::ExactlyOnce, b"two");
        let t = s.put_outbound_new(key, 1, sent(1), q2.view());
        let q1 = msg("t", QoS::AtLeastOnce, b"one");
        let t2 = s.put_outbound_new(key, 2, OutboundState::Queued, q1.view());
        t.await.expect("durable");
        t2.await.expect("durable");
        s.stats()
    });
    assert_eq!(stats.commits, 2, "{stats:?}");
    assert_eq!(outbound_rows(dir.path()), [1, 2]);
}
