//! A follower that restarts catches up from the log, and after compaction
//! from a snapshot.

use std::time::Duration;

use ringmq_raft::{Command, NodeConfig, Op, OpResult};

use crate::common::{block_on, poll, Cluster};

fn small_snapshots(cfg: &mut NodeConfig) {
    cfg.snapshot_every = 40;
    cfg.keep_logs = 5;
}

fn write_n(c: &Cluster, via: u64, from: usize, n: usize) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        let op = Op::Put {
            key: format!("k{i:05}").into_bytes(),
            value: vec![i as u8; 16],
        };
        match block_on(c.handle(via).write(Command::one(op)))
            .expect("write")
            .results[0]
        {
            OpResult::Written { version } => last = version,
            ref r => panic!("{r:?}"),
        }
    }
    last
}

#[test]
fn follower_catches_up_from_log_then_from_snapshot() {
    let mut c = Cluster::with(3, small_snapshots);
    let leader = c.leader();
    let f = c.running().into_iter().find(|id| *id != leader).unwrap();

    // From the log: fewer entries than a snapshot interval while it is away.
    c.stop(f);
    let v = write_n(&c, leader, 0, 10);
    c.restart(f);
    c.converged(b"k00009", v);

    // From a snapshot: while it is away the leader snapshots and purges past
    // everything the follower has.
    let before = c.status(f).last_log_index.unwrap_or(0);
    c.stop(f);
    let v = write_n(&c, leader, 10, 150);
    let purged = poll(
        "the leader to purge past the follower",
        Duration::from_secs(20),
        || {
            let s = c.status(leader);
            s.purged.filter(|p| *p > before)
        },
    );
    c.restart(f);
    c.converged(b"k00159", v);
    let s = c.status(f);
    assert!(
        s.snapshot.is_some_and(|i| i >= purged),
        "follower installed a snapshot: {s:?}"
    );
    // Every key arrived, not just the last one.
    let h = c.handle(f);
    for i in (0..160).step_by(7) {
        let got = h
            .read_local(format!("k{i:05}").as_bytes())
            .unwrap()
            .expect("key present");
        assert_eq!(got.value, vec![i as u8; 16]);
    }
    // And it keeps working as a member afterwards.
    let v = write_n(&c, f, 500, 1);
    c.converged(b"k00500", v);
}
