//! Clients we did not write, driven against cluster nodes: `mosquitto_sub` whose lines arrive
//! on a channel, `mosquitto_pub` publishes acknowledged one by one, and waits on node links.

use super::{Cluster, Node};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound for links, leadership and deliveries to settle.
pub const SETTLE: Duration = Duration::from_secs(30);

/// `mosquitto_sub` connected to one node; its output lines on a channel. Killed by PID on drop.
pub struct Sub {
    child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Sub {
    pub fn start(node: &Node, id: &str, topic: &str, extra: &[&str]) -> Sub {
        let child = Command::new("mosquitto_sub")
            .args(["-h", &node.mqtt().ip().to_string()])
            .args(["-p", &node.mqtt().port().to_string()])
            .args(["-i", id, "-V", "mqttv5", "-t", topic, "-v"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        Sub::adopt(child)
    }

    /// A `mosquitto_sub -v` started elsewhere (stdout piped).
    pub fn adopt(mut child: Child) -> Sub {
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines }
    }

    /// Lines received within `within`.
    pub fn lines_for(&self, within: Duration) -> Vec<String> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node's links to the others are up.
pub fn wait_links(c: &Cluster, ids: &[u64]) {
    crate::common::check_for_blocking(SETTLE, "every node link up", || {
        ids.iter()
            .all(|id| {
                c.get(*id).status().is_some_and(|s| {
                    s["links"].as_array().is_some_and(|ls| {
                        ls.iter()
                            .filter(|l| ids.contains(&l["peer"].as_u64().unwrap_or(0)))
                            .all(|l| l["up"] == true)
                    })
                })
            })
            .then_some(())
    });
}

/// `mosquitto_pub -q 1` of each payload to `node` (one connection each: its exit status says
/// the broker acknowledged it).
pub fn publish_acked(node: &Node, id: &str, topic: &str, payloads: &[String]) {
    for m in payloads {
        let st = Command::new("mosquitto_pub")
            .args(["-h", &node.mqtt().ip().to_string()])
            .args(["-p", &node.mqtt().port().to_string()])
            .args(["-i", id, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", m])
            .status()
            .expect("mosquitto_pub");
        assert!(st.success(), "{m} not acknowledged by node {}", node.id);
    }
}

/// Payloads received by `sub` on `topic` until `want` all arrived (or `within` passed).
pub fn collect(sub: &Sub, topic: &str, want: &[String], within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    let mut got: Vec<String> = Vec::new();
    while !want.iter().all(|w| got.contains(w)) {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        if let Ok(l) = sub.lines.recv_timeout(left) {
            if let Some(p) = l.strip_prefix(&format!("{topic} ")) {
                got.push(p.to_string());
            }
        }
    }
    got
}

/// Whether `node` sees its link to `peer` up.
pub fn link_up(c: &Cluster, node: u64, peer: u64) -> Option<bool> {
    let s = c.get(node).status()?;
    let l = s["links"]
        .as_array()?
        .iter()
        .find(|l| l["peer"] == peer)?
        .clone();
    l["up"].as_bool()
}

/// A child process killed (by its PID) when the test ends, passing or not.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
