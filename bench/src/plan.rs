//! Turning a scenario's options into a [`Plan`]: who publishes where, who subscribes to
//! what, the resolved load, and which publishers each subscriber should hear from.

use crate::cli::{BrokerArgs, LoadArgs, MqttVersion, RunArgs, Scenario};
use crate::payload::{expand, filter_matches, HEADER_LEN};
use ringmq_codec::{ProtocolVersion, QoS};
use std::collections::HashMap;
use std::time::Duration;

/// Load with every default applied.
#[derive(Debug, Clone)]
pub struct Load {
    pub qos: QoS,
    pub payload: usize,
    /// Messages/s per publisher; 0 = unlimited.
    pub rate: f64,
    pub duration: Duration,
    pub count: Option<u64>,
    pub warmup: Duration,
    pub drain: Duration,
    /// QoS 1/2 window per publisher; None = 1000 capped by the broker's Receive Maximum
    /// (MQTT 5), or [`V3_INFLIGHT`] for 3.1.1, which has no way to announce a limit.
    pub inflight: Option<u16>,
    /// Fixed rate only: the wake-up grid of publishers, ns (0 = a wake-up per message),
    /// see [`DEFAULT_PACE_SLOT_US`].
    pub pace_slot_ns: u64,
    /// Fixed rate, QoS 0: subscribers are read on the pace grid, not woken per delivery,
    /// and latency ends at the kernel's receive timestamp (off: `--wake-on-delivery`).
    pub read_on_tick: bool,
    /// Latency ends at the kernel's receive timestamp (with `read_on_tick`, or
    /// `--kernel-rx-stamps`).
    pub rx_stamps: bool,
    /// Closed-loop window for unlimited publishers (0 = open loop); None = automatic,
    /// see [`auto_window`].
    pub window: Option<u64>,
    /// `SO_RCVLOWAT` for QoS 0 subscribers at unlimited rate (1 = off), see
    /// [`DEFAULT_RCVLOWAT`].
    pub rcvlowat: usize,
    /// Test hook: ns of busy-waiting per received message (0 = none).
    pub spin_ns: u64,
}

/// Default `SO_RCVLOWAT` of QoS 0 subscribers in unlimited-rate runs: a subscriber is
/// woken once this many bytes wait (or, for a probe, half what its publishers' windows
/// allow, whichever is less), so the generator reads in batches instead of paying a
/// syscall and an ACK per message or two when it is faster than the broker.
pub const DEFAULT_RCVLOWAT: usize = 16 * 1024;

/// Default wake-up grid of fixed-rate publishers, µs. Each wake-up of the generator's
/// executor costs more than the sends it makes (io_uring enter, timer re-arm, and on a
/// VM the idle exit and re-entry: 15-30 µs measured); one per message made the pacer,
/// not the broker, the limit at 50k msg/s. Publishers on a core whose next messages
/// fall due in the same slot wake together at its end; every message is stamped with
/// its slot's end, its scheduled send time, so a late generator shows as latency
/// (coordinated omission), and the offered rate is unchanged (a message is at most one
/// slot behind the exact spacing).
pub const DEFAULT_PACE_SLOT_US: u64 = 250;

/// Per-scenario defaults; command line values win.
pub struct Defaults {
    pub qos: u8,
    pub rate: f64,
    pub duration: f64,
    pub warmup: f64,
}

pub const THROUGHPUT: Defaults = Defaults {
    qos: 0,
    rate: 0.0,
    duration: 10.0,
    warmup: 2.0,
};

