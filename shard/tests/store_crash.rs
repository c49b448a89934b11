//! `kill -9` at the store level: a child process commits numbered QoS 1
//! messages with 32 writers in flight (`Durability::Sync`) and prints each
//! one once its ticket resolves (the point where the broker would send
//! PUBACK); the parent SIGKILLs it at several points, reopens the data dir
//! and finds every acknowledged message, intact and in order.

#[path = "store_util.rs"]
mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmq_codec::QoS;
use ringmq_shard::store::{self, Durability, OutboundState};
use util::*;

const CHILD_ENV: &str = "RINGMQ_STORE_CRASH_CHILD";

/// The child's body; a no-op unless started by `kill_9_loses_nothing_acknowledged`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    on_executor(move || async move {
        let mut rec = store::open(dir.as_ref(), 1, &opts(Durability::Sync)).unwrap();
        let s = Rc::new(rec.shards.remove(0).handle.start());
        drop(rec);
        s.put_session(1, &session("crash", u32::MAX)).await.unwrap();
        let writers: Vec<_> = (0..32u64)
            .map(|w| {
                let s = s.clone();
                glommio::spawn_local(async move {
                    for i in 0.. {
                        let seq = i * 32 + w;
                        let m = msg("crash/t", QoS::AtLeastOnce, b"0123456789abcdef");
                        let t = s.put_outbound(1, seq, OutboundState::Queued, Some(m.view()));
                        t.await.unwrap();
                        println!("ack {seq}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await;
        }
    });
}

fn run_and_kill(dir: &std::path::Path, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < kill_after && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.trim().parse().unwrap());
        }
    }
    // SAFETY: plain kill(2) on the pid of the child we started and still own.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // Acks already in the pipe were sent before the kill: count them too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.trim().parse().unwrap());
        }
    }
    assert!(
        acked.len() >= kill_after,
        "child acknowledged only {}",
        acked.len()
    );
    acked
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    for kill_after in [1, 40, 400] {
        let dir = TempDir::new("crash");
        let acked = run_and_kill(dir.path(), kill_after);
        let rec =
            store::open(dir.path(), 1, &opts(Durability::Sync)).expect("reopen after kill -9");
        let s = &rec.shards[0].sessions[0];
        let stored: std::collections::HashSet<u64> = s.outbound.iter().map(|o| o.seq).collect();
        for seq in &acked {
            assert!(
                stored.contains(seq),
                "acknowledged seq {seq} lost (kill after {kill_after})"
            );
        }
        assert!(s.outbound.windows(2).all(|w| w[0].seq < w[1].seq));
        for o in &s.outbound {
            let m = o.message.as_ref().unwrap();
            assert_eq!(&m.publish.payload[..], b"0123456789abcdef");
        }
    }
}
