//! Option parsing: defaults, per-scenario presets, and rejected values.

mod common;

use clap::Parser;
use common::scenario;
use ringmq_bench::cli::{Cli, Command, MqttVersion, Scenario};
use ringmq_bench::plan::Plan;
use ringmq_codec::QoS;
use std::time::Duration;

#[test]
fn pairs_defaults_are_fifty_unlimited_qos0_pairs() {
    let s = scenario(&["pairs"]);
    let p = Plan::from_scenario(&s).unwrap();
    assert_eq!(p.pub_topics.len(), 50);
    assert_eq!(p.sub_filters, p.pub_topics);
    assert_eq!(p.load.qos, QoS::AtMostOnce);
    assert_eq!(p.load.payload, 64);
    assert_eq!(p.load.rate, 0.0);
    assert_eq!(p.broker.port, 1883);
    assert_eq!(p.broker.mqtt, MqttVersion::V5);
    assert_eq!(p.run.cores, 1);
}

#[test]
fn qos2_fanout_preset_matches_the_pr_scenario_and_scales() {
    let p = Plan::from_scenario(&scenario(&["qos2-fanout"])).unwrap();
    assert_eq!((p.pub_topics.len(), p.sub_filters.len()), (100, 2000));
    assert_eq!(p.load.qos, QoS::ExactlyOnce);
    assert_eq!(p.load.rate, 1.0);
    let m = p.matches();
    assert!(
        m.iter().all(|v| v.len() == 100),
        "every subscriber hears every publisher"
    );
    let p = Plan::from_scenario(&scenario(&[
        "qos2-fanout",
        "--publishers",
        "10",
        "-s",
        "20",
        "--rate",
        "5",
        "--qos",
        "1",
    ]))
    .unwrap();
    assert_eq!((p.pub_topics.len(), p.sub_filters.len()), (10, 20));
    assert_eq!((p.load.qos, p.load.rate), (QoS::AtLeastOnce, 5.0));
}

#[test]
fn every_load_and_broker_option_parses() {
    let s = scenario(&[
        "fanout",
        "-s",
        "7",
        "--qos",
        "1",
        "--payload",
        "128",
        "--rate",
        "250",
        "--duration",
        "3",
        "--warmup",
        "0.5",
        "--drain",
        "2",
        "--inflight",
        "10",
        "--host",
        "localhost",
        "-p",
        "1999",
        "--mqtt",
        "3.1.1",
        "-u",
        "user",
        "-P",
        "pw",
        "--client-prefix",
        "x",
        "--keep-alive",
        "5",
        "--no-clean-start",
        "--cores",
        "2",
        "--cpus",
        "0,1",
        "--json",
        "-q",
    ]);
    let p = Plan::from_scenario(&s).unwrap();
    assert_eq!(p.sub_filters.len(), 7);
    assert_eq!(p.load.payload, 128);
    assert_eq!(p.load.duration, Duration::from_secs(3));
    assert_eq!(p.load.warmup, Duration::from_millis(500));
    assert_eq!(p.load.inflight, Some(10));
    assert_eq!(p.broker.mqtt, MqttVersion::V311);
    assert_eq!(p.broker.username.as_deref(), Some("user"));
    assert!(p.broker.no_clean_start && p.run.json && p.run.quiet);
    assert_eq!(p.run.cpus.as_deref(), Some("0,1"));
}

#[test]
fn pubsub_patterns_substitute_and_match_wildcards() {
    let s = scenario(&[
        "pubsub",
        "--publishers",
        "4",
        "-s",
        "2",
        "--pub-topic",
        "s/%i/t",
        "--sub-topic",
        "s/%i/+",
        "--modulo",
        "2",
    ]);
    let p = Plan::from_scenario(&s).unwrap();
    assert_eq!(p.pub_topics, ["s/0/t", "s/1/t", "s/0/t", "s/1/t"]);
    assert_eq!(p.matches(), vec![vec![0, 2], vec![1, 3]]);
}