impl Load {
    pub fn resolve(a: &LoadArgs, d: &Defaults) -> Result<Load, String> {
        let payload = a.payload.unwrap_or(64);
        if payload < HEADER_LEN {
            return Err(format!("--payload must be at least {HEADER_LEN} bytes"));
        }
        let rate = a.rate.unwrap_or(d.rate);
        if !(0.0..=1e9).contains(&rate) {
            return Err("--rate must be >= 0".into());
        }
        let qos = qos_from(a.qos.unwrap_or(d.qos));
        let pace_slot_ns = a
            .pace_slot_us
            .unwrap_or(DEFAULT_PACE_SLOT_US)
            .checked_mul(1000)
            .filter(|&ns| ns <= 1_000_000_000)
            .ok_or("--pace-slot-us must be at most 1000000")?;
        let read_on_tick =
            rate > 0.0 && pace_slot_ns > 0 && qos == QoS::AtMostOnce && !a.wake_on_delivery;
        Ok(Load {
            qos,
            payload,
            rate,
            duration: a.duration.unwrap_or(Duration::from_secs_f64(d.duration)),
            count: a.count,
            warmup: a.warmup.unwrap_or(Duration::from_secs_f64(d.warmup)),
            drain: a.drain.unwrap_or(Duration::from_secs(5)),
            inflight: a.inflight.map(|n| n.max(1)),
            pace_slot_ns,
            read_on_tick,
            rx_stamps: read_on_tick || a.kernel_rx_stamps,
            window: a.window,
            rcvlowat: a.rcvlowat.unwrap_or(DEFAULT_RCVLOWAT).max(1),
            spin_ns: a.spin_ns.unwrap_or(0),
        })
    }
}

/// Automatic closed-loop window for a publisher heard by `fanout` subscribers whose
/// probe subscriber hears `inbound` publishers, with `frame` bytes per message: at most
/// about 128k deliveries in flight per publisher and 512 KiB in flight towards the probe
/// (half of ringmq's default 1 MiB outbound buffer, beyond which a broker may drop QoS 0),
/// between 16 and 1024 messages. Large enough that the broker never idles waiting for
/// the generator to report progress (with 16 for a 1 -> 1000 fan-out it did: issue 16).
pub fn auto_window(fanout: usize, inbound: usize, frame: usize) -> u64 {
    let by_fanout = 131_072 / fanout.max(1) as u64;
    let by_inbound = (512 * 1024 / frame.max(1) / inbound.max(1)) as u64;
    by_fanout.min(by_inbound).clamp(16, 1024)
}

/// Default QoS 2 window for MQTT 3.1.1 publishers: a broker keeps every incoming QoS 2
/// packet id until its PUBREL and bounds how many (EMQX's `max_awaiting_rel` is 100;
/// Mosquitto drops beyond `max_queued_messages`), and 3.1.1 cannot announce the bound.
pub const V3_INFLIGHT: u16 = 20;

/// Default QoS 1 window for MQTT 3.1.1 publishers. An incoming QoS 1 message is
/// acknowledged and forgotten, so brokers keep no per-client state for it; with 20 the
/// generator, not the broker, was the limit (50 QoS 1 publishers against ringmq on one
/// core: 1.13M msg/s at 835 ns of generator CPU each, 4.5M at 187 ns with 250), as over
/// MQTT 5, where the window is the broker's Receive Maximum (ringmq: 256).
pub const V3_INFLIGHT_QOS1: u16 = 200;

/// Default QoS 1 window for MQTT 3.1.1 publishers nobody subscribes to (publish-only
/// runs, open loop), as over MQTT 5 before the Receive Maximum cap. With subscribers the
/// broker's own per-subscriber window (ringmq's `--receive-maximum` and Mosquitto's
/// `max_inflight_messages`, 256) bounds the flow and a larger publisher window only adds
/// queueing (50 QoS 1 pairs against ringmq: 1.39M msg/s, p50 9 ms with 200; 1.37M, p50
/// 35 ms with 1000). Without them the acknowledgement round trip is the only bound, and
/// 200 left the generator 83-87% busy (50 publishers against ringmq: 4.0M msg/s at 211 ns
/// of generator CPU each with 200, 5.25M at 112 ns and 59% busy with 1000).
pub const V3_INFLIGHT_QOS1_OPEN: u16 = 1000;

/// Default QoS 1/2 window of a publisher (`heard`: some subscriber hears it), before the
/// broker's Receive Maximum caps it (MQTT 5) and unless `--inflight` says otherwise.
pub fn default_inflight(version: ProtocolVersion, qos: QoS, heard: bool) -> u16 {
    match (version, qos) {
        (ProtocolVersion::V5, _) => V5_INFLIGHT,
        (_, QoS::AtLeastOnce) if !heard => V3_INFLIGHT_QOS1_OPEN,
        (_, QoS::AtLeastOnce) => V3_INFLIGHT_QOS1,
        _ => V3_INFLIGHT,
    }
}

