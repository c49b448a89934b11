//! Printing a [`Summary`]: a readable table, JSON, and the side-by-side comparison.

use crate::stats::{Latency, Summary};
use std::fmt::Write;

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// The rows shown for a summary: (label, value).
pub fn rows(s: &Summary) -> Vec<(&'static str, String)> {
    let mut r = vec![
        ("scenario", s.scenario.clone()),
        ("broker", s.broker.clone()),
        (
            "load",
            format!(
                "{} pub -> {} sub, {}, QoS {}, {} B, rate {}",
                s.publishers,
                s.subscribers,
                s.mqtt,
                s.qos,
                s.payload_bytes,
                if s.rate_per_publisher > 0.0 {
                    format!("{}/s per publisher", s.rate_per_publisher)
                } else {
                    "unlimited".into()
                }
            ),
        ),
        (
            "generator",
            format!("{} core(s), cpus {:?}", s.cores, s.cpus),
        ),
    ];
    if s.generator_busy_percent > 0.0 {
        let per_msg = if s.generator_ns_per_message > 0.0 {
            format!(
                ", {:.0} ns CPU per message sent or received",
                s.generator_ns_per_message
            )
        } else {
            String::new()
        };
        let demand = if s.generator_demand_percent > 0.0 {
            format!(
                " (on a CPU or waiting for one: {:.0}%)",
                s.generator_demand_percent
            )
        } else {
            String::new()
        };
        r.push((
            "generator busy",
            format!(
                "{:.0}% of its cores{demand}{per_msg}",
                s.generator_busy_percent
            ),
        ));
    }
    if s.publishers + s.subscribers > 0 && s.scenario != "conn" {
        r.extend([
            ("sent", s.sent.to_string()),
            ("expected deliveries", s.expected.to_string()),
            ("received (incl. dup)", s.received.to_string()),
            ("lost", s.lost.to_string()),
            ("duplicated", s.duplicated.to_string()),
            ("out of order", s.out_of_order.to_string()),
            ("publish rate", format!("{} msg/s", rate(s.sent_per_sec))),
            (
                "delivery rate",
                format!("{} msg/s", rate(s.delivered_per_sec)),
            ),
        ]);
        r.extend(latency_rows("latency", &s.latency));
    }
    if s.unexpected > 0 {
        r.push(("unexpected", s.unexpected.to_string()));
    }
    r.extend(connection_rows(s));
    r
}

/// Connections, connect rate and latency, broker memory.
fn connection_rows(s: &Summary) -> Vec<(&'static str, String)> {
    let mut r = vec![(
        "connections",
        format!("{} ok, {} failed", s.connections, s.connect_failures),
    )];
    if s.connects_per_sec > 0.0 {
        r.push(("connects/s", rate(s.connects_per_sec)));
    }
    r.extend(latency_rows("connect", &s.connect_latency));
    if let Some(m) = &s.broker_memory {
        r.push((
            "broker memory",
            format!(
                "pid {}: RSS {} -> {} kB, peak {} kB, {} B/connection",
                m.pid, m.rss_before_kb, m.rss_after_kb, m.hwm_kb, m.per_connection_bytes
            ),
        ));
    }
    r
}

fn latency_rows(what: &'static str, l: &Latency) -> Vec<(&'static str, String)> {
    if l.samples == 0 {
        return Vec::new();
    }
    let label = if what == "latency" {
        "latency p50/p90/p99"
    } else {
        "connect p50/p90/p99"
    };
    let label2 = if what == "latency" {
        "latency p99.9/max"
    } else {
        "connect p99.9/max"
    };
    vec![
        (
            label,
            format!("{} / {} / {}", us(l.p50_us), us(l.p90_us), us(l.p99_us)),
        ),
        (
            label2,
            format!(
                "{} / {}  ({} samples)",
                us(l.p999_us),
                us(l.max_us),
                l.samples
            ),
        ),
    ]
}

/// A two-column table.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    for (k, v) in rows(s) {
        let _ = writeln!(out, "{k:<22} {v}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "{:<22} {w}", "WARNING");
    }
    for n in &s.notes {
        let _ = writeln!(out, "{:<22} {n}", "note");
    }
    for e in &s.errors {
        let _ = writeln!(out, "{:<22} {e}", "error");
    }
    out
}

