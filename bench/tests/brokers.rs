//! Short bounded scenario runs against real brokers: Mosquitto (started here on a free
//! loopback port when installed) and ringmq (when its binary exists and starts).
//! Brokers are stopped by PID; runs are a few hundred messages each.

mod common;

use common::scenario;
use ringmq_bench::brokers::{start_mosquitto, start_ringmq, BrokerProc};
use ringmq_bench::run_scenario;
use ringmq_bench::stats::Summary;

fn run(b: &BrokerProc, args: &[&str]) -> Summary {
    let port = b.port.to_string();
    let mut v: Vec<&str> = args.to_vec();
    v.extend(["--port", &port, "--no-pin", "-q"]);
    if args[0] != "conn" {
        v.extend(["--warmup", "0", "--drain", "3"]);
    }
    run_scenario(&scenario(&v)).unwrap_or_else(|e| panic!("{args:?} against {}: {e}", b.name))
}

fn assert_clean(s: &Summary, what: &str) {
    assert!(s.errors.is_empty(), "{what}: errors {:?}", s.errors);
    assert_eq!(s.lost, 0, "{what}: {s:#?}");
    assert_eq!(
        s.duplicated + s.out_of_order + s.unexpected,
        0,
        "{what}: {s:#?}"
    );
    assert_eq!(s.unique, s.expected, "{what}");
    assert!(s.expected > 0, "{what}");
}

/// The scenario set both brokers must pass: every message delivered exactly once, in order.
fn scenario_set(b: &BrokerProc) {
    for (qos, mqtt) in [("0", "5"), ("1", "3.1.1"), ("2", "5"), ("2", "3.1.1")] {
        let s = run(
            b,
            &[
                "pairs", "--pairs", "3", "--count", "200", "--rate", "2000", "--qos", qos,
                "--mqtt", mqtt,
            ],
        );
        assert_eq!(s.sent, 600);
        assert_clean(&s, &format!("{} pairs qos {qos} v{mqtt}", b.name));
        assert_eq!(s.latency.samples, 600);
    }
    let s = run(
        b,
        &[
            "fanout", "-s", "20", "--count", "100", "--rate", "1000", "--qos", "1",
        ],
    );
    assert_eq!(s.expected, 2000);
    assert_clean(&s, "fanout");
    let s = run(
        b,
        &[
            "fanin",
            "--publishers",
            "10",
            "--count",
            "100",
            "--rate",
            "1000",
        ],
    );
    assert_clean(&s, "fanin");
    let s = run(b, &["retained", "-n", "300", "-s", "3"]);
    assert_eq!((s.expected, s.unique, s.lost), (900, 900, 0), "{s:#?}");
    let s = run(b, &["conn", "-n", "200", "--hold", "0.2"]);
    assert_eq!((s.connections, s.connect_failures), (200, 0), "{s:#?}");
    assert!(s.connects_per_sec > 0.0);
}

#[test]
fn mosquitto_passes_the_scenario_set() {
    let Some(bin) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed (apt-get install mosquitto)");
        return;
    };
    let b = start_mosquitto(bin.to_str().unwrap(), None).expect("start mosquitto");
    scenario_set(&b);
    b.stop();
}

#[test]
fn ringmq_passes_the_scenario_set() {
    let Some(bin) = common::ringmq() else {
        eprintln!("SKIP: no ringmq binary (cargo build -p ringmq-broker, or set RINGMQ_BIN)");
        return;
    };
    let b = match start_ringmq(bin.to_str().unwrap(), None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: ringmq at {} does not start yet: {e}", bin.display());
            return;
        }
    };
    scenario_set(&b);
    b.stop();
}

#[test]
fn compare_writes_a_results_file_with_the_machine_header() {
    let Some(bin) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("ringmq-bench-results-{}", std::process::id()));
    let cli = <ringmq_bench::cli::Cli as clap::Parser>::try_parse_from([
        "ringmq-bench",
        "compare",
        "--brokers",
        "mosquitto,nosuch",
        "--mosquitto-bin",
        bin.to_str().unwrap(),
        "--broker-cpus",
        "0",
        "--results-dir",
        dir.to_str().unwrap(),
        "--label",
        "test",
        "--note",
        "test run",
        "pairs",
        "--pairs",
        "2",
        "--count",
        "50",
        "--rate",
        "500",
        "--warmup",
        "0",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    let ringmq_bench::cli::Command::Compare(c) = cli.command else {
        panic!("compare")
    };
    ringmq_bench::compare::run(&c).expect("compare runs with one broker");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let md = std::fs::read_to_string(&files[0]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(files[0].to_str().unwrap().ends_with("-pairs-test.md"));
    for needle in [
        "- CPU:",
        "- kernel:",
        "- commit:",
        "- mosquitto: `",
        "- not run: nosuch",
        "test run",
        "| deliveries/s |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
}
