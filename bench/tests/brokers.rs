//! Short bounded scenario runs against real brokers: Mosquitto (started here on a free
//! loopback port when installed) and ringmq (when its binary exists and starts).
//! Brokers are stopped by PID; runs are a few hundred messages each.

mod common;

use clap::Parser;
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
    // Unlimited rate: QoS 1/2 publishers refill their window in batches with an
    // acknowledgement low mark on their socket; every message must still get through
    // and the run must end (no stall on the mark, which drops to 1 before the drain).
    for (qos, mqtt, inflight) in [
        ("1", "3.1.1", "200"),
        ("2", "3.1.1", "20"),
        ("1", "5", "64"),
    ] {
        let s = run(
            b,
            &[
                "pairs",
                "--pairs",
                "4",
                "--count",
                "3001",
                "--qos",
                qos,
                "--mqtt",
                mqtt,
                "--inflight",
                inflight,
            ],
        );
        assert_eq!(s.sent, 4 * 3001);
        assert_clean(&s, &format!("{} unlimited pairs qos {qos} v{mqtt}", b.name));
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

/// `takeover` against one real ringmq node listed twice: each move is a takeover
/// of the live session on that node (the cluster runs are bench/scripts/cluster.sh
/// and broker/tests/cluster_handover.rs). Every move must find the session (session
/// present 1), the old connection is closed by the broker (v5: DISCONNECT 0x8E), and
/// every acknowledged message arrives: QoS 2 exactly once, QoS 1 at least once.
#[test]
fn takeover_moves_a_session_under_load_against_ringmq() {
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
    let node = format!("127.0.0.1:{}", b.port);
    let nodes = format!("{node},{node}");
    for (qos, mqtt) in [("1", "5"), ("2", "5"), ("1", "3.1.1")] {
        let cli = ringmq_bench::cli::Cli::try_parse_from([
            "ringmq-bench",
            "takeover",
            "--nodes",
            &nodes,
            "--moves",
            "8",
            "--dwell",
            "0.1",
            "--rate",
            "500",
            "--qos",
            qos,
            "--mqtt",
            mqtt,
            "--drain",
            "5",
        ])
        .unwrap();
        let ringmq_bench::cli::Command::Takeover(a) = cli.command else {
            panic!("takeover")
        };
        let r = ringmq_bench::takeover::run(&a).unwrap();
        let what = format!("QoS {qos} v{mqtt}: {r:#?}");
        assert!(r.errors.is_empty(), "{what}");
        assert_eq!(r.moves, 8, "{what}");
        assert_eq!(r.fresh_sessions, 0, "{what}");
        assert!(r.takeover.p50_us > 0.0, "{what}");
        assert!(r.acknowledged > 200, "{what}");
        assert_eq!(r.lost, 0, "{what}");
        assert!(r.received >= r.acknowledged, "{what}");
        if qos == "2" {
            assert_eq!(r.duplicated, 0, "{what}");
        }
        if mqtt == "5" {
            assert_eq!(r.old_closed_with_disconnect, 8, "{what}");
        } else {
            assert_eq!(r.old_closed_silently, 8, "{what}");
        }
    }
    b.stop();
}

/// XML well-formedness, enough for an SVG: every tag closes in order, one root.
fn assert_well_formed_svg(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.starts_with('?') && !tag.starts_with('!') && !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(name);
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert_eq!(roots, 1);
}

#[test]
fn compare_writes_table_and_svg_for_ringmq_and_mosquitto() {
    let Some(mosq) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed");
        return;
    };
    let ringmq = common::ringmq();
    let dir = std::env::temp_dir().join(format!("ringmq-bench-results-{}", std::process::id()));
    let brokers = if ringmq.is_some() {
        "ringmq,mosquitto,nosuch"
    } else {
        eprintln!("no ringmq binary: comparing mosquitto alone");
        "mosquitto,nosuch"
    };
    let ringmq_bin = ringmq
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cli = <ringmq_bench::cli::Cli as clap::Parser>::try_parse_from([
        "ringmq-bench",
        "compare",
        "--brokers",
        brokers,
        "--ringmq-bin",
        &ringmq_bin,
        "--mosquitto-bin",
        mosq.to_str().unwrap(),
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
    ringmq_bench::compare::run(&c).expect("compare runs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let md = std::fs::read_to_string(&files[0]).unwrap();
    let svg = std::fs::read_to_string(files.get(1).expect("two files")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].to_str().unwrap().ends_with("-pairs-test.md"));
    assert!(files[1].to_str().unwrap().ends_with("-pairs-test.svg"));
    for needle in [
        "- CPU:",
        "- kernel:",
        "- commit:",
        "- mosquitto: `",
        "max_queued_messages 10000",
        "- not run: nosuch",
        "test run",
        "| deliveries/s |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    assert_well_formed_svg(&svg);
    assert!(svg.contains("mosquitto"), "{svg}");
    if brokers.starts_with("ringmq") {
        assert!(md.contains("| ringmq / mosquitto |"), "{md}");
        assert!(svg.contains("ringmq"));
    }
}

#[test]
fn sweep_writes_latency_table_and_svg() {
    let Some(mosq) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed");
        return;
    };
    let dir = std::env::temp_dir().join(format!("ringmq-bench-sweep-{}", std::process::id()));
    let cli = <ringmq_bench::cli::Cli as clap::Parser>::try_parse_from([
        "ringmq-bench",
        "sweep",
        "--rates",
        "200,1000",
        "--brokers",
        "mosquitto-nodelay",
        "--mosquitto-bin",
        mosq.to_str().unwrap(),
        "--results-dir",
        dir.to_str().unwrap(),
        "pairs",
        "--pairs",
        "2",
        "--count",
        "40",
        "--warmup",
        "0",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    let ringmq_bench::cli::Command::Sweep(a) = cli.command else {
        panic!("sweep")
    };
    ringmq_bench::sweep::run(&a).expect("sweep runs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let md = std::fs::read_to_string(&files[0]).unwrap();
    let svg = std::fs::read_to_string(files.get(1).expect("two files")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        files[0].to_str().unwrap().ends_with("-sweep-pairs.md"),
        "{files:?}"
    );
    assert!(md.contains("| mosquitto-nodelay | 200 | 400 |"), "{md}");
    assert!(md.contains("set_tcp_nodelay true"), "{md}");
    assert_well_formed_svg(&svg);
    assert!(svg.contains("mosquitto-nodelay p99.9"), "{svg}");
}

/// QoS 1 subscribers at unlimited rate let 4 deliveries queue before they read
/// (`SO_RCVLOWAT`); a broker with a smaller in-flight limit (Mosquitto with
/// `max_inflight_messages 2`) sends 2 and waits for their acknowledgements. Each
/// subscriber must notice (stall checks find bytes below the mark) and drop the mark:
/// kept, it would read 2 deliveries per 20 ms check, 2000 messages in 20 s, and the
/// 5 s drain would end with messages lost.
#[test]
fn qos1_subscribers_drop_their_low_mark_below_a_small_inflight_limit() {
    let Some(bin) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed (apt-get install mosquitto)");
        return;
    };
    let port = ringmq_bench::brokers::free_port().unwrap();
    let dir = std::env::temp_dir().join(format!("ringmq-bench-inflight2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest none\nmax_inflight_messages 2\nmax_queued_messages 100000\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let p = port.to_string();
    let args = [
        "pairs", "--pairs", "4", "--count", "2000", "--qos", "1", "--mqtt", "3.1.1", "--port", &p,
        "--no-pin", "-q", "--warmup", "0", "--drain", "5",
    ];
    let r = run_scenario(&scenario(&args));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let s = r.expect("run");
    assert_eq!(s.sent, 4 * 2000);
    assert_clean(&s, "QoS 1 pairs against an in-flight limit of 2");
}
