//! Loss, duplicate and reorder detection, proven on the relay TEST FIXTURE made faulty
//! on purpose (it drops, duplicates and swaps forwarded messages by a fixed rule).

mod common;

use common::scenario;
use ringmq_bench::relay::{Faults, RelayFixture};
use ringmq_bench::run_scenario;

/// Replays the fixture's fault rule for one publisher -> one subscriber:
/// (lost, duplicated, out of order).
fn expected_anomalies(n: u64, f: Faults) -> (u64, u64, u64) {
    let hit = |every: u64, k: u64| every > 0 && k.is_multiple_of(every);
    let (mut lost, mut dup, mut ooo) = (0, 0, 0);
    let mut held = false;
    for k in 1..=n {
        if hit(f.drop_every, k) {
            lost += 1;
        } else if hit(f.swap_every, k) && !held {
            held = true;
        } else {
            if hit(f.dup_every, k) {
                dup += 1;
            }
            if held {
                ooo += 1;
                held = false;
            }
        }
    }
    if held {
        lost += 1;
    }
    (lost, dup, ooo)
}

fn run_one_pair(relay: &RelayFixture, count: u64, qos: &str) -> ringmq_bench::stats::Summary {
    run_one_pair_with(relay, count, qos, &[])
}

fn run_one_pair_with(
    relay: &RelayFixture,
    count: u64,
    qos: &str,
    extra: &[&str],
) -> ringmq_bench::stats::Summary {
    let port = relay.addr.port().to_string();
    let count = count.to_string();
    let mut args = vec![
        "pairs", "--pairs", "1", "--count", &count, "--warmup", "0", "--drain", "1", "--qos", qos,
        "--port", &port, "--no-pin", "-q",
    ];
    args.extend_from_slice(extra);
    let s = scenario(&args);
    run_scenario(&s).expect("run against the relay fixture")
}

#[test]
fn faulty_relay_loss_duplicates_and_reordering_are_counted_exactly() {
    let faults = Faults {
        drop_every: 10,
        dup_every: 7,
        swap_every: 13,
    };
    let relay = RelayFixture::start(0, None, faults).unwrap();
    let s = run_one_pair(&relay, 1000, "0");
    relay.stop();
    let (lost, dup, ooo) = expected_anomalies(1000, faults);
    assert_eq!(s.sent, 1000);
    assert_eq!(s.expected, 1000);
    assert_eq!(
        (s.lost, s.duplicated, s.out_of_order),
        (lost, dup, ooo),
        "{s:#?}"
    );
    assert!(lost > 0 && dup > 0 && ooo > 0);
    assert_eq!(s.received, 1000 - lost + dup);
}

#[test]
fn clean_relay_shows_no_anomalies_at_qos1() {
    let relay = RelayFixture::start(0, None, Faults::default()).unwrap();
    let s = run_one_pair(&relay, 500, "1");
    relay.stop();
    assert_eq!((s.sent, s.expected, s.unique), (500, 500, 500), "{s:#?}");
    assert_eq!(
        (s.lost, s.duplicated, s.out_of_order, s.unexpected),
        (0, 0, 0, 0)
    );
    assert_eq!(s.latency.samples, 500);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
}

/// At a fixed rate, QoS 0, subscribers are read on the pace grid and latency ends at the
/// kernel's receive timestamp: the same exact counts as waking per delivery, and every
/// first sighting has a latency on the generator's clock (a wrong clock offset would give
/// zero or years).
#[test]
fn faulty_relay_anomalies_are_counted_exactly_at_a_fixed_rate_in_both_read_modes() {
    let faults = Faults {
        drop_every: 10,
        dup_every: 7,
        swap_every: 13,
    };
    let (lost, dup, ooo) = expected_anomalies(600, faults);
    for extra in [
        &["--rate", "2000"][..],
        &["--rate", "2000", "--wake-on-delivery"],
    ] {
        // A fresh relay per run: its fault rule counts every message it forwarded.
        let relay = RelayFixture::start(0, None, faults).unwrap();
        let s = run_one_pair_with(&relay, 600, "0", extra);
        relay.stop();
        assert_eq!((s.sent, s.expected), (600, 600), "{extra:?}");
        assert_eq!(
            (s.lost, s.duplicated, s.out_of_order),
            (lost, dup, ooo),
            "{extra:?}: {s:#?}"
        );
        assert_eq!(s.received, 600 - lost + dup, "{extra:?}");
        assert!(s.errors.is_empty(), "{extra:?}: {:?}", s.errors);
        assert_eq!(s.latency.samples, 600 - lost, "{extra:?}");
        assert!(
            s.latency.max_us > 0.0 && s.latency.max_us < 10_000_000.0,
            "{extra:?}: latency on the wrong clock: {:?}",
            s.latency
        );
    }
}