#[test]
fn bad_values_are_rejected() {
    for bad in [
        &["pairs", "--qos", "3"][..],
        &["pairs", "--mqtt", "4.0"],
        &["pairs", "--duration", "-1"],
        &["pairs", "--pairs", "x"],
        &["nosuch"],
    ] {
        let r = Cli::try_parse_from(std::iter::once("ringmq-bench").chain(bad.iter().copied()));
        assert!(r.is_err(), "{bad:?} should not parse");
    }
    let small = scenario(&["pairs", "--payload", "8"]);
    assert!(
        Plan::from_scenario(&small).is_err(),
        "payload below the 20-byte header"
    );
}

#[test]
fn compare_and_selfcheck_take_a_scenario() {
    let cli = Cli::try_parse_from([
        "ringmq-bench",
        "compare",
        "--brokers",
        "mosquitto",
        "--note",
        "loaded",
        "pairs",
        "--pairs",
        "3",
    ])
    .unwrap();
    let Command::Compare(c) = cli.command else {
        panic!("compare")
    };
    assert_eq!(c.peers.brokers, ["mosquitto"]);
    assert!(matches!(c.scenario, Scenario::Pairs(ref a) if a.pairs == 3));
    let cli = Cli::try_parse_from(["ringmq-bench", "selfcheck"]).unwrap();
    assert!(matches!(cli.command, Command::Selfcheck(ref a) if a.scenario.is_none()));
}

#[test]
fn compare_and_sweep_peer_flags_parse() {
    let cli = Cli::try_parse_from(["ringmq-bench", "compare", "pairs"]).unwrap();
    let Command::Compare(c) = cli.command else {
        panic!("compare")
    };
    assert_eq!(
        c.peers.brokers,
        [
            "ringmq",
            "mosquitto",
            "mosquitto-nodelay",
            "flashmq",
            "rumqttd"
        ]
    );
    assert_eq!(c.peers.results_dir, None, "nothing is written unless asked");
    assert_eq!(c.peers.svg, None);
    assert_eq!(c.peers.flashmq_bin, None, "found on PATH by default");
    let cli = Cli::try_parse_from([
        "ringmq-bench",
        "compare",
        "--brokers",
        "flashmq,mosquitto-nodelay",
        "--flashmq-bin",
        "/x/flashmq",
        "--mosquitto-bin",
        "/x/mosquitto",
        "--rumqttd-bin",
        "/x/rumqttd",
        "--results-dir",
        "/tmp/r",
        "--svg",
        "/tmp/c.svg",
        "fanout",
        "-s",
        "10",
    ])
    .unwrap();
    let Command::Compare(c) = cli.command else {
        panic!("compare")
    };
    assert_eq!(c.peers.brokers, ["flashmq", "mosquitto-nodelay"]);
    assert_eq!(c.peers.flashmq_bin.as_deref(), Some("/x/flashmq"));
    assert_eq!(c.peers.mosquitto_bin.as_deref(), Some("/x/mosquitto"));
    assert_eq!(c.peers.rumqttd_bin.as_deref(), Some("/x/rumqttd"));
    assert_eq!(c.peers.results_dir.as_deref(), Some("/tmp/r"));
    assert_eq!(c.peers.svg.as_deref(), Some("/tmp/c.svg"));

    let cli = Cli::try_parse_from([
        "ringmq-bench",
        "sweep",
        "--rates",
        "10,100,1000",
        "--brokers",
        "ringmq",
        "pairs",
        "--pairs",
        "5",
    ])
    .unwrap();
    let Command::Sweep(a) = cli.command else {
        panic!("sweep")
    };
    assert_eq!(a.rates, [10.0, 100.0, 1000.0]);
    assert_eq!(a.peers.brokers, ["ringmq"]);
    let cli = Cli::try_parse_from(["ringmq-bench", "sweep", "pairs"]).unwrap();
    let Command::Sweep(a) = cli.command else {
        panic!("sweep")
    };
    assert_eq!(a.rates.len(), 6, "a default ladder of rates");
}

