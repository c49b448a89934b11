//! Shared by the ctl_* and metrics_* tests: a fake [`AdminBackend`] for protocol,
//! permission and rendering tests (end-to-end tests use the real broker), and
//! helpers to run the `ringmq` binary.
#![allow(dead_code)]

use ringmq_broker::admin::backend::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A backend with two clients, one retained message and two shards of counters.
#[derive(Default)]
pub struct FakeBackend {
    pub kicked: Mutex<Vec<String>>,
    pub drained: AtomicBool,
    pub shut_down: AtomicBool,
    pub metrics_calls: AtomicUsize,
}

pub fn client(id: &str, shard: usize) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        shard,
        connected: true,
        protocol: 5,
        peer: Some("127.0.0.1:50000".into()),
        keep_alive: 30,
        ..Default::default()
    }
}

impl AdminBackend for FakeBackend {
    fn clients(
        &self,
        shard: Option<usize>,
        pattern: Option<&str>,
    ) -> Result<Vec<ClientInfo>, AdminError> {
        let all = [
            client("sensor-1", 0),
            client("sensor-2", 1),
            client("app", 1),
        ];
        Ok(all
            .into_iter()
            .filter(|c| shard.is_none_or(|s| s == c.shard))
            .filter(|c| pattern.is_none_or(|p| ringmq_broker::admin::id_matches(p, &c.client_id)))
            .collect())
    }
    fn client_show(&self, id: &str) -> Result<ClientInfo, AdminError> {
        self.clients(None, None)?
            .into_iter()
            .find(|c| c.client_id == id)
            .ok_or_else(|| AdminError::not_found(format!("no session for client \"{id}\"")))
    }
    fn kick(&self, id: &str) -> Result<(), AdminError> {
        self.client_show(id)?;
        self.kicked.lock().unwrap().push(id.into());
        Ok(())
    }
    fn sessions(&self) -> Result<Vec<ClientInfo>, AdminError> {
        self.clients(None, None)
    }
    fn subscriptions(&self, topic: Option<&str>) -> Result<Vec<SubscriptionInfo>, AdminError> {
        let s = SubscriptionInfo {
            client_id: "app".into(),
            filter: "a/+".into(),
            qos: 1,
            ..Default::default()
        };
        Ok(if topic.is_none_or(|t| t.starts_with("a/")) {
            vec![s]
        } else {
            vec![]
        })
    }
    fn retained_list(&self, _filter: &str, limit: usize) -> Result<Vec<RetainedInfo>, AdminError> {
        let r = RetainedInfo {
            topic: "a/b".into(),
            qos: 0,
            payload_len: 3,
        };
        Ok(vec![r].into_iter().take(limit).collect())
    }
    fn retained_delete(&self, topic: &str) -> Result<(), AdminError> {
        if topic == "a/b" {
            Ok(())
        } else {
            Err(AdminError::not_found(format!(
                "no retained message on \"{topic}\""
            )))
        }
    }
    fn metrics(&self) -> Result<MetricsSnapshot, AdminError> {
        self.metrics_calls.fetch_add(1, Ordering::SeqCst);
        let shard = |i: usize| ShardMetrics {
            shard: i,
            connections: 1 + i as u64,
            connections_total: 10,
            messages_in: [5, 6, 7],
            messages_out: [8, 9, 10],
            publish_bytes_in: Some([50, 60, 70]),
            closes: BTreeMap::from([
                ("keep_alive_timeout".into(), 2),
                ("slow_consumer".into(), 1),
            ]),
            drops: BTreeMap::from([("qos0_buffer_full".into(), 4)]),
            refusals: BTreeMap::from([("quota_exceeded".into(), 3)]),
            auth: BTreeMap::from([("password".into(), 2), ("bad_password".into(), 1)]),
            busy_ratio: 0.25,
            storage_commit: Some(Histogram {
                buckets: vec![(0.001, 3), (0.01, 5)],
                sum_seconds: 0.02,
                count: 6,
            }),
            storage_ops: Some([40, 2 + i as u64, 7, 1]),
            ..Default::default()
        };
        Ok(MetricsSnapshot {
            uptime_secs: 12.5,
            draining: false,
            shards: vec![shard(0), shard(1)],
            ..Default::default()
        })
    }
    fn drain(&self) -> Result<(), AdminError> {
        self.drained.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn shutdown(&self) -> Result<(), AdminError> {
        self.shut_down.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A fresh private directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `ringmq ARGS` to completion: (exit code, stdout, stderr).
pub fn ringmq(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .output()
        .expect("run ringmq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `ringmq` binary on 127.0.0.1:0 with its own data dir; killed by PID on drop.
pub struct OpsBroker {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    pub dir: PathBuf,
}

impl OpsBroker {
    /// Starts `ringmq --listen mqtt://127.0.0.1:0 --allow-anonymous true --cores 2 --data-dir
    /// DIR --durability none EXTRA` and waits (bounded) for its ready lines.
    pub fn start(name: &str, extra: &[&str]) -> OpsBroker {
        use std::io::BufRead;
        let dir = scratch(name);
        let mut args = vec![
            "--listen",
            "mqtt://127.0.0.1:0",
            "--allow-anonymous",
            "true",
            "--cores",
            "2",
            "--durability",
            "none",
        ];
        if !extra.contains(&"--log-level") {
            args.extend(["--log-level", "warn"]);
        }
        let d = dir.to_str().unwrap().to_string();
        args.extend(["--data-dir", d.as_str()]);
        args.extend_from_slice(extra);
        let want_metrics = extra.contains(&"--metrics-listen");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(if extra.contains(&"--log-format") {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::inherit()
            })
            .spawn()
            .expect("spawn ringmq");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || (want_metrics && metrics.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("ringmq did not print its ready lines within 15 s");
            };
            if let Some(a) = line.strip_prefix("ringmq listening on mqtt://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("ringmq metrics on http://") {
                metrics = Some(a.trim_end_matches("/metrics").parse().unwrap());
            }
        }
        OpsBroker {
            child,
            addr: addr.unwrap(),
            metrics,
            dir,
        }
    }

    /// `ringmq ctl --data-dir DIR ARGS`.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let d = self.dir.to_str().unwrap().to_string();
        let mut all = vec!["ctl", "--data-dir", d.as_str()];
        all.extend_from_slice(args);
        ringmq(&all)
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, deadline: std::time::Duration) -> Option<i32> {
        let end = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    }
}

impl Drop for OpsBroker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` every 10 ms until it is true, or panics naming `what`.
pub fn check_for(deadline: std::time::Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + deadline;
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
