//! Starting and stopping the brokers a comparison runs against: ringmq, Mosquitto and
//! rumqttd, each on a free loopback port, pinned with `taskset`, stopped by PID.

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
    /// Command line (and config) recorded in the results header.
    pub flags: String,
    child: Child,
    dir: Option<PathBuf>,
}

impl BrokerProc {
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

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
    if !Path::new(bin).exists() {
        return Err(format!(
            "{bin} not found (cargo build --release -p ringmq-broker)"
        ));
    }
    let abs = std::fs::canonicalize(bin).map_err(|e| format!("{bin}: {e}"))?;
    let bin = abs.to_str().ok_or("non-UTF-8 path")?;
    // A fresh working directory so its ./data (state, admin socket) is private and removed.
    let dir = scratch_dir("ringmq").map_err(|e| e.to_string())?;
    let mut cmd = command(bin, cpus);
    cmd.current_dir(&dir)
        .args([
            "--listen",
            "mqtt://127.0.0.1:0",
            "--allow-anonymous",
            "true",
        ])
        .args(["--cores", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("start {bin}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ringmq listening on mqtt://") {
                let port = rest
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok());
                let _ = tx.send(port);
            }
        }
    });
    let flags = format!(
        "{}{bin} --listen mqtt://127.0.0.1:0 --allow-anonymous true --cores 1  (in a fresh temp dir: default ./data)",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default()
    );
    let mut proc = BrokerProc {
        name: "ringmq".into(),
        port: 0,
        port_v5: None,
        flags,
        child,
        dir: Some(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(port)) => {
                proc.port = port;
                return Ok(proc);
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("ringmq exited ({status}) before listening"));
        }
    }
    Err("ringmq did not print its listen line within 20 s".into())
}

/// Debian's mosquitto with a generated config on a free loopback port.
pub fn start_mosquitto(bin: &str, cpus: Option<&str>) -> Result<BrokerProc, String> {
    if !Path::new(bin).exists() {
        return Err(format!("{bin} not found (apt-get install mosquitto)"));
    }
    let port = free_port().map_err(|e| e.to_string())?;
    let dir = scratch_dir("mosquitto").map_err(|e| e.to_string())?;
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
    );
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, &conf).map_err(|e| e.to_string())?;
    let mut cmd = command(bin, cpus);
    cmd.arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| format!("start {bin}: {e}"))?;
    let flags = format!(
        "{}{bin} -c mosquitto.conf  (config: {})",
        cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default(),
        conf.trim().replace('\n', "; ")
    );
    let proc = BrokerProc {
        name: "mosquitto".into(),
        port,
        port_v5: None,
        flags,
        child,
        dir: Some(dir),
    };
    if !wait_listening(port, Duration::from_secs(10)) {
        return Err("mosquitto did not start listening within 10 s".into());
    }
    Ok(proc)
}

/// rumqttd (`cargo install rumqttd --root /work/tools`) with a generated config.
pub fn start_rumqttd(bin: &str, cpus: Option<&str>) -> Result<BrokerProc, String> {
    if !Path::new(bin).exists() {
        return Err(format!(
            "{bin} not installed (cargo install rumqttd --root /work/tools)"
        ));
    }
    let port = free_port().map_err(|e| e.to_string())?;
    let port5 = free_port().map_err(|e| e.to_string())?;
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
        flags,
        child,
        dir: Some(dir),
    };
    if !wait_listening(port, Duration::from_secs(10)) {
        return Err("rumqttd did not start listening within 10 s".into());
    }
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
