//! Issue 17, case 7 ("smaller doors"): what an anonymous or local attacker could pin or block.
//! - a client id longer than `max_client_id_length` is refused (v5 CONNACK 0x85, 3.1.1 0x02),
//!   before it crosses to its home shard, and counted (`client_id_too_long`);
//! - a 3.1.1 persistent session (CleanSession=0) expires after `max_session_expiry`, and a v5
//!   request for more is capped (CONNACK Session Expiry Interval);
//! - the data dir is created 0700 and its files 0600 (LMDB's too);
//! - a held lock's error names the real holder (from the kernel), never a pid left in the file;
//! - out of descriptors, accept backs off and logs once per episode, then resumes.
#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::persist::{args, launch, strip_ansi, DataDir, Durable, Launched};
use common::raw::{connect_packet, subscribe_packet, version, RawEv};
use common::*;
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};
use ringmq_shard::stats::CloseReason;

const CASES: [(Proto, usize); 4] = [
    (Proto::V4, 1),
    (Proto::V4, 2),
    (Proto::V5, 1),
    (Proto::V5, 2),
];

/// Sends CONNECT with `id`; returns the CONNACK's reason and whether the broker then closed.
async fn connack_for(addr: std::net::SocketAddr, v: ProtocolVersion, id: &str) -> ReasonCode {
    let mut raw = Raw::open(addr, v).await;
    raw.send(&Packet::Connect(Box::new(connect_packet(v, id, true))))
        .await;
    match raw.recv(WAIT).await {
        RawEv::Packet(Packet::ConnAck(ack)) => {
            if ack.reason != ReasonCode::Success {
                assert!(!ack.session_present, "refusal has session present 0");
                raw.expect_closed(WAIT, "closed after the refusing CONNACK")
                    .await;
            }
            ack.reason
        }
        other => panic!("expected CONNACK for a {}-byte id, got {other:?}", id.len()),
    }
}

