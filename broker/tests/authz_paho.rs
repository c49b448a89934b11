//! The same ACL file and the same paho-mqtt scenario (broker/tests/py/acl_paho.py)
//! run against Debian's mosquitto and against ringmq (1 and 2 shards), MQTT
//! 3.1.1 and 5.0: every delivery and every PUBACK code must agree. SUBACK
//! differs by design: Mosquitto 2.x grants every SUBSCRIBE (its ACL check
//! for subscriptions is a no-op) and filters per message; ringmq refuses a
//! filter no topic of which is readable (0x80 / 0x87), so the client learns
//! it at once. Both deliver exactly the same messages.
#[macro_use]
mod common;

use serde_json::Value;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACL: &str = "\
# anonymous clients
topic read public/#
topic deny public/secret
topic write anon/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/private/#

user bob
topic readwrite bob/#
topic write sensors/#
topic write public/#

pattern readwrite devices/%c/#
";

/// Debian's mosquitto on a free port with the ACL; killed by PID on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto(dir: &std::path::Path, acl: &std::path::Path) -> Mosquitto {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}\npersistence false\nlog_dest none\n",
            acl.display()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt-get install mosquitto, as .ci/run does)");
    let m = Mosquitto { child, port };
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "mosquitto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

fn scenario(port: u16, proto: &str, prefix: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/acl_paho.py");
    let out = Command::new("timeout")
        .args([
            "30",
            "python3",
            script,
            "127.0.0.1",
            &port.to_string(),
            proto,
            prefix,
        ])
        .output()
        .expect("python3 with paho-mqtt (pip install paho-mqtt, as .ci/run does)");
    assert!(
        out.status.success(),
        "acl_paho.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from acl_paho.py")
}

fn compare(ringmq: &Value, mosq: &Value, proto: &str) {
    let refused = if proto == "5" { 0x87 } else { 0x80 };
    for client in ["alice", "bob", "anon"] {
        let (r, m) = (&ringmq[client], &mosq[client]);
        // As sets: with overlapping subscriptions mosquitto's v5 sends one copy
        // per subscription, ringmq one per session (both allowed, v5 3.3.4).
        let set = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(
            set(&r["received"]),
            set(&m["received"]),
            "{client}: deliveries differ ({proto})"
        );
        assert_eq!(
            r["puback"], m["puback"],
            "{client}: PUBACK codes differ ({proto})"
        );
        for (filter, code) in r["suback"].as_object().unwrap() {
            let mc = &m["suback"][filter];
            if code.as_u64() == Some(refused) {
                assert_eq!(mc.as_u64(), Some(1), "{client} {filter}: mosquitto grants");
            } else {
                assert_eq!(code, mc, "{client} {filter}: SUBACK differs ({proto})");
            }
        }
    }
}

#[test]
fn ringmq_and_mosquitto_decide_alike_with_paho() {
    let dir = common::broker::scratch_dir();
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let mosq = mosquitto(&dir, &acl);
    for shards in [1, 2] {
        let a = acl.clone();
        let b = common::Broker::start_with(shards, move |c| c.access.acl_file = Some(a));
        for proto in ["311", "5"] {
            let prefix = format!("p{proto}s{shards}");
            let m = scenario(mosq.port, proto, &prefix);
            let r = scenario(b.addr.port(), proto, &prefix);
            compare(&r, &m, proto);
            // The scenario exercised every kind of decision.
            let alice = &r["alice"];
            assert_eq!(
                alice["suback"]["bob/#"].as_u64(),
                Some(if proto == "5" { 0x87 } else { 0x80 })
            );
            let got: Vec<&str> = alice["received"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                got.contains(&"sensors/1/t") && !got.contains(&"sensors/private/k"),
                "{got:?}"
            );
            if proto == "5" {
                assert_eq!(alice["puback"]["bob/y"].as_u64(), Some(0x87));
            }
        }
    }
}
