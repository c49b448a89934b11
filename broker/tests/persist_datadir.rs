//! Data dirs the broker must refuse (issue 5, `docs/storage.md` "Refusals"): a corrupt marker,
//! garbage in an LMDB environment, a foreign directory, a newer storage format, another shard
//! count, and a dir held by a running broker. Each refusal is one clear `error:` line naming
//! the dir, a non-zero exit before listening, no panic, and nothing else touched.
#[macro_use]
mod common;

use std::fs;
use std::path::Path;

use common::persist::{args, launch, strip_ansi, DataDir, Durable, Launched};
use common::raw::version;
use common::{Proto, Raw};

/// Runs the broker on `dir` expecting a refusal; returns the `error:` line.
fn refused(dir: &Path, cores: usize) -> String {
    let shown = dir.display().to_string();
    match launch(&args(dir, cores, "sync", &[])) {
        Launched::Up(mut b) => {
            b.kill9();
            panic!("ringmq started on {shown} instead of refusing it");
        }
        Launched::Exited { status, stderr } => {
            let stderr = strip_ansi(&stderr);
            assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
            assert!(
                !stderr.contains("panicked"),
                "panic instead of an error:\n{stderr}"
            );
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with("error:") && l.contains(&shown))
                .collect();
            assert_eq!(
                lines.len(),
                1,
                "want one `error:` line naming {shown}; stderr:\n{stderr}"
            );
            lines[0].to_string()
        }
    }
}

/// A data dir a broker has written (a persistent session in it), then stopped with SIGTERM.
fn used_dir(cores: usize) -> DataDir {
    let dir = DataDir::new();
    let mut b = Durable::start(&dir, cores, "sync");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let v = version(Proto::V5);
        let c = common::persist::persistent_connect(v, "used", 300);
        let (raw, _) = Raw::connect_with(b.addr, c).await;
        common::persist::disconnect(raw).await;
    });
    let status = b.terminate().expect("ringmq exits on SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn corrupt_marker_is_refused() {
    let dir = used_dir(1);
    fs::write(dir.path.join("RINGMQ"), b"\x00\xffnot a marker\x13\x37").unwrap();
    let line = refused(&dir.path, 1);
    assert!(line.contains("RINGMQ"), "names the marker: {line}");
}

#[test]
fn garbage_environment_is_refused_as_corrupt() {
    let dir = used_dir(1);
    let env = dir.path.join("shard-0").join("data.mdb");
    assert!(env.exists(), "LMDB environment at {}", env.display());
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(&env, garbage).unwrap();
    let line = refused(&dir.path, 1);
    assert!(
        line.to_lowercase().contains("corrupt"),
        "says corrupt: {line}"
    );
}

#[test]
fn foreign_dir_is_refused_and_untouched() {
    let dir = DataDir::new();
    fs::write(dir.path.join("notes.txt"), b"my notes").unwrap();
    fs::create_dir(dir.path.join("photos")).unwrap();
    fs::write(dir.path.join("photos").join("cat.jpg"), b"\xff\xd8\xff").unwrap();
    let line = refused(&dir.path, 1);
    assert!(
        line.contains("not a ringmq data dir"),
        "says foreign: {line}"
    );
    let after = listing(&dir.path);
    assert!(
        !after
            .iter()
            .any(|n| n == "RINGMQ" || n.starts_with("shard-")),
        "nothing of ours written into a foreign dir: {after:?}"
    );
    assert_eq!(fs::read(dir.path.join("notes.txt")).unwrap(), b"my notes");
    assert_eq!(listing(&dir.path.join("photos")), ["cat.jpg"]);
}

#[test]
fn newer_format_is_refused() {
    let dir = DataDir::new();
    fs::write(
        dir.path.join("RINGMQ"),
        "ringmq data dir\nformat 999\nshards 1\n",
    )
    .unwrap();
    let line = refused(&dir.path, 1);
    assert!(line.contains("999"), "names the format found: {line}");
}

#[test]
fn other_shard_count_is_refused() {
    let dir = used_dir(1);
    let line = refused(&dir.path, 2);
    assert!(line.contains("--cores 1"), "tells the fix: {line}");
}

#[test]
fn dir_held_by_a_running_broker_is_refused() {
    let dir = DataDir::new();
    let first = Durable::start(&dir, 1, "sync");
    let line = refused(&dir.path, 1);
    assert!(line.contains("in use"), "says in use: {line}");
    assert!(
        line.contains(&first.pid().to_string()),
        "names the holder's pid {}: {line}",
        first.pid()
    );
    // The first broker still serves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Raw::connect(
        first.addr,
        version(Proto::V5),
        "still-up",
        true,
    ));
}
