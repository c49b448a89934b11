//! CPU time of each shard's threads, read from `/proc/self/task`: the busy
//! time used for `busy_seconds`/`busy_ratio` while the core does not report
//! its own (`ShardStats::busy_ns` stays 0). Shard threads are named
//! `ringmq-shard-N-...`; the kernel keeps the first 15 bytes of a name.

use std::collections::HashMap;

/// CPU seconds (user + system) per shard index, for shards `0..shards`.
pub fn shard_cpu_seconds(shards: usize) -> HashMap<usize, f64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let names: Vec<(usize, String)> = (0..shards)
        .map(|i| {
            let mut n = format!("ringmq-shard-{i}-");
            n.truncate(15);
            (i, n)
        })
        .collect();
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Some(&(shard, _)) = names.iter().find(|(_, n)| n == comm.trim_end()) else {
            continue;
        };
        let Some(cpu) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| cpu_ticks(&s))
        else {
            continue;
        };
        *out.entry(shard).or_insert(0.0) += cpu as f64 / ticks;
    }
    out
}

/// utime + stime from a `/proc/.../stat` line (fields 14 and 15; the name in
/// parentheses may contain spaces, so fields are counted after the last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is f[0], so field n is f[n - 3].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::cpu_ticks;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let s = "42 (ringmq shard 0) S 1 42 42 0 -1 4194368 100 0 0 0 7 5 0 0 20 0 3 0 1";
        assert_eq!(cpu_ticks(s), Some(12));
    }

    #[test]
    fn reads_this_process() {
        assert!(
            super::shard_cpu_seconds(1).is_empty(),
            "no shard threads in unit tests"
        );
    }
}
