//! Authentication through the `ringmq` binary with clients we did not write: Debian's
//! mosquitto_pub/mosquitto_sub (`-u`/`-P`) against password files written by Debian's
//! mosquitto_passwd ($7$ and $6$) and by `ringmq passwd` (argon2id, SCRAM), paho-mqtt
//! (Python) in 3.1.1 and 5.0, and the default posture: no listener named (loopback:1883,
//! anonymous allowed) against a named one (anonymous refused), as the log line says.
//! Every child is bounded and stopped by PID.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringmq-authbin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `ringmq` child with its stdout and stderr lines on one channel.
struct Bin {
    child: Child,
    addr: SocketAddr,
    lines: Vec<String>,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ringmq ARGS` (data dir and admin socket in `dir`, log level info) and waits,
/// bounded, for its listening line; keeps the log lines printed until then.
fn start(dir: &Path, args: &[&str]) -> Bin {
    start_n(dir, args, 1).0
}

/// As [`start`], for a broker with `n` mqtt:// listeners: waits for each one's listening
/// and posture lines, and returns their addresses in order.
fn start_n(dir: &Path, args: &[&str], n: usize) -> (Bin, Vec<SocketAddr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--admin-socket")
        .arg(dir.join("ringmq.sock"))
        .args(["--log-level", "info", "--sys-interval-secs", "0"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq");
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let end = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    let mut addrs = Vec::new();
    while addrs.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringmq did not listen within 20 s; output: {lines:#?}");
        };
        if let Some(a) = line.trim().strip_prefix("ringmq listening on mqtt://") {
            addrs.push(a.parse::<SocketAddr>().expect("HOST:PORT"));
        }
        lines.push(line);
    }
    // stdout and stderr race: wait (bounded) for each listener's posture line too.
    for addr in &addrs {
        let posture = format!("listener mqtt://{addr}: ");
        while !lines.iter().any(|l: &String| l.contains(&posture)) {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("no posture line for {addr}: {lines:#?}"),
            }
        }
    }
    let addr = addrs[0];
    (Bin { child, addr, lines }, addrs)
}

fn mosquitto_passwd(args: &[&str]) {
    let st = Command::new("mosquitto_passwd")
        .args(args)
        .status()
        .expect("mosquitto_passwd (Debian's mosquitto package, installed by .ci/run)");
    assert!(st.success(), "mosquitto_passwd {args:?}");
}

fn ringmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringmq")
}

/// mosquitto_pub -u/-P (bounded by its own connect timeout): (exit success, stderr).
fn mqtt_pub(
    addr: SocketAddr,
    v: &str,
    id: &str,
    creds: Option<(&str, &str)>,
    retain: bool,
) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "10",
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
    ]);
    cmd.args(["-V", v, "-i", id, "-t", "auth/t", "-m", id, "-q", "1"]);
    if retain {
        cmd.arg("-r");
    }
    if let Some((u, p)) = creds {
        cmd.args(["-u", u, "-P", p]);
    }
    let out = cmd.output().expect("mosquitto_pub");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// mosquitto_sub -C 1 -W 10: the first message's payload (the retained one).
fn mqtt_sub_one(addr: SocketAddr, v: &str, user: &str, pw: &str) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-V", v])
        .args(["-t", "auth/t", "-C", "1", "-W", "10", "-u", user, "-P", pw])
        .output()
        .expect("mosquitto_sub");
    assert!(
        out.status.success(),
        "mosquitto_sub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn mosquitto_clients_against_mosquitto_passwd_files() {
    let dir = scratch("mosq");
    let pw = dir.join("passwd");
    let pws = pw.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", pws, "alice", "secret"]);
    mosquitto_passwd(&["-H", "sha512", "-b", pws, "bob", "hunter2"]);
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--cores",
            "2",
            "--password-file",
            pws,
            "--durability",
            "none",
        ],
    );
    assert!(
        b.lines.iter().any(|l| l.contains(&format!(
            "listener mqtt://{}: anonymous clients refused, password file {pws}",
            b.addr
        ))),
        "posture line: {:#?}",
        b.lines
    );
    for v in ["mqttv311", "mqttv5"] {
        for (user, pass) in [("alice", "secret"), ("bob", "hunter2")] {
            let id = format!("{user}-{v}");
            let (ok, err) = mqtt_pub(b.addr, v, &id, Some((user, pass)), true);
            assert!(ok, "{user} {v}: {err}");
            // The other user reads what this one retained.
            let (reader, rp) = if user == "alice" {
                ("bob", "hunter2")
            } else {
                ("alice", "secret")
            };
            assert_eq!(mqtt_sub_one(b.addr, v, reader, rp), id);
            let (ok, err) = mqtt_pub(b.addr, v, "w", Some((user, "wrong")), false);
            assert!(
                !ok && err.to_lowercase().contains("bad user name or password"),
                "{user} {v} wrong: {err}"
            );
        }
        let (ok, err) = mqtt_pub(b.addr, v, "anon", None, false);
        assert!(
            !ok && err.to_lowercase().contains("not authori"),
            "anonymous {v}: {err}"
        );
    }
}

#[test]
fn ringmq_passwd_writes_files_the_broker_and_mosquitto_clients_use() {
    let dir = scratch("passwd");
    let pw = dir.join("passwd");
    let pws = pw.to_str().unwrap();
    // A file started by mosquitto_passwd, edited by ringmq passwd: its lines are kept.
    mosquitto_passwd(&["-c", "-b", pws, "alice", "secret"]);
    let out = ringmq(&["passwd", "-b", pws, "dave", "argon-pw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ringmq(&["passwd", "--scram", "-b", pws, "erin", "scram-pw"]);
    assert!(out.status.success());
    let out = ringmq(&["passwd", "-b", pws, "frank", "gone"]);
    assert!(out.status.success());
    let out = ringmq(&["passwd", "-D", pws, "frank"]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&pw).unwrap();
    let users: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(users, ["alice", "dave", "erin"], "{text}");
    assert!(text.contains("alice:$7$101$") && text.contains("dave:$argon2id$v=19$"));
    assert!(text.contains("erin:$scram-sha-256$4096$"));
    assert_eq!(
        std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Updating a user replaces its line.
    let out = ringmq(&["passwd", "-b", pws, "dave", "new-pw"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&pw).unwrap().lines().count(), 3);
    // One-line errors.
    for (args, want) in [
        (
            vec!["passwd", "-D", pws, "nobody"],
            "error: user nobody is not in",
        ),
        (
            vec!["passwd", pws, "x", "pw"],
            "error: a password argument needs -b",
        ),
        (
            vec!["passwd", "-b", "/nonexistent/pw", "x", "y"],
            "error: /nonexistent/pw: ",
        ),
        (
            vec!["passwd", "-c", "-b", pws, "a:b", "y"],
            "error: user name \"a:b\" is invalid",
        ),
        // No terminal to prompt on: a clear error, the file untouched.
        (vec!["passwd", pws, "x"], "error: password: "),
    ] {
        let out = ringmq(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&pw).unwrap().lines().count(), 3);
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--cores",
            "1",
            "--password-file",
            pws,
            "--durability",
            "none",
        ],
    );
    for v in ["mqttv311", "mqttv5"] {
        for (u, p) in [
            ("alice", "secret"),
            ("dave", "new-pw"),
            ("erin", "scram-pw"),
        ] {
            let (ok, err) = mqtt_pub(b.addr, v, &format!("{u}{v}"), Some((u, p)), false);
            assert!(ok, "{u} {v}: {err}");
        }
        let (ok, _) = mqtt_pub(b.addr, v, "old", Some(("dave", "argon-pw")), false);
        assert!(!ok, "the old password no longer works");
    }
}

/// paho-mqtt (pip, installed by .ci/run) accepts and refuses in both versions.
#[test]
fn paho_accepts_and_refuses() {
    let dir = scratch("paho");
    let pw = dir.join("passwd");
    let pws = pw.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", pws, "alice", "secret"]);
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--cores",
            "2",
            "--password-file",
            pws,
            "--durability",
            "none",
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/paho_connect.py");
    let paho = |v: &str, u: &str, p: &str| {
        let out = Command::new("timeout")
            .args([
                "20",
                "python3",
                script,
                "127.0.0.1",
                &b.addr.port().to_string(),
                v,
                u,
                p,
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "paho: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for v in ["311", "5"] {
        assert_eq!(paho(v, "alice", "secret"), "0", "v{v} right password");
        // paho 2 reports 3.1.1's 4 and 5 as the v5 codes 134 and 135.
        let bad = paho(v, "alice", "nope");
        assert!(
            bad == "134" || (v == "311" && bad == "4"),
            "v{v} wrong password: {bad}"
        );
        let anon = paho(v, "-", "x");
        assert!(
            anon == "135" || (v == "311" && anon == "5"),
            "v{v} anonymous: {anon}"
        );
    }
}

/// No listener named anywhere: 127.0.0.1:1883 (and ::1), anonymous allowed; a named
/// listener refuses anonymous clients unless --allow-anonymous true.
#[test]
fn default_posture_follows_mosquitto_2() {
    let dir = scratch("posture");
    // The default port is shared with whatever else runs here: wait (bounded) until free.
    let end = Instant::now() + Duration::from_secs(60);
    while std::net::TcpListener::bind("127.0.0.1:1883").is_err() {
        assert!(Instant::now() < end, "127.0.0.1:1883 stayed busy for 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    {
        let b = start(&dir, &["--cores", "1", "--durability", "none"]);
        assert_eq!(b.addr, "127.0.0.1:1883".parse().unwrap());
        assert!(
            b.lines.iter().any(|l| l.contains(
                "listener mqtt://127.0.0.1:1883: anonymous clients allowed, no password file"
            )),
            "{:#?}",
            b.lines
        );
        let (ok, err) = mqtt_pub(b.addr, "mqttv5", "anon-default", None, false);
        assert!(ok, "anonymous on the default listener: {err}");
        let (ok, err) = mqtt_pub(b.addr, "mqttv311", "anon-default4", None, false);
        assert!(ok, "anonymous on the default listener: {err}");
    }
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--cores",
            "1",
            "--durability",
            "none",
        ],
    );
    assert!(b
        .lines
        .iter()
        .any(|l| l.contains("anonymous clients refused, no password file")));
    let (ok, err) = mqtt_pub(b.addr, "mqttv5", "anon-named", None, false);
    assert!(!ok && err.to_lowercase().contains("not authori"), "{err}");
    drop(b);
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--allow-anonymous",
            "true",
            "--cores",
            "1",
            "--durability",
            "none",
        ],
    );
    assert!(b
        .lines
        .iter()
        .any(|l| l.contains("anonymous clients allowed")));
    let (ok, err) = mqtt_pub(b.addr, "mqttv311", "anon-allowed", None, false);
    assert!(ok, "{err}");
}

/// `allow_anonymous` per listener, from the TOML file: a listener's own option overrides
/// `[auth] allow_anonymous` both ways, the posture line of each listener says which, and
/// mosquitto_pub (3.1.1 and 5.0) gets in or is refused accordingly, on 1 and 2 shards.
#[test]
fn allow_anonymous_per_listener_from_the_toml_file() {
    for (cores, global) in [(1, false), (2, false), (2, true)] {
        let dir = scratch(&format!("anon-listener-{cores}-{global}"));
        let toml = dir.join("ringmq.toml");
        // The first listener opens to anonymous clients, the second closes, the third
        // follows [auth].
        std::fs::write(
            &toml,
            format!(
                "[listeners]\nlisten = [\"mqtt://127.0.0.1:0?allow_anonymous=true\", \
                 \"mqtt://127.0.0.1:0?allow_anonymous=false\", \"mqtt://127.0.0.1:0\"]\n\
                 [auth]\nallow_anonymous = {global}\n"
            ),
        )
        .unwrap();
        let cores_s = cores.to_string();
        let args = [
            "--config",
            toml.to_str().unwrap(),
            "--cores",
            &cores_s,
            "--durability",
            "none",
        ];
        let (b, addrs) = start_n(&dir, &args, 3);
        for (addr, allowed) in addrs.iter().zip([true, false, global]) {
            let word = if allowed { "allowed" } else { "refused" };
            let line =
                format!("listener mqtt://{addr}: anonymous clients {word}, no password file");
            assert!(
                b.lines.iter().any(|l| l.contains(&line)),
                "{line}: {:#?}",
                b.lines
            );
            for v in ["mqttv5", "mqttv311"] {
                // Several ids: with 2 shards, both home shards are exercised.
                for id in ["anon-a", "anon-b", "anon-c"] {
                    let (ok, err) = mqtt_pub(*addr, v, id, None, false);
                    assert_eq!(ok, allowed, "{addr} {v} {id}: {err}");
                    if !allowed {
                        let e = err.to_lowercase();
                        assert!(
                            e.contains("not authori") || e.contains("connection refused"),
                            "{v}: {err}"
                        );
                    }
                }
            }
        }
    }
}

/// `ringmq ctl reload` and SIGHUP re-read the password file: a file that fails to parse is
/// reported with its line and the previous users keep working; a good one is in force after.
#[test]
fn reload_reads_the_password_file_and_never_fails_open() {
    let dir = scratch("reload");
    let pw = dir.join("passwd");
    let pws = pw.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", pws, "alice", "secret"]);
    // No auto-ban: the polling below fails logins from 127.0.0.1 on purpose.
    let b = start(
        &dir,
        &[
            "--listen",
            "mqtt://127.0.0.1:0",
            "--cores",
            "2",
            "--password-file",
            pws,
            "--durability",
            "none",
            "--auth-fail-max",
            "0",
        ],
    );
    let sock = dir.join("ringmq.sock");
    let ctl_reload = || ringmq(&["ctl", "--admin-socket", sock.to_str().unwrap(), "reload"]);
    let login = |u: &str, p: &str, id: &str| mqtt_pub(b.addr, "mqttv5", id, Some((u, p)), false).0;
    assert!(login("alice", "secret", "a0"));
    assert!(!login("erin", "new", "e0"));
    // A broken file: reported with its line, exit 1, alice still gets in, erin still not.
    std::fs::write(&pw, "alice:not-hashed\n").unwrap();
    let out = ctl_reload();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("passwords") && text.contains("line 1"),
        "{text}"
    );
    assert!(
        login("alice", "secret", "a1"),
        "previous file kept in force"
    );
    // A good file through ringmq passwd, read on SIGHUP.
    mosquitto_passwd(&["-c", "-b", pws, "alice", "secret"]);
    let out = ringmq(&["passwd", "-b", pws, "erin", "new"]);
    assert!(out.status.success());
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGHUP) };
    let end = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while !login("erin", "new", &format!("e{i}")) {
        i += 1;
        assert!(Instant::now() < end, "erin not accepted 15 s after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(login("alice", "secret", "a2"));
}
