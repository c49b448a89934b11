//! Issue 14's operations over real processes: three `ringmq --cores 1` binaries on
//! 127.0.0.1, clients we did not write (mosquitto_sub) on each node.
//! - `ringmq ctl clients` asked of any node lists every node's clients, each row naming its
//!   node; `--node N` narrows, `--match` and `--limit` apply per node; a node that does not
//!   answer (stopped with SIGSTOP: its link stays up) is marked within the bounded wait, a
//!   node that is gone (kill -9) is marked with its link's state.
//! - `ctl cluster status` shows each node link's messages, bytes, batches, queue and round trip.
//! - `$SYS` is per node: each node publishes its own figures, tagged with its node id, and
//!   none crosses to another node.
//!
//! - HAProxy with deploy/haproxy.cfg in front of three nodes: MQTT health checks, PROXY v2,
//!   a node killed taken out. (A partition: `cluster_partition.rs`.)
//!
//! One test at a time per binary (a lock): each starts three processes on a 2-CPU machine.
mod cluster_support;
mod common;

use cluster_support::mosq::{collect, wait_links, Reaped, Sub, SETTLE};
use cluster_support::{Cluster, Node};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ctl --json clients ARGS` on `node`: the whole response line.
fn clients(node: &Node, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "clients"];
    a.extend(args);
    let (code, out, err) = node.ctl(&a);
    let v = serde_json::from_str(out.trim()).unwrap_or(Value::String(err));
    (code, v)
}

/// (node, client id) of every row.
fn rows(v: &Value) -> Vec<(u64, String)> {
    v["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["node"].as_u64().unwrap_or(0),
                        r["client_id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `nodes` entry of node `id`.
fn answer(v: &Value, id: u64) -> Value {
    v["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["node"] == id).cloned())
        .unwrap_or(Value::Null)
}

fn signal(node: &Node, sig: libc::c_int) {
    let pid = node.proc.as_ref().expect("running").pid();
    // SAFETY: kill(2) on a child process we started, by its PID.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

#[test]
fn ctl_clients_lists_every_node_and_marks_those_that_do_not_answer() {
    let _g = serial();
    let mut c = Cluster::start(3, &[]);
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, &[1, 2, 3]);
    // 2 clients on node 1, 1 on node 2, 3 on node 3.
    let placed = [(1, "ops-n1-a"), (1, "ops-n1-b"), (2, "ops-n2-a")]
        .into_iter()
        .chain([(3, "ops-n3-a"), (3, "ops-n3-b"), (3, "ops-n3-c")])
        .collect::<Vec<(u64, &str)>>();
    let _subs: Vec<Sub> = placed
        .iter()
        .map(|(n, id)| Sub::start(c.get(*n), id, "ops/x", &[]))
        .collect();
    let want: Vec<(u64, String)> = placed.iter().map(|(n, id)| (*n, id.to_string())).collect();

    // Asked of node 2: every node's clients, each row naming its node.
    let v = common::check_for_blocking(SETTLE, "6 clients over 3 nodes", || {
        let (code, v) = clients(c.get(2), &[]);
        (code == 0 && rows(&v) == want).then_some(v)
    });
    for id in [1, 2, 3] {
        let a = answer(&v, id);
        assert_eq!(a["answered"], true, "{v}");
    }
    assert_eq!(answer(&v, 3)["clients"], 3, "{v}");
    let row = &v["result"][0];
    assert_eq!(row["protocol"], 5, "{row}");
    assert!(
        row["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{row}"
    );

    // --node narrows; --match applies on the node asked and the others alike.
    let (code, v) = clients(c.get(1), &["--node", "3"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(rows(&v), want[3..].to_vec(), "{v}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = clients(c.get(1), &["--node", "1"]);
    assert_eq!(rows(&v), want[..2].to_vec(), "{v}");
    let (_, v) = clients(c.get(1), &["--match", "ops-n?-b"]);
    assert_eq!(
        rows(&v),
        vec![(1, "ops-n1-b".to_string()), (3, "ops-n3-b".to_string())],
        "{v}"
    );
    // --limit: rows per node, the node's full count still told.
    let (_, v) = clients(c.get(1), &["--limit", "1"]);
    assert_eq!(rows(&v).len(), 3, "{v}");
    assert_eq!(
        (
            answer(&v, 3)["clients"].as_u64(),
            answer(&v, 3)["shown"].as_u64()
        ),
        (Some(3), Some(1))
    );
    // A node id that is not a member.
    let (code, v) = clients(c.get(1), &["--node", "9"]);
    assert_eq!(code, 1, "{v}");

    // The table: a NODE column and one line per node.
    let (code, out, _) = c.get(1).ctl(&["clients", "--limit", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().next().is_some_and(|h| h.contains("NODE")),
        "{out}"
    );
    assert!(
        out.contains("node 3: 3 clients, 1 shown (--limit)"),
        "{out}"
    );

    // Node 3 stopped (SIGSTOP): its link stays up but it cannot answer. Node 1 lists
    // its own and node 2's clients after the bounded wait and marks node 3.
    signal(c.get(3), libc::SIGSTOP);
    let t = Instant::now();
    let (code, v) = clients(c.get(1), &["--wait-ms", "700"]);
    let took = t.elapsed();
    assert_eq!(code, 0, "{v}");
    assert_eq!(rows(&v), want[..3].to_vec(), "{v}");
    let a3 = answer(&v, 3);
    assert_eq!(a3["answered"], false, "{v}");
    assert!(
        a3["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within 700 ms")),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(700),
        "answered before the wait: {took:?}"
    );
    let (_, out, _) = c.get(1).ctl(&["clients", "--wait-ms", "300"]);
    assert!(
        out.contains("node 3: NO ANSWER (no answer within 300 ms)"),
        "{out}"
    );
    signal(c.get(3), libc::SIGCONT);
    common::check_for_blocking(SETTLE, "node 3 answers again", || {
        let (_, v) = clients(c.get(1), &[]);
        (rows(&v) == want).then_some(())
    });

    // Node 3 killed: once its link is down, the mark says so at once.
    c.node(3).kill9();
    let v = common::check_for_blocking(SETTLE, "node 3's link down", || {
        let (_, v) = clients(c.get(2), &["--wait-ms", "500"]);
        answer(&v, 3)["error"]
            .as_str()
            .is_some_and(|e| e.contains("down") || e.contains("closed"))
            .then_some(v)
    });
    assert_eq!(rows(&v), want[..3].to_vec(), "{v}");
}

#[test]
fn cluster_status_shows_link_counters_and_sys_stays_per_node() {
    let _g = serial();
    let c = Cluster::start(3, &["--sys-interval-secs", "1"]);
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, &[1, 2, 3]);
    // Traffic from node 1 to a subscriber on node 2.
    let sub = Sub::start(c.get(2), "ops-status-sub", "ops/s", &["-q", "1"]);
    common::check_for_blocking(SETTLE, "node 1 knows node 2's route", || {
        c.get(1).status().and_then(|s| {
            s["links"]
                .as_array()?
                .iter()
                .any(|l| l["peer"] == 2 && l["peer_routes"].as_u64() >= Some(1))
                .then_some(())
        })
    });
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &c.get(1).mqtt().port().to_string()])
        .args([
            "-i",
            "ops-status-pub",
            "-q",
            "1",
            "-t",
            "ops/s",
            "-m",
            "hello",
        ])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    let got = sub.lines_from_first(SETTLE, Duration::ZERO);
    assert!(got.iter().any(|l| l == "ops/s hello"), "{got:?}");

    // Node 1's link to node 2: messages, bytes, batches, queue, round trip (pings each second).
    let link = common::check_for_blocking(SETTLE, "link counters and a round trip", || {
        let s = c.get(1).status()?;
        let l = s["links"]
            .as_array()?
            .iter()
            .find(|l| l["peer"] == 2)?
            .clone();
        (l["msgs_out"].as_u64() >= Some(1) && l["rtt_us"].as_u64() > Some(0)).then_some(l)
    });
    for k in [
        "msgs_out",
        "msgs_in",
        "bytes_out",
        "bytes_in",
        "batches_out",
        "queue_bytes",
        "rtt_us",
    ] {
        assert!(link[k].is_u64(), "{k} missing: {link}");
    }
    assert!(link["bytes_out"].as_u64() > Some(0) && link["batches_out"].as_u64() > Some(0));
    let (code, out, _) = c.get(1).ctl(&["cluster", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("node links:"), "{out}");
    for col in [
        "MSGS_OUT",
        "BYTES_OUT",
        "BATCHES_OUT",
        "QUEUE_BYTES",
        "RTT_US",
    ] {
        assert!(out.contains(col), "{col} not in:\n{out}");
    }

    // $SYS per node: a subscriber on node 2 (and one on node 3) reads its own node's
    // figures only; nothing of another node crosses.
    let sys2 = Sub::start(c.get(2), "ops-sys-2", "$SYS/broker/cluster/node", &[]);
    let sys3 = Sub::start(c.get(3), "ops-sys-3", "$SYS/broker/cluster/node", &[]);
    let l2 = sys2.lines_from_first(SETTLE, Duration::from_millis(1500));
    let l3 = sys3.lines_from_first(SETTLE, Duration::from_millis(100));
    assert!(!l2.is_empty() && !l3.is_empty(), "{l2:?} {l3:?}");
    assert!(
        l2.iter().all(|l| l == "$SYS/broker/cluster/node 2"),
        "{l2:?}"
    );
    assert!(
        l3.iter().all(|l| l == "$SYS/broker/cluster/node 3"),
        "{l3:?}"
    );
    // Connected clients on node 3: its own (1 before this subscriber, 2 with it), never
    // the cluster's 4.
    let conn3 = Sub::start(c.get(3), "ops-sys-3c", "$SYS/broker/clients/connected", &[]);
    let l = conn3.lines_from_first(SETTLE, Duration::from_millis(1500));
    let ok = [
        "$SYS/broker/clients/connected 1",
        "$SYS/broker/clients/connected 2",
    ];
    assert!(
        !l.is_empty() && l.iter().all(|x| ok.contains(&x.as_str())),
        "{l:?}"
    );
}

/// HAProxy's `show stat` CSV over its stats socket: (backend, server) -> status.
fn haproxy_status(sock: &std::path::Path) -> Vec<(String, String, String)> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return Vec::new();
    };
    let _ = s.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.get(17)?.to_string(),
            ))
        })
        .collect()
}

/// deploy/haproxy.cfg as shipped, only its addresses (and connection limits) changed to three
/// local nodes listening
/// with `?proxy=true`: its MQTT health check (a CONNECT that must get CONNACK 0, sent after a
/// PROXY v2 header) marks every node up; clients through HAProxy reach each other across nodes
/// (the PROXY-only listeners accept them, so the header came first); a node killed is marked
/// down by the check and a client that hashed to it is served by another node.
#[test]
fn haproxy_with_the_shipped_config_spreads_clients_and_checks_nodes_with_mqtt() {
    let _g = serial();
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("skipped: haproxy not installed (apt-get install haproxy)");
        return;
    }
    let mut c = Cluster::start_listening(3, &[], |_| "mqtt://127.0.0.1:0?proxy=true".into());
    let ports: Vec<u16> = [1, 2, 3].map(|id| c.get(id).mqtt().port()).to_vec();
    c.wait_leader(&[1, 2, 3]);
    wait_links(&c, &[1, 2, 3]);
    let dir = common::broker::scratch_dir();
    let front = common::cluster::free_pair_below_ephemeral();
    let (sock, map) = (dir.join("stats.sock"), dir.join("prefix.map"));
    std::fs::write(&map, "").unwrap();
    let cfg = include_str!("../../deploy/haproxy.cfg")
        .replace("/etc/haproxy/ringmq-prefix.map", map.to_str().unwrap())
        .replace("bind :1883", &format!("bind 127.0.0.1:{front}"))
        // The descriptors a test may open (the shipped config asks for 2.1M).
        .replace("maxconn 1000000", "maxconn 1000")
        .replace("fd-hard-limit 2100000", "fd-hard-limit 4096")
        .replace("10.0.0.11:1883", &format!("127.0.0.1:{}", ports[0]))
        .replace("10.0.0.12:1883", &format!("127.0.0.1:{}", ports[1]))
        .replace("10.0.0.13:1883", &format!("127.0.0.1:{}", ports[2]))
        .replacen(
            "\nglobal\n",
            &format!(
                "\nglobal\n    stats socket {} mode 600 level admin\n",
                sock.display()
            ),
            1,
        );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let _hap = Reaped(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy"),
    );
    let servers = ["node_a", "node_b", "node_c"];
    let up = |backend: &str, want: &[&str]| {
        let st = haproxy_status(&sock);
        want.iter().all(|s| {
            st.iter()
                .any(|(b, n, status)| b == backend && n == s && status.starts_with("UP"))
        })
    };
    let end = Instant::now() + SETTLE;
    while !up("ringmq_by_client_id", &servers) {
        assert!(
            Instant::now() < end,
            "haproxy's MQTT check did not mark every node UP: {:?}\n{}",
            haproxy_status(&sock),
            std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Clients through HAProxy: a subscriber and a publisher, hashed by client id.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &front.to_string()])
        .args([
            "-i", "hap-sub", "-V", "mqttv5", "-q", "1", "-t", "hap/x", "-v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let sub = Sub::adopt(sub);
    let where_sub = common::check_for_blocking(SETTLE, "hap-sub connected on some node", || {
        [1u64, 2, 3].into_iter().find(|&n| {
            let (_, v) = clients(c.get(n), &["--node", &n.to_string()]);
            rows(&v).iter().any(|(_, id)| id == "hap-sub")
        })
    });
    common::check_for_blocking(SETTLE, "every node has hap-sub's route", || {
        [1u64, 2, 3]
            .into_iter()
            .filter(|&n| n != where_sub)
            .all(|n| {
                c.get(n).status().is_some_and(|s| {
                    s["links"].as_array().is_some_and(|ls| {
                        ls.iter()
                            .any(|l| l["peer"] == where_sub && l["peer_routes"].as_u64() >= Some(1))
                    })
                })
            })
            .then_some(())
    });
    let publish = |id: &str, m: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &front.to_string()])
            .args(["-i", id, "-V", "mqttv5", "-q", "1", "-t", "hap/x", "-m", m])
            .status()
            .is_ok_and(|s| s.success())
    };
    // Several publisher ids: they hash over the nodes, some to another node than hap-sub's.
    let sent: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for (i, m) in sent.iter().enumerate() {
        assert!(publish(&format!("hap-pub-{i}"), m), "{m} through haproxy");
    }
    assert_eq!(collect(&sub, "hap/x", &sent, Duration::from_secs(10)), sent);
    // The clients' own addresses reached the nodes (PROXY v2): no row shows HAProxy's
    // health-check connections as clients, and hap-sub's peer is a 127.0.0.1 port.
    let (_, v) = clients(c.get(1), &["--match", "hap-sub"]);
    assert!(
        v["result"][0]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{v}"
    );

    // kill -9 a node that is not hap-sub's: HAProxy's check marks it DOWN; publishers still
    // get through (those hashed to it go to another node) and hap-sub gets every message.
    let victim = [1u64, 2, 3].into_iter().find(|&n| n != where_sub).unwrap();
    c.node(victim).kill9();
    let vname = servers[victim as usize - 1];
    common::check_for_blocking(SETTLE, "haproxy marks the killed node DOWN", || {
        haproxy_status(&sock)
            .iter()
            .any(|(b, n, st)| b == "ringmq_by_client_id" && n == vname && st.starts_with("DOWN"))
            .then_some(())
    });
    let after: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    for (i, m) in after.iter().enumerate() {
        assert!(
            publish(&format!("hap-pub-{i}"), m),
            "{m} through haproxy, node {victim} down"
        );
    }
    assert_eq!(
        collect(&sub, "hap/x", &after, Duration::from_secs(10)),
        after
    );
    let _ = std::fs::remove_dir_all(&dir);
}
