//! Persistence harness: the `ringmq` binary on a data dir that outlives it (restart, SIGKILL),
//! its stderr kept for assertions, and raw-codec clients that count acknowledgements exactly.
//!
//! - [`DataDir`]: a scratch data dir removed on drop (shared by several broker runs).
//! - [`Durable`]: one `ringmq --data-dir DIR --durability MODE` process; `kill9()` is SIGKILL by
//!   PID; [`launch`] also reports a broker that exits before listening (refused data dir).
//! - [`persistent_connect`], [`subscribe`], [`Inbox`]: a persistent subscriber that acknowledges
//!   everything and records what it got, in order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{
    Connect, Disconnect, DisconnectProperties, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscribeProperties, SubscriptionOptions,
};

use super::raw::{connect_packet, filter, pid, resp, RawEv};
use super::{Raw, WAIT};

/// How long a broker may take to print its listening line (recovery included).
pub const START: Duration = Duration::from_secs(20);

/// A scratch data dir kept across broker runs; removed when dropped.
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            path: super::broker::scratch_dir(),
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a launch gave: a listening broker, or the exit of one that refused to start.
pub enum Launched {
    Up(Durable),
    Exited { status: ExitStatus, stderr: String },
}

/// A `ringmq` process on a caller-owned data dir. Killed (SIGKILL, by PID) when dropped.
pub struct Durable {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// The metrics listener, once its line was printed (`--metrics-listen`).
    metrics: Arc<Mutex<Option<SocketAddr>>>,
}

/// `ringmq --listen mqtt://127.0.0.1:0 (mqtts:// over TLS) --allow-anonymous true --cores N --data-dir DIR
/// --durability MODE` plus `extra` (these tests connect without user names).
pub fn args(dir: &Path, cores: usize, durability: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = super::broker::listen_args();
    a.extend(
        [
            "--cores",
            &cores.to_string(),
            "--durability",
            durability,
            "--sys-interval-secs",
            "0",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.push(dir.to_string_lossy().into_owned());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Starts `ringmq` with `args`; waits (bounded by [`START`]) for its listening line or its exit.
pub fn launch(args: &[String]) -> Launched {
    launch_cmd(Command::new(env!("CARGO_BIN_EXE_ringmq")).args(args))
}

/// As [`launch`], with the command given whole (e.g. `ip netns exec NS ringmq ...`, which
/// execs `ringmq`, so the PID is the broker's).
pub fn launch_cmd(cmd: &mut Command) -> Launched {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    let err_done = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let metrics = Arc::new(Mutex::new(None));
    let metrics_line = metrics.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = super::broker::listening_addr(&line) {
                let _ = tx.send(rest.to_string());
            } else if let Some(rest) = line.trim().strip_prefix("ringmq metrics on http://") {
                *metrics_line.lock().unwrap() = rest.trim_end_matches("/metrics").parse().ok();
            }
        }
    });
    let end = Instant::now() + START;
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(10)) {
            let addr = addr.parse().expect("listening line has HOST:PORT");
            return Launched::Up(Durable {
                child,
                addr,
                stderr,
                metrics,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = err_done.join();
            let stderr = stderr.lock().unwrap().clone();
            return Launched::Exited { status, stderr };
        }
        if Instant::now() >= end {
            let threads = thread_states(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.lock().unwrap().clone();
            panic!(
                "ringmq neither listened nor exited within {START:?}; threads (name state \
                 wchan): {threads}; stderr:\n{stderr}"
            );
        }
    }
}

/// Where each thread of `pid` is (name, state, kernel wait channel), to tell a hang from a
/// slow disk when a start times out.
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "?".into();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split(' ').next())
            .unwrap_or("?")
            .to_string();
        out.push(format!(
            "{} {state} {}",
            read("comm").trim(),
            read("wchan").trim()
        ));
    }
    out.join(", ")
}

