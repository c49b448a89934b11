//! The handle from a glommio executor (as a broker shard would hold it):
//! claims, conflicts and status awaited on glommio, Raft on its own thread.

use glommio::{LocalExecutorBuilder, Placement};
use ringmq_raft::{ClaimError, RaftHandle};

use crate::common::Cluster;

fn assert_send_sync<T: Send + Sync + Clone>() {}

#[test]
fn a_glommio_executor_awaits_claims_and_status() {
    assert_send_sync::<RaftHandle>();
    assert_send_sync::<ringmq_raft::Ownership>();
    let c = Cluster::new(3);
    let leader = c.leader();
    let follower = c.running().into_iter().find(|id| *id != leader).unwrap();
    let (h1, h2) = (c.handle(follower), c.handle(leader));
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("shard-like")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let own = h1.ownership();
            let e1 = own.claim_here(b"dev-1", 0).await.expect("claim");
            // The same claim again is a conflict naming the owner and epoch.
            match own.claim_here(b"dev-1", 0).await {
                Err(ClaimError::Conflict { owner, epoch }) => {
                    assert_eq!((owner, epoch), (Some(h1.id()), e1))
                }
                other => panic!("{other:?}"),
            }
            // Another node takes it over from the epoch it saw.
            let e2 = h2
                .ownership()
                .claim_here(b"dev-1", e1)
                .await
                .expect("takeover");
            assert!(e2 > e1);
            own.release(b"dev-1", e1)
                .await
                .expect_err("a stale release is refused");
            h2.ownership().release(b"dev-1", e2).await.expect("release");
            let s = h1.status().await.expect("status");
            s.leader
        })
        .expect("executor");
    let seen = ex.join().expect("join");
    assert_eq!(seen, Some(leader));
}
