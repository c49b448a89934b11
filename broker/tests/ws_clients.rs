//! paho-mqtt (Python, from PyPI; `.ci/run` installs it), a client we did not
//! write, over `ws://` and `wss://` (`transport="websockets"`), MQTT 3.1,
//! 3.1.1 and 5.0 on two shards: QoS 0/1/2, a retained message and a 300 KB
//! payload (many TCP reads, TLS records and WebSocket frames), checked by
//! `tests/clients/paho_check.py`.
#[macro_use]
mod common;

use std::process::Command;

use common::tls::Pki;
use common::*;
use ringmq_shard::config::{Listener, Transport};
use ringmq_shard::stats::CloseReason;

fn ws_and_wss(shards: usize) -> Broker {
    let pki = Pki::shared();
    Broker::start_with(shards, |c| {
        let mut ws = Listener::mqtt("127.0.0.1:0".parse().unwrap());
        ws.transport = Transport::Ws {
            path: "/mqtt".into(),
        };
        let mut wss = ws.clone();
        wss.transport = Transport::Wss {
            path: "/mqtt".into(),
        };
        wss.tls = pki.server_files();
        c.listen = vec![ws, wss];
    })
}

fn paho(port: u16, proto: &str, run: &str, cafile: Option<&std::path::Path>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_check.py");
    let port = port.to_string();
    let mut args = vec![
        "60",
        "python3",
        script,
        "--port",
        &port,
        "--transport",
        "websockets",
        "--path",
        "/mqtt",
        "--proto",
        proto,
        "--run",
        run,
    ];
    let ca;
    if let Some(f) = cafile {
        ca = f.display().to_string();
        args.extend(["--cafile", &ca]);
    }
    let out = Command::new("timeout")
        .args(&args)
        .output()
        .expect("python3 (paho-mqtt: .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho {run}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"ok\": true"), "{run}: {text}");
    assert!(text.contains("\"big_intact\": true"), "{run}: {text}");
}

#[test]
fn paho_mqtt_over_ws_and_wss() {
    let b = ws_and_wss(2);
    let addrs = b.addrs();
    let ca = &Pki::shared().ca;
    for proto in ["3", "4", "5"] {
        paho(addrs[0].port(), proto, &format!("ws{proto}"), None);
        paho(addrs[1].port(), proto, &format!("wss{proto}"), Some(ca));
    }
    let ends = || {
        CloseReason::ALL
            .iter()
            .map(|&r| (r.as_str(), b.stat(|s| s.closes_for(r))))
            .filter(|&(_, n)| n > 0)
            .collect::<Vec<_>>()
    };
    // Every client's end is counted under some reason. paho sends DISCONNECT, then closes;
    // a close that overtakes it counts as lost, and how TLS ends under load varies (io or
    // TLS error on a reset): only the WebSocket reasons below would be a fault of ours.
    check_for_blocking(WAIT * 3, "12 clients closed", || {
        let n: u64 = ends().iter().map(|&(_, n)| n).sum();
        (n >= 12).then_some(())
    });
    eprintln!("closes: {:?}", ends());
    for r in [
        CloseReason::WsProtocolError,
        CloseReason::WsUnsupportedData,
        CloseReason::WsMessageTooBig,
        CloseReason::WsUpgradeRefused,
    ] {
        assert_eq!(b.stat(|s| s.closes_for(r)), 0, "{r:?}: {:?}", ends());
    }
}
