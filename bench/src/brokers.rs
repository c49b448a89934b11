//! Starting and stopping the brokers a comparison runs against: ringmq, Mosquitto (as
//! configured by default and with `set_tcp_nodelay true`), FlashMQ and rumqttd, each on
//! a free loopback port, pinned with `taskset`, stopped by PID. Binaries come from a
//! flag or are looked up on PATH (and the sbin directories). Peers get configs
//! equivalent to ringmq's defaults where the knob exists (queue limit
//! [`RINGMQ_MAX_QUEUED`], inflight window [`RINGMQ_RECEIVE_MAXIMUM`], TCP_NODELAY,
//! no persistence, no logging); each config is returned in full to be printed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A broker process started for a run.
pub struct BrokerProc {
    pub name: String,
    pub port: u16,
    /// Separate MQTT 5 port (rumqttd listens for v4 and v5 on different ports).
    pub port_v5: Option<u16>,
    /// TLS, WebSocket and WebSocket-over-TLS listener ports, when started with a
    /// server certificate ([`TlsFiles`]).
    pub port_tls: Option<u16>,
    pub port_ws: Option<u16>,
    pub port_wss: Option<u16>,
    /// Command line recorded in the results header.
    pub flags: String,
    /// The generated config file's text (empty for ringmq: flags only).
    pub config: String,
    child: Child,
    dir: Option<PathBuf>,
}

impl BrokerProc {
    /// Waits until each of the peer's ports (plain, TLS, ws, wss) listens.
    fn wait_all_listening(&mut self) -> Result<(), String> {
        let ports = [self.port_tls, self.port_ws, self.port_wss];
        for p in std::iter::once(self.port).chain(ports.into_iter().flatten()) {
            if !wait_listening(p, Duration::from_secs(10)) {
                return Err(format!(
                    "{} did not start listening on {p} within 10 s",
                    self.name
                ));
            }
        }
        // Every port answered; a listener that could not bind afterwards (another
        // process took its port) makes the broker exit: say so rather than measure it.
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!(
                "{} exited after it started listening: {status}",
                self.name
            ));
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; by PID only.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The server certificate every peer gets for its TLS and WebSocket-over-TLS listeners
/// (the same one for all, so they are compared on equal terms).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Copies the files into `dir`, readable by the broker (Mosquitto started as root
    /// drops to its own user before reading the key).
    fn copy_into(&self, dir: &Path) -> Result<TlsFiles, String> {
        use std::os::unix::fs::PermissionsExt;
        let copy = |from: &Path, name: &str| -> Result<PathBuf, String> {
            let to = dir.join(name);
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
            Ok(to)
        };
        // The scratch directory itself must be enterable by that user too.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        Ok(TlsFiles {
            cert: copy(&self.cert, "server.crt")?,
            key: copy(&self.key, "server.key")?,
        })
    }
}

/// ringmq's default `--max-queued-messages` (QoS 1/2 messages queued per session).
pub const RINGMQ_MAX_QUEUED: usize = 10_000;
/// ringmq's default `--receive-maximum` (inflight window both ways).
pub const RINGMQ_RECEIVE_MAXIMUM: usize = 256;

/// The peers `compare` knows, in its default order.
pub const PEERS: [&str; 7] = [
    "ringmq",
    "ringmq-epoll",
    "ringmq-io_uring",
    "mosquitto",
    "mosquitto-nodelay",
    "flashmq",
    "rumqttd",
];

