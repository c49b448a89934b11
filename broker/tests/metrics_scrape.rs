//! The Prometheus endpoint: scraped over HTTP and parsed; every sample
//! belongs to a declared family, per-shard labels, per-QoS and per-reason
//! series, histogram shape.

#[path = "ctl_support/mod.rs"]
mod support;

use ringmq_broker::metrics::MetricsServer;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use support::FakeBackend;

/// A parsed exposition: family -> type, and every sample (name, labels, value).
#[derive(Default, Debug)]
pub struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find_map(|(n, l, v)| {
            (n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want)))
            .then_some(*v)
        })
    }
}

/// A strict parser of the text format (enough for what we emit).
fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            e.types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').expect("labels close");
                let labels = l
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label k=v");
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| e.types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(
            e.types.contains_key(&family),
            "sample {name} without # TYPE"
        );
        e.samples.push((name, labels, value));
    }
    e
}

fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("http response");
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_endpoint_scrapes_and_parses() {
    let backend = Arc::new(FakeBackend::default());
    let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), backend).unwrap();
    let (head, body) = get(srv.local_addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let e = parse(&body);
    assert_eq!(e.value("ringmq_shards", &[]), Some(2.0));
    assert_eq!(e.value("ringmq_connections", &[("shard", "1")]), Some(2.0));
    assert_eq!(
        e.value(
            "ringmq_messages_received_total",
            &[("shard", "0"), ("qos", "2")]
        ),
        Some(7.0)
    );
    assert_eq!(
        e.value(
            "ringmq_messages_sent_total",
            &[("shard", "1"), ("qos", "0")]
        ),
        Some(8.0)
    );
    assert_eq!(
        e.value("ringmq_publish_bytes_received_total", &[("qos", "1")]),
        Some(60.0)
    );
    assert_eq!(
        e.value(
            "ringmq_connections_closed_total",
            &[("shard", "0"), ("reason", "keep_alive_timeout")]
        ),
        Some(2.0)
    );
    assert_eq!(
        e.value(
            "ringmq_messages_dropped_total",
            &[("reason", "qos0_buffer_full")]
        ),
        Some(4.0)
    );
    assert_eq!(
        e.value(
            "ringmq_requests_refused_total",
            &[("shard", "1"), ("reason", "quota_exceeded")]
        ),
        Some(3.0)
    );
    assert_eq!(e.value("ringmq_busy_ratio", &[("shard", "0")]), Some(0.25));
    assert_eq!(e.types["ringmq_storage_commit_seconds"], "histogram");
    assert_eq!(
        e.value("ringmq_storage_commit_seconds_bucket", &[("le", "+Inf")]),
        Some(6.0)
    );
    assert_eq!(
        e.value("ringmq_storage_commit_seconds_count", &[("shard", "1")]),
        Some(6.0)
    );
    assert_eq!(
        e.value("ringmq_storage_ops_total", &[("shard", "0")]),
        Some(40.0)
    );
    assert_eq!(
        e.value("ringmq_storage_ops_cancelled_total", &[("shard", "1")]),
        Some(3.0)
    );
    assert_eq!(
        e.value("ringmq_storage_rows_deferred_total", &[("shard", "1")]),
        Some(7.0)
    );
    assert_eq!(
        e.value(
            "ringmq_storage_rows_deferred_stored_total",
            &[("shard", "0")]
        ),
        Some(1.0)
    );
    for family in [
        "ringmq_inflight_messages",
        "ringmq_queued_messages",
        "ringmq_retained_messages",
        "ringmq_subscriptions",
        "ringmq_bytes_received_total",
        "ringmq_bytes_sent_total",
    ] {
        assert!(e.types.contains_key(family), "{family} missing");
    }
    // Counters end in _total (except histograms); one TYPE per family.
    for (name, kind) in &e.types {
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}

#[test]
fn other_paths_are_404_and_each_scrape_asks_the_backend() {
    let backend = Arc::new(FakeBackend::default());
    let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), backend.clone()).unwrap();
    let (head, _) = get(srv.local_addr(), "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    get(srv.local_addr(), "/metrics");
    get(srv.local_addr(), "/metrics?x=1");
    assert_eq!(
        backend
            .metrics_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[test]
fn the_running_broker_serves_metrics() {
    let b = support::OpsBroker::start("metrics-e2e", &["--metrics-listen", "127.0.0.1:0"]);
    let addr = b.metrics.expect("metrics line");
    let e = parse(&get(addr, "/metrics").1);
    assert_eq!(e.value("ringmq_shards", &[]), Some(2.0));
    assert!(e.types.contains_key("ringmq_connections_closed_total"));
}

#[test]
fn connections_show_up_in_metrics() {
    let b = support::OpsBroker::start("metrics-conn", &["--metrics-listen", "127.0.0.1:0"]);
    let addr = b.metrics.expect("metrics line");
    let _tcp = TcpStream::connect(b.addr).unwrap();
    support::check_for(
        std::time::Duration::from_secs(10),
        "connection counted",
        || {
            let e = parse(&get(addr, "/metrics").1);
            e.samples
                .iter()
                .filter(|(n, _, _)| n == "ringmq_connections_total")
                .map(|s| s.2)
                .sum::<f64>()
                >= 1.0
        },
    );
}
