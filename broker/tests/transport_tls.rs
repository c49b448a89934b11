//! TLS listeners with clients we did not write: mosquitto_pub/sub (`--cafile`, mTLS with
//! good, wrong-CA, expired and missing client certificates), `openssl s_client` (old versions
//! refused, ALPN `mqtt`, resumption), plus bad input on raw sockets (garbage, plain MQTT on TLS,
//! a ClientHello on a plain listener, truncated and stalled handshakes) with the typed close
//! reason each must be counted under, and certificate reload.
//!
//! The conformance suites also run over TLS: `RINGMQ_TEST_TRANSPORT=tls` (common/tls.rs).

mod common;

use common::tls::Pki;
use common::{check_for_blocking, Broker, WAIT};
use ringmq_shard::config::{Listener, TlsFiles, Transport};
use ringmq_shard::stats::CloseReason;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn mqtts(tls: TlsFiles) -> Listener {
    Listener {
        addr: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Mqtts,
        tls,
        proxy_protocol: false,
        allow_anonymous: None,
    }
}

/// A broker with a TLS listener (first) and a plain one (second).
fn broker(shards: usize, tls: TlsFiles) -> Broker {
    Broker::start_with(shards, |c| {
        c.listen = vec![mqtts(tls), Listener::mqtt("127.0.0.1:0".parse().unwrap())];
    })
}

fn closes(b: &Broker, r: CloseReason) -> u64 {
    b.stat(|s| s.closes_for(r))
}

/// Waits until `reason` was counted at least `n` times, on the shards and on listener `li`.
fn expect_closes(b: &Broker, li: u16, r: CloseReason, n: u64) {
    check_for_blocking(WAIT + Duration::from_secs(10), r.as_str(), || {
        let per_listener = b.stat(|s| s.listener(li).map_or(0, |l| l.failures_for(r)));
        (closes(b, r) >= n && per_listener >= n).then_some(())
    });
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed?)"))
}

fn pub_args(addr: SocketAddr, topic: &str, msg: &str, v: &str) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        addr.port().to_string(),
        "-V".into(),
        v.into(),
        "-t".into(),
        topic.into(),
        "-m".into(),
        msg.into(),
    ]
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// mosquitto_pub with `extra` TLS arguments; its exit status.
fn mosquitto_pub(addr: SocketAddr, extra: &[String], v: &str) -> bool {
    let mut args = pub_args(addr, "tls/t", "x", v);
    args.extend(extra.iter().cloned());
    run(Command::new("timeout")
        .arg("10")
        .arg("mosquitto_pub")
        .args(&args))
    .status
    .success()
}