pub fn json(s: &Summary) -> String {
    serde_json::to_string_pretty(s).expect("summary serializes")
}

/// Comparison table in Markdown: one column per broker, ratios against the first.
pub fn comparison(results: &[(String, Summary)]) -> String {
    let mut out = String::new();
    if results.is_empty() {
        return out;
    }
    let base = &results[0];
    let _ = write!(out, "| metric |");
    for (name, _) in results {
        let _ = write!(out, " {name} |");
    }
    for (name, _) in &results[1..] {
        let _ = write!(out, " {} / {name} |", base.0);
    }
    let _ = writeln!(out);
    let cols = results.len() * 2;
    let _ = writeln!(out, "|---|{}", "---|".repeat(cols - 1));
    type Get = fn(&Summary) -> f64;
    let metrics: [(&str, Get, bool); 14] = [
        ("publish msg/s", |s| s.sent_per_sec, true),
        ("deliveries/s", |s| s.delivered_per_sec, true),
        ("lost", |s| s.lost as f64, false),
        ("duplicated", |s| s.duplicated as f64, false),
        ("out of order", |s| s.out_of_order as f64, false),
        ("latency p50 µs", |s| s.latency.p50_us, false),
        ("latency p90 µs", |s| s.latency.p90_us, false),
        ("latency p99 µs", |s| s.latency.p99_us, false),
        ("latency p99.9 µs", |s| s.latency.p999_us, false),
        ("latency max µs", |s| s.latency.max_us, false),
        ("connects/s", |s| s.connects_per_sec, true),
        ("generator busy %", |s| s.generator_busy_percent, false),
        ("generator ns/msg", |s| s.generator_ns_per_message, false),
        (
            "broker peak RSS kB",
            |s| s.broker_memory.as_ref().map_or(0.0, |m| m.hwm_kb as f64),
            false,
        ),
    ];
    for (label, get, _higher_better) in metrics {
        if results.iter().all(|(_, s)| get(s) == 0.0) {
            continue;
        }
        let _ = write!(out, "| {label} |");
        for (_, s) in results {
            let _ = write!(out, " {} |", fmt_num(get(s)));
        }
        for (_, s) in &results[1..] {
            let (a, b) = (get(&base.1), get(s));
            let ratio = if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "-".into()
            };
            let _ = write!(out, " {ratio} |");
        }
        let _ = writeln!(out);
    }
    if results.iter().any(|(_, s)| s.generator_limited) {
        let _ = write!(out, "| generator-limited (figure is the tool's) |");
        for (_, s) in results {
            let _ = write!(out, " {} |", if s.generator_limited { "YES" } else { "no" });
        }
        let _ = writeln!(out, "{}", " |".repeat(results.len() - 1));
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 || v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_shows_ratios_against_the_first_broker() {
        let a = Summary {
            sent_per_sec: 300.0,
            delivered_per_sec: 300.0,
            ..Summary::default()
        };
        let b = Summary {
            sent_per_sec: 100.0,
            delivered_per_sec: 100.0,
            ..Summary::default()
        };
        let t = comparison(&[("ringmq".into(), a), ("mosquitto".into(), b)]);
        assert!(t.contains("| ringmq / mosquitto |"), "{t}");
        assert!(t.contains("| deliveries/s | 300 | 100 | 3.00x |"), "{t}");
        assert!(!t.contains("latency"), "all-zero rows are left out: {t}");
        assert!(!t.contains("generator-limited"), "{t}");
        let c = Summary {
            generator_limited: true,
            ..Summary::default()
        };
        let t = comparison(&[
            ("ringmq".into(), c),
            ("mosquitto".into(), Summary::default()),
        ]);
        assert!(
            t.contains("| generator-limited (figure is the tool's) | YES | no | |"),
            "{t}"
        );
    }

    #[test]
    fn table_names_every_anomaly_count() {
        let s = Summary {
            scenario: "pairs".into(),
            publishers: 1,
            subscribers: 1,
            lost: 3,
            duplicated: 2,
            out_of_order: 1,
            ..Summary::default()
        };
        let t = table(&s);
        for row in [
            "lost                   3",
            "duplicated             2",
            "out of order           1",
        ] {
            assert!(t.contains(row), "{row:?} in\n{t}");
        }
    }
}
