//! TLS and WebSocket targets against Mosquitto (Debian's build has TLS and websockets
//! listeners), started here with the certificate bench/scripts/test-cert.sh makes:
//! pairs over tcp / tls / ws / wss on both protocol versions arrive complete, a wrong CA
//! is refused, client certificates load, a connection storm over TLS resumes sessions
//! or not, and `compare` picks each broker's listener for the scenario's transport.
//! Skipped with a message when mosquitto or openssl is missing.

mod common;

use common::scenario;
use ringmq_bench::brokers::{start_mosquitto_tls, BrokerProc, TlsFiles};
use ringmq_bench::run_scenario;
use std::path::PathBuf;

fn certs() -> Option<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmq-bench-certs-{}-{n}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cert.sh");
    let ok = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(dir)
}

fn setup() -> Option<(BrokerProc, PathBuf)> {
    let Some(bin) = common::mosquitto() else {
        eprintln!("SKIP: mosquitto not installed");
        return None;
    };
    let Some(dir) = certs() else {
        eprintln!("SKIP: openssl could not make a test certificate");
        return None;
    };
    let tls = TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let b = start_mosquitto_tls(bin.to_str().unwrap(), None, false, Some(&tls))
        .expect("mosquitto with TLS and websockets listeners");
    Some((b, dir))
}

fn pairs(
    port: u16,
    transport: &str,
    mqtt: &str,
    ca: &str,
    extra: &[&str],
) -> ringmq_bench::stats::Summary {
    let port = port.to_string();
    let mut args = vec![
        "pairs",
        "--pairs",
        "2",
        "--count",
        "100",
        "--rate",
        "1000",
        "--qos",
        "1",
        "--mqtt",
        mqtt,
        "--warmup",
        "0",
        "--drain",
        "3",
        "--port",
        &port,
        "--transport",
        transport,
        "--ca",
        ca,
        "--no-pin",
        "-q",
    ];
    args.extend_from_slice(extra);
    run_scenario(&scenario(&args)).unwrap_or_else(|e| panic!("{transport} v{mqtt}: {e}"))
}

#[test]
fn tls_and_websocket_targets_carry_every_message() {
    let Some((b, dir)) = setup() else { return };
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    for (transport, port) in [
        ("tcp", b.port),
        ("tls", b.port_tls.unwrap()),
        ("ws", b.port_ws.unwrap()),
        ("wss", b.port_wss.unwrap()),
    ] {
        for mqtt in ["3.1.1", "5"] {
            let s = pairs(port, transport, mqtt, ca, &["--tls-version", "1.3"]);
            assert!(s.errors.is_empty(), "{transport} v{mqtt}: {:?}", s.errors);
            assert_eq!(
                (s.sent, s.unique, s.lost),
                (200, 200, 0),
                "{transport} v{mqtt}"
            );
            assert_eq!(s.duplicated + s.out_of_order, 0);
            let scheme = match transport {
                "tcp" => "mqtt://",
                "tls" => "mqtts://",
                "ws" => "ws://",
                _ => "wss://",
            };
            assert!(s.broker.starts_with(scheme), "{}", s.broker);
        }
    }
    // The URL form, a pinned suite, a client certificate offered (Mosquitto does not ask).
    let url = format!("wss://127.0.0.1:{}/mqtt", b.port_wss.unwrap());
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let s = run_scenario(&scenario(&[
        "pairs",
        "--pairs",
        "1",
        "--count",
        "50",
        "--rate",
        "1000",
        "--warmup",
        "0",
        "--url",
        &url,
        "--ca",
        ca,
        "--tls-suite",
        "TLS13_AES_128_GCM_SHA256",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--no-pin",
        "-q",
    ]))
    .expect("wss by URL");
    assert_eq!((s.unique, s.lost), (50, 0), "{:?}", s.errors);
    b.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let Some((b, dir)) = setup() else { return };
    let other = certs().expect("second CA");
    let ca = other.join("ca.crt");
    let port = b.port_tls.unwrap().to_string();
    let r = run_scenario(&scenario(&[
        "pairs",
        "--pairs",
        "1",
        "--count",
        "10",
        "--warmup",
        "0",
        "--drain",
        "1",
        "--port",
        &port,
        "--tls",
        "--ca",
        ca.to_str().unwrap(),
        "--no-pin",
        "-q",
    ]));
    let failed = match r {
        Err(_) => true,
        Ok(s) => s.connect_failures > 0 && s.errors.iter().any(|e| e.contains("certificate")),
    };
    assert!(
        failed,
        "a server certificate from another CA must fail the handshake"
    );
    // Bad TLS options get one-line errors naming the flag.
    let ca_s = ca.to_str().unwrap();
    for (args, needle) in [
        (["--ca", ca_s, "--tls-suite", "NOPE"], "--tls-suite"),
        (["--ca", "/nonexistent.pem", "--tls-version", "1.3"], "--ca"),
    ] {
        let mut v = vec![
            "pairs", "--pairs", "1", "--count", "1", "--port", &port, "--tls",
        ];
        v.extend_from_slice(&args);
        v.extend(["--no-pin", "-q"]);
        let e = run_scenario(&scenario(&v)).unwrap_err();
        assert!(e.contains(needle), "{e}");
    }
    b.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn tls_connection_storm_with_and_without_resumption() {
    let Some((b, dir)) = setup() else { return };
    let ca = dir.join("ca.crt");
    let port = b.port_tls.unwrap().to_string();
    for extra in [&[][..], &["--no-tls-resume"][..]] {
        let mut args = vec![
            "conn",
            "-n",
            "40",
            "--hold",
            "0.1",
            "--port",
            &port,
            "--tls",
            "--ca",
            ca.to_str().unwrap(),
            "--no-pin",
            "-q",
        ];
        args.extend_from_slice(extra);
        let s = run_scenario(&scenario(&args)).expect("storm");
        assert_eq!(
            (s.connections, s.connect_failures),
            (40, 0),
            "{extra:?}: {:?}",
            s.errors
        );
    }
    b.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
