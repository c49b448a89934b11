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

    /// The first line within `first` (a deadline, not a pause: a loaded machine may take
    /// seconds), then whatever else arrives within `more` of it.
    pub fn lines_from_first(&self, first: Duration, more: Duration) -> Vec<String> {
        match self.lines.recv_timeout(first) {
            Ok(l) => {
                let mut out = vec![l];
                out.extend(self.lines_for(more));
                out
            }
            Err(_) => Vec::new(),
        }
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

/// `mosquitto_pub -q 1` of each payload to `node` (one connection each), each acknowledged
/// with success.
pub fn publish_acked(node: &Node, id: &str, topic: &str, payloads: &[String]) {
    for m in payloads {
        let err = publish_one(node, id, topic, m);
        assert!(
            err.is_empty(),
            "{m} not acknowledged by node {}: {err}",
            node.id
        );
    }
}

/// One v5 QoS 1 `mosquitto_pub`; its stderr, empty when the broker acknowledged with
/// success (on a refusal mosquitto_pub warns "Publish 1 failed" and still exits 0).
pub fn publish_one(node: &Node, id: &str, topic: &str, m: &str) -> String {
    let out = Command::new("mosquitto_pub")
        .args(["-h", &node.mqtt().ip().to_string()])
        .args(["-p", &node.mqtt().port().to_string()])
        .args(["-i", id, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", m])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {m} to node {}",
        node.id
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
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
