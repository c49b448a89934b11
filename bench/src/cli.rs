//! Command line: one subcommand per scenario, plus `compare` and `selfcheck`.
//!
//! Every scenario flattens the same three groups: [`BrokerArgs`] (where and how to
//! connect), [`RunArgs`] (cores, CPU pinning, output) and [`LoadArgs`] (QoS, payload,
//! rate, duration or count, warm-up). Load fields are `Option`s so each scenario can
//! choose its own defaults (the `qos2-fanout` preset differs from `pairs`).

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "ringmq-bench",
    version,
    about = "Thread-per-core MQTT 3.1.1/5.0 load generator for any broker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario against a broker that is already running.
    #[command(flatten)]
    Scenario(Scenario),
    /// Start ringmq, Mosquitto (as configured and with TCP_NODELAY), FlashMQ and rumqttd
    /// (those installed) one after the other, run the same scenario against each, print
    /// each result, their configs and the ratios; --results-dir also writes the table and
    /// an SVG chart.
    Compare(CompareArgs),
    /// Fixed-rate latency at rising rates against each broker: p50/p99/p99.9 against
    /// offered load, as a table and an SVG chart.
    Sweep(SweepArgs),
    /// Measure the generator's own ceiling against the built-in relay TEST FIXTURE (not a broker).
    Selfcheck(SelfcheckArgs),
    /// Cluster takeover under load: one persistent session CONNECTs (clean start 0) to the
    /// next node every --dwell while a publisher keeps publishing to it; reports
    /// CONNECT->CONNACK of each move and lost / duplicated messages.
    Takeover(TakeoverArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N 1:1 publisher/subscriber pairs, each pair on its own topic.
    Pairs(PairsArgs),
    /// P publishers (default 1) to M subscribers of the same topic.
    Fanout(FanoutArgs),
    /// N publishers to one subscriber (wildcard subscription).
    Fanin(FaninArgs),
    /// N publishers, M subscribers, topic patterns with `%i` substitution and wildcards.
    Pubsub(PubsubArgs),
    /// Connection storm: connects/s, connections held, broker memory (with --broker-pid).
    Conn(ConnArgs),
    /// Many retained messages replayed to new subscribers.
    Retained(RetainedArgs),
    /// Preset from the fan-out PR: 100 publishers, 2000 subscribers, QoS 2, 1 msg/s each.
    #[command(name = "qos2-fanout")]
    Qos2Fanout(Qos2FanoutArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Pairs(_) => "pairs",
            Scenario::Fanout(_) => "fanout",
            Scenario::Fanin(_) => "fanin",
            Scenario::Pubsub(_) => "pubsub",
            Scenario::Conn(_) => "conn",
            Scenario::Retained(_) => "retained",
            Scenario::Qos2Fanout(_) => "qos2-fanout",
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            Scenario::Pairs(a) => &a.common,
            Scenario::Fanout(a) => &a.common,
            Scenario::Fanin(a) => &a.common,
            Scenario::Pubsub(a) => &a.common,
            Scenario::Conn(a) => &a.common,
            Scenario::Retained(a) => &a.common,
            Scenario::Qos2Fanout(a) => &a.common,
        }
    }

    /// The load options of a message scenario (None for `conn`).
    pub fn load_mut(&mut self) -> Option<&mut LoadArgs> {
        match self {
            Scenario::Pairs(a) => Some(&mut a.load),
            Scenario::Fanout(a) => Some(&mut a.load),
            Scenario::Fanin(a) => Some(&mut a.load),
            Scenario::Pubsub(a) => Some(&mut a.load),
            Scenario::Retained(a) => Some(&mut a.load),
            Scenario::Qos2Fanout(a) => Some(&mut a.load),
            Scenario::Conn(_) => None,
        }
    }

    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Scenario::Pairs(a) => &mut a.common,
            Scenario::Fanout(a) => &mut a.common,
            Scenario::Fanin(a) => &mut a.common,
            Scenario::Pubsub(a) => &mut a.common,
            Scenario::Conn(a) => &mut a.common,
            Scenario::Retained(a) => &mut a.common,
            Scenario::Qos2Fanout(a) => &mut a.common,
        }
    }
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct Common {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Where the broker is and how to log in.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker TCP port.
    #[arg(long, short = 'p', default_value_t = 1883)]
    pub port: u16,
    /// Subscribers connect to this port instead (same host and transport): publishers on
    /// one node of a cluster, subscribers on another.
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// MQTT protocol version: 5 or 3.1.1 (also accepted: 4, 311).
    #[arg(long, default_value = "5", value_parser = parse_version)]
    pub mqtt: MqttVersion,
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    #[arg(long, short = 'P')]
    pub password: Option<String>,
    /// Client identifier prefix; the client index is appended.
    #[arg(long, default_value = "rb")]
    pub client_prefix: String,
    /// Keep alive in seconds (0 disables PINGREQ).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Connect with clean start / clean session = false (keep sessions).
    #[arg(long)]
    pub no_clean_start: bool,
    /// Transport: tcp, tls, ws (WebSocket) or wss (WebSocket over TLS).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// Use TLS (tcp becomes tls, ws becomes wss).
    #[arg(long)]
    pub tls: bool,
    /// CA certificate(s) that signed the broker's certificate, PEM (required for TLS).
    #[arg(long)]
    pub ca: Option<String>,
    /// Client certificate chain, PEM (TLS client authentication; with --key).
    #[arg(long)]
    pub cert: Option<String>,
    /// Client private key, PEM (with --cert).
    #[arg(long)]
    pub key: Option<String>,
    /// TLS server name to send and verify (default: --host).
    #[arg(long)]
    pub sni: Option<String>,
    /// Only this TLS version: 1.2 or 1.3 (default: either, 1.3 preferred).
    #[arg(long, value_parser = ["1.2", "1.3"])]
    pub tls_version: Option<String>,
    /// Only this TLS cipher suite, by its IANA name (e.g. TLS13_AES_128_GCM_SHA256), so
    /// every broker is measured with the same one.
    #[arg(long)]
    pub tls_suite: Option<String>,
    /// Full TLS handshakes only: no session resumption between a run's connections.
    #[arg(long)]
    pub no_tls_resume: bool,
    /// WebSocket request path.
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
    /// Broker URL instead of --host/--port/--transport/--ws-path:
    /// mqtt://H:P, mqtts://H:P, ws://H:P/PATH or wss://H:P/PATH.
    #[arg(long, value_parser = parse_url)]
    pub url: Option<BrokerUrl>,
}

