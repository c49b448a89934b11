//! A partitioned minority cannot commit, the majority can, healing converges.

use std::time::Duration;

use ringmq_raft::{Consistency, Error, Op, OpResult};

use crate::common::{block_on, Cluster};

#[test]
fn minority_cannot_commit_majority_can_heal_converges() {
    let c = Cluster::new(3);
    let old = c.leader();
    let majority: Vec<_> = c.running().into_iter().filter(|id| *id != old).collect();
    for m in &majority {
        c.cut(old, *m);
    }
    // The isolated old leader cannot commit (and cannot serve a linearizable read).
    let w = block_on(c.handle(old).op(Op::Put {
        key: b"minority".to_vec(),
        value: b"x".to_vec(),
    }));
    assert!(
        matches!(
            w,
            Err(Error::Timeout | Error::Indeterminate | Error::NoLeader)
        ),
        "minority write: {w:?}"
    );
    let r = block_on(c.handle(old).read(b"minority", Consistency::Linearizable));
    assert!(r.is_err(), "minority linearizable read: {r:?}");
    // The majority elects a leader and commits.
    let new = c.leader_among(&majority, Duration::from_secs(20));
    let v = match block_on(c.handle(new).op(Op::Put {
        key: b"majority".to_vec(),
        value: b"y".to_vec(),
    })) {
        Ok(OpResult::Written { version }) => version,
        other => panic!("majority write: {other:?}"),
    };
    c.heal();
    c.converged(b"majority", v);
    let l = c.leader();
    assert!(majority.contains(&l) || l == old);
    // The minority's write never committed: it is nowhere after convergence.
    for id in c.running() {
        let got = block_on(c.handle(id).read(b"minority", Consistency::Linearizable)).unwrap();
        assert_eq!(got, None, "node {id}");
    }
}