/// [MQTT-3.1.3-5]: 1-23 bytes must be allowed, more may be; a rejected id gets 0x02 and a close
/// in 3.1.1 [MQTT-3.1.3-9] (the decoder maps it to 0x85), 0x85 and a close in v5
/// [MQTT-3.1.3-8]. Ids are picked to land on the shard that did not accept them (2 shards),
/// so the refusal happens before the handoff.
#[tokio::test]
async fn client_id_longer_than_the_limit_is_refused() {
    for (proto, shards) in CASES {
        let b = Broker::start_with(shards, |c| c.max_client_id_length = 40);
        let v = version(proto);
        let at_limit = "a".repeat(40);
        assert_eq!(connack_for(b.addr, v, &at_limit).await, ReasonCode::Success);
        for len in [41, 1000, 65_535] {
            let id = "b".repeat(len);
            let got = connack_for(b.addr, v, &id).await;
            assert_eq!(
                got,
                ReasonCode::ClientIdentifierNotValid,
                "{proto:?} {shards} shards, {len}-byte id"
            );
        }
        let counted = check_for(WAIT, "three client_id_too_long closes", || async {
            let n = b.stat(|s| s.closes_for(CloseReason::ClientIdTooLong));
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(counted, 3);
        // A normal client still connects.
        Client::connect(Opts::new(proto, b.addr, "ordinary-id")).await;
    }
}

/// The production default (128) refuses the 65,535-byte id and accepts a UUID.
#[tokio::test]
async fn default_limit_refuses_a_65535_byte_id() {
    let b = Broker::start(1);
    for proto in [Proto::V4, Proto::V5] {
        let v = version(proto);
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(connack_for(b.addr, v, uuid).await, ReasonCode::Success);
        let long = "x".repeat(65_535);
        assert_eq!(
            connack_for(b.addr, v, &long).await,
            ReasonCode::ClientIdentifierNotValid
        );
    }
}

/// A 3.1.1 persistent session, which the protocol never expires, is removed
/// `max_session_expiry` after its connection closed; a v5 session asking for "never"
/// (0xFFFFFFFF) is told the cap in CONNACK and expires the same way.
#[tokio::test]
async fn persistent_sessions_expire_after_max_session_expiry() {
    for (proto, shards) in CASES {
        let b = Broker::start_with(shards, |c| c.max_session_expiry = 1);
        let v = version(proto);
        let id = format!("pinned-{shards}");
        let mut c = connect_packet(v, &id, false);
        if proto == Proto::V5 {
            c.properties.session_expiry_interval = Some(u32::MAX);
        }
        let (mut raw, ack) = Raw::connect_with(b.addr, c.clone()).await;
        if proto == Proto::V5 {
            assert_eq!(ack.properties.session_expiry_interval, Some(1), "cap told");
        }
        raw.send(&Packet::Subscribe(subscribe_packet(1, "pin/#", 1)))
            .await;
        assert!(matches!(
            raw.expect_packet("SUBACK").await,
            Packet::SubAck(_)
        ));
        drop(raw); // connection lost: the session stays, for now
        check_for(Duration::from_secs(10), "the session expired", || async {
            (b.stat(|s| s.sessions.get()) == 0).then_some(())
        })
        .await;
        assert_eq!(
            b.stat(|s| s.subscriptions.get()),
            0,
            "its subscription went too"
        );
        let (_, again) = Raw::connect_with(b.addr, c).await;
        assert!(
            !again.session_present,
            "{proto:?} {shards}: no session after expiry"
        );
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The data dir (created by the broker) is 0700, each shard dir 0700, every file 0600:
/// marker, lock file, LMDB's data.mdb and lock.mdb, and the admin socket.
#[test]
fn data_dir_is_private() {
    let scratch = DataDir::new();
    let dir = scratch.path.join("state");
    let mut b = Durable::start_args(&args(&dir, 2, "sync", &[]));
    assert_eq!(mode(&dir), 0o700, "data dir");
    for f in ["RINGMQ", "ringmq.lock", "ringmq.sock"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for shard in ["shard-0", "shard-1"] {
        let s = dir.join(shard);
        assert_eq!(mode(&s), 0o700, "{shard}");
        for f in ["data.mdb", "lock.mdb"] {
            assert_eq!(mode(&s.join(f)), 0o600, "{shard}/{f}");
        }
    }
    let status = b.terminate().expect("exits on SIGTERM");
    assert!(status.success());
}

/// Another process holds `ringmq.lock` (here: this test, through its own open file
/// description) and the file still holds a stale pid from an older broker. The refusal names
/// the holder the kernel reports, never the stale pid; the loose lock file is restricted.
#[test]
fn lock_error_names_the_real_holder() {
    let scratch = DataDir::new();
    let lock = scratch.path.join("ringmq.lock");
    std::fs::write(&lock, "999999\n").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let held = std::fs::File::open(&lock).unwrap();
    // SAFETY: flock on a descriptor this test owns and keeps open until the end.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&held),
            libc::LOCK_SH | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, 0, "the test takes the lock");
    let shown = scratch.path.display().to_string();
    let stderr = match launch(&args(&scratch.path, 1, "sync", &[])) {
        Launched::Up(mut b) => {
            b.kill9();
            panic!("ringmq started on a locked dir");
        }
        Launched::Exited { status, stderr } => {
            assert!(!status.success());
            strip_ansi(&stderr)
        }
    };
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:") && l.contains(&shown))
        .unwrap_or_else(|| panic!("no error line naming {shown}:\n{stderr}"));
    let me = std::process::id();
    assert!(
        line.contains(&format!("held by pid {me} (")),
        "names the holder, pid {me}: {line}"
    );
    assert!(!line.contains("999999"), "never the stale pid: {line}");
    assert_eq!(mode(&lock), 0o600, "the lock file is restricted");
    drop(held);
}

/// Lowers a running child's RLIMIT_NOFILE (soft and hard) to `n`.
fn limit_fds(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on our own child's pid with a valid rlimit; no old value is read.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Lines of the MQTT listeners' acceptor holding `what` (the admin socket's
/// acceptor backs off too, with lines of its own, when something connects to it).
fn shard_lines(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(what) && !l.contains("admin:"))
        .count()
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// A broker left 2 spare descriptors gets 12 connections: accept fails with EMFILE while
/// they stay open. It logs one warn line for the episode (not one per retry), keeps serving,
/// and once descriptors are free again it resumes accepting and logs the episode's count.
#[test]
fn accept_backs_off_when_out_of_descriptors() {
    let scratch = DataDir::new();
    // epoll: the descriptor limit is lowered under a running broker (prlimit), and io_uring
    // reads RLIMIT_NOFILE when a multishot accept is armed (the kernel's accept prep), so an
    // armed one keeps accepting under the old limit; a limit reached for real fails the
    // same way on both backends (docs/operations.md, "Out of descriptors").
    let b = Durable::start_args(&args(&scratch.path, 1, "none", &["--io-backend", "epoll"]));
    let pid = b.pid();
    limit_fds(pid, open_fds(pid) + 2);
    let flood: Vec<std::net::TcpStream> = (0..12)
        .map(|_| std::net::TcpStream::connect(b.addr).expect("the backlog takes it"))
        .collect();
    check_for_blocking(WAIT, "the accept failure is logged", || {
        b.stderr().contains("accept failed").then_some(())
    });
    // Several backoff rounds must pass (5, 10, 20, 40 ms, ...): nothing to poll meanwhile.
    std::thread::sleep(Duration::from_millis(400));
    let log = b.stderr();
    assert_eq!(
        shard_lines(&log, "accept failed"),
        1,
        "one warn line per episode:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
    drop(flood);
    let resumed = check_for_blocking(WAIT, "accepting resumes", || {
        let log = b.stderr();
        let line = log.lines().find(|l| l.contains("accept resumed after"))?;
        Some(line.to_string())
    });
    let failures: u64 = resumed
        .split("accept resumed after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in: {resumed}"));
    assert!(failures >= 3, "retried with backoff, counted: {resumed}");
    // A client connects normally afterwards.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Raw::connect(
        b.addr,
        version(Proto::V5),
        "after-the-episode",
        true,
    ));
    // The 12 closed flood sockets still sit in the backlog when accepting resumes, and the
    // two connections accepted with the spare descriptors may not have closed yet: a second
    // short episode can follow. Each episode still logs exactly one warn and one resume line.
    check_for_blocking(WAIT, "every episode ends with one resume line", || {
        let log = b.stderr();
        let failed = shard_lines(&log, "accept failed");
        (failed == shard_lines(&log, "accept resumed after")).then_some(())
    });
}