#[test]
fn batching_flags_parse() {
    let s = scenario(&["pairs", "--rcvlowat", "4096", "--window", "64"]);
    let p = Plan::from_scenario(&s).unwrap();
    assert_eq!((p.load.rcvlowat, p.load.window), (4096, Some(64)));
    let p = Plan::from_scenario(&scenario(&["pairs"])).unwrap();
    assert_eq!(p.load.rcvlowat, ringmq_bench::plan::DEFAULT_RCVLOWAT);
    let p = Plan::from_scenario(&scenario(&["pairs", "--rcvlowat", "0"])).unwrap();
    assert_eq!(p.load.rcvlowat, 1, "0 means off, like 1");
}

#[test]
fn glommio_io_ab_switch_parses() {
    let p = Plan::from_scenario(&scenario(&["pairs"])).unwrap();
    assert!(!p.run.glommio_io, "the per-core loop is the default");
    let p = Plan::from_scenario(&scenario(&["pairs", "--glommio-io"])).unwrap();
    assert!(p.run.glommio_io);
}

#[test]
fn pace_slot_flag_parses_and_is_bounded() {
    let p = Plan::from_scenario(&scenario(&["pairs", "--rate", "200"])).unwrap();
    assert_eq!(
        p.load.pace_slot_ns,
        ringmq_bench::plan::DEFAULT_PACE_SLOT_US * 1000
    );
    let s = scenario(&["pairs", "--rate", "200", "--pace-slot-us", "0"]);
    assert_eq!(Plan::from_scenario(&s).unwrap().load.pace_slot_ns, 0);
    let s = scenario(&["pairs", "--pace-slot-us", "1000"]);
    assert_eq!(
        Plan::from_scenario(&s).unwrap().load.pace_slot_ns,
        1_000_000
    );
    let big = scenario(&["pairs", "--pace-slot-us", "1000001"]);
    let e = Plan::from_scenario(&big).unwrap_err();
    assert!(e.contains("--pace-slot-us"), "{e}");
    let r = Cli::try_parse_from(["ringmq-bench", "pairs", "--pace-slot-us", "-5"]);
    assert!(r.is_err(), "negative slot");
}

#[test]
fn fixed_rate_qos0_subscribers_read_on_the_pace_grid_unless_asked_to_wake() {
    let load = |args: &[&str]| Plan::from_scenario(&scenario(args)).unwrap().load;
    let l = load(&["pairs", "--rate", "1000"]);
    assert!(
        l.read_on_tick && l.rx_stamps,
        "the default at a fixed rate, QoS 0"
    );
    let l = load(&["pairs", "--rate", "1000", "--wake-on-delivery"]);
    assert!(!l.read_on_tick && !l.rx_stamps);
    let l = load(&[
        "pairs",
        "--rate",
        "1000",
        "--wake-on-delivery",
        "--kernel-rx-stamps",
    ]);
    assert!(!l.read_on_tick && l.rx_stamps, "the hidden A/B switch");
    for off in [
        &["pairs"][..],
        &["pairs", "--rate", "1000", "--qos", "1"],
        &["pairs", "--rate", "1000", "--pace-slot-us", "0"],
    ] {
        let l = load(off);
        assert!(!l.read_on_tick && !l.rx_stamps, "{off:?}");
    }
}

#[test]
fn compare_reads_on_the_grid_only_against_brokers_known_to_set_nodelay() {
    use ringmq_bench::compare::sets_tcp_nodelay;
    for b in [
        "ringmq",
        "ringmq-epoll",
        "ringmq-io_uring-spin50",
        "mosquitto-nodelay",
        "flashmq",
    ] {
        assert!(sets_tcp_nodelay(b), "{b}");
    }
    for b in ["mosquitto", "rumqttd"] {
        assert!(!sets_tcp_nodelay(b), "{b}");
    }
}