#[test]
fn mosquitto_pub_sub_over_tls_with_cafile_v311_and_v5_on_two_shards() {
    let pki = Pki::shared();
    let b = broker(2, pki.server_files());
    let addr = b.addrs()[0];
    for (i, v) in ["mqttv311", "mqttv5"].iter().enumerate() {
        let topic = format!("tls/{i}");
        let mut sub = Command::new("timeout")
            .args(["10", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
            .arg(addr.port().to_string())
            .args(["--cafile", &path(&pki.ca), "-V", v, "-t", &topic, "-C", "1"])
            .args(["-i", &format!("sub-{i}"), "-q", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        // Retry the publish until the subscriber (its own TLS handshake) is in.
        check_for_blocking(WAIT, "mosquitto_sub got the message", || {
            let mut args = pub_args(addr, &topic, "hello over tls", v);
            args.extend(["--cafile".into(), path(&pki.ca), "-q".into(), "1".into()]);
            let ok = run(Command::new("mosquitto_pub").args(&args))
                .status
                .success();
            assert!(ok, "mosquitto_pub over TLS failed");
            match sub.try_wait().unwrap() {
                Some(_) => Some(()),
                None => {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            }
        });
        let mut out = String::new();
        sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), "hello over tls", "{v}");
    }
    assert!(b.stat(|s| s.listener(0).map_or(0, |l| l.handshakes.get())) >= 4);
}

#[test]
fn mtls_refuses_wrong_ca_expired_and_missing_certificates_in_the_handshake() {
    let pki = Pki::shared();
    let files = TlsFiles {
        client_ca: Some(pki.ca.clone()),
        require_client_cert: true,
        ..pki.server_files()
    };
    let b = broker(1, files);
    let addr = b.addrs()[0];
    let with = |pair: &common::tls::Pair| {
        vec![
            "--cafile".to_string(),
            path(&pki.ca),
            "--cert".into(),
            path(&pair.cert),
            "--key".into(),
            path(&pair.key),
        ]
    };
    for v in ["mqttv311", "mqttv5"] {
        assert!(mosquitto_pub(addr, &with(&pki.client), v), "good cert {v}");
        assert!(
            !mosquitto_pub(addr, &with(&pki.foreign_client), v),
            "wrong CA {v}"
        );
        assert!(
            !mosquitto_pub(addr, &with(&pki.expired_client), v),
            "expired {v}"
        );
        assert!(
            !mosquitto_pub(addr, &["--cafile".into(), path(&pki.ca)], v),
            "none {v}"
        );
    }
    expect_closes(&b, 0, CloseReason::TlsBadCertificate, 6);
}

#[test]
fn identity_as_username_needs_a_verified_certificate() {
    let pki = Pki::shared();
    let files = TlsFiles {
        client_ca: Some(pki.ca.clone()),
        require_client_cert: false,
        identity_as_username: true,
        ..pki.server_files()
    };
    let b = broker(1, files);
    let addr = b.addrs()[0];
    let good = [
        "--cafile".to_string(),
        path(&pki.ca),
        "--cert".into(),
        path(&pki.client.cert),
        "--key".into(),
        path(&pki.client.key),
    ];
    assert!(
        mosquitto_pub(addr, &good, "mqttv5"),
        "CN alice is the user name"
    );
    // No certificate: no identity to take the user name from, CONNACK Not authorized.
    assert!(!mosquitto_pub(
        addr,
        &["--cafile".into(), path(&pki.ca)],
        "mqttv5"
    ));
    expect_closes(&b, 0, CloseReason::ConnectRefused, 1);
}

/// `openssl s_client` sending one newline (not MQTT: the broker closes, after the TLS 1.3
/// session tickets have gone out, which `-sess_out` needs).
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-CAfile", &path(&Pki::shared().ca)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (is openssl installed?)");
    let _ = child.stdin.take().unwrap().write_all(b"\n");
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn openssl_old_versions_refused_alpn_mqtt_and_resumption() {
    let pki = Pki::shared();
    let b = broker(1, pki.server_files());
    let addr = b.addrs()[0];
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(addr, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(
            out.contains("Cipher is (NONE)") || out.contains("no protocols available"),
            "{old} must be refused: {out}"
        );
    }
    let out = s_client(addr, &["-alpn", "mqtt"]);
    assert!(out.contains("ALPN protocol: mqtt"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = pki.dir.join(format!("sess{version}.pem"));
        let _ = std::fs::remove_file(&sess);
        let first = s_client_mqtt(addr, &[version, "-sess_out", &path(&sess)], &|_| {
            sess.exists()
        });
        assert!(first.contains("New,"), "{first}");
        let again = s_client_mqtt(addr, &[version, "-sess_in", &path(&sess)], &|out| {
            out.contains("Reused,") || out.contains("New,")
        });
        assert!(again.contains("Reused,"), "{version} resumption: {again}");
    }
}

/// `openssl s_client` as an MQTT client: sends a CONNECT (the broker keeps the connection),
/// holds the connection until `done(output so far)` (a TLS 1.3 ticket arrives after the
/// handshake), then hangs up; returns what it printed.
fn s_client_mqtt(addr: SocketAddr, args: &[&str], done: &dyn Fn(&str) -> bool) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-CAfile", &path(&Pki::shared().ca)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (is openssl installed?)");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&common::raw::bytes_of::connect_ok(4, "s-client"));
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    check_for_blocking(WAIT, "s_client session", || {
        done(&seen.lock().unwrap()).then_some(())
    });
    drop(stdin);
    let _ = child.wait();
    let _ = reader.join();
    let out = seen.lock().unwrap().clone();
    out
}

/// Sends `bytes` on a fresh socket, then half-closes if `eof`; returns once the broker closed.
fn send_and_wait_close(addr: SocketAddr, bytes: &[u8], eof: bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    if eof {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {} // an alert, then the close
        }
    }
}

