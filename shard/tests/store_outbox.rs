//! The cluster's rows in shard 0's store (`store/outbox.rs`): outbox rows, the
//! peers' routes and the link run survive a reopen; the run grows by one per
//! open while the stream stays; recent retained deletions are handed to shard 0.
#[path = "store_util.rs"]
mod util;

use ringmq_codec::TopicName;
use ringmq_shard::store::{self, OutboxRow, StoreHandle};
use util::*;

/// Runs `f` on a started store, then commits and closes it; returns what `f` returned.
fn with_store<T, F>(handle: StoreHandle, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&store::Store) -> T + Send + 'static,
{
    handle.run_offline(f).expect("commit")
}

#[test]
fn outbox_rows_routes_and_the_run_survive_a_reopen() {
    let dir = TempDir::new("outbox");
    let mut rec = open(dir.path(), 1);
    let first = with_store(rec.shards.remove(0).handle, |s| {
        assert!(s.take_outbox().is_empty());
        s.put_outbox(3, 7, b"frame-7").detach();
        s.put_outbox(3, 8, b"frame-8").detach();
        s.put_outbox(2, 9, b"frame-9").detach();
        s.put_peer_route(3, "a/#", true).detach();
        s.put_peer_route(3, "b", true).detach();
        s.put_peer_route(3, "b", false).detach();
        s.delete_outbox(3, 7).detach();
        s.set_retained(&TopicName::try_from("r/x").unwrap(), None)
            .detach();
        s.link_run()
    });
    drop(rec);
    let mut rec = open(dir.path(), 1);
    let (rows, routes, run, dead) = with_store(rec.shards.remove(0).handle, |s| {
        (
            s.take_outbox(),
            s.take_peer_routes(),
            s.link_run(),
            s.take_retained_tombstones(),
        )
    });
    let frame = |id: u64, peer: u64, f: &'static [u8]| OutboxRow {
        peer,
        id,
        frame: bytes::Bytes::from_static(f),
    };
    // By peer, then id; the deleted row is gone.
    assert_eq!(rows, [frame(9, 2, b"frame-9"), frame(8, 3, b"frame-8")]);
    assert_eq!(routes, [(3, bytes::Bytes::from_static(b"a/#"))]);
    assert_eq!(
        run.stream, first.stream,
        "the stream stays with the data dir"
    );
    assert_eq!(run.run, first.run + 1, "one more run per start");
    assert_eq!(
        dead.len(),
        1,
        "the recent deletion is kept for the cluster sync"
    );
    assert_eq!(&dead[0].0[..], b"r/x");
}