/// Default QoS 1/2 window for MQTT 5 publishers, before the Receive Maximum cap.
pub const V5_INFLIGHT: u16 = 1000;

pub fn qos_from(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

pub fn protocol(v: MqttVersion) -> ProtocolVersion {
    match v {
        MqttVersion::V311 => ProtocolVersion::V3_1_1,
        MqttVersion::V5 => ProtocolVersion::V5,
    }
}

/// A message scenario ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: String,
    pub broker: BrokerArgs,
    pub run: RunArgs,
    pub load: Load,
    /// Topic of each publisher (index = global publisher id).
    pub pub_topics: Vec<String>,
    /// Filter of each subscriber.
    pub sub_filters: Vec<String>,
}

impl Plan {
    /// Builds the plan of a message scenario (`conn` and `retained` have their own runners).
    pub fn from_scenario(s: &Scenario) -> Result<Plan, String> {
        let (load, pubs, subs) = match s {
            Scenario::Pairs(a) => {
                let t: Vec<String> = (0..a.pairs).map(|i| format!("bench/pairs/{i}")).collect();
                (Load::resolve(&a.load, &THROUGHPUT)?, t.clone(), t)
            }
            Scenario::Fanout(a) => (
                Load::resolve(&a.load, &THROUGHPUT)?,
                vec!["bench/fanout".to_string(); a.publishers],
                vec!["bench/fanout".to_string(); a.subscribers],
            ),
            Scenario::Fanin(a) => (
                Load::resolve(&a.load, &THROUGHPUT)?,
                (0..a.publishers)
                    .map(|i| format!("bench/fanin/{i}"))
                    .collect(),
                vec!["bench/fanin/+".to_string()],
            ),
            Scenario::Pubsub(a) => (
                Load::resolve(&a.load, &THROUGHPUT)?,
                (0..a.publishers)
                    .map(|i| expand(&a.pub_topic, i, a.modulo))
                    .collect(),
                (0..a.subscribers)
                    .map(|i| expand(&a.sub_topic, i, a.modulo))
                    .collect(),
            ),
            Scenario::Qos2Fanout(a) => {
                let d = Defaults {
                    qos: 2,
                    rate: 1.0,
                    duration: 30.0,
                    warmup: 3.0,
                };
                (
                    Load::resolve(&a.load, &d)?,
                    (0..a.publishers).map(|i| format!("bench/q2/{i}")).collect(),
                    vec!["bench/q2/+".to_string(); a.subscribers],
                )
            }
            Scenario::Conn(_) | Scenario::Retained(_) => {
                return Err(format!("{} is not a message scenario", s.name()))
            }
        };
        if pubs.is_empty() && subs.is_empty() {
            return Err("nothing to do: no publishers and no subscribers".into());
        }
        let c = s.common();
        Ok(Plan {
            scenario: s.name().to_string(),
            broker: {
                let mut b = c.broker.clone();
                b.apply_url();
                b
            },
            run: c.run.clone(),
            load,
            pub_topics: pubs,
            sub_filters: subs,
        })
    }

    /// For each subscriber, the sorted publishers whose topic its filter matches.
    /// Identical filters are matched once.
    pub fn matches(&self) -> Vec<Vec<u32>> {
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        self.sub_filters
            .iter()
            .map(|f| {
                cache
                    .entry(f.as_str())
                    .or_insert_with(|| {
                        self.pub_topics
                            .iter()
                            .enumerate()
                            .filter(|(_, t)| filter_matches(f, t))
                            .map(|(i, _)| i as u32)
                            .collect()
                    })
                    .clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_window_bounds_deliveries_and_inbound_messages() {
        assert_eq!(auto_window(1, 1, 90), 1024); // a 1:1 pair
        assert_eq!(auto_window(1000, 1, 90), 131); // 1 -> 1000 fan-out
        assert_eq!(auto_window(1, 100, 90), 58); // 100 -> 1 fan-in: 512 KiB to the probe
        assert_eq!(auto_window(1, 1, 16 * 1024), 32); // 16 KiB payloads
        assert_eq!(auto_window(100_000, 1, 90), 16); // never below 16
    }
}