/// The start of a TLS 1.2 record carrying a ClientHello, announcing 512 bytes.
const HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4,
];

#[test]
fn bad_input_closes_each_with_its_typed_reason_and_others_go_on() {
    let pki = Pki::shared();
    let b = broker(1, pki.server_files());
    let (tls, plain) = (b.addrs()[0], b.addrs()[1]);
    send_and_wait_close(tls, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    expect_closes(&b, 0, CloseReason::TlsNotTls, 1);
    // Plain MQTT CONNECT on the TLS listener.
    let connect = common::raw::bytes_of::connect_ok(4, "plain-on-tls");
    send_and_wait_close(tls, &connect, false);
    expect_closes(&b, 0, CloseReason::TlsNotTls, 2);
    // A ClientHello on the plain listener.
    send_and_wait_close(plain, HELLO_START, false);
    expect_closes(&b, 1, CloseReason::TlsOnPlainListener, 1);
    // A handshake record whose body never comes: the peer hangs up mid-way.
    send_and_wait_close(tls, HELLO_START, true);
    expect_closes(&b, 0, CloseReason::HandshakeTruncated, 1);
    // A handshake record holding an empty ClientHello: a handshake failure.
    send_and_wait_close(tls, &[0x16, 0x03, 0x03, 0x00, 0x04, 0x01, 0, 0, 0], false);
    expect_closes(&b, 0, CloseReason::TlsHandshakeFailed, 1);
    // A client that still works: mosquitto over TLS.
    assert!(mosquitto_pub(
        tls,
        &["--cafile".into(), path(&pki.ca)],
        "mqttv5"
    ));
}

#[test]
fn stalled_handshake_is_shed_at_the_connect_deadline() {
    let pki = Pki::shared();
    let b = broker(1, pki.server_files());
    let tls = b.addrs()[0];
    // Slowloris: part of a ClientHello, then nothing (the socket stays open).
    send_and_wait_close(tls, HELLO_START, false);
    expect_closes(&b, 0, CloseReason::HandshakeTimeout, 1);
}

/// The DER of the certificate a fresh TLS connection to `addr` is shown.
fn served_cert(addr: SocketAddr) -> Vec<u8> {
    let cfg = Pki::shared().client_config(None);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem)
        .unwrap()
        .to_vec()
}

#[test]
fn reload_serves_new_certificates_and_keeps_the_old_on_a_bad_file() {
    let pki = Pki::shared();
    let dir = common::broker::scratch_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let files = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        ..TlsFiles::default()
    };
    let b = broker(2, files);
    let addr = b.addrs()[0];
    assert_eq!(served_cert(addr), der_of(&pki.server.cert));
    std::fs::copy(&pki.server2.cert, &cert).unwrap();
    std::fs::copy(&pki.server2.key, &key).unwrap();
    b.handle().reload_tls().expect("reload");
    assert_eq!(served_cert(addr), der_of(&pki.server2.cert));
    // A key that does not match: refused, the last good pair stays.
    std::fs::copy(&pki.server.key, &key).unwrap();
    let err = b.handle().reload_tls().unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    std::fs::write(&key, "not a key").unwrap();
    let err = b.handle().reload_tls().unwrap_err();
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert_eq!(served_cert(addr), der_of(&pki.server2.cert));
}

/// paho-mqtt (Python, from PyPI; `.ci/run` installs it) over TLS with the CA file, MQTT 3.1.1
/// and 5.0 on two shards: QoS 0/1/2, retained, a 300 KB payload (many TLS records and reads).
#[test]
fn paho_mqtt_over_tls_v311_and_v5() {
    let pki = Pki::shared();
    let b = broker(2, pki.server_files());
    let port = b.addrs()[0].port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_check.py");
    for proto in ["4", "5"] {
        let out = run(Command::new("timeout").args([
            "60",
            "python3",
            script,
            "--port",
            &port,
            "--proto",
            proto,
            "--cafile",
            &path(&pki.ca),
            "--run",
            &format!("tls{proto}"),
        ]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "paho over TLS (v{proto}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("\"big_intact\": true"), "{text}");
    }
}

