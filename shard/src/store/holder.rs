//! Who holds the data dir's lock: read from the kernel (`/proc/locks`),
//! never from a pid written in the file (a stale pid names an innocent
//! process, and any local user who can open the file can lock it).
//!
//! `/proc/locks` lists every `flock` lock as
//! `N: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF`
//! (major and minor in hex); waiters carry `->` and are skipped. The pid is
//! the one that took the lock, as seen from this pid namespace (0 or absent
//! when it is not visible from here).

use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// Where the kernel lists file locks.
const PROC_LOCKS: &str = "/proc/locks";

/// "held by pid P (NAME)", or a sentence saying the holder cannot be told.
pub fn describe(file: &File) -> String {
    let Ok(meta) = file.metadata() else {
        return "held by a process that cannot be told (the lock file cannot be stat'ed)".into();
    };
    let locks = std::fs::read_to_string(PROC_LOCKS).unwrap_or_default();
    match holder_pid(&locks, meta.dev(), meta.ino()) {
        Some(pid) if pid == std::process::id() => format!("held by this process (pid {pid})"),
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
            match comm {
                Ok(name) => format!("held by pid {pid} ({})", name.trim()),
                Err(_) => format!("held by pid {pid}"),
            }
        }
        None => format!(
            "held by a process that cannot be told ({PROC_LOCKS} shows no visible holder \
             of inode {})",
            meta.ino()
        ),
    }
}

/// The pid of the FLOCK holder of (`dev`, `ino`) in a `/proc/locks` text.
/// An exact device match wins; else a unique match on the inode alone
/// (overlay and FUSE file systems may report another device number).
pub fn holder_pid(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    let mut by_inode = Vec::new();
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue; // a waiter ("->"), a POSIX or OFD lock
        }
        let Ok(pid) = f[4].parse::<i64>() else {
            continue;
        };
        let mut id = f[5].splitn(3, ':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        if i.parse::<u64>() != Ok(ino) || pid <= 0 {
            continue;
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        if hex(ma) == Some(major) && hex(mi) == Some(minor) {
            return Some(pid as u32);
        }
        by_inode.push(pid as u32);
    }
    by_inode.dedup();
    match by_inode.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::holder_pid;

    const LOCKS: &str = "\
1: FLOCK  ADVISORY  WRITE 25346 fe:00:6217858 0 EOF
1: -> FLOCK  ADVISORY  WRITE 999 fe:00:6217858 0 EOF
2: POSIX  ADVISORY  WRITE 777 fe:00:42 0 EOF
3: FLOCK  ADVISORY  WRITE 4242 08:01:42 0 EOF
4: FLOCK  ADVISORY  WRITE 0 08:01:43 0 EOF
";

    #[test]
    fn finds_the_flock_holder_by_device_and_inode() {
        let dev = libc::makedev(0xfe, 0) as u64;
        assert_eq!(holder_pid(LOCKS, dev, 6217858), Some(25346));
        // Only a POSIX lock on (fe:00, 42): the FLOCK on 08:01:42 is the unique inode match.
        assert_eq!(holder_pid(LOCKS, dev, 42), Some(4242));
        let sda1 = libc::makedev(8, 1) as u64;
        assert_eq!(holder_pid(LOCKS, sda1, 42), Some(4242));
        // pid 0: not visible from this namespace.
        assert_eq!(holder_pid(LOCKS, sda1, 43), None);
        assert_eq!(holder_pid(LOCKS, sda1, 44), None);
        assert_eq!(holder_pid("", sda1, 42), None);
    }
}