/// `flag` if given (it must exist), else the first of `names` found on PATH or in the
/// sbin directories; an error naming what was looked for.
pub fn find_bin(flag: Option<&str>, names: &[&str], hint: &str) -> Result<PathBuf, String> {
    if let Some(f) = flag {
        let p = PathBuf::from(f);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{f} not found ({hint})"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .collect();
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!("{} not on PATH ({hint})", names.join(" or ")))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` distinct loopback ports that were free a moment ago: each stays bound until
/// all are chosen, so two calls in a row cannot hand the same port to two listeners
/// of one broker (which then fails to start after its first listener answered).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let held = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Polls until `port` accepts TCP connections.
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Writes `conf` to `dir/name` and starts `bin -c dir/name` (pinned to `cpus` when given),
/// its output discarded.
fn spawn_with_config(
    dir: &Path,
    name: &str,
    conf: &str,
    bin: &str,
    cpus: Option<&str>,
) -> Result<std::process::Child, String> {
    let path = dir.join(name);
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    command(bin, cpus)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {bin}: {e}"))
}

fn command(bin: &str, cpus: Option<&str>) -> Command {
    match cpus {
        Some(c) if Path::new("/usr/bin/taskset").exists() => {
            let mut cmd = Command::new("/usr/bin/taskset");
            cmd.arg("-c").arg(c).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

fn scratch_dir(name: &str) -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "ringmq-bench-{name}-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// `ringmq --listen mqtt://127.0.0.1:0 --allow-anonymous true --cores 1` (the bench's
/// clients give no user name; a named listener refuses them otherwise), ready once it
/// prints its listen line.
pub fn start_ringmq(bin: &str, cpus: Option<&str>) -> Result<BrokerProc, String> {
    start_ringmq_with(bin, cpus, None, crate::cli::Transport::Tcp)
}

/// ringmq on one core, plus a listener for `transport` when it is not TCP (`mqtts://`,
/// `ws://` or `wss://`, port 0, learnt from its `ringmq listening on URL` lines; TLS
/// ones with `tls`). Only the one the run needs, so a build without some transport
/// still serves the others.
pub fn start_ringmq_with(
    bin: &str,
    cpus: Option<&str>,
    tls: Option<&TlsFiles>,
    transport: crate::cli::Transport,
) -> Result<BrokerProc, String> {
    start_ringmq_backend(bin, cpus, tls, transport, None)
}

/// As [`start_ringmq_with`], with `--io-backend BACKEND` when given (the peers
/// `ringmq-epoll` and `ringmq-io_uring`, so one run compares both).
pub fn start_ringmq_backend(
    bin: &str,
    cpus: Option<&str>,
    tls: Option<&TlsFiles>,
    transport: crate::cli::Transport,
    backend: Option<&str>,
) -> Result<BrokerProc, String> {
    use crate::cli::Transport;
    if !Path::new(bin).exists() {
        return Err(format!(
            "{bin} not found (cargo build --release -p ringmq-broker)"
        ));
    }
    let abs = std::fs::canonicalize(bin).map_err(|e| format!("{bin}: {e}"))?;
    let bin = abs.to_str().ok_or("non-UTF-8 path")?;
    // A fresh working directory so its ./data (state, admin socket) is private and removed.
    let dir = scratch_dir("ringmq").map_err(|e| e.to_string())?;
    let mut args: Vec<String> = vec!["--listen".into(), "mqtt://127.0.0.1:0".into()];
    let extra = match transport {
        Transport::Tcp => None,
        Transport::Tls => Some("mqtts://127.0.0.1:0"),
        Transport::Ws => Some("ws://127.0.0.1:0/mqtt"),
        Transport::Wss => Some("wss://127.0.0.1:0/mqtt"),
    };
    if let Some(url) = extra {
        args.extend(["--listen".into(), url.into()]);
    }
    if matches!(transport, Transport::Tls | Transport::Wss) {
        let t = tls.ok_or("a TLS listener needs --server-cert/--server-key")?;
        let t = t.copy_into(&dir)?;
        args.extend([
            "--tls-cert".into(),
            t.cert.display().to_string(),
            "--tls-key".into(),
            t.key.display().to_string(),
        ]);
    }
    // The bench's clients give no user name: named listeners refuse them otherwise.
    args.extend(["--allow-anonymous".into(), "true".into()]);
    args.extend(["--cores".into(), "1".into()]);
    if let Some(b) = backend {
        args.extend(["--io-backend".into(), b.into()]);
    }
    let want = if extra.is_some() { 2 } else { 1 };
    let mut cmd = command(bin, cpus);
    cmd.current_dir(&dir)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("start {bin}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("ringmq listening on ") {
                let _ = tx.send(parse_listen_url(url.trim()));
            }
        }
    });
    let flags = format!(
        "{}{bin} {}  (in a fresh temp dir: default ./data)",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default(),
        args.join(" ")
    );
    let mut proc = BrokerProc {
        name: backend.map_or("ringmq".into(), |b| format!("ringmq-{b}")),
        port: 0,
        port_v5: None,
        port_tls: None,
        port_ws: None,
        port_wss: None,
        flags,
        config: String::new(),
        child,
        dir: Some(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some((scheme, port))) => {
                match scheme.as_str() {
                    "mqtt" => proc.port = port,
                    "mqtts" => proc.port_tls = Some(port),
                    "ws" => proc.port_ws = Some(port),
                    "wss" => proc.port_wss = Some(port),
                    _ => {}
                }
                seen += 1;
                if seen >= want {
                    return Ok(proc);
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!(
                "ringmq exited ({status}) before listening (does this build have TLS/WebSocket listeners? `{}`)",
                proc.flags
            ));
        }
    }
    Err("ringmq did not print its listen lines within 20 s".into())
}

