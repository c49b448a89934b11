//! The admin socket's protocol, permissions and `ringmq ctl` against a fake
//! backend (the end-to-end tests against the real broker are in ctl_e2e.rs).

#[path = "ctl_support/mod.rs"]
mod support;

use ringmq_broker::admin::protocol::Handler;
use ringmq_broker::admin::AdminServer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use support::{ringmq, scratch, FakeBackend};

fn server(dir: &Path) -> (AdminServer, Arc<FakeBackend>, Arc<Mutex<Vec<String>>>) {
    let backend = Arc::new(FakeBackend::default());
    let levels = Arc::new(Mutex::new(Vec::new()));
    let l2 = levels.clone();
    let set: ringmq_broker::logging::SetLevel = Arc::new(move |lvl: &str| {
        ringmq_broker::logging::parse_filter(lvl)?;
        l2.lock().unwrap().push(lvl.to_string());
        Ok(())
    });
    let handler = Handler::new(backend.clone(), Some(set));
    let srv = AdminServer::start(&dir.join("ringmq.sock"), handler).expect("admin socket");
    (srv, backend, levels)
}

/// One connection, several request lines, one response line each.
fn exchange(path: &Path, reqs: &[&str]) -> Vec<Value> {
    let mut s = UnixStream::connect(path).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    reqs.iter()
        .map(|req| {
            s.write_all(format!("{req}\n").as_bytes()).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            serde_json::from_str(&line).expect("response is JSON")
        })
        .collect()
}

fn error_code(v: &Value) -> &str {
    assert_eq!(v["ok"], json!(false), "{v}");
    v["error"]["code"].as_str().unwrap()
}

#[test]
fn admin_socket_is_mode_0600_and_replaces_a_stale_file() {
    let dir = scratch("perm");
    let path = dir.join("ringmq.sock");
    std::fs::write(&path, b"stale").unwrap();
    let (srv, _, _) = server(&dir);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second broker on the same socket is refused while the first runs.
    let err = AdminServer::start(&path, Handler::new(Arc::new(FakeBackend::default()), None))
        .err()
        .expect("socket in use");
    assert!(
        err.to_string().contains("in use by a running broker"),
        "{err}"
    );
    drop(srv);
    assert!(!path.exists(), "socket removed on stop");
}

