//! The command line itself: grouped --help, environment variables shown,
//! version, JSON logs on stderr.

#[path = "ctl_support/mod.rs"]
mod support;

use std::io::BufRead;
use support::{ringmq, OpsBroker};

#[test]
fn help_groups_flags_under_headings_in_order() {
    let (code, out, _) = ringmq(&["--help"]);
    assert_eq!(code, 0);
    let headings = [
        "Listeners:",
        "Placement:",
        "Limits:",
        "Sessions:",
        "Persistence:",
        "Admin/Metrics:",
        "Logging:",
    ];
    let pos: Vec<usize> = headings
        .iter()
        .map(|h| {
            out.find(&format!("\n{h}\n"))
                .unwrap_or_else(|| panic!("no heading {h}"))
        })
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "headings out of order");
    for flag in [
        "--listen",
        "--cores",
        "--cpu-list",
        "--io-memory",
        "--max-packet-size",
        "--data-dir",
    ] {
        assert!(out.contains(flag), "{flag} missing from --help");
    }
    assert!(
        out.contains("[env: RINGMQ_MAX_PACKET_SIZE="),
        "env vars shown"
    );
    let (code, short, _) = ringmq(&["-h"]);
    assert_eq!(code, 0);
    assert!(short.contains("\nLimits:\n"));
}

#[test]
fn version_prints() {
    let (code, out, _) = ringmq(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("ringmq {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn json_logs_go_to_stderr_one_object_per_line() {
    let mut b = OpsBroker::start("jsonlog", &["--log-format", "json", "--log-level", "info"]);
    let stderr = b.child.stderr.take().unwrap();
    let first = std::io::BufReader::new(stderr)
        .lines()
        .next()
        .expect("a log line")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).expect("log line is JSON");
    assert_eq!(v["level"], "INFO", "{first}");
    assert!(v["message"].is_string(), "{first}");
}