/// ("mqtts", 8883) from `mqtts://127.0.0.1:8883` or `wss://127.0.0.1:8443/mqtt`.
fn parse_listen_url(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let hostport = rest.split('/').next()?;
    let port = hostport.rsplit(':').next()?.parse().ok()?;
    Some((scheme.to_string(), port))
}

/// The Mosquitto config used by `compare`: ringmq's queue and inflight limits, no
/// persistence or logging; `nodelay` adds `set_tcp_nodelay true` (ringmq sets it).
pub fn mosquitto_config(port: u16, nodelay: bool) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n\
         max_queued_messages {RINGMQ_MAX_QUEUED}\nmax_inflight_messages {RINGMQ_RECEIVE_MAXIMUM}\n{}",
        if nodelay { "set_tcp_nodelay true\n" } else { "" }
    )
}

/// Mosquitto listeners for TLS (TLS 1.3 only), WebSocket and WebSocket over TLS.
fn mosquitto_tls_listeners(t: &TlsFiles, tls: u16, ws: u16, wss: u16) -> String {
    let (c, k) = (t.cert.display(), t.key.display());
    format!(
        "listener {tls} 127.0.0.1\ncertfile {c}\nkeyfile {k}\ntls_version tlsv1.3\n\
         listener {ws} 127.0.0.1\nprotocol websockets\n\
         listener {wss} 127.0.0.1\nprotocol websockets\ncertfile {c}\nkeyfile {k}\ntls_version tlsv1.3\n"
    )
}

/// Debian's mosquitto with a generated config on a free loopback port.
pub fn start_mosquitto(bin: &str, cpus: Option<&str>) -> Result<BrokerProc, String> {
    start_mosquitto_with(bin, cpus, false)
}

/// Mosquitto, with `set_tcp_nodelay true` when `nodelay`.
pub fn start_mosquitto_with(
    bin: &str,
    cpus: Option<&str>,
    nodelay: bool,
) -> Result<BrokerProc, String> {
    start_mosquitto_tls(bin, cpus, nodelay, None)
}

/// Mosquitto, with TLS / WebSocket / WebSocket-over-TLS listeners when `tls` is given.
pub fn start_mosquitto_tls(
    bin: &str,
    cpus: Option<&str>,
    nodelay: bool,
    tls: Option<&TlsFiles>,
) -> Result<BrokerProc, String> {
    if !Path::new(bin).exists() {
        return Err(format!("{bin} not found (apt-get install mosquitto)"));
    }
    let [port, tls_port, ws_port, wss_port] = free_ports().map_err(|e| e.to_string())?;
    let dir = scratch_dir("mosquitto").map_err(|e| e.to_string())?;
    let mut conf = mosquitto_config(port, nodelay);
    let mut extra = None;
    if let Some(t) = tls {
        let t = t.copy_into(&dir)?;
        let p = (tls_port, ws_port, wss_port);
        conf.push_str(&mosquitto_tls_listeners(&t, p.0, p.1, p.2));
        extra = Some(p);
    }
    let child = spawn_with_config(&dir, "mosquitto.conf", &conf, bin, cpus)?;
    let flags = format!(
        "{}{bin} -c mosquitto.conf  (config: {})",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default(),
        conf.lines().take(7).collect::<Vec<_>>().join("; ")
    );
    let mut proc = BrokerProc {
        name: if nodelay {
            "mosquitto-nodelay"
        } else {
            "mosquitto"
        }
        .into(),
        port,
        port_v5: None,
        port_tls: extra.map(|p| p.0),
        port_ws: extra.map(|p| p.1),
        port_wss: extra.map(|p| p.2),
        flags,
        config: conf,
        child,
        dir: Some(dir),
    };
    proc.wait_all_listening()?;
    Ok(proc)
}

