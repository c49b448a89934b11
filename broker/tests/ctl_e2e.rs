//! `ringmq ctl` end to end against the real broker binary: kick a real
//! rumqttc client and see it disconnected, drain, shutdown, SIGTERM.

#[path = "ctl_support/mod.rs"]
mod support;

use rumqttc::{Client, Event, MqttOptions, Packet};
use std::sync::mpsc;
use std::time::Duration;
use support::{check_for, OpsBroker};

const WAIT: Duration = Duration::from_secs(10);

/// What a client's event loop saw.
#[derive(Debug)]
#[allow(dead_code)] // the reason is read through Debug in failure messages
enum Seen {
    ConnAck,
    Gone(String),
}

/// A rumqttc (MQTT 3.1.1) client; its event loop runs on a thread and stops at
/// the first connection error (no reconnect).
fn connect(b: &OpsBroker, id: &str) -> (Client, mpsc::Receiver<Seen>) {
    let mut o = MqttOptions::new(id, b.addr.ip().to_string(), b.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(o, 10);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = tx.send(Seen::ConnAck);
                }
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    let _ = tx.send(Seen::Gone("DISCONNECT".into()));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Seen::Gone(e.to_string()));
                    return;
                }
            }
        }
    });
    (client, rx)
}

fn connected(rx: &mpsc::Receiver<Seen>) {
    match rx.recv_timeout(WAIT) {
        Ok(Seen::ConnAck) => {}
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Whether `ctl` printed a `key value` line with these words.
fn has_line(out: &str, words: &[&str]) -> bool {
    out.lines()
        .any(|l| l.split_whitespace().eq(words.iter().copied()))
}

fn listed(b: &OpsBroker, id: &str) -> bool {
    let (code, out, err) = b.ctl(&["--json", "clients"]);
    assert_eq!(code, 0, "ctl clients: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON response");
    v["result"]
        .as_array()
        .expect("a list")
        .iter()
        .any(|c| c["client_id"] == id)
}

#[test]
fn ctl_kick_disconnects_a_real_client() {
    let b = OpsBroker::start("e2e-kick", &[]);
    let (_victim, rx) = connect(&b, "victim");
    connected(&rx);
    let (_bystander, rx2) = connect(&b, "bystander");
    connected(&rx2);
    check_for(WAIT, "victim listed by ctl clients", || {
        listed(&b, "victim")
    });
    let (code, out, err) = b.ctl(&["client", "show", "victim"]);
    assert_eq!(code, 0, "{err}");
    assert!(has_line(&out, &["connected", "true"]), "{out}");
    let (code, _, err) = b.ctl(&["client", "kick", "victim"]);
    assert_eq!(code, 0, "{err}");
    match rx.recv_timeout(WAIT) {
        Ok(Seen::Gone(_)) => {}
        other => panic!("victim not disconnected: {other:?}"),
    }
    check_for(WAIT, "victim gone from ctl clients", || {
        !listed(&b, "victim")
    });
    assert!(listed(&b, "bystander"), "others stay connected");
    let (code, _, err) = b.ctl(&["client", "kick", "victim"]);
    assert_eq!(code, 1);
    assert!(err.contains("(not_found)"), "{err}");
}

#[test]
fn ctl_drain_stops_new_connections_and_keeps_old_ones() {
    let b = OpsBroker::start("e2e-drain", &[]);
    let (_old, rx) = connect(&b, "old");
    connected(&rx);
    let (code, _, err) = b.ctl(&["drain"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = b.ctl(&["status"]);
    assert!(has_line(&out, &["draining", "true"]), "{out}");
    let (_new, rx_new) = connect(&b, "new");
    match rx_new.recv_timeout(WAIT) {
        Ok(Seen::Gone(_)) | Err(_) => {}
        Ok(Seen::ConnAck) => panic!("a draining broker accepted a new connection"),
    }
    assert!(!listed(&b, "new"));
}

#[test]
fn ctl_shutdown_stops_the_broker_with_exit_0() {
    let mut b = OpsBroker::start("e2e-shutdown", &[]);
    let (_c, rx) = connect(&b, "c1");
    connected(&rx);
    let (code, out, err) = b.ctl(&["shutdown"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shutting_down"), "{out}");
    assert_eq!(b.wait_exit(WAIT), Some(0), "exit 0 after ctl shutdown");
    assert!(
        matches!(rx.recv_timeout(WAIT), Ok(Seen::Gone(_))),
        "client told"
    );
    assert!(!b.dir.join("ringmq.sock").exists(), "admin socket removed");
}

#[test]
fn sigterm_and_sigint_stop_the_broker_with_exit_0() {
    for (name, sig) in [("e2e-sigterm", libc::SIGTERM), ("e2e-sigint", libc::SIGINT)] {
        let mut b = OpsBroker::start(name, &[]);
        let (code, _, err) = b.ctl(&["status"]);
        assert_eq!(code, 0, "{err}");
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(b.child.id() as libc::pid_t, sig) };
        assert_eq!(b.wait_exit(WAIT), Some(0), "{name}");
        assert!(!b.dir.join("ringmq.sock").exists(), "admin socket removed");
    }
}

/// A minimal MQTT 5 client on a raw socket (rumqttc 0.25 cannot parse a server
/// DISCONNECT whose Remaining Length is 1, which the spec allows, 3.14.2.2).
struct RawV5(std::net::TcpStream);

impl RawV5 {
    /// Connects with a clean start and waits for a successful CONNACK.
    fn connect(b: &OpsBroker, id: &str) -> RawV5 {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(b.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut p = vec![
            0x10,
            (13 + id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x02,
            0,
            60,
            0,
        ];
        p.extend_from_slice(&(id.len() as u16).to_be_bytes());
        p.extend_from_slice(id.as_bytes());
        s.write_all(&p).unwrap();
        let mut c = RawV5(s);
        let (kind, body) = c.packet().expect("CONNACK");
        assert_eq!((kind, body.get(1)), (0x20, Some(&0)), "CONNACK success");
        c
    }

    /// Next packet: (first byte, body), or None on EOF.
    fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut b = [0u8; 1];
        self.0.read_exact(&mut b).ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut d = [0u8; 1];
            self.0.read_exact(&mut d).ok()?;
            len |= ((d[0] & 0x7f) as usize) << shift;
            shift += 7;
            if d[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).ok()?;
        Some((b[0], body))
    }

    /// The reason code of the DISCONNECT the broker sends before closing.
    fn disconnect_reason(&mut self) -> Option<u8> {
        while let Some((kind, body)) = self.packet() {
            if kind == 0xE0 {
                return Some(body.first().copied().unwrap_or(0));
            }
        }
        None
    }
}

#[test]
fn ctl_kick_tells_a_v5_client_administrative_action() {
    let b = OpsBroker::start("e2e-kick5", &[]);
    let mut c = RawV5::connect(&b, "victim5");
    let (code, _, err) = b.ctl(&["client", "kick", "victim5"]);
    assert_eq!(code, 0, "{err}");
    // [MQTT-3.14.1] v5 DISCONNECT from the server: 0x98 Administrative action.
    assert_eq!(c.disconnect_reason(), Some(0x98));
}

#[test]
fn ctl_shutdown_tells_v5_clients_server_shutting_down() {
    let mut b = OpsBroker::start("e2e-shut5", &[]);
    let mut c = RawV5::connect(&b, "c5");
    let (code, _, err) = b.ctl(&["shutdown"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(c.disconnect_reason(), Some(0x8B));
    assert_eq!(b.wait_exit(WAIT), Some(0));
}
