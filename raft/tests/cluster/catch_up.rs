//! A follower that restarts catches up from the log, and after compaction
//! from a snapshot.

use std::time::Duration;

use ringmq_raft::NodeConfig;

use crate::common::{poll, put_ok, Cluster};

fn small_snapshots(cfg: &mut NodeConfig) {
    cfg.snapshot_every = 40;
    cfg.keep_logs = 5;
}

fn write_n(c: &Cluster, via: u64, from: usize, n: usize) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        last = put_ok(
            &c.handle(via),
            format!("k{i:05}").as_bytes(),
            &[i as u8; 16],
        );
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

/// The state machine lives in memory: a node restarted alone (no quorum, so
/// nothing new can commit and no leader tells it the commit point) gets its
/// map back from its stored snapshot and the committed log after it, before
/// it serves a read.
#[test]
fn a_node_restarted_alone_rebuilds_its_map_from_snapshot_and_log() {
    let mut c = Cluster::with(3, small_snapshots);
    let leader = c.leader();
    let last = write_n(&c, leader, 0, 100);
    c.converged(b"k00099", last);
    poll("a snapshot on node 1", Duration::from_secs(20), || {
        c.status(1).snapshot.map(|_| ())
    });
    // Entries after the snapshot, committed and applied everywhere.
    let last = write_n(&c, leader, 100, 15);
    c.converged(b"k00114", last);
    for id in [1, 2, 3] {
        c.stop(id);
    }
    c.restart(1);
    for i in [0usize, 57, 99, 100, 114] {
        let key = format!("k{i:05}");
        let v = c
            .handle(1)
            .read_local(key.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{key} missing after the restart"));
        assert_eq!(v.value, [i as u8; 16], "{key}");
    }
    assert_eq!(
        c.handle(1).read_local(b"k00114").unwrap().unwrap().version,
        last
    );
}