#[test]
fn default_windows_follow_version_qos_and_whether_anyone_listens() {
    use ringmq_bench::plan::default_inflight;
    use ringmq_codec::{ProtocolVersion as V, QoS};
    assert_eq!(default_inflight(V::V3_1_1, QoS::AtLeastOnce, true), 200);
    assert_eq!(
        default_inflight(V::V3_1_1, QoS::AtLeastOnce, false),
        1000,
        "a publish-only QoS 1 run is bound by the acknowledgement round trip alone"
    );
    assert_eq!(default_inflight(V::V3_1_1, QoS::ExactlyOnce, false), 20);
    assert_eq!(default_inflight(V::V5, QoS::AtLeastOnce, true), 1000);
}

fn takeover(args: &[&str]) -> Result<ringmq_bench::cli::TakeoverArgs, String> {
    let cli = Cli::try_parse_from(
        ["ringmq-bench", "takeover"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let Command::Takeover(a) = cli.command else {
        panic!("takeover")
    };
    ringmq_bench::takeover::check(&a)?;
    Ok(a)
}

#[test]
fn takeover_flags_parse_with_defaults_and_bad_ones_are_refused() {
    let a = takeover(&["--nodes", "127.0.0.1:1883,127.0.0.1:1884"]).unwrap();
    assert_eq!(a.nodes, ["127.0.0.1:1883", "127.0.0.1:1884"]);
    assert_eq!((a.moves, a.pub_node, a.qos, a.payload), (100, 0, 1, 64));
    assert_eq!(a.dwell, Duration::from_millis(200));
    assert_eq!((a.rate, a.inflight, a.session_expiry), (1000.0, 100, 300));
    assert_eq!(a.mqtt, MqttVersion::V5);
    let a = takeover(&[
        "--nodes",
        "h:1,h:2,h:3",
        "--moves",
        "30",
        "--dwell",
        "0.5",
        "--pub-node",
        "2",
        "--rate",
        "5000",
        "--qos",
        "2",
        "--mqtt",
        "3.1.1",
        "--payload",
        "32",
        "--inflight",
        "20",
        "--drain",
        "2",
        "--session-expiry",
        "60",
        "--client-id",
        "c",
        "--topic",
        "t/1",
        "--cpu",
        "1",
        "--json",
    ])
    .unwrap();
    assert_eq!(
        (a.moves, a.pub_node, a.qos, a.payload, a.inflight),
        (30, 2, 2, 32, 20)
    );
    assert_eq!(
        (a.dwell, a.drain),
        (Duration::from_millis(500), Duration::from_secs(2))
    );
    assert_eq!(
        (a.rate, a.session_expiry, a.cpu, a.json),
        (5000.0, 60, Some(1), true)
    );
    assert_eq!(a.mqtt, MqttVersion::V311);
    assert_eq!(
        (a.client_id.as_deref(), a.topic.as_deref()),
        (Some("c"), Some("t/1"))
    );
    for (bad, why) in [
        (&[][..], "--nodes"),
        (&["--nodes", "h:1"], "at least two"),
        (&["--nodes", "h:1,h:2", "--pub-node", "2"], "--pub-node"),
        (&["--nodes", "h:1,h:2", "--qos", "0"], "qos"),
        (&["--nodes", "h:1,h:2", "--qos", "3"], "qos"),
        (&["--nodes", "h:1,h:2", "--payload", "8"], "--payload"),
        (&["--nodes", "h:1,h:2", "--moves", "0"], "--moves"),
        (&["--nodes", "h:1,h:2", "--rate=-1"], "--rate"),
        (&["--nodes", "h:1,h:2", "--dwell", "x"], "dwell"),
    ] {
        let e = takeover(bad).expect_err(&format!("{bad:?} should be refused"));
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}