/// rumqttd (`cargo install rumqttd --root /work/tools`) with a generated config.
pub fn start_rumqttd(bin: &str, cpus: Option<&str>) -> Result<BrokerProc, String> {
    if !Path::new(bin).exists() {
        return Err(format!(
            "{bin} not installed (cargo install rumqttd --root /work/tools)"
        ));
    }
    let [port, port5] = free_ports().map_err(|e| e.to_string())?;
    let dir = scratch_dir("rumqttd").map_err(|e| e.to_string())?;
    let conf = rumqttd_config(port, port5);
    let path = dir.join("rumqttd.toml");
    std::fs::write(&path, &conf).map_err(|e| e.to_string())?;
    let mut cmd = command(bin, cpus);
    cmd.arg("-c")
        .arg(&path)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| format!("start {bin}: {e}"))?;
    let flags = format!(
        "{}{bin} -c rumqttd.toml -q  (v4 on {port}, v5 on {port5}; generated config)",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default()
    );
    let proc = BrokerProc {
        name: "rumqttd".into(),
        port,
        port_v5: Some(port5),
        port_tls: None,
        port_ws: None,
        port_wss: None,
        flags,
        config: conf,
        child,
        dir: Some(dir),
    };
    if !wait_listening(port, Duration::from_secs(10)) {
        return Err("rumqttd did not start listening within 10 s".into());
    }
    Ok(proc)
}

/// The FlashMQ config used by `compare`: one thread (one core, like ringmq --cores 1),
/// ringmq's queue limit as `max_qos_msg_pending_per_client` (bytes left generous so
/// the message count binds, as in ringmq), TCP_NODELAY, no persistence (no
/// storage_dir), quiet logging into the scratch directory.
pub fn flashmq_config(port: u16, log: &Path) -> String {
    format!(
        "thread_count 1\nallow_anonymous true\nquiet true\nlog_file {}\n\
         max_qos_msg_pending_per_client {RINGMQ_MAX_QUEUED}\n\
         max_qos_bytes_pending_per_client 67108864\n{}",
        log.display(),
        flashmq_listener("mqtt", port, None)
    )
}

/// One FlashMQ `listen` block on 127.0.0.1, TCP_NODELAY, TLS 1.3 only when `tls`.
fn flashmq_listener(protocol: &str, port: u16, tls: Option<&TlsFiles>) -> String {
    let tls = tls
        .map(|t| {
            format!(
                "  fullchain {}\n  privkey {}\n  minimum_tls_version tlsv1.3\n",
                t.cert.display(),
                t.key.display()
            )
        })
        .unwrap_or_default();
    format!(
        "listen {{\n  protocol {protocol}\n  inet_protocol ip4\n  inet4_bind_address 127.0.0.1\n  port {port}\n  tcp_nodelay true\n{tls}}}\n"
    )
}

/// FlashMQ (built from its public repository, see docs/benchmarking.md) with a
/// generated config on a free loopback port.
pub fn start_flashmq(
    bin: &str,
    cpus: Option<&str>,
    tls: Option<&TlsFiles>,
) -> Result<BrokerProc, String> {
    if !Path::new(bin).exists() {
        return Err(format!(
            "{bin} not found (see docs/benchmarking.md: building FlashMQ)"
        ));
    }
    let [port, tls_port, ws_port, wss_port] = free_ports().map_err(|e| e.to_string())?;
    let dir = scratch_dir("flashmq").map_err(|e| e.to_string())?;
    let mut conf = flashmq_config(port, &dir.join("flashmq.log"));
    let mut extra = None;
    if let Some(t) = tls {
        let t = t.copy_into(&dir)?;
        let p = (tls_port, ws_port, wss_port);
        conf.push_str(&flashmq_listener("mqtt", p.0, Some(&t)));
        conf.push_str(&flashmq_listener("websockets", p.1, None));
        conf.push_str(&flashmq_listener("websockets", p.2, Some(&t)));
        extra = Some(p);
    }
    let child = spawn_with_config(&dir, "flashmq.conf", &conf, bin, cpus)?;
    let flags = format!(
        "{}{bin} -c flashmq.conf  (generated config, printed with the results)",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default()
    );
    let mut proc = BrokerProc {
        name: "flashmq".into(),
        port,
        port_v5: None,
        port_tls: extra.map(|p| p.0),
        port_ws: extra.map(|p| p.1),
        port_wss: extra.map(|p| p.2),
        flags,
        config: conf,
        child,
        dir: Some(dir),
    };
    proc.wait_all_listening()?;
    Ok(proc)
}

/// A rumqttd config: v4 (3.1.1) listener on `port`, v5 on `port5`, generous limits.
fn rumqttd_config(port: u16, port5: u16) -> String {
    let server = |name: &str, p: u16| {
        format!(
            "[{name}.1]\nname = \"{name}-1\"\nlisten = \"127.0.0.1:{p}\"\nnext_connection_delay_ms = 0\n\
             [{name}.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
             max_inflight_count = 65535\ndynamic_filters = true\n\n"
        )
    };
    format!(
        "id = 0\n\n[router]\nid = 0\nmax_connections = 100010\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n\n{}{}",
        server("v4", port),
        server("v5", port5)
    )
}
