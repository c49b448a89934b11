//! The generator-limit warning: it fires when the generator is made the bottleneck on
//! purpose (one core, each received message made to cost 200 µs of CPU by the hidden
//! `--spin-ns` test hook, against the relay TEST FIXTURE), in the table and in --json,
//! and stays quiet on a light fixed-rate run.

mod common;

use common::scenario;
use ringmq_bench::relay::{Faults, RelayFixture};
use ringmq_bench::{report, run_scenario};

const LINE: &str = "this figure is the generator's limit";

fn run(relay: &RelayFixture, extra: &[&str]) -> ringmq_bench::stats::Summary {
    let port = relay.addr.port().to_string();
    let mut args = vec![
        "pairs",
        "--pairs",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--drain",
        "2",
        "--port",
        &port,
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ];
    args.extend_from_slice(extra);
    run_scenario(&scenario(&args)).expect("run against the relay fixture")
}

#[test]
fn warning_fires_when_the_generator_is_the_bottleneck() {
    let relay = RelayFixture::start(0, None, Faults::default()).expect("relay");
    let s = run(&relay, &["--spin-ns", "200000", "--window", "4"]);
    assert!(
        s.generator_limited,
        "busy {:.0}%, demand {:.0}%",
        s.generator_busy_percent, s.generator_demand_percent
    );
    assert!(
        s.warnings.iter().any(|w| w.contains(LINE)),
        "{:?}",
        s.warnings
    );
    assert!(
        report::table(&s).contains("WARNING"),
        "{}",
        report::table(&s)
    );
    let json: serde_json::Value = serde_json::from_str(&report::json(&s)).unwrap();
    assert_eq!(json["generator_limited"], true);
    assert!(json["warnings"][0].as_str().unwrap().contains(LINE));
    assert!(
        s.generator_ns_per_message > 10_000.0,
        "{}",
        s.generator_ns_per_message
    );

    let quiet = run(&relay, &["--rate", "50"]);
    assert!(
        !quiet.generator_limited && quiet.warnings.is_empty(),
        "busy {:.0}%, demand {:.0}%: {:?}",
        quiet.generator_busy_percent,
        quiet.generator_demand_percent,
        quiet.warnings
    );
    assert_eq!(quiet.lost, 0);
    relay.stop();
}