/// How MQTT bytes travel to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// A parsed `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
}

pub fn parse_url(s: &str) -> Result<BrokerUrl, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("--url `{s}`: expected SCHEME://HOST:PORT[/PATH]"))?;
    let (transport, default_port) = match scheme {
        "mqtt" | "tcp" => (Transport::Tcp, 1883),
        "mqtts" | "ssl" | "tls" => (Transport::Tls, 8883),
        "ws" => (Transport::Ws, 80),
        "wss" => (Transport::Wss, 443),
        other => {
            return Err(format!(
                "--url: unknown scheme `{other}` (mqtt, mqtts, ws, wss)"
            ))
        }
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if path.is_some() && matches!(transport, Transport::Tcp | Transport::Tls) {
        return Err(format!(
            "--url `{s}`: a path only goes with ws:// or wss://"
        ));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|e| format!("--url `{s}`: bad port `{p}`: {e}"))?,
        ),
        _ => (hostport.to_string(), default_port),
    };
    if host.is_empty() {
        return Err(format!("--url `{s}`: no host"));
    }
    Ok(BrokerUrl {
        transport,
        host,
        port,
        path,
    })
}

impl BrokerArgs {
    /// Applies `--url` (when given) to host, port, transport and path.
    pub fn apply_url(&mut self) {
        if let Some(u) = self.url.take() {
            self.host = u.host;
            self.port = u.port;
            self.transport = u.transport;
            if let Some(p) = u.path {
                self.ws_path = p;
            }
        }
    }

    /// The transport after `--tls`.
    pub fn transport(&self) -> Transport {
        match (
            self.transport,
            self.tls
                || self
                    .url
                    .as_ref()
                    .is_some_and(|u| matches!(u.transport, Transport::Tls | Transport::Wss)),
        ) {
            (Transport::Tcp, true) => Transport::Tls,
            (Transport::Ws, true) => Transport::Wss,
            (t, _) => t,
        }
    }
}

/// Protocol version selected on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MqttVersion {
    V311,
    V5,
}

fn parse_version(s: &str) -> Result<MqttVersion, String> {
    match s {
        "5" | "5.0" | "v5" => Ok(MqttVersion::V5),
        "3.1.1" | "311" | "4" | "v3" | "3" => Ok(MqttVersion::V311),
        _ => Err(format!("unknown MQTT version `{s}` (use 5 or 3.1.1)")),
    }
}

/// Threads, CPU pinning, output format.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Number of generator cores (one glommio executor each).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// CPUs to pin the executors to, e.g. `1` or `1,0` or `2-5`. Default: start at CPU 1
    /// (so a broker pinned to CPU 0 is not disturbed) and wrap around the CPUs that exist.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Do not pin executors to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No live progress line even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// A/B switch: plain TCP sockets wait through glommio's stream (an io_uring poll per
    /// socket and read) instead of the core's epoll set (docs/benchmarking.md).
    #[arg(long, hide = true)]
    pub glommio_io: bool,
}

