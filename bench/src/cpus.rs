//! CPU lists: parsing `1,0` / `2-5`, validating against the CPUs this process may use,
//! and the default placement (start at CPU 1 so a broker pinned to CPU 0 keeps its core).

/// CPUs this process may run on (its affinity mask).
pub fn allowed() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask owned by this frame; sched_getaffinity writes at
    // most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            return (0..n).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Parses `0,2,4-6`.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |_| format!("bad CPU list `{s}`");
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.parse().map_err(bad)?, b.parse().map_err(bad)?);
            if a > b {
                return Err(format!("bad CPU range `{part}`"));
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(bad)?);
        }
    }
    if out.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(out)
}

/// The CPUs for `cores` executors: the explicit list (each must exist and be allowed,
/// reused round robin if shorter than `cores`), or by default the allowed CPUs starting
/// at CPU 1 and wrapping around.
pub fn placement(cores: usize, list: Option<&str>) -> Result<Vec<usize>, String> {
    if cores == 0 {
        return Err("--cores must be at least 1".into());
    }
    let allowed = allowed();
    let base = match list {
        Some(l) => {
            let cpus = parse_list(l)?;
            if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(format!(
                    "CPU {c} does not exist or is not allowed here (allowed: {allowed:?})"
                ));
            }
            cpus
        }
        None => {
            let start = allowed.iter().position(|&c| c >= 1).unwrap_or(0);
            let mut v = allowed[start..].to_vec();
            v.extend_from_slice(&allowed[..start]);
            v
        }
    };
    Ok((0..cores).map(|i| base[i % base.len()]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_parse() {
        assert_eq!(parse_list("1,0").unwrap(), vec![1, 0]);
        assert_eq!(parse_list("2-4,7").unwrap(), vec![2, 3, 4, 7]);
        assert!(parse_list("4-2").is_err());
        assert!(parse_list("x").is_err());
    }

    #[test]
    fn default_placement_avoids_cpu_zero_when_possible() {
        let p = placement(1, None).unwrap();
        let allowed = allowed();
        if allowed.iter().any(|&c| c >= 1) {
            assert!(p[0] >= 1);
        }
        assert!(placement(1, Some("100000")).is_err());
    }
}