impl Durable {
    /// Starts a broker on `dir` and expects it to listen.
    pub fn start(dir: &DataDir, cores: usize, durability: &str) -> Durable {
        Durable::start_args(&args(&dir.path, cores, durability, &[]))
    }

    pub fn start_args(args: &[String]) -> Durable {
        match launch(args) {
            Launched::Up(b) => b,
            Launched::Exited { status, stderr } => {
                panic!("ringmq exited ({status}) instead of listening; stderr:\n{stderr}")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of the metric sample starting with `sample` (e.g.
    /// `ringmq_x_total{shard="0"}`), from `GET /metrics`; the broker must run with
    /// `--metrics-listen 127.0.0.1:0`. None if the family is absent.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let end = Instant::now() + WAIT;
        let addr = loop {
            if let Some(a) = *self.metrics.lock().unwrap() {
                break a;
            }
            assert!(Instant::now() < end, "no metrics line on stdout");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut s = std::net::TcpStream::connect(addr).expect("metrics listener");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }

    /// Everything the broker wrote to stderr so far, ANSI colour codes removed.
    pub fn stderr(&self) -> String {
        strip_ansi(&self.stderr.lock().unwrap())
    }

    /// SIGKILL by PID, then reaps the process (bounded).
    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's PID (not yet reaped, so not reused); no memory shared.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        self.wait_exit(WAIT).expect("ringmq dies on SIGKILL");
    }

    /// SIGTERM by PID; returns the exit status once it has exited (bounded).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: as in `kill9`.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.wait_exit(WAIT)
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from log text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// CONNECT resuming (clean 0) a session that outlives the connection (v5: expiry `expiry` s).
pub fn persistent_connect(v: ProtocolVersion, id: &str, expiry: u32) -> Connect {
    let mut c = connect_packet(v, id, false);
    if v == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = Some(expiry);
    }
    c
}

/// QoS from a number.
pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// SUBSCRIBE one filter with `options` (and a v5 subscription identifier); expects a SUBACK
/// granting `options.qos`.
pub async fn subscribe(
    c: &mut Raw,
    packet_id: u16,
    f: &str,
    options: SubscriptionOptions,
    sub_id: Option<u32>,
) {
    let s = Subscribe {
        packet_id: pid(packet_id),
        filters: vec![(filter(f), options)],
        properties: SubscribeProperties {
            subscription_identifier: sub_id,
            ..Default::default()
        },
    };
    c.send(&Packet::Subscribe(s)).await;
    match c.expect_packet("SUBACK").await {
        Packet::SubAck(a) => {
            assert_eq!(a.packet_id, pid(packet_id), "SUBACK packet id");
            assert_eq!(
                a.reasons,
                vec![ReasonCode::granted(options.qos)],
                "SUBACK for {f}"
            );
        }
        other => panic!("expected SUBACK for {f}, got {other:?}"),
    }
}

/// Normal DISCONNECT and waits for the broker to close the connection.
pub async fn disconnect(mut c: Raw) {
    let d = Disconnect {
        reason: ReasonCode::Success,
        properties: DisconnectProperties::default().into(),
    };
    c.send(&Packet::Disconnect(d)).await;
    c.expect_closed(WAIT, "after DISCONNECT").await;
}

/// A subscriber that acknowledges every delivery (PUBACK; PUBREC then PUBCOMP on PUBREL) and
/// keeps every PUBLISH it got, in arrival order (and the acknowledgements of its own publishes).
pub struct Inbox {
    pub conn: Raw,
    pub got: Vec<Publish>,
    /// PUBACK / PUBREC / PUBCOMP for the subscriber's own publishes.
    pub acks: Vec<Packet>,
}

impl Inbox {
    pub fn new(conn: Raw) -> Inbox {
        Inbox {
            conn,
            got: Vec::new(),
            acks: Vec::new(),
        }
    }

    /// Handles one packet (or times out); returns false when nothing came within `within`.
    pub async fn pump(&mut self, within: Duration) -> bool {
        match self.conn.recv(within).await {
            RawEv::Packet(Packet::Publish(p)) => {
                let id = p.packet_id.map(|i| i.get());
                match (p.qos, id) {
                    (QoS::AtLeastOnce, Some(id)) => self.conn.send(&Packet::PubAck(resp(id))).await,
                    (QoS::ExactlyOnce, Some(id)) => self.conn.send(&Packet::PubRec(resp(id))).await,
                    _ => {}
                }
                self.got.push(p);
                true
            }
            RawEv::Packet(Packet::PubRel(r)) => {
                self.conn
                    .send(&Packet::PubComp(resp(r.packet_id.get())))
                    .await;
                true
            }
            RawEv::Packet(Packet::PingResp) => true,
            // Acknowledgements of the subscriber's own publishes.
            RawEv::Packet(Packet::PubRec(r)) => {
                self.conn
                    .send(&Packet::PubRel(resp(r.packet_id.get())))
                    .await;
                self.acks.push(Packet::PubRec(r));
                true
            }
            RawEv::Packet(a @ (Packet::PubAck(_) | Packet::PubComp(_))) => {
                self.acks.push(a);
                true
            }
            RawEv::Packet(other) => panic!("subscriber: unexpected {other:?}"),
            RawEv::Timeout => false,
            RawEv::Closed => panic!("subscriber: the broker closed the connection"),
            RawEv::Garbage(e) => panic!("subscriber: undecodable bytes: {e}"),
        }
    }

    /// Pumps until `done(self)` holds (panics naming `what` after `deadline`).
    pub async fn until(&mut self, deadline: Duration, what: &str, done: impl Fn(&Inbox) -> bool) {
        if !self.wait_for(deadline, done).await {
            panic!(
                "timed out after {deadline:?} waiting for: {what}; got {} PUBLISH: {:?}",
                self.got.len(),
                self.got
                    .iter()
                    .map(|p| format!("{}:{}", p.topic.as_str(), text(&p.payload)))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Pumps until `done(self)` holds; false if `deadline` passed first (the caller reports).
    pub async fn wait_for(&mut self, deadline: Duration, done: impl Fn(&Inbox) -> bool) -> bool {
        let end = Instant::now() + deadline;
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.pump(left.min(Duration::from_millis(100))).await;
        }
        true
    }

    /// Keeps pumping until the connection has been silent for `quiet`.
    pub async fn settle(&mut self, quiet: Duration) {
        while self.pump(quiet).await {}
    }
}

/// A payload as text (`<binary>` if not UTF-8).
pub fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap_or("<binary>")
}

/// Sends `p` and completes its flow: QoS 1 waits for PUBACK; QoS 2 for PUBREC, sends PUBREL,
/// waits for PUBCOMP. With `--durability sync` the PUBACK/PUBREC means the message is durable.
pub async fn publish_acked(c: &mut Raw, p: Publish) {
    let id = p.packet_id.map(|i| i.get());
    let q = p.qos;
    c.send(&Packet::Publish(p)).await;
    let Some(id) = id else { return };
    let reply = c.expect_packet("PUBACK/PUBREC").await;
    match (q, reply) {
        (QoS::AtLeastOnce, Packet::PubAck(r)) if r.packet_id.get() == id => {
            assert!(!r.reason.is_error(), "PUBACK refused: {r:?}");
        }
        (QoS::ExactlyOnce, Packet::PubRec(r)) if r.packet_id.get() == id => {
            assert!(!r.reason.is_error(), "PUBREC refused: {r:?}");
            c.send(&Packet::PubRel(resp(id))).await;
            match c.expect_packet("PUBCOMP").await {
                Packet::PubComp(r) if r.packet_id.get() == id => {}
                other => panic!("expected PUBCOMP {id}, got {other:?}"),
            }
        }
        (_, other) => panic!("expected the acknowledgement of {id}, got {other:?}"),
    }
}
