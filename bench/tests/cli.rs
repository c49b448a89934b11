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
    assert_eq!(c.brokers, ["mosquitto"]);
    assert!(matches!(c.scenario, Scenario::Pairs(ref a) if a.pairs == 3));
    let cli = Cli::try_parse_from(["ringmq-bench", "selfcheck"]).unwrap();
    assert!(matches!(cli.command, Command::Selfcheck(ref a) if a.scenario.is_none()));
}
