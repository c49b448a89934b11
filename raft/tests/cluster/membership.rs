//! Membership 3 -> 4 -> 3 at run time, leadership transfer, and the refusal
//! of a change that would lose quorum.

use std::time::Duration;

use ringmq_raft::{Error, Op, OpResult};

use crate::common::{block_on, poll, Cluster};

fn put(h: &ringmq_raft::RaftHandle, k: &str) -> u64 {
    match block_on(h.op(Op::Put {
        key: k.as_bytes().to_vec(),
        value: b"v".to_vec(),
    }))
    .expect("write")
    {
        OpResult::Written { version } => version,
        r => panic!("{r:?}"),
    }
}

fn voters(c: &Cluster, id: u64) -> Vec<u64> {
    c.status(id)
        .nodes
        .iter()
        .filter(|n| n.role == "voter")
        .map(|n| n.id)
        .collect()
}

#[test]
fn three_to_four_to_three() {
    let mut c = Cluster::new(3);
    let leader = c.leader();
    put(&c.handle(leader), "before");
    let addr = c.spawn_fresh(4);
    let h = c.handle(leader);
    // Promoting a node that is not a member is refused.
    assert!(matches!(block_on(h.promote(4)), Err(Error::Membership(_))));
    block_on(h.add_learner(4, addr.to_string())).expect("add learner");
    assert_eq!(
        c.status(leader)
            .nodes
            .iter()
            .find(|n| n.id == 4)
            .unwrap()
            .role,
        "learner"
    );
    // The learner caught up (it has the entry written before it joined).
    poll("learner to apply", Duration::from_secs(10), || {
        c.handle(4).read_local(b"before").ok()?
    });
    block_on(h.promote(4)).expect("promote");
    assert_eq!(voters(&c, leader), vec![1, 2, 3, 4]);
    let v = put(&h, "four");
    c.converged(b"four", v);

    // Transfer leadership to the new voter, then remove one of the originals.
    block_on(h.transfer_leader(4)).expect("transfer leader");
    let leader = c.leader();
    assert_eq!(leader, 4);
    let h = c.handle(4);
    let gone = 1;
    block_on(h.remove(gone)).expect("remove");
    poll(
        "node 1 out of the membership",
        Duration::from_secs(10),
        || (voters(&c, 4) == vec![2, 3, 4]).then_some(()),
    );
    c.stop(gone);
    let v = put(&h, "three-again");
    for id in [2, 3, 4] {
        poll("convergence", Duration::from_secs(10), || {
            c.handle(id)
                .read_local(b"three-again")
                .ok()?
                .filter(|x| x.version == v)
        });
    }
    assert!(!c.status(4).joint);
}

#[test]
fn a_change_that_would_lose_quorum_is_refused() {
    let mut c = Cluster::new(3);
    let leader = c.leader();
    let mut others = c.running().into_iter().filter(|id| *id != leader);
    let (down, live) = (others.next().unwrap(), others.next().unwrap());
    c.stop(down);
    let h = c.handle(leader);
    // Wait until the leader no longer hears the stopped node.
    poll(
        "the stopped node to be seen down",
        Duration::from_secs(10),
        || {
            c.status(leader)
                .nodes
                .iter()
                .any(|n| n.id == down && !n.up)
                .then_some(())
        },
    );
    // Removing the other live voter would leave {leader, down}: 1 of 2 reachable.
    match block_on(h.remove(live)) {
        Err(Error::WouldLoseQuorum {
            voters: 2,
            reachable: 1,
            needed: 2,
        }) => {}
        other => panic!("expected a quorum refusal, got {other:?}"),
    }
    // Removing the down one keeps a reachable majority: allowed.
    block_on(h.remove(down)).expect("remove the down node");
    assert_eq!(voters(&c, leader).len(), 2);
    // A follower cannot change membership.
    match block_on(c.handle(live).remove(leader)) {
        Err(Error::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
        other => panic!("expected NotLeader, got {other:?}"),
    }
}