/// The binary re-reads its certificates on SIGHUP; a bad file keeps the last good pair and the
/// broker goes on serving.
#[test]
fn sighup_reloads_certificates_of_the_binary() {
    let pki = Pki::shared();
    let dir = common::broker::scratch_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let b = common::BinBroker::start_args(&[
        "--listen",
        "mqtts://127.0.0.1:0",
        "--tls-cert",
        &path(&cert),
        "--tls-key",
        &path(&key),
        "--cores",
        "1",
    ]);
    let hup = || {
        // SAFETY: kill(2) on our own child's PID (a `Child` we have not reaped).
        unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGHUP) };
    };
    assert_eq!(served_cert(b.addr), der_of(&pki.server.cert));
    std::fs::copy(&pki.server2.cert, &cert).unwrap();
    std::fs::copy(&pki.server2.key, &key).unwrap();
    hup();
    check_for_blocking(WAIT, "the new certificate served after SIGHUP", || {
        (served_cert(b.addr) == der_of(&pki.server2.cert)).then_some(())
    });
    std::fs::write(&key, "not a key").unwrap();
    hup();
    // Watched for a while: the broker keeps serving the last good pair.
    let end = std::time::Instant::now() + common::QUIET;
    while std::time::Instant::now() < end {
        assert_eq!(served_cert(b.addr), der_of(&pki.server2.cert));
    }
}

/// SIGHUP and `ringmq ctl reload` reach the certificates through the reload
/// registry: a part of its own, its error naming the file, the old pair kept.
#[test]
fn reload_registry_reports_the_certificates_part() {
    let pki = Pki::shared();
    let dir = common::broker::scratch_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let files = TlsFiles {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        ..TlsFiles::default()
    };
    let b = broker(1, files);
    let part = |b: &common::Broker| {
        b.handle()
            .reload()
            .into_iter()
            .find(|o| o.name == "certificates")
            .expect("the certificates are a reload part")
    };
    let ok = part(&b);
    assert!(ok.ok, "{ok:?}");
    std::fs::write(&key, "not a key").unwrap();
    let bad = part(&b);
    assert!(
        !bad.ok && bad.message.contains(&key.display().to_string()),
        "{bad:?}"
    );
    assert_eq!(served_cert(b.addrs()[0]), der_of(&pki.server.cert));
}

/// The per-listener metrics (issue 11) as Prometheus serves them from the binary: accepted
/// connections, handshake failures by reason (garbage and plain MQTT on the TLS listener:
/// `tls_not_tls`) and the TLS handshake time histogram, labelled with the listener's URL.
#[test]
fn per_listener_metrics_are_scraped_from_the_binary() {
    let pki = Pki::shared();
    let dir = common::persist::DataDir::new();
    let args: Vec<String> = [
        "--listen",
        "mqtts://127.0.0.1:0",
        "--tls-cert",
        &path(&pki.server.cert),
        "--tls-key",
        &path(&pki.server.key),
        "--allow-anonymous",
        "true",
        "--cores",
        "1",
        "--durability",
        "none",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        &path(&dir.path),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let b = common::persist::Durable::start_args(&args);
    let url = format!("mqtts://{}", b.addr);
    send_and_wait_close(b.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    send_and_wait_close(
        b.addr,
        &common::raw::bytes_of::connect_ok(4, "plain"),
        false,
    );
    assert!(mosquitto_pub(
        b.addr,
        &["--cafile".into(), path(&pki.ca)],
        "mqttv5"
    ));
    let labels = format!("{{shard=\"0\",listener=\"{url}\"");
    let sample = |name: &str, extra: &str| format!("ringmq_{name}{labels}{extra}}}");
    check_for_blocking(WAIT, "the scrape shows the listener's counters", || {
        let failures = b.metric(&sample(
            "listener_handshake_failures_total",
            ",reason=\"tls_not_tls\"",
        ));
        (failures == Some(2.0)).then_some(())
    });
    let accepted = b.metric(&sample("listener_connections_accepted_total", ""));
    assert!(accepted >= Some(3.0), "{accepted:?}");
    let handshakes = b.metric(&sample("listener_tls_handshake_seconds_count", ""));
    assert!(handshakes >= Some(1.0), "{handshakes:?}");
    let inf = b.metric(&sample(
        "listener_tls_handshake_seconds_bucket",
        ",le=\"+Inf\"",
    ));
    assert_eq!(inf, handshakes, "the +Inf bucket counts every handshake");
}
