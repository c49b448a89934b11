//! A session move's stub row (`keys::STUB`, `cluster/stub_row.rs`): written in the
//! batch deleting the session's rows, it survives a reopen while the session's rows
//! do not, and once deleted (the stub ended) a reopen finds nothing.
#[path = "store_util.rs"]
mod util;

use ringmq_codec::QoS;
use ringmq_shard::store::{self, StoreHandle};
use util::*;

fn with_store<T, F>(handle: StoreHandle, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&store::Store) -> T + Send + 'static,
{
    handle.run_offline(f).expect("commit")
}

#[test]
fn a_stub_row_stored_with_the_take_survives_a_reopen_until_deleted() {
    let dir = TempDir::new("stubrow");
    let mut rec = open(dir.path(), 1);
    with_store(rec.shards.remove(0).handle, |s| {
        let k = s.allocate_session_key();
        s.put_session(k, &session("mover", 600)).detach();
        s.put_subscription(k, &sub("a/#", QoS::AtLeastOnce, Some(3)))
            .detach();
    });
    drop(rec);
    let mut rec = open(dir.path(), 1);
    let sh = rec.shards.remove(0);
    assert_eq!(sh.sessions.len(), 1);
    let key = sh.sessions[0].key;
    // The take: the session's rows go, its stub row comes, in one batch.
    with_store(sh.handle, move |s| {
        assert!(s.take_stubs().is_empty());
        s.delete_session(key).detach();
        s.put_stub(b"mover", b"stub-value").detach();
    });
    drop(rec);
    let mut rec = open(dir.path(), 1);
    let sh = rec.shards.remove(0);
    assert!(
        sh.sessions.is_empty(),
        "the session's rows went with the take"
    );
    let stubs = with_store(sh.handle, |s| {
        let stubs = s.take_stubs();
        s.delete_stub(b"mover").detach();
        stubs
    });
    assert_eq!(stubs, [(b"mover".to_vec(), b"stub-value".to_vec())]);
    drop(rec);
    let mut rec = open(dir.path(), 1);
    let stubs = with_store(rec.shards.remove(0).handle, |s| s.take_stubs());
    assert!(stubs.is_empty(), "the ended stub's row is gone");
}
