//! Per-core measurements, merged into one [`Summary`] at the end of a run.
//!
//! Each core owns one [`CoreStats`] (shared by its tasks through `Rc<RefCell<_>>`, never
//! across cores). Latencies are recorded in nanoseconds in an HdrHistogram with three
//! significant digits; the summary reports microseconds.

use crate::tracker::Counts;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms record (longer values are clamped).
const MAX_NS: u64 = 120_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// What one core measured.
#[derive(Debug)]
pub struct CoreStats {
    /// PUBLISH packets written.
    pub sent: u64,
    /// Written inside the measured window (after warm-up).
    pub sent_measured: u64,
    /// PUBLISH packets received, duplicates included.
    pub received: u64,
    pub counts: Counts,
    /// First sightings of messages published inside the measured window.
    pub received_measured: u64,
    /// Time of the last first sighting of a measured message (ns on the payload clock).
    pub last_measured_recv_ns: u64,
    /// Publish-to-delivery latency of measured messages, ns.
    pub latency: Histogram<u64>,
    /// CONNECT-to-CONNACK latency, ns.
    pub connect_latency: Histogram<u64>,
    pub connected: u64,
    pub connect_failures: u64,
    /// (publisher index, messages sent) for the publishers on this core.
    pub sent_by_publisher: Vec<(u32, u64)>,
    /// Expected deliveries for this core's subscribers (filled in once publishers stop).
    pub expected: u64,
    /// First error text per kind, for the report.
    pub errors: Vec<String>,
    /// CPU time of the core's thread from the start barrier to the end, and wall time.
    pub busy_secs: f64,
    pub wall_secs: f64,
    /// The same over the measured window only (end of warm-up to end of publishing),
    /// with the messages this core sent and received in it; zero when not sampled.
    pub window_busy_secs: f64,
    pub window_wall_secs: f64,
    pub window_messages: u64,
    /// Time runnable but waiting for a CPU in the window (another process had it).
    pub window_wait_secs: f64,
}

impl Default for CoreStats {
    fn default() -> Self {
        CoreStats {
            sent: 0,
            sent_measured: 0,
            received: 0,
            counts: Counts::default(),
            received_measured: 0,
            last_measured_recv_ns: 0,
            latency: new_histogram(),
            connect_latency: new_histogram(),
            connected: 0,
            connect_failures: 0,
            sent_by_publisher: Vec::new(),
            expected: 0,
            errors: Vec::new(),
            busy_secs: 0.0,
            wall_secs: 0.0,
            window_busy_secs: 0.0,
            window_wall_secs: 0.0,
            window_messages: 0,
            window_wait_secs: 0.0,
        }
    }
}

impl CoreStats {
    pub fn error(&mut self, e: impl std::fmt::Display) {
        if self.errors.len() < 8 {
            self.errors.push(e.to_string());
        }
    }

