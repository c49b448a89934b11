//! Group commit: batching, one commit in flight, Batch mode, map growth and
//! the typed no-space error that loses nothing already committed.

#[path = "store_util.rs"]
mod util;

use std::time::{Duration, Instant};

use ringmq_codec::QoS;
use ringmq_shard::store::{self, Durability, OutboundState, Store, StoreOptions, Ticket};
use util::*;

fn start(dir: &std::path::Path, o: StoreOptions) -> store::StoreHandle {
    let mut rec = store::open(dir, 1, &o).expect("open");
    rec.shards.remove(0).handle
}

fn queue(s: &Store, key: u64, seq: u64, payload: &'static [u8]) -> Ticket {
    let m = msg("bench/t", QoS::AtLeastOnce, payload);
    s.put_outbound(key, seq, OutboundState::Queued, Some(m.view()))
}

#[test]
fn ops_pushed_together_share_one_commit() {
    let dir = TempDir::new("group");
    let handle = start(dir.path(), opts(Durability::Sync));
    let stats = on_executor(move || async move {
        let s = handle.start();
        let key = s.allocate_session_key();
        s.put_session(key, &session("c", 60)).detach();
        let tickets: Vec<Ticket> = (0..1000).map(|i| queue(&s, key, i, b"x")).collect();
        for t in tickets {
            t.await.expect("durable");
        }
        s.stats()
    });
    assert_eq!(stats.commits, 1, "{stats:?}");
    assert_eq!(stats.ops, 1001);
    let rec = store::open(dir.path(), 1, &opts(Durability::Sync)).unwrap();
    assert_eq!(rec.shards[0].sessions[0].outbound.len(), 1000);
}

#[test]
fn ops_arriving_during_a_commit_form_the_next_batch() {
    let dir = TempDir::new("next-batch");
    let handle = start(dir.path(), opts(Durability::Sync));
    let stats = on_executor(move || async move {
        let s = handle.start();
        let first = s.put_session(1, &session("c", 60));
        // Let the driver take the batch (one commit now in flight).
        while s.pending_ops() > 0 {
            futures_lite::future::yield_now().await;
        }
        let rest: Vec<Ticket> = (0..100).map(|i| queue(&s, 1, i, b"y")).collect();
        first.await.unwrap();
        for t in rest {
            t.await.unwrap();
        }
        s.stats()
    });
    assert_eq!(stats.commits, 2);
    assert_eq!(stats.max_batch, 100);
}

#[test]
fn batch_mode_commits_once_per_interval() {
    let dir = TempDir::new("batch-mode");
    let handle = start(dir.path(), opts(Durability::Batch { interval_ms: 50 }));
    let (stats, waited) = on_executor(move || async move {
        let s = handle.start();
        let t0 = Instant::now();
        let tickets: Vec<Ticket> = (0..10).map(|i| queue(&s, 1, i, b"z")).collect();
        for t in tickets {
            t.await.unwrap();
        }
        (s.stats(), t0.elapsed())
    });
    assert_eq!(stats.commits, 1);
    assert!(waited >= Duration::from_millis(45), "{waited:?}");
}

#[test]
fn memory_store_is_a_no_op() {
    let done = on_executor(|| async {
        let s = Store::memory();
        assert!(!s.is_persistent());
        let t = queue(&s, 1, 1, b"m");
        assert!(t.is_done());
        t.await.unwrap();
        s.stats().commits
    });
    assert_eq!(done, 0);
}

const KB: &[u8] = &[0x5A; 1024];

#[test]
fn full_map_grows_and_keeps_everything() {
    let dir = TempDir::new("grow");
    let o = StoreOptions {
        durability: Durability::Sync,
        initial_map_size: 64 << 10,
        max_map_size: 64 << 20,
    };
    let handle = start(dir.path(), o.clone());
    let stats = on_executor(move || async move {
        let s = handle.start();
        s.put_session(1, &session("big", 60)).detach();
        for round in 0..4u64 {
            let tickets: Vec<Ticket> = (0..512)
                .map(|i| queue(&s, 1, round * 512 + i, KB))
                .collect();
            for t in tickets {
                t.await.expect("map grows instead of failing");
            }
        }
        s.stats()
    });
    assert!(stats.map_resizes >= 2, "{stats:?}");
    let rec = store::open(dir.path(), 1, &o).unwrap();
    assert_eq!(rec.shards[0].sessions[0].outbound.len(), 2048);
}

#[test]
fn no_space_is_typed_and_loses_nothing_committed() {
    let dir = TempDir::new("nospace");
    let o = StoreOptions {
        durability: Durability::Sync,
        initial_map_size: 64 << 10,
        max_map_size: 512 << 10,
    };
    let handle = start(dir.path(), o.clone());
    let committed = on_executor(move || async move {
        let s = handle.start();
        s.put_session(1, &session("full", 60)).await.unwrap();
        let mut committed = 0u64;
        let mut seq = 0;
        loop {
            let tickets: Vec<Ticket> = (0..32)
                .map(|_| {
                    seq += 1;
                    queue(&s, 1, seq, KB)
                })
                .collect();
            let mut failed = None;
            for t in tickets {
                if let Err(e) = t.await {
                    failed = Some(e);
                }
            }
            match failed {
                None => committed += 32,
                Some(e) => {
                    assert!(e.is_no_space(), "{e}");
                    assert!(!e.to_string().contains('\n'));
                    assert!(s.no_space());
                    break;
                }
            }
            assert!(seq < 10_000, "the ceiling was never reached");
        }
        committed
    });
    assert!(committed > 0);
    let rec = store::open(dir.path(), 1, &o).unwrap();
    assert_eq!(rec.shards[0].sessions[0].outbound.len() as u64, committed);
}