#[test]
fn every_command_answers_on_one_connection() {
    let dir = scratch("cmds");
    let (srv, backend, levels) = server(&dir);
    let r = exchange(
        srv.path(),
        &[
            r#"{"cmd":"status","id":1}"#,
            r#"{"cmd":"clients","match":"sensor-*"}"#,
            r#"{"cmd":"clients","shard":1}"#,
            r#"{"cmd":"client.show","client_id":"app"}"#,
            r#"{"cmd":"client.kick","client_id":"app"}"#,
            r#"{"cmd":"sessions"}"#,
            r#"{"cmd":"subscriptions","topic":"a/b"}"#,
            r#"{"cmd":"retained.list"}"#,
            r#"{"cmd":"retained.delete","topic":"a/b"}"#,
            r#"{"cmd":"metrics"}"#,
            r#"{"cmd":"log-level","level":"debug"}"#,
            r#"{"cmd":"drain"}"#,
            r#"{"cmd":"shutdown"}"#,
        ],
    );
    for v in &r {
        assert_eq!(v["ok"], json!(true), "{v}");
    }
    assert_eq!(r[0]["id"], json!(1), "id echoed");
    assert_eq!(r[0]["result"]["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(r[0]["result"]["shards"], json!(2));
    assert_eq!(r[0]["result"]["connections"], json!(3));
    assert!(r[0]["result"]["messages_in_per_sec"].as_f64().unwrap() > 0.0);
    let ids = |v: &Value| -> Vec<String> {
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&r[1]), ["sensor-1", "sensor-2"]);
    assert_eq!(ids(&r[2]), ["sensor-2", "app"]);
    assert_eq!(r[3]["result"]["client_id"], json!("app"));
    assert_eq!(*backend.kicked.lock().unwrap(), ["app"]);
    assert_eq!(r[6]["result"][0]["filter"], json!("a/+"));
    assert_eq!(r[7]["result"][0]["topic"], json!("a/b"));
    assert_eq!(r[9]["result"]["shards"].as_array().unwrap().len(), 2);
    assert_eq!(*levels.lock().unwrap(), ["debug"]);
    assert!(backend.drained.load(Ordering::SeqCst));
    assert!(backend.shut_down.load(Ordering::SeqCst));
}

#[test]
fn errors_come_back_as_json_with_a_code() {
    let dir = scratch("errs");
    let (srv, _, _) = server(&dir);
    let r = exchange(
        srv.path(),
        &[
            r#"{"cmd":"frobnicate"}"#,
            "not json",
            "[1,2]",
            r#"{"nocmd":1}"#,
            r#"{"cmd":"client.kick"}"#,
            r#"{"cmd":"client.kick","client_id":"ghost","id":"x"}"#,
            r#"{"cmd":"retained.delete","topic":"none"}"#,
            r#"{"cmd":"log-level","level":"loud=="}"#,
            r#"{"cmd":"status"}"#,
        ],
    );
    assert_eq!(error_code(&r[0]), "unknown_command");
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown command \"frobnicate\""));
    assert_eq!(error_code(&r[1]), "bad_json");
    assert_eq!(error_code(&r[2]), "bad_json");
    assert_eq!(error_code(&r[3]), "bad_request");
    assert_eq!(error_code(&r[4]), "bad_request");
    assert!(r[4]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("client_id"));
    assert_eq!(error_code(&r[5]), "not_found");
    assert_eq!(r[5]["id"], json!("x"));
    assert_eq!(error_code(&r[6]), "not_found");
    assert_eq!(error_code(&r[7]), "bad_request");
    assert_eq!(r[8]["ok"], json!(true), "the connection survives errors");
}

#[test]
fn ctl_binary_talks_to_the_socket() {
    let dir = scratch("ctlbin");
    let (srv, backend, _) = server(&dir);
    let sock = srv.path().to_str().unwrap().to_string();
    let (code, out, err) = ringmq(&[
        "ctl",
        "--admin-socket",
        &sock,
        "clients",
        "--match",
        "sensor-*",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("CLIENT_ID  SHARD"), "{out}");
    assert!(
        rows[1].starts_with("sensor-1 ") && rows[2].starts_with("sensor-2 "),
        "{out}"
    );
    assert_eq!(rows.len(), 3, "{out}");
    // Found through --data-dir, as the broker puts it there by default.
    let d = dir.to_str().unwrap();
    let (code, out, _) = ringmq(&["ctl", "--data-dir", d, "status"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["shards", "2"])),
        "{out}"
    );
    // Also through the broker's own flag before the subcommand.
    let (code, _, _) = ringmq(&["--data-dir", d, "ctl", "client", "kick", "app"]);
    assert_eq!(code, 0);
    assert_eq!(*backend.kicked.lock().unwrap(), ["app"]);
    let (code, _, err) = ringmq(&["ctl", "--data-dir", d, "client", "kick", "ghost"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: ") && err.trim().ends_with("(not_found)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let (code, _, err) = ringmq(&["ctl", "--data-dir", d, "raw", r#"{"cmd":"nope"}"#]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown command \"nope\"") && err.contains("(unknown_command)"),
        "{err}"
    );
    let (code, out, _) = ringmq(&["ctl", "--data-dir", d, "--json", "retained", "list"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["result"][0]["topic"], json!("a/b"));
}

#[test]
fn ctl_without_a_broker_is_a_one_line_error() {
    let dir = scratch("nobroker");
    let (code, _, err) = ringmq(&["ctl", "--data-dir", dir.to_str().unwrap(), "status"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: admin socket ") && err.contains("ringmq.sock"),
        "{err}"
    );
}