    pub fn merge(&mut self, o: CoreStats) {
        self.sent += o.sent;
        self.sent_measured += o.sent_measured;
        self.received += o.received;
        self.counts.add(&o.counts);
        self.received_measured += o.received_measured;
        self.last_measured_recv_ns = self.last_measured_recv_ns.max(o.last_measured_recv_ns);
        self.latency.add(&o.latency).expect("same bounds");
        self.connect_latency
            .add(&o.connect_latency)
            .expect("same bounds");
        self.connected += o.connected;
        self.connect_failures += o.connect_failures;
        self.sent_by_publisher.extend(o.sent_by_publisher);
        self.expected += o.expected;
        self.busy_secs += o.busy_secs;
        self.wall_secs += o.wall_secs;
        self.window_busy_secs += o.window_busy_secs;
        self.window_wall_secs += o.window_wall_secs;
        self.window_messages += o.window_messages;
        self.window_wait_secs += o.window_wait_secs;
        for e in o.errors {
            self.error(e);
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Broker memory read from /proc/PID/status, kB.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BrokerMemory {
    pub pid: u32,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub hwm_kb: u64,
    /// (after - before) / connections held, bytes; 0 when not applicable.
    pub per_connection_bytes: u64,
}

/// Reads `VmRSS` and `VmHWM` (kB) of a process.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Generator core use above which a figure is the tool's limit, not the broker's.
pub const GENERATOR_LIMIT_PERCENT: f64 = 85.0;

/// The warning printed (and put in `--json`) when the generator was the limit: busy on
/// its own work, or (`busy` well below `load`) kept waiting for its CPU by other
/// processes.
pub fn generator_limit_warning(busy: f64, load: f64) -> String {
    if busy > GENERATOR_LIMIT_PERCENT {
        format!(
            "generator core(s) {busy:.0}% busy (> {GENERATOR_LIMIT_PERCENT:.0}%): this figure is the generator's limit, not the broker's (add --cores or a larger --window)"
        )
    } else {
        format!(
            "generator core(s) {busy:.0}% busy but on a CPU or waiting for one {load:.0}% of the time (> {GENERATOR_LIMIT_PERCENT:.0}%): other processes held its CPU, so this figure is the generator's limit, not the broker's (run on a quiet machine, or pin with --cpus)"
        )
    }
}

impl Summary {
    /// Sets busy %, ns per message and the generator-limit warning from CPU figures.
    pub fn set_generator_cpu(&mut self, busy_secs: f64, wall_secs: f64, messages: u64) {
        self.generator_busy_percent = if wall_secs > 0.0 {
            100.0 * busy_secs / wall_secs
        } else {
            0.0
        };
        self.generator_ns_per_message = if messages > 0 {
            busy_secs * 1e9 / messages as f64
        } else {
            0.0
        };
        self.check_generator_limit();
    }

    /// Sets the demand (on a CPU + waiting for one) and re-checks the limit.
    pub fn set_generator_demand(&mut self, secs: f64, wall_secs: f64) {
        if wall_secs > 0.0 {
            self.generator_demand_percent = 100.0 * secs / wall_secs;
        }
        self.check_generator_limit();
    }

    fn check_generator_limit(&mut self) {
        let load = self
            .generator_busy_percent
            .max(self.generator_demand_percent);
        let limited = load > GENERATOR_LIMIT_PERCENT;
        if limited && !self.generator_limited {
            self.warnings
                .push(generator_limit_warning(self.generator_busy_percent, load));
        }
        self.generator_limited = limited;
    }
}

/// The result of one scenario run, as printed and written with `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub broker: String,
    pub mqtt: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Messages per second per publisher; 0 = unlimited.
    pub rate_per_publisher: f64,
    pub cores: usize,
    pub cpus: Vec<usize>,
    /// Measured publishing window, seconds (after warm-up).
    pub publish_secs: f64,
    /// Measured delivery window, seconds (warm-up end to last measured delivery).
    pub delivery_secs: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Publishes per second in the measured window.
    pub sent_per_sec: f64,
    /// Deliveries per second (first sightings of measured messages).
    pub delivered_per_sec: f64,
    pub latency: Latency,
    pub connections: u64,
    pub connect_failures: u64,
    pub connects_per_sec: f64,
    pub connect_latency: Latency,
    pub broker_memory: Option<BrokerMemory>,
    /// Generator CPU use (user + system of its executor threads) over the measured
    /// window, % of its cores; the whole run when there is no fixed window (`--count`).
    pub generator_busy_percent: f64,
    /// Time the generator's threads were on a CPU or runnable and waiting for one, % of
    /// their wall time (schedstat): above [`GENERATOR_LIMIT_PERCENT`] the generator was
    /// the limit even when other processes took part of its core. 0 = not measured.
    pub generator_demand_percent: f64,
    /// Generator CPU nanoseconds per message it sent or received in that window.
    pub generator_ns_per_message: f64,
    /// True when the generator's cores passed [`GENERATOR_LIMIT_PERCENT`]: the
    /// throughput figures are then the tool's limit, not the broker's.
    pub generator_limited: bool,
    /// Warnings for the reader (the generator-limit line among them).
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    /// Extra scenario-specific notes (e.g. retained replay timings).
    pub notes: Vec<String>,
}
