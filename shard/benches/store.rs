//! Store group-commit benchmark: durable commits/s and messages/s through the
//! real path (shard executor -> pending batch -> glommio blocking pool -> one
//! LMDB write transaction with fsync -> ticket).
//!
//! `cargo bench -p ringmq-shard --bench store` (env `STORE_BENCH_SECS`, default 2 per case).
//! Two shapes:
//! - fixed batches: push B outbound messages, await the batch's ticket, repeat
//!   (what a shard gives when B acknowledgements wait on one commit); each
//!   commit also carries the B deletes (acks) of the batch before;
//! - closed loop: C tasks each push one message and await its ticket, as C
//!   publishers in flight under `Durability::Sync` would; batches form by themselves.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_codec::{Publish, PublishProperties, QoS, TopicName};
use ringmq_shard::store::{
    self, Durability, MessageRef, OutboundState, SessionRecord, Store, StoreOptions,
};

const PAYLOAD: usize = 100;

struct Row {
    shape: String,
    commits: u64,
    msgs: u64,
    secs: f64,
    max_batch: u64,
    commit_us: f64,
}

/// Mean time inside the blocking commit (transaction + fsync), µs.
fn avg_us(st: &store::StoreStats, base: &store::StoreStats) -> f64 {
    let n = (st.commits - base.commits).max(1) as f64;
    (st.commit_time - base.commit_time).as_secs_f64() * 1e6 / n
}

fn publish() -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::try_from("bench/store/topic").unwrap(),
        packet_id: None,
        properties: PublishProperties::default().into(),
        payload: Bytes::from(vec![0x42u8; PAYLOAD]),
    }
}

fn message(p: &Publish) -> MessageRef<'_> {
    MessageRef {
        publish: p,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: &[],
        received_at_ms: store::unix_ms(),
    }
}

fn new_store(dir: &PathBuf) -> Store {
    let _ = std::fs::remove_dir_all(dir);
    let o = StoreOptions {
        durability: Durability::Sync,
        ..Default::default()
    };
    let mut rec = store::open(dir, 1, &o).expect("open store");
    rec.shards.remove(0).handle.start()
}

fn session(s: &Store) -> u64 {
    let key = s.allocate_session_key();
    let rec = SessionRecord {
        client_id: "bench".try_into().unwrap(),
        protocol: ringmq_codec::ProtocolVersion::V5,
        expiry_interval: 3600,
        disconnected_at_ms: None,
        will: None,
        owner: ringmq_shard::store::Owner::Anonymous,
    };
    s.put_session(key, &rec).detach();
    key
}

async fn fixed_batches(dir: PathBuf, batch: u64, secs: Duration) -> Row {
    let s = new_store(&dir);
    let key = session(&s);
    s.flush().await.unwrap();
    let p = publish();
    let base = s.stats();
    let (t0, mut seq) = (Instant::now(), 0u64);
    while t0.elapsed() < secs {
        for _ in 0..batch {
            seq += 1;
            let state = OutboundState::Queued;
            s.put_outbound(key, seq, state, Some(message(&p))).detach();
        }
        s.flush().await.expect("commit");
        // Keep the database small and steady: acknowledge what was written.
        for i in seq + 1 - batch..=seq {
            s.delete_outbound(key, i).detach();
        }
    }
    let st = s.stats();
    s.close().await.unwrap();
    Row {
        shape: format!("fixed batch {batch}"),
        commits: st.commits - base.commits,
        msgs: seq,
        secs: t0.elapsed().as_secs_f64(),
        max_batch: batch,
        commit_us: avg_us(&st, &base),
    }
}

async fn closed_loop(dir: PathBuf, clients: u64, secs: Duration) -> Row {
    let s = Rc::new(new_store(&dir));
    let key = session(&s);
    s.flush().await.unwrap();
    let base = s.stats();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let s = s.clone();
            glommio::spawn_local(async move {
                let p = publish();
                let mut n = 0u64;
                while t0.elapsed() < secs {
                    let seq = (c << 32) | n;
                    let m = Some(message(&p));
                    s.put_outbound(key, seq, OutboundState::Queued, m)
                        .await
                        .expect("commit");
                    s.delete_outbound(key, seq).detach();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut msgs = 0;
    for t in tasks {
        msgs += t.await;
    }
    let st = s.stats();
    Rc::into_inner(s)
        .expect("tasks done")
        .close()
        .await
        .unwrap();
    Row {
        shape: format!("closed loop, {clients} clients"),
        commits: st.commits - base.commits,
        msgs,
        secs: t0.elapsed().as_secs_f64(),
        max_batch: st.max_batch,
        commit_us: avg_us(&st, &base),
    }
}

/// Writes `sessions` x `per` queued messages, closes, and times a full recovery.
async fn recovery(dir: PathBuf, sessions: u64, per: u64) -> (u64, Duration) {
    let s = new_store(&dir);
    let p = publish();
    for _ in 0..sessions {
        let key = session(&s);
        for seq in 0..per {
            let m = Some(message(&p));
            s.put_outbound(key, seq, OutboundState::Queued, m).detach();
        }
        if s.pending_ops() > 10_000 {
            s.flush().await.expect("commit");
        }
    }
    s.close().await.expect("commit");
    let o = StoreOptions::default();
    let rec = store::open(&dir, 1, &o).expect("reopen");
    assert_eq!(rec.stats.outbound as u64, sessions * per);
    (sessions * per, rec.stats.elapsed)
}

fn main() {
    let secs: f64 = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let secs = Duration::from_secs_f64(secs);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-bench");
    let (rows, (recovered, took)) = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut rows = Vec::new();
            for b in [1, 16, 64, 256] {
                rows.push(fixed_batches(dir.clone(), b, secs).await);
            }
            for c in [1, 16, 64, 256] {
                rows.push(closed_loop(dir.clone(), c, secs).await);
            }
            let rec = recovery(dir.clone(), 1000, 100).await;
            let _ = std::fs::remove_dir_all(&dir);
            (rows, rec)
        })
        .expect("executor")
        .join()
        .expect("bench");
    println!(
        "payload {PAYLOAD} B, durability sync, one shard, data dir on the target dir's filesystem"
    );
    println!("| shape | commits/s | msgs/s | max batch | mean commit µs |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0} |",
            r.shape,
            r.commits as f64 / r.secs,
            r.msgs as f64 / r.secs,
            r.max_batch,
            r.commit_us
        );
    }
    println!(
        "recovery: 1000 sessions, {recovered} queued messages loaded in {:.1} ms ({:.0} msgs/s)",
        took.as_secs_f64() * 1e3,
        recovered as f64 / took.as_secs_f64()
    );
}
