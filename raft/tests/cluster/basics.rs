//! Election, forwarded writes, linearizable and local reads, leader restart.

use std::time::{Duration, Instant};

use ringmq_raft::{Command, Consistency, Op, OpResult};

use crate::common::{block_on, poll, Cluster};

fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

#[test]
fn three_nodes_elect_one_leader_and_replicate() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let follower = c.running().into_iter().find(|id| *id != leader).unwrap();
    // A write on a follower is forwarded to the leader.
    let r = block_on(c.handle(follower).op(put("a", "1"))).expect("write via follower");
    let OpResult::Written { version } = r else {
        panic!("{r:?}")
    };
    c.converged(b"a", version);
    // Every node's local read shows it; a linearizable read from any node too.
    for id in c.running() {
        let v = block_on(c.handle(id).read(b"a", Consistency::Linearizable))
            .unwrap()
            .unwrap();
        assert_eq!((v.version, v.value.as_slice()), (version, &b"1"[..]));
    }
    // Batches: every op answered in order, versions strictly growing, CAS checked.
    let cmd = Command {
        ops: vec![
            put("b", "1"),
            Op::Cas {
                key: b"a".to_vec(),
                expected: version,
                value: Some(b"2".to_vec()),
            },
            Op::Cas {
                key: b"a".to_vec(),
                expected: version,
                value: Some(b"3".to_vec()),
            },
            Op::Delete { key: b"b".to_vec() },
            Op::Cas {
                key: b"c".to_vec(),
                expected: 0,
                value: Some(b"new".to_vec()),
            },
        ],
    };
    let r = block_on(c.handle(leader).write(cmd)).unwrap().results;
    assert_eq!(r.len(), 5);
    let OpResult::Written { version: vb } = r[0] else {
        panic!("{r:?}")
    };
    let OpResult::Written { version: va } = r[1] else {
        panic!("{r:?}")
    };
    assert!(vb > version && va > vb);
    match &r[2] {
        OpResult::Conflict { current: Some(cur) } => {
            assert_eq!((cur.version, cur.value.as_slice()), (va, &b"2"[..]))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(r[3], OpResult::Deleted { existed: true });
    assert!(matches!(r[4], OpResult::Written { .. }));
    let s = c.status(leader);
    assert_eq!(s.state, "leader");
    assert_eq!(s.nodes.len(), 3);
    assert!(s.nodes.iter().all(|n| n.role == "voter"));
    poll(
        "every node up in the leader's view",
        Duration::from_secs(10),
        || c.status(leader).nodes.iter().all(|n| n.up).then_some(()),
    );
}

#[test]
fn leader_stopped_and_restarted_from_its_data_dir() {
    let mut c = Cluster::new(3);
    let old = c.leader();
    let mut last = 0;
    for i in 0..20 {
        let r = block_on(c.handle(old).op(put(&format!("k{i}"), "v"))).unwrap();
        if let OpResult::Written { version } = r {
            last = version;
        }
    }
    c.converged(b"k19", last);
    let stopped_at = Instant::now();
    c.stop(old);
    let rest: Vec<_> = c.running();
    let new = c.leader_among(&rest, Duration::from_secs(20));
    eprintln!("new leader {new} after {:?}", stopped_at.elapsed());
    assert_ne!(new, old);
    let r = block_on(c.handle(new).op(put("after", "x"))).expect("write on the new leader");
    let OpResult::Written { version } = r else {
        panic!("{r:?}")
    };
    c.restart(old);
    // The restarted node kept what it had and catches up on what it missed.
    c.converged(b"after", version);
    assert_eq!(
        block_on(c.handle(old).read(b"k0", Consistency::Local))
            .unwrap()
            .unwrap()
            .value,
        b"v"
    );
    let l = c.leader();
    assert!(c.running().contains(&l));
}
