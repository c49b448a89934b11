//! The data dir refuses what it must not misread: newer formats, foreign or
//! corrupt content, another shard count, and a dir locked by a running broker.

#[path = "store_util.rs"]
mod util;

use ringmq_shard::store::{self, Durability, StoreError};
use util::*;

fn open_err(dir: &std::path::Path, shards: u16) -> StoreError {
    match store::open(dir, shards, &opts(Durability::Sync)) {
        Ok(_) => panic!("open of {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn one_line(e: &StoreError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error is one line: {s}");
    s
}

#[test]
fn locked_by_a_running_broker_is_refused() {
    let dir = TempDir::new("lock");
    let held = open(dir.path(), 1);
    let e = open_err(dir.path(), 1);
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(one_line(&e).contains(&format!("pid {}", std::process::id())));
    drop(held);
    // The lock goes with the last store handle.
    let _again = open(dir.path(), 1);
}

#[test]
fn newer_format_is_refused() {
    let dir = TempDir::new("newer");
    drop(open(dir.path(), 1));
    let marker = dir.path().join("RINGMQ");
    let text = std::fs::read_to_string(&marker).unwrap();
    let ours = format!("format {}", store::FORMAT);
    assert!(text.contains(&ours), "{text}");
    std::fs::write(&marker, text.replace(&ours, "format 99")).unwrap();
    let e = open_err(dir.path(), 1);
    assert!(
        matches!(
            e,
            StoreError::UnsupportedFormat {
                found: 99,
                supported: store::FORMAT,
                ..
            }
        ),
        "{e}"
    );
    one_line(&e);
}

/// Rewrites the format number of shard `shard`'s meta row (magic, format u32, ...).
fn set_meta_format(dir: &std::path::Path, shard: u16, format: u32) {
    use heed::types::Bytes as Raw;
    let path = dir.join(format!("shard-{shard}"));
    // SAFETY: no other environment of this dir is open in this process now.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(4).open(&path) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let db = env
        .open_databases_and_commit(rtxn, |opener, rtxn| {
            opener
                .open_database::<Raw, Raw>(rtxn, Some("ringmq"))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .unwrap()
        .unwrap_commit()
        .unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let mut meta = db.get(&wtxn, b"Mformat").unwrap().unwrap().to_vec();
    meta[8..12].copy_from_slice(&format.to_be_bytes());
    db.put(&mut wtxn, b"Mformat", &meta).unwrap();
    wtxn.commit().unwrap();
    env.prepare_for_closing().wait();
}

/// A dir of `old` format (marker and one meta row; rows as that format wrote them) opens
/// under this build's format, migrated in place, marker last.
fn migrated_in_place(old: u32) {
    assert_eq!(store::FORMAT, 3);
    let dir = TempDir::new("migrate");
    let mut rec = open(dir.path(), 2);
    let handle = rec.shards.remove(0).handle;
    drop(rec);
    on_executor(move || async move {
        let s = handle.start();
        let key = s.allocate_session_key();
        s.put_session(key, &session("old", 600)).detach();
        s.close().await.expect("commit");
    });
    let marker = dir.path().join("RINGMQ");
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, text.replace("format 3", &format!("format {old}"))).unwrap();
    // A crash during an earlier migration may have left one meta row at 3 already.
    set_meta_format(dir.path(), 0, old);
    let rec = open(dir.path(), 2);
    assert_eq!(
        rec.shards[0].sessions.len(),
        1,
        "format {old} rows read as before"
    );
    drop(rec);
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.contains("format 3"), "marker rewritten last: {text}");
    drop(open(dir.path(), 2));
    // A meta row at `old` under a format 3 marker is not a migration: refused.
    set_meta_format(dir.path(), 1, old);
    let e = open_err(dir.path(), 2);
    assert!(
        matches!(e, StoreError::UnsupportedFormat { found, .. } if found == old),
        "{e}"
    );
}

#[test]
fn format_1_dir_is_migrated_in_place() {
    migrated_in_place(1);
}

/// Format 3 only added node targets to prepared rows (record V3) and the node origin table:
/// a format 2 dir is migrated by its meta rows and marker alone.
#[test]
fn format_2_dir_is_migrated_in_place() {
    migrated_in_place(2);
}

#[test]
fn foreign_dir_is_refused_and_left_alone() {
    let dir = TempDir::new("foreign");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("important.txt"), b"not ours").unwrap();
    let e = open_err(dir.path(), 1);
    assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
    one_line(&e);
    assert!(!dir.path().join("RINGMQ").exists());
    assert!(!dir.path().join("shard-0").exists());

    // The broker's own admin socket (default DATA_DIR/ringmq.sock) is not foreign.
    let dir = TempDir::new("socket-only");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("ringmq.sock"), b"").unwrap();
    drop(open(dir.path(), 1));

    let dir = TempDir::new("foreign-marker");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("RINGMQ"), b"something else\n").unwrap();
    assert!(matches!(
        open_err(dir.path(), 1),
        StoreError::Foreign { .. }
    ));
}

#[test]
fn corrupt_environment_is_reported() {
    let dir = TempDir::new("corrupt");
    drop(open(dir.path(), 2));
    let data = dir.path().join("shard-1").join("data.mdb");
    std::fs::write(&data, vec![0xA5u8; 64 * 1024]).unwrap();
    let e = open_err(dir.path(), 2);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(one_line(&e).contains("shard-1"));
}

#[test]
fn swapped_shard_dirs_are_reported() {
    let dir = TempDir::new("swapped");
    drop(open(dir.path(), 2));
    let (a, b, t) = (
        dir.path().join("shard-0"),
        dir.path().join("shard-1"),
        dir.path().join("t"),
    );
    std::fs::rename(&a, &t).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&t, &b).unwrap();
    let e = open_err(dir.path(), 2);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
}

#[test]
fn other_shard_count_is_refused() {
    let dir = TempDir::new("shards");
    drop(open(dir.path(), 2));
    let e = open_err(dir.path(), 3);
    assert!(
        matches!(
            e,
            StoreError::ShardCountMismatch {
                found: 2,
                configured: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(one_line(&e).contains("--cores 2"));
}

#[test]
fn durability_none_touches_nothing() {
    let dir = TempDir::new("none");
    let rec = store::open(dir.path(), 2, &opts(Durability::None)).unwrap();
    assert_eq!(rec.shards.len(), 2);
    assert!(!dir.path().exists());
}

#[test]
fn closed_store_releases_the_dir_for_an_immediate_reopen() {
    let dir = TempDir::new("close");
    let path = dir.path().to_path_buf();
    on_executor(move || async move {
        for round in 0..3u64 {
            let mut rec = open(&path, 1);
            assert_eq!(rec.shards[0].sessions.len() as u64, round);
            let s = rec.shards.remove(0).handle.start();
            drop(rec);
            s.put_session(round + 1, &session(&format!("c{round}"), 60))
                .detach();
            s.close().await.unwrap();
        }
    });
}
