//! MQTT.js (npm `mqtt`, a client we did not write) in headless Chromium
//! (Debian's `chromium`) against `ws://` and `wss://` listeners.
//!
//! The test serves `tests/browser/page.html` and MQTT.js's browser bundle
//! (`tests/browser/node_modules/mqtt/dist/mqtt.min.js`, installed by `npm ci`
//! in `.ci/run`) from a small HTTP server of its own, starts Chromium on that
//! page, and waits for the page to POST what its subscriber received. For
//! `wss`, Chromium trusts exactly the test server certificate's public key
//! (`--ignore-certificate-errors-spki-list` with its SHA-256 SPKI hash, made
//! by `openssl`), not every certificate.
#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::tls::Pki;
use common::*;
use ringmq_shard::config::{Listener, Transport};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Serves the page and the bundle; sends each POST /result body to the channel.
fn serve(tx: mpsc::Sender<String>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = browser_dir();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let dir = dir.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("");
                let (status, kind, body) = if line.starts_with("POST /result") {
                    let mut b = vec![0; len];
                    let _ = r.read_exact(&mut b);
                    let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
                    ("200 OK", "text/plain", Vec::new())
                } else if path.starts_with("/page.html") {
                    (
                        "200 OK",
                        "text/html",
                        std::fs::read(dir.join("page.html")).unwrap(),
                    )
                } else if path == "/mqtt.min.js" {
                    let js = dir.join("node_modules/mqtt/dist/mqtt.min.js");
                    ("200 OK", "text/javascript", std::fs::read(js).unwrap())
                } else {
                    ("404 Not Found", "text/plain", Vec::new())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    port
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, by openssl.
fn spki_hash(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | openssl base64 -A",
            cert.display()
        ))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A %-encoding good enough for a JSON query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn mqtt_js_in_chromium_over_ws_and_wss() {
    let bundle = browser_dir().join("node_modules/mqtt/dist/mqtt.min.js");
    assert!(
        bundle.exists(),
        "{} missing: run `npm ci` in broker/tests/browser (.ci/run does)",
        bundle.display()
    );
    let pki = Pki::shared();
    let b = Broker::start_with(2, |c| {
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
    });
    let addrs = b.addrs();
    let (ws, wss) = (addrs[0], addrs[1]);
    let mut cases = Vec::new();
    for v in [3, 4, 5] {
        cases.push(
            serde_json::json!({"url": format!("ws://{ws}/mqtt"), "v": v, "run": format!("ws{v}")}),
        );
        cases.push(serde_json::json!({"url": format!("wss://127.0.0.1:{}/mqtt", wss.port()), "v": v, "run": format!("wss{v}")}));
    }
    let cases = serde_json::Value::Array(cases).to_string();
    let (tx, rx) = mpsc::channel();
    let http = serve(tx);
    let profile = common::broker::scratch_dir();
    let page = format!(
        "http://127.0.0.1:{http}/page.html?cases={}",
        urlencode(&cases)
    );
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_hash(&pki.server.cert)
        ))
        .arg(&page)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so its helpers are stopped with it, by that group's id.
        .process_group(0)
        .spawn()
        .expect("start chromium (Debian package `chromium`; .ci/run installs it)");
    let got = rx.recv_timeout(Duration::from_secs(90));
    let pgid = chromium.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group we created for our own child; no memory is shared.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let got = got.expect("the page reported within 90 s");
    eprintln!("page: {got}");
    let results: serde_json::Value = serde_json::from_str(&got).expect("JSON from the page");
    let results = results.as_array().expect("one result per case");
    assert_eq!(results.len(), 6, "{got}");
    for r in results {
        let run = r["run"].as_str().unwrap();
        assert_eq!(r["ok"], true, "{run}: {r}");
        let got = r["got"].as_array().unwrap();
        let mut seen: Vec<(String, u64, u64, bool)> = got
            .iter()
            .map(|m| {
                let t = m["topic"].as_str().unwrap();
                let t = t.rsplit('/').next().unwrap().to_string();
                let text_ok = match t.as_str() {
                    "q0" => m["text"] == "zero",
                    "q1" => m["text"] == "one",
                    "q2" => m["text"] == "two",
                    _ => m["intact"] == true,
                };
                (
                    t,
                    m["len"].as_u64().unwrap(),
                    m["qos"].as_u64().unwrap(),
                    text_ok,
                )
            })
            .collect();
        seen.sort();
        let want: Vec<(String, u64, u64, bool)> = vec![
            ("big".into(), 100_000, 1, true),
            ("q0".into(), 4, 0, true),
            ("q1".into(), 3, 1, true),
            ("q2".into(), 3, 2, true),
        ];
        assert_eq!(seen, want, "{run}: {r}");
    }
    // Every connection went through an upgrade on its listener: 12 clients, 6 per listener.
    let opened = |i: u16| b.stat(|s| s.listener(i).map_or(0, |l| l.accepted.get()));
    assert!(
        opened(0) >= 6 && opened(1) >= 6,
        "ws {} wss {}",
        opened(0),
        opened(1)
    );
}
