//! Exactly once across shards, the store's half: prepared inbound QoS 2 rows
//! come back with the shards that hold their origin row; origin rows nobody
//! claims are deleted; nonces never repeat across a restart.

#[path = "store_util.rs"]
mod util;

use std::num::NonZeroU16;

use ringmq_codec::{QoS, TopicFilter};
use ringmq_shard::store::{StoreHandle, Target};
use util::*;

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

fn target(shard: u16, group: Option<&str>) -> Target {
    Target {
        shard,
        group: group.map(|g| TopicFilter::try_from(g).unwrap()),
    }
}

/// Runs `f` on each shard's store (in order), committing after each.
fn write(handles: Vec<StoreHandle>, f: fn(u16, &ringmq_shard::store::Store)) {
    for (i, h) in handles.into_iter().enumerate() {
        on_executor(move || async move {
            let s = h.start();
            f(i as u16, &s);
            s.close().await.expect("commit");
        });
    }
}

#[test]
fn prepared_rows_learn_which_targets_hold_their_copy() {
    let dir = TempDir::new("prepared");
    let rec = open(dir.path(), 2);
    write(
        rec.shards.into_iter().map(|s| s.handle).collect(),
        |shard, s| {
            if shard == 0 {
                let key = s.allocate_session_key();
                s.put_session(key, &session("pub", 600)).detach();
                let m = msg("k/q2", QoS::ExactlyOnce, b"5");
                let both = [target(1, None), target(1, Some("$share/g/k/#"))];
                s.prepare_inbound_qos2(key, pid(5), 7, &both, m.view())
                    .detach();
                s.prepare_inbound_qos2(key, pid(6), 8, &[target(1, None)], m.view())
                    .detach();
                // Done rows carry no prepared state.
                s.put_inbound_qos2(key, pid(9), None).detach();
            } else {
                s.put_origin(0, 7).detach();
                s.put_origin(0, 99).detach();
                s.put_origin(0, 100).detach();
                s.forget_origin(0, 100).detach();
            }
        },
    );

    let mut rec = open(dir.path(), 2);
    assert_eq!(rec.stats.prepared_qos2, 2);
    assert_eq!(
        rec.stats.orphan_origins, 1,
        "origin (0, 99) claimed by nobody"
    );
    let ins = &rec.shards[0].sessions[0].inbound_qos2;
    let ids: Vec<u16> = ins.iter().map(|i| i.packet_id.get()).collect();
    assert_eq!(ids, [5, 6, 9]);
    let p5 = ins[0].prepared.as_ref().expect("5 prepared");
    assert_eq!(p5.nonce, 7);
    assert_eq!(p5.targets.len(), 2);
    assert_eq!(p5.targets[1], target(1, Some("$share/g/k/#")));
    assert_eq!(p5.delivered, [1], "shard 1 holds the copy of nonce 7");
    assert_eq!(ins[0].message, Some(msg("k/q2", QoS::ExactlyOnce, b"5")));
    let p6 = ins[1].prepared.as_ref().expect("6 prepared");
    assert!(p6.delivered.is_empty(), "nonce 8 never reached shard 1");
    assert!(ins[2].prepared.is_none() && ins[2].message.is_none());

    // Nonces start above every nonce on disk (99 was there at open), and at least at the
    // wall clock in ns at open: unique across restarts also for other nodes that may hold an
    // origin key of an earlier run (`cluster/origin.rs`).
    let h0 = rec.shards.remove(0).handle;
    drop(rec);
    let next = on_executor(move || async move { h0.start().allocate_nonce() });
    let opened_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 60_000_000_000;
    assert!(next >= 100 && next >= opened_ns, "next nonce {next}");
    let rec = open(dir.path(), 2);
    assert_eq!(rec.stats.orphan_origins, 0, "deleted at the first open");
    assert_eq!(rec.stats.prepared_qos2, 2);
}

#[test]
fn orphan_origin_rows_go_with_the_session() {
    let dir = TempDir::new("prepared-gone");
    let rec = open(dir.path(), 2);
    write(
        rec.shards.into_iter().map(|s| s.handle).collect(),
        |shard, s| {
            if shard == 0 {
                let key = s.allocate_session_key();
                s.put_session(key, &session("pub", 600)).detach();
                let m = msg("t", QoS::ExactlyOnce, b"x");
                s.prepare_inbound_qos2(key, pid(1), 3, &[target(1, None)], m.view())
                    .detach();
                s.delete_session(key).detach();
            } else {
                s.put_origin(0, 3).detach();
            }
        },
    );
    let rec = open(dir.path(), 2);
    assert_eq!(rec.stats.prepared_qos2, 0);
    assert_eq!(rec.stats.orphan_origins, 1);
}