/// Message load: every scenario takes these.
#[derive(Debug, Clone, Default, Args)]
pub struct LoadArgs {
    /// QoS of publishes and subscriptions (0, 1, 2).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Payload size in bytes (at least 20: sequence, timestamp, publisher id).
    #[arg(long)]
    pub payload: Option<usize>,
    /// Messages per second per publisher; 0 = unlimited.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Publishing time after warm-up, seconds (ignored with --count).
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Messages per publisher (instead of --duration); includes warm-up messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Warm-up seconds: messages flow but latency and throughput are not recorded.
    #[arg(long, value_parser = parse_secs)]
    pub warmup: Option<Duration>,
    /// Longest wait for outstanding deliveries after publishing stops, seconds.
    #[arg(long, value_parser = parse_secs)]
    pub drain: Option<Duration>,
    /// QoS 1/2 publish window per publisher (capped by the broker's Receive Maximum).
    #[arg(long)]
    pub inflight: Option<u16>,
    /// Fixed rate only: publishers wake on a grid of this many microseconds and send
    /// every message due, each stamped with its scheduled time, the slot (default 250; 0 =
    /// a wake-up per message). Fewer wake-ups, same offered rate.
    #[arg(long)]
    pub pace_slot_us: Option<u64>,
    /// Fixed rate, QoS 0, plain TCP: wake for every delivery and end its latency when it
    /// is read. Without it subscribers are read once per pace slot and a delivery's
    /// latency ends at the kernel's receive timestamp of its segment (SO_TIMESTAMPNS):
    /// the same figure without a wake-up per delivery (docs/benchmarking.md).
    #[arg(long)]
    pub wake_on_delivery: bool,
    /// A/B switch: latency ends at the kernel's receive timestamp also when woken per
    /// delivery (plain TCP subscribers on the core's loop).
    #[arg(long, hide = true)]
    pub kernel_rx_stamps: bool,
    /// Unlimited rate only: most messages a publisher may have ahead of its probe
    /// subscriber (closed loop, so queues stay bounded); 0 = open loop.
    #[arg(long)]
    pub window: Option<u64>,
    /// Unlimited rate, QoS 0: a subscriber socket reports readable once this many
    /// bytes wait (SO_RCVLOWAT; probes use at most half their window), so the generator
    /// reads in batches; 1 = every byte (default 16384). QoS 1 subscribers use 4
    /// deliveries' worth, at most this; 1 turns that off too.
    #[arg(long)]
    pub rcvlowat: Option<usize>,
    /// TEST HOOK: busy-wait this many ns per received message, to make the generator
    /// the bottleneck on purpose (the generator-limit warning's test).
    #[arg(long, hide = true)]
    pub spin_ns: Option<u64>,
}

pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("bad seconds `{s}`: {e}"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("seconds out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Debug, Clone, Args)]
pub struct PairsArgs {
    /// Number of publisher/subscriber pairs.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Subscribers of the shared topic.
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Publishers to the shared topic.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct FaninArgs {
    /// Publishers, each on its own topic, all matched by one subscriber's wildcard.
    #[arg(long, default_value_t = 100)]
    pub publishers: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct PubsubArgs {
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    #[arg(long, short = 's', default_value_t = 10)]
    pub subscribers: usize,
    /// Publish topic; `%i` becomes the publisher index.
    #[arg(long, default_value = "bench/%i")]
    pub pub_topic: String,
    /// Subscription filter; `%i` becomes the subscriber index; `+` and `#` allowed.
    #[arg(long, default_value = "bench/#")]
    pub sub_topic: String,
    /// Apply `%i` modulo this number (e.g. 10 publishers onto 2 topics).
    #[arg(long)]
    pub modulo: Option<usize>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 5000)]
    pub connections: usize,
    /// Handshakes in flight per core.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Connection attempts per second, all cores together; 0 = as fast as the
    /// concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to hold all connections open before closing.
    #[arg(long, value_parser = parse_secs, default_value = "2")]
    pub hold: Duration,
    /// Broker process id: report its memory from /proc/PID/status.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Every CONNECT carries a QoS 0 will on PREFIX/<n> (what a will costs a CONNECT).
    #[arg(long)]
    pub will_prefix: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct RetainedArgs {
    /// Retained messages stored (one topic each).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub messages: usize,
    /// New subscribers that each get every retained message replayed.
    #[arg(long, short = 's', default_value_t = 10)]
    pub subscribers: usize,
    /// Topic prefix; topics are PREFIX/%i and subscribers use PREFIX/#.
    #[arg(long, default_value = "bench/retained")]
    pub prefix: String,
    /// Leave the retained messages on the broker afterwards.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct Qos2FanoutArgs {
    #[arg(long, default_value_t = 100)]
    pub publishers: usize,
    #[arg(long, short = 's', default_value_t = 2000)]
    pub subscribers: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: Common,
}

/// Which brokers `compare` and `sweep` start, from where, and where results go.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// Brokers to run, in order: ringmq, mosquitto, mosquitto-nodelay (Mosquitto with
    /// set_tcp_nodelay true), flashmq, rumqttd. One whose binary is missing is skipped
    /// with a line saying so.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ringmq,mosquitto,mosquitto-nodelay,flashmq,rumqttd"
    )]
    pub brokers: Vec<String>,
    /// ringmq binary.
    #[arg(long, default_value = "target/release/ringmq")]
    pub ringmq_bin: String,
    /// mosquitto binary (default: `mosquitto` on PATH or in /usr/sbin).
    #[arg(long)]
    pub mosquitto_bin: Option<String>,
    /// FlashMQ binary (default: `flashmq` on PATH; docs/benchmarking.md says how to build it).
    #[arg(long)]
    pub flashmq_bin: Option<String>,
    /// rumqttd binary (default: `rumqttd` on PATH).
    #[arg(long)]
    pub rumqttd_bin: Option<String>,
    /// CPU list the brokers are pinned to with taskset.
    #[arg(long, default_value = "0")]
    pub broker_cpus: String,
    /// Server certificate (PEM) every broker gets for its TLS, ws and wss listeners (the
    /// same for all; give the scenario --transport tls|ws|wss and --ca for the client).
    /// It must name 127.0.0.1 (IP SAN) or the scenario passes --sni.
    #[arg(long)]
    pub server_cert: Option<String>,
    /// The server certificate's private key (PEM).
    #[arg(long)]
    pub server_key: Option<String>,
    /// Also write `<date>-<scenario>.md` and `<date>-<scenario>.svg` into this directory
    /// (nothing is written by default: results go to stdout).
    #[arg(long)]
    pub results_dir: Option<String>,
    /// Write the SVG chart to this file (in addition to --results-dir).
    #[arg(long)]
    pub svg: Option<String>,
    /// Added to the results file name: `<date>-<scenario>-<label>.md`.
    #[arg(long)]
    pub label: Option<String>,
    /// Free-text note put in the results header (e.g. "machine shared with other jobs").
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Rates per publisher to run, msg/s, in order (each a full run of the scenario).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000,10000,20000,50000"
    )]
    pub rates: Vec<f64>,
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args)]
pub struct SelfcheckArgs {
    /// CPU for the fixture relay (it stands where a broker would be).
    #[arg(long, default_value = "0")]
    pub relay_cpu: String,
    /// Also write `<date>-selfcheck.md` (with the machine header) into this directory.
    #[arg(long)]
    pub results_dir: Option<String>,
    /// Free-text note for the results header.
    #[arg(long)]
    pub note: Option<String>,
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
}

#[derive(Debug, Clone, Args)]
pub struct TakeoverArgs {
    /// The nodes' MQTT listeners, HOST:PORT, comma separated (at least two); the session
    /// starts on the node after --pub-node and moves round the list.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Takeovers to make (CONNECTs after the first).
    #[arg(long, default_value_t = 100)]
    pub moves: usize,
    /// Time on each node before the next move, seconds.
    #[arg(long, value_parser = parse_secs, default_value = "0.2")]
    pub dwell: Duration,
    /// The publisher's node, an index into --nodes (0-based).
    #[arg(long, default_value_t = 0)]
    pub pub_node: usize,
    /// Messages per second the publisher sends to the session's topic (0: none).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// QoS of the publishes and of the session's subscription.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub qos: u8,
    /// MQTT protocol version: 5 or 3.1.1.
    #[arg(long, default_value = "5", value_parser = parse_version)]
    pub mqtt: MqttVersion,
    /// Payload size in bytes (at least 20).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Most publishes awaiting their acknowledgement.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// After the last move: longest wait for the acknowledged messages still missing, seconds.
    #[arg(long, value_parser = parse_secs, default_value = "5")]
    pub drain: Duration,
    /// Session Expiry Interval of the session's CONNECTs (MQTT 5), seconds.
    #[arg(long, default_value_t = 300)]
    pub session_expiry: u32,
    /// The session's client identifier (default rb-takeover-<pid>).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The session's topic (default bench/takeover/<pid>).
    #[arg(long)]
    pub topic: Option<String>,
    /// Pin the generator to this CPU (default: not pinned).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
