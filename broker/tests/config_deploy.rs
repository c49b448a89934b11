//! deploy/ stays usable with this binary: the systemd unit's command lines are
//! accepted by `ringmq`, its limits are there, the sysctl file is well formed,
//! and HAProxy accepts its config (when haproxy is installed).

#[path = "ctl_support/mod.rs"]
mod support;

use support::{ringmq, scratch};

const UNIT: &str = include_str!("../../deploy/ringmq.service");
const SYSCTL: &str = include_str!("../../deploy/99-ringmq.conf");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ringmq.example.toml");

/// Values of `Key=` lines in the unit.
fn unit_values(key: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn unit_command_lines_are_accepted() {
    for line in unit_values("ExecStart")
        .into_iter()
        .chain(unit_values("ExecStartPre"))
    {
        let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
        // Same flags, the example file in place of /etc/ringmq/ringmq.toml, and
        // `config show` (or the check itself) instead of running.
        for w in words.iter_mut() {
            if *w == "/etc/ringmq/ringmq.toml" {
                *w = EXAMPLE;
            }
        }
        if words.first() != Some(&"config") {
            words.extend(["config", "show"]);
        }
        let (code, _, err) = ringmq(&words);
        assert_eq!(code, 0, "{line}: {err}");
    }
}

#[test]
fn unit_sets_limits_and_hardening() {
    assert_eq!(unit_values("LimitNOFILE"), ["1048576"]);
    assert_eq!(unit_values("LimitMEMLOCK"), ["infinity"]);
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "SystemCallFilter",
    ] {
        assert!(!unit_values(key).is_empty(), "{key} missing");
    }
    assert!(
        unit_values("KillSignal") == ["SIGTERM"],
        "graceful stop on SIGTERM"
    );
}

#[test]
fn sysctl_file_is_key_equals_value() {
    for line in SYSCTL
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not k = v: {line}"));
        let k = k.trim().trim_start_matches('-');
        assert!(k.split('.').count() >= 2 && !v.trim().is_empty(), "{line}");
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
            "{line}"
        );
    }
    assert!(SYSCTL.contains("net.core.somaxconn"));
    assert!(SYSCTL.contains("fs.nr_open"));
}

#[test]
fn haproxy_accepts_its_config() {
    let Ok(out) = std::process::Command::new("haproxy").arg("-v").output() else {
        eprintln!("haproxy not installed; skipped");
        return;
    };
    assert!(out.status.success());
    let dir = scratch("haproxy");
    let map = dir.join("ringmq-prefix.map");
    std::fs::write(&map, "plant-7/ ringmq_node_b\n").unwrap();
    let cfg = include_str!("../../deploy/haproxy.cfg")
        .replace("/etc/haproxy/ringmq-prefix.map", map.to_str().unwrap());
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
