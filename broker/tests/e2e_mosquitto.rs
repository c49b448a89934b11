//! End to end with Debian's mosquitto_pub / mosquitto_sub against the `ringmq` binary started
//! on port 0 with 2 shards: MQTT 3.1.1 and 5.0, QoS 0/1/2, retained, will, SIGTERM.
//! Every child is bounded (`-W`, `-C`, deadlines) and stopped by PID (its `Child`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::BinBroker;

const V311: &str = "mqttv311";
const V5: &str = "mqttv5";
const V31: &str = "mqttv31";

/// The clients are a test requirement (`.ci/run` installs Debian's mosquitto-clients).
fn have_mosquitto() -> bool {
    let ok = Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "mosquitto_sub not found: apt-get install mosquitto-clients (as .ci/run does)"
    );
    ok
}

/// A running mosquitto_sub whose stdout lines arrive on a channel. Messages print as
/// `MSG|topic|qos|retain|payload`; `-d` debug lines tell when it is subscribed.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn spawn(port: u16, version: &str, extra: &[&str]) -> Sub {
        Sub::spawn_fmt(port, version, "MSG|%t|%q|%r|%p", extra)
    }

    /// Like `spawn` with another `-F` output format (it must start with `MSG|`).
    fn spawn_fmt(port: u16, version: &str, format: &str, extra: &[&str]) -> Sub {
        let port = port.to_string();
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            version,
            "-d",
            "-W",
            "10",
        ];
        args.extend_from_slice(&["-F", format]);
        args.extend_from_slice(extra);
        // stdbuf: line-buffered stdout through the pipe (it execs, so the PID is mosquitto_sub's).
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg("mosquitto_sub")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines: rx }
    }

    /// First line satisfying `pred` within `within`.
    fn line_where(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Some(l),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn wait_subscribed(&self) {
        self.line_where(Duration::from_secs(5), |l| l.contains("received SUBACK"))
            .expect("mosquitto_sub got its SUBACK");
    }

    fn wait_connected(&self) {
        self.line_where(Duration::from_secs(5), |l| l.contains("received CONNACK"))
            .expect("mosquitto_sub got its CONNACK");
    }

    /// Next message line, split into (topic, qos, retain, payload).
    fn message(&self, what: &str) -> (String, String, String, String) {
        let l = self
            .line_where(Duration::from_secs(5), |l| l.starts_with("MSG|"))
            .unwrap_or_else(|| panic!("mosquitto_sub printed no message: {what}"));
        let mut it = l.splitn(5, '|').skip(1).map(str::to_string);
        (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap_or_default(),
        )
    }

    /// Waits (bounded) for mosquitto_sub to exit, e.g. after `-C` messages.
    fn wait_exit(&mut self) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs mosquitto_pub to completion (bounded by 10 s); panics if it fails.
fn publish(port: u16, version: &str, args: &[&str]) {
    let port = port.to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_pub");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "mosquitto_pub {args:?} failed: {status}");
            return;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_pub {args:?} did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn qos_round_trip(version: &str) {
    if !have_mosquitto() {
        return;
    }
    let broker = BinBroker::start(2);
    for q in ["0", "1", "2"] {
        let topic = format!("e2e/{version}/q{q}");
        let mut sub = Sub::spawn(
            broker.port(),
            version,
            &["-t", &topic, "-q", "2", "-C", "1"],
        );
        sub.wait_subscribed();
        publish(
            broker.port(),
            version,
            &["-t", &topic, "-q", q, "-m", "hello"],
        );
        let (t, qos, retain, payload) = sub.message("QoS round trip");
        assert_eq!(
            (t.as_str(), qos.as_str(), retain.as_str(), payload.as_str()),
            (topic.as_str(), q, "0", "hello")
        );
        assert!(sub.wait_exit(), "mosquitto_sub exits 0 after -C 1");
    }
}

#[test]
fn e2e_qos_0_1_2_v311() {
    qos_round_trip(V311);
}

#[test]
fn e2e_qos_0_1_2_v5() {
    qos_round_trip(V5);
}

/// MQTT 3.1 (`MQIsdp`, level 3), which the broker also speaks.
#[test]
fn e2e_qos_0_1_2_v31() {
    qos_round_trip(V31);
}

fn retained(version: &str) {
    if !have_mosquitto() {
        return;
    }
    let broker = BinBroker::start(2);
    let topic = format!("e2e/{version}/retained");
    publish(
        broker.port(),
        version,
        &["-t", &topic, "-q", "1", "-r", "-m", "kept"],
    );
    let mut sub = Sub::spawn(
        broker.port(),
        version,
        &["-t", &topic, "-q", "1", "-C", "1"],
    );
    let (t, _, retain, payload) = sub.message("retained on subscribe");
    assert_eq!(
        (t.as_str(), retain.as_str(), payload.as_str()),
        (topic.as_str(), "1", "kept")
    );
    assert!(sub.wait_exit());
    // An empty retained message deletes it: a new subscriber gets nothing before -W expires.
    publish(
        broker.port(),
        version,
        &["-t", &topic, "-q", "1", "-r", "-n"],
    );
    let sub = Sub::spawn(
        broker.port(),
        version,
        &["-t", &topic, "-q", "1", "-C", "1"],
    );
    sub.wait_subscribed();
    assert!(
        sub.line_where(Duration::from_millis(500), |l| l.starts_with("MSG|"))
            .is_none(),
        "retained deleted"
    );
}

#[test]
fn e2e_retained_v311() {
    retained(V311);
}

#[test]
fn e2e_retained_v5() {
    retained(V5);
}

fn will(version: &str) {
    if !have_mosquitto() {
        return;
    }
    let broker = BinBroker::start(2);
    let will_topic = format!("e2e/{version}/will");
    let watcher = Sub::spawn(
        broker.port(),
        version,
        &["-t", &will_topic, "-q", "1", "-C", "1"],
    );
    watcher.wait_subscribed();
    let holder = Sub::spawn(
        broker.port(),
        version,
        &[
            "-t",
            "e2e/none",
            "--will-topic",
            &will_topic,
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
        ],
    );
    holder.wait_subscribed();
    drop(holder); // SIGKILL by PID: the connection drops without DISCONNECT
    let (t, _, _, payload) = watcher.message("will after abnormal loss");
    assert_eq!((t.as_str(), payload.as_str()), (will_topic.as_str(), "bye"));
}

#[test]
fn e2e_will_v311() {
    will(V311);
}

#[test]
fn e2e_will_v5() {
    will(V5);
}

#[test]
fn e2e_v5_user_property_forwarded() {
    if !have_mosquitto() {
        return;
    }
    let broker = BinBroker::start(2);
    let sub = Sub::spawn_fmt(broker.port(), V5, "MSG|%P|%p", &["-t", "e2e/up", "-C", "1"]);
    sub.wait_subscribed();
    publish(
        broker.port(),
        V5,
        &[
            "-t",
            "e2e/up",
            "-m",
            "p",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    );
    let l = sub
        .line_where(Duration::from_secs(5), |l| l.starts_with("MSG|"))
        .expect("message");
    assert_eq!(l, "MSG|k:v|p");
}

#[test]
fn e2e_sigterm_exits_0() {
    let mut broker = BinBroker::start(2);
    let status = broker
        .terminate(Duration::from_secs(10))
        .expect("ringmq exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
}
